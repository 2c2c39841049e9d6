//! The `Hub` actor: one per process, the only owner of the user pool and the groups.
//!
//! Sessions send it one message per intent (the structs below, named as verbs) and get
//! every reply and event through their [`Outbox`], so replies and deliveries reach a
//! client in the order the hub produced them. Each outgoing event is serialized once;
//! every recipient gets the same shared bytes.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use actix::prelude::*;
use bytestring::ByteString;

use crate::error::{CloseReason, ErrorCode, ReplyError};
use crate::outbox::{Outbox, WakeBatch};
use crate::pool::{GroupChange, Pool, SessionId, SESSION_SETS};
use crate::protocol::{
    encode, is_stock_group, legacy_groups, normalize_name, now_ms, valid_group, Event, Kind,
    GROUP_RULE,
};
use crate::ticker::{self, Market, Ticker};

mod messages;
pub use messages::*;

/// Messages the hub's mailbox holds before sessions get `overloaded` for their commands.
pub const DEFAULT_MAILBOX: usize = 8192;

/// What the hub is built with.
#[derive(Debug, Clone)]
pub struct HubConfig {
    /// Most groups one session may be in.
    pub max_groups: usize,
    /// The simulated market; `None` runs no ticker (stock groups then answer `not_found`).
    pub market: Option<Market>,
    /// How often each session checks its client's liveness (`None`: never; unit tests).
    /// The hub paces this for every session with one timer instead of one per session.
    pub heartbeat: Option<Duration>,
    /// Messages the hub's mailbox holds before commands are shed (see
    /// [`DEFAULT_MAILBOX`]).
    pub mailbox: usize,
}

/// The pool keeps the sessions in this many sets by id; one set is told to check its
/// heartbeat each `heartbeat / HEARTBEAT_PHASES`, so the pings are spread out instead of
/// all going at once, and each beat visits only its own set.
const HEARTBEAT_PHASES: u64 = SESSION_SETS as u64;

/// The hub actor.
pub struct Hub {
    pool: Pool,
    market: Option<Market>,
    /// Started with the hub, on the same thread, when there is a market.
    ticker: Option<Addr<Ticker>>,
    /// The latest frame of each ticker group: the snapshot for new subscribers.
    snapshots: HashMap<Arc<str>, ByteString>,
    slow_consumers: usize,
    /// The refusals and wake-ups of the current handler's deliveries.
    fanout: Fanout,
    /// Set by [`Shutdown`]: sessions that connect later are closed at once.
    shutting_down: bool,
    /// [`HubConfig::heartbeat`]: every session's liveness check, paced from here.
    heartbeat: Option<Duration>,
    /// Which set of sessions checks its heartbeat next.
    heartbeat_phase: u64,
    mailbox: usize,
}

/// What the hub's deliveries need besides their targets, kept so that both buffers are
/// reused rather than allocated per fan-out.
#[derive(Default)]
struct Fanout {
    /// Sessions whose outbox refused a frame during the current handler (closed, or past
    /// its bound); emptied by [`Hub::drop_unreachable`] at the end of every handler.
    unreachable: Vec<SessionId>,
    /// The wake-ups of the current fan-out, handed to the sessions' threads in chunks.
    wakes: WakeBatch,
}

impl Fanout {
    /// Delivers a frame to every session in `targets`; returns how many took it. The
    /// others are noted in `unreachable`.
    fn deliver<'a>(
        &mut self,
        targets: impl Iterator<Item = (SessionId, &'a Arc<Outbox>)>,
        frame: &ByteString,
    ) -> usize {
        let mut delivered = 0;
        for (id, outbox) in targets {
            if outbox.push_batched(frame, &mut self.wakes) {
                delivered += 1;
            } else {
                self.unreachable.push(id);
            }
        }
        self.wakes.flush();
        delivered
    }
}

impl Hub {
    pub fn new(config: HubConfig) -> Self {
        Hub {
            pool: Pool::new(config.max_groups),
            market: config.market,
            ticker: None,
            snapshots: HashMap::new(),
            slow_consumers: 0,
            fanout: Fanout::default(),
            shutting_down: false,
            heartbeat: config.heartbeat,
            heartbeat_phase: 0,
            mailbox: config.mailbox,
        }
    }

    /// Tells one set of sessions to check their heartbeat (see [`HEARTBEAT_PHASES`]).
    fn beat(&mut self) {
        let phase = self.heartbeat_phase;
        self.heartbeat_phase = (phase + 1) % HEARTBEAT_PHASES;
        let wakes = &mut self.fanout.wakes;
        for outbox in self.pool.outboxes_of_set(phase as usize) {
            outbox.heartbeat(wakes);
        }
        wakes.flush();
    }

    /// Sends one frame to one session (a reply).
    fn send_to(&mut self, session: SessionId, frame: &ByteString) {
        if let Some(entry) = self.pool.session(session) {
            if !entry.outbox.push(frame) {
                self.fanout.unreachable.push(session);
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

    /// Removes the sessions whose outbox refused a frame: they are closing (the outbox
    /// tells the session why), and must leave their user and groups now.
    fn drop_unreachable(&mut self) {
        while let Some(id) = self.fanout.unreachable.pop() {
            self.remove(id);
        }
    }

    /// Removes one session from the pool and announces what that changed.
    fn remove(&mut self, id: SessionId) {
        let Some(entry) = self.pool.session(id) else {
            return;
        };
        if entry.outbox.close_reason() == Some(CloseReason::SlowConsumer) {
            log::info!("session {id} closed: slow consumer");
            self.slow_consumers += 1;
        }
        let changes = self.pool.disconnect(id);
        self.announce(changes);
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
                    self.fanout.deliver(group.watchers(), &frame);
                }
            }
            if (change.first || change.last) && ticker::is_ticker_group(&change.group) {
                if let Some(t) = &self.ticker {
                    t.do_send(ticker::Watch {
                        group: change.group.clone(),
                        watched: change.first,
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
        if !valid_group(group) {
            return Err(invalid_group());
        }
        if is_stock_group(group) {
            self.check_stock_group(group)?;
            if presence && self.limited(caller.session) {
                // A stock group is open to every token: its presence would show users
                // outside a limited token's groups.
                return Err(ReplyError::new(
                    ErrorCode::Forbidden,
                    "a token limited to groups gets no presence in stock groups",
                ));
            }
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

    /// Whether the session's token lists the groups it may use (see docs/SECURITY.md for
    /// what such a token sees).
    fn limited(&self, session: SessionId) -> bool {
        self.pool.grant(session).is_some_and(|g| g.is_limited())
    }

    /// Announces an arrival and, in a ticker group, sends the snapshot right behind the
    /// `subscribed` reply, so nothing of the feed can come between them.
    fn after_subscribe(&mut self, session: SessionId, change: GroupChange) {
        if let Some(frame) = self.snapshots.get(&change.group).cloned() {
            self.send_to(session, &frame);
        }
        self.announce(vec![change]);
    }
}

impl Actor for Hub {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Context<Self>) {
        ctx.set_mailbox_capacity(self.mailbox);
        if let Some(every) = self.heartbeat {
            let every = every / HEARTBEAT_PHASES as u32;
            ctx.run_interval(every, |hub, _| hub.beat());
        }
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
        let outboxes = self.pool.take_all();
        log::info!(
            "shutting down: closing {} sessions with 1001",
            outboxes.len()
        );
        for outbox in outboxes {
            outbox.close(CloseReason::Shutdown);
        }
        if let Some(t) = self.ticker.take() {
            t.do_send(ticker::Stop);
        }
    }
}

impl Handler<Relay> for Hub {
    type Result = ();
    fn handle(&mut self, msg: Relay, _: &mut Context<Self>) {
        if let Some(frame) = &msg.frame {
            self.send_to(msg.session, frame);
        }
        if let Some(reason) = msg.close {
            if let Some(entry) = self.pool.session(msg.session) {
                entry.outbox.close(reason);
            }
            self.remove(msg.session);
        }
        self.drop_unreachable();
    }
}

impl Handler<Disconnect> for Hub {
    type Result = ();
    fn handle(&mut self, msg: Disconnect, _: &mut Context<Self>) {
        self.remove(msg.session);
        self.drop_unreachable();
    }
}

impl Handler<Join> for Hub {
    type Result = ();
    fn handle(&mut self, msg: Join, _: &mut Context<Self>) {
        let caller = &msg.caller;
        match self.pool.join(caller.session, &msg.name, msg.grant) {
            Ok((name, changes)) => {
                self.reply(
                    caller,
                    &Event::Joined {
                        id: caller.id.as_ref(),
                        name: &name,
                        session: caller.session,
                    },
                );
                self.announce(changes);
                if msg.classic {
                    for group in legacy_groups(&msg.name) {
                        // Errors here (too many groups, a token that does not allow the
                        // group) are not the classic client's to handle: skip the group.
                        if let Ok((change, _)) = self.pool.subscribe(caller.session, group, false) {
                            self.announce(vec![change]);
                        }
                    }
                }
            }
            Err(e) => self.fail(caller, e),
        }
        self.drop_unreachable();
    }
}

impl Handler<SendDirect> for Hub {
    type Result = ();
    fn handle(&mut self, msg: SendDirect, _: &mut Context<Self>) {
        let caller = &msg.caller;
        if let Some(from) = self.joined(caller) {
            // Checked, so that an error never echoes more than a valid name, and in NFC,
            // as names are kept.
            let to = match normalize_name(&msg.to) {
                Ok(to) => to,
                Err(e) => {
                    self.fail(caller, e);
                    return self.drop_unreachable();
                }
            };
            let fanout = &mut self.fanout;
            let delivered = self.pool.user_outboxes(&to).map(|targets| {
                let frame = encode(&Event::Message {
                    kind: Kind::Direct,
                    from: &from,
                    to: Some(&to),
                    group: None,
                    body: &msg.body,
                    ts: now_ms(),
                });
                fanout.deliver(targets, &frame)
            });
            match delivered {
                Some(delivered) => self.reply(
                    caller,
                    &Event::Ack {
                        id: caller.id.as_ref(),
                        delivered,
                    },
                ),
                None => self.fail(
                    caller,
                    ReplyError::new(ErrorCode::NotFound, format!("{to} is not online")),
                ),
            }
        }
        self.drop_unreachable();
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
            let delivered = self.fanout.deliver(self.pool.joined_outboxes(), &frame);
            self.reply(
                caller,
                &Event::Ack {
                    id: caller.id.as_ref(),
                    delivered,
                },
            );
        }
        self.drop_unreachable();
    }
}

impl Handler<Subscribe> for Hub {
    type Result = ();
    fn handle(&mut self, msg: Subscribe, _: &mut Context<Self>) {
        if let Err(e) = self.subscribe(&msg.caller, &msg.group, msg.presence) {
            self.fail(&msg.caller, e);
        }
        self.drop_unreachable();
    }
}

impl Handler<Unsubscribe> for Hub {
    type Result = ();
    fn handle(&mut self, msg: Unsubscribe, _: &mut Context<Self>) {
        let caller = &msg.caller;
        if !valid_group(&msg.group) {
            self.fail(caller, invalid_group());
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
        self.drop_unreachable();
    }
}

impl Handler<Publish> for Hub {
    type Result = ();
    fn handle(&mut self, msg: Publish, _: &mut Context<Self>) {
        let caller = &msg.caller;
        let checked = self.pool.joined_name(caller.session).and_then(|from| {
            if !valid_group(&msg.group) {
                Err(invalid_group())
            } else if is_stock_group(&msg.group) {
                Err(ReplyError::new(
                    ErrorCode::Forbidden,
                    "stock groups are read-only",
                ))
            } else {
                self.pool
                    .check_grant(caller.session, &msg.group)
                    .map(|()| from)
            }
        });
        match checked {
            Ok(from) => {
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
                        self.fanout.deliver(group.outboxes(), &frame)
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
            Err(e) => self.fail(caller, e),
        }
        self.drop_unreachable();
    }
}

impl Handler<ListUsers> for Hub {
    type Result = ();
    fn handle(&mut self, msg: ListUsers, _: &mut Context<Self>) {
        let caller = &msg.caller;
        let (after, limit) = (msg.page.after.as_deref(), msg.page.limit);
        let listed = self.pool.joined_name(caller.session).and_then(|_| {
            let limited = self.limited(caller.session);
            let Some(g) = msg.group.as_deref() else {
                if limited {
                    return Err(ReplyError::new(
                        ErrorCode::Forbidden,
                        "a token limited to groups lists users one group at a time",
                    ));
                }
                let (users, next) = self.pool.user_names(after, limit);
                return Ok(encode(&Event::Users {
                    id: caller.id.as_ref(),
                    group: None,
                    users,
                    count: self.pool.sizes().1,
                    next,
                }));
            };
            if !valid_group(g) {
                return Err(invalid_group());
            }
            self.pool.check_grant(caller.session, g)?;
            let group = self.pool.group(g);
            // A limited token sees names only in its own groups: in a stock group, open
            // to everyone, it gets the count alone.
            let (users, next) = match group {
                Some(group) if !(limited && is_stock_group(g)) => group.user_names(after, limit),
                _ => (Vec::new(), None),
            };
            Ok(encode(&Event::Users {
                id: caller.id.as_ref(),
                group: Some(g),
                users,
                count: group.map_or(0, |g| g.user_count()),
                next,
            }))
        });
        match listed {
            Ok(frame) => self.send_to(caller.session, &frame),
            Err(e) => self.fail(caller, e),
        }
        self.drop_unreachable();
    }
}

impl Handler<Ping> for Hub {
    type Result = ();
    fn handle(&mut self, msg: Ping, _: &mut Context<Self>) {
        self.reply(
            &msg.caller,
            &Event::Pong {
                id: msg.caller.id.as_ref(),
            },
        );
        self.drop_unreachable();
    }
}

impl Handler<SubscribeClassicFeed> for Hub {
    type Result = ();
    fn handle(&mut self, msg: SubscribeClassicFeed, _: &mut Context<Self>) {
        if self.ticker.is_some() {
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
        }
        self.drop_unreachable();
    }
}

impl Handler<ShowHistory> for Hub {
    type Result = ();
    fn handle(&mut self, msg: ShowHistory, _: &mut Context<Self>) {
        match (&self.ticker, self.pool.session(msg.caller.session)) {
            (Some(t), Some(entry)) => t.do_send(ticker::History {
                id: msg.caller.id,
                symbol: msg.symbol,
                page: msg.page,
                outbox: entry.outbox.clone(),
            }),
            (None, Some(_)) => self.fail(
                &msg.caller,
                ReplyError::new(ErrorCode::NotFound, "this hub runs no ticker"),
            ),
            _ => {}
        }
        self.drop_unreachable();
    }
}

impl Handler<DeliverTick> for Hub {
    type Result = ();
    fn handle(&mut self, msg: DeliverTick, _: &mut Context<Self>) {
        for (group, frame) in msg.frames {
            if let Some(members) = self.pool.group(&group) {
                self.fanout.deliver(members.outboxes(), &frame);
            }
            self.snapshots.insert(group, frame);
        }
        self.drop_unreachable();
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
            queued_bytes: self.pool.queued_bytes(),
            slow_consumers: self.slow_consumers,
        }
    }
}

fn invalid_group() -> ReplyError {
    ReplyError::new(ErrorCode::InvalidGroup, GROUP_RULE)
}

#[cfg(test)]
mod tests;
