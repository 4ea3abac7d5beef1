//! The room API: list rooms, show one, remove a participant. Guarded by `--admin-token`.

use super::auth;
use super::error::ApiError;
use super::sessions::check_name;
use super::AppState;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::Json;
use serde_json::{json, Value};

fn admin(state: &AppState, headers: &HeaderMap) -> Result<(), ApiError> {
    auth::require(state.config.admin_token.as_deref(), headers)
}

/// `GET /rooms`.
pub async fn list(
    State(state): State<AppState>,
    headers: HeaderMap,
) -> Result<Json<Value>, ApiError> {
    admin(&state, &headers)?;
    let rooms = state.engine.rooms().await?;
    Ok(Json(json!({ "rooms": rooms })))
}

/// `GET /rooms/{room}`.
pub async fn show(
    State(state): State<AppState>,
    Path(room): Path<String>,
    headers: HeaderMap,
) -> Result<Json<Value>, ApiError> {
    admin(&state, &headers)?;
    check_name("room", &room)?;
    match state.engine.room(&room).await? {
        Some(view) => Ok(Json(json!(view))),
        None => Err(ApiError::new(
            StatusCode::NOT_FOUND,
            format!("no room {room}"),
        )),
    }
}

/// `DELETE /rooms/{room}/participants/{participant}`: ends the participant's sessions.
pub async fn remove_participant(
    State(state): State<AppState>,
    Path((room, participant)): Path<(String, String)>,
    headers: HeaderMap,
) -> Result<StatusCode, ApiError> {
    admin(&state, &headers)?;
    check_name("room", &room)?;
    check_name("participant", &participant)?;
    if state.engine.remove_participant(&room, &participant).await {
        Ok(StatusCode::OK)
    } else {
        Err(ApiError::new(
            StatusCode::NOT_FOUND,
            format!("no participant {participant} in room {room}"),
        ))
    }
}
