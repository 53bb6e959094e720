//! Logs each request's method, path, status and latency through `tracing`.
//!
//! One `INFO` event per request, target `http`, with the fields `method`,
//! `path`, `status` and `latency_us` (time until the response head is ready;
//! a streaming body such as SSE is not waited for). Where the events go is
//! the application's `tracing` subscriber.
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

/// The logging middleware.
pub fn http_logger_middleware() -> Middleware {
    Middleware::new(|next: Handler| {
        Handler::new(move |req: Request| {
            let next = next.clone();
            let method = req.method().clone();
            let path = req.uri().path().to_string();
            async move {
                let started = Instant::now();
                let res = next.call(req).await;
                let latency_us = u64::try_from(started.elapsed().as_micros()).unwrap_or(u64::MAX);
                tracing::info!(
                    target: "http",
                    method = %method,
                    path = %path,
                    status = res.status().as_u16(),
                    latency_us,
                    "request"
                );
                res
            }
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

    #[tokio::test]
    async fn logs_method_path_status_latency() {
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
        let line = String::from_utf8(capture.0.lock().unwrap().clone()).unwrap();
        assert!(line.contains("method=PUT"), "{line}");
        assert!(line.contains("path=/kettle"), "{line}");
        assert!(line.contains("status=418"), "{line}");
        assert!(line.contains("latency_us="), "{line}");
    }
}
