//! `UNetConfig`: diffusers' `unet/config.json` with diffusers' defaults, and its
//! resolution into per-block settings.

use std::path::Path;

use serde::Deserialize;

use crate::layers::{Activation, TimeEmbeddingNorm};
use crate::model::files::ConfigText;
use crate::Result;

/// A config value given once for every block or as a list with one entry per block.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(untagged)]
pub enum PerBlock<T> {
    /// One value per block.
    Each(Vec<T>),
    /// The same value for all blocks.
    Same(T),
}

impl<T: Clone> PerBlock<T> {
    /// One value per block for `n` blocks; a list of the wrong length is an error naming `field`.
    pub fn expand(&self, n: usize, field: &str) -> std::result::Result<Vec<T>, String> {
        match self {
            Self::Same(v) => Ok(vec![v.clone(); n]),
            Self::Each(vs) if vs.len() == n => Ok(vs.clone()),
            Self::Each(vs) => Err(format!("{field} has {} entries, expected {n}", vs.len())),
        }
    }
}

/// A `sample_size`: one side of a square, or `[height, width]`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(untagged)]
pub enum SampleSize {
    /// A square of this side.
    Square(usize),
    /// `[height, width]`.
    HeightWidth(usize, usize),
}

impl SampleSize {
    /// `(height, width)`.
    pub fn height_width(self) -> (usize, usize) {
        match self {
            Self::Square(s) => (s, s),
            Self::HeightWidth(h, w) => (h, w),
        }
    }
}

/// diffusers' `UNet2DConditionModel` config; missing fields take diffusers' defaults.
///
/// Fields that only select features we do not implement are parsed so that
/// [`UNetConfig::validate`] can reject them with a message naming the field.
#[derive(Debug, Clone, Deserialize)]
#[serde(default)]
pub struct UNetConfig {
    /// Latent size the model was trained at (64 for SD 1.5, i.e. 512 px).
    pub sample_size: Option<SampleSize>,
    /// Channels of the input sample.
    pub in_channels: usize,
    /// Channels of the predicted output.
    pub out_channels: usize,
    /// Maps the input from [0, 1] to [-1, 1] first.
    pub center_input_sample: bool,
    /// Order of the sinusoidal timestep embedding: `cos, sin` when true.
    pub flip_sin_to_cos: bool,
    /// `downscale_freq_shift` of the timestep embedding.
    pub freq_shift: f64,
    /// `CrossAttnDownBlock2D` or `DownBlock2D`, one per resolution.
    pub down_block_types: Vec<String>,
    /// `UNetMidBlock2DCrossAttn`, or null for none.
    pub mid_block_type: Option<String>,
    /// `CrossAttnUpBlock2D` or `UpBlock2D`, one per resolution.
    pub up_block_types: Vec<String>,
    /// Transformers attend only to the encoder states (no self-attention).
    pub only_cross_attention: PerBlock<bool>,
    /// Channels of each resolution level.
    pub block_out_channels: Vec<usize>,
    /// Resnets per down block (up blocks have one more).
    pub layers_per_block: PerBlock<usize>,
    /// Padding of the down-sampling convolutions.
    pub downsample_padding: usize,
    /// `output_scale_factor` of the mid block's resnets.
    pub mid_block_scale_factor: f64,
    /// Dropout (inference ignores it).
    pub dropout: f64,
    /// Activation of resnets and the time embedding.
    pub act_fn: String,
    /// Groups of every group norm.
    pub norm_num_groups: Option<usize>,
    /// Epsilon of the resnets' and output group norms.
    pub norm_eps: f64,
    /// Width of the encoder hidden states.
    pub cross_attention_dim: PerBlock<usize>,
    /// Transformer blocks per attention layer (per block, or per block and layer).
    pub transformer_layers_per_block: PerBlock<PerBlock<usize>>,
    /// Transformer blocks per attention layer of the up blocks (asymmetric UNets).
    pub reverse_transformer_layers_per_block: Option<Vec<PerBlock<usize>>>,
    /// Projection of the encoder states (unsupported unless null).
    pub encoder_hid_dim: Option<usize>,
    /// Kind of `encoder_hid_dim` projection (unsupported unless null).
    pub encoder_hid_dim_type: Option<String>,
    /// Historically misnamed: the HEAD COUNT when `num_attention_heads` is null.
    pub attention_head_dim: PerBlock<usize>,
    /// Heads per block; defaults to `attention_head_dim`.
    pub num_attention_heads: Option<PerBlock<usize>>,
    /// Dual cross-attention (unsupported).
    pub dual_cross_attention: bool,
    /// Linear rather than 1×1-convolution `proj_in`/`proj_out` in transformers.
    pub use_linear_projection: bool,
    /// Class conditioning (unsupported unless null).
    pub class_embed_type: Option<String>,
    /// Added conditioning: null, or `text_time` (SDXL).
    pub addition_embed_type: Option<String>,
    /// Width of each sinusoidal embedding of the SDXL `time_ids`.
    pub addition_time_embed_dim: Option<usize>,
    /// Number of class embeddings (unsupported unless null).
    pub num_class_embeds: Option<usize>,
    /// Compute attention scores in f32 in half precision (null, as in SDXL's
    /// config, means false).
    #[serde(deserialize_with = "null_as_false")]
    pub upcast_attention: bool,
    /// `default` or `scale_shift`.
    pub resnet_time_scale_shift: String,
    /// Accepted for completeness; the supported block types ignore it, as in diffusers.
    pub resnet_skip_time_act: bool,
    /// Accepted for completeness; the supported block types ignore it, as in diffusers.
    pub resnet_out_scale_factor: f64,
    /// `positional` (sinusoidal); `fourier` is unsupported.
    pub time_embedding_type: String,
    /// Width of the time embedding; defaults to 4 × `block_out_channels[0]`.
    pub time_embedding_dim: Option<usize>,
    /// Activation applied to the summed time embedding.
    pub time_embedding_act_fn: Option<String>,
    /// Activation after the time embedding MLP.
    pub timestep_post_act: Option<String>,
    /// Width of an extra timestep condition (LCM); it is never passed, so unused.
    pub time_cond_proj_dim: Option<usize>,
    /// Kernel size of `conv_in`.
    pub conv_in_kernel: usize,
    /// Kernel size of `conv_out`.
    pub conv_out_kernel: usize,
    /// Input width of `add_embedding` (SDXL: text_embeds + 6 × `addition_time_embed_dim`).
    pub projection_class_embeddings_input_dim: Option<usize>,
    /// `default`; GLIGEN's gated attention is unsupported.
    pub attention_type: String,
    /// Concatenate class embeddings (no effect without class conditioning).
    pub class_embeddings_concat: bool,
    /// Ignored by `UNetMidBlock2DCrossAttn`, as in diffusers.
    pub mid_block_only_cross_attention: Option<bool>,
    /// Norm of the cross-attention context (unsupported unless null).
    pub cross_attention_norm: Option<String>,
    /// Heads of the `text` added embedding (unused by the supported types).
    pub addition_embed_type_num_heads: usize,
}

/// A boolean that may be written as null, read as false (diffusers' `None`).
fn null_as_false<'de, D: serde::Deserializer<'de>>(d: D) -> std::result::Result<bool, D::Error> {
    Ok(Option::<bool>::deserialize(d)?.unwrap_or(false))
}

impl Default for UNetConfig {
    fn default() -> Self {
        let strings = |xs: &[&str]| xs.iter().map(|s| s.to_string()).collect();
        Self {
            sample_size: None,
            in_channels: 4,
            out_channels: 4,
            center_input_sample: false,
            flip_sin_to_cos: true,
            freq_shift: 0.0,
            down_block_types: strings(&[
                "CrossAttnDownBlock2D",
                "CrossAttnDownBlock2D",
                "CrossAttnDownBlock2D",
                "DownBlock2D",
            ]),
            mid_block_type: Some("UNetMidBlock2DCrossAttn".into()),
            up_block_types: strings(&[
                "UpBlock2D",
                "CrossAttnUpBlock2D",
                "CrossAttnUpBlock2D",
                "CrossAttnUpBlock2D",
            ]),
            only_cross_attention: PerBlock::Same(false),
            block_out_channels: vec![320, 640, 1280, 1280],
            layers_per_block: PerBlock::Same(2),
            downsample_padding: 1,
            mid_block_scale_factor: 1.0,
            dropout: 0.0,
            act_fn: "silu".into(),
            norm_num_groups: Some(32),
            norm_eps: 1e-5,
            cross_attention_dim: PerBlock::Same(1280),
            transformer_layers_per_block: PerBlock::Same(PerBlock::Same(1)),
            reverse_transformer_layers_per_block: None,
            encoder_hid_dim: None,
            encoder_hid_dim_type: None,
            attention_head_dim: PerBlock::Same(8),
            num_attention_heads: None,
            dual_cross_attention: false,
            use_linear_projection: false,
            class_embed_type: None,
            addition_embed_type: None,
            addition_time_embed_dim: None,
            num_class_embeds: None,
            upcast_attention: false,
            resnet_time_scale_shift: "default".into(),
            resnet_skip_time_act: false,
            resnet_out_scale_factor: 1.0,
            time_embedding_type: "positional".into(),
            time_embedding_dim: None,
            time_embedding_act_fn: None,
            timestep_post_act: None,
            time_cond_proj_dim: None,
            conv_in_kernel: 3,
            conv_out_kernel: 3,
            projection_class_embeddings_input_dim: None,
            attention_type: "default".into(),
            class_embeddings_concat: false,
            mid_block_only_cross_attention: None,
            cross_attention_norm: None,
            addition_embed_type_num_heads: 64,
        }
    }
}

/// Settings of one down or up block after resolving per-block lists.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct BlockPlan {
    /// Has transformers (`CrossAttn…`).
    pub cross_attention: bool,
    /// Input channels of the first resnet (down) or the skip width of the last (up).
    pub in_channels: usize,
    /// Output channels.
    pub out_channels: usize,
    /// Channels coming from the block below (up blocks only).
    pub prev_output_channels: usize,
    /// Transformer blocks of each attention layer; its length is the resnet count.
    pub transformer_layers: Vec<usize>,
    /// Resnet count.
    pub num_layers: usize,
    /// Attention heads.
    pub heads: usize,
    /// Encoder hidden state width.
    pub cross_attention_dim: usize,
    /// Transformers attend only to the encoder states.
    pub only_cross_attention: bool,
    /// Ends with a down- or up-sampler.
    pub resample: bool,
}

/// The mid block's settings.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct MidPlan {
    /// Channels.
    pub channels: usize,
    /// Transformer blocks of its single attention layer.
    pub transformer_layers: usize,
    /// Attention heads.
    pub heads: usize,
    /// Encoder hidden state width.
    pub cross_attention_dim: usize,
}

/// SDXL's `text_time` added conditioning.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) struct TextTimePlan {
    /// Width of each sinusoidal `time_ids` embedding.
    pub time_embed_dim: usize,
    /// Input width of `add_embedding`.
    pub input_dim: usize,
}

/// A validated config: every list expanded, every name parsed.
#[derive(Debug, Clone)]
pub(crate) struct UNetPlan {
    pub down: Vec<BlockPlan>,
    pub mid: Option<MidPlan>,
    pub up: Vec<BlockPlan>,
    pub act: Activation,
    pub time_norm: TimeEmbeddingNorm,
    pub groups: usize,
    pub time_embed_dim: usize,
    /// The one width the encoder hidden states must have.
    pub cross_attention_dim: usize,
    pub time_embedding_act: Option<Activation>,
    pub timestep_post_act: Option<Activation>,
    pub text_time: Option<TextTimePlan>,
}

impl UNetConfig {
    /// Reads and validates `unet/config.json`; errors name the file and the field.
    pub fn from_file(path: &Path) -> Result<Self> {
        Self::from_config(&ConfigText::read(path)?)
    }

    /// Parses and validates a config's text; errors name its origin and the field.
    pub fn from_config(config: &ConfigText) -> Result<Self> {
        config.parse_checked(Self::validate)
    }

    /// Checks that every field selects something this implementation supports.
    pub fn validate(&self) -> std::result::Result<(), String> {
        self.plan().map(|_| ())
    }

    /// Whether `forward` needs SDXL's added conditioning (`addition_embed_type: text_time`).
    pub fn needs_added_cond(&self) -> bool {
        self.addition_embed_type.as_deref() == Some("text_time")
    }

    /// How many times the blocks halve the resolution.
    pub fn num_downsamplers(&self) -> usize {
        self.block_out_channels.len().saturating_sub(1)
    }

    pub(crate) fn plan(&self) -> std::result::Result<UNetPlan, String> {
        self.reject_unsupported()?;
        let n = self.down_block_types.len();
        if n == 0 {
            return Err("down_block_types is empty".into());
        }
        if self.up_block_types.len() != n {
            return Err(format!(
                "up_block_types has {} entries but down_block_types has {n}",
                self.up_block_types.len()
            ));
        }
        if self.block_out_channels.len() != n {
            return Err(format!(
                "block_out_channels has {} entries but down_block_types has {n}",
                self.block_out_channels.len()
            ));
        }
        let groups = self
            .norm_num_groups
            .ok_or("norm_num_groups: null is unsupported")?;
        if groups == 0 {
            return Err("norm_num_groups must be positive".into());
        }
        for (i, &c) in self.block_out_channels.iter().enumerate() {
            if c == 0 || c % groups != 0 {
                return Err(format!(
                    "block_out_channels[{i}] = {c} is not a positive multiple of norm_num_groups = {groups}"
                ));
            }
        }
        let act = Activation::from_name(&self.act_fn).map_err(|e| format!("act_fn: {e}"))?;
        let time_norm = TimeEmbeddingNorm::from_name(&self.resnet_time_scale_shift)?;
        let optional_act = |name: &Option<String>, field: &str| {
            name.as_deref()
                .map(Activation::from_name)
                .transpose()
                .map_err(|e| format!("{field}: {e}"))
        };
        let time_embedding_act =
            optional_act(&self.time_embedding_act_fn, "time_embedding_act_fn")?;
        let timestep_post_act = optional_act(&self.timestep_post_act, "timestep_post_act")?;

        let layers = self.layers_per_block.expand(n, "layers_per_block")?;
        let heads = match &self.num_attention_heads {
            Some(h) => h.expand(n, "num_attention_heads")?,
            None => self.attention_head_dim.expand(n, "attention_head_dim")?,
        };
        let cross_dims = self.cross_attention_dim.expand(n, "cross_attention_dim")?;
        if cross_dims.iter().any(|&d| d != cross_dims[0]) {
            return Err(format!(
                "cross_attention_dim {cross_dims:?}: different widths per block are unsupported"
            ));
        }
        let only_cross = self
            .only_cross_attention
            .expand(n, "only_cross_attention")?;
        let transformer_layers = self
            .transformer_layers_per_block
            .expand(n, "transformer_layers_per_block")?;

        let mut down = Vec::with_capacity(n);
        let mut prev = self.block_out_channels[0];
        for (i, kind) in self.down_block_types.iter().enumerate() {
            let cross_attention = match kind.as_str() {
                "CrossAttnDownBlock2D" => true,
                "DownBlock2D" => false,
                other => {
                    return Err(format!(
                        "down_block_types[{i}]: unsupported block type {other:?} (expected CrossAttnDownBlock2D or DownBlock2D)"
                    ))
                }
            };
            let out = self.block_out_channels[i];
            let field = format!("transformer_layers_per_block[{i}]");
            down.push(BlockPlan {
                cross_attention,
                in_channels: prev,
                out_channels: out,
                prev_output_channels: prev,
                transformer_layers: transformer_layers[i].expand(layers[i], &field)?,
                num_layers: layers[i],
                heads: heads[i],
                cross_attention_dim: cross_dims[i],
                only_cross_attention: only_cross[i],
                resample: i + 1 < n,
            });
            prev = out;
        }

        let mid = match self.mid_block_type.as_deref() {
            None => None,
            Some("UNetMidBlock2DCrossAttn") => Some(MidPlan {
                channels: self.block_out_channels[n - 1],
                transformer_layers: match &transformer_layers[n - 1] {
                    PerBlock::Same(t) => *t,
                    PerBlock::Each(ts) => *ts
                        .first()
                        .ok_or("transformer_layers_per_block: the last entry is empty")?,
                },
                heads: heads[n - 1],
                cross_attention_dim: cross_dims[n - 1],
            }),
            Some(other) => {
                return Err(format!(
                    "mid_block_type: unsupported block type {other:?} (expected UNetMidBlock2DCrossAttn or null)"
                ))
            }
        };

        let reversed_layers: Vec<PerBlock<usize>> = match &self.reverse_transformer_layers_per_block
        {
            Some(r) if r.len() == n => r.clone(),
            Some(r) => {
                return Err(format!(
                    "reverse_transformer_layers_per_block has {} entries, expected {n}",
                    r.len()
                ))
            }
            None => {
                if transformer_layers
                    .iter()
                    .any(|t| matches!(t, PerBlock::Each(_)))
                {
                    return Err("transformer_layers_per_block lists per layer need reverse_transformer_layers_per_block".into());
                }
                transformer_layers.iter().rev().cloned().collect()
            }
        };
        let rev_channels: Vec<usize> = self.block_out_channels.iter().rev().copied().collect();
        let mut up = Vec::with_capacity(n);
        let mut out = rev_channels[0];
        for (i, kind) in self.up_block_types.iter().enumerate() {
            let cross_attention = match kind.as_str() {
                "CrossAttnUpBlock2D" => true,
                "UpBlock2D" => false,
                other => {
                    return Err(format!(
                        "up_block_types[{i}]: unsupported block type {other:?} (expected CrossAttnUpBlock2D or UpBlock2D)"
                    ))
                }
            };
            let prev_out = out;
            out = rev_channels[i];
            let j = n - 1 - i;
            let num_layers = layers[j] + 1;
            let field = format!("reverse_transformer_layers_per_block[{i}]");
            up.push(BlockPlan {
                cross_attention,
                in_channels: rev_channels[(i + 1).min(n - 1)],
                out_channels: out,
                prev_output_channels: prev_out,
                transformer_layers: reversed_layers[i].expand(num_layers, &field)?,
                num_layers,
                heads: heads[j],
                cross_attention_dim: cross_dims[j],
                only_cross_attention: only_cross[j],
                resample: i + 1 < n,
            });
        }
        let attention_widths = down
            .iter()
            .chain(up.iter())
            .filter(|b| b.cross_attention)
            .map(|b| (b.heads, b.out_channels))
            .chain(mid.iter().map(|m| (m.heads, m.channels)));
        for (heads, channels) in attention_widths {
            if heads == 0 || heads > channels {
                return Err(format!(
                    "{heads} attention heads do not fit {channels} channels (attention_head_dim / num_attention_heads)"
                ));
            }
        }

        let time_embed_dim = self
            .time_embedding_dim
            .unwrap_or(self.block_out_channels[0] * 4);
        let text_time = match self.addition_embed_type.as_deref() {
            None => None,
            Some("text_time") => Some(TextTimePlan {
                time_embed_dim: self
                    .addition_time_embed_dim
                    .ok_or("addition_embed_type text_time needs addition_time_embed_dim")?,
                input_dim: self.projection_class_embeddings_input_dim.ok_or(
                    "addition_embed_type text_time needs projection_class_embeddings_input_dim",
                )?,
            }),
            Some(other) => {
                return Err(format!(
                    "addition_embed_type: unsupported {other:?} (expected null or text_time)"
                ))
            }
        };
        Ok(UNetPlan {
            down,
            mid,
            up,
            act,
            time_norm,
            groups,
            time_embed_dim,
            cross_attention_dim: cross_dims[0],
            time_embedding_act,
            timestep_post_act,
            text_time,
        })
    }

    fn reject_unsupported(&self) -> std::result::Result<(), String> {
        if self.dual_cross_attention {
            return Err("dual_cross_attention: true is unsupported".into());
        }
        if let Some(t) = &self.class_embed_type {
            return Err(format!(
                "class_embed_type: {t:?} is unsupported (expected null)"
            ));
        }
        if let Some(n) = self.num_class_embeds {
            return Err(format!(
                "num_class_embeds: {n} is unsupported (expected null)"
            ));
        }
        if self.encoder_hid_dim.is_some() || self.encoder_hid_dim_type.is_some() {
            return Err(
                "encoder_hid_dim / encoder_hid_dim_type are unsupported (expected null)".into(),
            );
        }
        if self.time_embedding_type != "positional" {
            return Err(format!(
                "time_embedding_type: {:?} is unsupported (expected positional)",
                self.time_embedding_type
            ));
        }
        if self.attention_type != "default" {
            return Err(format!(
                "attention_type: {:?} is unsupported (expected default)",
                self.attention_type
            ));
        }
        if let Some(n) = &self.cross_attention_norm {
            return Err(format!(
                "cross_attention_norm: {n:?} is unsupported (expected null)"
            ));
        }
        for (field, k) in [
            ("conv_in_kernel", self.conv_in_kernel),
            ("conv_out_kernel", self.conv_out_kernel),
        ] {
            if k % 2 == 0 {
                return Err(format!("{field}: {k} must be odd"));
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(json: &str) -> UNetConfig {
        serde_json::from_str(json).unwrap()
    }

    #[test]
    fn defaults_are_sd15() {
        let plan = parse(r#"{"sample_size": 64}"#).plan().unwrap();
        let sized = parse(r#"{"sample_size": [96, 64]}"#);
        assert_eq!(sized.sample_size.unwrap().height_width(), (96, 64));
        assert_eq!(plan.down.len(), 4);
        assert_eq!(plan.down[0].heads, 8);
        assert_eq!(plan.up[0].in_channels, 1280);
        assert_eq!(plan.up[3].prev_output_channels, 640);
        assert_eq!(plan.up[3].num_layers, 3);
        assert_eq!(plan.time_embed_dim, 1280);
        assert!(plan.mid.is_some());
    }

    #[test]
    fn sdxl_shapes() {
        let cfg = parse(
            r#"{"addition_embed_type": "text_time", "addition_time_embed_dim": 256,
                "projection_class_embeddings_input_dim": 2816, "attention_head_dim": [5, 10, 20],
                "block_out_channels": [320, 640, 1280], "cross_attention_dim": 2048,
                "down_block_types": ["DownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D"],
                "up_block_types": ["CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "UpBlock2D"],
                "transformer_layers_per_block": [1, 2, 10], "use_linear_projection": true,
                "upcast_attention": null}"#,
        );
        assert!(!cfg.upcast_attention);
        let plan = cfg.plan().unwrap();
        assert_eq!(plan.down[2].transformer_layers, vec![10, 10]);
        assert_eq!(plan.mid.unwrap().transformer_layers, 10);
        assert_eq!(plan.up[0].transformer_layers, vec![10, 10, 10]);
        assert_eq!(plan.up[0].heads, 20);
        assert!(cfg.needs_added_cond());
    }

    #[test]
    fn rejections_name_the_field() {
        let err = |json: &str| parse(json).validate().unwrap_err();
        assert!(err(r#"{"dual_cross_attention": true}"#).contains("dual_cross_attention"));
        assert!(err(r#"{"class_embed_type": "timestep"}"#).contains("class_embed_type"));
        assert!(err(r#"{"addition_embed_type": "text"}"#).contains("addition_embed_type"));
        assert!(err(r#"{"down_block_types": ["AttnDownBlock2D", "DownBlock2D", "DownBlock2D", "DownBlock2D"]}"#)
            .contains("AttnDownBlock2D"));
        assert!(err(r#"{"attention_head_dim": [8, 8]}"#).contains("attention_head_dim"));
        assert!(err(r#"{"act_fn": "tanh"}"#).contains("act_fn"));
    }
}
