//! DPM-Solver++ (Lu et al. 2022), multistep, first or second order, in the
//! data-prediction form.

use candle_core::Tensor;

use super::config::SchedulerConfig;
use super::schedule::{
    config_error, karras_sigmas, log_sigmas, mul, multistep_timesteps, np_interp,
    sigma_from_alpha_cumprod, sigma_to_t, vp_alpha_sigma as alpha_sigma, vp_lambda as lambda,
    vp_noise, vp_predict_x0, Prediction, Spacing, TrainSchedule,
};
use super::{check_step, index_error, Scheduler};
use crate::error::Result;
use crate::rng::TorchRng;

pub(crate) const CLASS: &str = "DPMSolverMultistepScheduler";

/// How the second-order update combines the two past outputs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum SolverType {
    Midpoint,
    Heun,
}

/// diffusers' `DPMSolverMultistepScheduler` with `algorithm_type="dpmsolver++"`.
pub(crate) struct DpmSolverMultistep {
    timesteps: Vec<f64>,
    sigmas: Vec<f32>,
    prediction: Prediction,
    solver_order: usize,
    solver_type: SolverType,
    lower_order_final: bool,
    euler_at_final: bool,
    final_sigma_zero: bool,
    /// The last `solver_order` data predictions, oldest first.
    model_outputs: Vec<Tensor>,
    /// How many steps have run, capped at `solver_order`.
    lower_order_nums: usize,
}

impl DpmSolverMultistep {
    pub(crate) fn new(config: &SchedulerConfig, steps: usize) -> Result<Self> {
        let unsupported = |what: String| Err(config_error(config, CLASS, what));
        match config.algorithm_type.as_str() {
            "dpmsolver++" | "deis" => {}
            other => {
                return unsupported(format!(
                    "algorithm_type \"{other}\" is not supported (only dpmsolver++)"
                ))
            }
        }
        let solver_type = match config.solver_type.as_str() {
            "midpoint" | "logrho" | "bh1" | "bh2" => SolverType::Midpoint,
            "heun" => SolverType::Heun,
            other => {
                return unsupported(format!(
                    "solver_type \"{other}\" is not one of midpoint, heun"
                ))
            }
        };
        if !(1..=2).contains(&config.solver_order) {
            return unsupported(format!(
                "solver_order {} is not supported (1 or 2)",
                config.solver_order
            ));
        }
        for (set, name) in [
            (config.thresholding, "thresholding"),
            (config.use_exponential_sigmas, "use_exponential_sigmas"),
            (config.use_beta_sigmas, "use_beta_sigmas"),
            (config.use_lu_lambdas, "use_lu_lambdas"),
            (config.use_flow_sigmas, "use_flow_sigmas"),
            (config.use_dynamic_shifting, "use_dynamic_shifting"),
        ] {
            if set {
                return unsupported(format!("{name} is not supported"));
            }
        }
        if let Some(variance) = config.variance_type.as_deref() {
            return unsupported(format!("variance_type \"{variance}\" is not supported"));
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
        let prediction = Prediction::from_config(config, CLASS, Prediction::ALL)?;
        let spacing = Spacing::from_config(config, CLASS, Spacing::Linspace)?;

        let mut schedule = TrainSchedule::new(config, CLASS, true)?;
        schedule.clamp_terminal_alpha(config);
        let num_train = config.num_train_timesteps;
        let last_timestep = num_train - clipped_steps(&schedule, config.lambda_min_clipped);
        let mut timesteps = multistep_timesteps(
            spacing,
            last_timestep,
            num_train,
            steps,
            config.steps_offset,
        );

        let train_sigmas = schedule.sigmas();
        let sigmas: Vec<f64> = if config.use_karras_sigmas {
            let train_log_sigmas = log_sigmas(&train_sigmas);
            let sigma_min = config.sigma_min.unwrap_or(f64::from(train_sigmas[0]));
            let sigma_max = config
                .sigma_max
                .unwrap_or(f64::from(train_sigmas[num_train - 1]));
            let sigmas = karras_sigmas(sigma_min, sigma_max, steps);
            let round = config.beta_schedule.as_deref() != Some("squaredcos_cap_v2");
            timesteps = sigmas
                .iter()
                .map(|&s| {
                    let t = sigma_to_t(s, &train_log_sigmas);
                    if round {
                        t.round_ties_even()
                    } else {
                        t.trunc()
                    }
                })
                .collect();
            sigmas
        } else {
            timesteps
                .iter()
                .map(|&t| np_interp(t, &train_sigmas))
                .collect()
        };
        let final_sigma = if final_sigma_zero {
            0.0
        } else {
            sigma_from_alpha_cumprod(schedule.alphas_cumprod[0])
        };
        let sigmas = sigmas
            .into_iter()
            .map(|s| s as f32)
            .chain(std::iter::once(final_sigma))
            .collect();
        Ok(DpmSolverMultistep {
            timesteps,
            sigmas,
            prediction,
            solver_order: config.solver_order,
            solver_type,
            lower_order_final: config.lower_order_final,
            euler_at_final: config.euler_at_final,
            final_sigma_zero,
            model_outputs: Vec::new(),
            lower_order_nums: 0,
        })
    }

    /// The data prediction `x0` from the model output at `step_index`.
    fn convert_model_output(
        &self,
        model_output: &Tensor,
        sample: &Tensor,
        sigma: f32,
    ) -> candle_core::Result<Tensor> {
        let (alpha_t, sigma_t) = alpha_sigma(sigma);
        vp_predict_x0(self.prediction, model_output, sample, alpha_t, sigma_t)
    }

    fn first_order_update(
        &self,
        x0: &Tensor,
        sample: &Tensor,
        step_index: usize,
    ) -> candle_core::Result<Tensor> {
        let (alpha_t, sigma_t) = alpha_sigma(self.sigmas[step_index + 1]);
        let (alpha_s, sigma_s) = alpha_sigma(self.sigmas[step_index]);
        let h = lambda(alpha_t, sigma_t) - lambda(alpha_s, sigma_s);
        mul(sample, sigma_t / sigma_s)? - mul(x0, alpha_t * ((-h).exp() - 1.0))?
    }

    fn second_order_update(
        &self,
        sample: &Tensor,
        step_index: usize,
    ) -> candle_core::Result<Tensor> {
        let (alpha_t, sigma_t) = alpha_sigma(self.sigmas[step_index + 1]);
        let (alpha_s0, sigma_s0) = alpha_sigma(self.sigmas[step_index]);
        let (alpha_s1, sigma_s1) = alpha_sigma(self.sigmas[step_index - 1]);
        let lambda_t = lambda(alpha_t, sigma_t);
        let lambda_s0 = lambda(alpha_s0, sigma_s0);
        let lambda_s1 = lambda(alpha_s1, sigma_s1);
        let m0 = &self.model_outputs[self.model_outputs.len() - 1];
        let m1 = &self.model_outputs[self.model_outputs.len() - 2];
        let h = lambda_t - lambda_s0;
        let r0 = (lambda_s0 - lambda_s1) / h;
        let d1 = mul(&(m0 - m1)?, 1.0 / r0)?;
        let phi = alpha_t * ((-h).exp() - 1.0);
        let base = (mul(sample, sigma_t / sigma_s0)? - mul(m0, phi)?)?;
        match self.solver_type {
            SolverType::Midpoint => base - mul(&d1, 0.5 * phi)?,
            SolverType::Heun => base + mul(&d1, alpha_t * (((-h).exp() - 1.0) / h + 1.0))?,
        }
    }
}

/// How many of the noisiest training steps `lambda_min_clipped` cuts off.
fn clipped_steps(schedule: &TrainSchedule, lambda_min_clipped: f64) -> usize {
    schedule
        .alphas_cumprod
        .iter()
        .rev()
        .take_while(|&&a| f64::from(a.sqrt().ln() - (1.0 - a).sqrt().ln()) < lambda_min_clipped)
        .count()
}

impl Scheduler for DpmSolverMultistep {
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
        let is_last = step_index == len - 1;
        let lower_order_final = is_last
            && (self.euler_at_final
                || (self.lower_order_final && len < 15)
                || self.final_sigma_zero);
        let x0 = self.convert_model_output(model_output, sample, self.sigmas[step_index])?;
        if self.model_outputs.len() == self.solver_order {
            self.model_outputs.remove(0);
        }
        self.model_outputs.push(x0.clone());
        let prev = if self.solver_order == 1
            || self.lower_order_nums < 1
            || lower_order_final
            || step_index == 0
        {
            self.first_order_update(&x0, sample, step_index)?
        } else {
            self.second_order_update(sample, step_index)?
        };
        self.lower_order_nums = (self.lower_order_nums + 1).min(self.solver_order);
        Ok(prev)
    }

    fn predicted_original(&self) -> Option<&Tensor> {
        self.model_outputs.last()
    }

    fn add_noise(
        &self,
        original: &Tensor,
        noise: &Tensor,
        step_index: usize,
    ) -> candle_core::Result<Tensor> {
        let sigma = *self
            .sigmas
            .get(step_index)
            .ok_or_else(|| index_error(step_index, self.timesteps.len()))?;
        let (alpha_t, sigma_t) = alpha_sigma(sigma);
        vp_noise(original, noise, alpha_t, sigma_t)
    }
}
