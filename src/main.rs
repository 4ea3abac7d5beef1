//! `parley`: parse the configuration, start the server, drain and stop on SIGTERM or Ctrl-C.

use clap::Parser;
use parley::config::Config;
use std::time::Duration;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into()),
        )
        .init();
    let config = Config::parse();
    let drain = Duration::from_secs(config.drain_timeout_secs);
    // Listen for signals before announcing anything, so an early SIGTERM is handled too.
    let mut signals = Signals::new()?;
    let server = parley::start(config).await?;
    let port = server.http_addr.port();
    println!(
        "Parley is serving HTTP on {} and media on UDP {}",
        server.http_addr, server.media_addr
    );
    println!("  advertised media addresses: {:?}", server.advertised);
    match server.shards() {
        (1, _) => println!("  media shards  : 1"),
        (n, None) => println!("  media shards  : {n}, the kernel steers each client to its shard"),
        (n, Some(why)) => println!(
            "  media shards  : {n}, datagrams on the wrong shard are handed over (no kernel steering: {why})"
        ),
    }
    println!("  web page      : http://HOST:{port}/");
    println!("  publish (WHIP): http://HOST:{port}/whip/ROOM");
    println!("  play    (WHEP): http://HOST:{port}/whep/ROOM");
    match server.ice_tcp_addr {
        Some(addr) => println!("  ICE over TCP  : {addr}"),
        None => println!("  ICE over TCP  : off"),
    }
    match server.metrics_addr {
        Some(addr) => println!("  metrics       : http://{addr}/metrics"),
        None => println!("  metrics       : http://HOST:{port}/metrics"),
    }
    match &server.cluster {
        Some(c) => println!(
            "  cluster       : node {} at {} ({:?} signaling), Redis {}",
            c.node_id(),
            c.url(),
            c.signaling(),
            if c.is_up() { "up" } else { "not answering yet" }
        ),
        None => println!("  cluster       : none (no --redis-url)"),
    }
    signals.next().await;
    say(&format!(
        "stopping: refusing new sessions, draining {} live session(s) for up to {}s",
        server.session_count(),
        drain.as_secs()
    ));
    tokio::select! {
        _ = server.drain(drain) => {}
        _ = signals.next() => say("second signal: stopping now"),
    }
    say("stopped");
    Ok(())
}

/// Prints a line; a closed stdout must not turn a clean stop into a panic.
fn say(line: &str) {
    use std::io::Write;
    let _ = writeln!(std::io::stdout(), "{line}");
}

/// SIGTERM and Ctrl-C (SIGINT).
struct Signals {
    #[cfg(unix)]
    term: tokio::signal::unix::Signal,
    #[cfg(unix)]
    int: tokio::signal::unix::Signal,
}

impl Signals {
    fn new() -> std::io::Result<Self> {
        #[cfg(unix)]
        {
            use tokio::signal::unix::{signal, SignalKind};
            Ok(Self {
                term: signal(SignalKind::terminate())?,
                int: signal(SignalKind::interrupt())?,
            })
        }
        #[cfg(not(unix))]
        Ok(Self {})
    }

    async fn next(&mut self) {
        #[cfg(unix)]
        tokio::select! {
            _ = self.term.recv() => {}
            _ = self.int.recv() => {}
        }
        #[cfg(not(unix))]
        let _ = tokio::signal::ctrl_c().await;
    }
}
