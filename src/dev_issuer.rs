//! `oidc-operator dev-issuer`: a DEVELOPMENT-ONLY OpenID issuer on loopback that serves a
//! discovery document and JWKS and mints JWTs for a subject and claims given on the command
//! line, so the machine-login flow can be tried without a cluster. `standalone` and `run`
//! never start it; the product's tests use their own independent issuer.

use std::net::SocketAddr;

use warp::Filter;

use crate::keys::{KeyVersion, SigningAlgorithm, SigningKey};

/// Flags of `oidc-operator dev-issuer`.
#[derive(clap::Args, Debug, Clone)]
pub struct Options {
    /// Loopback address to serve on (plain http: development only).
    #[arg(long, default_value = "127.0.0.1:8900")]
    pub listen: SocketAddr,
    /// `sub` of minted tokens.
    #[arg(long, default_value = "system:serviceaccount:ci:runner")]
    pub subject: String,
    /// `aud` of minted tokens (repeat for several).
    #[arg(long, default_value = "oidc-operator")]
    pub audience: Vec<String>,
    /// Extra claims as key=value (repeat for several).
    #[arg(long, value_parser = parse_claim)]
    pub claim: Vec<(String, String)>,
    /// Lifetime of minted tokens in seconds.
    #[arg(long, default_value_t = 600)]
    pub ttl: i64,
}

fn parse_claim(text: &str) -> Result<(String, String), String> {
    text.split_once('=').map(|(k, v)| (k.to_owned(), v.to_owned())).ok_or_else(|| "use key=value".to_owned())
}

/// Why the dev issuer stopped.
#[derive(Debug, thiserror::Error)]
pub enum DevIssuerError {
    #[error("the dev issuer serves loopback addresses only, not {0}")]
    NotLoopback(SocketAddr),
    #[error("binding {0}: {1}")]
    Bind(SocketAddr, std::io::Error),
    #[error(transparent)]
    Key(#[from] crate::keys::KeyError),
    #[error("starting the runtime: {0}")]
    Runtime(std::io::Error),
}

#[allow(clippy::disallowed_methods)]
fn now() -> i64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_secs() as i64).unwrap_or(0)
}

fn mint(key: &SigningKey, issuer: &str, o: &Options) -> Result<String, crate::keys::KeyError> {
    let t = now();
    let mut claims = serde_json::json!({
        "iss": issuer, "sub": o.subject, "aud": o.audience, "iat": t, "nbf": t, "exp": t + o.ttl,
    });
    for (k, v) in &o.claim {
        claims[k] = serde_json::Value::String(v.clone());
    }
    key.sign_jwt(&claims)
}

/// Runs the dev issuer until interrupted.
pub fn main(options: Options) -> Result<(), DevIssuerError> {
    if !options.listen.ip().is_loopback() {
        return Err(DevIssuerError::NotLoopback(options.listen));
    }
    let runtime =
        tokio::runtime::Builder::new_current_thread().enable_all().build().map_err(DevIssuerError::Runtime)?;
    runtime.block_on(async move {
        let listener =
            tokio::net::TcpListener::bind(options.listen).await.map_err(|e| DevIssuerError::Bind(options.listen, e))?;
        let addr = listener.local_addr().map_err(|e| DevIssuerError::Bind(options.listen, e))?;
        let issuer = format!("http://{addr}");
        let key = std::sync::Arc::new(KeyVersion::generate(SigningAlgorithm::ES256, now())?.parse()?);
        let discovery = serde_json::json!({
            "issuer": issuer,
            "jwks_uri": format!("{issuer}/.well-known/jwks.json"),
            "id_token_signing_alg_values_supported": ["ES256"],
            "response_types_supported": ["id_token"],
            "subject_types_supported": ["public"],
        });
        let jwks = serde_json::json!({"keys": [key.jwk()]});
        eprintln!("DEVELOPMENT ISSUER: for local trials only; never trust it in production.");
        println!("issuer: {issuer}");
        println!("token: {}", mint(&key, &issuer, &options)?);
        println!("more tokens: curl {issuer}/token");
        let (iss, opts, k) = (issuer.clone(), options.clone(), std::sync::Arc::clone(&key));
        let routes = warp::path!(".well-known" / "openid-configuration")
            .map(move || warp::reply::json(&discovery))
            .or(warp::path!(".well-known" / "jwks.json").map(move || warp::reply::json(&jwks)))
            .or(warp::path!("token").map(move || mint(&k, &iss, &opts).unwrap_or_default()));
        warp::serve(routes).incoming(listener).run().await;
        Ok(())
    })
}
