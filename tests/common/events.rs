//! A server-sent-events reader for a WHEP session's room events: collects every event and
//! lets a test wait (signalled, not polled) for a condition on them.

use super::HarnessError;
use serde_json::Value;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::watch;
use tokio::task::JoinHandle;

/// Events received so far; dropping it stops reading.
pub struct Events {
    events: Arc<Mutex<Vec<Value>>>,
    changed: watch::Receiver<u64>,
    task: JoinHandle<()>,
}

impl Drop for Events {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl Events {
    /// Opens `GET {session_url}/events` and starts collecting.
    pub async fn open(session_url: &str, token: Option<&str>) -> Result<Events, HarnessError> {
        let url = format!("{session_url}/events");
        let mut req = reqwest::Client::new().get(&url);
        if let Some(t) = token {
            req = req.bearer_auth(t);
        }
        let mut resp = req.send().await.map_err(|source| HarnessError::Http {
            method: "GET",
            url: url.clone(),
            source,
        })?;
        if resp.status() != reqwest::StatusCode::OK {
            return Err(HarnessError::Status {
                method: "GET",
                url,
                status: resp.status(),
                expected: reqwest::StatusCode::OK,
                body: String::new(),
            });
        }
        let events = Arc::new(Mutex::new(Vec::new()));
        let (tx, changed) = watch::channel(0u64);
        let sink = Arc::clone(&events);
        let task = tokio::spawn(async move {
            let mut buf = String::new();
            while let Ok(Some(chunk)) = resp.chunk().await {
                buf.push_str(&String::from_utf8_lossy(&chunk));
                while let Some(end) = buf.find("\n\n") {
                    let block: String = buf.drain(..end + 2).collect();
                    let data: String = block
                        .lines()
                        .filter_map(|l| l.strip_prefix("data:"))
                        .map(str::trim_start)
                        .collect();
                    if let Ok(v) = serde_json::from_str::<Value>(&data) {
                        sink.lock().unwrap_or_else(|e| e.into_inner()).push(v);
                        tx.send_modify(|n| *n += 1);
                    }
                }
            }
        });
        Ok(Events {
            events,
            changed,
            task,
        })
    }

    /// Everything received so far.
    pub fn all(&self) -> Vec<Value> {
        self.events
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// Waits until `pred` holds for the events so far.
    pub async fn wait_for<F: Fn(&[Value]) -> bool>(
        &self,
        what: &str,
        timeout: Duration,
        pred: F,
    ) -> Result<Vec<Value>, HarnessError> {
        let mut rx = self.changed.clone();
        let waited = tokio::time::timeout(timeout, async {
            loop {
                let now = self.all();
                if pred(&now) {
                    return now;
                }
                if rx.changed().await.is_err() {
                    // The stream ended: nothing more will come.
                    std::future::pending::<()>().await;
                }
            }
        })
        .await;
        waited.map_err(|_| HarnessError::Timeout {
            what: what.to_owned(),
            timeout,
            detail: format!(": events so far {:?}", self.all()),
        })
    }
}

/// Whether `e` is an event of `kind` whose fields include all of `fields`.
pub fn is_event(e: &Value, kind: &str, fields: &[(&str, &str)]) -> bool {
    e["type"] == kind && fields.iter().all(|(k, v)| e[*k] == *v)
}

/// Index of the first event matching, if any.
pub fn position(events: &[Value], kind: &str, fields: &[(&str, &str)]) -> Option<usize> {
    events.iter().position(|e| is_event(e, kind, fields))
}
