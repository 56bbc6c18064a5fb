//! The seven JWS signing algorithms of the reference's discovery document.

use std::fmt;

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// A JWS signing algorithm (RFC 7518 names; `EdDSA` is Ed25519, RFC 8037).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize, JsonSchema)]
pub enum SigningAlgorithm {
    #[default]
    RS256,
    RS384,
    RS512,
    ES256,
    ES384,
    ES512,
    EdDSA,
}

impl SigningAlgorithm {
    /// Every algorithm, in the order of the reference's discovery sample.
    pub const ALL: [SigningAlgorithm; 7] =
        [Self::RS256, Self::RS384, Self::RS512, Self::ES256, Self::ES384, Self::ES512, Self::EdDSA];

    /// The `alg` value of JWS headers and JWKs.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::RS256 => "RS256",
            Self::RS384 => "RS384",
            Self::RS512 => "RS512",
            Self::ES256 => "ES256",
            Self::ES384 => "ES384",
            Self::ES512 => "ES512",
            Self::EdDSA => "EdDSA",
        }
    }

    /// Parses a JWS `alg` name; `None` for anything this product does not sign with.
    pub fn from_name(name: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|a| a.as_str() == name)
    }

    /// The key generation parameters rcgen uses for this algorithm.
    pub(crate) fn rcgen(self) -> &'static rcgen::SignatureAlgorithm {
        match self {
            Self::RS256 => &rcgen::PKCS_RSA_SHA256,
            Self::RS384 => &rcgen::PKCS_RSA_SHA384,
            Self::RS512 => &rcgen::PKCS_RSA_SHA512,
            Self::ES256 => &rcgen::PKCS_ECDSA_P256_SHA256,
            Self::ES384 => &rcgen::PKCS_ECDSA_P384_SHA384,
            Self::ES512 => &rcgen::PKCS_ECDSA_P521_SHA512,
            Self::EdDSA => &rcgen::PKCS_ED25519,
        }
    }

    /// The hash length of the algorithm in bytes, used for `at_hash` / `c_hash`
    /// (OpenID Connect Core §3.1.3.6: the left half of the hash of the token).
    pub fn hash_len(self) -> usize {
        match self {
            Self::RS256 | Self::ES256 => 32,
            Self::RS384 | Self::ES384 => 48,
            Self::RS512 | Self::ES512 | Self::EdDSA => 64,
        }
    }
}

impl fmt::Display for SigningAlgorithm {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}
