//! DDIM (Song et al. 2020) with eta 0: deterministic, one UNet call per step.

use candle_core::Tensor;

use super::config::SchedulerConfig;
use super::schedule::{
    config_error, div, mul, spaced_timesteps, Prediction, Spacing, TrainSchedule,
};
use super::{index_error, Scheduler};
use crate::error::Result;
use crate::rng::TorchRng;

pub(crate) const CLASS: &str = "DDIMScheduler";

/// diffusers' `DDIMScheduler`.
pub(crate) struct Ddim {
    schedule: TrainSchedule,
    final_alpha_cumprod: f32,
    timesteps: Vec<f64>,
    /// Distance to the previous timestep: `num_train_timesteps // steps`,
    /// whatever the spacing (as diffusers computes it).
    step_ratio: i64,
    prediction: Prediction,
    clip_range: Option<f32>,
}

impl Ddim {
    pub(crate) fn new(config: &SchedulerConfig, steps: usize) -> Result<Self> {
        if config.thresholding {
            return Err(config_error(config, CLASS, "thresholding is not supported"));
        }
        let prediction = Prediction::from_config(
            config,
            CLASS,
            &[
                Prediction::Epsilon,
                Prediction::Velocity,
                Prediction::Sample,
            ],
        )?;
        let spacing = Spacing::from_config(config, CLASS, Spacing::Leading)?;
        let schedule = TrainSchedule::new(config, CLASS, true)?;
        let final_alpha_cumprod = if config.set_alpha_to_one.unwrap_or(true) {
            1.0
        } else {
            schedule.alphas_cumprod[0]
        };
        let num_train = config.num_train_timesteps;
        Ok(Ddim {
            timesteps: spaced_timesteps(spacing, num_train, steps, config.steps_offset, true),
            step_ratio: (num_train / steps) as i64,
            final_alpha_cumprod,
            schedule,
            prediction,
            clip_range: config
                .clip_sample
                .unwrap_or(true)
                .then_some(config.clip_sample_range as f32),
        })
    }

    fn timestep(&self, step_index: usize) -> candle_core::Result<i64> {
        self.timesteps
            .get(step_index)
            .map(|&t| t as i64)
            .ok_or_else(|| index_error(step_index, self.timesteps.len()))
    }
}

impl Scheduler for Ddim {
    fn timesteps(&self) -> &[f64] {
        &self.timesteps
    }

    fn init_noise_sigma(&self) -> f64 {
        1.0
    }

    fn scale_model_input(
        &self,
        sample: &Tensor,
        _step_index: usize,
    ) -> candle_core::Result<Tensor> {
        Ok(sample.clone())
    }

    fn step(
        &mut self,
        model_output: &Tensor,
        step_index: usize,
        sample: &Tensor,
        _rng: &mut TorchRng,
    ) -> candle_core::Result<Tensor> {
        let t = self.timestep(step_index)?;
        let prev_t = t - self.step_ratio;
        let alpha_t = self.schedule.alpha_cumprod(t)?;
        let alpha_prev = if prev_t >= 0 {
            self.schedule.alpha_cumprod(prev_t)?
        } else {
            self.final_alpha_cumprod
        };
        let beta_t = 1.0 - alpha_t;
        let (pred_x0, pred_eps) = match self.prediction {
            Prediction::Epsilon => (
                div(
                    &(sample - mul(model_output, beta_t.sqrt())?)?,
                    alpha_t.sqrt(),
                )?,
                model_output.clone(),
            ),
            Prediction::Sample => (
                model_output.clone(),
                div(
                    &(sample - mul(model_output, alpha_t.sqrt())?)?,
                    beta_t.sqrt(),
                )?,
            ),
            Prediction::Velocity => (
                (mul(sample, alpha_t.sqrt())? - mul(model_output, beta_t.sqrt())?)?,
                (mul(model_output, alpha_t.sqrt())? + mul(sample, beta_t.sqrt())?)?,
            ),
        };
        let pred_x0 = match self.clip_range {
            Some(r) => pred_x0.clamp(-r, r)?,
            None => pred_x0,
        };
        // With eta 0 the variance term vanishes: x_prev = sqrt(a_prev) x0 + sqrt(1 - a_prev) eps.
        let direction = mul(&pred_eps, (1.0 - alpha_prev).sqrt())?;
        mul(&pred_x0, alpha_prev.sqrt())? + direction
    }

    fn add_noise(
        &self,
        original: &Tensor,
        noise: &Tensor,
        step_index: usize,
    ) -> candle_core::Result<Tensor> {
        let alpha = self.schedule.alpha_cumprod(self.timestep(step_index)?)?;
        mul(original, alpha.sqrt())? + mul(noise, (1.0 - alpha).sqrt())?
    }
}
