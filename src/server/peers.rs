//! Open connections counted per peer, so that one source address cannot take a listener's
//! whole connection cap (docs/design.md, the security model: connections are bounded in all and per peer, and the health
//! probes stay answerable whatever one peer holds).
//!
//! A peer is an IPv4 address, or an IPv6 /64: a /64 is what one subscriber, VM or pod network
//! gets from its provider, and every address in it costs an attacker nothing, so counting per
//! IPv6 address would multiply the cap by 2^64. IPv4-mapped IPv6 addresses (a dual-stack
//! listener) count as the IPv4 address they carry.
//!
//! The table holds one entry per peer with at least one open connection and removes it when
//! its count falls to zero, so its size is bounded by the listener's global cap; each accept
//! and each close is one hash-map operation.

use std::collections::HashMap;
use std::collections::hash_map::Entry;
use std::net::IpAddr;
use std::sync::{Arc, Mutex, PoisonError};

use crate::login::cidr::{self, Cidr};

/// What connections are counted under: an IPv4 address or an IPv6 /64 prefix.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum PeerKey {
    V4(u32),
    V6Prefix64(u64),
}

impl PeerKey {
    pub fn of(addr: IpAddr) -> Self {
        match addr {
            IpAddr::V4(v4) => Self::V4(u32::from(v4)),
            IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
                Some(v4) => Self::V4(u32::from(v4)),
                None => Self::V6Prefix64((u128::from(v6) >> 64) as u64),
            },
        }
    }
}

/// Open connections per peer on one listener, each peer held to `cap`; peers inside `exempt`
/// (the trusted proxies, on the protocol listener) are not counted, since one proxy carries
/// many callers: they are bounded by the listener's global cap alone.
pub struct PeerTable {
    cap: usize,
    exempt: Vec<Cidr>,
    open: Mutex<HashMap<PeerKey, usize>>,
}

impl PeerTable {
    pub fn new(cap: usize, exempt: Vec<Cidr>) -> Arc<Self> {
        Arc::new(Self { cap: cap.max(1), exempt, open: Mutex::new(HashMap::new()) })
    }

    /// Counts a new connection from `addr`, or refuses it when the peer already holds `cap`.
    /// The returned slot gives the count back when dropped.
    pub fn admit(self: &Arc<Self>, addr: IpAddr) -> Option<PeerSlot> {
        if cidr::any_contains(&self.exempt, addr) {
            return Some(PeerSlot(None));
        }
        let key = PeerKey::of(addr);
        let mut open = self.open.lock().unwrap_or_else(PoisonError::into_inner);
        let count = open.entry(key).or_insert(0);
        if *count >= self.cap {
            return None;
        }
        *count += 1;
        Some(PeerSlot(Some((Arc::clone(self), key))))
    }

    /// Peers with at least one open connection (the table's size).
    pub fn peers(&self) -> usize {
        self.open.lock().unwrap_or_else(PoisonError::into_inner).len()
    }

    fn release(&self, key: PeerKey) {
        let mut open = self.open.lock().unwrap_or_else(PoisonError::into_inner);
        if let Entry::Occupied(mut e) = open.entry(key) {
            *e.get_mut() = e.get().saturating_sub(1);
            if *e.get() == 0 {
                e.remove();
            }
        }
    }
}

/// One counted connection; dropping it gives the peer's count back.
pub struct PeerSlot(Option<(Arc<PeerTable>, PeerKey)>);

impl Drop for PeerSlot {
    fn drop(&mut self) {
        if let Some((table, key)) = self.0.take() {
            table.release(key);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn a_peer_at_its_cap_is_refused_while_another_is_admitted() {
        let table = PeerTable::new(2, Vec::new());
        let a1 = table.admit(ip("127.0.0.2")).unwrap();
        let _a2 = table.admit(ip("127.0.0.2")).unwrap();
        assert!(table.admit(ip("127.0.0.2")).is_none());
        assert!(table.admit(ip("127.0.0.3")).is_some());
        drop(a1);
        assert!(table.admit(ip("127.0.0.2")).is_some(), "a closed connection frees its slot");
    }

    #[test]
    fn entries_are_removed_at_zero() {
        let table = PeerTable::new(3, Vec::new());
        let slots: Vec<_> = (1..=50).map(|i| table.admit(ip(&format!("10.0.0.{i}"))).unwrap()).collect();
        assert_eq!(table.peers(), 50);
        drop(slots);
        assert_eq!(table.peers(), 0);
    }

    #[test]
    fn ipv6_peers_count_per_64_and_mapped_ipv4_as_ipv4() {
        let table = PeerTable::new(2, Vec::new());
        let _a = table.admit(ip("2001:db8:1:2::1")).unwrap();
        let _b = table.admit(ip("2001:db8:1:2:ffff::9")).unwrap();
        assert!(table.admit(ip("2001:db8:1:2:abcd::1")).is_none(), "the same /64");
        assert!(table.admit(ip("2001:db8:1:3::1")).is_some(), "another /64");
        let _c = table.admit(ip("192.0.2.7")).unwrap();
        let _d = table.admit(ip("::ffff:192.0.2.7")).unwrap();
        assert!(table.admit(ip("192.0.2.7")).is_none(), "mapped and plain IPv4 are one peer");
    }

    #[test]
    fn exempt_peers_are_not_counted() {
        let table = PeerTable::new(1, vec![Cidr::parse("10.0.0.0/8").unwrap()]);
        let held: Vec<_> = (0..10).map(|_| table.admit(ip("10.1.2.3")).unwrap()).collect();
        assert_eq!(held.len(), 10);
        assert_eq!(table.peers(), 0);
        let _one = table.admit(ip("192.0.2.1")).unwrap();
        assert!(table.admit(ip("192.0.2.1")).is_none());
    }
}
