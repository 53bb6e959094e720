//! Live refresh: poll the entry files, index again when they change, tell the pages over SSE.
//!
//! A polling scan of the entry files' paths, sizes and mtimes, by hand
//! rather than `notify`: no dependencies to compile, and the same behaviour
//! on every filesystem (network mounts, containers) where change
//! notifications may not arrive. A scan lists the crate and type folders
//! and reads one `stat` per entry file; the pause between scans is the poll
//! interval, or twenty times the last scan's duration when that is longer,
//! so a very large registry costs the watcher at most about 5% of a core.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use serde_json::json;
use sse_event::SseEvent;

use super::{ProblemOut, State, TOPIC};
use crate::index::{self, IndexError};

/// One entry file as last seen: path (root-relative), size, modification time.
pub(super) type Seen = Vec<(PathBuf, u64, Option<SystemTime>)>;

/// The entry files under the root and their sizes and mtimes, sorted by path.
pub(super) fn scan(state: &State) -> std::io::Result<Seen> {
    let files = crate::registry::entry_files(&state.root)?;
    Ok(files
        .into_iter()
        .map(|rel| {
            let meta = std::fs::metadata(state.root.join(&rel)).ok();
            let len = meta.as_ref().map_or(0, std::fs::Metadata::len);
            let modified = meta.and_then(|m| m.modified().ok());
            (rel, len, modified)
        })
        .collect())
}

/// Scans every `poll`; when the files differ from `seen` (the scan taken
/// before the index being served), indexes again (one index at a time).
pub(super) async fn watch(state: Arc<State>, poll: Duration, mut seen: Option<Seen>) {
    let poll = poll.max(Duration::from_millis(10));
    let mut pause = poll;
    loop {
        tokio::time::sleep(pause).await;
        let st = state.clone();
        let started = Instant::now();
        let now = tokio::task::spawn_blocking(move || scan(&st).ok())
            .await
            .ok()
            .flatten();
        pause = poll.max(started.elapsed() * 20);
        if now.is_none() || now == seen {
            continue;
        }
        seen = now;
        let st = state.clone();
        // Problems are published; nothing more to do with them here.
        let _ = tokio::task::spawn_blocking(move || reindex(&st)).await;
    }
}

/// Indexes the registry into the database as `fn index` does (only what
/// changed, when the database allows it), updates the
/// status and publishes the outcome: `index` with the counts, or `problems`
/// (the database is then left as it was). `Err` holds the problem lines.
pub(super) fn reindex(state: &State) -> Result<(), Vec<String>> {
    let started = Instant::now();
    match index::update(&state.root, &state.db) {
        Ok(done) => {
            let indexed_at = SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .map_or(0, |d| d.as_secs());
            let mut generation = 0;
            state.set_status(|s| {
                s.generation += 1;
                generation = s.generation;
                s.entries = done.entries;
                s.indexed_at = indexed_at;
                s.problems.clear();
            });
            let data = json!({
                "generation": generation,
                "entries": done.entries,
                "functions": done.counts.functions,
                "types": done.counts.types,
                "refs": done.counts.refs,
                "rechecked": done.rechecked,
                "indexed_at": indexed_at,
                "ms": started.elapsed().as_millis() as u64,
            });
            publish(state, "index", &data);
            Ok(())
        }
        Err(e) => {
            let problems: Vec<ProblemOut> = match &e {
                IndexError::Problems(reg) => reg.problems.iter().map(ProblemOut::from).collect(),
                IndexError::Failed(msg) => vec![ProblemOut {
                    path: state.db.display().to_string(),
                    line: 0,
                    message: msg.clone(),
                }],
            };
            let lines = match &e {
                IndexError::Problems(reg) => reg.problems.iter().map(|p| p.to_string()).collect(),
                IndexError::Failed(msg) => vec![msg.clone()],
            };
            state.set_status(|s| s.problems.clone_from(&problems));
            publish(state, "problems", &json!({ "problems": problems }));
            Err(lines)
        }
    }
}

fn publish(state: &State, event: &str, data: &serde_json::Value) {
    let ev = SseEvent::data(data.to_string()).event(event);
    if let Err(e) = state.broker.publish(TOPIC, ev) {
        eprintln!("fn serve: cannot publish the `{event}` event: {e}");
    }
}
