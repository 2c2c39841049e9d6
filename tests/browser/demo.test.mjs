// The demo page (templates/index.html) in a real Chromium, against the real hub binary.
//
//   cd tests/browser && npm ci && npm test
//
// Env: WXHUB_BIN and CHROMIUM_BIN (helpers.mjs), WXHUB_PAGE (optional: a file served at /
// instead of the page compiled into the hub, to try a page edit, or a broken copy, without
// a rebuild).
// Screenshots go to <repo>/target/browser-screenshots/.
//
// Every wait is for a DOM state or a process event, with a timeout; nothing sleeps.

import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { createHmac } from 'node:crypto';
import { mkdirSync, readdirSync, readFileSync, rmSync } from 'node:fs';
import path from 'node:path';

import {
  DESKTOP, PHONE, SHOTS, WAIT, HubProcess, delivery, freePort, join, launchChromium, nextEvent,
  nextEvents, received, send, shot, subscribe, waitState, waitUsers, watchEvents,
} from './helpers.mjs';

const PAGE_FILE = process.env.WXHUB_PAGE ? path.resolve(process.env.WXHUB_PAGE) : null;
const RED = 'rgb(217, 54, 62)';   // --up by default (#d9363e)
const GREEN = 'rgb(20, 150, 75)'; // --down by default (#14964b)

let hub;
let authHub; // started by the scenario that needs it
let browser;
const pageErrors = [];

before(async () => {
  mkdirSync(SHOTS, { recursive: true });
  // Pictures of an earlier run's failures would only mislead.
  for (const file of readdirSync(SHOTS)) if (file.startsWith('FAILED-')) rmSync(path.join(SHOTS, file));
  hub = new HubProcess(await freePort());
  // Whatever happens to this process, the hub does not outlive it.
  process.on('exit', () => {
    hub.child?.kill('SIGKILL');
    authHub?.child?.kill('SIGKILL');
  });
  await hub.start();
  // A page served by the test (WXHUB_PAGE) counts as public: let it reach the local hub.
  browser = await launchChromium(PAGE_FILE ? ['--disable-features=LocalNetworkAccessChecks'] : []);
});

after(async () => {
  await browser?.close();
  await hub?.kill();
  await authHub?.kill();
});

/**
 * Opens the demo in a fresh browser context (its own storage and network state).
 * `setup(context)` runs before the page loads (e.g. to route its WebSocket).
 */
async function openDemo(label, viewport = DESKTOP, query = '', server = hub, setup = null) {
  const context = await browser.newContext({ viewport, deviceScaleFactor: 1 });
  if (PAGE_FILE) {
    await context.route((url) => url.pathname === '/', (route) =>
      route.fulfill({ contentType: 'text/html; charset=utf-8', body: readFileSync(PAGE_FILE) }));
  }
  if (setup) await setup(context);
  const page = await context.newPage();
  page.label = label;
  page.on('pageerror', (err) => pageErrors.push(`${label}: ${err.stack || err.message}`));
  // Console errors are expected while a hub is down ("WebSocket connection failed"), so
  // only the scenario that says "no error" asserts on them.
  page.consoleErrors = [];
  page.on('console', (msg) => {
    if (msg.type() === 'error') page.consoleErrors.push(`${msg.text()} (${msg.location().url || 'no url'})`);
  });
  watchEvents(page);
  await page.goto(server.httpUrl + query);
  await waitState(page, 'open');
  return page;
}

/** An HS256 join token, as an application's server would sign it (see src/auth.rs). */
function joinToken(secret, name, ttlSeconds = 600) {
  const part = (obj) => Buffer.from(JSON.stringify(obj)).toString('base64url');
  const body = `${part({ alg: 'HS256', typ: 'JWT' })}.${part({ sub: name, exp: Math.floor(Date.now() / 1000) + ttlSeconds })}`;
  return `${body}.${createHmac('sha256', secret).update(body).digest('base64url')}`;
}

const chart = (page) => page.$eval('#chart', (c) => ({
  points: Number(c.dataset.points),
  firstTs: Number(c.dataset.firstTs),
  lastTs: Number(c.dataset.lastTs),
  pixels: c.toDataURL(),
}));

/** Runs a scenario; on failure, saves what each page showed and prints the hub's log. */
function scenario(name, fn) {
  test(name, { timeout: 60_000 }, async () => {
    const pages = [];
    const track = (page) => (pages.push(page), page);
    // A scenario that failed while the hub was down must not fail the ones after it.
    if (hub.child.exitCode !== null || hub.child.signalCode !== null) await hub.start();
    try {
      await fn(track);
      assert.deepEqual(pageErrors, [], 'uncaught errors in the page');
    } catch (err) {
      for (const page of pages) {
        if (!page.isClosed()) await shot(page, `FAILED-${page.label}`).catch(() => {});
      }
      console.error(`--- hub log (last 3000 chars) ---\n${hub.log.slice(-3000)}`);
      throw err;
    } finally {
      for (const page of pages) await page.context().close().catch(() => {});
    }
  });
}

/* ------------------------------------------------------------------------------------
 * Scenarios
 * ---------------------------------------------------------------------------------- */

scenario('two users chat: direct, group and broadcast messages, online list follows joins and leaves', async (track) => {
  const alice = track(await openDemo('alice'));
  const bob = track(await openDemo('bob'));
  await join(alice, 'alice');
  await join(bob, 'bob');
  await waitUsers(alice, ['alice', 'bob']); // via alice's presence event for bob
  await waitUsers(bob, ['alice', 'bob']);
  const refreshed = nextEvent(alice, (ev) => ev.type === 'users');
  await alice.click('#refresh-users');
  assert.deepEqual((await refreshed).users, ['alice', 'bob']);

  // Direct: alice picks bob from her online list.
  await alice.click('#users li[data-user="bob"] button');
  assert.equal(await alice.inputValue('#send-mode'), 'direct');
  assert.equal(await alice.inputValue('#send-to'), 'bob');
  await alice.fill('#send-text', 'hello bob');
  await alice.click('#send-btn');
  await received(bob, 'direct', 'alice', 'hello bob').waitFor({ timeout: WAIT });
  await delivery(alice, 'hello bob').filter({ hasText: 'delivered to 1' }).waitFor({ timeout: WAIT });

  // Group: bob subscribes room1; alice (not a member) publishes to it.
  await bob.fill('#group-input', 'room1');
  await bob.click('#subscribe-btn');
  await bob.waitForSelector('#groups li[data-group="room1"][data-state="subscribed"]', { timeout: WAIT });
  await send(alice, 'group', 'room1', 'hi room1');
  const groupMessage = received(bob, 'group', 'alice', 'hi room1');
  await groupMessage.waitFor({ timeout: WAIT });
  assert.equal(await groupMessage.locator('.tag').textContent(), '#room1');

  // Broadcast: alice gets it; bob's own copy (the hub echoes it) is shown once, not twice.
  await send(bob, 'broadcast', '', 'hello everyone');
  await received(alice, 'broadcast', 'bob', 'hello everyone').waitFor({ timeout: WAIT });
  await delivery(bob, 'hello everyone').filter({ hasText: 'delivered to 1' }).waitFor({ timeout: WAIT });
  assert.equal(await bob.locator('#log li', { hasText: 'hello everyone' }).count(), 1);

  // A refused message says why in plain words, on the message itself, and keeps its text
  // with a Retry (which sends it again, with the same mid).
  await send(alice, 'direct', 'nobody', 'anyone there?');
  await delivery(alice, 'anyone there?').filter({ hasText: 'nobody is not online' }).waitFor({ timeout: WAIT });
  const refused = alice.locator('#log li[data-dir="out"][data-status="failed"]', { hasText: 'anyone there?' });
  await refused.getByRole('button', { name: 'Retry' }).waitFor({ timeout: WAIT });
  const firstTry = alice.sent.find((c) => c.type === 'direct' && c.to === 'nobody');
  const retried = nextEvent(alice, (ev) => ev.type === 'error' && ev.code === 'not_found');
  await refused.getByRole('button', { name: 'Retry' }).click();
  await retried;
  const tries = alice.sent.filter((c) => c.type === 'direct' && c.to === 'nobody');
  assert.equal(tries.length, 2);
  assert.equal(tries[1].mid, firstTry.mid, 'a retry keeps the mid');
  await delivery(alice, 'anyone there?').filter({ hasText: 'nobody is not online' }).waitFor({ timeout: WAIT });
  await send(alice, 'group', 'stock', 'buy!');
  await delivery(alice, 'buy!').filter({ hasText: 'stock groups are read-only' }).waitFor({ timeout: WAIT });
  assert.equal(await alice.locator('#log li[data-kind="error"]').count(), 0, 'no separate error line for a message');

  await shot(alice, 'chat-alice-desktop');
  await shot(bob, 'chat-bob-desktop');

  // bob closes his page: alice's list drops him (presence leave, then a users refresh).
  await bob.context().close();
  await waitUsers(alice, ['alice']);
  await alice.locator('#log li[data-kind="system"]', { hasText: 'bob left' }).waitFor({ timeout: WAIT });
});

scenario('the stock chart fills from history, then moves with live quotes', async (track) => {
  // A short heartbeat, to see it at work: the page pings and shows the round trip.
  const page = track(await openDemo('stock-phone', PHONE, '?ping=300'));

  // The `stock` snapshot fills the picker and charts its first symbol.
  await page.waitForFunction(() => document.querySelectorAll('#symbol option').length === 6, null, { timeout: WAIT });
  const symbols = await page.$$eval('#symbol option', (os) => os.map((o) => o.value));
  assert.deepEqual(symbols, ['600519', '000001', '300750', '601318', '000858', '002594']);
  assert.equal(await page.textContent('#stock-code'), '600519');
  // A few ticks, so that every symbol has some history.
  await page.waitForFunction(() => Number(document.querySelector('#chart').dataset.points) >= 4, null, { timeout: WAIT });

  // Pick another symbol: the chart starts from the hub's history, not from an empty line.
  const historyReply = nextEvent(page, (ev) => ev.type === 'history' && ev.symbol === '300750');
  await page.selectOption('#symbol', '300750');
  const history = await historyReply;
  assert.ok(history.quotes.length >= 4, `history of ${history.quotes.length} quotes`);
  await page.waitForFunction((ts) => Number(document.querySelector('#chart').dataset.firstTs) === ts,
    history.quotes[0].ts, { timeout: WAIT });
  assert.equal(await page.textContent('#stock-code'), '300750');
  assert.equal(await page.textContent('#stock-name'), '宁德时代');

  // Live quotes: the canvas pixels change, and so does the price text.
  const before = await chart(page);
  const priceBefore = await page.textContent('#price');
  await page.waitForFunction((n) => Number(document.querySelector('#chart').dataset.points) >= n + 2,
    before.points, { timeout: WAIT });
  await page.waitForFunction((url) => document.querySelector('#chart').toDataURL() !== url, before.pixels, { timeout: WAIT });
  await page.waitForFunction((p) => document.querySelector('#price').textContent !== p, priceBefore, { timeout: WAIT });
  const afterQuotes = await chart(page);
  assert.ok(afterQuotes.lastTs > before.lastTs);
  assert.match(await page.textContent('#price'), /^\d+\.\d{2}$/);

  // Colours: red up / green down by default, swapped by the toggle.
  await page.waitForFunction(() => document.querySelector('#quote').dataset.dir !== 'flat', null, { timeout: WAIT });
  const look = () => page.evaluate(() => ({
    dir: document.querySelector('#quote').dataset.dir,
    change: document.querySelector('#change').textContent,
    colour: getComputedStyle(document.querySelector('#price')).color,
  }));
  let now = await look();
  assert.equal(now.change.startsWith('+'), now.dir === 'up', `${now.change} shown as ${now.dir}`);
  assert.equal(now.colour, now.dir === 'up' ? RED : GREEN);
  await page.check('#color-swap');
  now = await look();
  assert.equal(now.colour, now.dir === 'up' ? GREEN : RED);
  await page.uncheck('#color-swap');

  await page.waitForFunction(() => /^ping \d+ ms$/.test(document.querySelector('#status-detail').textContent),
    null, { timeout: WAIT });
  assert.ok(page.sent.some((command) => command.type === 'ping'));

  await join(page, '张三');
  await shot(page, 'stock-phone');
});

scenario('the page reconnects after a hub restart and delivers what was typed meanwhile', async (track) => {
  const carol = track(await openDemo('carol'));
  const dave = track(await openDemo('dave'));
  await join(carol, 'carol');
  await join(dave, 'dave');
  await dave.fill('#group-input', 'ops');
  await dave.click('#subscribe-btn');
  await dave.waitForSelector('#groups li[data-group="ops"][data-state="subscribed"]', { timeout: WAIT });
  await waitUsers(carol, ['carol', 'dave']);
  await waitUsers(dave, ['carol', 'dave']);

  await carol.waitForSelector('#stale', { state: 'hidden', timeout: WAIT });
  await hub.kill();
  await waitState(carol, 'reconnecting');
  await waitState(dave, 'reconnecting');
  // The close in words, not as a code.
  await carol.locator('#log li[data-kind="system"]', { hasText: 'Disconnected: connection lost; reconnecting' }).waitFor({ timeout: WAIT });
  assert.equal(await carol.locator('#log li', { hasText: /code \d/ }).count(), 0);
  // The market panel keeps the last prices, greyed and marked stale.
  await carol.waitForSelector('#stale', { state: 'visible', timeout: WAIT });
  assert.equal(await carol.getAttribute('#stock-panel', 'class'), 'card stale');
  // The wait before the next try counts down, second by second. (A wait of 2 s or more
  // comes by the third try: 2-4 s.)
  const shown = await carol.waitForFunction(() => {
    const m = /^in (\d+) s…$/.exec(document.querySelector('#status-detail').textContent);
    return m && Number(m[1]) >= 2 && Number(m[1]);
  }, null, { timeout: WAIT });
  const seconds = await shown.jsonValue();
  await carol.waitForFunction((s) => document.querySelector('#status-detail').textContent === `in ${s - 1} s…`,
    seconds, { timeout: WAIT });

  // carol is held offline until dave is back: the hub stores nothing for absent users, so
  // her queued message needs dave online when it goes out.
  await carol.context().setOffline(true);
  await send(carol, 'direct', 'dave', 'typed while the hub was down');
  await delivery(carol, 'typed while the hub was down').filter({ hasText: 'queued' }).waitFor({ timeout: WAIT });
  assert.equal(await carol.textContent('#queue-count'), '1 queued');
  await shot(carol, 'reconnect-carol-offline-desktop');

  const restartedAt = Date.now();
  await hub.start(); // same port
  // dave reconnects by himself, re-joins, re-subscribes his group and the stock feed.
  await waitState(dave, 'open');
  await waitUsers(dave, ['dave']);
  await dave.waitForSelector('#groups li[data-group="ops"][data-state="subscribed"]', { timeout: WAIT });
  // Both stock groups were re-subscribed: `stock` ticks arrive, and the chart grows past
  // the history it reloaded on reconnecting (which holds only the new hub's first quotes).
  await nextEvent(dave, (ev) => ev.type === 'tick' && ev.ts > restartedAt);
  await dave.waitForFunction((t) => Number(document.querySelector('#chart').dataset.lastTs) > t,
    restartedAt, { timeout: WAIT });
  const reloaded = await chart(dave);
  await dave.waitForFunction((t) => Number(document.querySelector('#chart').dataset.lastTs) > t,
    reloaded.lastTs, { timeout: WAIT });
  await dave.locator('#log li[data-kind="system"]', { hasText: 'Rejoined as dave' }).waitFor({ timeout: WAIT });

  await carol.context().setOffline(false);
  await waitState(carol, 'open');
  await received(dave, 'direct', 'carol', 'typed while the hub was down').waitFor({ timeout: WAIT });
  await delivery(carol, 'typed while the hub was down').filter({ hasText: 'delivered to 1' }).waitFor({ timeout: WAIT });
  assert.equal(await carol.textContent('#queue-count'), '');
  await carol.waitForSelector('#stale', { state: 'hidden', timeout: WAIT });
  await waitUsers(dave, ['carol', 'dave']);
  await waitUsers(carol, ['carol', 'dave']);

  await shot(carol, 'reconnect-carol-desktop');
  await shot(dave, 'reconnect-dave-desktop');
});

scenario('on a hub that requires join tokens, the page sends the token and explains a refusal', async (track) => {
  const secret = 'browser-test-secret';
  authHub = new HubProcess(await freePort(), { WXHUB_AUTH_SECRET: secret });
  await authHub.start();
  const page = track(await openDemo('token', DESKTOP, '', authHub));

  // No token: refused in plain words, and the form is usable again.
  await page.fill('#name-input', 'erin');
  await page.click('#join-btn');
  await page.locator('#log li[data-kind="error"]', { hasText: 'Could not join: this hub requires a token' }).waitFor({ timeout: WAIT });
  await page.waitForSelector('#join-btn:not([disabled])', { timeout: WAIT });

  // A token signed for another name is refused too; the right one is accepted.
  await page.fill('#token-input', joinToken(secret, 'frank'));
  await page.click('#join-btn');
  await page.locator('#log li[data-kind="error"]', { hasText: 'another name' }).waitFor({ timeout: WAIT });
  await page.fill('#token-input', joinToken(secret, 'erin'));
  await page.click('#join-btn');
  await page.waitForSelector('#me:not([hidden])', { timeout: WAIT });
  await waitUsers(page, ['erin']);
  assert.ok(page.sent.some((c) => c.type === 'join' && c.name === 'erin' && c.token));
  await shot(page, 'token-desktop');

  // Three bad tokens on one connection: the hub closes it with 4500 ("do not
  // reconnect"), and the page stays down instead of reconnecting into the same refusal.
  const bad = track(await openDemo('token-bad', DESKTOP, '', authHub));
  for (let i = 0; i < 3; i += 1) {
    await bad.fill('#name-input', 'gus');
    await bad.fill('#token-input', joinToken(secret, 'someone-else'));
    await bad.click('#join-btn');
    await bad.waitForSelector('#join-btn:not([disabled])', { timeout: WAIT });
  }
  await waitState(bad, 'closed');
  await bad.locator('#log li', { hasText: 'Disconnected: bad token; not reconnecting' }).waitFor({ timeout: WAIT });
  assert.equal(await bad.getAttribute('#status', 'data-state'), 'closed');
  assert.equal(await bad.textContent('#status-detail'), 'bad token (will not reconnect)');
});

scenario('a room message with no other member shows delivered to 0; sending before joining says join first', async (track) => {
  const page = track(await openDemo('solo'));

  // Before joining: a plain "join first", nothing sent, and the typed text kept.
  await send(page, 'broadcast', '', 'too early');
  await page.locator('#log li[data-kind="error"]', { hasText: 'Join first' }).waitFor({ timeout: WAIT });
  assert.equal(await page.inputValue('#send-text'), 'too early');
  assert.ok(!page.sent.some((c) => c.type === 'broadcast'), 'nothing sent before the join');

  await join(page, 'solo');
  await page.fill('#group-input', 'quiet');
  await page.click('#subscribe-btn');
  await page.waitForSelector('#groups li[data-group="quiet"][data-state="subscribed"]', { timeout: WAIT });
  // The hub sends the page its own copy (it is a member) but counts only other sessions.
  const ownCopy = nextEvent(page, (ev) => ev.type === 'message' && ev.body?.text === 'anyone here?');
  await send(page, 'group', 'quiet', 'anyone here?');
  await ownCopy;
  await delivery(page, 'anyone here?').filter({ hasText: 'delivered to 0' }).waitFor({ timeout: WAIT });
  // The copy is not shown a second time as an incoming message.
  assert.equal(await page.locator('#log li', { hasText: 'anyone here?' }).count(), 1);
  await shot(page, 'delivered-to-0-desktop');
});

scenario('two pages on one hub see no console error at all', async (track) => {
  // Both pages load, connect, join, subscribe, chat and use the market panel; neither
  // may log an error (a missing favicon shows up here as a 404).
  const ann = track(await openDemo('ann'));
  const ben = track(await openDemo('ben', PHONE));
  await join(ann, 'ann');
  await join(ben, 'ben');
  await waitUsers(ann, ['ann', 'ben']);
  await ben.fill('#group-input', 'room7');
  await ben.click('#subscribe-btn');
  await ben.waitForSelector('#groups li[data-group="room7"][data-state="subscribed"]', { timeout: WAIT });
  await send(ann, 'direct', 'ben', 'psst');
  await send(ann, 'group', 'room7', 'to room7');
  await send(ben, 'broadcast', '', 'to all');
  await received(ben, 'direct', 'ann', 'psst').waitFor({ timeout: WAIT });
  await received(ben, 'group', 'ann', 'to room7').waitFor({ timeout: WAIT });
  await received(ann, 'broadcast', 'ben', 'to all').waitFor({ timeout: WAIT });
  await delivery(ben, 'to all').filter({ hasText: 'delivered to 1' }).waitFor({ timeout: WAIT });

  for (const page of [ann, ben]) {
    await page.waitForFunction(() => document.querySelectorAll('#watchlist tbody tr').length === 6, null, { timeout: WAIT });
    const history = nextEvent(page, (ev) => ev.type === 'history' && ev.symbol === '000858');
    await page.click('#watchlist tr[data-symbol="000858"]');
    await history;
    await page.waitForFunction(() => Number(document.querySelector('#chart').dataset.points) >= 2, null, { timeout: WAIT });
  }
  assert.deepEqual(ann.consoleErrors, [], 'console errors in ann\'s page');
  assert.deepEqual(ben.consoleErrors, [], 'console errors in ben\'s page');
});

scenario('a socket that dies before the ack: the message stays pending, goes again, is delivered once', async (track) => {
  // eve's WebSocket runs through a route this test controls: it can make the socket
  // half-dead (what eve sends reaches the hub, nothing comes back, like a phone that
  // changed networks) and then close it, while the hub stays up.
  const links = [];
  const route = (context) => context.routeWebSocket(/\/ws$/, (ws) => {
    const server = ws.connectToServer();
    const link = { ws, server, dead: false, sent: [] };
    links.push(link);
    ws.onMessage((text) => {
      link.sent.push(JSON.parse(text));
      server.send(text);
    });
    server.onMessage((text) => { if (!link.dead) ws.send(text); });
  });
  const eve = track(await openDemo('eve', DESKTOP, '', hub, route));
  const bob = track(await openDemo('bob2'));
  await join(eve, 'eve');
  await join(bob, 'bob2');
  await waitUsers(eve, ['bob2', 'eve']);

  const text = 'through a dying socket';
  const copies = nextEvents(bob, (ev) => ev.type === 'message' && ev.body?.text === text, 2);
  const first = links[links.length - 1];
  first.dead = true;
  await send(eve, 'direct', 'bob2', text);
  // The hub got it (bob has it), but eve hears nothing: pending.
  await received(bob, 'direct', 'eve', text).waitFor({ timeout: WAIT });
  assert.equal(await delivery(eve, text).getAttribute('data-status'), 'pending');
  assert.equal(await delivery(eve, text).textContent(), 'sending…');

  // The socket dies. The library reconnects, joins again and sends the message again with
  // the same id and mid; the hub delivers it to bob a second time, and bob's library
  // drops the repeat.
  await first.ws.close({ code: 1001, reason: 'test' });
  await first.server.close();
  await delivery(eve, text).filter({ hasText: 'delivered to 1' }).waitFor({ timeout: WAIT });
  const sentFirst = first.sent.find((c) => c.type === 'direct');
  const sentAgain = links[links.length - 1].sent.find((c) => c.type === 'direct');
  assert.notEqual(links[links.length - 1], first, 'a new connection');
  assert.equal(sentAgain.mid, sentFirst.mid, 'sent again with the same mid');
  const [one, two] = await copies;
  assert.equal(two.mid, one.mid);
  // Frames are handled in order: once a later message shows, the repeat was handled too.
  await send(eve, 'direct', 'bob2', 'and after');
  await received(bob, 'direct', 'eve', 'and after').waitFor({ timeout: WAIT });
  assert.equal(await received(bob, 'direct', 'eve', text).count(), 1, 'shown once');
  assert.equal(await eve.locator('#log li', { hasText: text }).count(), 1);
  await shot(eve, 'resent-eve-desktop');
});

/* ------------------------------------------------------------------------------------
 * History and recovery (#19): what a page missed while away, and a room's recent messages
 * ---------------------------------------------------------------------------------- */

/**
 * Routes a page's WebSocket through links the test holds. `cut(link)` ends the hub's side
 * only: the hub drops the session (the user is away) while the page, hearing nothing,
 * still believes itself connected. `link.ws.close()` then tells the page, which reconnects
 * through a new link. `hold(match)` keeps the page's commands that match from the hub
 * until `release()`; the others go on.
 */
function relay() {
  const links = [];
  const held = [];
  let holding = null;
  let onHeld = null;
  const setup = (context) => context.routeWebSocket(/\/ws$/, (ws) => {
    const server = ws.connectToServer();
    const link = { ws, server, dead: false, sent: [], received: [] };
    links.push(link);
    ws.onMessage((text) => {
      const command = JSON.parse(text);
      link.sent.push(command);
      if (holding && holding(command)) {
        held.push(() => server.send(text));
        onHeld?.(command);
      }
      else if (!link.dead) server.send(text);
    });
    server.onMessage((text) => {
      link.received.push(JSON.parse(text));
      if (!link.dead) ws.send(text);
    });
    // A close is passed on only while the link is alive: a cut stays silent to the page.
    ws.onClose((code, reason) => { server.close({ code, reason }).catch(() => {}); });
    server.onClose((code, reason) => { if (!link.dead) ws.close({ code, reason }).catch(() => {}); });
  });
  const last = () => links[links.length - 1];
  const cut = async (link) => {
    link.dead = true;
    await link.server.close();
  };
  /** Holds the commands that `match` from now on; resolves with the first one held. */
  const hold = (match, timeout = WAIT) => new Promise((resolve, reject) => {
    holding = match;
    const timer = setTimeout(() => reject(new Error(`no command to hold in ${timeout} ms`)), timeout);
    onHeld = (command) => {
      onHeld = null;
      clearTimeout(timer);
      resolve(command);
    };
  });
  const release = () => {
    holding = null;
    for (const send of held.splice(0)) send();
  };
  return { links, held, setup, last, cut, hold, release };
}

/** The texts of the group messages of `group` the log shows, top to bottom. */
const groupLines = (page, group) => page.$$eval('#log li[data-kind="group"]', (lis, tag) =>
  lis.filter((li) => li.querySelector('.tag').textContent === tag).map((li) => li.querySelector('.text').textContent),
`#${group}`);

/** Waits until the log shows exactly `want` as the group's messages, in order. */
async function waitLines(page, group, want) {
  try {
    await page.waitForFunction(([tag, expected]) => JSON.stringify([...document.querySelectorAll('#log li[data-kind="group"]')]
      .filter((li) => li.querySelector('.tag').textContent === tag)
      .map((li) => li.querySelector('.text').textContent)) === expected,
    [`#${group}`, JSON.stringify(want)], { timeout: WAIT });
  } catch (e) {
    const shown = await groupLines(page, group);
    throw new Error(`${page.label}: #${group} shows ${JSON.stringify(shown)}, expected ${JSON.stringify(want)}`, { cause: e });
  }
}

scenario('a lost socket (the hub stays up): what was published meanwhile appears once, in order', async (track) => {
  const net = relay();
  const ida = track(await openDemo('ida', DESKTOP, '', hub, net.setup));
  const jon = track(await openDemo('jon'));
  await join(ida, 'ida');
  await join(jon, 'jon');
  await subscribe(ida, 'den');
  await waitUsers(jon, ['ida', 'jon']);
  await send(jon, 'group', 'den', 'before');
  await waitLines(ida, 'den', ['before']);

  // ida's socket dies on the hub's side; the page does not know yet.
  const first = net.last();
  await net.cut(first);
  await waitUsers(jon, ['jon']); // the hub has dropped ida's session
  for (const line of ['missed 1', 'missed 2', 'missed 3']) {
    await send(jon, 'group', 'den', line);
    await delivery(jon, line).filter({ hasText: 'delivered to 0' }).waitFor({ timeout: WAIT });
  }
  assert.deepEqual(await groupLines(ida, 'den'), ['before']);

  // The page hears of it and reconnects: its rejoin and resubscribe ask for what it missed.
  await first.ws.close({ code: 1001, reason: 'test' });
  await waitLines(ida, 'den', ['before', 'missed 1', 'missed 2', 'missed 3']);
  await send(jon, 'group', 'den', 'after');
  await waitLines(ida, 'den', ['before', 'missed 1', 'missed 2', 'missed 3', 'after']);

  const again = net.last();
  assert.notEqual(again, first, 'a new connection');
  const resubscribe = again.sent.find((c) => c.type === 'subscribe' && c.group === 'den');
  assert.ok(resubscribe.since, 'the resubscribe asks to recover');
  const subscribed = again.received.find((ev) => ev.type === 'subscribed' && ev.group === 'den');
  assert.equal(subscribed.recovered, true);
  assert.equal(await ida.locator('#log li[data-kind="recovery"]').count(), 0, 'no "not recovered" notice');
  await shot(ida, 'recovered-ida-desktop');
});

scenario('after a hub restart the page says what it could not recover and reloads what the hub holds', async (track) => {
  const kay = track(await openDemo('kay'));
  const lee = track(await openDemo('lee'));
  await join(kay, 'kay');
  await join(lee, 'lee');
  await subscribe(kay, 'yard');
  await send(lee, 'group', 'yard', 'old news');
  await waitLines(kay, 'yard', ['old news']);

  await hub.kill();
  await waitState(kay, 'reconnecting');
  // kay stays away until lee has written on the new hub.
  await kay.context().setOffline(true);
  await hub.start(); // same port, a new epoch: kay's positions mean nothing there
  await waitState(lee, 'open');
  await lee.waitForSelector('#me[data-joined="true"]', { state: 'attached', timeout: WAIT });
  for (const line of ['new 1', 'new 2']) {
    await send(lee, 'group', 'yard', line);
    await delivery(lee, line).filter({ hasText: 'delivered to 0' }).waitFor({ timeout: WAIT });
  }
  assert.notEqual(await kay.getAttribute('#status', 'data-state'), 'open');
  assert.deepEqual(await groupLines(kay, 'yard'), ['old news']);

  await kay.context().setOffline(false);
  await waitState(kay, 'open');
  const notice = kay.locator('#log li[data-kind="recovery"]');
  await notice.filter({ hasText: 'Some messages could not be recovered (the hub restarted or you were away too long)' })
    .waitFor({ timeout: WAIT });
  await kay.waitForSelector('#log li[data-kind="recovery"][data-state="reloaded"]', { state: 'attached', timeout: WAIT });
  const text = await notice.textContent();
  assert.match(text, /your direct messages/);
  assert.match(text, /#yard/);
  assert.match(text, /reloaded what the hub still holds \(2 not shown before\)/);
  assert.equal(await notice.count(), 1, 'one notice for the reconnect');
  // The reload brought what lee wrote while kay was away, after the notice, in order.
  await waitLines(kay, 'yard', ['old news', 'new 1', 'new 2']);
  const order = await kay.$$eval('#log li', (lis) => lis.map((li) => (li.dataset.kind === 'recovery' ? 'notice'
    : li.dataset.kind === 'group' ? `${li.querySelector('.text').textContent}/${li.dataset.source || 'live'}` : null)).filter(Boolean));
  assert.deepEqual(order, ['old news/live', 'notice', 'new 1/reload', 'new 2/reload']);
  // Live again, once.
  await send(lee, 'group', 'yard', 'new 3');
  await waitLines(kay, 'yard', ['old news', 'new 1', 'new 2', 'new 3']);
  await shot(kay, 'not-recovered-kay-desktop');
});

scenario('a direct to someone offline but seen lately is stored, and reaches them when they are back', async (track) => {
  const net = relay();
  const max = track(await openDemo('max', DESKTOP, '', hub, net.setup));
  const nia = track(await openDemo('nia'));
  await join(max, 'max');
  await join(nia, 'nia');
  await waitUsers(nia, ['max', 'nia']);

  const first = net.last();
  await net.cut(first);
  await waitUsers(nia, ['nia']); // max is offline now, and was seen a moment ago
  await send(nia, 'direct', 'max', 'while you were out');
  const status = delivery(nia, 'while you were out');
  await status.filter({ hasText: 'stored for max (offline): delivered when they come back' }).waitFor({ timeout: WAIT });
  assert.equal(await status.getAttribute('data-status'), 'stored');
  assert.doesNotMatch(await status.textContent(), /delivered to/);

  // max's page reconnects; its rejoin recovers the stored message.
  await first.ws.close({ code: 1001, reason: 'test' });
  await received(max, 'direct', 'nia', 'while you were out').waitFor({ timeout: WAIT });
  assert.equal(await max.locator('#log li', { hasText: 'while you were out' }).count(), 1);
  // A name the hub never saw is still refused.
  await send(nia, 'direct', 'never-seen', 'hello?');
  await delivery(nia, 'hello?').filter({ hasText: 'never-seen is not online' }).waitFor({ timeout: WAIT });
  await shot(nia, 'stored-nia-desktop');
});

scenario('a reloaded page shows the room\'s recent messages as earlier ones, in order, each once', async (track) => {
  const net = relay();
  const oli = track(await openDemo('oli', DESKTOP, '', hub, net.setup));
  const pam = track(await openDemo('pam'));
  await join(oli, 'oli');
  await join(pam, 'pam');
  await subscribe(oli, 'attic');
  await send(pam, 'group', 'attic', 'first');
  await send(oli, 'group', 'attic', 'mine');
  await send(pam, 'group', 'attic', 'second');
  await waitLines(oli, 'attic', ['first', 'mine', 'second']);
  assert.equal(await oli.locator('#log li[data-kind="divider"]').count(), 0, 'an empty room has no earlier messages');

  await oli.reload();
  await waitState(oli, 'open');
  assert.deepEqual(await groupLines(oli, 'attic'), []);
  // The page asks for the room's history once subscribed. Held back, so that a live
  // message comes first: the reply then holds it too, and the earlier ones go above it.
  const historyAsked = net.hold((c) => c.type === 'history' && c.group === 'attic');
  await join(oli, 'oli');
  await subscribe(oli, 'attic');
  await historyAsked;
  await send(pam, 'group', 'attic', 'live');
  await waitLines(oli, 'attic', ['live']);
  net.release();
  await oli.locator('#log li[data-kind="divider"]', { hasText: 'Earlier messages in #attic' }).waitFor({ timeout: WAIT });
  await waitLines(oli, 'attic', ['first', 'mine', 'second', 'live']);
  const shown = await oli.$$eval('#log li', (lis) => lis.map((li) => (li.dataset.kind === 'divider' ? 'divider'
    : li.dataset.kind === 'group' ? `${li.querySelector('.text').textContent}/${li.dataset.source || 'live'}/${li.dataset.dir}` : null))
    .filter(Boolean));
  assert.deepEqual(shown, ['divider', 'first/earlier/in', 'mine/earlier/out', 'second/earlier/in', 'live/live/in']);
  await send(pam, 'group', 'attic', 'later');
  await waitLines(oli, 'attic', ['first', 'mine', 'second', 'live', 'later']);
  await shot(oli, 'earlier-oli-desktop');
});
