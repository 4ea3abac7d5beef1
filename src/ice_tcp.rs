//! The ICE-TCP listener: one TCP port for every session whose client cannot use UDP
//! (RFC 6544, passive side; RFC 4571 framing).
//!
//! A connection must send, within [`FIRST_BINDING`], a first frame that is a STUN binding
//! request naming a server ufrag; it is then handed to the shard that ufrag names, which
//! binds it to the session and serves it from then on (`engine::shard::tcp`). Anything else —
//! garbage, a frame over the limit, silence, an unknown ufrag, one connection past
//! `--ice-tcp-max-connections` — is closed and counted; live calls never notice.

use crate::engine::shard::tcp::{read_frame, ConnGuard};
use crate::engine::{stun_local_ufrag, EngineHandle};
use crate::metrics::Metrics;
use std::sync::atomic::AtomicUsize;
use std::sync::Arc;
use std::time::Duration;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;

/// How long a new connection has to send its first STUN binding request.
pub const FIRST_BINDING: Duration = Duration::from_secs(5);

/// Why a connection was closed before it reached a session.
#[derive(Clone, Copy, Debug)]
pub enum Refused {
    /// Over `--ice-tcp-max-connections`.
    Limit,
    /// No complete first frame in time, or one over the size limit.
    NoFrame,
    /// The first frame is not a STUN binding request with a server ufrag.
    NotStun,
    /// No shard or session knows the ufrag.
    Unknown,
}

impl Refused {
    /// The metric label.
    pub fn as_str(self) -> &'static str {
        match self {
            Refused::Limit => "limit",
            Refused::NoFrame => "no_frame",
            Refused::NotStun => "not_stun",
            Refused::Unknown => "unknown_ufrag",
        }
    }
}

/// Accepts connections until `stopped` turns true.
pub async fn serve(
    listener: TcpListener,
    engine: EngineHandle,
    metrics: Arc<Metrics>,
    max_connections: usize,
    mut stopped: watch::Receiver<bool>,
) {
    let live = Arc::new(AtomicUsize::new(0));
    loop {
        let accepted = tokio::select! {
            accepted = listener.accept() => accepted,
            _ = stopped.wait_for(|s| *s) => return,
        };
        let (stream, peer) = match accepted {
            Ok(accepted) => accepted,
            Err(e) => {
                // Out of descriptors, most likely: wait a little rather than spin.
                tracing::debug!("ICE-TCP accept: {e}");
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        let Some(guard) = ConnGuard::take(&live, max_connections) else {
            metrics.ice_tcp_refused(Refused::Limit);
            continue;
        };
        let (engine, metrics) = (engine.clone(), metrics.clone());
        tokio::spawn(async move {
            if let Err(why) = handshake(stream, peer, &engine, guard).await {
                tracing::debug!("ICE-TCP connection from {peer} closed: {}", why.as_str());
                metrics.ice_tcp_refused(why);
            }
        });
    }
}

/// Reads the first frame and hands the connection to its shard.
async fn handshake(
    mut stream: TcpStream,
    peer: std::net::SocketAddr,
    engine: &EngineHandle,
    guard: ConnGuard,
) -> Result<(), Refused> {
    let _ = stream.set_nodelay(true);
    let first = tokio::time::timeout(FIRST_BINDING, read_frame(&mut stream))
        .await
        .ok()
        .flatten()
        .ok_or(Refused::NoFrame)?;
    let ufrag = stun_local_ufrag(&first)
        .map(str::to_owned)
        .ok_or(Refused::NotStun)?;
    let stream = stream.into_std().map_err(|_| Refused::NoFrame)?;
    match engine.adopt_tcp(&ufrag, stream, peer, first, guard).await {
        true => Ok(()),
        false => Err(Refused::Unknown),
    }
}
