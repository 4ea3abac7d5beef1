//! Parley's own SRTP protection for the media a viewer receives, sealed in place in the
//! caller's buffer: AEAD_AES_128_GCM (RFC 7714) or AES_CM_128_HMAC_SHA1_80 (RFC 3711), the
//! two profiles Parley's DTLS offers.
//!
//! The stack's `write_rtp` copies, re-parses and allocates several times per packet; the
//! fan-out runs once per packet per viewer, so it writes the RTP header straight into a send
//! buffer and seals it here instead. Per packet this is one cipher pass over the payload (plus
//! one HMAC for the counter-mode profile), in place, and never allocates. It keeps one
//! rollover counter per stream (RFC 3711 §3.3.1), because Parley, not the stack, chooses these
//! streams' sequence numbers.

use super::srtp_keys::MasterKeys;
use rtc::crypto::{
    AeadAlgorithm, AeadCipher, BlockCipherAlgorithm, CryptoError, HmacAlgorithm, Mac, RTCCrypto,
    StreamCipher, StreamCipherAlgorithm,
};

/// Room the seal needs after the payload (the longest tag).
pub const SEAL_OVERHEAD: usize = 16;

const LABEL_RTP_ENCRYPTION: u8 = 0x00;
const LABEL_RTP_AUTH: u8 = 0x01;
const LABEL_RTP_SALT: u8 = 0x02;
const GCM_SALT_LEN: usize = 12;
const CM_SALT_LEN: usize = 14;
const CM_TAG_LEN: usize = 10;

/// The SRTP profiles Parley seals itself.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SealProfile {
    /// `SRTP_AEAD_AES_128_GCM`.
    AeadAes128Gcm,
    /// `SRTP_AES128_CM_HMAC_SHA1_80`.
    Aes128CmHmacSha1_80,
}

impl SealProfile {
    /// The profile named as in the stack's transport statistics, if Parley seals it.
    pub fn from_stats_name(name: &str) -> Option<Self> {
        match name {
            "SRTP_AEAD_AES_128_GCM" => Some(Self::AeadAes128Gcm),
            "SRTP_AES128_CM_HMAC_SHA1_80" => Some(Self::Aes128CmHmacSha1_80),
            _ => None,
        }
    }
}

/// The rollover counter of one outgoing stream.
#[derive(Clone, Copy, Debug, Default)]
struct Rollover {
    started: bool,
    last_seq: u16,
    roc: u32,
}

impl Rollover {
    /// The ROC for `seq`, as RFC 3711 Appendix A guesses it, and the state moved forward.
    fn index(&mut self, seq: u16) -> u32 {
        if !self.started {
            self.started = true;
            self.last_seq = seq;
            return self.roc;
        }
        let ahead = seq.wrapping_sub(self.last_seq);
        if ahead == 0 || ahead >= 0x8000 {
            // A repeat or an older packet (a retransmission): the wrap, if any, was backwards.
            return if seq > self.last_seq {
                self.roc.wrapping_sub(1)
            } else {
                self.roc
            };
        }
        if seq < self.last_seq {
            self.roc = self.roc.wrapping_add(1);
        }
        self.last_seq = seq;
        self.roc
    }
}

enum Keys {
    Gcm {
        aead: Box<dyn AeadCipher>,
        salt: [u8; GCM_SALT_LEN],
    },
    CmSha1 {
        ctr: Box<dyn StreamCipher>,
        mac: Box<dyn Mac>,
        salt: [u8; CM_SALT_LEN],
    },
}

/// Seals RTP packets for one connection's outgoing streams.
pub struct RtpSealer {
    keys: Keys,
    streams: Vec<Rollover>,
}

impl std::fmt::Debug for RtpSealer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RtpSealer")
            .field("streams", &self.streams.len())
            .finish()
    }
}

/// RFC 3711 §4.3.1 with key derivation rate 0: the `out.len()` bytes of
/// AES-CM(master key, (salt ⊕ label) ‖ counter).
pub(super) fn derive(
    crypto: &dyn RTCCrypto,
    keys: &MasterKeys,
    salt_len: usize,
    label: u8,
    out: &mut [u8],
) -> Result<(), CryptoError> {
    for (i, chunk) in out.chunks_mut(16).enumerate() {
        let mut block = [0u8; 16];
        block[..salt_len].copy_from_slice(&keys.block[..salt_len]);
        block[7] ^= label;
        block[14..16].copy_from_slice(&(i as u16).to_be_bytes());
        crypto.block_encrypt(BlockCipherAlgorithm::Aes128, &keys.key, &mut block)?;
        chunk.copy_from_slice(&block[..chunk.len()]);
    }
    Ok(())
}

impl RtpSealer {
    /// A sealer for `streams` outgoing streams from a connection's local master key and salt.
    pub(crate) fn new(
        crypto: &dyn RTCCrypto,
        profile: SealProfile,
        master: &MasterKeys,
        streams: usize,
    ) -> Result<Self, CryptoError> {
        let mut key = [0u8; 16];
        let keys = match profile {
            SealProfile::AeadAes128Gcm => {
                let mut salt = [0u8; GCM_SALT_LEN];
                derive(crypto, master, GCM_SALT_LEN, LABEL_RTP_ENCRYPTION, &mut key)?;
                derive(crypto, master, GCM_SALT_LEN, LABEL_RTP_SALT, &mut salt)?;
                let aead = crypto.new_aead(AeadAlgorithm::Aes128Gcm, &key)?;
                Keys::Gcm { aead, salt }
            }
            SealProfile::Aes128CmHmacSha1_80 => {
                let mut salt = [0u8; CM_SALT_LEN];
                let mut auth = [0u8; 20];
                derive(crypto, master, CM_SALT_LEN, LABEL_RTP_ENCRYPTION, &mut key)?;
                derive(crypto, master, CM_SALT_LEN, LABEL_RTP_AUTH, &mut auth)?;
                derive(crypto, master, CM_SALT_LEN, LABEL_RTP_SALT, &mut salt)?;
                let ctr = crypto.new_stream_cipher(StreamCipherAlgorithm::Aes128Ctr, &key)?;
                let mac = crypto.new_hmac(HmacAlgorithm::Sha1, &auth)?;
                Keys::CmSha1 { ctr, mac, salt }
            }
        };
        Ok(Self {
            keys,
            streams: vec![Rollover::default(); streams],
        })
    }

    /// Seals one RTP packet of stream `stream` in place: `buf[..header_len]` holds the header
    /// (authenticated), `buf[header_len..len]` the payload (encrypted), and the tag is written
    /// after it (up to [`SEAL_OVERHEAD`] bytes). Returns the SRTP packet's length, or `None`
    /// when the buffer or header is malformed.
    pub fn seal(
        &mut self,
        stream: usize,
        buf: &mut [u8],
        header_len: usize,
        len: usize,
    ) -> Option<usize> {
        if header_len < 12 || header_len > len || buf.len() < len + SEAL_OVERHEAD {
            return None;
        }
        let seq = u16::from_be_bytes([buf[2], buf[3]]);
        let roc = self.streams.get_mut(stream)?.index(seq);
        match &mut self.keys {
            Keys::Gcm { aead, salt } => {
                let mut iv = [0u8; GCM_SALT_LEN];
                iv[2..6].copy_from_slice(&buf[8..12]);
                iv[6..10].copy_from_slice(&roc.to_be_bytes());
                iv[10..12].copy_from_slice(&seq.to_be_bytes());
                for (v, s) in iv.iter_mut().zip(*salt) {
                    *v ^= s;
                }
                let (head, rest) = buf.split_at_mut(header_len);
                let (payload, tail) = rest.split_at_mut(len - header_len);
                aead.seal_in_place(&iv, head, payload, &mut tail[..16])
                    .ok()?;
                Some(len + 16)
            }
            Keys::CmSha1 { ctr, mac, salt } => {
                let mut iv = [0u8; 16];
                iv[4..8].copy_from_slice(&buf[8..12]);
                iv[8..12].copy_from_slice(&roc.to_be_bytes());
                iv[12..14].copy_from_slice(&seq.to_be_bytes());
                for (v, s) in iv.iter_mut().zip(*salt) {
                    *v ^= s;
                }
                ctr.apply_keystream(&iv, &mut buf[header_len..len]).ok()?;
                let mut tag = [0u8; 20];
                mac.sign(&[&buf[..len], &roc.to_be_bytes()], &mut tag)
                    .ok()?;
                buf[len..len + CM_TAG_LEN].copy_from_slice(&tag[..CM_TAG_LEN]);
                Some(len + CM_TAG_LEN)
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::transport::srtp_keys::KeyTap;
    use rtc::crypto::RTCCryptoProvider;
    use rtc::rtp::packet::Packet;
    use rtc::shared::marshal::Marshal;
    use rtc::srtp::context::Context;
    use rtc::srtp::protection_profile::ProtectionProfile;

    const MASTER_KEY: [u8; 16] = [
        0x0d, 0xcd, 0x21, 0x3e, 0x4c, 0xbc, 0xf2, 0x8f, 0x01, 0x7f, 0x69, 0x94, 0x40, 0x1e, 0x28,
        0x89,
    ];
    const MASTER_SALT: [u8; 14] = [
        0x62, 0x77, 0x60, 0x38, 0xc0, 0x6d, 0xc9, 0x41, 0x9f, 0x6d, 0xd9, 0x43, 0x11, 0x22,
    ];
    const PROFILES: [(SealProfile, ProtectionProfile, usize); 2] = [
        (
            SealProfile::AeadAes128Gcm,
            ProtectionProfile::AeadAes128Gcm,
            12,
        ),
        (
            SealProfile::Aes128CmHmacSha1_80,
            ProtectionProfile::Aes128CmHmacSha1_80,
            14,
        ),
    ];

    /// The keys a connection's tap records when the stack builds its SRTP context.
    fn tapped(profile: ProtectionProfile, salt_len: usize) -> MasterKeys {
        let provider = rtc::crypto::default_provider().expect("provider");
        let (tap, seen) = KeyTap::new(provider);
        let _ctx = Context::new(
            &MASTER_KEY,
            &MASTER_SALT[..salt_len],
            profile,
            None,
            None,
            tap.crypto(),
        )
        .expect("context");
        *seen.local().expect("the context derivation was seen")
    }

    fn rtp(seq: u16, payload: &[u8]) -> Vec<u8> {
        let mut p = Packet::default();
        p.header.version = 2;
        p.header.payload_type = 96;
        p.header.sequence_number = seq;
        p.header.timestamp = 3000u32.wrapping_mul(u32::from(seq));
        p.header.ssrc = 0x1234_5678;
        p.payload = bytes::Bytes::copy_from_slice(payload);
        p.marshal().expect("marshal").to_vec()
    }

    #[test]
    fn the_tap_sees_the_master_key_and_salt() {
        for (_, profile, salt_len) in PROFILES {
            let keys = tapped(profile, salt_len);
            assert_eq!(keys.key, MASTER_KEY);
            assert_eq!(keys.block[..salt_len], MASTER_SALT[..salt_len]);
        }
    }

    #[test]
    fn sealed_packets_match_the_stack_byte_for_byte_across_a_sequence_wrap() {
        let provider = rtc::crypto::default_provider().expect("provider");
        for (seal_profile, profile, salt_len) in PROFILES {
            let salt = &MASTER_SALT[..salt_len];
            let keys = tapped(profile, salt_len);
            let mut sealer =
                RtpSealer::new(provider.crypto(), seal_profile, &keys, 1).expect("sealer");
            let context = || {
                Context::new(&MASTER_KEY, salt, profile, None, None, provider.crypto())
                    .expect("context")
            };
            let (mut reference, mut receiver) = (context(), context());
            for seq in (65_530u16..=65_535).chain(0..6) {
                let plain = rtp(seq, &[seq as u8; 100]);
                let mut buf = plain.clone();
                buf.resize(plain.len() + SEAL_OVERHEAD, 0);
                let n = sealer.seal(0, &mut buf, 12, plain.len()).expect("sealed");
                let expected = reference.encrypt_rtp(&plain).expect("stack seal");
                assert_eq!(&buf[..n], &expected[..], "{seal_profile:?} seq {seq}");
                let opened = receiver.decrypt_rtp(&buf[..n]).expect("opens");
                assert_eq!(&opened[..], &plain[..], "{seal_profile:?} seq {seq}");
            }
        }
    }

    #[test]
    fn a_retransmission_from_before_the_wrap_uses_the_old_rollover_counter() {
        let mut r = Rollover::default();
        assert_eq!(r.index(65_534), 0);
        assert_eq!(r.index(65_535), 0);
        assert_eq!(r.index(1), 1);
        assert_eq!(r.index(65_535), 0, "resent from before the wrap");
        assert_eq!(r.index(1), 1, "a repeat");
        assert_eq!(r.index(2), 1);
    }

    #[test]
    fn malformed_input_is_refused_not_panicked_on() {
        let provider = rtc::crypto::default_provider().expect("provider");
        let keys = tapped(ProtectionProfile::AeadAes128Gcm, 12);
        let mut sealer = RtpSealer::new(provider.crypto(), SealProfile::AeadAes128Gcm, &keys, 1)
            .expect("sealer");
        let mut short = [0u8; 20];
        assert_eq!(
            sealer.seal(0, &mut short, 12, 20),
            None,
            "no room for the tag"
        );
        assert_eq!(
            sealer.seal(0, &mut [0u8; 64], 8, 20),
            None,
            "header too short"
        );
        assert_eq!(
            sealer.seal(3, &mut [0u8; 64], 12, 20),
            None,
            "unknown stream"
        );
    }
}
