//! The measuring sequence the scenarios share: let the hub settle, read its RSS, open
//! and close the measurement window around phase Go, and drain what is still on the way.
//! [`measure_clients`] is the whole of it for the scenarios whose clients both send and
//! receive (`direct`, `chatroom`), and [`completeness`] reports what came of their sends.

use std::sync::atomic::Ordering::Relaxed;
use std::time::{Duration, Instant};

use super::recorder::Recorder;
use super::{Phase, Report, Run};
use crate::sys::{CpuMark, CpuUse};

/// Waits --settle-s, then (with a hub pid, unless `busy` is expected) until the hub is
/// quiet for a second. Returns the seconds waited.
pub(super) async fn settle(run: &Run, busy: bool) -> f64 {
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
pub(super) async fn window(run: &Run) -> CpuUse {
    let c = &run.common;
    tokio::time::sleep(Duration::from_secs_f64(c.warmup_s)).await;
    let mark = CpuMark::take(run.pid);
    run.rec.window.store(true, Relaxed);
    tokio::time::sleep(Duration::from_secs_f64(c.duration_s)).await;
    run.rec.window.store(false, Relaxed);
    mark.since(run.pid)
}

/// Waits until `done()` or --drain-s.
pub(super) async fn drain(run: &Run, done: impl Fn() -> bool) -> f64 {
    let t0 = Instant::now();
    let limit = Duration::from_secs_f64(run.common.drain_s);
    while !done() && t0.elapsed() < limit {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    t0.elapsed().as_secs_f64()
}

/// What `measure_clients` hands back to the scenarios whose clients send the load.
pub(super) struct Measured {
    /// Hub RSS once settled, before the window.
    pub(super) rss1: Option<u64>,
    /// CPU use over the window (and its length, `secs`).
    pub(super) cpu: CpuUse,
    /// Seconds spent draining after the window.
    pub(super) drained: f64,
    /// Messages received in the window.
    pub(super) msgs: u64,
    /// Messages sent in the window.
    pub(super) sent: u64,
}

/// Settle, read the RSS, Go / window / Stop, then drain until every message sent and
/// not refused has arrived `copies` times (1 for direct messages, the group size for a
/// group): the whole measurement of `direct` and `chatroom`, whose clients both send
/// and receive.
pub(super) async fn measure_clients(run: &Run, copies: u64) -> Measured {
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

/// Lets the hub settle (see `settle`) and then reads its RSS: the "connected" memory
/// figure the scenarios report, taken at the same point in each.
pub(super) async fn settled_rss(run: &Run, busy: bool) -> Option<u64> {
    settle(run, busy).await;
    run.rss()
}

/// Phase Go, the measurement window, phase Stop: the clients (and a publisher, if any)
/// drive load only between the two, so the window sees the load and nothing else.
pub(super) async fn go_window_stop(run: &Run) -> CpuUse {
    let _ = run.phase.send(Phase::Go);
    let u = window(run).await;
    let _ = run.phase.send(Phase::Stop);
    u
}

/// The `completeness` row and the totals of a scenario whose clients send the load, once
/// drained (`drained` seconds): every message they sent that the hub did not refuse is
/// expected `copies` times. `received` and `sent` are the row's words for the two sides
/// (`received`/`sent` for direct messages, `delivered`/`published` for a group); the
/// total sent goes in the JSON as `<sent>_total`.
pub(super) fn completeness(
    rep: &mut Report,
    run: &Run,
    copies: u64,
    drained: f64,
    (received, sent): (&str, &str),
) {
    let rec = &run.rec;
    let (sent_all, recv_all) = (rec.sent.load(Relaxed), rec.msgs.load(Relaxed));
    let expected = accepted(rec) * copies;
    rep.row(
        "completeness",
        format!(
            "{recv_all}/{expected} {received} after {drained:.1} s drain ({sent_all} {sent}, {} refused), \
             {} acks, {} clients closed",
            rec.refused(),
            rec.acks.load(Relaxed),
            run.closed.load(Relaxed)
        ),
    );
    rep.put(&format!("{sent}_total"), sent_all);
    rep.put("expected_total", expected);
    rep.put("received_total", recv_all);
    rep.put("undelivered", expected.saturating_sub(recv_all));
}
