//! The UNet's down, mid and up blocks (`CrossAttnDownBlock2D`/`DownBlock2D`,
//! `UNetMidBlock2DCrossAttn`, `CrossAttnUpBlock2D`/`UpBlock2D`).
//!
//! A block with transformers and one without differ only in `attentions`, so
//! each pair shares one type whose `attentions` list may be empty.

use candle_core::{Result, Tensor};
use candle_nn::VarBuilder;

use super::plan::{BlockPlan, MidPlan};
use super::transformer::{Transformer2DConfig, Transformer2DModel};
use crate::interrupt::Interrupt;
use crate::layers::{
    Activation, Downsample2D, ResnetBlock2D, ResnetBlock2DConfig, TimeEmbeddingNorm, Upsample2D,
};

/// Settings every block of one UNet shares.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Shared {
    pub temb_channels: usize,
    pub groups: usize,
    pub eps: f64,
    pub act: Activation,
    pub time_norm: TimeEmbeddingNorm,
    pub use_linear_projection: bool,
    pub upcast_attention: bool,
    pub downsample_padding: usize,
    pub mid_block_scale_factor: f64,
}

impl Shared {
    fn resnet(&self, cin: usize, cout: usize, output_scale_factor: f64) -> ResnetBlock2DConfig {
        ResnetBlock2DConfig {
            in_channels: cin,
            out_channels: cout,
            temb_channels: Some(self.temb_channels),
            groups: self.groups,
            eps: self.eps,
            act: self.act,
            time_embedding_norm: self.time_norm,
            output_scale_factor,
        }
    }

    fn transformer(
        &self,
        channels: usize,
        heads: usize,
        num_layers: usize,
        cross_attention_dim: usize,
        only_cross_attention: bool,
    ) -> Transformer2DConfig {
        Transformer2DConfig {
            in_channels: channels,
            heads,
            head_dim: channels / heads,
            num_layers,
            cross_attention_dim,
            norm_num_groups: self.groups,
            use_linear_projection: self.use_linear_projection,
            only_cross_attention,
            upcast_attention: self.upcast_attention,
        }
    }
}

/// Loads `attentions.{i}` for a block, or nothing for a block without cross-attention.
fn attentions(
    vb: &VarBuilder,
    plan: &BlockPlan,
    shared: &Shared,
) -> Result<Vec<Transformer2DModel>> {
    if !plan.cross_attention {
        return Ok(Vec::new());
    }
    plan.transformer_layers
        .iter()
        .enumerate()
        .map(|(i, &layers)| {
            let cfg = shared.transformer(
                plan.out_channels,
                plan.heads,
                layers,
                plan.cross_attention_dim,
                plan.only_cross_attention,
            );
            Transformer2DModel::new(vb.pp("attentions").pp(i), &cfg)
        })
        .collect()
}

/// A down block: `resnets.{i}` (each followed by `attentions.{i}` when present) and an
/// optional `downsamplers.0`.
#[derive(Debug, Clone)]
pub(crate) struct DownBlock {
    resnets: Vec<ResnetBlock2D>,
    attentions: Vec<Transformer2DModel>,
    downsampler: Option<Downsample2D>,
}

impl DownBlock {
    pub fn new(vb: VarBuilder, plan: &BlockPlan, shared: &Shared) -> Result<Self> {
        let resnets = (0..plan.num_layers)
            .map(|i| {
                let cin = if i == 0 {
                    plan.in_channels
                } else {
                    plan.out_channels
                };
                let cfg = shared.resnet(cin, plan.out_channels, 1.0);
                ResnetBlock2D::new(vb.pp("resnets").pp(i), &cfg)
            })
            .collect::<Result<_>>()?;
        let downsampler = if plan.resample {
            let vb = vb.pp("downsamplers").pp(0);
            let (c, pad) = (plan.out_channels, shared.downsample_padding);
            Some(Downsample2D::new(vb, c, c, pad)?)
        } else {
            None
        };
        Ok(Self {
            resnets,
            attentions: attentions(&vb, plan, shared)?,
            downsampler,
        })
    }

    /// Runs the block; pushes every intermediate output onto `skips` (the UNet's
    /// `down_block_res_samples`) and returns the last. Stops between its layers
    /// once `interrupt` is raised.
    pub fn forward(
        &self,
        xs: &Tensor,
        temb: &Tensor,
        context: &Tensor,
        skips: &mut Vec<Tensor>,
        interrupt: Interrupt<'_>,
    ) -> Result<Tensor> {
        let mut xs = xs.clone();
        for (i, resnet) in self.resnets.iter().enumerate() {
            interrupt.check()?;
            xs = resnet.forward(&xs, Some(temb), interrupt)?;
            if let Some(attn) = self.attentions.get(i) {
                interrupt.check()?;
                xs = attn.forward(&xs, context, interrupt)?;
            }
            skips.push(xs.clone());
        }
        if let Some(down) = &self.downsampler {
            interrupt.check()?;
            xs = down.forward(&xs)?;
            skips.push(xs.clone());
        }
        Ok(xs)
    }
}

/// `UNetMidBlock2DCrossAttn`: `resnets.0`, then `attentions.0` and `resnets.1`.
#[derive(Debug, Clone)]
pub(crate) struct MidBlock {
    first: ResnetBlock2D,
    attention: Transformer2DModel,
    second: ResnetBlock2D,
}

impl MidBlock {
    pub fn new(vb: VarBuilder, plan: &MidPlan, shared: &Shared) -> Result<Self> {
        let c = plan.channels;
        let resnet = shared.resnet(c, c, shared.mid_block_scale_factor);
        let transformer = shared.transformer(
            c,
            plan.heads,
            plan.transformer_layers,
            plan.cross_attention_dim,
            false,
        );
        Ok(Self {
            first: ResnetBlock2D::new(vb.pp("resnets").pp(0), &resnet)?,
            attention: Transformer2DModel::new(vb.pp("attentions").pp(0), &transformer)?,
            second: ResnetBlock2D::new(vb.pp("resnets").pp(1), &resnet)?,
        })
    }

    /// Runs the block, stopping between its layers once `interrupt` is raised.
    pub fn forward(
        &self,
        xs: &Tensor,
        temb: &Tensor,
        context: &Tensor,
        interrupt: Interrupt<'_>,
    ) -> Result<Tensor> {
        interrupt.check()?;
        let xs = self.first.forward(xs, Some(temb), interrupt)?;
        interrupt.check()?;
        let xs = self.attention.forward(&xs, context, interrupt)?;
        interrupt.check()?;
        self.second.forward(&xs, Some(temb), interrupt)
    }
}

/// An up block: `resnets.{i}` on `[x, skip]` concatenated along channels (each
/// followed by `attentions.{i}` when present) and an optional `upsamplers.0`.
#[derive(Debug, Clone)]
pub(crate) struct UpBlock {
    resnets: Vec<ResnetBlock2D>,
    attentions: Vec<Transformer2DModel>,
    upsampler: Option<Upsample2D>,
}

impl UpBlock {
    pub fn new(vb: VarBuilder, plan: &BlockPlan, shared: &Shared) -> Result<Self> {
        let n = plan.num_layers;
        let resnets = (0..n)
            .map(|i| {
                let skip = if i + 1 == n {
                    plan.in_channels
                } else {
                    plan.out_channels
                };
                let cin = if i == 0 {
                    plan.prev_output_channels
                } else {
                    plan.out_channels
                };
                let cfg = shared.resnet(cin + skip, plan.out_channels, 1.0);
                ResnetBlock2D::new(vb.pp("resnets").pp(i), &cfg)
            })
            .collect::<Result<_>>()?;
        let upsampler = if plan.resample {
            let c = plan.out_channels;
            Some(Upsample2D::new(vb.pp("upsamplers").pp(0), c, c)?)
        } else {
            None
        };
        Ok(Self {
            resnets,
            attentions: attentions(&vb, plan, shared)?,
            upsampler,
        })
    }

    /// How many skip connections the block consumes.
    pub fn num_skips(&self) -> usize {
        self.resnets.len()
    }

    /// Runs the block, popping its skips from the end of `skips`; `upsample_size`
    /// overrides the 2× upsampling (diffusers' `forward_upsample_size`). Stops
    /// between its layers once `interrupt` is raised.
    pub fn forward(
        &self,
        xs: &Tensor,
        temb: &Tensor,
        context: &Tensor,
        skips: &mut Vec<Tensor>,
        upsample_size: Option<(usize, usize)>,
        interrupt: Interrupt<'_>,
    ) -> Result<Tensor> {
        let mut xs = xs.clone();
        for (i, resnet) in self.resnets.iter().enumerate() {
            let Some(skip) = skips.pop() else {
                candle_core::bail!("up block: ran out of skip connections");
            };
            interrupt.check()?;
            xs = Tensor::cat(&[&xs, &skip], 1)?;
            xs = resnet.forward(&xs, Some(temb), interrupt)?;
            if let Some(attn) = self.attentions.get(i) {
                interrupt.check()?;
                xs = attn.forward(&xs, context, interrupt)?;
            }
        }
        if let Some(up) = &self.upsampler {
            interrupt.check()?;
            xs = up.forward(&xs, upsample_size)?;
        }
        Ok(xs)
    }
}
