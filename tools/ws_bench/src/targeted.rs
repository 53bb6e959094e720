//! The targeted rows, rt-server's `/hub` only: events to a room's members
//! or to one user's connections among many, the server's CPU per event, and
//! the table that sets them at 1,000 and 10,000 connections side by side.

use std::time::{Duration, Instant};

use bench_support::procfs::{CpuMeter, cpu_seconds, rss_kib};
use bench_support::server::{Server, Spec};
use bench_support::{median, median_title};
use futures_util::{SinkExt, StreamExt};

use crate::args::Args;
use crate::broadcast::{Shared, WARMUP, drain, ms, publish, raw_reader, reader};
use crate::client::connect_hub;
use crate::rows::{Aim, Load, ROOM, Row, RowKind, TARGET_USER};
use crate::summary::Figure;

#[derive(Clone, Copy)]
pub(crate) struct TargetedFigures {
    pub(crate) deliveries_per_sec: f64,
    pub(crate) events_per_sec: f64,
    pub(crate) p50_ms: f64,
    pub(crate) p99_ms: f64,
    pub(crate) max_ms: f64,
    pub(crate) lost: u64,
    pub(crate) stray: u64,
    /// Server user+sys CPU over the measured window (send of the first event
    /// to the last delivery), per event sent.
    pub(crate) cpu_us_per_event: f64,
    /// The same per delivery.
    pub(crate) cpu_us_per_delivery: f64,
}

/// A targeted row on `/hub`: `n` connections (each its own user, but the
/// target user's), events from connection 0 to `aim` only, `in_flight` at a
/// time; the server's CPU time per event from `/proc/PID/stat`.
pub(crate) async fn targeted_row(
    server: &Server,
    n: usize,
    aim: Aim,
    in_flight: usize,
    duration: Duration,
    a: &Args,
) -> Result<TargetedFigures, String> {
    let pid = server.pid();
    let recipients = aim.recipients();
    let t0 = Instant::now();
    let socks = connect_hub(server.addr, n, aim, a.concurrency).await?;
    let connect_secs = t0.elapsed().as_secs_f64();
    let (head, tail) = match aim {
        Aim::Room { .. } => (
            format!("{{\"type\":\"say\",\"room\":\"{ROOM}\",\"data\":\""),
            "\"}".to_string(),
        ),
        Aim::User { .. } => (
            format!("{{\"type\":\"whisper\",\"user\":\"{TARGET_USER}\",\"data\":\""),
            "\"}".to_string(),
        ),
    };
    let sh = Shared::new(recipients, Some((head, tail)), 1);
    let mut tx = None;
    let receiving = socks.iter().filter(|s| s.0.1).count();
    if receiving != recipients {
        return Err(format!(
            "{receiving} receiving connections, not {recipients}"
        ));
    }
    for ((i, _), ws) in socks {
        if i == 0 {
            let (t, rx) = ws.split();
            tx = Some(t);
            tokio::task::spawn_local(reader(rx, sh.clone(), 0));
        } else {
            // Every client reads (and answers pings); one outside the target that
            // receives an event counts as a stray delivery.
            tokio::task::spawn_local(raw_reader(ws.into_inner(), sh.clone(), 0));
        }
    }
    let mut tx = tx.ok_or("no publisher")?;
    // The server at rest with every connection open.
    let idle = Duration::from_secs(1);
    let c0 = cpu_seconds(pid);
    tokio::time::sleep(idle).await;
    let idle_share = 100.0 * (cpu_seconds(pid) - c0) / idle.as_secs_f64();
    // One event reached every recipient.
    let t1 = Instant::now();
    while sh.t.completed.get() == 0 {
        if t1.elapsed() > Duration::from_secs(10) {
            let best = sh.t.best();
            return Err(format!(
                "after 10 s no event reached every recipient (best {best} of {recipients}; malformed {})",
                sh.t.malformed.get()
            ));
        }
        tx.send(sh.next_message())
            .await
            .map_err(|e| format!("publish: {e}"))?;
        let _ = tokio::time::timeout(Duration::from_millis(200), sh.wake.notified()).await;
    }
    let load = Load::InFlight(in_flight);
    sh.t.new_phase();
    publish(&mut tx, &sh, load, WARMUP).await?;
    drain(&sh).await;
    let closed_before = sh.closed.get();
    sh.hist.borrow_mut().reset();
    sh.t.delivered.set(0);
    let stray_before = sh.t.stray.get();
    let from = sh.t.new_phase();
    sh.t.measure_from.set(from);
    let cpu = CpuMeter::start();
    let server_cpu0 = cpu_seconds(pid);
    let first_send_ns = sh.epoch.elapsed().as_nanos() as u64;
    publish(&mut tx, &sh, load, duration).await?;
    drain(&sh).await;
    let server_cpu = cpu_seconds(pid) - server_cpu0;
    let cpu_line = cpu.line();
    let sent = sh.t.sent() - from;
    let want = sent * recipients as u64;
    let got = sh.t.delivered.get();
    let span = (sh.t.last_receive_ns.get().saturating_sub(first_send_ns)) as f64 / 1e9;
    let window = (sh.epoch.elapsed().as_nanos() as u64 - first_send_ns) as f64 / 1e9;
    let hist = sh.hist.borrow();
    let per = |count: u64| {
        if count > 0 {
            server_cpu * 1e6 / count as f64
        } else {
            0.0
        }
    };
    let f = TargetedFigures {
        deliveries_per_sec: if span > 0.0 { got as f64 / span } else { 0.0 },
        events_per_sec: if span > 0.0 { sent as f64 / span } else { 0.0 },
        p50_ms: ms(&hist, 0.50),
        p99_ms: ms(&hist, 0.99),
        max_ms: hist.max() as f64 / 1e6,
        lost: want.saturating_sub(got),
        stray: sh.t.stray.get() - stray_before,
        cpu_us_per_event: per(sent),
        cpu_us_per_delivery: per(got),
    };
    let what = match aim {
        Aim::Room { members } => {
            format!("`say` to room {ROOM} ({members} members, the publisher one of them)")
        }
        Aim::User { connections } => format!(
            "`whisper` to user {TARGET_USER} ({connections} connections; the publisher another user)"
        ),
    };
    println!(
        "  connected {n} to /hub in {connect_secs:.2} s; {what}; {in_flight} in flight; warm-up {:.1} s",
        WARMUP.as_secs_f64()
    );
    println!(
        "  server at rest with {n} connections: {idle_share:.1}% of a core over {:.0} s",
        idle.as_secs_f64()
    );
    println!(
        "  sent {sent} events = {:.0} events/s; deliveries {got} of {want} in {span:.2} s = {:.0} deliveries/s; lost {}; stray {}",
        f.events_per_sec, f.deliveries_per_sec, f.lost, f.stray
    );
    println!(
        "  latency send->receive: p50 {:.2} ms, p99 {:.2} ms, max {:.2} ms",
        f.p50_ms, f.p99_ms, f.max_ms
    );
    println!(
        "  server CPU {server_cpu:.2} s over {window:.2} s = {:.0}% of a core; {:.2} µs per event, {:.3} µs per delivery",
        100.0 * server_cpu / window.max(1e-9),
        f.cpu_us_per_event,
        f.cpu_us_per_delivery
    );
    let closed = sh.closed.get();
    if closed > 0 || sh.t.malformed.get() > 0 {
        println!(
            "  connections closed by the server: {closed} ({closed_before} before the measured window); malformed messages: {}",
            sh.t.malformed.get()
        );
    }
    println!("  server RSS {} KiB; {cpu_line}", rss_kib(server.pid()));
    if closed > 0 {
        return Err(format!(
            "{closed} connections ended during the row; its figures are not kept"
        ));
    }
    Ok(f)
}

/// The targeted rows side by side: each figure at the fewest and at the most
/// connections of the same aim, and their ratio (about 1 when the cost follows
/// the recipients, not the connections).
pub(crate) fn targeted_summary(
    rows: &[Row],
    targets: &[Spec],
    results: &[Vec<Vec<Figure>>],
    repeat: usize,
) {
    let Some(o) = targets.iter().position(|t| t.name == "rt-server") else {
        return;
    };
    // (aim, connections, medians of the figures), for the rows that ran.
    let mut ran: Vec<(Aim, usize, [f64; 6], u64)> = Vec::new();
    for (ri, row) in rows.iter().enumerate() {
        let RowKind::Targeted {
            connections, aim, ..
        } = row.kind
        else {
            continue;
        };
        let figs: Vec<TargetedFigures> = results[ri][o]
            .iter()
            .filter_map(|f| match f {
                Figure::Targeted(t) => Some(*t),
                _ => None,
            })
            .collect();
        if figs.is_empty() {
            continue;
        }
        let m =
            |g: fn(&TargetedFigures) -> f64| median(figs.iter().map(g).collect()).unwrap_or(0.0);
        ran.push((
            aim,
            connections,
            [
                m(|t| t.cpu_us_per_event),
                m(|t| t.cpu_us_per_delivery),
                m(|t| t.events_per_sec),
                m(|t| t.deliveries_per_sec),
                m(|t| t.p50_ms),
                m(|t| t.p99_ms),
            ],
            figs.iter().map(|t| t.lost + t.stray).sum(),
        ));
    }
    if ran.is_empty() {
        return;
    }
    let title = median_title("targeted events, rt-server /hub", repeat);
    println!();
    println!("{title}");
    let names = [
        "server CPU µs/event",
        "server CPU µs/delivery",
        "events/s",
        "deliveries/s",
        "latency p50 ms",
        "latency p99 ms",
    ];
    let fmt = |k: usize, v: f64| match k {
        0 => format!("{v:.2}"),
        1 => format!("{v:.3}"),
        2 | 3 => format!("{v:.0}"),
        _ => format!("{v:.2}"),
    };
    let mut aims: Vec<Aim> = Vec::new();
    for r in &ran {
        if !aims.contains(&r.0) {
            aims.push(r.0);
        }
    }
    for aim in aims {
        let mut of: Vec<_> = ran.iter().filter(|r| r.0 == aim).collect();
        of.sort_by_key(|r| r.1);
        let what = match aim {
            Aim::Room { members } => format!("room of {members}"),
            Aim::User { connections } => format!("one user, {connections} connections"),
        };
        let mut header = format!("{what:<36}");
        for r in &of {
            header.push_str(&format!("{:>16}", format!("{} conns", r.1)));
        }
        let (lo, hi) = (of[0], of[of.len() - 1]);
        if of.len() > 1 {
            header.push_str(&format!("{:>16}", format!("{}/{}", hi.1, lo.1)));
        }
        println!("{header}");
        for (k, name) in names.iter().enumerate() {
            let mut line = format!("  {name:<34}");
            for r in &of {
                line.push_str(&format!("{:>16}", fmt(k, r.2[k])));
            }
            if of.len() > 1 {
                let ratio = if lo.2[k] > 0.0 {
                    format!("{:.2}x", hi.2[k] / lo.2[k])
                } else {
                    "-".into()
                };
                line.push_str(&format!("{ratio:>16}"));
            }
            println!("{line}");
        }
        let bad: Vec<String> = of
            .iter()
            .filter(|r| r.3 > 0)
            .map(|r| format!("{} conns {}", r.1, r.3))
            .collect();
        if !bad.is_empty() {
            println!("  lost or stray deliveries: {}", bad.join(", "));
        }
    }
    let (fewest, most) = (
        ran.iter().map(|r| r.1).min().unwrap_or(0),
        ran.iter().map(|r| r.1).max().unwrap_or(0),
    );
    if most > fewest {
        println!(
            "same recipients, {:.0}x the connections: a ratio near 1.00x means the cost follows the recipients, not the connections",
            most as f64 / fewest.max(1) as f64
        );
    }
}
