//! Command-line interface: scenarios (`broadcast`, `meeting`, `audio`) and `ceiling`.
//! Every option is documented here; `parley-load help <command>` prints it.

use crate::ceiling::Mode;
use crate::payload::VideoCodec;
use clap::{Args, Parser, Subcommand};
use std::net::IpAddr;
use std::path::PathBuf;

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
    /// Room name (meeting and audio steps use {room}-{step}).
    #[arg(long, default_value = "bench")]
    pub room: String,
    /// Bearer token for POST and DELETE.
    #[arg(long)]
    pub token: Option<String>,
    /// Local server process: CPU from /proc/PID/task/*/schedstat, RSS from /proc/PID/status.
    #[arg(long)]
    pub server_pid: Option<u32>,
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
