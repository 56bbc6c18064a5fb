//! What the server may fetch when it reads an external issuer, decided without I/O.
//!
//! An `oidcDiscoveryUrl` is written by a namespace's owner, and the discovery document it
//! points at names further URLs (`jwks_uri`, redirects): without rules, any tenant could make
//! the server fetch from wherever it can reach, cloud metadata services included. So every
//! address the server connects to for an issuer (URL literals and what DNS answers) passes
//! [`FetchPolicy::check_address`], redirects stay on their origin, a discovery document must
//! name the issuer it was fetched for, and a failing issuer is retried less and less often.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use url::Url;

/// Redirects followed per fetch, all on the origin of the first URL.
pub const MAX_REDIRECTS: usize = 3;
/// Longest wait between two fetches of a failing issuer (seconds).
pub const BACKOFF_CAP: i64 = 300;

/// The well-known suffix of an OpenID discovery URL (OpenID Connect Discovery 1.0 §4).
pub const OPENID_CONFIGURATION: &str = "/.well-known/openid-configuration";
/// The well-known suffix of RFC 8414 authorization server metadata.
const OAUTH_METADATA: &str = "/.well-known/oauth-authorization-server";

/// AWS's IPv6 instance metadata address (IMDS on Nitro instances).
const AWS_METADATA_V6: Ipv6Addr = Ipv6Addr::new(0xfd00, 0x0ec2, 0, 0, 0, 0, 0, 0x0254);
/// Alibaba Cloud's metadata address (in the shared 100.64.0.0/10 range, so named alone).
const ALIBABA_METADATA: Ipv4Addr = Ipv4Addr::new(100, 100, 100, 200);

/// Why an address may not be connected to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum AddressRefused {
    #[error("{0} is a link-local address (169.254.0.0/16, fe80::/10), where cloud metadata services answer")]
    LinkLocal(IpAddr),
    #[error("{0} is a cloud metadata address")]
    Metadata(IpAddr),
    #[error("{0} is a loopback address (allowed only with --allow-insecure-issuers)")]
    Loopback(IpAddr),
    #[error("{0} is not a unicast address (unspecified, broadcast or multicast)")]
    NotUnicast(IpAddr),
}

/// Why a URL may not be fetched.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum UrlRefused {
    #[error("not an absolute URL")]
    Unparsable,
    #[error("plain http is refused (start with --allow-insecure-issuers for local trials)")]
    Insecure,
    #[error("the scheme {0:?} is refused (https only)")]
    Scheme(String),
    #[error("the URL has no host")]
    NoHost,
    #[error(transparent)]
    Address(#[from] AddressRefused),
    #[error("a redirect to another origin ({0}) is refused (same scheme, host and port only)")]
    CrossOrigin(String),
    #[error("more than {MAX_REDIRECTS} redirects")]
    TooManyRedirects,
}

/// Why a discovery document does not belong to the URL it was fetched from.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum IssuerRefused {
    #[error(
        "the URL is neither an issuer URL nor ends in {OPENID_CONFIGURATION}, so the issuer it must name is unknown"
    )]
    NoExpectedIssuer,
    #[error("the discovery document names issuer {found:?}, but was fetched for issuer {expected:?}")]
    Mismatch { expected: String, found: String },
}

/// The address rules of one server: loopback (and plain http) only when the operator started
/// it with `--allow-insecure-issuers`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FetchPolicy {
    pub allow_insecure: bool,
}

impl FetchPolicy {
    /// Link-local and metadata addresses never; loopback only when insecure issuers are
    /// allowed; private ranges (10/8, 172.16/12, 192.168/16, fc00::/7) always, because the
    /// in-cluster service-account issuer lives there. IPv4 addresses written as IPv6
    /// (`::ffff:a.b.c.d`, `::a.b.c.d`, NAT64 `64:ff9b::a.b.c.d`) are judged as the IPv4
    /// address they reach.
    pub fn check_address(&self, ip: IpAddr) -> Result<(), AddressRefused> {
        let reached = match ip {
            IpAddr::V6(v6) => embedded_ipv4(v6).map_or(ip, IpAddr::V4),
            v4 => v4,
        };
        let class = match reached {
            IpAddr::V4(v4) => classify_v4(v4),
            IpAddr::V6(v6) => classify_v6(v6),
        };
        match class {
            Class::Allowed => Ok(()),
            Class::Loopback if self.allow_insecure => Ok(()),
            Class::Loopback => Err(AddressRefused::Loopback(ip)),
            Class::LinkLocal => Err(AddressRefused::LinkLocal(ip)),
            Class::Metadata => Err(AddressRefused::Metadata(ip)),
            Class::NotUnicast => Err(AddressRefused::NotUnicast(ip)),
        }
    }

    /// A URL before it is requested: https (http too when insecure issuers are allowed), a
    /// host, and, when the host is an address literal, the address rules (a literal is never
    /// resolved, so the resolver's check would not see it).
    pub fn check_url(&self, url: &Url) -> Result<(), UrlRefused> {
        match url.scheme() {
            "https" => {}
            "http" if self.allow_insecure => {}
            "http" => return Err(UrlRefused::Insecure),
            other => return Err(UrlRefused::Scheme(other.to_owned())),
        }
        match url.host() {
            None => Err(UrlRefused::NoHost),
            Some(url::Host::Ipv4(v4)) => Ok(self.check_address(IpAddr::V4(v4))?),
            Some(url::Host::Ipv6(v6)) => Ok(self.check_address(IpAddr::V6(v6))?),
            Some(url::Host::Domain(_)) => Ok(()),
        }
    }

    /// [`FetchPolicy::check_url`] on text.
    pub fn check_url_text(&self, url: &str) -> Result<Url, UrlRefused> {
        let parsed = Url::parse(url).map_err(|_| UrlRefused::Unparsable)?;
        self.check_url(&parsed)?;
        Ok(parsed)
    }

    /// A redirect from the request chain `previous` (first URL first) to `next`: at most
    /// [`MAX_REDIRECTS`], each to the origin (scheme, host, port) of the first URL, so a
    /// trusted host cannot bounce the server to one the owner never named.
    pub fn check_redirect(&self, previous: &[Url], next: &Url) -> Result<(), UrlRefused> {
        if previous.len() > MAX_REDIRECTS {
            return Err(UrlRefused::TooManyRedirects);
        }
        if let Some(first) = previous.first()
            && first.origin() != next.origin()
        {
            return Err(UrlRefused::CrossOrigin(next.origin().ascii_serialization()));
        }
        self.check_url(next)
    }
}

enum Class {
    Allowed,
    Loopback,
    LinkLocal,
    Metadata,
    NotUnicast,
}

fn classify_v4(ip: Ipv4Addr) -> Class {
    if ip.is_loopback() {
        Class::Loopback
    } else if ip.is_link_local() {
        Class::LinkLocal
    } else if ip == ALIBABA_METADATA {
        Class::Metadata
    } else if ip.octets()[0] == 0 || ip.is_broadcast() || ip.is_multicast() {
        // 0.0.0.0/8 reaches the local host on Linux: as dangerous as loopback, never useful.
        Class::NotUnicast
    } else {
        Class::Allowed
    }
}

fn classify_v6(ip: Ipv6Addr) -> Class {
    if ip.is_loopback() {
        Class::Loopback
    } else if ip == AWS_METADATA_V6 {
        Class::Metadata
    } else if ip.segments()[0] & 0xffc0 == 0xfe80 {
        Class::LinkLocal
    } else if ip.is_unspecified() || ip.is_multicast() {
        Class::NotUnicast
    } else {
        Class::Allowed
    }
}

/// The IPv4 address an IPv6 address reaches, if it embeds one: IPv4-mapped `::ffff:0:0/96`,
/// the deprecated IPv4-compatible `::/96` (but not `::` and `::1`), and the NAT64 well-known
/// prefix `64:ff9b::/96` (RFC 6052).
fn embedded_ipv4(ip: Ipv6Addr) -> Option<Ipv4Addr> {
    if let Some(v4) = ip.to_ipv4_mapped() {
        return Some(v4);
    }
    let s = ip.segments();
    let tail = Ipv4Addr::new((s[6] >> 8) as u8, s[6] as u8, (s[7] >> 8) as u8, s[7] as u8);
    let compatible = s[..6] == [0; 6] && !ip.is_unspecified() && !ip.is_loopback();
    let nat64 = s[..6] == [0x64, 0xff9b, 0, 0, 0, 0];
    (compatible || nat64).then_some(tail)
}

/// The issuer a discovery URL belongs to: the URL without `/.well-known/openid-configuration`
/// (OpenID Connect Discovery §4), or with the RFC 8414 §3.1 well-known segment taken out of
/// the path (`https://h/.well-known/openid-configuration/tenant` is issuer `https://h/tenant`).
pub fn expected_issuer(discovery_url: &str) -> Option<String> {
    if let Some(issuer) = discovery_url.strip_suffix(OPENID_CONFIGURATION) {
        return Some(issuer.to_owned());
    }
    let url = Url::parse(discovery_url).ok()?;
    let path = url.path();
    let rest = [OPENID_CONFIGURATION, OAUTH_METADATA].iter().find_map(|w| path.strip_prefix(w))?;
    if !(rest.is_empty() || rest.starts_with('/')) || url.query().is_some() {
        return None;
    }
    let origin = url.origin().ascii_serialization();
    Some(format!("{origin}{rest}"))
}

/// The discovery document's `issuer` against the URL it was fetched from (OpenID Connect
/// Discovery §4.3: it must be the issuer whose discovery URL this is). A trailing `/` of the
/// issuer is allowed because §4.1 removes it before appending the well-known path.
pub fn check_issuer(discovery_url: &str, issuer: &str) -> Result<(), IssuerRefused> {
    let expected = expected_issuer(discovery_url).ok_or(IssuerRefused::NoExpectedIssuer)?;
    if issuer == expected || issuer.strip_suffix('/') == Some(expected.as_str()) {
        Ok(())
    } else {
        Err(IssuerRefused::Mismatch { expected, found: super::clip(issuer).into_owned() })
    }
}

/// When an issuer was last fetched and how many fetches in a row failed: the shell keeps
/// one per issuer, this decides when the next fetch may start.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct FetchState {
    pub last_attempt: Option<i64>,
    pub failures: u32,
}

impl FetchState {
    /// The earliest time of the next fetch: `min_interval` after a success, and after the
    /// n-th failure in a row `min_interval * 2^(n-1)` capped at [`BACKOFF_CAP`] (never less
    /// than one second, so a zero interval cannot make a failing issuer a busy loop).
    pub fn next_allowed(&self, min_interval: i64) -> i64 {
        match self.last_attempt {
            None => i64::MIN,
            Some(at) => at.saturating_add(backoff_delay(self.failures, min_interval)),
        }
    }

    /// Whether a fetch may start at `now`.
    pub fn due(&self, now: i64, min_interval: i64) -> bool {
        now >= self.next_allowed(min_interval)
    }

    /// The state after a fetch that started at `now`.
    pub fn after(self, now: i64, ok: bool) -> Self {
        Self { last_attempt: Some(now), failures: if ok { 0 } else { self.failures.saturating_add(1) } }
    }
}

/// Seconds to wait after `failures` failed fetches in a row (0: the last fetch succeeded).
pub fn backoff_delay(failures: u32, min_interval: i64) -> i64 {
    let base = min_interval.max(0);
    if failures == 0 {
        return base;
    }
    let base = base.max(1);
    let factor = 1i64 << (failures - 1).min(32);
    base.saturating_mul(factor).min(BACKOFF_CAP.max(base))
}

#[cfg(test)]
mod tests {
    use super::*;

    const STRICT: FetchPolicy = FetchPolicy { allow_insecure: false };
    const INSECURE: FetchPolicy = FetchPolicy { allow_insecure: true };

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn link_local_and_metadata_addresses_are_never_fetched() {
        for a in [
            "169.254.169.254",
            "169.254.0.1",
            "169.254.255.255",
            "fe80::1",
            "febf::ffff",
            "::ffff:169.254.169.254",
            "::169.254.169.254",
            "64:ff9b::169.254.169.254",
            "::ffff:a9fe:a9fe",
        ] {
            for policy in [STRICT, INSECURE] {
                assert!(matches!(policy.check_address(ip(a)), Err(AddressRefused::LinkLocal(_))), "{a}");
            }
        }
        for a in ["fd00:ec2::254", "100.100.100.200", "::ffff:100.100.100.200"] {
            for policy in [STRICT, INSECURE] {
                assert!(matches!(policy.check_address(ip(a)), Err(AddressRefused::Metadata(_))), "{a}");
            }
        }
        // The error names the address as written and the rule.
        let e = STRICT.check_address(ip("::ffff:169.254.169.254")).unwrap_err().to_string();
        assert!(e.contains("::ffff:169.254.169.254") && e.contains("link-local"), "{e}");
    }

    #[test]
    fn loopback_needs_allow_insecure_and_private_ranges_are_allowed() {
        for a in ["127.0.0.1", "127.255.0.9", "::1", "::ffff:127.0.0.1"] {
            assert_eq!(STRICT.check_address(ip(a)), Err(AddressRefused::Loopback(ip(a))), "{a}");
            assert_eq!(INSECURE.check_address(ip(a)), Ok(()), "{a}");
        }
        for a in ["0.0.0.0", "0.1.2.3", "::", "255.255.255.255", "224.0.0.1", "ff02::1", "::ffff:0.0.0.0"] {
            for policy in [STRICT, INSECURE] {
                assert!(matches!(policy.check_address(ip(a)), Err(AddressRefused::NotUnicast(_))), "{a}");
            }
        }
        for a in [
            "10.96.0.1",
            "172.16.0.1",
            "172.31.255.254",
            "192.168.1.1",
            "100.64.0.1",
            "8.8.8.8",
            "fc00::1",
            "fd00::1",
            "fd00:ec2::253",
            "2001:db8::1",
            "::ffff:10.0.0.1",
            "fec0::1",
        ] {
            assert_eq!(STRICT.check_address(ip(a)), Ok(()), "{a}");
        }
    }

    #[test]
    fn urls_are_checked_before_any_connection() {
        let refused = |p: FetchPolicy, u: &str| p.check_url_text(u).unwrap_err();
        assert_eq!(refused(STRICT, "http://issuer.example/"), UrlRefused::Insecure);
        assert_eq!(INSECURE.check_url_text("http://issuer.example/").map(|_| ()), Ok(()));
        assert_eq!(refused(INSECURE, "file:///etc/passwd"), UrlRefused::Scheme("file".into()));
        assert_eq!(refused(STRICT, "not a url"), UrlRefused::Unparsable);
        for u in [
            "https://169.254.169.254/latest/meta-data",
            "https://[fe80::1]/",
            "https://[::ffff:169.254.169.254]/",
            // WHATWG host parsing: decimal, hex and trailing-dot forms are the same address.
            "https://2852039166/",
            "https://0xa9.0xfe.0xa9.0xfe/",
            "https://169.254.169.254./",
        ] {
            for p in [STRICT, INSECURE] {
                assert!(matches!(refused(p, u), UrlRefused::Address(AddressRefused::LinkLocal(_))), "{u}");
            }
        }
        assert!(matches!(
            refused(STRICT, "https://[fd00:ec2::254]/"),
            UrlRefused::Address(AddressRefused::Metadata(_))
        ));
        assert!(matches!(refused(STRICT, "https://127.0.0.1:8443/"), UrlRefused::Address(AddressRefused::Loopback(_))));
        assert!(INSECURE.check_url_text("https://127.0.0.1:8443/").is_ok());
        // Names are judged by what they resolve to (the resolver's check), not here.
        assert!(STRICT.check_url_text("https://kubernetes.default.svc/").is_ok());
    }

    #[test]
    fn redirects_stay_on_their_origin_and_are_bounded() {
        let u = |s: &str| Url::parse(s).unwrap();
        let start = [u("https://idp.example/.well-known/openid-configuration")];
        assert_eq!(STRICT.check_redirect(&start, &u("https://idp.example/tenant/config")), Ok(()));
        assert_eq!(STRICT.check_redirect(&start, &u("https://idp.example:443/x")), Ok(()), "default port");
        for other in [
            "https://evil.example/",
            "https://idp.example:8443/",
            "http://idp.example/",
            "https://sub.idp.example/",
            "https://169.254.169.254/",
        ] {
            assert!(matches!(STRICT.check_redirect(&start, &u(other)), Err(UrlRefused::CrossOrigin(_))), "{other}");
        }
        let e = STRICT.check_redirect(&start, &u("https://evil.example/x")).unwrap_err().to_string();
        assert!(e.contains("https://evil.example") && e.contains("another origin"), "{e}");
        let chain: Vec<Url> = (0..=MAX_REDIRECTS).map(|_| start[0].clone()).collect();
        assert_eq!(STRICT.check_redirect(&chain[..MAX_REDIRECTS], &start[0]), Ok(()));
        assert_eq!(STRICT.check_redirect(&chain, &start[0]), Err(UrlRefused::TooManyRedirects));
        // A same-origin redirect of an insecure chain is still judged by the address rules.
        let local = [u("http://127.0.0.1:1/a")];
        assert!(matches!(STRICT.check_redirect(&local, &u("http://127.0.0.1:1/b")), Err(UrlRefused::Insecure)));
        assert_eq!(INSECURE.check_redirect(&local, &u("http://127.0.0.1:1/b")), Ok(()));
    }

    #[test]
    fn the_discovered_issuer_must_be_the_one_discovered() {
        let d = "https://idp.example/tenant/.well-known/openid-configuration";
        assert_eq!(check_issuer(d, "https://idp.example/tenant"), Ok(()));
        assert_eq!(check_issuer(d, "https://idp.example/tenant/"), Ok(()), "§4.1 strips a trailing slash");
        for other in ["https://idp.example", "https://evil.example/tenant", "https://idp.example/tenant//", ""] {
            assert!(matches!(check_issuer(d, other), Err(IssuerRefused::Mismatch { .. })), "{other:?}");
        }
        let e = check_issuer(d, "https://evil.example").unwrap_err().to_string();
        assert!(e.contains("https://evil.example") && e.contains("https://idp.example/tenant"), "{e}");
        // RFC 8414 insertion form.
        let inserted = "https://idp.example/.well-known/openid-configuration/tenant";
        assert_eq!(expected_issuer(inserted).as_deref(), Some("https://idp.example/tenant"));
        assert_eq!(
            expected_issuer("https://idp.example/.well-known/oauth-authorization-server").as_deref(),
            Some("https://idp.example")
        );
        assert_eq!(expected_issuer("https://idp.example/.well-known/jwks.json"), None);
        assert_eq!(
            check_issuer("https://idp.example/custom", "https://idp.example"),
            Err(IssuerRefused::NoExpectedIssuer)
        );
        // A hostile issuer value is cut in the message.
        let long = "x".repeat(10_000);
        assert!(check_issuer(d, &long).unwrap_err().to_string().len() < 600);
    }

    #[test]
    fn failed_fetches_back_off_exponentially_to_a_cap() {
        let delays: Vec<i64> = (0..12).map(|n| backoff_delay(n, 10)).collect();
        assert_eq!(delays, [10, 10, 20, 40, 80, 160, 300, 300, 300, 300, 300, 300]);
        assert_eq!((0..5).map(|n| backoff_delay(n, 1)).collect::<Vec<_>>(), [1, 1, 2, 4, 8]);
        assert_eq!(backoff_delay(3, 0), 4, "a zero interval still backs off from one second");
        assert_eq!(backoff_delay(0, 0), 0, "after a success a zero interval allows refetching at once");
        assert_eq!(backoff_delay(u32::MAX, 1), BACKOFF_CAP);
        assert_eq!(backoff_delay(2, 1000), 1000, "an interval above the cap is kept");

        // The schedule a failing issuer sees with a 1 s interval, polled every second for 40 s.
        let mut state = FetchState::default();
        let mut attempts = Vec::new();
        for now in 1000..1040 {
            if state.due(now, 1) {
                attempts.push(now - 1000);
                state = state.after(now, false);
            }
        }
        assert_eq!(attempts, [0, 1, 3, 7, 15, 31]);
        assert_eq!(state.failures, 6);
        // One success resets it.
        let ok = state.after(2000, true);
        assert_eq!((ok.failures, ok.next_allowed(1)), (0, 2001));
        assert!(FetchState::default().due(i64::MIN, 10), "never fetched: due at once");
    }
}
