//! Which shard serves which room, and how a session id or ICE ufrag names its shard.
//!
//! A room lives on one shard. The HTTP side claims a room for each session it opens
//! ([`Placement::claim`]): a room already placed keeps its shard, a new one goes to the
//! least-loaded shard (forwarded packets a second, which each shard publishes through an
//! atomic, plus the mean load of a room for each room placed there since, so a burst of new
//! rooms spreads before any of them carries media). Every session that ends releases its claim, and a room without
//! sessions is forgotten, to be placed afresh. Claims and releases of one room are ordered by
//! the map's entry lock, so a room is never on two shards at once.
//!
//! A room too large for one shard spreads: once its home shard holds
//! [`Placement::spread_after`] of its sessions, each further viewer goes to the least-loaded
//! shard ([`Placement::claim_viewer`]), which serves it with packets the home shard relays
//! (`relay`). Publishers always join the home shard.
//!
//! Session ids and the server's ICE ufrags begin with the shard's number in two hex digits:
//! any shard, and the HTTP side, find the owner of either without a lookup.

use dashmap::DashMap;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};

/// Most shards (their number must fit the two hex digits of an id).
pub const MAX_SHARDS: usize = 256;

/// The least load a new room is expected to bring, in forwarded packets a second, before it
/// shows (otherwise: the mean load of the rooms placed so far).
const ROOM_ALLOWANCE: u64 = 1_000;

/// The load a viewer placed since its shard last published is expected to bring.
const VIEWER_ALLOWANCE: u64 = 250;

/// The default of [`Placement::spread_after`].
pub const SPREAD_AFTER: usize = 50;

#[derive(Debug, Clone)]
struct Claim {
    /// The room's home shard.
    shard: usize,
    /// Its sessions, by shard.
    on: Vec<usize>,
}

/// Rooms to shards.
#[derive(Debug)]
pub struct Placement {
    rooms: DashMap<String, Claim>,
    /// Forwarded packets a second, per shard, as each last published it.
    loads: Box<[AtomicU64]>,
    /// Rooms placed, per shard.
    rooms_on: Box<[AtomicUsize]>,
    /// Rooms placed since the shard last published its load (they show none yet).
    fresh: Box<[AtomicUsize]>,
    /// Viewers placed since the shard last published its load.
    fresh_viewers: Box<[AtomicUsize]>,
    /// Sessions per shard, of every room.
    sessions_on: Box<[AtomicUsize]>,
    /// A room's sessions on its home shard before its further viewers spread.
    spread_after: usize,
    /// Taken while a new room is placed, so rooms placed at once see each other.
    placing: std::sync::Mutex<()>,
}

impl Placement {
    /// Placement over `shards` shards (1..=[`MAX_SHARDS`]); a room's viewers spread once its
    /// home shard holds `spread_after` of its sessions.
    pub fn new(shards: usize, spread_after: usize) -> Self {
        let shards = shards.clamp(1, MAX_SHARDS);
        let counters = || (0..shards).map(|_| AtomicUsize::new(0)).collect();
        Placement {
            rooms: DashMap::new(),
            loads: (0..shards).map(|_| AtomicU64::new(0)).collect(),
            rooms_on: counters(),
            fresh: counters(),
            fresh_viewers: counters(),
            sessions_on: counters(),
            spread_after,
            placing: std::sync::Mutex::new(()),
        }
    }

    /// A room's sessions on its home shard before its further viewers go to the
    /// least-loaded shard.
    pub fn spread_after(&self) -> usize {
        self.spread_after
    }

    /// How many shards there are.
    pub fn shards(&self) -> usize {
        self.loads.len()
    }

    /// The shard that serves `room` for one more session: its shard if placed, else the
    /// least-loaded one, which it is placed on. Each claim is released once
    /// ([`Placement::release`]) when its session ends or was never opened.
    pub fn claim(&self, room: &str) -> usize {
        let mut entry = self.entry(room);
        let home = entry.shard;
        self.count_in(&mut entry, home);
        home
    }

    /// Like [`Placement::claim`], for a viewer: (the shard that serves it, the room's home
    /// shard). Once the home shard holds [`Placement::spread_after`] of the room's sessions,
    /// that is the least-loaded shard.
    pub fn claim_viewer(&self, room: &str) -> (usize, usize) {
        let mut entry = self.entry(room);
        let home = entry.shard;
        let shard = match entry.on[home] < self.spread_after {
            true => home,
            false => {
                let _placing = self
                    .placing
                    .lock()
                    .unwrap_or_else(std::sync::PoisonError::into_inner);
                self.least_loaded()
            }
        };
        self.fresh_viewers[shard].fetch_add(1, Ordering::Relaxed);
        self.count_in(&mut entry, shard);
        (shard, home)
    }

    /// The room's claim, placing it when new.
    fn entry(&self, room: &str) -> dashmap::mapref::one::RefMut<'_, String, Claim> {
        self.rooms.entry(room.to_owned()).or_insert_with(|| {
            // Only ever taken inside one room's entry, never the other way round.
            let _placing = self
                .placing
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner);
            let shard = self.least_loaded();
            self.rooms_on[shard].fetch_add(1, Ordering::Relaxed);
            self.fresh[shard].fetch_add(1, Ordering::Relaxed);
            Claim {
                shard,
                on: vec![0; self.shards()],
            }
        })
    }

    fn count_in(&self, claim: &mut Claim, shard: usize) {
        claim.on[shard] += 1;
        self.sessions_on[shard].fetch_add(1, Ordering::Relaxed);
    }

    /// Gives back one claim on `room` of a session on `shard`; the last one forgets where
    /// the room was.
    pub fn release(&self, room: &str, shard: usize) {
        let emptied = self.rooms.remove_if_mut(room, |_, claim| {
            if let Some(n) = claim.on.get_mut(shard).filter(|n| **n > 0) {
                *n -= 1;
                self.sessions_on[shard].fetch_sub(1, Ordering::Relaxed);
            }
            claim.on.iter().all(|n| *n == 0)
        });
        if let Some((_, claim)) = emptied {
            self.rooms_on[claim.shard].fetch_sub(1, Ordering::Relaxed);
        }
    }

    /// A room's sessions on each shard (empty when it has none).
    pub fn sessions_of(&self, room: &str) -> Vec<usize> {
        self.rooms
            .get(room)
            .map(|c| c.on.clone())
            .unwrap_or_default()
    }

    /// Where `room` is, if it has sessions.
    pub fn shard_of(&self, room: &str) -> Option<usize> {
        self.rooms.get(room).map(|c| c.shard)
    }

    /// Rooms placed on `shard`.
    pub fn rooms_on(&self, shard: usize) -> usize {
        self.rooms_on
            .get(shard)
            .map_or(0, |r| r.load(Ordering::Relaxed))
    }

    /// Forwarded packets a second over every shard, as they last published.
    pub fn packets_per_second(&self) -> u64 {
        self.loads.iter().map(|l| l.load(Ordering::Relaxed)).sum()
    }

    /// A shard's current load, in forwarded packets a second.
    pub fn publish_load(&self, shard: usize, packets_per_second: u64) {
        if let (Some(l), Some(f), Some(v)) = (
            self.loads.get(shard),
            self.fresh.get(shard),
            self.fresh_viewers.get(shard),
        ) {
            l.store(packets_per_second, Ordering::Relaxed);
            f.store(0, Ordering::Relaxed);
            v.store(0, Ordering::Relaxed);
        }
    }

    /// The shard with the least expected load: what it published, plus the mean load of a
    /// room for each room placed there since and an allowance for each viewer placed there
    /// since (those show nothing yet). A shard without sessions counts as idle whatever it
    /// last published (the load of rooms gone).
    fn least_loaded(&self) -> usize {
        let count = |c: &[AtomicUsize], s: usize| c[s].load(Ordering::Relaxed) as u64;
        let rooms = |s: usize| count(&self.rooms_on, s);
        let fresh = |s: usize| count(&self.fresh, s).min(rooms(s));
        let load = |s: usize| match count(&self.sessions_on, s) {
            0 => 0,
            _ => self.loads[s].load(Ordering::Relaxed),
        };
        let (total, shown) =
            (0..self.shards()).fold((0, 0), |(l, r), s| (l + load(s), r + rooms(s) - fresh(s)));
        let mean = match shown {
            0 => ROOM_ALLOWANCE,
            n => (total / n).max(ROOM_ALLOWANCE),
        };
        (0..self.shards())
            .min_by_key(|&s| {
                load(s) + fresh(s) * mean + count(&self.fresh_viewers, s) * VIEWER_ALLOWANCE
            })
            .unwrap_or(0)
    }
}

/// The two hex digits an id of `shard` begins with.
pub fn shard_prefix(shard: usize) -> String {
    format!("{:02x}", shard % MAX_SHARDS)
}

/// The shard a session id or server ufrag names, if it begins with two hex digits.
pub fn shard_of_id(id: &str) -> Option<usize> {
    let digits = id.get(..2)?;
    if !digits.bytes().all(|b| b.is_ascii_hexdigit()) {
        return None;
    }
    usize::from_str_radix(digits, 16).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_name_their_shard() {
        for shard in [0, 1, 9, 10, 255] {
            let id = format!("{}{}", shard_prefix(shard), "abcdef");
            assert_eq!(shard_of_id(&id), Some(shard));
        }
        assert_eq!(shard_of_id(""), None);
        assert_eq!(shard_of_id("z1abc"), None);
        assert_eq!(shard_of_id("é"), None);
        assert_eq!(shard_of_id("1"), None);
    }

    #[test]
    fn new_rooms_spread_and_a_room_stays_where_it_is_while_it_has_sessions() {
        let p = Placement::new(2, SPREAD_AFTER);
        let a = p.claim("a");
        let b = p.claim("b");
        assert_ne!(a, b, "two new rooms on an idle server go to both shards");
        assert_eq!(p.claim("a"), a);
        p.release("a", a);
        assert_eq!(p.shard_of("a"), Some(a), "one session is left");
        p.release("a", a);
        assert_eq!(p.shard_of("a"), None, "forgotten with its last session");
        assert_eq!(p.rooms_on(a), 0);
        p.release("a", a);
        assert_eq!(p.shard_of("a"), None, "a release too many is harmless");
    }

    #[test]
    fn new_rooms_go_where_the_load_is_least() {
        let p = Placement::new(2, SPREAD_AFTER);
        let big = p.claim("big");
        let small = p.claim("small");
        assert_ne!(big, small);
        p.publish_load(big, 40_000);
        p.publish_load(small, 2_000);
        // A room just placed carries nothing yet: each counts as the mean room (21,000).
        let placed: Vec<usize> = (0..10).map(|i| p.claim(&format!("r{i}"))).collect();
        assert_eq!(placed[0], small, "{placed:?}");
        let on = |s| placed.iter().filter(|&&x| x == s).count();
        assert!(on(small) >= on(big) && on(big) > 0, "{placed:?}");
    }

    #[test]
    fn the_load_of_rooms_gone_does_not_draw_a_burst_to_one_shard() {
        let p = Placement::new(2, SPREAD_AFTER);
        let old = p.claim("old");
        p.publish_load(old, 1_840);
        p.release("old", old);
        // Its load shows until the shard publishes again: the next rooms still spread.
        let a = p.claim("a");
        let b = p.claim("b");
        assert_ne!(a, b);
    }

    #[test]
    fn a_room_spreads_its_viewers_once_its_home_shard_holds_enough_of_its_sessions() {
        let p = Placement::new(2, 3);
        let home = p.claim("big");
        let viewers: Vec<(usize, usize)> = (0..2).map(|_| p.claim_viewer("big")).collect();
        assert_eq!(viewers, vec![(home, home); 2], "below the threshold: home");
        p.publish_load(home, 3_000);
        // Three sessions at home: the next viewers go where the load is least, the other
        // shard, until the viewers placed there since count for as much as home carries.
        let spread: Vec<usize> = (0..20).map(|_| p.claim_viewer("big").0).collect();
        let other = 1 - home;
        assert_eq!(spread[0], other, "{spread:?}");
        let away = spread.iter().filter(|&&s| s == other).count();
        assert!((15..=17).contains(&away), "{spread:?}");
        assert_eq!(p.sessions_of("big")[other], away);
        assert_eq!(p.claim_viewer("big").1, home, "the home shard stays");
        assert_eq!(p.claim("big"), home, "publishers join the home shard");
        // The room is forgotten only when its sessions on every shard have ended.
        for (s, n) in p.sessions_of("big").into_iter().enumerate() {
            for _ in 0..n {
                assert_eq!(p.shard_of("big"), Some(home));
                p.release("big", s);
            }
        }
        assert_eq!(p.shard_of("big"), None);
        assert_eq!(p.rooms_on(home), 0);
    }

    #[test]
    fn claims_from_many_threads_agree_on_one_shard_per_room() {
        let p = std::sync::Arc::new(Placement::new(4, SPREAD_AFTER));
        let threads: Vec<_> = (0..4)
            .map(|_| {
                let p = p.clone();
                std::thread::spawn(move || {
                    (0..200)
                        .map(|i| p.claim(&format!("room{}", i % 20)))
                        .collect::<Vec<_>>()
                })
            })
            .collect();
        let results: Vec<Vec<usize>> = threads
            .into_iter()
            .map(|t| t.join().expect("thread"))
            .collect();
        for i in 0..20 {
            let first = results[0][i];
            for r in &results {
                for (j, s) in r.iter().enumerate().filter(|(j, _)| j % 20 == i) {
                    assert_eq!(*s, first, "room{i} claim {j}");
                }
            }
        }
        let total: usize = (0..4).map(|s| p.rooms_on(s)).sum();
        assert_eq!(total, 20);
    }
}
