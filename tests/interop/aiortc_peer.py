#!/usr/bin/env python3
"""aiortc WHIP publisher + WHEP viewers, used by Parley's Rust integration tests.

One aiortc peer publishes synthetic video (a moving 320x240 pattern, forced to
VP8 or H264) and audio (a 440 Hz sine, Opus) over WHIP; then N separate aiortc
peers play the room over WHEP and decode what they get. Success: every viewer
decoded at least --frames 320x240 video frames (and --min-audio-frames audio
frames) within --timeout seconds, the video RTP they received was in the
requested codec (and the WHEP answer offered it; --strict-answer: listed it
first), and every session URL answered DELETE with 200.

Usage:
  aiortc_peer.py --base http://127.0.0.1:8080 --room demo --codec VP8|H264
                 [--viewers 1] [--frames 30] [--timeout 20] [--token T]
                 [--min-audio-frames 1] [--viewer-delay 0] [--strict-answer] [--rtx] [--verbose]

The last line on stdout is one JSON object:
  {"ok": true, "codec": "VP8", "viewers": [{"video_frames": 30, "audio_frames": 48,
   "first_frame_ms": 812, ...}], "error": null, ...}
first_frame_ms counts from the start of that viewer's WHEP POST to its first
decoded video frame. Progress goes to stderr. Exit status 0 only on success.

Needs aiortc + aiohttp (scripts/test.sh puts them in target/pyenv).
"""

import argparse
import asyncio
import math
import time

from whip_common import (  # first: it makes aioice offer loopback candidates
    HttpError,
    SineTrack,
    close_peers,
    delete_sessions,
    finish,
    logger,
    offer_answer,
)

import aiohttp  # noqa: E402
import av  # noqa: E402
from aiortc import (  # noqa: E402
    RTCConfiguration,
    RTCPeerConnection,
    RTCRtpSender,
    VideoStreamTrack,
)
from aiortc.mediastreams import MediaStreamError  # noqa: E402

WIDTH, HEIGHT = 320, 240
NON_MEDIA_CODECS = {"rtx", "red", "ulpfec", "flexfec-03"}


log = logger("aiortc_peer")


# --- synthetic media ---------------------------------------------------------------


class MovingPattern(VideoStreamTrack):
    """320x240 yuv420p: diagonal luma bars that move 2 px per frame, and a chroma
    tint that drifts slowly. Cheap enough to run at 30 fps in pure Python."""

    PERIOD = 32

    def __init__(self):
        super().__init__()
        self.n = 0
        bar = [40 if (i % self.PERIOD) < self.PERIOD // 2 else 210 for i in range(self.PERIOD)]
        self.base = bytes(bar[i % self.PERIOD] for i in range(WIDTH + self.PERIOD))

    def _plane(self, plane, rows):
        pad = plane.line_size - plane.width
        if pad:
            rows = [r + bytes(pad) for r in rows]
        plane.update(b"".join(rows))

    async def recv(self):
        pts, time_base = await self.next_timestamp()
        frame = av.VideoFrame(WIDTH, HEIGHT, "yuv420p")
        off = (self.n * 2) % self.PERIOD
        rows = [self.base[(off + y) % self.PERIOD:][:WIDTH] for y in range(HEIGHT)]
        self._plane(frame.planes[0], rows)
        u = 128 + int(60 * math.sin(self.n / 15))
        v = 128 + int(60 * math.cos(self.n / 15))
        cw, ch = WIDTH // 2, HEIGHT // 2
        self._plane(frame.planes[1], [bytes([u]) * cw] * ch)
        self._plane(frame.planes[2], [bytes([v]) * cw] * ch)
        frame.pts, frame.time_base = pts, time_base
        self.n += 1
        return frame


# --- SDP helpers ----------------------------------------------------------------------


def sdp_codecs(sdp, kind):
    """[(payload_type, codec_name)] of the first m=<kind> section, in m-line order."""
    order, names, in_section = [], {}, False
    for line in sdp.splitlines():
        if line.startswith("m="):
            if in_section:
                break
            parts = line[2:].split()
            in_section = parts[0] == kind and parts[1] != "0"
            if in_section:
                order = [int(p) for p in parts[3:] if p.isdigit()]
        elif in_section and line.startswith("a=rtpmap:"):
            pt, _, rest = line[len("a=rtpmap:"):].partition(" ")
            if pt.isdigit():
                names[int(pt)] = rest.split("/")[0]
    return [(pt, names.get(pt, "?")) for pt in order]


def first_media_codec(sdp, kind):
    for _, name in sdp_codecs(sdp, kind):
        if name.lower() not in NON_MEDIA_CODECS:
            return name
    return None


# --- viewer ----------------------------------------------------------------------------------


class Viewer:
    def __init__(self, index, cfg, need_video, need_audio):
        self.index = index
        self.pc = RTCPeerConnection(cfg)
        self.need_video, self.need_audio = need_video, need_audio
        self.video_frames = 0
        self.other_size_frames = 0
        self.sizes = {}
        self.audio_frames = 0
        self.t_post = None
        self.first_frame_ms = None
        self.negotiated_codec = None
        self.rtp_payload_types = {}
        self.answer = ""
        self.done = asyncio.Event()
        self.tasks = []
        self.pc.addTransceiver("video", direction="recvonly")
        self.pc.addTransceiver("audio", direction="recvonly")
        self.pc.on("track", self._on_track)

    def _on_track(self, track):
        self.tasks.append(asyncio.ensure_future(self._consume(track)))

    def _check_done(self):
        if self.video_frames >= self.need_video and self.audio_frames >= self.need_audio:
            self.done.set()

    async def _consume(self, track):
        while True:
            try:
                frame = await track.recv()
            except (MediaStreamError, asyncio.CancelledError):
                return
            if track.kind == "video":
                size = (frame.width, frame.height)
                self.sizes[f"{size[0]}x{size[1]}"] = self.sizes.get(f"{size[0]}x{size[1]}", 0) + 1
                if size != (WIDTH, HEIGHT):
                    self.other_size_frames += 1
                    continue
                self.video_frames += 1
                if self.first_frame_ms is None:
                    self.first_frame_ms = round((time.monotonic() - self.t_post) * 1000)
                    log(f"viewer {self.index}: first video frame after {self.first_frame_ms} ms")
            else:
                self.audio_frames += 1
            self._check_done()

    def _count_rtp(self):
        """Count the payload types of incoming video RTP (aiortc has no public API
        for the codec it decodes, so wrap the receiver's packet handler)."""
        for t in self.pc.getTransceivers():
            if t.kind != "video":
                continue
            receiver = t.receiver
            inner = getattr(receiver, "_handle_rtp_packet", None)
            if inner is None:
                return

            async def counting(packet, *a, _inner=inner, **kw):
                pt = packet.payload_type
                self.rtp_payload_types[pt] = self.rtp_payload_types.get(pt, 0) + 1
                return await _inner(packet, *a, **kw)

            receiver._handle_rtp_packet = counting

    async def start(self, http, url, headers):
        self.t_post = time.monotonic()
        self._count_rtp()
        session, self.answer, _ = await offer_answer(http, url, self.pc, headers, log)
        self.negotiated_codec = first_media_codec(self.answer, "video")
        log(f"viewer {self.index}: WHEP 201 -> {session} (answer video codec {self.negotiated_codec})")
        return session

    def rtp_codecs(self):
        names = dict(sdp_codecs(self.answer, "video"))
        out = {}
        for pt, n in self.rtp_payload_types.items():
            name = names.get(pt, f"pt{pt}")
            out[name] = out.get(name, 0) + n
        return out

    def answer_codecs(self):
        names = []
        for _, n in sdp_codecs(self.answer, "video"):
            if n.lower() not in NON_MEDIA_CODECS and n not in names:
                names.append(n)
        return names

    def report(self):
        return {
            "video_frames": self.video_frames,
            "audio_frames": self.audio_frames,
            "first_frame_ms": self.first_frame_ms,
            "negotiated_codec": self.negotiated_codec,
            "answer_codecs": self.answer_codecs(),
            "rtp_codecs": self.rtp_codecs(),
            "sizes": self.sizes,
        }


# --- main flow --------------------------------------------------------------------------------


async def run(args, result):
    cfg = RTCConfiguration(iceServers=[])
    headers = {"Authorization": f"Bearer {args.token}"} if args.token else {}
    base = args.base.rstrip("/")
    whip, whep = f"{base}/whip/{args.room}", f"{base}/whep/{args.room}"
    pcs, sessions, viewers, errors = [], [], [], []
    t0 = time.monotonic()

    def fail(msg):
        if msg not in errors:
            errors.append(msg)

    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=10)) as http:

        async def media_phase():
            # Publisher: sendonly video forced to one codec, sendonly audio.
            pub = RTCPeerConnection(cfg)
            pcs.append(pub)
            vt = pub.addTransceiver(MovingPattern(), direction="sendonly")
            wanted = [f"video/{args.codec}"] + (["video/rtx"] if args.rtx else [])
            prefs = [c for c in RTCRtpSender.getCapabilities("video").codecs if c.mimeType in wanted]
            vt.setCodecPreferences(prefs)
            pub.addTransceiver(SineTrack(440), direction="sendonly")
            session, answer, _ = await offer_answer(http, whip, pub, headers, log)
            sessions.append(session)
            result["publisher_codec"] = first_media_codec(answer, "video")
            log(f"publisher: WHIP 201 -> {session} (answer video codec {result['publisher_codec']})")
            if result["publisher_codec"] and result["publisher_codec"].upper() != args.codec:
                fail(f"WHIP answer negotiated {result['publisher_codec']}, want {args.codec}")

            if args.viewer_delay > 0:
                # Late joiners: the encoder is past its first keyframe, so the
                # viewers only get a picture if the server relays their PLI.
                await asyncio.sleep(args.viewer_delay)

            # Viewers: separate peer connections, set up concurrently.
            for i in range(args.viewers):
                viewers.append(Viewer(i, cfg, args.frames, args.min_audio_frames))
                pcs.append(viewers[-1].pc)
            outcomes = await asyncio.gather(
                *(v.start(http, whep, headers) for v in viewers), return_exceptions=True
            )
            sessions.extend(o for o in outcomes if isinstance(o, str))
            for o in outcomes:
                if isinstance(o, BaseException):
                    raise o

            # Keep publishing until every viewer has enough frames.
            await asyncio.gather(*(v.done.wait() for v in viewers))

        try:
            await asyncio.wait_for(media_phase(), timeout=args.timeout + args.viewer_delay)
        except asyncio.TimeoutError:
            short = [
                f"viewer {v.index}: {v.video_frames}/{args.frames} video, "
                f"{v.audio_frames}/{args.min_audio_frames} audio"
                for v in viewers
                if not v.done.is_set()
            ]
            fail(f"timeout after {args.timeout:g}s: " + ("; ".join(short) or "viewers not set up"))
        except (HttpError, aiohttp.ClientError, asyncio.TimeoutError, OSError, ValueError) as e:
            fail(f"{type(e).__name__}: {e}")
        result["elapsed_ms"] = round((time.monotonic() - t0) * 1000)

        for v in viewers:
            if v.done.is_set():
                # The RTP payload types actually received are the authority: a server
                # may answer with several codecs (Pion lists VP8 first) and send another.
                seen = {n for n in v.rtp_codecs() if n.lower() not in NON_MEDIA_CODECS}
                offered = [n.upper() for n in v.answer_codecs()]
                if seen and seen != {args.codec}:
                    fail(f"viewer {v.index}: received RTP in {sorted(seen)}, want {args.codec}")
                if args.codec not in offered:
                    fail(f"viewer {v.index}: WHEP answer has no {args.codec} (has {offered})")
                elif (args.strict_answer or not seen) and (v.negotiated_codec or "").upper() != args.codec:
                    fail(f"viewer {v.index}: WHEP answer's first video codec is {v.negotiated_codec}, want {args.codec}")
                if v.other_size_frames:
                    log(f"viewer {v.index}: {v.other_size_frames} frames of another size: {v.sizes}")

        # Tear down: viewers first, then the publisher.
        await delete_sessions(http, reversed(sessions), headers, fail)

    for v in viewers:
        for t in v.tasks:
            t.cancel()
    await close_peers(pcs, log)

    result["viewers"] = [v.report() for v in viewers]
    if not errors and len(viewers) != args.viewers:
        fail("not every viewer was set up")
    result["error"] = "; ".join(errors) if errors else None
    result["ok"] = not errors


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--base", required=True, help="server base URL, e.g. http://127.0.0.1:8080")
    ap.add_argument("--room", required=True)
    ap.add_argument("--codec", required=True, type=str.upper, choices=["VP8", "H264"])
    ap.add_argument("--viewers", type=int, default=1)
    ap.add_argument("--frames", type=int, default=30, help="video frames each viewer must decode")
    ap.add_argument("--min-audio-frames", type=int, default=1, help="audio frames each viewer must decode")
    ap.add_argument("--timeout", type=float, default=20.0, help="seconds for WHIP + WHEP + frames")
    ap.add_argument("--viewer-delay", type=float, default=0.0,
                    help="seconds between WHIP and the WHEP viewers (not counted in --timeout)")
    ap.add_argument("--token", help="sent as 'Authorization: Bearer T' on every request")
    ap.add_argument("--strict-answer", action="store_true",
                    help="also require the WHEP answer's first video codec to be --codec")
    ap.add_argument("--rtx", action="store_true", help="also offer video/rtx on the publisher")
    ap.add_argument("--verbose", "-v", action="store_true", help="aiortc debug logging on stderr")
    args = ap.parse_args()
    if args.viewers < 1:
        ap.error("--viewers must be at least 1")

    finish(run, args, {"ok": False, "codec": args.codec, "viewers": [], "error": None})


if __name__ == "__main__":
    main()
