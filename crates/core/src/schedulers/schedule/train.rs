//! The training noise schedule: betas from a scheduler config (linear,
//! scaled-linear, cosine or trained), the optional zero-terminal-SNR rescale,
//! and the `float32` cumulative alphas every scheduler indexes; also
//! [`config_error`], which every scheduler class reports its config's problems with.

use super::sigmas::sigma_from_alpha_cumprod;
use super::timesteps::torch_linspace_f32;
use crate::error::{Error, Result};
use crate::schedulers::config::SchedulerConfig;

/// A configuration error, naming the file and the scheduler class.
pub(crate) fn config_error(
    config: &SchedulerConfig,
    class: &str,
    message: impl std::fmt::Display,
) -> Error {
    Error::invalid_file(config.source_path(), format!("{class}: {message}"))
}

/// A class's defaults for the beta schedule keys a config may leave out.
#[derive(Debug, Clone, Copy)]
pub(crate) struct BetaDefaults {
    pub start: f64,
    pub end: f64,
    pub schedule: &'static str,
}

impl BetaDefaults {
    /// The defaults of every supported class but LCM.
    pub(crate) const DIFFUSERS: BetaDefaults = BetaDefaults {
        start: 0.0001,
        end: 0.02,
        schedule: "linear",
    };
}

/// The training noise schedule: `alphas_cumprod` in `float32`, as diffusers keeps it.
#[derive(Debug, Clone)]
pub(crate) struct TrainSchedule {
    /// Cumulative products of `1 - beta`.
    pub alphas_cumprod: Vec<f32>,
}

impl TrainSchedule {
    /// Betas from the config, rescaled to zero terminal SNR when the config
    /// asks and `zero_snr_supported` (false for classes without that option),
    /// and their cumulative alphas.
    pub(crate) fn new(
        config: &SchedulerConfig,
        class: &str,
        zero_snr_supported: bool,
    ) -> Result<Self> {
        Self::with_defaults(config, class, zero_snr_supported, BetaDefaults::DIFFUSERS)
    }

    /// As [`TrainSchedule::new`], for a class whose beta defaults differ.
    pub(crate) fn with_defaults(
        config: &SchedulerConfig,
        class: &str,
        zero_snr_supported: bool,
        defaults: BetaDefaults,
    ) -> Result<Self> {
        let mut betas = betas(config, class, defaults)?;
        if zero_snr_supported && config.rescale_betas_zero_snr {
            betas = rescale_zero_terminal_snr(&betas);
        }
        let alphas_cumprod = cumprod(betas.iter().map(|b| 1.0 - b));
        Ok(TrainSchedule { alphas_cumprod })
    }

    /// The sigma-based classes replace a zero-SNR schedule's final alpha of 0
    /// with 2^-24 so every sigma stays finite.
    pub(crate) fn clamp_terminal_alpha(&mut self, config: &SchedulerConfig) {
        if config.rescale_betas_zero_snr {
            if let Some(last) = self.alphas_cumprod.last_mut() {
                *last = 2f32.powi(-24);
            }
        }
    }

    /// `alphas_cumprod[t]`, with Python's indexing (negative counts from the end).
    pub(crate) fn alpha_cumprod(&self, t: i64) -> candle_core::Result<f32> {
        let len = self.alphas_cumprod.len() as i64;
        let index = if t < 0 { t + len } else { t };
        if !(0..len).contains(&index) {
            candle_core::bail!("timestep {t} is outside the training schedule of {len} steps");
        }
        Ok(self.alphas_cumprod[index as usize])
    }

    /// `alphas_cumprod[0]`, or 1 when `set_alpha_to_one` (which defaults to
    /// `set_alpha_to_one_default`, a per-class choice): the cumulative alpha
    /// past the last step.
    pub(crate) fn final_alpha_cumprod(
        &self,
        config: &SchedulerConfig,
        set_alpha_to_one_default: bool,
    ) -> f32 {
        if config.set_alpha_to_one.unwrap_or(set_alpha_to_one_default) {
            1.0
        } else {
            self.alphas_cumprod[0]
        }
    }

    /// `alphas_cumprod[prev_t]`, or `final_alpha_cumprod` when `prev_t` is
    /// negative (the step past the schedule's start).
    pub(crate) fn prev_alpha_cumprod(
        &self,
        prev_t: i64,
        final_alpha_cumprod: f32,
    ) -> candle_core::Result<f32> {
        if prev_t >= 0 {
            self.alpha_cumprod(prev_t)
        } else {
            Ok(final_alpha_cumprod)
        }
    }

    /// `((1 - a) / a) ** 0.5` for every training step, in `float32`.
    pub(crate) fn sigmas(&self) -> Vec<f32> {
        self.alphas_cumprod
            .iter()
            .map(|&a| sigma_from_alpha_cumprod(a))
            .collect()
    }
}

/// The betas of `config`, in `float32`.
fn betas(config: &SchedulerConfig, class: &str, defaults: BetaDefaults) -> Result<Vec<f32>> {
    let n = config.num_train_timesteps;
    if n < 2 {
        return Err(config_error(
            config,
            class,
            format!("num_train_timesteps {n} is below 2"),
        ));
    }
    if let Some(trained) = &config.trained_betas {
        if trained.len() != n {
            return Err(config_error(
                config,
                class,
                format!(
                    "trained_betas has {} values, num_train_timesteps is {n}",
                    trained.len()
                ),
            ));
        }
        return Ok(trained.iter().map(|&b| b as f32).collect());
    }
    let start = config.beta_start.unwrap_or(defaults.start);
    let end = config.beta_end.unwrap_or(defaults.end);
    match config.beta_schedule.as_deref().unwrap_or(defaults.schedule) {
        "linear" => Ok(torch_linspace_f32(start, end, n)),
        "scaled_linear" => Ok(torch_linspace_f32(start.sqrt(), end.sqrt(), n)
            .into_iter()
            .map(|b| b * b)
            .collect()),
        "squaredcos_cap_v2" => Ok(squaredcos_cap_v2(n)),
        other => Err(config_error(
            config,
            class,
            format!(
                "beta_schedule \"{other}\" is not one of linear, scaled_linear, squaredcos_cap_v2"
            ),
        )),
    }
}

/// The cosine schedule (Nichol & Dhariwal), computed in `float64` and stored as `float32`.
fn squaredcos_cap_v2(n: usize) -> Vec<f32> {
    let alpha_bar = |t: f64| {
        ((t + 0.008) / 1.008 * std::f64::consts::PI / 2.0)
            .cos()
            .powi(2)
    };
    (0..n)
        .map(|i| {
            let t1 = i as f64 / n as f64;
            let t2 = (i + 1) as f64 / n as f64;
            (1.0 - alpha_bar(t2) / alpha_bar(t1)).min(0.999) as f32
        })
        .collect()
}

/// `torch.cumprod` of `float32` values: accumulated in `float64`, each prefix
/// rounded to `float32`.
fn cumprod(values: impl Iterator<Item = f32>) -> Vec<f32> {
    let mut acc = 1f64;
    values
        .map(|v| {
            acc *= f64::from(v);
            acc as f32
        })
        .collect()
}

/// Rescales betas so the last step has zero SNR (Lin et al. 2023), in `float32`.
fn rescale_zero_terminal_snr(betas: &[f32]) -> Vec<f32> {
    let alphas_cumprod = cumprod(betas.iter().map(|b| 1.0 - b));
    let mut sqrt_ac: Vec<f32> = alphas_cumprod.iter().map(|a| a.sqrt()).collect();
    let first = sqrt_ac[0];
    let last = sqrt_ac[sqrt_ac.len() - 1];
    let scale = first / (first - last);
    for v in &mut sqrt_ac {
        *v -= last;
        *v *= scale;
    }
    let alphas_bar: Vec<f32> = sqrt_ac.iter().map(|v| v * v).collect();
    std::iter::once(alphas_bar[0])
        .chain(alphas_bar.windows(2).map(|w| w[1] / w[0]))
        .map(|alpha| 1.0 - alpha)
        .collect()
}

#[cfg(test)]
mod tests {
    use super::super::testing::config;
    use super::*;

    #[test]
    fn scaled_linear_alphas_cumprod_match_torch() {
        // torch.cumprod(1 - torch.linspace(0.00085**0.5, 0.012**0.5, 1000) ** 2, 0)[[0, 1, 500, 999]]
        let s = TrainSchedule::new(&config("scaled_linear", 0.00085, 0.012), "test", true).unwrap();
        let ac = &s.alphas_cumprod;
        assert_eq!(ac[0], 0.99915);
        assert_eq!(ac[1], 0.998_296);
        assert_eq!(ac[500], 0.276_332_47);
        assert_eq!(ac[999], 0.004_660_095);
    }

    #[test]
    fn zero_snr_rescale_ends_at_zero_alpha() {
        let betas = torch_linspace_f32(0.00085f64.sqrt(), 0.012f64.sqrt(), 1000)
            .into_iter()
            .map(|b| b * b)
            .collect::<Vec<_>>();
        let rescaled = rescale_zero_terminal_snr(&betas);
        assert_eq!(rescaled[999], 1.0);
        assert!((rescaled[0] - betas[0]).abs() < 1e-6);
    }
}
