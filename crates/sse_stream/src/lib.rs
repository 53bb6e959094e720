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
use std::convert::Infallible;
use std::fmt;
use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::{Bytes, BytesMut};
use http_body::Frame;
use http_types::{Shutdown, ShutdownWait};
use tokio::sync::mpsc;

/// Most bytes one frame coalesces from the queue.
const COALESCE_LIMIT: usize = 64 * 1024;

/// Opens a stream whose queue holds at most `capacity` messages (at least 1).
pub fn sse_stream(capacity: usize) -> (SseSender, SseBody) {
    let (tx, rx) = mpsc::channel(capacity.max(1));
    let end = Shutdown::new();
    let body = SseBody {
        rx,
        end: Box::pin(end.wait()),
        shutdown: None,
        _guard: None,
    };
    (SseSender { tx, end }, body)
}

/// The producer side of one stream; clones share the queue.
#[derive(Clone)]
pub struct SseSender {
    tx: mpsc::Sender<Bytes>,
    end: Shutdown,
}

impl SseSender {
    /// Queues encoded event bytes without waiting.
    pub fn try_send(&self, bytes: Bytes) -> Result<(), SseStreamError> {
        if self.end.is_triggered() {
            return Err(SseStreamError::Closed);
        }
        self.tx.try_send(bytes).map_err(|e| match e {
            mpsc::error::TrySendError::Full(_) => SseStreamError::Full,
            mpsc::error::TrySendError::Closed(_) => SseStreamError::Closed,
        })
    }

    /// Ends the stream: the body finishes at once, dropping what is queued.
    pub fn end(&self) {
        self.end.trigger();
    }

    /// Whether the client is gone or the stream was ended.
    pub fn is_closed(&self) -> bool {
        self.end.is_triggered() || self.tx.is_closed()
    }

    /// Completes when the client is gone or the stream is ended.
    pub async fn closed(&self) {
        tokio::select! {
            () = self.tx.closed() => {}
            () = self.end.wait() => {}
        }
    }

    /// Free slots in the queue now.
    pub fn capacity(&self) -> usize {
        self.tx.capacity()
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
    rx: mpsc::Receiver<Bytes>,
    end: Pin<Box<ShutdownWait>>,
    shutdown: Option<Pin<Box<ShutdownWait>>>,
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
        if this.end.as_mut().poll(cx).is_ready() {
            return Poll::Ready(None);
        }
        if let Some(s) = &mut this.shutdown
            && s.as_mut().poll(cx).is_ready()
        {
            return Poll::Ready(None);
        }
        match this.rx.poll_recv(cx) {
            Poll::Ready(Some(first)) => {
                let Ok(next) = this.rx.try_recv() else {
                    return Poll::Ready(Some(Ok(Frame::data(first))));
                };
                let mut buf = BytesMut::with_capacity(first.len() + next.len());
                buf.extend_from_slice(&first);
                buf.extend_from_slice(&next);
                while buf.len() < COALESCE_LIMIT {
                    match this.rx.try_recv() {
                        Ok(b) => buf.extend_from_slice(&b),
                        Err(_) => break,
                    }
                }
                Poll::Ready(Some(Ok(Frame::data(buf.freeze()))))
            }
            Poll::Ready(None) => Poll::Ready(None),
            Poll::Pending => Poll::Pending,
        }
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
