//! External JWTs come from anyone who can reach the login endpoint: what decides about them
//! before a signature is checked (size, compact shape, base64, header JSON, `crit`, `alg`,
//! `kid`) and the key lookup after it must never panic, and nothing with `crit` or an
//! algorithm outside the list may pass.
//!
//!     cargo install cargo-fuzz && cargo +nightly fuzz run external_jwt -- -max_total_time=60

#![no_main]

use std::sync::LazyLock;

use base64::Engine;
use libfuzzer_sys::fuzz_target;
use oidc_operator::keys::{KeyVersion, SigningAlgorithm};
use oidc_operator::login::checks::{check_header, check_signature};
use oidc_operator::login::jwks::IssuerKeys;
use serde_json::Value;

/// One key per algorithm with fixed kids (`k-rs256`, ...), so inputs can name them.
static KEYS: LazyLock<IssuerKeys> = LazyLock::new(|| {
    let jwks: Vec<Value> = SigningAlgorithm::ALL
        .into_iter()
        .map(|alg| {
            let mut version = KeyVersion::generate(alg, 0).unwrap();
            version.kid = format!("k-{}", alg.as_str().to_ascii_lowercase());
            serde_json::to_value(version.parse().unwrap().jwk()).unwrap()
        })
        .collect();
    IssuerKeys::from_jwks("https://issuer".into(), &serde_json::json!({ "keys": jwks }), 0).unwrap()
});

fn decide(jwt: &str) {
    if let Ok(header) = check_header(jwt) {
        let first = jwt.split('.').next().unwrap_or_default();
        let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD.decode(first).unwrap();
        let decoded: Value = serde_json::from_slice(&bytes).unwrap();
        assert!(decoded.get("crit").is_none(), "crit passed: {jwt}");
        assert_eq!(decoded["alg"], header.alg.as_str());
        let _ = check_signature(&KEYS, &header, jwt);
    }
}

fuzz_target!(|data: &[u8]| {
    if let Ok(text) = std::str::from_utf8(data) {
        // The input as a compact JWT, and as a header JSON inside one (reaching the header
        // rules without the fuzzer having to learn base64 first).
        decide(text);
        let b64 = |b: &[u8]| base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(b);
        decide(&format!("{}.{}.{}", b64(data), b64(b"{}"), b64(b"sig")));
    }
});
