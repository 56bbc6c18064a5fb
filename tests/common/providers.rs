//! The protocol tests' fixture: one standalone server with the tests' external issuer, a key,
//! three clients (basic, post, public) and a provider per algorithm, and the clients and
//! providers the negative cases need. `protocol.rs` and the endpoint files
//! (`authorize_endpoint.rs`, `token_endpoint.rs`, `userinfo_endpoint.rs`) share it.

use std::path::PathBuf;

use oidc_operator::keys::SigningAlgorithm;
use serde_json::json;

use super::oauth::{self, OAuth};
use super::{ExternalIssuer, Server, identity, write_manifest};

pub const ENTITY: &str = "5d0c0ffe-0000-4000-8000-000000000001";
pub const SHORT_LIVED: &str = "5d0c0ffe-0000-4000-8000-000000000002";
pub const REDIRECT: &str = "https://app.example/callback";
/// RFC 7636 Appendix B's verifier and its S256 challenge.
pub const VERIFIER: &str = "dBjftJeZ4CVP-mB92K27uhbUJU1p1r_wW1gFWFOEjXk";
pub const CHALLENGE: &str = "E9Melhoa2OwvFrEMTJguCHaoeK1t8URWbuGJSstw-cM";

/// Per algorithm: a key, three clients (basic, post, public) and a provider; plus scopes, an
/// assignment by group, and the identity.
pub fn manifests(issuer: &ExternalIssuer) -> String {
    let mut out = identity(
        "runner",
        ENTITY,
        issuer,
        "  groups: [platform]\n  metadata: {team: payments}\n  boundClaims: {team: \"payments\"}\n",
    );
    out.push_str(&identity(
        "shorty",
        SHORT_LIVED,
        issuer,
        "  groups: [platform]\n  accessTokenTTL: 1\n  accessTokenMaxTTL: 1\n",
    ));
    out.push_str(concat!(
        "apiVersion: oidc-operator.dev/v1alpha1\nkind: OidcScope\nmetadata: {name: groups}\n",
        "spec: {template: '{\"groups\": {{identity.entity.groups.names}}}'}\n---\n",
        "apiVersion: oidc-operator.dev/v1alpha1\nkind: OidcScope\nmetadata: {name: team}\n",
        "spec: {template: '{\"team\": {{identity.entity.metadata.team}}, \"k8s_ns\": {{identity.entity.aliases.k8s.metadata.namespace}}}'}\n---\n",
        "apiVersion: oidc-operator.dev/v1alpha1\nkind: OidcScope\nmetadata: {name: clash}\n",
        "spec: {template: '{\"groups\": []}'}\n---\n",
        "apiVersion: oidc-operator.dev/v1alpha1\nkind: OidcScope\nmetadata: {name: strict}\n",
        "spec: {missingValues: error, template: '{\"zone\": {{identity.entity.metadata.zone}}}'}\n---\n",
        "apiVersion: oidc-operator.dev/v1alpha1\nkind: OidcAssignment\nmetadata: {name: platform}\nspec: {groups: [platform]}\n---\n",
        "apiVersion: oidc-operator.dev/v1alpha1\nkind: OidcAssignment\nmetadata: {name: nobody}\nspec: {entities: [someone-else]}\n---\n",
    ));
    for alg in SigningAlgorithm::ALL {
        let n = alg.as_str().to_lowercase();
        out.push_str(&format!(
            "apiVersion: oidc-operator.dev/v1alpha1\nkind: OidcKey\nmetadata: {{name: key-{n}}}\nspec: {{algorithm: {alg}, allowedClients: [\"*\"]}}\n---\n"
        ));
        for (kind, ty) in [("basic", "confidential"), ("post", "confidential"), ("public", "public")] {
            out.push_str(&format!(
                "apiVersion: oidc-operator.dev/v1alpha1\nkind: OidcClient\nmetadata: {{name: {kind}-{n}}}\nspec: {{clientType: {ty}, key: key-{n}, redirectUris: [\"{REDIRECT}\", \"http://127.0.0.1/cb\"], assignments: [platform], idTokenTTL: 30m, accessTokenTTL: 10m}}\n---\n"
            ));
        }
        out.push_str(&format!(
            "apiVersion: oidc-operator.dev/v1alpha1\nkind: OidcProvider\nmetadata: {{name: prov-{n}}}\nspec: {{allowedClients: [basic-{n}, post-{n}, public-{n}], scopesSupported: [groups, team, clash]}}\n---\n"
        ));
    }
    // For negative cases: a client no provider allows, one with nobody assigned.
    out.push_str(&format!(
        "apiVersion: oidc-operator.dev/v1alpha1\nkind: OidcClient\nmetadata: {{name: stranger}}\nspec: {{redirectUris: [\"{REDIRECT}\"], assignments: [allow_all]}}\n---\n\
         apiVersion: oidc-operator.dev/v1alpha1\nkind: OidcClient\nmetadata: {{name: unassigned}}\nspec: {{redirectUris: [\"{REDIRECT}\"], assignments: [nobody]}}\n---\n\
         apiVersion: oidc-operator.dev/v1alpha1\nkind: OidcProvider\nmetadata: {{name: neg}}\nspec: {{allowedClients: [basic-rs256, public-rs256, unassigned], scopesSupported: [groups, clash, strict]}}\n---\n\
         apiVersion: oidc-operator.dev/v1alpha1\nkind: OidcProvider\nmetadata: {{name: legacy}}\nspec: {{allowedClients: [public-rs256], pkceMethods: [S256, plain]}}\n"
    ));
    out
}

/// The running fixture; `oauth` speaks to provider `neg`, the negative cases' provider.
pub struct Setup {
    pub tmp: tempfile::TempDir,
    pub issuer: ExternalIssuer,
    pub server: Server,
    pub oauth: OAuth,
    pub state: PathBuf,
}

impl Setup {
    pub async fn start() -> Setup {
        Self::start_with(&[]).await
    }

    /// With more server flags.
    pub async fn start_with(extra: &[&str]) -> Setup {
        let tmp = tempfile::tempdir().unwrap();
        let (m, state) = (tmp.path().join("m"), tmp.path().join("state"));
        std::fs::create_dir(&m).unwrap();
        let issuer = ExternalIssuer::start(tmp.path()).await;
        write_manifest(&m, "all.yaml", &manifests(&issuer));
        let args: Vec<&str> =
            ["--allow-insecure-issuers", "--issuer-refetch-interval", "1"].iter().chain(extra).copied().collect();
        let server = Server::start(&m, &state, &args).await;
        server.wait_identity_ready("runner").await;
        let oauth = OAuth::new(&server, "default", "neg");
        Setup { tmp, issuer, server, oauth, state }
    }

    /// A client's id and secret (none for a public client).
    pub fn credentials(&self, client: &str) -> (String, Option<String>) {
        oauth::credentials(&self.state, "default", client)
    }

    /// A confidential client's id and secret.
    pub fn confidential(&self, client: &str) -> (String, String) {
        oauth::confidential(&self.state, "default", client)
    }

    /// An identity access token of the entity `runner` (team payments, namespace ci).
    pub async fn identity_token(&self) -> String {
        let jwt =
            self.issuer.mint("ES256", json!({"team": "payments", "kubernetes.io": {"namespace": "ci"}}), None).await;
        self.oauth.login_token(ENTITY, &jwt).await
    }
}
