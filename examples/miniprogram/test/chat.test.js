'use strict';
// Two instances of the example mini-program chat through a real hub: joining (typed, and
// from storage), the room's member list, direct / room / broadcast messages shown at once
// as pending and then delivered, an error shown in Chinese, a failed message sent again by
// its retry action, a direct message the hub keeps for a user who just left, and leaving
// the page.

const { test, before, after } = require('node:test');
const assert = require('node:assert/strict');
const { startHub } = require('./harness/hub-process');
const { launch, snapshot } = require('./harness/miniprogram');
const { waitFor } = require('./harness/wait');

const CHAT = 'pages/chat/chat';
const ROOM = 'lobby'; // config.js chatRoom

let hub;
before(async () => {
  hub = await startHub();
});
after(async () => {
  if (hub) await hub.kill();
});

const input = (value) => ({ detail: { value } });
const hasMessage = (page, fields) =>
  page.data.messages.some((m) => Object.keys(fields).every((k) => m[k] === fields[k]));
const lines = (page, text) => page.data.messages.filter((m) => m.text === text);
const listeners = (hub) => Object.keys(hub.listeners).reduce((n, type) => n + hub.listeners[type].length, 0);

test('two mini-programs join, see each other and exchange messages', async (t) => {
  const alice = launch({ config: { hubUrl: hub.url } });
  // Bob joined on an earlier run: his name is in storage and the page joins by itself.
  const bob = launch({ config: { hubUrl: hub.url }, storage: { 'chat.name': 'bob' } });
  t.after(() => {
    alice.close();
    bob.close();
  });
  const appListeners = listeners(bob.app.hub); // the app's own, before any page

  const a = alice.openPage(CHAT);
  const b = bob.openPage(CHAT);
  await waitFor(() => b.data.joined && b.data.me === 'bob', { what: 'bob to join from storage', detail: () => b.data });
  assert.equal(b.data.room, ROOM);

  // Alice types her name and taps join.
  a.onNameInput(input('alice'));
  a.onJoin();
  await waitFor(() => a.data.joined, { what: 'alice to join', detail: () => a.data });
  assert.equal(a.data.me, 'alice');
  assert.equal(a.data.status, '已连接');
  assert.equal(alice.wx.storage.get('chat.name'), 'alice', 'the joined name is remembered');
  assert.ok(a.data.online, 'status online');

  // Both see both in the room: bob's list grows through a presence event.
  const bothThere = (p) => JSON.stringify(p.data.users) === '["alice","bob"]';
  await waitFor(() => bothThere(a) && bothThere(b), {
    what: 'both member lists',
    detail: () => [a.data.users, b.data.users],
  });

  // Direct: alice taps bob in the member list, types, sends.
  a.onPickUser({ currentTarget: { dataset: { name: 'bob' } } });
  assert.equal(a.data.mode, 'direct');
  a.onTextInput(input('hi bob'));
  a.onSend();
  assert.equal(a.data.text, '', 'the input is cleared on send');
  // In the list at once, pending; delivered on the ack, to bob's one session.
  assert.ok(hasMessage(a, { kind: 'direct', from: 'alice', to: 'bob', text: 'hi bob', mine: true, status: 'pending', statusText: '发送中…' }));
  await waitFor(() => hasMessage(b, { kind: 'direct', from: 'alice', to: 'bob', text: 'hi bob', mine: false }), {
    what: 'bob to receive the direct message',
    detail: () => b.data.messages,
  });
  await waitFor(() => hasMessage(a, { text: 'hi bob', status: 'delivered', statusText: '已送达 1' }), {
    what: "alice's line to be marked delivered",
    detail: () => a.data.messages,
  });

  // Room: bob writes to the room; both get it (the hub echoes it to its sender).
  b.onModeChange(input('group'));
  b.onTextInput(input('hello room'));
  b.onSend();
  for (const [who, page] of [['alice', a], ['bob', b]]) {
    await waitFor(() => hasMessage(page, { kind: 'group', from: 'bob', group: ROOM, text: 'hello room' }), {
      what: `${who} to see bob's room message`,
      detail: () => page.data.messages,
    });
  }
  assert.ok(hasMessage(b, { kind: 'group', mine: true }), "bob's own room message is marked as his");
  // `delivered` counts the sessions other than the sender's: alice's, not bob's own copy.
  await waitFor(() => hasMessage(b, { text: 'hello room', statusText: '已送达 1' }), {
    what: "bob's room message delivered to 1",
    detail: () => b.data.messages,
  });
  assert.equal(lines(b, 'hello room').length, 1, "the hub's copy to bob is his own line, not a second one");

  // Broadcast: everyone joined gets it.
  a.onModeChange(input('broadcast'));
  a.onTextInput(input('news for all'));
  a.onSend();
  for (const page of [a, b]) {
    await waitFor(() => hasMessage(page, { kind: 'broadcast', from: 'alice', text: 'news for all' }), {
      what: 'the broadcast',
      detail: () => page.data.messages,
    });
  }
  // Exactly once each: the hub's copy to alice is the line she typed.
  await waitFor(() => hasMessage(a, { text: 'news for all', statusText: '已送达 1' }), { what: 'the broadcast acked' });
  assert.equal(lines(a, 'news for all').length, 1);
  assert.equal(lines(b, 'news for all').length, 1);
  assert.equal(alice.wx.toasts.length, 0, 'no error so far');

  // A note to herself: the hub delivers it to her own session, and it shows once.
  a.onPickUser({ currentTarget: { dataset: { name: 'alice' } } });
  a.onTextInput(input('note to self'));
  a.onSend();
  await waitFor(() => hasMessage(a, { kind: 'direct', to: 'alice', text: 'note to self', statusText: '已送达 0' }), {
    what: 'the note to self, delivered to no other session',
    detail: () => a.data.messages,
  });

  // An error from the hub is shown as a toast, in Chinese, and on the line.
  a.onModeChange(input('direct'));
  a.onToInput(input('nobody'));
  a.onTextInput(input('anyone there?'));
  a.onSend();
  await waitFor(() => alice.wx.toasts.length === 1, { what: 'a toast', detail: () => alice.wx.toasts });
  assert.equal(alice.wx.toasts[0].title, 'nobody 不在线');
  assert.equal(alice.wx.toasts[0].icon, 'none');
  assert.ok(hasMessage(a, { text: 'anyone there?', status: 'failed', statusText: '发送失败，点击重试', error: 'nobody 不在线' }));
  assert.equal(a.data.text, 'anyone there?', 'the text is back in the input');
  // The note was answered before (replies come in order): still shown once.
  assert.equal(lines(a, 'note to self').length, 1);

  // Bob leaves the page: his listeners go, he leaves the room, alice sees it.
  const hubOfBob = bob.app.hub;
  bob.closePage(b);
  assert.equal(listeners(hubOfBob), appListeners, 'the page removed its listeners in onUnload');
  await waitFor(() => JSON.stringify(a.data.users) === '["alice"]', {
    what: 'bob to leave alice’s member list',
    detail: () => a.data.users,
  });
  assert.deepEqual(snapshot(a.data.users), ['alice']);
});

test('a name the hub refuses is shown and not remembered', async (t) => {
  const carol = launch({ config: { hubUrl: hub.url } });
  t.after(() => carol.close());
  const page = carol.openPage(CHAT);

  page.onNameInput(input(' '));
  page.onJoin();
  assert.equal(carol.wx.toasts.length, 1, 'an empty name is refused before asking the hub');

  page.onNameInput(input('x'.repeat(65))); // over the hub's 64 characters
  page.onJoin();
  // Kept (the name field hidden) until the hub answers; refused, the field comes back.
  assert.equal(page.data.me, 'x'.repeat(65));
  await waitFor(() => carol.wx.toasts.length === 2, { what: 'the refusal', detail: () => carol.wx.toasts });
  assert.match(carol.wx.toasts[1].title, /名字不能用/);
  assert.equal(page.data.me, '');
  assert.equal(page.data.nameInput, 'x'.repeat(65), 'the refused name is back in the field');
  assert.equal(carol.wx.storage.get('chat.name'), undefined);

  page.onNameInput(input('张三'));
  page.onJoin();
  await waitFor(() => page.data.joined && page.data.me === '张三', { what: 'a Unicode name to join', detail: () => page.data });
  await waitFor(() => page.data.users.includes('张三'), { what: 'the member list' });
});

test('joining under another name replaces the session', async (t) => {
  const mp = launch({ config: { hubUrl: hub.url } });
  t.after(() => mp.close());
  const h = mp.app.hub;
  await h.join('frank');
  await h.subscribe('r1');
  // The hub lets a session join once: a new name takes a new socket, and the old one
  // is closed so that its session does not linger under the old name.
  const joined = await h.join('frank2');
  assert.equal(joined.name, 'frank2');
  // The hub notices the old socket's close on its own time: ask until it has.
  await waitFor(
    async () => {
      const [room, everyone] = await Promise.all([h.users({ group: 'r1' }), h.users()]);
      return JSON.stringify(room.users) === '["frank2"]' && !everyone.users.includes('frank');
    },
    { what: 'the old session to be gone, the group renewed for the new one' }
  );
});

test('a message that failed stays in the list, marked failed; its retry delivers it, once, with the same mid', async (t) => {
  const alice = launch({ config: { hubUrl: hub.url }, storage: { 'chat.name': 'alice2' } });
  t.after(() => alice.close());
  const a = alice.openPage(CHAT);
  await waitFor(() => a.data.joined, { what: 'alice2 to join', detail: () => a.data });

  // Bob2 was never seen by this hub: it answers not_found.
  a.onModeChange(input('direct'));
  a.onToInput(input('bob2'));
  a.onTextInput(input('are you there?'));
  a.onSend();
  await waitFor(() => hasMessage(a, { text: 'are you there?', status: 'failed' }), {
    what: 'the line marked failed',
    detail: () => a.data.messages,
  });
  const failed = a.data.messages.find((m) => m.text === 'are you there?');
  assert.equal(failed.statusText, '发送失败，点击重试');
  assert.equal(failed.error, 'bob2 不在线');
  assert.equal(alice.wx.toasts[0].title, 'bob2 不在线');
  assert.equal(a.data.text, 'are you there?', 'the text is not lost from the input');

  // Bob comes online; alice taps the failed line.
  const bob = launch({ config: { hubUrl: hub.url }, storage: { 'chat.name': 'bob2' } });
  t.after(() => bob.close());
  const b = bob.openPage(CHAT);
  await waitFor(() => a.data.users.includes('bob2'), { what: 'bob2 in the room', detail: () => a.data.users });
  a.onRetry({ currentTarget: { dataset: { key: failed.key } } });
  assert.equal(a.data.text, '', 'the draft was this message: sent, so cleared');
  assert.ok(hasMessage(a, { key: failed.key, status: 'pending', statusText: '发送中…', error: '' }));
  await waitFor(() => hasMessage(a, { key: failed.key, status: 'delivered', statusText: '已送达 1' }), {
    what: 'the retried line to be delivered',
    detail: () => a.data.messages,
  });
  await waitFor(() => lines(b, 'are you there?').length === 1, { what: 'bob2 to get it', detail: () => b.data.messages });
  const got = lines(b, 'are you there?')[0];
  assert.equal(got.mid, failed.mid, 'the same message id');
  assert.equal(lines(a, 'are you there?').length, 1, 'one line, not a second copy');

  // Sending the same text from the input after a failure is that retry too, not a second
  // message. (To a name never seen: bob2, seen lately, would have it kept for him.)
  a.onToInput(input('bob3'));
  a.onTextInput(input('still there?'));
  a.onSend();
  await waitFor(() => hasMessage(a, { text: 'still there?', status: 'failed' }), { what: 'the second failure' });
  const second = a.data.messages.find((m) => m.text === 'still there?');
  assert.equal(second.error, 'bob3 不在线');
  const count = a.data.messages.length;
  a.onSend(); // the text was put back in the input
  assert.equal(a.data.messages.length, count, 'no new line');
  assert.ok(hasMessage(a, { key: second.key, mid: second.mid, status: 'pending' }));
  await waitFor(() => hasMessage(a, { key: second.key, status: 'failed' }), { what: 'failed again: bob3 is unknown' });
});

test('a direct message to someone who just left is kept by the hub: marked so, and delivered when he is back', async (t) => {
  const carl = launch({ config: { hubUrl: hub.url }, storage: { 'chat.name': 'carl' } });
  let dave = launch({ config: { hubUrl: hub.url }, storage: { 'chat.name': 'dave' } });
  t.after(() => {
    carl.close();
    dave.close();
  });
  const c = carl.openPage(CHAT);
  dave.openPage(CHAT);
  await waitFor(() => c.data.users.includes('dave'), { what: 'dave in the room', detail: () => c.data.users });

  // Dave goes to the background (the app saves where it is) and WeChat ends it.
  dave.hide();
  const saved = dave.wx.storage.get('wxhub.positions');
  assert.equal(saved.user.name, 'dave', 'the positions are saved on onHide');
  dave.close();
  await waitFor(() => !c.data.users.includes('dave'), { what: 'dave gone', detail: () => c.data.users });

  c.onPickUser({ currentTarget: { dataset: { name: 'dave' } } });
  c.onTextInput(input('call me when you are back'));
  c.onSend();
  await waitFor(() => hasMessage(c, { text: 'call me when you are back', status: 'stored' }), {
    what: 'the line marked stored',
    detail: () => c.data.messages,
  });
  const line = lines(c, 'call me when you are back')[0];
  assert.equal(line.statusText, '对方离线，已保存，上线后送达');
  assert.deepEqual(carl.wx.toasts, [], 'kept is not an error');
  assert.equal(c.data.text, '', 'nothing put back in the input');

  // Dave is launched again, from what he saved: the hub hands him the message, once.
  dave = launch({ config: { hubUrl: hub.url }, storage: { 'chat.name': 'dave', 'wxhub.positions': saved } });
  const d = dave.openPage(CHAT);
  await waitFor(() => lines(d, 'call me when you are back').length === 1, {
    what: 'dave to get the kept message',
    detail: () => d.data.messages,
  });
  assert.equal(lines(d, 'call me when you are back')[0].mid, line.mid);
  // Once: a message sent after it comes after any second copy would have.
  c.onTextInput(input('welcome back'));
  c.onSend();
  await waitFor(() => lines(d, 'welcome back').length === 1, { what: 'the next message', detail: () => d.data.messages });
  await waitFor(() => hasMessage(c, { text: 'welcome back', statusText: '已送达 1' }), { what: 'delivered to dave' });
  assert.equal(lines(d, 'call me when you are back').length, 1);
});
