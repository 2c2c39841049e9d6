//! Every command and error code of protocol v1, over a real port with a real client.

mod common;

use common::*;
use serde_json::json;

#[actix_web::test]
async fn chat_between_two_users() {
    let hub = TestHub::start(config());
    let mut alice = hub.client().await;
    assert_eq!(
        alice
            .request(json!({"type":"join","name":"alice","id":"j1"}))
            .await["id"],
        "j1"
    );
    let mut bob = hub.joined("bob").await;

    // direct
    let ack = alice
        .request(json!({"type":"direct","to":"bob","body":{"text":"hi"},"id":1}))
        .await;
    assert_eq!(ack, json!({"type":"ack","id":1,"delivered":1}));
    let m = bob.recv_json().await;
    assert_eq!(
        (&m["type"], &m["kind"], &m["from"], &m["to"], &m["body"]),
        (
            &json!("message"),
            &json!("direct"),
            &json!("alice"),
            &json!("bob"),
            &json!({"text":"hi"})
        )
    );

    // broadcast: both sessions, the sender's included; `delivered` counts the others
    alice
        .send_json(json!({"type":"broadcast","body":"all","id":2}))
        .await;
    assert_eq!(alice.recv_json().await["kind"], "broadcast");
    let ack = alice.expect(|v| v["type"] == "ack").await;
    assert_eq!(ack["delivered"], 1);
    assert_eq!(bob.recv_json().await["kind"], "broadcast");

    // subscribe, publish, presence
    let sub = alice
        .request(json!({"type":"subscribe","group":"room","presence":true,"id":3}))
        .await;
    let mut sub = sub;
    assert!(sub["epoch"].take().is_string(), "{sub}");
    assert_eq!(
        sub,
        json!({"type":"subscribed","id":3,"group":"room","members":1,"epoch":null,"offset":0})
    );
    alice
        .expect(|v| v["type"] == "presence" && v["name"] == "alice")
        .await;
    let sub = bob
        .request(json!({"type":"subscribe","group":"room"}))
        .await;
    assert_eq!(sub["members"], 2);
    let p = alice.expect(|v| v["type"] == "presence").await;
    assert_eq!(
        p,
        json!({"type":"presence","group":"room","event":"join","name":"bob"})
    );
    // The publisher is a member, so it hears its own message too, before the ack, which
    // counts the others.
    bob.send_json(json!({"type":"publish","group":"room","body":[1,2],"id":4}))
        .await;
    assert_eq!(bob.recv_json().await["kind"], "group");
    assert_eq!(
        bob.recv_json().await,
        json!({"type":"ack","id":4,"delivered":1})
    );
    let m = alice.recv_json().await;
    assert_eq!((&m["group"], &m["body"]), (&json!("room"), &json!([1, 2])));

    // users
    let users = alice.request(json!({"type":"users","id":5})).await;
    assert_eq!(
        users,
        json!({"type":"users","id":5,"users":["alice","bob"],"count":2})
    );
    let users = alice.request(json!({"type":"users","group":"room"})).await;
    assert_eq!(users["users"], json!(["alice", "bob"]));

    // unsubscribe
    let un = bob
        .request(json!({"type":"unsubscribe","group":"room","id":6}))
        .await;
    assert_eq!(un, json!({"type":"unsubscribed","id":6,"group":"room"}));
    let p = alice.recv_json().await;
    assert_eq!(p["event"], "leave");

    // bob disconnects: alice's group and user list drop him
    bob.close().await;
    hub.wait_stats(|s| s.users == 1).await;
    let users = alice.request(json!({"type":"users"})).await;
    assert_eq!(users["users"], json!(["alice"]));
    // Seen within the history window: kept for his next session.
    let ack = alice
        .request(json!({"type":"direct","to":"bob","body":1,"id":7}))
        .await;
    assert_eq!(
        ack,
        json!({"type":"ack","id":7,"delivered":0,"stored":true})
    );
    // Never seen: not found.
    let err = alice
        .request(json!({"type":"direct","to":"carol","body":1,"id":8}))
        .await;
    assert_eq!((&err["code"], &err["id"]), (&json!("not_found"), &json!(8)));
    hub.stop().await;
}

#[actix_web::test]
async fn one_user_many_sessions() {
    let hub = TestHub::start(config());
    let mut phone = hub.joined("bob").await;
    let mut web = hub.joined("bob").await;
    let mut alice = hub.joined("alice").await;
    let ack = alice
        .request(json!({"type":"direct","to":"bob","body":"x"}))
        .await;
    assert_eq!(ack["delivered"], 2);
    assert_eq!(phone.recv_json().await["body"], "x");
    assert_eq!(web.recv_json().await["body"], "x");
    let users = alice.request(json!({"type":"users"})).await;
    assert_eq!(users["users"], json!(["alice", "bob"]));
    hub.stop().await;
}

#[actix_web::test]
async fn every_error_code_keeps_the_connection() {
    let mut c = Config {
        max_groups: 2,
        ..config()
    };
    c.tick_ms = 1000;
    let hub = TestHub::start(c);
    let mut a = hub.client().await;
    let code = |v: &serde_json::Value| v["code"].as_str().unwrap_or("").to_owned();

    // before join
    for (i, cmd) in [
        json!({"type":"direct","to":"x","body":1}),
        json!({"type":"broadcast","body":1}),
        json!({"type":"subscribe","group":"room"}),
        json!({"type":"publish","group":"room","body":1}),
        json!({"type":"users"}),
    ]
    .into_iter()
    .enumerate()
    {
        let mut cmd = cmd;
        cmd["id"] = json!(i);
        let e = a.request(cmd).await;
        assert_eq!(
            (code(&e), &e["id"]),
            ("not_joined".into(), &json!(i)),
            "{e}"
        );
    }
    // but ping needs no join
    assert_eq!(
        a.request(json!({"type":"ping","id":"p"})).await,
        json!({"type":"pong","id":"p"})
    );

    // bad_request
    for bad in [
        "not json",
        "[1]",
        r#"{"no":"type"}"#,
        r#"{"type":"launch"}"#,
        r#"{"type":"direct","to":"bob"}"#,
        r#"{"type":"subscribe","group":7}"#,
        r#"{"type":"ping","id":{"x":1}}"#,
    ] {
        a.send_text(bad).await;
        let e = a.recv_json().await;
        assert_eq!(code(&e), "bad_request", "{bad} -> {e}");
        assert!(!e["message"].as_str().unwrap().is_empty());
    }
    let e = a.request(json!({"type":"launch","id":9})).await;
    assert_eq!((code(&e), &e["id"]), ("bad_request".into(), &json!(9)));

    // invalid_name, then join, then already_joined
    for name in ["", " x", "x ", "a\u{7}b"] {
        let e = a.request(json!({"type":"join","name":name})).await;
        assert_eq!(code(&e), "invalid_name", "{name:?}");
    }
    let e = a
        .request(json!({"type":"join","name":"x".repeat(65)}))
        .await;
    assert_eq!(code(&e), "invalid_name");
    assert_eq!(
        a.request(json!({"type":"join","name":"张三"})).await["type"],
        "joined"
    );
    assert_eq!(
        code(&a.request(json!({"type":"join","name":"again"})).await),
        "already_joined"
    );

    // invalid_group, forbidden, not_found, too_many_groups
    assert_eq!(
        code(&a.request(json!({"type":"subscribe","group":"a b"})).await),
        "invalid_group"
    );
    assert_eq!(
        code(
            &a.request(json!({"type":"publish","group":"","body":1}))
                .await
        ),
        "invalid_group"
    );
    assert_eq!(
        code(
            &a.request(json!({"type":"publish","group":"stock","body":1}))
                .await
        ),
        "forbidden"
    );
    assert_eq!(
        code(
            &a.request(json!({"type":"publish","group":"stock.600519","body":1}))
                .await
        ),
        "forbidden"
    );
    assert_eq!(
        code(
            &a.request(json!({"type":"direct","to":"nobody","body":1}))
                .await
        ),
        "not_found"
    );
    assert_eq!(
        code(
            &a.request(json!({"type":"subscribe","group":"stock.NOPE"}))
                .await
        ),
        "not_found"
    );
    assert_eq!(
        code(&a.request(json!({"type":"history","symbol":"NOPE"})).await),
        "not_found"
    );
    a.request(json!({"type":"subscribe","group":"g1"})).await;
    a.request(json!({"type":"subscribe","group":"g2"})).await;
    assert_eq!(
        code(&a.request(json!({"type":"subscribe","group":"g3"})).await),
        "too_many_groups"
    );

    // still usable after all that
    assert_eq!(a.request(json!({"type":"ping"})).await["type"], "pong");
    assert_eq!(
        a.request(json!({"type":"users"})).await["users"],
        json!(["张三"])
    );
    hub.stop().await;
}

#[actix_web::test]
async fn http_routes() {
    let hub = TestHub::start(config());
    let health = http_get(hub.addr, "/healthz").await;
    assert!(health.starts_with("HTTP/1.1 200"), "{health}");
    let page = http_get(hub.addr, "/").await;
    assert!(page.starts_with("HTTP/1.1 200"), "{page}");
    assert!(page.contains("text/html"));
    assert!(page.contains("<html"));
    // `/` is a WebSocket endpoint too, for clients that connect with no path.
    let mut c = Client::connect(&hub.url("/")).await;
    assert_eq!(c.request(json!({"type":"ping"})).await["type"], "pong");
    hub.stop().await;
}

#[actix_web::test]
async fn the_client_library_is_served_as_it_is_in_the_repository() {
    let hub = TestHub::start(config());
    let response = http_get(hub.addr, "/client.js").await;
    let (head, body) = response.split_once("\r\n\r\n").expect("a response");
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    assert!(
        head.to_ascii_lowercase()
            .contains("content-type: text/javascript"),
        "{head}"
    );
    let source = include_str!("../clients/js/wxhub.js");
    assert!(
        body.contains(source),
        "the served library differs from clients/js/wxhub.js"
    );
    hub.stop().await;
}
