//! Which session a datagram on the shared media socket belongs to.
//!
//! The first datagram of a connection is a STUN binding request whose USERNAME starts with
//! the ICE ufrag Parley issued to that session; after that the remote address identifies it
//! (RFC 8445 ICE-lite on one port, as every single-port SFU does). An address is bound only
//! once the session's ICE agent has answered it ([`Demux::confirm`]): a STUN request with the
//! right ufrag but a forged MESSAGE-INTEGRITY binds nothing. Pure lookup tables and a STUN
//! attribute scan that never allocates and never panics.

use crate::engine::rooms::room::SessionKey;
use std::collections::HashMap;
use std::net::SocketAddr;

const STUN_MAGIC: [u8; 4] = [0x21, 0x12, 0xA4, 0x42];
const BINDING_REQUEST: u16 = 0x0001;
const ATTR_USERNAME: u16 = 0x0006;

/// The local (server) ufrag of a STUN binding request, if `data` is one.
pub fn stun_local_ufrag(data: &[u8]) -> Option<&str> {
    let header = data.get(..20)?;
    if header[0] & 0xC0 != 0 || header[4..8] != STUN_MAGIC {
        return None;
    }
    let kind = u16::from_be_bytes([header[0], header[1]]);
    if kind != BINDING_REQUEST {
        return None;
    }
    let len = usize::from(u16::from_be_bytes([header[2], header[3]]));
    let body = data.get(20..20 + len)?;
    let mut at = 0usize;
    while at + 4 <= body.len() {
        let typ = u16::from_be_bytes([body[at], body[at + 1]]);
        let alen = usize::from(u16::from_be_bytes([body[at + 2], body[at + 3]]));
        let value = body.get(at + 4..at + 4 + alen)?;
        if typ == ATTR_USERNAME {
            let username = std::str::from_utf8(value).ok()?;
            return username.split(':').next().filter(|u| !u.is_empty());
        }
        at += 4 + alen.div_ceil(4) * 4;
    }
    None
}

/// Routes datagrams to sessions.
#[derive(Debug, Default)]
pub struct Demux {
    by_ufrag: HashMap<String, SessionKey>,
    by_addr: HashMap<SocketAddr, SessionKey>,
    addrs: HashMap<SessionKey, Vec<SocketAddr>>,
}

/// Most remote addresses one session may be reached from (ICE candidates it tried).
const MAX_ADDRS_PER_SESSION: usize = 8;

impl Demux {
    /// Registers the ufrag issued to a session.
    pub fn add_session(&mut self, session: SessionKey, ufrag: &str) {
        self.by_ufrag.insert(ufrag.to_owned(), session);
    }

    /// The session issued `ufrag`.
    pub fn session_of_ufrag(&self, ufrag: &str) -> Option<SessionKey> {
        self.by_ufrag.get(ufrag).copied()
    }

    /// The session a datagram from `from` belongs to: the one bound to that address, or the
    /// one a STUN request's ufrag names (which binds nothing yet).
    pub fn route(&mut self, from: SocketAddr, data: &[u8]) -> Option<SessionKey> {
        if let Some(s) = self.by_addr.get(&from) {
            return Some(*s);
        }
        let ufrag = stun_local_ufrag(data)?;
        self.by_ufrag.get(ufrag).copied()
    }

    /// Binds `to` to `session` once the session sends to it: its ICE agent only answers
    /// checks whose MESSAGE-INTEGRITY it verified, and only sends media where ICE succeeded.
    /// Returns `None` when `to` was bound already, else the address it displaced, if any.
    pub fn confirm(&mut self, session: SessionKey, to: SocketAddr) -> Option<Option<SocketAddr>> {
        if self.by_addr.contains_key(&to) {
            return None;
        }
        let mut dropped = None;
        let addrs = self.addrs.entry(session).or_default();
        if addrs.len() >= MAX_ADDRS_PER_SESSION {
            // The oldest address makes room: a client that moved keeps working.
            let old = addrs.remove(0);
            self.by_addr.remove(&old);
            dropped = Some(old);
        }
        addrs.push(to);
        self.by_addr.insert(to, session);
        Some(dropped)
    }

    /// Forgets everything about a session; returns the addresses it had.
    pub fn remove_session(&mut self, session: SessionKey) -> Vec<SocketAddr> {
        self.by_ufrag.retain(|_, s| *s != session);
        let addrs = self.addrs.remove(&session).unwrap_or_default();
        for addr in &addrs {
            self.by_addr.remove(addr);
        }
        addrs
    }

    /// Number of addresses bound.
    #[cfg(test)]
    pub fn bound_addresses(&self) -> usize {
        self.by_addr.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn binding(username: &str) -> Vec<u8> {
        let mut attr = Vec::new();
        attr.extend_from_slice(&ATTR_USERNAME.to_be_bytes());
        attr.extend_from_slice(&(username.len() as u16).to_be_bytes());
        attr.extend_from_slice(username.as_bytes());
        while attr.len() % 4 != 0 {
            attr.push(0);
        }
        let mut m = vec![0x00, 0x01];
        m.extend_from_slice(&(attr.len() as u16).to_be_bytes());
        m.extend_from_slice(&STUN_MAGIC);
        m.extend_from_slice(&[7; 12]);
        m.extend_from_slice(&attr);
        m
    }

    #[test]
    fn the_local_ufrag_is_read_from_binding_requests_only() {
        assert_eq!(stun_local_ufrag(&binding("srv1:cli1")), Some("srv1"));
        assert_eq!(stun_local_ufrag(&binding(":cli")), None);
        let mut response = binding("srv1:cli1");
        response[1] = 0x01;
        response[0] = 0x01; // 0x0101 binding success
        assert_eq!(stun_local_ufrag(&response), None);
        let mut bad_cookie = binding("srv1:cli1");
        bad_cookie[4] = 0;
        assert_eq!(stun_local_ufrag(&bad_cookie), None);
    }

    #[test]
    fn truncated_or_random_input_never_routes_or_panics() {
        let full = binding("abcd:efgh");
        for n in 0..full.len() {
            let _ = stun_local_ufrag(&full[..n]);
        }
        let mut x: u32 = 1;
        for _ in 0..2000 {
            let len = (x % 64) as usize;
            let data: Vec<u8> = (0..len)
                .map(|i| {
                    x = x.wrapping_mul(1_103_515_245).wrapping_add(12345 + i as u32);
                    (x >> 16) as u8
                })
                .collect();
            let _ = stun_local_ufrag(&data);
        }
    }

    #[test]
    fn a_full_address_list_drops_the_oldest() {
        let mut d = Demux::default();
        d.add_session(1, "aaaa");
        let addr = |p: u16| SocketAddr::from(([127, 0, 0, 1], p));
        for p in 0..=MAX_ADDRS_PER_SESSION as u16 {
            d.confirm(1, addr(p));
        }
        assert_eq!(d.bound_addresses(), MAX_ADDRS_PER_SESSION);
        assert_eq!(d.route(addr(0), b"x"), None);
        assert_eq!(d.route(addr(MAX_ADDRS_PER_SESSION as u16), b"x"), Some(1));
    }

    #[test]
    fn addresses_stick_after_the_first_binding_and_are_forgotten_with_the_session() {
        let mut d = Demux::default();
        d.add_session(1, "aaaa");
        d.add_session(2, "bbbb");
        let a: SocketAddr = "127.0.0.1:5000".parse().unwrap();
        let b: SocketAddr = "127.0.0.1:5001".parse().unwrap();
        assert_eq!(d.route(a, b"\x80\x60 rtp"), None);
        assert_eq!(d.route(a, &binding("aaaa:x")), Some(1));
        assert_eq!(
            d.route(a, b"\x80\x60 rtp"),
            None,
            "not bound before the answer"
        );
        d.confirm(1, a);
        assert_eq!(d.route(a, b"\x80\x60 rtp"), Some(1));
        assert_eq!(d.route(b, &binding("bbbb:y")), Some(2));
        d.confirm(2, b);
        assert_eq!(d.route(b, &binding("zzzz:y")), Some(2));
        d.remove_session(1);
        assert_eq!(d.route(a, b"\x80\x60 rtp"), None);
        assert_eq!(d.route(a, &binding("aaaa:x")), None);
        assert_eq!(d.bound_addresses(), 1);
    }
}
