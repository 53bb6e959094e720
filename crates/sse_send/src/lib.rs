//! Sends one `SseEvent` to one open SSE stream without blocking; an error says why it was not queued.
//!
//! Encodes with `sse_encode` and queues on the stream with
//! `SseSender::try_send`. It never waits: a full queue (a slow client) is
//! [`SseSendError::Full`], a gone client [`SseSendError::Closed`]; the caller
//! picks the policy. To send one event to many streams, encode it once with
//! `sse_encode` and queue the same `Bytes` on each (`sse_broker` does).
//!
//! # Example
//!
//! ```
//! use sse_event::SseEvent;
//! use sse_send::sse_send;
//!
//! let (stream, _body) = sse_stream::sse_stream(8);
//! sse_send(&stream, &SseEvent::data("hello").event("greeting"))?;
//! # Ok::<(), sse_send::SseSendError>(())
//! ```
//!
//! # Errors
//!
//! [`SseSendError`]: the event cannot be encoded, the queue is full, or the stream is closed.

use std::fmt;

use bytes::Bytes;
use sse_encode::{SseEncodeError, sse_encode};
use sse_event::SseEvent;
use sse_stream::{SseSender, SseStreamError};

/// Encodes `event` and queues it on `stream`.
pub fn sse_send(stream: &SseSender, event: &SseEvent) -> Result<(), SseSendError> {
    if stream.is_closed() {
        return Err(SseSendError::Closed);
    }
    let mut buf = Vec::new();
    sse_encode(event, &mut buf).map_err(SseSendError::Encode)?;
    stream.try_send(&Bytes::from(buf)).map_err(|e| match e {
        SseStreamError::Closed => SseSendError::Closed,
        SseStreamError::Full => SseSendError::Full,
    })
}

/// Why an event was not queued.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SseSendError {
    /// The event has a field that would break the stream.
    Encode(SseEncodeError),
    /// The stream's queue is full: the client reads slower than events arrive.
    Full,
    /// The client is gone or the stream was ended.
    Closed,
}

impl fmt::Display for SseSendError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            SseSendError::Encode(e) => write!(f, "cannot encode the event: {e}"),
            SseSendError::Full => f.write_str("the SSE stream's queue is full (slow client)"),
            SseSendError::Closed => f.write_str("the SSE stream is closed (client gone)"),
        }
    }
}

impl std::error::Error for SseSendError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            SseSendError::Encode(e) => Some(e),
            _ => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use http_body_util::BodyExt;
    use sse_stream::sse_stream;

    #[tokio::test]
    async fn queues_the_encoded_event() {
        let (tx, body) = sse_stream(4);
        sse_send(&tx, &SseEvent::data("a\nb").id("1")).unwrap();
        drop(tx);
        let got = body.collect().await.unwrap().to_bytes();
        assert_eq!(&got[..], b"id: 1\ndata: a\ndata: b\n\n");
    }

    #[test]
    fn full_closed_and_invalid_are_distinct_errors() {
        let (tx, body) = sse_stream(1);
        sse_send(&tx, &SseEvent::data("1")).unwrap();
        assert_eq!(sse_send(&tx, &SseEvent::data("2")), Err(SseSendError::Full));
        assert_eq!(
            sse_send(&tx, &SseEvent::data("x").event("a\nb")),
            Err(SseSendError::Encode(SseEncodeError::InvalidEvent { at: 1 }))
        );
        drop(body);
        assert_eq!(
            sse_send(&tx, &SseEvent::data("3")),
            Err(SseSendError::Closed)
        );
    }
}

/// The examples of this crate's registry entries, compiled by `cargo test --doc`.
#[cfg(doctest)]
#[doc = include_str!("../sse_send.md")]
pub struct RegistryExamples;
