//! Pending connections: accepted, without a complete first request head yet.
//!
//! The accept loop owns a [`PendingQueue`] (no lock: one task uses it); each
//! connection shares a [`Slot`] with it. A slot leaves the pending state once,
//! by a compare-and-swap: `done` (its first request head arrived, it timed
//! out or it ended) or `evicted` (the accept loop closed it to make room);
//! whoever moves it decrements the shared count. Only when the cap is reached
//! does a finishing connection also wake the accept loop.

use std::collections::VecDeque;
use std::fmt;
use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::{AtomicU8, AtomicUsize, Ordering};
use std::time::Duration;

use tokio::sync::{Notify, oneshot};
use tokio::time::Instant;

const PENDING: u8 = 0;
const DONE: u8 = 1;
const EVICTED: u8 = 2;

/// What the accept loop and every connection share.
#[derive(Debug)]
struct Shared {
    cap: usize,
    count: AtomicUsize,
    /// A pending connection ended while the cap was reached.
    freed: Notify,
}

/// One connection's pending state.
#[derive(Debug)]
pub(crate) struct Slot {
    state: AtomicU8,
    shared: Arc<Shared>,
}

impl Slot {
    /// The connection is no longer pending; true if this call ended it.
    pub(crate) fn finish(&self) -> bool {
        if !self.leave(DONE) {
            return false;
        }
        if self.shared.count.fetch_sub(1, Ordering::AcqRel) >= self.shared.cap {
            self.shared.freed.notify_one();
        }
        true
    }

    fn evict(&self) -> bool {
        let left = self.leave(EVICTED);
        if left {
            self.shared.count.fetch_sub(1, Ordering::AcqRel);
        }
        left
    }

    fn is_pending(&self) -> bool {
        self.state.load(Ordering::Acquire) == PENDING
    }

    fn leave(&self, to: u8) -> bool {
        self.state
            .compare_exchange(PENDING, to, Ordering::AcqRel, Ordering::Acquire)
            .is_ok()
    }
}

/// A new connection's side: its slot and the message that it was evicted.
#[derive(Debug)]
pub(crate) struct Ticket {
    pub(crate) slot: Arc<Slot>,
    pub(crate) evicted: oneshot::Receiver<()>,
}

/// Why a connection was closed while pending.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Expired {
    /// A newer connection needed its place under the cap.
    Evicted,
    /// The header read timeout passed.
    TimedOut,
    /// The server is shutting down.
    Shutdown,
}

impl fmt::Display for Expired {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Expired::Evicted => "pending connection closed: too many pending connections",
            Expired::TimedOut => "pending connection closed: header read timeout",
            Expired::Shutdown => "pending connection closed: shutting down",
        })
    }
}

/// Resolves when the connection of `slot` must be closed while still
/// pending: it was evicted, `limit` passed, or `shutdown` completed. Never
/// resolves once the connection is no longer pending.
pub(crate) async fn watch(
    slot: &Slot,
    evicted: oneshot::Receiver<()>,
    limit: Duration,
    shutdown: impl Future<Output = ()>,
) -> Expired {
    let evicted = async {
        if evicted.await.is_err() {
            // The accept loop let go of the slot without evicting it.
            std::future::pending::<()>().await;
        }
    };
    let why = tokio::select! {
        () = evicted => return Expired::Evicted,
        () = tokio::time::sleep(limit) => Expired::TimedOut,
        () = shutdown => Expired::Shutdown,
    };
    if !slot.finish() {
        std::future::pending::<()>().await;
    }
    why
}

/// A pending connection as the accept loop knows it.
#[derive(Debug)]
struct Entry {
    since: Instant,
    slot: Arc<Slot>,
    evict: oneshot::Sender<()>,
}

/// The pending connections, oldest first, and the cap on how many there are.
#[derive(Debug)]
pub(crate) struct PendingQueue {
    shared: Arc<Shared>,
    grace: Duration,
    /// Every pending connection, in accept order, and some no longer
    /// pending that are not cleared yet.
    queue: VecDeque<Entry>,
}

impl PendingQueue {
    /// A queue of at most `cap` pending connections (at least 1), where a
    /// connection may be evicted once it has been pending for `grace`.
    pub(crate) fn new(cap: usize, grace: Duration) -> Self {
        PendingQueue {
            shared: Arc::new(Shared {
                cap: cap.max(1),
                count: AtomicUsize::new(0),
                freed: Notify::new(),
            }),
            // A year is never; it keeps `since + grace` in range.
            grace: grace.min(Duration::from_secs(365 * 24 * 3600)),
            queue: VecDeque::new(),
        }
    }

    /// Makes room for one more pending connection if the cap is reached, by
    /// evicting the oldest pending one if it has been pending for the grace.
    /// `None` when there is room; otherwise when the oldest can be evicted.
    pub(crate) fn make_room(&mut self) -> Option<Instant> {
        while self.shared.count.load(Ordering::Acquire) >= self.shared.cap {
            self.clear_front();
            let oldest = self.queue.front()?;
            let evictable = oldest.since + self.grace;
            if Instant::now() < evictable {
                return Some(evictable);
            }
            if let Some(e) = self.queue.pop_front()
                && e.slot.evict()
            {
                let _ = e.evict.send(());
            }
        }
        None
    }

    /// Waits until a pending connection ends, or `until`.
    pub(crate) async fn wait_room(&self, until: Instant) {
        tokio::select! {
            () = self.shared.freed.notified() => {}
            () = tokio::time::sleep_until(until) => {}
        }
    }

    /// Registers a new pending connection; [`make_room`](Self::make_room)
    /// first.
    pub(crate) fn admit(&mut self) -> Ticket {
        self.clear_front();
        // Slots behind a long-pending one are cleared in bulk, so the queue
        // stays within about twice the cap.
        if self.queue.len() >= 2 * self.shared.cap.max(32) {
            self.queue.retain(|e| e.slot.is_pending());
        }
        let slot = Arc::new(Slot {
            state: AtomicU8::new(PENDING),
            shared: self.shared.clone(),
        });
        self.shared.count.fetch_add(1, Ordering::AcqRel);
        let (tx, rx) = oneshot::channel();
        self.queue.push_back(Entry {
            since: Instant::now(),
            slot: slot.clone(),
            evict: tx,
        });
        Ticket { slot, evicted: rx }
    }

    /// Drops the entries at the front that are no longer pending.
    fn clear_front(&mut self) {
        while self.queue.front().is_some_and(|e| !e.slot.is_pending()) {
            self.queue.pop_front();
        }
    }

    /// How many connections are pending.
    #[cfg(test)]
    fn pending(&self) -> usize {
        self.shared.count.load(Ordering::Acquire)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::sync::oneshot::error::TryRecvError;

    const GRACE: Duration = Duration::from_secs(1);

    #[tokio::test(start_paused = true)]
    async fn at_the_cap_the_oldest_is_evicted_once_it_is_old_enough() {
        let mut q = PendingQueue::new(2, GRACE);
        assert_eq!(q.make_room(), None);
        let mut a = q.admit();
        tokio::time::advance(Duration::from_millis(10)).await;
        let mut b = q.admit();
        assert_eq!(q.pending(), 2);
        let start = Instant::now();
        let until = q.make_room().expect("full of young connections");
        assert_eq!(until, start - Duration::from_millis(10) + GRACE);
        assert_eq!(a.evicted.try_recv(), Err(TryRecvError::Empty));
        tokio::time::advance(GRACE).await;
        assert_eq!(q.make_room(), None);
        assert_eq!(a.evicted.try_recv(), Ok(()), "the oldest went");
        assert_eq!(b.evicted.try_recv(), Err(TryRecvError::Empty));
        let _c = q.admit();
        assert_eq!(q.pending(), 2);
        assert!(!a.slot.finish(), "an evicted slot is no longer pending");
        assert_eq!(q.pending(), 2, "and is not counted twice");
    }

    #[tokio::test(start_paused = true)]
    async fn a_finished_connection_frees_its_place_wakes_the_loop_and_is_never_evicted() {
        let mut q = PendingQueue::new(2, GRACE);
        let mut a = q.admit();
        let mut b = q.admit();
        let until = q.make_room().expect("full");
        assert!(a.slot.finish());
        assert!(!a.slot.finish(), "once");
        assert_eq!(q.pending(), 1);
        let woke = tokio::time::timeout(Duration::from_millis(1), q.wait_room(until)).await;
        assert!(woke.is_ok(), "the accept loop is woken at once");
        assert_eq!(q.make_room(), None, "room without evicting");
        let _c = q.admit();
        tokio::time::advance(GRACE).await;
        assert_eq!(q.make_room(), None);
        assert_eq!(
            a.evicted.try_recv(),
            Err(TryRecvError::Closed),
            "the finished one was skipped, not evicted"
        );
        assert_eq!(b.evicted.try_recv(), Ok(()), "the oldest pending one was");
        assert_eq!(q.pending(), 1);
    }

    #[tokio::test(start_paused = true)]
    async fn wait_room_ends_when_the_oldest_is_old_enough() {
        let mut q = PendingQueue::new(1, GRACE);
        let _a = q.admit();
        let start = Instant::now();
        let until = q.make_room().expect("full");
        q.wait_room(until).await;
        assert_eq!(start.elapsed(), GRACE);
        assert_eq!(q.make_room(), None);
    }

    #[test]
    fn a_cap_of_zero_counts_as_one() {
        let mut q = PendingQueue::new(0, Duration::ZERO);
        assert_eq!(q.make_room(), None, "the first connection is admitted");
        let mut a = q.admit();
        assert_eq!(q.make_room(), None);
        assert_eq!(a.evicted.try_recv(), Ok(()));
    }

    #[test]
    fn the_queue_stays_bounded_behind_a_long_pending_connection() {
        let mut q = PendingQueue::new(4, Duration::ZERO);
        let _stuck = q.admit();
        for _ in 0..10_000 {
            assert_eq!(q.make_room(), None);
            let t = q.admit();
            assert!(t.slot.finish());
        }
        assert_eq!(q.pending(), 1);
        assert!(q.queue.len() <= 2 * 32, "{} slots kept", q.queue.len());
    }

    #[tokio::test(start_paused = true)]
    async fn watch_ends_a_pending_connection_at_the_limit_only() {
        let mut q = PendingQueue::new(8, GRACE);
        let t = q.admit();
        let start = Instant::now();
        let why = watch(&t.slot, t.evicted, Duration::from_secs(10), never()).await;
        assert_eq!(why, Expired::TimedOut);
        assert_eq!(start.elapsed(), Duration::from_secs(10));
        assert_eq!(q.pending(), 0);

        let t = q.admit();
        assert!(t.slot.finish(), "its first request head arrived");
        let watched = watch(&t.slot, t.evicted, Duration::from_secs(10), async {});
        let still = tokio::time::timeout(Duration::from_secs(3600), watched).await;
        assert!(
            still.is_err(),
            "a connection no longer pending is left alone"
        );
    }

    #[tokio::test]
    async fn watch_reports_an_eviction() {
        let mut q = PendingQueue::new(1, Duration::ZERO);
        let t = q.admit();
        assert_eq!(q.make_room(), None);
        let why = watch(&t.slot, t.evicted, Duration::from_secs(3600), never()).await;
        assert_eq!(why, Expired::Evicted);
    }

    #[tokio::test]
    async fn watch_ends_a_pending_connection_on_shutdown() {
        let mut q = PendingQueue::new(8, GRACE);
        let t = q.admit();
        let why = watch(&t.slot, t.evicted, Duration::from_secs(3600), async {}).await;
        assert_eq!(why, Expired::Shutdown);
        assert_eq!(q.pending(), 0);
    }

    fn never() -> impl Future<Output = ()> {
        std::future::pending()
    }
}
