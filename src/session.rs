//! The `Session` actor: one per WebSocket, and the only code that touches one.
//!
//! It reassembles fragmented messages (bounded by the message limit), decodes them into
//! commands for the hub, keeps the heartbeat, and writes out what the hub puts in its
//! [`Outbox`]. Protocol violations close the socket with a proper code; bad commands
//! only get an `error` reply.

use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use actix::prelude::*;
use actix_http::ws::Item;
use actix_web::web::Bytes;
use actix_web_actors::ws;
use bytestring::ByteString;

use crate::error::{CloseReason, ErrorCode};
use crate::hub::{self, Caller, Hub};
use crate::outbox::{Outbox, Wake};
use crate::pool::SessionId;
use crate::protocol::{decode, encode, Command, Event, Inbound, RequestId};

/// Session ids come from one process-wide counter, so they are never reused.
static NEXT_ID: AtomicU64 = AtomicU64::new(1);

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
}

/// A fragmented message being reassembled.
struct Partial {
    data: Vec<u8>,
    /// Text messages must be valid UTF-8 (1007 if not); binary ones are checked as JSON.
    text: bool,
}

pub struct Session {
    id: SessionId,
    hub: Addr<Hub>,
    limits: Arc<Limits>,
    /// Counts the bytes queued across all outboxes (the hub reports it).
    queued_total: Arc<AtomicUsize>,
    /// Created in `started`, when the actor's address exists.
    outbox: Option<Arc<Outbox>>,
    /// When the client last sent anything at all.
    last_heard: Instant,
    partial: Option<Partial>,
}

impl Session {
    pub fn new(hub: Addr<Hub>, limits: Arc<Limits>, queued_total: Arc<AtomicUsize>) -> Self {
        Session {
            id: NEXT_ID.fetch_add(1, Ordering::Relaxed),
            hub,
            limits,
            queued_total,
            outbox: None,
            last_heard: Instant::now(),
            partial: None,
        }
    }

    fn caller(&self, id: Option<RequestId>) -> Caller {
        Caller {
            session: self.id,
            id,
        }
    }

    /// Queues a reply made by the session itself behind whatever the hub queued.
    fn push(&self, frame: &ByteString) {
        if let Some(outbox) = &self.outbox {
            outbox.push(frame);
        }
    }

    fn reply_error(&self, id: Option<&RequestId>, code: ErrorCode, message: &str) {
        self.push(&encode(&Event::Error { id, code, message }));
    }

    /// Writes what is queued, then closes with `reason` (after an optional last frame).
    fn shut(
        &mut self,
        ctx: &mut ws::WebsocketContext<Self>,
        reason: CloseReason,
        last: Option<ByteString>,
    ) {
        if let Some(outbox) = &self.outbox {
            outbox.close(reason);
            for frame in outbox.drain().frames {
                ctx.text(frame);
            }
        }
        if let Some(frame) = last {
            ctx.text(frame);
        }
        ctx.close(Some(ws::CloseReason {
            code: ws::CloseCode::from(reason.code()),
            description: Some(reason.description().to_owned()),
        }));
        ctx.stop();
    }

    fn too_big(&mut self, ctx: &mut ws::WebsocketContext<Self>) {
        let note = encode(&Event::Error {
            id: None,
            code: ErrorCode::TooLarge,
            message: "message exceeds the size limit",
        });
        self.shut(ctx, CloseReason::TooBig, Some(note));
    }

    /// Handles one complete text message.
    fn on_text(&mut self, text: &str) {
        let (id, command) = match decode(text) {
            Err(e) => {
                return self.reply_error(e.id.as_ref(), ErrorCode::BadRequest, &e.message);
            }
            Ok(Inbound::LegacyStock) => {
                return self
                    .hub
                    .do_send(hub::SubscribeClassicFeed { session: self.id })
            }
            Ok(Inbound::LegacyJoin { name }) => {
                return self.hub.do_send(hub::Join {
                    caller: self.caller(None),
                    name,
                    classic: true,
                })
            }
            Ok(Inbound::Command { id, command }) => (id, command),
        };
        match command {
            Command::Ping => self.push(&encode(&Event::Pong { id: id.as_ref() })),
            Command::Join { name } => self.hub.do_send(hub::Join {
                caller: self.caller(id),
                name,
                classic: false,
            }),
            Command::Direct { to, body } => self.hub.do_send(hub::SendDirect {
                caller: self.caller(id),
                to,
                body,
            }),
            Command::Broadcast { body } => self.hub.do_send(hub::Broadcast {
                caller: self.caller(id),
                body,
            }),
            Command::Subscribe { group, presence } => self.hub.do_send(hub::Subscribe {
                caller: self.caller(id),
                group,
                presence,
            }),
            Command::Unsubscribe { group } => self.hub.do_send(hub::Unsubscribe {
                caller: self.caller(id),
                group,
            }),
            Command::Publish { group, body } => self.hub.do_send(hub::Publish {
                caller: self.caller(id),
                group,
                body,
            }),
            Command::Users { group } => self.hub.do_send(hub::ListUsers {
                caller: self.caller(id),
                group,
            }),
            Command::History { symbol, limit } => self.hub.do_send(hub::ShowHistory {
                caller: self.caller(id),
                symbol,
                limit,
            }),
        }
    }

    /// Handles a complete message that arrived as bytes (binary frame or fragments).
    fn on_bytes(&mut self, data: &[u8], text: bool, ctx: &mut ws::WebsocketContext<Self>) {
        match std::str::from_utf8(data) {
            Ok(s) => self.on_text(s),
            Err(_) if text => self.shut(ctx, CloseReason::InvalidData, None),
            Err(_) => self.reply_error(
                None,
                ErrorCode::BadRequest,
                "binary frames must hold UTF-8 JSON",
            ),
        }
    }

    fn on_continuation(&mut self, item: Item, ctx: &mut ws::WebsocketContext<Self>) {
        let (chunk, first, last): (Bytes, Option<bool>, bool) = match item {
            Item::FirstText(b) => (b, Some(true), false),
            Item::FirstBinary(b) => (b, Some(false), false),
            Item::Continue(b) => (b, None, false),
            Item::Last(b) => (b, None, true),
        };
        match (first, &mut self.partial) {
            (Some(_), Some(_)) | (None, None) => {
                // A new message began inside another, or a continuation has no start.
                return self.shut(ctx, CloseReason::Protocol, None);
            }
            (Some(text), None) => {
                self.partial = Some(Partial {
                    data: Vec::with_capacity(chunk.len().min(self.limits.max_message)),
                    text,
                })
            }
            (None, Some(_)) => {}
        }
        let Some(partial) = &mut self.partial else {
            return;
        };
        if partial.data.len() + chunk.len() > self.limits.max_message {
            self.partial = None;
            return self.too_big(ctx);
        }
        partial.data.extend_from_slice(&chunk);
        if last {
            if let Some(p) = self.partial.take() {
                self.on_bytes(&p.data, p.text, ctx);
            }
        }
    }
}

impl Actor for Session {
    type Context = ws::WebsocketContext<Self>;

    fn started(&mut self, ctx: &mut Self::Context) {
        let outbox = Arc::new(Outbox::new(
            ctx.address().recipient(),
            self.limits.max_queued,
            self.queued_total.clone(),
        ));
        self.hub.do_send(hub::Connect {
            session: self.id,
            outbox: outbox.clone(),
        });
        self.outbox = Some(outbox);
        ctx.run_interval(self.limits.heartbeat, |act, ctx| {
            if act.last_heard.elapsed() > act.limits.client_timeout {
                log::debug!("session {} timed out", act.id);
                act.shut(ctx, CloseReason::HeartbeatTimeout, None);
            } else {
                ctx.ping(b"");
            }
        });
    }

    fn stopping(&mut self, _: &mut Self::Context) -> Running {
        if let Some(outbox) = &self.outbox {
            outbox.close(CloseReason::Normal);
            // Drop what nobody will write, so the hub's queued-bytes count stays true.
            outbox.drain();
        }
        self.hub.do_send(hub::Disconnect { session: self.id });
        Running::Stop
    }
}

impl Handler<Wake> for Session {
    type Result = ();
    fn handle(&mut self, _: Wake, ctx: &mut Self::Context) {
        let Some(outbox) = &self.outbox else {
            return;
        };
        let drained = outbox.drain();
        for frame in drained.frames {
            ctx.text(frame);
        }
        if let Some(reason) = drained.close {
            self.shut(ctx, reason, None);
        }
    }
}

impl StreamHandler<Result<ws::Message, ws::ProtocolError>> for Session {
    fn handle(&mut self, item: Result<ws::Message, ws::ProtocolError>, ctx: &mut Self::Context) {
        self.last_heard = Instant::now();
        let msg = match item {
            Ok(msg) => msg,
            Err(ws::ProtocolError::Overflow) => return self.too_big(ctx),
            Err(ws::ProtocolError::Io(e)) if e.to_string().contains("utf-8") => {
                // actix-web-actors reports a text frame that is not UTF-8 this way.
                return self.shut(ctx, CloseReason::InvalidData, None);
            }
            Err(e) => {
                log::debug!("session {}: {e}", self.id);
                return self.shut(ctx, CloseReason::Protocol, None);
            }
        };
        match msg {
            ws::Message::Text(text) => {
                if self.partial.is_some() {
                    return self.shut(ctx, CloseReason::Protocol, None);
                }
                self.on_text(&text);
            }
            ws::Message::Binary(data) => {
                if self.partial.is_some() {
                    return self.shut(ctx, CloseReason::Protocol, None);
                }
                self.on_bytes(&data, false, ctx);
            }
            ws::Message::Continuation(item) => self.on_continuation(item, ctx),
            ws::Message::Ping(payload) => ctx.pong(&payload),
            ws::Message::Pong(_) | ws::Message::Nop => {}
            ws::Message::Close(reason) => {
                ctx.close(reason);
                ctx.stop();
            }
        }
    }
}
