//! The activations diffusers selects by name (`act_fn` and friends).

use candle_core::{CpuStorage, CustomOp1, DType, Device, Layout, Result, Shape, Tensor};
use rayon::prelude::*;

use super::kernels;

/// An activation named in a diffusers config, as `diffusers.models.activations.get_activation`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Activation {
    /// `silu` / `swish`: `x * sigmoid(x)`.
    Silu,
    /// `mish`: `x * tanh(softplus(x))`.
    Mish,
    /// `gelu`: the exact (erf) GELU of `torch.nn.GELU()`.
    Gelu,
    /// `relu`.
    Relu,
}

impl Activation {
    /// Parses a diffusers activation name; the error names the accepted values.
    pub fn from_name(name: &str) -> std::result::Result<Self, String> {
        match name {
            "silu" | "swish" => Ok(Self::Silu),
            "mish" => Ok(Self::Mish),
            "gelu" => Ok(Self::Gelu),
            "relu" => Ok(Self::Relu),
            other => Err(format!(
                "unsupported activation {other:?} (expected silu, swish, mish, gelu or relu)"
            )),
        }
    }

    /// Applies the activation elementwise.
    pub fn forward(self, xs: &Tensor) -> Result<Tensor> {
        match self {
            Self::Silu => xs.silu(),
            Self::Gelu => xs.gelu_erf(),
            Self::Relu => xs.relu(),
            Self::Mish => {
                let softplus = (xs.exp()? + 1.0)?.log()?;
                xs * softplus.tanh()?
            }
        }
    }
}

/// The exact (erf) GELU, as `torch.nn.functional.gelu`; vectorised on the f32 CPU path.
pub fn gelu_erf(xs: &Tensor) -> Result<Tensor> {
    elementwise(xs, Elementwise::Gelu)
}

/// CLIP's `quick_gelu`: `x · sigmoid(1.702 x)`; vectorised on the f32 CPU path.
pub fn quick_gelu(xs: &Tensor) -> Result<Tensor> {
    elementwise(xs, Elementwise::QuickGelu)
}

#[derive(Clone, Copy)]
enum Elementwise {
    Gelu,
    QuickGelu,
}

fn elementwise(xs: &Tensor, op: Elementwise) -> Result<Tensor> {
    if xs.dtype() == DType::F32 && matches!(xs.device(), Device::Cpu) {
        return xs.contiguous()?.apply_op1_no_bwd(&ElementwiseOp(op));
    }
    match op {
        Elementwise::Gelu => xs.gelu_erf(),
        Elementwise::QuickGelu => xs * candle_nn::ops::sigmoid(&(xs * 1.702)?)?,
    }
}

struct ElementwiseOp(Elementwise);

impl CustomOp1 for ElementwiseOp {
    fn name(&self) -> &'static str {
        match self.0 {
            Elementwise::Gelu => "gelu",
            Elementwise::QuickGelu => "quick-gelu",
        }
    }

    fn cpu_fwd(&self, storage: &CpuStorage, layout: &Layout) -> Result<(CpuStorage, Shape)> {
        let CpuStorage::F32(data) = storage else {
            candle_core::bail!("{}: expected f32 input", self.name());
        };
        let Some((start, end)) = layout.contiguous_offsets() else {
            candle_core::bail!("{}: expected a contiguous input", self.name());
        };
        let input = &data[start..end];
        let mut out = vec![0f32; input.len()];
        out.par_chunks_mut(16384)
            .zip(input.par_chunks(16384))
            .for_each(|(d, s)| match self.0 {
                Elementwise::Gelu => kernels::gelu_slice(d, s),
                Elementwise::QuickGelu => kernels::quick_gelu_slice(d, s),
            });
        Ok((CpuStorage::F32(out), layout.shape().clone()))
    }
}

/// GEGLU: splits the last dimension of `xs` into `[value, gate]` halves and
/// returns `value * gelu(gate)` (exact GELU), as diffusers' `GEGLU` after its projection.
pub fn geglu(xs: &Tensor) -> Result<Tensor> {
    let last = xs.rank().checked_sub(1).map(|d| xs.dims()[d]).unwrap_or(0);
    if last == 0 || !last.is_multiple_of(2) {
        candle_core::bail!("geglu: last dimension of {:?} is not even", xs.dims());
    }
    let half = last / 2;
    if xs.dtype() == DType::F32 && matches!(xs.device(), Device::Cpu) {
        return xs.contiguous()?.apply_op1_no_bwd(&Geglu);
    }
    let d = xs.rank() - 1;
    let value = xs.narrow(d, 0, half)?;
    let gate = xs.narrow(d, half, half)?;
    value * gate.gelu_erf()?
}

struct Geglu;

impl CustomOp1 for Geglu {
    fn name(&self) -> &'static str {
        "geglu"
    }

    fn cpu_fwd(&self, storage: &CpuStorage, layout: &Layout) -> Result<(CpuStorage, Shape)> {
        let CpuStorage::F32(data) = storage else {
            candle_core::bail!("geglu: expected f32 input");
        };
        let Some((start, end)) = layout.contiguous_offsets() else {
            candle_core::bail!("geglu: expected a contiguous input");
        };
        let input = &data[start..end];
        let mut dims = layout.shape().dims().to_vec();
        let half = dims[dims.len() - 1] / 2;
        let mut out = vec![0f32; input.len() / 2];
        // Rows in groups, so each task is large enough to amortise scheduling.
        let group = (16384 / half).max(1);
        out.par_chunks_mut(group * half)
            .zip(input.par_chunks(group * 2 * half))
            .for_each(|(dst, src)| {
                for (d, s) in dst.chunks_exact_mut(half).zip(src.chunks_exact(2 * half)) {
                    let (value, gate) = s.split_at(half);
                    kernels::geglu(d, value, gate);
                }
            });
        let last = dims.len() - 1;
        dims[last] = half;
        Ok((CpuStorage::F32(out), Shape::from(dims)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::Device;

    #[test]
    fn names_and_values() {
        assert_eq!(Activation::from_name("swish").unwrap(), Activation::Silu);
        assert!(Activation::from_name("tanh").unwrap_err().contains("tanh"));
        let xs = Tensor::new(&[-1.0f32, 0.5], &Device::Cpu).unwrap();
        let mish = Activation::Mish
            .forward(&xs)
            .unwrap()
            .to_vec1::<f32>()
            .unwrap();
        // torch.nn.functional.mish(torch.tensor([-1.0, 0.5]))
        assert!((mish[0] - -0.303_401_4).abs() < 1e-6);
        assert!((mish[1] - 0.375_245_2).abs() < 1e-6);
    }

    #[test]
    fn gelus_match_candle() {
        let xs = Tensor::randn(0f32, 3.0, (3, 50), &Device::Cpu).unwrap();
        let close = |a: Tensor, b: Tensor| {
            let diff = (a - b).unwrap().abs().unwrap().max_all().unwrap();
            assert!(diff.to_scalar::<f32>().unwrap() < 1e-5);
        };
        close(gelu_erf(&xs).unwrap(), xs.gelu_erf().unwrap());
        let quick = (&xs * candle_nn::ops::sigmoid(&(&xs * 1.702).unwrap()).unwrap()).unwrap();
        close(quick_gelu(&xs).unwrap(), quick);
    }

    #[test]
    fn geglu_matches_the_unfused_form() {
        let xs = Tensor::randn(0f32, 2.0, (2, 3, 10), &Device::Cpu).unwrap();
        let want = (xs.narrow(2, 0, 5).unwrap() * xs.narrow(2, 5, 5).unwrap().gelu_erf().unwrap())
            .unwrap();
        let got = geglu(&xs).unwrap();
        assert_eq!(got.dims(), [2, 3, 5]);
        let diff = (got - want).unwrap().abs().unwrap().max_all().unwrap();
        assert!(diff.to_scalar::<f32>().unwrap() < 1e-5);
    }
}
