//! Prometheus metrics: one `Registry` owned by the server, typed handles, no globals.
//!
//! The media engine never touches a Prometheus handle per packet: it counts into a plain
//! [`Tally`] on its own task and calls [`Metrics::flush`] every tick (250 ms). Labels are
//! bounded: kind, codec (a fixed set), reason, route, status — never a room, participant,
//! session or address.

use prometheus::{
    Encoder, Histogram, HistogramOpts, HistogramVec, IntCounter, IntCounterVec, IntGauge,
    IntGaugeVec, Opts, Registry, TextEncoder,
};

/// Why a packet or datagram was dropped (the `reason` label).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Drop {
    /// The socket's send buffer was full.
    QueueFull = 0,
    /// A video slot waited for a keyframe.
    NoKeyframeYet = 1,
    /// RTP for a track the session does not know.
    UnknownSsrc = 2,
    /// A datagram from an address and with content no session claims.
    Unroutable = 3,
    /// The viewer's leg has no codec for the payload type.
    NoCodec = 4,
    /// A late packet from before a source switch.
    Stale = 5,
    /// A datagram larger than any media packet.
    Oversized = 6,
    /// The viewer is not connected yet.
    NotConnected = 7,
    /// Publisher SRTP that failed its authentication tag, or a replay.
    Unauthentic = 8,
}

const DROP_REASONS: [&str; 9] = [
    "queue_full",
    "no_keyframe_yet",
    "unknown_ssrc",
    "unroutable",
    "no_codec",
    "stale",
    "oversized",
    "not_connected",
    "unauthentic",
];

/// Codec label values; anything else is `other`.
pub const CODECS: [&str; 6] = ["opus", "vp8", "vp9", "h264", "av1", "other"];

/// The `codec` label for a codec name.
pub fn codec_label(name: &str) -> &'static str {
    let lower = name.to_ascii_lowercase();
    CODECS
        .iter()
        .find(|c| **c == lower)
        .copied()
        .unwrap_or("other")
}

/// The `kind` label index: 0 audio, 1 video.
pub const KINDS: [&str; 2] = ["audio", "video"];
/// `spatial` label values of the live-layer gauge (simulcast has at most three layers).
const SPATIAL: [&str; 3] = ["0", "1", "2"];
/// `direction` label values of layer switches, in [`Tally::layer_switches`] order.
const DIRECTIONS: [&str; 2] = ["down", "up"];
/// `reason` label values of layer switches, in [`SwitchReason`] order.
const SWITCH_REASONS: [&str; 4] = ["bandwidth", "limit", "pin", "keyframe_timeout"];
/// `outcome` label values of probes.
const PROBE_OUTCOMES: [&str; 2] = ["started", "failed"];

/// Why a slot's layer changed (or, for a keyframe timeout, did not).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SwitchReason {
    /// The viewer's downlink estimate.
    Bandwidth = 0,
    /// The slot's limits, or the layers on offer (the highest live layer changed).
    Limit = 1,
    /// The viewer pinned a layer.
    Pin = 2,
    /// The target layer sent no keyframe in time: the switch was given up.
    KeyframeTimeout = 3,
}

/// Counts the engine keeps between flushes.
#[derive(Debug, Default, Clone)]
pub struct Tally {
    /// RTP packets / payload bytes received from publishers, by kind.
    pub rtp_in: [u64; 2],
    /// RTP payload bytes received, by kind.
    pub rtp_in_bytes: [u64; 2],
    /// RTP packets forwarded to viewers, by kind.
    pub rtp_out: [u64; 2],
    /// RTP payload bytes forwarded, by kind.
    pub rtp_out_bytes: [u64; 2],
    /// UDP datagrams and bytes received on the media socket.
    pub udp_in: (u64, u64),
    /// UDP datagrams and bytes sent.
    pub udp_out: (u64, u64),
    /// Drops by reason.
    pub dropped: [u64; 9],
    /// Keyframe requests (PLI/FIR) received from viewers.
    pub keyframe_requests_received: u64,
    /// PLIs sent to publishers.
    pub pli_sent: u64,
    /// Keyframe requests not sent because of the per-track rate limit.
    pub keyframe_requests_suppressed: u64,
    /// Session setup samples (s), POST → media flowing.
    pub setup_s: Vec<f64>,
    /// RTCP-derived counters since the last flush (deltas).
    pub nack_received: u64,
    /// NACKs Parley sent to publishers.
    pub nack_sent: u64,
    /// Retransmissions sent to viewers.
    pub retransmissions: u64,
    /// RTT samples (s) from receiver reports.
    pub rtt_s: Vec<f64>,
    /// Jitter samples (s) of publishers' streams.
    pub jitter_s: Vec<f64>,
    /// Loss ratio samples (0..1) from receiver reports.
    pub loss: Vec<f64>,
    /// Layer switches that landed (and given up, as keyframe timeouts): by [down, up] and
    /// [`SwitchReason`].
    pub layer_switches: [[u64; 4]; 2],
    /// Datagrams handed to the shard that owns their session.
    pub handoffs: u64,
    /// Publisher packets relayed to another shard serving viewers of their room.
    pub relayed: u64,
    /// Padding-only packets and bytes sent to probe viewers' links.
    pub padding_packets: u64,
    /// Bytes of those.
    pub padding_bytes: u64,
    /// Probes started and failed.
    pub probes: [u64; 2],
    /// Viewers' downlink estimates (bytes per second), sampled once a second each.
    pub estimates: Vec<f64>,
}

impl Tally {
    /// Counts a drop.
    pub fn drop(&mut self, reason: Drop) {
        self.dropped[reason as usize] += 1;
    }
}

/// Live levels set at flush time.
#[derive(Debug, Default, Clone, PartialEq)]
pub struct Levels {
    /// Rooms.
    pub rooms: i64,
    /// Distinct participants over all rooms.
    pub participants: i64,
    /// Sessions by kind (whip, whep).
    pub sessions: [i64; 2],
    /// Connected sessions by transport ([`TRANSPORTS`]) and client candidate type
    /// ([`CANDIDATES`]).
    pub paths: [[i64; 4]; 2],
    /// Published tracks by (kind, codec index).
    pub tracks: [[i64; 6]; 2],
    /// Live video layers by spatial rank (0 the smallest).
    pub layers: [i64; 3],
    /// Viewer video slots paused because their link does not carry the video.
    pub paused_slots: i64,
    /// Open ICE-TCP connections bound to sessions.
    pub tcp_connections: i64,
}

impl Levels {
    /// Both levels added up.
    fn plus(mut self, o: &Levels) -> Levels {
        self.rooms += o.rooms;
        self.participants += o.participants;
        self.paused_slots += o.paused_slots;
        self.tcp_connections += o.tcp_connections;
        for (a, b) in self.sessions.iter_mut().zip(o.sessions) {
            *a += b;
        }
        for (a, b) in self
            .paths
            .iter_mut()
            .flatten()
            .zip(o.paths.iter().flatten())
        {
            *a += b;
        }
        for (a, b) in self
            .tracks
            .iter_mut()
            .flatten()
            .zip(o.tracks.iter().flatten())
        {
            *a += b;
        }
        for (a, b) in self.layers.iter_mut().zip(o.layers) {
            *a += b;
        }
        self
    }
}

/// Transports of a session's selected ICE pair.
pub const TRANSPORTS: [&str; 2] = ["udp", "tcp"];

/// Types of the client's candidate in a session's selected ICE pair.
pub const CANDIDATES: [&str; 4] = ["host", "srflx", "prflx", "relay"];

/// The server's metrics.
pub struct Metrics {
    registry: Registry,
    rooms: IntGauge,
    participants: IntGauge,
    sessions: IntGaugeVec,
    sessions_started: IntCounterVec,
    sessions_ended: IntCounterVec,
    tracks: IntGaugeVec,
    layers: IntGaugeVec,
    layer_switches: IntCounterVec,
    padding_packets: IntCounter,
    handoffs: IntCounter,
    relayed: IntCounter,
    steering: IntGauge,
    paths: IntGaugeVec,
    /// Each shard's last levels; the gauges show their sum.
    shard_levels: std::sync::Mutex<Vec<Levels>>,
    padding_bytes: IntCounter,
    probes: IntCounterVec,
    estimates: Histogram,
    paused_slots: IntGauge,
    tcp_connections: IntGauge,
    tcp_refused: IntCounterVec,
    tcp_writers: TcpWriterMetrics,
    rtp_received: IntCounterVec,
    rtp_received_bytes: IntCounterVec,
    rtp_forwarded: IntCounterVec,
    rtp_forwarded_bytes: IntCounterVec,
    udp_received: IntCounter,
    udp_received_bytes: IntCounter,
    udp_sent: IntCounter,
    udp_sent_bytes: IntCounter,
    dropped: IntCounterVec,
    nacks_received: IntCounter,
    nacks_sent: IntCounter,
    retransmissions: IntCounter,
    keyframe_requests_received: IntCounter,
    plis_sent: IntCounter,
    keyframe_requests_suppressed: IntCounter,
    forwarding_latency: Histogram,
    send_wait: Histogram,
    setup: Histogram,
    rtt: Histogram,
    jitter: Histogram,
    loss: Histogram,
    http_requests: IntCounterVec,
    http_duration: HistogramVec,
    alive_tasks: IntGauge,
    /// The runtime that created the metrics: the server's HTTP runtime.
    runtime: Option<tokio::runtime::Handle>,
}

/// What the ICE-TCP connections' writers count: the shards add the bytes they queue, the
/// writers take off what they wrote or dropped and count the connections they gave up on.
#[derive(Clone)]
pub struct TcpWriterMetrics {
    /// `parley_ice_tcp_queued_bytes`.
    pub queued: IntGauge,
    /// `parley_ice_tcp_stalled_total`.
    pub stalled: IntCounter,
}

fn counter(r: &Registry, name: &str, help: &str) -> IntCounter {
    let c = IntCounter::new(name, help).expect("valid metric");
    r.register(Box::new(c.clone())).expect("unique metric");
    c
}

fn counter_vec(r: &Registry, name: &str, help: &str, labels: &[&str]) -> IntCounterVec {
    let c = IntCounterVec::new(Opts::new(name, help), labels).expect("valid metric");
    r.register(Box::new(c.clone())).expect("unique metric");
    c
}

fn gauge(r: &Registry, name: &str, help: &str) -> IntGauge {
    let g = IntGauge::new(name, help).expect("valid metric");
    r.register(Box::new(g.clone())).expect("unique metric");
    g
}

fn gauge_vec(r: &Registry, name: &str, help: &str, labels: &[&str]) -> IntGaugeVec {
    let g = IntGaugeVec::new(Opts::new(name, help), labels).expect("valid metric");
    r.register(Box::new(g.clone())).expect("unique metric");
    g
}

fn histogram(r: &Registry, name: &str, help: &str, buckets: Vec<f64>) -> Histogram {
    let h = Histogram::with_opts(HistogramOpts::new(name, help).buckets(buckets))
        .expect("valid metric");
    r.register(Box::new(h.clone())).expect("unique metric");
    h
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    /// Registers every metric (and the process collector) in a new registry. Every label
    /// combination is created up front, so series counts are fixed from the start.
    pub fn new() -> Self {
        let r = Registry::new();
        #[cfg(target_os = "linux")]
        {
            let _ = r.register(Box::new(crate::process_metrics::ProcessCollector::new()));
        }
        let kinds = ["whip", "whep"];
        let reasons = [
            "deleted",
            "ice_failed",
            "timeout",
            "replaced",
            "removed",
            "shutdown",
        ];
        let m = Metrics {
            rooms: gauge(&r, "parley_rooms", "Rooms with at least one session."),
            participants: gauge(
                &r,
                "parley_participants",
                "Distinct participants over all rooms.",
            ),
            sessions: gauge_vec(
                &r,
                "parley_sessions",
                "Live sessions by kind (whip, whep).",
                &["kind"],
            ),
            sessions_started: counter_vec(
                &r,
                "parley_sessions_started_total",
                "Sessions created, by kind.",
                &["kind"],
            ),
            sessions_ended: counter_vec(
                &r,
                "parley_sessions_ended_total",
                "Sessions ended, by kind and reason.",
                &["kind", "reason"],
            ),
            tracks: gauge_vec(
                &r,
                "parley_tracks",
                "Published tracks by kind and codec.",
                &["kind", "codec"],
            ),
            rtp_received: counter_vec(
                &r,
                "parley_rtp_received_packets_total",
                "RTP packets received from publishers, by kind.",
                &["kind"],
            ),
            rtp_received_bytes: counter_vec(
                &r,
                "parley_rtp_received_bytes_total",
                "RTP payload bytes received from publishers, by kind.",
                &["kind"],
            ),
            rtp_forwarded: counter_vec(
                &r,
                "parley_rtp_forwarded_packets_total",
                "RTP packets forwarded to viewers, by kind.",
                &["kind"],
            ),
            rtp_forwarded_bytes: counter_vec(
                &r,
                "parley_rtp_forwarded_bytes_total",
                "RTP payload bytes forwarded to viewers, by kind.",
                &["kind"],
            ),
            udp_received: counter(
                &r,
                "parley_udp_received_datagrams_total",
                "Datagrams received on the media socket.",
            ),
            udp_received_bytes: counter(
                &r,
                "parley_udp_received_bytes_total",
                "Bytes received on the media socket.",
            ),
            udp_sent: counter(
                &r,
                "parley_udp_sent_datagrams_total",
                "Datagrams sent on the media socket.",
            ),
            udp_sent_bytes: counter(
                &r,
                "parley_udp_sent_bytes_total",
                "Bytes sent on the media socket.",
            ),
            dropped: counter_vec(
                &r,
                "parley_dropped_packets_total",
                "Packets or datagrams dropped, by reason.",
                &["reason"],
            ),
            nacks_received: counter(
                &r,
                "parley_nacks_received_total",
                "NACKs received from viewers.",
            ),
            nacks_sent: counter(&r, "parley_nacks_sent_total", "NACKs sent to publishers."),
            retransmissions: counter(
                &r,
                "parley_retransmissions_sent_total",
                "Packets NACKed by viewers that were still cached, and resent.",
            ),
            keyframe_requests_received: counter(
                &r,
                "parley_keyframe_requests_received_total",
                "PLIs and FIRs received from viewers.",
            ),
            plis_sent: counter(&r, "parley_plis_sent_total", "PLIs sent to publishers."),
            keyframe_requests_suppressed: counter(
                &r,
                "parley_keyframe_requests_suppressed_total",
                "Keyframe requests not sent upstream because of the per-track rate limit.",
            ),
            layers: gauge_vec(
                &r,
                "parley_video_layers",
                "Live layers of published video tracks, by spatial rank (0 the smallest).",
                &["spatial"],
            ),
            layer_switches: counter_vec(
                &r,
                "parley_layer_switches_total",
                "Viewer slots that switched to a larger (up) or smaller (down) layer, by reason \
                 (bandwidth, limit, pin; keyframe_timeout: a switch given up).",
                &["direction", "reason"],
            ),
            handoffs: counter(
                &r,
                "parley_shard_handoffs_total",
                "Datagrams the kernel gave to a shard other than the one that owns their \
                 session, handed to the owner.",
            ),
            relayed: counter(
                &r,
                "parley_shard_relayed_packets_total",
                "Publisher packets a room's home shard passed to another shard that serves \
                 more of the room's viewers (one per packet per such shard).",
            ),
            shard_levels: std::sync::Mutex::new(Vec::new()),
            paths: {
                let g = gauge_vec(
                    &r,
                    "parley_session_paths",
                    "Connected sessions by transport (udp, tcp) and the type of the client's \
                     candidate in the selected pair (host, srflx, prflx, relay).",
                    &["transport", "candidate"],
                );
                for t in TRANSPORTS {
                    for c in CANDIDATES {
                        g.with_label_values(&[t, c]);
                    }
                }
                g
            },
            steering: gauge(
                &r,
                "parley_shard_steering",
                "1 when the kernel steers each known client address to its shard's socket, 0 \
                 when datagrams on the wrong shard are handed over.",
            ),
            padding_packets: counter(
                &r,
                "parley_padding_sent_packets_total",
                "Padding-only packets sent to probe viewers' links.",
            ),
            padding_bytes: counter(
                &r,
                "parley_padding_sent_bytes_total",
                "Bytes of padding-only packets sent to probe viewers' links.",
            ),
            probes: counter_vec(
                &r,
                "parley_probes_total",
                "Probes of viewers' links: started, and of those failed.",
                &["outcome"],
            ),
            estimates: histogram(
                &r,
                "parley_downlink_estimate_bytes_per_second",
                "Viewers' downlink estimates, sampled once a second per viewer.",
                [
                    150e3, 300e3, 500e3, 750e3, 1e6, 1.5e6, 2e6, 3e6, 5e6, 10e6, 20e6,
                ]
                .iter()
                .map(|bits| bits / 8.0)
                .collect(),
            ),
            paused_slots: gauge(
                &r,
                "parley_paused_video_slots",
                "Viewer video slots paused because their link does not carry the video.",
            ),
            tcp_connections: gauge(
                &r,
                "parley_ice_tcp_connections",
                "Open ICE-TCP connections bound to sessions.",
            ),
            tcp_writers: TcpWriterMetrics {
                queued: gauge(
                    &r,
                    "parley_ice_tcp_queued_bytes",
                    "Bytes framed for ICE-TCP connections and not yet written to their sockets.",
                ),
                stalled: counter(
                    &r,
                    "parley_ice_tcp_stalled_total",
                    "ICE-TCP connections closed because their client took nothing for a while.",
                ),
            },
            tcp_refused: counter_vec(
                &r,
                "parley_ice_tcp_refused_total",
                "ICE-TCP connections closed before reaching a session, by reason.",
                &["reason"],
            ),
            forwarding_latency: histogram(
                &r,
                "parley_forwarding_latency_seconds",
                "Time from receiving a datagram to sending the packets forwarded from it.",
                vec![
                    0.00001, 0.000025, 0.00005, 0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005,
                    0.01, 0.025,
                ],
            ),
            send_wait: histogram(
                &r,
                "parley_send_wait_seconds",
                "Time a batch of sealed copies waits between its hand-over to a sending thread \
                 and that thread starting on it (an earlier batch, or waking the thread).",
                vec![
                    0.00001, 0.000025, 0.00005, 0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005,
                    0.01, 0.025,
                ],
            ),
            setup: histogram(
                &r,
                "parley_session_setup_seconds",
                "Time from the POST to media flowing (first RTP received or forwarded).",
                vec![0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0],
            ),
            rtt: histogram(
                &r,
                "parley_rtt_seconds",
                "Round-trip time to viewers, from RTCP receiver reports.",
                vec![0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0],
            ),
            jitter: histogram(
                &r,
                "parley_jitter_seconds",
                "Interarrival jitter that viewers report for the streams Parley sends them.",
                vec![0.0005, 0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25],
            ),
            loss: histogram(
                &r,
                "parley_packet_loss_ratio",
                "Fraction lost reported in RTCP receiver reports.",
                vec![0.0, 0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1.0],
            ),
            http_requests: counter_vec(
                &r,
                "parley_http_requests_total",
                "HTTP requests by route template and status code.",
                &["route", "status"],
            ),
            http_duration: {
                let h = HistogramVec::new(
                    HistogramOpts::new(
                        "parley_http_request_duration_seconds",
                        "HTTP request latency by route template.",
                    )
                    .buckets(vec![
                        0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5,
                    ]),
                    &["route"],
                )
                .expect("valid metric");
                r.register(Box::new(h.clone())).expect("unique metric");
                h
            },
            alive_tasks: gauge(
                &r,
                "parley_runtime_alive_tasks",
                "Tasks alive in the server's HTTP runtime (a leak shows here).",
            ),
            runtime: tokio::runtime::Handle::try_current().ok(),
            registry: r,
        };
        for k in kinds {
            m.sessions.with_label_values(&[k]);
            m.sessions_started.with_label_values(&[k]);
            for reason in reasons {
                m.sessions_ended.with_label_values(&[k, reason]);
            }
        }
        for k in KINDS {
            m.rtp_received.with_label_values(&[k]);
            m.rtp_received_bytes.with_label_values(&[k]);
            m.rtp_forwarded.with_label_values(&[k]);
            m.rtp_forwarded_bytes.with_label_values(&[k]);
            for c in CODECS {
                m.tracks.with_label_values(&[k, c]);
            }
        }
        for reason in DROP_REASONS {
            m.dropped.with_label_values(&[reason]);
        }
        for spatial in SPATIAL {
            m.layers.with_label_values(&[spatial]);
        }
        for direction in DIRECTIONS {
            for reason in SWITCH_REASONS {
                m.layer_switches.with_label_values(&[direction, reason]);
            }
        }
        for outcome in PROBE_OUTCOMES {
            m.probes.with_label_values(&[outcome]);
        }
        m
    }

    /// A per-task forwarding-latency histogram (seconds): observing costs a few plain adds;
    /// [`LocalHistogram::flush`](prometheus::local::LocalHistogram::flush) publishes it.
    pub fn local_forwarding_latency(&self) -> prometheus::local::LocalHistogram {
        self.forwarding_latency.local()
    }

    /// A per-task histogram of sending threads' waits (seconds), published like
    /// [`Metrics::local_forwarding_latency`].
    pub fn local_send_wait(&self) -> prometheus::local::LocalHistogram {
        self.send_wait.local()
    }

    /// Counts a started session.
    pub fn session_started(&self, kind: &str) {
        self.sessions_started.with_label_values(&[kind]).inc();
    }

    /// Counts an ended session.
    pub fn session_ended(&self, kind: &str, reason: &str) {
        self.sessions_ended.with_label_values(&[kind, reason]).inc();
    }

    /// Counts one HTTP request.
    pub fn http_request(&self, route: &str, status: u16, seconds: f64) {
        self.http_requests
            .with_label_values(&[route, &status.to_string()])
            .inc();
        self.http_duration
            .with_label_values(&[route])
            .observe(seconds);
    }

    /// An ICE-TCP connection closed before it reached a session.
    pub fn ice_tcp_refused(&self, why: crate::ice_tcp::Refused) {
        self.tcp_refused.with_label_values(&[why.as_str()]).inc();
    }

    /// What the ICE-TCP writers count.
    pub fn ice_tcp_writers(&self) -> TcpWriterMetrics {
        self.tcp_writers.clone()
    }

    /// Whether the kernel steers clients to their shards.
    pub fn set_steering(&self, on: bool) {
        self.steering.set(i64::from(on));
    }

    /// Moves a shard's counts into the metrics, and sets the live levels to the sum over the
    /// shards of what each last reported.
    pub fn flush(&self, shard: usize, t: &mut Tally, levels: &Levels) {
        let levels = &{
            let mut all = self
                .shard_levels
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner);
            if all.len() <= shard {
                all.resize(shard + 1, Levels::default());
            }
            all[shard] = levels.clone();
            all.iter().fold(Levels::default(), |sum, l| sum.plus(l))
        };
        self.handoffs.inc_by(t.handoffs);
        self.relayed.inc_by(t.relayed);
        for (i, k) in KINDS.iter().enumerate() {
            self.rtp_received
                .with_label_values(&[k])
                .inc_by(t.rtp_in[i]);
            self.rtp_received_bytes
                .with_label_values(&[k])
                .inc_by(t.rtp_in_bytes[i]);
            self.rtp_forwarded
                .with_label_values(&[k])
                .inc_by(t.rtp_out[i]);
            self.rtp_forwarded_bytes
                .with_label_values(&[k])
                .inc_by(t.rtp_out_bytes[i]);
            for (j, c) in CODECS.iter().enumerate() {
                self.tracks
                    .with_label_values(&[k, c])
                    .set(levels.tracks[i][j]);
            }
        }
        for (i, reason) in DROP_REASONS.iter().enumerate() {
            self.dropped
                .with_label_values(&[reason])
                .inc_by(t.dropped[i]);
        }
        for (i, spatial) in SPATIAL.iter().enumerate() {
            self.layers
                .with_label_values(&[spatial])
                .set(levels.layers[i]);
        }
        for (i, direction) in DIRECTIONS.iter().enumerate() {
            for (j, reason) in SWITCH_REASONS.iter().enumerate() {
                self.layer_switches
                    .with_label_values(&[direction, reason])
                    .inc_by(t.layer_switches[i][j]);
            }
        }
        for (i, outcome) in PROBE_OUTCOMES.iter().enumerate() {
            self.probes
                .with_label_values(&[outcome])
                .inc_by(t.probes[i]);
        }
        self.padding_packets.inc_by(t.padding_packets);
        self.padding_bytes.inc_by(t.padding_bytes);
        for v in t.estimates.drain(..) {
            self.estimates.observe(v);
        }
        self.paused_slots.set(levels.paused_slots);
        self.tcp_connections.set(levels.tcp_connections);
        self.udp_received.inc_by(t.udp_in.0);
        self.udp_received_bytes.inc_by(t.udp_in.1);
        self.udp_sent.inc_by(t.udp_out.0);
        self.udp_sent_bytes.inc_by(t.udp_out.1);
        self.keyframe_requests_received
            .inc_by(t.keyframe_requests_received);
        self.plis_sent.inc_by(t.pli_sent);
        self.keyframe_requests_suppressed
            .inc_by(t.keyframe_requests_suppressed);
        self.nacks_received.inc_by(t.nack_received);
        self.nacks_sent.inc_by(t.nack_sent);
        self.retransmissions.inc_by(t.retransmissions);
        for v in t.setup_s.drain(..) {
            self.setup.observe(v);
        }
        for v in t.rtt_s.drain(..) {
            self.rtt.observe(v);
        }
        for v in t.jitter_s.drain(..) {
            self.jitter.observe(v);
        }
        for v in t.loss.drain(..) {
            self.loss.observe(v);
        }
        let (setup, rtt, jitter, loss, estimates) = (
            std::mem::take(&mut t.setup_s),
            std::mem::take(&mut t.rtt_s),
            std::mem::take(&mut t.jitter_s),
            std::mem::take(&mut t.loss),
            std::mem::take(&mut t.estimates),
        );
        *t = Tally {
            setup_s: setup,
            rtt_s: rtt,
            jitter_s: jitter,
            loss,
            estimates,
            ..Tally::default()
        };
        for (i, t) in TRANSPORTS.iter().enumerate() {
            for (j, c) in CANDIDATES.iter().enumerate() {
                self.paths
                    .with_label_values(&[t, c])
                    .set(levels.paths[i][j]);
            }
        }
        self.rooms.set(levels.rooms);
        self.participants.set(levels.participants);
        self.sessions
            .with_label_values(&["whip"])
            .set(levels.sessions[0]);
        self.sessions
            .with_label_values(&["whep"])
            .set(levels.sessions[1]);
        if let Some(rt) = &self.runtime {
            self.alive_tasks.set(rt.metrics().num_alive_tasks() as i64);
        }
    }

    /// The registry, for parts that register metrics of their own (the cluster layer).
    pub fn registry(&self) -> &Registry {
        &self.registry
    }

    /// The Prometheus text exposition of every metric.
    pub fn render(&self) -> String {
        let mut buf = Vec::new();
        let _ = TextEncoder::new().encode(&self.registry.gather(), &mut buf);
        String::from_utf8(buf).unwrap_or_default()
    }

    /// Number of series (label combinations) exported.
    pub fn series_count(&self) -> usize {
        self.registry
            .gather()
            .iter()
            .map(|f| f.get_metric().len())
            .sum()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn series_do_not_grow_with_rooms_or_sessions() {
        let m = Metrics::new();
        let before = m.series_count();
        let mut t = Tally::default();
        for session in 0..1000u64 {
            m.session_started(if session % 2 == 0 { "whip" } else { "whep" });
            m.session_ended("whep", "deleted");
            t.rtp_in[(session % 2) as usize] += 10;
            t.drop(Drop::NoKeyframeYet);
            t.estimates.push(1e6);
            t.layer_switches[1][SwitchReason::Bandwidth as usize] += 1;
            m.flush(
                (session % 3) as usize,
                &mut t,
                &Levels {
                    rooms: session as i64,
                    participants: session as i64 * 3,
                    sessions: [session as i64, session as i64],
                    paths: [[1; 4]; 2],
                    tracks: [[1; 6]; 2],
                    layers: [1, 2, 3],
                    paused_slots: session as i64,
                    tcp_connections: session as i64,
                },
            );
        }
        for route in ["/whip/{room}", "/whep/{room}"] {
            m.http_request(route, 201, 0.01);
        }
        let after = m.series_count();
        // Only the two HTTP route/status pairs (and their histograms) were new.
        let http = 2 + 2;
        assert_eq!(after, before + http, "series grew with sessions");
        let text = m.render();
        assert!(text.contains("parley_rtp_received_packets_total{kind=\"audio\"} 5000"));
        assert!(!text.contains("room="), "no room label");
    }

    #[test]
    fn the_levels_of_every_shard_add_up() {
        let m = Metrics::new();
        let mut t = Tally::default();
        let level = |rooms| Levels {
            rooms,
            sessions: [rooms, 2 * rooms],
            ..Levels::default()
        };
        m.flush(0, &mut t, &level(2));
        m.flush(1, &mut t, &level(5));
        m.flush(0, &mut t, &level(3));
        t.handoffs = 7;
        t.relayed = 9;
        m.flush(1, &mut t, &level(5));
        let text = m.render();
        assert!(text.contains("parley_rooms 8"), "{text}");
        assert!(text.contains("parley_sessions{kind=\"whep\"} 16"));
        assert!(text.contains("parley_shard_handoffs_total 7"));
        assert!(text.contains("parley_shard_relayed_packets_total 9"));
    }

    #[test]
    fn codecs_map_to_a_fixed_set() {
        assert_eq!(codec_label("VP8"), "vp8");
        assert_eq!(codec_label("opus"), "opus");
        assert_eq!(codec_label("H265"), "other");
        assert_eq!(codec_label("'; drop"), "other");
    }
}
