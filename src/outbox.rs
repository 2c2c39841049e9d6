//! The seam between the hub and a session: a bounded queue of shared frames.
//!
//! The hub never touches a socket. It pushes encoded frames (a [`ByteString`], so a push
//! is a reference-count bump, not a copy) into each recipient's [`Outbox`], and wakes the
//! session only when the queue goes from empty to non-empty: a session that is behind
//! drains everything queued in one go, and actix-http writes those frames together. A
//! session is woken through a flag and its task's waker ([`Wakes`], a stream the session
//! polls): no allocation and no actor message per wake-up. Unit tests stand in a
//! recorder actor instead, woken with a [`Wake`] message. The queue is bounded in bytes; a push past the bound empties
//! it, marks the outbox closed as a slow consumer, and reports the failure, so the
//! hub's memory cannot grow without bound behind a client that stopped reading.

use std::pin::Pin;
use std::sync::{Arc, Mutex, MutexGuard};
use std::task::{Context as TaskContext, Poll};

use actix::prelude::*;
use bytestring::ByteString;
use futures_util::task::AtomicWaker;
use futures_util::Stream;
use smallvec::SmallVec;

use crate::error::CloseReason;

/// A drain of fewer frames than this frees the queue instead of keeping its capacity.
const KEEP_QUEUE_FROM: usize = 4;

/// Queued frames, with room for one inline: at a low message rate a session is woken
/// for every frame and drains it before the next arrives, so a push takes no allocation
/// and an idle session holds no heap block for its queue.
pub type Frames = SmallVec<[ByteString; 1]>;

/// Tells a session that its outbox has frames (or a close) waiting.
#[derive(Debug, Clone, Copy, Message)]
#[rtype(result = "()")]
pub struct Wake;

/// A session's queue of outgoing frames, shared between the hub (pushing) and the
/// session (draining).
pub struct Outbox {
    queue: Mutex<Queue>,
    /// How the session is woken.
    notify: Notify,
    /// The most bytes that may wait in the queue (one frame is always taken into an
    /// empty queue, so a frame bigger than the bound is not by itself a reason to close).
    limit: usize,
}

/// How an outbox wakes whoever drains it.
enum Notify {
    /// A real session: the waker of the task it runs in, registered by [`Wakes`].
    Waker(AtomicWaker),
    /// A stand-in (unit tests): an actor message per wake-up.
    Message(Recipient<Wake>),
}

#[derive(Default)]
struct Queue {
    frames: Frames,
    /// Sum of the queued frames' lengths, compared with the limit on every push.
    bytes: usize,
    /// A `Wake` is in flight; no need to send another until the session drains.
    woken: bool,
    /// Set when the outbox must not take more frames; the session closes with it.
    closed: Option<CloseReason>,
    /// The hub asked the session to check its client's liveness (ping, or time out).
    beat: bool,
}

/// What a session finds when it drains its outbox.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Drained {
    /// Close with this once the frames are written.
    pub close: Option<CloseReason>,
    /// Check the heartbeat now.
    pub beat: bool,
}

impl Outbox {
    /// An outbox for a session, which polls [`Wakes`] to learn when to drain it.
    pub fn new(limit: usize) -> Self {
        Outbox {
            queue: Mutex::new(Queue::default()),
            notify: Notify::Waker(AtomicWaker::new()),
            limit,
        }
    }

    /// An outbox that wakes `recipient` with a [`Wake`] message (stand-in sessions).
    pub fn with_recipient(recipient: Recipient<Wake>, limit: usize) -> Self {
        Outbox {
            queue: Mutex::new(Queue::default()),
            notify: Notify::Message(recipient),
            limit,
        }
    }

    fn notify(&self) {
        match &self.notify {
            Notify::Waker(waker) => waker.wake(),
            Notify::Message(recipient) => recipient.do_send(Wake),
        }
    }

    fn lock(&self) -> MutexGuard<'_, Queue> {
        // A panic while holding this lock cannot leave the queue inconsistent (every
        // critical section is a few field updates), so a poisoned lock is still usable.
        self.queue.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Applies `change` to the queue under the lock; if it returns true the session is
    /// to be woken, which happens after the lock is released (the session may be
    /// draining) and only if nothing has woken it since its last drain.
    fn change(&self, change: impl FnOnce(&mut Queue) -> bool) {
        let wake = {
            let mut q = self.lock();
            change(&mut q) && !std::mem::replace(&mut q.woken, true)
        };
        if wake {
            self.notify();
        }
    }

    /// Queues a frame. Returns false if the outbox is closed or the frame would pass the
    /// byte bound; in the latter case the queue is dropped and the outbox closes as a
    /// slow consumer.
    pub fn push(&self, frame: &ByteString) -> bool {
        let mut accepted = false;
        self.change(|q| {
            if q.closed.is_some() {
                return false;
            }
            accepted = q.bytes == 0 || q.bytes + frame.len() <= self.limit;
            if accepted {
                q.bytes += frame.len();
                q.frames.push(frame.clone());
            } else {
                q.frames = Frames::new();
                q.bytes = 0;
                q.closed = Some(CloseReason::SlowConsumer);
            }
            true
        });
        accepted
    }

    /// Closes the outbox: no more frames are taken, and the session closes with `reason`
    /// once it has written what is already queued.
    pub fn close(&self, reason: CloseReason) {
        self.change(|q| {
            if q.closed.is_some() {
                return false;
            }
            q.closed = Some(reason);
            true
        });
    }

    /// Moves everything queued into `out` (which must be empty), and returns the close
    /// reason if there is one and whether a heartbeat check is due. A busy outbox swaps
    /// queues with `out`, so both keep their capacity and a session that drains steadily
    /// allocates nothing; a drain of a few frames moves them and frees the queue's heap
    /// block if it has one, so a session that has gone quiet holds no queue memory once
    /// it drains again (at the latest at its next heartbeat check, which drains too). The
    /// common low-rate drain, one frame in the inline slot, allocates and frees nothing.
    pub fn drain_into(&self, out: &mut Frames) -> Drained {
        debug_assert!(out.is_empty());
        let mut q = self.lock();
        q.woken = false;
        q.bytes = 0;
        if q.frames.len() >= KEEP_QUEUE_FROM {
            std::mem::swap(&mut q.frames, out);
        } else {
            out.extend(q.frames.drain(..));
            if q.frames.spilled() {
                q.frames = Frames::new();
            }
        }
        Drained {
            close: q.closed,
            beat: std::mem::take(&mut q.beat),
        }
    }

    /// Asks the session to check its heartbeat, waking it if it is not already awake.
    pub fn heartbeat(&self) {
        self.change(|q| {
            q.beat = true;
            true
        });
    }

    /// Takes everything queued (tests and shutdown paths; sessions use `drain_into`).
    pub fn drain(&self) -> (Frames, Option<CloseReason>) {
        let mut frames = Frames::new();
        let drained = self.drain_into(&mut frames);
        (frames, drained.close)
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

/// The stream of wake-ups a session adds to its context: it yields a [`Wake`] whenever
/// the outbox has frames or a close waiting, and the session drains it in response.
pub struct Wakes(pub Arc<Outbox>);

impl Stream for Wakes {
    type Item = Wake;

    fn poll_next(self: Pin<&mut Self>, cx: &mut TaskContext<'_>) -> Poll<Option<Wake>> {
        // Register before looking, so a push between the look and the return still wakes
        // the task.
        if let Notify::Waker(waker) = &self.0.notify {
            waker.register(cx.waker());
        }
        if self.0.lock().woken {
            Poll::Ready(Some(Wake))
        } else {
            Poll::Pending
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::sync::Arc;

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
        let addr = Counter(wakes.clone()).start();
        let outbox = Outbox::with_recipient(addr.clone().recipient(), 10);
        let frame = ByteString::from_static("abcd");
        assert!(outbox.push(&frame));
        assert!(outbox.push(&frame));
        assert_eq!(outbox.queued_bytes(), 8);
        let mut out = Frames::new();
        assert_eq!(outbox.drain_into(&mut out).close, None);
        assert_eq!(out.len(), 2);
        assert_eq!(outbox.queued_bytes(), 0);
        out.clear();
        assert!(outbox.push(&frame));
        assert!(outbox.push(&frame));
        // 12 bytes would pass the bound of 10: the outbox empties and closes.
        assert!(!outbox.push(&frame));
        assert_eq!(outbox.close_reason(), Some(CloseReason::SlowConsumer));
        assert_eq!(outbox.queued_bytes(), 0);
        assert!(!outbox.push(&frame));
        let (frames, close) = outbox.drain();
        assert!(frames.is_empty());
        assert_eq!(close, Some(CloseReason::SlowConsumer));
        // Two batches, two wake-ups; the probe `send` below makes it three once both
        // wake-ups have been handled.
        addr.send(Wake).await.unwrap();
        assert_eq!(wakes.load(Ordering::SeqCst), 3);
    }

    #[actix::test]
    async fn small_drains_free_the_queue_and_busy_ones_keep_it() {
        let addr = Counter(Arc::new(AtomicUsize::new(0))).start();
        let outbox = Outbox::with_recipient(addr.recipient(), 1000);
        let frames: Vec<ByteString> = (0..6).map(|i| ByteString::from(i.to_string())).collect();
        let mut out = Frames::new();
        // One frame stays in the inline slot: nothing on the heap, before or after.
        outbox.push(&frames[0]);
        assert!(!outbox.lock().frames.spilled());
        outbox.drain_into(&mut out);
        assert_eq!(out.as_slice(), &frames[..1]);
        out.clear();
        // A few frames spill to the heap; draining them frees it, whatever buffer the
        // session drains into (a swap would leave the outbox with `out`'s big one).
        out.grow(16);
        for f in &frames[..3] {
            outbox.push(f);
        }
        assert!(outbox.lock().frames.spilled());
        outbox.drain_into(&mut out);
        assert_eq!(out.as_slice(), &frames[..3]);
        assert!(!outbox.lock().frames.spilled());
        assert!(out.capacity() >= 16);
        out.clear();
        // A busy drain swaps: the frames arrive in order, and the outbox gets `out`'s
        // buffer back, capacity and all.
        out.grow(16);
        for f in &frames {
            outbox.push(f);
        }
        outbox.drain_into(&mut out);
        assert_eq!(out.as_slice(), &frames[..]);
        assert!(outbox.lock().frames.capacity() >= 16);
    }

    #[actix::test]
    async fn an_empty_outbox_takes_one_frame_bigger_than_the_bound() {
        let addr = Counter(Arc::new(AtomicUsize::new(0))).start();
        let outbox = Outbox::with_recipient(addr.recipient(), 10);
        assert!(outbox.push(&ByteString::from("x".repeat(50))));
        assert!(!outbox.push(&ByteString::from_static("y")));
        assert_eq!(outbox.close_reason(), Some(CloseReason::SlowConsumer));
    }
}

#[cfg(test)]
mod wake_tests {
    use futures_util::{FutureExt, StreamExt};

    use super::*;

    #[actix::test]
    async fn the_stream_yields_when_something_is_queued() {
        let outbox = Arc::new(Outbox::new(100));
        let mut wakes = Wakes(outbox.clone());
        let pusher = outbox.clone();
        let push = actix::spawn(async move {
            pusher.push(&ByteString::from_static("hi"));
        });
        // The stream is pending until the push, then yields; after a drain it is pending.
        assert!(matches!(wakes.next().await, Some(Wake)));
        push.await.unwrap();
        let (frames, _) = outbox.drain();
        assert_eq!(frames.len(), 1);
        assert!(wakes.next().now_or_never().is_none(), "nothing to drain");
        outbox.close(CloseReason::Shutdown);
        assert!(matches!(wakes.next().await, Some(Wake)));
    }
}
