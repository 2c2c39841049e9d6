// The one place that says where the hub is and how the socket behaves. Every setting but
// `hubUrl` and `chatRoom` is an option of the client library (utils/wxhub.js, see
// clients/js/README.md "Options"), passed to it as is by app.js.
//
// In WeChat DevTools, with "不校验合法域名" (do not check domain names) ticked, a local
// hub works: ws://127.0.0.1:8080/ws. On a phone, and in any published mini-program,
// the URL must be wss:// on a domain listed under "socket合法域名" in the mini-program
// console (see README.md).
module.exports = {
  hubUrl: 'ws://127.0.0.1:8080/ws',

  // Application-level heartbeat: a mini-program cannot send WebSocket pings, and the hub
  // drops a client it has not heard from for 30 s, so ping well inside that.
  pingMs: 20000,

  // A socket that has not opened by then is given up and tried again (a hung handshake
  // on a flaky mobile network would otherwise never report anything).
  connectTimeoutMs: 10000,

  // Reconnect backoff: the first retry is quick (the usual cause is a blip), then the
  // delay doubles up to the cap. Each delay gets random jitter so that a thousand phones
  // do not all come back in the same millisecond after the hub restarts.
  reconnectBaseMs: 500,
  reconnectMaxMs: 30000,

  // How long a request (a message included) waits for its reply on an open connection
  // before it fails with `timeout`. A message is kept pending across reconnects.
  requestTimeoutMs: 10000,

  // Back in the foreground, the connection is checked with a ping: no answer within this,
  // and it is taken for dead (WeChat drops a backgrounded app's socket silently) and
  // replaced at once; what was not acknowledged is sent again.
  verifyTimeoutMs: 3000,

  // Commands sent while the socket is down wait in a queue of at most this many: kept
  // below the hub's default burst of 100, so that the flush after a reconnect (with the
  // re-join and re-subscribes before it) is not answered `rate_limited`.
  maxQueue: 50,

  // The chat room every chat page joins; its members are the "online" list.
  chatRoom: 'lobby',
};
