// A publish page and a watch page, run where the test puts them (a network namespace whose
// firewall drops UDP, or lets out only a TURN server's TCP port). Reports, for each page, the
// protocol and type of the selected candidate pair's local candidate, and what the watch page
// decoded.
//
//   ip netns exec NS node tests/browser/tcp.mjs <base_url> <artifact_dir>

import { launch, main, watchConsole, colourCamera, waitFor, inboundVideo, videoColour, dominant } from './lib.mjs';

const [base, artifacts] = process.argv.slice(2);
const ROOM = 'browser-tcp';
const NAME = 'cam';

async function pageMessage(page) {
  return page.$eval('#message', (e) => (e.hidden ? '' : e.textContent));
}

/// The selected pair's local candidate of a page's session: its protocol ('udp' or 'tcp')
/// and type ('host', 'prflx', 'relay', ...).
function selectedLocal(page, kind) {
  return page.evaluate(async (kind) => {
    const report = await window.parley.sessions[kind].pc.getStats();
    let pair = null;
    report.forEach((r) => {
      if (r.type === 'transport' && r.selectedCandidatePairId) pair = report.get(r.selectedCandidatePairId);
    });
    if (!pair) report.forEach((r) => r.type === 'candidate-pair' && r.nominated && r.state === 'succeeded' && (pair = r));
    const local = pair && report.get(pair.localCandidateId);
    return local ? { protocol: local.protocol, candidate: local.candidateType, relay_protocol: local.relayProtocol || null } : null;
  }, kind);
}

main(async () => {
  const camera = await colourCamera(artifacts, 'green', [40, 200, 60]);
  const publisher = (await launch({ camera, secure: base })).pages()[0];
  watchConsole(publisher, 'publish');
  await publisher.goto(`${base}/#/publish/${ROOM}?participant=${NAME}&codec=VP8&loopback=0`);
  await publisher.click('#publish [data-role="start"]');
  const published = await waitFor('the publish page to connect', async () => {
    const message = await pageMessage(publisher);
    if (message) throw new Error(message);
    return selectedLocal(publisher, 'whip');
  }, 40_000);

  const viewer = (await launch({ devices: false })).pages()[0];
  watchConsole(viewer, 'watch');
  await viewer.goto(`${base}/#/watch/${ROOM}/${NAME}`);
  const first = await waitFor('the watch page decoding', async () => {
    const message = await pageMessage(viewer);
    if (message) throw new Error(message);
    const [v] = await inboundVideo(viewer, 'whep');
    return v && v.frames > 5 && v;
  }, 40_000);
  await viewer.waitForTimeout(2000);
  const [later] = await inboundVideo(viewer, 'whep');
  const watched = await selectedLocal(viewer, 'whep');
  const colour = await videoColour(viewer, '#watch video');
  return {
    publish: published,
    watch: {
      ...watched,
      frames_first: first.frames,
      frames_later: later.frames,
      colour_seen: dominant(colour),
    },
  };
});
