//! The state folder: generated key material, client credentials and identity ids as files
//! (mode 0600), written atomically so a crash never leaves half a key.

use std::collections::BTreeMap;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::api::Kind;
use crate::credentials::ClientCredentials;
use crate::directory::{Materials, ObjectKey};
use crate::files;
use crate::keys::ring::KeyRing;

/// A state file that could not be read or written.
#[derive(Debug, thiserror::Error)]
#[error("state file {path}: {reason}")]
pub struct StateError {
    pub path: PathBuf,
    pub reason: String,
}

/// The state folder.
#[derive(Clone, Debug)]
pub struct StateDir {
    root: PathBuf,
}

const KEYS: &str = "keys";
const CLIENTS: &str = "clients";
const IDENTITIES: &str = "identities";
/// When each identity and client was first seen: who keeps a contested id.
const FIRST_SEEN: &str = "first-seen.json";
/// Which IdentityOidcAuth holds each identity id: who keeps a contested id after a restart
/// (a cluster reads it from the object's status, which a manifest file cannot be trusted with).
const IDENTITY_HOLDERS: &str = "identity-holders.json";

impl StateDir {
    pub fn open(root: &Path) -> Result<Self, StateError> {
        std::fs::create_dir_all(root).map_err(|e| err(root, e))?;
        std::fs::set_permissions(root, std::fs::Permissions::from_mode(0o700)).map_err(|e| err(root, e))?;
        Ok(Self { root: root.to_owned() })
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    pub fn key_path(&self, key: &ObjectKey) -> PathBuf {
        self.root.join(KEYS).join(&key.namespace).join(format!("{}.json", key.name))
    }

    pub fn client_path(&self, key: &ObjectKey) -> PathBuf {
        self.root.join(CLIENTS).join(&key.namespace).join(format!("{}.json", key.name))
    }

    pub fn identity_path(&self, key: &ObjectKey) -> PathBuf {
        self.root.join(IDENTITIES).join(&key.namespace).join(format!("{}.json", key.name))
    }

    pub fn tls_dir(&self) -> PathBuf {
        self.root.join("tls")
    }

    /// Everything stored so far.
    pub fn load(&self) -> Result<Materials, StateError> {
        let mut m = Materials::default();
        for (key, ring) in self.load_kind::<KeyRing>(KEYS)? {
            m.key_rings.insert(key, ring);
        }
        for (key, creds) in self.load_kind::<ClientCredentials>(CLIENTS)? {
            m.credentials.insert(key, creds);
        }
        for (key, id) in self.load_kind::<IdentityFile>(IDENTITIES)? {
            m.identity_ids.insert(key, id.identity_id);
        }
        m.first_seen = self.load_first_seen()?;
        m.identity_holders = self.load_identity_holders()?;
        Ok(m)
    }

    fn load_kind<T: DeserializeOwned>(&self, folder: &str) -> Result<Vec<(ObjectKey, T)>, StateError> {
        let base = self.root.join(folder);
        let mut out = Vec::new();
        let Ok(namespaces) = std::fs::read_dir(&base) else {
            return Ok(out);
        };
        for ns in namespaces {
            let ns = ns.map_err(|e| err(&base, e))?.path();
            if !ns.is_dir() {
                continue;
            }
            for file in std::fs::read_dir(&ns).map_err(|e| err(&ns, e))? {
                let path = file.map_err(|e| err(&ns, e))?.path();
                let (Some(stem), Some("json")) =
                    (path.file_stem().and_then(|s| s.to_str()), path.extension().and_then(|s| s.to_str()))
                else {
                    continue;
                };
                let text = std::fs::read_to_string(&path).map_err(|e| err(&path, e))?;
                let value: T = serde_json::from_str(&text).map_err(|e| err(&path, e))?;
                let namespace = ns.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
                out.push((ObjectKey::new(namespace, stem), value));
            }
        }
        Ok(out)
    }

    pub fn save_key(&self, key: &ObjectKey, ring: &KeyRing) -> Result<(), StateError> {
        write_private(&self.key_path(key), ring)
    }

    /// Deletes a key ring's file (it left its verification window unused).
    pub fn delete_key(&self, key: &ObjectKey) -> Result<(), StateError> {
        let path = self.key_path(key);
        match std::fs::remove_file(&path) {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(err(&path, e)),
        }
    }

    /// Deletes a removed client's credentials file, as a cluster deletes its Secret.
    pub fn delete_client(&self, key: &ObjectKey) -> Result<(), StateError> {
        let path = self.client_path(key);
        match std::fs::remove_file(&path) {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(err(&path, e)),
        }
    }

    pub fn save_client(&self, key: &ObjectKey, creds: &ClientCredentials) -> Result<(), StateError> {
        write_private(&self.client_path(key), creds)
    }

    pub fn save_identity(&self, key: &ObjectKey, identity_id: &str) -> Result<(), StateError> {
        write_private(&self.identity_path(key), &IdentityFile { identity_id: identity_id.to_owned() })
    }

    /// Saves the first-seen times, as `{"<Kind>/<namespace>/<name>": unix seconds}`.
    pub fn save_first_seen(&self, first_seen: &BTreeMap<(Kind, ObjectKey), i64>) -> Result<(), StateError> {
        let flat: BTreeMap<String, i64> = first_seen
            .iter()
            .map(|((kind, k), t)| (format!("{}/{}/{}", kind.as_str(), k.namespace, k.name), *t))
            .collect();
        write_private(&self.root.join(FIRST_SEEN), &flat)
    }

    /// Saves the holders of identity ids, as `{"<identity id>": "<namespace>/<name>"}`.
    pub fn save_identity_holders(&self, holders: &BTreeMap<String, ObjectKey>) -> Result<(), StateError> {
        let flat: BTreeMap<&str, String> =
            holders.iter().map(|(id, k)| (id.as_str(), format!("{}/{}", k.namespace, k.name))).collect();
        write_private(&self.root.join(IDENTITY_HOLDERS), &flat)
    }

    fn load_identity_holders(&self) -> Result<BTreeMap<String, ObjectKey>, StateError> {
        let path = self.root.join(IDENTITY_HOLDERS);
        let text = match std::fs::read_to_string(&path) {
            Ok(t) => t,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(BTreeMap::new()),
            Err(e) => return Err(err(&path, e)),
        };
        let flat: BTreeMap<String, String> = serde_json::from_str(&text).map_err(|e| err(&path, e))?;
        let mut out = BTreeMap::new();
        for (id, object) in flat {
            let (ns, name) = object
                .split_once('/')
                .ok_or_else(|| err(&path, format!("{object:?} (of identity id {id:?}) is not <namespace>/<name>")))?;
            out.insert(id, ObjectKey::new(ns, name));
        }
        Ok(out)
    }

    fn load_first_seen(&self) -> Result<BTreeMap<(Kind, ObjectKey), i64>, StateError> {
        let path = self.root.join(FIRST_SEEN);
        let text = match std::fs::read_to_string(&path) {
            Ok(t) => t,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(BTreeMap::new()),
            Err(e) => return Err(err(&path, e)),
        };
        let flat: BTreeMap<String, i64> = serde_json::from_str(&text).map_err(|e| err(&path, e))?;
        let mut out = BTreeMap::new();
        for (name, t) in flat {
            let mut parts = name.splitn(3, '/');
            if let (Some(kind), Some(ns), Some(obj)) =
                (parts.next().and_then(Kind::from_name), parts.next(), parts.next())
            {
                out.insert((kind, ObjectKey::new(ns, obj)), t);
            }
        }
        Ok(out)
    }
}

#[derive(serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "camelCase")]
struct IdentityFile {
    identity_id: String,
}

fn err(path: &Path, e: impl std::fmt::Display) -> StateError {
    StateError { path: path.to_owned(), reason: e.to_string() }
}

/// Writes JSON to `path` with mode 0600: a temporary file, fsync, then rename.
pub fn write_private<T: Serialize>(path: &Path, value: &T) -> Result<(), StateError> {
    let bytes = serde_json::to_vec_pretty(value).map_err(|e| err(path, e))?;
    files::write_private(path, &bytes).map_err(|e| err(&e.path, e.source))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::keys::{KeyVersion, SigningAlgorithm};

    #[test]
    fn round_trips_with_private_modes() {
        let dir = tempfile::tempdir().unwrap();
        let state = StateDir::open(dir.path()).unwrap();
        let k = ObjectKey::new("ns", "k");
        let v = KeyVersion::generate(SigningAlgorithm::ES256, 1).unwrap();
        let ring = KeyRing::new(v.clone(), v, 1);
        state.save_key(&k, &ring).unwrap();
        let creds = ClientCredentials { client_id: "id".into(), client_secret: Some("s".into()) };
        state.save_client(&k, &creds).unwrap();
        state.save_identity(&k, "uuid").unwrap();
        let holders = BTreeMap::from([("uuid".to_owned(), k.clone())]);
        state.save_identity_holders(&holders).unwrap();
        let mode = std::fs::metadata(state.key_path(&k)).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
        let m = state.load().unwrap();
        assert_eq!(m.key_rings[&k], ring);
        assert_eq!(m.credentials[&k], creds);
        assert_eq!(m.identity_ids[&k], "uuid");
        assert_eq!(m.identity_holders, holders);
    }
}
