//! `fanout`: N subscribers of one group and one publisher. With `--inflight K` it
//! saturates the hub (at most K messages published and not yet delivered to every
//! subscriber); with `--rate R` it publishes at a fixed rate. It measures deliveries/s,
//! the hub's CPU per delivery and the end-to-end latency, and checks that every
//! publish the hub accepted reached every subscriber.

use std::collections::VecDeque;
use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::time::MissedTickBehavior;

use super::client::{keep_reading, open_client, Role};
use super::connect::connect;
use super::measure::{drain, go_window_stop, settled_rss};
use super::report::kib;
use super::{tag, Phase, Report, Run};
use crate::proto;
use crate::ws::{Frame, OP_PONG, OP_TEXT};

pub(super) async fn fanout(
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
