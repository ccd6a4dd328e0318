//! Cheap live previews of a generation in progress.
//!
//! A fixed linear map from the 4 latent channels to RGB (the widely used
//! per-family "latent RGB factors") approximates what the VAE would decode,
//! at the latent's resolution (1/8 of the image), for a few microseconds
//! instead of a VAE pass. Apply it to the scheduler's current latents or,
//! better, to its prediction of the clean latents.

use candle_core::{DType, Tensor};

use crate::error::{Error, Result};
use crate::image::encode_png;

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
        return Err(Error::invalid_request(
            "latents",
            format!("a preview needs 4 latent channels, got {c}"),
        ));
    }
    if !(1..=8).contains(&scale) {
        return Err(Error::invalid_request(
            "scale",
            format!("must be between 1 and 8, got {scale}"),
        ));
    }
    let data = latents
        .narrow(0, 0, 1)?
        .to_dtype(DType::F32)?
        .flatten_all()?
        .to_vec1::<f32>()?;
    let (factors, bias) = (format.factors(), format.bias());
    let (width, height) = (w * scale, h * scale);
    let mut rgb = vec![0u8; width * height * 3];
    for y in 0..height {
        for x in 0..width {
            let p = (y / scale) * w + x / scale;
            for (ch, out) in rgb[(y * width + x) * 3..][..3].iter_mut().enumerate() {
                let v = bias[ch]
                    + (0..4)
                        .map(|k| data[k * h * w + p] * factors[k][ch])
                        .sum::<f32>();
                // [-1, 1] -> [0, 255]
                *out = (((v + 1.0) * 127.5).round()).clamp(0.0, 255.0) as u8;
            }
        }
    }
    Ok(Preview { width, height, rgb })
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
}
