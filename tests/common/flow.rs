//! The workload-identity flow (docs/design.md) on a real cluster: a ServiceAccount token (signed
//! by the API server) logs in to an IdentityOidcAuth trusting the API server's own issuer,
//! authorizes a client, and `openidconnect` exchanges the code and verifies the ID token with
//! the provider's discovery document and JWKS alone.

use base64::Engine;
use openidconnect::core::{
    CoreAuthenticationFlow, CoreClient, CoreIdToken, CoreJwsSigningAlgorithm, CoreProviderMetadata,
};
use openidconnect::{
    AuthorizationCode, ClientId, ClientSecret, CsrfToken, IssuerUrl, Nonce, PkceCodeChallenge, RedirectUrl, Scope,
    TokenResponse,
};
use serde_json::Value;

use super::Server;
use super::cluster::{ControlPlane, jsonpath};

/// The six kinds of the workload-identity flow plus the ServiceAccount `runner` whose
/// tokens log in: key `signing` (ES256), scope `groups`, assignment `platform`, client
/// `app`, provider `main`, identity `runner` (group `platform`) trusting the API server.
pub fn workload_manifests(cp: &ControlPlane, ns: &str) -> String {
    format!(
        "apiVersion: v1\nkind: ServiceAccount\nmetadata: {{name: runner}}\n---\n\
apiVersion: oidc-operator.dev/v1alpha1\nkind: OidcKey\nmetadata: {{name: signing}}\nspec: {{algorithm: ES256, allowedClients: [\"*\"]}}\n---\n\
apiVersion: oidc-operator.dev/v1alpha1\nkind: OidcScope\nmetadata: {{name: groups}}\nspec: {{template: '{{\"groups\": {{{{identity.entity.groups.names}}}}, \"sa\": {{{{identity.entity.aliases.k8s.name}}}}}}'}}\n---\n\
apiVersion: oidc-operator.dev/v1alpha1\nkind: OidcAssignment\nmetadata: {{name: platform}}\nspec: {{groups: [platform]}}\n---\n\
apiVersion: oidc-operator.dev/v1alpha1\nkind: OidcClient\nmetadata: {{name: app}}\nspec: {{key: signing, redirectUris: [\"https://app.example/cb\"], assignments: [platform]}}\n---\n\
apiVersion: oidc-operator.dev/v1alpha1\nkind: OidcProvider\nmetadata: {{name: main}}\nspec: {{allowedClients: [\"*\"], scopesSupported: [groups]}}\n---\n\
apiVersion: oidc-operator.dev/v1alpha1\nkind: IdentityOidcAuth\nmetadata: {{name: runner}}\nspec:\n  oidcDiscoveryUrl: {url}\n  boundIssuer: {url}\n  boundAudiences: oidc-operator\n  boundSubject: \"system:serviceaccount:{ns}:runner\"\n  groups: [platform]\n  caCert: |\n{ca}",
        url = cp.url,
        ca = super::yaml_block(&cp.ca_pem(), 4),
    )
}

/// The objects of [`workload_manifests`], as `kubectl wait` names them.
pub const WORKLOAD_OBJECTS: [&str; 6] = [
    "oidckey/signing",
    "oidcscope/groups",
    "oidcassignment/platform",
    "oidcclient/app",
    "oidcprovider/main",
    "identityoidcauth/runner",
];

/// What one pass through the flow produced.
pub struct Flow {
    pub identity_id: String,
    pub client_id: String,
    pub issuer: String,
    /// The compact ID token, verified by openidconnect.
    pub id_token: String,
    /// Its payload as JSON.
    pub claims: Value,
}

/// A client's credentials from its Secret `<client>-oidc-client`.
pub fn client_credentials(cp: &ControlPlane, ns: &str, client: &str) -> (String, Option<String>) {
    let decode =
        |b64: String| String::from_utf8(base64::engine::general_purpose::STANDARD.decode(b64).unwrap()).unwrap();
    let secret = format!("secret/{client}-oidc-client");
    let id = decode(jsonpath(cp, ns, &secret, "{.data.client_id}"));
    let raw_secret = jsonpath(cp, ns, &secret, "{.data.client_secret}");
    (id, (!raw_secret.is_empty()).then(|| decode(raw_secret)))
}

/// A token of ServiceAccount `ns/name` for `audience`, signed by the API server.
pub fn service_account_token(cp: &ControlPlane, ns: &str, name: &str, audience: &str) -> String {
    let out = cp.kubectl(&["create", "token", name, "-n", ns, "--audience", audience]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8(out.stdout).unwrap().trim().to_owned()
}

/// Logs in as ServiceAccount `runner` to IdentityOidcAuth `runner`, then authorizes
/// `client` at `provider` with `scopes` and exchanges the code (PKCE, client secret), as a
/// relying party would; `ca_pem` is the operator's CA when it serves HTTPS.
pub async fn run(
    cp: &ControlPlane,
    ns: &str,
    operator: &Server,
    provider: &str,
    client: &str,
    scopes: &[&str],
    ca_pem: Option<&str>,
) -> Flow {
    let identity_id = jsonpath(cp, ns, "identityoidcauth/runner", "{.status.identityId}");
    assert!(!identity_id.is_empty(), "the identity has no identityId in its status");
    let sa_token = service_account_token(cp, ns, "runner", "oidc-operator");
    let access = super::login_token(operator, &identity_id, &sa_token).await;

    let issuer = jsonpath(cp, ns, &format!("oidcprovider/{provider}"), "{.status.issuer}");
    let (client_id, client_secret) = client_credentials(cp, ns, client);
    let mut builder = reqwest::Client::builder().redirect(reqwest::redirect::Policy::none());
    if let Some(ca) = ca_pem {
        builder = builder.add_root_certificate(reqwest::Certificate::from_pem(ca.as_bytes()).unwrap());
    }
    let http = builder.build().unwrap();
    let metadata = CoreProviderMetadata::discover_async(IssuerUrl::new(issuer.clone()).unwrap(), &http).await.unwrap();
    let rp = CoreClient::from_provider_metadata(
        metadata,
        ClientId::new(client_id.clone()),
        client_secret.map(ClientSecret::new),
    )
    .set_redirect_uri(RedirectUrl::new("https://app.example/cb".into()).unwrap());
    let (challenge, verifier) = PkceCodeChallenge::new_random_sha256();
    let mut request =
        rp.authorize_url(CoreAuthenticationFlow::AuthorizationCode, CsrfToken::new_random, Nonce::new_random);
    for scope in scopes {
        request = request.add_scope(Scope::new((*scope).into()));
    }
    let (url, csrf, nonce) = request.set_pkce_challenge(challenge).url();
    let body: Value = http.get(url).bearer_auth(&access).send().await.unwrap().json().await.unwrap();
    assert_eq!(body["state"], csrf.secret().as_str(), "{body}");
    let token = rp
        .exchange_code(AuthorizationCode::new(body["code"].as_str().unwrap().to_owned()))
        .unwrap()
        .set_pkce_verifier(verifier)
        .request_async(&http)
        .await
        .unwrap();
    let id_token = token.id_token().unwrap();
    let checker = rp.id_token_verifier().set_allowed_algs(vec![
        CoreJwsSigningAlgorithm::EcdsaP256Sha256,
        CoreJwsSigningAlgorithm::RsaSsaPkcs1V15Sha256,
    ]);
    let verified = id_token.claims(&checker, &nonce).unwrap();
    assert_eq!(verified.subject().as_str(), identity_id);
    let compact = id_token.to_string();
    let payload = compact.split('.').nth(1).unwrap();
    let claims =
        serde_json::from_slice(&base64::engine::general_purpose::URL_SAFE_NO_PAD.decode(payload).unwrap()).unwrap();
    Flow { identity_id, client_id, issuer, id_token: compact, claims }
}

/// Verifies a compact ID token for `client_id` with `issuer`'s discovery document and JWKS
/// alone, as `openidconnect` does for any relying party (no nonce: a token exchange sends
/// none); gives its payload.
pub async fn verify_id_token(issuer: &str, client_id: &str, compact: &str) -> Value {
    let http = reqwest::Client::builder().redirect(reqwest::redirect::Policy::none()).build().unwrap();
    let metadata =
        CoreProviderMetadata::discover_async(IssuerUrl::new(issuer.to_owned()).unwrap(), &http).await.unwrap();
    let rp = CoreClient::from_provider_metadata(metadata, ClientId::new(client_id.to_owned()), None);
    let checker = rp.id_token_verifier().set_allowed_algs(vec![
        CoreJwsSigningAlgorithm::EcdsaP256Sha256,
        CoreJwsSigningAlgorithm::RsaSsaPkcs1V15Sha256,
    ]);
    let token: CoreIdToken = compact.parse().unwrap();
    token.claims(&checker, |_: Option<&Nonce>| Ok(())).unwrap();
    let payload = compact.split('.').nth(1).unwrap();
    serde_json::from_slice(&base64::engine::general_purpose::URL_SAFE_NO_PAD.decode(payload).unwrap()).unwrap()
}
