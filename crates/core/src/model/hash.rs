//! The short hash that names a model's weights in PNG metadata, as
//! AUTOMATIC1111's `Model hash` does.
//!
//! AUTOMATIC1111 hashes its one checkpoint file; a diffusers folder has one
//! file per component, and the UNet's is the one that tells fine-tunes of the
//! same base apart, so the hash is the SHA-256 of the UNet's weights file (of
//! the list of its shards' hashes when it is sharded), cut to 10 hex digits.
//! A file in the Hugging Face cache is a link to a blob named by its SHA-256,
//! so a hub model's hash costs nothing; a local folder's file is read once.

use std::fs::File;
use std::io::Read;
use std::path::Path;

use sha2::{Digest, Sha256};

use super::files::{Component, ComponentFiles, WeightVariant};
use crate::error::{Error, Result};

/// Hex digits the hash is cut to, as AUTOMATIC1111 shows it.
pub const MODEL_HASH_LEN: usize = 10;

/// The short hash of the UNet weights `folder` loads with `variant`.
pub fn model_hash(folder: &Path, variant: WeightVariant) -> Result<String> {
    let files = ComponentFiles::find(folder, Component::Unet, variant)?;
    let mut digests = files
        .weights
        .iter()
        .map(|path| file_sha256(path))
        .collect::<Result<Vec<_>>>()?;
    let full = if digests.len() == 1 {
        digests.remove(0)
    } else {
        hex(&Sha256::digest(digests.join("\n").as_bytes()))
    };
    Ok(full[..MODEL_HASH_LEN].to_string())
}

/// The SHA-256 of a file in hex: the blob's name when the file is a link
/// into a Hugging Face cache, else computed from its bytes.
pub fn file_sha256(path: &Path) -> Result<String> {
    if let Some(name) = cached_blob_sha256(path) {
        return Ok(name);
    }
    let io_error = |cause| Error::Io {
        path: path.to_path_buf(),
        cause,
    };
    let mut file = File::open(path).map_err(io_error)?;
    let mut hasher = Sha256::new();
    let mut buffer = vec![0; 1 << 20];
    loop {
        let read = file.read(&mut buffer).map_err(io_error)?;
        if read == 0 {
            break;
        }
        hasher.update(&buffer[..read]);
    }
    Ok(hex(&hasher.finalize()))
}

/// The blob name a Hugging Face cache link points to, when it is a SHA-256
/// (the cache names a large (LFS) file's blob by its SHA-256, a small file's
/// by its git SHA-1, which is shorter and not taken).
fn cached_blob_sha256(path: &Path) -> Option<String> {
    if !path.symlink_metadata().ok()?.file_type().is_symlink() {
        return None;
    }
    let target = path.canonicalize().ok()?;
    let in_blobs = target.parent()?.file_name()? == "blobs";
    let name = target.file_name()?.to_str()?;
    let is_sha256 =
        name.len() == 64 && name.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'));
    (in_blobs && is_sha256).then(|| name.to_string())
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn folder_with_unet(name: &str, files: &[(&str, &[u8])]) -> std::path::PathBuf {
        let root = std::env::temp_dir().join(format!("sd-core-hash-{name}-{}", std::process::id()));
        let unet = root.join("unet");
        std::fs::create_dir_all(&unet).unwrap();
        std::fs::write(unet.join("config.json"), "{}").unwrap();
        for (file, bytes) in files {
            std::fs::write(unet.join(file), bytes).unwrap();
        }
        root
    }

    #[test]
    fn a_local_file_is_hashed_from_its_bytes() {
        let root = folder_with_unet("local", &[("diffusion_pytorch_model.safetensors", b"abc")]);
        // sha256("abc") = ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad
        assert_eq!(
            model_hash(&root, WeightVariant::Full).unwrap(),
            "ba7816bf8f"
        );
        std::fs::remove_dir_all(root).unwrap();
    }

    #[cfg(unix)]
    #[test]
    fn a_cached_blob_is_named_by_its_hash() {
        let root = folder_with_unet("blob", &[]);
        let blobs = root.join("blobs");
        std::fs::create_dir_all(&blobs).unwrap();
        let name = "0123456789abcdef".repeat(4);
        std::fs::write(blobs.join(&name), b"not what the name says").unwrap();
        std::os::unix::fs::symlink(
            blobs.join(&name),
            root.join("unet/diffusion_pytorch_model.safetensors"),
        )
        .unwrap();
        assert_eq!(
            model_hash(&root, WeightVariant::Full).unwrap(),
            "0123456789"
        );
        std::fs::remove_dir_all(root).unwrap();
    }
}
