//! Leader election on a `coordination.k8s.io/v1` Lease, as client-go does it: the holder
//! renews the lease; anyone may take it once it has seen the same record (holder, renewTime)
//! unchanged for `leaseDurationSeconds` by its own clock (so clock skew between nodes does not
//! matter), or the holder released it (empty `holderIdentity`). Writes go with the
//! resourceVersion read, so two candidates can never both win.

use k8s_openapi::api::coordination::v1::LeaseSpec;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::MicroTime;
use k8s_openapi::jiff::Timestamp;

/// What a candidate does with the lease it read.
#[derive(Debug, PartialEq, Eq)]
pub enum LeaseStep {
    /// No Lease object yet: create it, holding it.
    Create,
    /// Free or expired: take it.
    Acquire,
    /// Ours: renew it.
    Renew,
    /// Someone else holds it until the given time (milliseconds).
    Wait { holder: String, until_ms: i64 },
}

#[cfg(test)]
fn millis(t: &Option<MicroTime>) -> Option<i64> {
    t.as_ref().map(|t| t.0.as_millisecond())
}

/// What identifies a holder's renewal: a new one means the holder is alive.
pub fn record(lease: Option<&LeaseSpec>) -> Option<(Option<String>, Option<MicroTime>)> {
    lease.map(|l| (l.holder_identity.clone(), l.renew_time.clone()))
}

/// Decides from the lease as read at `now_ms`; `unchanged_since_ms` is when this candidate
/// first saw the lease's current [`record`] (its own clock).
pub fn decide(lease: Option<&LeaseSpec>, me: &str, unchanged_since_ms: i64, now_ms: i64) -> LeaseStep {
    let Some(spec) = lease else { return LeaseStep::Create };
    let holder = spec.holder_identity.clone().unwrap_or_default();
    if holder == me {
        return LeaseStep::Renew;
    }
    if holder.is_empty() {
        return LeaseStep::Acquire;
    }
    let until_ms = unchanged_since_ms + i64::from(spec.lease_duration_seconds.unwrap_or(0)) * 1000;
    if until_ms <= now_ms { LeaseStep::Acquire } else { LeaseStep::Wait { holder, until_ms } }
}

fn micro(ms: i64) -> Option<MicroTime> {
    Timestamp::from_millisecond(ms).ok().map(MicroTime)
}

/// The spec to write for a `Create`, `Acquire` or `Renew` step.
pub fn held(previous: Option<&LeaseSpec>, me: &str, duration_secs: i32, now_ms: i64, step: &LeaseStep) -> LeaseSpec {
    let transitions = previous.and_then(|p| p.lease_transitions).unwrap_or(0);
    match step {
        LeaseStep::Renew => LeaseSpec {
            renew_time: micro(now_ms),
            lease_duration_seconds: Some(duration_secs),
            ..previous.cloned().unwrap_or_default()
        },
        _ => LeaseSpec {
            holder_identity: Some(me.to_owned()),
            lease_duration_seconds: Some(duration_secs),
            acquire_time: micro(now_ms),
            renew_time: micro(now_ms),
            lease_transitions: Some(if previous.is_some() { transitions + 1 } else { 0 }),
            ..LeaseSpec::default()
        },
    }
}

/// The spec that gives the lease up at shutdown, so a successor need not wait for it to expire.
pub fn released(previous: &LeaseSpec, now_ms: i64) -> LeaseSpec {
    LeaseSpec { holder_identity: None, lease_duration_seconds: Some(1), renew_time: micro(now_ms), ..previous.clone() }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lease(holder: &str, renewed_ms: i64, duration: i32) -> LeaseSpec {
        LeaseSpec {
            holder_identity: Some(holder.into()),
            renew_time: micro(renewed_ms),
            lease_duration_seconds: Some(duration),
            ..LeaseSpec::default()
        }
    }

    #[test]
    fn takes_only_free_or_expired_leases() {
        assert_eq!(decide(None, "a", 0, 0), LeaseStep::Create);
        assert_eq!(decide(Some(&lease("a", 0, 15)), "a", 0, 1_000_000), LeaseStep::Renew);
        // Expiry counts from when the record was first seen here, not from the holder's clock.
        let b = lease("b", 10_000_000, 15);
        assert_eq!(decide(Some(&b), "a", 5_000, 19_999), LeaseStep::Wait { holder: "b".into(), until_ms: 20_000 });
        assert_eq!(decide(Some(&b), "a", 5_000, 20_000), LeaseStep::Acquire);
        assert_eq!(decide(Some(&lease("", 10_000, 15)), "a", 10_000, 10_001), LeaseStep::Acquire);
        let released = released(&lease("b", 10_000, 15), 11_000);
        assert_eq!(decide(Some(&released), "a", 11_000, 11_001), LeaseStep::Acquire);
        assert_ne!(record(Some(&lease("b", 1_000, 15))), record(Some(&lease("b", 2_000, 15))), "a renewal is news");
    }

    #[test]
    fn acquiring_counts_transitions_and_renewing_keeps_the_acquire_time() {
        let first = held(None, "a", 15, 1_000, &LeaseStep::Create);
        assert_eq!((first.holder_identity.as_deref(), first.lease_transitions), (Some("a"), Some(0)));
        let renewed = held(Some(&first), "a", 15, 6_000, &LeaseStep::Renew);
        assert_eq!(renewed.acquire_time, first.acquire_time);
        assert_eq!(millis(&renewed.renew_time), Some(6_000));
        let taken = held(Some(&renewed), "b", 15, 30_000, &LeaseStep::Acquire);
        assert_eq!((taken.holder_identity.as_deref(), taken.lease_transitions), (Some("b"), Some(1)));
    }
}
