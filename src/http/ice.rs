//! The ICE servers a client may use: STUN and TURN URLs from the configuration, TURN with
//! time-limited credentials Parley mints for each answer.
//!
//! TURN runs in coturn (or any server with the same scheme), not in Parley. Credentials
//! follow coturn's REST scheme (`use-auth-secret` with `static-auth-secret`): the username
//! is `expiry:label` (expiry in Unix seconds), the password the base64 HMAC-SHA1 of the
//! username under the shared secret, so coturn checks them without asking Parley. They
//! reach a client on every WHIP/WHEP `201` as `Link: <turn:…>; rel="ice-server";
//! username=…; credential=…; credential-type="password"` (RFC 9725) and at
//! `GET /ice-servers` as `RTCIceServer` objects, for a page that configures its
//! `RTCPeerConnection` before the offer.

use super::auth;
use super::error::ApiError;
use super::AppState;
use axum::extract::State;
use axum::http::{HeaderMap, HeaderValue};
use axum::Json;
use base64::Engine as _;
use hmac::{Hmac, Mac};
use serde::Serialize;
use std::time::{SystemTime, UNIX_EPOCH};

/// TURN servers and the secret their credentials are minted with.
#[derive(Clone, Debug, Default)]
pub struct Turn {
    /// `turn:` and `turns:` URLs.
    pub urls: Vec<String>,
    /// coturn's `static-auth-secret`.
    pub secret: Vec<u8>,
    /// How long minted credentials stay valid, in seconds.
    pub ttl_secs: u64,
}

/// One ICE server, as `RTCIceServer` names its fields.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct IceServer {
    /// Its URLs.
    pub urls: Vec<String>,
    /// TURN: the minted username.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub username: Option<String>,
    /// TURN: the minted password.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub credential: Option<String>,
}

/// coturn's REST credential for `label`, valid until `expiry` (Unix seconds): the
/// username `expiry:label` and the base64 HMAC-SHA1 of it under `secret`.
pub fn credential(secret: &[u8], expiry: u64, label: &str) -> (String, String) {
    let username = format!("{expiry}:{label}");
    // HMAC accepts a key of any length.
    let mut mac = Hmac::<sha1::Sha1>::new_from_slice(secret).expect("HMAC takes any key length");
    mac.update(username.as_bytes());
    let password = base64::engine::general_purpose::STANDARD.encode(mac.finalize().into_bytes());
    (username, password)
}

/// The ICE servers for a client: each `--ice-server` URL as it is, then the TURN URLs with a
/// credential for `label` minted at `now` (Unix seconds).
pub fn servers(stun: &[String], turn: &Turn, now: u64, label: &str) -> Vec<IceServer> {
    let mut out: Vec<IceServer> = stun
        .iter()
        .map(|url| IceServer {
            urls: vec![url.clone()],
            username: None,
            credential: None,
        })
        .collect();
    if !turn.urls.is_empty() {
        let (username, credential) = credential(&turn.secret, now + turn.ttl_secs, label);
        out.push(IceServer {
            urls: turn.urls.clone(),
            username: Some(username),
            credential: Some(credential),
        });
    }
    out
}

/// The `Link` header values of `servers` (RFC 9725 §4.6): one per URL.
pub fn links(servers: &[IceServer]) -> Vec<HeaderValue> {
    let mut out = Vec::new();
    for s in servers {
        for url in &s.urls {
            let mut link = format!("<{url}>; rel=\"ice-server\"");
            if let (Some(u), Some(c)) = (&s.username, &s.credential) {
                link.push_str(&format!(
                    "; username=\"{u}\"; credential=\"{c}\"; credential-type=\"password\""
                ));
            }
            if let Ok(v) = HeaderValue::from_str(&link) {
                out.push(v);
            }
        }
    }
    out
}

/// Seconds since the Unix epoch.
pub fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// The ICE servers of this server's configuration for `label`, minted now.
pub fn for_client(state: &AppState, label: &str) -> Vec<IceServer> {
    servers(&state.config.ice_server, &state.turn, unix_now(), label)
}

/// `GET /ice-servers`: `{"iceServers": [...]}`. When tokens are set, either the publish or
/// the play token opens it (TURN credentials are worth guarding).
pub async fn list(
    State(state): State<AppState>,
    headers: HeaderMap,
) -> Result<Json<serde_json::Value>, ApiError> {
    let publish = state.config.publish_token.as_deref();
    let play = state.config.play_token.as_deref();
    if publish.is_some() || play.is_some() {
        let ok = [publish, play]
            .into_iter()
            .flatten()
            .any(|token| auth::require(Some(token), &headers).is_ok());
        if !ok {
            return Err(ApiError::unauthorized(
                "the publish or the play bearer token is required",
            ));
        }
    }
    let label = format!("{:016x}", rand::random::<u64>());
    Ok(Json(
        serde_json::json!({ "iceServers": for_client(&state, &label) }),
    ))
}

/// The CORS preflight of `GET /ice-servers` (a page sends its token with it).
pub async fn options() -> impl axum::response::IntoResponse {
    use axum::http::{header, StatusCode};
    (
        StatusCode::NO_CONTENT,
        [
            (header::ACCESS_CONTROL_ALLOW_METHODS, "GET, OPTIONS"),
            (header::ACCESS_CONTROL_ALLOW_HEADERS, "Authorization"),
            (header::ACCESS_CONTROL_MAX_AGE, "86400"),
        ],
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_credential_is_coturns_rest_scheme() {
        // printf '1700000000:alice' | openssl dgst -sha1 -hmac 'north' -binary | base64
        let (user, pass) = credential(b"north", 1_700_000_000, "alice");
        assert_eq!(user, "1700000000:alice");
        assert_eq!(pass, KNOWN);
    }

    const KNOWN: &str = "Cd/49soE35ICqcJF/bCTn8Z4OyE=";

    #[test]
    fn stun_servers_come_as_they_are_and_turn_servers_with_credentials() {
        let turn = Turn {
            urls: vec![
                "turn:t.example:3478?transport=udp".into(),
                "turns:t.example:443?transport=tcp".into(),
            ],
            secret: b"north".to_vec(),
            ttl_secs: 600,
        };
        let got = servers(&["stun:s.example:3478".into()], &turn, 1_000, "s1");
        assert_eq!(got.len(), 2);
        assert_eq!(got[0].username, None);
        assert_eq!(got[1].username.as_deref(), Some("1600:s1"));
        let links: Vec<String> = links(&got)
            .iter()
            .map(|v| v.to_str().unwrap_or_default().to_owned())
            .collect();
        assert_eq!(links[0], "<stun:s.example:3478>; rel=\"ice-server\"");
        assert!(links[1].starts_with("<turn:t.example:3478?transport=udp>; rel=\"ice-server\"; username=\"1600:s1\"; credential=\""));
        assert!(links[2].ends_with("credential-type=\"password\""));
        assert!(servers(&[], &Turn::default(), 0, "x").is_empty());
    }
}
