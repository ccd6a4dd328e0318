//! PNG and JPEG bytes into 8-bit pixels, in the mode PIL opens them in.

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

    pub(super) fn has_alpha(self) -> bool {
        matches!(self, ColorMode::LumaAlpha | ColorMode::Rgba)
    }
}

/// An 8-bit picture, pixels interleaved row by row.
#[derive(Clone, PartialEq, Eq)]
pub struct DecodedImage {
    pub(super) width: usize,
    pub(super) height: usize,
    pub(super) mode: ColorMode,
    pub(super) pixels: Vec<u8>,
    /// PIL opens palette and 1-bit pictures as `P` / `1`, which it only
    /// resizes by nearest neighbour (until converted).
    pub(super) nearest_only: bool,
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

/// Why PNG or JPEG bytes did not make a picture.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DecodeError {
    /// The bytes start with neither the PNG nor the JPEG signature.
    #[error("not a PNG or JPEG picture (unrecognised signature)")]
    UnknownFormat,

    /// The header gives a width or height of 0.
    #[error("the picture is empty")]
    Empty,

    /// The header gives more pixels than allowed (checked before decoding).
    #[error("{width}x{height} is {pixels} pixels, over the limit of {max_pixels}")]
    TooManyPixels {
        /// Width from the header.
        width: usize,
        /// Height from the header.
        height: usize,
        /// `width · height`.
        pixels: usize,
        /// The limit it exceeds.
        max_pixels: usize,
    },

    /// The decoder rejected the data, or it holds a layout we do not read.
    #[error("cannot decode the {format}: {message}")]
    Corrupt {
        /// `PNG` or `JPEG`, from the signature.
        format: &'static str,
        /// The decoder's own message.
        message: String,
    },
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

    /// Decodes a PNG or JPEG file. Pictures of more than `max_pixels` pixels
    /// are rejected from the header, before decoding.
    pub fn decode(bytes: &[u8], max_pixels: usize) -> Result<Self, DecodeError> {
        if bytes.starts_with(PNG_SIGNATURE) {
            decode_png(bytes, max_pixels)
        } else if bytes.starts_with(JPEG_SIGNATURE) {
            decode_jpeg(bytes, max_pixels)
        } else {
            Err(DecodeError::UnknownFormat)
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
}

fn check_size(width: usize, height: usize, max_pixels: usize) -> Result<(), DecodeError> {
    if width == 0 || height == 0 {
        return Err(DecodeError::Empty);
    }
    let pixels = width.saturating_mul(height);
    if pixels > max_pixels {
        return Err(DecodeError::TooManyPixels {
            width,
            height,
            pixels,
            max_pixels,
        });
    }
    Ok(())
}

fn decode_png(bytes: &[u8], max_pixels: usize) -> Result<DecodedImage, DecodeError> {
    let corrupt = |message: String| DecodeError::Corrupt {
        format: "PNG",
        message,
    };
    let mut decoder = png::Decoder::new(bytes);
    decoder.set_transformations(png::Transformations::EXPAND | png::Transformations::STRIP_16);
    let mut reader = decoder.read_info().map_err(|e| corrupt(e.to_string()))?;
    let info = reader.info();
    let (width, height) = (info.width as usize, info.height as usize);
    check_size(width, height, max_pixels)?;
    let source_color = info.color_type;
    let one_bit_grey =
        source_color == png::ColorType::Grayscale && info.bit_depth == png::BitDepth::One;
    let mut buffer = vec![0; reader.output_buffer_size()];
    let frame = reader
        .next_frame(&mut buffer)
        .map_err(|e| corrupt(e.to_string()))?;
    buffer.truncate(frame.buffer_size());
    let (decoded_mode, decoded_channels) = match frame.color_type {
        png::ColorType::Grayscale => (ColorMode::Luma, 1),
        png::ColorType::GrayscaleAlpha => (ColorMode::LumaAlpha, 2),
        png::ColorType::Rgb => (ColorMode::Rgb, 3),
        png::ColorType::Rgba => (ColorMode::Rgba, 4),
        png::ColorType::Indexed => return Err(corrupt("the palette was not expanded".to_string())),
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
    let mut image =
        DecodedImage::from_raw(width, height, mode, pixels).map_err(|e| corrupt(e.to_string()))?;
    image.nearest_only = one_bit_grey || source_color == png::ColorType::Indexed;
    Ok(image)
}

fn decode_jpeg(bytes: &[u8], max_pixels: usize) -> Result<DecodedImage, DecodeError> {
    let corrupt = |message: String| DecodeError::Corrupt {
        format: "JPEG",
        message,
    };
    let mut decoder = jpeg_decoder::Decoder::new(bytes);
    decoder.read_info().map_err(|e| corrupt(e.to_string()))?;
    let info = decoder
        .info()
        .ok_or_else(|| corrupt("no frame header".to_string()))?;
    let (width, height) = (usize::from(info.width), usize::from(info.height));
    check_size(width, height, max_pixels)?;
    let mode = match info.pixel_format {
        jpeg_decoder::PixelFormat::L8 => ColorMode::Luma,
        jpeg_decoder::PixelFormat::RGB24 => ColorMode::Rgb,
        other => {
            return Err(corrupt(format!(
                "{other:?} JPEGs are not supported; use 8-bit greyscale or colour"
            )))
        }
    };
    let pixels = decoder.decode().map_err(|e| corrupt(e.to_string()))?;
    DecodedImage::from_raw(width, height, mode, pixels).map_err(|e| corrupt(e.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::image::test_pictures::png_bytes;

    #[test]
    fn decodes_png_modes_and_drops_alpha_for_rgb() {
        let data = [10u8, 20, 30, 40, 50, 60, 70, 80];
        let bytes = png_bytes(2, 1, png::ColorType::Rgba, png::BitDepth::Eight, &data);
        let image = DecodedImage::decode(&bytes, 2).unwrap();
        assert_eq!(image.mode(), ColorMode::Rgba);
        assert_eq!(image.to_rgb().pixels(), [10, 20, 30, 50, 60, 70]);
        let bytes = png_bytes(
            2,
            1,
            png::ColorType::GrayscaleAlpha,
            png::BitDepth::Eight,
            &data[..4],
        );
        let image = DecodedImage::decode(&bytes, 2).unwrap();
        assert_eq!(image.to_rgb().pixels(), [10, 10, 10, 30, 30, 30]);
    }

    #[test]
    fn bad_input_says_what_is_wrong() {
        let error = DecodedImage::decode(b"GIF89a", 10).unwrap_err();
        assert_eq!(error, DecodeError::UnknownFormat);
        assert!(error.to_string().contains("not a PNG or JPEG"), "{error}");

        let bytes = png_bytes(
            4,
            3,
            png::ColorType::Grayscale,
            png::BitDepth::Eight,
            &[0; 12],
        );
        let error = DecodedImage::decode(&bytes, 11).unwrap_err();
        assert_eq!(error.to_string(), "4x3 is 12 pixels, over the limit of 11");
        assert!(DecodedImage::decode(&bytes, 12).is_ok());

        let error = DecodedImage::decode(&bytes[..bytes.len() - 20], 100).unwrap_err();
        assert!(
            matches!(error, DecodeError::Corrupt { format: "PNG", .. }),
            "{error:?}"
        );
        assert!(
            error.to_string().starts_with("cannot decode the PNG: "),
            "{error}"
        );

        let error = DecodedImage::decode(&[0xff, 0xd8, 0xff, 0xe0, 0, 0], 100).unwrap_err();
        assert!(
            error.to_string().starts_with("cannot decode the JPEG: "),
            "{error}"
        );
    }
}
