//! The activations diffusers selects by name (`act_fn` and friends).

use candle_core::{Result, Tensor};

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
}
