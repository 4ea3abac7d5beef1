// Two people join the same call from two browsers: ann's fake camera is red, bob's is blue;
// ann talks, bob is silent. Each page must decode the other's video (framesDecoded grows, the
// tile is the other's colour, labelled with the other's name) and never its own, and both
// highlight ann as the speaker. Saves a screenshot of ann's page. Each page limits the other's
// video slot to the size of its tile (layer endpoint), and again when ann's window shrinks.
//
//   node tests/browser/call.mjs <base_url> <artifact_dir>

import { mkdir, writeFile } from 'node:fs/promises';
import path from 'node:path';
import { launch, main, watchConsole, colourCamera, voiceMicrophone, waitFor, inboundVideo, videoColour, dominant, measurePng } from './lib.mjs';

const [base, artifacts] = process.argv.slice(2);
const ROOM = 'browser-call';
const people = [
  { name: 'ann', rgb: [210, 40, 40], colour: 'red', speaking: true },
  { name: 'bob', rgb: [40, 70, 220], colour: 'blue', speaking: false },
];

/** The layer requests (POST .../layer bodies) a page sends, in order. */
function recordLayerRequests(page) {
  const requests = [];
  page.on('request', (r) => {
    if (r.method() === 'POST' && r.url().endsWith('/layer')) requests.push(JSON.parse(r.postData() || '{}'));
  });
  return requests;
}

/** A tile's video size on screen in device pixels, as the page should ask for it. */
function tileSize(page, mid) {
  return page.$eval(`#call .tile[data-mid="${mid}"] video`, (v) => {
    const r = v.getBoundingClientRect();
    return { maxWidth: Math.round(r.width * devicePixelRatio), maxHeight: Math.round(r.height * devicePixelRatio) };
  });
}

/** Waits until the last layer request for `mid` asks for the tile's size on screen now. */
async function limitedToTile(page, requests, mid, what) {
  return waitFor(what, async () => {
    const size = await tileSize(page, mid);
    const last = requests.filter((r) => r.mediaId === mid).pop();
    return last && last.maxWidth === size.maxWidth && last.maxHeight === size.maxHeight && size;
  }, 10_000);
}

/** What a call page shows now: its tiles and the frames decoded per slot. */
async function snapshot(page) {
  const tiles = await page.$$eval('#call .tile:not(.own)', (els) =>
    els.map((t) => ({ mid: t.dataset.mid, participant: t.dataset.participant || null, visible: !t.classList.contains('idle') })),
  );
  const inbound = await inboundVideo(page);
  for (const t of tiles) t.frames = (inbound.find((i) => i.mid === t.mid) || { frames: 0 }).frames;
  const speaking = await page.$$eval('#call .tile.speaking', (els) => els.map((e) => e.dataset.participant));
  const message = await page.$eval('#message', (e) => (e.hidden ? '' : e.textContent));
  // What the page hears: the audio energy of every audio slot together.
  const audioEnergy = await page.evaluate(async () => {
    let energy = 0;
    (await window.parley.sessions.whep.pc.getStats()).forEach((r) => {
      if (r.type === 'inbound-rtp' && r.kind === 'audio') energy += r.totalAudioEnergy || 0;
    });
    return energy;
  });
  return { tiles, speaking, message, audioEnergy };
}

main(async () => {
  await mkdir(artifacts, { recursive: true });
  const pages = [];
  for (const p of people) {
    const camera = await colourCamera(artifacts, p.name, p.rgb);
    const microphone = await voiceMicrophone(artifacts, p.name, p.speaking);
    const context = await launch({ camera, microphone });
    const page = context.pages()[0] || (await context.newPage());
    watchConsole(page, p.name);
    p.layerRequests = recordLayerRequests(page);
    await page.goto(`${base}/#/call/${ROOM}?name=${p.name}&slots=4`);
    await page.click('#call [data-role="start"]');
    pages.push({ ...p, page });
  }

  const results = [];
  for (const me of pages) {
    const other = pages.find((p) => p !== me);
    // The other's tile appears, labelled by slot_assigned, and decodes.
    const first = await waitFor(`${me.name} decoding ${other.name}`, async () => {
      const s = await snapshot(me.page);
      if (s.message) throw new Error(`${me.name}'s page says: ${s.message}`);
      const tile = s.tiles.find((t) => t.visible && t.participant === other.name && t.frames > 5);
      return tile && { ...s, tile };
    });
    results.push({ me, other, first });
  }
  // ann talks: both pages highlight her tile (on her own page, her preview).
  const speaker = await waitFor('ann highlighted as the active speaker on both pages', async () => {
    const both = await Promise.all(pages.map(async (p) => (await snapshot(p.page)).speaking));
    return both.every((s) => s.length === 1 && s[0] === 'ann') && 'ann';
  }, 15_000).catch((e) => `not seen: ${e.message}`);
  const room = await (await fetch(`${base}/rooms/${ROOM}`)).json();
  await new Promise((r) => setTimeout(r, 2000));

  const report = [];
  for (const { me, other, first } of results) {
    const later = await snapshot(me.page);
    const tile = later.tiles.find((t) => t.mid === first.tile.mid);
    const seen = await me.page.evaluate(() => window.parley.events.filter((e) => e.type === 'slot_assigned').map((e) => e.participant));
    const colour = await waitFor(`${me.name}'s tile of ${other.name} showing a picture`, () =>
      videoColour(me.page, `#call .tile[data-mid="${first.tile.mid}"] video`),
    );
    const own = await videoColour(me.page, '#call .tile.own video');
    report.push({
      name: me.name,
      other: other.name,
      mid: first.tile.mid,
      label: tile.participant,
      frames_first: first.tile.frames,
      frames_later: tile.frames,
      // Frames on any slot not assigned to the other participant (must be none).
      frames_elsewhere: later.tiles.filter((t) => t.mid !== first.tile.mid).reduce((n, t) => n + t.frames, 0),
      slot_participants_seen: [...new Set(seen)],
      own_slot_events: seen.filter((p) => p === me.name).length,
      visible_tiles: later.tiles.filter((t) => t.visible).map((t) => t.participant),
      colour,
      colour_seen: dominant(colour),
      colour_expected: other.colour,
      own_colour_seen: dominant(own),
      speaking: later.speaking,
      audio_energy: later.audioEnergy,
    });
  }

  const ann = pages[0].page;
  await ann.waitForTimeout(500);
  const file = path.join(artifacts, 'call.png');
  const png = await ann.screenshot({ fullPage: false });
  await writeFile(file, png);
  const screenshot = { path: file, bytes: png.length, ...(await measurePng(ann, png)) };

  // Each page asked for the other's slot at its tile's size; a narrower window asks again.
  const layers = {};
  for (const { me, first } of results) {
    layers[me.name] = { tile: await limitedToTile(me.page, me.layerRequests, first.tile.mid, `${me.name}'s layer request for its tile size`) };
  }
  const annMid = results[0].first.tile.mid;
  await ann.setViewportSize({ width: 760, height: 800 });
  layers.ann.resized = await limitedToTile(ann, pages[0].layerRequests, annMid, "ann's layer request after her window shrank");
  for (const p of pages) layers[p.name].requests = p.layerRequests;

  // Leaving DELETEs both sessions of each page.
  for (const p of pages) await p.page.click('#call [data-role="stop"]');
  const gone = await waitFor('the room to empty after both left', async () => {
    const res = await fetch(`${base}/rooms/${ROOM}`);
    return res.status === 404 ? 'gone' : null;
  }, 5000);

  return { pages: report, layers, speaker, server_active_speaker: room.active_speaker, screenshot, room_after_leave: gone };
});
