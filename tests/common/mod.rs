//! Test peers for the integration tests: a WHIP publisher and a WHEP viewer on the async
//! `webrtc` crate, talking to a server over real HTTP and real UDP on 127.0.0.1.
//!
//! Owns: signaling (POST offer / DELETE session), the client peer connections, the RTP
//! packets a test sends and the record of what a viewer received, and synthetic codec
//! payloads. Never: the server under test (tests start it), sleeps to wait for events
//! (waits are signalled), or anything outliving a `Publisher`/`Viewer` (their drop aborts
//! the tasks they spawned and closes the peer connection).
//!
//! ```ignore
//! let publisher = common::publish(&base, "room", PublishOptions::vp8()).await?;
//! let viewer = common::play(&base, "room", PlayOptions::default()).await?;
//! publisher.send_video(&common::vp8_keyframe_payload(0), true, 0).await?;
//! let got = viewer
//!     .wait_for("the keyframe", Duration::from_secs(5), |r| r.iter().any(|p| p.kind == Kind::Video))
//!     .await?;
//! ```
#![allow(dead_code, unused_imports)]

pub mod aiortc;
pub mod binary;
mod call;
pub mod cluster;
mod events;
pub mod hostile_call;
pub mod hostile_http;
pub mod hostile_raw;
pub mod hostile_replay;
pub mod hostile_storm;
pub mod hostile_wire;
pub mod layer_api;
pub mod layered;
pub mod metrics;
mod payload;
mod peer;
mod publisher;
pub mod redis;
mod relay;
pub mod room_api;
mod signaling;
pub mod simulcast;
mod viewer;

// Re-exports: each test binary uses a different subset.
#[allow(unused_imports)]
pub use call::{Member, SentLog, SILENT, SPEAKING};
pub use events::{is_event, position, Events};
pub use payload::{
    h264_idr_payload, h264_non_idr_payload, h264_sps_pps_payload, opus_payload, vp8_delta_payload,
    vp8_keyframe_payload,
};
#[allow(unused_imports)]
pub use publisher::{publish, PublishOptions, Publisher, VideoCodec};
#[allow(unused_imports)]
pub use relay::{ClientStats, Relay, Shape, Shaper, Stats, Verdict};
pub use signaling::{delete, try_delete};
#[allow(unused_imports)]
pub use viewer::{play, Kind, PlayOptions, Received, SlotInfo, Viewer};

use std::time::Duration;

/// How long `publish` and `play` wait for the peer connection to reach `Connected`.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// Everything that can go wrong in the harness, with enough context to read a failed test.
#[derive(Debug, thiserror::Error)]
pub enum HarnessError {
    /// The HTTP request itself failed (connection refused, reset, bad URL scheme...).
    #[error("{method} {url} failed: {source}")]
    Http {
        method: &'static str,
        url: String,
        #[source]
        source: reqwest::Error,
    },
    /// The server answered with an unexpected status.
    #[error("{method} {url} returned {status} (expected {expected}): {body:?}")]
    Status {
        method: &'static str,
        url: String,
        status: reqwest::StatusCode,
        expected: reqwest::StatusCode,
        body: String,
    },
    /// The server's 201 answer is unusable (no Location, empty SDP, bad URL...).
    #[error("{method} {url}: bad response: {reason}")]
    BadResponse {
        method: &'static str,
        url: String,
        reason: String,
    },
    /// A call into webrtc-rs failed.
    #[error("webrtc {context}: {source}")]
    WebRtc {
        context: &'static str,
        #[source]
        source: webrtc::error::Error,
    },
    /// Negotiation succeeded on paper but left the peer unusable (e.g. codec missing).
    #[error("negotiation: {0}")]
    Negotiation(String),
    /// The peer connection went to `Failed`/`Closed` while waiting for something.
    #[error("peer connection became {state} while {what}")]
    PeerState { what: String, state: String },
    /// A wait did not complete in time.
    #[error("timed out after {timeout:?} {what}{detail}")]
    Timeout {
        what: String,
        timeout: Duration,
        detail: String,
    },
}

impl HarnessError {
    pub(crate) fn webrtc(context: &'static str) -> impl FnOnce(webrtc::error::Error) -> Self {
        move |source| HarnessError::WebRtc { context, source }
    }
}
