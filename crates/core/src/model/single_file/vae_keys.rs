//! The VAE's names: LDM (`first_stage_model.decoder.up.0.block.1.conv1`) to
//! diffusers (`decoder.up_blocks.3.resnets.1.conv1`).
//!
//! The original decoder numbers its levels from the lowest resolution up
//! (`up.0` runs last), diffusers in the order they run; the mid-block's
//! attention is `attn_1` with `q`, `k`, `v` and `proj_out` (stored as 1×1
//! convolutions, which the loader reshapes to the diffusers linear layers).

use super::keys::{join, split_index, split_segment};

/// The prefix of the VAE's tensors in a full checkpoint (VAE files ship without it).
pub const VAE_PREFIX: &str = "first_stage_model.";

/// Maps one LDM VAE module path, or a tensor name under it (with or without
/// [`VAE_PREFIX`]), to its diffusers path, for a VAE of `levels` resolution
/// levels (`block_out_channels.len()`, 4 in every released SD VAE). `None` for
/// a path outside the VAE's modules.
///
/// `decoder.up.0.block.2.nin_shortcut` → `decoder.up_blocks.3.resnets.2.conv_shortcut`;
/// `encoder.mid.attn_1.q.weight` → `encoder.mid_block.attentions.0.to_q.weight`.
pub fn vae_module_path(path: &str, levels: usize) -> Option<String> {
    let path = path.strip_prefix(VAE_PREFIX).unwrap_or(path);
    let (head, rest) = split_segment(path);
    match head {
        "quant_conv" | "post_quant_conv" => Some(join(head, rest)),
        "encoder" | "decoder" => coder(head, rest?, levels).map(|inner| format!("{head}.{inner}")),
        _ => None,
    }
}

/// A path inside the encoder or the decoder.
fn coder(which: &str, path: &str, levels: usize) -> Option<String> {
    let (head, rest) = split_segment(path);
    match (which, head) {
        (_, "conv_in" | "conv_out") => Some(join(head, rest)),
        (_, "norm_out") => Some(join("conv_norm_out", rest)),
        (_, "mid") => {
            let (part, rest) = split_segment(rest?);
            match part {
                "block_1" => resnet("mid_block.resnets.0", rest),
                "block_2" => resnet("mid_block.resnets.1", rest),
                "attn_1" => attention("mid_block.attentions.0", rest),
                _ => None,
            }
        }
        ("encoder", "down") | ("decoder", "up") => {
            let (level, rest) = split_index(rest?)?;
            let (blocks, diffusers_level) = if which == "encoder" {
                ("down_blocks", level)
            } else {
                ("up_blocks", levels.checked_sub(level + 1)?)
            };
            let (part, rest) = split_segment(rest?);
            match part {
                "block" => {
                    let (j, rest) = split_index(rest?)?;
                    resnet(&format!("{blocks}.{diffusers_level}.resnets.{j}"), rest)
                }
                "downsample" | "upsample" => {
                    let (conv, rest) = split_segment(rest?);
                    let sampler = if part == "downsample" {
                        "downsamplers"
                    } else {
                        "upsamplers"
                    };
                    (conv == "conv").then(|| {
                        join(
                            &format!("{blocks}.{diffusers_level}.{sampler}.0.conv"),
                            rest,
                        )
                    })
                }
                _ => None,
            }
        }
        _ => None,
    }
}

/// A VAE resnet: the names match but for `nin_shortcut` → `conv_shortcut`.
fn resnet(block: &str, rest: Option<&str>) -> Option<String> {
    let Some(rest) = rest else {
        return Some(block.to_string());
    };
    let (layer, tail) = split_segment(rest);
    let name = match layer {
        "norm1" | "conv1" | "norm2" | "conv2" => layer,
        "nin_shortcut" => "conv_shortcut",
        _ => return None,
    };
    Some(join(&format!("{block}.{name}"), tail))
}

/// The mid-block attention: `norm` → `group_norm`, `q`/`k`/`v` → `to_q`/`to_k`/`to_v`,
/// `proj_out` → `to_out.0`.
fn attention(block: &str, rest: Option<&str>) -> Option<String> {
    let Some(rest) = rest else {
        return Some(block.to_string());
    };
    let (layer, tail) = split_segment(rest);
    let name = match layer {
        "norm" => "group_norm",
        "q" => "to_q",
        "k" => "to_k",
        "v" => "to_v",
        "proj_out" => "to_out.0",
        _ => return None,
    };
    Some(join(&format!("{block}.{name}"), tail))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ldm_vae_names_map_to_diffusers() {
        let cases = [
            (
                "first_stage_model.decoder.up.0.block.2.nin_shortcut.weight",
                "decoder.up_blocks.3.resnets.2.conv_shortcut.weight",
            ),
            (
                "decoder.up.3.upsample.conv.bias",
                "decoder.up_blocks.0.upsamplers.0.conv.bias",
            ),
            (
                "encoder.down.1.downsample.conv.weight",
                "encoder.down_blocks.1.downsamplers.0.conv.weight",
            ),
            (
                "encoder.down.0.block.1.norm2.bias",
                "encoder.down_blocks.0.resnets.1.norm2.bias",
            ),
            (
                "encoder.mid.attn_1.q.weight",
                "encoder.mid_block.attentions.0.to_q.weight",
            ),
            (
                "decoder.mid.attn_1.proj_out.bias",
                "decoder.mid_block.attentions.0.to_out.0.bias",
            ),
            (
                "decoder.mid.attn_1.norm.weight",
                "decoder.mid_block.attentions.0.group_norm.weight",
            ),
            (
                "decoder.mid.block_2.conv1.weight",
                "decoder.mid_block.resnets.1.conv1.weight",
            ),
            ("encoder.norm_out.weight", "encoder.conv_norm_out.weight"),
            ("post_quant_conv.weight", "post_quant_conv.weight"),
        ];
        for (ldm, diffusers) in cases {
            assert_eq!(vae_module_path(ldm, 4).as_deref(), Some(diffusers), "{ldm}");
        }
        for outside in [
            "model_ema.decay",
            "encoder.up.0.block.0.conv1.weight",
            "decoder.up.4.block.0.conv1",
        ] {
            assert_eq!(vae_module_path(outside, 4), None, "{outside}");
        }
    }
}
