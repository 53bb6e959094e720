//! Serves a Prometheus registry as `GET /metrics` in the Prometheus or OpenMetrics text format, collected at scrape time.
//!
//! [`metrics_handler`] encodes a [`prometheus_client`] [`Registry`] on every
//! request: the Prometheus text format (version 0.0.4, `text/plain`) by
//! default, OpenMetrics 1.0 text when the `Accept` header asks for
//! `application/openmetrics-text` (as Prometheus itself does). It is a plain
//! [`Handler`], so it mounts on any route of `http_router`, axum or hyper;
//! it opens no listener of its own.
//!
//! Why `prometheus-client` rather than `metrics` + `metrics-exporter-prometheus`:
//! it encodes values we already count in atomic stats structs (`HubStats`,
//! `BrokerStats`, ...) at scrape time through a
//! [`Collector`](prometheus_client::collector::Collector), histograms from
//! pre-bucketed counts included, so nothing is recorded per message; it is
//! four small crates (its derive uses the workspace's `syn` 3, no duplicate),
//! where the exporter brings `metrics-util`, `quanta` and crossbeam.
//!
//! `prometheus_client` is re-exported, so an app needs no dependency of its
//! own (and no version to match) to register metrics and collectors.
//!
//! # Example
//!
//! ```
//! use std::sync::Arc;
//! use http_metrics::metrics_handler;
//! use http_metrics::prometheus_client::metrics::counter::Counter;
//! use http_metrics::prometheus_client::registry::Registry;
//! use http_types::Route;
//!
//! let mut registry = Registry::default();
//! let requests: Counter = Counter::default();
//! registry.register("app_requests", "Requests served", requests.clone());
//! let route = Route::get("/metrics", metrics_handler(Arc::new(registry)));
//! requests.inc();
//! # let _ = route;
//! ```
//!
//! # Errors
//!
//! A collector that fails to encode answers `500` with the reason.

use std::sync::Arc;

use http_types::http::{self, StatusCode, header};
use http_types::{Handler, Request, Response, full, text};
pub use prometheus_client;
use prometheus_client::encoding::{prometheus_text, text as openmetrics};
use prometheus_client::registry::Registry;

/// The content type of the Prometheus text format.
pub const PROMETHEUS_TEXT: &str = "text/plain; version=0.0.4; charset=utf-8";
/// The content type of the OpenMetrics text format.
pub const OPENMETRICS_TEXT: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

/// The handler that renders `registry` on each request (mount it on `GET /metrics`).
pub fn metrics_handler(registry: Arc<Registry>) -> Handler {
    Handler::new(move |req: Request| {
        let res = render(&registry, &req);
        async move { res }
    })
}

fn render(registry: &Registry, req: &Request) -> Response {
    let openmetrics = req
        .headers()
        .get_all(header::ACCEPT)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .any(|v| v.contains("application/openmetrics-text"));
    let mut body = String::new();
    let (encoded, content_type) = if openmetrics {
        (openmetrics::encode(&mut body, registry), OPENMETRICS_TEXT)
    } else {
        (
            prometheus_text::encode(&mut body, registry),
            PROMETHEUS_TEXT,
        )
    };
    if encoded.is_err() {
        return text(
            StatusCode::INTERNAL_SERVER_ERROR,
            "a metrics collector failed to encode\n",
        );
    }
    let mut res = Response::new(full(body));
    res.headers_mut().insert(
        header::CONTENT_TYPE,
        http::HeaderValue::from_static(content_type),
    );
    res
}

#[cfg(test)]
mod tests {
    use super::*;
    use http_body_util::BodyExt;
    use http_types::empty;
    use prometheus_client::collector::Collector;
    use prometheus_client::encoding::{DescriptorEncoder, EncodeMetric};
    use prometheus_client::metrics::counter::{ConstCounter, Counter};
    use std::sync::atomic::{AtomicU64, Ordering};

    /// A stats struct of the kind the registry's crates keep.
    #[derive(Debug, Default)]
    struct Stats(AtomicU64);

    #[derive(Debug)]
    struct StatsCollector(Arc<Stats>);

    impl Collector for StatsCollector {
        fn encode(&self, mut encoder: DescriptorEncoder<'_>) -> Result<(), std::fmt::Error> {
            let c = ConstCounter::new(self.0.0.load(Ordering::Relaxed));
            let m = encoder.encode_descriptor("app_seen", "Things seen", None, c.metric_type())?;
            c.encode(m)
        }
    }

    async fn scrape(h: &Handler, accept: Option<&str>) -> (String, String) {
        let mut b = http::Request::builder().uri("/metrics");
        if let Some(a) = accept {
            b = b.header(header::ACCEPT, a);
        }
        let res = h.call(b.body(empty()).unwrap()).await;
        assert_eq!(res.status(), 200);
        let ct = res.headers()[header::CONTENT_TYPE]
            .to_str()
            .unwrap()
            .to_string();
        let body = res.into_body().collect().await.unwrap().to_bytes();
        (ct, String::from_utf8(body.to_vec()).unwrap())
    }

    #[tokio::test]
    async fn renders_counters_and_collectors_at_scrape_time() {
        let stats = Arc::new(Stats::default());
        let mut registry = Registry::default();
        let requests: Counter = Counter::default();
        registry.register("app_requests", "Requests served", requests.clone());
        registry.register_collector(Box::new(StatsCollector(stats.clone())));
        let h = metrics_handler(Arc::new(registry));

        let (ct, before) = scrape(&h, None).await;
        assert_eq!(ct, PROMETHEUS_TEXT);
        assert!(
            before.contains("# TYPE app_requests_total counter\n"),
            "{before}"
        );
        assert!(before.contains("\napp_requests_total 0\n"), "{before}");
        assert!(before.contains("\napp_seen_total 0\n"), "{before}");

        requests.inc_by(3);
        stats.0.fetch_add(7, Ordering::Relaxed);
        let (_, after) = scrape(&h, None).await;
        assert!(after.contains("\napp_requests_total 3\n"), "{after}");
        assert!(after.contains("\napp_seen_total 7\n"), "{after}");
        assert!(!after.contains("# EOF"), "{after}");
    }

    #[tokio::test]
    async fn openmetrics_when_accepted() {
        let h = metrics_handler(Arc::new(Registry::default()));
        let (ct, body) = scrape(
            &h,
            Some("application/openmetrics-text;version=1.0.0,text/plain;q=0.5"),
        )
        .await;
        assert_eq!(ct, OPENMETRICS_TEXT);
        assert!(body.ends_with("# EOF\n"), "{body}");
    }
}

/// The examples of this crate's registry entries, compiled by `cargo test --doc`.
#[cfg(doctest)]
#[doc = include_str!("../http_metrics.md")]
pub struct RegistryExamples;
