//! Euler (Karras et al. 2022, algorithm 2, without churn), and the sigma
//! schedule and stepper it shares with Euler Ancestral.

use candle_core::Tensor;

use super::config::SchedulerConfig;
use super::schedule::{
    config_error, div, karras_sigmas, log_sigmas, mul, np_interp, sigma_from_alpha_cumprod,
    sigma_to_t, spaced_timesteps, torch_linspace_f32, Prediction, Spacing, TrainSchedule,
};
use super::{check_step, Scheduler};
use crate::error::Result;
use crate::rng::TorchRng;

pub(crate) const CLASS: &str = "EulerDiscreteScheduler";

/// Timesteps and sigmas of the Euler family, in `float32` as diffusers keeps them.
#[derive(Debug, Clone)]
pub(crate) struct SigmaSchedule {
    pub timesteps: Vec<f64>,
    /// One sigma per timestep plus the final one (log-linear interpolation
    /// leaves one extra, as in diffusers).
    pub sigmas: Vec<f32>,
    pub init_noise_sigma: f32,
}

/// The options that shape an Euler-family schedule; Euler Ancestral uses the defaults.
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct SigmaOptions {
    pub log_linear: bool,
    pub karras: bool,
    pub final_sigma_min: bool,
    pub continuous_timesteps: bool,
}

impl SigmaSchedule {
    pub(crate) fn new(
        config: &SchedulerConfig,
        class: &str,
        steps: usize,
        options: SigmaOptions,
    ) -> Result<Self> {
        let spacing = Spacing::from_config(config, class, Spacing::Linspace)?;
        let mut schedule = TrainSchedule::new(config, class, true)?;
        schedule.clamp_terminal_alpha(config);
        let train_sigmas = schedule.sigmas();
        let train_log_sigmas = log_sigmas(&train_sigmas);

        let mut timesteps: Vec<f64> = spaced_timesteps(
            spacing,
            config.num_train_timesteps,
            steps,
            config.steps_offset,
            false,
        )
        .into_iter()
        .map(|t| f64::from(t as f32))
        .collect();
        let mut sigmas: Vec<f64> = if options.log_linear {
            let high = f64::from(train_sigmas[train_sigmas.len() - 1]).ln();
            let low = f64::from(train_sigmas[0]).ln();
            torch_linspace_f32(f64::from(high as f32), f64::from(low as f32), steps + 1)
                .into_iter()
                .map(|l| f64::from(l.exp()))
                .collect()
        } else {
            timesteps
                .iter()
                .map(|&t| np_interp(t, &train_sigmas))
                .collect()
        };
        if options.karras {
            let sigma_min = config.sigma_min.unwrap_or(sigmas[sigmas.len() - 1]);
            let sigma_max = config.sigma_max.unwrap_or(sigmas[0]);
            sigmas = karras_sigmas(sigma_min, sigma_max, steps);
            timesteps = sigmas
                .iter()
                .map(|&s| sigma_to_t(s, &train_log_sigmas))
                .collect();
        }
        let final_sigma = if options.final_sigma_min {
            sigma_from_alpha_cumprod(schedule.alphas_cumprod[0])
        } else {
            0.0
        };
        let sigmas: Vec<f32> = sigmas
            .into_iter()
            .map(|s| s as f32)
            .chain(std::iter::once(final_sigma))
            .collect();
        let timesteps = if options.continuous_timesteps {
            sigmas[..sigmas.len() - 1]
                .iter()
                .map(|s| f64::from(0.25 * s.ln()))
                .collect()
        } else {
            timesteps.into_iter().map(|t| f64::from(t as f32)).collect()
        };
        let max_sigma = sigmas.iter().copied().fold(f32::NEG_INFINITY, f32::max);
        let init_noise_sigma = match spacing {
            Spacing::Linspace | Spacing::Trailing => max_sigma,
            Spacing::Leading => (max_sigma * max_sigma + 1.0).sqrt(),
        };
        Ok(SigmaSchedule {
            timesteps,
            sigmas,
            init_noise_sigma,
        })
    }

    /// The sigma at `step_index` and the one after it.
    pub(crate) fn pair(&self, step_index: usize) -> candle_core::Result<(f32, f32)> {
        check_step(step_index, self.timesteps.len())?;
        Ok((self.sigmas[step_index], self.sigmas[step_index + 1]))
    }

    /// `sample / sqrt(sigma^2 + 1)`.
    pub(crate) fn scale_model_input(
        &self,
        sample: &Tensor,
        step_index: usize,
    ) -> candle_core::Result<Tensor> {
        let (sigma, _) = self.pair(step_index)?;
        div(sample, (sigma * sigma + 1.0).sqrt())
    }

    /// `original + noise * sigma`.
    pub(crate) fn add_noise(
        &self,
        original: &Tensor,
        noise: &Tensor,
        step_index: usize,
    ) -> candle_core::Result<Tensor> {
        let (sigma, _) = self.pair(step_index)?;
        original + mul(noise, sigma)?
    }
}

/// The clean-sample estimate from the model output at noise level `sigma`.
pub(crate) fn predict_x0(
    prediction: Prediction,
    model_output: &Tensor,
    sample: &Tensor,
    sigma: f32,
) -> candle_core::Result<Tensor> {
    match prediction {
        Prediction::Epsilon => sample - mul(model_output, sigma)?,
        Prediction::Velocity => {
            let scaled = mul(model_output, -sigma / (sigma * sigma + 1.0).sqrt())?;
            scaled + div(sample, sigma * sigma + 1.0)?
        }
        Prediction::Sample => Ok(model_output.clone()),
    }
}

/// diffusers' `EulerDiscreteScheduler`, stepped without churn.
pub(crate) struct EulerDiscrete {
    schedule: SigmaSchedule,
    prediction: Prediction,
    /// Euler Ancestral: step down below the next sigma, then add fresh noise
    /// back up to it ([`super::euler_ancestral`]).
    ancestral: bool,
    /// The clean latents the last step predicted.
    pred_x0: Option<Tensor>,
}

impl EulerDiscrete {
    /// The Euler Ancestral stepper over `schedule`.
    pub(crate) fn ancestral(schedule: SigmaSchedule, prediction: Prediction) -> Self {
        Self {
            schedule,
            prediction,
            ancestral: true,
            pred_x0: None,
        }
    }

    pub(crate) fn new(config: &SchedulerConfig, steps: usize) -> Result<Self> {
        let prediction = Prediction::from_config(config, CLASS, Prediction::ALL)?;
        for (set, name) in [
            (config.use_exponential_sigmas, "use_exponential_sigmas"),
            (config.use_beta_sigmas, "use_beta_sigmas"),
        ] {
            if set {
                return Err(config_error(
                    config,
                    CLASS,
                    format!("{name} is not supported"),
                ));
            }
        }
        let log_linear = match config.interpolation_type.as_str() {
            "linear" => false,
            "log_linear" => true,
            other => {
                return Err(config_error(
                    config,
                    CLASS,
                    format!("interpolation_type \"{other}\" is not one of linear, log_linear"),
                ))
            }
        };
        let final_sigma_min = match config.final_sigmas_type.as_str() {
            "zero" => false,
            "sigma_min" => true,
            other => {
                return Err(config_error(
                    config,
                    CLASS,
                    format!("final_sigmas_type \"{other}\" is not one of zero, sigma_min"),
                ))
            }
        };
        let continuous = match config.timestep_type.as_str() {
            "discrete" => false,
            "continuous" => prediction == Prediction::Velocity,
            other => {
                return Err(config_error(
                    config,
                    CLASS,
                    format!("timestep_type \"{other}\" is not one of discrete, continuous"),
                ))
            }
        };
        let options = SigmaOptions {
            log_linear,
            karras: config.use_karras_sigmas,
            final_sigma_min,
            continuous_timesteps: continuous,
        };
        Ok(EulerDiscrete {
            schedule: SigmaSchedule::new(config, CLASS, steps, options)?,
            prediction,
            ancestral: false,
            pred_x0: None,
        })
    }
}

impl Scheduler for EulerDiscrete {
    fn timesteps(&self) -> &[f64] {
        &self.schedule.timesteps
    }

    fn init_noise_sigma(&self) -> f64 {
        f64::from(self.schedule.init_noise_sigma)
    }

    fn scale_model_input(&self, sample: &Tensor, step_index: usize) -> candle_core::Result<Tensor> {
        self.schedule.scale_model_input(sample, step_index)
    }

    fn step(
        &mut self,
        model_output: &Tensor,
        step_index: usize,
        sample: &Tensor,
        rng: &mut TorchRng,
    ) -> candle_core::Result<Tensor> {
        let (sigma, sigma_next) = self.schedule.pair(step_index)?;
        let pred_x0 = predict_x0(self.prediction, model_output, sample, sigma)?;
        let derivative = div(&(sample - &pred_x0)?, sigma)?;
        self.pred_x0 = Some(pred_x0);
        if self.ancestral {
            return super::euler_ancestral::step(sample, &derivative, sigma, sigma_next, rng);
        }
        // Without churn sigma_hat is sigma and no noise is drawn.
        sample + mul(&derivative, sigma_next - sigma)?
    }

    fn predicted_original(&self) -> Option<&Tensor> {
        self.pred_x0.as_ref()
    }

    fn add_noise(
        &self,
        original: &Tensor,
        noise: &Tensor,
        step_index: usize,
    ) -> candle_core::Result<Tensor> {
        self.schedule.add_noise(original, noise, step_index)
    }
}
