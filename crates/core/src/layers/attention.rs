//! Multi-head attention (`diffusers.models.attention_processor.Attention`) and the
//! VAE's single-head spatial self-attention built on it.

use candle_core::{CpuStorage, CustomOp3, DType, Device, Layout, Module, Result, Shape, Tensor};
use candle_nn::VarBuilder;
use rayon::prelude::*;

use super::bf16::{self, Dst, Lhs, PairLayout};
use super::out_ptr::OutPtr;
use super::{kernels, work, GroupNorm, Linear};
use crate::interrupt::Interrupt;

/// Bytes of the score block one thread keeps (rows of queries × all keys) in
/// the f32 CPU kernel.
const BLOCK_BYTES: usize = 4 << 20;

/// Upper bound on the attention scores materialised at once, in elements.
///
/// Attention is computed in chunks of (batch × head) slices and query rows so
/// that one chunk's score matrix stays under this size (128 MiB in f32).
const SCORE_BUDGET: usize = 1 << 25;

/// Shape of an [`Attention`] layer.
#[derive(Debug, Clone, Copy)]
pub struct AttentionConfig {
    /// Channels of the queries (and of the output).
    pub query_dim: usize,
    /// Channels of the keys/values source; `None` means self-attention (`query_dim`).
    pub context_dim: Option<usize>,
    /// Number of heads.
    pub heads: usize,
    /// Channels per head.
    pub head_dim: usize,
    /// Whether `to_q`, `to_k` and `to_v` have a bias (`attention_bias`; true in the VAE).
    pub qkv_bias: bool,
    /// Compute the scores and softmax in f32 when running in half precision.
    pub upcast: bool,
}

/// `Attention` with `to_q`, `to_k`, `to_v` and `to_out.0` (diffusers' names), or the
/// legacy `query`, `key`, `value` and `proj_attn` of older VAE checkpoints.
#[derive(Debug, Clone)]
pub struct Attention {
    to_q: Linear,
    to_k: Linear,
    to_v: Linear,
    to_out: Linear,
    heads: usize,
    head_dim: usize,
    upcast: bool,
}

impl Attention {
    /// Loads the projections under `vb`, accepting the modern or the legacy names.
    pub fn new(vb: VarBuilder, cfg: &AttentionConfig) -> Result<Self> {
        let inner = cfg.heads * cfg.head_dim;
        let context_dim = cfg.context_dim.unwrap_or(cfg.query_dim);
        let legacy = !vb.contains_tensor("to_q.weight") && vb.contains_tensor("query.weight");
        let (q, k, v, out) = if legacy {
            (
                vb.pp("query"),
                vb.pp("key"),
                vb.pp("value"),
                vb.pp("proj_attn"),
            )
        } else {
            (
                vb.pp("to_q"),
                vb.pp("to_k"),
                vb.pp("to_v"),
                vb.pp("to_out").pp("0"),
            )
        };
        Ok(Self {
            to_q: linear(q, cfg.query_dim, inner, cfg.qkv_bias, legacy)?,
            to_k: linear(k, context_dim, inner, cfg.qkv_bias, legacy)?,
            to_v: linear(v, context_dim, inner, cfg.qkv_bias, legacy)?,
            to_out: linear(out, inner, cfg.query_dim, true, legacy)?,
            heads: cfg.heads,
            head_dim: cfg.head_dim,
            upcast: cfg.upcast,
        })
    }

    /// Attends from `xs` `[B, N, query_dim]` to `context` `[B, M, context_dim]`
    /// (or to `xs` itself when `None`); returns `[B, N, query_dim]`.
    pub fn forward(&self, xs: &Tensor, context: Option<&Tensor>) -> Result<Tensor> {
        self.forward_residual(xs, context, None, Interrupt::NEVER)
    }

    /// [`Attention::forward`] plus `residual` `[B, N, query_dim]`, added as part
    /// of the output projection; stops between blocks of query rows once
    /// `interrupt` is raised.
    pub fn forward_residual(
        &self,
        xs: &Tensor,
        context: Option<&Tensor>,
        residual: Option<&Tensor>,
        interrupt: Interrupt<'_>,
    ) -> Result<Tensor> {
        let (b, n, _) = xs.dims3()?;
        let context = context.unwrap_or(xs);
        let (bc, m, _) = context.dims3()?;
        if bc != b {
            candle_core::bail!(
                "attention: batch of the context ({bc}) differs from the batch of the queries ({b})"
            );
        }
        let scale = 1.0 / (self.head_dim as f64).sqrt();
        let (q, k, v) = (
            self.to_q.forward(xs)?,
            self.to_k.forward(context)?,
            self.to_v.forward(context)?,
        );
        if q.dtype() == DType::F32 && matches!(q.device(), Device::Cpu) {
            let op = BlockedAttention {
                heads: self.heads,
                head_dim: self.head_dim,
                scale: scale as f32,
                bf16: self.to_q.uses_bf16_kernel(),
                interrupt,
            };
            let out = q
                .contiguous()?
                .apply_op3_no_bwd(&k.contiguous()?, &v.contiguous()?, &op)?;
            return self.to_out.forward_residual(&out, residual);
        }
        if flash::applies(q.device(), q.dtype(), self.head_dim) {
            interrupt.check()?;
            let shape = FlashShape {
                batch: b,
                queries: n,
                keys: m,
                heads: self.heads,
                head_dim: self.head_dim,
            };
            let out = flash::attend(&q, &k, &v, shape, scale)?;
            return self.to_out.forward_residual(&out, residual);
        }
        let q = self.split_heads(&q, b, n)?;
        let k = self.split_heads(&k, b, m)?;
        let v = self.split_heads(&v, b, m)?;
        let out = scaled_dot_product_attention(&q, &k, &v, scale, self.upcast, interrupt)?;
        let out = out
            .reshape((b, self.heads, n, self.head_dim))?
            .transpose(1, 2)?
            .reshape((b, n, self.heads * self.head_dim))?;
        self.to_out.forward_residual(&out, residual)
    }

    /// Self-attention over the pixels of a normed feature map `xs` `[B, C, H, W]`,
    /// plus `residual` `[B, C, H, W]`; returns `[B, C, H, W]`. Reads and writes
    /// the map directly, without a permuted copy, on the f32 CPU path. Stops
    /// between blocks of query rows once `interrupt` is raised.
    pub fn forward_map(
        &self,
        xs: &Tensor,
        residual: Option<&Tensor>,
        interrupt: Interrupt<'_>,
    ) -> Result<Tensor> {
        let (b, c, h, w) = xs.dims4()?;
        if xs.dtype() == DType::F32 && matches!(xs.device(), Device::Cpu) {
            let q = self.to_q.map_to_tokens(xs)?;
            let k = self.to_k.map_to_tokens(xs)?;
            let v = self.to_v.map_to_tokens(xs)?;
            let op = BlockedAttention {
                heads: self.heads,
                head_dim: self.head_dim,
                scale: (1.0 / (self.head_dim as f64).sqrt()) as f32,
                bf16: self.to_q.uses_bf16_kernel(),
                interrupt,
            };
            let out = q.apply_op3_no_bwd(&k, &v, &op)?;
            return self.to_out.tokens_to_map(&out, h, w, residual);
        }
        let tokens = xs.reshape((b, c, h * w))?.transpose(1, 2)?;
        let out = self.forward_residual(&tokens, None, None, interrupt)?;
        let out = out.transpose(1, 2)?.reshape((b, c, h, w))?;
        match residual {
            Some(r) => out + r,
            None => Ok(out),
        }
    }

    /// `[B, L, heads*head_dim]` → `[B*heads, L, head_dim]`, contiguous.
    fn split_heads(&self, xs: &Tensor, b: usize, l: usize) -> Result<Tensor> {
        xs.reshape((b, l, self.heads, self.head_dim))?
            .transpose(1, 2)?
            .contiguous()?
            .reshape((b * self.heads, l, self.head_dim))
    }
}

/// What computes attention on `device` with activations of `dtype`, for logs
/// and `/v1/info`: `cpu_blocked` (the f32 CPU kernel), `flash_attn` (f16/bf16
/// on CUDA with the `flash-attn` feature; every Stable Diffusion head width
/// fits it) or `chunked` (candle's products over blocks of query rows, the
/// softmax in f32).
pub fn kernel_name(device: &Device, dtype: DType) -> &'static str {
    if dtype == DType::F32 && matches!(device, Device::Cpu) {
        "cpu_blocked"
    } else if flash::available(device, dtype) {
        "flash_attn"
    } else {
        "chunked"
    }
}

/// The sizes of one multi-head attention call with merged heads.
#[derive(Debug, Clone, Copy)]
#[cfg_attr(not(feature = "flash-attn"), allow(dead_code))]
struct FlashShape {
    batch: usize,
    queries: usize,
    keys: usize,
    heads: usize,
    head_dim: usize,
}

/// Flash attention (`candle-flash-attn`, FlashAttention-2, sm80+): the scores
/// live in on-chip tiles only, never as a matrix in GPU memory.
mod flash {
    use candle_core::{DType, Device, Result, Tensor};

    use super::FlashShape;

    /// Whether [`attend`] runs for these activations: the `flash-attn`
    /// feature, a CUDA device, f16 or bf16, and a head width the kernels
    /// support (a multiple of 8, at most 512: SD's 40 to 160, the VAE's 512).
    pub(super) fn applies(device: &Device, dtype: DType, head_dim: usize) -> bool {
        available(device, dtype) && head_dim.is_multiple_of(8) && head_dim <= 512
    }

    /// Whether the kernels exist for `dtype` on `device`: the `flash-attn`
    /// feature, a CUDA device, f16 or bf16.
    pub(super) fn available(device: &Device, dtype: DType) -> bool {
        cfg!(feature = "flash-attn") && device.is_cuda() && crate::layers::is_half(dtype)
    }

    /// `softmax(q kᵀ · scale) v` over merged-head `q` `[B, N, H·d]` and `k`,
    /// `v` `[B, M, H·d]`; returns `[B, N, H·d]`. The merged layout is already
    /// the kernel's `[B, L, H, d]`, so no head is split by a copy.
    #[cfg(feature = "flash-attn")]
    pub(super) fn attend(
        q: &Tensor,
        k: &Tensor,
        v: &Tensor,
        shape: FlashShape,
        scale: f64,
    ) -> Result<Tensor> {
        let FlashShape {
            batch,
            queries,
            keys,
            heads,
            head_dim,
        } = shape;
        let q = q.contiguous()?.reshape((batch, queries, heads, head_dim))?;
        let k = k.contiguous()?.reshape((batch, keys, heads, head_dim))?;
        let v = v.contiguous()?.reshape((batch, keys, heads, head_dim))?;
        candle_flash_attn::flash_attn(&q, &k, &v, scale as f32, false)?.reshape((
            batch,
            queries,
            heads * head_dim,
        ))
    }

    /// Never called: [`applies`] is false without the `flash-attn` feature.
    #[cfg(not(feature = "flash-attn"))]
    pub(super) fn attend(
        _q: &Tensor,
        _k: &Tensor,
        _v: &Tensor,
        _shape: FlashShape,
        _scale: f64,
    ) -> Result<Tensor> {
        candle_core::bail!("flash attention needs the flash-attn feature")
    }
}

/// Loads a linear layer; legacy VAE checkpoints may store it as a 1×1 convolution.
fn linear(
    vb: VarBuilder,
    in_dim: usize,
    out_dim: usize,
    bias: bool,
    legacy: bool,
) -> Result<Linear> {
    if !legacy {
        return Linear::new(vb, in_dim, out_dim, bias);
    }
    let w = vb.get_unchecked("weight")?;
    let w = match w.rank() {
        4 => w.flatten_from(1)?,
        _ => w,
    };
    if w.dims() != [out_dim, in_dim] {
        candle_core::bail!(
            "tensor {}.weight has shape {:?}, expected [{out_dim}, {in_dim}]",
            vb.prefix(),
            w.dims()
        );
    }
    let bias = if bias {
        Some(vb.clone().set_dtype(DType::F32).get(out_dim, "bias")?)
    } else {
        None
    };
    Linear::from_tensors(w.to_dtype(vb.dtype())?, bias)
}

/// `softmax(q kᵀ · scale) v` over `[S, N, d]` × `[S, M, d]` × `[S, M, d]` → `[S, N, d]`,
/// in chunks so that at most [`SCORE_BUDGET`] scores exist at once.
///
/// Half-precision inputs get their softmax in f32; with `upcast` the scores are
/// computed in f32 as well (diffusers' `upcast_attention`). Stops between
/// chunks once `interrupt` is raised.
pub fn scaled_dot_product_attention(
    q: &Tensor,
    k: &Tensor,
    v: &Tensor,
    scale: f64,
    upcast: bool,
    interrupt: Interrupt<'_>,
) -> Result<Tensor> {
    chunked_attention(q, k, v, scale, upcast, SCORE_BUDGET, interrupt)
}

/// [`scaled_dot_product_attention`] with an explicit score budget.
fn chunked_attention(
    q: &Tensor,
    k: &Tensor,
    v: &Tensor,
    scale: f64,
    upcast: bool,
    budget: usize,
    interrupt: Interrupt<'_>,
) -> Result<Tensor> {
    let (s, n, d) = q.dims3()?;
    let (sk, m, dk) = k.dims3()?;
    if sk != s || dk != d || v.dims3()?.0 != s || v.dims3()?.1 != m {
        candle_core::bail!(
            "attention: incompatible shapes q {:?}, k {:?}, v {:?}",
            q.dims(),
            k.dims(),
            v.dims()
        );
    }
    let dtype = q.dtype();
    let half = matches!(dtype, DType::F16 | DType::BF16);
    let q = (q * scale)?;
    let rows = (budget / m.max(1)).clamp(1, n.max(1));
    let slices = (budget / (rows * m).max(1)).clamp(1, s.max(1));
    let mut out = Vec::with_capacity(s.div_ceil(slices));
    for s0 in (0..s).step_by(slices) {
        let sl = slices.min(s - s0);
        let (qs, ks, vs) = (
            q.narrow(0, s0, sl)?,
            k.narrow(0, s0, sl)?,
            v.narrow(0, s0, sl)?,
        );
        let (ks, vs) = if half && upcast {
            (ks.to_dtype(DType::F32)?, vs)
        } else {
            (ks, vs)
        };
        let kt = ks.t()?;
        let mut parts = Vec::with_capacity(n.div_ceil(rows));
        for r0 in (0..n).step_by(rows) {
            interrupt.check()?;
            let qr = qs.narrow(1, r0, rows.min(n - r0))?;
            let qr = if half && upcast {
                qr.to_dtype(DType::F32)?
            } else {
                qr
            };
            let scores = qr.matmul(&kt)?;
            let probs = if half {
                candle_nn::ops::softmax_last_dim(&scores.to_dtype(DType::F32)?)?.to_dtype(dtype)?
            } else {
                candle_nn::ops::softmax_last_dim(&scores)?
            };
            parts.push(probs.matmul(&vs)?);
        }
        out.push(if parts.len() == 1 {
            parts.remove(0)
        } else {
            Tensor::cat(&parts, 1)?
        });
    }
    if out.len() == 1 {
        Ok(out.remove(0))
    } else {
        Tensor::cat(&out, 0)
    }
}

/// Multi-head attention over merged-head f32 tensors on the CPU:
/// `q` `[B, N, H·d]`, `k` and `v` `[B, M, H·d]` → `[B, N, H·d]`.
///
/// Work is split into (batch, head, block of query rows); each block's scores
/// against all keys (at most [`BLOCK_BYTES`]) are computed, soft-maxed and
/// multiplied by the values while they are still in cache, so no full score
/// matrix is ever materialised and heads are never split or merged by copies.
/// Once `interrupt` is raised, the blocks not yet started are skipped and the
/// op fails with the interruption. With `bf16` both products take their
/// operands rounded to bf16 (the layers' projections run on the bf16 kernel);
/// the softmax stays f32.
struct BlockedAttention<'a> {
    heads: usize,
    head_dim: usize,
    scale: f32,
    bf16: bool,
    interrupt: Interrupt<'a>,
}

/// Per-thread buffers of the bf16 products: the query block `[r][⌈d/2⌉]`, the
/// keys `[⌈d/2⌉][m]`, the probabilities `[r][⌈m/2⌉]` and the values `[⌈m/2⌉][d]`,
/// all as bf16 pairs.
#[derive(Default)]
struct PairBuffers {
    q: Vec<u32>,
    k: Vec<u32>,
    p: Vec<u32>,
    v: Vec<u32>,
}

/// The contiguous f32 data of one operand.
fn f32_slice<'a>(storage: &'a CpuStorage, layout: &Layout, name: &str) -> Result<&'a [f32]> {
    let CpuStorage::F32(data) = storage else {
        candle_core::bail!("attention: {name} must be f32");
    };
    let Some((start, end)) = layout.contiguous_offsets() else {
        candle_core::bail!("attention: {name} must be contiguous");
    };
    Ok(&data[start..end])
}

impl CustomOp3 for BlockedAttention<'_> {
    fn name(&self) -> &'static str {
        "blocked-attention"
    }

    fn cpu_fwd(
        &self,
        qs: &CpuStorage,
        ql: &Layout,
        ks: &CpuStorage,
        kl: &Layout,
        vs: &CpuStorage,
        vl: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        let (q, k, v) = (
            f32_slice(qs, ql, "q")?,
            f32_slice(ks, kl, "k")?,
            f32_slice(vs, vl, "v")?,
        );
        let (b, n, width) = ql.shape().dims3()?;
        let (bk, m, wk) = kl.shape().dims3()?;
        let (h, d) = (self.heads, self.head_dim);
        if bk != b || wk != width || vl.shape().dims() != kl.shape().dims() || width != h * d {
            candle_core::bail!(
                "attention: incompatible shapes q {:?}, k {:?}, v {:?} for {h} heads of {d}",
                ql.shape().dims(),
                kl.shape().dims(),
                vl.shape().dims()
            );
        }
        let rows = (BLOCK_BYTES / 4 / m.max(1)).clamp(8, 1024).min(n.max(1));
        let blocks = n.div_ceil(rows);
        let mut out = vec![0f32; b * n * width];
        let out_ptr = OutPtr::new(&mut out);
        let (dp, mp) = (d.div_ceil(2), m.div_ceil(2));
        if self.bf16 {
            work::record(true, b * h * n * (m * 2 * dp + 2 * mp * d));
        } else {
            work::record(false, b * h * n * 2 * m * d);
        }
        (0..b * h * blocks).into_par_iter().for_each_init(
            || {
                let pairs = if self.bf16 {
                    PairBuffers {
                        q: vec![0; rows * dp],
                        k: vec![0; dp * m],
                        p: vec![0; rows * mp],
                        v: vec![0; mp * d],
                    }
                } else {
                    PairBuffers::default()
                };
                (vec![0f32; rows * m], vec![0f32; rows], pairs)
            },
            |(scores, inv_sums, pairs), item| {
                if self.interrupt.is_raised() {
                    return;
                }
                let (bi, hi, blk) = (item / (h * blocks), (item / blocks) % h, item % blocks);
                let r0 = blk * rows;
                let r = rows.min(n - r0);
                let q_blk = &q[(bi * n + r0) * width + hi * d..];
                let k_h = &k[bi * m * width + hi * d..];
                let v_h = &v[bi * m * width + hi * d..];
                let scores = &mut scores[..r * m];
                if self.bf16 {
                    self.scores_bf16(pairs, (q_blk, k_h), (r, m), scores);
                } else {
                    // SAFETY: q_blk is r rows of d values `width` apart, k_h and v_h
                    // m rows of d values `width` apart, all inside their tensors;
                    // scores is r × m; the output block (r rows of d values, `width`
                    // apart, at row bi·n + r0 and column hi·d) belongs to this item.
                    unsafe {
                        gemm::gemm(
                            r,
                            m,
                            d,
                            scores.as_mut_ptr(),
                            1,
                            m as isize,
                            false,
                            q_blk.as_ptr(),
                            1,
                            width as isize,
                            k_h.as_ptr(),
                            width as isize,
                            1,
                            0.0,
                            self.scale,
                            false,
                            false,
                            false,
                            gemm::Parallelism::None,
                        );
                    }
                }
                // exp(s − max) per row; the 1/Σ is applied to the r × d output.
                kernels::exp_rows(scores, m, inv_sums);
                unsafe {
                    let dst = out_ptr.get().add((bi * n + r0) * width + hi * d);
                    if self.bf16 {
                        self.values_bf16(pairs, (&*scores, v_h), (r, m), dst);
                    } else {
                        gemm::gemm(
                            r,
                            d,
                            m,
                            dst,
                            1,
                            width as isize,
                            false,
                            scores.as_ptr(),
                            1,
                            m as isize,
                            v_h.as_ptr(),
                            1,
                            width as isize,
                            0.0,
                            1.0,
                            false,
                            false,
                            false,
                            gemm::Parallelism::None,
                        );
                    }
                    for (i, &inv) in inv_sums[..r].iter().enumerate() {
                        let row = std::slice::from_raw_parts_mut(dst.add(i * width), d);
                        for v in row {
                            *v *= inv;
                        }
                    }
                }
            },
        );
        self.interrupt.check()?;
        Ok((CpuStorage::F32(out), Shape::from((b, n, width))))
    }
}

impl BlockedAttention<'_> {
    /// `scores` (r × m) `= scale · q_blk kᵀ` with the operands rounded to bf16:
    /// `q_blk` is r rows of d values and `k_h` m rows of d values, each `H·d` apart.
    fn scores_bf16(
        &self,
        pairs: &mut PairBuffers,
        (q_blk, k_h): (&[f32], &[f32]),
        (r, m): (usize, usize),
        scores: &mut [f32],
    ) {
        let (d, width) = (self.head_dim, self.heads * self.head_dim);
        let dp = d.div_ceil(2);
        let q_layout = PairLayout {
            p_stride: 1,
            n_stride: dp,
        };
        bf16::pack_pairs(q_blk, (d, r), (1, width), &mut pairs.q, q_layout);
        let k_layout = PairLayout {
            p_stride: m,
            n_stride: 1,
        };
        bf16::pack_pairs(k_h, (d, m), (1, width), &mut pairs.k, k_layout);
        // SAFETY: pairs.q is r × dp pairs, pairs.k dp × m, scores r × m.
        unsafe {
            bf16::gemm(
                (r, m, dp),
                Lhs {
                    ptr: pairs.q.as_ptr(),
                    row_stride: dp,
                    pair_stride: 1,
                },
                pairs.k.as_ptr(),
                m,
                Dst {
                    ptr: scores.as_mut_ptr(),
                    row_stride: m,
                    col_stride: 1,
                },
                self.scale,
                false,
            );
        }
    }

    /// The r × d block at `dst` (rows `H·d` apart) `= probs v_h` with the
    /// operands rounded to bf16: `probs` r × m, `v_h` m rows of d values `H·d` apart.
    ///
    /// # Safety
    /// `dst` addresses r rows of d values, `H·d` apart, that no one else touches.
    unsafe fn values_bf16(
        &self,
        pairs: &mut PairBuffers,
        (probs, v_h): (&[f32], &[f32]),
        (r, m): (usize, usize),
        dst: *mut f32,
    ) {
        let (d, width) = (self.head_dim, self.heads * self.head_dim);
        let mp = m.div_ceil(2);
        let p_layout = PairLayout {
            p_stride: 1,
            n_stride: mp,
        };
        bf16::pack_pairs(probs, (m, r), (1, m), &mut pairs.p, p_layout);
        let v_layout = PairLayout {
            p_stride: d,
            n_stride: 1,
        };
        bf16::pack_pairs(v_h, (m, d), (width, 1), &mut pairs.v, v_layout);
        bf16::gemm(
            (r, d, mp),
            Lhs {
                ptr: pairs.p.as_ptr(),
                row_stride: mp,
                pair_stride: 1,
            },
            pairs.v.as_ptr(),
            d,
            Dst {
                ptr: dst,
                row_stride: width,
                col_stride: 1,
            },
            1.0,
            false,
        );
    }
}

/// The VAE's self-attention over the pixels of a feature map: group norm,
/// single-head [`Attention`] with biases, residual connection.
#[derive(Debug, Clone)]
pub struct SpatialSelfAttention {
    group_norm: GroupNorm,
    attention: Attention,
    rescale_output_factor: f64,
}

impl SpatialSelfAttention {
    /// Loads `group_norm` and the projections of a `channels`-wide block.
    pub fn new(
        vb: VarBuilder,
        channels: usize,
        heads: usize,
        groups: usize,
        eps: f64,
        rescale_output_factor: f64,
    ) -> Result<Self> {
        if heads == 0 || !channels.is_multiple_of(heads) {
            candle_core::bail!("attention: {channels} channels cannot be split into {heads} heads");
        }
        let group_norm = GroupNorm::new(vb.pp("group_norm"), groups, channels, eps)?;
        let cfg = AttentionConfig {
            query_dim: channels,
            context_dim: None,
            heads,
            head_dim: channels / heads,
            qkv_bias: true,
            upcast: true,
        };
        Ok(Self {
            group_norm,
            attention: Attention::new(vb, &cfg)?,
            rescale_output_factor,
        })
    }

    /// `[B, C, H, W]` → `[B, C, H, W]`; stops between blocks of pixels once
    /// `interrupt` is raised.
    pub fn forward(&self, xs: &Tensor, interrupt: Interrupt<'_>) -> Result<Tensor> {
        let hs = self.group_norm.forward(xs)?;
        let out = self.attention.forward_map(&hs, Some(xs), interrupt)?;
        if self.rescale_output_factor == 1.0 {
            Ok(out)
        } else {
            out / self.rescale_output_factor
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::Device;

    /// Chunking must not change the result: compare against one unchunked product.
    #[test]
    fn chunked_matches_direct() -> Result<()> {
        let dev = Device::Cpu;
        let q = Tensor::randn(0f32, 1.0, (3, 5, 4), &dev)?;
        let k = Tensor::randn(0f32, 1.0, (3, 7, 4), &dev)?;
        let v = Tensor::randn(0f32, 1.0, (3, 7, 4), &dev)?;
        let scores = ((q.matmul(&k.t()?)?) * 0.5)?;
        let want = candle_nn::ops::softmax_last_dim(&scores)?.matmul(&v)?;
        // Budgets forcing row chunks (10 < 7*5), slice chunks (7*5*2) and neither.
        for budget in [10, 70, SCORE_BUDGET] {
            let got = chunked_attention(&q, &k, &v, 0.5, false, budget, Interrupt::NEVER)?;
            let diff = (got - &want)?.abs()?.max_all()?.to_scalar::<f32>()?;
            assert!(diff < 1e-6, "budget {budget}: {diff}");
        }
        Ok(())
    }

    /// A raised interrupt stops both kernels with the interruption.
    #[test]
    fn a_raised_interrupt_stops_attention() -> Result<()> {
        let q = Tensor::randn(0f32, 1.0, (1, 64, 8), &Device::Cpu)?;
        let raised = || true;
        let interrupt = Interrupt::new(&raised);
        let err = chunked_attention(&q, &q, &q, 0.5, false, 16, interrupt).unwrap_err();
        assert!(crate::interrupt::is_interruption(&err), "{err}");
        let op = BlockedAttention {
            heads: 2,
            head_dim: 4,
            scale: 0.5,
            bf16: false,
            interrupt,
        };
        let err = q.apply_op3_no_bwd(&q, &q, &op).unwrap_err();
        assert!(crate::interrupt::is_interruption(&err), "{err}");
        Ok(())
    }

    /// The blocked f32 kernel matches the reference product for several heads.
    #[test]
    fn blocked_matches_direct() -> Result<()> {
        let dev = Device::Cpu;
        let (b, n, m, h, d) = (2, 37, 11, 3, 5);
        let q = Tensor::randn(0f32, 1.0, (b, n, h * d), &dev)?;
        let k = Tensor::randn(0f32, 1.0, (b, m, h * d), &dev)?;
        let v = Tensor::randn(0f32, 1.0, (b, m, h * d), &dev)?;
        let split = |t: &Tensor, l: usize| -> Result<Tensor> {
            t.reshape((b, l, h, d))?
                .transpose(1, 2)?
                .contiguous()?
                .reshape((b * h, l, d))
        };
        let scores = (split(&q, n)?.matmul(&split(&k, m)?.t()?)? * 0.5)?;
        let want = candle_nn::ops::softmax_last_dim(&scores)?
            .matmul(&split(&v, m)?)?
            .reshape((b, h, n, d))?
            .transpose(1, 2)?
            .reshape((b, n, h * d))?;
        for bf16 in [false, true] {
            if bf16 && !super::bf16::cpu_has_avx512_bf16() {
                println!("skipped the bf16 case: this CPU has no AVX512-BF16");
                continue;
            }
            let op = BlockedAttention {
                heads: h,
                head_dim: d,
                scale: 0.5,
                bf16,
                interrupt: Interrupt::NEVER,
            };
            let got = q.apply_op3_no_bwd(&k, &v, &op)?;
            let diff = (got - &want)?.abs()?.max_all()?.to_scalar::<f32>()?;
            // bf16: q, k, the probabilities and v rounded to 2^-9 each.
            let tolerance = if bf16 { 3e-2 } else { 1e-5 };
            assert!(diff < tolerance, "bf16 {bf16}: {diff}");
            assert!(!bf16 || diff > 0.0, "the bf16 operands were not rounded");
        }
        Ok(())
    }
}
