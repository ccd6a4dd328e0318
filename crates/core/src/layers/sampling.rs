//! `Downsample2D` (stride-2 convolution) and `Upsample2D` (nearest 2× + convolution).

use candle_core::{Module, Result, Tensor};
use candle_nn::VarBuilder;

use super::{conv2d, Conv2d, Padding};

/// diffusers' `Downsample2D` with `use_conv=True` (key `conv`).
#[derive(Debug, Clone)]
pub struct Downsample2D {
    conv: Conv2d,
}

impl Downsample2D {
    /// A 3×3 stride-2 convolution with symmetric `padding`; `padding == 0` means
    /// diffusers' VAE variant, which pads one zero column/row right and bottom first.
    pub fn new(
        vb: VarBuilder,
        in_channels: usize,
        out_channels: usize,
        padding: usize,
    ) -> Result<Self> {
        let padding = if padding == 0 {
            Padding {
                top: 0,
                bottom: 1,
                left: 0,
                right: 1,
            }
        } else {
            Padding::uniform(padding)
        };
        Ok(Self {
            conv: Conv2d::new(vb.pp("conv"), in_channels, out_channels, 3, 2, padding)?,
        })
    }

    /// `[B, C, H, W]` → `[B, C_out, ⌈H/2⌉, ⌈W/2⌉]` (for padding 1 or 0).
    pub fn forward(&self, xs: &Tensor) -> Result<Tensor> {
        self.conv.forward(xs)
    }
}

/// diffusers' `Upsample2D` with `use_conv=True` (key `conv`).
#[derive(Debug, Clone)]
pub struct Upsample2D {
    conv: Conv2d,
}

impl Upsample2D {
    /// A nearest-neighbour upsampling followed by a 3×3 convolution.
    pub fn new(vb: VarBuilder, in_channels: usize, out_channels: usize) -> Result<Self> {
        Ok(Self {
            conv: conv2d(vb.pp("conv"), in_channels, out_channels, 3, 1, 1)?,
        })
    }

    /// `[B, C, H, W]` → `[B, C_out, 2H, 2W]`, or `[B, C_out, size.0, size.1]` when
    /// `size` is given (like `F.interpolate(..., size=size, mode="nearest")`).
    pub fn forward(&self, xs: &Tensor, size: Option<(usize, usize)>) -> Result<Tensor> {
        let (_, _, h, w) = xs.dims4()?;
        let (th, tw) = size.unwrap_or((2 * h, 2 * w));
        if th == 0 || tw == 0 {
            candle_core::bail!("upsample: target size {th}x{tw} is empty");
        }
        if (th, tw) == (2 * h, 2 * w) {
            self.conv.forward_upsampled(xs, true)
        } else {
            self.conv.forward(&xs.upsample_nearest2d(th, tw)?)
        }
    }
}
