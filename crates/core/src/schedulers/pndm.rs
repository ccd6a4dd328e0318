//! PNDM (Liu et al. 2022) in its PLMS form: a linear multistep method that
//! reuses up to four past model outputs.

use candle_core::Tensor;

use super::config::SchedulerConfig;
use super::schedule::{
    config_error, div, mul, noise_to_alpha_cumprod, spaced_timesteps, vp_predict_noise, Prediction,
    Spacing, TrainSchedule,
};
use super::{timestep_at, Scheduler};
use crate::error::Result;
use crate::rng::TorchRng;

pub(crate) const CLASS: &str = "PNDMScheduler";

/// diffusers' `PNDMScheduler` with `skip_prk_steps`.
pub(crate) struct Pndm {
    schedule: TrainSchedule,
    final_alpha_cumprod: f32,
    timesteps: Vec<f64>,
    /// `num_train_timesteps // steps`, the distance diffusers steps back.
    step_ratio: i64,
    prediction: Prediction,
    /// Past model outputs, oldest first (at most four kept).
    ets: Vec<Tensor>,
    /// The sample of the first step, which the second step starts from again.
    cur_sample: Option<Tensor>,
    /// Steps taken so far.
    counter: usize,
}

impl Pndm {
    pub(crate) fn new(config: &SchedulerConfig, steps: usize) -> Result<Self> {
        if !config.skip_prk_steps {
            return Err(config_error(
                config,
                CLASS,
                "skip_prk_steps is false, but only the PLMS form (skip_prk_steps: true) is supported",
            ));
        }
        let prediction =
            Prediction::from_config(config, CLASS, &[Prediction::Epsilon, Prediction::Velocity])?;
        let spacing = Spacing::from_config(config, CLASS, Spacing::Leading)?;
        let schedule = TrainSchedule::new(config, CLASS, false)?;
        let final_alpha_cumprod = schedule.final_alpha_cumprod(config, false);
        let num_train = config.num_train_timesteps;
        Ok(Pndm {
            timesteps: plms_timesteps(&spaced_timesteps(
                spacing,
                num_train,
                steps,
                config.steps_offset,
                true,
            )),
            step_ratio: (num_train / steps) as i64,
            final_alpha_cumprod,
            schedule,
            prediction,
            ets: Vec::new(),
            cur_sample: None,
            counter: 0,
        })
    }

    fn timestep(&self, step_index: usize) -> candle_core::Result<i64> {
        timestep_at(&self.timesteps, step_index)
    }

    /// The PNDM transfer from `t` to `prev_t` given the combined model output.
    fn prev_sample(
        &self,
        sample: &Tensor,
        t: i64,
        prev_t: i64,
        model_output: &Tensor,
    ) -> candle_core::Result<Tensor> {
        let alpha_t = self.schedule.alpha_cumprod(t)?;
        let alpha_prev = self
            .schedule
            .prev_alpha_cumprod(prev_t, self.final_alpha_cumprod)?;
        let beta_t = 1.0 - alpha_t;
        let beta_prev = 1.0 - alpha_prev;
        let model_output = vp_predict_noise(
            self.prediction,
            model_output,
            sample,
            alpha_t.sqrt(),
            beta_t.sqrt(),
        )?;
        let sample_coeff = (alpha_prev / alpha_t).sqrt();
        let denom = alpha_t * beta_prev.sqrt() + (alpha_t * beta_t * alpha_prev).sqrt();
        let correction = div(&mul(&model_output, alpha_prev - alpha_t)?, denom)?;
        mul(sample, sample_coeff)? - correction
    }
}

/// The PLMS loop order from descending spaced timesteps: the last (largest)
/// one, then the second largest twice, then the rest.
fn plms_timesteps(descending: &[f64]) -> Vec<f64> {
    let ascending: Vec<f64> = descending.iter().rev().copied().collect();
    let n = ascending.len();
    let mut order: Vec<f64> = ascending[..n - 1].to_vec();
    if n >= 2 {
        order.push(ascending[n - 2]);
    }
    order.push(ascending[n - 1]);
    order.reverse();
    order
}

impl Scheduler for Pndm {
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
        let mut t = self.timestep(step_index)?;
        let mut prev_t = t - self.step_ratio;
        if self.counter == 1 {
            // The second call revisits the first interval with the averaged output.
            prev_t = t;
            t += self.step_ratio;
        } else {
            if self.ets.len() > 3 {
                self.ets.remove(0);
            }
            self.ets.push(model_output.clone());
        }

        let mut sample = sample.clone();
        let e = &self.ets;
        let combined = match (e.len(), self.counter) {
            (1, 0) => {
                self.cur_sample = Some(sample.clone());
                model_output.clone()
            }
            (1, 1) => {
                let first = self.cur_sample.take().ok_or_else(|| {
                    candle_core::Error::Msg("PNDM: second step without a first".into())
                })?;
                sample = first;
                div(&(model_output + &e[0])?, 2.0)?
            }
            (2, _) => div(&(mul(&e[1], 3.0)? - &e[0])?, 2.0)?,
            (3, _) => div(
                &((mul(&e[2], 23.0)? - mul(&e[1], 16.0)?)? + mul(&e[0], 5.0)?)?,
                12.0,
            )?,
            _ => {
                let sum = (((mul(&e[3], 55.0)? - mul(&e[2], 59.0)?)? + mul(&e[1], 37.0)?)?
                    - mul(&e[0], 9.0)?)?;
                mul(&sum, (1.0f64 / 24.0) as f32)?
            }
        };
        let prev = self.prev_sample(&sample, t, prev_t, &combined)?;
        self.counter += 1;
        Ok(prev)
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plms_order_repeats_the_second_timestep() {
        assert_eq!(
            plms_timesteps(&[751.0, 501.0, 251.0, 1.0]),
            vec![751.0, 501.0, 501.0, 251.0, 1.0]
        );
        assert_eq!(plms_timesteps(&[1.0]), vec![1.0]);
    }
}
