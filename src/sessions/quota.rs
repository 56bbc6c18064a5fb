//! What the memory store may hold, in records and in bytes, in all and per tenant.
//!
//! Every live record is charged to its namespace and to the identity whose login it comes
//! from, so one tenant at its share is refused alone (503 `temporarily_unavailable` for its
//! own requests) while every other namespace keeps issuing: without these shares, one
//! namespace reusing one external JWT could fill the whole ceiling with long-lived tokens.

use std::collections::HashMap;

use super::StoreError;
use crate::api::ObjectKey;

/// Default ceiling of live records of every kind together.
pub const DEFAULT_MAX_RECORDS: usize = 1_000_000;
/// Default ceiling in bytes of live records, as [`Charge::bytes`] counts them: 512 MiB,
/// what the chart's memory request leaves for sessions.
pub const DEFAULT_MAX_BYTES: usize = 512 * 1024 * 1024;
/// Default share of the ceilings one namespace may hold, in percent.
pub const DEFAULT_NAMESPACE_PERCENT: u8 = 10;
/// Default live records one identity may hold: half its namespace's default share, so a
/// fleet sharing one identity has room, and a second identity of the namespace too.
pub const DEFAULT_MAX_RECORDS_PER_IDENTITY: usize = 50_000;
/// The largest record the store keeps, in bytes: above what any request within the other
/// limits makes (an alias of [`MAX_ALIAS_BYTES`], a nonce, a redirect URI, 64 scopes).
pub const MAX_RECORD_BYTES: usize = 64 * 1024;
/// The largest entity alias a login stores (the external `sub` and the claims the
/// identity's `claimMappings` pick): a login whose JWT makes a larger one is refused.
pub const MAX_ALIAS_BYTES: usize = 8 * 1024;
/// What a record costs beyond its variable text: the map entry, the key, the fixed fields
/// and the allocator's rounding. Set so that the charge of the `memory` bench's access
/// token (short names, one mapped claim) matches the ~730 bytes of RSS it measures per
/// record at a million records, where the hash table has just doubled (its worst case):
/// a pod at `--max-session-bytes` holds at most about that much (the bench measures 0.57x
/// of a 256 MiB ceiling).
pub const RECORD_OVERHEAD: usize = 618;

/// The ceilings (`--max-session-records`, `--max-session-bytes`,
/// `--max-session-namespace-percent`, `--max-session-records-per-identity`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Quotas {
    pub max_records: usize,
    pub max_bytes: usize,
    /// Records and bytes one namespace may hold (a share of the ceilings).
    pub namespace_records: usize,
    pub namespace_bytes: usize,
    pub identity_records: usize,
}

impl Quotas {
    /// Ceilings with a namespace's share given in percent of each.
    pub fn new(max_records: usize, max_bytes: usize, namespace_percent: u8, identity_records: usize) -> Self {
        let percent = u128::from(namespace_percent.clamp(1, 100));
        let share = |total: usize| usize::try_from(total as u128 * percent / 100).unwrap_or(usize::MAX).max(1);
        Self {
            max_records,
            max_bytes,
            namespace_records: share(max_records),
            namespace_bytes: share(max_bytes),
            identity_records: identity_records.max(1),
        }
    }
}

impl Default for Quotas {
    fn default() -> Self {
        Self::new(DEFAULT_MAX_RECORDS, DEFAULT_MAX_BYTES, DEFAULT_NAMESPACE_PERCENT, DEFAULT_MAX_RECORDS_PER_IDENTITY)
    }
}

/// Whom a record is charged to, and how much.
#[derive(Clone, Copy, Debug)]
pub struct Charge<'a> {
    pub namespace: &'a str,
    pub owner: ChargeOwner<'a>,
    pub bytes: usize,
    /// What kind of record it is (what a refusal is counted as).
    pub kind: super::RecordKind,
}

/// Whose quota a record counts against besides its namespace's.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ChargeOwner<'a> {
    /// The identity whose login (or consent) it comes from.
    Identity(&'a ObjectKey),
    /// An OidcClient acting as itself (client_credentials): the identity quota applies to
    /// its own grants, so one client cannot fill its namespace's share alone.
    Client { namespace: &'a str, name: &'a str },
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Usage {
    pub records: usize,
    pub bytes: usize,
}

impl Usage {
    fn add(&mut self, bytes: usize) {
        self.records += 1;
        self.bytes += bytes;
    }

    fn sub(&mut self, bytes: usize) {
        self.records = self.records.saturating_sub(1);
        self.bytes = self.bytes.saturating_sub(bytes);
    }
}

/// Live usage, in all, per namespace and per identity. Entries at zero are removed, so the
/// maps hold only tenants that hold records.
#[derive(Debug, Default)]
pub struct Ledger {
    total: Usage,
    namespaces: HashMap<String, Usage>,
    identities: HashMap<ObjectKey, Usage>,
    /// Clients' own grants, by the OidcClient's key.
    clients: HashMap<ObjectKey, Usage>,
}

impl Ledger {
    /// Charges one record, or says which ceiling refuses it (nothing is charged then).
    pub fn reserve(&mut self, quotas: &Quotas, charge: &Charge<'_>) -> Result<(), StoreError> {
        if charge.bytes > MAX_RECORD_BYTES {
            return Err(StoreError::RecordTooLarge { bytes: charge.bytes, limit: MAX_RECORD_BYTES });
        }
        if self.total.records >= quotas.max_records {
            return Err(StoreError::Full { limit: quotas.max_records });
        }
        if self.total.bytes + charge.bytes > quotas.max_bytes {
            return Err(StoreError::FullBytes { limit: quotas.max_bytes });
        }
        let ns = self.namespaces.get(charge.namespace).copied().unwrap_or_default();
        if ns.records >= quotas.namespace_records || ns.bytes + charge.bytes > quotas.namespace_bytes {
            return Err(StoreError::NamespaceQuota {
                records: quotas.namespace_records,
                bytes: quotas.namespace_bytes,
            });
        }
        let client_key;
        let (owners, key) = match charge.owner {
            ChargeOwner::Identity(key) => (&mut self.identities, key),
            ChargeOwner::Client { namespace, name } => {
                client_key = ObjectKey::new(namespace, name);
                (&mut self.clients, &client_key)
            }
        };
        let owner = owners.get(key).copied().unwrap_or_default();
        if owner.records >= quotas.identity_records {
            return Err(match charge.owner {
                ChargeOwner::Identity(_) => StoreError::IdentityQuota { records: quotas.identity_records },
                ChargeOwner::Client { .. } => StoreError::ClientQuota { records: quotas.identity_records },
            });
        }
        self.total.add(charge.bytes);
        // Look up before inserting: the usual tenant is known, and its key is not copied.
        match self.namespaces.get_mut(charge.namespace) {
            Some(u) => u.add(charge.bytes),
            None => {
                self.namespaces.insert(charge.namespace.to_owned(), Usage { records: 1, bytes: charge.bytes });
            }
        }
        match owners.get_mut(key) {
            Some(u) => u.add(charge.bytes),
            None => {
                owners.insert(key.clone(), Usage { records: 1, bytes: charge.bytes });
            }
        }
        Ok(())
    }

    /// Gives back what one record was charged.
    pub fn release(&mut self, charge: &Charge<'_>) {
        self.total.sub(charge.bytes);
        if let Some(u) = self.namespaces.get_mut(charge.namespace) {
            u.sub(charge.bytes);
            if u.records == 0 {
                self.namespaces.remove(charge.namespace);
            }
        }
        let client_key;
        let (owners, key) = match charge.owner {
            ChargeOwner::Identity(key) => (&mut self.identities, key),
            ChargeOwner::Client { namespace, name } => {
                client_key = ObjectKey::new(namespace, name);
                (&mut self.clients, &client_key)
            }
        };
        if let Some(u) = owners.get_mut(key) {
            u.sub(charge.bytes);
            if u.records == 0 {
                owners.remove(key);
            }
        }
    }

    pub fn total(&self) -> Usage {
        self.total
    }

    pub fn namespace(&self, namespace: &str) -> Usage {
        self.namespaces.get(namespace).copied().unwrap_or_default()
    }

    pub fn identity(&self, identity: &ObjectKey) -> Usage {
        self.identities.get(identity).copied().unwrap_or_default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn charge<'a>(ns: &'a str, id: &'a ObjectKey, bytes: usize) -> Charge<'a> {
        Charge { namespace: ns, owner: ChargeOwner::Identity(id), bytes, kind: crate::sessions::RecordKind::Code }
    }

    #[test]
    fn each_ceiling_refuses_alone_and_releases_give_room_back() {
        let quotas = Quotas::new(100, 100_000, 10, 5);
        assert_eq!((quotas.namespace_records, quotas.namespace_bytes), (10, 10_000));
        let mut l = Ledger::default();
        let (a1, a2, b1) = (ObjectKey::new("a", "one"), ObjectKey::new("a", "two"), ObjectKey::new("b", "one"));
        for _ in 0..5 {
            l.reserve(&quotas, &charge("a", &a1, 100)).unwrap();
        }
        assert_eq!(l.reserve(&quotas, &charge("a", &a1, 100)), Err(StoreError::IdentityQuota { records: 5 }));
        for _ in 0..5 {
            l.reserve(&quotas, &charge("a", &a2, 100)).unwrap();
        }
        assert!(matches!(l.reserve(&quotas, &charge("a", &a2, 100)), Err(StoreError::NamespaceQuota { .. })));
        l.reserve(&quotas, &charge("b", &b1, 100)).expect("another namespace is not refused");
        assert_eq!(l.namespace("a"), Usage { records: 10, bytes: 1000 });
        l.release(&charge("a", &a1, 100));
        l.reserve(&quotas, &charge("a", &a1, 100)).expect("room given back");
        assert!(matches!(
            l.reserve(&quotas, &charge("b", &b1, MAX_RECORD_BYTES + 1)),
            Err(StoreError::RecordTooLarge { .. })
        ));
        // Bytes: a namespace's share of the byte ceiling.
        assert!(matches!(l.reserve(&quotas, &charge("b", &b1, 9_950)), Err(StoreError::NamespaceQuota { .. })));
        for _ in 0..5 {
            l.release(&charge("a", &a1, 100));
        }
        assert_eq!(l.identity(&a1), Usage::default(), "an identity at zero is forgotten");
        assert_eq!(l.identities.len(), 2);
    }

    #[test]
    fn the_global_ceilings_hold() {
        let quotas = Quotas::new(2, 1_000, 100, 10);
        let mut l = Ledger::default();
        let id = ObjectKey::new("a", "one");
        l.reserve(&quotas, &charge("a", &id, 600)).unwrap();
        assert_eq!(l.reserve(&quotas, &charge("a", &id, 600)), Err(StoreError::FullBytes { limit: 1_000 }));
        l.reserve(&quotas, &charge("a", &id, 100)).unwrap();
        assert_eq!(l.reserve(&quotas, &charge("a", &id, 1)), Err(StoreError::Full { limit: 2 }));
        assert_eq!(l.total(), Usage { records: 2, bytes: 700 });
    }
}
