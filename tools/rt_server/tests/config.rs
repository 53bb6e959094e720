//! rt-server's settings from flags, `RT_*` environment variables and a
//! `--config` TOML file, with the real binary: flag > environment > file >
//! default, and a file error names the file, the line and the key.
//!
//! Which setting won is read from what the server does: the address it
//! prints (several loopback addresses, port 0) and how many WebSocket
//! connections it takes before answering `503`.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::process::Command;
use std::time::Duration;

mod common;
use common::{BIN, Server};

/// rt-server with exactly these arguments and environment variables (no
/// other `RT_*` leaks in), until it prints its address.
fn start(args: &[&str], env: &[(&str, &str)]) -> Server {
    Server::spawn(None, args, env)
}

/// A config file in a fresh temporary folder (kept while the guard lives).
fn config(text: &str) -> (tempfile::TempDir, String) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("rt-server.toml");
    std::fs::write(&path, text).unwrap();
    (dir, path.to_str().unwrap().to_string())
}

/// The status of a WebSocket upgrade of `/ws`; the connection stays open
/// (in the returned stream) when it is `101`.
fn upgrade(addr: SocketAddr) -> (u16, TcpStream) {
    let mut s = TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    write!(
        s,
        "GET /ws HTTP/1.1\r\nHost: {addr}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
         Sec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n"
    )
    .unwrap();
    let status = read_status(&mut s);
    (status, s)
}

/// Reads a response head byte by byte (nothing after it) and returns its status.
fn read_status(s: &mut TcpStream) -> u16 {
    let mut head = Vec::new();
    let mut b = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        assert_eq!(
            s.read(&mut b).unwrap(),
            1,
            "closed before the end of the head"
        );
        head.push(b[0]);
    }
    String::from_utf8_lossy(&head[9..12]).parse().unwrap()
}

/// How many WebSocket connections the server takes before a `503`.
fn connection_limit(addr: SocketAddr) -> usize {
    let mut open = Vec::new();
    loop {
        let (status, s) = upgrade(addr);
        match status {
            101 => open.push(s),
            503 => return open.len(),
            other => panic!("unexpected status {other}"),
        }
        assert!(open.len() < 10, "no limit in sight");
    }
}

#[test]
fn env_var_and_config_file_take_effect_and_flag_wins() {
    let (_dir, file) =
        config("# rt-server settings\naddr = \"127.0.0.2:0\"\nmax-connections = 1\nquiet = true\n");
    let from_file = start(&["--config", &file], &[]);
    assert_eq!(from_file.addr.ip().to_string(), "127.0.0.2");
    assert_eq!(
        connection_limit(from_file.addr),
        1,
        "the file's max-connections"
    );
    drop(from_file);

    // RT_CONFIG names the file as --config does; the environment beats it.
    let from_env = start(
        &[],
        &[
            ("RT_CONFIG", &file),
            ("RT_ADDR", "127.0.0.3:0"),
            ("RT_MAX_CONNECTIONS", "2"),
        ],
    );
    assert_eq!(from_env.addr.ip().to_string(), "127.0.0.3");
    assert_eq!(connection_limit(from_env.addr), 2, "RT_MAX_CONNECTIONS");
    drop(from_env);

    // A flag beats both.
    let from_flag = start(
        &[
            "--config",
            &file,
            "--addr",
            "127.0.0.4:0",
            "--max-connections=3",
        ],
        &[("RT_ADDR", "127.0.0.3:0"), ("RT_MAX_CONNECTIONS", "2")],
    );
    assert_eq!(from_flag.addr.ip().to_string(), "127.0.0.4");
    assert_eq!(connection_limit(from_flag.addr), 3, "--max-connections");
}

#[test]
fn a_bad_config_file_is_refused_naming_file_line_and_key() {
    for (text, want) in [
        (
            "addr = \"127.0.0.1:0\"\n\nmax-conections = 3\n",
            ":3: max-conections: unknown key",
        ),
        (
            "addr = \"127.0.0.1:0\"\nmax_rooms = \"lots\"\n",
            ":2: max_rooms: invalid value 'lots'",
        ),
        ("quiet = \"yes\"\n", ":1: quiet: expected true or false"),
    ] {
        let (_dir, file) = config(text);
        let out = Command::new(BIN)
            .args(["--config", &file])
            .env_clear()
            .output()
            .unwrap();
        assert_eq!(out.status.code(), Some(2), "{text}");
        let err = String::from_utf8(out.stderr).unwrap();
        assert!(err.contains(&format!("{file}{want}")), "{text}: {err}");
    }
}

/// What rt-server prints on stderr when these arguments make it refuse to start.
fn refused(args: &[&str]) -> String {
    let out = Command::new(BIN).args(args).env_clear().output().unwrap();
    assert_eq!(out.status.code(), Some(2), "{args:?} should be refused");
    String::from_utf8(out.stderr).unwrap()
}

#[test]
fn a_room_history_larger_than_half_an_outbox_is_refused() {
    let err = refused(&["--addr", "127.0.0.1:0", "--room-history", "129"]);
    assert!(
        err.contains("--room-history 129") && err.contains("at most 128"),
        "{err}"
    );
    // The outbox is --outbox-messages.
    let err = refused(&[
        "--addr",
        "127.0.0.1:0",
        "--outbox-messages",
        "64",
        "--room-history",
        "33",
    ]);
    assert!(
        err.contains("--room-history 33") && err.contains("at most 32"),
        "{err}"
    );
    let _larger = start(
        &[
            "--addr",
            "127.0.0.1:0",
            "--quiet",
            "--outbox-messages",
            "512",
            "--room-history",
            "256",
        ],
        &[],
    );
}

#[test]
fn the_publish_batch_limit_follows_its_flag_within_the_sse_queue() {
    let err = refused(&[
        "--addr",
        "127.0.0.1:0",
        "--sse-queue",
        "8",
        "--max-publish-batch",
        "9",
    ]);
    assert!(
        err.contains("--max-publish-batch 9") && err.contains("--sse-queue 8"),
        "{err}"
    );
    let server = start(
        &[
            "--addr",
            "127.0.0.1:0",
            "--quiet",
            "--max-publish-batch",
            "2",
        ],
        &[],
    );
    assert_eq!(post(server.addr, "/publish/batch", r#"["a", "b"]"#), 202);
    assert_eq!(
        post(server.addr, "/publish/batch", r#"["a", "b", "c"]"#),
        400
    );
}

/// The value of one series of `GET /metrics`.
fn metric(addr: SocketAddr, series: &str) -> f64 {
    let mut s = TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    write!(
        s,
        "GET /metrics HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n"
    )
    .unwrap();
    let mut text = String::new();
    s.read_to_string(&mut text).unwrap();
    text.lines()
        .find_map(|l| l.strip_prefix(series)?.trim().parse().ok())
        .unwrap_or_else(|| panic!("no {series} in {text}"))
}

#[test]
fn direct_writes_follow_their_flag() {
    for (flag, direct) in [(None, true), (Some("--no-direct-writes"), false)] {
        let mut args = vec!["--addr", "127.0.0.1:0", "--quiet"];
        args.extend(flag);
        let server = start(&args, &[]);
        let (status, mut ws) = upgrade(server.addr);
        assert_eq!(status, 101);
        // The 101 goes out before the connection joins the hub.
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        while metric(server.addr, "rt_open_connections{transport=\"ws\"}") < 1.0 {
            assert!(std::time::Instant::now() < deadline, "never registered");
            std::thread::sleep(Duration::from_millis(5));
        }
        // One at a time: the connection's writer waits between them.
        for i in 0..3 {
            assert_eq!(post(server.addr, "/publish", &format!("m{i}")), 202);
            let mut head = [0u8; 2];
            ws.read_exact(&mut head).unwrap();
            let mut text = vec![0u8; usize::from(head[1])];
            ws.read_exact(&mut text).unwrap();
            assert_eq!((head[0], text), (0x81, format!("m{i}").into_bytes()));
        }
        let written = metric(
            server.addr,
            "rt_messages_written_directly_total{transport=\"ws\"}",
        );
        if direct {
            assert!(written >= 2.0, "{written}");
        } else {
            assert_eq!(written, 0.0, "{flag:?}");
        }
    }
}

/// The status and the start of the body of `GET path` (none for a `200`,
/// which is a stream here).
fn get(addr: SocketAddr, path: &str) -> (u16, String) {
    let mut s = TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n"
    )
    .unwrap();
    let status = read_status(&mut s);
    let mut body = vec![0u8; 512];
    let n = if status == 200 {
        0
    } else {
        s.read(&mut body).unwrap_or(0)
    };
    (status, String::from_utf8_lossy(&body[..n]).into_owned())
}

/// What the server answers a text message with on `/ws`.
#[derive(Debug, PartialEq)]
enum Answer {
    /// The message back (`/ws` sends it to every client, the sender too): its length.
    Echo(usize),
    /// A close frame: its code.
    Close(u16),
}

/// Sends one masked text frame of `len` bytes (at most 65,535) on an
/// upgraded `/ws` connection and reads the server's first frame.
fn answer_to(mut s: TcpStream, len: usize) -> Answer {
    let mut frame = vec![0x81, 0x80 | 126];
    frame.extend_from_slice(&u16::try_from(len).unwrap().to_be_bytes());
    frame.extend_from_slice(&[0, 0, 0, 0]); // the mask: zero, so the payload is as is
    frame.extend(std::iter::repeat_n(b'x', len));
    s.write_all(&frame).unwrap();
    let mut head = [0u8; 2];
    s.read_exact(&mut head).unwrap();
    match (head[0], head[1]) {
        (0x88, _) => {
            let mut code = [0u8; 2];
            s.read_exact(&mut code).unwrap();
            Answer::Close(u16::from_be_bytes(code))
        }
        (0x81, 126) => {
            let mut n = [0u8; 2];
            s.read_exact(&mut n).unwrap();
            Answer::Echo(usize::from(u16::from_be_bytes(n)))
        }
        other => panic!("unexpected frame head {other:?}"),
    }
}

#[test]
fn message_size_and_sse_topic_limits_follow_their_flags() {
    let server = start(
        &[
            "--addr",
            "127.0.0.1:0",
            "--quiet",
            "--max-message-bytes",
            "1024",
            "--sse-max-topics",
            "2",
        ],
        &[],
    );
    let (status, s) = upgrade(server.addr);
    assert_eq!(status, 101);
    assert_eq!(
        answer_to(s, 1025),
        Answer::Close(1009),
        "one byte over --max-message-bytes"
    );
    let (status, s) = upgrade(server.addr);
    assert_eq!(status, 101);
    assert_eq!(
        answer_to(s, 1024),
        Answer::Echo(1024),
        "at the limit it is taken"
    );
    let (status, body) = get(server.addr, "/events?topic=a&topic=b&topic=c");
    assert_eq!(status, 400);
    assert!(body.contains("at most 2 per stream"), "{body}");
    assert_eq!(get(server.addr, "/events?topic=a&topic=b").0, 200);
}

/// The status of `POST path` with `body`.
fn post(addr: SocketAddr, path: &str, body: &str) -> u16 {
    let mut s = TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    write!(
        s,
        "POST {path} HTTP/1.1\r\nHost: {addr}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    )
    .unwrap();
    read_status(&mut s)
}

#[test]
fn the_sse_history_flag_bounds_what_a_resume_gets() {
    let server = start(
        &["--addr", "127.0.0.1:0", "--quiet", "--sse-history", "2"],
        &[],
    );
    for e in ["e1", "e2", "e3", "e4"] {
        assert_eq!(post(server.addr, "/publish?topic=t", e), 202);
    }
    let mut s = TcpStream::connect(server.addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    write!(
        s,
        "GET /events?topic=t HTTP/1.1\r\nHost: {}\r\nLast-Event-ID: 1\r\n\r\n",
        server.addr
    )
    .unwrap();
    let mut got = String::new();
    let mut buf = [0u8; 4096];
    while !got.contains("data: e4\n") {
        let n = s.read(&mut buf).unwrap();
        assert!(n > 0, "the stream ended: {got}");
        got.push_str(&String::from_utf8_lossy(&buf[..n]));
    }
    // Events 1 and 2 are trimmed (2 kept): the resume from 1 missed 2.
    assert!(
        got.contains("\"oldest_id\":\"3\""),
        "a reset event first: {got}"
    );
    assert!(!got.contains("data: e2\n"), "{got}");
    assert!(got.find("data: e3\n") < got.find("data: e4\n"), "{got}");
}

#[test]
fn the_outbox_limits_reach_the_ws_and_hub_hubs() {
    let app = rt_server::app(rt_server::Options {
        limits: rt_server::Limits {
            outbox_messages: 7,
            outbox_bytes: 4096,
            ..rt_server::Limits::default()
        },
        ..rt_server::Options::default()
    });
    for hub in [&app.hub, &app.rooms] {
        let c = hub.config();
        assert_eq!((c.queue_messages, c.queue_bytes), (7, 4096));
    }
}

#[test]
fn the_publish_body_limit_follows_its_flag() {
    let server = start(
        &[
            "--addr",
            "127.0.0.1:0",
            "--quiet",
            "--max-publish-bytes",
            "16",
        ],
        &[],
    );
    assert_eq!(post(server.addr, "/publish?topic=t", &"x".repeat(16)), 202);
    assert_eq!(post(server.addr, "/publish?topic=t", &"x".repeat(17)), 413);
    assert_eq!(
        post(server.addr, "/emit?room=public-r", &"x".repeat(17)),
        413
    );
}

#[test]
fn a_silent_websocket_is_pinged_then_closed_on_the_flags_clock() {
    let err = refused(&[
        "--addr",
        "127.0.0.1:0",
        "--ws-ping-secs",
        "30",
        "--ws-idle-secs",
        "30",
    ]);
    assert!(
        err.contains("--ws-idle-secs 30 must be more than --ws-ping-secs 30"),
        "{err}"
    );
    let server = start(
        &[
            "--addr",
            "127.0.0.1:0",
            "--quiet",
            "--ws-ping-secs",
            "1",
            "--ws-idle-secs",
            "2",
        ],
        &[],
    );
    let (status, mut s) = upgrade(server.addr);
    assert_eq!(status, 101);
    // Not answered: the next tick past 2 s of silence closes it.
    let mut frame = [0u8; 2];
    s.read_exact(&mut frame).unwrap();
    assert_eq!(frame, [0x89, 0x00], "a ping first");
    let mut head = [0u8; 2];
    s.read_exact(&mut head).unwrap();
    assert_eq!(head[0], 0x88, "then a close");
    let mut code = [0u8; 2];
    s.read_exact(&mut code).unwrap();
    assert_eq!(u16::from_be_bytes(code), 1001, "going away: idle timeout");
}

#[test]
fn the_pending_connection_limit_follows_its_flag() {
    let server = start(
        &[
            "--addr",
            "127.0.0.1:0",
            "--quiet",
            "--max-pending-requests",
            "1",
        ],
        &[],
    );
    let mut first = TcpStream::connect(server.addr).unwrap();
    // Well within the 10 s request-head timeout, which would close it too.
    first
        .set_read_timeout(Some(Duration::from_secs(5)))
        .unwrap();
    // A second connection with no request yet: the oldest such one goes.
    let _second = TcpStream::connect(server.addr).unwrap();
    let mut b = [0u8; 1];
    match first.read(&mut b) {
        Ok(0) => {}
        Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => {}
        other => panic!("the first connection should be closed at once: {other:?}"),
    }
}

#[test]
fn the_sse_history_bytes_flag_bounds_the_topics_kept() {
    let topics = |server: &Server| {
        let mut s = TcpStream::connect(server.addr).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        write!(
            s,
            "GET /stats HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
        )
        .unwrap();
        let mut all = String::new();
        s.read_to_string(&mut all).unwrap();
        let at = all.find("\"topics\":").expect("topics in /stats") + 9;
        let digits: String = all[at..].chars().take_while(char::is_ascii_digit).collect();
        digits.parse::<u64>().unwrap()
    };
    // "id: N\ndata: x\n\n" is 15 bytes, counted with 64 more: 200 bytes hold two.
    let server = start(
        &[
            "--addr",
            "127.0.0.1:0",
            "--quiet",
            "--sse-history-bytes",
            "200",
        ],
        &[],
    );
    for t in ["t1", "t2", "t3", "t4", "t5"] {
        assert_eq!(post(server.addr, &format!("/publish?topic={t}"), "x"), 202);
    }
    assert_eq!(topics(&server), 2, "the two newest events' topics");
}

#[test]
fn every_flag_reads_an_rt_variable_and_help_shows_defaults() {
    let out = Command::new(BIN)
        .arg("--help")
        .env_clear()
        .output()
        .unwrap();
    assert!(out.status.success());
    let help = String::from_utf8(out.stdout).unwrap();
    let flags: Vec<&str> = help
        .lines()
        .filter_map(|l| l.trim_start().strip_prefix("--"))
        .filter_map(|l| l.split([' ', '<']).next())
        .filter(|f| !matches!(*f, "help" | "version"))
        .collect();
    assert!(flags.len() > 20, "{flags:?}");
    for flag in flags {
        let var = format!("[env: RT_{}", flag.to_uppercase().replace('-', "_"));
        assert!(help.contains(&var), "--{flag} reads no {var}]");
    }
    for default in [
        "[default: 127.0.0.1:8080]",
        "[default: 200]",
        "[default: text]",
        "open-file limit",
    ] {
        assert!(help.contains(default), "{default} in:\n{help}");
    }
}
