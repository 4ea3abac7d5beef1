//! WHIP/WHEP over plain HTTP: POST a complete (non-trickle) offer, read the answer and the
//! session URL, DELETE it. Works with any WHIP/WHEP server: the Location header is resolved
//! against the POST URL, whatever its shape (`/sessions/{id}`, `/whip/{room}/{id}`, ...).
//! A `429` or `503` is retried after its `Retry-After` (at most [`MAX_RETRIES`] times), as a
//! well-behaved client would: every generator peer comes from the same address.
//!
//! The WHEP layer extension: a `201` may carry `Link: <URL>; rel="urn:ietf:params:whep:
//! ext:core:layer"`; a viewer POSTs `{"mediaId": MID, "maxWidth": ...}` there and expects
//! `204` (see [`request_layer`]).

use crate::cli::LayerLimits;
use crate::net::realtime_ns;
use anyhow::{anyhow, bail, Context, Result};
use reqwest::header::{AUTHORIZATION, CONTENT_TYPE, LINK, LOCATION, RETRY_AFTER};
use reqwest::{Client, Response, StatusCode, Url};
use std::time::Duration;

/// Retries of one request answered 429 or 503.
pub const MAX_RETRIES: u32 = 30;

/// WHIP (publish) or WHEP (play).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Endpoint {
    /// `POST {base}/whip/{room}`.
    Whip,
    /// `POST {base}/whep/{room}`.
    Whep,
}

/// The server's answer to an offer.
#[derive(Debug)]
pub struct Answer {
    /// Absolute session URL.
    pub location: Url,
    /// SDP answer.
    pub sdp: String,
    /// When the successful POST was sent (CLOCK_REALTIME ns).
    pub posted_ns: u64,
    /// POSTs answered 429 or 503 before this one.
    pub retries: u32,
    /// The layer extension's URL (absolute), if the answer links one.
    pub layer_url: Option<Url>,
}

/// The WHEP layer extension's link relation.
pub const LAYER_REL: &str = "urn:ietf:params:whep:ext:core:layer";

/// Splits a Link header value into its links at the commas outside `<...>` and quotes.
fn split_links(value: &str) -> Vec<&str> {
    let (mut out, mut start, mut in_uri, mut in_quotes) = (Vec::new(), 0, false, false);
    for (i, c) in value.char_indices() {
        match c {
            '<' if !in_quotes => in_uri = true,
            '>' if !in_quotes => in_uri = false,
            '"' if !in_uri => in_quotes = !in_quotes,
            ',' if !in_uri && !in_quotes => {
                out.push(&value[start..i]);
                start = i + 1;
            }
            _ => {}
        }
    }
    out.push(&value[start..]);
    out
}

/// The target of the first link with relation `rel` among Link header values (RFC 8288:
/// `<target>; rel="a b"`, relation types compared case-insensitively).
pub fn find_link<'a>(values: impl IntoIterator<Item = &'a str>, rel: &str) -> Option<String> {
    for value in values {
        for link in split_links(value) {
            let mut parts = link.split(';');
            let target = parts.next()?.trim();
            let Some(target) = target.strip_prefix('<').and_then(|t| t.strip_suffix('>')) else {
                continue;
            };
            let has_rel = parts.any(|p| {
                let Some((name, v)) = p.split_once('=') else {
                    return false;
                };
                name.trim().eq_ignore_ascii_case("rel")
                    && v.trim()
                        .trim_matches('"')
                        .split_ascii_whitespace()
                        .any(|r| r.eq_ignore_ascii_case(rel))
            });
            if has_rel {
                return Some(target.to_owned());
            }
        }
    }
    None
}

/// The JSON body of a layer request for the video m-line `mid`.
pub fn layer_body(mid: &str, limits: &LayerLimits) -> serde_json::Value {
    let mut body = serde_json::json!({ "mediaId": mid });
    if let Some(w) = limits.max_width {
        body["maxWidth"] = w.into();
    }
    if let Some(h) = limits.max_height {
        body["maxHeight"] = h.into();
    }
    if let Some(t) = limits.max_temporal {
        body["maxTemporalLayerId"] = t.into();
    }
    if let Some(l) = limits.max_spatial {
        body["maxSpatialLayerId"] = l.into();
    }
    body
}

/// Sends a viewer's layer request for each of its video `mids` to the answer's layer URL
/// (`Err(post_url)` when the answer to that POST had no layer Link). Returns how many got
/// their `204`, or the first failure as one line.
pub async fn request_layers(
    client: &Client,
    layer_url: Result<&Url, &Url>,
    token: Option<&str>,
    mids: &[String],
    limits: &LayerLimits,
) -> Result<usize, String> {
    let url = layer_url.map_err(|post| {
        format!(
            "the WHEP answer to POST {post} has no Link rel=\"{LAYER_REL}\": no layer request sent"
        )
    })?;
    for mid in mids {
        request_layer(client, url, token, mid, limits)
            .await
            .map_err(|e| format!("{e:#}"))?;
    }
    Ok(mids.len())
}

/// POSTs one layer request and expects `204 No Content`; the error is one line.
pub async fn request_layer(
    client: &Client,
    url: &Url,
    token: Option<&str>,
    mid: &str,
    limits: &LayerLimits,
) -> Result<()> {
    let body = layer_body(mid, limits).to_string();
    let mut retries = 0;
    loop {
        let mut request = client
            .post(url.clone())
            .header(CONTENT_TYPE, "application/json")
            .body(body.clone());
        if let Some(token) = token {
            request = request.header(AUTHORIZATION, format!("Bearer {token}"));
        }
        let response = request
            .send()
            .await
            .with_context(|| format!("layer request POST {url}"))?;
        let status = response.status();
        if busy(status) && retries < MAX_RETRIES {
            retries += 1;
            tokio::time::sleep(retry_after(&response)).await;
            continue;
        }
        if status == StatusCode::NO_CONTENT {
            return Ok(());
        }
        let text = response.text().await.unwrap_or_default();
        let reason = text.lines().next().unwrap_or("").trim();
        bail!("layer request POST {url} {body}: {status} (expected 204) {reason}");
    }
}

/// How long a 429/503 asks us to wait (`Retry-After` seconds; 1 s if absent), capped at 5 s.
fn retry_after(response: &Response) -> Duration {
    let secs = response
        .headers()
        .get(RETRY_AFTER)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse::<f64>().ok())
        .unwrap_or(1.0);
    Duration::from_secs_f64(secs.clamp(0.05, 5.0))
}

fn busy(status: StatusCode) -> bool {
    status == StatusCode::TOO_MANY_REQUESTS || status == StatusCode::SERVICE_UNAVAILABLE
}

/// `{base}/{whip|whep}/{room}[?participant=NAME]`.
pub fn endpoint_url(
    base: &str,
    endpoint: Endpoint,
    room: &str,
    participant: Option<&str>,
) -> Result<Url> {
    let path = match endpoint {
        Endpoint::Whip => "whip",
        Endpoint::Whep => "whep",
    };
    let raw = format!("{}/{path}/", base.trim_end_matches('/'));
    let mut url = Url::parse(&raw).with_context(|| format!("invalid server URL {base:?}"))?;
    url.path_segments_mut()
        .map_err(|()| anyhow!("server URL {base:?} cannot have a path"))?
        .pop_if_empty()
        .push(room);
    if let Some(p) = participant {
        url.query_pairs_mut().append_pair("participant", p);
    }
    Ok(url)
}

/// POSTs an offer and expects `201 Created` with an SDP answer and a Location.
pub async fn post_offer(
    client: &Client,
    url: &Url,
    token: Option<&str>,
    offer: String,
) -> Result<Answer> {
    let mut retries = 0;
    let (response, posted_ns) = loop {
        let mut request = client
            .post(url.clone())
            .header(CONTENT_TYPE, "application/sdp")
            .body(offer.clone());
        if let Some(token) = token {
            request = request.header(AUTHORIZATION, format!("Bearer {token}"));
        }
        let posted_ns = realtime_ns();
        let response = request
            .send()
            .await
            .with_context(|| format!("POST {url}"))?;
        if busy(response.status()) && retries < MAX_RETRIES {
            retries += 1;
            tokio::time::sleep(retry_after(&response)).await;
            continue;
        }
        break (response, posted_ns);
    };
    let status = response.status();
    let location = response
        .headers()
        .get(LOCATION)
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned);
    let layer_link = find_link(
        response
            .headers()
            .get_all(LINK)
            .iter()
            .filter_map(|v| v.to_str().ok()),
        LAYER_REL,
    );
    let body = response
        .text()
        .await
        .with_context(|| format!("POST {url}"))?;
    if status != StatusCode::CREATED {
        bail!("POST {url}: {status}: {}", body.trim());
    }
    let location = location.ok_or_else(|| anyhow!("POST {url}: 201 without a Location"))?;
    let location = url
        .join(&location)
        .with_context(|| format!("POST {url}: bad Location {location:?}"))?;
    if !body.trim_start().starts_with("v=0") {
        bail!("POST {url}: the 201 body is not an SDP answer");
    }
    let layer_url = layer_link.and_then(|l| url.join(&l).ok());
    Ok(Answer {
        location,
        sdp: body,
        posted_ns,
        retries,
        layer_url,
    })
}

/// DELETEs a session; returns the status.
pub async fn delete(client: &Client, url: &Url, token: Option<&str>) -> Result<StatusCode> {
    let mut retries = 0;
    loop {
        let mut request = client.delete(url.clone());
        if let Some(token) = token {
            request = request.header(AUTHORIZATION, format!("Bearer {token}"));
        }
        let response = request
            .send()
            .await
            .with_context(|| format!("DELETE {url}"))?;
        if busy(response.status()) && retries < MAX_RETRIES {
            retries += 1;
            tokio::time::sleep(retry_after(&response)).await;
            continue;
        }
        return Ok(response.status());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn endpoint_urls() {
        let u = endpoint_url("http://h:1/", Endpoint::Whep, "room 1", Some("p/1")).expect("ok");
        assert_eq!(u.as_str(), "http://h:1/whep/room%201?participant=p%2F1");
        let u = endpoint_url("http://h:1/api", Endpoint::Whip, "r", None).expect("ok");
        assert_eq!(u.as_str(), "http://h:1/api/whip/r");
        let base = Url::parse("http://h:1/whip/r").expect("url");
        assert_eq!(
            base.join("/sessions/abc").expect("join").as_str(),
            "http://h:1/sessions/abc"
        );
    }

    #[test]
    fn finds_the_layer_link_among_others() {
        let values = [
            r#"<stun:127.0.0.1:3478>; rel="ice-server", </sessions/a,b/layer>; rel="urn:ietf:params:whep:ext:core:layer""#,
        ];
        assert_eq!(
            find_link(values, LAYER_REL).as_deref(),
            Some("/sessions/a,b/layer")
        );
        let two_headers = [
            "<https://x/sse>; rel=\"urn:ietf:params:whep:ext:core:server-sent-events\"",
            "</sessions/abc/layer>;rel=URN:IETF:PARAMS:WHEP:EXT:CORE:LAYER",
        ];
        assert_eq!(
            find_link(two_headers, LAYER_REL).as_deref(),
            Some("/sessions/abc/layer")
        );
        assert_eq!(find_link(["<x>; rel=\"ice-server\""], LAYER_REL), None);
        assert_eq!(find_link(["garbage; rel=x", ""], LAYER_REL), None);
        assert_eq!(find_link(Vec::<&str>::new(), LAYER_REL), None);
    }

    #[test]
    fn layer_bodies() {
        let limits = LayerLimits {
            max_width: Some(320),
            max_height: None,
            max_temporal: Some(1),
            max_spatial: Some(0),
        };
        assert_eq!(
            layer_body("1", &limits),
            serde_json::json!({"mediaId": "1", "maxWidth": 320, "maxTemporalLayerId": 1,
                "maxSpatialLayerId": 0})
        );
        let only_height = LayerLimits {
            max_height: Some(360),
            ..Default::default()
        };
        assert_eq!(
            layer_body("3", &only_height),
            serde_json::json!({"mediaId": "3", "maxHeight": 360})
        );
    }

    /// A one-request HTTP server that answers `response` and hands back the request.
    async fn one_shot(response: &'static str) -> (Url, tokio::task::JoinHandle<String>) {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let url = Url::parse(&format!(
            "http://{}/sessions/abc/layer",
            listener.local_addr().expect("addr")
        ))
        .expect("url");
        let server = tokio::spawn(async move {
            let (mut conn, _) = listener.accept().await.expect("accept");
            let mut request = Vec::new();
            let mut buf = [0u8; 4096];
            // Headers, then the JSON body (it ends with a brace).
            while !request.ends_with(b"}") {
                let n = conn.read(&mut buf).await.expect("read");
                if n == 0 {
                    break;
                }
                request.extend_from_slice(&buf[..n]);
            }
            conn.write_all(response.as_bytes()).await.expect("write");
            String::from_utf8_lossy(&request).into_owned()
        });
        (url, server)
    }

    #[tokio::test]
    async fn layer_requests_expect_204() {
        let limits = LayerLimits {
            max_width: Some(320),
            ..Default::default()
        };
        let client = Client::new();
        let (url, server) = one_shot("HTTP/1.1 204 No Content\r\n\r\n").await;
        let mids = ["1".to_owned()];
        let sent = request_layers(&client, Ok(&url), Some("t"), &mids, &limits).await;
        assert_eq!(sent, Ok(1));
        let request = server.await.expect("server");
        assert!(request.starts_with("POST /sessions/abc/layer"), "{request}");
        assert!(request.to_lowercase().contains("authorization: bearer t"));
        assert!(
            request.ends_with(r#"{"maxWidth":320,"mediaId":"1"}"#),
            "{request}"
        );

        let (url, _server) = one_shot(
            "HTTP/1.1 404 Not Found\r\ncontent-length: 23\r\n\r\nno such video m-line\r\nx",
        )
        .await;
        let err = request_layers(&client, Ok(&url), None, &mids, &limits)
            .await
            .expect_err("a 404 fails");
        assert!(
            err.contains("404 Not Found (expected 204) no such video m-line"),
            "{err}"
        );
        assert!(!err.contains('\n'), "one line: {err}");

        let post = Url::parse("http://h/whep/r").expect("url");
        let err = request_layers(&client, Err(&post), None, &mids, &limits)
            .await
            .expect_err("no link");
        assert!(err.contains("has no Link rel=\"urn:ietf:params:whep:ext:core:layer\""));
    }
}
