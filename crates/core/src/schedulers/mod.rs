//! Denoising schedulers, step for step as in diffusers.
//!
//! [`build_scheduler`] turns a [`SchedulerConfig`] (a model's
//! `scheduler/scheduler_config.json`) and a step count into a [`Scheduler`],
//! either the class the file names or the one a client asked for, the way
//! diffusers' `Class.from_config(config)` does. Schedule math follows diffusers'
//! dtypes (`float32` tensors, `float64` numpy arrays) so timesteps and sigmas
//! match exactly; the per-step tensor arithmetic runs in the sample's dtype.
//!
//! Supported: DDIM (eta 0), PNDM in its PLMS form, Euler, Euler Ancestral,
//! DPM-Solver++ (first and second order), UniPC (orders 1 to 3, `bh1` and
//! `bh2`) and LCM. Options diffusers offers beyond those (dynamic
//! thresholding, PRK warm-up, exponential or beta sigmas, SDE variants, flow
//! sigmas, ...) are rejected with an error naming the option.

mod config;
mod ddim;
mod dpm_solver_multistep;
mod euler;
mod euler_ancestral;
mod kind;
mod lcm;
mod limits;
mod pndm;
mod schedule;
mod unipc;

use candle_core::Tensor;
pub use config::{parse_python_json, SchedulerConfig};
pub use kind::SchedulerKind;
pub use limits::StepLimits;

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
    /// unit-normal latents by this. 1 unless the scheduler says otherwise
    /// (the variance-preserving ones keep it).
    fn init_noise_sigma(&self) -> f64 {
        1.0
    }

    /// Scales the latents before they enter the UNet at `step_index`; the
    /// latents unchanged unless the scheduler says otherwise.
    fn scale_model_input(&self, sample: &Tensor, step_index: usize) -> candle_core::Result<Tensor> {
        let _ = step_index;
        Ok(sample.clone())
    }

    /// Takes one denoising step from `sample` given the UNet's `model_output`
    /// at `step_index`; ancestral schedulers draw their noise from `rng`.
    fn step(
        &mut self,
        model_output: &Tensor,
        step_index: usize,
        sample: &Tensor,
        rng: &mut TorchRng,
    ) -> candle_core::Result<Tensor>;

    /// The clean latents the last [`Scheduler::step`] predicted (its `x0`),
    /// when the scheduler computes them; live previews show these.
    fn predicted_original(&self) -> Option<&Tensor> {
        None
    }

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
        SchedulerKind::Unipc => unipc::CLASS,
        SchedulerKind::Lcm => lcm::CLASS,
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
/// promise: `dpmsolver++`, order 2, and Karras sigmas on or off; `unipc` pins
/// `solver_type="bh2"` and `solver_order=2`.
pub fn build_scheduler(
    kind: Option<SchedulerKind>,
    config: &SchedulerConfig,
    num_inference_steps: usize,
) -> Result<Box<dyn Scheduler>> {
    StepLimits::of(config)
        .check(kind.or_else(|| kind_of(config)), num_inference_steps)
        .map_err(Error::Param)?;
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
        Some(SchedulerKind::Unipc) => {
            config.solver_type = "bh2".into();
            config.solver_order = 2;
        }
        _ => {}
    }
    let steps = num_inference_steps;
    let scheduler: Box<dyn Scheduler> = match class {
        ddim::CLASS => Box::new(ddim::Ddim::new(&config, steps)?),
        pndm::CLASS => Box::new(pndm::Pndm::new(&config, steps)?),
        euler::CLASS => Box::new(euler::EulerDiscrete::new(&config, steps)?),
        euler_ancestral::CLASS => Box::new(euler_ancestral::new(&config, steps)?),
        dpm_solver_multistep::CLASS => Box::new(dpm_solver_multistep::DpmSolverMultistep::new(
            &config, steps,
        )?),
        unipc::CLASS => Box::new(unipc::UniPc::new(&config, steps)?),
        lcm::CLASS => Box::new(lcm::Lcm::new(&config, steps)?),
        other => {
            return Err(Error::invalid_file(
                config.source_path(),
                format!(
                    "scheduler class {other} is not supported; pick one of {} instead",
                    SchedulerKind::names()
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

/// Checks that `step_index` is inside a schedule of `len` steps.
fn check_step(step_index: usize, len: usize) -> candle_core::Result<()> {
    if step_index >= len {
        return Err(index_error(step_index, len));
    }
    Ok(())
}

/// The integer timestep at `step_index` of `timesteps`.
fn timestep_at(timesteps: &[f64], step_index: usize) -> candle_core::Result<i64> {
    timesteps
        .get(step_index)
        .map(|&t| t as i64)
        .ok_or_else(|| index_error(step_index, timesteps.len()))
}

/// Shared by the schedulers' unit tests.
#[cfg(test)]
pub(crate) mod testing {
    use candle_core::Device;

    use super::{build_scheduler, SchedulerConfig};
    use crate::rng::TorchRng;

    /// SD 1.5's `scheduler_config.json`.
    pub(crate) fn sd15() -> SchedulerConfig {
        SchedulerConfig::from_json_str(
            r#"{"_class_name": "PNDMScheduler", "beta_end": 0.012, "beta_schedule": "scaled_linear",
                "beta_start": 0.00085, "clip_sample": false, "num_train_timesteps": 1000,
                "set_alpha_to_one": false, "skip_prk_steps": true, "steps_offset": 1, "trained_betas": null}"#,
        )
        .unwrap()
    }

    /// Runs the fixtures' synthetic loop (seed 7, `[1, 4, 8, 8]` latents) with
    /// the config's own class and returns its timesteps and the final sample's
    /// elements 0, 77, 200 and 255:
    ///
    /// ```text
    /// g = torch.Generator().manual_seed(7); x = torch.randn([1, 4, 8, 8], generator=g) * s.init_noise_sigma
    /// for t in s.timesteps:
    ///     xin = s.scale_model_input(x, t); mo = 0.5 * xin + 0.05 * (float(t) / 1000)
    ///     x = s.step(mo, t, x, generator=g).prev_sample   # generator only where step takes one
    /// x.flatten()[[0, 77, 200, 255]]
    /// ```
    pub(crate) fn final_sample(config: &SchedulerConfig, steps: usize) -> (Vec<f64>, [f32; 4]) {
        let device = Device::Cpu;
        let mut s = build_scheduler(None, config, steps).unwrap();
        let mut rng = TorchRng::new(7);
        let noise = rng.randn_tensor(&[1, 4, 8, 8], &device).unwrap();
        let mut x = (noise * s.init_noise_sigma()).unwrap();
        let timesteps = s.timesteps().to_vec();
        for (i, &t) in timesteps.iter().enumerate() {
            let xin = s.scale_model_input(&x, i).unwrap();
            let model_output = xin.affine(0.5, 0.05 * (t / 1000.0)).unwrap();
            x = s.step(&model_output, i, &x, &mut rng).unwrap();
        }
        let values = x.flatten_all().unwrap().to_vec1::<f32>().unwrap();
        (timesteps, [values[0], values[77], values[200], values[255]])
    }

    /// `final_sample` against diffusers' values, to 1e-5 relative.
    pub(crate) fn assert_final_sample(
        label: &str,
        config: &SchedulerConfig,
        steps: usize,
        timesteps: &[f64],
        expected: [f32; 4],
    ) {
        let (ours, values) = final_sample(config, steps);
        assert_eq!(ours, timesteps, "{label}: timesteps");
        for (got, want) in values.iter().zip(expected) {
            assert!(
                (got - want).abs() <= 1e-5 * want.abs().max(1.0),
                "{label}: {values:?} vs {expected:?}"
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use super::testing::sd15;
    use super::*;
    use crate::error::{Param, ParamError};

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
            Err(Error::Param(ParamError {
                param: Param::Steps,
                ..
            }))
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
            (SchedulerKind::Unipc, 699.0, -1.052_757_9),
            (SchedulerKind::Lcm, 699.0, -1.052_757_9),
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
    fn steps_report_their_clean_prediction() {
        // Given the true noise as the model's output, x0 is the clean sample.
        let device = candle_core::Device::Cpu;
        let clean = Tensor::full(0.5f32, (1, 4, 2, 2), &device).unwrap();
        let noise = Tensor::full(-1.25f32, (1, 4, 2, 2), &device).unwrap();
        for kind in SchedulerKind::ALL {
            let mut s = build_scheduler(Some(kind), &sd15(), 10).unwrap();
            assert!(s.predicted_original().is_none(), "{kind}");
            let sample = s.add_noise(&clean, &noise, 0).unwrap();
            s.step(&noise, 0, &sample, &mut TorchRng::new(0)).unwrap();
            match (kind, s.predicted_original()) {
                (SchedulerKind::Pndm, x0) => assert!(x0.is_none()),
                (_, Some(x0)) => {
                    assert_eq!(x0.dims(), clean.dims(), "{kind}");
                    let worst = (x0 - &clean)
                        .unwrap()
                        .abs()
                        .unwrap()
                        .flatten_all()
                        .unwrap()
                        .max(0)
                        .unwrap()
                        .to_scalar::<f32>()
                        .unwrap();
                    assert!(worst < 1e-4, "{kind}: x0 off by {worst}");
                }
                (_, None) => panic!("{kind}: no predicted x0"),
            }
        }
    }

    #[test]
    fn kinds_of_the_new_classes() {
        let mut config = sd15();
        for (class, kind) in [
            ("UniPCMultistepScheduler", SchedulerKind::Unipc),
            ("LCMScheduler", SchedulerKind::Lcm),
        ] {
            config.class_name = Some(class.into());
            assert_eq!(kind_of(&config), Some(kind));
            assert_eq!(class_name(kind), class);
        }
    }

    #[test]
    fn unipc_kind_pins_bh2_and_second_order() {
        // UniPCMultistepScheduler.from_config(config with solver_type="bh1", solver_order=3,
        // final_sigmas_type="zero") would end in NaN; the kind runs bh2, order 2.
        let mut config = sd15();
        config.solver_type = "bh1".into();
        config.solver_order = 3;
        assert!(build_scheduler(Some(SchedulerKind::Unipc), &config, 10).is_ok());
        config.class_name = Some("UniPCMultistepScheduler".into());
        let err = build_scheduler(None, &config, 10)
            .err()
            .unwrap()
            .to_string();
        assert!(err.contains("bh1"), "{err}");
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
