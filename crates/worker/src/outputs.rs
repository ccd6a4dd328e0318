//! `--output-dir`: every finished image saved as a PNG (with its A1111
//! `parameters` text chunk, as the engine wrote it) and a JSON file of the
//! job's parameters beside it, in a folder per day (UTC), as AUTOMATIC1111
//! and Fooocus keep theirs.
//!
//! A file is named `HHMMSS-<seed>-<job id>-<index>.png`: the job id is
//! random hex and the index its place in the job, so names cannot collide,
//! and no part comes from the request, so none can leave the folder. Files
//! are created new, never overwritten.

use std::fs::{self, OpenOptions};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::SystemTime;

use sd_contract::JobParams;
use serde::Serialize;

/// The folder finished images are saved in.
#[derive(Debug, Clone)]
pub struct OutputDir {
    root: PathBuf,
}

/// What the JSON file beside each image says.
#[derive(Debug, Serialize)]
struct SavedImage<'a> {
    job_id: &'a str,
    index: u32,
    seed: u64,
    width: u32,
    height: u32,
    params: &'a JobParams,
}

/// One finished image to save.
#[derive(Debug, Clone, Copy)]
pub struct FinishedImage<'a> {
    /// The job that made it.
    pub job_id: &'a str,
    /// Its place in the job, from 0.
    pub index: u32,
    /// The seed that made it.
    pub seed: u64,
    /// Width in pixels.
    pub width: u32,
    /// Height in pixels.
    pub height: u32,
    /// The PNG file.
    pub png: &'a [u8],
    /// The job's parameters.
    pub params: &'a JobParams,
}

impl OutputDir {
    /// Images go under `root`, which [`OutputDir::prepare`] creates.
    pub fn new(root: impl Into<PathBuf>) -> Self {
        Self { root: root.into() }
    }

    /// The folder.
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// Creates the folder if it is missing and checks that files can be
    /// written in it; the error names the folder.
    pub fn prepare(&self) -> std::io::Result<()> {
        let named = |e: std::io::Error| {
            std::io::Error::new(
                e.kind(),
                format!("--output-dir {}: {e}", self.root.display()),
            )
        };
        fs::create_dir_all(&self.root).map_err(named)?;
        let probe = self
            .root
            .join(format!(".sd-worker-probe-{:016x}", rand::random::<u64>()));
        OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(&probe)
            .map_err(named)?;
        fs::remove_file(&probe).map_err(named)
    }

    /// Saves the image and its parameters; returns the PNG's path.
    pub fn save(&self, image: FinishedImage<'_>, now: SystemTime) -> std::io::Result<PathBuf> {
        let stamp = humantime::format_rfc3339_seconds(now).to_string();
        // `2026-12-05T06:20:07Z`: the day names the folder, the time the file.
        let (day, time) = stamp.split_once('T').unwrap_or((stamp.as_str(), "000000"));
        let time: String = time.chars().filter(char::is_ascii_digit).collect();
        let folder = self.root.join(day);
        fs::create_dir_all(&folder)?;
        let stem = format!(
            "{time}-{}-{}-{}",
            image.seed,
            file_safe(image.job_id),
            image.index
        );
        let png_path = folder.join(format!("{stem}.png"));
        write_new(&png_path, image.png)?;
        let json = serde_json::to_vec_pretty(&SavedImage {
            job_id: image.job_id,
            index: image.index,
            seed: image.seed,
            width: image.width,
            height: image.height,
            params: image.params,
        })
        .map_err(std::io::Error::other)?;
        write_new(&folder.join(format!("{stem}.json")), &json)?;
        Ok(png_path)
    }
}

/// The id with anything but ASCII letters, digits and `-` replaced by `_`.
fn file_safe(id: &str) -> String {
    id.chars()
        .map(|c| match c {
            'a'..='z' | 'A'..='Z' | '0'..='9' | '-' => c,
            _ => '_',
        })
        .collect()
}

fn write_new(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    let mut file = OpenOptions::new().write(true).create_new(true).open(path)?;
    file.write_all(bytes)?;
    file.sync_data()
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    /// A fresh empty folder under the system's temporary one.
    fn temp_folder() -> PathBuf {
        let dir =
            std::env::temp_dir().join(format!("sd-worker-outputs-{:016x}", rand::random::<u64>()));
        fs::create_dir_all(&dir).unwrap();
        dir
    }

    fn params() -> JobParams {
        serde_json::from_value(serde_json::json!({
            "prompt": "a lighthouse", "negative_prompt": null, "prompt_syntax": "a1111",
            "clip_skip": 0, "steps": 2, "guidance_scale": 7.5, "width": 64, "height": 64,
            "seed": 7, "num_images": 1, "scheduler": "euler", "strength": null
        }))
        .unwrap()
    }

    #[test]
    fn saves_the_png_and_its_parameters_in_a_folder_per_day() {
        let dir = temp_folder();
        let outputs = OutputDir::new(dir.join("out"));
        outputs.prepare().unwrap();
        let params = params();
        let now = SystemTime::UNIX_EPOCH + Duration::from_secs(1_764_915_607);
        let image = FinishedImage {
            job_id: "job-../../x",
            index: 1,
            seed: 8,
            width: 64,
            height: 64,
            png: b"png bytes",
            params: &params,
        };
        let path = outputs.save(image, now).unwrap();
        let expected = dir.join("out/2025-12-05/062007-8-job-______x-1.png");
        assert_eq!(path, expected);
        assert_eq!(fs::read(&path).unwrap(), b"png bytes");
        let json: serde_json::Value =
            serde_json::from_slice(&fs::read(path.with_extension("json")).unwrap()).unwrap();
        assert_eq!(json["params"]["prompt"], "a lighthouse");
        assert_eq!(json["seed"], 8);
        assert!(
            outputs.save(image, now).is_err(),
            "an existing file is never overwritten"
        );
        fs::remove_dir_all(dir).unwrap();
    }

    #[test]
    fn a_folder_that_cannot_be_made_is_named() {
        let dir = temp_folder();
        let file = dir.join("a-file");
        fs::write(&file, b"").unwrap();
        let error = OutputDir::new(file.join("out")).prepare().unwrap_err();
        assert!(error.to_string().contains("--output-dir"), "{error}");
        assert!(error.to_string().contains("a-file"), "{error}");
        fs::remove_dir_all(dir).unwrap();
    }
}
