//! The signaling edge: WHIP (RFC 9725) and WHEP over axum.
//!
//! Handlers parse and authorize, then ask the media engine through its handle; every error
//! becomes an [`error::ApiError`]. Nothing here touches media or holds a registry guard
//! across an `.await`.

mod auth;
mod cluster;
pub mod error;
mod events;
pub mod ice;
mod layer;
mod limit;
mod page;
mod rooms;
mod serve;
mod sessions;

pub use sessions::MAX_NAME_LEN;

pub use limit::RateLimiter;
pub use serve::serve;

use crate::config::Config;
use crate::engine::EngineHandle;
use crate::metrics::Metrics;
use axum::extract::DefaultBodyLimit;
use axum::extract::{MatchedPath, Request, State};
use axum::http::{header, HeaderValue};
use axum::middleware::Next;
use axum::routing::{get, post};
use axum::Router;
use std::sync::Arc;
use std::time::Instant;

/// What every handler can reach.
#[derive(Clone)]
pub struct AppState {
    /// The media engine.
    pub engine: EngineHandle,
    /// Server configuration.
    pub config: Arc<Config>,
    /// Prometheus metrics.
    pub metrics: Arc<Metrics>,
    /// TURN servers and the secret their credentials are minted with.
    pub turn: Arc<ice::Turn>,
    /// Set on SIGTERM: new sessions are refused.
    pub draining: Arc<std::sync::atomic::AtomicBool>,
    /// Per-client-IP request limit.
    pub limiter: Arc<RateLimiter>,
    /// The cluster layer, with `--redis-url`.
    pub cluster: Option<crate::cluster::Cluster>,
}

/// Builds the HTTP application.
pub fn router(state: AppState) -> Router {
    let limit = state.config.max_body_bytes;
    let mut app = Router::new().merge(page::routes());
    if state.config.metrics_listen.is_none() {
        app = app.route("/metrics", get(metrics));
    }
    app.route(
        "/whip/{room}",
        post(sessions::publish).options(sessions::options),
    )
    .route(
        "/whep/{room}",
        post(sessions::play)
            .options(sessions::options)
            .head(sessions::head),
    )
    .route(
        "/whep/{room}/{participant}",
        post(sessions::play_participant).options(sessions::options),
    )
    .route(
        "/sessions/{id}/events",
        get(events::stream)
            .post(events::create)
            .options(sessions::options),
    )
    .route(
        "/sessions/{id}/layer",
        post(layer::choose).options(sessions::options),
    )
    .route("/ice-servers", get(ice::list).options(ice::options))
    .route("/healthz", get(cluster::healthz))
    .route("/readyz", get(cluster::readyz))
    .route("/rooms", get(rooms::list))
    .route("/rooms/{room}", get(rooms::show))
    .route(
        "/rooms/{room}/participants/{participant}",
        axum::routing::delete(rooms::remove_participant),
    )
    .route(
        "/sessions/{id}",
        axum::routing::patch(sessions::patch)
            .delete(sessions::delete)
            .options(sessions::options),
    )
    .fallback(sessions::not_found)
    .layer(axum::middleware::from_fn_with_state(
        state.clone(),
        rate_limit,
    ))
    .layer(tower_http::timeout::TimeoutLayer::with_status_code(
        axum::http::StatusCode::REQUEST_TIMEOUT,
        std::time::Duration::from_secs(state.config.request_timeout_secs.max(1)),
    ))
    .layer(DefaultBodyLimit::max(limit))
    .layer(axum::middleware::map_response(cors))
    .layer(axum::middleware::from_fn_with_state(state.clone(), count))
    .with_state(state)
}

/// The router of `--metrics-listen`: only `/metrics`.
pub fn metrics_router(state: AppState) -> Router {
    Router::new()
        .route("/metrics", get(metrics))
        .with_state(state)
}

async fn metrics(State(state): State<AppState>) -> impl axum::response::IntoResponse {
    (
        [(
            header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        state.metrics.render(),
    )
}

/// POST, PATCH and DELETE are rate-limited per client IP; a declared body over the limit
/// is refused before it is read.
async fn rate_limit(
    State(state): State<AppState>,
    request: Request,
    next: Next,
) -> axum::response::Response {
    use axum::http::Method;
    use axum::response::IntoResponse;
    if let Some(len) = request
        .headers()
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok())
    {
        if len > state.config.max_body_bytes as u64 {
            return error::ApiError::new(
                axum::http::StatusCode::PAYLOAD_TOO_LARGE,
                format!(
                    "the body is larger than the limit of {} bytes",
                    state.config.max_body_bytes
                ),
            )
            .into_response();
        }
    }
    let limited = matches!(
        *request.method(),
        Method::POST | Method::PATCH | Method::DELETE
    );
    let peer = request
        .extensions()
        .get::<axum::extract::ConnectInfo<std::net::SocketAddr>>()
        .map(|c| cluster::client_ip(&state, c.0.ip(), request.headers()));
    if let (true, Some(ip)) = (limited, peer) {
        if let Err(e) = state
            .limiter
            .check(ip, state.config.rate_limit_per_ip, Instant::now())
        {
            return e.into_response();
        }
    }
    next.run(request).await
}

/// Counts every request by route template (never the concrete path) and status.
async fn count(
    State(state): State<AppState>,
    request: Request,
    next: Next,
) -> axum::response::Response {
    let route = request
        .extensions()
        .get::<MatchedPath>()
        .map(|p| p.as_str().to_owned())
        .unwrap_or_else(|| "unmatched".to_owned());
    let start = Instant::now();
    let response = next.run(request).await;
    state.metrics.http_request(
        &route,
        response.status().as_u16(),
        start.elapsed().as_secs_f64(),
    );
    response
}

/// Every answer may be read by a page of any origin (WHIP/WHEP clients run in browsers).
async fn cors(mut response: axum::response::Response) -> axum::response::Response {
    let h = response.headers_mut();
    h.insert(
        header::ACCESS_CONTROL_ALLOW_ORIGIN,
        HeaderValue::from_static("*"),
    );
    h.insert(
        header::ACCESS_CONTROL_EXPOSE_HEADERS,
        HeaderValue::from_static("Location, ETag, Link, Accept-Patch, Retry-After"),
    );
    response
}
