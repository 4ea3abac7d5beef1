//! Transport-wide sequence numbers and send times on Parley's own send path, and the
//! viewer's feedback about them.
//!
//! The WebRTC stack's congestion-control interceptors see only what the stack sends; Parley
//! seals forwarded media itself. So, per viewer connection, [`SendHistory`] numbers each
//! packet as it is sealed (the transport-wide-cc header extension), stamps abs-send-time
//! (for receivers that estimate themselves and send REMB), and remembers when each packet
//! left and how large it was, in a fixed ring. A TWCC feedback packet then becomes the
//! per-packet reports the estimator reads ([`SendHistory::reports`]).
//!
//! The stamps go into extension elements the slot's header already holds (placeholders
//! written by the forwarder); [`write_extension`] finds an element by id in a marshalled
//! header, in either the one-byte or the two-byte form (RFC 8285).

use rtc::interceptor::{convert_twcc, PacketReport};
use rtc::rtcp::transport_feedbacks::cc_feedback_report::Ecn;
use rtc::rtcp::transport_feedbacks::transport_layer_cc::TransportLayerCc;
use std::time::{Duration, Instant};

/// Packets remembered per connection: about four seconds at 2.5 Mbit/s.
const HISTORY: usize = 1024;

/// One sealed packet: its transport-wide number, when it left (µs after the history's
/// epoch) and its size. `size == 0`: empty or already reported.
#[derive(Clone, Copy, Default)]
struct Sent {
    seq: u16,
    size: u16,
    micros: u32,
}

/// The transport-wide numbering and send record of one connection.
pub struct SendHistory {
    epoch: Instant,
    next: u16,
    /// Counts every number handed out, for a report id that does not wrap.
    issued: u64,
    ring: Box<[Sent; HISTORY]>,
}

impl SendHistory {
    /// An empty history; times count from `epoch`.
    pub fn new(epoch: Instant) -> Self {
        SendHistory {
            epoch,
            next: 0,
            issued: 0,
            ring: Box::new([Sent::default(); HISTORY]),
        }
    }

    /// Numbers a packet of `size` bytes sent `now`; returns its transport-wide number.
    pub fn record(&mut self, now: Instant, size: usize) -> u16 {
        let seq = self.next;
        self.next = seq.wrapping_add(1);
        self.issued += 1;
        let micros = now.saturating_duration_since(self.epoch).as_micros() as u32;
        self.ring[usize::from(seq) % HISTORY] = Sent {
            seq,
            size: size.clamp(1, usize::from(u16::MAX)) as u16,
            micros,
        };
        seq
    }

    /// The 24-bit abs-send-time of `now` (6.18 fixed-point seconds; only differences count,
    /// so the history's epoch serves as zero).
    pub fn abs_send_time(&self, now: Instant) -> [u8; 3] {
        let since = now.saturating_duration_since(self.epoch);
        let fixed =
            (since.as_secs() << 18) | ((u64::from(since.subsec_nanos()) << 18) / 1_000_000_000);
        let v = (fixed & 0x00ff_ffff) as u32;
        [(v >> 16) as u8, (v >> 8) as u8, v as u8]
    }

    /// The reports one TWCC feedback gives: each packet it names that this history still
    /// holds and has not reported, in send order. Only the first `packet_status_count`
    /// statuses name packets: libwebrtc pads its last status vector chunk with "not received"
    /// symbols, which `convert_twcc` reads as packets lost (and would mark reported before
    /// their real report came).
    pub fn reports(&mut self, feedback: &TransportLayerCc) -> Vec<PacketReport> {
        let newest = self.next.wrapping_sub(1);
        let mut out: Vec<PacketReport> = convert_twcc(feedback)
            .into_iter()
            .take(usize::from(feedback.packet_status_count))
            .filter_map(|ack| {
                let entry = &mut self.ring[usize::from(ack.sequence_number) % HISTORY];
                if entry.size == 0 || entry.seq != ack.sequence_number {
                    return None;
                }
                let size = usize::from(entry.size);
                entry.size = 0;
                let behind = u64::from(newest.wrapping_sub(ack.sequence_number));
                Some(PacketReport {
                    ssrc: 0,
                    id: self.issued.saturating_sub(1 + behind),
                    rtp_sequence_number: 0,
                    is_twcc: true,
                    twcc_sequence_number: ack.sequence_number,
                    size,
                    arrived: ack.arrived,
                    departure: self.epoch + Duration::from_micros(u64::from(entry.micros)),
                    arrival: ack.arrival,
                    ecn: Ecn::NotEct,
                })
            })
            .collect();
        out.sort_unstable_by_key(|r| r.id);
        out
    }
}

/// Writes `value` over the data of header extension element `id` in the RTP header that
/// starts `packet` (`header_len` bytes). False when the header has no such element of that
/// length.
pub fn write_extension(packet: &mut [u8], header_len: usize, id: u8, value: &[u8]) -> bool {
    let Some(&first) = packet.first() else {
        return false;
    };
    if first & 0x10 == 0 {
        return false;
    }
    let start = 12 + 4 * usize::from(first & 0x0f);
    let Some(head) = packet.get(start..start + 4) else {
        return false;
    };
    let profile = u16::from_be_bytes([head[0], head[1]]);
    let words = usize::from(u16::from_be_bytes([head[2], head[3]]));
    let end = (start + 4 + 4 * words).min(header_len);
    let two_byte = profile & 0xfff0 == 0x1000;
    if profile != 0xbede && !two_byte {
        return false;
    }
    let mut at = start + 4;
    while at < end {
        let (element_id, len, data) = if two_byte {
            let (Some(&i), Some(&l)) = (packet.get(at), packet.get(at + 1)) else {
                return false;
            };
            (i, usize::from(l), at + 2)
        } else {
            let b = packet[at];
            if b == 0 {
                at += 1;
                continue;
            }
            if b >> 4 == 15 {
                return false;
            }
            (b >> 4, usize::from(b & 0x0f) + 1, at + 1)
        };
        if element_id == 0 {
            at += 1;
            continue;
        }
        if element_id == id {
            if len != value.len() || data + len > end {
                return false;
            }
            packet[data..data + len].copy_from_slice(value);
            return true;
        }
        at = data + len;
    }
    false
}

#[cfg(test)]
mod tests {
    use super::*;
    use rtc::rtcp::transport_feedbacks::transport_layer_cc::{
        PacketStatusChunk, RecvDelta, RunLengthChunk, StatusChunkTypeTcc, StatusVectorChunk,
        SymbolSizeTypeTcc, SymbolTypeTcc,
    };
    use rtc::rtp::header::{Extension, Header};
    use rtc::shared::marshal::{Marshal, Unmarshal};

    fn header(profile: u16, extensions: &[(u8, &'static [u8])]) -> Vec<u8> {
        let h = Header {
            version: 2,
            extension: true,
            extension_profile: profile,
            extensions: extensions
                .iter()
                .map(|(id, v)| Extension {
                    id: *id,
                    payload: bytes::Bytes::from_static(v),
                })
                .collect(),
            ssrc: 7,
            ..Default::default()
        };
        h.marshal().expect("header").to_vec()
    }

    #[test]
    fn extensions_are_found_in_both_forms() {
        for profile in [0xbede, 0x1000] {
            let mut buf = header(profile, &[(3, b"\x01"), (5, b"\0\0"), (2, b"\0\0\0")]);
            let len = buf.len();
            assert!(
                write_extension(&mut buf, len, 5, &[0xab, 0xcd]),
                "{profile:x}"
            );
            assert!(write_extension(&mut buf, len, 2, &[1, 2, 3]));
            assert!(
                !write_extension(&mut buf, len, 5, &[1, 2, 3]),
                "wrong length"
            );
            assert!(!write_extension(&mut buf, len, 9, &[1]), "absent");
            let back = Header::unmarshal(&mut &buf[..]).expect("parse");
            assert_eq!(back.get_extension(5).as_deref(), Some(&[0xab, 0xcd][..]));
            assert_eq!(back.get_extension(2).as_deref(), Some(&[1, 2, 3][..]));
            assert_eq!(back.get_extension(3).as_deref(), Some(&[1][..]));
        }
        let mut none = header(0xbede, &[]);
        none[0] &= !0x10;
        let len = none.len();
        assert!(!write_extension(&mut none, len, 1, &[1]));
        for cut in 0..len {
            let mut short = header(0xbede, &[(5, b"\0\0")]);
            let _ = write_extension(&mut short[..cut], cut, 5, &[1, 2]);
        }
    }

    /// `n` receive deltas of 10 ms.
    fn deltas(n: usize) -> Vec<RecvDelta> {
        (0..n)
            .map(|_| RecvDelta {
                type_tcc_packet: SymbolTypeTcc::PacketReceivedSmallDelta,
                delta: 10_000,
            })
            .collect()
    }

    /// Feedback saying packets `base..base + n` arrived, 10 ms apart.
    fn received_run(base: u16, n: u16) -> TransportLayerCc {
        TransportLayerCc {
            base_sequence_number: base,
            packet_status_count: n,
            packet_chunks: vec![PacketStatusChunk::RunLengthChunk(RunLengthChunk {
                type_tcc: StatusChunkTypeTcc::RunLengthChunk,
                packet_status_symbol: SymbolTypeTcc::PacketReceivedSmallDelta,
                run_length: n,
            })],
            recv_deltas: deltas(usize::from(n)),
            ..Default::default()
        }
    }

    #[test]
    fn feedback_becomes_reports_in_send_order_once() {
        let t0 = Instant::now();
        let mut h = SendHistory::new(t0);
        for i in 0..5u64 {
            let seq = h.record(t0 + Duration::from_millis(10 * i), 1000 + i as usize);
            assert_eq!(u64::from(seq), i);
        }
        let feedback = received_run(1, 3);
        let reports = h.reports(&feedback);
        let got: Vec<(u16, usize, u64)> = reports
            .iter()
            .map(|r| (r.twcc_sequence_number, r.size, r.id))
            .collect();
        assert_eq!(got, vec![(1, 1001, 1), (2, 1002, 2), (3, 1003, 3)]);
        assert_eq!(reports[0].departure, t0 + Duration::from_millis(10));
        assert!(reports.iter().all(|r| r.arrived));
        assert!(
            h.reports(&feedback).is_empty(),
            "each packet is reported once"
        );
    }

    #[test]
    fn the_padding_of_a_last_status_vector_names_no_packet() {
        // As libwebrtc writes it: two packets received, then twelve padding symbols.
        let t0 = Instant::now();
        let mut h = SendHistory::new(t0);
        for i in 0..5u64 {
            h.record(t0 + Duration::from_millis(10 * i), 1000);
        }
        let mut symbols = vec![SymbolTypeTcc::PacketReceivedSmallDelta; 2];
        symbols.resize(14, SymbolTypeTcc::PacketNotReceived);
        let feedback = TransportLayerCc {
            base_sequence_number: 0,
            packet_status_count: 2,
            reference_time: 0,
            packet_chunks: vec![PacketStatusChunk::StatusVectorChunk(StatusVectorChunk {
                type_tcc: StatusChunkTypeTcc::StatusVectorChunk,
                symbol_size: SymbolSizeTypeTcc::TwoBit,
                symbol_list: symbols,
            })],
            recv_deltas: deltas(2),
            ..Default::default()
        };
        let reports = h.reports(&feedback);
        assert_eq!(reports.len(), 2, "{reports:?}");
        assert!(reports.iter().all(|r| r.arrived));
        // The packets after them are still unreported: their own feedback counts.
        let later = received_run(2, 3);
        let reports = h.reports(&later);
        assert_eq!(reports.len(), 3);
        assert!(reports.iter().all(|r| r.arrived));
    }

    #[test]
    fn abs_send_time_is_six_dot_eighteen_seconds() {
        let t0 = Instant::now();
        let h = SendHistory::new(t0);
        assert_eq!(h.abs_send_time(t0), [0, 0, 0]);
        assert_eq!(h.abs_send_time(t0 + Duration::from_secs(1)), [0x04, 0, 0]);
        assert_eq!(
            h.abs_send_time(t0 + Duration::from_millis(500)),
            [0x02, 0, 0]
        );
        assert_eq!(
            h.abs_send_time(t0 + Duration::from_secs(64)),
            [0, 0, 0],
            "wraps"
        );
    }
}
