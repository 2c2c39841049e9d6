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
//! While Redis is unreachable, messages to other nodes are lost (PUB/SUB is at most once)
//! and local routing goes on; the queue of messages to publish is bounded by
//! [`MAX_QUEUED`], past which the router is told "not handed on".

use std::collections::HashSet;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use actix::{ArbiterHandle, Recipient};
use bytestring::ByteString;
use futures_util::StreamExt;
use redis::aio::{ConnectionManager, ConnectionManagerConfig};
use tokio::sync::mpsc;

use super::{envelope, open, Broker, Channels, ClusterConfig, Route};
use crate::hub::RemoteFrame;

/// Messages waiting for the publisher past which more are refused (and not counted as
/// told to the cluster): a Redis that cannot keep up must not grow the hub's memory.
pub const MAX_QUEUED: usize = 65_536;

/// Most `PUBLISH`es in one pipeline.
const PUBLISH_BATCH: usize = 256;

/// Most channels in one `SUBSCRIBE` or `UNSUBSCRIBE`.
const SUBSCRIBE_BATCH: usize = 512;

/// Reconnection delays of the subscriber: from the first to the longest.
const BACKOFF: (Duration, Duration) = (Duration::from_millis(100), Duration::from_secs(5));

/// The hub's end of cluster mode on Redis.
pub struct RedisBroker {
    channels: Channels,
    /// To the publisher: (channel, frame).
    publish: mpsc::UnboundedSender<(String, ByteString)>,
    /// To the subscriber: (channel, wanted).
    interest: mpsc::UnboundedSender<(String, bool)>,
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
    publish: mpsc::UnboundedReceiver<(String, ByteString)>,
    interest: mpsc::UnboundedReceiver<(String, bool)>,
    queued: Arc<AtomicUsize>,
    max_frame_bytes: usize,
}

impl RedisBroker {
    /// The broker for the hub and the tasks that serve it; fails only on a URL that is no
    /// Redis URL (connecting happens in the tasks, and is retried).
    pub fn new(config: &ClusterConfig) -> redis::RedisResult<(RedisBroker, Tasks)> {
        let client = redis::Client::open(config.url.as_str())?;
        let channels = Channels::new(&config.prefix);
        let (publish, publish_rx) = mpsc::unbounded_channel();
        let (interest, interest_rx) = mpsc::unbounded_channel();
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
            interest,
            queued: queued.clone(),
            full: false,
        };
        let tasks = Tasks {
            health: Arc::new(RedisHealth::default()),
            client,
            node,
            channels,
            publish: publish_rx,
            interest: interest_rx,
            queued,
            max_frame_bytes: config.max_frame_bytes,
        };
        Ok((broker, tasks))
    }
}

impl Broker for RedisBroker {
    fn publish(&mut self, route: Route<&str>, frame: &ByteString) -> bool {
        let full = self.queued.load(Ordering::Relaxed) >= MAX_QUEUED;
        if full != self.full {
            self.full = full;
            if full {
                log::warn!("cluster: {MAX_QUEUED} messages wait for Redis; messages to other nodes are dropped until it catches up");
            } else {
                log::info!("cluster: Redis caught up; messages reach other nodes again");
            }
        }
        if full {
            return false;
        }
        self.queued.fetch_add(1, Ordering::Relaxed);
        let sent = self
            .publish
            .send((self.channels.name(route), frame.clone()))
            .is_ok();
        if !sent {
            self.queued.fetch_sub(1, Ordering::Relaxed);
        }
        sent
    }

    fn interest(&mut self, route: Route<&str>, wanted: bool) {
        // Fails only when the cluster thread is gone (shutdown).
        let _ = self.interest.send((self.channels.name(route), wanted));
    }
}

impl Tasks {
    /// Starts the publisher and the subscriber on `on`; remote frames go to `hub`.
    /// What `/readyz` and `/metrics` read of the connection to Redis.
    pub fn health(&self) -> Arc<RedisHealth> {
        self.health.clone()
    }

    pub fn spawn(self, on: &ArbiterHandle, hub: Recipient<RemoteFrame>) {
        let Tasks {
            health,
            client,
            node,
            channels,
            publish,
            interest,
            queued,
            max_frame_bytes,
        } = self;
        on.spawn(publisher(
            client.clone(),
            node.clone(),
            publish,
            queued,
            health.clone(),
        ));
        let inbound = Inbound {
            node,
            channels,
            max_frame_bytes,
            hub,
            dropped: 0,
        };
        on.spawn(subscriber(client, interest, inbound, health));
    }
}

/// Publishes what the hub queued, in its order, a pipeline at a time.
async fn publisher(
    client: redis::Client,
    node: Arc<str>,
    mut queue: mpsc::UnboundedReceiver<(String, ByteString)>,
    queued: Arc<AtomicUsize>,
    health: Arc<RedisHealth>,
) {
    let mut conn: Option<ConnectionManager> = None;
    let mut failing = false;
    // Until the first connection: when to try again, and the delay after that.
    let (mut retry_at, mut delay) = (tokio::time::Instant::now(), BACKOFF.0);
    let mut batch = Vec::with_capacity(PUBLISH_BATCH);
    while queue.recv_many(&mut batch, PUBLISH_BATCH).await > 0 {
        queued.fetch_sub(batch.len(), Ordering::Relaxed);
        let mut pipe = redis::pipe();
        for (channel, frame) in batch.drain(..) {
            pipe.cmd("PUBLISH")
                .arg(channel)
                .arg(envelope(&node, &frame))
                .ignore();
        }
        // The subscriber reaching Redis again means it is back: no need to wait out the
        // backoff (and drop what is published meanwhile).
        let back = failing && health.subscribed.load(Ordering::Relaxed);
        if conn.is_none() && (tokio::time::Instant::now() >= retry_at || back) {
            // One quick attempt: while Redis is away the queue is dropped, not held.
            let config = ConnectionManagerConfig::new()
                .set_number_of_retries(0)
                .set_connection_timeout(Some(Duration::from_secs(1)));
            match ConnectionManager::new_with_config(client.clone(), config).await {
                Ok(fresh) => conn = Some(fresh),
                Err(e) => log::debug!("cluster: cannot connect to Redis to publish: {e}"),
            }
            retry_at = tokio::time::Instant::now() + delay;
            delay = (delay * 2).min(BACKOFF.1);
        }
        let result = match &mut conn {
            Some(conn) => pipe.query_async::<()>(conn).await,
            None => Err(redis::RedisError::from((
                redis::ErrorKind::Io,
                "not connected",
            ))),
        };
        health
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

/// Keeps the PUB/SUB connection subscribed to what the local sessions need and hands
/// what arrives to the hub.
async fn subscriber(
    client: redis::Client,
    mut changes: mpsc::UnboundedReceiver<(String, bool)>,
    mut inbound: Inbound,
    health: Arc<RedisHealth>,
) {
    let mut wanted: HashSet<String> = HashSet::new();
    let mut delay = BACKOFF.0;
    let mut failing = false;
    loop {
        let pubsub = match client.get_async_pubsub().await {
            Ok(pubsub) => pubsub,
            Err(e) => {
                if !failing {
                    failing = true;
                    log::warn!("cluster: cannot subscribe on Redis ({e}); retrying");
                }
                if !absorb_for(delay, &mut changes, &mut wanted).await {
                    return;
                }
                delay = (delay * 2).min(BACKOFF.1);
                continue;
            }
        };
        let (mut sink, mut stream) = pubsub.split();
        let mut active = HashSet::new();
        if let Err(e) = sync(&mut sink, &wanted, &mut active).await {
            log::warn!("cluster: Redis SUBSCRIBE failed ({e}); reconnecting");
            if !absorb_for(delay, &mut changes, &mut wanted).await {
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
        loop {
            tokio::select! {
                change = changes.recv() => {
                    let Some(change) = change else { return };
                    apply(&mut wanted, change);
                    while let Ok(change) = changes.try_recv() {
                        apply(&mut wanted, change);
                    }
                    if let Err(e) = sync(&mut sink, &wanted, &mut active).await {
                        log::warn!("cluster: Redis SUBSCRIBE failed ({e}); reconnecting");
                        break;
                    }
                }
                message = stream.next() => match message {
                    Some(message) => inbound.take(&message),
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

fn apply(wanted: &mut HashSet<String>, (channel, on): (String, bool)) {
    if on {
        wanted.insert(channel);
    } else {
        wanted.remove(&channel);
    }
}

/// Takes interest changes for `delay` (while there is no connection); false when the
/// hub is gone.
async fn absorb_for(
    delay: Duration,
    changes: &mut mpsc::UnboundedReceiver<(String, bool)>,
    wanted: &mut HashSet<String>,
) -> bool {
    let deadline = tokio::time::Instant::now() + delay;
    loop {
        match tokio::time::timeout_at(deadline, changes.recv()).await {
            Ok(Some(change)) => apply(wanted, change),
            Ok(None) => return false,
            Err(_) => return true,
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
        let Some(route) = self.channels.route(channel) else {
            return self.drop_malformed(channel, "not a channel of ours");
        };
        match open(
            message.get_payload_bytes(),
            &self.node,
            self.max_frame_bytes,
        ) {
            Ok(Some(frame)) => self.hub.do_send(RemoteFrame {
                route: route.to_owned(),
                frame,
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
