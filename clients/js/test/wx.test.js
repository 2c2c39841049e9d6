'use strict';
// The mini-program transport with a small fake `wx` (no WeChat): SocketTask's callbacks
// and its quirks (a close before open is ignored; a failed handshake may report an error,
// a close or both; send and close take option objects), the app lifecycle hooks, and then
// a SocketTask bridged onto a real connection to a real hub.

const { test, after } = require('node:test');
const assert = require('node:assert/strict');
const Wxhub = require('../wxhub.js');
const { WebSocket } = require('./harness/websocket');
const { startHub, hubMissing } = require('./harness/hub');
const { FakeClock } = require('./harness/clock');
const { nextEvent } = require('./harness/wait');

/** A SocketTask the test drives; `wx.connectSocket` makes one per call. */
class FakeTask {
  constructor(opts) {
    this.opts = opts;
    this.cb = { open: [], message: [], error: [], close: [] };
    this.sent = [];
    this.closeCalls = [];
    this.state = 'connecting';
  }
  onOpen(fn) { this.cb.open.push(fn); }
  onMessage(fn) { this.cb.message.push(fn); }
  onError(fn) { this.cb.error.push(fn); }
  onClose(fn) { this.cb.close.push(fn); }
  send(o) {
    assert.equal(typeof o.data, 'string');
    this.sent.push(JSON.parse(o.data));
  }
  close(o) {
    this.closeCalls.push({ code: o.code, reason: o.reason, state: this.state });
    if (this.state === 'connecting') return; // WeChat ignores it
    this.state = 'closed';
  }
  fire(type, res) { this.cb[type].forEach((fn) => fn(res)); }
  open() { this.state = 'open'; this.fire('open', {}); }
}

function fakeWx() {
  const tasks = [];
  const lifecycle = { show: [], network: [] };
  const wx = {
    connectSocket(opts) {
      const task = new FakeTask(opts);
      tasks.push(task);
      return task;
    },
    onAppShow(fn) { lifecycle.show.push(fn); },
    onNetworkStatusChange(fn) { lifecycle.network.push(fn); },
  };
  return { wx, tasks, lifecycle };
}

function setup(options = {}) {
  const { wx, tasks, lifecycle } = fakeWx();
  const clock = new FakeClock();
  const client = new Wxhub.Client(
    Object.assign({ url: 'wss://hub.example.com/ws', transport: Wxhub.wxTransport(wx), clock, random: () => 0.5 }, options)
  );
  const events = [];
  for (const type of ['state', 'open', 'close', 'message']) client.on(type, (e) => events.push([type, e]));
  return { client, tasks, lifecycle, clock, events };
}

test('SocketTask: frames go out as send({data}) and come in from onMessage; the close code comes from onClose', async () => {
  const { client, tasks, events } = setup();
  client.join('alice');
  client.subscribe('room1');
  client.connect();
  assert.equal(tasks[0].opts.url, 'wss://hub.example.com/ws');
  tasks[0].open();
  assert.deepEqual(tasks[0].sent, [
    { type: 'join', name: 'alice', id: 1 },
    { type: 'subscribe', group: 'room1', id: 2 },
  ]);
  tasks[0].fire('message', { data: JSON.stringify({ type: 'joined', id: 1, name: 'alice', session: 5 }) });
  tasks[0].fire('message', { data: '{"type":"message","kind":"broadcast","from":"bob","body":"hi","ts":1}' });
  tasks[0].fire('message', { data: new ArrayBuffer(4) }); // binary: not for us, ignored
  assert.equal(client.identity().session, 5);
  assert.deepEqual(events.filter(([t]) => t === 'message').map(([, m]) => m.body), ['hi']);
  tasks[0].fire('close', { code: 4500, reason: 'unauthorized' });
  assert.equal(client.state, 'closed');
  assert.deepEqual(events.filter(([t]) => t === 'close').map(([, e]) => e), [
    { code: 4500, reason: 'unauthorized', wasOpen: true },
  ]);
});

test('a failed handshake reporting fail, error and close is one failure: one close event, one retry', async () => {
  const { client, tasks, clock, events } = setup();
  client.connect();
  tasks[0].opts.fail({ errMsg: 'connectSocket:fail' });
  tasks[0].fire('error', { errMsg: 'connectSocket:fail' });
  tasks[0].fire('close', { code: 1006, reason: 'abnormal closure' });
  assert.equal(events.filter(([t]) => t === 'close').length, 1);
  assert.equal(client.state, 'reconnecting');
  assert.deepEqual(clock.pending(), [750]);
  await clock.advance(750);
  assert.equal(tasks.length, 2);
  // A failure reported only as an error (some base libraries) still ends the attempt.
  tasks[1].fire('error', { errMsg: 'connectSocket:fail timeout' });
  await clock.advance(1000);
  assert.equal(client.state, 'reconnecting');
  assert.deepEqual(events.filter(([t]) => t === 'close').map(([, e]) => e.reason), [
    'abnormal closure',
    'connectSocket:fail timeout',
  ]);
});

test('a socket given up on before it opened is closed once it opens (WeChat ignores the earlier close)', async () => {
  const { client, tasks, clock, events } = setup({ connectTimeoutMs: 1000 });
  client.connect();
  await clock.advance(1000); // the connect timeout gives up on it
  assert.deepEqual(tasks[0].closeCalls, [], 'not closed while connecting: WeChat would ignore it');
  tasks[0].open(); // it opens after all
  assert.deepEqual(tasks[0].closeCalls, [{ code: 1000, reason: 'connect timeout', state: 'open' }]);
  assert.equal(events.filter(([t]) => t === 'open').length, 0, 'the client never saw it open');
  tasks[0].fire('message', { data: '{"type":"pong"}' });
  assert.equal(client.state, 'reconnecting');
});

test('back in the foreground, or the network back: retry now instead of waiting out the backoff', async () => {
  const { client, tasks, lifecycle } = setup({ reconnectBaseMs: 60000 });
  client.connect();
  tasks[0].fire('close', { code: 1006, reason: '' });
  assert.equal(client.state, 'reconnecting');
  lifecycle.show.forEach((fn) => fn({ scene: 1001 }));
  assert.equal(tasks.length, 2);
  assert.equal(client.state, 'connecting');
  tasks[1].fire('close', { code: 1006, reason: '' });
  lifecycle.network.forEach((fn) => fn({ isConnected: false }));
  assert.equal(tasks.length, 2, 'still offline: nothing to try');
  lifecycle.network.forEach((fn) => fn({ isConnected: true, networkType: 'wifi' }));
  assert.equal(tasks.length, 3);
});

// ---- against a real hub: a SocketTask over a real WebSocket ---------------------------

const skip = hubMissing();
const hubs = [];
after(async () => {
  await Promise.all(hubs.map((h) => h.kill()));
});

/** A `wx` whose SocketTasks are real connections (the harness WebSocket underneath). */
function bridgedWx() {
  return {
    connectSocket(opts) {
      const ws = new WebSocket(opts.url);
      const cb = { open: [], message: [], error: [], close: [] };
      ws.onopen = () => cb.open.forEach((fn) => fn({ header: {} }));
      ws.onmessage = (e) => cb.message.forEach((fn) => fn({ data: e.data }));
      ws.onerror = () => cb.error.forEach((fn) => fn({ errMsg: 'error' }));
      ws.onclose = (e) => cb.close.forEach((fn) => fn({ code: e.code, reason: e.reason }));
      return {
        onOpen: (fn) => cb.open.push(fn),
        onMessage: (fn) => cb.message.push(fn),
        onError: (fn) => cb.error.push(fn),
        onClose: (fn) => cb.close.push(fn),
        send: (o) => ws.send(o.data),
        close: (o) => ws.close(o.code, o.reason),
      };
    },
  };
}

test('the wx transport against a real hub: join, subscribe, publish, a quote', { skip }, async () => {
  const hub = await startHub();
  hubs.push(hub);
  const client = new Wxhub.Client({ url: hub.url, transport: Wxhub.wxTransport(bridgedWx()) });
  const open = nextEvent(client, 'open');
  client.connect();
  await open;
  assert.equal((await client.join('张三')).name, '张三');
  const quote = nextEvent(client, 'quote');
  await client.subscribe('stock.600519');
  await client.subscribe('room1', { presence: true });
  const ack = await client.publish('room1', { text: '你好' });
  assert.equal(ack.delivered, 0, 'alone in the room');
  assert.equal((await quote).quote.symbol, '600519');
  const closed = nextEvent(client, 'close');
  client.close();
  assert.equal((await closed).code, 1000);
});
