// Cluster mode in a real Chromium, as README's "Run a cluster" has a newcomer try it: one
// redis-server, three hub nodes sharing it, two demo pages on two different nodes that
// join and chat (group and direct messages, both ways) and see each other online.
//
//   cd tests/browser && npm ci && npm test
//
// Env: see helpers.mjs (WXHUB_BIN, CHROMIUM_BIN, REDIS_SERVER_BIN). No load balancer here:
// each page opens its node's own address, so the two are on different nodes for sure.
// Every wait is for a DOM state, a hub event or a process event, with a timeout.

import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { mkdirSync, readdirSync, rmSync } from 'node:fs';
import path from 'node:path';

import {
  DESKTOP, SHOTS, WAIT, HubProcess, RedisProcess, delivery, freePort, join, launchChromium,
  nextEvent, received, send, shot, subscribe, waitState, waitUsers, watchEvents,
} from './helpers.mjs';

let redis;
const nodes = [];
let browser;
const pageErrors = [];

before(async () => {
  // Its pictures go in a folder of their own, so that the demo test's cleaning leaves them.
  mkdirSync(path.join(SHOTS, 'cluster'), { recursive: true });
  for (const file of readdirSync(path.join(SHOTS, 'cluster'))) {
    if (file.startsWith('FAILED-')) rmSync(path.join(SHOTS, 'cluster', file));
  }
  redis = new RedisProcess(await freePort());
  // Whatever happens to this process, its children do not outlive it.
  process.on('exit', () => {
    redis.child?.kill('SIGKILL');
    for (const node of nodes) node.child?.kill('SIGKILL');
  });
  await redis.start();
  for (const name of ['n1', 'n2', 'n3']) {
    const node = new HubProcess(await freePort(), {}, ['--redis', redis.url, '--node-name', name]);
    node.name = name;
    nodes.push(node);
  }
  await Promise.all(nodes.map((node) => node.start()));
  // Listening is not enough: a node routes across the cluster once it is subscribed on
  // Redis, which /readyz says.
  await Promise.all(nodes.map((node) => node.ready()));
  browser = await launchChromium();
});

after(async () => {
  await browser?.close();
  await Promise.all(nodes.map((node) => node.kill()));
  await redis?.kill();
});

async function openDemo(label, node) {
  const context = await browser.newContext({ viewport: DESKTOP, deviceScaleFactor: 1 });
  const page = await context.newPage();
  page.label = label;
  page.on('pageerror', (err) => pageErrors.push(`${label}: ${err.stack || err.message}`));
  watchEvents(page);
  await page.goto(node.httpUrl);
  await waitState(page, 'open');
  return page;
}

test('two pages on two nodes of a cluster chat: group and direct messages both ways, one online list', { timeout: 60_000 }, async () => {
  const [n1, , n3] = nodes;
  const pages = [];
  try {
    const alice = await openDemo('alice-n1', n1);
    pages.push(alice);
    const bob = await openDemo('bob-n3', n3);
    pages.push(bob);
    // The page connects to the hub it was served from.
    assert.equal(await alice.inputValue('#hub-url'), `ws://127.0.0.1:${n1.port}/ws`);
    assert.equal(await bob.inputValue('#hub-url'), `ws://127.0.0.1:${n3.port}/ws`);

    await join(alice, 'alice');
    await join(bob, 'bob');
    // Each node has one of them: both lists come from the cluster's presence in Redis.
    await waitUsers(alice, ['alice', 'bob']);
    await waitUsers(bob, ['alice', 'bob']);
    for (const page of [alice, bob]) {
      const refreshed = nextEvent(page, (ev) => ev.type === 'users');
      await page.click('#refresh-users');
      assert.deepEqual((await refreshed).users, ['alice', 'bob'], `${page.label}: users`);
    }

    // Group: both subscribe to room1 and each writes once.
    await subscribe(alice, 'room1');
    await subscribe(bob, 'room1');
    await send(alice, 'group', 'room1', 'hello from node 1');
    const fromAlice = received(bob, 'group', 'alice', 'hello from node 1');
    await fromAlice.waitFor({ timeout: WAIT });
    assert.equal(await fromAlice.locator('.tag').textContent(), '#room1');
    await send(bob, 'group', 'room1', 'hello from node 3');
    const fromBob = received(alice, 'group', 'bob', 'hello from node 3');
    await fromBob.waitFor({ timeout: WAIT });
    assert.equal(await fromBob.locator('.tag').textContent(), '#room1');

    // Direct, both ways; alice picks bob from her online list.
    await alice.click('#users li[data-user="bob"] button');
    assert.equal(await alice.inputValue('#send-to'), 'bob');
    await alice.fill('#send-text', 'psst, bob');
    await alice.click('#send-btn');
    await received(bob, 'direct', 'alice', 'psst, bob').waitFor({ timeout: WAIT });
    await send(bob, 'direct', 'alice', 'psst, alice');
    await received(alice, 'direct', 'bob', 'psst, alice').waitFor({ timeout: WAIT });

    // Every sent message was acknowledged, and each page shows each message once (its
    // own copy comes back through Redis like the others').
    for (const [page, texts] of [[alice, ['hello from node 1', 'psst, bob']], [bob, ['hello from node 3', 'psst, alice']]]) {
      for (const text of texts) {
        await delivery(page, text).and(page.locator('[data-status="delivered"]')).waitFor({ timeout: WAIT });
        await delivery(page, text).filter({ hasText: 'and to the other nodes' }).waitFor({ timeout: WAIT });
      }
      for (const text of ['hello from node 1', 'hello from node 3', 'psst, bob', 'psst, alice']) {
        assert.equal(await page.locator('#log li', { hasText: text }).count(), 1, `${page.label} shows ${text} once`);
      }
    }
    await shot(alice, 'cluster/alice-n1');
    await shot(bob, 'cluster/bob-n3');
    assert.deepEqual(pageErrors, [], 'uncaught errors in the pages');
  } catch (err) {
    for (const page of pages) await shot(page, `cluster/FAILED-${page.label}`).catch(() => {});
    for (const node of nodes) console.error(`--- ${node.name} log (last 2000 chars) ---\n${node.log.slice(-2000)}`);
    throw err;
  } finally {
    for (const page of pages) await page.context().close().catch(() => {});
  }
});
