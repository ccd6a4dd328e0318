//! The CLIP text encoder (transformers' `CLIPTextModel` and
//! `CLIPTextModelWithProjection`), on any candle device.
//!
//! Weights use the Hugging Face key names: `text_model.embeddings.*`,
//! `text_model.encoder.layers.{i}.*`, `text_model.final_layer_norm.*` and, for
//! SDXL's second encoder, `text_projection.weight`. A `CLIPTextModel` saved by
//! transformers 5 has no `text_model.` prefix; both spellings load.

mod config;
mod encoder;

use candle_core::{bail, DType, Device, Module, Result, Tensor};
use candle_nn::{embedding, linear_no_bias, Embedding, Linear, VarBuilder};

pub use config::{ClipActivation, ClipTextConfig};
use encoder::{causal_mask, EncoderLayer};

use crate::interrupt::Interrupt;
use crate::layers::LayerNorm;

/// Everything one text-encoder pass produces.
#[derive(Debug, Clone)]
pub struct ClipTextOutput {
    /// `[batch, seq, hidden]`: the last layer's output after `final_layer_norm`.
    pub last_hidden_state: Tensor,
    /// `num_hidden_layers + 1` tensors `[batch, seq, hidden]`: the embeddings, then
    /// each layer's output, none of them through `final_layer_norm` (transformers'
    /// `output_hidden_states`; SDXL and clip skip read `hidden_states[-2]`).
    pub hidden_states: Vec<Tensor>,
    /// `[batch, hidden]`: `last_hidden_state` at each sequence's end-of-text token.
    pub pooled: Tensor,
    /// `[batch, projection_dim]`: `pooled` through `text_projection`, when the
    /// checkpoint has one (`CLIPTextModelWithProjection`).
    pub text_embeds: Option<Tensor>,
}

/// A CLIP text transformer: token + position embeddings, causal pre-LN encoder
/// layers and a final layer norm, plus the optional text projection.
#[derive(Debug, Clone)]
pub struct ClipTextModel {
    token_embedding: Embedding,
    position_embedding: Embedding,
    layers: Vec<EncoderLayer>,
    final_layer_norm: LayerNorm,
    text_projection: Option<Linear>,
    eos_token_id: u32,
    max_position_embeddings: usize,
    /// The dtype the encoder layers compute in (f32 unless set otherwise).
    compute_dtype: DType,
}

impl ClipTextModel {
    /// Builds the model from a checkpoint's root `vb` (keys `text_model.*`, or the
    /// same keys without the prefix). A missing tensor or a shape that disagrees
    /// with `cfg` is an error naming the tensor.
    pub fn new(vb: VarBuilder, cfg: &ClipTextConfig) -> Result<Self> {
        if let Err(message) = cfg.validate() {
            bail!("invalid CLIP text config: {message}");
        }
        let prefixed = vb.contains_tensor("text_model.embeddings.token_embedding.weight");
        let text = if prefixed || !vb.contains_tensor("embeddings.token_embedding.weight") {
            vb.pp("text_model")
        } else {
            vb.clone()
        };
        let layers_vb = text.pp("encoder").pp("layers");
        // Only the encoder layers' projections take the weights' storage dtype;
        // embeddings, the final norm and the text projection stay f32.
        let (vb, text) = (vb.set_dtype(DType::F32), text.set_dtype(DType::F32));
        let embeddings = text.pp("embeddings");
        let layers = (0..cfg.num_hidden_layers)
            .map(|i| EncoderLayer::new(layers_vb.pp(i), cfg))
            .collect::<Result<Vec<_>>>()?;
        let text_projection = if vb.contains_tensor("text_projection.weight") {
            Some(linear_no_bias(
                cfg.hidden_size,
                cfg.projection_dim,
                vb.pp("text_projection"),
            )?)
        } else {
            None
        };
        Ok(Self {
            token_embedding: embedding(
                cfg.vocab_size,
                cfg.hidden_size,
                embeddings.pp("token_embedding"),
            )?,
            position_embedding: embedding(
                cfg.max_position_embeddings,
                cfg.hidden_size,
                embeddings.pp("position_embedding"),
            )?,
            layers,
            final_layer_norm: LayerNorm::new(
                text.pp("final_layer_norm"),
                cfg.hidden_size,
                cfg.layer_norm_eps,
            )?,
            text_projection,
            eos_token_id: cfg.eos_token_id,
            max_position_embeddings: cfg.max_position_embeddings,
            compute_dtype: DType::F32,
        })
    }

    /// The model computing its encoder layers in `dtype` (f16 or bf16, the
    /// dtype its layers' weights were loaded in; f32 by default). The
    /// embeddings, the norms, the softmax and the text projection stay f32,
    /// and every output is returned in f32.
    pub fn with_compute_dtype(mut self, dtype: DType) -> Self {
        self.compute_dtype = dtype;
        self
    }

    /// Encodes `input_ids` `[batch, seq]` (u32 or i64, `seq` at most
    /// `max_position_embeddings`) on the device of the model's weights.
    ///
    /// The pooled position follows transformers: with the legacy
    /// `eos_token_id == 2` it is the position of the largest id (the first one on
    /// ties), otherwise the first position holding `eos_token_id` (0 if none does).
    pub fn forward(&self, input_ids: &Tensor) -> Result<ClipTextOutput> {
        self.forward_until(input_ids, &[], Interrupt::NEVER)
    }

    /// [`ClipTextModel::forward`] that stops with [`crate::Error::Cancelled`]
    /// once `interrupt` is raised (checked before every encoder layer).
    pub fn forward_interruptible(
        &self,
        input_ids: &Tensor,
        interrupt: Interrupt<'_>,
    ) -> crate::Result<ClipTextOutput> {
        Ok(self.forward_until(input_ids, &[], interrupt)?)
    }

    /// [`ClipTextModel::forward_interruptible`] for a batch of one in which
    /// some positions take given vectors instead of their ids' token
    /// embeddings (textual inversion): each `(position, vectors)` puts the
    /// `[n, hidden]` rows at positions `position..position + n`, before the
    /// position embeddings are added.
    pub fn forward_with_vectors(
        &self,
        input_ids: &Tensor,
        vectors: &[(usize, Tensor)],
        interrupt: Interrupt<'_>,
    ) -> crate::Result<ClipTextOutput> {
        Ok(self.forward_until(input_ids, vectors, interrupt)?)
    }

    fn forward_until(
        &self,
        input_ids: &Tensor,
        vectors: &[(usize, Tensor)],
        interrupt: Interrupt<'_>,
    ) -> Result<ClipTextOutput> {
        interrupt.check()?;
        let (batch, seq) = input_ids.dims2()?;
        if seq > self.max_position_embeddings {
            bail!(
                "CLIP input has {seq} tokens, more than max_position_embeddings {}",
                self.max_position_embeddings
            );
        }
        let device = input_ids.device();
        let mut tokens = self.token_embedding.forward(input_ids)?;
        if !vectors.is_empty() && batch != 1 {
            bail!("embedding vectors need a batch of one, got {batch}");
        }
        for (position, rows) in vectors {
            let (n, width) = rows.dims2()?;
            if position + n > seq || width != tokens.dim(2)? {
                bail!(
                    "embedding vectors [{n}, {width}] at position {position} do not fit tokens {:?}",
                    tokens.dims()
                );
            }
            let rows = rows
                .to_dtype(tokens.dtype())?
                .to_device(device)?
                .unsqueeze(0)?;
            tokens = tokens.slice_scatter(&rows, 1, *position)?;
        }
        let positions = Tensor::arange(0u32, seq as u32, device)?;
        let mut xs = tokens
            .broadcast_add(&self.position_embedding.forward(&positions)?)?
            .to_dtype(self.compute_dtype)?;
        let mask = causal_mask(seq, xs.dtype(), device)?;

        let mut hidden_states: Vec<Tensor> = Vec::with_capacity(self.layers.len() + 1);
        hidden_states.push(xs.clone());
        for layer in &self.layers {
            interrupt.check()?;
            xs = layer.forward(&xs, &mask)?;
            hidden_states.push(xs.clone());
        }
        let last_hidden_state = self.final_layer_norm.forward(&xs)?.to_dtype(DType::F32)?;
        let hidden_states = hidden_states
            .into_iter()
            .map(|h| h.to_dtype(DType::F32))
            .collect::<Result<Vec<_>>>()?;

        let rows = self
            .eos_positions(input_ids)?
            .into_iter()
            .enumerate()
            .map(|(b, pos)| (b * seq + pos) as u32)
            .collect::<Vec<_>>();
        let rows = Tensor::from_vec(rows, batch, device)?;
        let pooled = last_hidden_state
            .reshape((batch * seq, ()))?
            .index_select(&rows, 0)?;
        let text_embeds = self
            .text_projection
            .as_ref()
            .map(|projection| projection.forward(&pooled))
            .transpose()?;

        Ok(ClipTextOutput {
            last_hidden_state,
            hidden_states,
            pooled,
            text_embeds,
        })
    }

    /// Applies `final_layer_norm` to a `[batch, seq, hidden]` tensor, for clip skip
    /// (diffusers normalizes the chosen `hidden_states` entry this way).
    pub fn apply_final_layer_norm(&self, xs: &Tensor) -> Result<Tensor> {
        self.final_layer_norm.forward(xs)
    }

    /// The width of its token embeddings (`hidden_size`).
    pub fn hidden_size(&self) -> usize {
        self.token_embedding.hidden_size()
    }

    /// How many encoder layers the model has (`num_hidden_layers`).
    pub fn num_layers(&self) -> usize {
        self.layers.len()
    }

    /// Whether the checkpoint has `text_projection.weight`.
    pub fn has_text_projection(&self) -> bool {
        self.text_projection.is_some()
    }

    /// The pooled position of every sequence in the batch.
    fn eos_positions(&self, input_ids: &Tensor) -> Result<Vec<usize>> {
        let ids = input_ids
            .to_device(&Device::Cpu)?
            .to_dtype(DType::I64)?
            .to_vec2::<i64>()?;
        let positions = ids.iter().map(|row| {
            if self.eos_token_id == 2 {
                // Position of the first maximum.
                row.iter()
                    .enumerate()
                    .fold(
                        (0, i64::MIN),
                        |best, (i, &id)| {
                            if id > best.1 {
                                (i, id)
                            } else {
                                best
                            }
                        },
                    )
                    .0
            } else {
                row.iter()
                    .position(|&id| id == i64::from(self.eos_token_id))
                    .unwrap_or(0)
            }
        });
        Ok(positions.collect())
    }
}
