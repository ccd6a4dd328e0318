//! Noise-schedule math shared by every scheduler.
//!
//! diffusers builds its schedules with a mix of `float32` torch tensors and
//! `float64` numpy arrays; the functions here follow the same dtype at every
//! step (and numpy's own formulas for `linspace`, `arange` and `interp`) so
//! timesteps and sigmas come out identical, not merely close.

use candle_core::Tensor;

use super::config::SchedulerConfig;
use crate::error::{Error, Result};

/// How inference timesteps are picked from the training range.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Spacing {
    /// Evenly spaced from 0, plus `steps_offset`.
    Leading,
    /// Evenly spaced down from the last training step.
    Trailing,
    /// `linspace(0, T - 1, n)`.
    Linspace,
}

/// What the model's output means.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Prediction {
    /// The added noise.
    Epsilon,
    /// The velocity `alpha * noise - sigma * x0`.
    Velocity,
    /// The clean sample itself.
    Sample,
}

impl Prediction {
    /// Every prediction type, for the classes that accept them all.
    pub(crate) const ALL: &'static [Prediction] = &[
        Prediction::Epsilon,
        Prediction::Velocity,
        Prediction::Sample,
    ];
}

/// A configuration error, naming the file and the scheduler class.
pub(crate) fn config_error(
    config: &SchedulerConfig,
    class: &str,
    message: impl std::fmt::Display,
) -> Error {
    Error::invalid_file(config.source_path(), format!("{class}: {message}"))
}

impl Spacing {
    /// The config's spacing, or `default` (which differs between classes).
    pub(crate) fn from_config(
        config: &SchedulerConfig,
        class: &str,
        default: Spacing,
    ) -> Result<Self> {
        match config.timestep_spacing.as_deref() {
            None => Ok(default),
            Some("leading") => Ok(Spacing::Leading),
            Some("trailing") => Ok(Spacing::Trailing),
            Some("linspace") => Ok(Spacing::Linspace),
            Some(other) => Err(config_error(
                config,
                class,
                format!("timestep_spacing \"{other}\" is not one of leading, trailing, linspace"),
            )),
        }
    }
}

impl Prediction {
    /// The config's `prediction_type`, if `class` accepts it.
    pub(crate) fn from_config(
        config: &SchedulerConfig,
        class: &str,
        allowed: &[Prediction],
    ) -> Result<Self> {
        let prediction = match config.prediction_type.as_str() {
            "epsilon" => Some(Prediction::Epsilon),
            "v_prediction" => Some(Prediction::Velocity),
            "sample" => Some(Prediction::Sample),
            _ => None,
        };
        match prediction {
            Some(p) if allowed.contains(&p) => Ok(p),
            _ => Err(config_error(
                config,
                class,
                format!(
                    "prediction_type \"{}\" is not supported",
                    config.prediction_type
                ),
            )),
        }
    }
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

/// `((1 - a) / a) ** 0.5` in `float32`.
pub(crate) fn sigma_from_alpha_cumprod(a: f32) -> f32 {
    ((1.0 - a) / a).sqrt()
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

/// `torch.linspace(start, end, n, dtype=float32)`: the first half counts up
/// from `start`, the second half down from `end`, each with one fused multiply-add.
pub(crate) fn torch_linspace_f32(start: f64, end: f64, n: usize) -> Vec<f32> {
    let (start, end) = (start as f32, end as f32);
    let step = (end - start) / (n - 1) as f32;
    let halfway = n / 2;
    (0..n)
        .map(|i| {
            if i < halfway {
                step.mul_add(i as f32, start)
            } else {
                (-step).mul_add((n - 1 - i) as f32, end)
            }
        })
        .collect()
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

/// `numpy.linspace(start, stop, num)`.
pub(crate) fn np_linspace(start: f64, stop: f64, num: usize) -> Vec<f64> {
    match num {
        0 => Vec::new(),
        1 => vec![start],
        _ => {
            let step = (stop - start) / (num - 1) as f64;
            let mut values: Vec<f64> = (0..num).map(|i| i as f64 * step + start).collect();
            values[num - 1] = stop;
            values
        }
    }
}

/// `numpy.arange(start, 0, -step)` for a positive float `step`: the length and
/// the values follow numpy's fill rule (`start + i * ((start - step) - start)`).
pub(crate) fn np_arange_down(start: f64, step: f64) -> Vec<f64> {
    let len = ((0.0 - start) / -step).ceil().max(0.0) as usize;
    let delta = (start - step) - start;
    (0..len)
        .map(|i| match i {
            0 => start,
            1 => start - step,
            _ => start + i as f64 * delta,
        })
        .collect()
}

/// Inference timesteps in loop order (descending), as DDIM, PNDM and Euler
/// space them. `round_linspace` is false for the Euler family, which keeps
/// fractional `linspace` timesteps.
pub(crate) fn spaced_timesteps(
    spacing: Spacing,
    num_train: usize,
    steps: usize,
    steps_offset: i64,
    round_linspace: bool,
) -> Vec<f64> {
    match spacing {
        Spacing::Linspace => np_linspace(0.0, (num_train - 1) as f64, steps)
            .into_iter()
            .rev()
            .map(|t| {
                if round_linspace {
                    t.round_ties_even()
                } else {
                    f64::from(t as f32)
                }
            })
            .collect(),
        Spacing::Leading => {
            let ratio = num_train / steps;
            (0..steps)
                .rev()
                .map(|i| (i * ratio) as f64 + steps_offset as f64)
                .collect()
        }
        Spacing::Trailing => trailing_timesteps(num_train as f64, num_train, steps),
    }
}

/// Trailing spacing: `round(arange(start, 0, -num_train / steps)) - 1`.
fn trailing_timesteps(start: f64, num_train: usize, steps: usize) -> Vec<f64> {
    np_arange_down(start, num_train as f64 / steps as f64)
        .into_iter()
        .map(|t| t.round_ties_even() - 1.0)
        .collect()
}

/// The integer timesteps of the multistep solvers (DPM-Solver, UniPC), in
/// loop order: `steps` of the first `last_timestep` training steps (fewer
/// than `num_train` when DPM-Solver clips the noisiest ones).
pub(crate) fn multistep_timesteps(
    spacing: Spacing,
    last_timestep: usize,
    num_train: usize,
    steps: usize,
    steps_offset: i64,
) -> Vec<f64> {
    match spacing {
        Spacing::Linspace => np_linspace(0.0, last_timestep as f64 - 1.0, steps + 1)
            .into_iter()
            .rev()
            .take(steps)
            .map(f64::round_ties_even)
            .collect(),
        Spacing::Leading => {
            let ratio = last_timestep / (steps + 1);
            (1..=steps)
                .rev()
                .map(|i| (i * ratio) as f64 + steps_offset as f64)
                .collect()
        }
        Spacing::Trailing => trailing_timesteps(last_timestep as f64, num_train, steps),
    }
}

/// `(alpha_t, sigma_t)` of the variance-preserving process at noise level
/// `sigma` (the Karras / Euler sigma, `sqrt((1 - alpha_bar) / alpha_bar)`).
pub(crate) fn vp_alpha_sigma(sigma: f32) -> (f32, f32) {
    let alpha = 1.0 / (sigma * sigma + 1.0).sqrt();
    (alpha, sigma * alpha)
}

/// `alpha * x0 + sigma * noise`: a variance-preserving sample from its clean
/// part and its noise.
pub(crate) fn vp_noise(
    x0: &Tensor,
    noise: &Tensor,
    alpha: f32,
    sigma: f32,
) -> candle_core::Result<Tensor> {
    mul(x0, alpha)? + mul(noise, sigma)?
}

/// [`vp_noise`] at cumulative alpha `alpha_cumprod`:
/// `sqrt(a) * x0 + sqrt(1 - a) * noise`.
pub(crate) fn noise_to_alpha_cumprod(
    x0: &Tensor,
    noise: &Tensor,
    alpha_cumprod: f32,
) -> candle_core::Result<Tensor> {
    vp_noise(
        x0,
        noise,
        alpha_cumprod.sqrt(),
        (1.0 - alpha_cumprod).sqrt(),
    )
}

/// The clean-sample estimate from a model output, for a `sample` that is
/// `alpha * x0 + sigma * noise`.
pub(crate) fn vp_predict_x0(
    prediction: Prediction,
    model_output: &Tensor,
    sample: &Tensor,
    alpha: f32,
    sigma: f32,
) -> candle_core::Result<Tensor> {
    match prediction {
        Prediction::Epsilon => div(&(sample - mul(model_output, sigma)?)?, alpha),
        Prediction::Sample => Ok(model_output.clone()),
        Prediction::Velocity => mul(sample, alpha)? - mul(model_output, sigma)?,
    }
}

/// The noise estimate from a model output, for a `sample` that is
/// `alpha * x0 + sigma * noise`.
pub(crate) fn vp_predict_noise(
    prediction: Prediction,
    model_output: &Tensor,
    sample: &Tensor,
    alpha: f32,
    sigma: f32,
) -> candle_core::Result<Tensor> {
    match prediction {
        Prediction::Epsilon => Ok(model_output.clone()),
        Prediction::Sample => div(&(sample - mul(model_output, alpha)?)?, sigma),
        Prediction::Velocity => mul(model_output, alpha)? + mul(sample, sigma)?,
    }
}

/// `x` clamped to `[-r, r]` when a clip range is set (`clip_sample`).
pub(crate) fn clip(x: Tensor, range: Option<f32>) -> candle_core::Result<Tensor> {
    match range {
        Some(r) => x.clamp(-r, r),
        None => Ok(x),
    }
}

/// Half the log signal-to-noise ratio, `log(alpha) - log(sigma)`.
pub(crate) fn vp_lambda(alpha: f32, sigma: f32) -> f32 {
    alpha.ln() - sigma.ln()
}

/// Solves the small dense system `a x = b` in `float32` by Gaussian
/// elimination with partial pivoting (LAPACK's `gesv`, which
/// `torch.linalg.solve` calls); `None` when `a` is singular.
pub(crate) fn solve_f32(mut a: Vec<Vec<f32>>, mut b: Vec<f32>) -> Option<Vec<f32>> {
    let n = b.len();
    for col in 0..n {
        let pivot = (col..n).max_by(|&i, &j| a[i][col].abs().total_cmp(&a[j][col].abs()))?;
        if a[pivot][col] == 0.0 || !a[pivot][col].is_finite() {
            return None;
        }
        a.swap(col, pivot);
        b.swap(col, pivot);
        let pivot_row = a[col].clone();
        for row in col + 1..n {
            let factor = a[row][col] / pivot_row[col];
            for (x, p) in a[row][col..].iter_mut().zip(&pivot_row[col..]) {
                *x -= factor * p;
            }
            b[row] -= factor * b[col];
        }
    }
    let mut x = vec![0f32; n];
    for row in (0..n).rev() {
        let tail: f32 = (row + 1..n).map(|k| a[row][k] * x[k]).sum();
        x[row] = (b[row] - tail) / a[row][row];
    }
    Some(x)
}

/// `numpy.interp(x, arange(len(fp)), fp)`.
pub(crate) fn np_interp(x: f64, fp: &[f32]) -> f64 {
    let last = fp.len() - 1;
    if x.is_nan() {
        return x;
    }
    if x < 0.0 {
        return f64::from(fp[0]);
    }
    if x >= last as f64 {
        return f64::from(fp[last]);
    }
    let j = x.floor() as usize;
    let (y0, y1) = (f64::from(fp[j]), f64::from(fp[j + 1]));
    if j as f64 == x {
        return y0;
    }
    let slope = y1 - y0;
    slope * (x - j as f64) + y0
}

/// `numpy.log` of `float32` sigmas, kept in `float32`.
pub(crate) fn log_sigmas(sigmas: &[f32]) -> Vec<f32> {
    sigmas.iter().map(|&s| f64::from(s).ln() as f32).collect()
}

/// The fractional training timestep whose sigma is `sigma`, by linear
/// interpolation in log-sigma (diffusers' `_sigma_to_t`).
pub(crate) fn sigma_to_t(sigma: f64, log_sigmas: &[f32]) -> f64 {
    let log_sigma = sigma.max(1e-10).ln();
    let below = log_sigmas
        .iter()
        .rposition(|&l| log_sigma - f64::from(l) >= 0.0)
        .unwrap_or(0);
    let low_idx = below.min(log_sigmas.len() - 2);
    let high_idx = low_idx + 1;
    let low = log_sigmas[low_idx];
    let high = log_sigmas[high_idx];
    let w = ((f64::from(low) - log_sigma) / f64::from(low - high)).clamp(0.0, 1.0);
    (1.0 - w) * low_idx as f64 + w * high_idx as f64
}

/// Karras et al. (2022) sigmas with rho = 7, from `sigma_max` down to `sigma_min`.
pub(crate) fn karras_sigmas(sigma_min: f64, sigma_max: f64, steps: usize) -> Vec<f64> {
    let rho = 7.0;
    let min_inv_rho = sigma_min.powf(1.0 / rho);
    let max_inv_rho = sigma_max.powf(1.0 / rho);
    np_linspace(0.0, 1.0, steps)
        .into_iter()
        .map(|ramp| (max_inv_rho + ramp * (min_inv_rho - max_inv_rho)).powf(rho))
        .collect()
}

/// `tensor * c` with `c` rounded to the tensor's dtype, as torch multiplies by a 0-dim tensor.
pub(crate) fn mul(t: &Tensor, c: f32) -> candle_core::Result<Tensor> {
    t.broadcast_mul(&scalar_like(t, c)?)
}

/// `tensor / c`, a true division (not a multiplication by `1 / c`).
pub(crate) fn div(t: &Tensor, c: f32) -> candle_core::Result<Tensor> {
    t.broadcast_div(&scalar_like(t, c)?)
}

fn scalar_like(t: &Tensor, c: f32) -> candle_core::Result<Tensor> {
    Tensor::new(c, t.device())?.to_dtype(t.dtype())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(schedule: &str, start: f64, end: f64) -> SchedulerConfig {
        SchedulerConfig {
            beta_schedule: Some(schedule.into()),
            beta_start: Some(start),
            beta_end: Some(end),
            ..SchedulerConfig::default()
        }
    }

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
    fn linspace_mirrors_torch_rounding() {
        // torch.linspace(0.0001, 0.02, 1000, dtype=torch.float32)[[7, 14, 500, 998]]
        let b = torch_linspace_f32(0.0001, 0.02, 1000);
        assert_eq!(b[7], 0.000_239_439_44);
        assert_eq!(b[14], 0.000_378_878_87);
        assert_eq!(b[500], 0.010_059_959);
        assert_eq!(b[998], 0.019_980_08);
        assert_eq!(b[999], 0.02);
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

    #[test]
    fn spacings_follow_numpy() {
        let t = spaced_timesteps(Spacing::Leading, 1000, 4, 1, true);
        assert_eq!(t, vec![751.0, 501.0, 251.0, 1.0]);
        let t = spaced_timesteps(Spacing::Trailing, 1000, 4, 1, true);
        assert_eq!(t, vec![999.0, 749.0, 499.0, 249.0]);
        let t = spaced_timesteps(Spacing::Linspace, 1000, 4, 1, true);
        assert_eq!(t, vec![999.0, 666.0, 333.0, 0.0]);
        // numpy.arange(1000, 0, -1000 / 61) has 62 elements.
        assert_eq!(
            spaced_timesteps(Spacing::Trailing, 1000, 61, 0, true).len(),
            62
        );
        let t = spaced_timesteps(Spacing::Linspace, 1000, 4, 0, false);
        assert_eq!(t, vec![999.0, 666.0, 333.0, 0.0]);
        let t = spaced_timesteps(Spacing::Linspace, 1000, 7, 0, false);
        assert_eq!(t[1], f64::from(832.5f32));
    }

    #[test]
    fn interp_and_sigma_to_t_invert_each_other() {
        let s = TrainSchedule::new(&config("scaled_linear", 0.00085, 0.012), "test", true).unwrap();
        let sigmas = s.sigmas();
        let logs = log_sigmas(&sigmas);
        for t in [0.0, 10.5, 500.0, 998.25, 999.0] {
            let sigma = np_interp(t, &sigmas);
            assert!((sigma_to_t(sigma, &logs) - t).abs() < 0.02, "t = {t}");
        }
    }

    #[test]
    fn solves_small_systems_with_pivoting() {
        let x = solve_f32(vec![vec![1.0, 1.0], vec![-2.0, 1.0]], vec![3.0, 0.0]).unwrap();
        assert!(
            (x[0] - 1.0).abs() < 1e-6 && (x[1] - 2.0).abs() < 1e-6,
            "{x:?}"
        );
        let a = vec![
            vec![0.0, 2.0, 1.0],
            vec![1.0, 1.0, 1.0],
            vec![4.0, -1.0, 2.0],
        ];
        let x = solve_f32(a, vec![7.0, 6.0, 8.0]).unwrap();
        for (got, want) in x.iter().zip([1.0, 2.0, 3.0]) {
            assert!((got - want).abs() < 1e-5, "{x:?}");
        }
        assert!(solve_f32(vec![vec![1.0, 2.0], vec![2.0, 4.0]], vec![1.0, 2.0]).is_none());
    }

    #[test]
    fn karras_sigmas_span_the_range() {
        let k = karras_sigmas(0.03, 14.6, 10);
        assert!((k[0] - 14.6).abs() < 1e-12 && (k[9] - 0.03).abs() < 1e-12);
        assert!(k.windows(2).all(|w| w[0] > w[1]));
    }
}
