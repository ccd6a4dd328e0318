//! Group normalisation with an optional fused SiLU and per-channel input shift.
//!
//! On the CPU in f32 one pass gathers each group's statistics and a second
//! writes `act((x + shift − mean) · rstd · γ + β)`, instead of candle-nn's chain
//! of broadcast temporaries. Other devices and dtypes use `candle_nn::GroupNorm`;
//! half-precision maps are normed in f32 and rounded back. [`LayerNorm`] keeps
//! its weights in f32 the same way.

use candle_core::{CpuStorage, CustomOp1, DType, Device, Layout, Module, Result, Shape, Tensor};
use candle_nn::VarBuilder;
use rayon::prelude::*;

use super::{is_half, kernels};

/// `torch.nn.GroupNorm(groups, channels, eps)` with affine weights.
#[derive(Debug, Clone)]
pub struct GroupNorm {
    inner: candle_nn::GroupNorm,
    packed: Option<(Vec<f32>, Vec<f32>)>,
    groups: usize,
    channels: usize,
    eps: f64,
}

impl GroupNorm {
    /// Loads `weight` and `bias` `[channels]` under `vb`, always as f32.
    pub fn new(vb: VarBuilder, groups: usize, channels: usize, eps: f64) -> Result<Self> {
        let vb = vb.set_dtype(DType::F32);
        if groups == 0 || !channels.is_multiple_of(groups) {
            candle_core::bail!(
                "group norm {}: {channels} channels cannot be split into {groups} groups",
                vb.prefix()
            );
        }
        let inner = candle_nn::group_norm(groups, channels, eps, vb.clone())?;
        let weight = vb.get(channels, "weight")?;
        let packed = if weight.dtype() == DType::F32 && matches!(weight.device(), Device::Cpu) {
            let bias = vb.get(channels, "bias")?;
            Some((weight.to_vec1::<f32>()?, bias.to_vec1::<f32>()?))
        } else {
            None
        };
        Ok(Self {
            inner,
            packed,
            groups,
            channels,
            eps,
        })
    }

    /// `xs` `[B, C, ...]` → `norm(xs)`, followed by SiLU when `silu` is set.
    pub fn forward_act(&self, xs: &Tensor, silu: bool) -> Result<Tensor> {
        self.forward_shifted(xs, None, silu)
    }

    /// `norm(xs + shift)` (then SiLU when `silu`), where `shift` `[B, C]` is added
    /// to every position of its channel first, as `norm(h + temb[:, :, None, None])`.
    pub fn forward_shifted(
        &self,
        xs: &Tensor,
        shift: Option<&Tensor>,
        silu: bool,
    ) -> Result<Tensor> {
        let dims = xs.dims();
        if dims.len() < 3 || dims[1] != self.channels {
            candle_core::bail!(
                "group norm: input has shape {dims:?}, expected [B, {}, ...]",
                self.channels
            );
        }
        let b = dims[0];
        match &self.packed {
            Some((weight, bias)) if xs.dtype() == DType::F32 => {
                let shift = match shift {
                    Some(t) => {
                        if t.dims() != [b, self.channels] {
                            candle_core::bail!(
                                "group norm: shift has shape {:?}, expected [{b}, {}]",
                                t.dims(),
                                self.channels
                            );
                        }
                        Some(t.to_dtype(DType::F32)?.flatten_all()?.to_vec1::<f32>()?)
                    }
                    None => None,
                };
                let op = GroupNormOp {
                    params: self.params(weight, bias, shift.as_deref()),
                    silu,
                };
                xs.contiguous()?.apply_op1_no_bwd(&op)
            }
            _ => {
                // Half-precision maps are normed in f32 (statistics, affine and
                // SiLU) and rounded back once, as the weights are f32.
                let dtype = xs.dtype();
                let wide = is_half(dtype);
                let xs = if wide {
                    xs.to_dtype(DType::F32)?
                } else {
                    xs.clone()
                };
                let xs = match shift {
                    Some(t) => {
                        let mut shape = vec![1; dims.len()];
                        shape[0] = b;
                        shape[1] = self.channels;
                        xs.broadcast_add(&t.to_dtype(xs.dtype())?.reshape(shape)?)?
                    }
                    None => xs,
                };
                let ys = self.inner.forward(&xs)?;
                let ys = if silu { ys.silu()? } else { ys };
                if wide {
                    ys.to_dtype(dtype)
                } else {
                    Ok(ys)
                }
            }
        }
    }
}

/// A per-(batch, channel) affine map `x · scale + offset`: a group norm with
/// its statistics taken, ready to be applied while another kernel reads `x`.
#[derive(Debug, Clone)]
pub struct ChannelAffine {
    /// `[B·C]` multipliers.
    pub scale: Vec<f32>,
    /// `[B·C]` offsets.
    pub offset: Vec<f32>,
}

impl GroupNorm {
    /// The statistics of `norm(xs + shift)` as a [`ChannelAffine`] on `xs`, for
    /// a consumer that applies it on the fly (f32 on the CPU only; `None`
    /// elsewhere, where the caller runs [`GroupNorm::forward_shifted`]).
    pub fn channel_affine(
        &self,
        xs: &Tensor,
        shift: Option<&Tensor>,
    ) -> Result<Option<ChannelAffine>> {
        let Some((weight, bias)) = &self.packed else {
            return Ok(None);
        };
        let dims = xs.dims();
        if xs.dtype() != DType::F32 || dims.len() < 3 || dims[1] != self.channels {
            return Ok(None);
        }
        let b = dims[0];
        let shift = match shift {
            Some(t) if t.dims() == [b, self.channels] => {
                Some(t.to_dtype(DType::F32)?.flatten_all()?.to_vec1::<f32>()?)
            }
            Some(_) => return Ok(None),
            None => None,
        };
        let xs = xs.contiguous()?;
        let (storage, layout) = xs.storage_and_layout();
        let candle_core::Storage::Cpu(CpuStorage::F32(data)) = &*storage else {
            return Ok(None);
        };
        let Some((start, end)) = layout.contiguous_offsets() else {
            return Ok(None);
        };
        let spatial: usize = dims[2..].iter().product();
        let params = self.params(weight, bias, shift.as_deref());
        Ok(Some(affine_of(
            params,
            &data[start..end],
            self.channels,
            spatial,
        )))
    }

    /// The f32 kernels' parameters: this layer's packed `weight` and `bias`,
    /// groups and epsilon, with the call's `shift`.
    fn params<'a>(
        &self,
        weight: &'a [f32],
        bias: &'a [f32],
        shift: Option<&'a [f32]>,
    ) -> GroupNormParams<'a> {
        GroupNormParams {
            weight,
            bias,
            shift,
            groups: self.groups,
            eps: self.eps,
        }
    }
}

/// A group norm's parameters as the f32 kernels read them, borrowed from the
/// layer and the call, so that [`affine_of`] takes only them, the input and
/// its sizes.
#[derive(Clone, Copy)]
struct GroupNormParams<'a> {
    /// `[C]` γ.
    weight: &'a [f32],
    /// `[C]` β.
    bias: &'a [f32],
    /// `[B·C]` values added to every position of their channel first.
    shift: Option<&'a [f32]>,
    /// Groups the channels are split into.
    groups: usize,
    /// Added to the variance.
    eps: f64,
}

/// The per-(batch, channel) affine of the group norm `params` over `input`
/// `[B, c, spatial]` (plus the per-(batch, channel) shift), with statistics in
/// f64.
fn affine_of(params: GroupNormParams, input: &[f32], c: usize, spatial: usize) -> ChannelAffine {
    let GroupNormParams {
        weight,
        bias,
        shift,
        groups,
        eps,
    } = params;
    let per_group = c / groups;
    let group_len = per_group * spatial;
    let pairs: Vec<(f32, f32)> = input
        .par_chunks(group_len)
        .enumerate()
        .flat_map_iter(|(index, src)| {
            let (bi, g) = (index / groups, index % groups);
            let c0 = g * per_group;
            let shift = move |ci: usize| shift.map_or(0.0, |s| s[bi * c + c0 + ci]);
            // Mean and variance around a per-group pivot, in f64.
            let pivot = src[0] + shift(0);
            let mut moments = [0f64; 2];
            for ci in 0..per_group {
                let row = &src[ci * spatial..(ci + 1) * spatial];
                kernels::shifted_moments(row, pivot - shift(ci), &mut moments);
            }
            let n = group_len as f64;
            let mean_d = moments[0] / n;
            let var = (moments[1] / n - mean_d * mean_d).max(0.0);
            let mean = f64::from(pivot) + mean_d;
            let rstd = 1.0 / (var + eps).sqrt();
            (0..per_group).map(move |ci| {
                let ch = c0 + ci;
                let w = f64::from(weight[ch]);
                let scale = (rstd * w) as f32;
                let offset =
                    (f64::from(bias[ch]) - (mean - f64::from(shift(ci))) * rstd * w) as f32;
                (scale, offset)
            })
        })
        .collect();
    let (scale, offset) = pairs.into_iter().unzip();
    ChannelAffine { scale, offset }
}

impl Module for GroupNorm {
    fn forward(&self, xs: &Tensor) -> Result<Tensor> {
        self.forward_act(xs, false)
    }
}

/// The f32 CPU group norm (then SiLU when `silu`) as a candle op.
struct GroupNormOp<'a> {
    params: GroupNormParams<'a>,
    silu: bool,
}

impl CustomOp1 for GroupNormOp<'_> {
    fn name(&self) -> &'static str {
        "group-norm"
    }

    fn cpu_fwd(&self, storage: &CpuStorage, layout: &Layout) -> Result<(CpuStorage, Shape)> {
        let CpuStorage::F32(data) = storage else {
            candle_core::bail!("group-norm: expected f32 input");
        };
        let Some((start, end)) = layout.contiguous_offsets() else {
            candle_core::bail!("group-norm: expected a contiguous input");
        };
        let input = &data[start..end];
        let dims = layout.shape().dims();
        let c = dims[1];
        let spatial: usize = dims[2..].iter().product();
        let affine = affine_of(self.params, input, c, spatial);
        let mut out = vec![0f32; input.len()];
        out.par_chunks_mut(spatial)
            .zip(input.par_chunks(spatial))
            .enumerate()
            .for_each(|(row, (dst, src))| {
                kernels::affine_silu(dst, src, affine.scale[row], affine.offset[row], self.silu);
            });
        Ok((CpuStorage::F32(out), layout.shape().clone()))
    }
}

/// `torch.nn.LayerNorm(dim, eps)` over the last dimension, with its weight and
/// bias kept in f32: a half-precision input is normed in f32 and rounded back.
#[derive(Debug, Clone)]
pub struct LayerNorm {
    inner: candle_nn::LayerNorm,
}

impl LayerNorm {
    /// Loads `weight` and `bias` `[dim]` under `vb`, always as f32.
    pub fn new(vb: VarBuilder, dim: usize, eps: f64) -> Result<Self> {
        Ok(Self {
            inner: candle_nn::layer_norm(dim, eps, vb.set_dtype(DType::F32))?,
        })
    }
}

impl Module for LayerNorm {
    fn forward(&self, xs: &Tensor) -> Result<Tensor> {
        let dtype = xs.dtype();
        if is_half(dtype) {
            self.inner
                .forward(&xs.to_dtype(DType::F32)?)?
                .to_dtype(dtype)
        } else {
            self.inner.forward(xs)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_nn::VarMap;

    /// The fused kernel matches candle-nn's group norm (plus shift and SiLU).
    #[test]
    fn matches_candle_group_norm() -> Result<()> {
        let dev = Device::Cpu;
        let map = VarMap::new();
        let vb = VarBuilder::from_varmap(&map, DType::F32, &dev);
        let norm = GroupNorm::new(vb, 4, 12, 1e-5)?;
        for var in map.all_vars() {
            var.set(&(Tensor::randn(0f32, 1.0, var.shape(), &dev)? + 1.0)?)?;
        }
        let vb = VarBuilder::from_varmap(&map, DType::F32, &dev);
        let norm_loaded = GroupNorm::new(vb, 4, 12, 1e-5)?;
        drop(norm);
        let xs = (Tensor::randn(0f32, 3.0, (2, 12, 5, 3), &dev)? + 7.0)?;
        let shift = Tensor::randn(0f32, 1.0, (2, 12), &dev)?;
        let shifted = xs.broadcast_add(&shift.reshape((2, 12, 1, 1))?)?;
        let want = norm_loaded.inner.forward(&shifted)?.silu()?;
        let got = norm_loaded.forward_shifted(&xs, Some(&shift), true)?;
        let diff = (got - want)?.abs()?.max_all()?.to_scalar::<f32>()?;
        assert!(diff < 1e-5, "{diff}");
        let want = norm_loaded.inner.forward(&xs)?;
        let got = norm_loaded.forward(&xs)?;
        let diff = (got - want)?.abs()?.max_all()?.to_scalar::<f32>()?;
        assert!(diff < 1e-5, "{diff}");
        Ok(())
    }
}
