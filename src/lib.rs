//! wxhub: a realtime WebSocket hub for WeChat mini-programs and the web.
//!
//! # Layout
//! - [`auth`]: join tokens (HS256 JWT): verification and minting.
//! - [`config`]: the CLI and `WXHUB_*` environment settings, with their defaults.
//! - [`protocol`]: protocol v1 on the wire: commands, events, naming rules (no actix).
//! - [`opening`]: join and subscribe in the handshake's query (`/ws?name=..&subscribe=..`).
//! - [`error`]: stable reply error codes and WebSocket close reasons.
//! - [`fdlimit`]: the connection limit the open-files limit allows.
//! - [`outbox`]: the bounded queue of shared frames between the hub and a session.
//! - [`ratelimit`]: the per-session token bucket against floods.
//! - [`reader`]: the client's frames, read with a hard bound on what a peer can make the
//!   hub buffer.
//! - [`pool`]: who is where (sessions, users, groups) as a plain struct.
//! - [`policy`]: what each group allows, by name rules, in one type.
//! - [`router`]: every routing rule, synchronous: what happens to a join, a publish, a
//!   direct message, from a session or from the server.
//! - [`cluster`]: cluster mode (`--redis`): the `Broker` seam between the router and the
//!   other nodes, and its Redis implementation.
//! - [`hub`]: the `Hub` actor, a thin shell around the router, and its messages
//!   (`hub/messages.rs`).
//! - [`session`]: the `Session` actor, one per WebSocket; the only code touching a socket.
//! - [`market`]: the simulated market (seeded random walk per symbol).
//! - [`ticker`]: the `Ticker` actor that feeds the stock groups, beside the hub.
//! - [`server`]: routes and wiring; `server::run(listener, config)` serves.
//! - [`tls`]: built-in TLS (`--tls-cert`, `--tls-key`): the rustls configuration.

pub mod api;
pub mod auth;
pub mod cluster;
pub mod config;
pub mod error;
pub mod fdlimit;
pub mod history;
pub mod hub;
pub mod market;
pub mod metrics;
pub mod opening;
pub mod outbox;
pub mod policy;
pub mod pool;
pub mod protocol;
pub mod ratelimit;
pub mod reader;
pub mod router;
pub mod server;
pub mod session;
pub mod ticker;
pub mod tls;

pub use config::Config;

/// What the crate's unit tests share.
#[cfg(test)]
pub(crate) mod testkit {
    use actix::{System, SystemRunner};

    /// An actix system whose clock starts paused (tokio's `test-util`): time moves only by
    /// `tokio::time::advance`, and timers fire exactly at their deadlines. The clock must be
    /// paused from the runtime's start: tokio rounds deadlines up to whole milliseconds from
    /// then, which `tokio::time::pause()` called later would leave out of step with the
    /// paused clock (a timer could fire up to a millisecond late).
    pub(crate) fn paused_system() -> SystemRunner {
        System::with_tokio_rt(|| {
            tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .start_paused(true)
                .build()
                .expect("a runtime with a paused clock")
        })
    }
}
