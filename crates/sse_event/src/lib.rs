//! The Server-Sent Events vocabulary: one event (`SseEvent`) as the WHATWG event-stream format defines it.
//!
//! A types-only crate: no I/O, no dependencies. Encoding lives in
//! `sse_encode`, sending in the SSE function crates.
//!
//! # Example
//!
//! ```
//! use std::time::Duration;
//! use sse_event::SseEvent;
//!
//! let ev = SseEvent::data("{\"price\":42}")
//!     .event("price_update")
//!     .id("42")
//!     .retry(Duration::from_secs(3));
//! assert_eq!(ev.event.as_deref(), Some("price_update"));
//! assert!(SseEvent::comment("keepalive").data.is_none());
//! ```

use std::time::Duration;

/// One event of an `text/event-stream` response.
///
/// Every field is optional on the wire; a frame with only a comment or only
/// `retry` is valid and dispatches no event in the browser.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SseEvent {
    /// Event type (`event:` line); `None` means the browser's default, `message`.
    pub event: Option<String>,
    /// Payload (`data:` lines, one per line of text); `None` sends no data and dispatches nothing.
    pub data: Option<String>,
    /// Event id (`id:` line); the browser sends it back as `Last-Event-ID` when it reconnects.
    pub id: Option<String>,
    /// Reconnection delay for the browser (`retry:` line, in whole milliseconds).
    pub retry: Option<Duration>,
    /// Comment lines (`: text`), ignored by browsers; used for keep-alive.
    pub comment: Option<String>,
}

impl SseEvent {
    /// An event carrying `data`.
    pub fn data(data: impl Into<String>) -> Self {
        SseEvent {
            data: Some(data.into()),
            ..SseEvent::default()
        }
    }

    /// A comment-only frame, as keep-alives use.
    pub fn comment(text: impl Into<String>) -> Self {
        SseEvent {
            comment: Some(text.into()),
            ..SseEvent::default()
        }
    }

    /// Sets the event type.
    #[must_use]
    pub fn event(mut self, event: impl Into<String>) -> Self {
        self.event = Some(event.into());
        self
    }

    /// Sets the event id.
    #[must_use]
    pub fn id(mut self, id: impl Into<String>) -> Self {
        self.id = Some(id.into());
        self
    }

    /// Sets the reconnection delay.
    #[must_use]
    pub fn retry(mut self, retry: Duration) -> Self {
        self.retry = Some(retry);
        self
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn builders_set_every_field() {
        let ev = SseEvent::data("x")
            .event("e")
            .id("1")
            .retry(Duration::from_millis(5));
        assert_eq!(
            ev,
            SseEvent {
                event: Some("e".into()),
                data: Some("x".into()),
                id: Some("1".into()),
                retry: Some(Duration::from_millis(5)),
                comment: None,
            }
        );
    }

    #[test]
    fn a_comment_frame_has_no_data() {
        let ev = SseEvent::comment("hi");
        assert_eq!(ev.comment.as_deref(), Some("hi"));
        assert_eq!(ev.data, None);
    }
}

/// The examples of this crate's registry entries, compiled by `cargo test --doc`.
#[cfg(doctest)]
#[doc = include_str!("../../../types/infra/SseEvent.md")]
pub struct RegistryExamples;
