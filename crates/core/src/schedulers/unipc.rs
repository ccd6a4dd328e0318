//! UniPC (Zhao et al. 2023): a multistep predictor (UniP) whose result the
//! next step first refines with a corrector (UniC) that reuses the new model
//! output, so the correction costs no extra UNet call.

use candle_core::Tensor;

use super::config::SchedulerConfig;
use super::schedule::{
    config_error, div, karras_sigmas, log_sigmas, mul, multistep_timesteps, np_interp,
    sigma_from_alpha_cumprod, sigma_to_t, solve_f32, vp_alpha_sigma, vp_lambda, vp_noise,
    vp_predict_noise, vp_predict_x0, Prediction, Spacing, TrainSchedule,
};
use super::{check_step, Scheduler};
use crate::error::Result;
use crate::rng::TorchRng;

pub(crate) const CLASS: &str = "UniPCMultistepScheduler";

/// The highest `solver_order` accepted.
const MAX_ORDER: usize = 3;

/// diffusers' `UniPCMultistepScheduler` on the variance-preserving sigmas.
pub(crate) struct UniPc {
    timesteps: Vec<f64>,
    /// One sigma per timestep plus the final one.
    sigmas: Vec<f32>,
    prediction: Prediction,
    /// Solve for the data prediction rather than the noise.
    predict_x0: bool,
    /// `B(h) = e^h - 1` (`bh2`) rather than `B(h) = h` (`bh1`).
    bh2: bool,
    solver_order: usize,
    lower_order_final: bool,
    disable_corrector: Vec<i64>,
    /// The converted outputs of the last `solver_order` steps, oldest first.
    model_outputs: Vec<Tensor>,
    /// The sample the last predictor started from (after its correction).
    last_sample: Option<Tensor>,
    /// The order the last predictor ran with, which its corrector reuses.
    this_order: usize,
    /// How many steps have run, capped at `solver_order`.
    lower_order_nums: usize,
}

/// The step-size terms one UniP or UniC update shares.
struct Update {
    /// `x_t` without the higher-order terms.
    base: Tensor,
    /// The factor of the higher-order residual (`alpha_t * B(h)` or `sigma_t * B(h)`).
    scale: f32,
    /// Scaled differences to the older outputs, `(m_i - m_0) / r_i`.
    d1s: Vec<Tensor>,
    /// `R[i][k] = r_k^i` with `r_order = 1`.
    r: Vec<Vec<f32>>,
    /// The right-hand side of the order conditions.
    b: Vec<f32>,
}

impl UniPc {
    pub(crate) fn new(config: &SchedulerConfig, steps: usize) -> Result<Self> {
        let unsupported = |what: String| Err(config_error(config, CLASS, what));
        for (set, name) in [
            (config.thresholding, "thresholding"),
            (config.use_exponential_sigmas, "use_exponential_sigmas"),
            (config.use_beta_sigmas, "use_beta_sigmas"),
            (config.use_flow_sigmas, "use_flow_sigmas"),
            (config.use_dynamic_shifting, "use_dynamic_shifting"),
            (config.solver_p.is_some(), "solver_p"),
            (config.shift_terminal.is_some(), "shift_terminal"),
        ] {
            if set {
                return unsupported(format!("{name} is not supported"));
            }
        }
        let bh2 = match config.solver_type.as_str() {
            "bh1" => false,
            "bh2" | "midpoint" | "heun" | "logrho" => true,
            other => return unsupported(format!("solver_type \"{other}\" is not one of bh1, bh2")),
        };
        if !(1..=MAX_ORDER).contains(&config.solver_order) {
            return unsupported(format!(
                "solver_order {} is not supported (1 to {MAX_ORDER})",
                config.solver_order
            ));
        }
        let final_sigma_zero = match config.final_sigmas_type.as_str() {
            "zero" => true,
            "sigma_min" => false,
            other => {
                return unsupported(format!(
                    "final_sigmas_type \"{other}\" is not one of zero, sigma_min"
                ))
            }
        };
        // A final sigma of 0 makes the last step's h infinite; diffusers then
        // only stays finite for a first-order data-prediction step with bh2.
        if final_sigma_zero {
            let diverges = if !config.predict_x0 {
                Some("predict_x0 false")
            } else if !bh2 {
                Some("solver_type \"bh1\"")
            } else if !config.lower_order_final && config.solver_order > 1 {
                Some("lower_order_final false")
            } else {
                None
            };
            if let Some(option) = diverges {
                return unsupported(format!(
                    "{option} with final_sigmas_type \"zero\" ends in NaN or infinity in diffusers; \
                     use final_sigmas_type \"sigma_min\""
                ));
            }
        }
        let prediction = Prediction::from_config(config, CLASS, Prediction::ALL)?;
        let spacing = Spacing::from_config(config, CLASS, Spacing::Linspace)?;

        let mut schedule = TrainSchedule::new(config, CLASS, true)?;
        schedule.clamp_terminal_alpha(config);
        let num_train = config.num_train_timesteps;
        let mut timesteps =
            multistep_timesteps(spacing, num_train, num_train, steps, config.steps_offset);
        let train_sigmas = schedule.sigmas();
        let (sigmas, final_sigma): (Vec<f64>, f32) = if config.use_karras_sigmas {
            let train_log_sigmas = log_sigmas(&train_sigmas);
            let sigma_min = config.sigma_min.unwrap_or(f64::from(train_sigmas[0]));
            let sigma_max = config
                .sigma_max
                .unwrap_or(f64::from(train_sigmas[num_train - 1]));
            let sigmas = karras_sigmas(sigma_min, sigma_max, steps);
            timesteps = sigmas
                .iter()
                .map(|&s| sigma_to_t(s, &train_log_sigmas).round_ties_even())
                .collect();
            // Here sigma_min means the last Karras sigma, not the training one.
            let last = sigmas[sigmas.len() - 1] as f32;
            (sigmas, if final_sigma_zero { 0.0 } else { last })
        } else {
            let sigmas = timesteps
                .iter()
                .map(|&t| np_interp(t, &train_sigmas))
                .collect();
            let last = sigma_from_alpha_cumprod(schedule.alphas_cumprod[0]);
            (sigmas, if final_sigma_zero { 0.0 } else { last })
        };
        let sigmas = sigmas
            .into_iter()
            .map(|s| s as f32)
            .chain(std::iter::once(final_sigma))
            .collect();
        Ok(UniPc {
            timesteps,
            sigmas,
            prediction,
            predict_x0: config.predict_x0,
            bh2,
            solver_order: config.solver_order,
            lower_order_final: config.lower_order_final,
            disable_corrector: config.disable_corrector.clone(),
            model_outputs: Vec::new(),
            last_sample: None,
            this_order: 0,
            lower_order_nums: 0,
        })
    }

    /// The model output in the form the solver works with: the data
    /// prediction (`predict_x0`) or the noise.
    fn convert_model_output(
        &self,
        model_output: &Tensor,
        sample: &Tensor,
        sigma: f32,
    ) -> candle_core::Result<Tensor> {
        let (alpha_t, sigma_t) = vp_alpha_sigma(sigma);
        if self.predict_x0 {
            vp_predict_x0(self.prediction, model_output, sample, alpha_t, sigma_t)
        } else {
            vp_predict_noise(self.prediction, model_output, sample, alpha_t, sigma_t)
        }
    }

    /// The terms of an update of `order` from `sample` at sigma index `from`
    /// to sigma index `to`, with `outputs` the converted model outputs whose
    /// last entry belongs to `from` and each earlier one to the index before.
    fn update_terms(
        &self,
        sample: &Tensor,
        from: usize,
        to: usize,
        order: usize,
        outputs: &[Tensor],
    ) -> candle_core::Result<Update> {
        let lambda_at = |index: usize| {
            let (alpha, sigma) = vp_alpha_sigma(self.sigmas[index]);
            vp_lambda(alpha, sigma)
        };
        let (alpha_t, sigma_t) = vp_alpha_sigma(self.sigmas[to]);
        let (alpha_s0, sigma_s0) = vp_alpha_sigma(self.sigmas[from]);
        let lambda_s0 = vp_lambda(alpha_s0, sigma_s0);
        let h = vp_lambda(alpha_t, sigma_t) - lambda_s0;
        let m0 = &outputs[outputs.len() - 1];

        let mut rks = Vec::with_capacity(order);
        let mut d1s = Vec::with_capacity(order - 1);
        for i in 1..order {
            let mi = &outputs[outputs.len() - 1 - i];
            let rk = (lambda_at(from - i) - lambda_s0) / h;
            rks.push(rk);
            d1s.push(div(&(mi - m0)?, rk)?);
        }
        rks.push(1.0);

        let hh = if self.predict_x0 { -h } else { h };
        let h_phi_1 = hh.exp_m1();
        let b_h = if self.bh2 { hh.exp_m1() } else { hh };
        let mut h_phi_k = h_phi_1 / hh - 1.0;
        let mut factorial = 1u32;
        let mut r = Vec::with_capacity(order);
        let mut b = Vec::with_capacity(order);
        for i in 1..=order {
            r.push(rks.iter().map(|&rk| rk.powi(i as i32 - 1)).collect());
            b.push(h_phi_k * factorial as f32 / b_h);
            factorial *= i as u32 + 1;
            h_phi_k = h_phi_k / hh - 1.0 / factorial as f32;
        }

        let (base, scale) = if self.predict_x0 {
            let base = (mul(sample, sigma_t / sigma_s0)? - mul(m0, alpha_t * h_phi_1)?)?;
            (base, alpha_t * b_h)
        } else {
            let base = (mul(sample, alpha_t / alpha_s0)? - mul(m0, sigma_t * h_phi_1)?)?;
            (base, sigma_t * b_h)
        };
        Ok(Update {
            base,
            scale,
            d1s,
            r,
            b,
        })
    }

    /// UniP: the sample at `step_index + 1` from `sample` at `step_index`.
    fn predict(
        &self,
        sample: &Tensor,
        step_index: usize,
        order: usize,
    ) -> candle_core::Result<Tensor> {
        let u = self.update_terms(
            sample,
            step_index,
            step_index + 1,
            order,
            &self.model_outputs,
        )?;
        let rhos = match order {
            1 => return Ok(u.base),
            2 => vec![0.5],
            _ => {
                let r = u.r[..order - 1]
                    .iter()
                    .map(|row| row[..order - 1].to_vec())
                    .collect();
                solve(r, u.b[..order - 1].to_vec(), step_index)?
            }
        };
        let residual = weighted_sum(&rhos, &u.d1s)?;
        u.base - mul(&residual, u.scale)?
    }

    /// UniC: refines `this_sample` (the last prediction, at `step_index`)
    /// with `this_output`, the converted model output there.
    fn correct(
        &self,
        this_output: &Tensor,
        last_sample: &Tensor,
        step_index: usize,
    ) -> candle_core::Result<Tensor> {
        let order = self.this_order;
        let u = self.update_terms(
            last_sample,
            step_index - 1,
            step_index,
            order,
            &self.model_outputs,
        )?;
        let rhos = match order {
            1 => vec![0.5],
            _ => solve(u.r, u.b, step_index)?,
        };
        let m0 = &self.model_outputs[self.model_outputs.len() - 1];
        let d1_t = mul(&(this_output - m0)?, rhos[order - 1])?;
        let residual = match order {
            1 => d1_t,
            _ => (weighted_sum(&rhos[..order - 1], &u.d1s)? + d1_t)?,
        };
        u.base - mul(&residual, u.scale)?
    }
}

/// `sum_k weights[k] * terms[k]`.
fn weighted_sum(weights: &[f32], terms: &[Tensor]) -> candle_core::Result<Tensor> {
    let mut sum = mul(&terms[0], weights[0])?;
    for (term, &w) in terms.iter().zip(weights).skip(1) {
        sum = (sum + mul(term, w)?)?;
    }
    Ok(sum)
}

/// The order-condition weights, or an error when the system is singular.
fn solve(r: Vec<Vec<f32>>, b: Vec<f32>, step_index: usize) -> candle_core::Result<Vec<f32>> {
    solve_f32(r, b).ok_or_else(|| {
        candle_core::Error::Msg(format!(
            "{CLASS}: the order conditions at step {step_index} are singular (repeated sigmas)"
        ))
    })
}

impl Scheduler for UniPc {
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
        let len = self.timesteps.len();
        check_step(step_index, len)?;
        let converted = self.convert_model_output(model_output, sample, self.sigmas[step_index])?;
        let corrector_on =
            step_index > 0 && !self.disable_corrector.contains(&(step_index as i64 - 1));
        let sample = match &self.last_sample {
            Some(last) if corrector_on => self.correct(&converted, last, step_index)?,
            _ => sample.clone(),
        };
        if self.model_outputs.len() == self.solver_order {
            self.model_outputs.remove(0);
        }
        self.model_outputs.push(converted);
        let order = if self.lower_order_final {
            self.solver_order.min(len - step_index)
        } else {
            self.solver_order
        };
        self.this_order = order.min(self.lower_order_nums + 1);
        let prev = self.predict(&sample, step_index, self.this_order)?;
        self.last_sample = Some(sample);
        self.lower_order_nums = (self.lower_order_nums + 1).min(self.solver_order);
        Ok(prev)
    }

    /// The converted outputs are the data prediction unless the solver runs on noise.
    fn predicted_original(&self) -> Option<&Tensor> {
        self.model_outputs.last().filter(|_| self.predict_x0)
    }

    fn add_noise(
        &self,
        original: &Tensor,
        noise: &Tensor,
        step_index: usize,
    ) -> candle_core::Result<Tensor> {
        check_step(step_index, self.timesteps.len())?;
        let (alpha_t, sigma_t) = vp_alpha_sigma(self.sigmas[step_index]);
        vp_noise(original, noise, alpha_t, sigma_t)
    }
}

#[cfg(test)]
mod tests {
    use super::super::testing::{assert_final_sample, sd15};
    use super::*;

    fn unipc(edit: impl FnOnce(&mut SchedulerConfig)) -> SchedulerConfig {
        let mut config = sd15();
        config.class_name = Some(CLASS.into());
        config.solver_type = "bh2".into();
        edit(&mut config);
        config
    }

    const LINSPACE_7: [f64; 7] = [999.0, 856.0, 714.0, 571.0, 428.0, 285.0, 143.0];

    #[test]
    fn options_beyond_the_fixtures_match_diffusers() {
        // UniPCMultistepScheduler.from_config(sd15, **options), 7 steps, in `testing::final_sample`'s loop.
        let cases: [(&str, SchedulerConfig, [f32; 4]); 8] = [
            (
                "solver_order=1",
                unipc(|c| c.solver_order = 1),
                [-2.559_740_5, -1.306_215, -7.805_045_6, -1.057_143_4],
            ),
            (
                "solver_order=3",
                unipc(|c| c.solver_order = 3),
                [-2.425_514, -1.233_627_3, -7.412_894_7, -0.996_803_5],
            ),
            (
                "solver_order=3, lower_order_final=False, final_sigmas_type=sigma_min",
                unipc(|c| {
                    c.solver_order = 3;
                    c.lower_order_final = false;
                    c.final_sigmas_type = "sigma_min".into();
                }),
                [-3.341_392, -1.713_286_3, -10.154_1, -1.389_786_7],
            ),
            (
                "solver_type=bh1, final_sigmas_type=sigma_min",
                unipc(|c| {
                    c.solver_type = "bh1".into();
                    c.final_sigmas_type = "sigma_min".into();
                }),
                [-2.346_871_1, -1.189_704_8, -7.188_963, -0.959_78],
            ),
            (
                "predict_x0=False, final_sigmas_type=sigma_min, prediction_type=v_prediction",
                unipc(|c| {
                    c.predict_x0 = false;
                    c.final_sigmas_type = "sigma_min".into();
                    c.prediction_type = "v_prediction".into();
                }),
                [-0.374_367_3, -0.185_171_37, -1.166_047, -0.147_578_75],
            ),
            (
                "predict_x0=False, final_sigmas_type=sigma_min, prediction_type=sample",
                unipc(|c| {
                    c.predict_x0 = false;
                    c.final_sigmas_type = "sigma_min".into();
                    c.prediction_type = "sample".into();
                }),
                [-0.349_369_47, -0.154_007_2, -1.166_851_2, -0.115_189_44],
            ),
            (
                "disable_corrector=[0, 2]",
                unipc(|c| c.disable_corrector = vec![0, 2]),
                [-2.483_915_6, -1.265_283_1, -7.583_214_8, -1.023_145],
            ),
            (
                "solver_type=midpoint (read as bh2), solver_order=3",
                unipc(|c| {
                    c.solver_type = "midpoint".into();
                    c.solver_order = 3;
                }),
                [-2.425_514, -1.233_627_3, -7.412_894_7, -0.996_803_5],
            ),
        ];
        for (label, config, expected) in cases {
            assert_final_sample(label, &config, 7, &LINSPACE_7, expected);
        }
    }

    #[test]
    fn karras_and_zero_snr_schedules_match_diffusers() {
        assert_final_sample(
            "use_karras_sigmas=True",
            &unipc(|c| c.use_karras_sigmas = true),
            7,
            &[999.0, 868.0, 687.0, 427.0, 146.0, 18.0, 0.0],
            [-2.068_560_4, -1.039_326_1, -6.375_328, -0.834_820_8],
        );
        assert_final_sample(
            "use_karras_sigmas=True, final_sigmas_type=sigma_min, sigma_min=0.1",
            &unipc(|c| {
                c.use_karras_sigmas = true;
                c.final_sigmas_type = "sigma_min".into();
                c.sigma_min = Some(0.1);
            }),
            7,
            &[999.0, 888.0, 743.0, 542.0, 289.0, 83.0, 10.0],
            [-2.321_963_3, -1.172_838_4, -7.130_405, -0.944_511_2],
        );
        assert_final_sample(
            "rescale_betas_zero_snr=True, prediction_type=v_prediction, timestep_spacing=trailing",
            &unipc(|c| {
                c.rescale_betas_zero_snr = true;
                c.prediction_type = "v_prediction".into();
                c.timestep_spacing = Some("trailing".into());
            }),
            7,
            &[999.0, 856.0, 713.0, 570.0, 428.0, 285.0, 142.0],
            [-0.348_325_25, -0.172_900_54, -1.082_379_8, -0.138_044_27],
        );
    }

    #[test]
    fn rejects_what_it_does_not_implement_or_diffusers_cannot_finish() {
        let cases: [(SchedulerConfig, &str); 10] = [
            (unipc(|c| c.thresholding = true), "thresholding"),
            (unipc(|c| c.use_flow_sigmas = true), "use_flow_sigmas"),
            (
                unipc(|c| c.use_exponential_sigmas = true),
                "use_exponential_sigmas",
            ),
            (
                unipc(|c| c.solver_p = Some(serde_json::json!({}))),
                "solver_p",
            ),
            (unipc(|c| c.shift_terminal = Some(0.1)), "shift_terminal"),
            (unipc(|c| c.solver_type = "bh3".into()), "solver_type"),
            (unipc(|c| c.solver_order = 4), "solver_order"),
            (unipc(|c| c.predict_x0 = false), "predict_x0"),
            (unipc(|c| c.solver_type = "bh1".into()), "bh1"),
            (unipc(|c| c.lower_order_final = false), "lower_order_final"),
        ];
        for (config, option) in cases {
            let err = UniPc::new(&config, 10).err().unwrap().to_string();
            assert!(
                err.contains(option) && err.contains(CLASS),
                "{option}: {err}"
            );
        }
        let flow = unipc(|c| c.prediction_type = "flow_prediction".into());
        let err = UniPc::new(&flow, 10).err().unwrap().to_string();
        assert!(err.contains("flow_prediction"), "{err}");
    }
}
