//! Tests of `transport::rtp_opener`: what the stack's SRTP seals, Parley's opener opens to the
//! bytes the stack's own receiving context opens it to, once.

use super::*;
use crate::transport::sealer::{RtpSealer, SealProfile, SEAL_OVERHEAD};
use crate::transport::srtp_keys::fixture::{remote_keys, LOCAL_KEY, REMOTE_KEY, REMOTE_SALT};
use bytes::Bytes;
use rtc::rtcp::receiver_report::ReceiverReport;
use rtc::rtp::header::Extension;
use rtc::rtp::packet::Packet;
use rtc::shared::marshal::Marshal;
use rtc::srtp::context::Context;
use rtc::srtp::option::srtp_replay_protection;
use rtc::srtp::protection_profile::ProtectionProfile;

/// The opener a connection gets.
fn opener() -> RtpOpener {
    let provider = rtc::crypto::default_provider().expect("provider");
    RtpOpener::new(provider.crypto(), &remote_keys()).expect("opener")
}

/// An SRTP context under `key` and the remote salt, with the stack's replay window when
/// `window` is given.
fn context(key: &[u8; 16], window: Option<usize>) -> Context {
    let provider = rtc::crypto::default_provider().expect("provider");
    Context::new(
        key,
        &REMOTE_SALT,
        ProtectionProfile::AeadAes128Gcm,
        window.map(srtp_replay_protection),
        None,
        provider.crypto(),
    )
    .expect("context")
}

/// The publisher's side: the stack's SRTP context sealing under the remote key.
fn publisher() -> Context {
    context(&REMOTE_KEY, None)
}

/// The stack's receiving context for the publisher, as Parley configures it.
fn reference() -> Context {
    context(&REMOTE_KEY, Some(REPLAY_WINDOW))
}

/// An RTP packet of one of five shapes: bare; with CSRCs; with a one-byte header extension
/// that needs padding to a word; with RTP padding; with all three.
fn rtp(ssrc: u32, seq: u16, shape: usize) -> Vec<u8> {
    let mut p = Packet::default();
    p.header.version = 2;
    p.header.payload_type = 96;
    p.header.marker = seq.is_multiple_of(3);
    p.header.sequence_number = seq;
    p.header.timestamp = 90u32.wrapping_mul(u32::from(seq));
    p.header.ssrc = ssrc;
    if shape == 1 || shape == 4 {
        p.header.csrc = vec![0xc5c5_0001, 0xc5c5_0002];
    }
    if shape == 2 || shape == 4 {
        p.header.extension = true;
        p.header.extension_profile = 0xbede;
        p.header.extensions = vec![Extension {
            id: 3,
            payload: Bytes::from_static(&[0xab, 0xcd]),
        }];
    }
    p.header.padding = shape == 3 || shape == 4;
    let len = 1 + usize::from(seq % 61);
    p.payload = Bytes::from(
        (0..len)
            .map(|i| (i as u8) ^ (seq as u8))
            .collect::<Vec<_>>(),
    );
    p.marshal().expect("marshal").to_vec()
}

fn report(ssrc: u32) -> Vec<u8> {
    ReceiverReport {
        ssrc,
        ..Default::default()
    }
    .marshal()
    .expect("marshal")
    .to_vec()
}

/// Seals `plain` as the publisher would.
fn seal(publisher: &mut Context, plain: &[u8]) -> Vec<u8> {
    publisher.encrypt_rtp(plain).expect("seal").to_vec()
}

/// Opens `sealed` with the opener, insisting it does.
fn open(opener: &mut RtpOpener, sealed: &[u8]) -> Vec<u8> {
    let mut buf = sealed.to_vec();
    match opener.open(&mut buf) {
        Opened::Plain(n) => buf[..n].to_vec(),
        other => panic!("not opened: {other:?}"),
    }
}

/// Asserts the opener leaves `data` to the stack as it came.
fn assert_not_mine(opener: &mut RtpOpener, data: &[u8], what: &str) {
    let mut buf = data.to_vec();
    assert_eq!(opener.open(&mut buf), Opened::NotMine, "{what}");
    assert_eq!(buf, data, "{what}: left as it came");
}

#[test]
fn opens_what_the_stack_seals_to_the_bytes_the_stack_opens() {
    let (mut opener, mut publisher, mut stack) = (opener(), publisher(), reference());
    // Across a wrap, with 65_533 arriving late from before it.
    let wrap = [
        65_530u16, 65_531, 65_532, 65_534, 65_535, 0, 1, 2, 65_533, 3, 4,
    ];
    // Strides under half the sequence space: the rollover counter goes to 2.
    let strides = [0u16, 30_000, 60_000, 24_464, 54_464, 18_928, 48_928, 13_392];
    // A stream that starts just before its first wrap.
    let top = [65_535u16, 0, 1];
    let mut order = Vec::new();
    for i in 0..wrap.len() {
        order.extend(wrap.get(i).map(|&s| (0x1111_1111u32, s)));
        order.extend(strides.get(i).map(|&s| (0x2222_2222u32, s)));
        order.extend(top.get(i).map(|&s| (0x3333_3333u32, s)));
    }
    for (i, (ssrc, seq)) in order.into_iter().enumerate() {
        let plain = rtp(ssrc, seq, i % 5);
        let sealed = seal(&mut publisher, &plain);
        let expected = stack.decrypt_rtp(&sealed).expect("the stack opens it");
        assert_eq!(
            &expected[..],
            &plain[..],
            "{ssrc:x} seq {seq}: stack round trip"
        );
        let opened = open(&mut opener, &sealed);
        assert_eq!(
            opened,
            &expected[..],
            "{ssrc:x} seq {seq} (shape {})",
            i % 5
        );
        let mut again = sealed.clone();
        assert_eq!(
            opener.open(&mut again),
            Opened::Rejected,
            "{ssrc:x} seq {seq} replayed"
        );
    }
}

#[test]
fn a_late_packet_does_not_pull_the_rollover_counter_back() {
    // The stack's own context moves a stream's index back to a late packet's; RFC 3711
    // §3.3.1 keeps the highest, as libsrtp senders (and Parley's sealer) count. Here the
    // packet 32_000 past the highest is 33_000 past the late one: measured from the late
    // one, it would be guessed to come from before the wrap.
    let provider = rtc::crypto::default_provider().expect("provider");
    let mut sender = RtpSealer::new(
        provider.crypto(),
        SealProfile::AeadAes128Gcm,
        &remote_keys(),
        1,
    )
    .expect("sealer");
    let mut opener = opener();
    for seq in [60_000u16, 1_500, 500, 33_500, 33_501] {
        let plain = rtp(6, seq, 0);
        let mut buf = plain.clone();
        buf.resize(plain.len() + SEAL_OVERHEAD, 0);
        let n = sender.seal(0, &mut buf, 12, plain.len()).expect("sealed");
        assert_eq!(open(&mut opener, &buf[..n]), plain, "seq {seq}");
    }
}

#[test]
fn a_changed_bit_is_rejected_and_moves_nothing() {
    let (mut opener, mut publisher) = (opener(), publisher());
    open(&mut opener, &seal(&mut publisher, &rtp(5, 10, 2)));
    let sealed = seal(&mut publisher, &rtp(5, 11, 2));
    let header = 12 + 8;
    for (at, what) in [
        (header + 1, "payload"),
        (5, "timestamp"),
        (17, "extension"),
        (sealed.len() - 1, "tag"),
    ] {
        let mut forged = sealed.clone();
        forged[at] ^= 0x04;
        assert_eq!(opener.open(&mut forged), Opened::Rejected, "{what}");
    }
    // A forged sequence number far ahead: had it moved the stream's highest index, the
    // next real packet would be guessed past a wrap and fail.
    let mut ahead = sealed.clone();
    ahead[2..4].copy_from_slice(&40_000u16.to_be_bytes());
    assert_eq!(
        opener.open(&mut ahead),
        Opened::Rejected,
        "forged far ahead"
    );
    assert_eq!(
        open(&mut opener, &sealed),
        rtp(5, 11, 2),
        "the real one opens"
    );
    let next = rtp(5, 12, 0);
    assert_eq!(open(&mut opener, &seal(&mut publisher, &next)), next);
}

#[test]
fn a_packet_older_than_the_window_is_rejected_like_the_stack_does() {
    let (mut opener, mut publisher, mut stack) = (opener(), publisher(), reference());
    let newest = 20 + REPLAY_WINDOW as u16;
    let [too_old, oldest_inside, newest] =
        [20, 21, newest].map(|seq| seal(&mut publisher, &rtp(9, seq, 0)));
    for packet in [&newest, &oldest_inside] {
        stack.decrypt_rtp(packet).expect("the stack opens it");
        open(&mut opener, packet);
    }
    assert!(stack.decrypt_rtp(&too_old).is_err(), "the stack refuses it");
    assert_eq!(opener.open(&mut too_old.clone()), Opened::Rejected);
}

#[test]
fn what_is_not_srtp_is_left_untouched() {
    let (mut opener, mut publisher) = (opener(), publisher());
    let srtcp = publisher.encrypt_rtcp(&report(7)).expect("seal").to_vec();
    assert_not_mine(&mut opener, &srtcp, "SRTCP");
    let sealed = seal(&mut publisher, &rtp(7, 1, 4));
    let mut version1 = sealed.clone();
    version1[0] = (version1[0] & 0x3f) | 0x40;
    let mut cc15 = sealed[..40].to_vec();
    cc15[0] = 0x8f;
    let mut long_extension = sealed.clone();
    long_extension[0] = 0x90;
    long_extension[14..16].copy_from_slice(&[0xff, 0xff]);
    let mut tagless = vec![0x80, 96, 0, 1, 0, 0, 0, 0, 0, 0, 0, 7];
    tagless.extend([0u8; TAG_LEN - 1]);
    for (bad, what) in [
        (&[][..], "empty"),
        (&[0x80][..], "one byte"),
        (&[0x80, 96, 0, 1][..], "a quarter header"),
        (
            &[0x90, 96, 0, 1, 0, 0, 0, 0, 0, 0, 0, 7][..],
            "no extension header",
        ),
        (&tagless[..], "no room for a tag"),
        (&[0u8; 40][..], "version 0"),
        (&version1[..], "version 1"),
        (&cc15[..], "fifteen CSRCs in 40 bytes"),
        (&long_extension[..], "an extension past the end"),
    ] {
        assert_not_mine(&mut opener, bad, what);
    }
    assert_eq!(open(&mut opener, &sealed), rtp(7, 1, 4), "RTP still opens");
}

#[test]
fn keys_that_open_nothing_are_given_up_on() {
    let (mut opener, mut publisher) = (opener(), publisher());
    let mut stranger = context(&LOCAL_KEY, None);
    let mut seq = 0;
    let mut fail = |opener: &mut RtpOpener, n: u32| {
        for _ in 0..n {
            seq += 1;
            let mut b = seal(&mut stranger, &rtp(3, seq, 0));
            assert_eq!(opener.open(&mut b), Opened::Rejected);
        }
    };
    fail(&mut opener, GIVE_UP_AFTER);
    let genuine = seal(&mut publisher, &rtp(4, 3, 0));
    assert_not_mine(
        &mut opener,
        &genuine,
        "given up: the stack opens even this one",
    );
}

#[test]
fn keys_that_opened_once_are_never_given_up_on() {
    let (mut opener, mut publisher) = (opener(), publisher());
    let mut stranger = context(&LOCAL_KEY, None);
    open(&mut opener, &seal(&mut publisher, &rtp(4, 1, 0)));
    for seq in 0..3 * GIVE_UP_AFTER as u16 {
        let mut b = seal(&mut stranger, &rtp(3, seq, 0));
        assert_eq!(
            opener.open(&mut b),
            Opened::Rejected,
            "a bad packet, dropped"
        );
    }
    let genuine = rtp(4, 2, 0);
    assert_eq!(open(&mut opener, &seal(&mut publisher, &genuine)), genuine);
}

#[test]
fn streams_past_the_bound_are_left_to_the_stack() {
    let (mut opener, mut publisher) = (opener(), publisher());
    // A forged stream does not take a place.
    let mut stranger = context(&LOCAL_KEY, None);
    let mut forged = seal(&mut stranger, &rtp(999, 1, 0));
    assert_eq!(opener.open(&mut forged), Opened::Rejected);
    for ssrc in 100..100 + MAX_STREAMS as u32 {
        open(&mut opener, &seal(&mut publisher, &rtp(ssrc, 1, 0)));
    }
    let extra = seal(&mut publisher, &rtp(999, 1, 0));
    assert_not_mine(&mut opener, &extra, "one stream too many");
    let known = rtp(100, 2, 0);
    assert_eq!(open(&mut opener, &seal(&mut publisher, &known)), known);
}

#[test]
fn the_rollover_counter_is_guessed_as_rfc_3711_appendix_a_does() {
    const ROC: u64 = 1 << 16;
    for (highest, seq, index) in [
        (0, 0, 0),
        (100, 65_000, 65_000),
        (65_535, 0, ROC),
        (ROC + 2, 65_533, 65_533),
        (ROC + 2, 3, ROC + 3),
        (0x8000, 0, 0),
        (ROC + 0x7fff, 0xffff, ROC + 0xffff),
        (ROC + 0x7ffe, 0xffff, 0xffff),
        (3 * ROC + 0x9000, 0x0fff, 4 * ROC + 0x0fff),
        (3 * ROC + 0x9000, 0x1000, 3 * ROC + 0x1000),
    ] {
        assert_eq!(
            estimate(highest, seq),
            index,
            "highest {highest:#x}, seq {seq}"
        );
    }
}
