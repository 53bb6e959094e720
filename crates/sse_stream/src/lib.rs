//! Opens one Server-Sent Events stream: a bounded sender for encoded events and the response body that delivers them.
//!
//! [`SseSender`] is the producer side: cheap to clone, it never blocks; a
//! full queue is an error the caller decides about (the slow-client policy).
//! [`SseBody`] is an `http_body::Body` to put in the response. The body
//! delivers queued bytes in order, coalescing whatever is ready into one
//! frame (one write, one flush), and ends when
//!
//! - [`SseSender::end`] is called (for example, a subscriber that fell behind),
//! - the server's [`Shutdown`] signal fires ([`SseBody::with_shutdown`]),
//! - or every sender is dropped.
//!
//! When the client goes away, the body is dropped: senders see
//! [`SseStreamError::Closed`], [`SseSender::closed`] completes, and the
//! guard given to [`SseBody::with_guard`] (an unsubscribe, say) is dropped.
//!
//! # Example
//!
//! ```
//! use sse_stream::sse_stream;
//! use http_body_util::BodyExt;
//!
//! # tokio::runtime::Builder::new_current_thread().build().unwrap().block_on(async {
//! let (tx, body) = sse_stream(16);
//! tx.try_send(bytes::Bytes::from_static(b"data: one\n\n"))?;
//! tx.try_send(bytes::Bytes::from_static(b"data: two\n\n"))?;
//! drop(tx);
//! let all = body.collect().await.unwrap().to_bytes();
//! assert_eq!(&all[..], b"data: one\n\ndata: two\n\n");
//! # Ok::<(), sse_stream::SseStreamError>(()) }).unwrap();
//! ```

use std::any::Any;
use std::collections::VecDeque;
use std::convert::Infallible;
use std::fmt;
use std::pin::Pin;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::task::{Context, Poll, Waker};

use bytes::{Bytes, BytesMut};
use http_body::Frame;
use http_types::{Shutdown, WaitForCancellationFutureOwned};
use tokio::sync::Notify;

/// Most bytes one frame coalesces from the queue.
const COALESCE_LIMIT: usize = 64 * 1024;

/// Opens a stream whose queue holds at most `capacity` messages (at least 1).
///
/// The queue is a plain ring buffer that grows as messages wait and starts
/// empty, so an idle stream costs about 150 bytes here.
pub fn sse_stream(capacity: usize) -> (SseSender, SseBody) {
    let shared = Arc::new(Shared {
        state: Mutex::new(State {
            queue: VecDeque::new(),
            capacity: capacity.max(1),
            closed: false,
            senders: 1,
            waker: None,
        }),
        closed: Notify::new(),
    });
    let body = SseBody {
        shared: shared.clone(),
        shutdown: None,
        _guard: None,
    };
    (SseSender { shared }, body)
}

/// What the sender side and the body share.
struct Shared {
    state: Mutex<State>,
    /// Notified once, when the stream closes.
    closed: Notify,
}

struct State {
    queue: VecDeque<Bytes>,
    capacity: usize,
    /// Ended by a sender, or the body is gone: nothing is queued any more.
    closed: bool,
    /// Live senders; at zero the body ends once the queue is drained.
    senders: usize,
    /// The body's waker while it waits for bytes.
    waker: Option<Waker>,
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Closes the stream, drops what is queued, wakes the body and `closed()` waiters.
    fn close(&self) {
        let (waker, dropped) = {
            let mut st = self.lock();
            if st.closed {
                return;
            }
            st.closed = true;
            (st.waker.take(), std::mem::take(&mut st.queue))
        };
        drop(dropped);
        if let Some(w) = waker {
            w.wake();
        }
        self.closed.notify_waiters();
    }
}

/// The producer side of one stream; clones share the queue.
pub struct SseSender {
    shared: Arc<Shared>,
}

impl SseSender {
    /// Queues encoded event bytes without waiting.
    pub fn try_send(&self, bytes: Bytes) -> Result<(), SseStreamError> {
        let waker = {
            let mut st = self.shared.lock();
            if st.closed {
                return Err(SseStreamError::Closed);
            }
            if st.queue.len() >= st.capacity {
                return Err(SseStreamError::Full);
            }
            st.queue.push_back(bytes);
            st.waker.take()
        };
        if let Some(w) = waker {
            w.wake();
        }
        Ok(())
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
        let notified = self.shared.closed.notified();
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
            st.capacity - st.queue.len()
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
    shutdown: Option<Pin<Box<WaitForCancellationFutureOwned>>>,
    _guard: Option<Box<dyn Any + Send>>,
}

impl SseBody {
    /// Also ends the stream when `signal` fires (the server is shutting down).
    #[must_use]
    pub fn with_shutdown(mut self, signal: &Shutdown) -> Self {
        self.shutdown = Some(Box::pin(signal.wait()));
        self
    }

    /// Keeps `guard` alive as long as the body: dropped when the client goes away.
    #[must_use]
    pub fn with_guard(mut self, guard: impl Any + Send) -> Self {
        self._guard = Some(Box::new(guard));
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
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Infallible>>> {
        let this = &mut *self;
        if let Some(s) = &mut this.shutdown
            && s.as_mut().poll(cx).is_ready()
        {
            return Poll::Ready(None);
        }
        let mut st = this.shared.lock();
        if st.closed {
            return Poll::Ready(None);
        }
        let Some(first) = st.queue.pop_front() else {
            if st.senders == 0 {
                return Poll::Ready(None);
            }
            if !st.waker.as_ref().is_some_and(|w| w.will_wake(cx.waker())) {
                st.waker = Some(cx.waker().clone());
            }
            return Poll::Pending;
        };
        if st.queue.is_empty() {
            return Poll::Ready(Some(Ok(Frame::data(first))));
        }
        let mut buf = BytesMut::with_capacity(
            first.len()
                + st.queue
                    .iter()
                    .map(Bytes::len)
                    .sum::<usize>()
                    .min(COALESCE_LIMIT),
        );
        buf.extend_from_slice(&first);
        while buf.len() < COALESCE_LIMIT {
            match st.queue.pop_front() {
                Some(b) => buf.extend_from_slice(&b),
                None => break,
            }
        }
        Poll::Ready(Some(Ok(Frame::data(buf.freeze()))))
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

    #[tokio::test]
    async fn delivers_in_order_and_coalesces() {
        let (tx, mut body) = sse_stream(8);
        tx.try_send(b("a")).unwrap();
        tx.try_send(b("b")).unwrap();
        tx.try_send(b("c")).unwrap();
        let frame = body.frame().await.unwrap().unwrap().into_data().unwrap();
        assert_eq!(&frame[..], b"abc", "everything ready leaves in one frame");
        tx.try_send(b("d")).unwrap();
        let frame = body.frame().await.unwrap().unwrap().into_data().unwrap();
        assert_eq!(
            &frame[..],
            b"d",
            "a lone message leaves alone, without waiting"
        );
    }

    #[tokio::test]
    async fn full_queue_is_an_error_not_a_wait() {
        let (tx, _body) = sse_stream(2);
        tx.try_send(b("1")).unwrap();
        tx.try_send(b("2")).unwrap();
        assert_eq!(tx.try_send(b("3")), Err(SseStreamError::Full));
    }

    #[tokio::test]
    async fn end_finishes_the_body_at_once() {
        let (tx, mut body) = sse_stream(4);
        tx.try_send(b("queued")).unwrap();
        tx.end();
        assert!(body.frame().await.is_none());
        assert_eq!(tx.try_send(b("x")), Err(SseStreamError::Closed));
        tx.closed().await;
    }

    #[tokio::test]
    async fn server_shutdown_finishes_the_body() {
        let signal = Shutdown::new();
        let (tx, body) = sse_stream(4);
        let mut body = body.with_shutdown(&signal);
        tx.try_send(b("x")).unwrap();
        assert!(body.frame().await.is_some());
        signal.trigger();
        assert!(body.frame().await.is_none());
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
        assert_eq!(tx.try_send(b("x")), Err(SseStreamError::Closed));
        assert!(tx.is_closed());
        tx.closed().await;
    }

    #[tokio::test]
    async fn body_ends_when_every_sender_is_gone() {
        let (tx, body) = sse_stream(4);
        let tx2 = tx.clone();
        tx.try_send(b("1")).unwrap();
        drop(tx);
        tx2.try_send(b("2")).unwrap();
        drop(tx2);
        assert_eq!(&body.collect().await.unwrap().to_bytes()[..], b"12");
    }
}
