//! The CLIP tokenizer against transformers' slow `CLIPTokenizer` (no ftfy).
//!
//! fixtures/tokenizer-cases.json holds, for every prompt,
//! `tok(prompt, padding="max_length", max_length=77, truncation=True).input_ids`
//! with `pad_token="<|endoftext|>"` (sd1) and `pad_token="!"` (sd2), both on
//! the CLIP vocabulary sd-core bundles, crates/core/assets/clip-vocab (see
//! tools/fixtures/make_fixtures.py, group `tokenizer`).

use std::fs;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use sd_core::tokenizer::ClipTokenizer;
use sd_core::Error;
use serde::Deserialize;

#[derive(Deserialize)]
struct Cases {
    cases: Vec<Case>,
}

#[derive(Deserialize)]
struct Case {
    prompt: String,
    sd1: Vec<u32>,
    sd2: Vec<u32>,
}

fn fixtures() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../fixtures")
}

/// The bundled CLIP vocabulary as a tokenizer folder.
fn vocab_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("assets/clip-vocab")
}

/// A fresh scratch folder for one test.
fn scratch_dir(name: &str) -> PathBuf {
    let dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join(format!("tokenizer-{name}"));
    if dir.exists() {
        fs::remove_dir_all(&dir).unwrap();
    }
    fs::create_dir_all(&dir).unwrap();
    dir
}

/// The bundled vocabulary with an SD 2 style special_tokens_map.json (`pad_token: "!"`).
fn sd2_tokenizer_dir() -> PathBuf {
    let dir = scratch_dir("sd2");
    for file in ["vocab.json", "merges.txt"] {
        fs::copy(vocab_dir().join(file), dir.join(file)).unwrap();
    }
    fs::write(
        dir.join("special_tokens_map.json"),
        r#"{"bos_token": {"content": "<|startoftext|>", "lstrip": false},
            "eos_token": "<|endoftext|>", "unk_token": "<|endoftext|>", "pad_token": "!"}"#,
    )
    .unwrap();
    dir
}

fn cases() -> Vec<Case> {
    let text = fs::read_to_string(fixtures().join("tokenizer-cases.json")).unwrap();
    let cases: Cases = serde_json::from_str(&text).unwrap();
    assert!(cases.cases.len() >= 200, "only {} cases", cases.cases.len());
    cases.cases
}

fn check(tokenizer: &ClipTokenizer, expected: impl Fn(&Case) -> &[u32]) {
    let mut failures = Vec::new();
    let cases = cases();
    for case in &cases {
        let got = tokenizer.encode(&case.prompt);
        if got != expected(case) {
            failures.push(format!(
                "{:?}\n  expected {:?}\n  got      {:?}",
                case.prompt,
                expected(case),
                got
            ));
        }
    }
    assert!(
        failures.is_empty(),
        "{} of {} prompts differ:\n{}",
        failures.len(),
        cases.len(),
        failures.join("\n")
    );
}

#[test]
fn sd1_ids_match_transformers() {
    let tokenizer = ClipTokenizer::from_dir(&vocab_dir()).unwrap();
    assert_eq!(tokenizer.max_length(), 77);
    assert_eq!(tokenizer.bos_id(), 49406);
    assert_eq!(tokenizer.eos_id(), 49407);
    assert_eq!(tokenizer.pad_id(), 49407);
    check(&tokenizer, |case| &case.sd1);
}

#[test]
fn the_bundled_tokenizers_match_transformers() {
    let sd1 = ClipTokenizer::bundled();
    assert_eq!(
        (sd1.max_length(), sd1.bos_id(), sd1.eos_id()),
        (77, 49406, 49407)
    );
    assert_eq!(sd1.pad_id(), 49407);
    check(&sd1, |case| &case.sd1);
    let sd2 = ClipTokenizer::bundled_padded_with("!");
    assert_eq!((sd2.pad_id(), sd2.eos_id()), (0, 49407));
    check(&sd2, |case| &case.sd2);
}

#[test]
fn sd2_ids_match_transformers() {
    let tokenizer = ClipTokenizer::from_dir(&sd2_tokenizer_dir()).unwrap();
    assert_eq!(tokenizer.pad_id(), 0);
    assert_eq!(tokenizer.eos_id(), 49407);
    check(&tokenizer, |case| &case.sd2);
}

#[test]
fn tokenizer_json_gives_the_same_ids() {
    let assets = vocab_dir();
    let vocab: serde_json::Value =
        serde_json::from_str(&fs::read_to_string(assets.join("vocab.json")).unwrap()).unwrap();
    let merges = fs::read_to_string(assets.join("merges.txt")).unwrap();
    // Alternate the two spellings of a merge that tokenizers has used.
    let merges: Vec<serde_json::Value> = merges
        .lines()
        .skip(1)
        .filter(|line| !line.is_empty())
        .enumerate()
        .map(|(i, line)| {
            if i % 2 == 0 {
                serde_json::json!(line)
            } else {
                let (a, b) = line.split_once(' ').unwrap();
                serde_json::json!([a, b])
            }
        })
        .collect();
    let tokenizer_json = serde_json::json!({
        "version": "1.0",
        "added_tokens": [
            {"id": 49406, "content": "<|startoftext|>", "special": true},
            {"id": 49407, "content": "<|endoftext|>", "special": true}
        ],
        "model": {"type": "BPE", "end_of_word_suffix": "</w>", "vocab": vocab, "merges": merges}
    });
    let dir = scratch_dir("json");
    fs::write(dir.join("tokenizer.json"), tokenizer_json.to_string()).unwrap();
    fs::write(
        dir.join("tokenizer_config.json"),
        r#"{"model_max_length": 77, "pad_token": "<|endoftext|>"}"#,
    )
    .unwrap();

    let tokenizer = ClipTokenizer::from_dir(&dir).unwrap();
    let reference = ClipTokenizer::from_dir(&vocab_dir()).unwrap();
    for case in cases() {
        assert_eq!(
            tokenizer.encode(&case.prompt),
            case.sd1,
            "{:?}",
            case.prompt
        );
    }
    assert_eq!(tokenizer.pad_id(), reference.pad_id());
}

#[test]
fn long_prompts_are_truncated_to_max_length() {
    let tokenizer = ClipTokenizer::from_dir(&vocab_dir()).unwrap();
    let ids = tokenizer.encode(&"cat ".repeat(200));
    assert_eq!(ids.len(), 77);
    assert_eq!(ids[0], tokenizer.bos_id());
    assert_eq!(ids[76], tokenizer.eos_id());
    assert_eq!(tokenizer.tokenize(&"cat ".repeat(200)).len(), 200);
}

#[test]
fn tiny_tokenizer_uses_its_own_special_ids() {
    let tokenizer = ClipTokenizer::from_dir(&fixtures().join("tiny-sd15/tokenizer")).unwrap();
    assert_eq!(tokenizer.bos_id(), 998);
    assert_eq!(tokenizer.eos_id(), 999);
    assert_eq!(tokenizer.pad_id(), 999);
}

#[test]
fn missing_and_invalid_files_are_named() {
    let dir = scratch_dir("missing");
    match ClipTokenizer::from_dir(&dir) {
        Err(Error::MissingFile(path)) => assert!(path.ends_with("vocab.json"), "{path:?}"),
        other => panic!("expected MissingFile, got {other:?}"),
    }

    fs::write(dir.join("vocab.json"), r#"{"a": 0}"#).unwrap();
    match ClipTokenizer::from_dir(&dir) {
        Err(Error::MissingFile(path)) => assert!(path.ends_with("merges.txt"), "{path:?}"),
        other => panic!("expected MissingFile, got {other:?}"),
    }

    fs::write(dir.join("merges.txt"), "#version: 0.2\na b c\n").unwrap();
    match ClipTokenizer::from_dir(&dir) {
        Err(Error::InvalidFile { path, message }) => {
            assert!(path.ends_with("merges.txt"), "{path:?}");
            assert!(message.contains("line 2"), "{message}");
        }
        other => panic!("expected InvalidFile, got {other:?}"),
    }

    fs::write(dir.join("merges.txt"), "#version: 0.2\na b\n").unwrap();
    fs::write(dir.join("vocab.json"), "[1, 2]").unwrap();
    match ClipTokenizer::from_dir(&dir) {
        Err(Error::InvalidFile { path, .. }) => assert!(path.ends_with("vocab.json"), "{path:?}"),
        other => panic!("expected InvalidFile, got {other:?}"),
    }

    fs::write(dir.join("vocab.json"), r#"{"a": 0}"#).unwrap();
    fs::write(dir.join("tokenizer_config.json"), r#"{"pad_token": 5}"#).unwrap();
    match ClipTokenizer::from_dir(&dir) {
        Err(Error::InvalidFile { path, message }) => {
            assert!(path.ends_with("tokenizer_config.json"), "{path:?}");
            assert!(message.contains("pad_token"), "{message}");
        }
        other => panic!("expected InvalidFile, got {other:?}"),
    }
}

/// One word of 1 MiB of letters that repeat no pattern: CLIP's merge loop is
/// quadratic in a word's length (a 64 KiB such word took 107 s in the test
/// profile, so a megabyte takes hours), the heap merge takes well under a
/// second. The bound is loose for a loaded two-core test machine (5 s was
/// once exceeded there, at 5.2 s, with other builds running).
#[test]
fn a_megabyte_single_word_tokenizes_in_seconds_at_most() {
    let tokenizer = ClipTokenizer::bundled();
    let mut x: u64 = 0x9E37_79B9_7F4A_7C15;
    let word: String = (0..1 << 20)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            char::from(b'a' + (x % 26) as u8)
        })
        .collect();
    let started = Instant::now();
    let ids = tokenizer.tokenize(&word);
    let elapsed = started.elapsed();
    assert!(ids.len() > 100_000, "{} ids", ids.len());
    assert!(elapsed < Duration::from_secs(60), "took {elapsed:?}");
}
