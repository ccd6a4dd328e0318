//! The 3×3 stride-1 convolution by Winograd's F(2×2, 3×3): 2×2 output tiles
//! from 4×4 input tiles with 16 products per channel pair instead of 36.
//!
//! Per block of whole tile rows the input is transformed (`Bᵀ d B`), multiplied
//! by the transformed weights (`G g Gᵀ`, computed per call) with one GEMM per
//! tile position, and transformed back (`Aᵀ m A`); both transforms run along
//! tile rows so they vectorise. With bf16 weights the products take the
//! transformed weights and input rounded to bf16 (the transforms stay f32).

use rayon::prelude::*;

use super::geometry::{Band, Geometry};
use crate::layers::bf16::{self, Dst, Lhs, PairLayout, PairMatrix};
use crate::layers::out_ptr::OutPtr;

/// The transformed weights `G g Gᵀ` of one call.
pub(crate) enum Weights {
    /// `[16][cout][cin]` in f32.
    F32(Vec<f32>),
    /// One `cin × cout` pair matrix per tile position.
    Bf16(Vec<PairMatrix>),
}

impl Weights {
    /// The f32 transform of `taps` `[9][cout][cin]`, rounded to bf16 pairs when `bf16`.
    pub(crate) fn new(taps: &[f32], cout: usize, cin: usize, bf16: bool) -> Self {
        let u = transform_weights(taps, cout, cin);
        if !bf16 {
            return Self::F32(u);
        }
        let kp = cin.div_ceil(2);
        Self::Bf16(
            u.chunks_exact(cout * cin)
                .map(|ui| {
                    // U[ξ] is cout × cin; as a cin × cout matrix, (ci, co) is ui[co·cin + ci].
                    let mut pairs = vec![0u32; kp * cout];
                    bf16::pack_pairs(
                        ui,
                        (cin, cout),
                        (1, cin),
                        &mut pairs,
                        PairLayout {
                            p_stride: cout,
                            n_stride: 1,
                        },
                    );
                    PairMatrix::from_pairs(cin, cout, pairs)
                })
                .collect(),
        )
    }
}

/// Bytes of one Winograd block's transformed input and products.
const WINOGRAD_BLOCK_BYTES: usize = 2 << 20;

/// Fewest 2×2 output tiles (over the batch) for the Winograd path.
const WINOGRAD_MIN_TILES: usize = 1024;

/// Whether a convolution takes the Winograd path: 3×3, stride 1, padded rows
/// long enough for every tile's four columns (`wq ≥ 2·⌈wo/2⌉ + 2`), and
/// enough tiles to pay for the weight transform.
pub(crate) fn applies(g: &Geometry) -> bool {
    let (wq, wo) = (g.phase_width, g.out_width);
    g.spec.kernel == 3 && g.spec.stride == 1 && wq >= wo.div_ceil(2) * 2 + 2 && pays_off(g)
}

/// Whether the output has enough 2×2 tiles (over the batch) to amortise the
/// weights' transform, which runs per call: at least [`WINOGRAD_MIN_TILES`].
fn pays_off(g: &Geometry) -> bool {
    g.batch * g.out_height.div_ceil(2) * g.out_width.div_ceil(2) >= WINOGRAD_MIN_TILES
}

/// `G g Gᵀ` for every (co, ci) of the per-tap weights `taps[t][co][ci]`:
/// `[16][cout][cin]`.
fn transform_weights(taps: &[f32], cout: usize, cin: usize) -> Vec<f32> {
    let pairs = cout * cin;
    let mut u = vec![0f32; 16 * pairs];
    let u_ptr = OutPtr::new(&mut u);
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

/// Adds output rows `band.y0..band.y0 + band.rows` (plus `biases`) to the
/// output `[b, cout, ho, wo]` at `out_ptr`, from `source`, the band's padded
/// input `[b, c, hq, wq]` (stride 1, so one phase), with the transformed
/// `weights`.
pub(crate) fn convolve(
    weights: &Weights,
    biases: Option<&[f32]>,
    g: &Geometry,
    band: Band,
    source: &[f32],
    out_ptr: OutPtr,
) {
    let (b, c, cout) = (g.batch, g.spec.in_channels, g.spec.out_channels);
    let (wq, ho, wo) = (g.phase_width, g.out_height, g.out_width);
    let Band {
        y0,
        rows,
        phase_rows: hq,
    } = band;
    let (th, tw) = (rows.div_ceil(2), wo.div_ceil(2));
    // Whole tile rows per block, so that the transformed input (16 × c × n)
    // and the products (16 × cout × n) of a block stay within a few MiB.
    let threads = rayon::current_num_threads().max(1);
    let per_tile = 16 * (c + cout) * 4;
    let rows_per_block = (WINOGRAD_BLOCK_BYTES / per_tile / tw).clamp(1, th);
    let blocks_per_image = th.div_ceil(rows_per_block);
    let (chunk, chunks) = g.spec.out_channel_chunks(b * blocks_per_image, threads);
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
                match weights {
                    Weights::F32(_) => Vec::new(),
                    Weights::Bf16(_) => vec![0u32; c.div_ceil(2) * block_tiles],
                },
            )
        },
        |(v, m, phases, sums, pairs), item| {
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
                let rhs = &v[xi * c * n..];
                let dst = &mut m[xi * mc * n..];
                match weights {
                    Weights::F32(weights) => {
                        let lhs = &weights[(xi * cout + co0) * c..];
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
                    Weights::Bf16(weights) => {
                        let kp = c.div_ceil(2);
                        let layout = PairLayout {
                            p_stride: n,
                            n_stride: 1,
                        };
                        bf16::pack_pairs(rhs, (c, n), (n, 1), pairs, layout);
                        // SAFETY: U[ξ] read by columns co0.. is mc × kp pairs,
                        // `pairs` kp × n, and dst mc × n, row-major.
                        unsafe {
                            bf16::gemm(
                                (mc, n, kp),
                                Lhs {
                                    ptr: weights[xi].data().as_ptr().add(co0),
                                    row_stride: 1,
                                    pair_stride: cout,
                                },
                                pairs.as_ptr(),
                                n,
                                Dst {
                                    ptr: dst.as_mut_ptr(),
                                    row_stride: n,
                                    col_stride: 1,
                                },
                                1.0,
                                false,
                            );
                        }
                    }
                }
            }
            // Output transform along tile rows, bias, into the output map.
            for row in 0..mc {
                let co = co0 + row;
                let bias = biases.map_or(0.0, |biases| biases[co]);
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
