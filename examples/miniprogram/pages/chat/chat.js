// Chat: join with a name, see who is in the room, send direct, room and broadcast messages.
//
// The client library (getApp().hub) does the reconnecting, the rejoining and the sending
// again; this page shows what it says. Who we are comes from hub.identity() and its
// `identity` event, never from a request's promise: a slow network makes a promise time
// out, but the name and the room are kept until the hub refuses them.
//
// A message typed is in the list at once, marked 发送中…; the hub's ack marks it 已送达 N
// (N: the sessions other than ours that took it). One that definitively failed stays,
// marked 发送失败，点击重试: a tap sends it again with the same message id (mid), so nobody
// gets it twice. A direct message to someone offline but seen lately is kept by the hub
// (ack `stored`): marked 对方离线，已保存，上线后送达.
//
// Nothing missed, nothing twice: the library replays what came while the connection was
// down (the room, our direct messages) and drops copies. The page adds the room's recent
// messages from the hub's history when it first enters the room (an app WeChat restarted
// is not empty), and again after a `recovery` that could not replay everything (a hub
// restart, too long away), with a notice line. Room lines keep their stream position
// (epoch, offset), so that a message from the history already shown is not added again.
const config = require('../../config.js');
const { errorText, showError } = require('../../utils/errors.js');

const NAME_KEY = 'chat.name'; // storage key of the name last joined with
const MAX_MESSAGES = 100; // older messages are dropped from the page
const HISTORY_LIMIT = 50; // room messages loaded from the hub's history at a time
const NOT_RECOVERED = '部分消息无法恢复，已重新加载';

const CONNECTION_TEXT = {
  idle: '未连接',
  connecting: '连接中…',
  open: '已连接',
  reconnecting: '连接断开，正在重连…',
  closed: '已断开',
};
const SIGNING_IN = '正在登录…';

const SEND_STATUS = {
  pending: '发送中…',
  failed: '发送失败，点击重试',
};

/**
 * `delivered` counts the sessions other than the sender's own (docs/PROTOCOL.md).
 * `stored`: a direct message to a user offline now but seen lately, kept by the hub and
 * delivered when that user comes back.
 */
function deliveredText(ack) {
  if (ack.stored) return '对方离线，已保存，上线后送达';
  return '已送达 ' + ack.delivered;
}

// Errors that end a request without the need to tell the user: the identity (status bar)
// says what is going on, and the library sends again what matters.
const QUIET = { timeout: true, disconnected: true, cancelled: true, not_joined: true };

/** A message body as one line of text: `{text}` bodies are what this page sends. */
function bodyText(body) {
  if (typeof body === 'string') return body;
  if (body && typeof body.text === 'string') return body.text;
  return JSON.stringify(body);
}

function clock(ts) {
  const d = new Date(ts);
  const two = (n) => (n < 10 ? '0' : '') + n;
  return two(d.getHours()) + ':' + two(d.getMinutes()) + ':' + two(d.getSeconds());
}

function toast(title) {
  wx.showToast({ title, icon: 'none' });
}

Page({
  data: {
    status: CONNECTION_TEXT.idle,
    online: false, // the socket is open
    room: config.chatRoom,
    nameInput: '',
    me: '', // the name kept by the client: confirmed or not, it stays until the hub refuses it
    joined: false, // the hub confirmed `me` on the current connection
    users: [], // members of the room, sorted
    mode: 'group', // group | direct | broadcast
    to: '',
    text: '',
    messages: [],
    lastKey: '', // scroll-into-view target
  },

  onLoad() {
    this.hub = getApp().hub;
    this.seq = 0;
    this.historyLoaded = false; // the room's history was asked for (or is being)
    this.historyInFlight = false;
    this.offs = [
      this.hub.on('state', () => this.showStatus()),
      this.hub.on('identity', () => this.showStatus()),
      this.hub.on('message', (m) => this.onMessage(m)),
      this.hub.on('presence', (p) => this.onPresence(p)),
      // The member list is taken from the `users` event, not from the request's promise:
      // events run in the order the hub sent them, while a promise callback runs later,
      // after a presence event that followed the reply in the same batch of frames.
      this.hub.on('users', (r) => {
        if (r.group === this.data.room) this.setData({ users: r.users });
      }),
      // Also fires when the library subscribes again after a reconnect: the member list
      // of the new session is then fetched afresh.
      this.hub.on('subscribed', (s) => {
        if (s.group !== this.data.room) return;
        this.refreshUsers();
        // The first time in the room: its recent messages, so that an app WeChat
        // restarted does not start empty. (A `recovery` just before may have loaded them.)
        if (!this.historyLoaded) this.loadHistory();
      }),
      // A rejoin or resubscribe whose missed messages could not all be replayed: the hub
      // restarted, or we were away too long. Said once, and the room reloaded.
      this.hub.on('recovery', (r) => {
        if (r.recovered) return;
        if (r.group !== undefined && r.group !== this.data.room) return;
        this.notice(NOT_RECOVERED);
        this.loadHistory();
      }),
    ];
    const kept = this.hub.identity().name;
    const saved = wx.getStorageSync(NAME_KEY);
    if (kept) {
      this.hub.subscribe(this.data.room, { presence: true }); // the page was opened again
    } else if (saved) {
      this.setData({ nameInput: saved });
      this.join(saved);
    }
    this.showStatus();
  },

  onUnload() {
    this.offs.forEach((off) => off());
    this.hub.unsubscribe(this.data.room);
  },

  /** The status bar and the name, from the connection state and the identity. */
  showStatus() {
    const id = this.hub.identity();
    const state = this.hub.state;
    const open = state === 'open';
    const me = id.name || '';
    const joined = Boolean(me) && id.joined && open;
    let status = CONNECTION_TEXT[state] || state;
    if (joined) status = CONNECTION_TEXT.open;
    else if (me && open) status = SIGNING_IN;
    const patch = {};
    if (status !== this.data.status) patch.status = status;
    if (open !== this.data.online) patch.online = open;
    if (joined !== this.data.joined) patch.joined = joined;
    if (me !== this.data.me) {
      patch.me = me;
      // Refused: the name field comes back with the refused name, to be corrected.
      if (!me && this.data.me) patch.nameInput = this.data.me;
    }
    // Remembered only once the hub accepted it, so a refused name is not tried again.
    if (joined && this.stored !== me) {
      wx.setStorageSync(NAME_KEY, me);
      this.stored = me;
    }
    if (Object.keys(patch).length) this.setData(patch);
  },

  // ---- joining -----------------------------------------------------------------------

  onNameInput(e) {
    this.setData({ nameInput: e.detail.value });
  },

  onJoin() {
    const name = this.data.nameInput.trim();
    if (!name) {
      toast('请输入名字');
      return;
    }
    this.join(name);
  },

  join(name) {
    // Both are state the library keeps and sends again on every connection, in order: the
    // join, then the room. A timeout is not a refusal (the status bar says 正在登录…); only
    // a refusal is shown, and then identity().name is null: the name field comes back.
    this.hub.join(name).catch((err) => {
      if (!QUIET[err.code]) showError(err);
    });
    this.hub.subscribe(this.data.room, { presence: true }).catch((err) => {
      if (!QUIET[err.code]) showError(err);
    });
    this.showStatus();
  },

  // ---- room members ------------------------------------------------------------------

  refreshUsers() {
    // The reply is shown by the `users` listener (see onLoad). A reply lost with the
    // connection needs no toast: the list is fetched again once the room is renewed.
    this.hub.users({ group: this.data.room }).catch((err) => {
      if (!QUIET[err.code] && err.code !== 'closed') showError(err);
    });
  },

  onPresence(p) {
    if (p.group !== this.data.room) return;
    const others = this.data.users.filter((u) => u !== p.name);
    const users = p.event === 'join' ? others.concat([p.name]).sort() : others;
    this.setData({ users });
  },

  /** Tapping a member writes to them directly. */
  onPickUser(e) {
    this.setData({ mode: 'direct', to: e.currentTarget.dataset.name });
  },

  // ---- sending -----------------------------------------------------------------------

  onModeChange(e) {
    this.setData({ mode: e.detail.value });
  },

  onToInput(e) {
    this.setData({ to: e.detail.value.trim() });
  },

  onTextInput(e) {
    this.setData({ text: e.detail.value });
  },

  onSend() {
    const text = this.data.text.trim();
    if (!text) return;
    const mode = this.data.mode;
    const to = mode === 'direct' ? this.data.to : '';
    if (mode === 'direct' && !to) {
      toast('请选择收信人');
      return;
    }
    const group = mode === 'group' ? this.data.room : '';
    // The same text to the same place as a message that failed is that message again (its
    // text was put back in the input): sent with its mid, so it cannot arrive twice.
    const failed = this.data.messages.findIndex(
      (m) => m.status === 'failed' && m.kind === mode && m.to === to && m.group === group && m.text === text
    );
    if (failed >= 0) {
      this.retryAt(failed);
      return;
    }
    this.seq += 1;
    const line = {
      key: 'm' + this.seq,
      mid: this.hub.newMid(),
      kind: mode,
      from: this.data.me,
      to,
      group,
      text,
      time: clock(Date.now()),
      mine: true,
      status: 'pending',
      statusText: SEND_STATUS.pending,
      error: '',
    };
    this.setData({ text: '' });
    this.appendLine(line);
    this.transmit(line);
  },

  /** The failed line's retry action: the same message, the same mid. */
  onRetry(e) {
    const key = e.currentTarget.dataset.key;
    const at = this.data.messages.findIndex((m) => m.key === key);
    if (at >= 0 && this.data.messages[at].status === 'failed') this.retryAt(at);
  },

  retryAt(at) {
    const line = this.data.messages[at];
    const patch = {};
    patch['messages[' + at + '].status'] = 'pending';
    patch['messages[' + at + '].statusText'] = SEND_STATUS.pending;
    patch['messages[' + at + '].error'] = '';
    if (this.data.text.trim() === line.text) patch.text = ''; // the draft put back is this message
    this.setData(patch);
    this.transmit(line);
  },

  /**
   * Sends `line` with its mid. The library keeps it across reconnects (sent again with the
   * same mid until acknowledged); the promise settles on the ack or a definitive failure.
   */
  transmit(line) {
    const body = { text: line.text };
    const options = { mid: line.mid };
    let sent;
    if (line.kind === 'direct') sent = this.hub.direct(line.to, body, options);
    else if (line.kind === 'group') sent = this.hub.publish(line.group, body, options);
    else sent = this.hub.broadcast(body, options);
    sent.then(
      (ack) =>
        this.updateLine(line.mid, {
          status: ack.stored ? 'stored' : 'delivered',
          statusText: deliveredText(ack),
          error: '',
        }),
      (err) => this.sendFailed(line, err)
    );
  },

  sendFailed(line, err) {
    const overrides = line.kind === 'direct' ? { not_found: line.to + ' 不在线' } : null;
    const reason = errorText(err, overrides);
    this.updateLine(line.mid, { status: 'failed', statusText: SEND_STATUS.failed, error: reason });
    // The text is not lost: it is back in an empty input too, to edit or send again.
    if (!this.data.text.trim()) this.setData({ text: line.text });
    showError(err, overrides);
  },

  // ---- showing -----------------------------------------------------------------------

  onMessage(m) {
    // Room and broadcast messages (and direct ones to ourselves) come back to the sender:
    // the copy of a line already shown is not shown twice.
    if (m.from === this.data.me && this.ownLineOf(m) >= 0) return;
    this.appendLine(this.lineOf(m, this.roomEpoch()));
  },

  /** A received message as a line; a room line keeps its place in the room's stream. */
  lineOf(m, epoch) {
    this.seq += 1;
    const inRoom = m.kind === 'group' && m.group === this.data.room && typeof m.offset === 'number';
    return {
      key: 'm' + this.seq,
      mid: m.mid || '',
      kind: m.kind,
      from: m.from,
      to: m.to || '',
      group: m.group || '',
      text: bodyText(m.body),
      time: clock(m.ts),
      mine: m.from === this.data.me,
      status: '',
      statusText: '',
      error: '',
      epoch: inRoom ? epoch : '',
      offset: inRoom ? m.offset : -1,
    };
  },

  /**
   * The epoch of the room's stream as the library knows it now: that of the messages
   * arriving (a replay comes before its `subscribed`, in the epoch asked for).
   */
  roomEpoch() {
    const pos = this.hub.positions().groups[this.data.room];
    return pos ? pos.epoch : '';
  },

  /** A line of the page's own, in the list: said once until something else is shown. */
  notice(text) {
    const list = this.data.messages;
    const last = list[list.length - 1];
    if (last && last.kind === 'notice' && last.text === text) return;
    this.seq += 1;
    this.appendLine({
      key: 'n' + this.seq,
      mid: '',
      kind: 'notice',
      from: '',
      to: '',
      group: '',
      text,
      time: clock(Date.now()),
      mine: false,
      status: '',
      statusText: '',
      error: '',
      epoch: '',
      offset: -1,
    });
  },

  /**
   * Asks the hub for the room's recent messages and adds those not shown yet. One request
   * at a time: one asked for on this connection already sees what a second would. If it
   * fails (the connection dropped), the next `subscribed` asks again.
   */
  loadHistory() {
    this.historyLoaded = true;
    if (this.historyInFlight) return;
    this.historyInFlight = true;
    const room = this.data.room;
    this.hub.groupHistory(room, { limit: HISTORY_LIMIT }).then(
      (page) => {
        this.historyInFlight = false;
        if (page.group === room) this.mergeHistory(page.epoch, page.messages || []);
      },
      (err) => {
        this.historyInFlight = false;
        this.historyLoaded = false;
        if (!QUIET[err.code] && err.code !== 'closed') console.warn('wxhub: history', err.code, err.message);
      }
    );
  },

  /**
   * Adds the room's messages of `epoch` not already in the list, each in its place by
   * offset among the room's lines of that epoch (after them when it is the newest). Known
   * lines: the same (epoch, offset), or the same (from, mid), e.g. our own line whose copy
   * from the hub has not come back yet.
   */
  mergeHistory(epoch, messages) {
    const room = this.data.room;
    const list = this.data.messages.slice();
    const atOffset = {};
    const byMid = {};
    list.forEach((l) => {
      if (l.kind === 'group' && l.group === room && l.epoch === epoch && l.offset >= 0) atOffset[l.offset] = true;
      if (l.mid) byMid[l.from + '\n' + l.mid] = true;
    });
    const fresh = messages
      .filter((m) => m.kind === 'group' && m.group === room && typeof m.offset === 'number')
      .filter((m) => !atOffset[m.offset] && !(m.mid && byMid[m.from + '\n' + m.mid]))
      .sort((x, y) => x.offset - y.offset);
    if (!fresh.length) return;
    fresh.forEach((m) => {
      const line = this.lineOf(m, epoch);
      let at = list.findIndex(
        (l) => l.kind === 'group' && l.group === room && l.epoch === epoch && l.offset > m.offset
      );
      if (at < 0) at = list.length;
      list.splice(at, 0, line);
    });
    const kept = list.length > MAX_MESSAGES ? list.slice(list.length - MAX_MESSAGES) : list;
    this.setData({ messages: kept, lastKey: kept[kept.length - 1].key });
  },

  /**
   * The index of our own line that `m` is the hub's copy of: by mid; from a hub too old to
   * pass mids on, the oldest line of ours with that text to that place not yet seen back.
   */
  ownLineOf(m) {
    const list = this.data.messages;
    let at = -1;
    if (m.mid) {
      at = list.findIndex((l) => l.mine && l.mid === m.mid && l.status !== '');
    } else {
      const text = bodyText(m.body);
      at = list.findIndex(
        (l) =>
          l.mine && l.status !== '' && !l.echoed && l.kind === m.kind && l.text === text &&
          l.group === (m.group || '') && l.to === (m.to || '')
      );
    }
    if (at >= 0 && !list[at].echoed) {
      const patch = {};
      patch['messages[' + at + '].echoed'] = true;
      // Our room line takes its place in the room's stream, as a received one would.
      if (m.kind === 'group' && m.group === this.data.room && typeof m.offset === 'number') {
        patch['messages[' + at + '].epoch'] = this.roomEpoch();
        patch['messages[' + at + '].offset'] = m.offset;
      }
      this.setData(patch);
    }
    return at;
  },

  /** Adds one line: set by its path, not by sending the whole list again. */
  appendLine(line) {
    const list = this.data.messages;
    if (list.length >= MAX_MESSAGES) {
      this.setData({ messages: list.slice(1 - MAX_MESSAGES).concat([line]), lastKey: line.key });
      return;
    }
    const patch = { lastKey: line.key };
    patch['messages[' + list.length + ']'] = line;
    this.setData(patch);
  },

  /** Changes fields of our line with `mid`, by path. */
  updateLine(mid, fields) {
    const at = this.data.messages.findIndex((l) => l.mine && l.mid === mid && l.status !== '');
    if (at < 0) return; // scrolled out of the kept messages
    const patch = {};
    Object.keys(fields).forEach((k) => {
      patch['messages[' + at + '].' + k] = fields[k];
    });
    this.setData(patch);
  },
});
