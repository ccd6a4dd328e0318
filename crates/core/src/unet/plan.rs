//! `UNetPlan`: a [`UNetConfig`] resolved into the per-block settings the
//! model is built from, every per-block list expanded and every name parsed.
//! Resolving it is the config's validation: options this implementation does
//! not support are rejected here, with a message naming the field.

use super::config::{PerBlock, UNetConfig};
use crate::layers::{Activation, TimeEmbeddingNorm};

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
    /// Resolves the config into a [`UNetPlan`], or names the field it cannot support.
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
