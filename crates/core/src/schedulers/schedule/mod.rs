//! Noise-schedule math shared by every scheduler.
//!
//! diffusers builds its schedules with a mix of `float32` torch tensors and
//! `float64` numpy arrays; the functions here follow the same dtype at every
//! step (and numpy's own formulas for `linspace`, `arange` and `interp`) so
//! timesteps and sigmas come out identical, not merely close.
//!
//! - [`train`]: betas and cumulative alphas of the training schedule, config errors.
//! - [`timesteps`]: timestep spacing and the numpy/torch-exact sequences.
//! - [`sigmas`]: sigmas, log-sigma interpolation, Karras spacing.
//! - [`vp`]: prediction types and the alpha/sigma conversions, the small solver.
//! - [`scalar`]: tensor-by-scalar arithmetic with torch's rounding.

mod scalar;
mod sigmas;
mod timesteps;
mod train;
mod vp;

pub(crate) use scalar::{clip, div, mul};
pub(crate) use sigmas::{
    karras_sigmas, log_sigmas, np_interp, sigma_from_alpha_cumprod, sigma_to_t,
};
pub(crate) use timesteps::{multistep_timesteps, spaced_timesteps, torch_linspace_f32, Spacing};
pub(crate) use train::{config_error, BetaDefaults, TrainSchedule};
pub(crate) use vp::{
    noise_to_alpha_cumprod, solve_f32, vp_alpha_sigma, vp_lambda, vp_noise, vp_predict_noise,
    vp_predict_x0, Prediction,
};

/// Shared by the schedule's unit tests.
#[cfg(test)]
mod testing {
    use crate::schedulers::config::SchedulerConfig;

    /// A config with this beta schedule and range, diffusers' defaults otherwise.
    pub(super) fn config(schedule: &str, start: f64, end: f64) -> SchedulerConfig {
        SchedulerConfig {
            beta_schedule: Some(schedule.into()),
            beta_start: Some(start),
            beta_end: Some(end),
            ..SchedulerConfig::default()
        }
    }
}
