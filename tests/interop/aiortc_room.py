#!/usr/bin/env python3
"""Multi-party room interop: N aiortc participants publish (WHIP) and play (WHEP) one room.

Each participant i (named p1..pN) publishes over WHIP one sendonly video track
(forced to VP8 or H264) and one sendonly audio track (Opus), both unique to it
after decoding:

  video  320x240, the Y plane filled with one luma level per participant
         (40, 100, 160 for three participants) plus a small moving block, so the
         mean luma of a decoded frame names its sender;
  audio  a sine of 400*i Hz, so the zero crossings of a decoded 20 ms frame
         name its sender.

Then it plays the room over WHEP with N-1 recvonly video and N-1 recvonly audio
m-lines (slots) and follows the session's server-sent events (the WHEP `Link`
rel="urn:ietf:params:whep:ext:core:server-sent-events").

Success, within --timeout seconds: every participant decoded at least --frames
video frames and --audio-frames audio frames from EACH other participant and
none from itself; the slot_assigned events of its video slots (and of its audio
slots) name exactly the other participants, never itself; every decoded frame
came in on a slot the events assigned to its sender; the video RTP was in
--codec; every session URL answered DELETE with 200.

Usage:
  aiortc_room.py --base http://127.0.0.1:8080 --room ROOM [--participants 3]
                 [--codec VP8|H264] [--frames 20] [--audio-frames 10] [--timeout 40]
                 [--stagger S] [--token T] [--verbose]

The last line on stdout is one JSON object:
  {"ok": true, "codec": "VP8", "participants": [{"name": "p1", "luma": 40,
   "decoded_from": {"p2": 20, "p3": 20}, "audio_from": {...},
   "slots": {"0": "p2", "1": "p3", "2": "p2", "3": "p3"}, ...}], "error": null, ...}
Progress goes to stderr. Exit status 0 only on success.

Needs aiortc + aiohttp (scripts/test.sh puts them in target/pyenv).
"""

import argparse
import array
import asyncio
import json
import time
from urllib.parse import urljoin

from whip_common import (  # first: it makes aioice offer loopback candidates
    AUDIO_RATE,
    AUDIO_SAMPLES,
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
    RTCBundlePolicy,
    RTCConfiguration,
    RTCPeerConnection,
    RTCRtpSender,
    VideoStreamTrack,
)
from aiortc.mediastreams import MediaStreamError  # noqa: E402

WIDTH, HEIGHT = 320, 240
SSE_REL = "urn:ietf:params:whep:ext:core:server-sent-events"
NON_MEDIA_CODECS = {"rtx", "red", "ulpfec", "flexfec-03"}


log = logger("aiortc_room")


# --- what identifies a participant ------------------------------------------------------------


def luma_levels(n):
    """One Y level per participant: 40, 100, 160, ... (closer together above 4)."""
    step = min(60, 180 // max(1, n - 1))
    return [40 + step * i for i in range(n)], step


def tone_hz(i):
    return 400 * (i + 1)


def crossings_per_frame(hz):
    """Sign changes of one channel in a 20 ms frame of a sine at hz."""
    return 2 * hz * AUDIO_SAMPLES / AUDIO_RATE


def nearest(value, table, tolerance):
    """The name whose reference value is closest to value, if within tolerance."""
    best = min(table.items(), key=lambda kv: abs(kv[1] - value))
    return best[0] if abs(best[1] - value) <= tolerance else None


def mean_luma(frame):
    """Mean of the Y plane on an 8x8-pixel grid (1200 samples: cheap in pure Python)."""
    plane = frame.planes[0]
    mv = memoryview(plane)
    stride, width = plane.line_size, plane.width
    total = count = 0
    for y in range(4, plane.height, 8):
        row = mv[y * stride + 4:y * stride + width:8]
        total += sum(row)
        count += len(row)
    return total / count if count else 0.0


def zero_crossings(frame):
    """Sign changes of the first channel of a decoded s16 audio frame."""
    if frame.format.name != "s16":
        frame = frame.reformat(format="s16")
    samples = array.array("h", bytes(frame.planes[0]))
    channels = len(frame.layout.channels) if not frame.format.is_planar else 1
    ch0 = samples[: frame.samples * channels: channels]
    return sum(1 for a, b in zip(ch0, ch0[1:]) if (a < 0) != (b < 0))


# --- synthetic media ---------------------------------------------------------------------


class SolidVideo(VideoStreamTrack):
    """320x240 yuv420p at one luma level, with a 16x16 block (level +/- 30) moving 4 px a
    frame so the encoder has motion to code. The block shifts the mean by < 0.1."""

    BLOCK = 16

    def __init__(self, luma):
        super().__init__()
        self.n = 0
        self.luma = luma
        self.block_luma = luma + 30 if luma < 128 else luma - 30
        self.y = bytes([luma]) * (WIDTH * HEIGHT)
        self.c = bytes([128]) * ((WIDTH // 2) * (HEIGHT // 2))

    @staticmethod
    def _fill(plane, data, width, height):
        pad = plane.line_size - width
        if pad:
            data = b"".join(data[r * width:(r + 1) * width] + bytes(pad) for r in range(height))
        plane.update(data)

    async def recv(self):
        pts, time_base = await self.next_timestamp()
        frame = av.VideoFrame(WIDTH, HEIGHT, "yuv420p")
        y = bytearray(self.y)
        x0 = (self.n * 4) % (WIDTH - self.BLOCK)
        y0 = (HEIGHT - self.BLOCK) // 2
        row = bytes([self.block_luma]) * self.BLOCK
        for r in range(y0, y0 + self.BLOCK):
            y[r * WIDTH + x0:r * WIDTH + x0 + self.BLOCK] = row
        self._fill(frame.planes[0], bytes(y), WIDTH, HEIGHT)
        self._fill(frame.planes[1], self.c, WIDTH // 2, HEIGHT // 2)
        self._fill(frame.planes[2], self.c, WIDTH // 2, HEIGHT // 2)
        frame.pts, frame.time_base = pts, time_base
        self.n += 1
        return frame


# --- SDP and HTTP helpers -------------------------------------------------------------------


def sdp_codecs(sdp, kind):
    """{payload_type: codec_name} of every m=<kind> section."""
    names, in_section = {}, False
    for line in sdp.splitlines():
        if line.startswith("m="):
            in_section = line[2:].split()[0] == kind
        elif in_section and line.startswith("a=rtpmap:"):
            pt, _, rest = line[len("a=rtpmap:"):].partition(" ")
            if pt.isdigit():
                names[int(pt)] = rest.split("/")[0]
    return names


def link_target(headers, base_url, rel):
    """The URL of the Link header entry with rel, resolved against base_url."""
    for value in headers.getall("Link", []):
        for part in value.split(","):
            part = part.strip()
            if not part.startswith("<") or ">" not in part:
                continue
            target, params = part[1:].split(">", 1)
            for p in params.split(";"):
                k, _, v = p.strip().partition("=")
                if k.strip().lower() == "rel" and rel in v.strip().strip('"').split():
                    return urljoin(base_url, target)
    return None


# --- one participant ------------------------------------------------------------------------------


class Participant:
    def __init__(self, index, names, args, cfg, levels, tolerance):
        self.index, self.name, self.args = index, names[index], args
        self.others = [n for n in names if n != self.name]
        self.luma, self.hz = levels[index], tone_hz(index)
        self.luma_table = {n: levels[i] for i, n in enumerate(names)}
        self.tone_table = {n: crossings_per_frame(tone_hz(i)) for i, n in enumerate(names)}
        self.tolerance = tolerance
        self.pub = RTCPeerConnection(cfg)
        self.sub = RTCPeerConnection(cfg)
        k = len(self.others)
        for _ in range(k):
            self.sub.addTransceiver("video", direction="recvonly")
        for _ in range(k):
            self.sub.addTransceiver("audio", direction="recvonly")
        self.sub.on("track", self._on_track)
        self.whip_session = self.whep_session = self.events_url = None
        self.t_whep = None
        # what was decoded
        self.video_from = {n: 0 for n in names}
        self.audio_from = {n: 0 for n in names}
        self.video_unidentified = self.audio_unidentified = 0
        self.luma_seen = {}  # sender -> [min, max] mean luma
        self.crossings_seen = {}  # sender -> [min, max]
        self.unidentified_luma = []  # a few samples, for the report
        self.first_frame_ms = {}
        self.mid_senders = {}  # mid -> {sender: frames}, by decoded content
        self.rtp_payload_types = {}
        self.answer = ""
        # what the events said
        self.slots = {}  # mid -> participant (latest slot_assigned)
        self.slot_kinds = {}  # mid -> kind
        self.slot_history = []  # [(mid, participant)] in order
        self.events = []  # every event type, in order
        self.sse_status = None
        self.sse_ended = False
        self.tasks = []
        self.done = asyncio.Event()

    # media ---------------------------------------------------------------------------------

    def _mid_of(self, track):
        for t in self.sub.getTransceivers():
            if t.receiver.track is track:
                return t.mid
        return None

    def _on_track(self, track):
        self.tasks.append(asyncio.ensure_future(self._consume(track, self._mid_of(track))))

    async def _consume(self, track, mid):
        while True:
            try:
                frame = await track.recv()
            except (MediaStreamError, asyncio.CancelledError):
                return
            if track.kind == "video":
                if (frame.width, frame.height) != (WIDTH, HEIGHT):
                    self.video_unidentified += 1
                    continue
                value = mean_luma(frame)
                who = nearest(value, self.luma_table, self.tolerance)
                seen, counts = self.luma_seen, self.video_from
            else:
                value = zero_crossings(frame)
                # Allow a fifth of the expected crossings (and 4 at least) either way.
                who = None
                best = min(self.tone_table.items(), key=lambda kv: abs(kv[1] - value))
                if abs(best[1] - value) <= max(4, best[1] / 5):
                    who = best[0]
                seen, counts = self.crossings_seen, self.audio_from
            if who is None:
                if track.kind == "video":
                    self.video_unidentified += 1
                    if len(self.unidentified_luma) < 10:
                        self.unidentified_luma.append(round(value, 1))
                else:
                    self.audio_unidentified += 1
                continue
            counts[who] += 1
            lo_hi = seen.setdefault(who, [value, value])
            lo_hi[0], lo_hi[1] = min(lo_hi[0], value), max(lo_hi[1], value)
            per_mid = self.mid_senders.setdefault(mid, {})
            per_mid[who] = per_mid.get(who, 0) + 1
            if track.kind == "video" and who not in self.first_frame_ms:
                self.first_frame_ms[who] = round((time.monotonic() - self.t_whep) * 1000)
                log(f"{self.name}: first video frame from {who} on mid {mid} "
                    f"after {self.first_frame_ms[who]} ms (luma {value:.1f})")
            self._check_done()

    def _check_done(self):
        enough = all(
            self.video_from[o] >= self.args.frames and self.audio_from[o] >= self.args.audio_frames
            for o in self.others
        )
        if enough and self.slots_ok() is None:
            self.done.set()

    def _count_rtp(self):
        """Count the payload types of incoming video RTP (aiortc has no public API for
        the codec it decodes, so wrap the receivers' packet handler)."""
        for t in self.sub.getTransceivers():
            if t.kind != "video":
                continue
            inner = getattr(t.receiver, "_handle_rtp_packet", None)
            if inner is None:
                return

            async def counting(packet, *a, _inner=inner, **kw):
                pt = packet.payload_type
                self.rtp_payload_types[pt] = self.rtp_payload_types.get(pt, 0) + 1
                return await _inner(packet, *a, **kw)

            t.receiver._handle_rtp_packet = counting

    def rtp_codecs(self):
        names = sdp_codecs(self.answer, "video")
        out = {}
        for pt, n in self.rtp_payload_types.items():
            name = names.get(pt, f"pt{pt}")
            out[name] = out.get(name, 0) + n
        return out

    # signalling -------------------------------------------------------------------------------

    async def publish(self, http, whip, headers):
        vt = self.pub.addTransceiver(SolidVideo(self.luma), direction="sendonly")
        wanted = f"video/{self.args.codec}"
        vt.setCodecPreferences(
            [c for c in RTCRtpSender.getCapabilities("video").codecs if c.mimeType == wanted]
        )
        self.pub.addTransceiver(SineTrack(self.hz), direction="sendonly")
        url = f"{whip}?participant={self.name}"
        self.whip_session, answer, _ = await offer_answer(http, url, self.pub, headers, log)
        codecs = {n.upper() for n in sdp_codecs(answer, "video").values()} - {
            c.upper() for c in NON_MEDIA_CODECS
        }
        log(f"{self.name}: WHIP 201 -> {self.whip_session} (video {sorted(codecs)}, "
            f"luma {self.luma}, tone {self.hz} Hz)")
        if codecs != {self.args.codec}:
            raise HttpError(f"{self.name}: WHIP answer video codecs {sorted(codecs)}, want {self.args.codec}")

    async def play(self, http, whep, headers):
        self.t_whep = time.monotonic()
        self._count_rtp()
        url = f"{whep}?participant={self.name}"
        self.whep_session, self.answer, resp_headers = await offer_answer(http, url, self.sub, headers, log)
        self.events_url = link_target(resp_headers, url, SSE_REL)
        log(f"{self.name}: WHEP 201 -> {self.whep_session} (events {self.events_url})")
        if not self.events_url:
            raise HttpError(f"{self.name}: WHEP 201 has no Link rel=\"{SSE_REL}\"")
        self.tasks.append(asyncio.ensure_future(self._follow_events(http, headers)))

    async def _follow_events(self, http, headers):
        timeout = aiohttp.ClientTimeout(total=None, sock_read=None, sock_connect=10)
        hdrs = dict(headers, Accept="text/event-stream")
        try:
            async with http.get(self.events_url, headers=hdrs, timeout=timeout) as r:
                self.sse_status = r.status
                if r.status != 200:
                    log(f"{self.name}: GET {self.events_url}: HTTP {r.status}")
                    return
                data = []
                async for raw in r.content:
                    line = raw.decode("utf-8", "replace").rstrip("\r\n")
                    if line.startswith("data:"):
                        data.append(line[5:].lstrip(" "))
                    elif line == "" and data:
                        self._on_event("\n".join(data))
                        data = []
                self.sse_ended = True
        except asyncio.CancelledError:
            raise
        except Exception as e:  # the checks report what is missing
            log(f"{self.name}: event stream: {type(e).__name__}: {e}")

    def _on_event(self, text):
        try:
            ev = json.loads(text)
        except ValueError:
            log(f"{self.name}: event is not JSON: {text[:200]!r}")
            return
        kind = ev.get("type")
        self.events.append(kind)
        if self.args.verbose:
            log(f"{self.name}: event {text}")
        if kind == "slot_assigned":
            mid, who = str(ev.get("mid")), ev.get("participant")
            self.slots[mid] = who
            self.slot_kinds[mid] = ev.get("kind")
            self.slot_history.append((mid, who))
            log(f"{self.name}: slot {mid} ({ev.get('kind')}) -> {who}")
            self._check_done()

    # checks ------------------------------------------------------------------------------

    def mids(self, kind):
        return [t.mid for t in self.sub.getTransceivers() if t.kind == kind]

    def slots_ok(self):
        """None when the events say each slot of each kind shows a different other
        participant, together all of them; else why not."""
        for kind in ("video", "audio"):
            shown = [self.slots.get(m) for m in self.mids(kind)]
            if sorted(s for s in shown if s) != sorted(self.others) or len(shown) != len(self.others):
                return f"{kind} slots show {shown}, want {self.others} (one each)"
            for m in self.mids(kind):
                if self.slot_kinds.get(m) != kind:
                    return f"slot_assigned for {kind} mid {m} says kind {self.slot_kinds.get(m)}"
        return None

    def problems(self):
        out = []
        if self.video_from[self.name]:
            out.append(f"decoded {self.video_from[self.name]} of its own video frames")
        if self.audio_from[self.name]:
            out.append(f"decoded {self.audio_from[self.name]} of its own audio frames")
        for o in self.others:
            if self.video_from[o] < self.args.frames:
                out.append(f"{self.video_from[o]}/{self.args.frames} video frames from {o}")
            if self.audio_from[o] < self.args.audio_frames:
                out.append(f"{self.audio_from[o]}/{self.args.audio_frames} audio frames from {o}")
        bad = self.slots_ok()
        if bad:
            out.append(bad)
        if any(who == self.name for _, who in self.slot_history):
            out.append("a slot_assigned event named the participant itself")
        for mid, senders in self.mid_senders.items():
            assigned = {who for m, who in self.slot_history if m == mid}
            stray = {s: n for s, n in senders.items() if s not in assigned}
            if stray:
                out.append(f"mid {mid}: frames from {stray} but slot_assigned named only {sorted(assigned, key=str)}")
        seen = {n for n in self.rtp_codecs() if n.lower() not in NON_MEDIA_CODECS}
        if seen and seen != {self.args.codec}:
            out.append(f"received video RTP in {sorted(seen)}, want {self.args.codec}")
        return out

    def report(self):
        r1 = lambda v: round(v, 1)  # noqa: E731
        return {
            "name": self.name,
            "luma": self.luma,
            "tone_hz": self.hz,
            "decoded_from": {o: self.video_from[o] for o in self.others},
            "audio_from": {o: self.audio_from[o] for o in self.others},
            "own_frames": self.video_from[self.name] + self.audio_from[self.name],
            "unidentified": {"video": self.video_unidentified, "audio": self.audio_unidentified},
            "unidentified_luma": self.unidentified_luma,
            "luma_seen": {k: [r1(a), r1(b)] for k, (a, b) in sorted(self.luma_seen.items())},
            "crossings_seen": {k: v for k, v in sorted(self.crossings_seen.items())},
            "first_frame_ms": self.first_frame_ms,
            "slots": dict(sorted(self.slots.items())),
            "mid_senders": {str(k): v for k, v in sorted(self.mid_senders.items(), key=lambda kv: str(kv[0]))},
            "slot_events": len(self.slot_history),
            "events": {k: self.events.count(k) for k in dict.fromkeys(self.events)},
            "rtp_codecs": self.rtp_codecs(),
        }


# --- main flow ----------------------------------------------------------------------------------


async def run(args, result):
    # max-bundle: with aiortc's default ("balanced") a second transceiver of a kind is
    # pre-bundled onto the first one of that kind; when the answer BUNDLEs everything on
    # mid 0, aiortc moves the first audio transceiver but leaves the second on a transport
    # it then stops, never starts its receiver, and routes that slot's RTP (unknown SSRC,
    # same payload type) to the first audio receiver. Video (kind of mid 0) is unaffected.
    # Upstream: https://github.com/aiortc/aiortc/issues/1414 (open in aiortc 1.16.0).
    cfg = RTCConfiguration(iceServers=[], bundlePolicy=RTCBundlePolicy.MAX_BUNDLE)
    headers = {"Authorization": f"Bearer {args.token}"} if args.token else {}
    base = args.base.rstrip("/")
    whip, whep = f"{base}/whip/{args.room}", f"{base}/whep/{args.room}"
    names = [f"p{i + 1}" for i in range(args.participants)]
    levels, step = luma_levels(args.participants)
    tolerance = step / 3
    result["luma_tolerance"] = round(tolerance, 1)
    people = [Participant(i, names, args, cfg, levels, tolerance) for i in range(args.participants)]
    errors = []
    late = args.stagger * (args.participants - 1)
    t0 = time.monotonic()

    def fail(msg):
        if msg not in errors:
            errors.append(msg)

    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=10)) as http:

        async def join(p):
            # --stagger: later participants join a room whose encoders are past their
            # first keyframe, so they only see the others if the server relays a PLI.
            await asyncio.sleep(p.index * args.stagger)
            await p.publish(http, whip, headers)
            await p.play(http, whep, headers)

        async def media_phase():
            # Everyone publishes and then plays, all at once (or --stagger seconds
            # apart); each keeps publishing
            # until every participant has what it needs.
            outcomes = await asyncio.gather(*(join(p) for p in people), return_exceptions=True)
            for o in outcomes:
                if isinstance(o, BaseException):
                    raise o
            await asyncio.gather(*(p.done.wait() for p in people))

        try:
            await asyncio.wait_for(media_phase(), timeout=args.timeout + late)
        except asyncio.TimeoutError:
            fail(f"timeout after {args.timeout + late:g}s")
        except (HttpError, aiohttp.ClientError, OSError, ValueError) as e:
            fail(f"{type(e).__name__}: {e}")
        result["elapsed_ms"] = round((time.monotonic() - t0) * 1000)

        for p in people:
            for problem in p.problems():
                fail(f"{p.name}: {problem}")

        # Tear down: players first, then publishers.
        sessions = [p.whep_session for p in people] + [p.whip_session for p in people]
        await delete_sessions(http, filter(None, sessions), headers, fail)
        # The event streams of deleted sessions should end by themselves.
        await asyncio.sleep(0.3)
        result["sse_ended_after_delete"] = [p.sse_ended for p in people]

        for p in people:
            for t in p.tasks:
                t.cancel()
        await close_peers([pc for p in people for pc in (p.sub, p.pub)], log)

    result["participants"] = [p.report() for p in people]
    result["error"] = "; ".join(errors) if errors else None
    result["ok"] = not errors


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--base", required=True, help="server base URL, e.g. http://127.0.0.1:8080")
    ap.add_argument("--room", required=True)
    ap.add_argument("--participants", type=int, default=3)
    ap.add_argument("--codec", default="VP8", type=str.upper, choices=["VP8", "H264"])
    ap.add_argument("--frames", type=int, default=20,
                    help="video frames each participant must decode from each other one")
    ap.add_argument("--audio-frames", type=int, default=10,
                    help="audio frames each participant must decode from each other one")
    ap.add_argument("--timeout", type=float, default=40.0, help="seconds for WHIP + WHEP + frames")
    ap.add_argument("--stagger", type=float, default=0.0,
                    help="seconds between one participant's join and the next (not counted in --timeout)")
    ap.add_argument("--token", help="sent as 'Authorization: Bearer T' on every request")
    ap.add_argument("--verbose", "-v", action="store_true", help="every event, and aiortc debug logging")
    args = ap.parse_args()
    if not 2 <= args.participants <= 8:
        ap.error("--participants must be 2 to 8")

    finish(run, args, {"ok": False, "codec": args.codec, "room": args.room, "participants": [], "error": None})


if __name__ == "__main__":
    main()
