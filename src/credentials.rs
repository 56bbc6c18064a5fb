//! Client credentials in OpenBao's shapes.

use aws_lc_rs::rand::{SecureRandom, SystemRandom};
use serde::{Deserialize, Serialize};

/// Prefix of every client secret, so secret scanners can recognise a leaked one.
pub const CLIENT_SECRET_PREFIX: &str = "oidcop_secret_";
/// Length of a generated `client_id` (OpenBao: 32 base62 characters).
pub const CLIENT_ID_LEN: usize = 32;
/// Length of the random part of a client secret (OpenBao: 64 base62 characters).
pub const CLIENT_SECRET_RANDOM_LEN: usize = 64;

const BASE62: &[u8; 62] = b"0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz";

/// Randomness was not available.
#[derive(Debug, thiserror::Error)]
#[error("the system random number generator failed")]
pub struct RandomError;

/// `len` uniformly random base62 characters (rejection sampling, no modulo bias).
pub fn random_base62(len: usize) -> Result<String, RandomError> {
    let rng = SystemRandom::new();
    let mut out = String::with_capacity(len);
    let mut buf = [0u8; 64];
    while out.len() < len {
        rng.fill(&mut buf).map_err(|_| RandomError)?;
        for b in buf {
            // 248 = 4 * 62: bytes at or above it would favour the first characters.
            if b < 248 && out.len() < len {
                out.push(char::from(BASE62[usize::from(b % 62)]));
            }
        }
    }
    Ok(out)
}

/// A client's credentials, generated once and then kept byte-identical.
///
/// `Debug` never prints the secret.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub struct ClientCredentials {
    pub client_id: String,
    /// Absent for public clients.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub client_secret: Option<String>,
}

impl std::fmt::Debug for ClientCredentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ClientCredentials")
            .field("client_id", &self.client_id)
            .field("client_secret", &self.client_secret.as_ref().map(|_| "[redacted]"))
            .finish()
    }
}

/// Generates a client secret: the scanner prefix and 64 base62 characters.
pub fn generate_secret() -> Result<String, RandomError> {
    Ok(format!("{CLIENT_SECRET_PREFIX}{}", random_base62(CLIENT_SECRET_RANDOM_LEN)?))
}

/// Brings stored credentials in line with a client's spec: generates what is missing, keeps
/// what exists. `None` when nothing changes.
pub fn reconcile(
    existing: Option<&ClientCredentials>,
    fixed_client_id: Option<&str>,
    with_secret: bool,
) -> Result<Option<ClientCredentials>, RandomError> {
    let client_id = match (fixed_client_id, existing) {
        (Some(fixed), _) => fixed.to_owned(),
        (None, Some(e)) => e.client_id.clone(),
        (None, None) => random_base62(CLIENT_ID_LEN)?,
    };
    // A secret, once made, is kept even while a client is public or uses private_key_jwt, so
    // it cannot be re-issued by accident; it is simply not used or shown.
    let client_secret = match existing.and_then(|e| e.client_secret.clone()) {
        Some(s) => Some(s),
        None if with_secret => Some(generate_secret()?),
        None => None,
    };
    let next = ClientCredentials { client_id, client_secret };
    Ok((existing != Some(&next)).then_some(next))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn is_base62(s: &str) -> bool {
        s.bytes().all(|b| b.is_ascii_alphanumeric())
    }

    #[test]
    fn shapes_follow_openbao() {
        let c = reconcile(None, None, true).unwrap().unwrap();
        assert_eq!(c.client_id.len(), 32);
        assert!(is_base62(&c.client_id));
        let secret = c.client_secret.clone().unwrap();
        let random = secret.strip_prefix(CLIENT_SECRET_PREFIX).unwrap();
        assert_eq!(random.len(), 64);
        assert!(is_base62(random));
        assert!(!format!("{c:?}").contains(&secret));
    }

    #[test]
    fn generated_once_then_kept() {
        let c = reconcile(None, None, true).unwrap().unwrap();
        assert_eq!(reconcile(Some(&c), None, true).unwrap(), None);
        let public = reconcile(None, None, false).unwrap().unwrap();
        assert_eq!(public.client_secret, None);
        let fixed = reconcile(Some(&c), Some("my-app"), true).unwrap().unwrap();
        assert_eq!(fixed.client_id, "my-app");
        assert_eq!(fixed.client_secret, c.client_secret);
    }

    #[test]
    fn base62_is_random_and_unbiased_enough() {
        let a = random_base62(4096).unwrap();
        assert_ne!(a, random_base62(4096).unwrap());
        // Every character appears (expected ~66 each); a modulo bug or a short alphabet fails.
        for ch in BASE62 {
            let count = a.bytes().filter(|b| b == ch).count();
            assert!((20..=140).contains(&count), "{} appeared {count} times", char::from(*ch));
        }
    }
}
