//! Signing keys: generation, JWK encoding, compact JWS signing and verification, rotation.
//!
//! Private keys are parsed once, when a key ring is loaded into the directory, into
//! [`SigningKey`]s that hold aws-lc-rs key pairs; signing never parses key material.
//! (jsonwebtoken 11's `encode` re-parses the private key on every call and has no ES512,
//! so signing goes straight to aws-lc-rs, the backend jsonwebtoken itself uses.)

mod algorithm;
mod jwk;
mod jws;
mod material;
pub mod retention;
pub mod ring;
pub mod rotation;

pub use algorithm::SigningAlgorithm;
pub use jwk::{Jwk, JwkSet};
pub use jws::{JwsError, VerifyingKey};
pub use material::{JwtType, KeyError, KeyVersion, SigningKey, random_uuid};
