//! Reflector stores: the operator's view of the cluster. One set per watched scope (all
//! namespaces, or each namespace given with `--watch-namespace`); every change wakes the
//! snapshot keeper.

use std::sync::Arc;

use futures::StreamExt;
use futures::channel::mpsc::{UnboundedReceiver, UnboundedSender, unbounded};
use k8s_openapi::NamespaceResourceScope;
use kube::api::Api;
use kube::runtime::reflector::{self, ObjectRef, Store};
use kube::runtime::{WatchStreamExt, watcher};
use kube::{Client, Resource};
use serde::Serialize;
use serde::de::DeserializeOwned;
use tokio::sync::Notify;

use super::secret_cache::SecretCache;
use crate::api::{IdentityOidcAuth, Kind, OidcAssignment, OidcClient, OidcKey, OidcProvider, OidcScope};
use crate::directory::{Inputs, ObjectKey};
use crate::reconcile::secrets::{CachedSecret, MANAGED_BY};

/// The six kinds, as the controllers handle them generically.
pub trait Managed:
    Resource<DynamicType = (), Scope = NamespaceResourceScope>
    + Clone
    + Serialize
    + DeserializeOwned
    + std::fmt::Debug
    + Send
    + Sync
    + 'static
{
    const KIND: Kind;
    fn store(scope: &Scope) -> &Store<Self>;
    fn trigger(triggers: &Triggers) -> &UnboundedSender<ObjectRef<Self>>;
}

macro_rules! managed {
    ($ty:ty, $kind:ident, $field:ident) => {
        impl Managed for $ty {
            const KIND: Kind = Kind::$kind;
            fn store(scope: &Scope) -> &Store<Self> {
                &scope.$field
            }
            fn trigger(triggers: &Triggers) -> &UnboundedSender<ObjectRef<Self>> {
                &triggers.$field
            }
        }
    };
}
managed!(OidcKey, OidcKey, keys);
managed!(OidcClient, OidcClient, clients);
managed!(OidcScope, OidcScope, scopes);
managed!(OidcAssignment, OidcAssignment, assignments);
managed!(OidcProvider, OidcProvider, providers);
managed!(IdentityOidcAuth, IdentityOidcAuth, identities);

/// Where the snapshot keeper sends the objects each kind's controller should reconcile.
pub struct Triggers {
    keys: UnboundedSender<ObjectRef<OidcKey>>,
    clients: UnboundedSender<ObjectRef<OidcClient>>,
    scopes: UnboundedSender<ObjectRef<OidcScope>>,
    assignments: UnboundedSender<ObjectRef<OidcAssignment>>,
    providers: UnboundedSender<ObjectRef<OidcProvider>>,
    identities: UnboundedSender<ObjectRef<IdentityOidcAuth>>,
}

/// The receiving ends of [`Triggers`], taken by the controllers.
pub struct TriggerReceivers {
    pub keys: UnboundedReceiver<ObjectRef<OidcKey>>,
    pub clients: UnboundedReceiver<ObjectRef<OidcClient>>,
    pub scopes: UnboundedReceiver<ObjectRef<OidcScope>>,
    pub assignments: UnboundedReceiver<ObjectRef<OidcAssignment>>,
    pub providers: UnboundedReceiver<ObjectRef<OidcProvider>>,
    pub identities: UnboundedReceiver<ObjectRef<IdentityOidcAuth>>,
}

fn triggers() -> (Triggers, TriggerReceivers) {
    let (keys, rk) = unbounded();
    let (clients, rc) = unbounded();
    let (scopes, rs) = unbounded();
    let (assignments, ra) = unbounded();
    let (providers, rp) = unbounded();
    let (identities, ri) = unbounded();
    (
        Triggers { keys, clients, scopes, assignments, providers, identities },
        TriggerReceivers { keys: rk, clients: rc, scopes: rs, assignments: ra, providers: rp, identities: ri },
    )
}

/// The stores of one watched scope.
pub struct Scope {
    /// `None`: every namespace.
    pub namespace: Option<String>,
    pub keys: Store<OidcKey>,
    pub clients: Store<OidcClient>,
    pub scopes: Store<OidcScope>,
    pub assignments: Store<OidcAssignment>,
    pub providers: Store<OidcProvider>,
    pub identities: Store<IdentityOidcAuth>,
    /// Only the Secrets the operator manages (by label), compact.
    pub secrets: SecretCache,
    pub triggers: Triggers,
}

fn api<K: Resource<DynamicType = (), Scope = NamespaceResourceScope>>(client: &Client, ns: Option<&str>) -> Api<K> {
    match ns {
        Some(ns) => Api::namespaced(client.clone(), ns),
        None => Api::all(client.clone()),
    }
}

/// A reflector store of `K` kept by a task that pokes `changed` on every event. `trim` drops
/// what the operator never reads before an object enters the cache.
fn reflect<K>(api: Api<K>, labels: Option<&str>, changed: Arc<Notify>, trim: fn(&mut K)) -> Store<K>
where
    K: Resource<DynamicType = ()> + Clone + DeserializeOwned + std::fmt::Debug + Send + Sync + 'static,
{
    let (reader, writer) = reflector::store();
    let mut config = watcher::Config::default();
    if let Some(l) = labels {
        config = config.labels(l);
    }
    let events = watcher(api, config).default_backoff().modify(trim);
    let stream = reflector::reflector(writer, events);
    tokio::spawn(async move {
        let mut stream = std::pin::pin!(stream);
        while let Some(event) = stream.next().await {
            match event {
                Ok(_) => changed.notify_one(),
                Err(e) => tracing::warn!(error = %e, kind = %K::kind(&()), "watch error; retrying"),
            }
        }
    });
    reader
}

/// managedFields are never read here and are most of an object's size.
fn drop_managed_fields<K: Resource>(o: &mut K) {
    o.meta_mut().managed_fields = None;
}

impl Scope {
    /// Starts the watches of one scope.
    pub fn watch(client: &Client, namespace: Option<String>, changed: &Arc<Notify>) -> (Scope, TriggerReceivers) {
        let ns = namespace.as_deref();
        let managed = format!("{}={}", MANAGED_BY.0, MANAGED_BY.1);
        let (triggers, receivers) = triggers();
        let scope = Scope {
            keys: reflect(api(client, ns), None, changed.clone(), drop_managed_fields),
            clients: reflect(api(client, ns), None, changed.clone(), drop_managed_fields),
            scopes: reflect(api(client, ns), None, changed.clone(), drop_managed_fields),
            assignments: reflect(api(client, ns), None, changed.clone(), drop_managed_fields),
            providers: reflect(api(client, ns), None, changed.clone(), drop_managed_fields),
            identities: reflect(api(client, ns), None, changed.clone(), drop_managed_fields),
            secrets: SecretCache::watch(api(client, ns), &managed, changed.clone()),
            namespace,
            triggers,
        };
        (scope, receivers)
    }

    /// Waits for every store's first list.
    pub async fn ready(&self) -> bool {
        let results = futures::join!(
            self.keys.wait_until_ready(),
            self.clients.wait_until_ready(),
            self.scopes.wait_until_ready(),
            self.assignments.wait_until_ready(),
            self.providers.wait_until_ready(),
            self.identities.wait_until_ready(),
        );
        let secrets = self.secrets.ready().await;
        results.0.is_ok()
            && results.1.is_ok()
            && results.2.is_ok()
            && results.3.is_ok()
            && results.4.is_ok()
            && results.5.is_ok()
            && secrets
    }

    fn covers(&self, namespace: &str) -> bool {
        self.namespace.as_deref().is_none_or(|n| n == namespace)
    }
}

/// Every watched scope.
pub struct Stores {
    pub scopes: Vec<Scope>,
}

fn owned<K: Resource<DynamicType = ()> + Clone>(store: &Store<K>, out: &mut Vec<Arc<K>>) {
    out.extend(store.state());
}

impl Stores {
    /// Everything declared, as the pure directory build takes it.
    pub fn inputs(&self) -> Inputs {
        let mut inputs = Inputs::default();
        for s in &self.scopes {
            owned(&s.keys, &mut inputs.keys);
            owned(&s.clients, &mut inputs.clients);
            owned(&s.scopes, &mut inputs.scopes);
            owned(&s.assignments, &mut inputs.assignments);
            owned(&s.providers, &mut inputs.providers);
            owned(&s.identities, &mut inputs.identities);
        }
        inputs
    }

    /// Every managed Secret.
    pub fn secrets(&self) -> Vec<Arc<CachedSecret>> {
        self.scopes.iter().flat_map(|s| s.secrets.all()).collect()
    }

    /// One managed Secret.
    pub fn secret(&self, namespace: &str, name: &str) -> Option<Arc<CachedSecret>> {
        self.scopes.iter().filter(|s| s.covers(namespace)).find_map(|s| s.secrets.get(namespace, name))
    }

    /// One object of a kind.
    pub fn get<K: Managed>(&self, key: &ObjectKey) -> Option<Arc<K>> {
        let r = ObjectRef::new(&key.name).within(&key.namespace);
        self.scopes.iter().filter(|s| s.covers(&key.namespace)).find_map(|s| K::store(s).get(&r))
    }

    /// Asks the controller of `K` to reconcile an object.
    pub fn trigger<K: Managed>(&self, key: &ObjectKey) {
        if let Some(s) = self.scopes.iter().find(|s| s.covers(&key.namespace)) {
            let _ = K::trigger(&s.triggers).unbounded_send(ObjectRef::new(&key.name).within(&key.namespace));
        }
    }

    /// The clients signing with a key (what holds its deletion).
    pub fn clients_using(&self, key: &ObjectKey) -> Vec<String> {
        let clients: Vec<Arc<OidcClient>> =
            self.scopes.iter().filter(|s| s.covers(&key.namespace)).flat_map(|s| s.clients.state()).collect();
        crate::directory::key_users(clients.iter().map(|c| &**c), key)
    }

    /// The external issuers the identities name, and the `jwksUri`s of `private_key_jwt`
    /// clients (their health is part of the snapshot).
    pub fn identity_sources(&self) -> Vec<crate::login::external::IssuerSource> {
        let identities = self.scopes.iter().flat_map(|s| s.identities.state());
        let mut sources: Vec<_> = identities.map(|i| crate::directory::issuer_source(&i.spec)).collect();
        let clients = self.scopes.iter().flat_map(|s| s.clients.state());
        sources.extend(clients.filter_map(|c| crate::directory::client_keys_source(&c.spec)));
        sources
    }
}
