// WHIP/WHEP client for Parley's page: one offer/answer over HTTP per session, DELETE on
// leave, room events over server-sent events, simulcast sending and the WHEP layer choice,
// and getStats summaries. No DOM here.

/** An HTTP error with the server's one-line reason. */
export class HttpError extends Error {
  constructor(status, reason) {
    super(`The server answered ${status}: ${reason || 'no reason given'}`);
    this.status = status;
    this.reason = reason;
  }
}

/** A failure the person can act on, already phrased for them. */
export class UserError extends Error {}

const EVENTS_REL = 'urn:ietf:params:whep:ext:core:server-sent-events';
const LAYER_REL = 'urn:ietf:params:whep:ext:core:layer';

/** Sessions still open, so that a closing page can DELETE them. */
const open = new Set();

function authHeaders(token) {
  return token ? { Authorization: `Bearer ${token}` } : {};
}

/** `Link` header values as [{url, rel, params}], URLs resolved against `base`. */
export function parseLinks(header, base) {
  const links = [];
  for (const m of (header || '').matchAll(/<([^>]*)>([^,<]*)/g)) {
    const params = {};
    for (const p of m[2].matchAll(/;\s*([\w-]+)="?([^";]*)"?/g)) params[p[1].toLowerCase()] = p[2];
    links.push({ url: new URL(m[1], base).href, rel: params.rel || '', params });
  }
  return links;
}

/** RTCIceServer entries from `Link: <stun:...>; rel="ice-server"` (RFC 9725). */
function iceServers(links) {
  return links
    .filter((l) => l.rel === 'ice-server')
    .map((l) => (l.params.username ? { urls: l.url, username: l.params.username, credential: l.params.credential } : { urls: l.url }));
}

/** Waits for ICE gathering to finish, at most `ms` (the server is ICE-lite: it needs none). */
function gathered(pc, ms) {
  if (pc.iceGatheringState === 'complete') return Promise.resolve();
  return new Promise((resolve) => {
    const done = () => {
      if (pc.iceGatheringState === 'complete') finish();
    };
    const finish = () => {
      clearTimeout(timer);
      pc.removeEventListener('icegatheringstatechange', done);
      resolve();
    };
    const timer = setTimeout(finish, ms);
    pc.addEventListener('icegatheringstatechange', done);
  });
}

/** The server's candidates from an SDP answer, as "address:port" strings. */
function candidates(sdp) {
  const found = new Set();
  for (const m of sdp.matchAll(/^a=candidate:\S+ \d+ udp \d+ (\S+) (\d+) typ/gim)) {
    found.add(`${m[1]}:${m[2]}`);
  }
  return [...found];
}

/**
 * One WHIP or WHEP session: `pc` is set up by the caller (tracks, transceivers), then
 * `start()` sends the offer. `onState(text, level)` hears about connection changes, with
 * level 'ok' (connected), 'warn' (interrupted) or 'fatal' (failed: the session is over).
 */
export class Session {
  constructor(kind, url, token, onState) {
    this.kind = kind; // 'whip' or 'whep'
    this.url = url;
    this.token = token;
    this.onState = onState || (() => {});
    this.pc = new RTCPeerConnection({ bundlePolicy: 'max-bundle' });
    this.resource = null;
    this.links = [];
    this.serverCandidates = [];
    this.pc.addEventListener('iceconnectionstatechange', () => this.iceChanged());
    this.pc.addEventListener('connectionstatechange', () => this.connectionChanged());
  }

  /**
   * Offers (once), POSTs, applies the answer. Throws HttpError or UserError; after a 401 the
   * caller may set `token` and call it again with the same offer.
   */
  async start() {
    if (!this.pc.localDescription) {
      await this.useIceServers();
      await this.pc.setLocalDescription(await this.pc.createOffer());
      await gathered(this.pc, 1000);
    }
    let res;
    try {
      res = await fetch(this.url, {
        method: 'POST',
        headers: { 'Content-Type': 'application/sdp', ...authHeaders(this.token) },
        body: this.pc.localDescription.sdp,
      });
    } catch (e) {
      throw new UserError(`Could not reach the server at ${new URL(this.url).origin} (${e.message}).`);
    }
    const text = await res.text();
    if (res.status !== 201) {
      throw new HttpError(res.status, text.trim().split('\n')[0]);
    }
    const location = res.headers.get('Location');
    if (!location) throw new UserError('The server answered 201 without a Location header.');
    this.resource = new URL(location, res.url).href;
    this.links = parseLinks(res.headers.get('Link'), res.url);
    this.serverCandidates = candidates(text);
    open.add(this);
    if (this.pc.signalingState === 'closed') {
      // Stopped while the POST was in flight.
      this.close();
      return;
    }
    await this.pc.setRemoteDescription({ type: 'answer', sdp: text });
  }

  /**
   * Asks the server for its STUN/TURN servers (`GET /ice-servers`, TURN with a fresh
   * credential; else the endpoint's OPTIONS links) before gathering candidates.
   */
  async useIceServers() {
    let servers = [];
    try {
      const res = await fetch(new URL('/ice-servers', this.url), { headers: authHeaders(this.token) });
      if (res.ok) servers = (await res.json()).iceServers || [];
    } catch (e) {
      console.warn('no /ice-servers', e);
    }
    try {
      if (!servers.length) {
        const res = await fetch(this.url, { method: 'OPTIONS' });
        servers = iceServers(parseLinks(res.headers.get('Link'), res.url));
      }
    } catch (e) {
      console.warn('no ICE servers from OPTIONS', e); // the POST will say what is wrong
    }
    if (servers.length) this.pc.setConfiguration({ ...this.pc.getConfiguration(), iceServers: servers });
  }

  /** The room events URL from the 201's Link header (WHEP only). */
  get eventsUrl() {
    const link = this.links.find((l) => l.rel === EVENTS_REL);
    return link ? link.url : null;
  }

  /** The layer choice URL from the 201's Link header (WHEP only), or null. */
  get layerUrl() {
    const link = this.links.find((l) => l.rel === LAYER_REL);
    return link ? link.url : null;
  }

  /**
   * Chooses what a video slot receives (WHEP layer extension): `{mediaId, maxWidth,
   * maxHeight}` limits the server's automatic choice, `{mediaId, spatialLayerId}` or
   * `{mediaId, rid}` pins a layer, `{mediaId}` alone returns to automatic.
   */
  async setLayer(request) {
    const url = this.layerUrl;
    if (!url) throw new UserError('This server does not let viewers choose a layer (no layer link in its answer).');
    let res;
    try {
      res = await fetch(url, {
        method: 'POST',
        headers: { 'Content-Type': 'application/json', ...authHeaders(this.token) },
        body: JSON.stringify(request),
      });
    } catch (e) {
      throw new UserError(`Could not reach the server to choose a layer (${e.message}).`);
    }
    if (!res.ok) throw new HttpError(res.status, (await res.text()).trim().split('\n')[0]);
  }

  iceChanged() {
    const state = this.pc.iceConnectionState;
    if (state === 'failed') this.failed('ice');
    else if (state === 'disconnected') {
      this.onState('The connection is interrupted; waiting for it to come back…', 'warn');
    }
  }

  connectionChanged() {
    const state = this.pc.connectionState;
    if (state === 'connected') this.onState('connected', 'ok');
    // Chromium may report the connection failed before the ICE state follows: with ICE up,
    // the failure is DTLS's.
    else if (state === 'failed') {
      this.failed(['connected', 'completed'].includes(this.pc.iceConnectionState) ? 'dtls' : 'ice');
    }
  }

  /** Says once, in words, why the connection failed. */
  failed(why) {
    if (this.reported) return;
    this.reported = true;
    if (why === 'dtls') {
      this.onState('The connection failed (the DTLS handshake with the server did not complete).', 'fatal');
      return;
    }
    const where = this.serverCandidates.length ? this.serverCandidates.join(', ') : 'its media port';
    this.onState(
      `The connection failed (ICE): the browser could not reach the server's media at ${where} over UDP. ` +
        'Check that this UDP port is open and that the server advertises an address this browser can reach (--public-ip).',
      'fatal',
    );
  }

  /** Ends the session: DELETE (kept alive past page unload) and close the peer connection. */
  close() {
    open.delete(this);
    if (this.resource) {
      fetch(this.resource, { method: 'DELETE', keepalive: true, headers: authHeaders(this.token) }).catch(() => {});
      this.resource = null;
    }
    this.pc.close();
  }
}

// A page that goes away ends its sessions, so the server frees them at once.
addEventListener('pagehide', () => {
  for (const s of [...open]) s.close();
});

/** Prefers `codec` (e.g. "VP8") on a video transceiver, keeping RTX. No-op for "auto". */
export function preferCodec(transceiver, codec) {
  if (!codec || codec === 'auto' || !transceiver.setCodecPreferences) return;
  const all = RTCRtpSender.getCapabilities('video').codecs;
  const wanted = all.filter((c) => c.mimeType.toLowerCase() === `video/${codec.toLowerCase()}`);
  if (!wanted.length) throw new UserError(`This browser cannot send ${codec}.`);
  const rtx = all.filter((c) => c.mimeType.toLowerCase() === 'video/rtx');
  transceiver.setCodecPreferences([...wanted, ...rtx]);
}

/** Video codecs this browser can send, among those Parley forwards. */
export function sendableCodecs() {
  if (!window.RTCRtpSender || !RTCRtpSender.getCapabilities) return [];
  const names = RTCRtpSender.getCapabilities('video').codecs.map((c) => c.mimeType.split('/')[1].toUpperCase());
  return ['VP8', 'H264', 'VP9', 'AV1'].filter((c) => names.includes(c));
}

/**
 * Simulcast layers a publisher sends: a quarter, a half and the full capture size. Parley
 * ranks them by the size it sees in their keyframes, so the rids are only names.
 */
export const SIMULCAST = [
  { rid: 'q', scaleResolutionDownBy: 4 },
  { rid: 'h', scaleResolutionDownBy: 2 },
  { rid: 'f', scaleResolutionDownBy: 1 },
];

/**
 * The simulcast layers worth sending for a capture of `width`×`height`: three from 960×540,
 * the half and full size from 480×270, else none. Chromium sends no more layers than that
 * for a picture this size and drops the largest ones, so asking for three layers of a
 * 320×240 camera would send only its 80×60 quarter.
 */
export function simulcastLayers(width, height) {
  const pixels = (width || 0) * (height || 0);
  if (pixels >= 960 * 540) return SIMULCAST.map((e) => ({ ...e }));
  if (pixels >= 480 * 270) return SIMULCAST.slice(1).map((e) => ({ ...e }));
  return [];
}

/**
 * Adds a send-only transceiver for `track`; for video with `simulcast`, the layers its size
 * allows ({@link simulcastLayers}), or one stream when the browser refuses them. Returns the
 * transceiver and the rids it sends (empty without simulcast).
 */
export function addSender(pc, track, stream, simulcast) {
  const init = { direction: 'sendonly', streams: [stream] };
  if (track.kind === 'video' && simulcast) {
    const { width, height } = track.getSettings();
    const layers = simulcastLayers(width, height);
    if (layers.length) {
      try {
        return { transceiver: pc.addTransceiver(track, { ...init, sendEncodings: layers }), rids: layers.map((e) => e.rid) };
      } catch (e) {
        console.warn('this browser cannot send simulcast; sending one stream', e);
      }
    }
  }
  return { transceiver: pc.addTransceiver(track, init), rids: [] };
}

/**
 * Asks the encoder to keep the picture size and lower the frame rate instead when the CPU
 * or the network is short (with simulcast, a busy CPU would otherwise drop the top layers).
 * Ignored where the browser does not support it.
 */
export async function keepResolution(sender) {
  try {
    const params = sender.getParameters();
    if (!params.encodings || !params.encodings.length) return;
    params.degradationPreference = 'maintain-resolution';
    await sender.setParameters(params);
  } catch (e) {
    console.warn('degradationPreference not supported', e);
  }
}

/** Camera/microphone or screen, with errors in words. */
export async function capture(source) {
  if (!navigator.mediaDevices) {
    throw new UserError(
      'This browser allows camera and screen capture only on https:// pages or http://localhost. ' +
        'Open the page through localhost, or serve Parley behind HTTPS. Watching works anywhere.',
    );
  }
  try {
    if (source === 'screen') {
      return await navigator.mediaDevices.getDisplayMedia({ video: true, audio: true });
    }
    return await navigator.mediaDevices.getUserMedia({
      audio: true,
      video: { width: { ideal: 1280 }, height: { ideal: 720 } },
    });
  } catch (e) {
    const what = source === 'screen' ? 'Screen sharing' : 'Camera/microphone access';
    switch (e.name) {
      case 'NotAllowedError':
        throw new UserError(`${what} was denied. Allow it in the browser's site settings and try again.`);
      case 'NotFoundError':
        throw new UserError('No camera or microphone was found.');
      case 'NotReadableError':
        throw new UserError('The camera or microphone is in use by another application, or the system blocked it.');
      default:
        throw new UserError(`${what} failed: ${e.name}: ${e.message}`);
    }
  }
}

/** Splits a text/event-stream into events; calls `onEvent(type, data)` for each. */
function sseParser(onEvent) {
  let buffer = '';
  return (chunk) => {
    buffer += chunk;
    let end;
    while ((end = buffer.search(/\r?\n\r?\n/)) >= 0) {
      const block = buffer.slice(0, end);
      buffer = buffer.slice(end).replace(/^\r?\n\r?\n/, '');
      let type = 'message';
      const data = [];
      for (const line of block.split(/\r?\n/)) {
        if (line.startsWith('event:')) type = line.slice(6).trim();
        else if (line.startsWith('data:')) data.push(line.slice(5).replace(/^ /, ''));
      }
      if (data.length) onEvent(type, data.join('\n'));
    }
  };
}

/**
 * Subscribes to room events. `onEvent(event)` gets each parsed JSON event, and
 * `{type: 'snapshot'}` whenever the stream (re)starts with a fresh snapshot of the room. Uses
 * EventSource, or fetch() streaming when a token must go in the Authorization header.
 * Returns `close()`.
 */
export function roomEvents(url, token, onEvent) {
  const deliver = (data) => {
    try {
      onEvent(JSON.parse(data));
    } catch (e) {
      console.warn('bad room event', data, e);
    }
  };
  if (!token) {
    const source = new EventSource(url);
    source.addEventListener('open', () => onEvent({ type: 'snapshot' }));
    for (const type of ['participant_joined', 'participant_left', 'track_published', 'track_unpublished', 'slot_assigned', 'active_speaker', 'layers']) {
      source.addEventListener(type, (e) => deliver(e.data));
    }
    return () => source.close();
  }
  const abort = new AbortController();
  (async () => {
    const res = await fetch(url, { headers: { Accept: 'text/event-stream', ...authHeaders(token) }, signal: abort.signal });
    if (!res.ok || !res.body) throw new HttpError(res.status, (await res.text()).trim());
    onEvent({ type: 'snapshot' });
    const parse = sseParser((_type, data) => deliver(data));
    const reader = res.body.pipeThrough(new TextDecoderStream()).getReader();
    for (;;) {
      const { value, done } = await reader.read();
      if (done) break;
      parse(value);
    }
  })().catch((e) => {
    if (e.name !== 'AbortError') console.warn('room events stopped', e);
  });
  return () => abort.abort();
}

/** Remembers the previous getStats sample per session to turn byte counters into bitrates. */
export class StatsMeter {
  constructor(pc) {
    this.pc = pc;
    this.last = new Map();
  }

  rate(id, bytes, now) {
    const prev = this.last.get(id);
    this.last.set(id, { bytes, now });
    if (!prev || now <= prev.now) return null;
    return ((bytes - prev.bytes) * 8) / (now - prev.now); // bits per ms = kbit/s
  }

  /** One summary object per RTP stream, keyed by kind and mid. */
  async sample() {
    const report = await this.pc.getStats();
    const byId = new Map();
    report.forEach((s) => byId.set(s.id, s));
    const codec = (s) => {
      const c = byId.get(s.codecId);
      return c ? c.mimeType.split('/')[1] : '';
    };
    const out = { outbound: [], inbound: [], rtt: null, transport: null };
    report.forEach((s) => {
      if (s.type === 'outbound-rtp') {
        const remote = [...byId.values()].find((r) => r.type === 'remote-inbound-rtp' && r.localId === s.id);
        out.outbound.push({
          kind: s.kind,
          mid: s.mid,
          rid: s.rid,
          codec: codec(s),
          kbps: this.rate(s.id, s.bytesSent, s.timestamp),
          packets: s.packetsSent,
          lost: remote ? remote.packetsLost : null,
          rtt: remote && remote.roundTripTime !== undefined ? remote.roundTripTime : null,
          frames: s.framesEncoded,
          width: s.frameWidth,
          height: s.frameHeight,
          fps: s.framesPerSecond,
        });
      } else if (s.type === 'inbound-rtp') {
        out.inbound.push({
          kind: s.kind,
          mid: s.mid,
          track: s.trackIdentifier,
          codec: codec(s),
          kbps: this.rate(s.id, s.bytesReceived, s.timestamp),
          packets: s.packetsReceived,
          lost: s.packetsLost,
          jitter: s.jitter,
          frames: s.framesDecoded,
          width: s.frameWidth,
          height: s.frameHeight,
          fps: s.framesPerSecond,
          freezes: s.freezeCount,
        });
      } else if (s.type === 'candidate-pair' && s.nominated && s.state === 'succeeded') {
        if (s.currentRoundTripTime !== undefined) out.rtt = s.currentRoundTripTime;
        // udp, tcp, or relay (through a TURN server).
        const local = byId.get(s.localCandidateId);
        if (local) out.transport = local.candidateType === 'relay' ? 'relay' : local.protocol || null;
      }
    });
    return out;
  }
}
