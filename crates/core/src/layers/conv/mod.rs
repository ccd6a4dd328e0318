//! 2-D convolution with f32 CPU kernels.
//!
//! On the CPU the weights are re-laid out once at load as one `[C_out, C_in]`
//! matrix per kernel tap. Weights that arrive in bf16 are packed for the bf16
//! kernel where the CPU has one (see [`super::bf16`]); otherwise bf16 or f16
//! weights stay in that dtype and are widened to an f32 copy for each call.
//! The bias is f32. Activations of another dtype (f16/bf16 compute) are
//! widened to f32 for these kernels and the result rounded back, as a GPU's
//! half-precision convolution sums in f32. Other devices use candle's
//! `conv2d` in the activations' dtype. The CPU path is split by concern:
//!
//! - `geometry`: the sizes of a call and its bands of output rows;
//! - `padded`: the zero-padded, phase-split copy of one band of the input
//!   (with 2× upsampling and a group norm's affine applied on the way);
//! - `direct`: the direct kernel, per-tap matrix products over that copy;
//! - `winograd`: Winograd's F(4×4, 3×3) and F(2×2, 3×3), for 3×3 stride-1
//!   convolutions over enough output tiles (down to a UNet's 8² maps).

mod direct;
mod geometry;
mod padded;
#[cfg(test)]
mod tests;
mod winograd;

use std::sync::Arc;

use candle_core::{CpuStorage, CustomOp1, DType, Device, Layout, Module, Result, Shape, Tensor};
use candle_nn::VarBuilder;

use super::bf16::{self, Bf16Kernel, PairLayout, PairMatrix};
use super::norm::ChannelAffine;
use super::out_ptr::OutPtr;
use super::stored::StoredWeights;
use super::work;
use direct::Operands;
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
    /// On the CPU with the bf16 kernel: one `cin × cout` pair matrix per tap
    /// and the bias in f32.
    Pairs {
        taps: Arc<[PairMatrix]>,
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

    /// Builds the layer from a `[cout, cin, k, k]` weight and an optional
    /// `[cout]` bias; a bf16 weight on the CPU runs on [`bf16::kernel`].
    pub fn from_tensors(
        weight: Tensor,
        bias: Option<Tensor>,
        stride: usize,
        padding: Padding,
    ) -> Result<Self> {
        Self::with_kernel(weight, bias, stride, padding, bf16::kernel())
    }

    /// [`Conv2d::from_tensors`] with the kernel for a bf16 weight given.
    fn with_kernel(
        weight: Tensor,
        bias: Option<Tensor>,
        stride: usize,
        padding: Padding,
        kernel_choice: Bf16Kernel,
    ) -> Result<Self> {
        let (out_channels, in_channels, kernel, kw) = weight.dims4()?;
        if kernel != kw {
            candle_core::bail!("conv2d: only square kernels are supported, got {kernel}x{kw}");
        }
        let cpu = matches!(weight.device(), Device::Cpu);
        let bias_f32 = |bias: Option<Tensor>| -> Result<Option<Arc<[f32]>>> {
            Ok(match bias {
                Some(b) => Some(Arc::from(b.to_dtype(DType::F32)?.to_vec1::<f32>()?)),
                None => None,
            })
        };
        let kind =
            if cpu && weight.dtype() == DType::BF16 && kernel_choice == Bf16Kernel::Avx512Bf16 {
                // Per tap, the `cin × cout` matrix of weight[co][ci].
                let taps = weight
                    .permute((2, 3, 1, 0))?
                    .to_dtype(DType::F32)?
                    .contiguous()?
                    .flatten_all()?
                    .to_vec1::<f32>()?;
                let taps = taps
                    .chunks_exact(in_channels * out_channels)
                    .map(|t| PairMatrix::from_rows(t, in_channels, out_channels))
                    .collect();
                Kind::Pairs {
                    taps,
                    bias: bias_f32(bias)?,
                }
            } else {
                let taps = if cpu {
                    StoredWeights::from_tensor(&weight.permute((2, 3, 0, 1))?)?
                } else {
                    None
                };
                match taps {
                    Some(taps) => Kind::Packed {
                        taps,
                        bias: bias_f32(bias)?,
                    },
                    None => {
                        // Added by candle in the weight's dtype (the compute
                        // dtype off the CPU): cast once here, not per call.
                        let bias = bias.map(|b| b.to_dtype(weight.dtype())).transpose()?;
                        Kind::Candle { weight, bias }
                    }
                }
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
            Kind::Packed { .. } | Kind::Pairs { .. } => {
                let dtype = xs.dtype();
                let xs = xs.to_dtype(DType::F32)?.contiguous()?;
                let (taps, bias) = self.cpu_taps();
                let op = CpuConv {
                    taps: taps.as_ref(),
                    bias,
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
        if matches!(self.kind, Kind::Candle { .. }) {
            return Ok(None);
        }
        let (b, c, _, _) = xs.dims4()?;
        if xs.dtype() != DType::F32
            || self.spec.is_pointwise()
            || c != self.spec.in_channels
            || affine.scale.len() != b * c
        {
            return Ok(None);
        }
        let (taps, bias) = self.cpu_taps();
        let op = CpuConv {
            taps: taps.as_ref(),
            bias,
            spec: self.spec,
            upsample: false,
            input_affine: Some((affine, silu)),
        };
        Ok(Some(xs.contiguous()?.apply_op1_no_bwd(&op)?))
    }
}

impl Conv2d {
    /// The CPU kernels' weights (f32 taps widened from 16 bits, or the bf16
    /// pairs) and bias; only called for the CPU kinds.
    fn cpu_taps(&self) -> (TapsHolder<'_>, Option<&[f32]>) {
        match &self.kind {
            Kind::Packed { taps, bias } => (TapsHolder::F32(taps.to_f32()), bias.as_deref()),
            Kind::Pairs { taps, bias } => (TapsHolder::Pairs(taps), bias.as_deref()),
            Kind::Candle { .. } => (TapsHolder::F32(std::borrow::Cow::Borrowed(&[])), None),
        }
    }
}

/// The weights of one CPU call, owning a widened copy where one was made.
enum TapsHolder<'a> {
    F32(std::borrow::Cow<'a, [f32]>),
    Pairs(&'a [PairMatrix]),
}

impl TapsHolder<'_> {
    fn as_ref(&self) -> Taps<'_> {
        match self {
            Self::F32(t) => Taps::F32(t),
            Self::Pairs(t) => Taps::Pairs(t),
        }
    }
}

/// The weights the CPU kernels read.
#[derive(Clone, Copy)]
enum Taps<'a> {
    /// `[k·k][cout][cin]` in f32.
    F32(&'a [f32]),
    /// One `cin × cout` pair matrix per tap.
    Pairs(&'a [PairMatrix]),
}

/// Frees the buffer the Winograd path keeps between calls for the transformed
/// weights (up to 128 MB): for the pipeline to call when the UNet steps are
/// done, before the VAE's own large allocations.
pub(crate) fn release_buffers() {
    winograd::release_buffer();
}

impl Module for Conv2d {
    fn forward(&self, xs: &Tensor) -> Result<Tensor> {
        self.forward_upsampled(xs, false)
    }
}

/// The f32 CPU convolution as a candle op over a contiguous input.
struct CpuConv<'a> {
    /// The weights.
    taps: Taps<'a>,
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
        let (b, cin, cout) = (g.batch, g.spec.in_channels, g.spec.out_channels);
        if g.reads_input_directly() {
            let operands_input;
            let operands = match self.taps {
                Taps::F32(taps) => Operands::F32 {
                    taps,
                    source: input,
                },
                Taps::Pairs(taps) => {
                    operands_input = pack_channels(input, b, cin, g.height * g.width);
                    Operands::Bf16 {
                        taps,
                        source: &operands_input,
                    }
                }
            };
            self.record_work(g, g.whole_input(), None);
            direct::convolve(operands, self.bias, g, g.whole_input(), out_ptr);
            return;
        }
        let bf16 = matches!(self.taps, Taps::Pairs(_));
        let Some(tile) = winograd::tile_for(g, bf16) else {
            for band in g.bands() {
                let padded = padded::pad(input, g, band, self.input_affine);
                self.record_work(g, band, None);
                let operands = match self.taps {
                    Taps::F32(taps) => Operands::F32 {
                        taps,
                        source: &padded,
                    },
                    Taps::Pairs(taps) => Operands::Bf16 {
                        taps,
                        source: &pack_channels(&padded, b, cin, padded.len() / (b * cin).max(1)),
                    },
                };
                direct::convolve(operands, self.bias, g, band, out_ptr);
            }
            return;
        };
        let widened;
        let taps = match self.taps {
            Taps::F32(taps) => taps,
            Taps::Pairs(taps) => {
                widened = widen_taps(taps);
                &widened
            }
        };
        let weights = winograd::Weights::new(tile, taps, (cout, cin), bf16);
        for band in g.bands() {
            let padded = padded::pad(input, g, band, self.input_affine);
            self.record_work(g, band, Some(tile));
            winograd::convolve(&weights, self.bias, g, band, &padded, out_ptr);
        }
    }
}

impl CpuConv<'_> {
    /// Counts the multiply-adds of `band` as the kernel does them: per tap
    /// over the padded row width (direct), or alpha² per tile (Winograd).
    fn record_work(&self, g: &Geometry, band: geometry::Band, winograd: Option<winograd::Tile>) {
        let (cin, cout, k) = (g.spec.in_channels, g.spec.out_channels, g.spec.kernel);
        let (bf16, summed) = match self.taps {
            Taps::F32(_) => (false, cin),
            Taps::Pairs(_) => (true, 2 * cin.div_ceil(2)),
        };
        let products = match winograd {
            Some(tile) => {
                let m = tile.m();
                tile.products() * band.rows.div_ceil(m) * g.out_width.div_ceil(m)
            }
            None => k * k * band.rows * g.phase_width,
        };
        work::record(bf16, g.batch * cout * summed * products);
    }
}

/// `[b][c][plane]` f32 values as `[b][⌈c/2⌉][plane]` bf16 pairs of channels.
fn pack_channels(input: &[f32], b: usize, c: usize, plane: usize) -> Vec<u32> {
    use rayon::prelude::*;
    let kp = c.div_ceil(2);
    let mut pairs = vec![0u32; b * kp * plane];
    pairs
        .par_chunks_mut(plane.max(1))
        .enumerate()
        .for_each(|(row, dst)| {
            let (bi, p) = (row / kp, row % kp);
            let channels = (2 * p)..(2 * p + 2).min(c);
            let src = &input[(bi * c + channels.start) * plane..(bi * c + channels.end) * plane];
            let layout = PairLayout {
                p_stride: plane,
                n_stride: 1,
            };
            bf16::pack_pairs(src, (channels.len(), plane), (plane, 1), dst, layout);
        });
    pairs
}

/// Pair-matrix taps (`cin × cout` each) widened back to f32 `[k·k][cout][cin]`.
fn widen_taps(taps: &[PairMatrix]) -> Vec<f32> {
    let mut out = Vec::new();
    for tap in taps {
        let (cin, cout) = (tap.k(), tap.n());
        let values = tap.to_f32();
        let start = out.len();
        out.resize(start + cin * cout, 0.0);
        for ci in 0..cin {
            for co in 0..cout {
                out[start + co * cin + ci] = values[ci * cout + co];
            }
        }
    }
    out
}
