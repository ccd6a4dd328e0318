//! The sinusoidal timestep embedding (`Timesteps`) and its MLP (`TimestepEmbedding`).

use candle_core::{DType, Device, Module, Result, Tensor};
use candle_nn::{Linear, VarBuilder};

use crate::layers::Activation;

/// `get_timestep_embedding(timesteps, dim, flip_sin_to_cos, freq_shift)` for each value,
/// computed in f32 like diffusers: returns `[values.len(), dim]` f32.
///
/// Row `i` is `[sin(t·f), cos(t·f)]` (or `[cos, sin]` when flipped) with
/// `f_j = exp(-ln(10000) · j / (dim/2 - freq_shift))`, zero-padded when `dim` is odd.
pub fn timestep_embedding(
    values: &[f64],
    dim: usize,
    flip_sin_to_cos: bool,
    freq_shift: f64,
    device: &Device,
) -> Result<Tensor> {
    let half = dim / 2;
    let denominator = half as f32 - freq_shift as f32;
    let freqs: Vec<f32> = (0..half)
        .map(|j| {
            let exponent = -(10000f64.ln() as f32) * j as f32 / denominator;
            (exponent as f64).exp() as f32
        })
        .collect();
    let mut data = Vec::with_capacity(values.len() * dim);
    for &t in values {
        let t = t as f32;
        let args = freqs.iter().map(|f| t * f);
        let (sin, cos): (Vec<f32>, Vec<f32>) = args.map(|a| (a.sin(), a.cos())).unzip();
        if flip_sin_to_cos {
            data.extend(cos.iter().chain(sin.iter()));
        } else {
            data.extend(sin.iter().chain(cos.iter()));
        }
        if dim % 2 == 1 {
            data.push(0.0);
        }
    }
    Tensor::from_vec(data, (values.len(), dim), device)
}

/// diffusers' `TimestepEmbedding`: `linear_2(act(linear_1(x)))`, optionally followed by
/// `post_act`.
#[derive(Debug, Clone)]
pub struct TimestepEmbedding {
    linear_1: Linear,
    linear_2: Linear,
    act: Activation,
    post_act: Option<Activation>,
}

impl TimestepEmbedding {
    /// Loads `linear_1` (`in_dim` → `dim`) and `linear_2` (`dim` → `dim`), as f32.
    pub fn new(
        vb: VarBuilder,
        in_dim: usize,
        dim: usize,
        act: Activation,
        post_act: Option<Activation>,
    ) -> Result<Self> {
        let vb = vb.set_dtype(DType::F32);
        Ok(Self {
            linear_1: candle_nn::linear(in_dim, dim, vb.pp("linear_1"))?,
            linear_2: candle_nn::linear(dim, dim, vb.pp("linear_2"))?,
            act,
            post_act,
        })
    }

    /// `[B, in_dim]` → `[B, dim]`; the input is cast to the weights' dtype first.
    pub fn forward(&self, xs: &Tensor, dtype: DType) -> Result<Tensor> {
        let xs = self.linear_1.forward(&xs.to_dtype(dtype)?)?;
        let xs = self.linear_2.forward(&self.act.forward(&xs)?)?;
        match self.post_act {
            Some(act) => act.forward(&xs),
            None => Ok(xs),
        }
    }
}
