// Simulcast through the page: a publish page sends three layers (q/h/f) of a 1280×720 test
// pattern; two watch pages in browsers of their own play it. One leaves the layer choice to
// the server and must decode the full size; the other limits its slot to maxWidth 320 through
// the WHEP layer endpoint (before the publisher arrives) and must decode the smallest layer. Both are then measured over
// 10 s (sizes, frame rate, freezes). Last, the first viewer's Quality menu pins Low, then
// goes back to Auto, and the page's layer line follows.
//
//   node tests/browser/simulcast.mjs <base_url> <artifact_dir>

import { mkdtempSync, rmSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { launch, main, watchConsole, testPatternCamera, waitFor, inboundVideo } from './lib.mjs';

const [base, artifacts] = process.argv.slice(2);
const ROOM = 'browser-simulcast';
const NAME = 'cam';
const MEASURE_MS = 10_000;

// The 1280×720 clip is large (about 40 MB a second): it lives in a temporary folder.
const tmp = mkdtempSync(path.join(os.tmpdir(), 'parley-simulcast-'));
process.on('exit', () => rmSync(tmp, { recursive: true, force: true }));

async function pageMessage(page) {
  return page.$eval('#message', (e) => (e.hidden ? '' : e.textContent));
}

/** The publish page's video layers as it sends them, smallest first. */
async function sent(page) {
  return (await sending(page)).layers;
}

/** The publish page's video layers, and the browser's estimate of the bandwidth it has. */
function sending(page) {
  return page.evaluate(async () => {
    const s = window.parley.sessions.whip;
    if (!s) return { layers: [] };
    const out = [];
    const report = await s.pc.getStats();
    const remote = new Map();
    report.forEach((r) => r.type === 'remote-inbound-rtp' && remote.set(r.localId, r));
    report.forEach((r) => {
      if (r.type === 'outbound-rtp' && r.kind === 'video') {
        out.push({ rid: r.rid || '', width: r.frameWidth || 0, height: r.frameHeight || 0, fps: r.framesPerSecond || 0, frames: r.framesEncoded || 0, packets: r.packetsSent || 0, bytes: r.bytesSent || 0, target: r.targetBitrate || 0, active: r.active, limited: r.qualityLimitationReason, lost: remote.get(r.id)?.packetsLost, rtt: remote.get(r.id)?.roundTripTime });
      } else if (r.type === 'candidate-pair' && r.nominated && r.availableOutgoingBitrate !== undefined) {
        out.available = r.availableOutgoingBitrate;
      }
    });
    return { layers: out.sort((a, b) => a.width - b.width), available: out.available };
  });
}

/**
 * What the publisher sends, once a second until `stop()`: per layer (by rid) frames encoded,
 * packets and payload bytes sent, and the browser's bandwidth estimate. For the report.
 */
function timeline(page) {
  const rows = [];
  const t0 = Date.now();
  let running = true;
  const done = (async () => {
    while (running) {
      const { layers = [], available } = await sending(page).catch(() => ({}));
      const row = { t: Math.round((Date.now() - t0) / 100) / 10, available, limited: layers[0]?.limited, rtt: layers[0]?.rtt };
      for (const l of layers) row[l.rid] = [l.frames, l.packets, l.bytes, l.width, l.lost];
      rows.push(row);
      await new Promise((r) => setTimeout(r, 1000));
    }
  })();
  return async () => {
    running = false;
    await done;
    return rows;
  };
}

/**
 * Runs `body(seen)`; a failure carries what the publisher sent over time (`seen.timeline`),
 * what each viewer (`seen.viewers`) decoded and was told, and the 10 s figures if taken.
 */
async function explained(body) {
  const seen = { timeline: null, viewers: {}, measured: null };
  try {
    return await body(seen);
  } catch (e) {
    const rows = seen.timeline ? await seen.timeline() : [];
    const lines = [e.message, 'publisher sent (t, available bit/s, per rid [frames, packets, payload bytes, width, lost]):'];
    lines.push(...rows.map((r) => JSON.stringify(r)));
    for (const [name, page] of Object.entries(seen.viewers)) {
      const state = await page
        .evaluate(async () => {
          const video = [];
          (await window.parley.sessions.whep.pc.getStats()).forEach((r) => {
            if (r.type === 'inbound-rtp' && r.kind === 'video') video.push({ frames: r.framesDecoded, width: r.frameWidth, freezes: r.freezeCount, plis: r.pliCount });
          });
          return { video, layers: window.parley.events.filter((e) => e.type === 'layers') };
        })
        .catch((err) => err.message);
      lines.push(`viewer ${name}: ${JSON.stringify(state)}`);
    }
    if (seen.measured) lines.push(`measured before the failure: ${JSON.stringify(seen.measured)}`);
    throw new Error(lines.join('\n'));
  }
}

/** A watch page's video: decoder figures, its last `layers` event, and its layer line. */
async function viewing(page) {
  const [video] = await inboundVideo(page);
  const info = await page.evaluate(() => {
    const layers = window.parley.events.filter((e) => e.type === 'layers');
    return {
      event: layers[layers.length - 1] || null,
      layerEvents: layers.length,
      line: document.querySelector('#watch [data-role="layer-info"]').textContent,
      shown: document.querySelector('#watch').dataset.layer || '',
      options: [...document.querySelectorAll('#watch [data-role="layer"] option')].map((o) => o.textContent),
    };
  });
  const message = await pageMessage(page);
  if (message) throw new Error(`the watch page says: ${message}`);
  return { ...(video || { frames: 0, width: 0 }), ...info };
}

/** Opens a watch page of the publisher in a browser with no camera. */
async function watcher(tag) {
  const page = (await launch({ devices: false })).pages()[0];
  watchConsole(page, tag);
  await page.goto(`${base}/#/watch/${ROOM}/${NAME}`);
  await waitFor(`${tag}'s WHEP session`, () => page.evaluate(() => !!window.parley.sessions.whep?.layerUrl));
  return page;
}

/** Waits until a page decodes video whose width passes `ok`, frames still arriving. */
async function decodes(page, what, ok, ms = 30_000) {
  let before = null;
  return waitFor(what, async () => {
    const v = await viewing(page);
    const moving = before !== null && v.frames > before;
    before = v.frames;
    return moving && ok(v.width) && v;
  }, ms);
}

main(() => explained(async (seen) => {
  // The viewers open first (a browser's start-up is the busiest moment on a small machine):
  // "auto" asks for nothing, "small" limits its video slot to 320 wide before anyone publishes.
  const auto = await watcher('auto');
  const small = await watcher('small');
  Object.assign(seen.viewers, { auto, small });
  const limit = await small.evaluate(async () => {
    const s = window.parley.sessions.whep;
    const mid = s.pc.getTransceivers().find((t) => t.receiver.track.kind === 'video').mid;
    await s.setLayer({ mediaId: mid, maxWidth: 320 });
    return { mid, status: 204 };
  });

  const camera = await testPatternCamera(tmp, 'pattern-720p', { width: 1280, height: 720, fps: 15 });
  const publisher = (await launch({ camera })).pages()[0];
  watchConsole(publisher, 'publish');
  await publisher.goto(`${base}/#/publish/${ROOM}?participant=${NAME}&codec=VP8&loopback=0`);
  const simulcastBox = await publisher.$eval('#publish [name="simulcast"]', (e) => e.checked);
  await publisher.click('#publish [data-role="start"]');
  seen.timeline = timeline(publisher);
  const layersSent = await waitFor('the publish page sending three layers, the top one 960 or wider', async () => {
    const message = await pageMessage(publisher);
    if (message) throw new Error(message);
    const layers = await sent(publisher);
    return layers.length === 3 && layers.every((l) => l.frames > 0) && layers[2].width >= 960 && layers;
  }, 30_000);
  const degradation = await publisher.evaluate(() => {
    const t = window.parley.sessions.whip.pc.getTransceivers().find((t) => t.sender.track?.kind === 'video');
    return t.sender.getParameters().degradationPreference || null;
  });

  const autoFirst = await decodes(auto, 'the auto viewer decoding 960 or wider', (w) => w >= 960);
  const smallFirst = await decodes(small, 'the maxWidth 320 viewer decoding 320 or narrower', (w) => w > 0 && w <= 320);

  // Both viewers over MEASURE_MS: every size seen, frames decoded, freezes.
  const viewers = { auto, small };
  const start = {};
  const widths = { auto: new Set(), small: new Set() };
  for (const [name, page] of Object.entries(viewers)) start[name] = await viewing(page);
  const t0 = Date.now();
  while (Date.now() - t0 < MEASURE_MS) {
    for (const [name, page] of Object.entries(viewers)) widths[name].add((await viewing(page)).width);
    await new Promise((r) => setTimeout(r, 500));
  }
  const measured = {};
  for (const [name, page] of Object.entries(viewers)) {
    const end = await viewing(page);
    const secs = (Date.now() - t0) / 1000;
    widths[name].add(end.width);
    measured[name] = {
      width: end.width,
      height: end.height,
      widths_seen: [...widths[name]].sort((a, b) => a - b),
      fps: Math.round(((end.frames - start[name].frames) / secs) * 10) / 10,
      decoder_fps: end.fps,
      freezes: end.freezes - start[name].freezes,
      freeze_secs: Math.round((end.freezeSecs - start[name].freezeSecs) * 1000) / 1000,
      freezes_since_start: end.freezes,
      plis: end.plis,
      seconds: Math.round(secs * 10) / 10,
      active: end.event?.active || null,
      layers: (end.event?.layers || []).map((l) => ({ rid: l.rid, spatialLayerId: l.spatialLayerId, width: l.width, height: l.height })),
      layer_events: end.layerEvents,
      line: end.line,
      shown: end.shown,
      options: end.options,
    };
  }
  seen.measured = measured;
  const layersAtEnd = await sent(publisher);
  await auto.screenshot({ path: path.join(artifacts, 'simulcast-watch.png') });

  // The auto viewer's Quality menu: Low pins the smallest layer, Auto gives the full size back.
  const menu = auto.locator('#watch [data-role="layer"]');
  let t = Date.now();
  await menu.selectOption('low');
  const low = await decodes(auto, 'the auto viewer decoding 320 or narrower after choosing Low', (w) => w > 0 && w <= 320);
  const lowLine = await waitFor('the layer line to say q', async () => {
    const v = await viewing(auto);
    return v.shown === 'q' && v;
  }, 5000);
  const lowMs = Date.now() - t;
  t = Date.now();
  await menu.selectOption('auto');
  const back = await decodes(auto, 'the auto viewer decoding 960 or wider again after choosing Auto', (w) => w >= 960);
  const backMs = Date.now() - t;

  const sending = await seen.timeline();
  // Stop DELETEs every session: the room ends.
  for (const page of [auto, small]) await page.click('#watch [data-role="stop"]');
  await publisher.click('#publish [data-role="stop"]');
  const roomGone = await waitFor('the room to end after Stop', async () => {
    const res = await fetch(`${base}/rooms`);
    return !(await res.json()).rooms.some((r) => r.name === ROOM);
  }, 5000);
  return {
    room_gone_after_stop: roomGone,
    sending,
    simulcast_box_checked: simulcastBox,
    degradation_preference: degradation,
    sent_first: layersSent,
    sent_end: layersAtEnd,
    limit,
    first: { auto: autoFirst.width, small: smallFirst.width },
    measured,
    menu: {
      low: { width: low.width, ms: lowMs, shown: lowLine.shown, line: lowLine.line },
      auto: { width: back.width, ms: backMs },
    },
  };
}), 140_000);
