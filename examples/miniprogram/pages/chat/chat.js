// Chat: join with a name, see who is in the room, send direct, room and broadcast messages.
//
// Everything shown lives in page data (setData), including the connection status; the
// hub module does the reconnecting, so after a hub restart this page only has to refresh
// its member list when the room subscription is renewed.
const config = require('../../config.js');

const NAME_KEY = 'chat.name'; // storage key of the name last joined with
const MAX_MESSAGES = 100; // older messages are dropped from the page

const STATUS_TEXT = {
  idle: '未连接',
  connecting: '连接中…',
  open: '已连接',
  waiting: '连接断开，正在重连…',
  closed: '已断开',
};

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
    status: STATUS_TEXT.idle,
    online: false,
    room: config.chatRoom,
    nameInput: '',
    me: '', // the name the hub accepted
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
    this.offs = [
      this.hub.on('state', (e) => this.showState(e.state)),
      this.hub.on('message', (m) => this.addMessage(m)),
      this.hub.on('presence', (p) => this.onPresence(p)),
      // The member list is taken from the `users` event, not from the request's promise:
      // events run in the order the hub sent them, while a promise callback runs later,
      // after a presence event that followed the reply in the same batch of frames.
      this.hub.on('users', (r) => {
        if (r.group === this.data.room) this.setData({ users: r.users });
      }),
      // Also fires when the hub module re-subscribes after a reconnect: the member list
      // of the new session is then fetched afresh.
      this.hub.on('subscribed', (s) => {
        if (s.group === this.data.room) this.refreshUsers();
      }),
    ];
    this.showState(this.hub.state);
    const saved = wx.getStorageSync(NAME_KEY);
    if (saved) {
      this.setData({ nameInput: saved });
      this.join(saved);
    }
  },

  onUnload() {
    this.offs.forEach((off) => off());
    this.hub.unsubscribe(this.data.room).catch(() => {});
  },

  showState(state) {
    this.setData({ status: STATUS_TEXT[state] || state, online: state === 'open' });
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
    this.hub
      .join(name)
      .then((joined) => {
        // Remembered only once the hub accepted it, so a refused name is not retried.
        wx.setStorageSync(NAME_KEY, joined.name);
        this.setData({ me: joined.name });
        return this.hub.subscribe(this.data.room, { presence: true });
      })
      .catch((err) => this.showError(err));
  },

  // ---- room members ------------------------------------------------------------------

  refreshUsers() {
    // The reply is shown by the `users` listener (see onLoad). A reply lost with the
    // connection needs no toast: the list is fetched again once the room is renewed.
    this.hub.users(this.data.room).catch((err) => {
      if (err.code !== 'disconnected') this.showError(err);
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
    const sent = this.sendAs(this.data.mode, { text });
    if (!sent) return;
    this.setData({ text: '' });
    sent.catch((err) => this.showError(err));
  },

  /** Sends `body` the way `mode` says; returns the promise of the hub's ack, or null. */
  sendAs(mode, body) {
    if (mode === 'direct') {
      const to = this.data.to;
      if (!to) {
        toast('请选择收信人');
        return null;
      }
      // The hub does not echo a direct message to its sender, so it is shown once
      // acknowledged (unless it was to ourselves, which the hub does deliver).
      return this.hub.direct(to, body).then(() => {
        if (to !== this.data.me) {
          this.addMessage({ kind: 'direct', from: this.data.me, to, body, ts: Date.now() });
        }
      });
    }
    // Room and broadcast messages come back to the sender, and are shown then.
    if (mode === 'group') return this.hub.publish(this.data.room, body);
    return this.hub.broadcast(body);
  },

  // ---- showing -----------------------------------------------------------------------

  addMessage(m) {
    this.seq += 1;
    const entry = {
      key: 'm' + this.seq,
      kind: m.kind,
      from: m.from,
      to: m.to || '',
      group: m.group || '',
      text: bodyText(m.body),
      time: clock(m.ts),
      mine: m.from === this.data.me,
    };
    const messages = this.data.messages.concat([entry]).slice(-MAX_MESSAGES);
    this.setData({ messages, lastKey: entry.key });
  },

  showError(err) {
    // `disconnected`: the reply was lost with the connection; the status bar says why.
    toast(err.code === 'disconnected' ? '连接断开，消息可能未送达' : err.message);
  },
});
