//! Queues one message for one WebSocket client without blocking; an error says why it was not queued.
//!
//! The message goes into the client's outbox, which its connection's writer
//! drains into the socket. `ws_send` never waits: a client that is gone is
//! [`SendError::Closed`]; a full outbox is handled by the hub's slow-client
//! policy and reported as [`SendError::SlowClosed`] (the client is being
//! closed with `1013`) or [`SendError::Dropped`] (the message was dropped and
//! counted). Messages to one client arrive in the order they were queued.
//!
//! # Example
//!
//! ```
//! use ws_hub::{HubConfig, SendError, WsHub};
//! use ws_send::ws_send;
//! use ws_hub::Message;
//!
//! let hub = WsHub::new(HubConfig::default());
//! let client = hub.register(None).unwrap();
//! ws_send(&client, Message::text(r#"{"type":"notification","text":"hola"}"#))?;
//! client.disconnected();
//! assert_eq!(ws_send(&client, Message::text("late")), Err(SendError::Closed));
//! # Ok::<(), SendError>(())
//! ```

/// The message type of the signature, re-exported (see `ws_hub::Message`).
pub use ws_hub::Message;
pub use ws_hub::SendError;
use ws_hub::WsClient;

/// Queues `msg` for `client`; never blocks.
pub fn ws_send(client: &WsClient, msg: Message) -> Result<(), SendError> {
    client.try_send(msg)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::task::{Context, Poll, Waker};
    use ws_hub::{Batch, HubConfig, Outgoing, SlowPolicy, WsHub};

    #[test]
    fn reaches_exactly_one_client_in_order() {
        let hub = WsHub::new(HubConfig::default());
        let a = hub.register(None).unwrap();
        let b = hub.register(None).unwrap();
        ws_send(&a, Message::text("1")).unwrap();
        ws_send(&a, Message::text("2")).unwrap();
        let mut batch = Batch::new();
        let cx = &mut Context::from_waker(Waker::noop());
        assert_eq!(
            a.poll_outgoing(cx, &mut batch),
            Poll::Ready(Outgoing::Messages)
        );
        assert_eq!(
            batch.to_messages(),
            [Message::text("1"), Message::text("2")]
        );
        assert!(
            b.poll_outgoing(cx, &mut Batch::new()).is_pending(),
            "b got nothing"
        );
    }

    #[test]
    fn says_why_when_full() {
        let hub = WsHub::new(HubConfig {
            queue_messages: 1,
            slow: SlowPolicy::Drop,
            ..HubConfig::default()
        });
        let c = hub.register(None).unwrap();
        ws_send(&c, Message::text("1")).unwrap();
        assert_eq!(ws_send(&c, Message::text("2")), Err(SendError::Dropped));
    }

    #[test]
    fn a_gone_client_is_an_error() {
        let hub = WsHub::new(HubConfig::default());
        let c = hub.register(None).unwrap();
        c.disconnected();
        assert_eq!(ws_send(&c, Message::text("x")), Err(SendError::Closed));
    }
}

/// The examples of this crate's registry entries, compiled by `cargo test --doc`.
#[cfg(doctest)]
#[doc = include_str!("../ws_send.md")]
pub struct RegistryExamples;
