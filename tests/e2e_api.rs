//! The server API against real WebSocket clients: what it says it delivered is what the
//! clients got; every refusal is a JSON error with a fitting status.

mod common;

use common::*;
use serde_json::{json, Value};

const KEY: &str = "test-api-key-0123456789";
const AUTH: &str = "Authorization: Bearer test-api-key-0123456789";
const JSON: &str = "Content-Type: application/json";

fn with_api() -> Config {
    Config {
        api_key: Some(KEY.into()),
        ..config()
    }
}

async fn call(hub: &TestHub, method: &str, path: &str, body: Value) -> HttpReply {
    let body = if body.is_null() {
        Vec::new()
    } else {
        body.to_string().into_bytes()
    };
    http(hub.addr, method, path, &[AUTH, JSON], &body).await
}

#[actix_web::test]
async fn without_a_key_there_is_no_api() {
    let hub = TestHub::start(config());
    let r = http(hub.addr, "GET", "/api/info", &[AUTH], b"").await;
    assert_eq!(r.status, 404);
    hub.stop().await;
}

#[actix_web::test]
async fn the_key_is_required_and_a_wrong_one_is_told_nothing_more() {
    let hub = TestHub::start(with_api());
    let missing = http(hub.addr, "GET", "/api/info", &[], b"").await;
    let wrong = http(
        hub.addr,
        "GET",
        "/api/info",
        &["Authorization: Bearer test-api-key-0123456780"],
        b"",
    )
    .await;
    let short = http(
        hub.addr,
        "GET",
        "/api/info",
        &["Authorization: Bearer x"],
        b"",
    )
    .await;
    let basic = http(
        hub.addr,
        "GET",
        "/api/info",
        &["Authorization: Basic dGVzdA=="],
        b"",
    )
    .await;
    for r in [&missing, &wrong, &short, &basic] {
        assert_eq!(r.status, 401, "{r:?}");
        assert_eq!(r.json()["code"], "unauthorized");
        assert_eq!(r.body, missing.body, "the same answer whatever was wrong");
    }
    // Even a bad body is not looked at before the key.
    let r = http(hub.addr, "POST", "/api/publish", &[JSON], b"{not json").await;
    assert_eq!(r.status, 401);
    let info = call(&hub, "GET", "/api/info", Value::Null).await;
    assert_eq!(info.status, 200, "{info:?}");
    let info = info.json();
    assert_eq!(info["version"], env!("CARGO_PKG_VERSION"));
    assert_eq!(info["connections"], 0);
    hub.stop().await;
}

#[actix_web::test]
async fn publish_send_and_broadcast_reach_exactly_the_clients_they_count() {
    let hub = TestHub::start(with_api());
    let mut alice = hub.joined("alice").await;
    let mut bob_phone = hub.joined("bob").await;
    let mut bob_web = hub.joined("bob").await;
    let mut carol = hub.joined("carol").await;
    for c in [&mut alice, &mut bob_phone] {
        c.request(json!({"type":"subscribe","group":"orders"}))
            .await;
    }
    // publish: the two members, from `system`.
    let r = call(
        &hub,
        "POST",
        "/api/publish",
        json!({"group":"orders","body":{"id":7}}),
    )
    .await;
    assert_eq!((r.status, r.json()), (200, json!({"delivered":2})));
    for c in [&mut alice, &mut bob_phone] {
        let m = c.recv_json().await;
        assert_eq!(
            (&m["type"], &m["kind"], &m["from"], &m["group"], &m["body"]),
            (
                &json!("message"),
                &json!("group"),
                &json!("system"),
                &json!("orders"),
                &json!({"id":7})
            )
        );
        assert_eq!(m["offset"], 1, "numbered like any group message");
    }
    // send: both of bob's sessions, from a name no client could take.
    let r = call(
        &hub,
        "POST",
        "/api/send",
        json!({"to":"bob","body":"shipped","from":"order service"}),
    )
    .await;
    assert_eq!((r.status, r.json()), (200, json!({"delivered":2})));
    for c in [&mut bob_phone, &mut bob_web] {
        let m = c.recv_json().await;
        assert_eq!(
            (&m["kind"], &m["from"], &m["to"], &m["body"]),
            (
                &json!("direct"),
                &json!("order service"),
                &json!("bob"),
                &json!("shipped")
            )
        );
    }
    // broadcast: every joined session.
    let r = call(
        &hub,
        "POST",
        "/api/broadcast",
        json!({"body":"maintenance at 2am"}),
    )
    .await;
    assert_eq!((r.status, r.json()), (200, json!({"delivered":4})));
    for c in [&mut alice, &mut bob_phone, &mut bob_web, &mut carol] {
        assert_eq!(c.recv_json().await["body"], "maintenance at 2am");
    }
    // Offline, but seen within the window: stored; never seen: 404.
    carol.close().await;
    hub.wait_stats(|s| s.users == 2).await;
    let r = call(
        &hub,
        "POST",
        "/api/send",
        json!({"to":"carol","body":"later"}),
    )
    .await;
    assert_eq!(
        (r.status, r.json()),
        (200, json!({"delivered":0,"stored":true}))
    );
    let r = call(&hub, "POST", "/api/send", json!({"to":"nobody","body":1})).await;
    assert_eq!(
        (r.status, r.json()["code"].as_str()),
        (404, Some("not_found"))
    );
    let info = call(&hub, "GET", "/api/info", Value::Null).await.json();
    assert_eq!(
        (info["messages_in"].as_u64(), info["messages_out"].as_u64()),
        (Some(4), Some(8))
    );
    hub.stop().await;
}

#[actix_web::test]
async fn subscribe_disconnect_and_listings_act_on_users() {
    let hub = TestHub::start(with_api());
    let mut phone = hub.joined("bob").await;
    let mut web = hub.joined("bob").await;
    let mut alice = hub.joined("alice").await;
    let r = call(
        &hub,
        "POST",
        "/api/subscribe",
        json!({"name":"bob","group":"vip"}),
    )
    .await;
    assert_eq!((r.status, r.json()), (200, json!({"sessions":2})));
    for c in [&mut phone, &mut web] {
        let s = c.recv_json().await;
        assert_eq!(
            (&s["type"], &s["group"]),
            (&json!("subscribed"), &json!("vip")),
            "{s}"
        );
    }
    let members = call(&hub, "GET", "/api/groups/vip", Value::Null)
        .await
        .json();
    assert_eq!(
        members,
        json!({"group":"vip","members":[{"name":"bob","sessions":2}],"count":1})
    );
    let groups = call(&hub, "GET", "/api/groups", Value::Null).await.json();
    assert_eq!(
        groups,
        json!({"groups":[{"group":"vip","members":1}],"count":1})
    );
    let r = call(&hub, "GET", "/api/groups/nobody-here", Value::Null).await;
    assert_eq!(r.status, 404);
    let r = call(
        &hub,
        "POST",
        "/api/subscribe",
        json!({"name":"ghost","group":"vip"}),
    )
    .await;
    assert_eq!(r.status, 404);
    let r = call(
        &hub,
        "POST",
        "/api/subscribe",
        json!({"name":"bob","group":"no spaces"}),
    )
    .await;
    assert_eq!(
        (r.status, r.json()["code"].as_str()),
        (400, Some("invalid_group"))
    );
    let r = call(
        &hub,
        "POST",
        "/api/unsubscribe",
        json!({"name":"bob","group":"vip"}),
    )
    .await;
    assert_eq!((r.status, r.json()), (200, json!({"sessions":2})));
    assert_eq!(phone.recv_json().await["type"], "unsubscribed");
    assert_eq!(web.recv_json().await["type"], "unsubscribed");

    // disconnect: bob's sessions close with 1008 and the reason; alice carries on.
    let r = call(
        &hub,
        "POST",
        "/api/disconnect",
        json!({"name":"bob","reason":"account suspended"}),
    )
    .await;
    assert_eq!((r.status, r.json()), (200, json!({"closed":2})));
    for c in [&mut phone, &mut web] {
        assert_eq!(
            c.close_frame().await,
            (Some(1008), "account suspended".to_owned())
        );
    }
    let pong = alice.request(json!({"type":"ping"})).await;
    assert_eq!(pong["type"], "pong");
    let users = call(&hub, "GET", "/api/users", Value::Null).await.json();
    assert_eq!(
        users,
        json!({"users":[{"name":"alice","sessions":1}],"count":1})
    );
    let r = call(&hub, "POST", "/api/disconnect", json!({"name":"bob"})).await;
    assert_eq!(r.json(), json!({"closed":0}));
    // A reason longer than a close frame holds is cut, at a character boundary.
    let r = call(
        &hub,
        "POST",
        "/api/disconnect",
        json!({"name":"alice","reason":"断".repeat(50)}),
    )
    .await;
    assert_eq!((r.status, r.json()), (200, json!({"closed":1})));
    assert_eq!(alice.close_frame().await, (Some(1008), "断".repeat(41)));
    hub.stop().await;
}

#[actix_web::test]
async fn paging_through_2500_users_returns_each_exactly_once() {
    let hub = TestHub::start(with_api());
    let mut clients = Vec::new();
    for i in 0..2500 {
        clients.push(Client::connect(&hub.url(&format!("/ws?name=user{i:04}"))).await);
    }
    hub.wait_stats(|s| s.users == 2500).await;
    let mut seen = Vec::new();
    let mut after: Option<String> = None;
    loop {
        let path = match &after {
            Some(a) => format!("/api/users?limit=1000&after={a}"),
            None => "/api/users?limit=1000".to_owned(),
        };
        let page = call(&hub, "GET", &path, Value::Null).await.json();
        assert_eq!(page["count"], 2500);
        for u in page["users"].as_array().unwrap() {
            seen.push(u["name"].as_str().unwrap().to_owned());
        }
        match page.get("next") {
            Some(next) => after = Some(next.as_str().unwrap().to_owned()),
            None => break,
        }
    }
    let expected: Vec<String> = (0..2500).map(|i| format!("user{i:04}")).collect();
    assert_eq!(seen, expected);
    for bad in ["limit=0", "limit=1001", "limit=-5", "limit=abc"] {
        let r = call(&hub, "GET", &format!("/api/users?{bad}"), Value::Null).await;
        assert_eq!(
            (r.status, r.json()["code"].as_str()),
            (400, Some("bad_request")),
            "{bad}"
        );
    }
    drop(clients);
    hub.stop().await;
}

#[actix_web::test]
async fn bad_requests_get_their_4xx_and_break_nothing() {
    let hub = TestHub::start(Config {
        max_message_bytes: 1024,
        ..with_api()
    });
    let mut alice = hub.joined("alice").await;
    let post = |body: &'static [u8], headers: Vec<&'static str>| {
        let addr = hub.addr;
        async move { http(addr, "POST", "/api/publish", &headers, body).await }
    };
    let cases: Vec<(HttpReply, u16, &str)> = vec![
        (
            post(b"{not json", vec![AUTH, JSON]).await,
            400,
            "bad_request",
        ),
        (post(b"[1,2]", vec![AUTH, JSON]).await, 400, "bad_request"),
        (
            post(br#"{"group":"g"}"#, vec![AUTH, JSON]).await,
            400,
            "bad_request",
        ),
        (
            post(br#"{"group":"g","body":1,"extra":true}"#, vec![AUTH, JSON]).await,
            400,
            "bad_request",
        ),
        (
            post(br#"{"group":5,"body":1}"#, vec![AUTH, JSON]).await,
            400,
            "bad_request",
        ),
        (
            post(br#"{"group":"a b","body":1}"#, vec![AUTH, JSON]).await,
            400,
            "invalid_group",
        ),
        (
            post(br#"{"group":"g","body":1,"from":""}"#, vec![AUTH, JSON]).await,
            400,
            "invalid_name",
        ),
        (
            post(
                br#"{"group":"g","body":1}"#,
                vec![AUTH, "Content-Type: text/plain"],
            )
            .await,
            415,
            "unsupported_media_type",
        ),
        (
            post(br#"{"group":"g","body":1}"#, vec![AUTH]).await,
            415,
            "unsupported_media_type",
        ),
        (
            http(hub.addr, "GET", "/api/publish", &[AUTH], b"").await,
            405,
            "method_not_allowed",
        ),
        (
            http(hub.addr, "TRACE", "/api/info", &[AUTH], b"").await,
            405,
            "method_not_allowed",
        ),
        (
            http(hub.addr, "DELETE", "/api/users", &[AUTH], b"").await,
            405,
            "method_not_allowed",
        ),
        (
            http(hub.addr, "GET", "/api/nothing", &[AUTH], b"").await,
            404,
            "not_found",
        ),
    ];
    for (r, status, code) in &cases {
        assert_eq!(
            (r.status, r.json()["code"].as_str()),
            (*status, Some(*code)),
            "{r:?}"
        );
        assert_eq!(r.header("content-type"), Some("application/json"), "{r:?}");
        if *status == 405 {
            assert!(matches!(r.header("allow"), Some("GET" | "POST")), "{r:?}");
        }
    }
    let big = format!(r#"{{"group":"g","body":"{}"}}"#, "x".repeat(2000));
    let r = http(
        hub.addr,
        "POST",
        "/api/publish",
        &[AUTH, JSON],
        big.as_bytes(),
    )
    .await;
    assert_eq!(
        (r.status, r.json()["code"].as_str()),
        (413, Some("too_large"))
    );
    // A flood of bad calls: the hub and its clients carry on.
    for _ in 0..200 {
        post(b"{not json", vec![AUTH, JSON]).await;
    }
    assert_eq!(alice.request(json!({"type":"ping"})).await["type"], "pong");
    let r = call(&hub, "POST", "/api/publish", json!({"group":"g","body":1})).await;
    assert_eq!((r.status, r.json()), (200, json!({"delivered":0})));
    hub.stop().await;
}

#[actix_web::test]
async fn a_separate_listener_serves_the_api_and_both_answer_health() {
    let hub = TestHub::start(Config {
        api_bind: Some("127.0.0.1:0".parse().unwrap()),
        ..with_api()
    });
    let api = hub.api_addr.expect("an API listener");
    assert_eq!(
        http(hub.addr, "GET", "/api/info", &[AUTH], b"")
            .await
            .status,
        404
    );
    assert_eq!(
        http(api, "GET", "/api/info", &[AUTH], b"").await.status,
        200
    );
    assert_eq!(http(api, "GET", "/api/info", &[], b"").await.status, 401);
    for addr in [hub.addr, api] {
        assert_eq!(http(addr, "GET", "/healthz", &[], b"").await.status, 200);
        assert_eq!(http(addr, "GET", "/readyz", &[], b"").await.status, 200);
    }
    hub.draining
        .store(true, std::sync::atomic::Ordering::SeqCst);
    for addr in [hub.addr, api] {
        let r = http(addr, "GET", "/readyz", &[], b"").await;
        assert_eq!((r.status, r.body.as_str()), (503, "draining\n"));
        assert_eq!(http(addr, "GET", "/healthz", &[], b"").await.status, 200);
    }
    hub.stop().await;
}

#[actix_web::test]
async fn the_openapi_document_lists_every_endpoint() {
    let hub = TestHub::start(with_api());
    let doc = http(hub.addr, "GET", "/api/openapi.json", &[], b"")
        .await
        .json();
    assert!(doc["openapi"].as_str().unwrap().starts_with("3."));
    let paths: Vec<&str> = doc["paths"]
        .as_object()
        .unwrap()
        .keys()
        .map(|k| k.as_str())
        .collect();
    for p in [
        "/api/publish",
        "/api/send",
        "/api/broadcast",
        "/api/subscribe",
        "/api/unsubscribe",
        "/api/disconnect",
        "/api/users",
        "/api/groups",
        "/api/groups/{group}",
        "/api/info",
    ] {
        assert!(paths.contains(&p), "{p} missing from {paths:?}");
    }
    hub.stop().await;
}

#[actix_web::test]
async fn what_the_admin_console_reads() {
    let hub = TestHub::start(with_api());
    let mut clients = Vec::new();
    for (name, groups) in [("alice", "room,vip"), ("alan", "room"), ("bob", "room")] {
        let mut c = Client::connect(&hub.url(&format!("/ws?name={name}&subscribe={groups}"))).await;
        c.expect(|e| e["type"] == "subscribed" && e["group"] == "room")
            .await;
        clients.push(c);
    }
    // A second session of alice's, in another group.
    let mut phone = Client::connect(&hub.url("/ws?name=alice&subscribe=news")).await;
    phone.expect(|e| e["type"] == "subscribed").await;
    let found = call(&hub, "GET", "/api/users?prefix=al&limit=1", Value::Null)
        .await
        .json();
    assert_eq!(
        found,
        json!({"users":[{"name":"alan","sessions":1}],"count":3,"next":"alan"})
    );
    let found = call(&hub, "GET", "/api/users?prefix=al&after=alan", Value::Null)
        .await
        .json();
    assert_eq!(
        found,
        json!({"users":[{"name":"alice","sessions":2}],"count":3})
    );
    let alice = call(&hub, "GET", "/api/users/alice", Value::Null)
        .await
        .json();
    assert_eq!(
        alice,
        json!({"name":"alice","sessions":2,"groups":["news","room","vip"]})
    );
    assert_eq!(
        call(&hub, "GET", "/api/users/nobody", Value::Null)
            .await
            .status,
        404
    );
    let top = call(
        &hub,
        "GET",
        "/api/groups?order=members&limit=2",
        Value::Null,
    )
    .await
    .json();
    assert_eq!(
        top["groups"],
        json!([{"group":"room","members":3},{"group":"news","members":1}])
    );
    assert_eq!(
        call(&hub, "GET", "/api/groups?order=size", Value::Null)
            .await
            .status,
        400
    );
    call(
        &hub,
        "POST",
        "/api/publish",
        json!({"group":"room","body":"one"}),
    )
    .await;
    call(
        &hub,
        "POST",
        "/api/publish",
        json!({"group":"room","body":"two"}),
    )
    .await;
    let page = call(
        &hub,
        "GET",
        "/api/groups/room/messages?limit=1",
        Value::Null,
    )
    .await
    .json();
    assert_eq!(
        (&page["group"], &page["offset"]),
        (&json!("room"), &json!(2))
    );
    let bodies: Vec<_> = page["messages"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["body"].clone())
        .collect();
    assert_eq!(bodies, [json!("two")]);
    assert_eq!(
        call(&hub, "GET", "/api/groups/stock/messages", Value::Null)
            .await
            .status,
        400
    );
    let info = call(&hub, "GET", "/api/info", Value::Null).await.json();
    assert!(info["bytes_out"].as_u64().is_some_and(|b| b > 0), "{info}");
    // The console itself: only with the API, and it holds no secret.
    let page = http(hub.addr, "GET", "/admin", &[], b"").await;
    assert_eq!(page.status, 200);
    assert!(page
        .header("content-type")
        .is_some_and(|t| t.starts_with("text/html")));
    assert!(!page.body.contains(KEY));
    hub.stop().await;
    let hub = TestHub::start(config());
    assert_eq!(http(hub.addr, "GET", "/admin", &[], b"").await.status, 404);
    hub.stop().await;
}
