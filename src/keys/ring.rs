//! A key's versions: the one that signs, the one published to sign next, and retired ones.

use serde::{Deserialize, Serialize};

use super::{KeyVersion, SigningAlgorithm};
use crate::api::OidcKeySpec;

/// The stored state of one OidcKey (a Secret on a cluster, a 0600 file standalone).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct KeyRing {
    /// Signs ID tokens now.
    pub current: KeyVersion,
    /// Published in JWKS already; becomes `current` at the next rotation.
    pub next: KeyVersion,
    /// Former current keys, published until `retiredAt + verificationTTL`.
    #[serde(default)]
    pub retired: Vec<RetiredKey>,
    /// When `current` started signing (unix seconds).
    pub rotated_at: i64,
    /// The key's `verificationTTL` when the ring was last written: how long the ring is kept
    /// once its OidcKey is gone (the spec is gone with it).
    #[serde(default, skip_serializing_if = "Option::is_none", rename = "verificationTTL")]
    pub verification_ttl: Option<i64>,
    /// When the operator found the ring's OidcKey gone and nothing using it: every version
    /// counts as retired from then on, and the ring is deleted once the last one leaves its
    /// verification window (see [`super::retention`]).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub orphaned_at: Option<i64>,
}

/// A former current key that still verifies tokens it signed.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct RetiredKey {
    pub version: KeyVersion,
    /// When it stopped signing (unix seconds).
    pub retired_at: i64,
}

/// The parts of an OidcKey spec that rotation obeys, in seconds.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct KeyPolicy {
    pub algorithm: SigningAlgorithm,
    pub rotation_period: i64,
    pub verification_ttl: i64,
}

impl From<&OidcKeySpec> for KeyPolicy {
    fn from(spec: &OidcKeySpec) -> Self {
        Self {
            algorithm: spec.algorithm,
            rotation_period: spec.rotation_period.as_secs_i64(),
            verification_ttl: spec.verification_ttl.as_secs_i64(),
        }
    }
}

impl KeyRing {
    /// A fresh ring: `current` signs from `now`, `next` is published to sign after it.
    pub fn new(current: KeyVersion, next: KeyVersion, now: i64) -> Self {
        Self { current, next, retired: Vec::new(), rotated_at: now, verification_ttl: None, orphaned_at: None }
    }

    /// When the next rotation falls due.
    pub fn rotation_due(&self, policy: &KeyPolicy) -> i64 {
        self.rotated_at.saturating_add(policy.rotation_period)
    }

    /// When a retired key leaves JWKS.
    pub fn retired_until(retired: &RetiredKey, policy: &KeyPolicy) -> i64 {
        retired.retired_at.saturating_add(policy.verification_ttl)
    }

    /// The versions published in JWKS at `now`: current, next, and retired keys still inside
    /// their verification window.
    pub fn published(&self, policy: &KeyPolicy, now: i64) -> Vec<&KeyVersion> {
        let mut out = vec![&self.current, &self.next];
        out.extend(self.retired.iter().filter(|r| Self::retired_until(r, policy) > now).map(|r| &r.version));
        out
    }

    /// The earliest moment the ring needs attention: a rotation or a retired key's expiry.
    pub fn next_event(&self, policy: &KeyPolicy) -> i64 {
        self.retired.iter().map(|r| Self::retired_until(r, policy)).fold(self.rotation_due(policy), i64::min)
    }
}
