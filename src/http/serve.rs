//! The HTTP connection loop: hyper with a header-read timeout (slow clients that trickle
//! their headers are cut off), each connection's peer address for the rate limiter, and a
//! graceful stop.

use axum::extract::ConnectInfo;
use axum::Router;
use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto::Builder;
use hyper_util::server::graceful::GracefulShutdown;
use hyper_util::service::TowerToHyperService;
use std::time::Duration;
use tokio::net::TcpListener;
use tokio::sync::watch;
use tower::ServiceExt;

/// Longest wait for open connections (e.g. event streams) when stopping.
const STOP_GRACE: Duration = Duration::from_secs(5);
/// Pause after a failed accept (e.g. no file descriptors left).
const ACCEPT_BACKOFF: Duration = Duration::from_millis(50);

/// Serves `app` on `listener` until `stop` turns true.
pub async fn serve(
    listener: TcpListener,
    app: Router,
    header_timeout: Duration,
    mut stop: watch::Receiver<bool>,
) {
    let graceful = GracefulShutdown::new();
    loop {
        tokio::select! {
            accepted = listener.accept() => {
                let (stream, peer) = match accepted {
                    Ok(accepted) => accepted,
                    Err(e) => {
                        // Out of file descriptors, say: back off instead of spinning.
                        tracing::warn!("accept failed: {e}");
                        tokio::time::sleep(ACCEPT_BACKOFF).await;
                        continue;
                    }
                };
                let app = app.clone();
                let service = tower::service_fn(move |mut req: hyper::Request<Incoming>| {
                    req.extensions_mut().insert(ConnectInfo(peer));
                    app.clone().oneshot(req.map(axum::body::Body::new))
                });
                let watcher = graceful.watcher();
                tokio::spawn(async move {
                    // hyper's header timer starts with the first byte: a client that connects
                    // and sends nothing is dropped after the same timeout here.
                    let mut first = [0u8; 1];
                    match tokio::time::timeout(header_timeout, stream.peek(&mut first)).await {
                        Ok(Ok(n)) if n > 0 => {}
                        _ => return,
                    }
                    let mut builder = Builder::new(TokioExecutor::new());
                    builder
                        .http1()
                        .timer(TokioTimer::new())
                        .header_read_timeout(header_timeout);
                    let conn = builder
                        .serve_connection_with_upgrades(
                            TokioIo::new(stream),
                            TowerToHyperService::new(service),
                        )
                        .into_owned();
                    let _ = watcher.watch(conn).await;
                });
            }
            _ = stopped(&mut stop) => break,
        }
    }
    drop(listener);
    let _ = tokio::time::timeout(STOP_GRACE, graceful.shutdown()).await;
}

/// Resolves when `stop` turns true (holding no borrow of it afterwards).
async fn stopped(stop: &mut watch::Receiver<bool>) {
    let _ = stop.wait_for(|stopped| *stopped).await;
}
