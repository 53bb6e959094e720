//! Sends one message to every client of a WebSocket hub, encoded once and shared, without waiting for any of them.
//!
//! The message is framed once ([`Frame`]: the unmasked server-to-client
//! header and the payload, the same bytes for every recipient), and each
//! client's outbox gets that frame: copied into its outbox buffer when it is
//! small (at most [`ws_hub::COPY_MAX`] bytes, where a copy is no dearer than
//! sharing), a handle on the same bytes otherwise. No recipient encodes,
//! frames or allocates anything of its own. Each send never waits, so one
//! slow or dead client never delays the others; what happened to each is
//! counted in the returned [`Broadcast`] (and in the hub's stats).
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
use ws_hub::{Frame, Frames, SendError, WsHub};

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
    /// Adds another report's counts to this one.
    pub fn add(&mut self, other: Broadcast) {
        self.sent += other.sent;
        self.dropped += other.dropped;
        self.slow_closed += other.slow_closed;
        self.closed += other.closed;
    }

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

/// Queues `msg` for every registered client of `hub`, framed once.
pub fn ws_broadcast(hub: &WsHub, msg: Message) -> Broadcast {
    let mut report = Broadcast::default();
    if msg.is_close() {
        // A close is each connection's own handshake, not shared bytes.
        hub.for_each(|client| report.count(client.try_send(msg.clone())));
        return report;
    }
    let frame = Frame::new(&msg);
    hub.for_each(|client| report.count(client.try_send_frame(&frame)));
    report
}

/// Queues every message of `msgs`, in order, for every registered client of
/// `hub`: framed once together ([`Frames`]), each client taking the burst
/// with one send, so one lock and at most one wake per client instead of
/// one per message. Each client ends as if [`ws_broadcast`] had sent the
/// messages one by one. The report counts deliveries (a message to a
/// client): a client closed as slow by the burst counts once in
/// `slow_closed` and once in `closed` for each other message.
pub fn ws_broadcast_all(hub: &WsHub, msgs: &[Message]) -> Broadcast {
    if msgs.len() < 2 || msgs.iter().any(Message::is_close) {
        // A close is each connection's own handshake, in its place.
        return msgs.iter().fold(Broadcast::default(), |mut report, msg| {
            report.add(ws_broadcast(hub, msg.clone()));
            report
        });
    }
    let mut report = Broadcast::default();
    let frames = Frames::new(msgs);
    hub.for_each(|client| match client.try_send_frames(&frames) {
        Ok(queued) => {
            report.sent += queued;
            report.dropped += frames.len() - queued;
        }
        Err(e) => {
            // The first message's outcome; the client is closed for the others.
            report.count(Err(e));
            report.closed += frames.len() - 1;
        }
    });
    report
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::task::{Context, Poll, Waker};
    use ws_hub::{Batch, Chunk, HubConfig, Outgoing};

    fn chunks(c: &ws_hub::WsClient) -> Vec<Chunk> {
        let cx = &mut Context::from_waker(Waker::noop());
        let mut batch = Batch::new();
        assert_eq!(
            c.poll_outgoing(cx, &mut batch),
            Poll::Ready(Outgoing::Messages)
        );
        batch.take_chunks().collect()
    }

    #[test]
    fn every_client_shares_the_same_bytes() {
        let hub = WsHub::new(HubConfig::default());
        let clients: Vec<_> = (0..3).map(|_| hub.register(None).unwrap()).collect();
        let large = Message::binary(vec![7u8; ws_hub::COPY_MAX]);
        assert_eq!(ws_broadcast(&hub, large.clone()).sent, 3);
        let wire = Frame::new(&large);
        let mut at = Vec::new();
        for c in &clients {
            let [Chunk::Shared(got)] = &chunks(c)[..] else {
                panic!("one shared frame")
            };
            assert_eq!(got, wire.bytes(), "the frame, header and payload");
            at.push(got.as_ptr());
        }
        assert!(at.windows(2).all(|w| w[0] == w[1]), "one copy in memory");
    }

    #[test]
    fn a_small_message_is_framed_once_and_copied_into_each_outbox() {
        let hub = WsHub::new(HubConfig::default());
        let clients: Vec<_> = (0..3).map(|_| hub.register(None).unwrap()).collect();
        ws_broadcast(&hub, Message::text("one"));
        ws_broadcast(&hub, Message::text("two"));
        for c in &clients {
            assert_eq!(
                chunks(c),
                [Chunk::Copied(b"\x81\x03one\x81\x03two".to_vec())],
                "both frames back to back in one buffer"
            );
        }
    }

    #[test]
    fn a_burst_reaches_every_client_in_one_copy_in_order() {
        let hub = WsHub::new(HubConfig::default());
        let clients: Vec<_> = (0..3).map(|_| hub.register(None).unwrap()).collect();
        let msgs = ["one", "two", "three"].map(Message::text);
        let report = ws_broadcast_all(&hub, &msgs);
        assert_eq!(
            report,
            Broadcast {
                sent: 9,
                ..Broadcast::default()
            }
        );
        for c in &clients {
            assert_eq!(
                chunks(c),
                [Chunk::Copied(
                    b"\x81\x03one\x81\x03two\x81\x05three".to_vec()
                )],
            );
        }
        assert_eq!(ws_broadcast_all(&hub, &[]), Broadcast::default());
    }

    #[test]
    fn a_burst_with_a_close_closes_each_client_after_what_came_before() {
        let hub = WsHub::new(HubConfig::default());
        let c = hub.register(None).unwrap();
        let msgs = [
            Message::text("bye"),
            Message::Close(None),
            Message::text("late"),
        ];
        let report = ws_broadcast_all(&hub, &msgs);
        assert_eq!((report.sent, report.closed), (2, 1));
        assert!(c.is_closed());
        assert_eq!(c.take_queued(), [Message::text("bye")]);
    }

    #[test]
    fn a_burst_closes_a_slow_client_and_the_others_get_all_of_it() {
        let hub = WsHub::new(HubConfig {
            queue_messages: 2,
            ..HubConfig::default()
        });
        let slow = hub.register(None).unwrap();
        let fast = hub.register(None).unwrap();
        slow.try_send(Message::text("0")).unwrap();
        let msgs = ["1", "2"].map(Message::text);
        let report = ws_broadcast_all(&hub, &msgs);
        assert_eq!(
            report,
            Broadcast {
                sent: 2,
                slow_closed: 1,
                closed: 1,
                ..Broadcast::default()
            }
        );
        assert!(slow.is_closed() && !fast.is_closed());
        assert_eq!(fast.take_queued(), msgs);
    }

    #[test]
    fn a_broadcast_close_closes_each_client_after_what_it_was_sent() {
        let hub = WsHub::new(HubConfig::default());
        let c = hub.register(None).unwrap();
        ws_broadcast(&hub, Message::text("bye"));
        assert_eq!(ws_broadcast(&hub, Message::Close(None)).sent, 1);
        assert!(c.is_closed());
        assert_eq!(c.take_queued(), [Message::text("bye")]);
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
        assert!(fast.poll_outgoing(cx, &mut Batch::new()).is_ready());
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

/// The examples of this crate's registry entries, compiled by `cargo test --doc`.
#[cfg(doctest)]
#[doc = include_str!("../ws_broadcast.md")]
#[doc = include_str!("../../../types/infra/Broadcast.md")]
pub struct RegistryExamples;
