//! Opens one Server-Sent Events stream: a bounded sender for encoded events and the response body that delivers them.
//!
//! [`SseSender`] is the producer side: cheap to clone, it never blocks; a
//! full queue is an error the caller decides about (the slow-client policy).
//! [`SseBody`] is an `http_body::Body` to put in the response. The body
//! delivers queued bytes in order, whatever is ready in one frame (one
//! write), and ends when
//!
//! - [`SseSender::end`] is called (for example, a subscriber that fell
//!   behind, or the server shutting down: `sse_keepalive` ends the streams
//!   it watches when the server's `Shutdown` fires),
//! - or every sender is dropped.
//!
//! When the client goes away, the body is dropped: senders see
//! [`SseStreamError::Closed`], [`SseSender::closed`] completes, and the
//! guard given to [`SseBody::with_guard`] (an unsubscribe, say) is dropped.
//!
//! # Memory and copies
//!
//! One event is encoded once and queued on many streams, so what a queue
//! costs per event matters more than anything else here:
//!
//! - An event of at most [`COPY_LIMIT`] bytes is **copied** into the
//!   stream's one buffer (for a 64-byte event a copy is cheaper than a
//!   reference count taken and released per stream); the body hands the
//!   whole buffer out as one frame, so a burst leaves in one write with no
//!   second copy. A larger event is queued as the shared `Bytes` itself,
//!   never copied. A frame holds at most [`COALESCE_LIMIT`] bytes of copies.
//! - **Nothing is held while idle**: the buffer goes out with its frame, and
//!   the stream keeps only its small shared state (about 100 bytes: a lock,
//!   counters, the body's waker). `capacity` bounds the messages waiting,
//!   not an allocation made up front.
//! - One lock per event queued, uncontended (the body takes it twice per
//!   burst): a compare-and-swap and a store, where a lock-free queue would
//!   add a node or a reference count per event. One wake per burst: a
//!   sender wakes the body only when it waits, so the events queued before
//!   it runs cost no wake.
//!
//! # Example
//!
//! ```
//! use sse_stream::sse_stream;
//! use http_body_util::BodyExt;
//!
//! # tokio::runtime::Builder::new_current_thread().build().unwrap().block_on(async {
//! let (tx, body) = sse_stream(16);
//! tx.try_send(&bytes::Bytes::from_static(b"data: one\n\n"))?;
//! tx.try_send(&bytes::Bytes::from_static(b"data: two\n\n"))?;
//! drop(tx);
//! let all = body.collect().await.unwrap().to_bytes();
//! assert_eq!(&all[..], b"data: one\n\ndata: two\n\n");
//! # Ok::<(), sse_stream::SseStreamError>(()) }).unwrap();
//! ```
//!
//! # Errors
//!
//! [`SseStreamError`]: the queue is full, or the stream is closed.

use std::any::Any;
use std::collections::VecDeque;
use std::convert::Infallible;
use std::fmt;
use std::pin::Pin;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError, Weak};
use std::task::{Context, Poll, Waker};

use bytes::Bytes;
use http_body::Frame;
use tokio::sync::Notify;

/// Events of at most this many bytes are copied into the stream's buffer;
/// larger ones are queued as the shared `Bytes`, without a copy.
pub const COPY_LIMIT: usize = 1024;

/// Most bytes of copied events one frame carries.
pub const COALESCE_LIMIT: usize = 64 * 1024;

/// A stream's buffer, when the first event of a burst comes, has room for
/// this many such events (within `MIN_RESERVE..=MAX_RESERVE` bytes), so that
/// a burst seldom reallocates.
const BURST: usize = 16;
const MIN_RESERVE: usize = 512;
const MAX_RESERVE: usize = 4096;

/// Opens a stream whose queue holds at most `capacity` messages (at least 1).
///
/// Nothing is allocated for the queue until an event is queued, and nothing
/// is kept once the body has taken it.
pub fn sse_stream(capacity: usize) -> (SseSender, SseBody) {
    let shared = Arc::new(Shared {
        state: Mutex::new(State {
            tail: Vec::new(),
            tail_count: 0,
            chunks: None,
            queued: 0,
            capacity: u32::try_from(capacity.max(1)).unwrap_or(u32::MAX),
            senders: 1,
            closed: false,
            active: false,
            waker: None,
            closed_waiters: None,
        }),
    });
    let body = SseBody {
        shared: shared.clone(),
        guard: None,
    };
    (SseSender { shared }, body)
}

/// What the sender side and the body share.
struct Shared {
    state: Mutex<State>,
}

struct State {
    /// Small events, copied in order; they come after everything in `chunks`.
    tail: Vec<u8>,
    /// Messages in `tail`.
    tail_count: u32,
    /// Frames that go before `tail` (large events, shared, and full
    /// buffers of copies), with how many messages each holds. Rare: boxed,
    /// and gone once empty.
    #[allow(clippy::box_collection)] // 8 bytes in every stream instead of 32
    chunks: Option<Box<VecDeque<(Bytes, u32)>>>,
    /// Messages queued and not yet taken by the body.
    queued: u32,
    capacity: u32,
    /// Live senders; at zero the body ends once the queue is drained.
    senders: u32,
    /// Ended by a sender, or the body is gone: nothing is queued any more.
    closed: bool,
    /// Something was queued since the last [`SseSender::try_send_if_idle`].
    active: bool,
    /// The body's waker while it waits for bytes.
    waker: Option<Waker>,
    /// Tasks in [`SseSender::closed`]; made by the first one.
    closed_waiters: Option<Arc<Notify>>,
}

impl State {
    /// Queues `bytes`, `n` messages: copied into `tail` if small, else shared.
    fn push(&mut self, bytes: &Bytes, n: u32) {
        let len = bytes.len();
        if len <= COPY_LIMIT {
            if !self.tail.is_empty() && self.tail.len() + len > COALESCE_LIMIT {
                self.seal_tail();
            }
            if self.tail.capacity() == 0 {
                self.tail
                    .reserve((len * BURST).clamp(MIN_RESERVE, MAX_RESERVE).max(len));
            }
            self.tail.extend_from_slice(bytes);
            self.tail_count += n;
        } else {
            self.seal_tail();
            self.chunks
                .get_or_insert_with(Box::default)
                .push_back((bytes.clone(), n));
        }
        self.queued += n;
    }

    /// Moves the copies gathered so far behind the chunks, as one frame.
    fn seal_tail(&mut self) {
        if self.tail_count == 0 {
            return;
        }
        let tail = Bytes::from(std::mem::take(&mut self.tail));
        let n = std::mem::take(&mut self.tail_count);
        self.chunks
            .get_or_insert_with(Box::default)
            .push_back((tail, n));
    }

    /// The next frame to write, if any; what it held is no longer queued.
    fn take(&mut self) -> Option<Bytes> {
        if let Some(chunks) = &mut self.chunks {
            let next = chunks.pop_front();
            if chunks.is_empty() {
                self.chunks = None;
            }
            if let Some((bytes, n)) = next {
                self.queued -= n;
                return Some(bytes);
            }
        }
        if self.tail_count == 0 {
            return None;
        }
        self.queued -= std::mem::take(&mut self.tail_count);
        Some(Bytes::from(std::mem::take(&mut self.tail)))
    }
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Closes the stream, drops what is queued, wakes the body and `closed()` waiters.
    fn close(&self) {
        let (waker, waiters, dropped) = {
            let mut st = self.lock();
            if st.closed {
                return;
            }
            st.closed = true;
            st.tail_count = 0;
            st.queued = 0;
            (
                st.waker.take(),
                st.closed_waiters.take(),
                (std::mem::take(&mut st.tail), st.chunks.take()),
            )
        };
        drop(dropped);
        if let Some(w) = waker {
            w.wake();
        }
        if let Some(n) = waiters {
            n.notify_waiters();
        }
    }

    /// Queues `bytes`, `n` messages, unless the stream is closed or has no
    /// room for them all; wakes the body if it waits.
    fn send(&self, bytes: &Bytes, n: u32) -> Result<(), SseStreamError> {
        if bytes.is_empty() {
            // Nothing to deliver; only say whether it could have been.
            let st = self.lock();
            return if st.closed {
                Err(SseStreamError::Closed)
            } else {
                Ok(())
            };
        }
        let waker = {
            let mut st = self.lock();
            if st.closed {
                return Err(SseStreamError::Closed);
            }
            if st.capacity - st.queued < n {
                return Err(SseStreamError::Full);
            }
            st.push(bytes, n);
            st.active = true;
            st.waker.take()
        };
        if let Some(w) = waker {
            w.wake();
        }
        Ok(())
    }

    fn send_if_idle(&self, bytes: &Bytes) -> Result<bool, SseStreamError> {
        let waker = {
            let mut st = self.lock();
            // Without senders the body is finishing: nothing more goes in.
            if st.closed || st.senders == 0 {
                return Err(SseStreamError::Closed);
            }
            if std::mem::take(&mut st.active) || st.queued > 0 || bytes.is_empty() {
                return Ok(false);
            }
            st.push(bytes, 1);
            st.waker.take()
        };
        if let Some(w) = waker {
            w.wake();
        }
        Ok(true)
    }
}

/// The producer side of one stream; clones share the queue.
pub struct SseSender {
    shared: Arc<Shared>,
}

impl SseSender {
    /// Queues encoded event bytes without waiting: a copy of them if they
    /// are at most [`COPY_LIMIT`] bytes, else the shared `Bytes` (a
    /// reference count). Empty bytes queue nothing.
    pub fn try_send(&self, bytes: &Bytes) -> Result<(), SseStreamError> {
        self.shared.send(bytes, 1)
    }

    /// Queues `count` encoded events that lie back to back in `bytes` (a
    /// batch, encoded once for every stream) with one lock and at most one
    /// wake, as [`try_send`](SseSender::try_send) queues one: each event
    /// counts as a message against the capacity, and [`SseStreamError::Full`]
    /// when they do not all fit (none is queued then). A `count` of 0 is
    /// taken as 1.
    pub fn try_send_many(&self, bytes: &Bytes, count: usize) -> Result<(), SseStreamError> {
        let n = u32::try_from(count.max(1)).map_err(|_| SseStreamError::Full)?;
        self.shared.send(bytes, n)
    }

    /// Queues `bytes` only if nothing was queued since the last call and
    /// nothing waits in the queue: a keep-alive comment for a stream that
    /// has been silent since then. `Ok(true)` when it was queued; never
    /// [`SseStreamError::Full`] (a stream with a queue is not silent).
    pub fn try_send_if_idle(&self, bytes: &Bytes) -> Result<bool, SseStreamError> {
        self.shared.send_if_idle(bytes)
    }

    /// Ends the stream: the body finishes at once, dropping what is queued.
    pub fn end(&self) {
        self.shared.close();
    }

    /// Whether the client is gone or the stream was ended.
    pub fn is_closed(&self) -> bool {
        self.shared.lock().closed
    }

    /// Completes when the client is gone or the stream is ended.
    pub async fn closed(&self) {
        let waiters = {
            let mut st = self.shared.lock();
            if st.closed {
                return;
            }
            st.closed_waiters.get_or_insert_with(Arc::default).clone()
        };
        let notified = waiters.notified();
        tokio::pin!(notified);
        // Registered before the check, so a close in between is not missed.
        notified.as_mut().enable();
        if self.is_closed() {
            return;
        }
        notified.await;
    }

    /// Free slots in the queue now (0 once closed).
    pub fn capacity(&self) -> usize {
        let st = self.shared.lock();
        if st.closed {
            0
        } else {
            (st.capacity - st.queued) as usize
        }
    }

    /// A handle that does not keep the stream open: the body still ends
    /// when every [`SseSender`] is gone. For a ticker that visits many
    /// streams (`sse_keepalive`).
    pub fn downgrade(&self) -> WeakSseSender {
        WeakSseSender {
            shared: Arc::downgrade(&self.shared),
        }
    }
}

impl Clone for SseSender {
    fn clone(&self) -> Self {
        self.shared.lock().senders += 1;
        SseSender {
            shared: self.shared.clone(),
        }
    }
}

impl Drop for SseSender {
    fn drop(&mut self) {
        let waker = {
            let mut st = self.shared.lock();
            st.senders -= 1;
            if st.senders == 0 {
                st.waker.take()
            } else {
                None
            }
        };
        if let Some(w) = waker {
            w.wake();
        }
    }
}

impl fmt::Debug for SseSender {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SseSender")
            .field("closed", &self.is_closed())
            .field("capacity", &self.capacity())
            .finish()
    }
}

/// A stream handle that does not count as a sender (see
/// [`SseSender::downgrade`]); it can still queue a keep-alive and end the
/// stream. Once the stream is closed, gone, or without senders, every call
/// answers [`SseStreamError::Closed`].
#[derive(Clone)]
pub struct WeakSseSender {
    shared: Weak<Shared>,
}

impl WeakSseSender {
    /// [`SseSender::try_send_if_idle`].
    pub fn try_send_if_idle(&self, bytes: &Bytes) -> Result<bool, SseStreamError> {
        match self.shared.upgrade() {
            Some(shared) => shared.send_if_idle(bytes),
            None => Err(SseStreamError::Closed),
        }
    }

    /// [`SseSender::end`]; nothing if the stream is gone.
    pub fn end(&self) {
        if let Some(shared) = self.shared.upgrade() {
            shared.close();
        }
    }

    /// Whether the stream is closed, gone, or finishing because every
    /// [`SseSender`] is gone.
    pub fn is_closed(&self) -> bool {
        self.shared.upgrade().is_none_or(|s| {
            let st = s.lock();
            st.closed || st.senders == 0
        })
    }
}

impl fmt::Debug for WeakSseSender {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("WeakSseSender")
            .field("closed", &self.is_closed())
            .finish()
    }
}

/// Why bytes were not queued.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SseStreamError {
    /// The client is gone or the stream was ended.
    Closed,
    /// The queue is full: the client reads slower than events arrive.
    Full,
}

impl fmt::Display for SseStreamError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            SseStreamError::Closed => "the SSE stream is closed",
            SseStreamError::Full => "the SSE stream's queue is full",
        })
    }
}

impl std::error::Error for SseStreamError {}

/// The response body of one stream.
pub struct SseBody {
    shared: Arc<Shared>,
    guard: Option<Box<dyn Any + Send>>,
}

impl SseBody {
    /// Keeps `guard` alive as long as the body: dropped when the client goes away.
    #[must_use]
    pub fn with_guard(mut self, guard: impl Any + Send) -> Self {
        self.guard = Some(Box::new(guard));
        self
    }
}

impl Drop for SseBody {
    fn drop(&mut self) {
        self.shared.close();
    }
}

impl fmt::Debug for SseBody {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SseBody").finish_non_exhaustive()
    }
}

impl http_body::Body for SseBody {
    type Data = Bytes;
    type Error = Infallible;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Infallible>>> {
        let mut st = self.shared.lock();
        if st.closed {
            return Poll::Ready(None);
        }
        if let Some(bytes) = st.take() {
            return Poll::Ready(Some(Ok(Frame::data(bytes))));
        }
        if st.senders == 0 {
            return Poll::Ready(None);
        }
        if !st.waker.as_ref().is_some_and(|w| w.will_wake(cx.waker())) {
            st.waker = Some(cx.waker().clone());
        }
        Poll::Pending
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use http_body_util::BodyExt;
    use std::sync::Arc;
    use std::sync::atomic::{AtomicBool, Ordering};

    fn b(s: &'static str) -> Bytes {
        Bytes::from_static(s.as_bytes())
    }

    async fn next(body: &mut SseBody) -> Bytes {
        body.frame().await.unwrap().unwrap().into_data().unwrap()
    }

    #[tokio::test]
    async fn delivers_in_order_what_is_ready_leaves_in_one_frame_a_lone_message_at_once() {
        let (tx, mut body) = sse_stream(8);
        tx.try_send(&b("a")).unwrap();
        tx.try_send(&b("b")).unwrap();
        tx.try_send(&b("c")).unwrap();
        assert_eq!(
            &next(&mut body).await[..],
            b"abc",
            "everything ready leaves in one frame"
        );
        tx.try_send(&b("d")).unwrap();
        assert_eq!(
            &next(&mut body).await[..],
            b"d",
            "a lone message leaves alone, without waiting"
        );
        assert_eq!(tx.capacity(), 8, "taken by the body: no longer queued");
    }

    #[tokio::test]
    async fn small_events_are_copied_large_ones_shared_and_order_is_kept() {
        let (tx, mut body) = sse_stream(16);
        let large = Bytes::from(vec![b'L'; COPY_LIMIT + 1]);
        tx.try_send(&b("1")).unwrap();
        tx.try_send(&b("2")).unwrap();
        tx.try_send(&large).unwrap();
        tx.try_send(&b("3")).unwrap();
        assert_eq!(&next(&mut body).await[..], b"12");
        let got = next(&mut body).await;
        assert_eq!(got.as_ptr(), large.as_ptr(), "the same bytes, not a copy");
        assert_eq!(&next(&mut body).await[..], b"3");
        // A burst of copies is cut into frames of at most COALESCE_LIMIT.
        let event = Bytes::from(vec![b'e'; COPY_LIMIT]);
        let (tx, mut body) = sse_stream(1024);
        let n = 3 * COALESCE_LIMIT / COPY_LIMIT;
        for _ in 0..n {
            tx.try_send(&event).unwrap();
        }
        let mut total = 0;
        while total < n * COPY_LIMIT {
            let frame = next(&mut body).await;
            assert!(frame.len() <= COALESCE_LIMIT, "{}", frame.len());
            total += frame.len();
        }
        assert_eq!(total, n * COPY_LIMIT);
    }

    #[tokio::test]
    async fn an_idle_stream_holds_no_buffer() {
        let (tx, mut body) = sse_stream(256);
        let held = |body: &SseBody| {
            let st = body.shared.lock();
            (st.tail.capacity(), st.chunks.is_some())
        };
        assert_eq!(held(&body), (0, false), "nothing before the first event");
        tx.try_send(&b("data: x\n\n")).unwrap();
        tx.try_send(&Bytes::from(vec![b'L'; COPY_LIMIT + 1]))
            .unwrap();
        tx.try_send(&b("data: y\n\n")).unwrap();
        for _ in 0..3 {
            next(&mut body).await;
        }
        assert_eq!(held(&body), (0, false), "nothing once it is all out");
    }

    #[tokio::test]
    async fn a_full_queue_is_an_error_not_a_wait() {
        let (tx, _body) = sse_stream(2);
        tx.try_send(&b("1")).unwrap();
        tx.try_send(&b("2")).unwrap();
        assert_eq!(tx.try_send(&b("3")), Err(SseStreamError::Full));
        assert_eq!(tx.capacity(), 0);
    }

    #[tokio::test]
    async fn a_batch_counts_each_event_and_fits_whole_or_not_at_all() {
        let (tx, mut body) = sse_stream(4);
        tx.try_send(&b("data: 1\n\n")).unwrap();
        let batch = b("data: 2\n\ndata: 3\n\ndata: 4\n\n");
        tx.try_send_many(&batch, 3).unwrap();
        assert_eq!(tx.capacity(), 0);
        assert_eq!(tx.try_send_many(&batch, 3), Err(SseStreamError::Full));
        let frame = body.frame().await.unwrap().unwrap().into_data().unwrap();
        assert_eq!(&frame[..], b"data: 1\n\ndata: 2\n\ndata: 3\n\ndata: 4\n\n");
        assert_eq!(tx.capacity(), 4);
        // Larger than the queue even when empty: refused, nothing queued.
        let five = b("data: a\n\n").repeat(5);
        assert_eq!(
            tx.try_send_many(&Bytes::from(five), 5),
            Err(SseStreamError::Full)
        );
        assert_eq!(tx.capacity(), 4);
    }

    #[tokio::test]
    async fn end_finishes_the_body_at_once() {
        let (tx, mut body) = sse_stream(4);
        tx.try_send(&b("queued")).unwrap();
        tx.end();
        assert!(body.frame().await.is_none());
        assert_eq!(tx.try_send(&b("x")), Err(SseStreamError::Closed));
        tx.closed().await;
    }

    #[tokio::test]
    async fn closed_wakes_every_waiter() {
        let (tx, body) = sse_stream(4);
        let waiters: Vec<_> = (0..3)
            .map(|_| {
                let tx = tx.clone();
                tokio::spawn(async move { tx.closed().await })
            })
            .collect();
        tokio::task::yield_now().await;
        drop(body);
        for w in waiters {
            w.await.unwrap();
        }
    }

    #[tokio::test]
    async fn try_send_if_idle_queues_only_on_a_stream_silent_since_the_last_call() {
        let (tx, mut body) = sse_stream(4);
        let ping = b(": keepalive\n\n");
        assert_eq!(
            tx.try_send_if_idle(&ping),
            Ok(true),
            "silent from the start"
        );
        assert_eq!(&next(&mut body).await[..], b": keepalive\n\n");
        tx.try_send(&b("data: x\n\n")).unwrap();
        assert_eq!(tx.try_send_if_idle(&ping), Ok(false), "an event since");
        next(&mut body).await;
        assert_eq!(
            tx.try_send_if_idle(&ping),
            Ok(true),
            "silent since the last call"
        );
        assert_eq!(
            tx.try_send_if_idle(&ping),
            Ok(false),
            "the last one is still queued"
        );
        let weak = tx.downgrade();
        next(&mut body).await;
        assert_eq!(weak.try_send_if_idle(&ping), Ok(true));
        weak.end();
        assert!(tx.is_closed() && weak.is_closed());
        assert_eq!(weak.try_send_if_idle(&ping), Err(SseStreamError::Closed));
    }

    #[tokio::test]
    async fn a_weak_sender_does_not_keep_the_body_open() {
        let (tx, body) = sse_stream(4);
        let weak = tx.downgrade();
        tx.try_send(&b("1")).unwrap();
        drop(tx);
        assert_eq!(&body.collect().await.unwrap().to_bytes()[..], b"1");
        assert!(weak.is_closed(), "gone with the body");
        assert_eq!(weak.try_send_if_idle(&b("x")), Err(SseStreamError::Closed));
    }

    #[tokio::test]
    async fn dropping_the_body_closes_senders_and_drops_the_guard() {
        struct Flag(Arc<AtomicBool>);
        impl Drop for Flag {
            fn drop(&mut self) {
                self.0.store(true, Ordering::SeqCst);
            }
        }
        let dropped = Arc::new(AtomicBool::new(false));
        let (tx, body) = sse_stream(4);
        let body = body.with_guard(Flag(dropped.clone()));
        drop(body);
        assert!(dropped.load(Ordering::SeqCst));
        assert_eq!(tx.try_send(&b("x")), Err(SseStreamError::Closed));
        assert!(tx.is_closed());
        tx.closed().await;
    }

    #[tokio::test]
    async fn the_body_ends_when_every_sender_is_gone() {
        let (tx, body) = sse_stream(4);
        let tx2 = tx.clone();
        tx.try_send(&b("1")).unwrap();
        drop(tx);
        tx2.try_send(&b("2")).unwrap();
        drop(tx2);
        assert_eq!(&body.collect().await.unwrap().to_bytes()[..], b"12");
    }

    /// What one stream's state costs (the body's frame, the queue, the
    /// waker): kept small, since a server holds thousands.
    #[test]
    fn the_shared_state_of_a_stream_is_small() {
        let size = std::mem::size_of::<Shared>();
        println!("sse_stream shared state: {size} bytes (+16 for the Arc's counts)");
        assert!(size <= 96, "{size} bytes");
        assert_eq!(std::mem::size_of::<SseBody>(), 24);
    }
}

/// The examples of this crate's registry entries, compiled by `cargo test --doc`.
#[cfg(doctest)]
#[doc = include_str!("../sse_stream.md")]
#[doc = include_str!("../../../types/infra/SseBody.md")]
#[doc = include_str!("../../../types/infra/SseSender.md")]
pub struct RegistryExamples;
