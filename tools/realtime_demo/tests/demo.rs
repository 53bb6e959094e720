//! The `realtime-demo` binary over real sockets: it is started on port 0,
//! WebSocket clients (tokio-tungstenite) chat in rooms, and a plain TCP
//! client reads the SSE dashboard, drops it and resumes with `Last-Event-ID`.

use std::net::SocketAddr;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use serde_json::{Value, json};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::{WebSocketStream, client_async};

/// The longest any one read may take before the test fails.
const WAIT: Duration = Duration::from_secs(10);

type Ws = WebSocketStream<TcpStream>;

/// The binary, running on a port of its choice; killed when dropped.
struct Demo {
    child: Child,
    addr: SocketAddr,
}

impl Demo {
    fn start() -> Demo {
        use std::io::BufRead;
        let mut child = Command::new(env!("CARGO_BIN_EXE_realtime-demo"))
            .args(["--addr", "127.0.0.1:0"])
            .stdout(Stdio::piped())
            .spawn()
            .expect("start realtime-demo");
        let mut line = String::new();
        std::io::BufReader::new(child.stdout.take().unwrap())
            .read_line(&mut line)
            .unwrap();
        let addr = line
            .trim()
            .strip_prefix("listening on http://")
            .unwrap_or_else(|| panic!("first line: {line:?}"))
            .parse()
            .unwrap();
        Demo { child, addr }
    }
}

impl Drop for Demo {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A chat client named `name`; its `connection.established` is read.
async fn chat(addr: SocketAddr, name: &str) -> Ws {
    let stream = TcpStream::connect(addr).await.unwrap();
    let (mut ws, res) = client_async(format!("ws://{addr}/chat?name={name}"), stream)
        .await
        .expect("handshake");
    assert_eq!(res.status(), 101);
    let hello = next(&mut ws).await;
    assert_eq!(hello["type"], "connection.established", "{hello}");
    ws
}

async fn send(ws: &mut Ws, value: Value) {
    ws.send(Message::text(value.to_string())).await.unwrap();
}

/// The next event the server sent.
async fn next(ws: &mut Ws) -> Value {
    loop {
        let msg = tokio::time::timeout(WAIT, ws.next())
            .await
            .expect("an event in time")
            .expect("the connection is open")
            .expect("a message");
        if let Message::Text(text) = msg {
            return serde_json::from_str(&text).unwrap();
        }
    }
}

/// Events until one of `kind` for which `pred` holds; returns it and those before it.
async fn until(ws: &mut Ws, kind: &str, pred: impl Fn(&Value) -> bool) -> (Value, Vec<Value>) {
    let mut before = Vec::new();
    loop {
        let ev = next(ws).await;
        if ev["type"] == kind && pred(&ev["data"]) {
            return (ev, before);
        }
        before.push(ev);
    }
}

async fn join(ws: &mut Ws, room: &str) {
    send(ws, json!({ "type": "subscribe", "room": room })).await;
    until(ws, "subscribed", |d| d["room"] == room).await;
}

async fn say(ws: &mut Ws, room: &str, text: &str) {
    send(ws, json!({ "type": "say", "room": room, "text": text })).await;
}

fn names(members: &Value) -> Vec<&str> {
    members["members"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["name"].as_str().unwrap())
        .collect()
}

#[tokio::test]
async fn a_message_reaches_the_members_of_its_room_only() {
    let demo = Demo::start();
    let (mut ana, mut bob, mut cy) = (
        chat(demo.addr, "ana").await,
        chat(demo.addr, "bob").await,
        chat(demo.addr, "cy").await,
    );
    join(&mut ana, "A").await;
    join(&mut bob, "A").await;
    join(&mut cy, "B").await;

    // Who is here: both members of A, told to each of them.
    let both = |d: &Value| d["room"] == "A" && names(d) == ["ana", "bob"];
    let (members, _) = until(&mut ana, "members", both).await;
    assert_eq!(members["data"]["count"], 2);
    until(&mut bob, "members", both).await;

    say(&mut ana, "A", "hello A").await;
    let (got, _) = until(&mut bob, "message", |_| true).await;
    assert_eq!(
        (
            &got["data"]["room"],
            &got["data"]["from"],
            &got["data"]["text"]
        ),
        (&json!("A"), &json!("ana"), &json!("hello A"))
    );
    // The sender is a member: it gets its message too.
    until(&mut ana, "message", |d| d["text"] == "hello A").await;

    // "hello A" was queued for A's members before cy says anything: had cy
    // got it, it would come before cy's own message.
    say(&mut cy, "B", "hello B").await;
    let (own, before) = until(&mut cy, "message", |_| true).await;
    assert_eq!(own["data"]["text"], "hello B");
    assert!(
        before.iter().all(|e| e["type"] != "message"),
        "cy got {before:?}"
    );

    // A non-member cannot say anything to A.
    say(&mut cy, "A", "sneaky").await;
    let (refused, _) = until(&mut cy, "error", |_| true).await;
    assert_eq!(refused["data"]["message"], "join room 'A' first");
    say(&mut ana, "A", "still here").await;
    let (next_msg, _) = until(&mut bob, "message", |_| true).await;
    assert_eq!(next_msg["data"]["text"], "still here");

    // bob leaves: ana is told who is left; bob's room list is his alone.
    send(&mut bob, json!({ "type": "unsubscribe", "room": "A" })).await;
    until(&mut bob, "unsubscribed", |d| d["room"] == "A").await;
    until(&mut ana, "members", |d| names(d) == ["ana"]).await;

    // A connection that ends leaves its rooms too.
    join(&mut cy, "A").await;
    until(&mut ana, "members", |d| names(d) == ["ana", "cy"]).await;
    cy.close(None).await.unwrap();
    until(&mut ana, "members", |d| names(d) == ["ana"]).await;
}

/// An SSE response being read: head done, body chunked or close-delimited
/// (`http_serve` writes long-lived bodies straight to the socket).
struct Sse {
    reader: BufReader<TcpStream>,
    chunked: bool,
    pending: String,
}

/// One SSE event: its id, type and data.
#[derive(Debug, Clone, PartialEq)]
struct SseEvent {
    id: String,
    event: String,
    data: String,
}

impl Sse {
    async fn open(addr: SocketAddr, path: &str, last_event_id: Option<&str>) -> Sse {
        let mut stream = TcpStream::connect(addr).await.unwrap();
        let resume = last_event_id.map_or(String::new(), |id| format!("Last-Event-ID: {id}\r\n"));
        let req = format!(
            "GET {path} HTTP/1.1\r\nHost: {addr}\r\nAccept: text/event-stream\r\n{resume}\r\n"
        );
        stream.write_all(req.as_bytes()).await.unwrap();
        let mut reader = BufReader::new(stream);
        let head = read_head(&mut reader).await;
        assert!(head.contains(" 200 OK\r\n"), "{head}");
        let head = head.to_ascii_lowercase();
        assert!(head.contains("content-type: text/event-stream"), "{head}");
        Sse {
            reader,
            chunked: head.contains("transfer-encoding: chunked"),
            pending: String::new(),
        }
    }

    /// The next event (comments and `retry:` skipped).
    async fn next(&mut self) -> SseEvent {
        loop {
            if let Some(end) = self.pending.find("\n\n") {
                let block: String = self.pending.drain(..end + 2).collect();
                let mut ev = SseEvent {
                    id: String::new(),
                    event: String::new(),
                    data: String::new(),
                };
                for line in block.lines() {
                    if let Some((field, value)) = line.split_once(": ") {
                        match field {
                            "id" => ev.id = value.into(),
                            "event" => ev.event = value.into(),
                            "data" => ev.data = value.into(),
                            _ => {}
                        }
                    }
                }
                if !ev.data.is_empty() {
                    return ev;
                }
                continue;
            }
            let chunk = tokio::time::timeout(WAIT, read_body(&mut self.reader, self.chunked))
                .await
                .expect("an event in time");
            self.pending.push_str(&chunk);
        }
    }
}

async fn read_head(reader: &mut BufReader<TcpStream>) -> String {
    let mut head = String::new();
    loop {
        let mut line = String::new();
        let n = tokio::time::timeout(WAIT, reader.read_line(&mut line))
            .await
            .expect("a response in time")
            .unwrap();
        assert!(n > 0, "the connection closed in the head: {head}");
        if line == "\r\n" {
            return head;
        }
        head.push_str(&line);
    }
}

/// The next piece of a body: a chunk, or what the socket has.
async fn read_body(reader: &mut BufReader<TcpStream>, chunked: bool) -> String {
    if !chunked {
        let mut buf = vec![0; 4096];
        let n = reader.read(&mut buf).await.unwrap();
        assert!(n > 0, "the stream ended");
        buf.truncate(n);
        return String::from_utf8(buf).unwrap();
    }
    let mut size = String::new();
    reader.read_line(&mut size).await.unwrap();
    let size = usize::from_str_radix(size.trim(), 16).expect("a chunk size");
    assert!(size > 0, "the stream ended");
    let mut chunk = vec![0; size + 2];
    reader.read_exact(&mut chunk).await.unwrap();
    chunk.truncate(size);
    String::from_utf8(chunk).unwrap()
}

#[tokio::test]
async fn the_dashboard_resumes_with_last_event_id_without_a_gap() {
    let demo = Demo::start();
    let mut sse = Sse::open(demo.addr, "/events", None).await;
    let first = sse.next().await;
    let second = sse.next().await;
    for ev in [&first, &second] {
        assert_eq!(ev.event, "stats");
        let figures: Value = serde_json::from_str(&ev.data).unwrap();
        assert_eq!(figures["connections"]["sse"], 1, "{figures}");
        assert!(figures["rss_bytes"].as_u64().is_some_and(|b| b > 0));
    }
    let id = |ev: &SseEvent| ev.id.parse::<u64>().expect("a numeric id");
    assert_eq!(id(&second), id(&first) + 1);
    drop(sse);

    // Back from the first id, as if the second were lost: the second is
    // replayed as it was, then the stream goes on, every id once, in order.
    let mut resumed = Sse::open(demo.addr, "/events", Some(&first.id)).await;
    let replayed = resumed.next().await;
    assert_eq!(replayed, second);
    let mut last = id(&replayed);
    for _ in 0..2 {
        let ev = resumed.next().await;
        assert_eq!(id(&ev), last + 1, "{ev:?}");
        last = id(&ev);
    }

    // `?lastEventId=` (what the page sends after its drop button) does the same.
    let mut by_query = Sse::open(
        demo.addr,
        &format!("/events?lastEventId={}", second.id),
        None,
    )
    .await;
    assert_eq!(id(&by_query.next().await), id(&second) + 1);
}

/// The response to `GET path` with these extra header lines: the head, and
/// the body unless it is a `101` (whose connection stays open).
async fn get(addr: SocketAddr, path: &str, headers: &str) -> String {
    let mut stream = TcpStream::connect(addr).await.unwrap();
    let req = format!("GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n{headers}\r\n");
    stream.write_all(req.as_bytes()).await.unwrap();
    let mut reader = BufReader::new(stream);
    let mut res = read_head(&mut reader).await;
    if !res.starts_with("HTTP/1.1 101") {
        tokio::time::timeout(WAIT, reader.read_to_string(&mut res))
            .await
            .expect("a body in time")
            .unwrap();
    }
    res
}

const UPGRADE: &str = "Upgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n";

#[tokio::test]
async fn bad_input_gets_a_clear_answer_and_the_server_stays_up() {
    let demo = Demo::start();
    let addr = demo.addr;

    // The page and its assets, kept to this origin.
    let page = get(addr, "/", "").await;
    assert!(page.starts_with("HTTP/1.1 200"), "{page}");
    assert!(page.contains("content-security-policy: default-src 'self'"));
    assert!(page.contains("<script src=\"/app.js\""));
    let js = get(addr, "/app.js", "").await;
    assert!(js.contains("content-type: text/javascript"), "{js}");

    // WebSockets: a page of another origin, no name, a name too long.
    let mut cross = format!("ws://{addr}/chat?name=eve")
        .into_client_request()
        .unwrap();
    cross
        .headers_mut()
        .insert("origin", "http://evil.example".parse().unwrap());
    let refused = client_async(cross, TcpStream::connect(addr).await.unwrap()).await;
    match refused {
        Err(tokio_tungstenite::tungstenite::Error::Http(res)) => assert_eq!(res.status(), 403),
        other => panic!("a cross-origin upgrade: {other:?}"),
    }
    let same_origin = format!("Origin: http://{addr}\r\n");
    let res = get(addr, "/chat?name=ana", &format!("{UPGRADE}{same_origin}")).await;
    assert!(res.starts_with("HTTP/1.1 101"), "{res}");
    let res = get(addr, "/chat", UPGRADE).await;
    assert!(
        res.starts_with("HTTP/1.1 400") && res.contains("pick a name"),
        "{res}"
    );
    let long = "n".repeat(realtime_demo::MAX_NAME_CHARS + 1);
    let res = get(addr, &format!("/chat?name={long}"), UPGRADE).await;
    assert!(
        res.starts_with("HTTP/1.1 400") && res.contains("at most"),
        "{res}"
    );

    // SSE: a topic that is not the dashboard's, an id that is not printable.
    let res = get(addr, "/events?topic=secrets", "").await;
    assert!(res.starts_with("HTTP/1.1 400"), "{res}");
    let res = get(addr, "/events", "Last-Event-ID: \u{1}\r\n").await;
    assert!(res.starts_with("HTTP/1.1 400"), "{res}");

    // Messages that are not what the chat expects: an error event each,
    // and the connection stays open.
    let mut ws = chat(addr, "ana").await;
    let long_room = "r".repeat(realtime_demo::MAX_ROOM_CHARS + 1);
    let long_text = "x".repeat(realtime_demo::MAX_TEXT_CHARS + 1);
    let bad = [
        Message::text("not json"),
        Message::text("[1, 2, 3]"),
        Message::binary(vec![0u8, 159, 146, 150]),
        Message::text(r#"{"type":"subscribe"}"#),
        Message::text(json!({ "type": "subscribe", "room": long_room }).to_string()),
        Message::text(json!({ "type": "say", "room": "A", "text": long_text }).to_string()),
        Message::text(json!({ "type": "say", "room": "A", "text": "   " }).to_string()),
    ];
    let count = bad.len();
    for msg in bad {
        ws.send(msg).await.unwrap();
    }
    for _ in 0..count {
        let ev = next(&mut ws).await;
        assert_eq!(ev["type"], "error", "{ev}");
        assert!(
            ev["data"]["message"]
                .as_str()
                .is_some_and(|m| !m.is_empty())
        );
    }
    send(&mut ws, json!({ "type": "ping" })).await;
    assert_eq!(next(&mut ws).await["type"], "pong");

    // A message over the size limit closes that connection only (1009).
    let mut big = chat(addr, "bob").await;
    big.send(Message::text(
        "x".repeat(realtime_demo::MAX_MESSAGE_BYTES + 1),
    ))
    .await
    .unwrap();
    let closed = loop {
        match tokio::time::timeout(WAIT, big.next())
            .await
            .expect("a close in time")
        {
            Some(Ok(Message::Close(frame))) => break frame,
            Some(Ok(_)) => {}
            other => panic!("expected a close frame, got {other:?}"),
        }
    };
    assert_eq!(closed.map(|f| u16::from(f.code)), Some(1009));
    send(&mut ws, json!({ "type": "ping" })).await;
    assert_eq!(next(&mut ws).await["type"], "pong");
}
