//! Where a figure's model comes from: deterministic random weights on the
//! public configs bundled in `bench-configs/` ([`RandomSource`]), or a
//! diffusers folder (`--weights`). Both are sd-core [`ModelSource`]s, so the
//! `image` figure loads the production pipeline from either.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::Arc;

use candle_core::{DType, Device, Tensor};
use candle_nn::VarBuilder;
use sd_core::model::{
    Component, ComponentWeights, ConfigText, DiffusersFolder, ModelSource, SharedSource,
    WeightVariant,
};
use sd_core::tokenizer::ClipTokenizer;

use super::args::{name_of, BenchArgs, BenchModel};
use super::random_weights::{RandomBackend, Recorder};

/// The config key of the scheduler, next to the components' folder names.
const SCHEDULER: &str = "scheduler";

/// The padding token of SD 2.x's tokenizers and SDXL's second one.
const SD2_PAD: &str = "!";

/// The public `config.json` files of `$dir` in `bench-configs/`, by folder name.
macro_rules! bundled {
    ($dir:literal, [$($folder:literal),+]) => {
        vec![$((
            $folder,
            include_str!(concat!("../../../bench-configs/", $dir, "/", $folder, ".json")).to_string(),
        )),+]
    };
}

/// A model whose weights are drawn, tensor by tensor, from a seed: the same
/// seed and tensor name always give the same values (see [`RandomBackend`]).
/// Configs are text; tokenizers are sd-core's bundled CLIP tokenizer.
pub struct RandomSource {
    model: BenchModel,
    seed: u64,
    /// `(folder, config.json)` of the components the model has, and of `scheduler`.
    configs: Vec<(&'static str, String)>,
    recorder: Option<Recorder>,
}

impl RandomSource {
    /// `model` on its public configs from `bench-configs/`, weights drawn from `seed`.
    pub fn new(model: BenchModel, seed: u64) -> Self {
        let configs = match model {
            BenchModel::Sd15 => bundled!("sd15", ["unet", "vae", "text_encoder", "scheduler"]),
            BenchModel::SdTurbo => {
                bundled!("sd-turbo", ["unet", "vae", "text_encoder", "scheduler"])
            }
            BenchModel::Sdxl => bundled!(
                "sdxl",
                ["unet", "vae", "text_encoder", "text_encoder_2", "scheduler"]
            ),
        };
        Self::with_configs(model, seed, configs)
    }

    /// `model` on other configs: `(folder, text)` for `unet`, `vae`,
    /// `text_encoder` (and SDXL's `text_encoder_2`) and `scheduler`.
    pub fn with_configs(
        model: BenchModel,
        seed: u64,
        configs: Vec<(&'static str, String)>,
    ) -> Self {
        Self {
            model,
            seed,
            configs,
            recorder: None,
        }
    }

    /// The same source, keeping every tensor it hands out (see [`Self::take_recorded`]).
    pub fn recording(self) -> Self {
        Self {
            recorder: Some(Recorder::default()),
            ..self
        }
    }

    /// The tensors handed out for `component` since the last call (none unless recording).
    pub fn take_recorded(&self, component: Component) -> HashMap<String, Tensor> {
        self.recorder
            .as_ref()
            .map(|r| r.take(component.folder()))
            .unwrap_or_default()
    }

    /// The padding token of a text encoder's tokenizer, as the public models
    /// ship it: `!` for SD 2.x (SD-Turbo) and SDXL's second tokenizer,
    /// `<|endoftext|>` for the others.
    pub fn pad_token(&self, encoder: Component) -> &'static str {
        if self.model == BenchModel::SdTurbo || encoder == Component::TextEncoder2 {
            SD2_PAD
        } else {
            "<|endoftext|>"
        }
    }

    /// The name standing for a bundled file in errors and metadata.
    fn origin(&self, file: &str) -> PathBuf {
        PathBuf::from(format!("bench-configs/{}/{file}", name_of(self.model)))
    }

    /// The config text kept under `key`.
    fn config_text(&self, key: &str) -> sd_core::Result<ConfigText> {
        let origin = self.origin(&format!("{key}.json"));
        match self.configs.iter().find(|(k, _)| *k == key) {
            Some((_, text)) => Ok(ConfigText {
                origin,
                text: text.clone(),
            }),
            None => Err(sd_core::Error::MissingFile(origin)),
        }
    }
}

impl ModelSource for RandomSource {
    fn name(&self) -> String {
        format!("{}-random-{}", name_of(self.model), self.seed)
    }

    fn index_origin(&self) -> PathBuf {
        self.origin("")
    }

    fn has(&self, component: Component) -> bool {
        self.configs.iter().any(|(k, _)| *k == component.folder())
    }

    fn config(&self, component: Component) -> sd_core::Result<ConfigText> {
        self.config_text(component.folder())
    }

    fn scheduler_config(&self) -> sd_core::Result<ConfigText> {
        self.config_text(SCHEDULER)
    }

    fn tokenizer(&self, encoder: Component) -> sd_core::Result<ClipTokenizer> {
        Ok(ClipTokenizer::bundled_padded_with(self.pad_token(encoder)))
    }

    fn weights(
        &self,
        component: Component,
        dtype: DType,
        device: &Device,
    ) -> sd_core::Result<ComponentWeights> {
        let backend = RandomBackend::new(self.seed, component, self.recorder.clone());
        let vb = VarBuilder::from_backend(Box::new(backend), dtype, device.clone());
        let origin = format!("random weights of {}", component.folder());
        Ok(ComponentWeights::new(vb, self.origin(&origin)))
    }
}

/// The source of `model`'s parts: the `--weights` folder when given, else
/// random weights (`--seed`) on the bundled configs.
pub fn open(args: &BenchArgs, model: BenchModel) -> anyhow::Result<SharedSource> {
    Ok(match &args.weights {
        Some(folder) => Arc::new(DiffusersFolder::open(folder, WeightVariant::Full)?),
        None => Arc::new(RandomSource::new(model, args.seed)),
    })
}

#[cfg(test)]
mod tests {
    use sd_core::clip::ClipTextConfig;
    use sd_core::schedulers::SchedulerConfig;
    use sd_core::unet::UNetConfig;
    use sd_core::vae::VaeConfig;

    use super::*;

    #[test]
    fn every_bundled_model_has_its_configs() {
        for model in [BenchModel::Sd15, BenchModel::SdTurbo, BenchModel::Sdxl] {
            let source = RandomSource::new(model, 0);
            let unet = UNetConfig::from_config(&source.config(Component::Unet).unwrap()).unwrap();
            VaeConfig::from_config(&source.config(Component::Vae).unwrap()).unwrap();
            ClipTextConfig::from_config(&source.config(Component::TextEncoder).unwrap()).unwrap();
            SchedulerConfig::from_config(&source.scheduler_config().unwrap()).unwrap();
            let dual = model == BenchModel::Sdxl;
            assert_eq!(source.has(Component::TextEncoder2), dual);
            assert_eq!(unet.needs_added_cond(), dual);
            let missing = source.config(Component::TextEncoder2).map(|_| ()).err();
            assert_eq!(missing.is_some(), !dual);
        }
    }

    #[test]
    fn tokenizers_pad_as_the_public_models_do() {
        let sd15 = RandomSource::new(BenchModel::Sd15, 0);
        let ids = sd15
            .tokenizer(Component::TextEncoder)
            .unwrap()
            .encode("a cat");
        assert_eq!(&ids[..4], [49406, 320, 2368, 49407]);
        assert_eq!(ids[76], 49407);
        let turbo = RandomSource::new(BenchModel::SdTurbo, 0);
        assert_eq!(turbo.tokenizer(Component::TextEncoder).unwrap().pad_id(), 0);
        let sdxl = RandomSource::new(BenchModel::Sdxl, 0);
        assert_eq!(
            sdxl.tokenizer(Component::TextEncoder).unwrap().pad_id(),
            49407
        );
        assert_eq!(sdxl.tokenizer(Component::TextEncoder2).unwrap().pad_id(), 0);
    }

    #[test]
    fn weights_depend_on_seed_and_name_only() {
        let draw = |seed: u64, name: &str| -> Vec<f32> {
            let source = RandomSource::new(BenchModel::Sd15, seed);
            let weights = source
                .weights(Component::Unet, DType::F32, &Device::Cpu)
                .unwrap();
            let tensor = weights.build(|vb| vb.get((3, 4), name)).unwrap();
            tensor.flatten_all().unwrap().to_vec1().unwrap()
        };
        assert_eq!(draw(1, "conv.weight"), draw(1, "conv.weight"));
        assert_ne!(draw(1, "conv.weight"), draw(2, "conv.weight"));
        assert_ne!(draw(1, "conv.weight"), draw(1, "proj.weight"));
        assert!(draw(1, "conv.weight").iter().all(|v| v.abs() <= 0.5));
    }
}
