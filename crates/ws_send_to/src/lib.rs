//! Queues one message for the WebSocket connection with a given id; a gone connection is a clear error.
//!
//! nitric's `Send(ctx, connectionId, msg)`: the id is a lookup in the hub,
//! not a scan of every connection. A connection that has ended is
//! [`SendToError::NoSuchClient`], whatever the reason; otherwise it is
//! [`ws_send`]: never waits, a full outbox is the hub's slow-client policy.
//!
//! # Example
//!
//! ```
//! use ws_hub::{HubConfig, WsHub};
//! use ws_send_to::{ws_send_to, SendToError};
//! use ws_hub::Message;
//!
//! let hub = WsHub::new(HubConfig::default());
//! let c = hub.register(None).unwrap();
//! ws_send_to(&hub, c.id(), Message::text("hi"))?;
//! hub.unregister(c.id());
//! assert_eq!(ws_send_to(&hub, c.id(), Message::text("hi")), Err(SendToError::NoSuchClient(c.id())));
//! # Ok::<(), SendToError>(())
//! ```

use std::fmt;

/// The message type of the signature, re-exported (see `ws_hub::Message`).
pub use ws_hub::Message;
use ws_hub::{ClientId, SendError, WsHub};
use ws_send::ws_send;

/// Queues `msg` for client `id` of `hub`.
pub fn ws_send_to(hub: &WsHub, id: ClientId, msg: Message) -> Result<(), SendToError> {
    let client = hub.client(id).ok_or(SendToError::NoSuchClient(id))?;
    ws_send(&client, msg).map_err(SendToError::Send)
}

/// Why a message was not queued for a connection by id.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SendToError {
    /// No connection with this id: it ended, or never was.
    NoSuchClient(ClientId),
    /// The connection is there but did not take it (closing, or full).
    Send(SendError),
}

impl fmt::Display for SendToError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            SendToError::NoSuchClient(id) => write!(f, "no WebSocket connection with id {id}"),
            SendToError::Send(e) => write!(f, "{e}"),
        }
    }
}

impl std::error::Error for SendToError {}

#[cfg(test)]
mod tests {
    use super::*;
    use ws_hub::{HubConfig, SlowPolicy};

    #[test]
    fn reaches_the_client_by_id() {
        let hub = WsHub::new(HubConfig::default());
        let a = hub.register(None).unwrap();
        let b = hub.register(None).unwrap();
        ws_send_to(&hub, b.id(), Message::text("x")).unwrap();
        assert_eq!((a.queued(), b.queued()), (0, 1));
    }

    #[test]
    fn a_gone_or_unknown_id_is_no_such_client() {
        let hub = WsHub::new(HubConfig::default());
        let a = hub.register(None).unwrap();
        hub.unregister(a.id());
        assert_eq!(
            ws_send_to(&hub, a.id(), Message::text("x")),
            Err(SendToError::NoSuchClient(a.id()))
        );
        assert_eq!(
            ws_send_to(&hub, 12345, Message::text("x")),
            Err(SendToError::NoSuchClient(12345))
        );
        assert_eq!(
            SendToError::NoSuchClient(7).to_string(),
            "no WebSocket connection with id 7"
        );
    }

    #[test]
    fn a_full_outbox_says_so() {
        let hub = WsHub::new(HubConfig {
            queue_messages: 1,
            slow: SlowPolicy::Drop,
            ..HubConfig::default()
        });
        let a = hub.register(None).unwrap();
        ws_send_to(&hub, a.id(), Message::text("1")).unwrap();
        assert_eq!(
            ws_send_to(&hub, a.id(), Message::text("2")),
            Err(SendToError::Send(SendError::Dropped))
        );
    }
}

/// The examples of this crate's registry entries, compiled by `cargo test --doc`.
#[cfg(doctest)]
#[doc = include_str!("../ws_send_to.md")]
#[doc = include_str!("../../../types/infra/SendToError.md")]
pub struct RegistryExamples;
