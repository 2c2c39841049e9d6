'use strict';
// The core against a transport the test plays the hub in, with the clock in the test's
// hands: ids and replies, the queue and its bound, the replay order, backoff delays to
// the millisecond, the heartbeat, the close-code rule, and what a timeout, a lost
// connection, a busy hub or a refusal do to the identity.

const { test } = require('node:test');
const assert = require('node:assert/strict');
const Wxhub = require('../wxhub.js');
const { FakeClock, settled, sequence } = require('./harness/clock');
const { fakeTransport } = require('./harness/transport');

function setup(options = {}) {
  const clock = new FakeClock();
  const transport = fakeTransport();
  const client = new Wxhub.Client(
    Object.assign({ url: 'ws://hub.test/ws', transport, clock, random: () => 0.5 }, options)
  );
  const events = [];
  for (const type of ['state', 'open', 'close', 'queue']) client.on(type, (e) => events.push([type, e]));
  return { clock, transport, client, events };
}

/** Settles a promise's outcome into a value the test can assert on without awaiting it. */
function outcome(promise) {
  const o = { done: false };
  promise.then(
    (value) => Object.assign(o, { done: true, value }),
    (error) => Object.assign(o, { done: true, error })
  );
  return o;
}

test('requests get ids; replies settle them by id, in any order; error replies reject with the code', async () => {
  const { client, transport } = setup();
  client.connect();
  const s = transport.current;
  s.accept();
  const a = outcome(client.request({ type: 'users', id: 'mine' })); // the app's id is replaced
  const b = outcome(client.direct('bob', { text: 'hi' }));
  assert.deepEqual(s.sent, [
    { type: 'users', id: 1 },
    { type: 'direct', to: 'bob', body: { text: 'hi' }, mid: client.midPrefix + '-1', id: 2 },
  ]);
  const seen = [];
  client.on('error', (ev, command) => seen.push([ev.code, command && command.type]));
  s.say({ type: 'error', id: 2, code: 'not_found', message: 'bob is not online' });
  s.say({ type: 'users', id: 1, users: ['alice'], count: 1 });
  await settled();
  assert.equal(a.value.count, 1);
  assert.equal(b.error.code, 'not_found');
  assert.equal(b.error.message, 'bob is not online');
  assert.equal(b.error.reply.id, 2);
  assert.deepEqual(seen, [['not_found', 'direct']]); // replies are events too, with their command
  // A reply to no request (a late one, or a handshake's) is an event only.
  const stray = [];
  client.on('ack', (ev, command) => stray.push([ev.delivered, command]));
  s.say({ type: 'ack', id: 99, delivered: 3 });
  assert.deepEqual(stray, [[3, undefined]]);
});

test('overloaded rejects the request with that code; a request past its timeout rejects with `timeout`', async () => {
  const { client, transport, clock } = setup({ requestTimeoutMs: 500 });
  client.connect();
  transport.current.accept();
  const busy = outcome(client.broadcast('x'));
  transport.current.say({ type: 'error', id: 1, code: 'overloaded', message: 'retry shortly' });
  const slow = outcome(client.ping());
  await clock.advance(499);
  assert.equal(slow.done, false);
  await clock.advance(1);
  assert.equal(busy.error.code, 'overloaded');
  assert.equal(slow.error.code, 'timeout');
  // Its late reply is only an event now.
  const late = [];
  client.on('pong', (ev, command) => late.push(command));
  transport.current.say({ type: 'pong', id: 2 });
  assert.deepEqual(late, [undefined]);
});

test('the offline queue is bounded, and replayed after the join and the subscriptions, in order', async () => {
  const { client, transport, events } = setup({ maxQueue: 2 });
  const joined = outcome(client.join('alice'));
  const room = outcome(client.subscribe('room1', { presence: true }));
  client.subscribe('stock.600519');
  client.subscribe('room1', { presence: true }); // again: keeps its place
  const first = outcome(client.publish('room1', 'one'));
  assert.equal(client.send({ type: 'broadcast', body: 'two' }), true);
  const third = outcome(client.publish('room1', 'three'));
  assert.equal(client.send({ type: 'broadcast', body: 'four' }), false);
  await settled();
  assert.equal(third.error.code, 'queue_full');
  assert.equal(client.queued, 2);
  assert.deepEqual(events.filter(([t]) => t === 'queue').map(([, n]) => n), [1, 2]);

  client.connect();
  const s = transport.current;
  assert.deepEqual(s.sent, [], 'nothing before the handshake');
  s.accept();
  assert.deepEqual(s.sent, [
    { type: 'join', name: 'alice', id: 1 },
    { type: 'subscribe', group: 'room1', presence: true, id: 2 },
    { type: 'subscribe', group: 'stock.600519', id: 3 },
    { type: 'publish', group: 'room1', body: 'one', mid: client.midPrefix + '-1', id: 4 },
    { type: 'broadcast', body: 'two' }, // fire and forget: no id
  ]);
  assert.equal(client.queued, 0);
  s.say({ type: 'joined', id: 1, name: 'alice', session: 7 });
  s.say({ type: 'subscribed', id: 2, group: 'room1', members: 1 });
  s.say({ type: 'ack', id: 4, delivered: 1 });
  await settled();
  assert.equal(joined.value.session, 7);
  assert.equal(room.value.members, 1);
  assert.equal(first.value.delivered, 1);
  assert.deepEqual(client.identity(), {
    name: 'alice',
    joined: true,
    session: 7,
    error: null,
    groups: [
      { group: 'room1', presence: true, subscribed: true, error: null },
      { group: 'stock.600519', presence: false, subscribed: false, error: null },
    ],
  });
  // `open` comes after the replay: what a listener sends then goes out after it.
  const states = events.filter(([t]) => t === 'state').map(([, e]) => e.state);
  assert.deepEqual(states, ['connecting', 'open']);
});

test('backoff: equal jitter, the ceiling doubling from reconnectBaseMs to reconnectMaxMs, exact with an injected random', async () => {
  const { client, transport, clock, events } = setup({
    reconnectBaseMs: 1000,
    reconnectMaxMs: 8000,
    random: sequence(0, 1, 0.5, 0.25, 0.5, 0),
    connectTimeoutMs: 60000,
  });
  client.connect();
  const delays = [];
  // [ceiling, random] -> delay: [1000,0] 500, [2000,1] 2000, [4000,.5] 3000, [8000,.25] 5000, [8000,.5] 6000
  for (const expected of [500, 2000, 3000, 5000, 6000]) {
    const before = transport.sockets.length;
    transport.current.end(1006, 'refused');
    const reconnecting = events.filter(([t, e]) => t === 'state' && e.state === 'reconnecting').pop()[1];
    delays.push(reconnecting.delayMs);
    await clock.advance(expected - 1);
    assert.equal(transport.sockets.length, before, `no retry before ${expected} ms`);
    await clock.advance(1);
    assert.equal(transport.sockets.length, before + 1, `the retry at ${expected} ms`);
  }
  assert.deepEqual(delays, [500, 2000, 3000, 5000, 6000]);
  // An open connection starts the count again.
  transport.current.accept();
  transport.current.end(1001, 'hub shutting down');
  assert.deepEqual(clock.pending(), [500]);
  assert.equal(Wxhub.backoffDelay(10, 1000, 30000, () => 1), 30000);
  assert.equal(Wxhub.backoffDelay(0, 1000, 30000, () => 0), 500);
});

test('heartbeat: a ping every pingMs; nothing heard before the next one drops the connection and reconnects', async () => {
  const { client, transport, clock, events } = setup({ pingMs: 1000, requestTimeoutMs: 60000 });
  client.connect();
  const s = transport.current;
  s.accept();
  await clock.advance(1000);
  assert.deepEqual(s.of('ping'), [{ type: 'ping' }]);
  s.say({ type: 'tick', ts: 1, quotes: [] }); // anything at all proves it alive
  await clock.advance(1000);
  assert.equal(s.of('ping').length, 2);
  assert.equal(s.closedWith, null);
  await clock.advance(1000); // the second ping unanswered
  assert.deepEqual(s.closedWith, { code: 1000, reason: 'heartbeat timeout' });
  assert.deepEqual(events.filter(([t]) => t === 'close').map(([, e]) => e), [
    { code: 1006, reason: 'heartbeat timeout', wasOpen: true },
  ]);
  assert.equal(client.state, 'reconnecting');
  // A pong to our own ping gives the round trip.
  await clock.advance(clock.pending()[0]);
  transport.current.accept();
  const rtts = [];
  client.on('rtt', (ms) => rtts.push(ms));
  await clock.advance(1000);
  await clock.advance(40);
  transport.current.say({ type: 'pong' });
  assert.deepEqual(rtts, [40]);
});

test('close codes: 4500-4999 end it (state closed with the code), anything else the app did not ask for reconnects', async () => {
  for (const code of [1000, 1001, 1006, 1009, 1011, 4000, 4001, 4002, 4499]) {
    const { client, transport } = setup();
    client.connect();
    transport.current.accept();
    transport.current.end(code, 'x');
    assert.equal(client.state, 'reconnecting', `after ${code}`);
  }
  for (const code of [4500, 4999]) {
    const { client, transport, clock, events } = setup();
    client.connect();
    transport.current.accept();
    const queued = [];
    transport.current.end(code, 'unauthorized');
    assert.equal(client.state, 'closed');
    assert.deepEqual(events.filter(([t]) => t === 'state').pop()[1], { state: 'closed', code, reason: 'unauthorized' });
    assert.deepEqual(events.filter(([t]) => t === 'close').pop()[1], { code, reason: 'unauthorized', wasOpen: true });
    assert.deepEqual(clock.pending(), [], 'no retry armed');
    queued.push(outcome(client.request({ type: 'users' })));
    await settled();
    assert.equal(queued[0].error.code, 'closed');
    // The app decides: connect() again (with a new token) starts over.
    client.connect();
    assert.equal(client.state, 'connecting');
  }
});

test('a transport that reports error and close is handled once, with the close code; an error alone ends it after a grace', async () => {
  const { client, transport, clock, events } = setup();
  client.connect();
  transport.current.fail();
  transport.current.end(4500, 'unauthorized');
  transport.current.end(1006, 'again');
  assert.equal(client.state, 'closed');
  assert.equal(events.filter(([t]) => t === 'close').length, 1);

  const b = setup();
  b.client.connect();
  b.transport.current.fail({ errMsg: 'connectSocket:fail' });
  b.transport.current.fail({ errMsg: 'connectSocket:fail' });
  assert.equal(b.client.state, 'connecting');
  await b.clock.advance(1000);
  assert.equal(b.client.state, 'reconnecting');
  assert.deepEqual(b.events.filter(([t]) => t === 'close').map(([, e]) => e), [
    { code: 1006, reason: 'connectSocket:fail', wasOpen: false },
  ]);
  b.client.connect();
  b.transport.current.fail({ errMsg: 'connectSocket:fail 网络连接已断开，请检查网络设置后重试。'.repeat(5) });
  await b.clock.advance(1000);
  assert.ok(Buffer.byteLength(b.transport.sockets[1].closedWith.reason) <= 123, 'a close reason a WebSocket accepts');
  b.transport.sockets[0].end(1006, 'late');
  assert.equal(b.events.filter(([t]) => t === 'close').length, 2, 'a late close of a stale socket is ignored');
});

test('a handshake slower than connectTimeoutMs is given up and retried', async () => {
  const { client, transport, clock } = setup({ connectTimeoutMs: 3000 });
  client.connect();
  await clock.advance(3000);
  assert.deepEqual(transport.sockets[0].closedWith, { code: 1000, reason: 'connect timeout' });
  assert.equal(client.state, 'reconnecting');
  transport.sockets[0].accept(); // it opens after all: stale, ignored
  assert.equal(client.state, 'reconnecting');
});

test('a join that times out keeps the identity: a late reply still counts, and the next connection joins again', async () => {
  const { client, transport, clock } = setup({ requestTimeoutMs: 1000, pingMs: 0 });
  client.connect();
  let s = transport.current;
  s.accept();
  const join = outcome(client.join('alice', { token: 't1' }));
  const room = outcome(client.subscribe('room1'));
  assert.deepEqual(s.sent.map((f) => f.type), ['join', 'subscribe']);
  await clock.advance(1000);
  assert.equal(join.error.code, 'timeout');
  assert.equal(room.error.code, 'timeout');
  assert.deepEqual(client.identity(), {
    name: 'alice',
    joined: false,
    session: null,
    error: null,
    groups: [{ group: 'room1', presence: false, subscribed: false, error: null }],
  });
  // The slow network delivers after all.
  s.say({ type: 'joined', id: 1, name: 'alice', session: 3 });
  s.say({ type: 'subscribed', id: 2, group: 'room1', members: 1 });
  assert.equal(client.identity().joined, true);
  assert.equal(client.identity().groups[0].subscribed, true);
  // Lost: the next connection joins again, with the token, then subscribes.
  s.end(1006);
  assert.equal(client.identity().joined, false);
  assert.equal(client.identity().name, 'alice');
  await clock.advance(clock.pending()[0]);
  s = transport.current;
  s.accept();
  assert.deepEqual(s.sent, [
    { type: 'join', name: 'alice', token: 't1', id: 3 },
    { type: 'subscribe', group: 'room1', id: 4 },
  ]);
});

test('a connection lost before the join was answered: the promise waits for the next connection (within its timeout)', async () => {
  const { client, transport, clock } = setup({ requestTimeoutMs: 5000, pingMs: 0, reconnectBaseMs: 100 });
  client.connect();
  transport.current.accept();
  const join = outcome(client.join('alice'));
  transport.current.end(1006);
  await clock.advance(clock.pending()[0]); // the retry (the join's own timer is later)
  transport.current.accept();
  assert.deepEqual(transport.current.sent, [{ type: 'join', name: 'alice', id: 2 }]);
  transport.current.say({ type: 'joined', id: 2, name: 'alice', session: 9 });
  await settled();
  assert.equal(join.value.session, 9);
});

test('a refusal drops what was refused, and only that', async () => {
  const { client, transport } = setup({ pingMs: 0 });
  client.connect();
  let s = transport.current;
  s.accept();
  const join = outcome(client.join(' bad '));
  const room = outcome(client.subscribe('room1'));
  const bad = outcome(client.subscribe('bad group'));
  s.say({ type: 'error', id: 1, code: 'invalid_name', message: 'no' });
  s.say({ type: 'error', id: 2, code: 'not_joined', message: 'join first' });
  s.say({ type: 'error', id: 3, code: 'invalid_group', message: 'no' });
  await settled();
  assert.equal(join.error.code, 'invalid_name');
  assert.equal(room.error.code, 'not_joined');
  assert.equal(bad.error.code, 'invalid_group');
  assert.deepEqual(client.identity(), {
    name: null,
    joined: false,
    session: null,
    error: 'invalid_name',
    groups: [{ group: 'room1', presence: false, subscribed: false, error: 'not_joined' }], // kept: it needs a join, not a fix
  });
  // A good name: joined, and then the group refused for want of a join is sent again.
  const again = outcome(client.join('alice'));
  assert.deepEqual(s.last(), { type: 'join', name: 'alice', id: 4 });
  s.say({ type: 'joined', id: 4, name: 'alice', session: 2 });
  assert.deepEqual(s.last(), { type: 'subscribe', group: 'room1', id: 5 });
  await settled();
  assert.equal(again.value.name, 'alice');
  // unauthorized forgets the name (and its token): three would close the connection.
  s.end(1006);
  client.connect(); // while a retry waits: now
  s = transport.current;
  s.accept();
  s.say({ type: 'error', id: s.of('join')[0].id, code: 'unauthorized', message: 'the token has expired' });
  assert.equal(client.identity().name, null);
  assert.equal(client.identity().error, 'unauthorized');
  s.end(1006);
  client.connect();
  transport.current.accept();
  assert.deepEqual(transport.current.of('join'), [], 'a refused name is not sent again');
});

test('overloaded or rate_limited on a join or subscribe: kept, and sent again on the same connection after a backoff', async () => {
  const { client, transport, clock } = setup({ pingMs: 0, reconnectBaseMs: 200, requestTimeoutMs: 5000 });
  client.connect();
  const s = transport.current;
  s.accept();
  const join = outcome(client.join('alice'));
  const room = outcome(client.subscribe('room1'));
  s.say({ type: 'error', id: 1, code: 'overloaded', message: 'busy' });
  s.say({ type: 'error', id: 2, code: 'not_joined', message: 'join first' }); // the join was not done
  await settled();
  assert.equal(join.done, false, 'a busy hub is not an answer');
  assert.deepEqual(clock.pending().slice(0, 1), [150]);
  await clock.advance(150);
  assert.deepEqual(s.sent.slice(2), [
    { type: 'join', name: 'alice', id: 3 },
    { type: 'subscribe', group: 'room1', id: 4 },
  ]);
  s.say({ type: 'joined', id: 3, name: 'alice', session: 1 });
  s.say({ type: 'subscribed', id: 4, group: 'room1', members: 1 });
  await settled();
  assert.equal(join.value.session, 1);
  assert.equal(room.error.code, 'not_joined'); // that attempt's answer; the group was kept and is in
  assert.equal(client.identity().groups[0].subscribed, true);
});

test('join under a new name once joined reconnects (a session joins once); unsubscribe while offline just forgets', async () => {
  const { client, transport } = setup({ pingMs: 0 });
  client.connect();
  transport.current.accept();
  client.join('alice');
  client.subscribe('room1');
  client.subscribe('room2');
  transport.current.say({ type: 'joined', id: 1, name: 'alice', session: 1 });
  const same = await client.join('alice');
  assert.equal(same.session, 1, 'the same name again: nothing to do');
  client.join('bob');
  assert.deepEqual(transport.sockets[0].closedWith, { code: 1000, reason: 'rejoin' });
  assert.equal(transport.sockets.length, 2);
  transport.current.end(1006);
  const left = await client.unsubscribe('room1');
  assert.deepEqual(left, { type: 'unsubscribed', group: 'room1' });
  client.connect();
  transport.current.accept();
  assert.deepEqual(transport.current.sent, [
    { type: 'join', name: 'bob', id: 4 },
    { type: 'subscribe', group: 'room2', id: 5 },
  ]);
});

test('close() is final until connect(): what waits rejects, no retry is armed, the identity stays', async () => {
  const { client, transport, clock, events } = setup();
  client.join('alice');
  const queued = outcome(client.broadcast('x'));
  client.connect();
  transport.current.end(1006);
  client.close();
  await settled();
  assert.equal(queued.error.code, 'closed');
  assert.equal(client.state, 'closed');
  assert.deepEqual(clock.pending(), []);
  assert.deepEqual(events.filter(([t]) => t === 'state').pop()[1], { state: 'closed', code: 1000, reason: 'closed by the app' });
  client.connect();
  transport.current.accept();
  assert.deepEqual(transport.current.of('join').map((f) => f.name), ['alice']);
  const open = transport.current;
  client.close();
  assert.deepEqual(open.closedWith, { code: 1000, reason: 'bye' });
});

test('a transport that calls back from inside open(): an early open still replays, an early close still retries', async () => {
  const clock = new FakeClock();
  let mode = 'open';
  const sockets = [];
  const transport = {
    open(url, h) {
      const s = { sent: [], closedWith: null, send: (t) => s.sent.push(JSON.parse(t)), close: (code, reason) => { s.closedWith = { code, reason }; } };
      sockets.push(s);
      if (mode === 'open') h.onOpen();
      else h.onClose({ code: 1006, reason: 'refused at once' });
      return s;
    },
  };
  const client = new Wxhub.Client({ url: 'ws://hub.test/ws', transport, clock, random: () => 0.5, connectTimeoutMs: 7000 });
  client.join('alice');
  client.connect();
  assert.equal(client.state, 'open');
  assert.deepEqual(sockets[0].sent, [{ type: 'join', name: 'alice', id: 1 }]);
  assert.deepEqual(clock.pending(), [10000, 20000], "the join's timeout and the heartbeat: no connect timeout (7000) left armed");
  mode = 'close';
  client.join('bob'); // a new name: a new connection, refused at once
  assert.equal(client.state, 'reconnecting');
  assert.deepEqual(sockets[1].closedWith, { code: 1000, reason: 'stale' });
});

test('parseFrame takes what the hub and older servers send, and nothing else', () => {
  assert.deepEqual(Wxhub.parseFrame('\uFEFF {"type":"pong"} \n'), { type: 'pong' });
  assert.equal(Wxhub.parseFrame('[0.5,0.1]'), null);
  assert.equal(Wxhub.parseFrame('stock'), null);
  assert.equal(Wxhub.parseFrame(new ArrayBuffer(2)), null);
  assert.equal(Wxhub.mayReconnect(4500), false);
  assert.equal(Wxhub.mayReconnect(4499), true);
});

test('a message unanswered when the connection drops is sent again, with its id and mid, first on the next connection', async () => {
  const { client, transport, clock } = setup({ requestTimeoutMs: 1000 });
  client.join('alice');
  client.connect();
  const s1 = transport.current;
  s1.accept();
  s1.say({ type: 'joined', id: 1, name: 'alice', session: 1 });
  const msg = outcome(client.publish('room1', 'hi'));
  const other = outcome(client.users());
  const sent = s1.of('publish')[0];
  assert.deepEqual(sent, { type: 'publish', group: 'room1', body: 'hi', mid: client.midPrefix + '-1', id: 2 });
  s1.end(1006);
  await settled();
  // Other requests may have been done: the app decides. The message is kept.
  assert.equal(other.error.code, 'disconnected');
  assert.equal(msg.done, false);
  assert.equal(client.queued, 1);
  const later = outcome(client.broadcast('after'));
  await clock.advance(1000); // the backoff; the message's timeout does not run while offline
  const s2 = transport.current;
  assert.notEqual(s2, s1);
  s2.accept();
  assert.deepEqual(
    s2.sent.map((f) => [f.type, f.id, f.mid]),
    [
      ['join', 4, undefined],
      ['publish', 2, sent.mid], // the same id and mid
      ['broadcast', 5, client.midPrefix + '-2'],
    ]
  );
  s2.say({ type: 'ack', id: 2, delivered: 3 });
  await settled();
  assert.equal(msg.value.delivered, 3);
  // Unanswered on an open connection: `timeout`, and not sent again.
  await clock.advance(1000);
  assert.equal(later.error.code, 'timeout');
  assert.equal(later.error.command.mid, client.midPrefix + '-2');
  s2.end(1006);
  await clock.advance(1000);
  transport.current.accept();
  assert.deepEqual(transport.current.of('broadcast'), []);
  // A retry with the same mid is the same message to its receivers.
  client.broadcast('after', { mid: later.error.command.mid });
  assert.equal(transport.current.last().mid, later.error.command.mid);
});

test('a rename does not send the old name\'s unacknowledged messages as the new name', async () => {
  const { client, transport } = setup();
  client.join('alice');
  client.connect();
  transport.current.accept();
  transport.current.say({ type: 'joined', id: 1, name: 'alice', session: 1 });
  const msg = outcome(client.direct('bob', 'from alice'));
  client.join('carol');
  await settled();
  assert.equal(msg.error.code, 'disconnected');
  transport.current.accept();
  assert.deepEqual(transport.current.of('direct'), []);
});

test('a message received again (same sender and mid) is dropped; the memory of them is bounded', async () => {
  const { client, transport } = setup({ dedupeWindow: 2 });
  client.connect();
  const s = transport.current;
  s.accept();
  const got = [];
  client.on('message', (m) => got.push(m.from + ':' + m.body));
  const say = (from, mid, body) => s.say({ type: 'message', kind: 'broadcast', from, mid, body, ts: 1 });
  say('alice', 'a-1', 'one');
  say('alice', 'a-1', 'one again'); // sent again after alice lost her connection
  say('bob', 'a-1', 'bob may use the same mid');
  s.say({ type: 'message', kind: 'broadcast', from: 'carol', body: 'no mid', ts: 1 });
  s.say({ type: 'message', kind: 'broadcast', from: 'carol', body: 'no mid', ts: 1 });
  say('dave', 'd-1', 'pushes alice out of a window of 2');
  say('alice', 'a-1', 'one, much later');
  assert.deepEqual(got, [
    'alice:one',
    'bob:bob may use the same mid',
    'carol:no mid',
    'carol:no mid',
    'dave:pushes alice out of a window of 2',
    'alice:one, much later',
  ]);
});

test('verify(): an answered ping resolves true; no answer drops the socket and reconnects at once, resending messages', async () => {
  let wake = null;
  const { client, transport, clock } = setup({ verifyTimeoutMs: 3000 });
  transport.watch = (fn) => {
    wake = fn;
  };
  client.join('alice');
  client.connect();
  const s1 = transport.current;
  s1.accept();
  s1.say({ type: 'joined', id: 1, name: 'alice', session: 1 });
  const ok = outcome(client.verify());
  assert.deepEqual(s1.last(), { type: 'ping', id: 2 });
  s1.say({ type: 'pong', id: 2 });
  await settled();
  assert.equal(ok.value, true);
  // Back from the background: the transport wakes the client, which verifies at once. A
  // message typed meanwhile goes into the dead socket.
  wake();
  assert.deepEqual(s1.last(), { type: 'ping', id: 3 });
  const msg = outcome(client.publish('room1', 'typed on return'));
  await clock.advance(2999);
  assert.equal(transport.sockets.length, 1);
  await clock.advance(1);
  assert.equal(s1.closedWith.code, 1000); // given up on, by the client
  assert.equal(transport.sockets.length, 2, 'a new socket at once, no backoff');
  const s2 = transport.current;
  s2.accept();
  assert.deepEqual(
    s2.sent.map((f) => f.type),
    ['join', 'publish']
  );
  assert.equal(s2.of('publish')[0].id, 4);
  s2.say({ type: 'ack', id: 4, delivered: 1 });
  await settled();
  assert.equal(msg.value.delivered, 1);
  // Not open: verify() resolves false and a waiting retry goes now.
  s2.end(1006);
  await settled();
  assert.equal(client.state, 'reconnecting');
  const offline = outcome(client.verify());
  await settled();
  assert.equal(offline.value, false);
  assert.equal(transport.sockets.length, 3);
});

test('positions: every resubscribe and rejoin asks to recover from the last offset seen; copies are dropped by offset', async () => {
  const { client, transport, clock } = setup();
  const recoveries = [];
  client.on('recovery', (r) => recoveries.push(r));
  const got = [];
  client.on('message', (m) => got.push(m.body));
  client.join('bob');
  client.subscribe('room');
  client.connect();
  const s1 = transport.current;
  s1.accept();
  assert.deepEqual(s1.sent.map((f) => f.since), [undefined, undefined], 'nothing to recover yet');
  s1.say({ type: 'joined', id: 1, name: 'bob', session: 1, epoch: 'u1', offset: 0 });
  s1.say({ type: 'subscribed', id: 2, group: 'room', members: 1, epoch: 'g1', offset: 3 });
  s1.say({ type: 'message', kind: 'group', from: 'a', group: 'room', offset: 4, body: 'four', ts: 1 });
  s1.say({ type: 'message', kind: 'direct', from: 'a', to: 'bob', offset: 1, body: 'd1', ts: 1 });
  assert.deepEqual(recoveries, [], 'no recovery was asked for');
  s1.end(1006);
  await clock.advance(1000);
  const s2 = transport.current;
  s2.accept();
  assert.deepEqual(s2.sent[0].since, { epoch: 'u1', offset: 1 });
  assert.deepEqual(s2.sent[1].since, { epoch: 'g1', offset: 4 });
  // The hub replays what was missed before each reply; an overlap is dropped by offset.
  s2.say({ type: 'message', kind: 'direct', from: 'a', to: 'bob', offset: 2, body: 'd2', ts: 1 });
  s2.say({ type: 'joined', id: 3, name: 'bob', session: 2, epoch: 'u1', offset: 2, recovered: true });
  s2.say({ type: 'message', kind: 'group', from: 'a', group: 'room', offset: 4, body: 'four again', ts: 1 });
  s2.say({ type: 'message', kind: 'group', from: 'a', group: 'room', offset: 5, body: 'five', ts: 1 });
  s2.say({ type: 'subscribed', id: 4, group: 'room', members: 1, epoch: 'g1', offset: 5, recovered: true });
  assert.deepEqual(got, ['four', 'd1', 'd2', 'five']);
  assert.deepEqual(recoveries, [
    { recovered: true, epoch: 'u1', offset: 2, user: 'bob' },
    { recovered: true, epoch: 'g1', offset: 5, group: 'room' },
  ]);
  // A hub that lost its history (restart): not recovered; the new epoch is adopted, and
  // its offsets, which start again from 1, are not taken for copies.
  s2.end(1001);
  await clock.advance(1000);
  const s3 = transport.current;
  s3.accept();
  s3.say({ type: 'joined', id: 5, name: 'bob', session: 1, epoch: 'u2', offset: 0, recovered: false });
  s3.say({ type: 'subscribed', id: 6, group: 'room', members: 1, epoch: 'g2', offset: 0, recovered: false });
  s3.say({ type: 'message', kind: 'group', from: 'a', group: 'room', offset: 1, body: 'new one', ts: 1 });
  assert.deepEqual(recoveries.slice(2).map((r) => [r.user || r.group, r.recovered, r.epoch]), [
    ['bob', false, 'u2'],
    ['room', false, 'g2'],
  ]);
  assert.equal(got[got.length - 1], 'new one');
  assert.deepEqual(client.positions(), {
    user: { name: 'bob', epoch: 'u2', offset: 0 },
    groups: { room: { epoch: 'g2', offset: 1 } },
  });  // A cluster node that cannot reach Redis answers without a position: not recovered,
  // and the old position is dropped (the next reconnect asks for nothing).
  s3.end(1001);
  await clock.advance(1000);
  const s4 = transport.current;
  s4.accept();
  assert.deepEqual(s4.sent.map((f) => f.since), [{ epoch: 'u2', offset: 0 }, { epoch: 'g2', offset: 1 }]);
  s4.say({ type: 'joined', id: 7, name: 'bob', session: 1, recovered: false });
  s4.say({ type: 'subscribed', id: 8, group: 'room', members: 1, recovered: false });
  assert.deepEqual(recoveries.slice(4).map((r) => [r.user || r.group, r.recovered, r.epoch]), [
    ['bob', false, null],
    ['room', false, null],
  ]);
  assert.deepEqual(client.positions(), { user: null, groups: {} });
});

test('a message past the next offset, or of another epoch, is a loss: the app is told, the position moves on', async () => {
  const { client, transport } = setup();
  const recoveries = [];
  client.on('recovery', (r) => recoveries.push([r.group || r.user, r.recovered, r.epoch, r.offset]));
  const got = [];
  client.on('message', (m) => got.push(m.body));
  client.join('bob');
  client.subscribe('room');
  client.connect();
  const s = transport.current;
  s.accept();
  s.say({ type: 'joined', id: 1, name: 'bob', session: 1, epoch: 'u1', offset: 0 });
  s.say({ type: 'subscribed', id: 2, group: 'room', members: 1, epoch: 'g1', offset: 3 });
  const m = (offset, body, epoch) => s.say(Object.assign({ type: 'message', kind: 'group', from: 'a', group: 'room', offset, body, ts: 1 }, epoch ? { epoch } : {}));
  m(4, 'four', 'g1');
  m(7, 'seven'); // 5 and 6 never came
  m(7, 'seven again');
  m(1, 'one of a new epoch', 'g2'); // Redis lost the stream: not a copy
  m(2, 'two', 'g2');
  assert.deepEqual(got, ['four', 'seven', 'one of a new epoch', 'two']);
  assert.deepEqual(recoveries, [
    ['room', false, 'g1', 7],
    ['room', false, 'g2', 1],
  ]);
  assert.deepEqual(client.positions().groups.room, { epoch: 'g2', offset: 2 });
});

test('positions survive an app restart through positions() and the `positions` option; unsubscribe forgets one', async () => {
  const saved = { user: { name: 'bob', epoch: 'u1', offset: 7 }, groups: { room: { epoch: 'g1', offset: 9 }, bad: { epoch: 3 } } };
  const { client, transport } = setup({ positions: saved });
  client.join('bob');
  client.subscribe('room');
  client.subscribe('bad');
  client.connect();
  transport.current.accept();
  assert.deepEqual(
    transport.current.sent.map((f) => f.since),
    [{ epoch: 'u1', offset: 7 }, { epoch: 'g1', offset: 9 }, undefined]
  );
  client.unsubscribe('room');
  assert.deepEqual(client.positions().groups, {});
  // Another name does not recover bob's stream.
  client.join('carol');
  transport.current.accept();
  assert.equal(transport.current.of('join')[0].since, undefined);
});
