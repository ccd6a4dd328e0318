//! PNG encoding, with the generation settings in AUTOMATIC1111's `parameters`
//! text chunk.

use crate::error::{Error, Result};

/// Settings of one generation, written into the PNG the way AUTOMATIC1111 does
/// so other tools can read them back.
#[derive(Debug, Clone, PartialEq)]
pub struct GenerationSettings {
    /// The prompt.
    pub prompt: String,
    /// The negative prompt, if any.
    pub negative_prompt: Option<String>,
    /// Denoising steps asked for.
    pub steps: usize,
    /// Sampler name as AUTOMATIC1111 spells it (`Euler a`, `DPM++ 2M Karras`, ...).
    pub sampler: String,
    /// Classifier-free guidance scale.
    pub guidance_scale: f64,
    /// Seed of the initial noise.
    pub seed: u64,
    /// Image width in pixels.
    pub width: usize,
    /// Image height in pixels.
    pub height: usize,
    /// Model name or repo id (never a path).
    pub model: String,
    /// The short hash of the model's weights ([`crate::model::model_hash`]).
    pub model_hash: Option<String>,
    /// Image-to-image and inpainting strength.
    pub denoising_strength: Option<f64>,
    /// Text-encoder layers skipped (diffusers' `clip_skip`); written as
    /// AUTOMATIC1111's `Clip skip: N` (N = `clip_skip` + 1) when any is.
    pub clip_skip: usize,
}

impl GenerationSettings {
    /// The `parameters` text: prompt, optional `Negative prompt:` line, then the settings line.
    pub fn a1111_parameters(&self) -> String {
        let mut text = self.prompt.clone();
        if let Some(negative) = self.negative_prompt.as_deref().filter(|n| !n.is_empty()) {
            text.push_str("\nNegative prompt: ");
            text.push_str(negative);
        }
        text.push_str(&format!(
            "\nSteps: {}, Sampler: {}, CFG scale: {}, Seed: {}, Size: {}x{}, ",
            self.steps, self.sampler, self.guidance_scale, self.seed, self.width, self.height,
        ));
        if let Some(hash) = &self.model_hash {
            text.push_str(&format!("Model hash: {hash}, "));
        }
        text.push_str(&format!("Model: {}", self.model));
        if let Some(strength) = self.denoising_strength {
            text.push_str(&format!(", Denoising strength: {strength}"));
        }
        if self.clip_skip > 0 {
            text.push_str(&format!(", Clip skip: {}", self.clip_skip + 1));
        }
        text
    }
}

/// Encodes interleaved 8-bit RGB as a PNG, with an AUTOMATIC1111 `parameters`
/// text chunk when settings are given (`tEXt` for Latin-1 text, else `iTXt`).
pub fn encode_png(
    rgb: &[u8],
    width: usize,
    height: usize,
    settings: Option<&GenerationSettings>,
) -> Result<Vec<u8>> {
    if rgb.len() != width * height * 3 {
        return Err(Error::Image(format!(
            "{} bytes do not make a {width}x{height} RGB image",
            rgb.len()
        )));
    }
    let image_error = |e: png::EncodingError| Error::Image(e.to_string());
    let mut bytes = Vec::new();
    {
        let mut encoder = png::Encoder::new(&mut bytes, width as u32, height as u32);
        encoder.set_color(png::ColorType::Rgb);
        encoder.set_depth(png::BitDepth::Eight);
        if let Some(settings) = settings {
            let text = settings.a1111_parameters();
            let keyword = "parameters".to_string();
            if text.chars().all(|c| (c as u32) < 256) {
                encoder.add_text_chunk(keyword, text).map_err(image_error)?;
            } else {
                encoder.add_itxt_chunk(keyword, text).map_err(image_error)?;
            }
        }
        let mut writer = encoder.write_header().map_err(image_error)?;
        writer.write_image_data(rgb).map_err(image_error)?;
        writer.finish().map_err(image_error)?;
    }
    Ok(bytes)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn settings(prompt: &str, negative: Option<&str>) -> GenerationSettings {
        GenerationSettings {
            prompt: prompt.to_string(),
            negative_prompt: negative.map(str::to_string),
            steps: 20,
            sampler: "Euler a".to_string(),
            guidance_scale: 7.5,
            seed: 42,
            width: 16,
            height: 8,
            model: "v1-5".to_string(),
            model_hash: Some("6ce0161689".to_string()),
            denoising_strength: None,
            clip_skip: 0,
        }
    }

    fn text_chunks(png_bytes: &[u8]) -> Vec<(String, String)> {
        let decoder = png::Decoder::new(png_bytes);
        let reader = decoder.read_info().unwrap();
        let info = reader.info();
        let mut chunks: Vec<(String, String)> = info
            .uncompressed_latin1_text
            .iter()
            .map(|c| (c.keyword.clone(), c.text.clone()))
            .collect();
        for chunk in &info.utf8_text {
            chunks.push((chunk.keyword.clone(), chunk.get_text().unwrap()));
        }
        chunks
    }

    #[test]
    fn parameters_follow_a1111() {
        let text = settings("a cat", Some("blurry")).a1111_parameters();
        assert_eq!(
            text,
            "a cat\nNegative prompt: blurry\nSteps: 20, Sampler: Euler a, CFG scale: 7.5, \
             Seed: 42, Size: 16x8, Model hash: 6ce0161689, Model: v1-5"
        );
        let mut unhashed = settings("a cat", None);
        unhashed.model_hash = None;
        assert!(unhashed
            .a1111_parameters()
            .ends_with("Size: 16x8, Model: v1-5"));
        let text = settings("a cat", Some("")).a1111_parameters();
        assert!(!text.contains("Negative prompt"));
        let mut img2img = settings("a cat", None);
        img2img.denoising_strength = Some(0.75);
        assert!(img2img
            .a1111_parameters()
            .ends_with("Model: v1-5, Denoising strength: 0.75"));
        // A1111 writes "Clip skip" (its N, one more than diffusers' clip_skip)
        // after the denoising strength, and only when N > 1.
        img2img.clip_skip = 1;
        assert!(img2img
            .a1111_parameters()
            .ends_with("Denoising strength: 0.75, Clip skip: 2"));
    }

    #[test]
    fn png_round_trips_with_its_text_chunk() {
        let rgb: Vec<u8> = (0..16 * 8 * 3).map(|i| i as u8).collect();
        for prompt in ["a cat", "un chat noir, café", "猫 🐱"] {
            let bytes = encode_png(&rgb, 16, 8, Some(&settings(prompt, None))).unwrap();
            let chunks = text_chunks(&bytes);
            assert_eq!(chunks.len(), 1);
            assert_eq!(chunks[0].0, "parameters");
            assert!(chunks[0].1.starts_with(prompt));
            let mut decoder = png::Decoder::new(&bytes[..]).read_info().unwrap();
            let mut pixels = vec![0; decoder.output_buffer_size()];
            decoder.next_frame(&mut pixels).unwrap();
            assert_eq!(pixels, rgb);
        }
    }

    #[test]
    fn wrong_buffer_size_is_an_error() {
        assert!(encode_png(&[0; 5], 2, 2, None).is_err());
    }
}
