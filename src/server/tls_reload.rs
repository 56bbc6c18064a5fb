//! A served certificate that follows its files: cert-manager renews a `kubernetes.io/tls`
//! Secret, the kubelet swaps the mounted files, and new handshakes get the new certificate
//! without a restart. The files are re-read every [`RELOAD_INTERVAL`]; a pair that does not
//! parse (half-written, mismatched) is reported and the last good certificate keeps serving.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use arc_swap::ArcSwap;
use tokio_rustls::rustls;
use tokio_rustls::rustls::server::{ClientHello, ResolvesServerCert};
use tokio_rustls::rustls::sign::CertifiedKey;

use super::tls::{TlsError, from_files};

/// How often the certificate files are read again.
pub const RELOAD_INTERVAL: Duration = Duration::from_secs(10);

/// The certificate every handshake gets, swapped when its files change.
#[derive(Debug)]
pub struct ReloadingCert {
    current: ArcSwap<CertifiedKey>,
    cert_path: PathBuf,
    key_path: PathBuf,
    /// The PEM text the current certificate was parsed from.
    loaded: std::sync::Mutex<(String, String)>,
}

/// Parses a PEM chain and key into what rustls serves, with aws-lc-rs.
pub fn certified_key(chain_pem: &str, key_pem: &str) -> Result<CertifiedKey, TlsError> {
    let chain: Vec<_> = rustls_pemfile::certs(&mut chain_pem.as_bytes())
        .collect::<Result<_, _>>()
        .map_err(|e| TlsError::File { path: "certificate".into(), reason: e.to_string() })?;
    if chain.is_empty() {
        return Err(TlsError::Empty("certificate".into()));
    }
    let key = rustls_pemfile::private_key(&mut key_pem.as_bytes())
        .map_err(|e| TlsError::File { path: "private key".into(), reason: e.to_string() })?
        .ok_or_else(|| TlsError::Empty("private key".into()))?;
    let provider = rustls::crypto::aws_lc_rs::default_provider();
    let certified = CertifiedKey::from_der(chain, key, &provider)?;
    Ok(certified)
}

impl ReloadingCert {
    /// Loads the pair once; an unusable pair at start-up is an error.
    pub fn load(cert_path: &Path, key_path: &Path) -> Result<Arc<Self>, TlsError> {
        let pem = from_files(cert_path, key_path)?;
        let certified = certified_key(&pem.chain_pem, &pem.key_pem)?;
        Ok(Arc::new(Self {
            current: ArcSwap::from_pointee(certified),
            cert_path: cert_path.to_owned(),
            key_path: key_path.to_owned(),
            loaded: std::sync::Mutex::new((pem.chain_pem, pem.key_pem)),
        }))
    }

    /// Reads the files again and swaps the certificate when they changed and parse. Whether
    /// a new certificate is served.
    pub fn reload(&self) -> Result<bool, TlsError> {
        let pem = from_files(&self.cert_path, &self.key_path)?;
        let mut loaded = self.loaded.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        if loaded.0 == pem.chain_pem && loaded.1 == pem.key_pem {
            return Ok(false);
        }
        let certified = certified_key(&pem.chain_pem, &pem.key_pem)?;
        self.current.store(Arc::new(certified));
        *loaded = (pem.chain_pem, pem.key_pem);
        Ok(true)
    }

    /// Re-reads the files every `interval`, forever.
    pub async fn watch(self: Arc<Self>, interval: Duration) {
        let mut ticker = tokio::time::interval(interval);
        ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        ticker.tick().await;
        let mut failing = false;
        loop {
            ticker.tick().await;
            let this = Arc::clone(&self);
            let result = tokio::task::spawn_blocking(move || this.reload()).await;
            match result {
                Ok(Ok(true)) => {
                    failing = false;
                    tracing::info!(cert = %self.cert_path.display(), "serving the renewed certificate");
                }
                Ok(Ok(false)) => failing = false,
                // Said once per failing stretch; the last good certificate keeps serving.
                Ok(Err(e)) if !failing => {
                    failing = true;
                    tracing::warn!(error = %e, "the certificate files cannot be used; still serving the previous one");
                }
                _ => {}
            }
        }
    }
}

impl ResolvesServerCert for ReloadingCert {
    fn resolve(&self, _hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(self.current.load_full())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pair(host: &str) -> super::super::tls::CertifiedKey {
        let ca = super::super::tls::CaPem::generate("test CA", &[host.to_owned()]).unwrap();
        ca.issue(&[host.to_owned()]).unwrap()
    }

    fn serial(c: &CertifiedKey) -> Vec<u8> {
        c.cert[0].as_ref().to_vec()
    }

    #[test]
    fn a_renewed_pair_is_served_and_a_broken_one_is_not() {
        let dir = tempfile::tempdir().unwrap();
        let (cert, key) = (dir.path().join("tls.crt"), dir.path().join("tls.key"));
        let first = pair("a.example");
        std::fs::write(&cert, &first.chain_pem).unwrap();
        std::fs::write(&key, &first.key_pem).unwrap();
        let resolver = ReloadingCert::load(&cert, &key).unwrap();
        let before = serial(&resolver.current.load());
        assert!(!resolver.reload().unwrap(), "unchanged files are not parsed again");

        // Half a renewal (new certificate, old key) is refused and the old pair serves.
        let second = pair("b.example");
        std::fs::write(&cert, &second.chain_pem).unwrap();
        assert!(resolver.reload().is_err());
        assert_eq!(serial(&resolver.current.load()), before);

        std::fs::write(&key, &second.key_pem).unwrap();
        assert!(resolver.reload().unwrap());
        assert_ne!(serial(&resolver.current.load()), before);
        std::fs::remove_file(&cert).unwrap();
        assert!(resolver.reload().is_err(), "a missing file is an error, not an empty certificate");
    }
}
