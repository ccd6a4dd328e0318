//! diffusers' `AutoencoderTiny`: the TAESD / TAESDXL distilled autoencoder.
//!
//! Plain 3×3 convolutions and ReLU residual blocks, no norms and no attention:
//! about 1/40 of the KL decoder's work for an image that is close to, not
//! equal to, the full VAE's. It works on the diffusion latents as the UNet sees
//! them (TAESD's `scaling_factor` is 1), so a pipeline divides by its own
//! `scaling_factor` before [`AutoencoderTiny::decode`], as diffusers' pipelines do.
//! Weights are `encoder.layers.{i}.*` and `decoder.layers.{i}.*`, the indices of
//! diffusers' `nn.Sequential` (activations and upsamplers take indices too).

use std::path::Path;

use candle_core::{Module, Tensor};
use candle_nn::VarBuilder;
use serde::Deserialize;

use super::{check_encoder_input, shape_error};
use crate::interrupt::Interrupt;
use crate::layers::{conv2d, Activation, Conv2d, Padding};
use crate::model::files::ConfigText;
use crate::{Error, Result};

/// diffusers' `AutoencoderTiny` config; missing fields take diffusers' defaults (TAESD's).
#[derive(Debug, Clone, Deserialize)]
#[serde(default)]
pub struct TinyVaeConfig {
    /// Image channels.
    pub in_channels: usize,
    /// Decoded image channels.
    pub out_channels: usize,
    /// Channels of each encoder level (all equal in this architecture).
    pub encoder_block_out_channels: Vec<usize>,
    /// Channels of each decoder level (all equal in this architecture).
    pub decoder_block_out_channels: Vec<usize>,
    /// Activation inside the blocks (TAESD: `relu`).
    pub act_fn: String,
    /// Upsampling mode of the decoder (only `nearest`).
    pub upsample_fn: String,
    /// Channels of the latent space.
    pub latent_channels: usize,
    /// Upsampling factor between decoder levels (only 2).
    pub upsampling_scaling_factor: usize,
    /// Residual blocks per encoder level.
    pub num_encoder_blocks: Vec<usize>,
    /// Residual blocks per decoder level.
    pub num_decoder_blocks: Vec<usize>,
    /// Latents are divided by this before the decoder's `tanh` clamp.
    pub latent_magnitude: f64,
    /// Shift of the latents stored as bytes (unused here).
    pub latent_shift: f64,
    /// Pipelines divide latents by this before decoding (1 for TAESD).
    pub scaling_factor: f64,
    /// Pipelines of latent spaces with a shift add it back before decoding (0 for TAESD).
    pub shift_factor: f64,
}

impl Default for TinyVaeConfig {
    fn default() -> Self {
        Self {
            in_channels: 3,
            out_channels: 3,
            encoder_block_out_channels: vec![64; 4],
            decoder_block_out_channels: vec![64; 4],
            act_fn: "relu".into(),
            upsample_fn: "nearest".into(),
            latent_channels: 4,
            upsampling_scaling_factor: 2,
            num_encoder_blocks: vec![1, 3, 3, 3],
            num_decoder_blocks: vec![3, 3, 3, 1],
            latent_magnitude: 3.0,
            latent_shift: 0.5,
            scaling_factor: 1.0,
            shift_factor: 0.0,
        }
    }
}

impl TinyVaeConfig {
    /// Reads and validates an `AutoencoderTiny` `config.json`; errors name the file and the field.
    pub fn from_file(path: &Path) -> Result<Self> {
        Self::from_config(&ConfigText::read(path)?)
    }

    /// Parses and validates a config's text; errors name its origin and the field.
    pub fn from_config(config: &ConfigText) -> Result<Self> {
        config.parse_checked(Self::validate)
    }

    /// Checks that every field selects something this implementation supports.
    pub fn validate(&self) -> std::result::Result<(), String> {
        Activation::from_name(&self.act_fn).map_err(|e| format!("act_fn: {e}"))?;
        if self.upsample_fn != "nearest" {
            return Err(format!(
                "upsample_fn {:?} is not supported (expected \"nearest\")",
                self.upsample_fn
            ));
        }
        if self.upsampling_scaling_factor != 2 {
            return Err(format!(
                "upsampling_scaling_factor {} is not supported (expected 2)",
                self.upsampling_scaling_factor
            ));
        }
        for (side, channels, blocks) in [
            (
                "encoder",
                &self.encoder_block_out_channels,
                &self.num_encoder_blocks,
            ),
            (
                "decoder",
                &self.decoder_block_out_channels,
                &self.num_decoder_blocks,
            ),
        ] {
            if channels.is_empty() || channels.len() != blocks.len() {
                return Err(format!(
                    "{side}_block_out_channels has {} entries and num_{side}_blocks {}; they must match and not be empty",
                    channels.len(),
                    blocks.len()
                ));
            }
            if channels.iter().any(|&c| c != channels[0] || c == 0) {
                return Err(format!(
                    "{side}_block_out_channels {channels:?}: every level must have the same positive width"
                ));
            }
        }
        if self.encoder_block_out_channels.len() != self.decoder_block_out_channels.len() {
            return Err(
                "encoder_block_out_channels and decoder_block_out_channels differ in length".into(),
            );
        }
        if self.latent_channels == 0 || self.in_channels == 0 || self.out_channels == 0 {
            return Err("in_channels, out_channels and latent_channels must be positive".into());
        }
        if !(self.latent_magnitude.is_finite() && self.latent_magnitude > 0.0) {
            return Err(format!(
                "latent_magnitude must be positive, got {}",
                self.latent_magnitude
            ));
        }
        if !(self.scaling_factor.is_finite() && self.scaling_factor != 0.0) {
            return Err(format!(
                "scaling_factor must be a non-zero number, got {}",
                self.scaling_factor
            ));
        }
        Ok(())
    }

    /// Pixels per latent cell: 2^(levels−1), 8 for TAESD.
    pub fn scale_factor(&self) -> usize {
        1 << self.decoder_block_out_channels.len().saturating_sub(1)
    }
}

/// A 3×3 convolution without bias, stride `stride`, padding 1.
fn conv_no_bias(
    vb: VarBuilder,
    cin: usize,
    cout: usize,
    stride: usize,
) -> candle_core::Result<Conv2d> {
    let weight = vb.get((cout, cin, 3, 3), "weight")?;
    Conv2d::from_tensors(weight, None, stride, Padding::uniform(1))
}

/// diffusers' `AutoencoderTinyBlock`: `relu(conv(act(conv(act(conv(x))))) + x)`.
#[derive(Debug, Clone)]
struct TinyBlock {
    convs: [Conv2d; 3],
    act: Activation,
}

impl TinyBlock {
    fn new(vb: VarBuilder, channels: usize, act: Activation) -> candle_core::Result<Self> {
        let conv = |i: usize| conv2d(vb.pp("conv").pp(i), channels, channels, 3, 1, 1);
        Ok(Self {
            convs: [conv(0)?, conv(2)?, conv(4)?],
            act,
        })
    }

    fn forward(&self, xs: &Tensor) -> candle_core::Result<Tensor> {
        let [first, second, third] = &self.convs;
        let h = self.act.forward(&first.forward(xs)?)?;
        let h = self.act.forward(&second.forward(&h)?)?;
        (third.forward(&h)? + xs)?.relu()
    }
}

/// One entry of the encoder's or decoder's layer sequence.
#[derive(Debug, Clone)]
enum Layer {
    /// A convolution, after a nearest 2× upsampling when `upsampled`.
    Conv { conv: Conv2d, upsampled: bool },
    /// A residual block.
    Block(Box<TinyBlock>),
    /// The activation after the decoder's first convolution.
    Act(Activation),
}

impl Layer {
    fn forward(&self, xs: &Tensor) -> candle_core::Result<Tensor> {
        match self {
            Self::Conv { conv, upsampled } => conv.forward_upsampled(xs, *upsampled),
            Self::Block(block) => block.forward(xs),
            Self::Act(act) => act.forward(xs),
        }
    }
}

/// Runs `layers` in order, checking `interrupt` before each.
fn run_layers(
    layers: &[Layer],
    xs: Tensor,
    interrupt: Interrupt<'_>,
) -> candle_core::Result<Tensor> {
    layers.iter().try_fold(xs, |xs, layer| {
        interrupt.check()?;
        layer.forward(&xs)
    })
}

/// diffusers' `EncoderTiny`: per level a convolution (stride 2 after the
/// first, without bias) and its blocks, then a convolution to the latents.
fn encoder_layers(
    vb: VarBuilder,
    cfg: &TinyVaeConfig,
    act: Activation,
) -> candle_core::Result<Vec<Layer>> {
    let vb = vb.pp("layers");
    let mut layers = Vec::new();
    let channels = &cfg.encoder_block_out_channels;
    for (level, (&width, &blocks)) in channels.iter().zip(&cfg.num_encoder_blocks).enumerate() {
        let index = layers.len();
        let conv = if level == 0 {
            conv2d(vb.pp(index), cfg.in_channels, width, 3, 1, 1)?
        } else {
            conv_no_bias(vb.pp(index), width, width, 2)?
        };
        layers.push(Layer::Conv {
            conv,
            upsampled: false,
        });
        for _ in 0..blocks {
            let block = TinyBlock::new(vb.pp(layers.len()), width, act)?;
            layers.push(Layer::Block(Box::new(block)));
        }
    }
    let last = channels[channels.len() - 1];
    let conv = conv2d(vb.pp(layers.len()), last, cfg.latent_channels, 3, 1, 1)?;
    layers.push(Layer::Conv {
        conv,
        upsampled: false,
    });
    Ok(layers)
}

/// diffusers' `DecoderTiny`: a convolution and the activation, then per level
/// its blocks and a convolution (after a 2× upsampling, except on the last
/// level, whose convolution has a bias and makes the image).
fn decoder_layers(
    vb: VarBuilder,
    cfg: &TinyVaeConfig,
    act: Activation,
) -> candle_core::Result<Vec<Layer>> {
    let vb = vb.pp("layers");
    let channels = &cfg.decoder_block_out_channels;
    let conv = conv2d(vb.pp(0), cfg.latent_channels, channels[0], 3, 1, 1)?;
    let mut layers = vec![
        Layer::Conv {
            conv,
            upsampled: false,
        },
        Layer::Act(act),
    ];
    let levels = channels.len();
    // Checkpoint indices: each `nn.Upsample` takes one of its own, while here
    // it is fused into the convolution after it.
    let mut index = layers.len();
    for (level, (&width, &blocks)) in channels.iter().zip(&cfg.num_decoder_blocks).enumerate() {
        for _ in 0..blocks {
            layers.push(Layer::Block(Box::new(TinyBlock::new(
                vb.pp(index),
                width,
                act,
            )?)));
            index += 1;
        }
        let last = level + 1 == levels;
        if !last {
            index += 1;
        }
        let conv = if last {
            conv2d(vb.pp(index), width, cfg.out_channels, 3, 1, 1)?
        } else {
            conv_no_bias(vb.pp(index), width, width, 1)?
        };
        index += 1;
        layers.push(Layer::Conv {
            conv,
            upsampled: !last,
        });
    }
    Ok(layers)
}

/// diffusers' `AutoencoderTiny` (TAESD, TAESDXL).
#[derive(Debug, Clone)]
pub struct AutoencoderTiny {
    encoder: Vec<Layer>,
    decoder: Vec<Layer>,
    config: TinyVaeConfig,
}

impl AutoencoderTiny {
    /// Builds the model from `cfg` with the weights under `vb` (keys `encoder.*`, `decoder.*`).
    ///
    /// An unsupported config is [`Error::InvalidFile`] naming `config.json`
    /// and the field; a missing or misshapen tensor is [`Error::Candle`] naming it.
    pub fn new(vb: VarBuilder, cfg: &TinyVaeConfig) -> Result<Self> {
        cfg.validate()
            .map_err(|m| Error::invalid_file("config.json", m))?;
        let act = Activation::from_name(&cfg.act_fn)
            .map_err(|m| Error::invalid_file("config.json", m))?;
        Ok(Self {
            encoder: encoder_layers(vb.pp("encoder"), cfg, act)?,
            decoder: decoder_layers(vb.pp("decoder"), cfg, act)?,
            config: cfg.clone(),
        })
    }

    /// The config the model was built from.
    pub fn config(&self) -> &TinyVaeConfig {
        &self.config
    }

    /// Decodes latents `[B, latent_channels, h, w]` (already divided by
    /// `scaling_factor`) to an image `[B, out_channels, 8h, 8w]` in about
    /// [-1, 1], as diffusers' `vae.decode(latents).sample`. Stops between
    /// layers once `interrupt` is raised.
    pub fn decode(&self, latents: &Tensor, interrupt: Interrupt<'_>) -> Result<Tensor> {
        interrupt.check_cancelled()?;
        let dims = latents.dims();
        match *dims {
            [b, c, h, w] if b > 0 && c == self.config.latent_channels && h > 0 && w > 0 => {}
            _ => {
                return Err(shape_error(format!(
                    "tiny decoder: latents have shape {dims:?}, expected [B, {}, h, w] with B, h, w >= 1",
                    self.config.latent_channels
                )))
            }
        }
        let magnitude = self.config.latent_magnitude;
        let clamped = ((latents / magnitude)?.tanh()? * magnitude)?;
        let image = run_layers(&self.decoder, clamped, interrupt)?;
        Ok(((image * 2.0)? - 1.0)?)
    }

    /// Decodes latents as the diffusion loop holds them (multiplied by
    /// `scaling_factor`) to an image in 0..1, as a diffusers pipeline with
    /// this autoencoder as its `vae` does.
    pub fn decode_to_unit(&self, latents: &Tensor, interrupt: Interrupt<'_>) -> Result<Tensor> {
        let mut z = (latents / self.config.scaling_factor)?;
        if self.config.shift_factor != 0.0 {
            z = (z + self.config.shift_factor)?;
        }
        let image = self.decode(&z, interrupt)?;
        Ok(((image / 2.0)? + 0.5)?.clamp(0f32, 1f32)?)
    }

    /// Encodes an image `[B, in_channels, H, W]` in [-1, 1] (H and W multiples
    /// of 8) to latents `[B, latent_channels, H/8, W/8]`, as diffusers'
    /// `vae.encode(image).latents` (no distribution: the latents themselves).
    pub fn encode(&self, image: &Tensor, interrupt: Interrupt<'_>) -> Result<Tensor> {
        interrupt.check_cancelled()?;
        check_encoder_input(
            image,
            self.config.in_channels,
            self.config.scale_factor(),
            "tiny encoder: ",
        )?;
        let unit = ((image + 1.0)? / 2.0)?;
        Ok(run_layers(&self.encoder, unit, interrupt)?)
    }
}
