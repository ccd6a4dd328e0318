//! Euler Ancestral: an Euler step to a lower noise level, then fresh noise
//! back up to the next sigma. It shares [`EulerDiscrete`]'s schedule and
//! stepper; only the step's end differs.

use candle_core::Tensor;

use super::config::SchedulerConfig;
use super::euler::{EulerDiscrete, SigmaOptions, SigmaSchedule};
use super::schedule::{mul, Prediction};
use crate::error::Result;
use crate::rng::TorchRng;

pub(crate) const CLASS: &str = "EulerAncestralDiscreteScheduler";

/// diffusers' `EulerAncestralDiscreteScheduler`.
pub(crate) fn new(config: &SchedulerConfig, steps: usize) -> Result<EulerDiscrete> {
    let prediction =
        Prediction::from_config(config, CLASS, &[Prediction::Epsilon, Prediction::Velocity])?;
    let schedule = SigmaSchedule::new(config, CLASS, steps, SigmaOptions::default())?;
    Ok(EulerDiscrete::ancestral(schedule, prediction))
}

/// The ancestral end of a step from `sigma_from` to `sigma_to`, given the
/// Euler derivative: down to `sigma_down`, then noise of `sigma_up`.
pub(super) fn step(
    sample: &Tensor,
    derivative: &Tensor,
    sigma_from: f32,
    sigma_to: f32,
    rng: &mut TorchRng,
) -> candle_core::Result<Tensor> {
    let (from2, to2) = (sigma_from * sigma_from, sigma_to * sigma_to);
    let sigma_up = (to2 * (from2 - to2) / from2).sqrt();
    let sigma_down = (to2 - sigma_up * sigma_up).sqrt();
    let prev = (sample + mul(derivative, sigma_down - sigma_from)?)?;
    // diffusers draws the noise even on the last step, where sigma_up is 0.
    let noise = rng
        .randn_tensor(derivative.dims(), derivative.device())?
        .to_dtype(derivative.dtype())?;
    prev + mul(&noise, sigma_up)?
}
