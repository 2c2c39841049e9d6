//! The simulated market behind the ticker: a seeded random walk per symbol.
//!
//! Each tick, every price takes one step of geometric Brownian motion with the symbol's
//! own drift and volatility (volatility per tick is set so that a tick feels like a minute
//! of trading: lively on a chart, never a 50% jump), is rounded to cents, kept at or above
//! 0.01 and within the daily limit (+-10% of the open, as on A-share markets). With a seed
//! the sequence of prices is the same on every run. Pure: no actors, no clock.
//!
//! In cluster mode the market is shared: the leading node's ticker publishes a
//! [`MarketState`] each tick (and saves it in Redis), the other nodes [`Model::restore`]
//! it, and a node that takes the lead continues from the saved one. A state comes from
//! Redis, so it is checked in full before any of it is used.

use std::collections::VecDeque;
use std::str::FromStr;
use std::sync::Arc;

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use serde::{Deserialize, Serialize};

use crate::protocol::Quote;

/// A listed symbol, as given on the command line: `CODE:NAME:OPEN`.
#[derive(Debug, Clone, PartialEq)]
pub struct Symbol {
    pub code: Arc<str>,
    pub name: Arc<str>,
    pub open: f64,
}

impl FromStr for Symbol {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        let mut parts = s.splitn(3, ':');
        let (Some(code), Some(name), Some(open)) = (parts.next(), parts.next(), parts.next())
        else {
            return Err(format!("expected CODE:NAME:OPEN, got {s:?}"));
        };
        let open: f64 = open
            .trim()
            .parse()
            .map_err(|_| format!("opening price of {code} is not a number: {open:?}"))?;
        if !(0.01..=1_000_000.0).contains(&open) {
            return Err(format!("opening price of {code} must be in 0.01..=1000000"));
        }
        let code = code.trim();
        if code.is_empty()
            || !crate::protocol::valid_group(&format!("stock.{code}"))
            || code.contains('.')
        {
            return Err(format!(
                "symbol code {code:?} must be 1 to 58 of A-Z a-z 0-9 _ : -"
            ));
        }
        Ok(Symbol {
            code: Arc::from(code),
            name: Arc::from(name.trim()),
            open: round2(open),
        })
    }
}

/// The six symbols a fresh hub lists.
pub fn default_symbols() -> Vec<Symbol> {
    [
        ("600519", "贵州茅台", 1688.00),
        ("000001", "平安银行", 11.52),
        ("300750", "宁德时代", 198.60),
        ("601318", "中国平安", 45.30),
        ("000858", "五粮液", 142.75),
        ("002594", "比亚迪", 251.40),
    ]
    .into_iter()
    .map(|(code, name, open)| Symbol {
        code: Arc::from(code),
        name: Arc::from(name),
        open,
    })
    .collect()
}

/// Rounds to cents.
pub fn round2(x: f64) -> f64 {
    (x * 100.0).round() / 100.0
}

/// How the market moves.
#[derive(Debug, Clone)]
pub struct ModelConfig {
    pub symbols: Vec<Symbol>,
    /// Seeds the random walk; `None` seeds from the OS.
    pub seed: Option<u64>,
    /// Quotes kept per symbol for `history`.
    pub history: usize,
    /// Largest move from the open, as a fraction (0.10 = +-10%); `None` for no limit.
    pub daily_limit: Option<f64>,
}

/// The market after a tick, as published and saved in cluster mode: everything a node
/// needs to show it (quotes, snapshots, `history`) and to continue it from there.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct MarketState {
    /// The tick's time, in ms since the epoch (every quote's `ts`).
    pub ts: u64,
    /// One entry per listed symbol, in the configured order.
    pub symbols: Vec<SymbolState>,
}

/// One symbol in a [`MarketState`]; the price and the change follow from `exact` and
/// `open`, as in [`Model::step`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SymbolState {
    pub code: String,
    pub open: f64,
    /// The price shown, as the leader rounded it (so that every node shows the same to
    /// the cent, however the JSON of `exact` is read back).
    pub price: f64,
    /// The unrounded price, from which the walk goes on.
    pub exact: f64,
    pub high: f64,
    pub low: f64,
    pub volume: u64,
    pub turnover: f64,
    /// The walk's own parameters, so that a new leader continues the same walk (with no
    /// `--seed`, each node draws its own).
    pub drift: f64,
    pub vol: f64,
}

/// Why a [`MarketState`] was refused: it is not this market's, or not a market at all.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum InvalidState {
    #[error("not a market state: {0}")]
    Json(String),
    #[error("it lists other symbols than this node's")]
    OtherSymbols,
    #[error("{0}: {1}")]
    Symbol(String, &'static str),
    #[error("its time is more than a day ahead of this node's clock")]
    Future,
}

/// Largest log-drift per tick and volatility a state may carry (the model draws them
/// well within these).
const MAX_DRIFT: f64 = 0.01;
const MAX_VOL: f64 = 0.1;

struct Walk {
    /// Unrounded price, so rounding to cents does not bias the walk.
    exact: f64,
    /// Log-drift per tick.
    drift: f64,
    /// Standard deviation of the log-return per tick.
    vol: f64,
    history: VecDeque<Quote>,
}

/// The market: one walk per symbol, in the configured order.
pub struct Model {
    rng: StdRng,
    quotes: Vec<Quote>,
    walks: Vec<Walk>,
    history: usize,
    daily_limit: Option<f64>,
}

impl Model {
    pub fn new(config: &ModelConfig, ts: u64) -> Self {
        let mut rng = match config.seed {
            Some(seed) => StdRng::seed_from_u64(seed),
            None => StdRng::from_entropy(),
        };
        let history = config.history.max(1);
        let mut quotes = Vec::with_capacity(config.symbols.len());
        let mut walks = Vec::with_capacity(config.symbols.len());
        for s in &config.symbols {
            let quote = Quote {
                symbol: s.code.clone(),
                name: s.name.clone(),
                open: s.open,
                price: s.open,
                change: 0.0,
                change_pct: 0.0,
                high: s.open,
                low: s.open,
                volume: 0,
                turnover: 0.0,
                ts,
            };
            let mut ring = VecDeque::with_capacity(history);
            ring.push_back(quote.clone());
            walks.push(Walk {
                exact: s.open,
                drift: rng.gen_range(-0.0002..0.0002),
                vol: rng.gen_range(0.0008..0.0025),
                history: ring,
            });
            quotes.push(quote);
        }
        Model {
            rng,
            quotes,
            walks,
            history,
            daily_limit: config.daily_limit,
        }
    }

    /// The latest quote of every symbol.
    pub fn quotes(&self) -> &[Quote] {
        &self.quotes
    }

    /// The time of the latest tick (of the opening, before any).
    pub fn ts(&self) -> u64 {
        self.quotes.first().map_or(0, |q| q.ts)
    }

    /// The market as it stands, to publish and save (cluster mode).
    pub fn state(&self) -> MarketState {
        MarketState {
            ts: self.ts(),
            symbols: self
                .quotes
                .iter()
                .zip(&self.walks)
                .map(|(q, w)| SymbolState {
                    code: q.symbol.to_string(),
                    open: q.open,
                    price: q.price,
                    exact: w.exact,
                    high: q.high,
                    low: q.low,
                    volume: q.volume,
                    turnover: q.turnover,
                    drift: w.drift,
                    vol: w.vol,
                })
                .collect(),
        }
    }

    /// Parses and [`restore`](Model::restore)s a state as it comes from Redis.
    pub fn restore_json(&mut self, json: &str) -> Result<(), InvalidState> {
        let state: MarketState =
            serde_json::from_str(json).map_err(|e| InvalidState::Json(e.to_string()))?;
        self.restore(&state)
    }

    /// Takes `state` as the current market (a tick the leader published, or the state a
    /// new leader continues from), and keeps its quotes in `history`. All or nothing: the
    /// state must list this model's symbols in its order, with the same opens, and
    /// prices that this model could have reached; otherwise nothing changes.
    pub fn restore(&mut self, state: &MarketState) -> Result<(), InvalidState> {
        // A far-future time would freeze the market's clock (each tick goes one ms past
        // the last) or overflow it.
        if state.ts > crate::protocol::now_ms().saturating_add(86_400_000) {
            return Err(InvalidState::Future);
        }
        if state.symbols.len() != self.quotes.len()
            || state
                .symbols
                .iter()
                .zip(&self.quotes)
                .any(|(s, q)| s.code != *q.symbol)
        {
            return Err(InvalidState::OtherSymbols);
        }
        for (s, q) in state.symbols.iter().zip(&self.quotes) {
            self.check(s, q.open)
                .map_err(|why| InvalidState::Symbol(s.code.clone(), why))?;
        }
        for ((s, q), w) in state
            .symbols
            .iter()
            .zip(self.quotes.iter_mut())
            .zip(self.walks.iter_mut())
        {
            w.exact = s.exact;
            w.drift = s.drift;
            w.vol = s.vol;
            let price = s.price;
            q.price = price;
            q.change = round2(price - q.open);
            q.change_pct = round2((price - q.open) / q.open * 100.0);
            q.high = s.high;
            q.low = s.low;
            q.volume = s.volume;
            q.turnover = s.turnover;
            q.ts = state.ts;
            // History stays ordered by time: a state older than what is kept (the
            // opening quote of a node that started after it) replaces the newer ones.
            while w.history.back().is_some_and(|h| h.ts >= state.ts) {
                w.history.pop_back();
            }
            if w.history.len() == self.history {
                w.history.pop_front();
            }
            w.history.push_back(q.clone());
        }
        Ok(())
    }

    /// Forgets every kept quote but the latest (a node's own opening, which in cluster mode
    /// is no part of the shared market's history).
    pub fn keep_latest_only(&mut self) {
        for w in &mut self.walks {
            let keep = w.history.len().saturating_sub(1);
            w.history.drain(..keep);
        }
    }

    /// Whether `s` is a state this model could be in, for a symbol opened at `open`.
    fn check(&self, s: &SymbolState, open: f64) -> Result<(), &'static str> {
        let finite = [
            s.open, s.price, s.exact, s.high, s.low, s.turnover, s.drift, s.vol,
        ]
        .iter()
        .all(|x| x.is_finite());
        if !finite {
            return Err("a number that is not finite");
        }
        if (s.open - open).abs() > 0.001 {
            return Err("another opening price (another day's market?)");
        }
        let (min, max) = match self.daily_limit {
            Some(limit) => (open * (1.0 - limit), open * (1.0 + limit)),
            None => (0.01, f64::MAX),
        };
        // A hair of slack: the bounds are computed again here, maybe not to the same bit.
        let slack = 1e-9 * max.min(1e12);
        if !(min.max(0.01) - slack..=max + slack).contains(&s.exact) {
            return Err("a price outside the daily limit");
        }
        let price = s.price;
        if price != round2(price) || (price - round2(s.exact).max(0.01)).abs() > 0.011 {
            return Err("a price that is not the walk's, in cents");
        }
        if !(s.low >= 0.01 && s.low <= price && price <= s.high && s.high <= round2(max) + 0.01) {
            return Err("a high or low that does not fit the price");
        }
        if s.turnover < 0.0 {
            return Err("a negative turnover");
        }
        if s.drift.abs() > MAX_DRIFT || !(s.vol > 0.0 && s.vol <= MAX_VOL) {
            return Err("a drift or volatility no walk has");
        }
        Ok(())
    }

    /// Index of a symbol by code.
    pub fn position(&self, code: &str) -> Option<usize> {
        self.quotes.iter().position(|q| &*q.symbol == code)
    }

    /// Up to `limit` most recent quotes of a symbol with a `ts` before `before` (all kept
    /// ones for `None`), oldest first.
    pub fn history(
        &self,
        index: usize,
        limit: usize,
        before: Option<u64>,
    ) -> impl Iterator<Item = &Quote> {
        let ring = &self.walks[index].history;
        let end = before.map_or(ring.len(), |b| ring.partition_point(|q| q.ts < b));
        ring.range(end.saturating_sub(limit)..end)
    }

    /// Advances every symbol one tick.
    pub fn step(&mut self, ts: u64) {
        for (q, w) in self.quotes.iter_mut().zip(self.walks.iter_mut()) {
            let z = standard_normal(&mut self.rng);
            let r = w.drift - w.vol * w.vol / 2.0 + w.vol * z;
            let mut next = w.exact * r.exp();
            if let Some(limit) = self.daily_limit {
                next = next.clamp(q.open * (1.0 - limit), q.open * (1.0 + limit));
            }
            w.exact = next.max(0.01);
            let price = round2(w.exact).max(0.01);
            let volume = self.rng.gen_range(1..=500u64) * 100;
            q.price = price;
            q.change = round2(price - q.open);
            q.change_pct = round2((price - q.open) / q.open * 100.0);
            q.high = q.high.max(price);
            q.low = q.low.min(price);
            q.volume = volume;
            q.turnover = round2(q.turnover + price * volume as f64);
            q.ts = ts;
            if w.history.len() == self.history {
                w.history.pop_front();
            }
            w.history.push_back(q.clone());
        }
    }

    /// The classic feed's six numbers: each of the first six symbols (cycling if there
    /// are fewer) placed within its +-10% band around the open, as a value in
    /// [0.01, 1.00] with two decimals: 0.50 is the open, 1.00 the upper limit.
    pub fn classic_six(&self) -> [f64; 6] {
        let mut out = [0.5; 6];
        if self.quotes.is_empty() {
            return out;
        }
        for (i, v) in out.iter_mut().enumerate() {
            let q = &self.quotes[i % self.quotes.len()];
            let band = (q.price / q.open - 0.9) / 0.2;
            *v = round2(band.clamp(0.01, 1.0));
        }
        out
    }
}

/// Box-Muller; avoids pulling in rand_distr for one distribution.
fn standard_normal(rng: &mut StdRng) -> f64 {
    let u1: f64 = rng.gen_range(f64::EPSILON..1.0);
    let u2: f64 = rng.gen();
    (-2.0 * u1.ln()).sqrt() * (std::f64::consts::TAU * u2).cos()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(seed: u64) -> ModelConfig {
        ModelConfig {
            symbols: default_symbols(),
            seed: Some(seed),
            history: 300,
            daily_limit: Some(0.10),
        }
    }

    fn prices(model: &Model) -> Vec<f64> {
        model.quotes().iter().map(|q| q.price).collect()
    }

    #[test]
    fn same_seed_same_prices() {
        let (mut a, mut b, mut c) = (
            Model::new(&config(7), 0),
            Model::new(&config(7), 99),
            Model::new(&config(8), 0),
        );
        let mut differs = false;
        for t in 0..200 {
            a.step(t);
            b.step(t + 5);
            c.step(t);
            assert_eq!(prices(&a), prices(&b));
            differs |= prices(&a) != prices(&c);
        }
        assert!(differs, "a different seed should give a different walk");
    }

    #[test]
    fn looks_like_a_market() {
        let mut m = Model::new(&config(1), 0);
        let mut moved = false;
        for t in 0..5000 {
            let before = prices(&m);
            m.step(t);
            for (q, p) in m.quotes().iter().zip(before) {
                assert!(q.price >= 0.01);
                assert!(
                    (q.price / p - 1.0).abs() < 0.05,
                    "{} jumped {p} -> {}",
                    q.symbol,
                    q.price
                );
                assert!(
                    q.price <= round2(q.open * 1.1) + 0.01
                        && q.price >= round2(q.open * 0.9) - 0.01
                );
                assert_eq!(q.price, round2(q.price));
                assert!(q.low <= q.price && q.price <= q.high);
                assert!(q.volume >= 100 && q.volume % 100 == 0);
                moved |= q.price != q.open;
            }
        }
        assert!(moved);
        let six = m.classic_six();
        assert!(six
            .iter()
            .all(|v| (0.01..=1.0).contains(v) && *v == round2(*v)));
    }

    #[test]
    fn history_is_bounded_and_ordered() {
        let mut m = Model::new(
            &ModelConfig {
                history: 5,
                ..config(3)
            },
            0,
        );
        assert_eq!(m.history(0, 100, None).count(), 1);
        for t in 1..=20 {
            m.step(t);
        }
        let ts =
            |limit, before| -> Vec<u64> { m.history(0, limit, before).map(|q| q.ts).collect() };
        assert_eq!(ts(100, None), [16, 17, 18, 19, 20]);
        assert_eq!(ts(2, None), [19, 20]);
        // Paging back: the newest `limit` before a timestamp, oldest first.
        assert_eq!(ts(2, Some(19)), [17, 18]);
        assert_eq!(ts(2, Some(17)), [16]);
        assert_eq!(ts(2, Some(16)), Vec::<u64>::new());
        assert_eq!(ts(100, Some(1000)), [16, 17, 18, 19, 20]);
    }

    /// A state taken from one model makes another the same market: the same quotes, the
    /// same walk, and the quote in its history.
    #[test]
    fn a_state_carries_the_market_to_another_model() {
        let mut leader = Model::new(&config(1), 0);
        for t in 1..=50 {
            leader.step(t);
        }
        let state = leader.state();
        let json = serde_json::to_string(&state).unwrap();
        // Another node, started later: its opening quote (ts 100) is newer than the state.
        let mut follower = Model::new(&config(2), 100);
        follower.restore_json(&json).unwrap();
        assert_eq!(follower.quotes(), leader.quotes());
        assert_eq!(follower.state().symbols[0].price, state.symbols[0].price);
        let ts: Vec<u64> = follower.history(0, 10, None).map(|q| q.ts).collect();
        assert_eq!(ts, [50], "the newer opening quote gave way");
        // The next tick comes after it, and its state continues there.
        let mut next = leader.state();
        next.ts = 51;
        follower.restore(&next).unwrap();
        follower.restore(&next).unwrap();
        let ts: Vec<u64> = follower.history(0, 10, None).map(|q| q.ts).collect();
        assert_eq!(ts, [50, 51], "the same state twice is kept once");
        follower.step(52);
        for (q, was) in follower.quotes().iter().zip(leader.quotes()) {
            assert_eq!(q.open, was.open);
            assert!((q.price / was.price - 1.0).abs() < 0.05);
            assert!(q.turnover > was.turnover);
        }
    }

    /// A state that is not this market's, or no market at all, changes nothing.
    #[test]
    fn a_foreign_or_broken_state_is_refused_whole() {
        let mut leader = Model::new(&config(1), 0);
        for t in 1..=20 {
            leader.step(t);
        }
        let good = leader.state();
        type Breaks = fn(&mut MarketState);
        let broken: [(&str, Breaks); 12] = [
            ("the end of time", |s| s.ts = u64::MAX),
            ("fewer symbols", |s| {
                s.symbols.pop();
            }),
            ("another symbol", |s| s.symbols[1].code = "AAPL".into()),
            ("another open", |s| s.symbols[0].open += 1.0),
            ("past the limit", |s| {
                s.symbols[0].exact = s.symbols[0].open * 1.2
            }),
            ("another price", |s| s.symbols[4].price += 1.0),
            ("below a cent", |s| s.symbols[0].exact = 0.0),
            ("not a number", |s| s.symbols[2].exact = f64::NAN),
            ("high below the price", |s| s.symbols[0].high = 0.01),
            ("negative turnover", |s| s.symbols[3].turnover = -1.0),
            ("no volatility", |s| s.symbols[0].vol = 0.0),
            ("a wild drift", |s| s.symbols[5].drift = 1.0),
        ];
        let mut follower = Model::new(&config(2), 0);
        let before = (follower.state(), follower.history(0, 10, None).count());
        for (what, breaks) in broken {
            let mut state = good.clone();
            breaks(&mut state);
            assert!(follower.restore(&state).is_err(), "{what}");
            // One bad symbol after good ones must not leave those applied.
            assert_eq!(
                (follower.state(), follower.history(0, 10, None).count()),
                before,
                "{what}"
            );
        }
        for json in [
            "",
            "null",
            "[1]",
            "{\"ts\":1}",
            "{\"ts\":-1,\"symbols\":[]}",
        ] {
            assert!(
                matches!(follower.restore_json(json), Err(InvalidState::Json(_))),
                "{json}"
            );
        }
        follower.restore(&good).unwrap();
    }

    #[test]
    fn parses_symbols() {
        let s: Symbol = "AAPL:Apple:189.5".parse().unwrap();
        assert_eq!((&*s.code, &*s.name, s.open), ("AAPL", "Apple", 189.5));
        assert!("AAPL:Apple".parse::<Symbol>().is_err());
        assert!("AAPL:Apple:x".parse::<Symbol>().is_err());
        assert!("AA PL:Apple:1".parse::<Symbol>().is_err());
        assert!("A.B:Apple:1".parse::<Symbol>().is_err());
        assert!("AAPL:Apple:0".parse::<Symbol>().is_err());
    }
}
