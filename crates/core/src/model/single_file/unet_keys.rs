//! The UNet's names: LDM/SGM (`model.diffusion_model.input_blocks.4.1.proj_in`)
//! to diffusers (`down_blocks.1.attentions.0.proj_in`).
//!
//! The original layout numbers its blocks in one flat list per direction:
//! `input_blocks.0` is the input convolution, then each resolution level has
//! `layers_per_block` blocks of a resnet (`.0`) and, in attention levels, a
//! transformer (`.1`), followed by one downsampler block (all but the last
//! level). `output_blocks` has `layers_per_block + 1` blocks per level, the
//! last of which carries the upsampler after its resnet (and transformer).
//! Transformer internals already use the diffusers names; resnets do not.

use super::keys::{join, split_index, split_segment};

/// The prefix of the UNet's tensors in an LDM/SGM checkpoint.
pub const UNET_PREFIX: &str = "model.diffusion_model.";

/// Maps one LDM/SGM UNet module path, or a tensor name under it (with or
/// without [`UNET_PREFIX`]), to its diffusers path, for a UNet with
/// `layers_per_block` resnets per down level (2 in every released SD model).
/// `None` for a path outside the UNet's modules.
///
/// `input_blocks.4.1.proj_in` → `down_blocks.1.attentions.0.proj_in`;
/// `output_blocks.2.1.conv.weight` → `up_blocks.0.upsamplers.0.conv.weight`;
/// `middle_block.0.in_layers.2` → `mid_block.resnets.0.conv1`.
pub fn unet_module_path(path: &str, layers_per_block: usize) -> Option<String> {
    let path = path.strip_prefix(UNET_PREFIX).unwrap_or(path);
    let (head, rest) = split_segment(path);
    let per_level = layers_per_block + 1;
    match head {
        "time_embed" => {
            let (index, rest) = split_segment(rest?);
            let layer = match index {
                "0" => "time_embedding.linear_1",
                "2" => "time_embedding.linear_2",
                _ => return None,
            };
            Some(join(layer, rest))
        }
        "label_emb" => {
            let (outer, rest) = split_segment(rest?);
            let (index, rest) = split_segment(rest.filter(|_| outer == "0")?);
            let layer = match index {
                "0" => "add_embedding.linear_1",
                "2" => "add_embedding.linear_2",
                _ => return None,
            };
            Some(join(layer, rest))
        }
        "out" => {
            let (index, rest) = split_segment(rest?);
            let layer = match index {
                "0" => "conv_norm_out",
                "2" => "conv_out",
                _ => return None,
            };
            Some(join(layer, rest))
        }
        "input_blocks" => {
            let (block, rest) = split_index(rest?)?;
            let (part, rest) = split_segment(rest?);
            if block == 0 {
                return (part == "0").then(|| join("conv_in", rest));
            }
            let (level, layer) = ((block - 1) / per_level, (block - 1) % per_level);
            if layer == layers_per_block {
                let (op, rest) = split_segment(rest?);
                return (part == "0" && op == "op")
                    .then(|| join(&format!("down_blocks.{level}.downsamplers.0.conv"), rest));
            }
            match part {
                "0" => resnet(&format!("down_blocks.{level}.resnets.{layer}"), rest),
                "1" => Some(join(
                    &format!("down_blocks.{level}.attentions.{layer}"),
                    rest,
                )),
                _ => None,
            }
        }
        "middle_block" => {
            let (part, rest) = split_segment(rest?);
            match part {
                "0" => resnet("mid_block.resnets.0", rest),
                "1" => Some(join("mid_block.attentions.0", rest)),
                "2" => resnet("mid_block.resnets.1", rest),
                _ => None,
            }
        }
        "output_blocks" => {
            let (block, rest) = split_index(rest?)?;
            let (part, rest) = split_segment(rest?);
            let (level, layer) = (block / per_level, block % per_level);
            match (part, rest.map(split_segment)) {
                ("0", _) => resnet(&format!("up_blocks.{level}.resnets.{layer}"), rest),
                ("1" | "2", Some(("conv", rest))) => {
                    Some(join(&format!("up_blocks.{level}.upsamplers.0.conv"), rest))
                }
                ("1", _) => Some(join(&format!("up_blocks.{level}.attentions.{layer}"), rest)),
                _ => None,
            }
        }
        _ => None,
    }
}

/// A resnet's inner layers: `in_layers.0` → `norm1`, `in_layers.2` → `conv1`,
/// `emb_layers.1` → `time_emb_proj`, `out_layers.0` → `norm2`,
/// `out_layers.3` → `conv2`, `skip_connection` → `conv_shortcut`.
fn resnet(block: &str, rest: Option<&str>) -> Option<String> {
    let Some(rest) = rest else {
        return Some(block.to_string());
    };
    let (layer, tail) = split_segment(rest);
    let name = match layer {
        "skip_connection" => "conv_shortcut",
        "in_layers" | "emb_layers" | "out_layers" => {
            let (index, tail2) = split_segment(tail?);
            let name = match (layer, index) {
                ("in_layers", "0") => "norm1",
                ("in_layers", "2") => "conv1",
                ("emb_layers", "1") => "time_emb_proj",
                ("out_layers", "0") => "norm2",
                ("out_layers", "3") => "conv2",
                _ => return None,
            };
            return Some(join(&format!("{block}.{name}"), tail2));
        }
        _ => return None,
    };
    Some(join(&format!("{block}.{name}"), tail))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sgm_block_names_map_to_diffusers() {
        let cases = [
            (
                "input_blocks.4.1.proj_in",
                "down_blocks.1.attentions.0.proj_in",
            ),
            (
                "model.diffusion_model.input_blocks.0.0.weight",
                "conv_in.weight",
            ),
            (
                "input_blocks.1.0.in_layers.2.weight",
                "down_blocks.0.resnets.0.conv1.weight",
            ),
            (
                "input_blocks.3.0.op.bias",
                "down_blocks.0.downsamplers.0.conv.bias",
            ),
            (
                "input_blocks.5.0.skip_connection",
                "down_blocks.1.resnets.1.conv_shortcut",
            ),
            (
                "input_blocks.8.1.transformer_blocks.3.attn2.to_k.weight",
                "down_blocks.2.attentions.1.transformer_blocks.3.attn2.to_k.weight",
            ),
            (
                "middle_block.2.emb_layers.1.bias",
                "mid_block.resnets.1.time_emb_proj.bias",
            ),
            ("middle_block.1.proj_out", "mid_block.attentions.0.proj_out"),
            (
                "output_blocks.2.1.conv.weight",
                "up_blocks.0.upsamplers.0.conv.weight",
            ),
            ("output_blocks.5.2.conv", "up_blocks.1.upsamplers.0.conv"),
            (
                "output_blocks.5.1.norm.weight",
                "up_blocks.1.attentions.2.norm.weight",
            ),
            (
                "output_blocks.7.0.out_layers.3.weight",
                "up_blocks.2.resnets.1.conv2.weight",
            ),
            ("time_embed.2.weight", "time_embedding.linear_2.weight"),
            ("label_emb.0.0.bias", "add_embedding.linear_1.bias"),
            ("out.0.weight", "conv_norm_out.weight"),
            ("out.2.bias", "conv_out.bias"),
            ("input_blocks.1.0", "down_blocks.0.resnets.0"),
        ];
        for (ldm, diffusers) in cases {
            assert_eq!(
                unet_module_path(ldm, 2).as_deref(),
                Some(diffusers),
                "{ldm}"
            );
        }
        assert_eq!(
            unet_module_path("input_blocks.2.0.op.weight", 1).as_deref(),
            Some("down_blocks.0.downsamplers.0.conv.weight")
        );
        for outside in [
            "foo.bar",
            "input_blocks.1.0.in_layers.1.weight",
            "out.1.weight",
            "time_embed",
        ] {
            assert_eq!(unet_module_path(outside, 2), None, "{outside}");
        }
    }
}
