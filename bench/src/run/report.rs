//! The table and the JSON line of one run ([`Report`]): the rows the scenarios add, the
//! ones they share (connected, deliveries with hub CPU and latency, hub RSS), and the
//! refusals and errors every run ends with. `bench/smoke.sh` and `bench/sitting.sh` read
//! this output: its row names and JSON keys are an interface.

use serde_json::{json, Map, Value};

use super::connect::Connected;
use super::recorder::Recorder;
use super::Run;
use crate::sys::CpuUse;

/// The table and the JSON line of one run.
#[derive(Default)]
pub(crate) struct Report {
    rows: Vec<(String, String)>,
    json: Map<String, Value>,
    fatal: Vec<String>,
}

pub(super) fn kib(v: Option<u64>) -> String {
    v.map(|k| format!("{:.1} MiB", k as f64 / 1024.0))
        .unwrap_or_else(|| "-".into())
}

pub(super) fn opt(v: Option<f64>, unit: &str, prec: usize) -> String {
    v.map(|x| format!("{x:.prec$}{unit}"))
        .unwrap_or_else(|| "-".into())
}

impl Report {
    pub(super) fn row(&mut self, k: &str, v: impl Into<String>) {
        self.rows.push((k.to_string(), v.into()));
    }

    pub(super) fn put(&mut self, k: &str, v: impl Into<Value>) {
        self.json.insert(k.to_string(), v.into());
    }

    pub(crate) fn fatal(&mut self, e: impl Into<String>) {
        self.fatal.push(e.into());
    }

    pub(super) fn connected(&mut self, c: &Connected, n: usize) {
        self.row(
            "connected",
            format!(
                "{}/{n} ready, {} failed in {:.2} s ({:.0} conn/s)",
                c.ready, c.failed, c.secs, c.rate
            ),
        );
        self.put("ready", c.ready);
        self.put("failed", c.failed);
        self.put("connect_s", c.secs);
        self.put("connect_per_s", c.rate);
        if c.ready == 0 {
            self.fatal("no client became ready");
        }
    }

    fn cpu(&mut self, u: &CpuUse, deliveries: u64) {
        let per = match (u.hub_cpu_s, deliveries) {
            (Some(s), d) if d > 0 => Some(s * 1e6 / d as f64),
            _ => None,
        };
        self.row(
            "hub CPU",
            format!(
                "{} of one core, {} per delivery",
                opt(u.hub_pct, "%", 1),
                opt(per, " us", 3)
            ),
        );
        if !u.hub_threads.is_empty() {
            let parts: Vec<String> = u
                .hub_threads
                .iter()
                .filter(|(_, p)| **p >= 0.5)
                .map(|(n, p)| format!("{n} {p:.0}%"))
                .collect();
            self.row("hub threads", parts.join(", "));
        }
        self.row(
            "other CPU use",
            format!(
                "load generator {}, everything else on the machine {}",
                opt(u.self_pct, "%", 1),
                opt(u.others_pct, "%", 1)
            ),
        );
        self.put("others_cpu_pct", u.others_pct);
        self.put("window_s", u.secs);
        self.put("hub_cpu_pct", u.hub_pct);
        self.put("hub_cpu_us_per_delivery", per);
        self.put(
            "hub_threads_cpu_pct",
            Value::Object(
                u.hub_threads
                    .iter()
                    .map(|(k, v)| (k.clone(), json!((v * 10.0).round() / 10.0)))
                    .collect(),
            ),
        );
        self.put("self_cpu_pct", u.self_pct);
    }

    fn latency(&mut self, rec: &Recorder, unit_note: &str) {
        let h = rec.hist.lock().unwrap_or_else(|e| e.into_inner());
        let q = |x: f64| {
            if h.is_empty() {
                None
            } else {
                Some(h.value_at_quantile(x) as f64 / 1000.0)
            }
        };
        let (p50, p99, p999) = (q(0.5), q(0.99), q(0.999));
        let max = (!h.is_empty()).then(|| h.max() as f64 / 1000.0);
        self.row(
            "latency",
            format!(
                "p50 {}  p99 {}  p99.9 {}  max {}  ({} samples{unit_note})",
                opt(p50, " ms", 2),
                opt(p99, " ms", 2),
                opt(p999, " ms", 2),
                opt(max, " ms", 2),
                h.len()
            ),
        );
        self.put("p50_ms", p50);
        self.put("p99_ms", p99);
        self.put("p999_ms", p999);
        self.put("max_ms", max);
        self.put("samples", h.len());
    }

    /// The delivery count and rate of the window, with its CPU and latency rows: the
    /// measurement part every load scenario reports the same way.
    pub(super) fn deliveries(
        &mut self,
        u: &CpuUse,
        deliveries: u64,
        rec: &Recorder,
        unit_note: &str,
    ) {
        self.put("deliveries", deliveries);
        self.put("deliveries_per_s", deliveries as f64 / u.secs);
        self.cpu(u, deliveries);
        self.latency(rec, unit_note);
    }

    /// The hub's RSS before connecting and once connected, as a row and in the JSON;
    /// for the scenarios that take no third reading.
    pub(super) fn rss_change(&mut self, before: Option<u64>, connected: Option<u64>) {
        self.row("hub RSS", format!("{} -> {}", kib(before), kib(connected)));
        self.put("rss_before_kib", before);
        self.put("rss_connected_kib", connected);
    }

    /// Prints the table and the JSON line; returns the exit code.
    pub(crate) fn print(
        mut self,
        scenario: &str,
        url: &str,
        head: Map<String, Value>,
        run: &Run,
    ) -> i32 {
        let refused = run.rec.refused();
        let (by_code, refused_json) = run.rec.refused_by_code();
        self.row(
            "refused",
            if refused == 0 {
                "0 commands refused by the hub".to_string()
            } else {
                format!(
                    "{refused} commands refused by the hub ({by_code}), not counted as expected deliveries{}",
                    if by_code.contains("rate_limited") {
                        "; the hub's rate limit: lift it with --hub-arg=--rate-limit=1000000 \
                         --hub-arg=--rate-burst=1000000 (or the hub's WXHUB_RATE_LIMIT/WXHUB_RATE_BURST)"
                    } else {
                        ""
                    }
                )
            },
        );
        self.put("refused", refused_json);
        self.put("refused_total", refused);
        let errors = run.errors_json();
        if errors.as_object().is_some_and(|o| !o.is_empty()) {
            self.row("errors", errors.to_string());
        }
        for f in &self.fatal {
            self.rows.push(("FAILED".into(), f.clone()));
        }
        println!("wxhub-bench {scenario} -> {url}");
        let w = self.rows.iter().map(|r| r.0.len()).max().unwrap_or(0);
        for (k, v) in &self.rows {
            println!("  {k:<w$}  {v}");
        }
        let mut json = head;
        json.extend(self.json);
        json.insert("errors".into(), errors);
        json.insert(
            "fatal".into(),
            if self.fatal.is_empty() {
                Value::Null
            } else {
                json!(self.fatal.join("; "))
            },
        );
        println!("{}", Value::Object(json));
        if self.fatal.is_empty() {
            0
        } else {
            1
        }
    }
}
