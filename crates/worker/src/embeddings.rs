//! The textual-inversion embeddings directory (`--embeddings-dir`).
//!
//! Its `.safetensors` files are read once, at startup (embeddings are a few
//! kilobytes each); pickle files and files in no known layout are listed as
//! skipped with the reason. The engine hands the set to the model when it
//! loads, and records the embeddings the model cannot use (another family's
//! widths), which are then listed as skipped too.

use std::path::Path;
use std::sync::{Arc, Mutex};

use sd_contract::{EmbeddingDirectory, EmbeddingInfo, EmbeddingList, SkippedEmbeddingInfo};
use sd_core::embeddings::{EmbeddingSet, SkippedEmbedding};

/// The embeddings prompts may name.
#[derive(Debug, Clone)]
pub struct EmbeddingsDir {
    /// The directory as the worker was started with it.
    shown: String,
    set: Arc<EmbeddingSet>,
    /// Files that could not be read.
    unreadable: Vec<SkippedEmbedding>,
    /// Embeddings the loaded model cannot use, once it is loaded.
    unfit: Arc<Mutex<Vec<SkippedEmbedding>>>,
}

impl PartialEq for EmbeddingsDir {
    fn eq(&self, other: &Self) -> bool {
        self.shown == other.shown && self.names() == other.names()
    }
}

impl EmbeddingsDir {
    /// Reads the embeddings in `dir`, which must be a readable directory.
    pub fn open(dir: &Path) -> Result<Self, String> {
        if !std::fs::metadata(dir).is_ok_and(|m| m.is_dir()) {
            return Err(format!("{} is not a directory", dir.display()));
        }
        let (set, unreadable) = EmbeddingSet::read_dir(dir).map_err(|e| e.to_string())?;
        for skipped in &unreadable {
            tracing::warn!(embedding = %skipped.name, reason = %skipped.reason, "embedding skipped");
        }
        tracing::info!(dir = %dir.display(), embeddings = set.len(), "embeddings read");
        Ok(Self {
            shown: dir.display().to_string(),
            set: Arc::new(set),
            unreadable,
            unfit: Arc::default(),
        })
    }

    /// Every embedding read, for the model to take the ones it can use.
    pub fn set(&self) -> &EmbeddingSet {
        &self.set
    }

    /// Records the embeddings the loaded model cannot use.
    pub fn record_unfit(&self, unfit: Vec<SkippedEmbedding>) {
        for skipped in &unfit {
            tracing::warn!(embedding = %skipped.name, reason = %skipped.reason, "embedding skipped");
        }
        *self.unfit.lock().unwrap_or_else(|e| e.into_inner()) = unfit;
    }

    fn unfit(&self) -> Vec<SkippedEmbedding> {
        self.unfit.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }

    /// The names of the embeddings prompts may use, sorted.
    pub fn names(&self) -> Vec<String> {
        let unfit = self.unfit();
        let mut names: Vec<String> = self
            .set
            .iter()
            .map(|e| e.name().to_string())
            .filter(|name| !unfit.iter().any(|u| &u.name == name))
            .collect();
        names.sort();
        names
    }

    /// The directory and the names, for `GET /v1/info`.
    pub fn summary(&self) -> EmbeddingDirectory {
        EmbeddingDirectory {
            directory: self.shown.clone(),
            names: self.names(),
        }
    }

    /// `GET /v1/embeddings`: the usable embeddings and the skipped files.
    pub fn list(&self) -> EmbeddingList {
        let unfit = self.unfit();
        let mut embeddings: Vec<EmbeddingInfo> = self
            .set
            .iter()
            .filter(|e| !unfit.iter().any(|u| u.name == e.name()))
            .map(|e| EmbeddingInfo {
                name: e.name().to_string(),
                vectors: e.vectors(),
                format: e.format().as_str().to_string(),
                widths: e.widths(),
            })
            .collect();
        embeddings.sort_by(|a, b| a.name.cmp(&b.name));
        let mut skipped: Vec<SkippedEmbeddingInfo> = self
            .unreadable
            .iter()
            .chain(&unfit)
            .map(|s| SkippedEmbeddingInfo {
                name: s.name.clone(),
                reason: s.reason.clone(),
            })
            .collect();
        skipped.sort_by(|a, b| a.name.cmp(&b.name));
        EmbeddingList {
            embeddings,
            skipped,
        }
    }
}
