//! The one-shot commands of the worker binary besides serving: `generate`
//! (one image from the shell) and `bench` (timing full-size architectures).
//! Both run sd-core's production pipeline.

pub mod bench;
pub mod generate;
