//! Where a tokenizer's vocabulary, merges and special tokens come from: a
//! tokenizer folder as diffusers repositories ship it (`tokenizer.json`, or
//! `vocab.json` + `merges.txt`, with `tokenizer_config.json` and
//! `special_tokens_map.json`), or the CLIP vocabulary bundled into the crate.

use std::collections::HashMap;
use std::path::Path;

use serde::Deserialize;
use serde_json::Value;

use super::{ClipTokenizer, Merges, SpecialTokens, Vocab, END_OF_TEXT, MAX_MERGES};
use crate::error::{Error, Result};
use crate::model::files::{read_json, read_text};

/// Where the bundled vocabulary comes from, as errors would name it.
const BUNDLED_ORIGIN: &str = "sd-core/assets/clip-vocab";

/// The CLIP vocabulary (`vocab.json`, 49408 ids) every Stable Diffusion text
/// encoder uses, bundled into the crate.
pub static BUNDLED_VOCAB_JSON: &str = include_str!("../../assets/clip-vocab/vocab.json");

/// The BPE merges (`merges.txt`) of [`BUNDLED_VOCAB_JSON`].
pub static BUNDLED_MERGES_TXT: &str = include_str!("../../assets/clip-vocab/merges.txt");

/// One entry of `added_tokens_decoder` (its id is the map key).
#[derive(Deserialize)]
struct AddedTokenEntry {
    content: String,
}

/// tokenizer.json's `added_tokens` entries carry their id inline.
#[derive(Deserialize)]
struct AddedTokenWithId {
    id: u32,
    content: String,
}

impl ClipTokenizer {
    /// Loads a tokenizer folder (diffusers' `tokenizer/` or `tokenizer_2/`).
    ///
    /// Reads `tokenizer.json` when present, else `vocab.json` and `merges.txt`;
    /// special tokens and `model_max_length` come from `tokenizer_config.json`,
    /// overridden by `special_tokens_map.json`, as transformers does.
    pub fn from_dir(dir: &Path) -> Result<Self> {
        let tokenizer_json = dir.join("tokenizer.json");
        let mut special = SpecialTokens::default();
        let (vocab, merges) = if tokenizer_json.is_file() {
            read_tokenizer_json(&tokenizer_json, &mut special)?
        } else {
            (
                read_vocab(&dir.join("vocab.json"))?,
                read_merges(&dir.join("merges.txt"))?,
            )
        };
        let config = dir.join("tokenizer_config.json");
        if config.is_file() {
            read_special_tokens(&config, &read_json(&config)?, &mut special)?;
        }
        let map = dir.join("special_tokens_map.json");
        if map.is_file() {
            read_special_tokens(&map, &read_json(&map)?, &mut special)?;
        }
        Ok(Self::new(vocab, merges, special))
    }

    /// The bundled CLIP tokenizer ([`BUNDLED_VOCAB_JSON`]) with the special
    /// tokens SD 1.x ships: `<|startoftext|>` to begin, `<|endoftext|>` to end,
    /// for unknown words and for padding, 77 ids in all.
    pub fn bundled() -> Self {
        Self::bundled_padded_with(END_OF_TEXT)
    }

    /// The bundled tokenizer padding with `pad` instead: SD 2.x and SDXL's
    /// second tokenizer pad with `!`.
    pub fn bundled_padded_with(pad: &str) -> Self {
        let origin = Path::new(BUNDLED_ORIGIN);
        let vocab = parse_vocab(BUNDLED_VOCAB_JSON, &origin.join("vocab.json"))
            .expect("the bundled vocab.json is valid");
        let merges = parse_merges(BUNDLED_MERGES_TXT, &origin.join("merges.txt"))
            .expect("the bundled merges.txt is valid");
        let special = SpecialTokens {
            pad: Some(pad.to_string()),
            ..SpecialTokens::default()
        };
        Self::new(vocab, merges, special)
    }
}

fn read_vocab(path: &Path) -> Result<Vocab> {
    parse_vocab(&read_text(path)?, path)
}

/// Parses the text of `vocab.json`; errors name `origin`.
fn parse_vocab(text: &str, origin: &Path) -> Result<Vocab> {
    serde_json::from_str(text).map_err(|e| Error::invalid_file(origin, e.to_string()))
}

fn read_merges(path: &Path) -> Result<Merges> {
    parse_merges(&read_text(path)?, path)
}

/// `merges.txt` as transformers reads it: the first line is a header, then at
/// most [`MAX_MERGES`] lines of two space-separated symbols; errors name `origin`.
fn parse_merges(text: &str, origin: &Path) -> Result<Merges> {
    text.trim()
        .split('\n')
        .enumerate()
        .skip(1)
        .take(MAX_MERGES)
        .filter(|(_, line)| !line.trim().is_empty())
        .map(|(n, line)| {
            parse_merge(line).ok_or_else(|| {
                Error::invalid_file(origin, format!("line {}: expected two symbols", n + 1))
            })
        })
        .collect()
}

fn parse_merge(line: &str) -> Option<(String, String)> {
    let mut parts = line.split_whitespace();
    let pair = (parts.next()?.to_string(), parts.next()?.to_string());
    parts.next().is_none().then_some(pair)
}

/// Reads `model.vocab`, `model.merges` and `added_tokens` of a tokenizer.json.
fn read_tokenizer_json(path: &Path, special: &mut SpecialTokens) -> Result<(Vocab, Merges)> {
    let invalid = |message: String| Error::invalid_file(path, message);
    let json = read_json::<Value>(path)?;
    let model = json
        .get("model")
        .ok_or_else(|| invalid("no `model` section".into()))?;
    if let Some(kind) = model.get("type").and_then(Value::as_str) {
        if kind != "BPE" {
            return Err(invalid(format!("model type {kind}, expected BPE")));
        }
    }
    let vocab = model
        .get("vocab")
        .ok_or_else(|| invalid("no `model.vocab`".into()))?;
    let vocab: HashMap<String, u32> =
        serde_json::from_value(vocab.clone()).map_err(|e| invalid(format!("model.vocab: {e}")))?;
    let merges = model
        .get("merges")
        .and_then(Value::as_array)
        .ok_or_else(|| invalid("no `model.merges` list".into()))?;
    let merges = merges
        .iter()
        .enumerate()
        .map(|(i, merge)| {
            let pair = match merge {
                Value::String(line) => parse_merge(line),
                Value::Array(pair) => match pair.as_slice() {
                    [Value::String(a), Value::String(b)] => Some((a.clone(), b.clone())),
                    _ => None,
                },
                _ => None,
            };
            pair.ok_or_else(|| invalid(format!("model.merges[{i}]: expected two symbols")))
        })
        .collect::<Result<Vec<_>>>()?;
    if let Some(added) = json.get("added_tokens") {
        let added: Vec<AddedTokenWithId> = serde_json::from_value(added.clone())
            .map_err(|e| invalid(format!("added_tokens: {e}")))?;
        special
            .added
            .extend(added.into_iter().map(|t| (t.content, t.id)));
    }
    Ok((vocab, merges))
}

/// Reads the special tokens of `tokenizer_config.json` or `special_tokens_map.json`
/// into `special`, replacing what an earlier file set.
fn read_special_tokens(path: &Path, json: &Value, special: &mut SpecialTokens) -> Result<()> {
    let token = |key: &str| -> Result<Option<String>> {
        match json.get(key) {
            None | Some(Value::Null) => Ok(None),
            Some(value) => token_content(value)
                .map(Some)
                .ok_or_else(|| Error::invalid_file(path, format!("`{key}` is not a token"))),
        }
    };
    let slots = [
        (&mut special.bos, "bos_token"),
        (&mut special.eos, "eos_token"),
        (&mut special.unk, "unk_token"),
        (&mut special.pad, "pad_token"),
    ];
    for (slot, key) in slots {
        if let Some(value) = token(key)? {
            *slot = Some(value);
        }
    }
    if let Some(list) = json
        .get("additional_special_tokens")
        .and_then(Value::as_array)
    {
        for value in list {
            let content = token_content(value).ok_or_else(|| {
                Error::invalid_file(path, "`additional_special_tokens` holds a non-token")
            })?;
            special.additional.push(content);
        }
    }
    if let Some(decoder) = json.get("added_tokens_decoder") {
        let decoder: HashMap<String, AddedTokenEntry> = serde_json::from_value(decoder.clone())
            .map_err(|e| Error::invalid_file(path, format!("added_tokens_decoder: {e}")))?;
        for (id, entry) in decoder {
            let id = id.parse().map_err(|_| {
                Error::invalid_file(path, format!("added_tokens_decoder: bad id {id:?}"))
            })?;
            special.added.push((entry.content, id));
        }
    }
    if let Some(length) = json.get("model_max_length").and_then(Value::as_f64) {
        // transformers writes a huge number (1e30) when no limit is set.
        if (1.0..=1e6).contains(&length) && length.fract() == 0.0 {
            if length < 2.0 {
                return Err(Error::invalid_file(
                    path,
                    "model_max_length 1 leaves no room for BOS and EOS",
                ));
            }
            special.max_length = Some(length as usize);
        }
    }
    Ok(())
}

/// A token given either as a string or as a serialized `AddedToken` (`{"content": ...}`).
fn token_content(value: &Value) -> Option<String> {
    match value {
        Value::String(s) => Some(s.clone()),
        Value::Object(map) => map.get("content")?.as_str().map(str::to_string),
        _ => None,
    }
}
