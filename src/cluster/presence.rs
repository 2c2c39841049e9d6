//! Presence across nodes (cluster mode): who is online and in which groups, for the
//! whole cluster, and the `presence` events that follow from it.
//!
//! The seam is [`Presence`]: a store of what each node holds, with an in-memory
//! implementation ([`MemoryPresence`], the reference the tests compare against) and a
//! Redis one ([`RedisPresence`]); one test suite runs against both. A node writes only
//! its own counts, as absolute values (user `alice` has 2 sessions here; `alice` has 1
//! session in `room` here; `stock` has 3 anonymous sessions here), so that writing one
//! again is harmless and a node can write everything again after an outage. The store
//! adds them up for the cluster and decides, atomically with the write, when a name
//! enters a group anywhere (its first session on any node) or leaves it everywhere (its
//! last one): those are the cluster's `join` and `leave` events.
//!
//! Nodes are kept alive by [`Presence::heartbeat`] (every `ttl / 3`); every node calls
//! [`Presence::sweep`] now and then, and a node whose registration expired is removed
//! with everything it held, and `leave` announced for the names that left with it (one
//! sweeper wins each dead node).
//!
//! The hub's side ([`PresenceLink`]) only queues: the router tells it counts as they
//! change and hands it `users` requests with the session's outbox. A task on the cluster
//! thread ([`PresenceTask`]) keeps this node's counts (its mirror), writes what changed,
//! beats, sweeps, answers `users` straight into the asking session's outbox (as the
//! ticker answers `history`) and the server API's listings through a [`PresenceReader`].
//! While Redis is away, reads answer `overloaded` ("presence unavailable") and writes
//! wait in the mirror until it is back; if this node's registration lapsed meanwhile
//! (another node swept it), it registers again and writes everything it holds.

pub mod memory;
pub mod redis;
#[cfg(test)]
mod suite;

use std::collections::{BTreeSet, HashMap};
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use actix::Recipient;
use tokio::sync::{mpsc, oneshot};

use crate::error::{ErrorCode, ReplyError};
use crate::hub::PresenceEvent;
use crate::outbox::Outbox;
use crate::protocol::{encode, valid_group, valid_name, Event, PresenceChange, RequestId};
use crate::router::Listing;

pub use memory::MemoryPresence;
pub use redis::RedisPresence;

/// Default time a node stays in presence after its last heartbeat (`--presence-ttl`).
pub const DEFAULT_TTL: Duration = Duration::from_secs(30);

/// Most groups `/api/users/{name}` lists for one user.
pub const MAX_USER_GROUPS: usize = 1000;

/// One count a node holds.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Key {
    /// A user's sessions on the node.
    User(String),
    /// A user's sessions in a group on the node.
    Member { group: String, name: String },
    /// Sessions in a group that never joined (market data watchers).
    Anonymous(String),
}

impl Key {
    /// The key as one string: `u NAME`, `m GROUP NAME`, `a GROUP` (a group has no space,
    /// so the first space after it ends it; a name may have spaces).
    pub fn field(&self) -> String {
        match self {
            Key::User(name) => format!("u {name}"),
            Key::Member { group, name } => format!("m {group} {name}"),
            Key::Anonymous(group) => format!("a {group}"),
        }
    }

    /// The key a field names, if it is well formed (Redis is input too).
    pub fn parse(field: &str) -> Option<Key> {
        let (kind, rest) = field.split_at_checked(2)?;
        match kind {
            "u " if valid_name(rest) => Some(Key::User(rest.to_owned())),
            "a " if valid_group(rest) => Some(Key::Anonymous(rest.to_owned())),
            "m " => {
                let (group, name) = rest.split_once(' ')?;
                (valid_group(group) && valid_name(name)).then(|| Key::Member {
                    group: group.to_owned(),
                    name: name.to_owned(),
                })
            }
            _ => None,
        }
    }
}

/// A cluster-wide change of a group's members: `name` entered `group` (its first
/// session on any node) or left it (its last session anywhere).
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Announce {
    pub group: String,
    pub event: Change,
    pub name: String,
}

/// [`PresenceChange`], orderable (for tests that compare sets of events).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Change {
    Join,
    Leave,
}

impl From<Change> for PresenceChange {
    fn from(c: Change) -> Self {
        match c {
            Change::Join => PresenceChange::Join,
            Change::Leave => PresenceChange::Leave,
        }
    }
}

impl Announce {
    pub fn new(group: &str, event: Change, name: &str) -> Self {
        Announce {
            group: group.to_owned(),
            event,
            name: name.to_owned(),
        }
    }

    /// On the wire (the events channel): `j GROUP NAME` or `l GROUP NAME`.
    pub fn wire(&self) -> String {
        let e = match self.event {
            Change::Join => 'j',
            Change::Leave => 'l',
        };
        format!("{e} {} {}", self.group, self.name)
    }

    /// The event a payload carries, if it is well formed.
    pub fn parse(payload: &[u8]) -> Option<Announce> {
        let text = std::str::from_utf8(payload).ok()?;
        let (e, rest) = text.split_at_checked(2)?;
        let event = match e {
            "j " => Change::Join,
            "l " => Change::Leave,
            _ => return None,
        };
        let (group, name) = rest.split_once(' ')?;
        (valid_group(group) && valid_name(name)).then(|| Announce::new(group, event, name))
    }
}

/// One page of a group's members.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Members {
    /// Names with their sessions in the group; `count` is the group's members (distinct
    /// users plus each anonymous session), as `subscribed` counts them.
    pub listing: Listing,
    /// Distinct users in the group (the `users` reply's `count`).
    pub users: usize,
}

/// Why the store could not answer.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("presence unavailable: {0}")]
pub struct Unavailable(pub String);

impl From<::redis::RedisError> for Unavailable {
    fn from(e: ::redis::RedisError) -> Self {
        Unavailable(e.to_string())
    }
}

impl From<Unavailable> for ReplyError {
    fn from(e: Unavailable) -> Self {
        ReplyError::new(
            ErrorCode::Overloaded,
            format!("{e}; retry shortly (the cluster's presence is kept in Redis)"),
        )
    }
}

pub type Fallible<T> = Result<T, Unavailable>;

/// Where the cluster's presence is kept. Methods take `&mut self`: one task owns the
/// store and calls it in order.
pub trait Presence: Send + 'static {
    /// Registers `node` (again) for `ttl` from now; whether it was registered already.
    fn heartbeat(
        &mut self,
        node: &str,
        ttl: Duration,
    ) -> impl Future<Output = Fallible<bool>> + Send;

    /// Sets `node`'s counts (absolute; 0 removes) and returns the cluster-wide events
    /// they caused, which the store also tells every node (Redis: on the events
    /// channel). `None`, and nothing written, when `node` is not registered (it lapsed).
    fn apply(
        &mut self,
        node: &str,
        counts: &[(Key, usize)],
    ) -> impl Future<Output = Fallible<Option<Vec<Announce>>>> + Send;

    /// Removes the nodes whose registration expired, with everything they held; returns
    /// them and the `leave` events that follows (told to every node as `apply`'s).
    fn sweep(&mut self) -> impl Future<Output = Fallible<(Vec<String>, Vec<Announce>)>> + Send;

    /// Removes `node` now (a clean shutdown), as a sweep would.
    fn remove(&mut self, node: &str) -> impl Future<Output = Fallible<Vec<Announce>>> + Send;

    /// One page of the online users (with `prefix`: those whose name starts with it),
    /// each with its sessions; `count` is every online user.
    fn users(
        &mut self,
        prefix: Option<&str>,
        after: Option<&str>,
        limit: usize,
    ) -> impl Future<Output = Fallible<Listing>> + Send;

    /// One page of a group's members (an empty page when nobody is in it).
    fn members(
        &mut self,
        group: &str,
        after: Option<&str>,
        limit: usize,
    ) -> impl Future<Output = Fallible<Members>> + Send;

    /// A user's sessions and groups (sorted, at most [`MAX_USER_GROUPS`]); `None` offline.
    fn user(
        &mut self,
        name: &str,
    ) -> impl Future<Output = Fallible<Option<(usize, Vec<String>)>>> + Send;

    /// One page of the groups, each with its members.
    fn groups(
        &mut self,
        after: Option<&str>,
        limit: usize,
    ) -> impl Future<Output = Fallible<Listing>> + Send;

    /// The `limit` groups with the most members, most first (ties by name).
    fn top_groups(&mut self, limit: usize) -> impl Future<Output = Fallible<Listing>> + Send;
}

/// The next page's `after`: the last entry's name when one more than `limit` came.
pub(crate) fn cut_page<T>(
    entries: &mut Vec<T>,
    limit: usize,
    name: impl Fn(&T) -> &str,
) -> Option<String> {
    if entries.len() > limit {
        entries.truncate(limit);
        entries.last().map(|e| name(e).to_owned())
    } else {
        None
    }
}

// ---- the hub's side --------------------------------------------------------------------

/// A `users` command, checked by the router, for the task to answer into the outbox.
pub struct UsersAsk {
    pub id: Option<RequestId>,
    /// `None`: every online user.
    pub group: Option<String>,
    /// The group's policy lists names (`false`: the count alone).
    pub listed: bool,
    pub after: Option<String>,
    pub limit: usize,
    pub outbox: Arc<Outbox>,
}

/// A listing the server API asks for.
#[derive(Debug, Clone)]
pub enum Query {
    Users {
        prefix: Option<String>,
        after: Option<String>,
        limit: usize,
    },
    Members {
        group: String,
        after: Option<String>,
        limit: usize,
    },
    Groups {
        after: Option<String>,
        limit: usize,
    },
    TopGroups {
        limit: usize,
    },
    User(String),
}

/// What the server API gets back.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Answer {
    Listing(Listing),
    Members(Members),
    User(Option<(usize, Vec<String>)>),
}

enum Op {
    Set(Key, usize),
    Users(UsersAsk),
    Read(Query, oneshot::Sender<Fallible<Answer>>),
    /// Shutdown: leave the cluster's presence now.
    Leave,
}

/// The router's end: counts and `users` requests, queued (never waits on Redis).
#[derive(Clone)]
pub struct PresenceLink {
    ops: mpsc::UnboundedSender<Op>,
}

impl PresenceLink {
    /// This node now holds `n` of `key`.
    pub fn set(&self, key: Key, n: usize) {
        // Fails only when the cluster thread is gone (shutdown).
        let _ = self.ops.send(Op::Set(key, n));
    }

    /// Answers `ask` from the cluster's presence, into its outbox.
    pub fn ask_users(&self, ask: UsersAsk) {
        if let Err(mpsc::error::SendError(Op::Users(ask))) = self.ops.send(Op::Users(ask)) {
            answer_users(&ask, Err(Unavailable("shutting down".into())));
        }
    }

    /// Removes this node from the cluster's presence (shutdown).
    pub fn leave(&self) {
        let _ = self.ops.send(Op::Leave);
    }
}

/// The server API's end.
#[derive(Clone)]
pub struct PresenceReader {
    ops: mpsc::UnboundedSender<Op>,
    timeout: Duration,
}

impl PresenceReader {
    /// Asks the task; `overloaded` when Redis does not answer in time.
    pub async fn read(&self, query: Query) -> Result<Answer, ReplyError> {
        let (tx, rx) = oneshot::channel();
        self.ops
            .send(Op::Read(query, tx))
            .map_err(|_| Unavailable("shutting down".into()))?;
        match tokio::time::timeout(self.timeout, rx).await {
            Ok(Ok(answer)) => Ok(answer?),
            Ok(Err(_)) => Err(Unavailable("shutting down".into()).into()),
            Err(_) => Err(Unavailable("Redis did not answer in time".into()).into()),
        }
    }
}

/// Queues for one task: the link (router), the reader (API) and the task.
pub fn channel<P: Presence>(
    store: P,
    node: Arc<str>,
    ttl: Duration,
) -> (PresenceLink, PresenceReader, PresenceTask<P>) {
    let (ops, rx) = mpsc::unbounded_channel();
    let link = PresenceLink { ops: ops.clone() };
    let reader = PresenceReader {
        ops,
        timeout: Duration::from_secs(5),
    };
    let task = PresenceTask {
        store,
        node,
        ttl,
        ops: rx,
        mirror: HashMap::new(),
        pending: BTreeSet::new(),
        registered: false,
        failing: false,
        left: false,
    };
    (link, reader, task)
}

/// Most counts in one write.
const WRITE_BATCH: usize = 512;

/// Keeps this node's presence in the store (see the module's documentation).
pub struct PresenceTask<P: Presence> {
    store: P,
    node: Arc<str>,
    ttl: Duration,
    ops: mpsc::UnboundedReceiver<Op>,
    /// What this node holds now, as the router said.
    mirror: HashMap<Key, usize>,
    /// Keys whose count the store may not have yet.
    pending: BTreeSet<Key>,
    /// The store had this node registered at the last heartbeat.
    registered: bool,
    /// The last call to the store failed (logged once per change).
    failing: bool,
    /// Shut down: nothing more is written.
    left: bool,
}

impl<P: Presence> PresenceTask<P> {
    /// Runs until the hub's side is gone.
    pub async fn run(mut self) {
        let mut beat = tokio::time::interval(self.ttl / 3);
        let sweep_every = (self.ttl / 10).clamp(Duration::from_millis(100), Duration::from_secs(1));
        let mut sweep = tokio::time::interval(sweep_every);
        for timer in [&mut beat, &mut sweep] {
            timer.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        }
        let mut ops = Vec::with_capacity(256);
        loop {
            tokio::select! {
                n = self.ops.recv_many(&mut ops, 256) => {
                    if n == 0 {
                        return;
                    }
                    for op in ops.drain(..) {
                        self.take(op).await;
                    }
                    // A failure is logged, and the counts stay pending for the next try;
                    // while Redis is away the sweep's tick tries, not every change.
                    if !self.failing {
                        let _ = self.flush().await;
                    }
                }
                _ = beat.tick() => {
                    self.heartbeat().await;
                    let _ = self.flush().await;
                }
                _ = sweep.tick() => {
                    self.sweep().await;
                    // Counts that failed to go out go as soon as Redis answers again.
                    if !self.failing && !self.pending.is_empty() {
                        let _ = self.flush().await;
                    }
                }
            }
        }
    }

    async fn take(&mut self, op: Op) {
        match op {
            Op::Set(key, n) => {
                // Unchanged: written already, or pending.
                if self.mirror.get(&key).copied().unwrap_or(0) == n {
                    return;
                }
                if n == 0 {
                    self.mirror.remove(&key);
                } else {
                    self.mirror.insert(key.clone(), n);
                }
                self.pending.insert(key);
            }
            // A read sees what this node wrote before it. While Redis is known to be
            // away, reads are refused at once rather than each waiting for a timeout
            // (the sweep, every second at most, finds out when it is back).
            Op::Users(ask) => {
                let result = match self.ready().await {
                    Ok(()) => self.read_users(&ask).await,
                    Err(e) => Err(e),
                };
                answer_users(&ask, result);
            }
            Op::Read(query, reply) => {
                let result = match self.ready().await {
                    Ok(()) => self.read(query).await,
                    Err(e) => Err(e),
                };
                let _ = reply.send(result);
            }
            Op::Leave => {
                let _ = self.flush().await;
                match self.store.remove(&self.node).await {
                    Ok(events) => log::info!(
                        "cluster: left presence ({} leave events)",
                        events.len()
                    ),
                    Err(e) => log::warn!("cluster: could not leave presence ({e}); the other nodes remove this node within --presence-ttl"),
                }
                self.left = true;
            }
        }
    }

    async fn read_users(
        &mut self,
        ask: &UsersAsk,
    ) -> Fallible<(Vec<String>, usize, Option<String>)> {
        let after = ask.after.as_deref();
        match &ask.group {
            None => {
                let l = self.store.users(None, after, ask.limit).await?;
                Ok((
                    l.entries.into_iter().map(|(n, _)| n).collect(),
                    l.count,
                    l.next,
                ))
            }
            Some(group) => {
                let limit = if ask.listed { ask.limit } else { 0 };
                let m = self.store.members(group, after, limit).await?;
                let names = m.listing.entries.into_iter().map(|(n, _)| n).collect();
                Ok((names, m.users, m.listing.next))
            }
        }
    }

    async fn read(&mut self, query: Query) -> Fallible<Answer> {
        let store = &mut self.store;
        Ok(match query {
            Query::Users {
                prefix,
                after,
                limit,
            } => Answer::Listing(
                store
                    .users(prefix.as_deref(), after.as_deref(), limit)
                    .await?,
            ),
            Query::Members {
                group,
                after,
                limit,
            } => Answer::Members(store.members(&group, after.as_deref(), limit).await?),
            Query::Groups { after, limit } => {
                Answer::Listing(store.groups(after.as_deref(), limit).await?)
            }
            Query::TopGroups { limit } => Answer::Listing(store.top_groups(limit).await?),
            Query::User(name) => Answer::User(store.user(&name).await?),
        })
    }

    /// Ready to read: Redis is up and what this node wrote before is written.
    async fn ready(&mut self) -> Fallible<()> {
        if self.failing {
            return Err(Unavailable("Redis is unreachable".into()));
        }
        self.flush().await
    }

    /// Writes the pending counts; on a lapsed registration, registers again and writes
    /// everything this node holds.
    async fn flush(&mut self) -> Fallible<()> {
        if self.left {
            self.pending.clear();
            return Ok(());
        }
        let mut lapsed_once = false;
        while !self.pending.is_empty() {
            let batch: Vec<(Key, usize)> = self
                .pending
                .iter()
                .take(WRITE_BATCH)
                .map(|k| (k.clone(), self.mirror.get(k).copied().unwrap_or(0)))
                .collect();
            match self.store.apply(&self.node, &batch).await {
                Ok(Some(events)) => {
                    self.up();
                    if !events.is_empty() {
                        log::debug!("cluster: presence: {} events", events.len());
                    }
                    for (key, _) in &batch {
                        self.pending.remove(key);
                    }
                }
                Ok(None) if !lapsed_once => {
                    lapsed_once = true;
                    self.registered = false;
                    self.heartbeat().await;
                }
                Ok(None) => return Err(Unavailable("this node is not registered".into())),
                Err(e) => {
                    self.down(&e);
                    return Err(e);
                }
            }
        }
        Ok(())
    }

    /// Registers this node for another `ttl`; if the store had dropped it, everything
    /// this node holds is written again.
    async fn heartbeat(&mut self) {
        if self.left {
            return;
        }
        match self.store.heartbeat(&self.node, self.ttl).await {
            Ok(was) => {
                self.up();
                if !was {
                    if self.registered || !self.mirror.is_empty() {
                        log::warn!(
                            "cluster: this node's presence had lapsed; writing its {} entries again",
                            self.mirror.len()
                        );
                    }
                    self.pending.extend(self.mirror.keys().cloned());
                }
                self.registered = true;
            }
            Err(e) => self.down(&e),
        }
    }

    async fn sweep(&mut self) {
        match self.store.sweep().await {
            Ok((nodes, events)) => {
                self.up();
                for node in nodes {
                    log::warn!(
                        "cluster: node {node:?} stopped renewing its presence: removed ({} leave events)",
                        events.len()
                    );
                }
            }
            Err(e) => self.down(&e),
        }
    }

    fn up(&mut self) {
        if std::mem::replace(&mut self.failing, false) {
            log::info!("cluster: presence on Redis again");
        }
    }

    fn down(&mut self, e: &Unavailable) {
        if !std::mem::replace(&mut self.failing, true) {
            log::warn!("cluster: {e}; `users` and the API's listings answer `overloaded` until Redis is back");
        }
    }
}

/// Queues the `users` reply (or the error) for the asking session.
fn answer_users(ask: &UsersAsk, result: Fallible<(Vec<String>, usize, Option<String>)>) {
    let frame = match result {
        Ok((names, count, next)) => encode(&Event::Users {
            id: ask.id.as_ref(),
            group: ask.group.as_deref(),
            users: names.iter().map(String::as_str).collect(),
            count,
            next: next.as_deref(),
        }),
        Err(e) => {
            let e = ReplyError::from(e);
            crate::metrics::METRICS.error(e.code);
            encode(&Event::Error {
                id: ask.id.as_ref(),
                code: e.code,
                message: &e.message,
            })
        }
    };
    // Too big for the outbox: the session is closed as a slow consumer, as for `history`.
    ask.outbox.push(&frame);
}

/// Hands the events published on the events channel to the hub.
pub async fn listen(client: ::redis::Client, channel: String, hub: Recipient<PresenceEvent>) {
    use futures_util::StreamExt;
    let backoff = (Duration::from_millis(100), Duration::from_secs(5));
    let mut delay = backoff.0;
    let mut failing = false;
    let mut dropped = 0u64;
    loop {
        let pubsub = match client.get_async_pubsub().await {
            Ok(mut pubsub) => match pubsub.subscribe(&channel).await {
                Ok(()) => Some(pubsub),
                Err(e) => {
                    log::debug!("cluster: presence SUBSCRIBE failed: {e}");
                    None
                }
            },
            Err(e) => {
                log::debug!("cluster: cannot reach Redis for presence events: {e}");
                None
            }
        };
        let Some(pubsub) = pubsub else {
            failing = true;
            tokio::time::sleep(delay).await;
            delay = (delay * 2).min(backoff.1);
            continue;
        };
        if std::mem::replace(&mut failing, false) {
            log::info!("cluster: hearing presence events again");
        }
        delay = backoff.0;
        let mut stream = pubsub.into_on_message();
        while let Some(message) = stream.next().await {
            match Announce::parse(message.get_payload_bytes()) {
                Some(a) => hub.do_send(PresenceEvent {
                    group: a.group.into(),
                    event: a.event.into(),
                    name: a.name.into(),
                }),
                None => {
                    dropped += 1;
                    if dropped <= 10 || dropped.is_power_of_two() {
                        log::warn!("cluster: dropped a malformed presence event on {channel:?} ({dropped} so far)");
                    }
                }
            }
        }
        log::warn!("cluster: lost the presence events connection; reconnecting");
        failing = true;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_and_events_read_back_and_malformed_ones_are_refused() {
        for key in [
            Key::User("Zoë smith".into()),
            Key::Member {
                group: "room.1".into(),
                name: "a b c".into(),
            },
            Key::Anonymous("stock".into()),
        ] {
            assert_eq!(Key::parse(&key.field()), Some(key));
        }
        for bad in [
            "",
            "u ",
            "x a",
            "m room",
            "m bad!group a",
            "a bad group",
            "u \u{0}",
        ] {
            assert_eq!(Key::parse(bad), None, "{bad:?}");
        }
        let a = Announce::new("room", Change::Leave, "bob smith");
        assert_eq!(Announce::parse(a.wire().as_bytes()), Some(a));
        for bad in [
            &b""[..],
            b"j room",
            b"x room bob",
            b"j bad!g bob",
            b"l room \xff",
        ] {
            assert_eq!(Announce::parse(bad), None, "{bad:?}");
        }
    }

    /// The router with a presence task on a memory store: counts reach the store, the
    /// router announces nothing itself, `users` is answered into the outbox, and the
    /// cluster's events reach the watchers.
    #[tokio::test]
    async fn the_router_tells_the_task_and_the_task_answers_users() {
        use crate::auth::Grant;
        use crate::policy::Policies;
        use crate::protocol::UsersPage;
        use crate::router::Router;
        use serde_json::{json, Value};

        let (link, reader, task) = channel(MemoryPresence::new(), "n1".into(), DEFAULT_TTL);
        tokio::spawn(task.run());
        let mut router = Router::new(10, Policies::standard(), []).with_presence(link);
        let outbox = Arc::new(Outbox::new(1 << 20));
        router.connect(1, outbox.clone());
        router
            .join(1, "alice", Grant::all(), false, None, None)
            .unwrap();
        router.count_user("alice");
        router.subscribe(1, "room", true, None, None).unwrap();
        let frames = |o: &Outbox| -> Vec<Value> {
            o.drain()
                .0
                .iter()
                .map(|f| serde_json::from_str(f).unwrap())
                .collect()
        };
        let got = frames(&outbox);
        assert_eq!(
            got.iter()
                .map(|e| e["type"].as_str().unwrap())
                .collect::<Vec<_>>(),
            ["joined", "subscribed"],
            "no presence event of the router's own: {got:?}"
        );

        let members = reader
            .read(Query::Members {
                group: "room".into(),
                after: None,
                limit: 10,
            })
            .await
            .unwrap();
        let expected = Listing {
            entries: vec![("alice".into(), 1)],
            count: 1,
            next: None,
        };
        assert_eq!(
            members,
            Answer::Members(Members {
                listing: expected,
                users: 1
            })
        );

        let page = UsersPage {
            limit: 10,
            after: None,
        };
        let id = RequestId::Int(7);
        assert!(router.ask_users(1, Some("room"), &page, Some(&id)).unwrap());
        let deadline = std::time::Instant::now() + Duration::from_secs(5);
        let reply = loop {
            if let Some(reply) = frames(&outbox).pop() {
                break reply;
            }
            assert!(std::time::Instant::now() < deadline, "no reply");
            tokio::time::sleep(Duration::from_millis(5)).await;
        };
        assert_eq!(
            reply,
            json!({"type":"users","id":7,"group":"room","users":["alice"],"count":1})
        );
        assert_eq!(
            router
                .ask_users(1, Some("bad group"), &page, None)
                .unwrap_err()
                .code,
            ErrorCode::InvalidGroup
        );

        router.announce_remote("room", PresenceChange::Join, "bob");
        assert_eq!(
            frames(&outbox),
            [json!({"type":"presence","group":"room","event":"join","name":"bob"})]
        );

        // The session goes: its counts go to zero in the store.
        router.leave(1);
        let users = reader
            .read(Query::Users {
                prefix: None,
                after: None,
                limit: 10,
            })
            .await
            .unwrap();
        assert_eq!(users, Answer::Listing(Listing::default()));
    }

    #[test]
    fn pages_are_cut_with_the_name_to_ask_after() {
        let mut v = vec!["a", "b", "c"];
        assert_eq!(cut_page(&mut v, 2, |s| s), Some("b".to_owned()));
        assert_eq!(v, ["a", "b"]);
        assert_eq!(cut_page(&mut v, 2, |s| s), None);
    }
}
