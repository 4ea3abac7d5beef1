//! Starting the shards: their sockets, threads, queues to one another and sending threads,
//! and the [`EngineHandle`] the HTTP side sends commands through.

use super::{event_loop, handoff, sender, socket, steer};
use crate::engine::placement::Placement;
use crate::engine::rooms::relay::Relayed;
use crate::engine::{EngineConfig, EngineHandle, Registry};
use crate::transport::TransportContext;
use dashmap::DashMap;
use std::sync::Arc;
use tokio::sync::{mpsc, oneshot};
use tokio::task::JoinHandle;

/// Starts one shard per socket (all bound to the media port), each on a thread of its own
/// ("parley-shard-N") with a single-threaded runtime, and returns once every socket is
/// registered. The forwarding path then never migrates between threads, its socket wakes it
/// directly, and HTTP work on the server's other runtime never delays a packet. The task
/// handle completes when every shard has stopped.
pub async fn spawn(
    ctx: TransportContext,
    config: EngineConfig,
    metrics: Arc<crate::metrics::Metrics>,
    sockets: Vec<std::net::UdpSocket>,
) -> std::io::Result<(EngineHandle, JoinHandle<()>)> {
    let registry: Registry = Arc::new(DashMap::new());
    let placement = Arc::new(Placement::new(sockets.len(), config.spread_after));
    let owners = super::Owners::default();
    let links = handoff::wire(sockets.len());
    let relays = handoff::wire::<Relayed>(sockets.len());
    let (controls, control_ins): (Vec<_>, Vec<_>) = (0..sockets.len())
        .map(|_| mpsc::unbounded_channel())
        .unzip();
    let controls: Arc<[_]> = controls.into();
    // The kernel steers each known client address to its shard where it can.
    let (steering, unsteered) = match sockets.len() {
        1 => (None, None),
        _ => match steer::Steering::attach(&sockets) {
            Ok(steering) => (Some(Arc::new(steering)), None),
            Err(e) => (None, Some(e.to_string())),
        },
    };
    metrics.set_steering(steering.is_some());
    // The sending threads are shared out over the shards, at least one each.
    let send_threads = config.send_threads.div_ceil(sockets.len()).max(1);
    let mut txs = Vec::new();
    let mut done = Vec::new();
    let wiring = links.into_iter().zip(relays).zip(control_ins);
    for (id, (socket, (((outbox, inbox), (relay_out, relay_in)), control_in))) in
        sockets.into_iter().zip(wiring).enumerate()
    {
        let (tx, rx) = mpsc::channel(256);
        txs.push(tx);
        let link = super::ShardLink {
            id,
            placement: placement.clone(),
            owners: owners.clone(),
            steering: steering.clone(),
            outbox,
            inbox,
            relay_out,
            relay_in,
            controls: controls.clone(),
            control_in,
        };
        let (ready_tx, ready_rx) = oneshot::channel::<std::io::Result<()>>();
        let (done_tx, done_rx) = oneshot::channel::<()>();
        done.push(done_rx);
        let (ctx, config, metrics, shared) = (
            ctx.clone(),
            config.clone(),
            metrics.clone(),
            registry.clone(),
        );
        std::thread::Builder::new()
            .name(format!("parley-shard-{id}"))
            .spawn(move || {
                let runtime = match tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                {
                    Ok(runtime) => runtime,
                    Err(e) => {
                        let _ = ready_tx.send(Err(e));
                        return;
                    }
                };
                runtime.block_on(async move {
                    let started = socket::MediaSocket::new(socket).and_then(|socket| {
                        let senders = sender::Senders::start(socket.std(), id, send_threads)?;
                        Ok((socket, senders))
                    });
                    let (socket, senders) = match started {
                        Ok(started) => started,
                        Err(e) => {
                            let _ = ready_tx.send(Err(e));
                            return;
                        }
                    };
                    let _ = ready_tx.send(Ok(()));
                    let engine = event_loop::Engine::new(
                        ctx, config, metrics, socket, senders, shared, link,
                    );
                    engine.run(rx).await;
                });
                let _ = done_tx.send(());
            })?;
        ready_rx
            .await
            .unwrap_or_else(|_| Err(std::io::Error::other("a media shard stopped at start")))?;
    }
    let task = tokio::spawn(async move {
        for d in done {
            let _ = d.await;
        }
    });
    Ok((
        EngineHandle {
            shards: txs.into(),
            registry,
            placement,
            unsteered,
        },
        task,
    ))
}
