//! The bf16 kernel against f32 products: exact sums of the rounded operands,
//! and the rounding's own error bounded.

use half::bf16;

use super::kernel::portable_for_tests;
use super::pack::round_to_bf16;
use super::*;

/// Deterministic values of mixed signs and magnitudes.
fn values(len: usize, seed: u32) -> Vec<f32> {
    (0..len)
        .map(|i| {
            let x = (i as f32 * 0.618_034 + seed as f32 * 0.414_213).fract();
            (x - 0.5) * (1.0 + (i % 7) as f32)
        })
        .collect()
}

fn skip_without_bf16() -> bool {
    if cpu_has_avx512_bf16() {
        return false;
    }
    println!("skipped: this CPU has no AVX512-BF16");
    true
}

/// `A·B` in f64 from row-major `a` (m × k) and `b` (k × n), each element first
/// passed through `round`.
fn reference(a: &[f32], b: &[f32], (m, n, k): (usize, usize, usize), round: bool) -> Vec<f64> {
    let r = |v: f32| {
        if round {
            f64::from(bf16::from_f32(v).to_f32())
        } else {
            f64::from(v)
        }
    };
    let mut c = vec![0f64; m * n];
    for i in 0..m {
        for j in 0..n {
            c[i * n + j] = (0..k).map(|p| r(a[i * k + p]) * r(b[p * n + j])).sum();
        }
    }
    c
}

#[test]
fn rounding_matches_half() {
    let mut xs = values(100_000, 3);
    xs.extend([
        0.0,
        -0.0,
        1e-40,
        f32::INFINITY,
        f32::NEG_INFINITY,
        f32::MAX,
        1.0 + f32::EPSILON,
    ]);
    // Exact ties: 1 + 2^-8 rounds down to 1 (even), 1 + 3·2^-8 up.
    xs.extend([1.0 + 2f32.powi(-8), 1.0 + 3.0 * 2f32.powi(-8)]);
    for x in xs {
        assert_eq!(round_to_bf16(x), bf16::from_f32(x).to_bits(), "{x:e}");
    }
    assert!(bf16::from_bits(round_to_bf16(f32::NAN)).is_nan());
}

#[test]
fn pair_matrix_round_trips_the_rounded_values() {
    for (k, n) in [(7, 5), (8, 33), (1, 3)] {
        let v = values(k * n, 1);
        let packed = PairMatrix::from_rows(&v, k, n);
        assert_eq!((packed.k(), packed.n()), (k, n));
        let want: Vec<f32> = v.iter().map(|&x| bf16::from_f32(x).to_f32()).collect();
        assert_eq!(packed.to_f32(), want);
    }
}

/// Runs `C = α·A·B (+ C)` through the AVX512 kernel (or `portable`) with A
/// packed row-wise (`[m][kp]`) or column-wise (`[kp][m]`), and C row-major or
/// transposed.
#[allow(clippy::too_many_arguments)]
fn run(
    a: &[f32],
    b: &[f32],
    (m, n, k): (usize, usize, usize),
    a_by_columns: bool,
    c_transposed: bool,
    c: &mut [f32],
    alpha: f32,
    accumulate: bool,
    portable: bool,
) {
    let kp = k.div_ceil(2);
    let mut ap = vec![0u32; m * kp];
    let (lhs_layout, row_stride, pair_stride) = if a_by_columns {
        (
            PairLayout {
                p_stride: m,
                n_stride: 1,
            },
            1,
            m,
        )
    } else {
        (
            PairLayout {
                p_stride: 1,
                n_stride: kp,
            },
            kp,
            1,
        )
    };
    // A is m × k row-major; as a k × m matrix its element (p, i) is a[i·k + p].
    pack_pairs(a, (k, m), (1, k), &mut ap, lhs_layout);
    let bp = PairMatrix::from_rows(b, k, n);
    let lhs = Lhs {
        ptr: ap.as_ptr(),
        row_stride,
        pair_stride,
    };
    let dst = if c_transposed {
        Dst {
            ptr: c.as_mut_ptr(),
            row_stride: 1,
            col_stride: m,
        }
    } else {
        Dst {
            ptr: c.as_mut_ptr(),
            row_stride: n,
            col_stride: 1,
        }
    };
    // SAFETY: the operands and C are the sizes described.
    unsafe {
        if portable {
            portable_for_tests(
                (m, n, kp),
                lhs,
                bp.data().as_ptr(),
                n,
                dst,
                alpha,
                accumulate,
            );
        } else {
            gemm_parallel(
                (m, n, kp),
                lhs,
                bp.data().as_ptr(),
                n,
                dst,
                alpha,
                accumulate,
            );
        }
    }
}

fn check(m: usize, n: usize, k: usize, portable: bool) {
    let (a, b) = (values(m * k, 2), values(k * n, 5));
    let exact = reference(&a, &b, (m, n, k), true);
    let wide = reference(&a, &b, (m, n, k), false);
    let scale = wide.iter().fold(0f64, |s, v| s.max(v.abs())).max(1e-30);
    for a_by_columns in [false, true] {
        for c_transposed in [false, true] {
            let old = values(m * n, 9);
            let mut c = old.clone();
            run(
                &a,
                &b,
                (m, n, k),
                a_by_columns,
                c_transposed,
                &mut c,
                0.5,
                true,
                portable,
            );
            let mut worst_exact = 0f64;
            let mut worst_wide = 0f64;
            for i in 0..m {
                for j in 0..n {
                    let at = if c_transposed { j * m + i } else { i * n + j };
                    let got = f64::from(c[at] - old[at]) / 0.5;
                    worst_exact = worst_exact.max((got - exact[i * n + j]).abs());
                    worst_wide = worst_wide.max((got - wide[i * n + j]).abs());
                }
            }
            let case = format!("{m}x{n}x{k} cols {a_by_columns} t {c_transposed}");
            // f32 sums of the rounded operands: a few ulps of the scale.
            assert!(
                worst_exact <= 1e-5 * scale * (k as f64).sqrt(),
                "{case}: {worst_exact:e}"
            );
            // Against the unrounded f32 product: bf16's 2^-9 per operand, mostly cancelling.
            assert!(
                worst_wide <= 8e-3 * scale,
                "{case}: {worst_wide:e} of {scale:e}"
            );
            assert!(worst_wide > 0.0 || k == 0, "{case}: no rounding at all");
            // Without accumulate the old values are overwritten.
            let mut fresh = old.clone();
            run(
                &a,
                &b,
                (m, n, k),
                a_by_columns,
                c_transposed,
                &mut fresh,
                1.0,
                false,
                portable,
            );
            for (f, (cv, o)) in fresh.iter().zip(c.iter().zip(&old)) {
                assert!(
                    (f - 2.0 * (cv - o)).abs() <= 1e-4 * (scale as f32),
                    "{case}"
                );
            }
        }
    }
}

#[test]
fn kernel_matches_f32_products() {
    if skip_without_bf16() {
        return;
    }
    for (m, n, k) in [
        (1, 1, 1),
        (8, 32, 2),
        (13, 45, 37),
        (9, 16, 300),
        (300, 70, 260),
        (5, 600, 9),
    ] {
        check(m, n, k, false);
    }
}

#[test]
fn portable_kernel_matches_f32_products() {
    for (m, n, k) in [(1, 1, 1), (13, 45, 37), (3, 5, 300)] {
        check(m, n, k, true);
    }
}

#[test]
fn kernel_choice_follows_the_cpu_and_the_switch() {
    let want = if cpu_has_avx512_bf16() {
        Bf16Kernel::Avx512Bf16
    } else {
        Bf16Kernel::WidenToF32
    };
    assert_eq!(kernel(), want);
}
