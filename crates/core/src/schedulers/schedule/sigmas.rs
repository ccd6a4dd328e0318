//! Noise levels as the sigma-based schedulers (Euler, DPM-Solver, UniPC) see
//! them: sigmas from cumulative alphas, numpy's `interp`, log-sigma lookup of
//! fractional timesteps, and Karras et al.'s spacing.

use super::timesteps::np_linspace;

/// `((1 - a) / a) ** 0.5` in `float32`.
pub(crate) fn sigma_from_alpha_cumprod(a: f32) -> f32 {
    ((1.0 - a) / a).sqrt()
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

#[cfg(test)]
mod tests {
    use super::super::testing::config;
    use super::super::train::TrainSchedule;
    use super::*;

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
    fn karras_sigmas_span_the_range() {
        let k = karras_sigmas(0.03, 14.6, 10);
        assert!((k[0] - 14.6).abs() < 1e-12 && (k[9] - 0.03).abs() < 1e-12);
        assert!(k.windows(2).all(|w| w[0] > w[1]));
    }
}
