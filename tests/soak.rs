//! Join/leave soak against the `parley` binary: `PARLEY_SOAK_CYCLES` cycles (60 by default;
//! 1000 for the full run) of publish, play, media until the viewer has a packet, and DELETE
//! of both sessions. After a warm-up of 10 cycles the server process's resident memory,
//! open file descriptors, threads, live sessions and (if the server exports it) alive
//! runtime tasks are measured, and measured again at the end: sessions must be back to 0,
//! fds and threads where they were (±2), tasks where they were (±5), and memory may grow by
//! at most [`RSS_BASE_KIB`] + [`RSS_PER_CYCLE_KIB`] per cycle.
//!
//! The test process's own fds and threads are reported too: they show whether the webrtc-rs
//! client peers (two per cycle) are released, which webrtc-rs 0.21.0 did not do (#906).

mod common;

use common::hostile_call::{metrics, series, sum, PROBE};
use common::{play, publish, Kind, PlayOptions, PublishOptions};
use std::io::BufRead;
use std::process::Child;
use std::time::{Duration, Instant};

const WARM_UP: usize = 10;
/// Resident-memory growth allowed whatever the cycle count (allocator arenas and caches
/// that fill once), and per cycle on top. Measured (debug build, after the warm-up): +164
/// KiB over 60 cycles, +304 KiB over 1000, so the growth is a one-off, not per cycle. A
/// live publish + play pair costs about 326 KiB, so a leaked pair every cycle would add
/// 326 KiB per cycle; 4 KiB per cycle catches leaking a eightieth of that.
const RSS_BASE_KIB: i64 = 4 * 1024;
const RSS_PER_CYCLE_KIB: i64 = 4;

/// The server child; killed and reaped when dropped (a failed test leaves nothing behind).
struct Server {
    child: Child,
    base: String,
    stdout: Option<std::thread::JoinHandle<()>>,
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        if let Some(reader) = self.stdout.take() {
            let _ = reader.join();
        }
    }
}

/// Starts the binary on ephemeral ports, reads its address from the first stdout line and
/// keeps draining stdout on a thread (a full pipe would block the server's logging).
fn start_server() -> Server {
    let (child, addr, mut stdout) =
        common::binary::spawn(&["--rate-limit-per-ip", "0"], &[("RUST_LOG", "warn")]);
    let reader = std::thread::spawn(move || {
        let mut line = String::new();
        while stdout.read_line(&mut line).is_ok_and(|n| n > 0) {
            line.clear();
        }
    });
    Server {
        child,
        base: format!("http://{addr}"),
        stdout: Some(reader),
    }
}

/// What is measured of a process.
#[derive(Clone, Copy, Debug, PartialEq)]
struct Figures {
    rss_kib: i64,
    fds: i64,
    threads: i64,
    /// `parley_sessions` (all kinds); 0 for the test process.
    sessions: i64,
    /// `parley_runtime_alive_tasks`, if exported.
    tasks: Option<i64>,
}

/// VmRSS (KiB) and Threads from /proc/PID/status, and the entries of /proc/PID/fd.
fn proc_figures(pid: u32) -> (i64, i64, i64) {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("status");
    let field = |name: &str| {
        status
            .lines()
            .find_map(|l| l.strip_prefix(name))
            .and_then(|v| v.split_whitespace().next())
            .and_then(|v| v.parse::<i64>().ok())
            .unwrap_or_else(|| panic!("no {name} in /proc/{pid}/status"))
    };
    let fds = std::fs::read_dir(format!("/proc/{pid}/fd"))
        .expect("fd directory")
        .count() as i64;
    (field("VmRSS:"), fds, field("Threads:"))
}

async fn server_figures(server: &Server) -> Figures {
    let text = metrics(&server.base).await;
    let (rss_kib, fds, threads) = proc_figures(server.child.id());
    Figures {
        rss_kib,
        fds,
        threads,
        sessions: sum(&text, "parley_sessions") as i64,
        tasks: series(&text, "parley_runtime_alive_tasks").map(|t| t as i64),
    }
}

/// Waits until the server has no session and its fds, threads and tasks read the same twice
/// in a row 250 ms apart (closed connections and finished tasks are gone), for at most
/// [`PROBE`]; returns the last reading.
async fn settled(server: &Server) -> Figures {
    let deadline = Instant::now() + PROBE;
    let mut last = server_figures(server).await;
    loop {
        tokio::time::sleep(Duration::from_millis(250)).await;
        let now = server_figures(server).await;
        let same = (now.fds, now.threads, now.tasks) == (last.fds, last.threads, last.tasks);
        if now.sessions == 0 && same {
            return now;
        }
        assert!(
            Instant::now() < deadline,
            "the server did not settle: {last:?} then {now:?}"
        );
        last = now;
    }
}

/// One join/leave cycle: publish, play, send paced frames until the viewer has one, DELETE
/// both sessions (each must answer 200).
async fn cycle(base: &str, n: usize) {
    let room = "soak";
    let publisher = publish(base, room, PublishOptions::vp8())
        .await
        .unwrap_or_else(|e| panic!("cycle {n}: publish: {e}"));
    let viewer = play(base, room, PlayOptions::default())
        .await
        .unwrap_or_else(|e| panic!("cycle {n}: play: {e}"));
    let sender = async {
        let mut pace = tokio::time::interval(Duration::from_millis(20));
        for frame in 0u32.. {
            pace.tick().await;
            let payload = common::vp8_keyframe_payload(frame);
            let _ = publisher.send_video(&payload, true, frame * 1800).await;
        }
    };
    let received = viewer.wait_for("a video packet", PROBE, |r| {
        r.iter().any(|p| p.kind == Kind::Video)
    });
    tokio::select! {
        got = received => {
            got.unwrap_or_else(|e| panic!("cycle {n}: {e}"));
        }
        _ = sender => unreachable!("the sender never ends"),
    }
    viewer.close().await;
    publisher.close().await;
}

fn row(what: &str, before: i64, after: i64, cycles: usize) {
    let delta = after - before;
    println!(
        "{what:<26} {before:>10} {after:>10} {delta:>+9} {:>+11.2}",
        delta as f64 / cycles as f64
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn join_leave_cycles_leave_no_trace_in_the_server() {
    let cycles: usize = std::env::var("PARLEY_SOAK_CYCLES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(60);
    let server = start_server();
    let me = std::process::id();
    for n in 0..WARM_UP {
        cycle(&server.base, n).await;
    }
    let before = settled(&server).await;
    let (_, client_fds_before, client_threads_before) = proc_figures(me);
    let started = Instant::now();
    for n in 0..cycles {
        cycle(&server.base, WARM_UP + n).await;
    }
    let took = started.elapsed();
    let after = settled(&server).await;
    let (_, client_fds_after, client_threads_after) = proc_figures(me);

    println!(
        "{cycles} join/leave cycles after {WARM_UP} of warm-up, in {took:.1?} ({:.0} ms per cycle)",
        took.as_secs_f64() * 1000.0 / cycles as f64
    );
    println!(
        "{:<26} {:>10} {:>10} {:>9} {:>11}",
        "server process", "before", "after", "delta", "per cycle"
    );
    row("VmRSS (KiB)", before.rss_kib, after.rss_kib, cycles);
    row("open fds", before.fds, after.fds, cycles);
    row("threads", before.threads, after.threads, cycles);
    row("sessions", before.sessions, after.sessions, cycles);
    match (before.tasks, after.tasks) {
        (Some(b), Some(a)) => row("alive runtime tasks", b, a, cycles),
        _ => println!(
            "alive runtime tasks        (parley_runtime_alive_tasks not exported: not checked)"
        ),
    }
    println!("test process (webrtc-rs clients)");
    row("open fds", client_fds_before, client_fds_after, cycles);
    row(
        "threads",
        client_threads_before,
        client_threads_after,
        cycles,
    );

    assert_eq!(after.sessions, 0, "every session ended");
    assert!(
        (after.fds - before.fds).abs() <= 2,
        "server fds {} -> {}",
        before.fds,
        after.fds
    );
    assert!(
        (after.threads - before.threads).abs() <= 2,
        "server threads {} -> {}",
        before.threads,
        after.threads
    );
    if let (Some(b), Some(a)) = (before.tasks, after.tasks) {
        assert!((a - b).abs() <= 5, "alive runtime tasks {b} -> {a}");
    }
    let allowed = RSS_BASE_KIB + RSS_PER_CYCLE_KIB * cycles as i64;
    assert!(
        after.rss_kib - before.rss_kib <= allowed,
        "server RSS grew {} KiB over {cycles} cycles (allowed {allowed} KiB)",
        after.rss_kib - before.rss_kib
    );
    assert!(
        (client_fds_after - client_fds_before).abs() <= 4,
        "the test's own fds {client_fds_before} -> {client_fds_after}: client peers leak"
    );
}
