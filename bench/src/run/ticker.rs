//! `ticker`: N subscribers of the hub's own `stock` feed (or one `stock.<SYMBOL>`), which
//! the hub publishes every `--tick-ms`. The clients only read: it measures deliveries/s
//! against the expected rate, the hub's CPU per delivery and the latency from each
//! tick's `ts` (millisecond resolution).

use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;

use super::client::Role;
use super::connect::connect;
use super::measure::{settled_rss, window};
use super::{tag, Phase, Report, Run};
use crate::proto;

pub(super) async fn ticker(run: Arc<Run>, tick_ms: u64, group: String, join: bool) -> Report {
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
