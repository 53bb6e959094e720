//! The server under test: started pinned to its cores with `taskset`, its
//! address read from its `listening on http://ADDR` line, stopped on drop.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

/// How to start one server.
#[derive(Clone, Debug)]
pub struct Spec {
    /// Its name in the output (`rt-server`, `node-ws`, ...).
    pub name: &'static str,
    pub program: PathBuf,
    pub args: Vec<String>,
    pub env: Vec<(String, PathBuf)>,
    /// The `taskset -c` list it runs on (`0`, `0,1`, `0-3`).
    pub cores: String,
}

impl Spec {
    /// `rt-server` at `program` on `127.0.0.1:0`, on `cores`, with
    /// `--threads N` when given, and `extra` flags.
    pub fn rt_server(
        program: PathBuf,
        cores: &str,
        threads: Option<usize>,
        extra: &[&str],
    ) -> Spec {
        let mut args: Vec<String> = vec!["--addr".into(), "127.0.0.1:0".into()];
        args.extend(extra.iter().map(|s| s.to_string()));
        if let Some(n) = threads {
            args.extend(["--threads".into(), n.to_string()]);
        }
        Spec {
            name: "rt-server",
            program,
            args,
            env: Vec::new(),
            cores: cores.to_string(),
        }
    }
}

/// `rt-server` beside this binary (where cargo builds both), else `rt-server` on PATH.
pub fn default_rt_server() -> PathBuf {
    std::env::current_exe()
        .ok()
        .and_then(|p| p.parent().map(|d| d.join("rt-server")))
        .unwrap_or_else(|| PathBuf::from("rt-server"))
}

/// A running server; stopped on drop.
#[derive(Debug)]
pub struct Server {
    child: Child,
    /// Where it listens.
    pub addr: SocketAddr,
}

impl Server {
    /// Its process id (`taskset` execs, so the server's own).
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// How it ended, if it has.
    pub fn exited(&mut self) -> Option<ExitStatus> {
        self.child.try_wait().ok().flatten()
    }
}

impl Drop for Server {
    /// SIGTERM (the server drains and exits, as profilers need), SIGKILL after 10 s.
    fn drop(&mut self) {
        let _ = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status();
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Starts `spec` pinned to its cores (without pinning when there is no
/// `/usr/bin/taskset`) and reads its address from the first
/// `... listening on http://ADDR` line of its stdout.
pub fn start(spec: &Spec) -> Result<Server, String> {
    let mut cmd = if Path::new("/usr/bin/taskset").exists() {
        let mut c = Command::new("/usr/bin/taskset");
        c.arg("-c").arg(&spec.cores).arg(&spec.program);
        c
    } else {
        Command::new(&spec.program)
    };
    for (k, v) in &spec.env {
        cmd.env(k, v);
    }
    let mut child = cmd
        .args(&spec.args)
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .map_err(|e| format!("cannot start {}: {e}", spec.program.display()))?;
    let stdout = child.stdout.take().ok_or("no stdout")?;
    let mut reader = std::io::BufReader::new(stdout);
    let mut line = String::new();
    let addr = loop {
        line.clear();
        let n = std::io::BufRead::read_line(&mut reader, &mut line).map_err(|e| e.to_string())?;
        if n == 0 {
            let _ = child.wait();
            return Err(format!("{} exited before listening", spec.name));
        }
        if let Some(a) = line.trim().split("listening on http://").nth(1) {
            match a.parse() {
                Ok(a) => break a,
                Err(_) => {
                    let _ = child.kill();
                    let _ = child.wait();
                    return Err(format!("unexpected line from {}: {line:?}", spec.name));
                }
            }
        }
    };
    // Keep draining stdout so a chatty server never blocks on a full pipe.
    std::thread::spawn(move || std::io::copy(&mut reader, &mut std::io::sink()));
    Ok(Server { child, addr })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A real process that prints the line a server prints, then waits.
    #[test]
    fn reads_the_address_and_stops_the_process() {
        let spec = Spec {
            name: "sh",
            program: "/bin/sh".into(),
            args: vec![
                "-c".into(),
                "echo starting; echo 'x listening on http://127.0.0.1:4321'; exec sleep 30".into(),
            ],
            env: Vec::new(),
            cores: "0".into(),
        };
        let mut server = start(&spec).unwrap();
        assert_eq!(server.addr, "127.0.0.1:4321".parse().unwrap());
        assert!(server.exited().is_none());
        let pid = server.pid();
        let t = Instant::now();
        drop(server);
        assert!(t.elapsed() < Duration::from_secs(5), "SIGTERM ended it");
        assert!(
            !Path::new(&format!("/proc/{pid}/cmdline")).exists() || {
                // A zombie reaped by wait has no /proc entry; any other state is a leak.
                std::fs::read_to_string(format!("/proc/{pid}/cmdline"))
                    .unwrap_or_default()
                    .is_empty()
            }
        );
    }

    #[test]
    fn a_process_that_never_listens_is_an_error() {
        let spec = Spec {
            name: "true",
            program: "/bin/true".into(),
            args: Vec::new(),
            env: Vec::new(),
            cores: "0".into(),
        };
        let e = start(&spec).err().unwrap();
        assert_eq!(e, "true exited before listening");
    }
}
