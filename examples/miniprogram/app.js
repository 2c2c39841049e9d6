// The app owns the one hub connection; pages use it through getApp().hub.
//
// utils/wxhub.js is a byte-identical copy of clients/js/wxhub.js, the client library
// (test/wxhub-copy.test.js checks it): reconnects, the join and the groups replayed on
// every connection, the offline queue, messages sent again until acknowledged, and the
// stream positions it sends back as `since` so that the hub replays what was missed.
const config = require('./config.js');
const Wxhub = require('./utils/wxhub.js');

// The config keys that are options of the client library.
const OPTIONS = [
  'pingMs',
  'connectTimeoutMs',
  'reconnectBaseMs',
  'reconnectMaxMs',
  'requestTimeoutMs',
  'verifyTimeoutMs',
  'maxQueue',
];

// Storage key of hub.positions(): the last message seen in each stream (the room, our own
// direct messages). WeChat may kill an app in the background without a word; launched
// again, the client starts from these and the hub replays what came meanwhile.
const POSITIONS_KEY = 'wxhub.positions';

App({
  hub: null,
  hidden: false,

  onLaunch() {
    const options = { url: config.hubUrl, transport: Wxhub.wxTransport(wx) };
    OPTIONS.forEach((key) => {
      if (config[key] !== undefined) options[key] = config[key];
    });
    const saved = wx.getStorageSync(POSITIONS_KEY); // '' when never saved
    if (saved && typeof saved === 'object') options.positions = saved;
    this.hub = new Wxhub.Client(options);
    // A recovery moves the positions (after a hub restart, to a new epoch): saved at once,
    // so that a launch after a kill does not ask again from the old epoch. Not while
    // hidden: what arrives then has not been seen, and is replayed at the next launch.
    this.hub.on('recovery', () => {
      if (!this.hidden) this.savePositions();
    });
    // Connect at launch so the first page finds the socket open, or nearly.
    this.hub.connect();
  },

  onShow() {
    // Back from the background: WeChat may have dropped the socket without a close event,
    // and what the user types now must not go into a dead socket. A ping answered within
    // verifyTimeoutMs proves it alive; otherwise the library replaces it at once and sends
    // again what was not acknowledged. (The library's wx transport does the same on
    // wx.onAppShow; a second ping costs nothing.)
    if (this.hidden && this.hub) this.hub.verify();
    this.hidden = false;
  },

  onHide() {
    this.hidden = true;
    // The last chance: WeChat may end a backgrounded app without calling anything else.
    this.savePositions();
  },

  savePositions() {
    if (!this.hub) return;
    try {
      wx.setStorageSync(POSITIONS_KEY, this.hub.positions());
    } catch (err) {
      console.warn('wxhub: positions not saved', err); // a full storage costs a replay, no more
    }
  },
});
