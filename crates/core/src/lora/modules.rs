//! Which of a component's weights a LoRA key names.
//!
//! A [`ModuleIndex`] is made from the names of the weights a component read
//! while it was built, so it knows exactly the modules that exist. The text
//! encoders' paths are compared without transformers' optional `text_model.`
//! prefix, since files and checkpoints write it either way. A UNet's index
//! also takes the original (LDM/SGM) block names kohya's SDXL files use
//! (`input_blocks_4_1_proj_in`), mapped as single-file checkpoints are.

use std::collections::HashMap;

use super::ModuleKey;
use crate::model::single_file::unet_module_path;

/// The modules of one built component, by the paths LoRA files use.
#[derive(Debug, Default, Clone)]
pub struct ModuleIndex {
    /// Dotted module path (without `text_model.`) → the weight's tensor name.
    dotted: HashMap<String, String>,
    /// The same path with `_` for `.` → the weight's tensor name.
    underscored: HashMap<String, String>,
    /// For a UNet with the same `layers_per_block` in every block: that
    /// count, with which LDM/SGM block names are mapped.
    sgm_layers_per_block: Option<usize>,
}

impl ModuleIndex {
    /// The index of the modules whose `.weight` tensors are among `names`.
    pub(crate) fn from_weight_names<'a>(names: impl IntoIterator<Item = &'a str>) -> Self {
        let mut index = Self::default();
        for name in names {
            let Some(module) = name.strip_suffix(".weight") else {
                continue;
            };
            let module = strip_text_model(module, '.');
            index
                .underscored
                .insert(module.replace('.', "_"), name.to_string());
            index.dotted.insert(module.to_string(), name.to_string());
        }
        index
    }

    /// This index, taking LDM/SGM block names (`input_blocks.4.1.proj_in`,
    /// kohya's `input_blocks_4_1_proj_in`) for a UNet with `layers_per_block`
    /// resnets in every down block.
    pub(crate) fn with_sgm_names(mut self, layers_per_block: usize) -> Self {
        self.sgm_layers_per_block = Some(layers_per_block);
        self
    }

    /// The tensor name of the weight `key` adapts, if this component has it.
    ///
    /// A UNet's index tries LDM/SGM block names after the names the
    /// component has: kohya's SDXL files written against the original UNet
    /// name its blocks `input_blocks_4_1_…`.
    pub(crate) fn resolve(&self, key: &ModuleKey) -> Option<&str> {
        let found = match key {
            ModuleKey::Dotted(path) => self.dotted.get(strip_text_model(path, '.')),
            ModuleKey::Underscored(path) => self.underscored.get(strip_text_model(path, '_')),
        };
        found.or_else(|| self.resolve_sgm(key)).map(String::as_str)
    }

    /// `key` read as an LDM/SGM UNet path.
    fn resolve_sgm(&self, key: &ModuleKey) -> Option<&String> {
        let layers = self.sgm_layers_per_block?;
        match key {
            ModuleKey::Dotted(path) => self.dotted.get(&unet_module_path(path, layers)?),
            ModuleKey::Underscored(path) => {
                let dotted = sgm_dotted(path)?;
                let mapped = unet_module_path(&dotted, layers)?;
                self.underscored.get(&mapped.replace('.', "_"))
            }
        }
    }

    /// How many modules it knows.
    pub fn len(&self) -> usize {
        self.dotted.len()
    }

    /// Whether it knows no module.
    pub fn is_empty(&self) -> bool {
        self.dotted.is_empty()
    }
}

/// A kohya LDM/SGM UNet path (`input_blocks_4_1_transformer_blocks_0_attn1_to_q`,
/// `output_blocks_2_0_in_layers_2`) with dots where [`unet_module_path`]
/// reads them: after the block name and its indices, and inside a resnet's
/// layer names (`in_layers.2`). What follows in an attention block stays as
/// written, since it maps through unchanged and is compared with `_`s.
fn sgm_dotted(path: &str) -> Option<String> {
    const HEADS: [(&str, usize); 6] = [
        ("input_blocks_", 2),
        ("output_blocks_", 2),
        ("middle_block_", 1),
        ("time_embed_", 1),
        ("label_emb_", 2),
        ("out_", 1),
    ];
    let (head, indices, rest) = HEADS.iter().find_map(|(head, indices)| {
        path.strip_prefix(head)
            .map(|rest| (&head[..head.len() - 1], *indices, rest))
    })?;
    let mut parts = vec![head.to_string()];
    let mut rest = rest;
    for _ in 0..indices {
        let (index, after) = rest.split_once('_').unwrap_or((rest, ""));
        if index.is_empty() || !index.bytes().all(|b| b.is_ascii_digit()) {
            return None;
        }
        parts.push(index.to_string());
        rest = after;
    }
    if !rest.is_empty() {
        let resnet_layer = ["in_layers_", "emb_layers_", "out_layers_"]
            .iter()
            .find_map(|layer| {
                rest.strip_prefix(layer)
                    .map(|index| (&layer[..layer.len() - 1], index))
            });
        match resnet_layer {
            Some((layer, index)) => {
                parts.push(layer.to_string());
                parts.push(index.to_string());
            }
            None => parts.push(rest.to_string()),
        }
    }
    Some(parts.join("."))
}

/// `path` without a leading `text_model` and its separator.
fn strip_text_model(path: &str, separator: char) -> &str {
    path.strip_prefix("text_model")
        .and_then(|rest| rest.strip_prefix(separator))
        .unwrap_or(path)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn resolves_dotted_and_underscored_paths_with_or_without_text_model() {
        let index = ModuleIndex::from_weight_names([
            "down_blocks.0.attentions.0.transformer_blocks.0.attn1.to_q.weight",
            "down_blocks.0.attentions.0.transformer_blocks.0.attn1.to_q.bias",
            "text_model.encoder.layers.0.mlp.fc1.weight",
        ]);
        assert_eq!(index.len(), 2);
        let q = "down_blocks.0.attentions.0.transformer_blocks.0.attn1.to_q.weight";
        let dotted =
            ModuleKey::Dotted("down_blocks.0.attentions.0.transformer_blocks.0.attn1.to_q".into());
        let kohya = ModuleKey::Underscored(
            "down_blocks_0_attentions_0_transformer_blocks_0_attn1_to_q".into(),
        );
        assert_eq!(index.resolve(&dotted), Some(q));
        assert_eq!(index.resolve(&kohya), Some(q));
        let fc1 = Some("text_model.encoder.layers.0.mlp.fc1.weight");
        for key in [
            ModuleKey::Underscored("text_model_encoder_layers_0_mlp_fc1".into()),
            ModuleKey::Underscored("encoder_layers_0_mlp_fc1".into()),
            ModuleKey::Dotted("encoder.layers.0.mlp.fc1".into()),
            ModuleKey::Dotted("text_model.encoder.layers.0.mlp.fc1".into()),
        ] {
            assert_eq!(index.resolve(&key), fc1, "{key:?}");
        }
        assert_eq!(
            index.resolve(&ModuleKey::Underscored("input_blocks_4_1_proj_in".into())),
            None
        );
    }

    #[test]
    fn a_unet_index_takes_sgm_block_names() {
        let names = [
            "down_blocks.1.attentions.0.proj_in.weight",
            "down_blocks.1.attentions.0.transformer_blocks.0.attn1.to_q.weight",
            "down_blocks.1.attentions.0.transformer_blocks.0.attn1.to_out.0.weight",
            "down_blocks.0.resnets.1.conv1.weight",
            "down_blocks.0.downsamplers.0.conv.weight",
            "mid_block.resnets.1.time_emb_proj.weight",
            "up_blocks.0.resnets.2.conv_shortcut.weight",
            "up_blocks.0.upsamplers.0.conv.weight",
            "add_embedding.linear_1.weight",
            "time_embedding.linear_2.weight",
            "conv_out.weight",
        ];
        let plain = ModuleIndex::from_weight_names(names);
        let index = plain.clone().with_sgm_names(2);
        for (sgm, diffusers) in [
            ("input_blocks_4_1_proj_in", names[0]),
            ("input_blocks_4_1_transformer_blocks_0_attn1_to_q", names[1]),
            (
                "input_blocks_4_1_transformer_blocks_0_attn1_to_out_0",
                names[2],
            ),
            ("input_blocks_2_0_in_layers_2", names[3]),
            ("input_blocks_3_0_op", names[4]),
            ("middle_block_2_emb_layers_1", names[5]),
            ("output_blocks_2_0_skip_connection", names[6]),
            ("output_blocks_2_1_conv", names[7]),
            ("label_emb_0_0", names[8]),
            ("time_embed_2", names[9]),
            ("out_2", names[10]),
        ] {
            let key = ModuleKey::Underscored(sgm.into());
            assert_eq!(index.resolve(&key), Some(diffusers), "{sgm}");
            assert_eq!(plain.resolve(&key), None, "{sgm}");
        }
        let dotted = ModuleKey::Dotted("input_blocks.4.1.proj_in".into());
        assert_eq!(index.resolve(&dotted), Some(names[0]));
        for stray in [
            "input_blocks_4_7_proj_in",
            "input_blocks_x_1_proj_in",
            "middle_block_1_no_such_layer",
            "output_blocks_2_0_in_layers_1",
        ] {
            let key = ModuleKey::Underscored(stray.into());
            assert_eq!(index.resolve(&key), None, "{stray}");
        }
    }
}
