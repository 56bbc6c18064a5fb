//! The Secrets the operator owns: key rings and client credentials, encoded and decoded.
//! Pure: the controllers apply what these functions build.

use std::collections::BTreeMap;

use k8s_openapi::ByteString;
use k8s_openapi::api::core::v1::Secret;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, OwnerReference};

use crate::credentials::ClientCredentials;
use crate::keys::ring::KeyRing;

/// Label on every Secret the operator manages.
pub const MANAGED_BY: (&str, &str) = ("app.kubernetes.io/managed-by", "oidc-operator");
/// Label naming the OidcKey a key-ring Secret belongs to.
pub const KEY_LABEL: &str = "oidc-operator.dev/key";
/// Label naming the OidcClient a credentials Secret belongs to.
pub const CLIENT_LABEL: &str = "oidc-operator.dev/client";
/// Data key of a key ring.
pub const KEYRING: &str = "keyring.json";

/// The Secret name of a key's ring.
pub fn key_secret_name(key: &str) -> String {
    format!("oidc-key-{key}")
}

fn labels(kind_label: &str, name: &str) -> BTreeMap<String, String> {
    [(MANAGED_BY.0.to_owned(), MANAGED_BY.1.to_owned()), (kind_label.to_owned(), name.to_owned())].into()
}

/// A key ring as a Secret. No owner reference: key material outlives its OidcKey until the
/// operator decides it is no longer needed.
pub fn key_secret(namespace: &str, key: &str, ring: &KeyRing) -> Result<Secret, serde_json::Error> {
    Ok(Secret {
        metadata: ObjectMeta {
            name: Some(key_secret_name(key)),
            namespace: Some(namespace.to_owned()),
            labels: Some(labels(KEY_LABEL, key)),
            ..ObjectMeta::default()
        },
        type_: Some("Opaque".into()),
        data: Some([(KEYRING.to_owned(), ByteString(serde_json::to_vec(ring)?))].into()),
        ..Secret::default()
    })
}

/// What a client's application mounts: `client_id`, `client_secret` (confidential clients),
/// the issuer and discovery URL of the provider serving it, and the CA bundle to trust.
pub struct ClientSecretContent<'a> {
    pub credentials: &'a ClientCredentials,
    pub confidential: bool,
    pub issuer: Option<&'a str>,
    pub ca_bundle: Option<&'a str>,
}

/// A client's credentials as a Secret owned by the OidcClient.
pub fn client_secret(
    namespace: &str,
    secret_name: &str,
    client: &str,
    owner_uid: Option<&str>,
    content: &ClientSecretContent<'_>,
) -> Secret {
    let mut data: BTreeMap<String, ByteString> = BTreeMap::new();
    data.insert("client_id".into(), ByteString(content.credentials.client_id.clone().into_bytes()));
    if let Some(secret) = content.credentials.client_secret.as_ref().filter(|_| content.confidential) {
        data.insert("client_secret".into(), ByteString(secret.clone().into_bytes()));
    }
    if let Some(issuer) = content.issuer {
        data.insert("issuer".into(), ByteString(issuer.as_bytes().to_vec()));
        let discovery = crate::paths::ProviderEndpoint::Discovery.url(issuer);
        data.insert("discovery_url".into(), ByteString(discovery.into_bytes()));
    }
    if let Some(ca) = content.ca_bundle {
        data.insert("ca.crt".into(), ByteString(ca.as_bytes().to_vec()));
    }
    Secret {
        metadata: ObjectMeta {
            name: Some(secret_name.to_owned()),
            namespace: Some(namespace.to_owned()),
            labels: Some(labels(CLIENT_LABEL, client)),
            owner_references: owner_uid.map(|uid| {
                vec![OwnerReference {
                    api_version: format!("{}/{}", crate::api::GROUP, crate::api::VERSION),
                    kind: "OidcClient".into(),
                    name: client.to_owned(),
                    uid: uid.to_owned(),
                    controller: Some(true),
                    block_owner_deletion: Some(true),
                }]
            }),
            ..ObjectMeta::default()
        },
        type_: Some("Opaque".into()),
        data: Some(data),
        ..Secret::default()
    }
}

fn text(secret: &Secret, key: &str) -> Option<String> {
    secret.data.as_ref()?.get(key).and_then(|b| String::from_utf8(b.0.clone()).ok())
}

/// Reads a key ring Secret.
pub fn read_key_ring(secret: &Secret) -> Option<KeyRing> {
    serde_json::from_slice(&secret.data.as_ref()?.get(KEYRING)?.0).ok()
}

/// Reads client credentials from a credentials Secret.
pub fn read_credentials(secret: &Secret) -> Option<ClientCredentials> {
    Some(ClientCredentials { client_id: text(secret, "client_id")?, client_secret: text(secret, "client_secret") })
}

/// The label value naming the object a managed Secret belongs to.
pub fn owner_label<'a>(secret: &'a Secret, label: &str) -> Option<&'a str> {
    let labels = secret.metadata.labels.as_ref()?;
    (labels.get(MANAGED_BY.0).map(String::as_str) == Some(MANAGED_BY.1)).then_some(())?;
    labels.get(label).map(String::as_str)
}

/// A digest of what the operator writes in a Secret: its data and owner references.
pub fn digest(secret: &Secret) -> [u8; 32] {
    use sha2::{Digest, Sha256};
    let mut h = Sha256::new();
    let mut part = |bytes: &[u8]| {
        h.update((bytes.len() as u64).to_be_bytes());
        h.update(bytes);
    };
    for (k, v) in secret.data.iter().flatten() {
        part(k.as_bytes());
        part(&v.0);
    }
    for o in secret.metadata.owner_references.iter().flatten() {
        for field in [o.api_version.as_str(), o.kind.as_str(), o.name.as_str(), o.uid.as_str()] {
            part(field.as_bytes());
        }
        part(&[u8::from(o.controller == Some(true)), u8::from(o.block_owner_deletion == Some(true))]);
    }
    h.finalize().into()
}

/// Whose a managed Secret is.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum SecretOwner {
    Key(String),
    Client(String),
}

/// What the operator keeps of a managed Secret: whose it is, what it reads back (credentials or
/// a key ring) and a digest of the rest. A full `Secret` costs several times more (its maps
/// allocate whole B-tree nodes), which at 10,000 clients is a good part of the operator's memory.
#[derive(Clone, Debug, PartialEq)]
pub struct CachedSecret {
    pub namespace: String,
    pub name: String,
    pub resource_version: Option<String>,
    pub owner: SecretOwner,
    pub credentials: Option<ClientCredentials>,
    pub key_ring: Option<KeyRing>,
    pub digest: [u8; 32],
}

impl CachedSecret {
    /// The cache entry of a managed Secret; `None` for Secrets that are neither a key ring nor
    /// client credentials (the CA Secret).
    pub fn of(secret: &Secret) -> Option<CachedSecret> {
        let owner = match (owner_label(secret, KEY_LABEL), owner_label(secret, CLIENT_LABEL)) {
            (Some(key), _) => SecretOwner::Key(key.to_owned()),
            (None, Some(client)) => SecretOwner::Client(client.to_owned()),
            (None, None) => return None,
        };
        Some(CachedSecret {
            namespace: secret.metadata.namespace.clone()?,
            name: secret.metadata.name.clone()?,
            resource_version: secret.metadata.resource_version.clone(),
            credentials: matches!(owner, SecretOwner::Client(_)).then(|| read_credentials(secret)).flatten(),
            key_ring: matches!(owner, SecretOwner::Key(_)).then(|| read_key_ring(secret)).flatten(),
            owner,
            digest: digest(secret),
        })
    }
}

/// Whether the observed Secret must be (re)written to be `wanted`: missing, other data, or
/// another owner.
pub fn needs_write(observed: Option<&CachedSecret>, wanted: &Secret) -> bool {
    observed.is_none_or(|s| s.digest != digest(wanted))
}

/// The credentials Secrets to collect in one pass: a client's Secret whose client is gone,
/// or that its client no longer names once the Secret it names now exists. At most `budget`
/// of them, so a pile of orphans (thousands of deleted clients) is collected a slice per
/// pass and never holds back the snapshot every namespace waits for.
pub fn stale_credentials(
    secrets: &[std::sync::Arc<CachedSecret>],
    clients: &std::collections::HashMap<crate::api::ObjectKey, &crate::api::OidcClient>,
    exists: impl Fn(&str, &str) -> bool,
    budget: usize,
) -> Vec<(std::sync::Arc<CachedSecret>, crate::api::ObjectKey)> {
    secrets
        .iter()
        .filter_map(|s| {
            let SecretOwner::Client(client) = &s.owner else { return None };
            let key = crate::api::ObjectKey::new(s.namespace.clone(), client.clone());
            let stale = match clients.get(&key) {
                None => true,
                Some(c) => {
                    let current = c.credentials_name();
                    current != s.name && exists(&s.namespace, &current)
                }
            };
            stale.then(|| (std::sync::Arc::clone(s), key))
        })
        .take(budget)
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::keys::{KeyVersion, SigningAlgorithm};

    #[test]
    fn round_trips() {
        let v = KeyVersion::generate(SigningAlgorithm::ES256, 1).unwrap();
        let ring = KeyRing::new(v.clone(), v, 1);
        let s = key_secret("ns", "k", &ring).unwrap();
        assert_eq!(s.metadata.name.as_deref(), Some("oidc-key-k"));
        assert_eq!(read_key_ring(&s), Some(ring.clone()));
        assert_eq!(owner_label(&s, KEY_LABEL), Some("k"));
        let creds = ClientCredentials { client_id: "id".into(), client_secret: Some("sec".into()) };
        let content = ClientSecretContent {
            credentials: &creds,
            confidential: true,
            issuer: Some("https://i/p"),
            ca_bundle: None,
        };
        let s = client_secret("ns", "app-oidc-client", "app", Some("uid-1"), &content);
        assert_eq!(read_credentials(&s), Some(creds.clone()));
        assert_eq!(text(&s, "discovery_url").as_deref(), Some("https://i/p/.well-known/openid-configuration"));
        assert_eq!(s.metadata.owner_references.unwrap()[0].uid, "uid-1");
        let public = ClientSecretContent { confidential: false, ..content };
        assert!(text(&client_secret("ns", "n", "app", None, &public), "client_secret").is_none());
        // The cache keeps owner, credentials or ring, and a digest of the rest.
        let wanted = client_secret("ns", "n", "app", Some("uid-1"), &content);
        let cached = CachedSecret::of(&wanted).unwrap();
        assert_eq!(
            (cached.owner.clone(), cached.credentials.clone()),
            (SecretOwner::Client("app".into()), Some(creds.clone()))
        );
        assert!(needs_write(None, &wanted));
        assert!(!needs_write(Some(&cached), &wanted));
        let public_secret = CachedSecret::of(&client_secret("ns", "n", "app", Some("uid-1"), &public)).unwrap();
        assert!(needs_write(Some(&public_secret), &wanted), "data differs");
        let other_owner = CachedSecret::of(&client_secret("ns", "n", "app", Some("uid-2"), &content)).unwrap();
        assert!(needs_write(Some(&other_owner), &wanted), "owner differs");
        let ring_cached = CachedSecret::of(&key_secret("ns", "k", &ring).unwrap()).unwrap();
        assert_eq!((ring_cached.owner, ring_cached.key_ring), (SecretOwner::Key("k".into()), Some(ring)));
        let unrelated =
            Secret { metadata: ObjectMeta { name: Some("ca".into()), ..ObjectMeta::default() }, ..Secret::default() };
        assert_eq!(CachedSecret::of(&unrelated), None);
    }

    #[test]
    fn orphaned_credentials_are_collected_a_bounded_slice_per_pass() {
        let secret = |ns: &str, name: &str, client: &str| {
            std::sync::Arc::new(CachedSecret {
                namespace: ns.into(),
                name: name.into(),
                resource_version: None,
                owner: SecretOwner::Client(client.into()),
                credentials: None,
                key_ring: None,
                digest: [0; 32],
            })
        };
        let live: crate::api::OidcClient = serde_json::from_value(serde_json::json!({
            "apiVersion": "oidc-operator.dev/v1alpha1", "kind": "OidcClient",
            "metadata": {"name": "live", "namespace": "a"}, "spec": {"secretName": "live-new"}
        }))
        .unwrap();
        let clients = [(crate::api::ObjectKey::new("a", "live"), &live)].into_iter().collect();
        let mut secrets: Vec<_> = (0..40).map(|i| secret("b", &format!("gone-{i}"), &format!("gone-{i}"))).collect();
        secrets.push(secret("a", "live-old", "live"));
        let none_exist = |_: &str, _: &str| false;
        let picked = stale_credentials(&secrets, &clients, none_exist, 16);
        assert_eq!(picked.len(), 16, "bounded per pass");
        assert!(picked.iter().all(|(s, _)| s.name.starts_with("gone-")));
        // The old Secret of a renamed client goes only once its new one exists.
        let live_only = &secrets[40..];
        assert!(stale_credentials(live_only, &clients, none_exist, 16).is_empty());
        assert_eq!(stale_credentials(live_only, &clients, |_, n| n == "live-new", 16).len(), 1);
        assert!(stale_credentials(&secrets, &clients, none_exist, 0).is_empty());
    }
}
