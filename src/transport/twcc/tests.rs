//! Tests of `transport::twcc`: feedback read byte for byte as the WebRTC stack reads it,
//! malformed feedback, and the stamps written into headers.

use super::*;
use proptest::prelude::*;
use rtc::interceptor::convert_twcc;
use rtc::rtcp::transport_feedbacks::transport_layer_cc::{
    PacketStatusChunk, RecvDelta, RunLengthChunk, StatusChunkTypeTcc, StatusVectorChunk,
    SymbolSizeTypeTcc, SymbolTypeTcc, TransportLayerCc,
};
use rtc::rtp::header::{Extension, Header};
use rtc::shared::marshal::{Marshal, Unmarshal};

/// `n` receive deltas of 10 ms.
fn small(n: usize) -> Vec<RecvDelta> {
    (0..n)
        .map(|_| RecvDelta {
            type_tcc_packet: SymbolTypeTcc::PacketReceivedSmallDelta,
            delta: 10_000,
        })
        .collect()
}

fn run(symbol: SymbolTypeTcc, n: u16) -> PacketStatusChunk {
    PacketStatusChunk::RunLengthChunk(RunLengthChunk {
        type_tcc: StatusChunkTypeTcc::RunLengthChunk,
        packet_status_symbol: symbol,
        run_length: n,
    })
}

fn vector(size: SymbolSizeTypeTcc, symbols: Vec<SymbolTypeTcc>) -> PacketStatusChunk {
    PacketStatusChunk::StatusVectorChunk(StatusVectorChunk {
        type_tcc: StatusChunkTypeTcc::StatusVectorChunk,
        symbol_size: size,
        symbol_list: symbols,
    })
}

fn received_run(base: u16, n: u16) -> TransportLayerCc {
    TransportLayerCc {
        base_sequence_number: base,
        packet_status_count: n,
        packet_chunks: vec![run(SymbolTypeTcc::PacketReceivedSmallDelta, n)],
        recv_deltas: small(usize::from(n)),
        ..Default::default()
    }
}

fn bytes(feedback: &TransportLayerCc) -> Vec<u8> {
    feedback.marshal().expect("marshal").to_vec()
}

/// A history that sent `n` packets 10 ms apart, sized 1000 + their number.
fn sent(n: u16) -> (Instant, SendHistory) {
    let t0 = Instant::now();
    let mut h = SendHistory::new(t0);
    for i in 0..n {
        let seq = h.record(
            t0 + Duration::from_millis(10 * u64::from(i)),
            1000 + usize::from(i),
        );
        assert_eq!(seq, i);
    }
    (t0, h)
}

fn read(h: &mut SendHistory, feedback: &TransportLayerCc) -> Vec<Delivery> {
    let mut out = Vec::new();
    h.read_feedback(&bytes(feedback), &mut out).expect("read");
    out
}

#[test]
fn feedback_becomes_deliveries_in_send_order_once() {
    let (t0, mut h) = sent(5);
    let feedback = received_run(1, 3);
    let got = read(&mut h, &feedback);
    let sizes: Vec<u32> = got.iter().map(|d| d.size).collect();
    assert_eq!(sizes, vec![1001, 1002, 1003]);
    assert_eq!(got[0].departure, t0 + Duration::from_millis(10));
    assert!(got.iter().all(|d| d.arrived));
    let arrivals: Vec<_> = got.iter().map(|d| d.arrival).collect();
    assert_eq!(
        arrivals,
        [10, 20, 30].map(|ms| Some(Duration::from_millis(ms))),
    );
    assert!(
        read(&mut h, &feedback).is_empty(),
        "each packet is reported once"
    );
}

#[test]
fn the_padding_of_a_last_status_vector_names_no_packet() {
    // As libwebrtc writes it: two packets received, then twelve padding symbols.
    let (_, mut h) = sent(5);
    let mut symbols = vec![SymbolTypeTcc::PacketReceivedSmallDelta; 2];
    symbols.resize(7, SymbolTypeTcc::PacketNotReceived);
    let feedback = TransportLayerCc {
        base_sequence_number: 0,
        packet_status_count: 2,
        packet_chunks: vec![vector(SymbolSizeTypeTcc::TwoBit, symbols)],
        recv_deltas: small(2),
        ..Default::default()
    };
    let got = read(&mut h, &feedback);
    assert_eq!(got.len(), 2, "{got:?}");
    assert!(got.iter().all(|d| d.arrived));
    // The packets after them are still unreported: their own feedback counts.
    let got = read(&mut h, &received_run(2, 3));
    assert_eq!(got.len(), 3);
    assert!(got.iter().all(|d| d.arrived));
}

/// Feedbacks of every chunk kind and delta size, with losses and negative deltas.
fn samples() -> Vec<TransportLayerCc> {
    use SymbolTypeTcc::*;
    let large = |delta| RecvDelta {
        type_tcc_packet: PacketReceivedLargeDelta,
        delta,
    };
    let one = |delta| RecvDelta {
        type_tcc_packet: PacketReceivedSmallDelta,
        delta,
    };
    vec![
        received_run(0, 20),
        TransportLayerCc {
            base_sequence_number: 65530,
            packet_status_count: 30,
            reference_time: 1234,
            packet_chunks: vec![
                run(PacketReceivedSmallDelta, 4),
                run(PacketNotReceived, 6),
                vector(
                    SymbolSizeTypeTcc::OneBit,
                    [1, 0, 1, 1, 0, 0, 1, 1, 1, 1, 0, 1, 0, 1]
                        .map(|b| {
                            if b == 1 {
                                PacketReceivedSmallDelta
                            } else {
                                PacketNotReceived
                            }
                        })
                        .to_vec(),
                ),
                vector(
                    SymbolSizeTypeTcc::TwoBit,
                    vec![
                        PacketReceivedLargeDelta,
                        PacketNotReceived,
                        PacketReceivedSmallDelta,
                        PacketReceivedLargeDelta,
                        PacketNotReceived,
                        PacketNotReceived,
                        PacketNotReceived,
                    ],
                ),
            ],
            recv_deltas: [one(250), one(500), one(0), one(63_750)]
                .into_iter()
                .chain((0..9).map(|i| one(250 * i)))
                .chain([large(-8_000_000), one(1_000), large(80_000)])
                .collect(),
            ..Default::default()
        },
    ]
}

#[test]
fn deliveries_match_what_the_stack_reads() {
    for feedback in samples() {
        let (_, mut h) = sent(u16::MAX);
        // Numbers 65530.. wrap to 0..: send those too.
        for i in 0..40 {
            h.record(Instant::now(), 2000 + i);
        }
        let raw = bytes(&feedback);
        let parsed = TransportLayerCc::unmarshal(&mut &raw[..]).expect("unmarshal");
        let stack: Vec<(bool, Option<Duration>)> = convert_twcc(&parsed)
            .into_iter()
            .take(usize::from(feedback.packet_status_count))
            .map(|a| (a.arrived, a.arrival))
            .collect();
        let mut out = Vec::new();
        let n = h.read_feedback(&raw, &mut out).expect("read");
        let ours: Vec<(bool, Option<Duration>)> =
            out.iter().map(|d| (d.arrived, d.arrival)).collect();
        assert_eq!(n, stack.len());
        assert_eq!(ours, stack);
    }
}

#[test]
fn feedback_cut_short_is_refused_without_a_panic() {
    let raw = bytes(&samples()[1]);
    for cut in 0..raw.len() {
        let (_, mut h) = sent(100);
        let mut out = Vec::new();
        if h.read_feedback(&raw[..cut], &mut out).is_err() {
            assert!(out.is_empty(), "cut at {cut}");
        }
    }
    let (_, mut h) = sent(10);
    let mut out = Vec::new();
    let mut sr = raw.clone();
    sr[1] = 200;
    assert_eq!(h.read_feedback(&sr, &mut out), Err(FeedbackError::NotTwcc));
}

proptest! {
    #[test]
    fn any_bytes_after_a_feedback_header_are_read_without_a_panic(
        body in proptest::collection::vec(any::<u8>(), 0..200),
    ) {
        let (_, mut h) = sent(300);
        let mut raw = vec![0x8f, 205, 0, 0];
        raw.extend_from_slice(&body);
        let mut out = Vec::new();
        let _ = h.read_feedback(&raw, &mut out);
        prop_assert!(out.len() <= 300);
    }
}

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
