//! Counts of the multiply-adds the CPU kernels do (linear layers, convolutions
//! as computed, so Winograd's reduced count and the padded columns of the
//! direct kernel included, and attention's two products), split by
//! arithmetic: what a benchmark divides by the machine's peak.

use std::sync::atomic::{AtomicU64, Ordering};

static F32: AtomicU64 = AtomicU64::new(0);
static BF16: AtomicU64 = AtomicU64::new(0);

/// Multiply-adds done since the process started.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct MultiplyAdds {
    /// In f32 arithmetic.
    pub f32: u64,
    /// With bf16 operands (f32 sums).
    pub bf16: u64,
}

impl MultiplyAdds {
    /// The counts done since `earlier`.
    pub fn since(self, earlier: Self) -> Self {
        Self {
            f32: self.f32.wrapping_sub(earlier.f32),
            bf16: self.bf16.wrapping_sub(earlier.bf16),
        }
    }
}

/// The counts so far.
pub fn multiply_adds() -> MultiplyAdds {
    MultiplyAdds {
        f32: F32.load(Ordering::Relaxed),
        bf16: BF16.load(Ordering::Relaxed),
    }
}

/// Adds `count` multiply-adds in bf16 (`bf16`) or f32 arithmetic.
pub(crate) fn record(bf16: bool, count: usize) {
    let counter = if bf16 { &BF16 } else { &F32 };
    counter.fetch_add(count as u64, Ordering::Relaxed);
}
