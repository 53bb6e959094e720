//! The rows `ws-bench` runs: what each measures, its label and duration,
//! and `--only`'s choice of them.

use std::time::Duration;

use crate::args::Args;

#[derive(Clone, Copy, PartialEq)]
pub(crate) enum Load {
    /// Keep this many messages in flight.
    InFlight(usize),
    /// Send at this many messages per second.
    Rate(u64),
}

#[derive(Clone, Copy, PartialEq)]
pub(crate) enum RowKind {
    Load {
        clients: usize,
        load: Load,
    },
    Idle {
        connections: usize,
    },
    /// `rt-server`'s `/hub`: `connections` clients, events to `aim` only.
    Targeted {
        connections: usize,
        aim: Aim,
        in_flight: usize,
    },
}

/// Who the events of a targeted row go to.
#[derive(Clone, Copy, PartialEq)]
pub(crate) enum Aim {
    /// `members` connections subscribed to room `public-bench`, the publisher
    /// one of them; it publishes with `say`.
    Room { members: usize },
    /// `connections` connections of user `bench-target`; a publisher of
    /// another user sends them `whisper`s.
    User { connections: usize },
}

impl Aim {
    pub(crate) fn recipients(self) -> usize {
        match self {
            Aim::Room { members } => members,
            Aim::User { connections } => connections,
        }
    }
}

/// The room of the room rows (`public-*`: the guard lets anyone in).
pub(crate) const ROOM: &str = "public-bench";
/// The user of the user rows.
pub(crate) const TARGET_USER: &str = "bench-target";

#[derive(Clone)]
pub(crate) struct Row {
    pub(crate) name: String,
    pub(crate) label: String,
    pub(crate) kind: RowKind,
    pub(crate) duration: Duration,
}

pub(crate) fn rows(a: &Args) -> Result<Vec<Row>, String> {
    let secs = |default: f64| Duration::from_secs_f64(a.duration.unwrap_or(default));
    let inflight = |clients: usize| Row {
        name: format!("deliveries-{clients}"),
        label: format!("deliveries/s, {clients} clients, {} in flight", a.in_flight),
        kind: RowKind::Load {
            clients,
            load: Load::InFlight(a.in_flight),
        },
        duration: secs(3.0),
    };
    let rate = |clients: usize, rate: u64| Row {
        name: format!("p99-{clients}"),
        label: format!("p99 ms at {rate} msg/s to {clients} clients"),
        kind: RowKind::Load {
            clients,
            load: Load::Rate(rate),
        },
        duration: secs(5.0),
    };
    if let Some(clients) = a.clients() {
        let mut row = match a.rate {
            Some(r) => rate(clients, r),
            None => inflight(clients),
        };
        row.name = "custom".into();
        return Ok(vec![row]);
    }
    let targeted = |connections: usize, aim: Aim| Row {
        name: match aim {
            Aim::Room { members } => format!("room-{members}-of-{connections}"),
            Aim::User { .. } => format!("user-of-{connections}"),
        },
        label: match aim {
            Aim::Room { members } => format!("µs CPU/event, room of {members} in {connections}"),
            Aim::User { connections: c } => {
                format!("µs CPU/event, user ({c} conns) in {connections}")
            }
        },
        kind: RowKind::Targeted {
            connections,
            aim,
            in_flight: a.in_flight,
        },
        duration: secs(3.0),
    };
    let all = vec![
        inflight(1000),
        inflight(5000),
        rate(1000, 100),
        rate(5000, 10),
        Row {
            name: "idle".into(),
            label: format!("KiB RSS per idle connection, {}", a.idle),
            kind: RowKind::Idle {
                connections: a.idle,
            },
            duration: Duration::ZERO,
        },
        targeted(1000, Aim::Room { members: 100 }),
        targeted(10_000, Aim::Room { members: 100 }),
        targeted(1000, Aim::User { connections: 3 }),
        targeted(10_000, Aim::User { connections: 3 }),
    ];
    match &a.only {
        None => Ok(all),
        Some(o) => {
            let names: Vec<_> = all.iter().map(|r| r.name.clone()).collect();
            let mut wanted = Vec::new();
            for w in o.split(',').map(str::trim).filter(|w| !w.is_empty()) {
                if w == "targeted" {
                    wanted.extend(
                        all.iter()
                            .filter(|r| matches!(r.kind, RowKind::Targeted { .. }))
                            .map(|r| r.name.clone()),
                    );
                } else if names.iter().any(|n| n == w) {
                    wanted.push(w.to_string());
                } else {
                    return Err(format!(
                        "--only takes a comma-separated list of {} or targeted, not {w}",
                        names.join(" ")
                    ));
                }
            }
            // In the table's order, each row once.
            let picked: Vec<_> = all
                .into_iter()
                .filter(|r| wanted.contains(&r.name))
                .collect();
            if picked.is_empty() {
                Err(format!("--only {o} names no row"))
            } else {
                Ok(picked)
            }
        }
    }
}
