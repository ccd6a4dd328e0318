//! Byte-pair merging of one word in O(n log n).
//!
//! CLIP's `bpe` repeatedly takes the lowest-ranked pair of adjacent symbols
//! and merges every occurrence of it, left to right, in one pass over the
//! word: quadratic in the word's length, which a long single-word prompt
//! exploits. [`MergeTable::merge`] gives the same symbols with a heap of
//! candidate pairs over a linked list of symbols: each pass pops every
//! occurrence of the lowest rank in position order (so overlapping pairs
//! resolve leftmost first, as in CLIP), and the pairs its merges create join
//! the heap only after the pass, as they join CLIP's next pass.

use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap};
use std::hash::{BuildHasherDefault, Hasher};

use super::Merges;

/// Marks a link to no symbol, and a symbol merged into its left neighbour.
const NONE: u32 = u32::MAX;

/// The suffix CLIP appends to the last symbol of a word.
pub(super) const END_OF_WORD: &str = "</w>";

/// A multiplicative hash for pairs of symbol ids: the pair table is fixed
/// once built, so lookups need speed, not SipHash's resistance to chosen keys.
#[derive(Default)]
struct PairHasher(u64);

impl Hasher for PairHasher {
    fn write(&mut self, bytes: &[u8]) {
        for &b in bytes {
            self.write_u32(u32::from(b));
        }
    }

    fn write_u32(&mut self, i: u32) {
        self.0 = (self.0.rotate_left(5) ^ u64::from(i)).wrapping_mul(0x51_7c_c1_b7_27_22_0a_95);
    }

    fn finish(&self) -> u64 {
        self.0
    }
}

/// The merges of a vocabulary over interned symbols.
pub(super) struct MergeTable {
    /// `(left, right)` → `(rank, merged)`; lower ranks merge first. A pair
    /// listed twice keeps its last rank, as transformers' `bpe_ranks` dict does.
    pairs: HashMap<(u32, u32), (u32, u32), BuildHasherDefault<PairHasher>>,
    /// Every symbol's text, by symbol id: ids 0..256 are the byte characters,
    /// 256..512 the same followed by `</w>`, the rest what merges read or make.
    texts: Vec<String>,
}

/// One symbol of a word being merged, in a doubly linked list.
#[derive(Clone, Copy)]
struct Node {
    symbol: u32,
    prev: u32,
    next: u32,
}

impl MergeTable {
    /// Interns the byte characters and every merge's parts and result.
    pub(super) fn new(byte_chars: &[char; 256], merges: Merges) -> Self {
        let mut ids: HashMap<String, u32> = HashMap::new();
        let mut texts: Vec<String> = Vec::new();
        let mut intern = |text: String| -> u32 {
            *ids.entry(text).or_insert_with_key(|text| {
                texts.push(text.clone());
                (texts.len() - 1) as u32
            })
        };
        for suffix in ["", END_OF_WORD] {
            for c in byte_chars {
                intern(format!("{c}{suffix}"));
            }
        }
        let mut pairs = HashMap::with_capacity_and_hasher(merges.len(), Default::default());
        for (rank, (first, second)) in (0u32..).zip(merges) {
            let merged = intern(format!("{first}{second}"));
            let pair = (intern(first), intern(second));
            pairs.insert(pair, (rank, merged));
        }
        Self { pairs, texts }
    }

    /// Every symbol's text, by symbol id.
    pub(super) fn texts(&self) -> &[String] {
        &self.texts
    }

    /// The symbols CLIP's `bpe` turns the UTF-8 bytes of `word` into (the last
    /// byte carrying `</w>`), in order.
    pub(super) fn merge(&self, word: &[u8]) -> Vec<u32> {
        let n = word.len();
        let mut nodes: Vec<Node> = word
            .iter()
            .enumerate()
            .map(|(i, &b)| Node {
                symbol: u32::from(b) + if i + 1 == n { 256 } else { 0 },
                prev: if i == 0 { NONE } else { i as u32 - 1 },
                next: if i + 1 == n { NONE } else { i as u32 + 1 },
            })
            .collect();
        // Queued pairs as `rank << 32 | position`: lowest rank first, leftmost first.
        let queued = |rank: u32, pos: u32| Reverse(u64::from(rank) << 32 | u64::from(pos));
        let mut heap: BinaryHeap<Reverse<u64>> = (0..n.saturating_sub(1) as u32)
            .filter_map(|pos| self.pair_at(&nodes, pos).map(|(rank, _)| queued(rank, pos)))
            .collect();
        let mut merged_in_pass = Vec::new();
        while let Some(&Reverse(top)) = heap.peek() {
            let rank = (top >> 32) as u32;
            while let Some(&Reverse(entry)) = heap.peek() {
                if (entry >> 32) as u32 != rank {
                    break;
                }
                heap.pop();
                let pos = entry as u32;
                // Stale when either symbol changed since the pair was queued.
                let Some((current, merged)) = self.pair_at(&nodes, pos) else {
                    continue;
                };
                if current != rank {
                    continue;
                }
                let right = nodes[pos as usize].next;
                let after = nodes[right as usize].next;
                nodes[pos as usize].symbol = merged;
                nodes[pos as usize].next = after;
                nodes[right as usize].symbol = NONE;
                if after != NONE {
                    nodes[after as usize].prev = pos;
                }
                merged_in_pass.push(pos);
            }
            for pos in merged_in_pass.drain(..) {
                let prev = nodes[pos as usize].prev;
                for left in [prev, pos] {
                    if let Some((rank, _)) = self.pair_at(&nodes, left) {
                        heap.push(queued(rank, left));
                    }
                }
            }
        }
        let mut symbols = Vec::new();
        let mut pos = if n == 0 { NONE } else { 0 };
        while pos != NONE {
            symbols.push(nodes[pos as usize].symbol);
            pos = nodes[pos as usize].next;
        }
        symbols
    }

    /// The rank and result of merging the live symbol at `pos` with the next one.
    fn pair_at(&self, nodes: &[Node], pos: u32) -> Option<(u32, u32)> {
        if pos == NONE {
            return None;
        }
        let node = nodes[pos as usize];
        if node.symbol == NONE || node.next == NONE {
            return None;
        }
        let right = nodes[node.next as usize].symbol;
        self.pairs.get(&(node.symbol, right)).copied()
    }
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use super::*;
    use crate::tokenizer::{byte_chars, BUNDLED_MERGES_TXT};

    /// CLIP's `bpe` as `tokenization_clip.py` writes it: the quadratic loop the
    /// heap must agree with.
    fn reference(
        word: &[u8],
        chars: &[char; 256],
        ranks: &HashMap<(&str, &str), u32>,
    ) -> Vec<String> {
        let mut symbols: Vec<String> = word
            .iter()
            .map(|&b| chars[usize::from(b)].to_string())
            .collect();
        if let Some(last) = symbols.last_mut() {
            last.push_str(END_OF_WORD);
        }
        let rank = |a: &str, b: &str| ranks.get(&(a, b)).copied();
        while symbols.len() > 1 {
            let Some(best) = symbols.windows(2).filter_map(|p| rank(&p[0], &p[1])).min() else {
                break;
            };
            let mut merged = Vec::with_capacity(symbols.len());
            let mut i = 0;
            while i < symbols.len() {
                if i + 1 < symbols.len() && rank(&symbols[i], &symbols[i + 1]) == Some(best) {
                    merged.push(format!("{}{}", symbols[i], symbols[i + 1]));
                    i += 2;
                } else {
                    merged.push(std::mem::take(&mut symbols[i]));
                    i += 1;
                }
            }
            symbols = merged;
        }
        symbols
    }

    fn bundled_merges() -> Merges {
        BUNDLED_MERGES_TXT
            .lines()
            .skip(1)
            .filter_map(|line| line.split_once(' '))
            .map(|(a, b)| (a.to_string(), b.to_string()))
            .collect()
    }

    /// xorshift: words that repeat no pattern, the reference loop's worst case.
    fn words(seed: u64, count: usize, alphabet: &[&str]) -> Vec<Vec<u8>> {
        let mut x = seed;
        let mut next = move || {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x
        };
        (0..count)
            .map(|_| {
                let len = 1 + (next() % 200) as usize;
                (0..len)
                    .flat_map(|_| alphabet[(next() % alphabet.len() as u64) as usize].bytes())
                    .collect()
            })
            .collect()
    }

    #[test]
    fn the_heap_merges_as_clip_does() {
        let chars = byte_chars();
        let merges = bundled_merges();
        let ranks: HashMap<(&str, &str), u32> = (0u32..)
            .zip(&merges)
            .map(|(rank, (a, b))| ((a.as_str(), b.as_str()), rank))
            .collect();
        let table = MergeTable::new(&chars, merges.clone());
        let letters: Vec<String> = ('a'..='z').map(String::from).collect();
        let letters: Vec<&str> = letters.iter().map(String::as_str).collect();
        let mut cases = words(1, 400, &letters);
        cases.extend(words(2, 200, &["a", "b"]));
        cases.extend(words(3, 200, &["e", "é", "ß", "猫", "-", "!", "0"]));
        cases.extend(["aaaaaaa", "ababab", "lllllllllll", "", "x"].map(|w| w.as_bytes().to_vec()));
        for word in cases {
            let got: Vec<&str> = table
                .merge(&word)
                .into_iter()
                .map(|s| table.texts()[s as usize].as_str())
                .collect();
            assert_eq!(
                got,
                reference(&word, &chars, &ranks),
                "{:?}",
                String::from_utf8_lossy(&word)
            );
        }
    }

    /// A pair listed twice keeps its last rank, so it merges after the pair
    /// ranked between its two listings.
    #[test]
    fn a_repeated_merge_keeps_its_last_rank() {
        let chars = byte_chars();
        let merges: Merges = [("a", "b"), ("b", "c"), ("a", "b")]
            .map(|(a, b)| (a.to_string(), b.to_string()))
            .to_vec();
        let table = MergeTable::new(&chars, merges);
        let got: Vec<&str> = table
            .merge(b"abcx")
            .into_iter()
            .map(|s| table.texts()[s as usize].as_str())
            .collect();
        assert_eq!(got, ["a", "bc", "x</w>"]);
    }
}
