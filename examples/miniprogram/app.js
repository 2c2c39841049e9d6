// The app owns the one hub connection; pages use it through getApp().hub.
//
// utils/wxhub.js is a byte-identical copy of clients/js/wxhub.js, the client library
// (test/wxhub-copy.test.js checks it): reconnects, the join and the groups replayed on
// every connection, the offline queue, messages sent again until acknowledged.
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

App({
  hub: null,
  hidden: false,

  onLaunch() {
    const options = { url: config.hubUrl, transport: Wxhub.wxTransport(wx) };
    OPTIONS.forEach((key) => {
      if (config[key] !== undefined) options[key] = config[key];
    });
    this.hub = new Wxhub.Client(options);
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
  },
});
