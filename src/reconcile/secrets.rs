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

/// Annotation the operator's cache puts on a trimmed Secret (never written to the cluster):
/// the digest of the data and owner references the API server returned.
pub const OBSERVED_DIGEST: &str = "oidc-operator.dev/observed-digest";

/// A digest of what the operator writes in a Secret: its data and owner references.
pub fn digest(secret: &Secret) -> String {
    use sha2::{Digest, Sha256};
    let mut h = Sha256::new();
    for (k, v) in secret.data.iter().flatten() {
        for part in [k.as_bytes(), &v.0] {
            h.update((part.len() as u64).to_be_bytes());
            h.update(part);
        }
    }
    for o in secret.metadata.owner_references.iter().flatten() {
        let flags = [o.controller.map(u8::from), o.block_owner_deletion.map(u8::from)];
        for part in [o.api_version.as_bytes(), o.kind.as_bytes(), o.name.as_bytes(), o.uid.as_bytes()] {
            h.update((part.len() as u64).to_be_bytes());
            h.update(part);
        }
        h.update(format!("{flags:?}"));
    }
    h.finalize().iter().map(|b| format!("{b:02x}")).collect()
}

/// Data a cached Secret keeps: what the operator reads back (credentials, key rings).
const READ_BACK: [&str; 3] = ["client_id", "client_secret", KEYRING];

/// Trims a Secret for the operator's cache: the digest of its content replaces the data the
/// operator never reads back (issuer, discovery URL, CA bundle) and its owner references, and
/// metadata it never reads goes. With 10,000 clients this is a good part of the operator's memory.
pub fn trim_for_cache(secret: &mut Secret) {
    let digest = digest(secret);
    let m = &mut secret.metadata;
    m.owner_references = None;
    m.managed_fields = None;
    m.creation_timestamp = None;
    m.uid = None;
    m.annotations = Some(BTreeMap::from([(OBSERVED_DIGEST.to_owned(), digest)]));
    if let Some(data) = secret.data.as_mut() {
        data.retain(|k, _| READ_BACK.contains(&k.as_str()));
    }
}

/// Whether the observed Secret must be (re)written to be `wanted`: missing, other data, or
/// another owner. A trimmed (cached) Secret is compared by digest.
pub fn needs_write(observed: Option<&Secret>, wanted: &Secret) -> bool {
    let Some(s) = observed else { return true };
    match s.metadata.annotations.as_ref().and_then(|a| a.get(OBSERVED_DIGEST)) {
        Some(d) => *d != digest(wanted),
        None => s.data != wanted.data || s.metadata.owner_references != wanted.metadata.owner_references,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::keys::{KeyVersion, SigningAlgorithm};

    #[test]
    fn round_trips() {
        let v = KeyVersion::generate(SigningAlgorithm::ES256, 1).unwrap();
        let ring = KeyRing { current: v.clone(), next: v, retired: vec![], rotated_at: 1 };
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
        let wanted = client_secret("ns", "n", "app", Some("uid-1"), &content);
        assert!(needs_write(None, &wanted));
        assert!(!needs_write(Some(&wanted), &wanted));
        let public_secret = client_secret("ns", "n", "app", Some("uid-1"), &public);
        assert!(needs_write(Some(&public_secret), &wanted), "data differs");
        assert!(needs_write(Some(&client_secret("ns", "n", "app", Some("uid-2"), &content)), &wanted), "owner differs");
        // The cache keeps credentials and a digest of the rest.
        let mut cached = wanted.clone();
        trim_for_cache(&mut cached);
        assert_eq!(read_credentials(&cached), Some(creds.clone()));
        assert!(text(&cached, "issuer").is_none() && cached.metadata.owner_references.is_none());
        assert!(!needs_write(Some(&cached), &wanted));
        let mut other_issuer = public_secret.clone();
        trim_for_cache(&mut other_issuer);
        assert!(needs_write(Some(&other_issuer), &wanted));
        let mut other_owner = client_secret("ns", "n", "app", Some("uid-2"), &content);
        trim_for_cache(&mut other_owner);
        assert!(needs_write(Some(&other_owner), &wanted));
        let mut ring_cached = key_secret("ns", "k", &ring).unwrap();
        trim_for_cache(&mut ring_cached);
        assert_eq!(read_key_ring(&ring_cached), Some(ring));
    }
}
