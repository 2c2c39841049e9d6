//! A broker that keeps what it is asked in memory: for tests of the router in cluster mode,
//! and for anything that wants to watch what a node would tell the others.

use std::collections::HashSet;
use std::sync::{Arc, Mutex};

use bytestring::ByteString;

use super::{Broker, Channels, Route};

/// What a [`MemoryBroker`] was asked, shared with whoever watches it.
#[derive(Debug, Default)]
pub struct Record {
    /// Every message handed on, as (channel, frame), in order.
    pub published: Vec<(String, ByteString)>,
    /// Every interest change, as (channel, wanted), in order.
    pub changes: Vec<(String, bool)>,
    /// The channels wanted now.
    pub wanted: HashSet<String>,
}

/// A [`Broker`] that records; clones share one [`Record`].
#[derive(Debug, Clone)]
pub struct MemoryBroker {
    channels: Channels,
    record: Arc<Mutex<Record>>,
}

impl MemoryBroker {
    pub fn new(prefix: &str) -> Self {
        MemoryBroker {
            channels: Channels::new(prefix),
            record: Arc::default(),
        }
    }

    /// What it was asked so far.
    pub fn record(&self) -> std::sync::MutexGuard<'_, Record> {
        self.record.lock().unwrap_or_else(|e| e.into_inner())
    }
}

impl Broker for MemoryBroker {
    fn publish(&mut self, route: Route<&str>, frame: &ByteString) -> bool {
        let channel = self.channels.name(route);
        self.record().published.push((channel, frame.clone()));
        true
    }

    fn interest(&mut self, route: Route<&str>, wanted: bool) {
        let channel = self.channels.name(route);
        let mut record = self.record();
        let changed = if wanted {
            record.wanted.insert(channel.clone())
        } else {
            record.wanted.remove(&channel)
        };
        // The router promises first and last only: a repeat is its bug.
        debug_assert!(changed, "interest in {channel} set to {wanted} twice");
        record.changes.push((channel, wanted));
    }
}
