//! The closing summary: one line per row (and its p50 or CPU per delivery),
//! one column per server, rt-server's ratio to each peer, lost deliveries.

use bench_support::cluster::Figures;
use bench_support::server::Spec;
use bench_support::{median, median_title};

use crate::rows::{Load, Row, RowKind};
use crate::targeted::{TargetedFigures, targeted_summary};

#[derive(Clone, Copy)]
pub(crate) enum Figure {
    Load(Figures),
    Idle(f64),
    Targeted(TargetedFigures),
}

pub(crate) fn headline(row: &Row, f: Figure) -> f64 {
    match (row.kind, f) {
        (
            RowKind::Load {
                load: Load::InFlight(_),
                ..
            },
            Figure::Load(l),
        ) => l.deliveries_per_sec,
        (_, Figure::Load(l)) => l.p99_ms,
        (_, Figure::Idle(k)) => k,
        (_, Figure::Targeted(t)) => t.cpu_us_per_event,
    }
}

pub(crate) fn fmt_figure(row: &Row, v: f64) -> String {
    match row.kind {
        RowKind::Load {
            load: Load::InFlight(_),
            ..
        } => {
            if v >= 1e6 {
                format!("{:.2} M", v / 1e6)
            } else {
                format!("{:.0} k", v / 1e3)
            }
        }
        RowKind::Load { .. } => format!("{v:.2} ms"),
        RowKind::Idle { .. } => format!("{v:.2} KiB"),
        RowKind::Targeted { .. } => format!("{v:.2} µs"),
    }
}

pub(crate) fn summary(rows: &[Row], targets: &[Spec], results: &[Vec<Vec<Figure>>], repeat: usize) {
    let ours = targets.iter().position(|t| t.name == "rt-server");
    let title = median_title("summary", repeat);
    let mut header = format!("{title:<44}");
    for t in targets {
        header.push_str(&format!("{:>12}", t.name));
    }
    if ours.is_some() {
        for t in targets.iter().filter(|t| t.name != "rt-server") {
            header.push_str(&format!("{:>12}", format!("vs {}", t.name)));
        }
    }
    println!();
    println!("{header}");
    // A fixed-rate row's p99 line is followed by its p50, an in-flight
    // row's deliveries by the server's CPU per delivery.
    #[derive(Clone, Copy, PartialEq)]
    enum Line {
        Headline,
        P50,
        CpuPerDelivery(usize),
    }
    let lines = rows.iter().enumerate().flat_map(|(ri, row)| {
        let extra = match row.kind {
            RowKind::Load {
                load: Load::Rate(_),
                ..
            } => Some((ri, row.label.replacen("p99", "p50", 1), Line::P50)),
            RowKind::Load {
                load: Load::InFlight(_),
                clients,
            } => Some((
                ri,
                format!("  server CPU µs per delivery, {clients} clients"),
                Line::CpuPerDelivery(clients),
            )),
            _ => None,
        };
        std::iter::once((ri, row.label.clone(), Line::Headline)).chain(extra)
    });
    for (ri, label, kind) in lines {
        let row = &rows[ri];
        let mut line = format!("{label:<44}");
        let figure = |f: Figure| match (kind, f) {
            (Line::P50, Figure::Load(l)) => Some(l.p50_ms),
            (Line::CpuPerDelivery(clients), Figure::Load(l)) => {
                l.server_cpu_us.map(|us| us / clients.max(1) as f64)
            }
            (_, f) => Some(headline(row, f)),
        };
        let vals: Vec<Option<f64>> = results[ri]
            .iter()
            .map(|fs| median(fs.iter().filter_map(|&f| figure(f)).collect()))
            .collect();
        for v in &vals {
            line.push_str(&format!(
                "{:>12}",
                v.map_or("-".to_string(), |v| match kind {
                    Line::CpuPerDelivery(_) => format!("{v:.3} µs"),
                    _ => fmt_figure(row, v),
                })
            ));
        }
        if let Some(o) = ours {
            for (ti, _) in targets.iter().enumerate().filter(|(ti, _)| *ti != o) {
                let ratio = match (vals[o], vals[ti]) {
                    (Some(a), Some(b)) if b > 0.0 => format!("{:.2}x", a / b),
                    _ => "-".into(),
                };
                line.push_str(&format!("{ratio:>12}"));
            }
        }
        println!("{line}");
    }
    if ours.is_some() {
        println!(
            "ratios are rt-server / peer: above 1 is better for deliveries/s, below 1 is better for CPU, p50, p99 and KiB"
        );
    }
    targeted_summary(rows, targets, results, repeat);
    for (ri, row) in rows.iter().enumerate() {
        if let RowKind::Load { .. } = row.kind {
            let lost: Vec<String> = targets
                .iter()
                .zip(&results[ri])
                .filter_map(|(t, fs)| {
                    let lost: u64 = fs
                        .iter()
                        .map(|f| match f {
                            Figure::Load(l) => l.lost,
                            Figure::Idle(_) | Figure::Targeted(_) => 0,
                        })
                        .sum();
                    (lost > 0).then(|| format!("{} {lost}", t.name))
                })
                .collect();
            if !lost.is_empty() {
                println!("lost deliveries in {}: {}", row.name, lost.join(", "));
            }
        }
    }
}
