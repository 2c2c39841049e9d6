//! The seam between the hub and a session: a bounded queue of shared frames.
//!
//! The hub never touches a socket. It pushes encoded frames (a [`ByteString`], so a push
//! is a reference-count bump, not a copy) into each recipient's [`Outbox`], and wakes the
//! session only when the queue goes from empty to non-empty: a session that is behind
//! drains everything queued in one go, and actix-http writes those frames together. A
//! session is woken through a flag and its task's waker ([`Wakes`], a stream the session
//! polls): no allocation and no actor message per wake-up. In a fan-out to many sessions
//! the hub does not wake them from its own thread: it collects their wakers in a
//! [`WakeBatch`] and hands them over a chunk at a time to their thread's [`WakeSink`],
//! where a small task wakes them, so a wake-up is a push onto that thread's own run queue
//! instead of a locked push onto its shared one from the other core (a few wake-ups, and
//! sessions not bound to a thread with [`Outbox::bind_to_this_thread`], are still woken
//! directly). Unit tests stand in a recorder actor instead, woken with a [`Wake`] message.
//!
//! The queue is bounded in bytes; a push past the bound empties it, marks the outbox
//! closed as a slow consumer, and reports the failure, so the hub's memory cannot grow
//! without bound behind a client that stopped reading.

use std::cell::RefCell;
use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex, MutexGuard, OnceLock};
use std::task::{Context as TaskContext, Poll, Waker};

use actix::prelude::*;
use bytestring::ByteString;
use futures_util::task::AtomicWaker;
use futures_util::Stream;
use smallvec::SmallVec;

use crate::error::CloseReason;

/// A drain of fewer frames than this frees the queue instead of keeping its capacity.
const KEEP_QUEUE_FROM: usize = 4;

/// Wakers a [`WakeBatch`] collects for one thread before handing them over: small enough
/// that the first sessions of a big fan-out start writing while the hub is still
/// pushing, big enough that the hand-over (a lock, a wake-up of the thread's task) is
/// paid once for many sessions.
const WAKE_CHUNK: usize = 64;

/// A flush with fewer wakers than this for a thread wakes those sessions directly: for a
/// direct message or a small group, handing over would cost the session's thread an
/// extra task poll to save the hub a few wake-ups.
const HAND_OVER_FROM: usize = 8;

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
    /// The session thread's [`WakeSink`], set by [`Outbox::bind_to_this_thread`]; without
    /// it (and for stand-ins) a batched push wakes the session directly.
    sink: OnceLock<Arc<WakeSink>>,
    /// The most bytes that may wait in the queue (one frame is always taken into an
    /// empty queue, so a frame bigger than the bound is not by itself a reason to close).
    limit: usize,
    /// The close frame's reason text, when not the reason's own (the server API's).
    /// Outside the queue: the queue is what every push touches, and it stays in one
    /// cache line.
    note: OnceLock<Arc<str>>,
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
            sink: OnceLock::new(),
            limit,
            note: OnceLock::new(),
        }
    }

    /// An outbox that wakes `recipient` with a [`Wake`] message (stand-in sessions).
    pub fn with_recipient(recipient: Recipient<Wake>, limit: usize) -> Self {
        Outbox {
            queue: Mutex::new(Queue::default()),
            notify: Notify::Message(recipient),
            sink: OnceLock::new(),
            limit,
            note: OnceLock::new(),
        }
    }

    /// Lets fan-outs hand this outbox's wake-ups to the current thread, where the session
    /// that drains it runs (see [`WakeBatch`]). Call it from the session's thread, inside
    /// its actix runtime: the thread's first call starts the task that does the waking.
    pub fn bind_to_this_thread(&self) {
        if let Notify::Waker(_) = self.notify {
            self.sink.get_or_init(thread_sink);
        }
    }

    /// Wakes the session: now, or through `batch` when there is one and the session's
    /// thread has a [`WakeSink`].
    fn notify(&self, batch: Option<&mut WakeBatch>) {
        match (&self.notify, batch, self.sink.get()) {
            (Notify::Waker(waker), Some(batch), Some(sink)) => {
                if let Some(waker) = waker.take() {
                    batch.add(sink, waker);
                }
            }
            (Notify::Waker(waker), _, _) => waker.wake(),
            (Notify::Message(recipient), _, _) => recipient.do_send(Wake),
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
    fn change(&self, batch: Option<&mut WakeBatch>, change: impl FnOnce(&mut Queue) -> bool) {
        let wake = {
            let mut q = self.lock();
            change(&mut q) && !std::mem::replace(&mut q.woken, true)
        };
        if wake {
            self.notify(batch);
        }
    }

    /// Queues a frame. Returns false if the outbox is closed or the frame would pass the
    /// byte bound; in the latter case the queue is dropped and the outbox closes as a
    /// slow consumer.
    pub fn push(&self, frame: &ByteString) -> bool {
        self.push_in(frame, None)
    }

    /// [`Outbox::push`] for one recipient of a fan-out: the wake-up, if one is due, goes
    /// into `batch`, which hands it to the session's thread (at the latest when the
    /// batch is flushed or dropped).
    pub fn push_batched(&self, frame: &ByteString, batch: &mut WakeBatch) -> bool {
        self.push_in(frame, Some(batch))
    }

    fn push_in(&self, frame: &ByteString, batch: Option<&mut WakeBatch>) -> bool {
        let mut accepted = false;
        self.change(batch, |q| {
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
        self.change(None, |q| {
            if q.closed.is_some() {
                return false;
            }
            q.closed = Some(reason);
            true
        });
    }

    /// Closes as [`Outbox::close`] does, with `note` as the close frame's reason text.
    pub fn close_with_note(&self, reason: CloseReason, note: Arc<str>) {
        // Set before the close, so the session finds it when it sees the close.
        let _ = self.note.set(note);
        self.close(reason);
    }

    /// The reason text given with the close, if any.
    pub fn close_note(&self) -> Option<Arc<str>> {
        self.note.get().cloned()
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

    /// Asks the session to check its heartbeat, waking it (through `batch`, as a fan-out
    /// does) if it is not already awake.
    pub fn heartbeat(&self, batch: &mut WakeBatch) {
        self.change(Some(batch), |q| {
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

/// Wake-ups due after pushes into many outboxes, collected per session thread and handed
/// to that thread's [`WakeSink`] a chunk at a time. The hub keeps one and reuses it, so a
/// fan-out allocates nothing for its wake-ups once the buffers have grown; what is still
/// collected when it is flushed or dropped is handed over then, so no wake-up is lost.
#[derive(Default)]
pub struct WakeBatch {
    /// One entry per session thread seen so far: a handful, one per worker thread, and
    /// those live as long as the server.
    threads: Vec<(Arc<WakeSink>, Vec<Waker>)>,
}

impl WakeBatch {
    fn add(&mut self, sink: &Arc<WakeSink>, waker: Waker) {
        let i = match self.threads.iter().position(|(s, _)| Arc::ptr_eq(s, sink)) {
            Some(i) => i,
            None => {
                self.threads
                    .push((sink.clone(), Vec::with_capacity(WAKE_CHUNK)));
                self.threads.len() - 1
            }
        };
        let (sink, wakers) = &mut self.threads[i];
        wakers.push(waker);
        if wakers.len() >= WAKE_CHUNK {
            sink.hand_over(wakers);
        }
    }

    /// Hands every collected wake-up to its thread (a few are woken from here), and
    /// forgets threads whose runtime has ended.
    pub fn flush(&mut self) {
        self.threads.retain_mut(|(sink, wakers)| {
            if wakers.len() >= HAND_OVER_FROM {
                sink.hand_over(wakers)
            } else {
                wakers.drain(..).for_each(Waker::wake);
                true
            }
        });
    }
}

impl Drop for WakeBatch {
    fn drop(&mut self) {
        self.flush();
    }
}

/// Where a session thread receives the wake-ups of a fan-out: the hub appends wakers,
/// and a task on the thread (`WakeTask`) takes them and wakes each session there. One
/// per thread that runs sessions, made when the first outbox there is bound to it.
#[derive(Default)]
pub struct WakeSink {
    pending: Mutex<Pending>,
    /// The thread's [`WakeTask`].
    task: AtomicWaker,
}

#[derive(Default)]
struct Pending {
    wakers: Vec<Waker>,
    /// The task is gone (its thread's runtime ended): wake directly instead.
    closed: bool,
}

impl WakeSink {
    fn lock(&self) -> MutexGuard<'_, Pending> {
        // Every critical section moves wakers or sets a flag; a poisoned lock is fine.
        self.pending.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Moves `wakers` to the thread (leaving the vector empty, its capacity kept) and
    /// wakes the thread's task; if the task is gone, wakes the sessions from here.
    /// Returns whether the task is still there.
    fn hand_over(&self, wakers: &mut Vec<Waker>) -> bool {
        let closed = {
            let mut p = self.lock();
            if !p.closed {
                p.wakers.append(wakers);
            }
            p.closed
        };
        if closed {
            wakers.drain(..).for_each(Waker::wake);
        } else {
            self.task.wake();
        }
        !closed
    }

    fn is_closed(&self) -> bool {
        self.lock().closed
    }
}

thread_local! {
    /// This thread's sink, once an outbox has been bound to the thread.
    static THREAD_SINK: RefCell<Option<Arc<WakeSink>>> = const { RefCell::new(None) };
}

/// The current thread's sink, made (with its task) on first use, and made again if the
/// runtime that ran the previous one has ended. Needs a running actix runtime (the task
/// is spawned on it), and assumes one runtime per thread at a time, as actix runs its
/// workers: with two on one thread, the idle one's task would not run.
fn thread_sink() -> Arc<WakeSink> {
    THREAD_SINK.with_borrow_mut(|slot| {
        if let Some(sink) = slot.as_ref().filter(|s| !s.is_closed()) {
            return sink.clone();
        }
        let sink = Arc::new(WakeSink::default());
        actix::spawn(WakeTask {
            sink: sink.clone(),
            waking: Vec::new(),
        });
        *slot = Some(sink.clone());
        sink
    })
}

/// The task that wakes a thread's sessions for the hub: it swaps out what was handed
/// over and wakes each session, which on this thread is a push onto the local run queue.
struct WakeTask {
    sink: Arc<WakeSink>,
    /// The other half of the swap, so that neither side allocates once both have grown.
    waking: Vec<Waker>,
}

impl Future for WakeTask {
    type Output = ();

    fn poll(mut self: Pin<&mut Self>, cx: &mut TaskContext<'_>) -> Poll<()> {
        let this = &mut *self;
        // Register before taking, so that a hand-over after the take wakes the task again.
        this.sink.task.register(cx.waker());
        std::mem::swap(&mut this.sink.lock().wakers, &mut this.waking);
        this.waking.drain(..).for_each(Waker::wake);
        Poll::Pending
    }
}

impl Drop for WakeTask {
    /// The thread's runtime is ending: from now on sessions are woken directly, and
    /// whatever was handed over is woken now.
    fn drop(&mut self) {
        let left = {
            let mut p = self.sink.lock();
            p.closed = true;
            std::mem::take(&mut p.wakers)
        };
        left.into_iter().for_each(Waker::wake);
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
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::time::Duration;

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

    /// `n` outboxes bound to this thread, each with a task that waits for its next
    /// wake-up as a session does; the counter says how many have been woken.
    async fn waiting_sessions(n: usize) -> (Vec<Arc<Outbox>>, Arc<AtomicUsize>) {
        let woken = Arc::new(AtomicUsize::new(0));
        let outboxes: Vec<_> = (0..n).map(|_| Arc::new(Outbox::new(100))).collect();
        for outbox in &outboxes {
            outbox.bind_to_this_thread();
            let (mut wakes, woken) = (Wakes(outbox.clone()), woken.clone());
            actix::spawn(async move {
                wakes.next().await;
                woken.fetch_add(1, Ordering::SeqCst);
            });
        }
        // Let them register their wakers.
        settle().await;
        (outboxes, woken)
    }

    /// Waits (yielding to the thread's other tasks) until `n` sessions have been woken.
    async fn until_woken(woken: &AtomicUsize, n: usize) {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
        while woken.load(Ordering::SeqCst) < n {
            let now = woken.load(Ordering::SeqCst);
            assert!(
                tokio::time::Instant::now() < deadline,
                "{now} of {n} sessions woken"
            );
            tokio::task::yield_now().await;
        }
    }

    #[actix::test]
    async fn a_fan_out_hands_its_wake_ups_to_the_sessions_thread() {
        let n = HAND_OVER_FROM + 2;
        let (outboxes, woken) = waiting_sessions(n).await;
        let sink = outboxes[0].sink.get().expect("bound").clone();
        let mut batch = WakeBatch::default();
        for outbox in &outboxes {
            assert!(outbox.push_batched(&ByteString::from_static("hi"), &mut batch));
        }
        settle().await;
        let early = woken.load(Ordering::SeqCst);
        assert_eq!(early, 0, "the wake-ups wait in the batch");
        batch.flush();
        let handed = sink.lock().wakers.len();
        assert_eq!(handed, n, "handed to the thread, not woken here");
        until_woken(&woken, n).await;
        assert!(sink.lock().wakers.is_empty());
        for outbox in &outboxes {
            assert_eq!(outbox.drain().0.len(), 1);
        }
    }

    #[actix::test]
    async fn a_fan_out_from_another_thread_wakes_every_session() {
        // Past one chunk, so that hand-overs happen during the fan-out and at its end.
        let n = WAKE_CHUNK * 2 + HAND_OVER_FROM + 1;
        let (outboxes, woken) = waiting_sessions(n).await;
        let hub = {
            let outboxes = outboxes.clone();
            std::thread::spawn(move || {
                let mut batch = WakeBatch::default();
                let frame = ByteString::from_static("hi");
                let all = outboxes.iter().all(|o| o.push_batched(&frame, &mut batch));
                batch.flush();
                all
            })
        };
        until_woken(&woken, n).await;
        assert!(hub.join().expect("the pushing thread"));
        for outbox in &outboxes {
            assert_eq!(outbox.drain().0.len(), 1);
        }
    }

    #[actix::test]
    async fn heartbeat_checks_are_handed_over_like_deliveries() {
        let n = HAND_OVER_FROM;
        let (outboxes, woken) = waiting_sessions(n).await;
        let sink = outboxes[0].sink.get().expect("bound").clone();
        let mut batch = WakeBatch::default();
        for outbox in &outboxes {
            outbox.heartbeat(&mut batch);
        }
        settle().await;
        assert_eq!(woken.load(Ordering::SeqCst), 0, "held in the batch");
        batch.flush();
        assert_eq!(sink.lock().wakers.len(), n, "handed to the thread");
        until_woken(&woken, n).await;
        assert!(outboxes
            .iter()
            .all(|o| o.drain_into(&mut Frames::new()).beat));
    }

    #[actix::test]
    async fn a_few_wake_ups_are_done_directly_even_from_a_dropped_batch() {
        let (outboxes, woken) = waiting_sessions(1).await;
        let sink = outboxes[0].sink.get().expect("bound").clone();
        let mut batch = WakeBatch::default();
        outboxes[0].push_batched(&ByteString::from_static("hi"), &mut batch);
        drop(batch);
        assert!(sink.lock().wakers.is_empty(), "not handed over");
        until_woken(&woken, 1).await;
    }

    #[actix::test]
    async fn an_unbound_outbox_is_woken_directly() {
        let outbox = Arc::new(Outbox::new(100));
        let mut wakes = Wakes(outbox.clone());
        let session = actix::spawn(async move { wakes.next().await.is_some() });
        settle().await;
        assert!(outbox.sink.get().is_none(), "polling does not bind");
        let mut batch = WakeBatch::default();
        for _ in 0..HAND_OVER_FROM {
            outbox.push_batched(&ByteString::from_static("hi"), &mut batch);
        }
        // Nothing was collected: the first push woke the session itself.
        assert!(batch.threads.is_empty());
        let woken = tokio::time::timeout(Duration::from_secs(5), session).await;
        assert!(woken.expect("woken").expect("the task"));
    }

    #[test]
    fn a_sink_whose_task_is_gone_wakes_directly() {
        let sink = Arc::new(WakeSink::default());
        drop(WakeTask {
            sink: sink.clone(),
            waking: Vec::new(),
        });
        assert!(sink.is_closed());
        let count = Arc::new(Count::default());
        let mut wakers = vec![Waker::from(count.clone()), Waker::from(count.clone())];
        sink.hand_over(&mut wakers);
        assert_eq!(count.0.load(Ordering::SeqCst), 2);
        assert!(
            sink.lock().wakers.is_empty(),
            "nothing left for a task that is gone"
        );
    }

    #[test]
    fn a_thread_gets_a_new_sink_when_its_runtime_has_ended() {
        let first = actix::System::new().block_on(async { thread_sink() });
        // The runtime is gone, and its task with it.
        assert!(first.is_closed());
        let second = actix::System::new().block_on(async {
            let sink = thread_sink();
            assert!(Arc::ptr_eq(&sink, &thread_sink()), "one sink per thread");
            sink
        });
        assert!(!Arc::ptr_eq(&first, &second));
    }

    /// Counts wake-ups.
    #[derive(Default)]
    struct Count(AtomicUsize);
    impl std::task::Wake for Count {
        fn wake(self: Arc<Self>) {
            self.0.fetch_add(1, Ordering::SeqCst);
        }
    }

    /// Lets every task that can run on this thread run (a few rounds of yielding).
    async fn settle() {
        for _ in 0..16 {
            tokio::task::yield_now().await;
        }
    }
}
