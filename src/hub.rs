//! The `Hub` actor: one per process, a thin shell around the [`Router`].
//!
//! Sessions (and the ticker, and later the server API) send it one message per intent
//! (the structs of `hub/messages.rs`, named as verbs); each handler makes one router
//! call and turns its result into the caller's reply, queued in the caller's outbox
//! after everything the call queued. What only an actor does stays here: the bounded
//! mailbox, the one heartbeat timer for every session, the hand-over of fed groups'
//! demand to the feed, and shutdown. One thread runs it, so every decision is made in
//! the order the mailbox delivers the messages.

use std::sync::Arc;
use std::time::Duration;

use actix::prelude::*;
use bytestring::ByteString;

use crate::error::{CloseReason, ErrorCode, ReplyError};
use crate::policy::Policies;
use crate::pool::SESSION_SETS;
use crate::protocol::{encode, Event};
use crate::router::{Later, Listing, Outcome, Post, RecallConfig, Router, Sender};

mod messages;
pub use messages::*;

/// Messages the hub's mailbox holds before sessions get `overloaded` for their commands.
pub const DEFAULT_MAILBOX: usize = 8192;

/// What the hub is built with.
#[derive(Debug, Clone)]
pub struct HubConfig {
    /// Most groups one session may be in.
    pub max_groups: usize,
    /// What each group allows.
    pub policies: Policies,
    /// The groups the server feeds (the ticker's): subscribing to another group whose
    /// policy says `feed` answers `not_found`.
    pub feeds: Vec<Arc<str>>,
    /// How often each session checks its client's liveness (`None`: never; unit tests).
    /// The hub paces this for every session with one timer instead of one per session.
    pub heartbeat: Option<Duration>,
    /// Messages the hub's mailbox holds before commands are shed (see
    /// [`DEFAULT_MAILBOX`]).
    pub mailbox: usize,
    /// What is kept for recovery besides the policies' retention.
    pub recall: RecallConfig,
}

/// The pool keeps the sessions in this many sets by id; one set is told to check its
/// heartbeat each `heartbeat / HEARTBEAT_PHASES`, so the pings are spread out instead of
/// all going at once, and each beat visits only its own set.
const HEARTBEAT_PHASES: usize = SESSION_SETS;

/// The hub actor.
pub struct Hub {
    router: Router,
    /// Where the demand of fed groups goes ([`AttachFeed`]).
    feed: Option<Recipient<FeedDemand>>,
    /// Set by [`Shutdown`]: sessions that connect later are closed at once.
    shutting_down: bool,
    /// [`HubConfig::heartbeat`]: every session's liveness check, paced from here.
    heartbeat: Option<Duration>,
    /// Which set of sessions checks its heartbeat next.
    heartbeat_phase: usize,
    mailbox: usize,
}

impl Hub {
    pub fn new(config: HubConfig) -> Self {
        Hub {
            router: Router::new(config.max_groups, config.policies, config.feeds)
                .with_recall(config.recall.in_memory()),
            feed: None,
            shutting_down: false,
            heartbeat: config.heartbeat,
            heartbeat_phase: 0,
            mailbox: config.mailbox,
        }
    }

    /// The same hub in cluster mode: its router tells the other nodes through `broker`.
    pub fn with_broker(mut self, broker: Box<dyn crate::cluster::Broker>) -> Self {
        self.router = self.router.with_broker(broker);
        self
    }

    /// The same hub keeping presence for the cluster (cluster mode): `users` and presence
    /// events answer for every node.
    pub fn with_presence(mut self, link: crate::cluster::presence::PresenceLink) -> Self {
        self.router = self.router.with_presence(link);
        self
    }

    /// Tells one set of sessions to check their heartbeat (see [`HEARTBEAT_PHASES`]).
    fn beat(&mut self) {
        let phase = self.heartbeat_phase;
        self.heartbeat_phase = (phase + 1) % HEARTBEAT_PHASES;
        self.router.beat(phase);
        if phase == 0 {
            // Once per heartbeat: expired messages and idle streams go.
            self.router.sweep_history();
        }
    }

    /// Answers a command: with `reply` on success, with the error otherwise; then hands
    /// on the feed's demand.
    fn answer(&mut self, caller: &Caller, result: Result<Outcome, ReplyError>, reply: Reply) {
        let id = caller.id.as_ref();
        match result {
            Ok(outcome) => {
                let event = match reply {
                    Reply::Ack => Some(Event::Ack {
                        id,
                        delivered: outcome.delivered,
                        stored: outcome.stored,
                        cluster: outcome.cluster,
                    }),
                    Reply::Pong => Some(Event::Pong { id }),
                    Reply::Queued => None,
                };
                if let Some(event) = event {
                    self.router.reply(caller.session, &encode(&event));
                }
            }
            Err(e) => self.router.fail(caller.session, id, &e),
        }
        crate::metrics::METRICS.route_time(caller.at.elapsed());
        self.hand_on_demand();
    }

    /// Tells the feed which of its groups gained their first or lost their last session.
    fn hand_on_demand(&mut self) {
        let feed = self.feed.as_ref();
        for demand in self.router.take_demand() {
            if let Some(feed) = feed {
                feed.do_send(FeedDemand {
                    group: demand.group,
                    watched: demand.watched,
                });
            }
        }
    }
}

/// How a command that succeeded is answered.
enum Reply {
    /// `ack` with the outcome's `delivered`.
    Ack,
    Pong,
    /// The router queued the confirmation itself (`joined`, `subscribed`, ...).
    Queued,
}

impl Actor for Hub {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Context<Self>) {
        ctx.set_mailbox_capacity(self.mailbox);
        if let Some(every) = self.heartbeat {
            let every = every / HEARTBEAT_PHASES as u32;
            ctx.run_interval(every, |hub, _| hub.beat());
        }
    }
}

impl Handler<Connect> for Hub {
    type Result = ();
    fn handle(&mut self, msg: Connect, _: &mut Context<Self>) {
        if self.shutting_down {
            msg.outbox.close(CloseReason::Shutdown);
        } else {
            self.router.connect(msg.session, msg.outbox);
        }
    }
}

impl Handler<Shutdown> for Hub {
    type Result = ();
    fn handle(&mut self, _: Shutdown, _: &mut Context<Self>) {
        self.shutting_down = true;
        self.router.leave_presence();
        // Nothing will be watched any more: the feed may stop.
        if let Some(feed) = &self.feed {
            for group in self.router.watched_feeds() {
                feed.do_send(FeedDemand {
                    group,
                    watched: false,
                });
            }
        }
        let closed = self.router.close_all(CloseReason::Shutdown);
        log::info!("shutting down: closing {closed} sessions with 1001");
    }
}

impl Handler<Relay> for Hub {
    type Result = ();
    fn handle(&mut self, msg: Relay, _: &mut Context<Self>) {
        if let Some(frame) = &msg.frame {
            self.router.reply(msg.session, frame);
        }
        if let Some(reason) = msg.close {
            self.router.close(msg.session, reason);
        }
        self.hand_on_demand();
    }
}

impl Handler<Disconnect> for Hub {
    type Result = ();
    fn handle(&mut self, msg: Disconnect, _: &mut Context<Self>) {
        self.router.leave(msg.session);
        self.hand_on_demand();
    }
}

impl Handler<Join> for Hub {
    type Result = ();
    fn handle(&mut self, msg: Join, _: &mut Context<Self>) {
        let c = &msg.caller;
        let result = self.router.join(
            c.session,
            &msg.name,
            msg.grant,
            msg.classic,
            c.id.as_ref(),
            msg.since.as_ref(),
        );
        if result.is_ok() {
            if let Ok(name) = self.router.pool().joined_name(c.session) {
                self.router.count_user(&name);
            }
        }
        self.answer(c, result, Reply::Queued);
    }
}

impl Handler<SendDirect> for Hub {
    type Result = ();
    fn handle(&mut self, msg: SendDirect, _: &mut Context<Self>) {
        let from = Sender::Session(msg.caller.session);
        let result = self
            .router
            .send(&from, &msg.to, Post::new(&msg.body, msg.mid.as_deref()));
        self.answer(&msg.caller, result, Reply::Ack);
    }
}

impl Handler<Broadcast> for Hub {
    type Result = ();
    fn handle(&mut self, msg: Broadcast, _: &mut Context<Self>) {
        let from = Sender::Session(msg.caller.session);
        let result = self
            .router
            .broadcast(&from, Post::new(&msg.body, msg.mid.as_deref()));
        self.answer(&msg.caller, result, Reply::Ack);
    }
}

impl Handler<Publish> for Hub {
    type Result = ();
    fn handle(&mut self, msg: Publish, _: &mut Context<Self>) {
        let from = Sender::Session(msg.caller.session);
        let result =
            self.router
                .publish(&from, &msg.group, Post::new(&msg.body, msg.mid.as_deref()));
        self.answer(&msg.caller, result, Reply::Ack);
    }
}

impl Handler<GroupHistory> for Hub {
    type Result = ();
    fn handle(&mut self, msg: GroupHistory, _: &mut Context<Self>) {
        let c = &msg.caller;
        let result = self
            .router
            .group_history(c.session, &msg.group, msg.limit, c.id.as_ref());
        self.answer(c, result, Reply::Queued);
    }
}

impl Handler<Subscribe> for Hub {
    type Result = ();
    fn handle(&mut self, msg: Subscribe, _: &mut Context<Self>) {
        let c = &msg.caller;
        let result = self.router.subscribe(
            c.session,
            &msg.group,
            msg.presence,
            c.id.as_ref(),
            msg.since.as_ref(),
        );
        self.answer(c, result, Reply::Queued);
    }
}

impl Handler<Unsubscribe> for Hub {
    type Result = ();
    fn handle(&mut self, msg: Unsubscribe, _: &mut Context<Self>) {
        let c = &msg.caller;
        let result = self
            .router
            .unsubscribe(c.session, &msg.group, c.id.as_ref());
        self.answer(c, result, Reply::Queued);
    }
}

impl Handler<SubscribeClassicFeed> for Hub {
    type Result = ();
    fn handle(&mut self, msg: SubscribeClassicFeed, _: &mut Context<Self>) {
        let caller = Caller::new(msg.session, None);
        let result = self.router.subscribe_classic_feed(msg.session);
        self.answer(&caller, result, Reply::Queued);
    }
}

impl Handler<ListUsers> for Hub {
    type Result = ();
    fn handle(&mut self, msg: ListUsers, _: &mut Context<Self>) {
        let c = &msg.caller;
        // Cluster mode: answered from Redis, off this thread.
        let group = msg.group.as_deref();
        match self
            .router
            .ask_users(c.session, group, &msg.page, c.id.as_ref())
        {
            Ok(true) => return,
            Ok(false) => {}
            Err(e) => return self.router.fail(c.session, c.id.as_ref(), &e),
        }
        let listed = self
            .router
            .users(c.session, group, &msg.page, c.id.as_ref());
        match listed {
            Ok(frame) => self.router.reply(c.session, &frame),
            Err(e) => self.router.fail(c.session, c.id.as_ref(), &e),
        }
    }
}

impl Handler<Ping> for Hub {
    type Result = ();
    fn handle(&mut self, msg: Ping, _: &mut Context<Self>) {
        self.answer(&msg.caller, Ok(Outcome::default()), Reply::Pong);
    }
}

impl Handler<PublishFrames> for Hub {
    type Result = ();
    fn handle(&mut self, msg: PublishFrames, _: &mut Context<Self>) {
        for (group, frame) in &msg.frames {
            self.router.publish_frame(group, frame);
        }
        self.hand_on_demand();
    }
}

impl Handler<RemoteFrame> for Hub {
    type Result = ();
    fn handle(&mut self, msg: RemoteFrame, _: &mut Context<Self>) {
        self.router
            .deliver_remote(msg.route.as_deref(), &msg.frame, msg.offset);
        self.hand_on_demand();
    }
}

impl Handler<Caught> for Hub {
    type Result = ();
    fn handle(&mut self, msg: Caught, _: &mut Context<Self>) {
        self.router.caught(msg.ticket, msg.answer);
        self.hand_on_demand();
    }
}

impl Handler<PresenceEvent> for Hub {
    type Result = ();
    fn handle(&mut self, msg: PresenceEvent, _: &mut Context<Self>) {
        self.router
            .announce_remote(&msg.group, msg.event, &msg.name);
        self.hand_on_demand();
    }
}

impl Handler<AttachFeed> for Hub {
    type Result = ();
    fn handle(&mut self, msg: AttachFeed, _: &mut Context<Self>) {
        // Groups watched before the feed was attached: tell it now.
        for group in self.router.watched_feeds() {
            msg.demand.do_send(FeedDemand {
                group,
                watched: true,
            });
        }
        self.feed = Some(msg.demand);
        self.router.take_demand().for_each(drop);
    }
}

impl Handler<ServerPost> for Hub {
    type Result = Result<Outcome, ReplyError>;
    fn handle(&mut self, msg: ServerPost, _: &mut Context<Self>) -> Self::Result {
        let from = Sender::Server(msg.from);
        let post = Post::from(&*msg.body);
        match &msg.target {
            Target::User(to) => self.router.send(&from, to, post),
            Target::Group(group) => self.router.publish(&from, group, post),
            Target::Everyone => self.router.broadcast(&from, post),
        }
    }
}

impl Handler<ServerSubscribe> for Hub {
    type Result = Result<usize, ReplyError>;
    fn handle(&mut self, msg: ServerSubscribe, _: &mut Context<Self>) -> Self::Result {
        let result = self
            .router
            .subscribe_user(&msg.name, &msg.group, msg.subscribe);
        self.hand_on_demand();
        result
    }
}

impl Handler<DisconnectUser> for Hub {
    type Result = usize;
    fn handle(&mut self, msg: DisconnectUser, _: &mut Context<Self>) -> usize {
        let closed = self.router.disconnect_user(&msg.name, msg.note);
        self.hand_on_demand();
        closed
    }
}

impl Handler<List> for Hub {
    type Result = Result<Listing, ReplyError>;
    fn handle(&mut self, msg: List, _: &mut Context<Self>) -> Self::Result {
        let after = msg.after.as_deref();
        match &msg.what {
            Listed::Users => Ok(self.router.list_users(after, msg.limit)),
            Listed::UsersWithPrefix(prefix) => {
                Ok(self.router.search_users(prefix, after, msg.limit))
            }
            Listed::Groups => Ok(self.router.list_groups(after, msg.limit)),
            Listed::TopGroups => Ok(self.router.top_groups(msg.limit)),
            Listed::Members(group) => self.router.list_members(group, after, msg.limit),
        }
    }
}

impl Handler<UserInfo> for Hub {
    type Result = Result<(usize, Vec<String>), ReplyError>;
    fn handle(&mut self, msg: UserInfo, _: &mut Context<Self>) -> Self::Result {
        self.router.user_info(&msg.name)
    }
}

impl Handler<GroupMessages> for Hub {
    type Result = ResponseFuture<Result<ByteString, ReplyError>>;
    fn handle(&mut self, msg: GroupMessages, _: &mut Context<Self>) -> Self::Result {
        match self.router.group_messages(&msg.group, msg.limit) {
            Later::Now(result) => Box::pin(std::future::ready(result)),
            // Cluster mode: the hub goes on; the API's request waits for Redis.
            Later::Soon(answer) => Box::pin(async move {
                answer.await.unwrap_or_else(|_| {
                    Err(ReplyError::new(ErrorCode::Internal, "the hub is stopping"))
                })
            }),
        }
    }
}

impl Handler<GetStats> for Hub {
    type Result = MessageResult<GetStats>;
    fn handle(&mut self, _: GetStats, _: &mut Context<Self>) -> Self::Result {
        MessageResult(self.router.stats())
    }
}

#[cfg(test)]
mod tests;
