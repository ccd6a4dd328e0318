//! Tiled encoding and decoding, as diffusers' `AutoencoderKL.enable_tiling()`.
//!
//! A large input is cut into overlapping square tiles of the size the VAE was
//! trained at (`sample_size` pixels, `sample_size / 8` latents), each tile runs
//! through the encoder or decoder alone, and each output tile is blended
//! linearly into its upper and left neighbours over `overlap_factor` of a tile
//! before its top-left part is kept. Tiles run one after the other, so the
//! working memory is one tile's whatever the image size; only two rows of
//! output tiles are held. The order of the blends (the upper neighbour first,
//! each neighbour already blended) is diffusers', so the output matches its
//! tiled output.

use candle_core::{DType, Tensor};

use super::VaeConfig;
use crate::interrupt::Interrupt;
use crate::{Error, Result};

/// The tile size diffusers' `AutoencoderKL` uses when a config has no `sample_size`.
const DEFAULT_SAMPLE_TILE: usize = 512;

/// How much of a tile overlaps its neighbour: diffusers' `tile_overlap_factor`
/// of `AutoencoderKL`, a constant there (not part of the config).
pub const DIFFUSERS_OVERLAP_FACTOR: f64 = 0.25;

/// The tile geometry of a tiled VAE pass.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct VaeTiling {
    /// Side of an image tile in pixels (diffusers' `tile_sample_min_size`).
    pub sample_tile: usize,
    /// Share of a tile that overlaps the next one (diffusers' `tile_overlap_factor`).
    pub overlap_factor: f64,
}

impl VaeTiling {
    /// diffusers' tiles for a VAE: `sample_size` (its first value when it is a
    /// pair; 512 when absent) and an overlap of 0.25.
    pub fn for_config(config: &VaeConfig) -> Self {
        let sample_tile = config
            .sample_size
            .map_or(DEFAULT_SAMPLE_TILE, |size| size.height_width().0);
        Self {
            sample_tile,
            overlap_factor: DIFFUSERS_OVERLAP_FACTOR,
        }
    }

    /// Side of a latent tile, `sample_tile / scale` (diffusers' `tile_latent_min_size`).
    pub fn latent_tile(&self, scale: usize) -> usize {
        self.sample_tile / scale.max(1)
    }

    /// The grid of a tiled decode of latents at `scale` pixels per latent.
    pub(super) fn decode_grid(&self, scale: usize) -> Result<TileGrid> {
        self.grid(self.latent_tile(scale), self.sample_tile)
    }

    /// The grid of a tiled encode of an image to latents at `scale` pixels per latent.
    pub(super) fn encode_grid(&self, scale: usize) -> Result<TileGrid> {
        self.grid(self.sample_tile, self.latent_tile(scale))
    }

    /// Input tiles of `tile`, output tiles of `out_tile`, with diffusers'
    /// integer truncations of the overlap.
    fn grid(&self, tile: usize, out_tile: usize) -> Result<TileGrid> {
        let factor = self.overlap_factor;
        let stride = (tile as f64 * (1.0 - factor)) as usize;
        let blend = (out_tile as f64 * factor) as usize;
        if tile == 0 || stride == 0 || !(0.0..1.0).contains(&factor) {
            return Err(Error::Candle(candle_core::Error::Msg(format!(
                "vae tiling: a tile of {} pixels with overlap {factor} leaves no step between tiles",
                self.sample_tile
            ))));
        }
        Ok(TileGrid {
            tile,
            stride,
            blend,
            keep: out_tile - blend,
        })
    }
}

/// Where tiles start and how their outputs are blended and cropped.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct TileGrid {
    /// Side of an input tile.
    tile: usize,
    /// Distance between the starts of neighbouring input tiles.
    stride: usize,
    /// Output rows/columns blended with the neighbour's.
    blend: usize,
    /// Output rows/columns kept from each tile.
    keep: usize,
}

impl TileGrid {
    /// Whether an input of `height`×`width` fits one tile (and is run whole).
    pub(super) fn fits(&self, height: usize, width: usize) -> bool {
        height <= self.tile && width <= self.tile
    }

    /// Runs `tile_fn` on every tile of `input` `[B, C, H, W]`, row by row,
    /// and blends the outputs into one tensor. Stops before a tile once
    /// `interrupt` is raised.
    pub(super) fn run(
        &self,
        input: &Tensor,
        interrupt: Interrupt<'_>,
        mut tile_fn: impl FnMut(&Tensor) -> Result<Tensor>,
    ) -> Result<Tensor> {
        let (_, _, height, width) = input.dims4()?;
        let mut rows = Vec::new();
        // The bottom `blend` rows of the previous row's blended tiles.
        let mut above: Vec<Tensor> = Vec::new();
        for top in (0..height).step_by(self.stride) {
            let rows_in = self.tile.min(height - top);
            let mut pieces = Vec::new();
            let mut current: Vec<Tensor> = Vec::new();
            let mut left: Option<Tensor> = None;
            for (column, start) in (0..width).step_by(self.stride).enumerate() {
                interrupt.check_cancelled()?;
                let tile = input.narrow(2, top, rows_in)?.narrow(
                    3,
                    start,
                    self.tile.min(width - start),
                )?;
                let mut out = tile_fn(&tile)?;
                if let Some(upper) = above.get(column) {
                    out = blend(upper, &out, self.blend, 2)?;
                }
                if let Some(left) = &left {
                    out = blend(left, &out, self.blend, 3)?;
                }
                let (_, _, h, w) = out.dims4()?;
                pieces.push(
                    out.narrow(2, 0, self.keep.min(h))?
                        .narrow(3, 0, self.keep.min(w))?,
                );
                let kept = self.blend.min(h);
                current.push(out.narrow(2, h - kept, kept)?);
                left = Some(out);
            }
            rows.push(Tensor::cat(&pieces, 3)?);
            above = current;
        }
        Ok(Tensor::cat(&rows, 2)?)
    }
}

/// diffusers' `blend_v` (`dim` 2) / `blend_h` (`dim` 3): the first `extent`
/// rows (columns) of `b` fade from the last ones of `a` into `b`'s own, with
/// weights `i / extent` for `b`.
fn blend(a: &Tensor, b: &Tensor, extent: usize, dim: usize) -> Result<Tensor> {
    let extent = extent.min(a.dim(dim)?).min(b.dim(dim)?);
    if extent == 0 {
        return Ok(b.clone());
    }
    let mut shape = vec![1usize; 4];
    shape[dim] = extent;
    let weights = |f: fn(f64) -> f64| -> Result<Tensor> {
        let values: Vec<f32> = (0..extent)
            .map(|i| f(i as f64 / extent as f64) as f32)
            .collect();
        Ok(Tensor::from_vec(values, shape.as_slice(), b.device())?.to_dtype(b.dtype())?)
    };
    let own = weights(|t| t)?;
    let theirs = weights(|t| 1.0 - t)?;
    let tail = a.narrow(dim, a.dim(dim)? - extent, extent)?;
    let head = b.narrow(dim, 0, extent)?;
    let faded = (tail.broadcast_mul(&theirs)? + head.broadcast_mul(&own)?)?;
    let rest = b.dim(dim)? - extent;
    if rest == 0 {
        return Ok(faded);
    }
    Ok(Tensor::cat(&[&faded, &b.narrow(dim, extent, rest)?], dim)?)
}

/// Whether a VAE pass should be tiled.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TilingMode {
    /// Tiled when the untiled pass's estimated working memory
    /// ([`untiled_decode_bytes`]) exceeds this many bytes.
    Auto {
        /// The memory the pass may use, in bytes.
        budget_bytes: u64,
    },
    /// Always tiled (inputs that fit one tile still run whole, as in diffusers).
    On,
    /// Never tiled.
    Off,
}

impl TilingMode {
    /// Whether a decode to an image of `height`×`width` pixels runs tiled.
    pub fn tiles(&self, config: &VaeConfig, height: usize, width: usize) -> bool {
        match *self {
            Self::On => true,
            Self::Off => false,
            Self::Auto { budget_bytes } => {
                untiled_decode_bytes(config, height, width) > budget_bytes
            }
        }
    }
}

/// Live tensors at the decoder's peak, in units of its largest activation
/// (SD 1.5: the 256 channels upsampled to the full image size): a resnet's
/// input, its normalised copy, its output and the convolution's working copy.
const PEAK_ACTIVATIONS: u64 = 5;

/// The working memory of an untiled decode to `height`×`width` pixels, in
/// bytes: a few copies of the decoder's largest f32 activation (channels ×
/// pixels at each level, the upsampled ones included).
pub fn untiled_decode_bytes(config: &VaeConfig, height: usize, width: usize) -> u64 {
    let pixels = (height * width) as u64;
    let largest = config
        .block_out_channels
        .iter()
        .enumerate()
        .map(|(level, &channels)| {
            // Level `level` runs at 1/2^level of the image (level 0 at full size);
            // its upsampled output feeds the level below at twice the side.
            let side_shift = 2 * level as u32;
            let own = channels as u64 * (pixels >> side_shift);
            let upsampled = if level > 0 {
                channels as u64 * (pixels >> (side_shift - 2))
            } else {
                0
            };
            own.max(upsampled)
        })
        .max()
        .unwrap_or(0);
    largest * PEAK_ACTIVATIONS * DType::F32.size_in_bytes() as u64
}

#[cfg(test)]
mod tests {
    use candle_core::Device;

    use super::*;

    #[test]
    fn grids_follow_diffusers_truncations() {
        let tiling = VaeTiling {
            sample_tile: 512,
            overlap_factor: 0.25,
        };
        let decode = tiling.decode_grid(8).unwrap();
        assert_eq!(
            decode,
            TileGrid {
                tile: 64,
                stride: 48,
                blend: 128,
                keep: 384
            }
        );
        let encode = tiling.encode_grid(8).unwrap();
        assert_eq!(
            encode,
            TileGrid {
                tile: 512,
                stride: 384,
                blend: 16,
                keep: 48
            }
        );
        let tiny = VaeTiling {
            sample_tile: 1,
            overlap_factor: 0.25,
        };
        assert!(tiny.encode_grid(8).is_err());
    }

    #[test]
    fn blending_fades_linearly() {
        let dev = Device::Cpu;
        let a = Tensor::ones((1, 1, 4, 2), DType::F32, &dev).unwrap();
        let b = Tensor::zeros((1, 1, 4, 2), DType::F32, &dev).unwrap();
        let out = blend(&a, &b, 4, 2).unwrap();
        let rows: Vec<f32> = out
            .narrow(3, 0, 1)
            .unwrap()
            .flatten_all()
            .unwrap()
            .to_vec1()
            .unwrap();
        assert_eq!(rows, [1.0, 0.75, 0.5, 0.25]);
    }

    #[test]
    fn the_memory_estimate_grows_with_the_pixels() {
        let config: VaeConfig = serde_json::from_str(
            r#"{"block_out_channels": [128, 256, 512, 512],
                "down_block_types": ["DownEncoderBlock2D", "DownEncoderBlock2D", "DownEncoderBlock2D", "DownEncoderBlock2D"],
                "up_block_types": ["UpDecoderBlock2D", "UpDecoderBlock2D", "UpDecoderBlock2D", "UpDecoderBlock2D"]}"#,
        )
        .unwrap();
        let at_512 = untiled_decode_bytes(&config, 512, 512);
        // The 256-channel level upsampled to the full image size: 256 × 512².
        assert_eq!(at_512, 256 * 512 * 512 * PEAK_ACTIVATIONS * 4);
        assert_eq!(untiled_decode_bytes(&config, 1024, 1024), 4 * at_512);
        let auto = TilingMode::Auto {
            budget_bytes: 2 * at_512,
        };
        assert!(!auto.tiles(&config, 512, 512));
        assert!(auto.tiles(&config, 1024, 1024));
    }
}
