//! Answers the hub's control protocol on text frames before the app sees them: ping, subscribe through a room guard, unsubscribe, authenticate.
//!
//! The protocol is nexus's, JSON text frames answered with [`Event`]s:
//!
//! | client sends | server answers |
//! |---|---|
//! | `{"type":"ping"}` | `pong {timestamp}` |
//! | `{"type":"subscribe","room":"r"}` | `subscribed {room}` if [`ControlConfig::guard`] allows it (once the join is complete: see [`ControlConfig::join`]), else `error {message, room}` |
//! | `{"type":"unsubscribe","room":"r"}` | `unsubscribed {room}` (also when not subscribed; see [`ControlConfig::leave`]) |
//! | `{"type":"authenticate", ...}` | `authenticated {userId, status}`: the identity the server established |
//! | (on connect) | `connection.established {clientId, userId}` |
//!
//! The holes nexus had to fix are closed by construction:
//!
//! - **Identity comes from the server only** (`ws_handler`'s identify hook on
//!   the upgrade request). `authenticate` reports it; whatever user id the
//!   message claims is ignored, it cannot set or change the identity.
//! - **No guard, no rooms**: without a [`RoomGuard`] every `subscribe` is
//!   refused with an `error` event.
//! - **Malformed control messages** (a `subscribe` without a string `room`,
//!   an invalid room name) get an `error` event; the connection stays open.
//!
//! Text that is not a JSON object with one of these `type`s (other JSON, or
//! not JSON at all) is not a control message: it goes to the app's message
//! hook unchanged, as do binary messages. [`ControlConfig::enabled`] set to
//! false turns the protocol off.
//!
//! # Example
//!
//! ```
//! use std::sync::Arc;
//! use ws_control::{control_hooks, ControlConfig};
//! use ws_handler::{ws_handler, WsConfig};
//! use ws_hub::{HubConfig, WsHub};
//!
//! let hub = WsHub::new(HubConfig::default());
//! let control = ControlConfig {
//!     guard: Some(Arc::new(|_client, room: &str| room.starts_with("public-"))),
//!     ..ControlConfig::default()
//! };
//! let (on_connect, on_message) = control_hooks(hub.clone(), control, None, None);
//! let handler = ws_handler(hub, WsConfig { on_connect: Some(on_connect), on_message: Some(on_message), ..WsConfig::default() });
//! # let _ = handler;
//! ```

use std::borrow::Cow;
use std::sync::Arc;

use serde::Deserialize;
use serde_json::{Value, json};
use ws_event::{Event, types};
use ws_handler::{ConnectHook, MessageHook};
/// The message type of the signature, re-exported (see `ws_hub::Message`).
pub use ws_hub::Message;
use ws_hub::{WsClient, WsHub};
use ws_room_join::{JoinError, ws_room_join};
use ws_room_leave::ws_room_leave;
use ws_send::ws_send;

/// Decides whether `client` may join `room`.
pub type RoomGuard = Arc<dyn Fn(&WsClient, &str) -> bool + Send + Sync>;

/// Joins (or takes out of) a room for a `subscribe` the guard allowed (an
/// `unsubscribe`), instead of the plain hub's join (leave), and answers
/// through the [`RoomReply`]: at once, or once the change is complete (a
/// cluster answers once its node receives what every node sends to the
/// room). The room is [`RoomReply::room`].
pub type RoomHook = Arc<dyn Fn(&WsClient, RoomReply) + Send + Sync>;

/// The answer to one `subscribe` or `unsubscribe`, sent when a
/// [`RoomHook`] calls [`send`](RoomReply::send), from any thread.
/// Dropped unsent, it answers with an `error` event naming the room.
#[derive(Debug)]
pub struct RoomReply {
    client: WsClient,
    room: String,
    subscribe: bool,
    sent: bool,
}

impl RoomReply {
    fn new(client: &WsClient, room: String, subscribe: bool) -> Self {
        RoomReply {
            client: client.clone(),
            room,
            subscribe,
            sent: false,
        }
    }

    /// The room.
    pub fn room(&self) -> &str {
        &self.room
    }

    /// Sends `subscribed {room}` (`unsubscribed {room}`) for `Ok`, an
    /// `error {message, room}` for `Err`.
    pub fn send(mut self, result: Result<(), JoinError>) {
        self.answer(result.map_err(|e| e.to_string()));
    }

    fn answer(&mut self, result: Result<(), String>) {
        self.sent = true;
        let answer = match result {
            Ok(()) if self.subscribe => Event::new(types::SUBSCRIBED, json!({ "room": self.room })),
            Ok(()) => Event::new(types::UNSUBSCRIBED, json!({ "room": self.room })),
            Err(why) => refused(&self.room, why),
        };
        let _ = ws_send(&self.client, Message::text(answer.to_json()));
    }
}

impl Drop for RoomReply {
    fn drop(&mut self) {
        if !self.sent {
            let why = format!("the server dropped the request for room '{}'", self.room);
            self.answer(Err(why));
        }
    }
}

/// Settings of the protocol; every field has a default.
#[derive(Clone)]
pub struct ControlConfig {
    /// Answer control messages. Default: true; false passes everything to the app.
    pub enabled: bool,
    /// Who may subscribe to which room. Default: none, so every subscribe is refused.
    pub guard: Option<RoomGuard>,
    /// Send `connection.established` on connect. Default: true.
    pub announce: bool,
    /// How an allowed `subscribe` joins the room and when it is answered
    /// (a cluster's join: once the node receives the room from every node,
    /// then the room's history). Default: none, `ws_room_join` and an
    /// answer at once.
    pub join: Option<RoomHook>,
    /// How an `unsubscribe` leaves the room and when it is answered (a
    /// cluster's leave: after the answers to the client's earlier
    /// subscribes). Default: none, `ws_room_leave` and an answer at once.
    pub leave: Option<RoomHook>,
    /// Awaited on connect before `connection.established` is sent (a
    /// cluster's `WsCluster::ready`: until the node receives what any node
    /// sends to the client's user); an `Err` closes the connection with that
    /// frame, as the connect hook's does. Default: none.
    pub ready: Option<ConnectHook>,
}

impl Default for ControlConfig {
    fn default() -> Self {
        ControlConfig {
            enabled: true,
            guard: None,
            announce: true,
            join: None,
            leave: None,
            ready: None,
        }
    }
}

impl std::fmt::Debug for ControlConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ControlConfig")
            .field("enabled", &self.enabled)
            .field("guard", &self.guard.is_some())
            .field("announce", &self.announce)
            .field("join", &self.join.is_some())
            .field("leave", &self.leave.is_some())
            .field("ready", &self.ready.is_some())
            .finish()
    }
}

/// A control message, parsed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Control {
    /// `{"type":"ping"}`.
    Ping,
    /// `{"type":"subscribe","room":R}`.
    Subscribe(String),
    /// `{"type":"unsubscribe","room":R}`.
    Unsubscribe(String),
    /// `{"type":"authenticate", ...}`; what it claims is ignored.
    Authenticate,
}

#[derive(Deserialize)]
struct Probe<'a> {
    #[serde(borrow, rename = "type")]
    kind: Option<Cow<'a, str>>,
    room: Option<Value>,
}

/// Parses `text`: `None` if it is not a control message (not a JSON object
/// with a control `type`), `Some(Err(why))` if it is one but malformed.
pub fn parse_control(text: &str) -> Option<Result<Control, String>> {
    // Only objects: serde would read `["ping"]` into the probe as well.
    if !text.trim_start().starts_with('{') {
        return None;
    }
    let probe: Probe<'_> = serde_json::from_str(text).ok()?;
    let kind = probe.kind?;
    let room = |verb: &str| match probe.room {
        Some(Value::String(r)) => Ok(r),
        _ => Err(format!("`{verb}` needs a string `room`")),
    };
    Some(match &*kind {
        "ping" => Ok(Control::Ping),
        "subscribe" => room("subscribe").map(Control::Subscribe),
        "unsubscribe" => room("unsubscribe").map(Control::Unsubscribe),
        "authenticate" => Ok(Control::Authenticate),
        _ => return None,
    })
}

/// Answers `msg` for `client` if it is a control message (and returns
/// `None`); gives it back untouched otherwise, for the app.
pub fn ws_control(
    hub: &WsHub,
    client: &WsClient,
    msg: Message,
    config: &ControlConfig,
) -> Option<Message> {
    if !config.enabled {
        return Some(msg);
    }
    let Message::Text(text) = &msg else {
        return Some(msg);
    };
    let Some(parsed) = parse_control(text) else {
        return Some(msg);
    };
    let answer = match parsed {
        Err(why) => Event::new(types::ERROR, json!({ "message": why })),
        Ok(Control::Ping) => Event::new(types::PONG, json!({ "timestamp": ws_event::now() })),
        Ok(Control::Subscribe(room)) => {
            if !config.guard.as_ref().is_some_and(|g| g(client, &room)) {
                refused(&room, format!("not allowed to join room '{room}'"))
            } else {
                let reply = RoomReply::new(client, room, true);
                match &config.join {
                    Some(join) => join(client, reply),
                    None => {
                        let joined = ws_room_join(hub, client, reply.room()).map(drop);
                        reply.send(joined);
                    }
                }
                return None;
            }
        }
        Ok(Control::Unsubscribe(room)) => {
            let reply = RoomReply::new(client, room, false);
            match &config.leave {
                Some(leave) => leave(client, reply),
                None => {
                    ws_room_leave(hub, client, reply.room());
                    reply.send(Ok(()));
                }
            }
            return None;
        }
        Ok(Control::Authenticate) => authenticated(client),
    };
    let _ = ws_send(client, Message::text(answer.to_json()));
    None
}

fn refused(room: &str, message: String) -> Event {
    Event::new(types::ERROR, json!({ "message": message, "room": room }))
}

/// `authenticated {userId, status}`: who the server says the client is.
fn authenticated(client: &WsClient) -> Event {
    let status = if client.user().is_some() {
        "authenticated"
    } else {
        "anonymous"
    };
    Event::new(
        types::AUTHENTICATED,
        json!({ "userId": client.user(), "status": status }),
    )
}

/// `connection.established {clientId, userId}` (the id as a string, as nexus and nitric send ids).
pub fn established(client: &WsClient) -> Event {
    Event::new(
        types::CONNECTED,
        json!({ "clientId": client.id().to_string(), "userId": client.user() }),
    )
}

/// The `ws_handler` hooks that put the protocol in front of the app's own:
/// on connect, [`ControlConfig::ready`] if set, `connection.established`,
/// then `on_connect`; on each message,
/// the protocol, then `on_message` with what is not a control message.
pub fn control_hooks(
    hub: WsHub,
    config: ControlConfig,
    on_connect: Option<ConnectHook>,
    on_message: Option<MessageHook>,
) -> (ConnectHook, MessageHook) {
    let announce = config.announce && config.enabled;
    let ready = config.ready.clone();
    let connect: ConnectHook = Arc::new(move |client| {
        let welcome = move |client: &WsClient, on_connect: &Option<ConnectHook>| {
            if announce {
                let _ = ws_send(client, Message::text(established(client).to_json()));
            }
            match on_connect {
                Some(hook) => hook(client),
                None => Box::pin(std::future::ready(Ok(()))),
            }
        };
        let Some(ready) = &ready else {
            return welcome(client, &on_connect);
        };
        let (ready, client, on_connect) = (ready(client), client.clone(), on_connect.clone());
        Box::pin(async move {
            ready.await?;
            welcome(&client, &on_connect).await
        })
    });
    let message: MessageHook = Arc::new(move |client, msg| {
        if let Some(rest) = ws_control(&hub, client, msg, &config)
            && let Some(hook) = &on_message
        {
            hook(client, rest);
        }
    });
    (connect, message)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::future::Future;
    use std::sync::atomic::Ordering;
    use ws_hub::{HubConfig, Identity};

    fn replies(c: &WsClient) -> Vec<Value> {
        c.take_queued()
            .into_iter()
            .map(|m| serde_json::from_str(m.to_text().unwrap()).unwrap())
            .collect()
    }

    fn guarded() -> ControlConfig {
        ControlConfig {
            guard: Some(Arc::new(|c: &WsClient, room: &str| {
                room.starts_with("public-")
                    || c.user().is_some_and(|u| room == format!("private-{u}"))
            })),
            ..ControlConfig::default()
        }
    }

    #[test]
    fn json_arrays_are_not_control_messages() {
        assert_eq!(parse_control(r#"["subscribe","r"]"#), None);
        assert_eq!(parse_control(r#"["ping",null]"#), None);
        assert_eq!(
            parse_control(r#" {"type":"ping"}"#),
            Some(Ok(Control::Ping))
        );
    }

    #[test]
    fn parses_control_messages_and_leaves_the_rest() {
        assert_eq!(parse_control(r#"{"type":"ping"}"#), Some(Ok(Control::Ping)));
        assert_eq!(
            parse_control(r#"{"type":"subscribe","room":"r","x":1}"#),
            Some(Ok(Control::Subscribe("r".into())))
        );
        assert!(matches!(
            parse_control(r#"{"type":"subscribe"}"#),
            Some(Err(_))
        ));
        assert!(matches!(
            parse_control(r#"{"type":"unsubscribe","room":7}"#),
            Some(Err(_))
        ));
        for other in [
            r#"{"type":"say","room":"r"}"#,
            "[1,2]",
            "not json",
            r#"{"room":"r"}"#,
            "",
        ] {
            assert_eq!(parse_control(other), None, "{other}");
        }
    }

    #[test]
    fn ping_answers_pong_and_other_text_goes_to_the_app() {
        let hub = WsHub::new(HubConfig::default());
        let c = hub.register(None).unwrap();
        assert!(ws_control(&hub, &c, Message::text(r#"{"type":"ping"}"#), &guarded()).is_none());
        let r = replies(&c);
        assert_eq!(r[0]["type"], "pong");
        assert!(r[0]["data"]["timestamp"].as_i64().unwrap() > 0);
        let app = Message::text(r#"{"type":"say","data":1}"#);
        assert_eq!(ws_control(&hub, &c, app.clone(), &guarded()), Some(app));
    }

    #[test]
    fn subscribe_needs_a_guard_that_allows_it() {
        let hub = WsHub::new(HubConfig::default());
        let ana = hub.register_as(None, Identity::user("ana")).unwrap();
        let sub = |room: &str| Message::text(format!(r#"{{"type":"subscribe","room":"{room}"}}"#));
        // No guard: refused.
        ws_control(&hub, &ana, sub("public-a"), &ControlConfig::default());
        assert_eq!(replies(&ana)[0]["type"], "error");
        assert_eq!(hub.room_len("public-a"), 0);
        // A guard: allowed rooms only.
        for (room, ok) in [
            ("public-a", true),
            ("private-ana", true),
            ("private-bo", false),
        ] {
            ws_control(&hub, &ana, sub(room), &guarded());
            let r = replies(&ana);
            assert_eq!(
                r[0]["type"],
                if ok { "subscribed" } else { "error" },
                "{room}"
            );
            assert_eq!(r[0]["data"]["room"], room);
            assert_eq!(hub.is_member(&ana, room), ok, "{room}");
        }
        ws_control(
            &hub,
            &ana,
            Message::text(r#"{"type":"unsubscribe","room":"public-a"}"#),
            &guarded(),
        );
        assert_eq!(replies(&ana)[0]["type"], "unsubscribed");
        assert!(!hub.is_member(&ana, "public-a"));
    }

    #[test]
    fn room_hooks_join_and_leave_and_answer_when_they_are_done() {
        let hub = WsHub::new(HubConfig::default());
        let ana = hub.register_as(None, Identity::user("ana")).unwrap();
        let pending = Arc::new(std::sync::Mutex::new(Vec::new()));
        let (held, joined) = (pending.clone(), hub.clone());
        let left = hub.clone();
        let config = ControlConfig {
            // Answers later (as a cluster does), and refuses one room.
            join: Some(Arc::new(move |client: &WsClient, reply: RoomReply| {
                if reply.room() == "public-full" {
                    return reply.send(Err(JoinError::TooManyRooms));
                }
                let result = joined.join(client, reply.room()).map(drop);
                held.lock().unwrap().push((reply, result));
            })),
            leave: Some(Arc::new(move |client: &WsClient, reply: RoomReply| {
                left.leave(client, reply.room());
                reply.send(Ok(()));
            })),
            ..guarded()
        };
        let sub = |room: &str| Message::text(format!(r#"{{"type":"subscribe","room":"{room}"}}"#));
        ws_control(&hub, &ana, sub("public-a"), &config);
        assert!(
            replies(&ana).is_empty(),
            "not answered before the hook says"
        );
        assert!(hub.is_member(&ana, "public-a"));
        let (reply, result) = pending.lock().unwrap().pop().unwrap();
        reply.send(result);
        let r = replies(&ana);
        assert_eq!(
            (&r[0]["type"], &r[0]["data"]["room"]),
            (&json!("subscribed"), &json!("public-a"))
        );

        ws_control(&hub, &ana, sub("public-full"), &config);
        let r = replies(&ana);
        assert_eq!(r[0]["type"], "error");
        assert_eq!(r[0]["data"]["message"], JoinError::TooManyRooms.to_string());
        ws_control(&hub, &ana, sub("private-bo"), &config);
        assert_eq!(
            replies(&ana)[0]["type"],
            "error",
            "the guard still decides first"
        );
        assert!(pending.lock().unwrap().is_empty());

        // A reply dropped unsent is an error naming the room.
        ws_control(&hub, &ana, sub("public-b"), &config);
        drop(pending.lock().unwrap().pop());
        let r = replies(&ana);
        assert_eq!(
            (&r[0]["type"], &r[0]["data"]["room"]),
            (&json!("error"), &json!("public-b"))
        );

        let unsub = Message::text(r#"{"type":"unsubscribe","room":"public-a"}"#);
        ws_control(&hub, &ana, unsub, &config);
        assert_eq!(replies(&ana)[0]["type"], "unsubscribed");
        assert!(!hub.is_member(&ana, "public-a"));
    }

    #[test]
    fn a_ready_hook_runs_before_the_announcement() {
        let hub = WsHub::new(HubConfig::default());
        let open = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let gate = open.clone();
        let config = ControlConfig {
            ready: Some(ws_handler::on_connect(move |_c: &WsClient| {
                let gate = gate.clone();
                std::future::poll_fn(move |_| match gate.load(Ordering::Acquire) {
                    true => std::task::Poll::Ready(Ok(())),
                    false => std::task::Poll::Pending,
                })
            })),
            ..guarded()
        };
        let (connect, _) = control_hooks(hub.clone(), config, None, None);
        let c = hub.register(None).unwrap();
        let mut cx = std::task::Context::from_waker(std::task::Waker::noop());
        let mut connecting = connect(&c);
        assert!(connecting.as_mut().poll(&mut cx).is_pending());
        assert!(replies(&c).is_empty(), "not announced before ready");
        open.store(true, Ordering::Release);
        assert!(matches!(
            connecting.as_mut().poll(&mut cx),
            std::task::Poll::Ready(Ok(()))
        ));
        assert_eq!(replies(&c)[0]["type"], "connection.established");
    }

    #[test]
    fn authenticate_reports_the_server_identity_and_cannot_claim_another() {
        let hub = WsHub::new(HubConfig::default());
        let ana = hub.register_as(None, Identity::user("ana")).unwrap();
        let anon = hub.register(None).unwrap();
        let claim = Message::text(r#"{"type":"authenticate","userId":"root","token":"x"}"#);
        ws_control(&hub, &ana, claim.clone(), &guarded());
        ws_control(&hub, &anon, claim, &guarded());
        assert_eq!(
            replies(&ana)[0]["data"],
            json!({"userId": "ana", "status": "authenticated"})
        );
        assert_eq!(
            replies(&anon)[0]["data"],
            json!({"userId": null, "status": "anonymous"})
        );
        assert_eq!(ana.user(), Some("ana"));
        assert_eq!(hub.user_len("root"), 0);
    }

    #[test]
    fn malformed_control_gets_an_error_and_off_means_off() {
        let hub = WsHub::new(HubConfig::default());
        let c = hub.register(None).unwrap();
        assert!(
            ws_control(
                &hub,
                &c,
                Message::text(r#"{"type":"subscribe"}"#),
                &guarded()
            )
            .is_none()
        );
        assert_eq!(replies(&c)[0]["type"], "error");
        assert!(!c.is_closed(), "the connection stays open");
        let off = ControlConfig {
            enabled: false,
            ..guarded()
        };
        let ping = Message::text(r#"{"type":"ping"}"#);
        assert_eq!(ws_control(&hub, &c, ping.clone(), &off), Some(ping));
        assert!(replies(&c).is_empty());
    }

    #[test]
    fn hooks_announce_then_run_the_app_hooks() {
        let hub = WsHub::new(HubConfig::default());
        let seen = Arc::new(std::sync::Mutex::new(Vec::new()));
        let s = seen.clone();
        let app: MessageHook = Arc::new(move |_c, m| s.lock().unwrap().push(m));
        let (connect, message) = control_hooks(hub.clone(), guarded(), None, Some(app));
        let c = hub.register_as(None, Identity::user("ana")).unwrap();
        let mut cx = std::task::Context::from_waker(std::task::Waker::noop());
        let connected = std::pin::pin!(connect(&c)).poll(&mut cx);
        assert!(matches!(connected, std::task::Poll::Ready(Ok(()))));
        let r = replies(&c);
        assert_eq!(r[0]["type"], "connection.established");
        assert_eq!(
            r[0]["data"],
            json!({"clientId": c.id().to_string(), "userId": "ana"})
        );
        message(&c, Message::text(r#"{"type":"ping"}"#));
        message(&c, Message::text("hello"));
        assert_eq!(*seen.lock().unwrap(), [Message::text("hello")]);
    }
}

/// The examples of this crate's registry entries, compiled by `cargo test --doc`.
#[cfg(doctest)]
#[doc = include_str!("../ws_control.md")]
#[doc = include_str!("../../../types/infra/Control.md")]
#[doc = include_str!("../../../types/infra/ControlConfig.md")]
#[doc = include_str!("../../../types/infra/RoomHook.md")]
#[doc = include_str!("../../../types/infra/RoomReply.md")]
#[doc = include_str!("../../../types/infra/RoomGuard.md")]
pub struct RegistryExamples;
