//! Defences against requests a browser sends on behalf of another site's page.
//!
//! - **DNS rebinding.** A page of `evil.example` can make its own name resolve
//!   to 127.0.0.1 and then read a keyless worker on localhost as if it were
//!   same-origin; the browser still sends `Host: evil.example`. So `Host` must
//!   name this worker: an IP literal (a page cannot rebind an address), `localhost`
//!   or a subdomain of it, the host of `--public-url` (the name the hive and
//!   clients are told), or an `--allowed-hosts` entry (`name`, or `.name` for
//!   it and its subdomains; `*` turns the check off). The port is not compared.
//!   A worker on 0.0.0.0 behind a hive is reached at its IP or at its public
//!   URL, both allowed; other names (a DNS alias, a reverse proxy's) go in
//!   `--allowed-hosts`.
//! - **Cross-origin calls.** A request whose `Origin` is neither this worker's
//!   own (the origin `Host` names, or that of `--public-url`) nor listed in
//!   `--allowed-origins` is refused; the listed ones get CORS headers
//!   ([`cors_layer`]). Requests without `Origin` (curl, the hive, same-origin
//!   `GET`s) pass.
//!
//! Both refusals are 403 with the API's JSON error. `/health` is exempt, so a
//! load balancer probing by any name still learns the process is up.

use std::time::Duration;

use axum::extract::{Request, State};
use axum::http::{header, HeaderName, HeaderValue, Method};
use axum::middleware::Next;
use axum::response::Response;
use tower_http::cors::{AllowOrigin, CorsLayer};

use crate::config::WorkerConfig;
use crate::error::ApiError;
use crate::state::AppState;

/// The path neither check applies to.
const EXEMPT_PATH: &str = "/health";

/// Refuses a request whose `Host` or `Origin` this worker does not serve.
pub async fn check_host_and_origin(
    State(state): State<AppState>,
    request: Request,
    next: Next,
) -> Result<Response, ApiError> {
    if request.uri().path() != EXEMPT_PATH {
        let host = request_host(&request);
        if let Some(host) = &host {
            if !host_allowed(host, state.config()) {
                return Err(ApiError::ForbiddenHost(shown(host)));
            }
        }
        if let Some(origin) = request.headers().get(header::ORIGIN) {
            let origin = String::from_utf8_lossy(origin.as_bytes()).to_ascii_lowercase();
            if !origin_allowed(&origin, host.as_deref(), state.config()) {
                return Err(ApiError::ForbiddenOrigin(shown(&origin)));
            }
        }
    }
    Ok(next.run(request).await)
}

/// The CORS layer for `--allowed-origins`, or `None` when there are none.
pub fn cors_layer(config: &WorkerConfig) -> Option<CorsLayer> {
    if config.allowed_origins.is_empty() {
        return None;
    }
    let origins = if config.allowed_origins.iter().any(|o| o == "*") {
        AllowOrigin::any()
    } else {
        AllowOrigin::list(
            config
                .allowed_origins
                .iter()
                .filter_map(|origin| HeaderValue::from_str(origin).ok()),
        )
    };
    Some(
        CorsLayer::new()
            .allow_origin(origins)
            .allow_methods([Method::GET, Method::POST, Method::DELETE])
            .allow_headers([
                header::AUTHORIZATION,
                header::CONTENT_TYPE,
                HeaderName::from_static("last-event-id"),
            ])
            .expose_headers([
                header::WARNING,
                header::RETRY_AFTER,
                header::WWW_AUTHENTICATE,
            ])
            .max_age(Duration::from_secs(600)),
    )
}

/// The request's host, lowercase: `Host`, or the URI's authority (HTTP/2).
fn request_host(request: &Request) -> Option<String> {
    let host = match request.headers().get(header::HOST) {
        Some(value) => String::from_utf8_lossy(value.as_bytes()).into_owned(),
        None => request.uri().authority()?.as_str().to_string(),
    };
    Some(host.trim().to_ascii_lowercase())
}

/// Whether `host` (`name[:port]`, lowercase) names this worker.
pub fn host_allowed(host: &str, config: &WorkerConfig) -> bool {
    if config.allowed_hosts.iter().any(|h| h == "*") {
        return true;
    }
    let name = host_name(host);
    let name = name.trim_end_matches('.');
    if name.parse::<std::net::IpAddr>().is_ok()
        || name == "localhost"
        || name.ends_with(".localhost")
    {
        return true;
    }
    let public = config
        .public_url
        .as_deref()
        .and_then(url_authority)
        .map(|authority| host_name(&authority).to_string());
    if public.as_deref() == Some(name) {
        return true;
    }
    config
        .allowed_hosts
        .iter()
        .any(|allowed| match allowed.strip_prefix('.') {
            Some(domain) => name == domain || name.ends_with(allowed.as_str()),
            None => name == allowed.trim_end_matches('.'),
        })
}

/// Whether a request with `origin` (lowercase) to `host` may go on.
fn origin_allowed(origin: &str, host: Option<&str>, config: &WorkerConfig) -> bool {
    if config
        .allowed_origins
        .iter()
        .any(|allowed| allowed == "*" || allowed == origin)
    {
        return true;
    }
    let Some(authority) = url_authority(origin) else {
        return false;
    };
    let same_as_host = host == Some(authority.as_str());
    let public = config.public_url.as_deref().and_then(url_authority);
    same_as_host || public.as_deref() == Some(authority.as_str())
}

/// The `host[:port]` of an `http(s)://` URL or origin, lowercase, without user info.
fn url_authority(url: &str) -> Option<String> {
    let url = url.to_ascii_lowercase();
    let rest = url
        .strip_prefix("http://")
        .or_else(|| url.strip_prefix("https://"))?;
    let authority = rest.split(['/', '?', '#']).next()?;
    let authority = authority.rsplit('@').next()?;
    (!authority.is_empty()).then(|| authority.to_string())
}

/// The name of `host[:port]`, without the port; an IPv6 literal without brackets.
fn host_name(host: &str) -> &str {
    if let Some(rest) = host.strip_prefix('[') {
        return rest.split(']').next().unwrap_or(rest);
    }
    match host.rsplit_once(':') {
        Some((name, port)) if port.bytes().all(|b| b.is_ascii_digit()) => name,
        _ => host,
    }
}

/// A client-sent value as an error message shows it: at most 100 characters.
fn shown(value: &str) -> String {
    value.chars().take(100).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(public_url: Option<&str>, allowed: &[&str]) -> WorkerConfig {
        let mut config = WorkerConfig::new("m");
        config.public_url = public_url.map(str::to_string);
        config.allowed_hosts = allowed.iter().map(|h| h.to_string()).collect();
        config
    }

    #[test]
    fn ip_literals_localhost_the_public_url_and_listed_hosts_are_served() {
        let c = config(
            Some("https://gpu-7.lan:9000/"),
            &["sd.example.com", ".corp"],
        );
        for host in [
            "127.0.0.1:8080",
            "10.1.2.3",
            "[::1]:8080",
            "[fe80::1]",
            "localhost:8080",
            "LOCALHOST",
            "app.localhost",
            "gpu-7.lan",
            "gpu-7.lan:8080",
            "sd.example.com",
            "sd.example.com.:443",
            "corp",
            "a.b.corp",
        ] {
            assert!(host_allowed(&host.to_ascii_lowercase(), &c), "{host}");
        }
        for host in [
            "evil.example",
            "localhost.evil.example",
            "example.com",
            "xcorp",
            "sd.example.com.evil",
            "127.0.0.1.nip.io",
        ] {
            assert!(!host_allowed(host, &c), "{host}");
        }
        assert!(host_allowed("evil.example", &config(None, &["*"])));
    }

    #[test]
    fn origins_are_served_when_same_as_host_public_or_listed() {
        let mut c = config(Some("https://sd.example.com"), &[]);
        c.allowed_origins = vec!["https://app.example.com".into()];
        let allowed = |origin, host| origin_allowed(origin, host, &c);
        assert!(allowed("http://127.0.0.1:8080", Some("127.0.0.1:8080")));
        assert!(allowed("https://sd.example.com", Some("10.0.0.5:8080")));
        assert!(allowed("https://app.example.com", Some("127.0.0.1:8080")));
        assert!(!allowed("http://127.0.0.1:8081", Some("127.0.0.1:8080")));
        assert!(!allowed("https://evil.example", Some("127.0.0.1:8080")));
        assert!(!allowed("null", Some("127.0.0.1:8080")));
        c.allowed_origins = vec!["*".into()];
        assert!(origin_allowed("https://evil.example", None, &c));
    }
}
