//! 2-D convolution with a direct f32 CPU kernel.
//!
//! On the CPU the weights are re-laid out once at load as one `[C_out, C_in]`
//! matrix per kernel tap, and the convolution runs as a sum of per-tap matrix
//! products over shifted views of a zero-padded copy of the input, tile by tile,
//! so no im2col matrix is ever materialised. Weights that arrive in bf16 or f16
//! stay in that dtype and are widened to an f32 copy for each call; the bias is
//! f32. Other devices use candle's `conv2d`.

use std::sync::Arc;

use candle_core::{CpuStorage, CustomOp1, DType, Device, Layout, Module, Result, Shape, Tensor};
use candle_nn::VarBuilder;
use rayon::prelude::*;

use super::kernels;
use super::stored::StoredWeights;

/// Bytes of one output tile kept hot while the taps accumulate into it.
const TILE_BYTES: usize = 256 * 1024;

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
    in_channels: usize,
    out_channels: usize,
    kernel: usize,
    stride: usize,
    padding: Padding,
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
            in_channels,
            out_channels,
            kernel,
            stride,
            padding,
        })
    }

    /// Convolves `xs` `[B, C_in, H, W]`, first upsampling it 2× (nearest) when
    /// `upsample` is set, as `conv(F.interpolate(xs, scale_factor=2))`.
    pub fn forward_upsampled(&self, xs: &Tensor, upsample: bool) -> Result<Tensor> {
        let (_, c, h, w) = xs.dims4()?;
        if c != self.in_channels {
            candle_core::bail!(
                "conv2d: input has {c} channels, expected {}",
                self.in_channels
            );
        }
        match &self.kind {
            Kind::Packed { taps, bias } => {
                let dtype = xs.dtype();
                let xs = xs.to_dtype(DType::F32)?.contiguous()?;
                let taps = taps.to_f32();
                let op = DirectConv {
                    taps: &taps,
                    bias: bias.as_deref(),
                    cout: self.out_channels,
                    k: self.kernel,
                    stride: self.stride,
                    padding: self.padding,
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
                let p = self.padding;
                let symmetric = p.top == p.left && p.top == p.bottom && p.top == p.right;
                let xs = if symmetric {
                    xs
                } else {
                    xs.pad_with_zeros(2, p.top, p.bottom)?
                        .pad_with_zeros(3, p.left, p.right)?
                };
                let pad = if symmetric { p.top } else { 0 };
                let ys = xs.conv2d(&weight.to_dtype(xs.dtype())?, pad, self.stride, 1, 1)?;
                match bias {
                    Some(b) => ys.broadcast_add(&b.to_dtype(ys.dtype())?.reshape((1, (), 1, 1))?),
                    None => Ok(ys),
                }
            }
        }
    }
}

impl Conv2d {
    /// `conv(act(xs · scale + offset))` with the per-(batch, channel) `affine`
    /// (a group norm's, see [`super::GroupNorm::channel_affine`]) and SiLU when
    /// `silu`, applied while the padded input is built, so the normed map is
    /// never stored. `None` when this layer has no CPU kernel or no padding
    /// step (1×1 without padding); the caller then normalises first.
    pub fn forward_affine(
        &self,
        xs: &Tensor,
        affine: &super::norm::ChannelAffine,
        silu: bool,
    ) -> Result<Option<Tensor>> {
        let Kind::Packed { taps, bias } = &self.kind else {
            return Ok(None);
        };
        let (b, c, _, _) = xs.dims4()?;
        let unpadded = self.kernel == 1 && self.stride == 1 && self.padding == Padding::uniform(0);
        if xs.dtype() != DType::F32
            || unpadded
            || c != self.in_channels
            || affine.scale.len() != b * c
        {
            return Ok(None);
        }
        let taps = taps.to_f32();
        let op = DirectConv {
            taps: &taps,
            bias: bias.as_deref(),
            cout: self.out_channels,
            k: self.kernel,
            stride: self.stride,
            padding: self.padding,
            upsample: false,
            input_affine: Some((&affine.scale, &affine.offset, silu)),
        };
        Ok(Some(xs.contiguous()?.apply_op1_no_bwd(&op)?))
    }
}

impl Module for Conv2d {
    fn forward(&self, xs: &Tensor) -> Result<Tensor> {
        self.forward_upsampled(xs, false)
    }
}

/// The f32 CPU kernel as a candle op over a contiguous input.
struct DirectConv<'a> {
    taps: &'a [f32],
    bias: Option<&'a [f32]>,
    cout: usize,
    k: usize,
    stride: usize,
    padding: Padding,
    upsample: bool,
    /// Per-(batch, channel) `(scale, offset)` and SiLU applied to the input as it
    /// is padded.
    input_affine: Option<(&'a [f32], &'a [f32], bool)>,
}

/// A raw output pointer shared by the workers, each writing disjoint elements.
#[derive(Clone, Copy)]
struct OutPtr(*mut f32);
// SAFETY: every work item writes a disjoint set of output elements.
unsafe impl Send for OutPtr {}
unsafe impl Sync for OutPtr {}

impl OutPtr {
    /// The pointer (a method, so closures capture the `Send` wrapper).
    fn get(self) -> *mut f32 {
        self.0
    }
}

impl CustomOp1 for DirectConv<'_> {
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
        let (b, c, h, w, ho, wo) = self.shapes(layout)?;
        let mut out = vec![0f32; b * self.cout * ho * wo];
        self.run(input, b, c, h, w, ho, wo, &mut out);
        Ok((CpuStorage::F32(out), Shape::from((b, self.cout, ho, wo))))
    }
}

impl DirectConv<'_> {
    /// `(b, c, h, w, ho, wo)` of an input layout (h, w after any upsampling).
    fn shapes(&self, layout: &Layout) -> Result<(usize, usize, usize, usize, usize, usize)> {
        let (b, c, h, w) = layout.shape().dims4()?;
        let (h, w) = if self.upsample {
            (2 * h, 2 * w)
        } else {
            (h, w)
        };
        let (k, s, p) = (self.k, self.stride, self.padding);
        let (hp_real, wp_real) = (h + p.top + p.bottom, w + p.left + p.right);
        if hp_real < k || wp_real < k {
            candle_core::bail!("direct-conv2d: input {h}x{w} is smaller than the {k}x{k} kernel");
        }
        Ok((b, c, h, w, (hp_real - k) / s + 1, (wp_real - k) / s + 1))
    }

    /// Adds the convolution of `input` `[b, c, h, w]` (h, w after any
    /// upsampling) to `out` `[b, cout, ho, wo]`.
    #[allow(clippy::too_many_arguments)]
    fn run(
        &self,
        input: &[f32],
        b: usize,
        c: usize,
        h: usize,
        w: usize,
        ho: usize,
        wo: usize,
        out: &mut [f32],
    ) {
        let (k, s, p, cout) = (self.k, self.stride, self.padding, self.cout);
        // The padded image is split into s × s phase images of `hq × wq`
        // (element (r, c) of phase (r mod s, c mod s) at (r / s, c / s)), so that
        // every tap (a, b) is a stride-1 shifted view of one phase: output pixel
        // j = y·wq + x reads element j + (a / s)·wq + b / s of phase (a mod s, b mod s).
        let wq = (w + p.left + p.right).div_ceil(s);
        let out_ptr = OutPtr(out.as_mut_ptr());
        if k == 1 && s == 1 && p == Padding::uniform(0) && !self.upsample {
            self.direct(input, b, c, h, wq, 0, ho, ho, wo, out_ptr);
            return;
        }
        let winograd = k == 3 && s == 1 && wq >= wo.div_ceil(2) * 2 + 2 && use_winograd(b, ho, wo);
        let weights = winograd.then(|| winograd_weights(self.taps, cout, c));
        // Bands of output rows, so that the padded copy of a large input never
        // exists whole (a band re-reads k − 1 rows of its neighbour).
        let band_bytes = |rows: usize| b * c * s * s * ((s * rows + k).div_ceil(s) + k) * wq * 4;
        let band = if band_bytes(ho) <= BAND_BYTES {
            ho
        } else {
            (BAND_BYTES / (b * c * s * wq * 4))
                .max(16)
                .next_multiple_of(2)
                .min(ho)
        };
        for y0 in (0..ho).step_by(band) {
            let rows = band.min(ho - y0);
            let hq = (s * (rows - 1) + k).div_ceil(s) + k;
            let padded = self.pad_input(input, b, c, h, w, s * y0, hq, wq);
            match &weights {
                Some(u) => self.winograd(&padded, u, b, c, hq, wq, y0, rows, ho, wo, out_ptr),
                None => self.direct(&padded, b, c, hq, wq, y0, rows, ho, wo, out_ptr),
            }
        }
    }

    /// Output rows `y0..y0 + rows` from `source`, the padded band `[b, c, s·s, hq, wq]`
    /// whose first phase row is padded row `s·y0`, by per-tap GEMMs.
    #[allow(clippy::too_many_arguments)]
    fn direct(
        &self,
        source: &[f32],
        b: usize,
        c: usize,
        hq: usize,
        wq: usize,
        y0: usize,
        rows: usize,
        ho: usize,
        wo: usize,
        out_ptr: OutPtr,
    ) {
        let (k, s, cout) = (self.k, self.stride, self.cout);
        let phase = hq * wq;
        let plane = s * s * phase;
        let pixels = rows * wq;

        // Work items: (batch, pixel tile, output-channel chunk), enough of them to
        // keep every thread busy.
        let threads = rayon::current_num_threads().max(1);
        let tile = (TILE_BYTES / 4 / cout).clamp(64, 2048).next_multiple_of(16);
        let tile = tile.min(pixels);
        let tiles = pixels.div_ceil(tile);
        let chunks = (2 * threads)
            .div_ceil(b * tiles)
            .min(cout.div_ceil(16))
            .max(1);
        let chunk = cout.div_ceil(chunks).next_multiple_of(16).min(cout);
        let chunks = cout.div_ceil(chunk);
        let items = b * tiles * chunks;
        (0..items).into_par_iter().for_each_init(
            || vec![0f32; chunk * tile],
            |buf, item| {
                let bi = item / (tiles * chunks);
                let ti = (item / chunks) % tiles;
                let ci = item % chunks;
                let j0 = ti * tile;
                let n = tile.min(pixels - j0);
                let co0 = ci * chunk;
                let m = chunk.min(cout - co0);
                let batch_src = &source[bi * c * plane..];
                for a in 0..k {
                    for bb in 0..k {
                        let t = a * k + bb;
                        let lhs = &self.taps[(t * cout + co0) * c..];
                        let offset = ((a % s) * s + bb % s) * phase + (a / s) * wq + bb / s;
                        let rhs = &batch_src[j0 + offset..];
                        // SAFETY: lhs is `m × c` (row stride c) inside the tap's
                        // matrix; rhs reads n consecutive columns of c rows `plane`
                        // apart, inside the padded batch (each phase has k spare
                        // rows); dst is the `m × n` buffer.
                        unsafe {
                            gemm::gemm(
                                m,
                                n,
                                c,
                                buf.as_mut_ptr(),
                                1,
                                n as isize,
                                t != 0,
                                lhs.as_ptr(),
                                1,
                                c as isize,
                                rhs.as_ptr(),
                                1,
                                plane as isize,
                                1.0,
                                1.0,
                                false,
                                false,
                                false,
                                gemm::Parallelism::None,
                            );
                        }
                    }
                }
                let (ya, yb) = (j0 / wq, (j0 + n - 1) / wq);
                for row in 0..m {
                    let co = co0 + row;
                    let bias = self.bias.map_or(0.0, |bias| bias[co]);
                    let src = &buf[row * n..(row + 1) * n];
                    let dst_base = (bi * cout + co) * ho * wo;
                    for y in ya..=yb {
                        // Columns of output row y inside this tile.
                        let first = (y * wq).max(j0);
                        let last = ((y * wq) + wo).min(j0 + n);
                        if first >= last {
                            continue;
                        }
                        let x0 = first - y * wq;
                        let len = last - first;
                        // SAFETY: row y, columns x0..x0+len of channel co in batch
                        // bi lie inside the output and belong to this item alone.
                        let dst = unsafe {
                            std::slice::from_raw_parts_mut(
                                out_ptr.get().add(dst_base + (y0 + y) * wo + x0),
                                len,
                            )
                        };
                        for (d, &v) in dst.iter_mut().zip(&src[first - j0..last - j0]) {
                            *d += v + bias;
                        }
                    }
                }
            },
        );
    }

    /// The 3×3 stride-1 convolution by Winograd's F(2×2, 3×3): 2×2 output
    /// tiles from 4×4 input tiles with 16 products per channel pair instead of
    /// 36. Per block of whole tile rows the input is transformed (`Bᵀ d B`),
    /// multiplied by the transformed weights (`G g Gᵀ`, computed per call) with
    /// one GEMM per tile position, and transformed back (`Aᵀ m A`); both
    /// transforms run along tile rows so they vectorise. Computes output rows
    /// `y0..y0 + rows` from `source`, the padded band `[b, c, hq, wq]` starting
    /// at padded row `y0` (`wq ≥ 2·⌈wo/2⌉ + 2`), with the transformed `weights`.
    #[allow(clippy::too_many_arguments)]
    fn winograd(
        &self,
        source: &[f32],
        weights: &[f32],
        b: usize,
        c: usize,
        hq: usize,
        wq: usize,
        y0: usize,
        rows: usize,
        ho: usize,
        wo: usize,
        out_ptr: OutPtr,
    ) {
        let cout = self.cout;
        let (th, tw) = (rows.div_ceil(2), wo.div_ceil(2));
        // Whole tile rows per block, so that the transformed input (16 × c × n)
        // and the products (16 × cout × n) of a block stay within a few MiB.
        let threads = rayon::current_num_threads().max(1);
        let per_tile = 16 * (c + cout) * 4;
        let rows_per_block = (WINOGRAD_BLOCK_BYTES / per_tile / tw).clamp(1, th);
        let blocks_per_image = th.div_ceil(rows_per_block);
        let chunks = threads
            .div_ceil(b * blocks_per_image)
            .min(cout.div_ceil(16))
            .max(1);
        let chunk = cout.div_ceil(chunks).next_multiple_of(16).min(cout);
        let chunks = cout.div_ceil(chunk);
        let items = b * blocks_per_image * chunks;
        let block_tiles = rows_per_block * tw;
        let plane = hq * wq;
        let half = wq.div_ceil(2);
        (0..items).into_par_iter().for_each_init(
            || {
                (
                    vec![0f32; 16 * c * block_tiles],
                    vec![0f32; 16 * chunk * block_tiles],
                    vec![0f32; 8 * half],
                    vec![0f32; 8 * tw],
                )
            },
            |(v, m, phases, sums), item| {
                let bi = item / (blocks_per_image * chunks);
                let blk = (item / chunks) % blocks_per_image;
                let ci = item % chunks;
                let ty0 = blk * rows_per_block;
                let nty = rows_per_block.min(th - ty0);
                let n = nty * tw;
                let co0 = ci * chunk;
                let mc = chunk.min(cout - co0);
                let image = &source[bi * c * plane..(bi + 1) * c * plane];
                // Input transform into v[ξ][channel][tile].
                for ch in 0..c {
                    let src = &image[ch * plane..];
                    for ry in 0..nty {
                        let r = &src[2 * (ty0 + ry) * wq..];
                        let (r0, r1, r2, r3) = (
                            &r[..wq],
                            &r[wq..2 * wq],
                            &r[2 * wq..3 * wq],
                            &r[3 * wq..4 * wq],
                        );
                        // Bᵀ d along the rows, split into even and odd columns.
                        let (even, odd) = phases.split_at_mut(4 * half);
                        for x in 0..wq {
                            let t = [r0[x] - r2[x], r1[x] + r2[x], r2[x] - r1[x], r1[x] - r3[x]];
                            let dst = if x % 2 == 0 { &mut *even } else { &mut *odd };
                            for (i, &val) in t.iter().enumerate() {
                                dst[i * half + x / 2] = val;
                            }
                        }
                        // (Bᵀ d) B along the columns, for the tw tiles of this row.
                        for i in 0..4 {
                            let e = &even[i * half..(i + 1) * half];
                            let o = &odd[i * half..(i + 1) * half];
                            let at = |j: usize| (((i * 4 + j) * c + ch) * n) + ry * tw;
                            let (v0, rest) = v.split_at_mut(at(1));
                            let v0 = &mut v0[at(0)..at(0) + tw];
                            let (v1, rest) = rest.split_at_mut(at(2) - at(1));
                            let v1 = &mut v1[..tw];
                            let (v2, v3) = rest.split_at_mut(at(3) - at(2));
                            let (v2, v3) = (&mut v2[..tw], &mut v3[..tw]);
                            for tx in 0..tw {
                                v0[tx] = e[tx] - e[tx + 1];
                                v1[tx] = o[tx] + e[tx + 1];
                                v2[tx] = e[tx + 1] - o[tx];
                                v3[tx] = o[tx] - o[tx + 1];
                            }
                        }
                    }
                }
                // 16 products: m[ξ] (mc × n) = U[ξ] (mc × c) · v[ξ] (c × n).
                for xi in 0..16 {
                    let lhs = &weights[(xi * cout + co0) * c..];
                    let rhs = &v[xi * c * n..];
                    let dst = &mut m[xi * mc * n..];
                    // SAFETY: lhs is mc × c (row stride c) inside U[ξ], rhs c × n
                    // and dst mc × n, both row-major inside their buffers.
                    unsafe {
                        gemm::gemm(
                            mc,
                            n,
                            c,
                            dst.as_mut_ptr(),
                            1,
                            n as isize,
                            false,
                            lhs.as_ptr(),
                            1,
                            c as isize,
                            rhs.as_ptr(),
                            1,
                            n as isize,
                            0.0,
                            1.0,
                            false,
                            false,
                            false,
                            gemm::Parallelism::None,
                        );
                    }
                }
                // Output transform along tile rows, bias, into the output map.
                for row in 0..mc {
                    let co = co0 + row;
                    let bias = self.bias.map_or(0.0, |bias| bias[co]);
                    let dst_base = (bi * cout + co) * ho * wo;
                    for ry in 0..nty {
                        let mrow = |xi: usize| &m[(xi * mc + row) * n + ry * tw..][..tw];
                        // Aᵀ m: two rows of four columns, each over the tw tiles.
                        let (s0, s1) = sums.split_at_mut(4 * tw);
                        for j in 0..4 {
                            let (a, bq, cq, d) = (mrow(j), mrow(4 + j), mrow(8 + j), mrow(12 + j));
                            let (s0j, s1j) =
                                (&mut s0[j * tw..(j + 1) * tw], &mut s1[j * tw..(j + 1) * tw]);
                            for tx in 0..tw {
                                s0j[tx] = a[tx] + bq[tx] + cq[tx];
                                s1j[tx] = bq[tx] - cq[tx] - d[tx];
                            }
                        }
                        for (i, srow) in [&*s0, &*s1].into_iter().enumerate() {
                            let oy = 2 * (ty0 + ry) + i;
                            if oy >= rows {
                                continue;
                            }
                            let oy = y0 + oy;
                            // SAFETY: output row oy of channel co in batch bi belongs
                            // to this item alone.
                            let dst = unsafe {
                                std::slice::from_raw_parts_mut(
                                    out_ptr.get().add(dst_base + oy * wo),
                                    wo,
                                )
                            };
                            let (a, bq, cq, d) = (
                                &srow[..tw],
                                &srow[tw..2 * tw],
                                &srow[2 * tw..3 * tw],
                                &srow[3 * tw..],
                            );
                            for tx in 0..wo / 2 {
                                dst[2 * tx] += a[tx] + bq[tx] + cq[tx] + bias;
                                dst[2 * tx + 1] += bq[tx] - cq[tx] - d[tx] + bias;
                            }
                            if wo % 2 == 1 {
                                let tx = wo / 2;
                                dst[2 * tx] += a[tx] + bq[tx] + cq[tx] + bias;
                            }
                        }
                    }
                }
            },
        );
    }

    /// Padded rows `pr0..pr0 + s·hq` of the zero-padded (and optionally 2×
    /// upsampled) input, split into stride phases: `[b, c, s·s, hq, wq]`.
    #[allow(clippy::too_many_arguments)]
    fn pad_input(
        &self,
        input: &[f32],
        b: usize,
        c: usize,
        h: usize,
        w: usize,
        pr0: usize,
        hq: usize,
        wq: usize,
    ) -> Vec<f32> {
        let (p, s) = (self.padding, self.stride);
        let (sh, sw) = if self.upsample {
            (h / 2, w / 2)
        } else {
            (h, w)
        };
        let phase = hq * wq;
        // Input rows y with padded row y + top inside the band.
        let first = pr0.saturating_sub(p.top).min(h);
        let last = (pr0 + s * hq).saturating_sub(p.top).min(h);
        let mut padded = vec![0f32; b * c * s * s * phase];
        padded
            .par_chunks_mut(s * s * phase)
            .enumerate()
            .for_each(|(plane_index, dst)| {
                let src = &input[plane_index * sh * sw..(plane_index + 1) * sh * sw];
                let mut staged = Vec::new();
                for y in first..last {
                    let mut src_row = &src[(if self.upsample { y / 2 } else { y }) * sw..][..sw];
                    let r = y + p.top - pr0;
                    if let Some((scale, offset, silu)) = self.input_affine {
                        if s == 1 && !self.upsample {
                            let row = &mut dst[r * wq + p.left..][..w];
                            kernels::affine_silu(
                                row,
                                src_row,
                                scale[plane_index],
                                offset[plane_index],
                                silu,
                            );
                            continue;
                        }
                        staged.resize(sw, 0.0);
                        kernels::affine_silu(
                            &mut staged,
                            src_row,
                            scale[plane_index],
                            offset[plane_index],
                            silu,
                        );
                        src_row = &staged;
                    }
                    if s == 1 {
                        let row = &mut dst[r * wq + p.left..][..w];
                        if self.upsample {
                            for (pair, &v) in row.chunks_exact_mut(2).zip(src_row) {
                                pair[0] = v;
                                pair[1] = v;
                            }
                        } else {
                            row.copy_from_slice(src_row);
                        }
                        continue;
                    }
                    let row_base = (r % s) * s * phase + (r / s) * wq;
                    for x in 0..w {
                        let col = x + p.left;
                        let v = src_row[if self.upsample { x / 2 } else { x }];
                        dst[row_base + (col % s) * phase + col / s] = v;
                    }
                }
            });
        padded
    }
}

/// Largest padded input copy made at once; larger inputs are processed in
/// bands of output rows.
#[cfg(not(test))]
const BAND_BYTES: usize = 64 << 20;
/// Tiny bands in unit tests, so that every shape there runs in several bands.
#[cfg(test)]
const BAND_BYTES: usize = 4 << 10;

/// Bytes of one Winograd block's transformed input and products.
const WINOGRAD_BLOCK_BYTES: usize = 2 << 20;

/// Whether Winograd pays for a 3×3 stride-1 convolution with this output: the
/// weights are transformed per call, which only amortises over enough tiles.
fn use_winograd(b: usize, ho: usize, wo: usize) -> bool {
    let min = std::env::var("SDW")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(WINOGRAD_MIN_TILES);
    b * ho.div_ceil(2) * wo.div_ceil(2) >= min
}

/// Fewest 2×2 output tiles (over the batch) for the Winograd path.
const WINOGRAD_MIN_TILES: usize = 1024;

/// `G g Gᵀ` for every (co, ci) of the per-tap weights `taps[t][co][ci]`:
/// `[16][cout][cin]`.
fn winograd_weights(taps: &[f32], cout: usize, cin: usize) -> Vec<f32> {
    let pairs = cout * cin;
    let mut u = vec![0f32; 16 * pairs];
    let u_ptr = OutPtr(u.as_mut_ptr());
    (0..cout).into_par_iter().for_each(|co| {
        for ci in 0..cin {
            let pair = co * cin + ci;
            let mut g = [[0f32; 3]; 3];
            for (a, row) in g.iter_mut().enumerate() {
                for (bb, v) in row.iter_mut().enumerate() {
                    *v = taps[(a * 3 + bb) * pairs + pair];
                }
            }
            // G g (4×3), then (G g) Gᵀ (4×4).
            let mut gg = [[0f32; 3]; 4];
            for j in 0..3 {
                gg[0][j] = g[0][j];
                gg[1][j] = 0.5 * (g[0][j] + g[1][j] + g[2][j]);
                gg[2][j] = 0.5 * (g[0][j] - g[1][j] + g[2][j]);
                gg[3][j] = g[2][j];
            }
            for (i, row) in gg.iter().enumerate() {
                let vals = [
                    row[0],
                    0.5 * (row[0] + row[1] + row[2]),
                    0.5 * (row[0] - row[1] + row[2]),
                    row[2],
                ];
                for (j, &val) in vals.iter().enumerate() {
                    // SAFETY: each co writes only its own (co, ·) pairs.
                    unsafe { *u_ptr.get().add((i * 4 + j) * pairs + pair) = val };
                }
            }
        }
    });
    u
}

#[cfg(test)]
mod tests {
    use super::*;

    fn reference(
        xs: &Tensor,
        weight: &Tensor,
        bias: &Tensor,
        stride: usize,
        p: Padding,
    ) -> Result<Tensor> {
        let xs = xs
            .pad_with_zeros(2, p.top, p.bottom)?
            .pad_with_zeros(3, p.left, p.right)?;
        xs.conv2d(weight, 0, stride, 1, 1)?
            .broadcast_add(&bias.reshape((1, (), 1, 1))?)
    }

    /// The direct kernel matches candle's convolution for the shapes the models use.
    #[test]
    fn matches_candle_conv() -> Result<()> {
        let dev = Device::Cpu;
        let cases = [
            (3, 1, Padding::uniform(1), 5, 7, 2, false),
            (3, 2, Padding::uniform(1), 9, 6, 1, false),
            (
                3,
                2,
                Padding {
                    top: 0,
                    bottom: 1,
                    left: 0,
                    right: 1,
                },
                8,
                10,
                2,
                false,
            ),
            (1, 1, Padding::uniform(0), 4, 5, 2, false),
            (3, 1, Padding::uniform(1), 3, 4, 2, true),
            (1, 1, Padding::uniform(0), 70, 3, 1, false),
            // Enough tiles for the Winograd path, even and odd sizes, upsampled.
            (3, 1, Padding::uniform(1), 64, 66, 1, false),
            (3, 1, Padding::uniform(1), 63, 70, 1, false),
            (3, 1, Padding::uniform(1), 32, 33, 1, true),
        ];
        for (k, stride, padding, h, w, b, upsample) in cases {
            let (cin, cout) = (6, 37);
            let xs = Tensor::randn(0f32, 1.0, (b, cin, h, w), &dev)?;
            let weight = Tensor::randn(0f32, 1.0, (cout, cin, k, k), &dev)?;
            let bias = Tensor::randn(0f32, 1.0, cout, &dev)?;
            let conv = Conv2d::from_tensors(weight.clone(), Some(bias.clone()), stride, padding)?;
            let got = conv.forward_upsampled(&xs, upsample)?;
            let input = if upsample {
                xs.upsample_nearest2d(2 * h, 2 * w)?
            } else {
                xs
            };
            let want = reference(&input, &weight, &bias, stride, padding)?;
            assert_eq!(got.dims(), want.dims());
            let diff = (got - want)?.abs()?.max_all()?.to_scalar::<f32>()?;
            assert!(diff < 1e-4, "k {k} stride {stride} {padding:?}: {diff}");
        }
        Ok(())
    }

    /// The on-the-fly input affine + SiLU equals normalising first.
    #[test]
    fn input_affine_matches_materialised() -> Result<()> {
        let dev = Device::Cpu;
        let (b, cin, cout, h, w) = (2, 5, 19, 40, 38);
        let xs = Tensor::randn(0f32, 1.0, (b, cin, h, w), &dev)?;
        let scale = Tensor::randn(0f32, 1.0, (b, cin, 1, 1), &dev)?;
        let offset = Tensor::randn(0f32, 1.0, (b, cin, 1, 1), &dev)?;
        let affine = crate::layers::norm::ChannelAffine {
            scale: scale.flatten_all()?.to_vec1()?,
            offset: offset.flatten_all()?.to_vec1()?,
        };
        let normed = xs.broadcast_mul(&scale)?.broadcast_add(&offset)?.silu()?;
        for (stride, padding) in [(1, Padding::uniform(1)), (2, Padding::uniform(1))] {
            let weight = Tensor::randn(0f32, 1.0, (cout, cin, 3, 3), &dev)?;
            let bias = Tensor::randn(0f32, 1.0, cout, &dev)?;
            let conv = Conv2d::from_tensors(weight, Some(bias), stride, padding)?;
            let want = conv.forward(&normed)?;
            let got = conv
                .forward_affine(&xs, &affine, true)?
                .expect("f32 CPU kernel");
            let diff = (got - want)?.abs()?.max_all()?.to_scalar::<f32>()?;
            assert!(diff < 1e-4, "stride {stride}: {diff}");
        }
        Ok(())
    }

    /// A convolution holding bf16 or f16 weights gives exactly what the f32
    /// layer built from the same weights widened to f32 gives, on every path
    /// (1×1, direct 3×3, Winograd, stride 2, upsampled, input affine).
    #[test]
    fn half_weights_match_widened_f32() -> Result<()> {
        let dev = Device::Cpu;
        // (k, stride, padding, h, w, b, upsample)
        let cases = [
            (1, 1, Padding::uniform(0), 9, 7, 2, false),
            (3, 1, Padding::uniform(1), 5, 7, 2, false),
            (3, 1, Padding::uniform(1), 64, 66, 1, false),
            (3, 2, Padding::uniform(1), 9, 6, 2, false),
            (3, 1, Padding::uniform(1), 32, 33, 1, true),
        ];
        let (cin, cout) = (6, 37);
        for (k, stride, padding, h, w, b, upsample) in cases {
            let xs = Tensor::randn(0f32, 1.0, (b, cin, h, w), &dev)?;
            let weight = Tensor::randn(0f32, 1.0, (cout, cin, k, k), &dev)?;
            let bias = Tensor::randn(0f32, 1.0, cout, &dev)?;
            let scale = Tensor::randn(0f32, 1.0, b * cin, &dev)?;
            let offset = Tensor::randn(0f32, 1.0, b * cin, &dev)?;
            let affine = crate::layers::norm::ChannelAffine {
                scale: scale.to_vec1()?,
                offset: offset.to_vec1()?,
            };
            for dtype in [DType::BF16, DType::F16] {
                let wh = weight.to_dtype(dtype)?;
                let half = Conv2d::from_tensors(wh.clone(), Some(bias.clone()), stride, padding)?;
                let wide = Conv2d::from_tensors(
                    wh.to_dtype(DType::F32)?,
                    Some(bias.clone()),
                    stride,
                    padding,
                )?;
                assert!(matches!(half.kind, Kind::Packed { .. }));
                let mut pairs = vec![(
                    half.forward_upsampled(&xs, upsample)?,
                    wide.forward_upsampled(&xs, upsample)?,
                )];
                if let (Some(got), Some(want)) = (
                    half.forward_affine(&xs, &affine, true)?,
                    wide.forward_affine(&xs, &affine, true)?,
                ) {
                    pairs.push((got, want));
                }
                for (got, want) in pairs {
                    assert_eq!(
                        got.flatten_all()?.to_vec1::<f32>()?,
                        want.flatten_all()?.to_vec1::<f32>()?,
                        "{dtype:?} k {k} stride {stride} upsample {upsample}"
                    );
                }
            }
        }
        Ok(())
    }
}
