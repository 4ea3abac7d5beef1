#!/usr/bin/env python3
"""One aiortc WHEP viewer that reports, as it goes, what it receives and what it sends back.

It plays a room over WHEP (recvonly video and audio, non-trickle) and counts the RTP that
reaches each receiver, without decoding it: the Rust tests publish synthetic payloads that
no decoder accepts, so the decoders are replaced by ones that take every frame and return
no picture (aiortc would otherwise log a decode error and send a PLI for each frame). The
rest of aiortc's receive path runs unchanged: its jitter buffer, NACKs, receiver reports,
and the RemoteBitrateEstimator that turns abs-send-time arrivals into REMB feedback. Each
REMB aiortc sends is recorded.

stdout carries one JSON object per line:
  {"type": "started", "session": URL, "events": URL or null, "mids": {"video": "0", ...},
   "answer": {"goog_remb": true, "abs_send_time": 3, "transport_cc": null}}
  {"type": "tick", "t": 1.0, "video": {"packets": 170, "bytes": 187000, "padding": 3,
   "rate": 1496000, "ssrcs": {"1234": 187000}}, "audio": {...},
   "remb": {"count": 2, "last": 650000}, "overuses": 1, "lag_ms": 3.2}
      once per --interval seconds
  {"type": "result", "ok": true, "rembs": [[t, bps], ...], "overuses": [t, ...],
   "video": {...}, "audio": {...}, "error": null}
      at the end
`t` counts seconds from the WHEP answer. `rate` is the RTP payload (with padding) in bits
per second over the last interval; `bytes` and `packets` are totals. `rembs` are the REMBs
aiortc sent, read back from the packets; `overuses` counts (or lists) the times aiortc's
estimator detected overuse. `lag_ms` is how late the event loop woke up at worst over the
interval: a busy Python delays arrival times, which aiortc's estimator reads as a growing
queue. When stdin says `stop` or closes, the viewer sends DELETE (which must answer 200)
and prints the result; after --timeout seconds without that it gives up (ok false).
Progress goes to stderr; exit status 0 only when ok.

Usage:
  aiortc_viewer.py --base http://127.0.0.1:8080 --room ROOM [--interval 1] [--timeout 120]
                   [--token T] [--verbose]

Needs aiortc + aiohttp (scripts/test.sh puts them in target/pyenv).
"""

import argparse
import asyncio
import json
import sys
import time

from whip_common import (  # first: it makes aioice offer loopback candidates
    HttpError,
    close_peers,
    delete_sessions,
    finish,
    logger,
    offer_answer,
)

import aiohttp  # noqa: E402
import aiortc.rtcrtpreceiver  # noqa: E402
from aiortc import RTCConfiguration, RTCPeerConnection  # noqa: E402
from aiortc.rate import BandwidthUsage  # noqa: E402
from aiortc.rtp import RTCP_PSFB_APP, RtcpPsfbPacket, unpack_remb_fci  # noqa: E402

SSE_REL = "urn:ietf:params:whep:ext:core:server-sent-events"
ABS_SEND_TIME_URI = "http://www.webrtc.org/experiments/rtp-hdrext/abs-send-time"
TRANSPORT_CC_URI = "http://www.ietf.org/id/draft-holmer-rmcat-transport-wide-cc-extensions-01"

log = logger("aiortc_viewer")


class NoDecoder:
    """Takes every encoded frame and returns no picture or sound."""

    def decode(self, encoded_frame):
        return []


# The receivers' decoder threads look the decoder up here.
aiortc.rtcrtpreceiver.get_decoder = lambda codec: NoDecoder()


def emit(obj):
    print(json.dumps(obj), flush=True)


def answer_facts(sdp):
    """What the answer's video section negotiated for congestion feedback."""
    video, facts = False, {"goog_remb": False, "abs_send_time": None, "transport_cc": None}
    for line in sdp.splitlines():
        if line.startswith("m="):
            video = line.startswith("m=video")
        elif video and line.startswith("a=rtcp-fb:") and line.split()[1:2] == ["goog-remb"]:
            facts["goog_remb"] = True
        elif video and line.startswith("a=extmap:"):
            ident, _, uri = line[len("a=extmap:"):].partition(" ")
            ident = int(ident.split("/")[0])
            if uri.strip() == ABS_SEND_TIME_URI:
                facts["abs_send_time"] = ident
            elif uri.strip() == TRANSPORT_CC_URI:
                facts["transport_cc"] = ident
    return facts


def sse_link(headers):
    """The session's server-sent events URL from the answer's Link headers, if any."""
    for value in headers.getall("Link", []):
        for part in value.split(","):
            if f'rel="{SSE_REL}"' in part:
                return part.split(";")[0].strip().strip("<>")
    return None


class Counter:
    """RTP that reached one receiver: totals, per SSRC, and bytes at the last tick."""

    def __init__(self):
        self.packets = 0
        self.bytes = 0
        self.padding = 0
        self.ssrcs = {}
        self.bytes_then = 0

    def add(self, packet):
        size = len(packet.payload) + packet.padding_size
        self.packets += 1
        self.bytes += size
        if not packet.payload:
            self.padding += 1
        key = str(packet.ssrc)
        self.ssrcs[key] = self.ssrcs.get(key, 0) + size

    def tick(self, secs):
        rate = round((self.bytes - self.bytes_then) * 8 / secs) if secs > 0 else 0
        self.bytes_then = self.bytes
        return {
            "packets": self.packets,
            "bytes": self.bytes,
            "padding": self.padding,
            "rate": rate,
            "ssrcs": dict(self.ssrcs),
        }


class Viewer:
    def __init__(self, cfg):
        self.pc = RTCPeerConnection(cfg)
        self.t0 = None
        self.counters = {"video": Counter(), "audio": Counter()}
        self.rembs = []
        self.overuses = []
        # The longest the event loop was late waking up (ms) since the last tick: Python
        # busy elsewhere delays arrival times, which aiortc's estimator reads as queueing.
        self.lag_ms = 0.0
        self.pc.addTransceiver("video", direction="recvonly")
        self.pc.addTransceiver("audio", direction="recvonly")
        for t in self.pc.getTransceivers():
            self._wrap(t.kind, t.receiver)

    def _now(self):
        return round(time.monotonic() - self.t0, 3) if self.t0 is not None else 0.0

    def _wrap(self, kind, receiver):
        """Counts what reaches `receiver` and records the REMBs it sends (aiortc has no
        public API for either, so wrap its packet handler and its RTCP sender)."""
        counter = self.counters[kind]
        handle, send_rtcp = receiver._handle_rtp_packet, receiver._send_rtcp

        async def counting(packet, *a, **kw):
            counter.add(packet)
            return await handle(packet, *a, **kw)

        async def recording(packet):
            if isinstance(packet, RtcpPsfbPacket) and packet.fmt == RTCP_PSFB_APP:
                bitrate, _ = unpack_remb_fci(packet.fci)
                self.rembs.append((self._now(), bitrate))
            return await send_rtcp(packet)

        receiver._handle_rtp_packet = counting
        receiver._send_rtcp = recording

        # The video receiver's estimator: count the times its detector turns to overuse.
        estimator = getattr(receiver, "_RTCRtpReceiver__remote_bitrate_estimator", None)
        if estimator is not None:
            add = estimator.add

            def detecting(*a, **kw):
                before = estimator.detector.hypothesis
                out = add(*a, **kw)
                after = estimator.detector.hypothesis
                if after != before and after == BandwidthUsage.OVERUSING:
                    self.overuses.append(self._now())
                return out

            estimator.add = detecting

    def mids(self):
        return {t.kind: t.mid for t in self.pc.getTransceivers()}

    async def watch_lag(self):
        while True:
            then = time.monotonic()
            await asyncio.sleep(0.01)
            self.lag_ms = max(self.lag_ms, (time.monotonic() - then - 0.01) * 1000)

    def tick(self, secs):
        lag, self.lag_ms = self.lag_ms, 0.0
        return {
            "type": "tick",
            "t": self._now(),
            "lag_ms": round(lag, 1),
            "video": self.counters["video"].tick(secs),
            "audio": self.counters["audio"].tick(secs),
            "remb": {
                "count": len(self.rembs),
                "last": self.rembs[-1][1] if self.rembs else None,
            },
            "overuses": len(self.overuses),
        }


async def stop_requested():
    """Returns when stdin says `stop` or closes."""
    loop = asyncio.get_running_loop()
    reader = asyncio.StreamReader()
    transport, _ = await loop.connect_read_pipe(
        lambda: asyncio.StreamReaderProtocol(reader), sys.stdin
    )
    try:
        while True:
            line = await reader.readline()
            if not line or line.strip() == b"stop":
                return
    finally:
        transport.close()


async def run(args, result):
    cfg = RTCConfiguration(iceServers=[])
    headers = {"Authorization": f"Bearer {args.token}"} if args.token else {}
    whep = f"{args.base.rstrip('/')}/whep/{args.room}"
    errors, sessions = [], []
    viewer = Viewer(cfg)

    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=10)) as http:
        try:
            session, answer, resp_headers = await offer_answer(http, whep, viewer.pc, headers, log)
            sessions.append(session)
            viewer.t0 = time.monotonic()
            facts = answer_facts(answer)
            log(f"WHEP 201 -> {session}; answer video: {facts}")
            emit({
                "type": "started",
                "session": session,
                "events": sse_link(resp_headers),
                "mids": viewer.mids(),
                "answer": facts,
            })

            async def report():
                then = time.monotonic()
                while True:
                    await asyncio.sleep(args.interval)
                    now = time.monotonic()
                    emit(viewer.tick(now - then))
                    then = now

            reporter = asyncio.ensure_future(report())
            lag = asyncio.ensure_future(viewer.watch_lag())
            try:
                await asyncio.wait_for(stop_requested(), timeout=args.timeout)
            except asyncio.TimeoutError:
                errors.append(f"not told to stop within {args.timeout:g} s")
            finally:
                reporter.cancel()
                lag.cancel()
        except (HttpError, aiohttp.ClientError, asyncio.TimeoutError, OSError, ValueError) as e:
            errors.append(f"{type(e).__name__}: {e}")

        await delete_sessions(http, sessions, headers, errors.append)

    await close_peers([viewer.pc], log)
    result["type"] = "result"
    result["rembs"] = viewer.rembs
    result["overuses"] = viewer.overuses
    result["video"] = viewer.counters["video"].tick(0)
    result["audio"] = viewer.counters["audio"].tick(0)
    result["error"] = "; ".join(errors) if errors else None
    result["ok"] = not errors


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--base", required=True, help="server base URL, e.g. http://127.0.0.1:8080")
    ap.add_argument("--room", required=True)
    ap.add_argument("--interval", type=float, default=1.0, help="seconds between tick lines")
    ap.add_argument("--timeout", type=float, default=120.0,
                    help="seconds to wait for `stop` before giving up")
    ap.add_argument("--token", help="sent as 'Authorization: Bearer T' on every request")
    ap.add_argument("--verbose", "-v", action="store_true", help="aiortc debug logging on stderr")
    args = ap.parse_args()
    finish(run, args, {"type": "result", "ok": False, "rembs": [], "error": None})


if __name__ == "__main__":
    main()
