//! `fanout2`: fan-out across two nodes of a cluster. N subscribers of one group, those
//! of even index on node A (`--url`) and those of odd index on node B (`--url-b`), and
//! one publisher on node A at a fixed rate (`--rate`). It measures what `fanout --rate`
//! does (deliveries/s in the window, end-to-end latency from the timestamp in each
//! body, node A's CPU), and on top: the latency of A's subscribers and of B's apart,
//! the CPU of node B and of Redis (`--pid-b`, `--redis-pid`), and what every subscriber
//! received: each counts the messages it got by their number, so a message lost on one
//! node, a copy delivered twice or one out of order shows, whatever path the cluster
//! takes inside.
//!
//! It speaks wxhub's protocol or Socket.IO's (`--proto socketio`, against
//! `bench/peers/socketio-redis-hub.js`), so that both clusters are measured by the same
//! client in the same run. A node subscribes to Redis asynchronously, so before the
//! measurement the publisher sends probes (numbers from [`PROBE`] up, never counted)
//! until every subscriber has heard one.

use std::sync::atomic::Ordering::Relaxed;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use hdrhistogram::Histogram;
use tokio::sync::{oneshot, Semaphore};
use tokio::time::{Interval, MissedTickBehavior};

use super::connect::Connected;
use super::measure::{drain, settled_rss};
use super::report::{kib, opt};
use super::{tag, Phase, Report, Run};
use crate::proto::{self, sio};
use crate::sys::{self, CpuMark};
use crate::ws::{self, Frame, Reader, Target, Writer, OP_PONG, OP_TEXT};
use crate::{Fanout2Args, Proto};

/// Probes are numbered from here; measured messages from 0.
const PROBE: u64 = 1 << 40;
/// A measured message number past this is not one of ours (a subscriber keeps one bit
/// per number): at 1,000 msg/s, three days of publishing.
const MAX_SEQ: u64 = 1 << 28;
/// How often the publisher probes while waiting for every subscriber to hear it.
const PROBE_EVERY: Duration = Duration::from_millis(50);

/// What the subscribers tell the scenario, beside the shared [`super::Recorder`].
struct Shared {
    proto: Proto,
    /// Per subscriber: ready, and the distinct measured messages it received.
    ready: Vec<AtomicBool>,
    got: Vec<AtomicU64>,
    /// Subscribers that received a probe.
    heard: AtomicUsize,
    /// Copies of a message a subscriber already had.
    dups: AtomicU64,
    /// Messages that came after one with a higher number (to the same subscriber).
    reordered: AtomicU64,
    /// Window latency (us) of the subscribers on node A and on node B.
    hist: [Mutex<Histogram<u64>>; 2],
}

/// What a frame from a node is to this scenario.
enum Incoming<'a> {
    /// One of the publisher's messages: `(seq, ts)`.
    Msg(u64, u64),
    /// Socket.IO's ping, to answer with a pong.
    Ping,
    /// A refusal (wxhub `error`, Socket.IO connect error) with its code.
    Refused(&'a [u8]),
    /// The reply a setup step waits for, or anything else.
    Other,
}

fn incoming(proto: Proto, t: &[u8]) -> Incoming<'_> {
    match proto {
        Proto::Wxhub => match proto::msg_type(t) {
            b"message" => match proto::body_pair(t) {
                Some((s, ts)) => Incoming::Msg(s, ts),
                None => Incoming::Other,
            },
            b"error" => Incoming::Refused(proto::str_after(t, b"\"code\":\"").unwrap_or(b"?")),
            _ => Incoming::Other,
        },
        Proto::Socketio => {
            if t == sio::PING {
                Incoming::Ping
            } else if t.starts_with(sio::CONNECT_ERROR) {
                Incoming::Refused(b"socket.io connect_error")
            } else if let Some((s, ts)) = sio::body_pair(t) {
                Incoming::Msg(s, ts)
            } else {
                Incoming::Other
            }
        }
    }
}

/// Whether `t` is the reply a setup step waits for (`joined`, `subscribed`; `40..`).
fn is_reply(proto: Proto, t: &[u8], expect: &str) -> bool {
    match proto {
        Proto::Wxhub => proto::msg_type(t) == expect.as_bytes(),
        Proto::Socketio => t.starts_with(expect.as_bytes()),
    }
}

/// Connects client `i` to `target`, sends its setup frames and waits for their replies.
async fn open(
    run: &Run,
    proto: Proto,
    target: &Target,
    i: usize,
    steps: &[(String, &'static str)],
) -> Result<(Reader, Writer), String> {
    let src = (!run.sources.is_empty()).then(|| run.sources[i % run.sources.len()]);
    let seed =
        (i as u64 + 1).wrapping_mul(0x9E37_79B9_7F4A_7C15) ^ run.t0.elapsed().as_nanos() as u64;
    let (mut r, mut w) = ws::connect(target, "", src, run.common.read_buf, seed)
        .await
        .map_err(|e| format!("connect: {e}"))?;
    for (frame, _) in steps {
        w.push(OP_TEXT, frame.as_bytes());
    }
    w.flush().await.map_err(|e| format!("send: {e}"))?;
    for (_, expect) in steps {
        'wait: loop {
            while let Some(f) = r.next_buffered().map_err(|e| format!("read: {e}"))? {
                match f {
                    Frame::Text(t) | Frame::Binary(t) => {
                        if is_reply(proto, t, expect) {
                            break 'wait;
                        }
                        match incoming(proto, t) {
                            Incoming::Refused(code) => {
                                return Err(format!(
                                    "{expect} refused: {}",
                                    String::from_utf8_lossy(code)
                                ))
                            }
                            Incoming::Ping => w.push(OP_TEXT, sio::PONG),
                            _ => {}
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

/// A subscriber's own record of the messages it received: one bit per number.
#[derive(Default)]
struct Seen {
    bits: Vec<u64>,
    max: Option<u64>,
}

impl Seen {
    /// Records `seq`; whether it is new.
    fn first(&mut self, seq: u64, sh: &Shared) -> bool {
        let (word, bit) = ((seq / 64) as usize, 1u64 << (seq % 64));
        if word >= self.bits.len() {
            self.bits.resize(word + 1, 0);
        }
        if self.bits[word] & bit != 0 {
            sh.dups.fetch_add(1, Relaxed);
            return false;
        }
        self.bits[word] |= bit;
        if self.max.is_some_and(|m| seq < m) {
            sh.reordered.fetch_add(1, Relaxed);
        }
        self.max = Some(self.max.map_or(seq, |m| m.max(seq)));
        true
    }
}

/// One subscriber: reads, answers pings, counts the measured messages it gets and
/// records their latency while the window is open. Runs until the connection ends.
async fn subscriber(run: Arc<Run>, sh: Arc<Shared>, i: usize, mut r: Reader, mut w: Writer) {
    let node = i % 2;
    let mut seen = Seen::default();
    let mut heard = false;
    let mut lats: Vec<u64> = Vec::new();
    let result: Result<(), String> = 'life: loop {
        let now = run.now_ns();
        let mut fresh = 0u64;
        loop {
            let f = match r.next_buffered() {
                Ok(Some(f)) => f,
                Ok(None) => break,
                Err(e) => break 'life Err(format!("read: {e}")),
            };
            match f {
                Frame::Text(t) | Frame::Binary(t) => match incoming(sh.proto, t) {
                    Incoming::Msg(seq, _) if seq >= PROBE => {
                        if !heard {
                            heard = true;
                            sh.heard.fetch_add(1, Relaxed);
                        }
                    }
                    Incoming::Msg(seq, _) if seq >= MAX_SEQ => {
                        run.note_error("a message number this tool never sent");
                    }
                    Incoming::Msg(seq, ts) => {
                        if seen.first(seq, &sh) {
                            fresh += 1;
                            lats.push(now.saturating_sub(ts) / 1000);
                        }
                    }
                    Incoming::Ping => w.push(OP_TEXT, sio::PONG),
                    Incoming::Refused(code) => run.hub_error(code),
                    Incoming::Other => {}
                },
                Frame::Ping(p) => w.push(OP_PONG, p),
                Frame::Pong => {}
                Frame::Close(code) => break 'life Err(format!("closed by the hub ({code:?})")),
            }
        }
        if fresh > 0 {
            let rec = &run.rec;
            sh.got[i].fetch_add(fresh, Relaxed);
            rec.msgs.fetch_add(fresh, Relaxed);
            if rec.window.load(Relaxed) {
                rec.msgs_window.fetch_add(fresh, Relaxed);
                let mut all = rec.hist.lock().unwrap_or_else(|e| e.into_inner());
                let mut mine = sh.hist[node].lock().unwrap_or_else(|e| e.into_inner());
                for l in lats.drain(..) {
                    all.saturating_record(l.max(1));
                    mine.saturating_record(l.max(1));
                }
            }
            lats.clear();
        }
        if w.has_pending() {
            if let Err(e) = w.flush().await {
                break Err(format!("send: {e}"));
            }
        }
        match r.fill().await {
            Ok(true) => {}
            Ok(false) => break Err("connection ended".into()),
            Err(e) => break Err(format!("read: {e}")),
        }
    };
    if let Err(e) = result {
        run.note_error(e);
    }
    run.closed.fetch_add(1, Relaxed);
}

async fn tick(t: &mut Option<Interval>) {
    match t {
        Some(t) => {
            t.tick().await;
        }
        None => std::future::pending().await,
    }
}

/// What the publisher did.
#[derive(Default)]
struct Published {
    /// Measured messages sent, in all and in the window.
    all: u64,
    window: u64,
    err: Option<String>,
}

/// The publisher on node A: probes until every subscriber has heard one (the time it
/// took, or `None`, goes to `probed`), then publishes at `rate` from phase Go to Stop.
/// Keeps reading (and answering pings) afterwards until the connection ends.
#[allow(clippy::too_many_arguments)]
async fn publisher(
    run: Arc<Run>,
    sh: Arc<Shared>,
    group: String,
    rate: f64,
    probe_s: f64,
    subs: usize,
    mut r: Reader,
    mut w: Writer,
    probed: oneshot::Sender<Option<(f64, u64)>>,
) -> Published {
    let proto = sh.proto;
    let pad = run.common.pad;
    let mut phase_rx = run.phase.subscribe();
    let mut out = String::with_capacity(128);
    let mut done = Published::default();
    let mut probes: u64 = 0;
    let t0 = Instant::now();
    let mut probing = Some(probed);
    let mut probe_iv = tokio::time::interval(PROBE_EVERY);
    let mut iv: Option<Interval> = None;
    let send = |out: &mut String, w: &mut Writer, seq: u64, ts: u64| {
        match proto {
            Proto::Wxhub => proto::publish(out, &group, seq, ts, pad),
            Proto::Socketio => sio::publish(out, seq, ts, pad),
        }
        w.push(OP_TEXT, out.as_bytes());
    };
    let err: Option<String> = 'life: loop {
        tokio::select! {
            res = r.fill() => {
                match res {
                    Ok(true) => {}
                    Ok(false) => break Some("publisher: connection ended".into()),
                    Err(e) => break Some(format!("publisher read: {e}")),
                }
                loop {
                    match r.next_buffered() {
                        Ok(Some(Frame::Text(t))) => match incoming(proto, t) {
                            Incoming::Ping => w.push(OP_TEXT, sio::PONG),
                            Incoming::Refused(code) => run.hub_error(code),
                            _ => {}
                        },
                        Ok(Some(Frame::Ping(p))) => w.push(OP_PONG, p),
                        Ok(Some(Frame::Close(c))) => break 'life Some(format!("publisher closed by the hub ({c:?})")),
                        Ok(Some(_)) => {}
                        Ok(None) => break,
                        Err(e) => break 'life Some(format!("publisher read: {e}")),
                    }
                }
            }
            _ = probe_iv.tick(), if probing.is_some() => {
                let secs = t0.elapsed().as_secs_f64();
                if sh.heard.load(Relaxed) >= subs || secs > probe_s {
                    let all = sh.heard.load(Relaxed) >= subs;
                    if let Some(tx) = probing.take() {
                        let _ = tx.send(all.then_some((secs, probes)));
                    }
                } else {
                    send(&mut out, &mut w, PROBE + probes, run.now_ns());
                    probes += 1;
                }
            }
            ch = phase_rx.changed() => {
                if ch.is_err() {
                    break None;
                }
                let p = *phase_rx.borrow_and_update();
                match p {
                    Phase::Go => {
                        let mut i = tokio::time::interval(Duration::from_secs_f64(1.0 / rate));
                        i.set_missed_tick_behavior(MissedTickBehavior::Burst);
                        iv = Some(i);
                    }
                    Phase::Stop => break None,
                    Phase::Wait => {}
                }
            }
            _ = tick(&mut iv) => {
                send(&mut out, &mut w, done.all, run.now_ns());
                done.all += 1;
                if run.rec.window.load(Relaxed) {
                    done.window += 1;
                }
            }
        }
        if w.has_pending() {
            if let Err(e) = w.flush().await {
                break Some(format!("publisher send: {e}"));
            }
        }
    };
    done.err = err;
    if done.err.is_none() {
        // Still a well-behaved client while the subscribers drain: answer pings, count
        // refusals of what was sent.
        tokio::spawn(async move {
            loop {
                while let Ok(Some(f)) = r.next_buffered() {
                    match f {
                        Frame::Text(t) => match incoming(proto, t) {
                            Incoming::Ping => w.push(OP_TEXT, sio::PONG),
                            Incoming::Refused(code) => run.hub_error(code),
                            _ => {}
                        },
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
    done
}

/// The setup steps of a subscriber (`sub`) or of the publisher, named from `name`.
fn steps(proto: Proto, name: &str, group: &str, sub: bool) -> Vec<(String, &'static str)> {
    match proto {
        Proto::Wxhub => {
            let mut s = vec![(proto::join(name), "joined")];
            if sub {
                s.push((proto::subscribe(group), "subscribed"));
            }
            s
        }
        // Every socket is in the peer hub's room once connected.
        Proto::Socketio => vec![(sio::CONNECT.to_string(), sio::CONNECTED)],
    }
}

/// Connects the `n` subscribers, alternately to A and B, with bounded concurrency; each
/// runs [`subscriber`] once ready.
async fn connect_subscribers(
    run: &Arc<Run>,
    sh: &Arc<Shared>,
    targets: &Arc<[Target; 2]>,
    group: &str,
    n: usize,
) -> Connected {
    let c = &run.common;
    let sem = Arc::new(Semaphore::new(c.connect_concurrency.max(1)));
    let ready = Arc::new(AtomicUsize::new(0));
    let failed = Arc::new(AtomicUsize::new(0));
    let t0 = Instant::now();
    let per = Duration::from_secs_f64(c.connect_timeout_s);
    let tag = tag();
    for i in 0..n {
        let permit = sem.clone().acquire_owned().await.expect("semaphore");
        let (run, sh, targets, ready, failed) = (
            run.clone(),
            sh.clone(),
            targets.clone(),
            ready.clone(),
            failed.clone(),
        );
        let steps = steps(sh.proto, &format!("{tag}s{i}"), group, true);
        tokio::spawn(async move {
            let res =
                tokio::time::timeout(per, open(&run, sh.proto, &targets[i % 2], i, &steps)).await;
            drop(permit);
            match res {
                Ok(Ok((r, w))) => {
                    sh.ready[i].store(true, Relaxed);
                    ready.fetch_add(1, Relaxed);
                    subscriber(run, sh, i, r, w).await;
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
    let secs = t0.elapsed().as_secs_f64();
    let ready = ready.load(Relaxed);
    Connected {
        ready,
        failed: failed.load(Relaxed),
        secs,
        rate: if secs > 0.0 { ready as f64 / secs } else { 0.0 },
        tail_rate: None,
    }
}

/// Percentiles of one histogram, in ms: (p50, p99, p99.9, max), `None` when empty.
fn percentiles(h: &Histogram<u64>) -> [Option<f64>; 4] {
    if h.is_empty() {
        return [None; 4];
    }
    let q = |x: f64| Some(h.value_at_quantile(x) as f64 / 1000.0);
    [q(0.5), q(0.99), q(0.999), Some(h.max() as f64 / 1000.0)]
}

pub(super) async fn fanout2(run: Arc<Run>, a: &Fanout2Args) -> Report {
    let mut rep = Report::default();
    let n = run.common.clients;
    let proto = a.proto;
    let target_b = match sys::parse_target(&a.url_b) {
        Ok(t) => t,
        Err(e) => {
            rep.fatal(format!("--url-b: {e}"));
            return rep;
        }
    };
    let target_a = Target {
        addr: run.target.addr,
        host: run.target.host.clone(),
        path: run.target.path.clone(),
    };
    let targets = Arc::new([target_a, target_b]);
    let url_a = run.common.url.clone().unwrap_or_default();
    rep.put("proto", format!("{proto:?}").to_lowercase());
    rep.put("url_b", a.url_b.clone());
    rep.put("rate", a.rate);
    rep.put("group", a.group.clone());
    rep.row(
        "nodes",
        format!(
            "{} protocol; A {url_a} (publisher, even subscribers), B {} (odd subscribers)",
            format!("{proto:?}").to_lowercase(),
            a.url_b
        ),
    );
    let hist = || Histogram::new_with_bounds(1, 3_600_000_000, 3).expect("histogram bounds");
    let sh = Arc::new(Shared {
        proto,
        ready: (0..n).map(|_| AtomicBool::new(false)).collect(),
        got: (0..n).map(|_| AtomicU64::new(0)).collect(),
        heard: AtomicUsize::new(0),
        dups: AtomicU64::new(0),
        reordered: AtomicU64::new(0),
        hist: [Mutex::new(hist()), Mutex::new(hist())],
    });
    let rss0 = run.rss();
    let conn = connect_subscribers(&run, &sh, &targets, &a.group, n).await;
    rep.connected(&conn, n);
    if conn.ready == 0 {
        return rep;
    }
    let (r, w) = match open(
        &run,
        proto,
        &targets[0],
        n,
        &steps(proto, &format!("{}pub", tag()), &a.group, false),
    )
    .await
    {
        Ok(c) => c,
        Err(e) => {
            rep.fatal(format!("publisher: {e}"));
            return rep;
        }
    };
    let ready = &sh.ready;
    let on = |node: usize| (0..n).filter(move |&i| i % 2 == node && ready[i].load(Relaxed));
    let subs = conn.ready;
    let subs_on = [on(0).count(), on(1).count()];
    rep.put("subscribers", subs);
    rep.put("subscribers_a", subs_on[0]);
    rep.put("subscribers_b", subs_on[1]);

    // Probe, then settle, then publish from Go to Stop.
    let (tx, probed) = oneshot::channel();
    let publisher = tokio::spawn(publisher(
        run.clone(),
        sh.clone(),
        a.group.clone(),
        a.rate,
        a.probe_s,
        subs,
        r,
        w,
        tx,
    ));
    let probe = probed.await.ok().flatten();
    match probe {
        Some((secs, k)) => rep.row(
            "probe",
            format!(
                "all {subs} subscribers heard node A's publisher after {secs:.2} s ({k} probes)"
            ),
        ),
        None => rep.row(
            "probe",
            format!(
                "only {}/{subs} subscribers heard node A's publisher within {} s; measuring anyway",
                sh.heard.load(Relaxed),
                a.probe_s
            ),
        ),
    }
    rep.put("probe_s", probe.map(|p| p.0));
    let rss1 = settled_rss(&run, false).await;

    // Phase Go, the window (node A's, B's and Redis's CPU read around it), phase Stop.
    let c = &run.common;
    let _ = run.phase.send(Phase::Go);
    tokio::time::sleep(Duration::from_secs_f64(c.warmup_s)).await;
    let cpu_of = |pid: Option<i32>| pid.and_then(sys::cpu_s);
    let (b0, redis0) = (cpu_of(a.pid_b), cpu_of(a.redis_pid));
    let mark = CpuMark::take(run.pid);
    run.rec.window.store(true, Relaxed);
    tokio::time::sleep(Duration::from_secs_f64(c.duration_s)).await;
    run.rec.window.store(false, Relaxed);
    let mut u = mark.since(run.pid);
    let (b1, redis1) = (cpu_of(a.pid_b), cpu_of(a.redis_pid));
    let _ = run.phase.send(Phase::Stop);
    let rss2 = run.rss();
    let pct = |x: Option<f64>, y: Option<f64>| x.zip(y).map(|(x, y)| (y - x) / u.secs * 100.0);
    let (b_pct, redis_pct) = (pct(b0, b1), pct(redis0, redis1));
    // Node B and Redis are not "everything else".
    u.others_pct = u
        .others_pct
        .map(|o| (o - b_pct.unwrap_or(0.0) - redis_pct.unwrap_or(0.0)).max(0.0));

    let published = publisher.await.unwrap_or_else(|_| Published {
        err: Some("publisher task failed".into()),
        ..Published::default()
    });
    if let Some(e) = &published.err {
        run.note_error(e.clone());
    }
    let rec = &run.rec;
    // Publishes the hub refused reach nobody.
    let per_sub = || published.all.saturating_sub(rec.refused());
    let drained = drain(&run, || rec.msgs.load(Relaxed) >= per_sub() * subs as u64).await;
    let per_sub = per_sub();
    let deliveries = rec.msgs_window.load(Relaxed);
    rep.row(
        "fan-out",
        format!(
            "rate {} msg/s from node A to {subs} subscribers ({} on A, {} on B): {} published in {:.1} s",
            a.rate, subs_on[0], subs_on[1], published.window, u.secs
        ),
    );
    rep.row(
        "deliveries",
        format!(
            "{deliveries} in the window = {:.0} deliveries/s (published x subscribers: {:.0}/s)",
            deliveries as f64 / u.secs,
            published.window as f64 * subs as f64 / u.secs
        ),
    );
    rep.put("published", published.window);
    rep.put("published_per_s", published.window as f64 / u.secs);
    rep.deliveries(&u, deliveries, rec, "; node A's CPU above");
    for (node, name) in [(0, "A"), (1, "B")] {
        let h = sh.hist[node].lock().unwrap_or_else(|e| e.into_inner());
        let [p50, p99, p999, max] = percentiles(&h);
        rep.row(
            &format!("latency on {name}"),
            format!(
                "p50 {}  p99 {}  p99.9 {}  max {}  ({} samples)",
                opt(p50, " ms", 2),
                opt(p99, " ms", 2),
                opt(p999, " ms", 2),
                opt(max, " ms", 2),
                h.len()
            ),
        );
        let k = name.to_lowercase();
        rep.put(&format!("p50_ms_{k}"), p50);
        rep.put(&format!("p99_ms_{k}"), p99);
        rep.put(&format!("p999_ms_{k}"), p999);
        rep.put(&format!("max_ms_{k}"), max);
    }
    let cluster_cpu_s = u.hub_cpu_s.map(|a_s| {
        a_s + b_pct.map_or(0.0, |p| p * u.secs / 100.0)
            + redis_pct.map_or(0.0, |p| p * u.secs / 100.0)
    });
    let per_delivery = cluster_cpu_s
        .filter(|_| deliveries > 0)
        .map(|s| s * 1e6 / deliveries as f64);
    rep.row(
        "cluster CPU",
        format!(
            "node A {}, node B {}, Redis {} of one core; {} per delivery (A + B + Redis)",
            opt(u.hub_pct, "%", 1),
            opt(b_pct, "%", 1),
            opt(redis_pct, "%", 1),
            opt(per_delivery, " us", 2)
        ),
    );
    rep.put("cpu_pct_a", u.hub_pct);
    rep.put("cpu_pct_b", b_pct);
    rep.put("cpu_pct_redis", redis_pct);
    rep.put("cluster_cpu_us_per_delivery", per_delivery);

    // What each subscriber received, of the messages the hub took.
    let mut complete = [0usize; 2];
    let mut missing = [0u64; 2];
    let (mut least, mut most) = (u64::MAX, 0u64);
    for node in 0..2 {
        for i in on(node) {
            let got = sh.got[i].load(Relaxed);
            least = least.min(got);
            most = most.max(got);
            if got >= per_sub {
                complete[node] += 1;
            }
            missing[node] += per_sub.saturating_sub(got);
        }
    }
    let received = rec.msgs.load(Relaxed);
    let expected = per_sub * subs as u64;
    let (dups, reordered) = (sh.dups.load(Relaxed), sh.reordered.load(Relaxed));
    rep.row(
        "completeness",
        format!(
            "{received}/{expected} delivered after {drained:.1} s drain ({} published, {} refused); \
             per subscriber {least}..{most} of {per_sub}; every message: {}/{} on A, {}/{} on B \
             (missing {} on A, {} on B); {dups} duplicates, {reordered} out of order; {} subscribers closed",
            published.all,
            rec.refused(),
            complete[0],
            subs_on[0],
            complete[1],
            subs_on[1],
            missing[0],
            missing[1],
            run.closed.load(Relaxed)
        ),
    );
    rep.row(
        "node A RSS",
        format!("{} -> {} -> {}", kib(rss0), kib(rss1), kib(rss2)),
    );
    rep.put("rss_before_kib", rss0);
    rep.put("rss_connected_kib", rss1);
    rep.put("rss_after_kib", rss2);
    rep.put("published_total", published.all);
    rep.put("expected_total", expected);
    rep.put("received_total", received);
    rep.put("undelivered", expected.saturating_sub(received));
    rep.put("missing_a", missing[0]);
    rep.put("missing_b", missing[1]);
    rep.put("complete_a", complete[0]);
    rep.put("complete_b", complete[1]);
    rep.put("duplicates", dups);
    rep.put("reordered", reordered);
    rep.put("subscribers_closed", run.closed.load(Relaxed));
    if deliveries == 0 {
        rep.fatal("no delivery in the measurement window");
    }
    rep
}
