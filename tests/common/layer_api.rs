//! The WHEP layer extension and `layers` events as a client sees them: POST a layer request
//! to the URL of a session's `Link` (rel `urn:ietf:params:whep:ext:core:layer`), post a raw
//! SDP offer, and read the `layers` events of one video slot.
//!
//! Owns only HTTP requests and JSON reading; a `reqwest::Client` per call (see signaling.rs).

use reqwest::header::{CONTENT_TYPE, LOCATION};
use reqwest::StatusCode;
use serde_json::Value;

/// The `rel` of the layer endpoint's `Link`.
pub const LAYER_REL: &str = "urn:ietf:params:whep:ext:core:layer";

/// POSTs `body` as JSON to a layer URL; returns the status and the response text.
/// Panics if no response came back (never the outcome a test wants to assert).
pub async fn post_layer(url: &str, body: &str) -> (StatusCode, String) {
    let response = reqwest::Client::new()
        .post(url)
        .header(CONTENT_TYPE, "application/json")
        .body(body.to_owned())
        .send()
        .await
        .unwrap_or_else(|e| panic!("POST {url}: {e}"));
    let status = response.status();
    let text = response.text().await.unwrap_or_default();
    (status, text)
}

/// What a raw offer POST returned.
pub struct Posted {
    pub status: StatusCode,
    /// Absolute session URL when the server created one.
    pub location: Option<String>,
    pub body: String,
}

/// POSTs `sdp` to `{base}/whip/{room}` as it is, without any peer behind it.
pub async fn post_raw_offer(base: &str, room: &str, sdp: &str) -> Posted {
    let url = format!("{}/whip/{room}", base.trim_end_matches('/'));
    let response = reqwest::Client::new()
        .post(&url)
        .header(CONTENT_TYPE, "application/sdp")
        .body(sdp.to_owned())
        .send()
        .await
        .unwrap_or_else(|e| panic!("POST {url}: {e}"));
    let status = response.status();
    let location = response
        .headers()
        .get(LOCATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|l| reqwest::Url::parse(&url).ok()?.join(l).ok())
        .map(String::from);
    let body = response.text().await.unwrap_or_default();
    Posted {
        status,
        location,
        body,
    }
}

/// The `layers` events for video slot `mid`, oldest first.
pub fn layer_events<'a>(events: &'a [Value], mid: &str) -> Vec<&'a Value> {
    events
        .iter()
        .filter(|e| e["type"] == "layers" && e["mid"] == mid)
        .collect()
}

/// The latest `layers` event for `mid`.
pub fn latest_layers<'a>(events: &'a [Value], mid: &str) -> Option<&'a Value> {
    layer_events(events, mid).last().copied()
}

/// `(rid, spatialLayerId, width, height)` of each listed layer of a `layers` event.
pub fn listed(event: &Value) -> Vec<(String, u64, u64, u64)> {
    event["layers"]
        .as_array()
        .map(|layers| {
            layers
                .iter()
                .map(|l| {
                    (
                        l["rid"].as_str().unwrap_or("?").to_owned(),
                        l["spatialLayerId"].as_u64().unwrap_or(99),
                        l["width"].as_u64().unwrap_or(0),
                        l["height"].as_u64().unwrap_or(0),
                    )
                })
                .collect()
        })
        .unwrap_or_default()
}

/// `(rid, spatialLayerId, width, height)` of the active layer, if any.
pub fn active(event: &Value) -> Option<(String, u64, u64, u64)> {
    let a = event.get("active").filter(|a| !a.is_null())?;
    Some((
        a["rid"].as_str().unwrap_or("?").to_owned(),
        a["spatialLayerId"].as_u64().unwrap_or(99),
        a["width"].as_u64().unwrap_or(0),
        a["height"].as_u64().unwrap_or(0),
    ))
}

/// One `layers` event in a line (`rid@spatialTtemporal paused=… reason est=…`), for failure
/// messages.
pub fn brief(e: &Value) -> String {
    format!(
        "{}@{}T{} paused={} {} est={}",
        e["active"]["rid"],
        e["active"]["spatialLayerId"],
        e["active"]["temporalLayerId"],
        e["paused"],
        e["reason"],
        e["estimate"]
    )
}
