//! One client peer connection on 127.0.0.1 and its lifecycle: build it, make a non-trickle
//! offer (candidates gathered first, as OBS does), apply the answer, wait for `Connected`,
//! and tear it down. Shared by the publisher and the viewer.
//!
//! Teardown: `Peer` owns the tasks spawned on its behalf; dropping it aborts them and, if
//! `close` was not awaited, closes the peer connection on the current runtime (the async
//! `webrtc` driver task otherwise keeps running after the last handle is dropped).

use super::HarnessError;
use rtc::ice::mdns::MulticastDnsMode;
use std::collections::BTreeSet;
use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex, OnceLock, Weak};
use std::time::Duration;
use tokio::sync::watch;
use tokio::task::JoinHandle;
use webrtc::media_stream::track_remote::TrackRemote;
use webrtc::peer_connection::{
    register_default_interceptors, MediaEngine, PeerConnection, PeerConnectionBuilder,
    PeerConnectionEventHandler, RTCConfigurationBuilder, RTCIceCandidateInit, RTCIceGatheringState,
    RTCPeerConnectionState, RTCSessionDescription, Registry, SettingEngineBuilder,
};
use webrtc::runtime::TokioRuntime;

/// How long to wait for local ICE gathering (host candidates on loopback: milliseconds).
const GATHER_TIMEOUT: Duration = Duration::from_secs(5);

/// Makes the task that consumes a new remote track; the handler spawns it and the `Peer`
/// owns it. Gets a weak handle on the peer connection, to look up negotiated parameters.
pub(crate) type OnTrack = Box<
    dyn Fn(
            Arc<dyn TrackRemote>,
            Weak<dyn PeerConnection>,
        ) -> Pin<Box<dyn Future<Output = ()> + Send>>
        + Send
        + Sync,
>;

/// Forwards the driver's callbacks into watch channels. The trait is declared with
/// `#[async_trait]`; it is implemented here by hand with the signatures that macro
/// generates, so the tests do not need an `async-trait` dependency.
struct Handler {
    gathering: watch::Sender<RTCIceGatheringState>,
    state: watch::Sender<RTCPeerConnectionState>,
    on_track: Option<OnTrack>,
    pc: OnceLock<Weak<dyn PeerConnection>>,
    tasks: Arc<Mutex<Vec<JoinHandle<()>>>>,
}

type Done<'a> = Pin<Box<dyn Future<Output = ()> + Send + 'a>>;

fn done<'a>() -> Done<'a> {
    Box::pin(std::future::ready(()))
}

impl PeerConnectionEventHandler for Handler {
    fn on_ice_gathering_state_change<'life0, 'async_trait>(
        &'life0 self,
        state: RTCIceGatheringState,
    ) -> Done<'async_trait>
    where
        'life0: 'async_trait,
        Self: 'async_trait,
    {
        self.gathering.send_replace(state);
        done()
    }

    fn on_connection_state_change<'life0, 'async_trait>(
        &'life0 self,
        state: RTCPeerConnectionState,
    ) -> Done<'async_trait>
    where
        'life0: 'async_trait,
        Self: 'async_trait,
    {
        self.state.send_replace(state);
        done()
    }

    fn on_track<'life0, 'async_trait>(
        &'life0 self,
        track: Arc<dyn TrackRemote>,
    ) -> Done<'async_trait>
    where
        'life0: 'async_trait,
        Self: 'async_trait,
    {
        if let (Some(on_track), Some(pc)) = (&self.on_track, self.pc.get()) {
            let task = tokio::spawn(on_track(track, Weak::clone(pc)));
            lock(&self.tasks).push(task);
        }
        done()
    }
}

pub(crate) struct Peer {
    pub pc: Arc<dyn PeerConnection>,
    gathering: watch::Receiver<RTCIceGatheringState>,
    state: watch::Receiver<RTCPeerConnectionState>,
    /// Tasks working for this peer (one per remote track); aborted on close and drop.
    tasks: Arc<Mutex<Vec<JoinHandle<()>>>>,
    closed: bool,
    /// Connects over ICE-TCP only.
    tcp: bool,
    /// Connects to this address instead of the answer's TCP candidate (a test relay).
    pub tcp_via: Option<std::net::SocketAddr>,
}

impl Peer {
    /// A peer connection bound to one UDP socket on 127.0.0.1 (a wildcard address would skip
    /// loopback), no STUN/TURN, no mDNS, default interceptors (NACK, RTCP reports, TWCC).
    pub async fn new(
        media_engine: MediaEngine,
        on_track: Option<OnTrack>,
    ) -> Result<Self, HarnessError> {
        Self::with_tcp(media_engine, on_track, false).await
    }

    /// Like [`Peer::new`]; with `tcp`, the peer also listens for ICE-TCP and reaches the
    /// server only through the answer's passive TCP candidates (it drops the UDP ones).
    pub async fn with_tcp(
        mut media_engine: MediaEngine,
        on_track: Option<OnTrack>,
        tcp: bool,
    ) -> Result<Self, HarnessError> {
        // The tap lets the publisher see keyframe requests (PLI/FIR) the server relays.
        let registry = register_default_interceptors(Registry::new(), &mut media_engine)
            .map_err(HarnessError::webrtc("register interceptors"))?
            .with(
                rtc::interceptor::Slot::Custom(14_000),
                parley::transport::KeyframeTap::default(),
            );
        let (gathering_tx, gathering) = watch::channel(RTCIceGatheringState::New);
        let (state_tx, state) = watch::channel(RTCPeerConnectionState::New);
        let tasks = Arc::default();
        let handler = Arc::new(Handler {
            gathering: gathering_tx,
            state: state_tx,
            on_track,
            pc: OnceLock::new(),
            tasks: Arc::clone(&tasks),
        });
        let pc = PeerConnectionBuilder::new()
            .with_configuration(RTCConfigurationBuilder::new().build())
            .with_media_engine(media_engine)
            .with_interceptor_registry(registry)
            .with_setting_engine(
                SettingEngineBuilder::new()
                    .with_multicast_dns_mode(MulticastDnsMode::Disabled)
                    // As wide as libwebrtc's: a retransmission that arrives after a burst of
                    // probe padding is still taken, as Chromium takes it.
                    .with_srtp_replay_protection_window(1024)
                    .build(),
            )
            .with_runtime(Arc::new(TokioRuntime))
            .with_handler(Arc::clone(&handler) as Arc<dyn PeerConnectionEventHandler>)
            .with_udp_addrs(vec!["127.0.0.1:0".to_owned()])
            .with_tcp_addrs(if tcp {
                vec!["127.0.0.1:0".to_owned()]
            } else {
                vec![]
            })
            .build()
            .await
            .map_err(HarnessError::webrtc("build peer connection"))?;
        let pc: Arc<dyn PeerConnection> = Arc::new(pc);
        // Tracks only open once media flows, long after this is set.
        let _ = handler.pc.set(Arc::downgrade(&pc));
        Ok(Peer {
            pc,
            gathering,
            state,
            tasks,
            closed: false,
            tcp,
            tcp_via: None,
        })
    }

    /// Create an offer, apply it, wait for ICE gathering to complete, and return the local
    /// description's SDP, which then carries the candidates (no trickle).
    pub async fn gathered_offer(&self) -> Result<String, HarnessError> {
        let offer = self
            .pc
            .create_offer(None)
            .await
            .map_err(HarnessError::webrtc("create_offer"))?;
        self.pc
            .set_local_description(offer)
            .await
            .map_err(HarnessError::webrtc("set_local_description"))?;
        let mut gathering = self.gathering.clone();
        tokio::time::timeout(
            GATHER_TIMEOUT,
            gathering.wait_for(|s| *s == RTCIceGatheringState::Complete),
        )
        .await
        .map_err(|_| HarnessError::Timeout {
            what: "waiting for local ICE gathering".into(),
            timeout: GATHER_TIMEOUT,
            detail: String::new(),
        })?
        .map_err(|_| HarnessError::Negotiation("peer connection handler dropped".into()))?;
        let local = self
            .pc
            .local_description()
            .await
            .ok_or_else(|| HarnessError::Negotiation("no local description".into()))?;
        if !local.sdp.contains("a=candidate:") {
            return Err(HarnessError::Negotiation(format!(
                "gathering completed without a candidate in the offer:\n{}",
                local.sdp
            )));
        }
        Ok(local.sdp)
    }

    pub async fn apply_answer(&self, sdp: &str) -> Result<(), HarnessError> {
        if !self.tcp {
            let answer = RTCSessionDescription::answer(sdp.to_owned())
                .map_err(HarnessError::webrtc("parse answer"))?;
            return self
                .pc
                .set_remote_description(answer)
                .await
                .map_err(HarnessError::webrtc("set_remote_description(answer)"));
        }
        // Only the TCP candidates, added one by one: that is what makes this peer connect.
        let is_candidate = |l: &str| l.starts_with("a=candidate:");
        let without: String = sdp
            .split_inclusive('\n')
            .filter(|l| !is_candidate(l))
            .collect();
        let answer =
            RTCSessionDescription::answer(without).map_err(HarnessError::webrtc("parse answer"))?;
        self.pc
            .set_remote_description(answer)
            .await
            .map_err(HarnessError::webrtc("set_remote_description(answer)"))?;
        let tcp: BTreeSet<&str> = sdp
            .lines()
            .filter(|l| is_candidate(l) && l.contains(" tcp "))
            .map(|l| l.trim_start_matches("a="))
            .collect();
        if tcp.is_empty() {
            return Err(HarnessError::Negotiation(format!(
                "no TCP candidate in the answer:\n{sdp}"
            )));
        }
        for candidate in tcp {
            let candidate = match self.tcp_via {
                // foundation component transport priority address port typ ...
                Some(via) => {
                    let mut f: Vec<String> = candidate.split(' ').map(str::to_owned).collect();
                    if f.len() > 5 {
                        f[4] = via.ip().to_string();
                        f[5] = via.port().to_string();
                    }
                    f.join(" ")
                }
                None => candidate.to_owned(),
            };
            self.pc
                .add_ice_candidate(RTCIceCandidateInit {
                    candidate,
                    sdp_mid: Some("0".to_owned()),
                    sdp_mline_index: Some(0),
                    ..Default::default()
                })
                .await
                .map_err(HarnessError::webrtc("add_ice_candidate"))?;
        }
        Ok(())
    }

    pub fn state(&self) -> RTCPeerConnectionState {
        *self.state.borrow()
    }

    /// Wait until the connection state is `want`; fail early on `Failed`/`Closed`.
    pub async fn wait_for_state(
        &self,
        want: RTCPeerConnectionState,
        timeout: Duration,
    ) -> Result<(), HarnessError> {
        let mut state = self.state.clone();
        let what = format!("waiting for peer connection state {want}");
        let reached = tokio::time::timeout(
            timeout,
            state.wait_for(|s| {
                *s == want
                    || matches!(
                        s,
                        RTCPeerConnectionState::Failed | RTCPeerConnectionState::Closed
                    )
            }),
        )
        .await
        .map_err(|_| HarnessError::Timeout {
            what: what.clone(),
            timeout,
            detail: format!(" (state is {})", self.state()),
        })?
        .map(|s| *s)
        .map_err(|_| HarnessError::Negotiation("peer connection handler dropped".into()))?;
        if reached == want {
            Ok(())
        } else {
            Err(HarnessError::PeerState {
                what,
                state: reached.to_string(),
            })
        }
    }

    pub async fn close(&mut self) {
        abort_all(&self.tasks);
        if !self.closed {
            self.closed = true;
            let _ = self.pc.close().await;
        }
    }
}

fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(|e| e.into_inner())
}

fn abort_all(tasks: &Mutex<Vec<JoinHandle<()>>>) {
    for task in lock(tasks).drain(..) {
        task.abort();
    }
}

impl Drop for Peer {
    fn drop(&mut self) {
        abort_all(&self.tasks);
        if !self.closed {
            if let Ok(runtime) = tokio::runtime::Handle::try_current() {
                let pc = Arc::clone(&self.pc);
                runtime.spawn(async move {
                    let _ = pc.close().await;
                });
            }
        }
    }
}
