// Parley's page: three views (publish, watch, call) behind hash URLs that can be shared:
//   #/publish/ROOM?participant=NAME&codec=VP8&source=camera&simulcast=0
//   #/watch/ROOM[/PARTICIPANT]
//   #/call/ROOM?name=NAME&slots=4&simulcast=0
// The URL follows the form. Media goes through webrtc.js; this file owns the DOM.

import { Session, HttpError, UserError, capture, preferCodec, sendableCodecs, SIMULCAST, addSender, keepResolution, roomEvents, StatsMeter } from './webrtc.js';

const $ = (selector, root = document) => root.querySelector(selector);
const role = (section, name) => $(`[data-role="${name}"]`, section);

// ---------------------------------------------------------------- messages

function say(text, kind = 'error') {
  const box = $('#message');
  box.textContent = text;
  box.className = `message ${kind}`;
  box.hidden = !text;
}

// ---------------------------------------------------------------- tokens

/** Bearer tokens per session kind, remembered for this tab. */
const tokens = {
  get(kind) {
    const other = kind === 'whip' ? 'whep' : 'whip';
    return sessionStorage.getItem(`parley.token.${kind}`) || sessionStorage.getItem(`parley.token.${other}`) || '';
  },
  set(kind, value) {
    sessionStorage.setItem(`parley.token.${kind}`, value);
  },
};

/**
 * Shows the token form after a 401 (`tried`: a token was sent); resolves with what the
 * person enters, rejects when the run stops.
 */
function askToken(kind, error, tried, run) {
  const form = $('#token');
  const what = kind === 'whip' ? 'publishing' : 'playing';
  const why = tried ? `The server did not accept the token for ${what}` : `${what[0].toUpperCase()}${what.slice(1)} on this server needs a token`;
  $('#token-why').textContent = `${why} (${error.message}). Enter the token the server was started with:`;
  form.hidden = false;
  say('');
  const input = $('#token-value');
  input.value = '';
  input.focus();
  return new Promise((resolve, reject) => {
    const submit = (e) => {
      e.preventDefault();
      finish();
      resolve(input.value.trim());
    };
    const finish = () => {
      form.hidden = true;
      form.removeEventListener('submit', submit);
    };
    form.addEventListener('submit', submit);
    run.defer(() => {
      finish();
      reject(new Stopped());
    });
  });
}

// ---------------------------------------------------------------- runs

class Stopped extends Error {}

/** One publish/watch/call attempt: what to undo when it ends. */
class Run {
  constructor(section) {
    this.section = section;
    this.cleanups = [];
    this.stopped = false;
    this.sessions = {};
  }

  defer(fn) {
    if (this.stopped) fn();
    else this.cleanups.push(fn);
  }

  every(ms, fn) {
    const timer = setInterval(() => fn().catch(() => {}), ms);
    this.defer(() => clearInterval(timer));
  }

  check() {
    if (this.stopped) throw new Stopped();
  }

  stop() {
    if (this.stopped) return;
    this.stopped = true;
    for (const fn of this.cleanups.reverse()) {
      try {
        fn();
      } catch (e) {
        console.warn(e);
      }
    }
    setRunning(this.section, false);
  }
}

let current = null;

function setRunning(section, running) {
  for (const el of section.querySelectorAll('.controls input, .controls select')) el.disabled = running;
  role(section, 'start').hidden = running;
  role(section, 'stop').hidden = !running;
  for (const el of section.querySelectorAll('[data-running]')) el.hidden = !running;
}

/** Starts `body(run, values)` for a form, showing any failure in words. */
async function launch(section, body) {
  stopCurrent();
  say('');
  const run = new Run(section);
  current = run;
  setRunning(section, true);
  try {
    await body(run, formValues(section));
  } catch (e) {
    if (e instanceof Stopped || run.stopped) return;
    console.error(e);
    run.stop();
    say(e instanceof HttpError || e instanceof UserError ? e.message : `Something went wrong: ${e.message}`);
  }
}

function stopCurrent() {
  if (current) current.stop();
  current = null;
}

/** Opens a WHIP or WHEP session, asking for a token on 401 and trying again. */
async function connect(run, kind, path, setup) {
  const status = (text, level) => {
    if (run.stopped) return;
    if (level === 'fatal') run.stop();
    if (level !== 'ok') say(text);
    else if ($('#message').textContent.startsWith('The connection is interrupted')) say('');
  };
  const session = new Session(kind, new URL(path, location.href).href, tokens.get(kind), status);
  run.defer(() => session.close());
  setup(session.pc);
  for (;;) {
    try {
      await session.start();
      break;
    } catch (e) {
      if (!(e instanceof HttpError && e.status === 401)) throw e;
      session.token = await askToken(kind, e, !!session.token, run);
    }
  }
  run.check();
  if (session.token) tokens.set(kind, session.token);
  run.sessions[kind] = session;
  return session;
}

/** Subscribes to a WHEP session's room events for the rest of the run (kept in `run.events`). */
function follow(run, session, onEvent) {
  if (!session.eventsUrl) return;
  run.events = run.events || [];
  run.defer(
    roomEvents(session.eventsUrl, session.token, (e) => {
      run.events.push(e);
      onEvent(e);
    }),
  );
}

/**
 * Publishes a capture over WHIP: audio, and video as simulcast when `simulcast` is set and
 * the browser and the capture's size allow. Keeps the picture size under load; returns the
 * session.
 */
async function sendCapture(run, path, stream, codec, simulcast) {
  const senders = [];
  const whip = await connect(run, 'whip', path, (pc) => {
    senders.length = 0;
    for (const track of stream.getTracks()) {
      const { transceiver } = addSender(pc, track, stream, simulcast);
      if (track.kind === 'video') {
        preferCodec(transceiver, codec);
        senders.push(transceiver.sender);
      }
    }
  });
  await Promise.all(senders.map(keepResolution));
  return whip;
}

// ---------------------------------------------------------------- forms and URLs

const enc = encodeURIComponent;

function formValues(section) {
  const form = $('form', section);
  const values = {};
  for (const el of form.elements) {
    if (!el.name) continue;
    values[el.name] = el.type === 'checkbox' ? el.checked : el.value.trim();
  }
  return values;
}

function fillForm(section, values) {
  const form = $('form', section);
  for (const [name, value] of Object.entries(values)) {
    const el = form.elements[name];
    if (!el || value === undefined || value === null || value === '') continue;
    if (el.type === 'checkbox') el.checked = value !== '0' && value !== 'false';
    else el.value = value;
  }
}

/** The hash URL for a view's current form. */
function hashFor(view, v) {
  const q = new URLSearchParams();
  switch (view) {
    case 'publish':
      if (v.participant) q.set('participant', v.participant);
      if (v.codec && v.codec !== 'auto') q.set('codec', v.codec);
      if (v.source !== 'camera') q.set('source', v.source);
      if (!v.loopback) q.set('loopback', '0');
      if (!v.simulcast) q.set('simulcast', '0');
      return `#/publish/${enc(v.room)}${q.size ? `?${q}` : ''}`;
    case 'watch':
      return `#/watch/${enc(v.room)}${v.participant ? `/${enc(v.participant)}` : ''}`;
    case 'call':
      if (v.name) q.set('name', v.name);
      q.set('slots', v.slots);
      if (v.codec && v.codec !== 'auto') q.set('codec', v.codec);
      if (!v.simulcast) q.set('simulcast', '0');
      return `#/call/${enc(v.room)}?${q}`;
    default:
      return '#/';
  }
}

function parseHash() {
  const [path, query] = location.hash.replace(/^#\/?/, '').split('?');
  const [view, ...parts] = path.split('/').filter(Boolean).map(decodeURIComponent);
  return { view: view || 'home', parts, params: new URLSearchParams(query || '') };
}

function route() {
  stopCurrent();
  say('');
  $('#token').hidden = true;
  const { view, parts, params } = parseHash();
  const known = ['home', 'publish', 'watch', 'call'].includes(view) ? view : 'home';
  for (const s of document.querySelectorAll('.view')) s.hidden = s.id !== known;
  for (const a of document.querySelectorAll('[data-nav]')) a.classList.toggle('active', a.dataset.nav === known);
  if (known === 'home') return;
  const section = $(`#${known}`);
  const values = Object.fromEntries(params);
  if (parts[0]) values.room = parts[0];
  if (known === 'watch' && parts[1]) values.participant = parts[1];
  if (known === 'call' && !values.name) values.name = localStorage.getItem('parley.name') || `guest-${Math.floor(1000 + Math.random() * 9000)}`;
  fillForm(section, values);
  history.replaceState(null, '', hashFor(known, formValues(section)));
  // Watching asks for nothing, so a shared watch link plays at once.
  if (known === 'watch' && parts[0]) $('form', section).requestSubmit();
}

// ---------------------------------------------------------------- statistics

const fmt = {
  kbps: (v) => (v === null || v === undefined ? '–' : `${Math.round(v)} kbit/s`),
  ms: (v) => (v === null || v === undefined ? '–' : `${Math.round(v * 1000)} ms`),
  n: (v) => (v === null || v === undefined ? '–' : String(v)),
  size: (s) => (s.width ? `${s.width}×${s.height}${s.fps ? ` @${Math.round(s.fps)}` : ''}` : '–'),
};

/**
 * A `layers` event in words: the layer a slot receives and those it could get, e.g.
 * "f 1280×720 of q 320×180 · h 640×360 · f 1280×720".
 */
function describeLayers(e) {
  const name = (l) => [l.rid, l.width ? `${l.width}×${l.height}` : 'size not known yet'].filter(Boolean).join(' ');
  if (!e) return '–';
  if (!e.layers.length) return 'none (no video published)';
  const active = e.active ? name(e.active) : 'waiting for a keyframe';
  return e.layers.length > 1 ? `${active} of ${e.layers.map(name).join(' · ')}` : active;
}

/** A viewer's downlink estimate (bits per second) in words, e.g. "downlink 1.2 Mbit/s"; '' without one. */
function describeDownlink(bps) {
  if (bps === null || bps === undefined) return '';
  return bps >= 1e6 ? `downlink ${(bps / 1e6).toFixed(1)} Mbit/s` : `downlink ${Math.round(bps / 1000)} kbit/s`;
}

/** Shows a tile's "paused: low bandwidth" overlay while its slot's latest `layers` event says so. */
function showPaused(tile, e) {
  $('.paused', tile).hidden = !(e && e.paused && e.reason === 'bandwidth');
}

/** Renders rows of stream stats as a table into `el`. */
function renderStats(el, rows) {
  const table = document.createElement('table');
  const head = ['', 'codec', 'bitrate', 'packets', 'lost', 'RTT / jitter', 'frames', 'size', 'freezes'];
  table.append(rowOf('th', head));
  for (const r of rows) {
    const delay = r.rtt !== undefined ? fmt.ms(r.rtt) : fmt.ms(r.jitter);
    const video = r.kind === 'video';
    table.append(rowOf('td', [r.label, r.codec || '–', fmt.kbps(r.kbps), fmt.n(r.packets), fmt.n(r.lost), delay, fmt.n(r.frames), video ? fmt.size(r) : '', video ? fmt.n(r.freezes) : '']));
  }
  el.replaceChildren(table);
}

function rowOf(cell, values) {
  const tr = document.createElement('tr');
  for (const v of values) {
    const c = document.createElement(cell);
    c.textContent = v;
    tr.append(c);
  }
  return tr;
}

/**
 * Samples each session once a second and renders its streams (simulcast layers sent are
 * one row each, smallest first); `onSample(label, sample)` sees each sample too.
 */
function showStats(run, el, sources, onSample = () => {}) {
  const meters = sources.map(([label, session]) => [label, new StatsMeter(session.pc)]);
  run.every(1000, async () => {
    const rows = [];
    for (const [label, meter] of meters) {
      const s = await meter.sample();
      const layer = (o) => SIMULCAST.findIndex((e) => e.rid === o.rid);
      s.outbound.sort((a, b) => a.kind.localeCompare(b.kind) || layer(a) - layer(b));
      for (const o of s.outbound) rows.push({ ...o, label: `${label} ${o.kind}${o.rid ? ` ${o.rid}` : ''}`, rtt: o.rtt ?? s.rtt });
      for (const i of s.inbound) if (i.packets) rows.push({ ...i, label: `${label} ${i.kind}` });
      if (!run.stopped) onSample(label, s);
    }
    if (!run.stopped) renderStats(el, rows);
  });
}

// ---------------------------------------------------------------- publish

async function publish(run, v) {
  const section = run.section;
  const stream = await capture(v.source);
  run.defer(() => stream.getTracks().forEach((t) => t.stop()));
  run.check();
  const preview = role(section, 'preview');
  preview.srcObject = stream;
  run.defer(() => (preview.srcObject = null));
  const video = stream.getVideoTracks()[0];
  if (video) video.addEventListener('ended', () => run.stop());

  const query = v.participant ? `?participant=${enc(v.participant)}` : '';
  const whip = await sendCapture(run, `/whip/${enc(v.room)}${query}`, stream, v.codec, v.simulcast);
  const watch = `${location.origin}/#/watch/${enc(v.room)}${v.participant ? `/${enc(v.participant)}` : ''}`;
  const link = role(section, 'watch-link');
  link.href = link.textContent = watch;
  link.closest('.share').hidden = false;
  run.defer(() => (link.closest('.share').hidden = true));
  const sources = [['sent', whip]];

  if (v.loopback) {
    // Only video: playing our own microphone back would echo.
    const target = v.participant ? `/whep/${enc(v.room)}/${enc(v.participant)}` : `/whep/${enc(v.room)}`;
    let receiver;
    const whep = await connect(run, 'whep', target, (pc) => {
      receiver = pc.addTransceiver('video', { direction: 'recvonly' }).receiver;
    });
    const tile = role(section, 'loopback-tile');
    const player = role(section, 'loopback');
    const caption = $('figcaption', tile);
    const title = caption.textContent;
    player.srcObject = new MediaStream([receiver.track]);
    tile.hidden = false;
    run.defer(() => {
      tile.hidden = true;
      player.srcObject = null;
      caption.textContent = title;
    });
    follow(run, whep, (e) => {
      if (e.type === 'layers') caption.textContent = `${title} · layer ${describeLayers(e)}`;
    });
    sources.push(['back', whep]);
  }
  showStats(run, role(section, 'stats'), sources);
  run.defer(() => role(section, 'stats').replaceChildren());
}

// ---------------------------------------------------------------- watch

async function watch(run, v) {
  const section = run.section;
  const player = role(section, 'player');
  const caption = role(section, 'caption');
  const unmute = role(section, 'unmute');
  const target = v.participant ? `/whep/${enc(v.room)}/${enc(v.participant)}` : `/whep/${enc(v.room)}`;
  const tracks = [];
  let videoSlot;
  caption.textContent = 'Connecting…';
  const whep = await connect(run, 'whep', target, (pc) => {
    tracks.push(pc.addTransceiver('audio', { direction: 'recvonly' }).receiver.track);
    videoSlot = pc.addTransceiver('video', { direction: 'recvonly' });
    tracks.push(videoSlot.receiver.track);
  });
  player.srcObject = new MediaStream(tracks);
  player.muted = true;
  unmute.hidden = false;
  unmute.textContent = 'Unmute';
  unmute.onclick = () => {
    player.muted = !player.muted;
    unmute.textContent = player.muted ? 'Unmute' : 'Mute';
  };
  const waiting = `Waiting for ${v.participant || 'someone'} to publish in room ${v.room}…`;
  caption.textContent = waiting;
  run.defer(() => {
    player.srcObject = null;
    unmute.hidden = true;
    caption.textContent = 'Not playing';
  });
  const layers = chooseLayer(run, whep, videoSlot.mid);
  const tile = player.closest('.tile');
  const downlink = role(section, 'downlink');
  run.defer(() => {
    showPaused(tile, null);
    downlink.textContent = '';
  });
  follow(run, whep, (e) => {
    if (e.type === 'slot_assigned' && e.kind === 'video') {
      caption.textContent = e.participant ? `Playing ${e.participant} from room ${v.room}` : waiting;
      section.dataset.showing = e.participant || '';
    } else if (e.type === 'layers' && e.mid === videoSlot.mid) {
      layers.received(e);
      showPaused(tile, e);
      downlink.textContent = describeDownlink(e.estimate);
    }
  });
  showStats(run, role(section, 'stats'), [['received', whep]], (_label, s) => {
    layers.decoded(s.inbound.find((i) => i.kind === 'video' && i.mid === videoSlot.mid));
  });
  run.defer(() => role(section, 'stats').replaceChildren());
}

/** Spatial layer ids behind the watch page's quality choices (Parley ranks 0 the smallest). */
const QUALITY = { high: 2, medium: 1, low: 0 };

/**
 * The watch page's quality choice (Auto, or a pinned High, Medium or Low layer) for the video
 * slot `mid`, and the line that says which layer arrives and what the decoder makes of it.
 * Returns `received(layersEvent)` and `decoded(inboundVideoStats)` to feed that line.
 */
function chooseLayer(run, session, mid) {
  const section = run.section;
  const select = role(section, 'layer');
  const line = role(section, 'layer-info');
  select.value = 'auto';
  line.textContent = '';
  let event = null;
  let stats = null;
  const show = () => {
    const parts = [`Layer: ${describeLayers(event)}`];
    if (stats && stats.width) parts.push(`decoding ${fmt.size(stats)}`);
    line.textContent = parts.join(' · ');
    section.dataset.layer = event && event.active ? event.active.rid || String(event.active.spatialLayerId) : '';
  };
  const labels = new Map([...select.options].map((o) => [o, o.textContent.split(' (')[0]]));
  select.onchange = async () => {
    const quality = select.value;
    const request = quality === 'auto' ? { mediaId: mid } : { mediaId: mid, spatialLayerId: QUALITY[quality] };
    try {
      await session.setLayer(request);
    } catch (e) {
      if (!run.stopped) say(e.message);
    }
  };
  run.defer(() => {
    select.onchange = null;
    line.textContent = '';
    for (const [o, label] of labels) o.textContent = label;
  });
  return {
    received(e) {
      event = e;
      // Each choice names the size it stands for, when the publisher sends that layer.
      for (const [o, label] of labels) {
        const layer = e.layers.find((l) => l.spatialLayerId === QUALITY[o.value]);
        o.textContent = layer && layer.width ? `${label} (${layer.width}×${layer.height})` : label;
      }
      show();
    },
    decoded(s) {
      stats = s || null;
      show();
    },
  };
}

// ---------------------------------------------------------------- call

function makeTile(label) {
  const fig = document.createElement('figure');
  fig.className = 'tile';
  const video = document.createElement('video');
  video.autoplay = video.playsInline = video.muted = true;
  const caption = document.createElement('figcaption');
  caption.textContent = label;
  const info = document.createElement('span');
  info.className = 'info';
  const paused = document.createElement('span');
  paused.className = 'paused';
  paused.textContent = 'paused: low bandwidth';
  paused.hidden = true;
  fig.append(video, paused, caption, info);
  return fig;
}

async function call(run, v) {
  const section = run.section;
  const grid = role(section, 'grid');
  localStorage.setItem('parley.name', v.name);
  const slots = Math.max(1, Math.min(16, Number(v.slots) || 4));
  const stream = await capture('camera');
  run.defer(() => stream.getTracks().forEach((t) => t.stop()));
  run.check();

  const own = makeTile(`You (${v.name})`);
  own.classList.add('own');
  own.dataset.participant = v.name;
  $('video', own).srcObject = stream;
  const empty = document.createElement('p');
  empty.className = 'empty';
  empty.textContent = 'Waiting for others to join…';
  grid.replaceChildren(own, empty);
  run.defer(() => grid.replaceChildren());

  const mute = role(section, 'mute');
  mute.hidden = false;
  mute.textContent = 'Mute microphone';
  mute.onclick = () => {
    for (const t of stream.getAudioTracks()) t.enabled = !t.enabled;
    const muted = !stream.getAudioTracks().some((t) => t.enabled);
    mute.textContent = muted ? 'Unmute microphone' : 'Mute microphone';
    own.classList.toggle('muted', muted);
  };
  run.defer(() => (mute.hidden = true));

  const name = `?participant=${enc(v.name)}`;
  const whip = await sendCapture(run, `/whip/${enc(v.room)}${name}`, stream, v.codec, v.simulcast);

  // One recvonly audio and one recvonly video m-line per slot; Parley fills them with the
  // others' tracks and says who is in which slot with slot_assigned events.
  const audio = [];
  const video = [];
  const whep = await connect(run, 'whep', `/whep/${enc(v.room)}${name}`, (pc) => {
    for (let i = 0; i < slots; i++) audio.push(pc.addTransceiver('audio', { direction: 'recvonly' }));
    for (let i = 0; i < slots; i++) video.push(pc.addTransceiver('video', { direction: 'recvonly' }));
  });
  const tiles = new Map(); // mid -> tile
  const trackTiles = new Map(); // receiver track id -> tile
  for (const t of video) {
    const tile = makeTile('');
    tile.classList.add('idle');
    tile.dataset.mid = t.mid;
    $('video', tile).srcObject = new MediaStream([t.receiver.track]);
    tiles.set(t.mid, tile);
    trackTiles.set(t.receiver.track.id, tile);
    grid.append(tile);
  }
  for (const t of audio) {
    const el = document.createElement('audio');
    el.autoplay = true;
    el.srcObject = new MediaStream([t.receiver.track]);
    grid.append(el);
  }

  const invite = role(section, 'invite-link');
  invite.href = invite.textContent = `${location.origin}/#/call/${enc(v.room)}?slots=${slots}`;
  invite.closest('.share').hidden = false;
  run.defer(() => (invite.closest('.share').hidden = true));
  const roster = role(section, 'roster');
  const downlink = role(section, 'downlink');
  run.defer(() => (downlink.textContent = ''));
  const people = new Set();
  let speaker = null;
  const showRoster = () => {
    roster.textContent = `In the room: ${[...people].join(', ') || 'nobody yet'}`;
  };
  const highlight = () => {
    for (const tile of grid.querySelectorAll('.tile')) {
      tile.classList.toggle('speaking', !!speaker && tile.dataset.participant === speaker);
    }
  };
  fitLayersToTiles(run, whep, tiles);
  follow(run, whep, (e) => {
    if (e.type === 'snapshot') people.clear();
    else if (e.type === 'participant_joined') people.add(e.participant);
    else if (e.type === 'participant_left') people.delete(e.participant);
    else if (e.type === 'active_speaker') speaker = e.participant;
    else if (e.type === 'slot_assigned' && e.kind === 'video' && tiles.has(e.mid)) {
      const tile = tiles.get(e.mid);
      tile.dataset.participant = e.participant || '';
      $('figcaption', tile).textContent = e.participant || '';
      tile.classList.toggle('idle', !e.participant);
      empty.hidden = [...tiles.values()].some((t) => !t.classList.contains('idle'));
    } else if (e.type === 'layers' && tiles.has(e.mid)) {
      const active = e.active;
      tiles.get(e.mid).dataset.layer = active ? active.rid || `${active.width}×${active.height}` : '';
      showPaused(tiles.get(e.mid), e);
      downlink.textContent = describeDownlink(e.estimate);
    }
    showRoster();
    highlight();
  });

  // Per-tile figures, and the full table under "Statistics".
  const sent = new StatsMeter(whip.pc);
  const received = new StatsMeter(whep.pc);
  run.every(1000, async () => {
    const [s, r] = await Promise.all([sent.sample(), received.sample()]);
    const out = s.outbound.filter((o) => o.kind === 'video');
    if (out.length) {
      const kbps = out.some((o) => o.kbps !== null) ? out.reduce((sum, o) => sum + (o.kbps || 0), 0) : null;
      const layers = out.length > 1 ? ` · ${out.filter((o) => o.kbps).length} layers` : '';
      const via = s.transport ? ` · ${s.transport}` : '';
      $('.info', own).textContent = `${fmt.kbps(kbps)}${layers} · RTT ${fmt.ms(out[0].rtt ?? s.rtt)}${via}`;
    }
    for (const i of r.inbound) {
      const tile = i.kind === 'video' && (tiles.get(i.mid) || trackTiles.get(i.track));
      if (!tile) continue;
      const layer = tile.dataset.layer ? `${tile.dataset.layer} · ` : '';
      $('.info', tile).textContent = `${layer}${fmt.kbps(i.kbps)} · ${fmt.size(i)} · lost ${fmt.n(i.lost)}`;
    }
  });
  showStats(run, role(section, 'stats'), [['sent', whip], ['received', whep]]);
  run.defer(() => role(section, 'stats').replaceChildren());
}

/**
 * Limits each video slot to the size its tile takes on screen (in device pixels), through the
 * WHEP layer endpoint, so a small tile does not get the publisher's largest layer. Sizes are
 * read with a ResizeObserver, settled for 300 ms, and sent only when they changed; a hidden
 * (idle) tile keeps its last limits.
 */
function fitLayersToTiles(run, session, tiles) {
  if (!session.layerUrl || !window.ResizeObserver) return;
  const wanted = new Map(); // mid -> "WxH" to ask for
  const asked = new Map(); // mid -> "WxH" the server has
  let timer = null;
  const flush = async () => {
    timer = null;
    for (const [mid, size] of wanted) {
      if (asked.get(mid) === size || run.stopped) continue;
      asked.set(mid, size);
      const [w, h] = size.split('x').map(Number);
      try {
        await session.setLayer({ mediaId: mid, maxWidth: w, maxHeight: h });
      } catch (e) {
        asked.delete(mid); // the next resize tries again
        if (!run.stopped) console.warn(`could not limit tile ${mid} to ${size}`, e);
      }
    }
  };
  const observer = new ResizeObserver((entries) => {
    const dpr = window.devicePixelRatio || 1;
    for (const entry of entries) {
      const { width, height } = entry.contentRect;
      if (width < 1 || height < 1) continue;
      wanted.set(entry.target.closest('.tile').dataset.mid, `${Math.round(width * dpr)}x${Math.round(height * dpr)}`);
    }
    clearTimeout(timer);
    timer = setTimeout(flush, 300);
  });
  for (const tile of tiles.values()) observer.observe($('video', tile));
  run.defer(() => {
    observer.disconnect();
    clearTimeout(timer);
  });
}

// ---------------------------------------------------------------- wiring

const views = { publish, watch, call };

for (const [name, body] of Object.entries(views)) {
  const section = $(`#${name}`);
  const form = $('form', section);
  form.addEventListener('submit', (e) => {
    e.preventDefault();
    launch(section, body);
  });
  form.addEventListener('input', () => history.replaceState(null, '', hashFor(name, formValues(section))));
  role(section, 'stop').addEventListener('click', () => {
    stopCurrent();
    say('');
  });
}

const codecs = sendableCodecs();
for (const select of document.querySelectorAll('select[name="codec"]')) {
  for (const c of codecs) select.append(new Option(c, c));
}

addEventListener('hashchange', route);
// Back from the back-forward cache: the sessions were ended on pagehide, so start over.
addEventListener('pageshow', (e) => e.persisted && route());
route();

/** For tests and the curious: the sessions and room events of what is running now. */
window.parley = {
  get sessions() {
    return current && !current.stopped ? current.sessions : {};
  },
  get events() {
    return (current && current.events) || [];
  },
};
