//! The HTTP side of a cluster: a WHIP/WHEP request for a room another node holds is passed
//! to that node, by proxy or by `307 Temporary Redirect` (`--cluster-signaling`); and the
//! health endpoints load balancers ask (`/healthz`: the process answers; `/readyz`: it takes
//! new sessions, and whether its cluster's Redis answers).

use super::error::ApiError;
use super::AppState;
use crate::cluster::{Cluster, NodeRecord, Signaling, FORWARDED, FORWARDED_FOR};
use axum::body::Bytes;
use axum::http::{header, HeaderMap, HeaderName, HeaderValue, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde_json::json;
use std::net::IpAddr;

/// Request headers a passed-on POST keeps.
const REQUEST_HEADERS: [HeaderName; 3] =
    [header::CONTENT_TYPE, header::AUTHORIZATION, header::ACCEPT];

/// Answer headers the client gets back from the room's node.
const ANSWER_HEADERS: [HeaderName; 7] = [
    header::CONTENT_TYPE,
    header::LOCATION,
    header::ETAG,
    header::LINK,
    header::RETRY_AFTER,
    header::WWW_AUTHENTICATE,
    HeaderName::from_static("accept-patch"),
];

/// Whether a request came from another node, which already chose this one.
pub(super) fn forwarded(headers: &HeaderMap) -> bool {
    headers.contains_key(FORWARDED)
}

/// The client a request's limits apply to: the address another node passed on, when the
/// request comes from a node of the cluster; else the connection's.
pub(super) fn client_ip(state: &AppState, peer: IpAddr, headers: &HeaderMap) -> IpAddr {
    let passed = headers
        .get(FORWARDED_FOR)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse::<IpAddr>().ok());
    match (passed, &state.cluster) {
        (Some(ip), Some(c)) if is_node(c, peer) => ip,
        _ => peer,
    }
}

fn is_node(cluster: &Cluster, ip: IpAddr) -> bool {
    cluster.node_addresses().contains(&ip)
}

/// Passes a WHIP/WHEP POST to `owner`, the node that holds its room.
pub(super) async fn pass(
    cluster: &Cluster,
    owner: &NodeRecord,
    uri: &Uri,
    headers: &HeaderMap,
    client: Option<IpAddr>,
    body: Bytes,
) -> Response {
    let path = uri.path_and_query().map_or(uri.path(), |p| p.as_str());
    let target = format!("{}{path}", owner.url);
    if cluster.signaling() == Signaling::Redirect {
        cluster
            .metrics()
            .passed
            .with_label_values(&["redirected"])
            .inc();
        let mut response = (
            StatusCode::TEMPORARY_REDIRECT,
            format!("the room is served by {target}\n"),
        )
            .into_response();
        if let Ok(v) = HeaderValue::from_str(&target) {
            response.headers_mut().insert(header::LOCATION, v);
        }
        return response;
    }
    let mut request = cluster
        .http()
        .post(&target)
        .header(FORWARDED, cluster.node_id())
        .body(body);
    for name in REQUEST_HEADERS {
        if let Some(v) = headers.get(&name) {
            request = request.header(name, v);
        }
    }
    if let Some(ip) = client {
        request = request.header(FORWARDED_FOR, ip.to_string());
    }
    let answer = match request.send().await {
        Ok(a) => a,
        Err(e) => {
            cluster.metrics().pass_failures.inc();
            tracing::warn!("cluster: node {} did not answer {path}: {e}", owner.id);
            return ApiError::new(
                StatusCode::SERVICE_UNAVAILABLE,
                format!("the room's node ({}) did not answer; try again", owner.id),
            )
            .with_header(header::RETRY_AFTER, "2")
            .into_response();
        }
    };
    let status = StatusCode::from_u16(answer.status().as_u16()).unwrap_or(StatusCode::BAD_GATEWAY);
    let mut passed = HeaderMap::new();
    for name in ANSWER_HEADERS {
        for v in answer.headers().get_all(name.as_str()) {
            let v = match name == header::LOCATION || name == header::LINK {
                true => absolute(&owner.url, v),
                false => HeaderValue::from_bytes(v.as_bytes()).ok(),
            };
            if let Some(v) = v {
                passed.append(name.clone(), v);
            }
        }
    }
    let body = match answer.bytes().await {
        Ok(b) => b,
        Err(e) => {
            cluster.metrics().pass_failures.inc();
            return ApiError::new(
                StatusCode::BAD_GATEWAY,
                format!("the room's node ({}) broke off its answer: {e}", owner.id),
            )
            .into_response();
        }
    };
    cluster
        .metrics()
        .passed
        .with_label_values(&["proxied"])
        .inc();
    let mut response = (status, body).into_response();
    *response.headers_mut() = passed;
    response
}

/// Asks every other live node for `path` of its own room API (with the client's
/// `Authorization`, marked as coming from a node so it answers for itself only), all at
/// once; returns the nodes that answered 200 with JSON. A node that does not answer within
/// a second is left out.
pub(super) async fn ask_others(
    cluster: &Cluster,
    path: &str,
    headers: &HeaderMap,
) -> Vec<(NodeRecord, serde_json::Value)> {
    let others: Vec<NodeRecord> = cluster
        .nodes()
        .into_iter()
        .filter(|n| n.id != cluster.node_id())
        .collect();
    let asks = others.into_iter().map(|node| async move {
        let mut request = cluster
            .http()
            .get(format!("{}{path}", node.url))
            .timeout(std::time::Duration::from_secs(1))
            .header(FORWARDED, cluster.node_id());
        if let Some(v) = headers.get(header::AUTHORIZATION) {
            request = request.header(header::AUTHORIZATION, v);
        }
        let answer = request.send().await.ok()?;
        if answer.status() != reqwest::StatusCode::OK {
            return None;
        }
        Some((node, answer.json::<serde_json::Value>().await.ok()?))
    });
    futures_util::future::join_all(asks)
        .await
        .into_iter()
        .flatten()
        .collect()
}

/// A `Location` or `Link` value with its relative URLs (`/sessions/…`, `</sessions/…>`)
/// made absolute on `base`, so that PATCH, DELETE and the session's other resources go
/// straight to the room's node.
fn absolute(base: &str, value: &reqwest::header::HeaderValue) -> Option<HeaderValue> {
    let text = value.to_str().ok()?;
    let fixed = if text.starts_with('/') {
        format!("{base}{text}")
    } else {
        text.replace("</", &format!("<{base}/"))
    };
    HeaderValue::from_str(&fixed).ok()
}

/// `GET /healthz`: the process answers.
pub async fn healthz() -> &'static str {
    "ok\n"
}

/// `GET /readyz`: 200 while new sessions are taken (503 while draining), with the cluster's
/// state: a node whose Redis is away is still ready (it serves on its own).
pub async fn readyz(axum::extract::State(state): axum::extract::State<AppState>) -> Response {
    let draining = state.draining.load(std::sync::atomic::Ordering::SeqCst);
    let cluster = state.cluster.as_ref().map(|c| {
        json!({
            "node": c.node_id(),
            "url": c.url(),
            "up": c.is_up(),
            "nodes": if c.is_up() { c.nodes().len() } else { 1 },
        })
    });
    let status = match draining {
        true => StatusCode::SERVICE_UNAVAILABLE,
        false => StatusCode::OK,
    };
    (
        status,
        Json(json!({ "ready": !draining, "draining": draining, "cluster": cluster })),
    )
        .into_response()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn relative_urls_point_at_the_rooms_node() {
        let v = |s: &str| reqwest::header::HeaderValue::from_str(s).expect("value");
        let base = "http://10.0.0.2:8080";
        assert_eq!(
            absolute(base, &v("/sessions/ab")).expect("valid"),
            "http://10.0.0.2:8080/sessions/ab"
        );
        assert_eq!(
            absolute(base, &v("</sessions/ab/layer>; rel=\"x\"")).expect("valid"),
            "<http://10.0.0.2:8080/sessions/ab/layer>; rel=\"x\""
        );
        // Absolute ones and ICE servers stay as they are.
        for same in ["http://x/sessions/ab", "<turn:t:3478>; rel=\"ice-server\""] {
            assert_eq!(absolute(base, &v(same)).expect("valid"), same);
        }
    }
}
