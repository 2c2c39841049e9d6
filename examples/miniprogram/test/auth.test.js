'use strict';
// A hub started with an auth secret: the socket module sends the join token with every
// join, including the rejoin after the hub restarts.

const { execFileSync } = require('node:child_process');
const { test, after } = require('node:test');
const assert = require('node:assert/strict');
const { startHub, freePort, hubBinary } = require('./harness/hub-process');
const { launch } = require('./harness/miniprogram');
const { waitFor } = require('./harness/wait');

const SECRET = 'test-secret-not-for-production';

// Builds from before join tokens have no `token` subcommand.
const supportsTokens = /\btoken\b/.test(execFileSync(hubBinary(), ['--help'], { encoding: 'utf8' }));

const hubs = [];
after(async () => {
  await Promise.all(hubs.map((h) => h.kill()));
});

test('the join token goes with every join', { skip: !supportsTokens && 'this wxhub build has no join tokens' }, async (t) => {
  const port = await freePort();
  const args = ['--auth-secret', SECRET];
  hubs.push(await startHub({ port, args }));
  const token = execFileSync(hubBinary(), ['token', '--name', 'alice', '--ttl', '10m', '--secret', SECRET], {
    encoding: 'utf8',
  }).trim();

  const mp = launch({ config: { hubUrl: `ws://127.0.0.1:${port}/ws`, reconnectBaseMs: 100, reconnectMaxMs: 500 } });
  t.after(() => mp.close());
  const hub = mp.app.hub;

  await assert.rejects(hub.join('alice'), (err) => err.code === 'unauthorized');
  assert.equal(hub.name, '', 'a refused name is not replayed');
  const joined = await hub.join('alice', token);
  assert.equal(joined.name, 'alice');
  await hub.subscribe('room1');

  // The hub restarts: the rejoin carries the token, so it is accepted again.
  await hubs[0].kill();
  await waitFor(() => hub.state === 'waiting', { what: 'the drop' });
  hubs.push(await startHub({ port, args }));
  await waitFor(() => hub.session && hub.session.name === 'alice', {
    what: 'the rejoin with the token',
    detail: () => hub.state,
  });
  const reply = await hub.users('room1');
  assert.deepEqual([...reply.users], ['alice'], 're-subscribed after the authorised rejoin');
});

test('a close with 4500 (bad tokens) ends the socket for good: no reconnect loop', { skip: !supportsTokens && 'this wxhub build has no join tokens' }, async (t) => {
  const port = await freePort();
  hubs.push(await startHub({ port, args: ['--auth-secret', SECRET] }));
  const mp = launch({ config: { hubUrl: `ws://127.0.0.1:${port}/ws`, reconnectBaseMs: 50, reconnectMaxMs: 100 } });
  t.after(() => mp.close());
  const hub = mp.app.hub;
  for (let i = 0; i < 3; i += 1) {
    await assert.rejects(hub.join('alice', 'not-a-token'), (err) => ['unauthorized', 'disconnected'].includes(err.code));
  }
  await waitFor(() => hub.state === 'closed', { what: 'the module to stay down', detail: () => hub.state });
  // With retries every 50-100 ms, a reconnect would have come by now.
  await new Promise((resolve) => setTimeout(resolve, 500));
  assert.equal(hub.state, 'closed');
});
