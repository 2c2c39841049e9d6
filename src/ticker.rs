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

use std::collections::HashSet;
use std::sync::Arc;
use std::time::Duration;

use actix::prelude::*;
use bytestring::ByteString;

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
        self.model.step(now_ms());
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

    /// Arms the next tick. Re-armed from now after each tick rather than on a fixed
    /// schedule: if the thread was busy, ticks resume at the normal pace instead of
    /// firing back to back to catch up.
    fn schedule(&mut self, ctx: &mut Context<Self>) {
        self.timer = Some(ctx.run_later(self.tick, |act, ctx| {
            act.advance();
            act.schedule(ctx);
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
        match (self.watched.is_empty(), self.timer) {
            (false, None) => {
                log::debug!("ticker started");
                self.schedule(ctx);
            }
            (true, Some(handle)) => {
                log::debug!("ticker idle");
                ctx.cancel_future(handle);
                self.timer = None;
            }
            _ => {}
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
}
