//! The messages the `Hub` actor handles, one struct per intent, named as verbs.

use std::sync::Arc;

use actix::prelude::*;
use bytestring::ByteString;

use crate::auth::Grant;
use crate::error::{CloseReason, ReplyError};
use crate::history::Position;
use crate::outbox::Outbox;
use crate::pool::SessionId;
use crate::protocol::{Body, RequestId, UsersPage};
pub use crate::router::Stats;
use crate::router::{Listing, Outcome};

/// Who sent a command, and the `id` its reply echoes.
#[derive(Debug, Clone)]
pub struct Caller {
    pub session: SessionId,
    pub id: Option<RequestId>,
    /// When the command arrived at its session (the routing-time metric).
    pub at: std::time::Instant,
}

impl Caller {
    pub fn new(session: SessionId, id: Option<RequestId>) -> Self {
        Caller {
            session,
            id,
            at: std::time::Instant::now(),
        }
    }
}

/// A new session; it may send commands right after this.
#[derive(Message)]
#[rtype(result = "()")]
pub struct Connect {
    pub session: SessionId,
    pub outbox: Arc<Outbox>,
}

/// A reply the session made itself, about a command the hub never saw (`bad_request`,
/// `rate_limited`, `unauthorized`), and/or a close the session decided on (flood, bad
/// tokens): the hub queues the frame as it queues its own replies, so that it comes
/// after the replies to the commands the client sent before, the handshake's included,
/// and then closes the outbox, so the session writes all of that before its close
/// frame. Rare by construction: a session that keeps provoking them is closed.
#[derive(Message)]
#[rtype(result = "()")]
pub struct Relay {
    pub session: SessionId,
    pub frame: Option<ByteString>,
    pub close: Option<CloseReason>,
}

/// A session ended; it leaves its user and its groups.
#[derive(Message)]
#[rtype(result = "()")]
pub struct Disconnect {
    pub session: SessionId,
}

/// `join`; `classic` is the `{"name": ...}` login, whose name prefix lists groups.
#[derive(Message)]
#[rtype(result = "()")]
pub struct Join {
    pub caller: Caller,
    pub name: String,
    pub classic: bool,
    /// What the session's verified token allows (everything without auth).
    pub grant: Grant,
    /// Recover the user's direct messages after this position.
    pub since: Option<Position>,
}

/// `direct`: to every session of one user.
#[derive(Message)]
#[rtype(result = "()")]
pub struct SendDirect {
    pub caller: Caller,
    pub to: String,
    pub body: Body,
    pub mid: Option<String>,
}

/// `broadcast`: to every joined session.
#[derive(Message)]
#[rtype(result = "()")]
pub struct Broadcast {
    pub caller: Caller,
    pub body: Body,
    pub mid: Option<String>,
}

/// `subscribe`.
#[derive(Message)]
#[rtype(result = "()")]
pub struct Subscribe {
    pub caller: Caller,
    pub group: String,
    pub presence: bool,
    /// Recover the group's messages after this position.
    pub since: Option<Position>,
}

/// `history` for a group: the newest messages its stream holds.
#[derive(Message)]
#[rtype(result = "()")]
pub struct GroupHistory {
    pub caller: Caller,
    pub group: String,
    pub limit: usize,
}

/// `unsubscribe`.
#[derive(Message)]
#[rtype(result = "()")]
pub struct Unsubscribe {
    pub caller: Caller,
    pub group: String,
}

/// `publish`: to every member session of a group.
#[derive(Message)]
#[rtype(result = "()")]
pub struct Publish {
    pub caller: Caller,
    pub group: String,
    pub body: Body,
    pub mid: Option<String>,
}

/// `users`: one page of the online users, or of a group's.
#[derive(Message)]
#[rtype(result = "()")]
pub struct ListUsers {
    pub caller: Caller,
    pub group: Option<String>,
    pub page: UsersPage,
}

/// `ping`: answered through the hub so that `pong` keeps its place among the replies.
#[derive(Message)]
#[rtype(result = "()")]
pub struct Ping {
    pub caller: Caller,
}

/// The classic text `stock`: the six-number feed.
#[derive(Message)]
#[rtype(result = "()")]
pub struct SubscribeClassicFeed {
    pub session: SessionId,
}

/// A frame the server made for each of some groups (the ticker's quotes, made once per
/// tick): the hub delivers each to the group's members and keeps it as the group's
/// snapshot, which a new subscriber gets right after `subscribed`.
#[derive(Message)]
#[rtype(result = "()")]
pub struct PublishFrames {
    pub frames: Vec<(Arc<str>, ByteString)>,
}

/// From the hub to the feed of its fed groups (the ticker): `group` gained its first
/// session (`watched`) or lost its last, so the feed need only work while something is
/// watched.
#[derive(Message, Debug, Clone, PartialEq, Eq)]
#[rtype(result = "()")]
pub struct FeedDemand {
    pub group: Arc<str>,
    pub watched: bool,
}

/// Tells the hub where the demand of its fed groups goes. The groups already watched
/// are told at once.
#[derive(Message)]
#[rtype(result = "()")]
pub struct AttachFeed {
    pub demand: Recipient<FeedDemand>,
}

/// The hub is shutting down: close every session with 1001 and refuse new ones.
#[derive(Message)]
#[rtype(result = "()")]
pub struct Shutdown;

/// Asks for the hub's counters.
#[derive(Message)]
#[rtype(result = "Stats")]
pub struct GetStats;

/// Where the server API posts a message.
#[derive(Debug, Clone)]
pub enum Target {
    /// `send`: every session of one user (stored when the user was seen lately).
    User(String),
    /// `publish`: every member of a group.
    Group(String),
    /// `broadcast`: every joined session.
    Everyone,
}

/// The server API posts a message, as a client's `direct`, `publish` or `broadcast`
/// would route, from the name `from`.
#[derive(Message)]
#[rtype(result = "Result<Outcome, ReplyError>")]
pub struct ServerPost {
    pub from: Arc<str>,
    pub target: Target,
    pub body: Body,
}

/// The server API subscribes (or unsubscribes) every live session of a user; answers
/// with how many.
#[derive(Message)]
#[rtype(result = "Result<usize, ReplyError>")]
pub struct ServerSubscribe {
    pub name: String,
    pub group: String,
    pub subscribe: bool,
}

/// The server API closes every session of a user with 1008 and `note`; answers with how
/// many.
#[derive(Message)]
#[rtype(result = "usize")]
pub struct DisconnectUser {
    pub name: String,
    pub note: Option<Arc<str>>,
}

/// What the server API lists.
#[derive(Debug, Clone)]
pub enum Listed {
    Users,
    /// Users whose name starts with this.
    UsersWithPrefix(String),
    Groups,
    /// The groups with the most members, most first.
    TopGroups,
    Members(String),
}

/// A user's sessions and groups, for the server API.
#[derive(Message)]
#[rtype(result = "Result<(usize, Vec<String>), ReplyError>")]
pub struct UserInfo {
    pub name: String,
}

/// A group's newest kept messages, for the server API: the encoded `history` reply.
#[derive(Message)]
#[rtype(result = "Result<ByteString, ReplyError>")]
pub struct GroupMessages {
    pub group: String,
    pub limit: usize,
}

/// One page of a listing for the server API.
#[derive(Message)]
#[rtype(result = "Result<Listing, ReplyError>")]
pub struct List {
    pub what: Listed,
    pub after: Option<String>,
    pub limit: usize,
}

/// Cluster mode: a message another node routed, for this node's sessions on `route`
/// (the frame as that node encoded it; see [`crate::cluster`]).
#[derive(Message)]
#[rtype(result = "()")]
pub struct RemoteFrame {
    pub route: crate::cluster::Route<Box<str>>,
    pub frame: ByteString,
    /// Its offset, for a message of a numbered stream (group or direct).
    pub offset: Option<u64>,
}

/// Cluster mode: Redis answered a read of a stream (see [`crate::cluster::Read`]).
#[derive(Message)]
#[rtype(result = "()")]
pub struct Caught {
    pub ticket: u64,
    pub answer: Result<crate::cluster::Answer, &'static str>,
}

/// Cluster mode: `name` entered `group` (its first session on any node) or left it (its
/// last anywhere), as the cluster's presence decided; for this node's watchers.
#[derive(Message, Debug)]
#[rtype(result = "()")]
pub struct PresenceEvent {
    pub group: Box<str>,
    pub event: crate::protocol::PresenceChange,
    pub name: Box<str>,
}
