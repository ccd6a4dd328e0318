//! DDIM (Song et al. 2020) with eta 0: deterministic, one UNet call per step.

use candle_core::Tensor;

use super::config::SchedulerConfig;
use super::schedule::{
    clip, config_error, noise_to_alpha_cumprod, spaced_timesteps, vp_predict_noise, vp_predict_x0,
    Prediction, Spacing, TrainSchedule,
};
use super::{timestep_at, Scheduler};
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
    /// The clean latents the last step predicted.
    pred_x0: Option<Tensor>,
}

impl Ddim {
    pub(crate) fn new(config: &SchedulerConfig, steps: usize) -> Result<Self> {
        if config.thresholding {
            return Err(config_error(config, CLASS, "thresholding is not supported"));
        }
        let prediction = Prediction::from_config(config, CLASS, Prediction::ALL)?;
        let spacing = Spacing::from_config(config, CLASS, Spacing::Leading)?;
        let schedule = TrainSchedule::new(config, CLASS, true)?;
        let final_alpha_cumprod = schedule.final_alpha_cumprod(config, true);
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
            pred_x0: None,
        })
    }

    fn timestep(&self, step_index: usize) -> candle_core::Result<i64> {
        timestep_at(&self.timesteps, step_index)
    }
}

impl Scheduler for Ddim {
    fn timesteps(&self) -> &[f64] {
        &self.timesteps
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
        let alpha_prev = self
            .schedule
            .prev_alpha_cumprod(prev_t, self.final_alpha_cumprod)?;
        let (alpha, sigma) = (alpha_t.sqrt(), (1.0 - alpha_t).sqrt());
        let pred_x0 = vp_predict_x0(self.prediction, model_output, sample, alpha, sigma)?;
        let pred_eps = vp_predict_noise(self.prediction, model_output, sample, alpha, sigma)?;
        let pred_x0 = clip(pred_x0, self.clip_range)?;
        // With eta 0 the variance term vanishes: x_prev = sqrt(a_prev) x0 + sqrt(1 - a_prev) eps.
        let prev = noise_to_alpha_cumprod(&pred_x0, &pred_eps, alpha_prev)?;
        self.pred_x0 = Some(pred_x0);
        Ok(prev)
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
        let alpha = self.schedule.alpha_cumprod(self.timestep(step_index)?)?;
        noise_to_alpha_cumprod(original, noise, alpha)
    }
}
