//! Euler Ancestral: an Euler step to a lower noise level, then fresh noise
//! back up to the next sigma.

use candle_core::Tensor;

use super::config::SchedulerConfig;
use super::euler::{predict_x0, SigmaOptions, SigmaSchedule};
use super::schedule::{div, mul, Prediction};
use super::Scheduler;
use crate::error::Result;
use crate::rng::TorchRng;

pub(crate) const CLASS: &str = "EulerAncestralDiscreteScheduler";

/// diffusers' `EulerAncestralDiscreteScheduler`.
pub(crate) struct EulerAncestral {
    schedule: SigmaSchedule,
    prediction: Prediction,
    /// The clean latents the last step predicted.
    pred_x0: Option<Tensor>,
}

impl EulerAncestral {
    pub(crate) fn new(config: &SchedulerConfig, steps: usize) -> Result<Self> {
        let prediction =
            Prediction::from_config(config, CLASS, &[Prediction::Epsilon, Prediction::Velocity])?;
        Ok(EulerAncestral {
            schedule: SigmaSchedule::new(config, CLASS, steps, SigmaOptions::default())?,
            prediction,
            pred_x0: None,
        })
    }
}

impl Scheduler for EulerAncestral {
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
        let (sigma_from, sigma_to) = self.schedule.pair(step_index)?;
        let pred_x0 = predict_x0(self.prediction, model_output, sample, sigma_from)?;
        let (from2, to2) = (sigma_from * sigma_from, sigma_to * sigma_to);
        let sigma_up = (to2 * (from2 - to2) / from2).sqrt();
        let sigma_down = (to2 - sigma_up * sigma_up).sqrt();
        let derivative = div(&(sample - &pred_x0)?, sigma_from)?;
        self.pred_x0 = Some(pred_x0);
        let prev = (sample + mul(&derivative, sigma_down - sigma_from)?)?;
        // diffusers draws the noise even on the last step, where sigma_up is 0.
        let noise = rng
            .randn_tensor(model_output.dims(), model_output.device())?
            .to_dtype(model_output.dtype())?;
        prev + mul(&noise, sigma_up)?
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
