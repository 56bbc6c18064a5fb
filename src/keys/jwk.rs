//! JSON Web Keys (RFC 7517) for the public halves of signing keys.

use serde::{Deserialize, Serialize};

use super::SigningAlgorithm;

/// A public signing key as published in JWKS: `kty`, `kid`, `alg`, `use=sig` and the key
/// parameters of its type (`n`/`e` for RSA, `crv`/`x`/`y` for EC, `crv`/`x` for OKP).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Jwk {
    pub kty: String,
    pub kid: String,
    pub alg: String,
    #[serde(rename = "use")]
    pub use_: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub n: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub e: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub crv: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub x: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub y: Option<String>,
}

impl Jwk {
    fn base(kty: &str, kid: &str, alg: SigningAlgorithm) -> Self {
        Self {
            kty: kty.into(),
            kid: kid.into(),
            alg: alg.as_str().into(),
            use_: "sig".into(),
            n: None,
            e: None,
            crv: None,
            x: None,
            y: None,
        }
    }

    pub(crate) fn rsa(kid: &str, alg: SigningAlgorithm, n: String, e: String) -> Self {
        Self { n: Some(n), e: Some(e), ..Self::base("RSA", kid, alg) }
    }

    pub(crate) fn ec(kid: &str, alg: SigningAlgorithm, crv: &str, x: String, y: String) -> Self {
        Self { crv: Some(crv.into()), x: Some(x), y: Some(y), ..Self::base("EC", kid, alg) }
    }

    pub(crate) fn okp(kid: &str, x: String) -> Self {
        Self { crv: Some("Ed25519".into()), x: Some(x), ..Self::base("OKP", kid, SigningAlgorithm::EdDSA) }
    }
}

/// A JWK Set (RFC 7517 §5).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct JwkSet {
    pub keys: Vec<Jwk>,
}
