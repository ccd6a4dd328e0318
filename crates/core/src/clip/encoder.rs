//! One pre-LN transformer layer of the CLIP text encoder and its parts.

use candle_core::{DType, Device, Module, Result, Tensor};
use candle_nn::VarBuilder;

use crate::layers::activation::{gelu_erf, quick_gelu};
use crate::layers::{LayerNorm, Linear};

use super::config::{ClipActivation, ClipTextConfig};

/// The additive causal mask `[seq, seq]`: 0 on and below the diagonal, -inf above,
/// so position `i` attends to positions `0..=i` only.
pub(crate) fn causal_mask(seq: usize, dtype: DType, device: &Device) -> Result<Tensor> {
    let mask: Vec<f32> = (0..seq)
        .flat_map(|i| (0..seq).map(move |j| if j > i { f32::NEG_INFINITY } else { 0.0 }))
        .collect();
    Tensor::from_vec(mask, (seq, seq), device)?.to_dtype(dtype)
}

/// Multi-head self-attention (`self_attn.{q,k,v,out}_proj`).
#[derive(Debug, Clone)]
struct Attention {
    q_proj: Linear,
    k_proj: Linear,
    v_proj: Linear,
    out_proj: Linear,
    num_heads: usize,
    head_dim: usize,
    scale: f64,
}

impl Attention {
    fn new(vb: VarBuilder, cfg: &ClipTextConfig) -> Result<Self> {
        let d = cfg.hidden_size;
        let head_dim = cfg.head_dim();
        Ok(Self {
            q_proj: Linear::new(vb.pp("q_proj"), d, d, true)?,
            k_proj: Linear::new(vb.pp("k_proj"), d, d, true)?,
            v_proj: Linear::new(vb.pp("v_proj"), d, d, true)?,
            out_proj: Linear::new(vb.pp("out_proj"), d, d, true)?,
            num_heads: cfg.num_attention_heads,
            head_dim,
            scale: (head_dim as f64).powf(-0.5),
        })
    }

    /// `xs`: `[batch, seq, hidden]`, `mask`: `[seq, seq]` added to the scores.
    /// Returns `residual + attention` `[batch, seq, hidden]`, the residual added
    /// in the output projection. The softmax runs in f32 whatever the dtype, as
    /// in transformers.
    fn forward(&self, xs: &Tensor, mask: &Tensor, residual: &Tensor) -> Result<Tensor> {
        let (b, s, d) = xs.dims3()?;
        let heads = |proj: &Linear| -> Result<Tensor> {
            proj.forward(xs)?
                .reshape((b, s, self.num_heads, self.head_dim))?
                .transpose(1, 2)?
                .contiguous()
        };
        let (q, k, v) = (
            heads(&self.q_proj)?,
            heads(&self.k_proj)?,
            heads(&self.v_proj)?,
        );
        let scores = (q.matmul(&k.t()?)? * self.scale)?.broadcast_add(mask)?;
        let weights = candle_nn::ops::softmax_last_dim(&scores.to_dtype(DType::F32)?)?
            .to_dtype(xs.dtype())?;
        let out = weights
            .matmul(&v)?
            .transpose(1, 2)?
            .contiguous()?
            .reshape((b, s, d))?;
        self.out_proj.forward_residual(&out, Some(residual))
    }
}

/// The feed-forward block (`mlp.fc1`, activation, `mlp.fc2`).
#[derive(Debug, Clone)]
struct Mlp {
    fc1: Linear,
    fc2: Linear,
    activation: ClipActivation,
}

impl Mlp {
    fn new(vb: VarBuilder, cfg: &ClipTextConfig) -> Result<Self> {
        Ok(Self {
            fc1: Linear::new(vb.pp("fc1"), cfg.hidden_size, cfg.intermediate_size, true)?,
            fc2: Linear::new(vb.pp("fc2"), cfg.intermediate_size, cfg.hidden_size, true)?,
            activation: cfg.hidden_act,
        })
    }

    /// `[batch, seq, hidden]` to `residual + mlp(xs)` `[batch, seq, hidden]`.
    fn forward(&self, xs: &Tensor, residual: &Tensor) -> Result<Tensor> {
        let xs = self.fc1.forward(xs)?;
        let xs = match self.activation {
            ClipActivation::QuickGelu => quick_gelu(&xs)?,
            ClipActivation::Gelu => gelu_erf(&xs)?,
        };
        self.fc2.forward_residual(&xs, Some(residual))
    }
}

/// One encoder layer (`text_model.encoder.layers.{i}`):
/// `x + attn(ln1(x))`, then `x + mlp(ln2(x))`.
#[derive(Debug, Clone)]
pub(crate) struct EncoderLayer {
    self_attn: Attention,
    layer_norm1: LayerNorm,
    mlp: Mlp,
    layer_norm2: LayerNorm,
}

impl EncoderLayer {
    pub(crate) fn new(vb: VarBuilder, cfg: &ClipTextConfig) -> Result<Self> {
        let d = cfg.hidden_size;
        let eps = cfg.layer_norm_eps;
        // Norms stay f32 whatever the weights' and activations' dtype.
        Ok(Self {
            self_attn: Attention::new(vb.pp("self_attn"), cfg)?,
            layer_norm1: LayerNorm::new(vb.pp("layer_norm1"), d, eps)?,
            mlp: Mlp::new(vb.pp("mlp"), cfg)?,
            layer_norm2: LayerNorm::new(vb.pp("layer_norm2"), d, eps)?,
        })
    }

    /// `xs`: `[batch, seq, hidden]`, `mask`: the `[seq, seq]` causal mask.
    pub(crate) fn forward(&self, xs: &Tensor, mask: &Tensor) -> Result<Tensor> {
        let xs = self
            .self_attn
            .forward(&self.layer_norm1.forward(xs)?, mask, xs)?;
        self.mlp.forward(&self.layer_norm2.forward(&xs)?, &xs)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::D;

    #[test]
    fn mask_is_causal() {
        let mask = causal_mask(3, DType::F32, &Device::Cpu).unwrap();
        let rows = mask.to_vec2::<f32>().unwrap();
        assert_eq!(rows[0][0], 0.0);
        assert_eq!(rows[2][1], 0.0);
        assert_eq!(rows[0][1], f32::NEG_INFINITY);
        assert_eq!(rows[1][2], f32::NEG_INFINITY);
        assert_eq!(mask.dim(D::Minus1).unwrap(), 3);
    }
}
