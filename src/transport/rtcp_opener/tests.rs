//! Tests of `transport::rtcp_opener`: what the stack's SRTCP seals, Parley's opener opens,
//! once.

use super::*;
use crate::transport::srtp_keys::fixture::{remote_keys, LOCAL_KEY, REMOTE_KEY, REMOTE_SALT};
use rtc::rtcp::receiver_report::ReceiverReport;
use rtc::shared::marshal::Marshal;
use rtc::srtp::context::Context;
use rtc::srtp::protection_profile::ProtectionProfile;

/// The opener a connection gets.
fn opener() -> RtcpOpener {
    let provider = rtc::crypto::default_provider().expect("provider");
    RtcpOpener::new(provider.crypto(), &remote_keys()).expect("opener")
}

/// The viewer's side: the stack's SRTCP context under the remote key.
fn sender() -> Context {
    let provider = rtc::crypto::default_provider().expect("provider");
    Context::new(
        &REMOTE_KEY,
        &REMOTE_SALT,
        ProtectionProfile::AeadAes128Gcm,
        None,
        None,
        provider.crypto(),
    )
    .expect("context")
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

#[test]
fn what_the_stack_seals_opens_to_the_same_bytes_once() {
    let mut opener = opener();
    let mut viewer = sender();
    for (i, ssrc) in [1u32, 1, 0xdead_beef, 1].into_iter().enumerate() {
        let plain = report(ssrc);
        let sealed = viewer.encrypt_rtcp(&plain).expect("seal").to_vec();
        let mut buf = sealed.clone();
        let n = opener
            .open(&mut buf)
            .unwrap_or_else(|| panic!("packet {i} opens"));
        assert_eq!(&buf[..n], &plain[..], "packet {i}");
        let mut again = sealed.clone();
        assert_eq!(opener.open(&mut again), None, "packet {i} replayed");
    }
}

#[test]
fn forged_or_foreign_packets_are_left_to_the_stack() {
    let mut opener = opener();
    let mut viewer = sender();
    let sealed = viewer.encrypt_rtcp(&report(7)).expect("seal").to_vec();
    let mut forged = sealed.clone();
    forged[10] ^= 1;
    let as_sent = forged.clone();
    assert_eq!(opener.open(&mut forged), None, "a changed byte");
    assert_eq!(forged, as_sent, "the stack gets it as it came");
    let mut flagless = sealed.clone();
    let n = flagless.len();
    flagless[n - 4] &= 0x7f;
    assert_eq!(opener.open(&mut flagless), None, "not marked encrypted");
    // A forged packet did not move the replay window: the real one still opens.
    let mut real = sealed.clone();
    assert!(opener.open(&mut real).is_some());
    for bad in [
        &[][..],
        &[0x80, 96, 0, 1][..],
        &sealed[..20],
        &[0x80, 200, 0, 0, 0, 0, 0, 7][..],
    ] {
        let mut b = bad.to_vec();
        assert_eq!(opener.open(&mut b), None, "{bad:?}");
    }
    // Senders past the limit go to the stack.
    for ssrc in 100..100 + MAX_SENDERS as u32 {
        let mut b = viewer.encrypt_rtcp(&report(ssrc)).expect("seal").to_vec();
        let opened = opener.open(&mut b).is_some();
        assert_eq!(opened, ssrc < 100 + MAX_SENDERS as u32 - 1, "sender {ssrc}");
    }
}

#[test]
fn keys_that_open_nothing_are_given_up_on() {
    let mut opener = opener();
    let provider = rtc::crypto::default_provider().expect("provider");
    let mut stranger = Context::new(
        &LOCAL_KEY,
        &REMOTE_SALT,
        ProtectionProfile::AeadAes128Gcm,
        None,
        None,
        provider.crypto(),
    )
    .expect("context");
    for _ in 0..GIVE_UP_AFTER {
        let mut b = stranger.encrypt_rtcp(&report(3)).expect("seal").to_vec();
        assert_eq!(opener.open(&mut b), None);
    }
    let mut b = sender().encrypt_rtcp(&report(3)).expect("seal").to_vec();
    assert_eq!(
        opener.open(&mut b),
        None,
        "given up: the stack opens even this one"
    );
}
