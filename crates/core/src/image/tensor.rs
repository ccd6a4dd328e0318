//! Pixels into the tensors the pipelines take, and the decoded output back
//! into pixels, with diffusers' `VaeImageProcessor` arithmetic.

use candle_core::{DType, Device, Tensor};

use super::DecodedImage;
use crate::error::Result;

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
        .pixels()
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
        .pixels()
        .iter()
        .map(|&v| if f32::from(v) / 255.0 < 0.5 { 0.0 } else { 1.0 })
        .collect();
    Ok(Tensor::from_vec(values, (1, 1, height, width), device)?)
}

/// Converts an image tensor `[1, 3, H, W]` with values in 0..1 into interleaved 8-bit RGB.
///
/// Values are scaled by 255 and rounded, as diffusers' `numpy_to_pil` does.
pub fn to_rgb8(image: &Tensor) -> Result<Vec<u8>> {
    let (_, channels, _, _) = image.dims4()?;
    if channels != 3 {
        return Err(candle_core::Error::Msg(format!("expected 3 channels, got {channels}")).into());
    }
    let hwc = image
        .squeeze(0)?
        .permute((1, 2, 0))?
        .to_dtype(DType::F32)?
        .flatten_all()?
        .to_vec1::<f32>()?;
    Ok(hwc
        .into_iter()
        .map(|v| (v.clamp(0.0, 1.0) * 255.0).round() as u8)
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::image::test_pictures::rgb_7x5;
    use crate::image::ColorMode;

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

    #[test]
    fn rgb8_rounds_and_clamps() {
        let image = Tensor::from_vec(
            vec![0.0f32, 1.0, 0.5, 2.0, -1.0, 0.25],
            (1, 3, 1, 2),
            &Device::Cpu,
        )
        .unwrap();
        assert_eq!(to_rgb8(&image).unwrap(), vec![0, 128, 0, 255, 255, 64]);
    }
}
