//! The variance-preserving view of a noisy sample, `alpha * x0 + sigma * noise`:
//! what the model's output means ([`Prediction`]), conversions between the
//! sample, its clean part and its noise, the log-SNR `lambda`, and the small
//! linear solver UniPC's corrector needs.

use candle_core::Tensor;

use super::scalar::{div, mul};
use super::train::config_error;
use crate::error::Result;
use crate::schedulers::config::SchedulerConfig;

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

#[cfg(test)]
mod tests {
    use super::*;

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
}
