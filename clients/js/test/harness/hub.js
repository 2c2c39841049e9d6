'use strict';
// Starts and stops the real wxhub binary (after examples/miniprogram/test/harness/hub-process.js).
//
// The binary is $WXHUB_BIN (a relative path is taken from the repository root), or
// target/debug/wxhub of the repository this directory sits in. With neither, the tests
// that need a hub are skipped, with the reason (hubMissing()); a WXHUB_BIN that names no
// file is an error, not a skip.

const fs = require('node:fs');
const http = require('node:http');
const net = require('node:net');
const path = require('node:path');
const { spawn, execFileSync } = require('node:child_process');

const REPO_ROOT = path.resolve(__dirname, '../../../..');

function hubBinary() {
  const configured = process.env.WXHUB_BIN;
  const bin = configured ? path.resolve(REPO_ROOT, configured) : path.join(REPO_ROOT, 'target/debug/wxhub');
  if (configured && !fs.existsSync(bin)) throw new Error(`WXHUB_BIN=${configured}: no such file (${bin})`);
  return bin;
}

/** Why the real-hub tests cannot run, or false when they can. */
function hubMissing() {
  const bin = hubBinary();
  return fs.existsSync(bin) ? false : `no wxhub binary at ${bin}: build one (cargo build --bin wxhub) or set WXHUB_BIN`;
}

/** A port nothing listens on now: bound on port 0, read, released. */
function freePort() {
  return new Promise((resolve, reject) => {
    const server = net.createServer();
    server.unref();
    server.on('error', reject);
    server.listen(0, '127.0.0.1', () => {
      const { port } = server.address();
      server.close(() => resolve(port));
    });
  });
}

function healthy(port) {
  return new Promise((resolve) => {
    const req = http.get({ host: '127.0.0.1', port, path: '/healthz', timeout: 500 }, (res) => {
      res.resume();
      resolve(res.statusCode === 200);
    });
    req.on('error', () => resolve(false));
    req.on('timeout', () => {
      req.destroy();
      resolve(false);
    });
  });
}

// Hubs still running when the test process exits are killed then.
const running = new Set();
process.on('exit', () => {
  for (const child of running) child.kill('SIGKILL');
});

/** Starts a hub on 127.0.0.1:`port` (a free one when not given); resolves once it answers /healthz. */
async function startHub({ port, args = [], readyTimeoutMs = 10000 } = {}) {
  port = port || (await freePort());
  const child = spawn(hubBinary(), ['--bind', `127.0.0.1:${port}`, '--tick-ms', '200', ...args], {
    stdio: ['ignore', 'ignore', 'pipe'],
  });
  running.add(child);
  let stderr = '';
  child.stderr.on('data', (chunk) => {
    stderr = (stderr + chunk).slice(-20000);
  });
  let exit = null;
  const exited = new Promise((resolve) => {
    child.on('exit', (code, signal) => {
      running.delete(child);
      exit = { code, signal };
      resolve(exit);
    });
  });
  const deadline = Date.now() + readyTimeoutMs;
  while (!(await healthy(port))) {
    if (exit) throw new Error(`wxhub exited (${JSON.stringify(exit)}) before listening:\n${stderr}`);
    if (Date.now() > deadline) {
      child.kill('SIGKILL');
      throw new Error(`wxhub did not answer on port ${port} within ${readyTimeoutMs} ms:\n${stderr}`);
    }
    await new Promise((resolve) => setTimeout(resolve, 25)); // polling the process, not a sync point
  }
  return {
    port,
    url: `ws://127.0.0.1:${port}/ws`,
    stderr: () => stderr,
    /** Kills the hub at once (like a crash) and waits for it to exit. */
    async kill() {
      if (!exit) child.kill('SIGKILL');
      await exited;
    },
    /** Freezes the process: connections stay open, nothing answers. Resolves once it is stopped. */
    async pause() {
      child.kill('SIGSTOP');
      // The signal lands asynchronously: wait until the kernel says stopped (Linux), so
      // that a frame sent next is certainly not answered.
      const stat = `/proc/${child.pid}/stat`;
      if (!fs.existsSync(stat)) return;
      const until = Date.now() + 5000;
      while (!/^\d+ \(.*\) [tT] /.test(fs.readFileSync(stat, 'utf8'))) {
        if (Date.now() > until) throw new Error('wxhub did not stop');
        await new Promise((resolve) => setTimeout(resolve, 5));
      }
    },
    resume() {
      child.kill('SIGCONT');
    },
  };
}

/** A join token from the hub's own `token` subcommand. */
function mintToken(name, secret) {
  return execFileSync(hubBinary(), ['token', '--name', name, '--ttl', '10m', '--secret', secret], {
    encoding: 'utf8',
  }).trim();
}

module.exports = { startHub, freePort, hubBinary, hubMissing, mintToken, REPO_ROOT };
