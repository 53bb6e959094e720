//! The event envelope a hub sends to clients, `{type, data, timestamp}`, its built-in types, and the target that picks recipients.
//!
//! An [`Event`] is what clients of the nexus hub already parse:
//! `{"type":"said","data":{...},"timestamp":1764612000}` (`timestamp` in
//! Unix seconds). The built-in type strings in [`types`] are exactly nexus's,
//! because clients match on them. A [`Target`] says who gets an event: every
//! connection, or the union of some users, client ids and rooms; a
//! connection in several of those sets gets the event once (`ws_emit`).
//!
//! # Example
//!
//! ```
//! use ws_event::{types, Event, Target};
//!
//! let ev = Event::new(types::SUBSCRIBED, serde_json::json!({"room": "public-lobby"})).at(1_764_612_000);
//! assert_eq!(ev.to_json(), r#"{"type":"subscribed","data":{"room":"public-lobby"},"timestamp":1764612000}"#);
//! let to = Target::rooms(["public-lobby"]).and_users(["ana"]);
//! assert!(!to.broadcast && to.rooms == ["public-lobby"] && to.users == ["ana"]);
//! ```

use std::time::{SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};

/// The built-in event types, as nexus names them; clients depend on the strings.
pub mod types {
    /// Sent on connect: `{clientId, userId}`.
    pub const CONNECTED: &str = "connection.established";
    /// A connection closed. Defined for clients that match on it; the hub
    /// itself says goodbye with the WebSocket close frame (code and reason).
    pub const DISCONNECTED: &str = "connection.closed";
    /// A request could not be served: `{message}`; the connection stays open.
    pub const ERROR: &str = "error";
    /// The answer to `{"type":"ping"}`: `{timestamp}`.
    pub const PONG: &str = "pong";
    /// The answer to an allowed `subscribe`: `{room}`.
    pub const SUBSCRIBED: &str = "subscribed";
    /// The answer to `unsubscribe`: `{room}`.
    pub const UNSUBSCRIBED: &str = "unsubscribed";
    /// The answer to `authenticate`: `{userId, status}`, the identity the server established.
    pub const AUTHENTICATED: &str = "authenticated";
    /// A connection joined a room, on any node (`ws_cluster`): `{room, user, client}`,
    /// `client` as a string (ids do not fit a JavaScript number), `user` null when anonymous.
    pub const PRESENCE_JOIN: &str = "presence.join";
    /// A connection left a room, its connection ended, or its node stopped
    /// refreshing its presence (`ws_cluster`): `{room, user, client}`.
    pub const PRESENCE_LEAVE: &str = "presence.leave";
}

/// One event: a type the client dispatches on, any JSON data, and when.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Event {
    /// What happened (`type` in JSON).
    #[serde(rename = "type")]
    pub kind: String,
    /// Its data; `null` when there is none.
    #[serde(default)]
    pub data: serde_json::Value,
    /// When, in Unix seconds.
    #[serde(default)]
    pub timestamp: i64,
}

impl Event {
    /// An event of `kind` with `data`, stamped now.
    pub fn new(kind: impl Into<String>, data: serde_json::Value) -> Self {
        Event {
            kind: kind.into(),
            data,
            timestamp: now(),
        }
    }

    /// Sets the timestamp (Unix seconds).
    #[must_use]
    pub fn at(mut self, timestamp: i64) -> Self {
        self.timestamp = timestamp;
        self
    }

    /// The JSON text clients receive.
    pub fn to_json(&self) -> String {
        serde_json::to_string(self).expect("an Event always serializes")
    }
}

/// Unix seconds now.
pub fn now() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX))
}

/// Who receives an event: everyone, or the union of these sets.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Target {
    /// Every connection of the hub (the sets below are then ignored).
    pub broadcast: bool,
    /// Every connection of these users.
    pub users: Vec<String>,
    /// These connections, by client id (`ws_hub::ClientId`).
    pub clients: Vec<u64>,
    /// Every connection in these rooms.
    pub rooms: Vec<String>,
}

impl Target {
    /// Every connection.
    pub fn broadcast() -> Self {
        Target {
            broadcast: true,
            ..Target::default()
        }
    }

    /// The connections in `rooms`.
    pub fn rooms<S: Into<String>>(rooms: impl IntoIterator<Item = S>) -> Self {
        Target::default().and_rooms(rooms)
    }

    /// The connections of `users`.
    pub fn users<S: Into<String>>(users: impl IntoIterator<Item = S>) -> Self {
        Target::default().and_users(users)
    }

    /// The connections with these ids.
    pub fn clients(ids: impl IntoIterator<Item = u64>) -> Self {
        Target::default().and_clients(ids)
    }

    /// Adds rooms to the union.
    #[must_use]
    pub fn and_rooms<S: Into<String>>(mut self, rooms: impl IntoIterator<Item = S>) -> Self {
        self.rooms.extend(rooms.into_iter().map(Into::into));
        self
    }

    /// Adds users to the union.
    #[must_use]
    pub fn and_users<S: Into<String>>(mut self, users: impl IntoIterator<Item = S>) -> Self {
        self.users.extend(users.into_iter().map(Into::into));
        self
    }

    /// Adds client ids to the union.
    #[must_use]
    pub fn and_clients(mut self, ids: impl IntoIterator<Item = u64>) -> Self {
        self.clients.extend(ids);
        self
    }

    /// Whether it names nobody.
    pub fn is_empty(&self) -> bool {
        !self.broadcast && self.users.is_empty() && self.clients.is_empty() && self.rooms.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn the_json_shape_is_nexus_s() {
        let ev = Event::new("said", json!({"from": "ana", "data": 1})).at(7);
        assert_eq!(
            ev.to_json(),
            r#"{"type":"said","data":{"data":1,"from":"ana"},"timestamp":7}"#
        );
        let back: Event = serde_json::from_str(&ev.to_json()).unwrap();
        assert_eq!(back, ev);
        let bare: Event = serde_json::from_str(r#"{"type":"x"}"#).unwrap();
        assert_eq!((bare.data, bare.timestamp), (serde_json::Value::Null, 0));
    }

    #[test]
    fn built_in_types_are_the_exact_strings() {
        assert_eq!(
            [
                types::CONNECTED,
                types::DISCONNECTED,
                types::ERROR,
                types::PONG,
                types::SUBSCRIBED,
                types::UNSUBSCRIBED,
                types::AUTHENTICATED,
                types::PRESENCE_JOIN,
                types::PRESENCE_LEAVE
            ],
            [
                "connection.established",
                "connection.closed",
                "error",
                "pong",
                "subscribed",
                "unsubscribed",
                "authenticated",
                "presence.join",
                "presence.leave"
            ]
        );
    }

    #[test]
    fn targets_compose_and_new_events_are_stamped() {
        let t = Target::users(["u"]).and_clients([3]).and_rooms(["r"]);
        assert_eq!((t.users.len(), t.clients.len(), t.rooms.len()), (1, 1, 1));
        assert!(Target::default().is_empty() && !Target::broadcast().is_empty());
        assert!(Event::new("x", json!(null)).timestamp > 1_700_000_000);
    }
}

/// The examples of this crate's registry entries, compiled by `cargo test --doc`.
#[cfg(doctest)]
#[doc = include_str!("../../../types/infra/Event.md")]
#[doc = include_str!("../../../types/infra/Target.md")]
pub struct RegistryExamples;
