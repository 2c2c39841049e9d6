'use strict';
// A minimal WebSocket client with the browser's API (onopen, onmessage, onerror, onclose,
// send, close, readyState), written over `net` so the tests need no npm package and no
// --experimental-websocket flag. RFC 6455 client side: the handshake, masked text frames,
// reassembled fragments, close frames both ways, pongs for pings. Enough for wxhub; not a
// general client (no TLS, no extensions, no subprotocols).

const crypto = require('node:crypto');
const net = require('node:net');

const GUID = '258EAFA5-E914-47DA-95CA-C5AB0DC85B11';
const CONNECTING = 0;
const OPEN = 1;
const CLOSING = 2;
const CLOSED = 3;

function frame(opcode, payload) {
  const mask = crypto.randomBytes(4);
  const len = payload.length;
  let header;
  if (len < 126) {
    header = Buffer.from([0x80 | opcode, 0x80 | len]);
  } else if (len < 65536) {
    header = Buffer.alloc(4);
    header[0] = 0x80 | opcode;
    header[1] = 0x80 | 126;
    header.writeUInt16BE(len, 2);
  } else {
    header = Buffer.alloc(10);
    header[0] = 0x80 | opcode;
    header[1] = 0x80 | 127;
    header.writeBigUInt64BE(BigInt(len), 2);
  }
  const body = Buffer.alloc(len);
  for (let i = 0; i < len; i++) body[i] = payload[i] ^ mask[i & 3];
  return Buffer.concat([header, mask, body]);
}

class WebSocket {
  constructor(url) {
    const u = new URL(url);
    if (u.protocol !== 'ws:') throw new SyntaxError(`unsupported URL ${url}`);
    this.url = url;
    this.readyState = CONNECTING;
    this.onopen = this.onmessage = this.onerror = this.onclose = null;
    this.sent = []; // every text frame sent, for tests to look at
    this.buffer = Buffer.alloc(0);
    this.fragments = null;
    this.closeInfo = null; // {code, reason} from the hub's close frame
    this.key = crypto.randomBytes(16).toString('base64');
    this.socket = net.connect(Number(u.port || 80), u.hostname);
    this.socket.on('connect', () => {
      this.socket.write(
        `GET ${u.pathname}${u.search} HTTP/1.1\r\nHost: ${u.host}\r\nUpgrade: websocket\r\n` +
          `Connection: Upgrade\r\nSec-WebSocket-Key: ${this.key}\r\nSec-WebSocket-Version: 13\r\n\r\n`
      );
    });
    this.socket.on('data', (chunk) => this.data(chunk));
    this.socket.on('error', () => {}); // 'close' follows
    this.socket.on('close', () => this.finish());
  }

  data(chunk) {
    this.buffer = Buffer.concat([this.buffer, chunk]);
    if (this.readyState === CONNECTING) {
      const end = this.buffer.indexOf('\r\n\r\n');
      if (end < 0) return;
      const head = this.buffer.subarray(0, end).toString('latin1');
      this.buffer = this.buffer.subarray(end + 4);
      const accept = crypto.createHash('sha1').update(this.key + GUID).digest('base64');
      if (!/^HTTP\/1\.1 101/.test(head) || !head.includes(accept)) {
        this.socket.destroy(); // a refused handshake: error, then close 1006, as in a browser
        return;
      }
      this.readyState = OPEN;
      if (this.onopen) this.onopen({ type: 'open' });
    }
    this.frames();
  }

  frames() {
    for (;;) {
      const b = this.buffer;
      if (b.length < 2) return;
      const fin = (b[0] & 0x80) !== 0;
      const opcode = b[0] & 0x0f;
      let len = b[1] & 0x7f;
      let at = 2;
      if (len === 126) {
        if (b.length < 4) return;
        len = b.readUInt16BE(2);
        at = 4;
      } else if (len === 127) {
        if (b.length < 10) return;
        len = Number(b.readBigUInt64BE(2));
        at = 10;
      }
      if (b.length < at + len) return; // the hub never masks its frames
      const payload = b.subarray(at, at + len);
      this.buffer = b.subarray(at + len);
      this.handle(fin, opcode, Buffer.from(payload));
      if (this.readyState === CLOSED) return;
    }
  }

  handle(fin, opcode, payload) {
    if (opcode === 0x9) {
      if (this.readyState === OPEN) this.socket.write(frame(0xa, payload));
    } else if (opcode === 0x8) {
      const code = payload.length >= 2 ? payload.readUInt16BE(0) : 1005;
      this.closeInfo = { code, reason: payload.subarray(2).toString('utf8') };
      if (this.readyState === OPEN) this.socket.write(frame(0x8, payload.subarray(0, 2))); // echo the code
      this.readyState = CLOSING;
      this.socket.end();
    } else if (opcode === 0x1 || opcode === 0x2 || opcode === 0x0) {
      this.fragments = opcode === 0x0 ? this.fragments.concat([payload]) : [payload];
      if (opcode !== 0x0) this.fragmentOpcode = opcode;
      if (!fin) return;
      const whole = Buffer.concat(this.fragments);
      this.fragments = null;
      const data = this.fragmentOpcode === 0x1 ? whole.toString('utf8') : whole;
      if (this.readyState === OPEN && this.onmessage) this.onmessage({ type: 'message', data });
    }
  }

  finish() {
    if (this.readyState === CLOSED) return;
    const clean = this.closeInfo !== null;
    this.readyState = CLOSED;
    if (!clean && this.onerror) this.onerror({ type: 'error' });
    const info = this.closeInfo || { code: 1006, reason: '' };
    if (this.onclose) this.onclose({ type: 'close', code: info.code, reason: info.reason, wasClean: clean });
  }

  send(text) {
    if (this.readyState === CONNECTING) throw new Error('InvalidStateError: still connecting');
    if (this.readyState !== OPEN) return; // a browser drops it silently
    this.sent.push(text);
    this.socket.write(frame(0x1, Buffer.from(String(text), 'utf8')));
  }

  close(code = 1000, reason = '') {
    if (this.readyState === CLOSED || this.readyState === CLOSING) return;
    if (this.readyState === CONNECTING) {
      this.socket.destroy(); // fails the connection: error and close 1006
      return;
    }
    const payload = Buffer.alloc(2 + Buffer.byteLength(reason));
    payload.writeUInt16BE(code, 0);
    payload.write(reason, 2);
    this.closeInfo = { code, reason };
    this.readyState = CLOSING;
    this.socket.write(frame(0x8, payload));
    this.socket.end();
  }

  /** The network goes away: no close frame, the TCP connection is just gone. */
  terminate() {
    this.socket.destroy();
  }
}

WebSocket.CONNECTING = CONNECTING;
WebSocket.OPEN = OPEN;
WebSocket.CLOSING = CLOSING;
WebSocket.CLOSED = CLOSED;

module.exports = { WebSocket };
