// Tokens and errors, as a person meets them on the page:
// - a server that requires tokens: the page asks for the publish token (and again after a
//   wrong one), then for the play token; a second tab watching with the token gets its room
//   events over fetch() streaming (EventSource cannot send Authorization);
// - camera permission denied, an HTTP error with the server's reason (403, room full), and
//   ICE failing (the server advertises a port nothing answers on): each shown in words.
//
//   node tests/browser/errors.mjs <token_base_url> <artifact_dir> <broken_base_url>
// The token server wants "pub-secret" to publish and "play-secret" to play; the broken
// server allows one participant per room and advertises a dead media port.

import path from 'node:path';
import { launch, main, watchConsole, waitFor, inboundVideo } from './lib.mjs';

const [base, artifacts, broken] = process.argv.slice(2);

const text = (page, selector) => page.$eval(selector, (e) => (e.hidden ? '' : e.textContent));
const prompt = async (page) => ((await text(page, '#token')) ? text(page, '#token-why') : '');
const message = (page) => text(page, '#message');

async function answerToken(page, token, expect) {
  const asked = await waitFor(`the token prompt (${expect})`, async () => {
    const t = await prompt(page);
    return t.includes(expect) && t;
  });
  await page.fill('#token-value', token);
  await page.click('#token button[type="submit"]');
  return asked;
}

main(async () => {
  const context = await launch();

  // Against the broken server first, as ICE takes a while to give up: the first publisher is
  // accepted (and will fail ICE), the second gets the server's 403 in words.
  const first = context.pages()[0];
  watchConsole(first, 'first');
  await first.goto(`${broken}/#/publish/browser-errors?participant=first&loopback=0`);
  await first.click('#publish [data-role="start"]');
  const iceStarted = Date.now();
  await waitFor('the first publisher to be accepted', async () => (await first.$eval('#publish .share', (e) => !e.hidden)) || (await message(first)));
  // The page asked the endpoint for its ICE servers (Link rel="ice-server" on OPTIONS).
  const iceServers = await first.evaluate(() => window.parley.sessions.whip?.pc.getConfiguration().iceServers);
  const second = await context.newPage();
  watchConsole(second, 'second');
  await second.goto(`${broken}/#/publish/browser-errors?participant=second&loopback=0`);
  await second.click('#publish [data-role="start"]');
  const fullMessage = await waitFor('the 403 message', () => message(second));
  await second.screenshot({ path: path.join(artifacts, 'error.png') });
  const startShownAgain = await second.$eval('#publish [data-role="start"]', (e) => !e.hidden);
  await second.close();

  // Publish with loopback: the publish token, a wrong one first, then the play token.
  const page = await context.newPage();
  watchConsole(page, 'token');
  await page.goto(`${base}/#/publish/browser-token?participant=tok`);
  await page.click('#publish [data-role="start"]');
  await waitFor('the token prompt', () => prompt(page));
  await page.screenshot({ path: path.join(artifacts, 'token.png') });
  const asked = await answerToken(page, 'wrong', 'Publishing on this server needs a token');
  const rejected = await answerToken(page, 'pub-secret', 'did not accept the token for publishing');
  // The page tries the publish token for playing first; this server has another one.
  const play = await answerToken(page, 'play-secret', 'did not accept the token for playing');
  const back = await waitFor('the loopback to decode with the tokens', async () => {
    const m = await message(page);
    if (m) throw new Error(m);
    const [v] = await inboundVideo(page, 'whep');
    return v && v.frames > 5 && v;
  });

  // A new tab has no token yet: watching asks for it, and the room events use it.
  const tab = await context.newPage();
  watchConsole(tab, 'watch');
  await tab.goto(`${base}/#/watch/browser-token/tok`);
  const watchAsked = await answerToken(tab, 'play-secret', 'Playing on this server needs a token');
  const caption = await waitFor('the room events over fetch() with the token', async () => {
    const c = await text(tab, '#watch [data-role="caption"]');
    return c.startsWith('Playing tok') && c;
  });
  await tab.close();
  await page.click('#publish [data-role="stop"]');

  // Camera permission denied (no auto-accepting prompt).
  const denying = await launch({ accept: false });
  const denied = denying.pages()[0];
  watchConsole(denied, 'denied');
  await denied.goto(`${base}/#/publish/browser-denied`);
  await denied.click('#publish [data-role="start"]');
  const deniedMessage = await waitFor('the camera-denied message', () => message(denied));

  // ICE cannot succeed against the dead port: the first page says so and offers Start again.
  const iceMessage = await waitFor('the ICE failure message', () => message(first), 60_000, 500);
  const iceSeconds = (Date.now() - iceStarted) / 1000;
  const iceStartShownAgain = await first.$eval('#publish [data-role="start"]', (e) => !e.hidden);

  return {
    token: {
      asked,
      rejected,
      play,
      loopback_frames: back.frames,
      watch_asked: watchAsked,
      watch_caption: caption,
    },
    denied: deniedMessage,
    full: fullMessage,
    start_shown_again: startShownAgain,
    ice: iceMessage,
    ice_seconds: iceSeconds,
    ice_start_shown_again: iceStartShownAgain,
    ice_servers: iceServers,
  };
}, 140_000);
