//! The typed WebSocket message of the original registry, in its JSON shape: type, base64 payload, sender id and timestamp.
//!
//! `{"type":"chat","payload":"aG9sYQ==","sender_id":"user1","ts":1715640000000}`
//! is what the Go registry's `WSMessage` marshals to (`encoding/json` writes a
//! `[]byte` as standard base64 with padding, a nil one as `null`), so
//! clients written for the Go version keep working. Decoding is as lenient
//! as Go's: missing fields take their zero value, `payload: null` is empty,
//! unknown fields are ignored.
//!
//! # Example
//!
//! ```
//! use ws_message::WsMessage;
//!
//! let msg = WsMessage::new("chat", b"hola".to_vec()).sender("user1").ts(1_715_640_000_000);
//! let json = msg.to_json();
//! assert_eq!(json, r#"{"type":"chat","payload":"aG9sYQ==","sender_id":"user1","ts":1715640000000}"#);
//! assert_eq!(WsMessage::from_json(&json)?, msg);
//! # Ok::<(), serde_json::Error>(())
//! ```

use serde::{Deserialize, Serialize};

/// A message with a type the receiver dispatches on and an opaque payload.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct WsMessage {
    /// What the message is (`type` in JSON): the receiver dispatches on it.
    #[serde(rename = "type")]
    pub kind: String,
    /// The bytes carried, base64 in JSON (`null` when empty on the way in).
    #[serde(with = "base64_bytes")]
    pub payload: Vec<u8>,
    /// Who sent it; set by the server, never trusted from a client.
    pub sender_id: String,
    /// When it was sent, in milliseconds since the Unix epoch.
    pub ts: i64,
}

impl WsMessage {
    /// A message of `kind` carrying `payload`.
    pub fn new(kind: impl Into<String>, payload: impl Into<Vec<u8>>) -> Self {
        WsMessage {
            kind: kind.into(),
            payload: payload.into(),
            ..WsMessage::default()
        }
    }

    /// Sets `sender_id`.
    #[must_use]
    pub fn sender(mut self, id: impl Into<String>) -> Self {
        self.sender_id = id.into();
        self
    }

    /// Sets `ts`.
    #[must_use]
    pub fn ts(mut self, ts: i64) -> Self {
        self.ts = ts;
        self
    }

    /// The JSON text, fields in the Go order.
    pub fn to_json(&self) -> String {
        serde_json::to_string(self).expect("a WsMessage always serializes")
    }

    /// Parses the JSON text.
    pub fn from_json(text: &str) -> Result<Self, serde_json::Error> {
        serde_json::from_str(text)
    }
}

mod base64_bytes {
    use base64::Engine;
    use base64::engine::general_purpose::STANDARD;
    use serde::{Deserialize, Deserializer, Serializer};

    pub(super) fn serialize<S: Serializer>(bytes: &[u8], s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&STANDARD.encode(bytes))
    }

    pub(super) fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<u8>, D::Error> {
        match Option::<String>::deserialize(d)? {
            None => Ok(Vec::new()),
            Some(text) => STANDARD
                .decode(text.as_bytes())
                .map_err(|e| serde::de::Error::custom(format!("payload is not base64: {e}"))),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn matches_what_go_marshals() {
        // encoding/json of WSMessage{Type: "step_complete", Payload: []byte(`{"ms":3}`), SenderID: "pipeline_runner", Ts: 1}
        let go = r#"{"type":"step_complete","payload":"eyJtcyI6M30=","sender_id":"pipeline_runner","ts":1}"#;
        let msg = WsMessage::from_json(go).unwrap();
        assert_eq!(msg.kind, "step_complete");
        assert_eq!(msg.payload, br#"{"ms":3}"#);
        assert_eq!(msg.to_json(), go, "byte for byte, in Go's field order");
    }

    #[test]
    fn decodes_as_leniently_as_go() {
        let msg = WsMessage::from_json(r#"{"type":"x","payload":null,"extra":true}"#).unwrap();
        assert_eq!(msg, WsMessage::new("x", Vec::new()));
        assert_eq!(WsMessage::from_json("{}").unwrap(), WsMessage::default());
    }

    #[test]
    fn a_payload_that_is_not_base64_is_an_error_naming_it() {
        let err = WsMessage::from_json(r#"{"payload":"not base64!"}"#).unwrap_err();
        assert!(err.to_string().contains("payload is not base64"), "{err}");
    }

    #[test]
    fn empty_payload_is_an_empty_string() {
        assert_eq!(
            WsMessage::new("ping", Vec::new()).to_json(),
            r#"{"type":"ping","payload":"","sender_id":"","ts":0}"#
        );
    }
}

/// The examples of this crate's registry entries, compiled by `cargo test --doc`.
#[cfg(doctest)]
#[doc = include_str!("../../../types/infra/WsMessage.md")]
pub struct RegistryExamples;
