//! What the benchmark tools (`ws-bench`, `sse-bench`, `rpc-bench`) share: clap
//! argument helpers, the server under test, `/proc` figures, latency
//! histograms, the `--redis` runs and the side-by-side summary tables.
//!
//! A tool parses its flags with clap (the value parsers of [`args`]), starts
//! each server with [`server::start`] (pinned with `taskset`, its address read
//! from its `listening on http://ADDR` line, stopped with SIGTERM then SIGKILL
//! when the [`server::Server`] is dropped), counts a fan-out's deliveries
//! with [`track::Tracker`], measures with [`procfs`] and [`Hist`], runs
//! `--redis` rows with [`cluster::run`], and prints medians with [`median`],
//! [`table::print_table`] and [`cluster::summary`].
//! This is a leaf helper of `tools/`: it is not a registry crate.
//!
//! # Example
//!
//! ```no_run
//! use bench_support::server::{Spec, start};
//! use bench_support::{Hist, median, procfs};
//!
//! let spec = Spec::rt_server("./target/release/rt-server".into(), "0", None, &["--quiet"]);
//! let server = start(&spec).expect("rt-server started");
//! let cpu = procfs::CpuMeter::start();
//! let mut hist = Hist::new();
//! hist.record(1_500); // µs, ns: the unit is the caller's
//! println!("{} to {}: p99 {} µs, {}", spec.name, server.addr, hist.quantile(0.99), cpu.line());
//! println!("RSS {} KiB", procfs::rss_kib(server.pid()));
//! assert_eq!(median(vec![3.0, 1.0, 2.0]), Some(2.0));
//! ```

pub mod args;
pub mod cluster;
mod hist;
pub mod procfs;
pub mod redis;
pub mod server;
pub mod table;
pub mod track;

pub use hist::Hist;

use std::time::{Duration, Instant};

/// The median of `v` (the mean of the middle two for an even count); `None` when empty.
pub fn median(mut v: Vec<f64>) -> Option<f64> {
    if v.is_empty() {
        return None;
    }
    v.sort_by(f64::total_cmp);
    let m = v.len() / 2;
    Some(if v.len() % 2 == 1 {
        v[m]
    } else {
        (v[m - 1] + v[m]) / 2.0
    })
}

/// The `p` quantile (0 to 1) of sorted latencies in µs, in ms; 0 when empty.
pub fn percentile_ms(sorted_us: &[u32], p: f64) -> f64 {
    if sorted_us.is_empty() {
        return 0.0;
    }
    let i = ((sorted_us.len() as f64 - 1.0) * p).round() as usize;
    f64::from(sorted_us[i]) / 1000.0
}

/// ` (run 2 of 3)` for repetition `rep` (from 0) of `repeat`; empty when `repeat` is 1.
pub fn run_label(rep: usize, repeat: usize) -> String {
    if repeat > 1 {
        format!(" (run {} of {repeat})", rep + 1)
    } else {
        String::new()
    }
}

/// `title (median of 3 runs)`; `title` alone when `repeat` is 1.
pub fn median_title(title: &str, repeat: usize) -> String {
    if repeat > 1 {
        format!("{title} (median of {repeat} runs)")
    } else {
        title.to_string()
    }
}

/// The exit status of a run: failure (after `tool: N run(s) failed`) when any failed.
pub fn exit_status(tool: &str, failures: usize) -> std::process::ExitCode {
    if failures > 0 {
        eprintln!("{tool}: {failures} run(s) failed");
        return std::process::ExitCode::from(1);
    }
    std::process::ExitCode::SUCCESS
}

/// Waits until `in_flight()` is 0, or `completed()` did not change for 2 s,
/// or 10 s passed; `wake` is notified whenever something completes.
pub async fn drain(
    wake: &tokio::sync::Notify,
    in_flight: impl Fn() -> usize,
    completed: impl Fn() -> u64,
) {
    let deadline = Instant::now() + Duration::from_secs(10);
    let mut last = (completed(), Instant::now());
    while in_flight() > 0 && Instant::now() < deadline {
        let _ = tokio::time::timeout(Duration::from_millis(20), wake.notified()).await;
        let c = completed();
        if c != last.0 {
            last = (c, Instant::now());
        } else if last.1.elapsed() > Duration::from_secs(2) {
            return;
        }
    }
}

/// Reads what the socket has into `buf`: the byte count, `None` at its end
/// or on an error. Waits for readiness first, so it never returns empty.
pub async fn read_some(tcp: &tokio::net::TcpStream, buf: &mut [u8]) -> Option<usize> {
    loop {
        tcp.readable().await.ok()?;
        match tcp.try_read(buf) {
            Ok(0) => return None,
            Ok(n) => return Some(n),
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => continue,
            Err(_) => return None,
        }
    }
}

/// After a short read emptied the socket: clears tokio's readiness without
/// the read that would only return WouldBlock. Only on a one-thread runtime,
/// where no readiness event can be processed between the read and this.
pub fn drained(tcp: &tokio::net::TcpStream) {
    let _ = tcp.try_io(tokio::io::Interest::READABLE, || {
        Err::<(), _>(std::io::ErrorKind::WouldBlock.into())
    });
}

/// The unsigned decimal number `b` is, when it is only digits.
pub fn digits(b: &[u8]) -> Option<u64> {
    let mut v: u64 = 0;
    for &c in b {
        if !c.is_ascii_digit() {
            return None;
        }
        v = v.checked_mul(10)?.checked_add(u64::from(c - b'0'))?;
    }
    Some(v)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn median_percentile_and_labels() {
        assert_eq!(median(vec![]), None);
        assert_eq!(median(vec![4.0, 1.0, 2.0, 3.0]), Some(2.5));
        assert_eq!(percentile_ms(&[1000, 2000, 3000], 0.5), 2.0);
        assert_eq!(percentile_ms(&[], 0.5), 0.0);
        assert_eq!(run_label(1, 3), " (run 2 of 3)");
        assert_eq!(run_label(0, 1), "");
        assert_eq!(median_title("summary", 3), "summary (median of 3 runs)");
        assert_eq!(median_title("summary", 1), "summary");
        assert_eq!(digits(b"0042"), Some(42));
        assert_eq!(digits(b"4x"), None);
    }
}
