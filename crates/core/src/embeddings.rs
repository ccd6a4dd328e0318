//! Textual-inversion embeddings: learned token vectors a prompt calls up by name.
//!
//! A file holds one or several vectors per text encoder. An embedding's name is
//! its file's stem, and a prompt that contains that name (positive or
//! negative) gets its vectors in place of the name's tokens, as AUTOMATIC1111
//! does: [`crate::prompt`] finds the name's token sequence in the tokenized
//! prompt and puts one placeholder position per vector there, so `n` vectors
//! take `n` of a chunk's 75 positions and carry the weight of the text around
//! them. The text encoder then takes the vectors in place of those positions'
//! token embeddings (position embeddings are added as for any token), which is
//! what diffusers' `load_textual_inversion` gives with the same token.
//!
//! Layouts read (safetensors only: pickle `.pt`/`.bin` files are refused, since
//! unpickling runs any code they carry):
//! - AUTOMATIC1111's: `emb_params` `[n, D]` (SD 1.x/2.x), or `clip_l` `[n, 768]`
//!   and `clip_g` `[n, 1280]` for SDXL;
//! - diffusers': one tensor named by its token (`learned_embeds.safetensors`,
//!   `{"<token>": [D] or [n, D]}`), and `string_to_param.*` of converted A1111 files.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use candle_core::{DType, Device, Tensor};

use crate::error::{Error, Result};
use crate::model::safetensors::SafetensorsReader;

/// The file extension embeddings are read from.
pub const EXTENSION: &str = "safetensors";

/// Extensions of pickle files, refused with a reason.
const PICKLE_EXTENSIONS: [&str; 4] = ["pt", "bin", "ckpt", "pth"];

/// Which layout an embedding file uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EmbeddingFormat {
    /// AUTOMATIC1111's `emb_params` (or a converted `string_to_param.*`).
    A1111,
    /// AUTOMATIC1111's SDXL pair `clip_l` / `clip_g`.
    A1111Sdxl,
    /// diffusers' `{token: vectors}`.
    Diffusers,
}

impl EmbeddingFormat {
    /// The layout's short name (`a1111`, `a1111_sdxl`, `diffusers`).
    pub fn as_str(self) -> &'static str {
        match self {
            EmbeddingFormat::A1111 => "a1111",
            EmbeddingFormat::A1111Sdxl => "a1111_sdxl",
            EmbeddingFormat::Diffusers => "diffusers",
        }
    }
}

/// One textual-inversion embedding: `n` vectors for each text encoder.
#[derive(Debug, Clone)]
pub struct TextualInversion {
    name: String,
    path: PathBuf,
    format: EmbeddingFormat,
    /// `[n, D]` f32 on the CPU, for the (first) text encoder.
    first: Tensor,
    /// `[n, D2]` f32 on the CPU, for SDXL's second encoder.
    second: Option<Tensor>,
}

impl TextualInversion {
    /// Reads the embedding in the `.safetensors` file at `path`, named by the
    /// file's stem. A pickle file, a file with no tensor of a known layout, or
    /// vectors of the wrong rank are an [`Error::Embedding`] saying which.
    pub fn read(path: &Path) -> Result<Self> {
        let name = path
            .file_stem()
            .and_then(|s| s.to_str())
            .filter(|s| !s.trim().is_empty())
            .ok_or_else(|| embedding_error(path, "has no usable file name".into()))?
            .to_string();
        Self::read_named(path, name)
    }

    /// [`TextualInversion::read`] under another name.
    pub fn read_named(path: &Path, name: String) -> Result<Self> {
        if let Some(ext) = path.extension().and_then(|e| e.to_str()) {
            if PICKLE_EXTENSIONS.contains(&ext.to_ascii_lowercase().as_str()) {
                return Err(embedding_error(path, pickle_refusal()));
            }
        }
        let reader = SafetensorsReader::open(&[path.to_path_buf()]).map_err(|e| match e {
            Error::InvalidFile { message, .. } => embedding_error(path, message),
            other => other,
        })?;
        let mut names: Vec<&str> = reader.names().collect();
        names.sort_unstable();
        let vectors = |key: &str| -> Result<Tensor> {
            let tensor = reader
                .read(key, &Device::Cpu)
                .and_then(|t| t.to_dtype(DType::F32))
                .map_err(|e| embedding_error(path, format!("tensor {key}: {e}")))?;
            match tensor.rank() {
                1 => Ok(tensor.unsqueeze(0)?),
                2 if tensor.dim(0)? > 0 => Ok(tensor),
                _ => Err(embedding_error(
                    path,
                    format!(
                        "tensor {key} has shape {:?}; vectors are [D] or [n, D]",
                        tensor.dims()
                    ),
                )),
            }
        };
        let (format, first, second) = if names.contains(&"clip_l") || names.contains(&"clip_g") {
            if !(names.contains(&"clip_l") && names.contains(&"clip_g")) {
                return Err(embedding_error(
                    path,
                    "an SDXL embedding needs both clip_l and clip_g".into(),
                ));
            }
            let (l, g) = (vectors("clip_l")?, vectors("clip_g")?);
            if l.dim(0)? != g.dim(0)? {
                return Err(embedding_error(
                    path,
                    format!(
                        "clip_l has {} vectors and clip_g {}; they must agree",
                        l.dim(0)?,
                        g.dim(0)?
                    ),
                ));
            }
            (EmbeddingFormat::A1111Sdxl, l, Some(g))
        } else if names.contains(&"emb_params") {
            (EmbeddingFormat::A1111, vectors("emb_params")?, None)
        } else {
            let converted: Vec<&str> = names
                .iter()
                .copied()
                .filter(|n| n.starts_with("string_to_param."))
                .collect();
            match (converted.as_slice(), names.as_slice()) {
                ([key], _) => (EmbeddingFormat::A1111, vectors(key)?, None),
                (_, [key]) => (EmbeddingFormat::Diffusers, vectors(key)?, None),
                _ => {
                    return Err(embedding_error(
                        path,
                        format!(
                            "is not a textual-inversion embedding (expected emb_params, clip_l and \
                             clip_g, or one tensor named by its token; found {})",
                            if names.is_empty() {
                                "no tensor".to_string()
                            } else {
                                names.join(", ")
                            }
                        ),
                    ))
                }
            }
        };
        Ok(Self {
            name,
            path: path.to_path_buf(),
            format,
            first,
            second,
        })
    }

    /// The name a prompt calls it by: its file's stem.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The file it was read from.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The file's layout.
    pub fn format(&self) -> EmbeddingFormat {
        self.format
    }

    /// How many token positions it takes.
    pub fn vectors(&self) -> usize {
        self.first.dim(0).unwrap_or(0)
    }

    /// The width of its vectors for each text encoder (one entry, or SDXL's two).
    pub fn widths(&self) -> Vec<usize> {
        std::iter::once(&self.first)
            .chain(&self.second)
            .map(|t| t.dim(1).unwrap_or(0))
            .collect()
    }

    /// The vectors `[n, D]` for the text encoder `encoder` (0 or 1), if it has some.
    pub(crate) fn vectors_for(&self, encoder: usize) -> Option<&Tensor> {
        match encoder {
            0 => Some(&self.first),
            1 => self.second.as_ref(),
            _ => None,
        }
    }
}

/// The embeddings a model's prompts may name.
#[derive(Debug, Clone, Default)]
pub struct EmbeddingSet {
    embeddings: Vec<Arc<TextualInversion>>,
}

/// A file of an embeddings directory that was not loaded, and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SkippedEmbedding {
    /// Its name (the file's stem).
    pub name: String,
    /// Why it was skipped.
    pub reason: String,
}

impl EmbeddingSet {
    /// A set of the given embeddings; the later of two with one name is dropped.
    pub fn new(embeddings: impl IntoIterator<Item = TextualInversion>) -> Self {
        let mut set = Self::default();
        for embedding in embeddings {
            if set.get(embedding.name()).is_none() {
                set.embeddings.push(Arc::new(embedding));
            }
        }
        set
    }

    /// Reads every `.safetensors` embedding directly in `dir`, in name order.
    /// Files that cannot be read (pickles included) come back as skipped,
    /// with the reason; other files are ignored. Only an unreadable
    /// directory is an error.
    pub fn read_dir(dir: &Path) -> Result<(Self, Vec<SkippedEmbedding>)> {
        let entries = std::fs::read_dir(dir).map_err(|cause| Error::Io {
            path: dir.to_path_buf(),
            cause,
        })?;
        let mut paths: Vec<PathBuf> = entries
            .flatten()
            .map(|e| e.path())
            .filter(|p| std::fs::metadata(p).is_ok_and(|m| m.is_file()))
            .collect();
        paths.sort();
        let mut loaded = Vec::new();
        let mut skipped = Vec::new();
        for path in paths {
            let Some(ext) = path.extension().and_then(|e| e.to_str()) else {
                continue;
            };
            let ext = ext.to_ascii_lowercase();
            let name = path
                .file_stem()
                .and_then(|s| s.to_str())
                .unwrap_or_default()
                .to_string();
            if PICKLE_EXTENSIONS.contains(&ext.as_str()) {
                skipped.push(SkippedEmbedding {
                    name,
                    reason: pickle_refusal(),
                });
                continue;
            }
            if ext != EXTENSION {
                continue;
            }
            match TextualInversion::read(&path) {
                Ok(embedding) => loaded.push(embedding),
                Err(e) => skipped.push(SkippedEmbedding {
                    reason: match e {
                        Error::Embedding { message, .. } => message,
                        // The directory's own path stays out of listings.
                        other => other
                            .to_string()
                            .replace(&path.display().to_string(), &format!("{name}.{ext}")),
                    },
                    name,
                }),
            }
        }
        Ok((Self::new(loaded), skipped))
    }

    /// The embedding called `name`.
    pub fn get(&self, name: &str) -> Option<&Arc<TextualInversion>> {
        self.embeddings.iter().find(|e| e.name() == name)
    }

    /// Every embedding, in the order they were added.
    pub fn iter(&self) -> impl Iterator<Item = &Arc<TextualInversion>> {
        self.embeddings.iter()
    }

    /// How many embeddings the set holds.
    pub fn len(&self) -> usize {
        self.embeddings.len()
    }

    /// Whether it holds none.
    pub fn is_empty(&self) -> bool {
        self.embeddings.is_empty()
    }
}

fn embedding_error(path: &Path, message: String) -> Error {
    Error::Embedding {
        path: path.to_path_buf(),
        message,
    }
}

fn pickle_refusal() -> String {
    "is a pickle file, which is refused: unpickling runs any code it carries; convert it to \
     .safetensors (python -c \"import torch, safetensors.torch as s; d = torch.load('IN.pt', \
     weights_only=True); s.save_file({'emb_params': d['string_to_param']['*']}, 'OUT.safetensors')\")"
        .into()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    fn temp(tag: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!("sd-core-emb-{tag}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        dir
    }

    fn write(path: &Path, tensors: &[(&str, Tensor)]) {
        let map: HashMap<String, Tensor> = tensors
            .iter()
            .map(|(k, t)| (k.to_string(), t.clone()))
            .collect();
        candle_core::safetensors::save(&map, path).unwrap();
    }

    fn ones(shape: &[usize]) -> Tensor {
        Tensor::ones(shape, DType::F32, &Device::Cpu).unwrap()
    }

    #[test]
    fn reads_every_layout_and_names_by_the_file_stem() {
        let dir = temp("layouts");
        write(
            &dir.join("a1111.safetensors"),
            &[("emb_params", ones(&[3, 8]))],
        );
        write(
            &dir.join("xl.safetensors"),
            &[("clip_l", ones(&[2, 8])), ("clip_g", ones(&[2, 12]))],
        );
        write(
            &dir.join("learned.safetensors"),
            &[("<cat-toy>", ones(&[8]))],
        );
        write(
            &dir.join("converted.safetensors"),
            &[("string_to_param.*", ones(&[1, 8]))],
        );
        write(
            &dir.join("bad.safetensors"),
            &[("a", ones(&[1])), ("b", ones(&[1]))],
        );
        write(&dir.join("half.safetensors"), &[("clip_l", ones(&[2, 8]))]);
        std::fs::write(dir.join("old.pt"), b"pickle").unwrap();
        std::fs::write(dir.join("notes.txt"), b"text").unwrap();
        let (set, skipped) = EmbeddingSet::read_dir(&dir).unwrap();
        let got: Vec<(&str, &str, usize, Vec<usize>)> = set
            .iter()
            .map(|e| (e.name(), e.format().as_str(), e.vectors(), e.widths()))
            .collect();
        assert_eq!(
            got,
            [
                ("a1111", "a1111", 3, vec![8]),
                ("converted", "a1111", 1, vec![8]),
                ("learned", "diffusers", 1, vec![8]),
                ("xl", "a1111_sdxl", 2, vec![8, 12]),
            ]
        );
        let skipped: Vec<(&str, &str)> = skipped
            .iter()
            .map(|s| (s.name.as_str(), s.reason.as_str()))
            .collect();
        assert_eq!(skipped.len(), 3, "{skipped:?}");
        assert!(skipped[0].0 == "bad" && skipped[0].1.contains("found a, b"));
        assert!(skipped[1].0 == "half" && skipped[1].1.contains("both clip_l and clip_g"));
        assert!(skipped[2].0 == "old" && skipped[2].1.contains("pickle"));
        std::fs::remove_dir_all(dir).unwrap();
    }
}
