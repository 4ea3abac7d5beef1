//! WHIP and WHEP session resources: create (POST), trickle and ICE restart (PATCH), end
//! (DELETE), and the CORS preflight (OPTIONS).

use super::auth;
use super::error::ApiError;
use super::ice;
use super::AppState;
use crate::engine::{EndReason, SessionKind};
use crate::transport::sdpfrag;
use axum::body::Bytes;
use axum::extract::rejection::QueryRejection;
use axum::extract::{ConnectInfo, FromRequestParts, Path, Query, State};
use axum::http::request::Parts;
use axum::http::{header, HeaderMap, HeaderValue, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use serde::Deserialize;

const SDP: &str = "application/sdp";
const SDPFRAG: &str = "application/trickle-ice-sdpfrag";
/// Longest room or participant name.
pub const MAX_NAME_LEN: usize = 64;

/// Query parameters of POST.
#[derive(Debug, Deserialize)]
struct JoinQuery {
    participant: Option<String>,
}

/// What a WHIP/WHEP POST says besides its path, headers and body: the participant it names
/// (`?participant=`), and where it came from, for passing it to another node of a cluster.
pub struct Join {
    participant: Option<String>,
    uri: Uri,
    client: Option<std::net::IpAddr>,
}

impl<S: Send + Sync> FromRequestParts<S> for Join {
    type Rejection = QueryRejection;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        let Query(query) = Query::<JoinQuery>::from_request_parts(parts, state).await?;
        Ok(Join {
            participant: query.participant,
            uri: parts.uri.clone(),
            client: parts
                .extensions
                .get::<ConnectInfo<std::net::SocketAddr>>()
                .map(|c| c.0.ip()),
        })
    }
}

fn valid_name(name: &str) -> bool {
    // `.` and `..` are path steps that clients rewrite away, not names.
    !name.is_empty()
        && name.bytes().any(|b| b != b'.')
        && name.len() <= MAX_NAME_LEN
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_' || b == b'.')
}

pub(super) fn check_name(what: &str, name: &str) -> Result<(), ApiError> {
    if valid_name(name) {
        Ok(())
    } else {
        Err(ApiError::bad_request(format!(
            "the {what} name must be 1 to {MAX_NAME_LEN} characters of A-Z a-z 0-9 - _ ."
        )))
    }
}

fn content_type_is(headers: &HeaderMap, expected: &str) -> bool {
    headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split(';').next())
        .is_some_and(|v| v.trim().eq_ignore_ascii_case(expected))
}

fn body_text(body: &Bytes, what: &str) -> Result<String, ApiError> {
    let text = std::str::from_utf8(body)
        .map_err(|_| ApiError::bad_request(format!("the {what} is not UTF-8 text")))?;
    if text.trim().is_empty() {
        return Err(ApiError::bad_request(format!("the {what} is empty")));
    }
    Ok(text.to_owned())
}

/// The `--ice-server` URLs, without TURN credentials: what an unauthenticated `OPTIONS`
/// may learn.
fn ice_server_links(state: &AppState) -> Vec<HeaderValue> {
    let stun = ice::servers(&state.config.ice_server, &ice::Turn::default(), 0, "");
    ice::links(&stun)
}

async fn create(
    state: AppState,
    kind: SessionKind,
    room: String,
    target: Option<String>,
    join: Join,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Response, ApiError> {
    let token = match kind {
        SessionKind::Whip => state.config.publish_token.as_deref(),
        SessionKind::Whep => state.config.play_token.as_deref(),
    };
    auth::require(token, &headers)?;
    check_name("room", &room)?;
    for p in join.participant.iter().chain(target.iter()) {
        check_name("participant", p)?;
    }
    if !content_type_is(&headers, SDP) {
        return Err(ApiError::new(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "the offer must be sent with Content-Type: application/sdp",
        ));
    }
    let offer = body_text(&body, "SDP offer")?;
    // In a cluster, the room's node answers: this one, or another that gets the request. A
    // room with sessions here is served here without asking Redis; one played here from
    // another node (a cascade) takes viewers, and its publishers go to that node.
    let cascaded = state.cluster.as_ref().and_then(|c| c.cascade_of(&room));
    let here = match cascaded {
        Some(_) => kind == SessionKind::Whep,
        None => state.engine.placement.shard_of(&room).is_some(),
    };
    if let (Some(cluster), false) = (&state.cluster, here || super::cluster::forwarded(&headers)) {
        if let crate::cluster::Owner::There(node) = cluster.locate(&room).await {
            let spill = match kind {
                SessionKind::Whep => cluster.spill(&node, &room).await,
                SessionKind::Whip => None,
            };
            let cascade = match spill {
                Some(name) => cluster
                    .cascade(&state.engine, &node, &room, name)
                    .await
                    .is_ok(),
                None => false,
            };
            if !cascade {
                let client = join
                    .client
                    .map(|ip| super::cluster::client_ip(&state, ip, &headers));
                return Ok(
                    super::cluster::pass(cluster, &node, &join.uri, &headers, client, body).await,
                );
            }
            cluster.metrics().served_by_cascade();
        }
    } else if let (Some(cluster), Some(_), SessionKind::Whep) = (&state.cluster, &cascaded, kind) {
        cluster.metrics().served_by_cascade();
    }
    // Another node's upstream of a cascade says so, with the admin token where there is one.
    let cascade = headers.get(crate::cluster::CASCADE).map(|v| v.as_bytes());
    let for_node = match (kind, &state.cluster, cascade, &state.config.admin_token) {
        (SessionKind::Whep, Some(_), Some(given), Some(token)) => {
            auth::constant_time_eq(given, token.as_bytes())
        }
        (SessionKind::Whep, Some(_), Some(_), None) => true,
        _ => false,
    };
    // A draining node still lets other nodes play its rooms: their viewers move off it.
    if !for_node && state.draining.load(std::sync::atomic::Ordering::SeqCst) {
        return Err(ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "the server is shutting down; try again on another server",
        )
        .with_header(header::RETRY_AFTER, "30"));
    }
    if state.engine.registry.len() >= state.config.max_sessions {
        return Err(ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "the server has reached its session limit; try again later",
        )
        .with_header(header::RETRY_AFTER, "10"));
    }
    let created = state
        .engine
        .open(kind, &room, join.participant, (target, for_node), offer)
        .await?;
    // In a cluster the session's URL is absolute: a client that reached it through another
    // node sends PATCH and DELETE straight here.
    let base = state.cluster.as_ref().map_or("", |c| c.url());
    let location = format!("{base}/sessions/{}", created.id);
    let mut response = (StatusCode::CREATED, created.answer).into_response();
    let h = response.headers_mut();
    h.insert(header::CONTENT_TYPE, HeaderValue::from_static(SDP));
    if let Ok(v) = HeaderValue::from_str(&location) {
        h.insert(header::LOCATION, v);
    }
    if let Ok(v) = HeaderValue::from_str(&created.etag) {
        h.insert(header::ETAG, v);
    }
    h.insert("accept-patch", HeaderValue::from_static(SDPFRAG));
    // STUN as configured, TURN with a credential minted for this session.
    for link in ice::links(&ice::for_client(&state, &created.id)) {
        h.append(header::LINK, link);
    }
    if kind == SessionKind::Whep {
        let events = format!(
            "<{location}/events>; rel=\"urn:ietf:params:whep:ext:core:server-sent-events\"; \
             events=\"participant_joined,participant_left,track_published,track_unpublished,\
             slot_assigned,active_speaker,layers\""
        );
        if let Ok(v) = HeaderValue::from_str(&events) {
            h.append(header::LINK, v);
        }
        let layer = format!("<{location}/layer>; rel=\"urn:ietf:params:whep:ext:core:layer\"");
        if let Ok(v) = HeaderValue::from_str(&layer) {
            h.append(header::LINK, v);
        }
    }
    Ok(response)
}

/// `POST /whip/{room}`: publish.
pub async fn publish(
    State(state): State<AppState>,
    Path(room): Path<String>,
    join: Join,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Response, ApiError> {
    create(state, SessionKind::Whip, room, None, join, headers, body).await
}

/// `POST /whep/{room}`: play.
pub async fn play(
    State(state): State<AppState>,
    Path(room): Path<String>,
    join: Join,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Response, ApiError> {
    create(state, SessionKind::Whep, room, None, join, headers, body).await
}

/// `POST /whep/{room}/{participant}`: play one named participant.
pub async fn play_participant(
    State(state): State<AppState>,
    Path((room, participant)): Path<(String, String)>,
    join: Join,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Response, ApiError> {
    let target = Some(participant);
    create(state, SessionKind::Whep, room, target, join, headers, body).await
}

/// `HEAD /whep/{room}`: the endpoint exists.
pub async fn head(Path(room): Path<String>) -> Result<StatusCode, ApiError> {
    check_name("room", &room)?;
    Ok(StatusCode::OK)
}

/// `OPTIONS`: CORS preflight and what the endpoint accepts.
pub async fn options(State(state): State<AppState>) -> Response {
    let mut response = StatusCode::NO_CONTENT.into_response();
    let h = response.headers_mut();
    h.insert(
        header::ACCESS_CONTROL_ALLOW_METHODS,
        HeaderValue::from_static("POST, PATCH, DELETE, HEAD, OPTIONS"),
    );
    h.insert(
        header::ACCESS_CONTROL_ALLOW_HEADERS,
        HeaderValue::from_static("Authorization, Content-Type, If-Match"),
    );
    h.insert(
        header::ACCESS_CONTROL_MAX_AGE,
        HeaderValue::from_static("86400"),
    );
    h.insert("accept-post", HeaderValue::from_static(SDP));
    h.insert("accept-patch", HeaderValue::from_static(SDPFRAG));
    for link in ice_server_links(&state) {
        h.append(header::LINK, link);
    }
    response
}

/// Sessions of either kind are authorized by the token of their kind.
pub(super) fn authorize_session(
    state: &AppState,
    id: &str,
    headers: &HeaderMap,
) -> Result<(String, String), ApiError> {
    let (kind, etag, remote_ufrag) = match state.engine.registry.get(id) {
        Some(info) => (info.kind, info.etag.clone(), info.remote_ufrag.clone()),
        None => return Err(ApiError::no_session()),
    };
    let token = match kind {
        SessionKind::Whip => state.config.publish_token.as_deref(),
        SessionKind::Whep => state.config.play_token.as_deref(),
    };
    auth::require(token, headers)?;
    Ok((etag, remote_ufrag))
}

/// `PATCH /sessions/{id}`: trickle candidates (204) or restart ICE (200).
pub async fn patch(
    State(state): State<AppState>,
    Path(id): Path<String>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Response, ApiError> {
    let (etag, remote_ufrag) = authorize_session(&state, &id, &headers)?;
    if !content_type_is(&headers, SDPFRAG) {
        return Err(ApiError::new(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "PATCH must be sent with Content-Type: application/trickle-ice-sdpfrag",
        ));
    }
    let text = body_text(&body, "SDP fragment")?;
    let frag = sdpfrag::parse(&text).map_err(|e| ApiError::bad_request(e.to_string()))?;
    let if_match = headers.get(header::IF_MATCH).and_then(|v| v.to_str().ok());
    let etag_ok = |m: &str| m.trim() == "*" || m.split(',').any(|t| t.trim() == etag);
    if frag.is_restart(&remote_ufrag) {
        match if_match {
            None => {
                return Err(ApiError::new(
                    StatusCode::PRECONDITION_REQUIRED,
                    "an ICE restart needs If-Match: \"*\" or the session's ETag",
                ))
            }
            Some(m) if !etag_ok(m) => {
                return Err(ApiError::new(
                    StatusCode::PRECONDITION_FAILED,
                    "If-Match does not match the session's current ETag",
                ))
            }
            Some(_) => {}
        }
        let (new_etag, answer) = state.engine.restart(&id, frag).await?;
        let mut response = (StatusCode::OK, answer).into_response();
        let h = response.headers_mut();
        h.insert(header::CONTENT_TYPE, HeaderValue::from_static(SDPFRAG));
        if let Ok(v) = HeaderValue::from_str(&new_etag) {
            h.insert(header::ETAG, v);
        }
        return Ok(response);
    }
    if let Some(m) = if_match {
        if !etag_ok(m) {
            return Err(ApiError::new(
                StatusCode::PRECONDITION_FAILED,
                "If-Match does not match the session's current ETag",
            ));
        }
    }
    state.engine.trickle(&id, frag).await?;
    Ok(StatusCode::NO_CONTENT.into_response())
}

/// `DELETE /sessions/{id}`: end the session at once.
pub async fn delete(
    State(state): State<AppState>,
    Path(id): Path<String>,
    headers: HeaderMap,
) -> Result<StatusCode, ApiError> {
    authorize_session(&state, &id, &headers)?;
    if state.engine.close(&id, EndReason::Deleted).await {
        Ok(StatusCode::OK)
    } else {
        Err(ApiError::no_session())
    }
}

/// Anything else.
pub async fn not_found() -> ApiError {
    ApiError::new(StatusCode::NOT_FOUND, "no such resource")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_restricted() {
        for ok in ["a", "my-room_1.x", &"r".repeat(MAX_NAME_LEN)] {
            assert!(valid_name(ok), "{ok}");
        }
        for bad in [
            "",
            ".",
            "..",
            "...",
            "a b",
            "ä",
            "../x",
            "a/b",
            &"r".repeat(MAX_NAME_LEN + 1),
        ] {
            assert!(!valid_name(bad), "{bad}");
        }
    }
}
