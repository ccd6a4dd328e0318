//! Tensor-by-scalar arithmetic as torch does it (the scalar rounded to the
//! tensor's dtype first, division kept a true division), and `clip_sample`'s clamp.

use candle_core::Tensor;

/// `tensor * c` with `c` rounded to the tensor's dtype, as torch multiplies by a 0-dim tensor.
pub(crate) fn mul(t: &Tensor, c: f32) -> candle_core::Result<Tensor> {
    t.broadcast_mul(&scalar_like(t, c)?)
}

/// `tensor / c`, a true division (not a multiplication by `1 / c`).
pub(crate) fn div(t: &Tensor, c: f32) -> candle_core::Result<Tensor> {
    t.broadcast_div(&scalar_like(t, c)?)
}

fn scalar_like(t: &Tensor, c: f32) -> candle_core::Result<Tensor> {
    Tensor::new(c, t.device())?.to_dtype(t.dtype())
}

/// `x` clamped to `[-r, r]` when a clip range is set (`clip_sample`).
pub(crate) fn clip(x: Tensor, range: Option<f32>) -> candle_core::Result<Tensor> {
    match range {
        Some(r) => x.clamp(-r, r),
        None => Ok(x),
    }
}
