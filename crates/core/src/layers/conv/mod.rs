//! 2-D convolution with f32 CPU kernels.
//!
//! On the CPU the weights are re-laid out once at load as one `[C_out, C_in]`
//! matrix per kernel tap. Weights that arrive in bf16 or f16 stay in that
//! dtype and are widened to an f32 copy for each call; the bias is f32. Other
//! devices use candle's `conv2d`. The CPU path is split by concern:
//!
//! - `geometry`: the sizes of a call and its bands of output rows;
//! - `padded`: the zero-padded, phase-split copy of one band of the input
//!   (with 2× upsampling and a group norm's affine applied on the way);
//! - `direct`: the direct kernel, per-tap matrix products over that copy;
//! - `winograd`: Winograd's F(2×2, 3×3), for large 3×3 stride-1 convolutions.

mod direct;
mod geometry;
mod padded;
#[cfg(test)]
mod tests;
mod winograd;

use std::sync::Arc;

use candle_core::{CpuStorage, CustomOp1, DType, Device, Layout, Module, Result, Shape, Tensor};
use candle_nn::VarBuilder;

use super::norm::ChannelAffine;
use super::out_ptr::OutPtr;
use super::stored::StoredWeights;
use geometry::{ConvSpec, Geometry};

/// Zero padding on each side, `(top, bottom, left, right)`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Padding {
    /// Rows above.
    pub top: usize,
    /// Rows below.
    pub bottom: usize,
    /// Columns to the left.
    pub left: usize,
    /// Columns to the right.
    pub right: usize,
}

impl Padding {
    /// The same padding on all four sides.
    pub fn uniform(p: usize) -> Self {
        Self {
            top: p,
            bottom: p,
            left: p,
            right: p,
        }
    }
}

/// A square convolution with bias, as `torch.nn.Conv2d(cin, cout, k, stride, padding)`.
#[derive(Debug, Clone)]
pub struct Conv2d {
    kind: Kind,
    spec: ConvSpec,
}

#[derive(Debug, Clone)]
enum Kind {
    /// On the CPU: `taps[t][co][ci]` in the stored dtype and the bias in f32.
    Packed {
        taps: StoredWeights,
        bias: Option<Arc<[f32]>>,
    },
    /// Anything else: candle's convolution (symmetric padding only).
    Candle {
        weight: Tensor,
        bias: Option<Tensor>,
    },
}

impl Conv2d {
    /// Loads `weight` `[cout, cin, k, k]` in `vb`'s dtype and `bias` `[cout]` in f32 under `vb`.
    pub fn new(
        vb: VarBuilder,
        in_channels: usize,
        out_channels: usize,
        kernel: usize,
        stride: usize,
        padding: Padding,
    ) -> Result<Self> {
        if stride == 0 || kernel == 0 {
            candle_core::bail!("conv2d {}: kernel and stride must be positive", vb.prefix());
        }
        let weight = vb.get((out_channels, in_channels, kernel, kernel), "weight")?;
        let bias = vb.set_dtype(DType::F32).get(out_channels, "bias")?;
        Self::from_tensors(weight, Some(bias), stride, padding)
    }

    /// Builds the layer from a `[cout, cin, k, k]` weight and an optional `[cout]` bias.
    pub fn from_tensors(
        weight: Tensor,
        bias: Option<Tensor>,
        stride: usize,
        padding: Padding,
    ) -> Result<Self> {
        let (out_channels, in_channels, kernel, kw) = weight.dims4()?;
        if kernel != kw {
            candle_core::bail!("conv2d: only square kernels are supported, got {kernel}x{kw}");
        }
        let taps = if matches!(weight.device(), Device::Cpu) {
            StoredWeights::from_tensor(&weight.permute((2, 3, 0, 1))?)?
        } else {
            None
        };
        let kind = match taps {
            Some(taps) => {
                let bias = match bias {
                    Some(b) => Some(Arc::from(b.to_dtype(DType::F32)?.to_vec1::<f32>()?)),
                    None => None,
                };
                Kind::Packed { taps, bias }
            }
            None => Kind::Candle { weight, bias },
        };
        Ok(Self {
            kind,
            spec: ConvSpec {
                in_channels,
                out_channels,
                kernel,
                stride,
                padding,
            },
        })
    }

    /// Convolves `xs` `[B, C_in, H, W]`, first upsampling it 2× (nearest) when
    /// `upsample` is set, as `conv(F.interpolate(xs, scale_factor=2))`.
    pub fn forward_upsampled(&self, xs: &Tensor, upsample: bool) -> Result<Tensor> {
        let (_, c, h, w) = xs.dims4()?;
        if c != self.spec.in_channels {
            candle_core::bail!(
                "conv2d: input has {c} channels, expected {}",
                self.spec.in_channels
            );
        }
        match &self.kind {
            Kind::Packed { taps, bias } => {
                let dtype = xs.dtype();
                let xs = xs.to_dtype(DType::F32)?.contiguous()?;
                let taps = taps.to_f32();
                let op = CpuConv {
                    taps: &taps,
                    bias: bias.as_deref(),
                    spec: self.spec,
                    upsample,
                    input_affine: None,
                };
                xs.apply_op1_no_bwd(&op)?.to_dtype(dtype)
            }
            Kind::Candle { weight, bias } => {
                let xs = if upsample {
                    xs.upsample_nearest2d(2 * h, 2 * w)?
                } else {
                    xs.clone()
                };
                let p = self.spec.padding;
                let symmetric = p.top == p.left && p.top == p.bottom && p.top == p.right;
                let xs = if symmetric {
                    xs
                } else {
                    xs.pad_with_zeros(2, p.top, p.bottom)?
                        .pad_with_zeros(3, p.left, p.right)?
                };
                let pad = if symmetric { p.top } else { 0 };
                let ys = xs.conv2d(&weight.to_dtype(xs.dtype())?, pad, self.spec.stride, 1, 1)?;
                match bias {
                    Some(b) => ys.broadcast_add(&b.to_dtype(ys.dtype())?.reshape((1, (), 1, 1))?),
                    None => Ok(ys),
                }
            }
        }
    }

    /// `conv(act(xs · scale + offset))` with the per-(batch, channel) `affine`
    /// (a group norm's, see [`super::GroupNorm::channel_affine`]) and SiLU when
    /// `silu`, applied while the padded input is built, so the normed map is
    /// never stored. `None` when this layer has no CPU kernel or no padding
    /// step (1×1 without padding); the caller then normalises first.
    pub fn forward_affine(
        &self,
        xs: &Tensor,
        affine: &ChannelAffine,
        silu: bool,
    ) -> Result<Option<Tensor>> {
        let Kind::Packed { taps, bias } = &self.kind else {
            return Ok(None);
        };
        let (b, c, _, _) = xs.dims4()?;
        if xs.dtype() != DType::F32
            || self.spec.is_pointwise()
            || c != self.spec.in_channels
            || affine.scale.len() != b * c
        {
            return Ok(None);
        }
        let taps = taps.to_f32();
        let op = CpuConv {
            taps: &taps,
            bias: bias.as_deref(),
            spec: self.spec,
            upsample: false,
            input_affine: Some((affine, silu)),
        };
        Ok(Some(xs.contiguous()?.apply_op1_no_bwd(&op)?))
    }
}

impl Module for Conv2d {
    fn forward(&self, xs: &Tensor) -> Result<Tensor> {
        self.forward_upsampled(xs, false)
    }
}

/// The f32 CPU convolution as a candle op over a contiguous input.
struct CpuConv<'a> {
    /// The weights, `[k·k][cout][cin]`.
    taps: &'a [f32],
    /// `[cout]`, added to every output pixel of its channel.
    bias: Option<&'a [f32]>,
    /// The layer's sizes.
    spec: ConvSpec,
    /// Whether the input is upsampled 2× (nearest) first.
    upsample: bool,
    /// The per-(batch, channel) affine and whether SiLU follows it, applied
    /// to the input as it is padded.
    input_affine: Option<(&'a ChannelAffine, bool)>,
}

impl CustomOp1 for CpuConv<'_> {
    fn name(&self) -> &'static str {
        "direct-conv2d"
    }

    fn cpu_fwd(&self, storage: &CpuStorage, layout: &Layout) -> Result<(CpuStorage, Shape)> {
        let CpuStorage::F32(data) = storage else {
            candle_core::bail!("direct-conv2d: expected f32 input");
        };
        let Some((start, end)) = layout.contiguous_offsets() else {
            candle_core::bail!("direct-conv2d: expected a contiguous input");
        };
        let input = &data[start..end];
        let g = Geometry::new(self.spec, layout.shape().dims4()?, self.upsample)?;
        let (b, cout, ho, wo) = g.out_dims();
        let mut out = vec![0f32; b * cout * ho * wo];
        self.run(input, &g, &mut out);
        Ok((CpuStorage::F32(out), Shape::from((b, cout, ho, wo))))
    }
}

impl CpuConv<'_> {
    /// Adds the convolution of `input` (of geometry `g`) to `out`
    /// `[b, cout, ho, wo]`: the direct kernel straight on the input when it
    /// needs no padding, else band by band on padded copies, by Winograd where
    /// it pays.
    fn run(&self, input: &[f32], g: &Geometry, out: &mut [f32]) {
        let out_ptr = OutPtr::new(out);
        if g.reads_input_directly() {
            direct::convolve(self.taps, self.bias, g, g.whole_input(), input, out_ptr);
            return;
        }
        let weights = winograd::applies(g).then(|| {
            winograd::transform_weights(self.taps, g.spec.out_channels, g.spec.in_channels)
        });
        for band in g.bands() {
            let padded = padded::pad(input, g, band, self.input_affine);
            match &weights {
                Some(u) => winograd::convolve(u, self.bias, g, band, &padded, out_ptr),
                None => direct::convolve(self.taps, self.bias, g, band, &padded, out_ptr),
            }
        }
    }
}
