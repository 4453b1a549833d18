//! The agent's Prometheus metrics: gRPC requests counted by a tower layer,
//! and the directory's state (records, members, violations, revision)
//! read from the snapshot at scrape time, so a gauge never goes stale.

use std::collections::BTreeMap;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use arc_swap::ArcSwap;
use muster_core::Snapshot;
use muster_policy::Judged;
use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeLabelSet, EncodeMetric};
use prometheus_client::metrics::MetricType;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::ConstGauge;
use prometheus_client::registry::Registry;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct GrpcLabels {
    method: String,
    code: String,
}

/// gRPC request counts; cheap to clone (shared counters).
#[derive(Clone, Debug, Default)]
pub struct GrpcMetrics {
    requests: Family<GrpcLabels, Counter>,
    pub(crate) tls_refused: Family<TlsLabels, Counter>,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub(crate) struct TlsLabels {
    pub reason: &'static str,
}

impl GrpcMetrics {
    /// Registers `muster_grpc_requests_total` and
    /// `muster_grpc_tls_refused_total`.
    pub fn register(&self, registry: &mut Registry) {
        registry.register(
            "muster_grpc_requests",
            "gRPC requests by method and status code (a stream counts when it starts)",
            self.requests.clone(),
        );
        registry.register(
            "muster_grpc_tls_refused",
            "gRPC connections closed before serving: handshake (failed, e.g. no or a wrong client certificate), busy (too many handshakes at once)",
            self.tls_refused.clone(),
        );
    }

    pub(crate) fn tls_refused(&self, reason: &'static str) {
        self.tls_refused.get_or_create(&TlsLabels { reason }).inc();
    }
}

/// Counts every gRPC request by method and the status it ended with.
#[derive(Clone)]
pub(crate) struct GrpcMetricsLayer(pub GrpcMetrics);

impl<S> tower::Layer<S> for GrpcMetricsLayer {
    type Service = GrpcCounting<S>;
    fn layer(&self, inner: S) -> GrpcCounting<S> {
        GrpcCounting {
            inner,
            metrics: self.0.clone(),
        }
    }
}

#[derive(Clone)]
pub(crate) struct GrpcCounting<S> {
    inner: S,
    metrics: GrpcMetrics,
}

/// The method label: known services by name, anything else `other` (a
/// client must not be able to mint label values).
fn method_label(path: &str) -> String {
    const KNOWN: [&str; 4] = [
        "/muster.v1.Directory/",
        "/grpc.health.v1.Health/",
        "/grpc.reflection.v1.ServerReflection/",
        "/grpc.reflection.v1alpha.ServerReflection/",
    ];
    let known = KNOWN.iter().any(|k| {
        path.strip_prefix(k).is_some_and(|m| {
            !m.is_empty() && m.len() <= 64 && m.chars().all(|c| c.is_ascii_alphanumeric())
        })
    });
    if known {
        path.trim_start_matches('/').to_owned()
    } else {
        "other".to_owned()
    }
}

/// A status code's name as gRPC's own metrics write it (`NotFound`).
fn code_label(code: &str) -> String {
    let n: i32 = code.parse().unwrap_or(2);
    format!("{:?}", tonic::Code::from_i32(n))
}

impl<S, B, R> tower::Service<http::Request<B>> for GrpcCounting<S>
where
    S: tower::Service<http::Request<B>, Response = http::Response<R>> + Clone + Send + 'static,
    S::Future: Send + 'static,
    B: Send + 'static,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = Pin<Box<dyn Future<Output = Result<Self::Response, Self::Error>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: http::Request<B>) -> Self::Future {
        let method = method_label(request.uri().path());
        // The clone that was made ready is the one to call.
        let clone = self.inner.clone();
        let mut inner = std::mem::replace(&mut self.inner, clone);
        let metrics = self.metrics.clone();
        Box::pin(async move {
            let response = inner.call(request).await?;
            // Errors come back as "trailers only": the status is in the
            // headers. Otherwise the call started well (OK).
            let code = response
                .headers()
                .get("grpc-status")
                .and_then(|v| v.to_str().ok())
                .map_or_else(|| "Ok".to_owned(), code_label);
            metrics
                .requests
                .get_or_create(&GrpcLabels { method, code })
                .inc();
            Ok(response)
        })
    }
}

/// Gauges read from the directory and the policy's verdicts at scrape time.
#[derive(Debug)]
pub(crate) struct DirectoryCollector {
    pub directory: Arc<ArcSwap<Snapshot>>,
    pub judged: Arc<ArcSwap<Judged>>,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, PartialOrd, Ord, EncodeLabelSet)]
struct RecordLabels {
    host: String,
    state: &'static str,
    source: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, PartialOrd, Ord, EncodeLabelSet)]
struct LivenessLabels {
    liveness: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, PartialOrd, Ord, EncodeLabelSet)]
struct RuleLabels {
    rule: String,
    severity: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, PartialOrd, Ord, EncodeLabelSet)]
struct VersionLabels {
    version: &'static str,
}

fn gauge_family<L: EncodeLabelSet>(
    encoder: &mut DescriptorEncoder,
    name: &str,
    help: &str,
    values: impl IntoIterator<Item = (L, i64)>,
) -> Result<(), std::fmt::Error> {
    let mut metric = encoder.encode_descriptor(name, help, None, MetricType::Gauge)?;
    for (labels, value) in values {
        ConstGauge::new(value).encode(metric.encode_family(&labels)?)?;
    }
    Ok(())
}

impl Collector for DirectoryCollector {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let snapshot = self.directory.load();
        gauge_family(
            &mut encoder,
            "muster_build_info",
            "The agent's version (always 1)",
            [(
                VersionLabels {
                    version: env!("CARGO_PKG_VERSION"),
                },
                1,
            )],
        )?;
        let mut records: BTreeMap<RecordLabels, i64> = BTreeMap::new();
        for r in snapshot.records() {
            *records
                .entry(RecordLabels {
                    host: r.host.clone(),
                    state: r.state.as_str(),
                    source: r.source.as_str(),
                })
                .or_default() += 1;
        }
        gauge_family(
            &mut encoder,
            "muster_records",
            "Records in this agent's directory, by host, state and source",
            records,
        )?;
        let mut members: BTreeMap<LivenessLabels, i64> = BTreeMap::new();
        for m in snapshot.members() {
            *members
                .entry(LivenessLabels {
                    liveness: m.liveness.as_str(),
                })
                .or_default() += 1;
        }
        gauge_family(
            &mut encoder,
            "muster_members",
            "Agents of the cluster as this agent sees them, by liveness",
            members,
        )?;
        let judged = self.judged.load();
        let violations = &judged.violations;
        let mut by_rule: BTreeMap<RuleLabels, i64> = BTreeMap::new();
        for v in violations.iter() {
            *by_rule
                .entry(RuleLabels {
                    rule: v.rule.clone(),
                    severity: v.severity.as_str(),
                })
                .or_default() += 1;
        }
        gauge_family(
            &mut encoder,
            "muster_policy_violations",
            "Records breaking a naming policy rule (or holding a duplicate name), by rule and severity",
            by_rule,
        )?;
        let revision = encoder.encode_descriptor(
            "muster_index_revision",
            "Revision of this agent's directory (grows with every change)",
            None,
            MetricType::Gauge,
        )?;
        ConstGauge::new(snapshot.revision() as i64).encode(revision)?;
        Ok(())
    }
}
