//! The `idle` row: the server's RSS before and after `--idle` idle
//! connections, KiB per connection.

use std::time::{Duration, Instant};

use bench_support::procfs::{CpuMeter, rss_kib, status_kib};
use bench_support::server::Server;

use crate::args::Args;
use crate::client::connect_all;

/// Waits until the server's RSS stops changing (3 equal samples 200 ms apart, at most 5 s).
pub(crate) async fn settled_rss(pid: u32) -> u64 {
    let deadline = Instant::now() + Duration::from_secs(5);
    let mut last = rss_kib(pid);
    let mut same = 0;
    while same < 3 && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(200)).await;
        let now = rss_kib(pid);
        if now == last {
            same += 1;
        } else {
            same = 0;
            last = now;
        }
    }
    last
}

pub(crate) async fn idle_row(server: &Server, n: usize, a: &Args) -> Result<f64, String> {
    let pid = server.pid();
    // One connection first, so lazily allocated structures are counted once, not per connection.
    let warm = connect_all(server.addr, 1, 1).await?;
    let before = settled_rss(pid).await;
    let cpu = CpuMeter::start();
    let t0 = Instant::now();
    let idle = connect_all(server.addr, n, a.concurrency).await?;
    let connect_secs = t0.elapsed().as_secs_f64();
    let cpu_line = cpu.line();
    let after = settled_rss(pid).await;
    let per = after.saturating_sub(before) as f64 / n as f64;
    println!("  connected {n} idle in {connect_secs:.2} s; {cpu_line}");
    println!(
        "  server RSS {before} KiB -> {after} KiB = {per:.2} KiB per idle connection (peak {} KiB)",
        status_kib(pid, "VmHWM:")
    );
    drop((warm, idle));
    Ok(per)
}
