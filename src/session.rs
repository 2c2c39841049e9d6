//! The `Session` actor: one per WebSocket, and the only code that touches one.
//!
//! It reassembles fragmented messages (bounded by the message limit), checks the rate
//! limit and join tokens, decodes messages into commands for the hub, keeps the
//! heartbeat, and writes out what the hub puts in its [`Outbox`]. Protocol violations
//! close the socket with a proper code; bad commands only get an `error` reply.
//!
//! Frames go out through the connection's own response body ([`start`]): a session
//! encodes them into a per-thread staging buffer, and the body hands everything staged
//! in one poll to actix-http as one chunk.

use std::cell::RefCell;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::task::{Context as TaskContext, Poll};
use std::time::{Duration, Instant};

use actix::prelude::*;
use actix_http::ws::{Item, OpCode, Parser};
use actix_web::error::PayloadError;
use actix_web::web::{self, Bytes, BytesMut};
use actix_web::{HttpRequest, HttpResponse};
use actix_web_actors::ws;
use bytestring::ByteString;
use futures_util::Stream;

use crate::auth::{Grant, Verifier};
use crate::error::{CloseReason, ErrorCode, ReplyError};
use crate::history::Position;
use crate::hub::{self, Caller, Hub};
use crate::opening::Opening;
use crate::outbox::{Drained, Frames, Outbox, Wake, Wakes};
use crate::policy::Policies;
use crate::pool::SessionId;
use crate::protocol::{
    decode, encode, normalize_name, Command, Event, HistoryPage, Inbound, RequestId,
};
use crate::ratelimit::{TokenBucket, Verdict};
use crate::reader::{FrameReader, ReadError};
use crate::ticker;

/// Session ids come from one process-wide counter, so they are never reused.
static NEXT_ID: AtomicU64 = AtomicU64::new(1);

/// Failed joins (bad tokens) a connection may make in its whole life; the last of them
/// closes it. A success does not reset the count, so a connection cannot be used to
/// guess tokens at the rate limit's pace.
const MAX_FAILED_JOINS: u8 = 3;

/// Commands shed because the hub's mailbox was full, and when that was last logged.
static SHED: AtomicU64 = AtomicU64::new(0);
static SHED_LOGGED_AT: AtomicU64 = AtomicU64::new(0);

thread_local! {
    /// Frames taken from an outbox, being written. One per worker thread rather than one
    /// per session: sessions on a thread are written one at a time, and a field would
    /// make every idle session bigger (see `Outbox::drain_into` for who keeps capacity).
    static WRITING: RefCell<Frames> = const { RefCell::new(Frames::new_const()) };

    /// Encoded frames on their way to actix-http's write buffer, one buffer per worker
    /// thread. A session writes here only while its [`Output`] polls it (every handler
    /// runs inside that poll); each poll starts by discarding whatever is left and ends
    /// by handing on what the session wrote, so the buffer never carries one session's
    /// frames into another's connection. Sharing it means no session grows and keeps a
    /// buffer (or a queue of unencoded messages) of its own, and a busy session's frames
    /// are encoded into capacity that is already there.
    static STAGING: RefCell<BytesMut> = RefCell::new(BytesMut::new());
}

/// Capacity the staging buffer may keep between polls; a bigger allocation (left by one
/// very large write) is released, so one burst does not pin memory on the thread.
const STAGING_KEPT: usize = 256 * 1024;

/// Encodes one server frame (unmasked, final) into the thread's staging buffer.
fn write_frame(op: OpCode, payload: &[u8]) {
    STAGING.with_borrow_mut(|s| Parser::write_message(s, payload, op, true, false));
}

fn write_close(reason: Option<ws::CloseReason>) {
    STAGING.with_borrow_mut(|s| Parser::write_close(s, reason, false));
}

/// A WebSocket response body: polls the session's context, which runs the actor, and
/// then hands actix-http whatever the session wrote to the staging buffer, as one chunk.
///
/// actix-web-actors would otherwise queue each frame as a message, encode the queue
/// into a fresh buffer on every poll (growing it by reallocation as frames are added)
/// and keep the queue's capacity in every session for good. `None` once the context
/// has ended.
struct Output<S>(Option<S>);

impl<S> Drop for Output<S> {
    /// Dropping a live context runs the actor once more (actix stops it in a last poll,
    /// where only `stopping`/`stopped` run, and those write nothing). Should anything be
    /// written then, it is discarded here rather than left for the next poll to drop.
    fn drop(&mut self) {
        self.0 = None;
        reset_staging();
    }
}

/// Readies the staging buffer for the next session: drops frames that no `Output` will
/// hand on (written outside an `Output`'s poll, or left by a poll that failed), moves the
/// write position back to the start of the buffer once actix-http has let go of the last
/// chunk, so every session writes into the same few, cache-hot kilobytes instead of
/// walking through the whole capacity, and releases an allocation past [`STAGING_KEPT`].
fn reset_staging() {
    // `try_with`: a connection may be dropped while its thread is ending.
    let _ = STAGING.try_with(|s| {
        if let Ok(mut s) = s.try_borrow_mut() {
            s.clear();
            // Asking for more than is left after the write position makes the buffer
            // start over at the front, if no chunk still shares it; it never allocates.
            let past_the_rest = s.capacity() + 1;
            let _ = s.try_reclaim(past_the_rest);
            // Only now is `capacity` the whole allocation (after a split it is what is
            // left past the write position).
            if s.capacity() > STAGING_KEPT {
                *s = BytesMut::new();
            }
        }
    });
}

/// Answers a WebSocket handshake, with `session` running behind the connection, and
/// does what the handshake's query asked for (see [`crate::opening`]).
pub fn start(
    mut session: Session,
    req: &HttpRequest,
    stream: web::Payload,
    opening: Opening,
) -> actix_web::Result<HttpResponse> {
    let mut response = ws::handshake(req)?;
    session.open(opening);
    let max = session.shared.limits.max_message;
    // actix-web-actors' own reader buffers whatever a frame header declares (see
    // [`crate::reader`]); it gets an input that ends at once, and the session reads the
    // connection through a [`FrameReader`] instead.
    let none = futures_util::stream::empty::<Result<Bytes, PayloadError>>();
    let context = ws::WebsocketContext::with_factory(none, move |ctx| {
        ctx.add_stream(FrameReader::new(stream, max));
        session
    });
    Ok(response.streaming(Output(Some(context))))
}

impl<S> Stream for Output<S>
where
    S: Stream<Item = Result<Bytes, actix_web::Error>> + Unpin,
{
    type Item = Result<Bytes, actix_web::Error>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut TaskContext<'_>) -> Poll<Option<Self::Item>> {
        let Some(context) = self.0.as_mut() else {
            return Poll::Ready(None);
        };
        reset_staging();
        let polled = Pin::new(context).poll_next(cx);
        let staged = STAGING.with_borrow_mut(|s| {
            // Sessions write only to the staging buffer, so the context encodes nothing
            // itself; should it ever, its bytes follow the session's, in one chunk.
            if let Poll::Ready(Some(Ok(bytes))) = &polled {
                s.extend_from_slice(bytes);
            }
            if s.is_empty() {
                return None;
            }
            Some(s.split().freeze())
        });
        match (polled, staged) {
            (Poll::Ready(Some(Err(e))), _) => {
                // The connection ends with the error, and what was staged with it.
                self.0 = None;
                Poll::Ready(Some(Err(e)))
            }
            (Poll::Ready(None), staged) => {
                self.0 = None;
                Poll::Ready(staged.map(Ok))
            }
            (_, Some(chunk)) => Poll::Ready(Some(Ok(chunk))),
            (Poll::Pending, None) => Poll::Pending,
            (Poll::Ready(Some(Ok(_))), None) => {
                // An empty chunk from a live context: nothing to hand on, and not the
                // end; poll again rather than end the body.
                cx.waker().wake_by_ref();
                Poll::Pending
            }
        }
    }
}

/// The per-connection limits, shared by every session.
#[derive(Debug, Clone)]
pub struct Limits {
    /// Largest message, whole or reassembled from fragments; past it, close 1009.
    pub max_message: usize,
    /// How often the hub pings.
    pub heartbeat: Duration,
    /// Silence after which a client is dropped.
    pub client_timeout: Duration,
    /// Bound on bytes waiting in one session's outbox.
    pub max_queued: usize,
    /// Commands per second, on average.
    pub rate: f64,
    /// Commands in a burst.
    pub burst: f64,
}

/// What a session is for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// A hub client speaking protocol v1.
    Hub,
    /// The test-only `/echo` endpoint: every message is sent back as it came, nothing is
    /// sent unsolicited, and the hub never hears of the session.
    Echo,
}

/// Holds one of the hub's connection slots for as long as the session lives.
pub struct ConnectionSlot(Arc<AtomicUsize>);

impl ConnectionSlot {
    /// Takes a slot if fewer than `max` are taken.
    pub fn acquire(live: &Arc<AtomicUsize>, max: usize) -> Option<ConnectionSlot> {
        let before = live.fetch_add(1, Ordering::AcqRel);
        if before >= max {
            live.fetch_sub(1, Ordering::AcqRel);
            return None;
        }
        Some(ConnectionSlot(live.clone()))
    }
}

impl Drop for ConnectionSlot {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::AcqRel);
    }
}

/// What a session shares with every other one (behind one `Arc`: a session holds a
/// pointer, not its own clone of the hub's address, which would allocate per session).
pub struct Shared {
    pub hub: Addr<Hub>,
    /// Who answers `history` (the ticker); `None`: nobody, `not_found`.
    pub history: Option<Recipient<ticker::History>>,
    /// What each group allows (the handshake's `presence` applies where it may).
    pub policies: Arc<Policies>,
    pub limits: Arc<Limits>,
    /// Present when joins need a token.
    pub verifier: Option<Arc<Verifier>>,
}

/// A fragmented message being reassembled.
struct Partial {
    data: Vec<u8>,
    /// Text messages must be valid UTF-8 (1007 if not); binary ones are checked as JSON.
    text: bool,
    /// One of its frames was refused by the rate limit: the rest are read and dropped.
    dropped: bool,
}

pub struct Session {
    id: SessionId,
    mode: Mode,
    shared: Arc<Shared>,
    /// Created with the handshake's response ([`Session::open`]); `None` for `/echo`.
    outbox: Option<Arc<Outbox>>,
    /// Whether the hub knows this session and must be told when it ends.
    registered: bool,
    /// When the client last sent anything at all.
    last_heard: Instant,
    /// Boxed: rare, and the session struct lives as long as the connection.
    partial: Option<Box<Partial>>,
    /// Set once the session has sent its close frame.
    closing: bool,
    /// Set once the session has asked the hub to close it (after the replies the hub
    /// still owes): what the client sends meanwhile is ignored.
    ending: bool,
    bucket: TokenBucket,
    failed_joins: u8,
    /// The connection's record, boxed: the session must stay small (see its test).
    conn: Box<Conn>,
}

/// What a connection holds besides its session's working state: its slot, and what the
/// line logged when it ends says.
struct Conn {
    /// Released when the session is dropped, however it ends.
    _slot: ConnectionSlot,
    /// The client's address (from a trusted proxy's `X-Forwarded-For` when there is one).
    peer: Option<std::net::IpAddr>,
    /// The name it joined as.
    user: Option<Box<str>>,
    started: Instant,
    frames_in: u64,
    frames_out: std::cell::Cell<u64>,
    /// Why the hub closed it (`None`: the client did, or vanished).
    closed_with: Option<CloseReason>,
    logged: bool,
}

impl Session {
    pub fn new(
        shared: Arc<Shared>,
        mode: Mode,
        slot: ConnectionSlot,
        peer: Option<std::net::IpAddr>,
    ) -> Self {
        let now = Instant::now();
        Session {
            id: NEXT_ID.fetch_add(1, Ordering::Relaxed),
            mode,
            bucket: TokenBucket::new(shared.limits.rate, shared.limits.burst, now),
            shared,
            outbox: None,
            registered: false,
            last_heard: now,
            partial: None,
            closing: false,
            ending: false,
            failed_joins: 0,
            conn: Box::new(Conn {
                _slot: slot,
                peer,
                user: None,
                started: now,
                frames_in: 0,
                frames_out: std::cell::Cell::new(0),
                closed_with: None,
                logged: false,
            }),
        }
    }

    fn caller(&self, id: Option<RequestId>) -> Caller {
        Caller::new(self.id, id)
    }

    /// The line an operator reads when a connection ends, and the metric of its reason.
    fn log_end(&mut self) {
        let c = &mut self.conn;
        if std::mem::replace(&mut c.logged, true) || self.mode != Mode::Hub {
            return;
        }
        crate::metrics::METRICS.closed(c.closed_with);
        let peer = c.peer.map_or_else(|| "-".to_owned(), |p| p.to_string());
        log::info!(
            "session {} closed: peer {peer}, user {}, {:.1} s, {} in, {} out, {}",
            self.id,
            c.user.as_deref().unwrap_or("-"),
            c.started.elapsed().as_secs_f64(),
            c.frames_in,
            c.frames_out.get(),
            c.closed_with
                .map_or("closed by the client", CloseReason::description),
        );
    }

    /// Answers a command the hub never sees. The reply goes through the hub, not straight
    /// into the outbox, so that it cannot overtake the hub's replies to earlier commands.
    fn reply_error(&self, id: Option<&RequestId>, code: ErrorCode, message: &str) {
        crate::metrics::METRICS.error(code);
        if self.registered {
            let frame = encode(&Event::Error { id, code, message });
            self.relay(Some(frame), None);
        }
    }

    /// Has the hub queue `frame` (if any) behind its replies to this session's earlier
    /// commands, then close the session with `close` (if any). Should the hub's mailbox
    /// be full, the frame goes straight into the outbox, and the close happens now.
    fn relay(&self, frame: Option<ByteString>, close: Option<CloseReason>) {
        let relay = hub::Relay {
            session: self.id,
            frame,
            close,
        };
        if let Err(SendError::Full(relay)) = self.shared.hub.try_send(relay) {
            if let Some(outbox) = &self.outbox {
                if let Some(frame) = &relay.frame {
                    outbox.push(frame);
                }
                if let Some(reason) = relay.close {
                    outbox.close(reason);
                }
            }
        }
    }

    /// Ends the session with `reason` once the hub has queued its replies to what the
    /// client sent before (and `last`, if given): a client closed for flooding or for bad
    /// tokens still gets every reply it was owed, then the close frame.
    fn end(&mut self, reason: CloseReason, last: Option<ByteString>) {
        if !std::mem::replace(&mut self.ending, true) {
            self.relay(last, Some(reason));
        }
    }

    /// Hands a command to the hub, or, when the hub's mailbox is full, sheds it with an
    /// `overloaded` error the client sees (straight into the outbox: the hub cannot take
    /// it, so it may overtake replies to commands the hub still holds).
    fn to_hub<M>(&self, id: Option<&RequestId>, msg: M)
    where
        M: Message<Result = ()> + Send + 'static,
        Hub: Handler<M>,
    {
        if let Err(SendError::Full(_)) = self.shared.hub.try_send(msg) {
            let shed = SHED.fetch_add(1, Ordering::Relaxed) + 1;
            let now = crate::protocol::now_ms() / 1000;
            let last = SHED_LOGGED_AT.load(Ordering::Relaxed);
            if now >= last + 10
                && SHED_LOGGED_AT
                    .compare_exchange(last, now, Ordering::Relaxed, Ordering::Relaxed)
                    .is_ok()
            {
                log::warn!(
                    "the hub's mailbox is full: {shed} commands shed with `overloaded` so far"
                );
            }
            if let Some(outbox) = &self.outbox {
                outbox.push(&encode(&Event::Error {
                    id,
                    code: ErrorCode::Overloaded,
                    message: "the hub is busy; retry shortly",
                }));
            }
        }
    }

    /// Writes everything the outbox holds; returns its close reason, if any, and whether
    /// the hub asked for a heartbeat check.
    fn flush(&self) -> Drained {
        let Some(outbox) = self.outbox.as_ref() else {
            return Drained::default();
        };
        WRITING.with_borrow_mut(|writing| {
            let drained = outbox.drain_into(writing);
            let (frames, mut bytes) = (writing.len() as u64, 0);
            for frame in writing.drain(..) {
                bytes += frame.len() as u64;
                write_frame(OpCode::Text, frame.as_bytes());
            }
            if frames > 0 {
                // Once per drain, not per frame: a fan-out wakes each session once.
                let out = &self.conn.frames_out;
                out.set(out.get() + frames);
                crate::metrics::METRICS.bytes_out.inc_by(bytes);
            }
            drained
        })
    }

    /// Drops a client that has been silent too long, or pings one that has been quiet
    /// for half a heartbeat, or that the next check would otherwise drop. Hub sessions
    /// do this when the hub says (one timer for all, so the first check may come at any
    /// point of a session's first heartbeat period); `/echo` sessions keep their own
    /// timer. A client that keeps talking is not pinged: what it sends already proves it
    /// alive, and a ping in the middle of its exchange is a frame it did not ask for
    /// (RFC 6455 allows it, the Autobahn suite's strict cases do not expect it).
    fn heartbeat(&mut self, ctx: &mut ws::WebsocketContext<Self>) {
        match liveness(self.last_heard.elapsed(), &self.shared.limits) {
            Liveness::TimedOut => {
                log::debug!("session {} timed out", self.id);
                self.shut(ctx, CloseReason::HeartbeatTimeout, None);
            }
            // `/echo` sessions answer what they are sent and nothing else: never a ping.
            Liveness::Ping if self.mode == Mode::Hub => write_frame(OpCode::Ping, b""),
            Liveness::Ping | Liveness::Fine => {}
        }
    }

    /// Writes what is queued, then closes with `reason` (after an optional last frame).
    /// Only the first call counts: frames still buffered after it must not add a second
    /// close frame.
    fn shut(
        &mut self,
        ctx: &mut ws::WebsocketContext<Self>,
        reason: CloseReason,
        last: Option<ByteString>,
    ) {
        if std::mem::replace(&mut self.closing, true) {
            return;
        }
        self.conn.closed_with = Some(reason);
        if let Some(outbox) = &self.outbox {
            outbox.close(reason);
        }
        self.flush();
        if let Some(frame) = last {
            write_frame(OpCode::Text, frame.as_bytes());
        }
        let note = self.outbox.as_ref().and_then(|o| o.close_note());
        write_close(Some(ws::CloseReason {
            code: ws::CloseCode::from(reason.code()),
            description: Some(
                note.map_or_else(|| reason.description().to_owned(), |n| n.to_string()),
            ),
        }));
        ctx.stop();
    }

    fn too_big(&mut self, ctx: &mut ws::WebsocketContext<Self>) {
        let note = (self.mode == Mode::Hub).then(|| {
            encode(&Event::Error {
                id: None,
                code: ErrorCode::TooLarge,
                message: "message exceeds the size limit",
            })
        });
        self.shut(ctx, CloseReason::TooBig, note);
    }

    /// Applies the rate limit to one incoming frame, which costs `cost` tokens; false if
    /// it must be dropped.
    fn admit(&mut self, cost: u32) -> bool {
        if self.mode == Mode::Echo {
            return true;
        }
        match self.bucket.check_cost(Instant::now(), cost) {
            Verdict::Allow => true,
            Verdict::Refuse => {
                self.reply_error(None, ErrorCode::RateLimited, "slow down");
                false
            }
            Verdict::Close => {
                log::info!("session {} closed: flooding", self.id);
                self.end(CloseReason::Flood, None);
                false
            }
        }
    }

    /// Sends the hub a join under a valid name (normalized to NFC) whose token holds
    /// (any, on a hub without a secret); otherwise returns the refusal for the caller to
    /// answer, counting it if it was the token's. `direct` lets the handshake's join
    /// bypass the mailbox bound, as its other commands do.
    fn try_join(
        &mut self,
        id: Option<&RequestId>,
        name: &str,
        token: Option<&str>,
        classic: bool,
        direct: bool,
        since: Option<Position>,
    ) -> Option<ReplyError> {
        let name = match normalize_name(name) {
            Ok(name) => name,
            Err(e) => return Some(e),
        };
        let verdict = match &self.shared.verifier {
            Some(verifier) => verifier.verify(token, &name),
            None => Ok(Grant::all()),
        };
        match verdict {
            Ok(grant) => {
                self.conn.user = Some(name.as_str().into());
                let join = hub::Join {
                    caller: self.caller(id.cloned()),
                    name,
                    classic,
                    grant,
                    since,
                };
                if direct {
                    self.shared.hub.do_send(join);
                } else {
                    self.to_hub(id, join);
                }
                None
            }
            Err(e) => {
                self.failed_joins = self.failed_joins.saturating_add(1);
                crate::metrics::METRICS.auth_refused.inc();
                Some(e)
            }
        }
    }

    /// A join from a frame: the connection's third refused token closes it.
    fn join(
        &mut self,
        id: Option<RequestId>,
        name: String,
        token: Option<String>,
        classic: bool,
        since: Option<Position>,
    ) {
        let Some(e) = self.try_join(id.as_ref(), &name, token.as_deref(), classic, false, since)
        else {
            return;
        };
        let frame = encode(&Event::Error {
            id: id.as_ref(),
            code: e.code,
            message: &e.message,
        });
        if e.code == ErrorCode::Unauthorized && self.failed_joins >= MAX_FAILED_JOINS {
            self.end(CloseReason::Unauthorized, Some(frame));
        } else {
            self.relay(Some(frame), None);
        }
    }

    /// Registers a hub session with the hub, before its actor runs (so that what the
    /// handshake asked for is done before any frame of the client's), then joins and
    /// subscribes as `opening` says, as if the client had sent those commands without
    /// an `id`. The handshake's commands do not count against the rate limit: there are
    /// at most 1 + [`MAX_OPENING_GROUPS`](crate::opening::MAX_OPENING_GROUPS) of them,
    /// once per connection.
    fn open(&mut self, opening: Opening) {
        if self.mode != Mode::Hub {
            return;
        }
        // Called on the worker thread the session will run on, as binding requires.
        let outbox = Arc::new(Outbox::new(self.shared.limits.max_queued));
        outbox.bind_to_this_thread();
        self.shared.hub.do_send(hub::Connect {
            session: self.id,
            outbox: outbox.clone(),
        });
        self.outbox = Some(outbox);
        self.registered = true;
        let Opening {
            name,
            token,
            since,
            groups,
            presence,
        } = opening;
        // One refusal at most, so never the third that closes: answered like any other.
        if let Some(e) =
            name.and_then(|name| self.try_join(None, &name, token.as_deref(), false, true, since))
        {
            self.reply_error(None, e.code, &e.message);
        }
        for (group, since) in groups {
            // The handshake asks for presence in all its groups at once: where a group's
            // policy has none (market data), it subscribes without.
            let presence = presence && self.shared.policies.of(&group).presence;
            self.shared.hub.do_send(hub::Subscribe {
                caller: self.caller(None),
                group,
                presence,
                since,
            });
        }
    }

    /// Handles one complete text message.
    fn on_text(&mut self, text: ByteString) {
        if self.mode == Mode::Echo {
            return write_frame(OpCode::Text, text.as_bytes());
        }
        self.conn.frames_in += 1;
        let metrics = &crate::metrics::METRICS;
        let (id, command) = match decode(&text) {
            Err(e) => {
                return self.reply_error(e.id.as_ref(), ErrorCode::BadRequest, &e.message);
            }
            Ok(Inbound::LegacyStock) => {
                metrics.command(9);
                let id = self.id;
                return self.to_hub(None, hub::SubscribeClassicFeed { session: id });
            }
            Ok(Inbound::LegacyJoin { id, name, token }) => {
                metrics.command(10);
                return self.join(id, name, token, true, None);
            }
            Ok(Inbound::Command { id, command }) => (id, command),
        };
        metrics.command(command.kind_index());
        // The frame paid one token; a command whose reply grows with what it asks for
        // pays the rest of its cost now.
        let extra = command.cost().saturating_sub(1);
        if extra > 0 && !self.admit(extra) {
            return;
        }
        let caller = self.caller(id.clone());
        let id = id.as_ref();
        match command {
            Command::Ping => self.to_hub(id, hub::Ping { caller }),
            Command::Join { name, token, since } => self.join(caller.id, name, token, false, since),
            Command::Direct { to, body, mid } => self.to_hub(
                id,
                hub::SendDirect {
                    caller,
                    to,
                    body,
                    mid,
                },
            ),
            Command::Broadcast { body, mid } => {
                self.to_hub(id, hub::Broadcast { caller, body, mid })
            }
            Command::Subscribe {
                group,
                presence,
                since,
            } => self.to_hub(
                id,
                hub::Subscribe {
                    caller,
                    group,
                    presence,
                    since,
                },
            ),
            Command::GroupHistory { group, limit } => self.to_hub(
                id,
                hub::GroupHistory {
                    caller,
                    group,
                    limit,
                },
            ),
            Command::Unsubscribe { group } => self.to_hub(id, hub::Unsubscribe { caller, group }),
            Command::Publish { group, body, mid } => self.to_hub(
                id,
                hub::Publish {
                    caller,
                    group,
                    body,
                    mid,
                },
            ),
            Command::Users { group, page } => self.to_hub(
                id,
                hub::ListUsers {
                    caller,
                    group,
                    page,
                },
            ),
            Command::History { symbol, page } => self.history(caller.id, symbol, page),
        }
    }

    /// `history`: answered by the ticker, straight into the outbox.
    fn history(&self, id: Option<RequestId>, symbol: String, page: HistoryPage) {
        let (Some(ticker), Some(outbox)) = (&self.shared.history, &self.outbox) else {
            return self.reply_error(id.as_ref(), ErrorCode::NotFound, "this hub runs no ticker");
        };
        let ask = ticker::History {
            id,
            symbol,
            page,
            outbox: outbox.clone(),
        };
        if let Err(SendError::Full(ask) | SendError::Closed(ask)) = ticker.try_send(ask) {
            let message = "the ticker is busy; retry shortly";
            self.reply_error(ask.id.as_ref(), ErrorCode::Overloaded, message);
        }
    }

    /// Handles a complete message that arrived as bytes (binary frame or fragments).
    fn on_bytes(&mut self, data: Bytes, text: bool, ctx: &mut ws::WebsocketContext<Self>) {
        if self.mode == Mode::Echo && !text {
            return write_frame(OpCode::Binary, &data);
        }
        match ByteString::try_from(data) {
            Ok(s) => self.on_text(s),
            Err(_) if text => self.shut(ctx, CloseReason::InvalidData, None),
            Err(_) => self.reply_error(
                None,
                ErrorCode::BadRequest,
                "binary frames must hold UTF-8 JSON",
            ),
        }
    }

    /// One frame of a fragmented message; `admitted` says whether the rate limit let it
    /// through. A refused frame drops its whole message (the client got `rate_limited`):
    /// the message's later frames are read and dropped too.
    fn on_continuation(
        &mut self,
        item: Item,
        admitted: bool,
        ctx: &mut ws::WebsocketContext<Self>,
    ) {
        let (chunk, first, last): (Bytes, Option<bool>, bool) = match item {
            Item::FirstText(b) => (b, Some(true), false),
            Item::FirstBinary(b) => (b, Some(false), false),
            Item::Continue(b) => (b, None, false),
            Item::Last(b) => (b, None, true),
        };
        let max = self.shared.limits.max_message;
        let partial = match (first, &mut self.partial) {
            (Some(_), Some(_)) | (None, None) => {
                // A new message began inside another, or a continuation has no start.
                return self.shut(ctx, CloseReason::Protocol, None);
            }
            (Some(text), None) => self.partial.insert(Box::new(Partial {
                data: Vec::with_capacity(chunk.len().min(max)),
                text,
                dropped: false,
            })),
            (None, Some(partial)) => partial,
        };
        if partial.data.len() + chunk.len() > max {
            self.partial = None;
            return self.too_big(ctx);
        }
        if !admitted || partial.dropped {
            // Keep counting its size, so a dropped message still cannot outgrow the limit.
            partial.dropped = true;
            partial.data.clear();
        } else {
            partial.data.extend_from_slice(&chunk);
        }
        if last {
            if let Some(p) = self.partial.take().filter(|p| !p.dropped) {
                self.on_bytes(Bytes::from(p.data), p.text, ctx);
            }
        }
    }

    fn leave_hub(&mut self) {
        self.log_end();
        if let Some(outbox) = &self.outbox {
            outbox.close(CloseReason::Normal);
            // Drop what nobody will write, so the hub's queued-bytes count stays true.
            outbox.drain();
        }
        if std::mem::take(&mut self.registered) {
            self.shared
                .hub
                .do_send(hub::Disconnect { session: self.id });
        }
    }
}

impl Actor for Session {
    type Context = ws::WebsocketContext<Self>;

    fn started(&mut self, ctx: &mut Self::Context) {
        // The outbox exists since the handshake ([`Session::open`]); what the hub queued
        // in it meanwhile is found at the first poll.
        if let Some(outbox) = &self.outbox {
            ctx.add_stream(Wakes(outbox.clone()));
        }
        if self.mode == Mode::Echo {
            ctx.run_interval(self.shared.limits.heartbeat, |act, ctx| act.heartbeat(ctx));
        }
    }

    fn stopping(&mut self, _: &mut Self::Context) -> Running {
        self.leave_hub();
        Running::Stop
    }
}

impl Drop for Session {
    /// A session whose connection failed is dropped without `stopping`; the hub must
    /// still forget it.
    fn drop(&mut self) {
        self.leave_hub();
    }
}

impl StreamHandler<Wake> for Session {
    fn handle(&mut self, _: Wake, ctx: &mut Self::Context) {
        let drained = self.flush();
        if let Some(reason) = drained.close {
            self.shut(ctx, reason, None);
        } else if drained.beat {
            self.heartbeat(ctx);
        }
    }
}

/// actix-web-actors' own reader: given an input that ends at once (see [`start`]), it
/// never yields anything, and its end must not stop the session.
impl StreamHandler<Result<ws::Message, ws::ProtocolError>> for Session {
    fn handle(&mut self, _: Result<ws::Message, ws::ProtocolError>, _: &mut Self::Context) {}

    fn finished(&mut self, _: &mut Self::Context) {}
}

/// The client's frames, from the session's [`FrameReader`]; when it ends, the session
/// stops (the default `finished`).
impl StreamHandler<Result<ws::Message, ReadError>> for Session {
    fn handle(&mut self, item: Result<ws::Message, ReadError>, ctx: &mut Self::Context) {
        self.last_heard = Instant::now();
        let msg = match item {
            Ok(msg) => msg,
            Err(ReadError::TooBig) => return self.too_big(ctx),
            Err(ReadError::InvalidUtf8) => {
                return self.shut(ctx, CloseReason::InvalidData, None);
            }
            // The connection is gone (reset, or ended inside a frame): nobody to tell
            // why; it counts as the client's close.
            Err(ReadError::Payload(e)) => {
                log::debug!("session {}: {e}", self.id);
                return ctx.stop();
            }
            Err(e) => {
                log::debug!("session {}: {e}", self.id);
                return self.shut(ctx, CloseReason::Protocol, None);
            }
        };
        if let ws::Message::Close(reason) = msg {
            if !std::mem::replace(&mut self.closing, true) {
                write_close(reason);
            }
            return ctx.stop();
        }
        if self.ending || self.closing {
            // Closing: the hub is writing the last replies; nothing more is taken.
            return;
        }
        // Every frame costs a token, control frames and fragments included: a peer's
        // stream of pongs or empty continuations is a flood like any other.
        let admitted = self.admit(1);
        match msg {
            ws::Message::Continuation(item) => self.on_continuation(item, admitted, ctx),
            _ if self.partial.is_some() && !msg_is_control(&msg) => {
                // A new data message inside a fragmented one.
                self.shut(ctx, CloseReason::Protocol, None)
            }
            _ if !admitted => {}
            ws::Message::Text(text) => self.on_text(text),
            ws::Message::Binary(data) => self.on_bytes(data, false, ctx),
            ws::Message::Ping(payload) => write_frame(OpCode::Pong, &payload),
            ws::Message::Pong(_) | ws::Message::Nop | ws::Message::Close(_) => {}
        }
    }
}

/// What a heartbeat check does about a client, from how long it has been silent.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Liveness {
    /// Heard from recently enough: nothing to do.
    Fine,
    /// Ping it: it has been quiet for half a heartbeat, or the next check (a heartbeat
    /// from now) would find it silent past the timeout.
    Ping,
    /// Silent past the client timeout: drop it.
    TimedOut,
}

/// The heartbeat's decision for a client silent for `silent` (see [`Session::heartbeat`]).
fn liveness(silent: Duration, limits: &Limits) -> Liveness {
    if silent > limits.client_timeout {
        Liveness::TimedOut
    } else if silent >= limits.heartbeat / 2
        || silent.saturating_add(limits.heartbeat) > limits.client_timeout
    {
        Liveness::Ping
    } else {
        Liveness::Fine
    }
}

fn msg_is_control(msg: &ws::Message) -> bool {
    matches!(
        msg,
        ws::Message::Ping(_) | ws::Message::Pong(_) | ws::Message::Close(_) | ws::Message::Nop
    )
}

#[cfg(test)]
mod tests {
    use std::sync::LazyLock;

    use super::*;

    /// A session lives inside actix-web-actors' context future, which is boxed once per
    /// connection: with the session at 88 bytes that box fits jemalloc's 512-byte size
    /// class (at 96 bytes and more it takes a 640-byte one). Grow it only on purpose.
    #[test]
    fn the_session_stays_small() {
        assert!(
            std::mem::size_of::<Session>() <= 88,
            "Session is {} bytes",
            std::mem::size_of::<Session>()
        );
    }

    fn limits(heartbeat_ms: u64, client_timeout_ms: u64) -> Limits {
        Limits {
            max_message: 1 << 16,
            heartbeat: Duration::from_millis(heartbeat_ms),
            client_timeout: Duration::from_millis(client_timeout_ms),
            max_queued: 1 << 20,
            rate: 50.0,
            burst: 100.0,
        }
    }

    const NS: Duration = Duration::from_nanos(1);

    /// A client is pinged once it has been quiet for half a heartbeat, and dropped once
    /// silent past the timeout (not at it): each outcome, and each side of each boundary.
    #[test]
    fn liveness_pings_at_half_a_heartbeat_and_times_out_past_the_timeout() {
        let l = limits(10_000, 30_000);
        let s = Duration::from_secs;
        assert_eq!(liveness(Duration::ZERO, &l), Liveness::Fine);
        assert_eq!(liveness(s(5) - NS, &l), Liveness::Fine);
        assert_eq!(liveness(s(5), &l), Liveness::Ping);
        assert_eq!(liveness(s(20), &l), Liveness::Ping);
        assert_eq!(liveness(s(30), &l), Liveness::Ping);
        assert_eq!(liveness(s(30) + NS, &l), Liveness::TimedOut);
        assert_eq!(liveness(s(3600), &l), Liveness::TimedOut);
    }

    /// With a timeout less than a heartbeat and a half, half a heartbeat of silence would
    /// come too late: a client the next check would drop is pinged now, however short its
    /// silence; one the next check would still find within the timeout is not.
    #[test]
    fn liveness_pings_a_client_the_next_check_would_drop() {
        let l = limits(10_000, 12_000);
        let ms = Duration::from_millis;
        assert_eq!(liveness(ms(2_000), &l), Liveness::Fine);
        assert_eq!(liveness(ms(2_000) + NS, &l), Liveness::Ping);
        assert_eq!(liveness(ms(4_999), &l), Liveness::Ping);
        assert_eq!(liveness(ms(12_000), &l), Liveness::Ping);
        assert_eq!(liveness(ms(12_000) + NS, &l), Liveness::TimedOut);
    }

    fn size_with_and_without_option<S>(_: &S) -> (usize, usize) {
        (std::mem::size_of::<Option<S>>(), std::mem::size_of::<S>())
    }

    /// The response body is boxed once per connection, context and all: wrapping the
    /// context in `Output` (an `Option`, `None` once it ended) must not make that box
    /// bigger, or every idle connection would pay for it.
    #[actix::test]
    async fn the_response_body_is_no_bigger_than_the_context() {
        let config = crate::config::Config::default();
        let shared = Arc::new(Shared {
            hub: Hub::new(config.hub()).start(),
            history: None,
            policies: Arc::new(Policies::standard()),
            limits: config.limits(),
            verifier: None,
        });
        let live = Arc::new(AtomicUsize::new(0));
        let slot = ConnectionSlot::acquire(&live, 1).expect("a free slot");
        let session = Session::new(shared, Mode::Echo, slot, None);
        let input = futures_util::stream::empty::<Result<Bytes, actix_web::error::PayloadError>>();
        let context =
            ws::WebsocketContext::with_codec(session, input, actix_http::ws::Codec::new());
        let (wrapped, bare) = size_with_and_without_option(&context);
        assert_eq!(wrapped, bare, "Output adds {} bytes", wrapped - bare);
    }

    /// One poll of a [`FakeContext`]: the frames the session writes, and what it returns.
    type Step = (
        Vec<&'static str>,
        Poll<Option<Result<Bytes, actix_web::Error>>>,
    );

    /// Stands in for a session's context: each poll writes its next frames to the
    /// staging buffer, as the actor's handlers do, and returns the next result.
    struct FakeContext {
        polls: Vec<Step>,
        /// Written when dropped, as an actor stopped by a last poll might.
        on_drop: Option<&'static str>,
    }

    impl Stream for FakeContext {
        type Item = Result<Bytes, actix_web::Error>;
        fn poll_next(
            mut self: Pin<&mut Self>,
            _: &mut TaskContext<'_>,
        ) -> Poll<Option<Self::Item>> {
            let (frames, result) = self.polls.remove(0);
            for f in frames {
                write_frame(OpCode::Text, f.as_bytes());
            }
            result
        }
    }

    impl Drop for FakeContext {
        fn drop(&mut self) {
            if let Some(f) = self.on_drop {
                write_frame(OpCode::Text, f.as_bytes());
            }
        }
    }

    fn frames(texts: &[&str]) -> Bytes {
        let mut b = BytesMut::new();
        for t in texts {
            Parser::write_message(&mut b, t.as_bytes(), OpCode::Text, true, false);
        }
        b.freeze()
    }

    fn poll(out: &mut Output<FakeContext>) -> Poll<Option<Bytes>> {
        let mut cx = TaskContext::from_waker(futures_util::task::noop_waker_ref());
        Pin::new(out)
            .poll_next(&mut cx)
            .map(|item| item.map(|r| r.expect("no error")))
    }

    #[test]
    fn output_hands_on_what_the_session_wrote_in_one_chunk() {
        let mut out = Output(Some(FakeContext {
            polls: vec![
                (vec!["a", "bc"], Poll::Pending),
                (vec![], Poll::Pending),
                (vec!["bye"], Poll::Ready(None)),
            ],
            on_drop: None,
        }));
        assert_eq!(poll(&mut out), Poll::Ready(Some(frames(&["a", "bc"]))));
        assert_eq!(poll(&mut out), Poll::Pending);
        // The context ended: its last frames still go out, then the body ends.
        assert_eq!(poll(&mut out), Poll::Ready(Some(frames(&["bye"]))));
        assert_eq!(poll(&mut out), Poll::Ready(None));
    }

    #[test]
    fn output_keeps_the_order_when_the_context_encodes_too() {
        let mut out = Output(Some(FakeContext {
            polls: vec![(vec!["mine"], Poll::Ready(Some(Ok(frames(&["its"])))))],
            on_drop: None,
        }));
        assert_eq!(poll(&mut out), Poll::Ready(Some(frames(&["mine", "its"]))));
    }

    #[test]
    fn every_session_writes_from_the_start_of_the_staging_buffer() {
        let chunk = |text: &'static str| {
            let mut out = Output(Some(FakeContext {
                polls: vec![(vec![text], Poll::Pending)],
                on_drop: None,
            }));
            match poll(&mut out) {
                Poll::Ready(Some(chunk)) => chunk,
                other => panic!("expected a chunk, got {other:?}"),
            }
        };
        // A big write leaves the buffer with room to spare for small ones.
        static BIG: LazyLock<String> = LazyLock::new(|| "x".repeat(4000));
        let big: &'static str = &BIG;
        drop(chunk(big));
        // actix-http copies each chunk into its write buffer and drops it; the next
        // session then writes over the same bytes instead of further along.
        let second = chunk("second");
        let at = second.as_ptr();
        drop(second);
        let third = chunk("third");
        assert_eq!(third, frames(&["third"]));
        assert_eq!(third.as_ptr(), at);
    }

    #[test]
    fn a_huge_write_does_not_pin_its_memory_on_the_thread() {
        static HUGE: LazyLock<String> = LazyLock::new(|| "x".repeat(2 * STAGING_KEPT));
        let huge: &'static str = &HUGE;
        let mut out = Output(Some(FakeContext {
            polls: vec![(vec![huge], Poll::Pending), (vec![], Poll::Pending)],
            on_drop: None,
        }));
        let Poll::Ready(Some(chunk)) = poll(&mut out) else {
            panic!("a chunk")
        };
        assert_eq!(chunk.len(), huge.len() + 10);
        drop(chunk);
        assert_eq!(poll(&mut out), Poll::Pending);
        let kept = STAGING.with_borrow(|s| s.capacity());
        assert!(kept <= STAGING_KEPT, "the thread keeps {kept} bytes");
    }

    #[test]
    fn an_empty_chunk_from_the_context_does_not_end_the_body() {
        let mut out = Output(Some(FakeContext {
            polls: vec![
                (vec![], Poll::Ready(Some(Ok(Bytes::new())))),
                (vec!["later"], Poll::Pending),
            ],
            on_drop: None,
        }));
        assert_eq!(poll(&mut out), Poll::Pending);
        assert_eq!(poll(&mut out), Poll::Ready(Some(frames(&["later"]))));
    }

    #[test]
    fn what_a_dropped_session_writes_never_reaches_another_connection() {
        let dying = Output(Some(FakeContext {
            polls: vec![],
            on_drop: Some("stale"),
        }));
        drop(dying);
        assert!(
            STAGING.with_borrow(|s| s.is_empty()),
            "dropping an Output discards"
        );
        // Also when the write happens outside any Output, e.g. a context dropped on its own.
        drop(FakeContext {
            polls: vec![],
            on_drop: Some("stale too"),
        });
        let mut next = Output(Some(FakeContext {
            polls: vec![(vec!["fresh"], Poll::Pending)],
            on_drop: None,
        }));
        assert_eq!(poll(&mut next), Poll::Ready(Some(frames(&["fresh"]))));
    }
}
