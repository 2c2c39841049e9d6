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
use crate::error::{CloseReason, ErrorCode, ReplyError};
use crate::outbox::{Outbox, WakeBatch};
use crate::policy::{Policies, Publishers, CLASSIC_FEED};
use crate::pool::{forbidden, not_joined, GroupChange, Pool, SessionId};
use crate::protocol::{
    encode, legacy_groups, normalize_name, now_ms, valid_group, Event, Kind, RequestId, UsersPage,
    GROUP_RULE,
};

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
        }
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
    ) -> Result<Outcome, ReplyError> {
        let (name, changes) = self.pool.join(id, name, grant)?;
        self.queue(
            id,
            &encode(&Event::Joined {
                id: request,
                name: &name,
                session: id,
            }),
        );
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
        let (change, members) = self.add_member(id, group, presence)?;
        self.queue(
            id,
            &encode(&Event::Subscribed {
                id: request,
                group,
                members,
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
        let Some(targets) = self.pool.user_outboxes(&to) else {
            return Err(ReplyError::new(
                ErrorCode::NotFound,
                format!("{to} is not online"),
            ));
        };
        let frame = encode(&Event::Message {
            kind: Kind::Direct,
            from: &from,
            to: Some(&to),
            group: None,
            mid: post.mid,
            body: post.body,
            ts: now_ms(),
        });
        let delivered = deliver(
            targets,
            &frame,
            sender,
            &mut self.wakes,
            &mut self.unreachable,
        );
        Ok(self.finish(Outcome {
            delivered,
            ..Outcome::default()
        }))
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
            body: post.body,
            ts: now_ms(),
        });
        let targets = self.pool.joined_outboxes();
        let delivered = deliver(
            targets,
            &frame,
            sender,
            &mut self.wakes,
            &mut self.unreachable,
        );
        Ok(self.finish(Outcome {
            delivered,
            ..Outcome::default()
        }))
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
        let Some(members) = self.pool.group(group) else {
            return Ok(Outcome::default());
        };
        let frame = encode(&Event::Message {
            kind: Kind::Group,
            from: &name,
            to: None,
            group: Some(group),
            mid: post.mid,
            body: post.body,
            ts: now_ms(),
        });
        let delivered = deliver(
            members.outboxes(),
            &frame,
            from.session(),
            &mut self.wakes,
            &mut self.unreachable,
        );
        Ok(self.finish(Outcome {
            delivered,
            ..Outcome::default()
        }))
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
        self.pool.joined_name(id)?;
        let (after, limit) = (page.after.as_deref(), page.limit);
        let limited = self.pool.grant(id).is_some_and(Grant::is_limited);
        let Some(g) = group else {
            if limited {
                return Err(ReplyError::new(
                    ErrorCode::Forbidden,
                    "a token limited to groups lists users one group at a time",
                ));
            }
            let (users, next) = self.pool.user_names(after, limit);
            return Ok(encode(&Event::Users {
                id: request,
                group: None,
                users,
                count: self.pool.sizes().1,
                next,
            }));
        };
        if !valid_group(g) {
            return Err(invalid_group());
        }
        let policy = self.policies.of(g);
        if !policy.open {
            self.pool.check_grant(id, g)?;
        }
        let members = self.pool.group(g);
        let (users, next) = match members {
            Some(members) if policy.listed => members.user_names(after, limit),
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
            if !entry.outbox.push(frame) {
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
        let changes = self.pool.disconnect(id);
        self.announce(changes, outcome);
    }

    /// Tells presence watchers what membership changes did, and notes the demand of fed
    /// groups that gained their first or lost their last session.
    fn announce(&mut self, changes: Vec<GroupChange>, outcome: &mut Outcome) {
        for change in changes {
            if let Some((event, name)) = &change.presence {
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
                    );
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
/// `unreachable`. One shared frame, no allocation per recipient.
fn deliver<'a>(
    targets: impl Iterator<Item = (SessionId, &'a Arc<Outbox>)>,
    frame: &ByteString,
    sender: Option<SessionId>,
    wakes: &mut WakeBatch,
    unreachable: &mut Vec<SessionId>,
) -> usize {
    let mut delivered = 0;
    for (id, outbox) in targets {
        if outbox.push_batched(frame, wakes) {
            delivered += usize::from(Some(id) != sender);
        } else {
            unreachable.push(id);
        }
    }
    wakes.flush();
    delivered
}

fn invalid_group() -> ReplyError {
    ReplyError::new(ErrorCode::InvalidGroup, GROUP_RULE)
}

fn unknown_session() -> ReplyError {
    ReplyError::new(ErrorCode::Internal, "unknown session")
}

#[cfg(test)]
mod tests;
