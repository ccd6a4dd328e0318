//! Bearer-token auth: with `--api-key`, the routes this layer wraps need
//! `Authorization: Bearer <key>`.

use axum::extract::{Request, State};
use axum::http::{header, HeaderMap};
use axum::middleware::Next;
use axum::response::Response;
use sha2::{Digest, Sha256};

use crate::error::ApiError;
use crate::state::AppState;

/// Rejects a request without the right bearer token when a key is configured.
pub async fn require_api_key(
    State(state): State<AppState>,
    request: Request,
    next: Next,
) -> Result<Response, ApiError> {
    if state.config().api_key.is_some() && !has_valid_key(&state, request.headers()) {
        return Err(ApiError::Unauthorized);
    }
    Ok(next.run(request).await)
}

/// Whether a key is configured and `headers` carry it as a bearer token.
pub fn has_valid_key(state: &AppState, headers: &HeaderMap) -> bool {
    let Some(key) = &state.config().api_key else {
        return false;
    };
    headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split_once(' '))
        .filter(|(scheme, _)| scheme.eq_ignore_ascii_case("bearer"))
        .map(|(_, token)| token.trim())
        .is_some_and(|given| keys_match(given, key))
}

/// Compares the SHA-256 digests of the two keys without an early exit: the
/// digests have one length whatever the keys', so the time taken reveals
/// neither the key's length nor a matching prefix.
fn keys_match(given: &str, key: &str) -> bool {
    let (given, key) = (Sha256::digest(given), Sha256::digest(key));
    given
        .iter()
        .zip(key.iter())
        .fold(0u8, |acc, (x, y)| acc | (x ^ y))
        == 0
}

#[cfg(test)]
mod tests {
    use super::keys_match;

    #[test]
    fn compares_keys_of_any_length() {
        assert!(keys_match("secret", "secret"));
        assert!(!keys_match("secret", "secreT"));
        assert!(!keys_match("secret", "secret2"));
        assert!(!keys_match("", "secret"));
        assert!(!keys_match(&"s".repeat(4096), "secret"));
        assert!(keys_match(&"s".repeat(4096), &"s".repeat(4096)));
    }
}
