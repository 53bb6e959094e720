//! Takes a WebSocket connection out of a room of its hub; idempotent.
//!
//! A room with no connections left is removed, so room names coming from
//! clients cannot grow the hub. Leaving a room one is not in is not an error.
//! Connections leave all their rooms when they end.
//!
//! # Example
//!
//! ```
//! use ws_hub::{HubConfig, WsHub};
//! use ws_room_leave::ws_room_leave;
//!
//! let hub = WsHub::new(HubConfig::default());
//! let c = hub.register(None).unwrap();
//! hub.join(&c, "r").unwrap();
//! assert!(ws_room_leave(&hub, &c, "r"));
//! assert!(!ws_room_leave(&hub, &c, "r")); // not in it any more
//! assert!(hub.rooms().is_empty());
//! ```

use ws_hub::{WsClient, WsHub};

/// Takes `client` out of `room`; true if it was in it.
pub fn ws_room_leave(hub: &WsHub, client: &WsClient, room: &str) -> bool {
    hub.leave(client, room)
}

#[cfg(test)]
mod tests {
    use super::*;
    use ws_hub::HubConfig;

    #[test]
    fn leaving_is_idempotent_and_frees_empty_rooms() {
        let hub = WsHub::new(HubConfig::default());
        let a = hub.register(None).unwrap();
        let b = hub.register(None).unwrap();
        hub.join(&a, "r").unwrap();
        hub.join(&b, "r").unwrap();
        assert!(ws_room_leave(&hub, &a, "r"));
        assert!(!ws_room_leave(&hub, &a, "r"));
        assert_eq!(hub.room_len("r"), 1);
        assert!(ws_room_leave(&hub, &b, "r"));
        assert!(hub.rooms().is_empty());
    }
}

/// The examples of this crate's registry entries, compiled by `cargo test --doc`.
#[cfg(doctest)]
#[doc = include_str!("../ws_room_leave.md")]
pub struct RegistryExamples;
