//! Property tests of frame-to-command decoding: no input panics, and every input that is
//! not a valid command is a decode error (answered `bad_request`).

use proptest::prelude::*;
use serde_json::{json, Value};
use wxhub::protocol::{decode, Inbound};

/// JSON values shaped like commands: a known or unknown type, fields of any JSON type.
fn command_like() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::from),
        any::<i64>().prop_map(Value::from),
        any::<f64>()
            .prop_filter("finite", |f| f.is_finite())
            .prop_map(Value::from),
        ".{0,12}".prop_map(Value::from),
    ];
    let value = leaf.prop_recursive(3, 16, 4, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..4).prop_map(Value::from),
            prop::collection::hash_map("[a-z]{1,6}", inner, 0..4)
                .prop_map(|m| Value::Object(m.into_iter().collect())),
        ]
    });
    let ty = prop_oneof![
        Just("join"),
        Just("direct"),
        Just("broadcast"),
        Just("subscribe"),
        Just("unsubscribe"),
        Just("publish"),
        Just("users"),
        Just("ping"),
        Just("history"),
        Just("nope"),
    ];
    let field = prop_oneof![
        Just("name"),
        Just("to"),
        Just("body"),
        Just("group"),
        Just("presence"),
        Just("id"),
        Just("symbol"),
        Just("limit"),
        Just("token"),
        Just("type"),
    ];
    (
        prop::option::of(ty),
        prop::collection::vec((field, value), 0..5),
    )
        .prop_map(|(ty, fields)| {
            let mut obj = serde_json::Map::new();
            if let Some(t) = ty {
                obj.insert("type".into(), json!(t));
            }
            for (k, v) in fields {
                obj.insert(k.into(), v);
            }
            Value::Object(obj)
        })
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(2000))]

    #[test]
    fn arbitrary_text_never_panics(text in any::<String>()) {
        let _ = decode(&text);
    }

    #[test]
    fn arbitrary_bytes_as_text_never_panic(bytes in prop::collection::vec(any::<u8>(), 0..256)) {
        let _ = decode(&String::from_utf8_lossy(&bytes));
    }

    #[test]
    fn command_shaped_json_decodes_or_errs_consistently(value in command_like()) {
        let text = value.to_string();
        match decode(&text) {
            Ok(Inbound::Command { command, .. }) => {
                // Whatever decoded had a known type, as a string.
                let ty = value["type"].as_str().unwrap_or_default();
                prop_assert_ne!(ty, "nope");
                let shown = format!("{command:?}").to_lowercase();
                prop_assert!(shown.starts_with(ty), "{} decoded as {}", ty, shown);
            }
            Ok(Inbound::LegacyJoin { name, .. }) => {
                // No `type`, or `"type": null`, which counts as none.
                prop_assert!(value["type"].is_null());
                prop_assert_eq!(Some(name.as_str()), value["name"].as_str());
            }
            Ok(Inbound::LegacyStock) => prop_assert!(false, "an object is never `stock`"),
            Err(e) => {
                prop_assert!(!e.message.is_empty());
                // An error echoes the id only if it was a string or an integer.
                if e.id.is_some() {
                    prop_assert!(value["id"].is_string() || value["id"].is_i64() || value["id"].is_u64());
                }
            }
        }
    }
}
