//! Cascading: a broadcast too big for one node spreads its viewers over others. A WHEP
//! viewer that reaches node B for a room node A holds is served by B, which plays the room
//! from A once, over WHEP like any viewer (one upstream session per room per node, see
//! `crate::engine::shard::upstream`), and fans it out to its own viewers. Their NACKs are
//! answered from B's caches; their keyframe requests reach A's publisher as PLI.
//!
//! When viewers spill: the owner has at least `--cluster-cascade-sessions` sessions and the
//! room has at most one publisher (a cascade carries one audio and one video track, the
//! room's broadcast). Below that, or for a meeting, the request is passed to the owner.
//!
//! This module is the HTTP side: it asks the engine for the upstream's offer, sends it to
//! the owner, and hands back the answer. The heartbeat tends what it started: an upstream
//! that ended here (idle, or its connection failed) has its session on the owner ended,
//! and while the room still has viewers here it is played again from wherever it now lives.

use super::{lock, Cluster, NodeRecord, Owner, CASCADE, FORWARDED};
use crate::engine::{EndReason, EngineError, EngineHandle, SessionKind};
use reqwest::header;
use std::collections::HashMap;

/// A room this node plays from another node.
#[derive(Debug, Clone)]
pub struct Cascade {
    /// The node it is played from.
    pub owner: String,
    /// The upstream session's id here.
    pub session: String,
    /// The upstream's session URL on the owner, once it answered.
    pub location: Option<String>,
}

/// Rooms played from other nodes, by name.
pub(super) type Cascades = std::sync::Mutex<HashMap<String, Cascade>>;

/// Why a room could not be played from its node.
#[derive(Debug, thiserror::Error)]
pub enum CascadeError {
    /// The engine refused (shutting down, no socket).
    #[error("{0}")]
    Engine(#[from] EngineError),
    /// The owner did not answer, or not with an SDP answer.
    #[error("the room's node ({node}) did not take the cascade: {why}")]
    Owner {
        /// Its id.
        node: String,
        /// What went wrong.
        why: String,
    },
}

/// A broadcast as its node describes it: what this node's copy is made of.
#[derive(Debug, Clone, PartialEq)]
pub struct Broadcast {
    /// The name its publisher goes by here (its name there; a made-up one while it has
    /// none).
    pub publisher: String,
    /// Its video codec (`VP8`, `H264`...), when it has video.
    pub video: Option<String>,
    /// Its video's layers by rid, smallest first (one, `""`, without simulcast; none before
    /// the owner has seen them).
    pub rids: Vec<String>,
}

/// The name of the participant a node's upstream session is on the room's node.
fn upstream_name(node: &str) -> String {
    let mut name = format!("cascade-{node}");
    name.truncate(crate::http::MAX_NAME_LEN);
    name
}

/// The rids of a room view's video track's layers, smallest first.
fn rids_of(track: Option<&serde_json::Value>) -> Vec<String> {
    let mut layers: Vec<(u64, String)> = track
        .and_then(|t| t["layers"].as_array())
        .into_iter()
        .flatten()
        .map(|l| {
            let rank = l["spatialLayerId"].as_u64().unwrap_or(0);
            (rank, l["rid"].as_str().unwrap_or_default().to_owned())
        })
        .collect();
    layers.sort();
    layers.into_iter().map(|(_, rid)| rid).collect()
}

impl Broadcast {
    /// A broadcast whose publisher has not come yet.
    fn unnamed(owner: &str) -> Self {
        Broadcast {
            publisher: upstream_name(owner),
            video: None,
            rids: Vec::new(),
        }
    }
}

impl Cluster {
    /// The node `room` is played from, when this node serves it as a cascade.
    pub fn cascade_of(&self, room: &str) -> Option<String> {
        lock(&self.inner.cascades)
            .get(room)
            .map(|c| c.owner.clone())
    }

    /// Every room played from another node.
    pub fn cascades(&self) -> Vec<(String, Cascade)> {
        let all = lock(&self.inner.cascades);
        all.iter().map(|(r, c)| (r.clone(), c.clone())).collect()
    }

    /// Whether a WHEP viewer of `room`, held by `owner`, is served here from a cascade:
    /// the owner is loaded past the threshold (or draining: it takes no new viewer, but
    /// still lets other nodes play its rooms) and the room has at most one publisher. Gives
    /// the broadcast.
    pub async fn spill(&self, owner: &NodeRecord, room: &str) -> Option<Broadcast> {
        if owner.load.sessions < self.inner.config.cascade_above && !owner.draining {
            return None;
        }
        self.broadcast(owner, room).await
    }

    /// A room on `owner` as a broadcast: `None` for a room with several publishers, or when
    /// the owner does not say.
    async fn broadcast(&self, owner: &NodeRecord, room: &str) -> Option<Broadcast> {
        let mut request = self
            .http()
            .get(format!("{}/rooms/{room}", owner.url))
            .timeout(std::time::Duration::from_secs(1))
            .header(FORWARDED, self.node_id());
        if let Some(token) = &self.inner.config.admin_token {
            request = request.bearer_auth(token);
        }
        let answer = request.send().await.ok()?;
        let view = match answer.status() {
            // No room there yet: its publisher has not come.
            reqwest::StatusCode::NOT_FOUND => serde_json::Value::Null,
            reqwest::StatusCode::OK => answer.json::<serde_json::Value>().await.ok()?,
            _ => return None,
        };
        let publishers: Vec<&serde_json::Value> = view["participants"]
            .as_array()
            .into_iter()
            .flatten()
            .filter(|p| p["publishing"].as_bool() == Some(true))
            .collect();
        match publishers.as_slice() {
            [] => Some(Broadcast::unnamed(&owner.id)),
            [one] => {
                let video = one["tracks"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .find(|t| t["kind"] == "video");
                Some(Broadcast {
                    publisher: one["name"].as_str()?.to_owned(),
                    video: video.and_then(|t| t["codec"].as_str()).map(str::to_owned),
                    rids: rids_of(video),
                })
            }
            _ => None,
        }
    }

    /// Makes sure this node plays `room`, broadcast `what`, from `owner`.
    pub async fn cascade(
        &self,
        engine: &EngineHandle,
        owner: &NodeRecord,
        room: &str,
        what: Broadcast,
    ) -> Result<(), CascadeError> {
        let Some(upstream) = engine
            .play_from(room, what.publisher, (what.video, what.rids))
            .await?
        else {
            return Ok(());
        };
        // Known before the owner answers: a WHIP request for the room meanwhile goes there.
        lock(&self.inner.cascades).insert(
            room.to_owned(),
            Cascade {
                owner: owner.id.clone(),
                session: upstream.id.clone(),
                location: None,
            },
        );
        let fail = |why: String| CascadeError::Owner {
            node: owner.id.clone(),
            why,
        };
        let offered = async {
            let mut request = self
                .http()
                .post(format!("{}/whep/{room}", owner.url))
                .query(&[("participant", upstream_name(self.node_id()))])
                .header(FORWARDED, self.node_id())
                // The owner takes it for a node's upstream only with the cluster's admin
                // token (any value where the cluster has none).
                .header(
                    CASCADE,
                    self.inner
                        .config
                        .admin_token
                        .as_deref()
                        .unwrap_or(self.node_id()),
                )
                .header(header::CONTENT_TYPE, "application/sdp")
                .body(upstream.answer.clone());
            if let Some(token) = &self.inner.config.play_token {
                request = request.bearer_auth(token);
            }
            let answer = request.send().await.map_err(|e| fail(e.to_string()))?;
            let status = answer.status();
            let location = answer
                .headers()
                .get(header::LOCATION)
                .and_then(|v| v.to_str().ok())
                .map(|l| match l.starts_with('/') {
                    true => format!("{}{l}", owner.url),
                    false => l.to_owned(),
                });
            let body = answer.text().await.map_err(|e| fail(e.to_string()))?;
            if status != reqwest::StatusCode::CREATED {
                return Err(fail(format!("{status}: {}", body.trim())));
            }
            if let Some(c) = lock(&self.inner.cascades).get_mut(room) {
                c.location = location;
            }
            engine.answer(&upstream.id, body).await?;
            Ok(())
        }
        .await;
        if let Err(e) = &offered {
            tracing::warn!("cluster: room {room} not played from {}: {e}", owner.id);
            engine.close(&upstream.id, EndReason::Deleted).await;
            self.end_cascade(room).await;
        } else {
            tracing::info!("cluster: room {room} played from node {}", owner.id);
        }
        offered
    }

    /// Forgets a room's cascade and ends its session on the owner.
    async fn end_cascade(&self, room: &str) {
        let Some(c) = lock(&self.inner.cascades).remove(room) else {
            return;
        };
        let Some(location) = c.location else {
            return;
        };
        let mut request = self
            .http()
            .delete(&location)
            .header(FORWARDED, self.node_id());
        if let Some(token) = &self.inner.config.play_token {
            request = request.bearer_auth(token);
        }
        if let Err(e) = request.send().await {
            tracing::debug!(
                "cluster: the cascade of {room} not ended on {}: {e}",
                c.owner
            );
        }
    }

    /// The heartbeat's part: cascades whose upstream ended here are ended on their owners
    /// too; a room that still has viewers here is played again from its node.
    pub(super) async fn tend_cascades(&self, engine: &EngineHandle) {
        // An owner whose record expired is gone: its cascades end now, not when their
        // connections time out.
        if self.is_up() {
            let live: Vec<String> = self.nodes().into_iter().map(|n| n.id).collect();
            let orphans: Vec<String> = lock(&self.inner.cascades)
                .values()
                .filter(|c| !live.contains(&c.owner))
                .map(|c| c.session.clone())
                .collect();
            for session in orphans {
                engine.close(&session, EndReason::IceFailed).await;
            }
        }
        let ended: Vec<(String, String)> = lock(&self.inner.cascades)
            .iter()
            .filter(|(_, c)| !engine.registry.contains_key(&c.session))
            .map(|(room, c)| (room.clone(), c.owner.clone()))
            .collect();
        for (room, from) in ended {
            self.end_cascade(&room).await;
            let viewers = engine
                .registry
                .iter()
                .any(|s| s.room == room && s.kind == SessionKind::Whep);
            if !viewers {
                tracing::info!("cluster: room {room} no longer played from node {from}");
                continue;
            }
            if let Owner::There(node) = self.locate(&room).await {
                let what = self
                    .broadcast(&node, &room)
                    .await
                    .unwrap_or_else(|| Broadcast::unnamed(&node.id));
                let _ = self.cascade(engine, &node, &room, what).await;
            }
        }
        self.inner
            .metrics
            .cascades
            .set(lock(&self.inner.cascades).len() as i64);
    }

    /// Ends every cascade on its owner (the node is stopping).
    pub(super) async fn end_cascades(&self) {
        let rooms: Vec<String> = lock(&self.inner.cascades).keys().cloned().collect();
        for room in rooms {
            self.end_cascade(&room).await;
        }
    }
}
