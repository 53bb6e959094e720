//! A demo to watch the registry's real-time functions work: a chat with rooms over WebSocket and a live SSE dashboard of the server's own figures that resumes with `Last-Event-ID`.
//!
//! `cargo run --release --bin realtime-demo`, then open <http://127.0.0.1:8080>.
//! One page, two panels:
//!
//! - **Chat**: pick a name, join a room, leave it, say something to the
//!   room (only its members get it), and see who is here, updated on every
//!   join and leave.
//! - **Dashboard**: the server's own figures, one SSE event a second:
//!   connections (WebSocket and SSE), rooms, messages per second, slow-client
//!   drops, memory (RSS from `/proc/self/statm` on Linux, `n/a` elsewhere).
//!   The *drop* button closes the stream and reopens it three seconds later
//!   from the last id it got; the page lists the ids it received, marks the
//!   replayed ones and flags any gap.
//!
//! | route | what |
//! |---|---|
//! | `GET /`, `/app.js`, `/style.css`, `/favicon.svg` | the page (plain HTML, CSS, JS and SVG in `assets/`, embedded with `include_str!`) |
//! | `GET /chat?name=NAME` | WebSocket: the control protocol of `ws_control` (`subscribe`, `unsubscribe`, `ping`) and `{"type":"say","room":R,"text":T}` |
//! | `GET /events` | SSE: topic `dashboard`, event `stats` every [`DemoConfig::interval`], `Last-Event-ID` (or `?lastEventId=`) resume |
//!
//! What the chat client receives: `ws_event` envelopes `{type, data,
//! timestamp}`: `connection.established`, `subscribed`, `unsubscribed` and
//! `error` (the control protocol's), `message {room, from, client, text}`
//! and `members {room, count, members: [{name, client}]}`.
//!
//! # How it is built
//!
//! Only from registry functions; this crate holds the glue and the page.
//!
//! - `http_serve` serves; `http_router` routes; `http_types` makes the
//!   static responses.
//! - `ws_handler` runs the WebSockets of one `ws_hub` hub, with its origin
//!   check (same host only, `ws_upgrader`'s default), its message size and
//!   rate limits, and an identify hook that takes the name from `?name=`.
//! - `ws_control`'s hooks answer the control protocol: `subscribe` and
//!   `unsubscribe` go through its room guard to `ws_room_join` and
//!   `ws_room_leave`. A chat message goes to its room with `ws_emit`; errors
//!   go back with `ws_send`.
//! - "Who is here": the hub's membership hook (`ws_hub::Membership`) tells a
//!   task of each join and leave (connections that end included); the task
//!   re-reads the room and emits `members` to it with `ws_emit`.
//! - `sse_broker` gives each dashboard event its id and keeps the last
//!   [`DemoConfig::replay`] for resume; `sse_handler` serves them, with
//!   `sse_keepalive`'s ticker; `name_validate` checks names and rooms.
//! - The figures are the crates' own counters: `WsHub::stats`,
//!   `WsStats` (`ws_handler`), `SseBroker::stats`.
//!
//! # Limits
//!
//! Names of at most [`MAX_NAME_CHARS`] characters, rooms of at most
//! [`MAX_ROOM_CHARS`], messages of at most [`MAX_TEXT_CHARS`];
//! WebSocket messages of at most [`MAX_MESSAGE_BYTES`], [`MESSAGE_RATE`]
//! per connection, [`MAX_ROOMS`] rooms per connection. Bad input gets an
//! `error` event (or `400` before the upgrade); the connection stays open.
//!
//! # Example
//!
//! ```no_run
//! # async fn run() -> std::io::Result<()> {
//! let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
//! realtime_demo::serve(listener, realtime_demo::DemoConfig::default(), std::future::pending()).await;
//! # Ok(())
//! # }
//! ```

use std::collections::BTreeSet;
use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use http_router::http_router;
use http_serve::{ServeConfig, ServeStats, http_serve};
use http_types::http::{HeaderValue, StatusCode, header};
use http_types::{Handler, Request, Response, Route, query_values, text};
use name_validate::{NameKind, name_validate};
use serde_json::{Value, json};
use sse_broker::{BrokerConfig, SseBroker};
use sse_event::SseEvent;
use sse_handler::{SseConfig, sse_handler};
use tokio::net::TcpListener;
use ws_control::{ControlConfig, control_hooks};
use ws_emit::ws_emit;
use ws_event::{Event, Target, types};
use ws_handler::{Message, MessageRate, Refusal, WsConfig, WsStats, identify, ws_handler};
use ws_hub::{HubConfig, Identity, Membership, WsClient, WsHub};
use ws_send::ws_send;

/// The SSE topic of the dashboard (the only one `/events` serves).
pub const DASHBOARD_TOPIC: &str = "dashboard";
/// The SSE event type of a dashboard update.
pub const STATS_EVENT: &str = "stats";
/// Longest name, in characters.
pub const MAX_NAME_CHARS: usize = 32;
/// Longest room name, in characters.
pub const MAX_ROOM_CHARS: usize = 32;
/// Longest chat message, in characters.
pub const MAX_TEXT_CHARS: usize = 500;
/// Largest WebSocket message a client may send (larger closes with `1009`).
pub const MAX_MESSAGE_BYTES: usize = 16 << 10;
/// Rooms one connection may be in at once.
pub const MAX_ROOMS: usize = 8;
/// Messages one connection may send: 20 a second, bursts of 40 (more closes with `1008`).
pub const MESSAGE_RATE: MessageRate = MessageRate {
    per_second: 20.0,
    burst: 40,
};
/// Most members a `members` event lists (`count` is the whole room).
pub const MAX_LISTED_MEMBERS: usize = 100;
/// Most rooms a dashboard update lists (`rooms.count` is all of them).
pub const MAX_LISTED_ROOMS: usize = 10;

const INDEX_HTML: &str = include_str!("../assets/index.html");
const APP_JS: &str = include_str!("../assets/app.js");
const STYLE_CSS: &str = include_str!("../assets/style.css");
const FAVICON_SVG: &str = include_str!("../assets/favicon.svg");

/// Settings of the demo; every field has a default.
#[derive(Debug, Clone)]
pub struct DemoConfig {
    /// Time between two dashboard updates. Default: 1 second.
    pub interval: Duration,
    /// Dashboard events kept for resume. Default: 600 (ten minutes at one a second).
    pub replay: usize,
    /// Open WebSocket connections; more get `503`. Default:
    /// [`ws_handler::default_max_connections`] (from the open-file limit).
    pub max_connections: usize,
}

impl Default for DemoConfig {
    fn default() -> Self {
        DemoConfig {
            interval: Duration::from_secs(1),
            replay: 600,
            max_connections: ws_handler::default_max_connections(),
        }
    }
}

/// Serves the demo on `listener` until `stop` completes, then drains
/// (`http_serve`'s defaults); returns what `http_serve` counted.
pub async fn serve(
    listener: TcpListener,
    config: DemoConfig,
    stop: impl Future<Output = ()> + Send,
) -> ServeStats {
    let changed = Arc::new(Changed::default());
    let hub = WsHub::new(HubConfig {
        max_rooms: MAX_ROOMS,
        ..HubConfig::default()
    });
    // Before any client registers: told of every join and leave, including
    // the rooms a closed connection was in. It must not block: it marks the
    // room (a set, bounded by the rooms there are) and wakes the announcer.
    {
        let changed = changed.clone();
        hub.set_membership_hook(Arc::new(move |change: Membership<'_>| {
            if let Membership::Joined { room, .. } | Membership::Left { room, .. } = change {
                changed.mark(room);
            }
        }));
    }
    let broker = SseBroker::new(BrokerConfig {
        replay: config.replay,
        ..BrokerConfig::default()
    });
    let counters = Counters::default();
    let handler = app(&hub, &broker, &counters, &config);
    let members = tokio::spawn(announce_members(hub.clone(), changed));
    let dashboard = tokio::spawn(dashboard(
        hub.clone(),
        broker.clone(),
        counters,
        config.interval,
    ));
    let stats = http_serve(listener, handler, stop, ServeConfig::default()).await;
    dashboard.abort();
    members.abort();
    stats
}

/// Counters the crates do not keep: messages read (`ws_handler`'s) and chat messages said.
#[derive(Debug, Clone, Default)]
struct Counters {
    ws: WsStats,
    said: Arc<AtomicU64>,
}

/// Every route.
fn app(hub: &WsHub, broker: &SseBroker, counters: &Counters, config: &DemoConfig) -> Handler {
    let events = sse_handler(
        broker.clone(),
        SseConfig {
            default_topics: vec![DASHBOARD_TOPIC.into()],
            guard: Some(Arc::new(dashboard_only)),
            retry: Some(Duration::from_secs(1)),
            queue: 64,
            max_topics: 1,
            ..SseConfig::default()
        },
    );
    http_router(vec![
        Route::get("/", asset(INDEX_HTML, "text/html; charset=utf-8")),
        Route::get("/app.js", asset(APP_JS, "text/javascript; charset=utf-8")),
        Route::get("/style.css", asset(STYLE_CSS, "text/css; charset=utf-8")),
        Route::get("/favicon.svg", asset(FAVICON_SVG, "image/svg+xml")),
        Route::get("/chat", chat(hub, counters, config)),
        Route::get("/events", events),
    ])
    .expect("the routes are valid")
}

/// The SSE topic guard: the dashboard's topic, nothing else (`400`).
#[allow(clippy::result_large_err)] // the refusal is the response
fn dashboard_only(_req: &Request, topics: Vec<String>) -> Result<Vec<String>, Response> {
    if topics.iter().all(|t| t == DASHBOARD_TOPIC) {
        Ok(topics)
    } else {
        Err(text(
            StatusCode::BAD_REQUEST,
            format!("the only topic here is {DASHBOARD_TOPIC}\n"),
        ))
    }
}

/// `/chat`: the name from `?name=`, the control protocol with a guard that
/// takes any valid room, and `say`.
fn chat(hub: &WsHub, counters: &Counters, config: &DemoConfig) -> Handler {
    let control = ControlConfig {
        guard: Some(Arc::new(|_client: &WsClient, room: &str| {
            check_room(room).is_ok()
        })),
        ..ControlConfig::default()
    };
    let say = {
        let (hub, said) = (hub.clone(), counters.said.clone());
        Arc::new(move |client: &WsClient, msg: Message| say(&hub, &said, client, &msg))
    };
    let (on_connect, on_message) = control_hooks(hub.clone(), control, None, Some(say));
    ws_handler(
        hub.clone(),
        WsConfig {
            max_connections: config.max_connections,
            max_message_size: MAX_MESSAGE_BYTES,
            max_frame_size: MAX_MESSAGE_BYTES,
            message_rate: Some(MESSAGE_RATE),
            identify: Some(identify(|req: &Request| {
                let name = req
                    .uri()
                    .query()
                    .and_then(|q| query_values(q, "name").next())
                    .unwrap_or_default();
                let identity = check_name(&name)
                    .map(Identity::user)
                    .map_err(|why| text(StatusCode::BAD_REQUEST, format!("{why}\n")));
                std::future::ready(identity)
            })),
            on_connect: Some(on_connect),
            on_message: Some(on_message),
            stats: counters.ws.clone(),
            ..WsConfig::default()
        },
    )
}

/// A static asset, with headers that keep the page to this origin.
fn asset(body: &'static str, content_type: &'static str) -> Handler {
    Handler::new(move |_req: Request| {
        let mut res = text(StatusCode::OK, body);
        let headers = res.headers_mut();
        headers.insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
        headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
        headers.insert(
            header::X_CONTENT_TYPE_OPTIONS,
            HeaderValue::from_static("nosniff"),
        );
        headers.insert(
            header::CONTENT_SECURITY_POLICY,
            HeaderValue::from_static(
                "default-src 'self'; connect-src 'self'; base-uri 'none'; frame-ancestors 'none'",
            ),
        );
        std::future::ready(res)
    })
}

/// A name as the chat shows it: trimmed, 1 to [`MAX_NAME_CHARS`]
/// characters, no control character.
pub fn check_name(name: &str) -> Result<String, String> {
    let name = name.trim();
    if name.is_empty() {
        return Err("pick a name: /chat?name=NAME".into());
    }
    if name.chars().count() > MAX_NAME_CHARS {
        return Err(format!("names are at most {MAX_NAME_CHARS} characters"));
    }
    name_validate(NameKind::User, name).map_err(|e| e.to_string())?;
    Ok(name.to_string())
}

/// A room name: 1 to [`MAX_ROOM_CHARS`] characters, no control character,
/// no space at either end.
pub fn check_room(room: &str) -> Result<(), String> {
    if room.trim() != room {
        return Err("room names do not start or end with a space".into());
    }
    if room.chars().count() > MAX_ROOM_CHARS {
        return Err(format!(
            "room names are at most {MAX_ROOM_CHARS} characters"
        ));
    }
    name_validate(NameKind::Room, room).map_err(|e| e.to_string())
}

/// A chat message: `{"type":"say","room":R,"text":T}`, `T` trimmed, 1 to
/// [`MAX_TEXT_CHARS`] characters. Returns the room and the text, or why not.
pub fn parse_say(msg: &Message) -> Result<(String, String), String> {
    const SHAPE: &str = r#"expected {"type":"say","room":ROOM,"text":TEXT}"#;
    let Message::Text(text) = msg else {
        return Err(format!("{SHAPE} as a text message"));
    };
    let Ok(value) = serde_json::from_str::<Value>(text) else {
        return Err(SHAPE.into());
    };
    let (Some("say"), Some(room), Some(said)) = (
        value.get("type").and_then(Value::as_str),
        value.get("room").and_then(Value::as_str),
        value.get("text").and_then(Value::as_str),
    ) else {
        return Err(SHAPE.into());
    };
    let said = said.trim();
    if said.is_empty() {
        return Err("say something: the text is empty".into());
    }
    if said.chars().count() > MAX_TEXT_CHARS {
        return Err(format!("messages are at most {MAX_TEXT_CHARS} characters"));
    }
    Ok((room.to_string(), said.to_string()))
}

/// `say` from a member of its room: `message {room, from, client, text}`
/// to the room; anything else: an `error` event to the sender.
fn say(hub: &WsHub, said: &AtomicU64, client: &WsClient, msg: &Message) {
    let refusal = match parse_say(msg) {
        Ok((room, text)) if hub.is_member(client, &room) => {
            let data = json!({
                "room": room,
                "from": client.user(),
                "client": client.id().to_string(),
                "text": text,
            });
            ws_emit(hub, &Event::new("message", data), &Target::rooms([room]));
            said.fetch_add(1, Ordering::Relaxed);
            return;
        }
        Ok((room, _)) => json!({ "message": format!("join room '{room}' first"), "room": room }),
        Err(why) => json!({ "message": why }),
    };
    let _ = ws_send(
        client,
        Message::text(Event::new(types::ERROR, refusal).to_json()),
    );
}

/// Tells each room whose members changed who is in it now: `members` to
/// the room. Changes that came meanwhile are folded into one event per
/// room, read after them, so the last event a room gets is its state now.
/// Rooms whose members changed since the announcer last looked.
#[derive(Default)]
struct Changed {
    rooms: std::sync::Mutex<BTreeSet<String>>,
    wake: tokio::sync::Notify,
}

impl Changed {
    fn mark(&self, room: &str) {
        let mut rooms = self.rooms.lock().unwrap_or_else(|e| e.into_inner());
        if !rooms.contains(room) {
            rooms.insert(room.to_string());
        }
        drop(rooms);
        self.wake.notify_one();
    }

    /// The rooms marked since the last call, once there is one.
    async fn take(&self) -> BTreeSet<String> {
        loop {
            let rooms = std::mem::take(&mut *self.rooms.lock().unwrap_or_else(|e| e.into_inner()));
            if !rooms.is_empty() {
                return rooms;
            }
            self.wake.notified().await;
        }
    }
}

async fn announce_members(hub: WsHub, changed: Arc<Changed>) {
    loop {
        for room in changed.take().await {
            let mut members: Vec<(String, u64)> = Vec::new();
            hub.for_each_in(&[], std::slice::from_ref(&room), &[], |c| {
                members.push((c.user().unwrap_or_default().to_string(), c.id()));
            });
            if members.is_empty() {
                continue;
            }
            members.sort();
            let count = members.len();
            let listed: Vec<Value> = members
                .into_iter()
                .take(MAX_LISTED_MEMBERS)
                .map(|(name, id)| json!({ "name": name, "client": id.to_string() }))
                .collect();
            let data = json!({ "room": room, "count": count, "members": listed });
            ws_emit(&hub, &Event::new("members", data), &Target::rooms([room]));
        }
    }
}

/// The counters a dashboard update is computed from, read at one moment.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Totals {
    /// Open WebSocket connections.
    pub ws_connections: usize,
    /// Open SSE streams.
    pub sse_connections: usize,
    /// Rooms with at least one member.
    pub rooms: usize,
    /// Chat messages said, ever.
    pub said: u64,
    /// WebSocket messages read from clients, ever.
    pub ws_in: u64,
    /// WebSocket messages queued for clients, ever.
    pub ws_out: u64,
    /// SSE events queued on streams, ever.
    pub sse_out: u64,
    /// WebSocket clients closed because their outbox was full.
    pub ws_slow_closed: u64,
    /// WebSocket clients dropped because a write made no progress.
    pub ws_write_timeouts: u64,
    /// SSE streams ended because their queue was full.
    pub sse_slow_dropped: u64,
}

/// One dashboard update, as JSON: the figures now and the rates since `before`.
pub fn figures(
    before: &Totals,
    now: &Totals,
    elapsed: Duration,
    rooms: &[(String, usize)],
    rss_bytes: Option<u64>,
    uptime: Duration,
) -> Value {
    let secs = elapsed.as_secs_f64().max(1e-3);
    let rate = |a: u64, b: u64| (b.saturating_sub(a) as f64 / secs * 10.0).round() / 10.0;
    let top: Vec<Value> = rooms
        .iter()
        .take(MAX_LISTED_ROOMS)
        .map(|(room, members)| json!({ "room": room, "members": members }))
        .collect();
    json!({
        "uptime_ms": u64::try_from(uptime.as_millis()).unwrap_or(u64::MAX),
        "connections": { "ws": now.ws_connections, "sse": now.sse_connections },
        "rooms": { "count": now.rooms, "top": top },
        "messages_per_second": {
            "chat": rate(before.said, now.said),
            "ws_in": rate(before.ws_in, now.ws_in),
            "ws_out": rate(before.ws_out, now.ws_out),
            "sse_out": rate(before.sse_out, now.sse_out),
        },
        "drops": {
            "ws_slow_closed": now.ws_slow_closed,
            "ws_write_timeouts": now.ws_write_timeouts,
            "sse_slow_dropped": now.sse_slow_dropped,
        },
        "rss_bytes": rss_bytes,
    })
}

/// Publishes a dashboard update every `interval`, forever.
async fn dashboard(hub: WsHub, broker: SseBroker, counters: Counters, interval: Duration) {
    let started = Instant::now();
    let read = || {
        let (h, b) = (hub.stats(), broker.stats());
        Totals {
            ws_connections: h.connections,
            sse_connections: b.subscribers,
            rooms: 0,
            said: counters.said.load(Ordering::Relaxed),
            ws_in: counters.ws.received(),
            ws_out: h.sent,
            sse_out: b.delivered,
            ws_slow_closed: h.slow_closed,
            ws_write_timeouts: counters.ws.refused(Refusal::WriteTimeout),
            sse_slow_dropped: b.slow_dropped,
        }
    };
    let mut ticks = tokio::time::interval(interval);
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let (mut before, mut at) = (read(), Instant::now());
    loop {
        ticks.tick().await;
        let rooms = hub.rooms();
        let mut busiest: Vec<(String, usize)> = rooms.into_iter().collect();
        busiest.sort_by(|a, b| b.1.cmp(&a.1).then_with(|| a.0.cmp(&b.0)));
        let now = Totals {
            rooms: busiest.len(),
            ..read()
        };
        let taken = Instant::now();
        let data = figures(
            &before,
            &now,
            taken - at,
            &busiest,
            rss_bytes(),
            started.elapsed(),
        );
        let mut event = SseEvent::data(data.to_string());
        event.event = Some(STATS_EVENT.into());
        if let Err(e) = broker.publish(DASHBOARD_TOPIC, event) {
            eprintln!("realtime-demo: dashboard update not published: {e}");
        }
        (before, at) = (now, taken);
    }
}

/// The resident set size of this process, in bytes: `/proc/self/statm`'s
/// second field (pages) times the page size; `None` where there is no
/// such file (not Linux).
pub fn rss_bytes() -> Option<u64> {
    #[cfg(target_os = "linux")]
    {
        let statm = std::fs::read_to_string("/proc/self/statm").ok()?;
        let pages = resident_pages(&statm)?;
        let page = u64::try_from(rustix::param::page_size()).ok()?;
        Some(pages.saturating_mul(page))
    }
    #[cfg(not(target_os = "linux"))]
    {
        None
    }
}

/// The resident pages of a `/proc/PID/statm` line (its second field).
pub fn resident_pages(statm: &str) -> Option<u64> {
    statm.split_whitespace().nth(1)?.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_trimmed_bounded_and_printable() {
        assert_eq!(check_name("  ana ").unwrap(), "ana");
        assert!(check_name("   ").unwrap_err().contains("pick a name"));
        assert!(check_name(&"é".repeat(MAX_NAME_CHARS)).is_ok());
        assert!(check_name(&"é".repeat(MAX_NAME_CHARS + 1)).is_err());
        assert!(check_name("a\u{7}b").is_err());
    }

    #[test]
    fn rooms_are_bounded_and_printable() {
        assert!(check_room("lobby").is_ok());
        assert!(check_room("").is_err());
        assert!(check_room(" lobby").is_err());
        assert!(check_room(&"r".repeat(MAX_ROOM_CHARS + 1)).is_err());
        assert!(check_room("a\nb").is_err());
    }

    #[test]
    fn say_is_parsed_or_refused_with_a_reason() {
        let say = |s: &str| parse_say(&Message::text(s));
        assert_eq!(
            say(r#"{"type":"say","room":"A","text":" hi "}"#).unwrap(),
            ("A".to_string(), "hi".to_string())
        );
        for bad in [
            "",
            "not json",
            "[1,2]",
            r#"{"type":"say","room":"A"}"#,
            r#"{"type":"say","room":7,"text":"x"}"#,
            r#"{"type":"shout","room":"A","text":"x"}"#,
        ] {
            assert!(say(bad).unwrap_err().starts_with("expected"), "{bad}");
        }
        assert!(say(r#"{"type":"say","room":"A","text":"  "}"#).is_err());
        let long = "x".repeat(MAX_TEXT_CHARS + 1);
        let too_long = format!(r#"{{"type":"say","room":"A","text":"{long}"}}"#);
        assert!(say(&too_long).unwrap_err().contains("at most"));
        assert!(parse_say(&Message::binary(vec![1u8, 2])).is_err());
    }

    #[test]
    fn figures_give_rates_per_second_and_null_memory_when_unknown() {
        let before = Totals {
            said: 10,
            ws_out: 100,
            ..Totals::default()
        };
        let now = Totals {
            ws_connections: 3,
            sse_connections: 2,
            rooms: 2,
            said: 15,
            ws_out: 130,
            sse_slow_dropped: 1,
            ..Totals::default()
        };
        let rooms = [("A".to_string(), 2), ("B".to_string(), 1)];
        let f = figures(
            &before,
            &now,
            Duration::from_secs(2),
            &rooms,
            None,
            Duration::from_secs(9),
        );
        assert_eq!(f["connections"], json!({ "ws": 3, "sse": 2 }));
        assert_eq!(f["messages_per_second"]["chat"], json!(2.5));
        assert_eq!(f["messages_per_second"]["ws_out"], json!(15.0));
        assert_eq!(f["rooms"]["count"], json!(2));
        assert_eq!(f["rooms"]["top"][0], json!({ "room": "A", "members": 2 }));
        assert_eq!(f["drops"]["sse_slow_dropped"], json!(1));
        assert_eq!(f["rss_bytes"], Value::Null);
        assert_eq!(f["uptime_ms"], json!(9000));
    }

    #[test]
    fn statm_gives_resident_pages() {
        assert_eq!(resident_pages("1000 250 100 10 0 300 0\n"), Some(250));
        assert_eq!(resident_pages("1000"), None);
        assert_eq!(resident_pages(""), None);
    }

    #[cfg(target_os = "linux")]
    #[test]
    fn rss_is_read_on_linux() {
        let rss = rss_bytes().expect("/proc/self/statm");
        assert!(rss > 0 && rss.is_multiple_of(4096), "{rss}");
    }
}
