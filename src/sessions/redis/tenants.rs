//! Tenant quotas and owner indexes in the shared store.
//!
//! Every record is also a member (`<bytes>|<record key>`, scored by its expiry) of sorted
//! sets in its namespace's slot (`P:{t:<namespace>}:...`): the namespace's index and byte
//! count (its quota), and one index per owner: the identity whose login it comes from, and
//! for a code its client and provider. A quota is then one script on one slot, and an
//! owner that is deleted takes its records with it by its index, never by a scan.
//!
//! The index and the record live in different slots, so they are written in two steps: the
//! charge first, then the record. A record that is then not written (the store failed in
//! between), revoked or used up early stays charged until its expiry: a quota can only err
//! towards refusing, never towards holding more than its share.

use super::{RedisStore, StoreError, ms};
use crate::sessions::Charge;

/// Who a record belongs to besides its namespace, as the suffix of an index key.
pub enum Owner<'a> {
    /// One incarnation of an identity, under one identity id.
    Identity {
        name: &'a str,
        uid: &'a str,
        id: &'a str,
    },
    /// Every record issued to a client: its users' grants and its own.
    Client {
        client_id: &'a str,
    },
    /// A client's own grants (client_credentials): what its quota counts, as an identity's
    /// counts its logins and consents.
    ClientGrants {
        client_id: &'a str,
    },
    Provider {
        name: &'a str,
    },
}

impl Owner<'_> {
    /// The suffix of the owner's index key (unambiguous: JSON of its parts).
    pub fn suffix(&self) -> String {
        match self {
            Self::Identity { name, uid, id } => format!("i:{}", json(&(name, uid, id))),
            Self::Client { client_id } => format!("c:{}", json(&[client_id])),
            Self::ClientGrants { client_id } => format!("cs:{}", json(&[client_id])),
            Self::Provider { name } => format!("p:{}", json(&[name])),
        }
    }
}

/// A JSON array of strings (a tuple or an array serializes as one), written straight to
/// text: every charge names its owners, so this is on every request's path.
fn json(parts: &impl serde::Serialize) -> String {
    serde_json::to_string(parts).unwrap_or_default()
}

impl RedisStore {
    /// A key in a namespace's slot. Namespaces are DNS labels: no braces.
    fn tenant_key(&self, namespace: &str, suffix: &str) -> String {
        format!("{}:{{t:{namespace}}}:{suffix}", self.prefix)
    }

    /// The keys a charge touches, all in the namespace's slot: its index, its byte count,
    /// then each owner's index (the order the scripts read them in).
    fn charge_keys(&self, namespace: &str, owners: &[Owner<'_>]) -> Vec<String> {
        let mut keys = vec![self.tenant_key(namespace, "n"), self.tenant_key(namespace, "b")];
        keys.extend(owners.iter().map(|o| self.tenant_key(namespace, &o.suffix())));
        keys
    }

    /// Charges the record at `record_key` to its namespace and owners until `expires_at`
    /// (unix seconds), or refuses it at a quota.
    pub(super) async fn charge(
        &self,
        record_key: &str,
        charge: &Charge<'_>,
        owners: &[Owner<'_>],
        expires_at: i64,
    ) -> Result<(), StoreError> {
        let part = Part { key: record_key.to_owned(), charge: *charge, expires_at, everywhere: true };
        self.charge_all(owners, std::slice::from_ref(&part)).await
    }

    /// Charges every part (all of one namespace and owner) in one call, or none.
    pub(super) async fn charge_all(&self, owners: &[Owner<'_>], parts: &[Part<'_>]) -> Result<(), StoreError> {
        self.charge_moving(owners, parts, None).await
    }

    /// Charges every part (as [`RedisStore::charge_all`]) and, once charged, moves the
    /// record `moved` names (its key, its charge, until when) forward in its indexes (as
    /// [`RedisStore::extend_charge`]), in the same call (`QUOTA_ADD_BUMP`).
    pub(super) async fn charge_moving(
        &self,
        owners: &[Owner<'_>],
        parts: &[Part<'_>],
        moved: Option<(&str, &Charge<'_>, i64)>,
    ) -> Result<(), StoreError> {
        let Some(first) = parts.first() else { return Ok(()) };
        let (keys, charge_args) = self.counted(first.charge.kind, self.charge_call(owners, parts))?;
        let (script, args) = match moved {
            None => (&self.scripts.quota_add, charge_args),
            Some((key, charge, until)) => {
                let moved = [member(charge.bytes, key), ms(until)];
                (&self.scripts.quota_add_bump, moved.into_iter().chain(charge_args).collect())
            }
        };
        let answer = self.run_script_on::<Vec<i64>>("quota_add", script, &keys, &args).await;
        self.charged(&self.counted(first.charge.kind, answer)?, parts)
    }

    /// The keys and arguments of `charge` (see `quota_functions!`) for `parts`, all of one
    /// namespace and owner; refused when a part is larger than any record may be.
    pub(super) fn charge_call(
        &self,
        owners: &[Owner<'_>],
        parts: &[Part<'_>],
    ) -> Result<(Vec<String>, Vec<String>), StoreError> {
        let limit = crate::sessions::quota::MAX_RECORD_BYTES;
        if let Some(big) = parts.iter().find(|p| p.charge.bytes > limit) {
            return Err(StoreError::RecordTooLarge { bytes: big.charge.bytes, limit });
        }
        let namespace = parts.first().map_or("", |p| p.charge.namespace);
        let q = &self.quotas;
        let mut args = Vec::with_capacity(3 + 3 * parts.len());
        args.extend([q.namespace_records.to_string(), q.namespace_bytes.to_string(), q.identity_records.to_string()]);
        for part in parts {
            args.push(score(part.expires_at, &part.key));
            args.push(member(part.charge.bytes, &part.key));
            args.push(if part.everywhere { "a" } else { "q" }.to_owned());
        }
        Ok((self.charge_keys(namespace, owners), args))
    }

    /// What `charge`'s answer `{code, i}` means for `parts`: `0` charged, `1` refused at
    /// the namespace's quota, `2` at the owner's; a refusal is counted as the kind of the
    /// `i`th part (the first over the quota).
    pub(super) fn charged(&self, answer: &[i64], parts: &[Part<'_>]) -> Result<(), StoreError> {
        let q = &self.quotas;
        let refused = match (answer.first(), parts.first()) {
            (Some(0), _) => return Ok(()),
            (Some(1), Some(_)) => StoreError::NamespaceQuota { records: q.namespace_records, bytes: q.namespace_bytes },
            (Some(2), Some(part)) => match part.charge.owner {
                crate::sessions::ChargeOwner::Identity(_) => StoreError::IdentityQuota { records: q.identity_records },
                crate::sessions::ChargeOwner::Client { .. } => StoreError::ClientQuota { records: q.identity_records },
            },
            _ => return Err(StoreError::Unavailable),
        };
        let at = answer.get(1).and_then(|i| usize::try_from(*i).ok()).and_then(|i| i.checked_sub(1));
        if let Some(part) = at.and_then(|i| parts.get(i)).or(parts.first()) {
            self.count_refusal(part.charge.kind, refused);
        }
        Err(refused)
    }

    /// Moves a renewed record's expiry forward in its indexes, so renewals cannot keep
    /// records alive past their charge (which would let a tenant exceed its share).
    pub(super) async fn extend_charge(
        &self,
        record_key: &str,
        charge: &Charge<'_>,
        owners: &[Owner<'_>],
        expires_at: i64,
    ) -> Result<(), StoreError> {
        let keys = self.charge_keys(charge.namespace, owners);
        let args = [member(charge.bytes, record_key), ms(expires_at)];
        self.run_script_on::<i64>("index_bump", &self.scripts.index_bump, &keys, &args).await.map(drop)
    }

    /// Gives a removed record's charge back.
    pub(super) async fn uncharge(
        &self,
        record_key: &str,
        charge: &Charge<'_>,
        owners: &[Owner<'_>],
    ) -> Result<(), StoreError> {
        self.uncharge_members(charge.namespace, owners, vec![member(charge.bytes, record_key)]).await
    }

    /// Gives back the charges of `members` (see [`member`]) of one namespace and owners.
    pub(super) async fn uncharge_members(
        &self,
        namespace: &str,
        owners: &[Owner<'_>],
        members: Vec<String>,
    ) -> Result<(), StoreError> {
        if members.is_empty() {
            return Ok(());
        }
        let keys = self.charge_keys(namespace, owners);
        self.run_script_on::<i64>("index_remove", &self.scripts.index_remove, &keys, &members).await.map(drop)
    }

    /// Deletes every record an owner holds, and its index; how many records. Called when
    /// the owner left the directory.
    pub async fn drop_owner(&self, namespace: &str, owner_suffix: &str) -> Result<usize, StoreError> {
        let keys = [
            self.tenant_key(namespace, owner_suffix),
            self.tenant_key(namespace, "n"),
            self.tenant_key(namespace, "b"),
        ];
        let mut dropped = 0;
        loop {
            let page = [DROP_PAGE.to_string()];
            let records: Vec<String> = self.run_script_on("index_drop", &self.scripts.index_drop, &keys, &page).await?;
            if records.is_empty() {
                return Ok(dropped);
            }
            // Each record is in its own slot: one call each. A grant goes whole, its tokens'
            // charges with it (a client's or provider's index lists the grant, not each
            // token); an identity's index lists a grant once per token: taken once.
            let own = format!("{}:{{", self.prefix);
            let unique: std::collections::BTreeSet<&String> = records.iter().filter(|k| k.starts_with(&own)).collect();
            for key in unique {
                if key.ends_with(":grant") {
                    dropped += usize::from(self.take_grant(key).await?);
                    continue;
                }
                let mut cmd = redis::cmd("DEL");
                cmd.arg(key);
                dropped += usize::try_from(self.run::<i64>("owner_drop", cmd).await?).unwrap_or(0);
            }
        }
    }
}

/// One record to charge: the record key its member names, what it costs, until when (unix
/// seconds), and whether every owner's index lists it or only those a quota reads (the
/// namespace's and the charged owner's): a grant's tokens need no member in its client's and
/// provider's indexes, whose departures take the grant by its own member and give its
/// tokens' charges back through its fields.
pub(super) struct Part<'a> {
    pub key: String,
    pub charge: Charge<'a>,
    pub expires_at: i64,
    pub everywhere: bool,
}

/// A member's score: its expiry (unix ms), and a fraction of a millisecond taken from its
/// record key. Redis orders members of equal score by comparing the members themselves, and
/// at a busy tenant's rate hundreds of records share each millisecond: every insertion then
/// compared long keys along its path through the index. With the fraction, ties are rare and
/// an insertion compares numbers (the fraction never makes a record outlive its expiry by a
/// millisecond, and the indexes' own expiries are whole milliseconds rounded up).
fn score(expires_at: i64, key: &str) -> String {
    // FNV-1a: any spread will do, the keys end in random hex.
    let hash = key.bytes().fold(0xcbf2_9ce4_8422_2325u64, |h, b| (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3));
    format!("{}.{:03}", ms(expires_at), hash % 1000)
}

/// Members an owner's drop takes per script call, so no call blocks Redis for long.
const DROP_PAGE: usize = 1000;

/// An index member: the record's bytes (given back when it leaves) and its key, with a
/// `|<part>` when one key holds several charged records (a grant's access and refresh
/// tokens).
pub(super) fn member(bytes: usize, record_key: &str) -> String {
    format!("{bytes}|{record_key}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn owner_suffixes_cannot_collide() {
        let a = Owner::Identity { name: "a", uid: "b:c", id: "d" }.suffix();
        let b = Owner::Identity { name: "a:b", uid: "c", id: "d" }.suffix();
        assert_ne!(a, b);
        assert_ne!(Owner::Client { client_id: "x" }.suffix(), Owner::Provider { name: "x" }.suffix());
        assert_ne!(Owner::Client { client_id: "x" }.suffix(), Owner::ClientGrants { client_id: "x" }.suffix());
        assert_eq!(member(12, "p:{ab}:tok"), "12|p:{ab}:tok");
        // The index keys of stores already running.
        let identity = Owner::Identity { name: "a\"b", uid: "u", id: "i" }.suffix();
        assert_eq!(identity, format!("i:{}", serde_json::json!(["a\"b", "u", "i"])));
        assert_eq!(Owner::Provider { name: "p" }.suffix(), r#"p:["p"]"#);
    }

    #[test]
    fn scores_stay_within_their_millisecond_and_apart() {
        let scores: std::collections::BTreeSet<String> =
            (0..100).map(|i| score(1_700_000_000, &format!("p:{{{i:064x}}}:grant"))).collect();
        assert!(scores.len() > 90, "the fractions collide: {scores:?}");
        for s in &scores {
            let at: f64 = s.parse().unwrap();
            assert!((1_700_000_000_000.0..1_700_000_000_001.0).contains(&at), "{s}");
            assert_eq!(s.split('.').nth(1).map(str::len), Some(3), "{s}");
        }
    }
}
