//! Frame-level behaviour over a real socket: fragments, BOM, binary JSON, size limits,
//! invalid UTF-8, protocol errors, heartbeats. A raw client writes exact frames.

mod common;

use common::*;
use serde_json::{json, Value};

const TEXT: u8 = 0x1;
const BINARY: u8 = 0x2;
const CONTINUATION: u8 = 0x0;
const CLOSE: u8 = 0x8;
const PING: u8 = 0x9;
const PONG: u8 = 0xA;
const FIN: u8 = 0x80;

async fn read_json(raw: &mut RawClient) -> Value {
    loop {
        let (op, payload) = raw.read_frame().await.expect("connection ended");
        if op == TEXT {
            return serde_json::from_slice(&payload).unwrap();
        }
        assert_eq!(op, PING, "unexpected opcode {op}");
    }
}

fn small_limit() -> Config {
    Config {
        max_message_bytes: 1024,
        ..config()
    }
}

#[actix_web::test]
async fn fragmented_messages_are_reassembled() {
    let hub = TestHub::start(config());
    let mut raw = RawClient::handshake(hub.addr, "/ws").await;
    raw.write_frame(TEXT, br#"{"type":"#).await;
    // A ping may come between fragments; the hub answers it at once.
    raw.write_frame(FIN | PING, b"hb").await;
    raw.write_frame(CONTINUATION, br#""ping","#).await;
    raw.write_frame(FIN | CONTINUATION, br#""id":"frag"}"#)
        .await;
    let (op, payload) = raw.read_frame().await.unwrap();
    assert_eq!((op, payload.as_slice()), (PONG, &b"hb"[..]));
    assert_eq!(
        read_json(&mut raw).await,
        json!({"type":"pong","id":"frag"})
    );
    // Binary fragments too.
    raw.write_frame(BINARY, br#"{"type""#).await;
    raw.write_frame(FIN | CONTINUATION, br#":"ping","id":2}"#)
        .await;
    assert_eq!(read_json(&mut raw).await, json!({"type":"pong","id":2}));
    hub.stop().await;
}

#[actix_web::test]
async fn bom_whitespace_and_binary_json_are_accepted() {
    let hub = TestHub::start(config());
    let mut raw = RawClient::handshake(hub.addr, "/ws").await;
    raw.write_frame(
        FIN | TEXT,
        "\u{feff} {\"type\":\"ping\",\"id\":1}\r\n".as_bytes(),
    )
    .await;
    assert_eq!(read_json(&mut raw).await, json!({"type":"pong","id":1}));
    raw.write_frame(FIN | BINARY, br#"{"type":"ping","id":2}"#)
        .await;
    assert_eq!(read_json(&mut raw).await, json!({"type":"pong","id":2}));
    // Binary that is not UTF-8 is a bad request, not a reason to close.
    raw.write_frame(FIN | BINARY, &[0xff, 0xfe, 0x00]).await;
    assert_eq!(read_json(&mut raw).await["code"], "bad_request");
    raw.write_frame(FIN | TEXT, br#"{"type":"ping","id":3}"#)
        .await;
    assert_eq!(read_json(&mut raw).await["id"], 3);
    hub.stop().await;
}

#[actix_web::test]
async fn an_oversize_frame_closes_with_1009() {
    let hub = TestHub::start(small_limit());
    let mut raw = RawClient::handshake(hub.addr, "/ws").await;
    // Exactly the limit is fine.
    let mut at_limit = br#"{"type":"ping","pad":""#.to_vec();
    at_limit.resize(1024 - 2, b'x');
    at_limit.extend_from_slice(b"\"}");
    raw.write_frame(FIN | TEXT, &at_limit).await;
    assert_eq!(read_json(&mut raw).await["type"], "pong");
    raw.write_frame(FIN | TEXT, &[b' '; 1025]).await;
    assert_eq!(read_json(&mut raw).await["code"], "too_large");
    let (code, _) = raw.read_until_close().await;
    assert_eq!(code, Some(1009));
    hub.stop().await;
}

#[actix_web::test]
async fn an_oversize_fragmented_message_closes_with_1009() {
    let hub = TestHub::start(small_limit());
    let mut raw = RawClient::handshake(hub.addr, "/ws").await;
    raw.write_frame(TEXT, &[b' '; 600]).await;
    raw.write_frame(CONTINUATION, &[b' '; 600]).await;
    assert_eq!(read_json(&mut raw).await["code"], "too_large");
    let (code, _) = raw.read_until_close().await;
    assert_eq!(code, Some(1009));
    hub.stop().await;
}

#[actix_web::test]
async fn invalid_utf8_text_closes_with_1007() {
    let hub = TestHub::start(config());
    // In one frame...
    let mut raw = RawClient::handshake(hub.addr, "/ws").await;
    raw.write_frame(FIN | TEXT, &[b'"', 0xc3, 0x28, b'"']).await;
    assert_eq!(raw.read_until_close().await.0, Some(1007));
    // ...and across fragments.
    let mut raw = RawClient::handshake(hub.addr, "/ws").await;
    raw.write_frame(TEXT, &[b'"', 0xc3]).await;
    raw.write_frame(FIN | CONTINUATION, &[0x28, b'"']).await;
    assert_eq!(raw.read_until_close().await.0, Some(1007));
    hub.stop().await;
}

#[actix_web::test]
async fn bad_fragmentation_closes_with_1002() {
    let hub = TestHub::start(config());
    let mut raw = RawClient::handshake(hub.addr, "/ws").await;
    raw.write_frame(FIN | CONTINUATION, b"orphan").await;
    assert_eq!(raw.read_until_close().await.0, Some(1002));
    let mut raw = RawClient::handshake(hub.addr, "/ws").await;
    raw.write_frame(TEXT, b"{").await;
    raw.write_frame(FIN | TEXT, b"{}").await;
    assert_eq!(raw.read_until_close().await.0, Some(1002));
    hub.stop().await;
}

#[actix_web::test]
async fn a_client_close_is_echoed() {
    let hub = TestHub::start(config());
    let mut raw = RawClient::handshake(hub.addr, "/ws").await;
    raw.write_frame(FIN | CLOSE, &1000u16.to_be_bytes()).await;
    assert_eq!(raw.read_until_close().await.0, Some(1000));
    hub.wait_stats(|s| s.sessions == 0).await;
    hub.stop().await;
}

#[actix_web::test]
async fn a_client_that_keeps_talking_is_not_pinged() {
    let hub = TestHub::start(Config {
        heartbeat_ms: 500,
        client_timeout_ms: 5000,
        ..config()
    });
    let mut raw = RawClient::handshake(hub.addr, "/ws").await;
    // Five heartbeat periods of a request every 40 ms: every period checks this session
    // at least once, and each time the client spoke far less than half a period ago.
    for i in 0..60 {
        raw.write_frame(
            FIN | TEXT,
            json!({"type":"ping","id":i}).to_string().as_bytes(),
        )
        .await;
        let (op, payload) = raw.read_frame().await.expect("connection ended");
        assert_eq!(op, TEXT, "a talking client got opcode {op}");
        assert_eq!(serde_json::from_slice::<Value>(&payload).unwrap()["id"], i);
        tokio::time::sleep(std::time::Duration::from_millis(40)).await;
    }
    // Once it falls quiet, it is pinged.
    let (op, _) = raw.read_frame().await.expect("connection ended");
    assert_eq!(op, PING);
    hub.stop().await;
}

#[actix_web::test]
async fn a_silent_client_is_pinged_then_dropped() {
    let hub = TestHub::start(Config {
        heartbeat_ms: 100,
        client_timeout_ms: 1000,
        ..config()
    });
    let mut silent = RawClient::handshake(hub.addr, "/ws").await;
    // A live client that answers pings (tungstenite does) is kept.
    let mut live = hub.client().await;
    let silent_closed = silent.read_until_close();
    tokio::pin!(silent_closed);
    let (code, seen) = loop {
        tokio::select! {
            closed = &mut silent_closed => break closed,
            // Reading lets tungstenite answer the hub's pings.
            msg = futures_util::StreamExt::next(&mut live.ws) => {
                let msg = msg.expect("live client ended").expect("live client failed");
                assert!(msg.is_ping(), "live client got {msg:?}");
            }
        }
    };
    assert_eq!(code, Some(4000));
    assert!(
        seen.contains(&PING),
        "the hub pings before it drops: {seen:?}"
    );
    hub.wait_stats(|s| s.sessions == 1).await;
    assert_eq!(live.request(json!({"type":"ping"})).await["type"], "pong");
    hub.stop().await;
}
