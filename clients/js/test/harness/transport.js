'use strict';
// A transport the test plays the hub in: every open() makes a FakeSocket the test drives
// (accept, say something, close, fail) and whose sent frames it reads.

class FakeSocket {
  constructor(url, handlers) {
    this.url = url;
    this.h = handlers;
    this.sent = []; // frames the client sent, parsed
    this.closedWith = null; // {code, reason} when the client closed it
  }
  send(text) {
    this.sent.push(JSON.parse(text));
  }
  close(code, reason) {
    this.closedWith = { code, reason };
  }
  // The hub's side:
  accept() {
    this.h.onOpen();
  }
  say(obj) {
    this.h.onMessage(typeof obj === 'string' ? obj : JSON.stringify(obj));
  }
  end(code = 1006, reason = '') {
    this.h.onClose({ code, reason });
  }
  fail(err = { message: 'connection refused' }) {
    this.h.onError(err);
  }
  /** The frames sent of `type`. */
  of(type) {
    return this.sent.filter((f) => f.type === type);
  }
  last() {
    return this.sent[this.sent.length - 1];
  }
}

function fakeTransport() {
  const sockets = [];
  return {
    sockets,
    open(url, handlers) {
      const s = new FakeSocket(url, handlers);
      sockets.push(s);
      return s;
    },
    get current() {
      return sockets[sockets.length - 1];
    },
  };
}

/**
 * Wraps a transport so that what the hub sends reaches the client `delayMs` later (a slow
 * network), and records what the client sends on every connection.
 */
function slowTransport(inner, delayMs) {
  const connections = [];
  return {
    connections,
    delayMs,
    open(url, h) {
      const record = { sent: [] };
      connections.push(record);
      const later = (fn) => (...args) => {
        const ms = this.delayMs;
        if (ms > 0) setTimeout(() => fn(...args), ms);
        else fn(...args);
      };
      const socket = inner.open(url, {
        onOpen: h.onOpen,
        onMessage: later(h.onMessage),
        onClose: later(h.onClose),
        onError: later(h.onError),
      });
      return {
        send(text) {
          record.sent.push(JSON.parse(text));
          socket.send(text);
        },
        close(code, reason) {
          socket.close(code, reason);
        },
      };
    },
  };
}

module.exports = { fakeTransport, FakeSocket, slowTransport };
