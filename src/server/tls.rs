//! HTTPS: a user-provided certificate, or a kept CA (a state folder in standalone mode, a
//! Secret for the operator) that signs a fresh leaf certificate at every start.

use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, Issuer, KeyPair, KeyUsagePurpose, SanType};
use tokio_rustls::TlsAcceptor;
use tokio_rustls::rustls;

use crate::standalone::state::write_private_bytes;

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

fn ca_params(common_name: &str) -> Result<CertificateParams, rcgen::Error> {
    let mut params = CertificateParams::new(Vec::<String>::new())?;
    params.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
    params.distinguished_name.push(DnType::CommonName, common_name);
    params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
    params.not_before = rcgen::date_time_ymd(2025, 1, 1);
    params.not_after = rcgen::date_time_ymd(2045, 1, 1);
    Ok(params)
}

/// A CA certificate and its private key, PEM: what signs the serving certificate when no
/// certificate is given. Standalone keeps it in its state folder, the operator in a Secret.
#[derive(Clone)]
pub struct CaPem {
    pub cert_pem: String,
    pub key_pem: String,
    /// The CA's common name: a leaf names its issuer by it.
    pub common_name: &'static str,
}

/// Common name of the standalone mode's CA (state folder).
pub const STANDALONE_CA: &str = "oidc-operator standalone CA";
/// Common name of the operator's CA (Secret).
pub const OPERATOR_CA: &str = "oidc-operator CA";

impl CaPem {
    /// A new CA (P-256, valid until 2045).
    pub fn generate(common_name: &'static str) -> Result<CaPem, TlsError> {
        let key = KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256)?;
        let cert = ca_params(common_name)?.self_signed(&key)?;
        Ok(CaPem { cert_pem: cert.pem(), key_pem: key.serialize_pem(), common_name })
    }

    /// Issues a fresh leaf certificate for `hosts`; the chain ends with the CA certificate.
    pub fn issue(&self, hosts: &[String]) -> Result<CertifiedKey, TlsError> {
        let issuer = Issuer::new(ca_params(self.common_name)?, KeyPair::from_pem(&self.key_pem)?);
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

/// Loads the CA kept in `dir` (making it on first use); `ca.crt` is there for clients to trust.
pub fn ca_in_dir(dir: &Path) -> Result<CaPem, TlsError> {
    std::fs::create_dir_all(dir).map_err(|e| file_err(dir, e))?;
    let (ca_crt, ca_key) = (dir.join("ca.crt"), dir.join("ca.key"));
    if ca_crt.exists() && ca_key.exists() {
        let key_pem = std::fs::read_to_string(&ca_key).map_err(|e| file_err(&ca_key, e))?;
        let cert_pem = std::fs::read_to_string(&ca_crt).map_err(|e| file_err(&ca_crt, e))?;
        return Ok(CaPem { cert_pem, key_pem, common_name: STANDALONE_CA });
    }
    let ca = CaPem::generate(STANDALONE_CA)?;
    write_private_bytes(&ca_key, ca.key_pem.as_bytes()).map_err(|e| file_err(&ca_key, e))?;
    std::fs::write(&ca_crt, &ca.cert_pem).map_err(|e| file_err(&ca_crt, e))?;
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
