//! Parley's own receive path for a viewer's SRTCP (AEAD_AES_128_GCM, RFC 7714 §9): opened in
//! place in the datagram's buffer, replay-checked per sender SSRC, then parsed and handled
//! as the stack would hand it over.
//!
//! A viewer's RTCP is almost all congestion feedback: TWCC about twenty times a second per
//! viewer. Through the stack each one crosses its whole handler pipeline (demuxer, ICE,
//! DTLS, SRTP, interceptors, endpoint), which copies and queues it several times; here it is
//! opened in place and parsed once. The opener needs only the viewer's
//! (remote) master key, which [`super::srtp_keys`] learns. Whatever it cannot open — another
//! profile, an unencrypted or malformed packet, a failed tag (the packet is put back as it
//! came), a replay, a sender SSRC past [`MAX_SENDERS`] — goes to the stack as before, which
//! decides; after [`GIVE_UP_AFTER`] failed tags in a row everything does.

use super::sealer::derive;
use super::srtp_keys::MasterKeys;
use rtc::crypto::{AeadAlgorithm, AeadCipher, CryptoError, RTCCrypto};
use rtc::shared::replay_detector::{ReplayDetector, SlidingWindowDetector};

const LABEL_RTCP_ENCRYPTION: u8 = 0x03;
const LABEL_RTCP_SALT: u8 = 0x05;
const SALT_LEN: usize = 12;
const TAG_LEN: usize = 16;
/// The E flag and 31-bit SRTCP index after the tag.
const INDEX_LEN: usize = 4;
const HEADER_LEN: usize = 8;
const MAX_INDEX: u64 = 0x7fff_ffff;
/// SRTCP indexes remembered per sender (as the stack's default SRTCP replay window).
const REPLAY_WINDOW: usize = 64;

/// Tags failed in a row after which the opener stops trying (its keys must be wrong).
const GIVE_UP_AFTER: u32 = 16;

/// The most sender SSRCs a viewer's RTCP is opened for (a browser uses one or two).
pub const MAX_SENDERS: usize = 4;

/// Opens one connection's inbound SRTCP.
pub struct RtcpOpener {
    aead: Box<dyn AeadCipher>,
    salt: [u8; SALT_LEN],
    senders: Vec<(u32, SlidingWindowDetector)>,
    /// The sealed bytes of the packet being opened, put back when its tag fails.
    scratch: Vec<u8>,
    /// Tags failed in a row: keys that never open anything are given up on.
    failures: u32,
}

impl std::fmt::Debug for RtcpOpener {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RtcpOpener")
            .field("senders", &self.senders.len())
            .finish()
    }
}

/// Whether `data` looks like RTCP (RFC 5761 §4: payload types 192–223 after the version).
fn is_rtcp(data: &[u8]) -> bool {
    data.len() >= HEADER_LEN && data[0] >> 6 == 2 && (192..=223).contains(&data[1])
}

impl RtcpOpener {
    /// An opener from the viewer's (remote) master key and salt, for AEAD_AES_128_GCM.
    pub(crate) fn new(crypto: &dyn RTCCrypto, master: &MasterKeys) -> Result<Self, CryptoError> {
        let mut key = [0u8; 16];
        let mut salt = [0u8; SALT_LEN];
        derive(crypto, master, SALT_LEN, LABEL_RTCP_ENCRYPTION, &mut key)?;
        derive(crypto, master, SALT_LEN, LABEL_RTCP_SALT, &mut salt)?;
        Ok(Self {
            aead: crypto.new_aead(AeadAlgorithm::Aes128Gcm, &key)?,
            salt,
            senders: Vec::with_capacity(MAX_SENDERS),
            scratch: Vec::with_capacity(1500),
            failures: 0,
        })
    }

    /// Opens the SRTCP packet in `buf` in place; returns the length of the compound RTCP
    /// packet it holds (`buf[..n]`), or `None` when this path does not take it.
    pub fn open(&mut self, buf: &mut [u8]) -> Option<usize> {
        if self.failures >= GIVE_UP_AFTER
            || !is_rtcp(buf)
            || buf.len() < HEADER_LEN + TAG_LEN + INDEX_LEN
        {
            return None;
        }
        let n = buf.len();
        let word = u32::from_be_bytes(buf[n - INDEX_LEN..].try_into().ok()?);
        if word & 0x8000_0000 == 0 {
            // Not encrypted: rare, and the stack's business.
            return None;
        }
        let index = word & 0x7fff_ffff;
        let ssrc = u32::from_be_bytes(buf[4..8].try_into().ok()?);
        let sender = match self.senders.iter().position(|(s, _)| *s == ssrc) {
            Some(i) => i,
            None if self.senders.len() < MAX_SENDERS => {
                self.senders
                    .push((ssrc, SlidingWindowDetector::new(REPLAY_WINDOW, MAX_INDEX)));
                self.senders.len() - 1
            }
            None => return None,
        };
        if !self.senders[sender].1.check(u64::from(index)) {
            return None;
        }
        let mut nonce = [0u8; 12];
        nonce[2..6].copy_from_slice(&ssrc.to_be_bytes());
        nonce[8..12].copy_from_slice(&index.to_be_bytes());
        for (n, s) in nonce.iter_mut().zip(&self.salt) {
            *n ^= s;
        }
        let mut aad = [0u8; HEADER_LEN + INDEX_LEN];
        aad[..HEADER_LEN].copy_from_slice(&buf[..HEADER_LEN]);
        aad[HEADER_LEN..].copy_from_slice(&word.to_be_bytes());
        let tag_at = n - INDEX_LEN - TAG_LEN;
        let (body, rest) = buf.split_at_mut(tag_at);
        let tag = &rest[..TAG_LEN];
        self.scratch.clear();
        self.scratch.extend_from_slice(&body[HEADER_LEN..]);
        if self
            .aead
            .open_in_place(&nonce, &aad, &mut body[HEADER_LEN..], tag)
            .is_err()
        {
            // Whatever the cipher left there goes: the stack gets the packet as it came.
            body[HEADER_LEN..].copy_from_slice(&self.scratch);
            self.failures += 1;
            if self.failures == GIVE_UP_AFTER {
                tracing::warn!(
                    "no viewer SRTCP opens with the learned keys: leaving it to the stack"
                );
            }
            return None;
        }
        self.failures = 0;
        self.senders[sender].1.accept();
        Some(tag_at)
    }
}

#[cfg(test)]
mod tests;
