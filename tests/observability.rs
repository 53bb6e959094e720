//! Tracing of WebSocket connections end to end over TCP: the `ws` span's
//! fields and the events that say why a connection ended.
//!
//! Its own test binary with a global subscriber: a per-thread subscriber
//! (`set_default`) misses events whose callsite a thread without one
//! registered first, as other tests of a shared binary do.

use std::sync::{Mutex, OnceLock};
use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use tokio_tungstenite::tungstenite::Message;
use ws_handler::{MessageRate, Refusal, WsConfig, WsStats, identify, ws_handler};
use ws_hub::{HubConfig, Identity, WsHub};

mod common;
mod serving;
use common::*;

/// Everything logged in this binary (`DEBUG` and up).
fn logged() -> String {
    static LOG: OnceLock<&'static Mutex<Vec<u8>>> = OnceLock::new();
    #[derive(Clone, Copy)]
    struct Sink(&'static Mutex<Vec<u8>>);
    impl std::io::Write for Sink {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(buf);
            Ok(buf.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }
    let log = LOG.get_or_init(|| {
        let log: &'static Mutex<Vec<u8>> = Box::leak(Box::default());
        let subscriber = tracing_subscriber::fmt()
            .with_writer(move || Sink(log))
            .with_ansi(false)
            .with_max_level(tracing::Level::DEBUG)
            .finish();
        tracing::subscriber::set_global_default(subscriber).unwrap();
        log
    });
    String::from_utf8(log.lock().unwrap().clone()).unwrap()
}

/// Each connection has a `ws` span with its client id, peer, path and the
/// user the identify hook decided; its events say it connected, that it was
/// closed over the message rate (`INFO`), and with what code and reason.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_connection_span_carries_client_peer_path_and_user_and_events_say_why() {
    logged();
    let stats = WsStats::default();
    let hub = WsHub::new(HubConfig::default());
    let (config, mut hooks) = hooked(WsConfig {
        identify: Some(identify(|_req| {
            std::future::ready(Ok(Identity::user("ana")))
        })),
        message_rate: Some(MessageRate {
            per_second: 0.001,
            burst: 1,
        }),
        on_message: Some(std::sync::Arc::new(|client, msg| {
            let _ = client.try_send(msg);
        })),
        stats: stats.clone(),
        ..WsConfig::default()
    });
    let server = Server::start(ws_handler(hub.clone(), config), hub, Duration::from_secs(5)).await;
    let mut ws = server.ws("/chat").await;
    let id = hooks.connected().await;
    let local = ws.get_ref().local_addr().unwrap();
    ws.send(Message::text("one")).await.unwrap();
    assert_eq!(next_text(&mut ws).await, "one");
    ws.send(Message::text("two")).await.unwrap();
    let (frame, _) = until_close(&mut ws).await;
    assert_eq!(code(&frame), Some(1008));
    // Reading on sends the client's close reply, which the server waits for.
    while let Ok(Some(_)) = tokio::time::timeout(WAIT, ws.next()).await {}
    let (gone, why) = hooks.disconnected().await;
    assert_eq!((gone, closed_by_server_with(&why)), (id, Some(1008)));
    assert_eq!(stats.refused(Refusal::MessageRate), 1);
    assert_eq!(stats.received(), 1, "the message over the rate is not read");
    server.connections(0).await;
    assert_eq!(server.hub.stats().written, 1, "the one echo");

    let log = logged();
    let fields = [
        "ws{".to_string(),
        format!("client={id}"),
        format!("peer={local}"),
        "path=\"/chat\"".to_string(),
        "user=\"ana\"".to_string(),
    ];
    let line = |needle: &str| {
        log.lines()
            .find(|l| l.contains(needle) && l.contains(&format!("peer={local}")))
            .unwrap_or_else(|| panic!("no line with {needle:?} in:\n{log}"))
            .to_string()
    };
    let in_span = |l: &str| fields.iter().all(|f| l.contains(f.as_str()));
    let connected = line(": connected");
    assert!(
        connected.contains("DEBUG") && in_span(&connected),
        "{connected}"
    );
    let rate = line("message rate exceeded");
    assert!(rate.contains(" INFO ") && in_span(&rate), "{rate}");
    assert!(rate.contains("reason=\"message_rate\""), "{rate}");
    let closed = line(": closed");
    assert!(in_span(&closed), "{closed}");
    assert!(
        closed.contains("by=\"server\" code=1008 reason=\"message rate exceeded\""),
        "{closed}"
    );
    assert_eq!(server.stop().await.aborted, 0);
}

/// An SSE stream's open and close events carry its topics, whether it
/// resumed and from which id, and (on close) how long it was open.
#[tokio::test]
async fn sse_stream_open_and_close_are_logged_with_topics_and_resume() {
    use http_body_util::BodyExt;
    use sse_broker::{BrokerConfig, SseBroker};
    use sse_event::SseEvent;
    use sse_handler::{SseConfig, sse_handler};

    logged();
    let broker = SseBroker::new(BrokerConfig::default());
    broker.publish("obs-a", SseEvent::data("x")).unwrap();
    let h = sse_handler(broker.clone(), SseConfig::default());
    let req = http::Request::builder()
        .uri("/events?topic=obs-b&topic=obs-a")
        .header("last-event-id", "0")
        .body(http_types::empty())
        .unwrap();
    let mut res = h.call(req).await;
    let mut got = String::new();
    while !got.contains("data: x") {
        let frame = res.body_mut().frame().await.unwrap().unwrap();
        got.push_str(&String::from_utf8_lossy(&frame.into_data().unwrap()));
    }
    let opened = logged();
    let line = |log: &str, what: &str| {
        log.lines()
            .find(|l| l.contains(what) && l.contains("obs-a"))
            .map(str::to_string)
    };
    let open = line(&opened, "stream opened").expect("an open event");
    assert!(open.contains(r#"topics=["obs-a", "obs-b"]"#), "{open}");
    assert!(open.contains("resumed=true"), "{open}");
    assert!(open.contains(r#"last_event_id="0""#), "{open}");
    assert_eq!(line(&opened, "stream closed"), None, "still open");
    drop(res);
    let close = line(&logged(), "stream closed").expect("a close event");
    assert!(
        close.contains("resumed=true") && close.contains("open_ms="),
        "{close}"
    );
}
