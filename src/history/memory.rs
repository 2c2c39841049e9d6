//! [`History`] in the hub's memory: one process, lost on restart (clients then get a new
//! epoch and reload).
//!
//! Each stream keeps its messages in a ring, oldest first, trimmed to its retention on
//! every append and read. All kept messages of all streams are also listed in one queue
//! in the order they were appended: when the bytes kept pass the limit, the oldest
//! message of the whole hub goes first, which is always the oldest of its own stream. So
//! memory is bounded by the limit however many groups there are.
//!
//! Streams cost memory too (their position, about 250 bytes), and a client can make many
//! (publishing to, or subscribing to and leaving, new groups). The live ones are bounded by
//! the pool's limits; the dormant ones ([`History::release`]) are listed in the order they
//! went dormant, and past a number derived from the limit, the one dormant longest is
//! forgotten, with its messages.

use std::collections::{HashMap, VecDeque};
use std::time::Duration;

use bytestring::ByteString;

use super::{new_epoch, History, HistoryStats, Position, Recovery, Retention, StreamKey};

/// One kept message.
struct Entry {
    offset: u64,
    /// When it was appended (`now` of the call).
    at: u64,
    frame: ByteString,
}

/// A kept message in the hub-wide order: which stream, which offset.
struct Kept {
    key: StreamKey,
    offset: u64,
}

struct Stream {
    epoch: std::sync::Arc<str>,
    top: u64,
    entries: VecDeque<Entry>,
    retention: Retention,
    /// Last append or use (position, since, latest, touch): an empty stream is forgotten
    /// this long after it, and a dormant one used since it went dormant is not.
    active: u64,
    /// Last touch: whether its user was seen lately.
    touched: u64,
}

/// What one kept message costs besides its frame's bytes: its entry, its place in the
/// hub-wide queue, the frame's shared header (a clone of a `Bytes` made from a `Vec`
/// allocates one) and the rings' growth slack, on average (measured by
/// tests/history_memory.rs: 315 bytes allocated for a 180-byte frame).
const PER_MESSAGE: usize = std::mem::size_of::<Entry>() + std::mem::size_of::<Kept>() + 48;

/// The in-memory history.
pub struct MemoryHistory {
    streams: HashMap<StreamKey, Stream>,
    order: VecDeque<Kept>,
    bytes: usize,
    messages: usize,
    limit_bytes: usize,
    /// Streams that went dormant, and when, oldest first (records of streams used since
    /// are skipped when they come up).
    dormant: VecDeque<(StreamKey, u64)>,
    max_dormant: usize,
    /// How long an empty stream nobody uses is kept (its epoch and offset), so that a
    /// client back within this time learns it missed nothing.
    keep_idle: u64,
}

impl MemoryHistory {
    /// Keeps at most `limit_bytes` of messages (frames and bookkeeping) in all, and an
    /// empty stream's position for `keep_idle` after its last use.
    pub fn new(limit_bytes: usize, keep_idle: Duration) -> Self {
        MemoryHistory {
            streams: HashMap::new(),
            order: VecDeque::new(),
            bytes: 0,
            messages: 0,
            limit_bytes,
            dormant: VecDeque::new(),
            // One dormant stream per KiB of the limit (64k for 64 MiB: ~16 MB of positions).
            max_dormant: (limit_bytes / 1024).max(1024),
            keep_idle: keep_idle.as_millis().min(u64::MAX as u128) as u64,
        }
    }

    /// The stream, created if missing, marked as used at `now`.
    fn stream(&mut self, key: &StreamKey, now: u64) -> &mut Stream {
        let s = self.streams.entry(key.clone()).or_insert_with(|| Stream {
            epoch: new_epoch(),
            top: 0,
            entries: VecDeque::new(),
            retention: Retention::NONE,
            active: now,
            touched: now,
        });
        s.active = s.active.max(now);
        s
    }

    /// Forgets dormant streams, oldest first, while there are too many.
    fn forget_dormant(&mut self) {
        while self.dormant.len() > self.max_dormant {
            let Some((key, at)) = self.dormant.pop_front() else {
                break;
            };
            let unused = self.streams.get(&key).is_some_and(|s| s.active <= at);
            if unused {
                if let Some(s) = self.streams.remove(&key) {
                    for gone in s.entries {
                        self.bytes -= Self::cost(&gone.frame);
                        self.messages -= 1;
                    }
                }
            }
        }
    }

    /// The cost of a kept frame against the limit.
    fn cost(frame: &ByteString) -> usize {
        frame.len() + PER_MESSAGE
    }

    /// Drops the stream's messages past its size or older than its ttl.
    fn trim(stream: &mut Stream, now: u64, bytes: &mut usize, messages: &mut usize) {
        let ttl = stream.retention.ttl_ms();
        while let Some(front) = stream.entries.front() {
            let expired = now.saturating_sub(front.at) > ttl;
            if stream.entries.len() <= stream.retention.size && !expired {
                break;
            }
            let gone = stream.entries.pop_front().expect("a front entry");
            *bytes -= Self::cost(&gone.frame);
            *messages -= 1;
        }
    }

    /// The hub-wide queue lists messages trimmed from their stream until they reach its
    /// front; past twice the kept messages it is rebuilt, so it stays in proportion.
    fn compact(&mut self) {
        if self.order.len() <= 2 * self.messages + 1024 {
            return;
        }
        let streams = &self.streams;
        self.order.retain(|k| kept(streams, k));
    }

    /// Evicts the hub's oldest messages until the bytes kept are within the limit.
    fn enforce_limit(&mut self) {
        while self.bytes > self.limit_bytes {
            let Some(oldest) = self.order.pop_front() else {
                break;
            };
            let Some(stream) = self.streams.get_mut(&oldest.key) else {
                continue;
            };
            if stream.entries.front().map(|e| e.offset) == Some(oldest.offset) {
                let gone = stream.entries.pop_front().expect("a front entry");
                self.bytes -= Self::cost(&gone.frame);
                self.messages -= 1;
            }
        }
    }
}

/// Whether the queue's record still names a kept message.
fn kept(streams: &HashMap<StreamKey, Stream>, k: &Kept) -> bool {
    streams.get(&k.key).is_some_and(|s| {
        matches!((s.entries.front(), s.entries.back()), (Some(f), Some(b)) if f.offset <= k.offset && k.offset <= b.offset)
    })
}

impl History for MemoryHistory {
    fn position(&mut self, key: &StreamKey, now: u64) -> Position {
        let s = self.stream(key, now);
        Position {
            epoch: s.epoch.clone(),
            offset: s.top,
        }
    }

    fn append(
        &mut self,
        key: &StreamKey,
        retention: Retention,
        now: u64,
        encode: &mut dyn FnMut(u64) -> ByteString,
    ) -> (Position, ByteString) {
        let (mut bytes, mut messages) = (self.bytes, self.messages);
        let s = self.stream(key, now);
        s.top += 1;
        s.retention = retention;
        let offset = s.top;
        let frame = encode(offset);
        let keep = retention.keeps();
        if keep {
            bytes += Self::cost(&frame);
            messages += 1;
            s.entries.push_back(Entry {
                offset,
                at: now,
                frame: frame.clone(),
            });
        }
        Self::trim(s, now, &mut bytes, &mut messages);
        let position = Position {
            epoch: s.epoch.clone(),
            offset,
        };
        (self.bytes, self.messages) = (bytes, messages);
        if keep {
            // The table's own key, shared: a key made by the caller for this call would
            // stay allocated as long as the message.
            let key = self
                .streams
                .get_key_value(key)
                .map_or_else(|| key.clone(), |(k, _)| k.clone());
            self.order.push_back(Kept { key, offset });
            self.enforce_limit();
            self.compact();
        }
        (position, frame)
    }

    fn since(
        &mut self,
        key: &StreamKey,
        since: &Position,
        limit: usize,
        now: u64,
    ) -> (Recovery, Position) {
        let (mut bytes, mut messages) = (self.bytes, self.messages);
        let s = self.stream(key, now);
        Self::trim(s, now, &mut bytes, &mut messages);
        let position = Position {
            epoch: s.epoch.clone(),
            offset: s.top,
        };
        let recovery = if since.epoch != s.epoch || since.offset > s.top {
            Recovery::Lost
        } else {
            let missed = s.top - since.offset;
            let first = s.entries.front().map_or(s.top + 1, |e| e.offset);
            if missed == 0 {
                Recovery::Recovered(Vec::new())
            } else if first > since.offset + 1 || missed > limit as u64 {
                Recovery::Lost
            } else {
                let skip = (since.offset + 1 - first) as usize;
                Recovery::Recovered(
                    s.entries
                        .iter()
                        .skip(skip)
                        .map(|e| e.frame.clone())
                        .collect(),
                )
            }
        };
        (self.bytes, self.messages) = (bytes, messages);
        (recovery, position)
    }

    fn latest(&mut self, key: &StreamKey, limit: usize, now: u64) -> (Vec<ByteString>, Position) {
        let (mut bytes, mut messages) = (self.bytes, self.messages);
        let s = self.stream(key, now);
        Self::trim(s, now, &mut bytes, &mut messages);
        let skip = s.entries.len().saturating_sub(limit);
        let frames = s
            .entries
            .iter()
            .skip(skip)
            .map(|e| e.frame.clone())
            .collect();
        let position = Position {
            epoch: s.epoch.clone(),
            offset: s.top,
        };
        (self.bytes, self.messages) = (bytes, messages);
        (frames, position)
    }

    fn touch(&mut self, key: &StreamKey, now: u64) {
        self.stream(key, now).touched = now;
    }

    fn release(&mut self, key: &StreamKey, now: u64) {
        if let Some((key, _)) = self.streams.get_key_value(key) {
            self.dormant.push_back((key.clone(), now));
            self.forget_dormant();
        }
    }

    fn seen_within(&self, key: &StreamKey, within: Duration, now: u64) -> bool {
        let within = within.as_millis().min(u64::MAX as u128) as u64;
        self.streams
            .get(key)
            .is_some_and(|s| now.saturating_sub(s.touched) <= within)
    }

    fn sweep(&mut self, now: u64, live: &dyn Fn(&StreamKey) -> bool) {
        let (mut bytes, mut messages) = (self.bytes, self.messages);
        let keep_idle = self.keep_idle;
        self.streams.retain(|key, s| {
            Self::trim(s, now, &mut bytes, &mut messages);
            !s.entries.is_empty() || now.saturating_sub(s.active) <= keep_idle || live(key)
        });
        (self.bytes, self.messages) = (bytes, messages);
        if self.streams.capacity() > 4 * self.streams.len().max(64) {
            self.streams.shrink_to_fit();
        }
        // Records of streams gone or used since they went dormant.
        if self.dormant.len() > 2 * self.streams.len() + 1024 {
            let streams = &self.streams;
            self.dormant
                .retain(|(k, at)| streams.get(k).is_some_and(|s| s.active <= *at));
        }
        self.compact();
    }

    fn stats(&self) -> HistoryStats {
        HistoryStats {
            streams: self.streams.len(),
            messages: self.messages,
            bytes: self.bytes,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::history::conformance;

    fn make() -> Box<dyn History> {
        Box::new(MemoryHistory::new(usize::MAX, Duration::from_secs(300)))
    }

    #[test]
    fn passes_the_conformance_suite() {
        conformance::run(&make);
    }

    fn frame(n: usize) -> ByteString {
        ByteString::from("x".repeat(n))
    }

    #[test]
    fn the_byte_limit_evicts_the_hubs_oldest_messages_first() {
        let limit = 10 * (100 + PER_MESSAGE);
        let mut h = MemoryHistory::new(limit, Duration::from_secs(300));
        let big = Retention {
            size: 1000,
            ttl: Duration::from_secs(300),
        };
        for i in 0..20u64 {
            let key = StreamKey::group(if i % 2 == 0 { "a" } else { "b" });
            h.append(&key, big, i, &mut |_| frame(100));
        }
        let stats = h.stats();
        assert_eq!((stats.messages, stats.bytes), (10, limit));
        // Each stream kept its newest five: a (offsets 1..=10) holds 6..=10.
        let a = h.position(&StreamKey::group("a"), 20);
        let (ok, _) = h.since(
            &StreamKey::group("a"),
            &Position {
                offset: 5,
                ..a.clone()
            },
            100,
            20,
        );
        assert!(matches!(ok, Recovery::Recovered(v) if v.len() == 5));
        let (lost, _) = h.since(
            &StreamKey::group("a"),
            &Position { offset: 4, ..a },
            100,
            20,
        );
        assert_eq!(lost, Recovery::Lost);
    }

    #[test]
    fn dormant_streams_past_the_bound_are_forgotten_oldest_first() {
        // A 1 MiB limit keeps at most 1024 dormant streams.
        let mut h = MemoryHistory::new(1 << 20, Duration::from_secs(300));
        let keep = Retention {
            size: 10,
            ttl: Duration::from_secs(300),
        };
        let used = StreamKey::group("used");
        h.append(&used, keep, 0, &mut |_| frame(10));
        h.release(&used, 0);
        for g in 0..5000u64 {
            let key = StreamKey::group(&format!("g{g}"));
            h.append(&key, keep, g + 1, &mut |_| frame(10));
            h.release(&key, g + 1);
            if g == 10 {
                h.position(&used, g + 1); // used again after going dormant: kept
            }
        }
        let stats = h.stats();
        assert!(stats.streams <= 1024 + 2, "{stats:?}");
        assert_eq!(
            stats.messages, stats.streams,
            "each forgotten with its message"
        );
        assert!(h.streams.contains_key(&used));
        assert!(
            h.streams.contains_key(&StreamKey::group("g4999")),
            "the newest stay"
        );
        assert!(
            !h.streams.contains_key(&StreamKey::group("g11")),
            "the oldest go"
        );
    }

    #[test]
    fn the_hub_wide_queue_stays_in_proportion_to_what_is_kept() {
        let mut h = MemoryHistory::new(usize::MAX, Duration::from_secs(300));
        let small = Retention {
            size: 3,
            ttl: Duration::from_secs(300),
        };
        for i in 0..100_000u64 {
            h.append(&StreamKey::group("busy"), small, i, &mut |_| frame(1));
        }
        assert_eq!(h.stats().messages, 3);
        assert!(h.order.len() <= 2 * 3 + 1024 + 1, "{}", h.order.len());
    }
}
