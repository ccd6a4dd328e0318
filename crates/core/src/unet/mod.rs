//! The conditional UNet of Stable Diffusion (`UNet2DConditionModel`).
//!
//! Built from a diffusers `unet/config.json` ([`UNetConfig`]) and its weights
//! under diffusers' key names. Supported blocks: `CrossAttnDownBlock2D`,
//! `DownBlock2D`, `UNetMidBlock2DCrossAttn`, `CrossAttnUpBlock2D`, `UpBlock2D`;
//! SD 1.x, SD 2.x and SDXL-shaped configs (with [`AddedCond`]) load.

mod blocks;
mod config;
mod embeddings;
mod plan;
mod transformer;

pub use config::{PerBlock, SampleSize, UNetConfig};
pub use embeddings::{timestep_embedding, TimestepEmbedding};
pub use transformer::{BasicTransformerBlock, Transformer2DConfig, Transformer2DModel};

use candle_core::{DType, Module, Tensor};
use candle_nn::VarBuilder;

use crate::interrupt::Interrupt;
use crate::layers::{conv2d, Activation, Conv2d, GroupNorm};
use crate::{Error, Result};
use blocks::{DownBlock, MidBlock, Shared, UpBlock};
use plan::UNetPlan;

/// SDXL's added conditioning (`added_cond_kwargs` in diffusers).
#[derive(Debug, Clone)]
pub struct AddedCond {
    /// Pooled text embeddings, `[B, P]`.
    pub text_embeds: Tensor,
    /// Size/crop conditioning, `[B, K]` (K = 6 for SDXL: original size, crop, target size).
    pub time_ids: Tensor,
}

/// SDXL's `add_time_proj` + `add_embedding`.
#[derive(Debug, Clone)]
struct TextTimeEmbedding {
    time_dim: usize,
    embedding: TimestepEmbedding,
    input_dim: usize,
}

/// diffusers' `UNet2DConditionModel`.
#[derive(Debug, Clone)]
pub struct UNet2DConditionModel {
    conv_in: Conv2d,
    time_embedding: TimestepEmbedding,
    add_embedding: Option<TextTimeEmbedding>,
    time_embed_act: Option<Activation>,
    down_blocks: Vec<DownBlock>,
    mid_block: Option<MidBlock>,
    up_blocks: Vec<UpBlock>,
    conv_norm_out: GroupNorm,
    conv_out: Conv2d,
    act: Activation,
    cross_attention_dim: usize,
    config: UNetConfig,
    /// The dtype activations are computed in (f32 unless set otherwise).
    compute_dtype: DType,
}

impl UNet2DConditionModel {
    /// Builds the model from `cfg` with the weights under `vb` (diffusers' key names).
    ///
    /// An unsupported config is [`Error::InvalidFile`] naming `unet/config.json` and
    /// the field; a missing or misshapen tensor is [`Error::Candle`] naming the tensor.
    pub fn new(vb: VarBuilder, cfg: &UNetConfig) -> Result<Self> {
        let plan = cfg
            .plan()
            .map_err(|m| Error::invalid_file("unet/config.json", m))?;
        Ok(Self::build(vb, cfg, &plan)?)
    }

    fn build(vb: VarBuilder, cfg: &UNetConfig, plan: &UNetPlan) -> candle_core::Result<Self> {
        let c0 = cfg.block_out_channels[0];
        let shared = Shared {
            temb_channels: plan.time_embed_dim,
            groups: plan.groups,
            eps: cfg.norm_eps,
            act: plan.act,
            time_norm: plan.time_norm,
            use_linear_projection: cfg.use_linear_projection,
            upcast_attention: cfg.upcast_attention,
            downsample_padding: cfg.downsample_padding,
            mid_block_scale_factor: cfg.mid_block_scale_factor,
        };
        let (k_in, k_out) = (cfg.conv_in_kernel, cfg.conv_out_kernel);
        let conv_in = conv2d(
            vb.pp("conv_in"),
            cfg.in_channels,
            c0,
            k_in,
            1,
            (k_in - 1) / 2,
        )?;
        let time_embedding = TimestepEmbedding::new(
            vb.pp("time_embedding"),
            c0,
            plan.time_embed_dim,
            plan.act,
            plan.timestep_post_act,
        )?;
        let add_embedding = match plan.text_time {
            Some(tt) => Some(TextTimeEmbedding {
                time_dim: tt.time_embed_dim,
                embedding: TimestepEmbedding::new(
                    vb.pp("add_embedding"),
                    tt.input_dim,
                    plan.time_embed_dim,
                    Activation::Silu,
                    None,
                )?,
                input_dim: tt.input_dim,
            }),
            None => None,
        };
        let down_blocks = plan
            .down
            .iter()
            .enumerate()
            .map(|(i, p)| DownBlock::new(vb.pp("down_blocks").pp(i), p, &shared))
            .collect::<candle_core::Result<_>>()?;
        let mid_block = match &plan.mid {
            Some(p) => Some(MidBlock::new(vb.pp("mid_block"), p, &shared)?),
            None => None,
        };
        let up_blocks = plan
            .up
            .iter()
            .enumerate()
            .map(|(i, p)| UpBlock::new(vb.pp("up_blocks").pp(i), p, &shared))
            .collect::<candle_core::Result<_>>()?;
        let conv_norm_out = GroupNorm::new(vb.pp("conv_norm_out"), plan.groups, c0, cfg.norm_eps)?;
        let conv_out = conv2d(
            vb.pp("conv_out"),
            c0,
            cfg.out_channels,
            k_out,
            1,
            (k_out - 1) / 2,
        )?;
        Ok(Self {
            conv_in,
            time_embedding,
            add_embedding,
            time_embed_act: plan.time_embedding_act,
            down_blocks,
            mid_block,
            up_blocks,
            conv_norm_out,
            conv_out,
            act: plan.act,
            cross_attention_dim: plan.cross_attention_dim,
            config: cfg.clone(),
            compute_dtype: DType::F32,
        })
    }

    /// The model computing in `dtype`: f16 or bf16 (the dtype its weights were
    /// loaded in), or f32 (the default). In half precision the forward casts
    /// the sample, the encoder states and SDXL's text embeddings down on entry
    /// and its prediction back to the sample's dtype on exit; the timestep
    /// embedding and its MLP, the norms' statistics and the attention softmax
    /// stay f32.
    pub fn with_compute_dtype(mut self, dtype: DType) -> Self {
        self.compute_dtype = dtype;
        self
    }

    /// The dtype activations are computed in.
    pub fn compute_dtype(&self) -> DType {
        self.compute_dtype
    }

    /// The config the model was built from.
    pub fn config(&self) -> &UNetConfig {
        &self.config
    }

    /// Predicts the noise (or v) for `sample` `[B, in_channels, H, W]` at `timestep`,
    /// conditioned on `encoder_hidden_states` `[B, S, cross_attention_dim]`; returns
    /// `[B, out_channels, H, W]`. Exactly diffusers' `unet(sample, t, ehs).sample`.
    ///
    /// Any `H`, `W` ≥ 1 work: when they are not multiples of 2^(levels−1) the
    /// upsamplers resize to the skips' sizes, as diffusers does. Models with SDXL
    /// added conditioning need [`UNet2DConditionModel::forward_with_cond`].
    pub fn forward(
        &self,
        sample: &Tensor,
        timestep: f64,
        encoder_hidden_states: &Tensor,
    ) -> Result<Tensor> {
        self.forward_with_cond(sample, timestep, encoder_hidden_states, None)
    }

    /// [`UNet2DConditionModel::forward`] with SDXL's added conditioning, required
    /// when the config's `addition_embed_type` is `text_time` and rejected otherwise.
    pub fn forward_with_cond(
        &self,
        sample: &Tensor,
        timestep: f64,
        encoder_hidden_states: &Tensor,
        added: Option<&AddedCond>,
    ) -> Result<Tensor> {
        self.forward_interruptible(
            sample,
            timestep,
            encoder_hidden_states,
            added,
            Interrupt::NEVER,
        )
    }

    /// [`UNet2DConditionModel::forward_with_cond`] that stops with
    /// [`Error::Cancelled`] once `interrupt` is raised: it is checked between
    /// blocks, between their resnets and transformers, and between the row
    /// blocks of every attention.
    pub fn forward_interruptible(
        &self,
        sample: &Tensor,
        timestep: f64,
        encoder_hidden_states: &Tensor,
        added: Option<&AddedCond>,
        interrupt: Interrupt<'_>,
    ) -> Result<Tensor> {
        interrupt.check_cancelled()?;
        let (b, h, w) = self.check_inputs(sample, encoder_hidden_states)?;
        let out_dtype = sample.dtype();
        let sample = if self.config.center_input_sample {
            sample.affine(2.0, -1.0)?
        } else {
            sample.clone()
        };
        let emb = self.embed_time(timestep, b, &sample, added)?;
        let half = crate::layers::is_half(self.compute_dtype);
        let (sample, context) = if half {
            (
                sample.to_dtype(self.compute_dtype)?,
                encoder_hidden_states.to_dtype(self.compute_dtype)?,
            )
        } else {
            (sample, encoder_hidden_states.clone())
        };
        let context = &context;

        let mut xs = self.conv_in.forward(&sample)?;
        let mut skips = vec![xs.clone()];
        for block in &self.down_blocks {
            xs = block.forward(&xs, &emb, context, &mut skips, interrupt)?;
        }
        if let Some(mid) = &self.mid_block {
            xs = mid.forward(&xs, &emb, context, interrupt)?;
        }
        let factor = 1usize << self.config.num_downsamplers();
        let forward_upsample_size = h % factor != 0 || w % factor != 0;
        for block in &self.up_blocks {
            // Upsample to the size of the skip the next block will take first.
            let next_skip = skips.len().checked_sub(block.num_skips() + 1);
            let upsample_size = match next_skip {
                Some(i) if forward_upsample_size => {
                    let (_, _, sh, sw) = skips[i].dims4()?;
                    Some((sh, sw))
                }
                _ => None,
            };
            xs = block.forward(&xs, &emb, context, &mut skips, upsample_size, interrupt)?;
        }
        interrupt.check_cancelled()?;
        let out =
            crate::layers::norm_act_conv(&self.conv_norm_out, &self.conv_out, &xs, None, self.act)?;
        Ok(out.to_dtype(out_dtype)?)
    }

    /// Checks the forward inputs' shapes; returns `(B, H, W)`.
    fn check_inputs(&self, sample: &Tensor, context: &Tensor) -> Result<(usize, usize, usize)> {
        let cfg = &self.config;
        let (b, h, w) = match *sample.dims() {
            [b, c, h, w] if c == cfg.in_channels && b > 0 && h > 0 && w > 0 => (b, h, w),
            _ => {
                return Err(shape_error(format!(
                    "sample has shape {:?}, expected [B, {}, H, W] with B, H, W >= 1",
                    sample.dims(),
                    cfg.in_channels
                )))
            }
        };
        match *context.dims() {
            [cb, _, d] if cb == b && d == self.cross_attention_dim => Ok((b, h, w)),
            _ => Err(shape_error(format!(
                "encoder_hidden_states has shape {:?}, expected [{b}, S, {}]",
                context.dims(),
                self.cross_attention_dim
            ))),
        }
    }

    /// The time embedding `[B, time_embed_dim]`, plus SDXL's added embedding
    /// when configured: in f32 whatever the compute dtype (the MLPs' weights are
    /// f32, and the resnets' `time_emb_proj` take it in f32).
    fn embed_time(
        &self,
        timestep: f64,
        b: usize,
        sample: &Tensor,
        added: Option<&AddedCond>,
    ) -> Result<Tensor> {
        let cfg = &self.config;
        let dtype = DType::F32;
        let t_emb = timestep_embedding(
            &vec![timestep; b],
            cfg.block_out_channels[0],
            cfg.flip_sin_to_cos,
            cfg.freq_shift,
            sample.device(),
        )?;
        let mut emb = self.time_embedding.forward(&t_emb, dtype)?;
        match (&self.add_embedding, added) {
            (Some(add), Some(added)) => emb = (emb + add.forward(added, b, cfg, dtype)?)?,
            (Some(_), None) => {
                return Err(shape_error(
                    "this UNet (addition_embed_type text_time) needs text_embeds and time_ids"
                        .into(),
                ))
            }
            (None, Some(_)) => {
                return Err(shape_error(
                    "added conditioning given to a UNet without addition_embed_type".into(),
                ))
            }
            (None, None) => {}
        }
        Ok(match self.time_embed_act {
            Some(act) => act.forward(&emb)?,
            None => emb,
        })
    }
}

impl TextTimeEmbedding {
    /// `add_embedding(cat([text_embeds, add_time_proj(time_ids).reshape(B, -1)]))`.
    fn forward(
        &self,
        added: &AddedCond,
        b: usize,
        cfg: &UNetConfig,
        dtype: candle_core::DType,
    ) -> Result<Tensor> {
        let (tb, text_dim) = added.text_embeds.dims2().map_err(|_| {
            shape_error(format!(
                "text_embeds must be [B, P], got {:?}",
                added.text_embeds.dims()
            ))
        })?;
        let (ib, k) = added.time_ids.dims2().map_err(|_| {
            shape_error(format!(
                "time_ids must be [B, K], got {:?}",
                added.time_ids.dims()
            ))
        })?;
        if tb != b || ib != b || text_dim + k * self.time_dim != self.input_dim {
            return Err(shape_error(format!(
                "text_embeds {:?} and time_ids {:?} do not give [{b}, {}] (projection_class_embeddings_input_dim)",
                added.text_embeds.dims(),
                added.time_ids.dims(),
                self.input_dim
            )));
        }
        let ids = added
            .time_ids
            .to_dtype(candle_core::DType::F64)?
            .flatten_all()?
            .to_vec1::<f64>()?;
        let device = added.text_embeds.device();
        let time_embeds = timestep_embedding(
            &ids,
            self.time_dim,
            cfg.flip_sin_to_cos,
            cfg.freq_shift,
            device,
        )?
        .reshape((b, k * self.time_dim))?;
        let text_embeds = added.text_embeds.to_dtype(dtype)?;
        let input = Tensor::cat(&[text_embeds, time_embeds.to_dtype(dtype)?], 1)?;
        Ok(self.embedding.forward(&input, dtype)?)
    }
}

/// A forward-argument shape error.
fn shape_error(message: String) -> Error {
    Error::Candle(candle_core::Error::Msg(format!("unet: {message}")))
}
