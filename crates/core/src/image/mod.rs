//! Pictures in and out of the pipelines.
//!
//! Input pictures for image-to-image and inpainting are prepared the way
//! diffusers' `VaeImageProcessor` prepares PIL images:
//!
//! - `decode`: [`DecodedImage::decode`] reads PNG or JPEG bytes into 8-bit
//!   pixels in the mode PIL would open them in (`L`, `LA`, `RGB`, `RGBA`), or
//!   says what is wrong with them in a [`DecodeError`].
//! - `resize`: [`DecodedImage::resize`] is PIL's `Image.resize(size, LANCZOS)`
//!   bit for bit; [`DecodedImage::to_rgb`] and [`DecodedImage::to_luma`] are
//!   `convert("RGB")` and `convert("L")`.
//! - `tensor`: [`prepare_image`] and [`prepare_mask`] turn pictures into the
//!   tensors the pipelines use, and [`to_rgb8`] turns the decoded output back
//!   into 8-bit RGB.
//! - `png`: [`encode_png`] writes that RGB as a PNG carrying the
//!   [`GenerationSettings`] as AUTOMATIC1111 does.
//!
//! Differences from PIL that remain: 16-bit PNGs keep their high byte (PIL
//! clamps 16-bit grey to 255), and JPEG decoding may differ from libjpeg by a
//! level here and there.

mod decode;
mod png;
mod resize;
mod tensor;
#[cfg(test)]
mod test_pictures;

pub use self::decode::{ColorMode, DecodeError, DecodedImage};
pub use self::png::{encode_png, GenerationSettings};
pub use self::tensor::{prepare_image, prepare_mask, to_rgb8};
