//! The LoRA directory (`--lora-dir`) and the engine's cache of parsed adapters.
//!
//! A job names an adapter by its path inside the directory. [`LoraDir::resolve`]
//! accepts only plain relative names (no `..`, `.`, leading `/` or `\`), and
//! checks where the name leads once every symlink is followed before anything
//! is opened: a name that leads outside the directory, or to something other
//! than a file, is refused, and the worker never opens it. [`LoraCache`]
//! keeps recently used adapters parsed, up to a byte budget.

use std::collections::VecDeque;
use std::path::{Component, Path, PathBuf};
use std::sync::Arc;
use std::time::SystemTime;

use sd_contract::{LoraDirectory, LoraInfo};
use sd_core::lora::{self, LoraAdapter};

/// The file extension of LoRA files.
const EXTENSION: &str = ".safetensors";
/// How deep [`LoraDir::list`] descends into folders.
const MAX_DEPTH: usize = 8;

/// The directory jobs' LoRAs are taken from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LoraDir {
    /// The directory with every symlink resolved.
    root: PathBuf,
    /// The directory as the worker was started with it.
    shown: String,
}

impl LoraDir {
    /// Opens `dir`, which must be a readable directory.
    pub fn open(dir: &Path) -> Result<Self, String> {
        let root = std::fs::canonicalize(dir).map_err(|e| format!("{}: {e}", dir.display()))?;
        if !root.is_dir() {
            return Err(format!("{} is not a directory", dir.display()));
        }
        Ok(Self {
            root,
            shown: dir.display().to_string(),
        })
    }

    /// The file a job's LoRA name stands for: `name` or `name.safetensors`
    /// inside the directory. The message of an error says why the name is refused.
    pub fn resolve(&self, name: &str) -> Result<PathBuf, String> {
        if name.trim().is_empty() {
            return Err("must name a LoRA in the LoRA directory".into());
        }
        let relative = Path::new(name);
        if relative.is_absolute() || name.starts_with(['/', '\\']) {
            return Err("must be a name inside the LoRA directory, not an absolute path".into());
        }
        let plain = relative
            .components()
            .all(|c| matches!(c, Component::Normal(_)));
        if !plain || name.contains(['\\', '\0']) {
            return Err(
                "must be a name inside the LoRA directory, without `..`, `.` or `\\`".into(),
            );
        }
        let file = if name.ends_with(EXTENSION) {
            self.root.join(name)
        } else {
            self.root.join(format!("{name}{EXTENSION}"))
        };
        let unknown =
            || format!("no LoRA named {name:?} in the LoRA directory (GET /v1/loras lists them)");
        // Resolving symlinks and reading metadata open nothing.
        let target = std::fs::canonicalize(&file).map_err(|_| unknown())?;
        if !target.starts_with(&self.root) {
            return Err(format!("{name:?} leads outside the LoRA directory"));
        }
        if !std::fs::metadata(&target).is_ok_and(|m| m.is_file()) {
            return Err(unknown());
        }
        Ok(target)
    }

    /// Every `.safetensors` file in the directory and its folders, by name,
    /// with its layout and targets read from its header. Symlinks that lead
    /// outside the directory are left out.
    pub fn list(&self) -> Vec<LoraInfo> {
        let mut found = Vec::new();
        self.walk(&self.root, 0, true, &mut found);
        found.sort_by(|a, b| a.name.cmp(&b.name));
        found
    }

    /// The directory and how many files it holds (no header is read), for `GET /v1/info`.
    pub fn summary(&self) -> LoraDirectory {
        let mut found = Vec::new();
        self.walk(&self.root, 0, false, &mut found);
        LoraDirectory {
            directory: self.shown.clone(),
            count: found.len(),
        }
    }

    /// Adds the LoRA files under `dir` to `found`, reading their headers when `inspect`.
    fn walk(&self, dir: &Path, depth: usize, inspect: bool, found: &mut Vec<LoraInfo>) {
        let Ok(entries) = std::fs::read_dir(dir) else {
            return;
        };
        for entry in entries.flatten() {
            let path = entry.path();
            let Ok(target) = std::fs::canonicalize(&path) else {
                continue;
            };
            if !target.starts_with(&self.root) {
                continue;
            }
            let Ok(meta) = std::fs::metadata(&target) else {
                continue;
            };
            if meta.is_dir() {
                if depth < MAX_DEPTH && target != self.root {
                    self.walk(&path, depth + 1, inspect, found);
                }
                continue;
            }
            let Some(name) = path
                .strip_prefix(&self.root)
                .ok()
                .and_then(Path::to_str)
                .and_then(|n| n.strip_suffix(EXTENSION))
            else {
                continue;
            };
            if !meta.is_file() {
                continue;
            }
            let (format, targets) = match inspect.then(|| lora::inspect(&target)) {
                Some(Ok((format, components))) => (
                    Some(format.as_str().to_string()),
                    components.iter().map(|c| c.folder().to_string()).collect(),
                ),
                _ => (None, Vec::new()),
            };
            found.push(LoraInfo {
                name: name.to_string(),
                size_bytes: meta.len(),
                format,
                targets,
            });
        }
    }
}

/// Parsed adapters, most recently used last, up to a byte budget (the
/// newest one is kept even when larger). A file changed on disk since it
/// was parsed is read again.
#[derive(Debug)]
pub struct LoraCache {
    max_bytes: usize,
    entries: VecDeque<(CacheKey, Arc<LoraAdapter>)>,
}

/// A file as it was when parsed.
#[derive(Debug, Clone, PartialEq, Eq)]
struct CacheKey {
    path: PathBuf,
    modified: Option<SystemTime>,
    len: u64,
}

impl LoraCache {
    /// An empty cache holding at most `max_bytes` of adapters.
    pub fn new(max_bytes: usize) -> Self {
        Self {
            max_bytes,
            entries: VecDeque::new(),
        }
    }

    /// The adapter in the file at `path`, parsed now or earlier.
    pub fn get(&mut self, path: &Path) -> sd_core::Result<Arc<LoraAdapter>> {
        let meta = std::fs::metadata(path).map_err(|cause| sd_core::Error::Io {
            path: path.to_path_buf(),
            cause,
        })?;
        let key = CacheKey {
            path: path.to_path_buf(),
            modified: meta.modified().ok(),
            len: meta.len(),
        };
        if let Some(at) = self.entries.iter().position(|(k, _)| *k == key) {
            let entry = self
                .entries
                .remove(at)
                .expect("the position is in the queue");
            let adapter = entry.1.clone();
            self.entries.push_back(entry);
            return Ok(adapter);
        }
        self.entries.retain(|(k, _)| k.path != key.path);
        let adapter = Arc::new(LoraAdapter::read(path)?);
        self.entries.push_back((key, adapter.clone()));
        while self.entries.len() > 1 && self.bytes() > self.max_bytes {
            self.entries.pop_front();
        }
        Ok(adapter)
    }

    /// The bytes the cached adapters take.
    pub fn bytes(&self) -> usize {
        self.entries.iter().map(|(_, a)| a.bytes()).sum()
    }

    /// How many adapters it holds.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// Whether it holds none.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn temp(tag: &str) -> PathBuf {
        let dir =
            std::env::temp_dir().join(format!("sd-worker-loras-{tag}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        dir
    }

    #[test]
    fn names_resolve_only_inside_the_directory() {
        let base = temp("resolve");
        let dir = base.join("loras");
        std::fs::create_dir_all(dir.join("styles")).unwrap();
        std::fs::write(dir.join("a.safetensors"), b"x").unwrap();
        std::fs::write(dir.join("styles/b.safetensors"), b"x").unwrap();
        std::fs::write(base.join("outside.safetensors"), b"x").unwrap();
        std::os::unix::fs::symlink(
            base.join("outside.safetensors"),
            dir.join("escape.safetensors"),
        )
        .unwrap();
        std::os::unix::fs::symlink(dir.join("a.safetensors"), dir.join("alias.safetensors"))
            .unwrap();
        let loras = LoraDir::open(&dir).unwrap();
        let root = std::fs::canonicalize(&dir).unwrap();
        assert_eq!(loras.resolve("a").unwrap(), root.join("a.safetensors"));
        assert_eq!(
            loras.resolve("a.safetensors").unwrap(),
            root.join("a.safetensors")
        );
        assert_eq!(
            loras.resolve("styles/b").unwrap(),
            root.join("styles/b.safetensors")
        );
        assert_eq!(loras.resolve("alias").unwrap(), root.join("a.safetensors"));
        for (name, needle) in [
            ("", "must name"),
            ("../outside", "without `..`"),
            ("styles/../a", "without `..`"),
            ("./a", "without `..`"),
            ("/etc/passwd", "absolute"),
            ("\\a", "absolute"),
            ("escape", "outside the LoRA directory"),
            ("missing", "no LoRA named"),
            ("styles", "no LoRA named"),
        ] {
            let err = loras.resolve(name).unwrap_err();
            assert!(err.contains(needle), "{name}: {err}");
        }
        let names: Vec<String> = loras.list().into_iter().map(|l| l.name).collect();
        assert_eq!(names, ["a", "alias", "styles/b"]);
        std::fs::remove_dir_all(base).unwrap();
    }
}
