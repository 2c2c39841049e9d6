//! Protocol v1 on the wire: commands in, events out, and the naming rules.
//!
//! Wire types only: nothing here knows about actors or sockets. [`decode`] turns one text
//! message into an [`Inbound`] or a `bad_request` [`DecodeError`]; events are serialized
//! once into a [`ByteString`] that every recipient shares. docs/PROTOCOL.md is the
//! reference for everything in this file.

use std::borrow::Cow;

use bytestring::ByteString;
use serde::{Deserialize, Deserializer, Serialize};
use serde_json::value::RawValue;

use unicode_normalization::UnicodeNormalization;
use unicode_properties::{GeneralCategory, UnicodeGeneralCategory};

use crate::error::{ErrorCode, ReplyError};
use crate::history::Position;

/// A message body: any JSON, kept as the client's text, so it is parsed once and never
/// re-serialized: the hub splices it into the event it fans out.
pub type Body = Box<RawValue>;

/// The `id` a client may put on a command, echoed in its reply: a string or an integer.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(untagged)]
pub enum RequestId {
    Int(i64),
    UInt(u64),
    Str(String),
}

/// A command from a client (the `type` field selects the variant).
#[derive(Debug, Clone)]
pub enum Command {
    Join {
        name: String,
        /// Required when the hub has an auth secret (see docs/SECURITY.md).
        token: Option<String>,
        /// Recover the direct messages sent to this name after this position.
        since: Option<Position>,
    },
    Direct {
        to: String,
        body: Body,
        /// The sender's message id, passed on to the recipients (see [`valid_mid`]).
        mid: Option<String>,
    },
    Broadcast {
        body: Body,
        mid: Option<String>,
    },
    Subscribe {
        group: String,
        presence: bool,
        /// Recover the group's messages after this position.
        since: Option<Position>,
    },
    Unsubscribe {
        group: String,
    },
    Publish {
        group: String,
        body: Body,
        mid: Option<String>,
    },
    Users {
        group: Option<String>,
        page: UsersPage,
    },
    Ping,
    History {
        symbol: String,
        page: HistoryPage,
    },
    /// `history` with a `group`: the newest messages the group's stream still holds.
    GroupHistory {
        group: String,
        limit: usize,
    },
}

/// Most entries one `users` or `history` reply carries; a bigger `limit` is cut to it.
pub const MAX_PAGE: usize = 1000;

/// Names a `users` reply lists when the command gives no `limit`.
pub const DEFAULT_USERS_PAGE: usize = 100;

/// Which page of names `users` asks for: names sorted, the first `limit` after `after`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct UsersPage {
    /// 1 to [`MAX_PAGE`].
    pub limit: usize,
    pub after: Option<String>,
}

/// Which quotes `history` asks for: the newest `limit` (default: all kept, at most
/// [`MAX_PAGE`]) with a `ts` before `before` (default: now).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct HistoryPage {
    pub limit: Option<usize>,
    pub before: Option<u64>,
}

impl Command {
    /// What the command costs in the rate limiter's tokens: one, and one more per 100
    /// entries a listing may return, so that asking for a big reply is not as cheap as a
    /// `ping`.
    /// Its place in [`crate::metrics::COMMANDS`].
    pub fn kind_index(&self) -> usize {
        match self {
            Command::Join { .. } => 0,
            Command::Direct { .. } => 1,
            Command::Broadcast { .. } => 2,
            Command::Subscribe { .. } => 3,
            Command::Unsubscribe { .. } => 4,
            Command::Publish { .. } => 5,
            Command::Users { .. } => 6,
            Command::Ping => 7,
            Command::History { .. } | Command::GroupHistory { .. } => 8,
        }
    }

    pub fn cost(&self) -> u32 {
        let listed = match self {
            Command::Users { page, .. } => page.limit,
            Command::History { page, .. } => page.limit.unwrap_or(MAX_PAGE),
            Command::GroupHistory { limit, .. } => *limit,
            _ => 0,
        };
        1 + listed.div_ceil(100) as u32
    }
}

/// Every field any command has, read in one pass; which ones are required depends on
/// `type`. Unknown fields are ignored.
#[derive(Deserialize)]
struct Envelope<'a> {
    #[serde(rename = "type", default, borrow)]
    ty: Option<Cow<'a, str>>,
    #[serde(default, borrow)]
    id: Option<&'a RawValue>,
    #[serde(default)]
    name: Option<String>,
    #[serde(default)]
    token: Option<String>,
    #[serde(default)]
    to: Option<String>,
    #[serde(default)]
    group: Option<String>,
    #[serde(default)]
    presence: Option<bool>,
    #[serde(default, deserialize_with = "present")]
    body: Option<Body>,
    #[serde(default)]
    symbol: Option<String>,
    #[serde(default)]
    limit: Option<usize>,
    #[serde(default)]
    after: Option<String>,
    #[serde(default)]
    before: Option<u64>,
    #[serde(default)]
    mid: Option<String>,
    #[serde(default)]
    since: Option<serde_json::Value>,
}

/// Only the `id`, to echo it in the error about a message that did not decode.
#[derive(Deserialize)]
struct IdProbe<'a> {
    #[serde(default, borrow)]
    id: Option<&'a RawValue>,
}

/// A present `body` is `Some` even when it is `null`; only a missing one is `None`.
fn present<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Body>, D::Error> {
    Body::deserialize(d).map(Some)
}

fn request_id(raw: Option<&RawValue>) -> Result<Option<RequestId>, &'static str> {
    const WRONG: &str = "`id` must be a string or an integer";
    let Some(raw) = raw else {
        return Ok(None);
    };
    let text = raw.get();
    if text == "null" {
        Ok(None)
    } else if text.starts_with('"') {
        serde_json::from_str(text)
            .map(|s| Some(RequestId::Str(s)))
            .map_err(|_| WRONG)
    } else if let Ok(i) = text.parse::<i64>() {
        Ok(Some(RequestId::Int(i)))
    } else if let Ok(u) = text.parse::<u64>() {
        Ok(Some(RequestId::UInt(u)))
    } else {
        Err(WRONG)
    }
}

fn required<T>(field: Option<T>, name: &str) -> Result<T, String> {
    field.ok_or_else(|| format!("missing field `{name}`"))
}

/// The message-id rule, as the `bad_request` error says it.
pub const MID_RULE: &str = "`mid` has 1 to 64 of A-Z a-z 0-9 _ . : -";

/// A message id (`mid`): chosen by the sender, unique among its messages, so that a
/// message sent again after a lost connection can be recognised by its recipients. The
/// group-name alphabet: nothing to escape, nothing that looks like something else.
pub fn valid_mid(mid: &str) -> bool {
    valid_group(mid)
}

/// The `since` rule, as the `bad_request` error says it.
pub const SINCE_RULE: &str =
    "`since` is {\"epoch\": a string of 1 to 64 of A-Z a-z 0-9 _ -, \"offset\": an integer from 0}";

/// An epoch as a client may send it back: what the hub hands out is shorter.
pub fn valid_epoch(epoch: &str) -> bool {
    (1..=MAX_NAME_CHARS).contains(&epoch.len())
        && epoch
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'-'))
}

fn position(since: Option<serde_json::Value>) -> Result<Option<Position>, String> {
    let Some(since) = since.filter(|v| !v.is_null()) else {
        return Ok(None);
    };
    let epoch = since.get("epoch").and_then(|e| e.as_str());
    let offset = since.get("offset").and_then(|o| o.as_u64());
    match (epoch, offset) {
        (Some(epoch), Some(offset)) if since.is_object() && valid_epoch(epoch) => {
            Ok(Some(Position {
                epoch: epoch.into(),
                offset,
            }))
        }
        _ => Err(SINCE_RULE.to_owned()),
    }
}

fn message_id(mid: Option<String>) -> Result<Option<String>, String> {
    match mid {
        Some(mid) if !valid_mid(&mid) => Err(MID_RULE.to_owned()),
        mid => Ok(mid),
    }
}

impl Envelope<'_> {
    fn command(self, ty: &str) -> Result<Command, String> {
        Ok(match ty {
            "join" => Command::Join {
                name: required(self.name, "name")?,
                token: self.token,
                since: position(self.since)?,
            },
            "direct" => Command::Direct {
                to: required(self.to, "to")?,
                body: required(self.body, "body")?,
                mid: message_id(self.mid)?,
            },
            "broadcast" => Command::Broadcast {
                body: required(self.body, "body")?,
                mid: message_id(self.mid)?,
            },
            "subscribe" => Command::Subscribe {
                group: required(self.group, "group")?,
                presence: self.presence.unwrap_or(false),
                since: position(self.since)?,
            },
            "unsubscribe" => Command::Unsubscribe {
                group: required(self.group, "group")?,
            },
            "publish" => Command::Publish {
                group: required(self.group, "group")?,
                body: required(self.body, "body")?,
                mid: message_id(self.mid)?,
            },
            "users" => Command::Users {
                group: self.group,
                page: UsersPage {
                    limit: self.limit.unwrap_or(DEFAULT_USERS_PAGE).clamp(1, MAX_PAGE),
                    after: self.after,
                },
            },
            "ping" => Command::Ping,
            "history" => match (self.symbol, self.group) {
                (None, Some(group)) => Command::GroupHistory {
                    group,
                    limit: self.limit.unwrap_or(MAX_PAGE).clamp(1, MAX_PAGE),
                },
                (symbol, _) => Command::History {
                    symbol: required(symbol, "symbol")?,
                    page: HistoryPage {
                        limit: self.limit.map(|l| l.clamp(1, MAX_PAGE)),
                        before: self.before,
                    },
                },
            },
            other => {
                return Err(format!(
                    "unknown type `{other}`, expected one of join, direct, broadcast, subscribe, \
                     unsubscribe, publish, users, ping, history"
                ))
            }
        })
    }
}

/// What one inbound text message means.
#[derive(Debug, Clone)]
pub enum Inbound {
    /// A typed command, with the `id` to echo.
    Command {
        id: Option<RequestId>,
        command: Command,
    },
    /// The classic plain text `stock`: subscribe to the six-number feed.
    LegacyStock,
    /// The classic `{"name": "<openid>"}` login (no `type`), with a `token` when the
    /// hub requires one, and an `id` if the client added one.
    LegacyJoin {
        id: Option<RequestId>,
        name: String,
        token: Option<String>,
    },
}

/// A message that could not be understood; answered with `bad_request`.
#[derive(Debug, Clone, PartialEq)]
pub struct DecodeError {
    /// The command's `id`, when it could be read, so the error can echo it.
    pub id: Option<RequestId>,
    pub message: String,
}

impl DecodeError {
    fn new(id: Option<RequestId>, message: impl Into<String>) -> Self {
        DecodeError {
            id,
            message: message.into(),
        }
    }
}

/// Trims what older clients put around JSON: whitespace and a UTF-8 byte order mark.
pub fn trim_frame(text: &str) -> &str {
    text.trim().trim_start_matches('\u{feff}').trim()
}

/// Decodes one complete text message.
pub fn decode(text: &str) -> Result<Inbound, DecodeError> {
    let text = trim_frame(text);
    if text == "stock" {
        return Ok(Inbound::LegacyStock);
    }
    let envelope: Envelope = match serde_json::from_str(text) {
        Ok(envelope) => envelope,
        Err(e) => {
            // Echo the id if it can be read on its own; say what was wrong either way.
            let id = serde_json::from_str::<IdProbe>(text)
                .ok()
                .and_then(|probe| request_id(probe.id).ok().flatten());
            let message = if e.is_syntax() || e.is_eof() {
                format!("malformed JSON: {e}")
            } else if text.starts_with('{') {
                e.to_string()
            } else {
                "expected a JSON object".to_owned()
            };
            return Err(DecodeError::new(id, message));
        }
    };
    let id = request_id(envelope.id).map_err(|m| DecodeError::new(None, m))?;
    match envelope.ty.clone() {
        Some(ty) => match envelope.command(&ty) {
            Ok(command) => Ok(Inbound::Command { id, command }),
            Err(message) => Err(DecodeError::new(id, message)),
        },
        None => match envelope.name {
            Some(name) => Ok(Inbound::LegacyJoin {
                id,
                name,
                token: envelope.token,
            }),
            None => Err(DecodeError::new(id, "missing field `type`")),
        },
    }
}

/// Longest user or group name, in characters.
pub const MAX_NAME_CHARS: usize = 64;

/// The user-name rule, as the `invalid_name` error says it.
pub const NAME_RULE: &str = "a name has 1 to 64 characters, none of them control, format, \
     invisible or unassigned characters, line separators or spaces other than U+0020, and \
     no space at either end";

/// The group-name rule, as every `invalid_group` error says it.
pub const GROUP_RULE: &str = "a group name has 1 to 64 of A-Z a-z 0-9 _ . : -";

/// Characters that make a name look like another one or like nothing: controls, format
/// characters (zero-width spaces and joiners, bidirectional overrides, the BOM),
/// unassigned and private-use code points, line and paragraph separators, spaces other
/// than U+0020 (a no-break space looks like one), and the few letters that render as
/// nothing (Hangul fillers, the combining grapheme joiner).
fn refused_in_name(c: char) -> bool {
    use GeneralCategory::*;
    matches!(
        c.general_category(),
        Control | Format | Unassigned | PrivateUse | Surrogate | LineSeparator | ParagraphSeparator
    ) || (c.general_category() == SpaceSeparator && c != ' ')
        || matches!(
            c,
            '\u{115F}' | '\u{1160}' | '\u{3164}' | '\u{FFA0}' | '\u{034F}'
        )
}

/// A user name: 1 to 64 characters, none [refused](refused_in_name), no leading or
/// trailing space. Expects a name already in NFC ([`normalize_name`]).
pub fn valid_name(name: &str) -> bool {
    let chars = name.chars().count();
    (1..=MAX_NAME_CHARS).contains(&chars)
        && !name.chars().any(refused_in_name)
        && name.trim() == name
}

/// A user name as the hub keeps it: in Unicode NFC, so that the same name typed on two
/// keyboards (precomposed `é`, or `e` and a combining accent) is one user; `invalid_name`
/// if it breaks the rule.
pub fn normalize_name(name: &str) -> Result<String, ReplyError> {
    // Longer than this in bytes cannot be 64 characters; no need to normalize it.
    if name.len() > MAX_NAME_CHARS * 4 * 3 {
        return Err(ReplyError::new(ErrorCode::InvalidName, NAME_RULE));
    }
    let name: String = name.nfc().collect();
    if valid_name(&name) {
        Ok(name)
    } else {
        Err(ReplyError::new(ErrorCode::InvalidName, NAME_RULE))
    }
}

/// A group name: 1 to 64 of `[A-Za-z0-9_.:-]` (ASCII only, so no Unicode look-alikes).
pub fn valid_group(group: &str) -> bool {
    (1..=MAX_NAME_CHARS).contains(&group.len())
        && group
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'.' | b':' | b'-'))
}

/// The groups a classic name lists before its first `_`: `sales,vip_alice` is in `sales`
/// and `vip`. Names with no `_` list none; entries that are not valid group names are
/// skipped (and the router skips groups only the server publishes in).
pub fn legacy_groups(name: &str) -> impl Iterator<Item = &str> {
    let prefix = name.split_once('_').map(|(p, _)| p).unwrap_or("");
    prefix.split(',').filter(|g| valid_group(g))
}

/// Milliseconds since the Unix epoch, for `ts` fields.
pub fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

/// Which route a `message` event took.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Kind {
    Direct,
    Broadcast,
    Group,
}

/// Whether a presence event announces an arrival or a departure.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum PresenceChange {
    Join,
    Leave,
}

/// An event from the hub to a client, borrowed so that encoding copies nothing first.
#[derive(Debug, Serialize)]
#[serde(tag = "type", rename_all = "lowercase")]
pub enum Event<'a> {
    Joined {
        #[serde(skip_serializing_if = "Option::is_none")]
        id: Option<&'a RequestId>,
        name: &'a str,
        session: u64,
        /// The position of the user's stream of direct messages, and whether what the
        /// `join` asked to recover was.
        #[serde(flatten)]
        stream: Stream<'a>,
    },
    Ack {
        #[serde(skip_serializing_if = "Option::is_none")]
        id: Option<&'a RequestId>,
        delivered: usize,
        /// A direct message kept for its recipient, who has no live session now.
        #[serde(skip_serializing_if = "std::ops::Not::not")]
        stored: bool,
        /// Cluster mode: the other nodes were told too (`delivered` counts this node's).
        #[serde(skip_serializing_if = "std::ops::Not::not")]
        cluster: bool,
    },
    Subscribed {
        #[serde(skip_serializing_if = "Option::is_none")]
        id: Option<&'a RequestId>,
        group: &'a str,
        members: usize,
        #[serde(flatten)]
        stream: Stream<'a>,
    },
    Unsubscribed {
        #[serde(skip_serializing_if = "Option::is_none")]
        id: Option<&'a RequestId>,
        group: &'a str,
    },
    Users {
        #[serde(skip_serializing_if = "Option::is_none")]
        id: Option<&'a RequestId>,
        #[serde(skip_serializing_if = "Option::is_none")]
        group: Option<&'a str>,
        /// Sorted; one page of them.
        users: Vec<&'a str>,
        /// How many users there are in all.
        count: usize,
        /// Pass as `after` for the next page; absent on the last page.
        #[serde(skip_serializing_if = "Option::is_none")]
        next: Option<&'a str>,
    },
    Pong {
        #[serde(skip_serializing_if = "Option::is_none")]
        id: Option<&'a RequestId>,
    },
    Error {
        #[serde(skip_serializing_if = "Option::is_none")]
        id: Option<&'a RequestId>,
        code: ErrorCode,
        message: &'a str,
    },
    Message {
        kind: Kind,
        from: &'a str,
        #[serde(skip_serializing_if = "Option::is_none")]
        to: Option<&'a str>,
        #[serde(skip_serializing_if = "Option::is_none")]
        group: Option<&'a str>,
        /// The sender's message id, when it gave one.
        #[serde(skip_serializing_if = "Option::is_none")]
        mid: Option<&'a str>,
        /// Its offset in the group's stream, or the recipient's for a direct message.
        #[serde(skip_serializing_if = "Option::is_none")]
        offset: Option<u64>,
        body: &'a RawValue,
        ts: u64,
    },
    Presence {
        group: &'a str,
        event: PresenceChange,
        name: &'a str,
    },
    /// Every symbol's quote, to the `stock` group once per tick.
    Tick { ts: u64, quotes: &'a [Quote] },
    /// One symbol's quote, to its `stock.<SYMBOL>` group.
    Quote { quote: &'a Quote },
    /// The reply to `history`: oldest first.
    History {
        #[serde(skip_serializing_if = "Option::is_none")]
        id: Option<&'a RequestId>,
        symbol: &'a str,
        quotes: Vec<&'a Quote>,
    },
}

/// A stream's position in `joined` and `subscribed`, and whether a recovery asked for
/// succeeded. All absent for groups without a stream (market data).
#[derive(Debug, Default, Serialize)]
pub struct Stream<'a> {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub epoch: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub offset: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub recovered: Option<bool>,
}

/// One symbol's state after a tick. Prices are in yuan, rounded to cents.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Quote {
    pub symbol: std::sync::Arc<str>,
    pub name: std::sync::Arc<str>,
    /// The day's opening price, from which `change` and the daily limit are measured.
    pub open: f64,
    pub price: f64,
    /// `price - open`.
    pub change: f64,
    /// `change / open`, in percent, two decimals.
    pub change_pct: f64,
    pub high: f64,
    pub low: f64,
    /// Shares traded in this tick.
    pub volume: u64,
    /// Yuan traded since the open.
    pub turnover: f64,
    pub ts: u64,
}

/// Serializes a wire value once; the result is shared by every recipient.
/// The reply to `history` for a group: `messages` holds the kept `message` events
/// (frames the hub made itself, so they are spliced in as they are), oldest first.
pub fn encode_group_history(
    id: Option<&RequestId>,
    group: &str,
    position: &Position,
    frames: &[ByteString],
) -> ByteString {
    #[derive(Serialize)]
    struct Head<'a> {
        #[serde(rename = "type")]
        ty: &'static str,
        #[serde(skip_serializing_if = "Option::is_none")]
        id: Option<&'a RequestId>,
        group: &'a str,
        epoch: &'a str,
        offset: u64,
    }
    let head = encode(&Head {
        ty: "history",
        id,
        group,
        epoch: &position.epoch,
        offset: position.offset,
    });
    let size = head.len() + 16 + frames.iter().map(|f| f.len() + 1).sum::<usize>();
    let mut out = String::with_capacity(size);
    out.push_str(&head[..head.len() - 1]);
    out.push_str(",\"messages\":[");
    for (i, frame) in frames.iter().enumerate() {
        if i > 0 {
            out.push(',');
        }
        out.push_str(frame);
    }
    out.push_str("]}");
    ByteString::from(out)
}

/// A `message` event, encoded into one buffer of about its size: serde_json would grow
/// its buffer by doubling, and the slack (up to half) would stay allocated as long as the
/// frame is kept in history. `extra` is the length of what the event carries besides
/// its fixed fields (body, names, mid); the fixed part and the numbers take under 128
/// bytes, so the buffer is allocated once and its slack stays under that.
pub fn encode_message(event: &Event<'_>, extra: usize) -> ByteString {
    let mut buf = Vec::with_capacity(extra + 128);
    match serde_json::to_writer(&mut buf, event) {
        // serde_json writes UTF-8 only.
        Ok(()) => ByteString::try_from(bytes::Bytes::from(buf)).unwrap_or_else(|_| encode(event)),
        Err(_) => encode(event),
    }
}

/// A `message` frame whose offset Redis fills in (cluster mode): encoded once with
/// [`Template::HOLE`] as its offset, and kept split around it, so that a Lua script can
/// number it and store and publish the very bytes every node delivers.
#[derive(Debug, Clone)]
pub struct Template {
    frame: ByteString,
    /// Where the offset's digits start.
    at: usize,
}

impl Template {
    /// The placeholder offset (no stream gets that far).
    pub const HOLE: u64 = u64::MAX;
    const FIELD: &'static str = ",\"offset\":";
    const DIGITS: usize = 20; // u64::MAX's

    /// `event` must be a `message` with `offset: Some(Template::HOLE)`. The leftmost
    /// `,"offset":` is the event's own: the offset is serialized before the body (the one
    /// part a client writes), and a name or group cannot hold an unescaped quote.
    pub fn encode(event: &Event<'_>, extra: usize) -> Option<Template> {
        let frame = encode_message(event, extra + Self::DIGITS);
        let field = frame.find(Self::FIELD)?;
        let at = field + Self::FIELD.len();
        (frame.get(at..at + Self::DIGITS) == Some("18446744073709551615"))
            .then_some(Template { frame, at })
    }

    /// The frame before the offset's digits.
    pub fn head(&self) -> &str {
        &self.frame[..self.at]
    }

    /// The frame after them.
    pub fn tail(&self) -> &str {
        &self.frame[self.at + Self::DIGITS..]
    }

    /// The frame numbered `offset` (what the Lua script makes; for tests and stand-ins).
    pub fn numbered(&self, offset: u64) -> ByteString {
        ByteString::from(format!("{}{offset}{}", self.head(), self.tail()))
    }

    /// The frame without an offset: what this node's sessions get when Redis cannot
    /// number it (local routing goes on while Redis is away).
    pub fn unnumbered(&self) -> ByteString {
        let head = &self.frame[..self.at - Self::FIELD.len()];
        ByteString::from(format!("{head}{}", self.tail()))
    }
}

pub fn encode<T: Serialize + ?Sized>(value: &T) -> ByteString {
    match serde_json::to_string(value) {
        Ok(s) => ByteString::from(s),
        // Our event types hold only strings, numbers and `Value`s, which always serialize;
        // should that ever change, the client gets a well-formed error instead of a panic.
        Err(e) => {
            log::error!("cannot serialize an event: {e}");
            ByteString::from_static(
                r#"{"type":"error","code":"internal","message":"cannot encode event"}"#,
            )
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn templates_leave_the_offset_to_redis() {
        // A body that mimics the field cannot fool it: the offset comes first.
        let body =
            RawValue::from_string(r#"{"x":1,"offset":18446744073709551615}"#.into()).unwrap();
        let event = |offset| Event::Message {
            kind: Kind::Group,
            from: "a\"b",
            to: None,
            group: Some("g"),
            mid: Some("m1"),
            offset: Some(offset),
            body: &body,
            ts: 7,
        };
        let t = Template::encode(&event(Template::HOLE), 0).unwrap();
        assert_eq!(t.numbered(42), encode(&event(42)));
        assert!(t.head().ends_with(",\"offset\":"), "{}", t.head());
        let plain: serde_json::Value = serde_json::from_str(&t.unnumbered()).unwrap();
        assert!(plain.get("offset").is_none(), "{plain}");
        assert_eq!(plain["body"]["offset"], 18446744073709551615u64);
        assert!(
            Template::encode(&event(3), 0).is_none(),
            "no hole, no template"
        );
    }

    fn command(text: &str) -> (Option<RequestId>, Command) {
        match decode(text) {
            Ok(Inbound::Command { id, command }) => (id, command),
            other => panic!("{text}: {other:?}"),
        }
    }

    #[test]
    fn decodes_every_command() {
        let (id, c) = command(r#"{"type":"join","name":"alice","id":1}"#);
        assert_eq!(id, Some(RequestId::Int(1)));
        assert!(matches!(c, Command::Join { name, token: None, since: None } if name == "alice"));
        let (id, c) = command(r#"{"type":"direct","to":"bob","body":{"x": 1},"id":"a"}"#);
        assert_eq!(id, Some(RequestId::Str("a".into())));
        // The body is kept exactly as the client wrote it.
        assert!(
            matches!(c, Command::Direct { to, body, mid: None } if to == "bob" && body.get() == r#"{"x": 1}"#)
        );
        // A message id is passed on; one that breaks the rule is refused, with the id echoed.
        let (_, c) = command(r#"{"type":"direct","to":"bob","body":1,"mid":"k3x9-17"}"#);
        assert!(matches!(c, Command::Direct { mid: Some(m), .. } if m == "k3x9-17"));
        for bad in [r#""""#, r#""a b""#, r#""é""#, "17"] {
            let text = format!(r#"{{"type":"publish","group":"g","body":1,"mid":{bad},"id":4}}"#);
            let err = decode(&text).expect_err(&text);
            assert_eq!(err.id, Some(RequestId::Int(4)), "{text}");
        }
        let long = format!(
            r#"{{"type":"broadcast","body":1,"mid":"{}"}}"#,
            "m".repeat(65)
        );
        assert!(decode(&long).is_err());
        // Positions to recover from; a malformed one is refused, with the id echoed.
        let (_, c) =
            command(r#"{"type":"subscribe","group":"g","since":{"epoch":"ab12","offset":7}}"#);
        assert!(
            matches!(c, Command::Subscribe { since: Some(p), .. } if &*p.epoch == "ab12" && p.offset == 7)
        );
        let (_, c) = command(r#"{"type":"join","name":"a","since":null}"#);
        assert!(matches!(c, Command::Join { since: None, .. }));
        for bad in [
            r#""ab12:7""#,
            r#"{"epoch":"ab12"}"#,
            r#"{"offset":7}"#,
            r#"{"epoch":"ab12","offset":-1}"#,
            r#"{"epoch":"ab12","offset":1.5}"#,
            r#"{"epoch":"","offset":1}"#,
            r#"{"epoch":"a b","offset":1}"#,
            r#"{"epoch":7,"offset":1}"#,
            r#"{"epoch":"ab12","offset":18446744073709551616}"#,
            "[]",
        ] {
            let text = format!(r#"{{"type":"subscribe","group":"g","since":{bad},"id":9}}"#);
            let err = decode(&text).expect_err(&text);
            assert_eq!(
                (err.id, err.message.as_str()),
                (Some(RequestId::Int(9)), SINCE_RULE),
                "{text}"
            );
        }
        // `history` with a group instead of a symbol asks for the group's messages.
        let (_, c) = command(r#"{"type":"history","group":"room","limit":5}"#);
        assert!(matches!(c, Command::GroupHistory { group, limit: 5 } if group == "room"));
        assert!(matches!(
            command(r#"{"type":"broadcast","body":null}"#).1,
            Command::Broadcast { body, .. } if body.get() == "null"
        ));
        assert!(matches!(
            command(r#"{"type":"subscribe","group":"g"}"#).1,
            Command::Subscribe { group, presence: false, since: None } if group == "g"
        ));
        assert!(matches!(
            command(r#"{"type":"subscribe","group":"g","presence":true}"#).1,
            Command::Subscribe { presence: true, .. }
        ));
        assert!(matches!(
            command(r#"{"type":"unsubscribe","group":"g"}"#).1,
            Command::Unsubscribe { group } if group == "g"
        ));
        assert!(matches!(
            command(r#"{"type":"publish","group":"g","body":"hi"}"#).1,
            Command::Publish { group, body, .. } if group == "g" && body.get() == r#""hi""#
        ));
        assert!(matches!(
            command(r#"{"type":"users"}"#).1,
            Command::Users { group: None, page } if page.limit == DEFAULT_USERS_PAGE && page.after.is_none()
        ));
        // A page is cut to the most a reply carries, and costs by its size.
        let (_, users) = command(r#"{"type":"users","limit":1000000,"after":"bob"}"#);
        assert!(matches!(
            &users,
            Command::Users { page, .. } if page.limit == MAX_PAGE && page.after.as_deref() == Some("bob")
        ));
        assert_eq!(users.cost(), 11);
        assert_eq!(Command::Ping.cost(), 1);
        assert_eq!(command(r#"{"type":"users","limit":0}"#).1.cost(), 2);
        assert_eq!(command(r#"{"type":"history","symbol":"x"}"#).1.cost(), 11);
        assert_eq!(
            command(r#"{"type":"history","symbol":"x","limit":50,"before":9}"#)
                .1
                .cost(),
            2
        );
        assert!(matches!(command(r#"{"type":"ping"}"#).1, Command::Ping));
        assert!(matches!(
            command(r#"{"type":"history","symbol":"600519","limit":5}"#).1,
            Command::History { symbol, page: HistoryPage { limit: Some(5), before: None } } if symbol == "600519"
        ));
        let (id, _) = command(r#"{"type":"ping","id":18446744073709551615}"#);
        assert_eq!(id, Some(RequestId::UInt(u64::MAX)));
        let (id, _) = command(r#"{"type":"ping","id":"a\"b"}"#);
        assert_eq!(id, Some(RequestId::Str("a\"b".into())));
    }

    #[test]
    fn tolerates_bom_and_whitespace() {
        assert!(matches!(
            command("\u{feff} {\"type\":\"ping\"}\n").1,
            Command::Ping
        ));
        assert!(matches!(
            command(" \u{feff}{\"type\":\"ping\"}").1,
            Command::Ping
        ));
        assert!(matches!(decode(" stock\n"), Ok(Inbound::LegacyStock)));
    }

    #[test]
    fn classic_login_has_no_type() {
        assert!(matches!(
            decode(r#"{"name":"sales,vip_alice","id":3}"#),
            Ok(Inbound::LegacyJoin { id: Some(RequestId::Int(3)), name, token: None })
                if name == "sales,vip_alice"
        ));
    }

    #[test]
    fn bad_input_is_a_decode_error_with_the_id_when_readable() {
        for bad in [
            "",
            "{",
            "[1,2]",
            "42",
            "stocks",
            r#"{"id":1}"#,
            r#"{"type":7}"#,
            r#"{"type":"nope"}"#,
            r#"{"type":"direct","to":"bob"}"#,
            r#"{"type":"subscribe","group":5}"#,
            r#"{"type":"join","name":null}"#,
            r#"{"type":"ping","id":1.5}"#,
            r#"{"type":"ping","id":[1]}"#,
            r#"{"name":3}"#,
        ] {
            assert!(decode(bad).is_err(), "{bad} should not decode");
        }
        let err = decode(r#"{"type":"nope","id":"x"}"#).unwrap_err();
        assert_eq!(err.id, Some(RequestId::Str("x".into())));
        assert!(err.message.contains("nope"), "{}", err.message);
        // A mistyped field fails the whole message, but the id is still echoed.
        let err = decode(r#"{"type":"subscribe","group":5,"id":7}"#).unwrap_err();
        assert_eq!(err.id, Some(RequestId::Int(7)));
        let err = decode(r#"{"type":"direct","to":"bob","id":8}"#).unwrap_err();
        assert_eq!(
            (err.id, err.message.as_str()),
            (Some(RequestId::Int(8)), "missing field `body`")
        );
    }

    #[test]
    fn names_and_groups() {
        assert!(valid_name("alice"));
        assert!(valid_name("张三"));
        assert!(valid_name(&"é".repeat(64)));
        assert!(!valid_name(&"é".repeat(65)));
        assert!(!valid_name(""));
        assert!(!valid_name(" alice"));
        assert!(!valid_name("alice "));
        assert!(!valid_name("a\nb"));
        // Look-alikes and invisible names.
        for bad in [
            "alice\u{200b}",
            "\u{200b}",
            "\u{202e}ecila",
            "\u{feff}alice",
            "al\u{2028}ice",
            "a\u{00a0}b",
            "\u{3164}",
            "a\u{e000}",
            "a\u{0378}",
        ] {
            assert!(!valid_name(bad), "{bad:?}");
            assert_eq!(
                normalize_name(bad).map_err(|e| e.code),
                Err(ErrorCode::InvalidName)
            );
        }
        assert!(valid_name("alice b"));
        assert!(valid_name("❤\u{fe0f}"));
        // The same name typed two ways is one name.
        assert_eq!(normalize_name("e\u{301}"), Ok("\u{e9}".to_owned()));
        assert_eq!(normalize_name("\u{e9}"), Ok("\u{e9}".to_owned()));
        assert!(normalize_name(&"x".repeat(10_000)).is_err());
        assert!(valid_group("room-1.a:b_c"));
        assert!(!valid_group("room 1"));
        assert!(!valid_group(""));
        assert!(!valid_group(&"g".repeat(65)));
    }

    #[test]
    fn legacy_groups_come_from_the_prefix() {
        assert_eq!(
            legacy_groups("sales,vip_alice").collect::<Vec<_>>(),
            ["sales", "vip"]
        );
        assert_eq!(legacy_groups("alice").count(), 0);
        assert_eq!(legacy_groups("_alice").count(), 0);
        assert_eq!(
            legacy_groups("ok,bad group,stock_x").collect::<Vec<_>>(),
            ["ok", "stock"]
        );
    }

    #[test]
    fn events_encode_with_type_and_optional_id() {
        let id = RequestId::Int(7);
        assert_eq!(
            encode(&Event::Ack {
                id: Some(&id),
                delivered: 2,
                stored: false,
                cluster: false,
            })
            .to_string(),
            r#"{"type":"ack","id":7,"delivered":2}"#
        );
        assert_eq!(
            encode(&Event::Ack {
                id: None,
                delivered: 0,
                stored: true,
                cluster: false,
            })
            .to_string(),
            r#"{"type":"ack","delivered":0,"stored":true}"#
        );
        assert_eq!(
            encode(&Event::Subscribed {
                id: None,
                group: "g",
                members: 1,
                stream: Stream {
                    epoch: Some("e"),
                    offset: Some(4),
                    recovered: Some(true),
                },
            })
            .to_string(),
            r#"{"type":"subscribed","group":"g","members":1,"epoch":"e","offset":4,"recovered":true}"#
        );
        assert_eq!(
            encode(&Event::Subscribed {
                id: None,
                group: "stock",
                members: 1,
                stream: Stream::default(),
            })
            .to_string(),
            r#"{"type":"subscribed","group":"stock","members":1}"#
        );
        assert_eq!(
            encode(&Event::Pong { id: None }).to_string(),
            r#"{"type":"pong"}"#
        );
        let body = RawValue::from_string(r#"{"text":"hi"}"#.into()).unwrap();
        assert_eq!(
            encode(&Event::Message {
                kind: Kind::Group,
                from: "a",
                to: None,
                group: Some("g"),
                mid: None,
                offset: Some(3),
                body: &body,
                ts: 1
            })
            .to_string(),
            r#"{"type":"message","kind":"group","from":"a","group":"g","offset":3,"body":{"text":"hi"},"ts":1}"#
        );
        assert_eq!(
            encode(&Event::Message {
                kind: Kind::Direct,
                from: "a",
                to: Some("b"),
                group: None,
                mid: Some("m-1"),
                offset: None,
                body: &body,
                ts: 1
            })
            .to_string(),
            r#"{"type":"message","kind":"direct","from":"a","to":"b","mid":"m-1","body":{"text":"hi"},"ts":1}"#
        );
    }
}
