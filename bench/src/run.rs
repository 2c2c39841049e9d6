//! The scenarios: connecting clients, the per-client loop, measurement windows and the
//! report.

use std::collections::{BTreeMap, VecDeque};
use std::io::{IsTerminal, Write as _};
use std::net::Ipv4Addr;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering::Relaxed};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use hdrhistogram::Histogram;
use serde_json::{json, Map, Value};
use tokio::sync::{watch, Semaphore};
use tokio::time::{Interval, MissedTickBehavior};

use crate::proto;
use crate::sys::{self, CpuMark, CpuUse};
use crate::ws::{self, Frame, Reader, Target, Writer, OP_PONG, OP_TEXT};
use crate::{Common, IdleArgs, Scenario};

/// Where the clients are in the run; each client task watches it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Phase {
    Wait,
    Go,
    Stop,
}

/// What a client does besides reading and answering pings.
#[derive(Debug, Clone)]
pub enum Role {
    /// `idle`: sends one `ping` when the burst starts.
    Holder,
    /// `fanout`: counts deliveries for the in-flight accounting.
    Subscriber,
    /// `direct`: sends to `partner`; closed loop (`period` None) or at a fixed rate.
    Direct {
        partner: String,
        window: usize,
        period: Option<Duration>,
    },
    /// `chatroom`: publishes to `group` every `period`.
    Chatter { group: String, period: Duration },
    /// `ticker`: counts ticks; latency from the tick's `ts` (milliseconds).
    Tick,
}

/// Slots of the in-flight ring (saturation); far more than any sensible --inflight.
const RING: usize = 1 << 16;
const TOMBSTONE: u64 = u64::MAX;

/// Counters every client adds to.
pub struct Recorder {
    /// True while the measurement window is open.
    pub window: AtomicBool,
    pub msgs: AtomicU64,
    pub msgs_window: AtomicU64,
    pub acks: AtomicU64,
    pub pongs: AtomicU64,
    pub sent: AtomicU64,
    pub sent_window: AtomicU64,
    /// Latency of deliveries in the window, microseconds.
    pub hist: Mutex<Histogram<u64>>,
    /// fanout: per message `seq << 32 | subscribers still to receive it`, at seq % RING.
    ring: Box<[AtomicU64]>,
    /// fanout --inflight: one permit per message that may be published.
    pub slots: Semaphore,
    pub complete: AtomicU64,
    /// Commands of this tool (publishes, direct messages, broadcasts, pings) that the hub
    /// refused with `rate_limited` ([`Run::hub_error`]): nothing is delivered for them,
    /// so they are not expected deliveries. All of them, and by `code`.
    pub refused: AtomicU64,
    refused_codes: Mutex<BTreeMap<Vec<u8>, u64>>,
}

impl Recorder {
    fn new() -> Self {
        Recorder {
            window: AtomicBool::new(false),
            msgs: AtomicU64::new(0),
            msgs_window: AtomicU64::new(0),
            acks: AtomicU64::new(0),
            pongs: AtomicU64::new(0),
            sent: AtomicU64::new(0),
            sent_window: AtomicU64::new(0),
            hist: Mutex::new(
                Histogram::new_with_bounds(1, 3_600_000_000, 3).expect("histogram bounds"),
            ),
            ring: (0..RING).map(|_| AtomicU64::new(TOMBSTONE)).collect(),
            slots: Semaphore::new(0),
            complete: AtomicU64::new(0),
            refused: AtomicU64::new(0),
            refused_codes: Mutex::new(BTreeMap::new()),
        }
    }

    /// A message `seq` is about to go to `subs` subscribers.
    fn expect(&self, seq: u64, subs: usize) {
        self.ring[seq as usize % RING].store((seq & 0xffff_ffff) << 32 | subs as u64, Relaxed);
    }

    /// One subscriber got message `seq`; the last one frees an in-flight slot.
    fn delivered(&self, seq: u64) {
        let slot = &self.ring[seq as usize % RING];
        let mut v = slot.load(Relaxed);
        loop {
            if v == TOMBSTONE || v >> 32 != seq & 0xffff_ffff || v & 0xffff_ffff == 0 {
                return; // expired, or a slot reused by a later message
            }
            match slot.compare_exchange_weak(v, v - 1, Relaxed, Relaxed) {
                Ok(_) => break,
                Err(cur) => v = cur,
            }
        }
        if v & 0xffff_ffff == 1 {
            self.complete.fetch_add(1, Relaxed);
            self.slots.add_permits(1);
        }
    }

    /// Whether message `seq` is still waiting for a subscriber.
    fn pending(&self, seq: u64) -> bool {
        let v = self.ring[seq as usize % RING].load(Relaxed);
        v != TOMBSTONE && v >> 32 == seq & 0xffff_ffff && v & 0xffff_ffff != 0
    }

    /// Gives up on message `seq`; if it was still pending, how many subscribers had not
    /// received it.
    fn expire(&self, seq: u64) -> Option<u64> {
        let slot = &self.ring[seq as usize % RING];
        let v = slot.load(Relaxed);
        if v != TOMBSTONE && v >> 32 == seq & 0xffff_ffff && v & 0xffff_ffff != 0 {
            slot.compare_exchange(v, TOMBSTONE, Relaxed, Relaxed)
                .ok()
                .map(|v| v & 0xffff_ffff)
        } else {
            None
        }
    }

    /// The hub answered one of this tool's commands with an `error` of this `code`.
    /// Allocates only the first time a code is seen.
    pub fn refuse(&self, code: &[u8]) {
        self.refused.fetch_add(1, Relaxed);
        let mut m = self.refused_codes.lock().unwrap_or_else(|e| e.into_inner());
        match m.get_mut(code) {
            Some(c) => *c += 1,
            None => {
                m.insert(code.to_vec(), 1);
            }
        }
    }

    pub fn refused(&self) -> u64 {
        self.refused.load(Relaxed)
    }

    /// The refusals by code, e.g. `rate_limited 64, not_found 2`, and as a JSON object.
    fn refused_by_code(&self) -> (String, Value) {
        let m = self.refused_codes.lock().unwrap_or_else(|e| e.into_inner());
        let text: Vec<String> = m
            .iter()
            .map(|(k, c)| format!("{} {c}", String::from_utf8_lossy(k)))
            .collect();
        let json = m
            .iter()
            .map(|(k, c)| (String::from_utf8_lossy(k).into_owned(), json!(c)))
            .collect();
        (text.join(", "), Value::Object(json))
    }
}

/// What one client saw since its last flush; added to the [`Recorder`] once per read.
#[derive(Default)]
struct Batch {
    msgs: u64,
    acks: u64,
    pongs: u64,
    sent: u64,
    lats: Vec<u64>,
}

impl Batch {
    fn flush(&mut self, rec: &Recorder) {
        let w = rec.window.load(Relaxed);
        if self.msgs > 0 {
            rec.msgs.fetch_add(self.msgs, Relaxed);
            if w {
                rec.msgs_window.fetch_add(self.msgs, Relaxed);
            }
        }
        if self.sent > 0 {
            rec.sent.fetch_add(self.sent, Relaxed);
            if w {
                rec.sent_window.fetch_add(self.sent, Relaxed);
            }
        }
        if self.acks > 0 {
            rec.acks.fetch_add(self.acks, Relaxed);
        }
        if self.pongs > 0 {
            rec.pongs.fetch_add(self.pongs, Relaxed);
        }
        if w && !self.lats.is_empty() {
            let mut h = rec.hist.lock().unwrap_or_else(|e| e.into_inner());
            for l in self.lats.drain(..) {
                h.saturating_record(l.max(1));
            }
        } else {
            self.lats.clear();
        }
        self.msgs = 0;
        self.acks = 0;
        self.pongs = 0;
        self.sent = 0;
    }
}

/// Everything the client tasks share.
pub struct Run {
    pub common: Common,
    pub target: Target,
    pub sources: Vec<Ipv4Addr>,
    pub pid: Option<i32>,
    /// Time base of the timestamps this tool puts in message bodies.
    t0: Instant,
    pub rec: Recorder,
    pub phase: watch::Sender<Phase>,
    errors: Mutex<BTreeMap<String, u64>>,
    /// Clients whose connection ended after they were ready.
    pub closed: AtomicUsize,
}

impl Run {
    pub fn new(
        scenario: &Scenario,
        target: Target,
        sources: Vec<Ipv4Addr>,
        pid: Option<i32>,
    ) -> Arc<Self> {
        Arc::new(Run {
            common: scenario.common().clone(),
            target,
            sources,
            pid,
            t0: Instant::now(),
            rec: Recorder::new(),
            phase: watch::channel(Phase::Wait).0,
            errors: Mutex::new(BTreeMap::new()),
            closed: AtomicUsize::new(0),
        })
    }

    fn now_ns(&self) -> u64 {
        self.t0.elapsed().as_nanos() as u64
    }

    pub fn note_error(&self, e: impl Into<String>) {
        let mut m = self.errors.lock().unwrap_or_else(|e| e.into_inner());
        *m.entry(e.into()).or_insert(0) += 1;
    }

    /// The hub answered one of this tool's commands with an `error` of this `code`.
    /// Only `rate_limited` is a refusal (the command was well-formed and the hub chose
    /// not to route it, so nothing is delivered for it); any other code (`not_found`
    /// for a partner the hub dropped, ...) is a failure, reported under `errors`, and
    /// what it did not deliver still counts as undelivered.
    pub fn hub_error(&self, code: &[u8]) {
        if code == b"rate_limited" {
            self.rec.refuse(code);
        } else {
            self.note_error(format!("error reply: {}", String::from_utf8_lossy(code)));
        }
    }

    fn errors_json(&self) -> Value {
        let m = self.errors.lock().unwrap_or_else(|e| e.into_inner());
        let mut v: Vec<_> = m.iter().collect();
        v.sort_by(|a, b| b.1.cmp(a.1));
        Value::Object(
            v.into_iter()
                .take(10)
                .map(|(k, c)| (k.clone(), json!(c)))
                .collect(),
        )
    }

    fn rss(&self) -> Option<u64> {
        self.pid.and_then(sys::rss_kib)
    }
}

fn epoch_us() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_micros() as u64)
        .unwrap_or(0)
}

/// What a client does before it counts as ready: the handshake's query (`name=..`, or
/// empty), the frames it then sends at once, and the reply types it waits for, in order.
#[derive(Default)]
struct Setup {
    query: String,
    frames: Vec<String>,
    awaits: Vec<&'static str>,
}

impl Setup {
    /// Joins (and subscribes) in the handshake's query, as wxhub allows, and waits for the
    /// replies that brings: one round trip instead of two.
    fn in_handshake(name: &str, group: Option<&str>) -> Setup {
        let mut s = Setup {
            query: format!("name={name}"),
            awaits: vec!["joined"],
            ..Setup::default()
        };
        if let Some(g) = group {
            s.query += &format!("&subscribe={g}");
            s.awaits.push("subscribed");
        }
        s
    }
}

/// Commands sent after the handshake, each with the reply type to wait for.
impl From<Vec<(String, &'static str)>> for Setup {
    fn from(steps: Vec<(String, &'static str)>) -> Setup {
        let (frames, awaits) = steps.into_iter().unzip();
        Setup {
            query: String::new(),
            frames,
            awaits,
        }
    }
}

/// Connects client `i`, sends its setup frames at once and waits for each expected reply
/// type in order.
async fn open_client(run: &Run, i: usize, setup: &Setup) -> Result<(Reader, Writer), String> {
    let src = (!run.sources.is_empty()).then(|| run.sources[i % run.sources.len()]);
    let seed =
        (i as u64 + 1).wrapping_mul(0x9E37_79B9_7F4A_7C15) ^ run.t0.elapsed().as_nanos() as u64;
    let (mut r, mut w) = ws::connect(&run.target, &setup.query, src, run.common.read_buf, seed)
        .await
        .map_err(|e| format!("connect: {e}"))?;
    for frame in &setup.frames {
        w.push(OP_TEXT, frame.as_bytes());
    }
    w.flush().await.map_err(|e| format!("send: {e}"))?;
    for expect in &setup.awaits {
        'wait: loop {
            while let Some(f) = r.next_buffered().map_err(|e| format!("read: {e}"))? {
                match f {
                    Frame::Text(t) | Frame::Binary(t) => {
                        let ty = proto::msg_type(t);
                        if ty == expect.as_bytes() {
                            break 'wait;
                        }
                        if ty == b"error" {
                            let code = proto::str_after(t, b"\"code\":\"").unwrap_or(b"?");
                            return Err(format!(
                                "{expect} refused: {}",
                                String::from_utf8_lossy(code)
                            ));
                        }
                    }
                    Frame::Ping(p) => w.push(OP_PONG, p),
                    Frame::Pong => {}
                    Frame::Close(code) => {
                        return Err(format!("closed by the hub during setup ({code:?})"))
                    }
                }
            }
            w.flush().await.map_err(|e| format!("send: {e}"))?;
            if !r.fill().await.map_err(|e| format!("read: {e}"))? {
                return Err("closed by the hub during setup".into());
            }
        }
    }
    Ok((r, w))
}

async fn tick(t: &mut Option<Interval>) {
    match t {
        Some(t) => {
            t.tick().await;
        }
        None => std::future::pending().await,
    }
}

fn interval_for(period: Duration, i: usize, n: usize) -> Interval {
    // Spread the clients' first sends evenly over one period.
    let offset = period.mul_f64((i % n.max(1)) as f64 / n.max(1) as f64);
    let mut iv = tokio::time::interval_at(tokio::time::Instant::now() + offset, period);
    iv.set_missed_tick_behavior(MissedTickBehavior::Skip);
    iv
}

/// One client after setup: reads, answers pings, records, and sends what its role says.
async fn client_task(run: Arc<Run>, i: usize, n: usize, mut r: Reader, mut w: Writer, role: Role) {
    let mut phase_rx = run.phase.subscribe();
    let mut phase_open = true;
    let mut go = *phase_rx.borrow() == Phase::Go;
    let mut timer: Option<Interval> = None;
    let mut batch = Batch::default();
    let mut out = String::with_capacity(128);
    let mut seq: u64 = 0;
    let pad = run.common.pad;
    let is_tick = matches!(role, Role::Tick);
    let result: Result<(), String> = 'life: loop {
        // Everything already buffered (on the first pass, what came with the setup).
        let now = run.now_ns();
        let now_us = if is_tick { epoch_us() } else { 0 };
        let mut replies = 0usize;
        loop {
            let f = match r.next_buffered() {
                Ok(Some(f)) => f,
                Ok(None) => break,
                Err(e) => break 'life Err(format!("read: {e}")),
            };
            match f {
                Frame::Text(t) | Frame::Binary(t) => match proto::msg_type(t) {
                    b"message" => {
                        batch.msgs += 1;
                        if let Some((s, ts)) = proto::body_pair(t) {
                            batch.lats.push(now.saturating_sub(ts) / 1000);
                            if matches!(role, Role::Subscriber) {
                                run.rec.delivered(s);
                            }
                        }
                        if matches!(role, Role::Direct { period: None, .. }) {
                            replies += 1;
                        }
                    }
                    b"tick" | b"quote" => {
                        batch.msgs += 1;
                        if let Some(ts) = proto::num_after(t, b"\"ts\":") {
                            batch.lats.push(now_us.saturating_sub(ts * 1000));
                        }
                    }
                    b"ack" => batch.acks += 1,
                    b"pong" => batch.pongs += 1,
                    b"error" => {
                        // One of this client's commands (a send, a ping) was refused.
                        run.hub_error(proto::str_after(t, b"\"code\":\"").unwrap_or(b"?"));
                    }
                    _ => {}
                },
                Frame::Ping(p) => w.push(OP_PONG, p),
                Frame::Pong => {}
                Frame::Close(code) => break 'life Err(format!("closed by the hub ({code:?})")),
            }
        }
        if go {
            if let Role::Direct { partner, .. } = &role {
                for _ in 0..replies {
                    proto::direct(&mut out, partner, seq, run.now_ns(), pad);
                    seq += 1;
                    w.push(OP_TEXT, out.as_bytes());
                    batch.sent += 1;
                }
            }
        }
        batch.flush(&run.rec);
        if w.has_pending() {
            if let Err(e) = w.flush().await {
                break Err(format!("send: {e}"));
            }
        }
        tokio::select! {
            res = r.fill() => match res {
                Ok(true) => {}
                Ok(false) => break Err("connection ended".into()),
                Err(e) => break Err(format!("read: {e}")),
            },
            ch = phase_rx.changed(), if phase_open => {
                if ch.is_err() {
                    phase_open = false;
                    continue;
                }
                let p = *phase_rx.borrow_and_update();
                match p {
                    Phase::Go if !go => {
                        go = true;
                        match &role {
                            Role::Holder => w.push(OP_TEXT, proto::PING.as_bytes()),
                            Role::Direct { partner, window, period: None } => {
                                for _ in 0..*window {
                                    proto::direct(&mut out, partner, seq, run.now_ns(), pad);
                                    seq += 1;
                                    w.push(OP_TEXT, out.as_bytes());
                                    batch.sent += 1;
                                }
                            }
                            Role::Direct { period: Some(p), .. } | Role::Chatter { period: p, .. } => {
                                timer = Some(interval_for(*p, i, n));
                            }
                            _ => {}
                        }
                    }
                    Phase::Stop => {
                        go = false;
                        timer = None;
                    }
                    _ => {}
                }
            }
            _ = tick(&mut timer) => {
                match &role {
                    Role::Direct { partner, .. } => proto::direct(&mut out, partner, seq, run.now_ns(), pad),
                    Role::Chatter { group, .. } => proto::publish(&mut out, group, seq, run.now_ns(), pad),
                    _ => continue,
                }
                seq += 1;
                w.push(OP_TEXT, out.as_bytes());
                batch.sent += 1;
            }
        }
    };
    batch.flush(&run.rec);
    if let Err(e) = result {
        if *run.phase.borrow() != Phase::Stop || !e.starts_with("connection ended") {
            run.note_error(e);
        }
    }
    run.closed.fetch_add(1, Relaxed);
}

/// How connecting went.
#[derive(Debug, Default, Clone)]
pub struct Connected {
    pub ready: usize,
    pub failed: usize,
    /// From the first connect to the last client ready.
    pub secs: f64,
    pub rate: f64,
    /// Rate of the clients after `tail_from` were ready.
    pub tail_rate: Option<f64>,
}

type SetupFn = dyn Fn(usize) -> Setup + Send + Sync;
type RoleFn = dyn Fn(usize) -> Role + Send + Sync;

/// Opens `n` clients with bounded concurrency; each runs `client_task` once ready.
async fn connect_all(
    run: &Arc<Run>,
    n: usize,
    setup: Arc<SetupFn>,
    role: Arc<RoleFn>,
    tail_from: Option<usize>,
) -> Connected {
    let c = &run.common;
    let sem = Arc::new(Semaphore::new(c.connect_concurrency.max(1)));
    let ready = Arc::new(AtomicUsize::new(0));
    let failed = Arc::new(AtomicUsize::new(0));
    let times = Arc::new(Mutex::new(Vec::<f64>::with_capacity(n)));
    let t0 = Instant::now();
    let per = Duration::from_secs_f64(c.connect_timeout_s);
    let done = Arc::new(AtomicBool::new(false));
    if !c.quiet && n >= 1000 {
        let (ready, failed, done) = (ready.clone(), failed.clone(), done.clone());
        let tty = std::io::stderr().is_terminal();
        tokio::spawn(async move {
            let mut last = (0usize, Instant::now());
            loop {
                tokio::time::sleep(Duration::from_secs(1)).await;
                if done.load(Relaxed) {
                    break;
                }
                let r = ready.load(Relaxed);
                let rate = (r - last.0) as f64 / last.1.elapsed().as_secs_f64();
                last = (r, Instant::now());
                let line = format!(
                    "connecting: {r}/{n} ready, {} failed, {rate:.0} conn/s, {:.0} s",
                    failed.load(Relaxed),
                    t0.elapsed().as_secs_f64()
                );
                let mut e = std::io::stderr().lock();
                let _ = if tty {
                    write!(e, "\r{line}\x1b[K")
                } else {
                    writeln!(e, "{line}")
                };
            }
            if tty {
                let _ = writeln!(std::io::stderr());
            }
        });
    }
    for i in 0..n {
        let permit = sem.clone().acquire_owned().await.expect("semaphore");
        let (run, ready, failed, times, setup, role) = (
            run.clone(),
            ready.clone(),
            failed.clone(),
            times.clone(),
            setup.clone(),
            role.clone(),
        );
        tokio::spawn(async move {
            let cmds = setup(i);
            let res = tokio::time::timeout(per, open_client(&run, i, &cmds)).await;
            drop(permit);
            match res {
                Ok(Ok((r, w))) => {
                    times
                        .lock()
                        .unwrap_or_else(|e| e.into_inner())
                        .push(t0.elapsed().as_secs_f64());
                    ready.fetch_add(1, Relaxed);
                    client_task(run, i, n, r, w, role(i)).await;
                }
                Ok(Err(e)) => {
                    run.note_error(e);
                    failed.fetch_add(1, Relaxed);
                }
                Err(_) => {
                    run.note_error("timeout before ready");
                    failed.fetch_add(1, Relaxed);
                }
            }
        });
    }
    let wait_until = Instant::now() + per + Duration::from_secs(1);
    while ready.load(Relaxed) + failed.load(Relaxed) < n && Instant::now() < wait_until {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    done.store(true, Relaxed);
    let mut times = times.lock().unwrap_or_else(|e| e.into_inner()).clone();
    times.sort_by(f64::total_cmp);
    let ready = ready.load(Relaxed);
    let secs = times.last().copied().unwrap_or(0.0);
    let tail_rate = tail_from.and_then(|k| {
        let first = *times.get(k)?;
        let last = *times.last()?;
        (last > first).then(|| (times.len() - 1 - k) as f64 / (last - first))
    });
    Connected {
        ready,
        failed: failed.load(Relaxed),
        secs,
        rate: if secs > 0.0 { ready as f64 / secs } else { 0.0 },
        tail_rate,
    }
}

/// Waits --settle-s, then (with a hub pid, unless `busy` is expected) until the hub is
/// quiet for a second. Returns the seconds waited.
async fn settle(run: &Run, busy: bool) -> f64 {
    let t0 = Instant::now();
    let c = &run.common;
    tokio::time::sleep(Duration::from_secs_f64(c.settle_s)).await;
    if let (Some(pid), false) = (run.pid, busy) {
        while t0.elapsed().as_secs_f64() < c.settle_max_s {
            let m = CpuMark::take(Some(pid));
            tokio::time::sleep(Duration::from_secs(1)).await;
            match m.since(Some(pid)).hub_pct {
                Some(p) if p >= c.settle_cpu => continue,
                _ => break,
            }
        }
    }
    t0.elapsed().as_secs_f64()
}

/// Opens the measurement window after the warm-up and closes it after the duration.
async fn window(run: &Run) -> CpuUse {
    let c = &run.common;
    tokio::time::sleep(Duration::from_secs_f64(c.warmup_s)).await;
    let mark = CpuMark::take(run.pid);
    run.rec.window.store(true, Relaxed);
    tokio::time::sleep(Duration::from_secs_f64(c.duration_s)).await;
    run.rec.window.store(false, Relaxed);
    mark.since(run.pid)
}

/// Waits until `done()` or --drain-s.
async fn drain(run: &Run, done: impl Fn() -> bool) -> f64 {
    let t0 = Instant::now();
    let limit = Duration::from_secs_f64(run.common.drain_s);
    while !done() && t0.elapsed() < limit {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    t0.elapsed().as_secs_f64()
}

/// What `measure_clients` hands back to the scenarios whose clients send the load.
struct Measured {
    /// Hub RSS once settled, before the window.
    rss1: Option<u64>,
    /// CPU use over the window (and its length, `secs`).
    cpu: CpuUse,
    /// Seconds spent draining after the window.
    drained: f64,
    /// Messages received in the window.
    msgs: u64,
    /// Messages sent in the window.
    sent: u64,
}

/// Settle, read the RSS, Go / window / Stop, then drain until every message sent and
/// not refused has arrived `copies` times (1 for direct messages, the group size for a
/// group): the whole measurement of `direct` and `chatroom`, whose clients both send
/// and receive.
async fn measure_clients(run: &Run, copies: u64) -> Measured {
    let rss1 = settled_rss(run, false).await;
    let cpu = go_window_stop(run).await;
    let rec = &run.rec;
    let drained = drain(run, || rec.msgs.load(Relaxed) >= accepted(rec) * copies).await;
    Measured {
        rss1,
        cpu,
        drained,
        msgs: rec.msgs_window.load(Relaxed),
        sent: rec.sent_window.load(Relaxed),
    }
}

/// Messages this tool's clients sent that the hub did not refuse: each is expected to
/// arrive (once per recipient).
fn accepted(rec: &Recorder) -> u64 {
    rec.sent.load(Relaxed).saturating_sub(rec.refused())
}

/// Keeps a helper connection (the burst client, the fanout publisher) a well-behaved
/// client once its own work is done: in a task of its own, reads and drops what it still
/// receives (copies, acks) and answers pings until the connection ends, so its unread
/// frames do not pile up in the hub while the clients drain. Refusals of what it sent
/// still count.
fn keep_reading(run: Arc<Run>, mut r: Reader, mut w: Writer) {
    tokio::spawn(async move {
        loop {
            while let Ok(Some(f)) = r.next_buffered() {
                match f {
                    Frame::Text(t) => {
                        if let Some(code) = proto::error_code(t) {
                            run.hub_error(code);
                        }
                    }
                    Frame::Ping(p) => w.push(OP_PONG, p),
                    _ => {}
                }
            }
            if w.flush().await.is_err() || !matches!(r.fill().await, Ok(true)) {
                break;
            }
        }
    });
}

/// The growth from `before` to `after` (KiB) in bytes per ready connection; `None`
/// without both readings or without connections. Used for the hub RSS and the kernel
/// slab figures of `idle`.
fn per_conn_bytes(before: Option<u64>, after: Option<u64>, ready: usize) -> Option<f64> {
    match (before, after) {
        (Some(a), Some(b)) if ready > 0 => Some((b as f64 - a as f64) * 1024.0 / ready as f64),
        _ => None,
    }
}

/// Connects `n` clients and adds the `connected` rows to `rep`: the opening every
/// scenario that needs its clients shares. `None` when no client became ready (the
/// report already says so), so the caller can return its report at once.
async fn connect(
    run: &Arc<Run>,
    rep: &mut Report,
    n: usize,
    setup: Arc<SetupFn>,
    role: Arc<RoleFn>,
) -> Option<Connected> {
    let conn = connect_all(run, n, setup, role, None).await;
    rep.connected(&conn, n);
    (conn.ready > 0).then_some(conn)
}

/// Lets the hub settle (see `settle`) and then reads its RSS: the "connected" memory
/// figure the scenarios report, taken at the same point in each.
async fn settled_rss(run: &Run, busy: bool) -> Option<u64> {
    settle(run, busy).await;
    run.rss()
}

/// Phase Go, the measurement window, phase Stop: the clients (and a publisher, if any)
/// drive load only between the two, so the window sees the load and nothing else.
async fn go_window_stop(run: &Run) -> CpuUse {
    let _ = run.phase.send(Phase::Go);
    let u = window(run).await;
    let _ = run.phase.send(Phase::Stop);
    u
}

/// The table and the JSON line of one run.
#[derive(Default)]
pub struct Report {
    rows: Vec<(String, String)>,
    json: Map<String, Value>,
    fatal: Vec<String>,
}

fn kib(v: Option<u64>) -> String {
    v.map(|k| format!("{:.1} MiB", k as f64 / 1024.0))
        .unwrap_or_else(|| "-".into())
}

fn opt(v: Option<f64>, unit: &str, prec: usize) -> String {
    v.map(|x| format!("{x:.prec$}{unit}"))
        .unwrap_or_else(|| "-".into())
}

impl Report {
    pub fn row(&mut self, k: &str, v: impl Into<String>) {
        self.rows.push((k.to_string(), v.into()));
    }

    pub fn put(&mut self, k: &str, v: impl Into<Value>) {
        self.json.insert(k.to_string(), v.into());
    }

    pub fn fatal(&mut self, e: impl Into<String>) {
        self.fatal.push(e.into());
    }

    fn connected(&mut self, c: &Connected, n: usize) {
        self.row(
            "connected",
            format!(
                "{}/{n} ready, {} failed in {:.2} s ({:.0} conn/s)",
                c.ready, c.failed, c.secs, c.rate
            ),
        );
        self.put("ready", c.ready);
        self.put("failed", c.failed);
        self.put("connect_s", c.secs);
        self.put("connect_per_s", c.rate);
        if c.ready == 0 {
            self.fatal("no client became ready");
        }
    }

    fn cpu(&mut self, u: &CpuUse, deliveries: u64) {
        let per = match (u.hub_cpu_s, deliveries) {
            (Some(s), d) if d > 0 => Some(s * 1e6 / d as f64),
            _ => None,
        };
        self.row(
            "hub CPU",
            format!(
                "{} of one core, {} per delivery",
                opt(u.hub_pct, "%", 1),
                opt(per, " us", 3)
            ),
        );
        if !u.hub_threads.is_empty() {
            let parts: Vec<String> = u
                .hub_threads
                .iter()
                .filter(|(_, p)| **p >= 0.5)
                .map(|(n, p)| format!("{n} {p:.0}%"))
                .collect();
            self.row("hub threads", parts.join(", "));
        }
        self.row(
            "other CPU use",
            format!(
                "load generator {}, everything else on the machine {}",
                opt(u.self_pct, "%", 1),
                opt(u.others_pct, "%", 1)
            ),
        );
        self.put("others_cpu_pct", u.others_pct);
        self.put("window_s", u.secs);
        self.put("hub_cpu_pct", u.hub_pct);
        self.put("hub_cpu_us_per_delivery", per);
        self.put(
            "hub_threads_cpu_pct",
            Value::Object(
                u.hub_threads
                    .iter()
                    .map(|(k, v)| (k.clone(), json!((v * 10.0).round() / 10.0)))
                    .collect(),
            ),
        );
        self.put("self_cpu_pct", u.self_pct);
    }

    fn latency(&mut self, rec: &Recorder, unit_note: &str) {
        let h = rec.hist.lock().unwrap_or_else(|e| e.into_inner());
        let q = |x: f64| {
            if h.is_empty() {
                None
            } else {
                Some(h.value_at_quantile(x) as f64 / 1000.0)
            }
        };
        let (p50, p99, p999) = (q(0.5), q(0.99), q(0.999));
        let max = (!h.is_empty()).then(|| h.max() as f64 / 1000.0);
        self.row(
            "latency",
            format!(
                "p50 {}  p99 {}  p99.9 {}  max {}  ({} samples{unit_note})",
                opt(p50, " ms", 2),
                opt(p99, " ms", 2),
                opt(p999, " ms", 2),
                opt(max, " ms", 2),
                h.len()
            ),
        );
        self.put("p50_ms", p50);
        self.put("p99_ms", p99);
        self.put("p999_ms", p999);
        self.put("max_ms", max);
        self.put("samples", h.len());
    }

    /// The delivery count and rate of the window, with its CPU and latency rows: the
    /// measurement part every load scenario reports the same way.
    fn deliveries(&mut self, u: &CpuUse, deliveries: u64, rec: &Recorder, unit_note: &str) {
        self.put("deliveries", deliveries);
        self.put("deliveries_per_s", deliveries as f64 / u.secs);
        self.cpu(u, deliveries);
        self.latency(rec, unit_note);
    }

    /// The hub's RSS before connecting and once connected, as a row and in the JSON;
    /// for the scenarios that take no third reading.
    fn rss_change(&mut self, before: Option<u64>, connected: Option<u64>) {
        self.row("hub RSS", format!("{} -> {}", kib(before), kib(connected)));
        self.put("rss_before_kib", before);
        self.put("rss_connected_kib", connected);
    }

    /// Prints the table and the JSON line; returns the exit code.
    pub fn print(mut self, scenario: &str, url: &str, head: Map<String, Value>, run: &Run) -> i32 {
        let refused = run.rec.refused();
        let (by_code, refused_json) = run.rec.refused_by_code();
        self.row(
            "refused",
            if refused == 0 {
                "0 commands refused by the hub".to_string()
            } else {
                format!(
                    "{refused} commands refused by the hub ({by_code}), not counted as expected deliveries{}",
                    if by_code.contains("rate_limited") {
                        "; the hub's rate limit: lift it with --hub-arg=--rate-limit=1000000 \
                         --hub-arg=--rate-burst=1000000 (or the hub's WXHUB_RATE_LIMIT/WXHUB_RATE_BURST)"
                    } else {
                        ""
                    }
                )
            },
        );
        self.put("refused", refused_json);
        self.put("refused_total", refused);
        let errors = run.errors_json();
        if errors.as_object().is_some_and(|o| !o.is_empty()) {
            self.row("errors", errors.to_string());
        }
        for f in &self.fatal {
            self.rows.push(("FAILED".into(), f.clone()));
        }
        println!("wxhub-bench {scenario} -> {url}");
        let w = self.rows.iter().map(|r| r.0.len()).max().unwrap_or(0);
        for (k, v) in &self.rows {
            println!("  {k:<w$}  {v}");
        }
        let mut json = head;
        json.extend(self.json);
        json.insert("errors".into(), errors);
        json.insert(
            "fatal".into(),
            if self.fatal.is_empty() {
                Value::Null
            } else {
                json!(self.fatal.join("; "))
            },
        );
        println!("{}", Value::Object(json));
        if self.fatal.is_empty() {
            0
        } else {
            1
        }
    }
}

pub async fn run(run: Arc<Run>, scenario: Scenario) -> Report {
    match scenario {
        Scenario::Idle(a) => idle(run, &a).await,
        Scenario::Fanout(a) => fanout(run, a.inflight, a.rate, a.group, a.lost_after_s).await,
        Scenario::Direct(a) => direct(run, a.window, a.rate).await,
        Scenario::Chatroom(a) => chatroom(run, a.rate, a.group).await,
        Scenario::Ticker(a) => ticker(run, a.tick_ms, a.group, a.join).await,
    }
}

/// A unique-enough prefix for user names, so runs against one long-lived hub do not
/// collide with each other's sessions.
fn tag() -> String {
    format!("b{}", std::process::id())
}

async fn idle(run: Arc<Run>, a: &IdleArgs) -> Report {
    let (burst, hold_s, tail_from) = (a.burst, a.hold_s, a.tail_from);
    let mut rep = Report::default();
    let n = run.common.clients;
    let tag = tag();
    let rss0 = run.rss();
    let slab0 = sys::slab_kib();
    let (t, group, in_handshake) = (tag.clone(), a.group.clone(), a.join_in_handshake);
    rep.put("join_in_handshake", in_handshake);
    rep.put("group", group.clone());
    let conn = connect_all(
        &run,
        n,
        Arc::new(move |i| {
            let name = format!("{t}i{i}");
            if in_handshake {
                Setup::in_handshake(&name, group.as_deref())
            } else {
                let mut steps = vec![(proto::join(&name), "joined")];
                if let Some(g) = &group {
                    steps.push((proto::subscribe(g), "subscribed"));
                }
                steps.into()
            }
        }),
        Arc::new(|_| Role::Holder),
        Some(tail_from.unwrap_or(n * 2 / 3)),
    )
    .await;
    rep.connected(&conn, n);
    if let Some(t) = conn.tail_rate {
        rep.row(
            "connect rate, tail",
            format!(
                "{t:.0} conn/s after {} were connected",
                tail_from.unwrap_or(n * 2 / 3)
            ),
        );
    }
    rep.put("connect_tail_per_s", conn.tail_rate);
    rep.put("tail_from", tail_from.unwrap_or(n * 2 / 3));
    let settled = settle(&run, false).await;
    let rss1 = run.rss();
    let per_conn = |r: Option<u64>| per_conn_bytes(rss0, r, conn.ready);
    rep.row(
        "hub RSS",
        format!(
            "{} -> {} connected: {} per connection (settled {settled:.1} s)",
            kib(rss0),
            kib(rss1),
            opt(per_conn(rss1).map(|b| b / 1024.0), " KiB", 2)
        ),
    );
    rep.put("rss_before_kib", rss0);
    rep.put("rss_connected_kib", rss1);
    rep.put("rss_per_conn_bytes", per_conn(rss1));
    // Kernel memory for the sockets, both ends (client and hub) since both are here;
    // system-wide, so other activity on the machine adds noise.
    let slab1 = sys::slab_kib();
    let slab_per_conn = per_conn_bytes(slab0, slab1, conn.ready);
    rep.row(
        "kernel slab",
        format!(
            "{} per connection, both ends (system-wide /proc/meminfo Slab)",
            opt(slab_per_conn.map(|b| b / 1024.0), " KiB", 2)
        ),
    );
    rep.put("slab_per_conn_both_ends_bytes", slab_per_conn);
    rep.put("burst", burst);
    if burst > 0 && conn.ready > 0 {
        let t0 = Instant::now();
        let setup = vec![(proto::join(&format!("{tag}burst")), "joined")].into();
        match open_client(&run, n, &setup).await {
            Ok((r, mut w)) => {
                let _ = run.phase.send(Phase::Go);
                let mut out = String::new();
                for s in 0..burst {
                    proto::broadcast(&mut out, s as u64, run.now_ns(), run.common.pad);
                    w.push(OP_TEXT, out.as_bytes());
                }
                if let Err(e) = w.flush().await {
                    run.note_error(format!("burst send: {e}"));
                }
                // Keep the burst connection read (its own copies, acks, pings).
                keep_reading(run.clone(), r, w);
                let rec = &run.rec;
                let ready = conn.ready as u64;
                // Broadcasts the hub refused reach nobody.
                let expected = || (burst as u64).saturating_sub(rec.refused()) * ready;
                let secs = drain(&run, || {
                    rec.msgs.load(Relaxed) >= expected() && rec.pongs.load(Relaxed) >= ready
                })
                .await;
                let got = rec.msgs.load(Relaxed);
                let expected = expected();
                rep.row(
                    "burst",
                    format!(
                        "{burst} broadcasts + 1 ping per client: {got}/{expected} deliveries, {}/{ready} pongs in {secs:.2} s ({:.2} s in all)",
                        rec.pongs.load(Relaxed),
                        t0.elapsed().as_secs_f64()
                    ),
                );
                rep.put("burst_deliveries", got);
                rep.put("burst_expected", expected);
                rep.put("burst_s", secs);
            }
            Err(e) => run.note_error(format!("burst client: {e}")),
        }
        let settled = settle(&run, false).await;
        let rss2 = run.rss();
        rep.row(
            "hub RSS after burst",
            format!(
                "{}: {} per connection (settled {settled:.1} s)",
                kib(rss2),
                opt(per_conn(rss2).map(|b| b / 1024.0), " KiB", 2)
            ),
        );
        rep.put("rss_after_burst_kib", rss2);
        rep.put("rss_per_conn_after_burst_bytes", per_conn(rss2));
    }
    let mark = CpuMark::take(run.pid);
    tokio::time::sleep(Duration::from_secs_f64(hold_s)).await;
    let u = mark.since(run.pid);
    let rss3 = run.rss();
    let open = conn.ready.saturating_sub(run.closed.load(Relaxed));
    rep.row(
        "held",
        format!(
            "{hold_s:.1} s: {open} still open, hub CPU {}, hub RSS {}",
            opt(u.hub_pct, "%", 1),
            kib(rss3)
        ),
    );
    rep.put("hold_s", hold_s);
    rep.put("open_after_hold", open);
    rep.put("hub_cpu_hold_pct", u.hub_pct);
    rep.put("others_cpu_hold_pct", u.others_pct);
    rep.put("rss_after_hold_kib", rss3);
    let _ = run.phase.send(Phase::Stop);
    rep
}

async fn fanout(
    run: Arc<Run>,
    inflight: Option<usize>,
    rate: Option<f64>,
    group: String,
    lost_after_s: f64,
) -> Report {
    let mut rep = Report::default();
    let n = run.common.clients;
    let tag = tag();
    let inflight = if rate.is_none() {
        Some(inflight.unwrap_or(64))
    } else {
        None
    };
    rep.put("inflight", inflight);
    rep.put("rate", rate);
    rep.put("group", group.clone());
    let rss0 = run.rss();
    let (t, g) = (tag.clone(), group.clone());
    let setup = Arc::new(move |i| {
        vec![
            (proto::join(&format!("{t}s{i}")), "joined"),
            (proto::subscribe(&g), "subscribed"),
        ]
        .into()
    });
    let Some(conn) = connect(&run, &mut rep, n, setup, Arc::new(|_| Role::Subscriber)).await else {
        return rep;
    };
    let (mut r, mut w) = match open_client(
        &run,
        n,
        &vec![(proto::join(&format!("{tag}pub")), "joined")].into(),
    )
    .await
    {
        Ok(c) => c,
        Err(e) => {
            rep.fatal(format!("publisher: {e}"));
            return rep;
        }
    };
    let rss1 = settled_rss(&run, false).await;
    rep.put("rss_before_kib", rss0);
    rep.put("rss_connected_kib", rss1);
    let subs = conn.ready.saturating_sub(run.closed.load(Relaxed));
    rep.put("subscribers", subs);

    // The publisher: its own task, publishing until the phase says stop.
    let prun = run.clone();
    let publisher = tokio::spawn(async move {
        let run = prun;
        let rec = &run.rec;
        let mut phase_rx = run.phase.subscribe();
        let mut seq: u64 = 0;
        let mut published_window: u64 = 0;
        let mut lost: u64 = 0;
        // Expired messages that no subscriber got, put down to refusals (below).
        let mut refused_expired: u64 = 0;
        let mut acks: u64 = 0;
        let mut ack_min: Option<u64> = None;
        let mut out = String::with_capacity(128);
        let mut sent: VecDeque<(u64, Instant)> = VecDeque::new();
        let lost_after = Duration::from_secs_f64(lost_after_s);
        let mut iv = rate.map(|r| {
            let mut iv = tokio::time::interval(Duration::from_secs_f64(1.0 / r));
            iv.set_missed_tick_behavior(MissedTickBehavior::Burst);
            iv
        });
        if let Some(k) = inflight {
            rec.slots.add_permits(k);
        }
        let mut err: Option<String> = None;
        while *phase_rx.borrow() != Phase::Go {
            if phase_rx.changed().await.is_err() {
                break;
            }
        }
        loop {
            if *phase_rx.borrow() == Phase::Stop {
                break;
            }
            // Wait for the next slot while reading acks and pings.
            let go = tokio::select! {
                res = r.fill() => {
                    match res {
                        Ok(true) => {}
                        Ok(false) => { err = Some("publisher: connection ended".into()); break; }
                        Err(e) => { err = Some(format!("publisher read: {e}")); break; }
                    }
                    loop {
                        match r.next_buffered() {
                            Ok(Some(Frame::Text(t))) => {
                                if let Some(code) = proto::error_code(t) {
                                    // A refused publish (e.g. `rate_limited`): nothing
                                    // will be delivered. Its in-flight slot stays taken
                                    // until --lost-after-s (the reply does not say which
                                    // publish it refuses), which backs the publisher off
                                    // instead of flooding the hub into closing it.
                                    run.hub_error(code);
                                } else if proto::msg_type(t) == b"ack" {
                                    acks += 1;
                                    let d = proto::num_after(t, b"\"delivered\":").unwrap_or(0);
                                    ack_min = Some(ack_min.map_or(d, |m| m.min(d)));
                                }
                            }
                            Ok(Some(Frame::Ping(p))) => w.push(OP_PONG, p),
                            Ok(Some(Frame::Close(c))) => { err = Some(format!("publisher closed by the hub ({c:?})")); break; }
                            Ok(Some(_)) => {}
                            Ok(None) => break,
                            Err(e) => { err = Some(format!("publisher read: {e}")); break; }
                        }
                    }
                    if err.is_some() { break; }
                    false
                }
                _ = phase_rx.changed() => false,
                _ = async { iv.as_mut().expect("rate mode").tick().await }, if iv.is_some() => true,
                p = tokio::time::timeout(Duration::from_millis(100), rec.slots.acquire()), if iv.is_none() => {
                    match p {
                        Ok(Ok(permit)) => { permit.forget(); true }
                        _ => {
                            // Expire messages stuck longer than --lost-after-s.
                            while let Some(&(s, at)) = sent.front() {
                                if !rec.pending(s) {
                                    sent.pop_front();
                                } else if at.elapsed() > lost_after {
                                    sent.pop_front();
                                    if let Some(left) = rec.expire(s) {
                                        // No subscriber got it, and a refusal is not yet
                                        // matched to an expired message: refused, not lost.
                                        if left == subs as u64 && refused_expired < rec.refused() {
                                            refused_expired += 1;
                                        } else {
                                            lost += 1;
                                        }
                                        rec.slots.add_permits(1);
                                    }
                                } else {
                                    break;
                                }
                            }
                            false
                        }
                    }
                }
            };
            if go {
                rec.expect(seq, subs);
                proto::publish(&mut out, &group, seq, run.now_ns(), run.common.pad);
                w.push(OP_TEXT, out.as_bytes());
                if inflight.is_some() {
                    while sent.front().is_some_and(|&(s, _)| !rec.pending(s)) {
                        sent.pop_front();
                    }
                    sent.push_back((seq, Instant::now()));
                }
                seq += 1;
                if rec.window.load(Relaxed) {
                    published_window += 1;
                }
            }
            if w.has_pending() {
                if let Err(e) = w.flush().await {
                    err = Some(format!("publisher send: {e}"));
                    break;
                }
            }
        }
        // Publishes still unanswered when the hub ended the connection (e.g. closing a
        // publisher that kept being refused): no reply will come, and they are not
        // expected to have been delivered.
        let unanswered = if err.is_some() {
            seq.saturating_sub(acks + rec.refused())
        } else {
            0
        };
        // Keep answering pings and reading acks while the subscribers drain.
        keep_reading(run.clone(), r, w);
        (seq, published_window, lost, acks, ack_min, unanswered, err)
    });
    let u = go_window_stop(&run).await;
    let rss2 = run.rss();
    let (published, published_window, lost, acks, ack_min, unanswered, err) = publisher
        .await
        .unwrap_or((0, 0, 0, 0, None, 0, Some("publisher task failed".into())));
    if let Some(e) = err {
        run.note_error(e);
    }
    let rec = &run.rec;
    // Publishes the hub refused reach nobody (their replies may still be on the way).
    let expected = || published.saturating_sub(rec.refused() + unanswered) * subs as u64;
    let drained = drain(&run, || rec.msgs.load(Relaxed) >= expected()).await;
    let expected = expected();
    let refused = rec.refused();
    let deliveries = rec.msgs_window.load(Relaxed);
    let received = rec.msgs.load(Relaxed);
    let mode = match (rate, inflight) {
        (Some(r), _) => format!("rate {r} msg/s"),
        (_, Some(k)) => format!("inflight {k}"),
        _ => unreachable!(),
    };
    rep.row(
        "fan-out",
        format!(
            "{mode} to {subs} subscribers: {published_window} published in {:.1} s ({:.0} msg/s)",
            u.secs,
            published_window as f64 / u.secs
        ),
    );
    rep.row(
        "deliveries",
        format!(
            "{deliveries} in the window = {:.0} deliveries/s",
            deliveries as f64 / u.secs
        ),
    );
    rep.put("published", published_window);
    rep.put("published_per_s", published_window as f64 / u.secs);
    rep.deliveries(&u, deliveries, rec, "");
    let missing = expected.saturating_sub(received);
    rep.row(
        "completeness",
        format!(
            "{received}/{expected} delivered after {drained:.1} s drain ({published} published, \
             {refused} refused{}); {lost} expired in flight; \
             {acks} acks (smallest delivered {}); {} subscribers closed",
            if unanswered > 0 {
                format!(", {unanswered} unanswered when the hub closed the publisher")
            } else {
                String::new()
            },
            ack_min.map(|v| v.to_string()).unwrap_or("-".into()),
            run.closed.load(Relaxed)
        ),
    );
    rep.row(
        "hub RSS",
        format!("{} -> {} -> {}", kib(rss0), kib(rss1), kib(rss2)),
    );
    rep.put("rss_after_kib", rss2);
    rep.put("published_total", published);
    rep.put("expected_total", expected);
    rep.put("received_total", received);
    rep.put("undelivered", missing);
    rep.put("expired_inflight", lost);
    rep.put("unanswered_at_close", unanswered);
    rep.put("acks", acks);
    rep.put("ack_delivered_min", ack_min);
    rep.put("subscribers_closed", run.closed.load(Relaxed));
    if deliveries == 0 {
        rep.fatal(if refused > 0 {
            format!("no delivery in the measurement window ({refused} publishes refused: see `refused`)")
        } else {
            "no delivery in the measurement window".to_string()
        });
    }
    rep
}

async fn direct(run: Arc<Run>, window_k: usize, rate: Option<f64>) -> Report {
    let mut rep = Report::default();
    let pairs = run.common.clients;
    let n = pairs * 2;
    let tag = tag();
    rep.put("pairs", pairs);
    rep.put("window", rate.is_none().then_some(window_k));
    rep.put("rate_per_client", rate);
    let rss0 = run.rss();
    let name = move |t: &str, i: usize| {
        format!(
            "{t}d{}{}",
            i / 2,
            if i.is_multiple_of(2) { 'a' } else { 'b' }
        )
    };
    let t = tag.clone();
    let t2 = tag.clone();
    let period = rate.map(|r| Duration::from_secs_f64(1.0 / r));
    let setup = Arc::new(move |i| vec![(proto::join(&name(&t, i)), "joined")].into());
    let role = Arc::new(move |i| Role::Direct {
        partner: name(&t2, i ^ 1),
        window: window_k,
        period,
    });
    if connect(&run, &mut rep, n, setup, role).await.is_none() {
        return rep;
    }
    let Measured {
        rss1,
        cpu: u,
        drained,
        msgs,
        sent,
    } = measure_clients(&run, 1).await;
    let rec = &run.rec;
    rep.row(
        "direct",
        format!(
            "{pairs} pairs, {}: {sent} sent, {msgs} received in {:.1} s = {:.0} messages/s",
            match rate {
                Some(r) => format!("{r} msg/s per client"),
                None => format!("window {window_k} per client"),
            },
            u.secs,
            msgs as f64 / u.secs
        ),
    );
    rep.put("sent", sent);
    rep.deliveries(&u, msgs, rec, "");
    let (sent_all, recv_all) = (rec.sent.load(Relaxed), rec.msgs.load(Relaxed));
    let expected = accepted(rec);
    rep.row(
        "completeness",
        format!(
            "{recv_all}/{expected} received after {drained:.1} s drain ({sent_all} sent, {} refused), \
             {} acks, {} clients closed",
            rec.refused(),
            rec.acks.load(Relaxed),
            run.closed.load(Relaxed)
        ),
    );
    rep.rss_change(rss0, rss1);
    rep.put("sent_total", sent_all);
    rep.put("expected_total", expected);
    rep.put("received_total", recv_all);
    rep.put("undelivered", expected.saturating_sub(recv_all));
    rep.put("acks", rec.acks.load(Relaxed));
    if msgs == 0 {
        rep.fatal("no message in the measurement window");
    }
    rep
}

async fn chatroom(run: Arc<Run>, rate: f64, group: String) -> Report {
    let mut rep = Report::default();
    let n = run.common.clients;
    if rate <= 0.0 {
        rep.fatal("--rate must be positive");
        return rep;
    }
    let tag = tag();
    rep.put("rate_per_client", rate);
    rep.put("group", group.clone());
    let rss0 = run.rss();
    let period = Duration::from_secs_f64(1.0 / rate);
    let (t, g, g2) = (tag.clone(), group.clone(), group.clone());
    let setup = Arc::new(move |i| {
        vec![
            (proto::join(&format!("{t}c{i}")), "joined"),
            (proto::subscribe(&g), "subscribed"),
        ]
        .into()
    });
    let role = Arc::new(move |_| Role::Chatter {
        group: g2.clone(),
        period,
    });
    let Some(conn) = connect(&run, &mut rep, n, setup, role).await else {
        return rep;
    };
    let members = conn.ready as u64;
    let Measured {
        rss1,
        cpu: u,
        drained,
        msgs,
        sent,
    } = measure_clients(&run, members).await;
    let rec = &run.rec;
    rep.row(
        "chatroom",
        format!(
            "{members} members at {rate} msg/s each: {sent} published ({:.0} msg/s), {msgs} deliveries = {:.0} deliveries/s",
            sent as f64 / u.secs,
            msgs as f64 / u.secs
        ),
    );
    rep.put("published", sent);
    rep.put("published_per_s", sent as f64 / u.secs);
    rep.deliveries(&u, msgs, rec, "");
    let (sent_all, recv_all) = (rec.sent.load(Relaxed), rec.msgs.load(Relaxed));
    let expected = accepted(rec) * members;
    rep.row(
        "completeness",
        format!(
            "{recv_all}/{expected} delivered after {drained:.1} s drain ({sent_all} published, {} refused), \
             {} acks, {} clients closed",
            rec.refused(),
            rec.acks.load(Relaxed),
            run.closed.load(Relaxed)
        ),
    );
    rep.rss_change(rss0, rss1);
    rep.put("published_total", sent_all);
    rep.put("expected_total", expected);
    rep.put("received_total", recv_all);
    rep.put("undelivered", expected.saturating_sub(recv_all));
    if msgs == 0 {
        rep.fatal("no delivery in the measurement window");
    }
    rep
}

async fn ticker(run: Arc<Run>, tick_ms: u64, group: String, join: bool) -> Report {
    let mut rep = Report::default();
    let n = run.common.clients;
    let tag = tag();
    rep.put("tick_ms", tick_ms);
    rep.put("group", group.clone());
    let rss0 = run.rss();
    let (t, g) = (tag.clone(), group.clone());
    let setup = Arc::new(move |i| {
        let mut v = Vec::new();
        if join {
            v.push((proto::join(&format!("{t}t{i}")), "joined"));
        }
        v.push((proto::subscribe(&g), "subscribed"));
        v.into()
    });
    let Some(conn) = connect(&run, &mut rep, n, setup, Arc::new(|_| Role::Tick)).await else {
        return rep;
    };
    // The ticker keeps the hub busy by design: wait --settle-s only.
    let rss1 = settled_rss(&run, true).await;
    // Not `go_window_stop`: the hub drives the load (the clients only read), and phase
    // Stop comes after the report has counted the clients still open.
    let u = window(&run).await;
    let rec = &run.rec;
    let msgs = rec.msgs_window.load(Relaxed);
    let subs = conn.ready.saturating_sub(run.closed.load(Relaxed));
    let expected = subs as f64 * u.secs * 1000.0 / tick_ms as f64;
    rep.row(
        "ticker",
        format!(
            "{subs} subscribers of {group} every {tick_ms} ms: {msgs} deliveries in {:.1} s = {:.0} deliveries/s (expected about {:.0}/s)",
            u.secs,
            msgs as f64 / u.secs,
            expected / u.secs
        ),
    );
    rep.put("subscribers", subs);
    rep.put("expected_per_s", expected / u.secs);
    rep.deliveries(
        &u,
        msgs,
        rec,
        ", from the tick's ts: millisecond resolution",
    );
    rep.rss_change(rss0, rss1);
    rep.put("subscribers_closed", run.closed.load(Relaxed));
    let _ = run.phase.send(Phase::Stop);
    if msgs == 0 {
        rep.fatal("no tick in the measurement window");
    }
    rep
}
