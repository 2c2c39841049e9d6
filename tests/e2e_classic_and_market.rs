//! The classic mini-program clients, exactly as they speak, and the market feed.

mod common;

use common::*;
use serde_json::{json, Value};

/// What the classic app does with every message: drop the first space, strip BOMs, parse.
fn classic_parse(data: &str) -> Value {
    let data = data.replacen(' ', "", 1).replace('\u{feff}', "");
    serde_json::from_str(&data)
        .unwrap_or_else(|e| panic!("classic client cannot parse {data}: {e}"))
}

fn assert_six(v: &Value) -> Vec<f64> {
    let six: Vec<f64> = v
        .as_array()
        .unwrap_or_else(|| panic!("not an array: {v}"))
        .iter()
        .map(|x| x.as_f64().unwrap())
        .collect();
    assert_eq!(six.len(), 6, "{v}");
    for x in &six {
        assert!((0.01..=1.0).contains(x), "{x} out of range");
        assert_eq!(
            (x * 100.0).round() / 100.0,
            *x,
            "{x} has more than two decimals"
        );
    }
    six
}

#[actix_web::test]
async fn classic_stock_page() {
    let hub = TestHub::start(config());
    // It connects with no path and sends the plain text `stock` on open.
    let mut page = Client::connect(&hub.url("")).await;
    page.send_text("stock").await;
    let mut series = Vec::new();
    for _ in 0..4 {
        series.push(assert_six(&classic_parse(&page.recv_text().await)));
    }
    // The first array is the snapshot at the open: every symbol at 0.50.
    assert_eq!(series[0], [0.5; 6]);
    assert!(
        series[1..].iter().any(|s| *s != series[0]),
        "the feed moves: {series:?}"
    );
    hub.stop().await;
}

#[actix_web::test]
async fn classic_login_with_groups_in_the_name() {
    let hub = TestHub::start(config());
    let mut classic = Client::connect(&hub.url("")).await;
    classic.send_text(r#"{"name":"sales,vip_alice"}"#).await;
    let joined = classic_parse(&classic.recv_text().await);
    assert_eq!(joined["type"], "joined");
    let mut boss = hub.joined("boss").await;
    for group in ["sales", "vip"] {
        let ack = boss
            .request(json!({"type":"publish","group":group,"body":{"text":"meeting"}}))
            .await;
        assert_eq!(ack["delivered"], 1, "{group}: {ack}");
        let m = classic_parse(&classic.recv_text().await);
        assert_eq!((&m["kind"], &m["group"]), (&json!("group"), &json!(group)));
    }
    let ack = boss
        .request(json!({"type":"direct","to":"sales,vip_alice","body":"hi"}))
        .await;
    assert_eq!(ack["delivered"], 1);
    assert_eq!(classic_parse(&classic.recv_text().await)["from"], "boss");
    let users = boss.request(json!({"type":"users","group":"vip"})).await;
    assert_eq!(users["users"], json!(["sales,vip_alice"]));
    hub.stop().await;
}

#[actix_web::test]
async fn a_symbol_page_gets_a_snapshot_then_quotes_at_the_tick_interval() {
    let hub = TestHub::start(config()); // tick every 100 ms
    let mut page = hub.client().await; // no join: stock pages need none
    let sub = page
        .request(json!({"type":"subscribe","group":"stock.600519","id":1}))
        .await;
    assert_eq!(
        sub,
        json!({"type":"subscribed","id":1,"group":"stock.600519","members":1})
    );
    let snapshot = page.recv_json().await;
    assert_eq!(snapshot["type"], "quote");
    assert_eq!(snapshot["quote"]["price"], snapshot["quote"]["open"]);
    let mut ts = Vec::new();
    for _ in 0..6 {
        let q = page.recv_json().await;
        assert_eq!(q["type"], "quote");
        let quote = &q["quote"];
        assert_eq!(quote["symbol"], "600519");
        for field in [
            "name",
            "open",
            "price",
            "change",
            "change_pct",
            "high",
            "low",
            "volume",
            "turnover",
            "ts",
        ] {
            assert!(!quote[field].is_null(), "{field} missing in {quote}");
        }
        assert!(quote["price"].as_f64().unwrap() > 0.0);
        ts.push(quote["ts"].as_u64().unwrap());
    }
    // Six ticks at least 100 ms apart (each is armed after the last) span 500 ms or a
    // little more; allow for a loaded machine.
    let span = ts[5] - ts[0];
    assert!((490..=5000).contains(&span), "quotes spanned {span} ms");

    // `stock` carries every symbol; history fills a late chart.
    let mut all = hub.client().await;
    all.request(json!({"type":"subscribe","group":"stock"}))
        .await;
    let tick = all.expect(|v| v["type"] == "tick").await;
    assert_eq!(tick["quotes"].as_array().unwrap().len(), 6);
    let history = all
        .request(json!({"type":"history","symbol":"600519","limit":5,"id":"h"}))
        .await;
    let history = if history["type"] == "history" {
        history
    } else {
        all.expect(|v| v["type"] == "history").await
    };
    assert_eq!(history["id"], "h");
    assert_eq!(history["quotes"].as_array().unwrap().len(), 5);
    // A classic page on the same hub keeps working beside them.
    let mut classic = Client::connect(&hub.url("/")).await;
    classic.send_text("stock").await;
    assert_six(&classic_parse(&classic.recv_text().await));
    hub.stop().await;
}

#[actix_web::test]
async fn the_same_seed_gives_the_same_prices() {
    let mut prices = Vec::new();
    for _ in 0..2 {
        let hub = TestHub::start(config()); // seed 42
        let mut page = hub.client().await;
        page.request(json!({"type":"subscribe","group":"stock.300750"}))
            .await;
        let mut seen = Vec::new();
        for _ in 0..5 {
            seen.push(page.recv_json().await["quote"]["price"].as_f64().unwrap());
        }
        prices.push(seen);
        hub.stop().await;
    }
    assert_eq!(prices[0], prices[1]);
    assert!(prices[0].iter().any(|p| *p != prices[0][0]));
}
