//! What the rt-server tests share: the real binary as a child process, and one raw HTTP request.
#![allow(dead_code)] // each test binary uses its own part

use std::collections::VecDeque;
use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

pub(crate) const BIN: &str = env!("CARGO_BIN_EXE_rt-server");

/// How long one plain request may take.
const REQUEST_WAIT: Duration = Duration::from_secs(15);

/// What the server wrote to stderr: lines seen, `panicked` lines, the last 40.
#[derive(Default)]
pub(crate) struct Log {
    pub(crate) lines: u64,
    pub(crate) panicked: Vec<String>,
    pub(crate) tail: VecDeque<String>,
}

/// A running `rt-server`, killed when dropped if still running.
pub(crate) struct Server {
    child: Child,
    pub(crate) addr: SocketAddr,
    pub(crate) log: Arc<Mutex<Log>>,
}

impl Server {
    /// `rt-server --addr 127.0.0.1:0 ARGS`.
    pub(crate) fn start(args: &[&str]) -> Server {
        let mut all = vec!["--addr", "127.0.0.1:0"];
        all.extend_from_slice(args);
        Server::spawn(None, &all, &[])
    }

    /// `rt-server ARGS` as they are (under `taskset -c CORES` when `cores`
    /// is given), with no `RT_*` variable of this process but those of
    /// `env`, until it prints the address it listens on. Its stderr is read
    /// into [`Server::log`].
    pub(crate) fn spawn(cores: Option<&str>, args: &[&str], env: &[(&str, &str)]) -> Server {
        let mut cmd = match cores {
            Some(cores) => {
                let mut c = Command::new("taskset");
                c.args(["-c", cores, BIN]);
                c
            }
            None => Command::new(BIN),
        };
        for (name, _) in std::env::vars_os() {
            if name.to_string_lossy().starts_with("RT_") {
                cmd.env_remove(name);
            }
        }
        let mut child = cmd
            .args(args)
            .envs(env.iter().copied())
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn rt-server");
        let log = Arc::new(Mutex::new(Log::default()));
        let stderr = child.stderr.take().expect("stderr piped");
        {
            let log = log.clone();
            std::thread::spawn(move || {
                for line in BufReader::new(stderr).lines() {
                    let Ok(line) = line else { break };
                    let mut log = log.lock().unwrap();
                    log.lines += 1;
                    if line.contains("panicked") {
                        log.panicked.push(line.clone());
                    }
                    if log.tail.len() == 40 {
                        log.tail.pop_front();
                    }
                    log.tail.push_back(line);
                }
            });
        }
        let stdout = child.stdout.take().expect("stdout piped");
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                let _ = tx.send(line);
            }
        });
        let line = rx.recv_timeout(Duration::from_secs(30));
        let addr = line
            .as_ref()
            .ok()
            .and_then(|l| l.trim().strip_prefix("rt-server listening on http://"))
            .and_then(|a| a.parse::<SocketAddr>().ok());
        let Some(mut addr) = addr else {
            let _ = child.kill();
            let _ = child.wait();
            panic!(
                "rt-server {args:?} {env:?} did not print its address (got {line:?}); stderr: {:?}",
                log.lock().unwrap().tail
            );
        };
        // A server on 0.0.0.0 is reached on loopback.
        if addr.ip().is_unspecified() {
            addr = SocketAddr::from(([127, 0, 0, 1], addr.port()));
        }
        Server { child, addr, log }
    }

    pub(crate) fn pid(&self) -> u32 {
        self.child.id()
    }

    pub(crate) fn alive(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(None))
    }

    /// The `panicked` lines of its stderr.
    pub(crate) fn panics(&self) -> Vec<String> {
        self.log.lock().unwrap().panicked.clone()
    }

    pub(crate) fn rss_kib(&self) -> u64 {
        rss_kib(self.pid())
    }

    /// SIGTERM, then the exit status (within 15 s: the drain is 5 s).
    pub(crate) fn stop(&mut self) -> Option<ExitStatus> {
        let _ = Command::new("kill")
            .args(["-TERM", &self.pid().to_string()])
            .status();
        let deadline = Instant::now() + Duration::from_secs(15);
        loop {
            if let Ok(Some(status)) = self.child.try_wait() {
                return Some(status);
            }
            if Instant::now() > deadline {
                return None;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// SIGKILL, and reaped.
    pub(crate) fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            self.kill();
        }
    }
}

/// The resident set of process `pid`, in KiB (0 when it is gone).
pub(crate) fn rss_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or(0)
}

/// One HTTP/1.1 request on a fresh connection (`Connection: close`): the
/// status and the body. `head` is the request line and any headers, each
/// line ending in `\r\n` but the last, e.g. `"POST /emit?room=r HTTP/1.1"`.
pub(crate) async fn request(addr: SocketAddr, head: &str, body: &str) -> (u16, String) {
    let mut s = TcpStream::connect(addr).await.unwrap();
    let req = format!(
        "{head}\r\nHost: {addr}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    s.write_all(req.as_bytes()).await.unwrap();
    let mut out = Vec::new();
    tokio::time::timeout(REQUEST_WAIT, s.read_to_end(&mut out))
        .await
        .expect("an answer in time")
        .unwrap();
    let out = String::from_utf8_lossy(&out);
    let status = out[9..12].parse().unwrap();
    let body = out.split_once("\r\n\r\n").map_or("", |(_, b)| b);
    (status, body.to_string())
}

/// [`request`] with a method and a path.
pub(crate) async fn http(addr: SocketAddr, method: &str, path: &str, body: &str) -> (u16, String) {
    request(addr, &format!("{method} {path} HTTP/1.1"), body).await
}
