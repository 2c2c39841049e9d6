//! What happens to a message: every routing rule of the hub, in one synchronous place.
//!
//! The [`Router`] owns the [`Pool`] (sessions, users, groups) and the [`Policies`], and
//! each operation (`join`, `leave`, `subscribe`, `unsubscribe`, `send`, `broadcast`,
//! `publish`, `publish_frame`, `kick`) checks what is asked, changes membership, encodes
//! each event once and queues the shared bytes in every recipient's [`Outbox`]. It
//! returns what it did ([`Outcome`]) or why not ([`ReplyError`]). A message may come from
//! a session or from the server ([`Sender`]), so the server API and the ticker route
//! exactly as clients do. No actors and no clock: the [`crate::hub::Hub`] actor is a
//! thin shell that turns mailbox messages into router calls and results into replies,
//! and unit tests call the router with stand-in outboxes.
//!
//! Order: everything an operation queues for one session is queued in the order it is
//! produced, and the hub calls the router from one thread, so a client sees replies and
//! deliveries in the order the hub decided them. Operations that change a session's own
//! state (`join`, `subscribe`, `unsubscribe`) queue their confirmation to it first, then
//! what follows from it (a snapshot, presence); sends return the count, and the caller
//! acknowledges after the deliveries.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;

use bytestring::ByteString;
use serde_json::value::RawValue;

use crate::auth::Grant;
use crate::cluster::presence::{Key, PresenceLink, UsersAsk};
use crate::cluster::{Answer, Ask, Broker, Holds, Read, Route};
use crate::error::{CloseReason, ErrorCode, ReplyError};
use crate::history::{History, MemoryHistory, Position, Recovery, Retention, StreamKey};
use crate::outbox::{Outbox, WakeBatch};
use crate::policy::{Policies, Publishers, CLASSIC_FEED};
use crate::pool::{forbidden, not_joined, GroupChange, Pool, SessionId};
use crate::protocol::PresenceChange;
use crate::protocol::{
    encode, encode_group_history, encode_message, legacy_groups, normalize_name, now_ms,
    valid_group, Event, Kind, RequestId, Stream, Template, UsersPage, GROUP_RULE,
};

/// Cluster mode: most messages one recovery replays (more answers `recovered: false`).
const MAX_CLUSTER_REPLAY: usize = 10_000;

/// The server API's group messages: at once, or (cluster mode) when Redis answers.
pub enum Later<T> {
    Now(T),
    Soon(tokio::sync::oneshot::Receiver<T>),
}

/// Cluster mode: a read of Redis a held session (see [`Holds`]) or the server API waits
/// for.
struct Waiting {
    /// The held session; 0 for the server API, which waits on its own.
    session: SessionId,
    route: Route<Box<str>>,
    reply: Pending,
}

/// What answers a [`Waiting`] read.
enum Pending {
    Joined {
        request: Option<RequestId>,
        name: Arc<str>,
        since: bool,
    },
    Subscribed {
        request: Option<RequestId>,
        members: usize,
        since: bool,
        /// Already a member (a subscribe again, e.g. for presence): it was getting the
        /// live messages all along, so none held for it is covered by the read.
        was_member: bool,
    },
    History {
        request: Option<RequestId>,
    },
    /// The server API's group messages.
    Api(tokio::sync::oneshot::Sender<Result<ByteString, ReplyError>>),
}

/// Who a message is from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Sender {
    /// A client: it must have joined, and its token's grant applies.
    Session(SessionId),
    /// The server (its API, the ticker), with the name the event carries in `from`.
    Server(Arc<str>),
}

impl Sender {
    /// The sending session, if a client sent it.
    pub fn session(&self) -> Option<SessionId> {
        match self {
            Sender::Session(id) => Some(*id),
            Sender::Server(_) => None,
        }
    }
}

/// A message a client or the server posts: its body, spliced into the event as it came,
/// and the sender's message id (`mid`), passed on so that recipients can recognise a
/// message sent again after a lost connection.
#[derive(Debug, Clone, Copy)]
pub struct Post<'a> {
    pub body: &'a RawValue,
    pub mid: Option<&'a str>,
}

impl<'a> Post<'a> {
    pub fn new(body: &'a RawValue, mid: Option<&'a str>) -> Self {
        Post { body, mid }
    }
}

impl<'a> From<&'a RawValue> for Post<'a> {
    fn from(body: &'a RawValue) -> Self {
        Post { body, mid: None }
    }
}

/// What an operation did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Outcome {
    /// Sessions whose outbox took the message (`ack.delivered`), the sending session's
    /// own copy not counted (its user's other sessions are).
    pub delivered: usize,
    /// Sessions cut off during the operation because their outbox refused a frame
    /// (closed, or past its bound as a slow consumer); they are removed, and their
    /// departures announced.
    pub refused: usize,
    /// Presence events queued.
    pub announced: usize,
    /// For `subscribe`: the group's members after it.
    pub members: usize,
    /// For `direct`: kept in the recipient's stream while it has no live session.
    pub stored: bool,
    /// Cluster mode: the message was handed on to the other nodes too (`delivered`
    /// counts this node's sessions only).
    pub cluster: bool,
}

/// The counters the hub reports.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Stats {
    pub sessions: usize,
    pub users: usize,
    pub groups: usize,
    /// Bytes waiting in all outboxes of the pool.
    pub queued_bytes: usize,
    /// Sessions closed because their outbox passed its bound.
    pub slow_consumers: usize,
    /// Streams, messages and bytes the history holds.
    pub history: crate::history::HistoryStats,
    /// Messages posted (direct, broadcast, publish; by clients and the server) and routed.
    pub messages_in: u64,
    /// Deliveries of those messages to sessions other than the sending one.
    pub messages_out: u64,
    /// The same, by kind.
    pub delivered: Deliveries,
    /// Sessions in the groups the server feeds (market data, the classic feed).
    pub feed_sessions: usize,
}

/// Deliveries by the route the message took.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Deliveries {
    pub direct: u64,
    pub broadcast: u64,
    pub group: u64,
}

/// One page of a listing for the server API: entries sorted by name, the total, and the
/// name to ask the next page after.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Listing {
    pub entries: Vec<(String, usize)>,
    pub count: usize,
    pub next: Option<String>,
}

/// How much the hub keeps for recovery besides the group policies' retention.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RecallConfig {
    /// Each user's stream of direct messages (and how long a user counts as seen).
    pub users: Retention,
    /// Most bytes of messages kept in all; past it the oldest go first.
    pub memory_bytes: usize,
    /// See [`Recall::max_replay_bytes`].
    pub max_replay_bytes: usize,
}

impl Default for RecallConfig {
    fn default() -> Self {
        RecallConfig {
            users: Retention::DEFAULT,
            memory_bytes: 64 << 20,
            max_replay_bytes: 512 << 10,
        }
    }
}

impl RecallConfig {
    /// Kept in this process's memory; an empty stream's position is kept as long as the
    /// users' ttl.
    pub fn in_memory(&self) -> Recall {
        Recall {
            history: Box::new(MemoryHistory::new(self.memory_bytes, self.users.ttl)),
            users: self.users,
            max_replay_bytes: self.max_replay_bytes,
            clock: now_ms,
        }
    }
}

/// What the router keeps of messages, for recovery.
pub struct Recall {
    pub history: Box<dyn History>,
    /// How much of each user's stream of direct messages is kept; its ttl is also how
    /// long after its last session a user still counts as seen, so that a direct message
    /// to it is stored rather than `not_found`.
    pub users: Retention,
    /// A recovery that would queue more bytes than this for one session is refused
    /// (`recovered: false`): the session would be closed as a slow consumer otherwise.
    pub max_replay_bytes: usize,
    /// Milliseconds since the Unix epoch; a test's own clock drives retention.
    pub clock: fn() -> u64,
}

impl Default for Recall {
    /// In memory, at the defaults: 100 messages and 5 minutes per stream, 64 MiB in all.
    fn default() -> Self {
        RecallConfig::default().in_memory()
    }
}

/// A fed group gained its first session (`watched`) or lost its last: the feed may start
/// or stop working for it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Demand {
    pub group: Arc<str>,
    pub watched: bool,
}

/// The routing rules and the state they apply to.
pub struct Router {
    pool: Pool,
    policies: Policies,
    /// The groups the server feeds: a fed-policy group exists only if it is here.
    feeds: HashSet<Arc<str>>,
    /// The latest frame of each fed group: the snapshot for new subscribers.
    snapshots: HashMap<Arc<str>, ByteString>,
    /// Demand changes not yet taken by the hub ([`Router::take_demand`]).
    demand: Vec<Demand>,
    slow_consumers: usize,
    /// Sessions whose outbox refused a frame during the current operation.
    unreachable: Vec<SessionId>,
    /// The wake-ups of the current fan-out, handed to the sessions' threads in chunks;
    /// kept so that its buffers are reused rather than allocated per fan-out.
    wakes: WakeBatch,
    recall: Recall,
    messages_in: u64,
    delivered: Deliveries,
    /// Cluster mode: how the other nodes are told of messages and of what this node's
    /// sessions need. `None` on a single node, where none of it runs.
    broker: Option<Box<dyn Broker>>,
    /// Cluster mode: sessions whose frames wait for a read of Redis, and the reads.
    holds: Holds,
    waiting: HashMap<u64, Waiting>,
    /// Cluster mode: where this node's presence goes, and who answers `users` for the
    /// cluster. Set, the router no longer announces join and leave itself: they come
    /// back from the cluster, decided for all nodes ([`Router::announce_remote`]).
    presence: Option<PresenceLink>,
}

impl Router {
    /// A router for sessions in at most `max_groups` groups each, with the given group
    /// policies and fed groups.
    pub fn new(
        max_groups: usize,
        policies: Policies,
        feeds: impl IntoIterator<Item = Arc<str>>,
    ) -> Self {
        Router {
            pool: Pool::new(max_groups),
            policies,
            feeds: feeds.into_iter().collect(),
            snapshots: HashMap::new(),
            demand: Vec::new(),
            slow_consumers: 0,
            unreachable: Vec::new(),
            wakes: WakeBatch::default(),
            recall: Recall::default(),
            messages_in: 0,
            delivered: Deliveries::default(),
            broker: None,
            holds: Holds::default(),
            waiting: HashMap::new(),
            presence: None,
        }
    }

    /// The same router keeping presence for the cluster through `link` (cluster mode).
    pub fn with_presence(mut self, link: PresenceLink) -> Self {
        self.presence = Some(link);
        self
    }

    /// The same router in cluster mode: messages go to the other nodes through `broker`
    /// too, and group and direct messages are numbered and kept in Redis (see
    /// [`crate::cluster::streams`]): each node delivers them as Redis hands them back, in
    /// the stream's order, and positions are read from Redis.
    pub fn with_broker(mut self, broker: Box<dyn Broker>) -> Self {
        self.broker = Some(broker);
        self
    }

    /// The same router keeping history as `recall` says.
    pub fn with_recall(mut self, recall: Recall) -> Self {
        self.holds = Holds::with_limit(recall.max_replay_bytes);
        self.recall = recall;
        self
    }

    /// Forgets expired messages and idle streams; the hub calls it now and then.
    pub fn sweep_history(&mut self) {
        let now = (self.recall.clock)();
        let pool = &self.pool;
        self.recall.history.sweep(now, &|key| match key {
            StreamKey::Group(g) => pool.group(g).is_some(),
            StreamKey::User(u) => pool.user_outboxes(u).is_some(),
        });
    }

    /// The membership state, for tests and the hub's own checks.
    pub fn pool(&self) -> &Pool {
        &self.pool
    }

    /// A new session, with the outbox its frames go to.
    pub fn connect(&mut self, id: SessionId, outbox: Arc<Outbox>) {
        self.pool.connect(id, outbox);
    }

    /// A session ended: it leaves its user and groups; departures are announced.
    pub fn leave(&mut self, id: SessionId) -> Outcome {
        let mut outcome = Outcome::default();
        self.remove(id, &mut outcome);
        self.finish(outcome)
    }

    /// Closes a session with `reason` once it has written what is queued for it, and
    /// removes it now (its departures announced).
    pub fn close(&mut self, id: SessionId, reason: CloseReason) -> Outcome {
        if let Some(entry) = self.pool.session(id) {
            entry.outbox.close(reason);
        }
        self.leave(id)
    }

    /// Closes every session of user `name` with `reason`; returns how many.
    pub fn kick(&mut self, name: &str, reason: CloseReason) -> usize {
        let ids: Vec<SessionId> = match self.pool.user_outboxes(name) {
            Some(sessions) => sessions.map(|(id, _)| id).collect(),
            None => return 0,
        };
        for &id in &ids {
            self.close(id, reason);
        }
        ids.len()
    }

    /// Closes every session with `reason` and forgets them all (shutdown).
    pub fn close_all(&mut self, reason: CloseReason) -> usize {
        let outboxes = self.pool.take_all();
        for outbox in &outboxes {
            outbox.close(reason);
        }
        outboxes.len()
    }

    /// Queues one frame for one session (a reply).
    pub fn reply(&mut self, id: SessionId, frame: &ByteString) {
        self.queue(id, frame);
        self.finish(Outcome::default());
    }

    /// Queues an `error` reply for one session.
    pub fn fail(&mut self, id: SessionId, request: Option<&RequestId>, err: &ReplyError) {
        crate::metrics::METRICS.error(err.code);
        let frame = encode(&Event::Error {
            id: request,
            code: err.code,
            message: &err.message,
        });
        self.reply(id, &frame);
    }

    /// Names a session as user `name` (already normalized and checked against its token)
    /// and confirms with `joined`; with `classic`, subscribes it to the groups the name
    /// lists before its first `_` (skipping any it may not join).
    pub fn join(
        &mut self,
        id: SessionId,
        name: &str,
        grant: Grant,
        classic: bool,
        request: Option<&RequestId>,
        since: Option<&Position>,
    ) -> Result<Outcome, ReplyError> {
        let (name, changes) = self.pool.join(id, name, grant)?;
        if self.broker.is_some() {
            if self.pool.session_count(&name) == 1 {
                self.user_interest(&name, true);
            }
            let ttl_ms = self.recall.users.ttl_ms();
            self.read_stream(
                id,
                Route::User(&name),
                since,
                ttl_ms,
                Pending::Joined {
                    request: request.cloned(),
                    name: name.clone(),
                    since: since.is_some(),
                },
            );
        } else {
            let key = StreamKey::User(name.clone());
            let now = (self.recall.clock)();
            self.recall.history.touch(&key, now);
            let (position, recovered) = self.recover(id, &key, since, now);
            self.queue(
                id,
                &encode(&Event::Joined {
                    id: request,
                    name: &name,
                    session: id,
                    stream: Stream {
                        epoch: Some(&position.epoch),
                        offset: Some(position.offset),
                        recovered,
                    },
                }),
            );
        }
        let mut outcome = Outcome::default();
        self.announce(changes, &mut outcome);
        if classic {
            for group in legacy_groups(&name) {
                // Errors here (too many groups, a token that does not allow the group,
                // a group only the server feeds) are not the classic client's to handle:
                // the group is skipped.
                if self.policies.of(group).publish == Publishers::Joined {
                    if let Ok((change, _)) = self.add_member(id, group, false) {
                        self.announce(vec![change], &mut outcome);
                    }
                }
            }
        }
        Ok(self.finish(outcome))
    }

    /// Adds a session to a group (again: updates its presence flag) and confirms with
    /// `subscribed`, then the group's snapshot if it is fed, then the arrival.
    pub fn subscribe(
        &mut self,
        id: SessionId,
        group: &str,
        presence: bool,
        request: Option<&RequestId>,
        since: Option<&Position>,
    ) -> Result<Outcome, ReplyError> {
        if !valid_group(group) {
            return Err(invalid_group());
        }
        let policy = self.policies.of(group);
        if policy.feed && !self.feeds.contains(group) {
            return Err(ReplyError::new(
                ErrorCode::NotFound,
                format!("no such group: {group} (the server does not feed it)"),
            ));
        }
        if presence && !policy.presence {
            return Err(ReplyError::new(
                ErrorCode::Forbidden,
                format!("group {group} has no presence"),
            ));
        }
        let streamed = !policy.feed;
        let was_member = self.pool.group(group).is_some_and(|m| m.has(id));
        let (change, members) = self.add_member(id, group, presence)?;
        if streamed && self.broker.is_some() {
            let mut outcome = Outcome {
                members,
                ..Outcome::default()
            };
            // The node's interest first: the read must come after its SUBSCRIBE, or what
            // is published between the two would never reach this node. (Nothing is
            // queued for this session here: presence comes back from the cluster.)
            self.after_subscribe(id, change, &mut outcome);
            // The stream is in Redis: `subscribed` (after the replay) when it answers.
            self.read_stream(
                id,
                Route::Group(group),
                since,
                policy.history.ttl_ms(),
                Pending::Subscribed {
                    request: request.cloned(),
                    members,
                    since: since.is_some(),
                    was_member,
                },
            );
            return Ok(self.finish(outcome));
        }
        // The replay is queued first, then `subscribed`, then what is live: one thread
        // does all three, so nothing published meanwhile can fall between them.
        let (position, recovered) = if streamed {
            let now = (self.recall.clock)();
            let (p, r) = self.recover(id, &StreamKey::group(group), since, now);
            (Some(p), r)
        } else {
            (None, None)
        };
        self.queue(
            id,
            &encode(&Event::Subscribed {
                id: request,
                group,
                members,
                stream: Stream {
                    epoch: position.as_ref().map(|p| &*p.epoch),
                    offset: position.as_ref().map(|p| p.offset),
                    recovered,
                },
            }),
        );
        let mut outcome = Outcome {
            members,
            ..Outcome::default()
        };
        self.after_subscribe(id, change, &mut outcome);
        Ok(self.finish(outcome))
    }

    /// The classic text `stock`: the six-number feed, a group no client can name.
    pub fn subscribe_classic_feed(&mut self, id: SessionId) -> Result<Outcome, ReplyError> {
        if !self.feeds.contains(CLASSIC_FEED) {
            return Ok(Outcome::default());
        }
        let (change, _) = self.add_member(id, CLASSIC_FEED, false)?;
        let mut outcome = Outcome::default();
        self.after_subscribe(id, change, &mut outcome);
        Ok(self.finish(outcome))
    }

    /// Checks the group's policy and the session's token, then adds the member.
    fn add_member(
        &mut self,
        id: SessionId,
        group: &str,
        presence: bool,
    ) -> Result<(GroupChange, usize), ReplyError> {
        let policy = self.policies.of(group);
        let entry = self.pool.session(id).ok_or_else(unknown_session)?;
        // Presence names users, so anonymous sessions get none.
        if (policy.needs_join || presence) && entry.name.is_none() {
            return Err(not_joined());
        }
        if !policy.open && !entry.grant.allows(group) {
            return Err(forbidden(group));
        }
        self.pool.subscribe(id, group, presence)
    }

    /// The snapshot of a fed group right behind the confirmation, so nothing of the feed
    /// can come between them; then the arrival.
    fn after_subscribe(&mut self, id: SessionId, change: GroupChange, outcome: &mut Outcome) {
        if let Some(frame) = self.snapshots.get(&change.group).cloned() {
            self.queue(id, &frame);
        }
        self.announce(vec![change], outcome);
    }

    /// Removes a session from a group and confirms with `unsubscribed`; leaving a group
    /// one is not in is no error (after a reconnect a client may not know what the hub
    /// still holds).
    pub fn unsubscribe(
        &mut self,
        id: SessionId,
        group: &str,
        request: Option<&RequestId>,
    ) -> Result<Outcome, ReplyError> {
        if !valid_group(group) {
            return Err(invalid_group());
        }
        let change = self.pool.unsubscribe(id, group);
        self.queue(id, &encode(&Event::Unsubscribed { id: request, group }));
        let mut outcome = Outcome::default();
        self.announce(change.into_iter().collect(), &mut outcome);
        Ok(self.finish(outcome))
    }

    /// `direct`: to every session of user `to`.
    pub fn send(&mut self, from: &Sender, to: &str, post: Post<'_>) -> Result<Outcome, ReplyError> {
        let sender = from.session();
        let from = self.sender_name(from)?;
        // Checked, so that an error never echoes more than a valid name, and in NFC, as
        // names are kept.
        let to = normalize_name(to)?;
        if self.broker.is_some() {
            let now = (self.recall.clock)();
            let event = Event::Message {
                kind: Kind::Direct,
                from: &from,
                to: Some(&to),
                group: None,
                mid: post.mid,
                offset: Some(Template::HOLE),
                body: post.body,
                ts: now,
            };
            let retention = self.recall.users;
            return Ok(self.publish_across(Route::User(&to), &event, retention, sender));
        }
        let key = StreamKey::user(&to);
        let now = (self.recall.clock)();
        let retention = self.recall.users;
        let online = self.pool.user_outboxes(&to).is_some();
        // Offline but seen within the window: kept for its next session to recover.
        let stored = !online
            && retention.keeps()
            && self.recall.history.seen_within(&key, retention.ttl, now);
        if !online && !stored {
            return Err(ReplyError::new(
                ErrorCode::NotFound,
                format!("{to} is not online and was not seen lately"),
            ));
        }
        let extra = post.body.get().len() + from.len() + to.len() + post.mid.map_or(0, str::len);
        let (_, frame) = self
            .recall
            .history
            .append(&key, retention, now, &mut |offset| {
                encode_message(
                    &Event::Message {
                        kind: Kind::Direct,
                        from: &from,
                        to: Some(&to),
                        group: None,
                        mid: post.mid,
                        offset: Some(offset),
                        body: post.body,
                        ts: now,
                    },
                    extra,
                )
            });
        let delivered = self.deliver_local(Route::User(&to), &frame, sender);
        let outcome = self.finish(Outcome {
            delivered,
            stored,
            ..Outcome::default()
        });
        Ok(self.counted(Kind::Direct, outcome))
    }

    /// `broadcast`: to every joined session.
    pub fn broadcast(&mut self, from: &Sender, post: Post<'_>) -> Result<Outcome, ReplyError> {
        let sender = from.session();
        let from = self.sender_name(from)?;
        let frame = encode(&Event::Message {
            kind: Kind::Broadcast,
            from: &from,
            to: None,
            group: None,
            mid: post.mid,
            offset: None,
            body: post.body,
            ts: now_ms(),
        });
        Ok(self.route_unnumbered(Route::Everyone, &frame, sender))
    }

    /// `publish`: a `message` event to every member session of a group, if the group's
    /// policy lets `from` publish there.
    pub fn publish(
        &mut self,
        from: &Sender,
        group: &str,
        post: Post<'_>,
    ) -> Result<Outcome, ReplyError> {
        let name = self.sender_name(from)?;
        if !valid_group(group) {
            return Err(invalid_group());
        }
        let policy = self.policies.of(group);
        if let Sender::Session(id) = from {
            if policy.publish == Publishers::Server {
                return Err(ReplyError::new(
                    ErrorCode::Forbidden,
                    format!("only the server publishes in {group}"),
                ));
            }
            self.pool.check_grant(*id, group)?;
        }
        if self.broker.is_some() && !policy.feed {
            let now = (self.recall.clock)();
            let event = Event::Message {
                kind: Kind::Group,
                from: &name,
                to: None,
                group: Some(group),
                mid: post.mid,
                offset: Some(Template::HOLE),
                body: post.body,
                ts: now,
            };
            return Ok(self.publish_across(
                Route::Group(group),
                &event,
                policy.history,
                from.session(),
            ));
        }
        let retention = policy.history;
        if self.pool.group(group).is_none() && (policy.feed || !retention.keeps()) {
            return Ok(self.counted(Kind::Group, Outcome::default())); // nobody to tell, now or later
        }
        if policy.feed {
            // The server's own message to a market group: delivered, not numbered (in
            // cluster mode too).
            return Ok(self.publish_unnumbered(from, group, &name, post));
        }
        // Numbered (and kept) even with no member now: the members that are away recover it.
        let now = (self.recall.clock)();
        // The pool's name of the group, shared: no allocation per message when it has members.
        let key = StreamKey::Group(
            self.pool
                .group_key(group)
                .cloned()
                .unwrap_or_else(|| Arc::from(group)),
        );
        let extra = post.body.get().len() + name.len() + group.len() + post.mid.map_or(0, str::len);
        let (_, frame) = self
            .recall
            .history
            .append(&key, retention, now, &mut |offset| {
                encode_message(
                    &Event::Message {
                        kind: Kind::Group,
                        from: &name,
                        to: None,
                        group: Some(group),
                        mid: post.mid,
                        offset: Some(offset),
                        body: post.body,
                        ts: now,
                    },
                    extra,
                )
            });
        if self.pool.group(group).is_none() {
            self.recall.history.release(&key, now);
        }
        let delivered = self.deliver_local(Route::Group(group), &frame, from.session());
        let outcome = self.finish(Outcome {
            delivered,
            ..Outcome::default()
        });
        Ok(self.counted(Kind::Group, outcome))
    }

    /// A frame the server made for a group (the ticker's quotes): delivered to the
    /// members as it is, and kept as the snapshot of a fed group.
    pub fn publish_frame(&mut self, group: &Arc<str>, frame: &ByteString) -> Outcome {
        let mut delivered = 0;
        if let Some(members) = self.pool.group(group) {
            delivered = deliver(
                members.outboxes(),
                frame,
                None,
                &mut self.wakes,
                &mut self.unreachable,
                &mut self.holds,
                None,
            );
        }
        if self.policies.of(group).feed {
            self.snapshots.insert(group.clone(), frame.clone());
        }
        self.finish(Outcome {
            delivered,
            ..Outcome::default()
        })
    }

    /// One page of user names as a `users` reply: of the hub, or of a group. A token
    /// with a `groups` claim sees names only in its groups; a group whose policy does
    /// not list its members answers the count alone.
    pub fn users(
        &self,
        id: SessionId,
        group: Option<&str>,
        page: &UsersPage,
        request: Option<&RequestId>,
    ) -> Result<ByteString, ReplyError> {
        let (after, limit) = (page.after.as_deref(), page.limit);
        let Some(listed) = self.users_scope(id, group)? else {
            let (users, next) = self.pool.user_names(after, limit);
            return Ok(encode(&Event::Users {
                id: request,
                group: None,
                users,
                count: self.pool.sizes().1,
                next,
            }));
        };
        let g = group.unwrap_or_default();
        let members = self.pool.group(g);
        let (users, next) = match members {
            Some(members) if listed => members.user_names(after, limit),
            _ => (Vec::new(), None),
        };
        Ok(encode(&Event::Users {
            id: request,
            group: Some(g),
            users,
            count: members.map_or(0, |m| m.user_count()),
            next,
        }))
    }

    /// What session `id` may list: `None` every user, `Some(listed)` the group's, whose
    /// policy lists names or gives the count alone. A token with a `groups` claim sees
    /// names only in its groups.
    fn users_scope(&self, id: SessionId, group: Option<&str>) -> Result<Option<bool>, ReplyError> {
        self.pool.joined_name(id)?;
        let Some(g) = group else {
            if self.pool.grant(id).is_some_and(Grant::is_limited) {
                return Err(ReplyError::new(
                    ErrorCode::Forbidden,
                    "a token limited to groups lists users one group at a time",
                ));
            }
            return Ok(None);
        };
        if !valid_group(g) {
            return Err(invalid_group());
        }
        let policy = self.policies.of(g);
        if !policy.open {
            self.pool.check_grant(id, g)?;
        }
        Ok(Some(policy.listed))
    }

    /// Cluster mode's `users`: checked here as [`Router::users`] checks it, then answered
    /// from the cluster's presence, straight into the session's outbox, off this thread.
    /// `false` on a single node (answer with [`Router::users`]).
    pub fn ask_users(
        &self,
        id: SessionId,
        group: Option<&str>,
        page: &UsersPage,
        request: Option<&RequestId>,
    ) -> Result<bool, ReplyError> {
        let Some(link) = &self.presence else {
            return Ok(false);
        };
        let listed = self.users_scope(id, group)?;
        let outbox = self
            .pool
            .session(id)
            .ok_or_else(unknown_session)?
            .outbox
            .clone();
        link.ask_users(UsersAsk {
            id: request.cloned(),
            group: group.map(str::to_owned),
            listed: listed.unwrap_or(true),
            after: page.after.clone(),
            limit: page.limit,
            outbox,
        });
        Ok(true)
    }

    /// Cluster mode: user `name` entered `group` (its first session on any node) or left
    /// it (its last anywhere); the group's presence watchers on this node are told.
    pub fn announce_remote(&mut self, group: &str, event: PresenceChange, name: &str) -> Outcome {
        let mut outcome = Outcome::default();
        if let Some(members) = self.pool.group(group) {
            let frame = encode(&Event::Presence { group, event, name });
            outcome.announced = deliver(
                members.watchers(),
                &frame,
                None,
                &mut self.wakes,
                &mut self.unreachable,
                &mut self.holds,
                None,
            );
        }
        self.finish(outcome)
    }

    /// Cluster mode: tells the cluster's presence how many sessions user `name` has here.
    pub fn count_user(&self, name: &str) {
        if let Some(link) = &self.presence {
            link.set(Key::User(name.to_owned()), self.pool.session_count(name));
        }
    }

    /// Cluster mode: tells the cluster's presence what a membership change left in the
    /// group here (the member's sessions in it, and its anonymous sessions).
    fn count_members(&self, change: &GroupChange) {
        let Some(link) = &self.presence else { return };
        if change.group.starts_with('#') {
            return; // hub-internal, listed nowhere
        }
        let group = self.pool.group(&change.group);
        if let Some(name) = &change.member {
            let key = Key::Member {
                group: change.group.to_string(),
                name: name.to_string(),
            };
            link.set(key, group.map_or(0, |g| g.sessions_of(name)));
        }
        let anonymous = group.map_or(0, |g| g.member_count() - g.user_count());
        link.set(Key::Anonymous(change.group.to_string()), anonymous);
    }

    /// Cluster mode: leaves the cluster's presence at once (shutdown).
    pub fn leave_presence(&self) {
        if let Some(link) = &self.presence {
            link.leave();
        }
    }

    /// Asks the sessions of one of the pool's sets to check their heartbeat.
    pub fn beat(&mut self, set: usize) {
        for outbox in self.pool.outboxes_of_set(set) {
            outbox.heartbeat(&mut self.wakes);
        }
        self.wakes.flush();
    }

    /// The fed groups that have at least one session now.
    pub fn watched_feeds(&self) -> Vec<Arc<str>> {
        self.feeds
            .iter()
            .filter(|g| self.pool.group(g).is_some())
            .cloned()
            .collect()
    }

    /// The fed groups whose demand changed since the last call, oldest first.
    pub fn take_demand(&mut self) -> std::vec::Drain<'_, Demand> {
        self.demand.drain(..)
    }

    pub fn stats(&self) -> Stats {
        let (sessions, users, groups) = self.pool.sizes();
        Stats {
            sessions,
            users,
            groups,
            queued_bytes: self.pool.queued_bytes(),
            slow_consumers: self.slow_consumers,
            history: self.recall.history.stats(),
            messages_in: self.messages_in,
            messages_out: self.delivered.direct + self.delivered.broadcast + self.delivered.group,
            delivered: self.delivered,
            feed_sessions: self
                .feeds
                .iter()
                .filter_map(|g| self.pool.group(g))
                .map(|g| g.session_count())
                .sum(),
        }
    }

    fn publish_unnumbered(
        &mut self,
        from: &Sender,
        group: &str,
        name: &str,
        post: Post<'_>,
    ) -> Outcome {
        let frame = encode(&Event::Message {
            kind: Kind::Group,
            from: name,
            to: None,
            group: Some(group),
            mid: post.mid,
            offset: None,
            body: post.body,
            ts: (self.recall.clock)(),
        });
        self.route_unnumbered(Route::Group(group), &frame, from.session())
    }

    // ---- the server API's listings and actions on users ---------------------------------

    /// One page of the online users, each with its number of live sessions.
    pub fn list_users(&self, after: Option<&str>, limit: usize) -> Listing {
        let (names, next) = self.pool.user_names(after, limit);
        Listing {
            entries: names
                .iter()
                .map(|n| (n.to_string(), self.pool.session_count(n)))
                .collect(),
            count: self.pool.sizes().1,
            next: next.map(str::to_owned),
        }
    }

    /// One page of the online users whose name starts with `prefix`.
    pub fn search_users(&self, prefix: &str, after: Option<&str>, limit: usize) -> Listing {
        let (names, next) = self.pool.user_names_with_prefix(prefix, after, limit);
        Listing {
            entries: names
                .iter()
                .map(|n| (n.to_string(), self.pool.session_count(n)))
                .collect(),
            count: self.pool.sizes().1,
            next: next.map(str::to_owned),
        }
    }

    /// A user's live sessions and the groups they are in; `not_found` when offline.
    pub fn user_info(&self, name: &str) -> Result<(usize, Vec<String>), ReplyError> {
        let name = normalize_name(name)?;
        let (sessions, groups) = self
            .pool
            .user_groups(&name)
            .ok_or_else(|| ReplyError::new(ErrorCode::NotFound, format!("{name} is not online")))?;
        Ok((sessions, groups.iter().map(|g| g.to_string()).collect()))
    }

    /// The `limit` groups with the most members, most first.
    pub fn top_groups(&self, limit: usize) -> Listing {
        Listing {
            entries: self
                .pool
                .top_groups(limit)
                .into_iter()
                .map(|(g, n)| (g.to_owned(), n))
                .collect(),
            count: self.pool.sizes().2,
            next: None,
        }
    }

    /// The newest `limit` messages a group's stream holds, for the server API: a
    /// `history` reply without an id.
    pub fn group_messages(
        &mut self,
        group: &str,
        limit: usize,
    ) -> Later<Result<ByteString, ReplyError>> {
        if !valid_group(group) {
            return Later::Now(Err(invalid_group()));
        }
        let policy = self.policies.of(group);
        if policy.feed {
            return Later::Now(Err(ReplyError::new(
                ErrorCode::BadRequest,
                format!("{group} keeps no messages (market data)"),
            )));
        }
        if let Some(broker) = &mut self.broker {
            let (tx, rx) = tokio::sync::oneshot::channel();
            let ticket = self.holds.ticket();
            self.waiting.insert(
                ticket,
                Waiting {
                    session: 0,
                    route: Route::Group(group.into()),
                    reply: Pending::Api(tx),
                },
            );
            broker.read(Read {
                ticket,
                route: Route::Group(group.into()),
                ask: Ask::Latest(limit),
                ttl_ms: policy.history.ttl_ms(),
                max_bytes: self.recall.max_replay_bytes,
            });
            return Later::Soon(rx);
        }
        Later::Now(Ok(self.newest_messages(group, limit, None)))
    }

    /// One page of the groups, each with its member count (`subscribed`'s `members`).
    pub fn list_groups(&self, after: Option<&str>, limit: usize) -> Listing {
        let (names, next) = self.pool.group_names(after, limit);
        Listing {
            entries: names
                .iter()
                .map(|g| {
                    (
                        g.to_string(),
                        self.pool.group(g).map_or(0, |m| m.member_count()),
                    )
                })
                .collect(),
            count: self.pool.sizes().2,
            next: next.map(str::to_owned),
        }
    }

    /// One page of a group's users, each with its number of sessions in the group; the
    /// count includes anonymous members. `not_found` when nobody is in it.
    pub fn list_members(
        &self,
        group: &str,
        after: Option<&str>,
        limit: usize,
    ) -> Result<Listing, ReplyError> {
        if !valid_group(group) {
            return Err(invalid_group());
        }
        let members = self
            .pool
            .group(group)
            .ok_or_else(|| ReplyError::new(ErrorCode::NotFound, format!("nobody is in {group}")))?;
        let (names, next) = members.user_names(after, limit);
        Ok(Listing {
            entries: names
                .iter()
                .map(|n| (n.to_string(), members.sessions_of(n)))
                .collect(),
            count: members.member_count(),
            next: next.map(str::to_owned),
        })
    }

    /// Subscribes (or unsubscribes) every live session of user `name` to `group`, as if
    /// each had asked: each gets `subscribed` (or `unsubscribed`) and the presence events
    /// that follow. Returns how many sessions it did; `not_found` when the user has none.
    pub fn subscribe_user(
        &mut self,
        name: &str,
        group: &str,
        subscribe: bool,
    ) -> Result<usize, ReplyError> {
        let name = normalize_name(name)?;
        if !valid_group(group) {
            return Err(invalid_group());
        }
        let ids: Vec<SessionId> = match self.pool.user_outboxes(&name) {
            Some(sessions) => sessions.map(|(id, _)| id).collect(),
            None => {
                return Err(ReplyError::new(
                    ErrorCode::NotFound,
                    format!("{name} is not online"),
                ))
            }
        };
        let mut done = 0;
        let mut first_error = None;
        for id in ids {
            let result = if subscribe {
                self.subscribe(id, group, false, None, None).map(|_| ())
            } else {
                self.unsubscribe(id, group, None).map(|_| ())
            };
            match result {
                Ok(()) => done += 1,
                Err(e) => {
                    first_error.get_or_insert(e);
                }
            }
        }
        match first_error {
            Some(e) if done == 0 => Err(e),
            _ => Ok(done),
        }
    }

    /// Closes every session of user `name` with 1008 and `note` as the reason; returns
    /// how many.
    pub fn disconnect_user(&mut self, name: &str, note: Option<Arc<str>>) -> usize {
        let ids: Vec<SessionId> = match self.pool.user_outboxes(name) {
            Some(sessions) => sessions.map(|(id, _)| id).collect(),
            None => return 0,
        };
        for &id in &ids {
            if let Some(entry) = self.pool.session(id) {
                match &note {
                    Some(note) => entry
                        .outbox
                        .close_with_note(CloseReason::Kicked, note.clone()),
                    None => entry.outbox.close(CloseReason::Kicked),
                }
            }
            self.leave(id);
        }
        ids.len()
    }

    /// `history` for a group: the newest `limit` messages its stream holds, for a session
    /// that may subscribe to it (a client that could not recover reloads with it).
    pub fn group_history(
        &mut self,
        id: SessionId,
        group: &str,
        limit: usize,
        request: Option<&RequestId>,
    ) -> Result<Outcome, ReplyError> {
        if !valid_group(group) {
            return Err(invalid_group());
        }
        let policy = self.policies.of(group);
        if policy.feed {
            return Err(ReplyError::new(
                ErrorCode::BadRequest,
                format!("{group} keeps no messages: ask `history` with a `symbol`"),
            ));
        }
        let entry = self.pool.session(id).ok_or_else(unknown_session)?;
        if policy.needs_join && entry.name.is_none() {
            return Err(not_joined());
        }
        if !policy.open && !entry.grant.allows(group) {
            return Err(forbidden(group));
        }
        if let Some(broker) = &mut self.broker {
            let ticket = self.holds.begin(id);
            self.waiting.insert(
                ticket,
                Waiting {
                    session: id,
                    route: Route::Group(group.into()),
                    reply: Pending::History {
                        request: request.cloned(),
                    },
                },
            );
            broker.read(Read {
                ticket,
                route: Route::Group(group.into()),
                ask: Ask::Latest(limit),
                ttl_ms: policy.history.ttl_ms(),
                max_bytes: self.recall.max_replay_bytes,
            });
            return Ok(Outcome::default());
        }
        let frame = self.newest_messages(group, limit, request);
        self.reply(id, &frame);
        Ok(Outcome::default())
    }

    /// A `history` reply for a group: its newest `limit` kept messages, cut (newest kept)
    /// to what an outbox takes, since a reply the session is closed for helps nobody.
    fn newest_messages(
        &mut self,
        group: &str,
        limit: usize,
        request: Option<&RequestId>,
    ) -> ByteString {
        let now = (self.recall.clock)();
        let key = StreamKey::group(group);
        let (frames, position) = self.recall.history.latest(&key, limit, now);
        if self.pool.group(group).is_none() {
            self.recall.history.release(&key, now);
        }
        let keep = self.newest_that_fit(&frames);
        encode_group_history(request, group, &position, &frames[frames.len() - keep..])
    }

    /// Queues for session `id` what its stream `key` holds after `since`, if all of it
    /// is held and fits the replay budget. Returns the stream's position, and whether the
    /// recovery asked for succeeded (`None` when none was asked for).
    fn recover(
        &mut self,
        id: SessionId,
        key: &StreamKey,
        since: Option<&Position>,
        now: u64,
    ) -> (Position, Option<bool>) {
        let Some(since) = since else {
            return (self.recall.history.position(key, now), None);
        };
        let (recovery, position) = self.recall.history.since(key, since, usize::MAX, now);
        match recovery {
            Recovery::Recovered(frames)
                if frames.iter().map(|f| f.len()).sum::<usize>()
                    <= self.recall.max_replay_bytes =>
            {
                for frame in &frames {
                    self.queue(id, frame);
                }
                (position, Some(true))
            }
            _ => (position, Some(false)),
        }
    }

    /// Cluster mode: a message from Redis, delivered to this node's sessions on `route`:
    /// one another node routed (it delivered to its own and acknowledged it), or one of a
    /// numbered stream at `offset` (from any node, this one too: Redis numbered it).
    pub fn deliver_remote(
        &mut self,
        route: Route<&str>,
        frame: &ByteString,
        offset: Option<u64>,
    ) -> Outcome {
        self.deliver_counted(route, frame, None, offset)
    }

    /// A message without an offset (a broadcast, the server's message to a market
    /// group): delivered to this node's sessions on `route`, handed to the other nodes,
    /// counted.
    fn route_unnumbered(
        &mut self,
        route: Route<&str>,
        frame: &ByteString,
        sender: Option<SessionId>,
    ) -> Outcome {
        let mut outcome = self.deliver_counted(route, frame, sender, None);
        outcome.cluster = self.tell_cluster(route, frame);
        self.messages_in += 1;
        outcome
    }

    /// Delivers to this node's sessions on `route`, removes those that refused, and
    /// counts the deliveries by kind.
    fn deliver_counted(
        &mut self,
        route: Route<&str>,
        frame: &ByteString,
        sender: Option<SessionId>,
        offset: Option<u64>,
    ) -> Outcome {
        let delivered = self.deliver_tagged(route, frame, sender, offset);
        let outcome = self.finish(Outcome {
            delivered,
            ..Outcome::default()
        });
        self.tally(route, outcome.delivered);
        outcome
    }

    /// Queues `frame` for this node's sessions on `route`; how many took it, `sender`'s
    /// own copy not counted.
    fn deliver_local(
        &mut self,
        route: Route<&str>,
        frame: &ByteString,
        sender: Option<SessionId>,
    ) -> usize {
        self.deliver_tagged(route, frame, sender, None)
    }

    /// [`Router::deliver_local`] for a frame at `offset` of the stream on `route`, which
    /// a held session keeps with its offset (see [`Holds`]).
    fn deliver_tagged(
        &mut self,
        route: Route<&str>,
        frame: &ByteString,
        sender: Option<SessionId>,
        offset: Option<u64>,
    ) -> usize {
        let (wakes, unreachable) = (&mut self.wakes, &mut self.unreachable);
        let holds = &mut self.holds;
        let tag = offset.map(|o| (route, o));
        match route {
            Route::Group(g) => self.pool.group(g).map_or(0, |m| {
                deliver(m.outboxes(), frame, sender, wakes, unreachable, holds, tag)
            }),
            Route::User(u) => self.pool.user_outboxes(u).map_or(0, |t| {
                deliver(t, frame, sender, wakes, unreachable, holds, tag)
            }),
            Route::Everyone => deliver(
                self.pool.joined_outboxes(),
                frame,
                sender,
                wakes,
                unreachable,
                holds,
                tag,
            ),
        }
    }

    /// Cluster mode: a group or direct message for Redis to number, keep and publish to
    /// every node, this one included (each node delivers a stream's messages in Redis's
    /// order). The ack counts this node's sessions on the route, which get it when Redis
    /// hands it back. While Redis does not answer, this node's sessions get it at once,
    /// without an offset, and nobody else does.
    fn publish_across(
        &mut self,
        route: Route<&str>,
        event: &Event<'_>,
        retention: Retention,
        sender: Option<SessionId>,
    ) -> Outcome {
        let extra = match event {
            Event::Message { body, from, .. } => body.get().len() + from.len() + 64,
            _ => 64,
        };
        let Some(template) = Template::encode(event, extra) else {
            log::error!("cluster: cannot make a template of a message");
            return Outcome::default();
        };
        let handed = match &mut self.broker {
            Some(broker) if broker.up() => broker.publish_numbered(route, &template, retention),
            _ => false,
        };
        self.messages_in += 1;
        if !handed {
            return self.deliver_counted(route, &template.unnumbered(), sender, None);
        }
        // Counted as delivered when Redis hands it back (`deliver_remote`).
        let sender_here = |id: SessionId| Some(id) == sender;
        let delivered = match route {
            Route::Group(g) => self.pool.group(g).map_or(0, |m| {
                m.session_count() - usize::from(sender.is_some_and(|s| m.has(s)))
            }),
            Route::User(u) => self
                .pool
                .user_outboxes(u)
                .map_or(0, |t| t.filter(|(id, _)| !sender_here(*id)).count()),
            Route::Everyone => 0,
        };
        Outcome {
            delivered,
            cluster: true,
            ..Outcome::default()
        }
    }

    /// Cluster mode: holds session `id` and asks Redis for the position of the stream on
    /// `route` (and what it holds after `since`); [`Router::caught`] answers with `reply`.
    fn read_stream(
        &mut self,
        id: SessionId,
        route: Route<&str>,
        since: Option<&Position>,
        ttl_ms: u64,
        reply: Pending,
    ) {
        let Some(broker) = &mut self.broker else {
            return;
        };
        let ticket = self.holds.begin(id);
        self.waiting.insert(
            ticket,
            Waiting {
                session: id,
                route: route.to_owned(),
                reply,
            },
        );
        broker.read(Read {
            ticket,
            route: route.to_owned(),
            ask: match since {
                Some(p) => Ask::Since(p.clone(), MAX_CLUSTER_REPLAY),
                None => Ask::Position,
            },
            ttl_ms,
            max_bytes: self.recall.max_replay_bytes,
        });
    }

    /// Cluster mode: Redis answered read `ticket` (or could not): the held session gets
    /// the replay, its reply, and what was held behind it.
    pub fn caught(&mut self, ticket: u64, answer: Result<Answer, &str>) -> Outcome {
        let Some(Waiting {
            session,
            route,
            reply,
        }) = self.waiting.remove(&ticket)
        else {
            return Outcome::default();
        };
        if let Pending::Api(tx) = reply {
            let frame = match (&answer, &route) {
                (Ok(a), Route::Group(group)) => {
                    let keep = self.newest_that_fit(&a.frames);
                    Ok(encode_group_history(
                        None,
                        group,
                        &a.position,
                        &a.frames[a.frames.len() - keep..],
                    ))
                }
                _ => Err(ReplyError::new(
                    ErrorCode::Overloaded,
                    "cannot read history from Redis; retry shortly",
                )),
            };
            let _ = tx.send(frame); // the caller may have given up
            return Outcome::default();
        }
        if self.pool.session(session).is_none() {
            return Outcome::default();
        }
        let position = answer.as_ref().ok().map(|a| &a.position);
        let stream = |recovered| Stream {
            epoch: position.map(|p| &*p.epoch),
            offset: position.map(|p| p.offset),
            recovered,
        };
        let mut frames = Vec::new();
        let replay = |since: bool, frames: &mut Vec<ByteString>| match (&answer, since) {
            (_, false) => None,
            (
                Ok(Answer {
                    recovered: Some(true),
                    frames: replay,
                    ..
                }),
                true,
            ) if replay.iter().map(|f| f.len()).sum::<usize>() <= self.recall.max_replay_bytes => {
                frames.extend(replay.iter().cloned());
                Some(true)
            }
            (_, true) => Some(false),
        };
        match &reply {
            Pending::Joined {
                request,
                name,
                since,
            } => {
                let recovered = replay(*since, &mut frames);
                frames.push(encode(&Event::Joined {
                    id: request.as_ref(),
                    name,
                    session,
                    stream: stream(recovered),
                }));
            }
            Pending::Subscribed {
                request,
                members,
                since,
                ..
            } => {
                let recovered = replay(*since, &mut frames);
                // Always a group's (see `subscribe`); whatever it is, the hold must end.
                let group = match &route {
                    Route::Group(g) | Route::User(g) => &**g,
                    Route::Everyone => "",
                };
                frames.push(encode(&Event::Subscribed {
                    id: request.as_ref(),
                    group,
                    members: *members,
                    stream: stream(recovered),
                }));
            }
            Pending::Api(_) => {} // answered above
            Pending::History { request } => {
                let group = match &route {
                    Route::Group(g) | Route::User(g) => &**g,
                    Route::Everyone => "",
                };
                frames.push(match &answer {
                    Ok(a) => {
                        let keep = self.newest_that_fit(&a.frames);
                        encode_group_history(
                            request.as_ref(),
                            group,
                            &a.position,
                            &a.frames[a.frames.len() - keep..],
                        )
                    }
                    Err(why) => encode(&Event::Error {
                        id: request.as_ref(),
                        code: ErrorCode::Overloaded,
                        message: why,
                    }),
                });
            }
        }
        let covers = match (&reply, position) {
            (Pending::History { .. }, _)
            | (
                Pending::Subscribed {
                    was_member: true, ..
                },
                _,
            )
            | (_, None) => None,
            (_, Some(p)) => Some((route.as_deref(), p.offset)),
        };
        let out = self.holds.answer(session, ticket, frames, covers);
        for frame in &out {
            if let Some(entry) = self.pool.session(session) {
                if !entry.outbox.push(frame) {
                    self.unreachable.push(session);
                    break;
                }
            }
        }
        self.finish(Outcome::default())
    }

    /// How many of the newest `frames` fit the replay budget.
    fn newest_that_fit(&self, frames: &[ByteString]) -> usize {
        let mut budget = self.recall.max_replay_bytes;
        frames
            .iter()
            .rev()
            .take_while(|f| match budget.checked_sub(f.len()) {
                Some(left) => {
                    budget = left;
                    true
                }
                None => false,
            })
            .count()
    }

    /// Adds deliveries to the counters of their kind.
    fn tally(&mut self, route: Route<&str>, delivered: usize) {
        let n = delivered as u64;
        match route {
            Route::Group(_) => self.delivered.group += n,
            Route::User(_) => self.delivered.direct += n,
            Route::Everyone => self.delivered.broadcast += n,
        }
    }

    /// Hands a routed message to the other nodes, in cluster mode; whether it was.
    fn tell_cluster(&mut self, route: Route<&str>, frame: &ByteString) -> bool {
        match &mut self.broker {
            Some(broker) => broker.publish(route, frame),
            None => false,
        }
    }

    /// Cluster mode: user `name` got its first session on this node, or lost its last;
    /// broadcasts follow the joined users: wanted while there is one.
    fn user_interest(&mut self, name: &str, wanted: bool) {
        let users = self.pool.sizes().1;
        if let Some(broker) = &mut self.broker {
            broker.interest(Route::User(name), wanted);
            if users == usize::from(wanted) {
                broker.interest(Route::Everyone, wanted);
            }
        }
    }

    /// The name `from` sends as: a joined session's, or the server's.
    fn sender_name(&self, from: &Sender) -> Result<Arc<str>, ReplyError> {
        match from {
            Sender::Session(id) => self.pool.joined_name(*id),
            Sender::Server(name) => Ok(name.clone()),
        }
    }

    /// Queues a frame for one session; a refusal marks it unreachable.
    fn queue(&mut self, id: SessionId, frame: &ByteString) {
        if let Some(entry) = self.pool.session(id) {
            let taken = match self.holds.keep(id, frame, None) {
                Some(within) => within || hold_overflow(&entry.outbox),
                None => entry.outbox.push(frame),
            };
            if !taken {
                self.unreachable.push(id);
            }
        }
    }

    /// Removes one session from the pool and announces what that changed.
    fn remove(&mut self, id: SessionId, outcome: &mut Outcome) {
        let Some(entry) = self.pool.session(id) else {
            return;
        };
        if entry.outbox.close_reason() == Some(CloseReason::SlowConsumer) {
            log::info!("session {id} closed: slow consumer");
            self.slow_consumers += 1;
        }
        let name = entry.name.clone();
        self.holds.release(id);
        let changes = self.pool.disconnect(id);
        if let Some(name) = &name {
            self.count_user(name);
        }
        if let Some(name) = &name {
            if self.broker.is_some() && self.pool.user_outboxes(name).is_none() {
                self.user_interest(name, false);
            }
        }
        if let Some(name) = name {
            // The user was seen until now: direct messages are stored for it for a while.
            let now = (self.recall.clock)();
            let key = StreamKey::User(name.clone());
            self.recall.history.touch(&key, now);
            if self.pool.user_outboxes(&name).is_none() {
                self.recall.history.release(&key, now);
            }
        }
        self.announce(changes, outcome);
    }

    /// Tells presence watchers what membership changes did, and notes the demand of fed
    /// groups that gained their first or lost their last session.
    fn announce(&mut self, changes: Vec<GroupChange>, outcome: &mut Outcome) {
        for change in changes {
            self.count_members(&change);
            // Cluster mode: join and leave are the cluster's to decide (announce_remote).
            let local = self.presence.is_none();
            if let Some((event, name)) = change.presence.as_ref().filter(|_| local) {
                if let Some(group) = self.pool.group(&change.group) {
                    let frame = encode(&Event::Presence {
                        group: &change.group,
                        event: *event,
                        name,
                    });
                    outcome.announced += deliver(
                        group.watchers(),
                        &frame,
                        None,
                        &mut self.wakes,
                        &mut self.unreachable,
                        &mut self.holds,
                        None,
                    );
                }
            }
            if change.last && !self.feeds.contains(&change.group) {
                // Its stream outlives it for those away, as a dormant one.
                let now = (self.recall.clock)();
                self.recall
                    .history
                    .release(&StreamKey::Group(change.group.clone()), now);
            }
            if change.first != change.last {
                if let Some(broker) = &mut self.broker {
                    broker.interest(Route::Group(&change.group), change.first);
                }
            }
            if (change.first || change.last) && self.feeds.contains(&change.group) {
                self.demand.push(Demand {
                    group: change.group.clone(),
                    watched: change.first,
                });
            }
        }
    }

    /// Counts a message routed, and its deliveries.
    fn counted(&mut self, kind: Kind, outcome: Outcome) -> Outcome {
        self.messages_in += 1;
        let n = outcome.delivered as u64;
        match kind {
            Kind::Direct => self.delivered.direct += n,
            Kind::Broadcast => self.delivered.broadcast += n,
            Kind::Group => self.delivered.group += n,
        }
        outcome
    }

    /// Ends an operation: removes the sessions whose outbox refused a frame (they are
    /// closing, and the outbox tells them why), which may announce departures and so
    /// refuse more; counts them in the outcome.
    fn finish(&mut self, mut outcome: Outcome) -> Outcome {
        while let Some(id) = self.unreachable.pop() {
            if self.pool.session(id).is_some() {
                outcome.refused += 1;
                self.remove(id, &mut outcome);
            }
        }
        outcome
    }
}

/// Queues `frame` in every outbox of `targets`; returns how many took it, not counting
/// `sender` (a client's own copy is no delivery to anyone else), and notes the others in
/// `unreachable`. One shared frame, no allocation per recipient. A held session (cluster
/// mode, see [`Holds`]) keeps it, with `tag`, instead.
#[allow(clippy::too_many_arguments)]
fn deliver<'a>(
    targets: impl Iterator<Item = (SessionId, &'a Arc<Outbox>)>,
    frame: &ByteString,
    sender: Option<SessionId>,
    wakes: &mut WakeBatch,
    unreachable: &mut Vec<SessionId>,
    holds: &mut Holds,
    tag: Option<(Route<&str>, u64)>,
) -> usize {
    let mut delivered = 0;
    if holds.is_empty() {
        // The single-node path (and a cluster node with nobody held): as before holds.
        for (id, outbox) in targets {
            if outbox.push_batched(frame, wakes) {
                delivered += usize::from(Some(id) != sender);
            } else {
                unreachable.push(id);
            }
        }
    } else {
        for (id, outbox) in targets {
            let taken = match holds.keep(id, frame, tag) {
                Some(within) => within || hold_overflow(outbox),
                None => outbox.push_batched(frame, wakes),
            };
            if taken {
                delivered += usize::from(Some(id) != sender);
            } else {
                unreachable.push(id);
            }
        }
    }
    wakes.flush();
    delivered
}

/// A held session kept more than its hold may: it is closed as too slow, as an outbox
/// that overflows would be. Always false (not taken).
fn hold_overflow(outbox: &Outbox) -> bool {
    outbox.close(CloseReason::SlowConsumer);
    false
}

fn invalid_group() -> ReplyError {
    ReplyError::new(ErrorCode::InvalidGroup, GROUP_RULE)
}

fn unknown_session() -> ReplyError {
    ReplyError::new(ErrorCode::Internal, "unknown session")
}

#[cfg(test)]
mod tests;

#[cfg(test)]
mod history_tests;
