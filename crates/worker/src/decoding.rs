//! How images are decoded, for `serve`, `generate` and `bench` alike: the
//! tiny autoencoder beside the model (`--tiny-vae`), which decoder jobs use
//! when they do not say (`--vae-decoder`), and when the full VAE runs in tiles
//! (`--vae-tiling`, against the `--max-memory` budget).

use clap::{Args, ValueEnum};
use sd_core::model::hub::resolve_component;
use sd_core::model::{load_tiny_vae, WeightVariant};
use sd_core::pipeline::{StableDiffusion, VaeDecoder};
use sd_core::vae::TilingMode;

/// The decoding flags.
#[derive(Debug, Clone, Default, PartialEq, Eq, Args)]
pub struct DecodingArgs {
    /// A tiny autoencoder (AutoencoderTiny: `madebyollin/taesd` for SD 1.x/2.x,
    /// `madebyollin/taesdxl` for SDXL), as a repo id or a folder. Live previews
    /// become real decodes and jobs may ask for `fast_decode`.
    #[arg(long, env = "SD_WORKER_TINY_VAE")]
    pub tiny_vae: Option<String>,
    /// The autoencoder that decodes images when a job does not say
    /// (`fast_decode`): `full`, or `tiny` (needs `--tiny-vae`).
    #[arg(long, env = "SD_WORKER_VAE_DECODER", value_enum, default_value_t)]
    pub vae_decoder: DecoderChoice,
    /// When the full VAE decodes and encodes in tiles (diffusers'
    /// `enable_tiling`): `auto` when a whole pass would not fit the memory
    /// budget, `on` for every image larger than one tile, `off`.
    #[arg(long, env = "SD_WORKER_VAE_TILING", value_enum, default_value_t)]
    pub vae_tiling: TilingChoice,
    /// The memory the process may use, in bytes or with a unit (`12GiB`,
    /// `900MiB`, `16G`); `--vae-tiling auto` tiles a decode whose working
    /// memory would not fit what the loaded model leaves of it. Default: 3/4
    /// of the machine's memory.
    #[arg(long, env = "SD_WORKER_MAX_MEMORY", value_parser = parse_bytes)]
    pub max_memory: Option<u64>,
}

/// `--vae-decoder`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, ValueEnum)]
pub enum DecoderChoice {
    /// The model's own VAE.
    #[default]
    Full,
    /// The tiny autoencoder of `--tiny-vae`.
    Tiny,
}

impl DecoderChoice {
    /// The pipeline's decoder.
    pub fn decoder(self) -> VaeDecoder {
        match self {
            Self::Full => VaeDecoder::Full,
            Self::Tiny => VaeDecoder::Tiny,
        }
    }
}

/// `--vae-tiling`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, ValueEnum)]
pub enum TilingChoice {
    /// Tiles when a whole pass would not fit the memory budget.
    #[default]
    Auto,
    /// Tiles every image larger than one tile.
    On,
    /// Never tiles.
    Off,
}

/// A decoding setup that cannot work.
#[derive(Debug, thiserror::Error)]
pub enum DecodingError {
    /// `--vae-decoder tiny` without `--tiny-vae`.
    #[error(
        "--vae-decoder tiny needs a tiny autoencoder: pass --tiny-vae (e.g. madebyollin/taesd)"
    )]
    NoTinyVae,
    /// The tiny autoencoder could not be resolved or loaded; names the file or tensor.
    #[error("--tiny-vae: {0}")]
    TinyVae(sd_core::Error),
}

impl DecodingArgs {
    /// Checks what needs no model: a tiny default decoder needs a tiny autoencoder.
    pub fn check(&self) -> Result<(), DecodingError> {
        if self.vae_decoder == DecoderChoice::Tiny && self.tiny_vae.is_none() {
            return Err(DecodingError::NoTinyVae);
        }
        Ok(())
    }

    /// Loads the tiny autoencoder into `pipeline` (on its device) and sets its
    /// tiling mode. Call after the model is loaded: `auto`'s budget is what
    /// `--max-memory` leaves beside the memory in use now.
    pub fn apply(&self, pipeline: &mut StableDiffusion) -> Result<(), DecodingError> {
        self.check()?;
        if let Some(spec) = &self.tiny_vae {
            let folder =
                resolve_component(spec, WeightVariant::Full).map_err(DecodingError::TinyVae)?;
            let tiny = load_tiny_vae(&folder, WeightVariant::Full, pipeline.device())
                .map_err(DecodingError::TinyVae)?;
            pipeline
                .set_tiny_vae(Some(tiny))
                .map_err(DecodingError::TinyVae)?;
            tracing::info!(tiny_vae = %spec, "tiny autoencoder loaded");
        }
        let mode = self.tiling_mode();
        tracing::info!(?mode, "VAE tiling");
        pipeline.set_vae_tiling(mode);
        Ok(())
    }

    /// The tiling mode, with `auto`'s budget worked out now.
    pub fn tiling_mode(&self) -> TilingMode {
        match self.vae_tiling {
            TilingChoice::On => TilingMode::On,
            TilingChoice::Off => TilingMode::Off,
            TilingChoice::Auto => {
                let limit = self.max_memory.unwrap_or_else(default_max_memory);
                TilingMode::Auto {
                    budget_bytes: limit.saturating_sub(resident_bytes()),
                }
            }
        }
    }
}

/// Without `--max-memory`: 3/4 of the machine's memory (8 GiB where it cannot be read).
fn default_max_memory() -> u64 {
    meminfo_total_bytes().map_or(8 << 30, |total| total / 4 * 3)
}

/// `MemTotal` of `/proc/meminfo`, in bytes.
fn meminfo_total_bytes() -> Option<u64> {
    let text = std::fs::read_to_string("/proc/meminfo").ok()?;
    proc_value_kib(&text, "MemTotal:").map(|kib| kib * 1024)
}

/// This process's resident memory (`VmRSS`), in bytes; 0 where unknown.
fn resident_bytes() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|text| proc_value_kib(&text, "VmRSS:"))
        .map_or(0, |kib| kib * 1024)
}

/// The kB value of the line starting with `key` in a `/proc` text.
fn proc_value_kib(text: &str, key: &str) -> Option<u64> {
    text.lines()
        .find(|line| line.starts_with(key))
        .and_then(|line| line.split_whitespace().nth(1))
        .and_then(|value| value.parse().ok())
}

/// Parses a byte count: a number, optionally followed by `K`, `M`, `G`, `T`
/// (powers of 1024, with or without `i`/`B`: `12G`, `12GiB`, `12GB`).
pub fn parse_bytes(text: &str) -> Result<u64, String> {
    let text = text.trim();
    let split = text
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(text.len());
    let (number, unit) = text.split_at(split);
    let value: f64 = number
        .parse()
        .map_err(|_| format!("`{text}` is not a size like 12GiB or 900MiB"))?;
    let shift = match unit.trim().to_ascii_lowercase().as_str() {
        "" | "b" => 0,
        "k" | "kb" | "kib" => 10,
        "m" | "mb" | "mib" => 20,
        "g" | "gb" | "gib" => 30,
        "t" | "tb" | "tib" => 40,
        other => {
            return Err(format!(
                "unknown unit `{other}` in `{text}` (use K, M, G or T)"
            ))
        }
    };
    Ok((value * (1u64 << shift) as f64) as u64)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_take_binary_units() {
        assert_eq!(parse_bytes("1024"), Ok(1024));
        assert_eq!(parse_bytes("12GiB"), Ok(12 << 30));
        assert_eq!(parse_bytes("900M"), Ok(900 << 20));
        assert_eq!(parse_bytes("1.5g"), Ok(3 << 29));
        assert!(parse_bytes("lots").is_err());
        assert!(parse_bytes("12 parsecs").is_err());
    }

    #[test]
    fn a_tiny_default_needs_a_tiny_autoencoder() {
        let args = DecodingArgs {
            vae_decoder: DecoderChoice::Tiny,
            ..DecodingArgs::default()
        };
        assert!(matches!(args.check(), Err(DecodingError::NoTinyVae)));
        let args = DecodingArgs {
            tiny_vae: Some("madebyollin/taesd".into()),
            ..args
        };
        assert!(args.check().is_ok());
    }

    #[test]
    fn auto_tiling_budgets_what_the_process_leaves() {
        let args = DecodingArgs {
            max_memory: Some(1 << 40),
            ..DecodingArgs::default()
        };
        match args.tiling_mode() {
            TilingMode::Auto { budget_bytes } => {
                assert!(budget_bytes < 1 << 40 && budget_bytes > (1 << 40) - (64 << 30))
            }
            other => panic!("{other:?}"),
        }
        let off = DecodingArgs {
            vae_tiling: TilingChoice::Off,
            ..DecodingArgs::default()
        };
        assert_eq!(off.tiling_mode(), TilingMode::Off);
    }
}
