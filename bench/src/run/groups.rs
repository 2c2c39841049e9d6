//! `groups`: what group memberships cost the hub, and whether it gives the memory back.
//!
//! Each of `--cycles` cycles connects N clients that join, reads the hub's RSS, has each
//! subscribe to K groups (its own K, or with `--shared` the same K for everyone), reads
//! it again, closes every connection and reads it a third time; each reading is taken
//! once the hub has settled. After the last cycle the hub is watched idle for `--idle-s`.
//! Per connection is joined minus before, over the clients; per membership is subscribed
//! minus joined, over the `subscribed` replies.

use std::sync::atomic::{AtomicUsize, Ordering::Relaxed};
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::{json, Value};
use tokio::sync::{watch, OwnedSemaphorePermit, Semaphore};

use super::client::open_client;
use super::measure::settle;
use super::report::{kib, opt};
use super::{tag, Report, Run};
use crate::proto;
use crate::ws::{Frame, OP_PONG, OP_TEXT};
use crate::GroupsArgs;

/// What the clients of a cycle do next.
const JOINED: u8 = 0;
const SUBSCRIBE: u8 = 1;
const CLOSE: u8 = 2;

/// How far the clients of one cycle got, and the subscribes they may have in flight.
struct Counts {
    joined: AtomicUsize,
    failed: AtomicUsize,
    /// Clients that have a reply (`subscribed` or an error) to each of their K subscribes.
    answered: AtomicUsize,
    /// `subscribed` replies: the memberships made.
    memberships: AtomicUsize,
    /// One permit per subscribe that may be sent before its reply (--inflight).
    inflight: Semaphore,
}

/// One client: joins, waits for SUBSCRIBE, subscribes to `groups` (each subscribe takes
/// one of the run's `inflight` permits until its reply), and reads (answering pings)
/// until CLOSE, when dropping its socket disconnects it.
async fn client(
    run: Arc<Run>,
    i: usize,
    name: String,
    groups: Vec<String>,
    mut phase: watch::Receiver<u8>,
    counts: Arc<Counts>,
    permit: OwnedSemaphorePermit,
) {
    let inflight = &counts.inflight;
    let setup = vec![(proto::join(&name), "joined")].into();
    let per = Duration::from_secs_f64(run.common.connect_timeout_s);
    let opened = tokio::time::timeout(per, open_client(&run, i, &setup)).await;
    // Held until joined (or failed): bounds the handshakes in progress.
    drop(permit);
    let (mut r, mut w) = match opened {
        Ok(Ok(c)) => c,
        Ok(Err(e)) => {
            run.note_error(e);
            counts.failed.fetch_add(1, Relaxed);
            return;
        }
        Err(_) => {
            run.note_error("timeout before ready");
            counts.failed.fetch_add(1, Relaxed);
            return;
        }
    };
    counts.joined.fetch_add(1, Relaxed);
    // Subscribes sent, and replies to them; `go` once phase SUBSCRIBE came.
    let (mut next, mut replies, mut go) = (0usize, 0usize, false);
    loop {
        loop {
            let f = match r.next_buffered() {
                Ok(Some(f)) => f,
                Ok(None) => break,
                Err(e) => return run.note_error(format!("read: {e}")),
            };
            match f {
                Frame::Text(t) => match proto::msg_type(t) {
                    b"subscribed" => {
                        counts.memberships.fetch_add(1, Relaxed);
                        replies += 1;
                        inflight.add_permits(1);
                    }
                    b"error" => {
                        run.hub_error(proto::error_code(t).unwrap_or(b"?"));
                        replies += 1;
                        inflight.add_permits(1);
                    }
                    _ => continue,
                },
                Frame::Ping(p) => {
                    w.push(OP_PONG, p);
                    continue;
                }
                Frame::Close(code) => {
                    return run.note_error(format!("closed by the hub ({code:?})"))
                }
                _ => continue,
            }
            if go && replies == groups.len() {
                counts.answered.fetch_add(1, Relaxed);
            }
        }
        if w.has_pending() {
            if let Err(e) = w.flush().await {
                return run.note_error(format!("send: {e}"));
            }
        }
        tokio::select! {
            res = r.fill() => match res {
                Ok(true) => {}
                Ok(false) => return run.note_error("connection ended"),
                Err(e) => return run.note_error(format!("read: {e}")),
            },
            p = inflight.acquire(), if go && next < groups.len() => {
                // One permit per subscribe sent, given back by its reply; take what else
                // is free at once, so that frames go out in batches.
                p.expect("semaphore").forget();
                w.push(OP_TEXT, proto::subscribe(&groups[next]).as_bytes());
                next += 1;
                while next < groups.len() {
                    match inflight.try_acquire() {
                        Ok(p) => p.forget(),
                        Err(_) => break,
                    }
                    w.push(OP_TEXT, proto::subscribe(&groups[next]).as_bytes());
                    next += 1;
                }
            }
            ch = phase.changed() => {
                if ch.is_err() {
                    return;
                }
                match *phase.borrow_and_update() {
                    SUBSCRIBE if !go => {
                        go = true;
                        if groups.is_empty() {
                            counts.answered.fetch_add(1, Relaxed);
                        }
                    }
                    CLOSE => return,
                    _ => {}
                }
            }
        }
    }
}

/// Waits until `done()` or `limit`.
async fn wait_for(limit: Duration, done: impl Fn() -> bool) {
    let t0 = Instant::now();
    while !done() && t0.elapsed() < limit {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Bytes of RSS growth per item.
fn per(from: Option<u64>, to: Option<u64>, items: usize) -> Option<f64> {
    match (from, to) {
        (Some(a), Some(b)) if items > 0 => Some((b as f64 - a as f64) * 1024.0 / items as f64),
        _ => None,
    }
}

pub(super) async fn groups(run: Arc<Run>, a: &GroupsArgs) -> Report {
    let mut rep = Report::default();
    let (n, k) = (run.common.clients, a.groups);
    let tag = tag();
    let limit = Duration::from_secs_f64(run.common.connect_timeout_s);
    rep.put("groups", k);
    rep.put("shared", a.shared);
    rep.put("cycles", a.cycles);
    let rss0 = run.rss();
    rep.row("hub RSS at start", kib(rss0));
    rep.put("rss_start_kib", rss0);
    let mut cycles = Vec::new();
    let mut peak = rss0;
    for cycle in 0..a.cycles {
        let t0 = Instant::now();
        let before = run.rss();
        let (phase, _) = watch::channel(JOINED);
        let counts = Arc::new(Counts {
            joined: AtomicUsize::new(0),
            failed: AtomicUsize::new(0),
            answered: AtomicUsize::new(0),
            memberships: AtomicUsize::new(0),
            inflight: Semaphore::new(a.inflight.max(1)),
        });
        let sem = Arc::new(Semaphore::new(run.common.connect_concurrency.max(1)));
        let mut tasks = Vec::with_capacity(n);
        for i in 0..n {
            let name = format!("{tag}c{cycle}i{i}");
            let groups = (0..k)
                .map(|j| match a.shared {
                    true => format!("{tag}g{j}"),
                    false => format!("{name}g{j}"),
                })
                .collect();
            let (run, rx, counts) = (run.clone(), phase.subscribe(), counts.clone());
            let permit = sem.clone().acquire_owned().await.expect("semaphore");
            tasks.push(tokio::spawn(client(
                run, i, name, groups, rx, counts, permit,
            )));
        }
        wait_for(limit, || {
            counts.joined.load(Relaxed) + counts.failed.load(Relaxed) >= n
        })
        .await;
        let ready = counts.joined.load(Relaxed);
        settle(&run, false).await;
        let joined = run.rss();
        let _ = phase.send(SUBSCRIBE);
        wait_for(limit, || counts.answered.load(Relaxed) >= ready).await;
        let memberships = counts.memberships.load(Relaxed);
        settle(&run, false).await;
        let subscribed = run.rss();
        if a.hold_s > 0.0 {
            eprintln!(
                "groups: cycle {} subscribed, {memberships} memberships, RSS {}; holding {:.0} s",
                cycle + 1,
                kib(subscribed),
                a.hold_s
            );
            tokio::time::sleep(Duration::from_secs_f64(a.hold_s)).await;
        }
        let _ = phase.send(CLOSE);
        for t in tasks {
            let _ = t.await;
        }
        settle(&run, false).await;
        let closed = run.rss();
        peak = peak.max(subscribed).max(joined);
        let per_conn = per(before, joined, ready);
        let per_member = per(joined, subscribed, memberships);
        rep.row(
            &format!("cycle {}", cycle + 1),
            format!(
                "{ready}/{n} joined, {memberships} memberships; RSS {} -> joined {} -> subscribed {} -> closed {} \
                 ({} per connection, {} per membership; {:.1} s)",
                kib(before),
                kib(joined),
                kib(subscribed),
                kib(closed),
                opt(per_conn.map(|b| b / 1024.0), " KiB", 2),
                opt(per_member, " B", 0),
                t0.elapsed().as_secs_f64()
            ),
        );
        cycles.push(json!({
            "ready": ready,
            "failed": counts.failed.load(Relaxed),
            "memberships": memberships,
            "rss_before_kib": before,
            "rss_joined_kib": joined,
            "rss_subscribed_kib": subscribed,
            "rss_closed_kib": closed,
            "rss_per_conn_bytes": per_conn,
            "rss_per_membership_bytes": per_member,
        }));
        if ready == 0 {
            rep.fatal(format!("cycle {}: no client became ready", cycle + 1));
            break;
        }
    }
    rep.put("cycles_detail", Value::Array(cycles));
    rep.put("rss_peak_kib", peak);
    // The hub idle with nobody connected: does its RSS come back down?
    let t0 = Instant::now();
    let mut samples = vec![(0.0, run.rss())];
    while t0.elapsed().as_secs_f64() < a.idle_s {
        let left = a.idle_s - t0.elapsed().as_secs_f64();
        tokio::time::sleep(Duration::from_secs_f64(a.sample_s.min(left).max(0.01))).await;
        samples.push((t0.elapsed().as_secs_f64(), run.rss()));
    }
    let last = samples.last().and_then(|s| s.1);
    rep.row("hub RSS peak", kib(peak));
    rep.row(
        "idle",
        samples
            .iter()
            .map(|(t, r)| format!("{t:.0} s {}", kib(*r)))
            .collect::<Vec<_>>()
            .join(", "),
    );
    rep.row(
        "hub RSS after idle",
        format!(
            "{} after {:.0} s ({} above the start)",
            kib(last),
            a.idle_s,
            kib(last.zip(rss0).map(|(l, s)| l.saturating_sub(s)))
        ),
    );
    rep.put(
        "idle_rss_kib",
        samples
            .iter()
            .map(|(t, r)| json!([(t * 10.0).round() / 10.0, r]))
            .collect::<Vec<_>>(),
    );
    rep.put("rss_after_idle_kib", last);
    rep
}
