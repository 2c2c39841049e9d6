'use strict';
// utils/hub.js on its own: the backoff, frame parsing, and the queue while no hub answers.

const { test } = require('node:test');
const assert = require('node:assert/strict');
const { backoffDelay, parseFrame } = require('../utils/hub');
const { freePort } = require('./harness/hub-process');
const { launch } = require('./harness/miniprogram');
const { waitFor } = require('./harness/wait');

test('backoff doubles up to the cap, with jitter in the upper half', () => {
  const low = () => 0;
  const high = () => 1;
  assert.deepEqual([0, 1, 2, 3].map((a) => backoffDelay(a, 500, 30000, low)), [250, 500, 1000, 2000]);
  assert.deepEqual([0, 1, 2, 3].map((a) => backoffDelay(a, 500, 30000, high)), [500, 1000, 2000, 4000]);
  assert.equal(backoffDelay(20, 500, 30000, high), 30000, 'capped');
  assert.equal(backoffDelay(20, 500, 30000, low), 15000, 'never below half the cap');
  for (let i = 0; i < 100; i++) {
    const d = backoffDelay(3, 500, 30000);
    assert.ok(d >= 2000 && d <= 4000, String(d));
  }
});

test('frames parse to objects; BOM and whitespace are tolerated, the rest ignored', () => {
  assert.deepEqual({ ...parseFrame('\ufeff {"type":"pong","id":3}\n') }, { type: 'pong', id: 3 });
  assert.equal(parseFrame('[0.5,0.6]'), null, 'the classic feed is not for this module');
  assert.equal(parseFrame('not json'), null);
  assert.equal(parseFrame('null'), null);
  assert.equal(parseFrame(new ArrayBuffer(2)), null);
});

test('while nothing answers, commands wait in a bounded queue', async (t) => {
  // Nothing listens on this port: every attempt fails and is retried.
  const port = await freePort();
  const mp = launch({ config: { hubUrl: `ws://127.0.0.1:${port}/ws`, maxQueued: 2, reconnectBaseMs: 50 } });
  t.after(() => mp.close());
  const hub = mp.app.hub;
  await waitFor(() => mp.wx.sockets.length >= 2, { what: 'a retry after the first failure' });
  assert.ok(hub.state === 'waiting' || hub.state === 'connecting');

  const first = hub.broadcast('one');
  const second = hub.direct('bob', 'two');
  await assert.rejects(hub.publish('room', 'three'), (err) => err.code === 'queue_full');
  assert.equal(hub.queue.length, 2);

  hub.close();
  await assert.rejects(first, (err) => err.code === 'closed');
  await assert.rejects(second, (err) => err.code === 'closed');
  assert.equal(hub.state, 'closed');
  await assert.rejects(hub.broadcast('after'), (err) => err.code === 'closed');
  // Closed for good: no retry is scheduled, and a late failure of the last attempt
  // schedules none either.
  assert.equal(hub.retryTimer, null);
  const attempts = mp.wx.sockets.length;
  await waitFor(() => mp.wx.sockets.every((s) => s.readyState === 3), { what: 'the last attempt to fail' });
  assert.equal(hub.retryTimer, null);
  assert.equal(mp.wx.sockets.length, attempts);
});
