//! `text_encoder/config.json`: the fields of transformers' `CLIPTextConfig` the model uses.

use std::path::Path;

use serde::Deserialize;

use crate::error::Result;
use crate::model::files::ConfigText;

/// The MLP activation of a CLIP text encoder (`hidden_act`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
pub enum ClipActivation {
    /// `x * sigmoid(1.702 x)`: OpenAI CLIP, SD 1.x.
    #[serde(rename = "quick_gelu")]
    QuickGelu,
    /// Exact (erf) GELU: OpenCLIP, SD 2.x and SDXL.
    #[serde(rename = "gelu")]
    Gelu,
}

/// The shape and token ids of a CLIP text encoder, with transformers' defaults
/// for every field the file leaves out.
#[derive(Debug, Clone, PartialEq, Deserialize)]
pub struct ClipTextConfig {
    /// Number of token embeddings.
    #[serde(default = "defaults::vocab_size")]
    pub vocab_size: usize,
    /// Width of the residual stream.
    #[serde(default = "defaults::hidden_size")]
    pub hidden_size: usize,
    /// Width of the MLP's hidden layer.
    #[serde(default = "defaults::intermediate_size")]
    pub intermediate_size: usize,
    /// Number of encoder layers.
    #[serde(default = "defaults::num_hidden_layers")]
    pub num_hidden_layers: usize,
    /// Number of attention heads; must divide `hidden_size`.
    #[serde(default = "defaults::num_attention_heads")]
    pub num_attention_heads: usize,
    /// Number of position embeddings, the longest sequence the model accepts.
    #[serde(default = "defaults::max_position_embeddings")]
    pub max_position_embeddings: usize,
    /// The MLP activation.
    #[serde(default = "defaults::hidden_act")]
    pub hidden_act: ClipActivation,
    /// Epsilon of every layer norm.
    #[serde(default = "defaults::layer_norm_eps")]
    pub layer_norm_eps: f64,
    /// Output width of `text_projection` (used only when the checkpoint has one).
    #[serde(default = "defaults::projection_dim")]
    pub projection_dim: usize,
    /// Padding token id.
    #[serde(default = "defaults::pad_token_id")]
    pub pad_token_id: Option<u32>,
    /// Start-of-text token id.
    #[serde(default = "defaults::bos_token_id")]
    pub bos_token_id: Option<u32>,
    /// End-of-text token id; selects the pooled position. Older configs say 2,
    /// which makes transformers pool at the largest id instead (see
    /// [`ClipTextModel::forward`](super::ClipTextModel::forward)).
    #[serde(default = "defaults::eos_token_id")]
    pub eos_token_id: u32,
}

mod defaults {
    use super::ClipActivation;

    pub fn vocab_size() -> usize {
        49408
    }
    pub fn hidden_size() -> usize {
        512
    }
    pub fn intermediate_size() -> usize {
        2048
    }
    pub fn num_hidden_layers() -> usize {
        12
    }
    pub fn num_attention_heads() -> usize {
        8
    }
    pub fn max_position_embeddings() -> usize {
        77
    }
    pub fn hidden_act() -> ClipActivation {
        ClipActivation::QuickGelu
    }
    pub fn layer_norm_eps() -> f64 {
        1e-5
    }
    pub fn projection_dim() -> usize {
        512
    }
    pub fn pad_token_id() -> Option<u32> {
        Some(1)
    }
    pub fn bos_token_id() -> Option<u32> {
        Some(49406)
    }
    pub fn eos_token_id() -> u32 {
        49407
    }
}

impl Default for ClipTextConfig {
    fn default() -> Self {
        Self {
            vocab_size: defaults::vocab_size(),
            hidden_size: defaults::hidden_size(),
            intermediate_size: defaults::intermediate_size(),
            num_hidden_layers: defaults::num_hidden_layers(),
            num_attention_heads: defaults::num_attention_heads(),
            max_position_embeddings: defaults::max_position_embeddings(),
            hidden_act: defaults::hidden_act(),
            layer_norm_eps: defaults::layer_norm_eps(),
            projection_dim: defaults::projection_dim(),
            pad_token_id: defaults::pad_token_id(),
            bos_token_id: defaults::bos_token_id(),
            eos_token_id: defaults::eos_token_id(),
        }
    }
}

impl ClipTextConfig {
    /// Reads and checks a `config.json`; errors name the file and the field.
    pub fn from_file(path: &Path) -> Result<Self> {
        Self::from_config(&ConfigText::read(path)?)
    }

    /// Parses and checks a config's text; errors name its origin and the field.
    pub fn from_config(config: &ConfigText) -> Result<Self> {
        config.parse_checked(Self::validate)
    }

    /// Checks that the sizes describe a buildable model.
    pub fn validate(&self) -> std::result::Result<(), String> {
        let positive = [
            ("vocab_size", self.vocab_size),
            ("hidden_size", self.hidden_size),
            ("intermediate_size", self.intermediate_size),
            ("num_attention_heads", self.num_attention_heads),
            ("max_position_embeddings", self.max_position_embeddings),
            ("projection_dim", self.projection_dim),
        ];
        if let Some((field, _)) = positive.iter().find(|(_, value)| *value == 0) {
            return Err(format!("{field} must be positive"));
        }
        if !self.hidden_size.is_multiple_of(self.num_attention_heads) {
            return Err(format!(
                "hidden_size {} is not a multiple of num_attention_heads {}",
                self.hidden_size, self.num_attention_heads
            ));
        }
        if !(self.layer_norm_eps.is_finite() && self.layer_norm_eps > 0.0) {
            return Err(format!(
                "layer_norm_eps must be positive, got {}",
                self.layer_norm_eps
            ));
        }
        Ok(())
    }

    /// Width of one attention head.
    pub fn head_dim(&self) -> usize {
        self.hidden_size / self.num_attention_heads
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sd15_config_parses() {
        let json = r#"{"architectures": ["CLIPTextModel"], "hidden_act": "quick_gelu",
            "hidden_size": 768, "intermediate_size": 3072, "num_attention_heads": 12,
            "num_hidden_layers": 12, "projection_dim": 768, "eos_token_id": 2,
            "torch_dtype": "float32", "vocab_size": 49408}"#;
        let config: ClipTextConfig = serde_json::from_str(json).unwrap();
        assert_eq!(config.hidden_act, ClipActivation::QuickGelu);
        assert_eq!(config.eos_token_id, 2);
        assert_eq!(config.max_position_embeddings, 77);
        assert_eq!(config.head_dim(), 64);
        assert!(config.validate().is_ok());
    }

    #[test]
    fn unknown_activation_is_rejected_by_name() {
        let err = serde_json::from_str::<ClipTextConfig>(r#"{"hidden_act": "relu"}"#).unwrap_err();
        let message = err.to_string();
        assert!(
            message.contains("relu") && message.contains("quick_gelu"),
            "{message}"
        );
    }

    #[test]
    fn heads_must_divide_width() {
        let config = ClipTextConfig {
            hidden_size: 30,
            num_attention_heads: 4,
            ..ClipTextConfig::default()
        };
        assert!(config
            .validate()
            .unwrap_err()
            .contains("num_attention_heads"));
    }
}
