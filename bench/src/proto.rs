//! Just enough of protocol v1 to drive the hub and read its frames fast: commands are
//! formatted by hand, and incoming frames are scanned for the few fields a scenario
//! needs (no JSON tree per message).

use std::sync::LazyLock;

use memchr::memmem::Finder;

/// The `type` of a hub frame (`message`, `ack`, `joined`, ...), or `b""`.
pub fn msg_type(t: &[u8]) -> &[u8] {
    const KEY: &[u8] = b"\"type\":\"";
    // The hub writes `type` first; fall back to a search for other producers.
    let at = if t.starts_with(b"{\"type\":\"") {
        Some(1)
    } else {
        find(t, KEY)
    };
    let Some(at) = at else { return b"" };
    let rest = &t[at + KEY.len()..];
    match rest.iter().position(|&c| c == b'"') {
        Some(end) => &rest[..end],
        None => b"",
    }
}

/// The `code` of an `error` frame (`b"?"` if it has none), or `None` for any other
/// frame. The hub writes `type` first, so a frame that is not an error costs one prefix
/// comparison and no search.
pub fn error_code(t: &[u8]) -> Option<&[u8]> {
    const ERROR: &[u8] = b"{\"type\":\"error\"";
    let rest = t.strip_prefix(ERROR)?;
    Some(str_after(rest, b"\"code\":\"").unwrap_or(b"?"))
}

/// The first position of `needle` in `hay`. A vectorised search: a hand-rolled one that
/// compared at every `"` of a frame took a third of this tool's CPU at saturation, CPU
/// the hub on the same two cores then did not get.
pub fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    memchr::memmem::find(hay, needle)
}

/// Parses the unsigned integer at the start of `b`.
fn leading_u64(b: &[u8]) -> Option<(u64, usize)> {
    let mut v: u64 = 0;
    let mut n = 0;
    while let Some(d) = b.get(n).filter(|d| d.is_ascii_digit()) {
        v = v.wrapping_mul(10).wrapping_add((d - b'0') as u64);
        n += 1;
    }
    (n > 0).then_some((v, n))
}

/// The unsigned integer right after `key` (e.g. `"delivered":`).
pub fn num_after(t: &[u8], key: &[u8]) -> Option<u64> {
    let at = find(t, key)? + key.len();
    leading_u64(&t[at..]).map(|v| v.0)
}

/// The string value right after `key` (e.g. `"code":"`), up to the next quote.
pub fn str_after<'a>(t: &'a [u8], key: &[u8]) -> Option<&'a [u8]> {
    let at = find(t, key)? + key.len();
    let rest = &t[at..];
    rest.iter().position(|&c| c == b'"').map(|e| &rest[..e])
}

/// `(seq, ts)` from a message whose body is this tool's `[SEQ,TS,...]`.
pub fn body_pair(t: &[u8]) -> Option<(u64, u64)> {
    const KEY: &[u8] = b"\"body\":[";
    // Built once: setting a searcher up per frame cost as much as the search.
    static BODY: LazyLock<Finder<'static>> = LazyLock::new(|| Finder::new(KEY));
    let at = BODY.find(t)? + KEY.len();
    let (seq, n) = leading_u64(&t[at..])?;
    let rest = &t[at + n..];
    let rest = rest.strip_prefix(b",")?;
    let (ts, _) = leading_u64(rest)?;
    Some((seq, ts))
}

/// The body this tool sends: `[SEQ,TS]`, or `[SEQ,TS,"xxx..."]` padded to `pad` bytes.
pub fn body(out: &mut String, seq: u64, ts: u64, pad: usize) {
    use std::fmt::Write;
    let _ = write!(out, "[{seq},{ts}");
    if pad > 0 {
        out.push_str(",\"");
        out.extend(std::iter::repeat_n('x', pad));
        out.push('"');
    }
    out.push(']');
}

pub fn join(name: &str) -> String {
    format!("{{\"type\":\"join\",\"name\":\"{name}\"}}")
}

pub fn subscribe(group: &str) -> String {
    format!("{{\"type\":\"subscribe\",\"group\":\"{group}\"}}")
}

pub fn publish(out: &mut String, group: &str, seq: u64, ts: u64, pad: usize) {
    out.clear();
    out.push_str("{\"type\":\"publish\",\"group\":\"");
    out.push_str(group);
    out.push_str("\",\"body\":");
    body(out, seq, ts, pad);
    out.push('}');
}

pub fn direct(out: &mut String, to: &str, seq: u64, ts: u64, pad: usize) {
    out.clear();
    out.push_str("{\"type\":\"direct\",\"to\":\"");
    out.push_str(to);
    out.push_str("\",\"body\":");
    body(out, seq, ts, pad);
    out.push('}');
}

pub fn broadcast(out: &mut String, seq: u64, ts: u64, pad: usize) {
    out.clear();
    out.push_str("{\"type\":\"broadcast\",\"body\":");
    body(out, seq, ts, pad);
    out.push('}');
}

pub const PING: &str = "{\"type\":\"ping\"}";

/// Socket.IO 4 over a raw WebSocket (Engine.IO 4): the few packets `fanout2` uses.
/// Engine.IO's `2` (ping) is answered with `3` (pong); `40` connects to the main
/// namespace and the node answers `40{"sid":..}`; `42[..]` is an event.
pub mod sio {
    /// Connect to the main namespace.
    pub const CONNECT: &str = "40";
    /// The node's answer starts so.
    pub const CONNECTED: &str = "40";
    pub const PING: &[u8] = b"2";
    pub const PONG: &[u8] = b"3";
    /// A namespace connect refused.
    pub const CONNECT_ERROR: &[u8] = b"44";
    /// The event the peer hub re-emits to the rest of its room.
    const EVENT: &[u8] = b"42[\"pub\",[";

    /// The publisher's event: `42["pub",[SEQ,TS]]` (the body as [`super::body`]).
    pub fn publish(out: &mut String, seq: u64, ts: u64, pad: usize) {
        out.clear();
        out.push_str("42[\"pub\",");
        super::body(out, seq, ts, pad);
        out.push(']');
    }

    /// `(seq, ts)` from a `pub` event this tool published, as the hub re-emits it.
    pub fn body_pair(t: &[u8]) -> Option<(u64, u64)> {
        let rest = t.strip_prefix(EVENT)?;
        let (seq, n) = super::leading_u64(rest)?;
        let rest = rest[n..].strip_prefix(b",")?;
        let (ts, _) = super::leading_u64(rest)?;
        Some((seq, ts))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_hub_frames() {
        let m = br#"{"type":"message","kind":"group","from":"pub","group":"bench","body":[17,123456789],"ts":1763916000789}"#;
        assert_eq!(msg_type(m), b"message");
        assert_eq!(body_pair(m), Some((17, 123456789)));
        let a = br#"{"type":"ack","id":6,"delivered":3}"#;
        assert_eq!(msg_type(a), b"ack");
        assert_eq!(num_after(a, b"\"delivered\":"), Some(3));
        let e = br#"{"type":"error","code":"not_found","message":"x"}"#;
        assert_eq!(str_after(e, b"\"code\":\""), Some(&b"not_found"[..]));
        assert_eq!(error_code(e), Some(&b"not_found"[..]));
        let r = br#"{"type":"error","id":7,"code":"rate_limited","message":"slow down"}"#;
        assert_eq!(error_code(r), Some(&b"rate_limited"[..]));
        assert_eq!(error_code(br#"{"type":"error"}"#), Some(&b"?"[..]));
        assert_eq!(error_code(a), None);
        assert_eq!(error_code(m), None);
        let t = br#"{"type":"tick","ts":1763916001000,"quotes":[]}"#;
        assert_eq!(num_after(t, b"\"ts\":"), Some(1763916001000));
        assert_eq!(msg_type(br#"{"a":1,"type":"pong"}"#), b"pong");
        assert_eq!(msg_type(b"[0.42,0.13]"), b"");
        assert_eq!(body_pair(br#"{"body":"t"}"#), None);
    }

    #[test]
    fn writes_commands() {
        let mut s = String::new();
        publish(&mut s, "bench", 3, 99, 0);
        assert_eq!(s, r#"{"type":"publish","group":"bench","body":[3,99]}"#);
        direct(&mut s, "d1b", 1, 2, 3);
        assert_eq!(s, r#"{"type":"direct","to":"d1b","body":[1,2,"xxx"]}"#);
        assert_eq!(body_pair(s.as_bytes()), Some((1, 2)));
        assert_eq!(join("u1"), r#"{"type":"join","name":"u1"}"#);
        let v: serde_json::Value = serde_json::from_str(&subscribe("g")).unwrap();
        assert_eq!(v["group"], "g");
    }

    #[test]
    fn speaks_socketio() {
        let mut s = String::new();
        sio::publish(&mut s, 7, 123, 0);
        assert_eq!(s, r#"42["pub",[7,123]]"#);
        assert_eq!(sio::body_pair(s.as_bytes()), Some((7, 123)));
        sio::publish(&mut s, 8, 9, 2);
        assert_eq!(s, r#"42["pub",[8,9,"xx"]]"#);
        assert_eq!(sio::body_pair(s.as_bytes()), Some((8, 9)));
        assert_eq!(sio::body_pair(br#"42["other",[1,2]]"#), None);
        assert_eq!(sio::body_pair(br#"42["pub","t=1"]"#), None);
        assert_eq!(sio::body_pair(b"2"), None);
    }

    #[test]
    fn find_works() {
        assert_eq!(find(b"abcabd", b"abd"), Some(3));
        assert_eq!(find(b"ab", b"abc"), None);
        assert_eq!(find(b"xxxx", b"y"), None);
    }
}
