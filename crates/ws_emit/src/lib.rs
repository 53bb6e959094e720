//! Sends one event to a target of a WebSocket hub, every connection or a union of users, clients and rooms, encoded once and each connection once.
//!
//! The event is turned into JSON and framed once ([`ws_hub::Frame`]); every
//! recipient's outbox gets that frame (copied when small, shared when large,
//! as `ws_broadcast` does). Recipients come from the hub's indexes (a room's
//! members, a user's connections, a client by id), so the cost is the number
//! of recipients, not the number of connections; a connection in several of
//! the target's sets gets the event once. Nothing is dropped silently: each
//! recipient's outcome is counted in the returned [`Broadcast`], and a full
//! outbox is handled by the hub's slow-client policy (and counted in its
//! stats).
//!
//! # Example
//!
//! ```
//! use ws_emit::ws_emit;
//! use ws_event::{Event, Target};
//! use ws_hub::{HubConfig, Identity, WsHub};
//!
//! let hub = WsHub::new(HubConfig::default());
//! let ana = hub.register_as(None, Identity::user("ana")).unwrap();
//! hub.join(&ana, "public-lobby").unwrap();
//! let ev = Event::new("notice", serde_json::json!("hello"));
//! // ana is in the room and is the user: she gets it once.
//! let report = ws_emit(&hub, &ev, &Target::rooms(["public-lobby"]).and_users(["ana"]));
//! assert_eq!(report.sent, 1);
//! ```

pub use ws_broadcast::Broadcast;
use ws_broadcast::ws_broadcast;
use ws_event::{Event, Target};
/// The message type of the signature, re-exported (see `ws_hub::Message`).
pub use ws_hub::Message;
use ws_hub::{Frame, WsHub};

/// Queues `event` for every connection `target` names, each once.
pub fn ws_emit(hub: &WsHub, event: &Event, target: &Target) -> Broadcast {
    let msg = Message::text(event.to_json());
    if target.broadcast {
        return ws_broadcast(hub, msg);
    }
    let frame = Frame::new(&msg);
    let mut report = Broadcast::default();
    hub.for_each_in(&target.clients, &target.rooms, &target.users, |client| {
        report.count(client.try_send_frame(&frame));
    });
    report
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;
    use ws_hub::{HubConfig, Identity, WsClient};

    fn received(c: &WsClient) -> Vec<String> {
        c.take_queued()
            .into_iter()
            .map(|m| m.into_text().unwrap().to_string())
            .collect()
    }

    #[test]
    fn a_union_reaches_each_connection_once_and_no_one_else() {
        let hub = WsHub::new(HubConfig::default());
        let ana1 = hub.register_as(None, Identity::user("ana")).unwrap();
        let ana2 = hub.register_as(None, Identity::user("ana")).unwrap();
        let bo = hub.register_as(None, Identity::user("bo")).unwrap();
        let cy = hub.register_as(None, Identity::user("cy")).unwrap();
        let out = hub.register(None).unwrap();
        hub.join(&ana1, "r").unwrap();
        hub.join(&bo, "r").unwrap();
        let ev = Event::new("notice", json!(1)).at(5);
        let target = Target::rooms(["r"])
            .and_users(["ana"])
            .and_clients([bo.id(), cy.id()]);
        let report = ws_emit(&hub, &ev, &target);
        assert_eq!(report.sent, 4);
        for c in [&ana1, &ana2, &bo, &cy] {
            assert_eq!(
                received(c),
                [r#"{"type":"notice","data":1,"timestamp":5}"#],
                "{c:?}"
            );
        }
        assert!(received(&out).is_empty());
    }

    #[test]
    fn unknown_names_reach_nobody_and_broadcast_reaches_everyone() {
        let hub = WsHub::new(HubConfig::default());
        let a = hub.register(None).unwrap();
        let ev = Event::new("x", json!(null));
        let nobody = ws_emit(
            &hub,
            &ev,
            &Target::rooms(["none"])
                .and_users(["nobody"])
                .and_clients([999]),
        );
        assert_eq!(nobody, Broadcast::default());
        assert_eq!(ws_emit(&hub, &ev, &Target::broadcast()).sent, 1);
        assert_eq!(received(&a).len(), 1);
    }

    #[test]
    fn a_full_outbox_is_counted_not_lost_silently() {
        let hub = WsHub::new(HubConfig {
            queue_messages: 1,
            ..HubConfig::default()
        });
        let slow = hub.register_as(None, Identity::user("u")).unwrap();
        let ev = Event::new("x", json!(null));
        assert_eq!(ws_emit(&hub, &ev, &Target::users(["u"])).sent, 1);
        let second = ws_emit(&hub, &ev, &Target::users(["u"]));
        assert_eq!(second.slow_closed, 1);
        assert!(slow.is_closed());
        assert_eq!(hub.stats().slow_closed, 1);
    }
}

/// The examples of this crate's registry entries, compiled by `cargo test --doc`.
#[cfg(doctest)]
#[doc = include_str!("../ws_emit.md")]
pub struct RegistryExamples;
