//! Transport-wide congestion control feedback, as a browser's receiver sends it.
//!
//! The transport-wide sequence number travels in an RTP header extension, which SRTP does
//! not encrypt, so [`transport_seq`] reads it from the clear header of every packet,
//! including the ones the media thread never decrypts. A [`TwccRecorder`] keeps each
//! (sequence number, arrival time) and, when asked, turns the arrivals up to `now` into one
//! `TransportLayerCc` packet (draft-holmer-rmcat-transport-wide-cc-extensions-01): a base
//! sequence number, a reference time in 64 ms units, status chunks (run-length, or 14 one-bit
//! or 7 two-bit symbols) and receive deltas in 250 µs units. Packets missing between the
//! last reported and the newest arrival are reported lost.
//!
//! The last chunk is never padded with symbols past the status count: a short tail is
//! written as run-length chunks, so a reader that walks every symbol of every chunk sees no
//! packets that were not reported on.
//!
//! Pure: arrival times and `now` come in as CLOCK_REALTIME nanoseconds (the clock of the
//! sockets' receive timestamps). Recording does not allocate once the buffer has grown to
//! a feedback interval's packets.

use rtc::rtcp::transport_feedbacks::transport_layer_cc::{
    PacketStatusChunk, RecvDelta, RunLengthChunk, StatusChunkTypeTcc, StatusVectorChunk,
    SymbolSizeTypeTcc, SymbolTypeTcc, TransportLayerCc,
};

/// Microseconds per reference-time tick.
const REFERENCE_TICK_US: i64 = 64_000;
/// Microseconds per receive-delta unit.
const DELTA_UNIT_US: i64 = 250;
/// Most packets one run-length chunk covers (13 bits).
const MAX_RUN: usize = 0x1fff;
/// Furthest back a feedback reports missing packets (as libwebrtc).
const MAX_MISSING: i64 = 0x7ffe;
/// Most received packets in one feedback; the rest wait for the next.
const MAX_RECEIVED: usize = 1000;
/// Arrivals kept while no feedback is taken; newer ones are not recorded.
const MAX_PENDING: usize = 8192;

/// The transport-wide sequence number in extension element `id` of the RTP packet
/// `packet`, from its clear header (one-byte or two-byte extension form, RFC 8285).
pub fn transport_seq(packet: &[u8], id: u8) -> Option<u16> {
    let first = *packet.first()?;
    if first & 0x10 == 0 {
        return None;
    }
    let start = 12 + 4 * usize::from(first & 0x0f);
    let head = packet.get(start..start + 4)?;
    let profile = u16::from_be_bytes([head[0], head[1]]);
    let words = usize::from(u16::from_be_bytes([head[2], head[3]]));
    let body = packet.get(start + 4..start + 4 + 4 * words)?;
    let two_byte = profile & 0xfff0 == 0x1000;
    if profile != 0xbede && !two_byte {
        return None;
    }
    let mut at = 0;
    while at < body.len() {
        let (element, len, data) = if two_byte {
            let element = body[at];
            if element == 0 {
                at += 1;
                continue;
            }
            (element, usize::from(*body.get(at + 1)?), at + 2)
        } else {
            let b = body[at];
            match b >> 4 {
                0 => {
                    at += 1;
                    continue;
                }
                15 => return None,
                element => (element, usize::from(b & 0x0f) + 1, at + 1),
            }
        };
        if element == id {
            let v = body.get(data..data + len.min(2))?;
            return (v.len() == 2).then(|| u16::from_be_bytes([v[0], v[1]]));
        }
        at = data + len;
    }
    None
}

/// One recorded arrival.
#[derive(Clone, Copy, Debug)]
struct Arrival {
    /// Extended (unwrapped) transport-wide sequence number.
    seq: i64,
    /// Arrival, µs after the recorder's epoch.
    at_us: i64,
}

/// One receiver's arrivals and feedback state.
#[derive(Debug)]
pub struct TwccRecorder {
    epoch_ns: u64,
    sender_ssrc: u32,
    media_ssrc: u32,
    arrivals: Vec<Arrival>,
    highest: Option<i64>,
    /// The first sequence number the next feedback reports on.
    next: Option<i64>,
    feedbacks: u8,
}

impl TwccRecorder {
    /// A recorder whose times count from `epoch_ns`; its feedback names `sender_ssrc`.
    pub fn new(epoch_ns: u64, sender_ssrc: u32) -> Self {
        TwccRecorder {
            epoch_ns,
            sender_ssrc,
            media_ssrc: 0,
            arrivals: Vec::with_capacity(256),
            highest: None,
            next: None,
            feedbacks: 0,
        }
    }

    /// Notes that packet `seq` of stream `ssrc` arrived at `arrival_ns`.
    pub fn record(&mut self, seq: u16, ssrc: u32, arrival_ns: u64) {
        let ext = match self.highest {
            None => i64::from(seq),
            Some(h) => h + i64::from(seq.wrapping_sub(h as u16) as i16),
        };
        self.highest = Some(self.highest.map_or(ext, |h| h.max(ext)));
        if self.next.is_some_and(|n| ext < n) || self.arrivals.len() >= MAX_PENDING {
            return;
        }
        self.media_ssrc = ssrc;
        let at_us = (arrival_ns.saturating_sub(self.epoch_ns) / 1000) as i64;
        self.arrivals.push(Arrival { seq: ext, at_us });
    }

    /// Arrivals recorded and not yet reported.
    #[cfg(test)]
    fn pending(&self) -> usize {
        self.arrivals.len()
    }

    /// One feedback packet about everything that arrived up to `now_ns` and was not
    /// reported yet, or `None` when nothing did.
    pub fn feedback(&mut self, now_ns: u64) -> Option<TransportLayerCc> {
        let now_us = (now_ns.saturating_sub(self.epoch_ns) / 1000) as i64;
        let ready = self
            .arrivals
            .iter()
            .position(|a| a.at_us > now_us)
            .unwrap_or(self.arrivals.len());
        let batch = &mut self.arrivals[..ready];
        batch.sort_unstable_by_key(|a| a.seq);
        let newest = batch.last()?.seq;
        let base = self.next.unwrap_or(batch[0].seq).max(newest - MAX_MISSING);
        let reference = batch.iter().find(|a| a.seq >= base)?.at_us / REFERENCE_TICK_US;
        let mut symbols = Vec::new();
        let mut deltas = Vec::new();
        let mut expected = base;
        let mut last_unit = reference * (REFERENCE_TICK_US / DELTA_UNIT_US);
        let mut used = 0;
        for a in batch.iter() {
            if a.seq < expected {
                used += 1; // late or duplicate: already reported
                continue;
            }
            let unit = a.at_us / DELTA_UNIT_US;
            let delta = unit - last_unit;
            if i16::try_from(delta).is_err() || deltas.len() == MAX_RECEIVED {
                break;
            }
            while expected < a.seq {
                symbols.push(SymbolTypeTcc::PacketNotReceived);
                expected += 1;
            }
            let symbol = if (0..=255).contains(&delta) {
                SymbolTypeTcc::PacketReceivedSmallDelta
            } else {
                SymbolTypeTcc::PacketReceivedLargeDelta
            };
            symbols.push(symbol);
            deltas.push(RecvDelta {
                type_tcc_packet: symbol,
                delta: delta * DELTA_UNIT_US,
            });
            last_unit = unit;
            expected += 1;
            used += 1;
        }
        self.arrivals.drain(..used);
        if deltas.is_empty() {
            return None;
        }
        self.next = Some(expected);
        let count = self.feedbacks;
        self.feedbacks = count.wrapping_add(1);
        Some(TransportLayerCc {
            sender_ssrc: self.sender_ssrc,
            media_ssrc: self.media_ssrc,
            base_sequence_number: base as u16,
            packet_status_count: symbols.len() as u16,
            reference_time: (reference & 0x00ff_ffff) as u32,
            fb_pkt_count: count,
            packet_chunks: status_chunks(&symbols),
            recv_deltas: deltas,
        })
    }
}

/// Encodes packet statuses as chunks: a run-length chunk for a run of 14 or more (or for the
/// rest of the list when it is all one status), else 14 one-bit symbols when none needs a
/// large delta, else 7 two-bit symbols; a tail shorter than a vector goes as runs.
fn status_chunks(symbols: &[SymbolTypeTcc]) -> Vec<PacketStatusChunk> {
    let mut chunks = Vec::new();
    let mut i = 0;
    while i < symbols.len() {
        let rest = &symbols[i..];
        let run = rest
            .iter()
            .take(MAX_RUN)
            .take_while(|&&s| s == rest[0])
            .count();
        let one_bit =
            rest.len() >= 14 && !rest[..14].contains(&SymbolTypeTcc::PacketReceivedLargeDelta);
        let (chunk, used) = if run >= 14 || run == rest.len() || rest.len() < 7 {
            (
                PacketStatusChunk::RunLengthChunk(RunLengthChunk {
                    type_tcc: StatusChunkTypeTcc::RunLengthChunk,
                    packet_status_symbol: rest[0],
                    run_length: run as u16,
                }),
                run,
            )
        } else {
            let (size, n) = if one_bit {
                (SymbolSizeTypeTcc::OneBit, 14)
            } else {
                (SymbolSizeTypeTcc::TwoBit, 7)
            };
            (
                PacketStatusChunk::StatusVectorChunk(StatusVectorChunk {
                    type_tcc: StatusChunkTypeTcc::StatusVectorChunk,
                    symbol_size: size,
                    symbol_list: rest[..n].to_vec(),
                }),
                n,
            )
        };
        chunks.push(chunk);
        i += used;
    }
    chunks
}

#[cfg(test)]
mod tests {
    use super::*;
    use rtc::interceptor::convert_twcc;
    use rtc::rtcp::Packet;
    use rtc::shared::marshal::{Marshal, Unmarshal};
    use std::time::Duration;

    const EPOCH: u64 = 1_700_000_000_000_000_000;

    /// Marshals `fb`, parses it back, and returns (seq, arrival µs since the epoch) per
    /// reported packet (`None` = lost).
    fn round_trip(fb: &TransportLayerCc) -> Vec<(u16, Option<u64>)> {
        let raw = fb.marshal().expect("marshal");
        assert_eq!(raw.len() % 4, 0);
        let mut buf = &raw[..];
        let parsed = TransportLayerCc::unmarshal(&mut buf).expect("unmarshal");
        assert_eq!(&parsed, fb, "the rtcp crate reads back what was built");
        assert_eq!(parsed.header().length as usize, raw.len() / 4 - 1);
        let acks = convert_twcc(&parsed);
        assert_eq!(
            acks.len(),
            usize::from(fb.packet_status_count),
            "no symbol past the status count"
        );
        acks.iter()
            .map(|a| {
                let at = a.arrival.map(|d: Duration| d.as_micros() as u64);
                assert_eq!(a.arrived, at.is_some());
                (a.sequence_number, at)
            })
            .collect()
    }

    /// Arrival `us` after the epoch, as the recorder quantizes it (250 µs units).
    fn q(us: u64) -> Option<u64> {
        Some(us / 250 * 250)
    }

    #[test]
    fn reads_the_sequence_number_from_a_clear_header() {
        use rtc::rtp::Header;
        let mut one = Header {
            version: 2,
            extension: true,
            extension_profile: 0xbede,
            ssrc: 7,
            ..Default::default()
        };
        one.set_extension(1, bytes::Bytes::from_static(&[0xaa]))
            .expect("ext");
        one.set_extension(3, bytes::Bytes::from_static(&[0x12, 0x34]))
            .expect("ext");
        let mut raw = one.marshal().expect("marshal").to_vec();
        raw.extend_from_slice(&[9; 40]);
        assert_eq!(transport_seq(&raw, 3), Some(0x1234));
        assert_eq!(transport_seq(&raw, 2), None);
        assert_eq!(
            transport_seq(&raw, 1),
            None,
            "one byte is not a sequence number"
        );
        let mut two = Header {
            version: 2,
            extension: true,
            extension_profile: 0x1000,
            csrc: vec![1, 2],
            ..Default::default()
        };
        two.set_extension(20, bytes::Bytes::from_static(&[0xff, 0xfe]))
            .expect("ext");
        two.set_extension(5, bytes::Bytes::from_static(&[1, 2, 3, 4, 5]))
            .expect("ext");
        let raw = two.marshal().expect("marshal");
        assert_eq!(transport_seq(&raw, 20), Some(0xfffe));
        assert_eq!(transport_seq(&raw, 5), Some(0x0102));
        let plain = Header {
            version: 2,
            ..Default::default()
        };
        assert_eq!(transport_seq(&plain.marshal().expect("marshal"), 3), None);
        // Truncated or garbage input is no sequence number, and no panic.
        for cut in 0..raw.len() {
            let _ = transport_seq(&raw[..cut], 20);
        }
        assert_eq!(transport_seq(&[0x9f; 30], 1), None);
        assert_eq!(transport_seq(&[0x90; 20], 0), None);
    }

    #[test]
    fn received_lost_and_arrival_deltas_survive_the_wire() {
        let mut r = TwccRecorder::new(EPOCH, 0x5eed);
        // 100..=139 with 105..=107 and 130 lost; arrivals 1 ms apart from 10.1 ms, one gap
        // of 80 ms (a large delta) before 120.
        let mut expect = Vec::new();
        let mut at_us = 10_100u64;
        for seq in 100u16..140 {
            if seq == 120 {
                at_us += 80_000;
            }
            if (105..=107).contains(&seq) || seq == 130 {
                expect.push((seq, None));
                continue;
            }
            r.record(seq, 42, EPOCH + at_us * 1000);
            expect.push((seq, q(at_us)));
            at_us += 1000;
        }
        let fb = r.feedback(EPOCH + 1_000_000_000).expect("a feedback");
        assert_eq!((fb.sender_ssrc, fb.media_ssrc), (0x5eed, 42));
        assert_eq!((fb.base_sequence_number, fb.packet_status_count), (100, 40));
        assert_eq!((fb.reference_time, fb.fb_pkt_count), (0, 0));
        assert!(fb
            .recv_deltas
            .iter()
            .any(|d| d.type_tcc_packet == SymbolTypeTcc::PacketReceivedLargeDelta));
        assert_eq!(round_trip(&fb), expect);
        assert_eq!(r.pending(), 0);
        assert!(r.feedback(EPOCH + 2_000_000_000).is_none(), "nothing new");
    }

    #[test]
    fn later_feedback_continues_across_the_wrap() {
        let mut r = TwccRecorder::new(EPOCH, 1);
        let t = |ms: u64| EPOCH + ms * 1_000_000;
        r.record(65533, 9, t(200));
        r.record(65534, 9, t(201));
        let first = r.feedback(t(250)).expect("first");
        assert_eq!(
            round_trip(&first),
            [(65533, q(200_000)), (65534, q(201_000))]
        );
        assert_eq!(first.reference_time, 3, "200 ms in 64 ms ticks");
        // 65535 and 0 are lost; 1 and 2 arrive; 3 is in the future.
        r.record(1, 9, t(260));
        r.record(2, 9, t(290));
        r.record(3, 9, t(400));
        let second = r.feedback(t(300)).expect("second");
        assert_eq!(second.fb_pkt_count, 1);
        assert_eq!(
            round_trip(&second),
            [(65535, None), (0, None), (1, q(260_000)), (2, q(290_000))]
        );
        assert_eq!(r.pending(), 1, "the packet still in the queue waits");
        // A late copy of something already reported is not reported again.
        r.record(65534, 9, t(305));
        let third = r.feedback(t(450)).expect("third");
        assert_eq!(round_trip(&third), [(3, q(400_000))]);
    }

    #[test]
    fn long_runs_and_vectors_encode_compactly() {
        let mut r = TwccRecorder::new(EPOCH, 1);
        // 60 received in a row, 30 lost, then 23 alternating (received first and last).
        let mut expect = Vec::new();
        for i in 0..113u16 {
            let received = i < 60 || (i >= 90 && i % 2 == 0);
            let us = 1_000 + u64::from(i) * 100;
            if received {
                r.record(i, 1, EPOCH + us * 1000);
            }
            expect.push((i, received.then(|| q(us)).flatten()));
        }
        let fb = r.feedback(EPOCH + 1_000_000_000).expect("feedback");
        assert_eq!(round_trip(&fb), expect);
        let kinds: Vec<(&str, usize)> = fb
            .packet_chunks
            .iter()
            .map(|c| match c {
                PacketStatusChunk::RunLengthChunk(r) => ("run", usize::from(r.run_length)),
                PacketStatusChunk::StatusVectorChunk(v) => ("vector", v.symbol_list.len()),
            })
            .collect();
        // The alternating stretch: 14 one-bit symbols, 7 two-bit, and a tail of two runs.
        assert_eq!(
            kinds,
            [
                ("run", 60),
                ("run", 30),
                ("vector", 14),
                ("vector", 7),
                ("run", 1),
                ("run", 1)
            ]
        );
    }

    #[test]
    fn a_tail_shorter_than_a_vector_is_not_padded() {
        // received, lost, received: three statuses, which one two-bit vector would pad to 7.
        let symbols = [
            SymbolTypeTcc::PacketReceivedSmallDelta,
            SymbolTypeTcc::PacketNotReceived,
            SymbolTypeTcc::PacketReceivedLargeDelta,
        ];
        let chunks = status_chunks(&symbols);
        assert_eq!(chunks.len(), 3);
        assert!(chunks
            .iter()
            .all(|c| matches!(c, PacketStatusChunk::RunLengthChunk(r) if r.run_length == 1)));
        // Nine mixed statuses: one two-bit vector of seven, then runs.
        let mut nine = vec![SymbolTypeTcc::PacketReceivedLargeDelta];
        nine.extend([SymbolTypeTcc::PacketNotReceived; 4]);
        nine.extend([SymbolTypeTcc::PacketReceivedSmallDelta; 4]);
        let chunks = status_chunks(&nine);
        assert!(matches!(&chunks[0],
            PacketStatusChunk::StatusVectorChunk(v) if v.symbol_size == SymbolSizeTypeTcc::TwoBit));
        assert!(matches!(&chunks[1],
            PacketStatusChunk::RunLengthChunk(r) if r.run_length == 2));
        assert_eq!(chunks.len(), 2);
    }

    #[test]
    fn a_negative_delta_is_a_large_one() {
        let mut r = TwccRecorder::new(EPOCH, 1);
        r.record(10, 1, EPOCH + 5_000_000);
        r.record(11, 1, EPOCH + 3_000_000);
        let fb = r.feedback(EPOCH + 10_000_000).expect("feedback");
        // In sequence order: 10 then 11 arriving 2 ms earlier.
        assert_eq!(round_trip(&fb), [(10, q(5_000)), (11, q(3_000))]);
    }
}
