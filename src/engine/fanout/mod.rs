//! The fan-out: what a viewer receives. `layers` chooses each slot's simulcast layer,
//! `downlink` fits a viewer's slots to its link; this file copies packets.
//!
//! The fan-out proper: one publisher packet to every viewer slot fed by its track's layer, and a
//! viewer's NACKs answered from the packet cache (and, for probe padding, with fresh padding
//! under the lost number).
//!
//! Per copy: the slot's forwarder rewrites the header into one reused scratch header, the
//! packet is written once into the next slot of the send batch, the slot's payload rewrite
//! is patched into that copy, and the viewer's key seals it there. Nothing is allocated per
//! viewer, no lock is taken, and the batch leaves with the round (`sender`).

pub(in crate::engine) mod downlink;
mod layers;

use crate::engine::rooms::room::SessionKey;
use crate::engine::shard::batch::SendBatch;
use crate::engine::shard::event_loop::{kind_index, Engine};
use crate::engine::shard::session::{layer_slot, source_id, Session};
use crate::forward::slot::{write_packet, write_padding, Skip};
use crate::metrics;
use crate::transport::{MediaKind, PeerState};
use std::net::SocketAddr;
use std::time::Instant;

/// Lost packets resent for one NACK at most (a bound on what one request can cost).
const MAX_RESEND_PER_NACK: usize = 64;

impl Engine {
    /// Sends one publisher packet to every slot fed by its track's layer.
    pub(in crate::engine) fn fan_out(
        &mut self,
        key: SessionKey,
        track: usize,
        layer: usize,
        packet: &rtc::rtp::Packet,
        now: Instant,
    ) {
        let bytes = packet.payload.len() as u64;
        let kind = self
            .inbound(key)
            .and_then(|i| i.get(track))
            .map(|t| kind_index(t.kind))
            .unwrap_or(0);
        // A relayed packet (its publisher is a mirror) was counted in on the home shard.
        if let Some(publisher) = self.sessions.get_mut(&key) {
            publisher.received.0 += 1;
            publisher.received.1 += bytes;
            if !publisher.media_started {
                publisher.media_started = true;
                let setup = now.saturating_duration_since(publisher.created);
                self.tally.setup_s.push(setup.as_secs_f64());
            }
            self.tally.rtp_in[kind] += 1;
            self.tally.rtp_in_bytes[kind] += bytes;
        }
        let keyframe = self.observe_layer(key, track, layer, packet, now);
        if keyframe {
            let pending = self
                .published_mut(key)
                .and_then(|p| p.keyframe_pending.get_mut(layer_slot(track, layer)));
            if let Some(pending) = pending {
                *pending = false;
            }
        }
        self.observe_track(key, track, packet, now);
        self.relay_packet(key, track, layer, packet, now);
        let sid = source_id(key, track, layer);
        let Some(targets) = self.subscribers.get(&sid) else {
            return;
        };
        if kind == kind_index(MediaKind::Video) {
            self.caches.entry(sid).or_default().push(packet);
        }
        let mut forwarded = 0u64;
        // When the copies leave, for the viewers' congestion feedback: not when the
        // publisher's packet arrived (an engine catching up on a burst of datagrams would
        // read as a queue on every viewer's path).
        let sealed_at = Instant::now();
        for &(viewer_key, slot) in targets {
            let Some(viewer) = self.sessions.get_mut(&viewer_key) else {
                debug_assert!(false, "a fan-out list names ended session {viewer_key}");
                continue;
            };
            if viewer.peer.state() != PeerState::Connected {
                self.tally.drop(metrics::Drop::NotConnected);
                continue;
            }
            let probe = packet.header.marker && probes_through(viewer, slot);
            let Some(forwarder) = viewer.forwarders.get_mut(slot) else {
                continue;
            };
            if let Err(skip) = forwarder.forward_header(sid, packet, now, &mut self.scratch) {
                self.tally.drop(match skip {
                    Skip::NotBound | Skip::Stale => metrics::Drop::Stale,
                    Skip::NoKeyframeYet => metrics::Drop::NoKeyframeYet,
                    Skip::NoCodec => metrics::Drop::NoCodec,
                    // Not a loss: the slot's temporal layer leaves this frame out, the
                    // packet is padding, or the viewer's link does not carry the video.
                    Skip::Temporal | Skip::Paused => {
                        if probe {
                            self.probe_queue.push((viewer_key, slot));
                        }
                        continue;
                    }
                    Skip::Padding => continue,
                });
                continue;
            }
            let sent = match viewer.peer.sealed_media_addr() {
                Some(to) => seal_into(
                    self.senders.batch_for(viewer_key),
                    viewer,
                    slot,
                    &self.scratch,
                    packet,
                    to,
                    sealed_at,
                ),
                None => {
                    let payload = if forwarder.has_patch() {
                        let mut copy = packet.payload.to_vec();
                        forwarder.patch_payload(&mut copy);
                        copy.into()
                    } else {
                        packet.payload.clone()
                    };
                    let out = rtc::rtp::Packet {
                        header: self.scratch.clone(),
                        payload,
                    };
                    if self.dirty_set.insert(viewer_key) {
                        self.dirty.push(viewer_key);
                    }
                    viewer.peer.write_rtp(now, slot, out)
                }
            };
            if probe {
                self.probe_queue.push((viewer_key, slot));
            }
            if sent {
                viewer.sent.0 += 1;
                viewer.sent.1 += bytes;
                forwarded += 1;
                if !viewer.media_started {
                    viewer.media_started = true;
                    let setup = now.saturating_duration_since(viewer.created);
                    self.tally.setup_s.push(setup.as_secs_f64());
                }
            }
        }
        self.tally.rtp_out[kind] += forwarded;
        self.tally.rtp_out_bytes[kind] += forwarded * bytes;
        if !self.probe_queue.is_empty() {
            let queue = std::mem::take(&mut self.probe_queue);
            for &(viewer, slot) in &queue {
                self.pad_after(viewer, slot, sealed_at);
            }
            self.probe_queue = queue;
            self.probe_queue.clear();
        }
        if forwarded > 0 {
            self.senders.note_arrival(now);
        }
    }
}

/// Whether `viewer` probes its link through `slot` now (padding follows its frame ends).
fn probes_through(viewer: &Session, slot: usize) -> bool {
    viewer
        .downlink
        .as_ref()
        .is_some_and(|d| d.probe_slot == Some(slot) && d.prober.probing())
}

/// Writes the slot's packet (header `header`, payload of `packet` with the slot's payload
/// rewrite applied in place) into the next free slot of `outgoing`, seals it for the viewer
/// and queues it for `to`.
fn seal_into(
    outgoing: &mut SendBatch,
    viewer: &mut Session,
    slot: usize,
    header: &rtc::rtp::Header,
    packet: &rtc::rtp::Packet,
    to: SocketAddr,
    now: Instant,
) -> bool {
    let Some(buf) = outgoing.slot() else {
        return false;
    };
    let sealed = write_packet(header, &packet.payload, buf).and_then(|(head, len)| {
        if let Some(f) = viewer.forwarders.get(slot).filter(|f| f.has_patch()) {
            f.patch_payload(&mut buf[head..len]);
        }
        viewer.peer.seal_rtp(now, slot, buf, head, len)
    });
    match sealed {
        Some(n) => {
            outgoing.commit(to, n, viewer.key);
            true
        }
        None => false,
    }
}

/// Writes a padding-only packet of `padding` bytes under `header` into the next free slot of
/// `outgoing`, seals it for the viewer and queues it for `to`. Returns its sealed length.
pub(in crate::engine) fn seal_padding(
    outgoing: &mut SendBatch,
    viewer: &mut Session,
    slot: usize,
    header: &rtc::rtp::Header,
    padding: usize,
    to: SocketAddr,
    now: Instant,
) -> Option<usize> {
    let buf = outgoing.slot()?;
    let len = write_padding(header, padding, buf)
        .and_then(|(head, len)| viewer.peer.seal_rtp(now, slot, buf, head, len))?;
    outgoing.commit(to, len, viewer.key);
    Some(len)
}

impl Engine {
    /// Answers a viewer's NACK on a sealed slot: resends the lost packets still cached, with
    /// the numbering they were first sent with.
    pub(in crate::engine) fn resend(&mut self, key: SessionKey, slot: usize, seqs: &[u16]) {
        let now = Instant::now();
        let Some(viewer) = self.sessions.get_mut(&key) else {
            return;
        };
        let Some(to) = viewer.peer.sealed_media_addr() else {
            return;
        };
        for &seq in seqs.iter().take(MAX_RESEND_PER_NACK) {
            let Some(forwarder) = viewer.forwarders.get_mut(slot) else {
                return;
            };
            if forwarder.paused() {
                // The link does not carry this video; it restarts on a keyframe.
                return;
            }
            let Some((sid, source_seq)) = forwarder.retransmission(seq) else {
                // Probe padding carries nothing, but its number must not stay a gap. The
                // answer is as small as padding gets: the loss likely came from a full link.
                if forwarder.repad_header(seq, &mut self.scratch) {
                    let batch = self.senders.batch_for(key);
                    let sealed = seal_padding(batch, viewer, slot, &self.scratch, 1, to, now);
                    if let Some(len) = sealed {
                        self.tally.padding_packets += 1;
                        self.tally.padding_bytes += len as u64;
                        viewer.sent.1 += len as u64;
                    }
                }
                continue;
            };
            let Some(packet) = self.caches.get(&sid).and_then(|c| c.get(source_seq)) else {
                continue;
            };
            if forwarder
                .resend_header(sid, packet, &mut self.scratch)
                .is_err()
            {
                continue;
            }
            if seal_into(
                self.senders.batch_for(key),
                viewer,
                slot,
                &self.scratch,
                packet,
                to,
                now,
            ) {
                self.tally.retransmissions += 1;
            }
        }
    }
}
