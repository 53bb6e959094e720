//! Publishes one message to an SSE topic and to every client of a WebSocket hub together, so browsers on either transport see it.
//!
//! The event goes to the broker first, which checks the topic and event
//! names and gives it its id; only when the broker took it is its `data`
//! broadcast to the hub as one text frame (encoded once, shared by every
//! client). A refused event reaches nobody. Neither side waits for a slow
//! client: what happened on the WebSocket side is counted in
//! [`Published::ws`].
//!
//! One process only: on a node of several (a clustered `SseBroker`) the
//! broker refuses the synchronous publish (`PublishError::Clustered`); there,
//! `SseBroker::publish_async` and `ws_cluster::WsCluster::send` do the same
//! across nodes.
//!
//! # Example
//!
//! ```
//! use rt_publish::rt_publish;
//! use sse_broker::{BrokerConfig, SseBroker};
//! use sse_event::SseEvent;
//! use ws_hub::{HubConfig, WsHub};
//!
//! let broker = SseBroker::new(BrokerConfig::default());
//! let hub = WsHub::new(HubConfig::default());
//! let _browser = hub.register(None).unwrap();
//! let done = rt_publish(&broker, &hub, "news", SseEvent::data("hello"))?;
//! assert_eq!((done.id, done.ws.sent), (1, 1));
//! # Ok::<(), sse_broker::PublishError>(())
//! ```

use sse_broker::{PublishError, SseBroker};
use sse_event::SseEvent;
use ws_broadcast::{Broadcast, ws_broadcast};
use ws_hub::{Message, WsHub};

/// What [`rt_publish`] did on each transport.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Published {
    /// The SSE event id the broker gave it (`id:`, what `Last-Event-ID` resumes from).
    pub id: u64,
    /// The WebSocket broadcast: clients it was queued for, dropped by, or closed as slow.
    pub ws: Broadcast,
}

/// Publishes `event` on the broker's `topic`, then sends its `data` (empty
/// when it has none) to every client of `hub` as a text frame.
pub fn rt_publish(
    broker: &SseBroker,
    hub: &WsHub,
    topic: &str,
    event: SseEvent,
) -> Result<Published, PublishError> {
    let text = event.data.clone().unwrap_or_default();
    let id = broker.publish(topic, event)?;
    let ws = ws_broadcast(hub, Message::text(text));
    Ok(Published { id, ws })
}

#[cfg(test)]
mod tests {
    use super::*;
    use sse_broker::BrokerConfig;
    use ws_hub::HubConfig;

    #[tokio::test]
    async fn both_transports_get_the_message() {
        let broker = SseBroker::new(BrokerConfig::default());
        let hub = WsHub::new(HubConfig::default());
        let a = hub.register(None).unwrap();
        let b = hub.register(None).unwrap();
        let (tx, body) = sse_stream::sse_stream(8);
        let sub = broker.subscribe(&["news".into()], None, &tx);
        let done = rt_publish(&broker, &hub, "news", SseEvent::data("hi")).unwrap();
        assert_eq!(done.id, 1);
        assert_eq!(done.ws.sent, 2);
        for client in [&a, &b] {
            assert_eq!(client.take_queued(), [Message::text("hi")]);
        }
        drop((sub, tx));
        let wire = http_body_util::BodyExt::collect(body)
            .await
            .unwrap()
            .to_bytes();
        assert_eq!(&wire[..], b"id: 1\ndata: hi\n\n");
    }

    #[test]
    fn a_refused_event_reaches_nobody() {
        let broker = SseBroker::new(BrokerConfig::default());
        let hub = WsHub::new(HubConfig::default());
        let _a = hub.register(None).unwrap();
        let err = rt_publish(&broker, &hub, "bad topic\n", SseEvent::data("x")).unwrap_err();
        assert!(matches!(err, PublishError::Topic(_)));
        assert_eq!(hub.stats().sent, 0);
    }
}

/// The examples of this crate's registry entries, compiled by `cargo test --doc`.
#[cfg(doctest)]
#[doc = include_str!("../rt_publish.md")]
#[doc = include_str!("../../../types/infra/Published.md")]
pub struct RegistryExamples;
