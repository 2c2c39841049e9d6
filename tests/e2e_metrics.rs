//! `/metrics` parses as Prometheus text, and named counters move by what the traffic did.
//! One test in this binary: the process-wide counters are shared by every hub in it.

mod common;

use common::*;
use serde_json::json;

fn scrape_text(text: &str) -> prometheus_parse::Scrape {
    let lines = text.lines().map(|l| Ok(l.to_owned()));
    prometheus_parse::Scrape::parse(lines)
        .unwrap_or_else(|e| panic!("not Prometheus text: {e}\n{text}"))
}

/// The value of `name` with the given labels (all of them must match).
fn value(s: &prometheus_parse::Scrape, name: &str, labels: &[(&str, &str)]) -> f64 {
    s.samples
        .iter()
        .find(|m| m.metric == name && labels.iter().all(|(k, v)| m.labels.get(k) == Some(*v)))
        .map(|m| match m.value {
            prometheus_parse::Value::Counter(v)
            | prometheus_parse::Value::Gauge(v)
            | prometheus_parse::Value::Untyped(v) => v,
            prometheus_parse::Value::Histogram(ref h) => {
                h.iter().map(|b| b.count).fold(0.0, f64::max)
            }
            _ => f64::NAN,
        })
        .unwrap_or(0.0)
}

async fn scrape(addr: std::net::SocketAddr) -> prometheus_parse::Scrape {
    let r = http(addr, "GET", "/metrics", &[], b"").await;
    assert_eq!(r.status, 200, "{r:?}");
    assert!(r
        .header("content-type")
        .is_some_and(|t| t.starts_with("text/plain")));
    scrape_text(&r.body)
}

#[actix_web::test]
async fn counters_move_by_what_the_traffic_did() {
    let hub = TestHub::start(Config {
        api_key: Some("metrics-test-key-0123456789".into()),
        api_bind: Some("127.0.0.1:0".parse().unwrap()),
        allowed_origins: vec!["https://good.example".into()],
        ..config()
    });
    let api = hub.api_addr.expect("the API listener");
    // Not on the public listener when the API has its own.
    assert_eq!(
        http(hub.addr, "GET", "/metrics", &[], b"").await.status,
        404
    );
    let before = scrape(api).await;

    let mut alice = hub.joined("alice").await;
    let mut bob = hub.joined("bob").await;
    for c in [&mut alice, &mut bob] {
        c.request(json!({"type":"subscribe","group":"room"})).await;
    }
    alice
        .request(json!({"type":"publish","group":"room","body":"hi"}))
        .await; // her copy
    alice.expect(|e| e["type"] == "ack").await;
    bob.recv_json().await;
    let ack = alice
        .request(json!({"type":"direct","to":"bob","body":"psst"}))
        .await;
    assert_eq!(ack["delivered"], 1);
    bob.recv_json().await;
    alice.request(json!({"type":"launch"})).await; // bad_request
    let err = alice
        .request(json!({"type":"direct","to":"nobody","body":1}))
        .await;
    assert_eq!(err["code"], "not_found");
    // A refused origin.
    let r = http(
        hub.addr,
        "GET",
        "/ws",
        &[
            "Upgrade: websocket",
            "Connection: Upgrade",
            "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==",
            "Sec-WebSocket-Version: 13",
            "Origin: https://evil.example",
        ],
        b"",
    )
    .await;
    assert_eq!(r.status, 403);
    // An API call.
    let r = http(
        api,
        "GET",
        "/api/info",
        &["Authorization: Bearer metrics-test-key-0123456789"],
        b"",
    )
    .await;
    assert_eq!(r.status, 200);
    // Bob leaves: a close by the client.
    bob.close().await;
    hub.wait_stats(|s| s.users == 1).await;

    let after = scrape(api).await;
    let moved = |name: &str, labels: &[(&str, &str)]| {
        value(&after, name, labels) - value(&before, name, labels)
    };
    assert_eq!(moved("wxhub_commands_total", &[("type", "join")]), 2.0);
    assert_eq!(moved("wxhub_commands_total", &[("type", "subscribe")]), 2.0);
    assert_eq!(moved("wxhub_commands_total", &[("type", "publish")]), 1.0);
    assert_eq!(moved("wxhub_commands_total", &[("type", "direct")]), 2.0);
    assert_eq!(moved("wxhub_errors_total", &[("code", "bad_request")]), 1.0);
    assert_eq!(moved("wxhub_errors_total", &[("code", "not_found")]), 1.0);
    assert_eq!(
        moved("wxhub_handshakes_refused_total", &[("reason", "origin")]),
        1.0
    );
    assert_eq!(
        moved(
            "wxhub_api_requests_total",
            &[("endpoint", "/api/info"), ("status", "200")]
        ),
        1.0
    );
    assert_eq!(moved("wxhub_closes_total", &[("reason", "client")]), 1.0);
    assert!(moved("wxhub_bytes_out_total", &[]) > 100.0);
    // Two joins, two subscribes, a publish and two directs went through the hub (the
    // bad request was answered by its session).
    assert_eq!(moved("wxhub_route_seconds_count", &[]), 7.0);
    // The hub's own numbers, as of the scrape.
    assert_eq!(
        value(&after, "wxhub_deliveries_total", &[("kind", "group")]),
        1.0
    );
    assert_eq!(
        value(&after, "wxhub_deliveries_total", &[("kind", "direct")]),
        1.0
    );
    assert_eq!(value(&after, "wxhub_messages_total", &[]), 2.0);
    assert_eq!(value(&after, "wxhub_connections", &[]), 1.0);
    assert_eq!(value(&after, "wxhub_users", &[]), 1.0);
    assert_eq!(value(&after, "wxhub_groups", &[]), 1.0);
    assert!(value(&after, "wxhub_history_messages", &[]) >= 2.0);
    hub.stop().await;

    // On the public listener, behind the API key when there is one.
    let hub = TestHub::start(Config {
        api_key: Some("metrics-test-key-0123456789".into()),
        ..config()
    });
    assert_eq!(
        http(hub.addr, "GET", "/metrics", &[], b"").await.status,
        401
    );
    let r = http(
        hub.addr,
        "GET",
        "/metrics",
        &["Authorization: Bearer metrics-test-key-0123456789"],
        b"",
    )
    .await;
    assert_eq!(r.status, 200);
    scrape_text(&r.body);
    hub.stop().await;
    let hub = TestHub::start(config());
    scrape(hub.addr).await;
    hub.stop().await;
}
