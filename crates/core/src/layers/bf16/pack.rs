//! Rounding f32 to bf16 and the pair layout of the bf16 kernel's operands.
//!
//! `vdpbf16ps` multiplies two bf16 values per 32-bit lane and adds both
//! products to that lane's f32 sum, so both operands of a product hold their
//! values in pairs along the summed dimension k: one `u32` per pair, the
//! even-k value in its low half.

use std::sync::Arc;

use rayon::prelude::*;

/// `x` rounded to the nearest bf16 (ties to even), as its bits; NaN stays NaN.
#[inline(always)]
pub(crate) fn round_to_bf16(x: f32) -> u16 {
    let bits = x.to_bits();
    let rounded = bits.wrapping_add(0x7FFF + ((bits >> 16) & 1)) >> 16;
    let nan = (bits >> 16) | 0x40;
    (if x.is_nan() { nan } else { rounded }) as u16
}

/// Two values rounded to bf16 and paired: `even` in the low half.
#[inline(always)]
fn pair(even: f32, odd: f32) -> u32 {
    u32::from(round_to_bf16(even)) | (u32::from(round_to_bf16(odd)) << 16)
}

/// Pairs rows `even` and `odd` column by column into `dst`.
fn pair_rows(dst: &mut [u32], even: &[f32], odd: &[f32]) {
    #[inline(always)]
    fn imp(dst: &mut [u32], even: &[f32], odd: &[f32]) {
        for ((d, &e), &o) in dst.iter_mut().zip(even).zip(odd) {
            *d = pair(e, o);
        }
    }
    #[cfg(target_arch = "x86_64")]
    {
        #[target_feature(enable = "avx512f,avx512bw")]
        unsafe fn v4(dst: &mut [u32], even: &[f32], odd: &[f32]) {
            imp(dst, even, odd)
        }
        if std::is_x86_feature_detected!("avx512bw") {
            // SAFETY: the CPU supports AVX-512F and BW.
            return unsafe { v4(dst, even, odd) };
        }
    }
    imp(dst, even, odd)
}

/// Where element (p, j) of a paired operand lives: `p · p_stride + j · n_stride`.
#[derive(Debug, Clone, Copy)]
pub(crate) struct PairLayout {
    /// Step between pairs along k.
    pub(crate) p_stride: usize,
    /// Step along the other dimension.
    pub(crate) n_stride: usize,
}

/// Rounds the `k × n` f32 matrix whose element (i, j) is
/// `src[i · k_stride + j · n_stride]` to bf16 and writes it as `k.div_ceil(2)`
/// rows of pairs into `dst` with `layout` (a missing odd row is zero).
///
/// # Panics
/// When an index falls outside `src` or `dst`.
pub(crate) fn pack_pairs(
    src: &[f32],
    (k, n): (usize, usize),
    (k_stride, n_stride): (usize, usize),
    dst: &mut [u32],
    layout: PairLayout,
) {
    let kp = k.div_ceil(2);
    if n == 0 || k == 0 {
        return;
    }
    if n_stride == 1 && layout.n_stride == 1 {
        for p in 0..kp {
            let even = &src[2 * p * k_stride..][..n];
            let out = &mut dst[p * layout.p_stride..][..n];
            if 2 * p + 1 < k {
                pair_rows(out, even, &src[(2 * p + 1) * k_stride..][..n]);
            } else {
                for (d, &e) in out.iter_mut().zip(even) {
                    *d = pair(e, 0.0);
                }
            }
        }
        return;
    }
    // Other layouts: walk the source along its contiguous dimension.
    let at = |i: usize, j: usize| {
        if i < k {
            src[i * k_stride + j * n_stride]
        } else {
            0.0
        }
    };
    if k_stride == 1 {
        for j in 0..n {
            for p in 0..kp {
                dst[p * layout.p_stride + j * layout.n_stride] =
                    pair(at(2 * p, j), at(2 * p + 1, j));
            }
        }
    } else {
        for p in 0..kp {
            for j in 0..n {
                dst[p * layout.p_stride + j * layout.n_stride] =
                    pair(at(2 * p, j), at(2 * p + 1, j));
            }
        }
    }
}

/// A `k × n` matrix rounded to bf16 and stored as `⌈k/2⌉` rows of `n` pairs
/// (`data[p · n + j]` holds rows 2p and 2p + 1 of column j).
///
/// The same packing serves both sides of a product: as the right operand
/// (`k × n`, vectors along n) and, read by columns, as the left operand of
/// its transpose (`n × k`, one pair broadcast per row).
#[derive(Debug, Clone)]
pub(crate) struct PairMatrix {
    k: usize,
    n: usize,
    data: Arc<[u32]>,
}

impl PairMatrix {
    /// Packs the row-major f32 matrix `values` (`k × n`).
    pub(crate) fn from_rows(values: &[f32], k: usize, n: usize) -> Self {
        let kp = k.div_ceil(2);
        let mut data = vec![0u32; kp * n];
        // Pairs of rows in parallel: the weights of a large layer are millions.
        data.par_chunks_mut(n.max(1))
            .enumerate()
            .for_each(|(p, out)| {
                let rows = (2 * p)..(2 * p + 2).min(k);
                let src = &values[rows.start * n..rows.end * n];
                pack_pairs(
                    src,
                    (rows.len(), n),
                    (n, 1),
                    out,
                    PairLayout {
                        p_stride: n,
                        n_stride: 1,
                    },
                );
            });
        Self {
            k,
            n,
            data: Arc::from(data),
        }
    }

    /// A matrix from pairs already packed (`⌈k/2⌉ × n`).
    pub(crate) fn from_pairs(k: usize, n: usize, pairs: Vec<u32>) -> Self {
        debug_assert_eq!(pairs.len(), k.div_ceil(2) * n);
        Self {
            k,
            n,
            data: Arc::from(pairs),
        }
    }

    /// Rows of the matrix (the summed dimension).
    pub(crate) fn k(&self) -> usize {
        self.k
    }

    /// Columns of the matrix.
    pub(crate) fn n(&self) -> usize {
        self.n
    }

    /// The pairs, `⌈k/2⌉ × n`.
    pub(crate) fn data(&self) -> &[u32] {
        &self.data
    }

    /// The values widened back to f32, row-major `k × n`.
    pub(crate) fn to_f32(&self) -> Vec<f32> {
        let mut out = vec![0f32; self.k * self.n];
        for (i, row) in out.chunks_exact_mut(self.n.max(1)).enumerate() {
            let pairs = &self.data[(i / 2) * self.n..][..self.n];
            let shift = 16 * (i % 2);
            for (o, &pr) in row.iter_mut().zip(pairs) {
                *o = f32::from_bits(((pr >> shift) & 0xFFFF) << 16);
            }
        }
        out
    }
}
