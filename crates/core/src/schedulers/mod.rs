//! Denoising schedulers, step for step as in diffusers.
//!
//! [`build_scheduler`] turns a [`SchedulerConfig`] (a model's
//! `scheduler/scheduler_config.json`) and a step count into a [`Scheduler`],
//! either the class the file names or the one a client asked for, the way
//! diffusers' `Class.from_config(config)` does. Schedule math follows diffusers'
//! dtypes (`float32` tensors, `float64` numpy arrays) so timesteps and sigmas
//! match exactly; the per-step tensor arithmetic runs in the sample's dtype.
//!
//! Supported: DDIM (eta 0), PNDM in its PLMS form, Euler, Euler Ancestral and
//! DPM-Solver++ (first and second order). Options diffusers offers beyond
//! those (dynamic thresholding, PRK warm-up, exponential or beta sigmas, SDE
//! variants, ...) are rejected with an error naming the option.

mod config;
mod ddim;
mod dpm_solver_multistep;
mod euler;
mod euler_ancestral;
mod pndm;
mod schedule;

use candle_core::Tensor;
use sd_contract::scheduler::SchedulerKind;

pub use config::{parse_python_json, SchedulerConfig};

use crate::error::{Error, Result};
use crate::rng::TorchRng;

/// One denoising scheduler, set up for a fixed number of inference steps.
///
/// The pipeline calls, for each `step_index` in `0..timesteps().len()`:
/// `scale_model_input` on the latents, the UNet at `timesteps()[step_index]`,
/// then `step` with the UNet's output.
pub trait Scheduler: Send {
    /// The UNet timesteps in loop order (PNDM's PLMS form has one more than the step count).
    fn timesteps(&self) -> &[f64];

    /// The standard deviation of the initial noise: the pipeline multiplies
    /// unit-normal latents by this.
    fn init_noise_sigma(&self) -> f64;

    /// Scales the latents before they enter the UNet at `step_index`.
    fn scale_model_input(&self, sample: &Tensor, step_index: usize) -> candle_core::Result<Tensor>;

    /// Takes one denoising step from `sample` given the UNet's `model_output`
    /// at `step_index`; ancestral schedulers draw their noise from `rng`.
    fn step(
        &mut self,
        model_output: &Tensor,
        step_index: usize,
        sample: &Tensor,
        rng: &mut TorchRng,
    ) -> candle_core::Result<Tensor>;

    /// Noises clean latents to the level of `step_index` (for image-to-image).
    fn add_noise(
        &self,
        original: &Tensor,
        noise: &Tensor,
        step_index: usize,
    ) -> candle_core::Result<Tensor>;
}

/// The diffusers class behind each [`SchedulerKind`].
fn class_name(kind: SchedulerKind) -> &'static str {
    match kind {
        SchedulerKind::Ddim => ddim::CLASS,
        SchedulerKind::Pndm => pndm::CLASS,
        SchedulerKind::Euler => euler::CLASS,
        SchedulerKind::EulerA => euler_ancestral::CLASS,
        SchedulerKind::Dpmpp2m | SchedulerKind::Dpmpp2mKarras => dpm_solver_multistep::CLASS,
    }
}

/// The [`SchedulerKind`] whose scheduler a config's own class builds, if we support it.
pub fn kind_of(config: &SchedulerConfig) -> Option<SchedulerKind> {
    let class = config.class_name.as_deref()?;
    if class == dpm_solver_multistep::CLASS {
        return Some(if config.use_karras_sigmas {
            SchedulerKind::Dpmpp2mKarras
        } else {
            SchedulerKind::Dpmpp2m
        });
    }
    SchedulerKind::ALL
        .into_iter()
        .find(|kind| class_name(*kind) == class)
}

/// Builds a scheduler for `num_inference_steps` steps.
///
/// `kind == None` builds the class the config names (`_class_name`);
/// `Some(kind)` builds that scheduler from the same config, as diffusers'
/// `from_config` does. The two DPM-Solver++ 2M kinds also pin what their names
/// promise: `dpmsolver++`, order 2, and Karras sigmas on or off.
pub fn build_scheduler(
    kind: Option<SchedulerKind>,
    config: &SchedulerConfig,
    num_inference_steps: usize,
) -> Result<Box<dyn Scheduler>> {
    if num_inference_steps == 0 || num_inference_steps > config.num_train_timesteps {
        return Err(Error::invalid_request(
            "steps",
            format!(
                "{num_inference_steps} is not between 1 and the model's {} training timesteps",
                config.num_train_timesteps
            ),
        ));
    }
    let class = match kind {
        Some(kind) => class_name(kind),
        None => config.class_name.as_deref().ok_or_else(|| {
            Error::invalid_file(
                config.source_path(),
                "no _class_name, so the scheduler class is unknown",
            )
        })?,
    };
    let mut config = config.clone();
    match kind {
        Some(SchedulerKind::Dpmpp2m) => pin_dpmpp_2m(&mut config, false),
        Some(SchedulerKind::Dpmpp2mKarras) => pin_dpmpp_2m(&mut config, true),
        _ => {}
    }
    let steps = num_inference_steps;
    let scheduler: Box<dyn Scheduler> = match class {
        ddim::CLASS => Box::new(ddim::Ddim::new(&config, steps)?),
        pndm::CLASS => Box::new(pndm::Pndm::new(&config, steps)?),
        euler::CLASS => Box::new(euler::EulerDiscrete::new(&config, steps)?),
        euler_ancestral::CLASS => Box::new(euler_ancestral::EulerAncestral::new(&config, steps)?),
        dpm_solver_multistep::CLASS => Box::new(dpm_solver_multistep::DpmSolverMultistep::new(
            &config, steps,
        )?),
        other => {
            let known: Vec<&str> = SchedulerKind::ALL.iter().map(|k| k.as_str()).collect();
            return Err(Error::invalid_file(
                config.source_path(),
                format!(
                    "scheduler class {other} is not supported; pick one of {} instead",
                    known.join(", ")
                ),
            ));
        }
    };
    tracing::debug!(class, steps, "built scheduler");
    Ok(scheduler)
}

fn pin_dpmpp_2m(config: &mut SchedulerConfig, karras: bool) {
    config.algorithm_type = "dpmsolver++".into();
    config.solver_order = 2;
    config.use_karras_sigmas = karras;
}

/// The error for a `step_index` past the schedule.
fn index_error(step_index: usize, len: usize) -> candle_core::Error {
    candle_core::Error::Msg(format!(
        "step index {step_index} is past the schedule's {len} steps"
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sd15() -> SchedulerConfig {
        SchedulerConfig::from_json_str(
            r#"{"_class_name": "PNDMScheduler", "beta_end": 0.012, "beta_schedule": "scaled_linear",
                "beta_start": 0.00085, "clip_sample": false, "num_train_timesteps": 1000,
                "set_alpha_to_one": false, "skip_prk_steps": true, "steps_offset": 1, "trained_betas": null}"#,
        )
        .unwrap()
    }

    #[test]
    fn builds_every_kind_from_one_config() {
        let config = sd15();
        assert_eq!(
            build_scheduler(None, &config, 10)
                .unwrap()
                .timesteps()
                .len(),
            11
        );
        for kind in SchedulerKind::ALL {
            let s = build_scheduler(Some(kind), &config, 10).unwrap();
            assert!(s.timesteps().len() >= 10, "{kind}");
        }
    }

    #[test]
    fn rejects_bad_step_counts_and_classes() {
        let config = sd15();
        assert!(matches!(
            build_scheduler(None, &config, 0),
            Err(Error::InvalidRequest { field: "steps", .. })
        ));
        assert!(build_scheduler(None, &config, 1001).is_err());
        let mut lms = config.clone();
        lms.class_name = Some("LMSDiscreteScheduler".into());
        let err = build_scheduler(None, &lms, 10).err().unwrap().to_string();
        assert!(err.contains("LMSDiscreteScheduler"), "{err}");
    }

    #[test]
    fn add_noise_matches_diffusers() {
        // s = Class.from_config(sd15, **pins); s.set_timesteps(10); t = s.timesteps[3:4]
        // s.add_noise(torch.full([1], 0.5), torch.full([1], -1.25), t).item()
        let expected = [
            (SchedulerKind::Ddim, 601.0, -0.945_884_05),
            (SchedulerKind::Pndm, 701.0, -1.054_603),
            (SchedulerKind::Euler, 666.0, -3.147_885_6),
            (SchedulerKind::EulerA, 666.0, -3.147_885_6),
            (SchedulerKind::Dpmpp2m, 699.0, -1.052_757_9),
            (SchedulerKind::Dpmpp2mKarras, 687.0, -1.041_563),
        ];
        let device = candle_core::Device::Cpu;
        let original = Tensor::new(&[0.5f32], &device).unwrap();
        let noise = Tensor::new(&[-1.25f32], &device).unwrap();
        for (kind, timestep, value) in expected {
            let s = build_scheduler(Some(kind), &sd15(), 10).unwrap();
            assert_eq!(s.timesteps()[3], timestep, "{kind}");
            let noisy = s
                .add_noise(&original, &noise, 3)
                .unwrap()
                .to_vec1::<f32>()
                .unwrap()[0];
            assert!((noisy - value).abs() < 1e-6, "{kind}: {noisy} vs {value}");
        }
    }

    #[test]
    fn rejects_prk_warmup() {
        let mut config = sd15();
        config.skip_prk_steps = false;
        let err = build_scheduler(None, &config, 10)
            .err()
            .unwrap()
            .to_string();
        assert!(err.contains("skip_prk_steps"), "{err}");
    }
}
