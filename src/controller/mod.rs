//! `oidc-operator run`: the cluster shell. Reflector stores of the six kinds and of the
//! operator's Secrets feed the same pure directory as standalone mode; key rings and client
//! credentials are kept in Secrets (server-side apply, one field manager), status is written
//! only when it changed, and the same handlers serve. The request path never calls the API.
//!
//! This first version runs one level-triggered loop rather than one controller per kind, and
//! a single replica (no leader election yet).

pub mod secrets;
mod status;

use std::collections::{BTreeMap, HashMap};
use std::path::PathBuf;
use std::time::Duration as StdDuration;

use futures::{FutureExt, StreamExt};
use k8s_openapi::api::core::v1::Secret;
use kube::api::{Api, DeleteParams, ListParams, Patch, PatchParams};
use kube::runtime::reflector::{self, Store};
use kube::runtime::{WatchStreamExt, watcher};
use kube::{Client, Resource};
use serde::de::DeserializeOwned;

use crate::api::{ClientType, IdentityOidcAuth, OidcAssignment, OidcClient, OidcKey, OidcProvider, OidcScope};
use crate::credentials;
use crate::directory::{self, ExternalUrl, Inputs, Materials, ObjectKey};
use crate::keys::ring::KeyPolicy;
use crate::keys::{KeyVersion, rotation};
use crate::server::{self, startup::ServeArgs, unix_now};

/// The field manager of everything the operator writes.
pub const FIELD_MANAGER: &str = "oidc-operator";
/// How many writes (Secrets, status) go to the API server at once.
const WRITE_CONCURRENCY: usize = 16;
/// Finalizer on OidcKeys: deleting a key that clients still use is held.
pub const KEY_FINALIZER: &str = "oidc-operator.dev/key-in-use";

/// Flags of `oidc-operator run`.
#[derive(clap::Args, Debug, Clone)]
pub struct Options {
    /// Kubeconfig to use; in-cluster configuration or the usual kubeconfig when omitted.
    #[arg(long, env = "KUBECONFIG")]
    pub kubeconfig: Option<PathBuf>,
    /// Folder for the self-signed serving CA when no certificate is given.
    #[arg(long, default_value = ".oidc-operator/tls")]
    pub tls_state: PathBuf,
    /// How often the loop looks for due rotations and changes, in milliseconds.
    #[arg(long, default_value_t = 500)]
    pub poll_ms: u64,
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
    #[error("the oidc-operator.dev CRDs are not installed (kubectl apply -f crds/): {0}")]
    CrdsMissing(String),
    #[error(transparent)]
    Start(#[from] server::startup::StartError),
    #[error("starting the runtime: {0}")]
    Runtime(std::io::Error),
}

/// Runs the operator until interrupted.
pub fn main(options: Options) -> Result<(), RunError> {
    tokio::runtime::Builder::new_multi_thread().enable_all().build().map_err(RunError::Runtime)?.block_on(run(options))
}

async fn client(options: &Options) -> Result<Client, RunError> {
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
    Client::try_from(config).map_err(|e| RunError::Client(e.to_string()))
}

/// A reflector store of all objects of `K` (optionally filtered by labels), kept by a task.
fn reflect<K>(api: Api<K>, labels: Option<&str>) -> Store<K>
where
    K: Resource<DynamicType = ()> + Clone + DeserializeOwned + std::fmt::Debug + Send + Sync + 'static,
{
    let (reader, writer) = reflector::store();
    let mut config = watcher::Config::default();
    if let Some(l) = labels {
        config = config.labels(l);
    }
    // managedFields are never read here and are most of an object's size: drop them.
    let events = watcher(api, config).default_backoff().modify(|o| o.meta_mut().managed_fields = None);
    let stream = reflector::reflector(writer, events);
    tokio::spawn(async move {
        let mut stream = std::pin::pin!(stream);
        while let Some(event) = stream.next().await {
            if let Err(e) = event {
                tracing::warn!(error = %e, kind = %K::kind(&()), "watch error; retrying");
            }
        }
    });
    reader
}

struct Stores {
    keys: Store<OidcKey>,
    clients: Store<OidcClient>,
    scopes: Store<OidcScope>,
    assignments: Store<OidcAssignment>,
    providers: Store<OidcProvider>,
    identities: Store<IdentityOidcAuth>,
    secrets: Store<Secret>,
}

fn owned<K: Resource<DynamicType = ()> + Clone>(store: &Store<K>) -> Vec<K> {
    store.state().iter().map(|o| (**o).clone()).collect()
}

async fn run(options: Options) -> Result<(), RunError> {
    let client = client(&options).await?;
    // Refuse to start without the CRDs, with a message saying what to do.
    Api::<OidcKey>::all(client.clone())
        .list(&ListParams::default().limit(1))
        .await
        .map_err(|e| RunError::CrdsMissing(e.to_string()))?;
    let started = server::startup::start(&options.serve, &options.tls_state, "operator").await?;
    let ca_bundle = std::fs::read_to_string(options.tls_state.join("ca.crt")).ok();
    let managed = format!("{}={}", secrets::MANAGED_BY.0, secrets::MANAGED_BY.1);
    let stores = Stores {
        keys: reflect(Api::all(client.clone()), None),
        clients: reflect(Api::all(client.clone()), None),
        scopes: reflect(Api::all(client.clone()), None),
        assignments: reflect(Api::all(client.clone()), None),
        providers: reflect(Api::all(client.clone()), None),
        identities: reflect(Api::all(client.clone()), None),
        secrets: reflect(Api::all(client.clone()), Some(&managed)),
    };
    let ready = futures::future::join_all([
        stores.keys.wait_until_ready().boxed(),
        stores.clients.wait_until_ready().boxed(),
        stores.scopes.wait_until_ready().boxed(),
        stores.assignments.wait_until_ready().boxed(),
        stores.providers.wait_until_ready().boxed(),
        stores.identities.wait_until_ready().boxed(),
        stores.secrets.wait_until_ready().boxed(),
    ])
    .await;
    if ready.iter().any(Result::is_err) {
        return Err(RunError::Client("a watch ended before its first list".into()));
    }
    tracing::info!("caches synced");
    let mut shell = Shell {
        client,
        stores,
        app: started.app,
        external: started.external,
        ca_bundle,
        written: Materials::default(),
        statuses: HashMap::new(),
        refetch: options.serve.issuer_refetch_interval.max(1),
        health: BTreeMap::new(),
    };
    loop {
        if let Err(e) = shell.tick().await {
            tracing::warn!(error = %e, "reconcile pass failed; retrying");
        }
        tokio::select! {
            _ = tokio::time::sleep(StdDuration::from_millis(options.poll_ms.max(50))) => {}
            _ = tokio::signal::ctrl_c() => {
                tracing::info!("interrupted; stopping");
                return Ok(());
            }
        }
    }
}

struct Shell {
    client: Client,
    stores: Stores,
    app: server::AppState,
    external: ExternalUrl,
    ca_bundle: Option<String>,
    /// What this process wrote, authoritative until the Secret watch catches up.
    written: Materials,
    /// The last status written per object, so unchanged status is never patched again.
    statuses: HashMap<(crate::api::Kind, ObjectKey), serde_json::Value>,
    refetch: i64,
    health: BTreeMap<crate::login::external::IssuerSource, Result<String, String>>,
}

impl Shell {
    fn inputs(&self) -> Inputs {
        Inputs {
            keys: owned(&self.stores.keys),
            clients: owned(&self.stores.clients),
            scopes: owned(&self.stores.scopes),
            assignments: owned(&self.stores.assignments),
            providers: owned(&self.stores.providers),
            identities: owned(&self.stores.identities),
        }
    }

    /// Materials from the Secrets, overlaid by what this process wrote and the watch has not
    /// shown yet; identity ids are the objects' UIDs.
    fn materials(&self, inputs: &Inputs) -> Materials {
        let mut m = Materials::default();
        for s in self.stores.secrets.state() {
            let ns = s.metadata.namespace.clone().unwrap_or_default();
            if let (Some(key), Some(ring)) = (secrets::owner_label(&s, secrets::KEY_LABEL), secrets::read_key_ring(&s))
            {
                m.key_rings.insert(ObjectKey::new(ns.clone(), key), ring);
            }
            if let (Some(client), Some(creds)) =
                (secrets::owner_label(&s, secrets::CLIENT_LABEL), secrets::read_credentials(&s))
            {
                m.credentials.insert(ObjectKey::new(ns, client), creds);
            }
        }
        for (k, v) in &self.written.key_rings {
            m.key_rings.insert(k.clone(), v.clone());
        }
        for (k, v) in &self.written.credentials {
            m.credentials.insert(k.clone(), v.clone());
        }
        for i in &inputs.identities {
            if let Some(uid) = &i.metadata.uid {
                m.identity_ids.insert(ObjectKey::of(&i.metadata), uid.clone());
            }
        }
        m.issuer_health = self.health.clone();
        m
    }

    async fn tick(&mut self) -> Result<(), kube::Error> {
        let now = unix_now();
        let inputs = self.inputs();
        let mut materials = self.materials(&inputs);

        // Key rings: create what is missing, rotate what is due; persist before use.
        for (key, spec) in directory::required_keys(&inputs) {
            let policy = KeyPolicy::from(&spec);
            let next =
                rotation::advance(materials.key_rings.get(&key), &policy, now, |alg| KeyVersion::generate(alg, now));
            match next {
                Ok(Some(ring)) => {
                    let secret =
                        secrets::key_secret(&key.namespace, &key.name, &ring).map_err(kube::Error::SerdeError)?;
                    self.apply_secret(&key.namespace, secret).await?;
                    tracing::info!(key = %key, current_kid = %ring.current.kid, "key ring written");
                    self.app.metrics.rotations.inc();
                    self.written.key_rings.insert(key.clone(), ring.clone());
                    materials.key_rings.insert(key, ring);
                }
                Ok(None) => {}
                Err(e) => tracing::warn!(key = %key, error = %e, "generating key material failed"),
            }
        }
        // Client credentials: generated once, then kept.
        for c in &inputs.clients {
            let key = ObjectKey::of(&c.metadata);
            let confidential = c.spec.client_type == ClientType::Confidential;
            match credentials::reconcile(materials.credentials.get(&key), c.spec.client_id.as_deref(), confidential) {
                Ok(Some(creds)) => {
                    self.written.credentials.insert(key.clone(), creds.clone());
                    materials.credentials.insert(key, creds);
                }
                Ok(None) => {}
                Err(e) => tracing::warn!(client = %key, error = %e, "generating credentials failed"),
            }
        }

        let sources = inputs.identities.iter().map(|i| directory::issuer_source(&i.spec)).collect();
        self.health = crate::login::external::refresh_health(&self.app.issuers, sources, self.refetch, now);
        materials.issuer_health = self.health.clone();

        let previous = self.app.directory.load();
        let dir = directory::build(&inputs, &materials, &self.external, now, previous.as_deref());

        // Client Secrets (with the issuer of the first provider serving the client).
        let mut pending_secrets = Vec::new();
        for c in &inputs.clients {
            let key = ObjectKey::of(&c.metadata);
            let Some(creds) = materials.credentials.get(&key) else { continue };
            let issuer = dir.namespace(&key.namespace).and_then(|v| {
                let mut served: Vec<_> = v.providers.values().filter(|p| p.clients.contains(&key.name)).collect();
                served.sort_by(|a, b| a.name.cmp(&b.name));
                served.first().map(|p| p.issuer.clone())
            });
            let content = secrets::ClientSecretContent {
                credentials: creds,
                confidential: c.spec.client_type == ClientType::Confidential,
                issuer: issuer.as_deref(),
                ca_bundle: self.ca_bundle.as_deref(),
            };
            let secret = secrets::client_secret(
                &key.namespace,
                &c.credentials_name(),
                &key.name,
                c.metadata.uid.as_deref(),
                &content,
            );
            if self.secret_differs(&secret) {
                pending_secrets.push((key.namespace.clone(), secret));
            }
        }
        // Independent writes go out a few at a time rather than one after another.
        let this = &*self;
        let results: Vec<Result<(), kube::Error>> = futures::stream::iter(pending_secrets)
            .map(|(ns, secret)| async move { this.apply_secret(&ns, secret).await })
            .buffer_unordered(WRITE_CONCURRENCY)
            .collect()
            .await;
        for r in results {
            r?;
        }
        // Credentials Secrets of deleted clients go with them.
        for s in self.stores.secrets.state() {
            let Some(client) = secrets::owner_label(&s, secrets::CLIENT_LABEL) else { continue };
            let ns = s.metadata.namespace.clone().unwrap_or_default();
            if !inputs.clients.iter().any(|c| ObjectKey::of(&c.metadata) == ObjectKey::new(ns.clone(), client)) {
                let name = s.metadata.name.clone().unwrap_or_default();
                let _ =
                    Api::<Secret>::namespaced(self.client.clone(), &ns).delete(&name, &DeleteParams::default()).await;
                self.written.credentials.remove(&ObjectKey::new(ns, client));
            }
        }

        self.key_finalizers(&inputs).await;

        let mut changed = Vec::new();
        for st in &dir.statuses {
            let id = (st.kind, st.key.clone());
            let body = status::body(st, &inputs, self.statuses.get(&id), now);
            if self.statuses.get(&id) != Some(&body) {
                changed.push((id, body));
            }
        }
        let client = &self.client;
        let written: Vec<_> = futures::stream::iter(changed)
            .map(|(id, body)| async move {
                let result = status::patch(client, id.0, &id.1, body.clone()).await;
                (id, body, result)
            })
            .buffer_unordered(WRITE_CONCURRENCY)
            .collect()
            .await;
        for (id, body, result) in written {
            match result {
                Ok(()) => {
                    self.statuses.insert(id, body);
                }
                Err(e) => tracing::debug!(object = %id.1, error = %e, "status patch failed; retrying"),
            }
        }
        self.app.metrics.objects.clear();
        for st in &dir.statuses {
            let ready = if st.readiness.ready { "True" } else { "False" };
            let labels = server::metrics::ObjectLabels { kind: st.kind.to_string(), ready: ready.into() };
            self.app.metrics.objects.get_or_create(&labels).inc();
        }
        self.app.metrics.snapshot_builds.inc();
        self.app.directory.store(dir);
        Ok(())
    }

    /// Adds the finalizer to every OidcKey; releases a deleted key once no client uses it.
    async fn key_finalizers(&self, inputs: &Inputs) {
        for key in &inputs.keys {
            let k = ObjectKey::of(&key.metadata);
            let finalizers = key.metadata.finalizers.clone().unwrap_or_default();
            let has = finalizers.iter().any(|f| f == KEY_FINALIZER);
            let deleting = key.metadata.deletion_timestamp.is_some();
            let wanted: Option<Vec<String>> = match (deleting, has) {
                (false, false) => Some(finalizers.iter().cloned().chain([KEY_FINALIZER.to_owned()]).collect()),
                (true, true) if directory::key_users(inputs, &k).is_empty() => {
                    Some(finalizers.iter().filter(|f| *f != KEY_FINALIZER).cloned().collect())
                }
                _ => None,
            };
            if let Some(list) = wanted {
                // A merge patch with the resourceVersion: never overwrite a concurrent change.
                let patch = serde_json::json!({"metadata": {"finalizers": list, "resourceVersion": key.metadata.resource_version}});
                let api = Api::<OidcKey>::namespaced(self.client.clone(), &k.namespace);
                if let Err(e) = api.patch(&k.name, &PatchParams::default(), &Patch::Merge(patch)).await {
                    tracing::debug!(key = %k, error = %e, "finalizer update failed; retrying");
                }
            }
        }
    }

    fn secret_differs(&self, wanted: &Secret) -> bool {
        let ns = wanted.metadata.namespace.as_deref().unwrap_or_default();
        let name = wanted.metadata.name.as_deref().unwrap_or_default();
        !self.stores.secrets.state().iter().any(|s| {
            s.metadata.namespace.as_deref() == Some(ns)
                && s.metadata.name.as_deref() == Some(name)
                && s.data == wanted.data
                && s.metadata.owner_references == wanted.metadata.owner_references
        })
    }

    async fn apply_secret(&self, namespace: &str, secret: Secret) -> Result<(), kube::Error> {
        let name = secret.metadata.name.clone().unwrap_or_default();
        let mut body = serde_json::to_value(&secret).map_err(kube::Error::SerdeError)?;
        body["apiVersion"] = "v1".into();
        body["kind"] = "Secret".into();
        Api::<Secret>::namespaced(self.client.clone(), namespace)
            .patch(&name, &PatchParams::apply(FIELD_MANAGER).force(), &Patch::Apply(body))
            .await?;
        Ok(())
    }
}
