//! WHIP/WHEP over plain HTTP: POST a complete (non-trickle) offer, read the answer and the
//! session URL, DELETE it. Works with any WHIP/WHEP server: the Location header is resolved
//! against the POST URL, whatever its shape (`/sessions/{id}`, `/whip/{room}/{id}`, ...).
//! A `429` or `503` is retried after its `Retry-After` (at most [`MAX_RETRIES`] times), as a
//! well-behaved client would: every generator peer comes from the same address.

use crate::net::realtime_ns;
use anyhow::{anyhow, bail, Context, Result};
use reqwest::header::{AUTHORIZATION, CONTENT_TYPE, LOCATION, RETRY_AFTER};
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
    Ok(Answer {
        location,
        sdp: body,
        posted_ns,
        retries,
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
}
