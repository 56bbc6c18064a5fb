//! Redirect URI matching: exact, except that loopback IP redirect URIs match with any port
//! (RFC 8252 §7.3).

use url::{Host, Url};

fn is_loopback_ip(url: &Url) -> bool {
    match url.host() {
        Some(Host::Ipv4(ip)) => ip.is_loopback(),
        Some(Host::Ipv6(ip)) => ip.is_loopback(),
        _ => false,
    }
}

/// Whether `requested` matches one of the client's registered redirect URIs.
pub fn matches(registered: &[String], requested: &str) -> bool {
    registered.iter().any(|r| r == requested || loopback_match(r, requested))
}

fn loopback_match(registered: &str, requested: &str) -> bool {
    let (Ok(mut reg), Ok(req)) = (Url::parse(registered), Url::parse(requested)) else {
        return false;
    };
    // RFC 8252 §7.3: only http loopback IP literals, and everything but the port must match,
    // as written: the registered URI with the requested port must be the requested text
    // itself, so no parser normalisation (`127.1`, `/x/../`, case) makes a match (and host,
    // path and query are the registered ones).
    reg.set_port(req.port()).is_ok()
        && reg.as_str() == requested
        && reg.scheme() == "http"
        && is_loopback_ip(&reg)
        && req.fragment().is_none()
        && req.username().is_empty()
        && req.password().is_none()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn reg(uris: &[&str]) -> Vec<String> {
        uris.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn exact_match() {
        let r = reg(&["https://app.example.com/callback"]);
        assert!(matches(&r, "https://app.example.com/callback"));
        assert!(!matches(&r, "https://app.example.com/callback/"));
        assert!(!matches(&r, "https://app.example.com/callback?x=1"));
        assert!(!matches(&r, "https://APP.example.com/callback"), "no normalisation");
        assert!(!matches(&r, "https://app.example.com:444/callback"));
        assert!(!matches(&r, "https://app.example.com.evil/callback"));
    }

    #[test]
    fn loopback_any_port() {
        let r = reg(&["http://127.0.0.1/callback", "http://[::1]:8080/cb"]);
        assert!(matches(&r, "http://127.0.0.1:51234/callback"));
        assert!(matches(&r, "http://[::1]:9/cb"));
        assert!(!matches(&r, "http://127.0.0.1:51234/other"));
        assert!(!matches(&r, "https://127.0.0.1:51234/callback"));
        assert!(!matches(&r, "http://localhost:51234/callback"), "IP literals only");
        assert!(!matches(&reg(&["http://localhost/cb"]), "http://localhost:1/cb"));
        assert!(!matches(&r, "http://127.1:5/callback"), "no address normalisation");
        assert!(!matches(&r, "http://127.0.0.1:5/x/../callback"), "no path normalisation");
        assert!(!matches(&r, "HTTP://127.0.0.1:5/callback"), "no scheme normalisation");
        assert!(!matches(&r, "http://[0:0:0:0:0:0:0:1]:9/cb"), "no IPv6 normalisation");
    }
}
