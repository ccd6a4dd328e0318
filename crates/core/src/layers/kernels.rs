//! Elementwise f32 kernels the CPU paths share: softmax rows, SiLU and GEGLU.
//!
//! Each kernel is written once as plain loops over slices with a branch-free
//! `exp` (Cody–Waite reduction and a degree-6 polynomial, about 1 ulp) and
//! compiled three times: for AVX-512, for AVX2+FMA and for the baseline target.
//! The widest variant the CPU supports is picked at run time, so the loops are
//! vectorised where libm's scalar `expf`/`erff` would not be.

/// Defines `pub fn $name` that dispatches to the widest instruction set available.
macro_rules! simd_kernel {
    ($(#[$meta:meta])* fn $name:ident($($arg:ident: $ty:ty),* $(,)?) $body:block) => {
        $(#[$meta])*
        pub fn $name($($arg: $ty),*) {
            #[inline(always)]
            fn imp($($arg: $ty),*) $body
            #[cfg(target_arch = "x86_64")]
            {
                #[target_feature(enable = "avx512f")]
                unsafe fn v4($($arg: $ty),*) {
                    imp($($arg),*)
                }
                #[target_feature(enable = "avx2,fma")]
                unsafe fn v3($($arg: $ty),*) {
                    imp($($arg),*)
                }
                if std::is_x86_feature_detected!("avx512f") {
                    // SAFETY: the CPU supports AVX-512F.
                    return unsafe { v4($($arg),*) };
                }
                if std::is_x86_feature_detected!("avx2") && std::is_x86_feature_detected!("fma") {
                    // SAFETY: the CPU supports AVX2 and FMA.
                    return unsafe { v3($($arg),*) };
                }
            }
            imp($($arg),*)
        }
    };
}

/// `exp(x)` without branches; inputs below about -87.3 give ~1e-38 instead of 0
/// and inputs above 88.7 give about 3e38 instead of infinity.
#[inline(always)]
fn exp(x: f32) -> f32 {
    const LOG2E: f32 = std::f32::consts::LOG2_E;
    const LN2_HI: f32 = 0.693_359_4;
    const LN2_LO: f32 = -2.121_944_4e-4;
    // clamp keeps NaN, so NaN propagates as in libm.
    let x = x.clamp(-87.3, 88.7);
    let n = (x * LOG2E + 0.5).floor();
    let r = x - n * LN2_HI - n * LN2_LO;
    let mut p = 1.987_569_1e-4f32;
    p = p * r + 1.398_199_9e-3;
    p = p * r + 8.333_452e-3;
    p = p * r + 4.166_579_6e-2;
    p = p * r + 1.666_666_5e-1;
    p = p * r + 0.5;
    let y = p * r * r + r + 1.0;
    // 2^n from the bits of n + 1.5·2^23, whose low mantissa bits hold n: integer
    // ops only, so the loop stays vectorised (an `as i32` cast would not).
    let magic = (n + 12_582_912.0).to_bits();
    let scale = f32::from_bits(magic.wrapping_sub(0x4B40_0000 - 127) << 23);
    y * scale
}

/// `erf(x)` (Abramowitz & Stegun 7.1.26 with the fast `exp`; |error| < 2e-7).
#[inline(always)]
fn erf(x: f32) -> f32 {
    let a = x.abs();
    let t = 1.0 / (1.0 + 0.327_591_1 * a);
    let mut p = 1.061_405_4f32;
    p = p * t - 1.453_152_1;
    p = p * t + 1.421_413_8;
    p = p * t - 0.284_496_74;
    p = p * t + 0.254_829_6;
    let y = 1.0 - p * t * exp(-a * a);
    y.copysign(x)
}

/// The exact (erf) GELU of `torch.nn.functional.gelu`.
#[inline(always)]
fn gelu(x: f32) -> f32 {
    0.5 * x * (1.0 + erf(x * std::f32::consts::FRAC_1_SQRT_2))
}

/// Lanes of the partial reductions, so that they vectorise without reassociation.
const LANES: usize = 16;

/// The larger of two values by a plain comparison (one `maxps`); NaN is not
/// singled out, which is enough where NaN propagates through later arithmetic.
#[inline(always)]
fn max2(a: f32, b: f32) -> f32 {
    if b > a {
        b
    } else {
        a
    }
}

/// Maximum of `xs` (−∞ when empty; NaNs are skipped).
#[inline(always)]
fn max_of(xs: &[f32]) -> f32 {
    let mut acc = [f32::NEG_INFINITY; LANES];
    let chunks = xs.chunks_exact(LANES);
    let tail = chunks.remainder();
    for chunk in chunks {
        for (a, &v) in acc.iter_mut().zip(chunk) {
            *a = max2(*a, v);
        }
    }
    let head = acc.iter().fold(f32::NEG_INFINITY, |m, &v| max2(m, v));
    tail.iter().fold(head, |m, &v| max2(m, v))
}

/// Sum of `xs`, in `LANES` partial sums.
#[inline(always)]
fn sum_of(xs: &[f32]) -> f32 {
    let mut acc = [0f32; LANES];
    let chunks = xs.chunks_exact(LANES);
    let tail = chunks.remainder();
    for chunk in chunks {
        for (a, &v) in acc.iter_mut().zip(chunk) {
            *a += v;
        }
    }
    acc.iter().sum::<f32>() + tail.iter().sum::<f32>()
}

simd_kernel! {
    /// Softmax of every `cols`-long row of `rows`, in place.
    fn softmax_rows(rows: &mut [f32], cols: usize) {
        for row in rows.chunks_exact_mut(cols) {
            let max = max_of(row);
            for v in row.iter_mut() {
                *v = exp(*v - max);
            }
            let inv = 1.0 / sum_of(row);
            for v in row.iter_mut() {
                *v *= inv;
            }
        }
    }
}

simd_kernel! {
    /// Replaces every `cols`-long row of `rows` by `exp(row − max(row))` and
    /// writes `1 / Σ` of each row to `inv_sums`: a softmax whose normalisation
    /// is left to the caller.
    fn exp_rows(rows: &mut [f32], cols: usize, inv_sums: &mut [f32]) {
        for (row, inv) in rows.chunks_exact_mut(cols).zip(inv_sums.iter_mut()) {
            let max = max_of(row);
            // exp and the partial sums in one pass.
            let mut acc = [0f32; LANES];
            let mut chunks = row.chunks_exact_mut(LANES);
            for chunk in &mut chunks {
                for (a, v) in acc.iter_mut().zip(chunk.iter_mut()) {
                    *v = exp(*v - max);
                    *a += *v;
                }
            }
            let mut sum = acc.iter().sum::<f32>();
            for v in chunks.into_remainder() {
                *v = exp(*v - max);
                sum += *v;
            }
            *inv = 1.0 / sum;
        }
    }
}

simd_kernel! {
    /// Sum and sum of squares of `xs − pivot`, as f64 (for normalisation statistics).
    fn shifted_moments(xs: &[f32], pivot: f32, out: &mut [f64; 2]) {
        // f32 lanes per block of 4096 values, blocks summed in f64.
        for block in xs.chunks(4096) {
            let mut s1 = [0f32; LANES];
            let mut s2 = [0f32; LANES];
            let chunks = block.chunks_exact(LANES);
            let tail = chunks.remainder();
            for chunk in chunks {
                for ((a, b), &v) in s1.iter_mut().zip(s2.iter_mut()).zip(chunk) {
                    let d = v - pivot;
                    *a += d;
                    *b += d * d;
                }
            }
            out[0] += s1.iter().map(|&v| f64::from(v)).sum::<f64>();
            out[1] += s2.iter().map(|&v| f64::from(v)).sum::<f64>();
            for &v in tail {
                let d = f64::from(v - pivot);
                out[0] += d;
                out[1] += d * d;
            }
        }
    }
}

simd_kernel! {
    /// `dst = silu(src · scale + offset)` (or without SiLU when `silu` is false).
    fn affine_silu(dst: &mut [f32], src: &[f32], scale: f32, offset: f32, silu: bool) {
        if silu {
            for (d, &v) in dst.iter_mut().zip(src) {
                let y = v * scale + offset;
                *d = y / (1.0 + exp(-y));
            }
        } else {
            for (d, &v) in dst.iter_mut().zip(src) {
                *d = v * scale + offset;
            }
        }
    }
}

simd_kernel! {
    /// `dst = gelu(src)` (exact, erf-based GELU), elementwise.
    fn gelu_slice(dst: &mut [f32], src: &[f32]) {
        for (d, &x) in dst.iter_mut().zip(src) {
            *d = gelu(x);
        }
    }
}

simd_kernel! {
    /// `dst = src · sigmoid(1.702 · src)` (CLIP's "quick GELU"), elementwise.
    fn quick_gelu_slice(dst: &mut [f32], src: &[f32]) {
        for (d, &x) in dst.iter_mut().zip(src) {
            *d = x / (1.0 + exp(-1.702 * x));
        }
    }
}

simd_kernel! {
    /// `dst = value · gelu(gate)`, elementwise.
    fn geglu(dst: &mut [f32], value: &[f32], gate: &[f32]) {
        for ((d, &v), &g) in dst.iter_mut().zip(value).zip(gate) {
            *d = v * gelu(g);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exp_and_erf_are_accurate() {
        for i in -2000..=2000 {
            let x = i as f32 * 0.04;
            let rel = (exp(x) - x.exp()).abs() / x.exp();
            assert!(rel < 3e-7, "exp({x}): {} vs {}", exp(x), x.exp());
            let want = libm_erf(f64::from(x));
            assert!((f64::from(erf(x)) - want).abs() < 3e-7, "erf({x})");
        }
        assert_eq!(exp(f32::NEG_INFINITY).min(1e-30), exp(f32::NEG_INFINITY));
        assert!(exp(f32::NAN).is_nan());
    }

    /// erf by its Taylor series (|x| < 3) or its asymptotic complement, in f64.
    fn libm_erf(x: f64) -> f64 {
        if x.abs() < 3.0 {
            let mut term = x;
            let mut sum = x;
            for n in 1..200 {
                term *= -x * x / n as f64;
                sum += term / (2 * n + 1) as f64;
            }
            sum * 2.0 / std::f64::consts::PI.sqrt()
        } else {
            let mut erfc = 0.0;
            let mut t = 1.0;
            for n in 0..6 {
                erfc += t;
                t *= -((2 * n + 1) as f64) / (2.0 * x * x);
            }
            let erfc = erfc * (-x * x).exp() / (x.abs() * std::f64::consts::PI.sqrt());
            (1.0 - erfc).copysign(x)
        }
    }

    #[test]
    fn kernels_match_their_definitions() {
        let xs: Vec<f32> = (0..37).map(|i| (i as f32 - 18.0) * 0.37).collect();
        let mut rows = xs.clone();
        softmax_rows(&mut rows, 37);
        let max = xs.iter().fold(f32::MIN, |m, &v| m.max(v));
        let total: f32 = xs.iter().map(|v| (v - max).exp()).sum();
        for (got, x) in rows.iter().zip(&xs) {
            assert!((got - (x - max).exp() / total).abs() < 1e-7);
        }
        let mut out = vec![0f32; xs.len()];
        affine_silu(&mut out, &xs, 2.0, -1.0, true);
        for (got, x) in out.iter().zip(&xs) {
            let y = 2.0 * x - 1.0;
            assert!((got - y / (1.0 + (-y).exp())).abs() < 1e-6);
        }
        geglu(&mut out, &xs, &xs);
        for (got, x) in out.iter().zip(&xs) {
            let want = x * 0.5 * x * (1.0 + libm_erf(f64::from(*x) / 2f64.sqrt()) as f32);
            assert!(
                (got - want).abs() < 1e-5 * want.abs().max(1.0),
                "{x}: {got} vs {want}"
            );
        }
    }
}

simd_kernel! {
    /// `dst = src` widened from bf16 (given as its bits) to f32: a 16-bit shift,
    /// exact for every value (NaNs stay NaN).
    fn widen_bf16(dst: &mut [f32], src: &[u16]) {
        for (d, &bits) in dst.iter_mut().zip(src) {
            *d = f32::from_bits(u32::from(bits) << 16);
        }
    }
}
