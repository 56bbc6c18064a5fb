//! Trusted-IP checks: is an address inside one of a list of CIDR ranges?

use std::net::IpAddr;

/// An address range.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Cidr {
    network: IpAddr,
    prefix: u8,
}

impl Cidr {
    /// Parses `10.0.0.0/8`, `::/0` or a single address.
    pub fn parse(text: &str) -> Result<Self, String> {
        let (network, prefix) = crate::api::validate::parse_cidr(text)?;
        Ok(Self { network, prefix })
    }

    /// Whether `addr` lies inside. IPv4-mapped IPv6 addresses (`::ffff:a.b.c.d`) are compared
    /// as the IPv4 address they carry, so a dual-stack listener does not defeat IPv4 ranges.
    pub fn contains(&self, addr: IpAddr) -> bool {
        let addr = canonical(addr);
        match (canonical(self.network), addr) {
            (IpAddr::V4(net), IpAddr::V4(a)) => {
                let prefix =
                    if matches!(self.network, IpAddr::V6(_)) { self.prefix.saturating_sub(96) } else { self.prefix };
                prefix_eq(&net.octets(), &a.octets(), prefix)
            }
            (IpAddr::V6(net), IpAddr::V6(a)) => prefix_eq(&net.octets(), &a.octets(), self.prefix),
            _ => false,
        }
    }
}

fn canonical(addr: IpAddr) -> IpAddr {
    match addr {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map(IpAddr::V4).unwrap_or(addr),
        v4 => v4,
    }
}

fn prefix_eq(a: &[u8], b: &[u8], prefix: u8) -> bool {
    let full = usize::from(prefix / 8);
    let rest = prefix % 8;
    if a.len() < full || b.len() < full || a[..full] != b[..full] {
        return false;
    }
    if rest == 0 {
        return true;
    }
    let mask = 0xffu8 << (8 - rest);
    match (a.get(full), b.get(full)) {
        (Some(x), Some(y)) => x & mask == y & mask,
        _ => false,
    }
}

/// Whether `addr` lies in any of `ranges`.
pub fn any_contains(ranges: &[Cidr], addr: IpAddr) -> bool {
    ranges.iter().any(|r| r.contains(addr))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn ipv4() {
        let c = Cidr::parse("10.1.0.0/16").unwrap();
        assert!(c.contains(ip("10.1.255.3")));
        assert!(!c.contains(ip("10.2.0.1")));
        assert!(Cidr::parse("0.0.0.0/0").unwrap().contains(ip("203.0.113.9")));
        assert!(Cidr::parse("192.0.2.7").unwrap().contains(ip("192.0.2.7")));
        assert!(!Cidr::parse("192.0.2.7").unwrap().contains(ip("192.0.2.8")));
        assert!(Cidr::parse("192.0.2.0/25").unwrap().contains(ip("192.0.2.127")));
        assert!(!Cidr::parse("192.0.2.0/25").unwrap().contains(ip("192.0.2.128")));
    }

    #[test]
    fn ipv6() {
        let c = Cidr::parse("2001:db8::/32").unwrap();
        assert!(c.contains(ip("2001:db8:1::1")));
        assert!(!c.contains(ip("2001:db9::1")));
        assert!(Cidr::parse("::/0").unwrap().contains(ip("::1")));
        assert!(!Cidr::parse("::/0").unwrap().contains(ip("127.0.0.1")), "IPv6 ranges do not admit IPv4");
    }

    #[test]
    fn mapped_addresses() {
        let v4 = Cidr::parse("127.0.0.0/8").unwrap();
        assert!(v4.contains(ip("::ffff:127.0.0.1")));
        assert!(!v4.contains(ip("::ffff:10.0.0.1")));
        let mapped_range = Cidr::parse("::ffff:10.0.0.0/104").unwrap();
        assert!(mapped_range.contains(ip("10.0.0.5")));
        assert!(!mapped_range.contains(ip("11.0.0.5")));
    }
}
