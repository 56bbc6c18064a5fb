//! Replay records of `private_key_jwt` client assertions (RFC 7523 §3 item 7: "the
//! authorization server may ensure that JWTs are not replayed by maintaining the set of used
//! `jti` values for the length of time for which the JWT would be considered valid"). One
//! record per spent `jti`, charged to its client like its own grants, dropped at the
//! assertion's `exp` (with the skew the check allows): past it the assertion is refused as
//! expired anyway.

use super::quota::{Charge, ChargeOwner, RECORD_OVERHEAD};
use super::{RecordKind, token_hash};

/// An assertion being spent: whose, which `jti`, and until when it must stay spent.
#[derive(Clone, Copy, Debug)]
pub struct AssertionUse<'a> {
    pub namespace: &'a str,
    /// The OidcClient's name (its quota) and `client_id` (the `jti`'s issuer).
    pub client: &'a str,
    pub client_id: &'a str,
    pub provider: &'a str,
    pub jti: &'a str,
    /// Unix seconds after which the record goes.
    pub expires_at: i64,
}

/// Whether an assertion was spent now or before.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AssertionSpend {
    Fresh,
    Replayed,
}

impl AssertionUse<'_> {
    /// The record's key: the `jti` is unique per issuer (the client), so both name it; the
    /// hash keeps an attacker-chosen `jti` out of key names and bounds the key's size.
    pub fn hash(&self) -> [u8; 32] {
        let text = serde_json::json!([self.namespace, self.client_id, self.jti]).to_string();
        token_hash(&text)
    }

    /// What the record costs: a key and an expiry, counted against the client's own quota
    /// (as its client_credentials grants are) and its namespace's share.
    pub fn charge(&self) -> Charge<'_> {
        Charge {
            namespace: self.namespace,
            owner: ChargeOwner::Client { namespace: self.namespace, name: self.client },
            bytes: RECORD_OVERHEAD + self.namespace.len() + self.client.len(),
            kind: RecordKind::ClientAssertion,
        }
    }
}
