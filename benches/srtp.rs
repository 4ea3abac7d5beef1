//! SRTP protect and unprotect of one 1200-byte RTP packet with `rtc`'s SRTP (rtc-srtp 0.21.1),
//! per crypto provider and per profile a browser negotiates with Parley (AES-128-GCM first,
//! then AES-128-CM-HMAC-SHA1-80).
//!
//! `protect` is what a viewer's leg does per packet (`encrypt_rtp` of the marshalled packet,
//! as `rtc`'s SRTP handler calls it); `unprotect` is the publisher's leg, with the 64-packet
//! replay window `rtc` installs. Only `ring` is compiled in Parley's build; the aws-lc-rs
//! comparison needs `rtc`'s `crypto-aws-lc-rs` feature (see `providers`).
//! Run: `cargo bench --bench srtp`.

use bytes::{Bytes, BytesMut};
use criterion::{criterion_group, criterion_main, BatchSize, Criterion, Throughput};
use rtc::crypto::RTCCryptoProvider;
use rtc::rtp::header::{Extension, Header};
use rtc::rtp::Packet;
use rtc::shared::marshal::Marshal;
use rtc::srtp::context::Context;
use rtc::srtp::option::srtp_replay_protection;
use rtc::srtp::protection_profile::ProtectionProfile;
use std::sync::Arc;

/// The providers to compare, by name.
fn providers() -> Vec<(&'static str, Arc<dyn RTCCryptoProvider>)> {
    vec![(
        "ring",
        Arc::new(rtc::crypto::providers::RingProvider::new()),
    )]
}

const PROFILES: [(&str, ProtectionProfile); 2] = [
    ("aes128gcm", ProtectionProfile::AeadAes128Gcm),
    ("aes128cm_sha1_80", ProtectionProfile::Aes128CmHmacSha1_80),
];

fn context(profile: ProtectionProfile, provider: &dyn RTCCryptoProvider, replay: bool) -> Context {
    let key = vec![0x42; profile.key_len()];
    let salt = vec![0x17; profile.salt_len()];
    let replay = replay.then(|| srtp_replay_protection(64));
    Context::new(&key, &salt, profile, replay, None, provider.crypto()).expect("SRTP context")
}

/// A marshalled VP8 packet with two one-byte header extensions and a 1200-byte payload.
fn packet(seq: u16) -> BytesMut {
    let header = Header {
        version: 2,
        extension: true,
        extension_profile: 0xBEDE,
        extensions: vec![
            Extension {
                id: 1,
                payload: Bytes::from_static(b"0"),
            },
            Extension {
                id: 2,
                payload: Bytes::from_static(&[1, 2, 3]),
            },
        ],
        payload_type: 96,
        sequence_number: seq,
        timestamp: 90_000 + u32::from(seq / 3) * 3000,
        ssrc: 0x5EED_0001,
        ..Default::default()
    };
    let payload = Bytes::from((0..1200).map(|i| i as u8).collect::<Vec<u8>>());
    Packet { header, payload }.marshal().expect("marshal")
}

fn srtp(c: &mut Criterion) {
    let mut g = c.benchmark_group("srtp");
    g.throughput(Throughput::Bytes(packet(0).len() as u64));
    for (provider_name, provider) in providers() {
        for (profile_name, profile) in PROFILES {
            let mut sender = context(profile, provider.as_ref(), false);
            let mut plain = packet(0);
            let mut seq = 0u16;
            g.bench_function(format!("protect/{provider_name}/{profile_name}"), |b| {
                b.iter(|| {
                    seq = seq.wrapping_add(1);
                    plain[2..4].copy_from_slice(&seq.to_be_bytes());
                    sender.encrypt_rtp(&plain).expect("protect")
                })
            });

            let mut sender = context(profile, provider.as_ref(), false);
            let mut receiver = context(profile, provider.as_ref(), true);
            let mut seq = 0u16;
            let roundtrip = sender.encrypt_rtp(&packet(1)).expect("protect");
            let clear = receiver.decrypt_rtp(&roundtrip).expect("unprotect");
            assert_eq!(
                clear,
                packet(1),
                "{provider_name}/{profile_name} round trip"
            );
            g.bench_function(format!("unprotect/{provider_name}/{profile_name}"), |b| {
                b.iter_batched(
                    || {
                        seq = seq.wrapping_add(1);
                        plain[2..4].copy_from_slice(&seq.wrapping_add(1).to_be_bytes());
                        sender.encrypt_rtp(&plain).expect("protect")
                    },
                    |secured| receiver.decrypt_rtp(&secured).expect("unprotect"),
                    BatchSize::SmallInput,
                )
            });
        }
    }
    g.finish();
}

criterion_group!(benches, srtp);
criterion_main!(benches);
