//! Runs a scenario step by step: join the peers of every room (POST offers, hand the
//! negotiated peers to the media threads), wait for every viewer's first keyframe, measure a
//! steady-state window, tear down with DELETE, then measure the bare-forwarder ceiling with
//! the step's fan-out and packet size. What joins where is [`specs`]. Progress goes to
//! stderr; results to [`crate::report`].
//!
//! A viewer over ICE-TCP (`--tcp-share`) offers an active TCP candidate, and once the answer
//! is in, connects to the answer's first passive TCP candidate; the media thread takes the
//! peer with that connection instead of a UDP socket.

mod specs;

use crate::ceiling;
use crate::cli::LoadArgs;
use crate::engine::{DownlinkPlan, Engine, Job, Snapshot, Socket, ViewerSnap};
use crate::net::bind_udp;
use crate::payload::VideoCodec;
use crate::peer::{certificate, ClientPeer, PeerState, Role, Transport};
use crate::procfs::{
    group_cpu, machine_busy_secs, sample_pid, ProcSample, ServerProbe, ThreadCpu, UdpCounters,
};
use crate::report::{
    self, downlink_report, layer_reports, node_reports, room_reports, sample_nodes,
    transport_report, Millis, Report, ServerReport, StepReport, ThreadsReport,
};
use crate::signaling::{delete, endpoint_url, post_offer, request_layers, Endpoint};
use crate::stats::{Distribution, SeqCounters};
use anyhow::{anyhow, Context, Result};
use reqwest::Url;
use rtc::peer_connection::certificate::RTCCertificate;
use specs::{run_publisher, step_specs, JoinSpec};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::Semaphore;
use tokio::task::JoinSet;

/// Which scenario, with its step list.
#[derive(Clone, Debug)]
pub enum Scenario {
    /// One publisher, N viewers per step.
    Broadcast { viewers: Vec<usize> },
    /// N participants (publish video + audio, play K slots) per step.
    Meeting {
        participants: Vec<usize>,
        slots: usize,
    },
    /// N audio-only participants (publish Opus, play K audio slots) per step.
    Audio {
        participants: Vec<usize>,
        slots: usize,
    },
}

impl Scenario {
    fn name(&self) -> &'static str {
        match self {
            Scenario::Broadcast { .. } => "broadcast",
            Scenario::Meeting { .. } => "meeting",
            Scenario::Audio { .. } => "audio",
        }
    }

    fn steps(&self) -> &[usize] {
        match self {
            Scenario::Broadcast { viewers } => viewers,
            Scenario::Meeting { participants, .. } | Scenario::Audio { participants, .. } => {
                participants
            }
        }
    }
}

/// One joined session: our id for the peer and the server's session URL.
struct Session {
    id: u64,
    /// Which of the step's rooms it joined.
    room_index: usize,
    location: Url,
    /// POSTs answered 429/503 before the one that succeeded.
    retries: u32,
    /// Layer requests sent, and why one failed (a viewer with limits only).
    layer: Option<Result<usize, String>>,
}

struct Ctx {
    args: LoadArgs,
    engine: Engine,
    http: reqwest::Client,
    certificate: RTCCertificate,
    probe: ServerProbe,
    next_id: AtomicU64,
}

fn progress(msg: &str) {
    eprintln!("[parley-load] {msg}");
}

async fn join(ctx: Arc<Ctx>, spec: JoinSpec) -> Result<Session> {
    let bind_ip = ctx.args.bind_ip;
    let udp = match spec.transport {
        Transport::Udp => Some(bind_udp(bind_ip, ctx.args.rcvbuf)?),
        Transport::Tcp => None,
    };
    // Over TCP the candidate has the IP only (port 9); the connection's port comes later.
    let local = match &udp {
        Some(socket) => socket.local_addr()?,
        None => SocketAddr::new(bind_ip, 9),
    };
    let (mut peer, offer) = ClientPeer::new(
        &ctx.certificate,
        spec.role,
        spec.transport,
        local,
        Instant::now(),
    )?;
    let url = endpoint_url(
        &spec.url,
        spec.endpoint,
        &spec.room,
        spec.participant.as_deref(),
    )?;
    let answer = post_offer(&ctx.http, &url, ctx.args.token.as_deref(), offer).await?;
    let posted_ns = answer.posted_ns;
    let mut session = Session {
        id: ctx.next_id.fetch_add(1, Ordering::Relaxed),
        room_index: spec.room_index,
        location: answer.location,
        retries: answer.retries,
        layer: None,
    };
    let passive = crate::tcp::passive_candidate(&answer.sdp, bind_ip);
    let socket = match peer.apply_answer(answer.sdp, Instant::now()) {
        Ok(()) => match udp {
            Some(socket) => Ok(Socket::Udp(socket)),
            None => connect_tcp(&mut peer, bind_ip, passive).await,
        },
        Err(e) => Err(e),
    };
    let socket = match socket {
        Ok(socket) => socket,
        Err(e) => {
            let _ = delete(&ctx.http, &session.location, ctx.args.token.as_deref()).await;
            return Err(e);
        }
    };
    let job = match (spec.plan, spec.role) {
        (Some(plan), _) => Job::Publish(plan),
        (None, Role::Viewer { video, .. }) => Job::View {
            posted_ns,
            expects_video: video > 0,
            count_layers: ctx.args.simulcast,
            downlink: DownlinkPlan {
                cap: spec.capped.then(|| ctx.args.cap()),
                transport_cc_id: peer.transport_cc_id(),
                feedback_ms: ctx.args.twcc_interval_ms,
            },
        },
        (None, Role::Publisher { .. }) => return Err(anyhow!("a publisher needs a plan")),
    };
    let mids = peer.video_mids().to_vec();
    ctx.engine.add(session.id, peer, socket, job);
    if let Some(limits) = spec.limits {
        let token = ctx.args.token.as_deref();
        let layer_url = answer.layer_url.as_ref().ok_or(&url);
        session.layer = Some(request_layers(&ctx.http, layer_url, token, &mids, &limits).await);
    }
    Ok(session)
}

/// Connects a TCP viewer to the answer's passive candidate and tells the peer the
/// connection's local address.
async fn connect_tcp(
    peer: &mut ClientPeer,
    bind_ip: std::net::IpAddr,
    passive: Option<SocketAddr>,
) -> Result<Socket> {
    let to = passive.ok_or_else(|| anyhow!("the server offered no ICE-TCP candidate"))?;
    let stream = crate::tcp::connect(bind_ip, to).await?;
    peer.set_local_addr(stream.local_addr()?);
    Ok(Socket::Tcp(stream))
}

/// Joins all `specs`, `join_concurrency` at a time. Returns the sessions and the errors.
async fn join_all(ctx: &Arc<Ctx>, specs: Vec<JoinSpec>) -> (Vec<Session>, Vec<String>) {
    let limit = Arc::new(Semaphore::new(ctx.args.join_concurrency.max(1)));
    let mut set = JoinSet::new();
    for spec in specs {
        let (ctx, limit) = (Arc::clone(ctx), Arc::clone(&limit));
        set.spawn(async move {
            let _permit = limit.acquire_owned().await;
            join(ctx, spec).await
        });
    }
    let (mut ok, mut errors) = (Vec::new(), Vec::new());
    while let Some(r) = set.join_next().await {
        match r {
            Ok(Ok(s)) => ok.push(s),
            Ok(Err(e)) => errors.push(format!("{e:#}")),
            Err(e) => errors.push(format!("join task: {e}")),
        }
    }
    (ok, errors)
}

/// DELETEs the sessions and drops their peers.
async fn leave_all(ctx: &Arc<Ctx>, sessions: Vec<Session>) -> usize {
    let limit = Arc::new(Semaphore::new(ctx.args.join_concurrency.max(1)));
    let mut set = JoinSet::new();
    for s in sessions {
        let (ctx, limit) = (Arc::clone(ctx), Arc::clone(&limit));
        set.spawn(async move {
            let _permit = limit.acquire_owned().await;
            let status = delete(&ctx.http, &s.location, ctx.args.token.as_deref()).await;
            ctx.engine.remove(s.id);
            matches!(status, Ok(st) if st.is_success())
        });
    }
    let mut failed = 0;
    while let Some(r) = set.join_next().await {
        if !matches!(r, Ok(true)) {
            failed += 1;
        }
    }
    failed
}

/// Options that cannot work together, caught before anything joins.
fn check(scenario: &Scenario, args: &LoadArgs) -> Result<()> {
    let video = !matches!(scenario, Scenario::Audio { .. });
    if args.simulcast && !video {
        return Err(anyhow!("--simulcast needs video: use broadcast or meeting"));
    }
    if args.simulcast && args.codec != VideoCodec::Vp8 {
        return Err(anyhow!(
            "--simulcast sends VP8 temporal layers: use --codec vp8"
        ));
    }
    if args.limits_viewers() && !video {
        return Err(anyhow!(
            "--viewer-max-* needs video viewers: use broadcast or meeting"
        ));
    }
    if args.tcp_share > 0.0 && args.capped_share > 0.0 {
        return Err(anyhow!(
            "--tcp-share and --capped-share cannot be combined: the capped link models a UDP \
             downlink (it drops datagrams, which TCP would retransmit); run them separately"
        ));
    }
    for url in &args.viewer_url {
        endpoint_url(url, Endpoint::Whep, &args.room, None).context("--viewer-url")?;
    }
    Ok(())
}

/// Waits until every publisher in `ids` is connected.
async fn wait_publishers(ctx: &Ctx, ids: &[u64], timeout: Duration) -> Result<()> {
    let start = Instant::now();
    loop {
        let snap = ctx.engine.snapshot(false).await;
        let up = ids
            .iter()
            .filter(|id| {
                snap.publishers
                    .get(id)
                    .is_some_and(|p| p.state == PeerState::Connected)
            })
            .count();
        if up == ids.len() {
            return Ok(());
        }
        if start.elapsed() > timeout {
            return Err(anyhow!(
                "{} of {} publishers connected after {timeout:?}",
                up,
                ids.len()
            ));
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Waits until every viewer in `ids` has joined (first keyframe), failed, or the timeout.
async fn wait_joined(ctx: &Ctx, ids: &[u64]) -> Snapshot {
    let start = Instant::now();
    let mut last_report = Instant::now();
    loop {
        let snap = ctx.engine.snapshot(false).await;
        let (mut joined, mut failed, mut connected, mut silent, mut mute) = (0, 0, 0, 0, 0);
        for id in ids {
            let Some(v) = snap.viewers.get(id) else {
                continue;
            };
            if v.join_ms.is_some() {
                joined += 1;
            } else if v.state == PeerState::Failed {
                failed += 1;
            }
            if v.state == PeerState::Connected {
                connected += 1;
            }
            if v.rx_datagrams == 0 {
                silent += 1;
            }
            if v.tx_datagrams == 0 {
                mute += 1;
            }
        }
        let done = joined + failed == ids.len();
        if done || start.elapsed().as_secs_f64() > ctx.args.join_timeout_secs {
            progress(&format!(
                "  {joined}/{} viewers got a keyframe, {failed} failed ({:.1} s)",
                ids.len(),
                start.elapsed().as_secs_f64()
            ));
            if !done {
                progress(&format!(
                    "  of the others: {} DTLS-connected, {silent} never heard from the server, \
                     {mute} never sent anything",
                    connected - joined.min(connected)
                ));
            }
            return snap;
        }
        if last_report.elapsed() > Duration::from_secs(2) {
            progress(&format!("  waiting for keyframes: {joined}/{}", ids.len()));
            last_report = Instant::now();
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// Runs a whole scenario and returns the report.
pub async fn run(scenario: Scenario, args: LoadArgs) -> Result<Report> {
    check(&scenario, &args)?;
    let probe = match (args.server_pid, &args.server_metrics) {
        (Some(pid), _) => ServerProbe::Pid(pid),
        (None, Some(url)) => ServerProbe::Metrics(url.clone()),
        (None, None) => ServerProbe::None,
    };
    let ctx = Arc::new(Ctx {
        engine: Engine::start(
            args.threads,
            Duration::from_micros(args.batch_us),
            args.delay_sample,
        )?,
        http: reqwest::Client::new(),
        certificate: certificate()?,
        probe,
        next_id: AtomicU64::new(1),
        args,
    });
    let mut report = Report::new(scenario.name(), &ctx.args);
    // Broadcast in one room: one publisher for the whole run.
    let mut broadcaster = Vec::new();
    if let Some(spec) = run_publisher(&scenario, &ctx.args) {
        let (s, errors) = join_all(&ctx, vec![spec]).await;
        if let Some(e) = errors.first() {
            return Err(anyhow!("the publisher could not join: {e}"));
        }
        let ids: Vec<u64> = s.iter().map(|s| s.id).collect();
        wait_publishers(&ctx, &ids, Duration::from_secs(15)).await?;
        progress("publisher connected");
        broadcaster = s;
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    let baseline = ctx.probe.sample(&ctx.http).await.ok().flatten();
    for (i, &n) in scenario.steps().iter().enumerate() {
        let rooms = match ctx.args.rooms {
            1 => String::new(),
            r => format!(" in each of {r} rooms"),
        };
        progress(&format!(
            "step {}/{}: {} x{n}{rooms}",
            i + 1,
            scenario.steps().len(),
            scenario.name()
        ));
        match step(&ctx, &scenario, i, n, baseline).await {
            Ok(r) => {
                report::print_step(&r);
                report.steps.push(r);
            }
            Err(e) => {
                progress(&format!("step {} failed: {e:#}", i + 1));
                report.errors.push(format!("step {}: {e:#}", i + 1));
            }
        }
        if let Some(path) = &ctx.args.json {
            report.write_json(path)?;
        }
    }
    leave_all(&ctx, broadcaster).await;
    // Every task holding the context has ended by now; the report is complete either way,
    // so a context still shared only skips the orderly stop of the media threads.
    match Arc::into_inner(ctx) {
        Some(ctx) => ctx.engine.stop(),
        None => progress("warning: peers still in use at the end; media threads not stopped"),
    }
    Ok(report)
}

async fn step(
    ctx: &Arc<Ctx>,
    scenario: &Scenario,
    index: usize,
    n: usize,
    baseline: Option<ProcSample>,
) -> Result<StepReport> {
    let args = &ctx.args;
    let specs = step_specs(scenario, args, index, n);
    let mut errors = Vec::new();
    let (publishers, e) = join_all(ctx, specs.publishers).await;
    errors.extend(e);
    let pub_ids: Vec<u64> = publishers.iter().map(|s| s.id).collect();
    if !pub_ids.is_empty() {
        if let Err(e) = wait_publishers(ctx, &pub_ids, Duration::from_secs(30)).await {
            errors.push(format!("{e:#}"));
        }
    }
    let joining = Instant::now();
    let (viewers, e) = join_all(ctx, specs.viewers).await;
    errors.extend(e);
    progress(&format!(
        "  {} viewers POSTed in {:.1} s, {} errors",
        viewers.len(),
        joining.elapsed().as_secs_f64(),
        errors.len()
    ));
    for e in errors.iter().take(3) {
        progress(&format!("  error: {e}"));
    }
    let post_retries: u32 = viewers
        .iter()
        .chain(publishers.iter())
        .map(|s| s.retries)
        .sum();
    if post_retries > 0 {
        progress(&format!(
            "  the server answered 429/503 {post_retries} times (retried after Retry-After)"
        ));
    }
    let (layer_requests, layer_errors) = layer_outcomes(&viewers);
    if layer_requests + layer_errors.len() > 0 {
        progress(&format!(
            "  layer requests: {layer_requests} answered 204, {} viewers failed",
            layer_errors.len()
        ));
        if let Some(e) = layer_errors.first() {
            progress(&format!("  error: {e}"));
        }
    }
    let layer_request_failures = layer_errors.len();
    if let Some(first) = layer_errors.first() {
        let more = layer_errors.len() - 1;
        errors.push(match more {
            0 => first.clone(),
            _ => format!("{first} (and {more} more viewers)"),
        });
    }
    let viewer_ids: Vec<u64> = viewers.iter().map(|s| s.id).collect();
    let mut room_ids = vec![Vec::new(); specs.rooms.len()];
    for s in &viewers {
        room_ids[s.room_index].push(s.id);
    }
    let joined = wait_joined(ctx, &viewer_ids).await;
    tokio::time::sleep(Duration::from_secs_f64(args.settle_secs)).await;

    // The measurement window.
    let udp0 = UdpCounters::read();
    let self0 = sample_pid("self")?;
    let busy0 = machine_busy_secs();
    let server0 = probe(ctx, &mut errors).await;
    let threads0 = probe_threads(ctx, &mut errors);
    let nodes0 = sample_nodes(&args.node_pid, &mut errors);
    ctx.engine.start_window();
    let snap0 = ctx.engine.snapshot(false).await;
    let t0 = Instant::now();
    let window = Duration::from_secs_f64(args.measure_secs.max(0.5));
    while t0.elapsed() < window {
        let left = window.saturating_sub(t0.elapsed());
        tokio::time::sleep(left.min(Duration::from_secs(2))).await;
        let s = ctx.engine.snapshot(false).await;
        let received = received_since(&snap0, &s, &viewer_ids).received;
        progress(&format!(
            "  measuring {:.0}/{:.0} s: {:.0} pkt/s forwarded",
            t0.elapsed().as_secs_f64(),
            window.as_secs_f64(),
            received as f64 / t0.elapsed().as_secs_f64()
        ));
    }
    let snap1 = ctx.engine.snapshot(true).await;
    let secs = t0.elapsed().as_secs_f64();
    let server1 = probe(ctx, &mut errors).await;
    let threads1 = probe_threads(ctx, &mut errors);
    let nodes1 = sample_nodes(&args.node_pid, &mut errors);
    let self1 = sample_pid("self")?;
    let busy1 = machine_busy_secs();
    let udp = UdpCounters::read().since(&udp0);

    let counters = received_since(&snap0, &snap1, &viewer_ids);
    let viewers_with_loss = viewer_ids
        .iter()
        .filter(|id| received_since(&snap0, &snap1, &[**id]).lost() > 0)
        .count();
    let bytes: u64 = viewer_ids
        .iter()
        .map(|id| {
            let b1 = snap1.viewers.get(id).map_or(0, |v| v.bytes);
            let b0 = snap0.viewers.get(id).map_or(0, |v| v.bytes);
            b1.saturating_sub(b0)
        })
        .sum();
    let socket_drops: u64 = viewer_ids
        .iter()
        .map(|id| {
            let d1 = snap1.viewers.get(id).map_or(0, |v| v.socket_drops);
            let d0 = snap0.viewers.get(id).map_or(0, |v| v.socket_drops);
            u64::from(d1.saturating_sub(d0))
        })
        .sum();
    let published: u64 = snap1
        .publishers
        .iter()
        .map(|(id, p)| {
            p.packets
                .saturating_sub(snap0.publishers.get(id).map_or(0, |p0| p0.packets))
        })
        .sum();
    let requests: u64 = snap1.publishers.values().map(|p| p.requests).sum();
    let layers = if args.simulcast {
        layer_reports(&snap0, &snap1, &viewer_ids, secs)
    } else {
        Vec::new()
    };
    let downlink = (!viewer_ids.is_empty())
        .then(|| downlink_report(&snap0, &snap1, &viewer_ids, secs, args.cap()));
    let keyframes: u64 = snap1
        .publishers
        .iter()
        .map(|(id, p)| {
            p.keyframes
                .saturating_sub(snap0.publishers.get(id).map_or(0, |p0| p0.keyframes))
        })
        .sum();
    let mut delays = snap1.udp_delays_us.clone();
    delays.extend_from_slice(&snap1.tcp_delays_us);
    let delay = Distribution::of(&mut delays);
    let transport = transport_report(&joined, &snap0, &snap1, &viewer_ids);
    // Join-phase times over this step's viewers, as whole milliseconds.
    let join_times = |of: fn(&ViewerSnap) -> Option<f64>| {
        let mut ms: Vec<u32> = viewer_ids
            .iter()
            .filter_map(|id| of(joined.viewers.get(id)?).map(|ms| ms.round() as u32))
            .collect();
        Distribution::of(&mut ms)
    };
    let join = join_times(|v| v.join_ms);
    let media = join_times(|v| v.media_ms);
    let forwarded_pps = counters.received as f64 / secs;
    let fanout = if published > 0 {
        counters.received as f64 / published as f64
    } else {
        0.0
    };
    let avg_packet = if counters.received > 0 {
        bytes as f64 / counters.received as f64
    } else {
        0.0
    };
    let server = match (server0, server1) {
        (Some(a), Some(b)) => {
            let cpu = b.cpu_secs - a.cpu_secs;
            let peers = n * specs.rooms.len();
            let per_viewer = baseline.map(|base| {
                (b.rss_bytes as f64 - base.rss_bytes as f64) / 1024.0 / peers.max(1) as f64
            });
            Some(ServerReport {
                cpu_secs: cpu,
                cpu_cores: cpu / secs,
                us_per_packet: (counters.received > 0)
                    .then(|| cpu * 1e6 / counters.received as f64),
                rss_mib: b.rss_bytes as f64 / 1048576.0,
                rss_per_peer_kib: per_viewer,
            })
        }
        _ => None,
    };
    let server_threads = threads0
        .zip(threads1)
        .map(|(a, b)| ThreadsReport::new(group_cpu(&a, &b, secs), counters.received));
    let rooms = room_reports(&snap0, &snap1, &specs.rooms, &room_ids, secs);
    let nodes = node_reports(&args.node_pid, &nodes0, &nodes1, secs);

    let failed_deletes = leave_all(ctx, viewers).await + leave_all(ctx, publishers).await;
    if failed_deletes > 0 {
        errors.push(format!("{failed_deletes} DELETEs failed"));
    }
    tokio::time::sleep(teardown_pause(args.rooms)).await;

    let mut r = StepReport {
        scenario: scenario.name().to_owned(),
        step: index + 1,
        peers: n,
        rooms,
        viewers: viewer_ids.len(),
        publishers: snap1.publishers.len(),
        joined: join.count,
        errors,
        window_secs: secs,
        forwarded_pps,
        published_pps: published as f64 / secs,
        fanout,
        avg_packet_bytes: avg_packet,
        counters,
        viewers_with_loss,
        loss_pct: if counters.expected > 0 {
            counters.lost() as f64 * 100.0 / counters.expected as f64
        } else {
            0.0
        },
        delay_ms: Millis::from_us(&delay),
        join_ms: join,
        media_ms: media,
        keyframe_requests: requests,
        keyframes_sent: keyframes,
        post_retries,
        layer_requests,
        layer_request_failures,
        layers,
        downlink,
        transport,
        server,
        server_threads,
        nodes,
        generator_cores: (self1.cpu_secs - self0.cpu_secs) / secs,
        machine_cores: busy0.zip(busy1).map(|(a, b)| (b - a) / secs),
        media_thread_cores: (snap1.thread_cpu_secs - snap0.thread_cpu_secs) / secs,
        generator_socket_drops: socket_drops,
        generator_send_errors: snap1.send_errors.saturating_sub(snap0.send_errors),
        udp,
        ceiling: Vec::new(),
    };
    if args.ceiling_secs > 0.0 && counters.received > 0 {
        let copies = fanout.round().max(1.0) as usize;
        // The SRTP datagram: RTP header + payload + GCM tag.
        let size = (avg_packet.round() as usize + 12 + 16).clamp(48, 1472);
        for &mode in &args.ceiling.modes {
            let spec = ceiling::Spec {
                mode,
                copies,
                size,
                secs: args.ceiling_secs,
                gso_segments: args.ceiling.gso_segments,
                ip: args.bind_ip,
            };
            progress(&format!("  ceiling {mode:?}: {copies} copies of {size} B"));
            match tokio::task::spawn_blocking(move || ceiling::measure(spec)).await {
                Ok(Ok(o)) => r.ceiling.push(o),
                Ok(Err(e)) => r.errors.push(format!("ceiling {mode:?}: {e:#}")),
                Err(e) => r.errors.push(format!("ceiling {mode:?}: {e}")),
            }
        }
    }
    Ok(r)
}

/// The pause after a step's DELETEs. With several rooms it is long enough for a server that
/// places new rooms by the load its shards measure (Parley publishes each shard's forwarded
/// packets a second over windows of half a second or more) to see the step's rooms gone
/// before the next step's rooms are placed.
fn teardown_pause(rooms: u16) -> Duration {
    match rooms {
        1 => Duration::from_millis(500),
        _ => Duration::from_secs(2),
    }
}

/// Reads the server's CPU and RSS; a failure is recorded, not fatal.
async fn probe(ctx: &Ctx, errors: &mut Vec<String>) -> Option<ProcSample> {
    match ctx.probe.sample(&ctx.http).await {
        Ok(s) => s,
        Err(e) => {
            errors.push(format!("server probe: {e:#}"));
            None
        }
    }
}

/// Reads the CPU of each of the server's threads (a local server only); a failure is
/// recorded, not fatal.
fn probe_threads(ctx: &Ctx, errors: &mut Vec<String>) -> Option<Vec<ThreadCpu>> {
    match ctx.probe.threads()? {
        Ok(threads) => Some(threads),
        Err(e) => {
            errors.push(format!("server threads: {e:#}"));
            None
        }
    }
}

/// Continuity counters of `ids` between two snapshots.
fn received_since(a: &Snapshot, b: &Snapshot, ids: &[u64]) -> SeqCounters {
    let mut total = SeqCounters::default();
    for id in ids {
        if let Some(v1) = b.viewers.get(id) {
            let zero = SeqCounters::default();
            let v0 = a.viewers.get(id).map_or(&zero, |v| &v.counters);
            total.add(&v1.counters.since(v0));
        }
    }
    total
}

/// Layer requests that got their 204s, and one line per viewer whose request failed.
fn layer_outcomes(viewers: &[Session]) -> (usize, Vec<String>) {
    let (mut ok, mut errors) = (0, Vec::new());
    for s in viewers {
        match &s.layer {
            Some(Ok(n)) => ok += n,
            Some(Err(e)) => errors.push(e.clone()),
            None => {}
        }
    }
    (ok, errors)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cli::{Cli, Command};
    use clap::Parser;

    fn broadcast(extra: &[&str]) -> (Scenario, LoadArgs) {
        let mut argv = vec!["parley-load", "broadcast"];
        argv.extend_from_slice(extra);
        match Cli::try_parse_from(argv).expect("parses").command {
            Command::Broadcast { viewers, load } => (Scenario::Broadcast { viewers }, load),
            other => panic!("not a broadcast: {other:?}"),
        }
    }

    #[test]
    fn tcp_viewers_and_capped_links_do_not_mix() {
        let (scenario, args) = broadcast(&["--tcp-share", "0.5", "--capped-share", "0.25"]);
        let e = check(&scenario, &args).expect_err("rejected");
        let msg = format!("{e}");
        assert!(
            msg.contains("--tcp-share") && msg.contains("--capped-share"),
            "{msg}"
        );
        for ok in [
            &["--tcp-share", "0.5"][..],
            &["--capped-share", "0.25"],
            &["--tcp-share", "0", "--capped-share", "0.25"],
            &["--tcp-share", "1", "--capped-share", "0"],
        ] {
            let (scenario, args) = broadcast(ok);
            assert!(check(&scenario, &args).is_ok(), "{ok:?}");
        }
    }

    #[test]
    fn viewer_urls_are_checked_before_anything_joins() {
        let (scenario, args) = broadcast(&["--viewer-url", "http://a:1,http://b:2/api"]);
        assert!(check(&scenario, &args).is_ok());
        let (scenario, args) = broadcast(&["--viewer-url", "http://a:1,b:2"]);
        let e = check(&scenario, &args).expect_err("rejected");
        assert!(format!("{e:#}").contains("--viewer-url"), "{e:#}");
    }
}
