// The app owns the one hub connection; pages use it through getApp().hub.
const config = require('./config.js');
const { Hub } = require('./utils/hub.js');

App({
  hub: null,

  onLaunch() {
    this.hub = new Hub(config);
    // Connect at launch so the first page finds the socket open, or nearly.
    this.hub.connect();
  },
});
