//! A chat with rooms over WebSocket, built from registry functions: `http_serve`, `http_router`, `ws_handler`, `ws_control` (join and leave) and `ws_emit` (to a room).
//!
//! ```text
//! cargo run -p examples --example chat -- 127.0.0.1:3001
//! websocat ws://127.0.0.1:3001/chat
//! {"type":"subscribe","room":"lobby"}       -> {"type":"subscribed",...}
//! {"room":"lobby","text":"hi"}              -> every member of lobby: {"type":"message","data":{...}}
//! curl 127.0.0.1:3001/rooms                 -> {"lobby":1}
//! ```
//!
//! Any valid room name may be joined (`ws_control`'s guard); a message goes
//! to its room only if the sender is a member.

use std::future::Future;
use std::sync::Arc;

use http_router::http_router;
use http_serve::{ServeConfig, http_serve};
use http_types::http::StatusCode;
use http_types::{Handler, Request, Route, json};
use ws_control::{ControlConfig, control_hooks};
use ws_emit::ws_emit;
use ws_event::{Event, Target};
use ws_handler::{Message, WsConfig, ws_handler};
use ws_hub::{HubConfig, WsClient, WsHub};

/// The routes: `GET /chat` (WebSocket) and `GET /rooms` (members per room, JSON).
pub fn app(hub: WsHub) -> Handler {
    let (on_connect, on_message) = control_hooks(
        hub.clone(),
        ControlConfig {
            guard: Some(Arc::new(|_client, _room: &str| true)),
            ..ControlConfig::default()
        },
        None,
        Some({
            let hub = hub.clone();
            Arc::new(move |client: &WsClient, msg: Message| say(&hub, client, &msg))
        }),
    );
    let chat = ws_handler(
        hub.clone(),
        WsConfig {
            on_connect: Some(on_connect),
            on_message: Some(on_message),
            ..WsConfig::default()
        },
    );
    let rooms = Handler::new(move |_req: Request| {
        let rooms = hub.rooms();
        async move { json(StatusCode::OK, &rooms) }
    });
    http_router(vec![Route::get("/chat", chat), Route::get("/rooms", rooms)])
        .expect("the routes are valid")
}

/// `{"room": R, "text": T}` from a member of `R`: `message {room, from, text}` to the room.
fn say(hub: &WsHub, client: &WsClient, msg: &Message) {
    let Ok(text) = msg.to_text() else { return };
    let Ok(said) = serde_json::from_str::<serde_json::Value>(text) else {
        return;
    };
    let (Some(room), Some(text)) = (said["room"].as_str(), said["text"].as_str()) else {
        return;
    };
    if hub.is_member(client, room) {
        let data = serde_json::json!({ "room": room, "from": client.id(), "text": text });
        ws_emit(hub, &Event::new("message", data), &Target::rooms([room]));
    }
}

/// Serves the chat on `listener` until `stop` completes.
pub async fn serve(listener: tokio::net::TcpListener, stop: impl Future<Output = ()> + Send) {
    let hub = WsHub::new(HubConfig::default());
    http_serve(listener, app(hub), stop, ServeConfig::default()).await;
}

#[allow(dead_code)] // a binary's entry point; the tests call `serve`
#[tokio::main]
async fn main() -> std::io::Result<()> {
    let addr = std::env::args()
        .nth(1)
        .unwrap_or_else(|| "127.0.0.1:3001".into());
    let listener = tokio::net::TcpListener::bind(&addr).await?;
    println!("chat on ws://{}/chat", listener.local_addr()?);
    let stop = shutdown_signal::shutdown_signal()?;
    serve(listener, async move {
        let _ = stop.await;
    })
    .await;
    Ok(())
}
