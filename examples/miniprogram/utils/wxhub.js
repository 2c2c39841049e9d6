/*
 * wxhub-client: the client side of wxhub protocol v1 (docs/PROTOCOL.md), for browsers and
 * WeChat mini-programs. Plain ES2018, no dependencies, no build step.
 *
 * One file, two ways to load it:
 *   - CommonJS (mini-programs, Node): const Wxhub = require('./wxhub.js');
 *   - a plain <script src="wxhub.js">: sets the global `Wxhub`.
 *
 * The core (Client) knows nothing of sockets: a transport opens them. Two are included:
 * browserTransport (the WHATWG WebSocket) and wxTransport (wx.connectSocket's SocketTask).
 *
 * No `?.`, `??`, class fields or `catch {}` here: older WeChat base libraries reject them.
 */
(function (root, factory) {
  'use strict';
  if (typeof module === 'object' && module && module.exports) module.exports = factory();
  else root.Wxhub = factory();
})(typeof globalThis !== 'undefined' ? globalThis : typeof self !== 'undefined' ? self : this, function () {
  'use strict';

  const DEFAULTS = {
    requestTimeoutMs: 10000, // a reply later than this rejects the request with `timeout`
    connectTimeoutMs: 10000, // a handshake slower than this counts as a failed attempt
    pingMs: 20000, // app-level heartbeat; 0 turns it off
    reconnectBaseMs: 1000, // ceiling of the first retry's delay
    reconnectMaxMs: 30000, // the ceiling never grows past this
    // Commands kept while offline. Well under the hub's default burst of 100 frames, so
    // that the flush after a reconnect (with the join and the subscriptions in front of
    // it) is not answered `rate_limited`.
    maxQueue: 50,
    // How long verify() (on coming back to the foreground) waits for the hub to answer
    // before it takes the connection for dead and opens a new one.
    verifyTimeoutMs: 3000,
    // (from, mid) pairs of received messages remembered to drop a message sent again.
    dedupeWindow: 1000,
  };

  // How long an `error` from a transport waits for the `close` that usually follows it,
  // so that the close code (which decides whether to reconnect) is not lost.
  const ERROR_GRACE_MS = 1000;

  // Error codes that refuse a join or a subscription for good: retrying the same thing on
  // the next connection would be refused again (and three bad tokens close with 4500), so
  // the name or group is dropped. Nothing else drops it: a timeout, a lost connection or a
  // busy hub say nothing about the name or the group.
  const REFUSALS = {
    invalid_name: true,
    unauthorized: true,
    forbidden: true,
    invalid_group: true,
    not_found: true,
    too_many_groups: true,
    bad_request: true,
  };

  // The hub did not do the command but would later: join and subscribe are retried on the
  // same connection after a backoff (requests are left to the app: it knows if a retry is safe).
  const TRANSIENT = { overloaded: true, rate_limited: true, internal: true };

  /**
   * An Error with the hub's error `code` (or one of the client's own: `timeout`,
   * `disconnected`, `queue_full`, `closed`, `cancelled`).
   * @param {string} code
   * @param {string} [message]
   * @param {object} [extra] copied onto the error (e.g. `reply`, `command`)
   */
  function hubError(code, message, extra) {
    const err = new Error(message || code);
    err.name = 'HubError';
    err.code = code;
    if (extra) Object.assign(err, extra);
    return err;
  }

  /**
   * The close-code rule (docs/PROTOCOL.md): 4500-4999 mean "do not reconnect until the cause
   * is fixed" (three bad tokens); after any other close the app did not ask for, reconnect.
   * @param {number} code
   */
  function mayReconnect(code) {
    return !(code >= 4500 && code <= 4999);
  }

  /**
   * Delay before retry number `attempt` (0 for the first), "equal jitter": the ceiling
   * doubles from `base` up to `max` and the delay is uniform in [ceiling/2, ceiling]. The
   * random half spreads out the clients one hub restart dropped together; the fixed half
   * keeps a flapping hub from being hammered.
   */
  function backoffDelay(attempt, base, max, random) {
    const ceiling = Math.min(max, base * Math.pow(2, attempt));
    return Math.round(ceiling / 2 + ((random || Math.random)() * ceiling) / 2);
  }

  /** One frame from the hub as an object, or null (binary, not JSON, an array). */
  function parseFrame(data) {
    if (typeof data !== 'string') return null; // the hub sends text only
    try {
      const value = JSON.parse(data.replace(/^\uFEFF/, '').trim());
      return value && typeof value === 'object' && !Array.isArray(value) ? value : null;
    } catch (e) {
      return null; // e.g. the classic feed's bare text: not for a typed client
    }
  }

  /** Timers from the environment, wrapped: `window.setTimeout` called as a method of another object throws. */
  function defaultClock() {
    return {
      setTimeout: function (fn, ms) {
        return setTimeout(fn, ms);
      },
      clearTimeout: function (handle) {
        clearTimeout(handle);
      },
      now: function () {
        return Date.now();
      },
    };
  }

  function defaultTransport() {
    if (typeof WebSocket !== 'undefined') return browserTransport();
    if (typeof wx === 'object' && wx && typeof wx.connectSocket === 'function') return wxTransport(wx); // eslint-disable-line no-undef
    throw new TypeError('wxhub: no WebSocket here; pass options.transport');
  }

  class Client {
    /**
     * @param {object} options see wxhub.d.ts (ClientOptions)
     */
    constructor(options) {
      if (!options || !options.url) throw new TypeError('wxhub: options.url is required');
      this.options = Object.assign({}, DEFAULTS, options);
      this.clock = options.clock || defaultClock();
      this.random = options.random || Math.random;
      this.transport = options.transport || defaultTransport();
      /** idle | connecting | open | reconnecting | closed */
      this.state = 'idle';
      this.conn = null; // the current connection; events from any other are stale
      this.listeners = {};
      this.queue = []; // {frame, resolve?, reject?} waiting for an open connection, in order
      this.pending = new Map(); // id -> entry sent on this connection, awaiting its reply
      this.nextId = 1;
      // Message ids (`mid`) are this prefix and a counter: unique across the app's restarts
      // and devices with overwhelming odds (8 base-36 digits), so receivers can tell a
      // message sent again from a new one.
      this.midPrefix = randomDigits(Math.random, 8); // not options.random: that one drives the backoff
      this.nextMid = 1;
      this.seen = new Map(); // from + '\n' + mid of messages received, oldest first
      // Stream positions (docs/PROTOCOL.md, "History and recovery"): the last offset seen
      // and its epoch, per group and for the user's own stream of direct messages. Sent
      // back as `since` on every resubscribe and rejoin, so the hub replays what was missed.
      this.userPos = null; // {name, epoch, offset}
      this.groupPos = new Map(); // group -> {epoch, offset}
      this.restorePositions(options.positions);
      this.attempt = 0; // failed connections in a row: drives the backoff
      this.retryTimer = null;
      this.resyncTimer = null;
      this.resyncAttempt = 0;
      this.watching = false;
      // The identity, replayed on every connection until the hub refuses it.
      this.name = null;
      this.token = null;
      this.joined = null; // the `joined` reply on the current connection
      this.joinError = null; // the code of the last refusal
      this.joinInFlight = null; // id of the join sent on this connection, not yet answered
      this.joinWaiters = [];
      this.groups = new Map(); // group -> {presence, subscribed, inflight, error, reply, waiters}, in the order first made
    }

    // ---- events ------------------------------------------------------------------------

    /**
     * Calls `fn(event, command)` for every event of `type`: a hub event or reply by its
     * `type` (message, presence, tick, quote, joined, ack, error...; `command` is the
     * command a reply answers), or one of the client's: state, open, close, identity,
     * queue, rtt. Returns the function that removes the listener.
     */
    on(type, fn) {
      (this.listeners[type] = this.listeners[type] || []).push(fn);
      return () => this.off(type, fn);
    }

    off(type, fn) {
      const list = this.listeners[type] || [];
      const at = list.indexOf(fn);
      if (at >= 0) list.splice(at, 1);
    }

    emit(type, event, command) {
      // A copy: a listener may remove itself while we iterate.
      (this.listeners[type] || []).slice().forEach((fn) => {
        try {
          fn(event, command);
        } catch (e) {
          // One faulty listener must not break the client or the other listeners.
          if (typeof console !== 'undefined') console.error('wxhub: a listener for ' + type + ' threw', e);
        }
      });
    }

    setState(state, detail) {
      this.state = state;
      this.emit('state', Object.assign({ state: state }, detail));
    }

    // ---- connection --------------------------------------------------------------------

    /** Opens the connection (or retries at once if a retry is waiting). Session state is kept and replayed. */
    connect() {
      if (this.state === 'open' || this.state === 'connecting') return;
      if (!this.watching && typeof this.transport.watch === 'function') {
        // Back from the background, or the network is back: retry without waiting out a
        // backoff that grew while nobody looked.
        this.watching = true;
        this.transport.watch(() => this.wake());
      }
      this.clearTimer('retryTimer');
      this.attempt = 0;
      this.openConnection();
    }

    /**
     * Back in the foreground, or the network changed: a connection believed open may have
     * died silently meanwhile (WeChat drops a backgrounded app's socket without a word), so
     * it is verified at once; a waiting retry goes at once.
     */
    wake() {
      if (this.state === 'open') this.verify();
      else this.retryNow();
    }

    /**
     * Checks the connection now: a `ping` that must be answered within `timeoutMs`
     * (default verifyTimeoutMs). Resolves true when it was; false when the connection
     * was not open or did not answer, in which case it is dropped and a new one opened at
     * once (what was sent on it and not acknowledged goes again: see publish()).
     * @param {number} [timeoutMs]
     * @returns {Promise<boolean>}
     */
    verify(timeoutMs) {
      const conn = this.conn;
      if (this.state !== 'open' || !conn) {
        this.retryNow();
        return Promise.resolve(false);
      }
      const ms = timeoutMs > 0 ? timeoutMs : this.options.verifyTimeoutMs;
      return new Promise((resolve) => {
        this.transmit(
          { type: 'ping' },
          {
            reply: () => () => resolve(true),
            fail: (err) => {
              resolve(false);
              if (err.code !== 'timeout' || conn !== this.conn || conn.ended) return;
              this.lost(conn, 1006, 'no answer after ' + ms + ' ms', true);
              this.retryNow(); // not after a backoff: the user is looking at the app now
            },
          },
          ms
        );
      });
    }

    /** Skips the rest of a backoff wait (the network is back, the app is in the foreground). */
    retryNow() {
      if (this.state !== 'reconnecting') return;
      this.clearTimer('retryTimer');
      this.attempt = 0;
      this.openConnection();
    }

    /**
     * Closes on purpose: no reconnect until connect() is called again. Queued and
     * unanswered commands reject with `closed`; the name and groups are kept for a later connect().
     */
    close() {
      if (this.state === 'closed') return;
      const conn = this.conn;
      if (conn) this.teardown(conn, 'bye');
      this.shutdown(1000, 'closed by the app');
      if (conn) this.emit('close', { code: 1000, reason: 'closed by the app', wasOpen: conn.opened });
    }

    isOpen() {
      return this.state === 'open';
    }

    openConnection() {
      const conn = { socket: null, opened: false, ended: false, heard: true, timers: {} };
      this.conn = conn;
      this.setState('connecting', { attempt: this.attempt });
      const url = typeof this.options.url === 'function' ? this.options.url() : this.options.url;
      let socket;
      try {
        socket = this.transport.open(url, {
          onOpen: () => this.opened(conn),
          onMessage: (data) => this.received(conn, data),
          onClose: (ev) => this.lost(conn, ev && ev.code, ev && ev.reason, false),
          onError: (err) => this.failed(conn, err),
        });
      } catch (err) {
        if (conn.ended) return;
        // A malformed URL (SyntaxError) will not get better by retrying; anything else might.
        if (err && err.name === 'SyntaxError') {
          this.teardown(conn, null);
          this.shutdown(1006, String(err.message || err));
          return;
        }
        this.lost(conn, 1006, String((err && err.message) || err), false);
        return;
      }
      conn.socket = socket;
      // The transport may report a failure before open() returned: close what it made.
      if (conn.ended) {
        closeQuietly(socket, 'stale');
        return;
      }
      conn.timers.connect = this.clock.setTimeout(
        () => this.lost(conn, 1006, 'connect timeout', true),
        this.options.connectTimeoutMs
      );
      if (conn.openedEarly) this.opened(conn);
    }

    opened(conn) {
      if (conn !== this.conn || conn.ended) return;
      if (!conn.socket) {
        conn.openedEarly = true; // the transport opened before open() returned: once it has
        return;
      }
      this.clock.clearTimeout(conn.timers.connect);
      conn.opened = true;
      this.attempt = 0;
      this.resyncAttempt = 0;
      this.startHeartbeat(conn);
      // The hub does one connection's commands in order: the join first, then the
      // subscriptions that may need it, then what the app sent meanwhile, which may need
      // both. Only then `open`: what a listener sends on hearing it goes out after them.
      // (No listener runs before the state is `open`: one that sent then would be queued
      // behind a queue already flushed.)
      if (this.name !== null) this.sendJoin();
      this.groups.forEach((g, group) => this.sendSubscribe(group, g));
      const waiting = this.queue.splice(0);
      waiting.forEach((item) => this.dispatch(item));
      this.setState('open');
      if (waiting.length) this.emit('queue', 0);
      this.emit('open');
      this.emitIdentity();
    }

    /** A transport error: the close normally follows with its code; if it does not, give up anyway. */
    failed(conn, err) {
      if (conn !== this.conn || conn.ended || conn.timers.error) return;
      const reason = (err && (err.errMsg || err.message)) || 'transport error';
      conn.timers.error = this.clock.setTimeout(() => this.lost(conn, 1006, reason, true), ERROR_GRACE_MS);
    }

    /**
     * The connection ended: closed by the hub or the network, failed to open, or given up
     * on (`drop`: the heartbeat or the connect timeout). Runs once per connection, however
     * many of error and close the transport reports. Retries unless the code says not to.
     */
    lost(conn, code, reason, drop) {
      if (conn.ended || conn !== this.conn) return;
      if (typeof code !== 'number') code = 1006; // an error with no close, or a close with no code
      reason = reason || '';
      this.teardown(conn, drop ? reason : null);
      if (mayReconnect(code)) this.scheduleRetry(code, reason);
      else this.shutdown(code, reason);
      // After the state change, so that listeners see the state it leaves.
      this.emit('close', { code: code, reason: reason, wasOpen: conn.opened });
    }

    /**
     * Forgets a connection. What was sent on it and not answered may or may not have been
     * done by the hub. Messages (publish, direct, broadcast: they carry a `mid` their
     * receivers drop repeats by) go back to the front of the queue, in order, to be sent
     * again with the same id and mid. Other requests fail with `disconnected`: the app
     * knows whether a retry is safe. The join and the subscriptions are state, replayed.
     * `noResend`: fail the messages too (a rename: they were written as the old name).
     */
    teardown(conn, closeReason, noResend) {
      conn.ended = true;
      if (this.conn === conn) this.conn = null;
      Object.keys(conn.timers).forEach((k) => this.clock.clearTimeout(conn.timers[k]));
      this.clearTimer('resyncTimer');
      if (closeReason !== null && conn.socket) closeQuietly(conn.socket, closeReason);
      const entries = Array.from(this.pending.values());
      this.pending.clear();
      const again = [];
      entries.forEach((entry) => {
        this.clock.clearTimeout(entry.timer);
        if (entry.item && entry.item.resend && !noResend) again.push(entry.item);
        else entry.fail(hubError('disconnected', 'the connection closed before the hub replied', { command: entry.frame }));
      });
      if (again.length) {
        // In front of what was queued after them, past maxQueue if need be: they were accepted.
        this.queue = again.concat(this.queue);
        this.emit('queue', this.queue.length);
      }
      this.joined = null;
      this.joinInFlight = null;
      this.groups.forEach((g) => {
        g.subscribed = false;
        g.inflight = null;
      });
      if (conn.opened) this.emitIdentity();
    }

    /** The closed state: nothing is retried; what waits is rejected with `closed`. */
    shutdown(code, reason) {
      this.clearTimer('retryTimer');
      this.clearTimer('resyncTimer');
      const closed = hubError('closed', 'the connection is closed: ' + (reason || code), { closeCode: code });
      const queued = this.queue.splice(0);
      if (queued.length) this.emit('queue', 0);
      queued.forEach((item) => item.reject && item.reject(closed));
      this.settle(this.joinWaiters, closed);
      this.groups.forEach((g) => this.settle(g.waiters, closed));
      this.setState('closed', { code: code, reason: reason });
    }

    scheduleRetry(code, reason) {
      const delay = backoffDelay(this.attempt, this.options.reconnectBaseMs, this.options.reconnectMaxMs, this.random);
      this.attempt += 1;
      this.retryTimer = this.clock.setTimeout(() => {
        this.retryTimer = null;
        this.openConnection();
      }, delay);
      this.setState('reconnecting', { delayMs: delay, attempt: this.attempt, code: code, reason: reason });
    }

    clearTimer(key) {
      if (this[key] !== null) this.clock.clearTimeout(this[key]);
      this[key] = null;
    }

    /** A new name needs a new connection: the hub lets a session join only once. */
    restart() {
      const conn = this.conn;
      // Messages not yet acknowledged were written as the old name: not sent again as the new one.
      if (conn) this.teardown(conn, 'rejoin', true);
      this.clearTimer('retryTimer');
      this.openConnection();
      if (conn) this.emit('close', { code: 1000, reason: 'rejoin', wasOpen: conn.opened });
    }

    // ---- heartbeat ---------------------------------------------------------------------

    // Browsers and mini-programs cannot send WebSocket pings, and a half-open connection
    // (a phone that changed networks) may never report a close. So: a `ping` every pingMs;
    // if nothing at all came back before the next one is due, the connection is dead.
    startHeartbeat(conn) {
      if (!(this.options.pingMs > 0)) return;
      conn.heard = true;
      conn.timers.ping = this.clock.setTimeout(() => this.beat(conn), this.options.pingMs);
    }

    beat(conn) {
      if (conn !== this.conn || conn.ended) return;
      if (!conn.heard) {
        this.lost(conn, 1006, 'heartbeat timeout', true);
        return;
      }
      conn.heard = false;
      conn.pingAt = this.clock.now();
      this.write(conn, { type: 'ping' }); // no id: its pong is told apart from the app's
      conn.timers.ping = this.clock.setTimeout(() => this.beat(conn), this.options.pingMs);
    }

    // ---- frames ------------------------------------------------------------------------

    write(conn, frame) {
      try {
        conn.socket.send(JSON.stringify(frame));
      } catch (e) {
        // The socket is going down; if no close follows, the heartbeat will notice.
      }
    }

    /**
     * Sends `frame` with a fresh id (or the one it kept, when sent again) and calls
     * `handler.reply(msg)` or `handler.fail(err)` once. `item`: the queue item it came from.
     */
    transmit(frame, handler, timeoutMs, item) {
      if (frame.id === undefined) frame.id = this.nextId++;
      const id = frame.id;
      const entry = { frame: frame, reply: handler.reply, fail: handler.fail, timer: null, item: item };
      this.pending.set(id, entry);
      if (timeoutMs > 0) {
        entry.timer = this.clock.setTimeout(() => {
          // A late reply is then only an event. (Join and subscribe pass no timeout: their
          // entries wait for the reply however late, so that it still counts.)
          this.pending.delete(id);
          handler.fail(hubError('timeout', 'no reply from the hub within ' + timeoutMs + ' ms', { command: frame }));
        }, timeoutMs);
      }
      this.write(this.conn, frame);
      return id;
    }

    received(conn, data) {
      if (conn !== this.conn || conn.ended) return;
      conn.heard = true; // any frame at all proves the connection alive
      const msg = parseFrame(data);
      if (!msg) return;
      if (msg.type === 'message' && (this.repeated(msg) || this.replayed(msg))) return;
      if (msg.type === 'pong' && msg.id === undefined && conn.pingAt !== undefined) {
        this.emit('rtt', this.clock.now() - conn.pingAt);
        conn.pingAt = undefined;
      }
      const entry = msg.id !== undefined ? this.pending.get(msg.id) : undefined;
      if (entry) {
        this.pending.delete(msg.id);
        this.clock.clearTimeout(entry.timer);
      }
      // Session state first (a listener of `joined` sees identity().joined true), then the
      // listeners, then the promise (which settles in a later microtask anyway).
      const settle = entry ? entry.reply(msg) : null;
      this.emit(msg.type, msg, entry ? entry.frame : undefined);
      if (typeof settle === 'function') settle();
    }

    /**
     * A message already received: the same sender and `mid` (it was sent again after the
     * sender lost its connection before the ack, or replayed). Remembers the last
     * `dedupeWindow` pairs.
     */
    repeated(msg) {
      if (typeof msg.mid !== 'string' || typeof msg.from !== 'string') return false;
      const key = msg.from + '\n' + msg.mid;
      if (this.seen.has(key)) return true;
      this.seen.set(key, true);
      if (this.seen.size > this.options.dedupeWindow) this.seen.delete(this.seen.keys().next().value);
      return false;
    }

    // ---- positions and recovery ---------------------------------------------------------

    /**
     * A message at or before the position already seen in its stream: a copy (a replay
     * overlapping what arrived live). Moves the position on otherwise.
     */
    replayed(msg) {
      if (typeof msg.offset !== 'number') return false;
      let pos = null;
      if (msg.kind === 'group') pos = this.groupPos.get(msg.group);
      else if (msg.kind === 'direct' && this.userPos && msg.to === this.userPos.name) pos = this.userPos;
      if (!pos) return false;
      // Another epoch (a cluster's Redis lost the stream and began again), or an offset
      // past the next one (messages this connection never got): something was lost.
      // Adopt where the stream is and tell the app, which reloads.
      const reset = typeof msg.epoch === 'string' && msg.epoch !== pos.epoch;
      if (!reset && msg.offset <= pos.offset) return true;
      const gap = !reset && msg.offset > pos.offset + 1;
      if (typeof msg.epoch === 'string') pos.epoch = msg.epoch;
      pos.offset = msg.offset;
      if (reset || gap) {
        const event = { recovered: false, epoch: pos.epoch, offset: pos.offset };
        if (msg.kind === 'group') event.group = msg.group;
        else event.user = msg.to;
        this.emit('recovery', event);
      }
      return false;
    }

    /**
     * A `joined` or `subscribed` reply: its stream's position becomes ours, and, when the
     * command asked to recover, a `recovery` event says whether everything missed came
     * (it came just before this reply) or the app must reload.
     */
    adoptPosition(reply, group, name) {
      if (typeof reply.epoch !== 'string' || typeof reply.offset !== 'number') {
        // No position (a cluster node that cannot reach Redis): nothing missed can be
        // told, the old position is no good any more, and the app must reload.
        if (group !== null) this.groupPos.delete(group);
        else this.userPos = null;
        if (reply.recovered === false) {
          const event = { recovered: false, epoch: null, offset: null };
          if (group !== null) event.group = group;
          else event.user = name;
          this.emit('recovery', event);
        }
        return;
      }
      const pos = { epoch: reply.epoch, offset: reply.offset };
      if (group !== null) this.groupPos.set(group, pos);
      else this.userPos = Object.assign({ name: name }, pos);
      if (typeof reply.recovered === 'boolean') {
        const event = { recovered: reply.recovered, epoch: pos.epoch, offset: pos.offset };
        if (group !== null) event.group = group;
        else event.user = name;
        this.emit('recovery', event);
      }
    }

    /**
     * The positions to keep across an app restart (e.g. in wx.setStorageSync), for
     * `new Client({positions})`: a restarted app then recovers too.
     */
    positions() {
      const groups = {};
      this.groupPos.forEach((pos, group) => {
        groups[group] = { epoch: pos.epoch, offset: pos.offset };
      });
      const u = this.userPos;
      return { user: u ? { name: u.name, epoch: u.epoch, offset: u.offset } : null, groups: groups };
    }

    restorePositions(saved) {
      if (!saved || typeof saved !== 'object') return;
      const valid = (p) => p && typeof p.epoch === 'string' && typeof p.offset === 'number' && p.offset >= 0;
      const u = saved.user;
      if (valid(u) && typeof u.name === 'string') this.userPos = { name: u.name, epoch: u.epoch, offset: u.offset };
      const groups = saved.groups && typeof saved.groups === 'object' ? saved.groups : {};
      Object.keys(groups).forEach((group) => {
        if (valid(groups[group])) this.groupPos.set(group, { epoch: groups[group].epoch, offset: groups[group].offset });
      });
    }

    // ---- requests ----------------------------------------------------------------------

    /**
     * Sends a command and resolves with its reply (the one with the same `id`; the client
     * sets ids). Rejects with an Error whose `code` is the hub's error code, or `timeout`
     * (no reply in time: it may still have been done), `disconnected` (the connection
     * dropped before the reply: idem), `queue_full`, `closed`. While the connection is not
     * open the command waits in the offline queue. Never sent twice.
     * @param {object} command
     * @returns {Promise<object>}
     */
    request(command) {
      return new Promise((resolve, reject) => {
        this.enqueue({ frame: copyCommand(command), resolve: resolve, reject: reject });
      });
    }

    /**
     * Fire and forget: no id, no promise; queued while offline. Replies and errors still
     * reach the listeners. Returns false when the command was dropped (queue full, closed).
     */
    send(command) {
      return this.enqueue({ frame: copyCommand(command) });
    }

    enqueue(item) {
      if (this.state === 'closed') {
        if (item.reject) item.reject(hubError('closed', 'the connection is closed; call connect()'));
        return false;
      }
      if (this.state === 'open') {
        this.dispatch(item);
        return true;
      }
      if (this.queue.length >= this.options.maxQueue) {
        if (item.reject) item.reject(hubError('queue_full', this.queue.length + ' commands already wait for the connection'));
        return false;
      }
      this.queue.push(item);
      this.emit('queue', this.queue.length);
      return true;
    }

    dispatch(item) {
      if (!item.resolve) {
        this.write(this.conn, item.frame);
        return;
      }
      const frame = item.frame;
      this.transmit(
        frame,
        {
          reply: (msg) => () => {
            if (msg.type === 'error') item.reject(hubError(msg.code, msg.message, { reply: msg, command: frame }));
            else item.resolve(msg);
          },
          fail: (err) => item.reject(err),
        },
        this.options.requestTimeoutMs,
        item
      );
    }

    /** A fresh message id: this client's random prefix and a counter. */
    newMid() {
      return this.midPrefix + '-' + this.nextMid++;
    }

    /**
     * Sends a message (direct, broadcast, publish) with a `mid` (options.mid, else a fresh
     * one). Unlike other requests it survives a lost connection: sent again, with the same
     * id and mid, on the next one, until the hub answers. It rejects with the hub's error,
     * `timeout` (no answer within requestTimeoutMs on an open connection), `queue_full` or
     * `closed`; `err.command.mid` is its mid, to retry with (receivers drop repeats).
     */
    post(frame, options) {
      const mid = options && options.mid;
      frame.mid = typeof mid === 'string' && mid ? mid : this.newMid();
      return new Promise((resolve, reject) => {
        this.enqueue({ frame: frame, resolve: resolve, reject: reject, resend: true });
      });
    }

    direct(to, body, options) {
      return this.post({ type: 'direct', to: to, body: body }, options);
    }

    broadcast(body, options) {
      return this.post({ type: 'broadcast', body: body }, options);
    }

    publish(group, body, options) {
      return this.post({ type: 'publish', group: group, body: body }, options);
    }

    users(options) {
      return this.request(Object.assign({ type: 'users' }, options));
    }

    history(symbol, options) {
      return this.request(Object.assign({ type: 'history', symbol: symbol }, options));
    }

    /**
     * The newest messages a group's stream still holds (`limit`, default all), oldest
     * first: what an app shows after a `recovery` event with `recovered: false`, or at
     * start. → `{group, epoch, offset, messages}`.
     */
    groupHistory(group, options) {
      const command = { type: 'history', group: group };
      if (options && options.limit) command.limit = options.limit;
      return this.request(command);
    }

    ping() {
      return this.request({ type: 'ping' });
    }

    // ---- identity: the name and the groups, replayed on every connection ---------------

    /**
     * Joins as `name` now (if open) and again on every later connection. Resolves with the
     * `joined` reply. Rejects with the hub's code when it refuses (invalid_name,
     * unauthorized...: the name is then forgotten), with `timeout` when no answer came
     * within requestTimeoutMs of sending it (the name is KEPT: a late reply still counts, and
     * the next connection joins again), or `closed`. A lost connection or a busy hub
     * (`overloaded`) is retried, not reported. While offline it waits for the connection.
     * @param {string} name
     * @param {{token?: string}} [options] token: the JWT for a hub with an auth secret
     */
    join(name, options) {
      const token = (options && options.token) || null;
      if (typeof name !== 'string') return Promise.reject(new TypeError('wxhub: join(name): name must be a string'));
      if (this.joined && this.name === name) {
        if (token) this.token = token; // a fresh one, for the next rejoin
        return Promise.resolve(this.joined);
      }
      const rename = (this.joined !== null || this.joinInFlight !== null) && this.name !== name;
      const same = this.joinInFlight !== null && !rename;
      // The same name again without a token keeps the token it had (for the next rejoin).
      this.token = token || (this.name === name ? this.token : null);
      if (this.userPos && this.userPos.name !== name) this.userPos = null;
      this.name = name;
      this.joinError = null;
      const done = this.wait(this.joinWaiters, same);
      if (rename) this.restart();
      else if (this.isOpen() && !same) this.sendJoin();
      this.emitIdentity();
      return done;
    }

    sendJoin() {
      const name = this.name;
      const frame = this.token ? { type: 'join', name: name, token: this.token } : { type: 'join', name: name };
      const pos = this.userPos;
      if (pos && pos.name === name) frame.since = { epoch: pos.epoch, offset: pos.offset };
      this.arm(this.joinWaiters);
      const id = this.transmit(frame, {
        reply: (msg) => this.joinAnswered(id, name, msg),
        fail: () => {}, // disconnected: the next connection joins again
      });
      this.joinInFlight = id;
    }

    joinAnswered(id, name, msg) {
      if (this.joinInFlight === id) this.joinInFlight = null;
      if (name !== this.name) return null; // the app changed its name meanwhile
      let err = null;
      let reply = msg;
      if (msg.type === 'joined' || (msg.type === 'error' && msg.code === 'already_joined')) {
        // already_joined: an earlier join on this session took (its reply came first).
        if (msg.type !== 'joined') reply = this.joined || { type: 'joined', name: name };
        else this.adoptPosition(msg, null, name);
        this.joined = reply;
        this.joinError = null;
        this.resync(); // subscriptions refused with not_joined before this join
      } else if (msg.type === 'error') {
        if (TRANSIENT[msg.code]) {
          this.scheduleResync(); // the hub did not do it: the waiters wait for the retry
          this.emitIdentity();
          return null;
        }
        err = hubError(msg.code, msg.message, { reply: msg });
        this.joinError = msg.code;
        if (REFUSALS[msg.code]) {
          this.name = null;
          this.token = null;
        }
      } else {
        return null;
      }
      this.emitIdentity();
      const waiters = this.joinWaiters.splice(0);
      return () => this.settle(waiters, err, reply);
    }

    /**
     * Subscribes to `group` now (if open) and again on every later connection, in the
     * order first subscribed. Resolves with `subscribed`. Rejects like join(): a refusal
     * (invalid_group, forbidden, not_found, too_many_groups) forgets the group; `timeout`
     * keeps it; `not_joined` keeps it too (it is sent again once joined).
     * @param {string} group
     * @param {{presence?: boolean}} [options]
     */
    subscribe(group, options) {
      const presence = Boolean(options && options.presence);
      let g = this.groups.get(group);
      if (!g) {
        g = { presence: presence, subscribed: false, inflight: null, error: null, reply: null, waiters: [] };
        this.groups.set(group, g);
      }
      const changed = g.presence !== presence;
      g.presence = presence;
      if (g.subscribed && !changed) return Promise.resolve(g.reply);
      const same = g.inflight !== null && !changed;
      const done = this.wait(g.waiters, same);
      if (this.isOpen() && !same) this.sendSubscribe(group, g);
      this.emitIdentity();
      return done;
    }

    sendSubscribe(group, g) {
      const frame = g.presence ? { type: 'subscribe', group: group, presence: true } : { type: 'subscribe', group: group };
      const pos = this.groupPos.get(group);
      if (pos) frame.since = { epoch: pos.epoch, offset: pos.offset };
      this.arm(g.waiters);
      const id = this.transmit(frame, {
        reply: (msg) => this.subscribeAnswered(id, group, g, msg),
        fail: () => {},
      });
      g.inflight = id;
    }

    subscribeAnswered(id, group, g, msg) {
      const latest = g.inflight === id;
      if (latest) g.inflight = null;
      if (this.groups.get(group) !== g) return null; // unsubscribed meanwhile
      let err = null;
      if (msg.type === 'subscribed') {
        g.subscribed = true;
        g.error = null;
        g.reply = msg;
        this.adoptPosition(msg, group, null);
      } else if (msg.type === 'error') {
        if (TRANSIENT[msg.code]) {
          this.scheduleResync();
          this.emitIdentity();
          return null;
        }
        err = hubError(msg.code, msg.message, { reply: msg });
        g.error = msg.code;
        if (REFUSALS[msg.code]) this.groups.delete(group);
      } else {
        return null;
      }
      this.emitIdentity();
      // A newer subscribe (presence changed) is on its way, unless this one was refused for good.
      if (!latest && this.groups.get(group) === g) return null;
      const waiters = g.waiters.splice(0);
      return () => this.settle(waiters, err, msg);
    }

    /**
     * Leaves `group` and stops re-subscribing it. Offline there is nothing to undo: the
     * hub forgot the old session's groups. Pending subscribe() promises reject with `cancelled`.
     */
    unsubscribe(group) {
      const g = this.groups.get(group);
      this.groupPos.delete(group); // a later subscribe starts afresh
      if (g) {
        this.groups.delete(group);
        this.settle(g.waiters, hubError('cancelled', 'unsubscribed from ' + group));
        this.emitIdentity();
      }
      if (!this.isOpen()) return Promise.resolve({ type: 'unsubscribed', group: group });
      return quiet(this.request({ type: 'unsubscribe', group: group }));
    }

    /**
     * After a transient refusal (overloaded...), or once joined (groups refused with
     * not_joined): sends again, on this connection, the parts of the identity the hub
     * does not hold yet and is not already answering.
     */
    resync() {
      this.clearTimer('resyncTimer');
      if (!this.isOpen()) return;
      if (this.name !== null && !this.joined && this.joinInFlight === null) this.sendJoin();
      this.groups.forEach((g, group) => {
        if (!g.subscribed && g.inflight === null) this.sendSubscribe(group, g);
      });
    }

    scheduleResync() {
      if (this.resyncTimer !== null) return;
      const delay = backoffDelay(this.resyncAttempt++, this.options.reconnectBaseMs, this.options.reconnectMaxMs, this.random);
      this.resyncTimer = this.clock.setTimeout(() => {
        this.resyncTimer = null;
        this.resync();
      }, delay);
    }

    /** A promise on `list`, settled by the reply; `armNow` when the command is already on its way. */
    wait(list, armNow) {
      return quiet(
        new Promise((resolve, reject) => {
          list.push({ resolve: resolve, reject: reject, timer: null });
          if (armNow) this.arm(list);
        })
      );
    }

    /** The waiters' timeouts run from the first sending (not across the offline wait). */
    arm(list) {
      list.forEach((w) => {
        if (w.timer !== null) return;
        w.timer = this.clock.setTimeout(() => {
          const at = list.indexOf(w);
          if (at >= 0) list.splice(at, 1);
          // Only the promise gives up: the name or group stays, and so does the command in
          // flight, whose late reply still updates identity().
          w.reject(hubError('timeout', 'no answer from the hub within ' + this.options.requestTimeoutMs + ' ms; still trying'));
        }, this.options.requestTimeoutMs);
      });
    }

    settle(list, err, value) {
      list.splice(0).forEach((w) => {
        this.clock.clearTimeout(w.timer);
        if (err) w.reject(err);
        else w.resolve(value);
      });
    }

    /**
     * The true state of the identity: the name kept (null when none or refused), whether
     * the hub has confirmed it on the current connection, the last refusal, and every group.
     */
    identity() {
      const groups = [];
      this.groups.forEach((g, group) => {
        groups.push({ group: group, presence: g.presence, subscribed: g.subscribed, error: g.error });
      });
      return {
        name: this.name,
        joined: this.joined !== null,
        session: this.joined && this.joined.session !== undefined ? this.joined.session : null,
        error: this.joinError,
        groups: groups,
      };
    }

    emitIdentity() {
      this.emit('identity', this.identity());
    }

    /** Commands waiting in the offline queue. */
    get queued() {
      return this.queue.length;
    }
  }

  /** `n` base-36 digits from `random`. */
  function randomDigits(random, n) {
    let out = '';
    for (let i = 0; i < n; i++) out += Math.floor(random() * 36).toString(36).slice(-1);
    return out;
  }

  function copyCommand(command) {
    if (!command || typeof command.type !== 'string') throw new TypeError('wxhub: a command needs a string `type`');
    const frame = Object.assign({}, command);
    delete frame.id; // ids are the client's: replies are matched by them
    return frame;
  }

  /**
   * join(), subscribe() and unsubscribe() set state, whose outcome the `identity` event
   * reports too, so apps often call them without awaiting: their rejections are marked as
   * handled (no "Uncaught (in promise)"), while a .catch() the app adds still gets them.
   */
  function quiet(promise) {
    promise.catch(function () {});
    return promise;
  }

  function closeQuietly(socket, reason) {
    try {
      // A reason over 123 bytes makes WebSocket.close() throw; 40 characters fit even in CJK.
      socket.close(1000, String(reason).slice(0, 40));
    } catch (e) {
      // already closed
    }
  }

  // ---- transports ----------------------------------------------------------------------
  //
  // A transport: open(url, handlers) -> {send(text), close(code, reason)}, where handlers
  // are onOpen(), onMessage(text), onClose({code, reason}), onError(err). Reporting error,
  // close or both is fine: the client acts once per connection. Optional watch(wake):
  // calls wake() when a retry should not wait (network back, app in the foreground).

  /**
   * The WHATWG WebSocket (browsers, Node 22+, or any implementation passed in).
   * @param {Function} [WebSocketImpl] defaults to the global WebSocket, looked up at each open
   */
  function browserTransport(WebSocketImpl) {
    return {
      open: (url, h) => {
        const WS = WebSocketImpl || (typeof WebSocket !== 'undefined' ? WebSocket : null);
        if (!WS) throw new TypeError('wxhub: no WebSocket implementation');
        const ws = new WS(url);
        ws.onopen = () => h.onOpen();
        ws.onmessage = (e) => h.onMessage(e.data);
        ws.onerror = (e) => h.onError(e); // a browser follows it with a close, which has the code
        ws.onclose = (e) => h.onClose({ code: e.code, reason: e.reason });
        return { send: (text) => ws.send(text), close: (code, reason) => ws.close(code, reason) };
      },
      watch: (wake) => {
        // window (or a worker) says when the network is back; a page shown again may have
        // a socket that died while it was hidden (a laptop that slept, a phone's browser).
        if (typeof addEventListener === 'function') addEventListener('online', wake); // eslint-disable-line no-undef
        if (typeof document === 'object' && document && typeof document.addEventListener === 'function') {
          document.addEventListener('visibilitychange', () => document.visibilityState === 'visible' && wake()); // eslint-disable-line no-undef
        }
      },
    };
  }

  /**
   * WeChat mini-programs: wx.connectSocket's SocketTask (base library 1.7.0+). A task of its
   * own per connection, not the global wx.onSocket* callbacks: a late event from a socket
   * already given up on is then recognised and ignored, and other code's callbacks stay.
   * @param {object} wxApi the `wx` object
   */
  function wxTransport(wxApi) {
    return {
      open: (url, h) => {
        let opened = false;
        let closeWanted = null;
        const task = wxApi.connectSocket({ url: url, fail: (res) => h.onError(res) });
        if (!task) throw new Error('wx.connectSocket returned no SocketTask');
        task.onOpen(() => {
          opened = true;
          // WeChat ignores a close before the socket opened, so it is done now.
          if (closeWanted) task.close(closeWanted);
          else h.onOpen();
        });
        task.onMessage((res) => closeWanted || h.onMessage(res.data));
        task.onError((res) => h.onError(res));
        task.onClose((res) => h.onClose({ code: res && res.code, reason: res && res.reason }));
        return {
          // A failed send means the socket is going down: its close follows.
          send: (text) => task.send({ data: text, fail: () => {} }),
          close: (code, reason) => {
            closeWanted = { code: code, reason: reason, fail: () => {} };
            if (opened) task.close(closeWanted);
          },
        };
      },
      watch: (wake) => {
        // A backgrounded mini-program loses its socket within seconds, often without a close
        // event: the user coming back should not wait out a backoff timer that grew
        // meanwhile, nor type into a socket that is dead (wake() verifies an open one).
        if (typeof wxApi.onAppShow === 'function') wxApi.onAppShow(wake);
        if (typeof wxApi.onNetworkStatusChange === 'function') {
          wxApi.onNetworkStatusChange((res) => res && res.isConnected && wake());
        }
      },
    };
  }

  return {
    Client: Client,
    browserTransport: browserTransport,
    wxTransport: wxTransport,
    backoffDelay: backoffDelay,
    mayReconnect: mayReconnect,
    parseFrame: parseFrame,
    hubError: hubError,
    REFUSALS: REFUSALS,
    TRANSIENT: TRANSIENT,
    DEFAULTS: DEFAULTS,
  };
});
