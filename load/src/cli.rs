//! Command-line interface: scenarios (`broadcast`, `meeting`, `audio`) and `ceiling`.
//! Every option is documented here; `parley-load help <command>` prints it.

use crate::ceiling::Mode;
use crate::link::LinkSpec;
use crate::payload::VideoCodec;
use clap::{Args, Parser, Subcommand};
use std::net::IpAddr;
use std::path::PathBuf;
use std::str::FromStr;

/// WHIP/WHEP load generator and forwarding-cost benchmark.
///
/// Drives any WHIP/WHEP server with synthetic publishers and measuring viewers, ramps the
/// number of peers over a list of steps, and reports per step: forwarded packets/s, server
/// CPU per forwarded packet (and its ratio to a bare forwarder measured in the same run),
/// one-way delay, loss, join time and server memory.
#[derive(Parser, Debug)]
#[command(name = "parley-load", version)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Subcommand, Debug)]
pub enum Command {
    /// One publisher (video + Opus) to N viewers, for each N in --viewers.
    Broadcast {
        /// Viewer counts to step through, e.g. 10,50,200,500.
        #[arg(long, value_delimiter = ',', default_value = "10,50,200")]
        viewers: Vec<usize>,
        #[command(flatten)]
        load: LoadArgs,
    },
    /// N participants, each publishing video + Opus and playing with K slots.
    Meeting {
        /// Participant counts to step through.
        #[arg(long, value_delimiter = ',', default_value = "4,8")]
        participants: Vec<usize>,
        /// Audio and video m-lines (slots) per participant's WHEP offer.
        #[arg(long, default_value_t = 1)]
        slots: usize,
        #[command(flatten)]
        load: LoadArgs,
    },
    /// N audio-only participants, each publishing Opus and playing K audio slots.
    Audio {
        /// Participant counts to step through.
        #[arg(long, value_delimiter = ',', default_value = "50,200")]
        participants: Vec<usize>,
        /// Audio m-lines (slots) per participant's WHEP offer.
        #[arg(long, default_value_t = 1)]
        slots: usize,
        #[command(flatten)]
        load: LoadArgs,
    },
    /// The machine's forwarding ceiling: receive, one decrypt, per copy one AES-128-GCM
    /// encrypt and a send (sendto, sendmmsg, UDP GSO), over loopback.
    Ceiling {
        /// Fan-outs (copies per input packet) to measure.
        #[arg(long, value_delimiter = ',', default_value = "10,100,200")]
        copies: Vec<usize>,
        /// Datagram size in bytes (RTP header + payload + 16-byte tag).
        #[arg(long, default_value_t = 1200)]
        size: usize,
        /// Seconds per measurement.
        #[arg(long, default_value_t = 5.0)]
        secs: f64,
        #[command(flatten)]
        ceiling: CeilingArgs,
        /// Local address to bind.
        #[arg(long, default_value = "127.0.0.1")]
        bind_ip: IpAddr,
        /// Also write the results to this JSON file.
        #[arg(long)]
        json: Option<PathBuf>,
    },
}

/// A layer limit: an id (0, 1 or 2), or `any` for none.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct LayerId(pub Option<u8>);

impl FromStr for LayerId {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        match s.trim() {
            "any" | "-" => Ok(LayerId(None)),
            n => match n.parse::<u8>() {
                Ok(id) if id <= 2 => Ok(LayerId(Some(id))),
                _ => Err(format!("{s:?} is not a layer id (0, 1, 2 or any)")),
            },
        }
    }
}

/// What one viewer asks the server for through the WHEP layer extension.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct LayerLimits {
    /// `maxWidth`.
    pub max_width: Option<u32>,
    /// `maxHeight`.
    pub max_height: Option<u32>,
    /// `maxTemporalLayerId`.
    pub max_temporal: Option<u8>,
    /// `maxSpatialLayerId`.
    pub max_spatial: Option<u8>,
}

impl LoadArgs {
    /// The limits of the step's `index`-th viewer (each list cycles over the viewers), or
    /// `None` when it asks for nothing.
    pub fn layer_limits(&self, index: usize) -> Option<LayerLimits> {
        fn pick<T: Copy>(list: &[T], i: usize) -> Option<T> {
            (!list.is_empty()).then(|| list[i % list.len()])
        }
        let limits = LayerLimits {
            max_width: pick(&self.viewer_max_width, index).filter(|&w| w > 0),
            max_height: pick(&self.viewer_max_height, index).filter(|&h| h > 0),
            max_temporal: pick(&self.viewer_max_temporal_layer, index).and_then(|t| t.0),
            max_spatial: pick(&self.viewer_max_spatial_layer, index).and_then(|t| t.0),
        };
        (limits != LayerLimits::default()).then_some(limits)
    }

    /// Whether the step's `index`-th viewer sits behind a capped link: `--capped-share` of
    /// the viewers, spread evenly (0.25 caps viewers 3, 7, 11, ...).
    pub fn capped(&self, index: usize) -> bool {
        spread(self.capped_share, index)
    }

    /// Whether the step's `index`-th viewer connects over ICE-TCP: `--tcp-share` of the
    /// viewers, spread evenly like [`LoadArgs::capped`] (0.5: viewers 1, 3, 5, ...).
    pub fn tcp(&self, index: usize) -> bool {
        spread(self.tcp_share, index)
    }

    /// The base URL the step's `index`-th viewer posts its offer to: `--viewer-url` cycled
    /// over the viewers, or `--url` when it is empty.
    pub fn viewer_url(&self, index: usize) -> &str {
        match self.viewer_url.len() {
            0 => &self.url,
            n => &self.viewer_url[index % n],
        }
    }

    /// The capped viewers' link.
    pub fn cap(&self) -> LinkSpec {
        LinkSpec {
            kbps: self.cap_kbps,
            queue_ms: self.cap_queue_ms,
        }
    }

    /// Whether viewers send layer requests at all.
    pub fn limits_viewers(&self) -> bool {
        !(self.viewer_max_width.is_empty()
            && self.viewer_max_height.is_empty()
            && self.viewer_max_temporal_layer.is_empty()
            && self.viewer_max_spatial_layer.is_empty())
    }
}

/// How the ceiling forwarder sends.
#[derive(Args, Debug, Clone)]
pub struct CeilingArgs {
    /// Send modes to measure.
    #[arg(
        long = "modes",
        value_delimiter = ',',
        default_value = "sendto,sendmmsg,gso"
    )]
    pub modes: Vec<Mode>,
    /// Packets per destination in one UDP GSO send.
    #[arg(long, default_value_t = 8)]
    pub gso_segments: usize,
}

/// Options shared by the load scenarios.
#[derive(Args, Debug, Clone)]
pub struct LoadArgs {
    /// Server base URL; offers go to {url}/whip/{room} and {url}/whep/{room}.
    #[arg(long, default_value = "http://127.0.0.1:8080")]
    pub url: String,
    /// Base URLs the viewers' WHEP offers go to instead of --url, spread over each room's
    /// viewers in turn: `http://a:8080,http://b:8081` sends the first viewer to a, the
    /// second to b, the third to a again (e.g. the nodes of a cluster, where a node that
    /// does not hold the broadcast serves its viewers from a cascade). Publishers always
    /// use --url. None: every viewer uses --url.
    #[arg(long, value_delimiter = ',', value_name = "URL")]
    pub viewer_url: Vec<String>,
    /// Room name (meeting and audio steps use {room}-{step}; with --rooms above 1 every
    /// room is {room}-{step}-{r}).
    #[arg(long, default_value = "bench")]
    pub room: String,
    /// Independent rooms per step, each with the step's whole population: a broadcast step
    /// of N viewers with --rooms 2 runs 2 publishers and 2 x N viewers. Above 1, each room of
    /// each step is named {room}-{step}-{r} and its publishers join in that step (with one
    /// room, a broadcast's publisher stays in {room} for the whole run). The figures cover
    /// all rooms together; the JSON adds each room's forwarded packets/s. --join-concurrency
    /// paces the joins of all rooms together.
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u16).range(1..))]
    pub rooms: u16,
    /// Bearer token for POST and DELETE.
    #[arg(long)]
    pub token: Option<String>,
    /// Local server process: CPU from /proc/PID/task/*/schedstat, RSS from /proc/PID/status,
    /// and CPU per thread group (each parley-shard-N, all parley-send-* as send, the rest as
    /// other).
    #[arg(long)]
    pub server_pid: Option<u32>,
    /// Further local server processes (e.g. the other nodes of a cluster): each one's CPU
    /// over the window, from /proc like --server-pid's, on a `nodes` line per step and in
    /// the JSON's `nodes`. A process that cannot be read is a step error, not fatal.
    #[arg(long, value_delimiter = ',', value_name = "PID")]
    pub node_pid: Vec<u32>,
    /// Prometheus page with process_cpu_seconds_total and process_resident_memory_bytes
    /// (used when --server-pid is not given).
    #[arg(long)]
    pub server_metrics: Option<String>,
    /// Video bitrate per publisher, kbit/s.
    #[arg(long, default_value_t = 2500)]
    pub video_kbps: u32,
    /// Video frame rate.
    #[arg(long, default_value_t = 30)]
    pub fps: u32,
    /// A keyframe every this many frames (and whenever the server sends a PLI).
    #[arg(long, default_value_t = 60)]
    pub keyframe_interval: u32,
    /// Keyframe size as a multiple of a delta frame.
    #[arg(long, default_value_t = 5)]
    pub keyframe_ratio: u32,
    /// Video codec.
    #[arg(long, value_enum, default_value = "vp8")]
    pub codec: VideoCodec,
    /// Publishers send simulcast (broadcast and meeting, VP8): three layers `q` 320x180,
    /// `h` 640x360 and `f` 1280x720, each on its own SSRC with the mid and rid header
    /// extensions and three VP8 temporal layers, splitting --video-kbps 1:3:10.
    #[arg(long)]
    pub simulcast: bool,
    /// Viewers ask for video no wider than this (a POST to the WHEP answer's layer Link
    /// after joining). A list is spread over the viewers in turn: `320,640,0` gives the
    /// first viewer 320, the second 640, the third no limit, the fourth 320 again.
    /// 0 = no limit.
    #[arg(long, value_delimiter = ',', value_name = "PIXELS")]
    pub viewer_max_width: Vec<u32>,
    /// Viewers ask for video no taller than this; spread over the viewers like
    /// --viewer-max-width (each list cycles on its own). 0 = no limit.
    #[arg(long, value_delimiter = ',', value_name = "PIXELS")]
    pub viewer_max_height: Vec<u32>,
    /// Viewers ask for temporal layers up to this id (0 = a quarter of the frames, 1 = half,
    /// 2 = all); spread over the viewers like --viewer-max-width. `any` = no limit.
    #[arg(long, value_delimiter = ',', value_name = "ID")]
    pub viewer_max_temporal_layer: Vec<LayerId>,
    /// Viewers ask for spatial layers up to this id (0 = `q`, 1 = `h`, 2 = `f`); spread over
    /// the viewers like --viewer-max-width. `any` = no limit.
    #[arg(long, value_delimiter = ',', value_name = "ID")]
    pub viewer_max_spatial_layer: Vec<LayerId>,
    /// Share of each step's viewers (0 to 1) behind a capped downlink, spread evenly (0.25:
    /// every fourth viewer). Their datagrams cross a virtual token-bucket link of
    /// --cap-kbps with a drop-tail queue of --cap-queue-ms: one that would wait longer is
    /// dropped (never counted or decrypted, reported lost in congestion feedback), the
    /// others are reported as arriving when they leave the link.
    #[arg(long, default_value_t = 0.0, value_parser = share, value_name = "F")]
    pub capped_share: f64,
    /// Share of each step's viewers (0 to 1) that connect over ICE-TCP (RFC 6544, active, to
    /// the server's `tcptype passive` candidate; RFC 4571 framing) instead of UDP, spread
    /// evenly like --capped-share (0.5: every second viewer). Publishers always use UDP. The
    /// step then reports TCP and UDP viewers apart. Not with --capped-share.
    #[arg(long, default_value_t = 0.0, value_parser = share, value_name = "F")]
    pub tcp_share: f64,
    /// A capped viewer's downlink rate, kbit/s (each datagram counts 28 bytes of UDP/IP
    /// headers on top).
    #[arg(long, default_value_t = 1000, value_parser = clap::value_parser!(u32).range(1..))]
    pub cap_kbps: u32,
    /// Longest a datagram waits in a capped link's queue, ms.
    #[arg(long, default_value_t = 100)]
    pub cap_queue_ms: u32,
    /// Viewers offer transport-wide congestion control (and abs-send-time) and send a TWCC
    /// feedback packet this often, ms, about every RTP packet that reached them (as a
    /// browser does, 50 ms at these rates). 0: not offered, no feedback.
    #[arg(long, default_value_t = 50)]
    pub twcc_interval_ms: u32,
    /// Largest RTP payload in bytes.
    #[arg(long, default_value_t = 1100)]
    pub max_payload: usize,
    /// Publishers pace video packets at this multiple of the video bitrate, as libwebrtc's
    /// pacer does (2.5); 0 sends each frame's packets as one burst.
    #[arg(long, default_value_t = 2.5)]
    pub pacing_factor: f64,
    /// Opus packet size in bytes (one every 20 ms; 120 B is about 48 kbit/s).
    #[arg(long, default_value_t = 120)]
    pub audio_bytes: usize,
    /// Audio levels: participants take turns of this many seconds as the one loud speaker
    /// (the others send quiet levels), so a server's active-speaker logic sees a realistic
    /// meeting.
    #[arg(long, default_value_t = 5.0)]
    pub speaker_secs: f64,
    /// Seconds of steady state measured per step.
    #[arg(long, default_value_t = 10.0)]
    pub measure_secs: f64,
    /// Seconds to wait after every viewer joined, before measuring.
    #[arg(long, default_value_t = 2.0)]
    pub settle_secs: f64,
    /// Give up waiting for joins (first keyframe) after this many seconds.
    #[arg(long, default_value_t = 30.0)]
    pub join_timeout_secs: f64,
    /// Offers in flight at once while joining.
    #[arg(long, default_value_t = 16)]
    pub join_concurrency: usize,
    /// Local address for the peers' sockets (each peer has its own port).
    #[arg(long, default_value = "127.0.0.1")]
    pub bind_ip: IpAddr,
    /// Receive buffer per peer socket, bytes.
    #[arg(long, default_value_t = 1 << 20)]
    pub rcvbuf: usize,
    /// Media threads (peers are spread over them).
    #[arg(long, default_value_t = 1)]
    pub threads: usize,
    /// Microseconds each media thread sleeps between rounds (delays use kernel timestamps,
    /// so batching does not bias them).
    #[arg(long, default_value_t = 2000)]
    pub batch_us: u64,
    /// After a stream's first keyframe, decrypt one RTP packet in this many for delay
    /// samples (every packet is still counted for loss from its clear header).
    #[arg(long, default_value_t = 8)]
    pub delay_sample: u32,
    /// Seconds of ceiling measurement per step (0 disables): same fan-out and packet size
    /// as the step.
    #[arg(long, default_value_t = 3.0)]
    pub ceiling_secs: f64,
    #[command(flatten)]
    pub ceiling: CeilingArgs,
    /// Write the report to this JSON file.
    #[arg(long)]
    pub json: Option<PathBuf>,
}

/// Whether item `index` is among a `share` (0 to 1) of the items spread evenly: the ones
/// where the running count `floor(i * share)` steps up (0.25 picks 3, 7, 11, ...).
fn spread(share: f64, index: usize) -> bool {
    let share = share.clamp(0.0, 1.0);
    ((index + 1) as f64 * share).floor() > (index as f64 * share).floor()
}

/// A share: a number from 0 to 1.
fn share(s: &str) -> Result<f64, String> {
    match s.trim().parse::<f64>() {
        Ok(v) if (0.0..=1.0).contains(&v) => Ok(v),
        _ => Err(format!("{s:?} is not a share from 0 to 1")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn load_args(extra: &[&str]) -> LoadArgs {
        let mut argv = vec!["parley-load", "broadcast"];
        argv.extend_from_slice(extra);
        match Cli::try_parse_from(argv).expect("parses").command {
            Command::Broadcast { load, .. } => load,
            other => panic!("not a broadcast: {other:?}"),
        }
    }

    #[test]
    fn simulcast_is_off_unless_asked() {
        let a = load_args(&[]);
        assert!(!a.simulcast && !a.limits_viewers());
        assert_eq!(a.layer_limits(0), None);
        assert!(load_args(&["--simulcast"]).simulcast);
    }

    #[test]
    fn viewer_limits_cycle_over_viewers() {
        let a = load_args(&[
            "--simulcast",
            "--viewer-max-width",
            "320,640,0",
            "--viewer-max-height",
            "180",
            "--viewer-max-temporal-layer",
            "0,any",
            "--viewer-max-spatial-layer",
            "any,any,any,any,1",
        ]);
        assert!(a.limits_viewers());
        let limits = |w, h, t| {
            Some(LayerLimits {
                max_width: w,
                max_height: h,
                max_temporal: t,
                max_spatial: None,
            })
        };
        assert_eq!(a.layer_limits(0), limits(Some(320), Some(180), Some(0)));
        assert_eq!(a.layer_limits(1), limits(Some(640), Some(180), None));
        assert_eq!(a.layer_limits(2), limits(None, Some(180), Some(0)));
        assert_eq!(a.layer_limits(3), limits(Some(320), Some(180), None));
        assert_eq!(a.layer_limits(4).and_then(|l| l.max_spatial), Some(1));
    }

    #[test]
    fn zero_everywhere_asks_for_nothing() {
        let a = load_args(&["--viewer-max-width", "0,640"]);
        assert_eq!(a.layer_limits(0), None);
        assert_eq!(a.layer_limits(1).and_then(|l| l.max_width), Some(640));
    }

    #[test]
    fn capped_viewers_are_spread_evenly() {
        let a = load_args(&[]);
        assert!((0..100).all(|i| !a.capped(i)), "none by default");
        assert_eq!(a.twcc_interval_ms, 50);
        let a = load_args(&["--capped-share", "0.25", "--cap-kbps", "800"]);
        let capped: Vec<usize> = (0..12).filter(|&i| a.capped(i)).collect();
        assert_eq!(capped, [3, 7, 11]);
        assert_eq!((0..200).filter(|&i| a.capped(i)).count(), 50);
        assert_eq!(
            a.cap(),
            LinkSpec {
                kbps: 800,
                queue_ms: 100
            }
        );
        let all = load_args(&["--capped-share", "1"]);
        assert!((0..10).all(|i| all.capped(i)));
        let third = load_args(&["--capped-share", "0.33"]);
        assert_eq!((0..100).filter(|&i| third.capped(i)).count(), 33);
        for bad in [
            ["--capped-share", "1.5"],
            ["--capped-share", "-0.1"],
            ["--capped-share", "half"],
            ["--cap-kbps", "0"],
        ] {
            let mut argv = vec!["parley-load", "broadcast"];
            argv.extend_from_slice(&bad);
            assert!(Cli::try_parse_from(argv).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn tcp_viewers_are_spread_evenly() {
        let a = load_args(&[]);
        assert!((0..100).all(|i| !a.tcp(i)), "none by default");
        let half = load_args(&["--tcp-share", "0.5"]);
        let tcp: Vec<usize> = (0..8).filter(|&i| half.tcp(i)).collect();
        assert_eq!(tcp, [1, 3, 5, 7]);
        assert_eq!((0..100).filter(|&i| half.tcp(i)).count(), 50);
        assert!(
            (0..100).all(|i| !half.capped(i)),
            "capping is its own share"
        );
        let quarter = load_args(&["--tcp-share", "0.25"]);
        let tcp: Vec<usize> = (0..12).filter(|&i| quarter.tcp(i)).collect();
        assert_eq!(tcp, [3, 7, 11]);
        let all = load_args(&["--tcp-share", "1"]);
        assert!((0..10).all(|i| all.tcp(i)));
        for bad in ["1.5", "-0.1", "half"] {
            let argv = ["parley-load", "broadcast", "--tcp-share", bad];
            assert!(Cli::try_parse_from(argv).is_err(), "{bad}");
        }
    }

    #[test]
    fn viewer_urls_cycle_and_default_to_the_url() {
        let a = load_args(&["--url", "http://a:1"]);
        assert!(a.viewer_url.is_empty() && a.node_pid.is_empty());
        assert!((0..4).all(|i| a.viewer_url(i) == "http://a:1"));
        let a = load_args(&["--viewer-url", "http://a:1,http://b:2", "--node-pid", "7,9"]);
        let urls: Vec<&str> = (0..3).map(|i| a.viewer_url(i)).collect();
        assert_eq!(urls, ["http://a:1", "http://b:2", "http://a:1"]);
        assert_eq!(a.node_pid, [7, 9]);
        let argv = ["parley-load", "broadcast", "--node-pid", "me"];
        assert!(Cli::try_parse_from(argv).is_err());
    }

    #[test]
    fn rooms_are_one_unless_asked() {
        assert_eq!(load_args(&[]).rooms, 1);
        assert_eq!(load_args(&["--rooms", "4"]).rooms, 4);
        for bad in ["0", "-1", "two"] {
            let argv = ["parley-load", "broadcast", "--rooms", bad];
            assert!(Cli::try_parse_from(argv).is_err(), "{bad}");
        }
    }

    #[test]
    fn bad_limits_are_rejected() {
        for bad in [
            ["--viewer-max-temporal-layer", "3"],
            ["--viewer-max-temporal-layer", "all"],
            ["--viewer-max-width", "-1"],
            ["--viewer-max-width", "wide"],
        ] {
            let mut argv = vec!["parley-load", "broadcast"];
            argv.extend_from_slice(&bad);
            assert!(Cli::try_parse_from(argv).is_err(), "{bad:?}");
        }
    }
}
