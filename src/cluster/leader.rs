//! Cluster mode's one market: the node holding a lease in Redis ticks for every node.
//!
//! Keys and channel (prefix `{p}` from `--redis-prefix`):
//!
//! - `{p}:ticker:leader` holds the leading node's id for `--ticker-lease` (5 s by default):
//!   taken with `SET NX PX`, renewed every third of the lease by a script that extends it
//!   only if it still holds this node's id;
//! - `{p}:ticker:state` holds the market after the last tick (a
//!   [`MarketState`](crate::market::MarketState) as JSON), from which a new leader
//!   continues: no jump back to the open;
//! - `{p}:ticker:quotes` carries each tick's state to every node, in the payload of
//!   [`envelope`](super::envelope) (the leader's id, a newline, the JSON).
//!
//! Three tasks on the cluster thread, none on the hub's, talk to the
//! [`Ticker`](crate::ticker::Ticker) with actor messages:
//!
//! - the **election** ([`Election`] is its logic, time given, so tests drive it) tells the
//!   ticker when this node gains, keeps or loses the lead ([`Lead`]), hands it the saved
//!   state when it starts and when it gains the lead ([`SharedState`]), and gives the
//!   lease back at shutdown ([`Resign`]) so that another node takes over at once;
//! - the **publisher** takes each tick's state from the leading ticker and, in one script,
//!   saves and publishes it only if the lease still holds this node's id: a node that
//!   lost the lease cannot publish, whatever it believes;
//! - the **listener** subscribes to the quotes channel and hands other nodes' ticks to the
//!   ticker, after the checks every remote frame gets ([`open`]).
//!
//! A leader believes it leads until the time it sent its last successful `SET` or renewal
//! plus the lease (less 1% for clock drift), which is never later than when Redis lets the
//! key expire; the ticker stops by itself at that time if no renewal came. So two nodes
//! never both tick while both believe they lead. The leader ticks as long as it leads,
//! watched or not: whether anyone watches is known per node, and one small message per
//! tick costs less than keeping that count in Redis.

use std::sync::Arc;
use std::time::Duration;

use actix::{ArbiterHandle, Recipient};
use bytestring::ByteString;
use futures_util::StreamExt;
use redis::aio::{ConnectionManager, ConnectionManagerConfig};
use tokio::sync::{mpsc, oneshot};
use tokio::time::Instant;

use super::{open, ClusterConfig};
use crate::ticker::{Lead, SharedState};

/// The default of `--ticker-lease`.
pub const DEFAULT_LEASE: Duration = Duration::from_secs(5);

/// Ticks waiting for the publisher past which the ticker drops them (each carries the
/// whole market: the next one makes up for a lost one, except in `history`).
pub const PUBLISH_QUEUE: usize = 64;

/// Most ticks in one pipeline.
const PUBLISH_BATCH: usize = 16;

/// Reconnection delays of the listener: from the first to the longest.
const BACKOFF: (Duration, Duration) = (Duration::from_millis(100), Duration::from_secs(5));

/// Extends the lease only if it is still ours: KEYS[1] the lease, ARGV[1] our id,
/// ARGV[2] the lease in ms. 1 if extended.
const RENEW: &str = r"
if redis.call('GET', KEYS[1]) == ARGV[1] then
  return redis.call('PEXPIRE', KEYS[1], ARGV[2])
end
return 0";

/// Gives the lease back if it is still ours (at shutdown): KEYS[1] the lease, ARGV[1]
/// our id.
const RELEASE: &str = r"
if redis.call('GET', KEYS[1]) == ARGV[1] then
  return redis.call('DEL', KEYS[1])
end
return 0";

/// Saves and publishes a tick only if the lease is still ours: KEYS[1] the lease,
/// KEYS[2] the saved state, ARGV[1] our id, ARGV[2] the state, ARGV[3] the channel.
/// 1 if published.
const PUBLISH: &str = r"
if redis.call('GET', KEYS[1]) == ARGV[1] then
  redis.call('SET', KEYS[2], ARGV[2])
  redis.call('PUBLISH', ARGV[3], ARGV[1] .. '\n' .. ARGV[2])
  return 1
end
return 0";

/// The ticker's keys and channel.
#[derive(Debug, Clone)]
pub struct Keys {
    pub leader: String,
    pub state: String,
    pub quotes: String,
}

impl Keys {
    pub fn new(prefix: &str) -> Keys {
        Keys {
            leader: format!("{prefix}:ticker:leader"),
            state: format!("{prefix}:ticker:state"),
            quotes: format!("{prefix}:ticker:quotes"),
        }
    }
}

/// What the election asks Redis next.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Ask {
    /// `SET leader id NX PX lease`.
    Acquire,
    /// The script that extends the lease if it is still ours.
    Renew,
}

/// What an answer changed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Change {
    /// This node leads until then.
    Gained(Instant),
    /// Still leads, now until then.
    Renewed(Instant),
    /// No longer leads.
    Lost,
}

/// The election's logic, with time given: when to ask what, and what an answer means.
/// The task around it only does the I/O.
#[derive(Debug)]
pub struct Election {
    lease: Duration,
    /// Until when this node leads (`None`: it does not).
    until: Option<Instant>,
    /// When to ask next.
    next: Instant,
}

impl Election {
    pub fn new(lease: Duration, now: Instant) -> Election {
        Election {
            lease,
            until: None,
            next: now,
        }
    }

    /// When to ask Redis next.
    pub fn due(&self) -> Instant {
        self.next
    }

    /// What to ask.
    pub fn ask(&self) -> Ask {
        if self.until.is_some() {
            Ask::Renew
        } else {
            Ask::Acquire
        }
    }

    /// How long an ask sent at `at` may wait for its answer: a renewal no later than the
    /// lease lasts (past it, this node has lost the lead anyway), an attempt to take it a
    /// third of the lease.
    pub fn patience(&self, at: Instant) -> Duration {
        match self.until {
            Some(until) => until.saturating_duration_since(at),
            None => self.lease / 3,
        }
    }

    /// Between two attempts of a follower to take the lease: a tenth of the lease, so
    /// that a dead leader is replaced soon after its lease runs out.
    fn retry(&self) -> Duration {
        (self.lease / 10).max(Duration::from_millis(10))
    }

    /// How long a lease taken or renewed at `at` is sure to last: the lease, less 1% for
    /// the clocks of this machine and Redis's running at slightly different rates.
    fn lasts(&self, at: Instant) -> Instant {
        at + self.lease - self.lease / 100
    }

    /// The answer to the ask sent at `at`: `Ok(true)` when Redis set or extended the
    /// lease, `Ok(false)` when another node holds it, `Err` when there was no answer (an
    /// error, no connection, or no answer in time).
    pub fn answered(&mut self, at: Instant, answer: Result<bool, ()>) -> Option<Change> {
        let leading = self.until.is_some();
        match answer {
            Ok(true) => {
                let until = self.lasts(at);
                self.until = Some(until);
                self.next = at + self.lease / 3;
                Some(if leading {
                    Change::Renewed(until)
                } else {
                    Change::Gained(until)
                })
            }
            _ => {
                self.until = None;
                self.next = at + self.retry();
                leading.then_some(Change::Lost)
            }
        }
    }
}

/// The tasks' ends, until [`Tasks::spawn`] starts them.
pub struct Tasks {
    client: redis::Client,
    node: Arc<str>,
    keys: Keys,
    lease: Duration,
    ticks: mpsc::Receiver<ByteString>,
    max_payload: usize,
}

/// The sender the ticker hands its ticks to ([`Ticker::in_cluster`]), and the tasks;
/// fails only on a URL that is no Redis URL.
///
/// [`Ticker::in_cluster`]: crate::ticker::Ticker::in_cluster
pub fn new(
    config: &ClusterConfig,
    lease: Duration,
    symbols: usize,
) -> redis::RedisResult<(mpsc::Sender<ByteString>, Tasks)> {
    let client = redis::Client::open(config.url.as_str())?;
    let (ticks, ticks_rx) = mpsc::channel(PUBLISH_QUEUE);
    let node = config.node_id();
    let keys = Keys::new(&config.prefix);
    log::info!(
        "ticker: node {node} runs for the lead of the market ({} for {lease:?})",
        keys.leader
    );
    Ok((
        ticks,
        Tasks {
            client,
            node,
            keys,
            lease,
            ticks: ticks_rx,
            // A state is a few hundred bytes per symbol.
            max_payload: 4096 + 1024 * symbols,
        },
    ))
}

/// Gives the lease back at shutdown, so that another node takes over at once rather than
/// when it runs out.
pub struct Resign(oneshot::Sender<oneshot::Sender<()>>);

impl Resign {
    /// Stops the election; returns once the lease is given back (if this node held it)
    /// or that failed.
    pub async fn resign(self) {
        let (done, given_back) = oneshot::channel();
        if self.0.send(done).is_ok() {
            let _ = given_back.await;
        }
    }
}

/// The ticker's two doors: whether it leads, and the market from Redis.
pub struct TickerLink {
    pub lead: Recipient<Lead>,
    pub state: Recipient<SharedState>,
}

impl Tasks {
    /// Starts the election, the publisher and the listener on `on`.
    pub fn spawn(self, on: &ArbiterHandle, ticker: TickerLink) -> Resign {
        let Tasks {
            client,
            node,
            keys,
            lease,
            ticks,
            max_payload,
        } = self;
        // The election and the publisher each have their own connection: a pipeline of
        // ticks must not hold up a renewal.
        let redis = || Redis {
            client: client.clone(),
            conn: None,
            timeout: lease / 3,
        };
        let (resign, resigned) = oneshot::channel();
        on.spawn(elect(
            redis(),
            Candidate {
                node: node.clone(),
                keys: keys.clone(),
                lease,
                max_state: max_payload,
            },
            ticker.lead,
            ticker.state.clone(),
            resigned,
        ));
        on.spawn(publish(redis(), node.clone(), keys.clone(), ticks));
        let inbound = Inbound {
            node,
            max_payload,
            ticker: ticker.state,
            dropped: 0,
        };
        on.spawn(listen(client, keys.quotes, inbound));
        Resign(resign)
    }
}

/// One connection for commands, made when first needed, reconnecting by itself.
struct Redis {
    client: redis::Client,
    conn: Option<ConnectionManager>,
    /// How long connecting, or any command, may take.
    timeout: Duration,
}

impl Redis {
    /// The connection (a handle on it: commands on clones share it, in order).
    async fn conn(&mut self) -> redis::RedisResult<ConnectionManager> {
        if let Some(conn) = &self.conn {
            return Ok(conn.clone());
        }
        let config = ConnectionManagerConfig::new()
            .set_number_of_retries(0)
            .set_connection_timeout(Some(self.timeout))
            .set_response_timeout(Some(self.timeout));
        let conn = ConnectionManager::new_with_config(self.client.clone(), config).await?;
        self.conn = Some(conn.clone());
        Ok(conn)
    }

    /// The saved market state (`None` when there is none, or when it is longer than
    /// `max`: only that much is read); `Err` when Redis does not answer, or answers no
    /// UTF-8 string.
    async fn saved_state(
        &mut self,
        keys: &Keys,
        max: usize,
    ) -> Result<Option<ByteString>, redis::RedisError> {
        let mut conn = self.conn().await?;
        // GETRANGE, not GET: whatever is in the key, no more than `max` + 1 bytes come.
        let json: String = redis::cmd("GETRANGE")
            .arg(&keys.state)
            .arg(0)
            .arg(max)
            .query_async(&mut conn)
            .await?;
        if json.len() > max {
            log::warn!("ticker: the saved market state is longer than {max} bytes; ignored");
            return Ok(None);
        }
        // A missing key reads as "", as an empty one: neither is a state.
        Ok((!json.is_empty()).then(|| ByteString::from(json)))
    }

    /// Asks for the lease: `true` if this node holds it now.
    async fn ask(
        &mut self,
        ask: Ask,
        keys: &Keys,
        node: &str,
        lease_ms: u64,
    ) -> redis::RedisResult<bool> {
        let mut conn = self.conn().await?;
        match ask {
            Ask::Acquire => {
                let set: Option<String> = redis::cmd("SET")
                    .arg(&keys.leader)
                    .arg(node)
                    .arg("NX")
                    .arg("PX")
                    .arg(lease_ms)
                    .query_async(&mut conn)
                    .await?;
                Ok(set.is_some())
            }
            Ask::Renew => {
                let renewed: i64 = redis::cmd("EVAL")
                    .arg(RENEW)
                    .arg(1)
                    .arg(&keys.leader)
                    .arg(node)
                    .arg(lease_ms)
                    .query_async(&mut conn)
                    .await?;
                Ok(renewed == 1)
            }
        }
    }
}

/// Who runs for the lead, for how long, and the longest state it reads.
struct Candidate {
    node: Arc<str>,
    keys: Keys,
    lease: Duration,
    max_state: usize,
}

/// Runs for the lead, keeps it, and tells the ticker; at shutdown gives it back.
async fn elect(
    mut redis: Redis,
    candidate: Candidate,
    lead: Recipient<Lead>,
    state: Recipient<SharedState>,
    resigned: oneshot::Receiver<oneshot::Sender<()>>,
) {
    let Candidate {
        node,
        keys,
        lease,
        max_state,
    } = candidate;
    let mut resigned = Some(resigned);
    let lease_ms = u64::try_from(lease.as_millis()).unwrap_or(u64::MAX);
    let mut election = Election::new(lease, Instant::now());
    // The saved market, read once at the start for this node's snapshots (until the
    // leader's next tick), and again on taking the lead, to continue from it.
    let mut loaded = false;
    let mut failing = false;
    loop {
        // Between two asks (never during one): a shutdown may come.
        tokio::select! {
            () = tokio::time::sleep_until(election.due()) => {}
            asked = async {
                match resigned.as_mut() {
                    Some(resigned) => resigned.await,
                    None => std::future::pending().await,
                }
            } => {
                resigned = None;
                // Without an answer expected (the sender dropped), carry on.
                if let Ok(done) = asked {
                    if election.ask() == Ask::Renew {
                        lead.do_send(Lead { until: None });
                        release(&mut redis, &keys, &node).await;
                    }
                    let _ = done.send(());
                    return;
                }
                continue;
            }
        }
        if !loaded {
            if let Ok(saved) = redis.saved_state(&keys, max_state).await {
                loaded = true;
                if let Some(json) = saved {
                    state.do_send(SharedState { json, saved: true });
                }
            }
        }
        let at = Instant::now();
        let ask = election.ask();
        let answer = match tokio::time::timeout(
            election.patience(at),
            redis.ask(ask, &keys, &node, lease_ms),
        )
        .await
        {
            Ok(Ok(won)) => {
                if std::mem::replace(&mut failing, false) {
                    log::info!("ticker: Redis answers the election again");
                }
                Ok(won)
            }
            Ok(Err(e)) => {
                if !std::mem::replace(&mut failing, true) {
                    log::warn!("ticker: the election cannot reach Redis ({e}); no node leads from here meanwhile");
                }
                Err(())
            }
            Err(_) => {
                if !std::mem::replace(&mut failing, true) {
                    log::warn!("ticker: Redis did not answer the election in time; no node leads from here meanwhile");
                }
                Err(())
            }
        };
        match election.answered(at, answer) {
            Some(Change::Gained(until)) => {
                log::info!("ticker: node {node} took the lead of the market");
                // Continue from the last tick any leader published (saved with it).
                match redis.saved_state(&keys, max_state).await {
                    Ok(Some(json)) => state.do_send(SharedState { json, saved: true }),
                    Ok(None) => log::info!(
                        "ticker: no saved market state; continuing from this node's (the open, on a fresh node)"
                    ),
                    Err(e) => log::warn!("ticker: cannot read the saved market state ({e}); continuing from this node's"),
                }
                lead.do_send(Lead { until: Some(until) });
            }
            Some(Change::Renewed(until)) => lead.do_send(Lead { until: Some(until) }),
            Some(Change::Lost) => {
                log::warn!("ticker: node {node} lost the lead of the market");
                lead.do_send(Lead { until: None });
            }
            None => {}
        }
    }
}

/// Gives the lease back, if Redis answers in time (otherwise it runs out by itself).
async fn release(redis: &mut Redis, keys: &Keys, node: &str) {
    let timeout = redis.timeout;
    let del = async {
        let mut conn = redis.conn().await?;
        redis::cmd("EVAL")
            .arg(RELEASE)
            .arg(1)
            .arg(&keys.leader)
            .arg(node)
            .query_async::<i64>(&mut conn)
            .await
    };
    match tokio::time::timeout(timeout, del).await {
        Ok(Ok(1)) => log::info!("ticker: node {node} gave the lead back"),
        Ok(Ok(_)) => {}
        Ok(Err(e)) => log::warn!("ticker: cannot give the lead back ({e}); it runs out by itself"),
        Err(_) => log::warn!(
            "ticker: Redis did not answer in time to give the lead back; it runs out by itself"
        ),
    }
}

/// Publishes and saves each tick the ticker hands over, in order, a pipeline at a time,
/// each only if the lease is still this node's.
async fn publish(
    mut redis: Redis,
    node: Arc<str>,
    keys: Keys,
    mut ticks: mpsc::Receiver<ByteString>,
) {
    let mut batch = Vec::with_capacity(PUBLISH_BATCH);
    let (mut failing, mut fenced) = (false, 0u64);
    while ticks.recv_many(&mut batch, PUBLISH_BATCH).await > 0 {
        let mut pipe = redis::pipe();
        for state in batch.drain(..) {
            pipe.cmd("EVAL")
                .arg(PUBLISH)
                .arg(2)
                .arg(&keys.leader)
                .arg(&keys.state)
                .arg(&*node)
                .arg(&*state)
                .arg(&keys.quotes);
        }
        let result: redis::RedisResult<Vec<i64>> = match redis.conn().await {
            Ok(mut conn) => pipe.query_async(&mut conn).await,
            Err(e) => Err(e),
        };
        match result {
            Ok(published) => {
                if std::mem::replace(&mut failing, false) {
                    log::info!("ticker: publishing ticks to Redis again");
                }
                let refused = published.iter().filter(|&&p| p != 1).count() as u64;
                if refused > 0 {
                    fenced += refused;
                    log::warn!("ticker: {refused} tick(s) not published: the lease is not this node's ({fenced} so far)");
                }
            }
            Err(e) => {
                if !std::mem::replace(&mut failing, true) {
                    log::warn!(
                        "ticker: cannot publish ticks to Redis ({e}); other nodes miss them"
                    );
                }
            }
        }
    }
}

/// Keeps a PUB/SUB connection subscribed to the quotes channel and hands other nodes'
/// ticks to the ticker.
async fn listen(client: redis::Client, channel: String, mut inbound: Inbound) {
    let mut delay = BACKOFF.0;
    let mut failing = false;
    loop {
        let subscribed = match client.get_async_pubsub().await {
            Ok(mut pubsub) => pubsub.subscribe(&channel).await.map(|()| pubsub),
            Err(e) => Err(e),
        };
        let mut pubsub = match subscribed {
            Ok(pubsub) => pubsub,
            Err(e) => {
                if !std::mem::replace(&mut failing, true) {
                    log::warn!("ticker: cannot subscribe to {channel} on Redis ({e}); retrying");
                }
                tokio::time::sleep(delay).await;
                delay = (delay * 2).min(BACKOFF.1);
                continue;
            }
        };
        if std::mem::replace(&mut failing, false) {
            log::info!("ticker: subscribed to {channel} on Redis again");
        }
        delay = BACKOFF.0;
        let mut stream = pubsub.on_message();
        while let Some(message) = stream.next().await {
            inbound.take(message.get_payload_bytes());
        }
        log::warn!("ticker: lost the Redis subscription to {channel}; reconnecting");
        failing = true;
    }
}

/// Turns what the quotes channel carries into states for the ticker.
struct Inbound {
    node: Arc<str>,
    max_payload: usize,
    ticker: Recipient<SharedState>,
    /// Malformed payloads dropped so far (logged sparingly).
    dropped: u64,
}

impl Inbound {
    fn take(&mut self, payload: &[u8]) {
        match open(payload, &self.node, self.max_payload) {
            Ok(Some(opened)) => self.ticker.do_send(SharedState {
                json: opened.frame,
                saved: false,
            }),
            Ok(None) => {}
            Err(why) => {
                self.dropped += 1;
                let n = self.dropped;
                if n <= 10 || n.is_power_of_two() {
                    log::warn!("ticker: dropped a malformed tick from Redis: {why} ({n} so far)");
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const LEASE: Duration = Duration::from_millis(3000);

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    /// The whole life of a lease, on a clock moved by hand: taken, renewed every third,
    /// lost on a refusal or on no answer, and taken again.
    #[test]
    fn a_lease_is_taken_renewed_and_lost() {
        let t0 = Instant::now();
        let mut e = Election::new(LEASE, t0);
        // A follower asks at once, and again a tenth of the lease after a refusal.
        assert_eq!((e.ask(), e.due()), (Ask::Acquire, t0));
        assert_eq!(e.patience(t0), LEASE / 3);
        assert_eq!(e.answered(t0, Ok(false)), None);
        assert_eq!((e.ask(), e.due()), (Ask::Acquire, t0 + ms(300)));
        // No answer from Redis: still a follower, asking again as often.
        assert_eq!(e.answered(t0 + ms(300), Err(())), None);
        assert_eq!((e.ask(), e.due()), (Ask::Acquire, t0 + ms(600)));

        // Taken: it lasts from when the SET was sent (not answered), less 1% for drift.
        let t1 = t0 + ms(600);
        assert_eq!(
            e.answered(t1, Ok(true)),
            Some(Change::Gained(t1 + ms(2970)))
        );
        assert_eq!((e.ask(), e.due()), (Ask::Renew, t1 + ms(1000)));
        // A renewal may wait for its answer no longer than the lease lasts.
        assert_eq!(e.patience(t1 + ms(1000)), ms(1970));
        assert_eq!(e.patience(t1 + ms(5000)), Duration::ZERO);

        // Renewed: from the renewal's sending, again.
        let t2 = t1 + ms(1000);
        assert_eq!(
            e.answered(t2, Ok(true)),
            Some(Change::Renewed(t2 + ms(2970)))
        );
        assert_eq!((e.ask(), e.due()), (Ask::Renew, t2 + ms(1000)));

        // The key is another node's (it expired meanwhile and was taken): lost at once.
        let t3 = t2 + ms(1000);
        assert_eq!(e.answered(t3, Ok(false)), Some(Change::Lost));
        assert_eq!((e.ask(), e.due()), (Ask::Acquire, t3 + ms(300)));
        assert_eq!(e.answered(t3 + ms(300), Ok(false)), None, "lost only once");

        // Taken again, then a renewal with no answer (Redis away, or too slow): lost too,
        // when the timeout (the lease's end at the latest) gives up on it.
        let t4 = t3 + ms(600);
        assert_eq!(
            e.answered(t4, Ok(true)),
            Some(Change::Gained(t4 + ms(2970)))
        );
        assert_eq!(e.answered(t4 + ms(1000), Err(())), Some(Change::Lost));
        assert_eq!(e.ask(), Ask::Acquire);
    }

    #[test]
    fn a_short_lease_is_retried_often_but_not_in_a_loop() {
        let t0 = Instant::now();
        let mut e = Election::new(ms(50), t0);
        e.answered(t0, Ok(false));
        assert_eq!(e.due(), t0 + ms(10));
    }

    #[test]
    fn the_lease_is_a_flag_with_bounds() {
        use clap::Parser;
        let parse = |args: &[&str]| {
            let mut all = vec!["wxhub"];
            all.extend_from_slice(args);
            crate::config::Cli::try_parse_from(all).map(|cli| cli.config)
        };
        assert_eq!(parse(&[]).unwrap().ticker_lease, DEFAULT_LEASE);
        let short = parse(&["--ticker-lease", "1500ms"]).unwrap();
        assert_eq!(short.ticker_lease, ms(1500));
        assert!(short.validate().is_ok());
        for out in ["50ms", "2h"] {
            assert!(parse(&["--ticker-lease", out]).unwrap().validate().is_err());
        }
        assert!(parse(&["--ticker-lease", "soon"]).is_err());
    }

    #[test]
    fn keys_are_under_the_prefix() {
        let k = Keys::new("app");
        assert_eq!(
            (k.leader.as_str(), k.state.as_str(), k.quotes.as_str()),
            ("app:ticker:leader", "app:ticker:state", "app:ticker:quotes")
        );
    }
}
