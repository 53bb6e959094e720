//! Keeps SSE streams alive: one ticker sends a comment to every stream silent for an interval, and ends them all when the server shuts down.
//!
//! Proxies and load balancers cut connections that stay silent; browsers
//! ignore comments. [`sse_keepalive`] makes one [`KeepAlive`] ticker for
//! many streams: every `interval`, each stream it watches that has been
//! silent since the previous tick gets `: keepalive` (encoded once, queued
//! like any event). A busy stream gets no comments at all. So a comment
//! never follows output by less than `interval`, and no stream is silent
//! for more than two.
//!
//! The ticker also ends its streams when the server's [`Shutdown`] fires.
//! That is the other thing each stream would otherwise wait on by itself.
//!
//! # Memory
//!
//! One task and one timer per ticker, whatever the number of streams. A
//! stream costs the ticker 16 bytes (a weak handle and its shutdown signal
//! in one list), instead of a timer (about 110 bytes) and a shutdown waiter
//! (about 70 bytes) of its own, each boxed. Entries of closed streams are
//! dropped at the next tick, or when the list would grow.
//!
//! # Shutdown
//!
//! The ticker waits on the signal of the streams it watches, one waiter for
//! all of them: a server gives every request the same one (`http_serve`, or
//! axum with one `Extension` layer). Streams whose requests carry another
//! signal are checked at every tick, and the ticker waits on their signal
//! once the first one has fired. A stream watched after its signal fired is
//! ended at once.
//!
//! # Example
//!
//! ```
//! use std::time::Duration;
//! use http_body_util::BodyExt;
//! use http_types::Shutdown;
//! use sse_keepalive::sse_keepalive;
//!
//! # tokio::runtime::Builder::new_current_thread().enable_time().start_paused(true).build().unwrap().block_on(async {
//! let keepalive = sse_keepalive(Duration::from_secs(15)); // one per handler
//! let signal = Shutdown::new();
//! let (stream, mut body) = sse_stream::sse_stream(8);
//! keepalive.watch(&stream, &signal);
//! // Nothing to send for 15 s: the ticker speaks.
//! let frame = body.frame().await.unwrap().unwrap().into_data().unwrap();
//! assert_eq!(&frame[..], b": keepalive\n\n");
//! assert_eq!(keepalive.sent(), 1);
//! // The server shuts down: the stream ends.
//! signal.trigger();
//! assert!(body.frame().await.is_none());
//! # drop(stream);
//! # });
//! ```

use std::fmt;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, OnceLock, PoisonError};
use std::time::Duration;

use bytes::Bytes;
use http_types::Shutdown;
use sse_encode::sse_encode;
use sse_event::SseEvent;
use sse_stream::{SseSender, WeakSseSender};
use tokio::sync::Notify;
use tokio::time::Instant;

/// A ticker whose comments go out every `interval` (at least 1 ms) to the
/// streams it watches that were silent since the previous tick.
///
/// Create it anywhere; its task starts on the Tokio runtime of the first
/// [`KeepAlive::watch`] (again on another runtime if that one is gone).
pub fn sse_keepalive(interval: Duration) -> KeepAlive {
    KeepAlive {
        handle: Arc::new(Handle {
            shared: Arc::new(Shared {
                interval: interval.max(Duration::from_millis(1)),
                watch: Mutex::new(Watch {
                    streams: Vec::new(),
                    signal: None,
                    running: false,
                    dropped: false,
                }),
                changed: Notify::new(),
                sent: AtomicU64::new(0),
            }),
        }),
    }
}

/// The ticker [`sse_keepalive`] returns; clones share it.
#[derive(Clone)]
pub struct KeepAlive {
    handle: Arc<Handle>,
}

/// The last clone of a [`KeepAlive`] going stops the task.
struct Handle {
    shared: Arc<Shared>,
}

impl Drop for Handle {
    fn drop(&mut self) {
        self.shared.lock().dropped = true;
        self.shared.changed.notify_one();
    }
}

/// What the handles and the task share.
struct Shared {
    interval: Duration,
    watch: Mutex<Watch>,
    /// The task has something new to wait on, or no one holds the ticker.
    changed: Notify,
    sent: AtomicU64,
}

struct Watch {
    /// Every stream watched, with the signal of its request.
    streams: Vec<(WeakSseSender, Shutdown)>,
    /// The signal the task waits on: that of a watched stream.
    signal: Option<Shutdown>,
    /// The task runs (on some runtime).
    running: bool,
    /// Every [`KeepAlive`] is gone: the task ends.
    dropped: bool,
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, Watch> {
        self.watch.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

impl KeepAlive {
    /// Watches `stream`: a comment in its silences, and the end when
    /// `shutdown` fires (at once if it has). The ticker does not keep the
    /// stream open: it lets go of it once it is closed.
    pub fn watch(&self, stream: &SseSender, shutdown: &Shutdown) {
        if shutdown.is_triggered() {
            stream.end();
            return;
        }
        let shared = &self.handle.shared;
        let mut w = shared.lock();
        if w.streams.len() == w.streams.capacity() {
            // Make room from closed streams before growing.
            w.streams.retain(|(s, _)| !s.is_closed());
        }
        w.streams.push((stream.downgrade(), shutdown.clone()));
        let mut wake = false;
        if w.signal.is_none() {
            w.signal = Some(shutdown.clone());
            wake = true;
        }
        if !w.running
            && let Ok(rt) = tokio::runtime::Handle::try_current()
        {
            w.running = true;
            rt.spawn(run(shared.clone()));
        }
        drop(w);
        if wake {
            shared.changed.notify_one();
        }
    }

    /// Comments sent so far.
    pub fn sent(&self) -> u64 {
        self.handle.shared.sent.load(Ordering::Relaxed)
    }

    /// Streams watched now: open, or closed since the last tick.
    pub fn watched(&self) -> usize {
        self.handle.shared.lock().streams.len()
    }

    /// The interval between ticks.
    pub fn interval(&self) -> Duration {
        self.handle.shared.interval
    }
}

impl fmt::Debug for KeepAlive {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("KeepAlive")
            .field("interval", &self.interval())
            .field("watched", &self.watched())
            .field("sent", &self.sent())
            .finish()
    }
}

/// Marks the task stopped however it ends (a runtime shutting down drops it).
struct Running(Arc<Shared>);

impl Drop for Running {
    fn drop(&mut self) {
        self.0.lock().running = false;
    }
}

/// The ticker's task: ticks, the shutdown signal, and news from `watch`.
async fn run(shared: Arc<Shared>) {
    let running = Running(shared);
    let shared = &running.0;
    let mut next = Instant::now() + shared.interval;
    loop {
        let signal = {
            let w = shared.lock();
            if w.dropped {
                return;
            }
            w.signal.clone()
        };
        let fired = async {
            match &signal {
                Some(s) => s.wait().await,
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            () = tokio::time::sleep_until(next) => {
                tick(shared);
                next = Instant::now() + shared.interval;
            }
            () = fired => shut_down(shared),
            () = shared.changed.notified() => {}
        }
    }
}

/// One tick: a comment to every silent stream; streams that closed, or
/// whose signal fired, leave the list, and the signal waited on becomes
/// that of the oldest stream left.
fn tick(shared: &Shared) {
    let comment = comment();
    let mut sent = 0;
    let mut w = shared.lock();
    w.streams.retain(|(stream, signal)| {
        if signal.is_triggered() {
            stream.end();
            return false;
        }
        match stream.try_send_if_idle(&comment) {
            Ok(true) => {
                sent += 1;
                true
            }
            Ok(false) => true,
            Err(_) => false,
        }
    });
    if let Some((_, signal)) = w.streams.first() {
        w.signal = Some(signal.clone());
    }
    drop(w);
    shared.sent.fetch_add(sent, Ordering::Relaxed);
}

/// The signal waited on fired: the streams of every fired signal end, and
/// the task waits on a signal of the streams left, if any.
fn shut_down(shared: &Shared) {
    let mut w = shared.lock();
    w.streams.retain(|(stream, signal)| {
        if signal.is_triggered() {
            stream.end();
            false
        } else {
            true
        }
    });
    w.signal = w.streams.first().map(|(_, signal)| signal.clone());
}

/// `: keepalive`, encoded once per process.
fn comment() -> Bytes {
    static COMMENT: OnceLock<Bytes> = OnceLock::new();
    COMMENT
        .get_or_init(|| {
            let mut buf = Vec::new();
            sse_encode(&SseEvent::comment("keepalive"), &mut buf)
                .expect("a comment always encodes");
            Bytes::from(buf)
        })
        .clone()
}

#[cfg(test)]
mod tests {
    use super::*;
    use http_body_util::BodyExt;
    use sse_stream::{SseBody, sse_stream};

    async fn next(body: &mut SseBody) -> Option<Bytes> {
        body.frame().await.map(|f| f.unwrap().into_data().unwrap())
    }

    const T: Duration = Duration::from_secs(15);

    #[tokio::test(start_paused = true)]
    async fn one_comment_per_idle_interval() {
        let keepalive = sse_keepalive(T);
        let (tx, mut body) = sse_stream(8);
        keepalive.watch(&tx, &Shutdown::new());
        let start = Instant::now();
        for n in 1..=3 {
            assert_eq!(next(&mut body).await.unwrap(), &b": keepalive\n\n"[..]);
            assert_eq!(start.elapsed(), T * n);
        }
        assert_eq!(keepalive.sent(), 3);
    }

    #[tokio::test(start_paused = true)]
    async fn output_postpones_the_next_comment() {
        let keepalive = sse_keepalive(T);
        let (tx, mut body) = sse_stream(8);
        keepalive.watch(&tx, &Shutdown::new());
        let start = Instant::now();
        let sender = tokio::spawn(async move {
            tokio::time::sleep(Duration::from_secs(10)).await;
            tx.try_send(&Bytes::from_static(b"data: x\n\n")).unwrap();
            tx
        });
        assert_eq!(next(&mut body).await.unwrap(), &b"data: x\n\n"[..]);
        assert_eq!(start.elapsed(), Duration::from_secs(10));
        assert_eq!(next(&mut body).await.unwrap(), &b": keepalive\n\n"[..]);
        // The tick at 15 s saw the output; the one at 30 s a whole silent
        // interval: at least T after the output, at most 2T.
        assert_eq!(start.elapsed(), Duration::from_secs(30));
        drop(sender.await.unwrap());
    }

    #[tokio::test(start_paused = true)]
    async fn a_busy_stream_gets_no_comment() {
        let keepalive = sse_keepalive(T);
        let (tx, mut body) = sse_stream(8);
        keepalive.watch(&tx, &Shutdown::new());
        for _ in 0..10 {
            tokio::time::sleep(Duration::from_secs(5)).await;
            tx.try_send(&Bytes::from_static(b"data: x\n\n")).unwrap();
            assert_eq!(next(&mut body).await.unwrap(), &b"data: x\n\n"[..]);
        }
        assert_eq!(keepalive.sent(), 0);
    }

    #[tokio::test(start_paused = true)]
    async fn closed_streams_leave_the_ticker_and_it_keeps_none_open() {
        let keepalive = sse_keepalive(T);
        let (tx, body) = sse_stream(8);
        keepalive.watch(&tx, &Shutdown::new());
        let (tx2, mut body2) = sse_stream(8);
        keepalive.watch(&tx2, &Shutdown::new());
        drop(tx2);
        assert!(next(&mut body2).await.is_none(), "senders gone: ended");
        drop(body);
        assert_eq!(keepalive.watched(), 2);
        tokio::time::sleep(T + Duration::from_millis(1)).await;
        assert_eq!(keepalive.watched(), 0, "dropped at the tick");
        assert_eq!(keepalive.sent(), 0);
        drop(tx);
    }

    #[tokio::test]
    async fn server_shutdown_ends_every_watched_stream_with_one_waiter() {
        let keepalive = sse_keepalive(T);
        let signal = Shutdown::new();
        let tasks = tokio::runtime::Handle::current().metrics();
        let before = tasks.num_alive_tasks();
        let mut streams = Vec::new();
        for _ in 0..1000 {
            let (tx, body) = sse_stream(8);
            keepalive.watch(&tx, &signal);
            streams.push((tx, body));
        }
        assert_eq!(
            tasks.num_alive_tasks(),
            before + 1,
            "one task for all streams"
        );
        signal.trigger();
        for (_, body) in &mut streams {
            assert!(next(body).await.is_none());
        }
        assert!(streams.iter().all(|(tx, _)| tx.is_closed()));
        // Watched after the signal fired: ended at once.
        let (tx, mut body) = sse_stream(8);
        keepalive.watch(&tx, &signal);
        assert!(next(&mut body).await.is_none());
    }

    #[tokio::test(start_paused = true)]
    async fn a_stream_of_another_signal_ends_by_the_next_tick() {
        let keepalive = sse_keepalive(T);
        let (first, second) = (Shutdown::new(), Shutdown::new());
        let (tx1, mut body1) = sse_stream(8);
        keepalive.watch(&tx1, &first);
        let (tx2, mut body2) = sse_stream(8);
        keepalive.watch(&tx2, &second);
        let start = Instant::now();
        second.trigger();
        assert!(next(&mut body2).await.is_none());
        assert!(start.elapsed() <= T, "{:?}", start.elapsed());
        // The first one still gets comments, and ends with its own signal.
        assert_eq!(next(&mut body1).await.unwrap(), &b": keepalive\n\n"[..]);
        first.trigger();
        assert!(next(&mut body1).await.is_none());
        drop((tx1, tx2));
    }

    #[tokio::test(start_paused = true)]
    async fn the_task_ends_with_the_last_handle_and_starts_again_on_demand() {
        let tasks = tokio::runtime::Handle::current().metrics();
        let keepalive = sse_keepalive(T);
        let (tx, _body) = sse_stream(8);
        keepalive.watch(&tx, &Shutdown::new());
        assert_eq!(tasks.num_alive_tasks(), 1);
        let clone = keepalive.clone();
        drop(keepalive);
        tokio::task::yield_now().await;
        assert_eq!(tasks.num_alive_tasks(), 1, "a clone still holds it");
        drop(clone);
        while tasks.num_alive_tasks() > 0 {
            tokio::task::yield_now().await;
        }
    }

    #[test]
    fn watching_outside_a_runtime_waits_for_one_and_a_stream_costs_16_bytes() {
        let keepalive = sse_keepalive(T);
        let (tx, _body) = sse_stream(8);
        keepalive.watch(&tx, &Shutdown::new());
        assert_eq!(keepalive.watched(), 1);
        assert_eq!(std::mem::size_of::<(WeakSseSender, Shutdown)>(), 16);
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_time()
            .start_paused(true)
            .build()
            .unwrap();
        rt.block_on(async {
            let (tx2, mut body2) = sse_stream(8);
            keepalive.watch(&tx2, &Shutdown::new());
            assert_eq!(next(&mut body2).await.unwrap(), &b": keepalive\n\n"[..]);
        });
    }

    #[test]
    fn the_comment_is_what_the_encoder_writes() {
        assert_eq!(comment(), &b": keepalive\n\n"[..]);
    }
}

/// The examples of this crate's registry entries, compiled by `cargo test --doc`.
#[cfg(doctest)]
#[doc = include_str!("../sse_keepalive.md")]
#[doc = include_str!("../../../types/infra/KeepAlive.md")]
pub struct RegistryExamples;
