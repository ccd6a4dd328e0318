//! The input pictures of image-to-image and inpainting jobs, kept encoded
//! while a job waits.
//!
//! A 4096² RGBA picture arrives as a few dozen KB of PNG but decodes to
//! 64 MiB, so a full queue of such jobs would hold gigabytes of pixels that no
//! one uses yet. Validation decodes each picture once, to check it and to learn
//! its size, and then keeps only the bytes the client sent
//! ([`EncodedPictures`]); the job decodes them again when it starts
//! ([`EncodedPictures::decode`]). Decoding is deterministic: the same bytes
//! give the same pixels, so the job runs on the pictures validation checked.

use base64::Engine as _;
use sd_core::image::DecodedImage;
use sd_core::pipeline::ImageInput;

use crate::error::ApiError;

/// The request's name for an inpainting mask.
pub const MASK_FIELD: &str = "mask_image";

/// A picture that did not decode, with the request field it came in.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid {field}: {message}")]
pub struct PictureError {
    /// The request field that holds the picture.
    pub field: &'static str,
    /// Why it is not a usable picture.
    pub message: String,
}

impl From<PictureError> for ApiError {
    fn from(e: PictureError) -> Self {
        ApiError::invalid(e.field, e.message)
    }
}

/// The picture (and for inpainting, the mask) of a job as the client encoded
/// them (PNG or JPEG bytes, the base64 undone), with the strength to run at.
#[derive(Clone, PartialEq)]
pub struct EncodedPictures {
    /// The request's name for the input picture.
    image_field: &'static str,
    image: Vec<u8>,
    mask: Option<Vec<u8>>,
    strength: f64,
    /// The most pixels a picture may have, checked from its header.
    max_pixels: usize,
}

impl std::fmt::Debug for EncodedPictures {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EncodedPictures")
            .field("image_field", &self.image_field)
            .field("image_bytes", &self.image.len())
            .field("mask_bytes", &self.mask.as_ref().map(Vec::len))
            .field("strength", &self.strength)
            .finish_non_exhaustive()
    }
}

impl EncodedPictures {
    /// Reads a request's base64 pictures (standard base64, optionally behind
    /// a `data:image/...;base64,` prefix) and decodes them, each error naming
    /// its field: the encoded bytes to keep, and the decoded input to check
    /// and size the output with (then drop). The strength defaults to
    /// diffusers' for the operation.
    pub fn from_base64(
        image_field: &'static str,
        image: &str,
        mask: Option<&str>,
        strength: Option<f64>,
        max_pixels: usize,
    ) -> Result<(Self, ImageInput), PictureError> {
        let read = |field: &'static str, text: &str| {
            let bytes = decode_base64(text).map_err(|message| PictureError { field, message })?;
            let picture = decode_picture(field, &bytes, max_pixels)?;
            Ok::<_, PictureError>((bytes, picture))
        };
        let (mask, mask_picture) = mask.map(|mask| read(MASK_FIELD, mask)).transpose()?.unzip();
        let (image, picture) = read(image_field, image)?;
        let strength = strength.unwrap_or(ImageInput::default_strength(mask.is_some()));
        let input = ImageInput {
            image: picture,
            mask: mask_picture,
            strength,
        };
        let encoded = Self {
            image_field,
            image,
            mask,
            strength,
            max_pixels,
        };
        Ok((encoded, input))
    }

    /// How many bytes the encoded pictures take.
    pub fn encoded_bytes(&self) -> usize {
        self.image.len() + self.mask.as_ref().map_or(0, Vec::len)
    }

    /// Decodes the pictures again, as [`EncodedPictures::from_base64`] did:
    /// the input the job runs on.
    pub fn decode(&self) -> Result<ImageInput, PictureError> {
        let mask = self
            .mask
            .as_deref()
            .map(|mask| decode_picture(MASK_FIELD, mask, self.max_pixels))
            .transpose()?;
        Ok(ImageInput {
            image: decode_picture(self.image_field, &self.image, self.max_pixels)?,
            mask,
            strength: self.strength,
        })
    }
}

/// PNG or JPEG bytes into pixels, an error naming `field`.
fn decode_picture(
    field: &'static str,
    bytes: &[u8],
    max_pixels: usize,
) -> Result<DecodedImage, PictureError> {
    DecodedImage::decode(bytes, max_pixels).map_err(|e| PictureError {
        field,
        message: e.to_string(),
    })
}

/// Standard base64, optionally behind a `data:image/...;base64,` prefix.
fn decode_base64(text: &str) -> Result<Vec<u8>, String> {
    let text = text.trim();
    let payload = match text.strip_prefix("data:") {
        Some(rest) => rest
            .split_once(";base64,")
            .map(|(_, payload)| payload)
            .ok_or("a data URL must be base64 (`data:image/png;base64,...`)")?,
        None => text,
    };
    if payload.is_empty() {
        return Err("must not be empty".into());
    }
    base64::engine::general_purpose::STANDARD
        .decode(payload)
        .map_err(|e| format!("is not valid base64: {e}"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::engine::EngineError;

    fn png_base64() -> (String, Vec<u8>) {
        let png = sd_core::image::encode_png(&[7; 16 * 8 * 3], 16, 8, None).unwrap();
        (base64::engine::general_purpose::STANDARD.encode(&png), png)
    }

    #[test]
    fn the_kept_bytes_decode_to_the_pictures_validation_checked() {
        let (picture, png) = png_base64();
        let data_url = format!("data:image/png;base64,{picture}");
        let (encoded, checked) =
            EncodedPictures::from_base64("init_image", &data_url, Some(&picture), None, 1 << 20)
                .unwrap();
        assert_eq!(encoded.encoded_bytes(), 2 * png.len());
        assert_eq!(checked.strength, 1.0);
        assert_eq!(encoded.decode().unwrap(), checked);
    }

    #[test]
    fn a_picture_that_fails_at_start_names_its_field() {
        let (picture, _) = png_base64();
        let (mut encoded, _) =
            EncodedPictures::from_base64("input_image", &picture, None, Some(0.5), 1 << 20)
                .unwrap();
        encoded.image.truncate(40);
        let err = encoded.decode().unwrap_err();
        assert_eq!(err.field, "input_image");
        assert!(matches!(
            EngineError::from(err),
            EngineError::InvalidRequest { field, .. } if field == "input_image"
        ));
    }
}
