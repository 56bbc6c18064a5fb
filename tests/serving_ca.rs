//! The self-signed serving CA is name-constrained to the names it serves, in both shells: a
//! client that trusts it trusts nothing its key could sign for another host. A CA kept from
//! before name constraints keeps its key and gets a constrained certificate.

// Test helpers outside #[test] functions stop the test on a failed step.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::sync::Arc;

use base64::Engine;
use common::Server;
use common::cluster::{ControlPlane, jsonpath};
use tokio_rustls::rustls;
use tokio_rustls::rustls::client::danger::ServerCertVerifier;
use tokio_rustls::rustls::pki_types::{CertificateDer, ServerName, UnixTime};

fn ders(pem: &str) -> Vec<CertificateDer<'static>> {
    rustls_pemfile::certs(&mut pem.as_bytes()).collect::<Result<_, _>>().unwrap()
}

/// Verifies `chain_pem` for `name` as a client trusting only `ca_pem` (webpki).
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

/// CA parameters named `common_name`, with no name constraints (as made before them).
fn unconstrained_params(common_name: &str) -> rcgen::CertificateParams {
    let mut params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
    params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Constrained(0));
    params.distinguished_name.push(rcgen::DnType::CommonName, common_name);
    params.key_usages = vec![rcgen::KeyUsagePurpose::KeyCertSign, rcgen::KeyUsagePurpose::CrlSign];
    params
}

/// A CA as made before name constraints: (certificate, key), PEM.
fn old_ca(common_name: &str) -> (String, String) {
    let key = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).unwrap();
    let cert = unconstrained_params(common_name).self_signed(&key).unwrap();
    (cert.pem(), key.serialize_pem())
}

/// A chain for `host` signed by the CA key `key_pem`: what a leaked key could sign.
fn forged_chain(ca_pem: &str, key_pem: &str, common_name: &str, host: &str) -> String {
    let issuer = rcgen::Issuer::new(unconstrained_params(common_name), rcgen::KeyPair::from_pem(key_pem).unwrap());
    let key = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).unwrap();
    let leaf = rcgen::CertificateParams::new(vec![host.to_owned()]).unwrap().signed_by(&key, &issuer).unwrap();
    format!("{}{ca_pem}", leaf.pem())
}

/// The certificate chain the server at `api` (https://127.0.0.1:port) presents.
async fn served_chain(api: &str) -> String {
    let addr = api.trim_start_matches("https://");
    let tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
    // Accept anything: the chain is checked afterwards with the CA under test.
    #[derive(Debug)]
    struct Any(Arc<rustls::crypto::CryptoProvider>);
    impl ServerCertVerifier for Any {
        fn verify_server_cert(
            &self,
            _: &CertificateDer<'_>,
            _: &[CertificateDer<'_>],
            _: &ServerName<'_>,
            _: &[u8],
            _: UnixTime,
        ) -> Result<rustls::client::danger::ServerCertVerified, rustls::Error> {
            Ok(rustls::client::danger::ServerCertVerified::assertion())
        }
        fn verify_tls12_signature(
            &self,
            m: &[u8],
            c: &CertificateDer<'_>,
            d: &rustls::DigitallySignedStruct,
        ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
            rustls::crypto::verify_tls12_signature(m, c, d, &self.0.signature_verification_algorithms)
        }
        fn verify_tls13_signature(
            &self,
            m: &[u8],
            c: &CertificateDer<'_>,
            d: &rustls::DigitallySignedStruct,
        ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
            rustls::crypto::verify_tls13_signature(m, c, d, &self.0.signature_verification_algorithms)
        }
        fn supported_verify_schemes(&self) -> Vec<rustls::SignatureScheme> {
            self.0.signature_verification_algorithms.supported_schemes()
        }
    }
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let config = rustls::ClientConfig::builder_with_provider(Arc::clone(&provider))
        .with_safe_default_protocol_versions()
        .unwrap()
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(Any(provider)))
        .with_no_client_auth();
    let connector = tokio_rustls::TlsConnector::from(Arc::new(config));
    let tls = connector.connect(ServerName::try_from("127.0.0.1").unwrap(), tcp).await.unwrap();
    let certs = tls.get_ref().1.peer_certificates().unwrap().to_vec();
    certs
        .iter()
        .map(|c| {
            let b64 = base64::engine::general_purpose::STANDARD.encode(c.as_ref());
            let lines: Vec<&str> = b64.as_bytes().chunks(64).map(|l| std::str::from_utf8(l).unwrap()).collect();
            format!("-----BEGIN CERTIFICATE-----\n{}\n-----END CERTIFICATE-----\n", lines.join("\n"))
        })
        .collect()
}

/// Standalone: a CA kept in the state folder from before name constraints keeps its key; its
/// certificate is made again, constrained to the served names (ca.names lists them); the
/// served chain verifies under the new certificate and the old one, and a leaf the same key
/// signs for another host is refused under the new one.
#[tokio::test(flavor = "multi_thread")]
async fn standalone_constrains_a_kept_ca_to_the_names_it_serves() {
    common::ensure_crypto();
    let tmp = tempfile::tempdir().unwrap();
    let (m, state) = (tmp.path().join("m"), tmp.path().join("state"));
    std::fs::create_dir(&m).unwrap();
    let tls = state.join("tls");
    std::fs::create_dir_all(&tls).unwrap();
    let (old_cert, old_key) = old_ca("oidc-operator standalone CA");
    std::fs::write(tls.join("ca.crt"), &old_cert).unwrap();
    std::fs::write(tls.join("ca.key"), &old_key).unwrap();

    let server = Server::start(&m, &state, &["--external-url", "https://id.example.com"]).await;
    let ca = std::fs::read_to_string(tls.join("ca.crt")).unwrap();
    assert_ne!(ca, old_cert, "the kept CA's certificate is made again");
    assert_eq!(std::fs::read_to_string(tls.join("ca.key")).unwrap(), old_key, "and its key is kept");
    let names = std::fs::read_to_string(tls.join("ca.names")).unwrap();
    assert_eq!(names, "localhost\n127.0.0.1\n::1\nid.example.com\n");
    // Served under the constrained certificate (the harness's client trusts ca.crt).
    server.client().get(format!("{}/healthz", server.api)).send().await.expect("TLS under the constrained CA");
    let chain = served_chain(&server.api).await;
    for name in ["127.0.0.1", "id.example.com", "localhost"] {
        verify(&ca, &chain, name).unwrap_or_else(|e| panic!("{name}: {e:?}"));
    }
    verify(&old_cert, &chain, "127.0.0.1").unwrap();
    for host in ["bank.example", "127.0.0.2"] {
        let forged = forged_chain(&ca, &old_key, "oidc-operator standalone CA", host);
        let e = verify(&ca, &forged, host).unwrap_err();
        assert!(format!("{e:?}").contains("NameConstraint"), "{host}: {e:?}");
        verify(&old_cert, &forged, host).expect("the old certificate would have trusted it");
    }
    server.stop();

    // The same names at the next start: ca.crt is left as it is.
    let server = Server::start(&m, &state, &["--external-url", "https://id.example.com"]).await;
    assert_eq!(std::fs::read_to_string(tls.join("ca.crt")).unwrap(), ca);
    server.stop();
}

/// The operator: a CA Secret from before name constraints keeps its key and gets a
/// constrained certificate and a ca.names key; the operator serves under it.
#[tokio::test(flavor = "multi_thread")]
async fn the_operator_constrains_the_ca_in_its_secret() {
    common::ensure_crypto();
    let cp = tokio::task::spawn_blocking(ControlPlane::start).await.unwrap();
    let (old_cert, old_key) = old_ca("oidc-operator CA");
    let b64 = |s: &str| base64::engine::general_purpose::STANDARD.encode(s);
    let secret = format!(
        "apiVersion: v1\nkind: Secret\nmetadata: {{name: oidc-operator-ca}}\ntype: Opaque\ndata:\n  ca.crt: {}\n  ca.key: {}\n",
        b64(&old_cert),
        b64(&old_key)
    );
    let (ok, err) = cp.apply("default", &secret);
    assert!(ok, "{err}");
    let tmp = tempfile::tempdir().unwrap();
    let mut operator = Server::operator(&cp.kubeconfig, &tmp.path().join("op"), &[]).await;
    let field = |key: &str| {
        let path = format!("{{.data.{}}}", key.replace('.', "\\."));
        let v = jsonpath(&cp, "default", "secret/oidc-operator-ca", &path);
        String::from_utf8(base64::engine::general_purpose::STANDARD.decode(v).unwrap()).unwrap()
    };
    assert_eq!(field("ca.key"), old_key, "the key is kept");
    assert_eq!(field("ca.names"), "localhost\n127.0.0.1\n::1\n");
    let ca = field("ca.crt");
    assert_ne!(ca, old_cert);
    operator.trust(&ca);
    operator.client().get(format!("{}/healthz", operator.api)).send().await.expect("TLS under the constrained CA");
    let chain = served_chain(&operator.api).await;
    verify(&ca, &chain, "127.0.0.1").unwrap();
    verify(&old_cert, &chain, "127.0.0.1").unwrap();
    let forged = forged_chain(&ca, &old_key, "oidc-operator CA", "bank.example");
    let e = verify(&ca, &forged, "bank.example").unwrap_err();
    assert!(format!("{e:?}").contains("NameConstraint"), "{e:?}");
    operator.stop();
}
