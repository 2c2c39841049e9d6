//! Join and subscribe in the handshake (`/ws?name=..&subscribe=..`), over a real port
//! with a real client.

mod common;

use common::*;
use serde_json::json;
use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::handshake::client::Request;
use tokio_tungstenite::tungstenite::http::HeaderValue;

/// The handshake's HTTP refusal: its status and body. A 400 must be plain text that no
/// browser would render as a page, since it quotes the query.
async fn refused(url: &str) -> (u16, String) {
    refused_request(url.into_client_request().unwrap()).await
}

async fn refused_request(req: Request) -> (u16, String) {
    let url = req.uri().to_string();
    match tokio_tungstenite::connect_async(req).await {
        Err(tokio_tungstenite::tungstenite::Error::Http(response)) => {
            if response.status() == 400 {
                let h = response.headers();
                assert_eq!(h["content-type"], "text/plain; charset=utf-8", "{url}");
                assert_eq!(h["x-content-type-options"], "nosniff", "{url}");
            }
            (
                response.status().as_u16(),
                String::from_utf8_lossy(response.body().as_deref().unwrap_or_default())
                    .into_owned(),
            )
        }
        Err(e) => panic!("{url}: not an HTTP refusal: {e}"),
        Ok(_) => panic!("{url}: the handshake was accepted"),
    }
}

#[actix_web::test]
async fn the_handshake_joins_and_subscribes_before_anything_else() {
    let hub = TestHub::start(config());
    let mut alice = Client::connect(
        &hub.url("/ws?name=%E5%B0%8F%E6%98%8E&subscribe=room,stock.600519&presence=true&t=123"),
    )
    .await;
    // Sent at once, before any reply came: it must find the session joined and a member.
    alice
        .send_json(json!({"type":"publish","group":"room","body":"first","id":1}))
        .await;
    let joined = alice.recv_json().await;
    assert_eq!(
        (&joined["type"], &joined["name"], joined.get("id")),
        (&json!("joined"), &json!("小明"), None),
        "{joined}"
    );
    assert!(joined["session"].as_u64().is_some(), "{joined}");
    let mut room = alice.recv_json().await;
    assert!(room["epoch"].take().is_string(), "{room}");
    assert_eq!(
        room,
        json!({"type":"subscribed","group":"room","members":1,"epoch":null,"offset":0})
    );
    // presence=true: its own arrival is announced to it, as for a `subscribe` frame.
    assert_eq!(
        alice.recv_json().await,
        json!({"type":"presence","group":"room","event":"join","name":"小明"})
    );
    let stock = alice.recv_json().await;
    assert_eq!(
        (&stock["type"], &stock["group"]),
        (&json!("subscribed"), &json!("stock.600519")),
        "{stock}"
    );
    let m = alice.expect(|v| v["type"] == "message").await;
    assert_eq!((&m["group"], &m["body"]), (&json!("room"), &json!("first")));
    // Alone in the room: its own copy came back, and nobody else got it.
    let ack = alice.expect(|v| v["type"] == "ack").await;
    assert_eq!(ack, json!({"type":"ack","id":1,"delivered":0}));

    // Another user reaches the handshake-joined one like any other.
    let mut bob = hub.joined("bob").await;
    let sub = bob
        .request(json!({"type":"subscribe","group":"room"}))
        .await;
    assert_eq!(sub["members"], 2);
    let p = alice.expect(|v| v["type"] == "presence").await;
    assert_eq!(p["name"], "bob");
    let ack = bob
        .request(json!({"type":"direct","to":"小明","body":"hi","id":2}))
        .await;
    assert_eq!(ack["delivered"], 1);
    let m = alice.expect(|v| v["kind"] == "direct").await;
    assert_eq!((&m["from"], &m["body"]), (&json!("bob"), &json!("hi")));
    // And its stock subscription is live: the ticker's quotes arrive.
    alice
        .expect(|v| v["type"] == "quote" && v["quote"]["symbol"] == "600519")
        .await;
    // A second `join` is refused: the handshake's was the session's one join.
    let again = alice.request(json!({"type":"join","name":"other"})).await;
    assert_eq!(again["code"], "already_joined");
    hub.stop().await;
}

#[actix_web::test]
async fn every_handshake_session_of_a_user_gets_its_direct_messages() {
    let hub = TestHub::start(config());
    let mut phone = Client::connect(&hub.url("/ws?name=carol")).await;
    let mut laptop = Client::connect(&hub.url("/?name=carol")).await;
    for c in [&mut phone, &mut laptop] {
        assert_eq!(c.recv_json().await["type"], "joined");
    }
    let mut dave = hub.joined("dave").await;
    let ack = dave
        .request(json!({"type":"direct","to":"carol","body":1,"id":1}))
        .await;
    assert_eq!(ack["delivered"], 2);
    for c in [&mut phone, &mut laptop] {
        assert_eq!(c.recv_json().await["kind"], "direct");
    }
    // A query that asks for nothing changes nothing: the session is not joined.
    let mut plain = Client::connect(&hub.url("/ws?t=1")).await;
    let e = plain.request(json!({"type":"broadcast","body":0})).await;
    assert_eq!(e["code"], "not_joined");
    // Without a name, a stock group still subscribes and another group answers as the
    // command would.
    let mut page = Client::connect(&hub.url("/ws?subscribe=room,stock")).await;
    assert_eq!(page.recv_json().await["code"], "not_joined");
    assert_eq!(page.recv_json().await["group"], "stock");
    hub.stop().await;
}

#[actix_web::test]
async fn a_malformed_handshake_query_is_refused_with_the_reason() {
    let hub = TestHub::start(config());
    for (query, reason) in [
        ("subscribe=bad%20group", "not a group name"),
        ("name=%20padded", "not a user name"),
        ("presence=maybe", "`presence`"),
        ("token=abc", "`token` needs `name`"),
        ("name=a&name=b", "duplicate field"),
    ] {
        let (status, body) = refused(&hub.url(&format!("/ws?{query}"))).await;
        assert_eq!(status, 400, "{query}: {body}");
        assert!(body.contains(reason), "{query}: {body}");
    }
    let many = (0..33).map(|i| format!("g{i}")).collect::<Vec<_>>();
    let (status, body) = refused(&hub.url(&format!("/ws?subscribe={}", many.join(",")))).await;
    assert_eq!((status, body.contains("at most 32")), (400, true), "{body}");
    // A plain GET is no handshake: the upgrade refuses it, without the query's reason.
    let page = http_get(hub.addr, "/ws?subscribe=%3Cb%3E").await;
    assert!(page.starts_with("HTTP/1.1 400"), "{page}");
    assert!(!page.contains("handshake query"), "{page}");
    // None of them reached the hub, and it serves on.
    let s = hub.stats().await;
    assert_eq!(s.sessions, 0, "{s:?}");
    let mut ok = Client::connect(&hub.url("/ws?name=erin")).await;
    assert_eq!(ok.recv_json().await["type"], "joined");
    hub.stop().await;
}

#[actix_web::test]
async fn handshake_tokens_come_in_the_query_or_a_bearer_header() {
    let hub = TestHub::start(with_auth());
    let t = token("alice", Some(vec!["room"]));
    let mut q =
        Client::connect(&hub.url(&format!("/ws?name=alice&token={t}&subscribe=room"))).await;
    assert_eq!(q.recv_json().await["type"], "joined");
    assert_eq!(q.recv_json().await["type"], "subscribed");

    // wx.connectSocket can set headers: the token then stays out of the URL.
    let mut req = hub
        .url("/ws?name=alice&subscribe=lobby")
        .into_client_request()
        .unwrap();
    req.headers_mut().insert(
        "Authorization",
        HeaderValue::from_str(&format!("Bearer {t}")).unwrap(),
    );
    let (ws, _) = tokio::time::timeout(WAIT, tokio_tungstenite::connect_async(req))
        .await
        .unwrap()
        .unwrap();
    let mut h = Client { ws };
    assert_eq!(h.recv_json().await["type"], "joined");
    // The token's `groups` claim holds for handshake subscriptions too.
    assert_eq!(h.recv_json().await["code"], "forbidden");

    // A bad token is answered after the upgrade, as a `join` would be: the session stays
    // open, unjoined, and may join with a frame.
    let mut bad = Client::connect(&hub.url("/ws?name=bob&token=garbage&subscribe=room")).await;
    assert_eq!(bad.recv_json().await["code"], "unauthorized");
    assert_eq!(bad.recv_json().await["code"], "not_joined");
    let joined = bad
        .request(json!({"type":"join","name":"bob","token":token("bob", None),"id":1}))
        .await;
    assert_eq!(
        (&joined["type"], &joined["id"]),
        (&json!("joined"), &json!(1))
    );
    // Without any token, on a hub that needs one.
    let mut none = Client::connect(&hub.url("/ws?name=carol")).await;
    assert_eq!(none.recv_json().await["code"], "unauthorized");
    // The handshake's failure counts as one of the three a connection may make.
    for _ in 0..2 {
        let e = none
            .request(json!({"type":"join","name":"carol","token":"garbage"}))
            .await;
        assert_eq!(e["code"], "unauthorized");
    }
    assert_eq!(none.expect_close().await, Some(4500));
    hub.stop().await;
}

#[actix_web::test]
async fn a_page_from_another_origin_learns_nothing_about_its_query() {
    let hub = TestHub::start(Config {
        allowed_origins: vec!["https://app.example".into()],
        ..config()
    });
    let mut req = hub
        .url("/ws?subscribe=bad%20group")
        .into_client_request()
        .unwrap();
    req.headers_mut()
        .insert("Origin", HeaderValue::from_static("https://evil.example"));
    let (status, body) = refused_request(req).await;
    assert_eq!(status, 403, "{body}");
    hub.stop().await;
}

/// Writes a handshake and, in the same write, a frame the session answers itself, then
/// returns the frames that come back (text payloads) until the session's error.
async fn pipelined(hub: &TestHub, query: &str, frame: &[u8]) -> Vec<serde_json::Value> {
    let stream = TcpStream::connect(hub.addr).await.unwrap();
    let mut bytes = handshake_request(hub.addr, &format!("/ws?{query}")).into_bytes();
    // A masked text frame (the mask is all zeros, so the payload goes as it is).
    bytes.extend_from_slice(&[0x81, 0x80 | frame.len() as u8, 0, 0, 0, 0]);
    bytes.extend_from_slice(frame);
    let mut raw = RawClient::upgrade_with(stream, &bytes).await;
    let mut got = Vec::new();
    while let Some((op, payload)) = raw.read_frame().await {
        assert_eq!(op, 0x1, "a text frame");
        let v: serde_json::Value = serde_json::from_slice(&payload).unwrap();
        let done = v["code"] == "bad_request";
        got.push(v);
        if done {
            break;
        }
    }
    got
}

#[actix_web::test]
async fn the_sessions_own_errors_come_after_the_handshakes_replies() {
    let hub = TestHub::start(config());
    let groups: Vec<String> = (0..32).map(|i| format!("g{i}")).collect();
    // The session answers a malformed frame itself; the handshake's replies come from the
    // hub's thread. Many connections, since the two race when nothing orders them.
    for n in 0..20 {
        let got = pipelined(
            &hub,
            &format!("name=p{n}&subscribe={}", groups.join(",")),
            b"not json",
        )
        .await;
        let types: Vec<&str> = got
            .iter()
            .map(|v| v["type"].as_str().unwrap_or(""))
            .collect();
        assert_eq!(types.len(), 34, "{got:?}");
        assert_eq!(types[0], "joined", "{got:?}");
        assert!(types[1..33].iter().all(|t| *t == "subscribed"), "{got:?}");
        assert_eq!(
            (types[33], &got[33]["code"]),
            ("error", &json!("bad_request"))
        );
    }
    hub.stop().await;
}

#[actix_web::test]
async fn a_handshake_session_whose_client_vanishes_leaves_nothing_in_the_hub() {
    let hub = TestHub::start(config());
    let mut watcher = hub.joined("watcher").await;
    watcher
        .request(json!({"type":"subscribe","group":"room","presence":true}))
        .await;
    watcher.expect(|v| v["type"] == "presence").await;
    for n in 0..10 {
        let mut stream = TcpStream::connect(hub.addr).await.unwrap();
        let req = handshake_request(hub.addr, &format!("/ws?name=gone{n}&subscribe=room"));
        stream.write_all(req.as_bytes()).await.unwrap();
        // The hub has the session once the watcher hears it arrive; then the client
        // resets the connection without reading a byte of the response.
        let p = watcher.expect(|v| v["type"] == "presence").await;
        assert_eq!(
            (&p["event"], &p["name"]),
            (&json!("join"), &json!(format!("gone{n}")))
        );
        stream.set_zero_linger().unwrap();
        drop(stream);
        let p = watcher.expect(|v| v["type"] == "presence").await;
        assert_eq!(
            (&p["event"], &p["name"]),
            (&json!("leave"), &json!(format!("gone{n}")))
        );
    }
    let s = hub.stats().await;
    assert_eq!((s.sessions, s.users, s.groups), (1, 1, 1), "{s:?}");
    hub.stop().await;
}
