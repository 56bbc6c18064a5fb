//! Prometheus metrics. Labels are bounded: endpoint names, status codes and kinds, never an
//! object's name.

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RequestLabels {
    pub endpoint: &'static str,
    pub code: u16,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RecordLabels {
    pub record: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ObjectLabels {
    pub kind: String,
    pub ready: String,
}

/// A connection the server closed or refused, and why (a fixed set of reasons, see
/// [`super::conn`] and [`super::body::BodyError::reason`]).
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ConnectionLabels {
    pub listener: &'static str,
    pub reason: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ListenerLabels {
    pub listener: &'static str,
}

/// The operator's metrics and the registry that renders them.
pub struct Metrics {
    registry: Registry,
    pub requests: Family<RequestLabels, Counter>,
    pub objects: Family<ObjectLabels, Gauge>,
    pub rotations: Counter,
    pub snapshot_builds: Counter,
    /// Records the session store refused (its ceiling), by record kind.
    pub store_refusals: Family<RecordLabels, Counter>,
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
        registry.register("objects", "Declared objects, by kind and readiness", objects.clone());
        registry.register("key_rotations", "Key ring changes (creations, rotations, prunes)", rotations.clone());
        registry.register("snapshot_builds", "Directory snapshots built", snapshot_builds.clone());
        let store_refusals = Family::<RecordLabels, Counter>::default();
        let store_purged = Counter::default();
        let store_records = Gauge::default();
        registry.register(
            "session_store_refusals",
            "Records the session store refused at its ceiling (--max-session-records), by kind",
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
            objects,
            rotations,
            snapshot_builds,
            store_refusals,
            store_purged,
            store_records,
            connections_rejected,
            connections_open,
        }
    }
}

impl Metrics {
    /// Counts one request.
    pub fn request(&self, endpoint: &'static str, code: u16) {
        self.requests.get_or_create(&RequestLabels { endpoint, code }).inc();
    }

    /// Counts one record the session store refused.
    pub fn store_refused(&self, kind: crate::sessions::RecordKind) {
        self.store_refusals.get_or_create(&RecordLabels { record: kind.label() }).inc();
    }

    /// Counts a connection refused or closed by the server.
    pub fn connection_rejected(&self, listener: &'static str, reason: &'static str) {
        self.connections_rejected.get_or_create(&ConnectionLabels { listener, reason }).inc();
    }

    /// Prometheus text exposition.
    pub fn render(&self) -> String {
        let mut out = String::new();
        if prometheus_client::encoding::text::encode(&mut out, &self.registry).is_err() {
            out.clear();
        }
        out
    }
}
