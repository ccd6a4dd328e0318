//! `VaeConfig`: diffusers' `vae/config.json` (`AutoencoderKL`) with diffusers' defaults.

use std::path::Path;

use serde::Deserialize;

use crate::layers::Activation;
use crate::model::files::ConfigText;
use crate::unet::SampleSize;
use crate::Result;

/// diffusers' `AutoencoderKL` config; missing fields take diffusers' defaults.
#[derive(Debug, Clone, Deserialize)]
#[serde(default)]
pub struct VaeConfig {
    /// Image channels.
    pub in_channels: usize,
    /// Decoded image channels.
    pub out_channels: usize,
    /// `DownEncoderBlock2D`, one per resolution.
    pub down_block_types: Vec<String>,
    /// `UpDecoderBlock2D`, one per resolution.
    pub up_block_types: Vec<String>,
    /// Channels of each resolution level.
    pub block_out_channels: Vec<usize>,
    /// Resnets per encoder block (decoder blocks have one more).
    pub layers_per_block: usize,
    /// Activation of the resnets (the output activation is always SiLU, as in diffusers).
    pub act_fn: String,
    /// Channels of the latent space.
    pub latent_channels: usize,
    /// Groups of every group norm.
    pub norm_num_groups: usize,
    /// Image size the model was trained at (512 for SD 1.5).
    pub sample_size: Option<SampleSize>,
    /// Latents are `scaling_factor * (z - shift_factor)` in the diffusion space.
    pub scaling_factor: f64,
    /// Shift of the latent space (null for SD 1.x/2.x/XL).
    pub shift_factor: Option<f64>,
    /// Per-channel latent means (some later models).
    pub latents_mean: Option<Vec<f64>>,
    /// Per-channel latent standard deviations (some later models).
    pub latents_std: Option<Vec<f64>>,
    /// The VAE should run in f32 even when the rest of the pipeline is half precision.
    pub force_upcast: bool,
    /// Whether `quant_conv` follows the encoder.
    pub use_quant_conv: bool,
    /// Whether `post_quant_conv` precedes the decoder.
    pub use_post_quant_conv: bool,
    /// Whether the mid blocks have their self-attention.
    pub mid_block_add_attention: bool,
}

impl Default for VaeConfig {
    fn default() -> Self {
        Self {
            in_channels: 3,
            out_channels: 3,
            down_block_types: vec!["DownEncoderBlock2D".into()],
            up_block_types: vec!["UpDecoderBlock2D".into()],
            block_out_channels: vec![64],
            layers_per_block: 1,
            act_fn: "silu".into(),
            latent_channels: 4,
            norm_num_groups: 32,
            sample_size: None,
            scaling_factor: 0.18215,
            shift_factor: None,
            latents_mean: None,
            latents_std: None,
            force_upcast: true,
            use_quant_conv: true,
            use_post_quant_conv: true,
            mid_block_add_attention: true,
        }
    }
}

impl VaeConfig {
    /// Reads and validates `vae/config.json`; errors name the file and the field.
    pub fn from_file(path: &Path) -> Result<Self> {
        Self::from_config(&ConfigText::read(path)?)
    }

    /// Parses and validates a config's text; errors name its origin and the field.
    pub fn from_config(config: &ConfigText) -> Result<Self> {
        config.parse_checked(Self::validate)
    }

    /// How many times the encoder halves the resolution (3 for SD: images are 8× the latents).
    pub fn num_downsamplers(&self) -> usize {
        self.block_out_channels.len().saturating_sub(1)
    }

    /// Checks that every field selects something this implementation supports.
    pub fn validate(&self) -> std::result::Result<(), String> {
        self.activation()?;
        let n = self.block_out_channels.len();
        if n == 0 {
            return Err("block_out_channels is empty".into());
        }
        for (field, types, expected) in [
            (
                "down_block_types",
                &self.down_block_types,
                "DownEncoderBlock2D",
            ),
            ("up_block_types", &self.up_block_types, "UpDecoderBlock2D"),
        ] {
            if types.len() != n {
                return Err(format!(
                    "{field} has {} entries but block_out_channels has {n}",
                    types.len()
                ));
            }
            if let Some((i, t)) = types.iter().enumerate().find(|(_, t)| *t != expected) {
                return Err(format!(
                    "{field}[{i}]: unsupported block type {t:?} (expected {expected})"
                ));
            }
        }
        let groups = self.norm_num_groups;
        if let Some((i, c)) = self
            .block_out_channels
            .iter()
            .enumerate()
            .find(|(_, &c)| groups == 0 || c == 0 || c % groups != 0)
        {
            return Err(format!(
                "block_out_channels[{i}] = {c} is not a positive multiple of norm_num_groups = {groups}"
            ));
        }
        if self.latent_channels == 0 || self.in_channels == 0 || self.out_channels == 0 {
            return Err("in_channels, out_channels and latent_channels must be positive".into());
        }
        Ok(())
    }

    pub(crate) fn activation(&self) -> std::result::Result<Activation, String> {
        Activation::from_name(&self.act_fn).map_err(|e| format!("act_fn: {e}"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sd15_vae_config() {
        let cfg: VaeConfig = serde_json::from_str(
            r#"{"_class_name": "AutoencoderKL", "block_out_channels": [128, 256, 512, 512],
                "down_block_types": ["DownEncoderBlock2D", "DownEncoderBlock2D", "DownEncoderBlock2D", "DownEncoderBlock2D"],
                "up_block_types": ["UpDecoderBlock2D", "UpDecoderBlock2D", "UpDecoderBlock2D", "UpDecoderBlock2D"],
                "layers_per_block": 2, "sample_size": 512}"#,
        )
        .unwrap();
        cfg.validate().unwrap();
        assert_eq!(cfg.num_downsamplers(), 3);
        assert!(cfg.use_quant_conv && cfg.mid_block_add_attention);
        assert_eq!(cfg.shift_factor, None);
        assert_eq!(cfg.sample_size, Some(SampleSize::Square(512)));
    }

    #[test]
    fn rejects_unknown_blocks() {
        let cfg: VaeConfig =
            serde_json::from_str(r#"{"down_block_types": ["AttnDownEncoderBlock2D"]}"#).unwrap();
        assert!(cfg
            .validate()
            .unwrap_err()
            .contains("AttnDownEncoderBlock2D"));
    }
}
