//! What becomes of a key ring once nothing requires it (its OidcKey deleted, no client using
//! the built-in `default` key): a pure function of (ring, now), as rotation is.
//!
//! The ring is first marked orphaned (written back with `orphanedAt`), so the decision
//! survives restarts; from then on every version counts as retired, and the ring (private
//! keys included) is deleted once the last of them leaves its verification window. A key
//! that is required again before that keeps its ring ([`super::rotation::Step::Revive`]).

use super::ring::KeyRing;

/// The verification window assumed when a ring never recorded its key's (OpenBao's
/// default `verification_ttl`, 24 hours).
pub const DEFAULT_VERIFICATION_TTL: i64 = 24 * 3600;

/// What to do with a ring nothing requires.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Retention {
    /// Write this ring (marked orphaned now) back to where it is kept.
    Mark(KeyRing),
    /// Keep it until `until` (unix seconds).
    Keep { until: i64 },
    /// Its last version has left the verification window: delete it.
    Delete,
}

/// When an orphaned ring's last version leaves its verification window.
pub fn delete_at(ring: &KeyRing, orphaned_at: i64) -> i64 {
    let window = ring.verification_ttl.unwrap_or(DEFAULT_VERIFICATION_TTL).max(0);
    let retired = ring.retired.iter().map(|r| r.retired_at.saturating_add(window));
    retired.fold(orphaned_at.saturating_add(window), i64::max)
}

/// Decides the fate of a ring nothing requires at `now`.
pub fn orphaned(ring: &KeyRing, now: i64) -> Retention {
    match ring.orphaned_at {
        None => Retention::Mark(KeyRing { orphaned_at: Some(now), ..ring.clone() }),
        Some(at) if now >= delete_at(ring, at) => Retention::Delete,
        Some(at) => Retention::Keep { until: delete_at(ring, at) },
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::keys::ring::{KeyPolicy, RetiredKey};
    use crate::keys::rotation;
    use crate::keys::{KeyVersion, SigningAlgorithm};

    fn version(kid: &str) -> KeyVersion {
        KeyVersion { kid: kid.into(), alg: SigningAlgorithm::RS256, created_at: 0, pkcs8: Vec::new() }
    }

    fn ring(vttl: Option<i64>) -> KeyRing {
        KeyRing {
            current: version("c"),
            next: version("n"),
            retired: vec![RetiredKey { version: version("r"), retired_at: 50 }],
            rotated_at: 50,
            verification_ttl: vttl,
            orphaned_at: None,
        }
    }

    #[test]
    fn a_ring_is_marked_then_kept_for_its_window_then_deleted() {
        let r = ring(Some(100));
        let Retention::Mark(marked) = orphaned(&r, 1000) else { panic!("marked first") };
        assert_eq!(marked.orphaned_at, Some(1000));
        assert_eq!(marked.current, r.current, "nothing else changes");
        assert_eq!(orphaned(&marked, 1099), Retention::Keep { until: 1100 });
        assert_eq!(orphaned(&marked, 1100), Retention::Delete);
        // Without a recorded window, OpenBao's default applies.
        let Retention::Mark(marked) = orphaned(&ring(None), 1000) else { panic!() };
        let until = 1000 + DEFAULT_VERIFICATION_TTL;
        assert_eq!(orphaned(&marked, until - 1), Retention::Keep { until });
        // A version retired after the mark (a clock step back) keeps the ring to its own end.
        let late = KeyRing { retired: vec![RetiredKey { version: version("r"), retired_at: 2000 }], ..marked };
        assert_eq!(delete_at(&late, 1000), 2000 + DEFAULT_VERIFICATION_TTL);
    }

    #[test]
    fn a_required_ring_is_revived_and_records_its_window() {
        let policy = KeyPolicy { algorithm: SigningAlgorithm::RS256, rotation_period: 1000, verification_ttl: 300 };
        let marked = KeyRing { orphaned_at: Some(60), ..ring(None) };
        let revived = rotation::advance(Some(&marked), &policy, 70, |_| Ok(version("new"))).unwrap().unwrap();
        assert_eq!((revived.orphaned_at, revived.verification_ttl), (None, Some(300)));
        assert_eq!(revived.current.kid, "c", "the same keys keep signing");
    }
}
