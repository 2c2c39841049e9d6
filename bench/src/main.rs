//! wxhub-bench: a load generator for wxhub that speaks protocol v1 over real sockets.
//!
//! Scenarios (one subcommand each; `wxhub-bench SCENARIO --help` lists the flags):
//! * `idle`: N connections that each `join` and stay; connect rate and the hub's RSS per
//!   connection, also after a burst of traffic (every client pings, B broadcasts).
//! * `fanout`: N subscribers of one group and one publisher; `--inflight K` saturates
//!   (at most K messages not yet delivered to every subscriber), `--rate R` publishes at
//!   a fixed rate; deliveries/s, hub CPU per delivery, end-to-end latency.
//! * `fanout2`: the same over two nodes of a cluster: N subscribers split over node A
//!   (`--url`) and node B (`--url-b`), one publisher on A at a fixed rate; deliveries/s,
//!   latency on each node, every subscriber's count; wxhub's protocol or Socket.IO's
//!   (`--proto socketio`, the peer `bench/peers/socketio-redis-hub.js`).
//! * `direct`: N pairs sending `direct` messages to each other (closed loop with
//!   `--window`, or `--rate` per client); messages/s and latency.
//! * `chatroom`: N members of one group, every one publishing at a low rate.
//! * `ticker`: N subscribers of `stock`; deliveries/s and hub CPU at a tick interval.
//! * `groups`: cycles of N joined clients in K groups each, then all gone; the hub's RSS
//!   per connection and per membership, and whether it comes back down when idle.
//!
//! The hub is given with `--url` (and `--pid` for its memory and CPU), or started by the
//! tool with `--hub-bin` on a free loopback port. Only loopback targets are accepted.
//! Each run prints a table and, last, one JSON line.

mod proto;
mod run;
mod sys;
mod ws;

use std::path::PathBuf;
use std::time::{Duration, Instant};

use clap::{Args, Parser, Subcommand};

#[derive(Parser, Debug)]
#[command(
    name = "wxhub-bench",
    version,
    about = "Load generator for wxhub (protocol v1, loopback only)",
    after_help = "Examples:\n  wxhub-bench fanout --hub-bin target/release/wxhub --clients 10000 --inflight 64\n  \
                  wxhub-bench idle --url ws://127.0.0.1:8080/ws --pid $(pidof wxhub) --clients 15000"
)]
struct Cli {
    #[command(subcommand)]
    scenario: Scenario,
}

#[derive(Subcommand, Debug, Clone)]
pub enum Scenario {
    /// Open N joined connections and hold them: connect rate, hub RSS per connection,
    /// and RSS after a burst of traffic.
    Idle(IdleArgs),
    /// N subscribers of one group, one publisher: saturation (--inflight) or fixed rate
    /// (--rate); deliveries/s, hub CPU per delivery, latency.
    Fanout(FanoutArgs),
    /// Two nodes of a cluster: N subscribers of one group, half on node A (--url), half
    /// on node B (--url-b), one publisher on A at a fixed rate; deliveries/s, latency
    /// per node, and what each subscriber received.
    Fanout2(Fanout2Args),
    /// N pairs sending direct messages to each other: messages/s and latency.
    Direct(DirectArgs),
    /// A busy room: N members of one group, every one also publishing at a low rate.
    Chatroom(ChatroomArgs),
    /// N subscribers of `stock`: deliveries/s and hub CPU at a tick interval.
    Ticker(TickerArgs),
    /// Cycles of N joined clients that each subscribe to K groups and then all
    /// disconnect; hub RSS per connection and per membership, and while idle after.
    Groups(GroupsArgs),
}

/// Flags every scenario has.
#[derive(Args, Debug, Clone)]
pub struct Common {
    /// The hub's WebSocket URL, e.g. ws://127.0.0.1:8080/ws (loopback only).
    #[arg(long, conflicts_with = "hub_bin")]
    pub url: Option<String>,
    /// Start this hub binary on a free 127.0.0.1 port for the run (its RSS and CPU are
    /// then measured too), and stop it at the end.
    #[arg(long)]
    pub hub_bin: Option<PathBuf>,
    /// An extra argument for the hub started with --hub-bin (repeatable), e.g.
    /// --hub-arg=--workers=1.
    #[arg(long = "hub-arg", allow_hyphen_values = true)]
    pub hub_args: Vec<String>,
    /// Where the started hub's output goes (default: a file in the temp directory).
    #[arg(long)]
    pub hub_log: Option<PathBuf>,
    /// Process id of the hub given with --url, for its RSS (/proc/PID/status) and CPU
    /// (/proc/PID/stat).
    #[arg(long, conflicts_with = "hub_bin")]
    pub pid: Option<i32>,
    /// Clients (connections); for `direct`, pairs (two connections each).
    #[arg(long, default_value_t = 1000)]
    pub clients: usize,
    /// Loopback source addresses to spread client sockets over, e.g. 127.0.0.2-127.0.0.9
    /// or a comma list: one address has ~28k ephemeral ports. `auto` spreads over
    /// 127.0.0.2-127.0.0.9 past 1,000 connections; `none` lets the kernel choose.
    #[arg(long, default_value = "auto")]
    pub source_ips: String,
    /// Threads of the load generator.
    #[arg(long, default_value_t = 1)]
    pub threads: usize,
    /// Handshakes in progress at once.
    #[arg(long, default_value_t = 64)]
    pub connect_concurrency: usize,
    /// Per-client limit for connect, handshake and setup replies.
    #[arg(long, default_value_t = 60.0)]
    pub connect_timeout_s: f64,
    /// Traffic before the measurement window opens.
    #[arg(long, default_value_t = 2.0)]
    pub warmup_s: f64,
    /// The measurement window.
    #[arg(long, default_value_t = 10.0)]
    pub duration_s: f64,
    /// After sending stops, wait at most this long for outstanding deliveries.
    #[arg(long, default_value_t = 10.0)]
    pub drain_s: f64,
    /// Pause after everyone is connected before measuring.
    #[arg(long, default_value_t = 1.0)]
    pub settle_s: f64,
    /// With a hub pid: then wait until the hub uses under --settle-cpu % of a core for a
    /// whole second, at most this long.
    #[arg(long, default_value_t = 60.0)]
    pub settle_max_s: f64,
    #[arg(long, default_value_t = 5.0)]
    pub settle_cpu: f64,
    /// Initial read buffer per connection (grows for larger frames).
    #[arg(long, default_value_t = 4096)]
    pub read_buf: usize,
    /// Bytes of padding added to every message body this tool sends.
    #[arg(long, default_value_t = 0)]
    pub pad: usize,
    /// Hard cap on the whole run.
    #[arg(long, default_value_t = 900.0)]
    pub max_s: f64,
    /// Free-form label copied into the JSON line.
    #[arg(long, default_value = "")]
    pub label: String,
    /// No progress line while connecting.
    #[arg(long)]
    pub quiet: bool,
}

#[derive(Args, Debug, Clone)]
pub struct IdleArgs {
    #[command(flatten)]
    pub common: Common,
    /// Broadcasts in the traffic burst after the first RSS reading (0: no burst).
    #[arg(long, default_value_t = 10)]
    pub burst: usize,
    /// Seconds to hold the connections at the end (hub CPU while idle).
    #[arg(long, default_value_t = 5.0)]
    pub hold_s: f64,
    /// Also report the connect rate of the clients after this many were connected
    /// (default: two thirds of --clients).
    #[arg(long)]
    pub tail_from: Option<usize>,
    /// Each client also subscribes to this group (one more reply to wait for).
    #[arg(long)]
    pub group: Option<String>,
    /// Join (and subscribe) in the handshake's query (`/ws?name=..&subscribe=..`) rather
    /// than with frames after it: one round trip instead of two.
    #[arg(long)]
    pub join_in_handshake: bool,
}

#[derive(Args, Debug, Clone)]
pub struct FanoutArgs {
    #[command(flatten)]
    pub common: Common,
    /// Saturation: at most K messages published and not yet delivered to every
    /// subscriber (the default, K = 64, when --rate is not given).
    #[arg(long, conflicts_with = "rate")]
    pub inflight: Option<usize>,
    /// Fixed rate: publish this many messages per second.
    #[arg(long)]
    pub rate: Option<f64>,
    #[arg(long, default_value = "bench")]
    pub group: String,
    /// Saturation: a message not delivered to everyone after this long counts as lost
    /// and frees its slot.
    #[arg(long, default_value_t = 5.0)]
    pub lost_after_s: f64,
}

/// The protocol `fanout2` speaks.
#[derive(clap::ValueEnum, Debug, Clone, Copy, PartialEq, Eq)]
pub enum Proto {
    /// wxhub's protocol v1: `join`, `subscribe`, `publish`.
    Wxhub,
    /// Socket.IO 4 (Engine.IO 4 over a WebSocket, no polling): each socket is in the
    /// hub's room once connected; a `pub` event is re-emitted to the rest of the room
    /// (bench/peers/socketio-redis-hub.js). The URL is the node's
    /// `ws://HOST:PORT/socket.io/?EIO=4&transport=websocket`.
    Socketio,
}

#[derive(Args, Debug, Clone)]
pub struct Fanout2Args {
    #[command(flatten)]
    pub common: Common,
    /// Node B's WebSocket URL (loopback only); node A is --url. Subscriber i connects to
    /// A when i is even, to B when it is odd; the publisher to A.
    #[arg(long)]
    pub url_b: String,
    /// Node B's process id, for its CPU (node A's is --pid).
    #[arg(long)]
    pub pid_b: Option<i32>,
    /// The Redis server's process id, for its CPU.
    #[arg(long)]
    pub redis_pid: Option<i32>,
    #[arg(long, value_enum, default_value_t = Proto::Wxhub)]
    pub proto: Proto,
    /// Messages per second the publisher sends.
    #[arg(long, default_value_t = 10.0)]
    pub rate: f64,
    /// The group (wxhub; a Socket.IO node has its one room).
    #[arg(long, default_value = "bench")]
    pub group: String,
    /// Before measuring, the publisher sends probes until every subscriber has received
    /// one (both nodes route the group), for at most this long.
    #[arg(long, default_value_t = 20.0)]
    pub probe_s: f64,
}

#[derive(Args, Debug, Clone)]
pub struct DirectArgs {
    #[command(flatten)]
    pub common: Common,
    /// Closed loop: messages each client keeps in flight to its partner (a received
    /// message is answered with a new one).
    #[arg(long, default_value_t = 4)]
    pub window: usize,
    /// Open loop instead: each client sends this many messages per second.
    #[arg(long)]
    pub rate: Option<f64>,
}

#[derive(Args, Debug, Clone)]
pub struct ChatroomArgs {
    #[command(flatten)]
    pub common: Common,
    /// Messages per second each member publishes.
    #[arg(long, default_value_t = 0.2)]
    pub rate: f64,
    #[arg(long, default_value = "room")]
    pub group: String,
}

#[derive(Args, Debug, Clone)]
pub struct TickerArgs {
    #[command(flatten)]
    pub common: Common,
    /// The tick interval: passed to a hub started with --hub-bin, and used for the
    /// expected deliveries.
    #[arg(long, default_value_t = 1000)]
    pub tick_ms: u64,
    /// The group to subscribe: `stock` (all symbols per tick) or `stock.<SYMBOL>`.
    #[arg(long, default_value = "stock")]
    pub group: String,
    /// Join before subscribing (stock groups do not need it).
    #[arg(long)]
    pub join: bool,
}

#[derive(Args, Debug, Clone)]
pub struct GroupsArgs {
    #[command(flatten)]
    pub common: Common,
    /// Groups each client subscribes to (the hub's --max-groups must allow them).
    #[arg(long, default_value_t = 100)]
    pub groups: usize,
    /// Every client subscribes to the same K groups (default: K groups of its own).
    #[arg(long)]
    pub shared: bool,
    /// Connect, subscribe, disconnect this many times.
    #[arg(long, default_value_t = 3)]
    pub cycles: usize,
    /// Subscribes in flight at once, over all clients: the hub answers `overloaded` past
    /// its mailbox (--hub-mailbox, 8192 by default).
    #[arg(long, default_value_t = 2048)]
    pub inflight: usize,
    /// Hold the clients this long once subscribed, before they disconnect (time to look
    /// at the hub from outside, e.g. with a heap profiler).
    #[arg(long, default_value_t = 0.0)]
    pub hold_s: f64,
    /// Then watch the idle hub's RSS this long...
    #[arg(long, default_value_t = 40.0)]
    pub idle_s: f64,
    /// ... reading it this often.
    #[arg(long, default_value_t = 5.0)]
    pub sample_s: f64,
}

impl Scenario {
    pub fn common(&self) -> &Common {
        match self {
            Scenario::Idle(a) => &a.common,
            Scenario::Fanout(a) => &a.common,
            Scenario::Fanout2(a) => &a.common,
            Scenario::Direct(a) => &a.common,
            Scenario::Chatroom(a) => &a.common,
            Scenario::Ticker(a) => &a.common,
            Scenario::Groups(a) => &a.common,
        }
    }

    pub fn name(&self) -> &'static str {
        match self {
            Scenario::Idle(_) => "idle",
            Scenario::Fanout(_) => "fanout",
            Scenario::Fanout2(_) => "fanout2",
            Scenario::Direct(_) => "direct",
            Scenario::Chatroom(_) => "chatroom",
            Scenario::Ticker(_) => "ticker",
            Scenario::Groups(_) => "groups",
        }
    }

    /// Connections the run opens.
    fn connections(&self) -> usize {
        match self {
            Scenario::Idle(a) => a.common.clients + 1,
            Scenario::Fanout(a) => a.common.clients + 1,
            Scenario::Fanout2(a) => a.common.clients + 1,
            Scenario::Direct(a) => a.common.clients * 2,
            Scenario::Chatroom(a) => a.common.clients,
            Scenario::Ticker(a) => a.common.clients,
            Scenario::Groups(a) => a.common.clients,
        }
    }
}

fn fail(msg: &str) -> ! {
    eprintln!("wxhub-bench: {msg}");
    std::process::exit(2);
}

fn main() {
    let cli = Cli::parse();
    let scenario = cli.scenario;
    let c = scenario.common().clone();
    if c.clients == 0 {
        fail("--clients must be at least 1");
    }
    if let Scenario::Fanout(f) = &scenario {
        if f.rate.is_some_and(|r| r <= 0.0) || f.inflight == Some(0) {
            fail("--rate and --inflight must be positive");
        }
    }
    if let Scenario::Fanout2(f) = &scenario {
        if c.hub_bin.is_some() || c.url.is_none() {
            fail("fanout2 measures two running nodes: give them with --url and --url-b");
        }
        if f.rate <= 0.0 || f.rate.is_nan() {
            fail("--rate must be positive");
        }
        if let Err(e) = sys::parse_target(&f.url_b) {
            fail(&format!("--url-b: {e}"));
        }
    }
    let conns = scenario.connections();
    // Sockets, the hub's too when started here (it inherits the limit), plus slack.
    let nofile = sys::raise_nofile(conns as u64 + 256);
    if nofile < conns as u64 + 32 {
        eprintln!(
            "wxhub-bench: warning: the open-files limit is {nofile}; {conns} connections will not all open \
             (one process may open at most {nofile} files here)"
        );
    }
    let mut hub_args = c.hub_args.clone();
    if let Scenario::Ticker(t) = &scenario {
        if c.hub_bin.is_some() && !hub_args.iter().any(|a| a.starts_with("--tick-ms")) {
            hub_args.push(format!("--tick-ms={}", t.tick_ms));
        }
    }
    let mut hub = match &c.hub_bin {
        Some(bin) => match sys::start_hub(bin, &hub_args, c.hub_log.as_deref()) {
            Ok(h) => Some(h),
            Err(e) => {
                eprintln!("wxhub-bench: {e}");
                std::process::exit(1);
            }
        },
        None => None,
    };
    let url = match (&hub, &c.url) {
        (Some(h), _) => h.url.clone(),
        (None, Some(u)) => u.clone(),
        (None, None) => fail("give the hub with --url (and --pid), or start one with --hub-bin"),
    };
    let target = sys::parse_target(&url).unwrap_or_else(|e| fail(&e));
    let sources = match c.source_ips.as_str() {
        "none" => Vec::new(),
        "auto" if conns > 1000 && target.addr.is_ipv4() => {
            sys::parse_sources("127.0.0.2-127.0.0.9").expect("a valid range")
        }
        "auto" => Vec::new(),
        spec => sys::parse_sources(spec).unwrap_or_else(|e| fail(&format!("--source-ips: {e}"))),
    };
    if !sources.is_empty() && !target.addr.is_ipv4() {
        fail("--source-ips needs an IPv4 target");
    }
    let pid = hub.as_ref().map(|h| h.pid()).or(c.pid);

    let rt = if c.threads <= 1 {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
    } else {
        tokio::runtime::Builder::new_multi_thread()
            .worker_threads(c.threads)
            .enable_all()
            .build()
    }
    .expect("a tokio runtime");

    let started = Instant::now();
    let ctx = run::Run::new(&scenario, target, sources.clone(), pid);
    let max = Duration::from_secs_f64(c.max_s);
    let mut report = rt.block_on(async {
        match tokio::time::timeout(max, run::run(ctx.clone(), scenario.clone())).await {
            Ok(r) => r,
            Err(_) => {
                let mut r = run::Report::default();
                r.fatal(format!("--max-s {} exceeded", c.max_s));
                r
            }
        }
    });
    let hub_alive = hub.as_mut().map(|h| h.alive());
    if hub_alive == Some(false) {
        report.fatal(format!(
            "the hub exited during the run; see {}",
            hub.as_ref().map(|h| h.log.as_str()).unwrap_or("its log")
        ));
    }
    let mut head = serde_json::Map::new();
    head.insert("scenario".into(), scenario.name().into());
    head.insert("label".into(), c.label.clone().into());
    head.insert("url".into(), url.clone().into());
    head.insert("clients".into(), c.clients.into());
    head.insert("threads".into(), c.threads.into());
    head.insert("source_ips".into(), sources.len().into());
    head.insert("hub_pid".into(), pid.into());
    if let Some(h) = &hub {
        head.insert("hub_command".into(), h.command.clone().into());
    }
    head.insert("machine".into(), sys::machine());
    head.insert("elapsed_s".into(), started.elapsed().as_secs_f64().into());
    let code = report.print(scenario.name(), &url, head, &ctx);
    // Stop the hub before exiting; the kernel closes the client sockets.
    drop(hub);
    std::process::exit(code);
}
