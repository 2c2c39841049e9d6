//! Prometheus metrics (`GET /metrics`, docs/OPERATIONS in README): what an operator
//! scrapes and alerts on.
//!
//! Two kinds. Events counted where they happen (commands, errors, closes, refused
//! handshakes, API calls, the hub's routing time, bytes written): process-wide counters
//! of the `prometheus` crate, their label values resolved once, so counting is one atomic
//! add. And the hub's state and totals (connections, users, groups, deliveries by kind,
//! history), which the router keeps as plain numbers on its own thread: they cost the
//! delivery path nothing and are read from the hub once per scrape.

use std::sync::LazyLock;
use std::time::Duration;

use prometheus::{
    Encoder, Histogram, HistogramOpts, IntCounter, IntCounterVec, IntGauge, Opts, Registry,
    TextEncoder,
};

use crate::error::{CloseReason, ErrorCode};
use crate::router::Stats;

/// Command types, as the wire names them (`commands_total{type}`).
pub const COMMANDS: [&str; 11] = [
    "join",
    "direct",
    "broadcast",
    "subscribe",
    "unsubscribe",
    "publish",
    "users",
    "ping",
    "history",
    "classic_stock",
    "classic_join",
];

/// Why a handshake was refused before the upgrade (`handshakes_refused_total{reason}`).
#[derive(Debug, Clone, Copy)]
pub enum Refused {
    /// Origin not allowed (403).
    Origin,
    /// Connection limit (503).
    Limit,
    /// A malformed handshake query (400).
    Query,
}

/// Every counter, registered once.
pub struct Metrics {
    registry: Registry,
    commands: Vec<IntCounter>,
    errors: IntCounterVec,
    closes: IntCounterVec,
    refused: [IntCounter; 3],
    /// Join tokens refused (`unauthorized`), in the handshake or by `join`.
    pub auth_refused: IntCounter,
    api: IntCounterVec,
    /// From a command's arrival at its session to its fan-out (or reply) queued.
    pub route_seconds: Histogram,
    /// Bytes written to WebSocket clients.
    pub bytes_out: IntCounter,
}

/// The process's metrics.
pub static METRICS: LazyLock<Metrics> = LazyLock::new(Metrics::new);

impl Metrics {
    fn new() -> Self {
        let registry = Registry::new();
        let counter_vec = |name: &str, help: &str, labels: &[&str]| {
            let c = IntCounterVec::new(Opts::new(name, help), labels).expect("a valid metric");
            registry
                .register(Box::new(c.clone()))
                .expect("registered once");
            c
        };
        let counter = |name: &str, help: &str| {
            let c = IntCounter::new(name, help).expect("a valid metric");
            registry
                .register(Box::new(c.clone()))
                .expect("registered once");
            c
        };
        let commands = counter_vec(
            "wxhub_commands_total",
            "Commands received from clients, by type.",
            &["type"],
        );
        let refused = counter_vec(
            "wxhub_handshakes_refused_total",
            "WebSocket handshakes refused before the upgrade, by reason.",
            &["reason"],
        );
        let route_seconds = Histogram::with_opts(
            HistogramOpts::new(
                "wxhub_route_seconds",
                "Time from a command's arrival at its session to its fan-out or reply being queued by the hub.",
            )
            .buckets(vec![
                0.000_01, 0.000_05, 0.000_1, 0.000_5, 0.001, 0.005, 0.01, 0.05, 0.1, 0.5, 1.0,
            ]),
        )
        .expect("a valid histogram");
        registry
            .register(Box::new(route_seconds.clone()))
            .expect("registered once");
        Metrics {
            commands: COMMANDS
                .iter()
                .map(|t| commands.with_label_values(&[t]))
                .collect(),
            errors: counter_vec(
                "wxhub_errors_total",
                "Error replies sent to clients, by code.",
                &["code"],
            ),
            closes: counter_vec(
                "wxhub_closes_total",
                "WebSocket sessions closed by the hub, by reason (client: the client closed or vanished).",
                &["reason"],
            ),
            refused: [
                refused.with_label_values(&["origin"]),
                refused.with_label_values(&["limit"]),
                refused.with_label_values(&["query"]),
            ],
            auth_refused: refused.with_label_values(&["auth"]),
            api: counter_vec(
                "wxhub_api_requests_total",
                "Server API requests, by endpoint and HTTP status.",
                &["endpoint", "status"],
            ),
            route_seconds,
            bytes_out: counter(
                "wxhub_bytes_out_total",
                "Bytes of WebSocket frames written to clients.",
            ),
            registry,
        }
    }

    /// A command of type `COMMANDS[i]`.
    pub fn command(&self, i: usize) {
        if let Some(c) = self.commands.get(i) {
            c.inc();
        }
    }

    pub fn error(&self, code: ErrorCode) {
        self.errors.with_label_values(&[code.as_str()]).inc();
    }

    /// A session ended; `None` when the client closed it or vanished.
    pub fn closed(&self, reason: Option<CloseReason>) {
        let label = match reason {
            None => "client",
            Some(CloseReason::Normal) => "normal",
            Some(CloseReason::Shutdown) => "shutdown",
            Some(CloseReason::Protocol) => "protocol_error",
            Some(CloseReason::InvalidData) => "invalid_utf8",
            Some(CloseReason::HeartbeatTimeout) => "heartbeat_timeout",
            Some(CloseReason::SlowConsumer) => "slow_consumer",
            Some(CloseReason::Flood) => "rate_limit",
            Some(CloseReason::Unauthorized) => "unauthorized",
            Some(CloseReason::TooBig) => "too_big",
            Some(CloseReason::Internal) => "internal",
            Some(CloseReason::Kicked) => "disconnected_by_api",
        };
        self.closes.with_label_values(&[label]).inc();
    }

    pub fn refused(&self, why: Refused) {
        self.refused[why as usize].inc();
    }

    pub fn api(&self, endpoint: &str, status: u16) {
        self.api
            .with_label_values(&[endpoint, &status.to_string()])
            .inc();
    }

    pub fn route_time(&self, took: Duration) {
        self.route_seconds.observe(took.as_secs_f64());
    }

    /// The exposition: these counters, the hub's `stats` as of now, and in cluster mode
    /// whether Redis is reachable.
    pub fn render(&self, stats: Option<&Stats>, redis_up: Option<bool>) -> String {
        let mut families = self.registry.gather();
        if let Some(stats) = stats {
            families.extend(snapshot(stats).gather());
        }
        if let Some(up) = redis_up {
            let registry = Registry::new();
            if let Ok(g) = IntGauge::new(
                "wxhub_redis_up",
                "Cluster mode: 1 while this node is subscribed on Redis and can publish there, 0 while it cannot (messages then do not cross nodes).",
            ) {
                g.set(i64::from(up));
                let _ = registry.register(Box::new(g));
            }
            families.extend(registry.gather());
        }
        families.sort_by(|a, b| a.name().cmp(b.name()));
        let mut out = Vec::new();
        if let Err(e) = TextEncoder::new().encode(&families, &mut out) {
            log::error!("cannot encode metrics: {e}");
        }
        String::from_utf8(out).unwrap_or_default()
    }
}

/// The hub's state and totals as metrics of a registry made for this scrape.
fn snapshot(stats: &Stats) -> Registry {
    let registry = Registry::new();
    let gauge = |name: &str, help: &str, value: usize| {
        if let Ok(g) = IntGauge::new(name, help) {
            g.set(value as i64);
            let _ = registry.register(Box::new(g));
        }
    };
    gauge(
        "wxhub_connections",
        "Open WebSocket sessions the hub knows.",
        stats.sessions,
    );
    gauge(
        "wxhub_users",
        "Joined users (distinct names) online.",
        stats.users,
    );
    gauge(
        "wxhub_groups",
        "Groups with at least one member.",
        stats.groups,
    );
    gauge(
        "wxhub_ticker_subscribers",
        "Sessions subscribed to market data groups (the classic feed included).",
        stats.feed_sessions,
    );
    gauge(
        "wxhub_queued_bytes",
        "Bytes waiting in all outboxes.",
        stats.queued_bytes,
    );
    gauge(
        "wxhub_history_streams",
        "Streams (groups and users) the history keeps.",
        stats.history.streams,
    );
    gauge(
        "wxhub_history_messages",
        "Messages the history keeps.",
        stats.history.messages,
    );
    gauge(
        "wxhub_history_bytes",
        "Bytes the history counts against --history-memory-mb.",
        stats.history.bytes,
    );
    let counter = |name: &str, help: &str, value: u64| {
        if let Ok(c) = IntCounter::new(name, help) {
            c.inc_by(value);
            let _ = registry.register(Box::new(c));
        }
    };
    counter(
        "wxhub_messages_total",
        "Messages posted (direct, broadcast, publish; by clients and the API) and routed.",
        stats.messages_in,
    );
    if let Ok(delivered) = IntCounterVec::new(
        Opts::new(
            "wxhub_deliveries_total",
            "Messages queued for sessions other than the sender's, by kind.",
        ),
        &["kind"],
    ) {
        for (kind, n) in [
            ("direct", stats.delivered.direct),
            ("broadcast", stats.delivered.broadcast),
            ("group", stats.delivered.group),
        ] {
            delivered.with_label_values(&[kind]).inc_by(n);
        }
        let _ = registry.register(Box::new(delivered));
    }
    registry
}
