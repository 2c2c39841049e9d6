//! `idle`: N connections that each `join` (and, with `--group`, subscribe) and stay. It
//! measures the connect rate (also of the clients after `--tail-from`, by default the
//! last third), the hub's RSS and the kernel's slab per connection, the RSS again after a
//! burst of traffic (every client pings, `--burst` broadcasts reach everyone), and the
//! hub's CPU while the connections are held.

use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;
use std::time::{Duration, Instant};

use super::client::{keep_reading, open_client, Role, Setup};
use super::connect::connect_all;
use super::measure::{drain, settle};
use super::report::{kib, opt};
use super::{tag, Phase, Report, Run};
use crate::proto;
use crate::sys::{self, CpuMark};
use crate::ws::OP_TEXT;
use crate::IdleArgs;

/// The growth from `before` to `after` (KiB) in bytes per ready connection; `None`
/// without both readings or without connections: for the hub RSS and the kernel slab
/// figures.
fn per_conn_bytes(before: Option<u64>, after: Option<u64>, ready: usize) -> Option<f64> {
    match (before, after) {
        (Some(a), Some(b)) if ready > 0 => Some((b as f64 - a as f64) * 1024.0 / ready as f64),
        _ => None,
    }
}

pub(super) async fn idle(run: Arc<Run>, a: &IdleArgs) -> Report {
    let (burst, hold_s) = (a.burst, a.hold_s);
    let mut rep = Report::default();
    let n = run.common.clients;
    let tail_from = a.tail_from.unwrap_or(n * 2 / 3);
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
        Some(tail_from),
    )
    .await;
    rep.connected(&conn, n);
    if let Some(t) = conn.tail_rate {
        rep.row(
            "connect rate, tail",
            format!("{t:.0} conn/s after {tail_from} were connected"),
        );
    }
    rep.put("connect_tail_per_s", conn.tail_rate);
    rep.put("tail_from", tail_from);
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
