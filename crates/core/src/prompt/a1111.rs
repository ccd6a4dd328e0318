//! AUTOMATIC1111's prompt syntax: emphasis brackets and `BREAK`.
//!
//! The rules are those of A1111's `prompt_parser.parse_prompt_attention`:
//! - `(text)` multiplies the weight of `text` by 1.1, `[text]` divides it by
//!   1.1, `(text:1.3)` sets the factor; nesting multiplies.
//! - `\(`, `\)`, `\[`, `\]` and `\\` are the characters themselves.
//! - A bracket left open applies to the end of the prompt; a closing one with
//!   nothing open is kept as text.
//! - `BREAK` (upper case, a word of its own) ends the current 75-token chunk.
//! - Neighbouring pieces of equal weight are merged, so the result is the
//!   shortest list of runs.

/// One piece of a parsed prompt.
#[derive(Debug, Clone, PartialEq)]
pub enum Segment {
    /// Text and the factor its tokens' embeddings are multiplied by.
    Text {
        /// The text, brackets and escapes removed.
        text: String,
        /// 1.0 unless emphasised.
        weight: f64,
    },
    /// `BREAK`: the text after it starts a new chunk.
    Break,
}

/// The factor of `( )`.
const ROUND_BRACKET_FACTOR: f64 = 1.1;
/// The factor of `[ ]`.
const SQUARE_BRACKET_FACTOR: f64 = 1.0 / 1.1;

/// What the scanner found at one position of the prompt.
enum Token<'a> {
    /// Text as written (an escape yields its character, a lone `\` nothing).
    Literal(&'a str),
    /// Plain text, which may contain `BREAK`.
    Run(&'a str),
    OpenRound,
    OpenSquare,
    /// `:1.3)`, with the factor.
    WeightClose(f64),
    CloseRound,
    CloseSquare,
}

/// Parses a prompt in A1111's syntax.
///
/// An empty prompt gives one empty text of weight 1.0, as in A1111.
pub fn parse(prompt: &str) -> Vec<Segment> {
    // The weight of each entry; a `BREAK` has none.
    let mut pieces: Vec<(String, Option<f64>)> = Vec::new();
    let mut round: Vec<usize> = Vec::new();
    let mut square: Vec<usize> = Vec::new();
    let multiply_from = |pieces: &mut Vec<(String, Option<f64>)>, start: usize, factor: f64| {
        for (_, weight) in &mut pieces[start..] {
            if let Some(weight) = weight {
                *weight *= factor;
            }
        }
    };
    let mut rest = prompt;
    while let Some((token, after)) = next_token(rest) {
        let written = &rest[..rest.len() - after.len()];
        rest = after;
        match token {
            Token::Literal(text) => pieces.push((text.to_string(), Some(1.0))),
            Token::OpenRound => round.push(pieces.len()),
            Token::OpenSquare => square.push(pieces.len()),
            Token::WeightClose(factor) if !round.is_empty() => {
                let start = round.pop().unwrap_or_default();
                multiply_from(&mut pieces, start, factor);
            }
            Token::CloseRound if !round.is_empty() => {
                let start = round.pop().unwrap_or_default();
                multiply_from(&mut pieces, start, ROUND_BRACKET_FACTOR);
            }
            Token::CloseSquare if !square.is_empty() => {
                let start = square.pop().unwrap_or_default();
                multiply_from(&mut pieces, start, SQUARE_BRACKET_FACTOR);
            }
            Token::WeightClose(_) | Token::CloseRound | Token::CloseSquare => {
                push_run(&mut pieces, written)
            }
            Token::Run(text) => push_run(&mut pieces, text),
        }
    }
    for start in round {
        multiply_from(&mut pieces, start, ROUND_BRACKET_FACTOR);
    }
    for start in square {
        multiply_from(&mut pieces, start, SQUARE_BRACKET_FACTOR);
    }
    if pieces.is_empty() {
        pieces.push((String::new(), Some(1.0)));
    }
    merge_equal_weights(pieces)
}

/// Splits a run of plain text at `BREAK`s into texts of weight 1.0.
fn push_run(pieces: &mut Vec<(String, Option<f64>)>, text: &str) {
    let mut rest = text;
    loop {
        match find_break(rest) {
            Some((start, end)) => {
                pieces.push((rest[..start].to_string(), Some(1.0)));
                pieces.push(("BREAK".to_string(), None));
                rest = &rest[end..];
            }
            None => {
                pieces.push((rest.to_string(), Some(1.0)));
                return;
            }
        }
    }
}

/// The first `\s*\bBREAK\b\s*` in `text`, as a byte range.
fn find_break(text: &str) -> Option<(usize, usize)> {
    let is_word = |c: char| c.is_alphanumeric() || c == '_';
    let mut from = 0;
    while let Some(found) = text[from..].find("BREAK") {
        let start = from + found;
        let end = start + "BREAK".len();
        let before_ok = !text[..start].chars().next_back().is_some_and(is_word);
        let after_ok = !text[end..].chars().next().is_some_and(is_word);
        if before_ok && after_ok {
            let trimmed_start = text[..start].trim_end().len();
            let trimmed_end = text.len() - text[end..].trim_start().len();
            return Some((trimmed_start, trimmed_end));
        }
        from = start + 1;
    }
    None
}

/// Joins neighbours of equal weight (a `BREAK` equals only a `BREAK`).
fn merge_equal_weights(pieces: Vec<(String, Option<f64>)>) -> Vec<Segment> {
    let mut merged: Vec<(String, Option<f64>)> = Vec::with_capacity(pieces.len());
    for (text, weight) in pieces {
        match merged.last_mut() {
            Some((last_text, last_weight)) if *last_weight == weight => last_text.push_str(&text),
            _ => merged.push((text, weight)),
        }
    }
    merged
        .into_iter()
        .map(|(text, weight)| match weight {
            Some(weight) => Segment::Text { text, weight },
            None => Segment::Break,
        })
        .collect()
}

/// The next token of `text` and what follows it.
fn next_token(text: &str) -> Option<(Token<'_>, &str)> {
    let mut chars = text.chars();
    let first = chars.next()?;
    let token = match first {
        '\\' => {
            return Some(match chars.next() {
                Some(c @ ('(' | ')' | '[' | ']' | '\\')) => {
                    let end = 1 + c.len_utf8();
                    (Token::Literal(&text[1..end]), &text[end..])
                }
                _ => (Token::Literal(""), &text[1..]),
            })
        }
        '(' => Token::OpenRound,
        '[' => Token::OpenSquare,
        ')' => Token::CloseRound,
        ']' => Token::CloseSquare,
        ':' => {
            if let Some((factor, after)) = weight_close(&text[1..]) {
                return Some((Token::WeightClose(factor), after));
            }
            return Some((Token::Run(&text[..1]), &text[1..]));
        }
        _ => {
            let end = text
                .find(['\\', '(', ')', '[', ']', ':'])
                .unwrap_or(text.len());
            return Some((Token::Run(&text[..end]), &text[end..]));
        }
    };
    Some((token, &text[1..]))
}

/// After a `:`, `\s*([+-]?[.\d]+)\s*\)`: the factor and what follows the `)`.
fn weight_close(text: &str) -> Option<(f64, &str)> {
    let body = text.trim_start();
    let sign = usize::from(body.starts_with(['+', '-']));
    let digits = body[sign..]
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(body.len() - sign);
    if digits == 0 {
        return None;
    }
    let number = &body[..sign + digits];
    let after = body[sign + digits..].trim_start().strip_prefix(')')?;
    // A1111 fails on a number such as `1.2.3`; here that `:` stays text.
    let factor = number.parse::<f64>().ok()?;
    Some((factor, after))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn text(text: &str, weight: f64) -> Segment {
        Segment::Text {
            text: text.into(),
            weight,
        }
    }

    /// The examples of A1111's `parse_prompt_attention` docstring, with its
    /// expected values as Python prints them.
    #[test]
    fn follows_a1111s_documented_examples() {
        assert_eq!(parse("normal text"), [text("normal text", 1.0)]);
        assert_eq!(
            parse("an (important) word"),
            [text("an ", 1.0), text("important", 1.1), text(" word", 1.0)]
        );
        assert_eq!(parse("(unbalanced"), [text("unbalanced", 1.1)]);
        assert_eq!(parse(r"\(literal\]"), [text("(literal]", 1.0)]);
        assert_eq!(
            parse("(unnecessary)(parens)"),
            [text("unnecessaryparens", 1.1)]
        );
        assert_eq!(
            parse("a (((house:1.3)) [on] a (hill:0.5), sun, (((sky)))."),
            [
                text("a ", 1.0),
                text("house", 1.5730000000000004),
                text(" ", 1.1),
                text("on", 1.0),
                text(" a ", 1.1),
                text("hill", 0.55),
                text(", sun, ", 1.1),
                text("sky", 1.4641000000000006),
                text(".", 1.1),
            ]
        );
    }

    #[test]
    fn break_ends_a_chunk_only_as_a_word_of_its_own() {
        assert_eq!(
            parse("a red house  BREAK\n a (blue:1.2) sky"),
            [
                text("a red house", 1.0),
                Segment::Break,
                text("a ", 1.0),
                text("blue", 1.2),
                text(" sky", 1.0),
            ]
        );
        assert_eq!(
            parse("BREAKING news, break"),
            [text("BREAKING news, break", 1.0)]
        );
        assert_eq!(
            parse("BREAK"),
            [text("", 1.0), Segment::Break, text("", 1.0)]
        );
    }

    #[test]
    fn stray_brackets_and_colons_stay_text() {
        assert_eq!(parse("a) b] c:1.5) d"), [text("a) b] c:1.5) d", 1.0)]);
        assert_eq!(parse("time: 5pm"), [text("time: 5pm", 1.0)]);
        assert_eq!(parse("(a:1.2.3)"), [text("a:1.2.3", 1.1)]);
        assert_eq!(parse("[a:-0.5)"), [text("a:-0.5)", 1.0 / 1.1)]);
        assert_eq!(parse("(a: -0.5 )"), [text("a", -0.5)]);
        assert_eq!(
            parse(r"back\slash \\ end\"),
            [text(r"backslash \ end", 1.0)]
        );
        assert_eq!(parse(""), [text("", 1.0)]);
    }

    #[test]
    fn square_brackets_divide_and_nest() {
        assert_eq!(
            parse("[[faint]] ((strong))"),
            [
                text("faint", 1.0 / 1.1 / 1.1),
                text(" ", 1.0),
                text("strong", 1.1 * 1.1),
            ]
        );
    }
}
