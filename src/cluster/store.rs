//! The cluster's state in Redis, and the only code that speaks to it. Three kinds of keys:
//!
//! - `parley:node:<id>`: a node's [`NodeRecord`] (JSON), rewritten every heartbeat with a
//!   time-to-live of [`NODE_TTL`]: a node that stops is gone when it expires.
//! - `parley:nodes`: the set of node ids that registered; ids whose record expired are
//!   removed by whoever reads the set next.
//! - `parley:room:<room>`: the id of the node that holds the room, with a time-to-live of
//!   [`ROOM_TTL`] renewed by that node every heartbeat while it has the room's sessions.
//!
//! A room's claim changes hands only inside a Lua script, so two nodes placing the same room
//! at once agree on one owner. A claim whose node's record has expired is taken over at once.

use super::node::NodeRecord;
use redis::aio::ConnectionManager;
use redis::{RedisResult, Script};
use std::time::Duration;

/// How long a node's record lives without a heartbeat.
pub const NODE_TTL: Duration = Duration::from_millis(3000);
/// How long a room's claim lives without being renewed.
pub const ROOM_TTL: Duration = Duration::from_millis(6000);

const NODES: &str = "parley:nodes";
const NODE_PREFIX: &str = "parley:node:";
const ROOM_PREFIX: &str = "parley:room:";

fn node_key(id: &str) -> String {
    format!("{NODE_PREFIX}{id}")
}

fn room_key(room: &str) -> String {
    format!("{ROOM_PREFIX}{room}")
}

/// Claims a room for `candidate` unless a live node holds it; returns the holder.
const CLAIM: &str = r#"
local owner = redis.call('GET', KEYS[1])
if owner and (owner == ARGV[1] or redis.call('EXISTS', ARGV[3] .. owner) == 1) then
  return owner
end
redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])
return ARGV[1]
"#;

/// Renews this node's claims (and takes back a room nobody holds, as after Redis lost its
/// data); returns the 1-based positions of rooms another node holds.
const RENEW: &str = r#"
local lost = {}
for i, key in ipairs(KEYS) do
  local owner = redis.call('GET', key)
  if not owner then
    redis.call('SET', key, ARGV[1], 'PX', ARGV[2])
  elseif owner == ARGV[1] then
    redis.call('PEXPIRE', key, ARGV[2])
  else
    table.insert(lost, i)
  end
end
return lost
"#;

/// Deletes this node's claims.
const RELEASE: &str = r#"
local n = 0
for _, key in ipairs(KEYS) do
  if redis.call('GET', key) == ARGV[1] then
    redis.call('DEL', key)
    n = n + 1
  end
end
return n
"#;

/// The cluster's Redis, through one reconnecting connection.
#[derive(Clone)]
pub struct Store {
    conn: ConnectionManager,
    claim: std::sync::Arc<Script>,
    renew: std::sync::Arc<Script>,
    release: std::sync::Arc<Script>,
}

impl Store {
    /// A store for `url` that connects on first use and reconnects after failures; every
    /// command gives up after `timeout` (a missing Redis must not hold up a request).
    pub fn new(url: &str, timeout: Duration) -> RedisResult<Store> {
        let client = redis::Client::open(url)?;
        let config = redis::aio::ConnectionManagerConfig::new()
            .set_connection_timeout(Some(timeout))
            .set_response_timeout(Some(timeout))
            .set_number_of_retries(1)
            .set_max_delay(timeout);
        Ok(Store {
            conn: ConnectionManager::new_lazy_with_config(client, config)?,
            claim: Script::new(CLAIM).into(),
            renew: Script::new(RENEW).into(),
            release: Script::new(RELEASE).into(),
        })
    }

    /// Writes this node's record and adds it to the set of nodes.
    pub async fn register(&self, me: &NodeRecord) -> RedisResult<()> {
        let json = serde_json::to_string(me).unwrap_or_default();
        redis::pipe()
            .cmd("SET")
            .arg(node_key(&me.id))
            .arg(json)
            .arg("PX")
            .arg(NODE_TTL.as_millis() as u64)
            .ignore()
            .cmd("SADD")
            .arg(NODES)
            .arg(&me.id)
            .ignore()
            .query_async::<()>(&mut self.conn.clone())
            .await
    }

    /// Removes this node's record (a clean stop).
    pub async fn deregister(&self, id: &str) -> RedisResult<()> {
        redis::pipe()
            .cmd("DEL")
            .arg(node_key(id))
            .ignore()
            .cmd("SREM")
            .arg(NODES)
            .arg(id)
            .ignore()
            .query_async::<()>(&mut self.conn.clone())
            .await
    }

    /// Every live node's record. Ids whose record expired leave the set.
    pub async fn nodes(&self) -> RedisResult<Vec<NodeRecord>> {
        let mut conn = self.conn.clone();
        let ids: Vec<String> = redis::cmd("SMEMBERS")
            .arg(NODES)
            .query_async(&mut conn)
            .await?;
        if ids.is_empty() {
            return Ok(Vec::new());
        }
        let keys: Vec<String> = ids.iter().map(|id| node_key(id)).collect();
        let records: Vec<Option<String>> =
            redis::cmd("MGET").arg(&keys).query_async(&mut conn).await?;
        let mut live = Vec::with_capacity(ids.len());
        let mut gone = Vec::new();
        for (id, record) in ids.iter().zip(records) {
            match record.and_then(|r| serde_json::from_str::<NodeRecord>(&r).ok()) {
                Some(r) => live.push(r),
                None => gone.push(id.clone()),
            }
        }
        if !gone.is_empty() {
            redis::cmd("SREM")
                .arg(NODES)
                .arg(&gone)
                .query_async::<()>(&mut conn)
                .await?;
        }
        Ok(live)
    }

    /// One node's record, if it is live.
    pub async fn node(&self, id: &str) -> RedisResult<Option<NodeRecord>> {
        let record: Option<String> = redis::cmd("GET")
            .arg(node_key(id))
            .query_async(&mut self.conn.clone())
            .await?;
        Ok(record.and_then(|r| serde_json::from_str(&r).ok()))
    }

    /// Claims `room` for `candidate` unless a live node holds it; returns the holder's id.
    pub async fn claim(&self, room: &str, candidate: &str) -> RedisResult<String> {
        self.claim
            .key(room_key(room))
            .arg(candidate)
            .arg(ROOM_TTL.as_millis() as u64)
            .arg(NODE_PREFIX)
            .invoke_async(&mut self.conn.clone())
            .await
    }

    /// Who holds `room`, if anyone.
    pub async fn owner(&self, room: &str) -> RedisResult<Option<String>> {
        redis::cmd("GET")
            .arg(room_key(room))
            .query_async(&mut self.conn.clone())
            .await
    }

    /// Renews `me`'s claims on `rooms`, taking back those nobody holds; returns the rooms
    /// another node holds.
    pub async fn renew(&self, me: &str, rooms: &[String]) -> RedisResult<Vec<String>> {
        if rooms.is_empty() {
            return Ok(Vec::new());
        }
        let mut invocation = self.renew.prepare_invoke();
        for room in rooms {
            invocation.key(room_key(room));
        }
        invocation.arg(me).arg(ROOM_TTL.as_millis() as u64);
        let lost: Vec<usize> = invocation.invoke_async(&mut self.conn.clone()).await?;
        Ok(lost
            .into_iter()
            .filter_map(|i| rooms.get(i.checked_sub(1)?).cloned())
            .collect())
    }

    /// Gives up `me`'s claims on `rooms` (they have no session here any more).
    pub async fn release(&self, me: &str, rooms: &[String]) -> RedisResult<()> {
        if rooms.is_empty() {
            return Ok(());
        }
        let mut invocation = self.release.prepare_invoke();
        for room in rooms {
            invocation.key(room_key(room));
        }
        invocation.arg(me);
        invocation
            .invoke_async::<u64>(&mut self.conn.clone())
            .await
            .map(drop)
    }
}
