//! The CLIP byte-level BPE tokenizer.
//!
//! Produces exactly the ids of transformers' slow `CLIPTokenizer` without `ftfy`
//! installed, which is what diffusers runs for SD 1.x/2.x/XL prompts:
//!
//! 1. the text is split on the added tokens (the special tokens and any
//!    `added_tokens` of the config), which map straight to their ids; this is why
//!    SD 2's pad token `!` turns every literal `!` of a prompt into id 0;
//! 2. every other piece goes through BERT's basic cleaning (control characters,
//!    U+0000 and U+FFFD dropped, whitespace unified, spaces around CJK ideographs,
//!    NFC, lower case, whitespace split and re-joined with single spaces);
//! 3. CLIP's pattern splits it into words, whose UTF-8 bytes are mapped to
//!    printable characters and merged by BPE (the last symbol carries `</w>`);
//! 4. the ids are wrapped in BOS/EOS, truncated to `max_length` and padded.

use std::collections::HashMap;
use std::path::Path;
use std::sync::Mutex;

use regex::Regex;
use serde::Deserialize;
use serde_json::Value;
use unicode_normalization::UnicodeNormalization;

use crate::error::{Error, Result};
use crate::model::files::{read_json, read_text};

/// Words cached with their BPE ids before the cache is cleared.
const BPE_CACHE_LIMIT: usize = 16_384;

/// transformers reads at most this many merges from `merges.txt`.
const MAX_MERGES: usize = 49152 - 256 - 2;

/// The sequence length used when the config does not give a usable one.
const DEFAULT_MAX_LENGTH: usize = 77;

const START_OF_TEXT: &str = "<|startoftext|>";
const END_OF_TEXT: &str = "<|endoftext|>";

/// CLIP's word pattern, as in `tokenization_clip.py` (compiled case-insensitive there too).
const WORD_PATTERN: &str = r"(?i)<\|startoftext\|>|<\|endoftext\|>|'s|'t|'re|'ve|'m|'ll|'d|[\p{L}]+|[\p{N}]|[^\s\p{L}\p{N}]+";

/// Where the bundled vocabulary comes from, as errors would name it.
const BUNDLED_ORIGIN: &str = "sd-core/assets/clip-vocab";

/// The CLIP vocabulary (`vocab.json`, 49408 ids) every Stable Diffusion text
/// encoder uses, bundled into the crate.
pub static BUNDLED_VOCAB_JSON: &str = include_str!("../assets/clip-vocab/vocab.json");

/// The BPE merges (`merges.txt`) of [`BUNDLED_VOCAB_JSON`].
pub static BUNDLED_MERGES_TXT: &str = include_str!("../assets/clip-vocab/merges.txt");

/// Token → id, as in `vocab.json`.
type Vocab = HashMap<String, u32>;

/// BPE merges in priority order.
type Merges = Vec<(String, String)>;

/// A CLIP tokenizer, loaded from a tokenizer folder or built from the bundled
/// vocabulary ([`ClipTokenizer::bundled`]).
///
/// Safe to share between threads; BPE results are cached per word.
pub struct ClipTokenizer {
    vocab: Vocab,
    /// `ranks[first][second]` is the priority of merging `first second` (lower first).
    ranks: HashMap<String, HashMap<String, u32>>,
    /// Added tokens, longest first, matched verbatim before any cleaning.
    added: Vec<(String, u32)>,
    bos_id: u32,
    eos_id: u32,
    pad_id: u32,
    unk_id: u32,
    max_length: usize,
    byte_chars: [char; 256],
    words: Regex,
    dropped_chars: Regex,
    space_chars: Regex,
    cache: Mutex<HashMap<String, Vec<u32>>>,
}

impl std::fmt::Debug for ClipTokenizer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ClipTokenizer")
            .field("vocab_size", &self.vocab.len())
            .field("bos_id", &self.bos_id)
            .field("eos_id", &self.eos_id)
            .field("pad_id", &self.pad_id)
            .field("max_length", &self.max_length)
            .finish_non_exhaustive()
    }
}

/// The special tokens and length limit of a tokenizer folder.
#[derive(Debug, Default)]
struct SpecialTokens {
    bos: Option<String>,
    eos: Option<String>,
    unk: Option<String>,
    pad: Option<String>,
    additional: Vec<String>,
    /// Added tokens with their fixed ids (`added_tokens_decoder` / `added_tokens`).
    added: Vec<(String, u32)>,
    max_length: Option<usize>,
}

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

    fn new(mut vocab: Vocab, merges: Merges, special: SpecialTokens) -> Self {
        let mut ranks: HashMap<String, HashMap<String, u32>> = HashMap::new();
        for (rank, (first, second)) in (0u32..).zip(merges) {
            ranks.entry(first).or_default().insert(second, rank);
        }

        // Added tokens keep their id (it wins over vocab.json's); a special token
        // missing from both gets the next free id, like transformers' `add_tokens`.
        let mut added: Vec<(String, u32)> = Vec::new();
        let mut add = |token: &str, vocab: &mut Vocab, id: Option<u32>| -> u32 {
            if let Some(&(_, id)) = added.iter().find(|(t, _)| t == token) {
                return id;
            }
            let id = id
                .or_else(|| vocab.get(token).copied())
                .unwrap_or_else(|| next_id(vocab, &added));
            vocab.insert(token.to_string(), id);
            added.push((token.to_string(), id));
            id
        };
        for (token, id) in &special.added {
            add(token, &mut vocab, Some(*id));
        }
        let bos_id = add(
            special.bos.as_deref().unwrap_or(START_OF_TEXT),
            &mut vocab,
            None,
        );
        let eos_id = add(
            special.eos.as_deref().unwrap_or(END_OF_TEXT),
            &mut vocab,
            None,
        );
        let unk_id = add(
            special.unk.as_deref().unwrap_or(END_OF_TEXT),
            &mut vocab,
            None,
        );
        let pad_id = add(
            special.pad.as_deref().unwrap_or(END_OF_TEXT),
            &mut vocab,
            None,
        );
        for token in &special.additional {
            add(token, &mut vocab, None);
        }
        added.retain(|(token, _)| !token.is_empty());
        added.sort_by_key(|(token, _)| std::cmp::Reverse(token.len()));

        Self {
            vocab,
            ranks,
            added,
            bos_id,
            eos_id,
            pad_id,
            unk_id,
            max_length: special.max_length.unwrap_or(DEFAULT_MAX_LENGTH),
            byte_chars: byte_chars(),
            words: Regex::new(WORD_PATTERN).expect("CLIP word pattern is valid"),
            dropped_chars: Regex::new(r"[[\p{C}\x{FFFD}]--[\t\n\r]]")
                .expect("control character class is valid"),
            space_chars: Regex::new(r"[\t\n\r\p{Zs}]").expect("space class is valid"),
            cache: Mutex::new(HashMap::new()),
        }
    }

    /// Tokenizes `text` into exactly [`max_length`](Self::max_length) ids:
    /// BOS, the text's ids, EOS, then padding.
    ///
    /// Text beyond `max_length - 2` ids is dropped with a warning, as diffusers does.
    pub fn encode(&self, text: &str) -> Vec<u32> {
        let mut ids = self.tokenize(text);
        let room = self.max_length - 2;
        if ids.len() > room {
            tracing::warn!(
                dropped = ids.len() - room,
                max_length = self.max_length,
                "prompt truncated: CLIP keeps only the first {room} tokens, {} tokens were dropped",
                ids.len() - room
            );
            ids.truncate(room);
        }
        let mut out = Vec::with_capacity(self.max_length);
        out.push(self.bos_id);
        out.extend_from_slice(&ids);
        out.push(self.eos_id);
        out.resize(self.max_length, self.pad_id);
        out
    }

    /// The ids of `text` alone: no BOS/EOS, no truncation, no padding.
    pub fn tokenize(&self, text: &str) -> Vec<u32> {
        let mut ids = Vec::new();
        let mut rest = text;
        while !rest.is_empty() {
            match self.find_added(rest) {
                Some((start, len, id)) => {
                    self.tokenize_plain(&rest[..start], &mut ids);
                    ids.push(id);
                    rest = &rest[start + len..];
                }
                None => {
                    self.tokenize_plain(rest, &mut ids);
                    break;
                }
            }
        }
        ids
    }

    /// The sequence length of [`encode`](Self::encode)'s output (77 for CLIP).
    pub fn max_length(&self) -> usize {
        self.max_length
    }

    /// The padding id (`<|endoftext|>` for SD 1.x, `!` for SD 2.x and SDXL's second tokenizer).
    pub fn pad_id(&self) -> u32 {
        self.pad_id
    }

    /// The end-of-text id.
    pub fn eos_id(&self) -> u32 {
        self.eos_id
    }

    /// The start-of-text id.
    pub fn bos_id(&self) -> u32 {
        self.bos_id
    }

    /// The earliest added token in `text`, longest first at equal positions:
    /// `(byte offset, byte length, id)`.
    fn find_added(&self, text: &str) -> Option<(usize, usize, u32)> {
        text.char_indices().find_map(|(i, _)| {
            self.added
                .iter()
                .find(|(token, _)| text[i..].starts_with(token.as_str()))
                .map(|(token, id)| (i, token.len(), *id))
        })
    }

    /// Tokenizes text that holds no added token.
    fn tokenize_plain(&self, text: &str, ids: &mut Vec<u32>) {
        let text = self.clean(text);
        let mut cache = self.cache.lock().unwrap_or_else(|e| e.into_inner());
        for word in self.words.find_iter(&text) {
            let word = word.as_str();
            if let Some(cached) = cache.get(word) {
                ids.extend_from_slice(cached);
                continue;
            }
            let word_ids = self.bpe_ids(word);
            ids.extend_from_slice(&word_ids);
            if cache.len() >= BPE_CACHE_LIMIT {
                cache.clear();
            }
            cache.insert(word.to_string(), word_ids);
        }
    }

    /// BERT's basic tokenizer as CLIP configures it (lower case, accents kept, no
    /// punctuation split), with its tokens joined by single spaces.
    fn clean(&self, text: &str) -> String {
        let text = self.dropped_chars.replace_all(text, "");
        let text = self.space_chars.replace_all(&text, " ");
        let mut spaced = String::with_capacity(text.len());
        for c in text.chars() {
            if is_cjk_ideograph(c) {
                spaced.push(' ');
                spaced.push(c);
                spaced.push(' ');
            } else {
                spaced.push(c);
            }
        }
        let normalized: String = spaced.nfc().collect();
        normalized
            .split_whitespace()
            .map(str::to_lowercase)
            .collect::<Vec<_>>()
            .join(" ")
    }

    /// The ids of one word of the pattern.
    fn bpe_ids(&self, word: &str) -> Vec<u32> {
        if word == START_OF_TEXT || word == END_OF_TEXT {
            return vec![self.id(word)];
        }
        let mut symbols: Vec<String> = word
            .bytes()
            .map(|b| self.byte_chars[usize::from(b)].to_string())
            .collect();
        if let Some(last) = symbols.last_mut() {
            last.push_str("</w>");
        }
        while symbols.len() > 1 {
            let best = symbols
                .windows(2)
                .filter_map(|pair| self.rank(&pair[0], &pair[1]))
                .min();
            let Some(best) = best else { break };
            let mut merged = Vec::with_capacity(symbols.len());
            let mut i = 0;
            while i < symbols.len() {
                if i + 1 < symbols.len() && self.rank(&symbols[i], &symbols[i + 1]) == Some(best) {
                    merged.push(format!("{}{}", symbols[i], symbols[i + 1]));
                    i += 2;
                } else {
                    merged.push(std::mem::take(&mut symbols[i]));
                    i += 1;
                }
            }
            symbols = merged;
        }
        symbols.iter().map(|s| self.id(s)).collect()
    }

    fn rank(&self, first: &str, second: &str) -> Option<u32> {
        self.ranks.get(first)?.get(second).copied()
    }

    fn id(&self, token: &str) -> u32 {
        self.vocab.get(token).copied().unwrap_or(self.unk_id)
    }
}

/// The smallest id above every id in use.
fn next_id(vocab: &Vocab, added: &[(String, u32)]) -> u32 {
    vocab
        .values()
        .chain(added.iter().map(|(_, id)| id))
        .max()
        .map_or(0, |m| m + 1)
}

/// GPT-2's reversible map from bytes to printable characters: printable Latin-1
/// bytes map to themselves, the others to U+0100 onwards in byte order.
fn byte_chars() -> [char; 256] {
    let printable = |b: u8| matches!(b, b'!'..=b'~' | 0xA1..=0xAC | 0xAE..=0xFF);
    let mut chars = ['\0'; 256];
    let mut next = 256u32;
    for b in 0..=255u8 {
        chars[usize::from(b)] = if printable(b) {
            char::from(b)
        } else {
            let c = char::from_u32(next).expect("U+0100..U+0143 are characters");
            next += 1;
            c
        };
    }
    chars
}

/// The CJK ideograph blocks BERT surrounds with spaces.
fn is_cjk_ideograph(c: char) -> bool {
    matches!(
        u32::from(c),
        0x4E00..=0x9FFF
            | 0x3400..=0x4DBF
            | 0x20000..=0x2A6DF
            | 0x2A700..=0x2B73F
            | 0x2B740..=0x2B81F
            | 0x2B820..=0x2CEAF
            | 0xF900..=0xFAFF
            | 0x2F800..=0x2FA1F
    )
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn byte_map_matches_gpt2() {
        let chars = byte_chars();
        assert_eq!(chars[usize::from(b'a')], 'a');
        assert_eq!(chars[0], '\u{100}');
        assert_eq!(chars[usize::from(b' ')], '\u{120}');
        assert_eq!(chars[0xAD], '\u{143}');
        let mut sorted = chars.to_vec();
        sorted.sort();
        sorted.dedup();
        assert_eq!(sorted.len(), 256);
    }
}
