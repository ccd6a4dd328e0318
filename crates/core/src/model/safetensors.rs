//! Reading safetensors weights without a memory map.
//!
//! candle's CPU tensors own their buffers, so a memory-mapped load copies every
//! tensor out of the map while the mapped pages also stay resident until the map
//! is dropped: loading briefly needs about twice the weights. [`SafetensorsReader`]
//! reads each tensor with a positioned read straight into the tensor's own buffer,
//! so loading never holds more than the weights themselves.
//!
//! A header is the file's word only: every size and offset it gives is checked
//! against the dtype, the shape and the file's length with checked arithmetic,
//! so a crafted or corrupt file is an error naming it and the tensor, never an
//! overflow, a panic or an allocation the file cannot fill.

use std::collections::HashMap;
use std::fs::File;
use std::io::Read;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use candle_core::{DType, Device, Shape, Tensor};
use candle_nn::var_builder::SimpleBackend;
use serde::Deserialize;

use crate::error::{Error, Result};

/// The tensors of one or more safetensors files, indexed by name, read on demand.
#[derive(Debug)]
pub struct SafetensorsReader {
    tensors: HashMap<String, StoredTensor>,
    /// Tensors in a dtype candle cannot hold, by name: their dtype.
    unreadable: HashMap<String, String>,
    /// The string pairs of the files' `__metadata__` entries.
    metadata: HashMap<String, String>,
}

/// Where one tensor lives in its file.
#[derive(Debug)]
struct StoredTensor {
    file: Arc<File>,
    path: Arc<PathBuf>,
    dtype: DType,
    shape: Vec<usize>,
    start: u64,
    len: usize,
}

/// One tensor's entry in a safetensors header.
#[derive(Deserialize)]
struct HeaderEntry {
    dtype: String,
    shape: Vec<usize>,
    data_offsets: (u64, u64),
}

/// Headers larger than this are not safetensors files we can trust.
const MAX_HEADER_BYTES: u64 = 100 << 20;

impl SafetensorsReader {
    /// Reads the headers of `paths` (the shards of one component).
    pub fn open(paths: &[PathBuf]) -> Result<Self> {
        let mut tensors = HashMap::new();
        let mut unreadable = HashMap::new();
        let mut metadata = HashMap::new();
        for path in paths {
            let shared_path = Arc::new(path.clone());
            let (file, header_len, entries) = read_header(path)?;
            let file_len = file
                .metadata()
                .map_err(|cause| io_error(path, cause))?
                .len();
            let file = Arc::new(file);
            for (name, value) in entries {
                if name == "__metadata__" {
                    if let serde_json::Value::Object(pairs) = value {
                        metadata.extend(pairs.into_iter().filter_map(|(k, v)| match v {
                            serde_json::Value::String(v) => Some((k, v)),
                            _ => None,
                        }));
                    }
                    continue;
                }
                let invalid = |message: String| Error::InvalidFile {
                    path: path.clone(),
                    message: format!("tensor {name}: {message}"),
                };
                let entry: HeaderEntry =
                    serde_json::from_value(value).map_err(|e| invalid(e.to_string()))?;
                let dtype = match entry.dtype.as_str() {
                    "F32" => DType::F32,
                    "F16" => DType::F16,
                    "BF16" => DType::BF16,
                    "F64" => DType::F64,
                    "I64" => DType::I64,
                    "U32" => DType::U32,
                    "U8" => DType::U8,
                    // Checkpoints carry bookkeeping (step counters, masks) in other
                    // dtypes; it is an error only if a model asks for it.
                    other => {
                        unreadable.insert(name.clone(), other.to_string());
                        continue;
                    }
                };
                let (start, len) = locate(&entry, dtype, header_len, file_len).map_err(invalid)?;
                tensors.insert(
                    name.clone(),
                    StoredTensor {
                        file: file.clone(),
                        path: shared_path.clone(),
                        dtype,
                        shape: entry.shape,
                        start,
                        len,
                    },
                );
            }
        }
        Ok(Self {
            tensors,
            unreadable,
            metadata,
        })
    }

    /// The names of every tensor, in no particular order.
    pub fn names(&self) -> impl Iterator<Item = &str> {
        self.tensors.keys().map(String::as_str)
    }

    /// A tensor's shape as stored, if the files have it.
    pub fn shape_of(&self, name: &str) -> Option<&[usize]> {
        self.tensors.get(name).map(|t| t.shape.as_slice())
    }

    /// The string entries of the files' `__metadata__`.
    pub fn metadata(&self) -> &HashMap<String, String> {
        &self.metadata
    }

    /// Reads the tensor `name` in its stored dtype.
    pub fn tensor(&self, name: &str, device: &Device) -> Result<Tensor> {
        self.read(name, device).map_err(Error::from)
    }

    /// Reads one tensor in its stored dtype.
    pub(crate) fn read(&self, name: &str, device: &Device) -> candle_core::Result<Tensor> {
        let Some(t) = self.tensors.get(name) else {
            if let Some(dtype) = self.unreadable.get(name) {
                candle_core::bail!("tensor {name} is stored as {dtype}, which cannot be read");
            }
            return Err(candle_core::Error::CannotFindTensor {
                path: name.to_string(),
            });
        };
        let read = |buf: &mut [u8]| {
            t.file.read_exact_at(buf, t.start).map_err(|e| {
                candle_core::Error::Msg(format!("reading {name} from {}: {e}", t.path.display()))
            })
        };
        if t.dtype == DType::F32 && cfg!(target_endian = "little") {
            let mut data = vec![0f32; t.len / 4];
            // SAFETY: the f32 buffer is viewed as its bytes; any bit pattern is an f32.
            let bytes =
                unsafe { std::slice::from_raw_parts_mut(data.as_mut_ptr().cast::<u8>(), t.len) };
            read(bytes)?;
            return Tensor::from_vec(data, t.shape.as_slice(), device);
        }
        let mut bytes = vec![0u8; t.len];
        read(&mut bytes)?;
        Tensor::from_raw_buffer(&bytes, t.dtype, &t.shape, device)
    }
}

/// Where an entry's bytes lie in a file of `file_len` bytes whose header is
/// `header_len` bytes: their absolute start and length, once the offsets are
/// known to hold exactly the shape's elements of `dtype` and to end inside the
/// file. Every product and sum is checked.
fn locate(
    entry: &HeaderEntry,
    dtype: DType,
    header_len: u64,
    file_len: u64,
) -> std::result::Result<(u64, usize), String> {
    let shape = &entry.shape;
    let (begin, end) = entry.data_offsets;
    let bytes = shape
        .iter()
        .try_fold(dtype.size_in_bytes(), |n, &dim| n.checked_mul(dim))
        .ok_or_else(|| {
            format!(
                "shape {shape:?} of {} is more bytes than this machine can address",
                entry.dtype
            )
        })?;
    let len = end
        .checked_sub(begin)
        .ok_or_else(|| format!("data offsets {begin}..{end} end before they begin"))?;
    if u64::try_from(bytes).ok() != Some(len) {
        return Err(format!(
            "data offsets {begin}..{end} hold {len} bytes, but shape {shape:?} of {} needs {bytes}",
            entry.dtype
        ));
    }
    let data = header_len.checked_add(8);
    let start = data.and_then(|data| data.checked_add(begin));
    match (start, data.and_then(|data| data.checked_add(end))) {
        (Some(start), Some(stop)) if stop <= file_len => Ok((start, bytes)),
        _ => Err(format!(
            "data offsets {begin}..{end} run past the end of the file's {file_len} bytes"
        )),
    }
}

/// Opens a safetensors file and parses its JSON header.
fn read_header(path: &Path) -> Result<(File, u64, HashMap<String, serde_json::Value>)> {
    let mut file = File::open(path).map_err(|cause| io_error(path, cause))?;
    let mut len = [0u8; 8];
    file.read_exact(&mut len)
        .map_err(|cause| io_error(path, cause))?;
    let header_len = u64::from_le_bytes(len);
    if header_len > MAX_HEADER_BYTES {
        return Err(Error::InvalidFile {
            path: path.to_path_buf(),
            message: format!("not a safetensors file (header of {header_len} bytes)"),
        });
    }
    let mut header = vec![0u8; header_len as usize];
    file.read_exact(&mut header)
        .map_err(|cause| io_error(path, cause))?;
    let entries = serde_json::from_slice(&header).map_err(|e| Error::InvalidFile {
        path: path.to_path_buf(),
        message: format!("not a safetensors header: {e}"),
    })?;
    Ok((file, header_len, entries))
}

fn io_error(path: &Path, cause: std::io::Error) -> Error {
    Error::Io {
        path: path.to_path_buf(),
        cause,
    }
}

impl SimpleBackend for SafetensorsReader {
    fn get(
        &self,
        shape: Shape,
        name: &str,
        _hints: candle_nn::Init,
        dtype: DType,
        device: &Device,
    ) -> candle_core::Result<Tensor> {
        let tensor = self.read(name, device)?;
        if tensor.shape() != &shape {
            return Err(candle_core::Error::UnexpectedShape {
                msg: format!("shape mismatch for {name}"),
                expected: shape,
                got: tensor.shape().clone(),
            });
        }
        tensor.to_dtype(dtype)
    }

    fn get_unchecked(
        &self,
        name: &str,
        dtype: DType,
        device: &Device,
    ) -> candle_core::Result<Tensor> {
        self.read(name, device)?.to_dtype(dtype)
    }

    fn contains_tensor(&self, name: &str) -> bool {
        self.tensors.contains_key(name)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn write(dir: &Path, name: &str, bytes: &[u8]) -> PathBuf {
        let path = dir.join(name);
        std::fs::write(&path, bytes).unwrap();
        path
    }

    fn temp_dir(tag: &str) -> PathBuf {
        let dir =
            std::env::temp_dir().join(format!("sd-core-weights-{tag}-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        dir
    }

    #[test]
    fn reads_what_safetensors_wrote_in_any_stored_dtype() {
        let dir = temp_dir("roundtrip");
        let dev = Device::Cpu;
        let a = Tensor::arange(0f32, 6.0, &dev)
            .unwrap()
            .reshape((2, 3))
            .unwrap();
        let b = a.to_dtype(DType::F16).unwrap();
        let path = dir.join("w.safetensors");
        candle_core::safetensors::save(
            &HashMap::from([("a".to_string(), a.clone()), ("b".to_string(), b)]),
            &path,
        )
        .unwrap();
        let reader = SafetensorsReader::open(&[path]).unwrap();
        for name in ["a", "b"] {
            let got = reader
                .get(
                    (2, 3).into(),
                    name,
                    candle_nn::Init::Const(0.),
                    DType::F32,
                    &dev,
                )
                .unwrap();
            assert_eq!(got.to_vec2::<f32>().unwrap(), a.to_vec2::<f32>().unwrap());
        }
        let wrong = reader
            .get(
                (3, 2).into(),
                "a",
                candle_nn::Init::Const(0.),
                DType::F32,
                &dev,
            )
            .unwrap_err()
            .to_string();
        assert!(wrong.contains("shape mismatch for a"), "{wrong}");
        let missing = reader.read("c", &dev).unwrap_err().to_string();
        assert!(missing.contains("cannot find tensor c"), "{missing}");
        std::fs::remove_dir_all(dir).unwrap();
    }

    #[test]
    fn names_the_file_when_it_is_not_safetensors() {
        let dir = temp_dir("bad");
        let huge = write(&dir, "huge.safetensors", &u64::MAX.to_le_bytes());
        let err = SafetensorsReader::open(std::slice::from_ref(&huge))
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("huge.safetensors") && err.contains("not a safetensors"),
            "{err}"
        );
        let header = br#"{"a":{"dtype":"F32","shape":[4],"data_offsets":[0,16]}}"#;
        let mut truncated = (header.len() as u64).to_le_bytes().to_vec();
        truncated.extend_from_slice(header);
        truncated.extend_from_slice(&[0; 8]);
        let short = write(&dir, "short.safetensors", &truncated);
        let err = SafetensorsReader::open(&[short]).unwrap_err().to_string();
        assert!(
            err.contains("short.safetensors") && err.contains("tensor a"),
            "{err}"
        );
        std::fs::remove_dir_all(dir).unwrap();
    }

    /// A file of one header and `data` bytes after it.
    fn crafted(dir: &Path, name: &str, header: &str, data: usize) -> PathBuf {
        let mut bytes = (header.len() as u64).to_le_bytes().to_vec();
        bytes.extend_from_slice(header.as_bytes());
        bytes.resize(bytes.len() + data, 0);
        write(dir, name, &bytes)
    }

    /// Headers whose sizes overflow, or point past the file, are errors naming
    /// the file, the tensor and what does not fit, never a panic or a wrap.
    #[test]
    fn crafted_headers_are_errors_not_overflows() {
        let dir = temp_dir("crafted");
        let max = u64::MAX;
        let big = 1u64 << 32;
        let cases = [
            (
                format!(
                    r#"{{"t":{{"dtype":"F32","shape":[{big},{big},{big}],"data_offsets":[0,0]}}}}"#
                ),
                "more bytes than this machine can address",
            ),
            (
                format!(r#"{{"t":{{"dtype":"F32","shape":[{big},{big}],"data_offsets":[0,0]}}}}"#),
                "more bytes than this machine can address",
            ),
            (
                format!(r#"{{"t":{{"dtype":"F16","shape":[{max}],"data_offsets":[0,16]}}}}"#),
                "more bytes than this machine can address",
            ),
            (
                r#"{"t":{"dtype":"F32","shape":[4],"data_offsets":[16,0]}}"#.to_string(),
                "end before they begin",
            ),
            (
                r#"{"t":{"dtype":"F32","shape":[4],"data_offsets":[0,8]}}"#.to_string(),
                "hold 8 bytes, but shape [4] of F32 needs 16",
            ),
            (
                r#"{"t":{"dtype":"F32","shape":[1099511627776],"data_offsets":[0,4398046511104]}}"#
                    .to_string(),
                "run past the end of the file's",
            ),
            (
                format!(
                    r#"{{"t":{{"dtype":"F32","shape":[1],"data_offsets":[{},{max}]}}}}"#,
                    max - 4
                ),
                "run past the end of the file's",
            ),
            (
                r#"{"t":{"dtype":"F32","shape":[-1],"data_offsets":[0,4]}}"#.to_string(),
                "tensor t",
            ),
        ];
        for (i, (header, needle)) in cases.iter().enumerate() {
            let path = crafted(&dir, &format!("crafted-{i}.safetensors"), header, 16);
            let err = SafetensorsReader::open(&[path]).unwrap_err().to_string();
            assert!(
                err.contains(&format!("crafted-{i}.safetensors"))
                    && err.contains("tensor t")
                    && err.contains(needle),
                "{header}: {err}"
            );
        }
        let fits = crafted(
            &dir,
            "fits.safetensors",
            r#"{"t":{"dtype":"F32","shape":[2,2],"data_offsets":[0,16]},"e":{"dtype":"F16","shape":[0,3],"data_offsets":[16,16]}}"#,
            16,
        );
        let reader = SafetensorsReader::open(&[fits]).unwrap();
        let t = reader.read("t", &Device::Cpu).unwrap();
        assert_eq!(t.dims(), [2, 2]);
        assert_eq!(reader.read("e", &Device::Cpu).unwrap().dims(), [0, 3]);
        std::fs::remove_dir_all(dir).unwrap();
    }
}
