'use strict';
// The app survives the hub and the network going away (the client library does the work;
// these tests check that the app uses it so that nothing is lost): it reconnects, joins
// and subscribes again, delivers what was typed while down, comes back at once when the
// app returns to the foreground or the network returns, notices a hub that went silent,
// keeps its name and room when the hub is slow to answer, and verifies the connection on
// returning from the background so that a message typed then is not lost.

const { test, after } = require('node:test');
const assert = require('node:assert/strict');
const { startHub, freePort } = require('./harness/hub-process');
const { launch, snapshot } = require('./harness/miniprogram');
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
const lines = (page, text) => page.data.messages.filter((m) => m.text === text);

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
  assert.equal(alice.app.hub.queued, 2, 'both wait in the queue');
  assert.equal(alice.wx.toasts.length, 0, 'queued, not failed');
  assert.deepEqual(
    snapshot(a.data.messages.filter((m) => m.mine).map((m) => [m.text, m.statusText])),
    [['sent while down', '发送中…'], ['room, while down', '发送中…']],
    'shown at once, pending'
  );
  assert.equal(a.data.me, 'alice', 'the name is kept while down');
  assert.equal(a.data.status, '连接断开，正在重连…');

  // A new hub on the same port. Bob's short backoff brings him back by himself: joined
  // again (bob is in the member list of the new hub's room) and subscribed again.
  const restartedAt = Date.now();
  hub = await start(port);
  await waitFor(() => b.data.online && members(b) === '["bob"]', {
    what: 'bob to reconnect, re-join and re-subscribe',
    detail: () => [b.data.status, b.data.users],
  });
  assert.equal(bob.app.hub.identity().name, 'bob');
  assert.ok(bob.app.hub.identity().joined);
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
  assert.equal(alice.app.hub.state, 'reconnecting');
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
  assert.equal(alice.app.hub.queued, 0);
  assert.equal(alice.wx.toasts.length, 0);
  await waitFor(() => a.data.messages.filter((m) => m.mine).every((m) => m.statusText === '已送达 1'), {
    what: "alice's lines to be delivered (to bob's one session)",
    detail: () => a.data.messages,
  });
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
  await waitFor(() => mp.app.hub.state === 'reconnecting', { what: 'the drop to be noticed' });
  mp.wx.setNetwork(true);
  await waitFor(() => page.data.joined, {
    timeout: 3000,
    what: 'an immediate reconnect and re-join',
    detail: () => mp.app.hub.state,
  });
  await waitFor(() => page.data.users.includes('dora'), { what: 're-subscribed' });
});

test('the heartbeat notices a hub that stopped answering', async (t) => {
  const hub = await start(undefined);
  const mp = launch({
    config: { hubUrl: hub.url, pingMs: 150, connectTimeoutMs: 500, reconnectBaseMs: 100, reconnectMaxMs: 400 },
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
  await waitFor(() => page.data.joined && page.data.me === 'erin', { what: 'erin to join' });
  await waitFor(() => pongs >= 3, { what: 'pings answered', detail: () => pongs });

  // Frozen: the TCP connection stays up, so no close ever comes. Only the heartbeat can
  // tell; new handshakes hang too, and the connect timeout gives them up.
  hub.pause();
  await waitFor(() => !page.data.online, { timeout: 2000, what: 'the silence to be noticed' });
  assert.equal(page.data.me, 'erin', 'the name is kept');
  const attempts = () => mp.wx.sockets.length;
  const before = attempts();
  await waitFor(() => attempts() >= before + 2, {
    what: 'hung handshakes to be given up and retried',
    detail: () => [attempts(), mp.app.hub.state],
  });

  hub.resume();
  await waitFor(() => page.data.joined, {
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

test('replies later than the request timeout, after a reconnect, keep the name and the room; the next connection joins again', async (t) => {
  const hub = await start(undefined);
  const mp = launch({
    config: { hubUrl: hub.url, requestTimeoutMs: 1000, reconnectBaseMs: 50, reconnectMaxMs: 200 },
    storage: { 'chat.name': 'gina' },
  });
  t.after(() => mp.close());
  const page = mp.openPage(CHAT);
  await waitFor(() => page.data.joined && page.data.users.includes('gina'), { what: 'gina in the room', detail: () => page.data });
  const firstSession = mp.app.hub.identity().session;

  // The connection drops, and on the next one the hub's answers come late (a slow mobile
  // network): the join and the room's subscribe are sent, their replies held back.
  mp.wx.holdIncoming();
  const socketsBefore = mp.wx.sockets.length;
  mp.wx.dropSockets();
  await waitFor(() => mp.wx.sockets.length > socketsBefore && mp.app.hub.state === 'open', {
    what: 'the reconnect',
    detail: () => [mp.app.hub.state, mp.wx.sockets.length],
  });
  await waitFor(() => page.data.status === '正在登录…', { what: 'signing in', detail: () => page.data.status });

  // A request sent after the join times out: the join has gone unanswered for longer than
  // the request timeout by then.
  await assert.rejects(mp.app.hub.ping(), (err) => err.code === 'timeout');
  const id = mp.app.hub.identity();
  assert.equal(id.name, 'gina', 'the name is kept');
  assert.deepEqual(snapshot(id.groups.map((g) => g.group)), ['lobby'], 'the room is kept');
  assert.equal(page.data.me, 'gina', 'the page still shows the name');
  assert.equal(page.data.joined, false);
  assert.equal(page.data.status, '正在登录…', 'not confirmed: signing in, not 已连接');
  assert.equal(mp.wx.storage.get('chat.name'), 'gina');
  assert.equal(mp.wx.toasts.length, 0, 'a slow hub is not an error to show');

  // That connection dies with its late replies; the next one is answered and joins again.
  mp.wx.dropSockets();
  mp.wx.releaseIncoming();
  await waitFor(() => page.data.joined && page.data.status === '已连接', {
    what: 'joined again on the next connection',
    detail: () => [page.data.status, mp.app.hub.identity()],
  });
  assert.notEqual(mp.app.hub.identity().session, firstSession, 'a new session');
  await waitFor(() => page.data.users.includes('gina'), { what: 'in the room again', detail: () => page.data.users });
});

test('a message typed just after returning from the background, when the socket died silently, is delivered exactly once', async (t) => {
  const hub = await start(undefined);
  // No heartbeat would notice within the test: only the check on showing can.
  const alice = launch({ config: Object.assign({ hubUrl: hub.url, verifyTimeoutMs: 500 }, SLOW_RETRY), storage: { 'chat.name': 'hana' } });
  const bob = launch({ config: { hubUrl: hub.url }, storage: { 'chat.name': 'ivan' } });
  t.after(() => {
    alice.close();
    bob.close();
  });
  const a = alice.openPage(CHAT);
  const b = bob.openPage(CHAT);
  await waitFor(() => members(a) === '["hana","ivan"]' && members(b) === '["hana","ivan"]', {
    what: 'both in the room',
    detail: () => [a.data.users, b.data.users],
  });

  // In the background WeChat drops the socket without telling the app.
  alice.hide();
  alice.wx.loseSilently();
  alice.show();
  assert.equal(alice.app.hub.state, 'open', 'the app does not know yet');
  a.onTextInput(input('back again'));
  a.onSend();
  await waitFor(() => lines(b, 'back again').length === 1, {
    timeout: 5000,
    what: 'ivan to get the message typed on return',
    detail: () => [alice.app.hub.state, a.data.messages],
  });
  await waitFor(() => lines(a, 'back again')[0].statusText === '已送达 1', {
    what: 'the line delivered',
    detail: () => a.data.messages,
  });
  // Exactly once: a message sent after it arrives after any second copy would have.
  a.onTextInput(input('and this'));
  a.onSend();
  await waitFor(() => lines(b, 'and this').length === 1, { what: 'the next message', detail: () => b.data.messages });
  assert.equal(lines(b, 'back again').length, 1);
  assert.equal(lines(a, 'back again').length, 1);
  assert.deepEqual(alice.wx.toasts, []);
});

test('offline, messages wait marked pending; past the queue they fail, marked, with the text kept', async (t) => {
  // Nothing listens on this port: every attempt fails and is retried.
  const port = await freePort();
  const mp = launch({
    config: { hubUrl: `ws://127.0.0.1:${port}/ws`, maxQueue: 2, reconnectBaseMs: 50 },
    storage: { 'chat.name': 'jo' },
  });
  t.after(() => mp.close());
  const page = mp.openPage(CHAT);
  await waitFor(() => mp.wx.sockets.length >= 2, { what: 'a retry after the first failure' });
  assert.equal(page.data.me, 'jo', 'the name is kept, unconfirmed');
  assert.equal(page.data.joined, false);

  for (const text of ['one', 'two', 'three']) {
    page.onTextInput(input(text));
    page.onSend();
  }
  await waitFor(() => lines(page, 'three').length && lines(page, 'three')[0].status === 'failed', {
    what: 'the third to fail',
    detail: () => page.data.messages,
  });
  assert.deepEqual(
    snapshot(page.data.messages.map((m) => [m.text, m.status])),
    [['one', 'pending'], ['two', 'pending'], ['three', 'failed']]
  );
  assert.equal(mp.wx.toasts[0].title, '待发送的消息太多，请等网络恢复');
  assert.equal(page.data.text, 'three', 'the text is kept in the input');
});
