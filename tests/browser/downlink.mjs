// Downlink adaptation with real browsers. A publish page sends three layers (q/h/f) of a
// 1280×720, 30 fps test pattern; a watch page on an open link ("full") and one behind a
// shaped link ("narrow") play it. The server advertises only the test's relay, so every page
// reaches it through the relay; the Rust test (tests/browser.rs) shapes and re-rates the
// narrow page's downlink when this script asks, in steps:
//
//   prints {"step":"shape","bps":N}  shape clients the relay sees from now on at N bit/s
//   prints {"step":"rate","bps":N}   set the shaped clients' rate to N bit/s
//
// and waits for a line on stdin after each. The publisher and the full viewer connect
// first; then "shape", then the narrow viewer opens. Each phase runs `secs` seconds at its
// rate; the narrow viewer is measured over its last `measure` seconds (frames decoded per
// second, freezes, widths, layers events and the page's downlink and pause texts), the full
// viewer over the same window. The script asserts nothing about the figures: the test does.
//
//   node tests/browser/downlink.mjs <base_url> <artifact_dir> <phases> [chromium|firefox]
//
// <phases>: JSON, e.g. [{"bps":1000000,"secs":25,"measure":15},{"bps":300000,"secs":15,"measure":10}];
// the last argument is the narrow viewer's browser (Chromium unless it says firefox).

import { mkdtempSync, rmSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import readline from 'node:readline';
import { launch, launchFirefox, main, watchConsole, testPatternCamera, waitFor, inboundVideo } from './lib.mjs';

const [base, artifacts, phasesArg, narrowBrowser = 'chromium'] = process.argv.slice(2);
const phases = JSON.parse(phasesArg);
const ROOM = 'browser-downlink';
const NAME = 'cam';
const SAMPLE_MS = 500;

// The 1280×720 clip is large (about 40 MB a second at 30 fps): it lives in a temporary folder.
const tmp = mkdtempSync(path.join(os.tmpdir(), 'parley-downlink-'));
process.on('exit', () => rmSync(tmp, { recursive: true, force: true }));

const stdin = readline.createInterface({ input: process.stdin })[Symbol.asyncIterator]();

/** Asks the Rust test to act on the relay and waits until it has. */
async function step(name, bps) {
  console.log(JSON.stringify({ step: name, bps }));
  const { done } = await stdin.next();
  if (done) throw new Error(`stdin closed before the test acknowledged step ${name}`);
}

const sleep = (ms) => new Promise((r) => setTimeout(r, Math.max(0, ms)));
const round = (v, digits = 1) => Math.round(v * 10 ** digits) / 10 ** digits;

async function pageMessage(page) {
  return page.$eval('#message', (e) => (e.hidden ? '' : e.textContent));
}

/** The publish page's video layers as it sends them, smallest first. */
function sent(page) {
  return page.evaluate(async () => {
    const s = window.parley.sessions.whip;
    if (!s) return [];
    const out = [];
    (await s.pc.getStats()).forEach((r) => {
      if (r.type === 'outbound-rtp' && r.kind === 'video') {
        out.push({ rid: r.rid || '', width: r.frameWidth || 0, fps: r.framesPerSecond || 0, frames: r.framesEncoded || 0, bytes: r.bytesSent || 0, limited: r.qualityLimitationReason });
      }
    });
    return out.sort((a, b) => a.width - b.width);
  });
}

/**
 * A watch page now: decoder figures, its `layers` events so far, the downlink text and the
 * pause overlay as shown.
 */
async function viewing(page) {
  const [video] = await inboundVideo(page);
  const info = await page.evaluate(() => {
    const overlay = document.querySelector('#watch .tile .paused');
    return {
      layerEvents: window.parley.events.filter((e) => e.type === 'layers'),
      downlink: document.querySelector('#watch [data-role="downlink"]').textContent,
      overlay: overlay.hidden ? '' : overlay.textContent,
    };
  });
  const message = await pageMessage(page);
  if (message) throw new Error(`the watch page says: ${message}`);
  return { frames: 0, width: 0, freezes: 0, freezeSecs: 0, ...(video || {}), ...info, at: Date.now() };
}

/** Opens a watch page of the publisher. */
async function watch(page, tag) {
  await page.goto(`${base}/#/watch/${ROOM}/${NAME}`);
  await waitFor(`${tag}'s WHEP session`, () => page.evaluate(() => !!window.parley.sessions.whep?.layerUrl));
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

/** A `layers` event in short: "h/T2 paused=false bandwidth 1.1M". */
function brief(e) {
  const a = e.active ? `${e.active.rid || e.active.spatialLayerId}/T${e.active.temporalLayerId ?? '-'}` : 'none';
  const est = e.estimate === undefined ? '' : ` ${round(e.estimate / 1e6, 2)}M`;
  return `${a} paused=${e.paused} ${e.reason}${est}`;
}

/** The figures of a viewer between two `viewing` samples, with every sample in between. */
function figures(first, last, samples) {
  const secs = (last.at - first.at) / 1000;
  const widths = samples.map((s) => s.width);
  const events = last.layerEvents.slice(first.layerEvents.length);
  return {
    seconds: round(secs),
    fps: round((last.frames - first.frames) / secs),
    freezes: last.freezes - first.freezes,
    freeze_secs: round(last.freezeSecs - first.freezeSecs, 3),
    width: last.width,
    min_width: Math.min(...widths),
    max_width: Math.max(...widths),
    widths_seen: [...new Set(widths)].sort((a, b) => a - b),
    // Paused at the window's start or at any time in it.
    paused_seen: [first.layerEvents.at(-1), ...events].some((e) => e?.paused),
    paused_at_end: !!last.layerEvents.at(-1)?.paused,
    overlay_seen: samples.some((s) => s.overlay !== ''),
    // Samples where the overlay did not say what the latest layers event says.
    overlay_mismatches: samples.filter((s) => {
      const e = s.layerEvents.at(-1);
      const want = !!e && e.paused && e.reason === 'bandwidth';
      return want !== (s.overlay === 'paused: low bandwidth');
    }).length,
    layer_events: events.map(brief),
    last_event: last.layerEvents.length ? brief(last.layerEvents.at(-1)) : null,
    estimate: last.layerEvents.at(-1)?.estimate ?? null,
    downlink_text: last.downlink,
  };
}

/** The participant names a watch page has been told of. */
function participants(page) {
  return page.evaluate(() => window.parley.events.filter((e) => e.type === 'participant_joined').map((e) => e.participant));
}

/** What the room API says of one participant's WHEP session: its downlink and video slot. */
async function roomView(name) {
  const room = await (await fetch(`${base}/rooms/${ROOM}`)).json();
  const p = room.participants.find((x) => x.name === name);
  if (!p) return null;
  const slot = p.slots.find((s) => s.kind === 'video');
  return { downlink: p.sessions[0]?.downlink ?? null, layer: slot?.layer?.rid ?? null, paused: slot?.paused, reason: slot?.reason ?? null };
}

/**
 * Runs `body(pages)`; a failure carries each viewer's decoder figures and layers events, what
 * the publisher sends, and the room as the API shows it.
 */
async function explained(body) {
  const pages = {};
  try {
    return await body(pages);
  } catch (e) {
    const lines = [e.message];
    for (const [name, page] of Object.entries(pages)) {
      const state = await (name === 'publisher' ? sent(page) : viewing(page).then((v) => ({ ...v, layerEvents: v.layerEvents.map(brief) }))).catch((err) => err.message);
      lines.push(`${name}: ${JSON.stringify(state)}`);
    }
    const room = await fetch(`${base}/rooms/${ROOM}`)
      .then((r) => r.text())
      .catch((err) => err.message);
    lines.push(`room: ${room}`);
    throw new Error(lines.join('\n'));
  }
}

main(() => explained(async (pages) => {
  const camera = await testPatternCamera(tmp, 'pattern-720p30', { width: 1280, height: 720, fps: 30 });
  // Browsers start first (the busiest moment on a small machine); the narrow one stays on a
  // blank page, sending nothing, until the relay shapes new clients.
  const full = (await launch({ devices: false })).pages()[0];
  watchConsole(full, 'full');
  const narrow = narrowBrowser === 'firefox' ? await launchFirefox() : (await launch({ devices: false })).pages()[0];
  watchConsole(narrow, 'narrow');
  const publisher = (await launch({ camera })).pages()[0];
  watchConsole(publisher, 'publish');
  Object.assign(pages, { full, narrow, publisher });

  await watch(full, 'full');
  await publisher.goto(`${base}/#/publish/${ROOM}?participant=${NAME}&codec=VP8&loopback=0`);
  await publisher.click('#publish [data-role="start"]');
  const sentFirst = await waitFor('the publish page sending three layers, the top one 960 or wider', async () => {
    const message = await pageMessage(publisher);
    if (message) throw new Error(message);
    const layers = await sent(publisher);
    return layers.length === 3 && layers.every((l) => l.frames > 0) && layers[2].width >= 960 && layers;
  }, 30_000);
  // Which layer the full viewer gets is measured below, with the narrow one's figures.
  const fullFirst = await decodes(full, 'the full viewer decoding', (w) => w > 0);

  const known = new Set([NAME, ...(await participants(full))]);
  const results = [];
  let pausedShot = null; // a screenshot of the narrow page the first time it shows the overlay
  for (const [i, phase] of phases.entries()) {
    if (i === 0) {
      await step('shape', phase.bps);
      await watch(narrow, 'narrow');
    } else {
      await step('rate', phase.bps);
    }
    const began = Date.now();
    const eventsBefore = i === 0 ? 0 : (await viewing(narrow)).layerEvents.length;
    // Without estimation the narrow viewer may never decode a frame: that is a figure too.
    const settle = (phase.secs - phase.measure) * 1000;
    const firstFrame = i > 0 ? null : await decodes(narrow, 'the narrow viewer decoding', (w) => w > 0, settle).then(() => Date.now() - began, () => null);
    await sleep(began + settle - Date.now());
    const samples = { narrow: [await viewing(narrow)], full: [await viewing(full)] };
    const sentAtStart = await sent(publisher);
    const end = began + phase.secs * 1000;
    while (Date.now() < end) {
      await sleep(Math.min(SAMPLE_MS, end - Date.now()));
      samples.narrow.push(await viewing(narrow));
      samples.full.push(await viewing(full));
      if (samples.narrow.at(-1).overlay && !pausedShot) {
        pausedShot = path.join(artifacts, 'downlink-paused.png');
        await narrow.screenshot({ path: pausedShot });
      }
    }
    const sentAtEnd = await sent(publisher);
    const secs = (samples.narrow.at(-1).at - samples.narrow[0].at) / 1000;
    const narrowName = (await participants(narrow)).find((n) => !known.has(n));
    results.push({
      bps: phase.bps,
      first_frame_ms: firstFrame,
      narrow: {
        ...figures(samples.narrow[0], samples.narrow.at(-1), samples.narrow),
        // Every layers event since the phase began (the window's are in layer_events).
        phase_events: samples.narrow.at(-1).layerEvents.slice(eventsBefore).map(brief),
        room: narrowName ? await roomView(narrowName) : null,
      },
      full: figures(samples.full[0], samples.full.at(-1), samples.full),
      // Frames the publisher encoded per second, per layer, over the window.
      publisher_fps: Object.fromEntries(sentAtEnd.map((l) => [l.rid, round((l.frames - (sentAtStart.find((s) => s.rid === l.rid)?.frames ?? 0)) / secs)])),
      publisher_limited: sentAtEnd[0]?.limited ?? null,
    });
    await narrow.screenshot({ path: path.join(artifacts, `downlink-narrow-${phase.bps}.png`) });
  }

  for (const page of [full, narrow]) await page.click('#watch [data-role="stop"]');
  await publisher.click('#publish [data-role="stop"]');
  return { sent_first: sentFirst.map((l) => ({ rid: l.rid, width: l.width })), full_first_width: fullFirst.width, paused_screenshot: pausedShot, phases: results };
}), 140_000);
