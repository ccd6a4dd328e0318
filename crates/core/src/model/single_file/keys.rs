//! Helpers for walking dotted module paths.

/// The first segment of a dotted path and what follows its dot, if anything.
pub(super) fn split_segment(path: &str) -> (&str, Option<&str>) {
    match path.split_once('.') {
        Some((head, rest)) => (head, Some(rest)),
        None => (path, None),
    }
}

/// The first segment as a number, and what follows it.
pub(super) fn split_index(path: &str) -> Option<(usize, Option<&str>)> {
    let (head, rest) = split_segment(path);
    Some((head.parse().ok()?, rest))
}

/// `prefix.rest`, or `prefix` alone.
pub(super) fn join(prefix: &str, rest: Option<&str>) -> String {
    match rest {
        Some(rest) => format!("{prefix}.{rest}"),
        None => prefix.to_string(),
    }
}
