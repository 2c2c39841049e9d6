'use strict';
// A `wx` object for one mini-program instance, enough of the real API for the example
// and for classic clients. Sockets are real WebSockets (npm `ws`), so the code under
// test talks to a real hub; storage, toasts, canvases and app lifecycle are recorded so
// that tests can look at them and trigger them.
//
// Where WeChat behaves oddly, the shim does too when it matters to the code under test:
// - closing a SocketTask before it opened does nothing (the socket opens anyway);
// - getStorageSync of a missing key returns '' (not undefined);
// - callbacks (success/fail) run asynchronously;
// - a Canvas 2D node (wx.createSelectorQuery().select('#id').fields({node: true})) exists
//   only for a <canvas type="2d" id="..."> of the page's WXML, and its context has the
//   CanvasRenderingContext2D methods only (no setStrokeStyle, no draw).
//
// And it can fail the way phones do, on the tests' command: a socket lost without any
// close event (loseSilently), frames that arrive late (holdIncoming / releaseIncoming),
// a network that goes away (setNetwork).

const WebSocket = require('ws');

const CONNECTING = 0;
const OPEN = 1;
const CLOSED = 3;

// The CanvasContext methods of wx.createCanvasContext(); anything else is a TypeError,
// as on a phone.
const CANVAS_METHODS = [
  'arc', 'beginPath', 'bezierCurveTo', 'clearRect', 'clip', 'closePath', 'createLinearGradient',
  'draw', 'drawImage', 'fill', 'fillRect', 'fillText', 'lineTo', 'measureText', 'moveTo',
  'quadraticCurveTo', 'rect', 'restore', 'rotate', 'save', 'scale', 'setFillStyle',
  'setFontSize', 'setGlobalAlpha', 'setLineCap', 'setLineDash', 'setLineJoin', 'setLineWidth',
  'setShadow', 'setStrokeStyle', 'setTextAlign', 'setTextBaseline', 'stroke', 'strokeRect',
  'strokeText', 'translate',
];

/** A CanvasContext that records every call as { op, args }. */
function recordingCanvasContext(canvasId) {
  const ctx = { canvasId, calls: [] };
  for (const op of CANVAS_METHODS) {
    ctx[op] = (...args) => {
      ctx.calls.push({ op, args });
    };
  }
  return ctx;
}

// CanvasRenderingContext2D: the methods, and the properties whose setting is recorded.
const CANVAS_2D_METHODS = [
  'arc', 'arcTo', 'beginPath', 'bezierCurveTo', 'clearRect', 'clip', 'closePath',
  'createLinearGradient', 'createPattern', 'createRadialGradient', 'drawImage', 'ellipse',
  'fill', 'fillRect', 'fillText', 'getLineDash', 'lineTo', 'measureText', 'moveTo',
  'quadraticCurveTo', 'rect', 'resetTransform', 'restore', 'rotate', 'save', 'scale',
  'setLineDash', 'setTransform', 'stroke', 'strokeRect', 'strokeText', 'transform', 'translate',
];
const CANVAS_2D_PROPS = [
  'fillStyle', 'strokeStyle', 'lineWidth', 'lineCap', 'lineJoin', 'lineDashOffset', 'font',
  'textAlign', 'textBaseline', 'globalAlpha', 'globalCompositeOperation', 'shadowBlur',
  'shadowColor', 'shadowOffsetX', 'shadowOffsetY',
];

/**
 * A Canvas 2D node, as SelectorQuery's fields({node: true}) gives it: width and height
 * (the bitmap, 300 x 150 until set), getContext('2d') -> a context recording every call
 * as { op, args } and every property set as { op: 'set', args: [prop, value] }.
 */
function canvas2dNode(id) {
  const node = { id, width: 300, height: 150, contexts: [] };
  node.getContext = (type) => {
    if (type !== '2d') return null;
    if (node.contexts.length) return node.contexts[0]; // one context per canvas, as in a browser
    const ctx = { canvas: node, calls: [] };
    for (const op of CANVAS_2D_METHODS) {
      ctx[op] = (...args) => {
        ctx.calls.push({ op, args });
        if (op === 'measureText') return { width: String(args[0]).length * 6 };
        if (op === 'getLineDash') return [];
        return undefined;
      };
    }
    const values = {};
    for (const prop of CANVAS_2D_PROPS) {
      Object.defineProperty(ctx, prop, {
        enumerable: true,
        get: () => values[prop],
        set: (value) => {
          values[prop] = value;
          ctx.calls.push({ op: 'set', args: [prop, value] });
        },
      });
    }
    node.contexts.push(ctx);
    return ctx;
  };
  return node;
}

function later(fn, ...args) {
  if (typeof fn === 'function') setImmediate(fn, ...args);
}

/** WeChat-style callbacks: success or fail, then complete. */
function answer(opts, ok, res) {
  later(ok ? opts.success : opts.fail, res);
  later(opts.complete, res);
}

class SocketTask {
  constructor(url, protocols, { offline, onFrame, onThrow, hold }) {
    this.url = url;
    this.onThrow = onThrow;
    this.readyState = CONNECTING;
    this.listeners = { open: [], message: [], close: [], error: [] };
    this.ignoredCloses = 0;
    this.silent = false; // lost without a word: see loseSilently()
    this.held = []; // frames arrived while `hold.on`, not yet given to the app
    this.onFrame = onFrame;
    if (offline) {
      // No network: the handshake fails without reaching anything.
      this.ws = null;
      setImmediate(() => {
        this.readyState = CLOSED;
        this.fire('error', { errMsg: 'connectSocket:fail network is down' });
        this.fire('close', { code: 1006, reason: 'network is down' });
      });
      return;
    }
    this.ws = new WebSocket(url, protocols || []);
    this.ws.on('open', () => {
      this.readyState = OPEN;
      this.fire('open', { header: {}, profile: {} });
    });
    this.ws.on('message', (data, isBinary) => {
      const payload = isBinary
        ? data.buffer.slice(data.byteOffset, data.byteOffset + data.byteLength)
        : data.toString('utf8');
      if (hold.on) this.held.push(payload);
      else this.deliver(payload);
    });
    this.ws.on('error', (err) => this.fire('error', { errMsg: err.message }));
    this.ws.on('close', (code, reason) => {
      this.readyState = CLOSED;
      this.fire('close', { code, reason: reason.toString() });
    });
  }

  deliver(payload) {
    if (this.onFrame) this.onFrame(payload);
    this.fire('message', { data: payload });
  }

  /** Gives the app the frames held back, in order (unless the socket is gone meanwhile). */
  release() {
    const held = this.held.splice(0);
    if (this.readyState !== OPEN || this.silent) return;
    held.forEach((payload) => this.deliver(payload));
  }

  fire(type, res) {
    for (const fn of this.listeners[type].slice()) {
      try {
        fn(res);
      } catch (err) {
        // WeChat reports a throwing callback and carries on; so do we, for tests to see.
        this.onThrow(err);
      }
    }
  }

  onOpen(fn) { this.listeners.open.push(fn); }
  onMessage(fn) { this.listeners.message.push(fn); }
  onClose(fn) { this.listeners.close.push(fn); }
  onError(fn) { this.listeners.error.push(fn); }

  send(opts) {
    if (this.silent) {
      // A dead connection the phone does not know about: the write "succeeds" and is lost.
      answer(opts, true, { errMsg: 'sendSocketMessage:ok' });
      return;
    }
    if (this.readyState !== OPEN) {
      answer(opts, false, { errMsg: 'sendSocketMessage:fail WebSocket is not connected' });
      return;
    }
    this.ws.send(opts.data, (err) => {
      answer(opts, !err, { errMsg: err ? 'sendSocketMessage:fail ' + err.message : 'sendSocketMessage:ok' });
    });
  }

  close(opts = {}) {
    if (this.readyState === CONNECTING) {
      // WeChat ignores a close before the socket has opened.
      this.ignoredCloses += 1;
      answer(opts, false, { errMsg: 'closeSocket:fail WebSocket is not connected' });
      return;
    }
    if (this.readyState === CLOSED || !this.ws) {
      answer(opts, false, { errMsg: 'closeSocket:fail WebSocket is closed' });
      return;
    }
    this.ws.close(opts.code || 1000, opts.reason || '');
    answer(opts, true, { errMsg: 'closeSocket:ok' });
  }

  /** The radio goes off: no close handshake, the socket is just gone. */
  terminate() {
    if (this.ws && this.ws.readyState !== WebSocket.CLOSED) this.ws.terminate();
  }

  /**
   * Lost without a word, as WeChat does to a backgrounded app's socket: the connection to
   * the hub is gone, but the app hears nothing (no close, no error, no frame) and what it
   * sends vanishes. readyState stays OPEN.
   */
  loseSilently() {
    if (this.readyState !== OPEN || !this.ws) return;
    this.silent = true;
    this.held = [];
    this.ws.removeAllListeners('message');
    this.ws.removeAllListeners('close');
    this.ws.removeAllListeners('error');
    this.ws.on('error', () => {});
    this.ws.terminate();
  }
}

/**
 * Creates one instance's `wx` and the controls a test uses on it.
 * `hosts` maps "host:port" in a URL to another "host:port", like an /etc/hosts entry,
 * so classic code with its server address written in can be pointed at the test hub.
 */
function createWx({ hosts = {}, storage = {}, windowWidth = 375, pixelRatio = 2, selectNode } = {}) {
  const store = new Map(Object.entries(storage).map(([k, v]) => [k, JSON.stringify(v)]));
  const toasts = [];
  const canvases = new Map(); // canvasId -> every context created for it
  const queries = []; // every SelectorQuery.exec(), as { selectors }
  const hold = { on: false }; // frames arriving are held back while on
  const sockets = [];
  const frames = []; // every frame received, raw, for tests to inspect
  const errors = []; // exceptions thrown by socket callbacks
  const lifecycle = { show: [], hide: [], network: [] };
  const globalSocket = { task: null, handlers: {} };
  let online = true;

  function resolveUrl(url) {
    const m = /^(wss?:\/\/)([^/]+)(.*)$/.exec(url);
    if (!m || !hosts[m[2]]) return url;
    return m[1] + hosts[m[2]] + m[3];
  }

  function connectSocket(opts) {
    if (!/^wss?:\/\//.test(opts.url || '')) {
      answer(opts, false, { errMsg: 'connectSocket:fail invalid url' });
      return undefined;
    }
    const task = new SocketTask(resolveUrl(opts.url), opts.protocols, {
      offline: !online,
      onFrame: (data) => frames.push(data),
      onThrow: (err) => errors.push(err),
      hold,
    });
    sockets.push(task);
    // The global wx.onSocket* callbacks follow the most recent socket, as in WeChat.
    globalSocket.task = task;
    for (const type of ['open', 'message', 'close', 'error']) {
      task.listeners[type].push((res) => {
        const fn = globalSocket.handlers[type];
        if (globalSocket.task === task && fn) fn(res);
      });
    }
    answer(opts, true, { errMsg: 'connectSocket:ok' });
    return task;
  }

  function withGlobalSocket(opts, method) {
    if (!globalSocket.task) {
      answer(opts, false, { errMsg: 'fail WebSocket is not connected' });
      return;
    }
    globalSocket.task[method](opts);
  }

  const wx = {
    connectSocket,
    onSocketOpen: (fn) => { globalSocket.handlers.open = fn; },
    onSocketMessage: (fn) => { globalSocket.handlers.message = fn; },
    onSocketClose: (fn) => { globalSocket.handlers.close = fn; },
    onSocketError: (fn) => { globalSocket.handlers.error = fn; },
    sendSocketMessage: (opts) => withGlobalSocket(opts, 'send'),
    closeSocket: (opts = {}) => withGlobalSocket(opts, 'close'),

    // Storage keeps values as JSON, as WeChat does: what comes back is a copy.
    setStorageSync: (key, value) => { store.set(key, JSON.stringify(value)); },
    getStorageSync: (key) => (store.has(key) ? JSON.parse(store.get(key)) : ''),
    removeStorageSync: (key) => { store.delete(key); },

    showToast: (opts) => {
      toasts.push({ title: opts.title, icon: opts.icon });
      answer(opts, true, { errMsg: 'showToast:ok' });
    },

    createCanvasContext: (canvasId) => {
      const ctx = recordingCanvasContext(canvasId);
      if (!canvases.has(canvasId)) canvases.set(canvasId, []);
      canvases.get(canvasId).push(ctx);
      return ctx;
    },

    // A SelectorQuery on the page shown: select(selector).fields({node, size}) then
    // exec(callback), which gets one result per select (null when nothing matches), later.
    // `selectNode(selector, fields)` (from the harness, which knows the page) answers.
    createSelectorQuery: () => {
      const selected = [];
      const query = {
        in: () => query,
        select: (selector) => {
          const item = { selector, fields: {} };
          selected.push(item);
          return {
            fields: (fields) => {
              item.fields = fields || {};
              return query;
            },
          };
        },
        exec: (callback) => {
          queries.push({ selectors: selected.map((i) => i.selector) });
          setImmediate(() => {
            const res = selected.map((i) => (selectNode ? selectNode(i.selector, i.fields) : null));
            if (typeof callback === 'function') callback(res);
          });
          return query;
        },
      };
      return query;
    },

    getWindowInfo: () => ({ windowWidth, windowHeight: 667, pixelRatio }),
    getSystemInfoSync: () => ({ windowWidth, windowHeight: 667, pixelRatio, SDKVersion: '3.0.0' }),

    onAppShow: (fn) => { lifecycle.show.push(fn); },
    onAppHide: (fn) => { lifecycle.hide.push(fn); },
    onNetworkStatusChange: (fn) => { lifecycle.network.push(fn); },
  };

  const controls = {
    toasts,
    frames,
    errors,
    sockets,
    storage: {
      get: (key) => (store.has(key) ? JSON.parse(store.get(key)) : undefined),
    },
    /** Every CanvasContext created for `canvasId` (wx.createCanvasContext), oldest first. */
    canvas: (canvasId) => canvases.get(canvasId) || [],
    /** Every SelectorQuery run. */
    queries,
    /** Frames arriving from now on wait, on every socket, until releaseIncoming(). */
    holdIncoming: () => {
      hold.on = true;
    },
    releaseIncoming: () => {
      hold.on = false;
      sockets.forEach((s) => s.release());
    },
    /** Every open socket is lost without any event (see SocketTask.loseSilently). */
    loseSilently: () => sockets.forEach((s) => s.loseSilently()),
    /** Every socket is cut (no close handshake): the app gets its close (1006), then may reconnect. */
    dropSockets: () => sockets.forEach((s) => s.terminate()),
    appShow: (res = { scene: 1001, path: '', query: {} }) => lifecycle.show.forEach((fn) => fn(res)),
    appHide: () => lifecycle.hide.forEach((fn) => fn()),
    /** Network off drops every socket at once (no close handshake) and fails new ones. */
    setNetwork: (isConnected) => {
      online = isConnected;
      if (!isConnected) sockets.forEach((s) => s.terminate());
      lifecycle.network.forEach((fn) => fn({ isConnected, networkType: isConnected ? 'wifi' : 'none' }));
    },
    closeAll: () => sockets.forEach((s) => s.terminate()),
  };

  return { wx, controls };
}

module.exports = { createWx, recordingCanvasContext, canvas2dNode };
