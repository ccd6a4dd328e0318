//! The bounds every worker enforces on a request, whatever its configuration.
//!
//! The worker's validator enforces these, and `GET /v1/info` reports them.
//! Strength's range (0 to 1, above 0 so that a step runs) is the pipeline's
//! own and checked by sd-core. The `#[schema]` attributes of [`crate::request`] repeat
//! them as literals, since utoipa takes no constant there; the worker's
//! OpenAPI tests check that the published document and the validator agree.
//!
//! The bounds that depend on the worker's flags (the smallest and largest
//! size, the queue, the body) are known at run time only: `GET /v1/info`
//! reports them with these in [`crate::Limits`].

/// The fewest denoising steps a job may ask for.
pub const MIN_STEPS: u32 = 1;
/// The most denoising steps a job may ask for.
pub const MAX_STEPS: u32 = 150;
/// The smallest classifier-free guidance scale a job may ask for.
pub const MIN_GUIDANCE_SCALE: f64 = 0.0;
/// The largest classifier-free guidance scale a job may ask for.
pub const MAX_GUIDANCE_SCALE: f64 = 30.0;
/// Width and height must be multiples of this (the VAE's downsampling factor).
pub const SIZE_MULTIPLE: u32 = 8;
