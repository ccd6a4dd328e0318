//! 3×3 stride-1 convolutions by Winograd's minimal filtering: F(4×4, 3×3)
//! (6×6 input tiles, 36 products per channel pair for 16 outputs instead of
//! 144) for f32 weights, F(2×2, 3×3) (4×4 tiles, 16 products for 4 outputs
//! instead of 36) for bf16 weights, for maps too small for F(4×4) to pay, and
//! for layers whose F(4×4) weights would be too large (see [`tile_for`]).
//!
//! Per block of whole tile rows the input is transformed (`Bᵀ d B`), multiplied
//! by the transformed weights (`G g Gᵀ`, computed per call into a buffer kept
//! between calls) with one GEMM per tile position, and transformed back
//! (`Aᵀ m A`); all three transforms run along rows so they vectorise. With
//! bf16 weights the products take the transformed weights and input rounded
//! to bf16 (the transforms stay f32); they stay on F(2×2), whose smaller
//! transform coefficients keep the bf16 rounding error at the size the parity
//! tests measured.

use std::sync::Mutex;

use rayon::prelude::*;

use super::geometry::{Band, Geometry};
use crate::layers::bf16::{self, Dst, Lhs, PairLayout, PairMatrix};
use crate::layers::out_ptr::OutPtr;

/// Which Winograd transform a convolution runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Tile {
    /// F(2×2, 3×3): 2×2 outputs from 4×4 inputs.
    F2,
    /// F(4×4, 3×3): 4×4 outputs from 6×6 inputs (interpolation points 0, ±1, ±2, ∞).
    F4,
}

/// F(2×2, 3×3)'s `Bᵀ` (4×4), `G` (4×3) and `Aᵀ` (2×4), row-major.
const F2_BT: [f32; 16] = [
    1.0, 0.0, -1.0, 0.0, //
    0.0, 1.0, 1.0, 0.0, //
    0.0, -1.0, 1.0, 0.0, //
    0.0, 1.0, 0.0, -1.0,
];
const F2_G: [f32; 12] = [
    1.0, 0.0, 0.0, //
    0.5, 0.5, 0.5, //
    0.5, -0.5, 0.5, //
    0.0, 0.0, 1.0,
];
const F2_AT: [f32; 8] = [
    1.0, 1.0, 1.0, 0.0, //
    0.0, 1.0, -1.0, -1.0,
];

/// F(4×4, 3×3)'s `Bᵀ` (6×6), `G` (6×3) and `Aᵀ` (4×6), row-major.
const F4_BT: [f32; 36] = [
    4.0, 0.0, -5.0, 0.0, 1.0, 0.0, //
    0.0, -4.0, -4.0, 1.0, 1.0, 0.0, //
    0.0, 4.0, -4.0, -1.0, 1.0, 0.0, //
    0.0, -2.0, -1.0, 2.0, 1.0, 0.0, //
    0.0, 2.0, -1.0, -2.0, 1.0, 0.0, //
    0.0, 4.0, 0.0, -5.0, 0.0, 1.0,
];
const F4_G: [f32; 18] = [
    1.0 / 4.0,
    0.0,
    0.0,
    -1.0 / 6.0,
    -1.0 / 6.0,
    -1.0 / 6.0,
    -1.0 / 6.0,
    1.0 / 6.0,
    -1.0 / 6.0,
    1.0 / 24.0,
    1.0 / 12.0,
    1.0 / 6.0,
    1.0 / 24.0,
    -1.0 / 12.0,
    1.0 / 6.0,
    0.0,
    0.0,
    1.0,
];
const F4_AT: [f32; 24] = [
    1.0, 1.0, 1.0, 1.0, 1.0, 0.0, //
    0.0, 1.0, -1.0, 2.0, -2.0, 0.0, //
    0.0, 1.0, 1.0, 4.0, 4.0, 0.0, //
    0.0, 1.0, -1.0, 8.0, -8.0, 1.0,
];

impl Tile {
    /// Output tile side.
    pub(crate) fn m(self) -> usize {
        match self {
            Tile::F2 => 2,
            Tile::F4 => 4,
        }
    }

    /// Input tile side, `m + 2`.
    fn alpha(self) -> usize {
        self.m() + 2
    }

    /// Products per channel pair and tile, `alpha²`.
    pub(crate) fn products(self) -> usize {
        self.alpha() * self.alpha()
    }

    fn bt(self) -> &'static [f32] {
        match self {
            Tile::F2 => &F2_BT,
            Tile::F4 => &F4_BT,
        }
    }

    fn g(self) -> &'static [f32] {
        match self {
            Tile::F2 => &F2_G,
            Tile::F4 => &F4_G,
        }
    }

    fn at(self) -> &'static [f32] {
        match self {
            Tile::F2 => &F2_AT,
            Tile::F4 => &F4_AT,
        }
    }
}

/// The transformed weights `G g Gᵀ` of one call and the tile they are for.
pub(crate) struct Weights {
    tile: Tile,
    values: Transformed,
}

enum Transformed {
    /// `[alpha²][cout][cin]` in f32, in the reused buffer.
    F32(Vec<f32>),
    /// One `cin × cout` pair matrix per tile position.
    Bf16(Vec<PairMatrix>),
}

impl Weights {
    /// The f32 transform for `tile` of `taps` `[9][cout][cin]`, rounded to
    /// bf16 pairs when `bf16`.
    pub(crate) fn new(tile: Tile, taps: &[f32], (cout, cin): (usize, usize), bf16: bool) -> Self {
        let u = transform_weights(tile, taps, (cout, cin));
        if !bf16 {
            return Self {
                tile,
                values: Transformed::F32(u),
            };
        }
        let kp = cin.div_ceil(2);
        let values = Transformed::Bf16(
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
        );
        give_back(u);
        Self { tile, values }
    }
}

impl Drop for Weights {
    fn drop(&mut self) {
        if let Transformed::F32(u) = &mut self.values {
            give_back(std::mem::take(u));
        }
    }
}

/// Most bytes of transformed f32 weights a call may write: a layer whose
/// F(4×4) weights (4× its own) would exceed this takes F(2×2) (1.8×), and
/// one whose F(2×2) weights would, the direct kernel. It also bounds the
/// buffer kept between calls ([`REUSED`]). With 256 MB SDXL's deepest layers
/// would take F(4×4) too, and its 1024² f32 image peaked at 16.07 GiB
/// instead of 15.81.
const TRANSFORMED_BYTES: usize = 128 << 20;

/// The buffer the transformed weights are written to, kept between calls (a
/// UNet step's layers reuse it): a fresh allocation of tens of MB per call
/// costs page faults and zeroing every time. A call that finds it taken
/// (concurrent tests) or too small allocates its own; [`release_buffer`]
/// frees it.
static REUSED: Mutex<Vec<f32>> = Mutex::new(Vec::new());

/// [`REUSED`]'s buffer with `len` elements, or a new one where it is taken or
/// smaller (then it is freed first, never copied into a larger one).
fn take_buffer(len: usize) -> Vec<f32> {
    let mut buffer = REUSED
        .try_lock()
        .map(|mut reused| std::mem::take(&mut *reused))
        .unwrap_or_default();
    if buffer.capacity() < len {
        buffer = Vec::new();
    }
    buffer.resize(len, 0.0);
    buffer
}

/// Keeps `buffer` in [`REUSED`] when it is larger than the one kept.
fn give_back(buffer: Vec<f32>) {
    if let Ok(mut reused) = REUSED.try_lock() {
        if buffer.capacity() > reused.capacity() {
            *reused = buffer;
        }
    }
}

/// Frees the buffer kept for transformed weights (up to 128 MB), so that a
/// phase with other large allocations (the VAE decode after the UNet steps)
/// does not hold it too.
pub(crate) fn release_buffer() {
    if let Ok(mut reused) = REUSED.lock() {
        *reused = Vec::new();
    }
}

/// Bytes of one Winograd block's transformed input and products, unless that
/// leaves fewer than [`MIN_BLOCK_TILES`] tiles.
const WINOGRAD_BLOCK_BYTES: usize = 2 << 20;

/// Fewest tiles per block (whole tile rows permitting): the products are
/// matrix products over a block's tiles, which run far below the machine's
/// peak when they are only a few columns wide (the deep layers' 2 MiB blocks
/// would otherwise hold one row of 4 to 8 tiles).
const MIN_BLOCK_TILES: usize = 64;

/// Fewest F(4×4) tiles (over the batch) for that transform: below, its larger
/// transforms and weights cost more than the multiplies they save. Measured
/// on 2 Zen 3 cores: F(4×4) beats F(2×2) and the direct kernel at 64 tiles
/// (a 32² map), loses at 32 (16², batch 2).
const MIN_F4_TILES: usize = 64;

/// Fewest F(2×2) tiles for that transform: it beats the direct kernel from
/// 32 tiles (an 8² map at batch 2) and loses at 16.
const MIN_F2_TILES: usize = 32;

/// The Winograd transform a convolution takes, if any: 3×3, stride 1, padded
/// rows long enough for every tile's columns (`wq ≥ m·⌈wo/m⌉ + 2`), enough
/// tiles to pay for the transforms, and transformed weights within
/// [`TRANSFORMED_BYTES`]. F(4×4) for f32 weights where it qualifies, else F(2×2).
pub(crate) fn tile_for(g: &Geometry, bf16: bool) -> Option<Tile> {
    let (wq, wo) = (g.phase_width, g.out_width);
    if g.spec.kernel != 3 || g.spec.stride != 1 {
        return None;
    }
    let qualifies = |tile: Tile| {
        let m = tile.m();
        let tiles = g.batch * g.out_height.div_ceil(m) * wo.div_ceil(m);
        let min_tiles = match tile {
            Tile::F2 => MIN_F2_TILES,
            Tile::F4 => MIN_F4_TILES,
        };
        let bytes = tile.products() * g.spec.in_channels * g.spec.out_channels * 4;
        wq >= wo.div_ceil(m) * m + 2 && tiles >= min_tiles && bytes <= TRANSFORMED_BYTES
    };
    [Tile::F4, Tile::F2]
        .into_iter()
        .filter(|&tile| !(bf16 && tile == Tile::F4))
        .find(|&tile| qualifies(tile))
}

/// `G g Gᵀ` for every (co, ci) of the per-tap weights `taps[t][co][ci]`:
/// `[alpha²][cout][cin]`. Each step is a [`combine`] along `ci`, so the
/// transform vectorises.
fn transform_weights(tile: Tile, taps: &[f32], (cout, cin): (usize, usize)) -> Vec<f32> {
    let a = tile.alpha();
    let gm = tile.g();
    let mut u = take_buffer(a * a * cout * cin);
    let u_ptr = OutPtr::new(&mut u);
    (0..cout).into_par_iter().for_each_init(
        || vec![0f32; a * 3 * cin],
        |gg, co| {
            let tap = |p: usize, q: usize| &taps[((p * 3 + q) * cout + co) * cin..][..cin];
            // G g: gg[j][q] = Σ_p G[j][p] · g[p][q], rows along ci.
            for j in 0..a {
                for q in 0..3 {
                    let rows = [tap(0, q), tap(1, q), tap(2, q)];
                    combine(
                        &mut gg[(j * 3 + q) * cin..][..cin],
                        &gm[j * 3..j * 3 + 3],
                        &rows,
                    );
                }
            }
            // (G g) Gᵀ: u[j·alpha + i] = Σ_q gg[j][q] · G[i][q].
            for j in 0..a {
                let rows = [
                    &gg[j * 3 * cin..][..cin],
                    &gg[(j * 3 + 1) * cin..][..cin],
                    &gg[(j * 3 + 2) * cin..][..cin],
                ];
                for i in 0..a {
                    // SAFETY: each co writes only its own row of every U[ξ].
                    let dst = unsafe {
                        std::slice::from_raw_parts_mut(
                            u_ptr.get().add(((j * a + i) * cout + co) * cin),
                            cin,
                        )
                    };
                    combine(dst, &gm[i * 3..i * 3 + 3], &rows);
                }
            }
        },
    );
    u
}

/// `dst = Σ coefs[k] · rows[k]` over the nonzero coefficients (the transforms
/// are sparse); each pass is one loop along the row, so it vectorises.
#[inline]
fn combine(dst: &mut [f32], coefs: &[f32], rows: &[&[f32]]) {
    let mut first = true;
    for (&c, row) in coefs.iter().zip(rows) {
        if c == 0.0 {
            continue;
        }
        let row = &row[..dst.len()];
        if first {
            for (d, &x) in dst.iter_mut().zip(row) {
                *d = c * x;
            }
            first = false;
        } else {
            for (d, &x) in dst.iter_mut().zip(row) {
                *d += c * x;
            }
        }
    }
    if first {
        dst.fill(0.0);
    }
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
    let tile = weights.tile;
    let (m, a) = (tile.m(), tile.alpha());
    let (bt, at) = (tile.bt(), tile.at());
    let xis = a * a;
    let (b, c, cout) = (g.batch, g.spec.in_channels, g.spec.out_channels);
    let (wq, ho, wo) = (g.phase_width, g.out_height, g.out_width);
    let Band {
        y0,
        rows,
        phase_rows: hq,
    } = band;
    let (th, tw) = (rows.div_ceil(m), wo.div_ceil(m));
    // Whole tile rows per block, so that the transformed input (alpha² × c × n)
    // and the products (alpha² × cout × n) of a block stay within a few MiB.
    let threads = rayon::current_num_threads().max(1);
    let per_tile = xis * (c + cout) * 4;
    let min_rows = MIN_BLOCK_TILES.div_ceil(tw);
    let rows_per_block = (WINOGRAD_BLOCK_BYTES / per_tile / tw)
        .max(min_rows)
        .clamp(1, th);
    let blocks_per_image = th.div_ceil(rows_per_block);
    let (chunk, chunks) = g.spec.out_channel_chunks(b * blocks_per_image, threads);
    let items = b * blocks_per_image * chunks;
    let block_tiles = rows_per_block * tw;
    let plane = hq * wq;
    // Each row-transformed input row split by column phase (x mod m).
    let phase_len = wq.div_ceil(m);
    (0..items).into_par_iter().for_each_init(
        || {
            (
                vec![0f32; xis * c * block_tiles],
                vec![0f32; xis * chunk * block_tiles],
                (vec![0f32; wq], vec![0f32; m * phase_len]),
                (vec![0f32; m * a * tw], vec![0f32; tw]),
                match &weights.values {
                    Transformed::F32(_) => Vec::new(),
                    Transformed::Bf16(_) => vec![0u32; c.div_ceil(2) * block_tiles],
                },
            )
        },
        |(v, prod, (trow, phases), (sums, out_row), pairs), item| {
            let bi = item / (blocks_per_image * chunks);
            let blk = (item / chunks) % blocks_per_image;
            let ci = item % chunks;
            let ty0 = blk * rows_per_block;
            let nty = rows_per_block.min(th - ty0);
            let n = nty * tw;
            let co0 = ci * chunk;
            let mc = chunk.min(cout - co0);
            let image = &source[bi * c * plane..(bi + 1) * c * plane];
            // Input transform into v[ξ][channel][tile], ξ = j·alpha + i.
            for ch in 0..c {
                let src = &image[ch * plane..];
                for ry in 0..nty {
                    let top = m * (ty0 + ry);
                    let mut input_rows: [&[f32]; 6] = [&[]; 6];
                    for (k, row) in input_rows.iter_mut().take(a).enumerate() {
                        *row = &src[(top + k) * wq..(top + k + 1) * wq];
                    }
                    for j in 0..a {
                        // Bᵀ d along the rows: row j of the row transform.
                        combine(trow, &bt[j * a..(j + 1) * a], &input_rows[..a]);
                        for (x, &val) in trow.iter().enumerate() {
                            phases[(x % m) * phase_len + x / m] = val;
                        }
                        // (Bᵀ d) B along the columns: column k of tile tx is
                        // phase k mod m at tx + k / m.
                        let mut columns: [&[f32]; 6] = [&[]; 6];
                        for (k, col) in columns.iter_mut().take(a).enumerate() {
                            let start = (k % m) * phase_len + k / m;
                            *col = &phases[start..start + tw];
                        }
                        for i in 0..a {
                            let at_v = ((j * a + i) * c + ch) * n + ry * tw;
                            combine(
                                &mut v[at_v..at_v + tw],
                                &bt[i * a..(i + 1) * a],
                                &columns[..a],
                            );
                        }
                    }
                }
            }
            // alpha² products: prod[ξ] (mc × n) = U[ξ] (mc × c) · v[ξ] (c × n).
            for xi in 0..xis {
                let rhs = &v[xi * c * n..];
                let dst = &mut prod[xi * mc * n..];
                match &weights.values {
                    Transformed::F32(weights) => {
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
                    Transformed::Bf16(weights) => {
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
                    // Aᵀ m: sums[r][i] over the tw tiles, r < m, i < alpha.
                    let mut products: [&[f32]; 6] = [&[]; 6];
                    for i in 0..a {
                        for (j, p) in products.iter_mut().take(a).enumerate() {
                            *p = &prod[((j * a + i) * mc + row) * n + ry * tw..][..tw];
                        }
                        for r in 0..m {
                            let at_s = (r * a + i) * tw;
                            combine(
                                &mut sums[at_s..at_s + tw],
                                &at[r * a..(r + 1) * a],
                                &products[..a],
                            );
                        }
                    }
                    for r in 0..m {
                        let oy = m * (ty0 + ry) + r;
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
                        let mut srows: [&[f32]; 6] = [&[]; 6];
                        for (i, s) in srows.iter_mut().take(a).enumerate() {
                            *s = &sums[(r * a + i) * tw..(r * a + i + 1) * tw];
                        }
                        // (Aᵀ m) A: output column m·tx + col of every tile.
                        for col in 0..m {
                            combine(out_row, &at[col * a..(col + 1) * a], &srows[..a]);
                            for (tx, &val) in out_row.iter().enumerate() {
                                let x = m * tx + col;
                                if x < wo {
                                    dst[x] += val + bias;
                                }
                            }
                        }
                    }
                }
            }
        },
    );
}
