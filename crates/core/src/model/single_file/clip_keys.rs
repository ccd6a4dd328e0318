//! The text encoders' names in LDM/SGM checkpoints, to transformers' CLIP names.
//!
//! OpenAI's CLIP (SD 1.x, SDXL's first encoder) is stored as transformers
//! saves it, under a prefix. OpenCLIP (SD 2.x, SDXL's second encoder) has its
//! own names (`transformer.resblocks.3.mlp.c_fc`), a fused `attn.in_proj`
//! holding q, k and v one above the other, and a `text_projection` that
//! multiplies from the right (transformers' is its transpose).

use super::keys::{join, split_index, split_segment};

/// SD 1.x's text encoder (OpenAI CLIP ViT-L).
pub const SD1_CLIP_PREFIX: &str = "cond_stage_model.transformer.";
/// SD 2.x's text encoder (OpenCLIP ViT-H).
pub const SD2_OPEN_CLIP_PREFIX: &str = "cond_stage_model.model.";
/// SDXL's first text encoder (OpenAI CLIP ViT-L).
pub const SDXL_CLIP_PREFIX: &str = "conditioner.embedders.0.transformer.";
/// SDXL's second text encoder (OpenCLIP ViT-bigG).
pub const SDXL_OPEN_CLIP_PREFIX: &str = "conditioner.embedders.1.model.";

/// Maps an OpenAI CLIP module path or tensor name (with or without
/// [`SD1_CLIP_PREFIX`] or [`SDXL_CLIP_PREFIX`]) to transformers'
/// `CLIPTextModel` name: the same path under `text_model.` (older checkpoints
/// leave that level out). `None` for paths outside the text model and for the
/// `position_ids` buffer.
///
/// `cond_stage_model.transformer.text_model.encoder.layers.0.mlp.fc1` →
/// `text_model.encoder.layers.0.mlp.fc1`.
pub fn clip_module_path(path: &str) -> Option<String> {
    let path = [SD1_CLIP_PREFIX, SDXL_CLIP_PREFIX]
        .iter()
        .find_map(|prefix| path.strip_prefix(prefix))
        .unwrap_or(path);
    let inner = path.strip_prefix("text_model.").unwrap_or(path);
    let (head, _) = split_segment(inner);
    let known = matches!(head, "embeddings" | "encoder" | "final_layer_norm");
    (known && !inner.ends_with("position_ids")).then(|| format!("text_model.{inner}"))
}

/// Maps an OpenCLIP module path or tensor name (with or without
/// [`SD2_OPEN_CLIP_PREFIX`] or [`SDXL_OPEN_CLIP_PREFIX`]) to transformers'
/// CLIP name. `None` outside the text model and for the fused
/// `attn.in_proj_weight`/`attn.in_proj_bias`, which are three diffusers
/// tensors each (see [`open_clip_fused_qkv`]).
///
/// `transformer.resblocks.3.mlp.c_fc` → `text_model.encoder.layers.3.mlp.fc1`;
/// `text_projection` → `text_projection.weight` (transposed).
pub fn open_clip_module_path(path: &str) -> Option<String> {
    let path = strip_open_clip_prefix(path);
    let (head, rest) = split_segment(path);
    match head {
        "token_embedding" => Some(join("text_model.embeddings.token_embedding", rest)),
        "positional_embedding" if rest.is_none() => {
            Some("text_model.embeddings.position_embedding.weight".to_string())
        }
        "ln_final" => Some(join("text_model.final_layer_norm", rest)),
        "text_projection" if rest.is_none() => Some("text_projection.weight".to_string()),
        "transformer" => {
            let (resblocks, rest) = split_segment(rest?);
            let (layer, rest) = split_index(rest.filter(|_| resblocks == "resblocks")?)?;
            let block = format!("text_model.encoder.layers.{layer}");
            let Some(rest) = rest else {
                return Some(block);
            };
            let (part, tail) = split_segment(rest);
            let name = match (part, tail.map(split_segment)) {
                ("ln_1", _) => join("layer_norm1", tail),
                ("ln_2", _) => join("layer_norm2", tail),
                ("mlp", Some(("c_fc", tail))) => join("mlp.fc1", tail),
                ("mlp", Some(("c_proj", tail))) => join("mlp.fc2", tail),
                ("mlp", None) => "mlp".to_string(),
                ("attn", Some(("out_proj", tail))) => join("self_attn.out_proj", tail),
                ("attn", None) => "self_attn".to_string(),
                _ => return None,
            };
            Some(format!("{block}.{name}"))
        }
        _ => None,
    }
}

/// For an OpenCLIP fused attention input tensor
/// (`transformer.resblocks.N.attn.in_proj_weight` or `_bias`), the
/// transformers names of its three row blocks, in order: q, k and v.
pub fn open_clip_fused_qkv(path: &str) -> Option<[String; 3]> {
    let path = strip_open_clip_prefix(path);
    let rest = path.strip_prefix("transformer.resblocks.")?;
    let (layer, rest) = split_index(rest)?;
    let kind = match rest? {
        "attn.in_proj_weight" => "weight",
        "attn.in_proj_bias" => "bias",
        _ => return None,
    };
    let name = |proj: &str| format!("text_model.encoder.layers.{layer}.self_attn.{proj}.{kind}");
    Some([name("q_proj"), name("k_proj"), name("v_proj")])
}

fn strip_open_clip_prefix(path: &str) -> &str {
    [SD2_OPEN_CLIP_PREFIX, SDXL_OPEN_CLIP_PREFIX]
        .iter()
        .find_map(|prefix| path.strip_prefix(prefix))
        .unwrap_or(path)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn openai_clip_names_keep_their_path_under_text_model() {
        assert_eq!(
            clip_module_path(
                "cond_stage_model.transformer.text_model.encoder.layers.0.mlp.fc1.weight"
            )
            .as_deref(),
            Some("text_model.encoder.layers.0.mlp.fc1.weight")
        );
        assert_eq!(
            clip_module_path(
                "conditioner.embedders.0.transformer.embeddings.token_embedding.weight"
            )
            .as_deref(),
            Some("text_model.embeddings.token_embedding.weight")
        );
        assert_eq!(
            clip_module_path("cond_stage_model.transformer.text_model.embeddings.position_ids"),
            None
        );
    }

    #[test]
    fn open_clip_names_map_to_transformers() {
        let cases = [
            (
                "transformer.resblocks.3.mlp.c_fc",
                "text_model.encoder.layers.3.mlp.fc1",
            ),
            (
                "conditioner.embedders.1.model.transformer.resblocks.31.attn.out_proj.weight",
                "text_model.encoder.layers.31.self_attn.out_proj.weight",
            ),
            (
                "cond_stage_model.model.ln_final.bias",
                "text_model.final_layer_norm.bias",
            ),
            (
                "positional_embedding",
                "text_model.embeddings.position_embedding.weight",
            ),
            (
                "token_embedding.weight",
                "text_model.embeddings.token_embedding.weight",
            ),
            (
                "transformer.resblocks.0.ln_2.weight",
                "text_model.encoder.layers.0.layer_norm2.weight",
            ),
            ("text_projection", "text_projection.weight"),
        ];
        for (ldm, diffusers) in cases {
            assert_eq!(
                open_clip_module_path(ldm).as_deref(),
                Some(diffusers),
                "{ldm}"
            );
        }
        assert_eq!(
            open_clip_module_path("transformer.resblocks.0.attn.in_proj_weight"),
            None
        );
        assert_eq!(open_clip_module_path("logit_scale"), None);
        let [q, _, v] =
            open_clip_fused_qkv("cond_stage_model.model.transformer.resblocks.2.attn.in_proj_bias")
                .unwrap();
        assert_eq!(q, "text_model.encoder.layers.2.self_attn.q_proj.bias");
        assert_eq!(v, "text_model.encoder.layers.2.self_attn.v_proj.bias");
    }
}
