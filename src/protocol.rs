//! Protocol v1 on the wire: commands in, events out, and the naming rules.
//!
//! Wire types only: nothing here knows about actors or sockets. [`decode`] turns one text
//! message into an [`Inbound`] or a `bad_request` [`DecodeError`]; events are serialized
//! once into a [`ByteString`] that every recipient shares. docs/PROTOCOL.md is the
//! reference for everything in this file.

use bytestring::ByteString;
use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::error::ErrorCode;

/// The `id` a client may put on a command, echoed in its reply: a string or an integer.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(untagged)]
pub enum RequestId {
    Int(i64),
    UInt(u64),
    Str(String),
}

/// A command from a client (the `type` field selects the variant).
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(tag = "type", rename_all = "lowercase")]
pub enum Command {
    Join {
        name: String,
        /// Required when the hub has an auth secret (see docs/SECURITY.md).
        #[serde(default)]
        token: Option<String>,
    },
    Direct {
        to: String,
        body: Value,
    },
    Broadcast {
        body: Value,
    },
    Subscribe {
        group: String,
        #[serde(default)]
        presence: bool,
    },
    Unsubscribe {
        group: String,
    },
    Publish {
        group: String,
        body: Value,
    },
    Users {
        #[serde(default)]
        group: Option<String>,
    },
    Ping,
    History {
        symbol: String,
        #[serde(default)]
        limit: Option<usize>,
    },
}

/// What one inbound text message means.
#[derive(Debug, Clone, PartialEq)]
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
    let value: Value = serde_json::from_str(text)
        .map_err(|e| DecodeError::new(None, format!("malformed JSON: {e}")))?;
    let Value::Object(map) = &value else {
        return Err(DecodeError::new(None, "expected a JSON object"));
    };
    let id = match map.get("id") {
        None | Some(Value::Null) => None,
        Some(Value::String(s)) => Some(RequestId::Str(s.clone())),
        Some(Value::Number(n)) => match (n.as_i64(), n.as_u64()) {
            (Some(i), _) => Some(RequestId::Int(i)),
            (None, Some(u)) => Some(RequestId::UInt(u)),
            _ => {
                return Err(DecodeError::new(
                    None,
                    "`id` must be a string or an integer",
                ))
            }
        },
        Some(_) => {
            return Err(DecodeError::new(
                None,
                "`id` must be a string or an integer",
            ))
        }
    };
    match map.get("type") {
        None => match map.get("name") {
            Some(Value::String(name)) => {
                let token = match map.get("token") {
                    None | Some(Value::Null) => None,
                    Some(Value::String(t)) => Some(t.clone()),
                    Some(_) => return Err(DecodeError::new(id, "`token` must be a string")),
                };
                Ok(Inbound::LegacyJoin {
                    id,
                    name: name.clone(),
                    token,
                })
            }
            Some(_) => Err(DecodeError::new(id, "`name` must be a string")),
            None => Err(DecodeError::new(id, "missing field `type`")),
        },
        Some(Value::String(_)) => match Command::deserialize(value) {
            Ok(command) => Ok(Inbound::Command { id, command }),
            Err(e) => Err(DecodeError::new(id, e.to_string())),
        },
        Some(_) => Err(DecodeError::new(id, "`type` must be a string")),
    }
}

/// Longest user or group name, in characters.
pub const MAX_NAME_CHARS: usize = 64;

/// A user name: 1 to 64 characters, no control characters, no leading or trailing space.
pub fn valid_name(name: &str) -> bool {
    let chars = name.chars().count();
    (1..=MAX_NAME_CHARS).contains(&chars)
        && !name.chars().any(char::is_control)
        && name.trim() == name
}

/// A group name: 1 to 64 of `[A-Za-z0-9_.:-]`.
pub fn valid_group(group: &str) -> bool {
    (1..=MAX_NAME_CHARS).contains(&group.len())
        && group
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'.' | b':' | b'-'))
}

/// The ticker's groups: `stock` and `stock.<SYMBOL>`; read-only for clients.
pub fn is_stock_group(group: &str) -> bool {
    group == "stock" || group.starts_with("stock.")
}

/// The groups a classic name lists before its first `_`: `sales,vip_alice` is in `sales`
/// and `vip`. Names with no `_` list none; entries that are not valid group names are
/// skipped.
pub fn legacy_groups(name: &str) -> impl Iterator<Item = &str> {
    let prefix = name.split_once('_').map(|(p, _)| p).unwrap_or("");
    prefix
        .split(',')
        .filter(|g| valid_group(g) && !is_stock_group(g))
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
    },
    Ack {
        #[serde(skip_serializing_if = "Option::is_none")]
        id: Option<&'a RequestId>,
        delivered: usize,
    },
    Subscribed {
        #[serde(skip_serializing_if = "Option::is_none")]
        id: Option<&'a RequestId>,
        group: &'a str,
        members: usize,
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
        /// Sorted; at most [`crate::hub::MAX_LISTED_USERS`] of them.
        users: Vec<&'a str>,
        /// How many users there are in all.
        count: usize,
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
        body: &'a Value,
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
    use serde_json::json;

    fn command(text: &str) -> (Option<RequestId>, Command) {
        match decode(text) {
            Ok(Inbound::Command { id, command }) => (id, command),
            other => panic!("{text}: {other:?}"),
        }
    }

    #[test]
    fn decodes_every_command() {
        assert_eq!(
            command(r#"{"type":"join","name":"alice","id":1}"#),
            (
                Some(RequestId::Int(1)),
                Command::Join {
                    name: "alice".into(),
                    token: None
                }
            )
        );
        assert_eq!(
            command(r#"{"type":"direct","to":"bob","body":{"x":1},"id":"a"}"#),
            (
                Some(RequestId::Str("a".into())),
                Command::Direct {
                    to: "bob".into(),
                    body: json!({"x":1})
                }
            )
        );
        assert_eq!(
            command(r#"{"type":"broadcast","body":null}"#).1,
            Command::Broadcast { body: Value::Null }
        );
        assert_eq!(
            command(r#"{"type":"subscribe","group":"g"}"#).1,
            Command::Subscribe {
                group: "g".into(),
                presence: false
            }
        );
        assert_eq!(
            command(r#"{"type":"subscribe","group":"g","presence":true}"#).1,
            Command::Subscribe {
                group: "g".into(),
                presence: true
            }
        );
        assert_eq!(
            command(r#"{"type":"unsubscribe","group":"g"}"#).1,
            Command::Unsubscribe { group: "g".into() }
        );
        assert_eq!(
            command(r#"{"type":"publish","group":"g","body":"hi"}"#).1,
            Command::Publish {
                group: "g".into(),
                body: json!("hi")
            }
        );
        assert_eq!(
            command(r#"{"type":"users"}"#).1,
            Command::Users { group: None }
        );
        assert_eq!(command(r#"{"type":"ping"}"#).1, Command::Ping);
        assert_eq!(
            command(r#"{"type":"history","symbol":"600519","limit":5}"#).1,
            Command::History {
                symbol: "600519".into(),
                limit: Some(5)
            }
        );
    }

    #[test]
    fn tolerates_bom_and_whitespace() {
        assert_eq!(command("\u{feff} {\"type\":\"ping\"}\n").1, Command::Ping);
        assert_eq!(command(" \u{feff}{\"type\":\"ping\"}").1, Command::Ping);
        assert_eq!(decode(" stock\n"), Ok(Inbound::LegacyStock));
    }

    #[test]
    fn classic_login_has_no_type() {
        assert_eq!(
            decode(r#"{"name":"sales,vip_alice"}"#),
            Ok(Inbound::LegacyJoin {
                id: None,
                name: "sales,vip_alice".into(),
                token: None
            })
        );
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
        assert!(valid_group("room-1.a:b_c"));
        assert!(!valid_group("room 1"));
        assert!(!valid_group(""));
        assert!(!valid_group(&"g".repeat(65)));
        assert!(is_stock_group("stock"));
        assert!(is_stock_group("stock.600519"));
        assert!(!is_stock_group("stocks"));
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
            ["ok"]
        );
    }

    #[test]
    fn events_encode_with_type_and_optional_id() {
        let id = RequestId::Int(7);
        assert_eq!(
            encode(&Event::Ack {
                id: Some(&id),
                delivered: 2
            })
            .to_string(),
            r#"{"type":"ack","id":7,"delivered":2}"#
        );
        assert_eq!(
            encode(&Event::Pong { id: None }).to_string(),
            r#"{"type":"pong"}"#
        );
        let body = json!({"text":"hi"});
        assert_eq!(
            encode(&Event::Message {
                kind: Kind::Group,
                from: "a",
                to: None,
                group: Some("g"),
                body: &body,
                ts: 1
            })
            .to_string(),
            r#"{"type":"message","kind":"group","from":"a","group":"g","body":{"text":"hi"},"ts":1}"#
        );
    }
}
