//! `GET /metrics` of the rt-server app over TCP: scraped before and after
//! real WebSocket, SSE and ws-wrapper traffic (connects, messages,
//! publishes, resumes, closes, refused connections), the counters moved by
//! exactly what the traffic did, and the text is the Prometheus exposition
//! format (every line checked, every sample under a `# TYPE`).

use std::collections::{BTreeMap, HashMap};
use std::net::SocketAddr;
use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use http_serve::{ServeConfig, http_serve};
use rt_server::{App, Options, app};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::{WebSocketStream, client_async};

mod common;
use common::request;

const WAIT: Duration = Duration::from_secs(10);

type Ws = WebSocketStream<TcpStream>;

/// Samples by `name{labels}` (labels as written, sorted by the encoder).
type Scrape = BTreeMap<String, f64>;

/// `GET /metrics`, checked line by line as the Prometheus text format.
async fn scrape(addr: SocketAddr) -> Scrape {
    let (status, body) = request(addr, "GET /metrics HTTP/1.1", "").await;
    assert_eq!(status, 200, "{body}");
    parse_exposition(&body)
}

/// Parses the Prometheus text exposition format (0.0.4), failing on any
/// line that is not a `# HELP`, a `# TYPE` or a sample of a declared family.
fn parse_exposition(text: &str) -> Scrape {
    let valid_name = |n: &str| {
        !n.is_empty()
            && !n.starts_with(|c: char| c.is_ascii_digit())
            && n.chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == ':')
    };
    let mut types: HashMap<String, String> = HashMap::new();
    let mut samples = Scrape::new();
    // Each histogram series (labels but `le`): its (le, value) in text order.
    let mut buckets: BTreeMap<String, Vec<(String, f64)>> = BTreeMap::new();
    for line in text.lines() {
        if let Some(rest) = line.strip_prefix("# HELP ") {
            let name = rest.split(' ').next().unwrap();
            assert!(valid_name(name), "HELP of a bad name: {line}");
            continue;
        }
        if let Some(rest) = line.strip_prefix("# TYPE ") {
            let (name, kind) = rest.split_once(' ').expect("# TYPE name kind");
            assert!(valid_name(name), "{line}");
            assert!(
                ["counter", "gauge", "histogram", "summary", "untyped"].contains(&kind),
                "{line}"
            );
            assert!(
                types.insert(name.to_string(), kind.to_string()).is_none(),
                "a family declared twice: {line}"
            );
            continue;
        }
        assert!(
            !line.starts_with('#') && !line.is_empty(),
            "stray line {line:?}"
        );
        let (series, value) = line.rsplit_once(' ').expect("name value");
        let value: f64 = match value {
            "+Inf" => f64::INFINITY,
            "-Inf" => f64::NEG_INFINITY,
            v => v.parse().unwrap_or_else(|_| panic!("bad value in {line}")),
        };
        let name = match series.split_once('{') {
            Some((name, labels)) => {
                let labels = labels.strip_suffix('}').expect("labels end with }");
                for pair in labels.split("\",").filter(|p| !p.is_empty()) {
                    let (k, v) = pair.split_once("=\"").expect("label=\"value\"");
                    assert!(valid_name(k), "label name in {line}");
                    assert!(!v.trim_end_matches('"').contains('"'), "{line}");
                }
                assert!(labels.ends_with('"'), "{line}");
                name
            }
            None => series,
        };
        assert!(valid_name(name), "{line}");
        let family = ["_bucket", "_sum", "_count"]
            .iter()
            .find_map(|s| {
                name.strip_suffix(s)
                    .filter(|f| types.get(*f).is_some_and(|k| k == "histogram"))
            })
            .unwrap_or(name);
        let kind = types
            .get(family)
            .unwrap_or_else(|| panic!("a sample with no # TYPE before it: {line}"));
        if kind == "counter" {
            assert!(name.ends_with("_total"), "counters end in _total: {line}");
        }
        if family != name && name.ends_with("_bucket") {
            let (rest, le) = series.rsplit_once("le=\"").expect("a bucket has le");
            let key = rest.trim_end_matches(',').to_string() + "}";
            let key = key.replace("{}", "");
            let le = le.trim_end_matches("\"}").to_string();
            buckets.entry(key).or_default().push((le, value));
        }
        assert!(
            samples.insert(series.to_string(), value).is_none(),
            "a series twice: {line}"
        );
    }
    // Histograms: buckets in the order written, cumulative, the last one
    // `+Inf`, which is the count.
    assert!(!buckets.is_empty(), "histograms have buckets");
    for (series, bounds) in &buckets {
        let counts: Vec<f64> = bounds.iter().map(|(_, v)| *v).collect();
        assert!(
            counts.windows(2).all(|w| w[0] <= w[1]),
            "{series}: {bounds:?}"
        );
        assert_eq!(
            bounds.last().map(|(le, _)| le.as_str()),
            Some("+Inf"),
            "{series}"
        );
        let count_series = series.replacen("_bucket", "_count", 1);
        assert_eq!(
            counts.last(),
            samples.get(&count_series),
            "+Inf is {count_series}"
        );
    }
    samples
}

fn get(s: &Scrape, series: &str) -> f64 {
    *s.get(series)
        .unwrap_or_else(|| panic!("no {series} in {:#?}", s.keys().collect::<Vec<_>>()))
}

/// How much `series` moved between two scrapes.
fn moved(before: &Scrape, after: &Scrape, series: &str) -> f64 {
    get(after, series) - get(before, series)
}

async fn ws(addr: SocketAddr, path: &str) -> Ws {
    let stream = TcpStream::connect(addr).await.unwrap();
    let (ws, res) = client_async(format!("ws://{addr}{path}"), stream)
        .await
        .expect("handshake");
    assert_eq!(res.status(), 101);
    ws
}

/// The next text message; its payload.
async fn next_text(ws: &mut Ws) -> String {
    loop {
        match tokio::time::timeout(WAIT, ws.next())
            .await
            .expect("in time")
        {
            Some(Ok(Message::Text(t))) => return t.as_str().to_string(),
            Some(Ok(Message::Ping(_) | Message::Pong(_))) => {}
            other => panic!("expected text, got {other:?}"),
        }
    }
}

/// Closes with 1000 and reads until the server's reply ends the stream.
async fn close(mut ws: Ws) {
    ws.close(None).await.unwrap();
    while let Ok(Some(Ok(_))) = tokio::time::timeout(WAIT, ws.next()).await {}
}

/// An SSE stream of `path`, read up to the first comment; what it reads next.
struct Sse(TcpStream);

impl Sse {
    async fn open(addr: SocketAddr, path: &str, last_event_id: Option<&str>) -> Sse {
        let mut s = TcpStream::connect(addr).await.unwrap();
        let resume = last_event_id
            .map(|id| format!("Last-Event-ID: {id}\r\n"))
            .unwrap_or_default();
        let req = format!("GET {path} HTTP/1.1\r\nHost: {addr}\r\n{resume}\r\n");
        s.write_all(req.as_bytes()).await.unwrap();
        let mut sse = Sse(s);
        let got = sse.until(": ok\n\n").await;
        assert!(got.starts_with("HTTP/1."), "{got}");
        sse
    }

    /// Reads until what was read ends with `end`.
    async fn until(&mut self, end: &str) -> String {
        let mut got = Vec::new();
        while !got.ends_with(end.as_bytes()) {
            let mut b = [0u8; 1];
            let n = tokio::time::timeout(WAIT, self.0.read(&mut b))
                .await
                .expect("SSE bytes in time")
                .unwrap();
            assert_eq!(n, 1, "the stream ended: {}", String::from_utf8_lossy(&got));
            got.push(b[0]);
        }
        String::from_utf8(got).unwrap()
    }
}

/// Waits until every WebSocket and SSE connection of the app is gone (the
/// server unregisters a connection just after its close handshake).
async fn all_closed(app: &App, addr: SocketAddr) -> Scrape {
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        let s = scrape(addr).await;
        let open: f64 = ["ws", "rpc", "sse"]
            .iter()
            .map(|t| get(&s, &format!("rt_open_connections{{transport=\"{t}\"}}")))
            .sum();
        if open == 0.0 {
            assert_eq!(
                app.hub.stats().connections + app.rooms.stats().connections,
                0
            );
            return s;
        }
        assert!(tokio::time::Instant::now() < deadline, "still open: {open}");
        tokio::task::yield_now().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_count_real_ws_sse_and_rpc_traffic() {
    let app = app(Options {
        log: false,
        ..Options::default()
    });
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let server = tokio::spawn(http_serve(
        listener,
        app.handler.clone(),
        async {
            let _ = stopped.await;
        },
        ServeConfig::default(),
    ));

    let before = scrape(addr).await;
    let (status, body) = request(addr, "GET /metrics HTTP/1.1", "").await;
    assert_eq!(status, 200);
    assert!(
        body.contains("# TYPE rt_deliveries_total counter\n"),
        "{body}"
    );

    // WebSocket (/hub): two clients, each told it connected, both join a
    // room, one says something, both hear it; every payload counted.
    let mut bytes = 0;
    let mut a = ws(addr, "/hub").await;
    let mut b = ws(addr, "/hub").await;
    for c in [&mut a, &mut b] {
        let hello = next_text(c).await;
        assert!(hello.contains("connection.established"), "{hello}");
        bytes += hello.len();
        c.send(Message::text(r#"{"type":"subscribe","room":"public-m"}"#))
            .await
            .unwrap();
        let joined = next_text(c).await;
        assert!(joined.contains("subscribed"), "{joined}");
        bytes += joined.len();
    }
    a.send(Message::text(
        r#"{"type":"say","room":"public-m","data":"hi"}"#,
    ))
    .await
    .unwrap();
    for c in [&mut a, &mut b] {
        let said = next_text(c).await;
        assert!(said.contains("said") && said.contains("hi"), "{said}");
        bytes += said.len();
    }
    let during = scrape(addr).await;
    assert_eq!(
        moved(&before, &during, "rt_open_connections{transport=\"ws\"}"),
        2.0
    );
    close(a).await;

    // A refused WebSocket: a page of another origin (403), and a request
    // that is no handshake at all (400).
    let mut req = format!("ws://{addr}/ws").into_client_request().unwrap();
    req.headers_mut()
        .insert("origin", "https://evil.example".parse().unwrap());
    let refused = client_async(req, TcpStream::connect(addr).await.unwrap()).await;
    assert!(refused.is_err(), "a page of another origin is refused");
    assert_eq!(request(addr, "GET /ws HTTP/1.1", "").await.0, 400);

    // SSE: a stream on topic news gets one publish; a resume from 0
    // replays it; a resume from an id the server never gave is a gap
    // (sse-reset, then the buffer).
    let mut live = Sse::open(addr, "/events?topic=news", None).await;
    let (status, answer) = request(addr, "POST /publish?topic=news HTTP/1.1", "extra").await;
    assert_eq!((status, answer.as_str()), (202, "{\"id\":\"1\"}\n"));
    let event = live.until("data: extra\n\n").await;
    assert_eq!(event, "id: 1\ndata: extra\n\n");
    let mut resumed = Sse::open(addr, "/events?topic=news", Some("0")).await;
    let replay = resumed.until("data: extra\n\n").await;
    assert_eq!(replay, event);
    let mut gap = Sse::open(addr, "/events?topic=news", Some("999")).await;
    let reset = gap.until("data: extra\n\n").await;
    assert!(reset.starts_with("event: sse-reset\n"), "{reset}");
    let sse_bytes = 2 * event.len() + reset.len();
    let streaming = scrape(addr).await;
    assert_eq!(
        get(&streaming, "rt_open_connections{transport=\"sse\"}"),
        3.0
    );

    // ws-wrapper (/rpc): one request resolved, one rejected, one unknown.
    let mut rpc = ws(addr, "/rpc").await;
    let mut answers = Vec::new();
    for (i, call) in [r#"["echo",5]"#, r#"["fail"]"#, r#"["nope"]"#]
        .iter()
        .enumerate()
    {
        rpc.send(Message::text(format!(r#"{{"a":{call},"i":{}}}"#, i + 1)))
            .await
            .unwrap();
        answers.push(next_text(&mut rpc).await);
    }
    assert_eq!(answers[0], r#"{"i":1,"d":5}"#);
    assert!(
        answers[1].contains("nope") && answers[2].contains("No event listener"),
        "{answers:?}"
    );
    let rpc_bytes: usize = answers.iter().map(String::len).sum();

    close(b).await;
    close(rpc).await;
    drop((live, resumed, gap));
    let after = all_closed(&app, addr).await;

    let m = |series: &str| moved(&before, &after, series);
    // WebSocket: 3 messages in (2 subscribes, 1 say), 6 out (2 hellos, 2
    // subscribed, 2 said), their payload bytes; 2 connections opened and closed.
    assert_eq!(m("rt_messages_in_total{transport=\"ws\"}"), 3.0);
    assert_eq!(m("rt_deliveries_total{transport=\"ws\"}"), 6.0);
    assert_eq!(m("rt_messages_out_total{transport=\"ws\"}"), 6.0);
    // The two said events (an emit to the room) went straight to the sockets.
    let direct = m("rt_messages_written_directly_total{transport=\"ws\"}");
    assert!((2.0..=6.0).contains(&direct), "{direct}");
    assert_eq!(m("rt_bytes_out_total{transport=\"ws\"}"), bytes as f64);
    assert_eq!(m("rt_open_connections{transport=\"ws\"}"), 0.0);
    assert_eq!(
        m("rt_connection_refusals_total{transport=\"ws\",reason=\"origin\"}"),
        1.0
    );
    assert_eq!(
        m("rt_connection_refusals_total{transport=\"ws\",reason=\"handshake\"}"),
        1.0
    );
    assert_eq!(
        m("rt_connection_refusals_total{transport=\"ws\",reason=\"connections\"}"),
        0.0
    );
    assert_eq!(m("rt_dropped_messages_total{transport=\"ws\"}"), 0.0);
    assert_eq!(
        m("rt_limit_closes_total{transport=\"ws\",reason=\"queue_full\"}"),
        0.0
    );
    // The first message to each client is the one in 64 that is timed
    // (counted per client, not per hub): 2 connections.
    assert_eq!(
        m("rt_delivery_latency_seconds_count{transport=\"ws\"}"),
        2.0
    );
    assert_eq!(m("rt_queue_depth_count{transport=\"ws\"}"), 2.0);
    assert_eq!(m("rt_queue_depth_bucket{transport=\"ws\",le=\"1\"}"), 2.0);
    // SSE: one publish in; it reached the live stream and two resumes.
    assert_eq!(m("rt_messages_in_total{transport=\"sse\"}"), 1.0);
    assert_eq!(m("rt_deliveries_total{transport=\"sse\"}"), 3.0);
    assert_eq!(m("rt_bytes_out_total{transport=\"sse\"}"), sse_bytes as f64);
    assert_eq!(m("rt_sse_resumes_total"), 2.0);
    assert_eq!(m("rt_sse_replayed_events_total"), 2.0);
    assert_eq!(m("rt_sse_gaps_total"), 1.0);
    assert_eq!(get(&after, "rt_sse_topics"), 1.0, "news keeps its buffer");
    // ws-wrapper: three requests, three answers, by outcome.
    assert_eq!(m("rt_messages_in_total{transport=\"rpc\"}"), 3.0);
    assert_eq!(m("rt_messages_out_total{transport=\"rpc\"}"), 3.0);
    assert_eq!(m("rt_bytes_out_total{transport=\"rpc\"}"), rpc_bytes as f64);
    assert_eq!(m("rt_rpc_requests_total{outcome=\"resolved\"}"), 1.0);
    assert_eq!(m("rt_rpc_requests_total{outcome=\"rejected\"}"), 1.0);
    assert_eq!(m("rt_rpc_requests_total{outcome=\"unknown\"}"), 1.0);
    assert_eq!(m("rt_rpc_requests_total{outcome=\"cancelled\"}"), 0.0);
    assert_eq!(
        m("rt_delivery_latency_seconds_count{transport=\"rpc\"}"),
        1.0
    );

    // `/stats` stays JSON.
    let (status, stats) = request(addr, "GET /stats HTTP/1.1", "").await;
    assert_eq!(status, 200);
    let stats: serde_json::Value = serde_json::from_str(&stats).expect("JSON");
    assert_eq!(stats["published"], 1);
    assert_eq!(stats["hub"]["connected"], 2);
    assert_eq!(stats["rooms"], serde_json::json!({}));

    stop.send(()).unwrap();
    tokio::time::timeout(WAIT, server).await.unwrap().unwrap();
}
