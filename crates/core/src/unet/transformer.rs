//! `Transformer2DModel` (continuous input) and its `BasicTransformerBlock`s.

use candle_core::{Module, Result, Tensor};
use candle_nn::VarBuilder;

use crate::interrupt::Interrupt;
use crate::layers::{Attention, AttentionConfig, GroupNorm, LayerNorm, Linear};

/// Shape and options of a [`Transformer2DModel`].
#[derive(Debug, Clone, Copy)]
pub struct Transformer2DConfig {
    /// Channels of the feature map (in and out).
    pub in_channels: usize,
    /// Attention heads.
    pub heads: usize,
    /// Channels per head; the inner width is `heads * head_dim`.
    pub head_dim: usize,
    /// Number of `BasicTransformerBlock`s.
    pub num_layers: usize,
    /// Width of the encoder hidden states.
    pub cross_attention_dim: usize,
    /// Groups of the input group norm (eps 1e-6).
    pub norm_num_groups: usize,
    /// Linear `proj_in`/`proj_out` instead of 1×1 convolutions.
    pub use_linear_projection: bool,
    /// `attn1` attends to the encoder states instead of itself.
    pub only_cross_attention: bool,
    /// Attention scores in f32 under half precision.
    pub upcast_attention: bool,
}

/// `proj_in`/`proj_out`: a 1×1 convolution or a linear layer, both applied as a
/// pointwise projection between the feature map and its tokens.
fn projection(vb: VarBuilder, cin: usize, cout: usize, linear: bool) -> Result<Linear> {
    if linear {
        Linear::new(vb, cin, cout, true)
    } else {
        Linear::pointwise_conv(vb, cin, cout)
    }
}

/// diffusers' `Transformer2DModel` over a feature map: group norm, `proj_in`,
/// transformer blocks, `proj_out`, residual.
#[derive(Debug, Clone)]
pub struct Transformer2DModel {
    norm: GroupNorm,
    proj_in: Linear,
    blocks: Vec<BasicTransformerBlock>,
    proj_out: Linear,
}

impl Transformer2DModel {
    /// Loads `norm`, `proj_in`, `transformer_blocks.{i}` and `proj_out` under `vb`.
    pub fn new(vb: VarBuilder, cfg: &Transformer2DConfig) -> Result<Self> {
        let inner_dim = cfg.heads * cfg.head_dim;
        let linear = cfg.use_linear_projection;
        let blocks = (0..cfg.num_layers)
            .map(|i| BasicTransformerBlock::new(vb.pp("transformer_blocks").pp(i), inner_dim, cfg))
            .collect::<Result<_>>()?;
        Ok(Self {
            norm: GroupNorm::new(vb.pp("norm"), cfg.norm_num_groups, cfg.in_channels, 1e-6)?,
            proj_in: projection(vb.pp("proj_in"), cfg.in_channels, inner_dim, linear)?,
            blocks,
            proj_out: projection(vb.pp("proj_out"), inner_dim, cfg.in_channels, linear)?,
        })
    }

    /// `xs` `[B, C, H, W]` with `context` `[B, S, cross_attention_dim]` → `[B, C, H, W]`;
    /// stops between blocks (and inside their attentions) once `interrupt` is raised.
    pub fn forward(
        &self,
        xs: &Tensor,
        context: &Tensor,
        interrupt: Interrupt<'_>,
    ) -> Result<Tensor> {
        let (_, _, h, w) = xs.dims4()?;
        let mut hs = self.proj_in.map_to_tokens(&self.norm.forward(xs)?)?;
        for block in &self.blocks {
            interrupt.check()?;
            hs = block.forward(&hs, context, interrupt)?;
        }
        self.proj_out.tokens_to_map(&hs, h, w, Some(xs))
    }
}

/// diffusers' `BasicTransformerBlock` with layer norms: self-attention (`attn1`),
/// cross-attention (`attn2`) and a GEGLU feed-forward (`ff`), each pre-normed and residual.
#[derive(Debug, Clone)]
pub struct BasicTransformerBlock {
    norm1: LayerNorm,
    attn1: Attention,
    norm2: LayerNorm,
    attn2: Attention,
    norm3: LayerNorm,
    ff: FeedForward,
    only_cross_attention: bool,
}

impl BasicTransformerBlock {
    /// Loads a block of width `dim` under `vb`.
    pub fn new(vb: VarBuilder, dim: usize, cfg: &Transformer2DConfig) -> Result<Self> {
        let attention = |context_dim| AttentionConfig {
            query_dim: dim,
            context_dim,
            heads: cfg.heads,
            head_dim: cfg.head_dim,
            qkv_bias: false,
            upcast: cfg.upcast_attention,
        };
        let attn1_context = cfg.only_cross_attention.then_some(cfg.cross_attention_dim);
        // Norms stay f32 whatever the weights' and activations' dtype.
        let norm = |name: &str| LayerNorm::new(vb.pp(name), dim, 1e-5);
        Ok(Self {
            norm1: norm("norm1")?,
            attn1: Attention::new(vb.pp("attn1"), &attention(attn1_context))?,
            norm2: norm("norm2")?,
            attn2: Attention::new(vb.pp("attn2"), &attention(Some(cfg.cross_attention_dim)))?,
            norm3: norm("norm3")?,
            ff: FeedForward::new(vb.pp("ff"), dim, 4 * dim)?,
            only_cross_attention: cfg.only_cross_attention,
        })
    }

    /// `xs` `[B, N, dim]`, `context` `[B, S, cross_attention_dim]` → `[B, N, dim]`;
    /// stops between its parts and inside the attentions once `interrupt` is raised.
    pub fn forward(
        &self,
        xs: &Tensor,
        context: &Tensor,
        interrupt: Interrupt<'_>,
    ) -> Result<Tensor> {
        let attn1_context = self.only_cross_attention.then_some(context);
        // One binding, reassigned, so each block's input is freed once used.
        let mut hs = self.attn1.forward_residual(
            &self.norm1.forward(xs)?,
            attn1_context,
            Some(xs),
            interrupt,
        )?;
        interrupt.check()?;
        hs = self.attn2.forward_residual(
            &self.norm2.forward(&hs)?,
            Some(context),
            Some(&hs),
            interrupt,
        )?;
        interrupt.check()?;
        self.ff.forward_residual(&self.norm3.forward(&hs)?, &hs)
    }
}

/// diffusers' `FeedForward` with GEGLU: `net.2(h * gelu(gate))` where
/// `[h, gate] = net.0.proj(x)`.
#[derive(Debug, Clone)]
struct FeedForward {
    proj: Linear,
    out: Linear,
}

impl FeedForward {
    fn new(vb: VarBuilder, dim: usize, inner_dim: usize) -> Result<Self> {
        let net = vb.pp("net");
        Ok(Self {
            proj: Linear::new(net.pp("0").pp("proj"), dim, 2 * inner_dim, true)?,
            out: Linear::new(net.pp("2"), inner_dim, dim, true)?,
        })
    }

    /// `net.2(geglu(net.0.proj(xs))) + residual`.
    fn forward_residual(&self, xs: &Tensor, residual: &Tensor) -> Result<Tensor> {
        let hs = self.proj.forward(xs)?;
        self.out
            .forward_residual(&crate::layers::activation::geglu(&hs)?, Some(residual))
    }
}
