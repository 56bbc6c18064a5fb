//! Checks of one object on its own, mirroring the CRD's schema and CEL rules.
//!
//! On a cluster the API server refuses what these catch; in standalone mode nothing else
//! does, so the same rules run here and their errors name the field like the API server would.

use std::net::IpAddr;

use super::{
    ALLOW_ALL, IdentityOidcAuthSpec, OidcAssignment, OidcClientSpec, OidcKeySpec, OidcProviderSpec, OidcScope,
};
use crate::template;

/// An invalid field of one object.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{field}: {message}")]
pub struct FieldError {
    /// JSON path of the field, e.g. `spec.rotationPeriod`.
    pub field: String,
    pub message: String,
}

fn field_error(field: &str, message: impl Into<String>) -> FieldError {
    FieldError { field: field.into(), message: message.into() }
}

/// The API server's rules for `metadata.namespace` (a DNS-1123 label) and `metadata.name` (a
/// DNS-1123 subdomain), which standalone manifests must follow too: both become paths in
/// the state folder (`keys/<namespace>/<name>.json`), so `..` or `/` in either would let one
/// tenant's manifest write over another's key ring.
pub fn metadata(namespace: &str, name: &str) -> Result<(), FieldError> {
    fn label(text: &str) -> bool {
        !text.is_empty()
            && text.len() <= 63
            && text.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
            && !text.starts_with('-')
            && !text.ends_with('-')
    }
    if !label(namespace) {
        return Err(field_error(
            "metadata.namespace",
            "must be a DNS-1123 label: at most 63 lowercase letters, digits or '-', starting and ending \
             with a letter or digit",
        ));
    }
    if name.len() > 253 || !name.split('.').all(label) {
        return Err(field_error(
            "metadata.name",
            "must be a DNS-1123 subdomain: at most 253 characters, lowercase letters, digits, '-' and '.', \
             each part starting and ending with a letter or digit",
        ));
    }
    Ok(())
}

/// Infisical's exclusive upper bound of access token TTLs, in seconds.
pub const MAX_ACCESS_TOKEN_TTL: i64 = 315_360_000;

pub fn key(spec: &OidcKeySpec) -> Result<(), FieldError> {
    if spec.rotation_period.as_secs() < 60 {
        return Err(field_error("spec.rotationPeriod", "must be at least 1m"));
    }
    if spec.verification_ttl.as_secs() == 0 {
        return Err(field_error("spec.verificationTTL", "must be greater than 0"));
    }
    if spec.verification_ttl.as_secs() > spec.rotation_period.as_secs().saturating_mul(10) {
        return Err(field_error("spec.verificationTTL", "must not exceed 10 x rotationPeriod"));
    }
    Ok(())
}

pub fn client(spec: &OidcClientSpec) -> Result<(), FieldError> {
    if spec.key.is_empty() {
        return Err(field_error("spec.key", "must not be empty"));
    }
    for (i, uri) in spec.redirect_uris.iter().enumerate() {
        let field = format!("spec.redirectUris[{i}]");
        let parsed = url::Url::parse(uri).map_err(|e| field_error(&field, format!("not an absolute URI: {e}")))?;
        if parsed.fragment().is_some() {
            return Err(field_error(&field, "must not contain a fragment (RFC 6749 §3.1.2)"));
        }
    }
    if spec.id_token_ttl.as_secs() == 0 {
        return Err(field_error("spec.idTokenTTL", "must be greater than 0"));
    }
    if spec.access_token_ttl.as_secs() == 0 {
        return Err(field_error("spec.accessTokenTTL", "must be greater than 0"));
    }
    if matches!(&spec.client_id, Some(id) if id.trim().is_empty() || id.contains(':')) {
        return Err(field_error("spec.clientId", "must be non-empty and must not contain ':'"));
    }
    client_grants(spec)
}

/// The grant and authentication rules the CRD's CEL rules state, for objects the API server
/// did not check (standalone files, objects stored before the rules existed).
fn client_grants(spec: &OidcClientSpec) -> Result<(), FieldError> {
    use super::{ClientAuthMethod, ClientType, GrantType};
    if spec.grant_types.is_empty() {
        return Err(field_error("spec.grantTypes", "must list at least one grant type"));
    }
    if let Some((i, g)) = spec.grant_types.iter().enumerate().find(|(i, g)| spec.grant_types[..*i].contains(g)) {
        return Err(field_error(&format!("spec.grantTypes[{i}]"), format!("{} is listed twice", g.as_str())));
    }
    let public = spec.client_type == ClientType::Public;
    if public && spec.grant_types.contains(&GrantType::ClientCredentials) {
        return Err(field_error(
            "spec.grantTypes",
            "a public client cannot use client_credentials: it has no secret to authenticate with",
        ));
    }
    if let Some(m) = spec.token_endpoint_auth_method
        && public != (m == ClientAuthMethod::None)
    {
        return Err(field_error(
            "spec.tokenEndpointAuthMethod",
            "must be none for a public client and a client_secret method or private_key_jwt for a confidential one",
        ));
    }
    let key_jwt = spec.token_endpoint_auth_method == Some(ClientAuthMethod::PrivateKeyJwt);
    let has_keys = spec.jwks.is_some() || spec.jwks_uri.is_some() || !spec.federated_identities.is_empty();
    if key_jwt && !has_keys {
        return Err(field_error(
            "spec.tokenEndpointAuthMethod",
            "private_key_jwt needs jwks, jwksUri or federatedIdentities",
        ));
    }
    if has_keys && !key_jwt {
        return Err(field_error(
            "spec.tokenEndpointAuthMethod",
            "jwks, jwksUri and federatedIdentities are for tokenEndpointAuthMethod private_key_jwt",
        ));
    }
    if spec.jwks.is_some() && spec.jwks_uri.is_some() {
        return Err(field_error("spec.jwksUri", "use jwks or jwksUri, not both (RFC 7591 §2)"));
    }
    if let Some(uri) = &spec.jwks_uri {
        url::Url::parse(uri).map_err(|e| field_error("spec.jwksUri", format!("not an absolute URL: {e}")))?;
    }
    if spec.refresh_token_ttl.as_secs() == 0 {
        return Err(field_error("spec.refreshTokenTTL", "must be greater than 0"));
    }
    if spec.refresh_token_ttl > spec.refresh_token_max_ttl {
        return Err(field_error("spec.refreshTokenTTL", "must not exceed refreshTokenMaxTTL"));
    }
    Ok(())
}

/// Validates a scope and returns the top-level claim names its template sets.
pub fn scope(scope: &OidcScope) -> Result<Vec<String>, FieldError> {
    if scope.metadata.name.as_deref() == Some("openid") {
        return Err(field_error("metadata.name", "the scope name openid is reserved"));
    }
    match &scope.spec.template {
        None => Ok(Vec::new()),
        Some(text) => template::Template::parse(text)
            .map(|t| t.claim_names())
            .map_err(|e| field_error("spec.template", e.to_string())),
    }
}

pub fn assignment(assignment: &OidcAssignment) -> Result<(), FieldError> {
    if assignment.metadata.name.as_deref() == Some(ALLOW_ALL) {
        return Err(field_error("metadata.name", "the assignment name allow_all is built in"));
    }
    Ok(())
}

pub fn provider(spec: &OidcProviderSpec) -> Result<(), FieldError> {
    if let Some(issuer) = &spec.issuer {
        issuer_base(issuer).map_err(|m| field_error("spec.issuer", m))?;
    }
    if spec.scopes_supported.iter().any(|s| s == "openid") {
        return Err(field_error("spec.scopesSupported", "openid is always supported and is not an OidcScope"));
    }
    Ok(())
}

/// The `scheme://host:port` of an issuer override (or `--external-url`), normalised: the
/// parsed scheme, lower-case host and explicit non-default port only, so `iss` is one exact
/// string (OpenID Connect Core §2 compares it as such). Refused: a path other than `/`
/// (dot segments included), a query, a fragment, user info, and `http` unless the host is
/// loopback (local trials only).
pub fn issuer_base(issuer: &str) -> Result<String, String> {
    let url = url::Url::parse(issuer).map_err(|e| format!("not a URL: {e}"))?;
    if !matches!(url.scheme(), "https" | "http") {
        return Err("scheme must be https (http only for a loopback host)".into());
    }
    let host = url.host().ok_or("must name a host")?;
    if !url.username().is_empty() || url.password().is_some() {
        return Err("must not carry user information".into());
    }
    // The raw text, since the parser already resolved dot segments away.
    let after_host = issuer.split_once("://").map_or("", |(_, rest)| rest);
    let raw_path = after_host.find('/').map_or("", |i| &after_host[i..]);
    if !matches!(raw_path, "" | "/") || url.query().is_some() || url.fragment().is_some() {
        return Err(
            "must be scheme://host[:port] only (no path, query or fragment); the provider path is appended".into()
        );
    }
    let loopback = match &host {
        url::Host::Domain(d) => d.eq_ignore_ascii_case("localhost"),
        url::Host::Ipv4(a) => a.is_loopback(),
        url::Host::Ipv6(a) => a.is_loopback(),
    };
    if url.scheme() == "http" && !loopback {
        return Err("must use https (http is accepted only for a loopback host)".into());
    }
    let port = url.port().map(|p| format!(":{p}")).unwrap_or_default();
    Ok(format!("{}://{host}{port}", url.scheme()))
}

pub fn identity(spec: &IdentityOidcAuthSpec) -> Result<(), FieldError> {
    // Also on a cluster: an object stored before the CRD carried these limits must not make
    // every login of its identity large.
    if let Ok(value) = serde_json::to_value(spec) {
        super::limits::check(super::Kind::IdentityOidcAuth, &value)?;
    }
    url::Url::parse(&spec.oidc_discovery_url)
        .map_err(|e| field_error("spec.oidcDiscoveryUrl", format!("not a URL: {e}")))?;
    if spec.bound_issuer.is_empty() {
        return Err(field_error("spec.boundIssuer", "must not be empty"));
    }
    for (field, v) in
        [("spec.accessTokenTTL", spec.access_token_ttl), ("spec.accessTokenMaxTTL", spec.access_token_max_ttl)]
    {
        if !(0 < v && v < MAX_ACCESS_TOKEN_TTL) {
            return Err(field_error(field, format!("must be in 0 < x < {MAX_ACCESS_TOKEN_TTL}")));
        }
    }
    if spec.access_token_ttl > spec.access_token_max_ttl {
        return Err(field_error("spec.accessTokenTTL", "must not exceed accessTokenMaxTTL"));
    }
    if spec.access_token_num_uses_limit < 0 {
        return Err(field_error("spec.accessTokenNumUsesLimit", "must be 0 (unlimited) or more"));
    }
    for (i, ip) in spec.access_token_trusted_ips.iter().enumerate() {
        parse_cidr(&ip.ip_address)
            .map_err(|m| field_error(&format!("spec.accessTokenTrustedIps[{i}].ipAddress"), m))?;
    }
    if let Some(pem) = spec.ca_cert.as_deref().filter(|p| !p.trim().is_empty()) {
        let certs: Result<Vec<_>, _> = rustls_pemfile::certs(&mut pem.as_bytes()).collect();
        match certs {
            Ok(c) if !c.is_empty() => {}
            _ => return Err(field_error("spec.caCert", "is not a PEM certificate")),
        }
    }
    Ok(())
}

/// Parses an address or CIDR range (`10.0.0.0/8`, `::/0`, `192.0.2.7`) into (network, prefix).
pub fn parse_cidr(text: &str) -> Result<(IpAddr, u8), String> {
    let (addr, prefix) = match text.split_once('/') {
        Some((a, p)) => (a, Some(p)),
        None => (text, None),
    };
    let addr: IpAddr = addr.trim().parse().map_err(|_| format!("{text:?} is not an IP address or CIDR range"))?;
    let max = if addr.is_ipv4() { 32 } else { 128 };
    let prefix = match prefix {
        None => max,
        Some(p) => p
            .trim()
            .parse::<u8>()
            .ok()
            .filter(|p| *p <= max)
            .ok_or_else(|| format!("{text:?} has an invalid prefix length"))?,
    };
    Ok((addr, prefix))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::{Duration, OidcScopeSpec};

    #[test]
    fn names_and_namespaces_follow_the_api_servers_rules() {
        assert!(metadata("team-a", "signing.key-1").is_ok());
        for (ns, name) in [
            ("team-b", "../team-a/signing"),
            ("team-b", "a/b"),
            ("../x", "k"),
            ("a/b", "k"),
            ("", "k"),
            ("Team", "k"),
            ("team", "-k"),
            ("team", "k..x"),
            ("team", ""),
        ] {
            assert!(metadata(ns, name).is_err(), "{ns}/{name} accepted");
        }
        assert_eq!(metadata("team", "a/b").unwrap_err().field, "metadata.name");
        assert_eq!(metadata("a.b", "k").unwrap_err().field, "metadata.namespace");
    }

    #[test]
    fn client_grants_follow_the_crd_rules() {
        let spec = |json: serde_json::Value| -> OidcClientSpec { serde_json::from_value(json).unwrap() };
        assert!(client(&spec(serde_json::json!({}))).is_ok(), "defaults are valid");
        let cases = [
            (serde_json::json!({"clientType": "public", "grantTypes": ["client_credentials"]}), "spec.grantTypes"),
            (serde_json::json!({"grantTypes": []}), "spec.grantTypes"),
            (serde_json::json!({"grantTypes": ["refresh_token", "refresh_token"]}), "spec.grantTypes[1]"),
            (serde_json::json!({"tokenEndpointAuthMethod": "none"}), "spec.tokenEndpointAuthMethod"),
            (
                serde_json::json!({"clientType": "public", "tokenEndpointAuthMethod": "client_secret_post"}),
                "spec.tokenEndpointAuthMethod",
            ),
            (serde_json::json!({"refreshTokenTTL": "48h", "refreshTokenMaxTTL": "24h"}), "spec.refreshTokenTTL"),
            (serde_json::json!({"refreshTokenTTL": 0}), "spec.refreshTokenTTL"),
        ];
        for (json, field) in cases {
            let err = client(&spec(json.clone())).expect_err(&json.to_string());
            assert_eq!(err.field, field, "{json}: {err:?}");
        }
        let ok = spec(
            serde_json::json!({"grantTypes": ["client_credentials"], "tokenEndpointAuthMethod": "client_secret_post"}),
        );
        assert!(client(&ok).is_ok());
        // RFC 8693 leaves client authentication optional: a public client may exchange tokens.
        let public_exchange = spec(serde_json::json!({
            "clientType": "public",
            "grantTypes": ["urn:ietf:params:oauth:grant-type:token-exchange"]
        }));
        assert!(client(&public_exchange).is_ok());
    }

    fn key_spec(rot: u64, ver: u64) -> OidcKeySpec {
        OidcKeySpec {
            rotation_period: Duration::from_secs(rot),
            verification_ttl: Duration::from_secs(ver),
            ..OidcKeySpec::builtin_default()
        }
    }

    #[test]
    fn key_limits_follow_openbao() {
        assert!(key(&key_spec(60, 600)).is_ok());
        assert_eq!(key(&key_spec(59, 59)).unwrap_err().field, "spec.rotationPeriod");
        assert_eq!(key(&key_spec(60, 601)).unwrap_err().field, "spec.verificationTTL");
    }

    #[test]
    fn scope_named_openid_is_refused() {
        let mut s = OidcScope::new("openid", OidcScopeSpec::default());
        assert_eq!(scope(&s).unwrap_err().field, "metadata.name");
        s.metadata.name = Some("groups".into());
        assert!(scope(&s).is_ok());
    }

    #[test]
    fn issuer_override_must_be_scheme_host_port() {
        assert_eq!(issuer_base("https://id.example.com:8443/").unwrap(), "https://id.example.com:8443");
        assert!(issuer_base("https://id.example.com/v1/x").is_err());
        assert!(issuer_base("ftp://id.example.com").is_err());
        // Normalised to one exact string; anything that could make two spellings is refused.
        assert_eq!(issuer_base("HTTPS://ID.Example.COM:443").unwrap(), "https://id.example.com");
        for bad in [
            "https://id.example.com/a/..",
            "https://id.example.com/./",
            "https://id.example.com/?x=1",
            "https://id.example.com/#f",
            "https://user:pw@id.example.com",
            "http://id.example.com",
            "http://10.0.0.1:8080",
        ] {
            assert!(issuer_base(bad).is_err(), "{bad}");
        }
        assert_eq!(issuer_base("http://127.0.0.1:8080/").unwrap(), "http://127.0.0.1:8080");
        assert_eq!(issuer_base("http://[::1]:80").unwrap(), "http://[::1]");
        assert_eq!(issuer_base("http://localhost:9").unwrap(), "http://localhost:9");
    }

    #[test]
    fn cidrs() {
        assert_eq!(parse_cidr("10.0.0.0/8").unwrap().1, 8);
        assert_eq!(parse_cidr("::/0").unwrap().1, 0);
        assert_eq!(parse_cidr("192.0.2.7").unwrap().1, 32);
        assert!(parse_cidr("10.0.0.0/33").is_err());
        assert!(parse_cidr("nope").is_err());
    }
}
