'use strict';
// Starts and stops the real wxhub binary for the tests.
//
// The binary is $WXHUB_BIN, or target/debug/wxhub of this repository (found from this
// file, not from the working directory). A relative WXHUB_BIN is taken from the
// repository root too, since `npm test` runs in examples/miniprogram/test.

const fs = require('node:fs');
const http = require('node:http');
const net = require('node:net');
const path = require('node:path');
const { spawn } = require('node:child_process');

const REPO_ROOT = path.resolve(__dirname, '../../../..');

function hubBinary() {
  const configured = process.env.WXHUB_BIN;
  const bin = configured ? path.resolve(REPO_ROOT, configured) : path.join(REPO_ROOT, 'target/debug/wxhub');
  if (!fs.existsSync(bin)) {
    throw new Error(`no wxhub binary at ${bin}: run \`cargo build\` in ${REPO_ROOT}, or set WXHUB_BIN`);
  }
  return bin;
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

// Children still running when the test process exits (a crash, an uncaught error) are
// killed then, so no hub outlives its test run.
const running = new Set();
process.on('exit', () => {
  for (const child of running) child.kill('SIGKILL');
});

/**
 * Starts a hub on 127.0.0.1:`port` (a free one when not given) with a fast ticker, and
 * resolves once it answers /healthz. `args` are extra command-line flags.
 */
async function startHub({ port, args = [], readyTimeoutMs = 10000 } = {}) {
  port = port || (await freePort());
  const bin = hubBinary();
  const child = spawn(bin, ['--bind', `127.0.0.1:${port}`, '--tick-ms', '200', ...args], {
    stdio: ['ignore', 'ignore', 'pipe'],
  });
  running.add(child);
  let stderr = '';
  child.stderr.on('data', (chunk) => {
    stderr = (stderr + chunk).slice(-20000);
  });
  const exited = new Promise((resolve) => {
    child.on('exit', (code, signal) => {
      running.delete(child);
      resolve({ code, signal });
    });
  });
  let exit = null;
  exited.then((e) => {
    exit = e;
  });

  const deadline = Date.now() + readyTimeoutMs;
  while (!(await healthy(port))) {
    if (exit) throw new Error(`wxhub exited (${JSON.stringify(exit)}) before listening:\n${stderr}`);
    if (Date.now() > deadline) {
      child.kill('SIGKILL');
      throw new Error(`wxhub did not answer on port ${port} within ${readyTimeoutMs} ms:\n${stderr}`);
    }
    await new Promise((resolve) => setTimeout(resolve, 25));
  }

  return {
    port,
    /** The typed protocol's endpoint. */
    url: `ws://127.0.0.1:${port}/ws`,
    child,
    stderr: () => stderr,
    /** Kills the hub at once (no graceful close: like a crash) and waits for it to exit. */
    async kill() {
      if (!exit) child.kill('SIGKILL');
      await exited;
    },
    /** Freezes the process: connections stay open but nothing answers. */
    pause() {
      child.kill('SIGSTOP');
    },
    resume() {
      child.kill('SIGCONT');
    },
  };
}

module.exports = { startHub, freePort, hubBinary, REPO_ROOT };
