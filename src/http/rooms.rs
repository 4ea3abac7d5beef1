//! The room API: list rooms, show one, remove a participant. Guarded by `--admin-token`.
//!
//! In a cluster the list and the view cover every node: each room carries the `node` that
//! serves it, gathered from the other nodes' own room APIs.

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
    let Some(cluster) = state.cluster.as_ref() else {
        return Ok(Json(json!({ "rooms": rooms })));
    };
    let mut all: Vec<Value> = rooms
        .iter()
        .map(|r| with_node(json!(r), cluster, &r.name))
        .collect();
    if super::cluster::forwarded(&headers) {
        // Another node asks for this node's part.
        return Ok(Json(json!({ "rooms": all })));
    }
    for (node, answer) in super::cluster::ask_others(cluster, "/rooms", &headers).await {
        if let Some(rooms) = answer["rooms"].as_array() {
            all.extend(rooms.iter().map(|r| with_node_id(r.clone(), &node.id)));
        }
    }
    Ok(Json(json!({ "rooms": all })))
}

/// A room's JSON with the node that serves it.
fn with_node_id(mut room: Value, node: &str) -> Value {
    if let Some(o) = room.as_object_mut() {
        o.insert("node".into(), json!(node));
    }
    room
}

/// A room of this node's JSON with this node, and the node it is played from when it is a
/// cascade (`cascade_from`).
fn with_node(room: Value, cluster: &crate::cluster::Cluster, name: &str) -> Value {
    let mut room = with_node_id(room, cluster.node_id());
    if let (Some(o), Some(from)) = (room.as_object_mut(), cluster.cascade_of(name)) {
        o.insert("cascade_from".into(), json!(from));
    }
    room
}

/// `GET /rooms/{room}`.
pub async fn show(
    State(state): State<AppState>,
    Path(room): Path<String>,
    headers: HeaderMap,
) -> Result<Json<Value>, ApiError> {
    admin(&state, &headers)?;
    check_name("room", &room)?;
    if let Some(view) = state.engine.room(&room).await? {
        return Ok(Json(match &state.cluster {
            Some(c) => with_node(json!(view), c, &room),
            None => json!(view),
        }));
    }
    if let Some(cluster) = state
        .cluster
        .as_ref()
        .filter(|_| !super::cluster::forwarded(&headers))
    {
        let path = format!("/rooms/{room}");
        // The room's own node first, before the nodes that play it from there.
        let mut answers = super::cluster::ask_others(cluster, &path, &headers).await;
        answers.sort_by_key(|(_, view)| view.get("cascade_from").is_some());
        if let Some((node, view)) = answers.into_iter().next() {
            return Ok(Json(with_node_id(view, &node.id)));
        }
    }
    Err(ApiError::new(
        StatusCode::NOT_FOUND,
        format!("no room {room}"),
    ))
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
