'use strict';
// The library against a real hub ($WXHUB_BIN), through the browser transport (with the
// harness's WebSocket over `net`): replies by id, the offline queue, the replay order after
// the hub restarts on the same port, a slow network that must not cost the identity, and
// no reconnect after 4500.

const { test, after } = require('node:test');
const assert = require('node:assert/strict');
const Wxhub = require('../wxhub.js');
const { WebSocket } = require('./harness/websocket');
const { startHub, freePort, hubMissing, mintToken } = require('./harness/hub');
const { slowTransport } = require('./harness/transport');
const { FakeClock } = require('./harness/clock');
const { nextEvent, until } = require('./harness/wait');

const skip = hubMissing();
const hubs = [];
const clients = [];

async function start(options) {
  const hub = await startHub(options);
  hubs.push(hub);
  return hub;
}

function client(url, options = {}) {
  const c = new Wxhub.Client(
    Object.assign(
      { url, transport: Wxhub.browserTransport(WebSocket), reconnectBaseMs: 50, reconnectMaxMs: 200 },
      options
    )
  );
  clients.push(c);
  return c;
}

/** A client connected and open. */
async function connected(url, options) {
  const c = client(url, options);
  const open = nextEvent(c, 'open');
  c.connect();
  await open;
  return c;
}

after(async () => {
  clients.forEach((c) => c.close());
  await Promise.all(hubs.map((h) => h.kill()));
});

test('commands resolve with their own replies; error replies reject with the hub code', { skip }, async () => {
  const hub = await start();
  const alice = await connected(hub.url);
  const joined = await alice.join('alice');
  assert.equal(joined.type, 'joined');
  assert.equal(joined.name, 'alice');
  assert.equal(typeof joined.session, 'number');
  const sub = await alice.subscribe('room1', { presence: true });
  assert.deepEqual([sub.type, sub.group, sub.members], ['subscribed', 'room1', 1]);
  const echo = nextEvent(alice, 'message', (m) => m.group === 'room1');
  const ack = await alice.publish('room1', { text: 'hi room' });
  // Alone in the room: its own copy arrives, and `delivered` counts nobody else.
  assert.deepEqual([ack.type, ack.delivered], ['ack', 0]);
  assert.deepEqual((await echo).body, { text: 'hi room' });
  await assert.rejects(alice.direct('nobody', 'hi'), (err) => err.code === 'not_found' && err.reply.type === 'error');
  await assert.rejects(alice.subscribe('no spaces allowed'), { code: 'invalid_group' });
  await assert.rejects(alice.publish('stock', 'x'), { code: 'forbidden' });
  // Many at once: each promise gets the reply with its own id.
  const replies = await Promise.all([alice.ping(), alice.users(), alice.history('600519', { limit: 1 }), alice.ping()]);
  assert.deepEqual(replies.map((r) => r.type), ['pong', 'users', 'history', 'pong']);
  assert.deepEqual(replies[1].users, ['alice']);
  assert.deepEqual(alice.identity(), {
    name: 'alice',
    joined: true,
    session: joined.session,
    error: null,
    groups: [{ group: 'room1', presence: true, subscribed: true, error: null }],
  });
});

test('what is sent while offline waits in the queue and goes out, in order, after the join', { skip }, async () => {
  const hub = await start();
  const bob = await connected(hub.url);
  await bob.join('bob');
  await bob.subscribe('room1');
  const got = [];
  bob.on('message', (m) => got.push(m.body));
  const alice = client(hub.url);
  alice.join('alice');
  const acks = [1, 2, 3].map((n) => alice.publish('room1', n));
  assert.equal(alice.queued, 3);
  alice.connect();
  assert.deepEqual((await Promise.all(acks)).map((a) => a.delivered), [1, 1, 1]);
  await until(bob, () => got.length === 3, 'bob to get the three');
  assert.deepEqual(got, [1, 2, 3]);
});

test('after a hub restart on the same port: join, then the subscriptions in the order made, then the queue', { skip }, async () => {
  const port = await freePort();
  let hub = await start({ port });
  const recorder = slowTransport(Wxhub.browserTransport(WebSocket), 0);
  const alice = await connected(hub.url, { transport: recorder });
  await alice.join('alice');
  await Promise.all([
    alice.subscribe('room1', { presence: true }),
    alice.subscribe('stock.600519'),
    alice.subscribe('room2'),
  ]);
  await alice.unsubscribe('room2');
  await alice.subscribe('room2'); // made again: now last

  const down = nextEvent(alice, 'state', (s) => s.state === 'reconnecting');
  await hub.kill();
  await down;
  assert.equal(alice.identity().joined, false);
  const queued = alice.publish('room1', 'while down');
  hub = await start({ port });
  const echo = nextEvent(alice, 'message', (m) => m.body === 'while down');
  const ack = await queued;
  assert.equal(ack.delivered, 0);
  // Her own copy came back: the subscription was in place before the publish.
  await echo;
  await until(alice, () => alice.identity().joined && alice.identity().groups.every((g) => g.subscribed), 'the replay');
  const last = recorder.connections[recorder.connections.length - 1].sent;
  assert.deepEqual(
    last.filter((f) => f.type !== 'ping').map((f) => [f.type, f.name || f.group]),
    [
      ['join', 'alice'],
      ['subscribe', 'room1'],
      ['subscribe', 'stock.600519'],
      ['subscribe', 'room2'],
      ['publish', 'room1'],
    ]
  );
  assert.equal(last.find((f) => f.group === 'room1' && f.type === 'subscribe').presence, true);
  // And the hub agrees.
  const carol = await connected(hub.url);
  await carol.join('carol');
  assert.deepEqual((await carol.users({ group: 'room2' })).users, ['alice']);
});

test('a slow network: the join times out, yet its late reply still joins, and nothing is dropped', { skip }, async () => {
  const hub = await start();
  const slow = slowTransport(Wxhub.browserTransport(WebSocket), 0);
  const alice = await connected(hub.url, { transport: slow, requestTimeoutMs: 150, pingMs: 0 });
  slow.delayMs = 600; // from now on, what the hub says arrives 600 ms late
  const joinOutcome = alice.join('alice').then(() => 'joined', (err) => err.code);
  const subOutcome = alice.subscribe('room1').then(() => 'subscribed', (err) => err.code);
  assert.equal(await joinOutcome, 'timeout');
  assert.equal(await subOutcome, 'timeout');
  assert.equal(alice.identity().name, 'alice', 'a timeout is not a refusal');
  assert.equal(alice.identity().groups.length, 1);
  await until(alice, () => alice.identity().joined && alice.identity().groups[0].subscribed, 'the late replies');
  assert.equal(slow.connections.length, 1, 'no reconnect was needed');
});

test('a hub that stops answering: the join times out, and the next connection joins under the kept name', { skip }, async () => {
  const port = await freePort();
  let hub = await start({ port });
  const alice = await connected(hub.url, { requestTimeoutMs: 200, pingMs: 0 });
  await hub.pause();
  await assert.rejects(alice.join('alice'), { code: 'timeout' });
  await assert.rejects(alice.subscribe('room1'), { code: 'timeout' });
  assert.deepEqual(alice.identity(), {
    name: 'alice',
    joined: false,
    session: null,
    error: null,
    groups: [{ group: 'room1', presence: false, subscribed: false, error: null }],
  });
  await hub.kill(); // the frozen hub dies; the connection with it
  hub = await start({ port });
  await until(alice, () => alice.identity().joined && alice.identity().groups[0].subscribed, 'the rejoin', {
    timeout: 8000,
  });
  const bob = await connected(hub.url);
  await bob.join('bob');
  assert.deepEqual((await bob.users({ group: 'room1' })).users, ['alice']);
});

test('a hub that stops answering is noticed by the heartbeat: dropped, then reconnected when it is back', { skip }, async () => {
  const hub = await start();
  const alice = await connected(hub.url, { pingMs: 150 });
  await alice.join('alice');
  const dropped = nextEvent(alice, 'close');
  await hub.pause();
  assert.deepEqual(await dropped, { code: 1006, reason: 'heartbeat timeout', wasOpen: true });
  const back = until(alice, () => alice.identity().joined, 'the rejoin');
  hub.resume();
  await back;
});

test('three bad tokens close with 4500: state closed with the code, no reconnect; a new token and connect() recover', { skip }, async () => {
  const hub = await start({ args: ['--auth-secret', 's'] });
  const clock = new FakeClock(); // every timer the client arms shows here; none should be a retry
  const recorder = slowTransport(Wxhub.browserTransport(WebSocket), 0);
  const alice = client(hub.url, { transport: recorder, clock });
  const open = nextEvent(alice, 'open');
  alice.connect();
  await open;
  await assert.rejects(alice.join('alice', { token: 'bad1' }), { code: 'unauthorized' });
  assert.equal(alice.identity().name, null, 'a refused token is not replayed');
  assert.equal(alice.identity().error, 'unauthorized');
  await assert.rejects(alice.join('alice', { token: 'bad2' }), { code: 'unauthorized' });
  const closed = nextEvent(alice, 'state', (s) => s.state === 'closed');
  const close = nextEvent(alice, 'close');
  await assert.rejects(alice.join('alice', { token: 'bad3' }), (err) => ['unauthorized', 'closed'].includes(err.code));
  assert.deepEqual(await closed, { state: 'closed', code: 4500, reason: 'unauthorized' });
  assert.deepEqual(await close, { code: 4500, reason: 'unauthorized', wasOpen: true });
  assert.deepEqual(clock.pending(), [], 'no retry armed');
  await assert.rejects(alice.broadcast('x'), { code: 'closed' });
  assert.equal(recorder.connections.length, 1);

  const token = mintToken('alice', 's');
  const joined = alice.join('alice', { token });
  alice.connect();
  assert.equal((await joined).name, 'alice');
  assert.equal(recorder.connections.length, 2);
  assert.deepEqual(recorder.connections[1].sent[0], { type: 'join', name: 'alice', token, id: 4 });
});

test("the README's ten lines work as written", { skip }, async () => {
  const hub = await start();
  const readme = require('node:fs').readFileSync(require('node:path').join(__dirname, '..', 'README.md'), 'utf8');
  const code = /```js\n([\s\S]*?)```/.exec(readme)[1];
  assert.ok(code.split('\n').filter(Boolean).length <= 10, 'ten lines');
  const logs = [];
  let resolveDelivered;
  const delivered = new Promise((resolve) => (resolveDelivered = resolve));
  const console = {
    log: (...args) => {
      logs.push(args.join(' '));
      if (args[0] === 'delivered to') resolveDelivered(args[1]);
    },
  };
  const url = hub.url;
  const had = Object.getOwnPropertyDescriptor(globalThis, 'WebSocket');
  globalThis.WebSocket = WebSocket; // the default transport takes the global one, as in a browser
  try {
    const run = new Function('require', 'console', code.replace("'wss://hub.example.com/ws'", JSON.stringify(url)) + '\nreturn hub;');
    const app = run((name) => (name === 'wxhub-client' ? Wxhub : require(name)), console);
    clients.push(app);
    // Alone in room1: delivered to nobody else.
    assert.equal(await delivered, 0);
  } finally {
    if (had) Object.defineProperty(globalThis, 'WebSocket', had);
    else delete globalThis.WebSocket;
  }
  await until(clients[clients.length - 1], () => logs.some((l) => l === 'alice came room1') && logs.some((l) => l.startsWith('alice: ')), 'the presence and the echo');
  assert.ok(logs.includes('hub is open'), logs.join('\n'));
});

const globalWs = typeof globalThis.WebSocket === 'function';
test('the browser transport with the runtime\'s own WebSocket', { skip: skip || (!globalWs && 'no global WebSocket (Node 22+, or --experimental-websocket)') }, async () => {
  const hub = await start();
  const c = await connected(hub.url, { transport: Wxhub.browserTransport() });
  await c.join('native');
  const got = nextEvent(c, 'message');
  await c.broadcast('hello');
  assert.equal((await got).body, 'hello');
  const closed = nextEvent(c, 'close');
  c.close();
  assert.equal((await closed).code, 1000);
});

/**
 * A transport that records every frame the hub sends, and can make the network fail
 * right after the hub answered: `cutOn(match)` swallows the first frame that matches and
 * reports the connection lost (1006), as a phone losing its network would.
 */
function lossyTransport(inner) {
  const t = {
    received: [],
    cut: null,
    open(url, h) {
      let dead = false;
      const socket = inner.open(url, {
        onOpen: () => dead || h.onOpen(),
        onMessage: (text) => {
          if (dead) return;
          const frame = JSON.parse(text);
          t.received.push(frame);
          if (t.cut && t.cut(frame)) {
            t.cut = null;
            dead = true;
            socket.close(1000, 'cut');
            h.onClose({ code: 1006, reason: '' });
            return;
          }
          h.onMessage(text);
        },
        onClose: (e) => dead || h.onClose(e),
        onError: (e) => dead || h.onError(e),
      });
      return socket;
    },
    cutOn(match) {
      t.cut = match;
    },
    /** Makes the network fail now: the connection is lost without a word from the hub. */
    drop() {
      t.cut = () => true;
    },
  };
  return t;
}

test('a message whose ack was lost with the connection is sent again with its mid; the receiver shows it once', { skip }, async () => {
  const hub = await start();
  const bobNet = lossyTransport(Wxhub.browserTransport(WebSocket));
  const bob = await connected(hub.url, { transport: bobNet });
  await bob.join('bob');
  await bob.subscribe('room1');
  const got = [];
  bob.on('message', (m) => got.push(m.body));
  const aliceNet = lossyTransport(Wxhub.browserTransport(WebSocket));
  const alice = await connected(hub.url, { transport: aliceNet });
  await alice.join('alice');
  // The hub routes the message and acks it; the ack is lost with alice's connection.
  aliceNet.cutOn((f) => f.type === 'ack');
  const reconnected = nextEvent(alice, 'open');
  const ack = alice.publish('room1', 'once');
  await reconnected;
  assert.equal((await ack).delivered, 1, 'the ack of the copy sent again');
  await alice.publish('room1', 'live');
  await until(bob, () => got.length === 2, 'the live message at bob');
  assert.deepEqual(got, ['once', 'live']);
  // The hub did deliver it twice, with one mid: bob's client dropped the repeat.
  const copies = bobNet.received.filter((f) => f.type === 'message' && f.body === 'once');
  assert.equal(copies.length, 2);
  assert.equal(copies[0].mid, copies[1].mid);
  assert.equal(copies[0].from, 'alice');
});

test('a client whose connection dropped recovers what it missed, once; after a hub restart it is told it cannot', { skip }, async () => {
  const port = await freePort();
  let hub = await start({ port });
  const bobNet = lossyTransport(Wxhub.browserTransport(WebSocket));
  const bob = await connected(hub.url, { transport: bobNet });
  await bob.join('bob');
  await bob.subscribe('room1');
  const got = [];
  bob.on('message', (m) => got.push(m.body));
  const recoveries = [];
  bob.on('recovery', (r) => recoveries.push([r.user || r.group, r.recovered]));
  const alice = await connected(hub.url);
  await alice.join('alice');
  await alice.publish('room1', 'before');
  await until(bob, () => got.length === 1, 'the first message');
  // Bob's network fails on the next frame (alice's next message), which he never sees.
  bobNet.drop();
  const lost = nextEvent(bob, 'close');
  await alice.publish('room1', 'missed 1');
  await lost;
  await alice.publish('room1', 'missed 2');
  const stored = await alice.direct('bob', 'missed direct');
  assert.deepEqual([stored.delivered, stored.stored], [0, true]);
  await until(bob, () => recoveries.length === 2, 'both recoveries');
  assert.deepEqual(recoveries, [['bob', true], ['room1', true]]);
  await alice.publish('room1', 'live');
  await until(bob, () => got.includes('live'), 'the live one');
  assert.deepEqual(got, ['before', 'missed direct', 'missed 1', 'missed 2', 'live']);
  // The hub restarts: its history is gone, and bob is told so, for both streams.
  await hub.kill();
  hub = await start({ port });
  await until(bob, () => recoveries.length === 4, 'the failed recoveries');
  assert.deepEqual(recoveries.slice(2), [['bob', false], ['room1', false]]);
  // The new stream's messages are not taken for copies of the old one's.
  await alice.publish('room1', 'after the restart');
  await until(bob, () => got.includes('after the restart'), 'a message on the new stream');
  const page = await bob.groupHistory('room1');
  assert.deepEqual(page.messages.map((m) => m.body), ['after the restart']);
});
