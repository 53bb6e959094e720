//! A throwaway `redis-server` for tests and demos: a free loopback port, no
//! persistence, killed by its pid when dropped.
//!
//! Not for production: it exists so that this crate's tests and the
//! workspace's (several `rt-server` processes on one Redis) start the same
//! server the same way. It runs the `redis-server` on the `PATH` (or the one
//! the `REDIS_SERVER` environment variable names) with `--save ""
//! --appendonly no`, bound to 127.0.0.1, and returns once the server has
//! logged that it accepts connections. [`RedisServer::stop`] and
//! [`RedisServer::restart`] (same port) make outages, and
//! [`RedisServer::pause`] and [`RedisServer::resume`] a server that stops
//! answering without closing its connections.
//!
//! ```no_run
//! use backplane_redis::testing::RedisServer;
//!
//! let mut redis = RedisServer::start().expect("redis-server is installed");
//! let url = redis.url(); // redis://127.0.0.1:PORT
//! redis.stop(); // SIGKILL: clients see the connection drop
//! redis.restart().unwrap(); // the same port, empty
//! # let _ = url;
//! ```

use std::io::{self, BufRead, BufReader};
use std::net::TcpListener;
use std::process::{Child, ChildStdout, Command, Stdio};

/// A `redis-server` child process on a loopback port, killed (by its pid)
/// when dropped.
#[derive(Debug)]
pub struct RedisServer {
    port: u16,
    child: Option<Child>,
}

impl RedisServer {
    /// Starts a server on a free port and waits until it accepts connections.
    ///
    /// # Errors
    ///
    /// `redis-server` is not installed (the error says which package to
    /// install), or it did not start on any of a few free ports.
    pub fn start() -> io::Result<RedisServer> {
        let mut last = None;
        for _ in 0..5 {
            let port = TcpListener::bind("127.0.0.1:0")?.local_addr()?.port();
            let mut server = RedisServer { port, child: None };
            match server.restart() {
                Ok(()) => return Ok(server),
                Err(e) if e.kind() == io::ErrorKind::NotFound => return Err(e),
                // Another process took the port between our probe and the
                // server's bind: try another one.
                Err(e) => last = Some(e),
            }
        }
        Err(last.unwrap_or_else(|| io::Error::other("redis-server did not start")))
    }

    /// The port it listens on (kept across [`restart`](Self::restart)).
    pub fn port(&self) -> u16 {
        self.port
    }

    /// `redis://127.0.0.1:PORT`.
    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }

    /// The server's process id, while it runs.
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    /// Kills the server (SIGKILL, by its pid) and waits for it to exit: its
    /// clients' connections drop at once and all its data is gone. Does
    /// nothing if it is not running.
    pub fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Freezes the server (SIGSTOP to its pid): connections stay open but
    /// nothing answers, as when the network drops packets.
    ///
    /// # Errors
    ///
    /// The server is not running, or the signal could not be sent.
    pub fn pause(&self) -> io::Result<()> {
        self.signal("STOP")
    }

    /// Lets a [`pause`](Self::pause)d server run again (SIGCONT).
    ///
    /// # Errors
    ///
    /// The server is not running, or the signal could not be sent.
    pub fn resume(&self) -> io::Result<()> {
        self.signal("CONT")
    }

    fn signal(&self, signal: &str) -> io::Result<()> {
        let pid = self
            .pid()
            .ok_or_else(|| io::Error::other("redis-server is not running"))?;
        let status = Command::new("sh")
            .arg("-c")
            .arg(format!("kill -{signal} {pid}"))
            .status()?;
        if status.success() {
            Ok(())
        } else {
            Err(io::Error::other(format!("kill -{signal} {pid}: {status}")))
        }
    }

    /// Stops the server if it runs, then starts a new, empty one on the same
    /// port and waits until it accepts connections.
    ///
    /// # Errors
    ///
    /// `redis-server` is not installed, or it exited before accepting
    /// connections (the error holds its last log lines).
    pub fn restart(&mut self) -> io::Result<()> {
        self.stop();
        let binary = std::env::var_os("REDIS_SERVER").unwrap_or_else(|| "redis-server".into());
        let mut child = Command::new(&binary)
            .args(["--port", &self.port.to_string(), "--bind", "127.0.0.1"])
            .args(["--save", "", "--appendonly", "no", "--logfile", ""])
            .arg("--dir")
            .arg(std::env::temp_dir())
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .map_err(|e| {
                if e.kind() == io::ErrorKind::NotFound {
                    io::Error::new(
                        e.kind(),
                        format!(
                            "{} not found: install redis-server 7 or later (Debian package `redis-server`), or set REDIS_SERVER",
                            binary.to_string_lossy()
                        ),
                    )
                } else {
                    e
                }
            })?;
        let stdout = child.stdout.take().expect("stdout is piped");
        match wait_ready(stdout) {
            Ok(()) => {
                self.child = Some(child);
                Ok(())
            }
            Err(e) => {
                let _ = child.kill();
                let _ = child.wait();
                Err(e)
            }
        }
    }
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        self.stop();
    }
}

/// Reads the server's log until it says it accepts connections; the rest of
/// the log is drained by a thread (which ends when the server exits), so the
/// server never blocks on a full pipe. The log ending first (the server
/// exited) is an error carrying its last lines.
fn wait_ready(stdout: ChildStdout) -> io::Result<()> {
    let mut reader = BufReader::new(stdout);
    let mut tail: Vec<String> = Vec::new();
    let mut line = String::new();
    loop {
        line.clear();
        if reader.read_line(&mut line)? == 0 {
            return Err(io::Error::other(format!(
                "redis-server exited before accepting connections: {}",
                tail.join(" | ")
            )));
        }
        if line.contains("Ready to accept connections") {
            std::thread::spawn(move || io::copy(&mut reader, &mut io::sink()));
            return Ok(());
        }
        if tail.len() == 5 {
            tail.remove(0);
        }
        tail.push(line.trim_end().to_string());
    }
}
