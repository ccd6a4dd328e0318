//! `scheduler_config.json`, as diffusers writes it.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Deserializer, Serialize};

use crate::error::{Error, Result};
use crate::model::files::ConfigText;

/// The fields of a diffusers `scheduler_config.json` that our schedulers read.
///
/// One struct serves every scheduler class, as one file serves every class in
/// diffusers' `from_config`. Each field has diffusers' default; those whose
/// default depends on the class (the beta schedule, `timestep_spacing`,
/// `clip_sample`, `set_alpha_to_one`) are `None` when the file does not set
/// them, and the class being built supplies its own default, as diffusers does
/// for keys the file leaves out. Fields we do not know are ignored,
/// and so are fields the file lists in `_use_default_values` (diffusers does the
/// same). String-valued options stay strings here and are checked when a
/// scheduler is built, so an option only one class understands cannot make the
/// file unreadable for the others.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct SchedulerConfig {
    /// The diffusers class the file was written for (`_class_name`).
    #[serde(rename = "_class_name")]
    pub class_name: Option<String>,
    /// Number of diffusion steps the model was trained with.
    pub num_train_timesteps: usize,
    /// First beta of the `linear` and `scaled_linear` schedules; `None` means the class default.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub beta_start: Option<f64>,
    /// Last beta of the `linear` and `scaled_linear` schedules; `None` means the class default.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub beta_end: Option<f64>,
    /// `linear`, `scaled_linear` or `squaredcos_cap_v2`; `None` means the class default.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub beta_schedule: Option<String>,
    /// Explicit betas, which override `beta_schedule`.
    pub trained_betas: Option<Vec<f64>>,
    /// What the model predicts: `epsilon`, `v_prediction` or `sample`.
    pub prediction_type: String,
    /// `leading`, `trailing` or `linspace`; `None` means the class default.
    pub timestep_spacing: Option<String>,
    /// Added to every `leading` timestep.
    pub steps_offset: i64,
    /// Rescale the betas so the last timestep has zero signal-to-noise ratio.
    #[serde(deserialize_with = "null_as_false")]
    pub rescale_betas_zero_snr: bool,

    /// DDIM and LCM: clip the predicted clean sample to
    /// `[-clip_sample_range, clip_sample_range]`; `None` means the class default
    /// (on for DDIM, off for LCM), and `null` in the file means off.
    #[serde(
        deserialize_with = "null_as_some_false",
        skip_serializing_if = "Option::is_none"
    )]
    pub clip_sample: Option<bool>,
    /// DDIM and LCM: the clipping bound.
    pub clip_sample_range: f64,
    /// DDIM, PNDM and LCM: use 1 as the final cumulative alpha; `None` means the class default.
    pub set_alpha_to_one: Option<bool>,
    /// DDIM and DPM-Solver: dynamic thresholding (not supported; rejected when set).
    #[serde(deserialize_with = "null_as_false")]
    pub thresholding: bool,
    /// Dynamic thresholding's percentile.
    pub dynamic_thresholding_ratio: f64,
    /// Dynamic thresholding's upper bound.
    pub sample_max_value: f64,
    /// PNDM: skip the Runge-Kutta warm-up and run PLMS only.
    #[serde(deserialize_with = "null_as_false")]
    pub skip_prk_steps: bool,

    /// Euler: how sigmas are interpolated, `linear` or `log_linear`.
    pub interpolation_type: String,
    /// Euler, DPM-Solver and UniPC: space the sigmas as in Karras et al. (2022).
    #[serde(deserialize_with = "null_as_false")]
    pub use_karras_sigmas: bool,
    /// Exponential sigma spacing (not supported; rejected when set).
    #[serde(deserialize_with = "null_as_false")]
    pub use_exponential_sigmas: bool,
    /// Beta-distribution sigma spacing (not supported; rejected when set).
    #[serde(deserialize_with = "null_as_false")]
    pub use_beta_sigmas: bool,
    /// Lower end of the Karras sigmas; `None` uses the schedule's own.
    pub sigma_min: Option<f64>,
    /// Upper end of the Karras sigmas; `None` uses the schedule's own.
    pub sigma_max: Option<f64>,
    /// Euler: `discrete` or `continuous` timesteps for the UNet.
    pub timestep_type: String,
    /// Euler, DPM-Solver and UniPC: the sigma after the last step, `zero` or `sigma_min`.
    pub final_sigmas_type: String,

    /// DPM-Solver and UniPC: order of the multistep solver.
    pub solver_order: usize,
    /// DPM-Solver: `dpmsolver++` (supported), `dpmsolver`, `sde-dpmsolver`, ...
    pub algorithm_type: String,
    /// DPM-Solver: second-order update, `midpoint` or `heun`; UniPC: `bh1` or
    /// `bh2` (DPM-Solver's names mean `bh2` there).
    pub solver_type: String,
    /// DPM-Solver and UniPC: use lower-order steps at the end of the schedule.
    #[serde(deserialize_with = "null_as_false")]
    pub lower_order_final: bool,
    /// DPM-Solver: take a first-order step at the very end.
    #[serde(deserialize_with = "null_as_false")]
    pub euler_at_final: bool,
    /// DPM-Solver: uniform log-SNR spacing (not supported; rejected when set).
    #[serde(deserialize_with = "null_as_false")]
    pub use_lu_lambdas: bool,
    /// DPM-Solver and UniPC: flow-matching sigmas (not supported; rejected when set).
    #[serde(deserialize_with = "null_as_false")]
    pub use_flow_sigmas: bool,
    /// DPM-Solver: flow-matching shift.
    pub flow_shift: f64,
    /// DPM-Solver: drop timesteps whose log-SNR is below this.
    #[serde(deserialize_with = "lenient_f64")]
    pub lambda_min_clipped: f64,
    /// DPM-Solver: `learned` / `learned_range` for models that predict a variance.
    pub variance_type: Option<String>,
    /// DPM-Solver and UniPC: resolution-dependent shifting (not supported; rejected when set).
    #[serde(deserialize_with = "null_as_false")]
    pub use_dynamic_shifting: bool,

    /// UniPC: solve for the data prediction (`true`) or for the noise (`false`).
    #[serde(deserialize_with = "null_as_false")]
    pub predict_x0: bool,
    /// UniPC: step indices whose corrector is skipped (the corrector at step
    /// `i` refines the result of step `i - 1`, and is skipped when `i - 1` is listed).
    #[serde(deserialize_with = "null_as_empty")]
    pub disable_corrector: Vec<i64>,
    /// UniPC: another scheduler as the predictor (not supported; rejected when set).
    pub solver_p: Option<serde_json::Value>,
    /// UniPC: stretch flow-matching sigmas to end here (not supported; rejected when set).
    pub shift_terminal: Option<f64>,

    /// LCM: the step count of the distillation schedule the timesteps are drawn from.
    pub original_inference_steps: usize,
    /// LCM: multiplies the timestep in the consistency boundary scalings.
    pub timestep_scaling: f64,

    /// The file this configuration came from, for error messages.
    #[serde(skip)]
    pub source: Option<PathBuf>,
}

impl Default for SchedulerConfig {
    fn default() -> Self {
        SchedulerConfig {
            class_name: None,
            num_train_timesteps: 1000,
            beta_start: None,
            beta_end: None,
            beta_schedule: None,
            trained_betas: None,
            prediction_type: "epsilon".into(),
            timestep_spacing: None,
            steps_offset: 0,
            rescale_betas_zero_snr: false,
            clip_sample: None,
            clip_sample_range: 1.0,
            set_alpha_to_one: None,
            thresholding: false,
            dynamic_thresholding_ratio: 0.995,
            sample_max_value: 1.0,
            skip_prk_steps: false,
            interpolation_type: "linear".into(),
            use_karras_sigmas: false,
            use_exponential_sigmas: false,
            use_beta_sigmas: false,
            sigma_min: None,
            sigma_max: None,
            timestep_type: "discrete".into(),
            final_sigmas_type: "zero".into(),
            solver_order: 2,
            algorithm_type: "dpmsolver++".into(),
            solver_type: "midpoint".into(),
            lower_order_final: true,
            euler_at_final: false,
            use_lu_lambdas: false,
            use_flow_sigmas: false,
            flow_shift: 1.0,
            lambda_min_clipped: f64::NEG_INFINITY,
            variance_type: None,
            use_dynamic_shifting: false,
            predict_x0: true,
            disable_corrector: Vec::new(),
            solver_p: None,
            shift_terminal: None,
            original_inference_steps: 50,
            timestep_scaling: 10.0,
            source: None,
        }
    }
}

impl SchedulerConfig {
    /// Reads a `scheduler_config.json`.
    pub fn from_file(path: &Path) -> Result<Self> {
        Self::from_config(&ConfigText::read(path)?)
    }

    /// Parses a config's text, naming its origin in errors and in later ones
    /// ([`SchedulerConfig::source_path`]).
    pub fn from_config(config: &ConfigText) -> Result<Self> {
        let mut parsed = Self::from_json_str(&config.text)
            .map_err(|e| Error::invalid_file(&config.origin, e.to_string()))?;
        parsed.source = Some(config.origin.clone());
        Ok(parsed)
    }

    /// Parses the text of a `scheduler_config.json`, accepting the `NaN` and
    /// `Infinity` literals Python's `json` module writes.
    pub fn from_json_str(text: &str) -> serde_json::Result<Self> {
        Self::from_value(parse_python_json(text)?)
    }

    /// Builds the configuration from parsed JSON, dropping the keys listed in
    /// `_use_default_values` as diffusers does.
    pub fn from_value(value: serde_json::Value) -> serde_json::Result<Self> {
        let mut value = value;
        if let Some(map) = value.as_object_mut() {
            let defaulted: Vec<String> = match map.remove("_use_default_values") {
                Some(serde_json::Value::Array(keys)) => keys
                    .iter()
                    .filter_map(|k| k.as_str().map(str::to_owned))
                    .collect(),
                _ => Vec::new(),
            };
            for key in defaulted {
                map.remove(&key);
            }
        }
        serde_json::from_value(value)
    }

    /// The file name to blame in error messages.
    pub(crate) fn source_path(&self) -> PathBuf {
        self.source
            .clone()
            .unwrap_or_else(|| PathBuf::from("scheduler_config.json"))
    }
}

/// Parses JSON that may contain Python's non-standard `NaN`, `Infinity` and
/// `-Infinity` literals; they become the strings `"NaN"`, `"Infinity"` and
/// `"-Infinity"`, which the numeric fields of [`SchedulerConfig`] accept.
pub fn parse_python_json(text: &str) -> serde_json::Result<serde_json::Value> {
    let mut out = String::with_capacity(text.len() + 16);
    let mut rest = text;
    let mut in_string = false;
    while let Some(c) = rest.chars().next() {
        if in_string {
            if c == '\\' {
                let escaped: String = rest.chars().take(2).collect();
                out.push_str(&escaped);
                rest = &rest[escaped.len()..];
                continue;
            }
            if c == '"' {
                in_string = false;
            }
        } else {
            if c == '"' {
                in_string = true;
            }
            let literal = ["-Infinity", "Infinity", "NaN"]
                .into_iter()
                .find(|lit| rest.starts_with(lit));
            if let Some(lit) = literal {
                out.push('"');
                out.push_str(lit);
                out.push('"');
                rest = &rest[lit.len()..];
                continue;
            }
        }
        out.push(c);
        rest = &rest[c.len_utf8()..];
    }
    serde_json::from_str(&out)
}

/// A boolean that Python may have written as `null` (falsy there).
fn null_as_false<'de, D: Deserializer<'de>>(d: D) -> Result<bool, D::Error> {
    Ok(Option::<bool>::deserialize(d)?.unwrap_or(false))
}

/// A boolean whose absence means "the class default" but whose `null` means
/// false, as Python reads `None`.
fn null_as_some_false<'de, D: Deserializer<'de>>(d: D) -> Result<Option<bool>, D::Error> {
    Ok(Some(Option::<bool>::deserialize(d)?.unwrap_or(false)))
}

/// A list that Python may have written as `null`.
fn null_as_empty<'de, D: Deserializer<'de>, T: Deserialize<'de>>(d: D) -> Result<Vec<T>, D::Error> {
    Ok(Option::<Vec<T>>::deserialize(d)?.unwrap_or_default())
}

/// A float that may be one of Python's non-finite literals (see
/// [`parse_python_json`]) or `null` (read as negative infinity, the only field
/// using this being a lower bound).
fn lenient_f64<'de, D: Deserializer<'de>>(d: D) -> Result<f64, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum Number {
        Finite(f64),
        Literal(String),
    }
    match Option::<Number>::deserialize(d)? {
        None => Ok(f64::NEG_INFINITY),
        Some(Number::Finite(x)) => Ok(x),
        Some(Number::Literal(s)) => match s.as_str() {
            "-Infinity" => Ok(f64::NEG_INFINITY),
            "Infinity" => Ok(f64::INFINITY),
            "NaN" => Ok(f64::NAN),
            other => Err(serde::de::Error::custom(format!(
                "expected a number, got \"{other}\""
            ))),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_python_json_with_infinities_and_nulls() {
        let text = r#"{"_class_name": "DPMSolverMultistepScheduler", "lambda_min_clipped": -Infinity,
            "use_karras_sigmas": null, "trained_betas": null, "note": "Infinity \"NaN\"", "extra": [1, 2]}"#;
        let config = SchedulerConfig::from_json_str(text).unwrap();
        assert_eq!(
            config.class_name.as_deref(),
            Some("DPMSolverMultistepScheduler")
        );
        assert_eq!(config.lambda_min_clipped, f64::NEG_INFINITY);
        assert!(!config.use_karras_sigmas);
        assert_eq!(config.num_train_timesteps, 1000);
    }

    #[test]
    fn keys_listed_as_defaulted_are_dropped() {
        let text = r#"{"timestep_spacing": "linspace", "steps_offset": 1,
            "_use_default_values": ["timestep_spacing"]}"#;
        let config = SchedulerConfig::from_json_str(text).unwrap();
        assert_eq!(config.timestep_spacing, None);
        assert_eq!(config.steps_offset, 1);
    }
}
