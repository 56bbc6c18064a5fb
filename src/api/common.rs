//! Shared pieces of the resource model: durations, the `Ready` condition and readiness.

use std::borrow::Cow;
use std::fmt;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};
use schemars::{JsonSchema, Schema, SchemaGenerator, json_schema};
use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// API group of every custom resource of the operator.
pub const GROUP: &str = "oidc-operator.dev";
/// API version of every custom resource of the operator.
pub const VERSION: &str = "v1alpha1";

/// A span of time given, as the reference documents allow, either as integer seconds (`86400`)
/// or as a duration string (`"24h"`, `"30m"`, `"90s"`, `"1h30m"`).
///
/// It is kept as whole seconds: every TTL and period of the product has second granularity.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Duration(u64);

/// Why a duration could not be read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "invalid duration {input:?}: {reason} (use integer seconds or a string such as \"24h\", \"30m\", \"90s\", \"1h30m\")"
)]
pub struct DurationError {
    input: String,
    reason: &'static str,
}

impl Duration {
    /// A duration of `secs` seconds.
    pub const fn from_secs(secs: u64) -> Self {
        Self(secs)
    }

    /// The duration in whole seconds.
    pub const fn as_secs(self) -> u64 {
        self.0
    }

    /// Signed seconds, for arithmetic with unix timestamps.
    pub fn as_secs_i64(self) -> i64 {
        i64::try_from(self.0).unwrap_or(i64::MAX)
    }

    /// Parses `"24h"`, `"30m"`, `"90s"`, `"1h30m"`, or a bare integer number of seconds.
    pub fn parse(input: &str) -> Result<Self, DurationError> {
        let err = |reason| DurationError { input: input.to_owned(), reason };
        let s = input.trim();
        if s.is_empty() {
            return Err(err("empty"));
        }
        if s.bytes().all(|b| b.is_ascii_digit()) {
            return s.parse::<u64>().map(Self).map_err(|_| err("too large"));
        }
        let mut total: u64 = 0;
        let mut digits = String::new();
        let mut last_rank = usize::MAX;
        for ch in s.chars() {
            if ch.is_ascii_digit() {
                digits.push(ch);
                continue;
            }
            let (unit, rank) = match ch {
                'h' => (3600u64, 2usize),
                'm' => (60, 1),
                's' => (1, 0),
                _ => return Err(err("unknown unit (allowed: h, m, s)")),
            };
            if digits.is_empty() {
                return Err(err("a unit without a number"));
            }
            if rank >= last_rank {
                return Err(err("units must appear once each, in the order h, m, s"));
            }
            last_rank = rank;
            let n: u64 = digits.parse().map_err(|_| err("too large"))?;
            total = n.checked_mul(unit).and_then(|v| total.checked_add(v)).ok_or_else(|| err("too large"))?;
            digits.clear();
        }
        if !digits.is_empty() {
            return Err(err("a number without a unit"));
        }
        Ok(Self(total))
    }
}

impl fmt::Display for Duration {
    /// Canonical form: `1h30m`, `90s` -> `1m30s`, `0` -> `0s`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let (h, m, s) = (self.0 / 3600, (self.0 % 3600) / 60, self.0 % 60);
        if self.0 == 0 {
            return f.write_str("0s");
        }
        if h > 0 {
            write!(f, "{h}h")?;
        }
        if m > 0 {
            write!(f, "{m}m")?;
        }
        if s > 0 {
            write!(f, "{s}s")?;
        }
        Ok(())
    }
}

impl Serialize for Duration {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for Duration {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum IntOrString {
            Int(u64),
            Str(String),
        }
        match IntOrString::deserialize(deserializer) {
            Ok(IntOrString::Int(n)) => Ok(Self(n)),
            Ok(IntOrString::Str(s)) => Self::parse(&s).map_err(serde::de::Error::custom),
            Err(_) => Err(serde::de::Error::custom(
                "expected integer seconds or a duration string such as \"24h\" or \"1h30m\"",
            )),
        }
    }
}

/// Pattern of the string form, mirrored in the CRD so the API server refuses bad durations.
pub const DURATION_PATTERN: &str = "^([0-9]+h)?([0-9]+m)?([0-9]+s)?$|^[0-9]+$";

/// Whether a string matches the CRD's rule (kept in step with the parser by a test).
#[cfg(test)]
fn matches_pattern(s: &str) -> bool {
    let digits_only = !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit());
    digits_only
        || !s.is_empty() && {
            let mut rest = s;
            for unit in ['h', 'm', 's'] {
                if let Some(i) = rest.find(unit) {
                    let (n, r) = rest.split_at(i);
                    if n.is_empty() || !n.bytes().all(|b| b.is_ascii_digit()) {
                        return false;
                    }
                    rest = &r[1..];
                }
            }
            rest.is_empty()
        }
}

impl JsonSchema for Duration {
    fn schema_name() -> Cow<'static, str> {
        "Duration".into()
    }

    fn inline_schema() -> bool {
        true
    }

    fn json_schema(_: &mut SchemaGenerator) -> Schema {
        // `pattern`/`minimum` inside anyOf would each pass the other type's values, so the
        // int-or-string check is a CEL rule on the field itself.
        let rule = format!("type(self) == int ? self >= 0 : self != '' && self.matches('{DURATION_PATTERN}')");
        json_schema!({
            "x-kubernetes-int-or-string": true,
            "x-kubernetes-validations": [{
                "rule": rule,
                "message": "must be integer seconds or a duration such as 24h, 30m, 90s or 1h30m"
            }]
        })
    }
}

/// A CEL expression turning an int-or-string duration field into a CEL `duration`.
pub fn cel_duration(field: &str) -> String {
    format!(
        "(type({field}) == int ? duration(string({field}) + 's') : \
         {field}.matches('^[0-9]+$') ? duration({field} + 's') : duration({field}))"
    )
}

/// Whether an object is usable, and if not, why, in the words of a `Ready` condition.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Readiness {
    pub ready: bool,
    /// CamelCase reason, e.g. `KeyNotFound`.
    pub reason: String,
    /// A sentence for people, naming the field at fault.
    pub message: String,
}

impl Readiness {
    pub fn ready(message: impl Into<String>) -> Self {
        Self { ready: true, reason: "Ready".into(), message: message.into() }
    }

    pub fn not_ready(reason: impl Into<String>, message: impl Into<String>) -> Self {
        Self { ready: false, reason: reason.into(), message: message.into() }
    }

    /// The `Ready` condition for this readiness. `previous` keeps `lastTransitionTime`
    /// stable while the status does not change.
    pub fn condition(&self, generation: Option<i64>, now: Time, previous: Option<&Condition>) -> Condition {
        let status = if self.ready { "True" } else { "False" };
        condition("Ready", status, &self.reason, &self.message, generation, now, previous)
    }

    /// Whether the object waits for a change of its spec (or of what it names) rather than
    /// for work in progress: not Ready for any reason but [`PROGRESSING_REASONS`].
    pub fn stalled(&self) -> bool {
        !self.ready && !PROGRESSING_REASONS.contains(&self.reason.as_str())
    }

    /// The `Stalled` condition (kstatus' abnormal-true convention): `True` with the `Ready`
    /// reason and message when [`Readiness::stalled`], else `False`. Flux's kstatus reads it
    /// as `Failed`, Argo CD's health script as `Degraded`; a `Ready=False` without it is
    /// `InProgress` / `Progressing`.
    pub fn stalled_condition(&self, generation: Option<i64>, now: Time, previous: Option<&Condition>) -> Condition {
        if self.stalled() {
            condition("Stalled", "True", &self.reason, &self.message, generation, now, previous)
        } else {
            let (reason, message) = match self.ready {
                true => ("Ready", "the object is served"),
                false => ("Progressing", "the operator is still working on it"),
            };
            condition("Stalled", "False", reason, message, generation, now, previous)
        }
    }
}

/// Not-Ready reasons that clear without anyone changing a spec: material being generated, an
/// issuer being fetched or retried, a key another object is waiting for, a held deletion.
pub const PROGRESSING_REASONS: [&str; 9] = [
    "CredentialsPending",
    "DeletionHeld",
    "DiscoveryFailed",
    "DiscoveryPending",
    "IdentityIdPending",
    "JwksUriFailed",
    "JwksUriPending",
    "KeyMaterialPending",
    "KeyNotReady",
];

/// A condition whose `lastTransitionTime` stays that of `previous` while its status does.
fn condition(
    type_: &str,
    status: &str,
    reason: &str,
    message: &str,
    generation: Option<i64>,
    now: Time,
    previous: Option<&Condition>,
) -> Condition {
    let last_transition_time = match previous {
        Some(p) if p.status == status => p.last_transition_time.clone(),
        _ => now,
    };
    Condition {
        type_: type_.into(),
        status: status.into(),
        reason: reason.into(),
        message: message.into(),
        observed_generation: generation,
        last_transition_time,
    }
}

/// Default TTL and period of the reference documents: 24 hours.
pub fn default_24h() -> Duration {
    Duration::from_secs(24 * 3600)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_reference_forms() {
        assert_eq!(Duration::parse("24h").unwrap().as_secs(), 86400);
        assert_eq!(Duration::parse("30m").unwrap().as_secs(), 1800);
        assert_eq!(Duration::parse("90s").unwrap().as_secs(), 90);
        assert_eq!(Duration::parse("1h30m").unwrap().as_secs(), 5400);
        assert_eq!(Duration::parse("1h0m5s").unwrap().as_secs(), 3605);
        assert_eq!(Duration::parse("3600").unwrap().as_secs(), 3600);
        assert_eq!(Duration::parse(" 2m ").unwrap().as_secs(), 120);
    }

    #[test]
    fn refuses_bad_forms() {
        for bad in ["", "h", "1d", "30m1h", "1h1h", "5", "1.5h", "-1s", "10x"] {
            if bad == "5" {
                continue;
            }
            assert!(Duration::parse(bad).is_err(), "{bad} should be refused");
        }
        assert!(Duration::parse("99999999999999999999h").is_err());
        assert!(Duration::parse("99999999999999999999").is_err());
        let e = Duration::parse("1d").unwrap_err().to_string();
        assert!(e.contains("\"1d\"") && e.contains("unit"), "{e}");
    }

    #[test]
    fn accepts_int_or_string_in_yaml_and_json() {
        let d: Duration = serde_json::from_str("86400").unwrap();
        assert_eq!(d.as_secs(), 86400);
        let d: Duration = serde_json::from_str("\"1h30m\"").unwrap();
        assert_eq!(d.as_secs(), 5400);
        assert!(serde_json::from_str::<Duration>("\"soon\"").is_err());
        assert!(serde_json::from_str::<Duration>("-5").is_err());
        assert_eq!(serde_json::to_string(&Duration::from_secs(5430)).unwrap(), "\"1h30m30s\"");
        assert_eq!(Duration::from_secs(0).to_string(), "0s");
    }

    #[test]
    fn canonical_form_round_trips() {
        for secs in [1u64, 59, 60, 61, 3599, 3600, 86400, 90061] {
            let d = Duration::from_secs(secs);
            assert_eq!(Duration::parse(&d.to_string()).unwrap(), d);
        }
    }

    #[test]
    fn pattern_matches_parser() {
        // The CRD pattern and the parser must agree on the forms users write.
        for s in ["24h", "30m", "90s", "1h30m", "86400", "1h0m5s", "1h", "5s"] {
            assert!(Duration::parse(s).is_ok() && matches_pattern(s), "{s}");
        }
        for s in ["", "1d", "30m1h", "h", "1.5h", "-1s", "1hm"] {
            assert!(Duration::parse(s).is_err() && !matches_pattern(s), "{s}");
        }
    }

    #[test]
    fn ready_condition_keeps_transition_time() {
        let t0 = Time(k8s_openapi::jiff::Timestamp::from_second(1000).unwrap());
        let t1 = Time(k8s_openapi::jiff::Timestamp::from_second(2000).unwrap());
        let r = Readiness::ready("ok");
        let c0 = r.condition(Some(1), t0.clone(), None);
        let c1 = r.condition(Some(2), t1.clone(), Some(&c0));
        assert_eq!(c1.last_transition_time, t0);
        let c2 = Readiness::not_ready("KeyNotFound", "spec.key").condition(Some(3), t1.clone(), Some(&c1));
        assert_eq!(c2.last_transition_time, t1);
        assert_eq!(c2.status, "False");
    }
}
