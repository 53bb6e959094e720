//! The reference real-time server: the registry's HTTP, SSE and WebSocket functions composed, the surface benchmarks and conformance tools run against.
//!
//! | route | what |
//! |---|---|
//! | `GET /` | a page that shows the stream live (browser `EventSource`) |
//! | `GET /events` | SSE stream of the broker (`?topic=` repeatable, default `hub`; `Last-Event-ID` resume) |
//! | `POST /publish` | publishes the body (UTF-8, at most 1 MiB) as one event on `?topic=` (default `hub`), with `?event=` as its type; answers `202 {"id": "ID"}` (the event's SSE id) |
//! | `POST /publish/batch` | publishes a JSON array of events (`"data"` strings or `{"data": "...", "event": "..."}` objects; `?event=` the type of those that name none; at most 100) on `?topic=` in order, as one step (consecutive ids, all or none, each stream writes them together); answers `202 {"ids": [...]}`; gated as `/publish` |
//! | `GET /ws` | WebSocket: every text message from any client goes to every connected client; `POST /publish` reaches them too |
//! | `GET /echo` | WebSocket echo of every text and binary message (the Autobahn testee; messages up to 64 MiB) |
//! | `GET /hub` | WebSocket hub with rooms, users and the control protocol (below) |
//! | `POST /emit` | emits the body as event `notice` to `?room=`, `?user=`, `?client=` (repeatable, combined as a union); answers `202` with the counts |
//! | `GET /rooms/{room}/presence` | who is in a `/hub` room: `{room, connections, users}` (across nodes with `--redis`); gated as `/emit` |
//! | `POST /hub/clients/{id}/close` | closes `/hub` connection `id` of this node (`ws_close`) with `?code=` (default 1000) and `?reason=`, after what was queued for it; `204`, `404` when no such connection is here, `409` when it is closing; gated as `/emit` |
//! | `GET /stats` | broker and hub counters as JSON |
//! | `GET /metrics` | every counter in the Prometheus text format (`http_metrics`; below) |
//! | `GET /health` | `ok` |
//!
//! Safe by default ([`Options::default`], and `rt-server` with no flags; see
//! `SECURITY.md`):
//!
//! - WebSockets (`/ws`, `/hub`, `/rpc`, `/echo`) accept pages of the same
//!   host only (and clients that send no `Origin`); [`Options::origins`]
//!   opens them to more. CORS answers no other origin unless it is listed.
//! - `POST /publish` and `POST /emit` need `Authorization: Bearer TOKEN`
//!   when [`Options::publish_token`] is set (`401` with `WWW-Authenticate`
//!   otherwise); without a token they refuse requests a cross-origin page
//!   sent (`403`), and the binary refuses to listen beyond loopback.
//! - Connections are limited (in all, optionally per IP address), messages
//!   per connection are rate-limited and size-capped, rooms per connection
//!   capped, outboxes bounded, silent peers pinged then closed, writes to a
//!   peer that stopped reading time out: [`Limits`]. SSE queues, topics per
//!   stream, publish bodies and the resume and room histories (per key and
//!   in bytes for all keys) are bounded by [`Options`]; SECURITY.md lists
//!   every limit with its default and its flag.
//!
//! `/hub` takes identity from [`Options::hub_identify`]: none (the default)
//! makes every connection anonymous; the binary verifies a JWT
//! (`--jwt-secret`, `--jwt-public-key`), and, for tests only,
//! [`insecure_bearer_names`] takes `Authorization: Bearer <name>` as user
//! `<name>`. The control protocol (`ws_control`) is on; its room guard lets
//! a connection whose token lists rooms join those, and otherwise anyone
//! join `public-*` and only user `<name>` join `private-<name>`. App
//! messages:
//!
//! - `{"type":"say","room":R,"data":X}` from a member of `R`: event `said`
//!   `{from, data}` to the room;
//! - `{"type":"whisper","user":U,"data":X}`: event `whispered` `{from, data}`
//!   to every connection of `U`.
//!
//! `/rpc` speaks the ws-wrapper protocol (`ws_wrapper_server`): `echo(x) -> x`,
//! `add(a, b) -> a + b`, `fail()` rejects with Error `nope`, on channel `room1`
//! `who() -> "me"`, `slow()` answers `"done"` after 5 s unless cancelled,
//! `stream(n)` answers with an anonymous channel and, once the client emits
//! `start` on it, emits `next {value, done: false}` for 1..n then
//! `next {done: true}`. For the other direction: event `notify-me(x)` makes
//! the server emit `notified(x)`, and request `ask-me(name, x)` makes the
//! server request `name(x)` of the client and answer with the client's answer.
//! The handlers of one connection start in arrival order, at most 64 at once
//! (`WrapperConfig::handlers_per_connection`). The binary is `rt-server`; [`app`]
//! builds the same handler for tests.
//!
//! With [`Options::cluster`] (the binary's `--redis URL`) the process is one
//! node of several on a shared backplane: `/hub` rooms, users and client ids,
//! `/ws` broadcasts, `POST /emit` and `POST /publish` reach the sockets of
//! every node (`ws_cluster`), SSE topics keep their history on the backplane
//! so a client resumes on any node (`sse_broker`'s cluster mode), and
//! presence spans the nodes. A write the backplane does not take is answered
//! `503` with `Retry-After` and acknowledged nowhere. Without it nothing
//! crosses the process and nothing is added per message.
//!
//! `/metrics` reads the counters the crates keep (`HubStats`, `BrokerStats`,
//! `WsStats`, `WrapperStats`) at scrape time, so serving it adds nothing per
//! message: `rt_open_connections{transport}` (`ws`: `/ws`, `/echo`, `/hub`;
//! `rpc`; `sse`), `rt_messages_in_total`, `rt_messages_out_total`,
//! `rt_messages_written_directly_total`, `rt_bytes_out_total`, `rt_deliveries_total`, `rt_dropped_messages_total`,
//! `rt_limit_closes_total{reason}` (`queue_full`, `write_timeout`,
//! `message_rate`), `rt_connection_refusals_total{reason}`, the histograms
//! `rt_delivery_latency_seconds` and `rt_queue_depth` (1 WebSocket message
//! in 64 is timed), `rt_sse_resumes_total`, `rt_sse_replayed_events_total`,
//! `rt_sse_gaps_total`, `rt_sse_topics`, `rt_rpc_requests_total{outcome}`.
//!
//! # Example
//!
//! ```
//! let app = rt_server::app(rt_server::Options::default());
//! # let _ = (app.handler, app.broker, app.hub);
//! ```

use std::fmt;
use std::time::Duration;

use backplane::{Backplane, BackplaneError};
use http::StatusCode;
use http_body_read::read_text;
use http_cors_middleware::{CorsConfig, http_cors_middleware};
use http_logger_middleware::http_logger_middleware;
use http_metrics::metrics_handler;
use http_middleware_chain::http_middleware_chain;
use http_router::PathParams;
use http_router::http_router;
use http_types::{
    Handler, Request, Response, Route, bearer, json, query_pairs, query_values, text,
};
use name_validate::{NameKind, name_validate};
use serde::Serialize;
use serde_json::Value;
use sse_broker::{BrokerConfig, PublishError, SseBroker};
use sse_event::SseEvent;
use sse_handler::{SseConfig, sse_handler};
use std::sync::Arc;
use subtle::ConstantTimeEq;
use tokio_tungstenite::tungstenite::Message;
use ws_close::{CloseError, ws_close};
use ws_control::{ControlConfig, RoomReply, control_hooks};
use ws_event::{Event, Target};
use ws_handler::{IdentifyHook, MessageRate, WsConfig, WsStats, identify, ws_handler};
use ws_hub::{HubConfig, Identity, WsClient, WsHub};
use ws_send::ws_send;
use ws_upgrader::{OriginPolicy, UpgradeConfig, origin_allowed};
use ws_wrapper_server::{Ctx, Reply, RequestError, WrapperConfig, WrapperError, WrapperServer};

mod metrics;
mod reach;

use backplane_memory::{MemoryBus, MemoryConfig};
use reach::Reach;
use ws_cluster::{ClusterConfig, WsCluster};

/// The page of `GET /`.
const INDEX_HTML: &str = include_str!("index.html");

/// Most bytes `POST /publish` and `POST /emit` accept by default
/// ([`Options::max_publish`]).
pub const MAX_PUBLISH: usize = 1 << 20;

/// Most events one `POST /publish/batch` may carry by default
/// ([`Options::max_batch`]).
pub const MAX_BATCH: usize = 100;

/// Server options.
#[derive(Clone)]
pub struct Options {
    /// Log every request through `tracing`. Default: true.
    pub log: bool,
    /// SSE keep-alive interval. Default: 15 s.
    pub keepalive: Duration,
    /// Events kept per topic for resume. Default: 1024.
    pub replay: usize,
    /// Bytes the resume buffers of all topics hold together, alone (on
    /// Redis the history is Redis's). Default: 64 MiB.
    pub replay_bytes: usize,
    /// With [`Options::cluster`]: while SSE events come from the backplane
    /// more often than one per two of these windows, each node writes them
    /// to its streams at most once per window ([`BrokerConfig::coalesce`]);
    /// zero: each as it comes. Default: 2 ms.
    pub sse_coalesce: Duration,
    /// Messages queued per SSE client. Default: 256.
    pub queue: usize,
    /// Topics one SSE stream may subscribe to. Default: 16.
    pub max_topics: usize,
    /// Most bytes a `POST /publish` or `POST /emit` body may hold; more is
    /// `413`. Default: [`MAX_PUBLISH`] (1 MiB).
    pub max_publish: usize,
    /// Most events a `POST /publish/batch` may carry; more is `400`. Keep
    /// it within [`queue`](Options::queue): a batch a stream's queue cannot
    /// hold ends that stream, as a slow one. Default: [`MAX_BATCH`] (100).
    pub max_batch: usize,
    /// Reconnection delay sent to browsers (`retry:`). Default: none (the
    /// browser's own, about 3 s).
    pub retry: Option<Duration>,
    /// Which pages may open WebSockets, and which origins CORS answers.
    /// Default: [`OriginPolicy::SameHost`] (and no CORS).
    pub origins: OriginPolicy,
    /// The bearer token `POST /publish` and `POST /emit` require. Default:
    /// none (they are open to clients that are not cross-origin pages).
    pub publish_token: Option<String>,
    /// Who a `/hub` connection is. Default: none (everyone anonymous).
    pub hub_identify: Option<IdentifyHook>,
    /// Connection, message and write limits.
    pub limits: Limits,
    /// The backplanes that make this process one node of several
    /// (`--redis`). Default: none, this process alone.
    pub cluster: Option<Cluster>,
    /// Messages kept per `/hub` room: a connection that subscribes gets the
    /// room's last this many first (`--room-history`). Alone, they are kept
    /// in this process. Default: 0 (none).
    pub room_history: usize,
    /// Bytes the room history of all rooms may hold together in this
    /// process (alone; on Redis it is Redis's). Default: 64 MiB.
    pub room_history_bytes: usize,
    /// A broadcast writes to the sockets of WebSocket connections whose
    /// writers wait ([`ws_hub::HubConfig::direct_writes`]). Off, every
    /// message wakes its connection's task, which spreads one hot room's
    /// writes over the runtime's threads. Default: on.
    pub direct_writes: bool,
}

/// One backplane node per part that crosses nodes (each sets its own
/// receiver): the SSE topics, `/ws` and `/hub`. Their channels must not
/// mix: on Redis, give each its own prefix.
#[derive(Clone)]
pub struct Cluster {
    /// The SSE broker's (`/events`, `/publish`).
    pub sse: Arc<dyn Backplane>,
    /// The `/ws` hub's.
    pub ws: Arc<dyn Backplane>,
    /// The `/hub` hub's (rooms, users, presence).
    pub rooms: Arc<dyn Backplane>,
}

impl fmt::Debug for Cluster {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Cluster")
            .field("sse_node", &self.sse.node())
            .field("ws_node", &self.ws.node())
            .field("rooms_node", &self.rooms.node())
            .finish()
    }
}

impl Default for Options {
    fn default() -> Self {
        Options {
            log: true,
            keepalive: Duration::from_secs(15),
            replay: BrokerConfig::default().replay,
            replay_bytes: BrokerConfig::default().replay_bytes,
            sse_coalesce: BrokerConfig::default().coalesce,
            queue: SseConfig::default().queue,
            max_topics: SseConfig::default().max_topics,
            max_publish: MAX_PUBLISH,
            max_batch: MAX_BATCH,
            retry: None,
            origins: OriginPolicy::SameHost,
            publish_token: None,
            hub_identify: None,
            limits: Limits::default(),
            cluster: None,
            room_history: 0,
            room_history_bytes: MemoryConfig::default().kept_bytes,
            direct_writes: true,
        }
    }
}

/// The limits of the WebSocket routes; every field has a default.
#[derive(Debug, Clone)]
pub struct Limits {
    /// Open WebSocket connections per route. Default:
    /// [`ws_handler::default_max_connections`] (from the open-file limit).
    pub max_connections: usize,
    /// WebSocket connections per IP address and route. Default: none.
    pub max_per_ip: Option<usize>,
    /// Messages per connection on `/ws`, `/hub` and `/rpc` (not `/echo`,
    /// the conformance testee). Default: 200/s, bursts of 400.
    pub message_rate: Option<MessageRate>,
    /// Rooms one `/hub` connection may be in. Default: 100.
    pub max_rooms: usize,
    /// A blocked write with no progress for this long drops the connection. Default: 10 s.
    pub write_timeout: Duration,
    /// Largest message (and frame) a client may send on `/ws`, `/hub` and
    /// `/rpc`; larger closes with `1009`. Default: 1 MiB.
    pub max_message_size: usize,
    /// Messages queued for one connection of `/ws`, `/hub` or `/rpc`
    /// before it is closed as slow (`1013`). Default: 256.
    pub outbox_messages: usize,
    /// Bytes queued for one connection of `/ws`, `/hub` or `/rpc` before it
    /// is closed as slow (`1013`). Default: 1 MiB.
    pub outbox_bytes: usize,
    /// Server pings on every WebSocket route, this often. Default: 30 s.
    pub ping_interval: Duration,
    /// A WebSocket peer silent this long (no frame, not even a pong) is
    /// closed. Default: 75 s.
    pub idle_timeout: Duration,
    /// How long each identify, authenticate and connect hook may take
    /// (then `401`, or close `1008`). Default: 5 s.
    pub hook_timeout: Duration,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_connections: ws_handler::default_max_connections(),
            max_per_ip: None,
            message_rate: Some(MessageRate::default()),
            max_rooms: 100,
            write_timeout: Duration::from_secs(10),
            max_message_size: WsConfig::default().max_message_size,
            outbox_messages: HubConfig::default().queue_messages,
            outbox_bytes: HubConfig::default().queue_bytes,
            ping_interval: WsConfig::default().ping_interval,
            idle_timeout: WsConfig::default().idle_timeout,
            hook_timeout: WsConfig::default().hook_timeout,
        }
    }
}

impl fmt::Debug for Options {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Options")
            .field("log", &self.log)
            .field("keepalive", &self.keepalive)
            .field("replay", &self.replay)
            .field("replay_bytes", &self.replay_bytes)
            .field("queue", &self.queue)
            .field("max_topics", &self.max_topics)
            .field("max_publish", &self.max_publish)
            .field("max_batch", &self.max_batch)
            .field("retry", &self.retry)
            .field("origins", &self.origins)
            .field(
                "publish_token",
                &self.publish_token.as_ref().map(|_| "<set>"),
            )
            .field("hub_identify", &self.hub_identify.is_some())
            .field("limits", &self.limits)
            .field("cluster", &self.cluster)
            .field("direct_writes", &self.direct_writes)
            .finish()
    }
}

/// The application and the state behind it.
#[derive(Debug, Clone)]
pub struct App {
    /// Every route, behind the CORS and logging middlewares.
    pub handler: Handler,
    /// The SSE broker of `/events` and `/publish`.
    pub broker: SseBroker,
    /// The WebSocket hub of `/ws`.
    pub hub: WsHub,
    /// The WebSocket hub of `/hub` (rooms, users, control protocol).
    pub rooms: WsHub,
    reaches: [Reach; 2],
}

impl App {
    /// Waits until what the cluster queued went out (presence removals of
    /// closed connections, forwards): call it after serving, before exit.
    pub async fn close(&self) {
        for reach in &self.reaches {
            reach.flush().await;
        }
    }
}

/// The whole application.
///
/// With [`Options::cluster`] or [`Options::room_history`], call it inside a
/// tokio runtime (the cluster parts start their tasks).
pub fn app(options: Options) -> App {
    let broker_config = BrokerConfig {
        replay: options.replay,
        replay_bytes: options.replay_bytes,
        coalesce: options.sse_coalesce,
    };
    let broker = match &options.cluster {
        Some(c) => SseBroker::clustered(broker_config, c.sse.clone()),
        None => SseBroker::new(broker_config),
    };
    let events = sse_handler(
        broker.clone(),
        SseConfig {
            keepalive: options.keepalive,
            queue: options.queue,
            max_topics: options.max_topics,
            retry: options.retry,
            ..SseConfig::default()
        },
    );
    let reach = |config: HubConfig, backplane: Option<&Arc<dyn Backplane>>| match backplane {
        Some(b) => Reach::Cluster(WsCluster::new(
            WsHub::new(WsCluster::hub_config(&**b, config)),
            b.clone(),
        )),
        None => Reach::Local(WsHub::new(config)),
    };
    let limits = &options.limits;
    // The outbox of every connection but `/echo`'s (the conformance testee).
    let outbox = HubConfig {
        queue_messages: limits.outbox_messages,
        queue_bytes: limits.outbox_bytes,
        direct_writes: options.direct_writes,
        ..HubConfig::default()
    };
    let ws_reach = reach(outbox.clone(), options.cluster.as_ref().map(|c| &c.ws));
    let hub = ws_reach.hub().clone();
    // Counters of the WebSocket routes, read by `/metrics`: `/ws`, `/echo`
    // and `/hub` add up as transport `ws`, `/rpc` is transport `rpc`.
    let (ws_stats, rpc_stats) = (WsStats::default(), WsStats::default());
    let base = WsConfig {
        upgrade: UpgradeConfig {
            origins: options.origins.clone(),
            ..UpgradeConfig::default()
        },
        max_connections: limits.max_connections,
        max_per_ip: limits.max_per_ip,
        message_rate: limits.message_rate,
        write_timeout: limits.write_timeout,
        max_message_size: limits.max_message_size,
        max_frame_size: limits.max_message_size,
        ping_interval: limits.ping_interval,
        idle_timeout: limits.idle_timeout,
        hook_timeout: limits.hook_timeout,
        stats: ws_stats.clone(),
        ..WsConfig::default()
    };
    let ws = {
        let reach = ws_reach.clone();
        ws_handler(
            hub.clone(),
            WsConfig {
                on_messages: Some(Arc::new(move |_client, msgs| {
                    msgs.retain(Message::is_text);
                    reach.broadcast_from_socket(msgs);
                })),
                ..base.clone()
            },
        )
    };
    let echo_hub = WsHub::new(HubConfig {
        queue_bytes: 128 << 20,
        direct_writes: options.direct_writes,
        ..HubConfig::default()
    });
    let echo = ws_handler(
        echo_hub.clone(),
        WsConfig {
            max_message_size: 64 << 20,
            max_frame_size: 64 << 20,
            message_rate: None,
            on_message: Some(Arc::new(|client, msg| {
                let _ = client.try_send(msg);
            })),
            ..base.clone()
        },
    );
    let (rpc, rpc_server) = rpc_handler(
        outbox.clone(),
        WsConfig {
            stats: rpc_stats.clone(),
            ..base.clone()
        },
    );
    let rooms_config = HubConfig {
        max_rooms: limits.max_rooms,
        ..outbox
    };
    let rooms_backplane = match &options.cluster {
        Some(c) => Some(c.rooms.clone()),
        // Room history alone: kept by a one-node bus in this process.
        None if options.room_history > 0 => {
            let bus = MemoryBus::new(MemoryConfig {
                kept_bytes: options.room_history_bytes,
                ..MemoryConfig::default()
            });
            Some(Arc::new(bus.node()) as Arc<dyn Backplane>)
        }
        None => None,
    };
    let rooms_reach = match rooms_backplane {
        Some(b) => Reach::Cluster(WsCluster::with_config(
            WsHub::new(WsCluster::hub_config(&*b, rooms_config)),
            b,
            ClusterConfig {
                room_history: options.room_history,
                ..ClusterConfig::default()
            },
        )),
        None => Reach::Local(WsHub::new(rooms_config)),
    };
    let rooms = rooms_reach.hub().clone();
    let room_hub = hub_handler(
        rooms_reach.clone(),
        WsConfig {
            identify: options.hub_identify.clone(),
            ..base
        },
    );
    let gate = Arc::new(WriteGate {
        token: options.publish_token.clone(),
        origins: options.origins.clone(),
        max_body: options.max_publish,
        max_batch: options.max_batch,
    });
    let emit = {
        let (rooms, gate) = (rooms_reach.clone(), gate.clone());
        Handler::new(move |req: Request| {
            let (rooms, gate) = (rooms.clone(), gate.clone());
            async move {
                match gate.check(&req) {
                    Ok(()) => emit(&rooms, req, gate.max_body).await,
                    Err(refused) => refused,
                }
            }
        })
    };
    // Presence names users: the same gate as the writers (the token when
    // one is set; otherwise no page of another origin), so it is no wider
    // open than /emit.
    let presence = {
        let (rooms, gate) = (rooms_reach.clone(), gate.clone());
        Handler::new(move |req: Request| {
            if let Err(refused) = gate.check(&req) {
                return Box::pin(std::future::ready(refused)) as http_types::BoxFuture<Response>;
            }
            let rooms = rooms.clone();
            let room = req
                .extensions()
                .get::<PathParams>()
                .and_then(|p| p.get("room"))
                .unwrap_or_default()
                .to_string();
            Box::pin(async move { presence(&rooms, room).await })
        })
    };
    let close_client = {
        let (hub, gate) = (rooms.clone(), gate.clone());
        Handler::new(move |req: Request| {
            let res = match gate.check(&req) {
                Ok(()) => close_client(&hub, &req),
                Err(refused) => refused,
            };
            async move { res }
        })
    };
    let publisher = |batch: bool| {
        let (broker, ws, gate) = (broker.clone(), ws_reach.clone(), gate.clone());
        Handler::new(move |req: Request| {
            let (broker, ws, gate) = (broker.clone(), ws.clone(), gate.clone());
            async move {
                match gate.check(&req) {
                    Ok(()) => publish(&broker, &ws, req, &gate, batch).await,
                    Err(refused) => refused,
                }
            }
        })
    };
    let (publish, publish_batch) = (publisher(false), publisher(true));
    let stats = {
        let (broker, hub, rooms) = (broker.clone(), hub.clone(), rooms.clone());
        Handler::new(move |_req: Request| {
            let s = broker.stats();
            let body = Stats {
                subscribers: s.subscribers,
                topics: s.topics,
                published: s.published,
                delivered: s.delivered,
                slow_dropped: s.slow_dropped,
                resets: s.resets,
                ws: hub.stats().into(),
                hub: rooms.stats().into(),
                rooms: rooms.rooms(),
            };
            let res = json(StatusCode::OK, &body);
            async move { res }
        })
    };
    let metrics = metrics_handler(Arc::new(metrics::registry(metrics::AppCollector {
        broker: broker.clone(),
        transports: vec![
            metrics::Transport {
                name: "ws",
                hubs: vec![hub.clone(), echo_hub, rooms.clone()],
                stats: ws_stats,
            },
            metrics::Transport {
                name: "rpc",
                hubs: vec![rpc_server.hub().clone()],
                stats: rpc_stats,
            },
        ],
        rpc: rpc_server,
        backplanes: match &options.cluster {
            Some(c) => vec![
                metrics::Part {
                    name: "sse",
                    backplane: c.sse.clone(),
                    cluster: None,
                },
                metrics::Part {
                    name: "ws",
                    backplane: c.ws.clone(),
                    cluster: ws_reach.cluster().cloned(),
                },
                metrics::Part {
                    name: "hub",
                    backplane: c.rooms.clone(),
                    cluster: rooms_reach.cluster().cloned(),
                },
            ],
            None => Vec::new(),
        },
    })));
    let health = Handler::new(|_req: Request| async { text(StatusCode::OK, "ok\n") });
    let page = Handler::new(|_req: Request| async {
        let mut res = text(StatusCode::OK, INDEX_HTML);
        res.headers_mut().insert(
            http::header::CONTENT_TYPE,
            http::HeaderValue::from_static("text/html; charset=utf-8"),
        );
        res
    });
    let router = http_router(vec![
        Route::get("/", page),
        Route::get("/events", events),
        Route::get("/ws", ws),
        Route::get("/echo", echo),
        Route::get("/hub", room_hub),
        Route::post("/emit", emit),
        Route::get("/rooms/{room}/presence", presence),
        Route::post("/hub/clients/{id}/close", close_client),
        Route::get("/rpc", rpc),
        Route::post("/publish", publish),
        Route::post("/publish/batch", publish_batch),
        Route::get("/stats", stats),
        Route::get("/metrics", metrics),
        Route::get("/health", health),
    ])
    .expect("the route table is valid");
    let allowed_origins = match &options.origins {
        OriginPolicy::Any => vec!["*".to_string()],
        OriginPolicy::AllowList(list) => list.clone(),
        OriginPolicy::SameHost => Vec::new(),
    };
    let mut layers = vec![
        http_cors_middleware(CorsConfig {
            allowed_origins,
            ..CorsConfig::default()
        })
        .expect("origins without credentials are a valid CORS configuration"),
    ];
    if options.log {
        layers.insert(0, http_logger_middleware());
    }
    App {
        handler: http_middleware_chain(layers).apply(router),
        broker,
        hub,
        rooms,
        reaches: [ws_reach, rooms_reach],
    }
}

/// Who may write (`/publish`, `/emit`): the bearer token when one is set;
/// without one, anyone but a page of another origin.
struct WriteGate {
    token: Option<String>,
    origins: OriginPolicy,
    /// Most bytes a body may hold.
    max_body: usize,
    /// Most events a `POST /publish/batch` may carry.
    max_batch: usize,
}

impl WriteGate {
    #[allow(clippy::result_large_err)] // a refusal is the response
    fn check(&self, req: &Request) -> Result<(), Response> {
        let Some(token) = &self.token else {
            if origin_allowed(req, &self.origins) {
                return Ok(());
            }
            return Err(error(
                StatusCode::FORBIDDEN,
                "writes from pages of another origin are refused",
            ));
        };
        let given = bearer(req).ok().flatten().unwrap_or("");
        // Constant time: how much of a guess matched must not show in timing.
        if bool::from(given.as_bytes().ct_eq(token.as_bytes())) {
            return Ok(());
        }
        let mut res = error(
            StatusCode::UNAUTHORIZED,
            "expected Authorization: Bearer <publish token>",
        );
        res.headers_mut().insert(
            http::header::WWW_AUTHENTICATE,
            http::HeaderValue::from_static("Bearer realm=\"rt-server\""),
        );
        Err(res)
    }
}

/// `/hub`: identity from `config.identify`, the control protocol with its
/// guard (the token's rooms, else `public-*` / `private-<name>`), `say` and
/// `whisper`.
fn hub_handler(reach: Reach, config: WsConfig) -> Handler {
    let hub = reach.hub().clone();
    let control = ControlConfig {
        guard: Some(Arc::new(|client: &WsClient, room: &str| {
            if client.identity().allowed_rooms.is_some() {
                return client.identity().allows_room(room);
            }
            room.starts_with("public-")
                || client
                    .user()
                    .is_some_and(|u| room.strip_prefix("private-") == Some(u))
        })),
        ..ControlConfig::default()
    };
    // Across nodes, each answer waits until this node receives what any
    // node sends to the room (the user) in question.
    let control = match reach.cluster().cloned() {
        None => control,
        Some(cluster) => {
            let (on_join, on_leave, on_ready) = (cluster.clone(), cluster.clone(), cluster);
            ControlConfig {
                join: Some(Arc::new(move |client: &WsClient, reply: RoomReply| {
                    let room = reply.room().to_string();
                    on_join.join(client, &room, move |joined| reply.send(joined));
                })),
                leave: Some(Arc::new(move |client: &WsClient, reply: RoomReply| {
                    let room = reply.room().to_string();
                    on_leave.leave(client, &room, move || reply.send(Ok(())));
                })),
                ready: Some(ws_handler::on_connect(move |_: &WsClient| {
                    let ready = on_ready.ready();
                    async move {
                        ready.await;
                        Ok(())
                    }
                })),
                ..control
            }
        }
    };
    let app = Arc::new(move |client: &WsClient, msg: Message| say_or_whisper(&reach, client, &msg));
    let (on_connect, on_message) = control_hooks(hub.clone(), control, None, Some(app));
    ws_handler(
        hub,
        WsConfig {
            on_connect: Some(on_connect),
            on_message: Some(on_message),
            ..config
        },
    )
}

/// `/rpc`: the ws-wrapper reference endpoint, and its server (for its counters).
fn rpc_handler(outbox: HubConfig, config: WsConfig) -> (Handler, WrapperServer) {
    let server = WrapperServer::new(WsHub::new(outbox), WrapperConfig::default());
    server
        .on("echo", |_ctx, (x,): (Value,)| async move {
            Ok::<_, WrapperError>(x)
        })
        .on("add", |_ctx, (a, b): (f64, f64)| async move {
            Ok::<_, WrapperError>(serde_json::json!(a + b))
        })
        .on("fail", |_ctx, (): ()| async {
            Err::<Value, _>(WrapperError::new("nope"))
        })
        .on("slow", |ctx: Ctx, (): ()| async move {
            tokio::select! {
                () = tokio::time::sleep(Duration::from_secs(5)) => Ok("done"),
                () = ctx.cancelled() => Err(WrapperError::new("cancelled")),
            }
        })
        .on("stream", |ctx: Ctx, (n,): (u64,)| async move {
            let Some(ch) = ctx.channel() else {
                return Err(WrapperError::new("stream is a request"));
            };
            ch.on("start", move |ctx: Ctx, _: Vec<Value>| async move {
                if let Some(ch) = ctx.channel() {
                    for value in 1..=n {
                        if ch
                            .emit(
                                "next",
                                vec![serde_json::json!({ "value": value, "done": false })],
                            )
                            .is_err()
                        {
                            return Ok::<_, WrapperError>(());
                        }
                    }
                    let _ = ch.emit("next", vec![serde_json::json!({ "done": true })]);
                }
                Ok(())
            });
            Ok(Reply::Channel(ch))
        })
        .on("notify-me", |ctx: Ctx, args: Vec<Value>| async move {
            ctx.server()
                .emit(ctx.client(), None, "notified", args)
                .map_err(|e| WrapperError::new(e.to_string()))
        })
        .on(
            "ask-me",
            |ctx: Ctx, (name, x): (String, Value)| async move {
                ctx.server()
                    .request(
                        ctx.client(),
                        None,
                        &name,
                        vec![x],
                        Some(Duration::from_secs(10)),
                    )
                    .await
                    .map_err(|e| match e {
                        RequestError::Rejected(e) => e,
                        other => WrapperError::new(other.to_string()),
                    })
            },
        );
    server
        .of("room1")
        .on("who", |_ctx, (): ()| async { Ok::<_, WrapperError>("me") });
    (server.handler(config), server)
}

/// An identify hook **for tests only**: `Authorization: Bearer <name>` is
/// user `<name>` (1 to 64 bytes), no header is anonymous, anything else is
/// refused (401). Anyone can claim any name: never use it where identity
/// matters (`rt-server --insecure-bearer-names`).
pub fn insecure_bearer_names() -> IdentifyHook {
    identify(|req: &Request| {
        let result = if req.headers().contains_key(http::header::AUTHORIZATION) {
            match bearer(req).ok().flatten() {
                Some(name) if !name.is_empty() && name.len() <= 64 => Ok(Identity::user(name)),
                _ => Err(error(
                    StatusCode::UNAUTHORIZED,
                    "expected Authorization: Bearer <name>",
                )),
            }
        } else {
            Ok(Identity::default())
        };
        std::future::ready(result)
    })
}

/// The app messages of `/hub`; anything else gets an `error` event.
fn say_or_whisper(reach: &Reach, client: &WsClient, msg: &Message) {
    let parsed: Option<Value> = msg
        .to_text()
        .ok()
        .and_then(|t| serde_json::from_str(t).ok());
    let field = |name: &str| parsed.as_ref().and_then(|v| v.get(name));
    let data = field("data").cloned().unwrap_or(Value::Null);
    let from = client.user();
    let refuse = |why: String| {
        let ev = Event::new(
            ws_event::types::ERROR,
            serde_json::json!({ "message": why }),
        );
        let _ = ws_send(client, Message::text(ev.to_json()));
    };
    match (
        field("type").and_then(Value::as_str),
        field("room"),
        field("user"),
    ) {
        (Some("say"), Some(Value::String(room)), _) => {
            if reach.hub().is_member(client, room) {
                let ev = Event::new("said", serde_json::json!({ "from": from, "data": data }));
                reach.emit_from_socket(&ev, &Target::rooms([room.as_str()]));
            } else {
                refuse(format!("not a member of room '{room}'"));
            }
        }
        (Some("whisper"), _, Some(Value::String(user))) => {
            let ev = Event::new(
                "whispered",
                serde_json::json!({ "from": from, "data": data }),
            );
            reach.emit_from_socket(&ev, &Target::users([user.as_str()]));
        }
        _ => refuse("expected say {room, data} or whisper {user, data}".into()),
    }
}

/// `POST /emit?room=R&user=U&client=ID`: the body as event `notice` to that union.
async fn emit(reach: &Reach, req: Request, max_body: usize) -> Response {
    let query = req.uri().query().unwrap_or("").to_string();
    let mut target = Target::default();
    for (k, v) in query_pairs(&query) {
        let kind = match k.as_str() {
            "room" => Some(NameKind::Room),
            "user" => Some(NameKind::User),
            _ => None,
        };
        if let Some(kind) = kind
            && let Err(e) = name_validate(kind, &v)
        {
            return text(StatusCode::BAD_REQUEST, format!("{e}\n"));
        }
        match k.as_str() {
            "room" => target.rooms.push(v),
            "user" => target.users.push(v),
            "client" => match v.parse() {
                Ok(id) => target.clients.push(id),
                Err(_) => {
                    return text(
                        StatusCode::BAD_REQUEST,
                        format!("client ids are numbers: {v}\n"),
                    );
                }
            },
            _ => {}
        }
    }
    if target.is_empty() {
        return text(
            StatusCode::BAD_REQUEST,
            "name a ?room=, ?user= or ?client=\n",
        );
    }
    let body = match read_text(req.into_body(), max_body).await {
        Ok(body) => body,
        Err(e) => return e.into_response(),
    };
    // JSON stays JSON; any other text is a string.
    let data = serde_json::from_str(&body).unwrap_or(Value::String(body));
    let r = match reach.emit(&Event::new("notice", data), &target).await {
        Ok(r) => r,
        Err(e) => return unavailable(&e),
    };
    json(
        StatusCode::ACCEPTED,
        &Emitted {
            sent: r.sent,
            dropped: r.dropped,
            slow_closed: r.slow_closed,
            closed: r.closed,
        },
    )
}

/// `POST /publish` (the body is one event's data) and `POST /publish/batch`
/// (a JSON array of events), on `?topic=` with `?event=` as the type.
async fn publish(
    broker: &SseBroker,
    ws: &Reach,
    req: Request,
    gate: &WriteGate,
    batch: bool,
) -> Response {
    let query = req.uri().query().unwrap_or("").to_string();
    let param = |name: &str| query_values(&query, name).next();
    let topic = param("topic").unwrap_or_else(|| "hub".into());
    let event = param("event");
    let body = match read_text(req.into_body(), gate.max_body).await {
        Ok(body) => body,
        Err(e) => return e.into_response(),
    };
    let events = if batch {
        match batch_events(&body, event.as_deref(), gate.max_batch) {
            Ok(events) => events,
            Err(why) => return error(StatusCode::BAD_REQUEST, &why),
        }
    } else {
        let mut ev = SseEvent::data(body);
        ev.event = event;
        vec![ev]
    };
    let hub_texts: Option<Vec<String>> = (topic == "hub").then(|| {
        events
            .iter()
            .map(|e| e.data.clone().unwrap_or_default())
            .collect()
    });
    let mut ids = match broker.publish_batch_async(&topic, events).await {
        Ok(ids) => ids,
        Err(PublishError::Unavailable) => {
            return unavailable(&BackplaneError::Unavailable(
                "the SSE backplane did not take the event".into(),
            ));
        }
        Err(e) => return text(StatusCode::BAD_REQUEST, format!("{e}\n")),
    };
    // Topic `hub` is also the `/ws` hub's: its events reach both transports.
    // If the WebSocket side fails after the SSE side took them, the answer
    // is 503 and a retry repeats the SSE events: at least once, never lost.
    if let Some(texts) = hub_texts
        && let Err(e) = ws.broadcast(texts).await
    {
        return unavailable(&e);
    }
    if batch {
        json(StatusCode::ACCEPTED, &BatchAccepted { ids })
    } else {
        json(
            StatusCode::ACCEPTED,
            &Accepted {
                id: ids.swap_remove(0),
            },
        )
    }
}

/// The events of a `POST /publish/batch` body: a JSON array whose items are
/// a string (the data) or `{"data": string, "event": string}` (`event`
/// optional, `default_event` when absent). At most `max` of them.
fn batch_events(
    body: &str,
    default_event: Option<&str>,
    max: usize,
) -> Result<Vec<SseEvent>, String> {
    let shape =
        r#"a JSON array of events, each a string (its data) or {"data": string, "event": string}"#;
    let items: Vec<Value> =
        serde_json::from_str(body).map_err(|e| format!("the body is not {shape}: {e}"))?;
    if items.len() > max {
        return Err(format!(
            "{} events: a batch holds at most {max} (--max-publish-batch)",
            items.len()
        ));
    }
    items
        .into_iter()
        .enumerate()
        .map(|(i, item)| {
            let bad =
                || format!("event {i} is not a string or {{\"data\": string, \"event\": string}}");
            let (data, event) = match item {
                Value::String(data) => (data, None),
                Value::Object(mut fields) => {
                    let data = match fields.remove("data") {
                        Some(Value::String(data)) => data,
                        _ => return Err(bad()),
                    };
                    let event = match fields.remove("event") {
                        None => None,
                        Some(Value::String(event)) => Some(event),
                        Some(_) => return Err(bad()),
                    };
                    if let Some(field) = fields.keys().next() {
                        return Err(format!(
                            "event {i}: unknown field {field:?} (ids are the server's)"
                        ));
                    }
                    (data, event)
                }
                _ => return Err(bad()),
            };
            let mut ev = SseEvent::data(data);
            ev.event = event.or_else(|| default_event.map(str::to_string));
            Ok(ev)
        })
        .collect()
}

/// `GET /rooms/{room}/presence`: `{room, connections, users}` across the nodes.
async fn presence(rooms: &Reach, room: String) -> Response {
    if let Err(e) = name_validate(NameKind::Room, &room) {
        return text(StatusCode::BAD_REQUEST, format!("{e}\n"));
    }
    match rooms.presence(&room).await {
        Ok(p) => json(
            StatusCode::OK,
            &PresenceBody {
                connections: p.connections(),
                users: p.users(),
                room,
            },
        ),
        Err(e) => unavailable(&e),
    }
}

/// `POST /hub/clients/{id}/close?code=C&reason=R`: [`ws_close`] on this
/// node's `/hub`.
fn close_client(hub: &WsHub, req: &Request) -> Response {
    let id = req
        .extensions()
        .get::<PathParams>()
        .and_then(|p| p.get("id"))
        .and_then(|id| id.parse::<u64>().ok());
    let Some(id) = id else {
        return error(StatusCode::BAD_REQUEST, "the client id is a number");
    };
    let query = req.uri().query().unwrap_or("");
    let code = match query_values(query, "code").last() {
        None => 1000,
        Some(code) => match code.parse::<u16>() {
            Ok(code) => code,
            Err(_) => return error(StatusCode::BAD_REQUEST, "code: a close code such as 4000"),
        },
    };
    let reason = query_values(query, "reason").last().unwrap_or_default();
    match ws_close(hub, id, code, &reason) {
        Ok(()) => text(StatusCode::NO_CONTENT, ""),
        Err(e @ CloseError::NotFound) => error(StatusCode::NOT_FOUND, &e.to_string()),
        Err(e @ CloseError::Closing) => error(StatusCode::CONFLICT, &e.to_string()),
        Err(e) => error(StatusCode::BAD_REQUEST, &e.to_string()),
    }
}

/// `503` with `Retry-After`: the backplane did not take or answer it, so
/// nothing was acknowledged.
fn unavailable(e: &BackplaneError) -> Response {
    tracing::warn!(target: "rt", error = %e, "refused: backplane unavailable");
    let mut res = error(StatusCode::SERVICE_UNAVAILABLE, &e.to_string());
    res.headers_mut().insert(
        http::header::RETRY_AFTER,
        http::HeaderValue::from_static("1"),
    );
    res
}

/// `GET /rooms/{room}/presence`'s answer.
#[derive(Serialize)]
struct PresenceBody {
    room: String,
    connections: usize,
    users: Vec<String>,
}

/// A refusal's JSON body: `{"error": "..."}`.
#[derive(Serialize)]
struct ErrorBody<'a> {
    error: &'a str,
}

fn error(status: StatusCode, error: &str) -> Response {
    json(status, &ErrorBody { error })
}

/// `POST /publish`'s answer.
#[derive(Serialize)]
struct Accepted {
    /// The SSE event id, as `id:` sends it and `Last-Event-ID` resumes from.
    id: String,
}

/// `POST /publish/batch`'s answer: the events' ids, in order.
#[derive(Serialize)]
struct BatchAccepted {
    ids: Vec<String>,
}

/// `POST /emit`'s answer: what `ws_emit` did.
#[derive(Serialize)]
struct Emitted {
    sent: usize,
    dropped: usize,
    slow_closed: usize,
    closed: usize,
}

/// `GET /stats`: the broker's counters, then `/ws`'s and `/hub`'s hubs and
/// `/hub`'s rooms with their member counts.
#[derive(Serialize)]
struct Stats {
    subscribers: usize,
    topics: usize,
    published: u64,
    delivered: u64,
    slow_dropped: u64,
    resets: u64,
    ws: HubCounts,
    hub: HubCounts,
    rooms: std::collections::BTreeMap<String, usize>,
}

/// The counters of one hub in `/stats`.
#[derive(Serialize)]
struct HubCounts {
    connections: usize,
    connected: u64,
    disconnected: u64,
    sent: u64,
    dropped: u64,
    slow_closed: u64,
}

impl From<ws_hub::HubStats> for HubCounts {
    fn from(w: ws_hub::HubStats) -> Self {
        HubCounts {
            connections: w.connections,
            connected: w.connected,
            disconnected: w.disconnected,
            sent: w.sent,
            dropped: w.dropped,
            slow_closed: w.slow_closed,
        }
    }
}
