//! A per-session token bucket, and the rule that turns a flood into a close.
//!
//! The bucket holds up to `burst` tokens and refills at `rate` per second; each command
//! takes one. A command with no token left is refused (`rate_limited`) and counts a
//! strike; strikes reset only once the bucket has refilled completely, i.e. after the
//! client paused. A client with more strikes than `burst` is flooding and is closed.

use std::time::Instant;

/// What the bucket says about one command.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    Allow,
    /// Refuse this command, keep the connection.
    Refuse,
    /// Refuse and close: the client keeps flooding.
    Close,
}

#[derive(Debug, Clone)]
pub struct TokenBucket {
    rate: f64,
    burst: f64,
    tokens: f64,
    last: Instant,
    strikes: u32,
}

impl TokenBucket {
    pub fn new(rate: f64, burst: f64, now: Instant) -> Self {
        TokenBucket {
            rate,
            burst,
            tokens: burst,
            last: now,
            strikes: 0,
        }
    }

    pub fn check(&mut self, now: Instant) -> Verdict {
        let elapsed = now.saturating_duration_since(self.last).as_secs_f64();
        self.last = now;
        self.tokens = (self.tokens + elapsed * self.rate).min(self.burst);
        if self.tokens >= self.burst {
            self.strikes = 0;
        }
        if self.tokens >= 1.0 {
            self.tokens -= 1.0;
            return Verdict::Allow;
        }
        self.strikes += 1;
        if f64::from(self.strikes) > self.burst {
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
