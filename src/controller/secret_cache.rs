//! The operator's cache of its managed Secrets, kept compact: each Secret is reduced to a
//! `CachedSecret` (owner, credentials or key ring, digest of the rest) as its watch event
//! arrives, so the full object is never held.

use std::collections::HashMap;
use std::sync::{Arc, RwLock};

use futures::StreamExt;
use k8s_openapi::api::core::v1::Secret;
use kube::api::Api;
use kube::runtime::WatchStreamExt;
use kube::runtime::watcher::{self, Event};
use tokio::sync::{Notify, watch};

use crate::reconcile::secrets::CachedSecret;

type Entries = HashMap<(String, String), Arc<CachedSecret>>;

/// Managed Secrets by namespace and name.
#[derive(Clone)]
pub struct SecretCache {
    entries: Arc<RwLock<Entries>>,
    ready: watch::Receiver<bool>,
}

fn id(c: &CachedSecret) -> (String, String) {
    (c.namespace.clone(), c.name.clone())
}

fn of(s: &Secret) -> (String, String) {
    (s.metadata.namespace.clone().unwrap_or_default(), s.metadata.name.clone().unwrap_or_default())
}

impl SecretCache {
    /// Starts watching the Secrets `api` lists with `labels`; pokes `changed` on every change.
    pub fn watch(api: Api<Secret>, labels: &str, changed: Arc<Notify>) -> SecretCache {
        let entries: Arc<RwLock<Entries>> = Arc::default();
        let (ready_tx, ready) = watch::channel(false);
        let cache = SecretCache { entries: entries.clone(), ready };
        let stream = watcher::watcher(api, watcher::Config::default().labels(labels)).default_backoff();
        tokio::spawn(async move {
            let mut stream = std::pin::pin!(stream);
            // A relist fills a new map that replaces the old one when complete.
            let mut relist: Option<Entries> = None;
            while let Some(event) = stream.next().await {
                let write = || entries.write().unwrap_or_else(std::sync::PoisonError::into_inner);
                match event {
                    Ok(Event::Init) => relist = Some(Entries::new()),
                    Ok(Event::InitApply(s)) => {
                        if let (Some(map), Some(c)) = (relist.as_mut(), CachedSecret::of(&s)) {
                            map.insert(id(&c), Arc::new(c));
                        }
                    }
                    Ok(Event::InitDone) => {
                        if let Some(map) = relist.take() {
                            *write() = map;
                        }
                        ready_tx.send_replace(true);
                        changed.notify_one();
                    }
                    Ok(Event::Apply(s)) => {
                        match CachedSecret::of(&s) {
                            Some(c) => write().insert(id(&c), Arc::new(c)),
                            None => write().remove(&of(&s)),
                        };
                        changed.notify_one();
                    }
                    Ok(Event::Delete(s)) => {
                        write().remove(&of(&s));
                        changed.notify_one();
                    }
                    Err(e) => tracing::warn!(error = %e, kind = "Secret", "watch error; retrying"),
                }
            }
        });
        cache
    }

    /// Waits for the first complete list.
    pub async fn ready(&self) -> bool {
        self.ready.clone().wait_for(|r| *r).await.is_ok()
    }

    fn read(&self) -> std::sync::RwLockReadGuard<'_, Entries> {
        self.entries.read().unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Every cached Secret.
    pub fn all(&self) -> Vec<Arc<CachedSecret>> {
        self.read().values().cloned().collect()
    }

    /// One cached Secret.
    pub fn get(&self, namespace: &str, name: &str) -> Option<Arc<CachedSecret>> {
        self.read().get(&(namespace.to_owned(), name.to_owned())).cloned()
    }
}
