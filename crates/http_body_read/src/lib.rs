//! Reads a whole request body up to a byte limit, as bytes or as UTF-8 text, refusing a longer one with `413 Payload Too Large`.
//!
//! The glue every handler that takes a body writes, once: [`read_body`] and
//! [`read_text`] over any `http_body::Body` (hyper's `Incoming`, an
//! [`http_types::Body`], `http_body_util::Full`), with one error,
//! [`BodyError`], whose [`into_response`](BodyError::into_response) is the
//! answer to send. This is the one place in the workspace that answers `413`.
//!
//! - **The limit is `http_body_util::Limited`'s**: a body is never buffered
//!   past `limit` bytes, whether its length was announced or it is chunked.
//! - **An announced length over the limit is refused before reading**: when
//!   the body's size hint (hyper's is `Content-Length`) already says it is
//!   too long, not one byte is read, so a client that sent
//!   `Expect: 100-continue` never gets its `100 Continue`.
//! - **A body that fails mid-read** (the client went away, broken chunked
//!   framing) is [`BodyError::Broken`], answered `400`: the request as
//!   received is incomplete, which is the client's side, as axum answers too.
//!
//! # Example
//!
//! ```
//! use http_body_read::{read_body, read_text, BodyError};
//! use http_body_util::Full;
//! use http_types::{Bytes, http::StatusCode};
//!
//! # tokio::runtime::Builder::new_current_thread().build().unwrap().block_on(async {
//! let body = Full::new(Bytes::from_static(b"hello"));
//! assert_eq!(read_text(body, 1024).await.unwrap(), "hello");
//!
//! let big = Full::new(Bytes::from(vec![b'x'; 2048]));
//! let err = read_body(big, 1024).await.unwrap_err();
//! assert!(matches!(err, BodyError::TooLarge { limit: 1024 }));
//! assert_eq!(err.into_response().status(), StatusCode::PAYLOAD_TOO_LARGE);
//! # });
//! ```
//!
//! # Errors
//!
//! [`BodyError`]: too large (`413`), not UTF-8 (`400`, [`read_text`] only),
//! or broken off mid-read (`400`).

use std::fmt;
use std::pin::pin;

use bytes::Buf;
use http_body::Body;
use http_body_util::{BodyExt, LengthLimitError, Limited};
use http_types::http::StatusCode;
use http_types::{BoxError, Bytes, Response, text};

/// The whole of `body`, at most `limit` bytes.
pub async fn read_body<B>(body: B, limit: usize) -> Result<Bytes, BodyError>
where
    B: Body,
    B::Error: Into<BoxError>,
{
    if body.size_hint().lower() > u64::try_from(limit).unwrap_or(u64::MAX) {
        return Err(BodyError::TooLarge { limit });
    }
    // A loop over frames rather than `BodyExt::collect`: `Collect<Limited<B>>`
    // names `<Limited<B> as Body>::Data`, and an async block holding it across
    // an await is not `Send` when `B::Error` is a boxed trait object (rustc's
    // "implementation of `From` is not general enough"), which is exactly
    // `http_types::Body`.
    let mut body = pin!(Limited::new(body, limit));
    let mut chunks: Vec<Bytes> = Vec::new();
    while let Some(frame) = body.as_mut().frame().await {
        let frame = frame.map_err(|e| {
            if e.is::<LengthLimitError>() {
                BodyError::TooLarge { limit }
            } else {
                BodyError::Broken(e)
            }
        })?;
        if let Ok(mut data) = frame.into_data() {
            let len = data.remaining();
            if len > 0 {
                chunks.push(data.copy_to_bytes(len));
            }
        }
    }
    Ok(match chunks.len() {
        0 => Bytes::new(),
        1 => chunks.swap_remove(0),
        _ => Bytes::from(chunks.concat()),
    })
}

/// The whole of `body` as UTF-8 text, at most `limit` bytes.
pub async fn read_text<B>(body: B, limit: usize) -> Result<String, BodyError>
where
    B: Body,
    B::Error: Into<BoxError>,
{
    let bytes = read_body(body, limit).await?;
    String::from_utf8(Vec::from(bytes)).map_err(|e| BodyError::NotUtf8 {
        valid_up_to: e.utf8_error().valid_up_to(),
    })
}

/// Why a body was not read, each with the status that answers it.
#[derive(Debug)]
pub enum BodyError {
    /// The body is longer than the limit (announced or found while
    /// reading). `413 Payload Too Large`.
    TooLarge {
        /// The limit, in bytes.
        limit: usize,
    },
    /// The body is not UTF-8 ([`read_text`] only). `400 Bad Request`.
    NotUtf8 {
        /// How many bytes from the start are valid UTF-8.
        valid_up_to: usize,
    },
    /// The body failed before its end: the connection closed or its framing
    /// was broken. `400 Bad Request`.
    Broken(BoxError),
}

impl BodyError {
    /// The status that answers this error: 413 or 400.
    pub fn status(&self) -> StatusCode {
        match self {
            BodyError::TooLarge { .. } => StatusCode::PAYLOAD_TOO_LARGE,
            BodyError::NotUtf8 { .. } | BodyError::Broken(_) => StatusCode::BAD_REQUEST,
        }
    }

    /// The response to send: [`status`](BodyError::status) with a short
    /// `text/plain` reason.
    pub fn into_response(self) -> Response {
        let reason = match &self {
            BodyError::TooLarge { limit } => format!("the body must be at most {limit} bytes\n"),
            BodyError::NotUtf8 { .. } => "the body must be UTF-8 text\n".to_string(),
            BodyError::Broken(_) => "the request body broke off\n".to_string(),
        };
        text(self.status(), reason)
    }
}

impl fmt::Display for BodyError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            BodyError::TooLarge { limit } => write!(f, "the body is longer than {limit} bytes"),
            BodyError::NotUtf8 { valid_up_to } => {
                write!(f, "the body is not UTF-8 after byte {valid_up_to}")
            }
            BodyError::Broken(e) => write!(f, "the body broke off: {e}"),
        }
    }
}

impl std::error::Error for BodyError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            BodyError::Broken(e) => Some(&**e),
            _ => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use http_body::{Frame, SizeHint};
    use http_body_util::Full;
    use std::collections::VecDeque;
    use std::pin::Pin;
    use std::sync::Arc;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::task::{Context, Poll};

    /// A streamed body (no announced length, as a chunked request): its
    /// chunks in order, each `Err` a failure of the connection; counts the
    /// chunks polled.
    struct Chunks {
        chunks: VecDeque<Result<Bytes, std::io::Error>>,
        polled: Arc<AtomicUsize>,
        hint: SizeHint,
    }

    impl Chunks {
        fn new(chunks: Vec<Result<&'static [u8], &'static str>>) -> (Chunks, Arc<AtomicUsize>) {
            let polled = Arc::new(AtomicUsize::new(0));
            let chunks = chunks
                .into_iter()
                .map(|c| c.map(Bytes::from_static).map_err(std::io::Error::other))
                .collect();
            let body = Chunks {
                chunks,
                polled: polled.clone(),
                hint: SizeHint::new(),
            };
            (body, polled)
        }
    }

    impl Body for Chunks {
        type Data = Bytes;
        type Error = std::io::Error;

        fn poll_frame(
            mut self: Pin<&mut Self>,
            _cx: &mut Context<'_>,
        ) -> Poll<Option<Result<Frame<Bytes>, std::io::Error>>> {
            let next = self.chunks.pop_front();
            if next.is_some() {
                self.polled.fetch_add(1, Ordering::SeqCst);
            }
            Poll::Ready(next.map(|c| c.map(Frame::data)))
        }

        fn size_hint(&self) -> SizeHint {
            self.hint
        }
    }

    async fn body_text(res: Response) -> String {
        let bytes = res.into_body().collect().await.unwrap().to_bytes();
        String::from_utf8(bytes.to_vec()).unwrap()
    }

    /// Handlers need `Send` futures: reading the workspace's boxed body (whose
    /// error is a boxed trait object) must not lose that.
    #[test]
    fn the_futures_are_send_for_the_boxed_body_inside_another_async_block() {
        fn send<T: Send>(t: T) -> T {
            t
        }
        let body: http_types::Body = http_types::full("x");
        drop(send(async move { read_body(body, 1).await.is_ok() }));
        drop(send(async {
            read_text(http_types::empty(), 1).await.is_ok()
        }));
    }

    #[tokio::test]
    async fn a_body_within_the_limit_is_read_whole_full_chunked_and_the_boxed_body() {
        let full = |b: &'static [u8]| Full::new(Bytes::from_static(b));
        assert_eq!(read_body(full(b"hello"), 5).await.unwrap(), "hello");
        assert_eq!(read_body(full(b""), 0).await.unwrap(), "");
        let (chunks, polled) = Chunks::new(vec![Ok(b"ab"), Ok(b""), Ok(b"cd"), Ok(b"e")]);
        assert_eq!(read_body(chunks, 5).await.unwrap(), "abcde");
        assert_eq!(polled.load(Ordering::SeqCst), 4);
        // The workspace's boxed body too.
        let boxed: http_types::Body = http_types::full("boxed");
        assert_eq!(read_text(boxed, 5).await.unwrap(), "boxed");
    }

    #[tokio::test]
    async fn an_announced_length_over_the_limit_is_413_before_reading() {
        let err = read_body(Full::new(Bytes::from_static(b"123456")), 5)
            .await
            .unwrap_err();
        assert!(matches!(err, BodyError::TooLarge { limit: 5 }), "{err:?}");

        // A streamed body whose size hint says 6 bytes is refused unpolled.
        let (mut chunks, polled) = Chunks::new(vec![Ok(b"123456")]);
        chunks.hint = SizeHint::with_exact(6);
        let err = read_body(chunks, 5).await.unwrap_err();
        assert!(matches!(err, BodyError::TooLarge { limit: 5 }), "{err:?}");
        assert_eq!(polled.load(Ordering::SeqCst), 0);

        let res = err.into_response();
        assert_eq!(res.status(), StatusCode::PAYLOAD_TOO_LARGE);
        assert_eq!(res.headers()["content-type"], "text/plain; charset=utf-8");
        assert_eq!(body_text(res).await, "the body must be at most 5 bytes\n");
    }

    #[tokio::test]
    async fn a_streamed_body_over_the_limit_is_413_and_reading_stops_there() {
        let (chunks, polled) =
            Chunks::new(vec![Ok(b"1234"), Ok(b"5678"), Ok(b"9"), Ok(b"never read")]);
        let err = read_body(chunks, 8).await.unwrap_err();
        assert!(matches!(err, BodyError::TooLarge { limit: 8 }), "{err:?}");
        assert_eq!(polled.load(Ordering::SeqCst), 3);
        assert_eq!(err.status(), StatusCode::PAYLOAD_TOO_LARGE);
        assert_eq!(err.to_string(), "the body is longer than 8 bytes");

        let (chunks, _) = Chunks::new(vec![Ok(b"12345"), Ok(b"6")]);
        let err = read_text(chunks, 5).await.unwrap_err();
        assert_eq!(err.into_response().status(), StatusCode::PAYLOAD_TOO_LARGE);
    }

    #[tokio::test]
    async fn a_body_that_fails_mid_read_is_400() {
        let (chunks, polled) =
            Chunks::new(vec![Ok(b"par"), Err("connection reset"), Ok(b"never read")]);
        let err = read_body(chunks, 1024).await.unwrap_err();
        assert!(matches!(err, BodyError::Broken(_)), "{err:?}");
        assert_eq!(polled.load(Ordering::SeqCst), 2);
        assert_eq!(err.to_string(), "the body broke off: connection reset");
        let source = std::error::Error::source(&err).expect("the body's error");
        assert_eq!(source.to_string(), "connection reset");
        let res = err.into_response();
        assert_eq!(res.status(), StatusCode::BAD_REQUEST);
        assert_eq!(body_text(res).await, "the request body broke off\n");
    }

    #[tokio::test]
    async fn text_must_be_utf_8_else_400_a_character_split_across_chunks_is_fine() {
        let text = read_text(Full::new(Bytes::from("grüße")), 64).await;
        assert_eq!(text.unwrap(), "grüße");
        // A character split across chunks is fine.
        let (chunks, _) = Chunks::new(vec![Ok(b"gr\xC3"), Ok(b"\xBC")]);
        assert_eq!(read_text(chunks, 64).await.unwrap(), "grü");

        let err = read_text(Full::new(Bytes::from_static(b"ab\xFFcd")), 64)
            .await
            .unwrap_err();
        assert!(
            matches!(err, BodyError::NotUtf8 { valid_up_to: 2 }),
            "{err:?}"
        );
        let res = err.into_response();
        assert_eq!(res.status(), StatusCode::BAD_REQUEST);
        assert_eq!(body_text(res).await, "the body must be UTF-8 text\n");
        // read_body takes any bytes.
        let bytes = read_body(Full::new(Bytes::from_static(b"ab\xFFcd")), 64).await;
        assert_eq!(bytes.unwrap(), &b"ab\xFFcd"[..]);
    }
}

/// The examples of this crate's registry entries, compiled by `cargo test --doc`.
#[cfg(doctest)]
#[doc = include_str!("../http_body_read.md")]
#[doc = include_str!("../../../types/infra/BodyError.md")]
pub struct RegistryExamples;
