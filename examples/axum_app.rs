//! The registry's SSE, WebSocket, hub and ws-wrapper RPC handlers mounted in an axum app, next to ordinary axum routes and axum's own middleware.
//!
//! ```text
//! cargo run -p examples --example axum_app -- 127.0.0.1:3000
//! curl -N localhost:3000/events &           # SSE (topic "hub")
//! curl -d 'hello' localhost:3000/say        # to SSE and every /ws client
//! ```
//!
//! Every registry handler is a `tower::Service` over any body, so
//! `route_service` mounts it; upgrades use hyper's upgrade extension under
//! axum. A registry `Middleware` is a `tower::Layer` (`http_logger_middleware`
//! below). The server's [`Shutdown`] goes into every request with axum's
//! `Extension` layer: when SIGINT or SIGTERM arrives, SSE streams end and
//! WebSockets close with `1001`, so `with_graceful_shutdown` finishes; the
//! drain is bounded by [`DRAIN`] all the same.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use axum::extract::State;
use axum::routing::{get, post};
use axum::{Extension, Json, Router};
use http_types::Shutdown;
use rt_publish::rt_publish;
use sse_broker::{BrokerConfig, SseBroker};
use sse_event::SseEvent;
use sse_handler::{SseConfig, sse_handler};
use ws_broadcast::ws_broadcast;
use ws_control::{ControlConfig, control_hooks};
use ws_handler::{WsConfig, ws_handler};
use ws_hub::{HubConfig, WsHub};
use ws_wrapper_server::{WrapperConfig, WrapperError, WrapperServer};

/// How long connections get to finish after the shutdown signal.
pub const DRAIN: Duration = Duration::from_secs(5);

/// What the routes share.
#[derive(Debug, Clone)]
pub struct AppState {
    /// SSE topics of `/events`.
    pub broker: SseBroker,
    /// Clients of `/ws`.
    pub hub: WsHub,
}

/// The app: axum routes and the registry's handlers in one `Router`.
pub fn router(state: AppState, shutdown: Shutdown) -> Router {
    let events = sse_handler(state.broker.clone(), SseConfig::default());
    let ws = {
        let hub = state.hub.clone();
        ws_handler(
            state.hub.clone(),
            WsConfig {
                // Every text message goes to every client of /ws.
                on_message: Some(Arc::new(move |_client, msg| {
                    if msg.is_text() {
                        ws_broadcast(&hub, msg);
                    }
                })),
                ..WsConfig::default()
            },
        )
    };
    let rooms = WsHub::new(HubConfig::default());
    let (on_connect, on_message) = control_hooks(
        rooms.clone(),
        ControlConfig {
            guard: Some(Arc::new(|_client, room: &str| room.starts_with("public-"))),
            ..ControlConfig::default()
        },
        None,
        None,
    );
    let hub = ws_handler(
        rooms,
        WsConfig {
            on_connect: Some(on_connect),
            on_message: Some(on_message),
            ..WsConfig::default()
        },
    );
    let rpc = WrapperServer::new(WsHub::new(HubConfig::default()), WrapperConfig::default());
    rpc.on("add", |_ctx, (a, b): (f64, f64)| async move {
        Ok::<_, WrapperError>(a + b)
    });
    Router::new()
        .route("/", get(|| async { "an axum app with real-time routes\n" }))
        .route("/health", get(health))
        .route("/say", post(say))
        .route_service("/events", events)
        .route_service("/ws", ws)
        .route_service("/hub", hub)
        .route_service("/rpc", rpc.handler(WsConfig::default()))
        // axum's own middleware, then a registry middleware as a tower layer.
        .layer(axum::middleware::from_fn(
            |req, next: axum::middleware::Next| async move {
                let mut res = next.run(req).await;
                res.headers_mut().insert(
                    "x-served-by",
                    http_types::http::HeaderValue::from_static("axum"),
                );
                res
            },
        ))
        .layer(http_logger_middleware::http_logger_middleware())
        .layer(Extension(shutdown))
        .with_state(state)
}

/// `GET /health`: `/ws` clients, and the messages sends wrote to their
/// sockets directly (plain TCP under axum, as under `http_serve`).
async fn health(State(state): State<AppState>) -> Json<serde_json::Value> {
    Json(serde_json::json!({
        "ws_clients": state.hub.len(),
        "ws_written_directly": state.hub.stats().direct,
    }))
}

/// `POST /say`: the body to SSE topic `hub` and to every `/ws` client.
async fn say(
    State(state): State<AppState>,
    body: String,
) -> (http_types::http::StatusCode, String) {
    match rt_publish(&state.broker, &state.hub, "hub", SseEvent::data(body)) {
        Ok(done) => (
            http_types::http::StatusCode::ACCEPTED,
            format!("id {} to {} WebSocket clients\n", done.id, done.ws.sent),
        ),
        Err(e) => (http_types::http::StatusCode::BAD_REQUEST, format!("{e}\n")),
    }
}

/// Serves the app on `listener` until `stop` completes, then drains for at most [`DRAIN`].
pub async fn serve(
    listener: tokio::net::TcpListener,
    stop: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let state = AppState {
        broker: SseBroker::new(BrokerConfig::default()),
        hub: WsHub::new(HubConfig::default()),
    };
    let shutdown = Shutdown::new();
    let app = router(state, shutdown.clone());
    let signal = {
        let shutdown = shutdown.clone();
        async move {
            stop.await;
            shutdown.trigger(); // SSE streams end, WebSockets get 1001
        }
    };
    let server = axum::serve(listener, app).with_graceful_shutdown(signal);
    tokio::select! {
        done = server => done,
        () = async { shutdown.wait().await; tokio::time::sleep(DRAIN).await } => Ok(()),
    }
}

#[allow(dead_code)] // a binary's entry point; the tests call `serve`
#[tokio::main]
async fn main() -> std::io::Result<()> {
    let addr = std::env::args()
        .nth(1)
        .unwrap_or_else(|| "127.0.0.1:3000".into());
    let listener = tokio::net::TcpListener::bind(&addr).await?;
    println!("listening on http://{}", listener.local_addr()?);
    let stop = shutdown_signal::shutdown_signal()?;
    serve(listener, async move {
        let _ = stop.await;
    })
    .await
}
