//! Prompt encoding: one CLIP text encoder (SD 1.x / 2.x) or two (SDXL).
//!
//! SD 1.x and 2.x condition the UNet on the last hidden state of their one
//! encoder. SDXL concatenates the penultimate hidden states of both encoders
//! and adds the second encoder's projected, pooled embedding as a global
//! conditioning vector. Results are cached per text, so a repeated prompt or
//! negative prompt skips the encoders.
//!
//! A prompt is read in one of two [`PromptSyntax`]es: `Plain`, diffusers' way
//! (the text as written, cut at 77 tokens), or `A1111`, AUTOMATIC1111's
//! (emphasis brackets and `BREAK` parsed by [`a1111`], the tokens cut into
//! 75-token [`chunks`] that are encoded one by one and concatenated, each
//! token's hidden state multiplied by its weight).
//!
//! Either syntax calls up textual-inversion embeddings by name
//! ([`TextEncoders::set_embeddings`], [`crate::embeddings`]): the name's tokens
//! become one position per vector, which the encoder fills with the vectors.
//!
//! Either syntax can skip the encoders' last layers ([`PromptEncoding::clip_skip`],
//! diffusers' `clip_skip`, AUTOMATIC1111's "Clip skip" minus one).

pub mod a1111;
pub mod chunks;

use std::collections::{HashMap, VecDeque};

use candle_core::{Device, Tensor};

use self::a1111::Segment;
use self::chunks::{chunk_prompt, plain_chunk, PromptChunk, Trigger};
use crate::clip::{ClipTextConfig, ClipTextModel, ClipTextOutput};
use crate::embeddings::{EmbeddingSet, SkippedEmbedding, TextualInversion};
use crate::error::{Error, Param, ParamError, Result};
use crate::interrupt::Interrupt;
use crate::lora::fuse::{build_fused, Deltas};
use crate::lora::ModuleIndex;
use crate::model::{Component, LoadOptions, ModelSource};
use crate::tokenizer::ClipTokenizer;

/// How a prompt's text is read.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum PromptSyntax {
    /// AUTOMATIC1111's: `(emphasis)`, `[less]`, `(text:1.3)`, `BREAK`, and
    /// prompts longer than one CLIP window encoded chunk by chunk.
    #[default]
    A1111,
    /// diffusers': the text as written, truncated to one CLIP window.
    Plain,
}

impl PromptSyntax {
    /// Every syntax's name, for messages.
    pub const NAMES: &'static str = "a1111, plain";

    /// The syntax's name (`a1111` or `plain`).
    pub fn as_str(self) -> &'static str {
        match self {
            PromptSyntax::A1111 => "a1111",
            PromptSyntax::Plain => "plain",
        }
    }
}

impl std::fmt::Display for PromptSyntax {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

impl std::str::FromStr for PromptSyntax {
    type Err = String;

    fn from_str(name: &str) -> std::result::Result<Self, String> {
        match name.to_ascii_lowercase().as_str() {
            "a1111" => Ok(PromptSyntax::A1111),
            "plain" => Ok(PromptSyntax::Plain),
            _ => Err(format!(
                "unknown prompt syntax `{name}` (expected one of: {})",
                Self::NAMES
            )),
        }
    }
}

/// How a prompt is turned into embeddings: its syntax and how many of the
/// text encoders' last layers are skipped. A bare [`PromptSyntax`] converts
/// into one that skips none.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct PromptEncoding {
    /// How the text is read.
    pub syntax: PromptSyntax,
    /// diffusers' `clip_skip` (AUTOMATIC1111's "Clip skip" minus one); 0 skips
    /// nothing. SD 1.x/2.x take `hidden_states[-(clip_skip + 1)]` through the
    /// encoder's `final_layer_norm` (0 is its `last_hidden_state`); SDXL takes
    /// `hidden_states[-(clip_skip + 2)]` of both encoders, without the norm,
    /// and keeps its pooled embedding from the last layer. Unlike diffusers,
    /// which skips layers for the prompt only, the negative prompt is encoded
    /// the same way, as AUTOMATIC1111 does.
    pub clip_skip: usize,
}

impl From<PromptSyntax> for PromptEncoding {
    fn from(syntax: PromptSyntax) -> Self {
        Self {
            syntax,
            clip_skip: 0,
        }
    }
}

/// How many distinct texts keep their embeddings between generations.
const EMBEDDING_CACHE_SIZE: usize = 32;

/// The conditioning one text produces.
#[derive(Debug, Clone)]
pub struct PromptEmbeds {
    /// Per-token embeddings `[1, 77 × chunks, D]` for the UNet's cross-attention
    /// (one chunk unless an A1111-syntax prompt is longer than one CLIP window).
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

    /// The sequence length of [`hidden`](Self::hidden).
    pub fn len(&self) -> usize {
        self.hidden.dim(1).unwrap_or(0)
    }

    /// Whether [`hidden`](Self::hidden) has no position at all.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// These embeddings followed by copies of `empty` (one chunk, the empty
    /// prompt's) up to `len` positions, as A1111 evens out a prompt and its
    /// negative prompt of different chunk counts.
    pub fn padded_to(&self, len: usize, empty: &PromptEmbeds) -> Result<Self> {
        let chunk = empty.len().max(1);
        if self.len() >= len {
            return Ok(self.clone());
        }
        let copies = (len - self.len()).div_ceil(chunk);
        let mut parts = vec![self.hidden.clone()];
        parts.extend(std::iter::repeat_n(empty.hidden.clone(), copies));
        Ok(Self {
            hidden: Tensor::cat(&parts, 1)?,
            pooled: self.pooled.clone(),
        })
    }
}

/// One tokenizer with its encoder.
struct Encoder {
    tokenizer: ClipTokenizer,
    model: ClipTextModel,
    /// The encoder's modules, which LoRA keys resolve against.
    modules: ModuleIndex,
    /// The textual-inversion embeddings prompts may name.
    embeddings: Vec<EncoderEmbedding>,
}

/// An embedding as one encoder sees it.
struct EncoderEmbedding {
    /// Its name's token ids in this encoder's tokenizer.
    ids: Vec<u32>,
    /// `[n, hidden]` on the encoder's device.
    vectors: Tensor,
}

impl Encoder {
    fn load(
        source: &dyn ModelSource,
        component: Component,
        options: LoadOptions,
        device: &Device,
    ) -> Result<Self> {
        let tokenizer = source.tokenizer(component)?;
        let (model, modules) =
            Self::build_model(source, component, options, device, &Deltas::default())?;
        Ok(Self {
            tokenizer,
            model,
            modules,
            embeddings: Vec::new(),
        })
    }

    /// The encoder's model with `deltas` fused into its weights.
    fn build_model(
        source: &dyn ModelSource,
        component: Component,
        options: LoadOptions,
        device: &Device,
        deltas: &Deltas,
    ) -> Result<(ClipTextModel, ModuleIndex)> {
        let config = ClipTextConfig::from_config(&source.config(component)?)?;
        let weights = source.weights(component, options.dtype_for(component), device)?;
        build_fused(weights, deltas, |vb| {
            ClipTextModel::new(vb, &config).map(|m| m.with_compute_dtype(options.compute_dtype))
        })
    }

    /// The names prompts call the embeddings by, as this encoder's tokens.
    fn triggers(&self) -> Vec<Trigger<'_>> {
        self.embeddings
            .iter()
            .map(|e| Trigger {
                ids: &e.ids,
                vectors: e.vectors.dim(0).unwrap_or(0),
            })
            .collect()
    }

    /// The encoder's pass over one chunk, its embeddings' vectors in place.
    fn run(
        &self,
        chunk: &PromptChunk,
        device: &Device,
        interrupt: Interrupt<'_>,
    ) -> Result<ClipTextOutput> {
        let len = chunk.ids.len();
        let ids = Tensor::from_slice(&chunk.ids, (1, len), device)?;
        let vectors = chunk
            .fixes
            .iter()
            .map(|fix| {
                let vectors = &self.embeddings[fix.embedding].vectors;
                Ok((fix.position, vectors.narrow(0, 0, fix.count)?))
            })
            .collect::<Result<Vec<_>>>()?;
        self.model.forward_with_vectors(&ids, &vectors, interrupt)
    }

    /// One pass over `text` as written (diffusers' encoding), checking
    /// `interrupt` before tokenizing and between encoder layers.
    fn plain(
        &self,
        text: &str,
        device: &Device,
        interrupt: Interrupt<'_>,
    ) -> Result<ClipTextOutput> {
        interrupt.check_cancelled()?;
        let chunk = plain_chunk(text, &self.tokenizer, &self.triggers());
        self.run(&chunk, device, interrupt)
    }

    /// A1111's encoding: each chunk on its own, weighted, then concatenated.
    /// Returns the chosen hidden states `[1, 77 × chunks, D]` and the first
    /// chunk's projected pooled embedding, if the encoder has a projection.
    fn weighted(
        &self,
        segments: &[Segment],
        layer: HiddenLayer,
        clip_skip: usize,
        device: &Device,
        interrupt: Interrupt<'_>,
    ) -> Result<(Tensor, Option<Tensor>)> {
        let mut hidden = Vec::new();
        let mut pooled = None;
        for chunk in chunk_prompt(segments, &self.tokenizer, &self.triggers()) {
            interrupt.check_cancelled()?;
            let out = self.run(&chunk, device, interrupt)?;
            hidden.push(emphasise(
                &self.select(&out, layer, clip_skip)?,
                &chunk.weights,
            )?);
            if pooled.is_none() {
                pooled = out.text_embeds;
            }
        }
        Ok((Tensor::cat(&hidden, 1)?, pooled))
    }

    /// The hidden state `layer` names in `out`, `clip_skip` layers further back.
    fn select(&self, out: &ClipTextOutput, layer: HiddenLayer, clip_skip: usize) -> Result<Tensor> {
        match layer {
            HiddenLayer::Last if clip_skip == 0 => Ok(out.last_hidden_state.clone()),
            HiddenLayer::Last => Ok(self
                .model
                .apply_final_layer_norm(&from_end(&out.hidden_states, clip_skip + 1)?)?),
            HiddenLayer::Penultimate => from_end(&out.hidden_states, clip_skip + 2),
        }
    }
}

impl Encoder {
    /// `embedding` as this encoder (0 or 1) sees it, its vectors on `device`.
    fn embedding(
        &self,
        embedding: &TextualInversion,
        index: usize,
        device: &Device,
    ) -> Result<EncoderEmbedding> {
        let vectors = embedding.vectors_for(index).ok_or_else(|| {
            candle_core::Error::Msg(format!(
                "embedding {} has no vectors for encoder {index}",
                embedding.name()
            ))
        })?;
        Ok(EncoderEmbedding {
            ids: self.tokenizer.tokenize(embedding.name()),
            vectors: vectors.to_device(device)?,
        })
    }
}

/// Which hidden state of an encoder conditions the UNet when no layer is skipped.
#[derive(Debug, Clone, Copy)]
enum HiddenLayer {
    /// After the final layer norm (SD 1.x and 2.x).
    Last,
    /// The layer before the last, without the final norm (SDXL).
    Penultimate,
}

/// A1111's "Original" emphasis: every position's hidden state multiplied by
/// its weight, then the whole chunk rescaled so its mean is what it was.
fn emphasise(hidden: &Tensor, weights: &[f32]) -> Result<Tensor> {
    // All ones leave the chunk exactly as it is (the rescale factor is 1).
    if weights.iter().all(|&w| w == 1.0) {
        return Ok(hidden.clone());
    }
    let before = hidden.mean_all()?.to_scalar::<f32>()?;
    let weights = Tensor::from_slice(weights, (1, weights.len(), 1), hidden.device())?
        .to_dtype(hidden.dtype())?;
    let weighted = hidden.broadcast_mul(&weights)?;
    let after = weighted.mean_all()?.to_scalar::<f32>()?;
    Ok(weighted.affine(f64::from(before / after), 0.0)?)
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

    /// Encodes one text as `encoding` says (a [`PromptSyntax`] alone skips no
    /// layer), reusing a recent result for the same text and encoding.
    pub fn encode(
        &mut self,
        text: &str,
        encoding: impl Into<PromptEncoding>,
    ) -> Result<PromptEmbeds> {
        self.encode_interruptible(text, encoding, Interrupt::NEVER)
    }

    /// The module index of `component` (`TextEncoder` or `TextEncoder2`), if loaded.
    pub(crate) fn modules(&self, component: Component) -> Option<&ModuleIndex> {
        self.encoder(component).map(|e| &e.modules)
    }

    fn encoder(&self, component: Component) -> Option<&Encoder> {
        match component {
            Component::TextEncoder => Some(&self.first),
            Component::TextEncoder2 => self.second.as_ref(),
            _ => None,
        }
    }

    /// Rebuilds the model of `component` from `source` with `deltas` fused in
    /// and forgets every cached encoding.
    pub(crate) fn rebuild(
        &mut self,
        source: &dyn ModelSource,
        component: Component,
        options: LoadOptions,
        deltas: &Deltas,
    ) -> Result<()> {
        self.cache = EmbeddingCache::default();
        let encoder = match component {
            Component::TextEncoder => &mut self.first,
            Component::TextEncoder2 => match self.second.as_mut() {
                Some(second) => second,
                None => return Ok(()),
            },
            _ => return Ok(()),
        };
        let (model, modules) =
            Encoder::build_model(source, component, options, &self.device, deltas)?;
        encoder.model = model;
        encoder.modules = modules;
        Ok(())
    }

    /// Makes the embeddings of `set` that fit these encoders callable by
    /// name in prompts (replacing any set before) and forgets every cached
    /// encoding. An embedding fits when it has vectors for each encoder
    /// (SDXL's `clip_l`/`clip_g` pair for two encoders, one set for one) of
    /// the encoders' widths, and at most one chunk's worth of them; the
    /// others come back as skipped, with the reason.
    pub fn set_embeddings(&mut self, set: &EmbeddingSet) -> Result<Vec<SkippedEmbedding>> {
        self.cache = EmbeddingCache::default();
        let mut skipped = Vec::new();
        let mut first = Vec::new();
        let mut second = Vec::new();
        for embedding in set.iter() {
            match self.fit(embedding) {
                Ok(()) => {
                    first.push(self.first.embedding(embedding, 0, &self.device)?);
                    if let Some(encoder) = &self.second {
                        second.push(encoder.embedding(embedding, 1, &self.device)?);
                    }
                }
                Err(reason) => skipped.push(SkippedEmbedding {
                    name: embedding.name().to_string(),
                    reason,
                }),
            }
        }
        self.first.embeddings = first;
        if let Some(encoder) = &mut self.second {
            encoder.embeddings = second;
        }
        Ok(skipped)
    }

    /// Why `embedding` cannot be used with these encoders, if it cannot.
    fn fit(&self, embedding: &TextualInversion) -> std::result::Result<(), String> {
        let widths = embedding.widths();
        let wanted: Vec<usize> = std::iter::once(&self.first)
            .chain(&self.second)
            .map(|e| e.model.hidden_size())
            .collect();
        if widths != wanted {
            return Err(format!(
                "its vectors are {widths:?} wide, this model's text encoders take {wanted:?} \
                 (an embedding for another model family)"
            ));
        }
        let room = self.first.tokenizer.max_length().saturating_sub(2);
        if embedding.vectors() > room {
            return Err(format!(
                "it has {} vectors, more than the {room} positions of a prompt chunk",
                embedding.vectors()
            ));
        }
        if self.first.tokenizer.tokenize(embedding.name()).is_empty() {
            return Err("its name has no tokens a prompt could hold".into());
        }
        Ok(())
    }

    /// The largest [`PromptEncoding::clip_skip`] these encoders take: one less
    /// than the layer count of the shallower encoder.
    pub fn max_clip_skip(&self) -> usize {
        let layers = std::iter::once(&self.first)
            .chain(&self.second)
            .map(|encoder| encoder.model.num_layers())
            .min()
            .unwrap_or(0);
        layers.saturating_sub(1)
    }

    /// Refuses a `clip_skip` beyond [`TextEncoders::max_clip_skip`].
    pub fn check_clip_skip(&self, clip_skip: usize) -> Result<(), ParamError> {
        check_clip_skip(clip_skip, self.max_clip_skip())
    }

    /// [`TextEncoders::encode`] that stops with [`Error::Cancelled`] once
    /// `interrupt` is raised: checked before tokenizing, before each encoder
    /// (and chunk) and between encoder layers. A `clip_skip` beyond
    /// [`TextEncoders::max_clip_skip`] is an [`Error::Param`] naming it.
    pub fn encode_interruptible(
        &mut self,
        text: &str,
        encoding: impl Into<PromptEncoding>,
        interrupt: Interrupt<'_>,
    ) -> Result<PromptEmbeds> {
        let encoding = encoding.into();
        interrupt.check_cancelled()?;
        self.check_clip_skip(encoding.clip_skip)?;
        if let Some(hit) = self.cache.get(text, encoding) {
            return Ok(hit);
        }
        let embeds = match encoding.syntax {
            PromptSyntax::Plain => self.encode_plain(text, encoding.clip_skip, interrupt)?,
            PromptSyntax::A1111 => self.encode_a1111(text, encoding.clip_skip, interrupt)?,
        };
        self.cache.insert(text, encoding, embeds.clone());
        Ok(embeds)
    }

    fn encode_plain(
        &self,
        text: &str,
        clip_skip: usize,
        interrupt: Interrupt<'_>,
    ) -> Result<PromptEmbeds> {
        Ok(match &self.second {
            None => {
                let out = self.first.plain(text, &self.device, interrupt)?;
                PromptEmbeds {
                    hidden: self.first.select(&out, HiddenLayer::Last, clip_skip)?,
                    pooled: None,
                }
            }
            Some(second) => {
                let a = self.first.plain(text, &self.device, interrupt)?;
                let b = second.plain(text, &self.device, interrupt)?;
                let hidden = Tensor::cat(
                    &[
                        self.first.select(&a, HiddenLayer::Penultimate, clip_skip)?,
                        second.select(&b, HiddenLayer::Penultimate, clip_skip)?,
                    ],
                    2,
                )?;
                PromptEmbeds {
                    hidden,
                    pooled: Some(b.text_embeds.ok_or_else(no_text_embeds)?),
                }
            }
        })
    }

    fn encode_a1111(
        &self,
        text: &str,
        clip_skip: usize,
        interrupt: Interrupt<'_>,
    ) -> Result<PromptEmbeds> {
        let segments = a1111::parse(text);
        Ok(match &self.second {
            None => PromptEmbeds {
                hidden: self
                    .first
                    .weighted(
                        &segments,
                        HiddenLayer::Last,
                        clip_skip,
                        &self.device,
                        interrupt,
                    )?
                    .0,
                pooled: None,
            },
            Some(second) => {
                let (a, _) = self.first.weighted(
                    &segments,
                    HiddenLayer::Penultimate,
                    clip_skip,
                    &self.device,
                    interrupt,
                )?;
                let (b, pooled) = second.weighted(
                    &segments,
                    HiddenLayer::Penultimate,
                    clip_skip,
                    &self.device,
                    interrupt,
                )?;
                PromptEmbeds {
                    hidden: Tensor::cat(&[a, b], 2)?,
                    pooled: Some(pooled.ok_or_else(no_text_embeds)?),
                }
            }
        })
    }
}

fn no_text_embeds() -> Error {
    candle_core::Error::Msg("the second text encoder gave no text_embeds".into()).into()
}

/// `hidden_states[-n]`, Python's way (`n` = 1 is the last layer's output).
fn from_end(hidden_states: &[Tensor], n: usize) -> Result<Tensor> {
    hidden_states
        .len()
        .checked_sub(n)
        .map(|i| hidden_states[i].clone())
        .ok_or_else(|| {
            candle_core::Error::Msg(format!(
                "text encoder has {} hidden states, none at -{n}",
                hidden_states.len()
            ))
            .into()
        })
}

/// Refuses a `clip_skip` above `max` with an error naming [`Param::ClipSkip`].
pub fn check_clip_skip(clip_skip: usize, max: usize) -> Result<(), ParamError> {
    if clip_skip > max {
        return Err(ParamError::new(
            Param::ClipSkip,
            format!("must be at most {max} for this model's text encoders, got {clip_skip}"),
        ));
    }
    Ok(())
}

/// Recently used text embeddings, oldest evicted first.
#[derive(Default)]
struct EmbeddingCache {
    entries: HashMap<(String, PromptEncoding), PromptEmbeds>,
    order: VecDeque<(String, PromptEncoding)>,
}

impl EmbeddingCache {
    fn get(&self, text: &str, encoding: PromptEncoding) -> Option<PromptEmbeds> {
        self.entries.get(&(text.to_string(), encoding)).cloned()
    }

    fn insert(&mut self, text: &str, encoding: PromptEncoding, embeds: PromptEmbeds) {
        let key = (text.to_string(), encoding);
        if self.entries.insert(key.clone(), embeds).is_none() {
            self.order.push_back(key);
        }
        while self.order.len() > EMBEDDING_CACHE_SIZE {
            if let Some(oldest) = self.order.pop_front() {
                self.entries.remove(&oldest);
            }
        }
    }
}
