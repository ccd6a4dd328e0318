//! Which training timesteps a run of inference steps visits: the config's
//! [`Spacing`] and the numpy- and torch-exact sequences it is built from
//! (`linspace`, `arange`), so timesteps match diffusers to the bit.

use super::train::config_error;
use crate::error::Result;
use crate::schedulers::config::SchedulerConfig;

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

#[cfg(test)]
mod tests {
    use super::*;

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
}
