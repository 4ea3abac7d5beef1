//! The recent packets of one published video track, kept to answer viewers' NACKs.
//!
//! One cache per source, not per viewer: a retransmission re-runs the viewer slot's header
//! rewrite over the cached packet. Slots are reused in place (the header's vectors keep their
//! capacity and the payload is a shared `Bytes`), so caching a packet does not allocate once
//! the cache is warm.

use rtc::rtp::Packet;

/// How many packets a cache holds (a power of two): about two seconds of 2.5 Mbit/s video.
pub const CACHE_PACKETS: usize = 512;

/// A ring of recent packets indexed by sequence number.
#[derive(Debug)]
pub struct PacketCache {
    slots: Vec<Option<Packet>>,
}

impl Default for PacketCache {
    fn default() -> Self {
        Self {
            slots: vec![None; CACHE_PACKETS],
        }
    }
}

impl PacketCache {
    /// Keeps `packet`, replacing the one `CACHE_PACKETS` sequence numbers before it.
    pub fn push(&mut self, packet: &Packet) {
        let i = usize::from(packet.header.sequence_number) % CACHE_PACKETS;
        match &mut self.slots[i] {
            Some(kept) => {
                let (h, src) = (&mut kept.header, &packet.header);
                h.version = src.version;
                h.padding = src.padding;
                h.extension = src.extension;
                h.marker = src.marker;
                h.payload_type = src.payload_type;
                h.sequence_number = src.sequence_number;
                h.timestamp = src.timestamp;
                h.ssrc = src.ssrc;
                h.csrc.clone_from(&src.csrc);
                h.extension_profile = src.extension_profile;
                h.extensions.clone_from(&src.extensions);
                h.extensions_padding = src.extensions_padding;
                kept.payload = packet.payload.clone();
            }
            empty => *empty = Some(packet.clone()),
        }
    }

    /// The packet with sequence number `seq`, if it is still kept.
    pub fn get(&self, seq: u16) -> Option<&Packet> {
        self.slots[usize::from(seq) % CACHE_PACKETS]
            .as_ref()
            .filter(|p| p.header.sequence_number == seq)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn packet(seq: u16) -> Packet {
        let mut p = Packet::default();
        p.header.sequence_number = seq;
        p.payload = bytes::Bytes::from(vec![seq as u8; 4]);
        p
    }

    #[test]
    fn keeps_the_last_packets_and_forgets_overwritten_ones() {
        let mut c = PacketCache::default();
        assert!(c.get(1).is_none());
        for seq in 65_000u16..=65_535 {
            c.push(&packet(seq));
        }
        for seq in 0..600u16 {
            c.push(&packet(seq));
        }
        assert_eq!(c.get(599).map(|p| p.payload[0]), Some((599 % 256) as u8));
        assert!(c.get(65_535).is_none(), "overwritten by a later packet");
        assert!(c.get(88).is_some(), "the 512 most recent are kept");
        assert!(c.get(87).is_none(), "older than the ring");
    }
}
