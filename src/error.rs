//! Stable wire codes, in one place.
//!
//! Two tiers, as in centrifuge: a [`ReplyError`] answers one command and keeps the
//! connection; a [`CloseReason`] ends the connection with a WebSocket close code. The
//! strings and numbers here are part of the protocol (docs/PROTOCOL.md): never renumber.

use std::borrow::Cow;

use serde::Serialize;

/// The `code` of an `error` reply. The connection stays open after any of these.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum ErrorCode {
    /// Malformed JSON, unknown `type`, missing or mistyped field, non-UTF-8 binary frame.
    BadRequest,
    /// The command needs a `join` first.
    NotJoined,
    /// A session joins once; a second `join` is refused.
    AlreadyJoined,
    /// A user name breaks the naming rules.
    InvalidName,
    /// A group name breaks the naming rules.
    InvalidGroup,
    /// The target user is not online (nor seen within the history window), or the stock
    /// symbol is unknown.
    NotFound,
    /// The message exceeded the size limit (sent just before a 1009 close).
    TooLarge,
    /// The group is read-only for clients (the ticker's `stock` groups).
    Forbidden,
    /// The session is already in as many groups as the hub allows.
    TooManyGroups,
    /// The join token is missing, invalid, expired or for another name.
    Unauthorized,
    /// The session sent commands faster than its rate limit.
    RateLimited,
    /// The hub is too busy to take the command now (its queue is full); retry shortly.
    Overloaded,
    /// The hub could not do what was asked for a reason of its own.
    Internal,
}

impl ErrorCode {
    /// The wire string, as it appears in `{"type":"error","code":...}`.
    pub fn as_str(self) -> &'static str {
        match self {
            ErrorCode::BadRequest => "bad_request",
            ErrorCode::NotJoined => "not_joined",
            ErrorCode::AlreadyJoined => "already_joined",
            ErrorCode::InvalidName => "invalid_name",
            ErrorCode::InvalidGroup => "invalid_group",
            ErrorCode::NotFound => "not_found",
            ErrorCode::TooLarge => "too_large",
            ErrorCode::Forbidden => "forbidden",
            ErrorCode::TooManyGroups => "too_many_groups",
            ErrorCode::Unauthorized => "unauthorized",
            ErrorCode::RateLimited => "rate_limited",
            ErrorCode::Overloaded => "overloaded",
            ErrorCode::Internal => "internal",
        }
    }
}

impl std::fmt::Display for ErrorCode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// An error answered to one command: the wire code and a sentence for people.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{code}: {message}")]
pub struct ReplyError {
    /// Machine-readable, stable.
    pub code: ErrorCode,
    /// Human-readable; may change between versions.
    pub message: Cow<'static, str>,
}

impl ReplyError {
    pub fn new(code: ErrorCode, message: impl Into<Cow<'static, str>>) -> Self {
        ReplyError {
            code,
            message: message.into(),
        }
    }
}

/// Why the hub ends a connection; each maps to one WebSocket close code.
///
/// The RFC's codes keep their meanings (1000, 1001, 1002, 1007, 1009, 1011); the hub's
/// own reasons have application codes a client can act on without reading text, in two
/// ranges, as centrifuge's disconnect codes do: 4000-4499, reconnect (with backoff);
/// 4500-4999, do not reconnect until the cause is fixed ([`CloseReason::reconnect`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CloseReason {
    /// 1000: the client asked to close.
    Normal,
    /// 1001: the hub is shutting down; reconnect (elsewhere).
    Shutdown,
    /// 1002: the client broke the WebSocket protocol (e.g. bad fragmentation).
    Protocol,
    /// 1007: a text message was not valid UTF-8.
    InvalidData,
    /// 4000: nothing heard from the client (no frame, no pong) for the client timeout.
    HeartbeatTimeout,
    /// 4001: the client fell too far behind; its queued bytes passed the bound.
    SlowConsumer,
    /// 4002: the client kept sending past its rate limit.
    Flood,
    /// 4500: three bad tokens on one connection.
    Unauthorized,
    /// 1009: a frame or reassembled message exceeded the size limit.
    TooBig,
    /// 1011: the hub failed internally.
    Internal,
    /// 1008: the server disconnected the user (the server API's `disconnect`).
    Kicked,
}

impl CloseReason {
    /// The close code sent in the Close frame.
    pub fn code(self) -> u16 {
        match self {
            CloseReason::Normal => 1000,
            CloseReason::Shutdown => 1001,
            CloseReason::Protocol => 1002,
            CloseReason::InvalidData => 1007,
            CloseReason::HeartbeatTimeout => 4000,
            CloseReason::SlowConsumer => 4001,
            CloseReason::Flood => 4002,
            CloseReason::Unauthorized => 4500,
            CloseReason::TooBig => 1009,
            CloseReason::Internal => 1011,
            CloseReason::Kicked => 1008,
        }
    }

    /// Whether a client should reconnect after a close with `code`: not after 1000 (it
    /// asked), nor after a code of 4500-4999 (it must fix the cause first, e.g. get a
    /// new token); after any other, with backoff.
    pub fn reconnect(code: u16) -> bool {
        !(code == 1000 || (4500..=4999).contains(&code))
    }

    /// The close frame's reason text.
    pub fn description(self) -> &'static str {
        match self {
            CloseReason::Normal => "bye",
            CloseReason::Shutdown => "hub shutting down",
            CloseReason::Protocol => "protocol error",
            CloseReason::InvalidData => "invalid utf-8",
            CloseReason::HeartbeatTimeout => "heartbeat timeout",
            CloseReason::SlowConsumer => "slow consumer",
            CloseReason::Unauthorized => "unauthorized",
            CloseReason::Flood => "rate limit exceeded",
            CloseReason::TooBig => "message too big",
            CloseReason::Internal => "internal error",
            CloseReason::Kicked => "disconnected by the server",
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn close_codes_are_distinct_and_say_whether_to_reconnect() {
        let all = [
            CloseReason::Normal,
            CloseReason::Shutdown,
            CloseReason::Protocol,
            CloseReason::InvalidData,
            CloseReason::HeartbeatTimeout,
            CloseReason::SlowConsumer,
            CloseReason::Flood,
            CloseReason::Unauthorized,
            CloseReason::TooBig,
            CloseReason::Internal,
            CloseReason::Kicked,
        ];
        let codes: std::collections::HashSet<u16> = all.iter().map(|r| r.code()).collect();
        assert_eq!(codes.len(), all.len());
        for r in [
            CloseReason::Shutdown,
            CloseReason::HeartbeatTimeout,
            CloseReason::SlowConsumer,
            CloseReason::Flood,
            CloseReason::Internal,
        ] {
            assert!(CloseReason::reconnect(r.code()), "{r:?}");
        }
        assert!(!CloseReason::reconnect(CloseReason::Unauthorized.code()));
        assert!(!CloseReason::reconnect(CloseReason::Normal.code()));
        // A dropped connection (1006, never sent on the wire) is worth another try.
        assert!(CloseReason::reconnect(1006));
    }

    #[test]
    fn wire_strings_match_serde() {
        for code in [
            ErrorCode::BadRequest,
            ErrorCode::NotJoined,
            ErrorCode::AlreadyJoined,
            ErrorCode::InvalidName,
            ErrorCode::InvalidGroup,
            ErrorCode::NotFound,
            ErrorCode::TooLarge,
            ErrorCode::Forbidden,
            ErrorCode::TooManyGroups,
            ErrorCode::Unauthorized,
            ErrorCode::RateLimited,
            ErrorCode::Overloaded,
            ErrorCode::Internal,
        ] {
            let json = serde_json::to_string(&code).unwrap();
            assert_eq!(json, format!("\"{}\"", code.as_str()));
        }
    }
}
