//! Linear layers and pointwise projections with the bias (and a residual) folded
//! into the matrix product.
//!
//! On the CPU in f32 the output buffer is first filled with the bias (plus the
//! residual, when there is one) and the product is accumulated into it by one
//! GEMM, so neither costs a pass of its own. The projections between a
//! `[B, C, H, W]` feature map and `[B, H·W, C]` tokens read and write through
//! strides, so no permuted copy is made. A bf16 or f16 weight stays in that
//! dtype and is widened to an f32 copy for each call (the bias is kept in f32).
//! Other devices and activation dtypes use candle's ops.

use std::borrow::Cow;

use candle_core::{CpuStorage, CustomOp3, DType, Device, Layout, Module, Result, Shape, Tensor};
use candle_nn::VarBuilder;

use super::stored;

/// `torch.nn.Linear(in, out, bias)`, or a 1×1 convolution used as one.
///
/// On the CPU path the weight is kept transposed (`[in, out]`, out
/// contiguous) in its own dtype (f32, bf16 or f16), the layout GEMM reads
/// without repacking when there are few input rows (text encoders, the UNet's
/// coarsest levels).
#[derive(Debug, Clone)]
pub struct Linear {
    /// `[out, in]`, or `[in, out]` when `transposed`.
    weight: Tensor,
    transposed: bool,
    bias: Option<Tensor>,
    /// The bias as f32 values, for the CPU kernel.
    bias_f32: Option<Vec<f32>>,
}

/// How the input and output of a [`Linear`] are laid out.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Mode {
    /// `[.., in]` → `[.., out]`.
    Rows,
    /// `[B, in, H, W]` → `[B, H·W, out]`.
    MapToTokens,
    /// `[B, H·W, in]` → `[B, out, H, W]` (plus a `[B, out, H, W]` residual).
    TokensToMap { h: usize, w: usize },
}

impl Linear {
    /// Loads `weight` `[out, in]` in `vb`'s dtype and, when `bias`, `bias` `[out]` in f32.
    pub fn new(vb: VarBuilder, in_dim: usize, out_dim: usize, bias: bool) -> Result<Self> {
        let weight = vb.get((out_dim, in_dim), "weight")?;
        let bias = if bias {
            Some(vb.set_dtype(DType::F32).get(out_dim, "bias")?)
        } else {
            None
        };
        Self::from_tensors(weight, bias)
    }

    /// Loads a 1×1 convolution (`weight` `[out, in, 1, 1]`, `bias` `[out]`) as a linear layer.
    pub fn pointwise_conv(vb: VarBuilder, in_dim: usize, out_dim: usize) -> Result<Self> {
        let weight = vb.get((out_dim, in_dim, 1, 1), "weight")?.flatten_from(1)?;
        let bias = vb.set_dtype(DType::F32).get(out_dim, "bias")?;
        Self::from_tensors(weight, Some(bias))
    }

    /// Builds the layer from a `[out, in]` weight and an optional `[out]` bias.
    pub fn from_tensors(weight: Tensor, bias: Option<Tensor>) -> Result<Self> {
        let (out_dim, _) = weight.dims2()?;
        if let Some(b) = &bias {
            if b.dims() != [out_dim] {
                candle_core::bail!(
                    "linear: bias {:?} does not match {out_dim} outputs",
                    b.dims()
                );
            }
        }
        let fast = matches!(weight.dtype(), DType::F32 | DType::BF16 | DType::F16)
            && matches!(weight.device(), Device::Cpu);
        let bias_f32 = match &bias {
            Some(b) if fast => Some(b.to_dtype(DType::F32)?.to_vec1::<f32>()?),
            _ => None,
        };
        let weight = if fast {
            weight.t()?.contiguous()?
        } else {
            weight.contiguous()?
        };
        Ok(Self {
            weight,
            transposed: fast,
            bias,
            bias_f32,
        })
    }

    /// `xs · Wᵀ + b + residual` over the last dimension; `residual` has the output's shape.
    pub fn forward_residual(&self, xs: &Tensor, residual: Option<&Tensor>) -> Result<Tensor> {
        self.run(xs, residual, Mode::Rows)
    }

    /// A feature map `[B, in, H, W]` projected to tokens `[B, H·W, out]`.
    pub fn map_to_tokens(&self, xs: &Tensor) -> Result<Tensor> {
        self.run(xs, None, Mode::MapToTokens)
    }

    /// Tokens `[B, H·W, in]` projected back to a feature map `[B, out, H, W]`,
    /// plus `residual` `[B, out, H, W]`.
    pub fn tokens_to_map(
        &self,
        xs: &Tensor,
        h: usize,
        w: usize,
        residual: Option<&Tensor>,
    ) -> Result<Tensor> {
        self.run(xs, residual, Mode::TokensToMap { h, w })
    }

    fn run(&self, xs: &Tensor, residual: Option<&Tensor>, mode: Mode) -> Result<Tensor> {
        let fast = self.transposed
            && xs.dtype() == DType::F32
            && matches!(xs.device(), Device::Cpu)
            && (self.bias.is_none() || self.bias_f32.is_some());
        if !fast {
            return self.fallback(xs, residual, mode);
        }
        let op = LinearOp {
            bias: self.bias_f32.as_deref(),
            mode,
        };
        let residual = match residual {
            Some(r) => r.to_dtype(DType::F32)?.contiguous()?,
            // An empty tensor stands for "no residual".
            None => Tensor::zeros(0, DType::F32, xs.device())?,
        };
        xs.contiguous()?
            .apply_op3_no_bwd(&self.weight, &residual, &op)
    }

    /// The same computation with candle's ops (other devices and dtypes).
    fn fallback(&self, xs: &Tensor, residual: Option<&Tensor>, mode: Mode) -> Result<Tensor> {
        let project = |t: &Tensor| -> Result<Tensor> {
            let wt = if self.transposed {
                self.weight.clone()
            } else {
                self.weight.t()?
            };
            let ys = t.broadcast_matmul(&wt.to_dtype(t.dtype())?)?;
            match &self.bias {
                Some(b) => ys.broadcast_add(b),
                None => Ok(ys),
            }
        };
        let ys = match mode {
            Mode::Rows => project(xs)?,
            Mode::MapToTokens => {
                let (b, c, h, w) = xs.dims4()?;
                project(&xs.permute((0, 2, 3, 1))?.reshape((b, h * w, c))?)?
            }
            Mode::TokensToMap { h, w } => {
                let (b, _, _) = xs.dims3()?;
                let ys = project(xs)?;
                let c = ys.dim(2)?;
                ys.reshape((b, h, w, c))?
                    .permute((0, 3, 1, 2))?
                    .contiguous()?
            }
        };
        match residual {
            Some(r) => ys + r,
            None => Ok(ys),
        }
    }
}

impl Module for Linear {
    fn forward(&self, xs: &Tensor) -> Result<Tensor> {
        self.forward_residual(xs, None)
    }
}

struct LinearOp<'a> {
    bias: Option<&'a [f32]>,
    mode: Mode,
}

impl CustomOp3 for LinearOp<'_> {
    fn name(&self) -> &'static str {
        "linear"
    }

    fn cpu_fwd(
        &self,
        xs: &CpuStorage,
        xl: &Layout,
        ws: &CpuStorage,
        wl: &Layout,
        rs: &CpuStorage,
        rl: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        let (CpuStorage::F32(x), CpuStorage::F32(r)) = (xs, rs) else {
            candle_core::bail!("linear: expected f32 inputs");
        };
        let (Some((x0, x1)), Some((w0, w1)), Some((r0, r1))) = (
            xl.contiguous_offsets(),
            wl.contiguous_offsets(),
            rl.contiguous_offsets(),
        ) else {
            candle_core::bail!("linear: expected contiguous tensors");
        };
        let (x, residual) = (&x[x0..x1], &r[r0..r1]);
        let weight: Cow<[f32]> = match ws {
            CpuStorage::F32(w) => Cow::Borrowed(&w[w0..w1]),
            CpuStorage::BF16(w) => Cow::Owned(stored::widen_bf16(&w[w0..w1])),
            CpuStorage::F16(w) => Cow::Owned(stored::widen_f16(&w[w0..w1])),
            _ => candle_core::bail!("linear: expected an f32, bf16 or f16 weight"),
        };
        // The weight is transposed: `[k, n]`, n contiguous.
        let (k, n) = wl.shape().dims2()?;
        let dims = xl.shape().dims();
        // Per batch: rows × n output with its strides, and the input's strides.
        let (batches, rows, out_shape, dst_rs, dst_cs, lhs_rs, lhs_cs) = match self.mode {
            Mode::Rows => {
                let last = dims.last().copied().unwrap_or(0);
                if last != k {
                    candle_core::bail!("linear: input {dims:?} does not end in {k}");
                }
                let rows = x.len() / k.max(1);
                let mut shape = dims.to_vec();
                *shape.last_mut().unwrap_or(&mut 0) = n;
                (1, rows, shape, n, 1, k, 1)
            }
            Mode::MapToTokens => {
                let [b, c, h, w] = dims else {
                    candle_core::bail!("linear: expected a [B, C, H, W] map, got {dims:?}");
                };
                if *c != k {
                    candle_core::bail!("linear: map has {c} channels, expected {k}");
                }
                let hw = h * w;
                (*b, hw, vec![*b, hw, n], n, 1, 1, hw)
            }
            Mode::TokensToMap { h, w } => {
                let [b, l, c] = dims else {
                    candle_core::bail!("linear: expected [B, L, C] tokens, got {dims:?}");
                };
                if *c != k || *l != h * w {
                    candle_core::bail!("linear: tokens {dims:?} do not make a {h}x{w} map of {k}");
                }
                (*b, *l, vec![*b, n, h, w], 1, *l, k, 1)
            }
        };
        let total: usize = out_shape.iter().product();
        if !residual.is_empty() && residual.len() != total {
            candle_core::bail!(
                "linear: residual has {} values, the output {total}",
                residual.len()
            );
        }
        let mut out = if residual.is_empty() {
            vec![0f32; total]
        } else {
            residual.to_vec()
        };
        if let Some(bias) = self.bias {
            let per_batch = rows * n;
            for batch in out.chunks_exact_mut(per_batch.max(1)) {
                if dst_cs == 1 {
                    for row in batch.chunks_exact_mut(n) {
                        for (o, &b) in row.iter_mut().zip(bias) {
                            *o += b;
                        }
                    }
                } else {
                    for (col, &b) in batch.chunks_exact_mut(rows).zip(bias) {
                        for o in col {
                            *o += b;
                        }
                    }
                }
            }
        }
        let read_dst = !residual.is_empty() || self.bias.is_some();
        let threads = candle_core::utils::get_num_threads();
        let parallelism = if threads > 1 {
            gemm::Parallelism::Rayon(threads)
        } else {
            gemm::Parallelism::None
        };
        for bi in 0..batches {
            let src = &x[bi * rows * k..];
            let dst = &mut out[bi * rows * n..];
            // SAFETY: per batch, dst is `rows × n` and the input `rows × k`
            // with the strides above, inside their buffers; the weight is `k × n`
            // row-major.
            unsafe {
                gemm::gemm(
                    rows,
                    n,
                    k,
                    dst.as_mut_ptr(),
                    dst_cs as isize,
                    dst_rs as isize,
                    read_dst,
                    src.as_ptr(),
                    lhs_cs as isize,
                    lhs_rs as isize,
                    weight.as_ptr(),
                    1,
                    n as isize,
                    1.0,
                    1.0,
                    false,
                    false,
                    false,
                    parallelism,
                );
            }
        }
        Ok((CpuStorage::F32(out), Shape::from(out_shape)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn modes_match_candle_ops() -> Result<()> {
        let dev = Device::Cpu;
        let (b, c, h, w, n) = (2, 5, 3, 4, 7);
        let weight = Tensor::randn(0f32, 1.0, (n, c), &dev)?;
        let bias = Tensor::randn(0f32, 1.0, n, &dev)?;
        let fast = Linear::from_tensors(weight.clone(), Some(bias.clone()))?;
        let slow = Linear {
            weight: weight.clone(),
            transposed: false,
            bias: Some(bias.clone()),
            bias_f32: None,
        };
        let close = |a: &Tensor, b: &Tensor| -> Result<()> {
            assert_eq!(a.dims(), b.dims());
            let diff = (a - b)?.abs()?.max_all()?.to_scalar::<f32>()?;
            assert!(diff < 1e-5, "{diff}");
            Ok(())
        };
        let rows = Tensor::randn(0f32, 1.0, (b, 6, c), &dev)?;
        let res = Tensor::randn(0f32, 1.0, (b, 6, n), &dev)?;
        close(
            &fast.forward_residual(&rows, Some(&res))?,
            &slow.forward_residual(&rows, Some(&res))?,
        )?;
        close(&fast.forward(&rows)?, &slow.forward(&rows)?)?;
        let map = Tensor::randn(0f32, 1.0, (b, c, h, w), &dev)?;
        close(&fast.map_to_tokens(&map)?, &slow.map_to_tokens(&map)?)?;
        let tokens = Tensor::randn(0f32, 1.0, (b, h * w, c), &dev)?;
        let res = Tensor::randn(0f32, 1.0, (b, n, h, w), &dev)?;
        close(
            &fast.tokens_to_map(&tokens, h, w, Some(&res))?,
            &slow.tokens_to_map(&tokens, h, w, Some(&res))?,
        )?;
        Ok(())
    }

    /// A layer holding bf16 or f16 weights gives exactly what the f32 layer built
    /// from the same weights widened to f32 gives, in every mode.
    #[test]
    fn half_weights_match_widened_f32() -> Result<()> {
        let dev = Device::Cpu;
        let (b, c, h, w, n) = (2, 37, 3, 5, 70);
        let weight = Tensor::randn(0f32, 1.0, (n, c), &dev)?;
        let bias = Tensor::randn(0f32, 1.0, n, &dev)?;
        let rows = Tensor::randn(0f32, 1.0, (b, 6, c), &dev)?;
        let rows_res = Tensor::randn(0f32, 1.0, (b, 6, n), &dev)?;
        let map = Tensor::randn(0f32, 1.0, (b, c, h, w), &dev)?;
        let tokens = Tensor::randn(0f32, 1.0, (b, h * w, c), &dev)?;
        let map_res = Tensor::randn(0f32, 1.0, (b, n, h, w), &dev)?;
        for dtype in [DType::BF16, DType::F16] {
            let (wh, bh) = (weight.to_dtype(dtype)?, bias.to_dtype(dtype)?);
            let half = Linear::from_tensors(wh.clone(), Some(bh.clone()))?;
            let wide =
                Linear::from_tensors(wh.to_dtype(DType::F32)?, Some(bh.to_dtype(DType::F32)?))?;
            let no_bias = Linear::from_tensors(wh.clone(), None)?;
            let no_bias_wide = Linear::from_tensors(wh.to_dtype(DType::F32)?, None)?;
            let pairs = [
                (
                    half.forward_residual(&rows, Some(&rows_res))?,
                    wide.forward_residual(&rows, Some(&rows_res))?,
                ),
                (half.forward(&rows)?, wide.forward(&rows)?),
                (no_bias.forward(&rows)?, no_bias_wide.forward(&rows)?),
                (half.map_to_tokens(&map)?, wide.map_to_tokens(&map)?),
                (
                    half.tokens_to_map(&tokens, h, w, Some(&map_res))?,
                    wide.tokens_to_map(&tokens, h, w, Some(&map_res))?,
                ),
            ];
            for (i, (got, want)) in pairs.iter().enumerate() {
                assert_eq!(got.dtype(), DType::F32);
                assert_eq!(
                    got.flatten_all()?.to_vec1::<f32>()?,
                    want.flatten_all()?.to_vec1::<f32>()?,
                    "{dtype:?} case {i}"
                );
            }
        }
        Ok(())
    }
}
