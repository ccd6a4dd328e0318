//! bf16 arithmetic on CPUs with AVX512-BF16: matrix products whose operands are
//! rounded to bfloat16 and whose sums are accumulated in f32.
//!
//! Layers built from bf16 weights (`--dtype bf16`) keep them packed once, at
//! load, as a [`PairMatrix`]; the f32 activations they meet are rounded and
//! packed the same way per call. Where the CPU lacks AVX512-BF16, or the
//! arithmetic is switched off with [`set_enabled`], those layers keep today's
//! path instead: the bf16 weights widened to f32 per call and f32 products.
//!
//! - `pack`: rounding f32 to bf16 and the pair layout both operands use;
//! - `kernel`: the AVX512-BF16 micro-kernel and its cache blocking.

mod kernel;
mod pack;
#[cfg(test)]
mod tests;

use std::sync::atomic::{AtomicU8, Ordering};

pub(crate) use kernel::{gemm, gemm_parallel, Dst, Lhs};
pub(crate) use pack::{pack_pairs, PairLayout, PairMatrix};

/// The matrix-product kernel a layer with bf16 weights runs on this process.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Bf16Kernel {
    /// bf16 operands, f32 sums, by `vdpbf16ps` (AVX512-BF16).
    Avx512Bf16,
    /// The weights widened to f32 per call and multiplied by the f32 GEMM.
    WidenToF32,
}

impl Bf16Kernel {
    /// A short name for logs and benchmark reports.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Avx512Bf16 => "bf16 avx512-bf16 (f32 sums)",
            Self::WidenToF32 => "f32 gemm (bf16 weights widened)",
        }
    }
}

/// Whether this CPU has the AVX512-BF16 instructions (and AVX-512F).
pub fn cpu_has_avx512_bf16() -> bool {
    #[cfg(target_arch = "x86_64")]
    {
        std::is_x86_feature_detected!("avx512f") && std::is_x86_feature_detected!("avx512bf16")
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        false
    }
}

/// 0: not decided yet, 1: on, 2: off.
static STATE: AtomicU8 = AtomicU8::new(0);

/// The kernel layers built from now on use for bf16 weights: AVX512-BF16 when
/// the CPU has it and it is not switched off, else the widening path.
pub fn kernel() -> Bf16Kernel {
    let state = match STATE.load(Ordering::Relaxed) {
        0 => {
            let on = if cpu_has_avx512_bf16() { 1 } else { 2 };
            // Another thread may have decided meanwhile; its choice stands.
            let _ = STATE.compare_exchange(0, on, Ordering::Relaxed, Ordering::Relaxed);
            STATE.load(Ordering::Relaxed)
        }
        s => s,
    };
    if state == 1 {
        Bf16Kernel::Avx512Bf16
    } else {
        Bf16Kernel::WidenToF32
    }
}

/// Switches bf16 arithmetic on (where the CPU has it) or off for the layers
/// built from now on; returns the kernel they will use.
pub fn set_enabled(enabled: bool) -> Bf16Kernel {
    let on = enabled && cpu_has_avx512_bf16();
    STATE.store(if on { 1 } else { 2 }, Ordering::Relaxed);
    kernel()
}
