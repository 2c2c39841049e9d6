//! Running a scenario: the state the client tasks share ([`Run`]), the phases they
//! follow, and the dispatch to the scenario's own module (`idle`, `fanout`, `fanout2`,
//! `direct`, `chatroom`, `ticker`, `groups`, one file each). The measuring code those share lives
//! beside them: the counters (`recorder`), one client's connection and loop (`client`),
//! connecting them all (`connect`), settling and the measurement window (`measure`),
//! and the table and JSON line (`report`).
//!
//! What is defined here stays private: the submodules see it, the rest of the crate
//! only needs [`Run::new`], [`run`] and [`Report`].

mod chatroom;
mod client;
mod connect;
mod direct;
mod fanout;
mod fanout2;
mod groups;
mod idle;
mod measure;
mod recorder;
mod report;
mod ticker;

use std::collections::BTreeMap;
use std::net::Ipv4Addr;
use std::sync::atomic::AtomicUsize;
use std::sync::{Arc, Mutex};
use std::time::Instant;

use serde_json::{json, Value};
use tokio::sync::watch;

use crate::sys;
use crate::ws::Target;
use crate::{Common, Scenario};
use recorder::Recorder;
pub(crate) use report::Report;

/// Where the clients are in the run; each client task watches it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    Wait,
    Go,
    Stop,
}

/// Everything the client tasks share.
pub(crate) struct Run {
    common: Common,
    target: Target,
    sources: Vec<Ipv4Addr>,
    pid: Option<i32>,
    /// Time base of the timestamps this tool puts in message bodies.
    t0: Instant,
    rec: Recorder,
    phase: watch::Sender<Phase>,
    errors: Mutex<BTreeMap<String, u64>>,
    /// Clients whose connection ended after they were ready.
    closed: AtomicUsize,
}

impl Run {
    pub(crate) fn new(
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

    fn note_error(&self, e: impl Into<String>) {
        let mut m = self.errors.lock().unwrap_or_else(|e| e.into_inner());
        *m.entry(e.into()).or_insert(0) += 1;
    }

    /// The hub answered one of this tool's commands with an `error` of this `code`.
    /// Only `rate_limited` is a refusal (the command was well-formed and the hub chose
    /// not to route it, so nothing is delivered for it); any other code (`not_found`
    /// for a partner the hub dropped, ...) is a failure, reported under `errors`, and
    /// what it did not deliver still counts as undelivered.
    fn hub_error(&self, code: &[u8]) {
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

pub(crate) async fn run(run: Arc<Run>, scenario: Scenario) -> Report {
    match scenario {
        Scenario::Idle(a) => idle::idle(run, &a).await,
        Scenario::Fanout(a) => {
            fanout::fanout(run, a.inflight, a.rate, a.group, a.lost_after_s).await
        }
        Scenario::Fanout2(a) => fanout2::fanout2(run, &a).await,
        Scenario::Direct(a) => direct::direct(run, a.window, a.rate).await,
        Scenario::Chatroom(a) => chatroom::chatroom(run, a.rate, a.group).await,
        Scenario::Ticker(a) => ticker::ticker(run, a.tick_ms, a.group, a.join).await,
        Scenario::Groups(a) => groups::groups(run, &a).await,
    }
}

/// A unique-enough prefix for user names, so runs against one long-lived hub do not
/// collide with each other's sessions.
fn tag() -> String {
    format!("b{}", std::process::id())
}
