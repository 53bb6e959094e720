//! Sends one message to every client of a WebSocket hub, encoded once and shared, without waiting for any of them.
//!
//! The message's payload is a reference-counted buffer (`Bytes` /
//! `Utf8Bytes`), so each client's outbox gets a handle on the same bytes, not
//! a copy. Each send is [`ws_send`]: it never waits, so one slow or dead
//! client never delays the others; what happened to each is counted in the
//! returned [`Broadcast`] (and in the hub's stats).
//!
//! # Example
//!
//! ```
//! use ws_broadcast::ws_broadcast;
//! use ws_hub::{HubConfig, WsHub};
//! use ws_hub::Message;
//!
//! let hub = WsHub::new(HubConfig::default());
//! let _a = hub.register(None).unwrap();
//! let _b = hub.register(None).unwrap();
//! let report = ws_broadcast(&hub, Message::text("to everyone"));
//! assert_eq!(report.sent, 2);
//! ```

/// The message type of the signature, re-exported (see `ws_hub::Message`).
pub use ws_hub::Message;
use ws_hub::{SendError, WsHub};
use ws_send::ws_send;

/// What one broadcast did.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Broadcast {
    /// Clients the message was queued for.
    pub sent: usize,
    /// Clients whose full outbox dropped it (drop policy).
    pub dropped: usize,
    /// Clients closed as slow by this broadcast (close policy).
    pub slow_closed: usize,
    /// Clients already closing.
    pub closed: usize,
}

impl Broadcast {
    /// Adds the outcome of one send.
    pub fn count(&mut self, sent: Result<(), SendError>) {
        match sent {
            Ok(()) => self.sent += 1,
            Err(SendError::Dropped) => self.dropped += 1,
            Err(SendError::SlowClosed) => self.slow_closed += 1,
            Err(SendError::Closed) => self.closed += 1,
        }
    }
}

/// Queues `msg` for every registered client of `hub`.
pub fn ws_broadcast(hub: &WsHub, msg: Message) -> Broadcast {
    let mut report = Broadcast::default();
    hub.for_each(|client| report.count(ws_send(client, msg.clone())));
    report
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::task::{Context, Poll, Waker};
    use tokio_tungstenite::tungstenite::Utf8Bytes;
    use ws_hub::{HubConfig, Outgoing};

    #[test]
    fn every_client_shares_the_same_bytes() {
        let hub = WsHub::new(HubConfig::default());
        let clients: Vec<_> = (0..3).map(|_| hub.register(None).unwrap()).collect();
        let text = Utf8Bytes::from("shared payload");
        let report = ws_broadcast(&hub, Message::Text(text.clone()));
        assert_eq!(report.sent, 3);
        let cx = &mut Context::from_waker(Waker::noop());
        for c in &clients {
            let mut batch = Vec::new();
            assert_eq!(
                c.poll_outgoing(cx, &mut batch),
                Poll::Ready(Outgoing::Messages)
            );
            let Message::Text(got) = &batch[0] else {
                panic!("text")
            };
            assert_eq!(got.as_str().as_ptr(), text.as_str().as_ptr(), "not copied");
        }
    }

    #[test]
    fn a_slow_client_is_closed_and_the_others_still_get_it() {
        let hub = WsHub::new(HubConfig {
            queue_messages: 1,
            ..HubConfig::default()
        });
        let slow = hub.register(None).unwrap();
        let fast = hub.register(None).unwrap();
        let cx = &mut Context::from_waker(Waker::noop());
        assert_eq!(ws_broadcast(&hub, Message::text("1")).sent, 2);
        assert!(fast.poll_outgoing(cx, &mut Vec::new()).is_ready());
        let report = ws_broadcast(&hub, Message::text("2"));
        assert_eq!((report.sent, report.slow_closed), (1, 1));
        assert!(slow.is_closed() && !fast.is_closed());
        let report = ws_broadcast(&hub, Message::text("3"));
        assert_eq!(
            (report.sent, report.closed),
            (0, 1),
            "fast still holds message 2"
        );
    }
}
