//! Cheap live previews of a generation in progress.
//!
//! With a tiny autoencoder loaded, a preview is its decode of the latents,
//! shrunk ([`image_preview`]). Without one, a fixed linear map from the 4 latent channels to RGB (the widely used
//! per-family "latent RGB factors") approximates what the VAE would decode,
//! at the latent's resolution (1/8 of the image), for a few microseconds
//! instead of a VAE pass. Apply it to the scheduler's current latents or,
//! better, to its prediction of the clean latents.

use std::time::Duration;

use candle_core::{DType, Tensor};

use crate::error::Result;
use crate::image::{encode_png, to_rgb8};

/// Which latent space the latents live in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LatentFormat {
    /// The SD 1.x / 2.x VAE (also SD-Turbo).
    Sd15,
    /// The SDXL VAE (also SDXL-Turbo).
    Sdxl,
}

impl LatentFormat {
    /// Rows: latent channel; columns: R, G, B.
    fn factors(self) -> [[f32; 3]; 4] {
        match self {
            Self::Sd15 => [
                [0.3512, 0.2297, 0.3227],
                [0.3250, 0.4974, 0.2350],
                [-0.2829, 0.1762, 0.2721],
                [-0.2120, -0.2616, -0.7177],
            ],
            Self::Sdxl => [
                [0.3651, 0.4232, 0.4341],
                [-0.2533, -0.0042, 0.1068],
                [0.1076, 0.1111, -0.0362],
                [-0.3165, -0.2492, -0.2188],
            ],
        }
    }

    /// Added to R, G, B after the projection.
    fn bias(self) -> [f32; 3] {
        match self {
            Self::Sd15 => [0.0, 0.0, 0.0],
            Self::Sdxl => [0.1084, -0.0175, -0.0011],
        }
    }
}

/// A small RGB preview.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Preview {
    /// Width in pixels.
    pub width: usize,
    /// Height in pixels.
    pub height: usize,
    /// Interleaved 8-bit RGB, row by row.
    pub rgb: Vec<u8>,
}

impl Preview {
    /// The preview as a PNG file.
    pub fn to_png(&self) -> Result<Vec<u8>> {
        encode_png(&self.rgb, self.width, self.height, None)
    }
}

/// Projects the first image of `latents` `[B, 4, h, w]` (scaled as the UNet
/// sees them) to RGB, enlarged `scale`× (nearest neighbour, 1 to 8).
pub fn latent_preview(latents: &Tensor, format: LatentFormat, scale: usize) -> Result<Preview> {
    let (_, c, h, w) = latents.dims4()?;
    if c != 4 {
        let message = format!("a preview needs 4 latent channels, got {c}");
        return Err(candle_core::Error::Msg(message).into());
    }
    if !(1..=8).contains(&scale) {
        let message = format!("a preview scale must be between 1 and 8, got {scale}");
        return Err(candle_core::Error::Msg(message).into());
    }
    let data = latents
        .narrow(0, 0, 1)?
        .to_dtype(DType::F32)?
        .flatten_all()?
        .to_vec1::<f32>()?;
    let (factors, bias) = (format.factors(), format.bias());
    // One colour per latent cell, then each cell repeated scale×scale times.
    let cells: Vec<[u8; 3]> = (0..h * w)
        .map(|p| {
            std::array::from_fn(|ch| {
                let v = bias[ch]
                    + (0..4)
                        .map(|k| data[k * h * w + p] * factors[k][ch])
                        .sum::<f32>();
                // [-1, 1] -> [0, 255]
                (((v + 1.0) * 127.5).round()).clamp(0.0, 255.0) as u8
            })
        })
        .collect();
    let (width, height) = (w * scale, h * scale);
    let mut rgb = Vec::with_capacity(width * height * 3);
    for row in cells.chunks_exact(w) {
        let start = rgb.len();
        for cell in row {
            for _ in 0..scale {
                rgb.extend_from_slice(cell);
            }
        }
        for _ in 1..scale {
            rgb.extend_from_within(start..start + width * 3);
        }
    }
    Ok(Preview { width, height, rgb })
}

/// The first image of `image` `[B, 3, H, W]` (values in 0..1), shrunk by
/// the smallest whole factor that brings its longer side to at most
/// `longest` pixels, each output pixel the mean of its block.
pub fn image_preview(image: &Tensor, longest: usize) -> Result<Preview> {
    let (_, _, h, w) = image.dims4()?;
    let factor = h.max(w).div_ceil(longest.max(1)).max(1);
    let first = image.narrow(0, 0, 1)?.to_dtype(DType::F32)?;
    let shrunk = if factor > 1 {
        first.avg_pool2d(factor)?
    } else {
        first
    };
    let (_, _, height, width) = shrunk.dims4()?;
    Ok(Preview {
        width,
        height,
        rgb: to_rgb8(&shrunk)?,
    })
}

/// The enlargement (1 to 8) that brings a latent of `width`×`height` cells
/// closest to, without passing, `longest` pixels on its longer side.
pub fn preview_scale(width: usize, height: usize, longest: usize) -> usize {
    (longest / width.max(height).max(1)).clamp(1, 8)
}

/// Decides after which steps a preview fits a share of the denoising time.
///
/// Each step earns `share` of its duration; a preview is due once the time
/// earned covers what previews have cost so far plus one more at the last
/// measured cost. The first preview comes after the first step (its cost is
/// not known before). Previews cost milliseconds and CPU steps seconds, so on
/// a CPU every step gets one; a fast GPU gets one every few steps.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct PreviewBudget {
    share: f64,
    earned: f64,
    spent: f64,
    last_cost: f64,
}

impl PreviewBudget {
    /// A budget of `share` (e.g. 0.01) of the step time.
    pub fn new(share: f64) -> Self {
        Self {
            share,
            earned: 0.0,
            spent: 0.0,
            last_cost: 0.0,
        }
    }

    /// Records a step that took `elapsed` and says whether a preview is due.
    pub fn step(&mut self, elapsed: Duration) -> bool {
        self.earned += self.share * elapsed.as_secs_f64();
        self.spent + self.last_cost <= self.earned
    }

    /// Records what a preview cost.
    pub fn spend(&mut self, cost: Duration) {
        self.last_cost = cost.as_secs_f64();
        self.spent += self.last_cost;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::Device;

    #[test]
    fn projects_channels_to_rgb() -> Result<()> {
        // Channel 0 at 1, others 0: the first factor row, mapped to 0..255.
        let mut data = vec![0f32; 4 * 2 * 3];
        data[..6].fill(1.0);
        let latents = Tensor::from_vec(data, (1, 4, 2, 3), &Device::Cpu)?;
        let preview = latent_preview(&latents, LatentFormat::Sd15, 2)?;
        assert_eq!((preview.width, preview.height), (6, 4));
        assert_eq!(&preview.rgb[..3], &[172, 157, 169]);
        assert!(preview.to_png()?.starts_with(b"\x89PNG"));
        assert!(latent_preview(&latents, LatentFormat::Sdxl, 0).is_err());
        let wrong = Tensor::zeros((1, 3, 2, 2), DType::F32, &Device::Cpu)?;
        assert!(latent_preview(&wrong, LatentFormat::Sdxl, 1).is_err());
        Ok(())
    }

    #[test]
    fn enlarges_each_cell_to_a_block() -> Result<()> {
        let latents = Tensor::arange(0f32, 24.0, &Device::Cpu)?
            .affine(0.05, -0.6)?
            .reshape((1, 4, 2, 3))?;
        let small = latent_preview(&latents, LatentFormat::Sdxl, 1)?;
        let large = latent_preview(&latents, LatentFormat::Sdxl, 3)?;
        assert_eq!((large.width, large.height), (9, 6));
        for y in 0..6 {
            for x in 0..9 {
                let cell = ((y / 3) * 3 + x / 3) * 3;
                assert_eq!(
                    large.rgb[(y * 9 + x) * 3..][..3],
                    small.rgb[cell..cell + 3],
                    "({x}, {y})"
                );
            }
        }
        Ok(())
    }

    #[test]
    fn decoded_previews_shrink_by_block_means() -> Result<()> {
        // 2×4 blocks of 0 and 1: a 2× shrink averages each 2×2 block to 0.5.
        let data: Vec<f32> = (0..3 * 4 * 8).map(|i| (i % 2) as f32).collect();
        let image = Tensor::from_vec(data, (1, 3, 4, 8), &Device::Cpu)?;
        let preview = image_preview(&image, 4)?;
        assert_eq!((preview.width, preview.height), (4, 2));
        assert!(preview.rgb.iter().all(|&v| v == 128));
        let same = image_preview(&image, 256)?;
        assert_eq!((same.width, same.height), (8, 4));
        Ok(())
    }

    #[test]
    fn scale_aims_at_the_longer_side() {
        assert_eq!(preview_scale(64, 64, 256), 4);
        assert_eq!(preview_scale(128, 96, 256), 2);
        assert_eq!(preview_scale(8, 8, 256), 8);
        assert_eq!(preview_scale(400, 300, 256), 1);
        assert_eq!(preview_scale(0, 0, 256), 8);
    }

    #[test]
    fn budget_spaces_previews_to_their_share() {
        let ms = Duration::from_millis;
        // Slow steps: every step has room.
        let mut slow = PreviewBudget::new(0.01);
        for _ in 0..5 {
            assert!(slow.step(ms(2000)));
            slow.spend(ms(3));
        }
        // 50 ms steps, 1.9 ms previews: the first at once, then one per 4 steps
        // once the time earned has caught up.
        let mut fast = PreviewBudget::new(0.01);
        let due: Vec<bool> = (0..13)
            .map(|_| {
                let due = fast.step(ms(50));
                if due {
                    fast.spend(Duration::from_micros(1900));
                }
                due
            })
            .collect();
        let steps: Vec<usize> = (1..=13).filter(|s| due[s - 1]).collect();
        assert_eq!(steps, [1, 8, 12]);
    }
}
