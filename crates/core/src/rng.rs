//! PyTorch's CPU random number generator, reproduced bit for bit.
//!
//! [`TorchRng`] gives the same numbers as
//! `torch.randn(shape, generator=torch.Generator("cpu").manual_seed(seed))` in
//! `float32`, so a seed means the same starting latents here and in diffusers.
//!
//! What torch does, and what this module mirrors:
//! - The engine is a 32-bit Mersenne Twister seeded with the low 32 bits of the
//!   seed (`at::mt19937`).
//! - A request for 16 or more values first draws one 24-bit uniform per value,
//!   then turns each block of 16 into normals with Box-Muller (`u1 = 1 - x[j]`,
//!   `u2 = x[j + 8]` for `j < 8`). When the count is not a multiple of 16 the last
//!   16 values are drawn again from fresh uniforms and transformed once more.
//!   On x86 torch does that transform with 8-lane AVX2 code using the Cephes
//!   single-precision `log` and `sincos` approximations, compiled with fused
//!   multiply-adds; [`box_muller_16`] evaluates the same operations in the same
//!   order, so the results agree to the last bit. (Torch builds without AVX2,
//!   such as ARM ones, use the C library's `logf`/`cosf`/`sinf` there instead and
//!   may differ from this stream in the last bit.)
//! - A request for fewer than 16 values draws each value from a double-precision
//!   Box-Muller that produces two normals at a time and keeps the second one in
//!   the generator for the next small request.

use candle_core::{Device, Tensor};

/// A random stream that matches `torch.Generator("cpu")` for normal samples.
#[derive(Clone)]
pub struct TorchRng {
    engine: Mt19937,
    cached_normal: Option<f64>,
}

impl std::fmt::Debug for TorchRng {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TorchRng")
            .field("index", &self.engine.index)
            .field("cached_normal", &self.cached_normal)
            .finish_non_exhaustive()
    }
}

impl TorchRng {
    /// A generator in the state `torch.Generator("cpu").manual_seed(seed)` leaves it in.
    ///
    /// Like torch, only the low 32 bits of `seed` reach the engine.
    pub fn new(seed: u64) -> Self {
        TorchRng {
            engine: Mt19937::new(seed as u32),
            cached_normal: None,
        }
    }

    /// `numel` standard normal samples, the values of
    /// `torch.randn(numel, generator=g, dtype=torch.float32)`.
    ///
    /// The stream depends only on the element count, so the result also equals
    /// `torch.randn(shape)` flattened for any `shape` with `numel` elements.
    pub fn randn(&mut self, numel: usize) -> Vec<f32> {
        if numel >= 16 {
            self.randn_blocks(numel)
        } else {
            (0..numel).map(|_| self.normal_f64() as f32).collect()
        }
    }

    /// [`TorchRng::randn`] for `shape`, as an `f32` tensor on `device`.
    pub fn randn_tensor(
        &mut self,
        shape: &[usize],
        device: &Device,
    ) -> candle_core::Result<Tensor> {
        let numel = shape.iter().product();
        Tensor::from_vec(self.randn(numel), shape, device)
    }

    /// The vectorised path torch takes for 16 or more contiguous `float32` values.
    fn randn_blocks(&mut self, numel: usize) -> Vec<f32> {
        let mut data: Vec<f32> = (0..numel).map(|_| self.uniform_f32()).collect();
        for block in data.chunks_exact_mut(16) {
            box_muller_16(block);
        }
        if !numel.is_multiple_of(16) {
            let tail = &mut data[numel - 16..];
            for x in tail.iter_mut() {
                *x = self.uniform_f32();
            }
            box_muller_16(tail);
        }
        data
    }

    /// A uniform in `[0, 1)` with 24 random bits, as `uniform_real_distribution<float>`.
    fn uniform_f32(&mut self) -> f32 {
        (self.engine.next_u32() & 0x00ff_ffff) as f32 * (1.0 / 16_777_216.0)
    }

    /// A uniform in `[0, 1)` with 53 random bits, as `uniform_real_distribution<double>`.
    fn uniform_f64(&mut self) -> f64 {
        let hi = u64::from(self.engine.next_u32());
        let lo = u64::from(self.engine.next_u32());
        (((hi << 32) | lo) & ((1 << 53) - 1)) as f64 * (1.0 / 9_007_199_254_740_992.0)
    }

    /// One sample of `at::normal_distribution<double>(0, 1)`, using and refilling
    /// the generator's cached second sample.
    fn normal_f64(&mut self) -> f64 {
        if let Some(cached) = self.cached_normal.take() {
            return cached;
        }
        let u1 = self.uniform_f64();
        let u2 = self.uniform_f64();
        let radius = (-2.0 * (-u2).ln_1p()).sqrt();
        let theta = 2.0 * std::f64::consts::PI * u1;
        self.cached_normal = Some(radius * theta.sin());
        radius * theta.cos()
    }
}

/// Box-Muller on 16 uniforms in place, as torch's AVX2 `normal_fill_16`.
fn box_muller_16(data: &mut [f32]) {
    let two_pi = (2.0 * std::f64::consts::PI) as f32;
    for j in 0..8 {
        let u1 = 1.0 - data[j];
        let u2 = data[j + 8];
        let radius = (-2.0 * cephes::log(u1)).sqrt();
        let (sin, cos) = cephes::sincos(two_pi * u2);
        data[j] = radius * cos;
        data[j + 8] = radius * sin;
    }
}

/// The Cephes single-precision approximations torch's `avx_mathfun.h` vectorises,
/// one lane at a time, with the multiply-adds the compiler fuses there.
mod cephes {
    const LOG_POLY: [f32; 9] = [
        7.037_683_6e-2,
        -1.151_461e-1,
        1.167_699_84e-1,
        -1.242_014_1e-1,
        1.424_932_3e-1,
        -1.666_805_8e-1,
        2.000_071_4e-1,
        -2.499_999_4e-1,
        0.333_333_3,
    ];
    /// `ln 2` split in a part exact in few bits and a small correction.
    const LN2_HI: f32 = 0.693_359_4;
    const LN2_LO: f32 = -2.121_944_4e-4;

    /// Natural logarithm for positive normal `x`.
    pub(super) fn log(x: f32) -> f32 {
        let x = x.max(f32::MIN_POSITIVE);
        let bits = x.to_bits();
        let mut exponent = ((bits >> 23) as i32 - 0x7f) as f32 + 1.0;
        // The mantissa scaled into [0.5, 1).
        let mut m = f32::from_bits((bits & !0x7f80_0000) | 0.5f32.to_bits());
        if m < std::f32::consts::FRAC_1_SQRT_2 {
            exponent -= 1.0;
            m = m - 1.0 + m;
        } else {
            m -= 1.0;
        }
        let z = m * m;
        let mut y = LOG_POLY[0];
        for &c in &LOG_POLY[1..] {
            y = y.mul_add(m, c);
        }
        y *= m;
        y = y.mul_add(z, exponent * LN2_LO);
        y -= z * 0.5;
        exponent.mul_add(LN2_HI, m + y)
    }

    const FOUR_OVER_PI: f32 = 1.273_239_5;
    /// `-pi/4` in three parts for the extended-precision range reduction.
    const MINUS_DP: [f32; 3] = [-0.785_156_25, -2.418_756_5e-4, -3.774_895e-8];
    const SIN_POLY: [f32; 3] = [-1.951_529_6e-4, 8.332_161e-3, -1.666_665_5e-1];
    const COS_POLY: [f32; 3] = [2.443_315_7e-5, -1.388_731_6e-3, 4.166_664_6e-2];

    /// `(sin x, cos x)` for moderate `x` (torch only passes `[0, 2pi)`).
    pub(super) fn sincos(x: f32) -> (f32, f32) {
        let negative = x.is_sign_negative();
        let mut x = x.abs();
        let octant = (((x * FOUR_OVER_PI) as i32) + 1) & !1;
        let y = octant as f32;
        for dp in MINUS_DP {
            x = y.mul_add(dp, x);
        }
        let z = x * x;

        let mut cos_poly = COS_POLY[0].mul_add(z, COS_POLY[1]);
        cos_poly = cos_poly.mul_add(z, COS_POLY[2]);
        cos_poly *= z;
        cos_poly = cos_poly.mul_add(z, -(z * 0.5));
        cos_poly += 1.0;

        let mut sin_poly = SIN_POLY[0].mul_add(z, SIN_POLY[1]);
        sin_poly = sin_poly.mul_add(z, SIN_POLY[2]);
        sin_poly *= z;
        sin_poly = sin_poly.mul_add(x, x);

        let (sin, cos) = if octant & 2 == 0 {
            (sin_poly, cos_poly)
        } else {
            (cos_poly, sin_poly)
        };
        let sin_negative = negative ^ (octant & 4 != 0);
        let cos_negative = (!(octant - 2)) & 4 != 0;
        (
            if sin_negative { -sin } else { sin },
            if cos_negative { -cos } else { cos },
        )
    }
}

/// The 32-bit Mersenne Twister with torch's (and the reference) seeding.
#[derive(Clone)]
struct Mt19937 {
    state: [u32; 624],
    index: usize,
}

impl Mt19937 {
    const N: usize = 624;
    const M: usize = 397;

    fn new(seed: u32) -> Self {
        let mut state = [0u32; Self::N];
        state[0] = seed;
        for i in 1..Self::N {
            let prev = state[i - 1];
            state[i] = 1_812_433_253u32
                .wrapping_mul(prev ^ (prev >> 30))
                .wrapping_add(i as u32);
        }
        Mt19937 {
            state,
            index: Self::N,
        }
    }

    fn twist(&mut self) {
        for i in 0..Self::N {
            let mixed =
                (self.state[i] & 0x8000_0000) | (self.state[(i + 1) % Self::N] & 0x7fff_ffff);
            let mut next = self.state[(i + Self::M) % Self::N] ^ (mixed >> 1);
            if mixed & 1 != 0 {
                next ^= 0x9908_b0df;
            }
            self.state[i] = next;
        }
        self.index = 0;
    }

    fn next_u32(&mut self) -> u32 {
        if self.index >= Self::N {
            self.twist();
        }
        let mut y = self.state[self.index];
        self.index += 1;
        y ^= y >> 11;
        y ^= (y << 7) & 0x9d2c_5680;
        y ^= (y << 15) & 0xefc6_0000;
        y ^ (y >> 18)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mersenne_twister_matches_the_reference_stream() {
        // The 10000th output of std::mt19937 with its default seed 5489 is
        // fixed by the C++ standard.
        let mut mt = Mt19937::new(5489);
        let mut last = 0;
        for _ in 0..10_000 {
            last = mt.next_u32();
        }
        assert_eq!(last, 4_123_659_995);
    }

    #[test]
    fn seeds_use_their_low_32_bits() {
        let a = TorchRng::new(7).randn(20);
        let b = TorchRng::new((1 << 32) + 7).randn(20);
        assert_eq!(a, b);
    }

    #[test]
    fn cephes_log_and_sincos_are_accurate() {
        for i in 1..=1000 {
            let x = i as f32 / 1000.0;
            assert!((cephes::log(x) - x.ln()).abs() <= 2e-7 * x.ln().abs().max(1.0));
            let t = x * std::f32::consts::TAU;
            let (s, c) = cephes::sincos(t);
            assert!((s - t.sin()).abs() < 2e-7, "sin({t})");
            assert!((c - t.cos()).abs() < 2e-7, "cos({t})");
        }
    }

    #[test]
    fn small_requests_share_the_cached_sample() {
        let mut rng = TorchRng::new(3);
        let first = rng.randn(1)[0];
        let second = rng.randn(1)[0];
        let mut again = TorchRng::new(3);
        assert_eq!(again.randn(2), vec![first, second]);
    }
}
