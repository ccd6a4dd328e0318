//! Jobs and their registry.
//!
//! - [`Job`] (`job.rs`): one job's state and its replayable, append-only event
//!   log, which any number of subscribers follow.
//! - [`Jobs`] (`registry.rs`): the jobs by id, forgetting finished ones past
//!   their [`Retention`], and [`new_job_id`].
//! - [`JobStore`] (`store.rs`): where the job API's jobs live, in memory or
//!   in the shared queue of [`redis`] (`--redis-url`), which feeds this
//!   worker's engine the same [`Job`]s.

mod job;
pub mod redis;
mod registry;
mod store;

pub use job::{Job, LoggedEvent};
pub use registry::{new_job_id, Jobs, Retention};
pub use store::{EventSource, JobStore};

/// Shared by the jobs' unit tests.
#[cfg(test)]
mod testing {
    use std::sync::Arc;

    use sd_contract::{
        GenerationFields, ImageGenerationRequest, ImageInpaintRequest, JobRequest, Limits,
    };

    use super::{new_job_id, Job};
    use crate::validation::validate;

    /// A fresh queued two-step SD 1 job.
    pub(super) fn job() -> Arc<Job> {
        batch(1)
    }

    /// A fresh queued two-step SD 1 job of `num_images` images.
    pub(super) fn batch(num_images: u32) -> Arc<Job> {
        queued(JobRequest::ImageGeneration(ImageGenerationRequest {
            generation: GenerationFields {
                prompt: "x".into(),
                steps: Some(2),
                num_images: Some(num_images),
                ..Default::default()
            },
        }))
    }

    /// A fresh queued inpainting job whose picture and mask are one flat
    /// `side`² RGB PNG; returns the job and the PNG's size in bytes.
    pub(super) fn inpaint_job(side: usize) -> (Arc<Job>, usize) {
        use base64::Engine as _;
        let rgb = [90u8, 160, 30].repeat(side * side);
        let png = sd_core::image::encode_png(&rgb, side, side, None).unwrap();
        let picture = base64::engine::general_purpose::STANDARD.encode(&png);
        let job = queued(JobRequest::ImageInpaint(ImageInpaintRequest {
            generation: GenerationFields {
                prompt: "x".into(),
                steps: Some(2),
                width: Some(64),
                height: Some(64),
                ..Default::default()
            },
            init_image: picture.clone(),
            mask_image: picture,
            strength: None,
        }));
        (job, png.len())
    }

    fn queued(req: JobRequest) -> Arc<Job> {
        let model = sd_core::model::ModelProfile {
            family: sd_core::model::ModelFamily::Sd1,
            inpainting: false,
            native_size: (64, 64),
            vae_scale_factor: 8,
            scheduler: sd_core::schedulers::SchedulerKind::Euler,
            step_limits: Default::default(),
            max_clip_skip: 11,
            tiny_decoder: false,
            precision: Default::default(),
        };
        let defaults = sd_core::pipeline::Defaults::resolve(None, &model);
        let limits = Limits {
            min_size: 64,
            max_size: 512,
            size_multiple: 8,
            max_prompt_chars: 4096,
            max_steps: 150,
            max_guidance_scale: 30.0,
            max_num_images: 8,
            max_queue: 4,
            max_body_bytes: 1024,
            max_input_pixels: 1 << 22,
        };
        Arc::new(Job::new(
            new_job_id(),
            validate(req, &model, &defaults, &limits, None).unwrap(),
        ))
    }
}
