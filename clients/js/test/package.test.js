'use strict';
// The file loads both ways (CommonJS, and a plain <script> that sets `Wxhub`), keeps to
// syntax old WeChat base libraries accept, and the package and its types name every export.

const { test } = require('node:test');
const assert = require('node:assert/strict');
const fs = require('node:fs');
const path = require('node:path');
const vm = require('node:vm');

const ROOT = path.join(__dirname, '..');
const source = fs.readFileSync(path.join(ROOT, 'wxhub.js'), 'utf8');

test('as a plain script it sets the global Wxhub; as CommonJS it exports the same', () => {
  const window = { WebSocket: function WebSocket() {}, setTimeout, clearTimeout };
  window.window = window;
  window.globalThis = window;
  vm.runInNewContext(source, window, { filename: 'wxhub.js' });
  assert.equal(typeof window.Wxhub.Client, 'function');
  const cjs = require('../wxhub.js');
  assert.deepEqual(Object.keys(window.Wxhub).sort(), Object.keys(cjs).sort());
  // With a global WebSocket the transport may be left out.
  const c = new window.Wxhub.Client({ url: 'ws://x/ws' });
  assert.equal(c.state, 'idle');
});

test('in a mini-program (CommonJS, a global wx, no WebSocket) the wx transport is the default', () => {
  const calls = [];
  const wx = { connectSocket: (o) => { calls.push(o.url); return { onOpen() {}, onMessage() {}, onError() {}, onClose() {} }; } };
  const module = { exports: {} };
  vm.runInNewContext(source, { module, exports: module.exports, wx, setTimeout, clearTimeout }, { filename: 'wxhub.js' });
  const c = new module.exports.Client({ url: 'wss://hub.example.com/ws' });
  c.connect();
  assert.deepEqual(calls, ['wss://hub.example.com/ws']);
  c.close(); // clears the connect timer
});

/** The code with comments, strings, template literals and regular expressions blanked out. */
function codeOnly(text) {
  let out = '';
  let i = 0;
  while (i < text.length) {
    const c = text[i];
    const two = text.slice(i, i + 2);
    if (two === '//') {
      while (i < text.length && text[i] !== '\n') i++;
    } else if (two === '/*') {
      i = text.indexOf('*/', i + 2) + 2;
    } else if (c === "'" || c === '"' || c === '`') {
      i++;
      while (text[i] !== c) i += text[i] === '\\' ? 2 : 1;
      i++;
      out += '""';
    } else if (c === '/' && /[(,=:!&|?{};]\s*$/.test(out)) {
      i++; // a regular expression literal
      while (text[i] !== '/') i += text[i] === '\\' ? 2 : 1;
      i++;
      out += '/x/';
    } else {
      out += c;
      i++;
    }
  }
  return out;
}

/** Lines at the top level of a class body that declare a field (`x = 1;`, `static y;`), ES2022. */
function classBodyFields(code) {
  const found = [];
  const classDepths = []; // brace depth inside each open class body
  let depth = 0;
  let pendingClass = false;
  for (const line of code.split('\n')) {
    const inBody = classDepths.length && depth === classDepths[classDepths.length - 1];
    if (inBody && /^\s*(static\s+)?[A-Za-z_$][\w$]*\s*(=[^=>]|;)/.test(line)) found.push(line.trim());
    for (let i = 0; i < line.length; i++) {
      if (/\bclass\b/.test(line.slice(i, i + 6)) && /^class\b/.test(line.slice(i))) pendingClass = true;
      if (line[i] === '{') {
        depth++;
        if (pendingClass) {
          classDepths.push(depth);
          pendingClass = false;
        }
      } else if (line[i] === '}') {
        if (classDepths.length && depth === classDepths[classDepths.length - 1]) classDepths.pop();
        depth--;
      }
    }
  }
  return found;
}

test('no syntax newer than ES2018 (older WeChat base libraries reject it)', () => {
  const code = codeOnly(source);
  assert.doesNotMatch(code, /\?\.(?!\d)/, 'optional chaining');
  assert.doesNotMatch(code, /\?\?/, 'nullish coalescing');
  assert.doesNotMatch(code, /catch\s*\{/, 'optional catch binding');
  assert.doesNotMatch(code, /#[A-Za-z_]/, 'private fields');
  assert.doesNotMatch(code, /\b\d+n\b/, 'BigInt literals');
  assert.deepEqual(classBodyFields(code), [], 'class fields');
  assert.match(code, /class Client/); // the scanner kept the code
  assert.deepEqual(classBodyFields('class A {\n  x = 1;\n  f() {\n    y = 2;\n  }\n}'), ['x = 1;'], 'the check itself');
});

test('package.json: publishable, no dependencies, test script, and files that exist', () => {
  const pkg = JSON.parse(fs.readFileSync(path.join(ROOT, 'package.json'), 'utf8'));
  assert.equal(pkg.name, 'wxhub-client');
  assert.equal(pkg.version, '0.1.0');
  assert.equal(pkg.main, 'wxhub.js');
  assert.equal(pkg.types, 'wxhub.d.ts');
  assert.equal(pkg.scripts.test, 'node --test test/');
  assert.equal(pkg.dependencies, undefined);
  assert.equal(pkg.devDependencies, undefined);
  for (const f of pkg.files) assert.ok(fs.existsSync(path.join(ROOT, f)), f);
});

test('the .d.ts declares every export and every public method', () => {
  const dts = fs.readFileSync(path.join(ROOT, 'wxhub.d.ts'), 'utf8');
  const Wxhub = require('../wxhub.js');
  for (const name of Object.keys(Wxhub)) assert.match(dts, new RegExp(`export (declare )?(const|function|class|interface|type) ${name}\\b`), name);
  const methods = Object.getOwnPropertyNames(Wxhub.Client.prototype).filter((m) => m !== 'constructor');
  const pub = ['on', 'off', 'connect', 'close', 'retryNow', 'isOpen', 'request', 'send', 'direct', 'broadcast', 'publish', 'users', 'history', 'ping', 'join', 'subscribe', 'unsubscribe', 'identity', 'queued'];
  for (const m of pub) {
    assert.ok(methods.includes(m), `Client.${m} exists`);
    assert.match(dts, new RegExp(`\\n\\s+(get |readonly )?${m}[(<:]`), `Client.${m} is typed`);
  }
});
