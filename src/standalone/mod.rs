//! Standalone mode: the file-backed shell. Manifests come from a folder, generated key
//! material and credentials live as 0600 files in a state folder, and the same directory and
//! handlers as on a cluster serve the protocol.

pub mod manifests;
mod report;
pub mod state;

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration as StdDuration;

use crate::clock::{unix_now, unix_now_ms};
use crate::credentials;
use crate::directory::{self, ExternalUrl, IssuedBy, Materials, ObjectKey, SharedDirectory};
use crate::keys::KeyVersion;
use crate::keys::ring::KeyPolicy;
use crate::keys::rotation;
use crate::login::external::IssuerRegistry;
use crate::metrics::Metrics;
use crate::server;
use crate::sessions::SessionStore;
use state::StateDir;

/// Flags of `oidc-operator standalone`.
#[derive(clap::Args, Debug, Clone)]
pub struct Options {
    /// Folder of YAML/JSON manifests of the six kinds (read recursively, reloaded on change).
    #[arg(long)]
    pub manifests: PathBuf,
    /// Folder for generated key material, client credentials and the TLS CA (files are 0600).
    #[arg(long, default_value = ".oidc-operator")]
    pub state: PathBuf,
    /// How often manifests are checked for changes and keys for due rotations, in milliseconds
    /// (SIGHUP reloads at once).
    #[arg(long, default_value_t = 1000)]
    pub poll_ms: u64,
    /// Serving: addresses, TLS, external URL, login and protocol settings.
    #[command(flatten)]
    pub serve: server::startup::ServeArgs,
}

/// Why standalone mode stopped.
#[derive(Debug, thiserror::Error)]
pub enum StandaloneError {
    #[error("manifest folder {path}: {reason}")]
    Manifests { path: PathBuf, reason: String },
    #[error(transparent)]
    State(#[from] state::StateError),
    #[error(transparent)]
    Start(#[from] server::startup::StartError),
    #[error("generating key material: {0}")]
    Keys(#[from] crate::keys::KeyError),
    #[error("generating credentials: {0}")]
    Random(#[from] credentials::RandomError),
    #[error("starting the runtime: {0}")]
    Runtime(std::io::Error),
}

/// Runs standalone mode until interrupted.
pub fn main(options: Options) -> Result<(), StandaloneError> {
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .map_err(StandaloneError::Runtime)?
        .block_on(run(options))
}

async fn run(options: Options) -> Result<(), StandaloneError> {
    if !options.manifests.is_dir() {
        return Err(StandaloneError::Manifests { path: options.manifests.clone(), reason: "is not a folder".into() });
    }
    let state = StateDir::open(&options.state)?;
    let started =
        server::startup::start(&options.serve, server::startup::CaSource::Dir(&state.tls_dir()), "standalone").await?;
    let (shared, metrics, issuers, tokens) = (
        Arc::clone(&started.app.directory),
        Arc::clone(&started.app.metrics),
        Arc::clone(&started.app.issuers),
        started.app.tokens.clone(),
    );
    let external = started.external;

    let mut hangup =
        tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup()).map_err(StandaloneError::Runtime)?;
    let materials = shell_materials(&state)?;
    let mut shell = Shell {
        options,
        state,
        external,
        shared,
        metrics,
        materials,
        // No API server answers TokenReviews here (set again with every load).
        inputs: directory::Inputs {
            policy: directory::Policy { token_reviews: false, ..directory::Policy::default() },
            ..directory::Inputs::default()
        },
        last_files: None,
        last_good: manifests::LastGood::new(),
        complete: false,
        missing_since: Default::default(),
        broken_files: Default::default(),
        reporter: report::Reporter::default(),
        issuers,
        tokens,
    };
    let mut force = true;
    loop {
        shell.tick(force).await?;
        force = false;
        let wait = tokio::time::sleep(StdDuration::from_millis(shell.options.poll_ms.max(50)));
        tokio::select! {
            _ = wait => {}
            _ = hangup.recv() => {
                tracing::info!("SIGHUP: reloading manifests");
                force = true;
            }
            _ = tokio::signal::ctrl_c() => {
                tracing::info!("interrupted; stopping");
                return Ok(());
            }
        }
    }
}

/// The standalone control loop's state.
struct Shell {
    options: Options,
    state: StateDir,
    external: ExternalUrl,
    shared: Arc<SharedDirectory>,
    metrics: Arc<Metrics>,
    materials: Materials,
    inputs: directory::Inputs,
    last_files: Option<Vec<(PathBuf, String)>>,
    last_good: manifests::LastGood,
    /// Files that had a problem at the last load.
    broken_files: std::collections::BTreeSet<std::path::PathBuf>,
    /// Whether the last load had no problem at all: only then may a missing client's
    /// credentials be deleted.
    complete: bool,
    /// Since when each client with credentials has not been declared (unix seconds).
    missing_since: std::collections::BTreeMap<ObjectKey, i64>,
    reporter: report::Reporter,
    issuers: Arc<IssuerRegistry>,
    tokens: SessionStore,
}

impl Shell {
    /// Reloads manifests if they changed, applies due rotations, and rebuilds the snapshot
    /// when anything changed. A broken manifest folder keeps the last snapshot serving.
    async fn tick(&mut self, force: bool) -> Result<(), StandaloneError> {
        let files = match manifests::read_folder(&self.options.manifests) {
            Ok(f) => f,
            Err(e) => {
                tracing::warn!(folder = %self.options.manifests.display(), error = %e, "cannot read manifests; keeping the last snapshot");
                return Ok(());
            }
        };
        let changed = force || self.last_files.as_ref() != Some(&files);
        let now = unix_now();
        if changed {
            let (inputs, problems, good) = manifests::load(&files, &self.last_good);
            // One line per problem, on standard output with the readiness table; a file whose
            // problems are gone says so.
            for p in &problems {
                println!("manifest error: {p}");
            }
            let broken: std::collections::BTreeSet<std::path::PathBuf> =
                problems.iter().map(|p| p.file.clone()).collect();
            for fixed in self.broken_files.difference(&broken) {
                if fixed.exists() {
                    println!("manifest resolved: {}", fixed.display());
                }
            }
            self.broken_files = broken;
            self.inputs = inputs;
            self.inputs.policy.max_token_ttl = self.options.serve.max_token_ttl;
            self.inputs.policy.token_reviews = false;
            // Any problem may hide what a file declares (broken YAML, a typo in `kind`, a
            // field refused on the first load): remove nothing until every file reads cleanly.
            self.complete = problems.is_empty();
            self.last_good = good;
            self.last_files = Some(files);
        }
        let mut materials_changed =
            ensure_materials(&self.state, &self.metrics, &self.inputs, &mut self.materials, now)?;
        if self.complete {
            materials_changed |=
                forget_removed_clients(&self.state, &self.inputs, &mut self.materials, &mut self.missing_since, now)?;
        }
        let health_changed = self.refresh_issuers(now);
        if !(changed || materials_changed || health_changed) {
            return Ok(());
        }
        let previous = self.shared.load();
        let started = std::time::Instant::now();
        self.materials.identities_per_namespace = Some(self.issuers.limits().max_identities_per_namespace);
        let dir = directory::build(&self.inputs, &self.materials, &self.external, now, previous.as_deref());
        let took = started.elapsed();
        self.keep_holders(&dir)?;
        self.reporter.report(&dir, &self.inputs, &self.state, &self.metrics);
        self.metrics.snapshot_built(unix_now_ms(), took);
        // Tokens of deleted or replaced identities die with them.
        if let Some(previous) = previous {
            for old in previous.identities_by_id.values() {
                let kept = dir.issuing_identity(&IssuedBy { id: &old.id, key: &old.key, uid: &old.uid });
                if kept.is_none() {
                    let n = self.tokens.revoke_identity(&old.key, None);
                    tracing::info!(identity = %old.key, revoked = n, "identity removed; its access tokens are revoked");
                }
            }
        }
        self.shared.store(dir);
        Ok(())
    }

    /// Records which object holds each identity id the snapshot serves, in the state folder
    /// before the snapshot serves: after a restart the holder keeps its id against an older
    /// object that claimed it meanwhile (manifests' own `status` is not trusted for this).
    fn keep_holders(&mut self, dir: &directory::Directory) -> Result<(), StandaloneError> {
        let holders: std::collections::BTreeMap<String, ObjectKey> =
            dir.identities_by_id.iter().map(|(id, i)| (id.clone(), i.key.clone())).collect();
        if holders != self.materials.identity_holders {
            self.state.save_identity_holders(&holders)?;
            self.materials.identity_holders = holders;
        }
        Ok(())
    }

    /// Starts background fetches of the issuers identities name (first use, or keys older
    /// than [`KEYS_MAX_AGE`]) and records what the finished ones gave. Returns whether any
    /// issuer's health changed. Never waits for a fetch.
    fn refresh_issuers(&mut self, now: i64) -> bool {
        let identities = self.inputs.identities.iter().map(|i| directory::issuer_source(&i.spec));
        let clients = self.inputs.clients.iter().filter_map(|c| directory::client_keys_source(&c.spec));
        let sources = identities.chain(clients).collect();
        let refetch = self.options.serve.issuer_refetch_interval.max(1);
        let health = crate::login::external::refresh_health(&self.issuers, sources, refetch, now);
        let changed = health != self.materials.issuer_health;
        self.materials.issuer_health = health;
        changed
    }
}

/// Rings nothing requires are marked, kept for their verification window, then deleted
/// (`keys::retention`), as the operator does with their Secrets. Whether anything changed.
fn retire_orphaned_rings(
    state: &StateDir,
    inputs: &directory::Inputs,
    m: &mut Materials,
    now: i64,
) -> Result<bool, StandaloneError> {
    use crate::keys::retention::{self, Retention};
    let required = directory::required_keys(inputs);
    let declared: std::collections::BTreeSet<ObjectKey> =
        inputs.keys.iter().map(|k| ObjectKey::of(&k.metadata)).collect();
    let mut changed = false;
    let orphans: Vec<ObjectKey> =
        m.key_rings.keys().filter(|k| !required.contains_key(*k) && !declared.contains(*k)).cloned().collect();
    for key in orphans {
        let Some(ring) = m.key_rings.get(&key) else { continue };
        match retention::orphaned(ring, now) {
            Retention::Keep { .. } => {}
            Retention::Mark(marked) => {
                state.save_key(&key, &marked)?;
                tracing::info!(key = %key, "key ring no longer used; kept until its verification window ends");
                m.key_rings.insert(key, marked);
                changed = true;
            }
            Retention::Delete => {
                state.delete_key(&key)?;
                tracing::info!(key = %key, "unused key ring deleted after its verification window");
                m.key_rings.remove(&key);
                changed = true;
            }
        }
    }
    Ok(changed)
}

/// Records the order in which identities and clients first appear, and forgets those that
/// are gone (one removed and added again is a newcomer). Whether anything changed.
fn record_first_seen(
    inputs: &directory::Inputs,
    first_seen: &mut std::collections::BTreeMap<(crate::api::Kind, ObjectKey), i64>,
) -> bool {
    use crate::api::Kind;
    let present: std::collections::BTreeSet<(Kind, ObjectKey)> = inputs
        .identities
        .iter()
        .map(|i| (Kind::IdentityOidcAuth, ObjectKey::of(&i.metadata)))
        .chain(inputs.clients.iter().map(|c| (Kind::OidcClient, ObjectKey::of(&c.metadata))))
        .collect();
    let before = first_seen.len();
    first_seen.retain(|k, _| present.contains(k));
    let mut changed = first_seen.len() != before;
    // An arrival number, not a time: two objects seen within one second stay ordered.
    let mut next = first_seen.values().max().map_or(0, |m| m.saturating_add(1));
    for k in present {
        if let std::collections::btree_map::Entry::Vacant(e) = first_seen.entry(k) {
            e.insert(next);
            next = next.saturating_add(1);
            changed = true;
        }
    }
    changed
}

/// How long a client must stay undeclared before its credentials are deleted: a file caught
/// empty or half-written by an editor does not cost a client its secret.
const CLIENT_REMOVAL_GRACE: i64 = 10;

/// Deletes the credentials of clients no manifest has declared for
/// [`CLIENT_REMOVAL_GRACE`] seconds, as a cluster deletes a client's Secret with it: a
/// client declared again later gets new credentials, never the old secret. Returns whether
/// anything was deleted.
fn forget_removed_clients(
    state: &StateDir,
    inputs: &directory::Inputs,
    m: &mut Materials,
    missing_since: &mut std::collections::BTreeMap<ObjectKey, i64>,
    now: i64,
) -> Result<bool, StandaloneError> {
    let declared: std::collections::BTreeSet<ObjectKey> =
        inputs.clients.iter().map(|c| ObjectKey::of(&c.metadata)).collect();
    missing_since.retain(|k, _| !declared.contains(k) && m.credentials.contains_key(k));
    for k in m.credentials.keys().filter(|k| !declared.contains(*k)) {
        missing_since.entry(k.clone()).or_insert(now);
    }
    let removed: Vec<ObjectKey> = missing_since
        .iter()
        .filter(|(_, since)| now - **since >= CLIENT_REMOVAL_GRACE)
        .map(|(k, _)| k.clone())
        .collect();
    for key in &removed {
        state.delete_client(key)?;
        m.credentials.remove(key);
        missing_since.remove(key);
        tracing::info!(client = %key, "the credentials of a removed client are deleted");
    }
    Ok(!removed.is_empty())
}

fn shell_materials(state: &StateDir) -> Result<Materials, StandaloneError> {
    Ok(state.load()?)
}

/// Creates what is missing and rotates what is due, persisting every change before it is
/// used. Returns whether anything changed.
fn ensure_materials(
    state: &StateDir,
    metrics: &Metrics,
    inputs: &directory::Inputs,
    m: &mut Materials,
    now: i64,
) -> Result<bool, StandaloneError> {
    {
        let mut changed = false;
        for (key, spec) in directory::required_keys(inputs) {
            let policy = KeyPolicy::from(&spec);
            let ring = m.key_rings.get(&key);
            if let Some(next) = rotation::advance(ring, &policy, now, |alg| KeyVersion::generate(alg, now))? {
                state.save_key(&key, &next)?;
                tracing::info!(key = %key, current_kid = %next.current.kid, next_kid = %next.next.kid, "key ring updated");
                metrics.rotations.inc();
                m.key_rings.insert(key, next);
                changed = true;
            }
        }
        changed |= retire_orphaned_rings(state, inputs, m, now)?;
        for client in &inputs.clients {
            let key = ObjectKey::of(&client.metadata);
            let secret = client.spec.uses_secret();
            if let Some(creds) =
                credentials::reconcile(m.credentials.get(&key), client.spec.client_id.as_deref(), secret)?
            {
                state.save_client(&key, &creds)?;
                m.credentials.insert(key, creds);
                changed = true;
            }
        }
        if record_first_seen(inputs, &mut m.first_seen) {
            state.save_first_seen(&m.first_seen)?;
            changed = true;
        }
        for identity in &inputs.identities {
            let key = ObjectKey::of(&identity.metadata);
            if identity.spec.identity_id.is_none() && !m.identity_ids.contains_key(&key) {
                let id = crate::keys::random_uuid()?;
                state.save_identity(&key, &id)?;
                m.identity_ids.insert(key, id);
                changed = true;
            }
        }
        Ok(changed)
    }
}
