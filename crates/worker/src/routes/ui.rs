//! The web UI: the built single-page app of `web/app/dist`, embedded in the
//! binary, served at `/`.
//!
//! It is the router's fallback, so it only sees paths no API route matched.
//! A `GET` or `HEAD` for an embedded file gets the file with its content
//! type; a browser navigation (`Accept: text/html`) to any other page path
//! (no file extension, outside `/v1/`) gets `index.html`; everything else
//! gets the API's JSON 404. The pages need no API key: they hold no data,
//! and the app asks for the key itself. Every file is served with a
//! [`CONTENT_SECURITY_POLICY`] and `X-Frame-Options: DENY`.

use axum::extract::Request;
use axum::http::{header, HeaderValue, Method, StatusCode};
use axum::response::{IntoResponse, Response};
use rust_embed::Embed;

/// The built app, `web/app/dist`, embedded at compile time.
#[derive(Embed)]
#[folder = "../../web/app/dist"]
struct Assets;

/// The file every page path is answered with.
const INDEX: &str = "index.html";

/// The pages' Content-Security-Policy: scripts, styles and API calls from this
/// worker only; pictures also from `data:` and `blob:` URLs (previews,
/// results, uploads); no plugins, no `<base>`, no form posts; and no framing.
pub const CONTENT_SECURITY_POLICY: &str = "default-src 'self'; script-src 'self'; \
    style-src 'self'; img-src 'self' data: blob:; connect-src 'self'; object-src 'none'; \
    base-uri 'none'; form-action 'none'; frame-ancestors 'none'";

/// Serves the UI for paths no API route matched, or the JSON 404.
pub async fn fallback(request: Request) -> Response {
    let readable = matches!(*request.method(), Method::GET | Method::HEAD);
    let path = request.uri().path().trim_start_matches('/');
    if readable && !path.starts_with("v1/") {
        let path = if path.is_empty() { INDEX } else { path };
        if let Some(response) = asset(path, &request) {
            return response;
        }
        let last_segment = path.rsplit('/').next().unwrap_or_default();
        if !last_segment.contains('.') && wants_html(&request) {
            if let Some(response) = asset(INDEX, &request) {
                return response;
            }
        }
    }
    super::not_found(request).await.into_response()
}

/// Whether the client asks for a page (a browser navigation does).
fn wants_html(request: &Request) -> bool {
    request
        .headers()
        .get(header::ACCEPT)
        .and_then(|accept| accept.to_str().ok())
        .is_some_and(|accept| accept.contains("text/html"))
}

/// The embedded file at `path` with its content type and caching headers,
/// or 304 when the client's copy is current.
fn asset(path: &str, request: &Request) -> Option<Response> {
    let file = Assets::get(path)?;
    let etag = format!("\"{}\"", hex(&file.metadata.sha256_hash()[..16]));
    let etag = HeaderValue::from_str(&etag).ok()?;
    // Vite names every file under assets/ by its content hash, so those never
    // change; index.html names the current ones and is revalidated each time.
    let cache = if path.starts_with("assets/") {
        "public, max-age=31536000, immutable"
    } else {
        "no-cache"
    };
    let mut response = if request.headers().get(header::IF_NONE_MATCH) == Some(&etag) {
        StatusCode::NOT_MODIFIED.into_response()
    } else {
        let mime = file.metadata.mimetype();
        let content_type = if mime.starts_with("text/") || mime == "application/javascript" {
            format!("{mime}; charset=utf-8")
        } else {
            mime.to_string()
        };
        let mut response = file.data.into_owned().into_response();
        response.headers_mut().insert(
            header::CONTENT_TYPE,
            HeaderValue::from_str(&content_type).ok()?,
        );
        response
    };
    let headers = response.headers_mut();
    headers.insert(header::ETAG, etag);
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static(cache));
    headers.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    headers.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(CONTENT_SECURITY_POLICY),
    );
    headers.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    headers.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("no-referrer"),
    );
    Some(response)
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

#[cfg(test)]
mod tests {
    use axum::body::{to_bytes, Body};

    use super::*;

    async fn get(path: &str, if_none_match: Option<&str>) -> Response {
        let mut request = Request::builder()
            .uri(path)
            .header(header::ACCEPT, "text/html,application/xhtml+xml,*/*;q=0.8");
        if let Some(tag) = if_none_match {
            request = request.header(header::IF_NONE_MATCH, tag);
        }
        fallback(request.body(Body::empty()).unwrap()).await
    }

    fn content_type(response: &Response) -> &str {
        response.headers()[header::CONTENT_TYPE].to_str().unwrap()
    }

    async fn text(response: Response) -> String {
        let bytes = to_bytes(response.into_body(), usize::MAX).await.unwrap();
        String::from_utf8(bytes.to_vec()).unwrap()
    }

    #[tokio::test]
    async fn root_and_page_paths_serve_the_app() {
        for path in ["/", "/index.html", "/gallery", "/some/page"] {
            let response = get(path, None).await;
            assert_eq!(response.status(), StatusCode::OK, "{path}");
            assert_eq!(
                content_type(&response),
                "text/html; charset=utf-8",
                "{path}"
            );
            assert_eq!(response.headers()[header::CACHE_CONTROL], "no-cache");
            assert_eq!(response.headers()[header::X_FRAME_OPTIONS], "DENY");
            let csp = response.headers()[header::CONTENT_SECURITY_POLICY]
                .to_str()
                .unwrap();
            assert!(csp.contains("frame-ancestors 'none'"), "{csp}");
            assert!(csp.contains("script-src 'self'"), "{csp}");
            assert!(text(response).await.contains("<div id=\"root\">"), "{path}");
        }
    }

    #[tokio::test]
    async fn assets_have_their_content_types_and_are_immutable() {
        let mut kinds = Vec::new();
        for name in Assets::iter().filter(|n| n.starts_with("assets/")) {
            let response = get(&format!("/{name}"), None).await;
            assert_eq!(response.status(), StatusCode::OK, "{name}");
            let expected = match name.rsplit('.').next() {
                Some("js") => "text/javascript; charset=utf-8",
                Some("css") => "text/css; charset=utf-8",
                _ => continue,
            };
            assert_eq!(content_type(&response), expected, "{name}");
            assert!(response.headers()[header::CACHE_CONTROL]
                .to_str()
                .unwrap()
                .contains("immutable"));
            kinds.push(expected);
        }
        assert!(
            kinds.iter().any(|k| k.contains("javascript")),
            "no script in dist"
        );
        assert!(
            kinds.iter().any(|k| k.contains("css")),
            "no stylesheet in dist"
        );
    }

    #[tokio::test]
    async fn a_current_copy_gets_304() {
        let first = get("/", None).await;
        let etag = first.headers()[header::ETAG].to_str().unwrap().to_string();
        let again = get("/", Some(&etag)).await;
        assert_eq!(again.status(), StatusCode::NOT_MODIFIED);
        assert!(text(again).await.is_empty());
    }

    #[tokio::test]
    async fn api_paths_missing_files_other_methods_and_non_browsers_get_the_json_404() {
        let requests = [
            (Method::GET, "/v1/nothing"),
            (Method::GET, "/missing.png"),
            (Method::GET, "/assets/gone.js"),
            (Method::GET, "/v2/anything"),
            (Method::POST, "/"),
        ];
        for (method, path) in requests {
            let request = Request::builder()
                .method(method.clone())
                .uri(path)
                .body(Body::empty())
                .unwrap();
            let response = fallback(request).await;
            assert_eq!(response.status(), StatusCode::NOT_FOUND, "{method} {path}");
            assert!(content_type(&response).starts_with("application/json"));
            assert!(text(response).await.contains("\"not_found\""));
        }
        for path in ["/v1/nothing", "/missing.png"] {
            let response = get(path, None).await;
            assert_eq!(response.status(), StatusCode::NOT_FOUND, "browser {path}");
        }
    }
}
