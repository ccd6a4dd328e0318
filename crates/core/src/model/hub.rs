//! Where a model comes from: a local folder or a Hugging Face Hub repository.
//!
//! A repo id (`owner/name`) is resolved through the standard Hugging Face cache
//! (`$HF_HOME/hub`, else `~/.cache/huggingface/hub`): when every file the
//! pipeline needs is already there, nothing touches the network; otherwise the
//! missing files are downloaded with `hf-hub`, and only those the pipeline
//! reads (configs, tokenizer, one precision of the safetensors weights).
//! `HF_HUB_OFFLINE=1` forbids the download step.

use std::path::{Path, PathBuf};

use hf_hub::api::sync::ApiBuilder;
use hf_hub::{Cache, Repo, RepoType};

use super::files::{
    component_weight_candidates, read_json, shard_names, tokenizer_files, Component, ModelIndex,
    WeightVariant, COMPONENT_CONFIG, MODEL_INDEX, SCHEDULER_CONFIG,
};
use crate::error::{Error, Result};

/// How to resolve a Hugging Face repo id.
#[derive(Debug, Clone)]
pub struct HubOptions {
    /// The cache folder (the `hub` folder itself).
    pub cache_dir: PathBuf,
    /// The branch, tag or commit to use.
    pub revision: String,
    /// Which weight precision to fetch when the repository has both.
    pub variant: WeightVariant,
    /// Never download; use the cache or fail.
    pub offline: bool,
}

impl HubOptions {
    /// Options from the environment: `HF_HOME` for the cache and `HF_HUB_OFFLINE` for offline mode.
    pub fn from_env(variant: WeightVariant) -> Self {
        let offline = std::env::var("HF_HUB_OFFLINE")
            .map(|v| matches!(v.trim(), "1" | "true" | "TRUE" | "yes" | "ON" | "on"))
            .unwrap_or(false);
        Self {
            cache_dir: Cache::from_env().path().clone(),
            revision: "main".to_string(),
            variant,
            offline,
        }
    }
}

/// Resolves a model reference to a local diffusers folder, using the environment's hub settings.
///
/// `spec` is either a folder on disk or a Hugging Face repo id such as
/// `stable-diffusion-v1-5/stable-diffusion-v1-5`.
pub fn resolve_model(spec: &str, variant: WeightVariant) -> Result<PathBuf> {
    resolve_model_with(spec, &HubOptions::from_env(variant))
}

/// The name a model reference is shown by in PNG metadata: a folder's last
/// component (never its absolute path), or the repo id.
pub fn model_name(spec: &str) -> String {
    let path = Path::new(spec);
    if path.is_file() {
        if let Some(stem) = path.file_stem() {
            return stem.to_string_lossy().into_owned();
        }
    }
    if path.is_dir() || !is_repo_id(spec) {
        let trimmed = spec.trim_end_matches(['/', '\\']);
        if let Some(name) = Path::new(trimmed).file_name() {
            return name.to_string_lossy().into_owned();
        }
    }
    spec.to_string()
}

/// Resolves a model reference to a local diffusers folder with explicit hub options.
pub fn resolve_model_with(spec: &str, options: &HubOptions) -> Result<PathBuf> {
    resolve_with(spec, options, &|available, fetch| {
        plan_and_fetch(options.variant, Needed::Everything, available, fetch)
    })
}

/// Resolves `--config`'s reference to a diffusers folder holding at least the
/// configs and tokenizers (diffusers' `config=`): a repo's weights are not fetched.
pub fn resolve_config(spec: &str) -> Result<PathBuf> {
    let options = HubOptions::from_env(WeightVariant::Full);
    resolve_with(spec, &options, &|available, fetch| {
        plan_and_fetch(options.variant, Needed::ConfigsOnly, available, fetch)
    })
}

/// Resolves a one-component reference (a VAE such as
/// `madebyollin/sdxl-vae-fp16-fix`, a tiny autoencoder such as
/// `madebyollin/taesd`) to a folder holding its `config.json` and weights at
/// its top: a folder as is, a repo id through the cache, as [`resolve_model`].
pub fn resolve_component(spec: &str, variant: WeightVariant) -> Result<PathBuf> {
    let options = HubOptions::from_env(variant);
    resolve_with(spec, &options, &|available, fetch| {
        let config = fetch(COMPONENT_CONFIG)?;
        let candidates = component_weight_candidates(variant);
        let weights = candidates
            .iter()
            .find(|name| available(name))
            .ok_or_else(|| Error::MissingFile(PathBuf::from(candidates[0])))?;
        fetch(weights)?;
        config
            .parent()
            .map(Path::to_path_buf)
            .ok_or_else(|| Error::invalid_file(&config, "has no parent folder"))
    })
}

/// Chooses among the files `available` (first argument), fetches them with
/// the second and returns the folder they landed in.
type FetchPlan<'a> =
    dyn Fn(&dyn Fn(&str) -> bool, &dyn Fn(&str) -> Result<PathBuf>) -> Result<PathBuf> + 'a;

/// A folder on disk as it is; a repo id through the cache, then the hub,
/// `plan` choosing and fetching its files and returning their folder.
fn resolve_with(spec: &str, options: &HubOptions, plan: &FetchPlan) -> Result<PathBuf> {
    let path = Path::new(spec);
    if path.is_dir() {
        return Ok(path.to_path_buf());
    }
    if !is_repo_id(spec) {
        return Err(Error::MissingFile(path.to_path_buf()));
    }
    let repo = Repo::with_revision(spec.to_string(), RepoType::Model, options.revision.clone());
    let cache = Cache::new(options.cache_dir.clone()).repo(repo.clone());
    match plan(&|name: &str| cache.get(name).is_some(), &|name| {
        cache
            .get(name)
            .ok_or_else(|| Error::MissingFile(PathBuf::from(name)))
    }) {
        Ok(root) => {
            tracing::info!(repo = spec, path = %root.display(), "using cached files");
            return Ok(root);
        }
        Err(err) if options.offline => {
            return Err(Error::Hub(format!(
                "{spec} is not complete in the cache {} and HF_HUB_OFFLINE is set ({err})",
                options.cache_dir.display()
            )))
        }
        Err(_) => {}
    }
    download(spec, repo, options, plan)
}

/// Downloads what `plan` picks from the hub into the cache.
fn download(spec: &str, repo: Repo, options: &HubOptions, plan: &FetchPlan) -> Result<PathBuf> {
    let hub_error = |e: hf_hub::api::sync::ApiError| Error::Hub(format!("{spec}: {e}"));
    let api = ApiBuilder::from_cache(Cache::new(options.cache_dir.clone())).with_progress(true);
    let api = match std::env::var("HF_ENDPOINT") {
        Ok(endpoint) => api.with_endpoint(endpoint),
        Err(_) => api,
    }
    .build()
    .map_err(hub_error)?;
    let remote = api.repo(repo);
    let listing = remote.info().map_err(hub_error)?;
    let names: Vec<String> = listing.siblings.into_iter().map(|s| s.rfilename).collect();
    tracing::info!(repo = spec, "downloading model files");
    plan(&|name: &str| names.iter().any(|n| n == name), &|name| {
        remote.get(name).map_err(hub_error)
    })
}

/// Which of a pipeline's files to fetch.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Needed {
    /// Configs, tokenizers and weights.
    Everything,
    /// Configs and tokenizers only (a single file brings the weights).
    ConfigsOnly,
}

/// Chooses the files the pipeline needs among those `available`, fetches each and
/// returns the folder they landed in.
fn plan_and_fetch(
    variant: WeightVariant,
    needed: Needed,
    available: &dyn Fn(&str) -> bool,
    fetch: &dyn Fn(&str) -> Result<PathBuf>,
) -> Result<PathBuf> {
    let index_path = fetch(MODEL_INDEX)?;
    let root = index_path
        .parent()
        .ok_or_else(|| Error::invalid_file(&index_path, "has no parent folder"))?
        .to_path_buf();
    let index: ModelIndex = read_json(&index_path)?;
    for name in needed_files(&index, variant, needed, available)? {
        let path = fetch(&name)?;
        if name.ends_with(".json") && name.contains(".safetensors.index") {
            let dir = name.rsplit_once('/').map_or("", |(dir, _)| dir);
            for shard in shard_names(&path)? {
                fetch(&format!("{dir}/{shard}"))?;
            }
        }
    }
    Ok(root)
}

/// The files (relative to the model folder) that loading the pipeline of `index` reads.
pub fn needed_files(
    index: &ModelIndex,
    variant: WeightVariant,
    needed: Needed,
    available: &dyn Fn(&str) -> bool,
) -> Result<Vec<String>> {
    let mut files = vec![SCHEDULER_CONFIG.to_string()];
    let components = [
        ("text_encoder", Component::TextEncoder),
        ("text_encoder_2", Component::TextEncoder2),
        ("unet", Component::Unet),
        ("vae", Component::Vae),
    ];
    for (name, component) in components {
        if !index.has(name) {
            continue;
        }
        files.push(component.config_file());
        if needed == Needed::ConfigsOnly {
            continue;
        }
        let candidates = component.weight_candidates(variant);
        let weights = candidates
            .iter()
            .find(|c| available(c))
            .ok_or_else(|| Error::MissingFile(PathBuf::from(&candidates[0])))?;
        files.push(weights.clone());
    }
    for name in ["tokenizer", "tokenizer_2"] {
        if !index.has(name) {
            continue;
        }
        let [vocab, merges, config, special, json] = tokenizer_files(name);
        if available(&json) {
            files.push(json);
        } else {
            files.extend([vocab, merges]);
        }
        files.extend([config, special].into_iter().filter(|f| available(f)));
    }
    Ok(files)
}

/// Whether `spec` looks like `owner/name` rather than a path.
fn is_repo_id(spec: &str) -> bool {
    let valid = |part: &str| {
        !part.is_empty()
            && !part.starts_with('.')
            && part
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
    };
    match spec.split_once('/') {
        Some((owner, name)) => valid(owner) && valid(name),
        None => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_model_is_named_by_its_repo_id_or_its_folder_name() {
        assert_eq!(model_name("stabilityai/sd-turbo"), "stabilityai/sd-turbo");
        let folder = std::env::temp_dir();
        let name = folder.file_name().unwrap().to_str().unwrap().to_string();
        assert_eq!(model_name(folder.to_str().unwrap()), name);
        assert_eq!(model_name(&format!("{}/", folder.display())), name);
        assert_eq!(model_name("/srv/models/missing-model"), "missing-model");
    }

    #[test]
    fn repo_ids_and_paths_are_told_apart() {
        assert!(is_repo_id("stabilityai/sdxl-turbo"));
        assert!(is_repo_id("stable-diffusion-v1-5/stable-diffusion-v1-5"));
        assert!(!is_repo_id("./models/sd15"));
        assert!(!is_repo_id("/models/sd15"));
        assert!(!is_repo_id("sd15"));
        assert!(!is_repo_id("a/b/c"));
    }
}
