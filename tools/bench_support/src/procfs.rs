//! Figures of processes from `/proc`: CPU time, RSS, affinity, and the
//! generator's and the servers' CPU over a measured window.

use std::collections::BTreeSet;
use std::process::{Command, Stdio};
use std::sync::OnceLock;
use std::time::Instant;

/// Clock ticks per second (`getconf CLK_TCK`, 100 when it cannot say).
fn ticks() -> f64 {
    static TICKS: OnceLock<f64> = OnceLock::new();
    *TICKS.get_or_init(|| {
        Command::new("getconf")
            .arg("CLK_TCK")
            .output()
            .ok()
            .and_then(|o| String::from_utf8(o.stdout).ok())
            .and_then(|s| s.trim().parse().ok())
            .unwrap_or(100.0)
    })
}

/// User+sys CPU seconds of `/proc/<which>` (a pid, or `self`), all threads.
fn cpu_of(which: &str) -> f64 {
    let stat = std::fs::read_to_string(format!("/proc/{which}/stat")).unwrap_or_default();
    // Fields after the parenthesised command name; utime and stime are fields 14 and 15.
    let rest = stat.rsplit(')').next().unwrap_or("");
    let f: Vec<&str> = rest.split_whitespace().collect();
    let get = |i: usize| f.get(i).and_then(|v| v.parse::<f64>().ok()).unwrap_or(0.0);
    (get(11) + get(12)) / ticks()
}

/// User+sys CPU seconds of process `pid`, all its threads (0 when it is gone).
pub fn cpu_seconds(pid: u32) -> f64 {
    cpu_of(&pid.to_string())
}

/// This process's user+sys CPU seconds.
pub fn own_cpu_seconds() -> f64 {
    cpu_of("self")
}

/// A `KiB` field of `/proc/PID/status` (`VmRSS:`, `VmHWM:`); 0 when unreadable.
pub fn status_kib(pid: u32, key: &str) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with(key))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|n| n.parse().ok())
        })
        .unwrap_or(0)
}

/// The resident set (VmRSS) of process `pid`, in KiB.
pub fn rss_kib(pid: u32) -> u64 {
    status_kib(pid, "VmRSS:")
}

/// The cores this process may run on (`Cpus_allowed_list`), `?` when unreadable.
pub fn own_affinity() -> String {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("Cpus_allowed_list:"))
                .map(|l| l.split_whitespace().nth(1).unwrap_or("?").to_string())
        })
        .unwrap_or_else(|| "?".into())
}

/// The cores of a `taskset -c` / `Cpus_allowed_list` list (`0,2-3`).
pub fn core_set(list: &str) -> BTreeSet<usize> {
    let mut set = BTreeSet::new();
    for part in list.split(',') {
        let (lo, hi) = part.split_once('-').unwrap_or((part, part));
        if let (Ok(lo), Ok(hi)) = (lo.trim().parse::<usize>(), hi.trim().parse::<usize>()) {
            set.extend(lo..=hi);
        }
    }
    set
}

/// Pins process `pid` and all its threads to `cores` with `taskset`; false
/// when there is no taskset or it failed.
pub fn pin(pid: u32, cores: &str) -> bool {
    std::path::Path::new("/usr/bin/taskset").exists()
        && Command::new("/usr/bin/taskset")
            .args(["-a", "-p", "-c", cores, &pid.to_string()])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|s| s.success())
}

/// This process's (the load generator's) CPU over a window.
#[derive(Debug)]
pub struct CpuMeter {
    cpu: f64,
    wall: Instant,
}

impl CpuMeter {
    /// Starts the window now.
    pub fn start() -> Self {
        CpuMeter {
            cpu: own_cpu_seconds(),
            wall: Instant::now(),
        }
    }

    /// CPU seconds and wall seconds since the start.
    pub fn read(&self) -> (f64, f64) {
        (
            own_cpu_seconds() - self.cpu,
            self.wall.elapsed().as_secs_f64(),
        )
    }

    /// `generator CPU: 1.20 s user+sys over 2.00 s wall = 60% of one core`,
    /// with a warning from 90 % on.
    pub fn line(&self) -> String {
        let (cpu, wall) = self.read();
        let share = 100.0 * cpu / wall.max(1e-9);
        format!(
            "generator CPU: {cpu:.2} s user+sys over {wall:.2} s wall = {share:.0}% of one core{}",
            if share >= 90.0 {
                " (saturated: the generator may be the bottleneck)"
            } else {
                ""
            }
        )
    }
}

/// CPU time of the servers (and of a Redis started here) over a window.
#[derive(Debug)]
pub struct CpuWindow {
    pids: Vec<u32>,
    redis: Option<u32>,
    start: Vec<f64>,
    redis_start: f64,
}

impl CpuWindow {
    /// Starts the window of processes `pids` and `redis` now.
    pub fn start(pids: &[u32], redis: Option<u32>) -> CpuWindow {
        CpuWindow {
            pids: pids.to_vec(),
            redis,
            start: pids.iter().map(|&p| cpu_seconds(p)).collect(),
            redis_start: redis.map_or(0.0, cpu_seconds),
        }
    }

    /// (seconds per server, seconds of Redis) since the start.
    pub fn read(&self) -> (Vec<f64>, Option<f64>) {
        let servers = self
            .pids
            .iter()
            .zip(&self.start)
            .map(|(&p, s)| cpu_seconds(p) - s)
            .collect();
        (
            servers,
            self.redis.map(|r| cpu_seconds(r) - self.redis_start),
        )
    }

    /// One line: each server's and Redis's CPU per message, in µs; and the
    /// servers' and Redis's µs per message.
    pub fn line(&self, messages: u64) -> (String, f64, Option<f64>) {
        let (servers, redis) = self.read();
        let per = |s: f64| s * 1e6 / messages.max(1) as f64;
        let total: f64 = servers.iter().sum();
        let mut line = format!("CPU per message: servers {:.1} µs", per(total));
        if servers.len() > 1 {
            let each: Vec<String> = servers.iter().map(|&s| format!("{:.1}", per(s))).collect();
            line.push_str(&format!(" ({} per node)", each.join(" + ")));
        }
        if let Some(r) = redis {
            line.push_str(&format!(", redis-server {:.1} µs", per(r)));
        }
        (line, per(total), redis.map(per))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_this_process() {
        let pid = std::process::id();
        assert!(rss_kib(pid) > 0);
        assert_eq!(status_kib(pid, "NoSuchKey:"), 0);
        let t = Instant::now();
        while t.elapsed().as_millis() < 50 {
            std::hint::black_box(t.elapsed());
        }
        assert!(own_cpu_seconds() > 0.0);
        assert_eq!(core_set("0,2-3").into_iter().collect::<Vec<_>>(), [0, 2, 3]);
        assert!(CpuMeter::start().line().starts_with("generator CPU: "));
    }
}
