//! `oidc-operator run`: the cluster shell. Reflector stores of the six kinds and of the
//! operator's Secrets feed the snapshot keeper, which builds the same pure directory as
//! standalone mode and serves it to the same handlers (the request path never calls the API).
//! One kube-runtime Controller per kind writes what `reconcile/` plans: finalizers, client
//! Secrets, status and Events, with backoff on failed writes. Only the Lease holder writes;
//! every replica serves.

mod ca;
mod keeper;
pub mod leader;
mod reconciler;
mod secret_cache;
mod stores;
mod token_review;

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex, MutexGuard};

use futures::StreamExt;
use k8s_openapi::api::core::v1::ObjectReference;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};
use kube::Client;
use kube::api::{Api, ListParams};
use kube::runtime::Controller;
use kube::runtime::controller::Config as ControllerConfig;
use kube::runtime::events::{Event, EventType, Recorder, Reporter};
use kube::runtime::reflector::{ObjectRef, Store};
use tokio::sync::{Notify, watch};

use crate::api::{Kind, OidcKey};
use crate::directory::{ExternalUrl, Materials, ObjectKey};
use crate::server::startup::{CaSource, ServeArgs};
use crate::server::{self, AppState};
use stores::{Managed, Scope, Stores};

pub use crate::reconcile::key::KEY_FINALIZER;

/// The field manager of everything the operator writes.
pub const FIELD_MANAGER: &str = "oidc-operator";
/// How many objects of one kind are reconciled at once.
const CONCURRENCY: u16 = 16;

/// Flags of `oidc-operator run`.
#[derive(clap::Args, Debug, Clone)]
pub struct Options {
    /// Kubeconfig to use; in-cluster configuration or the usual kubeconfig when omitted.
    #[arg(long, env = "KUBECONFIG")]
    pub kubeconfig: Option<PathBuf>,
    /// The operator's own namespace: its Lease and CA Secret live there.
    #[arg(long, env = "POD_NAMESPACE", default_value = "default")]
    pub namespace: String,
    /// Namespaces to watch (comma-separated); every namespace when omitted.
    #[arg(long, value_delimiter = ',')]
    pub watch_namespace: Vec<String>,
    /// Elect a leader with a Lease so that several replicas can run (only the leader writes).
    #[arg(long, default_value_t = true, action = clap::ArgAction::Set)]
    pub leader_election: bool,
    /// Name of the Lease.
    #[arg(long, default_value = "oidc-operator")]
    pub lease_name: String,
    /// Seconds a leader holds the Lease without renewing it.
    #[arg(long, default_value_t = 15, value_parser = clap::value_parser!(i32).range(3..=300))]
    pub lease_duration: i32,
    /// This replica's identity in the Lease and in Events (the pod name in a cluster).
    #[arg(long, env = "POD_NAME")]
    pub identity: Option<String>,
    /// Secret (in --namespace) holding the CA of the self-signed serving certificate.
    #[arg(long, default_value = "oidc-operator-ca")]
    pub ca_secret: String,
    /// Serving: addresses, TLS, external URL, login and protocol settings.
    #[command(flatten)]
    pub serve: ServeArgs,
}

/// Why the operator stopped.
#[derive(Debug, thiserror::Error)]
pub enum RunError {
    #[error("kubeconfig {path}: {reason}")]
    Kubeconfig { path: PathBuf, reason: String },
    #[error("connecting to the cluster: {0}")]
    Client(String),
    #[error(
        "the oidc-operator.dev CRDs are not installed: install them with `kubectl apply --server-side -f crds/` \
         (the Helm chart installs them too): {0}"
    )]
    CrdsMissing(String),
    #[error("cannot reach the API server at {url}: {reason}")]
    Unreachable { url: String, reason: String },
    #[error("the API server at {url} refused the operator's credentials (401 Unauthorized): {reason}")]
    Unauthorized { url: String, reason: String },
    #[error(
        "forbidden: list oidckeys.oidc-operator.dev {scope} (the operator's role needs apiGroups \
         [oidc-operator.dev], resources [oidckeys, oidcclients, oidcscopes, oidcassignments, oidcproviders, \
         identityoidcauths], verbs [get, list, watch]; the chart's RBAC grants them): {reason}"
    )]
    Forbidden { scope: String, reason: String },
    #[error("serving CA: {0}")]
    Ca(#[from] ca::CaError),
    #[error(transparent)]
    Start(#[from] server::startup::StartError),
    #[error("starting the runtime: {0}")]
    Runtime(std::io::Error),
}

/// Runs the operator until interrupted.
pub fn main(options: Options) -> Result<(), RunError> {
    tokio::runtime::Builder::new_multi_thread().enable_all().build().map_err(RunError::Runtime)?.block_on(run(options))
}

/// Why listing the CRDs failed, named: only a 404 means they are not installed.
fn probe_error(e: kube::Error, url: &str, scope: &str) -> RunError {
    match e {
        kube::Error::Api(status) if status.code == 404 => RunError::CrdsMissing(status.message),
        kube::Error::Api(status) if status.code == 401 => {
            RunError::Unauthorized { url: url.to_owned(), reason: status.message }
        }
        kube::Error::Api(status) if status.code == 403 => {
            RunError::Forbidden { scope: scope.to_owned(), reason: status.message }
        }
        kube::Error::Api(status) => RunError::Client(format!("{} ({})", status.message, status.code)),
        other => RunError::Unreachable { url: url.to_owned(), reason: other.to_string() },
    }
}

async fn client(options: &Options) -> Result<(Client, String), RunError> {
    let config = match &options.kubeconfig {
        Some(path) => {
            let err = |e: &dyn std::fmt::Display| RunError::Kubeconfig { path: path.clone(), reason: e.to_string() };
            let kubeconfig = kube::config::Kubeconfig::read_from(path).map_err(|e| err(&e))?;
            kube::Config::from_custom_kubeconfig(kubeconfig, &kube::config::KubeConfigOptions::default())
                .await
                .map_err(|e| err(&e))?
        }
        None => kube::Config::infer().await.map_err(|e| RunError::Client(e.to_string()))?,
    };
    let url = config.cluster_url.to_string();
    Ok((Client::try_from(config).map_err(|e| RunError::Client(e.to_string()))?, url))
}

/// What this process wrote, ahead of the watch caches.
#[derive(Default)]
pub struct Written {
    /// Key rings and credentials written (or about to be), authoritative until the Secret
    /// watch shows them.
    pub materials: Materials,
    /// The last status written per object.
    pub statuses: HashMap<(Kind, ObjectKey), WrittenStatus>,
    /// Clients whose `spec.secretName` names a Secret that is not theirs, as found when writing.
    pub secret_conflicts: std::collections::BTreeSet<ObjectKey>,
    /// Failed reconciles in a row per object (backoff).
    pub failures: HashMap<(Kind, ObjectKey), u32>,
}

/// What this process last wrote in an object's status: a fingerprint of the whole body and
/// what a later status needs of its `Ready` and `Stalled` conditions (kept small: one per
/// object).
#[derive(Clone)]
pub struct WrittenStatus {
    pub fingerprint: u64,
    pub uid: Option<String>,
    pub ready: Option<ConditionMark>,
    pub stalled: Option<ConditionMark>,
}

/// A condition's status, reason and transition time.
#[derive(Clone)]
pub struct ConditionMark {
    pub status: String,
    pub reason: String,
    pub last_transition_time: Time,
}

impl ConditionMark {
    fn of(c: &Condition) -> Self {
        Self {
            status: c.status.clone(),
            reason: c.reason.clone(),
            last_transition_time: c.last_transition_time.clone(),
        }
    }

    fn condition(&self, type_: &str) -> Condition {
        Condition {
            type_: type_.into(),
            status: self.status.clone(),
            reason: self.reason.clone(),
            message: String::new(),
            observed_generation: None,
            last_transition_time: self.last_transition_time.clone(),
        }
    }
}

impl WrittenStatus {
    pub fn new(fingerprint: u64, uid: Option<String>, written: &crate::reconcile::status::Previous) -> WrittenStatus {
        WrittenStatus {
            fingerprint,
            uid,
            ready: written.ready.as_ref().map(ConditionMark::of),
            stalled: written.stalled.as_ref().map(ConditionMark::of),
        }
    }

    /// The conditions as far as the next status and Event need them.
    pub fn previous(&self) -> crate::reconcile::status::Previous {
        crate::reconcile::status::Previous {
            ready: self.ready.as_ref().map(|m| m.condition("Ready")),
            stalled: self.stalled.as_ref().map(|m| m.condition("Stalled")),
        }
    }
}

/// What the keeper and the controllers share.
pub struct Context {
    pub client: Client,
    pub stores: Stores,
    pub app: AppState,
    pub external: ExternalUrl,
    pub ca_bundle: Option<String>,
    pub recorder: Recorder,
    pub leading: watch::Receiver<bool>,
    pub changed: Arc<Notify>,
    pub refetch: i64,
    /// `--max-token-ttl`.
    pub max_token_ttl: i64,
    written: Mutex<Written>,
}

impl Context {
    fn leading(&self) -> bool {
        *self.leading.borrow()
    }

    fn written(&self) -> MutexGuard<'_, Written> {
        self.written.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Publishes an Event about an object. Events are best effort: a failure is only logged.
    /// Notes carry reasons, field names and kids, never secrets or key material.
    async fn announce(&self, about: ObjectReference, type_: EventType, reason: &str, note: String, action: &str) {
        let event = Event { type_, reason: reason.into(), note: Some(note), action: action.into(), secondary: None };
        if let Err(e) = self.recorder.publish(&event, &about).await {
            // Warn: a missing events.k8s.io permission must show in the log.
            tracing::warn!(object = ?about.name, reason, error = %e, "publishing an Event failed");
        }
    }
}

fn default_identity() -> String {
    let host = std::env::var("HOSTNAME").ok().filter(|h| !h.is_empty()).unwrap_or_else(|| "oidc-operator".into());
    let suffix = crate::credentials::random_base62(6).unwrap_or_default().to_lowercase();
    format!("{host}-{suffix}")
}

fn spawn_controller<K: Managed>(
    store: Store<K>,
    triggers: futures::channel::mpsc::UnboundedReceiver<ObjectRef<K>>,
    ctx: Arc<Context>,
) {
    let controller = Controller::for_stream(futures::stream::pending(), store)
        .reconcile_on(triggers)
        .with_config(ControllerConfig::default().concurrency(CONCURRENCY))
        .run(reconciler::reconcile::<K>, reconciler::error_policy::<K>, ctx);
    tokio::spawn(controller.for_each(|_| futures::future::ready(())));
}

async fn shutdown_signal() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        if let Ok(mut term) = signal(SignalKind::terminate()) {
            tokio::select! {
                _ = term.recv() => {}
                _ = tokio::signal::ctrl_c() => {}
            }
            return;
        }
    }
    let _ = tokio::signal::ctrl_c().await;
}

async fn run(options: Options) -> Result<(), RunError> {
    let (client, url) = client(&options).await?;
    // Refuse to start without the CRDs, with a message saying what to do.
    // (in a watched namespace when given: namespaced RBAC may not allow a cluster-wide list)
    let probe: Api<OidcKey> = match options.watch_namespace.first() {
        Some(ns) => Api::namespaced(client.clone(), ns),
        None => Api::all(client.clone()),
    };
    let scope = match options.watch_namespace.first() {
        Some(ns) => format!("in namespace {ns}"),
        None => "cluster-wide".to_owned(),
    };
    probe.list(&ListParams::default().limit(1)).await.map_err(|e| probe_error(e, &url, &scope))?;
    let self_signed = !options.serve.plain_http && options.serve.tls_cert.is_none();
    let ca = match self_signed {
        true => {
            let names = server::startup::served_names(&options.serve)?;
            Some(ca::load_or_create(client.clone(), &options.namespace, &options.ca_secret, &names).await?)
        }
        false => None,
    };
    let ca_bundle = ca.as_ref().map(|c| c.cert_pem.clone());
    let source = match ca {
        Some(ca) => CaSource::Loaded(ca),
        None => CaSource::NotNeeded,
    };
    let started = server::startup::start(&options.serve, source, "operator").await?;
    if self_signed {
        println!("tls: generated certificate signed by the CA in Secret {}/{}", options.namespace, options.ca_secret);
    }

    let changed = Arc::new(Notify::new());
    let namespaces: Vec<Option<String>> = match options.watch_namespace.is_empty() {
        true => vec![None],
        false => options.watch_namespace.iter().map(|n| Some(n.clone())).collect(),
    };
    let mut scopes = Vec::new();
    let mut receivers = Vec::new();
    for ns in namespaces {
        let (scope, rx) = Scope::watch(&client, ns, &changed);
        scopes.push(scope);
        receivers.push(rx);
    }
    for scope in &scopes {
        if !scope.ready().await {
            return Err(RunError::Client("a watch ended before its first list".into()));
        }
    }
    tracing::info!("caches synced");

    let identity = options.identity.clone().unwrap_or_else(default_identity);
    let election = leader::Election {
        namespace: options.namespace.clone(),
        name: options.lease_name.clone(),
        identity: identity.clone(),
        duration_secs: options.lease_duration,
    };
    // Without election this replica always leads (the sender lives as long as `run`).
    let (_always, always_rx) = watch::channel(true);
    let leading = if options.leader_election { leader::spawn(client.clone(), election.clone()) } else { always_rx };
    let reporter = Reporter { controller: FIELD_MANAGER.into(), instance: Some(identity) };
    // Identities with spec.tokenReview ask this API server about every token they take.
    started.app.issuers.set_reviewer(Arc::new(token_review::KubeTokenReview { client: client.clone() }));
    let ctx = Arc::new(Context {
        client: client.clone(),
        stores: Stores { scopes },
        app: started.app,
        external: started.external,
        ca_bundle,
        recorder: Recorder::new(client.clone(), reporter),
        leading,
        changed,
        refetch: options.serve.issuer_refetch_interval.max(1),
        max_token_ttl: options.serve.max_token_ttl,
        written: Mutex::new(Written::default()),
    });
    for (i, rx) in receivers.into_iter().enumerate() {
        let Some(s) = ctx.stores.scopes.get(i) else { continue };
        spawn_controller(s.keys.clone(), rx.keys, ctx.clone());
        spawn_controller(s.clients.clone(), rx.clients, ctx.clone());
        spawn_controller(s.scopes.clone(), rx.scopes, ctx.clone());
        spawn_controller(s.assignments.clone(), rx.assignments, ctx.clone());
        spawn_controller(s.providers.clone(), rx.providers, ctx.clone());
        spawn_controller(s.identities.clone(), rx.identities, ctx.clone());
    }
    let keeper = tokio::spawn(keeper::run(ctx.clone()));
    shutdown_signal().await;
    tracing::info!("stopping");
    keeper.abort();
    if options.leader_election {
        leader::release(client, &election).await;
    }
    Ok(())
}
