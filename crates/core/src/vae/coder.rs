//! The VAE's `Encoder` and `Decoder` with their blocks (`DownEncoderBlock2D`,
//! `UpDecoderBlock2D`, `UNetMidBlock2D`). None of them takes a time embedding.

use candle_core::{Module, Result, Tensor};
use candle_nn::VarBuilder;

use super::VaeConfig;
use crate::interrupt::Interrupt;
use crate::layers::{
    conv2d, Activation, Conv2d, Downsample2D, GroupNorm, ResnetBlock2D, ResnetBlock2DConfig,
    SpatialSelfAttention, TimeEmbeddingNorm, Upsample2D,
};

/// Epsilon of every norm in the VAE.
const EPS: f64 = 1e-6;

fn resnet(
    vb: VarBuilder,
    cin: usize,
    cout: usize,
    groups: usize,
    act: Activation,
) -> Result<ResnetBlock2D> {
    let cfg = ResnetBlock2DConfig {
        in_channels: cin,
        out_channels: cout,
        temb_channels: None,
        groups,
        eps: EPS,
        act,
        time_embedding_norm: TimeEmbeddingNorm::Default,
        output_scale_factor: 1.0,
    };
    ResnetBlock2D::new(vb, &cfg)
}

/// `UNetMidBlock2D` as the VAE uses it: resnet, single-head self-attention, resnet.
#[derive(Debug, Clone)]
struct MidBlock {
    first: ResnetBlock2D,
    attention: Option<SpatialSelfAttention>,
    second: ResnetBlock2D,
}

impl MidBlock {
    fn new(
        vb: VarBuilder,
        channels: usize,
        groups: usize,
        act: Activation,
        attention: bool,
    ) -> Result<Self> {
        let attention = if attention {
            let vb = vb.pp("attentions").pp(0);
            Some(SpatialSelfAttention::new(
                vb, channels, 1, groups, EPS, 1.0,
            )?)
        } else {
            None
        };
        Ok(Self {
            first: resnet(vb.pp("resnets").pp(0), channels, channels, groups, act)?,
            attention,
            second: resnet(vb.pp("resnets").pp(1), channels, channels, groups, act)?,
        })
    }

    fn forward(&self, xs: &Tensor, interrupt: Interrupt<'_>) -> Result<Tensor> {
        interrupt.check()?;
        let mut xs = self.first.forward(xs, None, interrupt)?;
        if let Some(attn) = &self.attention {
            interrupt.check()?;
            xs = attn.forward(&xs, interrupt)?;
        }
        interrupt.check()?;
        self.second.forward(&xs, None, interrupt)
    }
}

/// `GroupNorm` (eps 1e-6) → SiLU → `conv_out`, the tail of both halves.
#[derive(Debug, Clone)]
struct OutputHead {
    norm: GroupNorm,
    conv: Conv2d,
}

impl OutputHead {
    fn new(vb: &VarBuilder, cin: usize, cout: usize, groups: usize) -> Result<Self> {
        Ok(Self {
            norm: GroupNorm::new(vb.pp("conv_norm_out"), groups, cin, EPS)?,
            conv: conv2d(vb.pp("conv_out"), cin, cout, 3, 1, 1)?,
        })
    }

    fn forward(&self, xs: &Tensor) -> Result<Tensor> {
        crate::layers::norm_act_conv(&self.norm, &self.conv, xs, None, Activation::Silu)
    }
}

/// A `DownEncoderBlock2D` or `UpDecoderBlock2D`: resnets, then an optional resampler.
#[derive(Debug, Clone)]
struct Block {
    resnets: Vec<ResnetBlock2D>,
    downsampler: Option<Downsample2D>,
    upsampler: Option<Upsample2D>,
}

impl Block {
    /// Takes the input by value, so it is freed as soon as the first resnet
    /// has run rather than when the caller's binding goes. Stops between its
    /// layers once `interrupt` is raised.
    fn forward(&self, xs: Tensor, interrupt: Interrupt<'_>) -> Result<Tensor> {
        let mut xs = xs;
        for resnet in &self.resnets {
            interrupt.check()?;
            xs = resnet.forward(&xs, None, interrupt)?;
        }
        if let Some(down) = &self.downsampler {
            interrupt.check()?;
            xs = down.forward(&xs)?;
        }
        if let Some(up) = &self.upsampler {
            interrupt.check()?;
            xs = up.forward(&xs, None)?;
        }
        Ok(xs)
    }
}

/// diffusers' VAE `Encoder`: image → `2 × latent_channels` moments at 1/2^(levels−1) size.
#[derive(Debug, Clone)]
pub(crate) struct Encoder {
    conv_in: Conv2d,
    down_blocks: Vec<Block>,
    mid_block: MidBlock,
    head: OutputHead,
}

impl Encoder {
    pub fn new(vb: VarBuilder, cfg: &VaeConfig, act: Activation) -> Result<Self> {
        let channels = &cfg.block_out_channels;
        let groups = cfg.norm_num_groups;
        let n = channels.len();
        let mut down_blocks = Vec::with_capacity(n);
        let mut cin = channels[0];
        for (i, &cout) in channels.iter().enumerate() {
            let vb = vb.pp("down_blocks").pp(i);
            let resnets = (0..cfg.layers_per_block)
                .map(|j| {
                    let c = if j == 0 { cin } else { cout };
                    resnet(vb.pp("resnets").pp(j), c, cout, groups, act)
                })
                .collect::<Result<_>>()?;
            let downsampler = if i + 1 < n {
                Some(Downsample2D::new(
                    vb.pp("downsamplers").pp(0),
                    cout,
                    cout,
                    0,
                )?)
            } else {
                None
            };
            down_blocks.push(Block {
                resnets,
                downsampler,
                upsampler: None,
            });
            cin = cout;
        }
        let top = channels[n - 1];
        Ok(Self {
            conv_in: conv2d(vb.pp("conv_in"), cfg.in_channels, channels[0], 3, 1, 1)?,
            down_blocks,
            mid_block: MidBlock::new(
                vb.pp("mid_block"),
                top,
                groups,
                act,
                cfg.mid_block_add_attention,
            )?,
            head: OutputHead::new(&vb, top, 2 * cfg.latent_channels, groups)?,
        })
    }

    /// Image `[B, C, H, W]` → moments; stops between layers once `interrupt` is raised.
    pub fn forward(&self, xs: &Tensor, interrupt: Interrupt<'_>) -> Result<Tensor> {
        let mut xs = self.conv_in.forward(xs)?;
        for block in &self.down_blocks {
            xs = block.forward(xs, interrupt)?;
        }
        let xs = self.mid_block.forward(&xs, interrupt)?;
        interrupt.check()?;
        self.head.forward(&xs)
    }
}

/// diffusers' VAE `Decoder`: latents → image at 2^(levels−1) × the size.
#[derive(Debug, Clone)]
pub(crate) struct Decoder {
    conv_in: Conv2d,
    mid_block: MidBlock,
    up_blocks: Vec<Block>,
    head: OutputHead,
}

impl Decoder {
    pub fn new(vb: VarBuilder, cfg: &VaeConfig, act: Activation) -> Result<Self> {
        let groups = cfg.norm_num_groups;
        let reversed: Vec<usize> = cfg.block_out_channels.iter().rev().copied().collect();
        let n = reversed.len();
        let mut up_blocks = Vec::with_capacity(n);
        let mut cin = reversed[0];
        for (i, &cout) in reversed.iter().enumerate() {
            let vb = vb.pp("up_blocks").pp(i);
            let resnets = (0..=cfg.layers_per_block)
                .map(|j| {
                    let c = if j == 0 { cin } else { cout };
                    resnet(vb.pp("resnets").pp(j), c, cout, groups, act)
                })
                .collect::<Result<_>>()?;
            let upsampler = if i + 1 < n {
                Some(Upsample2D::new(vb.pp("upsamplers").pp(0), cout, cout)?)
            } else {
                None
            };
            up_blocks.push(Block {
                resnets,
                downsampler: None,
                upsampler,
            });
            cin = cout;
        }
        let top = reversed[0];
        Ok(Self {
            conv_in: conv2d(vb.pp("conv_in"), cfg.latent_channels, top, 3, 1, 1)?,
            mid_block: MidBlock::new(
                vb.pp("mid_block"),
                top,
                groups,
                act,
                cfg.mid_block_add_attention,
            )?,
            up_blocks,
            head: OutputHead::new(&vb, reversed[n - 1], cfg.out_channels, groups)?,
        })
    }

    /// Latents → image; stops between layers once `interrupt` is raised.
    pub fn forward(&self, xs: &Tensor, interrupt: Interrupt<'_>) -> Result<Tensor> {
        let mut xs = self
            .mid_block
            .forward(&self.conv_in.forward(xs)?, interrupt)?;
        for block in &self.up_blocks {
            xs = block.forward(xs, interrupt)?;
        }
        interrupt.check()?;
        self.head.forward(&xs)
    }
}
