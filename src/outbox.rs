//! The seam between the hub and a session: a bounded queue of shared frames.
//!
//! The hub never touches a socket. It pushes encoded frames (a [`ByteString`], so a push
//! is a reference-count bump, not a copy) into each recipient's [`Outbox`], and wakes the
//! session with one [`Wake`] message only when the queue goes from empty to non-empty: a
//! session that is behind drains everything queued in one go, and actix-http writes those
//! frames with one syscall. The queue is bounded in bytes; a push past the bound empties
//! it, marks the outbox closed as a slow consumer, and reports the failure, so the
//! hub's memory cannot grow without bound behind a client that stopped reading.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};

use actix::prelude::*;
use bytestring::ByteString;

use crate::error::CloseReason;

/// Tells a session that its outbox has frames (or a close) waiting.
#[derive(Debug, Clone, Copy, Message)]
#[rtype(result = "()")]
pub struct Wake;

/// A session's queue of outgoing frames, shared between the hub (pushing) and the
/// session (draining).
pub struct Outbox {
    queue: Mutex<Queue>,
    /// How the session is woken; a `Recipient` so unit tests can stand in a recorder.
    notify: Recipient<Wake>,
    /// The most bytes that may wait in the queue.
    limit: usize,
    /// Bytes queued in all outboxes together; exposed for tests and metrics.
    total: Arc<AtomicUsize>,
}

#[derive(Default)]
struct Queue {
    frames: VecDeque<ByteString>,
    /// Sum of the queued frames' lengths, compared with the limit on every push.
    bytes: usize,
    /// A `Wake` is in flight; no need to send another until the session drains.
    woken: bool,
    /// Set when the outbox must not take more frames; the session closes with it.
    closed: Option<CloseReason>,
}

/// What a session takes out of its outbox in one drain.
#[derive(Default)]
pub struct Drained {
    pub frames: VecDeque<ByteString>,
    pub close: Option<CloseReason>,
}

impl Outbox {
    pub fn new(notify: Recipient<Wake>, limit: usize, total: Arc<AtomicUsize>) -> Self {
        Outbox {
            queue: Mutex::new(Queue::default()),
            notify,
            limit,
            total,
        }
    }

    fn lock(&self) -> MutexGuard<'_, Queue> {
        // A panic while holding this lock cannot leave the queue inconsistent (every
        // critical section is a few field updates), so a poisoned lock is still usable.
        self.queue.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Queues a frame. Returns false if the outbox is closed or the frame would pass the
    /// byte bound; in the latter case the outbox closes as a slow consumer.
    pub fn push(&self, frame: &ByteString) -> bool {
        let mut q = self.lock();
        if q.closed.is_some() {
            return false;
        }
        if q.bytes + frame.len() > self.limit {
            self.total.fetch_sub(q.bytes, Ordering::Relaxed);
            q.frames = VecDeque::new();
            q.bytes = 0;
            q.closed = Some(CloseReason::SlowConsumer);
            self.wake(&mut q);
            return false;
        }
        q.bytes += frame.len();
        self.total.fetch_add(frame.len(), Ordering::Relaxed);
        q.frames.push_back(frame.clone());
        self.wake(&mut q);
        true
    }

    /// Closes the outbox: no more frames are taken, and the session closes with `reason`
    /// once it has written what is already queued.
    pub fn close(&self, reason: CloseReason) {
        let mut q = self.lock();
        if q.closed.is_none() {
            q.closed = Some(reason);
            self.wake(&mut q);
        }
    }

    fn wake(&self, q: &mut Queue) {
        if !q.woken {
            q.woken = true;
            self.notify.do_send(Wake);
        }
    }

    /// Takes everything queued, and the close reason if there is one.
    pub fn drain(&self) -> Drained {
        let mut q = self.lock();
        q.woken = false;
        self.total.fetch_sub(q.bytes, Ordering::Relaxed);
        q.bytes = 0;
        Drained {
            frames: std::mem::take(&mut q.frames),
            close: q.closed,
        }
    }

    /// Bytes waiting in this outbox.
    pub fn queued_bytes(&self) -> usize {
        self.lock().bytes
    }

    /// Why the outbox stopped taking frames, if it has.
    pub fn close_reason(&self) -> Option<CloseReason> {
        self.lock().closed
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Counts wake-ups.
    struct Counter(Arc<AtomicUsize>);
    impl Actor for Counter {
        type Context = Context<Self>;
    }
    impl Handler<Wake> for Counter {
        type Result = ();
        fn handle(&mut self, _: Wake, _: &mut Context<Self>) {
            self.0.fetch_add(1, Ordering::SeqCst);
        }
    }

    #[actix::test]
    async fn wakes_once_per_batch_and_bounds_bytes() {
        let wakes = Arc::new(AtomicUsize::new(0));
        let total = Arc::new(AtomicUsize::new(0));
        let addr = Counter(wakes.clone()).start();
        let outbox = Outbox::new(addr.clone().recipient(), 10, total.clone());
        let frame = ByteString::from_static("abcd");
        assert!(outbox.push(&frame));
        assert!(outbox.push(&frame));
        assert_eq!(outbox.queued_bytes(), 8);
        assert_eq!(total.load(Ordering::SeqCst), 8);
        let drained = outbox.drain();
        assert_eq!(drained.frames.len(), 2);
        assert_eq!(drained.close, None);
        assert_eq!(total.load(Ordering::SeqCst), 0);
        assert!(outbox.push(&frame));
        assert!(outbox.push(&frame));
        // 12 bytes would pass the bound of 10: the outbox empties and closes.
        assert!(!outbox.push(&frame));
        assert_eq!(outbox.close_reason(), Some(CloseReason::SlowConsumer));
        assert_eq!(total.load(Ordering::SeqCst), 0);
        assert!(!outbox.push(&frame));
        let drained = outbox.drain();
        assert!(drained.frames.is_empty());
        assert_eq!(drained.close, Some(CloseReason::SlowConsumer));
        // Two batches, two wake-ups; make sure both arrived.
        addr.send(Wake).await.unwrap();
        assert_eq!(wakes.load(Ordering::SeqCst), 3);
    }
}
