//! Linear layers and pointwise projections with the bias (and a residual) folded
//! into the matrix product.
//!
//! On the CPU in f32 the output buffer is first filled with the bias (plus the
//! residual, when there is one) and the product is accumulated into it by one
//! GEMM, so neither costs a pass of its own. The projections between a
//! `[B, C, H, W]` feature map and `[B, H·W, C]` tokens read and write through
//! strides, so no permuted copy is made. A bf16 weight is packed for the bf16
//! kernel where the CPU has one (see [`super::bf16`]); otherwise a bf16 or f16
//! weight stays in that dtype and is widened to an f32 copy for each call (the
//! bias is kept in f32). Other devices and activation dtypes use candle's ops:
//! half-precision activations (f16/bf16 compute) take that path on the CPU
//! too, multiplying in their own dtype as they do on a GPU.

use std::borrow::Cow;

use candle_core::{
    CpuStorage, CustomOp2, CustomOp3, DType, Device, Layout, Module, Result, Shape, Tensor,
};
use candle_nn::VarBuilder;

use super::bf16::{self, Bf16Kernel, Dst, Lhs, PairLayout, PairMatrix};
use super::{stored, work};

/// `torch.nn.Linear(in, out, bias)`, or a 1×1 convolution used as one.
///
/// On the CPU path the weight is kept transposed (`[in, out]`, out
/// contiguous) in its own dtype (f32, bf16 or f16), the layout GEMM reads
/// without repacking when there are few input rows (text encoders, the UNet's
/// coarsest levels), or as bf16 pairs for the bf16 kernel.
#[derive(Debug, Clone)]
pub struct Linear {
    weight: Weight,
    bias: Option<Tensor>,
    /// The bias as f32 values, for the CPU kernels.
    bias_f32: Option<Vec<f32>>,
}

/// How a [`Linear`] keeps its weight.
#[derive(Debug, Clone)]
enum Weight {
    /// `[out, in]`, or `[in, out]` when `transposed` (the f32 CPU kernel's layout).
    Tensor { weight: Tensor, transposed: bool },
    /// `[in, out]` as bf16 pairs along `in`, for the bf16 kernel.
    Pairs(PairMatrix),
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

    /// Builds the layer from a `[out, in]` weight and an optional `[out]` bias;
    /// a bf16 weight on the CPU runs on [`bf16::kernel`].
    pub fn from_tensors(weight: Tensor, bias: Option<Tensor>) -> Result<Self> {
        Self::with_kernel(weight, bias, bf16::kernel())
    }

    /// [`Linear::from_tensors`] with the kernel for a bf16 weight given.
    fn with_kernel(weight: Tensor, bias: Option<Tensor>, kernel: Bf16Kernel) -> Result<Self> {
        let (out_dim, in_dim) = weight.dims2()?;
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
        // Off the CPU the bias is added by candle in the weight's dtype (the
        // compute dtype there), so it is cast once here rather than per call.
        let bias = match bias {
            Some(b) if !fast => Some(b.to_dtype(weight.dtype())?),
            other => other,
        };
        let weight = if fast && weight.dtype() == DType::BF16 && kernel == Bf16Kernel::Avx512Bf16 {
            let values = weight.t()?.to_dtype(DType::F32)?.contiguous()?;
            let values = values.flatten_all()?.to_vec1::<f32>()?;
            Weight::Pairs(PairMatrix::from_rows(&values, in_dim, out_dim))
        } else if fast {
            Weight::Tensor {
                weight: weight.t()?.contiguous()?,
                transposed: true,
            }
        } else {
            Weight::Tensor {
                weight: weight.contiguous()?,
                transposed: false,
            }
        };
        Ok(Self {
            weight,
            bias,
            bias_f32,
        })
    }

    /// Whether this layer multiplies in bf16 (its attention products then do too).
    pub(crate) fn uses_bf16_kernel(&self) -> bool {
        matches!(self.weight, Weight::Pairs(_))
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
        let cpu_f32 = xs.dtype() == DType::F32
            && matches!(xs.device(), Device::Cpu)
            && (self.bias.is_none() || self.bias_f32.is_some());
        let residual_or_empty = || -> Result<Tensor> {
            match residual {
                Some(r) => r.to_dtype(DType::F32)?.contiguous(),
                // An empty tensor stands for "no residual".
                None => Tensor::zeros(0, DType::F32, xs.device()),
            }
        };
        match &self.weight {
            Weight::Pairs(weight) if cpu_f32 => {
                let op = LinearBf16Op {
                    weight,
                    bias: self.bias_f32.as_deref(),
                    mode,
                };
                xs.contiguous()?
                    .apply_op2_no_bwd(&residual_or_empty()?, &op)
            }
            Weight::Tensor {
                weight,
                transposed: true,
            } if cpu_f32 => {
                let op = LinearOp {
                    bias: self.bias_f32.as_deref(),
                    mode,
                };
                xs.contiguous()?
                    .apply_op3_no_bwd(weight, &residual_or_empty()?, &op)
            }
            _ => self.fallback(xs, residual, mode),
        }
    }

    /// The weight as `[in, out]`, widened to f32 when it is held as bf16 pairs.
    fn transposed_weight(&self) -> Result<Tensor> {
        match &self.weight {
            Weight::Tensor { weight, transposed } => {
                if *transposed {
                    Ok(weight.clone())
                } else {
                    weight.t()
                }
            }
            Weight::Pairs(p) => Tensor::from_vec(p.to_f32(), (p.k(), p.n()), &Device::Cpu),
        }
    }

    /// The same computation with candle's ops (other devices and dtypes).
    fn fallback(&self, xs: &Tensor, residual: Option<&Tensor>, mode: Mode) -> Result<Tensor> {
        let wt = self.transposed_weight()?;
        let project = |t: &Tensor| -> Result<Tensor> {
            let ys = t.broadcast_matmul(&wt.to_device(t.device())?.to_dtype(t.dtype())?)?;
            match &self.bias {
                Some(b) => ys.broadcast_add(&b.to_dtype(ys.dtype())?),
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

/// The sizes and strides of one call of a CPU kernel: per batch, a `rows × k`
/// input times the `k × n` weight into a `rows × n` output.
struct Plan {
    batches: usize,
    rows: usize,
    out_shape: Vec<usize>,
    /// Output strides of a row and of a column.
    dst_rs: usize,
    dst_cs: usize,
    /// Input strides of a row and of a column (element k).
    lhs_rs: usize,
    lhs_cs: usize,
    n: usize,
}

impl Plan {
    /// The plan for an input of shape `dims` (`len` values) in `mode`.
    fn new(mode: Mode, dims: &[usize], len: usize, k: usize, n: usize) -> Result<Self> {
        let (batches, rows, out_shape, dst_rs, dst_cs, lhs_rs, lhs_cs) = match mode {
            Mode::Rows => {
                let last = dims.last().copied().unwrap_or(0);
                if last != k {
                    candle_core::bail!("linear: input {dims:?} does not end in {k}");
                }
                let rows = len / k.max(1);
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
        Ok(Self {
            batches,
            rows,
            out_shape,
            dst_rs,
            dst_cs,
            lhs_rs,
            lhs_cs,
            n,
        })
    }

    /// The output buffer before the product is added: the residual (or
    /// zeros) plus the bias.
    fn initial_output(&self, residual: &[f32], bias: Option<&[f32]>) -> Result<Vec<f32>> {
        let (rows, n) = (self.rows, self.n);
        let total: usize = self.out_shape.iter().product();
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
        if let Some(bias) = bias {
            let per_batch = rows * n;
            for batch in out.chunks_exact_mut(per_batch.max(1)) {
                if self.dst_cs == 1 {
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
        Ok(out)
    }
}

/// The bf16 product of a layer held as [`PairMatrix`] (input and residual as
/// the two tensors; an empty residual stands for none).
struct LinearBf16Op<'a> {
    weight: &'a PairMatrix,
    bias: Option<&'a [f32]>,
    mode: Mode,
}

impl CustomOp2 for LinearBf16Op<'_> {
    fn name(&self) -> &'static str {
        "linear-bf16"
    }

    fn cpu_fwd(
        &self,
        xs: &CpuStorage,
        xl: &Layout,
        rs: &CpuStorage,
        rl: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        let (CpuStorage::F32(x), CpuStorage::F32(r)) = (xs, rs) else {
            candle_core::bail!("linear: expected f32 inputs");
        };
        let (Some((x0, x1)), Some((r0, r1))) = (xl.contiguous_offsets(), rl.contiguous_offsets())
        else {
            candle_core::bail!("linear: expected contiguous tensors");
        };
        let (x, residual) = (&x[x0..x1], &r[r0..r1]);
        let (k, n) = (self.weight.k(), self.weight.n());
        let kp = k.div_ceil(2);
        let plan = Plan::new(self.mode, xl.shape().dims(), x.len(), k, n)?;
        let mut out = plan.initial_output(residual, self.bias)?;
        let rows = plan.rows;
        let mut packed = vec![0u32; rows * kp];
        let w = self.weight.data();
        work::record(true, plan.batches * rows * 2 * kp * n);
        for bi in 0..plan.batches {
            let src = &x[bi * rows * k..][..rows * k];
            let dst = out[bi * rows * n..].as_mut_ptr();
            if plan.dst_cs == 1 {
                // Output rows contiguous: the input rows broadcast against
                // vectors of the weight, packed `[kp][rows]` or `[rows][kp]`
                // after the input's own layout.
                let (layout, lhs) = if plan.lhs_cs == 1 {
                    let layout = PairLayout {
                        p_stride: 1,
                        n_stride: kp,
                    };
                    (layout, (kp, 1))
                } else {
                    let layout = PairLayout {
                        p_stride: rows,
                        n_stride: 1,
                    };
                    (layout, (1, rows))
                };
                bf16::pack_pairs(
                    src,
                    (k, rows),
                    (plan.lhs_cs, plan.lhs_rs),
                    &mut packed,
                    layout,
                );
                // SAFETY: `packed` holds rows × kp pairs as `lhs` describes, the
                // weight kp × n pairs, and the output rows × n values with
                // `dst_rs` between rows, inside this batch.
                unsafe {
                    bf16::gemm_parallel(
                        (rows, n, kp),
                        Lhs {
                            ptr: packed.as_ptr(),
                            row_stride: lhs.0,
                            pair_stride: lhs.1,
                        },
                        w.as_ptr(),
                        n,
                        Dst {
                            ptr: dst,
                            row_stride: plan.dst_rs,
                            col_stride: 1,
                        },
                        1.0,
                        true,
                    );
                }
            } else {
                // Output columns contiguous (`[n][rows]`): the transposed
                // product, the weight's columns broadcast against the input.
                let layout = PairLayout {
                    p_stride: rows,
                    n_stride: 1,
                };
                bf16::pack_pairs(
                    src,
                    (k, rows),
                    (plan.lhs_cs, plan.lhs_rs),
                    &mut packed,
                    layout,
                );
                // SAFETY: the weight read by columns is n × kp pairs, `packed`
                // kp × rows pairs, and the output n × rows values, inside
                // this batch.
                unsafe {
                    bf16::gemm_parallel(
                        (n, rows, kp),
                        Lhs {
                            ptr: w.as_ptr(),
                            row_stride: 1,
                            pair_stride: n,
                        },
                        packed.as_ptr(),
                        rows,
                        Dst {
                            ptr: dst,
                            row_stride: plan.dst_cs,
                            col_stride: 1,
                        },
                        1.0,
                        true,
                    );
                }
            }
        }
        Ok((CpuStorage::F32(out), Shape::from(plan.out_shape)))
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
        let plan = Plan::new(self.mode, xl.shape().dims(), x.len(), k, n)?;
        let Plan {
            batches,
            rows,
            dst_rs,
            dst_cs,
            lhs_rs,
            lhs_cs,
            ..
        } = plan;
        let mut out = plan.initial_output(residual, self.bias)?;
        work::record(false, batches * rows * k * n);
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
        Ok((CpuStorage::F32(out), Shape::from(plan.out_shape)))
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
            weight: Weight::Tensor {
                weight: weight.clone(),
                transposed: false,
            },
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

    /// Without the bf16 kernel (CPUs without AVX512-BF16, or switched off), a
    /// layer holding bf16 or f16 weights gives exactly what the f32 layer built
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
            let widen = Bf16Kernel::WidenToF32;
            let half = Linear::with_kernel(wh.clone(), Some(bh.clone()), widen)?;
            let wide =
                Linear::from_tensors(wh.to_dtype(DType::F32)?, Some(bh.to_dtype(DType::F32)?))?;
            let no_bias = Linear::with_kernel(wh.clone(), None, widen)?;
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

    /// The bf16 kernel in every mode stays within bf16's rounding of the f32
    /// layer on the same (bf16-valued) weights: operands rounded to 2^-9,
    /// sums in f32.
    #[test]
    fn bf16_kernel_stays_close_to_f32() -> Result<()> {
        if !bf16::cpu_has_avx512_bf16() {
            println!("skipped: this CPU has no AVX512-BF16");
            return Ok(());
        }
        let dev = Device::Cpu;
        let (b, c, h, w, n) = (2, 77, 5, 7, 70);
        let weight = Tensor::randn(0f32, 1.0, (n, c), &dev)?.to_dtype(DType::BF16)?;
        let bias = Tensor::randn(0f32, 1.0, n, &dev)?;
        let fast = Linear::with_kernel(weight.clone(), Some(bias.clone()), Bf16Kernel::Avx512Bf16)?;
        assert!(fast.uses_bf16_kernel());
        let wide = Linear::from_tensors(weight.to_dtype(DType::F32)?, Some(bias))?;
        let rows = Tensor::randn(0f32, 1.0, (b, 6, c), &dev)?;
        let rows_res = Tensor::randn(0f32, 1.0, (b, 6, n), &dev)?;
        let map = Tensor::randn(0f32, 1.0, (b, c, h, w), &dev)?;
        let tokens = Tensor::randn(0f32, 1.0, (b, h * w, c), &dev)?;
        let map_res = Tensor::randn(0f32, 1.0, (b, n, h, w), &dev)?;
        let pairs = [
            (
                fast.forward_residual(&rows, Some(&rows_res))?,
                wide.forward_residual(&rows, Some(&rows_res))?,
            ),
            (fast.map_to_tokens(&map)?, wide.map_to_tokens(&map)?),
            (
                fast.tokens_to_map(&tokens, h, w, Some(&map_res))?,
                wide.tokens_to_map(&tokens, h, w, Some(&map_res))?,
            ),
        ];
        for (i, (got, want)) in pairs.iter().enumerate() {
            assert_eq!(got.dims(), want.dims());
            let scale = want.abs()?.max_all()?.to_scalar::<f32>()?;
            let diff = (got - want)?.abs()?.max_all()?.to_scalar::<f32>()?;
            // Rounding the input to 2^-9 of its values: a few 1e-3 of the
            // output's scale at most.
            assert!(diff < 8e-3 * scale, "case {i}: {diff} of {scale}");
            assert!(diff > 0.0, "case {i}: the input was not rounded");
        }
        // Off the kernel's path (another activation dtype), the widened
        // weight; without a bias, which is f32 and would not add to f64.
        let fast = Linear::with_kernel(weight.clone(), None, Bf16Kernel::Avx512Bf16)?;
        let wide = Linear::from_tensors(weight.to_dtype(DType::F32)?, None)?;
        let got = fast.forward(&rows.to_dtype(DType::F64)?)?;
        let want = wide.forward(&rows.to_dtype(DType::F64)?)?;
        let diff = (got - want)?.abs()?.max_all()?.to_scalar::<f64>()?;
        assert!(diff < 1e-4, "{diff}");
        Ok(())
    }
}
