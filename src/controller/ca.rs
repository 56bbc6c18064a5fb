//! The serving CA of the self-signed certificate, kept in a Secret in the operator's namespace
//! so that every replica and every restart serves under the same CA, and clients can trust it
//! (`kubectl get secret oidc-operator-ca -o jsonpath='{.data.ca\.crt}'`).

use std::collections::BTreeMap;

use k8s_openapi::ByteString;
use k8s_openapi::api::core::v1::Secret;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use kube::Client;
use kube::api::{Api, Patch, PatchParams, PostParams};

use crate::reconcile::secrets::MANAGED_BY;
use crate::server::tls::{CA_NAMES, CaPem, OPERATOR_CA, TlsError, names_text};

/// Why the CA could not be loaded or stored.
#[derive(Debug, thiserror::Error)]
pub enum CaError {
    #[error("Secret {namespace}/{name}: {source}")]
    Api { namespace: String, name: String, source: kube::Error },
    #[error("Secret {namespace}/{name}: data.{field} is missing or not UTF-8")]
    Field { namespace: String, name: String, field: &'static str },
    #[error(transparent)]
    Generate(#[from] TlsError),
}

/// The CA in the Secret, and the names its certificate is constrained to (none for a CA
/// from before name constraints).
fn read(secret: &Secret, namespace: &str, name: &str) -> Result<(CaPem, Option<String>), CaError> {
    let field = |field: &'static str| {
        secret
            .data
            .as_ref()
            .and_then(|d| d.get(field))
            .and_then(|b| String::from_utf8(b.0.clone()).ok())
            .ok_or(CaError::Field { namespace: namespace.to_owned(), name: name.to_owned(), field })
    };
    let ca = CaPem { cert_pem: field("ca.crt")?, key_pem: field("ca.key")?, common_name: OPERATOR_CA };
    Ok((ca, field(CA_NAMES).ok()))
}

/// Loads the CA from the Secret, creating both on first use, its certificate constrained to
/// `names` (the names the serving certificate carries). Two replicas starting together
/// agree: the one whose create fails with a conflict reads the other's. A kept CA whose
/// certificate is constrained to other names (or to none) gets a new certificate from the
/// same key, written back with the Secret's resourceVersion as precondition.
pub async fn load_or_create(client: Client, namespace: &str, name: &str, names: &[String]) -> Result<CaPem, CaError> {
    let api: Api<Secret> = Api::namespaced(client, namespace);
    let err = |source| CaError::Api { namespace: namespace.to_owned(), name: name.to_owned(), source };
    let wanted = names_text(names);
    if let Some(s) = api.get_opt(name).await.map_err(err)? {
        let (kept, constrained) = read(&s, namespace, name)?;
        if constrained.as_deref() == Some(wanted.as_str()) {
            return Ok(kept);
        }
        let ca = kept.constrained_to(names)?;
        let patch = serde_json::json!({
            "metadata": {"resourceVersion": s.metadata.resource_version},
            "data": {
                "ca.crt": ByteString(ca.cert_pem.clone().into_bytes()),
                CA_NAMES: ByteString(wanted.into_bytes()),
            },
        });
        return match api.patch(name, &PatchParams::default(), &Patch::Merge(&patch)).await {
            Ok(_) => Ok(ca),
            // Another replica rewrote it first: serve under what it wrote.
            Err(kube::Error::Api(s)) if s.code == 409 => {
                Ok(read(&api.get(name).await.map_err(err)?, namespace, name)?.0)
            }
            Err(e) => Err(err(e)),
        };
    }
    let ca = CaPem::generate(OPERATOR_CA, names)?;
    let secret = Secret {
        metadata: ObjectMeta {
            name: Some(name.to_owned()),
            namespace: Some(namespace.to_owned()),
            labels: Some(BTreeMap::from([(MANAGED_BY.0.to_owned(), MANAGED_BY.1.to_owned())])),
            ..ObjectMeta::default()
        },
        type_: Some("Opaque".into()),
        data: Some(BTreeMap::from([
            ("ca.crt".to_owned(), ByteString(ca.cert_pem.clone().into_bytes())),
            ("ca.key".to_owned(), ByteString(ca.key_pem.clone().into_bytes())),
            (CA_NAMES.to_owned(), ByteString(wanted.into_bytes())),
        ])),
        ..Secret::default()
    };
    match api.create(&PostParams::default(), &secret).await {
        Ok(_) => Ok(ca),
        Err(kube::Error::Api(s)) if s.code == 409 => Ok(read(&api.get(name).await.map_err(err)?, namespace, name)?.0),
        Err(e) => Err(err(e)),
    }
}
