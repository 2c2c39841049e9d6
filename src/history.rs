//! The history seam: bounded streams of recent messages with positions, for recovery.
//!
//! Every chat group has a stream, and so has every user (the direct messages sent to that
//! name). A stream has an `epoch` (a random string, new whenever the stream was lost:
//! restart, eviction) and numbers its messages 1, 2, 3... without gaps (`offset`). A
//! client that saw up to `(epoch, offset)` asks for what came after ([`History::since`]):
//! it gets every message after that offset, or learns for certain that it cannot.
//!
//! The router asks; a [`History`] keeps. [`MemoryHistory`] is the one-process
//! implementation, and the [`conformance`] suite is what an implementation must pass.
//! Cluster mode keeps streams in Redis instead ([`crate::cluster::streams`]): a read
//! there is a round trip the hub's thread must not wait for, so it goes through the
//! cluster's broker and comes back as a message (see [`crate::cluster::hold`]).
//!
//! Calls are synchronous and made from the hub's one thread: reading the history and
//! subscribing happen in one handler, so no live message can slip between the replay
//! and the subscription.

mod memory;

#[cfg(test)]
pub mod conformance;

pub use memory::MemoryHistory;

use std::sync::Arc;
use std::time::Duration;

use bytestring::ByteString;

/// Which stream: a group's messages, or the direct messages to a user.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum StreamKey {
    Group(Arc<str>),
    User(Arc<str>),
}

impl StreamKey {
    pub fn group(name: &str) -> Self {
        StreamKey::Group(name.into())
    }

    pub fn user(name: &str) -> Self {
        StreamKey::User(name.into())
    }
}

/// Where a stream is: its epoch and the offset of its last message (0 before the first).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Position {
    pub epoch: Arc<str>,
    pub offset: u64,
}

/// How much of a stream is kept: the last `size` messages, none older than `ttl`,
/// whichever is fewer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Retention {
    pub size: usize,
    pub ttl: Duration,
}

impl Retention {
    /// Nothing kept (offsets still count).
    pub const NONE: Retention = Retention {
        size: 0,
        ttl: Duration::ZERO,
    };

    /// The hub's default: 100 messages, 5 minutes.
    pub const DEFAULT: Retention = Retention {
        size: 100,
        ttl: Duration::from_secs(300),
    };

    pub fn keeps(&self) -> bool {
        self.size > 0 && !self.ttl.is_zero()
    }

    pub(crate) fn ttl_ms(&self) -> u64 {
        self.ttl.as_millis().min(u64::MAX as u128) as u64
    }
}

/// The answer to a recovery request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Recovery {
    /// Every message after the client's offset, oldest first (empty when it missed none).
    Recovered(Vec<ByteString>),
    /// The epoch differs, the offset is ahead of the stream, or a message after it is no
    /// longer held: the client must reload. The stream's current position is returned
    /// with it.
    Lost,
}

/// What a history holds, for stats and the memory limit.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct HistoryStats {
    pub streams: usize,
    pub messages: usize,
    /// Bytes of the kept frames and their bookkeeping, as counted against the limit.
    pub bytes: usize,
}

/// A keeper of streams. `now` is milliseconds on any clock that does not go back (the
/// hub passes wall-clock time); implementations never read a clock themselves, so tests
/// drive time.
pub trait History: Send {
    /// The stream's current position, creating the stream (and its epoch) if missing.
    fn position(&mut self, key: &StreamKey, now: u64) -> Position;

    /// Numbers the next message of the stream, asks `encode` for its frame with that
    /// offset, and keeps the frame as `retention` says. Returns the position of the new
    /// message and the frame, to deliver.
    fn append(
        &mut self,
        key: &StreamKey,
        retention: Retention,
        now: u64,
        encode: &mut dyn FnMut(u64) -> ByteString,
    ) -> (Position, ByteString);

    /// Every message after `since.offset` if the stream still holds all of them under
    /// `since.epoch`, at most `limit` (more is [`Recovery::Lost`]), with the current
    /// position either way.
    fn since(
        &mut self,
        key: &StreamKey,
        since: &Position,
        limit: usize,
        now: u64,
    ) -> (Recovery, Position);

    /// The newest `limit` messages the stream holds, oldest first, and its position
    /// (for a client that could not recover and reloads).
    fn latest(&mut self, key: &StreamKey, limit: usize, now: u64) -> (Vec<ByteString>, Position);

    /// Marks the stream as in use (a member or the user is live at `now`): a stream is
    /// forgotten only when it is empty and has not been appended to or touched for its
    /// ttl. Creates it if missing.
    fn touch(&mut self, key: &StreamKey, now: u64);

    /// The stream has no live member (a group's last member left, a user's last session,
    /// or it was written to while nobody was there): it is dormant from `now`. When there
    /// are too many dormant streams, the one dormant longest goes first, with its messages.
    fn release(&mut self, key: &StreamKey, now: u64);

    /// Whether the stream exists and was touched within `within` before `now`.
    fn seen_within(&self, key: &StreamKey, within: Duration, now: u64) -> bool;

    /// Drops what expired by `now`, and streams that are empty, idle past their ttl and
    /// not `live`.
    fn sweep(&mut self, now: u64, live: &dyn Fn(&StreamKey) -> bool);

    fn stats(&self) -> HistoryStats;
}

/// A fresh epoch: 8 random base-36 characters.
pub fn new_epoch() -> Arc<str> {
    use rand::Rng;
    const DIGITS: &[u8] = b"0123456789abcdefghijklmnopqrstuvwxyz";
    let mut rng = rand::thread_rng();
    let s: String = (0..8)
        .map(|_| DIGITS[rng.gen_range(0..DIGITS.len())] as char)
        .collect();
    s.into()
}
