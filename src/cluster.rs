//! Cluster mode: several hub nodes sharing one Redis behave as one hub (`--redis`).
//!
//! The [`Router`](crate::router::Router) stays the one place that decides and delivers,
//! and it delivers to this node's sessions only. A [`Broker`] is how it tells the other
//! nodes: each message it routes is handed to [`Broker::publish`] once (the frame already
//! encoded: the bytes the local outboxes got), and each route that gains its first local
//! session or loses its last is handed to [`Broker::interest`], so that a node hears only
//! what its sessions need, as centrifuge's Redis broker does. What other nodes publish
//! comes back to the hub as [`RemoteFrame`](crate::hub::RemoteFrame)s, which the router
//! delivers to the local sessions of their route.
//!
//! On a single node the router has no broker at all: nothing here runs, and the delivery
//! path pays one `None` check per message.
//!
//! - [`pubsub`]: [`RedisBroker`], the Redis implementation (PUBLISH and SUBSCRIBE on
//!   tasks of a thread of their own; the hub never waits on Redis).
//! - [`memory`]: [`MemoryBroker`], which records what it is asked (router tests).
//! - [`presence`]: who is online and where, for the whole cluster (`users`, the API's
//!   listings, presence events), and the removal of dead nodes.
//! - [`leader`]: one ticker for the cluster, on the node holding a lease in Redis.
//!
//! On the wire: one Redis channel per route ([`Channels`]), and a payload that is the
//! origin node's id, a newline, and the frame ([`envelope`], [`open`]); a node drops its
//! own messages (it delivered them already) and anything malformed.

pub mod hold;
pub mod leader;
pub mod memory;
pub mod presence;
pub mod pubsub;
pub mod streams;

use std::sync::Arc;

use bytestring::ByteString;

pub use hold::Holds;
pub use memory::MemoryBroker;
pub use pubsub::{RedisBroker, RedisHealth};

use crate::history::{Position, Retention};
use crate::protocol::Template;

/// Where a message goes, across nodes: the sessions of a group, of a user, or every
/// joined session. `S` is `&str` going out and `Box<str>` coming in.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Route<S> {
    Group(S),
    User(S),
    Everyone,
}

impl<S: AsRef<str>> Route<S> {
    /// The same route, borrowed.
    pub fn as_deref(&self) -> Route<&str> {
        match self {
            Route::Group(g) => Route::Group(g.as_ref()),
            Route::User(u) => Route::User(u.as_ref()),
            Route::Everyone => Route::Everyone,
        }
    }
}

impl Route<&str> {
    /// The same route, owned (for a message to the hub).
    pub fn to_owned(self) -> Route<Box<str>> {
        match self {
            Route::Group(g) => Route::Group(g.into()),
            Route::User(u) => Route::User(u.into()),
            Route::Everyone => Route::Everyone,
        }
    }
}

/// How the router tells the other nodes. Calls come from the hub's thread and must not
/// block: an implementation queues, and does its I/O elsewhere.
pub trait Broker: Send {
    /// Hands `frame` (encoded once, the same bytes the local sessions got) to the other
    /// nodes' sessions on `route`. Returns whether it was handed on (a full queue refuses).
    fn publish(&mut self, route: Route<&str>, frame: &ByteString) -> bool;

    /// This node now has (`wanted`) or no longer has sessions on `route`. The router
    /// calls it on the first and the last, in order, never twice in a row alike.
    fn interest(&mut self, route: Route<&str>, wanted: bool);

    /// Hands a message of a numbered stream (a group's or a user's, by `route`) to Redis,
    /// which numbers it, keeps it as `retention` says and publishes it to every node
    /// *including this one*: each node delivers the stream's messages in Redis's order.
    /// Returns whether it was handed on.
    fn publish_numbered(
        &mut self,
        route: Route<&str>,
        template: &Template,
        retention: Retention,
    ) -> bool;

    /// Asks for a stream's position and, as `read` says, what it holds; answered with a
    /// [`Caught`](crate::hub::Caught) to the hub, after every message of that stream
    /// published before the read was handed to the hub (and only once this node hears
    /// the route's channel, if it asked for it before). Always answered, failures too.
    fn read(&mut self, read: Read);

    /// Whether Redis answers now: while it does not, the router numbers nothing and
    /// routes locally.
    fn up(&self) -> bool;
}

/// A read of a numbered stream in Redis.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Read {
    /// Names the answer.
    pub ticket: u64,
    /// The stream: a group's or a user's.
    pub route: Route<Box<str>>,
    pub ask: Ask,
    /// Messages older than this are no longer held.
    pub ttl_ms: u64,
    /// Most bytes of messages the answer may carry: a recovery past it is not recovered,
    /// a `latest` keeps the newest that fit.
    pub max_bytes: usize,
}

/// What a [`Read`] wants besides the position.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Ask {
    /// Nothing more (a subscribe without `since`).
    Position,
    /// Every message after this position, if all are held and there are at most `max`.
    Since(Position, usize),
    /// The newest `limit` messages held.
    Latest(usize),
}

/// What Redis answered to a [`Read`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Answer {
    pub position: Position,
    /// For [`Ask::Since`]: whether every message after it was there (`frames`).
    pub recovered: Option<bool>,
    /// Oldest first.
    pub frames: Vec<ByteString>,
}

/// What a node needs to join a cluster.
#[derive(Debug, Clone)]
pub struct ClusterConfig {
    /// `redis://host:port/db` (`--redis`).
    pub url: String,
    /// This node's name in logs (`--node-name`, default host name and port).
    pub node_name: String,
    /// Prefixes every Redis key and channel, so that several hubs can share one Redis.
    pub prefix: String,
    /// Payloads from Redis longer than this are dropped (a frame is at most one message
    /// and its envelope).
    pub max_frame_bytes: usize,
    /// Silence on the PUB/SUB connection after which the node probes it (`--redis-probe`).
    pub probe: std::time::Duration,
}

impl ClusterConfig {
    /// The id this process publishes under: its node name and a random suffix, so that two
    /// nodes given the same name (a copied configuration) still hear each other. One per
    /// process: routing, presence and the ticker's election name the node alike.
    pub fn node_id(&self) -> Arc<str> {
        static SUFFIX: std::sync::OnceLock<Arc<str>> = std::sync::OnceLock::new();
        let suffix = SUFFIX.get_or_init(crate::history::new_epoch);
        format!("{}/{suffix}", self.node_name).into()
    }
}

/// Whether a node name can go in a payload's first line: 1 to 200 characters, no
/// whitespace or control character.
pub fn valid_node_name(name: &str) -> bool {
    (1..=200).contains(&name.chars().count())
        && !name.chars().any(|c| c.is_whitespace() || c.is_control())
}

/// This machine's host name (for the default node name); `localhost` if it has none.
pub fn host_name() -> String {
    let mut buf = [0u8; 256];
    // SAFETY: the buffer is valid for its length; gethostname writes at most that.
    let rc = unsafe { libc::gethostname(buf.as_mut_ptr().cast(), buf.len()) };
    let len = buf.iter().position(|&b| b == 0).unwrap_or(buf.len());
    match std::str::from_utf8(&buf[..len]) {
        Ok(name) if rc == 0 && valid_node_name(name) => name.to_owned(),
        _ => "localhost".to_owned(),
    }
}

/// The Redis channel of each route: `{prefix}:g:{group}`, `{prefix}:u:{name}`,
/// `{prefix}:all`.
#[derive(Debug, Clone)]
pub struct Channels {
    /// The prefix and its colon.
    prefix: String,
}

impl Channels {
    pub fn new(prefix: &str) -> Self {
        Channels {
            prefix: format!("{prefix}:"),
        }
    }

    /// The channel of `route`.
    pub fn name(&self, route: Route<&str>) -> String {
        let p = &self.prefix;
        match route {
            Route::Group(g) => format!("{p}g:{g}"),
            Route::User(u) => format!("{p}u:{u}"),
            Route::Everyone => format!("{p}all"),
        }
    }

    /// The channel on which node `node` probes its own PUB/SUB connection.
    pub fn probe(&self, node: &str) -> String {
        format!("{}probe:{node}", self.prefix)
    }

    /// The route of a channel; `None` for a channel that is none of ours.
    pub fn route<'a>(&self, channel: &'a str) -> Option<Route<&'a str>> {
        let rest = channel.strip_prefix(&self.prefix)?;
        if rest == "all" {
            return Some(Route::Everyone);
        }
        match rest.split_at_checked(2)? {
            ("g:", g) if crate::protocol::valid_group(g) => Some(Route::Group(g)),
            ("u:", u) if crate::protocol::valid_name(u) => Some(Route::User(u)),
            _ => None,
        }
    }
}

/// The origin line of the messages of numbered streams, which the Lua script publishes:
/// every node delivers them, the one that sent them too.
pub const NUMBERED: &str = "#";

/// The payload published for `frame`: the origin's id, a newline, the frame.
pub fn envelope(origin: &str, frame: &str) -> Vec<u8> {
    let mut payload = Vec::with_capacity(origin.len() + 1 + frame.len());
    payload.extend_from_slice(origin.as_bytes());
    payload.push(b'\n');
    payload.extend_from_slice(frame.as_bytes());
    payload
}

/// Why a payload from Redis was dropped.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Malformed {
    #[error("{0} bytes, more than the limit")]
    TooLarge(usize),
    #[error("no origin line")]
    NoOrigin,
    #[error("the frame is not UTF-8")]
    NotUtf8,
    #[error("the frame is not a JSON object")]
    NotJson,
    #[error("a numbered frame without an offset")]
    NoOffset,
}

/// A frame from another node (or from Redis's numbering), and its offset if it belongs
/// to a numbered stream.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Opened {
    pub frame: ByteString,
    pub offset: Option<u64>,
}

/// The frame a payload carries, `None` when `own` sent it (delivered here already), or why
/// it is dropped. Redis is input too: whatever a channel carries, this never panics.
pub fn open(payload: &[u8], own: &str, max: usize) -> Result<Option<Opened>, Malformed> {
    if payload.len() > max {
        return Err(Malformed::TooLarge(payload.len()));
    }
    let newline = payload
        .iter()
        .position(|&b| b == b'\n')
        .filter(|&at| at > 0)
        .ok_or(Malformed::NoOrigin)?;
    let (origin, frame) = (&payload[..newline], &payload[newline + 1..]);
    if origin == own.as_bytes() {
        return Ok(None);
    }
    let frame = checked_frame(frame)?;
    let offset = if origin == NUMBERED.as_bytes() {
        Some(offset_of(&frame).ok_or(Malformed::NoOffset)?)
    } else {
        None
    };
    Ok(Some(Opened { frame, offset }))
}

/// A frame from Redis as sessions may get it: what a node encodes, one JSON object.
pub fn checked_frame(frame: &[u8]) -> Result<ByteString, Malformed> {
    let frame = std::str::from_utf8(frame).map_err(|_| Malformed::NotUtf8)?;
    if !frame.starts_with('{') || serde_json::from_str::<serde::de::IgnoredAny>(frame).is_err() {
        return Err(Malformed::NotJson);
    }
    Ok(ByteString::from(frame))
}

/// The top-level `offset` of a frame that is a JSON object.
pub fn offset_of(frame: &str) -> Option<u64> {
    #[derive(serde::Deserialize)]
    struct Peek {
        offset: Option<u64>,
    }
    serde_json::from_str::<Peek>(frame).ok()?.offset
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn channels_name_and_read_back_routes() {
        let c = Channels::new("wx");
        for route in [
            Route::Group("room.1"),
            Route::User("Zoë smith"),
            Route::Everyone,
        ] {
            assert_eq!(c.route(&c.name(route)), Some(route));
        }
        assert_eq!(c.name(Route::Group("a:b")), "wx:g:a:b");
        assert_eq!(c.route("wx:g:a:b"), Some(Route::Group("a:b")));
        for other in [
            "other:g:room",
            "wx:x:room",
            "wx:g:",
            "wx:g:bad group",
            "wx:u:",
            "wx:",
            "wx:al",
            "?",
        ] {
            assert_eq!(c.route(other), None, "{other}");
        }
    }

    #[test]
    fn payloads_carry_the_origin_and_malformed_ones_are_refused() {
        let frame = r#"{"type":"message","body":"a\nb"}"#;
        let payload = envelope("node-a/x1", frame);
        assert_eq!(
            open(&payload, "node-b/y2", 1 << 16)
                .unwrap()
                .map(|o| o.frame),
            Some(ByteString::from(frame))
        );
        assert_eq!(open(&payload, "node-a/x1", 1 << 16), Ok(None), "its own");
        // A raw newline inside the frame (a client's raw JSON body) is no problem.
        let raw = "{\"type\":\"message\",\"body\":{\n\"a\":1}}";
        assert_eq!(
            open(&envelope("n", raw), "m", 1 << 16)
                .unwrap()
                .map(|o| o.frame),
            Some(ByteString::from(raw))
        );
        // Numbered frames come back to every node, their origin's too, with their offset.
        let numbered = r#"{"type":"message","offset":12,"body":{"offset":1}}"#;
        let opened = open(&envelope(NUMBERED, numbered), "m", 1 << 16).unwrap();
        assert_eq!(opened.map(|o| o.offset), Some(Some(12)));
        assert_eq!(
            open(&envelope(NUMBERED, r#"{"type":"message"}"#), "m", 1 << 16),
            Err(Malformed::NoOffset)
        );
        let bad: [(&[u8], Malformed); 7] = [
            (b"", Malformed::NoOrigin),
            (b"no newline", Malformed::NoOrigin),
            (b"\n{}", Malformed::NoOrigin),
            (b"n\n\xff\xfe", Malformed::NotUtf8),
            (b"n\n[1]", Malformed::NotJson),
            (b"n\n{\"a\":", Malformed::NotJson),
            (b"n\n{} trailing", Malformed::NotJson),
        ];
        for (payload, why) in bad {
            assert_eq!(open(payload, "m", 1 << 16), Err(why), "{payload:?}");
        }
        assert_eq!(
            open(&payload, "m", 8),
            Err(Malformed::TooLarge(payload.len()))
        );
    }

    #[test]
    fn flags_turn_cluster_mode_on() {
        use clap::Parser;
        let parse = |args: &[&str]| {
            let mut all = vec!["wxhub"];
            all.extend_from_slice(args);
            crate::config::Cli::try_parse_from(all).unwrap().config
        };
        assert!(parse(&[]).cluster(8080).is_none(), "off without --redis");
        let on = parse(&["--redis", "redis://127.0.0.1:6379/0"])
            .cluster(8080)
            .unwrap();
        assert_eq!(
            (on.prefix.as_str(), on.url.as_str()),
            ("wxhub", "redis://127.0.0.1:6379/0")
        );
        assert_eq!(on.node_name, format!("{}:8080", host_name()));
        let named = parse(&[
            "--redis",
            "redis://r/1",
            "--node-name",
            "n1",
            "--redis-prefix",
            "app",
        ]);
        assert!(named.validate().is_ok());
        let named = named.cluster(1).unwrap();
        assert_eq!(
            (named.node_name.as_str(), named.prefix.as_str()),
            ("n1", "app")
        );
        assert!(parse(&["--node-name", "a b"]).validate().is_err());
        assert!(parse(&["--redis-prefix", ""]).validate().is_err());
    }

    #[test]
    fn node_names_fit_on_one_line() {
        assert!(valid_node_name("host-1:8080"));
        for bad in ["", "a b", "a\nb", "a\tb", &"x".repeat(201)] {
            assert!(!valid_node_name(bad), "{bad:?}");
        }
        assert!(valid_node_name(&host_name()));
        let config = ClusterConfig {
            url: "redis://127.0.0.1/".into(),
            node_name: "n:1".into(),
            prefix: "wxhub".into(),
            max_frame_bytes: 1,
            probe: std::time::Duration::from_secs(30),
        };
        let (a, b) = (config.node_id(), config.node_id());
        assert!(a.starts_with("n:1/") && a.len() == "n:1/".len() + 8, "{a}");
        assert_eq!(a, b, "one id per process");
    }
}

#[cfg(test)]
mod router_tests;
