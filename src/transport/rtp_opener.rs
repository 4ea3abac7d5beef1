//! Parley's own receive path for a publisher's SRTP (AEAD_AES_128_GCM, RFC 7714 §8): each RTP
//! packet opened in place in the datagram's buffer, replay-checked per SSRC, and handed on as
//! the plain RTP packet — the RTP counterpart of [`super::rtcp_opener`].
//!
//! Through the stack every inbound media packet is parsed, copied into a fresh buffer and
//! decrypted there before the forwarder sees it; here it costs one cipher pass over the payload
//! in the buffer it arrived in, and never allocates (a new SSRC costs its replay window once).
//! The opener needs only the publisher's (remote) master key, which [`super::srtp_keys`]
//! learns. It keeps, per SSRC, the highest packet index that opened (rollover counter and
//! sequence number, RFC 3711 §3.3.1) and a replay window over that 48-bit index, and moves
//! them only for a packet whose tag verified. A stream is taken to start at rollover counter 0
//! (RFC 3711 §3.3.1), so the opener must see each stream before its sequence numbers first
//! wrap — as the stack's own context assumes.
//!
//! What it cannot open — not RTP (RTCP, other versions), a malformed or short packet, an SSRC
//! past [`MAX_STREAMS`] — is left untouched for the stack. A packet whose tag fails, or a
//! replay, is [`Opened::Rejected`]. If the first [`GIVE_UP_AFTER`] tags all fail, the keys must be
//! wrong and everything goes to the stack, which decides; once one packet opened, the keys are
//! right and a failed tag is only a bad packet (handing streams back then would fail them
//! all: the stack's context never saw their rollover counters move). It never panics on
//! peer input.

use super::sealer::derive;
use super::srtp_keys::MasterKeys;
use rtc::crypto::{AeadAlgorithm, AeadCipher, CryptoError, RTCCrypto};
use rtc::shared::replay_detector::{ReplayDetector, SlidingWindowDetector};

const LABEL_RTP_ENCRYPTION: u8 = 0x00;
const LABEL_RTP_SALT: u8 = 0x02;
const SALT_LEN: usize = 12;
const TAG_LEN: usize = 16;
/// V, P, X, CC, M, PT, sequence number, timestamp, SSRC (RFC 3550 §5.1).
const FIXED_HEADER_LEN: usize = 12;
/// The packet index is the 32-bit rollover counter and the 16-bit sequence number.
const MAX_INDEX: u64 = (1 << 48) - 1;
/// Packet indexes remembered per SSRC: the window the stack's own context uses in Parley.
/// `rtc` 0.21.1 defaults the remote SRTP context to 64 (`DtlsHandler::
/// DEFAULT_SESSION_SRTP_REPLAY_PROTECTION_WINDOW` in `peer_connection/handler/dtls.rs`, used
/// when the setting engine's window is 0), but `peer.rs` sets
/// `with_srtp_replay_protection_window(1024)`, libwebrtc's width: a packet the stack would
/// take must not be dropped here as too old.
const REPLAY_WINDOW: usize = 1024;

/// Tags failed before any opened, after which the opener stops trying (its keys must be
/// wrong).
pub const GIVE_UP_AFTER: u32 = 16;

/// The most SSRCs a publisher's RTP is opened for: three simulcast layers of video and their
/// retransmission streams, plus audio, with room to spare.
pub const MAX_STREAMS: usize = 16;

/// What [`RtpOpener::open`] did with a datagram.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Opened {
    /// Decrypted in place: the plain RTP packet is `data[..len]` (the tag removed).
    Plain(usize),
    /// Not opened and untouched: not RTP, malformed or too short, an SSRC past
    /// [`MAX_STREAMS`], or the opener gave up. The caller gives it to the stack.
    NotMine,
    /// Its tag failed or it was a replay: the caller drops (and counts) it. The buffer may
    /// have been changed.
    Rejected,
}

/// One publisher stream's receive state.
struct Stream {
    ssrc: u32,
    /// The highest packet index that opened.
    highest: u64,
    window: SlidingWindowDetector,
}

/// Opens one connection's inbound SRTP.
pub struct RtpOpener {
    aead: Box<dyn AeadCipher>,
    salt: [u8; SALT_LEN],
    streams: Vec<Stream>,
    /// Tags failed in a row: keys that never open anything are given up on.
    failures: u32,
    /// Whether any packet opened (then the keys are right, and it never gives up).
    opened: bool,
}

impl std::fmt::Debug for RtpOpener {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RtpOpener")
            .field("streams", &self.streams.len())
            .field("failures", &self.failures)
            .finish()
    }
}

/// The length of the RTP header at the start of `data` (RFC 3550 §5.1, §5.3.1), or `None`
/// when `data` is not a whole RTP header: another version, RTCP (RFC 5761 §4: 192–223 in
/// the second byte), or cut short.
fn header_len(data: &[u8]) -> Option<usize> {
    let (&first, &second) = (data.first()?, data.get(1)?);
    if first >> 6 != 2 || (192..=223).contains(&second) {
        return None;
    }
    let mut len = FIXED_HEADER_LEN + 4 * usize::from(first & 0x0f);
    if first & 0x10 != 0 {
        let words = data.get(len + 2..len + 4)?;
        len += 4 + 4 * usize::from(u16::from_be_bytes([words[0], words[1]]));
    }
    (len <= data.len()).then_some(len)
}

/// The packet index of sequence number `seq` in a stream whose highest index so far is
/// `highest`: RFC 3711 Appendix A's guess of the rollover counter, the one of ROC − 1, ROC
/// and ROC + 1 that puts `seq` nearest `highest`. A stream's rollover counter never goes
/// below 0.
fn estimate(highest: u64, seq: u16) -> u64 {
    let roc = highest >> 16;
    let last = (highest & 0xffff) as u16;
    let roc = if last < 0x8000 {
        if seq > last && seq - last > 0x8000 {
            roc.saturating_sub(1)
        } else {
            roc
        }
    } else if last - 0x8000 > seq {
        roc + 1
    } else {
        roc
    };
    (roc << 16) | u64::from(seq)
}

impl RtpOpener {
    /// An opener from the publisher's (remote) master key and salt, for AEAD_AES_128_GCM.
    pub(crate) fn new(crypto: &dyn RTCCrypto, master: &MasterKeys) -> Result<Self, CryptoError> {
        let mut key = [0u8; 16];
        let mut salt = [0u8; SALT_LEN];
        derive(crypto, master, SALT_LEN, LABEL_RTP_ENCRYPTION, &mut key)?;
        derive(crypto, master, SALT_LEN, LABEL_RTP_SALT, &mut salt)?;
        Ok(Self {
            aead: crypto.new_aead(AeadAlgorithm::Aes128Gcm, &key)?,
            salt,
            streams: Vec::with_capacity(MAX_STREAMS),
            failures: 0,
            opened: false,
        })
    }

    /// Opens the SRTP packet in `data` in place.
    pub fn open(&mut self, data: &mut [u8]) -> Opened {
        if self.failures >= GIVE_UP_AFTER {
            return Opened::NotMine;
        }
        let Some(header) = header_len(data) else {
            return Opened::NotMine;
        };
        if data.len() < header + TAG_LEN {
            return Opened::NotMine;
        }
        let seq = u16::from_be_bytes([data[2], data[3]]);
        let ssrc = u32::from_be_bytes([data[8], data[9], data[10], data[11]]);
        let known = self.streams.iter().position(|s| s.ssrc == ssrc);
        let index = match known {
            Some(i) => {
                let stream = &mut self.streams[i];
                let index = estimate(stream.highest, seq);
                if !stream.window.check(index) {
                    return Opened::Rejected;
                }
                index
            }
            // A stream's first packet: rollover counter 0, nothing to replay yet.
            None if self.streams.len() < MAX_STREAMS => u64::from(seq),
            None => return Opened::NotMine,
        };
        // RFC 7714 §8.1: IV = salt ⊕ (0x0000 ‖ SSRC ‖ ROC ‖ SEQ).
        let mut iv = [0u8; SALT_LEN];
        iv[2..6].copy_from_slice(&ssrc.to_be_bytes());
        iv[6..12].copy_from_slice(&index.to_be_bytes()[2..]);
        for (v, s) in iv.iter_mut().zip(&self.salt) {
            *v ^= s;
        }
        let tag_at = data.len() - TAG_LEN;
        let (body, tag) = data.split_at_mut(tag_at);
        let (aad, payload) = body.split_at_mut(header);
        if self.aead.open_in_place(&iv, aad, payload, tag).is_err() {
            if self.opened {
                return Opened::Rejected;
            }
            self.failures += 1;
            if self.failures == GIVE_UP_AFTER {
                tracing::warn!(
                    "no publisher SRTP opens with the learned keys: leaving it to the stack"
                );
            }
            return Opened::Rejected;
        }
        self.opened = true;
        match known {
            Some(i) => {
                let stream = &mut self.streams[i];
                stream.window.accept();
                stream.highest = stream.highest.max(index);
            }
            None => {
                let mut window = SlidingWindowDetector::new(REPLAY_WINDOW, MAX_INDEX);
                if window.check(index) {
                    window.accept();
                }
                self.streams.push(Stream {
                    ssrc,
                    highest: index,
                    window,
                });
            }
        }
        Opened::Plain(tag_at)
    }
}

#[cfg(test)]
mod tests;
