//! Input pictures for image-to-image and inpainting, prepared the way
//! diffusers' `VaeImageProcessor` prepares PIL images.
//!
//! [`DecodedImage::decode`] reads PNG or JPEG bytes into 8-bit pixels in the
//! mode PIL would open them in (`L`, `LA`, `RGB`, `RGBA`); [`DecodedImage::resize`]
//! is PIL's `Image.resize(size, LANCZOS)` bit for bit (separable fixed-point
//! passes, premultiplied alpha for `LA`/`RGBA`, nearest neighbour for the
//! palette and 1-bit pictures PIL opens as `P` and `1`); [`DecodedImage::to_rgb`]
//! and [`DecodedImage::to_luma`] are `convert("RGB")` and `convert("L")`.
//! [`prepare_image`] and [`prepare_mask`] turn them into the tensors the
//! pipelines use.
//!
//! Differences from PIL that remain: 16-bit PNGs keep their high byte (PIL
//! clamps 16-bit grey to 255), and JPEG decoding may differ from libjpeg by a
//! level here and there.

use std::f64::consts::PI;

use candle_core::{Device, Tensor};

use crate::error::{Error, Result};

/// The pixel layout of a decoded picture, named as PIL names its modes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ColorMode {
    /// One grey channel (`L`).
    Luma,
    /// Grey and alpha (`LA`).
    LumaAlpha,
    /// Red, green, blue (`RGB`).
    Rgb,
    /// Red, green, blue, alpha (`RGBA`).
    Rgba,
}

impl ColorMode {
    /// Channels per pixel.
    pub fn channels(self) -> usize {
        match self {
            ColorMode::Luma => 1,
            ColorMode::LumaAlpha => 2,
            ColorMode::Rgb => 3,
            ColorMode::Rgba => 4,
        }
    }

    fn has_alpha(self) -> bool {
        matches!(self, ColorMode::LumaAlpha | ColorMode::Rgba)
    }
}

/// An 8-bit picture, pixels interleaved row by row.
#[derive(Clone, PartialEq, Eq)]
pub struct DecodedImage {
    width: usize,
    height: usize,
    mode: ColorMode,
    pixels: Vec<u8>,
    /// PIL opens palette and 1-bit pictures as `P` / `1`, which it only
    /// resizes by nearest neighbour (until converted).
    nearest_only: bool,
}

impl std::fmt::Debug for DecodedImage {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DecodedImage")
            .field("width", &self.width)
            .field("height", &self.height)
            .field("mode", &self.mode)
            .finish_non_exhaustive()
    }
}

const PNG_SIGNATURE: &[u8] = b"\x89PNG\r\n\x1a\n";
const JPEG_SIGNATURE: &[u8] = &[0xff, 0xd8, 0xff];

impl DecodedImage {
    /// Wraps raw pixels; `pixels` must hold `width * height * mode.channels()` bytes.
    pub fn from_raw(width: usize, height: usize, mode: ColorMode, pixels: Vec<u8>) -> Result<Self> {
        if width == 0 || height == 0 || pixels.len() != width * height * mode.channels() {
            return Err(Error::Image(format!(
                "{} bytes do not make a {width}x{height} {mode:?} picture",
                pixels.len()
            )));
        }
        Ok(Self {
            width,
            height,
            mode,
            pixels,
            nearest_only: false,
        })
    }

    /// Decodes a PNG or JPEG file. Errors are [`Error::InvalidRequest`] naming
    /// `field`: bytes that are neither format or do not decode, and pictures of
    /// more than `max_pixels` pixels (checked from the header, before decoding).
    pub fn decode(bytes: &[u8], field: &'static str, max_pixels: usize) -> Result<Self> {
        let check_size = |width: usize, height: usize| {
            if width == 0 || height == 0 {
                return Err(Error::param(crate::Param::Image, "the picture is empty"));
            }
            let pixels = width.saturating_mul(height);
            if pixels > max_pixels {
                return Err(Error::param(
                    crate::Param::Image,
                    format!("{width}x{height} is {pixels} pixels, over the limit of {max_pixels}"),
                ));
            }
            Ok(())
        };
        if bytes.starts_with(PNG_SIGNATURE) {
            decode_png(bytes, check_size).map_err(|e| e.into_error(field, "PNG"))
        } else if bytes.starts_with(JPEG_SIGNATURE) {
            decode_jpeg(bytes, check_size).map_err(|e| e.into_error(field, "JPEG"))
        } else {
            Err(Error::param(
                crate::Param::Image,
                "not a PNG or JPEG picture (unrecognised signature)",
            ))
        }
    }

    /// Width in pixels.
    pub fn width(&self) -> usize {
        self.width
    }

    /// Height in pixels.
    pub fn height(&self) -> usize {
        self.height
    }

    /// The pixel layout.
    pub fn mode(&self) -> ColorMode {
        self.mode
    }

    /// The interleaved 8-bit pixels, row by row.
    pub fn pixels(&self) -> &[u8] {
        &self.pixels
    }

    /// The size rounded down to multiples of `multiple`, `(width, height)`, as
    /// diffusers picks an output size from an input picture (0 when smaller).
    pub fn size_rounded_down(&self, multiple: usize) -> (usize, usize) {
        (
            self.width / multiple * multiple,
            self.height / multiple * multiple,
        )
    }

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

/// Why decoding failed, before the field name is attached.
enum DecodeFailure {
    /// Already a request error (size checks).
    Rejected(Error),
    /// The decoder's own message.
    Corrupt(String),
}

impl DecodeFailure {
    fn into_error(self, _field: &'static str, format: &str) -> Error {
        match self {
            DecodeFailure::Rejected(error) => error,
            DecodeFailure::Corrupt(message) => Error::param(
                crate::Param::Image,
                format!("cannot decode the {format}: {message}"),
            ),
        }
    }
}

impl From<Error> for DecodeFailure {
    fn from(error: Error) -> Self {
        DecodeFailure::Rejected(error)
    }
}

fn decode_png(
    bytes: &[u8],
    check_size: impl Fn(usize, usize) -> Result<()>,
) -> std::result::Result<DecodedImage, DecodeFailure> {
    let corrupt = |e: png::DecodingError| DecodeFailure::Corrupt(e.to_string());
    let mut decoder = png::Decoder::new(bytes);
    decoder.set_transformations(png::Transformations::EXPAND | png::Transformations::STRIP_16);
    let mut reader = decoder.read_info().map_err(corrupt)?;
    let info = reader.info();
    let (width, height) = (info.width as usize, info.height as usize);
    check_size(width, height)?;
    let source_color = info.color_type;
    let one_bit_grey =
        source_color == png::ColorType::Grayscale && info.bit_depth == png::BitDepth::One;
    let mut buffer = vec![0; reader.output_buffer_size()];
    let frame = reader.next_frame(&mut buffer).map_err(corrupt)?;
    buffer.truncate(frame.buffer_size());
    let (decoded_mode, decoded_channels) = match frame.color_type {
        png::ColorType::Grayscale => (ColorMode::Luma, 1),
        png::ColorType::GrayscaleAlpha => (ColorMode::LumaAlpha, 2),
        png::ColorType::Rgb => (ColorMode::Rgb, 3),
        png::ColorType::Rgba => (ColorMode::Rgba, 4),
        png::ColorType::Indexed => {
            return Err(DecodeFailure::Corrupt(
                "the palette was not expanded".to_string(),
            ))
        }
    };
    // PIL keeps a tRNS chunk as metadata (mode L, RGB or P), so only a real
    // alpha channel makes an alpha mode.
    let mode = match source_color {
        png::ColorType::Grayscale => ColorMode::Luma,
        png::ColorType::GrayscaleAlpha => ColorMode::LumaAlpha,
        png::ColorType::Rgb | png::ColorType::Indexed => ColorMode::Rgb,
        png::ColorType::Rgba => ColorMode::Rgba,
    };
    let pixels = if mode == decoded_mode {
        buffer
    } else {
        buffer
            .chunks_exact(decoded_channels)
            .flat_map(|p| p[..mode.channels()].to_vec())
            .collect()
    };
    let mut image = DecodedImage::from_raw(width, height, mode, pixels)
        .map_err(|e| DecodeFailure::Corrupt(e.to_string()))?;
    image.nearest_only = one_bit_grey || source_color == png::ColorType::Indexed;
    Ok(image)
}

fn decode_jpeg(
    bytes: &[u8],
    check_size: impl Fn(usize, usize) -> Result<()>,
) -> std::result::Result<DecodedImage, DecodeFailure> {
    let corrupt = |e: jpeg_decoder::Error| DecodeFailure::Corrupt(e.to_string());
    let mut decoder = jpeg_decoder::Decoder::new(bytes);
    decoder.read_info().map_err(corrupt)?;
    let info = decoder
        .info()
        .ok_or_else(|| DecodeFailure::Corrupt("no frame header".to_string()))?;
    let (width, height) = (usize::from(info.width), usize::from(info.height));
    check_size(width, height)?;
    let mode = match info.pixel_format {
        jpeg_decoder::PixelFormat::L8 => ColorMode::Luma,
        jpeg_decoder::PixelFormat::RGB24 => ColorMode::Rgb,
        other => {
            return Err(DecodeFailure::Corrupt(format!(
                "{other:?} JPEGs are not supported; use 8-bit greyscale or colour"
            )))
        }
    };
    let pixels = decoder.decode().map_err(corrupt)?;
    DecodedImage::from_raw(width, height, mode, pixels)
        .map_err(|e| DecodeFailure::Corrupt(e.to_string()))
}

/// diffusers' image preprocessing of an init picture: `convert("RGB")`, Lanczos
/// to `width`x`height` when the size differs, `x / 255 · 2 − 1` in f32 →
/// `[1, 3, height, width]` in -1..1.
pub fn prepare_image(
    image: &DecodedImage,
    width: usize,
    height: usize,
    device: &Device,
) -> Result<Tensor> {
    let rgb = image.to_rgb().resize(width, height)?;
    let values: Vec<f32> = rgb
        .pixels
        .iter()
        .map(|&v| f32::from(v) / 255.0 * 2.0 - 1.0)
        .collect();
    Ok(Tensor::from_vec(values, (1, height, width, 3), device)?
        .permute((0, 3, 1, 2))?
        .contiguous()?)
}

/// diffusers' mask preprocessing: Lanczos to `width`x`height` in the mask's
/// own mode, `convert("L")`, `/ 255`, then 1 where `>= 0.5` and 0 below →
/// `[1, 1, height, width]` (1 = repaint).
pub fn prepare_mask(
    mask: &DecodedImage,
    width: usize,
    height: usize,
    device: &Device,
) -> Result<Tensor> {
    let luma = mask.resize(width, height)?.to_luma();
    let values: Vec<f32> = luma
        .pixels
        .iter()
        .map(|&v| if f32::from(v) / 255.0 < 0.5 { 0.0 } else { 1.0 })
        .collect();
    Ok(Tensor::from_vec(values, (1, 1, height, width), device)?)
}

#[cfg(test)]
mod tests {
    use super::*;

    // Inputs and expected values from PIL 13:
    //   rgb[y][x] = ((x*37 + y*11) % 256, (x*5 + y*71) % 256, (x*113 + y*29) % 256), 7x5
    //   grey[y][x] = (x*53 + y*19) % 256, 5x12
    //   alpha[y][x] = [0, 255, 1, 77, 128, 200, 30][(x + y) % 7]
    //   np.array(Image.fromarray(a, mode).resize(size, Image.LANCZOS)[.convert("L")]).flatten()
    fn rgb_7x5() -> DecodedImage {
        let pixels = (0..5)
            .flat_map(|y| {
                (0..7).flat_map(move |x| {
                    [
                        ((x * 37 + y * 11) % 256) as u8,
                        ((x * 5 + y * 71) % 256) as u8,
                        ((x * 113 + y * 29) % 256) as u8,
                    ]
                })
            })
            .collect();
        DecodedImage::from_raw(7, 5, ColorMode::Rgb, pixels).unwrap()
    }

    fn grey_5x12() -> Vec<u8> {
        (0..12)
            .flat_map(|y| (0..5).map(move |x| ((x * 53 + y * 19) % 256) as u8))
            .collect()
    }

    fn png_bytes(
        width: u32,
        height: u32,
        color: png::ColorType,
        depth: png::BitDepth,
        data: &[u8],
    ) -> Vec<u8> {
        let mut bytes = Vec::new();
        let mut encoder = png::Encoder::new(&mut bytes, width, height);
        encoder.set_color(color);
        encoder.set_depth(depth);
        let mut writer = encoder.write_header().unwrap();
        writer.write_image_data(data).unwrap();
        writer.finish().unwrap();
        bytes
    }

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
        let mask = DecodedImage::decode(&bytes, "mask_image", 1000).unwrap();
        assert_eq!(mask.mode(), ColorMode::Luma);
        assert_eq!(
            mask.resize(3, 5).unwrap().to_luma().pixels(),
            [0, 0, 255, 0, 255, 0, 0, 255, 0, 255, 0, 0, 255, 0, 255]
        );
    }

    #[test]
    fn decodes_png_modes_and_drops_alpha_for_rgb() {
        let data = [10u8, 20, 30, 40, 50, 60, 70, 80];
        let bytes = png_bytes(2, 1, png::ColorType::Rgba, png::BitDepth::Eight, &data);
        let image = DecodedImage::decode(&bytes, "init_image", 2).unwrap();
        assert_eq!(image.mode(), ColorMode::Rgba);
        assert_eq!(image.to_rgb().pixels(), [10, 20, 30, 50, 60, 70]);
        let bytes = png_bytes(
            2,
            1,
            png::ColorType::GrayscaleAlpha,
            png::BitDepth::Eight,
            &data[..4],
        );
        let image = DecodedImage::decode(&bytes, "init_image", 2).unwrap();
        assert_eq!(image.to_rgb().pixels(), [10, 10, 10, 30, 30, 30]);
    }

    #[test]
    fn bad_input_names_the_field() {
        let field_of = |e: Error| match e {
            Error::Param(e) => ("init_image", e.message),
            other => panic!("unexpected {other}"),
        };
        let (field, message) =
            field_of(DecodedImage::decode(b"GIF89a", "init_image", 10).unwrap_err());
        assert_eq!(field, "init_image");
        assert!(message.contains("not a PNG or JPEG"), "{message}");

        let bytes = png_bytes(
            4,
            3,
            png::ColorType::Grayscale,
            png::BitDepth::Eight,
            &[0; 12],
        );
        let (field, message) =
            field_of(DecodedImage::decode(&bytes, "mask_image", 11).unwrap_err());
        assert_eq!(field, "mask_image");
        assert!(
            message.contains("4x3 is 12 pixels, over the limit of 11"),
            "{message}"
        );
        assert!(DecodedImage::decode(&bytes, "mask_image", 12).is_ok());

        let (field, message) = field_of(
            DecodedImage::decode(&bytes[..bytes.len() - 20], "init_image", 100).unwrap_err(),
        );
        assert_eq!(field, "init_image");
        assert!(message.contains("cannot decode the PNG"), "{message}");

        let (_, message) = field_of(
            DecodedImage::decode(&[0xff, 0xd8, 0xff, 0xe0, 0, 0], "init_image", 100).unwrap_err(),
        );
        assert!(message.contains("cannot decode the JPEG"), "{message}");
    }

    #[test]
    fn prepared_tensors_follow_diffusers() {
        let device = Device::Cpu;
        let image = DecodedImage::from_raw(2, 1, ColorMode::Luma, vec![0, 255]).unwrap();
        let tensor = prepare_image(&image, 2, 1, &device).unwrap();
        assert_eq!(tensor.dims(), [1, 3, 1, 2]);
        assert_eq!(
            tensor.flatten_all().unwrap().to_vec1::<f32>().unwrap(),
            [-1.0, 1.0, -1.0, 1.0, -1.0, 1.0]
        );
        let mask = DecodedImage::from_raw(3, 1, ColorMode::Luma, vec![127, 128, 255]).unwrap();
        let tensor = prepare_mask(&mask, 3, 1, &device).unwrap();
        assert_eq!(
            tensor.flatten_all().unwrap().to_vec1::<f32>().unwrap(),
            [0.0, 1.0, 1.0]
        );
        assert_eq!(rgb_7x5().size_rounded_down(4), (4, 4));
    }
}
