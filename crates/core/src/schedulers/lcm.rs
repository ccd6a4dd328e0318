//! Latent Consistency Model sampling (Luo et al. 2023): each step maps the
//! sample straight to a clean estimate through the consistency boundary
//! scalings, then noises it again to the next timestep.

use candle_core::Tensor;

use super::config::SchedulerConfig;
use super::schedule::{
    clip, config_error, mul, noise_to_alpha_cumprod, vp_predict_x0, BetaDefaults, Prediction,
    TrainSchedule,
};
use super::{timestep_at, Scheduler};
use crate::error::Result;
use crate::rng::TorchRng;

pub(crate) const CLASS: &str = "LCMScheduler";

/// LCM's own defaults for the beta keys a config may leave out (SD's schedule).
const BETA_DEFAULTS: BetaDefaults = BetaDefaults {
    start: 0.00085,
    end: 0.012,
    schedule: "scaled_linear",
};

/// `sigma_data` of the consistency boundary condition.
const SIGMA_DATA: f32 = 0.5;

/// diffusers' `LCMScheduler`.
///
/// `timestep_spacing` and `steps_offset` have no effect, as in diffusers: the
/// timesteps always come from the `original_inference_steps` schedule. Nor
/// does `set_alpha_to_one`, since no timestep of that schedule is negative.
pub(crate) struct Lcm {
    schedule: TrainSchedule,
    timesteps: Vec<f64>,
    prediction: Prediction,
    clip_range: Option<f32>,
    timestep_scaling: f32,
    /// The denoised estimate of the last step.
    denoised: Option<Tensor>,
}

/// The most steps LCM runs on `config`: its timesteps are picked from the
/// `original_inference_steps` schedule, which has no more than that many
/// ([`super::StepLimits`] holds requests to it).
pub(crate) fn max_steps(config: &SchedulerConfig) -> usize {
    config.original_inference_steps
}

/// The `steps` timesteps LCM picks from the `original_steps` schedule
/// `k - 1, 2k - 1, ..., original_steps * k - 1` (`k = num_train / original_steps`),
/// evenly spaced by index from its noisy end.
fn lcm_timesteps(num_train: usize, original_steps: usize, steps: usize) -> Vec<f64> {
    let k = num_train / original_steps;
    let origin: Vec<usize> = (1..=original_steps).rev().map(|i| i * k - 1).collect();
    let stride = origin.len() as f64 / steps as f64;
    (0..steps)
        .map(|i| origin[(i as f64 * stride).floor() as usize] as f64)
        .collect()
}

impl Lcm {
    pub(crate) fn new(config: &SchedulerConfig, steps: usize) -> Result<Self> {
        let fail = |what: String| Err(config_error(config, CLASS, what));
        if config.thresholding {
            return fail("thresholding is not supported".into());
        }
        let prediction = Prediction::from_config(config, CLASS, Prediction::ALL)?;
        let num_train = config.num_train_timesteps;
        let original_steps = config.original_inference_steps;
        if original_steps == 0 || original_steps > num_train {
            return fail(format!(
                "original_inference_steps {original_steps} is not between 1 and num_train_timesteps {num_train}"
            ));
        }
        let schedule = TrainSchedule::with_defaults(config, CLASS, true, BETA_DEFAULTS)?;
        let timesteps = lcm_timesteps(num_train, original_steps, steps);
        if prediction == Prediction::Epsilon {
            if let Some(&t) = timesteps
                .iter()
                .find(|&&t| schedule.alphas_cumprod[t as usize] == 0.0)
            {
                return fail(format!(
                    "prediction_type \"epsilon\" cannot be inverted at timestep {t}, where \
                     rescale_betas_zero_snr leaves no signal"
                ));
            }
        }
        Ok(Lcm {
            schedule,
            timesteps,
            prediction,
            clip_range: config
                .clip_sample
                .unwrap_or(false)
                .then_some(config.clip_sample_range as f32),
            timestep_scaling: config.timestep_scaling as f32,
            denoised: None,
        })
    }

    fn timestep(&self, step_index: usize) -> candle_core::Result<i64> {
        timestep_at(&self.timesteps, step_index)
    }

    /// The consistency boundary scalings `(c_skip, c_out)` at timestep `t`.
    fn boundary_scalings(&self, t: i64) -> (f32, f32) {
        let scaled = t as f32 * self.timestep_scaling;
        let denominator = scaled * scaled + SIGMA_DATA * SIGMA_DATA;
        (
            SIGMA_DATA * SIGMA_DATA / denominator,
            scaled / denominator.sqrt(),
        )
    }
}

impl Scheduler for Lcm {
    fn timesteps(&self) -> &[f64] {
        &self.timesteps
    }

    /// Returns the denoised estimate re-noised to the next timestep with one
    /// draw from `rng`, or at the last step the denoised estimate itself
    /// (drawing nothing).
    fn step(
        &mut self,
        model_output: &Tensor,
        step_index: usize,
        sample: &Tensor,
        rng: &mut TorchRng,
    ) -> candle_core::Result<Tensor> {
        let t = self.timestep(step_index)?;
        let alpha_t = self.schedule.alpha_cumprod(t)?;
        let pred_x0 = vp_predict_x0(
            self.prediction,
            model_output,
            sample,
            alpha_t.sqrt(),
            (1.0 - alpha_t).sqrt(),
        )?;
        let pred_x0 = clip(pred_x0, self.clip_range)?;
        let (c_skip, c_out) = self.boundary_scalings(t);
        let denoised = (mul(&pred_x0, c_out)? + mul(sample, c_skip)?)?;
        self.denoised = Some(denoised.clone());
        if step_index + 1 == self.timesteps.len() {
            return Ok(denoised);
        }
        let alpha_prev = self
            .schedule
            .alpha_cumprod(self.timestep(step_index + 1)?)?;
        let noise = rng
            .randn_tensor(model_output.dims(), model_output.device())?
            .to_dtype(denoised.dtype())?;
        noise_to_alpha_cumprod(&denoised, &noise, alpha_prev)
    }

    fn predicted_original(&self) -> Option<&Tensor> {
        self.denoised.as_ref()
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
    use super::super::testing::{assert_final_sample, sd15};
    use super::*;
    use crate::error::{Error, Param};

    fn lcm(edit: impl FnOnce(&mut SchedulerConfig)) -> SchedulerConfig {
        let mut config = sd15();
        config.class_name = Some(CLASS.into());
        edit(&mut config);
        config
    }

    #[test]
    fn picks_timesteps_from_the_original_schedule() {
        // LCMScheduler(); s.set_timesteps(n); s.timesteps
        assert_eq!(lcm_timesteps(1000, 50, 1), vec![999.0]);
        assert_eq!(lcm_timesteps(1000, 50, 4), vec![999.0, 759.0, 499.0, 259.0]);
        assert_eq!(
            lcm_timesteps(1000, 50, 3),
            vec![999.0, 679.0, 339.0],
            "floor of linspace(0, 50, 3, endpoint=False)"
        );
        assert_eq!(lcm_timesteps(1000, 50, 50).last(), Some(&19.0));
        assert_eq!(
            lcm_timesteps(1000, 30, 4),
            vec![989.0, 758.0, 494.0, 263.0],
            "k = 1000 // 30 = 33"
        );
    }

    #[test]
    fn options_beyond_the_fixtures_match_diffusers() {
        // LCMScheduler.from_config(sd15, **options), in `testing::final_sample`'s loop.
        assert_final_sample(
            "prediction_type=sample, clip_sample=True",
            &lcm(|c| {
                c.prediction_type = "sample".into();
                c.clip_sample = Some(true);
            }),
            3,
            &[999.0, 679.0, 339.0],
            [0.141_491_35, 0.409_936_73, 0.328_629_73, 0.127_615_93],
        );
        assert_final_sample(
            "original_inference_steps=25",
            &lcm(|c| c.original_inference_steps = 25),
            7,
            &[999.0, 879.0, 719.0, 599.0, 439.0, 319.0, 159.0],
            [-0.942_631_07, -0.880_796_2, 0.118_511_17, 0.171_336_62],
        );
        assert_final_sample(
            "rescale_betas_zero_snr=True, prediction_type=v_prediction, timestep_scaling=5.0",
            &lcm(|c| {
                c.rescale_betas_zero_snr = true;
                c.prediction_type = "v_prediction".into();
                c.timestep_scaling = 5.0;
            }),
            5,
            &[999.0, 799.0, 599.0, 399.0, 199.0],
            [0.120_016_89, -0.474_686_27, 0.019_960_273, -0.080_296_956],
        );
    }

    #[test]
    fn missing_keys_take_lcm_defaults() {
        // LCMScheduler.from_config({"_class_name": "LCMScheduler"}): scaled_linear
        // 0.00085..0.012 and no clipping, unlike DDIM's defaults.
        let config = SchedulerConfig::from_json_str(r#"{"_class_name": "LCMScheduler"}"#).unwrap();
        let bare = Lcm::new(&config, 4).unwrap();
        let sd = Lcm::new(&lcm(|_| {}), 4).unwrap();
        assert_eq!(bare.schedule.alphas_cumprod, sd.schedule.alphas_cumprod);
        assert_eq!(bare.clip_range, None);
        let clipped = SchedulerConfig::from_json_str(r#"{"clip_sample": null}"#).unwrap();
        assert_eq!(clipped.clip_sample, Some(false));
    }

    #[test]
    fn rejects_bad_step_counts_and_options() {
        let err = super::super::build_scheduler(None, &lcm(|_| {}), 51)
            .err()
            .unwrap();
        assert!(
            matches!(&err, Error::Param(e) if e.param == Param::Steps && e.message.contains("at most 50")),
            "{err}"
        );
        let cases: [(SchedulerConfig, usize, &str); 4] = [
            (
                lcm(|c| c.original_inference_steps = 1001),
                4,
                "original_inference_steps 1001",
            ),
            (lcm(|c| c.thresholding = true), 4, "thresholding"),
            (
                lcm(|c| c.prediction_type = "flow_prediction".into()),
                4,
                "flow_prediction",
            ),
            (
                lcm(|c| c.rescale_betas_zero_snr = true),
                4,
                "rescale_betas_zero_snr",
            ),
        ];
        for (config, steps, needle) in cases {
            let err = Lcm::new(&config, steps).err().unwrap().to_string();
            assert!(
                err.contains(needle) && err.contains(CLASS),
                "{needle}: {err}"
            );
        }
    }
}
