//! Property tests of `parse_control`, the parser of client text frames:
//! arbitrary input never panics, it takes exactly the JSON objects with a
//! control `type` as control messages, and every control message written as
//! JSON reads back the same.

use std::collections::BTreeMap;

use proptest::prelude::*;
use serde::Deserialize;
use serde::de::IgnoredAny;
use serde_json::{Map, Value, json};
use ws_control::{Control, parse_control};

/// The two fields the protocol reads, by name.
#[derive(Deserialize)]
struct Fields {
    #[serde(rename = "type")]
    kind: Option<Value>,
    room: Option<Value>,
}

/// What the protocol says `text` is, written out independently: a JSON
/// object (any values, numbers of any size) whose `type` is a control verb
/// is a control message, malformed when a `subscribe` or `unsubscribe` has no
/// string `room`; an object with a key twice is not one; anything else is not.
fn model(text: &str) -> Option<Result<Control, ()>> {
    serde_json::from_str::<BTreeMap<String, IgnoredAny>>(text).ok()?;
    let Fields { kind, room } = serde_json::from_str(text).ok()?;
    let room = || match &room {
        Some(Value::String(r)) => Ok(r.clone()),
        _ => Err(()),
    };
    Some(match kind?.as_str()? {
        "ping" => Ok(Control::Ping),
        "subscribe" => room().map(Control::Subscribe),
        "unsubscribe" => room().map(Control::Unsubscribe),
        "authenticate" => Ok(Control::Authenticate),
        _ => return None,
    })
}

fn parsed(text: &str) -> Option<Result<Control, ()>> {
    parse_control(text).map(|r| {
        r.map_err(|why| {
            assert!(!why.is_empty(), "an error says why: {text}");
        })
    })
}

/// Any JSON value, a few levels deep.
fn json_value() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::from),
        any::<i64>().prop_map(Value::from),
        "(?s).{0,12}".prop_map(Value::from),
    ];
    leaf.prop_recursive(3, 16, 4, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..4).prop_map(Value::from),
            prop::collection::btree_map("[a-z]{1,6}", inner, 0..4)
                .prop_map(|m| Value::Object(m.into_iter().collect())),
        ]
    })
}

/// A control verb (or not), as the `type` of an object.
fn kind() -> impl Strategy<Value = Value> {
    prop_oneof![
        4 => prop::sample::select(vec!["ping", "subscribe", "unsubscribe", "authenticate"])
            .prop_map(Value::from),
        1 => "[a-z]{0,12}".prop_map(Value::from),
        1 => json_value(),
    ]
}

/// JSON objects shaped like control messages: maybe a `type`, maybe a
/// `room` (a string or any value), other keys.
fn control_like() -> impl Strategy<Value = String> {
    (
        prop::option::of(kind()),
        prop::option::of(prop_oneof![3 => "(?s).{0,20}".prop_map(Value::from), 1 => json_value()]),
        prop::collection::btree_map("x[a-z]{0,5}", json_value(), 0..3),
    )
        .prop_map(|(kind, room, extra)| {
            let mut m: Map<String, Value> = extra.into_iter().collect();
            if let Some(k) = kind {
                m.insert("type".into(), k);
            }
            if let Some(r) = room {
                m.insert("room".into(), r);
            }
            Value::Object(m).to_string()
        })
}

/// `text` with a few bytes replaced, inserted or removed (bytes of JSON syntax).
fn mutated() -> impl Strategy<Value = String> {
    let edit = (
        any::<prop::sample::Index>(),
        0u8..3,
        prop::sample::select(br#"{}[]":,0123456789-.aeilnprstuy \"#.to_vec()),
    );
    (control_like(), prop::collection::vec(edit, 1..4)).prop_map(|(text, edits)| {
        let mut b = text.into_bytes();
        for (at, op, c) in edits {
            let i = at.index(b.len() + 1);
            match op {
                0 if i < b.len() => b[i] = c,
                1 => b.insert(i, c),
                _ if i < b.len() => {
                    b.remove(i);
                }
                _ => b.push(c),
            }
        }
        String::from_utf8_lossy(&b).into_owned()
    })
}

#[test]
fn control_shaped_objects_parse_exactly_as_the_protocol_says() {
    proptest!(ProptestConfig::with_cases(1024), |(text in control_like())| {
        prop_assert_eq!(parsed(&text), model(&text), "{}", text);
    });
}

#[test]
fn arbitrary_and_mutated_text_never_panics_and_what_parses_is_what_it_says() {
    let text = prop_oneof!["(?s).{0,80}", mutated()];
    let controls = std::cell::Cell::new(0);
    proptest!(ProptestConfig::with_cases(1024), |(text in text)| {
        let got = parsed(&text);
        controls.set(controls.get() + usize::from(got.is_some()));
        prop_assert_eq!(got, model(&text), "{}", text);
    });
    assert!(
        controls.get() > 0,
        "some mutated frames are still control messages"
    );
}

#[test]
fn every_control_message_written_as_json_reads_back_the_same() {
    let control = prop_oneof![
        Just(Control::Ping),
        Just(Control::Authenticate),
        "(?s).{0,40}".prop_map(Control::Subscribe),
        "(?s).{0,40}".prop_map(Control::Unsubscribe),
    ];
    let extra = prop::collection::btree_map("x[a-z]{0,5}", json_value(), 0..3);
    proptest!(ProptestConfig::with_cases(512), |(c in control, extra in extra)| {
        let mut m: Map<String, Value> = extra.into_iter().collect();
        let (verb, room) = match &c {
            Control::Ping => ("ping", None),
            Control::Authenticate => ("authenticate", None),
            Control::Subscribe(r) => ("subscribe", Some(r)),
            Control::Unsubscribe(r) => ("unsubscribe", Some(r)),
        };
        m.insert("type".into(), json!(verb));
        if let Some(r) = room {
            m.insert("room".into(), json!(r));
        }
        let text = Value::Object(m).to_string();
        prop_assert_eq!(parse_control(&text), Some(Ok(c)), "{}", text);
    });
}
