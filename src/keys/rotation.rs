//! The rotation plan: a pure function of (key ring, policy, now), as OpenBao rotates.
//!
//! - A key starts with a current and a next version; the next one is published in JWKS a
//!   full `rotationPeriod` before it signs anything.
//! - At `rotatedAt + rotationPeriod` the next version becomes current, a new next version is
//!   made, and the old current one is retired: it stays in JWKS until
//!   `retiredAt + verificationTTL`, then it is pruned.
//! - A changed algorithm retires the current version at once and replaces both (the old
//!   next version never signed anything, so it is dropped).
//!
//! Only the shells read the clock and generate keys; they persist the result before they
//! publish or sign with it.

use super::ring::{KeyPolicy, KeyRing, RetiredKey};
use super::{KeyError, KeyVersion, SigningAlgorithm};

/// One change the ring needs.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Step {
    /// No ring yet: make current and next.
    Create,
    /// The rotation period has passed.
    Rotate,
    /// The spec's algorithm differs from the current key's.
    ChangeAlgorithm,
    /// Retired keys past their verification window leave JWKS.
    Prune { kids: Vec<String> },
    /// The ring was marked orphaned (its OidcKey gone) and is required again: it is kept.
    Revive,
}

/// What must happen to a key ring at `now`; empty when nothing is due.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct RotationPlan {
    pub steps: Vec<Step>,
}

impl RotationPlan {
    pub fn is_empty(&self) -> bool {
        self.steps.is_empty()
    }
}

/// Decides what is due. Pure: the same inputs give the same plan.
pub fn plan(ring: Option<&KeyRing>, policy: &KeyPolicy, now: i64) -> RotationPlan {
    let Some(ring) = ring else {
        return RotationPlan { steps: vec![Step::Create] };
    };
    let mut steps = Vec::new();
    if ring.orphaned_at.is_some() {
        steps.push(Step::Revive);
    }
    if ring.current.alg != policy.algorithm || ring.next.alg != policy.algorithm {
        steps.push(Step::ChangeAlgorithm);
    } else if now >= ring.rotation_due(policy) {
        steps.push(Step::Rotate);
    }
    let expired: Vec<String> = ring
        .retired
        .iter()
        .filter(|r| KeyRing::retired_until(r, policy) <= now)
        .map(|r| r.version.kid.clone())
        .collect();
    if !expired.is_empty() {
        steps.push(Step::Prune { kids: expired });
    }
    RotationPlan { steps }
}

/// Carries out a plan. `mint` makes a new key version of an algorithm (random in the shells,
/// deterministic in tests).
pub fn apply(
    ring: Option<KeyRing>,
    plan: &RotationPlan,
    policy: &KeyPolicy,
    now: i64,
    mut mint: impl FnMut(SigningAlgorithm) -> Result<KeyVersion, KeyError>,
) -> Result<Option<KeyRing>, KeyError> {
    let mut ring = ring;
    for step in &plan.steps {
        ring = Some(match (step, ring) {
            (Step::Create, _) => KeyRing::new(mint(policy.algorithm)?, mint(policy.algorithm)?, now),
            (Step::Rotate, Some(mut r)) => {
                let fresh = mint(policy.algorithm)?;
                let old = std::mem::replace(&mut r.current, std::mem::replace(&mut r.next, fresh));
                r.retired.push(RetiredKey { version: old, retired_at: now });
                r.rotated_at = now;
                r
            }
            (Step::ChangeAlgorithm, Some(mut r)) => {
                let current = mint(policy.algorithm)?;
                let next = mint(policy.algorithm)?;
                let old = std::mem::replace(&mut r.current, current);
                r.next = next;
                r.retired.push(RetiredKey { version: old, retired_at: now });
                r.rotated_at = now;
                r
            }
            (Step::Prune { kids }, Some(mut r)) => {
                r.retired.retain(|k| !kids.contains(&k.version.kid));
                r
            }
            (Step::Revive, Some(mut r)) => {
                r.orphaned_at = None;
                r
            }
            (_, None) => return Ok(None),
        });
    }
    if let Some(r) = ring.as_mut() {
        r.verification_ttl = Some(policy.verification_ttl);
    }
    Ok(ring)
}

/// Plans and applies in one go; `Some(ring)` when anything changed.
pub fn advance(
    ring: Option<&KeyRing>,
    policy: &KeyPolicy,
    now: i64,
    mint: impl FnMut(SigningAlgorithm) -> Result<KeyVersion, KeyError>,
) -> Result<Option<KeyRing>, KeyError> {
    let plan = plan(ring, policy, now);
    if plan.is_empty() {
        return Ok(None);
    }
    apply(ring.cloned(), &plan, policy, now, mint)
}

#[cfg(test)]
mod tests {
    use super::*;

    const MIN: i64 = 60;
    const HOUR: i64 = 3600;

    /// A fake mint: kids k1, k2, ... with no real key material.
    fn counter_mint(n: &mut u32) -> impl FnMut(SigningAlgorithm) -> Result<KeyVersion, KeyError> + '_ {
        move |alg| {
            *n += 1;
            Ok(KeyVersion { kid: format!("k{n}"), alg, created_at: 0, pkcs8: Vec::new() })
        }
    }

    fn kids(ring: &KeyRing, policy: &KeyPolicy, now: i64) -> Vec<String> {
        ring.published(policy, now).into_iter().map(|k| k.kid.clone()).collect()
    }

    fn policy(rot: i64, ver: i64) -> KeyPolicy {
        KeyPolicy { algorithm: SigningAlgorithm::RS256, rotation_period: rot, verification_ttl: ver }
    }

    #[test]
    fn next_key_is_published_before_it_signs_and_old_key_lingers() {
        let p = policy(HOUR, 2 * HOUR);
        let mut n = 0;
        let t0 = 1_000_000;
        let ring = advance(None, &p, t0, counter_mint(&mut n)).unwrap().unwrap();
        assert_eq!((ring.current.kid.as_str(), ring.next.kid.as_str()), ("k1", "k2"));
        assert_eq!(kids(&ring, &p, t0), ["k1", "k2"], "next key published from the start");

        // Nothing is due before the period ends.
        assert!(plan(Some(&ring), &p, t0 + HOUR - 1).is_empty());
        assert_eq!(ring.next_event(&p), t0 + HOUR);

        // Rotation: k2 (published for a whole period) signs, k1 retires, k3 is the new next.
        let t1 = t0 + HOUR;
        let ring = advance(Some(&ring), &p, t1, counter_mint(&mut n)).unwrap().unwrap();
        assert_eq!(ring.current.kid, "k2");
        assert_eq!(ring.next.kid, "k3");
        assert_eq!(kids(&ring, &p, t1), ["k2", "k3", "k1"]);

        // k1 stays until exactly verificationTTL after it retired.
        assert_eq!(kids(&ring, &p, t1 + 2 * HOUR - 1), ["k2", "k3", "k1"]);
        assert!(!plan(Some(&ring), &p, t1 + 2 * HOUR - 1).steps.iter().any(|s| matches!(s, Step::Prune { .. })));

        // Second rotation at t1 + 1h; k1 still inside its window, k2 retires too.
        let t2 = t1 + HOUR;
        let ring = advance(Some(&ring), &p, t2, counter_mint(&mut n)).unwrap().unwrap();
        assert_eq!(kids(&ring, &p, t2), ["k3", "k4", "k1", "k2"]);

        // At t1 + 2h, k1's window closes and it is pruned (with the third rotation).
        let t3 = t1 + 2 * HOUR;
        let plan3 = plan(Some(&ring), &p, t3);
        assert_eq!(plan3.steps, vec![Step::Rotate, Step::Prune { kids: vec!["k1".into()] }]);
        let ring = apply(Some(ring), &plan3, &p, t3, counter_mint(&mut n)).unwrap().unwrap();
        assert_eq!(kids(&ring, &p, t3), ["k4", "k5", "k2", "k3"]);
        assert!(ring.retired.iter().all(|r| r.version.kid != "k1"));
    }

    #[test]
    fn a_long_outage_rotates_once_and_prunes_everything_expired() {
        let p = policy(MIN, MIN);
        let mut n = 0;
        let ring = advance(None, &p, 0, counter_mint(&mut n)).unwrap().unwrap();
        let ring = advance(Some(&ring), &p, MIN, counter_mint(&mut n)).unwrap().unwrap();
        assert_eq!(ring.retired.len(), 1);
        let later = advance(Some(&ring), &p, 100 * MIN, counter_mint(&mut n)).unwrap().unwrap();
        assert_eq!(later.current.kid, "k3");
        assert_eq!(later.retired.len(), 1, "k1 pruned, k2 newly retired");
        assert_eq!(later.retired[0].version.kid, "k2");
        assert_eq!(later.rotated_at, 100 * MIN);
    }

    #[test]
    fn algorithm_change_retires_current_and_replaces_next() {
        let p = policy(HOUR, HOUR);
        let mut n = 0;
        let ring = advance(None, &p, 0, counter_mint(&mut n)).unwrap().unwrap();
        let p2 = KeyPolicy { algorithm: SigningAlgorithm::ES256, ..p };
        let ring = advance(Some(&ring), &p2, 10, counter_mint(&mut n)).unwrap().unwrap();
        assert_eq!(ring.current.alg, SigningAlgorithm::ES256);
        assert_eq!(ring.next.alg, SigningAlgorithm::ES256);
        assert_eq!(kids(&ring, &p2, 10), ["k3", "k4", "k1"], "k2 never signed and is dropped");
        assert!(advance(Some(&ring), &p2, 11, counter_mint(&mut n)).unwrap().is_none());
    }

    #[test]
    fn shorter_period_applies_to_the_running_ring() {
        let mut n = 0;
        let ring = advance(None, &policy(24 * HOUR, 24 * HOUR), 0, counter_mint(&mut n)).unwrap().unwrap();
        assert!(plan(Some(&ring), &policy(HOUR, HOUR), HOUR).steps.contains(&Step::Rotate));
    }
}
