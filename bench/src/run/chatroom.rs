//! `chatroom`: a busy room, N members of one group, every one also publishing to it at a
//! low `--rate`. It measures deliveries/s (each publish reaches every member), the hub's
//! CPU per delivery and the latency, and checks that every publish the hub accepted
//! reached every member.

use std::sync::Arc;
use std::time::Duration;

use super::client::Role;
use super::connect::connect;
use super::measure::{completeness, measure_clients, Measured};
use super::{tag, Report, Run};
use crate::proto;

pub(super) async fn chatroom(run: Arc<Run>, rate: f64, group: String) -> Report {
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
    completeness(&mut rep, &run, members, drained, ("delivered", "published"));
    rep.rss_change(rss0, rss1);
    if msgs == 0 {
        rep.fatal("no delivery in the measurement window");
    }
    rep
}
