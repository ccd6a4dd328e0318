//! `C = α·A·B (+ C)` with A and B in bf16 pairs (see `pack`) and f32 sums, by
//! `vdpbf16ps`: a micro-kernel of 8 rows × 32 columns (16 accumulators, one
//! pair of A broadcast against two vectors of B per step) inside a GotoBLAS
//! blocking, so that a 32-column panel of B stays in L1 across a block of A
//! rows held in L2.

use rayon::prelude::*;

/// Rows of the micro-kernel's tile (one broadcast pair of A each).
const MR: usize = 8;
/// Columns of the micro-kernel's tile (two vectors of 16 f32 sums).
const NR: usize = 32;
/// Pairs of k per block: a 32-column panel of B is `KC × 128` bytes, within L1.
const KC: usize = 128;
/// Rows of A per block: `MC × KC × 4` bytes, within L2.
const MC: usize = 256;

/// The left operand, `m × k`: pair (i, p) at `ptr[i · row_stride + p · pair_stride]`.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Lhs {
    pub(crate) ptr: *const u32,
    pub(crate) row_stride: usize,
    pub(crate) pair_stride: usize,
}

/// The output, `m × n`: element (i, j) at `ptr[i · row_stride + j · col_stride]`.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Dst {
    pub(crate) ptr: *mut f32,
    pub(crate) row_stride: usize,
    pub(crate) col_stride: usize,
}

// SAFETY: the callers of `gemm_parallel` hand each thread disjoint output
// elements of buffers that outlive the call (see its contract).
unsafe impl Send for Lhs {}
unsafe impl Sync for Lhs {}
unsafe impl Send for Dst {}
unsafe impl Sync for Dst {}

/// `C = α·A·B`, plus C's old values when `accumulate`, for an `m × n` C, an
/// `m × k` A given as `kp = ⌈k/2⌉` pairs per row by `lhs`, and a `k × n` B
/// given as `kp` rows of `n` pairs, row p at `rhs[p · ldb..]`.
///
/// # Safety
/// Every element the three descriptions address lies inside its buffer, the
/// output does not overlap the operands, and the CPU has AVX512-BF16 (see
/// [`super::kernel`]).
#[allow(clippy::too_many_arguments)]
pub(crate) unsafe fn gemm(
    (m, n, kp): (usize, usize, usize),
    lhs: Lhs,
    rhs: *const u32,
    ldb: usize,
    dst: Dst,
    alpha: f32,
    accumulate: bool,
) {
    if m == 0 || n == 0 {
        return;
    }
    if kp == 0 {
        if !accumulate {
            for i in 0..m {
                for j in 0..n {
                    *dst.ptr.add(i * dst.row_stride + j * dst.col_stride) = 0.0;
                }
            }
        }
        return;
    }
    #[cfg(target_arch = "x86_64")]
    {
        if super::cpu_has_avx512_bf16() {
            return avx512::blocked((m, n, kp), lhs, rhs, ldb, dst, alpha, accumulate);
        }
    }
    portable((m, n, kp), lhs, rhs, ldb, dst, alpha, accumulate)
}

/// [`gemm`] split among the rayon threads, by blocks of rows or of 32-column panels.
///
/// # Safety
/// As [`gemm`]; the output is written by several threads, each its own elements.
#[allow(clippy::too_many_arguments)]
pub(crate) unsafe fn gemm_parallel(
    (m, n, kp): (usize, usize, usize),
    lhs: Lhs,
    rhs: *const u32,
    ldb: usize,
    dst: Dst,
    alpha: f32,
    accumulate: bool,
) {
    let threads = rayon::current_num_threads().max(1);
    let work = m * n * kp;
    if threads == 1 || work < (1 << 18) {
        return gemm((m, n, kp), lhs, rhs, ldb, dst, alpha, accumulate);
    }
    let parts = 2 * threads;
    let rhs_addr = rhs as usize;
    if m >= parts * MR * 2 {
        let rows = m.div_ceil(parts).next_multiple_of(MR);
        (0..m.div_ceil(rows)).into_par_iter().for_each(|part| {
            // The whole (Send) descriptions, not their raw pointer fields.
            let (lhs, dst) = (lhs, dst);
            let i0 = part * rows;
            let lhs = Lhs {
                ptr: lhs.ptr.add(i0 * lhs.row_stride),
                ..lhs
            };
            let dst = Dst {
                ptr: dst.ptr.add(i0 * dst.row_stride),
                ..dst
            };
            let rows = rows.min(m - i0);
            gemm(
                (rows, n, kp),
                lhs,
                rhs_addr as *const u32,
                ldb,
                dst,
                alpha,
                accumulate,
            );
        });
    } else {
        let cols = n.div_ceil(parts).next_multiple_of(NR);
        (0..n.div_ceil(cols)).into_par_iter().for_each(|part| {
            let (lhs, dst) = (lhs, dst);
            let j0 = part * cols;
            let dst = Dst {
                ptr: dst.ptr.add(j0 * dst.col_stride),
                ..dst
            };
            let cols = cols.min(n - j0);
            let rhs = (rhs_addr as *const u32).add(j0);
            gemm((m, cols, kp), lhs, rhs, ldb, dst, alpha, accumulate);
        });
    }
}

/// The portable product, for the tests of [`gemm`] against it.
///
/// # Safety
/// As [`gemm`], without the CPU requirement.
#[cfg(test)]
#[allow(clippy::too_many_arguments)]
pub(crate) unsafe fn portable_for_tests(
    sizes: (usize, usize, usize),
    lhs: Lhs,
    rhs: *const u32,
    ldb: usize,
    dst: Dst,
    alpha: f32,
    accumulate: bool,
) {
    portable(sizes, lhs, rhs, ldb, dst, alpha, accumulate)
}

/// The same product one element at a time, for CPUs without AVX512-BF16.
#[allow(clippy::too_many_arguments)]
unsafe fn portable(
    (m, n, kp): (usize, usize, usize),
    lhs: Lhs,
    rhs: *const u32,
    ldb: usize,
    dst: Dst,
    alpha: f32,
    accumulate: bool,
) {
    let lo = |v: u32| f32::from_bits(v << 16);
    let hi = |v: u32| f32::from_bits(v & 0xFFFF_0000);
    for i in 0..m {
        for j in 0..n {
            let mut sum = 0f32;
            for p in 0..kp {
                let a = *lhs.ptr.add(i * lhs.row_stride + p * lhs.pair_stride);
                let b = *rhs.add(p * ldb + j);
                sum += lo(a) * lo(b) + hi(a) * hi(b);
            }
            let c = dst.ptr.add(i * dst.row_stride + j * dst.col_stride);
            *c = alpha * sum + if accumulate { *c } else { 0.0 };
        }
    }
}

#[cfg(target_arch = "x86_64")]
mod avx512 {
    use std::arch::x86_64::*;

    use super::{Dst, Lhs, KC, MC, MR, NR};

    /// The blocked loops: k in blocks of [`KC`] pairs, rows in blocks of
    /// [`MC`], then 32-column panels, then tiles of [`MR`] rows.
    #[target_feature(enable = "avx512f,avx512bf16")]
    #[allow(clippy::too_many_arguments)]
    pub(super) unsafe fn blocked(
        (m, n, kp): (usize, usize, usize),
        lhs: Lhs,
        rhs: *const u32,
        ldb: usize,
        dst: Dst,
        alpha: f32,
        accumulate: bool,
    ) {
        for p0 in (0..kp).step_by(KC) {
            let kc = KC.min(kp - p0);
            let add = accumulate || p0 > 0;
            let b_blk = rhs.add(p0 * ldb);
            for i0 in (0..m).step_by(MC) {
                let mc = MC.min(m - i0);
                for j0 in (0..n).step_by(NR) {
                    let cols = NR.min(n - j0);
                    for i in (i0..i0 + mc).step_by(MR) {
                        let rows = MR.min(i0 + mc - i);
                        let a = lhs.ptr.add(i * lhs.row_stride + p0 * lhs.pair_stride);
                        let tile = Tile {
                            a,
                            a_rs: lhs.row_stride,
                            a_ps: lhs.pair_stride,
                            b: b_blk.add(j0),
                            ldb,
                            kc,
                            cols,
                            c: dst.ptr.add(i * dst.row_stride + j0 * dst.col_stride),
                            c_rs: dst.row_stride,
                            c_cs: dst.col_stride,
                            alpha,
                            add,
                        };
                        dispatch(rows, cols > 16, &tile);
                    }
                }
            }
        }
    }

    /// One micro-kernel call: `rows × cols` of C from `kc` pairs.
    struct Tile {
        a: *const u32,
        a_rs: usize,
        a_ps: usize,
        b: *const u32,
        ldb: usize,
        kc: usize,
        cols: usize,
        c: *mut f32,
        c_rs: usize,
        c_cs: usize,
        alpha: f32,
        add: bool,
    }

    #[target_feature(enable = "avx512f,avx512bf16")]
    unsafe fn dispatch(rows: usize, two: bool, t: &Tile) {
        macro_rules! pick {
            ($($r:literal)*) => {
                match (rows, two) {
                    $(($r, true) => micro::<$r, 2>(t), ($r, false) => micro::<$r, 1>(t),)*
                    _ => unreachable!("tile rows are 1..=MR"),
                }
            };
        }
        pick!(1 2 3 4 5 6 7 8)
    }

    /// `R` rows × `V` vectors of 16 columns (the last ones masked to `cols`).
    #[target_feature(enable = "avx512f,avx512bf16")]
    #[inline]
    unsafe fn micro<const R: usize, const V: usize>(t: &Tile) {
        let mask = |v: usize| -> __mmask16 {
            let c = t.cols.saturating_sub(16 * v).min(16);
            ((1u32 << c) - 1) as __mmask16
        };
        let masks = [mask(0), mask(1)];
        let mut acc = [[_mm512_setzero_ps(); V]; R];
        let mut a = t.a;
        let mut b = t.b;
        for _ in 0..t.kc {
            let mut bv = [_mm512_setzero_si512(); V];
            for (v, bvv) in bv.iter_mut().enumerate() {
                *bvv = _mm512_maskz_loadu_epi32(masks[v], b.add(16 * v) as *const i32);
            }
            for (r, acc_r) in acc.iter_mut().enumerate() {
                let av: __m512bh =
                    std::mem::transmute(_mm512_set1_epi32(*a.add(r * t.a_rs) as i32));
                for v in 0..V {
                    acc_r[v] = _mm512_dpbf16_ps(
                        acc_r[v],
                        av,
                        std::mem::transmute::<__m512i, __m512bh>(bv[v]),
                    );
                }
            }
            a = a.add(t.a_ps);
            b = b.add(t.ldb);
        }
        let alpha = _mm512_set1_ps(t.alpha);
        for (r, acc_r) in acc.iter().enumerate() {
            let row = t.c.add(r * t.c_rs);
            if t.c_cs == 1 {
                for v in 0..V {
                    let p = row.add(16 * v);
                    let mut y = _mm512_mul_ps(acc_r[v], alpha);
                    if t.add {
                        y = _mm512_add_ps(y, _mm512_maskz_loadu_ps(masks[v], p));
                    }
                    _mm512_mask_storeu_ps(p, masks[v], y);
                }
            } else {
                let mut vals = [0f32; 32];
                for (v, &sum) in acc_r.iter().enumerate() {
                    _mm512_storeu_ps(vals.as_mut_ptr().add(16 * v), _mm512_mul_ps(sum, alpha));
                }
                for (j, &val) in vals.iter().enumerate().take(t.cols) {
                    let p = row.add(j * t.c_cs);
                    *p = if t.add { *p + val } else { val };
                }
            }
        }
    }
}
