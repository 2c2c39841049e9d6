// The admin console (templates/admin.html, served at /admin) in a real Chromium, against the
// real hub binary started with an API key and 30 WebSocket clients.
//
//   cd tests/admin && npm ci && npm test
//
// Env: WXHUB_BIN (default <repo>/target/debug/wxhub), CHROMIUM_BIN (default
// /usr/bin/chromium), WXHUB_ADMIN_PAGE (optional: a file served at /admin instead of the page
// compiled into the hub, to try a page edit without a rebuild), CARGO_TARGET_DIR (where the
// screenshots go: <target>/admin-screenshots/).
//
// The clients are real WebSockets opened by a second Chromium page, joined and subscribed in
// the handshake query. Every wait is for a DOM state or an event, with a timeout; the one
// fixed window (polling stops while hidden) observes that nothing happens.

import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { mkdirSync, readdirSync, readFileSync, rmSync } from 'node:fs';
import { createServer } from 'node:net';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { chromium } from 'playwright-core';

const here = path.dirname(fileURLToPath(import.meta.url));
const repo = path.resolve(here, '..', '..');
const HUB_BIN = path.resolve(repo, process.env.WXHUB_BIN || path.join('target', 'debug', 'wxhub'));
const CHROMIUM_BIN = process.env.CHROMIUM_BIN || '/usr/bin/chromium';
const PAGE_FILE = process.env.WXHUB_ADMIN_PAGE ? path.resolve(process.env.WXHUB_ADMIN_PAGE) : null;
const TARGET = path.resolve(repo, process.env.CARGO_TARGET_DIR || 'target');
const SHOTS = path.join(TARGET, 'admin-screenshots');

const KEY = 'admin-test-key-0123456789abcdef';
const DESKTOP = { width: 1280, height: 800 };
const PHONE = { width: 375, height: 812 };
const WAIT = 10_000; // for any single expected state
const POLL_MS = 2000; // the page's refresh interval
const XSS = '<img src=x onerror=alert(1)>';

/* ------------------------------------------------------------------------------------
 * The hub process
 * ---------------------------------------------------------------------------------- */

function freePort() {
  return new Promise((resolve, reject) => {
    const server = createServer();
    server.unref();
    server.on('error', reject);
    server.listen(0, '127.0.0.1', () => {
      const { port } = server.address();
      server.close(() => resolve(port));
    });
  });
}

class HubProcess {
  constructor(port, args = []) {
    this.port = port;
    this.args = args;
    this.child = null;
    this.log = '';
  }

  get httpUrl() {
    return `http://127.0.0.1:${this.port}/`;
  }

  start() {
    const args = ['--bind', `127.0.0.1:${this.port}`, ...this.args];
    const child = spawn(HUB_BIN, args, {
      env: { ...process.env, RUST_LOG: 'info' },
      stdio: ['ignore', 'ignore', 'pipe'],
    });
    this.child = child;
    return new Promise((resolve, reject) => {
      const timer = setTimeout(() => fail(new Error(`the hub did not start in ${WAIT} ms`)), WAIT);
      const fail = (err) => {
        clearTimeout(timer);
        reject(new Error(`${err.message}\n--- hub log ---\n${this.log}`));
      };
      child.on('error', (e) => fail(new Error(`cannot run ${HUB_BIN} (cargo build, or set WXHUB_BIN): ${e.message}`)));
      child.on('exit', (code, signal) => fail(new Error(`the hub exited early (${code ?? signal})`)));
      child.stderr.setEncoding('utf8');
      child.stderr.on('data', (chunk) => {
        this.log += chunk;
        if (this.log.includes(`wxhub listening on http://127.0.0.1:${this.port}/`)) {
          clearTimeout(timer);
          resolve();
        }
      });
    });
  }

  async kill() {
    const child = this.child;
    if (!child || child.exitCode !== null || child.signalCode !== null) return;
    const exited = new Promise((resolve) => child.once('exit', resolve));
    child.kill('SIGKILL');
    await exited;
  }
}

/** The server API, as a backend calls it: what the page should show. */
async function api(method, apiPath, body) {
  const res = await fetch(hub.httpUrl + 'api/' + apiPath, {
    method,
    headers: { Authorization: `Bearer ${KEY}`, ...(body === undefined ? {} : { 'Content-Type': 'application/json' }) },
    body: body === undefined ? undefined : JSON.stringify(body),
  });
  return { status: res.status, body: await res.json() };
}

const apiGet = async (apiPath) => {
  const r = await api('GET', apiPath);
  assert.equal(r.status, 200, `GET /api/${apiPath}: ${JSON.stringify(r.body)}`);
  return r.body;
};

/* ------------------------------------------------------------------------------------
 * The 30 clients: real WebSockets in a page of their own
 * ---------------------------------------------------------------------------------- */

const pad = (i) => String(i).padStart(2, '0');
const range = (n) => [...Array(n).keys()];
// 30 connections of 29 users (dana twice) in four groups: room-b 14 users, room-a 12,
// room-c 7 (8 sessions), vip 2 (3 sessions).
const CLIENTS = [
  ...range(12).map((i) => ({ name: `ann${pad(i)}`, groups: i < 4 ? ['room-a', 'room-b'] : ['room-a'] })),
  ...range(10).map((i) => ({ name: `bob${pad(i)}`, groups: ['room-b'] })),
  ...range(5).map((i) => ({ name: `cat${pad(i)}`, groups: i === 0 ? ['room-c', 'vip'] : ['room-c'] })),
  { name: 'dana', groups: ['room-c', 'vip'] },
  { name: 'dana', groups: ['room-c', 'vip'] },
  { name: XSS, groups: ['room-c'] },
];
const inGroup = (group) => CLIENTS.filter((c) => c.groups.includes(group)).map((c) => c.name);

async function openClients() {
  const context = await browser.newContext();
  const page = await context.newPage();
  page.on('pageerror', (err) => pageErrors.push(`clients: ${err.stack || err.message}`));
  await page.goto(hub.httpUrl + 'healthz');
  await page.evaluate(() => {
    window.hubClients = [];
    /** Connects, joined and subscribed in the handshake; resolves on the last reply. */
    window.connectClient = (name, groups) => new Promise((resolve, reject) => {
      const q = `name=${encodeURIComponent(name)}&subscribe=${groups.map(encodeURIComponent).join(',')}`;
      const ws = new WebSocket(`ws://${location.host}/ws?${q}`);
      const client = { name, groups, ws, frames: [], closed: null };
      window.hubClients.push(client);
      let waiting = 1 + groups.length; // `joined`, then one `subscribed` per group
      ws.onmessage = (e) => {
        const ev = JSON.parse(e.data);
        client.frames.push(ev);
        if (ev.type === 'error') reject(new Error(`${name}: ${e.data}`));
        if ((ev.type === 'joined' || ev.type === 'subscribed') && --waiting === 0) resolve();
      };
      ws.onclose = (e) => {
        client.closed = { code: e.code, reason: e.reason };
        reject(new Error(`${name}: closed ${e.code} ${e.reason}`));
      };
    });
  });
  await page.evaluate((clients) => Promise.all(clients.map((c) => window.connectClient(c.name, c.groups))), CLIENTS);
  return page;
}

/** Waits until every client named in `names` has a message whose body is `body`. */
async function waitReceived(names, body, timeout = WAIT) {
  try {
    await clientsPage.waitForFunction(([want, text]) => window.hubClients
      .filter((c) => want.includes(c.name))
      .every((c) => c.frames.some((f) => f.type === 'message' && JSON.stringify(f.body) === text)),
    [names, JSON.stringify(body)], { timeout });
  } catch (e) {
    const missing = await receivedBy(body).then((got) => names.filter((n) => !got.includes(n)));
    throw new Error(`${JSON.stringify(body)} did not reach ${JSON.stringify(missing)}`, { cause: e });
  }
}

/** The names of the clients (one entry per session) that got a message with this body. */
const receivedBy = (body) => clientsPage.evaluate((text) => window.hubClients
  .filter((c) => c.frames.some((f) => f.type === 'message' && JSON.stringify(f.body) === text))
  .map((c) => c.name), JSON.stringify(body));

const messagesTo = (name, body) => clientsPage.evaluate(([n, text]) => window.hubClients
  .filter((c) => c.name === n)
  .map((c) => c.frames.find((f) => f.type === 'message' && JSON.stringify(f.body) === text)), [name, JSON.stringify(body)]);

/* ------------------------------------------------------------------------------------
 * The admin page
 * ---------------------------------------------------------------------------------- */

let hub;
let browser;
let clientsPage;
const pageErrors = [];

before(async () => {
  mkdirSync(SHOTS, { recursive: true });
  for (const file of readdirSync(SHOTS)) if (file.startsWith('FAILED-')) rmSync(path.join(SHOTS, file));
  hub = new HubProcess(await freePort(), ['--api-key', KEY]);
  process.on('exit', () => hub.child?.kill('SIGKILL'));
  await hub.start();
  try {
    browser = await chromium.launch({
      executablePath: CHROMIUM_BIN,
      args: ['--headless', '--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run',
        '--disable-background-networking', '--disable-component-update', '--disable-sync'],
    });
  } catch (e) {
    throw new Error(`cannot start Chromium at ${CHROMIUM_BIN} (apt-get install -y chromium, or set CHROMIUM_BIN)`, { cause: e });
  }
  clientsPage = await openClients();
});

after(async () => {
  await browser?.close();
  await hub?.kill();
});

/**
 * Opens /admin in a fresh context (its own sessionStorage) and, unless `signIn` is false,
 * enters the key. `suffix` is the query and hash (e.g. '?page_size=5#users').
 */
async function openAdmin(label, { viewport = DESKTOP, suffix = '', signIn = true, setup = null } = {}) {
  const context = await browser.newContext({ viewport, deviceScaleFactor: 1 });
  if (PAGE_FILE) {
    await context.route((url) => url.pathname === '/admin', async (route) => {
      // The hub's own headers (its CSP) when it serves /admin, with the page being tried.
      const real = await route.fetch().catch(() => null);
      const headers = real && real.status() === 200 ? real.headers() : { 'content-type': 'text/html; charset=utf-8' };
      await route.fulfill({ status: 200, headers, body: readFileSync(PAGE_FILE) });
    });
  }
  if (setup) await setup(context);
  const page = await context.newPage();
  page.label = label;
  page.consoleErrors = [];
  page.dialogs = [];
  page.on('pageerror', (err) => pageErrors.push(`${label}: ${err.stack || err.message}`));
  page.on('console', (msg) => {
    if (msg.type() === 'error' || msg.type() === 'warning') {
      page.consoleErrors.push({ type: msg.type(), text: msg.text(), url: msg.location().url || '' });
    }
  });
  page.on('dialog', (dialog) => {
    page.dialogs.push(`${dialog.type()}: ${dialog.message()}`);
    dialog.dismiss().catch(() => {});
  });
  await page.goto(`${hub.httpUrl}admin${suffix}`);
  if (signIn) await signInWith(page, KEY);
  return page;
}

async function signInWith(page, key) {
  await page.getByTestId('login').waitFor({ timeout: WAIT });
  await page.getByTestId('key').fill(key);
  await page.getByTestId('sign-in').click();
  if (key === KEY) await page.waitForSelector('body[data-auth="signed-in"]', { state: 'attached', timeout: WAIT });
}

/**
 * No console errors or warnings but the failed requests a scenario causes on purpose
 * (Chromium logs every 4xx answer to fetch): `expected` lists them as [status, path].
 */
function assertConsoleClean(page, expected = []) {
  const unexpected = page.consoleErrors.filter((m) => !expected.some(([status, apiPath]) =>
    m.text.includes(`status of ${status}`) && new URL(m.url, hub.httpUrl).pathname === apiPath));
  assert.deepEqual(unexpected, [], `${page.label}: console errors`);
  assert.deepEqual(page.dialogs, [], `${page.label}: dialogs`);
}

/** Waits until the element's text is `want` (a string, or a RegExp it matches). */
async function waitText(page, selector, want, timeout = WAIT) {
  const [exact, source, flags] = want instanceof RegExp ? [null, want.source, want.flags] : [want, null, null];
  try {
    await page.waitForFunction(([sel, text, src, fl]) => {
      const node = document.querySelector(sel);
      if (!node) return false;
      const t = node.textContent.trim();
      return text !== null ? t === text : new RegExp(src, fl).test(t);
    }, [selector, exact, source, flags], { timeout });
  } catch (e) {
    const shown = await page.$eval(selector, (n) => n.textContent.trim()).catch(() => '(no such element)');
    throw new Error(`${page.label}: ${selector} shows ${JSON.stringify(shown)}, wanted ${want instanceof RegExp ? want : JSON.stringify(want)}`, { cause: e });
  }
}

/** Waits until the rows of a table (their `attr`) are `want`, in order. */
async function waitRows(page, selector, attr, want, timeout = WAIT) {
  try {
    await page.waitForFunction(([sel, a, w]) => JSON.stringify([...document.querySelectorAll(`${sel} tbody tr`)]
      .map((tr) => tr.getAttribute(a))) === w, [selector, attr, JSON.stringify(want)], { timeout });
  } catch (e) {
    const shown = await rows(page, selector, attr);
    throw new Error(`${page.label}: ${selector} lists ${JSON.stringify(shown)}, wanted ${JSON.stringify(want)}`, { cause: e });
  }
}

const rows = (page, selector, attr) => page.$$eval(`${selector} tbody tr`, (trs, a) => trs.map((tr) => tr.getAttribute(a)), attr);
const cellTexts = (page, selector) => page.$$eval(`${selector} tbody tr`, (trs) => trs.map((tr) => [...tr.cells].map((td) => td.textContent)));

const shot = (page, name) => page.screenshot({ path: path.join(SHOTS, `${name}.png`), fullPage: true });

/** Pixels of the canvas close to `rgb` (the line's colour). */
const pixelsOf = (page, selector, [r, g, b]) => page.$eval(selector, (canvas, [r0, g0, b0]) => {
  const { data } = canvas.getContext('2d').getImageData(0, 0, canvas.width, canvas.height);
  let n = 0;
  for (let i = 0; i < data.length; i += 4) {
    if (data[i + 3] > 200 && Math.abs(data[i] - r0) < 40 && Math.abs(data[i + 1] - g0) < 40 && Math.abs(data[i + 2] - b0) < 40) n++;
  }
  return n;
}, [r, g, b]);

function scenario(name, fn) {
  test(name, { timeout: 90_000 }, async () => {
    const pages = [];
    const track = (page) => (pages.push(page), page);
    try {
      await fn(track);
      assert.deepEqual(pageErrors, [], 'uncaught errors in a page');
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
 * Scenarios (in order: they share the hub and its clients)
 * ---------------------------------------------------------------------------------- */

scenario('overview: the counters, two live charts and the busiest groups, refreshed every 2 s', async (track) => {
  const page = track(await openAdmin('overview'));
  await waitText(page, '[data-testid="connections"]', '30');
  await waitText(page, '[data-testid="users"]', '29');
  await waitText(page, '[data-testid="groups"]', '4');
  const info = await apiGet('info');
  assert.equal(await page.getByTestId('version').textContent(), info.version);
  assert.match(await page.getByTestId('uptime').textContent(), /^\d+m \d\ds$/);

  // The busiest groups, as the hub ranks them, with its member counts.
  const top = await apiGet('groups?order=members&limit=10');
  assert.deepEqual(top.groups.map((g) => g.group), ['room-b', 'room-a', 'room-c', 'vip']);
  await waitRows(page, '#top-groups', 'data-group', top.groups.map((g) => g.group));
  assert.deepEqual((await cellTexts(page, '#top-groups')).map((cells) => cells.slice(0, 3)),
    top.groups.map((g, i) => [String(i + 1), g.group, String(g.members)]));

  // Traffic moves the rates: messages in, deliveries and bytes out per second.
  const statsBox = await page.locator('#stats').boundingBox();
  for (let i = 0; i < 3; i++) {
    const r = await api('POST', 'publish', { group: 'room-a', body: { text: `tick ${i}` } });
    assert.deepEqual(r.body, { delivered: 12 });
  }
  await waitReceived(inGroup('room-a'), { text: 'tick 2' });
  // The sample that saw the deliveries, read at once (the next one, 2 s on, may see none).
  const rates = await (await page.waitForFunction(() => {
    const text = (id) => document.querySelector(`[data-testid="${id}"]`).textContent;
    return Number.parseFloat(text('out-rate')) > 0 && { in: text('in-rate'), out: text('out-rate'), bytes: text('bytes-rate') };
  }, null, { timeout: WAIT })).jsonValue();
  assert.match(rates.out, /^\d+\.\d\/s$/);
  assert.ok(Number.parseFloat(rates.in) > 0, `messages in: ${rates.in}`);
  assert.match(rates.bytes, /^[\d.]+ (B|KiB|MiB)\/s$/);
  assert.notEqual(rates.bytes, '0 B/s');
  // The numbers changed; the layout did not.
  assert.deepEqual(await page.locator('#stats').boundingBox(), statsBox);

  // The charts: points after a few refreshes, the line drawn in its colour.
  await page.waitForFunction(() => Number(document.querySelector('#chart-connections').dataset.points) >= 4,
    null, { timeout: 4 * POLL_MS + WAIT });
  assert.equal(await page.getAttribute('#chart-connections', 'data-last'), '30');
  assert.ok(await pixelsOf(page, '#chart-connections', [37, 99, 235]) > 50, 'the connections line is drawn');
  await page.waitForFunction(() => Number(document.querySelector('#chart-delivered').dataset.points) >= 3,
    null, { timeout: WAIT });
  assert.ok(await pixelsOf(page, '#chart-delivered', [15, 118, 110]) > 50, 'the deliveries line is drawn');
  // The delivery spike is on the chart: its highest value is above zero.
  assert.match(await page.getAttribute('#chart-delivered', 'aria-label'), /highest (?!0\.0)\d/);
  const before = await page.$eval('#chart-connections', (c) => [c.dataset.points, c.toDataURL()]);
  await page.waitForFunction((n) => document.querySelector('#chart-connections').dataset.points !== n, before[0], { timeout: WAIT });
  assert.notEqual(await page.$eval('#chart-connections', (c) => c.toDataURL()), before[1], 'the chart moves');
  assert.equal(await page.getAttribute('[data-testid="status"]', 'data-state'), 'live');

  // A busiest group opens in the Groups view.
  await page.click('#top-groups tr[data-group="vip"] button');
  await page.waitForSelector('#view-groups:not([hidden])', { timeout: WAIT });
  await waitText(page, '[data-testid="group-name"]', '#vip');
  await page.goBack();
  await page.waitForSelector('#view-overview:not([hidden])', { timeout: WAIT });
  await page.waitForFunction(() => Number(document.querySelector('#chart-connections').dataset.points) >= 5,
    null, { timeout: WAIT });
  await shot(page, 'overview-desktop');
  assertConsoleClean(page);
});

scenario('users: search by name prefix on the hub, page through, a user\'s sessions and groups', async (track) => {
  const page = track(await openAdmin('users', { suffix: '?page_size=5#users' }));
  const all = (await apiGet('users?limit=1000')).users.map((u) => u.name);
  await waitRows(page, '#users-table', 'data-user', all.slice(0, 5));
  await waitText(page, '[data-testid="users-count"]', '29 online');
  await page.getByTestId('users-more').click();
  await waitRows(page, '#users-table', 'data-user', all.slice(0, 10));

  // Typing searches (server-side: ?prefix=), and paging keeps the prefix.
  await page.getByTestId('user-prefix').fill('bob0');
  const bobs = range(10).map((i) => `bob${pad(i)}`);
  await waitRows(page, '#users-table', 'data-user', bobs.slice(0, 5));
  await waitText(page, '[data-testid="users-count"]', '5+ matching · 29 online');
  await page.getByTestId('users-more').click();
  await waitRows(page, '#users-table', 'data-user', bobs);
  await page.waitForSelector('[data-testid="users-more"]', { state: 'hidden', timeout: WAIT });
  await waitText(page, '[data-testid="users-count"]', '10 matching · 29 online');

  await page.getByTestId('user-prefix').fill('zz');
  await page.getByTestId('user-search').click();
  await waitRows(page, '#users-table', 'data-user', []);
  await page.getByText('Nobody online has a name that starts with that.').waitFor({ timeout: WAIT });

  // dana: two sessions, two groups.
  await page.getByTestId('user-prefix').fill('da');
  await page.getByTestId('user-prefix').press('Enter');
  await waitRows(page, '#users-table', 'data-user', ['dana']);
  assert.deepEqual(await cellTexts(page, '#users-table'), [['dana', '2']]);
  await page.click('#users-table tr[data-user="dana"]');
  const dana = await apiGet('users/dana');
  assert.deepEqual(dana, { name: 'dana', sessions: 2, groups: ['room-c', 'vip'] });
  await page.waitForSelector('#user-detail[data-state="online"]', { state: 'attached', timeout: WAIT });
  assert.equal(await page.getByTestId('user-name').textContent(), 'dana');
  assert.equal(await page.getByTestId('user-sessions').textContent(), '2 sessions');
  assert.deepEqual(await page.$$eval('[data-testid="user-groups"] li', (lis) => lis.map((li) => li.textContent)), dana.groups);
  assert.equal(await page.getAttribute('#users-table tr[data-user="dana"]', 'aria-selected'), 'true');
  await shot(page, 'users-desktop');

  // A user's group opens in the Groups view.
  await page.click('[data-testid="user-groups"] li[data-group="vip"] button');
  await waitText(page, '[data-testid="group-name"]', '#vip');
  assertConsoleClean(page);
});

scenario('groups: paged list, a group\'s members and its recent messages', async (track) => {
  const bodies = [{ text: 'one' }, 'two, as plain text', { text: '<script>alert(2)</script>', n: 3 }];
  for (const body of bodies) {
    const r = await api('POST', 'publish', { group: 'room-c', body, from: '<b>ops</b>' });
    assert.equal(r.status, 200, JSON.stringify(r.body));
  }
  await waitReceived(inGroup('room-c'), bodies[2]);

  const page = track(await openAdmin('groups', { suffix: '?page_size=3#groups' }));
  await waitRows(page, '#groups-table', 'data-group', ['room-a', 'room-b', 'room-c']);
  await waitText(page, '[data-testid="groups-count"]', '3 of 4');
  await page.getByTestId('groups-more').click();
  await waitRows(page, '#groups-table', 'data-group', ['room-a', 'room-b', 'room-c', 'vip']);
  await waitText(page, '[data-testid="groups-count"]', '4 groups');
  const listed = (await apiGet('groups?limit=1000')).groups;
  assert.deepEqual((await cellTexts(page, '#groups-table')), listed.map((g) => [g.group, String(g.members)]));

  await page.click('#groups-table tr[data-group="room-c"]');
  await waitText(page, '[data-testid="group-name"]', '#room-c');
  const members = (await apiGet('groups/room-c?limit=1000'));
  await waitText(page, '[data-testid="group-members-count"]', `${members.count} members`);
  // Pages of 3: load the rest.
  while (await page.getByTestId('members-more').isVisible()) {
    const n = (await rows(page, '[data-testid="group-members"]', 'data-user')).length;
    await page.getByTestId('members-more').click();
    await page.waitForFunction(([sel, count]) => document.querySelectorAll(sel).length > count,
      ['[data-testid="group-members"] tbody tr', n], { timeout: WAIT });
  }
  assert.deepEqual(await rows(page, '[data-testid="group-members"]', 'data-user'), members.members.map((m) => m.name));
  assert.deepEqual(await cellTexts(page, '[data-testid="group-members"]'), members.members.map((m) => [m.name, String(m.sessions)]));

  // Recent messages: the hub's, oldest first, bodies and senders as text.
  await page.waitForSelector('[data-testid="group-messages"][data-state="loaded"]', { state: 'attached', timeout: WAIT });
  const held = (await apiGet('groups/room-c/messages?limit=50')).messages;
  assert.deepEqual(held.slice(-3).map((m) => m.body), bodies);
  const shown = await page.$$eval('[data-testid="group-messages"] li', (lis) => lis.map((li) => ({
    from: li.querySelector('.who').textContent,
    offset: li.dataset.offset,
    body: (li.querySelector('.body-text, .body-json')).textContent,
  })));
  assert.deepEqual(shown, held.map((m) => ({
    from: m.from, offset: String(m.offset), body: typeof m.body === 'string' ? m.body : JSON.stringify(m.body),
  })));
  assert.equal(await page.locator('[data-testid="group-messages"] script, [data-testid="group-messages"] b').count(), 0);
  await shot(page, 'groups-desktop');

  // A member opens in the Users view.
  await page.click('[data-testid="group-members"] tr[data-user="cat01"]');
  await page.waitForSelector('#view-users:not([hidden])', { timeout: WAIT });
  await waitText(page, '[data-testid="user-name"]', 'cat01');
  assertConsoleClean(page);
});

scenario('publish: to a group, a user and everyone; the delivered count, or the error', async (track) => {
  const page = track(await openAdmin('publish', { suffix: '#publish' }));
  const result = page.getByTestId('pub-result');
  const sent = async () => {
    await page.getByTestId('pub-send').click();
    await page.waitForFunction(() => !['idle', 'busy'].includes(document.querySelector('[data-testid="pub-result"]').dataset.state)
      && !document.querySelector('[data-testid="pub-send"]').disabled, null, { timeout: WAIT });
    return { state: await result.getAttribute('data-state'), text: await result.textContent() };
  };

  // A group, with a JSON body.
  await page.getByTestId('pub-mode-group').check();
  await page.getByTestId('pub-target').fill('room-a');
  await page.getByTestId('pub-body').fill('{"text": "hello room-a"}');
  await waitText(page, '[data-testid="pub-hint"]', 'Valid JSON (object): sent as it is.');
  let r = await sent();
  assert.deepEqual(r, { state: 'ok', text: 'Delivered to 12 sessions.' });
  assert.equal(await result.getAttribute('data-delivered'), '12');
  await waitReceived(inGroup('room-a'), { text: 'hello room-a' });
  const copy = (await messagesTo('ann05', { text: 'hello room-a' }))[0];
  assert.equal(copy.kind, 'group');
  assert.equal(copy.group, 'room-a');
  assert.equal(copy.from, 'system');

  // A user with two sessions, plain text (sent as a JSON string), from a name of ours.
  await page.getByTestId('pub-mode-user').check();
  await page.getByTestId('pub-target').fill('dana');
  await page.getByTestId('pub-from').fill('ops');
  await page.getByTestId('pub-body').fill('hi dana');
  await waitText(page, '[data-testid="pub-hint"]', 'Not JSON: sent as a JSON string.');
  r = await sent();
  assert.deepEqual(r, { state: 'ok', text: 'Delivered to 2 sessions.' });
  await waitReceived(['dana'], 'hi dana');
  for (const m of await messagesTo('dana', 'hi dana')) {
    assert.equal(m.kind, 'direct');
    assert.equal(m.from, 'ops');
  }

  // Refusals show the hub's own message.
  await page.getByTestId('pub-from').fill('');
  await page.getByTestId('pub-target').fill('nobody-here');
  const notFound = await api('POST', 'send', { to: 'nobody-here', body: 'hi dana' });
  assert.equal(notFound.status, 404);
  r = await sent();
  assert.equal(r.state, 'error');
  assert.equal(r.text, `${notFound.body.message}${notFound.body.code}`);
  await page.getByTestId('pub-mode-group').check();
  await page.getByTestId('pub-target').fill('bad group!');
  const invalid = await api('POST', 'publish', { group: 'bad group!', body: 'hi dana' });
  assert.equal(invalid.status, 400);
  r = await sent();
  assert.equal(r.state, 'error');
  assert.equal(r.text, `${invalid.body.message}${invalid.body.code}`);

  // Everyone.
  await page.getByTestId('pub-mode-everyone').check();
  await page.waitForSelector('#pub-target-field', { state: 'hidden', timeout: WAIT });
  assert.equal(await page.getByTestId('pub-send').textContent(), 'Send to everyone');
  await page.getByTestId('pub-body').fill('{"text": "to all"}');
  r = await sent();
  assert.deepEqual(r, { state: 'ok', text: 'Delivered to 30 sessions.' });
  await waitReceived(CLIENTS.map((c) => c.name), { text: 'to all' });
  // The group message went to room-a only: every client has seen the broadcast after it.
  assert.deepEqual((await receivedBy({ text: 'hello room-a' })).sort(), inGroup('room-a').sort());
  assert.deepEqual(await receivedBy('hi dana'), ['dana', 'dana']);

  assert.deepEqual(await page.$$eval('[data-testid="pub-log"] li', (lis) => lis.map((li) => li.dataset.state)),
    ['ok', 'error', 'error', 'ok', 'ok']);
  await shot(page, 'publish-desktop');
  assertConsoleClean(page, [[404, '/api/send'], [400, '/api/publish']]);
});

scenario('disconnect: after a confirm step, exactly the user\'s sessions close with the reason', async (track) => {
  const page = track(await openAdmin('disconnect', { suffix: '#users' }));
  await page.getByTestId('user-prefix').fill('dana');
  await waitRows(page, '#users-table', 'data-user', ['dana']);
  await page.click('#users-table tr[data-user="dana"]');
  await page.waitForSelector('#user-detail[data-state="online"]', { state: 'attached', timeout: WAIT });

  // The first click only asks; Cancel closes nothing.
  await page.getByTestId('disconnect').click();
  await page.getByTestId('disconnect-form').waitFor({ timeout: WAIT });
  assert.equal(await page.getByTestId('disconnect-confirm').textContent(), 'Disconnect 2 sessions');
  await page.getByTestId('disconnect-cancel').click();
  await page.getByTestId('disconnect-form').waitFor({ state: 'hidden', timeout: WAIT });
  assert.equal((await apiGet('users/dana')).sessions, 2);

  await page.getByTestId('disconnect').click();
  await page.getByTestId('disconnect-reason').fill('test over');
  await shot(page, 'disconnect-confirm-desktop');
  await page.getByTestId('disconnect-confirm').click();
  await waitText(page, '[data-testid="disconnect-result"]', 'Disconnected: 2 sessions closed.');
  await waitText(page, '[data-testid="user-sessions"]', 'offline');
  await waitRows(page, '#users-table', 'data-user', []); // the search ran again

  await clientsPage.waitForFunction(() => window.hubClients.filter((c) => c.name === 'dana').every((c) => c.closed),
    null, { timeout: WAIT });
  const states = await clientsPage.evaluate(() => window.hubClients.map((c) => ({
    name: c.name, open: c.ws.readyState === WebSocket.OPEN, closed: c.closed,
  })));
  for (const s of states) {
    if (s.name === 'dana') assert.deepEqual(s.closed, { code: 1008, reason: 'test over' });
    else assert.ok(s.open && !s.closed, `${s.name} still connected`);
  }

  // The overview follows; a message to dana now is stored for her.
  await page.getByTestId('tab-overview').click();
  await waitText(page, '[data-testid="connections"]', '28');
  await waitText(page, '[data-testid="users"]', '28');
  await page.getByTestId('tab-publish').click();
  await page.getByTestId('pub-target').fill('dana');
  await page.getByTestId('pub-body').fill('are you there?');
  await page.getByTestId('pub-send').click();
  await page.waitForSelector('[data-testid="pub-result"][data-state="stored"]', { state: 'attached', timeout: WAIT });
  assert.equal(await page.getAttribute('[data-testid="pub-result"]', 'data-stored'), 'true');
  assert.match(await page.getByTestId('pub-result').textContent(), /^Stored for dana: offline now but seen lately/);
  assertConsoleClean(page);
});

scenario('a wrong key is refused with a clear message and asked for again', async (track) => {
  const page = track(await openAdmin('key', { signIn: false }));
  await page.getByTestId('login').waitFor({ timeout: WAIT });
  assert.equal(await page.locator('#console').isHidden(), true);
  await signInWith(page, 'not-the-key-0123456789');
  await waitText(page, '[data-testid="login-error"]',
    'The hub refused this key (401 unauthorized). Check the hub\'s --api-key and try again.');
  assert.equal(await page.locator('#console').isHidden(), true);
  assert.equal(await page.getByTestId('key').inputValue(), '');
  assert.equal(await page.evaluate(() => sessionStorage.length), 0);
  await shot(page, 'login-refused-desktop');

  // The right key: kept in sessionStorage only, so a reload stays signed in.
  await signInWith(page, KEY);
  await waitText(page, '[data-testid="connections"]', /^\d+$/);
  assert.deepEqual(await page.evaluate(() => ({ session: sessionStorage.getItem('wxhub.adminKey'), local: localStorage.length })),
    { session: KEY, local: 0 });
  await page.reload();
  await page.waitForSelector('body[data-auth="signed-in"]', { state: 'attached', timeout: WAIT });
  await waitText(page, '[data-testid="connections"]', /^\d+$/);
  assert.equal(await page.getByTestId('login').isHidden(), true);

  // The hub stops taking the key (restarted with another): the page asks again.
  await page.context().route((url) => url.pathname.startsWith('/api/'), (route) => route.fulfill({
    status: 401, contentType: 'application/json',
    body: JSON.stringify({ code: 'unauthorized', message: 'a valid API key is required: Authorization: Bearer <key>' }),
  }));
  await page.getByTestId('login').waitFor({ timeout: POLL_MS + WAIT });
  await waitText(page, '[data-testid="login-error"]',
    'The hub no longer accepts the key (401): was it restarted with another one? Enter the key again.');
  assert.equal(await page.evaluate(() => sessionStorage.length), 0);
  await page.context().unrouteAll();
  await signInWith(page, KEY);
  await waitText(page, '[data-testid="connections"]', /^\d+$/);

  // Sign out forgets the key.
  await page.getByTestId('sign-out').click();
  await page.getByTestId('login').waitFor({ timeout: WAIT });
  assert.equal(await page.evaluate(() => sessionStorage.length), 0);
  assert.equal(await page.getByTestId('login-error').isHidden(), true);
  assertConsoleClean(page, [[401, '/api/info'], [401, '/api/groups']]);
});

scenario('names and bodies from the hub show as text: no markup, no script, no dialog', async (track) => {
  const page = track(await openAdmin('xss', { suffix: '#users' }));
  await page.getByTestId('user-prefix').fill('<img');
  await waitRows(page, '#users-table', 'data-user', [XSS]);
  assert.deepEqual(await cellTexts(page, '#users-table'), [[XSS, '1']]);
  await page.click('#users-table tbody tr');
  await page.waitForSelector('#user-detail[data-state="online"]', { state: 'attached', timeout: WAIT });
  assert.equal(await page.getByTestId('user-name').textContent(), XSS);

  // In the group's members too, and as a message's target.
  await page.click('[data-testid="user-groups"] li[data-group="room-c"] button');
  await page.waitForSelector('#group-detail[data-state="open"]', { state: 'attached', timeout: WAIT });
  while (await page.getByTestId('members-more').isVisible()) await page.getByTestId('members-more').click();
  await page.locator('[data-testid="group-members"] tbody tr td:first-child', { hasText: XSS }).waitFor({ timeout: WAIT });
  await page.getByTestId('tab-publish').click();
  await page.getByTestId('pub-mode-user').check();
  await page.getByTestId('pub-target').fill(XSS);
  await page.getByTestId('pub-from').fill('<i>x</i>');
  await page.getByTestId('pub-body').fill('<b>bold?</b>');
  await page.getByTestId('pub-send').click();
  await waitText(page, '[data-testid="pub-result"]', 'Delivered to 1 session.');
  await waitReceived([XSS], '<b>bold?</b>');
  assert.equal(await page.$eval('[data-testid="pub-log"] li .what', (n) => n.textContent), `${XSS} from <i>x</i>: <b>bold?</b>`);

  // Nothing the hub sent became an element, and nothing ran.
  await page.getByTestId('tab-overview').click();
  await waitText(page, '[data-testid="connections"]', /^\d+$/);
  assert.deepEqual(await page.evaluate(() => ({
    elements: document.querySelectorAll('img, i, script:not(:first-of-type), [onerror]').length,
    scripts: document.scripts.length,
    inLog: document.querySelectorAll('[data-testid="pub-log"] .what *:not(.to)').length,
  })), { elements: 0, scripts: 1, inLog: 0 });
  assert.deepEqual(page.dialogs, []);
  await page.evaluate(() => { location.hash = 'users'; });
  await page.reload(); // the key is still in this tab's sessionStorage
  await page.waitForSelector('body[data-auth="signed-in"]', { state: 'attached', timeout: WAIT });
  await page.getByTestId('user-prefix').fill('<');
  await waitRows(page, '#users-table', 'data-user', [XSS]);
  await shot(page, 'xss-users-desktop');
  assertConsoleClean(page);
});

scenario('a phone-sized screen: every view fits its width', async (track) => {
  const page = track(await openAdmin('phone', { viewport: PHONE }));
  const fits = async (view) => {
    const width = await page.evaluate(() => document.documentElement.scrollWidth);
    assert.ok(width <= PHONE.width, `${view}: the page is ${width} px wide on a ${PHONE.width} px screen`);
  };
  await waitText(page, '[data-testid="connections"]', /^\d+$/);
  await page.waitForFunction(() => Number(document.querySelector('#chart-delivered').dataset.points) >= 2,
    null, { timeout: 3 * POLL_MS + WAIT });
  await page.waitForSelector('#top-groups tbody tr', { timeout: WAIT });
  await fits('overview');
  await shot(page, 'overview-phone');

  await page.getByTestId('tab-users').click();
  await page.waitForSelector('#users-table tbody tr', { timeout: WAIT });
  await page.click('#users-table tr[data-user="ann00"]');
  await page.waitForSelector('#user-detail[data-state="online"]', { state: 'attached', timeout: WAIT });
  await fits('users');
  await shot(page, 'users-phone');

  await page.getByTestId('tab-groups').click();
  await page.click('#groups-table tr[data-group="room-c"]');
  await page.waitForSelector('[data-testid="group-messages"][data-state="loaded"]', { state: 'attached', timeout: WAIT });
  await fits('groups');
  await shot(page, 'groups-phone');

  await page.getByTestId('tab-publish').click();
  await page.getByTestId('pub-mode-group').check();
  await page.getByTestId('pub-target').fill('vip');
  await page.getByTestId('pub-body').fill('{"text": "from a phone"}');
  await page.getByTestId('pub-send').click();
  await waitText(page, '[data-testid="pub-result"]', /^Delivered to/);
  await fits('publish');
  await shot(page, 'publish-phone');
  assertConsoleClean(page);
});

scenario('polling: every 2 s while the page is visible, none while it is hidden', async (track) => {
  const page = track(await openAdmin('polling', { signIn: false }));
  const asked = [];
  page.on('request', (req) => { if (new URL(req.url()).pathname === '/api/info') asked.push(Date.now()); });
  await signInWith(page, KEY);
  await page.waitForFunction(() => Number(document.querySelector('#chart-connections').dataset.points) >= 3,
    null, { timeout: 3 * POLL_MS + WAIT });
  const gaps = asked.slice(1).map((t, i) => t - asked[i]);
  assert.ok(gaps.every((g) => g > POLL_MS * 0.7 && g < POLL_MS * 1.6), `intervals ${gaps}`);

  // Hidden (another tab in front, a minimised window): the page stops asking.
  const hide = (hidden) => page.evaluate((h) => {
    Object.defineProperty(document, 'hidden', { configurable: true, get: () => h });
    Object.defineProperty(document, 'visibilityState', { configurable: true, get: () => (h ? 'hidden' : 'visible') });
    document.dispatchEvent(new Event('visibilitychange'));
  }, hidden);
  await hide(true);
  await waitText(page, '#status-text', 'Paused while hidden');
  const count = asked.length;
  // The one fixed wait: a window of 2.5 intervals in which nothing may happen.
  await new Promise((resolve) => setTimeout(resolve, POLL_MS * 2.5));
  assert.equal(asked.length, count, 'no request while hidden');

  // Visible again: it asks at once, and the charts break their line over the pause.
  const shownAt = Date.now();
  await hide(false);
  await waitText(page, '#status-text', /^Live/);
  assert.ok(asked.length > count && asked[count] - shownAt < 1000, 'asks again at once');
  assertConsoleClean(page);
});

scenario('/admin is served only by a hub with an API key', async () => {
  if (PAGE_FILE) return; // the page under test is not the hub's
  const served = await fetch(`${hub.httpUrl}admin`);
  assert.equal(served.status, 200);
  assert.match(served.headers.get('content-type'), /^text\/html/);
  assert.match(await served.text(), /<title>wxhub admin<\/title>/);
  const keyless = new HubProcess(await freePort());
  try {
    await keyless.start();
    assert.equal((await fetch(`${keyless.httpUrl}admin`)).status, 404);
  } finally {
    await keyless.kill();
  }
});
