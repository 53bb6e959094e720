//! The broadcast load rows on `/ws`: `deliveries-N` (messages in flight,
//! deliveries per second) and `p99-N` (paced, latency), also the rows of a
//! `--redis` run on several nodes.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use bench_support::Hist;
use bench_support::cluster::Figures;
use bench_support::procfs::{CpuMeter, CpuWindow, rss_kib};
use bench_support::redis::Redis;
use bench_support::server::Server;
use futures_util::{SinkExt, StreamExt};

use crate::args::Args;
use crate::broadcast::{MESSAGE_LEN, Shared, WARMUP, drain, ms, publish, raw_reader, reader};
use crate::client::connect_spread;
use crate::rows::Load;

/// What a `--redis` run measures beside the default figures.
pub(crate) struct Measure<'a> {
    /// The Redis the servers are on (`None`: the single server, alone).
    pub(crate) redis: Option<&'a Redis>,
}

/// A load row: `clients` on `servers` round-robin (one server by default),
/// client 0 on the first one publishing to `/ws`.
pub(crate) async fn load_row(
    servers: &[Server],
    clients: usize,
    load: Load,
    duration: Duration,
    a: &Args,
    measure: Option<&Measure<'_>>,
) -> Result<Figures, String> {
    let addrs: Vec<SocketAddr> = servers.iter().map(|s| s.addr).collect();
    let t0 = Instant::now();
    let mut socks = connect_spread(&addrs, clients, a.concurrency).await?;
    let connect_secs = t0.elapsed().as_secs_f64();
    let sh = Shared::new(clients, None, servers.len());
    let publisher = socks
        .iter()
        .position(|(node, _)| *node == 0)
        .ok_or("no client on the first server")?;
    let (mut tx, rx0) = socks.swap_remove(publisher).1.split();
    tokio::task::spawn_local(reader(rx0, sh.clone(), 0));
    for (node, ws) in socks {
        if a.tungstenite_readers {
            tokio::task::spawn_local(reader(ws, sh.clone(), node));
        } else {
            tokio::task::spawn_local(raw_reader(ws.into_inner(), sh.clone(), node));
        }
    }
    // Every client registered: one probe message reached all of them.
    let t1 = Instant::now();
    while sh.t.completed.get() == 0 {
        if t1.elapsed() > Duration::from_secs(10) {
            let best = sh.t.best();
            return Err(format!(
                "after 10 s no broadcast reached every client (best {best} of {clients})"
            ));
        }
        tx.send(sh.next_message())
            .await
            .map_err(|e| format!("publish: {e}"))?;
        let _ = tokio::time::timeout(Duration::from_millis(200), sh.wake.notified()).await;
    }
    let sync_secs = t1.elapsed().as_secs_f64();
    // Warm-up (JIT, allocators, TCP windows), then the measured window.
    sh.t.new_phase();
    publish(&mut tx, &sh, load, WARMUP).await?;
    drain(&sh).await;
    let closed_before = sh.closed.get();
    sh.hist.borrow_mut().reset();
    if let Some(per_node) = &sh.per_node {
        per_node.borrow_mut().iter_mut().for_each(Hist::reset);
    }
    sh.t.delivered.set(0);
    let redis = measure.and_then(|m| m.redis);
    let commands_before = match redis {
        Some(r) => Some(r.commandstats().await?),
        None => None,
    };
    let server_pids: Vec<u32> = servers.iter().map(|s| s.pid()).collect();
    let servers_cpu = measure.map(|_| CpuWindow::start(&server_pids, redis.and_then(|r| r.pid())));
    let from = sh.t.new_phase();
    sh.t.measure_from.set(from);
    let cpu = CpuMeter::start();
    let first_send_ns = sh.epoch.elapsed().as_nanos() as u64;
    publish(&mut tx, &sh, load, duration).await?;
    drain(&sh).await;
    let cpu_line = cpu.line();
    let sent = sh.t.sent() - from;
    let servers_cpu = servers_cpu.map(|w| w.line(sent));
    let commands = match (redis, commands_before) {
        (Some(r), Some(before)) => Some(r.commandstats().await?.since(&before)),
        _ => None,
    };
    let want = sent * clients as u64;
    let got = sh.t.delivered.get();
    let span = (sh.t.last_receive_ns.get().saturating_sub(first_send_ns)) as f64 / 1e9;
    let hist = sh.hist.borrow();
    let cross = sh.per_node.as_ref().map(|per_node| {
        // The clients of every node but the publisher's, in one histogram.
        let mut h = Hist::new();
        for other in per_node.borrow().iter().skip(1) {
            h.merge(other);
        }
        (ms(&h, 0.50), ms(&h, 0.99))
    });
    let max_ms = hist.max() as f64 / 1e6;
    let f = Figures {
        deliveries_per_sec: if span > 0.0 { got as f64 / span } else { 0.0 },
        p50_ms: ms(&hist, 0.50),
        p99_ms: ms(&hist, 0.99),
        lost: want.saturating_sub(got),
        cross,
        commands_per_message: commands
            .as_ref()
            .map(|c| c.total() as f64 / sent.max(1) as f64),
        server_cpu_us: servers_cpu.as_ref().map(|c| c.1),
        redis_cpu_us: servers_cpu.as_ref().and_then(|c| c.2),
    };
    println!(
        "  connected {clients} in {connect_secs:.2} s; all receiving after {sync_secs:.2} s; warm-up {:.1} s",
        WARMUP.as_secs_f64()
    );
    println!(
        "  sent {sent} messages of {MESSAGE_LEN} B; deliveries {got} of {want} in {span:.2} s = {:.0} deliveries/s; lost {}",
        f.deliveries_per_sec, f.lost
    );
    println!(
        "  latency send->receive: p50 {:.2} ms, p99 {:.2} ms, max {:.2} ms",
        f.p50_ms, f.p99_ms, max_ms
    );
    if let Some(per_node) = &sh.per_node {
        for (i, h) in per_node.borrow().iter().enumerate() {
            println!(
                "    clients of node {i}{}: p50 {:.2} ms, p99 {:.2} ms, max {:.2} ms ({} deliveries)",
                if i == 0 {
                    " (the publisher's: local first)"
                } else {
                    " (through Redis)"
                },
                ms(h, 0.50),
                ms(h, 0.99),
                h.max() as f64 / 1e6,
                h.count()
            );
        }
    }
    if let Some(c) = &commands {
        println!("  {}", c.line(sent, "message"));
    }
    if let Some((line, per_message, _)) = &servers_cpu {
        println!(
            "  {line} = {:.3} µs per delivery",
            per_message / clients.max(1) as f64
        );
    }
    let closed = sh.closed.get();
    if closed > 0 || sh.t.malformed.get() > 0 {
        println!(
            "  connections closed by the server: {closed} ({} before the measured window); malformed messages: {}",
            closed_before,
            sh.t.malformed.get()
        );
    }
    let rss: u64 = server_pids.iter().map(|&pid| rss_kib(pid)).sum();
    println!("  server RSS {rss} KiB; {cpu_line}");
    Ok(f)
}
