'use strict';
// Waiting for state instead of sleeping: poll a predicate until it holds or time runs out.

/**
 * Resolves with the predicate's first truthy value (it may return a promise); rejects after `timeout` ms with
 * `what` and, when given, `detail()` (the state that was seen) in the message.
 */
async function waitFor(predicate, { timeout = 5000, interval = 20, what = 'condition', detail } = {}) {
  const deadline = Date.now() + timeout;
  for (;;) {
    const value = await predicate();
    if (value) return value;
    if (Date.now() > deadline) {
      const seen = detail ? `\nlast seen: ${JSON.stringify(detail(), null, 1)}` : '';
      throw new Error(`timed out after ${timeout} ms waiting for ${what}${seen}`);
    }
    await new Promise((resolve) => setTimeout(resolve, interval));
  }
}

module.exports = { waitFor };
