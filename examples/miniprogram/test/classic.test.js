'use strict';
// Classic clients, unchanged, against the hub: a stock page that sends the plain text
// `stock` and charts six-number arrays, and an app that logs in with {"name": openid}
// (no `type`) and parses pushes the classic way. Both use the global wx.onSocket* API
// and connect with no path, to the address written in their code, which the shim maps
// to the test hub the way an /etc/hosts entry would.

const path = require('node:path');
const { test, before, after } = require('node:test');
const assert = require('node:assert/strict');
const { startHub } = require('./harness/hub-process');
const { launch, snapshot } = require('./harness/miniprogram');
const { waitFor } = require('./harness/wait');

const FIXTURES = path.join(__dirname, 'fixtures');

let hub;
before(async () => {
  hub = await startHub({ args: ['--seed', '7'] });
});
after(async () => {
  if (hub) await hub.kill();
});

const twoDecimals = (n) => Math.abs(n * 100 - Math.round(n * 100)) < 1e-9;

test('a classic stock page gets six numbers in [0.01, 1.00] on every tick', async (t) => {
  const mp = launch({
    root: path.join(FIXTURES, 'classic-stock'),
    hosts: { 'localhost:12345': `127.0.0.1:${hub.port}` },
  });
  t.after(() => mp.close());
  const page = mp.openPage('pages/stock/stock');

  await waitFor(() => page.data.series.length >= 5, {
    what: 'five pushes',
    detail: () => [page.data, mp.wx.errors.map(String)],
  });
  assert.equal(mp.wx.sockets[0].url, `ws://127.0.0.1:${hub.port}`, 'connected with no path');
  assert.deepEqual(mp.wx.errors, [], 'JSON.parse took every push');
  assert.deepEqual(snapshot(page.data.failures), []);
  for (const values of page.data.series) {
    assert.ok(Array.isArray(values) && values.length === 6, JSON.stringify(values));
    for (const v of values) {
      assert.equal(typeof v, 'number');
      assert.ok(v >= 0.01 && v <= 1, `${v} in [0.01, 1.00]`);
      assert.ok(twoDecimals(v), `${v} has two decimals`);
    }
  }
  // The numbers follow the market, so they move from tick to tick.
  const distinct = new Set(page.data.series.map((v) => JSON.stringify(v)));
  assert.ok(distinct.size > 1, 'the feed moves');
  // Nothing but the arrays is sent for `stock`, as plain compact JSON.
  for (const frame of mp.wx.frames) {
    assert.match(frame, /^\[[0-9.,]+\]$/);
  }
});

test('a classic {"name": openid} login joins, and hears direct and group messages', async (t) => {
  // The classic user pool grouped users by the name's prefix before the first `_`.
  const openid = 'vip_oKm3x5Qh9Tq1';
  const classic = launch({
    root: path.join(FIXTURES, 'classic-login'),
    hosts: { 'localhost:8888': `127.0.0.1:${hub.port}` },
    storage: { openid },
  });
  const modern = launch({ config: { hubUrl: hub.url }, storage: { 'chat.name': 'alice' } });
  t.after(() => {
    classic.close();
    modern.close();
  });
  const received = () => classic.app.globalData.received;

  await waitFor(() => received().some((m) => m.type === 'joined' && m.name === openid), {
    what: 'the classic login to be answered `joined`',
    detail: () => classic.app.globalData,
  });
  assert.equal(classic.app.globalData.socketStatus, 'connected');

  // The example app writes to the classic user directly. (No spaces in the text: the
  // classic parsing removes the first space of every frame, wherever it is.)
  const chat = modern.openPage('pages/chat/chat');
  await waitFor(() => chat.data.me === 'alice', { what: 'alice to join' });
  chat.onPickUser({ currentTarget: { dataset: { name: openid } } });
  chat.onTextInput({ detail: { value: 'hello-classic' } });
  chat.onSend();
  await waitFor(
    () => received().some((m) => m.type === 'message' && m.kind === 'direct' && m.from === 'alice'),
    { what: 'the direct message', detail: () => received() }
  );
  const direct = received().find((m) => m.kind === 'direct');
  assert.equal(direct.to, openid);
  assert.equal(direct.body.text, 'hello-classic');

  // The login also put the classic user in group `vip`, from the name's prefix.
  const ack = await modern.app.hub.publish('vip', { text: 'vip-only' });
  assert.equal(ack.delivered, 1);
  await waitFor(() => received().some((m) => m.kind === 'group' && m.group === 'vip'), {
    what: 'the group message',
    detail: () => received(),
  });
  assert.equal(received().find((m) => m.kind === 'group').body.text, 'vip-only');

  assert.deepEqual(snapshot(classic.app.globalData.failures), [], 'the classic parsing took every frame');
  assert.deepEqual(classic.wx.errors, []);
  assert.ok(classic.wx.frames.every((f) => !f.startsWith('\ufeff')), 'no BOM');
});
