'use strict';
// Two instances of the example mini-program chat through a real hub: joining (typed, and
// from storage), the room's member list, direct / room / broadcast messages, an error
// shown as a toast, and leaving the page.

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

test('two mini-programs join, see each other and exchange messages', async (t) => {
  const alice = launch({ config: { hubUrl: hub.url } });
  // Bob joined on an earlier run: his name is in storage and the page joins by itself.
  const bob = launch({ config: { hubUrl: hub.url }, storage: { 'chat.name': 'bob' } });
  t.after(() => {
    alice.close();
    bob.close();
  });

  const a = alice.openPage(CHAT);
  const b = bob.openPage(CHAT);
  await waitFor(() => b.data.me === 'bob', { what: 'bob to join from storage', detail: () => b.data });
  assert.equal(b.data.room, ROOM);

  // Alice types her name and taps join.
  a.onNameInput(input('alice'));
  a.onJoin();
  await waitFor(() => a.data.me === 'alice', { what: 'alice to join', detail: () => a.data });
  assert.equal(alice.wx.storage.get('chat.name'), 'alice', 'the joined name is remembered');
  await waitFor(() => a.data.online, { what: 'status online' });

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
  await waitFor(() => hasMessage(b, { kind: 'direct', from: 'alice', to: 'bob', text: 'hi bob', mine: false }), {
    what: 'bob to receive the direct message',
    detail: () => b.data.messages,
  });
  await waitFor(() => hasMessage(a, { kind: 'direct', from: 'alice', to: 'bob', mine: true }), {
    what: "alice's own copy of her direct message",
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
  // Exactly once each: no local echo on top of the hub's.
  assert.equal(a.data.messages.filter((m) => m.text === 'news for all').length, 1);
  assert.equal(alice.wx.toasts.length, 0, 'no error so far');

  // A note to herself: the hub delivers it to her own session, and it shows once.
  a.onPickUser({ currentTarget: { dataset: { name: 'alice' } } });
  a.onTextInput(input('note to self'));
  a.onSend();
  await waitFor(() => hasMessage(a, { kind: 'direct', to: 'alice', text: 'note to self' }), {
    what: 'the note to self',
    detail: () => a.data.messages,
  });

  // An error from the hub is shown as a toast.
  a.onModeChange(input('direct'));
  a.onToInput(input('nobody'));
  a.onTextInput(input('anyone there?'));
  a.onSend();
  await waitFor(() => alice.wx.toasts.length === 1, { what: 'a toast', detail: () => alice.wx.toasts });
  assert.match(alice.wx.toasts[0].title, /nobody/);
  assert.equal(alice.wx.toasts[0].icon, 'none');
  // By now the note's ack came back too (replies come in order): still shown once.
  assert.equal(a.data.messages.filter((m) => m.text === 'note to self').length, 1);

  // Bob leaves the page: his listeners go, he leaves the room, alice sees it.
  const hubOfBob = bob.app.hub;
  bob.closePage(b);
  assert.equal(hubOfBob.listenerCount(), 0, 'the page removed its listeners in onUnload');
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
  await waitFor(() => carol.wx.toasts.length === 2, { what: 'the refusal', detail: () => carol.wx.toasts });
  assert.equal(page.data.me, '');
  assert.equal(carol.wx.storage.get('chat.name'), undefined);

  page.onNameInput(input('张三'));
  page.onJoin();
  await waitFor(() => page.data.me === '张三', { what: 'a Unicode name to join', detail: () => page.data });
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
      const [room, everyone] = await Promise.all([h.users('r1'), h.users()]);
      return JSON.stringify(room.users) === '["frank2"]' && !everyone.users.includes('frank');
    },
    { what: 'the old session to be gone, the group renewed for the new one' }
  );
});
