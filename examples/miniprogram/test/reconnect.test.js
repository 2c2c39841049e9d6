'use strict';
// The socket module survives the hub going away: it reconnects with backoff, joins and
// subscribes again, delivers what was sent while it was down, comes back at once when
// the app returns to the foreground or the network returns, and notices a hub that went
// silent without closing anything.

const { test, after } = require('node:test');
const assert = require('node:assert/strict');
const { startHub, freePort } = require('./harness/hub-process');
const { launch } = require('./harness/miniprogram');
const { waitFor } = require('./harness/wait');

const CHAT = 'pages/chat/chat';
const STOCK = 'pages/stock/stock';

const hubs = [];
async function start(port, args) {
  const hub = await startHub({ port, args });
  hubs.push(hub);
  return hub;
}
after(async () => {
  await Promise.all(hubs.map((h) => h.kill()));
});

const input = (value) => ({ detail: { value } });
const hasMessage = (page, fields) =>
  page.data.messages.some((m) => Object.keys(fields).every((k) => m[k] === fields[k]));
const members = (page) => JSON.stringify(page.data.users);

// A backoff so long that only the foreground (or network) event can bring the socket
// back within a test's timeout: the first retry comes after 15 to 30 s.
const SLOW_RETRY = { reconnectBaseMs: 30000, reconnectMaxMs: 60000 };
const FAST_RETRY = { reconnectBaseMs: 100, reconnectMaxMs: 1000 };

test('after a hub restart: reconnect, re-join, re-subscribe, deliver what was queued', async (t) => {
  const port = await freePort();
  let hub = await start(port);
  const url = hub.url;
  const alice = launch({ config: Object.assign({ hubUrl: url }, SLOW_RETRY), storage: { 'chat.name': 'alice' } });
  const bob = launch({ config: Object.assign({ hubUrl: url }, FAST_RETRY), storage: { 'chat.name': 'bob' } });
  t.after(() => {
    alice.close();
    bob.close();
  });
  const a = alice.openPage(CHAT);
  const b = bob.openPage(CHAT);
  const quotes = bob.openPage(STOCK);
  await waitFor(() => members(a) === '["alice","bob"]' && members(b) === '["alice","bob"]', {
    what: 'both in the room',
    detail: () => [a.data.users, b.data.users],
  });
  await waitFor(() => quotes.data.ticks > 0 && quotes.data.chart.points > 0, { what: "bob's quotes" });

  // The hub dies.
  await hub.kill();
  await waitFor(() => !a.data.online && !b.data.online && !quotes.data.online, {
    what: 'both to notice',
    detail: () => [a.data.status, b.data.status],
  });

  // Alice writes while it is down: to bob directly, and to the room.
  a.onPickUser({ currentTarget: { dataset: { name: 'bob' } } });
  a.onTextInput(input('sent while down'));
  a.onSend();
  a.onModeChange(input('group'));
  a.onTextInput(input('room, while down'));
  a.onSend();
  assert.equal(alice.app.hub.queue.length, 2, 'both wait in the queue');
  assert.equal(alice.wx.toasts.length, 0, 'queued, not failed');

  // A new hub on the same port. Bob's short backoff brings him back by himself: joined
  // again (bob is in the member list of the new hub's room) and subscribed again.
  const restartedAt = Date.now();
  hub = await start(port);
  await waitFor(() => b.data.online && members(b) === '["bob"]', {
    what: 'bob to reconnect, re-join and re-subscribe',
    detail: () => [b.data.status, b.data.users],
  });
  assert.equal(bob.app.hub.session.name, 'bob');
  const ticksBefore = quotes.data.ticks;
  const lastBefore = quotes.data.lastTick;
  await waitFor(() => quotes.data.ticks >= ticksBefore + 2 && quotes.data.lastTick > lastBefore, {
    what: "bob's quotes to resume",
    detail: () => quotes.data,
  });
  // The new hub has a new market: its history replaced the old chart.
  await waitFor(() => quotes.series.length > 1 && quotes.series.every((q) => q.ts >= restartedAt), {
    what: "the chart to show the new hub's history only",
    detail: () => quotes.series.map((q) => q.ts - restartedAt),
  });

  // Alice's retry is 15 s away; she brings the app to the foreground and is back at once.
  assert.equal(alice.app.hub.state, 'waiting');
  alice.show();
  await waitFor(() => hasMessage(b, { kind: 'direct', from: 'alice', text: 'sent while down' }), {
    timeout: 3000,
    what: 'the queued direct message to reach bob',
    detail: () => [alice.app.hub.state, b.data.messages],
  });
  for (const page of [a, b]) {
    await waitFor(() => hasMessage(page, { kind: 'group', from: 'alice', text: 'room, while down' }), {
      what: 'the queued room message, to both (so alice re-subscribed too)',
      detail: () => page.data.messages,
    });
  }
  await waitFor(() => members(a) === '["alice","bob"]' && members(b) === '["alice","bob"]', {
    what: 'both member lists again',
    detail: () => [a.data.users, b.data.users],
  });
  assert.equal(alice.app.hub.queue.length, 0);
  assert.equal(alice.wx.toasts.length, 0);
  // The direct message shows once in alice's own list: sent after the reconnect, not twice.
  assert.equal(a.data.messages.filter((m) => m.text === 'sent while down').length, 1);
});

test('the network coming back reconnects at once', async (t) => {
  const port = await freePort();
  await start(port);
  const mp = launch({
    config: Object.assign({ hubUrl: `ws://127.0.0.1:${port}/ws` }, SLOW_RETRY),
    storage: { 'chat.name': 'dora' },
  });
  t.after(() => mp.close());
  const page = mp.openPage(CHAT);
  await waitFor(() => page.data.me === 'dora' && page.data.online, { what: 'dora online' });

  mp.wx.setNetwork(false);
  await waitFor(() => mp.app.hub.state === 'waiting', { what: 'the drop to be noticed' });
  mp.wx.setNetwork(true);
  await waitFor(() => page.data.online && mp.app.hub.session !== null, {
    timeout: 3000,
    what: 'an immediate reconnect and re-join',
    detail: () => mp.app.hub.state,
  });
  await waitFor(() => page.data.users.includes('dora'), { what: 're-subscribed' });
});

test('the heartbeat notices a hub that stopped answering', async (t) => {
  const hub = await start(undefined);
  const mp = launch({
    config: { hubUrl: hub.url, heartbeatMs: 150, connectTimeoutMs: 500, reconnectBaseMs: 100, reconnectMaxMs: 400 },
    storage: { 'chat.name': 'erin' },
  });
  t.after(() => {
    hub.resume();
    mp.close();
  });
  let pongs = 0;
  mp.app.hub.on('pong', () => {
    pongs += 1;
  });
  const page = mp.openPage(CHAT);
  await waitFor(() => page.data.me === 'erin', { what: 'erin to join' });
  await waitFor(() => pongs >= 3, { what: 'pings answered', detail: () => pongs });

  // Frozen: the TCP connection stays up, so no close ever comes. Only the heartbeat can
  // tell; new handshakes hang too, and the connect timeout gives them up.
  hub.pause();
  await waitFor(() => !page.data.online, { timeout: 2000, what: 'the silence to be noticed' });
  const attempts = () => mp.wx.sockets.length;
  const before = attempts();
  await waitFor(() => attempts() >= before + 2, {
    what: 'hung handshakes to be given up and retried',
    detail: () => [attempts(), mp.app.hub.state],
  });

  hub.resume();
  await waitFor(() => page.data.online && mp.app.hub.session !== null, {
    timeout: 4000,
    what: 'the reconnect once the hub answers again',
    detail: () => mp.app.hub.state,
  });
  await waitFor(() => page.data.users.includes('erin'), { what: 're-subscribed' });
  // Handshakes that finished after being given up were closed, not kept.
  await waitFor(() => mp.wx.sockets.filter((s) => s.readyState === 1).length === 1, {
    what: 'one open socket only',
    detail: () => mp.wx.sockets.map((s) => s.readyState),
  });
});
