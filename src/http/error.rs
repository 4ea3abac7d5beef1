//! The one error type of the HTTP edge: every failure is a status code and a one-line reason
//! a client can act on, sent as `text/plain`.

use crate::engine::EngineError;
use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};

/// An HTTP error answer.
#[derive(Debug)]
pub struct ApiError {
    status: StatusCode,
    reason: String,
    headers: Vec<(header::HeaderName, HeaderValue)>,
}

impl ApiError {
    /// An error with a status and reason.
    pub fn new(status: StatusCode, reason: impl Into<String>) -> Self {
        Self {
            status,
            reason: reason.into(),
            headers: Vec::new(),
        }
    }

    /// Adds a header to the answer.
    pub fn with_header(mut self, name: header::HeaderName, value: &'static str) -> Self {
        self.headers.push((name, HeaderValue::from_static(value)));
        self
    }

    /// The status code.
    pub fn status(&self) -> StatusCode {
        self.status
    }

    /// The one-line reason.
    pub fn reason(&self) -> &str {
        &self.reason
    }

    /// 400 Bad Request.
    pub fn bad_request(reason: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, reason)
    }

    /// 404 for an unknown session.
    pub fn no_session() -> Self {
        Self::new(
            StatusCode::NOT_FOUND,
            "no such session (it ended or never existed)",
        )
    }

    /// 401 with a Bearer challenge.
    pub fn unauthorized(reason: &str) -> Self {
        Self::new(StatusCode::UNAUTHORIZED, reason)
            .with_header(header::WWW_AUTHENTICATE, "Bearer realm=\"parley\"")
    }
}

impl From<EngineError> for ApiError {
    fn from(e: EngineError) -> Self {
        let status = match &e {
            EngineError::BadOffer(_) | EngineError::BadFragment(_) | EngineError::BadRequest(_) => {
                StatusCode::BAD_REQUEST
            }
            EngineError::Unserviceable(_) => StatusCode::UNPROCESSABLE_ENTITY,
            EngineError::NotFound | EngineError::NoSuchThing(_) => StatusCode::NOT_FOUND,
            EngineError::Forbidden(_) => StatusCode::FORBIDDEN,
            EngineError::Stopped => StatusCode::SERVICE_UNAVAILABLE,
        };
        let err = Self::new(status, e.to_string());
        if status == StatusCode::SERVICE_UNAVAILABLE {
            err.with_header(header::RETRY_AFTER, "5")
        } else {
            err
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let mut reason = self.reason.replace(['\r', '\n'], " ");
        reason.push('\n');
        let mut response = (self.status, reason).into_response();
        response.headers_mut().insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("text/plain; charset=utf-8"),
        );
        for (name, value) in self.headers {
            response.headers_mut().insert(name, value);
        }
        response
    }
}
