//! Decodes and encodes the JSON text messages of the ws-wrapper protocol (events, requests, answers, cancellations, anonymous channels), with no I/O.
//!
//! ws-wrapper (npm `ws-wrapper`, its Go port ws-server-wrapper-go) puts named
//! events, requests with answers, named channels and request-scoped anonymous
//! channels on one WebSocket, one JSON object per text message. This crate is
//! only the wire format: [`decode`] turns one text message into a
//! [`WrapperMessage`] or says why the protocol ignores it ([`Ignore`]);
//! [`encode`] writes a message the way the JavaScript library does. You will
//! not find a socket, a handler table or a request counter here:
//! `ws_wrapper_session` keeps that state, for the server and the client alike.
//!
//! # Example
//!
//! ```
//! use serde_json::json;
//! use ws_wrapper_codec::{decode, encode, error_value, Decoded, Ignore, WrapperMessage};
//!
//! // A request for `add(2, 3)`, id 1, on the main channel.
//! let Decoded::Message(WrapperMessage::Request { id, channel, name, args }) =
//!     decode(r#"{"a":["add",2,3],"i":1}"#)
//! else {
//!     panic!("a request");
//! };
//! assert_eq!((id, channel, name.as_str(), args), (1, None, "add", vec![json!(2), json!(3)]));
//!
//! // Its answers.
//! let ok = WrapperMessage::Resolve { id, data: json!(5) };
//! assert_eq!(encode(&ok), r#"{"i":1,"d":5}"#);
//! let failed = WrapperMessage::Reject { id, error: error_value("nope"), error_object: true };
//! assert_eq!(encode(&failed), r#"{"i":1,"e":{"message":"nope"},"_":1}"#);
//!
//! // What the protocol ignores is reported, never an error.
//! assert_eq!(decode("hello"), Decoded::Ignored(Ignore::NotJson));
//! assert_eq!(decode(r#"{"ws-wrapper":false,"a":["x"]}"#), Decoded::Ignored(Ignore::PassThrough));
//! ```
//!
//! # Which shape a message has
//!
//! Key order on input carries no meaning; several shapes share keys, so
//! [`decode`] decides in the order the JavaScript library does
//! (`lib/wrapper.mjs`, `_onMessage`), after `"ws-wrapper": false` (pass-through):
//!
//! 1. `a` present: an event or request. `a` must be a non-empty array whose
//!    first element is a string (the name), else [`Ignore::NoShape`]. With `h`
//!    it is on anonymous channel `h` ([`WrapperMessage::ChannelEvent`], or
//!    [`WrapperMessage::ChannelRequest`] with `i`; `c` is then ignored, as in
//!    JavaScript); otherwise on channel `c` or the main channel
//!    ([`WrapperMessage::Event`], [`WrapperMessage::Request`] with `i`).
//! 2. `x` present: with `h`, [`WrapperMessage::Abort`] of channel `h`; else
//!    with `i`, [`WrapperMessage::Cancel`] of request `i`.
//! 3. `i` present: with `e`, [`WrapperMessage::Reject`]; else with `h`,
//!    [`WrapperMessage::ChannelCreated`]; else [`WrapperMessage::Resolve`]
//!    with `d` (absent `d` is `null`: a JavaScript handler that returns
//!    `undefined` sends `{"i":1}`).
//! 4. Anything else: [`Ignore::NoShape`].
//!
//! `"i": null`, `"h": null`, `"c": null` and `"a": null` count as absent (the
//! JavaScript side treats them as missing); `d`, `e` and `x` count when
//! present, even as `null` (JavaScript tests them with `!== undefined`). `_` is read with JavaScript truthiness (`1`,
//! `true`, `"1"` set it).
//!
//! # Stricter than the JavaScript library
//!
//! - `i` must be a positive integer (ids count from 1): `0`, `-1`, `1.5`,
//!   `1.0` and `"1"` make the whole message [`Ignore::NoShape`]. (JavaScript
//!   treats a non-number `i` as absent and accepts `0`.)
//! - `h` on an anonymous-channel event, request or abort must be a positive
//!   integer, or the same as a canonical decimal string (`"5"`, not `"05"` or
//!   `" 5"`). For [`WrapperMessage::ChannelCreated`] any non-null `h` will do:
//!   the channel id is `i`.
//! - The event name must be a string, and `c` a string.
//! - An event or request with a reserved name ([`RESERVED`]) on the main
//!   channel is [`Ignore::Reserved`]: those names are the local socket's
//!   own events, never dispatched from the wire.
//!
//! # Encoding
//!
//! [`encode`] writes keys in the order the JavaScript library does (and the
//! recorded frames show): `a`, `c` or `h`, `i` for events and requests; `i`,
//! `d`; `i`, `e`, `_`; `i`, `x`, `_`; `i`, `h`; `h`, `x`, `_`. A handle is
//! written as a number, as the recorded 4.3.1 frames show (`PROTOCOL.md`'s
//! examples write strings; both are read). Values inside `args`, `data`, `error` and `reason` are
//! written by `serde_json`, which (without its `preserve_order` feature, as in
//! this workspace) sorts object keys: `{"value":1,"done":false}` comes out as
//! `{"done":false,"value":1}`, the same JSON object.
//!
//! A `null` rejection or cancellation reason is never written: JavaScript
//! senders replace it with a default Error and a Go peer reads `"e": null` as
//! no error at all, so [`encode`] writes `{"message":"Error"}` for a `Reject`
//! and `{"message":"Request aborted"}` for a `Cancel` or `Abort`, with `_: 1`.
//! [`encode`] does not check names: sending a reserved name on the main
//! channel is the caller's mistake, and the peer ignores it.

use serde_json::Value;

/// The reserved names never sent on the main channel: the socket's own events
/// in the JavaScript library (`open`, `connect`, `message`, `error`, `close`,
/// `disconnect`).
pub const RESERVED: [&str; 6] = ["open", "connect", "message", "error", "close", "disconnect"];

/// The message of the Error sent in place of a `null` rejection (JavaScript's `new Error("Error")`).
pub const DEFAULT_REJECT_MESSAGE: &str = "Error";

/// The message of the Error sent in place of a `null` cancellation or abort
/// reason (JavaScript's `RequestAbortedError`).
pub const DEFAULT_ABORT_MESSAGE: &str = "Request aborted";

/// One ws-wrapper protocol message, as [`decode`] reads it and [`encode`] writes it.
///
/// Ids (`id`, `handle`) are positive. `error_object` is the wire's `_`:
/// `error` or `reason` is an encoded Error, an object with at least
/// `message` ([`error_value`]), that JavaScript rebuilds as an `Error`.
#[derive(Debug, Clone, PartialEq)]
pub enum WrapperMessage {
    /// An event, no answer expected: `{"a":[name, ...args],"c"?:channel}`.
    Event {
        /// The named channel, `None` for the main channel.
        channel: Option<String>,
        /// The event name (`a[0]`).
        name: String,
        /// The arguments (`a[1..]`).
        args: Vec<serde_json::Value>,
    },
    /// A request to be answered with `Resolve`, `Reject` or `ChannelCreated`:
    /// an event with `"i"`.
    Request {
        /// The request id, counted per connection and direction from 1.
        id: u64,
        /// The named channel, `None` for the main channel.
        channel: Option<String>,
        /// The event name (`a[0]`).
        name: String,
        /// The arguments (`a[1..]`).
        args: Vec<serde_json::Value>,
    },
    /// A request's successful answer: `{"i","d"}`.
    Resolve {
        /// The id of the request answered.
        id: u64,
        /// The result; `null` also when the peer sent no `d` (JavaScript `undefined`).
        data: serde_json::Value,
    },
    /// A request's failure: `{"i","e","_"?}`.
    ///
    /// `error: null` decoded means the peer rejected with no reason (only a
    /// non-JavaScript peer sends that; JavaScript would reject the promise with
    /// `null`): treat it as a default Error. Encoded, `null` is written as
    /// `{"message":"Error"}` with `_: 1`, as the JavaScript sender does.
    Reject {
        /// The id of the request answered.
        id: u64,
        /// The rejection value: an Error object when `error_object`, else any JSON.
        error: serde_json::Value,
        /// Whether `error` is an encoded Error (`"_": 1`).
        error_object: bool,
    },
    /// The requester gives up on a request: `{"i","x","_"?}`; meaningful only
    /// while the handler runs (a late answer is ignored by the requester).
    Cancel {
        /// The id of the request cancelled.
        id: u64,
        /// Why; `null` is written as `{"message":"Request aborted"}` with `_: 1`.
        reason: serde_json::Value,
        /// Whether `reason` is an encoded Error (`"_": 1`).
        error_object: bool,
    },
    /// The answer to request `id` is an anonymous channel whose handle is `id`: `{"i","h":1}`.
    ChannelCreated {
        /// The id of the request answered, and the new channel's handle.
        id: u64,
    },
    /// An event on anonymous channel `handle`: `{"a":[name, ...args],"h"}`.
    ChannelEvent {
        /// The channel (the id of the request that created it).
        handle: u64,
        /// The event name (`a[0]`).
        name: String,
        /// The arguments (`a[1..]`).
        args: Vec<serde_json::Value>,
    },
    /// A request on anonymous channel `handle`: `{"a":[name, ...args],"h","i"}`;
    /// answered with a plain `Resolve` or `Reject` (no `h`).
    ChannelRequest {
        /// The request id.
        id: u64,
        /// The channel (the id of the request that created it).
        handle: u64,
        /// The event name (`a[0]`).
        name: String,
        /// The arguments (`a[1..]`).
        args: Vec<serde_json::Value>,
    },
    /// Either side closes anonymous channel `handle`: `{"h","x","_"?}`; also
    /// the answer to a message on an unknown handle.
    Abort {
        /// The channel closed.
        handle: u64,
        /// Why; `null` is written as `{"message":"Request aborted"}` with `_: 1`.
        reason: serde_json::Value,
        /// Whether `reason` is an encoded Error (`"_": 1`).
        error_object: bool,
    },
}

/// What [`decode`] made of one text message.
#[derive(Debug, Clone, PartialEq)]
pub enum Decoded {
    /// A protocol message.
    Message(WrapperMessage),
    /// Not for the protocol; the peer expects no answer and the connection stays open.
    Ignored(Ignore),
}

/// Why a text message is ignored by the protocol (never an error: the JavaScript
/// library ignores such messages silently).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Ignore {
    /// Not JSON.
    NotJson,
    /// Carries `"ws-wrapper": false`: meant for another library on the same socket.
    PassThrough,
    /// JSON, but no protocol shape: not an object, no usable keys, a bad `a`, `i`, `h` or `c`.
    NoShape,
    /// An event or request with a reserved name ([`RESERVED`]) on the main channel.
    Reserved,
}

/// Whether `name` is one of the [`RESERVED`] names, never sent on the main channel.
pub fn is_reserved(name: &str) -> bool {
    RESERVED.contains(&name)
}

/// An encoded Error with this message, `{"message": message}`: what an `Error`
/// becomes on the wire (with `_: 1`).
pub fn error_value(message: &str) -> Value {
    let mut m = serde_json::Map::new();
    m.insert("message".to_owned(), Value::String(message.to_owned()));
    Value::Object(m)
}

/// Reads one text message: a protocol message, or why the protocol ignores it.
pub fn decode(text: &str) -> Decoded {
    let Ok(value) = serde_json::from_str::<Value>(text) else {
        return Decoded::Ignored(Ignore::NotJson);
    };
    match shape(value) {
        Ok(msg) => Decoded::Message(msg),
        Err(why) => Decoded::Ignored(why),
    }
}

fn shape(value: Value) -> Result<WrapperMessage, Ignore> {
    let Value::Object(mut m) = value else {
        return Err(Ignore::NoShape);
    };
    if m.get("ws-wrapper") == Some(&Value::Bool(false)) {
        return Err(Ignore::PassThrough);
    }
    let id = match present(&mut m, "i") {
        None => None,
        Some(i) => Some(positive(&i).ok_or(Ignore::NoShape)?),
    };
    let handle = present(&mut m, "h");

    if let Some(a) = present(&mut m, "a") {
        let (name, args) = split_args(a)?;
        if let Some(h) = handle {
            let handle = parse_handle(&h).ok_or(Ignore::NoShape)?;
            return Ok(match id {
                Some(id) => WrapperMessage::ChannelRequest {
                    id,
                    handle,
                    name,
                    args,
                },
                None => WrapperMessage::ChannelEvent { handle, name, args },
            });
        }
        let channel = match present(&mut m, "c") {
            None => None,
            Some(Value::String(c)) => Some(c),
            Some(_) => return Err(Ignore::NoShape),
        };
        // JavaScript checks reserved names unless `c` is truthy, so `"c": ""` is the main channel here.
        if channel.as_deref().is_none_or(str::is_empty) && is_reserved(&name) {
            return Err(Ignore::Reserved);
        }
        return Ok(match id {
            Some(id) => WrapperMessage::Request {
                id,
                channel,
                name,
                args,
            },
            None => WrapperMessage::Event {
                channel,
                name,
                args,
            },
        });
    }

    let error_object = m.get("_").is_some_and(truthy);
    if let Some(reason) = m.remove("x") {
        if let Some(h) = handle {
            let handle = parse_handle(&h).ok_or(Ignore::NoShape)?;
            return Ok(WrapperMessage::Abort {
                handle,
                reason,
                error_object,
            });
        }
        let id = id.ok_or(Ignore::NoShape)?;
        return Ok(WrapperMessage::Cancel {
            id,
            reason,
            error_object,
        });
    }

    let id = id.ok_or(Ignore::NoShape)?;
    if let Some(error) = m.remove("e") {
        return Ok(WrapperMessage::Reject {
            id,
            error,
            error_object,
        });
    }
    if handle.is_some() {
        return Ok(WrapperMessage::ChannelCreated { id });
    }
    Ok(WrapperMessage::Resolve {
        id,
        data: m.remove("d").unwrap_or(Value::Null),
    })
}

/// Takes `key` out of the object; `null` counts as absent.
fn present(m: &mut serde_json::Map<String, Value>, key: &str) -> Option<Value> {
    m.remove(key).filter(|v| !v.is_null())
}

/// A positive integer id; `1.0` is not one (serde_json reads it as a float).
fn positive(v: &Value) -> Option<u64> {
    v.as_u64().filter(|&n| n > 0)
}

/// A handle: a positive integer, or the same as a canonical decimal string.
fn parse_handle(v: &Value) -> Option<u64> {
    match v {
        Value::String(s) => {
            let canonical = s.bytes().all(|b| b.is_ascii_digit()) && !s.starts_with('0');
            s.parse::<u64>().ok().filter(|&n| canonical && n > 0)
        }
        _ => positive(v),
    }
}

/// `a` as (name, args): a non-empty array whose first element is a string.
fn split_args(a: Value) -> Result<(String, Vec<Value>), Ignore> {
    let Value::Array(mut a) = a else {
        return Err(Ignore::NoShape);
    };
    if !matches!(a.first(), Some(Value::String(_))) {
        return Err(Ignore::NoShape);
    }
    match a.remove(0) {
        Value::String(name) => Ok((name, a)),
        _ => Err(Ignore::NoShape),
    }
}

/// JavaScript truthiness, for `_`.
fn truthy(v: &Value) -> bool {
    match v {
        Value::Null => false,
        Value::Bool(b) => *b,
        Value::Number(n) => n.as_f64().is_some_and(|f| f != 0.0 && !f.is_nan()),
        Value::String(s) => !s.is_empty(),
        Value::Array(_) | Value::Object(_) => true,
    }
}

/// Writes one message as JSON text, keys in the order the JavaScript library
/// writes them (see the crate docs, "Encoding").
pub fn encode(msg: &WrapperMessage) -> String {
    let mut w = Writer::default();
    match msg {
        WrapperMessage::Event {
            channel,
            name,
            args,
        } => {
            w.args(name, args);
            if let Some(c) = channel {
                w.string("c", c);
            }
        }
        WrapperMessage::Request {
            id,
            channel,
            name,
            args,
        } => {
            w.args(name, args);
            if let Some(c) = channel {
                w.string("c", c);
            }
            w.number("i", *id);
        }
        WrapperMessage::Resolve { id, data } => {
            w.number("i", *id);
            w.json("d", data);
        }
        WrapperMessage::Reject {
            id,
            error,
            error_object,
        } => {
            w.number("i", *id);
            w.reason("e", error, *error_object, DEFAULT_REJECT_MESSAGE);
        }
        WrapperMessage::Cancel {
            id,
            reason,
            error_object,
        } => {
            w.number("i", *id);
            w.reason("x", reason, *error_object, DEFAULT_ABORT_MESSAGE);
        }
        WrapperMessage::ChannelCreated { id } => {
            w.number("i", *id);
            w.number("h", 1);
        }
        WrapperMessage::ChannelEvent { handle, name, args } => {
            w.args(name, args);
            w.number("h", *handle);
        }
        WrapperMessage::ChannelRequest {
            id,
            handle,
            name,
            args,
        } => {
            w.args(name, args);
            w.number("h", *handle);
            w.number("i", *id);
        }
        WrapperMessage::Abort {
            handle,
            reason,
            error_object,
        } => {
            w.number("h", *handle);
            w.reason("x", reason, *error_object, DEFAULT_ABORT_MESSAGE);
        }
    }
    w.finish()
}

/// A JSON object written key by key, in the order the keys are given.
#[derive(Default)]
struct Writer {
    buf: Vec<u8>,
}

impl Writer {
    fn key(&mut self, key: &str) {
        self.buf.push(if self.buf.is_empty() { b'{' } else { b',' });
        self.buf.push(b'"');
        self.buf.extend_from_slice(key.as_bytes());
        self.buf.extend_from_slice(b"\":");
    }

    // Writing to a Vec cannot fail, and a str, an integer or a Value (whose
    // object keys are strings) always serializes: the `expect`s never fire.

    fn string(&mut self, key: &str, s: &str) {
        self.key(key);
        serde_json::to_writer(&mut self.buf, s).expect("a str serializes");
    }

    fn number(&mut self, key: &str, n: u64) {
        self.key(key);
        serde_json::to_writer(&mut self.buf, &n).expect("a u64 serializes");
    }

    fn json(&mut self, key: &str, v: &Value) {
        self.key(key);
        serde_json::to_writer(&mut self.buf, v).expect("a Value serializes");
    }

    /// `"a":[name, ...args]`.
    fn args(&mut self, name: &str, args: &[Value]) {
        self.key("a");
        self.buf.push(b'[');
        serde_json::to_writer(&mut self.buf, name).expect("a str serializes");
        for arg in args {
            self.buf.push(b',');
            serde_json::to_writer(&mut self.buf, arg).expect("a Value serializes");
        }
        self.buf.push(b']');
    }

    /// An `e` or `x` value and its `_`; `null` becomes a default Error.
    fn reason(&mut self, key: &str, value: &Value, error_object: bool, default: &str) {
        if value.is_null() {
            self.json(key, &error_value(default));
            self.number("_", 1);
        } else {
            self.json(key, value);
            if error_object {
                self.number("_", 1);
            }
        }
    }

    fn finish(mut self) -> String {
        self.buf.push(b'}');
        String::from_utf8(self.buf).expect("serde_json writes UTF-8")
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    use WrapperMessage::*;

    fn msg(text: &str) -> WrapperMessage {
        match decode(text) {
            Decoded::Message(m) => m,
            Decoded::Ignored(why) => panic!("{text} was ignored: {why:?}"),
        }
    }

    /// `frame` decodes to `expected`, and `expected` encodes back to `frame` byte for byte.
    fn check(frame: &str, expected: &WrapperMessage) {
        assert_eq!(&msg(frame), expected, "decoding {frame}");
        assert_eq!(encode(expected), frame, "encoding {expected:?}");
    }

    fn ignored(text: &str, why: Ignore) {
        assert_eq!(decode(text), Decoded::Ignored(why), "{text}");
    }

    fn event(channel: Option<&str>, name: &str, args: Vec<Value>) -> WrapperMessage {
        Event {
            channel: channel.map(str::to_owned),
            name: name.to_owned(),
            args,
        }
    }

    fn request(id: u64, channel: Option<&str>, name: &str, args: Vec<Value>) -> WrapperMessage {
        Request {
            id,
            channel: channel.map(str::to_owned),
            name: name.to_owned(),
            args,
        }
    }

    #[test]
    fn recorded_frames_decode_and_encode_byte_for_byte() {
        // ws-wrapper-wire.md, both versions.
        check(
            r#"{"a":["hello","x",2]}"#,
            &event(None, "hello", vec![json!("x"), json!(2)]),
        );
        check(
            r#"{"a":["add",2,3],"i":1}"#,
            &request(1, None, "add", vec![json!(2), json!(3)]),
        );
        check(
            r#"{"i":1,"d":5}"#,
            &Resolve {
                id: 1,
                data: json!(5),
            },
        );
        check(r#"{"a":["fail"],"i":2}"#, &request(2, None, "fail", vec![]));
        check(
            r#"{"i":2,"e":{"message":"nope"},"_":1}"#,
            &Reject {
                id: 2,
                error: error_value("nope"),
                error_object: true,
            },
        );
        check(
            r#"{"a":["who"],"c":"room1","i":3}"#,
            &request(3, Some("room1"), "who", vec![]),
        );
        check(
            r#"{"i":3,"d":"me"}"#,
            &Resolve {
                id: 3,
                data: json!("me"),
            },
        );
        // 4.3.1 only.
        check(r#"{"a":["slow"],"i":4}"#, &request(4, None, "slow", vec![]));
        check(
            r#"{"i":4,"x":{"message":"This operation was aborted"},"_":1}"#,
            &Cancel {
                id: 4,
                reason: error_value("This operation was aborted"),
                error_object: true,
            },
        );
        check(
            r#"{"a":["stream"],"i":5}"#,
            &request(5, None, "stream", vec![]),
        );
        check(r#"{"i":5,"h":1}"#, &ChannelCreated { id: 5 });
        check(
            r#"{"i":4,"d":"aborted"}"#,
            &Resolve {
                id: 4,
                data: json!("aborted"),
            },
        );
        check(
            r#"{"a":["start"],"h":5}"#,
            &ChannelEvent {
                handle: 5,
                name: "start".into(),
                args: vec![],
            },
        );
        check(
            r#"{"a":["next",{"done":true}],"h":5}"#,
            &ChannelEvent {
                handle: 5,
                name: "next".into(),
                args: vec![json!({"done": true})],
            },
        );
        check(
            r#"{"h":5,"x":{"message":"Request aborted"},"_":1}"#,
            &Abort {
                handle: 5,
                reason: error_value("Request aborted"),
                error_object: true,
            },
        );
    }

    #[test]
    fn nested_objects_of_several_keys_compare_structurally() {
        // Recorded `{"a":["next",{"value":1,"done":false}],"h":5}`: the envelope's key
        // order is ours and exact; the order inside the value is serde_json's.
        let frame = r#"{"a":["next",{"value":1,"done":false}],"h":5}"#;
        let expected = ChannelEvent {
            handle: 5,
            name: "next".into(),
            args: vec![json!({"value": 1, "done": false})],
        };
        assert_eq!(msg(frame), expected);
        let out = encode(&expected);
        assert!(
            out.starts_with(r#"{"a":["next",{"#) && out.ends_with(r#"}],"h":5}"#),
            "{out}"
        );
        let parsed: Value = serde_json::from_str(&out).unwrap();
        let recorded: Value = serde_json::from_str(frame).unwrap();
        assert_eq!(parsed, recorded);
        assert_eq!(msg(&out), expected);
    }

    #[test]
    fn key_order_on_input_carries_no_meaning() {
        assert_eq!(
            msg(r#"{"i":1,"a":["add",2,3]}"#),
            request(1, None, "add", vec![json!(2), json!(3)])
        );
        assert_eq!(
            msg(r#"{"i":3,"c":"room1","a":["who"]}"#),
            request(3, Some("room1"), "who", vec![])
        );
        assert_eq!(
            msg(r#"{"_":1,"e":{"message":"nope"},"i":2}"#),
            Reject {
                id: 2,
                error: error_value("nope"),
                error_object: true
            }
        );
        assert_eq!(msg(r#"{"h":1,"i":5}"#), ChannelCreated { id: 5 });
        assert_eq!(
            msg(r#"{"x":"bye","h":5}"#),
            Abort {
                handle: 5,
                reason: json!("bye"),
                error_object: false
            }
        );
        assert_eq!(
            msg(r#"{"d":5,"i":1}"#),
            Resolve {
                id: 1,
                data: json!(5)
            }
        );
    }

    #[test]
    fn what_is_not_json_is_ignored() {
        for text in ["", "hello", "{", r#"{"a":["x"]"#, "[1,", "{'a':1}", "\u{0}"] {
            ignored(text, Ignore::NotJson);
        }
    }

    #[test]
    fn ws_wrapper_false_passes_through() {
        ignored(r#"{"ws-wrapper":false,"a":["x"]}"#, Ignore::PassThrough);
        ignored(
            r#"{"a":["add",1],"i":1,"ws-wrapper":false}"#,
            Ignore::PassThrough,
        );
        ignored(r#"{"ws-wrapper":false}"#, Ignore::PassThrough);
        // Only `false` itself (JavaScript compares with `===`).
        for other in ["true", "0", "null", r#""false""#] {
            let text = format!(r#"{{"ws-wrapper":{other},"a":["x"]}}"#);
            assert_eq!(msg(&text), event(None, "x", vec![]), "{text}");
        }
    }

    #[test]
    fn messages_without_a_shape_are_ignored() {
        for text in [
            "{}",
            "[]",
            r#"["add",1]"#,
            "5",
            "null",
            r#""text""#,
            r#"{"d":5}"#,
            r#"{"e":"nope"}"#,
            r#"{"x":"bye"}"#,
            r#"{"h":5}"#,
            r#"{"c":"room1"}"#,
            r#"{"i":null,"d":5}"#,
            r#"{"type":"ping"}"#,
        ] {
            ignored(text, Ignore::NoShape);
        }
    }

    #[test]
    fn a_must_be_a_non_empty_array_starting_with_a_name() {
        for text in [
            r#"{"a":"add"}"#,
            r#"{"a":{"0":"add"}}"#,
            r#"{"a":5}"#,
            r#"{"a":[]}"#,
            r#"{"a":[1,2]}"#,
            r#"{"a":[null]}"#,
            r#"{"a":[["add"]]}"#,
            r#"{"a":[],"i":1}"#,
            r#"{"a":[7],"i":1}"#,
            r#"{"a":[],"h":5}"#,
            r#"{"a":"x","i":1,"d":5}"#,
        ] {
            ignored(text, Ignore::NoShape);
        }
        // `"a": null` is absent, so this is a resolve.
        assert_eq!(
            msg(r#"{"a":null,"i":1,"d":5}"#),
            Resolve {
                id: 1,
                data: json!(5)
            }
        );
    }

    #[test]
    fn request_ids_are_positive_integers() {
        for bad in ["0", "-1", "1.5", "1.0", r#""1""#, "true", "[1]", "{}", "-0"] {
            for text in [
                format!(r#"{{"a":["add",2,3],"i":{bad}}}"#),
                format!(r#"{{"i":{bad},"d":5}}"#),
                format!(r#"{{"i":{bad},"e":"nope"}}"#),
                format!(r#"{{"i":{bad},"x":"bye"}}"#),
                format!(r#"{{"i":{bad},"h":1}}"#),
                format!(r#"{{"a":["next"],"h":5,"i":{bad}}}"#),
            ] {
                ignored(&text, Ignore::NoShape);
            }
        }
        // `"i": null` is no id: an event.
        assert_eq!(msg(r#"{"a":["x"],"i":null}"#), event(None, "x", vec![]));
        let max = u64::MAX;
        check(
            &format!(r#"{{"i":{max},"d":null}}"#),
            &Resolve {
                id: max,
                data: Value::Null,
            },
        );
    }

    #[test]
    fn numeric_string_handles_are_accepted() {
        let start = ChannelEvent {
            handle: 5,
            name: "start".into(),
            args: vec![],
        };
        assert_eq!(msg(r#"{"h":"5","a":["start"]}"#), start);
        assert_eq!(encode(&start), r#"{"a":["start"],"h":5}"#);
        assert_eq!(
            msg(r#"{"a":["next",1],"h":"5","i":6}"#),
            ChannelRequest {
                id: 6,
                handle: 5,
                name: "next".into(),
                args: vec![json!(1)]
            }
        );
        assert_eq!(
            msg(r#"{"h":"5","x":{"message":"done"},"_":1}"#),
            Abort {
                handle: 5,
                reason: error_value("done"),
                error_object: true
            }
        );
        assert_eq!(msg(r#"{"i":5,"h":"1"}"#), ChannelCreated { id: 5 });
        for bad in [
            r#""05""#,
            r#""0""#,
            "0",
            r#""abc""#,
            "-5",
            r#""-5""#,
            "1.5",
            r#""""#,
            r#"" 5""#,
            r#""5 ""#,
            r#""+5""#,
            "true",
            "[5]",
            r#""99999999999999999999""#,
        ] {
            ignored(&format!(r#"{{"a":["start"],"h":{bad}}}"#), Ignore::NoShape);
            ignored(&format!(r#"{{"h":{bad},"x":"bye"}}"#), Ignore::NoShape);
        }
    }

    #[test]
    fn reserved_names_are_ignored_on_the_main_channel_only() {
        for name in RESERVED {
            assert!(is_reserved(name));
            ignored(&format!(r#"{{"a":["{name}"]}}"#), Ignore::Reserved);
            ignored(&format!(r#"{{"a":["{name}",1],"i":1}}"#), Ignore::Reserved);
            ignored(&format!(r#"{{"a":["{name}"],"c":""}}"#), Ignore::Reserved);
            assert_eq!(
                msg(&format!(r#"{{"a":["{name}"],"c":"room1"}}"#)),
                event(Some("room1"), name, vec![])
            );
            assert_eq!(
                msg(&format!(r#"{{"a":["{name}"],"h":5}}"#)),
                ChannelEvent {
                    handle: 5,
                    name: name.into(),
                    args: vec![]
                }
            );
        }
        assert_eq!(
            RESERVED,
            ["open", "connect", "message", "error", "close", "disconnect"]
        );
        for name in ["Open", "opened", "", "echo", "errors"] {
            assert!(!is_reserved(name), "{name}");
        }
    }

    #[test]
    fn shared_keys_pick_the_shape_as_ws_wrapper_does() {
        // `i` alone: a JavaScript handler that returned `undefined`.
        assert_eq!(
            msg(r#"{"i":1}"#),
            Resolve {
                id: 1,
                data: Value::Null
            }
        );
        assert_eq!(
            msg(r#"{"i":1,"d":null}"#),
            Resolve {
                id: 1,
                data: Value::Null
            }
        );
        assert_eq!(
            msg(r#"{"i":1,"h":null,"d":2}"#),
            Resolve {
                id: 1,
                data: json!(2)
            }
        );
        // `e` wins over `d` and `h`; `x` wins over `e`; `a` wins over everything.
        let reject = Reject {
            id: 1,
            error: json!("no"),
            error_object: false,
        };
        assert_eq!(msg(r#"{"i":1,"e":"no","d":5}"#), reject);
        assert_eq!(msg(r#"{"i":1,"h":1,"e":"no"}"#), reject);
        assert_eq!(
            msg(r#"{"i":1,"e":"no","x":"bye"}"#),
            Cancel {
                id: 1,
                reason: json!("bye"),
                error_object: false
            }
        );
        assert_eq!(
            msg(r#"{"a":["x"],"i":1,"d":5,"x":"bye"}"#),
            request(1, None, "x", vec![])
        );
        // `{i, h}` is a channel creation whatever `h` holds (the handle is `i`), and `d` is ignored.
        assert_eq!(msg(r#"{"i":7,"h":1,"d":5}"#), ChannelCreated { id: 7 });
        assert_eq!(msg(r#"{"i":7,"h":true}"#), ChannelCreated { id: 7 });
        // `x` with `h` aborts the channel, `i` or not.
        assert_eq!(
            msg(r#"{"i":1,"h":5,"x":"bye"}"#),
            Abort {
                handle: 5,
                reason: json!("bye"),
                error_object: false
            }
        );
        // `h` takes precedence over `c`, as in JavaScript.
        assert_eq!(
            msg(r#"{"a":["x"],"c":"room1","h":5}"#),
            ChannelEvent {
                handle: 5,
                name: "x".into(),
                args: vec![]
            }
        );
        // `c` must be a string; `null` is the main channel.
        ignored(r#"{"a":["x"],"c":5}"#, Ignore::NoShape);
        ignored(r#"{"a":["x"],"c":["room1"]}"#, Ignore::NoShape);
        assert_eq!(msg(r#"{"a":["x"],"c":null}"#), event(None, "x", vec![]));
    }

    #[test]
    fn error_objects_follow_javascript_truthiness() {
        for (flag, set) in [
            ("1", true),
            ("true", true),
            (r#""1""#, true),
            ("{}", true),
            ("0", false),
            ("false", false),
            (r#""""#, false),
            ("null", false),
        ] {
            let text = format!(r#"{{"i":2,"e":{{"message":"nope"}},"_":{flag}}}"#);
            assert_eq!(
                msg(&text),
                Reject {
                    id: 2,
                    error: error_value("nope"),
                    error_object: set
                },
                "{text}"
            );
        }
        check(
            r#"{"i":2,"e":{"message":"nope"}}"#,
            &Reject {
                id: 2,
                error: error_value("nope"),
                error_object: false,
            },
        );
        check(
            r#"{"i":2,"e":"oops"}"#,
            &Reject {
                id: 2,
                error: json!("oops"),
                error_object: false,
            },
        );
        check(
            r#"{"i":4,"x":"user cancelled"}"#,
            &Cancel {
                id: 4,
                reason: json!("user cancelled"),
                error_object: false,
            },
        );
    }

    #[test]
    fn null_reasons_are_sent_as_default_errors() {
        // Decoded as sent...
        assert_eq!(
            msg(r#"{"i":1,"e":null}"#),
            Reject {
                id: 1,
                error: Value::Null,
                error_object: false
            }
        );
        assert_eq!(
            msg(r#"{"i":1,"x":null}"#),
            Cancel {
                id: 1,
                reason: Value::Null,
                error_object: false
            }
        );
        assert_eq!(
            msg(r#"{"h":5,"x":null,"_":1}"#),
            Abort {
                handle: 5,
                reason: Value::Null,
                error_object: true
            }
        );
        // ...but never written as null.
        for error_object in [false, true] {
            assert_eq!(
                encode(&Reject {
                    id: 1,
                    error: Value::Null,
                    error_object
                }),
                r#"{"i":1,"e":{"message":"Error"},"_":1}"#
            );
            assert_eq!(
                encode(&Cancel {
                    id: 1,
                    reason: Value::Null,
                    error_object
                }),
                r#"{"i":1,"x":{"message":"Request aborted"},"_":1}"#
            );
            assert_eq!(
                encode(&Abort {
                    handle: 5,
                    reason: Value::Null,
                    error_object
                }),
                r#"{"h":5,"x":{"message":"Request aborted"},"_":1}"#
            );
        }
        assert_eq!(
            error_value(DEFAULT_REJECT_MESSAGE),
            json!({"message": "Error"})
        );
        assert_eq!(
            error_value(DEFAULT_ABORT_MESSAGE),
            json!({"message": "Request aborted"})
        );
    }

    #[test]
    fn every_variant_round_trips() {
        let odd = "quote \" backslash \\ newline \n tab \t é 😀 \u{1}";
        let args = vec![
            json!(null),
            json!(true),
            json!(-7),
            json!(1.5),
            json!(u64::MAX),
            json!("x"),
            json!([1, [2, {"k": "v"}]]),
            json!({"message": odd}),
        ];
        let all = [
            event(None, "hello", vec![]),
            event(Some(odd), odd, args.clone()),
            request(1, None, "add", args.clone()),
            request(9, Some("room1"), "who", vec![]),
            Resolve {
                id: 1,
                data: Value::Null,
            },
            Resolve {
                id: 2,
                data: json!({"a": [1, 2], "b": {"c": null}}),
            },
            Reject {
                id: 3,
                error: error_value(odd),
                error_object: true,
            },
            Reject {
                id: 3,
                error: json!({"code": 42}),
                error_object: false,
            },
            Cancel {
                id: 4,
                reason: error_value("Request timed out"),
                error_object: true,
            },
            Cancel {
                id: 4,
                reason: json!(0),
                error_object: false,
            },
            ChannelCreated { id: 5 },
            ChannelEvent {
                handle: 5,
                name: "next".into(),
                args: args.clone(),
            },
            ChannelRequest {
                id: 6,
                handle: 5,
                name: odd.into(),
                args,
            },
            Abort {
                handle: 5,
                reason: error_value("done"),
                error_object: true,
            },
            Abort {
                handle: u64::MAX,
                reason: json!("bye"),
                error_object: false,
            },
        ];
        for m in &all {
            let text = encode(m);
            assert_eq!(&msg(&text), m, "{text}");
        }
        check(
            r#"{"a":["next",1],"h":5,"i":6}"#,
            &ChannelRequest {
                id: 6,
                handle: 5,
                name: "next".into(),
                args: vec![json!(1)],
            },
        );
        check(r#"{"a":["x"],"c":""}"#, &event(Some(""), "x", vec![]));
    }

    #[test]
    fn error_value_is_a_message_object() {
        assert_eq!(error_value("nope"), json!({"message": "nope"}));
        assert_eq!(
            serde_json::to_string(&error_value("a \"b\"")).unwrap(),
            r#"{"message":"a \"b\""}"#
        );
    }

    #[test]
    fn mutated_frames_never_panic_and_what_decodes_encodes_again() {
        let frames = [
            r#"{"a":["add",2,3],"i":1}"#,
            r#"{"i":2,"e":{"message":"nope"},"_":1}"#,
            r#"{"a":["who"],"c":"room1","i":3}"#,
            r#"{"i":4,"x":{"message":"This operation was aborted"},"_":1}"#,
            r#"{"i":5,"h":1}"#,
            r#"{"a":["next",{"value":1,"done":false}],"h":5}"#,
            r#"{"h":5,"x":{"message":"Request aborted"},"_":1}"#,
        ];
        let alphabet = br#"{}[]":,0123456789-.aceihdx_ ntrufl\"#;
        let mut state = 0x9E37_79B9_7F4A_7C15_u64;
        let mut next = || {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            state
        };
        let mut decoded = 0;
        for round in 0..20_000 {
            let mut bytes = frames[round % frames.len()].as_bytes().to_vec();
            for _ in 0..=(next() % 4) {
                let at = (next() as usize) % bytes.len().max(1);
                let last = bytes.len() - 1;
                let c = alphabet[(next() as usize) % alphabet.len()];
                match next() % 3 {
                    0 => bytes[at.min(last)] = c,
                    1 => bytes.insert(at, c),
                    _ => {
                        bytes.remove(at.min(last));
                    }
                }
                if bytes.is_empty() {
                    bytes.push(c);
                }
            }
            let text = String::from_utf8_lossy(&bytes);
            if let Decoded::Message(m) = decode(&text) {
                decoded += 1;
                // Whatever is accepted is written back in a form that reads the same.
                assert_eq!(decode(&encode(&m)), Decoded::Message(m.clone()), "{text}");
            }
        }
        assert!(
            decoded > 1_000,
            "the mutations kept some frames valid: {decoded}"
        );
    }

    /// Property tests: arbitrary text never panics, and what decodes encodes
    /// back to the same message (a `null` reason reads back as the default Error).
    mod props {
        use super::*;
        use proptest::prelude::*;

        /// `m` as it reads back after [`encode`]: a `null` rejection or
        /// cancellation reason is written as the default Error.
        fn normalized(m: &WrapperMessage) -> WrapperMessage {
            let default = |v: &Value, error_object: bool, message: &str| {
                if v.is_null() {
                    (error_value(message), true)
                } else {
                    (v.clone(), error_object)
                }
            };
            match m.clone() {
                Reject {
                    id,
                    error,
                    error_object,
                } => {
                    let (error, error_object) =
                        default(&error, error_object, DEFAULT_REJECT_MESSAGE);
                    Reject {
                        id,
                        error,
                        error_object,
                    }
                }
                Cancel {
                    id,
                    reason,
                    error_object,
                } => {
                    let (reason, error_object) =
                        default(&reason, error_object, DEFAULT_ABORT_MESSAGE);
                    Cancel {
                        id,
                        reason,
                        error_object,
                    }
                }
                Abort {
                    handle,
                    reason,
                    error_object,
                } => {
                    let (reason, error_object) =
                        default(&reason, error_object, DEFAULT_ABORT_MESSAGE);
                    Abort {
                        handle,
                        reason,
                        error_object,
                    }
                }
                other => other,
            }
        }

        /// Any JSON value without floats (serde_json does not promise to read
        /// back every float bit for bit), a few levels deep.
        fn json_value() -> BoxedStrategy<Value> {
            let leaf = prop_oneof![
                Just(Value::Null),
                any::<bool>().prop_map(Value::from),
                any::<i64>().prop_map(Value::from),
                any::<u64>().prop_map(Value::from),
                "(?s).{0,10}".prop_map(Value::from),
            ];
            leaf.prop_recursive(3, 16, 4, |inner| {
                prop_oneof![
                    prop::collection::vec(inner.clone(), 0..4).prop_map(Value::from),
                    prop::collection::btree_map("(?s).{0,6}", inner, 0..4)
                        .prop_map(|m| Value::Object(m.into_iter().collect())),
                ]
            })
            .boxed()
        }

        fn name() -> impl Strategy<Value = String> {
            prop_oneof![
                prop::sample::select(RESERVED.to_vec()).prop_map(str::to_owned),
                "[a-z.]{1,8}",
                "(?s).{0,8}",
            ]
        }

        fn message() -> impl Strategy<Value = WrapperMessage> {
            let id = 1..=u64::MAX;
            let channel = prop::option::of(prop_oneof![Just(String::new()), "(?s).{0,8}"]);
            let args = prop::collection::vec(json_value(), 0..4);
            prop_oneof![
                (channel.clone(), name(), args.clone()).prop_map(|(channel, name, args)| {
                    Event {
                        channel,
                        name,
                        args,
                    }
                }),
                (id.clone(), channel, name(), args.clone()).prop_map(
                    |(id, channel, name, args)| Request {
                        id,
                        channel,
                        name,
                        args,
                    }
                ),
                (id.clone(), json_value()).prop_map(|(id, data)| Resolve { id, data }),
                (id.clone(), json_value(), any::<bool>()).prop_map(|(id, error, error_object)| {
                    Reject {
                        id,
                        error,
                        error_object,
                    }
                }),
                (id.clone(), json_value(), any::<bool>()).prop_map(|(id, reason, error_object)| {
                    Cancel {
                        id,
                        reason,
                        error_object,
                    }
                }),
                id.clone().prop_map(|id| ChannelCreated { id }),
                (id.clone(), name(), args.clone()).prop_map(|(handle, name, args)| ChannelEvent {
                    handle,
                    name,
                    args
                }),
                (id.clone(), id.clone(), name(), args).prop_map(|(id, handle, name, args)| {
                    ChannelRequest {
                        id,
                        handle,
                        name,
                        args,
                    }
                }),
                (id, json_value(), any::<bool>()).prop_map(|(handle, reason, error_object)| {
                    Abort {
                        handle,
                        reason,
                        error_object,
                    }
                }),
            ]
        }

        /// JSON objects made of the protocol's keys with any values, written
        /// in any order: most are no message, some are.
        fn frame() -> impl Strategy<Value = String> {
            let key =
                prop::sample::select(vec!["a", "c", "h", "i", "d", "e", "x", "_", "ws-wrapper"]);
            let small = prop_oneof![
                (0u64..4).prop_map(Value::from),
                Just(Value::from("5")),
                Just(Value::from("05")),
                Just(serde_json::json!(["x", 1])),
                Just(serde_json::json!(["open"])),
                Just(Value::from(false)),
                json_value(),
            ];
            prop::collection::vec((key, small), 0..5).prop_map(|pairs| {
                let mut m = serde_json::Map::new();
                for (k, v) in pairs {
                    m.insert(k.to_owned(), v);
                }
                Value::Object(m).to_string()
            })
        }

        #[test]
        fn every_message_encodes_and_decodes_back() {
            proptest!(ProptestConfig::with_cases(1024), |(m in message())| {
                let text = encode(&m);
                let main_channel = matches!(
                    &m,
                    Event { channel, .. } | Request { channel, .. }
                        if channel.as_deref().is_none_or(str::is_empty)
                );
                let reserved = match &m {
                    Event { name, .. } | Request { name, .. } => is_reserved(name),
                    _ => false,
                };
                if main_channel && reserved {
                    prop_assert_eq!(decode(&text), Decoded::Ignored(Ignore::Reserved), "{}", text);
                } else {
                    prop_assert_eq!(decode(&text), Decoded::Message(normalized(&m)), "{}", text);
                }
            });
        }

        #[test]
        fn arbitrary_text_and_frames_never_panic_and_what_decodes_encodes_back() {
            let text = prop_oneof!["(?s).{0,60}", frame()];
            let decoded = std::cell::Cell::new(0);
            proptest!(ProptestConfig::with_cases(1024), |(text in text)| {
                match decode(&text) {
                    Decoded::Ignored(Ignore::NotJson) => {
                        prop_assert!(serde_json::from_str::<Value>(&text).is_err(), "{}", text);
                    }
                    Decoded::Ignored(_) => {
                        prop_assert!(serde_json::from_str::<Value>(&text).is_ok(), "{}", text);
                    }
                    Decoded::Message(m) => {
                        decoded.set(decoded.get() + 1);
                        let again = encode(&m);
                        prop_assert_eq!(
                            decode(&again),
                            Decoded::Message(normalized(&m)),
                            "{} -> {}", text, again
                        );
                    }
                }
            });
            assert!(decoded.get() > 0, "some frames are messages");
        }
    }
}

/// The examples of this crate's registry entries, compiled by `cargo test --doc`.
#[cfg(doctest)]
#[doc = include_str!("../ws_wrapper_codec.md")]
#[doc = include_str!("../../../types/infra/Decoded.md")]
#[doc = include_str!("../../../types/infra/Ignore.md")]
#[doc = include_str!("../../../types/infra/WrapperMessage.md")]
pub struct RegistryExamples;
