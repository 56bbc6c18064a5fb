//! HTTPS: a user-provided certificate, or a kept CA (a state folder in standalone mode, a
//! Secret for the operator) that signs a fresh leaf certificate at every start.

use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use rcgen::{
    BasicConstraints, CertificateParams, CidrSubnet, DnType, GeneralSubtree, IsCa, Issuer, KeyPair, KeyUsagePurpose,
    NameConstraints, SanType,
};
use tokio_rustls::TlsAcceptor;
use tokio_rustls::rustls;

use crate::files;

/// Why TLS could not be set up.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("{path}: {reason}")]
    File { path: PathBuf, reason: String },
    #[error("making a certificate: {0}")]
    Generate(#[from] rcgen::Error),
    #[error("TLS configuration: {0}")]
    Config(#[from] rustls::Error),
    #[error("{0} holds no PEM certificate or private key")]
    Empty(PathBuf),
}

fn file_err(path: &Path, e: impl std::fmt::Display) -> TlsError {
    TlsError::File { path: path.to_owned(), reason: e.to_string() }
}

/// A server certificate chain and key, PEM.
pub struct CertifiedKey {
    pub chain_pem: String,
    pub key_pem: String,
}

/// The CA's certificate parameters, name-constrained (RFC 5280 §4.2.1.10) to `names`, the
/// names its serving certificate carries (a DNS name with its subdomains, an IP address
/// alone): a client that trusts this CA for this server then trusts nothing it might sign
/// for any other name, should its key leak from a state folder or a Secret.
fn ca_params(common_name: &str, names: &[String]) -> Result<CertificateParams, rcgen::Error> {
    let mut params = CertificateParams::new(Vec::<String>::new())?;
    params.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
    params.distinguished_name.push(DnType::CommonName, common_name);
    params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
    params.not_before = rcgen::date_time_ymd(2025, 1, 1);
    params.not_after = rcgen::date_time_ymd(2045, 1, 1);
    let mut permitted = Vec::new();
    for name in names {
        let subtree = match name.parse::<IpAddr>() {
            // One address: a /32 or /128 subnet.
            Ok(ip) => GeneralSubtree::IpAddress(CidrSubnet::from_addr_prefix(ip, if ip.is_ipv4() { 32 } else { 128 })),
            Err(_) => GeneralSubtree::DnsName(name.clone()),
        };
        if !permitted.contains(&subtree) {
            permitted.push(subtree);
        }
    }
    if !permitted.is_empty() {
        params.name_constraints =
            Some(NameConstraints { permitted_subtrees: permitted, excluded_subtrees: Vec::new() });
    }
    Ok(params)
}

/// A CA certificate and its private key, PEM: what signs the serving certificate when no
/// certificate is given. Standalone keeps it in its state folder, the operator in a Secret.
/// The key is what is kept; the certificate is made again (same key, same name) whenever the
/// names it is constrained to change, so clients re-read it then.
#[derive(Clone)]
pub struct CaPem {
    pub cert_pem: String,
    pub key_pem: String,
    /// The CA's common name: a leaf names its issuer by it.
    pub common_name: &'static str,
}

/// The file (or Secret key) beside `ca.crt` listing the names it is constrained to.
pub const CA_NAMES: &str = "ca.names";

/// Common name of the standalone mode's CA (state folder).
pub const STANDALONE_CA: &str = "oidc-operator standalone CA";
/// Common name of the operator's CA (Secret).
pub const OPERATOR_CA: &str = "oidc-operator CA";

impl CaPem {
    /// A new CA (P-256, valid until 2045) constrained to `names`.
    pub fn generate(common_name: &'static str, names: &[String]) -> Result<CaPem, TlsError> {
        let key = KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256)?;
        let cert = ca_params(common_name, names)?.self_signed(&key)?;
        Ok(CaPem { cert_pem: cert.pem(), key_pem: key.serialize_pem(), common_name })
    }

    /// The same CA (key and name) with its certificate constrained to `names`.
    pub fn constrained_to(&self, names: &[String]) -> Result<CaPem, TlsError> {
        let cert = ca_params(self.common_name, names)?.self_signed(&KeyPair::from_pem(&self.key_pem)?)?;
        Ok(CaPem { cert_pem: cert.pem(), key_pem: self.key_pem.clone(), common_name: self.common_name })
    }

    /// Issues a fresh leaf certificate for `hosts`; the chain ends with the CA certificate.
    /// Call it on a CA constrained to the same `hosts` ([`CaPem::constrained_to`]).
    pub fn issue(&self, hosts: &[String]) -> Result<CertifiedKey, TlsError> {
        let issuer = Issuer::new(ca_params(self.common_name, hosts)?, KeyPair::from_pem(&self.key_pem)?);
        let mut params = CertificateParams::new(Vec::<String>::new())?;
        params.distinguished_name.push(DnType::CommonName, "oidc-operator");
        for host in hosts {
            let san = match host.parse::<IpAddr>() {
                Ok(ip) => SanType::IpAddress(ip),
                Err(_) => SanType::DnsName(host.as_str().try_into()?),
            };
            if !params.subject_alt_names.contains(&san) {
                params.subject_alt_names.push(san);
            }
        }
        let leaf_key = KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256)?;
        let leaf = params.signed_by(&leaf_key, &issuer)?;
        Ok(CertifiedKey { chain_pem: format!("{}{}", leaf.pem(), self.cert_pem), key_pem: leaf_key.serialize_pem() })
    }
}

/// The `ca.names` text of a CA constrained to `names`: one name a line.
pub fn names_text(names: &[String]) -> String {
    names.iter().map(|n| format!("{n}\n")).collect()
}

/// Loads the CA kept in `dir` (making it on first use), its certificate constrained to
/// `names`; `ca.crt` is there for clients to trust. When the names changed since `ca.crt`
/// was written (another --external-url, or a CA from before name constraints), `ca.crt` is
/// made again from the same key: a client holding a CA certificate from before name
/// constraints keeps verifying (and gets the constraint once it reads the new one); one
/// holding a certificate constrained to other names must read the new one.
pub fn ca_in_dir(dir: &Path, names: &[String]) -> Result<CaPem, TlsError> {
    std::fs::create_dir_all(dir).map_err(|e| file_err(dir, e))?;
    let (ca_crt, ca_key, ca_names) = (dir.join("ca.crt"), dir.join("ca.key"), dir.join(CA_NAMES));
    let read = |path: &Path| std::fs::read_to_string(path).map_err(|e| file_err(path, e));
    let ca = if ca_crt.exists() && ca_key.exists() {
        let kept = CaPem { cert_pem: read(&ca_crt)?, key_pem: read(&ca_key)?, common_name: STANDALONE_CA };
        if ca_names.exists() && read(&ca_names)? == names_text(names) {
            return Ok(kept);
        }
        println!("tls: {} is now constrained to the names served: {}", ca_crt.display(), names.join(", "));
        kept.constrained_to(names)?
    } else {
        let ca = CaPem::generate(STANDALONE_CA, names)?;
        files::write_private(&ca_key, ca.key_pem.as_bytes()).map_err(|e| file_err(&ca_key, e))?;
        ca
    };
    std::fs::write(&ca_crt, &ca.cert_pem).map_err(|e| file_err(&ca_crt, e))?;
    std::fs::write(&ca_names, names_text(names)).map_err(|e| file_err(&ca_names, e))?;
    Ok(ca)
}

/// Reads a user-provided certificate chain and key.
pub fn from_files(cert: &Path, key: &Path) -> Result<CertifiedKey, TlsError> {
    Ok(CertifiedKey {
        chain_pem: std::fs::read_to_string(cert).map_err(|e| file_err(cert, e))?,
        key_pem: std::fs::read_to_string(key).map_err(|e| file_err(key, e))?,
    })
}

/// A TLS acceptor (TLS 1.2/1.3, h2 and http/1.1) for a certificate, with aws-lc-rs.
pub fn acceptor(cert: &CertifiedKey) -> Result<TlsAcceptor, TlsError> {
    let key = super::tls_reload::certified_key(&cert.chain_pem, &cert.key_pem)?;
    acceptor_resolving(Arc::new(rustls::sign::SingleCertAndKey::from(key)))
}

/// A TLS acceptor whose certificate `resolver` picks at each handshake (a reloading one for
/// certificates from files).
pub fn acceptor_resolving(resolver: Arc<dyn rustls::server::ResolvesServerCert>) -> Result<TlsAcceptor, TlsError> {
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let mut config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()?
        .with_no_client_auth()
        .with_cert_resolver(resolver);
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok(TlsAcceptor::from(Arc::new(config)))
}

#[cfg(test)]
mod tests {
    use super::*;
    use rustls::client::danger::ServerCertVerifier;
    use rustls::pki_types::{CertificateDer, ServerName, UnixTime};

    fn ders(pem: &str) -> Vec<CertificateDer<'static>> {
        rustls_pemfile::certs(&mut pem.as_bytes()).collect::<Result<_, _>>().unwrap()
    }

    /// Verifies `chain_pem` for `name` as a client trusting only `ca_pem` (webpki, which
    /// enforces a trust anchor's name constraints).
    fn verify(ca_pem: &str, chain_pem: &str, name: &str) -> Result<(), rustls::Error> {
        let mut roots = rustls::RootCertStore::empty();
        roots.add(ders(ca_pem).remove(0)).unwrap();
        let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
        let verifier =
            rustls::client::WebPkiServerVerifier::builder_with_provider(Arc::new(roots), provider).build().unwrap();
        let chain = ders(chain_pem);
        let name = ServerName::try_from(name.to_owned()).unwrap();
        verifier.verify_server_cert(&chain[0], &chain[1..], &name, &[], UnixTime::now()).map(|_| ())
    }

    /// A leaf for `hosts` signed by `ca`'s key, whatever names `ca` is constrained to: what a
    /// leaked CA key could sign.
    fn forged_leaf(ca: &CaPem, hosts: &[&str]) -> String {
        let issuer = Issuer::new(ca_params(ca.common_name, &[]).unwrap(), KeyPair::from_pem(&ca.key_pem).unwrap());
        let hosts: Vec<String> = hosts.iter().map(|h| h.to_string()).collect();
        let key = KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).unwrap();
        CertificateParams::new(hosts).unwrap().signed_by(&key, &issuer).unwrap().pem()
    }

    /// The CA certificate as made before name constraints, from `ca`'s key.
    fn unconstrained(ca: &CaPem) -> CaPem {
        let mut params = ca_params(ca.common_name, &[]).unwrap();
        params.name_constraints = None;
        let cert = params.self_signed(&KeyPair::from_pem(&ca.key_pem).unwrap()).unwrap();
        CaPem { cert_pem: cert.pem(), ..ca.clone() }
    }

    fn names(list: &[&str]) -> Vec<String> {
        list.iter().map(|n| n.to_string()).collect()
    }

    #[test]
    fn the_ca_is_constrained_to_the_names_it_serves() {
        let served = names(&["localhost", "127.0.0.1", "::1", "id.example.com"]);
        let ca = CaPem::generate(STANDALONE_CA, &served).unwrap();
        let chain = ca.issue(&served).unwrap().chain_pem;
        for name in ["id.example.com", "localhost", "127.0.0.1", "::1"] {
            verify(&ca.cert_pem, &chain, name).unwrap_or_else(|e| panic!("{name}: {e}"));
        }
        // What the same key signs for another name is refused by a client trusting the CA.
        for (host, name) in [("bank.example", "bank.example"), ("127.0.0.2", "127.0.0.2")] {
            let leaf = forged_leaf(&ca, &[host]);
            let chain = format!("{leaf}{}", ca.cert_pem);
            let e = verify(&ca.cert_pem, &chain, name).unwrap_err();
            assert!(format!("{e:?}").contains("NameConstraint"), "{host}: {e:?}");
        }
        // An unconstrained CA with the same key (as before) would have accepted it: the
        // check above is the constraint's doing.
        let unconstrained = unconstrained(&ca);
        let leaf = forged_leaf(&unconstrained, &["bank.example"]);
        verify(&unconstrained.cert_pem, &format!("{leaf}{}", unconstrained.cert_pem), "bank.example").unwrap();
    }

    /// A kept CA is constrained again when the names change (same key and name): the new
    /// certificate permits the new host and not the old one.
    #[test]
    fn a_kept_ca_follows_the_names_served() {
        let dir = tempfile::tempdir().unwrap();
        let first = ca_in_dir(dir.path(), &names(&["localhost", "old.example"])).unwrap();
        let again = ca_in_dir(dir.path(), &names(&["localhost", "old.example"])).unwrap();
        assert_eq!(first.cert_pem, again.cert_pem, "unchanged names keep ca.crt as it is");
        let moved = ca_in_dir(dir.path(), &names(&["localhost", "new.example"])).unwrap();
        assert_eq!(moved.key_pem, first.key_pem);
        assert_eq!(std::fs::read_to_string(dir.path().join("ca.crt")).unwrap(), moved.cert_pem);
        let chain = moved.issue(&names(&["localhost", "new.example"])).unwrap().chain_pem;
        verify(&moved.cert_pem, &chain, "new.example").unwrap();
        // A client still holding the old certificate refuses a leaf naming a host that
        // certificate did not permit: it has to read the new ca.crt.
        assert!(verify(&first.cert_pem, &chain, "new.example").is_err());
        // One holding the certificate from before name constraints (same key) still verifies.
        verify(&unconstrained(&moved).cert_pem, &chain, "new.example").unwrap();
        let old_leaf = forged_leaf(&moved, &["old.example"]);
        assert!(verify(&moved.cert_pem, &format!("{old_leaf}{}", moved.cert_pem), "old.example").is_err());
    }
}
