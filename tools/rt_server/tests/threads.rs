//! `rt-server --threads N` (`RT_THREADS`) with the real binary: it runs that
//! many runtime workers (threads named `rt-worker`; the main thread only
//! waits), the default follows the cores it may run on (`taskset`), and
//! every setting serves: a broadcast on `/ws` reaches both clients,
//! `/health` answers.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::process::Command;
use std::time::{Duration, Instant};

use tokio_tungstenite::tungstenite::{self, Message};

mod common;
use common::{BIN, Server};

/// `rt-server --addr 127.0.0.1:0 --quiet ARGS` with these environment
/// variables (no other `RT_*`), through `taskset -c CORES` when `cores` is
/// given, until it prints its address.
fn start(cores: Option<&str>, args: &[&str], env: &[(&str, &str)]) -> Server {
    let mut all = vec!["--addr", "127.0.0.1:0", "--quiet"];
    all.extend_from_slice(args);
    Server::spawn(cores, &all, env)
}

/// The names of the process's threads (runtime workers are `rt-worker`).
fn thread_names(pid: u32) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(format!("/proc/{pid}/task"))
        .unwrap()
        .filter_map(|task| {
            let path = task.ok()?.path().join("comm");
            Some(std::fs::read_to_string(path).ok()?.trim().to_string())
        })
        .collect();
    names.sort();
    names
}

/// How many of the process's threads are runtime workers, once `want` of
/// them are (a new thread names itself when it first runs, which on a busy
/// machine can come late), or after 10 s.
fn workers(pid: u32, want: usize) -> usize {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let n = thread_names(pid)
            .iter()
            .filter(|n| *n == "rt-worker")
            .count();
        if n == want || Instant::now() > deadline {
            return n;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// A WebSocket on `/ws`.
fn ws(addr: SocketAddr) -> tungstenite::WebSocket<TcpStream> {
    let tcp = TcpStream::connect(addr).unwrap();
    tcp.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let (ws, _) = tungstenite::client(format!("ws://{addr}/ws"), tcp).expect("upgrade");
    ws
}

/// The next text message, skipping anything else.
fn next_text(ws: &mut tungstenite::WebSocket<TcpStream>) -> String {
    loop {
        match ws.read().expect("a message") {
            Message::Text(t) => return t.to_string(),
            _ => continue,
        }
    }
}

/// The server serves: a text message on `/ws` reaches both clients (once
/// both are registered: the sender's own copy says when), `/health` is 200.
fn serves(addr: SocketAddr) {
    let mut a = ws(addr);
    let mut b = ws(addr);
    // `b` is registered once its own broadcast comes back to it.
    b.send(Message::text("b is here")).unwrap();
    while next_text(&mut b) != "b is here" {}
    a.send(Message::text("hello from a")).unwrap();
    for ws in [&mut a, &mut b] {
        let deadline = Instant::now() + Duration::from_secs(10);
        while next_text(ws) != "hello from a" {
            assert!(Instant::now() < deadline, "the broadcast never came");
        }
    }
    let mut s = TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    write!(
        s,
        "GET /health HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n"
    )
    .unwrap();
    let mut answer = String::new();
    s.read_to_string(&mut answer).unwrap();
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
}

#[test]
fn one_thread_is_one_worker_and_serves() {
    let server = start(None, &["--threads", "1"], &[]);
    serves(server.addr);
    assert_eq!(workers(server.pid(), 1), 1);
}

#[test]
fn two_threads_are_two_workers_and_serve() {
    for (args, env) in [
        (&["--threads", "2"][..], &[][..]),
        (&[][..], &[("RT_THREADS", "2")][..]),
    ] {
        let server = start(None, args, env);
        serves(server.addr);
        let pid = server.pid();
        assert_eq!(
            workers(pid, 2),
            2,
            "{args:?} {env:?}: {:?}",
            thread_names(pid)
        );
    }
}

#[test]
fn the_default_is_the_cores_it_may_run_on() {
    if Command::new("taskset").arg("-V").output().is_err() {
        eprintln!("no taskset: skipped");
        return;
    }
    let server = start(Some("0"), &[], &[]);
    serves(server.addr);
    assert_eq!(workers(server.pid(), 1), 1, "pinned to one core");
    let cores = std::thread::available_parallelism().map_or(1, usize::from);
    if cores >= 2 {
        let server = start(Some("0,1"), &[], &[]);
        serves(server.addr);
        let pid = server.pid();
        assert_eq!(
            workers(pid, 2),
            2,
            "pinned to two cores: {:?}",
            thread_names(pid)
        );
    }
}

#[test]
fn zero_threads_is_refused() {
    let out = Command::new(BIN)
        .args(["--addr", "127.0.0.1:0", "--threads", "0"])
        .env_clear()
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("--threads"), "{err}");
}
