//! Puts a WebSocket connection in a room of its hub; idempotent, with a bounded name and a bounded number of rooms per connection.
//!
//! Room names often come from clients (`{"type":"subscribe","room":...}`), so
//! they are checked by `name_validate` as a [`NameKind::Room`]: 1 to
//! [`MAX_ROOM_NAME`] bytes, no control characters.
//! Who may join which room is not decided here but by the caller's guard
//! (see `ws_control`); this function does the joining. A connection is in
//! at most `HubConfig::max_rooms` rooms.
//!
//! # Example
//!
//! ```
//! use ws_hub::{HubConfig, WsHub};
//! use ws_room_join::{ws_room_join, RoomError};
//!
//! let hub = WsHub::new(HubConfig::default());
//! let c = hub.register(None).unwrap();
//! assert_eq!(ws_room_join(&hub, &c, "public-lobby"), Ok(true));
//! assert_eq!(ws_room_join(&hub, &c, "public-lobby"), Ok(false)); // already in
//! assert_eq!(hub.room_len("public-lobby"), 1);
//! assert_eq!(ws_room_join(&hub, &c, ""), Err(RoomError::InvalidName));
//! ```

use std::fmt;

use name_validate::{NameKind, name_validate};
use ws_hub::{HubError, WsClient, WsHub};

/// Longest room name, in bytes (`name_validate`'s limit for rooms).
pub use name_validate::MAX_ROOM_NAME;

/// Puts `client` in `room`: `Ok(true)` if it joined, `Ok(false)` if it was in already.
pub fn ws_room_join(hub: &WsHub, client: &WsClient, room: &str) -> Result<bool, RoomError> {
    if name_validate(NameKind::Room, room).is_err() {
        return Err(RoomError::InvalidName);
    }
    hub.join(client, room).map_err(|e| match e {
        HubError::TooManyRooms => RoomError::TooManyRooms,
        HubError::Stopped | HubError::NotRegistered => RoomError::Gone,
    })
}

/// Why a connection did not join a room.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RoomError {
    /// The name is empty, longer than [`MAX_ROOM_NAME`] bytes, or holds a control character.
    InvalidName,
    /// The connection is in as many rooms as the hub allows.
    TooManyRooms,
    /// The connection is not registered any more.
    Gone,
}

impl fmt::Display for RoomError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            RoomError::InvalidName => "invalid room name",
            RoomError::TooManyRooms => "too many rooms for this connection",
            RoomError::Gone => "the connection is gone",
        })
    }
}

impl std::error::Error for RoomError {}

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
        assert_eq!(ws_room_join(&hub, &c, "a\nb"), Err(RoomError::InvalidName));
        assert_eq!(
            ws_room_join(&hub, &c, &"x".repeat(MAX_ROOM_NAME + 1)),
            Err(RoomError::InvalidName)
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
        assert_eq!(ws_room_join(&hub, &c, "b"), Err(RoomError::TooManyRooms));
        hub.unregister(c.id());
        assert_eq!(ws_room_join(&hub, &c, "a"), Err(RoomError::Gone));
    }
}
