//! The router: every route, its auth, body limits, host and origin checks
//! and CORS, in one place. Errors on the OpenAI API's paths are answered in
//! OpenAI's shape, whichever layer refuses the request.

use axum::extract::DefaultBodyLimit;
use axum::routing::{get, post};
use axum::{middleware, Router};
use tower_http::trace::TraceLayer;

use crate::auth::require_api_key;
use crate::body::guard_body;
use crate::guard::{check_host_and_origin, cors_layer};
use crate::openai::openai_errors;
use crate::routes::{
    self, a1111, embeddings, health, info, jobs, loras, metrics, openai, openapi, stream,
};
use crate::state::AppState;

/// The worker's HTTP API over `state`; other `GET` paths serve the web UI.
pub fn app(state: AppState) -> Router {
    let body_limit = usize::try_from(state.config().max_body_bytes).unwrap_or(usize::MAX);
    let metrics_route = Router::new().route("/metrics", get(metrics::metrics));
    let (public_metrics, protected_metrics) = if state.config().metrics_public {
        (metrics_route, Router::new())
    } else {
        (Router::new(), metrics_route)
    };
    let protected = Router::new()
        .route("/v1/jobs", post(jobs::create_job).get(jobs::list_jobs))
        .route("/v1/jobs/{id}", get(jobs::get_job).delete(jobs::cancel_job))
        .route("/v1/jobs/{id}/stream", get(stream::stream_job))
        .route("/v1/info", get(info::info))
        .route("/v1/loras", get(loras::list_loras))
        .route("/v1/embeddings", get(embeddings::list_embeddings))
        .route("/v1/images/generations", post(openai::generate_images))
        .route("/v1/images/edits", post(openai::edit_images))
        .route("/v1/models", get(openai::list_models))
        .route("/openapi.json", get(openapi::openapi_json))
        .merge(a1111::routes())
        .merge(protected_metrics)
        .route_layer(middleware::from_fn_with_state(
            state.clone(),
            require_api_key,
        ));
    let router = Router::new()
        .route("/health", get(health::health))
        .route("/ready", get(health::ready))
        .merge(public_metrics)
        .merge(protected)
        .fallback(routes::ui::fallback)
        .method_not_allowed_fallback(routes::method_not_allowed)
        .layer(DefaultBodyLimit::max(body_limit))
        .layer(middleware::from_fn_with_state(state.clone(), guard_body))
        .layer(middleware::from_fn_with_state(
            state.clone(),
            check_host_and_origin,
        ))
        .layer(middleware::from_fn(openai_errors));
    let router = match cors_layer(state.config()) {
        Some(cors) => router.layer(cors),
        None => router,
    };
    router.layer(TraceLayer::new_for_http()).with_state(state)
}
