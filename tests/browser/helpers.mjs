// What the browser tests share: the hub (and Redis) as processes, Chromium, and the demo
// page's controls. Every wait is for a DOM state or a process event, with a timeout.
//
// Env: WXHUB_BIN (default <repo>/target/debug/wxhub; scripts/test.sh sets it),
// CHROMIUM_BIN (default /usr/bin/chromium, Debian's package), REDIS_SERVER_BIN (default
// /usr/bin/redis-server, for the cluster test).

import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { createServer } from 'node:net';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { chromium } from 'playwright-core';

const here = path.dirname(fileURLToPath(import.meta.url));
export const repo = path.resolve(here, '..', '..');
export const HUB_BIN = path.resolve(repo, process.env.WXHUB_BIN || path.join('target', 'debug', 'wxhub'));
export const CHROMIUM_BIN = process.env.CHROMIUM_BIN || '/usr/bin/chromium';
export const REDIS_BIN = process.env.REDIS_SERVER_BIN || '/usr/bin/redis-server';
export const SHOTS = path.join(repo, 'target', 'browser-screenshots');

export const DESKTOP = { width: 1280, height: 860 };
export const PHONE = { width: 375, height: 812 };
export const WAIT = 10_000; // for any single expected state

/* ------------------------------------------------------------------------------------
 * Processes
 * ---------------------------------------------------------------------------------- */

/** A port that was free a moment ago, so a process can be restarted on the same one. */
export function freePort() {
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

/**
 * A child process whose stderr (and stdout) is kept, started once it prints `ready`.
 * `what` names it in errors.
 */
function startProcess(self, what, bin, args, env, ready) {
  const child = spawn(bin, args, {
    env: { ...process.env, ...env },
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  self.child = child;
  return new Promise((resolve, reject) => {
    const timer = setTimeout(() => fail(new Error(`${what} did not start in ${WAIT} ms`)), WAIT);
    const fail = (err) => {
      clearTimeout(timer);
      reject(new Error(`${err.message}\n--- ${what} log ---\n${self.log}`));
    };
    child.on('error', (e) => fail(new Error(`cannot run ${bin}: ${e.message}`)));
    child.on('exit', (code, signal) => fail(new Error(`${what} exited early (${code ?? signal})`)));
    for (const stream of [child.stdout, child.stderr]) {
      stream.setEncoding('utf8');
      stream.on('data', (chunk) => {
        self.log += chunk;
        if (self.log.includes(ready)) {
          clearTimeout(timer);
          resolve();
        }
      });
    }
  });
}

/** Kills `child` like a crash and waits for it to exit. */
async function killProcess(child) {
  if (!child || child.exitCode !== null || child.signalCode !== null) return;
  const exited = new Promise((resolve) => child.once('exit', resolve));
  child.kill('SIGKILL');
  await exited;
}

/** The hub binary on `port`, with `args` after the defaults the tests rely on. */
export class HubProcess {
  constructor(port, env = {}, args = []) {
    this.port = port;
    this.env = env;
    this.args = args;
    this.child = null;
    this.log = '';
  }

  get httpUrl() {
    return `http://127.0.0.1:${this.port}/`;
  }

  get alive() {
    return this.child !== null && this.child.exitCode === null && this.child.signalCode === null;
  }

  /** Starts the hub and resolves once it logs that it is listening. */
  start() {
    const args = ['--bind', `127.0.0.1:${this.port}`, '--tick-ms', '200', '--seed', '42', ...this.args];
    return startProcess(this, 'the hub', HUB_BIN, args, { RUST_LOG: 'info', ...this.env },
      `wxhub listening on http://127.0.0.1:${this.port}/`)
      .catch((e) => { throw new Error(`${e.message}\n(cargo build, or set WXHUB_BIN)`); });
  }

  /** Resolves once `GET /readyz` answers 200 (cluster mode: once Redis is reachable). */
  async ready(timeout = WAIT) {
    const deadline = Date.now() + timeout;
    let last = 'no answer';
    while (Date.now() < deadline) {
      try {
        const res = await fetch(`${this.httpUrl}readyz`);
        if (res.ok) return;
        last = `${res.status} ${(await res.text()).trim()}`;
      } catch (e) {
        last = e.message;
      }
      // Polling an HTTP endpoint: the pause paces the requests, the deadline decides.
      await new Promise((resolve) => setTimeout(resolve, 50));
    }
    throw new Error(`${this.httpUrl}readyz not 200 in ${timeout} ms (${last})\n--- hub log ---\n${this.log}`);
  }

  /** Kills the hub like a crash (no goodbye to the clients) and waits for it to exit. */
  kill() {
    return killProcess(this.child);
  }
}

/** A redis-server of the test's own, on a free port, keeping nothing on disk. */
export class RedisProcess {
  constructor(port) {
    this.port = port;
    this.child = null;
    this.log = '';
  }

  get url() {
    return `redis://127.0.0.1:${this.port}/0`;
  }

  start() {
    const args = ['--port', String(this.port), '--bind', '127.0.0.1', '--save', '', '--appendonly', 'no'];
    return startProcess(this, 'redis-server', REDIS_BIN, args, {}, 'Ready to accept connections')
      .catch((e) => { throw new Error(`${e.message}\n(apt-get install redis-server, or set REDIS_SERVER_BIN)`); });
  }

  kill() {
    return killProcess(this.child);
  }
}

/** Headless Chromium; `extraArgs` after the defaults. */
export async function launchChromium(extraArgs = []) {
  try {
    return await chromium.launch({
      executablePath: CHROMIUM_BIN,
      args: ['--headless', '--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run',
        '--disable-background-networking', '--disable-component-update', '--disable-sync', ...extraArgs],
    });
  } catch (e) {
    throw new Error(`cannot start Chromium at ${CHROMIUM_BIN} (apt-get install -y chromium, or set CHROMIUM_BIN)`, { cause: e });
  }
}

/* ------------------------------------------------------------------------------------
 * The demo page
 * ---------------------------------------------------------------------------------- */

/** Lets a test see what the page sends and wait for what the hub sends it. */
export function watchEvents(page) {
  page.eventWaiters = new Set();
  page.sent = [];
  page.on('websocket', (ws) => ws.on('framesent', ({ payload }) => page.sent.push(JSON.parse(payload))));
  page.on('websocket', (ws) => ws.on('framereceived', ({ payload }) => {
    let event;
    try { event = JSON.parse(payload); } catch { return; }
    for (const waiter of page.eventWaiters) waiter.offer(event);
  }));
}

/** The `count`-th hub event to `page` from now on that `match`es (all of them, in order). */
export function nextEvents(page, match, count, timeout = WAIT) {
  return new Promise((resolve, reject) => {
    const seen = [];
    const waiter = {
      offer: (event) => {
        if (!match(event)) return;
        seen.push(event);
        if (seen.length < count) return;
        page.eventWaiters.delete(waiter);
        clearTimeout(timer);
        resolve(seen);
      },
    };
    const timer = setTimeout(() => {
      page.eventWaiters.delete(waiter);
      reject(new Error(`${page.label}: ${seen.length} of ${count} matching hub events in ${timeout} ms`));
    }, timeout);
    page.eventWaiters.add(waiter);
  });
}

/** The next hub event to `page` that `match`es. */
export const nextEvent = (page, match, timeout = WAIT) => nextEvents(page, match, 1, timeout).then((events) => events[0]);

export const waitState = (page, state, timeout = WAIT) =>
  page.waitForSelector(`#status[data-state="${state}"]`, { state: 'attached', timeout });

export async function join(page, name) {
  await page.fill('#name-input', name);
  await page.click('#join-btn');
  await page.waitForSelector('#me:not([hidden])', { timeout: WAIT });
  assert.equal(await page.textContent('#me-name'), name);
  // The first users reply follows the lobby subscription: once we are listed, presence
  // events of later arrivals will reach this page.
  await page.waitForSelector(`#users li[data-user="${name}"]`, { state: 'attached', timeout: WAIT });
}

/** Waits until the online list shows exactly `names` (sorted, as the hub sends them). */
export async function waitUsers(page, names) {
  try {
    await page.waitForFunction(
      (want) => JSON.stringify([...document.querySelectorAll('#users li')].map((li) => li.dataset.user)) === want,
      JSON.stringify(names), { timeout: WAIT });
  } catch (e) {
    const shown = await page.$$eval('#users li', (lis) => lis.map((li) => li.dataset.user));
    throw new Error(`${page.label}: online list ${JSON.stringify(shown)}, expected ${JSON.stringify(names)}`, { cause: e });
  }
}

export async function subscribe(page, group) {
  await page.fill('#group-input', group);
  await page.click('#subscribe-btn');
  await page.waitForSelector(`#groups li[data-group="${group}"][data-state="subscribed"]`, { timeout: WAIT });
}

export async function send(page, mode, target, text) {
  await page.selectOption('#send-mode', mode);
  if (mode !== 'broadcast') await page.fill('#send-to', target);
  await page.fill('#send-text', text);
  await page.click('#send-btn');
}

/** The log entry of a received message. */
export const received = (page, kind, from, text) =>
  page.locator(`#log li[data-dir="in"][data-kind="${kind}"][data-from="${from}"]`, { hasText: text });

/** The delivery status of our own message. */
export const delivery = (page, text) =>
  page.locator('#log li[data-dir="out"]', { hasText: text }).locator('.delivery');

export const shot = (page, name) => page.screenshot({ path: path.join(SHOTS, `${name}.png`), fullPage: true });
