//! Command-line and environment configuration.
//!
//! Every setting is a flag and a `WXHUB_*` environment variable; `wxhub --help` lists
//! them with their defaults. Durations are in milliseconds.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use clap::{Parser, Subcommand};

use crate::history::Retention;
use crate::hub::HubConfig;
use crate::market::{default_symbols, ModelConfig, Symbol};
use crate::policy::{Pattern, Policies};
use crate::router::RecallConfig;
use crate::session::Limits;
use crate::ticker::Market;

/// wxhub: a realtime WebSocket hub for chat and live market data.
#[derive(Debug, Parser)]
#[command(name = "wxhub", version, about, long_about = None, args_conflicts_with_subcommands = true)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Option<Tool>,
    #[command(flatten)]
    pub config: Config,
}

/// Commands other than serving.
#[derive(Debug, Subcommand)]
pub enum Tool {
    /// Print a join token (HS256 JWT) for testing; backends mint their own.
    Token {
        /// The name the token lets its bearer join as (`sub`).
        #[arg(long)]
        name: String,
        /// How long the token is valid, e.g. 30m, 1h, 7d.
        #[arg(long, default_value = "1h", value_parser = humantime::parse_duration)]
        ttl: Duration,
        /// Groups the user may subscribe to and publish in (comma-separated); unset: all.
        #[arg(long, value_delimiter = ',')]
        groups: Vec<String>,
        /// The hub's secret.
        #[arg(long, env = "WXHUB_AUTH_SECRET", hide_env_values = true)]
        secret: String,
    },
}

/// Everything the hub can be told at startup.
#[derive(Debug, Clone, clap::Args)]
pub struct Config {
    /// Address to listen on. Use 0.0.0.0:8080 to accept connections from other machines.
    #[arg(long, env = "WXHUB_BIND", default_value = "127.0.0.1:8080")]
    pub bind: SocketAddr,

    /// HTTP worker threads that run the sessions (the hub has a thread of its own). One
    /// is fastest on two cores; add one per further core.
    #[arg(long, env = "WXHUB_WORKERS", default_value_t = 1, value_parser = clap::value_parser!(u16).range(1..))]
    pub workers: u16,

    /// Largest message in bytes, in one frame or reassembled from fragments; a bigger
    /// one is answered `too_large` and closed with 1009.
    #[arg(long, env = "WXHUB_MAX_MESSAGE_BYTES", default_value_t = 65_536, value_parser = clap::value_parser!(u32).range(128..))]
    pub max_message_bytes: u32,

    /// How often the hub checks each client: one that has sent nothing for half this
    /// long gets a WebSocket ping (a client that keeps talking is not pinged).
    #[arg(long, env = "WXHUB_HEARTBEAT_MS", default_value_t = 10_000, value_parser = clap::value_parser!(u64).range(1..))]
    pub heartbeat_ms: u64,

    /// A client the hub has heard nothing from (no frame, no pong) for this long is
    /// dropped with close code 4000. Must be longer than `--heartbeat-ms`.
    #[arg(long, env = "WXHUB_CLIENT_TIMEOUT_MS", default_value_t = 30_000, value_parser = clap::value_parser!(u64).range(1..))]
    pub client_timeout_ms: u64,

    /// Most groups one session may be in (`too_many_groups` past it).
    #[arg(long, env = "WXHUB_MAX_GROUPS", default_value_t = 100)]
    pub max_groups: usize,

    /// Most bytes that may wait for one slow client; past it the client is closed with
    /// 4001 "slow consumer" and its queue dropped.
    #[arg(long, env = "WXHUB_MAX_QUEUED_BYTES", default_value_t = 1 << 20, value_parser = clap::value_parser!(u64).range(1024..))]
    pub max_queued_bytes: u64,

    /// Ticker interval.
    #[arg(long, env = "WXHUB_TICK_MS", default_value_t = 1000, value_parser = clap::value_parser!(u64).range(10..))]
    pub tick_ms: u64,

    /// Seed for the simulated market; the same seed gives the same prices. Unset: random.
    #[arg(long, env = "WXHUB_SEED")]
    pub seed: Option<u64>,

    /// Listed symbols as CODE:NAME:OPEN, comma-separated. Unset: six A-share symbols
    /// (600519, 000001, 300750, 601318, 000858, 002594).
    #[arg(long, env = "WXHUB_SYMBOLS", value_delimiter = ',')]
    pub symbols: Vec<Symbol>,

    /// Quotes kept per symbol for the market's `history` (charts).
    #[arg(long, env = "WXHUB_QUOTE_HISTORY", default_value_t = 300, value_parser = clap::value_parser!(u64).range(1..=100_000))]
    pub quote_history: u64,

    /// Messages each chat group and each user's stream of direct messages keep for
    /// recovery (see also --history-ttl and --history).
    #[arg(long, env = "WXHUB_HISTORY_SIZE", default_value_t = 100, value_parser = clap::builder::RangedU64ValueParser::<usize>::new().range(0..=100_000))]
    pub history_size: usize,

    /// How long kept messages stay, e.g. 5m, 30s, 1h; a client away longer than this
    /// cannot recover (it is told so and reloads).
    #[arg(long, env = "WXHUB_HISTORY_TTL", default_value = "5m", value_parser = humantime::parse_duration)]
    pub history_ttl: Duration,

    /// Retention by group, over --history-size and --history-ttl: comma-separated
    /// GROUP=SIZE[/TTL] rules, where GROUP ending in `*` is a prefix; the first rule that
    /// matches wins. E.g. `room.*=500/10m,lobby=0`. Market groups (stock) keep none.
    #[arg(long, env = "WXHUB_HISTORY", value_delimiter = ',')]
    pub history: Vec<HistoryRule>,

    /// Most memory in MiB all kept messages may take; past it the oldest go first.
    #[arg(long, env = "WXHUB_HISTORY_MEMORY_MB", default_value_t = 64, value_parser = clap::builder::RangedU64ValueParser::<usize>::new().range(1..=1_048_576))]
    pub history_memory_mb: usize,

    /// Daily price limit in percent of the open (A-share style); 0 for none.
    #[arg(long, env = "WXHUB_DAILY_LIMIT_PCT", default_value_t = 10.0)]
    pub daily_limit_pct: f64,

    /// HS256 secret that signs join tokens. Unset: anyone may join under any name (a
    /// warning is logged at startup). Prefer the environment variable to the flag, which
    /// other users of the machine can see.
    #[arg(long, env = "WXHUB_AUTH_SECRET", hide_env_values = true)]
    pub auth_secret: Option<String>,

    /// Browser origins allowed to open a WebSocket, comma-separated (e.g.
    /// https://example.com). A handshake from another origin gets HTTP 403. Unset: any
    /// origin. Clients that send no Origin (mini-programs, servers) are always allowed.
    #[arg(long, env = "WXHUB_ALLOWED_ORIGINS", value_delimiter = ',')]
    pub allowed_origins: Vec<String>,

    /// Most WebSocket connections at once; more get HTTP 503 before the upgrade. Unset:
    /// as many as the open-files limit allows (raised to its hard limit at startup), less
    /// a reserve for the process and for answering the excess; a larger value is cut to
    /// that. The startup log says the value in force.
    #[arg(long, env = "WXHUB_MAX_CONNECTIONS")]
    pub max_connections: Option<usize>,

    /// Messages the hub's mailbox may hold; past it, commands are answered `overloaded`
    /// instead of queued, so a burst from many clients cannot grow the hub's memory
    /// without bound.
    #[arg(long, env = "WXHUB_HUB_MAILBOX", default_value_t = crate::hub::DEFAULT_MAILBOX, value_parser = clap::builder::RangedU64ValueParser::<usize>::new().range(16..))]
    pub hub_mailbox: usize,

    /// Turns on the server API under /api/ (docs/API.md): every request must carry
    /// `Authorization: Bearer <this key>`. Unset: no API. At least 16 characters; prefer
    /// the environment variable to the flag, which other users of the machine can see.
    #[arg(long, env = "WXHUB_API_KEY", hide_env_values = true)]
    pub api_key: Option<String>,

    /// Serve the API and /metrics on this address (e.g. 127.0.0.1:9090) instead of the
    /// main one, so that they need not face the internet. /healthz and /readyz are on both.
    #[arg(long, env = "WXHUB_API_BIND")]
    pub api_bind: Option<SocketAddr>,

    /// Proxies (addresses or CIDR ranges, comma-separated, e.g. 10.0.0.0/8) whose
    /// `X-Forwarded-For` names the client in the logs. Unset: the peer address is the
    /// client's, and the header is ignored (anyone could write it).
    #[arg(long, env = "WXHUB_TRUSTED_PROXIES", value_delimiter = ',')]
    pub trusted_proxies: Vec<ipnet::IpNet>,

    /// Commands per second one session may send on average (token bucket refill rate).
    #[arg(long, env = "WXHUB_RATE_LIMIT", default_value_t = 50, value_parser = clap::value_parser!(u32).range(1..))]
    pub rate_limit: u32,

    /// Commands one session may send in a burst (token bucket size). Past it commands
    /// get `rate_limited`; a session that gets this many `rate_limited` errors without
    /// pausing long enough to refill the bucket is closed with 4002.
    #[arg(long, env = "WXHUB_RATE_BURST", default_value_t = 100, value_parser = clap::value_parser!(u32).range(1..))]
    pub rate_burst: u32,

    /// Time a client has to send its whole HTTP handshake (at least 1000: actix-http
    /// measures it against a clock it refreshes only every 500 ms).
    #[arg(long, env = "WXHUB_HANDSHAKE_TIMEOUT_MS", default_value_t = 5_000, value_parser = clap::value_parser!(u64).range(1000..))]
    pub handshake_timeout_ms: u64,

    /// Time the kernel may go without the client acknowledging data the hub sent
    /// (TCP_USER_TIMEOUT) before it drops the connection: ends clients that vanished or
    /// stopped reading even while their session is blocked on a full socket.
    #[arg(long, env = "WXHUB_WRITE_TIMEOUT_MS", default_value_t = 30_000)]
    pub write_timeout_ms: u32,

    /// On SIGTERM or Ctrl-C, every session is closed with 1001 and the hub exits at most
    /// this long after.
    #[arg(long, env = "WXHUB_DRAIN_MS", default_value_t = 5_000)]
    pub drain_ms: u64,

    /// Serve `/echo`, a test-only endpoint that echoes every message (for the Autobahn
    /// conformance suite). Off in production.
    #[arg(long, env = "WXHUB_ECHO_ROUTE")]
    pub echo_route: bool,

    /// Serve https:// and wss:// with this certificate chain (PEM, leaf first); needs
    /// --tls-key. Unset: plain http:// and ws:// (put a TLS proxy in front).
    #[arg(long, env = "WXHUB_TLS_CERT", value_name = "PEM")]
    pub tls_cert: Option<std::path::PathBuf>,

    /// The private key of --tls-cert (PEM: PKCS#8, RSA or EC).
    #[arg(long, env = "WXHUB_TLS_KEY", value_name = "PEM")]
    pub tls_key: Option<std::path::PathBuf>,

    /// Cluster mode: nodes given the same Redis (e.g. redis://127.0.0.1:6379/0) behave as
    /// one hub: messages, history, presence and the market are shared through it. Unset:
    /// one node, no Redis needed. Prefer the environment variable if the URL holds a
    /// password.
    #[arg(
        long = "redis",
        env = "WXHUB_REDIS_URL",
        value_name = "URL",
        hide_env_values = true
    )]
    pub redis: Option<String>,

    /// This node's name in the cluster's logs. Unset: the host name and the port.
    #[arg(long, env = "WXHUB_NODE_NAME")]
    pub node_name: Option<String>,

    /// Prefix of every Redis channel and key, so that several hubs can share one Redis.
    #[arg(long, env = "WXHUB_REDIS_PREFIX", default_value = "wxhub")]
    pub redis_prefix: String,

    /// Cluster mode: a node that stops renewing its presence (killed, cut off from
    /// Redis) is removed from `users` and the listings, with `leave` events for its
    /// users, this long after its last renewal (at least 1s; nodes renew every third).
    #[arg(long, env = "WXHUB_PRESENCE_TTL", default_value = "30s", value_parser = humantime::parse_duration)]
    pub presence_ttl: Duration,

    /// Cluster mode: when nothing arrived on the Redis PUB/SUB connection for this long,
    /// the node publishes a probe to itself and reconnects if it does not come back
    /// (a connection can go silent without closing, e.g. after a failover).
    #[arg(long, env = "WXHUB_REDIS_PROBE", default_value = "30s", value_parser = humantime::parse_duration)]
    pub redis_probe: Duration,
    /// Cluster mode: how long the node that ticks the market holds its lease in Redis
    /// (renewed every third of it); a dead leader is replaced within it. 100ms to 1h.
    #[arg(long, env = "WXHUB_TICKER_LEASE", default_value = "5s", value_parser = humantime::parse_duration)]
    pub ticker_lease: Duration,
}

impl Default for Config {
    /// The defaults, as if run with no flags and no environment.
    fn default() -> Self {
        Config {
            bind: ([127, 0, 0, 1], 8080).into(),
            workers: 1,
            max_message_bytes: 65_536,
            heartbeat_ms: 10_000,
            client_timeout_ms: 30_000,
            max_groups: 100,
            max_queued_bytes: 1 << 20,
            tick_ms: 1000,
            seed: None,
            symbols: Vec::new(),
            quote_history: 300,
            history_size: 100,
            history_ttl: Duration::from_secs(300),
            history: Vec::new(),
            history_memory_mb: 64,
            daily_limit_pct: 10.0,
            auth_secret: None,
            allowed_origins: Vec::new(),
            max_connections: None,
            hub_mailbox: crate::hub::DEFAULT_MAILBOX,
            api_key: None,
            api_bind: None,
            trusted_proxies: Vec::new(),
            rate_limit: 50,
            rate_burst: 100,
            handshake_timeout_ms: 5_000,
            write_timeout_ms: 30_000,
            drain_ms: 5_000,
            echo_route: false,
            tls_cert: None,
            tls_key: None,
            redis: None,
            node_name: None,
            redis_prefix: "wxhub".into(),
            presence_ttl: crate::cluster::presence::DEFAULT_TTL,
            redis_probe: Duration::from_secs(30),
            ticker_lease: crate::cluster::leader::DEFAULT_LEASE,
        }
    }
}

impl Config {
    /// Checks what flags cannot check one by one.
    pub fn validate(&self) -> Result<(), String> {
        if self.client_timeout_ms <= self.heartbeat_ms {
            // A client is checked once per heartbeat: with a shorter timeout one that
            // answers every ping could still be dropped between two checks.
            return Err(format!(
                "--client-timeout-ms ({}) must be longer than --heartbeat-ms ({})",
                self.client_timeout_ms, self.heartbeat_ms
            ));
        }
        if self
            .api_key
            .as_ref()
            .is_some_and(|k| k.chars().count() < 16)
        {
            return Err("--api-key (WXHUB_API_KEY) must have at least 16 characters".into());
        }
        let mut codes = std::collections::HashSet::new();
        for s in &self.symbols {
            if !codes.insert(&s.code) {
                return Err(format!("symbol {} is listed twice in --symbols", s.code));
            }
        }
        match (&self.tls_cert, &self.tls_key) {
            (Some(cert), None) => {
                return Err(format!(
                    "--tls-cert {} needs --tls-key (WXHUB_TLS_KEY): give both or neither",
                    cert.display()
                ))
            }
            (None, Some(key)) => {
                return Err(format!(
                    "--tls-key {} needs --tls-cert (WXHUB_TLS_CERT): give both or neither",
                    key.display()
                ))
            }
            _ => {}
        }
        if let Some(name) = &self.node_name {
            if !crate::cluster::valid_node_name(name) {
                return Err(format!(
                    "--node-name {name:?}: 1 to 200 characters, no spaces"
                ));
            }
        }
        if self.presence_ttl < Duration::from_secs(1) {
            return Err(format!(
                "--presence-ttl {}: at least 1s",
                humantime::format_duration(self.presence_ttl)
            ));
        }
        if self.redis_probe < Duration::from_millis(100) {
            return Err(format!(
                "--redis-probe {}: at least 100ms",
                humantime::format_duration(self.redis_probe)
            ));
        }
        if !(Duration::from_millis(100)..=Duration::from_secs(3600)).contains(&self.ticker_lease) {
            return Err(format!(
                "--ticker-lease {:?}: from 100ms to 1h",
                self.ticker_lease
            ));
        }
        if !crate::cluster::valid_node_name(&self.redis_prefix) {
            let prefix = &self.redis_prefix;
            return Err(format!(
                "--redis-prefix {prefix:?}: 1 to 200 characters, no spaces"
            ));
        }
        Ok(())
    }

    /// Cluster mode's settings (with `--redis`), for a node listening on `port`.
    pub fn cluster(&self, port: u16) -> Option<crate::cluster::ClusterConfig> {
        Some(crate::cluster::ClusterConfig {
            url: self.redis.clone()?,
            node_name: self
                .node_name
                .clone()
                .unwrap_or_else(|| format!("{}:{port}", crate::cluster::host_name())),
            prefix: self.redis_prefix.clone(),
            // A message and what a node wraps around it.
            max_frame_bytes: self.max_message_bytes as usize * 2 + 4096,
            probe: self.redis_probe,
        })
    }

    /// The per-session limits.
    pub fn limits(&self) -> Arc<Limits> {
        Arc::new(Limits {
            max_message: self.max_message_bytes as usize,
            heartbeat: Duration::from_millis(self.heartbeat_ms),
            client_timeout: Duration::from_millis(self.client_timeout_ms),
            max_queued: self.max_queued_bytes as usize,
            rate: self.rate_limit as f64,
            burst: self.rate_burst as f64,
        })
    }

    /// The market the ticker simulates.
    pub fn market(&self) -> Market {
        let symbols = if self.symbols.is_empty() {
            default_symbols()
        } else {
            self.symbols.clone()
        };
        Market {
            model: ModelConfig {
                symbols,
                seed: self.seed,
                history: self.quote_history as usize,
                daily_limit: (self.daily_limit_pct > 0.0).then_some(self.daily_limit_pct / 100.0),
            },
            tick: Duration::from_millis(self.tick_ms),
        }
    }

    /// The hub's settings; its fed groups are the ticker's.
    pub fn hub(&self) -> HubConfig {
        HubConfig {
            max_groups: self.max_groups,
            policies: self.policies(),
            feeds: self.market().groups(),
            heartbeat: Some(self.limits().heartbeat),
            mailbox: self.hub_mailbox,
            recall: RecallConfig {
                users: self.retention(),
                memory_bytes: self.history_memory_mb << 20,
                // Half the slow-consumer bound: a replay leaves room for what is live.
                max_replay_bytes: (self.max_queued_bytes / 2) as usize,
            },
        }
    }

    /// --history-size and --history-ttl.
    fn retention(&self) -> Retention {
        Retention {
            size: self.history_size,
            ttl: self.history_ttl,
        }
    }

    /// The hub's group policies with the retention the flags give.
    pub fn policies(&self) -> Policies {
        self.history.iter().fold(
            Policies::standard().with_default_retention(self.retention()),
            |p, rule| {
                let retention = Retention {
                    size: rule.size,
                    ttl: rule.ttl.unwrap_or(self.history_ttl),
                };
                p.with_retention(rule.pattern.clone(), retention)
            },
        )
    }
}

/// One `--history` rule: GROUP=SIZE[/TTL], GROUP ending in `*` for a prefix.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HistoryRule {
    pub pattern: Pattern,
    pub size: usize,
    /// None: --history-ttl's.
    pub ttl: Option<Duration>,
}

impl std::str::FromStr for HistoryRule {
    type Err = String;

    fn from_str(rule: &str) -> Result<Self, String> {
        let wrong = || {
            format!("bad --history rule {rule:?}: expected GROUP=SIZE or GROUP=SIZE/TTL, e.g. room.*=500/10m (GROUP ending in * is a prefix)")
        };
        let (group, keep) = rule.trim().split_once('=').ok_or_else(wrong)?;
        let (size, ttl) = match keep.split_once('/') {
            Some((size, ttl)) => (size, Some(ttl)),
            None => (keep, None),
        };
        let size: usize = size.trim().parse().map_err(|_| wrong())?;
        if size > 100_000 {
            return Err(format!(
                "bad --history rule {rule:?}: at most 100000 messages"
            ));
        }
        let ttl = match ttl {
            Some(ttl) => Some(
                humantime::parse_duration(ttl.trim())
                    .map_err(|e| format!("bad --history rule {rule:?}: {e}"))?,
            ),
            None => None,
        };
        let group = group.trim();
        let pattern = match group.strip_suffix('*') {
            Some(prefix) if prefix.is_empty() || crate::protocol::valid_group(prefix) => {
                Pattern::Prefix(prefix.into())
            }
            None if crate::protocol::valid_group(group) => Pattern::Exact(group.into()),
            _ => return Err(wrong()),
        };
        Ok(HistoryRule { pattern, size, ttl })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn history_rules_read_as_documented() {
        let cli = Cli::try_parse_from([
            "wxhub",
            "--history-ttl",
            "2m",
            "--history",
            "room.*=500/10m,lobby=0,vip=20",
        ])
        .unwrap();
        let p = cli.config.policies();
        let at = |size, secs| Retention {
            size,
            ttl: Duration::from_secs(secs),
        };
        assert_eq!(p.of("room.1").history, at(500, 600));
        assert_eq!(p.of("lobby").history, at(0, 120));
        assert_eq!(p.of("vip").history, at(20, 120), "no TTL: --history-ttl's");
        assert_eq!(p.of("other").history, at(100, 120));
        assert_eq!(p.of("stock").history, Retention::NONE);
        for bad in [
            "room",
            "room=x",
            "room=5/forever",
            "a b=1",
            "room=100001",
            "=5",
            "room.*=-1",
        ] {
            let err = bad.parse::<HistoryRule>().expect_err(bad);
            assert!(err.contains("--history rule"), "{bad}: {err}");
        }
        assert!(Cli::try_parse_from(["wxhub", "--history", "room"]).is_err());
    }

    #[test]
    fn defaults_match_the_cli() {
        let parsed = Cli::try_parse_from(["wxhub"]).unwrap().config;
        let d = Config::default();
        assert_eq!(format!("{parsed:?}"), format!("{d:?}"));
    }

    #[test]
    fn flags_parse() {
        let c = Cli::try_parse_from([
            "wxhub",
            "--bind",
            "0.0.0.0:9000",
            "--symbols",
            "AAPL:Apple:190,MSFT:Microsoft:410",
            "--seed",
            "42",
        ])
        .unwrap()
        .config;
        assert_eq!(c.bind.port(), 9000);
        assert_eq!(c.market().model.symbols.len(), 2);
        assert!(Cli::try_parse_from(["wxhub", "--tick-ms", "0"]).is_err());
        assert!(Cli::try_parse_from(["wxhub", "--symbols", "bad"]).is_err());
        let twice = Cli::try_parse_from(["wxhub", "--symbols", "A:a:1,A:b:2"]).unwrap();
        assert!(twice.config.validate().is_err());
        assert!(c.validate().is_ok());
        // A timeout no longer than the heartbeat could drop a client that answers pings.
        let short = Cli::try_parse_from([
            "wxhub",
            "--heartbeat-ms",
            "1000",
            "--client-timeout-ms",
            "1000",
        ]);
        assert!(short.unwrap().config.validate().is_err());
        let t = Cli::try_parse_from([
            "wxhub", "token", "--name", "a", "--ttl", "2h", "--secret", "s",
        ])
        .unwrap();
        assert!(matches!(t.command, Some(Tool::Token { ttl, .. }) if ttl.as_secs() == 7200));
    }

    #[test]
    fn tls_needs_both_files() {
        let parse = |args: &[&str]| {
            let mut all = vec!["wxhub"];
            all.extend_from_slice(args);
            Cli::try_parse_from(all).unwrap().config
        };
        let both = parse(&["--tls-cert", "c.pem", "--tls-key", "k.pem"]);
        assert_eq!(
            both.tls_cert.as_deref(),
            Some(std::path::Path::new("c.pem"))
        );
        assert!(both.validate().is_ok());
        let e = parse(&["--tls-cert", "c.pem"]).validate().unwrap_err();
        assert!(e.contains("--tls-cert c.pem needs --tls-key"), "{e}");
        let e = parse(&["--tls-key", "k.pem"]).validate().unwrap_err();
        assert!(e.contains("--tls-key k.pem needs --tls-cert"), "{e}");
    }
}
