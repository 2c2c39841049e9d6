//! The `Ticker` actor: drives the simulated [`Model`] and feeds the stock groups.
//!
//! It runs beside the hub, on a thread of its own (started by [`crate::server`]), and
//! publishes through the hub like any server-side publisher ([`PublishFrames`]). It runs
//! only while someone watches: the hub's router tells it ([`FeedDemand`]) when one of its
//! groups gains its first or loses its last session, and the timer is cancelled when
//! nobody is left. Each tick is serialized once per group (`stock`, each
//! `stock.<SYMBOL>`, the classic feed) and handed to the hub, which shares the bytes
//! among the members. It also answers `history`, straight into the asking session's
//! outbox, so a chart's backfill never takes the hub's thread.
//!
//! In cluster mode ([`Ticker::in_cluster`]) one ticker ticks for every node: the one whose
//! node holds the lease ([`crate::cluster::leader`] tells it with [`Lead`]). It ticks
//! while it leads, watched or not (the demand is on other nodes too), and hands each
//! tick's [`MarketState`](crate::market::MarketState), serialized once, to the task that
//! publishes and saves it in Redis. The other nodes' tickers never tick: they take each
//! published state ([`SharedState`]) into their model, so that their snapshots and
//! `history` are the leader's, and publish its frames to their own hub. A leader stops
//! at once when its lease runs out unrenewed, whatever the election task is doing.

use std::collections::HashSet;
use std::sync::Arc;
use std::time::Duration;

use actix::prelude::*;
use bytestring::ByteString;
use tokio::sync::mpsc;
use tokio::time::Instant;

use crate::error::ErrorCode;
use crate::hub::{FeedDemand, PublishFrames};
use crate::market::{Model, ModelConfig};
use crate::outbox::Outbox;
use crate::policy::{symbol_group, CLASSIC_FEED, MARKET_GROUP};
use crate::protocol::{encode, now_ms, Event, HistoryPage, RequestId, MAX_PAGE};

/// Messages the ticker's mailbox holds (mostly `history` requests) before sessions get
/// `overloaded` for theirs.
const HISTORY_QUEUE: usize = 4096;

/// The market the ticker simulates and how often it ticks.
#[derive(Debug, Clone)]
pub struct Market {
    pub model: ModelConfig,
    pub tick: Duration,
}

impl Market {
    /// The groups the ticker feeds: `stock`, the classic feed, then `stock.<SYMBOL>` for
    /// every listed symbol, in the model's order.
    pub fn groups(&self) -> Vec<Arc<str>> {
        [MARKET_GROUP.into(), CLASSIC_FEED.into()]
            .into_iter()
            .chain(
                self.model
                    .symbols
                    .iter()
                    .map(|s| Arc::from(symbol_group(&s.code))),
            )
            .collect()
    }
}

/// `history`: one page of a symbol's last quotes, answered into the caller's outbox.
#[derive(Message)]
#[rtype(result = "()")]
pub struct History {
    pub id: Option<RequestId>,
    pub symbol: String,
    pub page: HistoryPage,
    pub outbox: Arc<Outbox>,
}

/// Advance the market one tick and publish it; the timer does this, and so do tests.
#[derive(Message)]
#[rtype(result = "()")]
pub struct Advance;

/// Stop ticking for good (the hub is shutting down).
#[derive(Message)]
#[rtype(result = "()")]
pub struct Stop;

/// Asks whether the tick timer is running (it runs only while a group is watched).
#[derive(Message)]
#[rtype(result = "bool")]
pub struct IsRunning;

/// Cluster mode: what the election decided. This node leads until `until` (unless told
/// again), or, with `None`, does not lead.
#[derive(Message, Debug, Clone, Copy, PartialEq)]
#[rtype(result = "()")]
pub struct Lead {
    pub until: Option<Instant>,
}

/// Cluster mode: a market state from Redis, as JSON: a tick the leader published
/// (`saved: false`), or the state saved there, read when this node starts or takes the
/// lead (`saved: true`). Checked in full before it is used.
#[derive(Message, Debug, Clone)]
#[rtype(result = "()")]
pub struct SharedState {
    pub json: ByteString,
    pub saved: bool,
}

/// Cluster mode: the ticker's end of the link to Redis.
struct Cluster {
    /// Each tick's state, to publish and save; bounded: a Redis that cannot keep up loses
    /// ticks (the next one carries the current prices), the ticker never waits.
    publish: mpsc::Sender<ByteString>,
    /// Until when this node leads (the lease, as the election last saw it renewed).
    leading: Option<Instant>,
    /// States from Redis refused so far (logged sparingly).
    refused: u64,
    /// Whether the model is the cluster's market yet (a state from Redis taken, or a tick
    /// of its own published): until then it holds this node's own opening, which the
    /// first state from Redis replaces, in `history` too.
    synced: bool,
}

/// The ticker actor.
pub struct Ticker {
    model: Model,
    tick: Duration,
    history_len: usize,
    /// Where ticks go; a `Recipient` so tests can record them.
    hub: Recipient<PublishFrames>,
    /// Groups that have at least one session.
    watched: HashSet<Arc<str>>,
    /// The pending tick, while anything is watched.
    timer: Option<SpawnHandle>,
    /// Group names, made once so a tick allocates no names: `stock`, the classic feed,
    /// then `stock.<SYMBOL>` in the model's order.
    stock_group: Arc<str>,
    classic_group: Arc<str>,
    symbol_groups: Vec<Arc<str>>,
    /// Cluster mode's link (`None` on a single node).
    cluster: Option<Cluster>,
}

impl Ticker {
    pub fn new(market: Market, hub: Recipient<PublishFrames>) -> Self {
        let symbol_groups = market.groups().split_off(2);
        Ticker {
            model: Model::new(&market.model, now_ms()),
            tick: market.tick,
            history_len: market.model.history,
            hub,
            watched: HashSet::new(),
            timer: None,
            stock_group: Arc::from(MARKET_GROUP),
            classic_group: Arc::from(CLASSIC_FEED),
            symbol_groups,
            cluster: None,
        }
    }

    /// Cluster mode: ticks only while told it leads ([`Lead`]), hands each tick's state to
    /// `publish`, and takes the leader's ([`SharedState`]) otherwise.
    pub fn in_cluster(mut self, publish: mpsc::Sender<ByteString>) -> Self {
        self.cluster = Some(Cluster {
            publish,
            leading: None,
            refused: 0,
            synced: false,
        });
        self
    }

    /// Whether the tick timer should run: in cluster mode while this node leads, on a
    /// single node while a group is watched.
    fn should_tick(&self) -> bool {
        match &self.cluster {
            Some(cluster) => cluster.leading.is_some(),
            None => !self.watched.is_empty(),
        }
    }

    /// Starts or stops the timer as [`Ticker::should_tick`] says.
    fn fit_timer(&mut self, ctx: &mut Context<Self>) {
        match (self.should_tick(), self.timer) {
            (true, None) => {
                log::debug!("ticker started");
                self.schedule(ctx);
            }
            (false, Some(handle)) => {
                log::debug!("ticker idle");
                ctx.cancel_future(handle);
                self.timer = None;
            }
            _ => {}
        }
    }

    /// Cluster mode: whether this node still leads; a lease run out unrenewed ends the
    /// lead here and now, whatever the election task is doing (Redis may hang).
    fn still_leads(&mut self) -> bool {
        let Some(cluster) = &mut self.cluster else {
            return true;
        };
        match cluster.leading {
            Some(until) if Instant::now() < until => true,
            Some(_) => {
                cluster.leading = None;
                log::warn!("ticker: the lease ran out unrenewed; this node stops ticking");
                false
            }
            None => false,
        }
    }

    /// Hands the current frames to the hub (which keeps them as snapshots too).
    fn publish_local(&self) {
        // A hub whose mailbox is full skips this tick rather than queue it: the next one
        // carries the current prices anyway.
        if self
            .hub
            .try_send(PublishFrames {
                frames: self.frames(),
            })
            .is_err()
        {
            log::debug!("tick skipped: the hub is busy");
        }
    }

    /// The current frame of every group, each encoded once. Groups nobody watches are
    /// included: the hub keeps them as snapshots for whoever subscribes next.
    fn frames(&self) -> Vec<(Arc<str>, ByteString)> {
        let quotes = self.model.quotes();
        let ts = quotes.first().map_or_else(now_ms, |q| q.ts);
        let mut frames = Vec::with_capacity(quotes.len() + 2);
        frames.push((
            self.stock_group.clone(),
            encode(&Event::Tick { ts, quotes }),
        ));
        frames.push((
            self.classic_group.clone(),
            encode(&self.model.classic_six()),
        ));
        for (group, quote) in self.symbol_groups.iter().zip(quotes) {
            frames.push((group.clone(), encode(&Event::Quote { quote })));
        }
        frames
    }

    fn advance(&mut self) {
        if !self.still_leads() {
            return;
        }
        // Time only moves on, across leaders too (their clocks may disagree a little):
        // `history` pages by it.
        self.model
            .step(now_ms().max(self.model.ts().saturating_add(1)));
        self.publish_local();
        if let Some(cluster) = &mut self.cluster {
            // What it kept so far is the cluster's market now, its opening included.
            cluster.synced = true;
            // Serialized once: the bytes published and saved are the same.
            let state = ByteString::from(
                serde_json::to_string(&self.model.state()).expect("a market state serializes"),
            );
            if cluster.publish.try_send(state).is_err() {
                log::debug!("tick not published: Redis is behind");
            }
        }
    }

    /// Arms the next tick. Re-armed from now after each tick rather than on a fixed
    /// schedule: if the thread was busy, ticks resume at the normal pace instead of
    /// firing back to back to catch up.
    fn schedule(&mut self, ctx: &mut Context<Self>) {
        self.timer = Some(ctx.run_later(self.tick, |act, ctx| {
            act.timer = None;
            act.advance();
            if act.should_tick() {
                act.schedule(ctx);
            }
        }));
    }
}

impl Actor for Ticker {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Context<Self>) {
        // Sessions ask for `history` with `try_send`: room for a burst of chart pages
        // opening at once (each request is rate-limited and charged by its size), past
        // which they are answered `overloaded` rather than queued without bound.
        ctx.set_mailbox_capacity(HISTORY_QUEUE);
        // The opening state, so the first subscriber of any group gets a snapshot.
        self.hub.do_send(PublishFrames {
            frames: self.frames(),
        });
    }
}

impl Handler<FeedDemand> for Ticker {
    type Result = ();
    fn handle(&mut self, msg: FeedDemand, ctx: &mut Context<Self>) {
        if msg.watched {
            self.watched.insert(msg.group);
        } else {
            self.watched.remove(&msg.group);
        }
        self.fit_timer(ctx);
    }
}

impl Handler<Lead> for Ticker {
    type Result = ();
    fn handle(&mut self, msg: Lead, ctx: &mut Context<Self>) {
        let Some(cluster) = &mut self.cluster else {
            return;
        };
        let was = std::mem::replace(&mut cluster.leading, msg.until);
        match (was.is_some(), msg.until.is_some()) {
            (false, true) => {
                log::info!("ticker: this node leads the market now");
                // Quotes have waited out a lease already: the first tick at once.
                self.advance();
            }
            (true, false) => log::info!("ticker: this node no longer leads the market"),
            _ => {}
        }
        self.fit_timer(ctx);
    }
}

impl Handler<SharedState> for Ticker {
    type Result = ();
    fn handle(&mut self, msg: SharedState, _: &mut Context<Self>) {
        let Some(cluster) = &mut self.cluster else {
            return;
        };
        if cluster.leading.is_some() && !msg.saved {
            // The last ticks of the previous leader, still on their way: this node
            // continued from the saved state, which has them.
            return;
        }
        match self.model.restore_json(&msg.json) {
            Ok(()) => {
                if !std::mem::replace(&mut cluster.synced, true) {
                    self.model.keep_latest_only();
                }
                self.publish_local();
            }
            Err(why) => {
                cluster.refused += 1;
                let n = cluster.refused;
                if n <= 10 || n.is_power_of_two() {
                    let what = if msg.saved {
                        "the market state saved in Redis (continuing from this node's own)"
                    } else {
                        "a market state published on Redis"
                    };
                    log::warn!("ticker: ignored {what}: {why} ({n} so far)");
                }
            }
        }
    }
}

impl Handler<History> for Ticker {
    type Result = ();
    fn handle(&mut self, msg: History, _: &mut Context<Self>) {
        let frame = match self.model.position(&msg.symbol) {
            Some(i) => encode(&Event::History {
                id: msg.id.as_ref(),
                symbol: &msg.symbol,
                quotes: self
                    .model
                    .history(
                        i,
                        msg.page.limit.unwrap_or(self.history_len).min(MAX_PAGE),
                        msg.page.before,
                    )
                    .collect(),
            }),
            None => encode(&Event::Error {
                id: msg.id.as_ref(),
                code: ErrorCode::NotFound,
                message: "no such symbol",
            }),
        };
        // If this overflows the outbox, the session closes as a slow consumer and the
        // hub drops it on its next delivery or at its disconnect.
        msg.outbox.push(&frame);
    }
}

impl Handler<Advance> for Ticker {
    type Result = ();
    fn handle(&mut self, _: Advance, _: &mut Context<Self>) {
        self.advance();
    }
}

impl Handler<Stop> for Ticker {
    type Result = ();
    fn handle(&mut self, _: Stop, ctx: &mut Context<Self>) {
        ctx.stop();
    }
}

impl Handler<IsRunning> for Ticker {
    type Result = bool;
    fn handle(&mut self, _: IsRunning, _: &mut Context<Self>) -> bool {
        self.timer.is_some()
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Mutex;

    use super::*;
    use crate::market::default_symbols;
    use crate::testkit::paused_system;

    /// Stands in for the hub: records the groups of every tick it is handed.
    struct Recorder(Arc<Mutex<Vec<Vec<String>>>>);
    impl Actor for Recorder {
        type Context = Context<Self>;
    }
    impl Handler<PublishFrames> for Recorder {
        type Result = ();
        fn handle(&mut self, msg: PublishFrames, _: &mut Context<Self>) {
            let groups = msg.frames.iter().map(|(g, _)| g.to_string()).collect();
            self.0.lock().unwrap().push(groups);
        }
    }

    /// How many ticks the recorder has been handed.
    #[derive(Message)]
    #[rtype(result = "usize")]
    struct Count;
    impl Handler<Count> for Recorder {
        type Result = usize;
        fn handle(&mut self, _: Count, _: &mut Context<Self>) -> usize {
            self.0.lock().unwrap().len()
        }
    }

    /// The ticks the recorder has been handed, once everything the ticker has done so far
    /// (its due timer included: an actor polls its timers with its mailbox) has reached it
    /// (mailboxes are FIFO).
    async fn published(ticker: &Addr<Ticker>, recorder: &Addr<Recorder>) -> usize {
        ticker.send(IsRunning).await.unwrap();
        recorder.send(Count).await.unwrap()
    }

    fn market() -> Market {
        Market {
            model: ModelConfig {
                symbols: default_symbols(),
                seed: Some(3),
                history: 10,
                daily_limit: Some(0.1),
            },
            tick: Duration::from_millis(20),
        }
    }

    #[actix::test]
    async fn one_frame_per_group_per_tick_and_a_timer_only_while_watched() {
        let seen = Arc::new(Mutex::new(Vec::new()));
        let hub = Recorder(seen.clone()).start();
        let ticker = Ticker::new(market(), hub.clone().recipient()).start();
        let watch = |group: &str, watched| FeedDemand {
            group: Arc::from(group),
            watched,
        };
        assert!(!ticker.send(IsRunning).await.unwrap());
        ticker.send(Advance).await.unwrap();
        // The opening snapshot and one tick; each names every group once.
        let ticks = seen.lock().unwrap().clone();
        assert_eq!(ticks.len(), 2);
        for groups in &ticks {
            assert_eq!(groups.len(), 8);
            assert_eq!(groups[..2], ["stock", CLASSIC_FEED]);
            assert!(groups.contains(&"stock.600519".to_string()));
        }
        ticker.send(watch("stock.600519", true)).await.unwrap();
        ticker.send(watch("stock", true)).await.unwrap();
        assert!(ticker.send(IsRunning).await.unwrap());
        ticker.send(watch("stock", false)).await.unwrap();
        assert!(ticker.send(IsRunning).await.unwrap());
        ticker.send(watch("stock.600519", false)).await.unwrap();
        assert!(!ticker.send(IsRunning).await.unwrap());
    }

    /// The timer ticks once per period while a group is watched, never while none is,
    /// and is re-armed from each tick rather than on a fixed schedule, so a late tick is
    /// not followed by others to catch up. Time is tokio's paused clock, moved by hand
    /// (actix's timers are tokio's): each count below is exact.
    #[test]
    fn the_timer_ticks_once_per_period_while_watched() {
        paused_system().block_on(ticks_once_per_period_while_watched());
    }

    async fn ticks_once_per_period_while_watched() {
        let market = market();
        let tick = market.tick;
        let seen = Arc::new(Mutex::new(Vec::new()));
        let recorder = Recorder(seen).start();
        let ticker = Ticker::new(market, recorder.clone().recipient()).start();
        let watch = |watched| FeedDemand {
            group: Arc::from("stock"),
            watched,
        };
        let (t, r) = (&ticker, &recorder);
        let advance = move |by| async move {
            tokio::time::advance(by).await;
            published(t, r).await
        };
        // The opening snapshot only, however long nobody watches.
        assert_eq!(published(&ticker, &recorder).await, 1);
        assert_eq!(advance(tick * 10).await, 1, "no tick while nobody watches");

        ticker.send(watch(true)).await.unwrap();
        assert_eq!(advance(tick - Duration::from_millis(1)).await, 1);
        assert_eq!(
            advance(Duration::from_millis(1)).await,
            2,
            "a tick after one period"
        );
        for n in 3..=7 {
            assert_eq!(advance(tick).await, n, "one tick per period");
        }
        // Three periods at once (a busy thread): one tick, and the next a period later.
        assert_eq!(advance(tick * 3).await, 8);
        assert_eq!(advance(tick - Duration::from_millis(1)).await, 8);
        assert_eq!(advance(Duration::from_millis(1)).await, 9);

        ticker.send(watch(false)).await.unwrap();
        assert!(!ticker.send(IsRunning).await.unwrap());
        assert_eq!(advance(tick * 10).await, 9, "no tick once nobody watches");
    }

    /// Stands in for the hub in cluster tests: keeps each `stock` frame it is handed.
    struct Frames(Arc<Mutex<Vec<String>>>);
    impl Actor for Frames {
        type Context = Context<Self>;
    }
    impl Handler<PublishFrames> for Frames {
        type Result = ();
        fn handle(&mut self, msg: PublishFrames, _: &mut Context<Self>) {
            self.0.lock().unwrap().push(msg.frames[0].1.to_string());
        }
    }
    impl Handler<Count> for Frames {
        type Result = usize;
        fn handle(&mut self, _: Count, _: &mut Context<Self>) -> usize {
            self.0.lock().unwrap().len()
        }
    }

    /// A ticker in cluster mode, the frames its hub got, and the states it published.
    struct Rig {
        ticker: Addr<Ticker>,
        hub: Addr<Frames>,
        seen: Arc<Mutex<Vec<String>>>,
        published: mpsc::Receiver<ByteString>,
    }

    fn cluster_ticker() -> Rig {
        let seen = Arc::new(Mutex::new(Vec::new()));
        let hub = Frames(seen.clone()).start();
        let (tx, published) = mpsc::channel(64);
        let ticker = Ticker::new(market(), hub.clone().recipient())
            .in_cluster(tx)
            .start();
        Rig {
            ticker,
            hub,
            seen,
            published,
        }
    }

    /// A leader ticks at once, then every period, watched or not, each tick published
    /// to Redis as it was to the hub; with its lease run out unrenewed it stops, even
    /// with nobody telling it so.
    #[test]
    fn a_leader_ticks_while_its_lease_lasts() {
        paused_system().block_on(async {
            let tick = market().tick;
            let Rig {
                ticker,
                hub,
                seen,
                mut published,
            } = cluster_ticker();
            let count = || async { published_frames(&ticker, &hub).await };
            assert_eq!(count().await, 1, "the opening snapshot");
            // Watched, but not leading: no tick.
            ticker
                .send(FeedDemand {
                    group: Arc::from("stock"),
                    watched: true,
                })
                .await
                .unwrap();
            ticker.send(Advance).await.unwrap();
            tokio::time::advance(tick * 5).await;
            assert_eq!(count().await, 1, "a follower never ticks");
            assert!(published.try_recv().is_err());

            let lease = tick * 10;
            let until = Instant::now() + lease;
            ticker.send(Lead { until: Some(until) }).await.unwrap();
            assert_eq!(count().await, 2, "a tick as soon as it leads");
            for n in 3..=6 {
                tokio::time::advance(tick).await;
                assert_eq!(count().await, n);
            }
            // What went to Redis is each tick's state: the prices the hub got.
            let frames = seen.lock().unwrap().clone();
            for frame in &frames[1..] {
                let state: crate::market::MarketState =
                    serde_json::from_str(&published.try_recv().unwrap()).unwrap();
                let tick: serde_json::Value = serde_json::from_str(frame).unwrap();
                assert_eq!(tick["ts"], state.ts);
                assert_eq!(
                    tick["quotes"][0]["price"].as_f64(),
                    Some(crate::market::round2(state.symbols[0].exact))
                );
            }
            // Renewed: on it goes past the first lease's end, a tick per period.
            ticker
                .send(Lead {
                    until: Some(until + lease),
                })
                .await
                .unwrap();
            for n in 7..=21 {
                tokio::time::advance(tick).await;
                assert_eq!(count().await, n);
            }
            // Never renewed again: the tick due when the lease ends does not come, though
            // no one said it lost.
            tokio::time::advance(tick).await;
            assert_eq!(count().await, 21, "no tick once the lease ran out");
            assert!(!ticker.send(IsRunning).await.unwrap());
            tokio::time::advance(lease).await;
            let last = count().await;
            assert_eq!(last, 21);
            // Told it lost, then leading again: ticking again.
            ticker.send(Lead { until: None }).await.unwrap();
            let until = Instant::now() + lease;
            ticker.send(Lead { until: Some(until) }).await.unwrap();
            assert_eq!(count().await, last + 1);
            ticker.send(Lead { until: None }).await.unwrap();
            tokio::time::advance(lease).await;
            assert_eq!(count().await, last + 1, "no tick once it lost");
        });
    }

    /// Everything the ticker did so far has reached `hub`: the number of frames it got.
    async fn published_frames(ticker: &Addr<Ticker>, hub: &Addr<Frames>) -> usize {
        ticker.send(IsRunning).await.unwrap();
        hub.send(Count).await.unwrap()
    }

    /// A follower passes the leader's ticks to its hub (its `history` keeps them) and
    /// drops states that are not this market's; a leader ignores other nodes' ticks but
    /// continues from the saved state.
    #[actix::test]
    async fn a_follower_shows_the_leaders_ticks() {
        let Rig {
            ticker,
            hub,
            seen,
            published: _published,
        } = cluster_ticker();
        // The leader's tick comes after this node's own opening, which is no part of the
        // cluster's history.
        let t = now_ms() + 1000;
        let mut leader = crate::market::Model::new(&market().model, t - 1);
        leader.step(t);
        let state = |model: &crate::market::Model| SharedState {
            json: serde_json::to_string(&model.state()).unwrap().into(),
            saved: false,
        };
        ticker.send(state(&leader)).await.unwrap();
        assert_eq!(published_frames(&ticker, &hub).await, 2);
        let tick = |n: usize| -> serde_json::Value {
            serde_json::from_str(&seen.lock().unwrap()[n]).unwrap()
        };
        assert_eq!(tick(1)["ts"], t);
        assert_eq!(
            tick(1)["quotes"][2]["price"].as_f64(),
            Some(leader.quotes()[2].price)
        );
        for json in ["{}", "{\"ts\":3,\"symbols\":[]}", "garbage"] {
            ticker
                .send(SharedState {
                    json: json.into(),
                    saved: false,
                })
                .await
                .unwrap();
        }
        assert_eq!(published_frames(&ticker, &hub).await, 2, "refused");

        // Its history is the leader's.
        let outbox = Arc::new(Outbox::new(1 << 16));
        ticker
            .send(History {
                id: None,
                symbol: "600519".into(),
                page: HistoryPage::default(),
                outbox: outbox.clone(),
            })
            .await
            .unwrap();
        let (frames, _) = outbox.drain();
        let reply: serde_json::Value = serde_json::from_str(&frames[0]).unwrap();
        let ts: Vec<_> = reply["quotes"]
            .as_array()
            .unwrap()
            .iter()
            .map(|q| q["ts"].as_u64().unwrap())
            .collect();
        assert_eq!(ts, [t], "{reply}");

        // Leading: another node's late tick is ignored, the saved state taken.
        let until = Instant::now() + Duration::from_secs(60);
        ticker.send(Lead { until: Some(until) }).await.unwrap();
        let ticks = published_frames(&ticker, &hub).await;
        leader.step(t + 100);
        ticker.send(state(&leader)).await.unwrap();
        assert_eq!(published_frames(&ticker, &hub).await, ticks);
        ticker
            .send(SharedState {
                saved: true,
                ..state(&leader)
            })
            .await
            .unwrap();
        assert_eq!(published_frames(&ticker, &hub).await, ticks + 1);
        assert_eq!(tick(ticks)["ts"], t + 100);
    }

    /// A node that led from the open (nothing saved) and then follows keeps its own ticks
    /// in `history`: they were the cluster's.
    #[actix::test]
    async fn ticks_of_its_own_stay_in_history_when_it_follows() {
        let Rig {
            ticker,
            hub,
            published: _published,
            ..
        } = cluster_ticker();
        let until = Instant::now() + Duration::from_secs(60);
        ticker.send(Lead { until: Some(until) }).await.unwrap();
        ticker.send(Lead { until: None }).await.unwrap();
        assert_eq!(published_frames(&ticker, &hub).await, 2);
        let mut leader = crate::market::Model::new(&market().model, 0);
        leader.step(now_ms() + 1000);
        ticker
            .send(SharedState {
                json: serde_json::to_string(&leader.state()).unwrap().into(),
                saved: false,
            })
            .await
            .unwrap();
        let outbox = Arc::new(Outbox::new(1 << 16));
        ticker
            .send(History {
                id: None,
                symbol: "600519".into(),
                page: HistoryPage::default(),
                outbox: outbox.clone(),
            })
            .await
            .unwrap();
        let (frames, _) = outbox.drain();
        let reply: serde_json::Value = serde_json::from_str(&frames[0]).unwrap();
        assert_eq!(
            reply["quotes"].as_array().unwrap().len(),
            3,
            "its opening, its tick, the new leader's: {reply}"
        );
    }
}
