//! Routing micro-benchmark: what the hub spends to deliver one group message to 10,000
//! members, with stand-in recipients and no sockets.
//!
//! `cargo bench --bench routing` first prints a summary (ns per delivery and heap
//! allocations per publish, counted by the global allocator below), then runs the
//! Criterion groups:
//! - `pool/publish_cold/N`: what the hub's `Publish` handler does (encode the event once,
//!   push the shared frame into every member's [`Outbox`], collecting the wake-ups in a
//!   [`WakeBatch`] that hands them to the sessions' thread in chunks), when every outbox
//!   is empty, so every push also wakes that member's session: the steady state at a low
//!   message rate. The stand-in sessions are woken the way sessions are: one actor per
//!   member polls its outbox's [`Wakes`] stream (`ctx.add_stream`, a flag and the task's
//!   waker, no allocation) and on every wake-up drains the outbox into a reused buffer,
//!   on another thread, as sessions live on the worker thread. Every outbox has been
//!   drained (and the sessions' thread is idle) before each timed publish, so every push
//!   must wake its session again. Timed is the hub's side; the wake-ups themselves then
//!   run on the sessions' thread (the summary's "until drained" lines time both).
//! - `pool/publish_cold_direct/N`: the same with each wake-up done by the pushing thread
//!   itself (`Outbox::push`, the path before `WakeBatch`): the sessions' tasks are
//!   scheduled from the other core, a locked push onto their thread's shared run queue.
//! - `pool/publish_cold_message/N`: the same with the former wake-up, an actor message
//!   (`Wake`) per push to a stand-in built with `Outbox::with_recipient` (what the unit
//!   tests still use); those outboxes are drained from this thread, untimed. For
//!   comparison with the waker path.
//! - `pool/publish_queued/N`: the same when every outbox already holds frames and its
//!   session has been woken: no wake-up at all, the steady state at saturation.
//! - `hub/publish_cold/10000`: the whole `Publish` message through the `Hub` actor, to
//!   waker-woken stand-in sessions as in `pool/publish_cold`.
//! - `wake/do_send/10000` and `wake/atomic_waker/10000`: only the wake-ups, 10,000 of
//!   them: an actor message per session against setting a flag and waking the session's
//!   task directly (an `AtomicWaker`, what [`Wakes`] does), each to 10,000 tasks on the
//!   other thread.
//!
//! The summary also times one member's arrival in and departure from a group of 1k, 10k
//! and 15k members (join, subscribe, the presence look-up, disconnect): it must not grow
//! with the group when nobody watches presence.
//!
//! Throughput is reported in elements (deliveries): ns per delivery = 1e9 / elem/s.
//!
//! The summary also checks that the fan-out allocates nothing per recipient on the hub's
//! thread ([`check_fan_out`]): a publish's allocations must not grow with the group. A
//! regression panics, and so fails `cargo test --all-targets` too, which runs this
//! benchmark in Criterion's test mode (each benchmark once, and a short summary).

use std::alloc::{GlobalAlloc, Layout, System as SystemAlloc};
use std::cell::{Cell, RefCell};
use std::future::poll_fn;
use std::hint::black_box;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::task::Poll;
use std::time::{Duration, Instant};

use actix::prelude::*;
use bytestring::ByteString;
use criterion::{BenchmarkId, Criterion, Throughput};
use futures_util::task::AtomicWaker;
use serde_json::value::RawValue;

use wxhub::auth::Grant;
use wxhub::hub::{Caller, Connect, Hub, HubConfig, Join, Publish, Subscribe};
use wxhub::outbox::{Frames, Outbox, Wake, WakeBatch, Wakes};
use wxhub::pool::{Pool, SessionId};
use wxhub::protocol::{encode, now_ms, Body, Event, Kind};

// ---------------------------------------------------------------------------------
// Counting allocator: allocations made by the current thread (the "hub" thread here).

struct Counting;

thread_local! {
    static ALLOCS: Cell<u64> = const { Cell::new(0) };
    static BYTES: Cell<u64> = const { Cell::new(0) };
}

fn count(size: usize) {
    let _ = ALLOCS.try_with(|c| c.set(c.get() + 1));
    let _ = BYTES.try_with(|c| c.set(c.get() + size as u64));
}

// SAFETY: forwards every call to the system allocator unchanged; only counts.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, l: Layout) -> *mut u8 {
        count(l.size());
        SystemAlloc.alloc(l)
    }
    unsafe fn alloc_zeroed(&self, l: Layout) -> *mut u8 {
        count(l.size());
        SystemAlloc.alloc_zeroed(l)
    }
    unsafe fn realloc(&self, p: *mut u8, l: Layout, new: usize) -> *mut u8 {
        count(new);
        SystemAlloc.realloc(p, l, new)
    }
    unsafe fn dealloc(&self, p: *mut u8, l: Layout) {
        SystemAlloc.dealloc(p, l)
    }
}

#[global_allocator]
static GLOBAL: Counting = Counting;

fn allocs() -> (u64, u64) {
    (ALLOCS.with(Cell::get), BYTES.with(Cell::get))
}

/// Runs `reps` rounds of an untimed `setup(round)` then a timed `run()`; returns the
/// total time of the runs and the allocations (count, bytes) they made on this thread.
fn repeat<R>(
    reps: u64,
    mut setup: impl FnMut(u64),
    mut run: impl FnMut() -> R,
) -> (Duration, u64, u64) {
    let (mut time, mut count, mut bytes) = (Duration::ZERO, 0, 0);
    for r in 0..reps {
        setup(r);
        let (a0, b0) = allocs();
        let start = Instant::now();
        black_box(run());
        time += start.elapsed();
        let (a1, b1) = allocs();
        count += a1 - a0;
        bytes += b1 - b0;
    }
    (time, count, bytes)
}

// ---------------------------------------------------------------------------------
// Stand-in sessions.

/// A stand-in session, woken the way a session is: it adds its outbox's [`Wakes`] to its
/// context and on every wake-up drains the outbox into a reused buffer (dropping the
/// frames instead of writing them), so the next push has to wake it again.
struct Drainer {
    outbox: Arc<Outbox>,
    writing: Frames,
}
impl Actor for Drainer {
    type Context = Context<Self>;
    fn started(&mut self, ctx: &mut Context<Self>) {
        self.outbox.bind_to_this_thread();
        ctx.add_stream(Wakes(self.outbox.clone()));
    }
}
impl StreamHandler<Wake> for Drainer {
    fn handle(&mut self, _: Wake, _: &mut Context<Self>) {
        black_box(self.outbox.drain_into(&mut self.writing));
        self.writing.clear();
    }
}

/// Takes `Wake` messages and does nothing (the message-woken stand-in, and the target of
/// `wake/do_send`); its outbox is drained from the benchmark's thread.
struct Sink;
impl Actor for Sink {
    type Context = Context<Self>;
}
impl Handler<Wake> for Sink {
    type Result = ();
    fn handle(&mut self, _: Wake, _: &mut Context<Self>) {}
}

const LIMIT: usize = 1 << 20;
const GROUP: &str = "bench";

/// `n` members' outboxes, each drained by its own [`Drainer`] running on `arbiter`.
fn session_outboxes(n: usize, arbiter: &ArbiterHandle) -> Vec<Arc<Outbox>> {
    (0..n)
        .map(|_| {
            let outbox = Arc::new(Outbox::new(LIMIT));
            let ob = outbox.clone();
            Drainer::start_in_arbiter(arbiter, move |_| Drainer {
                outbox: ob,
                writing: Frames::new(),
            });
            outbox
        })
        .collect()
}

/// `n` members' outboxes that wake a [`Sink`] on `arbiter` with a `Wake` message.
fn message_outboxes(n: usize, arbiter: &ArbiterHandle) -> Vec<Arc<Outbox>> {
    (0..n)
        .map(|_| {
            let addr = Sink::start_in_arbiter(arbiter, |_| Sink);
            Arc::new(Outbox::with_recipient(addr.recipient(), LIMIT))
        })
        .collect()
}

/// A pool of `n` joined members of `GROUP`.
fn pool(boxes: &[Arc<Outbox>]) -> Pool {
    let mut pool = Pool::new(100);
    for (i, ob) in boxes.iter().enumerate() {
        let id = i as SessionId;
        pool.connect(id, ob.clone());
        pool.join(id, &format!("user{i}"), Grant::all())
            .expect("join");
        pool.subscribe(id, GROUP, false).expect("subscribe");
    }
    pool
}

/// A body as the session hands it to the hub: the client's raw JSON.
fn body() -> Body {
    RawValue::from_string(r#"{"text":"hello room","n":12345}"#.to_string()).expect("JSON")
}

thread_local! {
    /// The hub keeps one batch and reuses it; so does the benchmark's "hub" thread.
    static WAKES: RefCell<WakeBatch> = RefCell::new(WakeBatch::default());
}

/// What the `Publish` handler does for a group: encode once, push to every member,
/// the wake-ups collected and handed to the sessions' thread.
fn publish(pool: &Pool, from: &str, body: &RawValue) -> usize {
    fan_out(pool, from, body, false)
}

/// Encodes once and pushes to every member; `direct`: each push wakes its session from
/// this thread (`Outbox::push`, the path before `WakeBatch`).
fn fan_out(pool: &Pool, from: &str, body: &RawValue, direct: bool) -> usize {
    let frame = encode(&Event::Message {
        kind: Kind::Group,
        from,
        to: None,
        group: Some(GROUP),
        mid: None,
        offset: None,
        body,
        ts: now_ms(),
    });
    let group = pool.group(GROUP).expect("the group");
    let mut delivered = 0;
    if direct {
        for (_, ob) in group.outboxes() {
            delivered += usize::from(ob.push(&frame));
        }
    } else {
        WAKES.with_borrow_mut(|wakes| {
            for (_, ob) in group.outboxes() {
                delivered += usize::from(ob.push_batched(&frame, wakes));
            }
            wakes.flush();
        });
    }
    delivered
}

thread_local! {
    /// What [`drain_all`] drains into: kept, as a session thread keeps its buffer, so that
    /// outboxes swapping queues with it keep their capacity.
    static DRAINED: RefCell<Frames> = RefCell::new(Frames::new());
}

/// Empties every outbox the way sessions do, through one reused buffer (sessions share
/// one per thread); untimed in every measurement.
fn drain_all(boxes: &[Arc<Outbox>]) {
    DRAINED.with_borrow_mut(|buf| {
        for ob in boxes {
            black_box(ob.drain_into(buf));
            buf.clear();
        }
    });
}

/// Pushes one frame into every outbox so that each is woken and non-empty.
fn prime(boxes: &[Arc<Outbox>]) {
    let f = ByteString::from_static("{}");
    for ob in boxes {
        ob.push(&f);
    }
}

/// Waits until the stand-in sessions have drained every outbox (they do it on their own
/// thread, woken by the pushes) and their thread has run everything sent to it: the next
/// push into each outbox must wake its session again. Untimed in every measurement.
fn settle(boxes: &[Arc<Outbox>], arbiter: &ArbiterHandle) {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        quiesce(arbiter);
        // Every frame has a length, so no bytes queued means drained (and not woken).
        if boxes.iter().all(|ob| ob.queued_bytes() == 0) {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "the stand-in sessions stopped draining"
        );
    }
}

/// What a cold measurement times.
#[derive(Clone, Copy, PartialEq)]
enum Timed {
    /// The publish only; waiting for the sessions to drain is untimed (they start draining
    /// on their thread while the publish is still pushing, as they would in the hub).
    HubSide,
    /// From the first push until every stand-in has drained its outbox: the hub's side and
    /// the sessions' wake-ups together (plus a round trip to see that they are done).
    UntilDrained,
}

/// Times `reps` cold publishes to waker-woken sessions, each into outboxes that the
/// sessions have drained; `direct` as in [`fan_out`].
fn time_cold(
    pool: &Pool,
    boxes: &[Arc<Outbox>],
    arbiter: &ArbiterHandle,
    reps: u64,
    direct: bool,
    timed: Timed,
) -> (Duration, u64, u64) {
    let body = body();
    settle(boxes, arbiter);
    let result = repeat(
        reps,
        |_| {
            if timed == Timed::HubSide {
                settle(boxes, arbiter)
            }
        },
        || {
            fan_out(pool, "publisher", &body, direct);
            if timed == Timed::UntilDrained {
                settle(boxes, arbiter)
            }
        },
    );
    settle(boxes, arbiter);
    result
}

/// Times `reps` cold publishes to message-woken stand-ins (outboxes drained between them
/// from this thread, untimed).
fn time_cold_message(pool: &Pool, boxes: &[Arc<Outbox>], reps: u64) -> (Duration, u64, u64) {
    let body = body();
    let timed = repeat(
        reps,
        |_| drain_all(boxes),
        || publish(pool, "publisher", &body),
    );
    drain_all(boxes);
    timed
}

/// Publishes between two drains in [`time_queued`]: queues hold up to one more frame.
const QUEUED_ROUND: u64 = 64;

/// Times `reps` publishes into outboxes that are already woken.
fn time_queued(pool: &Pool, boxes: &[Arc<Outbox>], reps: u64) -> (Duration, u64, u64) {
    let body = body();
    // Untimed, one round to grow every queue to what a round needs: a drain of a few
    // frames (as the cold cases leave) frees an outbox's queue, and regrowing them all
    // would be counted as the fan-out's. A drain of a full round keeps it (the outbox
    // swaps queues with the drain's buffer).
    drain_all(boxes);
    prime(boxes);
    for _ in 0..QUEUED_ROUND {
        publish(pool, "warmup", &body);
    }
    drain_all(boxes);
    prime(boxes);
    let timed = repeat(
        reps,
        |r| {
            if r % QUEUED_ROUND == QUEUED_ROUND - 1 {
                // Stay far below the 1 MiB bound; the session would have drained by now.
                drain_all(boxes);
                prime(boxes);
            }
        },
        || publish(pool, "publisher", &body),
    );
    drain_all(boxes);
    timed
}

/// A `Hub` actor on this thread with `n` members and one publisher (session `n`).
struct HubRig {
    hub: Addr<Hub>,
    boxes: Vec<Arc<Outbox>>,
    publisher: SessionId,
}

fn hub_rig(sys: &SystemRunner, arbiter: &ArbiterHandle, n: usize) -> HubRig {
    let boxes = session_outboxes(n + 1, arbiter);
    let hub = sys.block_on(async {
        let hub = Hub::new(HubConfig {
            max_groups: 100,
            // Every message is kept, as by default, but in a short ring: it reaches its
            // steady size in the warm-up below.
            policies: wxhub::policy::Policies::standard().with_default_retention(
                wxhub::history::Retention {
                    size: WARM_UP,
                    ttl: Duration::from_secs(300),
                },
            ),
            feeds: Vec::new(),
            heartbeat: None,
            mailbox: wxhub::hub::DEFAULT_MAILBOX,
            recall: Default::default(),
        })
        .start();
        for (i, ob) in boxes.iter().enumerate() {
            let caller = Caller::new(i as SessionId, None);
            hub.do_send(Connect {
                session: i as SessionId,
                outbox: ob.clone(),
            });
            hub.do_send(Join {
                caller: caller.clone(),
                name: format!("user{i}"),
                classic: false,
                grant: Grant::all(),
                since: None,
            });
            if i < n {
                hub.do_send(Subscribe {
                    caller,
                    group: GROUP.into(),
                    presence: false,
                    since: None,
                });
            }
        }
        hub
    });
    // Let the hub handle all of that, then forget the replies.
    sys.block_on(hub.send(wxhub::hub::GetStats)).expect("stats");
    settle(&boxes, arbiter);
    let rig = HubRig {
        hub,
        boxes,
        publisher: n as SessionId,
    };
    // As for the pool rigs: the steady state, where no queue has to grow. The history's
    // hub-wide queue grows to about a thousand entries before it is first compacted:
    // filled through a group nobody is in, which costs no fan-out.
    for _ in 0..1100 {
        sys.block_on(rig.hub.send(Publish {
            caller: Caller::new(rig.publisher, None),
            group: "warm-up".into(),
            body: body(),
            mid: None,
        }))
        .expect("publish");
    }
    for _ in 0..=WARM_UP {
        hub_publish(sys, &rig);
        settle(&rig.boxes, arbiter);
    }
    rig
}

/// Messages the hub rig's groups keep, and publishes to reach that steady state.
const WARM_UP: usize = 8;

fn hub_publish(sys: &SystemRunner, rig: &HubRig) {
    sys.block_on(rig.hub.send(Publish {
        caller: Caller::new(rig.publisher, None),
        group: GROUP.into(),
        body: body(),
        mid: None,
    }))
    .expect("publish");
}

fn time_hub_cold(
    sys: &SystemRunner,
    rig: &HubRig,
    arbiter: &ArbiterHandle,
    reps: u64,
) -> (Duration, u64, u64) {
    let timed = repeat(
        reps,
        |_| settle(&rig.boxes, arbiter),
        || hub_publish(sys, rig),
    );
    settle(&rig.boxes, arbiter);
    timed
}

/// A wake-up that is not an actor message: a flag and the waiting task's waker.
#[derive(Default)]
struct Flag {
    set: AtomicBool,
    waker: AtomicWaker,
}

impl Flag {
    fn wake(&self) {
        if !self.set.swap(true, Ordering::AcqRel) {
            self.waker.wake();
        }
    }
}

/// `n` tasks on `arbiter`, each waiting on its own flag forever, like sessions.
fn flag_tasks(n: usize, arbiter: &ArbiterHandle) -> Vec<Arc<Flag>> {
    (0..n)
        .map(|_| {
            let flag = Arc::new(Flag::default());
            let f = flag.clone();
            arbiter.spawn(async move {
                loop {
                    poll_fn(|cx| {
                        f.waker.register(cx.waker());
                        if f.set.swap(false, Ordering::AcqRel) {
                            Poll::Ready(())
                        } else {
                            Poll::Pending
                        }
                    })
                    .await;
                }
            });
            flag
        })
        .collect()
}

/// Waits until the other thread has run what was sent to it, so each round starts idle.
fn quiesce(arbiter: &ArbiterHandle) {
    let (tx, rx) = std::sync::mpsc::channel();
    arbiter.spawn(async move {
        let _ = tx.send(());
    });
    let _ = rx.recv_timeout(Duration::from_secs(5));
}

fn time_do_send(
    addrs: &[Recipient<Wake>],
    arbiter: &ArbiterHandle,
    reps: u64,
) -> (Duration, u64, u64) {
    repeat(
        reps,
        |_| quiesce(arbiter),
        || addrs.iter().for_each(|a| a.do_send(Wake)),
    )
}

fn time_flags(flags: &[Arc<Flag>], arbiter: &ArbiterHandle, reps: u64) -> (Duration, u64, u64) {
    repeat(
        reps,
        |_| quiesce(arbiter),
        || flags.iter().for_each(|f| f.wake()),
    )
}

/// One member's arrival in and departure from `GROUP` as the hub's handlers do them:
/// connect, join, subscribe (no presence), the presence announcement's look for the
/// group's watchers (there are none), and disconnect. It must not grow with the group.
fn time_membership(pool: &mut Pool, outbox: &Arc<Outbox>, reps: u64) -> (Duration, u64, u64) {
    let id = SessionId::MAX;
    repeat(
        reps,
        |_| {},
        || {
            pool.connect(id, outbox.clone());
            pool.join(id, "newcomer", Grant::all()).expect("join");
            let (change, _) = pool.subscribe(id, GROUP, false).expect("subscribe");
            let watchers = pool
                .group(&change.group)
                .map_or(0, |g| g.watchers().count());
            watchers + pool.disconnect(id).len()
        },
    )
}

fn membership_line(n: usize, reps: u64, (t, a, _): (Duration, u64, u64)) {
    println!(
        "routing: membership in a group of {n:>6}: {:>8.0} ns per arrival and departure; {:.1} allocations",
        t.as_secs_f64() * 1e9 / reps as f64,
        a as f64 / reps as f64
    );
}

fn line(what: &str, n: usize, reps: u64, (t, a, b): (Duration, u64, u64)) {
    let per_pub = t.as_secs_f64() / reps as f64;
    println!(
        "routing: {what:<24} {n:>6} recipients: {:>8.1} us per publish = {:>6.1} ns per delivery; \
         {:>8.1} allocations ({:.0} bytes) per publish",
        per_pub * 1e6,
        per_pub * 1e9 / n as f64,
        a as f64 / reps as f64,
        b as f64 / reps as f64
    );
}

/// Heap allocations a publish makes on the hub's thread in the pool cases (the router's
/// loop, copied here as [`fan_out`], over the crate's `Outbox` and `WakeBatch`),
/// whatever the group's size: encoding the event once, which is serde_json's buffer
/// (128 bytes) and the header (24 bytes) that lets `Bytes` share it. Measured, debug and
/// release builds alike: 2.0 per publish, for 1,000 to 15,000 recipients. A push into an
/// outbox takes a reference, and its wake-up goes into a reused `WakeBatch` (or is done
/// on the spot): nothing per recipient.
const POOL_ALLOCS: u64 = 2;

/// The same through the `Hub` actor (`hub/publish_cold`). Measured: 9.0 per publish at
/// 10,000 recipients: the pool case's 2, and 7 that do not depend on the group either:
/// the `Publish` message the benchmark builds (its body and group name: 2) and sends
/// (`Addr::send`'s envelope, mailbox node and reply channel: 3), and the publisher's
/// `ack` (encoded: 2).
const HUB_ALLOCS: u64 = 9;

/// Allowed once per measurement (not per publish) on top: growth that the steady state
/// amortizes away. Wake-ups from this thread (the `direct` cases) go into the sessions'
/// runtime's queue of tasks woken from other threads (tokio's `LocalSet`: 64 entries at
/// first, doubled when full, never shrunk), 8 doublings at most up to 15,000 wake-ups.
/// One allocation per recipient would be 1,000 and more per publish.
const GROWTH_ALLOCS: u64 = 16;

/// Fails the benchmark (a panic: `cargo bench` and `cargo test` both fail) unless the
/// publishes measured in `(time, allocations, bytes)` made at most `per_publish`
/// allocations each on this thread, plus [`GROWTH_ALLOCS`]: a fan-out that allocates per
/// recipient, or per chunk of recipients, makes far more at these sizes.
fn check_fan_out(
    what: &str,
    n: usize,
    reps: u64,
    (_, allocs, _): (Duration, u64, u64),
    per_publish: u64,
) {
    let allowed = reps * per_publish + GROWTH_ALLOCS;
    assert!(
        allocs <= allowed,
        "routing: {what} to {n} recipients made {allocs} allocations in {reps} publishes \
         ({:.1} per publish, {:.4} per recipient); at most {per_publish} per publish are \
         allowed whatever the group's size (plus {GROWTH_ALLOCS} for growth): something on \
         the fan-out path allocates per recipient",
        allocs as f64 / reps as f64,
        allocs as f64 / reps as f64 / n as f64,
    );
}

/// Prints a fan-out's summary line, then [`check_fan_out`]s it.
fn fan_out_line(what: &str, n: usize, reps: u64, m: (Duration, u64, u64), per_publish: u64) {
    line(what, n, reps, m);
    check_fan_out(what, n, reps, m, per_publish);
}

/// One group size: `live` has waker-woken sessions that drain themselves (the cold
/// case), `held` has message-woken stand-ins drained only from this thread (the former
/// cold case, and the queued case, which must keep its outboxes woken and full).
struct Rig {
    n: usize,
    live: Vec<Arc<Outbox>>,
    live_pool: Pool,
    held: Vec<Arc<Outbox>>,
    held_pool: Pool,
}

fn rig(n: usize, arbiter: &ArbiterHandle) -> Rig {
    let live = session_outboxes(n, arbiter);
    let live_pool = pool(&live);
    // A few rounds so that both the sessions' buffers and the outboxes' queues (swapped
    // on each drain) have their capacity, as in the steady state.
    for _ in 0..3 {
        assert_eq!(publish(&live_pool, "warmup", &body()), n);
        settle(&live, arbiter);
        assert_eq!(fan_out(&live_pool, "warmup", &body(), true), n);
        settle(&live, arbiter);
    }
    let held = message_outboxes(n, arbiter);
    let held_pool = pool(&held);
    assert_eq!(publish(&held_pool, "warmup", &body()), n);
    drain_all(&held);
    // Two rounds of the queued case (up to 64 frames per outbox), so that its queues and
    // spare buffers have grown before anything is counted.
    time_queued(&held_pool, &held, 128);
    Rig {
        n,
        live,
        live_pool,
        held,
        held_pool,
    }
}

fn main() {
    let sys = System::new();
    // The stand-in sessions' thread, as the sessions have the worker thread.
    let sessions = Arbiter::new();
    let arb = sessions.handle();
    // Criterion's rule: `cargo bench` passes `--bench`; without it (`cargo test` runs
    // this target with no arguments), or with `--test`, each benchmark runs once. The
    // summary then runs a few rounds only, its allocation checks included.
    let args: Vec<String> = std::env::args().collect();
    let flag = |f: &str| args.iter().any(|a| a == f);
    let quick = !flag("--bench") || flag("--test") || flag("--list");

    let sizes: &[usize] = &[1_000, 10_000, 15_000];
    let rigs: Vec<Rig> = sizes.iter().map(|&n| rig(n, &arb)).collect();
    let hub10k = hub_rig(&sys, &arb, 10_000);
    let sinks: Vec<Recipient<Wake>> = (0..10_000)
        .map(|_| Sink::start_in_arbiter(&arb, |_| Sink).recipient())
        .collect();
    let flags = flag_tasks(10_000, &arb);
    quiesce(&arb);

    // The summary: plain timing and allocation counts, before Criterion's statistics;
    // the fan-out's lines are checked for allocations per recipient.
    let reps = if quick { 3 } else { 200 };
    for r in &rigs {
        fan_out_line(
            "pool cold (batched)",
            r.n,
            reps,
            time_cold(&r.live_pool, &r.live, &arb, reps, false, Timed::HubSide),
            POOL_ALLOCS,
        );
        fan_out_line(
            "pool cold (direct)",
            r.n,
            reps,
            time_cold(&r.live_pool, &r.live, &arb, reps, true, Timed::HubSide),
            POOL_ALLOCS,
        );
        // Not checked: these also count the benchmark's own waiting for the drains (a
        // task and a channel per round trip to the sessions' thread).
        line(
            "until drained (batched)",
            r.n,
            reps,
            time_cold(
                &r.live_pool,
                &r.live,
                &arb,
                reps,
                false,
                Timed::UntilDrained,
            ),
        );
        line(
            "until drained (direct)",
            r.n,
            reps,
            time_cold(&r.live_pool, &r.live, &arb, reps, true, Timed::UntilDrained),
        );
        // Not checked: the former wake-up, an actor message per recipient, kept for
        // comparison; it allocates per recipient by design (the message's envelope and
        // mailbox node: 2 per recipient).
        line(
            "pool cold (message)",
            r.n,
            reps,
            time_cold_message(&r.held_pool, &r.held, reps),
        );
        fan_out_line(
            "pool queued (no wake)",
            r.n,
            reps,
            time_queued(&r.held_pool, &r.held, reps),
            POOL_ALLOCS,
        );
    }
    for r in &rigs {
        let mut members = pool(&r.held);
        let newcomer = &r.held[0];
        time_membership(&mut members, newcomer, 100);
        membership_line(
            r.n,
            reps * 50,
            time_membership(&mut members, newcomer, reps * 50),
        );
    }
    fan_out_line(
        "hub actor cold",
        10_000,
        reps,
        time_hub_cold(&sys, &hub10k, &arb, reps),
        HUB_ALLOCS,
    );
    line(
        "wake: actor message",
        10_000,
        reps,
        time_do_send(&sinks, &arb, reps),
    );
    line(
        "wake: atomic waker",
        10_000,
        reps,
        time_flags(&flags, &arb, reps),
    );

    let mut c = Criterion::default()
        .sample_size(20)
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(3))
        .configure_from_args();
    {
        let mut g = c.benchmark_group("pool");
        for r in &rigs {
            let n = &r.n;
            g.throughput(Throughput::Elements(r.n as u64));
            g.bench_with_input(BenchmarkId::new("publish_cold", n), n, |b, _| {
                b.iter_custom(|iters| {
                    time_cold(&r.live_pool, &r.live, &arb, iters, false, Timed::HubSide).0
                })
            });
            g.bench_with_input(BenchmarkId::new("publish_cold_direct", n), n, |b, _| {
                b.iter_custom(|iters| {
                    time_cold(&r.live_pool, &r.live, &arb, iters, true, Timed::HubSide).0
                })
            });
            g.bench_with_input(BenchmarkId::new("publish_cold_message", n), n, |b, _| {
                b.iter_custom(|iters| time_cold_message(&r.held_pool, &r.held, iters).0)
            });
            g.bench_with_input(BenchmarkId::new("publish_queued", n), n, |b, _| {
                b.iter_custom(|iters| time_queued(&r.held_pool, &r.held, iters).0)
            });
        }
        g.finish();
    }
    {
        let mut g = c.benchmark_group("hub");
        g.throughput(Throughput::Elements(10_000));
        g.bench_function(BenchmarkId::new("publish_cold", 10_000), |b| {
            b.iter_custom(|iters| time_hub_cold(&sys, &hub10k, &arb, iters).0)
        });
        g.finish();
    }
    {
        let mut g = c.benchmark_group("wake");
        g.throughput(Throughput::Elements(10_000));
        g.bench_function(BenchmarkId::new("do_send", 10_000), |b| {
            b.iter_custom(|iters| time_do_send(&sinks, &arb, iters).0)
        });
        g.bench_function(BenchmarkId::new("atomic_waker", 10_000), |b| {
            b.iter_custom(|iters| time_flags(&flags, &arb, iters).0)
        });
        g.finish();
    }
    c.final_summary();
    sessions.stop();
}
