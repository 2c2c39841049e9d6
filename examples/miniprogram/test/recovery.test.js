'use strict';
// Nothing missed while away, nothing shown twice (the hub's history and the library's
// recovery, seen from the chat page): back from the background after WeChat dropped the
// socket, the room and the direct messages published meanwhile appear once each; after a
// hub restart the page says that some messages could not be recovered and reloads the
// room; an app killed in the background and launched again from its saved positions
// recovers what came while it was gone; a fresh app shows the room's recent messages.

const { test, after } = require('node:test');
const assert = require('node:assert/strict');
const { startHub, freePort } = require('./harness/hub-process');
const { launch, snapshot } = require('./harness/miniprogram');
const { waitFor } = require('./harness/wait');

const CHAT = 'pages/chat/chat';
const ROOM = 'lobby'; // config.js chatRoom
const NOT_RECOVERED = '部分消息无法恢复，已重新加载';
const POSITIONS_KEY = 'wxhub.positions';

const hubs = [];
async function start(port) {
  const hub = await startHub({ port });
  hubs.push(hub);
  return hub;
}
after(async () => {
  await Promise.all(hubs.map((h) => h.kill()));
});

const input = (value) => ({ detail: { value } });
const hasMessage = (page, fields) =>
  page.data.messages.some((m) => Object.keys(fields).every((k) => m[k] === fields[k]));
const lines = (page, text) => page.data.messages.filter((m) => m.text === text);
const members = (page) => JSON.stringify(page.data.users);
const notices = (page) => page.data.messages.filter((m) => m.kind === 'notice');
const texts = (page) => snapshot(page.data.messages.map((m) => m.text)).sort();
const roomOffsets = (page) => page.data.messages.filter((m) => m.kind === 'group').map((m) => m.offset);

// A backoff so long that only the foreground event brings the socket back in time.
const SLOW_RETRY = { reconnectBaseMs: 30000, reconnectMaxMs: 60000 };
const FAST_RETRY = { reconnectBaseMs: 100, reconnectMaxMs: 1000 };

/** Sends `text` from `page` (a chat page) to the room, or directly to `to`. */
function say(page, text, to) {
  if (to) page.onPickUser({ currentTarget: { dataset: { name: to } } });
  else page.onModeChange(input('group'));
  page.onTextInput(input(text));
  page.onSend();
}

/** Waits until our line `text` on `page` has its ack, and returns its status text. */
async function acked(page, text) {
  await waitFor(() => lines(page, text).some((m) => m.status === 'delivered' || m.status === 'stored'), {
    what: `the ack of "${text}"`,
    detail: () => page.data.messages,
  });
  return lines(page, text)[0].statusText;
}

/** Every `recovery` event of `mp`'s client, from now on. */
function recoveries(mp) {
  const seen = [];
  mp.app.hub.on('recovery', (r) => seen.push(snapshot(r)));
  return seen;
}

/** Each of `wanted` appears exactly once on `page`, room lines in offset order, no notice. */
function onceEach(page, wanted) {
  for (const text of wanted) assert.equal(lines(page, text).length, 1, `"${text}" once: ${JSON.stringify(texts(page))}`);
  const offsets = roomOffsets(page);
  assert.deepEqual(offsets, offsets.slice().sort((x, y) => x - y), 'room lines in offset order');
  assert.ok(offsets.every((o) => o >= 0), 'every room line has its offset');
}

test('back from the background after WeChat dropped the socket: what came meanwhile appears once each', async (t) => {
  const hub = await start();
  // Only the check on showing (verify) can notice the dead socket within the test.
  const amy = launch({ config: Object.assign({ hubUrl: hub.url, verifyTimeoutMs: 500 }, SLOW_RETRY), storage: { 'chat.name': 'amy' } });
  const ben = launch({ config: { hubUrl: hub.url }, storage: { 'chat.name': 'ben' } });
  t.after(() => {
    amy.close();
    ben.close();
  });
  const seen = recoveries(amy);
  const a = amy.openPage(CHAT);
  const b = ben.openPage(CHAT);
  await waitFor(() => members(a) === '["amy","ben"]' && members(b) === '["amy","ben"]', {
    what: 'both in the room',
    detail: () => [a.data.users, b.data.users],
  });
  say(b, 'before');
  await waitFor(() => lines(a, 'before').length === 1, { what: 'amy to see it live', detail: () => a.data.messages });

  // To the background; WeChat drops the socket without telling the app. The hub sees her go.
  amy.hide();
  amy.wx.loseSilently();
  await waitFor(() => members(b) === '["ben"]', { what: 'the hub to notice amy gone', detail: () => b.data.users });
  assert.equal(amy.app.hub.state, 'open', 'the app does not know');

  for (const text of ['away 1', 'away 2', 'away 3']) say(b, text);
  say(b, 'just for you', 'amy');
  assert.equal(await acked(b, 'away 3'), '已送达 0');
  assert.equal(await acked(b, 'just for you'), '对方离线，已保存，上线后送达');

  // Back: the dead socket is replaced, and the hub replays both streams.
  amy.show();
  const wanted = ['before', 'away 1', 'away 2', 'away 3', 'just for you'];
  await waitFor(() => wanted.every((text) => lines(a, text).length > 0), {
    what: 'everything published while away',
    detail: () => [amy.app.hub.state, texts(a)],
  });
  // Anything doubled would come before a message sent after it.
  say(b, 'after');
  await waitFor(() => lines(a, 'after').length === 1, { what: 'the next message', detail: () => texts(a) });
  onceEach(a, wanted.concat(['after']));
  assert.equal(a.data.messages.length, wanted.length + 1, JSON.stringify(texts(a)));
  assert.equal(notices(a).length, 0, 'everything was recovered: no notice');
  assert.deepEqual(
    seen.map((r) => [r.user || r.group, r.recovered]).sort(),
    [['amy', true], [ROOM, true]],
    'both streams recovered'
  );
  assert.deepEqual(amy.wx.toasts, []);
});

test('after a hub restart the page says some messages could not be recovered, and reloads the room', async (t) => {
  const port = await freePort();
  let hub = await start(port);
  const amy = launch({ config: Object.assign({ hubUrl: hub.url }, SLOW_RETRY), storage: { 'chat.name': 'amy' } });
  const ben = launch({ config: Object.assign({ hubUrl: hub.url }, FAST_RETRY), storage: { 'chat.name': 'ben' } });
  t.after(() => {
    amy.close();
    ben.close();
  });
  const a = amy.openPage(CHAT);
  const b = ben.openPage(CHAT);
  await waitFor(() => members(a) === '["amy","ben"]' && members(b) === '["amy","ben"]', {
    what: 'both in the room',
    detail: () => [a.data.users, b.data.users],
  });
  say(b, 'old hub');
  await waitFor(() => lines(a, 'old hub').length === 1, { what: 'amy to see it', detail: () => texts(a) });
  const oldEpoch = amy.app.hub.positions().groups[ROOM].epoch;

  // The hub dies and comes back empty (a new epoch). Ben, quick to retry, writes to the
  // room before amy is back: she can only get it from the new hub's history.
  await hub.kill();
  await waitFor(() => !a.data.online && !b.data.online, { what: 'both to notice' });
  hub = await start(port);
  await waitFor(() => b.data.joined && members(b) === '["ben"]', { what: 'ben back', detail: () => b.data.users });
  await waitFor(() => notices(b).length === 1, { what: "ben's notice", detail: () => texts(b) });
  say(b, 'new hub 1');
  assert.equal(await acked(b, 'new hub 1'), '已送达 0');

  assert.equal(amy.app.hub.state, 'reconnecting');
  amy.show();
  await waitFor(() => lines(a, 'new hub 1').length === 1, {
    what: 'the room reloaded from the new hub',
    detail: () => [amy.app.hub.state, texts(a)],
  });
  assert.equal(notices(a).length, 1, 'one notice, for the join and the room together');
  assert.equal(notices(a)[0].text, NOT_RECOVERED);
  assert.deepEqual(
    snapshot(a.data.messages.map((m) => m.text)),
    ['old hub', NOT_RECOVERED, 'new hub 1'],
    'the notice where the gap is, the reloaded message after it'
  );

  // Live again: a new message once, the reloaded one not again.
  say(b, 'new hub 2');
  await waitFor(() => lines(a, 'new hub 2').length === 1, { what: 'the next message', detail: () => texts(a) });
  onceEach(a, ['old hub', 'new hub 1', 'new hub 2']);
  assert.equal(notices(a).length, 1);
  // The app saved its new positions at once: a launch after a kill starts from the new epoch.
  const saved = amy.wx.storage.get(POSITIONS_KEY);
  assert.ok(saved, 'positions saved after the recovery');
  assert.notEqual(saved.groups[ROOM].epoch, oldEpoch);
  assert.equal(saved.groups[ROOM].epoch, amy.app.hub.positions().groups[ROOM].epoch);
  assert.deepEqual(amy.wx.toasts, []);
});

test('an app killed in the background, launched again from its saved positions, recovers what came meanwhile', async (t) => {
  const hub = await start();
  let amy = launch({ config: { hubUrl: hub.url }, storage: { 'chat.name': 'amy' } });
  const ben = launch({ config: { hubUrl: hub.url }, storage: { 'chat.name': 'ben' } });
  let cleo = null;
  t.after(() => {
    amy.close();
    ben.close();
    if (cleo) cleo.close();
  });
  let a = amy.openPage(CHAT);
  const b = ben.openPage(CHAT);
  await waitFor(() => members(a) === '["amy","ben"]' && members(b) === '["amy","ben"]', {
    what: 'both in the room',
    detail: () => [a.data.users, b.data.users],
  });
  say(b, 'seen');
  say(a, 'mine');
  await waitFor(() => lines(a, 'seen').length === 1 && lines(b, 'mine').length === 1, { what: 'both lines' });
  await acked(a, 'mine');

  // To the background (the positions are saved), then WeChat ends the app.
  amy.hide();
  const saved = amy.wx.storage.get(POSITIONS_KEY);
  assert.equal(saved.user.name, 'amy');
  assert.equal(typeof saved.groups[ROOM].offset, 'number');
  amy.close();
  await waitFor(() => members(b) === '["ben"]', { what: 'amy gone', detail: () => b.data.users });
  say(b, 'missed 1');
  say(b, 'missed 2');
  say(b, 'missed direct', 'amy');
  assert.equal(await acked(b, 'missed direct'), '对方离线，已保存，上线后送达');
  await acked(b, 'missed 2');

  // Launched again, from its storage.
  amy = launch({ config: { hubUrl: hub.url }, storage: { 'chat.name': 'amy', [POSITIONS_KEY]: saved } });
  const seen = recoveries(amy); // before any frame: the socket opens later
  a = amy.openPage(CHAT);
  const wanted = ['seen', 'mine', 'missed 1', 'missed 2', 'missed direct'];
  await waitFor(() => wanted.every((text) => lines(a, text).length > 0), {
    what: 'what came while it was gone, and the room before',
    detail: () => texts(a),
  });
  await waitFor(() => seen.length === 2, { what: 'both recoveries', detail: () => seen });
  assert.deepEqual(
    seen.map((r) => [r.user || r.group, r.recovered]).sort(),
    [['amy', true], [ROOM, true]],
    'the first join and subscribe recovered from the saved positions'
  );
  say(b, 'live');
  await waitFor(() => lines(a, 'live').length === 1, { what: 'the next message', detail: () => texts(a) });
  onceEach(a, wanted.concat(['live']));
  assert.equal(a.data.messages.length, wanted.length + 1, JSON.stringify(texts(a)));
  assert.equal(notices(a).length, 0, 'no notice');
  assert.ok(hasMessage(a, { text: 'mine', mine: true, status: '' }), 'our own line from the history, as ours');

  // A newcomer (nothing saved) sees the room's recent messages, not amy's direct one.
  cleo = launch({ config: { hubUrl: hub.url }, storage: { 'chat.name': 'cleo' } });
  const c = cleo.openPage(CHAT);
  const room = ['seen', 'mine', 'missed 1', 'missed 2', 'live'];
  await waitFor(() => room.every((text) => lines(c, text).length > 0), { what: "the room's history", detail: () => texts(c) });
  say(b, 'hello cleo');
  await waitFor(() => lines(c, 'hello cleo').length === 1, { what: 'a live one', detail: () => texts(c) });
  onceEach(c, room.concat(['hello cleo']));
  assert.deepEqual(
    snapshot(c.data.messages.map((m) => m.text)),
    room.concat(['hello cleo']),
    'in the order published'
  );
});
