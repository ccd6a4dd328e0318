//! An engine without a model, for tests: it "encodes the prompt" and
//! "denoises" by sleeping a while (stopping within milliseconds once
//! interrupted) and paints a deterministic PNG of the requested size (and,
//! for jobs that ask, a preview on every step but the last). Each image of
//! a job of several is painted with its own seed, as the real engine's.
//!
//! The binary selects it with the hidden `--fake-engine` flag (a test aid,
//! never meant for serving), whose value configures it (see
//! [`FakeEngineConfig`]'s `FromStr`).

use std::ops::ControlFlow;
use std::str::FromStr;
use std::time::{Duration, Instant};

use candle_core::{Device, Tensor};
use sd_contract::ProgressPreview;
use sd_core::image::GenerationSettings;
use sd_core::model::{ModelFamily, ModelProfile};
use sd_core::preview::LatentFormat;
use sd_core::schedulers::SchedulerKind;
use sd_core::Interrupt;

use super::{preview, Engine, EngineError, EngineLoader, EngineOutput, StepUpdate};
use crate::validation::RunnableJob;

/// How the fake engine behaves.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FakeEngineConfig {
    /// Time per denoising step.
    pub step_delay: Duration,
    /// Time to "encode the prompt", before the first step.
    pub encode_delay: Duration,
    /// Time to "load the model".
    pub load_delay: Duration,
    /// When set, loading fails with this message.
    pub load_error: Option<String>,
    /// Jobs whose prompt contains this text fail.
    pub fail_prompt: Option<String>,
    /// Jobs whose prompt contains this text abort the whole process at their
    /// first step, as a crash would (tests of the shared queue's poison-job bound).
    pub abort_prompt: Option<String>,
    /// The family it reports.
    pub family: ModelFamily,
}

impl Default for FakeEngineConfig {
    fn default() -> Self {
        Self {
            step_delay: Duration::from_millis(5),
            encode_delay: Duration::ZERO,
            load_delay: Duration::ZERO,
            load_error: None,
            fail_prompt: None,
            abort_prompt: None,
            family: ModelFamily::Sd1,
        }
    }
}

impl FromStr for FakeEngineConfig {
    type Err = String;

    /// Parses `key=value` pairs separated by commas: `step_ms`, `encode_ms`,
    /// `load_ms`, `load_error`, `fail_prompt`, `abort_prompt`, `family`. An empty string keeps every default.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let mut config = FakeEngineConfig::default();
        for pair in s.split(',').filter(|p| !p.trim().is_empty()) {
            let (key, value) = pair
                .split_once('=')
                .ok_or_else(|| format!("fake engine option `{pair}` is not key=value"))?;
            let millis = || {
                value
                    .parse::<u64>()
                    .map(Duration::from_millis)
                    .map_err(|e| format!("fake engine option {key}: {e}"))
            };
            match key.trim() {
                "step_ms" => config.step_delay = millis()?,
                "encode_ms" => config.encode_delay = millis()?,
                "load_ms" => config.load_delay = millis()?,
                "load_error" => config.load_error = Some(value.to_string()),
                "fail_prompt" => config.fail_prompt = Some(value.to_string()),
                "abort_prompt" => config.abort_prompt = Some(value.to_string()),
                "family" => config.family = value.parse()?,
                other => return Err(format!("unknown fake engine option `{other}`")),
            }
        }
        Ok(config)
    }
}

/// The fake engine.
#[derive(Debug)]
pub struct FakeEngine {
    config: FakeEngineConfig,
}

impl FakeEngine {
    /// A loader that waits `load_delay`, then fails with `load_error` or
    /// returns the engine.
    pub fn loader(config: FakeEngineConfig) -> EngineLoader {
        Box::new(move || {
            std::thread::sleep(config.load_delay);
            match &config.load_error {
                Some(message) => Err(EngineError::Failed(message.clone())),
                None => Ok(Box::new(FakeEngine { config }) as Box<dyn Engine>),
            }
        })
    }
}

impl Engine for FakeEngine {
    fn profile(&self) -> ModelProfile {
        ModelProfile {
            family: self.config.family,
            inpainting: false,
            native_size: (512, 512),
            vae_scale_factor: 8,
            scheduler: SchedulerKind::Pndm,
            step_limits: Default::default(),
            max_clip_skip: 11,
            tiny_decoder: false,
            precision: Default::default(),
        }
    }

    fn generate(
        &mut self,
        job: &RunnableJob,
        interrupt: Interrupt<'_>,
        on_step: &mut dyn FnMut(StepUpdate) -> ControlFlow<()>,
        on_image: &mut dyn FnMut(EngineOutput),
    ) -> Result<(), EngineError> {
        let p = job.params();
        let steps = p.steps as usize;
        let total = steps * p.num_images as usize;
        work(self.config.encode_delay, interrupt)?;
        for index in 0..p.num_images {
            for image_step in 1..=steps {
                work(self.config.step_delay, interrupt)?;
                if let Some(trigger) = &self.config.abort_prompt {
                    if p.prompt.contains(trigger.as_str()) {
                        tracing::error!(
                            "fake engine: the prompt contains `{trigger}`: aborting the process"
                        );
                        std::process::abort();
                    }
                }
                let step = index as usize * steps + image_step;
                let preview = (job.wants_preview() && step < total)
                    .then(|| fake_preview(p.width, p.height, step))
                    .transpose()?;
                if on_step(StepUpdate {
                    step,
                    total,
                    preview,
                })
                .is_break()
                {
                    return Err(EngineError::Cancelled);
                }
            }
            if let Some(trigger) = &self.config.fail_prompt {
                if p.prompt.contains(trigger.as_str()) {
                    return Err(EngineError::Failed(format!(
                        "fake engine: the prompt contains `{trigger}`"
                    )));
                }
            }
            let seed = job.seed_of(index);
            let png = paint(p.width, p.height, seed, &job_parameters_text(job, seed))
                .map_err(|e| EngineError::Failed(format!("fake engine: encoding PNG: {e}")))?;
            on_image(EngineOutput {
                png,
                width: p.width,
                height: p.height,
                seed,
            });
        }
        Ok(())
    }
}

/// Sleeps `time` in slices of at most 5 ms, stopping once `interrupt` is raised.
fn work(time: Duration, interrupt: Interrupt<'_>) -> Result<(), EngineError> {
    let end = Instant::now() + time;
    loop {
        if interrupt.is_raised() {
            return Err(EngineError::Cancelled);
        }
        let left = end.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Ok(());
        }
        std::thread::sleep(left.min(Duration::from_millis(5)));
    }
}

/// A preview of flat latents that brighten with the step, rendered as the
/// real engine renders its previews (on every step but the last).
fn fake_preview(width: u32, height: u32, step: usize) -> Result<ProgressPreview, EngineError> {
    let shape = (1, 4, height as usize / 8, width as usize / 8);
    Tensor::full(step as f32 * 0.1, shape, &Device::Cpu)
        .map_err(sd_core::Error::from)
        .and_then(|latents| {
            preview::render(
                &latents,
                &preview::PreviewSource::Projection(LatentFormat::Sd15),
            )
        })
        .map_err(|e| EngineError::Failed(format!("fake engine: preview: {e}")))
}

/// The hash the fake model's PNGs name (it has no weights to hash).
pub const FAKE_MODEL_HASH: &str = "0000000000";

/// The `parameters` text the real engine writes, naming the model `fake`.
fn job_parameters_text(job: &RunnableJob, seed: u64) -> String {
    let p = job.params();
    GenerationSettings {
        prompt: p.prompt.clone(),
        negative_prompt: p.negative_prompt.clone(),
        steps: p.steps as usize,
        sampler: crate::convert::scheduler_from_wire(p.scheduler)
            .a1111_name()
            .to_string(),
        guidance_scale: p.guidance_scale,
        seed,
        width: p.width as usize,
        height: p.height as usize,
        model: "fake".to_string(),
        model_hash: Some(FAKE_MODEL_HASH.to_string()),
        denoising_strength: p.strength,
        clip_skip: p.clip_skip as usize,
    }
    .a1111_parameters()
}

/// An RGB gradient tinted by the seed, with a `parameters` text chunk.
fn paint(
    width: u32,
    height: u32,
    seed: u64,
    parameters: &str,
) -> Result<Vec<u8>, png::EncodingError> {
    let tint = seed.to_le_bytes();
    let mut rgb = Vec::with_capacity(width as usize * height as usize * 3);
    for y in 0..height {
        for x in 0..width {
            rgb.push((x * 255 / width.max(1)) as u8 ^ tint[0]);
            rgb.push((y * 255 / height.max(1)) as u8 ^ tint[1]);
            rgb.push(tint[2]);
        }
    }
    let mut out = Vec::new();
    {
        let mut encoder = png::Encoder::new(&mut out, width, height);
        encoder.set_color(png::ColorType::Rgb);
        encoder.set_depth(png::BitDepth::Eight);
        if parameters.chars().all(|c| (c as u32) < 256) {
            encoder.add_text_chunk("parameters".into(), parameters.into())?;
        } else {
            encoder.add_itxt_chunk("parameters".into(), parameters.into())?;
        }
        let mut writer = encoder.write_header()?;
        writer.write_image_data(&rgb)?;
        writer.finish()?;
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn options_parse() {
        let c: FakeEngineConfig =
            "step_ms=20, load_ms=300,fail_prompt=boom,encode_ms=7,abort_prompt=crash"
                .parse()
                .unwrap();
        assert_eq!(c.abort_prompt.as_deref(), Some("crash"));
        assert_eq!(c.step_delay, Duration::from_millis(20));
        assert_eq!(c.encode_delay, Duration::from_millis(7));
        assert_eq!(c.load_delay, Duration::from_millis(300));
        assert_eq!(c.fail_prompt.as_deref(), Some("boom"));
        assert_eq!(
            "".parse::<FakeEngineConfig>().unwrap(),
            FakeEngineConfig::default()
        );
        assert!("speed=3".parse::<FakeEngineConfig>().is_err());
        assert!("step_ms".parse::<FakeEngineConfig>().is_err());
    }

    #[test]
    fn paints_a_png_of_the_requested_size() {
        let png = paint(24, 16, 3, "x").unwrap();
        let decoder = png::Decoder::new(std::io::Cursor::new(png));
        let reader = decoder.read_info().unwrap();
        let info = reader.info();
        assert_eq!((info.width, info.height), (24, 16));
        assert_eq!(info.uncompressed_latin1_text[0].text, "x");
    }
}
