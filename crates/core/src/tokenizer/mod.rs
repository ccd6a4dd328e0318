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
//!    printable characters and merged by BPE (the last symbol carries `</w>`),
//!    in O(n log n) per word ([`bpe`]) where CLIP's loop is quadratic;
//! 4. the ids are wrapped in BOS/EOS, truncated to `max_length` and padded.

use std::collections::HashMap;
use std::sync::Mutex;

use regex::Regex;
use unicode_normalization::UnicodeNormalization;

use bpe::MergeTable;

mod bpe;
mod files;

pub use files::{BUNDLED_MERGES_TXT, BUNDLED_VOCAB_JSON};

/// Words cached with their BPE ids before the cache is cleared.
const BPE_CACHE_LIMIT: usize = 16_384;

/// Longer words are not cached, so the cache holds at most
/// `BPE_CACHE_LIMIT × BPE_CACHE_MAX_WORD` bytes of words whatever the prompts.
const BPE_CACHE_MAX_WORD: usize = 64;

/// transformers reads at most this many merges from `merges.txt`.
const MAX_MERGES: usize = 49152 - 256 - 2;

/// The sequence length used when the config does not give a usable one.
const DEFAULT_MAX_LENGTH: usize = 77;

const START_OF_TEXT: &str = "<|startoftext|>";
const END_OF_TEXT: &str = "<|endoftext|>";

/// CLIP's word pattern, as in `tokenization_clip.py` (compiled case-insensitive there too).
const WORD_PATTERN: &str = r"(?i)<\|startoftext\|>|<\|endoftext\|>|'s|'t|'re|'ve|'m|'ll|'d|[\p{L}]+|[\p{N}]|[^\s\p{L}\p{N}]+";

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
    /// The merges over interned symbols.
    merges: MergeTable,
    /// The vocabulary id of every symbol of `merges` (`unk_id` when absent).
    symbol_ids: Vec<u32>,
    /// Added tokens, longest first, matched verbatim before any cleaning.
    added: Vec<(String, u32)>,
    bos_id: u32,
    eos_id: u32,
    pad_id: u32,
    unk_id: u32,
    max_length: usize,
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

impl ClipTokenizer {
    fn new(mut vocab: Vocab, merges: Merges, special: SpecialTokens) -> Self {
        let merges = MergeTable::new(&byte_chars(), merges);

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
        let symbol_ids = merges
            .texts()
            .iter()
            .map(|text| vocab.get(text).copied().unwrap_or(unk_id))
            .collect();

        Self {
            vocab,
            merges,
            symbol_ids,
            added,
            bos_id,
            eos_id,
            pad_id,
            unk_id,
            max_length: special.max_length.unwrap_or(DEFAULT_MAX_LENGTH),
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
            if word.len() > BPE_CACHE_MAX_WORD {
                continue;
            }
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
        self.merges
            .merge(word.as_bytes())
            .into_iter()
            .map(|symbol| self.symbol_ids[symbol as usize])
            .collect()
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
