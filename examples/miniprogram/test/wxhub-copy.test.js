'use strict';
// utils/wxhub.js is the client library, clients/js/wxhub.js, copied byte for byte (a
// mini-program cannot require outside its folder). A copy that drifts is a bug.

const fs = require('node:fs');
const path = require('node:path');
const { test } = require('node:test');
const assert = require('node:assert/strict');
const { REPO_ROOT } = require('./harness/hub-process');
const { EXAMPLE_ROOT } = require('./harness/miniprogram');

test('utils/wxhub.js is a byte-identical copy of clients/js/wxhub.js', () => {
  const library = fs.readFileSync(path.join(REPO_ROOT, 'clients/js/wxhub.js'));
  const copy = fs.readFileSync(path.join(EXAMPLE_ROOT, 'utils/wxhub.js'));
  assert.ok(
    copy.equals(library),
    'examples/miniprogram/utils/wxhub.js differs from clients/js/wxhub.js ' +
      `(${copy.length} bytes against ${library.length}); in the repository root run:\n` +
      '  cp clients/js/wxhub.js examples/miniprogram/utils/wxhub.js'
  );
});

test('the app has one client, from the library, and no protocol code of its own', () => {
  const app = fs.readFileSync(path.join(EXAMPLE_ROOT, 'app.js'), 'utf8');
  assert.match(app, /require\('\.\/utils\/wxhub\.js'\)/);
  assert.match(app, /new Wxhub\.Client\(/);
  assert.match(app, /Wxhub\.wxTransport\(wx\)/);
  assert.ok(!fs.existsSync(path.join(EXAMPLE_ROOT, 'utils/hub.js')), 'utils/hub.js is gone: the library does its job');
  for (const page of ['pages/chat/chat.js', 'pages/stock/stock.js']) {
    const source = fs.readFileSync(path.join(EXAMPLE_ROOT, page), 'utf8');
    assert.match(source, /getApp\(\)\.hub/, `${page} uses the app's client`);
    assert.ok(!/connectSocket|new Wxhub/.test(source), `${page} opens no socket of its own`);
  }
});

test("the app's own code uses no syntax older WeChat base libraries reject", () => {
  const files = ['app.js', 'config.js', 'utils/chart.js', 'utils/errors.js', 'pages/chat/chat.js', 'pages/stock/stock.js'];
  for (const file of files) {
    const source = fs
      .readFileSync(path.join(EXAMPLE_ROOT, file), 'utf8')
      .replace(/\/\*[\s\S]*?\*\//g, '') // block comments
      .replace(/\/\/.*$/gm, '') // line comments (no URL in code outside strings here)
      .replace(/'(?:[^'\\\n]|\\.)*'|`(?:[^`\\]|\\.)*`/g, "''"); // strings
    assert.ok(!/\?\.(?!\d)/.test(source), `${file}: optional chaining`);
    assert.ok(!/\?\?/.test(source), `${file}: nullish coalescing`);
    assert.ok(!/catch\s*\{/.test(source), `${file}: catch without a binding`);
    assert.ok(!/\bclass\b/.test(source), `${file}: a class (older libraries reject class fields; Page({...}) needs none)`);
  }
});
