//! A [`SimpleBackend`] that serves a checkpoint's tensors under their
//! diffusers names, converting on the way: one OpenCLIP `in_proj` row block,
//! a transposed `text_projection`, a 1×1 convolution read as a linear layer.
//! Each tensor is read from the file when the model asks for it, so the
//! checkpoint is never held in memory twice.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::Arc;

use candle_core::{DType, Device, Shape, Tensor};
use candle_nn::var_builder::SimpleBackend;

use super::super::safetensors::SafetensorsReader;

/// How a diffusers tensor is made from a stored one.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Conversion {
    /// As stored (reshaped only where the shapes differ by sizes of 1).
    Same,
    /// Row block `index` of `count` equal blocks (OpenCLIP's fused q, k, v).
    Rows {
        /// Which block (0 = q).
        index: usize,
        /// How many blocks the stored tensor holds.
        count: usize,
    },
    /// The transpose (OpenCLIP's `text_projection`).
    Transposed,
}

/// Where a diffusers tensor comes from.
#[derive(Debug, Clone)]
pub struct StoredAs {
    /// The stored tensor's name in the file.
    pub name: String,
    /// How it becomes the diffusers tensor.
    pub conversion: Conversion,
}

impl StoredAs {
    /// The stored tensor as it is.
    pub fn same(name: &str) -> Self {
        Self {
            name: name.to_string(),
            conversion: Conversion::Same,
        }
    }
}

/// One component's tensors by diffusers name.
pub struct RenamedTensors {
    reader: Arc<SafetensorsReader>,
    names: HashMap<String, StoredAs>,
    /// What missing-tensor errors say the component's stored names look like.
    stored_hint: String,
    file: PathBuf,
}

impl RenamedTensors {
    /// The tensors of `names` (diffusers name → stored), read from `reader`;
    /// `stored_hint` describes the stored names for errors (e.g. `model.diffusion_model.*`).
    pub fn new(
        reader: Arc<SafetensorsReader>,
        names: HashMap<String, StoredAs>,
        stored_hint: impl Into<String>,
        file: PathBuf,
    ) -> Self {
        Self {
            reader,
            names,
            stored_hint: stored_hint.into(),
            file,
        }
    }

    fn read(&self, name: &str, device: &Device) -> candle_core::Result<(Tensor, &StoredAs)> {
        let Some(stored) = self.names.get(name) else {
            return Err(candle_core::Error::CannotFindTensor {
                path: format!(
                    "{name} (diffusers name; no tensor among {} in {} maps to it)",
                    self.stored_hint,
                    self.file.display()
                ),
            });
        };
        let tensor = self.reader.read(&stored.name, device)?;
        let tensor = match stored.conversion {
            Conversion::Same => tensor,
            Conversion::Rows { index, count } => {
                let rows = tensor.dim(0)?;
                if rows % count != 0 {
                    candle_core::bail!(
                        "{} has {rows} rows, not {count} equal blocks (for {name})",
                        stored.name
                    );
                }
                let block = rows / count;
                tensor.narrow(0, index * block, block)?.contiguous()?
            }
            Conversion::Transposed => tensor.t()?.contiguous()?,
        };
        Ok((tensor, stored))
    }
}

/// Whether two shapes hold the same sizes once sizes of 1 are left out
/// (a 1×1 convolution's `[o, i, 1, 1]` against a linear layer's `[o, i]`).
fn same_but_ones(a: &[usize], b: &[usize]) -> bool {
    let strip = |s: &[usize]| s.iter().copied().filter(|&d| d != 1).collect::<Vec<_>>();
    strip(a) == strip(b)
}

impl SimpleBackend for RenamedTensors {
    fn get(
        &self,
        shape: Shape,
        name: &str,
        _hints: candle_nn::Init,
        dtype: DType,
        device: &Device,
    ) -> candle_core::Result<Tensor> {
        let (tensor, stored) = self.read(name, device)?;
        let tensor = if tensor.shape() != &shape && same_but_ones(tensor.dims(), shape.dims()) {
            tensor.reshape(shape.clone())?
        } else {
            tensor
        };
        if tensor.shape() != &shape {
            return Err(candle_core::Error::UnexpectedShape {
                msg: format!(
                    "shape mismatch for {name} (stored as {} in {})",
                    stored.name,
                    self.file.display()
                ),
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
        self.read(name, device)?.0.to_dtype(dtype)
    }

    fn contains_tensor(&self, name: &str) -> bool {
        self.names.contains_key(name)
    }
}
