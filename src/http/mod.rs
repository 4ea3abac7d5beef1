//! The signaling edge: WHIP (RFC 9725) and WHEP over axum.
//!
//! Handlers parse and authorize, then ask the media engine through its handle; every error
//! becomes an [`error::ApiError`]. Nothing here touches media or holds a registry guard
//! across an `.await`.

mod auth;
pub mod error;
mod events;
mod rooms;
pub mod sdpfrag;
mod sessions;

use crate::config::Config;
use crate::engine::EngineHandle;
use axum::extract::DefaultBodyLimit;
use axum::http::{header, HeaderValue};
use axum::routing::{get, post};
use axum::Router;
use std::sync::Arc;

/// What every handler can reach.
#[derive(Clone)]
pub struct AppState {
    /// The media engine.
    pub engine: EngineHandle,
    /// Server configuration.
    pub config: Arc<Config>,
}

/// Builds the HTTP application.
pub fn router(state: AppState) -> Router {
    let limit = state.config.max_body_bytes;
    Router::new()
        .route("/", get(index))
        .route(
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
        .layer(DefaultBodyLimit::max(limit))
        .layer(axum::middleware::map_response(cors))
        .with_state(state)
}

async fn index() -> &'static str {
    "Parley is running.\nPublish with WHIP: POST /whip/{room}\nPlay with WHEP: POST /whep/{room}\n"
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
