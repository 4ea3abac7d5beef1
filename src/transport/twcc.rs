//! Transport-wide sequence numbers and send times on Parley's own send path, and the
//! viewer's feedback about them.
//!
//! The WebRTC stack's congestion-control interceptors see only what the stack sends; Parley
//! seals forwarded media itself. So, per viewer connection, [`SendHistory`] numbers each
//! packet as it is sealed (the transport-wide-cc header extension), stamps abs-send-time
//! (for receivers that estimate themselves and send REMB), and remembers when each packet
//! left and how large it was, in a fixed ring. A TWCC feedback packet then becomes the
//! [`Delivery`] records the estimator reads ([`SendHistory::read_feedback`]), parsed straight
//! from the feedback's bytes into a buffer the connection reuses: a viewer sends one about
//! every 50 ms, so nothing on this path allocates.
//!
//! The stamps go into extension elements the slot's header already holds (placeholders
//! written by the forwarder); [`write_extension`] finds an element by id in a marshalled
//! header, in either the one-byte or the two-byte form (RFC 8285).

use std::time::{Duration, Instant};

/// Packets remembered per connection: about four seconds at 2.5 Mbit/s.
const HISTORY: usize = 1024;

/// RTCP payload type of transport-layer feedback, and the format of TWCC within it.
const RTPFB: u8 = 205;
const TWCC_FMT: u8 = 15;

/// Bytes before the first status chunk: RTCP header, two SSRCs, base sequence number,
/// status count, reference time and feedback count.
const FIXED: usize = 20;

/// Status symbols (a one-bit vector's 1 is a small delta too).
const NOT_RECEIVED: u8 = 0;
const SMALL_DELTA: u8 = 1;
const LARGE_DELTA: u8 = 2;

/// The reference time counts these; receive deltas count [`DELTA_UNIT`]s.
const REFERENCE_TICK: Duration = Duration::from_millis(64);
const DELTA_UNIT: Duration = Duration::from_micros(250);

/// One packet a TWCC feedback reported on.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Delivery {
    /// When it left (this side's clock).
    pub departure: Instant,
    /// Whether it arrived.
    pub arrived: bool,
    /// When it arrived, on the receiver's clock, if the feedback says.
    pub arrival: Option<Duration>,
    /// Its size in bytes, as sealed.
    pub size: u32,
}

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
    ring: Box<[Sent; HISTORY]>,
}

impl SendHistory {
    /// An empty history; times count from `epoch`.
    pub fn new(epoch: Instant) -> Self {
        SendHistory {
            epoch,
            next: 0,
            ring: Box::new([Sent::default(); HISTORY]),
        }
    }

    /// Numbers a packet of `size` bytes sent `now`; returns its transport-wide number.
    pub fn record(&mut self, now: Instant, size: usize) -> u16 {
        let seq = self.next;
        self.next = seq.wrapping_add(1);
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

    /// Reads one TWCC feedback packet (`packet`: its RTCP header onwards, as long as its
    /// length field says) and appends a [`Delivery`] for each packet it reports on that this
    /// history still holds and has not reported yet, in send order, marking them reported.
    /// Only the first `packet_status_count` statuses count: libwebrtc pads its last status
    /// vector with "not received" symbols that name no packet. Returns how many were
    /// appended, or why the packet was not read (nothing is appended then).
    pub fn read_feedback(
        &mut self,
        packet: &[u8],
        out: &mut Vec<Delivery>,
    ) -> Result<usize, FeedbackError> {
        if !is_feedback(packet) {
            return Err(FeedbackError::NotTwcc);
        }
        let fixed = packet.get(..FIXED).ok_or(FeedbackError::Short)?;
        let base = u16::from_be_bytes([fixed[12], fixed[13]]);
        let count = usize::from(u16::from_be_bytes([fixed[14], fixed[15]]));
        let reference = u32::from_be_bytes([0, fixed[16], fixed[17], fixed[18]]);
        // The chunks come first; the deltas follow the last chunk that holds a status.
        let chunks = &packet[FIXED..];
        let (mut covered, mut chunk_bytes) = (0usize, 0usize);
        while covered < count {
            let c = chunks
                .get(chunk_bytes..chunk_bytes + 2)
                .ok_or(FeedbackError::Short)?;
            covered += Chunk(u16::from_be_bytes([c[0], c[1]])).len();
            chunk_bytes += 2;
        }
        let mut deltas = &chunks[chunk_bytes..];
        let first = out.len();
        let mut arrival = REFERENCE_TICK * reference;
        let mut seq = base;
        let mut left = count;
        for c in chunks[..chunk_bytes].chunks_exact(2) {
            let chunk = Chunk(u16::from_be_bytes([c[0], c[1]]));
            let n = chunk.len().min(left);
            for i in 0..n {
                let symbol = chunk.symbol(i);
                let delta = match (symbol, deltas) {
                    (SMALL_DELTA, [d, rest @ ..]) => {
                        deltas = rest;
                        Some(i32::from(*d))
                    }
                    (LARGE_DELTA, [hi, lo, rest @ ..]) => {
                        deltas = rest;
                        Some(i32::from(i16::from_be_bytes([*hi, *lo])))
                    }
                    _ => None,
                };
                // A delta may be negative (packets reported out of order); a received
                // packet without one arrived at an unknown time.
                let at = delta.map(|d| {
                    let step = DELTA_UNIT * d.unsigned_abs();
                    arrival = if d < 0 {
                        arrival.saturating_sub(step)
                    } else {
                        arrival + step
                    };
                    arrival
                });
                self.report(seq, symbol != NOT_RECEIVED, at, out);
                seq = seq.wrapping_add(1);
            }
            left -= n;
        }
        Ok(out.len() - first)
    }

    /// Appends the delivery of `seq` if this history holds it unreported, and marks it
    /// reported.
    fn report(&mut self, seq: u16, arrived: bool, at: Option<Duration>, out: &mut Vec<Delivery>) {
        let entry = &mut self.ring[usize::from(seq) % HISTORY];
        if entry.size == 0 || entry.seq != seq {
            return;
        }
        out.push(Delivery {
            departure: self.epoch + Duration::from_micros(u64::from(entry.micros)),
            arrived,
            arrival: at.filter(|_| arrived),
            size: u32::from(entry.size),
        });
        entry.size = 0;
    }
}

/// Whether one RTCP packet (its header onwards) is a TWCC feedback.
pub fn is_feedback(packet: &[u8]) -> bool {
    matches!(packet, [first, RTPFB, ..] if first >> 6 == 2 && first & 0x1f == TWCC_FMT)
}

/// One packet status chunk: a run of one symbol, or a vector of 14 one-bit or 7 two-bit
/// symbols.
#[derive(Clone, Copy)]
struct Chunk(u16);

impl Chunk {
    /// How many statuses it holds.
    fn len(self) -> usize {
        match self.0 >> 14 {
            0 | 1 => usize::from(self.0 & 0x1fff),
            2 => 14,
            _ => 7,
        }
    }

    /// Its `i`-th status, as a two-bit symbol.
    fn symbol(self, i: usize) -> u8 {
        match self.0 >> 14 {
            0 | 1 => ((self.0 >> 13) & 0x3) as u8,
            2 => ((self.0 >> (13 - i)) & 0x1) as u8,
            _ => ((self.0 >> (12 - 2 * i)) & 0x3) as u8,
        }
    }
}

/// Why a TWCC feedback packet was not read.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum FeedbackError {
    /// Not an RTCP version 2 packet of payload type 205, format 15.
    #[error("not a transport-wide congestion control feedback")]
    NotTwcc,
    /// Shorter than its fixed part or its status chunks.
    #[error("feedback cut short")]
    Short,
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
mod tests;
