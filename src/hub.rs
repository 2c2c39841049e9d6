//! The `Hub` actor: one per process, the only owner of the user pool and the groups.
//!
//! Sessions send it one message per intent (the structs below, named as verbs) and get
//! every reply and event through their [`Outbox`], so replies and deliveries reach a
//! client in the order the hub produced them. Each outgoing event is serialized once;
//! every recipient gets the same shared bytes.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use actix::prelude::*;
use bytestring::ByteString;
use serde_json::Value;

use crate::auth::Grant;
use crate::error::{CloseReason, ErrorCode, ReplyError};
use crate::outbox::Outbox;
use crate::pool::{GroupChange, Pool, SessionId};
use crate::protocol::{
    encode, is_stock_group, legacy_groups, now_ms, valid_group, Event, Kind, RequestId,
};
use crate::ticker::{self, Market, Ticker};

/// Who sent a command, and the `id` its reply echoes.
#[derive(Debug, Clone)]
pub struct Caller {
    pub session: SessionId,
    pub id: Option<RequestId>,
}

/// A new session; it may send commands right after this.
#[derive(Message)]
#[rtype(result = "()")]
pub struct Connect {
    pub session: SessionId,
    pub outbox: Arc<Outbox>,
}

/// A session ended; it leaves its user and its groups.
#[derive(Message)]
#[rtype(result = "()")]
pub struct Disconnect {
    pub session: SessionId,
}

/// `join`; `classic` is the `{"name": ...}` login, whose name prefix lists groups.
#[derive(Message)]
#[rtype(result = "()")]
pub struct Join {
    pub caller: Caller,
    pub name: String,
    pub classic: bool,
    /// What the session's verified token allows (everything without auth).
    pub grant: Grant,
}

/// `direct`: to every session of one user.
#[derive(Message)]
#[rtype(result = "()")]
pub struct SendDirect {
    pub caller: Caller,
    pub to: String,
    pub body: Value,
}

/// `broadcast`: to every joined session.
#[derive(Message)]
#[rtype(result = "()")]
pub struct Broadcast {
    pub caller: Caller,
    pub body: Value,
}

/// `subscribe`.
#[derive(Message)]
#[rtype(result = "()")]
pub struct Subscribe {
    pub caller: Caller,
    pub group: String,
    pub presence: bool,
}

/// `unsubscribe`.
#[derive(Message)]
#[rtype(result = "()")]
pub struct Unsubscribe {
    pub caller: Caller,
    pub group: String,
}

/// `publish`: to every member session of a group.
#[derive(Message)]
#[rtype(result = "()")]
pub struct Publish {
    pub caller: Caller,
    pub group: String,
    pub body: Value,
}

/// `users`: the online users, or a group's.
#[derive(Message)]
#[rtype(result = "()")]
pub struct ListUsers {
    pub caller: Caller,
    pub group: Option<String>,
}

/// The classic text `stock`: the six-number feed.
#[derive(Message)]
#[rtype(result = "()")]
pub struct SubscribeClassicFeed {
    pub session: SessionId,
}

/// `history`: answered by the ticker.
#[derive(Message)]
#[rtype(result = "()")]
pub struct ShowHistory {
    pub caller: Caller,
    pub symbol: String,
    pub limit: Option<usize>,
}

/// Frames the ticker made once for every member of one of its groups.
#[derive(Message)]
#[rtype(result = "()")]
pub struct Fanout {
    pub group: Arc<str>,
    pub frame: ByteString,
}

/// The hub is shutting down: close every session with 1001 and refuse new ones.
#[derive(Message)]
#[rtype(result = "()")]
pub struct Shutdown;

/// Asks for the ticker the hub started, if any (tests drive it with [`ticker::Advance`]).
#[derive(Message)]
#[rtype(result = "Option<Addr<Ticker>>")]
pub struct GetTicker;

/// Asks for the hub's counters.
#[derive(Message)]
#[rtype(result = "Stats")]
pub struct GetStats;

/// The hub's counters.
#[derive(Debug, Clone, Copy, PartialEq, Eq, MessageResponse)]
pub struct Stats {
    pub sessions: usize,
    pub users: usize,
    pub groups: usize,
    /// Bytes waiting in all outboxes.
    pub queued_bytes: usize,
    /// Sessions closed because their outbox passed its bound.
    pub slow_consumers: usize,
}

/// What the hub is built with.
#[derive(Debug, Clone)]
pub struct HubConfig {
    /// Most groups one session may be in.
    pub max_groups: usize,
    /// The simulated market; `None` runs no ticker (stock groups then answer `not_found`).
    pub market: Option<Market>,
}

/// The hub actor.
pub struct Hub {
    pool: Pool,
    market: Option<Market>,
    /// Started with the hub, on the same thread, when there is a market.
    ticker: Option<Addr<Ticker>>,
    /// Bytes queued in every outbox, shared with the outboxes that add to it.
    queued: Arc<AtomicUsize>,
    slow_consumers: usize,
    /// Sessions whose outbox overflowed during the current handler; reused to avoid
    /// allocating per fan-out.
    slow: Vec<SessionId>,
    /// Set by [`Shutdown`]: sessions that connect later are closed at once.
    shutting_down: bool,
}

impl Hub {
    pub fn new(config: HubConfig, queued: Arc<AtomicUsize>) -> Self {
        Hub {
            pool: Pool::new(config.max_groups),
            market: config.market,
            ticker: None,
            queued,
            slow_consumers: 0,
            slow: Vec::new(),
            shutting_down: false,
        }
    }

    /// Sends one frame to one session (a reply).
    fn send_to(&mut self, session: SessionId, frame: &ByteString) {
        if let Some(entry) = self.pool.session(session) {
            if !entry.outbox.push(frame) {
                self.slow.push(session);
            }
        }
    }

    fn reply(&mut self, caller: &Caller, event: &Event<'_>) {
        let frame = encode(event);
        self.send_to(caller.session, &frame);
    }

    fn fail(&mut self, caller: &Caller, err: ReplyError) {
        let frame = encode(&Event::Error {
            id: caller.id.as_ref(),
            code: err.code,
            message: &err.message,
        });
        self.send_to(caller.session, &frame);
    }

    /// Delivers a frame to every session in `targets`; returns how many took it. Sessions
    /// whose outbox overflowed are noted in `slow` and removed by [`Hub::drop_slow`].
    fn deliver<'a>(
        targets: impl Iterator<Item = (SessionId, &'a Arc<Outbox>)>,
        frame: &ByteString,
        slow: &mut Vec<SessionId>,
    ) -> usize {
        let mut delivered = 0;
        for (id, outbox) in targets {
            if outbox.push(frame) {
                delivered += 1;
            } else {
                slow.push(id);
            }
        }
        delivered
    }

    /// Removes the sessions that fell behind; their outboxes already close them.
    fn drop_slow(&mut self) {
        while let Some(id) = self.slow.pop() {
            if let Some(entry) = self.pool.session(id) {
                if entry.outbox.close_reason() == Some(CloseReason::SlowConsumer) {
                    log::info!("session {id} closed: slow consumer");
                    self.slow_consumers += 1;
                }
                entry.outbox.close(CloseReason::SlowConsumer);
                let changes = self.pool.disconnect(id);
                self.announce(changes);
            }
        }
    }

    /// Tells presence watchers and the ticker what membership changes did.
    fn announce(&mut self, changes: Vec<GroupChange>) {
        for change in changes {
            if let Some((event, name)) = &change.presence {
                if let Some(group) = self.pool.group(&change.group) {
                    let frame = encode(&Event::Presence {
                        group: &change.group,
                        event: *event,
                        name,
                    });
                    Self::deliver(group.watchers(), &frame, &mut self.slow);
                }
            }
            if change.sessions <= 1 && ticker::is_ticker_group(&change.group) {
                if let Some(t) = &self.ticker {
                    t.do_send(ticker::Watch {
                        group: change.group.clone(),
                        watched: change.sessions == 1,
                    });
                }
            }
        }
    }

    fn joined(&mut self, caller: &Caller) -> Option<Arc<str>> {
        match self.pool.joined_name(caller.session) {
            Ok(name) => Some(name),
            Err(e) => {
                self.fail(caller, e);
                None
            }
        }
    }

    /// Checks a stock group against the market's symbols.
    fn check_stock_group(&self, group: &str) -> Result<(), ReplyError> {
        let known = self.market.as_ref().is_some_and(|m| m.has_group(group));
        if known {
            Ok(())
        } else {
            Err(ReplyError::new(
                ErrorCode::NotFound,
                format!("no such stock group: {group}"),
            ))
        }
    }

    fn subscribe(
        &mut self,
        caller: &Caller,
        group: &str,
        presence: bool,
    ) -> Result<(), ReplyError> {
        if is_stock_group(group) {
            self.check_stock_group(group)?;
        }
        let (change, members) = self.pool.subscribe(caller.session, group, presence)?;
        self.reply(
            caller,
            &Event::Subscribed {
                id: caller.id.as_ref(),
                group,
                members,
            },
        );
        self.after_subscribe(caller.session, change);
        Ok(())
    }

    fn after_subscribe(&mut self, session: SessionId, change: GroupChange) {
        let group = change.group.clone();
        self.announce(vec![change]);
        if let (Some(t), Some(entry)) = (&self.ticker, self.pool.session(session)) {
            if ticker::is_ticker_group(&group) {
                t.do_send(ticker::Snapshot {
                    group,
                    outbox: entry.outbox.clone(),
                });
            }
        }
    }
}

impl Actor for Hub {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Context<Self>) {
        // Mailboxes of actors are unbounded for `do_send`; the hub's capacity only matters
        // for `send`, which sessions do not use.
        if let Some(market) = self.market.clone() {
            let hub = ctx.address().recipient();
            self.ticker = Some(Ticker::new(market, hub).start());
        }
    }
}

impl Handler<Connect> for Hub {
    type Result = ();
    fn handle(&mut self, msg: Connect, _: &mut Context<Self>) {
        if self.shutting_down {
            msg.outbox.close(CloseReason::Shutdown);
        } else {
            self.pool.connect(msg.session, msg.outbox);
        }
    }
}

impl Handler<Shutdown> for Hub {
    type Result = ();
    fn handle(&mut self, _: Shutdown, _: &mut Context<Self>) {
        self.shutting_down = true;
        let n = self.pool.close_all(CloseReason::Shutdown);
        log::info!("shutting down: closing {n} sessions with 1001");
    }
}

impl Handler<Disconnect> for Hub {
    type Result = ();
    fn handle(&mut self, msg: Disconnect, _: &mut Context<Self>) {
        let changes = self.pool.disconnect(msg.session);
        self.announce(changes);
        self.drop_slow();
    }
}

impl Handler<Join> for Hub {
    type Result = ();
    fn handle(&mut self, msg: Join, _: &mut Context<Self>) {
        let caller = &msg.caller;
        match self.pool.join(caller.session, &msg.name, msg.grant) {
            Ok(name) => {
                self.reply(
                    caller,
                    &Event::Joined {
                        id: caller.id.as_ref(),
                        name: &name,
                        session: caller.session,
                    },
                );
                if msg.classic {
                    for group in legacy_groups(&msg.name) {
                        // Errors here (too many groups) are not the classic client's to handle.
                        if let Ok((change, _)) = self.pool.subscribe(caller.session, group, false) {
                            self.announce(vec![change]);
                        }
                    }
                }
            }
            Err(e) => self.fail(caller, e),
        }
        self.drop_slow();
    }
}

impl Handler<SendDirect> for Hub {
    type Result = ();
    fn handle(&mut self, msg: SendDirect, _: &mut Context<Self>) {
        let caller = &msg.caller;
        let Some(from) = self.joined(caller) else {
            return self.drop_slow();
        };
        let Some(targets) = self.pool.user_outboxes(&msg.to) else {
            self.fail(
                caller,
                ReplyError::new(ErrorCode::NotFound, format!("{} is not online", msg.to)),
            );
            return self.drop_slow();
        };
        let frame = encode(&Event::Message {
            kind: Kind::Direct,
            from: &from,
            to: Some(&msg.to),
            group: None,
            body: &msg.body,
            ts: now_ms(),
        });
        let delivered = Self::deliver(targets, &frame, &mut self.slow);
        self.reply(
            caller,
            &Event::Ack {
                id: caller.id.as_ref(),
                delivered,
            },
        );
        self.drop_slow();
    }
}

impl Handler<Broadcast> for Hub {
    type Result = ();
    fn handle(&mut self, msg: Broadcast, _: &mut Context<Self>) {
        let caller = &msg.caller;
        if let Some(from) = self.joined(caller) {
            let frame = encode(&Event::Message {
                kind: Kind::Broadcast,
                from: &from,
                to: None,
                group: None,
                body: &msg.body,
                ts: now_ms(),
            });
            let delivered = Self::deliver(self.pool.joined_outboxes(), &frame, &mut self.slow);
            self.reply(
                caller,
                &Event::Ack {
                    id: caller.id.as_ref(),
                    delivered,
                },
            );
        }
        self.drop_slow();
    }
}

impl Handler<Subscribe> for Hub {
    type Result = ();
    fn handle(&mut self, msg: Subscribe, _: &mut Context<Self>) {
        if let Err(e) = self.subscribe(&msg.caller, &msg.group, msg.presence) {
            self.fail(&msg.caller, e);
        }
        self.drop_slow();
    }
}

impl Handler<Unsubscribe> for Hub {
    type Result = ();
    fn handle(&mut self, msg: Unsubscribe, _: &mut Context<Self>) {
        let caller = &msg.caller;
        if !valid_group(&msg.group) {
            self.fail(
                caller,
                ReplyError::new(ErrorCode::InvalidGroup, "not a valid group name"),
            );
        } else {
            // Leaving a group one is not in is not an error: after a reconnect a client
            // may not know what the hub still holds.
            if let Some(change) = self.pool.unsubscribe(caller.session, &msg.group) {
                self.announce(vec![change]);
            }
            self.reply(
                caller,
                &Event::Unsubscribed {
                    id: caller.id.as_ref(),
                    group: &msg.group,
                },
            );
        }
        self.drop_slow();
    }
}

impl Handler<Publish> for Hub {
    type Result = ();
    fn handle(&mut self, msg: Publish, _: &mut Context<Self>) {
        let caller = &msg.caller;
        let Some(from) = self.joined(caller) else {
            return self.drop_slow();
        };
        if !valid_group(&msg.group) {
            self.fail(
                caller,
                ReplyError::new(ErrorCode::InvalidGroup, "not a valid group name"),
            );
        } else if is_stock_group(&msg.group) {
            self.fail(
                caller,
                ReplyError::new(ErrorCode::Forbidden, "stock groups are read-only"),
            );
        } else if let Err(e) = self.pool.may_publish(caller.session, &msg.group) {
            self.fail(caller, e);
        } else {
            let delivered = match self.pool.group(&msg.group) {
                Some(group) => {
                    let frame = encode(&Event::Message {
                        kind: Kind::Group,
                        from: &from,
                        to: None,
                        group: Some(&msg.group),
                        body: &msg.body,
                        ts: now_ms(),
                    });
                    Self::deliver(group.outboxes(), &frame, &mut self.slow)
                }
                None => 0,
            };
            self.reply(
                caller,
                &Event::Ack {
                    id: caller.id.as_ref(),
                    delivered,
                },
            );
        }
        self.drop_slow();
    }
}

impl Handler<ListUsers> for Hub {
    type Result = ();
    fn handle(&mut self, msg: ListUsers, _: &mut Context<Self>) {
        let caller = &msg.caller;
        if self.joined(caller).is_some() {
            let frame = match msg.group.as_deref() {
                Some(g) if !valid_group(g) => {
                    self.fail(
                        caller,
                        ReplyError::new(ErrorCode::InvalidGroup, "not a valid group name"),
                    );
                    None
                }
                Some(g) => Some(encode(&Event::Users {
                    id: caller.id.as_ref(),
                    group: Some(g),
                    users: self
                        .pool
                        .group(g)
                        .map(|group| group.user_names())
                        .unwrap_or_default(),
                })),
                None => Some(encode(&Event::Users {
                    id: caller.id.as_ref(),
                    group: None,
                    users: self.pool.user_names(),
                })),
            };
            if let Some(frame) = frame {
                self.send_to(caller.session, &frame);
            }
        }
        self.drop_slow();
    }
}

impl Handler<SubscribeClassicFeed> for Hub {
    type Result = ();
    fn handle(&mut self, msg: SubscribeClassicFeed, _: &mut Context<Self>) {
        if self.ticker.is_none() {
            return;
        }
        match self
            .pool
            .subscribe_internal(msg.session, ticker::CLASSIC_FEED)
        {
            Ok((change, _)) => self.after_subscribe(msg.session, change),
            Err(e) => self.fail(
                &Caller {
                    session: msg.session,
                    id: None,
                },
                e,
            ),
        }
        self.drop_slow();
    }
}

impl Handler<ShowHistory> for Hub {
    type Result = ();
    fn handle(&mut self, msg: ShowHistory, _: &mut Context<Self>) {
        match (&self.ticker, self.pool.session(msg.caller.session)) {
            (Some(t), Some(entry)) => t.do_send(ticker::History {
                id: msg.caller.id,
                symbol: msg.symbol,
                limit: msg.limit,
                outbox: entry.outbox.clone(),
            }),
            (None, Some(_)) => {
                self.fail(
                    &msg.caller,
                    ReplyError::new(ErrorCode::NotFound, "this hub runs no ticker"),
                );
                self.drop_slow();
            }
            _ => {}
        }
    }
}

impl Handler<Fanout> for Hub {
    type Result = ();
    fn handle(&mut self, msg: Fanout, _: &mut Context<Self>) {
        if let Some(group) = self.pool.group(&msg.group) {
            Self::deliver(group.outboxes(), &msg.frame, &mut self.slow);
        }
        self.drop_slow();
    }
}

impl Handler<GetTicker> for Hub {
    type Result = Option<Addr<Ticker>>;
    fn handle(&mut self, _: GetTicker, _: &mut Context<Self>) -> Self::Result {
        self.ticker.clone()
    }
}

impl Handler<GetStats> for Hub {
    type Result = Stats;
    fn handle(&mut self, _: GetStats, _: &mut Context<Self>) -> Stats {
        let (sessions, users, groups) = self.pool.sizes();
        Stats {
            sessions,
            users,
            groups,
            queued_bytes: self.queued.load(Ordering::Relaxed),
            slow_consumers: self.slow_consumers,
        }
    }
}

#[cfg(test)]
mod tests;
