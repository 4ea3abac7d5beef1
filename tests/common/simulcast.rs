//! A simulcast WHIP publisher: one sendonly Opus track and one video track sent as up to
//! four RTP streams (RFC 8853 `a=rid` / `a=simulcast:send`), each on its own SSRC, every
//! packet carrying the mid and rtp-stream-id header extensions with the negotiated ids (the
//! WebRTC stack does not add them itself). A background task sends one frame per layer
//! every [`FRAME_INTERVAL`], a keyframe when the layer starts or resumes and
//! [`KEYFRAME_DELAY`] frames after a PLI or FIR names that layer's SSRC (no periodic
//! keyframes), so a switch depends on the server asking the right layer, and delta frames of
//! the target layer arrive between the request and its keyframe, as they do over a real
//! network.
//!
//! With `SimulcastOptions::obs` the offer is shaped as OBS 31's WHIP output writes it with
//! libdatachannel: rids `0`/`1`/`2`, extmap 1 = mid and 2 = rid and no other, and one SSRC
//! declared (`base+1`, cname and msid) while the layers go out on `base+1..=base+3`.
//!
//! Owns its peer connection and both tasks: dropping the publisher aborts them.

use super::layered::{h264_frame, vp8_frame, vp8_frame_sized, Vp8Fields};
use super::peer::Peer;
use super::signaling::{endpoint_url, post_offer, try_delete};
use super::{HarnessError, VideoCodec, CONNECT_TIMEOUT};
use rtc::media_stream::MediaStreamTrack;
use rtc::peer_connection::configuration::media_engine::{
    MIME_TYPE_H264, MIME_TYPE_OPUS, MIME_TYPE_VP8,
};
use rtc::rtcp::payload_feedbacks::full_intra_request::FullIntraRequest;
use rtc::rtcp::payload_feedbacks::picture_loss_indication::PictureLossIndication;
use rtc::rtp_transceiver::rtp_sender::{
    RTCPFeedback, RTCRtpCodec, RTCRtpCodecParameters, RTCRtpCodingParameters,
    RTCRtpEncodingParameters, RTCRtpHeaderExtensionCapability, RtpCodecKind,
};
use rtc::rtp_transceiver::{RTCRtpTransceiverDirection, RTCRtpTransceiverInit};
use rtc::sdp::extmap::{SDES_MID_URI, SDES_RTP_STREAM_ID_URI};
use std::collections::hash_map::RandomState;
use std::hash::{BuildHasher, Hasher};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;
use tokio::sync::watch;
use tokio::task::JoinHandle;
use webrtc::media_stream::track_local::static_rtp::TrackLocalStaticRTP;
use webrtc::media_stream::track_local::{TrackLocal, TrackLocalEvent};
use webrtc::peer_connection::{MediaEngine, RTCPeerConnectionState};

/// One frame per layer this often (30 frames/s).
pub const FRAME_INTERVAL: Duration = Duration::from_millis(33);
/// Frames between a keyframe request and the keyframe (100 ms at 30 frames/s).
pub const KEYFRAME_DELAY: u32 = 3;
/// RTP timestamp step per frame (90 kHz clock).
const TS_STEP: u32 = 2970;
const VIDEO_PT: u8 = 96;
const AUDIO_PT: u8 = 111;

/// One encoding of the video track: its rid and the picture size its keyframes announce.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct LayerSpec {
    pub rid: &'static str,
    pub width: u16,
    pub height: u16,
}

const fn layer(rid: &'static str, width: u16, height: u16) -> LayerSpec {
    LayerSpec { rid, width, height }
}

/// A browser's three layers, smallest first (`a=simulcast:send q;h;f`).
pub const BROWSER_LAYERS: [LayerSpec; 3] = [
    layer("q", 320, 180),
    layer("h", 640, 360),
    layer("f", 1280, 720),
];

/// OBS 31's three layers: rid `0` is the full picture, then smaller ones.
pub const OBS_LAYERS: [LayerSpec; 3] = [
    layer("0", 1280, 720),
    layer("1", 852, 480),
    layer("2", 426, 240),
];

#[derive(Clone, Debug)]
pub struct SimulcastOptions {
    pub video: VideoCodec,
    /// profile-level-id for H264.
    pub h264_profile: &'static str,
    /// The encodings, in `a=rid` order.
    pub layers: Vec<LayerSpec>,
    /// Shape the offer as OBS 31 does (see the module comment).
    pub obs: bool,
    /// VP8 temporal layers T0 T2 T1 T2 with the layer-sync bit, TL0PICIDX and PictureID.
    pub temporal: bool,
    pub participant: Option<String>,
    /// VP8: bits per second per layer (in `a=rid` order), sent as frames of several
    /// packets; `None`: one small packet per frame.
    pub bitrates: Option<Vec<u32>>,
    /// Also send audio: a 100-byte packet every 20 ms.
    pub audio: bool,
}

impl SimulcastOptions {
    /// VP8, rids q/h/f as a browser sends them.
    pub fn browser_vp8() -> Self {
        SimulcastOptions {
            video: VideoCodec::Vp8,
            h264_profile: "42e01f",
            layers: BROWSER_LAYERS.to_vec(),
            obs: false,
            temporal: false,
            participant: None,
            bitrates: None,
            audio: false,
        }
    }

    /// H264 with this profile-level-id, offered as OBS 31 offers it.
    pub fn obs_h264(profile: &'static str) -> Self {
        SimulcastOptions {
            video: VideoCodec::H264,
            h264_profile: profile,
            layers: OBS_LAYERS.to_vec(),
            obs: true,
            temporal: false,
            participant: None,
            bitrates: None,
            audio: false,
        }
    }
}

/// What the sending task keeps per layer.
struct LayerState {
    ssrc: u32,
    rid: &'static str,
    size: (u16, u16),
    sending: bool,
    /// Frames until the next keyframe, when one is due.
    keyframe_due: Option<u32>,
    seq: u16,
    ts_base: u32,
    picture_id: u16,
    tl0: u8,
    since_keyframe: u32,
}

struct Shared {
    layers: Mutex<Vec<LayerState>>,
    /// Keyframe requests per layer (PLI or FIR naming its SSRC).
    requests: watch::Sender<Vec<u32>>,
}

impl Shared {
    fn layers(&self) -> MutexGuard<'_, Vec<LayerState>> {
        self.layers.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// Header fields negotiated for the video track.
#[derive(Clone, Debug)]
struct Negotiated {
    mid: String,
    mid_id: u8,
    rid_id: u8,
}

pub struct SimulcastPublisher {
    pub location: String,
    pub offer_sdp: String,
    pub answer_sdp: String,
    /// The video m-line's mid.
    pub video_mid: String,
    shared: Arc<Shared>,
    peer: Peer,
    tasks: Vec<JoinHandle<()>>,
}

impl Drop for SimulcastPublisher {
    fn drop(&mut self) {
        for t in &self.tasks {
            t.abort();
        }
    }
}

/// A built but unsent offer.
struct Prepared {
    peer: Peer,
    video: Arc<TrackLocalStaticRTP>,
    audio: Arc<TrackLocalStaticRTP>,
    audio_ssrc: u32,
    ssrcs: Vec<u32>,
    offer: String,
}

fn random_u32() -> u32 {
    RandomState::new().build_hasher().finish() as u32
}

fn codec(opts: &SimulcastOptions) -> RTCRtpCodec {
    let (mime, fmtp) = match opts.video {
        VideoCodec::Vp8 => (MIME_TYPE_VP8, String::new()),
        VideoCodec::H264 => (
            MIME_TYPE_H264,
            format!(
                "level-asymmetry-allowed=1;packetization-mode=1;profile-level-id={}",
                opts.h264_profile
            ),
        ),
    };
    RTCRtpCodec {
        mime_type: mime.to_owned(),
        clock_rate: 90000,
        channels: 0,
        sdp_fmtp_line: fmtp,
        rtcp_feedback: [("nack", ""), ("nack", "pli"), ("ccm", "fir")]
            .into_iter()
            .map(|(typ, parameter)| RTCPFeedback {
                typ: typ.into(),
                parameter: parameter.into(),
            })
            .collect(),
    }
}

async fn prepare(opts: &SimulcastOptions) -> Result<Prepared, HarnessError> {
    let video_codec = codec(opts);
    let audio_codec = RTCRtpCodec {
        mime_type: MIME_TYPE_OPUS.to_owned(),
        clock_rate: 48000,
        channels: 2,
        sdp_fmtp_line: "minptime=10;useinbandfec=1".into(),
        rtcp_feedback: vec![],
    };
    let mut media_engine = MediaEngine::default();
    for (c, payload_type, kind) in [
        (&audio_codec, AUDIO_PT, RtpCodecKind::Audio),
        (&video_codec, VIDEO_PT, RtpCodecKind::Video),
    ] {
        media_engine
            .register_codec(
                RTCRtpCodecParameters {
                    rtp_codec: c.clone(),
                    payload_type,
                },
                kind,
            )
            .map_err(HarnessError::webrtc("register_codec"))?;
    }
    // Registered first, so they get ids 1 and 2 (what OBS uses).
    for uri in [SDES_MID_URI, SDES_RTP_STREAM_ID_URI] {
        media_engine
            .register_header_extension(
                RTCRtpHeaderExtensionCapability {
                    uri: uri.to_owned(),
                },
                RtpCodecKind::Video,
                None,
            )
            .map_err(HarnessError::webrtc("register_header_extension"))?;
    }
    let peer = Peer::new(media_engine, None).await?;

    let audio_ssrc = random_u32() | 1;
    let audio = Arc::new(TrackLocalStaticRTP::new(MediaStreamTrack::new(
        "parley-sim".to_owned(),
        "parley-sim-audio".to_owned(),
        "audio".to_owned(),
        RtpCodecKind::Audio,
        vec![RTCRtpEncodingParameters {
            rtp_coding_parameters: RTCRtpCodingParameters {
                ssrc: Some(audio_ssrc),
                ..Default::default()
            },
            active: true,
            codec: audio_codec,
            ..Default::default()
        }],
    )));
    let base = random_u32() & 0x7fff_fff0;
    let ssrcs: Vec<u32> = if opts.obs {
        (1..=opts.layers.len() as u32).map(|i| base + i).collect()
    } else {
        (0..opts.layers.len() as u32)
            .map(|i| base.wrapping_add(i * 0x0101_0101 + 7))
            .collect()
    };
    let encodings = opts
        .layers
        .iter()
        .zip(&ssrcs)
        .map(|(l, &ssrc)| RTCRtpEncodingParameters {
            rtp_coding_parameters: RTCRtpCodingParameters {
                rid: l.rid.into(),
                ssrc: Some(ssrc),
                ..Default::default()
            },
            active: true,
            codec: video_codec.clone(),
            ..Default::default()
        })
        .collect();
    let video = Arc::new(TrackLocalStaticRTP::new(MediaStreamTrack::new(
        "parley-sim".to_owned(),
        "parley-sim-video".to_owned(),
        "video".to_owned(),
        RtpCodecKind::Video,
        encodings,
    )));
    for track in [&audio, &video] {
        peer.pc
            .add_transceiver_from_track(
                Arc::clone(track) as Arc<dyn TrackLocal>,
                Some(RTCRtpTransceiverInit {
                    direction: RTCRtpTransceiverDirection::Sendonly,
                    ..Default::default()
                }),
            )
            .await
            .map_err(HarnessError::webrtc("add_transceiver_from_track"))?;
    }
    let mut offer = peer.gathered_offer().await?;
    if opts.obs {
        offer = obs_shape(&offer, ssrcs[0], &opts.layers)?;
    }
    Ok(Prepared {
        peer,
        video,
        audio,
        audio_ssrc,
        ssrcs,
        offer,
    })
}

/// The text of the first m-section of `kind` ("audio", "video"), up to the next one.
pub fn media_section<'a>(sdp: &'a str, kind: &str) -> Option<&'a str> {
    let at = sdp.find(&format!("m={kind} "))?;
    let rest = &sdp[at..];
    Some(match rest[2..].find("\nm=") {
        Some(end) => &rest[..end + 3],
        None => rest,
    })
}

/// The values of `a={name}:` lines in an SDP section.
pub fn attributes<'a>(section: &'a str, name: &str) -> Vec<&'a str> {
    let prefix = format!("a={name}:");
    section
        .lines()
        .filter_map(|l| l.trim_end().strip_prefix(prefix.as_str()))
        .collect()
}

/// The rids of a section's `a=simulcast:` line for `direction` ("send" or "recv").
pub fn simulcast_rids(section: &str, direction: &str) -> Vec<String> {
    let Some(line) = attributes(section, "simulcast").first().copied() else {
        return vec![];
    };
    let words: Vec<&str> = line.split_whitespace().collect();
    words
        .windows(2)
        .filter(|w| w[0] == direction)
        .flat_map(|w| w[1].split([';', ',']))
        .map(|r| r.trim_start_matches('~').to_owned())
        .collect()
}

/// Rewrites the video section the way OBS 31 (libdatachannel) writes it.
fn obs_shape(offer: &str, first_ssrc: u32, layers: &[LayerSpec]) -> Result<String, HarnessError> {
    let video = media_section(offer, "video")
        .ok_or_else(|| HarnessError::Negotiation("our offer has no video".into()))?;
    let ids: Vec<&str> = attributes(video, "extmap");
    let id_of = |uri: &str| {
        ids.iter()
            .find(|v| v.ends_with(uri))
            .and_then(|v| v.split([' ', '/']).next())
    };
    if id_of(SDES_MID_URI) != Some("1") || id_of(SDES_RTP_STREAM_ID_URI) != Some("2") {
        return Err(HarnessError::Negotiation(format!(
            "the stack did not number mid 1 and rid 2 as OBS does:\n{video}"
        )));
    }
    let (cname, stream) = ("obsCnameXq7Lp2Rz", "obsStreamA9k3Vt8w");
    let mut shaped = String::new();
    for line in video.lines().map(str::trim_end) {
        let drop = line.starts_with("a=ssrc")
            || line.starts_with("a=msid:")
            || line.starts_with("a=rid:")
            || line.starts_with("a=simulcast:")
            || line.starts_with("a=extmap:");
        if !drop && !line.is_empty() {
            shaped.push_str(line);
            shaped.push_str("\r\n");
        }
    }
    shaped.push_str(&format!("a=extmap:1 {SDES_MID_URI}\r\n"));
    shaped.push_str(&format!("a=extmap:2 {SDES_RTP_STREAM_ID_URI}\r\n"));
    for l in layers {
        shaped.push_str(&format!("a=rid:{} send\r\n", l.rid));
    }
    let rids: Vec<&str> = layers.iter().map(|l| l.rid).collect();
    shaped.push_str(&format!("a=simulcast:send {}\r\n", rids.join(";")));
    shaped.push_str(&format!("a=ssrc:{first_ssrc} cname:{cname}\r\n"));
    shaped.push_str(&format!(
        "a=ssrc:{first_ssrc} msid:{stream} {stream}-video\r\n"
    ));
    shaped.push_str(&format!("a=msid:{stream} {stream}-video\r\n"));
    Ok(offer.replacen(video, &shaped, 1))
}

/// The offer a simulcast publisher with `opts` would send (its peer is closed again).
pub async fn simulcast_offer(opts: &SimulcastOptions) -> Result<String, HarnessError> {
    let mut prepared = prepare(opts).await?;
    prepared.peer.close().await;
    Ok(prepared.offer)
}

/// WHIP-publish a simulcast track to `{base}/whip/{room}`, wait for `Connected`, and start
/// sending every layer.
pub async fn publish_simulcast(
    base: &str,
    room: &str,
    opts: SimulcastOptions,
) -> Result<SimulcastPublisher, HarnessError> {
    let prepared = prepare(&opts).await?;
    let url = endpoint_url(base, "whip", room, opts.participant.as_deref())?;
    let answer = post_offer(&reqwest::Client::new(), url, None, prepared.offer.clone()).await?;
    let connected = async {
        let negotiated = negotiated(&prepared.offer, &answer.sdp)?;
        prepared.peer.apply_answer(&answer.sdp).await?;
        prepared
            .peer
            .wait_for_state(RTCPeerConnectionState::Connected, CONNECT_TIMEOUT)
            .await?;
        Ok::<_, HarnessError>(negotiated)
    };
    let negotiated = match connected.await {
        Ok(n) => n,
        Err(e) => {
            let _ = try_delete(&answer.location, None).await;
            return Err(e);
        }
    };
    let layers = opts
        .layers
        .iter()
        .zip(&prepared.ssrcs)
        .map(|(l, &ssrc)| LayerState {
            ssrc,
            rid: l.rid,
            size: (l.width, l.height),
            sending: true,
            keyframe_due: Some(0),
            seq: random_u32() as u16,
            ts_base: random_u32(),
            picture_id: random_u32() as u16 & 0x7fff,
            tl0: random_u32() as u8,
            since_keyframe: 0,
        })
        .collect();
    let shared = Arc::new(Shared {
        layers: Mutex::new(layers),
        requests: watch::Sender::new(vec![0; opts.layers.len()]),
    });
    let mut tasks = vec![
        tokio::spawn(count_requests(
            Arc::clone(&prepared.video),
            Arc::clone(&shared),
        )),
        tokio::spawn(send_frames(
            Arc::clone(&prepared.video),
            Arc::clone(&shared),
            opts.clone(),
            negotiated.clone(),
        )),
    ];
    if opts.audio {
        tasks.push(tokio::spawn(send_audio(
            Arc::clone(&prepared.audio),
            prepared.audio_ssrc,
        )));
    }
    Ok(SimulcastPublisher {
        location: answer.location,
        offer_sdp: prepared.offer,
        answer_sdp: answer.sdp,
        video_mid: negotiated.mid,
        shared,
        peer: prepared.peer,
        tasks,
    })
}

/// The video mid and the mid/rid extension ids the answer accepted.
fn negotiated(offer: &str, answer: &str) -> Result<Negotiated, HarnessError> {
    let missing = |what: &str| HarnessError::Negotiation(format!("{what}:\n{answer}"));
    let video = media_section(answer, "video").ok_or_else(|| missing("no video in the answer"))?;
    if !attributes(video, "rtpmap")
        .iter()
        .any(|v| v.starts_with(&format!("{VIDEO_PT} ")))
    {
        return Err(missing("the answer does not accept our video payload type"));
    }
    let id_of = |uri: &str| {
        attributes(video, "extmap")
            .iter()
            .find(|v| v.ends_with(uri))
            .and_then(|v| v.split([' ', '/']).next()?.parse::<u8>().ok())
    };
    let mid = media_section(offer, "video")
        .and_then(|s| attributes(s, "mid").first().map(|m| m.to_string()))
        .ok_or_else(|| missing("no mid in our video section"))?;
    Ok(Negotiated {
        mid,
        mid_id: id_of(SDES_MID_URI)
            .ok_or_else(|| missing("the answer refused the mid extension"))?,
        rid_id: id_of(SDES_RTP_STREAM_ID_URI)
            .ok_or_else(|| missing("the answer refused the rid extension"))?,
    })
}

/// Marks a layer for a keyframe whenever a PLI or FIR names its SSRC.
async fn count_requests(track: Arc<TrackLocalStaticRTP>, shared: Arc<Shared>) {
    while let Some(event) = track.poll().await {
        let TrackLocalEvent::OnRtcpPacket(packets) = event else {
            continue;
        };
        let mut named = Vec::new();
        for p in &packets {
            let any = p.as_any();
            if let Some(pli) = any.downcast_ref::<PictureLossIndication>() {
                named.push(pli.media_ssrc);
            } else if let Some(fir) = any.downcast_ref::<FullIntraRequest>() {
                named.extend(fir.fir.iter().map(|e| e.ssrc));
            }
        }
        let hit: Vec<usize> = {
            let mut layers = shared.layers();
            let hit = layers
                .iter()
                .enumerate()
                .filter(|(_, l)| named.contains(&l.ssrc))
                .map(|(i, _)| i)
                .collect::<Vec<_>>();
            for &i in &hit {
                layers[i].keyframe_due.get_or_insert(KEYFRAME_DELAY);
            }
            hit
        };
        if !hit.is_empty() {
            shared.requests.send_modify(|counts| {
                for i in hit {
                    counts[i] += 1;
                }
            });
        }
    }
}

/// The packets of frame `n` on every sending layer.
fn next_packets(
    layers: &mut [LayerState],
    n: u32,
    opts: &SimulcastOptions,
    neg: &Negotiated,
) -> Vec<rtc::rtp::Packet> {
    let mut out = Vec::new();
    for (i, l) in layers.iter_mut().enumerate() {
        if !l.sending {
            continue;
        }
        let key = match l.keyframe_due {
            Some(0) => l.keyframe_due.take().is_some(),
            Some(n) => {
                l.keyframe_due = Some(n - 1);
                false
            }
            None => false,
        };
        if key {
            l.since_keyframe = 0;
        }
        let frames = match opts.video {
            VideoCodec::Vp8 => {
                let temporal = opts.temporal.then(|| {
                    let k = l.since_keyframe % 4;
                    let tid = [0, 2, 1, 2][k as usize];
                    if tid == 0 {
                        l.tl0 = l.tl0.wrapping_add(1);
                    }
                    (l.tl0, tid, matches!(k, 1 | 2))
                });
                let fields = Vp8Fields {
                    picture_id: l.picture_id,
                    temporal,
                };
                l.picture_id = (l.picture_id + 1) & 0x7fff;
                match opts.bitrates.as_ref().and_then(|b| b.get(i)) {
                    Some(bps) => {
                        let bytes =
                            (u64::from(*bps) * FRAME_INTERVAL.as_millis() as u64 / 8_000) as usize;
                        vp8_frame_sized(i as u8, n, key, l.size, &fields, bytes)
                    }
                    None => vp8_frame(i as u8, n, key, l.size, &fields),
                }
            }
            VideoCodec::H264 => h264_frame(opts.h264_profile, i as u8, n, key, l.size),
        };
        l.since_keyframe += 1;
        for (payload, marker) in frames {
            let mut header = rtc::rtp::Header {
                version: 2,
                marker,
                payload_type: VIDEO_PT,
                sequence_number: l.seq,
                timestamp: l.ts_base.wrapping_add(n.wrapping_mul(TS_STEP)),
                ssrc: l.ssrc,
                ..Default::default()
            };
            l.seq = l.seq.wrapping_add(1);
            // Ids 1..=14 always fit the one-byte form; these cannot fail.
            let _ = header.set_extension(neg.mid_id, bytes::Bytes::from(neg.mid.clone()));
            let _ = header.set_extension(neg.rid_id, bytes::Bytes::from_static(l.rid.as_bytes()));
            out.push(rtc::rtp::Packet {
                header,
                payload: payload.into(),
            });
        }
    }
    out
}

/// Sends a 100-byte audio packet every 20 ms (Opus at 48 kHz: 960 ticks a packet).
async fn send_audio(track: Arc<TrackLocalStaticRTP>, ssrc: u32) {
    let mut pace = tokio::time::interval(Duration::from_millis(20));
    pace.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let (mut seq, mut ts) = (random_u32() as u16, random_u32());
    loop {
        pace.tick().await;
        let packet = rtc::rtp::Packet {
            header: rtc::rtp::Header {
                version: 2,
                payload_type: AUDIO_PT,
                sequence_number: seq,
                timestamp: ts,
                ssrc,
                ..Default::default()
            },
            payload: vec![0xfc; 100].into(),
        };
        if track.write_rtp(packet).await.is_err() {
            return;
        }
        seq = seq.wrapping_add(1);
        ts = ts.wrapping_add(960);
    }
}

async fn send_frames(
    track: Arc<TrackLocalStaticRTP>,
    shared: Arc<Shared>,
    opts: SimulcastOptions,
    neg: Negotiated,
) {
    let mut pace = tokio::time::interval(FRAME_INTERVAL);
    pace.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut n: u32 = 0;
    loop {
        pace.tick().await;
        let packets = next_packets(&mut shared.layers(), n, &opts, &neg);
        for p in packets {
            if track.write_rtp(p).await.is_err() {
                return;
            }
        }
        n += 1;
    }
}

impl SimulcastPublisher {
    /// Stops or resumes one layer (an encoder dropping a layer under load); a resumed layer
    /// starts with a keyframe.
    pub fn set_sending(&self, layer: usize, sending: bool) {
        let mut layers = self.shared.layers();
        if let Some(l) = layers.get_mut(layer) {
            if sending && !l.sending {
                l.keyframe_due = Some(0);
            }
            l.sending = sending;
        }
    }

    /// The layers' SSRCs, in `a=rid` order.
    pub fn ssrcs(&self) -> Vec<u32> {
        self.shared.layers().iter().map(|l| l.ssrc).collect()
    }

    /// Keyframe requests received so far, per layer.
    pub fn keyframe_requests(&self) -> Vec<u32> {
        self.shared.requests.borrow().clone()
    }

    /// Stops sending, DELETEs the session and closes the peer connection; panics unless the
    /// DELETE is answered 200.
    pub async fn close(mut self) {
        for t in self.tasks.drain(..) {
            t.abort();
        }
        let status = try_delete(&self.location, None).await;
        self.peer.close().await;
        match status {
            Ok(reqwest::StatusCode::OK) => {}
            Ok(s) => panic!("DELETE {} returned {s}, expected 200", self.location),
            Err(e) => panic!("{e}"),
        }
    }
}
