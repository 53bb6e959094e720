//! Logs each request's method, path, status and latency through `tracing`.
//!
//! Each request runs inside a `request` span (target `http`, level `INFO`)
//! with the fields `method` and `path`, and `status` and `latency_us`
//! recorded once the response head is ready, so every event a handler emits
//! is attributed to its request. One `INFO` event per request, target `http`,
//! inside that span, with the fields `status` and `latency_us` (time until
//! the response head is ready; a streaming body such as SSE is not waited
//! for); `method` and `path` are the span's. Fields are fields, not a
//! formatted string: a JSON subscriber gets them as keys. Where the events go
//! is the application's `tracing` subscriber; without one, the span and the
//! event cost a check of an atomic.
//!
//! # Example
//!
//! ```
//! use http_logger_middleware::http_logger_middleware;
//! use http_types::{full, Handler, Response};
//!
//! let app = http_logger_middleware().apply(Handler::new(|_| async { Response::new(full("ok")) }));
//! # let _ = app;
//! ```

use std::time::Instant;

use http_types::{Handler, Middleware, Request};
use tracing::Instrument;

/// The logging middleware.
pub fn http_logger_middleware() -> Middleware {
    Middleware::new(|next: Handler| {
        Handler::new(move |req: Request| {
            let next = next.clone();
            let method = req.method().clone();
            let span = tracing::info_span!(
                target: "http",
                "request",
                method = %method,
                path = req.uri().path(),
                status = tracing::field::Empty,
                latency_us = tracing::field::Empty,
            );
            let served = async move {
                let started = Instant::now();
                let res = next.call(req).await;
                let latency_us = u64::try_from(started.elapsed().as_micros()).unwrap_or(u64::MAX);
                let status = res.status().as_u16();
                let span = tracing::Span::current();
                span.record("status", status);
                span.record("latency_us", latency_us);
                tracing::info!(target: "http", status, latency_us, "request");
                res
            };
            served.instrument(span)
        })
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use http_types::{Response, empty, text};
    use std::io::Write;
    use std::sync::{Arc, Mutex};

    #[derive(Clone, Default)]
    struct Capture(Arc<Mutex<Vec<u8>>>);

    impl Write for Capture {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(buf);
            Ok(buf.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    fn capture_json() -> (Capture, impl tracing::Subscriber) {
        let capture = Capture::default();
        let sink = capture.clone();
        let subscriber = tracing_subscriber::fmt()
            .json()
            .with_current_span(true)
            .with_span_list(true)
            .with_writer(move || sink.clone())
            .finish();
        (capture, subscriber)
    }

    fn lines(capture: &Capture) -> Vec<serde_json::Value> {
        String::from_utf8(capture.0.lock().unwrap().clone())
            .unwrap()
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect()
    }

    #[tokio::test]
    async fn logs_method_path_status_and_latency() {
        let capture = Capture::default();
        let sink = capture.clone();
        let subscriber = tracing_subscriber::fmt()
            .with_writer(move || sink.clone())
            .with_ansi(false)
            .finish();
        let _guard = tracing::subscriber::set_default(subscriber);
        let app = http_logger_middleware().apply(Handler::new(|_| async {
            text(http::StatusCode::IM_A_TEAPOT, "short and stout")
        }));
        let req = http::Request::builder()
            .method("PUT")
            .uri("/kettle?x=1")
            .body(empty())
            .unwrap();
        let res: Response = app.call(req).await;
        assert_eq!(res.status(), 418);
        let log = String::from_utf8(capture.0.lock().unwrap().clone()).unwrap();
        assert_eq!(log.lines().count(), 1, "one event per request: {log}");
        assert!(log.contains("method=PUT"), "{log}");
        assert!(log.contains("path=\"/kettle\""), "{log}");
        assert!(!log.contains("x=1"), "the query is not logged: {log}");
        assert!(log.contains("status=418"), "{log}");
        assert!(log.contains("latency_us="), "{log}");
    }

    #[tokio::test]
    async fn events_inside_the_handler_belong_to_the_request_span() {
        let (capture, subscriber) = capture_json();
        let _guard = tracing::subscriber::set_default(subscriber);
        let app = http_logger_middleware().apply(Handler::new(|_| async {
            tracing::warn!(target: "app", item = 7, "out of stock");
            text(http::StatusCode::CONFLICT, "no")
        }));
        let req = http::Request::builder()
            .method("POST")
            .uri("/order")
            .body(empty())
            .unwrap();
        assert_eq!(app.call(req).await.status(), 409);
        let got = lines(&capture);
        assert_eq!(got.len(), 2, "{got:?}");
        let inner = &got[0];
        assert_eq!(inner["fields"]["message"], "out of stock");
        assert_eq!(inner["fields"]["item"], 7);
        assert_eq!(inner["span"]["name"], "request");
        assert_eq!(inner["span"]["method"], "POST");
        assert_eq!(inner["span"]["path"], "/order");
        let done = &got[1];
        assert_eq!(done["level"], "INFO");
        assert_eq!(done["fields"]["status"], 409);
        assert!(done["fields"]["latency_us"].is_u64(), "{done}");
        assert_eq!(
            done["span"]["status"], 409,
            "recorded into the span: {done}"
        );
    }
}

/// The examples of this crate's registry entries, compiled by `cargo test --doc`.
#[cfg(doctest)]
#[doc = include_str!("../http_logger_middleware.md")]
pub struct RegistryExamples;
