// A publish page (green fake camera) and a separate watch page in another browser that never
// calls getUserMedia, so its offer carries only mDNS (.local) candidates and the server must
// learn its address from the first binding request (peer-reflexive).
// First, the publish page sends each codec the browser offers and plays itself back through
// the server: what comes back must be that codec, at the camera's size (320×240 is too small
// for simulcast, so the page sends one full-size stream).
//
//   node tests/browser/watch.mjs <base_url> <artifact_dir>

import path from 'node:path';
import { launch, main, watchConsole, colourCamera, waitFor, inboundVideo, videoColour, dominant } from './lib.mjs';

const [base, artifacts] = process.argv.slice(2);
const ROOM = 'browser-watch';
const NAME = 'cam';

async function rooms() {
  const res = await fetch(`${base}/rooms`);
  return (await res.json()).rooms.find((r) => r.name === ROOM) || null;
}

async function pageMessage(page) {
  return page.$eval('#message', (e) => (e.hidden ? '' : e.textContent));
}

main(async () => {
  const camera = await colourCamera(artifacts, 'green', [40, 200, 60]);
  const publisher = (await launch({ camera })).pages()[0];
  watchConsole(publisher, 'publish');

  await publisher.goto(`${base}/`);
  const home = await publisher.$$eval('.card h2', (hs) => hs.map((h) => h.textContent));
  await publisher.screenshot({ path: path.join(artifacts, 'home.png') });

  // Every codec of the form, published and played back through the server.
  await publisher.goto(`${base}/#/publish/${ROOM}`);
  const codecs = await publisher.$$eval('#publish select[name="codec"] option', (os) => os.map((o) => o.value).filter((v) => v !== 'auto'));
  const loopback = [];
  for (const codec of codecs) {
    await publisher.goto(`${base}/#/publish/${ROOM}?participant=${NAME}&codec=${codec}`);
    await publisher.click('#publish [data-role="start"]');
    const back = await waitFor(`${codec} played back through the server`, async () => {
      const message = await pageMessage(publisher);
      if (message) throw new Error(message);
      const [v] = await inboundVideo(publisher, 'whep');
      return v && v.frames > 5 && v;
    });
    const [sent] = await publisher.evaluate(async () => {
      const report = await window.parley.sessions.whip.pc.getStats();
      const codecs = new Map();
      report.forEach((r) => r.type === 'codec' && codecs.set(r.id, r.mimeType));
      const out = [];
      report.forEach((r) => r.type === 'outbound-rtp' && r.kind === 'video' && out.push(codecs.get(r.codecId)));
      return out;
    });
    loopback.push({ codec, sent, received: back.codec, frames: back.frames, width: back.width });
    await publisher.click('#publish [data-role="stop"]');
  }

  await publisher.goto(`${base}/#/publish/${ROOM}?participant=${NAME}&codec=VP8`);
  await publisher.click('#publish [data-role="start"]');
  await waitFor('the loopback player', async () => (await inboundVideo(publisher, 'whep'))[0]?.frames > 30, 20_000);
  await publisher.waitForTimeout(1500);
  await publisher.screenshot({ path: path.join(artifacts, 'publish.png') });

  // Publish without the loopback player, then watch from a browser with no media at all.
  await publisher.goto(`${base}/#/publish/${ROOM}?participant=${NAME}&codec=VP8&loopback=0`);
  await publisher.click('#publish [data-role="start"]');
  await waitFor('the publisher to connect', async () => (await rooms())?.publishers === 1);

  const viewerBrowser = await launch({ devices: false });
  const viewer = viewerBrowser.pages()[0];
  watchConsole(viewer, 'watch');
  // A shared watch link plays at once.
  await viewer.goto(`${base}/#/watch/${ROOM}/${NAME}`);
  const first = await waitFor('the watch page decoding', async () => {
    const message = await pageMessage(viewer);
    if (message) throw new Error(message);
    const [v] = await inboundVideo(viewer, 'whep');
    return v && v.frames > 5 && v;
  });
  const offer = await viewer.evaluate(() => window.parley.sessions.whep.pc.localDescription.sdp);
  const candidates = offer.split(/\r?\n/).filter((l) => l.startsWith('a=candidate:'));
  await viewer.waitForTimeout(2000);
  const [later] = await inboundVideo(viewer, 'whep');
  const caption = await viewer.$eval('#watch [data-role="caption"]', (e) => e.textContent);
  const colour = await videoColour(viewer, '#watch video');
  await viewer.screenshot({ path: path.join(artifacts, 'watch.png') });
  await viewer.click('#watch [data-role="unmute"]');
  const unmuted = await viewer.$eval('#watch video', (v) => !v.muted);

  // Closing the tab DELETEs the session (fetch keepalive on pagehide).
  await viewer.close();
  const viewerGone = await waitFor('the closed watch page to be DELETEd', async () => (await rooms())?.viewers === 0, 5000);
  await publisher.click('#publish [data-role="stop"]');
  const roomGone = await waitFor('the room to end after Stop', async () => (await rooms()) === null, 5000);

  return {
    home,
    loopback,
    watch: {
      frames_first: first.frames,
      frames_later: later.frames,
      codec: later.codec,
      caption,
      colour_seen: dominant(colour),
      unmuted,
      candidates: candidates.length,
      mdns_only: candidates.length > 0 && candidates.every((c) => c.split(' ')[4].endsWith('.local')),
    },
    deleted_on_close: viewerGone === true,
    room_gone_after_stop: roomGone === true,
  };
});
