//! PIL's `Image.resize(size, LANCZOS)` and `convert("RGB")` / `convert("L")`,
//! bit for bit: separable fixed-point Lanczos passes, premultiplied alpha for
//! `LA` / `RGBA`, nearest neighbour for the palette and 1-bit pictures PIL
//! opens as `P` and `1`.

use std::f64::consts::PI;

use super::{ColorMode, DecodedImage};
use crate::error::{Error, Result};

impl DecodedImage {
    /// PIL's `convert("RGB")`: grey is replicated, alpha dropped (not composited).
    pub fn to_rgb(&self) -> DecodedImage {
        let pixels = match self.mode {
            ColorMode::Rgb => self.pixels.clone(),
            mode => self
                .pixels
                .chunks_exact(mode.channels())
                .flat_map(|p| match mode {
                    ColorMode::Luma | ColorMode::LumaAlpha => [p[0], p[0], p[0]],
                    _ => [p[0], p[1], p[2]],
                })
                .collect(),
        };
        self.with_pixels(ColorMode::Rgb, pixels)
    }

    /// PIL's `convert("L")`: ITU-R 601-2 luma in PIL's 16-bit fixed point
    /// (`(R·19595 + G·38470 + B·7471 + 2¹⁵) >> 16`), alpha dropped.
    pub fn to_luma(&self) -> DecodedImage {
        let channels = self.mode.channels();
        let pixels = match self.mode {
            ColorMode::Luma => self.pixels.clone(),
            ColorMode::LumaAlpha => self.pixels.chunks_exact(2).map(|p| p[0]).collect(),
            ColorMode::Rgb | ColorMode::Rgba => self
                .pixels
                .chunks_exact(channels)
                .map(|p| {
                    let luma = u32::from(p[0]) * 19595
                        + u32::from(p[1]) * 38470
                        + u32::from(p[2]) * 7471
                        + 0x8000;
                    (luma >> 16) as u8
                })
                .collect(),
        };
        self.with_pixels(ColorMode::Luma, pixels)
    }

    /// PIL's `Image.resize((width, height), Image.LANCZOS)`: a copy when the
    /// size is unchanged, nearest neighbour for palette and 1-bit pictures, and
    /// Lanczos on premultiplied alpha for `LA` / `RGBA`.
    pub fn resize(&self, width: usize, height: usize) -> Result<DecodedImage> {
        if width == 0 || height == 0 {
            return Err(Error::Image(format!("cannot resize to {width}x{height}")));
        }
        if (width, height) == (self.width, self.height) {
            return Ok(self.clone());
        }
        if self.nearest_only {
            return Ok(self.resize_nearest(width, height));
        }
        let channels = self.mode.channels();
        let premultiplied = self.mode.has_alpha();
        let source = if premultiplied {
            premultiply(&self.pixels, channels)
        } else {
            self.pixels.clone()
        };
        let mut pixels = lanczos(&source, self.width, self.height, channels, width, height);
        if premultiplied {
            unpremultiply(&mut pixels, channels);
        }
        Ok(DecodedImage {
            width,
            height,
            mode: self.mode,
            pixels,
            nearest_only: false,
        })
    }

    fn with_pixels(&self, mode: ColorMode, pixels: Vec<u8>) -> DecodedImage {
        DecodedImage {
            width: self.width,
            height: self.height,
            mode,
            pixels,
            nearest_only: false,
        }
    }

    /// PIL's affine nearest-neighbour scaling: source coordinates accumulate
    /// in f64 from half a step and are truncated.
    fn resize_nearest(&self, width: usize, height: usize) -> DecodedImage {
        let channels = self.mode.channels();
        let source_columns = nearest_indices(self.width, width);
        let mut pixels = Vec::with_capacity(width * height * channels);
        for y in nearest_indices(self.height, height) {
            let row = &self.pixels[y * self.width * channels..(y + 1) * self.width * channels];
            for &x in &source_columns {
                pixels.extend_from_slice(&row[x * channels..(x + 1) * channels]);
            }
        }
        DecodedImage {
            width,
            height,
            mode: self.mode,
            pixels,
            nearest_only: true,
        }
    }
}

/// The source index of each output pixel along one axis, as PIL's `ImagingScaleAffine`.
fn nearest_indices(in_size: usize, out_size: usize) -> Vec<usize> {
    let step = in_size as f64 / out_size as f64;
    let mut position = step * 0.5;
    (0..out_size)
        .map(|_| {
            let index = (position as usize).min(in_size - 1);
            position += step;
            index
        })
        .collect()
}

/// PIL's `Resample.c` fixed-point precision for 8-bit pictures.
const PRECISION_BITS: u32 = 32 - 8 - 2;

/// Lanczos filter taps of one axis: for each output pixel, the first source
/// pixel and its fixed-point weights.
struct Taps {
    /// Weights per output pixel (at most `ksize` used).
    ksize: usize,
    /// `(first source index, count)` per output pixel.
    bounds: Vec<(usize, usize)>,
    /// `out_size * ksize` fixed-point weights.
    weights: Vec<i32>,
}

fn lanczos_kernel(x: f64) -> f64 {
    fn sinc(x: f64) -> f64 {
        if x == 0.0 {
            1.0
        } else {
            let x = x * PI;
            x.sin() / x
        }
    }
    if (-3.0..3.0).contains(&x) {
        sinc(x) * sinc(x / 3.0)
    } else {
        0.0
    }
}

/// PIL's `precompute_coeffs` (support 3, widened by the scale when shrinking)
/// followed by `normalize_coeffs_8bpc`.
fn lanczos_taps(in_size: usize, out_size: usize) -> Taps {
    let scale = in_size as f64 / out_size as f64;
    let filter_scale = scale.max(1.0);
    let support = 3.0 * filter_scale;
    let ksize = support.ceil() as usize * 2 + 1;
    let inverse = 1.0 / filter_scale;
    let mut bounds = Vec::with_capacity(out_size);
    let mut weights = vec![0i32; out_size * ksize];
    let mut taps = Vec::with_capacity(ksize);
    for (xx, row) in weights.chunks_exact_mut(ksize).enumerate() {
        let center = (xx as f64 + 0.5) * scale;
        // C's (int) casts truncate toward zero; negative starts clamp to 0 either way.
        let first = ((center - support + 0.5) as i64).max(0) as usize;
        let end = ((center + support + 0.5) as i64).min(in_size as i64) as usize;
        let count = end.saturating_sub(first);
        taps.clear();
        let mut total = 0.0;
        for x in 0..count {
            let w = lanczos_kernel(((x + first) as f64 - center + 0.5) * inverse);
            taps.push(w);
            total += w;
        }
        for (slot, &w) in row.iter_mut().zip(&taps) {
            let w = if total != 0.0 { w / total } else { w };
            let fixed = w * f64::from(1u32 << PRECISION_BITS);
            *slot = if w < 0.0 {
                (fixed - 0.5) as i32
            } else {
                (fixed + 0.5) as i32
            };
        }
        bounds.push((first, count));
    }
    Taps {
        ksize,
        bounds,
        weights,
    }
}

/// Half of one in fixed point, where every weighted sum starts (rounding).
const HALF: i64 = 1 << (PRECISION_BITS - 1);

/// Rounds a fixed-point sum (already offset by half) to 0..=255 as PIL's `clip8`.
fn clip8(sum: i64) -> u8 {
    (sum >> PRECISION_BITS).clamp(0, 255) as u8
}

/// PIL's two-pass 8-bit resampling, each pass rounded to 8 bits. Pillow 13
/// runs the vertical pass first when the height shrinks by more than twice as
/// many pixels as the width, else the horizontal one; a pass whose size does
/// not change is skipped.
fn lanczos(
    pixels: &[u8],
    width: usize,
    height: usize,
    channels: usize,
    out_width: usize,
    out_height: usize,
) -> Vec<u8> {
    let shrink_y = height as i64 - out_height as i64;
    let shrink_x = width as i64 - out_width as i64;
    let vertical_first = shrink_y > 0 && shrink_y > shrink_x * 2;
    let horizontal = |pixels: &[u8], rows: usize| {
        if out_width == width {
            return pixels.to_vec();
        }
        let taps = lanczos_taps(width, out_width);
        let mut out = Vec::with_capacity(out_width * rows * channels);
        for row in pixels.chunks_exact(width * channels) {
            for (xx, &(first, count)) in taps.bounds.iter().enumerate() {
                let k = &taps.weights[xx * taps.ksize..xx * taps.ksize + count];
                for c in 0..channels {
                    let sum = k.iter().enumerate().fold(HALF, |sum, (x, &w)| {
                        sum + i64::from(row[(first + x) * channels + c]) * i64::from(w)
                    });
                    out.push(clip8(sum));
                }
            }
        }
        out
    };
    let vertical = |pixels: &[u8], columns: usize| {
        if out_height == height {
            return pixels.to_vec();
        }
        let taps = lanczos_taps(height, out_height);
        let stride = columns * channels;
        let mut out = Vec::with_capacity(out_height * stride);
        for (yy, &(first, count)) in taps.bounds.iter().enumerate() {
            let k = &taps.weights[yy * taps.ksize..yy * taps.ksize + count];
            for i in 0..stride {
                let sum = k.iter().enumerate().fold(HALF, |sum, (y, &w)| {
                    sum + i64::from(pixels[(first + y) * stride + i]) * i64::from(w)
                });
                out.push(clip8(sum));
            }
        }
        out
    };
    if vertical_first {
        horizontal(&vertical(pixels, width), out_height)
    } else {
        vertical(&horizontal(pixels, height), out_width)
    }
}

/// PIL's `RGBA -> RGBa` / `LA -> La`: colour times alpha, `(c·a + 128) · 257 >> 16`.
fn premultiply(pixels: &[u8], channels: usize) -> Vec<u8> {
    let mut out = pixels.to_vec();
    for pixel in out.chunks_exact_mut(channels) {
        let alpha = u32::from(pixel[channels - 1]);
        for value in &mut pixel[..channels - 1] {
            let t = u32::from(*value) * alpha + 128;
            *value = (((t >> 8) + t) >> 8) as u8;
        }
    }
    out
}

/// PIL's `RGBa -> RGBA` / `La -> LA`: colour divided by alpha (kept when alpha is 0 or 255).
fn unpremultiply(pixels: &mut [u8], channels: usize) {
    for pixel in pixels.chunks_exact_mut(channels) {
        let alpha = u32::from(pixel[channels - 1]);
        if alpha == 0 || alpha == 255 {
            continue;
        }
        for value in &mut pixel[..channels - 1] {
            *value = (255 * u32::from(*value) / alpha).min(255) as u8;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::image::test_pictures::{grey_5x12, png_bytes, rgb_7x5};

    #[test]
    fn lanczos_matches_pil_both_pass_orders() {
        let resized = rgb_7x5().resize(4, 3).unwrap();
        assert_eq!(
            resized.pixels(),
            [
                18, 20, 67, 80, 28, 193, 149, 38, 143, 209, 46, 129, 36, 162, 107, 99, 170, 122,
                166, 180, 159, 240, 188, 185, 54, 113, 151, 115, 121, 137, 196, 131, 100, 165, 139,
                131
            ]
        );
        // The height shrinks by 9 rows, more than twice the width's 1: vertical pass first.
        let tall = DecodedImage::from_raw(5, 12, ColorMode::Luma, grey_5x12()).unwrap();
        assert_eq!(
            tall.resize(4, 3).unwrap().pixels(),
            [34, 98, 190, 183, 113, 184, 163, 64, 193, 130, 39, 129]
        );
        let up = tall.resize(9, 20).unwrap();
        assert_eq!(
            &up.pixels()[..18],
            [0, 10, 44, 79, 105, 131, 166, 200, 215, 4, 16, 50, 85, 111, 138, 172, 203, 217]
        );
    }

    #[test]
    fn rgba_resizes_premultiplied_and_converts_to_luma() {
        let alpha = [0u8, 255, 1, 77, 128, 200, 30];
        let rgb = rgb_7x5();
        let pixels = rgb
            .pixels()
            .chunks_exact(3)
            .enumerate()
            .flat_map(|(i, p)| [p[0], p[1], p[2], alpha[(i % 7 + i / 7) % 7]])
            .collect();
        let rgba = DecodedImage::from_raw(7, 5, ColorMode::Rgba, pixels).unwrap();
        let luma = rgba.resize(3, 2).unwrap().to_luma();
        assert_eq!(luma.pixels(), [57, 109, 131, 117, 144, 180]);
        assert_eq!(
            &rgb.to_luma().pixels()[..12],
            [0, 27, 54, 51, 78, 76, 103, 48, 75, 102, 100, 127]
        );
    }

    #[test]
    fn one_bit_pngs_resize_by_nearest_neighbour() {
        let bits: Vec<bool> = grey_5x12().iter().map(|&v| v > 128).collect();
        let packed: Vec<u8> = bits
            .chunks_exact(5)
            .map(|row| {
                row.iter()
                    .enumerate()
                    .fold(0u8, |byte, (x, &on)| byte | (u8::from(on) << (7 - x)))
            })
            .collect();
        let bytes = png_bytes(
            5,
            12,
            png::ColorType::Grayscale,
            png::BitDepth::One,
            &packed,
        );
        let mask = DecodedImage::decode(&bytes, 1000).unwrap();
        assert_eq!(mask.mode(), ColorMode::Luma);
        assert_eq!(
            mask.resize(3, 5).unwrap().to_luma().pixels(),
            [0, 0, 255, 0, 255, 0, 0, 255, 0, 255, 0, 0, 255, 0, 255]
        );
    }
}
