//! A broker that keeps what it is asked in memory: for tests of the router in cluster mode,
//! and for anything that wants to watch what a node would tell the others.

use std::collections::HashSet;
use std::sync::{Arc, Mutex};

use bytestring::ByteString;

use super::{Broker, Channels, Read, Route};
use crate::history::Retention;
use crate::protocol::Template;

/// What a [`MemoryBroker`] was asked, shared with whoever watches it.
#[derive(Debug, Default)]
pub struct Record {
    /// Every message handed on, as (channel, frame), in order.
    pub published: Vec<(String, ByteString)>,
    /// Every interest change, as (channel, wanted), in order.
    pub changes: Vec<(String, bool)>,
    /// The channels wanted now.
    pub wanted: HashSet<String>,
    /// Every message of a numbered stream handed on, in order: (channel, template,
    /// retention).
    pub numbered: Vec<(String, Template, Retention)>,
    /// Every read asked, in order.
    pub reads: Vec<Read>,
    /// Whether it says Redis is down.
    pub down: bool,
    /// Interest changes and reads, in the order asked: `+channel`, `-channel`,
    /// `read channel` (a read must follow the interest it depends on).
    pub order: Vec<String>,
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
        let sign = if wanted { '+' } else { '-' };
        record.order.push(format!("{sign}{channel}"));
        record.changes.push((channel, wanted));
    }

    fn publish_numbered(
        &mut self,
        route: Route<&str>,
        template: &Template,
        retention: Retention,
    ) -> bool {
        let channel = self.channels.name(route);
        self.record()
            .numbered
            .push((channel, template.clone(), retention));
        true
    }

    fn read(&mut self, read: Read) {
        let channel = self.channels.name(read.route.as_deref());
        let mut record = self.record();
        record.order.push(format!("read {channel}"));
        record.reads.push(read);
    }

    fn up(&self) -> bool {
        !self.record().down
    }
}
