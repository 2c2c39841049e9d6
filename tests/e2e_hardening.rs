//! Hardening over real sockets: auth, origins, connection and rate limits, slow
//! consumers, half-open connections, graceful shutdown.

mod common;

use std::time::Duration;

use common::*;
use futures_util::SinkExt;
use serde_json::json;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio_tungstenite::tungstenite::client::IntoClientRequest;

#[actix_web::test]
async fn tokens_are_checked_on_join() {
    let hub = TestHub::start(with_auth());
    let mut c = hub.client().await;
    let code = |v: serde_json::Value| v["code"].as_str().unwrap_or("").to_owned();
    assert_eq!(
        code(c.request(json!({"type":"join","name":"alice"})).await),
        "unauthorized"
    );
    let wrong_sub = token("bob", None);
    assert_eq!(
        code(
            c.request(json!({"type":"join","name":"alice","token":wrong_sub}))
                .await
        ),
        "unauthorized"
    );
    let joined = c
        .request(json!({"type":"join","name":"alice","token":token("alice", None),"id":1}))
        .await;
    assert_eq!(
        (&joined["type"], &joined["id"]),
        (&json!("joined"), &json!(1))
    );

    // Expired and wrongly signed tokens.
    let expired = {
        use jsonwebtoken::{encode, EncodingKey, Header};
        let claims = wxhub::auth::Claims {
            sub: "carol".into(),
            exp: wxhub::protocol::now_ms() / 1000 - 3600,
            groups: None,
        };
        encode(
            &Header::default(),
            &claims,
            &EncodingKey::from_secret(SECRET.as_bytes()),
        )
        .unwrap()
    };
    let forged =
        wxhub::auth::mint("not-the-secret", "carol", Duration::from_secs(600), None).unwrap();
    let mut carol = hub.client().await;
    let e = carol
        .request(json!({"type":"join","name":"carol","token":expired}))
        .await;
    assert_eq!(e["code"], "unauthorized");
    assert!(e["message"].as_str().unwrap().contains("expired"), "{e}");
    let e = carol
        .request(json!({"type":"join","name":"carol","token":forged}))
        .await;
    assert_eq!(e["code"], "unauthorized");
    // The third failure closes the connection.
    let e = carol
        .request(json!({"type":"join","name":"carol","token":"garbage"}))
        .await;
    assert_eq!(e["code"], "unauthorized");
    assert_eq!(carol.expect_close().await, Some(4500));

    // The classic login carries its token the same way, and is refused without one.
    let mut classic = Client::connect(&hub.url("/")).await;
    classic.send_text(r#"{"name":"sales_dave"}"#).await;
    assert_eq!(classic.recv_json().await["code"], "unauthorized");
    let t = token("sales_erin", None);
    classic
        .send_text(&format!(r#"{{"name":"sales_dave","token":"{t}"}}"#))
        .await;
    assert_eq!(classic.recv_json().await["code"], "unauthorized");
    let t = token("sales_dave", None);
    classic
        .send_text(&format!(r#"{{"name":"sales_dave","token":"{t}"}}"#))
        .await;
    assert_eq!(classic.recv_json().await["type"], "joined");
    // Stock groups and ping stay open to anonymous sessions.
    let mut anon = hub.client().await;
    assert_eq!(anon.request(json!({"type":"ping"})).await["type"], "pong");
    let sub = anon
        .request(json!({"type":"subscribe","group":"stock"}))
        .await;
    assert_eq!(sub["type"], "subscribed");
    hub.stop().await;
}

#[actix_web::test]
async fn the_groups_claim_is_enforced() {
    let hub = TestHub::start(with_auth());
    let mut a = hub.client().await;
    let t = token("a", Some(vec!["sales"]));
    a.request(json!({"type":"join","name":"a","token":t})).await;
    assert_eq!(
        a.request(json!({"type":"subscribe","group":"sales"})).await["type"],
        "subscribed"
    );
    assert_eq!(
        a.request(json!({"type":"subscribe","group":"hr"})).await["code"],
        "forbidden"
    );
    assert_eq!(
        a.request(json!({"type":"publish","group":"hr","body":1}))
            .await["code"],
        "forbidden"
    );
    assert_eq!(
        a.request(json!({"type":"subscribe","group":"stock.600519"}))
            .await["type"],
        "subscribed"
    );
    hub.stop().await;
}

async fn handshake_status(hub: &TestHub, origin: Option<&str>) -> u16 {
    let mut req = hub.url("/ws").into_client_request().unwrap();
    if let Some(o) = origin {
        req.headers_mut().insert("Origin", o.parse().unwrap());
    }
    match tokio_tungstenite::connect_async(req).await {
        Ok((_, resp)) => resp.status().as_u16(),
        Err(tokio_tungstenite::tungstenite::Error::Http(resp)) => resp.status().as_u16(),
        Err(e) => panic!("{e}"),
    }
}

#[actix_web::test]
async fn origins_are_checked_before_the_upgrade() {
    let hub = TestHub::start(Config {
        allowed_origins: vec!["https://shop.example.com".into()],
        ..config()
    });
    assert_eq!(
        handshake_status(&hub, Some("https://shop.example.com")).await,
        101
    );
    assert_eq!(
        handshake_status(&hub, Some("https://SHOP.example.com/")).await,
        101
    );
    assert_eq!(
        handshake_status(&hub, Some("https://evil.example.net")).await,
        403
    );
    // Mini-programs and servers send no Origin.
    assert_eq!(handshake_status(&hub, None).await, 101);
    hub.stop().await;
}

#[actix_web::test]
async fn the_connection_limit_answers_503() {
    let hub = TestHub::start(Config {
        max_connections: Some(2),
        ..config()
    });
    let a = hub.client().await;
    let _b = hub.client().await;
    assert_eq!(handshake_status(&hub, None).await, 503);
    a.close().await;
    hub.wait_stats(|s| s.sessions == 1).await;
    // The slot is released once the session is gone.
    let deadline = tokio::time::Instant::now() + WAIT;
    while handshake_status(&hub, None).await != 101 {
        assert!(
            tokio::time::Instant::now() < deadline,
            "slot never released"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    hub.stop().await;
}

#[actix_web::test]
async fn floods_are_refused_then_closed() {
    let hub = TestHub::start(Config {
        rate_limit: 1,
        rate_burst: 10,
        ..config()
    });
    let mut c = hub.client().await;
    for i in 0..15 {
        c.send_json(json!({"type":"ping","id":i})).await;
    }
    let (mut pongs, mut limited) = (0, 0);
    for _ in 0..15 {
        let v = c.recv_json().await;
        match v["type"].as_str() {
            Some("pong") => pongs += 1,
            _ if v["code"] == "rate_limited" => limited += 1,
            _ => panic!("{v}"),
        }
    }
    // A token may refill while the 15 are in flight.
    assert!((10..=11).contains(&pongs), "{pongs} pongs");
    assert_eq!(pongs + limited, 15);
    // Keep flooding: past `burst` refusals without a pause, the session is closed.
    for i in 0..30 {
        if c.ws
            .send(tokio_tungstenite::tungstenite::Message::Text(format!(
                r#"{{"type":"ping","id":{i}}}"#
            )))
            .await
            .is_err()
        {
            break;
        }
    }
    assert_eq!(c.expect_close().await, Some(4002));
    hub.stop().await;
}

#[actix_web::test]
async fn a_client_that_stops_reading_is_cut_off_and_others_get_everything() {
    const BOUND: u64 = 64 * 1024;
    const MESSAGES: usize = 3000;
    let hub = TestHub::start(Config {
        max_queued_bytes: BOUND,
        rate_limit: 1_000_000,
        rate_burst: 1_000_000,
        ..config()
    });
    // The slow client: a tiny receive window, and it never reads.
    let socket = tokio::net::TcpSocket::new_v4().unwrap();
    socket.set_recv_buffer_size(4096).unwrap();
    let stream = socket.connect(hub.addr).await.unwrap();
    let mut slow = RawClient::upgrade(stream, hub.addr, "/ws").await;
    slow.write_frame(0x81, br#"{"type":"join","name":"slow"}"#)
        .await;
    slow.write_frame(0x81, br#"{"type":"subscribe","group":"feed"}"#)
        .await;
    let mut fast = hub.joined("fast").await;
    fast.request(json!({"type":"subscribe","group":"feed"}))
        .await;
    hub.wait_stats(|s| s.sessions == 2 && s.groups == 1).await;
    let mut publisher = hub.joined("publisher").await;

    let reader = actix_web::rt::spawn(async move {
        let mut got = Vec::with_capacity(MESSAGES);
        while got.len() < MESSAGES {
            let v = fast.recv_json().await;
            got.push(v["body"]["n"].as_u64().unwrap());
        }
        (got, fast)
    });
    let pad = "x".repeat(1000);
    let mut max_queued = 0;
    let mut delivered_after_cutoff = 0;
    for n in 0..MESSAGES {
        let ack = publisher
            .request(json!({"type":"publish","group":"feed","body":{"n":n,"pad":pad}}))
            .await;
        assert_eq!(ack["type"], "ack", "{ack}");
        if ack["delivered"] == 1 {
            delivered_after_cutoff += 1;
        }
        if n % 50 == 0 {
            max_queued = max_queued.max(hub.stats().await.queued_bytes);
        }
    }
    let (got, _fast) = reader.await.unwrap();
    assert_eq!(
        got,
        (0..MESSAGES as u64).collect::<Vec<_>>(),
        "the fast client lost nothing"
    );
    let stats = hub.wait_stats(|s| s.slow_consumers == 1).await;
    assert!(
        delivered_after_cutoff > 0,
        "the slow client was never cut off"
    );
    assert!(
        max_queued <= 3 * BOUND as usize,
        "queued bytes reached {max_queued}, bound {BOUND} per session"
    );
    assert_eq!(stats.users, 2, "the slow user left the pool");
    // When it reads again, it finds the close frame.
    let (code, reason, _) = slow.read_close_frame().await;
    assert_eq!((code, reason.as_str()), (Some(4001), "slow consumer"));
    hub.stop().await;
}

#[actix_web::test]
async fn stalled_handshakes_and_half_frames_are_dropped() {
    let hub = TestHub::start(Config {
        handshake_timeout_ms: 1000,
        heartbeat_ms: 50,
        client_timeout_ms: 300,
        ..config()
    });
    // Half a handshake, then nothing.
    let mut stalled = tokio::net::TcpStream::connect(hub.addr).await.unwrap();
    stalled
        .write_all(b"GET /ws HTTP/1.1\r\nHost: x\r\n")
        .await
        .unwrap();
    let mut buf = Vec::new();
    let read = tokio::time::timeout(WAIT, stalled.read_to_end(&mut buf)).await;
    assert!(read.is_ok(), "the hub kept a stalled handshake open");
    assert!(
        buf.is_empty() || String::from_utf8_lossy(&buf).starts_with("HTTP/1.1 408"),
        "{}",
        String::from_utf8_lossy(&buf)
    );
    // A completed handshake, half a frame, then nothing.
    let mut half = RawClient::handshake(hub.addr, "/ws").await;
    half.stream.write_all(&[0x81, 0xfe, 0x01]).await.unwrap();
    let (code, reason, _) = half.read_close_frame().await;
    assert_eq!((code, reason.as_str()), (Some(4000), "heartbeat timeout"));
    // A handshake with no frames at all.
    let mut silent = RawClient::handshake(hub.addr, "/ws").await;
    assert_eq!(silent.read_until_close().await.0, Some(4000));
    hub.wait_stats(|s| s.sessions == 0).await;
    hub.stop().await;
}

#[actix_web::test]
async fn shutdown_closes_every_session_with_1001() {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let config = Config {
        drain_ms: 2000,
        ..config()
    };
    let server = actix_web::rt::spawn(wxhub::server::run(listener, config, async {
        let _ = stopped.await;
    }));
    let url = format!("ws://{addr}/ws");
    let mut joined = Client::connect(&url).await;
    joined.request(json!({"type":"join","name":"a"})).await;
    let mut watcher = Client::connect(&url).await;
    watcher
        .request(json!({"type":"subscribe","group":"stock"}))
        .await;
    let mut idle = Client::connect(&url).await;
    assert_eq!(idle.request(json!({"type":"ping"})).await["type"], "pong");
    let started = std::time::Instant::now();
    stop.send(()).unwrap();
    for c in [&mut joined, &mut watcher, &mut idle] {
        assert_eq!(c.expect_close().await, Some(1001));
    }
    tokio::time::timeout(Duration::from_secs(5), server)
        .await
        .expect("run() did not return after shutdown")
        .unwrap()
        .unwrap();
    assert!(
        started.elapsed() < Duration::from_secs(3),
        "took {:?}",
        started.elapsed()
    );
    // No longer accepting.
    assert!(tokio::net::TcpStream::connect(addr).await.is_err());
}
