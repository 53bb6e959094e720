//! Keeps an SSE stream alive: adds a comment to a body after every interval without output.
//!
//! Proxies and load balancers cut connections that stay silent; browsers
//! ignore comments. `sse_keepalive` wraps a response body (an `SseBody`, or
//! any body of `Bytes`) and, whenever `interval` passes without the body
//! producing anything, yields `: keepalive` itself. A busy stream gets no
//! comments at all. It is a body adapter, not a task: one timer per stream,
//! gone with the body when the client goes away.
//!
//! # Example
//!
//! ```
//! use std::time::Duration;
//! use http_body_util::BodyExt;
//! use sse_keepalive::sse_keepalive;
//!
//! # tokio::runtime::Builder::new_current_thread().enable_time().start_paused(true).build().unwrap().block_on(async {
//! let (stream, body) = sse_stream::sse_stream(8);
//! let mut body = sse_keepalive(body, Duration::from_secs(15));
//! // Nothing to send for 15 s: the adapter speaks.
//! let frame = body.frame().await.unwrap().unwrap().into_data().unwrap();
//! assert_eq!(&frame[..], b": keepalive\n\n");
//! assert_eq!(body.sent(), 1);
//! # drop(stream);
//! # });
//! ```

use std::pin::Pin;
use std::sync::OnceLock;
use std::task::{Context, Poll, ready};
use std::time::Duration;

use bytes::Bytes;
use http_body::{Body, Frame, SizeHint};
use sse_encode::sse_encode;
use sse_event::SseEvent;
use tokio::time::{Instant, Sleep};

/// Wraps `body` so that a `: keepalive` comment goes out after every
/// `interval` (at least 1 ms) in which `body` produced nothing.
pub fn sse_keepalive<B>(body: B, interval: Duration) -> KeepAlive<B>
where
    B: Body<Data = Bytes> + Unpin,
{
    let interval = interval.max(Duration::from_millis(1));
    let now = Instant::now();
    KeepAlive {
        inner: body,
        interval,
        timer: Box::pin(tokio::time::sleep_until(now + interval)),
        last: now,
        sent: 0,
    }
}

/// The body [`sse_keepalive`] returns: the inner body's frames, with keep-alive
/// comments in its silences.
#[derive(Debug)]
pub struct KeepAlive<B> {
    inner: B,
    interval: Duration,
    timer: Pin<Box<Sleep>>,
    /// When the stream last produced output.
    last: Instant,
    sent: u64,
}

impl<B> KeepAlive<B> {
    /// How many keep-alive comments this body has produced.
    pub fn sent(&self) -> u64 {
        self.sent
    }

    /// The wrapped body.
    pub fn get_ref(&self) -> &B {
        &self.inner
    }
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

impl<B> Body for KeepAlive<B>
where
    B: Body<Data = Bytes> + Unpin,
{
    type Data = Bytes;
    type Error = B::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, B::Error>>> {
        let this = &mut *self;
        if let Poll::Ready(frame) = Pin::new(&mut this.inner).poll_frame(cx) {
            if frame.is_some() {
                this.last = Instant::now();
            }
            return Poll::Ready(frame);
        }
        loop {
            ready!(this.timer.as_mut().poll(cx));
            let now = Instant::now();
            let due = this.last + this.interval;
            if now >= due {
                this.last = now;
                this.timer.as_mut().reset(now + this.interval);
                this.sent += 1;
                return Poll::Ready(Some(Ok(Frame::data(comment()))));
            }
            // Output since the timer was set: wait out the rest of the interval.
            this.timer.as_mut().reset(due);
        }
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        SizeHint::default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use http_body_util::BodyExt;

    async fn next(body: &mut KeepAlive<sse_stream::SseBody>) -> Option<Bytes> {
        body.frame().await.map(|f| f.unwrap().into_data().unwrap())
    }

    #[tokio::test(start_paused = true)]
    async fn one_comment_per_idle_interval() {
        let (tx, body) = sse_stream::sse_stream(8);
        let mut body = sse_keepalive(body, Duration::from_secs(15));
        let start = Instant::now();
        for n in 1..=3 {
            assert_eq!(next(&mut body).await.unwrap(), &b": keepalive\n\n"[..]);
            assert_eq!(start.elapsed(), Duration::from_secs(15 * n));
        }
        assert_eq!(body.sent(), 3);
        drop(tx);
    }

    #[tokio::test(start_paused = true)]
    async fn output_postpones_the_next_comment() {
        let (tx, body) = sse_stream::sse_stream(8);
        let mut body = sse_keepalive(body, Duration::from_secs(15));
        let start = Instant::now();
        let sender = tokio::spawn(async move {
            tokio::time::sleep(Duration::from_secs(10)).await;
            tx.try_send(Bytes::from_static(b"data: x\n\n")).unwrap();
            tx
        });
        assert_eq!(next(&mut body).await.unwrap(), &b"data: x\n\n"[..]);
        assert_eq!(start.elapsed(), Duration::from_secs(10));
        assert_eq!(next(&mut body).await.unwrap(), &b": keepalive\n\n"[..]);
        assert_eq!(
            start.elapsed(),
            Duration::from_secs(25),
            "15 s after the last output, not after the start"
        );
        drop(sender.await.unwrap());
    }

    #[tokio::test(start_paused = true)]
    async fn ends_with_the_inner_body() {
        let (tx, body) = sse_stream::sse_stream(8);
        let mut body = sse_keepalive(body, Duration::from_secs(1));
        tx.try_send(Bytes::from_static(b"last")).unwrap();
        tx.end();
        assert_eq!(next(&mut body).await, None);
        assert_eq!(body.sent(), 0);
    }

    #[test]
    fn the_comment_is_what_the_encoder_writes() {
        assert_eq!(comment(), &b": keepalive\n\n"[..]);
    }
}
