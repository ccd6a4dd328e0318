//! Single-file checkpoints: one `.safetensors` file in the original LDM/SGM
//! key layout, as community models ship (and AUTOMATIC1111 or ComfyUI load).
//!
//! [`SingleFileCheckpoint`] is a [`ModelSource`]: the family comes from the
//! keys (SD 2's OpenCLIP text model, SDXL's two conditioners, a 9-channel
//! inpainting UNet), the configs and tokenizers from the built-in standard
//! architectures ([`builtin`]) or from a diffusers folder (`--config`), and
//! each tensor is read under its diffusers name through the key mappings of
//! [`unet_keys`], [`vae_keys`] and [`clip_keys`], converted while it is read.
//! Pickle checkpoints (`.ckpt`, `.pt`, `.bin`) are refused ([`refuse_pickle`]).

pub mod builtin;
pub mod clip_keys;
mod keys;
pub mod renamed;
pub mod unet_keys;
pub mod vae_keys;

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use candle_core::{DType, Device};
use candle_nn::VarBuilder;

pub use builtin::Architecture;
pub use clip_keys::{clip_module_path, open_clip_fused_qkv, open_clip_module_path};
pub use unet_keys::unet_module_path;
pub use vae_keys::vae_module_path;

use self::clip_keys::{
    SD1_CLIP_PREFIX, SD2_OPEN_CLIP_PREFIX, SDXL_CLIP_PREFIX, SDXL_OPEN_CLIP_PREFIX,
};
use self::renamed::{Conversion, RenamedTensors, StoredAs};
use self::unet_keys::UNET_PREFIX;
use self::vae_keys::VAE_PREFIX;
use super::files::{Component, ConfigText};
use super::options::PredictionType;
use super::profile::ModelFamily;
use super::safetensors::SafetensorsReader;
use super::source::{ComponentWeights, DiffusersFolder, ModelSource};
use crate::error::{Error, Result};
use crate::tokenizer::ClipTokenizer;
use crate::unet::UNetConfig;
use crate::vae::VaeConfig;

/// The UNet's first convolution: its input channels tell an inpainting model (9).
const CONV_IN: &str = "model.diffusion_model.input_blocks.0.0.weight";
/// A cross-attention key projection whose input width is the text encoders' (768, 1024, 2048).
const CROSS_ATTENTION_KEY: &str =
    "model.diffusion_model.input_blocks.4.1.transformer_blocks.0.attn2.to_k.weight";

/// The padding token of OpenCLIP tokenizers (SD 2.x, SDXL's second).
const OPEN_CLIP_PAD: &str = "!";

/// File extensions of pickle (torch.save) checkpoints.
const PICKLE_EXTENSIONS: [&str; 5] = ["ckpt", "pt", "pth", "bin", "pkl"];

/// Refuses a pickle checkpoint (by its extension, or a `.safetensors` name on
/// a zip or pickle file): unpickling runs whatever code the file carries.
/// The error says how to convert it once, in a trusted environment.
pub fn refuse_pickle(path: &Path) -> Result<()> {
    let extension = path
        .extension()
        .and_then(|e| e.to_str())
        .map(str::to_ascii_lowercase);
    let by_name = extension
        .as_deref()
        .is_some_and(|e| PICKLE_EXTENSIONS.contains(&e));
    let by_content = || {
        let mut head = [0u8; 4];
        std::fs::File::open(path)
            .and_then(|mut f| std::io::Read::read_exact(&mut f, &mut head))
            .is_ok_and(|()| head == *b"PK\x03\x04" || head[0] == 0x80)
    };
    if by_name || (path.is_file() && by_content()) {
        return Err(Error::invalid_file(
            path,
            "is a pickle checkpoint (torch.save); loading one runs any code it carries, so only \
             safetensors files are read. Convert it once where you trust it, e.g. \
             `python -c \"import torch, safetensors.torch as st; sd = torch.load('model.ckpt', \
             map_location='cpu', weights_only=True); sd = sd.get('state_dict', sd); \
             st.save_file({k: v.contiguous() for k, v in sd.items() if hasattr(v, 'contiguous')}, \
             'model.safetensors')\"`",
        ));
    }
    Ok(())
}

/// Whether `path` names a single-file checkpoint rather than a folder or a repo id.
pub fn is_single_file(path: &Path) -> bool {
    path.is_file()
        || path
            .extension()
            .and_then(|e| e.to_str())
            .is_some_and(|e| e == "safetensors" || PICKLE_EXTENSIONS.contains(&e))
}

/// Detects the architecture from a checkpoint's keys and shapes.
/// `prediction` overrides what diffusers assumes (v-prediction for SD 2.x
/// but its inpainting model, epsilon otherwise).
pub fn detect(
    reader: &SafetensorsReader,
    path: &Path,
    prediction: Option<PredictionType>,
) -> Result<Architecture> {
    let has_prefix = |prefix: &str| reader.names().any(|n| n.starts_with(prefix));
    let Some(conv_in) = reader.shape_of(CONV_IN) else {
        return Err(Error::invalid_file(
            path,
            format!(
                "is not an SD 1.x, 2.x or SDXL checkpoint in the LDM/SGM layout (no {CONV_IN}); \
                 a diffusers model is a folder: pass the folder instead"
            ),
        ));
    };
    let inpainting = conv_in.get(1) == Some(&9);
    let family = if has_prefix(SDXL_OPEN_CLIP_PREFIX) {
        ModelFamily::Sdxl
    } else if has_prefix(SD2_OPEN_CLIP_PREFIX) {
        ModelFamily::Sd2
    } else if has_prefix(SD1_CLIP_PREFIX) {
        ModelFamily::Sd1
    } else {
        match reader.shape_of(CROSS_ATTENTION_KEY).and_then(|s| s.last()) {
            Some(2048) => ModelFamily::Sdxl,
            Some(1024) => ModelFamily::Sd2,
            Some(768) => ModelFamily::Sd1,
            _ => {
                return Err(Error::invalid_file(
                    path,
                    format!(
                        "has no text encoder ({SD1_CLIP_PREFIX}*, {SD2_OPEN_CLIP_PREFIX}* or \
                         {SDXL_OPEN_CLIP_PREFIX}*) to tell SD 1.x, 2.x and SDXL apart"
                    ),
                ))
            }
        }
    };
    let prediction = prediction.unwrap_or(if family == ModelFamily::Sd2 && !inpainting {
        PredictionType::VPrediction
    } else {
        PredictionType::Epsilon
    });
    Ok(Architecture {
        family,
        inpainting,
        prediction,
    })
}

/// A single-file checkpoint, with the configs and tokenizers it is read with.
pub struct SingleFileCheckpoint {
    path: PathBuf,
    reader: Arc<SafetensorsReader>,
    architecture: Architecture,
    /// `--config`: a diffusers folder whose configs and tokenizers replace the built-in ones.
    configs: Option<DiffusersFolder>,
}

impl SingleFileCheckpoint {
    /// Opens a checkpoint (reading only its header) and detects its
    /// architecture; `configs` replaces the built-in configs and tokenizers,
    /// `prediction` what the UNet is taken to predict.
    pub fn open(
        path: &Path,
        configs: Option<DiffusersFolder>,
        prediction: Option<PredictionType>,
    ) -> Result<Self> {
        refuse_pickle(path)?;
        if !path.is_file() {
            return Err(Error::MissingFile(path.to_path_buf()));
        }
        let reader = SafetensorsReader::open(&[path.to_path_buf()])?;
        let architecture = detect(&reader, path, prediction)?;
        tracing::info!(
            file = %path.display(),
            architecture = architecture.describe(),
            configs = configs.as_ref().map(|c| c.root().display().to_string()),
            "single-file checkpoint"
        );
        Ok(Self {
            path: path.to_path_buf(),
            reader: Arc::new(reader),
            architecture,
            configs,
        })
    }

    /// The architecture its keys show.
    pub fn architecture(&self) -> Architecture {
        self.architecture
    }

    /// The file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// `component`'s tensors: diffusers name → stored tensor, and the stored
    /// prefix errors name.
    fn names(&self, component: Component) -> Result<(HashMap<String, StoredAs>, &'static str)> {
        let mut names = HashMap::new();
        let stored = self.reader.names();
        let prefix = match component {
            Component::Unet => {
                let config = UNetConfig::from_config(&self.config(component)?)?;
                let per_block = config
                    .layers_per_block
                    .expand(config.block_out_channels.len(), "layers_per_block")
                    .map_err(|e| Error::invalid_file(&self.path, e))?;
                let layers = per_block[0];
                if per_block.iter().any(|&n| n != layers) {
                    return Err(Error::invalid_file(
                        &self.path,
                        "the LDM layout needs the same layers_per_block in every UNet block",
                    ));
                }
                for name in stored.filter(|n| n.starts_with(UNET_PREFIX)) {
                    if let Some(diffusers) = unet_module_path(name, layers) {
                        names.insert(diffusers, StoredAs::same(name));
                    }
                }
                UNET_PREFIX
            }
            Component::Vae => {
                let levels = VaeConfig::from_config(&self.config(component)?)?
                    .block_out_channels
                    .len();
                for name in stored.filter(|n| n.starts_with(VAE_PREFIX)) {
                    if let Some(diffusers) = vae_module_path(name, levels) {
                        names.insert(diffusers, StoredAs::same(name));
                    }
                }
                VAE_PREFIX
            }
            Component::TextEncoder => match self.architecture.family {
                ModelFamily::Sd1 => openai_clip(stored, SD1_CLIP_PREFIX, &mut names),
                ModelFamily::Sd2 => open_clip(stored, SD2_OPEN_CLIP_PREFIX, false, &mut names),
                ModelFamily::Sdxl => openai_clip(stored, SDXL_CLIP_PREFIX, &mut names),
            },
            Component::TextEncoder2 => open_clip(stored, SDXL_OPEN_CLIP_PREFIX, true, &mut names),
        };
        if names.is_empty() {
            return Err(Error::invalid_file(
                &self.path,
                format!("has no {} tensors ({prefix}*)", component.folder()),
            ));
        }
        Ok((names, prefix))
    }
}

/// OpenAI CLIP tensors under `prefix`.
fn openai_clip<'a>(
    stored: impl Iterator<Item = &'a str>,
    prefix: &'static str,
    names: &mut HashMap<String, StoredAs>,
) -> &'static str {
    for name in stored.filter(|n| n.starts_with(prefix)) {
        if let Some(diffusers) = clip_module_path(name) {
            names.insert(diffusers, StoredAs::same(name));
        }
    }
    prefix
}

/// OpenCLIP tensors under `prefix`; `projection`: whether the encoder keeps
/// its `text_projection` (SDXL's second encoder; SD 2.x uses none).
fn open_clip<'a>(
    stored: impl Iterator<Item = &'a str>,
    prefix: &'static str,
    projection: bool,
    names: &mut HashMap<String, StoredAs>,
) -> &'static str {
    for name in stored.filter(|n| n.starts_with(prefix)) {
        if let Some(parts) = open_clip_fused_qkv(name) {
            for (index, diffusers) in parts.into_iter().enumerate() {
                let conversion = Conversion::Rows { index, count: 3 };
                names.insert(
                    diffusers,
                    StoredAs {
                        name: name.to_string(),
                        conversion,
                    },
                );
            }
        } else if let Some(diffusers) = open_clip_module_path(name) {
            let conversion = if diffusers == "text_projection.weight" {
                if !projection {
                    continue;
                }
                Conversion::Transposed
            } else {
                Conversion::Same
            };
            names.insert(
                diffusers,
                StoredAs {
                    name: name.to_string(),
                    conversion,
                },
            );
        }
    }
    prefix
}

impl ModelSource for SingleFileCheckpoint {
    fn name(&self) -> String {
        self.path
            .file_stem()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_else(|| self.path.display().to_string())
    }

    fn index_origin(&self) -> PathBuf {
        self.path.clone()
    }

    fn has(&self, component: Component) -> bool {
        match component {
            Component::TextEncoder2 => self.architecture.family == ModelFamily::Sdxl,
            Component::TextEncoder | Component::Unet | Component::Vae => true,
        }
    }

    fn config(&self, component: Component) -> Result<ConfigText> {
        match &self.configs {
            Some(folder) => folder.config(component),
            None => self
                .architecture
                .config(component)
                .ok_or_else(|| Error::MissingFile(PathBuf::from(component.config_file()))),
        }
    }

    fn scheduler_config(&self) -> Result<ConfigText> {
        match &self.configs {
            Some(folder) => folder.scheduler_config(),
            None => Ok(self.architecture.scheduler_config()),
        }
    }

    fn tokenizer(&self, encoder: Component) -> Result<ClipTokenizer> {
        if let Some(folder) = &self.configs {
            return folder.tokenizer(encoder);
        }
        let open_clip =
            encoder == Component::TextEncoder2 || self.architecture.family == ModelFamily::Sd2;
        Ok(if open_clip {
            ClipTokenizer::bundled_padded_with(OPEN_CLIP_PAD)
        } else {
            ClipTokenizer::bundled()
        })
    }

    fn weights(
        &self,
        component: Component,
        dtype: DType,
        device: &Device,
    ) -> Result<ComponentWeights> {
        let (names, prefix) = self.names(component)?;
        let backend = RenamedTensors::new(
            self.reader.clone(),
            names,
            format!("{prefix}*"),
            self.path.clone(),
        );
        let vb = VarBuilder::from_backend(Box::new(backend), dtype, device.clone());
        Ok(ComponentWeights::new(vb, self.path.clone()))
    }

    fn force_zeros_for_empty_prompt(&self) -> bool {
        self.configs
            .as_ref()
            .is_none_or(|folder| folder.force_zeros_for_empty_prompt())
    }
}
