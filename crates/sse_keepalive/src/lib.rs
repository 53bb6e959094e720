//! Sends a keep-alive comment on an SSE stream every interval until the stream closes.
//!
//! Proxies and load balancers cut connections that stay silent; browsers
//! ignore comments. Run it as a task beside the stream:
//! `tokio::spawn(sse_keepalive(stream.clone(), interval))`. It returns when
//! the client goes away or the stream is ended, so the task never outlives
//! its connection. A tick that finds the queue full is skipped: the stream is
//! busy anyway.
//!
//! # Example
//!
//! ```
//! use std::time::Duration;
//! use sse_keepalive::sse_keepalive;
//!
//! # tokio::runtime::Builder::new_current_thread().enable_time().build().unwrap().block_on(async {
//! let (stream, body) = sse_stream::sse_stream(8);
//! let task = tokio::spawn(sse_keepalive(stream.clone(), Duration::from_secs(15)));
//! drop(body); // the client goes away
//! let sent = task.await.unwrap();
//! assert_eq!(sent, 0);
//! # });
//! ```

use std::time::Duration;

use sse_event::SseEvent;
use sse_send::{SseSendError, sse_send};
use sse_stream::SseSender;
use tokio::time::{Instant, MissedTickBehavior};

/// Sends `: keepalive` every `interval` (the first after one interval) until
/// `stream` closes; returns how many it sent.
pub async fn sse_keepalive(stream: SseSender, interval: Duration) -> u64 {
    let comment = SseEvent::comment("keepalive");
    let interval = interval.max(Duration::from_millis(1));
    let mut ticks = tokio::time::interval_at(Instant::now() + interval, interval);
    ticks.set_missed_tick_behavior(MissedTickBehavior::Delay);
    let mut sent = 0;
    loop {
        tokio::select! {
            () = stream.closed() => return sent,
            _ = ticks.tick() => match sse_send(&stream, &comment) {
                Ok(()) => sent += 1,
                Err(SseSendError::Full) => {}
                Err(SseSendError::Closed | SseSendError::Encode(_)) => return sent,
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use http_body_util::BodyExt;

    #[tokio::test(start_paused = true)]
    async fn one_comment_per_interval() {
        let (tx, mut body) = sse_stream::sse_stream(8);
        let task = tokio::spawn(sse_keepalive(tx.clone(), Duration::from_secs(15)));
        let start = Instant::now();
        for n in 1..=3 {
            let frame = body.frame().await.unwrap().unwrap().into_data().unwrap();
            assert_eq!(&frame[..], b": keepalive\n\n");
            assert_eq!(start.elapsed(), Duration::from_secs(15 * n));
        }
        drop(body);
        assert_eq!(task.await.unwrap(), 3);
    }

    #[tokio::test(start_paused = true)]
    async fn stops_when_the_stream_is_ended() {
        let (tx, _body) = sse_stream::sse_stream(8);
        let task = tokio::spawn(sse_keepalive(tx.clone(), Duration::from_secs(1)));
        tokio::time::sleep(Duration::from_millis(2500)).await;
        tx.end();
        assert_eq!(task.await.unwrap(), 2);
    }

    #[tokio::test(start_paused = true)]
    async fn skips_ticks_while_the_queue_is_full() {
        let (tx, mut body) = sse_stream::sse_stream(1);
        tx.try_send(bytes_of("busy")).unwrap();
        let task = tokio::spawn(sse_keepalive(tx.clone(), Duration::from_secs(1)));
        tokio::time::sleep(Duration::from_millis(3500)).await;
        // Three ticks found the queue full; the next one gets through.
        let frame = body.frame().await.unwrap().unwrap().into_data().unwrap();
        assert_eq!(&frame[..], b"busy");
        let frame = body.frame().await.unwrap().unwrap().into_data().unwrap();
        assert_eq!(&frame[..], b": keepalive\n\n");
        tx.end();
        assert_eq!(task.await.unwrap(), 1);
    }

    fn bytes_of(s: &'static str) -> bytes::Bytes {
        bytes::Bytes::from_static(s.as_bytes())
    }
}
