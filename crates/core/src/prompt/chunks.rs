//! A parsed prompt cut into CLIP-sized chunks the way AUTOMATIC1111 does.
//!
//! Each chunk holds up to 75 tokens of text (CLIP's 77 minus BOS and EOS)
//! with one weight per token, and is encoded on its own; the encodings are
//! then concatenated along the sequence, so a prompt keeps all its tokens.
//! A chunk ends early at `BREAK`, and when a chunk fills up with a comma
//! among its last 20 tokens, the text after that comma moves to the next
//! chunk, so a phrase is not split across two.
//!
//! A textual-inversion embedding's name ([`Trigger`]) found in a text's
//! tokens becomes one placeholder position per vector, with the text's
//! weight, recorded as an [`EmbeddingFix`]; an embedding that does not fit
//! in what is left of a chunk starts the next one (A1111's rules).

use super::a1111::Segment;
use crate::tokenizer::ClipTokenizer;

/// How far back from a full chunk's end a comma may be for the text after
/// it to move on to the next chunk (A1111's "comma padding backtrack").
const COMMA_BACKTRACK: usize = 20;

/// The id a placeholder position holds until the encoder puts an
/// embedding's vector there (A1111's; it is never the end-of-text id, so
/// the pooled position stays the end of the text).
pub const PLACEHOLDER_ID: u32 = 0;

/// An embedding's name as token ids, and how many vectors replace it.
#[derive(Debug, Clone, Copy)]
pub struct Trigger<'a> {
    /// The name's token ids (no BOS/EOS).
    pub ids: &'a [u32],
    /// How many positions its vectors take.
    pub vectors: usize,
}

/// Where an embedding's vectors go in a chunk.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct EmbeddingFix {
    /// The first position (BOS is position 0).
    pub position: usize,
    /// The index of its [`Trigger`].
    pub embedding: usize,
    /// How many of its vectors, from the first, the chunk holds (fewer than
    /// all only where `plain` reading cut the prompt).
    pub count: usize,
}

/// One chunk: BOS, up to 75 token ids, EOS and padding, each with its weight.
#[derive(Debug, Clone, PartialEq)]
pub struct PromptChunk {
    /// Exactly the tokenizer's `max_length` ids.
    pub ids: Vec<u32>,
    /// The weight of each id (1.0 for BOS, EOS and padding).
    pub weights: Vec<f32>,
    /// The embeddings whose vectors replace placeholder ids.
    pub fixes: Vec<EmbeddingFix>,
}

/// Cuts `segments` into chunks; an empty prompt gives one chunk of padding.
/// The names of `triggers` become their embeddings' placeholder positions.
pub fn chunk_prompt(
    segments: &[Segment],
    tokenizer: &ClipTokenizer,
    triggers: &[Trigger<'_>],
) -> Vec<PromptChunk> {
    let mut chunker = Chunker::new(tokenizer);
    for segment in segments {
        match segment {
            Segment::Break => chunker.finish_chunk(),
            Segment::Text { text, weight } => {
                let ids = tokenizer.tokenize(text);
                let mut at = 0;
                while at < ids.len() {
                    match find_trigger(&ids, at, triggers) {
                        Some(k) => {
                            chunker.push_embedding(k, triggers[k].vectors, *weight as f32);
                            at += triggers[k].ids.len();
                        }
                        None => {
                            chunker.push(ids[at], *weight as f32);
                            at += 1;
                        }
                    }
                }
            }
        }
    }
    chunker.finish()
}

/// diffusers' reading of a prompt: its tokens as written with each trigger
/// expanded to its placeholder positions, cut to one window (BOS, at most
/// `max_length - 2` positions, EOS, padding); an embedding cut by the end
/// keeps the vectors that fit.
pub fn plain_chunk(text: &str, tokenizer: &ClipTokenizer, triggers: &[Trigger<'_>]) -> PromptChunk {
    let tokens = tokenizer.tokenize(text);
    let room = tokenizer.max_length().saturating_sub(2);
    let mut ids = vec![tokenizer.bos_id()];
    let mut fixes = Vec::new();
    let mut at = 0;
    while at < tokens.len() {
        match find_trigger(&tokens, at, triggers) {
            Some(k) => {
                fixes.push(EmbeddingFix {
                    position: ids.len(),
                    embedding: k,
                    count: triggers[k].vectors,
                });
                ids.extend(std::iter::repeat_n(PLACEHOLDER_ID, triggers[k].vectors));
                at += triggers[k].ids.len();
            }
            None => {
                ids.push(tokens[at]);
                at += 1;
            }
        }
    }
    if ids.len() > room + 1 {
        tracing::warn!(
            dropped = ids.len() - room - 1,
            "prompt truncated: CLIP keeps only the first {room} tokens"
        );
        ids.truncate(room + 1);
    }
    fixes.retain_mut(|fix| {
        fix.count = fix.count.min((room + 1).saturating_sub(fix.position));
        fix.count > 0
    });
    ids.push(tokenizer.eos_id());
    ids.resize(tokenizer.max_length(), tokenizer.pad_id());
    let weights = vec![1.0; ids.len()];
    PromptChunk {
        ids,
        weights,
        fixes,
    }
}

/// The trigger whose name starts at `ids[at]`, the longest when several do.
fn find_trigger(ids: &[u32], at: usize, triggers: &[Trigger<'_>]) -> Option<usize> {
    triggers
        .iter()
        .enumerate()
        .filter(|(_, t)| !t.ids.is_empty() && ids[at..].starts_with(t.ids))
        .max_by_key(|(k, t)| (t.ids.len(), std::cmp::Reverse(*k)))
        .map(|(k, _)| k)
}

/// The chunk being filled and those already complete.
struct Chunker<'a> {
    tokenizer: &'a ClipTokenizer,
    /// Text tokens per chunk.
    capacity: usize,
    comma: Option<u32>,
    ids: Vec<u32>,
    weights: Vec<f32>,
    /// Embeddings placed in the current chunk, positions counted without BOS.
    fixes: Vec<EmbeddingFix>,
    /// Where the last comma of the current chunk is.
    last_comma: Option<usize>,
    done: Vec<PromptChunk>,
}

impl<'a> Chunker<'a> {
    fn new(tokenizer: &'a ClipTokenizer) -> Self {
        let comma = match tokenizer.tokenize(",").as_slice() {
            [id] => Some(*id),
            _ => None,
        };
        Self {
            tokenizer,
            capacity: tokenizer.max_length().saturating_sub(2).max(1),
            comma,
            ids: Vec::new(),
            weights: Vec::new(),
            fixes: Vec::new(),
            last_comma: None,
            done: Vec::new(),
        }
    }

    fn push(&mut self, id: u32, weight: f32) {
        self.make_room(id);
        self.ids.push(id);
        self.weights.push(weight);
    }

    /// Places embedding `k`'s `vectors` positions, in a new chunk if the
    /// current one has no room for all of them.
    fn push_embedding(&mut self, k: usize, vectors: usize, weight: f32) {
        self.make_room(PLACEHOLDER_ID);
        if self.ids.len() + vectors > self.capacity {
            self.finish_chunk();
        }
        self.fixes.push(EmbeddingFix {
            position: self.ids.len(),
            embedding: k,
            count: vectors,
        });
        self.ids
            .extend(std::iter::repeat_n(PLACEHOLDER_ID, vectors));
        self.weights.extend(std::iter::repeat_n(weight, vectors));
    }

    /// Before `id` is added: notes a comma, or when the chunk is full moves
    /// the text after a recent comma on, and starts a new chunk if needed.
    fn make_room(&mut self, id: u32) {
        if Some(id) == self.comma {
            self.last_comma = Some(self.ids.len());
        } else if self.ids.len() == self.capacity {
            if let Some(comma) = self
                .last_comma
                .filter(|&comma| self.ids.len() - comma <= COMMA_BACKTRACK)
            {
                let moved_ids = self.ids.split_off(comma + 1);
                let moved_weights = self.weights.split_off(comma + 1);
                let (kept, moved): (Vec<_>, Vec<_>) =
                    self.fixes.drain(..).partition(|f| f.position <= comma);
                self.fixes = kept;
                self.finish_chunk();
                self.ids = moved_ids;
                self.weights = moved_weights;
                self.fixes = moved
                    .into_iter()
                    .map(|f| EmbeddingFix {
                        position: f.position - (comma + 1),
                        ..f
                    })
                    .collect();
            }
        }
        if self.ids.len() == self.capacity {
            self.finish_chunk();
        }
    }

    /// Closes the current chunk, even when empty (as `BREAK` does).
    fn finish_chunk(&mut self) {
        let tokenizer = self.tokenizer;
        let length = self.capacity + 2;
        let mut ids = Vec::with_capacity(length);
        ids.push(tokenizer.bos_id());
        ids.append(&mut self.ids);
        ids.push(tokenizer.eos_id());
        // Padding follows the first EOS with the tokenizer's pad id (EOS
        // itself for SD 1.x, `!` for OpenCLIP's tokenizers).
        ids.resize(length, tokenizer.pad_id());
        let mut weights = Vec::with_capacity(length);
        weights.push(1.0);
        weights.append(&mut self.weights);
        weights.resize(length, 1.0);
        let fixes = self
            .fixes
            .drain(..)
            .map(|f| EmbeddingFix {
                position: f.position + 1,
                ..f
            })
            .collect();
        self.done.push(PromptChunk {
            ids,
            weights,
            fixes,
        });
        self.last_comma = None;
    }

    fn finish(mut self) -> Vec<PromptChunk> {
        if !self.ids.is_empty() || self.done.is_empty() {
            self.finish_chunk();
        }
        self.done
    }
}

#[cfg(test)]
mod tests {
    use super::super::a1111::parse;
    use super::*;

    fn chunks(prompt: &str) -> Vec<PromptChunk> {
        chunk_prompt(&parse(prompt), &ClipTokenizer::bundled(), &[])
    }

    /// The text ids of a chunk: between BOS and the first EOS.
    fn text_ids(chunk: &PromptChunk) -> &[u32] {
        let tokenizer = ClipTokenizer::bundled();
        let end = chunk
            .ids
            .iter()
            .position(|&id| id == tokenizer.eos_id())
            .unwrap();
        &chunk.ids[1..end]
    }

    #[test]
    fn a_short_prompt_is_one_chunk_like_plain_encoding() {
        let tokenizer = ClipTokenizer::bundled();
        let got = chunks("a photo of a cat");
        assert_eq!(got.len(), 1);
        assert_eq!(got[0].ids, tokenizer.encode("a photo of a cat"));
        assert!(got[0].weights.iter().all(|&w| w == 1.0));
        assert_eq!(chunks("")[0].ids, tokenizer.encode(""));
    }

    #[test]
    fn weights_follow_their_tokens() {
        let got = &chunks("a (red:1.5) [cat]")[0];
        let tokenizer = ClipTokenizer::bundled();
        let red = tokenizer.tokenize("red")[0];
        let cat = tokenizer.tokenize("cat")[0];
        let at = |id| got.ids.iter().position(|&x| x == id).unwrap();
        assert_eq!(got.weights[at(red)], 1.5);
        assert_eq!(got.weights[at(cat)], (1.0 / 1.1) as f32);
        assert_eq!(got.weights[0], 1.0);
    }

    #[test]
    fn long_prompts_keep_every_token_in_chunks_of_75() {
        let prompt = vec!["cat"; 160].join(" ");
        let got = chunks(&prompt);
        assert_eq!(got.len(), 3);
        assert!(got.iter().all(|c| c.ids.len() == 77));
        let lengths: Vec<usize> = got.iter().map(|c| text_ids(c).len()).collect();
        assert_eq!(lengths, [75, 75, 10]);
    }

    #[test]
    fn a_full_chunk_moves_the_words_after_a_late_comma_on() {
        // 70 words, a comma, then 10 more: the chunk fills at the 75th token,
        // 4 after the comma, so those move on.
        let prompt = format!("{}, {}", ["cat"; 70].join(" "), ["dog"; 10].join(" "));
        let got = chunks(&prompt);
        let lengths: Vec<usize> = got.iter().map(|c| text_ids(c).len()).collect();
        assert_eq!(lengths, [71, 10]);
        // A comma too far back (more than 20 tokens) does not.
        let prompt = format!("{}, {}", ["cat"; 40].join(" "), ["dog"; 40].join(" "));
        let lengths: Vec<usize> = chunks(&prompt).iter().map(|c| text_ids(c).len()).collect();
        assert_eq!(lengths, [75, 6]);
    }

    #[test]
    fn break_starts_a_new_chunk() {
        let got = chunks("a red house BREAK a blue sky");
        assert_eq!(got.len(), 2);
        let tokenizer = ClipTokenizer::bundled();
        assert_eq!(got[0].ids, tokenizer.encode("a red house"));
        assert_eq!(got[1].ids, tokenizer.encode("a blue sky"));
        assert_eq!(chunks("BREAK").len(), 1);
    }

    #[test]
    fn padding_after_eos_uses_the_pad_token() {
        let tokenizer = ClipTokenizer::bundled_padded_with("!");
        let got = chunk_prompt(&parse("a cat"), &tokenizer, &[]);
        assert_eq!(got[0].ids, tokenizer.encode("a cat"));
    }

    /// A trigger for `name` with `vectors` positions, in the bundled tokenizer.
    fn trigger_ids(name: &str) -> Vec<u32> {
        ClipTokenizer::bundled().tokenize(name)
    }

    #[test]
    fn an_embedding_name_becomes_one_weighted_position_per_vector() {
        let tokenizer = ClipTokenizer::bundled();
        let ids = trigger_ids("easynegative");
        assert!(ids.len() > 1, "the name should take several tokens");
        let triggers = [Trigger {
            ids: &ids,
            vectors: 3,
        }];
        let got = chunk_prompt(
            &parse("a cat, (easynegative:1.2) dog"),
            &tokenizer,
            &triggers,
        );
        assert_eq!(got.len(), 1);
        let chunk = &got[0];
        let before = tokenizer.tokenize("a cat,").len();
        let at = 1 + before;
        assert_eq!(
            chunk.fixes,
            [EmbeddingFix {
                position: at,
                embedding: 0,
                count: 3
            }]
        );
        assert_eq!(chunk.ids[at..at + 3], [PLACEHOLDER_ID; 3]);
        assert_eq!(chunk.weights[at..at + 3], [1.2; 3]);
        assert_eq!(chunk.ids[at + 3], tokenizer.tokenize("dog")[0]);
        // Plain reading puts the vectors at the same place, unweighted.
        let plain = plain_chunk("a cat, easynegative dog", &tokenizer, &triggers);
        assert_eq!(plain.ids, chunk.ids);
        assert_eq!(plain.fixes, chunk.fixes);
    }

    #[test]
    fn embedding_vectors_count_toward_the_chunk_and_do_not_straddle_it() {
        let tokenizer = ClipTokenizer::bundled();
        let ids = trigger_ids("easynegative");
        let triggers = [Trigger {
            ids: &ids,
            vectors: 8,
        }];
        // 70 words leave 5 positions: the 8 vectors start the next chunk.
        let prompt = format!("{} easynegative", ["cat"; 70].join(" "));
        let got = chunk_prompt(&parse(&prompt), &tokenizer, &triggers);
        let lengths: Vec<usize> = got.iter().map(|c| text_ids(c).len()).collect();
        assert_eq!(lengths, [70, 8]);
        assert!(got[0].fixes.is_empty());
        assert_eq!(got[1].fixes[0].position, 1);
        // 60 words leave room for them.
        let prompt = format!("{} easynegative cat", ["cat"; 60].join(" "));
        let got = chunk_prompt(&parse(&prompt), &tokenizer, &triggers);
        let lengths: Vec<usize> = got.iter().map(|c| text_ids(c).len()).collect();
        assert_eq!(lengths, [69]);
        // Plain reading cuts them at the window's end.
        let prompt = format!("{} easynegative", ["cat"; 70].join(" "));
        let plain = plain_chunk(&prompt, &tokenizer, &triggers);
        assert_eq!(plain.fixes[0].count, 5);
        assert_eq!(plain.ids[76], tokenizer.eos_id());
    }

    #[test]
    fn embeddings_after_a_late_comma_move_with_their_text() {
        let tokenizer = ClipTokenizer::bundled();
        let ids = trigger_ids("easynegative");
        let triggers = [Trigger {
            ids: &ids,
            vectors: 2,
        }];
        // 70 words, a comma, the embedding and more words: the chunk fills
        // after the comma, so the embedding moves on with the words.
        let prompt = format!(
            "{}, easynegative {}",
            ["cat"; 70].join(" "),
            ["dog"; 10].join(" ")
        );
        let got = chunk_prompt(&parse(&prompt), &tokenizer, &triggers);
        assert_eq!(got.len(), 2);
        assert!(got[0].fixes.is_empty());
        assert_eq!(got[1].fixes[0].position, 1);
        assert_eq!(got[1].ids[1..3], [PLACEHOLDER_ID; 2]);
    }

    #[test]
    fn the_longest_name_wins() {
        let tokenizer = ClipTokenizer::bundled();
        let short = trigger_ids("bad");
        let long = trigger_ids("bad hands");
        let triggers = [
            Trigger {
                ids: &short,
                vectors: 1,
            },
            Trigger {
                ids: &long,
                vectors: 2,
            },
        ];
        let got = &chunk_prompt(&parse("bad hands, bad"), &tokenizer, &triggers)[0];
        let used: Vec<usize> = got.fixes.iter().map(|f| f.embedding).collect();
        assert_eq!(used, [1, 0]);
    }
}
