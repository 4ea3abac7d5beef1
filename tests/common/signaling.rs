//! WHIP/WHEP over HTTP: POST an offer, read the answer and the session URL, DELETE it.
//!
//! Owns only HTTP. A `reqwest::Client` is created per session rather than shared in a
//! static, because pooled connections are bound to the tokio runtime of the test that
//! opened them and every `#[tokio::test]` has its own runtime.

use super::HarnessError;
use reqwest::header::{AUTHORIZATION, CONTENT_TYPE, ETAG, LINK, LOCATION};
use reqwest::{Client, StatusCode, Url};

/// The server's answer to an offer.
pub(crate) struct Answer {
    /// Absolute session URL (the Location header resolved against the request URL).
    pub location: String,
    pub etag: Option<String>,
    pub sdp: String,
    /// Every `Link` header value, as sent.
    pub links: Vec<String>,
}

/// `{base}/{endpoint}/{room}[?participant=..]`, with the room and participant escaped.
pub(crate) fn endpoint_url(
    base: &str,
    endpoint: &str,
    room: &str,
    participant: Option<&str>,
) -> Result<Url, HarnessError> {
    let raw = format!("{}/{endpoint}/", base.trim_end_matches('/'));
    let mut url = Url::parse(&raw).map_err(|e| HarnessError::BadResponse {
        method: "POST",
        url: raw.clone(),
        reason: format!("invalid base URL: {e}"),
    })?;
    url.path_segments_mut()
        .map_err(|()| HarnessError::BadResponse {
            method: "POST",
            url: raw.clone(),
            reason: "base URL cannot have a path".into(),
        })?
        .pop_if_empty()
        .push(room);
    if let Some(participant) = participant {
        url.query_pairs_mut()
            .append_pair("participant", participant);
    }
    Ok(url)
}

/// POST an SDP offer and expect `201 Created` with an answer and a Location.
pub(crate) async fn post_offer(
    client: &Client,
    url: Url,
    token: Option<&str>,
    offer_sdp: String,
) -> Result<Answer, HarnessError> {
    let mut request = client
        .post(url.clone())
        .header(CONTENT_TYPE, "application/sdp")
        .body(offer_sdp);
    if let Some(token) = token {
        request = request.header(AUTHORIZATION, format!("Bearer {token}"));
    }
    let http_err = |source| HarnessError::Http {
        method: "POST",
        url: url.to_string(),
        source,
    };
    let response = request.send().await.map_err(http_err)?;
    let status = response.status();
    let location = header(&response, LOCATION);
    let etag = header(&response, ETAG);
    let links = response
        .headers()
        .get_all(LINK)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .map(str::to_owned)
        .collect();
    let body = response.text().await.map_err(http_err)?;
    if status != StatusCode::CREATED {
        return Err(HarnessError::Status {
            method: "POST",
            url: url.to_string(),
            status,
            expected: StatusCode::CREATED,
            body,
        });
    }
    let bad = |reason: String| HarnessError::BadResponse {
        method: "POST",
        url: url.to_string(),
        reason,
    };
    let location = location.ok_or_else(|| bad("201 without a Location header".into()))?;
    let location = url
        .join(&location)
        .map_err(|e| bad(format!("Location {location:?} is not a URL: {e}")))?;
    if !body.trim_start().starts_with("v=0") {
        return Err(bad(format!("201 body is not an SDP answer: {body:?}")));
    }
    Ok(Answer {
        location: location.to_string(),
        etag,
        sdp: body,
        links,
    })
}

fn header(response: &reqwest::Response, name: reqwest::header::HeaderName) -> Option<String> {
    response
        .headers()
        .get(name)
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned)
}

/// DELETE a session URL, returning the status; errors only if no response came back.
pub async fn try_delete(url: &str, token: Option<&str>) -> Result<StatusCode, HarnessError> {
    let mut request = Client::new().delete(url);
    if let Some(token) = token {
        request = request.header(AUTHORIZATION, format!("Bearer {token}"));
    }
    let response = request.send().await.map_err(|source| HarnessError::Http {
        method: "DELETE",
        url: url.to_owned(),
        source,
    })?;
    Ok(response.status())
}

/// DELETE a session URL and return the status. Panics if the server did not answer at all
/// (a test helper: a refused connection is never the status a test wants to assert).
pub async fn delete(url: &str, token: Option<&str>) -> StatusCode {
    match try_delete(url, token).await {
        Ok(status) => status,
        Err(e) => panic!("{e}"),
    }
}
