'use strict';
// A hub started with an auth secret, seen from the chat page: a name without a token is
// refused (shown in Chinese, the name field back); the app's own code then joins with a
// token through getApp().hub (as README.md says), and the page follows: signed in, in the
// room, and again after the hub restarts (the library sends the token with every join;
// clients/js/test covers the rest: the token kept, three bad tokens closing with 4500).

const { execFileSync } = require('node:child_process');
const { test, after } = require('node:test');
const assert = require('node:assert/strict');
const { startHub, freePort, hubBinary } = require('./harness/hub-process');
const { launch } = require('./harness/miniprogram');
const { waitFor } = require('./harness/wait');

const SECRET = 'test-secret-not-for-production';
const CHAT = 'pages/chat/chat';

// Builds from before join tokens have no `token` subcommand.
const supportsTokens = /\btoken\b/.test(execFileSync(hubBinary(), ['--help'], { encoding: 'utf8' }));

const hubs = [];
after(async () => {
  await Promise.all(hubs.map((h) => h.kill()));
});

test('the page follows a join with a token, and the rejoin after a hub restart', { skip: !supportsTokens && 'this wxhub build has no join tokens' }, async (t) => {
  const port = await freePort();
  const args = ['--auth-secret', SECRET];
  hubs.push(await startHub({ port, args }));
  const token = execFileSync(hubBinary(), ['token', '--name', 'alice', '--ttl', '10m', '--secret', SECRET], {
    encoding: 'utf8',
  }).trim();

  const mp = launch({
    config: { hubUrl: `ws://127.0.0.1:${port}/ws`, reconnectBaseMs: 100, reconnectMaxMs: 500 },
    storage: { 'chat.name': 'alice' },
  });
  t.after(() => mp.close());
  const page = mp.openPage(CHAT);

  // The remembered name, without a token: refused.
  await waitFor(() => mp.wx.toasts.length === 1, { what: 'the refusal', detail: () => [page.data, mp.wx.toasts] });
  assert.equal(mp.wx.toasts[0].title, '登录凭证无效或已过期');
  assert.equal(page.data.me, '', 'the name field is back');
  assert.equal(mp.app.hub.identity().error, 'unauthorized');

  // The app gets a token from its backend and joins with it.
  const joined = await mp.app.hub.join('alice', { token });
  assert.equal(joined.name, 'alice');
  await waitFor(() => page.data.joined && page.data.users.includes('alice'), {
    what: 'the page signed in and in the room',
    detail: () => page.data,
  });

  // The hub restarts: the rejoin carries the token, so it is accepted again.
  await hubs[0].kill();
  await waitFor(() => !page.data.joined, { what: 'the drop' });
  assert.equal(page.data.me, 'alice', 'the name is kept while down');
  hubs.push(await startHub({ port, args }));
  await waitFor(() => page.data.joined && page.data.status === '已连接', {
    what: 'the rejoin with the token',
    detail: () => page.data.status,
  });
  await waitFor(() => page.data.users.includes('alice'), { what: 'the room again', detail: () => page.data.users });
  assert.equal(mp.wx.toasts.length, 1, 'no other error');
});
