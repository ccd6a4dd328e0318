//! `ResnetBlock2D`: two normalised 3×3 convolutions with an optional time embedding
//! and a 1×1 shortcut when the channel count changes.

use candle_core::{CpuStorage, DType, Device, InplaceOp2, Layout, Module, Result, Tensor};
use candle_nn::{Linear, VarBuilder};

use super::{conv2d, Activation, Conv2d, GroupNorm};
use crate::interrupt::Interrupt;

/// How the time embedding enters a resnet (`resnet_time_scale_shift`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TimeEmbeddingNorm {
    /// `default`: added to the features before `norm2`.
    Default,
    /// `scale_shift`: `norm2(h) * (1 + scale) + shift`.
    ScaleShift,
}

impl TimeEmbeddingNorm {
    /// Parses diffusers' `resnet_time_scale_shift`.
    pub fn from_name(name: &str) -> std::result::Result<Self, String> {
        match name {
            "default" => Ok(Self::Default),
            "scale_shift" => Ok(Self::ScaleShift),
            other => Err(format!(
                "unsupported resnet_time_scale_shift {other:?} (expected default or scale_shift)"
            )),
        }
    }
}

/// Shape and options of a [`ResnetBlock2D`].
#[derive(Debug, Clone, Copy)]
pub struct ResnetBlock2DConfig {
    /// Input channels.
    pub in_channels: usize,
    /// Output channels.
    pub out_channels: usize,
    /// Width of the time embedding; `None` for the VAE (no `time_emb_proj`).
    pub temb_channels: Option<usize>,
    /// Groups of both group norms.
    pub groups: usize,
    /// Epsilon of both group norms.
    pub eps: f64,
    /// The non-linearity.
    pub act: Activation,
    /// How the time embedding is applied.
    pub time_embedding_norm: TimeEmbeddingNorm,
    /// The output is `(shortcut + h) / output_scale_factor`.
    pub output_scale_factor: f64,
}

/// diffusers' `ResnetBlock2D` (keys `norm1`, `conv1`, `time_emb_proj`, `norm2`, `conv2`,
/// `conv_shortcut`).
#[derive(Debug, Clone)]
pub struct ResnetBlock2D {
    norm1: GroupNorm,
    conv1: Conv2d,
    time_emb_proj: Option<Linear>,
    norm2: GroupNorm,
    conv2: Conv2d,
    conv_shortcut: Option<Conv2d>,
    cfg: ResnetBlock2DConfig,
}

impl ResnetBlock2D {
    /// Loads the block's weights under `vb`.
    pub fn new(vb: VarBuilder, cfg: &ResnetBlock2DConfig) -> Result<Self> {
        let (cin, cout) = (cfg.in_channels, cfg.out_channels);
        let time_emb_proj = match cfg.temb_channels {
            Some(t) => {
                let width = match cfg.time_embedding_norm {
                    TimeEmbeddingNorm::Default => cout,
                    TimeEmbeddingNorm::ScaleShift => 2 * cout,
                };
                // Small and run once per step: kept in f32.
                let vb = vb.clone().set_dtype(DType::F32);
                Some(candle_nn::linear(t, width, vb.pp("time_emb_proj"))?)
            }
            None => None,
        };
        let conv_shortcut = if cin != cout {
            Some(conv2d(vb.pp("conv_shortcut"), cin, cout, 1, 1, 0)?)
        } else {
            None
        };
        Ok(Self {
            norm1: GroupNorm::new(vb.pp("norm1"), cfg.groups, cin, cfg.eps)?,
            conv1: conv2d(vb.pp("conv1"), cin, cout, 3, 1, 1)?,
            time_emb_proj,
            norm2: GroupNorm::new(vb.pp("norm2"), cfg.groups, cout, cfg.eps)?,
            conv2: conv2d(vb.pp("conv2"), cout, cout, 3, 1, 1)?,
            conv_shortcut,
            cfg: *cfg,
        })
    }

    /// `xs` `[B, in_channels, H, W]`, `temb` `[B, temb_channels]` → `[B, out_channels, H, W]`.
    ///
    /// `temb` is required when the block has a `time_emb_proj` and ignored
    /// otherwise. Stops between its two convolutions once `interrupt` is raised.
    pub fn forward(
        &self,
        xs: &Tensor,
        temb: Option<&Tensor>,
        interrupt: Interrupt<'_>,
    ) -> Result<Tensor> {
        let act = self.cfg.act;
        let temb = match (&self.time_emb_proj, temb) {
            (Some(proj), Some(temb)) => Some(proj.forward(&act.forward(temb)?)?),
            (Some(_), None) => {
                candle_core::bail!("resnet block: a time embedding is required but none was given")
            }
            (None, _) => None,
        };
        // One binding, reassigned, so the first convolution's map is freed as
        // soon as the second exists (shadowing would keep it to the end).
        let mut hs = norm_act_conv(&self.norm1, &self.conv1, xs, None, act)?;
        interrupt.check()?;
        hs = match (self.cfg.time_embedding_norm, temb) {
            (TimeEmbeddingNorm::ScaleShift, Some(t)) => {
                let t = t.to_dtype(hs.dtype())?;
                let cout = self.cfg.out_channels;
                let scale = t.narrow(1, 0, cout)?.unsqueeze(2)?.unsqueeze(3)?;
                let shift = t.narrow(1, cout, cout)?.unsqueeze(2)?.unsqueeze(3)?;
                let normed = self
                    .norm2
                    .forward(&hs)?
                    .broadcast_mul(&(scale + 1.0)?)?
                    .broadcast_add(&shift)?;
                self.conv2.forward(&act.forward(&normed)?)?
            }
            (_, t) => norm_act_conv(&self.norm2, &self.conv2, &hs, t.as_ref(), act)?,
        };
        let shortcut = match &self.conv_shortcut {
            Some(conv) => conv.forward(xs)?,
            None => xs.clone(),
        };
        let out = add_in_place(hs, &shortcut)?;
        if self.cfg.output_scale_factor == 1.0 {
            Ok(out)
        } else {
            out / self.cfg.output_scale_factor
        }
    }
}

/// `conv(act(norm(xs + shift)))`. With SiLU on the f32 CPU path the norm is
/// applied while the convolution pads its input, so the normed map is never
/// stored; otherwise the steps run one after the other.
pub(crate) fn norm_act_conv(
    norm: &GroupNorm,
    conv: &Conv2d,
    xs: &Tensor,
    shift: Option<&Tensor>,
    act: Activation,
) -> Result<Tensor> {
    let silu = act == Activation::Silu;
    if silu {
        if let Some(affine) = norm.channel_affine(xs, shift)? {
            if let Some(out) = conv.forward_affine(xs, &affine, true)? {
                return Ok(out);
            }
        }
    }
    let hs = norm.forward_shifted(xs, shift, silu)?;
    let hs = if silu { hs } else { act.forward(&hs)? };
    conv.forward(&hs)
}

/// `acc + other`, added into `acc`'s own buffer when `acc` is a contiguous f32
/// CPU tensor of `other`'s shape (a fresh convolution output, owned here), so the
/// largest maps of a VAE decode need no third buffer for their sum.
pub(crate) fn add_in_place(acc: Tensor, other: &Tensor) -> Result<Tensor> {
    let in_place = acc.dtype() == DType::F32
        && other.dtype() == DType::F32
        && matches!(acc.device(), Device::Cpu)
        && acc.shape() == other.shape()
        && acc.is_contiguous()
        && other.is_contiguous();
    if !in_place {
        return acc + other;
    }
    acc.inplace_op2(other, &AddAssign)?;
    Ok(acc)
}

/// `lhs += rhs` over two contiguous f32 buffers of one shape.
struct AddAssign;

impl InplaceOp2 for AddAssign {
    fn name(&self) -> &'static str {
        "add-assign"
    }

    fn cpu_fwd(
        &self,
        s1: &mut CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
    ) -> Result<()> {
        let (CpuStorage::F32(lhs), CpuStorage::F32(rhs)) = (s1, s2) else {
            candle_core::bail!("add-assign: f32 tensors only");
        };
        let (Some((a0, a1)), Some((b0, b1))) = (l1.contiguous_offsets(), l2.contiguous_offsets())
        else {
            candle_core::bail!("add-assign: contiguous tensors only");
        };
        if a1 - a0 != b1 - b0 {
            candle_core::bail!("add-assign: {} values += {} values", a1 - a0, b1 - b0);
        }
        use rayon::prelude::*;
        lhs[a0..a1]
            .par_chunks_mut(1 << 16)
            .zip(rhs[b0..b1].par_chunks(1 << 16))
            .for_each(|(l, r)| l.iter_mut().zip(r).for_each(|(l, r)| *l += r));
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn add_in_place_matches_a_plain_sum_and_reuses_the_buffer() {
        let dev = Device::Cpu;
        let a = Tensor::arange(0f32, 24.0, &dev)
            .unwrap()
            .reshape((1, 2, 3, 4))
            .unwrap();
        let b = (Tensor::ones((1, 2, 3, 4), DType::F32, &dev).unwrap() * 0.5).unwrap();
        let want = (&a + &b)
            .unwrap()
            .flatten_all()
            .unwrap()
            .to_vec1::<f32>()
            .unwrap();
        let acc = a.copy().unwrap();
        let sum = add_in_place(acc.clone(), &b).unwrap();
        assert_eq!(sum.flatten_all().unwrap().to_vec1::<f32>().unwrap(), want);
        let acc = acc.flatten_all().unwrap().to_vec1::<f32>().unwrap();
        assert_eq!(acc, want, "the sum is written into the first buffer");
        let strided = a.transpose(2, 3).unwrap();
        let other = b.transpose(2, 3).unwrap().copy().unwrap();
        let want = (&strided + &other).unwrap();
        let sum = add_in_place(strided.clone(), &other).unwrap();
        assert_eq!(
            a.flatten_all().unwrap().to_vec1::<f32>().unwrap(),
            (0..24).map(|v| v as f32).collect::<Vec<_>>(),
            "a strided input is left alone"
        );
        assert_eq!(
            sum.flatten_all().unwrap().to_vec1::<f32>().unwrap(),
            want.flatten_all().unwrap().to_vec1::<f32>().unwrap()
        );
    }
}
