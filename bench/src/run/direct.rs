//! `direct`: N pairs of clients sending `direct` messages to each other, in a closed
//! loop (`--window` messages in flight per client, each received one answered with a
//! new one) or at a fixed `--rate` per client. It measures messages/s, the hub's CPU per
//! message and the latency, and checks that every message the hub accepted arrived.

use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;
use std::time::Duration;

use super::client::Role;
use super::connect::connect;
use super::measure::{completeness, measure_clients, Measured};
use super::{tag, Report, Run};
use crate::proto;

pub(super) async fn direct(run: Arc<Run>, window_k: usize, rate: Option<f64>) -> Report {
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
    completeness(&mut rep, &run, 1, drained, ("received", "sent"));
    rep.rss_change(rss0, rss1);
    rep.put("acks", rec.acks.load(Relaxed));
    if msgs == 0 {
        rep.fatal("no message in the measurement window");
    }
    rep
}
