'use strict';
// A clock the test drives: the client's timers run only when the test advances time, so
// backoff delays, timeouts and heartbeats are checked exactly and without waiting.

class FakeClock {
  constructor() {
    this.time = 0;
    this.timers = new Map(); // handle -> {at, fn, ms}
    this.nextHandle = 1;
    this.setTimeout = (fn, ms) => {
      const handle = this.nextHandle++;
      this.timers.set(handle, { at: this.time + Math.max(0, ms || 0), fn, ms });
      return handle;
    };
    this.clearTimeout = (handle) => {
      this.timers.delete(handle);
    };
    this.now = () => this.time;
  }

  /** The delays (ms from now) of the timers armed, soonest first. */
  pending() {
    return [...this.timers.values()].map((t) => t.at - this.time).sort((a, b) => a - b);
  }

  /**
   * Moves time forward by `ms`, running every timer that falls due in order (timers set
   * meanwhile included), and letting promise callbacks run after each.
   */
  async advance(ms) {
    const end = this.time + ms;
    for (;;) {
      let due = null;
      for (const [handle, t] of this.timers) {
        if (t.at <= end && (!due || t.at < due.t.at || (t.at === due.t.at && handle < due.handle))) due = { handle, t };
      }
      if (!due) break;
      this.timers.delete(due.handle);
      this.time = due.t.at;
      due.t.fn();
      await settled();
    }
    this.time = end;
    await settled();
  }
}

/** Lets pending promise callbacks (and I/O callbacks already queued) run. */
function settled() {
  return new Promise((resolve) => setImmediate(resolve));
}

/** Math.random's stand-in: returns the given values in turn (the last one forever). */
function sequence(...values) {
  let i = 0;
  return () => values[Math.min(i++, values.length - 1)];
}

module.exports = { FakeClock, settled, sequence };
