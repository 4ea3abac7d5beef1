//! Participants of a call for room tests: each publishes synthetic VP8 + Opus (with an audio
//! level the test can change) from a background task, and every payload sent is logged with
//! its sender so a viewer's packets can be attributed.

use super::{opus_payload, publish, vp8_delta_payload, vp8_keyframe_payload, PublishOptions};
use super::{Publisher, Received};
use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU8, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::task::JoinHandle;

/// RFC 6464 level of someone speaking (loud) and of silence.
pub const SPEAKING: u8 = 20;
pub const SILENT: u8 = 127;

/// Who sent a payload, and whether it is a video keyframe.
type Origin = (String, bool);

/// Every payload sent in a call, with its origin.
#[derive(Clone, Default)]
pub struct SentLog(Arc<Mutex<HashMap<Vec<u8>, Origin>>>);

impl SentLog {
    fn add(&self, payload: &[u8], who: &str, key: bool) {
        self.0
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(payload.to_vec(), (who.to_owned(), key));
    }

    /// Packets of `kind` in `got` whose payload `who` sent.
    pub fn count(&self, got: &[Received], kind: super::Kind, who: &str) -> usize {
        got.iter()
            .filter(|r| r.kind == kind && self.sender(r).is_some_and(|(s, _)| s == who))
            .count()
    }

    /// Who sent a received packet's payload, and whether it was a keyframe.
    pub fn sender(&self, r: &Received) -> Option<(String, bool)> {
        self.0
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(&r.payload)
            .cloned()
    }
}

/// A publishing participant.
pub struct Member {
    pub name: String,
    pub publisher: Arc<Publisher>,
    level: Arc<AtomicU8>,
    sending: Arc<AtomicBool>,
    task: JoinHandle<()>,
}

impl Drop for Member {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl Member {
    /// Publishes as `name` and starts sending 50 frames/s (a keyframe every 10) and 50 Opus
    /// packets/s at level `SILENT`. `index` makes the payloads unique.
    pub async fn join(base: &str, room: &str, name: &str, index: u32, log: &SentLog) -> Member {
        let publisher = Arc::new(
            publish(
                base,
                room,
                PublishOptions {
                    participant: Some(name.to_owned()),
                    ..PublishOptions::vp8()
                },
            )
            .await
            .unwrap_or_else(|e| panic!("{name} publishes: {e}")),
        );
        let level = Arc::new(AtomicU8::new(SILENT));
        let sending = Arc::new(AtomicBool::new(true));
        let (p, l, s, log, who) = (
            Arc::clone(&publisher),
            Arc::clone(&level),
            Arc::clone(&sending),
            log.clone(),
            name.to_owned(),
        );
        let task = tokio::spawn(async move {
            let mut pace = tokio::time::interval(Duration::from_millis(20));
            for frame in 0u32.. {
                pace.tick().await;
                if !s.load(Ordering::Relaxed) {
                    continue;
                }
                let n = index * 1_000_000 + frame;
                let key = frame % 10 == 0;
                let video = if key {
                    vp8_keyframe_payload(n)
                } else {
                    vp8_delta_payload(n)
                };
                log.add(&video, &who, key);
                let _ = p.send_video(&video, true, frame.wrapping_mul(1800)).await;
                let audio = opus_payload(n);
                log.add(&audio, &who, false);
                let level = l.load(Ordering::Relaxed);
                let _ = p
                    .send_audio_level(&audio, frame.wrapping_mul(960), level)
                    .await;
            }
        });
        Member {
            name: name.to_owned(),
            publisher,
            level,
            sending,
            task,
        }
    }

    /// Sets the audio level of the next packets.
    pub fn speak(&self, level: u8) {
        self.level.store(level, Ordering::Relaxed);
    }

    /// Stops sending media without leaving (a frozen or crashed client).
    pub fn stop_sending(&self) {
        self.sending.store(false, Ordering::Relaxed);
    }

    /// Stops sending and DELETEs the session.
    pub async fn leave(mut self) {
        let task = std::mem::replace(&mut self.task, tokio::spawn(async {}));
        task.abort();
        let _ = task.await; // the sender's clone of the publisher is gone after this
        let publisher = Arc::clone(&self.publisher);
        drop(self);
        match Arc::try_unwrap(publisher) {
            Ok(p) => p.close().await,
            Err(_) => panic!("the publisher is still shared"),
        }
    }
}
