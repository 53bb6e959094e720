//! SSE notifications by topic with resume, built from registry functions: `http_serve`, `http_router`, `sse_handler` and `sse_broker`.
//!
//! ```text
//! cargo run -p examples --example notifications -- 127.0.0.1:3002
//! curl -N '127.0.0.1:3002/notifications?topic=alice'                   # one stream per user topic
//! curl -d 'your order shipped' '127.0.0.1:3002/notify?topic=alice'    # -> id: 1, data: your order shipped
//! curl -N -H 'Last-Event-ID: 1' '127.0.0.1:3002/notifications?topic=alice'  # only what came after id 1
//! ```
//!
//! A browser's `EventSource` sends `Last-Event-ID` by itself when it
//! reconnects, so a dropped connection misses nothing the broker still holds
//! (the last 1,000 events); older gaps get an explicit `reset` event.
//! `/notify` is open here: put a token check in front of it in a real app
//! (rt-server's `--publish-token`).

use std::future::Future;

use http_body_read::read_text;
use http_router::http_router;
use http_serve::{ServeConfig, http_serve};
use http_types::http::StatusCode;
use http_types::{Handler, Request, Route, json, query_values, text};
use sse_broker::{BrokerConfig, SseBroker};
use sse_event::SseEvent;
use sse_handler::{SseConfig, sse_handler};

/// Largest notification accepted.
pub const MAX_NOTIFICATION: usize = 64 << 10;

/// The routes: `GET /notifications?topic=T` (SSE) and `POST /notify?topic=T`.
pub fn app(broker: SseBroker) -> Handler {
    let stream = sse_handler(broker.clone(), SseConfig::default());
    let notify = Handler::new(move |req: Request| {
        let broker = broker.clone();
        async move {
            let topic = req
                .uri()
                .query()
                .and_then(|q| query_values(q, "topic").next());
            let Some(topic) = topic else {
                return text(StatusCode::BAD_REQUEST, "name a ?topic=\n");
            };
            let body = match read_text(req.into_body(), MAX_NOTIFICATION).await {
                Ok(body) => body,
                Err(refused) => return refused.into_response(), // 413, 400
            };
            match broker.publish(&topic, SseEvent::data(body)) {
                Ok(id) => json(StatusCode::ACCEPTED, &serde_json::json!({ "id": id })),
                Err(e) => text(StatusCode::BAD_REQUEST, format!("{e}\n")),
            }
        }
    });
    http_router(vec![
        Route::get("/notifications", stream),
        Route::post("/notify", notify),
    ])
    .expect("the routes are valid")
}

/// Serves notifications on `listener` until `stop` completes.
pub async fn serve(listener: tokio::net::TcpListener, stop: impl Future<Output = ()> + Send) {
    let broker = SseBroker::new(BrokerConfig::default());
    http_serve(listener, app(broker), stop, ServeConfig::default()).await;
}

#[allow(dead_code)] // a binary's entry point; the tests call `serve`
#[tokio::main]
async fn main() -> std::io::Result<()> {
    let addr = std::env::args()
        .nth(1)
        .unwrap_or_else(|| "127.0.0.1:3002".into());
    let listener = tokio::net::TcpListener::bind(&addr).await?;
    println!(
        "notifications on http://{}/notifications?topic=NAME",
        listener.local_addr()?
    );
    let stop = shutdown_signal::shutdown_signal()?;
    serve(listener, async move {
        let _ = stop.await;
    })
    .await;
    Ok(())
}
