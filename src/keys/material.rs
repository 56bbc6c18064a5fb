//! Key material: generation (rcgen), the stored form (PKCS#8) and the parsed signing key.

use std::fmt;

use aws_lc_rs::rand::{SecureRandom, SystemRandom};
use aws_lc_rs::signature::{self as sig, KeyPair};
use base64::Engine;
use serde::{Deserialize, Serialize};

use super::SigningAlgorithm;
use super::jwk::Jwk;

/// Why key material could not be made or used.
#[derive(Debug, thiserror::Error)]
pub enum KeyError {
    #[error("generating a {alg} key failed: {reason}")]
    Generate { alg: SigningAlgorithm, reason: String },
    #[error("key {kid}: stored {alg} key material is not valid: {reason}")]
    Parse { kid: String, alg: SigningAlgorithm, reason: String },
    #[error("signing with key {kid} failed")]
    Sign { kid: String },
}

/// One version of a key, as stored: its id, algorithm, creation time and PKCS#8 private key.
///
/// `Debug` never prints the private key.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct KeyVersion {
    pub kid: String,
    pub alg: SigningAlgorithm,
    /// Unix seconds.
    pub created_at: i64,
    /// PKCS#8 DER of the private key, base64 in the stored form.
    #[serde(with = "b64")]
    pub pkcs8: Vec<u8>,
}

impl fmt::Debug for KeyVersion {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("KeyVersion")
            .field("kid", &self.kid)
            .field("alg", &self.alg)
            .field("created_at", &self.created_at)
            .field("pkcs8", &"[redacted]")
            .finish()
    }
}

mod b64 {
    use base64::Engine;
    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(bytes: &[u8], s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&base64::engine::general_purpose::STANDARD.encode(bytes))
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<u8>, D::Error> {
        let text = String::deserialize(d)?;
        base64::engine::general_purpose::STANDARD.decode(text.trim()).map_err(serde::de::Error::custom)
    }
}

impl KeyVersion {
    /// Generates a fresh key of `alg` (RSA 2048, P-256/384/521, Ed25519) with a random kid.
    pub fn generate(alg: SigningAlgorithm, now: i64) -> Result<Self, KeyError> {
        let pair =
            rcgen::KeyPair::generate_for(alg.rcgen()).map_err(|e| KeyError::Generate { alg, reason: e.to_string() })?;
        Ok(Self { kid: random_kid()?, alg, created_at: now, pkcs8: pair.serialize_der() })
    }

    /// Parses the private key once into a ready-to-sign key.
    pub fn parse(&self) -> Result<SigningKey, KeyError> {
        SigningKey::from_version(self)
    }
}

fn random_kid() -> Result<String, KeyError> {
    random_uuid()
}

/// A random (version 4) UUID: key ids and generated identity ids take OpenBao's shape.
pub fn random_uuid() -> Result<String, KeyError> {
    let mut b = [0u8; 16];
    SystemRandom::new()
        .fill(&mut b)
        .map_err(|_| KeyError::Generate { alg: SigningAlgorithm::RS256, reason: "no randomness".into() })?;
    b[6] = (b[6] & 0x0f) | 0x40;
    b[8] = (b[8] & 0x3f) | 0x80;
    let hex: String = b.iter().map(|x| format!("{x:02x}")).collect();
    Ok(format!("{}-{}-{}-{}-{}", &hex[0..8], &hex[8..12], &hex[12..16], &hex[16..20], &hex[20..32]))
}

enum Pair {
    Rsa(sig::RsaKeyPair, &'static dyn sig::RsaEncoding),
    Ecdsa(sig::EcdsaKeyPair),
    Ed25519(sig::Ed25519KeyPair),
}

/// A parsed private key with its public JWK, ready to sign compact JWS.
pub struct SigningKey {
    kid: String,
    alg: SigningAlgorithm,
    pair: Pair,
    jwk: Jwk,
    /// The encoded JWS header (`alg`, `kid`, `typ`), made once.
    header_b64: String,
    /// The same header with `typ: at+jwt`, for JWT access tokens (RFC 9068 §2.1).
    access_header_b64: String,
}

/// What a signed JWT is, as its header's `typ` says.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum JwtType {
    /// `typ: JWT`: ID tokens.
    IdToken,
    /// `typ: at+jwt`: access tokens (RFC 9068), never taken for an ID token.
    AccessToken,
}

impl fmt::Debug for SigningKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SigningKey").field("kid", &self.kid).field("alg", &self.alg).finish_non_exhaustive()
    }
}

fn b64url(bytes: &[u8]) -> String {
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
}

impl SigningKey {
    fn from_version(v: &KeyVersion) -> Result<Self, KeyError> {
        let err = |reason: String| KeyError::Parse { kid: v.kid.clone(), alg: v.alg, reason };
        let ec = |signing: &'static sig::EcdsaSigningAlgorithm, crv: &str| -> Result<(Pair, Jwk), KeyError> {
            let pair = sig::EcdsaKeyPair::from_pkcs8(signing, &v.pkcs8).map_err(|e| err(e.to_string()))?;
            // Uncompressed point: 0x04 || X || Y, each coordinate the curve's field size.
            let point = pair.public_key().as_ref();
            let n = (point.len().saturating_sub(1)) / 2;
            if point.first() != Some(&4) || n == 0 {
                return Err(err("unexpected public key encoding".into()));
            }
            let jwk = Jwk::ec(&v.kid, v.alg, crv, b64url(&point[1..=n]), b64url(&point[n + 1..]));
            Ok((Pair::Ecdsa(pair), jwk))
        };
        let (pair, jwk) = match v.alg {
            SigningAlgorithm::RS256 | SigningAlgorithm::RS384 | SigningAlgorithm::RS512 => {
                let pair = sig::RsaKeyPair::from_pkcs8(&v.pkcs8).map_err(|e| err(e.to_string()))?;
                let encoding: &'static dyn sig::RsaEncoding = match v.alg {
                    SigningAlgorithm::RS256 => &sig::RSA_PKCS1_SHA256,
                    SigningAlgorithm::RS384 => &sig::RSA_PKCS1_SHA384,
                    _ => &sig::RSA_PKCS1_SHA512,
                };
                let public = pair.public_key();
                let jwk = Jwk::rsa(
                    &v.kid,
                    v.alg,
                    b64url(public.modulus().big_endian_without_leading_zero()),
                    b64url(public.exponent().big_endian_without_leading_zero()),
                );
                (Pair::Rsa(pair, encoding), jwk)
            }
            SigningAlgorithm::ES256 => ec(&sig::ECDSA_P256_SHA256_FIXED_SIGNING, "P-256")?,
            SigningAlgorithm::ES384 => ec(&sig::ECDSA_P384_SHA384_FIXED_SIGNING, "P-384")?,
            SigningAlgorithm::ES512 => ec(&sig::ECDSA_P521_SHA512_FIXED_SIGNING, "P-521")?,
            SigningAlgorithm::EdDSA => {
                let pair = sig::Ed25519KeyPair::from_pkcs8(&v.pkcs8)
                    .or_else(|_| sig::Ed25519KeyPair::from_pkcs8_maybe_unchecked(&v.pkcs8))
                    .map_err(|e| err(e.to_string()))?;
                let jwk = Jwk::okp(&v.kid, b64url(pair.public_key().as_ref()));
                (Pair::Ed25519(pair), jwk)
            }
        };
        let header = serde_json::json!({"alg": v.alg.as_str(), "kid": v.kid, "typ": "JWT"});
        let header_b64 = b64url(header.to_string().as_bytes());
        let access = serde_json::json!({"alg": v.alg.as_str(), "kid": v.kid, "typ": "at+jwt"});
        let access_header_b64 = b64url(access.to_string().as_bytes());
        Ok(Self { kid: v.kid.clone(), alg: v.alg, pair, jwk, header_b64, access_header_b64 })
    }

    pub fn kid(&self) -> &str {
        &self.kid
    }

    pub fn algorithm(&self) -> SigningAlgorithm {
        self.alg
    }

    /// The public key as a JWK (RFC 7517/7518/8037).
    pub fn jwk(&self) -> &Jwk {
        &self.jwk
    }

    /// Signs `claims` as a compact JWS (a JWT) with this key's `alg` and `kid` in the header.
    pub fn sign_jwt<T: Serialize>(&self, claims: &T) -> Result<String, KeyError> {
        self.sign_typed(JwtType::IdToken, claims)
    }

    /// Signs `claims` as a JWT of type `typ`.
    pub fn sign_typed<T: Serialize>(&self, typ: JwtType, claims: &T) -> Result<String, KeyError> {
        let header = match typ {
            JwtType::IdToken => &self.header_b64,
            JwtType::AccessToken => &self.access_header_b64,
        };
        let payload = serde_json::to_vec(claims).map_err(|_| KeyError::Sign { kid: self.kid.clone() })?;
        let mut token = String::with_capacity(header.len() + payload.len() * 4 / 3 + 360);
        token.push_str(header);
        token.push('.');
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode_string(&payload, &mut token);
        let signature = self.sign_raw(token.as_bytes())?;
        token.push('.');
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode_string(&signature, &mut token);
        Ok(token)
    }

    /// Signs `message` (the JWS signing input) and returns the raw signature.
    pub fn sign_raw(&self, message: &[u8]) -> Result<Vec<u8>, KeyError> {
        let fail = || KeyError::Sign { kid: self.kid.clone() };
        match &self.pair {
            Pair::Rsa(pair, encoding) => {
                let mut out = vec![0u8; pair.public_modulus_len()];
                pair.sign(*encoding, &SystemRandom::new(), message, &mut out).map_err(|_| fail())?;
                Ok(out)
            }
            Pair::Ecdsa(pair) => Ok(pair.sign(&SystemRandom::new(), message).map_err(|_| fail())?.as_ref().to_vec()),
            Pair::Ed25519(pair) => Ok(pair.sign(message).as_ref().to_vec()),
        }
    }
}
