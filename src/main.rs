//! `parley`: parse the configuration, start the server, stop on SIGTERM or Ctrl-C.

use clap::Parser;
use parley::config::Config;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into()),
        )
        .init();
    let config = Config::parse();
    let server = parley::start(config).await?;
    let port = server.http_addr.port();
    println!(
        "Parley is serving HTTP on {} and media on UDP {}",
        server.http_addr, server.media_addr
    );
    println!("  advertised media addresses: {:?}", server.advertised);
    println!("  publish (WHIP): http://HOST:{port}/whip/ROOM");
    println!("  play    (WHEP): http://HOST:{port}/whep/ROOM");
    match server.metrics_addr {
        Some(addr) => println!("  metrics       : http://{addr}/metrics"),
        None => println!("  metrics       : http://HOST:{port}/metrics"),
    }
    wait_for_signal().await;
    println!("stopping: ending sessions");
    server.shutdown().await;
    Ok(())
}

async fn wait_for_signal() {
    let ctrl_c = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        let mut term =
            match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
                Ok(s) => s,
                Err(_) => {
                    let _ = ctrl_c.await;
                    return;
                }
            };
        tokio::select! {
            _ = ctrl_c => {}
            _ = term.recv() => {}
        }
    }
    #[cfg(not(unix))]
    {
        let _ = ctrl_c.await;
    }
}
