"""What Parley's aiortc interop scripts share.

Importing this module first makes aioice offer 127.0.0.1 as a host candidate (every test here
runs on loopback), so it must come before anything that creates an RTCPeerConnection. It also
has the 20 ms sine track, the non-trickle WHIP/WHEP exchange and teardown, and the end of every
script: one JSON result line on stdout and an exit status.
"""

import array
import asyncio
import fractions
import json
import logging
import math
import sys
import time
from urllib.parse import urljoin

import aioice.ice

# aioice leaves 127.0.0.1 out of its host candidates; everything here is loopback.
# Must be patched before any RTCPeerConnection gathers candidates.
aioice.ice.get_host_addresses = lambda use_ipv4, use_ipv6: ["127.0.0.1"]

import aiohttp  # noqa: E402
import av  # noqa: E402
from aiortc import RTCSessionDescription  # noqa: E402
from aiortc.mediastreams import AudioStreamTrack, MediaStreamError  # noqa: E402

AUDIO_RATE, AUDIO_SAMPLES = 48000, 960  # 20 ms Opus frames


def logger(name):
    """A function that writes `[name HH:MM:SS] msg` to stderr."""

    def log(msg):
        print(f"[{name} {time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)

    return log


class SineTrack(AudioStreamTrack):
    """48 kHz mono s16 sine at hz (a whole number, so one second loops seamlessly) in 20 ms
    frames, paced in real time."""

    def __init__(self, hz):
        super().__init__()
        second = array.array(
            "h", (int(8000 * math.sin(2 * math.pi * hz * i / AUDIO_RATE)) for i in range(AUDIO_RATE))
        )
        self.pcm = second.tobytes()

    async def recv(self):
        if self.readyState != "live":
            raise MediaStreamError
        if hasattr(self, "_timestamp"):
            self._timestamp += AUDIO_SAMPLES
            await asyncio.sleep(self._start + self._timestamp / AUDIO_RATE - time.time())
        else:
            self._start, self._timestamp = time.time(), 0
        frame = av.AudioFrame(format="s16", layout="mono", samples=AUDIO_SAMPLES)
        start = (self._timestamp % AUDIO_RATE) * 2
        frame.planes[0].update(self.pcm[start:start + frame.planes[0].buffer_size])
        frame.pts = self._timestamp
        frame.sample_rate = AUDIO_RATE
        frame.time_base = fractions.Fraction(1, AUDIO_RATE)
        return frame


class HttpError(Exception):
    pass


async def offer_answer(http, url, pc, headers, log):
    """Non-trickle WHIP/WHEP exchange (aiortc gathers every candidate inside
    setLocalDescription, so the offer is complete). Returns (session_url, answer_sdp,
    response_headers)."""
    await pc.setLocalDescription(await pc.createOffer())
    hdrs = dict(headers, **{"Content-Type": "application/sdp"})
    async with http.post(url, data=pc.localDescription.sdp, headers=hdrs) as r:
        body = await r.text()
        if r.status != 201:
            raise HttpError(f"POST {url}: HTTP {r.status} (want 201): {body[:300]!r}")
        location = r.headers.get("Location")
        if not location:
            raise HttpError(f"POST {url}: 201 without a Location header")
        ctype = r.headers.get("Content-Type", "")
        if not ctype.startswith("application/sdp"):
            log(f"warning: POST {url}: answer Content-Type is {ctype!r}")
        resp_headers = r.headers.copy()
    if not body.strip().startswith("v=0"):
        raise HttpError(f"POST {url}: answer body is not SDP: {body[:200]!r}")
    await pc.setRemoteDescription(RTCSessionDescription(sdp=body, type="answer"))
    return urljoin(url, location), body, resp_headers


async def delete_sessions(http, sessions, headers, fail):
    """DELETEs each session URL in order; anything but 200 is a failure."""
    for session in sessions:
        try:
            async with http.delete(session, headers=headers, timeout=aiohttp.ClientTimeout(total=5)) as r:
                if r.status != 200:
                    fail(f"DELETE {session}: HTTP {r.status} (want 200)")
        except (aiohttp.ClientError, asyncio.TimeoutError, OSError) as e:
            fail(f"DELETE {session}: {type(e).__name__}: {e}")


async def close_peers(pcs, log):
    """Closes every peer connection; a failure to close is logged, never the result."""
    for pc in pcs:
        try:
            await asyncio.wait_for(pc.close(), timeout=5)
        except Exception as e:  # closing must not hide the real result
            log(f"warning: closing a peer connection: {type(e).__name__}: {e}")


def finish(run, args, result):
    """Runs `run(args, result)`, then prints `result` as the last stdout line and exits 0
    only if it says ok."""
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.WARNING, stream=sys.stderr)
    try:
        asyncio.run(run(args, result))
    except Exception as e:  # always end with the JSON line
        result["ok"] = False
        result["error"] = f"{type(e).__name__}: {e}"
    print(json.dumps(result), flush=True)
    sys.exit(0 if result["ok"] else 1)
