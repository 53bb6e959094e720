//! `GET /metrics`: the counters the crates already keep (`HubStats`,
//! `BrokerStats`, `WsStats`, `WrapperStats`), read at scrape time and
//! rendered by `http_metrics`; nothing is recorded per message for them.

use std::collections::HashMap;
use std::fmt;

use http_metrics::prometheus_client::collector::Collector;
use http_metrics::prometheus_client::encoding::{DescriptorEncoder, EncodeMetric};
use http_metrics::prometheus_client::metrics::MetricType;
use http_metrics::prometheus_client::metrics::counter::ConstCounter;
use http_metrics::prometheus_client::metrics::exemplar::Exemplar;
use http_metrics::prometheus_client::metrics::gauge::ConstGauge;
use http_metrics::prometheus_client::registry::Registry;
use std::sync::Arc;

use backplane::Backplane;
use sse_broker::SseBroker;
use ws_cluster::WsCluster;
use ws_handler::{Refusal, WsStats};
use ws_hub::{HubHistogram, HubStats, WsHub};
use ws_wrapper_server::WrapperServer;

/// What one WebSocket transport is made of: its hubs and its handlers' counters.
#[derive(Debug, Clone)]
pub(crate) struct Transport {
    pub(crate) name: &'static str,
    pub(crate) hubs: Vec<WsHub>,
    pub(crate) stats: WsStats,
}

/// Reads every counter of the app at scrape time.
#[derive(Debug)]
pub(crate) struct AppCollector {
    pub(crate) broker: SseBroker,
    /// `ws` (`/ws`, `/echo`, `/hub`) and `rpc` (`/rpc`).
    pub(crate) transports: Vec<Transport>,
    pub(crate) rpc: WrapperServer,
    /// The parts that cross nodes (`--redis`): `sse`, `ws` (`/ws`) and
    /// `hub` (`/hub`); empty on one node.
    pub(crate) backplanes: Vec<Part>,
}

/// One part's backplane node, and its cluster's counters (none for SSE,
/// whose counters are the broker's).
#[derive(Clone)]
pub(crate) struct Part {
    pub(crate) name: &'static str,
    pub(crate) backplane: Arc<dyn Backplane>,
    pub(crate) cluster: Option<WsCluster>,
}

impl fmt::Debug for Part {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Part").field("name", &self.name).finish()
    }
}

/// The registry `/metrics` renders.
pub(crate) fn registry(collector: AppCollector) -> Registry {
    let mut registry = Registry::default();
    registry.register_collector(Box::new(collector));
    registry
}

type Labels<'a> = Vec<(&'static str, &'a str)>;

/// One transport's counters added up over its hubs.
struct Sums {
    hub: HubStats,
    latency: HubHistogram,
    depth: HubHistogram,
}

fn sums(t: &Transport) -> Sums {
    let mut hub = HubStats::default();
    let mut latency = HubHistogram::default();
    let mut depth = HubHistogram::default();
    for h in &t.hubs {
        let s = h.stats();
        hub.connections += s.connections;
        hub.sent += s.sent;
        hub.dropped += s.dropped;
        hub.slow_closed += s.slow_closed;
        hub.written += s.written;
        hub.direct += s.direct;
        hub.bytes_out += s.bytes_out;
        add(&mut latency, &s.latency_us);
        add(&mut depth, &s.queue_depth);
    }
    Sums {
        hub,
        latency,
        depth,
    }
}

fn add(into: &mut HubHistogram, h: &HubHistogram) {
    into.bounds = h.bounds;
    for (a, b) in into.counts.iter_mut().zip(h.counts) {
        *a += b;
    }
    into.sum += h.sum;
}

impl Collector for AppCollector {
    fn encode(&self, mut enc: DescriptorEncoder<'_>) -> Result<(), fmt::Error> {
        let sse = self.broker.stats();
        let ws: Vec<(&Transport, Sums)> = self.transports.iter().map(|t| (t, sums(t))).collect();
        let per = |f: &dyn Fn(&Transport, &Sums) -> u64| -> Vec<(Labels<'_>, u64)> {
            ws.iter()
                .map(|(t, s)| (vec![("transport", t.name)], f(t, s)))
                .collect()
        };
        let sse_label = || vec![("transport", "sse")];

        let mut open: Vec<(Labels<'_>, u64)> = per(&|_, s| s.hub.connections as u64);
        open.push((sse_label(), sse.subscribers as u64));
        gauge(
            &mut enc,
            "rt_open_connections",
            "Open connections by transport (ws: /ws, /echo, /hub; rpc: /rpc; sse: streams)",
            &open,
        )?;

        let mut messages_in = per(&|t, _| t.stats.received());
        messages_in.push((sse_label(), sse.published));
        counter(
            &mut enc,
            "rt_messages_in",
            "Messages received: from WebSocket clients, or events published to SSE topics",
            &messages_in,
        )?;
        let mut messages_out = per(&|_, s| s.hub.written);
        messages_out.push((sse_label(), sse.delivered));
        counter(
            &mut enc,
            "rt_messages_out",
            "Messages given to connections' writers (SSE: queued on streams)",
            &messages_out,
        )?;
        counter(
            &mut enc,
            "rt_messages_written_directly",
            "Of rt_messages_out, WebSocket messages their send wrote to the socket itself, waking no task",
            &per(&|_, s| s.hub.direct),
        )?;
        let mut bytes_out = per(&|_, s| s.hub.bytes_out);
        bytes_out.push((sse_label(), sse.delivered_bytes));
        counter(
            &mut enc,
            "rt_bytes_out",
            "Bytes out: WebSocket message payloads, SSE encoded events",
            &bytes_out,
        )?;
        let mut deliveries = per(&|_, s| s.hub.sent);
        deliveries.push((sse_label(), sse.delivered));
        counter(
            &mut enc,
            "rt_deliveries",
            "Messages queued for one recipient (a broadcast to N clients is N deliveries)",
            &deliveries,
        )?;
        counter(
            &mut enc,
            "rt_dropped_messages",
            "Messages dropped because a client's queue was full (drop policy)",
            &per(&|_, s| s.hub.dropped),
        )?;

        let mut closes: Vec<(Labels<'_>, u64)> = Vec::new();
        for (t, s) in &ws {
            closes.push((
                vec![("transport", t.name), ("reason", "queue_full")],
                s.hub.slow_closed,
            ));
            for why in [Refusal::WriteTimeout, Refusal::MessageRate] {
                closes.push((
                    vec![("transport", t.name), ("reason", why.as_str())],
                    t.stats.refused(why),
                ));
            }
        }
        closes.push((
            vec![("transport", "sse"), ("reason", "queue_full")],
            sse.slow_dropped,
        ));
        counter(
            &mut enc,
            "rt_limit_closes",
            "Connections the server closed over a limit: slow clients (queue_full, write_timeout) and message_rate",
            &closes,
        )?;

        let mut refusals: Vec<(Labels<'_>, u64)> = Vec::new();
        for (t, _) in &ws {
            for why in Refusal::ALL {
                if !matches!(why, Refusal::WriteTimeout | Refusal::MessageRate) {
                    refusals.push((
                        vec![("transport", t.name), ("reason", why.as_str())],
                        t.stats.refused(why),
                    ));
                }
            }
        }
        counter(
            &mut enc,
            "rt_connection_refusals",
            "WebSocket connections refused, by reason",
            &refusals,
        )?;

        let to_seconds = |h: &HubHistogram| {
            let buckets = h
                .bounds
                .iter()
                .map(|b| *b as f64 / 1e6)
                .chain([f64::INFINITY])
                .zip(h.counts)
                .collect::<Vec<_>>();
            (h.sum as f64 / 1e6, h.count(), buckets)
        };
        let as_is = |h: &HubHistogram| {
            let buckets = h
                .bounds
                .iter()
                .map(|b| *b as f64)
                .chain([f64::INFINITY])
                .zip(h.counts)
                .collect::<Vec<_>>();
            (h.sum as f64, h.count(), buckets)
        };
        histogram(
            &mut enc,
            "rt_delivery_latency_seconds",
            "Queued to written and flushed, for 1 WebSocket message in 64 (sampled: no clock read per message)",
            ws.iter()
                .map(|(t, s)| (vec![("transport", t.name)], to_seconds(&s.latency)))
                .collect(),
        )?;
        histogram(
            &mut enc,
            "rt_queue_depth",
            "Messages a WebSocket writer took at once from a client's queue, for batches holding a sampled message",
            ws.iter()
                .map(|(t, s)| (vec![("transport", t.name)], as_is(&s.depth)))
                .collect(),
        )?;

        counter(
            &mut enc,
            "rt_sse_resumes",
            "SSE streams opened with a Last-Event-ID",
            &[(vec![], sse.resumes)],
        )?;
        counter(
            &mut enc,
            "rt_sse_replayed_events",
            "Events replayed to resuming SSE streams",
            &[(vec![], sse.replayed)],
        )?;
        counter(
            &mut enc,
            "rt_sse_gaps",
            "Resumes that could not be replayed whole (the client got sse-reset)",
            &[(vec![], sse.resets)],
        )?;
        gauge(
            &mut enc,
            "rt_sse_topics",
            "SSE topics that exist now",
            &[(vec![], sse.topics as u64)],
        )?;

        let rpc = self.rpc.stats();
        let outcomes: Vec<(Labels<'_>, u64)> = [
            ("resolved", rpc.resolved),
            ("rejected", rpc.rejected),
            ("panicked", rpc.panicked),
            ("unknown", rpc.unknown),
            ("cancelled", rpc.cancelled),
        ]
        .into_iter()
        .map(|(outcome, n)| (vec![("outcome", outcome)], n))
        .collect();
        counter(
            &mut enc,
            "rt_rpc_requests",
            "ws-wrapper requests of clients on /rpc, by outcome",
            &outcomes,
        )?;
        if !self.backplanes.is_empty() {
            self.encode_backplanes(&mut enc, &sse)?;
        }
        Ok(())
    }
}

impl AppCollector {
    /// The `rt_backplane_*` series of a node of several.
    fn encode_backplanes(
        &self,
        enc: &mut DescriptorEncoder<'_>,
        sse: &sse_broker::BrokerStats,
    ) -> Result<(), fmt::Error> {
        let part = |p: &Part| vec![("part", p.name)];
        let up: Vec<(Labels<'_>, u64)> = self
            .backplanes
            .iter()
            .map(|p| (part(p), u64::from(p.backplane.is_connected())))
            .collect();
        gauge(
            enc,
            "rt_backplane_connected",
            "Whether the part's backplane (Redis) is reachable now (1) or not (0)",
            &up,
        )?;
        let stat = |f: &dyn Fn(&ws_cluster::ClusterStats) -> u64, sse_value: Option<u64>| {
            self.backplanes
                .iter()
                .filter_map(|p| match &p.cluster {
                    Some(c) => Some((part(p), f(&c.stats()))),
                    None => sse_value.map(|v| (part(p), v)),
                })
                .collect::<Vec<_>>()
        };
        counter(
            enc,
            "rt_backplane_published",
            "Messages this node handed the backplane (WebSocket envelopes; SSE events appended)",
            &stat(&|c| c.published, Some(sse.published)),
        )?;
        counter(
            enc,
            "rt_backplane_received",
            "WebSocket envelopes of other nodes delivered to local sockets",
            &stat(&|c| c.received, None),
        )?;
        counter(
            enc,
            "rt_backplane_duplicates",
            "Copies of an envelope that came on several channels, dropped",
            &stat(&|c| c.duplicates, None),
        )?;
        counter(
            enc,
            "rt_backplane_errors",
            "Backplane calls that failed (the write was refused or the forward lost)",
            &stat(&|c| c.errors, Some(sse.backplane_errors)),
        )?;
        counter(
            enc,
            "rt_backplane_resyncs",
            "Times the backplane reconnected and the part caught up",
            &stat(&|c| c.resyncs, Some(sse.resyncs)),
        )
    }
}

fn counter(
    enc: &mut DescriptorEncoder<'_>,
    name: &str,
    help: &str,
    samples: &[(Labels<'_>, u64)],
) -> Result<(), fmt::Error> {
    let mut m = enc.encode_descriptor(name, help, None, MetricType::Counter)?;
    for (labels, v) in samples {
        ConstCounter::new(*v).encode(m.encode_family(labels)?)?;
    }
    Ok(())
}

fn gauge(
    enc: &mut DescriptorEncoder<'_>,
    name: &str,
    help: &str,
    samples: &[(Labels<'_>, u64)],
) -> Result<(), fmt::Error> {
    let mut m = enc.encode_descriptor(name, help, None, MetricType::Gauge)?;
    for (labels, v) in samples {
        ConstGauge::new(i64::try_from(*v).unwrap_or(i64::MAX)).encode(m.encode_family(labels)?)?;
    }
    Ok(())
}

type Buckets = (f64, u64, Vec<(f64, u64)>);

fn histogram(
    enc: &mut DescriptorEncoder<'_>,
    name: &str,
    help: &str,
    samples: Vec<(Labels<'_>, Buckets)>,
) -> Result<(), fmt::Error> {
    let mut m = enc.encode_descriptor(name, help, None, MetricType::Histogram)?;
    for (labels, (sum, count, buckets)) in &samples {
        m.encode_family(labels)?.encode_histogram::<Labels<'_>>(
            *sum,
            *count,
            buckets,
            None::<&HashMap<usize, Exemplar<Labels<'_>, f64>>>,
        )?;
    }
    Ok(())
}
