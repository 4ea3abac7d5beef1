//! The WHEP layer extension: `POST /sessions/{id}/layer` chooses what one video slot of a
//! viewer receives (a pinned layer, or limits on the automatic choice).
//!
//! The body is JSON with `mediaId` (the slot's mid) and any of `rid` (alias `encodingId`, as
//! Broadcast Box names it), `spatialLayerId`, `temporalLayerId`, `maxSpatialLayerId`,
//! `maxTemporalLayerId`, `maxWidth`, `maxHeight`. `mediaId` alone returns the slot to
//! automatic. `204` on success; `400` with a reason for a malformed request or a mid the
//! session has no video slot for; `404` for an unknown session.

use super::error::ApiError;
use super::sessions::authorize_session;
use super::AppState;
use crate::forward::selector::{Pin, Preferences, MAX_TEMPORAL};
use crate::transport::MAX_LAYERS;
use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use serde::Deserialize;

/// Largest `maxWidth`/`maxHeight` accepted (no codec Parley forwards goes beyond it).
const MAX_DIMENSION: u32 = 16_384;
/// Longest rid accepted (RFC 8851 rids are short tokens).
const MAX_RID_LEN: usize = 64;

/// The request body, as the WHEP extension names its fields.
#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct LayerRequest {
    media_id: String,
    #[serde(alias = "encodingId")]
    rid: Option<String>,
    spatial_layer_id: Option<u8>,
    temporal_layer_id: Option<u8>,
    max_spatial_layer_id: Option<u8>,
    max_temporal_layer_id: Option<u8>,
    max_width: Option<u32>,
    max_height: Option<u32>,
}

fn check_layer(field: &str, value: Option<u8>, most: u8) -> Result<(), ApiError> {
    match value {
        Some(v) if v > most => Err(ApiError::bad_request(format!(
            "{field} must be between 0 and {most}, not {v}"
        ))),
        _ => Ok(()),
    }
}

fn check_dimension(field: &str, value: Option<u32>) -> Result<(), ApiError> {
    match value {
        Some(v) if v == 0 || v > MAX_DIMENSION => Err(ApiError::bad_request(format!(
            "{field} must be between 1 and {MAX_DIMENSION}, not {v}"
        ))),
        _ => Ok(()),
    }
}

/// Reads and checks a request body: the slot's mid and what it should receive.
fn parse(body: &[u8]) -> Result<(String, Preferences), ApiError> {
    let req: LayerRequest = serde_json::from_slice(body).map_err(|e| {
        ApiError::bad_request(format!(
            "the layer request is not valid JSON of its form: {e}"
        ))
    })?;
    let top_spatial = (MAX_LAYERS - 1) as u8;
    check_layer("spatialLayerId", req.spatial_layer_id, top_spatial)?;
    check_layer("maxSpatialLayerId", req.max_spatial_layer_id, top_spatial)?;
    check_layer("temporalLayerId", req.temporal_layer_id, MAX_TEMPORAL)?;
    check_layer(
        "maxTemporalLayerId",
        req.max_temporal_layer_id,
        MAX_TEMPORAL,
    )?;
    check_dimension("maxWidth", req.max_width)?;
    check_dimension("maxHeight", req.max_height)?;
    if req.media_id.is_empty() || req.media_id.len() > MAX_RID_LEN {
        return Err(ApiError::bad_request(
            "mediaId must name one of the session's m-lines",
        ));
    }
    if let Some(rid) = &req.rid {
        let token = rid
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_');
        if rid.is_empty() || rid.len() > MAX_RID_LEN || !token {
            return Err(ApiError::bad_request(
                "rid must be a short alphanumeric token",
            ));
        }
    }
    let pin = match (req.rid, req.spatial_layer_id) {
        (Some(rid), _) => Some(Pin::Rid(rid)),
        (None, Some(s)) => Some(Pin::Spatial(s)),
        (None, None) => None,
    };
    Ok((
        req.media_id,
        Preferences {
            pin,
            temporal: req.temporal_layer_id,
            max_spatial: req.max_spatial_layer_id,
            max_temporal: req.max_temporal_layer_id,
            max_width: req.max_width,
            max_height: req.max_height,
        },
    ))
}

/// `POST /sessions/{id}/layer`.
pub async fn choose(
    State(state): State<AppState>,
    Path(id): Path<String>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<StatusCode, ApiError> {
    authorize_session(&state, &id, &headers)?;
    let (mid, prefs) = parse(&body)?;
    state.engine.set_layer(&id, &mid, prefs).await?;
    Ok(StatusCode::NO_CONTENT)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn requests_become_preferences() {
        let (mid, p) = parse(br#"{"mediaId":"1"}"#).expect("automatic");
        assert_eq!((mid.as_str(), p), ("1", Preferences::default()));
        let (_, p) = parse(br#"{"mediaId":"1","encodingId":"h"}"#).expect("alias");
        assert_eq!(p.pin, Some(Pin::Rid("h".into())));
        let (_, p) = parse(
            br#"{"mediaId":"0","spatialLayerId":1,"temporalLayerId":0,"maxWidth":640,"maxHeight":360,"maxSpatialLayerId":2,"maxTemporalLayerId":1,"extra":true}"#,
        )
        .expect("every field");
        assert_eq!(
            p,
            Preferences {
                pin: Some(Pin::Spatial(1)),
                temporal: Some(0),
                max_spatial: Some(2),
                max_temporal: Some(1),
                max_width: Some(640),
                max_height: Some(360),
            }
        );
    }

    #[test]
    fn bad_requests_say_why() {
        for (body, why) in [
            (&br#"{}"#[..], "mediaId"),
            (b"not json", "not valid JSON"),
            (br#"{"mediaId":1}"#, "not valid JSON"),
            (br#"{"mediaId":"1","maxWidth":"wide"}"#, "not valid JSON"),
            (br#"{"mediaId":"1","spatialLayerId":-1}"#, "not valid JSON"),
            (br#"{"mediaId":"1","spatialLayerId":7}"#, "spatialLayerId"),
            (
                br#"{"mediaId":"1","temporalLayerId":200}"#,
                "temporalLayerId",
            ),
            (br#"{"mediaId":"1","maxWidth":0}"#, "maxWidth"),
            (br#"{"mediaId":"1","maxHeight":99999999}"#, "maxHeight"),
            (br#"{"mediaId":"1","rid":"a b"}"#, "rid"),
            (br#"{"mediaId":""}"#, "mediaId"),
        ] {
            let err = parse(body).expect_err(std::str::from_utf8(body).unwrap_or("?"));
            assert_eq!(err.status(), StatusCode::BAD_REQUEST);
            assert!(err.reason().contains(why), "{} lacks {why}", err.reason());
        }
    }
}
