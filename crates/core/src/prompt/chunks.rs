//! A parsed prompt cut into CLIP-sized chunks the way AUTOMATIC1111 does.
//!
//! Each chunk holds up to 75 tokens of text (CLIP's 77 minus BOS and EOS)
//! with one weight per token, and is encoded on its own; the encodings are
//! then concatenated along the sequence, so a prompt keeps all its tokens.
//! A chunk ends early at `BREAK`, and when a chunk fills up with a comma
//! among its last 20 tokens, the text after that comma moves to the next
//! chunk, so a phrase is not split across two.

use super::a1111::Segment;
use crate::tokenizer::ClipTokenizer;

/// How far back from a full chunk's end a comma may be for the text after
/// it to move on to the next chunk (A1111's "comma padding backtrack").
const COMMA_BACKTRACK: usize = 20;

/// One chunk: BOS, up to 75 token ids, EOS and padding, each with its weight.
#[derive(Debug, Clone, PartialEq)]
pub struct PromptChunk {
    /// Exactly the tokenizer's `max_length` ids.
    pub ids: Vec<u32>,
    /// The weight of each id (1.0 for BOS, EOS and padding).
    pub weights: Vec<f32>,
}

/// Cuts `segments` into chunks; an empty prompt gives one chunk of padding.
pub fn chunk_prompt(segments: &[Segment], tokenizer: &ClipTokenizer) -> Vec<PromptChunk> {
    let mut chunker = Chunker::new(tokenizer);
    for segment in segments {
        match segment {
            Segment::Break => chunker.finish_chunk(),
            Segment::Text { text, weight } => {
                for id in tokenizer.tokenize(text) {
                    chunker.push(id, *weight as f32);
                }
            }
        }
    }
    chunker.finish()
}

/// The chunk being filled and those already complete.
struct Chunker<'a> {
    tokenizer: &'a ClipTokenizer,
    /// Text tokens per chunk.
    capacity: usize,
    comma: Option<u32>,
    ids: Vec<u32>,
    weights: Vec<f32>,
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
            last_comma: None,
            done: Vec::new(),
        }
    }

    fn push(&mut self, id: u32, weight: f32) {
        if Some(id) == self.comma {
            self.last_comma = Some(self.ids.len());
        } else if self.ids.len() == self.capacity {
            if let Some(comma) = self
                .last_comma
                .filter(|&comma| self.ids.len() - comma <= COMMA_BACKTRACK)
            {
                let moved_ids = self.ids.split_off(comma + 1);
                let moved_weights = self.weights.split_off(comma + 1);
                self.finish_chunk();
                self.ids = moved_ids;
                self.weights = moved_weights;
            }
        }
        if self.ids.len() == self.capacity {
            self.finish_chunk();
        }
        self.ids.push(id);
        self.weights.push(weight);
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
        self.done.push(PromptChunk { ids, weights });
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
        chunk_prompt(&parse(prompt), &ClipTokenizer::bundled())
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
        let got = chunk_prompt(&parse("a cat"), &tokenizer);
        assert_eq!(got[0].ids, tokenizer.encode("a cat"));
    }
}
