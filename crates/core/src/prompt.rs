//! Prompt encoding: one CLIP text encoder (SD 1.x / 2.x) or two (SDXL).
//!
//! SD 1.x and 2.x condition the UNet on the last hidden state of their one
//! encoder. SDXL concatenates the penultimate hidden states of both encoders
//! and adds the second encoder's projected, pooled embedding as a global
//! conditioning vector. Results are cached per text, so a repeated prompt or
//! negative prompt skips the encoders.

use std::collections::{HashMap, VecDeque};

use candle_core::{Device, Tensor};

use crate::clip::{ClipTextConfig, ClipTextModel, ClipTextOutput};
use crate::error::{Error, Result};
use crate::interrupt::Interrupt;
use crate::model::{Component, LoadOptions, ModelSource};
use crate::tokenizer::ClipTokenizer;

/// How many distinct texts keep their embeddings between generations.
const EMBEDDING_CACHE_SIZE: usize = 32;

/// The conditioning one text produces.
#[derive(Debug, Clone)]
pub struct PromptEmbeds {
    /// Per-token embeddings `[1, 77, D]` for the UNet's cross-attention.
    pub hidden: Tensor,
    /// SDXL's pooled, projected embedding `[1, P]`; `None` for one-encoder models.
    pub pooled: Option<Tensor>,
}

impl PromptEmbeds {
    /// All-zero embeddings of the same shapes (SDXL's `force_zeros_for_empty_prompt`).
    pub fn zeros_like(&self) -> Result<Self> {
        Ok(Self {
            hidden: self.hidden.zeros_like()?,
            pooled: self.pooled.as_ref().map(Tensor::zeros_like).transpose()?,
        })
    }
}

/// One tokenizer with its encoder.
struct Encoder {
    tokenizer: ClipTokenizer,
    model: ClipTextModel,
}

impl Encoder {
    fn load(
        source: &dyn ModelSource,
        component: Component,
        options: LoadOptions,
        device: &Device,
    ) -> Result<Self> {
        let tokenizer = source.tokenizer(component)?;
        let config = ClipTextConfig::from_config(&source.config(component)?)?;
        let model = source
            .weights(component, options.dtype_for(component), device)?
            .build(|vb| ClipTextModel::new(vb, &config))?;
        Ok(Self { tokenizer, model })
    }

    fn ids(&self, text: &str, device: &Device) -> Result<Tensor> {
        let ids = self.tokenizer.encode(text);
        let len = ids.len();
        Ok(Tensor::from_vec(ids, (1, len), device)?)
    }

    /// Tokenizes and encodes `text`, checking `interrupt` before each step.
    fn forward(
        &self,
        text: &str,
        device: &Device,
        interrupt: Interrupt<'_>,
    ) -> Result<ClipTextOutput> {
        interrupt.check_cancelled()?;
        let ids = self.ids(text, device)?;
        self.model.forward_interruptible(&ids, interrupt)
    }
}

/// The text side of a Stable Diffusion model.
pub struct TextEncoders {
    first: Encoder,
    /// SDXL's second encoder (OpenCLIP ViT-bigG with a projection).
    second: Option<Encoder>,
    device: Device,
    cache: EmbeddingCache,
}

impl TextEncoders {
    /// Loads the first tokenizer and text encoder, and the second ones when `dual`.
    pub fn load(
        source: &dyn ModelSource,
        dual: bool,
        options: LoadOptions,
        device: &Device,
    ) -> Result<Self> {
        let first = Encoder::load(source, Component::TextEncoder, options, device)?;
        let second = if dual {
            let encoder = Encoder::load(source, Component::TextEncoder2, options, device)?;
            if !encoder.model.has_text_projection() {
                return Err(Error::invalid_file(
                    source.config(Component::TextEncoder2)?.origin,
                    "SDXL's second text encoder needs text_projection.weight",
                ));
            }
            Some(encoder)
        } else {
            None
        };
        Ok(Self {
            first,
            second,
            device: device.clone(),
            cache: EmbeddingCache::default(),
        })
    }

    /// Encodes one text, reusing a recent result for the same text.
    pub fn encode(&mut self, text: &str) -> Result<PromptEmbeds> {
        self.encode_interruptible(text, Interrupt::NEVER)
    }

    /// [`TextEncoders::encode`] that stops with [`Error::Cancelled`] once
    /// `interrupt` is raised: checked before tokenizing, before each encoder
    /// and between encoder layers.
    pub fn encode_interruptible(
        &mut self,
        text: &str,
        interrupt: Interrupt<'_>,
    ) -> Result<PromptEmbeds> {
        interrupt.check_cancelled()?;
        if let Some(hit) = self.cache.get(text) {
            return Ok(hit);
        }
        let embeds = match &self.second {
            None => PromptEmbeds {
                hidden: self
                    .first
                    .forward(text, &self.device, interrupt)?
                    .last_hidden_state,
                pooled: None,
            },
            Some(second) => {
                let a = self.first.forward(text, &self.device, interrupt)?;
                let b = second.forward(text, &self.device, interrupt)?;
                let pooled = b.text_embeds.ok_or_else(|| {
                    candle_core::Error::Msg("the second text encoder gave no text_embeds".into())
                })?;
                PromptEmbeds {
                    hidden: Tensor::cat(
                        &[
                            penultimate(&a.hidden_states)?,
                            penultimate(&b.hidden_states)?,
                        ],
                        2,
                    )?,
                    pooled: Some(pooled),
                }
            }
        };
        self.cache.insert(text, embeds.clone());
        Ok(embeds)
    }
}

/// The hidden state before the last layer (SDXL's conditioning layer).
fn penultimate(hidden_states: &[Tensor]) -> Result<Tensor> {
    hidden_states
        .len()
        .checked_sub(2)
        .map(|i| hidden_states[i].clone())
        .ok_or_else(|| candle_core::Error::Msg("text encoder has no hidden layers".into()).into())
}

/// Recently used text embeddings, oldest evicted first.
#[derive(Default)]
struct EmbeddingCache {
    entries: HashMap<String, PromptEmbeds>,
    order: VecDeque<String>,
}

impl EmbeddingCache {
    fn get(&self, text: &str) -> Option<PromptEmbeds> {
        self.entries.get(text).cloned()
    }

    fn insert(&mut self, text: &str, embeds: PromptEmbeds) {
        if self.entries.insert(text.to_string(), embeds).is_none() {
            self.order.push_back(text.to_string());
        }
        while self.order.len() > EMBEDDING_CACHE_SIZE {
            if let Some(oldest) = self.order.pop_front() {
                self.entries.remove(&oldest);
            }
        }
    }
}
