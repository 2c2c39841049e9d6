//! A per-session token bucket, and the rule that turns a flood into a close.
//!
//! The bucket holds up to `burst` tokens and refills at `rate` per second; each command
//! takes one. A command with no token left is refused (`rate_limited`) and counts a
//! strike; strikes reset only once the bucket has refilled completely, i.e. after the
//! client paused. A client with more strikes than `burst` is flooding and is closed.

use std::sync::OnceLock;
use std::time::Instant;

/// Seconds from a fixed instant (the first call), negative for instants before it: 8
/// bytes per bucket instead of an `Instant`'s 16, and exact differences either side.
fn seconds(now: Instant) -> f64 {
    static EPOCH: OnceLock<Instant> = OnceLock::new();
    let epoch = *EPOCH.get_or_init(Instant::now);
    match now.checked_duration_since(epoch) {
        Some(after) => after.as_secs_f64(),
        None => -epoch.duration_since(now).as_secs_f64(),
    }
}

/// What the bucket says about one command.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    Allow,
    /// Refuse this command, keep the connection.
    Refuse,
    /// Refuse and close: the client keeps flooding.
    Close,
}

/// `f32`s: one bucket per connection, and a token count needs no more precision (a
/// burst above 2^24 = 16,777,216 no longer counts single commands, i.e. acts as no limit,
/// which is what such a setting asks for anyway).
#[derive(Debug, Clone)]
pub struct TokenBucket {
    rate: f32,
    burst: f32,
    tokens: f32,
    /// When the bucket was last looked at, in [`seconds`].
    last: f64,
    strikes: u32,
}

impl TokenBucket {
    pub fn new(rate: f64, burst: f64, now: Instant) -> Self {
        let (rate, burst) = (rate as f32, burst as f32);
        TokenBucket {
            rate,
            burst,
            tokens: burst,
            last: seconds(now),
            strikes: 0,
        }
    }

    pub fn check(&mut self, now: Instant) -> Verdict {
        self.check_cost(now, 1)
    }

    /// Like [`TokenBucket::check`] for a command that costs `cost` tokens (at most the
    /// whole bucket, so that any command can pass after a pause).
    pub fn check_cost(&mut self, now: Instant, cost: u32) -> Verdict {
        let now = seconds(now);
        let elapsed = (now - self.last).max(0.0) as f32;
        self.last = now;
        self.tokens = (self.tokens + elapsed * self.rate).min(self.burst);
        if self.tokens >= self.burst {
            self.strikes = 0;
        }
        let cost = (cost as f32).min(self.burst);
        if self.tokens >= cost {
            self.tokens -= cost;
            return Verdict::Allow;
        }
        self.strikes += 1;
        if self.strikes as f32 > self.burst {
            Verdict::Close
        } else {
            Verdict::Refuse
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn burst_then_rate() {
        let t0 = Instant::now();
        let mut b = TokenBucket::new(50.0, 100.0, t0);
        for _ in 0..100 {
            assert_eq!(b.check(t0), Verdict::Allow);
        }
        assert_eq!(b.check(t0), Verdict::Refuse);
        // 100 ms later, 5 more tokens.
        let t1 = t0 + Duration::from_millis(100);
        for _ in 0..5 {
            assert_eq!(b.check(t1), Verdict::Allow);
        }
        assert_eq!(b.check(t1), Verdict::Refuse);
    }

    #[test]
    fn expensive_commands_take_more_tokens() {
        let t0 = Instant::now();
        let mut b = TokenBucket::new(10.0, 20.0, t0);
        assert_eq!(b.check_cost(t0, 11), Verdict::Allow);
        assert_eq!(b.check_cost(t0, 11), Verdict::Refuse);
        // What is left still pays for cheap ones.
        for _ in 0..9 {
            assert_eq!(b.check_cost(t0, 1), Verdict::Allow);
        }
        assert_eq!(b.check_cost(t0, 1), Verdict::Refuse);
        // A cost above the bucket's size is charged as the whole bucket.
        let t1 = t0 + Duration::from_secs(2);
        assert_eq!(b.check_cost(t1, 1000), Verdict::Allow);
        assert_eq!(b.check_cost(t1, 1), Verdict::Refuse);
    }

    #[test]
    fn a_flood_is_closed_and_a_pause_forgives() {
        let t0 = Instant::now();
        let mut b = TokenBucket::new(50.0, 10.0, t0);
        for _ in 0..10 {
            b.check(t0);
        }
        for _ in 0..10 {
            assert_eq!(b.check(t0), Verdict::Refuse);
        }
        // A pause long enough to refill: the strikes are forgiven.
        let t1 = t0 + Duration::from_secs(1);
        for _ in 0..10 {
            assert_eq!(b.check(t1), Verdict::Allow);
        }
        for _ in 0..10 {
            assert_eq!(b.check(t1), Verdict::Refuse);
        }
        assert_eq!(b.check(t1), Verdict::Close);
    }
}
