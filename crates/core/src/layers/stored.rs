//! Weight matrices kept on the CPU in f32, bf16 or f16 and widened to f32
//! right before the f32 kernels read them.
//!
//! Storing the large matrices in 16 bits halves their memory; every product is
//! still computed in f32, on exactly the values the 16-bit weights hold, so a
//! layer built from bf16 weights gives bit for bit what the f32 layer built
//! from the same weights widened to f32 gives.

use std::borrow::Cow;
use std::sync::Arc;

use candle_core::{DType, Result, Tensor};
use half::{bf16, f16, slice::HalfFloatSliceExt};
use rayon::prelude::*;

use super::kernels;

/// Values widened per rayon task.
const WIDEN_CHUNK: usize = 1 << 16;

/// A flat weight buffer in its storage dtype.
#[derive(Debug, Clone)]
pub(crate) enum StoredWeights {
    /// 32-bit floats, used as they are.
    F32(Arc<[f32]>),
    /// bfloat16, widened per call.
    Bf16(Arc<[bf16]>),
    /// IEEE half, widened per call.
    F16(Arc<[f16]>),
}

impl StoredWeights {
    /// The values of a CPU tensor (in row-major order), in its own dtype when
    /// that is f32, bf16 or f16; `None` for any other dtype.
    pub(crate) fn from_tensor(t: &Tensor) -> Result<Option<Self>> {
        let t = t.flatten_all()?;
        Ok(Some(match t.dtype() {
            DType::F32 => Self::F32(Arc::from(t.to_vec1::<f32>()?)),
            DType::BF16 => Self::Bf16(Arc::from(t.to_vec1::<bf16>()?)),
            DType::F16 => Self::F16(Arc::from(t.to_vec1::<f16>()?)),
            _ => return Ok(None),
        }))
    }

    /// The values as f32: borrowed when stored in f32, else a widened copy.
    pub(crate) fn to_f32(&self) -> Cow<'_, [f32]> {
        match self {
            Self::F32(v) => Cow::Borrowed(v),
            Self::Bf16(v) => Cow::Owned(widen_bf16(v)),
            Self::F16(v) => Cow::Owned(widen_f16(v)),
        }
    }
}

/// bf16 values widened to f32, in parallel chunks.
pub(crate) fn widen_bf16(src: &[bf16]) -> Vec<f32> {
    let mut dst = vec![0f32; src.len()];
    dst.par_chunks_mut(WIDEN_CHUNK)
        .zip(src.par_chunks(WIDEN_CHUNK))
        .for_each(|(d, s)| kernels::widen_bf16(d, s.reinterpret_cast()));
    dst
}

/// f16 values widened to f32 (F16C where the CPU has it), in parallel chunks.
pub(crate) fn widen_f16(src: &[f16]) -> Vec<f32> {
    let mut dst = vec![0f32; src.len()];
    dst.par_chunks_mut(WIDEN_CHUNK)
        .zip(src.par_chunks(WIDEN_CHUNK))
        .for_each(|(d, s)| s.convert_to_f32_slice(d));
    dst
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn widening_is_exact() {
        let values: Vec<f32> = (0..200_003)
            .map(|i| ((i as f32) * 0.731).sin() * 10f32.powi(i % 9 - 4))
            .chain([0.0, -0.0, f32::INFINITY, f32::NEG_INFINITY, 1e-40])
            .collect();
        let b: Vec<bf16> = values.iter().map(|&v| bf16::from_f32(v)).collect();
        let h: Vec<f16> = values.iter().map(|&v| f16::from_f32(v)).collect();
        let want_b: Vec<u32> = b.iter().map(|v| v.to_f32().to_bits()).collect();
        let want_h: Vec<u32> = h.iter().map(|v| v.to_f32().to_bits()).collect();
        let got_b: Vec<u32> = widen_bf16(&b).iter().map(|v| v.to_bits()).collect();
        let got_h: Vec<u32> = widen_f16(&h).iter().map(|v| v.to_bits()).collect();
        assert_eq!(got_b, want_b);
        assert_eq!(got_h, want_h);
    }
}
