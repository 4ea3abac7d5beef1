//! Results: per-step records, the stdout table and the JSON file.
//!
//! The key column is the server's CPU time per forwarded packet, and its ratio to the bare
//! forwarder's (`ceiling`) cost measured in the same run with the same fan-out and packet
//! size: the ratio holds on a noisy machine where absolute microseconds do not.

use crate::ceiling::{Mode, Outcome};
use crate::cli::LoadArgs;
use crate::procfs::UdpCounters;
use crate::stats::{Distribution, SeqCounters};
use anyhow::{Context, Result};
use serde::Serialize;
use std::path::Path;

/// A delay distribution in milliseconds.
#[derive(Clone, Copy, Debug, Default, Serialize)]
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

/// One step of a scenario.
#[derive(Clone, Debug, Serialize)]
pub struct StepReport {
    /// Scenario name.
    pub scenario: String,
    /// 1-based step number.
    pub step: usize,
    /// The step's N (viewers or participants).
    pub peers: usize,
    /// Viewer sessions that were created.
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
    /// Server CPU and memory, when a probe was given.
    pub server: Option<ServerReport>,
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

    /// Busy cores on the machine that were neither the server nor the generator.
    pub fn other_load(&self) -> Option<f64> {
        let server = self.server.as_ref().map_or(0.0, |s| s.cpu_cores);
        self.machine_cores
            .map(|m| (m - server - self.generator_cores).max(0.0))
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
    /// The options that shape the load.
    pub video_kbps: u32,
    /// Frames per second.
    pub fps: u32,
    /// Codec.
    pub codec: String,
    /// Measurement window, s.
    pub measure_secs: f64,
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
            video_kbps: args.video_kbps,
            fps: args.fps,
            codec: format!("{:?}", args.codec).to_lowercase(),
            measure_secs: args.measure_secs,
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
        println!("{} against {}", self.scenario, self.url);
        println!("{}", HEADER);
        for s in &self.steps {
            println!("{}", row(s));
        }
        println!("{}", LEGEND);
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

fn opt(v: Option<f64>, prec: usize) -> String {
    v.map_or_else(|| "-".to_owned(), |v| format!("{v:.prec$}"))
}

fn row(s: &StepReport) -> String {
    let srv = s.server.as_ref();
    format!(
        "{:>5}  {:>6}  {:>10.0}  {:>9}  {:>10}  {:>18}  {:>14}  {:>16}  {:>6.3}  {:>15}  {:>11}  {:>8}  {:>9.2}",
        s.peers,
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
