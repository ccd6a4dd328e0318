//! Building a component with LoRA updates fused into its weights.
//!
//! [`FusingBackend`] stands between a component's weight source and its
//! constructor: a weight some adapter names is read in f32, gets
//! `Σ strength · alpha / rank · up · down` added (diffusers' `fuse_lora`), and
//! is then stored in the dtype the layer asked for; every other tensor passes
//! through untouched. It also records the name of every tensor read, which
//! makes the component's [`ModuleIndex`].

use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError};

use candle_core::{DType, Device, Shape, Tensor};
use candle_nn::var_builder::SimpleBackend;
use candle_nn::VarBuilder;

use super::{LoraAdapter, ModuleIndex};
use crate::error::{Error, Result};
use crate::model::ComponentWeights;

/// The updates of one component: weight tensor name → the layers adding to it.
#[derive(Debug, Default, Clone)]
pub(crate) struct Deltas {
    terms: HashMap<String, Vec<Term>>,
}

/// One layer's share of a weight's update.
#[derive(Debug, Clone)]
struct Term {
    adapter: Arc<LoraAdapter>,
    layer: usize,
    /// strength · alpha / rank.
    factor: f64,
}

impl Deltas {
    /// Adds `factor · up · down` of the adapter's layer `layer` to `weight`.
    pub(crate) fn add(
        &mut self,
        weight: &str,
        adapter: Arc<LoraAdapter>,
        layer: usize,
        factor: f64,
    ) {
        self.terms
            .entry(weight.to_string())
            .or_default()
            .push(Term {
                adapter,
                layer,
                factor,
            });
    }

    /// The summed update of `name`, shaped like the weight, or `None` when no
    /// layer adapts it.
    fn delta(&self, name: &str, shape: &Shape) -> candle_core::Result<Option<Tensor>> {
        let Some(terms) = self.terms.get(name) else {
            return Ok(None);
        };
        let mut sum: Option<Tensor> = None;
        for term in terms {
            let layer = &term.adapter.layers()[term.layer];
            let product = layer
                .up
                .flatten_from(1)?
                .matmul(&layer.down.flatten_from(1)?)?;
            if product.elem_count() != shape.elem_count() {
                candle_core::bail!(
                    "LoRA {} layer {}: its update {:?} does not fit {name} {shape:?}",
                    term.adapter.path().display(),
                    layer.key,
                    product.dims()
                );
            }
            let product = (product.reshape(shape.clone())? * term.factor)?;
            sum = Some(match sum {
                Some(s) => (s + product)?,
                None => product,
            });
        }
        Ok(sum)
    }
}

/// A weight source that adds [`Deltas`] and records what is read.
struct FusingBackend {
    inner: VarBuilder<'static>,
    deltas: Deltas,
    read: Arc<Mutex<Vec<String>>>,
}

impl FusingBackend {
    fn record(&self, name: &str) {
        self.read
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .push(name.to_string());
    }

    /// `weight` (read in f32) plus its update, in `dtype`.
    fn fused(&self, name: &str, weight: Tensor, dtype: DType) -> candle_core::Result<Tensor> {
        match self.deltas.delta(name, weight.shape())? {
            Some(delta) => (weight + delta)?.to_dtype(dtype),
            None => weight.to_dtype(dtype),
        }
    }
}

impl SimpleBackend for FusingBackend {
    fn get(
        &self,
        shape: Shape,
        name: &str,
        hints: candle_nn::Init,
        dtype: DType,
        _device: &Device,
    ) -> candle_core::Result<Tensor> {
        self.record(name);
        if !self.deltas.terms.contains_key(name) {
            return self.inner.get_with_hints_dtype(shape, name, hints, dtype);
        }
        let weight = self
            .inner
            .get_with_hints_dtype(shape, name, hints, DType::F32)?;
        self.fused(name, weight, dtype)
    }

    fn get_unchecked(
        &self,
        name: &str,
        dtype: DType,
        _device: &Device,
    ) -> candle_core::Result<Tensor> {
        self.record(name);
        if !self.deltas.terms.contains_key(name) {
            return self.inner.get_unchecked_dtype(name, dtype);
        }
        let weight = self.inner.get_unchecked_dtype(name, DType::F32)?;
        self.fused(name, weight, dtype)
    }

    fn contains_tensor(&self, name: &str) -> bool {
        self.inner.contains_tensor(name)
    }
}

/// Builds a component from `weights` with `deltas` fused in, and indexes the
/// modules it read. Without deltas the weights pass through as they are, so
/// the component is exactly the one a plain build gives.
pub(crate) fn build_fused<T, E: Into<Error>>(
    weights: ComponentWeights,
    deltas: &Deltas,
    build: impl FnOnce(VarBuilder<'static>) -> std::result::Result<T, E>,
) -> Result<(T, ModuleIndex)> {
    let read = Arc::new(Mutex::new(Vec::new()));
    let weights = weights.map_var_builder(|inner| {
        let (dtype, device) = (inner.dtype(), inner.device().clone());
        let backend = FusingBackend {
            inner,
            deltas: deltas.clone(),
            read: read.clone(),
        };
        VarBuilder::from_backend(Box::new(backend), dtype, device)
    });
    let built = weights.build(build)?;
    let read = read.lock().unwrap_or_else(PoisonError::into_inner);
    let index = ModuleIndex::from_weight_names(read.iter().map(String::as_str));
    Ok((built, index))
}
