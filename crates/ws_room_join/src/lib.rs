//! Puts a WebSocket connection in a room of its hub; idempotent, with a bounded name and a bounded number of rooms per connection.
//!
//! Room names often come from clients (`{"type":"subscribe","room":...}`), so
//! the hub checks them (`name_validate`, `NameKind::Room`): 1 to
//! [`MAX_ROOM_NAME`] bytes, no control characters; every join goes through
//! [`WsHub::join`], so no path joins an unchecked name.
//! Who may join which room is not decided here but by the caller's guard
//! (see `ws_control`); this function does the joining. A connection is in
//! at most `HubConfig::max_rooms` rooms.
//!
//! # Example
//!
//! ```
//! use ws_hub::{HubConfig, WsHub};
//! use ws_room_join::{ws_room_join, JoinError};
//!
//! let hub = WsHub::new(HubConfig::default());
//! let c = hub.register(None).unwrap();
//! assert_eq!(ws_room_join(&hub, &c, "public-lobby"), Ok(true));
//! assert_eq!(ws_room_join(&hub, &c, "public-lobby"), Ok(false)); // already in
//! assert_eq!(hub.room_len("public-lobby"), 1);
//! assert_eq!(ws_room_join(&hub, &c, ""), Err(JoinError::InvalidName));
//! ```

use ws_hub::{WsClient, WsHub};

/// Why a connection did not join a room (the hub's).
pub use ws_hub::JoinError;
/// Longest room name, in bytes (`name_validate`'s limit for rooms).
pub use ws_hub::MAX_ROOM_NAME;

/// Puts `client` in `room`: `Ok(true)` if it joined, `Ok(false)` if it was in already.
pub fn ws_room_join(hub: &WsHub, client: &WsClient, room: &str) -> Result<bool, JoinError> {
    hub.join(client, room)
}

#[cfg(test)]
mod tests {
    use super::*;
    use ws_hub::HubConfig;

    #[test]
    fn joins_once_and_checks_names() {
        let hub = WsHub::new(HubConfig::default());
        let c = hub.register(None).unwrap();
        assert_eq!(ws_room_join(&hub, &c, "r"), Ok(true));
        assert_eq!(ws_room_join(&hub, &c, "r"), Ok(false));
        assert_eq!(ws_room_join(&hub, &c, "a\nb"), Err(JoinError::InvalidName));
        assert_eq!(
            ws_room_join(&hub, &c, &"x".repeat(MAX_ROOM_NAME + 1)),
            Err(JoinError::InvalidName)
        );
        assert_eq!(ws_room_join(&hub, &c, &"x".repeat(MAX_ROOM_NAME)), Ok(true));
    }

    #[test]
    fn bounded_rooms_and_gone_clients() {
        let hub = WsHub::new(HubConfig {
            max_rooms: 1,
            ..HubConfig::default()
        });
        let c = hub.register(None).unwrap();
        assert_eq!(ws_room_join(&hub, &c, "a"), Ok(true));
        assert_eq!(ws_room_join(&hub, &c, "b"), Err(JoinError::TooManyRooms));
        hub.unregister(c.id());
        assert_eq!(ws_room_join(&hub, &c, "a"), Err(JoinError::NotRegistered));
    }
}

/// The examples of this crate's registry entries, compiled by `cargo test --doc`.
#[cfg(doctest)]
#[doc = include_str!("../ws_room_join.md")]
pub struct RegistryExamples;
