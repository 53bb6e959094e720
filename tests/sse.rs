//! SSE end to end: the reference server's app on `http_serve`, real TCP on
//! 127.0.0.1:0, a real HTTP/1.1 client.

use std::net::SocketAddr;
use std::time::Duration;

use http_body_util::BodyExt;
use http_serve::ServeStats;
use hyper::body::Incoming;
use hyper_util::rt::TokioIo;
use rt_server::{Options, app};
use sse_broker::SseBroker;
use tokio::net::TcpStream;

mod serving;
use serving::Serving;

struct Server {
    addr: SocketAddr,
    broker: SseBroker,
    serving: Serving,
}

impl Server {
    async fn start(options: Options, drain: Duration) -> Server {
        let rt_server::App {
            handler, broker, ..
        } = app(Options {
            log: false,
            ..options
        });
        let serving = Serving::start(handler, drain).await;
        Server {
            addr: serving.addr,
            broker,
            serving,
        }
    }

    async fn stop(self) -> ServeStats {
        self.serving.stop().await
    }

    async fn publish(&self, data: &str) -> u64 {
        let (status, body) =
            request(self.addr, "POST", "/publish", data.as_bytes().to_vec(), &[]).await;
        assert_eq!(status, 202, "{body}");
        let answer: serde_json::Value = serde_json::from_str(&body).unwrap();
        // The id is the SSE event id, a string (a number on one node).
        answer["id"].as_str().unwrap().parse().unwrap()
    }

    /// Waits until the broker has `n` subscribers (bounded by a deadline).
    async fn subscribers(&self, n: usize) {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
        while self.broker.stats().subscribers != n {
            assert!(
                tokio::time::Instant::now() < deadline,
                "subscribers stuck at {:?}, want {n}",
                self.broker.stats()
            );
            tokio::task::yield_now().await;
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
    }
}

async fn send(
    addr: SocketAddr,
    method: &str,
    path: &str,
    body: Vec<u8>,
    headers: &[(&str, &str)],
) -> hyper::Response<Incoming> {
    let stream = TcpStream::connect(addr).await.unwrap();
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .unwrap();
    tokio::spawn(conn);
    let mut req = hyper::Request::builder()
        .method(method)
        .uri(path)
        .header("host", "test");
    for (k, v) in headers {
        req = req.header(*k, *v);
    }
    sender
        .send_request(
            req.body(http_body_util::Full::new(hyper::body::Bytes::from(body)))
                .unwrap(),
        )
        .await
        .unwrap()
}

async fn request(
    addr: SocketAddr,
    method: &str,
    path: &str,
    body: Vec<u8>,
    headers: &[(&str, &str)],
) -> (u16, String) {
    let res = send(addr, method, path, body, headers).await;
    let status = res.status().as_u16();
    let bytes = res.into_body().collect().await.unwrap().to_bytes();
    (status, String::from_utf8_lossy(&bytes).into_owned())
}

/// One parsed event: (event type, data, id).
type Event = (String, String, String);

/// A subscriber reading and parsing the stream (WHATWG rules, enough for these tests).
struct Client {
    body: Incoming,
    buf: String,
    last_id: String,
}

impl Client {
    async fn connect(addr: SocketAddr, path: &str, headers: &[(&str, &str)]) -> Client {
        let res = send(addr, "GET", path, Vec::new(), headers).await;
        assert_eq!(res.status(), 200);
        assert_eq!(res.headers()["content-type"], "text/event-stream");
        Client {
            body: res.into_body(),
            buf: String::new(),
            last_id: String::new(),
        }
    }

    /// The next dispatched event, or None when the stream ends.
    async fn next(&mut self) -> Option<Event> {
        loop {
            if let Some(end) = self.buf.find("\n\n") {
                let block: String = self.buf.drain(..end + 2).collect();
                let (mut ty, mut data, mut has_data) = (String::new(), Vec::new(), false);
                for line in block.lines() {
                    if line.starts_with(':') || line.is_empty() {
                        continue;
                    }
                    let (k, v) = line
                        .split_once(':')
                        .map_or((line, ""), |(k, v)| (k, v.strip_prefix(' ').unwrap_or(v)));
                    match k {
                        "event" => ty = v.to_string(),
                        "data" => {
                            data.push(v.to_string());
                            has_data = true;
                        }
                        "id" => self.last_id = v.to_string(),
                        _ => {}
                    }
                }
                if has_data {
                    let ty = if ty.is_empty() { "message".into() } else { ty };
                    return Some((ty, data.join("\n"), self.last_id.clone()));
                }
                continue;
            }
            match self.body.frame().await {
                Some(Ok(frame)) => {
                    if let Ok(d) = frame.into_data() {
                        self.buf.push_str(&String::from_utf8_lossy(&d));
                    }
                }
                _ => return None,
            }
        }
    }

    async fn take(&mut self, n: usize) -> Vec<Event> {
        let mut out = Vec::with_capacity(n);
        for _ in 0..n {
            out.push(
                tokio::time::timeout(Duration::from_secs(10), self.next())
                    .await
                    .expect("event in time")
                    .expect("stream open"),
            );
        }
        out
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_subscriber_receives_every_event_in_order() {
    let server = Server::start(Options::default(), Duration::from_secs(5)).await;
    let mut clients = Vec::new();
    for _ in 0..4 {
        clients.push(Client::connect(server.addr, "/events", &[]).await);
    }
    server.subscribers(4).await;
    for i in 0..50 {
        server.publish(&format!("event {i}")).await;
    }
    for c in &mut clients {
        let got: Vec<String> = c.take(50).await.into_iter().map(|e| e.1).collect();
        let want: Vec<String> = (0..50).map(|i| format!("event {i}")).collect();
        assert_eq!(got, want);
    }
    assert_eq!(server.stop().await.aborted, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn resume_with_last_event_id_loses_nothing_and_duplicates_nothing() {
    let server = Server::start(Options::default(), Duration::from_secs(5)).await;
    let mut c = Client::connect(server.addr, "/events", &[]).await;
    server.subscribers(1).await;
    for i in 0..5 {
        server.publish(&format!("a{i}")).await;
    }
    let first = c.take(3).await;
    let last = first[2].2.clone();
    drop(c);
    server.subscribers(0).await;
    for i in 0..5 {
        server.publish(&format!("b{i}")).await;
    }
    let mut again = Client::connect(server.addr, "/events", &[("last-event-id", &last)]).await;
    server.subscribers(1).await;
    server.publish("c0").await;
    let got: Vec<String> = again.take(8).await.into_iter().map(|e| e.1).collect();
    assert_eq!(got, ["a3", "a4", "b0", "b1", "b2", "b3", "b4", "c0"]);
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn too_old_last_event_id_is_told_explicitly() {
    let server = Server::start(
        Options {
            replay: 3,
            ..Options::default()
        },
        Duration::from_secs(5),
    )
    .await;
    for i in 0..10 {
        server.publish(&format!("e{i}")).await;
    }
    let mut c = Client::connect(server.addr, "/events?lastEventId=2", &[]).await;
    let got = c.take(4).await;
    assert_eq!(got[0].0, "sse-reset");
    assert!(got[0].1.contains("\"last_event_id\":\"2\""), "{:?}", got[0]);
    let rest: Vec<&str> = got[1..].iter().map(|e| e.1.as_str()).collect();
    assert_eq!(rest, ["e7", "e8", "e9"]);
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stalled_subscriber_is_cut_off_while_others_keep_receiving() {
    let server = Server::start(
        Options {
            queue: 4,
            ..Options::default()
        },
        Duration::from_secs(5),
    )
    .await;
    // Connected but never reads: kernel buffers fill, then its queue.
    let stalled = send(server.addr, "GET", "/events", Vec::new(), &[]).await;
    let mut reader = Client::connect(server.addr, "/events", &[]).await;
    server.subscribers(2).await;
    let big = "x".repeat(64 * 1024);
    let mut received = 0;
    for i in 0..400 {
        server.publish(&format!("{i} {big}")).await;
        // Keep reading alongside, like a healthy client.
        let e = reader.take(1).await;
        assert!(e[0].1.starts_with(&format!("{i} ")));
        received += 1;
        if server.broker.stats().slow_dropped == 1 {
            break;
        }
    }
    assert_eq!(
        server.broker.stats().slow_dropped,
        1,
        "the stalled stream was ended"
    );
    for i in received..received + 20 {
        server.publish(&format!("after {i}")).await;
        assert_eq!(reader.take(1).await[0].1, format!("after {i}"));
    }
    drop(stalled);
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_with_open_streams_returns_within_the_drain_timeout() {
    let server = Server::start(Options::default(), Duration::from_secs(30)).await;
    let mut clients = Vec::new();
    for _ in 0..3 {
        clients.push(Client::connect(server.addr, "/events", &[]).await);
    }
    server.subscribers(3).await;
    let started = std::time::Instant::now();
    let stats = server.stop().await;
    assert_eq!(stats.aborted, 0, "the streams ended on the shutdown signal");
    assert!(
        started.elapsed() < Duration::from_secs(30),
        "returned before the drain timeout"
    );
    for c in &mut clients {
        assert_eq!(c.next().await, None, "the stream ended cleanly");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_thousand_subscribe_disconnect_cycles_leave_nothing_behind() {
    let metrics = tokio::runtime::Handle::current().metrics();
    let server = Server::start(Options::default(), Duration::from_secs(5)).await;
    // The SSE handler's one keep-alive ticker starts with the first stream
    // and stays: one task for all streams, not one per stream.
    let before = metrics.num_alive_tasks() + 1;
    for _ in 0..1000 {
        let mut res = send(server.addr, "GET", "/events", Vec::new(), &[]).await;
        let first = res
            .body_mut()
            .frame()
            .await
            .unwrap()
            .unwrap()
            .into_data()
            .unwrap();
        assert_eq!(&first[..], b": ok\n\n");
    }
    server.subscribers(0).await;
    let st = server.broker.stats();
    assert_eq!((st.subscribers, st.topics), (0, 0));
    // Connection tasks end with their sockets.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while metrics.num_alive_tasks() > before {
        assert!(
            tokio::time::Instant::now() < deadline,
            "{} tasks alive, {before} before",
            metrics.num_alive_tasks()
        );
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    server.stop().await;
}

/// `POST /publish/batch`: events in order with consecutive ids, each
/// resumable on its own; a bad batch is refused whole with a clear error.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_batch_publish_reaches_every_stream_in_order_all_or_nothing() {
    let server = Server::start(Options::default(), Duration::from_secs(5)).await;
    let batch = |body: &str| {
        request(
            server.addr,
            "POST",
            "/publish/batch?topic=news&event=update",
            body.as_bytes().to_vec(),
            &[],
        )
    };
    let mut clients = Vec::new();
    for _ in 0..2 {
        clients.push(Client::connect(server.addr, "/events?topic=news", &[]).await);
    }
    server.subscribers(2).await;
    let (status, body) = request(
        server.addr,
        "POST",
        "/publish?topic=news",
        b"a".to_vec(),
        &[],
    )
    .await;
    assert_eq!(status, 202, "{body}");
    let (status, body) = batch(r#"["b", {"data": "c", "event": "note"}, {"data": "d\ne"}]"#).await;
    assert_eq!((status, body.trim_end()), (202, r#"{"ids":["2","3","4"]}"#));
    let ev = |ty: &str, data: &str, id: &str| (ty.to_string(), data.to_string(), id.to_string());
    let want = vec![
        ev("message", "a", "1"),
        ev("update", "b", "2"),
        ev("note", "c", "3"),
        ev("update", "d\ne", "4"),
    ];
    for c in &mut clients {
        assert_eq!(c.take(4).await, want);
    }
    let mut resumed =
        Client::connect(server.addr, "/events?topic=news", &[("last-event-id", "2")]).await;
    assert_eq!(resumed.take(2).await, want[2..]);

    for (body, says) in [
        ("not json", "JSON array"),
        (r#"{"data": "x"}"#, "JSON array"),
        (r#"["ok", {"data": 1}]"#, "event 1 is not"),
        (r#"[{"data": "x", "id": "9"}]"#, "unknown field"),
        (r#"["ok", {"data": "x", "event": "bad name\n"}]"#, "event"),
    ] {
        let (status, answer) = batch(body).await;
        assert_eq!(status, 400, "{body}: {answer}");
        assert!(answer.contains(says), "{body}: {answer}");
    }
    let too_many = serde_json::to_string(&vec!["x"; rt_server::MAX_BATCH + 1]).unwrap();
    let (status, answer) = batch(&too_many).await;
    assert_eq!(status, 400);
    assert!(answer.contains("at most 100"), "{answer}");
    assert_eq!(server.broker.last_id(), 4, "a refused batch takes no id");
    let (status, body) = batch("[]").await;
    assert_eq!((status, body.trim_end()), (202, r#"{"ids":[]}"#));
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn publish_refuses_bad_bodies_and_routes_answer_404_405() {
    let server = Server::start(Options::default(), Duration::from_secs(5)).await;
    let (status, _) = request(server.addr, "POST", "/publish", vec![0xff, 0xfe], &[]).await;
    assert_eq!(status, 400);
    let (status, _) = request(
        server.addr,
        "POST",
        "/publish",
        vec![b'x'; rt_server::MAX_PUBLISH + 1],
        &[],
    )
    .await;
    assert_eq!(status, 413);
    assert_eq!(
        request(server.addr, "GET", "/nope", Vec::new(), &[])
            .await
            .0,
        404
    );
    assert_eq!(
        request(server.addr, "DELETE", "/events", Vec::new(), &[])
            .await
            .0,
        405
    );
    server.stop().await;
}

/// The handlers are tower services: mount `sse_handler` in a hyper service
/// built from `tower_service::Service` calls, as axum would.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sse_handler_mounts_as_a_tower_service() {
    use tower_service::Service;
    let broker = SseBroker::new(sse_broker::BrokerConfig::default());
    let mut svc = sse_handler::sse_handler(broker.clone(), sse_handler::SseConfig::default());
    let req = http::Request::builder()
        .uri("/events")
        .body(http_body_util::Empty::<hyper::body::Bytes>::new())
        .unwrap();
    std::future::poll_fn(|cx| {
        Service::<http::Request<http_body_util::Empty<hyper::body::Bytes>>>::poll_ready(
            &mut svc, cx,
        )
    })
    .await
    .unwrap();
    let mut res = Service::call(&mut svc, req).await.unwrap();
    assert_eq!(res.headers()["content-type"], "text/event-stream");
    broker
        .publish("hub", sse_event::SseEvent::data("via tower"))
        .unwrap();
    let mut got = Vec::new();
    while !String::from_utf8_lossy(&got).contains("via tower") {
        got.extend_from_slice(
            &res.body_mut()
                .frame()
                .await
                .unwrap()
                .unwrap()
                .into_data()
                .unwrap(),
        );
    }
}
