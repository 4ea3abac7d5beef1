//! Bearer-token checks (RFC 6750) for publishing and playing.

use super::error::ApiError;
use axum::http::{header, HeaderMap};

/// Compares two byte strings in time that depends only on their lengths.
pub fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    if a.len() != b.len() {
        return false;
    }
    a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// Passes when no token is configured, or the request carries `Authorization: Bearer <token>`.
pub fn require(expected: Option<&str>, headers: &HeaderMap) -> Result<(), ApiError> {
    let Some(expected) = expected else {
        return Ok(());
    };
    let given = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| {
            let (scheme, token) = v.split_once(' ')?;
            scheme.eq_ignore_ascii_case("bearer").then(|| token.trim())
        });
    match given {
        None => Err(ApiError::unauthorized("a bearer token is required")),
        Some(token) if constant_time_eq(token.as_bytes(), expected.as_bytes()) => Ok(()),
        Some(_) => Err(ApiError::unauthorized("the bearer token is not valid")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::http::HeaderValue;

    #[test]
    fn tokens_are_checked() {
        let mut h = HeaderMap::new();
        assert!(require(None, &h).is_ok());
        assert!(require(Some("s3cret"), &h).is_err());
        h.insert(
            header::AUTHORIZATION,
            HeaderValue::from_static("Bearer nope"),
        );
        assert!(require(Some("s3cret"), &h).is_err());
        h.insert(
            header::AUTHORIZATION,
            HeaderValue::from_static("bearer s3cret"),
        );
        assert!(require(Some("s3cret"), &h).is_ok());
        h.insert(
            header::AUTHORIZATION,
            HeaderValue::from_static("Basic s3cret"),
        );
        assert!(require(Some("s3cret"), &h).is_err());
        assert!(!constant_time_eq(b"ab", b"abc"));
    }
}
