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
    let mut head = Vec::new();
    let mut b = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        assert_eq!(s.read(&mut b).unwrap(), 1, "closed during the handshake");
        head.push(b[0]);
    }
    let head = String::from_utf8(head).unwrap();
    let status = head[9..12].parse().unwrap();
    (status, s)
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

#[test]
fn a_room_history_larger_than_half_an_outbox_is_refused() {
    let out = Command::new(BIN)
        .args(["--addr", "127.0.0.1:0", "--room-history", "129"])
        .env_clear()
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8(out.stderr).unwrap();
    assert!(
        err.contains("--room-history 129") && err.contains("at most 128"),
        "{err}"
    );
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
