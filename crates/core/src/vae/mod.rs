//! The KL autoencoder of Stable Diffusion (`AutoencoderKL`).
//!
//! [`AutoencoderKL::encode`] maps an image in [-1, 1] to a [`DiagonalGaussian`]
//! over latents; [`AutoencoderKL::decode`] maps unscaled latents back to an image
//! in roughly [-1, 1]. Scaling by `scaling_factor` (and `shift_factor`) is the
//! caller's job, exactly as with diffusers' `vae.encode` / `vae.decode`.
//! [`AutoencoderKL::decode_tiled`] and [`AutoencoderKL::encode_tiled`] run in
//! tiles ([`tiling`]) for bounded memory; [`AutoencoderTiny`] is the small
//! distilled TAESD autoencoder ([`tiny`]) for fast approximate decodes.

mod coder;
mod config;
pub mod tiling;
pub mod tiny;

pub use config::VaeConfig;
pub use tiling::{untiled_decode_bytes, TilingMode, VaeTiling};
pub use tiny::{AutoencoderTiny, TinyVaeConfig};

use candle_core::{DType, Module, Tensor};
use candle_nn::VarBuilder;

use crate::interrupt::Interrupt;
use crate::layers::{conv2d, Conv2d};
use crate::{Error, Result};
use coder::{Decoder, Encoder};

/// The encoder's posterior: a diagonal Gaussian per latent element.
#[derive(Debug, Clone)]
pub struct DiagonalGaussian {
    /// Mean, `[B, latent_channels, h, w]`.
    pub mean: Tensor,
    /// Log-variance clamped to [-30, 20], same shape.
    pub logvar: Tensor,
    /// `exp(logvar / 2)`, same shape.
    pub std: Tensor,
}

impl DiagonalGaussian {
    /// Splits the encoder's moments `[B, 2L, h, w]` into mean and log-variance
    /// along channels, as diffusers' `DiagonalGaussianDistribution`.
    pub fn from_moments(moments: &Tensor) -> candle_core::Result<Self> {
        let l = moments.dim(1)? / 2;
        let mean = moments.narrow(1, 0, l)?;
        let logvar = moments.narrow(1, l, l)?.clamp(-30f32, 20f32)?;
        let std = (&logvar * 0.5)?.exp()?;
        Ok(Self { mean, logvar, std })
    }

    /// `mean + std * noise`, with `noise` drawn by the caller (diffusers' `sample(generator)`).
    pub fn sample_with_noise(&self, noise: &Tensor) -> Result<Tensor> {
        if noise.dims() != self.mean.dims() {
            return Err(Error::Candle(candle_core::Error::Msg(format!(
                "vae: noise has shape {:?}, expected {:?}",
                noise.dims(),
                self.mean.dims()
            ))));
        }
        let noise = noise.to_dtype(self.mean.dtype())?;
        Ok((&self.mean + (&self.std * noise)?)?)
    }
}

/// diffusers' `AutoencoderKL` (keys `encoder.*`, `quant_conv`, `post_quant_conv`, `decoder.*`).
#[derive(Debug, Clone)]
pub struct AutoencoderKL {
    encoder: Encoder,
    quant_conv: Option<Conv2d>,
    post_quant_conv: Option<Conv2d>,
    decoder: Decoder,
    config: VaeConfig,
    /// The dtype the weights were loaded in, which the layers compute in.
    dtype: DType,
}

impl AutoencoderKL {
    /// Builds the model from `cfg` with the weights under `vb`; it computes in
    /// `vb`'s dtype (f32, or f16/bf16 for half-precision compute: inputs are
    /// cast to it on entry, results back to the input's dtype on exit, and the
    /// norms' statistics and the attention softmax stay f32).
    ///
    /// An unsupported config is [`Error::InvalidFile`] naming `vae/config.json`
    /// and the field; a missing or misshapen tensor is [`Error::Candle`] naming it.
    pub fn new(vb: VarBuilder, cfg: &VaeConfig) -> Result<Self> {
        cfg.validate()
            .map_err(|m| Error::invalid_file("vae/config.json", m))?;
        let act = cfg
            .activation()
            .map_err(|m| Error::invalid_file("vae/config.json", m))?;
        let moments = 2 * cfg.latent_channels;
        let latents = cfg.latent_channels;
        let quant_conv = if cfg.use_quant_conv {
            Some(conv2d(vb.pp("quant_conv"), moments, moments, 1, 1, 0)?)
        } else {
            None
        };
        let post_quant_conv = if cfg.use_post_quant_conv {
            Some(conv2d(vb.pp("post_quant_conv"), latents, latents, 1, 1, 0)?)
        } else {
            None
        };
        Ok(Self {
            encoder: Encoder::new(vb.pp("encoder"), cfg, act)?,
            quant_conv,
            post_quant_conv,
            decoder: Decoder::new(vb.pp("decoder"), cfg, act)?,
            config: cfg.clone(),
            dtype: vb.dtype(),
        })
    }

    /// The config the model was built from.
    pub fn config(&self) -> &VaeConfig {
        &self.config
    }

    /// The dtype the model computes in.
    pub fn dtype(&self) -> DType {
        self.dtype
    }

    /// Encodes `image` `[B, in_channels, H, W]` in [-1, 1] (H and W multiples of
    /// 2^(levels−1), i.e. 8 for SD) to the posterior over `[B, latent_channels, H/8, W/8]`.
    pub fn encode(&self, image: &Tensor) -> Result<DiagonalGaussian> {
        self.encode_interruptible(image, Interrupt::NEVER)
    }

    /// [`AutoencoderKL::encode`] that stops with [`Error::Cancelled`] once
    /// `interrupt` is raised (checked between layers and inside the attention).
    pub fn encode_interruptible(
        &self,
        image: &Tensor,
        interrupt: Interrupt<'_>,
    ) -> Result<DiagonalGaussian> {
        interrupt.check_cancelled()?;
        self.check_image(image)?;
        let moments = self.encode_moments(image, interrupt)?;
        Ok(DiagonalGaussian::from_moments(&moments)?)
    }

    /// An image the encoder takes: `[B, in_channels, H, W]`, H and W positive
    /// multiples of the scale factor.
    fn check_image(&self, image: &Tensor) -> Result<()> {
        check_encoder_input(image, self.config.in_channels, self.scale_factor(), "")
    }

    /// [`AutoencoderKL::encode_interruptible`] in tiles of `tiling` (diffusers'
    /// `enable_tiling()`): an image larger than one tile is encoded tile by
    /// tile and the moments blended; a smaller one is encoded whole.
    pub fn encode_tiled(
        &self,
        image: &Tensor,
        tiling: &VaeTiling,
        interrupt: Interrupt<'_>,
    ) -> Result<DiagonalGaussian> {
        let (_, _, h, w) = image.dims4()?;
        let grid = tiling.encode_grid(self.scale_factor())?;
        if grid.fits(h, w) {
            return self.encode_interruptible(image, interrupt);
        }
        self.check_image(image)?;
        let moments = grid.run(image, interrupt, |tile| {
            self.encode_moments(tile, interrupt)
        })?;
        Ok(DiagonalGaussian::from_moments(&moments)?)
    }

    /// The encoder and `quant_conv`: image → moments `[B, 2L, h, w]`, in the
    /// image's dtype.
    fn encode_moments(&self, image: &Tensor, interrupt: Interrupt<'_>) -> Result<Tensor> {
        let moments = self
            .encoder
            .forward(&image.to_dtype(self.dtype)?, interrupt)?;
        let moments = match &self.quant_conv {
            Some(conv) => conv.forward(&moments)?,
            None => moments,
        };
        Ok(moments.to_dtype(image.dtype())?)
    }

    /// Pixels per latent cell: 2^(levels−1), 8 for SD.
    pub fn scale_factor(&self) -> usize {
        1usize << self.config.num_downsamplers()
    }

    /// Decodes latents `z` `[B, latent_channels, h, w]`, already divided by
    /// `scaling_factor` (diffusers' `vae.decode(z).sample`), to `[B, out_channels, h·8, w·8]`.
    pub fn decode(&self, z: &Tensor) -> Result<Tensor> {
        self.decode_interruptible(z, Interrupt::NEVER)
    }

    /// [`AutoencoderKL::decode`] that stops with [`Error::Cancelled`] once
    /// `interrupt` is raised (checked between layers and inside the attention).
    pub fn decode_interruptible(&self, z: &Tensor, interrupt: Interrupt<'_>) -> Result<Tensor> {
        interrupt.check_cancelled()?;
        self.check_latents(z)?;
        self.decode_unchecked(z, interrupt)
    }

    /// [`AutoencoderKL::decode_interruptible`] in tiles of `tiling` (diffusers'
    /// `enable_tiling()`): latents larger than one tile are decoded tile by
    /// tile, blended where tiles overlap; smaller ones are decoded whole. The
    /// working memory is one tile's, whatever the size; stops between tiles
    /// (and between layers) once `interrupt` is raised.
    pub fn decode_tiled(
        &self,
        z: &Tensor,
        tiling: &VaeTiling,
        interrupt: Interrupt<'_>,
    ) -> Result<Tensor> {
        interrupt.check_cancelled()?;
        self.check_latents(z)?;
        let (_, _, h, w) = z.dims4()?;
        let grid = tiling.decode_grid(self.scale_factor())?;
        if grid.fits(h, w) {
            return self.decode_unchecked(z, interrupt);
        }
        grid.run(z, interrupt, |tile| self.decode_unchecked(tile, interrupt))
    }

    /// `post_quant_conv` and the decoder; the image comes in `z`'s dtype.
    fn decode_unchecked(&self, z: &Tensor, interrupt: Interrupt<'_>) -> Result<Tensor> {
        let out_dtype = z.dtype();
        let z = z.to_dtype(self.dtype)?;
        let z = match &self.post_quant_conv {
            Some(conv) => conv.forward(&z)?,
            None => z,
        };
        Ok(self.decoder.forward(&z, interrupt)?.to_dtype(out_dtype)?)
    }

    /// Latents the decoder takes: `[B, latent_channels, h, w]`, all positive.
    fn check_latents(&self, z: &Tensor) -> Result<()> {
        let dims = z.dims();
        match *dims {
            [b, c, h, w] if b > 0 && c == self.config.latent_channels && h > 0 && w > 0 => {}
            _ => {
                return Err(shape_error(format!(
                    "latents have shape {dims:?}, expected [B, {}, h, w] with B, h, w >= 1",
                    self.config.latent_channels
                )))
            }
        }
        Ok(())
    }
}

/// A forward-argument shape error.
/// Checks an image for an encoder (full or tiny): `[B, in_channels, H, W]`
/// with B, H and W positive and H, W multiples of `factor`; `context` starts
/// the error message.
pub(crate) fn check_encoder_input(
    image: &Tensor,
    in_channels: usize,
    factor: usize,
    context: &str,
) -> Result<()> {
    match *image.dims() {
        [b, c, h, w]
            if b > 0 && c == in_channels && h > 0 && w > 0 && h % factor == 0 && w % factor == 0 =>
        {
            Ok(())
        }
        ref dims => Err(shape_error(format!(
            "{context}image has shape {dims:?}, expected [B, {in_channels}, H, W] with H and W positive multiples of {factor}"
        ))),
    }
}

pub(crate) fn shape_error(message: String) -> Error {
    Error::Candle(candle_core::Error::Msg(format!("vae: {message}")))
}
