//! Room events of a WHEP session as server-sent events (`text/event-stream`). A plain
//! `EventSource` GETs the URL from the session's `Link` header; a client of the WHEP
//! server-sent-events extension may POST to it first and follow the `Location` it gets.

use super::error::ApiError;
use super::sessions::authorize_session;
use super::AppState;
use axum::extract::{Path, State};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use std::convert::Infallible;
use std::time::Duration;
use tokio_stream::wrappers::ReceiverStream;
use tokio_stream::StreamExt;

/// `GET /sessions/{id}/events`: the stream.
pub async fn stream(
    State(state): State<AppState>,
    Path(id): Path<String>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    authorize_session(&state, &id, &headers)?;
    let rx = state.engine.subscribe(&id).await?;
    let events = ReceiverStream::new(rx).map(|json| {
        let kind = serde_json::from_str::<serde_json::Value>(&json)
            .ok()
            .and_then(|v| v.get("type").and_then(|t| t.as_str()).map(str::to_owned))
            .unwrap_or_else(|| "message".into());
        Ok::<_, Infallible>(Event::default().event(kind).data(json.as_ref()))
    });
    Ok(Sse::new(events)
        .keep_alive(KeepAlive::new().interval(Duration::from_secs(15)))
        .into_response())
}

/// `POST /sessions/{id}/events`: the WHEP extension's subscription; answers where to GET.
pub async fn create(
    State(state): State<AppState>,
    Path(id): Path<String>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    authorize_session(&state, &id, &headers)?;
    let mut response = StatusCode::CREATED.into_response();
    if let Ok(v) = HeaderValue::from_str(&format!("/sessions/{id}/events")) {
        response.headers_mut().insert(header::LOCATION, v);
    }
    Ok(response)
}
