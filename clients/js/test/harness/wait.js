'use strict';
// Waiting for what the test expects instead of sleeping.

/**
 * Resolves with the first `type` event from `client` that `match` accepts (every one when
 * no match); rejects after `timeout` ms saying what it waited for.
 */
function nextEvent(client, type, match, { timeout = 5000 } = {}) {
  return new Promise((resolve, reject) => {
    const timer = setTimeout(() => {
      off();
      reject(new Error(`timed out after ${timeout} ms waiting for a '${type}' event${match ? ' ' + match : ''}`));
    }, timeout);
    const off = client.on(type, (event, command) => {
      if (match && !match(event, command)) return;
      clearTimeout(timer);
      off();
      resolve(event);
    });
  });
}

/** Resolves once `predicate()` holds (checked on every event of the client); rejects after `timeout` ms. */
function until(client, predicate, what, { timeout = 5000 } = {}) {
  return new Promise((resolve, reject) => {
    if (predicate()) return resolve();
    const offs = [];
    const done = (err) => {
      clearTimeout(timer);
      offs.forEach((off) => off());
      if (err) reject(err);
      else resolve();
    };
    const timer = setTimeout(() => done(new Error(`timed out after ${timeout} ms waiting for ${what}`)), timeout);
    for (const type of ['state', 'identity', 'open', 'close', 'joined', 'subscribed', 'message', 'presence', 'users', 'error']) {
      offs.push(client.on(type, () => {
        if (predicate()) done();
      }));
    }
  });
}

module.exports = { nextEvent, until };
