//! Results: per-step records, the stdout table and the JSON file.
//!
//! The key column is the server's CPU time per forwarded packet, and its ratio to the bare
//! forwarder's (`ceiling`) cost measured in the same run with the same fan-out and packet
//! size: the ratio holds on a noisy machine where absolute microseconds do not. Simulcast
//! steps add what the viewers received per layer ([`LayerReport`]); every step splits its
//! viewers by their links ([`downlink::DownlinkReport`]: capped or not, rate, drops,
//! congestion feedback); every step has each room's forwarded packets
//! ([`rooms::RoomReport`]) and, for a local server, its CPU by thread group
//! ([`threads::ThreadsReport`]); a step with ICE-TCP viewers splits them from the UDP ones
//! ([`transport::TransportReport`]); further local server processes (`--node-pid`) have
//! their CPU ([`nodes::NodeReport`]).

mod downlink;
mod nodes;
mod rooms;
mod threads;
mod transport;

pub use downlink::{downlink_report, DownlinkReport};
pub use nodes::{node_reports, sample_nodes, NodeReport};
pub use rooms::{room_reports, RoomReport};
pub use threads::ThreadsReport;
pub use transport::{transport_report, TransportReport};

use crate::ceiling::{Mode, Outcome};
use crate::cli::LoadArgs;
use crate::engine::{LayerCounts, Snapshot};
use crate::procfs::UdpCounters;
use crate::simulcast::{SpatialLayer, LAYERS};
use crate::stats::{Distribution, SeqCounters};
use anyhow::{Context, Result};
use serde::Serialize;
use std::path::Path;

/// A delay distribution in milliseconds.
#[derive(Clone, Copy, Debug, Default, PartialEq, Serialize)]
pub struct Millis {
    /// Samples.
    pub count: usize,
    /// Median, ms.
    pub p50: Option<f64>,
    /// 99th percentile, ms.
    pub p99: Option<f64>,
    /// Maximum, ms.
    pub max: Option<f64>,
}

impl Millis {
    /// Converts a distribution of microseconds.
    pub fn from_us(d: &Distribution) -> Millis {
        let ms = |v: Option<u32>| v.map(|us| f64::from(us) / 1000.0);
        Millis {
            count: d.count,
            p50: ms(d.p50),
            p99: ms(d.p99),
            max: ms(d.max),
        }
    }
}

/// The server's side of a step.
#[derive(Clone, Debug, Serialize)]
pub struct ServerReport {
    /// CPU seconds during the window.
    pub cpu_secs: f64,
    /// Average cores busy.
    pub cpu_cores: f64,
    /// CPU µs per forwarded packet.
    pub us_per_packet: Option<f64>,
    /// RSS at the end of the window, MiB.
    pub rss_mib: f64,
    /// RSS growth over the run's baseline divided by the step's peers, KiB.
    pub rss_per_peer_kib: Option<f64>,
}

/// What the viewers of a simulcast step received of one spatial layer during the window.
#[derive(Clone, Debug, Serialize)]
pub struct LayerReport {
    /// Layer index (0 = lowest).
    pub layer: usize,
    /// Its rid.
    pub rid: String,
    /// Its keyframe dimensions.
    pub width: u16,
    /// Height.
    pub height: u16,
    /// Viewers that received any packet of it.
    pub viewers: usize,
    /// Viewers' video slots (streams) on it at the end of the window.
    pub slots: u32,
    /// RTP packets of it, all viewers.
    pub packets: u64,
    /// The same per second.
    pub pps: f64,
    /// Frames of it, all viewers.
    pub frames: u64,
    /// Frames by temporal layer id (T0, T1, T2).
    pub frames_by_tid: [u64; 3],
    /// Frames per second per slot on it (30 at full rate, 15 with T0+T1, 7.5 with T0 only).
    pub fps_per_slot: f64,
    /// Keyframes the publishers sent on it during the window.
    pub keyframes_sent: u64,
}

impl LayerReport {
    /// Layer `l`'s figures from the viewers' summed counts over a window of `secs`.
    pub fn new(
        l: usize,
        layer: &SpatialLayer,
        total: &LayerCounts,
        viewers: usize,
        keyframes_sent: u64,
        secs: f64,
    ) -> LayerReport {
        let frames = total.frames_of(l);
        let secs = secs.max(1e-9);
        LayerReport {
            layer: l,
            rid: layer.rid.to_owned(),
            width: layer.width,
            height: layer.height,
            viewers,
            slots: total.streams[l],
            packets: total.packets[l],
            pps: total.packets[l] as f64 / secs,
            frames,
            frames_by_tid: total.frames[l],
            fps_per_slot: match total.streams[l] {
                0 => 0.0,
                n => frames as f64 / secs / f64::from(n),
            },
            keyframes_sent,
        }
    }
}

/// Per simulcast layer: what the viewers `ids` received between two snapshots and what the
/// publishers sent.
pub fn layer_reports(a: &Snapshot, b: &Snapshot, ids: &[u64], secs: f64) -> Vec<LayerReport> {
    let per_viewer: Vec<LayerCounts> = ids
        .iter()
        .filter_map(|id| {
            let v1 = b.viewers.get(id)?;
            let zero = LayerCounts::default();
            let v0 = a.viewers.get(id).map_or(&zero, |v| &v.layers);
            Some(v1.layers.since(v0))
        })
        .collect();
    let mut total = LayerCounts::default();
    for c in &per_viewer {
        total.add(c);
    }
    LAYERS
        .iter()
        .enumerate()
        .map(|(l, layer)| {
            let viewers = per_viewer.iter().filter(|c| c.packets[l] > 0).count();
            let keyframes_sent = b
                .publishers
                .iter()
                .map(|(id, p)| {
                    let k0 = a
                        .publishers
                        .get(id)
                        .map_or(0, |p0| p0.keyframes_by_layer[l]);
                    p.keyframes_by_layer[l].saturating_sub(k0)
                })
                .sum();
            LayerReport::new(l, layer, &total, viewers, keyframes_sent, secs)
        })
        .collect()
}

/// One step of a scenario.
#[derive(Clone, Debug, Serialize)]
pub struct StepReport {
    /// Scenario name.
    pub scenario: String,
    /// 1-based step number.
    pub step: usize,
    /// The step's N (viewers or participants) in each room.
    pub peers: usize,
    /// Each room's name, viewers and what they received (one room unless `--rooms`).
    pub rooms: Vec<RoomReport>,
    /// Viewer sessions that were created (all rooms).
    pub viewers: usize,
    /// Publisher sessions.
    pub publishers: usize,
    /// Viewers that got their first keyframe.
    pub joined: usize,
    /// Join, teardown and ceiling errors.
    pub errors: Vec<String>,
    /// Measurement window, s.
    pub window_secs: f64,
    /// Packets received by all viewers per second.
    pub forwarded_pps: f64,
    /// Packets sent by all publishers per second.
    pub published_pps: f64,
    /// Forwarded / published packets.
    pub fanout: f64,
    /// Mean RTP datagram size at the viewers (SRTP overhead included).
    pub avg_packet_bytes: f64,
    /// Continuity over all viewers' streams during the window.
    pub counters: SeqCounters,
    /// Viewers that lost at least one packet in the window.
    pub viewers_with_loss: usize,
    /// Lost / expected, %.
    pub loss_pct: f64,
    /// Publisher stamp → viewer kernel receive time.
    pub delay_ms: Millis,
    /// POST → first keyframe, ms.
    pub join_ms: Distribution,
    /// POST → first media packet of any kind (connected and forwarding), ms: the part of
    /// the join that is not waiting for a keyframe.
    pub media_ms: Distribution,
    /// PLI/FIR the publishers received (whole run so far).
    pub keyframe_requests: u64,
    /// POSTs the server answered 429/503 (retried after Retry-After) in this step.
    pub post_retries: u32,
    /// Keyframes the publishers sent during the window.
    pub keyframes_sent: u64,
    /// Layer requests (WHEP layer extension) answered 204.
    pub layer_requests: usize,
    /// Viewers whose layer request failed (no Link, or not a 204).
    pub layer_request_failures: usize,
    /// Simulcast runs: what the viewers received per layer, lowest first.
    pub layers: Vec<LayerReport>,
    /// The viewers behind capped links and the others: rate, drops, feedback.
    pub downlink: Option<DownlinkReport>,
    /// With ICE-TCP viewers: those and the UDP viewers apart (joins, loss, delay).
    pub transport: Option<TransportReport>,
    /// Server CPU and memory, when a probe was given.
    pub server: Option<ServerReport>,
    /// Server CPU by thread group (a local server only).
    pub server_threads: Option<ThreadsReport>,
    /// Each further local server process's CPU (`--node-pid`; one that could not be read
    /// is left out and its error is in `errors`).
    pub nodes: Vec<NodeReport>,
    /// The generator's own CPU, cores.
    pub generator_cores: f64,
    /// The whole machine's busy CPU, cores: what is left after the server and the
    /// generator is other load (a noisy neighbour makes absolute numbers unreliable).
    pub machine_cores: Option<f64>,
    /// The media threads' CPU, cores.
    pub media_thread_cores: f64,
    /// Datagrams dropped at the generator's sockets (its own fault, not the server's).
    pub generator_socket_drops: u64,
    /// Datagrams the generator failed to send.
    pub generator_send_errors: u64,
    /// System-wide UDP drop counters during the window.
    pub udp: UdpCounters,
    /// Bare-forwarder ceilings with this step's fan-out and packet size.
    pub ceiling: Vec<Outcome>,
}

impl StepReport {
    /// Server µs per packet over the ceiling's µs per copy in `mode`.
    pub fn ratio(&self, mode: Mode) -> Option<f64> {
        let sfu = self.server.as_ref()?.us_per_packet?;
        let c = self.ceiling.iter().find(|c| c.mode == mode)?;
        Some(sfu / c.us_per_copy)
    }

    /// Busy cores on the machine that were neither the server (nor its further nodes) nor
    /// the generator.
    pub fn other_load(&self) -> Option<f64> {
        let server = self.server.as_ref().map_or(0.0, |s| s.cpu_cores);
        let nodes: f64 = self.nodes.iter().map(|n| n.cpu_cores).sum();
        self.machine_cores
            .map(|m| (m - server - nodes - self.generator_cores).max(0.0))
    }

    fn ceiling_us(&self, mode: Mode) -> Option<f64> {
        self.ceiling
            .iter()
            .find(|c| c.mode == mode)
            .map(|c| c.us_per_copy)
    }
}

/// A whole run.
#[derive(Clone, Debug, Serialize)]
pub struct Report {
    /// Scenario.
    pub scenario: String,
    /// Server URL.
    pub url: String,
    /// The viewers' server URLs (`--viewer-url`; empty: the viewers use `url`).
    pub viewer_urls: Vec<String>,
    /// Further local server processes measured (`--node-pid`).
    pub node_pids: Vec<u32>,
    /// The options that shape the load.
    pub video_kbps: u32,
    /// Frames per second.
    pub fps: u32,
    /// Codec.
    pub codec: String,
    /// Publishers sent simulcast.
    pub simulcast: bool,
    /// Share of the viewers behind capped links (their rate and queue are in each step).
    pub capped_share: f64,
    /// Share of the viewers over ICE-TCP.
    pub tcp_share: f64,
    /// Milliseconds between a viewer's congestion feedback packets (0: none offered).
    pub twcc_interval_ms: u32,
    /// Measurement window, s.
    pub measure_secs: f64,
    /// Independent rooms per step.
    pub rooms: u16,
    /// Steps in order.
    pub steps: Vec<StepReport>,
    /// Steps that failed outright.
    pub errors: Vec<String>,
}

impl Report {
    /// An empty report for a run.
    pub fn new(scenario: &str, args: &LoadArgs) -> Report {
        Report {
            scenario: scenario.to_owned(),
            url: args.url.clone(),
            viewer_urls: args.viewer_url.clone(),
            node_pids: args.node_pid.clone(),
            video_kbps: args.video_kbps,
            fps: args.fps,
            codec: format!("{:?}", args.codec).to_lowercase(),
            simulcast: args.simulcast,
            capped_share: args.capped_share,
            tcp_share: args.tcp_share,
            twcc_interval_ms: args.twcc_interval_ms,
            measure_secs: args.measure_secs,
            rooms: args.rooms,
            steps: Vec::new(),
            errors: Vec::new(),
        }
    }

    /// Writes the report as pretty JSON.
    pub fn write_json(&self, path: &Path) -> Result<()> {
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
        }
        std::fs::write(path, serde_json::to_string_pretty(self)?)
            .with_context(|| format!("writing {}", path.display()))
    }

    /// The summary table.
    pub fn print_table(&self) {
        println!();
        match self.viewer_urls.as_slice() {
            [] => println!("{} against {}", self.scenario, self.url),
            urls => println!(
                "{} against {} (viewers: {})",
                self.scenario,
                self.url,
                urls.join(", ")
            ),
        }
        println!("{}", HEADER);
        for s in &self.steps {
            println!("{}", row(s));
            for line in extra_lines(s) {
                println!("{line}");
            }
        }
        println!("{}", LEGEND);
        if self.simulcast {
            println!("{}", LAYER_LEGEND);
        }
        for e in &self.errors {
            println!("error: {e}");
        }
    }
}

const HEADER: &str =
    "    N  joined   fwd pkt/s  srv cores  srv µs/pkt  ceil µs (mmsg/gso)  ratio mmsg/gso  \
                      delay p50/p99 ms  loss %  join p50/p99 ms  srv RSS MiB  KiB/peer  gen cores";
const LEGEND: &str = "fwd = packets received by all viewers; srv µs/pkt = server CPU / fwd; ceil = bare \
                      forwarder (1 decrypt + per-copy AES-GCM + send) with the step's fan-out and size; \
                      ratio = srv / ceil; delay = publisher stamp -> viewer kernel rx time; join = POST -> \
                      first keyframe; KiB/peer = RSS growth over the run's baseline / N.";

const LAYER_LEGEND: &str = "layers (simulcast): per rid, viewers that received any of it in the \
                            window / video slots on it at the end / packets per second to all \
                            viewers / frames per second per slot (30, 15 or 7.5 with temporal \
                            limits) / keyframes the publishers sent on it in the window.";

/// The per-layer line of a simulcast step, e.g.
/// `  layers q/h/f: viewers 3/3/4, slots 3/3/4, pkt/s 90/270/1400, fps/slot 30.0/15.0/30.0,
/// keyframes 3/3/3`.
pub fn layer_line(s: &StepReport) -> Option<String> {
    if s.layers.is_empty() {
        return None;
    }
    let join =
        |f: &dyn Fn(&LayerReport) -> String| s.layers.iter().map(f).collect::<Vec<_>>().join("/");
    let mut line = format!(
        "  layers {}: viewers {}, slots {}, pkt/s {}, fps/slot {}, keyframes {}",
        join(&|l| l.rid.clone()),
        join(&|l| l.viewers.to_string()),
        join(&|l| l.slots.to_string()),
        join(&|l| format!("{:.0}", l.pps)),
        join(&|l| format!("{:.1}", l.fps_per_slot)),
        join(&|l| l.keyframes_sent.to_string()),
    );
    if s.layer_requests + s.layer_request_failures > 0 {
        line.push_str(&format!(
            "; layer requests {} ok, {} viewers failed",
            s.layer_requests, s.layer_request_failures
        ));
    }
    Some(line)
}

/// The lines under a step's row: simulcast layers, downlinks, transports, rooms, server
/// threads, further nodes.
fn extra_lines(s: &StepReport) -> Vec<String> {
    let mut lines = Vec::new();
    lines.extend(layer_line(s));
    lines.extend(s.downlink.as_ref().map(downlink::downlink_line));
    lines.extend(s.transport.as_ref().map(transport::transport_line));
    lines.extend(rooms::rooms_line(&s.rooms));
    lines.extend(s.server_threads.as_ref().and_then(threads::threads_line));
    lines.extend(nodes::nodes_line(&s.nodes));
    lines
}

/// The N column: the step's N, times the rooms when there are several (`2x200`).
fn population(s: &StepReport) -> String {
    match s.rooms.len() {
        0 | 1 => s.peers.to_string(),
        rooms => format!("{rooms}x{}", s.peers),
    }
}

fn opt(v: Option<f64>, prec: usize) -> String {
    v.map_or_else(|| "-".to_owned(), |v| format!("{v:.prec$}"))
}

fn row(s: &StepReport) -> String {
    let srv = s.server.as_ref();
    format!(
        "{:>5}  {:>6}  {:>10.0}  {:>9}  {:>10}  {:>18}  {:>14}  {:>16}  {:>6.3}  {:>15}  {:>11}  {:>8}  {:>9.2}",
        population(s),
        format!("{}/{}", s.joined, s.viewers),
        s.forwarded_pps,
        opt(srv.map(|v| v.cpu_cores), 2),
        opt(srv.and_then(|v| v.us_per_packet), 2),
        format!(
            "{}/{}",
            opt(s.ceiling_us(Mode::Sendmmsg), 2),
            opt(s.ceiling_us(Mode::Gso), 2)
        ),
        format!(
            "{}/{}",
            opt(s.ratio(Mode::Sendmmsg), 2),
            opt(s.ratio(Mode::Gso), 2)
        ),
        format!("{}/{}", opt(s.delay_ms.p50, 2), opt(s.delay_ms.p99, 2)),
        s.loss_pct,
        format!(
            "{}/{}",
            s.join_ms.p50.map_or("-".into(), |v| v.to_string()),
            s.join_ms.p99.map_or("-".into(), |v| v.to_string())
        ),
        opt(srv.map(|v| v.rss_mib), 1),
        opt(srv.and_then(|v| v.rss_per_peer_kib), 1),
        s.generator_cores,
    )
}

/// Prints one step as soon as it is done (stderr keeps stdout for the final table).
pub fn print_step(s: &StepReport) {
    eprintln!("{HEADER}");
    eprintln!("{}", row(s));
    eprintln!(
        "  published {:.0} pkt/s, fan-out {:.1}, {:.0} B/pkt; lost {} of {} (late {}, gaps {}, {} viewers with loss); \
         delay max {} ms over {} samples; gen media thread {:.2} cores, socket drops {}, \
         send errors {}; first media p50/p99 {}/{} ms; machine busy {} cores; kernel UDP rcvbuf errors {}; PLI/FIR at publishers {} (run), keyframes sent {} (window)",
        s.published_pps,
        s.fanout,
        s.avg_packet_bytes,
        s.counters.lost(),
        s.counters.expected,
        s.counters.late,
        s.counters.gaps,
        s.viewers_with_loss,
        opt(s.delay_ms.max, 2),
        s.delay_ms.count,
        s.media_thread_cores,
        s.generator_socket_drops,
        s.generator_send_errors,
        s.media_ms.p50.map_or("-".into(), |v| v.to_string()),
        s.media_ms.p99.map_or("-".into(), |v| v.to_string()),
        opt(s.machine_cores, 2),
        s.udp.rcvbuf_errors,
        s.keyframe_requests,
        s.keyframes_sent,
    );
    for line in extra_lines(s) {
        eprintln!("{line}");
    }
    if let Some(other) = s.other_load() {
        if other > 0.3 {
            eprintln!(
                "  warning: {other:.2} cores of other load on the machine during the window; \
                 delays and CPU figures are unreliable (the ratio to the ceiling less so)"
            );
        }
    }
    for e in s.errors.iter().take(5) {
        eprintln!("  error: {e}");
    }
}

/// Prints ceiling results as a table.
pub fn print_ceiling(results: &[Outcome]) {
    println!(
        "{:>8}  {:>7}  {:>6}  {:>12}  {:>9}  {:>14}  {:>9}",
        "mode", "copies", "size", "copies/s", "µs/copy", "pkt/s per core", "delivered"
    );
    for o in results {
        println!(
            "{:>8}  {:>7}  {:>6}  {:>12.0}  {:>9.3}  {:>14.0}  {:>8.1}%",
            format!("{:?}", o.mode).to_lowercase(),
            o.copies,
            o.size,
            o.copies_per_sec,
            o.us_per_copy,
            o.per_core_pps,
            o.delivered_ratio * 100.0
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::engine::{PublisherSnap, ViewerSnap};
    use crate::peer::PeerState;

    fn viewer(packets: [u64; 3], frames: [[u64; 3]; 3], streams: [u32; 3]) -> ViewerSnap {
        ViewerSnap {
            state: PeerState::Connected,
            join_ms: None,
            media_ms: None,
            counters: SeqCounters::default(),
            bytes: 0,
            socket_drops: 0,
            rx_datagrams: 0,
            tx_datagrams: 0,
            layers: LayerCounts {
                packets,
                frames,
                streams,
            },
            capped: false,
            tcp: false,
            link: Default::default(),
        }
    }

    fn publisher(keyframes_by_layer: [u64; 3]) -> PublisherSnap {
        PublisherSnap {
            state: PeerState::Connected,
            packets: 0,
            keyframes: keyframes_by_layer.iter().sum(),
            keyframes_by_layer,
            requests: 0,
        }
    }

    #[test]
    fn layer_reports_count_the_window_per_layer() {
        let mut a = Snapshot::default();
        let mut b = Snapshot::default();
        // Viewer 1 stays on q at T0 only; viewer 2 moves from h to f during the window.
        a.viewers.insert(
            1,
            viewer([100, 0, 0], [[10, 0, 0], [0; 3], [0; 3]], [1, 0, 0]),
        );
        b.viewers.insert(
            1,
            viewer([150, 0, 0], [[25, 0, 0], [0; 3], [0; 3]], [1, 0, 0]),
        );
        a.viewers.insert(
            2,
            viewer([0, 80, 0], [[0; 3], [5, 5, 10], [0; 3]], [0, 1, 0]),
        );
        b.viewers.insert(
            2,
            viewer([0, 90, 300], [[0; 3], [6, 6, 12], [15, 15, 30]], [0, 0, 1]),
        );
        a.publishers.insert(9, publisher([1, 1, 1]));
        b.publishers.insert(9, publisher([3, 4, 3]));
        let r = layer_reports(&a, &b, &[1, 2], 2.0);
        let rids: Vec<_> = r.iter().map(|l| l.rid.as_str()).collect();
        assert_eq!(rids, ["q", "h", "f"]);
        let viewers: Vec<_> = r.iter().map(|l| l.viewers).collect();
        assert_eq!(viewers, [1, 1, 1]);
        let slots: Vec<_> = r.iter().map(|l| l.slots).collect();
        assert_eq!(slots, [1, 0, 1]);
        assert_eq!(
            (r[0].packets, r[0].frames, r[0].fps_per_slot),
            (50, 15, 7.5)
        );
        assert_eq!((r[2].pps, r[2].frames_by_tid), (150.0, [15, 15, 30]));
        assert_eq!(r[2].fps_per_slot, 30.0);
        assert_eq!(r[1].fps_per_slot, 0.0, "no slot left on h");
        let keyframes: Vec<_> = r.iter().map(|l| l.keyframes_sent).collect();
        assert_eq!(keyframes, [2, 3, 2]);
    }

    #[test]
    fn the_layer_line() {
        let a = Snapshot::default();
        let mut b = Snapshot::default();
        b.viewers.insert(
            1,
            viewer([60, 0, 0], [[30, 0, 0], [0; 3], [0; 3]], [1, 0, 0]),
        );
        let layers = layer_reports(&a, &b, &[1], 2.0);
        let line = "  layers q/h/f: viewers 1/0/0, slots 1/0/0, pkt/s 30/0/0, \
                    fps/slot 15.0/0.0/0.0, keyframes 0/0/0";
        let mut step = StepReport {
            scenario: "broadcast".into(),
            step: 1,
            peers: 1,
            rooms: Vec::new(),
            viewers: 1,
            publishers: 1,
            joined: 1,
            errors: vec![],
            window_secs: 2.0,
            forwarded_pps: 0.0,
            published_pps: 0.0,
            fanout: 0.0,
            avg_packet_bytes: 0.0,
            counters: SeqCounters::default(),
            viewers_with_loss: 0,
            loss_pct: 0.0,
            delay_ms: Millis::default(),
            join_ms: Distribution::default(),
            media_ms: Distribution::default(),
            keyframe_requests: 0,
            post_retries: 0,
            keyframes_sent: 0,
            layer_requests: 0,
            layer_request_failures: 0,
            layers: Vec::new(),
            downlink: None,
            transport: None,
            server: None,
            server_threads: None,
            nodes: Vec::new(),
            generator_cores: 0.0,
            machine_cores: None,
            media_thread_cores: 0.0,
            generator_socket_drops: 0,
            generator_send_errors: 0,
            udp: UdpCounters::default(),
            ceiling: vec![],
        };
        assert_eq!(layer_line(&step), None, "not a simulcast step");
        step.layers = layers;
        assert_eq!(layer_line(&step).as_deref(), Some(line));
        (step.layer_requests, step.layer_request_failures) = (3, 1);
        let line = layer_line(&step).unwrap_or_default();
        assert!(
            line.ends_with("; layer requests 3 ok, 1 viewers failed"),
            "{line}"
        );
    }
}
