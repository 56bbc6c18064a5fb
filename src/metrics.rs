//! Prometheus metrics. Labels are bounded: endpoint names, status codes and kinds, never an
//! object's name.

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RequestLabels {
    pub endpoint: &'static str,
    pub code: u16,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct EndpointLabels {
    pub endpoint: &'static str,
}

/// A login's outcome: `success` or the error code the caller got (a fixed set).
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct OutcomeLabels {
    pub outcome: &'static str,
}

/// A session store operation (a fixed set: `token_put`, `token_use`, `code_redeem`, ...).
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct StoreOpLabels {
    pub op: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct KindLabels {
    pub kind: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RefusalLabels {
    pub record: &'static str,
    pub reason: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ObjectLabels {
    pub kind: String,
    pub ready: String,
}

/// A connection the server closed or refused, and why (a fixed set of reasons, see
/// `server::conn` and `server::body::BodyError::reason`).
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ConnectionLabels {
    pub listener: &'static str,
    pub reason: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ListenerLabels {
    pub listener: &'static str,
}

/// The listeners, by the `listener` label: the protocol port and the health/metrics port.
pub const LISTENERS: [&str; 2] = ["api", "management"];

/// Every reason `conn.rs` and `body.rs` close or refuse a connection for.
pub const CONNECTION_REASONS: [&str; 11] = [
    "limit",
    "peer_limit",
    "tls_handshake_timeout",
    "tls_handshake_error",
    "header_timeout",
    "idle",
    "shutdown_timeout",
    "body_too_large",
    "body_timeout",
    "body_error",
    "body_budget",
];

/// The operator's metrics and the registry that renders them.
pub struct Metrics {
    registry: Registry,
    pub requests: Family<RequestLabels, Counter>,
    /// Seconds from a request's arrival (after its headers) to its answer, by endpoint.
    pub request_duration: Family<EndpointLabels, Histogram>,
    /// Machine logins by outcome.
    pub logins: Family<OutcomeLabels, Counter>,
    /// Reconciles run by the per-kind controllers, and those that failed (and are retried).
    pub reconciles: Family<KindLabels, Counter>,
    pub reconcile_errors: Family<KindLabels, Counter>,
    /// Shared session store: latency and failures (errors and timeouts) by operation, and
    /// whether its last health check answered.
    pub store_duration: Family<StoreOpLabels, Histogram>,
    pub store_errors: Family<StoreOpLabels, Counter>,
    pub store_up: Gauge,
    /// Seconds one directory snapshot took to build.
    pub snapshot_build_duration: Histogram,
    /// Unix time (ms) of the last snapshot; rendered as `snapshot_age_seconds`.
    snapshot_built_at_ms: std::sync::atomic::AtomicI64,
    snapshot_age: Gauge<f64, std::sync::atomic::AtomicU64>,
    pub objects: Family<ObjectLabels, Gauge>,
    pub rotations: Counter,
    pub snapshot_builds: Counter,
    /// Records the session store refused (its ceiling), by record kind.
    pub store_refusals: Family<RefusalLabels, Counter>,
    /// Records dropped by the background purge (expired or spent).
    pub store_purged: Counter,
    /// Live records in the session store at the last purge.
    pub store_records: Gauge,
    pub connections_rejected: Family<ConnectionLabels, Counter>,
    pub connections_open: Family<ListenerLabels, Gauge>,
}

impl Default for Metrics {
    fn default() -> Self {
        let mut registry = Registry::with_prefix("oidc_operator");
        let requests = Family::<RequestLabels, Counter>::default();
        let objects = Family::<ObjectLabels, Gauge>::default();
        let rotations = Counter::default();
        let snapshot_builds = Counter::default();
        registry.register("http_requests", "HTTP requests served, by endpoint and status code", requests.clone());
        let request_duration = Family::<EndpointLabels, Histogram>::new_with_constructor(|| {
            Histogram::new([0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 10.0])
        });
        registry.register(
            "http_request_duration_seconds",
            "Time from a request's headers to its answer, by endpoint",
            request_duration.clone(),
        );
        let logins = Family::<OutcomeLabels, Counter>::default();
        registry.register("logins", "Machine logins, by outcome (success or the error code)", logins.clone());
        let reconciles = Family::<KindLabels, Counter>::default();
        let reconcile_errors = Family::<KindLabels, Counter>::default();
        registry.register("reconciles", "Reconciles of the per-kind controllers, by kind", reconciles.clone());
        registry.register(
            "reconcile_errors",
            "Reconciles that failed and are retried with backoff, by kind",
            reconcile_errors.clone(),
        );
        let snapshot_build_duration =
            Histogram::new([0.0001, 0.0005, 0.001, 0.005, 0.01, 0.05, 0.1, 0.5, 1.0, 5.0, 30.0]);
        registry.register(
            "snapshot_build_duration_seconds",
            "Time to build one directory snapshot",
            snapshot_build_duration.clone(),
        );
        let store_duration = Family::<StoreOpLabels, Histogram>::new_with_constructor(|| {
            Histogram::new([0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0])
        });
        let store_errors = Family::<StoreOpLabels, Counter>::default();
        let store_up = Gauge::default();
        registry.register(
            "session_store_duration_seconds",
            "Shared session store call time, by operation",
            store_duration.clone(),
        );
        registry.register(
            "session_store_errors",
            "Shared session store calls that failed or timed out, by operation",
            store_errors.clone(),
        );
        registry.register(
            "session_store_up",
            "Whether the shared session store answered its last ping",
            store_up.clone(),
        );
        let snapshot_age = Gauge::<f64, std::sync::atomic::AtomicU64>::default();
        registry.register(
            "snapshot_age_seconds",
            "Seconds since the served directory snapshot was built (-1 before the first)",
            snapshot_age.clone(),
        );
        registry.register("objects", "Declared objects, by kind and readiness", objects.clone());
        registry.register("key_rotations", "Key ring changes (creations, rotations, prunes)", rotations.clone());
        registry.register("snapshot_builds", "Directory snapshots built", snapshot_builds.clone());
        let store_refusals = Family::<RefusalLabels, Counter>::default();
        let store_purged = Counter::default();
        let store_records = Gauge::default();
        registry.register(
            "session_store_refusals",
            "Records the session store refused, by kind and reason (records, bytes, namespace_quota, identity_quota, record_too_large, maxmemory)",
            store_refusals.clone(),
        );
        registry.register("session_store_purged", "Expired or spent session records purged", store_purged.clone());
        registry.register("session_store_records", "Live session records at the last purge", store_records.clone());
        let connections_rejected = Family::<ConnectionLabels, Counter>::default();
        let connections_open = Family::<ListenerLabels, Gauge>::default();
        registry.register(
            "connections_rejected",
            "Connections the server refused or closed, by listener and reason",
            connections_rejected.clone(),
        );
        registry.register("connections_open", "Connections open now, by listener", connections_open.clone());
        Self {
            registry,
            requests,
            request_duration,
            logins,
            reconciles,
            reconcile_errors,
            snapshot_build_duration,
            store_duration,
            store_errors,
            store_up,
            snapshot_built_at_ms: std::sync::atomic::AtomicI64::new(-1),
            snapshot_age,
            objects,
            rotations,
            snapshot_builds,
            store_refusals,
            store_purged,
            store_records,
            connections_rejected,
            connections_open,
        }
        .with_known_series()
    }
}

impl Metrics {
    /// Starts every series whose labels are known in advance at zero, so dashboards and
    /// alerts (`rate(...) > 0`, `absent(...)`) see them before their first event.
    fn with_known_series(self) -> Self {
        for kind in crate::api::Kind::ALL {
            self.reconciles.get_or_create(&KindLabels { kind: kind.as_str() }).inc_by(0);
            self.reconcile_errors.get_or_create(&KindLabels { kind: kind.as_str() }).inc_by(0);
        }
        for record in crate::sessions::RecordKind::ALL {
            for reason in crate::sessions::StoreError::REFUSAL_REASONS {
                self.store_refusals.get_or_create(&RefusalLabels { record: record.label(), reason }).inc_by(0);
            }
        }
        self.logins.get_or_create(&OutcomeLabels { outcome: "success" }).inc_by(0);
        for listener in LISTENERS {
            for reason in CONNECTION_REASONS {
                self.connections_rejected.get_or_create(&ConnectionLabels { listener, reason }).inc_by(0);
            }
        }
        self
    }

    /// Counts one request and the time it took.
    pub fn request(&self, endpoint: &'static str, code: u16, took: std::time::Duration) {
        self.requests.get_or_create(&RequestLabels { endpoint, code }).inc();
        self.request_duration.get_or_create(&EndpointLabels { endpoint }).observe(took.as_secs_f64());
    }

    /// Counts one login by its outcome.
    pub fn login(&self, outcome: &'static str) {
        self.logins.get_or_create(&OutcomeLabels { outcome }).inc();
    }

    /// Records one shared store call.
    pub fn store_operation(&self, op: &'static str, took: std::time::Duration, ok: bool) {
        let labels = StoreOpLabels { op };
        self.store_duration.get_or_create(&labels).observe(took.as_secs_f64());
        if !ok {
            self.store_errors.get_or_create(&labels).inc();
        }
    }

    /// Counts one reconcile of a kind.
    pub fn reconciled(&self, kind: crate::api::Kind) {
        self.reconciles.get_or_create(&KindLabels { kind: kind.as_str() }).inc();
    }

    /// Counts one failed reconcile of a kind (it is retried with backoff).
    pub fn reconcile_failed(&self, kind: crate::api::Kind) {
        self.reconcile_errors.get_or_create(&KindLabels { kind: kind.as_str() }).inc();
    }

    /// Records a snapshot built at `at` (unix ms) in `took`.
    pub fn snapshot_built(&self, at_ms: i64, took: std::time::Duration) {
        self.snapshot_builds.inc();
        self.snapshot_build_duration.observe(took.as_secs_f64());
        self.snapshot_built_at_ms.store(at_ms, std::sync::atomic::Ordering::Relaxed);
    }

    /// Counts one record the session store refused, and why (`StoreError::reason`: a
    /// ceiling, a namespace's or identity's quota; never the tenant's name).
    pub fn store_refused(&self, kind: crate::sessions::RecordKind, reason: &'static str) {
        self.store_refusals.get_or_create(&RefusalLabels { record: kind.label(), reason }).inc();
    }

    /// Counts a connection refused or closed by the server.
    pub fn connection_rejected(&self, listener: &'static str, reason: &'static str) {
        self.connections_rejected.get_or_create(&ConnectionLabels { listener, reason }).inc();
    }

    /// Prometheus text exposition, `snapshot_age_seconds` as of `now_ms` (unix ms).
    pub fn render(&self, now_ms: i64) -> String {
        let built = self.snapshot_built_at_ms.load(std::sync::atomic::Ordering::Relaxed);
        self.snapshot_age.set(if built < 0 { -1.0 } else { (now_ms - built).max(0) as f64 / 1000.0 });
        let mut out = String::new();
        if prometheus_client::encoding::text::encode(&mut out, &self.registry).is_err() {
            out.clear();
        }
        out
    }
}
