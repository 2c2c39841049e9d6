//! Command-line and environment configuration.
//!
//! Every setting is a flag and a `WXHUB_*` environment variable; `wxhub --help` lists
//! them with their defaults. Durations are in milliseconds.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use clap::Parser;

use crate::hub::HubConfig;
use crate::market::{default_symbols, ModelConfig, Symbol};
use crate::session::Limits;
use crate::ticker::Market;

/// wxhub: a realtime WebSocket hub for chat and live market data.
#[derive(Debug, Clone, Parser)]
#[command(name = "wxhub", version, about, long_about = None)]
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

    /// How often the hub sends a WebSocket ping to each client.
    #[arg(long, env = "WXHUB_HEARTBEAT_MS", default_value_t = 10_000, value_parser = clap::value_parser!(u64).range(1..))]
    pub heartbeat_ms: u64,

    /// A client the hub has heard nothing from (no frame, no pong) for this long is
    /// dropped with close code 1008.
    #[arg(long, env = "WXHUB_CLIENT_TIMEOUT_MS", default_value_t = 30_000, value_parser = clap::value_parser!(u64).range(1..))]
    pub client_timeout_ms: u64,

    /// Most groups one session may be in (`too_many_groups` past it).
    #[arg(long, env = "WXHUB_MAX_GROUPS", default_value_t = 100)]
    pub max_groups: usize,

    /// Most bytes that may wait for one slow client; past it the client is closed with
    /// 1008 "slow consumer" and its queue dropped.
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

    /// Quotes kept per symbol for `history`.
    #[arg(long, env = "WXHUB_HISTORY", default_value_t = 300, value_parser = clap::value_parser!(u64).range(1..=100_000))]
    pub history: u64,

    /// Daily price limit in percent of the open (A-share style); 0 for none.
    #[arg(long, env = "WXHUB_DAILY_LIMIT_PCT", default_value_t = 10.0)]
    pub daily_limit_pct: f64,
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
            history: 300,
            daily_limit_pct: 10.0,
        }
    }
}

impl Config {
    /// The per-session limits.
    pub fn limits(&self) -> Arc<Limits> {
        Arc::new(Limits {
            max_message: self.max_message_bytes as usize,
            heartbeat: Duration::from_millis(self.heartbeat_ms),
            client_timeout: Duration::from_millis(self.client_timeout_ms),
            max_queued: self.max_queued_bytes as usize,
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
                history: self.history as usize,
                daily_limit: (self.daily_limit_pct > 0.0).then_some(self.daily_limit_pct / 100.0),
            },
            tick: Duration::from_millis(self.tick_ms),
        }
    }

    pub fn hub(&self) -> HubConfig {
        HubConfig {
            max_groups: self.max_groups,
            market: Some(self.market()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_match_the_cli() {
        let parsed = Config::try_parse_from(["wxhub"]).unwrap();
        let d = Config::default();
        assert_eq!(format!("{parsed:?}"), format!("{d:?}"));
    }

    #[test]
    fn flags_parse() {
        let c = Config::try_parse_from([
            "wxhub",
            "--bind",
            "0.0.0.0:9000",
            "--symbols",
            "AAPL:Apple:190,MSFT:Microsoft:410",
            "--seed",
            "42",
        ])
        .unwrap();
        assert_eq!(c.bind.port(), 9000);
        assert_eq!(c.market().model.symbols.len(), 2);
        assert!(Config::try_parse_from(["wxhub", "--tick-ms", "0"]).is_err());
        assert!(Config::try_parse_from(["wxhub", "--symbols", "bad"]).is_err());
    }
}
