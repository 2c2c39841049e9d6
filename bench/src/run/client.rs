//! One client: connecting it and waiting for its setup replies ([`open_client`]), then
//! its loop ([`client_task`]): read, answer pings, count what arrives and send what its
//! [`Role`] says when the phase allows; and [`keep_reading`] for the helper connections
//! (the burst client, the fanout publisher) once their own work is done.

use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use tokio::time::{Interval, MissedTickBehavior};

use super::recorder::Recorder;
use super::{Phase, Run};
use crate::proto;
use crate::ws::{self, Frame, Reader, Writer, OP_PONG, OP_TEXT};

/// What a client does besides reading and answering pings.
#[derive(Debug, Clone)]
pub(super) enum Role {
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

fn epoch_us() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_micros() as u64)
        .unwrap_or(0)
}

/// What a client does before it counts as ready: the handshake's query (`name=..`, or
/// empty), the frames it then sends at once, and the reply types it waits for, in order.
#[derive(Default)]
pub(super) struct Setup {
    query: String,
    frames: Vec<String>,
    awaits: Vec<&'static str>,
}

impl Setup {
    /// Joins (and subscribes) in the handshake's query, as wxhub allows, and waits for the
    /// replies that brings: one round trip instead of two.
    pub(super) fn in_handshake(name: &str, group: Option<&str>) -> Setup {
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
pub(super) async fn open_client(
    run: &Run,
    i: usize,
    setup: &Setup,
) -> Result<(Reader, Writer), String> {
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
pub(super) async fn client_task(
    run: Arc<Run>,
    i: usize,
    n: usize,
    mut r: Reader,
    mut w: Writer,
    role: Role,
) {
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

/// Keeps a helper connection (the burst client, the fanout publisher) a well-behaved
/// client once its own work is done: in a task of its own, reads and drops what it still
/// receives (copies, acks) and answers pings until the connection ends, so its unread
/// frames do not pile up in the hub while the clients drain. Refusals of what it sent
/// still count.
pub(super) fn keep_reading(run: Arc<Run>, mut r: Reader, mut w: Writer) {
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
