//! Applying LoRA adapters to a loaded model.
//!
//! [`StableDiffusion::set_loras`] resolves every layer of the adapters against
//! the modules the components have, then rebuilds each component whose set of
//! adapters (and strengths) changed from the model's own source with the
//! updates fused in, as diffusers' `fuse_lora` leaves the weights. A component
//! going back to no adapters is rebuilt from the source alone: the weights are
//! restored from the originals, never by subtracting an update, so the model
//! is bit for bit what a fresh load gives. A change costs one rebuild of the
//! components it touches; the same set again costs nothing, and a step with
//! adapters fused costs what it costs without them.

use std::collections::HashMap;
use std::time::Instant;

use super::StableDiffusion;
use crate::error::{Error, Result};
use crate::lora::fuse::Deltas;
use crate::lora::{ActiveLora, ModuleIndex};
use crate::model::components::load_unet_fused;
use crate::model::Component;
use crate::unet::UNet2DConditionModel;

/// The components adapters can change, in the order they are rebuilt.
const ADAPTABLE: [Component; 3] = [
    Component::TextEncoder,
    Component::TextEncoder2,
    Component::Unet,
];

/// Which adapters, at which strengths, one component's weights hold: the
/// adapters' ids and the strengths' bits, in order.
type Signature = Vec<(u64, u32)>;

/// What is fused into each adaptable component now.
#[derive(Debug)]
pub(super) struct AppliedLoras {
    /// `None` while a component's weights are unknown (a rebuild failed).
    applied: HashMap<Component, Option<Signature>>,
    unet_modules: ModuleIndex,
}

impl AppliedLoras {
    /// No adapters anywhere; `unet_modules` indexes the UNet's weights.
    pub(super) fn new(unet_modules: ModuleIndex) -> Self {
        Self {
            applied: ADAPTABLE.iter().map(|c| (*c, Some(Vec::new()))).collect(),
            unet_modules,
        }
    }
}

impl StableDiffusion {
    /// Makes `loras` the adapters fused into the model, each at its strength
    /// (adapters at strength 0 are left out). A key that names no module of
    /// the model is an [`Error::Lora`] naming the key and the file, and leaves
    /// the model as it was. Components whose adapters did not change are not
    /// touched; an empty list restores the model as loaded.
    pub fn set_loras(&mut self, loras: &[ActiveLora]) -> Result<()> {
        let mut deltas: HashMap<Component, Deltas> = HashMap::new();
        let mut wanted: HashMap<Component, Signature> =
            ADAPTABLE.iter().map(|c| (*c, Vec::new())).collect();
        for lora in loras.iter().filter(|l| l.strength != 0.0) {
            let adapter = &lora.adapter;
            for (i, layer) in adapter.layers().iter().enumerate() {
                let unknown = |message: String| Error::Lora {
                    path: adapter.path().to_path_buf(),
                    message,
                };
                let index = self.modules(layer.component).ok_or_else(|| {
                    unknown(format!(
                        "key {} adapts {}, which this model does not have",
                        layer.key,
                        layer.component.folder()
                    ))
                })?;
                let weight = index.resolve(&layer.module).ok_or_else(|| {
                    unknown(format!(
                        "key {} names no module of this model's {}",
                        layer.key,
                        layer.component.folder()
                    ))
                })?;
                let factor = f64::from(lora.strength) * layer.scale;
                deltas
                    .entry(layer.component)
                    .or_default()
                    .add(weight, adapter.clone(), i, factor);
                let signature = wanted.entry(layer.component).or_default();
                let entry = (adapter.id(), lora.strength.to_bits());
                if !signature.contains(&entry) {
                    signature.push(entry);
                }
            }
        }
        for component in ADAPTABLE {
            let signature = wanted.remove(&component).unwrap_or_default();
            if self.loras.applied.get(&component) == Some(&Some(signature.clone())) {
                continue;
            }
            let started = Instant::now();
            let deltas = deltas.remove(&component).unwrap_or_default();
            self.loras.applied.insert(component, None);
            self.rebuild(component, &deltas)?;
            tracing::info!(
                component = component.folder(),
                adapters = signature.len(),
                elapsed = ?started.elapsed(),
                "rebuilt with LoRA adapters"
            );
            self.loras.applied.insert(component, Some(signature));
        }
        Ok(())
    }

    /// The UNet; an error after a LoRA change failed to rebuild it.
    pub(super) fn unet(&self) -> Result<&UNet2DConditionModel> {
        self.unet.as_ref().ok_or_else(|| {
            Error::invalid_file(
                self.source.index_origin(),
                "the UNet could not be rebuilt after a LoRA change; the next change retries",
            )
        })
    }

    /// The module index LoRA keys for `component` resolve against.
    fn modules(&self, component: Component) -> Option<&ModuleIndex> {
        match component {
            Component::Unet => Some(&self.loras.unet_modules),
            other => self.text.modules(other),
        }
    }

    /// Rebuilds `component` from the source with `deltas` fused in. The old
    /// UNet is dropped before the new one is built, so memory holds one.
    fn rebuild(&mut self, component: Component, deltas: &Deltas) -> Result<()> {
        let source = &*self.source;
        match component {
            Component::Unet => {
                self.unet = None;
                let (unet, modules) = load_unet_fused(
                    source,
                    &self.unet_config,
                    self.options,
                    &self.device,
                    deltas,
                )?;
                self.unet = Some(unet);
                self.loras.unet_modules = modules;
                Ok(())
            }
            other => self.text.rebuild(source, other, self.options, deltas),
        }
    }
}
