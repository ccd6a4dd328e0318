//! LoRA adapters: low-rank weight updates `ΔW = up · down`, read from the
//! layouts people download and fused into the weights as a component is built.
//!
//! - [`read`]: a file in kohya/sd-scripts' layout (`lora_unet_*`, `lora_te*_*`,
//!   `lora_down`/`lora_up`/`alpha`, LoCon on convolutions) or diffusers/PEFT's
//!   (`unet.*.lora_A`/`lora_B`, `text_encoder*.…`, alphas from the metadata);
//! - [`modules`]: which of a component's weights a layer's key names;
//! - [`fuse`]: the weight source that adds `strength · alpha / rank · up · down`
//!   to the weights it hands out, as diffusers' `fuse_lora(lora_scale=…)` does.
//!
//! [`crate::pipeline::StableDiffusion::set_loras`] rebuilds the components a
//! change of adapters touches from the model's own files, so a model without
//! adapters is bit for bit the model a fresh load gives.

pub(crate) mod fuse;
pub(crate) mod modules;
mod read;

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use candle_core::Tensor;

use crate::model::Component;

pub use modules::ModuleIndex;

/// How a LoRA layer's key names the module it adapts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum ModuleKey {
    /// diffusers' dotted module path (`down_blocks.0.attentions.0.proj_in`).
    Dotted(String),
    /// kohya's: a module path with `_` for every `.` (`down_blocks_0_attentions_0_proj_in`).
    Underscored(String),
}

/// One adapted layer: `ΔW = scale · up · down`, reshaped to the weight's shape.
#[derive(Debug)]
pub(crate) struct LoraLayer {
    /// The key prefix in the file, for errors.
    pub key: String,
    /// The component whose weight it adapts.
    pub component: Component,
    /// The module it names.
    pub module: ModuleKey,
    /// `[rank, in]` or `[rank, in, kh, kw]`, f32.
    pub down: Tensor,
    /// `[out, rank]` or `[out, rank, 1, 1]`, f32.
    pub up: Tensor,
    /// `alpha / rank`.
    pub scale: f64,
}

/// A parsed LoRA file.
#[derive(Debug)]
pub struct LoraAdapter {
    /// Unique per parse: tells two loads of one file apart when deciding
    /// whether the weights must be rebuilt.
    id: u64,
    path: PathBuf,
    format: LoraFormat,
    layers: Vec<LoraLayer>,
}

/// The key layout a LoRA file uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LoraFormat {
    /// kohya/sd-scripts: `lora_unet_*`, `lora_te_*`, `lora_down`/`lora_up`/`alpha`.
    Kohya,
    /// diffusers/PEFT: `unet.….lora_A`/`lora_B`, `text_encoder.…`.
    Peft,
}

impl LoraFormat {
    /// The format's name in listings.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Kohya => "kohya",
            Self::Peft => "peft",
        }
    }
}

static NEXT_ID: AtomicU64 = AtomicU64::new(1);

impl LoraAdapter {
    /// Reads and checks a LoRA `.safetensors` file. Every key must belong to
    /// one of the two layouts; an unknown key, a half of a pair without the
    /// other, or a LyCORIS/DoRA tensor is an error naming the key and the file.
    pub fn read(path: &Path) -> crate::Result<Self> {
        let (format, layers) = read::read_layers(path)?;
        Ok(Self {
            id: NEXT_ID.fetch_add(1, Ordering::Relaxed),
            path: path.to_path_buf(),
            format,
            layers,
        })
    }

    /// The file it was read from.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Its key layout.
    pub fn format(&self) -> LoraFormat {
        self.format
    }

    /// How many layers it adapts.
    pub fn len(&self) -> usize {
        self.layers.len()
    }

    /// Whether it adapts no layer at all.
    pub fn is_empty(&self) -> bool {
        self.layers.is_empty()
    }

    /// The components it adapts, in pipeline order.
    pub fn components(&self) -> Vec<Component> {
        [
            Component::TextEncoder,
            Component::TextEncoder2,
            Component::Unet,
        ]
        .into_iter()
        .filter(|c| self.layers.iter().any(|l| l.component == *c))
        .collect()
    }

    /// The bytes its tensors take in memory.
    pub fn bytes(&self) -> usize {
        self.layers
            .iter()
            .map(|l| (l.down.elem_count() + l.up.elem_count()) * 4)
            .sum()
    }

    pub(crate) fn id(&self) -> u64 {
        self.id
    }

    pub(crate) fn layers(&self) -> &[LoraLayer] {
        &self.layers
    }
}

/// The layout of a LoRA file and the components it adapts, from its header
/// alone (no tensor is read): cheap enough for listings.
pub fn inspect(path: &Path) -> crate::Result<(LoraFormat, Vec<Component>)> {
    let (format, mut components) = read::inspect(path)?;
    components.sort_by_key(|c| {
        [
            Component::TextEncoder,
            Component::TextEncoder2,
            Component::Unet,
        ]
        .iter()
        .position(|x| x == c)
    });
    Ok((format, components))
}

/// An adapter applied at a strength (diffusers' `lora_scale`; 1 is the
/// adapter as trained, 0 leaves the weights alone, negative inverts it).
#[derive(Debug, Clone)]
pub struct ActiveLora {
    /// The parsed file.
    pub adapter: Arc<LoraAdapter>,
    /// The multiplier of its `alpha / rank` scale.
    pub strength: f32,
}
