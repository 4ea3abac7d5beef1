// Shared helpers of the browser tests: launch Debian's Chromium through playwright-core with
// fake media (and Debian's Firefox ESR through puppeteer-core, over WebDriver BiDi, as a
// viewer), make distinctly coloured fake cameras, read what a page decodes.
//
// The Rust test (tests/browser.rs) runs each script as
//   node tests/browser/<script>.mjs <base_url> <artifact_dir> [more arguments]
// with PARLEY_NODE_DIR (where npm installed playwright-core and puppeteer-core),
// PARLEY_CHROMIUM and PARLEY_FIREFOX set. A script prints one JSON line as its result; it
// must never leave a browser running.

import { createRequire } from 'node:module';
import { execFile } from 'node:child_process';
import { promisify } from 'node:util';
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';

const nodeDir = process.env.PARLEY_NODE_DIR || path.resolve('target/node');
const require = createRequire(path.join(nodeDir, 'package.json'));
const { chromium } = require('playwright-core');

const executablePath = process.env.PARLEY_CHROMIUM || '/usr/bin/chromium';
const firefoxPath = process.env.PARLEY_FIREFOX || '/usr/bin/firefox-esr';

// Flags that work headless as root here, without any network but loopback.
const FLAGS = [
  '--headless',
  '--no-sandbox',
  '--disable-gpu',
  '--disable-quic',
  '--no-first-run',
  '--disable-background-networking',
  '--disable-component-update',
  '--disable-sync',
  '--allow-loopback-in-peer-connection',
  '--autoplay-policy=no-user-gesture-required',
];


const launched = [];

/**
 * Starts a browser with a fresh profile. `camera`: a .y4m file for the fake camera,
 * `microphone`: a .wav file for the fake microphone;
 * `devices: false`: no fake camera and microphone; `accept: false`: camera permission
 * prompts are not accepted (headless Chromium then denies them).
 */
export async function launch({ camera, microphone, devices = true, accept = true, secure } = {}) {
  const profile = await mkdtemp(path.join(os.tmpdir(), 'parley-chromium-'));
  const args = [...FLAGS];
  // A page on a plain http:// address other than localhost may capture only if told so.
  if (secure) args.push(`--unsafely-treat-insecure-origin-as-secure=${secure}`);
  if (devices) args.push('--use-fake-device-for-media-stream');
  if (devices && accept) args.push('--use-fake-ui-for-media-stream');
  if (camera) args.push(`--use-file-for-fake-video-capture=${camera}`);
  if (microphone) args.push(`--use-file-for-fake-audio-capture=${microphone}`);
  const context = await chromium.launchPersistentContext(profile, {
    executablePath,
    headless: true,
    args,
    viewport: { width: 1280, height: 800 },
  });
  const entry = { context, profile };
  launched.push(entry);
  return context;
}

// Firefox preferences for a headless viewer: plain host addresses rather than mDNS names,
// and playback without a user gesture. Firefox gathers no loopback candidates, so the test
// puts the server's candidate on this host's own address.
const FIREFOX_PREFS = {
  'media.peerconnection.ice.obfuscate_host_addresses': false,
  'media.autoplay.default': 0,
  'media.autoplay.blocking_policy': 0,
};

/**
 * Starts Firefox with a fresh profile (no camera or microphone: a viewer) and returns its
 * page. The page answers `goto`, `evaluate`, `$eval`, `click`, `screenshot` and `on` as a
 * Chromium page does here.
 */
export async function launchFirefox() {
  const puppeteer = require('puppeteer-core');
  const profile = await mkdtemp(path.join(os.tmpdir(), 'parley-firefox-'));
  const browser = await puppeteer.launch({
    browser: 'firefox',
    executablePath: firefoxPath,
    headless: true,
    userDataDir: profile,
    extraPrefsFirefox: FIREFOX_PREFS,
    defaultViewport: { width: 1280, height: 800 },
  });
  launched.push({ context: browser, profile });
  const [page] = await browser.pages();
  return page || browser.newPage();
}

/** Closes every browser and removes its profile. */
export async function closeAll() {
  for (const { context, profile } of launched.splice(0)) {
    await context.close().catch(() => {});
    await rm(profile, { recursive: true, force: true }).catch(() => {});
  }
}

/** Runs `body()`, prints its result as one JSON line, always closes the browsers. */
export async function main(body, timeoutMs = 100_000) {
  const timer = setTimeout(() => {
    console.log(JSON.stringify({ ok: false, error: `the script took longer than ${timeoutMs} ms` }));
    closeAll().finally(() => process.exit(2));
  }, timeoutMs);
  let code = 0;
  try {
    const result = await body();
    console.log(JSON.stringify({ ok: true, ...result }));
  } catch (e) {
    console.log(JSON.stringify({ ok: false, error: String(e && e.stack ? e.stack : e) }));
    code = 1;
  } finally {
    clearTimeout(timer);
    await closeAll();
  }
  process.exit(code);
}

/** Page console errors and crashes go to stderr, tagged, to read a failed run. */
export function watchConsole(page, tag) {
  page.on('console', (m) => {
    if (m.type() === 'error' || m.type() === 'warning') console.error(`[${tag}] ${m.type()}: ${m.text()}`);
  });
  page.on('pageerror', (e) => console.error(`[${tag}] page error: ${e.message}`));
}

/**
 * Writes a Y4M clip for Chromium's fake camera: a solid `rgb` background with a white bar
 * sweeping across, so each page's camera is recognisable by colour and frames keep changing.
 */
export async function colourCamera(dir, name, [r, g, b]) {
  const W = 320;
  const H = 240;
  const FRAMES = 30;
  const y = Math.round(0.299 * r + 0.587 * g + 0.114 * b);
  const u = Math.round(128 - 0.168736 * r - 0.331264 * g + 0.5 * b);
  const v = Math.round(128 + 0.5 * r - 0.418688 * g - 0.081312 * b);
  const header = Buffer.from(`YUV4MPEG2 W${W} H${H} F30:1 Ip A1:1 C420jpeg\n`);
  const parts = [header];
  for (let f = 0; f < FRAMES; f++) {
    const luma = Buffer.alloc(W * H, y);
    const bar = Math.floor((f * W) / FRAMES);
    for (let row = 0; row < H; row++) luma.fill(235, row * W + bar, row * W + Math.min(W, bar + 24));
    parts.push(Buffer.from('FRAME\n'), luma, Buffer.alloc((W / 2) * (H / 2), u), Buffer.alloc((W / 2) * (H / 2), v));
  }
  const file = path.join(dir, `${name}.y4m`);
  await writeFile(file, Buffer.concat(parts));
  return file;
}

/**
 * Writes a Y4M clip for Chromium's fake camera with ffmpeg's moving `testsrc2` pattern, e.g.
 * 1280×720 (Chromium sends three simulcast layers only from about 960×540 up). It loops.
 */
export async function testPatternCamera(dir, name, { width, height, seconds = 3, fps = 30 }) {
  const file = path.join(dir, `${name}.y4m`);
  const args = ['-v', 'error', '-y', '-f', 'lavfi', '-i', `testsrc2=size=${width}x${height}:rate=${fps}`, '-t', String(seconds), '-pix_fmt', 'yuv420p', file];
  try {
    await promisify(execFile)('ffmpeg', args);
  } catch (e) {
    throw new Error(`ffmpeg could not make the ${width}x${height} test camera (run ./scripts/test.sh, which installs ffmpeg): ${e.message}`);
  }
  return file;
}

/**
 * Writes a WAV for Chromium's fake microphone: 4 s of a voice-like warbling tone, or silence,
 * so that the server's active-speaker choice is known in advance.
 */
export async function voiceMicrophone(dir, name, speaking) {
  const RATE = 48000;
  const n = RATE * 4;
  const data = Buffer.alloc(n * 2);
  for (let i = 0; speaking && i < n; i++) {
    const t = i / RATE;
    const pitch = 180 + 60 * Math.sin(2 * Math.PI * 0.7 * t);
    const syllables = 0.55 + 0.45 * Math.sin(2 * Math.PI * 4 * t);
    const sample = 0.4 * syllables * (Math.sin(2 * Math.PI * pitch * t) + 0.5 * Math.sin(4 * Math.PI * pitch * t));
    data.writeInt16LE(Math.round(Math.max(-1, Math.min(1, sample)) * 32767), i * 2);
  }
  const header = Buffer.alloc(44);
  header.write('RIFF', 0);
  header.writeUInt32LE(36 + data.length, 4);
  header.write('WAVEfmt ', 8);
  header.writeUInt32LE(16, 16);
  header.writeUInt16LE(1, 20); // PCM
  header.writeUInt16LE(1, 22); // mono
  header.writeUInt32LE(RATE, 24);
  header.writeUInt32LE(RATE * 2, 28);
  header.writeUInt16LE(2, 32);
  header.writeUInt16LE(16, 34);
  header.write('data', 36);
  header.writeUInt32LE(data.length, 40);
  const file = path.join(dir, `${name}.wav`);
  await writeFile(file, Buffer.concat([header, data]));
  return file;
}

/** Polls `fn` until it returns a truthy value; throws `what` after `ms`. */
export async function waitFor(what, fn, ms = 20_000, every = 250) {
  const end = Date.now() + ms;
  let last;
  while (Date.now() < end) {
    try {
      last = await fn();
      if (last) return last;
    } catch (e) {
      last = e;
    }
    await new Promise((r) => setTimeout(r, every));
  }
  throw new Error(`timed out after ${ms} ms waiting for ${what} (last: ${last instanceof Error ? last.message : JSON.stringify(last)})`);
}

/**
 * Inbound video of a page's session of `kind`, per mid: frames decoded, codec, and what the
 * decoder reports (size, frame rate, freezes, PLIs sent).
 */
export function inboundVideo(page, kind = 'whep') {
  return page.evaluate(async (kind) => {
    const s = window.parley.sessions[kind];
    if (!s) return [];
    const report = await s.pc.getStats();
    const codecs = new Map();
    report.forEach((r) => r.type === 'codec' && codecs.set(r.id, r.mimeType));
    const out = [];
    report.forEach((r) => {
      if (r.type === 'inbound-rtp' && r.kind === 'video') {
        out.push({
          mid: r.mid,
          frames: r.framesDecoded || 0,
          codec: codecs.get(r.codecId) || null,
          width: r.frameWidth || 0,
          height: r.frameHeight || 0,
          fps: r.framesPerSecond || 0,
          freezes: r.freezeCount || 0,
          freezeSecs: r.totalFreezesDuration || 0,
          plis: r.pliCount || 0,
        });
      }
    });
    return out;
  }, kind);
}

/** The average colour of what a <video> shows, or null while it has no frame. */
export function videoColour(page, selector) {
  return page.evaluate((selector) => {
    const video = document.querySelector(selector);
    if (!video || video.readyState < 2 || !video.videoWidth) return null;
    const canvas = document.createElement('canvas');
    canvas.width = 32;
    canvas.height = 24;
    const ctx = canvas.getContext('2d');
    ctx.drawImage(video, 0, 0, 32, 24);
    const px = ctx.getImageData(0, 0, 32, 24).data;
    let r = 0;
    let g = 0;
    let b = 0;
    for (let i = 0; i < px.length; i += 4) {
      r += px[i];
      g += px[i + 1];
      b += px[i + 2];
    }
    const n = px.length / 4;
    return { r: Math.round(r / n), g: Math.round(g / n), b: Math.round(b / n) };
  }, selector);
}

/** Which of red, green, blue dominates a colour (by at least 50 levels), or null. */
export function dominant(c) {
  if (!c) return null;
  const sorted = Object.entries(c).sort((a, b) => b[1] - a[1]);
  return sorted[0][1] - sorted[1][1] >= 50 ? { r: 'red', g: 'green', b: 'blue' }[sorted[0][0]] : null;
}

/** Decodes a PNG in the page and measures it: distinct colours and brightness spread. */
export function measurePng(page, png) {
  return page.evaluate(async (b64) => {
    const img = new Image();
    img.src = `data:image/png;base64,${b64}`;
    await img.decode();
    const canvas = document.createElement('canvas');
    canvas.width = img.width;
    canvas.height = img.height;
    const ctx = canvas.getContext('2d');
    ctx.drawImage(img, 0, 0);
    const px = ctx.getImageData(0, 0, img.width, img.height).data;
    const colours = new Set();
    let sum = 0;
    let sq = 0;
    const n = px.length / 4;
    for (let i = 0; i < px.length; i += 4) {
      colours.add(((px[i] >> 4) << 8) | ((px[i + 1] >> 4) << 4) | (px[i + 2] >> 4));
      const l = 0.299 * px[i] + 0.587 * px[i + 1] + 0.114 * px[i + 2];
      sum += l;
      sq += l * l;
    }
    const mean = sum / n;
    return { width: img.width, height: img.height, colours: colours.size, stddev: Math.round(Math.sqrt(sq / n - mean * mean)) };
  }, png.toString('base64'));
}
