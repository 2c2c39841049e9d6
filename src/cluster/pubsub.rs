//! [`RedisBroker`]: cluster mode on Redis PUB/SUB.
//!
//! The hub's side is two unbounded queues and a counter: [`Broker::publish`] and
//! [`Broker::interest`] only push, so the hub's handlers never wait on Redis. Two tasks on
//! a thread of their own (the `cluster` arbiter) do the I/O:
//!
//! - the **publisher** takes what is queued in hub order, wraps each frame in its
//!   [`envelope`] and sends them as one pipeline of `PUBLISH`es on one connection (a
//!   [`ConnectionManager`], which reconnects by itself): Redis delivers a connection's
//!   publishes in order, so every node sees a group's messages in the order this hub
//!   routed them;
//! - the **subscriber** owns a PUB/SUB connection: it keeps the set of channels the
//!   local sessions need, `SUBSCRIBE`s and `UNSUBSCRIBE`s the difference as interest
//!   changes, and turns each message into a [`RemoteFrame`] for the hub (malformed ones
//!   and this node's own are dropped here, off the hub's thread). When the connection is
//!   lost it connects again with backoff and subscribes to the whole set again.
//!
//! Messages of numbered streams (group and direct messages) go as one `EVALSHA` of
//! [`streams::PUBLISH_SCRIPT`] each in the same pipeline, which numbers, keeps and
//! publishes them; the subscriber hands them to the hub like any other (this node's own
//! too). Reads of streams ([`Read`]) go to the subscriber, after the interest changes
//! queued before them: it subscribes first, then reads on a connection of its own, then
//! sends a `PING` on the PUB/SUB connection and hands on everything that arrived before
//! the `PONG` before the answer. So the hub has every message of the stream published
//! before the read when the answer comes, and the ones after follow it.
//!
//! While Redis is unreachable, messages to other nodes are lost (PUB/SUB is at most once)
//! and local routing goes on: a numbered message that cannot be numbered comes back to
//! the hub without an offset, for this node's sessions. The queue of messages to publish
//! is bounded by [`MAX_QUEUED`], past which the router is told "not handed on".

use std::collections::HashSet;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use actix::{ArbiterHandle, Recipient};
use bytestring::ByteString;
use futures_util::{FutureExt, StreamExt};
use redis::aio::{ConnectionManager, ConnectionManagerConfig};
use tokio::sync::mpsc;

use super::streams::{self, Keys};
use super::{envelope, open, Answer, Broker, Channels, ClusterConfig, Read, Route};
use crate::history::Retention;
use crate::hub::{Caught, RemoteFrame};
use crate::protocol::Template;

/// Messages waiting for the publisher past which more are refused (and not counted as
/// told to the cluster): a Redis that cannot keep up must not grow the hub's memory.
pub const MAX_QUEUED: usize = 65_536;

/// Most `PUBLISH`es in one pipeline.
const PUBLISH_BATCH: usize = 256;

/// Most stream reads in one pipeline.
const READ_BATCH: usize = 256;

/// Most channels in one `SUBSCRIBE` or `UNSUBSCRIBE`.
const SUBSCRIBE_BATCH: usize = 512;

/// Reconnection delays of the subscriber: from the first to the longest.
const BACKOFF: (Duration, Duration) = (Duration::from_millis(100), Duration::from_secs(5));

/// What the publisher sends.
enum Out {
    /// A frame as it is, to one channel.
    Plain(String, ByteString),
    /// A message of a numbered stream, for [`streams::PUBLISH_SCRIPT`].
    Numbered {
        route: Route<Box<str>>,
        template: Template,
        retention: Retention,
    },
}

/// What the subscriber is asked, in the hub's order.
enum Command {
    /// (channel, wanted).
    Interest(String, bool),
    Read(Read),
}

/// The hub's end of cluster mode on Redis.
pub struct RedisBroker {
    channels: Channels,
    /// To the publisher.
    publish: mpsc::UnboundedSender<Out>,
    /// To the subscriber.
    commands: mpsc::UnboundedSender<Command>,
    health: Arc<RedisHealth>,
    /// Messages in `publish` not yet taken by the publisher.
    queued: Arc<AtomicUsize>,
    /// The queue was full at the last publish (logged once per change).
    full: bool,
}

/// Whether this node can reach Redis: subscribed, and not failing to publish. Read by
/// `/readyz` (not ready without it) and `/metrics` (`wxhub_redis_up`).
#[derive(Debug, Default)]
pub struct RedisHealth {
    subscribed: AtomicBool,
    publish_failing: AtomicBool,
}

impl RedisHealth {
    pub fn up(&self) -> bool {
        self.subscribed.load(Ordering::Relaxed) && !self.publish_failing.load(Ordering::Relaxed)
    }
}

/// The tasks' ends, until [`Tasks::spawn`] starts them.
pub struct Tasks {
    health: Arc<RedisHealth>,
    client: redis::Client,
    node: Arc<str>,
    channels: Channels,
    keys: Keys,
    publish: mpsc::UnboundedReceiver<Out>,
    commands: mpsc::UnboundedReceiver<Command>,
    queued: Arc<AtomicUsize>,
    max_frame_bytes: usize,
    probe: Duration,
}

impl RedisBroker {
    /// The broker for the hub and the tasks that serve it; fails only on a URL that is no
    /// Redis URL (connecting happens in the tasks, and is retried).
    pub fn new(config: &ClusterConfig) -> redis::RedisResult<(RedisBroker, Tasks)> {
        let client = redis::Client::open(config.url.as_str())?;
        let channels = Channels::new(&config.prefix);
        let (publish, publish_rx) = mpsc::unbounded_channel();
        let (commands, commands_rx) = mpsc::unbounded_channel();
        let health = Arc::new(RedisHealth::default());
        let queued = Arc::new(AtomicUsize::new(0));
        let node = config.node_id();
        log::info!(
            "cluster mode: node {node} on Redis {} (channels {}:*)",
            client.get_connection_info().addr(),
            config.prefix,
        );
        let broker = RedisBroker {
            channels: channels.clone(),
            publish,
            commands,
            health: health.clone(),
            queued: queued.clone(),
            full: false,
        };
        let tasks = Tasks {
            health,
            client,
            node,
            channels,
            keys: Keys::new(&config.prefix),
            publish: publish_rx,
            commands: commands_rx,
            queued,
            max_frame_bytes: config.max_frame_bytes,
            probe: config.probe,
        };
        Ok((broker, tasks))
    }
}

impl RedisBroker {
    /// Whether the publisher's queue takes one more (logs each change once).
    fn room(&mut self) -> bool {
        let full = self.queued.load(Ordering::Relaxed) >= MAX_QUEUED;
        if full != self.full {
            self.full = full;
            if full {
                log::warn!("cluster: {MAX_QUEUED} messages wait for Redis; messages to other nodes are dropped until it catches up");
            } else {
                log::info!("cluster: Redis caught up; messages reach other nodes again");
            }
        }
        !full
    }

    fn queue(&mut self, out: Out) -> bool {
        if !self.room() {
            return false;
        }
        self.queued.fetch_add(1, Ordering::Relaxed);
        let sent = self.publish.send(out).is_ok();
        if !sent {
            self.queued.fetch_sub(1, Ordering::Relaxed);
        }
        sent
    }
}

impl Broker for RedisBroker {
    fn publish(&mut self, route: Route<&str>, frame: &ByteString) -> bool {
        let channel = self.channels.name(route);
        self.queue(Out::Plain(channel, frame.clone()))
    }

    fn interest(&mut self, route: Route<&str>, wanted: bool) {
        // Fails only when the cluster thread is gone (shutdown).
        let _ = self
            .commands
            .send(Command::Interest(self.channels.name(route), wanted));
    }

    fn publish_numbered(
        &mut self,
        route: Route<&str>,
        template: &Template,
        retention: Retention,
    ) -> bool {
        self.queue(Out::Numbered {
            route: route.to_owned(),
            template: template.clone(),
            retention,
        })
    }

    fn read(&mut self, read: Read) {
        // The subscriber answers every read; gone only at shutdown, when nobody waits.
        let _ = self.commands.send(Command::Read(read));
    }

    fn up(&self) -> bool {
        // Subscribed means Redis answers. A publisher that failed last time is no reason
        // to stop trying: a failed message still reaches this node's sessions, and the
        // next one may go through (a stale connection after a Redis restart fails once).
        self.health.subscribed.load(Ordering::Relaxed)
    }
}

impl Tasks {
    /// Starts the publisher and the subscriber on `on`; remote frames go to `hub`.
    /// What `/readyz` and `/metrics` read of the connection to Redis.
    pub fn health(&self) -> Arc<RedisHealth> {
        self.health.clone()
    }

    pub fn spawn(
        self,
        on: &ArbiterHandle,
        hub: Recipient<RemoteFrame>,
        answers: Recipient<Caught>,
    ) {
        let Tasks {
            health,
            client,
            node,
            channels,
            keys,
            publish,
            commands,
            queued,
            max_frame_bytes,
            probe,
        } = self;
        on.spawn(
            Publisher {
                client: client.clone(),
                node: node.clone(),
                channels: channels.clone(),
                keys: keys.clone(),
                hub: hub.clone(),
                health: health.clone(),
                sha: streams::sha(streams::PUBLISH_SCRIPT),
            }
            .run(publish, queued),
        );
        let inbound = Inbound {
            probe: channels.probe(&node),
            node,
            channels,
            max_frame_bytes,
            hub,
            dropped: 0,
        };
        let reader = Reader {
            client: client.clone(),
            conn: None,
            keys,
            sha: streams::sha(streams::READ_SCRIPT),
            answers,
        };
        on.spawn(subscriber(client, commands, inbound, reader, health, probe));
    }
}

/// The publisher's state.
struct Publisher {
    client: redis::Client,
    node: Arc<str>,
    channels: Channels,
    keys: Keys,
    /// Where numbered messages that could not be numbered go back, for local sessions.
    hub: Recipient<RemoteFrame>,
    health: Arc<RedisHealth>,
    /// [`streams::PUBLISH_SCRIPT`]'s.
    sha: String,
}

impl Publisher {
    /// Publishes what the hub queued, in its order, a pipeline at a time.
    async fn run(self, mut queue: mpsc::UnboundedReceiver<Out>, queued: Arc<AtomicUsize>) {
        let mut conn: Option<ConnectionManager> = None;
        let mut failing = false;
        // Until the first connection: when to try again, and the delay after that.
        let (mut retry_at, mut delay) = (tokio::time::Instant::now(), BACKOFF.0);
        let mut batch = Vec::with_capacity(PUBLISH_BATCH);
        while queue.recv_many(&mut batch, PUBLISH_BATCH).await > 0 {
            queued.fetch_sub(batch.len(), Ordering::Relaxed);
            // The subscriber reaching Redis again means it is back: no need to wait out the
            // backoff (and drop what is published meanwhile).
            let back = failing && self.health.subscribed.load(Ordering::Relaxed);
            if conn.is_none() && (tokio::time::Instant::now() >= retry_at || back) {
                // One quick attempt: while Redis is away the queue is dropped, not held.
                let config = ConnectionManagerConfig::new()
                    .set_number_of_retries(0)
                    .set_connection_timeout(Some(Duration::from_secs(1)))
                    .set_response_timeout(Some(Duration::from_secs(5)));
                match ConnectionManager::new_with_config(self.client.clone(), config).await {
                    Ok(fresh) => conn = Some(fresh),
                    Err(e) => log::debug!("cluster: cannot connect to Redis to publish: {e}"),
                }
                retry_at = tokio::time::Instant::now() + delay;
                delay = (delay * 2).min(BACKOFF.1);
            }
            let mut result = match &mut conn {
                Some(conn) => self.send(conn, &batch).await,
                None => Err(redis::RedisError::from((
                    redis::ErrorKind::Io,
                    "not connected",
                ))),
            };
            if let (Err(e), Some(conn)) = (&result, &mut conn) {
                // The connection broke (Redis restarted) while Redis answers the
                // subscriber: once more, on the connection the manager makes anew. Only
                // when nothing was written: a timeout might have published already.
                if e.is_connection_dropped() && self.health.subscribed.load(Ordering::Relaxed) {
                    result = self.send(conn, &batch).await;
                }
            }
            if result.is_err() {
                // Not numbered, not published: this node's sessions get them all the same.
                for out in &batch {
                    self.deliver_here(out);
                }
            }
            batch.clear();
            self.health
                .publish_failing
                .store(result.is_err(), Ordering::Relaxed);
            match result {
                Err(e) if !failing => {
                    failing = true;
                    log::warn!("cluster: cannot publish to Redis ({e}); messages to other nodes are lost until it is back");
                }
                Ok(()) if failing => {
                    failing = false;
                    log::info!("cluster: publishing to Redis again");
                }
                _ => {}
            }
        }
    }

    /// One pipeline for the batch; numbered messages Redis no longer had the script for
    /// (it restarted) are sent again once it is loaded, ones it refused otherwise come
    /// back unnumbered.
    async fn send(&self, conn: &mut ConnectionManager, batch: &[Out]) -> redis::RedisResult<()> {
        let mut pipe = redis::pipe();
        pipe.ignore_errors();
        let mut numbered = Vec::new();
        for (at, out) in batch.iter().enumerate() {
            match out {
                Out::Plain(channel, frame) => {
                    pipe.cmd("PUBLISH")
                        .arg(channel)
                        .arg(envelope(&self.node, frame))
                        .ignore();
                }
                Out::Numbered { .. } => {
                    if let Some(cmd) = self.script_cmd(out) {
                        pipe.add_command(cmd);
                        numbered.push(at);
                    }
                }
            }
        }
        let results: Vec<redis::RedisResult<redis::Value>> = pipe.query_async(conn).await?;
        let mut again = Vec::new();
        for (at, result) in numbered.into_iter().zip(results) {
            match result {
                Ok(_) => {}
                Err(e)
                    if e.kind() == redis::ErrorKind::Server(redis::ServerErrorKind::NoScript) =>
                {
                    again.push(at)
                }
                Err(e) => {
                    log::warn!(
                        "cluster: Redis refused a message ({e}); delivered on this node only"
                    );
                    self.deliver_here(&batch[at]);
                }
            }
        }
        if !again.is_empty() {
            redis::cmd("SCRIPT")
                .arg("LOAD")
                .arg(streams::PUBLISH_SCRIPT)
                .query_async::<String>(conn)
                .await?;
            let mut pipe = redis::pipe();
            pipe.ignore_errors();
            for &at in &again {
                if let Some(cmd) = self.script_cmd(&batch[at]) {
                    pipe.add_command(cmd);
                }
            }
            let results: Vec<redis::RedisResult<redis::Value>> = pipe.query_async(conn).await?;
            for (&at, result) in again.iter().zip(results) {
                if let Err(e) = result {
                    log::warn!(
                        "cluster: Redis refused a message ({e}); delivered on this node only"
                    );
                    self.deliver_here(&batch[at]);
                }
            }
        }
        Ok(())
    }

    fn script_cmd(&self, out: &Out) -> Option<redis::Cmd> {
        let Out::Numbered {
            route,
            template,
            retention,
        } = out
        else {
            return None;
        };
        streams::publish_cmd(
            &self.sha,
            &self.keys,
            &self.channels,
            route.as_deref(),
            template.head(),
            template.tail(),
            if retention.keeps() { retention.size } else { 0 },
            retention.ttl_ms(),
        )
    }

    /// A numbered message Redis did not take, to this node's sessions without an offset.
    fn deliver_here(&self, out: &Out) {
        if let Out::Numbered {
            route, template, ..
        } = out
        {
            self.hub.do_send(RemoteFrame {
                route: route.clone(),
                frame: template.unnumbered(),
                offset: None,
            });
        }
    }
}

/// Keeps the PUB/SUB connection subscribed to what the local sessions need, hands what
/// arrives to the hub, and answers reads in their place among the interest changes.
async fn subscriber(
    client: redis::Client,
    mut commands: mpsc::UnboundedReceiver<Command>,
    mut inbound: Inbound,
    mut reader: Reader,
    health: Arc<RedisHealth>,
    probe_after: Duration,
) {
    // Its own probe channel, always: see `Probe`.
    let mut wanted: HashSet<String> = HashSet::from([inbound.probe.clone()]);
    let mut reads = Vec::new();
    let mut delay = BACKOFF.0;
    let mut failing = false;
    loop {
        let pubsub = match bounded(client.get_async_pubsub()).await {
            Ok(pubsub) => pubsub,
            Err(e) => {
                if !failing {
                    failing = true;
                    log::warn!("cluster: cannot subscribe on Redis ({e}); retrying");
                }
                if !absorb_for(delay, &mut commands, &mut wanted, &reader).await {
                    return;
                }
                delay = (delay * 2).min(BACKOFF.1);
                continue;
            }
        };
        let (mut sink, mut stream) = pubsub.split();
        let mut active = HashSet::new();
        if let Err(e) = bounded(sync(&mut sink, &wanted, &mut active)).await {
            log::warn!("cluster: Redis SUBSCRIBE failed ({e}); reconnecting");
            if !absorb_for(delay, &mut commands, &mut wanted, &reader).await {
                return;
            }
            delay = (delay * 2).min(BACKOFF.1);
            continue;
        }
        health.subscribed.store(true, Ordering::Relaxed);
        // Redis answers again: the publisher's last failure is stale (it reconnects with
        // its next message).
        health.publish_failing.store(false, Ordering::Relaxed);
        if std::mem::replace(&mut failing, false) {
            log::info!(
                "cluster: subscribed on Redis again ({} channels)",
                active.len()
            );
        }
        delay = BACKOFF.0;
        let mut probe = Probe::new(probe_after);
        loop {
            tokio::select! {
                () = tokio::time::sleep_until(probe.next_check()) => {
                    if probe.unanswered() {
                        log::warn!(
                            "cluster: Redis PUB/SUB went silent (a probe did not come back in {}); reconnecting",
                            humantime::format_duration(probe.wait),
                        );
                        break;
                    }
                    if probe.due() {
                        reader.publish_probe(&inbound.probe, &inbound.node);
                        probe.sent();
                    }
                }
                command = commands.recv() => {
                    let Some(command) = command else { return };
                    take(command, &mut wanted, &mut reads);
                    while let Ok(command) = commands.try_recv() {
                        take(command, &mut wanted, &mut reads);
                    }
                    // Subscribed before reading: what is published after the read is heard.
                    if let Err(e) = bounded(sync(&mut sink, &wanted, &mut active)).await {
                        log::warn!("cluster: Redis SUBSCRIBE failed ({e}); reconnecting");
                        reader.fail(reads.drain(..), "Redis is unreachable");
                        break;
                    }
                    if !reads.is_empty() {
                        let answers = reader.read(&reads).await;
                        // What was published before the reads arrives before this PONG:
                        // handed to the hub first, so that it precedes the answers.
                        let pong = bounded(sink.ping::<redis::Value>()).await;
                        while let Some(Some(message)) = stream.next().now_or_never() {
                            inbound.take(&message);
                        }
                        let lost = pong.is_err();
                        match (answers, pong) {
                            (Ok(answers), Ok(_)) => reader.answer(reads.drain(..), answers),
                            (Err(e), _) | (_, Err(e)) => {
                                log::warn!("cluster: cannot read history from Redis ({e})");
                                reader.fail(reads.drain(..), "cannot read history from Redis");
                            }
                        }
                        if lost {
                            log::warn!("cluster: the Redis PUB/SUB connection does not answer; reconnecting");
                            break;
                        }
                    }
                }
                message = stream.next() => match message {
                    Some(message) => {
                        probe.heard();
                        inbound.take(&message);
                    }
                    None => {
                        log::warn!("cluster: lost the Redis PUB/SUB connection; reconnecting");
                        break;
                    }
                },
            }
        }
        health.subscribed.store(false, Ordering::Relaxed);
        failing = true;
    }
}

/// Longest wait for Redis on the PUB/SUB connection (connecting, a `SUBSCRIBE`, a
/// `PING`): past it the connection counts as lost, so that a silent Redis cannot hold the
/// reads (and the sessions waiting for them) for ever.
const PUBSUB_TIMEOUT: Duration = Duration::from_secs(5);

async fn bounded<T>(
    work: impl std::future::Future<Output = redis::RedisResult<T>>,
) -> redis::RedisResult<T> {
    match tokio::time::timeout(PUBSUB_TIMEOUT, work).await {
        Ok(result) => result,
        Err(_) => Err(redis::RedisError::from((
            redis::ErrorKind::Io,
            "no answer from Redis in time",
        ))),
    }
}

/// Catches a PUB/SUB connection that went silent without closing (centrifugal/centrifugo
/// #1189: after a failover, publishes succeeded and nothing arrived): when nothing was
/// heard for `after`, the node publishes to its own probe channel, and reconnects if the
/// probe is not heard within `wait`. Anything heard counts, so a busy node never probes.
struct Probe {
    after: Duration,
    wait: Duration,
    heard: tokio::time::Instant,
    sent: Option<tokio::time::Instant>,
}

impl Probe {
    fn new(after: Duration) -> Probe {
        Probe {
            after,
            wait: after.min(Duration::from_secs(5)),
            heard: tokio::time::Instant::now(),
            sent: None,
        }
    }

    fn heard(&mut self) {
        self.heard = tokio::time::Instant::now();
        self.sent = None;
    }

    fn sent(&mut self) {
        self.sent = Some(tokio::time::Instant::now());
    }

    fn next_check(&self) -> tokio::time::Instant {
        match self.sent {
            Some(at) => at + self.wait,
            None => self.heard + self.after,
        }
    }

    fn due(&self) -> bool {
        self.sent.is_none() && tokio::time::Instant::now() >= self.heard + self.after
    }

    fn unanswered(&self) -> bool {
        self.sent
            .is_some_and(|at| tokio::time::Instant::now() >= at + self.wait)
    }
}

fn take(command: Command, wanted: &mut HashSet<String>, reads: &mut Vec<Read>) {
    match command {
        Command::Interest(channel, true) => {
            wanted.insert(channel);
        }
        Command::Interest(channel, false) => {
            wanted.remove(&channel);
        }
        Command::Read(read) => reads.push(read),
    }
}

/// Takes interest changes for `delay` (while there is no connection) and answers reads
/// at once (Redis is away: nothing to read); false when the hub is gone.
async fn absorb_for(
    delay: Duration,
    commands: &mut mpsc::UnboundedReceiver<Command>,
    wanted: &mut HashSet<String>,
    reader: &Reader,
) -> bool {
    let deadline = tokio::time::Instant::now() + delay;
    let mut reads = Vec::new();
    loop {
        match tokio::time::timeout_at(deadline, commands.recv()).await {
            Ok(Some(command)) => {
                take(command, wanted, &mut reads);
                reader.fail(reads.drain(..), "Redis is unreachable");
            }
            Ok(None) => return false,
            Err(_) => return true,
        }
    }
}

/// The reader's connection: bounded waits, so that a silent Redis fails reads instead of
/// holding sessions.
fn reader_config() -> ConnectionManagerConfig {
    ConnectionManagerConfig::new()
        .set_number_of_retries(1)
        .set_connection_timeout(Some(Duration::from_secs(1)))
        .set_response_timeout(Some(Duration::from_secs(5)))
}

/// Reads streams for the subscriber, on a connection of its own.
struct Reader {
    client: redis::Client,
    conn: Option<ConnectionManager>,
    keys: Keys,
    /// [`streams::READ_SCRIPT`]'s.
    sha: String,
    answers: Recipient<Caught>,
}

impl Reader {
    /// The reads, a pipeline of at most [`READ_BATCH`] at a time (each under its own
    /// timeout, so that a storm of reconnecting clients is not all-or-nothing); an answer
    /// (or why not) per read.
    async fn read(&mut self, reads: &[Read]) -> redis::RedisResult<Vec<Result<Answer, String>>> {
        let mut answers = Vec::with_capacity(reads.len());
        for chunk in reads.chunks(READ_BATCH) {
            answers.extend(self.read_chunk(chunk).await?);
        }
        Ok(answers)
    }

    /// One pipeline of reads.
    async fn read_chunk(
        &mut self,
        reads: &[Read],
    ) -> redis::RedisResult<Vec<Result<Answer, String>>> {
        if self.conn.is_none() {
            self.conn = Some(
                ConnectionManager::new_with_config(self.client.clone(), reader_config()).await?,
            );
        }
        let Some(conn) = self.conn.as_mut() else {
            unreachable!("connected above");
        };
        let (mut loaded, mut retried) = (false, false);
        loop {
            let mut pipe = redis::pipe();
            pipe.ignore_errors();
            for read in reads {
                match streams::read_cmd(&self.sha, &self.keys, read) {
                    Some(cmd) => pipe.add_command(cmd),
                    // No stream to read: an answer of its own, of the same length.
                    None => pipe.cmd("ECHO").arg("no stream"),
                };
            }
            let results: Vec<redis::RedisResult<redis::Value>> = match pipe.query_async(conn).await
            {
                // A connection broken under it (Redis restarted): once more, anew.
                Err(e) if e.is_connection_dropped() && !retried => {
                    retried = true;
                    continue;
                }
                other => other?,
            };
            let no_script = results.iter().any(|r| {
                matches!(r, Err(e) if e.kind() == redis::ErrorKind::Server(redis::ServerErrorKind::NoScript))
            });
            if no_script && !loaded {
                // Redis restarted and lost its scripts: load, read again (reads change
                // nothing but a missing epoch, which the retry finds).
                redis::cmd("SCRIPT")
                    .arg("LOAD")
                    .arg(streams::READ_SCRIPT)
                    .query_async::<String>(conn)
                    .await?;
                loaded = true;
                continue;
            }
            return Ok(results
                .into_iter()
                .map(|r| r.map_err(|e| e.to_string()).and_then(streams::answer))
                .collect());
        }
    }

    /// Publishes a probe on `channel` without waiting for it (the connection may be the
    /// silent one): the subscriber waits for it to come back instead.
    fn publish_probe(&mut self, channel: &str, node: &str) {
        let client = self.client.clone();
        let conn = self.conn.clone();
        let (channel, payload) = (channel.to_owned(), format!("{node}\nprobe"));
        tokio::spawn(async move {
            let mut conn = match conn {
                Some(conn) => conn,
                None => match ConnectionManager::new_with_config(client, reader_config()).await {
                    Ok(conn) => conn,
                    Err(e) => return log::debug!("cluster: cannot publish a probe: {e}"),
                },
            };
            let sent: redis::RedisResult<i64> = redis::cmd("PUBLISH")
                .arg(channel)
                .arg(payload)
                .query_async(&mut conn)
                .await;
            if let Err(e) = sent {
                log::debug!("cluster: cannot publish a probe: {e}");
            }
        });
    }

    fn answer(&self, reads: impl Iterator<Item = Read>, answers: Vec<Result<Answer, String>>) {
        for (read, answer) in reads.zip(answers) {
            if let Err(why) = &answer {
                log::warn!("cluster: a history read failed: {why}");
            }
            self.answers.do_send(Caught {
                ticket: read.ticket,
                answer: answer.map_err(|_| "cannot read history from Redis"),
            });
        }
    }

    fn fail(&self, reads: impl Iterator<Item = Read>, why: &'static str) {
        for read in reads {
            self.answers.do_send(Caught {
                ticket: read.ticket,
                answer: Err(why),
            });
        }
    }
}

/// Subscribes to what is wanted and not active, unsubscribes from what is active and no
/// longer wanted.
async fn sync(
    sink: &mut redis::aio::PubSubSink,
    wanted: &HashSet<String>,
    active: &mut HashSet<String>,
) -> redis::RedisResult<()> {
    let add: Vec<String> = wanted.difference(active).cloned().collect();
    let remove: Vec<String> = active.difference(wanted).cloned().collect();
    for chunk in add.chunks(SUBSCRIBE_BATCH) {
        sink.subscribe(chunk).await?;
        active.extend(chunk.iter().cloned());
    }
    for chunk in remove.chunks(SUBSCRIBE_BATCH) {
        sink.unsubscribe(chunk).await?;
        for channel in chunk {
            active.remove(channel);
        }
    }
    Ok(())
}

/// Turns what Redis delivers into messages for the hub.
struct Inbound {
    /// This node's probe channel (see `Probe`).
    probe: String,
    node: Arc<str>,
    channels: Channels,
    max_frame_bytes: usize,
    hub: Recipient<RemoteFrame>,
    /// Malformed messages dropped so far (logged sparingly: a flood must not flood the log).
    dropped: u64,
}

impl Inbound {
    fn take(&mut self, message: &redis::Msg) {
        let channel = message.get_channel_name();
        if channel == self.probe {
            return; // heard: that is all a probe is for
        }
        let Some(route) = self.channels.route(channel) else {
            return self.drop_malformed(channel, "not a channel of ours");
        };
        match open(
            message.get_payload_bytes(),
            &self.node,
            self.max_frame_bytes,
        ) {
            Ok(Some(opened)) => self.hub.do_send(RemoteFrame {
                route: route.to_owned(),
                frame: opened.frame,
                offset: opened.offset,
            }),
            Ok(None) => {}
            Err(why) => self.drop_malformed(channel, &why.to_string()),
        }
    }

    fn drop_malformed(&mut self, channel: &str, why: &str) {
        self.dropped += 1;
        let n = self.dropped;
        if n <= 10 || n.is_power_of_two() {
            log::warn!("cluster: dropped a malformed message on Redis channel {channel:?}: {why} ({n} so far)");
        }
    }
}
