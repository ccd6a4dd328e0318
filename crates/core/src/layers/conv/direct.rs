//! The direct convolution: a sum of per-tap matrix products over shifted views
//! of the padded, phase-split input (see [`Band`]), tile by tile, so that no
//! im2col matrix is ever materialised. In f32, or in bf16 over the padded
//! input packed once into pairs of channels (a shifted view of the pairs is
//! an offset, as in f32).

use rayon::prelude::*;

use super::geometry::{Band, ConvSpec, Geometry};
use crate::layers::bf16::{self, Dst, Lhs, PairMatrix};
use crate::layers::out_ptr::OutPtr;

/// The weights and the band's padded input, in one arithmetic.
#[derive(Clone, Copy)]
pub(crate) enum Operands<'a> {
    /// Taps `[k·k][cout][c]` and the input `[b, c, s·s, hq, wq]`, in f32.
    F32 { taps: &'a [f32], source: &'a [f32] },
    /// One `c × cout` pair matrix per tap and the input as pairs of channels,
    /// `[b][⌈c/2⌉][s·s·hq·wq]`.
    Bf16 {
        taps: &'a [PairMatrix],
        source: &'a [u32],
    },
}

/// Bytes of one output tile kept hot while the taps accumulate into it.
const TILE_BYTES: usize = 256 * 1024;

/// Adds output rows `band.y0..band.y0 + band.rows` (plus `biases`) to the
/// output `[b, cout, ho, wo]` at `out_ptr`, from the band's padded input, by
/// one GEMM per tap (see [`Operands`]).
pub(crate) fn convolve(
    operands: Operands,
    biases: Option<&[f32]>,
    g: &Geometry,
    band: Band,
    out_ptr: OutPtr,
) {
    let ConvSpec {
        in_channels: c,
        out_channels: cout,
        kernel: k,
        stride: s,
        ..
    } = g.spec;
    let (b, wq, ho, wo) = (g.batch, g.phase_width, g.out_height, g.out_width);
    let Band {
        y0,
        rows,
        phase_rows: hq,
    } = band;
    let phase = hq * wq;
    let plane = s * s * phase;
    let pixels = rows * wq;

    // Work items: (batch, pixel tile, output-channel chunk), enough of them to
    // keep every thread busy.
    let threads = rayon::current_num_threads().max(1);
    let tile = (TILE_BYTES / 4 / cout).clamp(64, 2048).next_multiple_of(16);
    let tile = tile.min(pixels);
    let tiles = pixels.div_ceil(tile);
    let (chunk, chunks) = g.spec.out_channel_chunks(b * tiles, 2 * threads);
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
            for a in 0..k {
                for bb in 0..k {
                    let t = a * k + bb;
                    let offset = ((a % s) * s + bb % s) * phase + (a / s) * wq + bb / s;
                    match operands {
                        Operands::F32 { taps, source } => {
                            let lhs = &taps[(t * cout + co0) * c..];
                            let rhs = &source[bi * c * plane + j0 + offset..];
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
                        Operands::Bf16 { taps, source } => {
                            let kp = c.div_ceil(2);
                            let rhs = &source[bi * kp * plane + j0 + offset..];
                            // SAFETY: the tap read by columns co0.. is m × kp
                            // pairs; rhs reads n consecutive pairs of kp rows
                            // `plane` apart, inside the packed batch (each phase
                            // has k spare rows); dst is the `m × n` buffer.
                            unsafe {
                                bf16::gemm(
                                    (m, n, kp),
                                    Lhs {
                                        ptr: taps[t].data().as_ptr().add(co0),
                                        row_stride: 1,
                                        pair_stride: cout,
                                    },
                                    rhs.as_ptr(),
                                    plane,
                                    Dst {
                                        ptr: buf.as_mut_ptr(),
                                        row_stride: n,
                                        col_stride: 1,
                                    },
                                    1.0,
                                    t != 0,
                                );
                            }
                        }
                    }
                }
            }
            let (ya, yb) = (j0 / wq, (j0 + n - 1) / wq);
            for row in 0..m {
                let co = co0 + row;
                let bias = biases.map_or(0.0, |biases| biases[co]);
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
