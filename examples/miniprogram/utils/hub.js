// The app's one connection to the hub, shared by every page.
//
// Why one: base libraries before 1.7.0 allow a single socket per mini-program, and even
// newer ones cap it at five, so pages must not open their own. The app creates one Hub
// (app.js) and pages reach it with getApp().hub.
//
// Why a SocketTask (the object wx.connectSocket returns) and not the global
// wx.onSocketOpen/onSocketMessage/... callbacks: every connection gets listeners of its
// own, so an event from a socket we already gave up on (a late close, a handshake that
// finished after its timeout) is recognised by identity and ignored. With the global
// callbacks a late close of the old socket looks exactly like the new one closing, and
// registering them here would also replace whatever callbacks other code had set.
// SocketTask needs base library 1.7.0 or later.
//
// What the module does for pages:
// - commands sent while the socket is down wait in a queue and go out once it is open;
// - a lost connection is retried with exponential backoff and jitter;
// - after every (re)connect it joins again with the same name and re-subscribes every
//   group, before anything from the queue, so queued commands find the session ready;
// - an application-level `ping` heartbeat keeps the hub from dropping us and notices a
//   connection that died without a close (common on mobile networks);
// - back from the background (wx.onAppShow) or from a network outage, it retries at once
//   instead of waiting out the backoff;
// - `on(type, fn)` for events, returning the function that removes the listener.

const STATE = {
  IDLE: 'idle', // never asked to connect
  CONNECTING: 'connecting',
  OPEN: 'open',
  WAITING: 'waiting', // down, a retry is scheduled
  CLOSED: 'closed', // closed by the app; stays down
};

const DEFAULTS = {
  hubUrl: 'ws://127.0.0.1:8080/ws',
  heartbeatMs: 20000,
  connectTimeoutMs: 10000,
  reconnectBaseMs: 500,
  reconnectMaxMs: 30000,
  requestTimeoutMs: 10000,
  maxQueued: 50,
};

/**
 * The hub's close-code rule (docs/PROTOCOL.md): 4500-4999 mean "do not reconnect until the
 * cause is fixed" (e.g. a bad token); after any other close, reconnect with backoff.
 */
function mayReconnect(code) {
  return !(code >= 4500 && code <= 4999);
}

/** An Error carrying the hub's error `code` (or one of ours: disconnected, timeout, closed, queue_full). */
function hubError(code, message) {
  const err = new Error(message || code);
  err.code = code;
  return err;
}

/**
 * Delay before reconnect attempt number `attempt` (0 for the first): the ceiling doubles
 * from `base` up to `max`, and the delay is drawn from the upper half of it ("equal
 * jitter"): spread out enough that clients do not reconnect in lockstep, never so short
 * that a dead hub is hammered.
 */
function backoffDelay(attempt, base, max, random) {
  const ceiling = Math.min(max, base * Math.pow(2, attempt));
  const draw = (random || Math.random)();
  return Math.round(ceiling / 2 + (draw * ceiling) / 2);
}

/**
 * One frame from the hub as an object, or null. The hub sends compact JSON objects; the
 * BOM and whitespace trimming is for servers that add them (older ones did).
 */
function parseFrame(data) {
  if (typeof data !== 'string') return null; // the hub never sends binary frames
  try {
    const value = JSON.parse(data.replace(/^\uFEFF/, '').trim());
    return value && typeof value === 'object' && !Array.isArray(value) ? value : null;
  } catch (e) {
    return null;
  }
}

class Hub {
  constructor(options) {
    this.options = Object.assign({}, DEFAULTS, options);
    this.state = STATE.IDLE;
    this.task = null; // the current SocketTask; any other task is stale
    this.listeners = {}; // event type -> [fn]
    this.queue = []; // requests waiting for an open socket, in order
    this.pending = {}; // request id -> request, sent and waiting for its reply
    this.nextId = 1;
    this.attempt = 0; // reconnect attempts since the last successful open
    this.retryTimer = null;
    this.connectTimer = null;
    this.heartbeatTimer = null;
    this.awaitingPong = false; // a ping went out and nothing has come back since
    // What the session is, replayed on every new socket.
    this.name = ''; // join as this name ('' = stay anonymous)
    this.token = ''; // the join token, when the hub has an auth secret
    this.session = null; // the `joined` reply on the current socket
    this.joining = false;
    this.groups = {}; // group -> { presence }
    this.waiters = {}; // 'join' | 'group:<g>' -> [{ resolve, reject }] for replayed commands
    this.watching = false;
  }

  // ---- connection ------------------------------------------------------------------

  /** Opens the connection if it is not open or opening already. */
  connect() {
    this.watchLifecycle();
    if (this.state === STATE.OPEN || this.state === STATE.CONNECTING) return;
    this.clearRetry();
    this.open();
  }

  /** Closes for good (logout): no more reconnects; everything waiting is rejected. */
  close() {
    this.clearRetry();
    this.drop(this.task, 'bye');
    this.setState(STATE.CLOSED);
    const closed = hubError('closed', 'the connection was closed');
    this.queue.splice(0).forEach((req) => req.reject(closed));
    Object.keys(this.waiters).forEach((key) => this.settle(key, closed));
  }

  isOpen() {
    return this.state === STATE.OPEN;
  }

  /** Retry now if a retry is waiting: the user is back, or the network is. */
  wake() {
    if (this.state !== STATE.WAITING) return; // connecting or open: nothing to hurry
    this.clearRetry();
    this.attempt = 0;
    this.open();
  }

  /** Foreground and network events are app-wide, so they are watched once, here. */
  watchLifecycle() {
    if (this.watching) return;
    this.watching = true;
    // A mini-program in the background loses its socket after a few seconds; the user
    // coming back should not wait for a backoff timer that grew while nobody looked.
    if (wx.onAppShow) wx.onAppShow(() => this.wake());
    if (wx.onNetworkStatusChange) {
      wx.onNetworkStatusChange((res) => {
        if (res.isConnected) this.wake();
      });
    }
  }

  open() {
    this.setState(STATE.CONNECTING);
    // `fail` normally runs later, with `task` set; were it called before connectSocket
    // returned, lost(null) would ignore it and the connect timeout below would retry.
    let task = null;
    task = wx.connectSocket({
      url: this.options.hubUrl,
      fail: (err) => this.lost(task, err),
    });
    if (!task) {
      this.scheduleRetry({ errMsg: 'connectSocket returned no SocketTask' });
      return;
    }
    this.task = task;
    task.onOpen(() => this.opened(task));
    task.onMessage((res) => this.received(task, res.data));
    // A failed handshake may report an error, a close, or both: lost() runs once.
    task.onError((err) => this.lost(task, err));
    task.onClose((res) => this.lost(task, res));
    this.connectTimer = setTimeout(
      () => this.lost(task, { errMsg: 'connect timeout' }),
      this.options.connectTimeoutMs
    );
  }

  opened(task) {
    if (task !== this.task) {
      // A socket we gave up on while it was still connecting. Closing a SocketTask before
      // it opens does nothing, so it is closed now that it has.
      task.close({ code: 1000, reason: 'stale', fail() {} });
      return;
    }
    clearTimeout(this.connectTimer);
    this.connectTimer = null;
    this.attempt = 0;
    this.setState(STATE.OPEN);
    this.startHeartbeat();
    // The hub handles one connection's frames in order: join, then subscriptions, then
    // whatever pages sent meanwhile, which may need both.
    if (this.name) this.sendJoin();
    Object.keys(this.groups).forEach((group) => this.sendSubscribe(group));
    this.queue.splice(0).forEach((req) => this.dispatch(req));
    // Pages refetch what a gap may have cost them (e.g. chart history) on `ready`.
    this.emit('ready', { type: 'ready' });
  }

  /**
   * The socket closed, failed, timed out or went silent: forget it and retry later,
   * unless the hub closed it with a code that says not to (mayReconnect).
   */
  lost(task, info) {
    if (!task || task !== this.task) return; // stale, or already handled
    this.drop(task, 'giving up');
    if (this.state === STATE.CLOSED) return;
    if (info && typeof info.code === 'number' && !mayReconnect(info.code)) {
      this.setState(STATE.CLOSED, { code: info.code, reason: info.reason });
      return;
    }
    this.scheduleRetry(info);
  }

  /**
   * Forgets the current socket and closes it, so that the hub frees its session when we
   * give up on a socket that is still open (silent, or replaced). Closing one that is
   * already closed does nothing.
   */
  drop(task, reason) {
    if (!task || task !== this.task) return;
    this.detach(task);
    task.close({ code: 1000, reason, fail() {} });
  }

  /** Forgets the current socket and rejects what was sent on it and not answered. */
  detach(task) {
    if (!task || task !== this.task) return;
    this.task = null;
    clearTimeout(this.connectTimer);
    this.connectTimer = null;
    this.stopHeartbeat();
    this.session = null;
    this.joining = false;
    // The hub may or may not have acted on these; resending could deliver twice, so the
    // caller hears about it instead (join and subscribe are replayed from state anyway).
    const lostReply = hubError('disconnected', 'the connection dropped before the reply');
    Object.keys(this.pending).forEach((id) => this.finish(id, lostReply));
  }

  scheduleRetry(info) {
    const delay = backoffDelay(
      this.attempt,
      this.options.reconnectBaseMs,
      this.options.reconnectMaxMs
    );
    this.attempt += 1;
    this.retryTimer = setTimeout(() => {
      this.retryTimer = null;
      this.open();
    }, delay);
    this.setState(STATE.WAITING, { retryInMs: delay, reason: info && (info.errMsg || info.reason) });
  }

  clearRetry() {
    clearTimeout(this.retryTimer);
    this.retryTimer = null;
  }

  /** A new name needs a new session: the hub lets a session join only once. */
  restart() {
    this.drop(this.task, 'rejoin');
    this.open();
  }

  setState(state, extra) {
    this.state = state;
    this.emit('state', Object.assign({ type: 'state', state }, extra));
  }

  // ---- heartbeat ---------------------------------------------------------------------

  startHeartbeat() {
    this.awaitingPong = false;
    this.heartbeatTimer = setInterval(() => this.beat(), this.options.heartbeatMs);
  }

  stopHeartbeat() {
    clearInterval(this.heartbeatTimer);
    this.heartbeatTimer = null;
  }

  /**
   * Every beat sends a ping. If nothing at all (pong, tick, message) came back since the
   * previous beat, the connection is dead even though no close was reported.
   */
  beat() {
    if (this.awaitingPong) {
      this.lost(this.task, { errMsg: 'heartbeat timeout' });
      return;
    }
    this.awaitingPong = true;
    this.transmit({ type: 'ping' });
  }

  // ---- frames ------------------------------------------------------------------------

  transmit(frame) {
    // If the send fails the socket is going down and its close will follow.
    this.task.send({ data: JSON.stringify(frame), fail() {} });
  }

  received(task, data) {
    if (task !== this.task) return;
    this.awaitingPong = false; // anything at all proves the connection alive
    const msg = parseFrame(data);
    if (!msg) return;
    if (msg.id !== undefined && this.pending[msg.id]) {
      const err = msg.type === 'error' ? hubError(msg.code, msg.message) : null;
      this.finish(msg.id, err, msg);
    }
    // Replies are events too: a page may care about `joined` or `subscribed` whoever asked.
    this.emit(msg.type, msg);
  }

  // ---- requests ----------------------------------------------------------------------

  /**
   * Sends a command and resolves with its reply (rejects with an Error whose `code` is the
   * hub's error code). While the socket is down the command waits in the queue.
   */
  request(command) {
    return new Promise((resolve, reject) => {
      const req = { frame: Object.assign({}, command, { id: this.nextId++ }), resolve, reject };
      if (this.state === STATE.OPEN) {
        this.dispatch(req);
        return;
      }
      if (this.state === STATE.CLOSED) {
        reject(hubError('closed', 'the connection was closed'));
        return;
      }
      if (this.queue.length >= this.options.maxQueued) {
        reject(hubError('queue_full', 'too many messages waiting for the connection'));
        return;
      }
      this.queue.push(req);
      if (this.state === STATE.IDLE) this.connect();
    });
  }

  /** Sends one request on the open socket and arms its reply timeout. */
  dispatch(req) {
    const id = req.frame.id;
    req.timer = setTimeout(
      () => this.finish(id, hubError('timeout', 'no reply from the hub')),
      this.options.requestTimeoutMs
    );
    this.pending[id] = req;
    this.transmit(req.frame);
  }

  finish(id, err, reply) {
    const req = this.pending[id];
    if (!req) return;
    delete this.pending[id];
    clearTimeout(req.timer);
    if (err) req.reject(err);
    else req.resolve(reply);
  }

  // ---- session: join and groups, replayed after every reconnect ----------------------

  /**
   * Joins as `name`, now and after every reconnect. Resolves with the `joined` reply.
   * `token` is for a hub started with an auth secret: a JWT your backend signs for this
   * user (after wx.login), sent with every join. Once it expires, a rejoin is refused
   * with `unauthorized`; call join() again with a fresh one.
   */
  join(name, token) {
    if (this.session && this.session.name === name) {
      if (token) this.token = token; // a fresh one, for the next rejoin
      return Promise.resolve(this.session);
    }
    const rename = Boolean(this.session || this.joining) && name !== this.name;
    this.name = name;
    this.token = token || '';
    const done = this.expect('join');
    if (this.state !== STATE.OPEN) this.connect();
    else if (rename) this.restart();
    else if (!this.joining) this.sendJoin();
    return done;
  }

  sendJoin() {
    const name = this.name;
    const command = this.token ? { type: 'join', name, token: this.token } : { type: 'join', name };
    this.joining = true;
    this.sendOnly(command).then(
      (joined) => {
        this.joining = false;
        this.session = joined;
        this.settle('join', null, joined);
      },
      (err) => {
        if (err.code === 'disconnected') return; // replayed on the next socket
        this.joining = false;
        // A name the hub refuses would be refused after every reconnect too.
        if (this.name === name) this.name = '';
        this.settle('join', err);
      }
    );
  }

  /** Subscribes to `group`, now and after every reconnect. Resolves with `subscribed`. */
  subscribe(group, options) {
    this.groups[group] = { presence: Boolean(options && options.presence) };
    const done = this.expect('group:' + group);
    if (this.state === STATE.OPEN) this.sendSubscribe(group);
    else this.connect();
    return done;
  }

  sendSubscribe(group) {
    const entry = this.groups[group];
    this.sendOnly({ type: 'subscribe', group, presence: entry.presence }).then(
      (reply) => this.settle('group:' + group, null, reply),
      (err) => {
        if (err.code === 'disconnected') return; // replayed on the next socket
        // Do not replay a subscription the hub refused (unknown symbol, bad name...).
        if (this.groups[group] === entry) delete this.groups[group];
        this.settle('group:' + group, err);
      }
    );
  }

  unsubscribe(group) {
    delete this.groups[group];
    // While down there is nothing to undo: the hub forgot the old session's groups, and
    // the next socket will not subscribe to this one.
    if (this.state !== STATE.OPEN) return Promise.resolve({ type: 'unsubscribed', group });
    return this.sendOnly({ type: 'unsubscribe', group });
  }

  /** Like request(), for commands that are replayed from state and so never queued. */
  sendOnly(command) {
    return new Promise((resolve, reject) => {
      this.dispatch({ frame: Object.assign({}, command, { id: this.nextId++ }), resolve, reject });
    });
  }

  expect(key) {
    return new Promise((resolve, reject) => {
      (this.waiters[key] = this.waiters[key] || []).push({ resolve, reject });
    });
  }

  settle(key, err, value) {
    const waiters = this.waiters[key] || [];
    delete this.waiters[key];
    waiters.forEach((w) => (err ? w.reject(err) : w.resolve(value)));
  }

  // ---- commands ----------------------------------------------------------------------

  direct(to, body) {
    return this.request({ type: 'direct', to, body });
  }

  broadcast(body) {
    return this.request({ type: 'broadcast', body });
  }

  publish(group, body) {
    return this.request({ type: 'publish', group, body });
  }

  users(group) {
    return this.request(group ? { type: 'users', group } : { type: 'users' });
  }

  history(symbol, limit) {
    return this.request(limit ? { type: 'history', symbol, limit } : { type: 'history', symbol });
  }

  // ---- events ------------------------------------------------------------------------

  /**
   * Calls `fn(event)` for every event of `type`: a hub event type (message, presence,
   * tick, quote, joined, ...) or one of ours: `state` (connection state changed) and
   * `ready` (a new socket is open and the session replayed). Returns the function that
   * removes the listener; pages call it in onUnload.
   */
  on(type, fn) {
    (this.listeners[type] = this.listeners[type] || []).push(fn);
    return () => {
      const list = this.listeners[type] || [];
      const at = list.indexOf(fn);
      if (at >= 0) list.splice(at, 1);
    };
  }

  listenerCount() {
    return Object.keys(this.listeners).reduce((n, type) => n + this.listeners[type].length, 0);
  }

  emit(type, event) {
    // A copy: a listener may remove itself (or others) while we iterate.
    (this.listeners[type] || []).slice().forEach((fn) => {
      try {
        fn(event);
      } catch (e) {
        // One page's bug must not stop the others from hearing the event.
        console.error('hub listener for ' + type + ' failed:', e);
      }
    });
  }
}

module.exports = { Hub, STATE, backoffDelay, parseFrame, hubError, mayReconnect };
