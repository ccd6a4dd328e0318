//! Which of a component's weights a LoRA key names.
//!
//! A [`ModuleIndex`] is made from the names of the weights a component read
//! while it was built, so it knows exactly the modules that exist. The text
//! encoders' paths are compared without transformers' optional `text_model.`
//! prefix, since files and checkpoints write it either way.

use std::collections::HashMap;

use super::ModuleKey;

/// The modules of one built component, by the paths LoRA files use.
#[derive(Debug, Default, Clone)]
pub struct ModuleIndex {
    /// Dotted module path (without `text_model.`) → the weight's tensor name.
    dotted: HashMap<String, String>,
    /// The same path with `_` for `.` → the weight's tensor name.
    underscored: HashMap<String, String>,
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

    /// The tensor name of the weight `key` adapts, if this component has it.
    ///
    /// kohya's SDXL files written against the original (SGM) UNet name its
    /// blocks `input_blocks_4_1_…`; a mapping of those paths onto diffusers'
    /// belongs here, tried after the names the component has.
    pub(crate) fn resolve(&self, key: &ModuleKey) -> Option<&str> {
        match key {
            ModuleKey::Dotted(path) => self.dotted.get(strip_text_model(path, '.')),
            ModuleKey::Underscored(path) => self.underscored.get(strip_text_model(path, '_')),
        }
        .map(String::as_str)
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
}
