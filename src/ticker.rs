//! The `Ticker` actor: drives the simulated [`Model`] and feeds the stock groups.
//!
//! It runs only while someone watches: the hub tells it ([`Watch`]) when one of its groups
//! gains its first or loses its last session, and the timer is cancelled when nobody is
//! left. Each tick is serialized once per group (`stock`, each `stock.<SYMBOL>`, the
//! classic feed) and handed to the hub, which shares the bytes among the members.

use std::collections::HashSet;
use std::sync::Arc;
use std::time::Duration;

use actix::prelude::*;

use crate::error::ErrorCode;
use crate::hub::Fanout;
use crate::market::{Model, ModelConfig};
use crate::outbox::Outbox;
use crate::protocol::{encode, is_stock_group, now_ms, Event, RequestId};

/// The hub-internal group of classic `stock` subscribers. Not a valid group name, so no
/// client can subscribe or publish to it by name.
pub const CLASSIC_FEED: &str = "#classic-stock";

/// Groups the ticker feeds.
pub fn is_ticker_group(group: &str) -> bool {
    group == CLASSIC_FEED || is_stock_group(group)
}

/// The market the ticker simulates and how often it ticks.
#[derive(Debug, Clone)]
pub struct Market {
    pub model: ModelConfig,
    pub tick: Duration,
}

impl Market {
    /// Whether `group` is `stock` or `stock.<SYMBOL>` for a listed symbol.
    pub fn has_group(&self, group: &str) -> bool {
        group == "stock"
            || group
                .strip_prefix("stock.")
                .is_some_and(|code| self.model.symbols.iter().any(|s| &*s.code == code))
    }
}

/// One of the ticker's groups gained its first session (`watched`) or lost its last.
#[derive(Message)]
#[rtype(result = "()")]
pub struct Watch {
    pub group: Arc<str>,
    pub watched: bool,
}

/// Send a new subscriber of `group` the latest state at once.
#[derive(Message)]
#[rtype(result = "()")]
pub struct Snapshot {
    pub group: Arc<str>,
    pub outbox: Arc<Outbox>,
}

/// `history`: the last quotes of a symbol, answered into the caller's outbox.
#[derive(Message)]
#[rtype(result = "()")]
pub struct History {
    pub id: Option<RequestId>,
    pub symbol: String,
    pub limit: Option<usize>,
    pub outbox: Arc<Outbox>,
}

/// Advance the market one tick and publish it; the timer sends this, and so do tests.
#[derive(Message)]
#[rtype(result = "()")]
pub struct Advance;

/// The ticker actor.
pub struct Ticker {
    model: Model,
    tick: Duration,
    history_len: usize,
    /// Where ticks go; a `Recipient` so tests can record them.
    hub: Recipient<Fanout>,
    /// Groups that have at least one session.
    watched: HashSet<Arc<str>>,
    /// The running timer, while anything is watched.
    timer: Option<SpawnHandle>,
    /// Group names per symbol, made once so a tick allocates no names.
    symbol_groups: Vec<Arc<str>>,
}

impl Ticker {
    pub fn new(market: Market, hub: Recipient<Fanout>) -> Self {
        let symbol_groups = market
            .model
            .symbols
            .iter()
            .map(|s| Arc::from(format!("stock.{}", s.code)))
            .collect();
        Ticker {
            model: Model::new(&market.model, now_ms()),
            tick: market.tick,
            history_len: market.model.history,
            hub,
            watched: HashSet::new(),
            timer: None,
            symbol_groups,
        }
    }

    fn classic_frame(&self) -> bytestring::ByteString {
        encode(&self.model.classic_six())
    }

    fn advance(&mut self) {
        self.model.step(now_ms());
        let quotes = self.model.quotes();
        if self.watched.contains("stock") {
            let frame = encode(&Event::Tick {
                ts: quotes.first().map_or_else(now_ms, |q| q.ts),
                quotes,
            });
            self.hub.do_send(Fanout {
                group: Arc::from("stock"),
                frame,
            });
        }
        for (group, quote) in self.symbol_groups.iter().zip(quotes) {
            if self.watched.contains(group) {
                let frame = encode(&Event::Quote { quote });
                self.hub.do_send(Fanout {
                    group: group.clone(),
                    frame,
                });
            }
        }
        if self.watched.contains(CLASSIC_FEED) {
            self.hub.do_send(Fanout {
                group: Arc::from(CLASSIC_FEED),
                frame: self.classic_frame(),
            });
        }
    }
}

impl Actor for Ticker {
    type Context = Context<Self>;
}

impl Handler<Watch> for Ticker {
    type Result = ();
    fn handle(&mut self, msg: Watch, ctx: &mut Context<Self>) {
        if msg.watched {
            self.watched.insert(msg.group);
        } else {
            self.watched.remove(&msg.group);
        }
        match (self.watched.is_empty(), self.timer) {
            (false, None) => {
                log::debug!("ticker started");
                self.timer = Some(ctx.run_interval(self.tick, |act, _| act.advance()));
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

impl Handler<Snapshot> for Ticker {
    type Result = ();
    fn handle(&mut self, msg: Snapshot, _: &mut Context<Self>) {
        let quotes = self.model.quotes();
        let frame = if &*msg.group == CLASSIC_FEED {
            self.classic_frame()
        } else if &*msg.group == "stock" {
            encode(&Event::Tick {
                ts: now_ms(),
                quotes,
            })
        } else {
            let code = msg.group.strip_prefix("stock.").unwrap_or_default();
            match self.model.position(code) {
                Some(i) => encode(&Event::Quote { quote: &quotes[i] }),
                None => return,
            }
        };
        msg.outbox.push(&frame);
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
                    .history(i, msg.limit.unwrap_or(self.history_len))
                    .collect(),
            }),
            None => encode(&Event::Error {
                id: msg.id.as_ref(),
                code: ErrorCode::NotFound,
                message: "no such symbol",
            }),
        };
        msg.outbox.push(&frame);
    }
}

impl Handler<Advance> for Ticker {
    type Result = ();
    fn handle(&mut self, _: Advance, _: &mut Context<Self>) {
        self.advance();
    }
}

/// Asks whether the tick timer is running (it runs only while a group is watched).
#[derive(Message)]
#[rtype(result = "bool")]
pub struct IsRunning;

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

    /// Stands in for the hub: records every fan-out the ticker asks for.
    struct Recorder(Arc<Mutex<Vec<Fanout>>>);
    impl Actor for Recorder {
        type Context = Context<Self>;
    }
    impl Handler<Fanout> for Recorder {
        type Result = ();
        fn handle(&mut self, msg: Fanout, _: &mut Context<Self>) {
            self.0.lock().unwrap().push(msg);
        }
    }

    fn market() -> Market {
        Market {
            model: ModelConfig {
                symbols: default_symbols(),
                seed: Some(3),
                history: 10,
                daily_limit: Some(0.1),
            },
            tick: Duration::from_secs(3600),
        }
    }

    #[actix::test]
    async fn one_frame_per_watched_group_per_tick() {
        let seen = Arc::new(Mutex::new(Vec::new()));
        let hub = Recorder(seen.clone()).start();
        let ticker = Ticker::new(market(), hub.clone().recipient()).start();
        let watch = |group: &str, watched| Watch {
            group: Arc::from(group),
            watched,
        };
        ticker.send(Advance).await.unwrap();
        // Make sure anything sent reached the recorder before looking.
        let settle = || async {
            hub.send(Fanout {
                group: Arc::from("-"),
                frame: Default::default(),
            })
            .await
            .unwrap();
            let mut seen = seen.lock().unwrap();
            let groups: Vec<String> = seen
                .drain(..)
                .map(|f| f.group.to_string())
                .filter(|g| g != "-")
                .collect();
            groups
        };
        assert!(
            settle().await.is_empty(),
            "nothing is sent while nobody watches"
        );
        ticker.send(watch("stock", true)).await.unwrap();
        ticker.send(watch("stock.600519", true)).await.unwrap();
        ticker.send(watch(CLASSIC_FEED, true)).await.unwrap();
        assert!(ticker.send(IsRunning).await.unwrap());
        ticker.send(Advance).await.unwrap();
        let mut groups = settle().await;
        groups.sort();
        assert_eq!(groups, [CLASSIC_FEED, "stock", "stock.600519"]);
        ticker.send(watch("stock", false)).await.unwrap();
        ticker.send(watch(CLASSIC_FEED, false)).await.unwrap();
        ticker.send(Advance).await.unwrap();
        assert_eq!(settle().await, ["stock.600519"]);
        ticker.send(watch("stock.600519", false)).await.unwrap();
        assert!(!ticker.send(IsRunning).await.unwrap());
    }
}
