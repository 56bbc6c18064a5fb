//! The serving CA of the self-signed certificate, kept in a Secret in the operator's namespace
//! so that every replica and every restart serves under the same CA, and clients can trust it
//! (`kubectl get secret oidc-operator-ca -o jsonpath='{.data.ca\.crt}'`).

use std::collections::BTreeMap;

use k8s_openapi::ByteString;
use k8s_openapi::api::core::v1::Secret;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use kube::Client;
use kube::api::{Api, PostParams};

use crate::reconcile::secrets::MANAGED_BY;
use crate::server::tls::{CaPem, OPERATOR_CA, TlsError};

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

fn read(secret: &Secret, namespace: &str, name: &str) -> Result<CaPem, CaError> {
    let field = |field: &'static str| {
        secret
            .data
            .as_ref()
            .and_then(|d| d.get(field))
            .and_then(|b| String::from_utf8(b.0.clone()).ok())
            .ok_or(CaError::Field { namespace: namespace.to_owned(), name: name.to_owned(), field })
    };
    Ok(CaPem { cert_pem: field("ca.crt")?, key_pem: field("ca.key")?, common_name: OPERATOR_CA })
}

/// Loads the CA from the Secret, creating both on first use. Two replicas starting together
/// agree: the one whose create fails with a conflict reads the other's.
pub async fn load_or_create(client: Client, namespace: &str, name: &str) -> Result<CaPem, CaError> {
    let api: Api<Secret> = Api::namespaced(client, namespace);
    let err = |source| CaError::Api { namespace: namespace.to_owned(), name: name.to_owned(), source };
    if let Some(s) = api.get_opt(name).await.map_err(err)? {
        return read(&s, namespace, name);
    }
    let ca = CaPem::generate(OPERATOR_CA)?;
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
        ])),
        ..Secret::default()
    };
    match api.create(&PostParams::default(), &secret).await {
        Ok(_) => Ok(ca),
        Err(kube::Error::Api(s)) if s.code == 409 => read(&api.get(name).await.map_err(err)?, namespace, name),
        Err(e) => Err(err(e)),
    }
}
