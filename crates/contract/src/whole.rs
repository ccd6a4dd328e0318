//! Whole numbers as JSON Schema counts them: `480` and `480.0` alike.
//!
//! JSON has one number type, and JSON Schema's `integer` accepts any number
//! whose fraction is zero, so a client whose language writes `480.0` (Python's
//! `json.dumps` of a float does) sends a valid width. serde's integers refuse
//! it; [`option`] takes it, and still refuses `480.5`, negatives and values
//! out of the target's range.

use std::fmt;
use std::marker::PhantomData;

use serde::de::{self, Deserializer, Visitor};

/// Deserialises an optional whole number (absent or `null`: `None`).
pub fn option<'de, D, T>(deserializer: D) -> Result<Option<T>, D::Error>
where
    D: Deserializer<'de>,
    T: TryFrom<u64>,
{
    deserializer.deserialize_option(OptionVisitor(PhantomData))
}

struct OptionVisitor<T>(PhantomData<T>);

impl<'de, T: TryFrom<u64>> Visitor<'de> for OptionVisitor<T> {
    type Value = Option<T>;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a whole number or null")
    }

    fn visit_none<E: de::Error>(self) -> Result<Self::Value, E> {
        Ok(None)
    }

    fn visit_unit<E: de::Error>(self) -> Result<Self::Value, E> {
        Ok(None)
    }

    fn visit_some<D: Deserializer<'de>>(self, deserializer: D) -> Result<Self::Value, D::Error> {
        deserializer
            .deserialize_any(WholeVisitor(PhantomData))
            .map(Some)
    }
}

struct WholeVisitor<T>(PhantomData<T>);

impl<T: TryFrom<u64>> WholeVisitor<T> {
    fn fit<E: de::Error>(n: u64) -> Result<T, E> {
        T::try_from(n).map_err(|_| E::custom(format!("{n} is out of range")))
    }
}

impl<'de, T: TryFrom<u64>> Visitor<'de> for WholeVisitor<T> {
    type Value = T;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a whole number")
    }

    fn visit_u64<E: de::Error>(self, n: u64) -> Result<T, E> {
        Self::fit(n)
    }

    fn visit_i64<E: de::Error>(self, n: i64) -> Result<T, E> {
        let n = u64::try_from(n).map_err(|_| E::custom(format!("{n} is negative")))?;
        Self::fit(n)
    }

    fn visit_f64<E: de::Error>(self, x: f64) -> Result<T, E> {
        // 2^64 is the first float past u64::MAX.
        if x.fract() == 0.0 && (0.0..18_446_744_073_709_551_616.0).contains(&x) {
            Self::fit(x as u64)
        } else {
            Err(E::custom(format!("{x} is not a whole number in range")))
        }
    }
}

#[cfg(test)]
mod tests {
    use serde::Deserialize;

    #[derive(Debug, Deserialize, PartialEq)]
    struct Size {
        #[serde(default, deserialize_with = "super::option")]
        width: Option<u32>,
        #[serde(default, deserialize_with = "super::option")]
        seed: Option<u64>,
    }

    fn parse(json: &str) -> Result<Size, String> {
        serde_json::from_str(json).map_err(|e| e.to_string())
    }

    #[test]
    fn whole_floats_are_whole_numbers() {
        let both = |width, seed| Size { width, seed };
        assert_eq!(parse(r#"{"width":480}"#), Ok(both(Some(480), None)));
        assert_eq!(parse(r#"{"width":480.0}"#), Ok(both(Some(480), None)));
        assert_eq!(parse(r#"{"width":4.8e2}"#), Ok(both(Some(480), None)));
        assert_eq!(parse(r#"{"width":null}"#), Ok(both(None, None)));
        assert_eq!(parse(r#"{}"#), Ok(both(None, None)));
        assert_eq!(
            parse(r#"{"seed":18446744073709551615}"#),
            Ok(both(None, Some(u64::MAX)))
        );
    }

    #[test]
    fn fractions_negatives_and_overflow_are_refused() {
        for json in [
            r#"{"width":480.5}"#,
            r#"{"width":-1}"#,
            r#"{"width":-0.5}"#,
            r#"{"width":4294967296}"#,
            r#"{"width":1e300}"#,
            r#"{"width":"480"}"#,
            r#"{"width":true}"#,
            r#"{"seed":18446744073709551616}"#,
        ] {
            assert!(parse(json).is_err(), "{json}");
        }
    }
}
