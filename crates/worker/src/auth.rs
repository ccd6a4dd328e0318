//! API-key auth: with `--api-key`, the routes this layer wraps need
//! `Authorization: Bearer <key>`, or HTTP Basic auth whose password is the
//! key (any user name): what AUTOMATIC1111 clients such as Open WebUI send
//! when given `user:password` credentials.

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

/// Whether a key is configured and `headers` carry it: as a bearer token,
/// or as the password of HTTP Basic credentials.
pub fn has_valid_key(state: &AppState, headers: &HeaderMap) -> bool {
    let Some(key) = &state.config().api_key else {
        return false;
    };
    headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(given_key)
        .is_some_and(|given| keys_match(&given, key))
}

/// The key an `Authorization` value offers: a bearer token, or the password
/// of `Basic base64(user:password)`.
fn given_key(value: &str) -> Option<String> {
    use base64::Engine as _;
    let (scheme, credentials) = value.trim().split_once(' ')?;
    let credentials = credentials.trim();
    if scheme.eq_ignore_ascii_case("bearer") {
        return Some(credentials.to_string());
    }
    if !scheme.eq_ignore_ascii_case("basic") {
        return None;
    }
    let decoded = base64::engine::general_purpose::STANDARD
        .decode(credentials)
        .ok()?;
    let decoded = String::from_utf8(decoded).ok()?;
    let (_user, password) = decoded.split_once(':')?;
    Some(password.to_string())
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
    use super::{given_key, keys_match};

    #[test]
    fn a_key_comes_as_a_bearer_token_or_a_basic_password() {
        assert_eq!(given_key("Bearer secret").as_deref(), Some("secret"));
        assert_eq!(given_key("bearer  secret ").as_deref(), Some("secret"));
        // base64("webui:secret")
        assert_eq!(
            given_key("Basic d2VidWk6c2VjcmV0").as_deref(),
            Some("secret")
        );
        // base64(":secret"): no user name
        assert_eq!(given_key("Basic OnNlY3JldA==").as_deref(), Some("secret"));
        // base64("secret"): no colon
        assert_eq!(given_key("Basic c2VjcmV0"), None);
        assert_eq!(given_key("Basic not base64!"), None);
        assert_eq!(given_key("Digest secret"), None);
        assert_eq!(given_key("secret"), None);
    }

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
