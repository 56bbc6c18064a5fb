//! Grants for services (issue 22) end to end, against the standalone server: client_credentials
//! with opaque and RFC 9068 JWT access tokens (checked by jwcrypto against the JWKS, `typ`
//! included), refresh tokens rotated at every use with reuse detection, introspection
//! (RFC 7662) and revocation (RFC 7009), each on the memory store and on two replicas sharing
//! one Redis; and the refusals, as a table, with their exact status and RFC error code.

// Test helpers outside #[test] functions stop the test on a failed step.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::disallowed_methods)]

mod common;

use std::path::PathBuf;

use common::oauth::{Auth, OAuth, Reply, Request, confidential, credentials, refusals};
use common::redis::RedisServer;
use common::{ExternalIssuer, Server, eventually, identity, verify_with_jwcrypto, write_manifest};
use serde_json::{Value, json};

const ENTITY: &str = "9a170000-0000-4000-8000-000000000001";
const REDIRECT: &str = "https://app.example/callback";
const API: &str = "https://api.example/orders";

/// The clients of provider `main` (and one of provider `other`), each with the grants its
/// name says.
fn manifests(issuer: &ExternalIssuer, assigned: &str) -> String {
    let mut out = identity("runner", ENTITY, issuer, "  groups: [platform]\n  metadata: {team: payments}\n");
    out.push_str(&format!(
        "apiVersion: oidc-operator.dev/v1alpha1\nkind: OidcScope\nmetadata: {{name: groups}}\n\
         spec: {{template: '{{\"groups\": {{{{identity.entity.groups.names}}}}}}'}}\n---\n\
         apiVersion: oidc-operator.dev/v1alpha1\nkind: OidcScope\nmetadata: {{name: team}}\n\
         spec: {{template: '{{\"team\": {{{{identity.entity.metadata.team}}}}}}'}}\n---\n\
         apiVersion: oidc-operator.dev/v1alpha1\nkind: OidcAssignment\nmetadata: {{name: platform}}\nspec: {{{assigned}}}\n---\n"
    ));
    for alg in ["RS256", "ES256", "EdDSA"] {
        let n = alg.to_lowercase();
        out.push_str(&format!(
            "apiVersion: oidc-operator.dev/v1alpha1\nkind: OidcKey\nmetadata: {{name: key-{n}}}\nspec: {{algorithm: {alg}, allowedClients: [\"*\"]}}\n---\n\
             apiVersion: oidc-operator.dev/v1alpha1\nkind: OidcClient\nmetadata: {{name: svc-{n}}}\n\
             spec: {{key: key-{n}, grantTypes: [client_credentials], accessTokenFormat: jwt, audiences: [\"{API}\", billing]}}\n---\n"
        ));
    }
    let client = |name: &str, spec: &str| {
        format!(
            "apiVersion: oidc-operator.dev/v1alpha1\nkind: OidcClient\nmetadata: {{name: {name}}}\nspec: {{{spec}}}\n---\n"
        )
    };
    let rp = format!("redirectUris: [\"{REDIRECT}\"], assignments: [platform], key: key-es256");
    out.push_str(&client("svc-opaque", &format!("grantTypes: [client_credentials], audiences: [\"{API}\"]")));
    out.push_str(&client("svc-post", "grantTypes: [client_credentials], tokenEndpointAuthMethod: client_secret_post"));
    out.push_str(&client("rp", &format!("{rp}, grantTypes: [authorization_code, refresh_token]")));
    out.push_str(&client(
        "rp-jwt",
        &format!("{rp}, grantTypes: [authorization_code, refresh_token], accessTokenFormat: jwt"),
    ));
    out.push_str(&client(
        "rp-grace",
        &format!("{rp}, grantTypes: [authorization_code, refresh_token], refreshTokenReuseInterval: 60"),
    ));
    out.push_str(&client(
        "rp-short",
        &format!("{rp}, grantTypes: [authorization_code, refresh_token], refreshTokenTTL: 2, refreshTokenMaxTTL: 3"),
    ));
    out.push_str(&client("plain", &rp));
    out.push_str(&client("rp-other", &format!("{rp}, grantTypes: [authorization_code, refresh_token]")));
    out.push_str(&client("svc-other", "grantTypes: [client_credentials]"));
    out.push_str(concat!(
        "apiVersion: oidc-operator.dev/v1alpha1\nkind: OidcProvider\nmetadata: {name: main}\n",
        "spec: {allowedClients: [svc-rs256, svc-es256, svc-eddsa, svc-opaque, svc-post, rp, rp-jwt, rp-grace, rp-short, plain], scopesSupported: [groups, team]}\n---\n",
        "apiVersion: oidc-operator.dev/v1alpha1\nkind: OidcProvider\nmetadata: {name: other}\n",
        "spec: {allowedClients: [rp-other, svc-other], scopesSupported: [groups, team]}\n",
    ));
    out
}

/// One server (memory store), or two replicas sharing one Redis.
struct Fixture {
    _tmp: tempfile::TempDir,
    issuer: ExternalIssuer,
    manifests: PathBuf,
    state: PathBuf,
    a: Server,
    b: Option<Server>,
    _redis: Option<RedisServer>,
}

impl Fixture {
    async fn start(shared: bool) -> Fixture {
        let tmp = tempfile::tempdir().unwrap();
        let manifests = tmp.path().join("m");
        std::fs::create_dir(&manifests).unwrap();
        let issuer = ExternalIssuer::start(tmp.path()).await;
        write_manifest(&manifests, "all.yaml", &manifests_text(&issuer, true));
        let r = common::replicas(&manifests, tmp.path(), shared, &["runner"]).await;
        Fixture { _tmp: tmp, issuer, manifests, state: r.state, a: r.a, b: r.b, _redis: r.redis }
    }

    /// Provider `provider` as seen through replica `b` when there is one and `other`.
    fn oauth(&self, provider: &str, other: bool) -> OAuth {
        let server = if other { self.b.as_ref().unwrap_or(&self.a) } else { &self.a };
        OAuth::new(server, "default", provider)
    }

    fn secret(&self, client: &str) -> (String, String) {
        confidential(&self.state, "default", client)
    }

    fn basic(&self, client: &str) -> Auth {
        let (id, secret) = self.secret(client);
        Auth::basic(&id, &secret)
    }

    fn client_id(&self, client: &str) -> String {
        credentials(&self.state, "default", client).0
    }

    /// Code-flow tokens of `client` at `provider` for `scope`.
    async fn code_tokens(&self, provider: &str, client: &str, scope: &str) -> Value {
        let oauth = self.oauth(provider, false);
        let jwt = self.issuer.mint("ES256", json!({"kubernetes.io": {"namespace": "ci"}}), None).await;
        let token = oauth.login_token(ENTITY, &jwt).await;
        let r = oauth
            .send(
                &common::oauth::code_request(&self.client_id(client), REDIRECT)
                    .set("scope", scope)
                    .auth(Auth::bearer(&token)),
            )
            .await;
        assert_eq!(r.status, 200, "authorize: {}", r.body);
        let r = oauth.send(&Request::exchange(&r.text("code"), REDIRECT).auth(self.basic(client))).await;
        assert_eq!(r.status, 200, "exchange: {}", r.body);
        r.body
    }
}

fn manifests_text(issuer: &ExternalIssuer, assigned: bool) -> String {
    manifests(issuer, if assigned { "groups: [platform]" } else { "entities: [someone-else]" })
}

fn refresh(token: &str) -> Request {
    Request::post("token").set("grant_type", "refresh_token").set("refresh_token", token)
}

fn client_credentials() -> Request {
    Request::post("token").set("grant_type", "client_credentials")
}

async fn introspect(oauth: &OAuth, auth: Auth, token: &str) -> Value {
    let r = oauth.send(&Request::post("introspect").set("token", token).auth(auth)).await;
    assert_eq!(r.status, 200, "introspect: {}", r.body);
    r.body
}

async fn revoke(oauth: &OAuth, auth: Auth, token: &str) -> Reply {
    oauth.send(&Request::post("revoke").set("token", token).auth(auth)).await
}

/// The JWT header of `token`.
fn header(token: &str) -> Value {
    use base64::Engine;
    let h = token.split('.').next().unwrap();
    serde_json::from_slice(&base64::engine::general_purpose::URL_SAFE_NO_PAD.decode(h).unwrap()).unwrap()
}

async fn client_credentials_tokens(f: &Fixture) {
    let main = f.oauth("main", false);
    let jwks = main.send(&Request::get(".well-known/keys")).await.body;
    let discovery = main.discovery().await.body;
    assert_eq!(
        discovery["grant_types_supported"],
        json!([
            "authorization_code",
            "refresh_token",
            "client_credentials",
            "urn:ietf:params:oauth:grant-type:token-exchange"
        ])
    );
    assert_eq!(discovery["introspection_endpoint"], main.url("introspect"));
    assert_eq!(discovery["revocation_endpoint"], main.url("revoke"));
    assert_eq!(
        discovery["introspection_endpoint_auth_methods_supported"],
        json!(["client_secret_basic", "client_secret_post", "private_key_jwt"])
    );

    // JWT access tokens with each algorithm, verified independently, typ included.
    let mut tokens = Vec::new();
    for (n, target) in [("rs256", Some(API)), ("es256", None), ("eddsa", Some("billing"))] {
        let mut request = client_credentials().set("scope", "groups").auth(f.basic(&format!("svc-{n}")));
        if let Some(t) = target {
            request = request.set(if t.starts_with("https") { "resource" } else { "audience" }, t);
        }
        let r = main.send(&request).await;
        assert_eq!(r.status, 200, "svc-{n}: {}", r.body);
        assert_eq!((r.body["token_type"].as_str(), r.body["scope"].as_str()), (Some("Bearer"), Some("groups")));
        for absent in ["id_token", "refresh_token"] {
            assert!(
                r.body.get(absent).is_none(),
                "client_credentials issues no {absent} (RFC 6749 §4.4.3): {}",
                r.body
            );
        }
        let at = r.text("access_token");
        assert_eq!(header(&at)["typ"], "at+jwt");
        let id = f.client_id(&format!("svc-{n}"));
        tokens.push((at, id, target.unwrap_or(&f.client_id(&format!("svc-{n}"))).to_owned()));
    }
    let list: Vec<String> = tokens.iter().map(|t| t.0.clone()).collect();
    let verified = verify_with_jwcrypto(&jwks, &list);
    for (i, (at, id, aud)) in tokens.iter().enumerate() {
        let v = &verified["tokens"][i];
        assert_eq!(v["valid"], true, "jwcrypto: {v}");
        assert_eq!(v["typ"], "at+jwt", "{v}");
        let p = &v["payload"];
        assert_eq!(
            (p["iss"].as_str(), p["sub"].as_str(), p["client_id"].as_str()),
            (Some(main.issuer().as_str()), Some(id.as_str()), Some(id.as_str()))
        );
        assert_eq!(p["aud"], aud.as_str(), "{p}");
        assert_eq!(p["scope"], "groups");
        assert!(p["jti"].is_string() && p["exp"].as_i64() > p["iat"].as_i64(), "{p}");
        // Introspection at the other replica knows it at once; userinfo refuses it (no end-user).
        let other = f.oauth("main", true);
        let i = introspect(&other, f.basic("svc-opaque"), at).await;
        assert_eq!(
            (i["active"].as_bool(), i["client_id"].as_str(), i["scope"].as_str()),
            (Some(true), Some(id.as_str()), Some("groups")),
            "{i}"
        );
        let u = other.userinfo(at).await;
        assert_eq!((u.status, u.error()), (403, Some("insufficient_scope")), "{}", u.body);
    }

    // Opaque tokens; client_secret_post; revocation makes it inactive on both replicas.
    let r = main.send(&client_credentials().auth(f.basic("svc-opaque"))).await;
    let opaque = r.text("access_token");
    assert_eq!(opaque.split('.').count(), 2, "an opaque handle, not a JWT: {opaque}");
    let i = introspect(&main, f.basic("svc-rs256"), &opaque).await;
    assert_eq!(i["aud"], json!([f.client_id("svc-opaque")]), "{i}");
    let (id, secret) = f.secret("svc-post");
    let r = main.send(&client_credentials().set("client_id", &id).set("client_secret", &secret)).await;
    assert_eq!(r.status, 200, "client_secret_post: {}", r.body);
    assert_eq!(revoke(&f.oauth("main", true), f.basic("svc-opaque"), &opaque).await.status, 200);
    assert_eq!(introspect(&main, f.basic("svc-rs256"), &opaque).await, json!({"active": false}));

    // A revoked JWT reads inactive before its exp.
    let at = &tokens[1].0;
    assert_eq!(revoke(&main, f.basic("svc-es256"), at).await.status, 200);
    assert_eq!(introspect(&f.oauth("main", true), f.basic("svc-opaque"), at).await, json!({"active": false}));
}

async fn refresh_rotation(f: &Fixture) {
    let main = f.oauth("main", false);
    let other = f.oauth("main", true);
    for client in ["rp", "rp-jwt"] {
        let first = f.code_tokens("main", client, "openid groups team").await;
        let (at0, rt0) = (first["access_token"].as_str().unwrap(), first["refresh_token"].as_str().unwrap().to_owned());
        assert_eq!(other.userinfo(at0).await.status, 200);
        let i = introspect(&other, f.basic("svc-opaque"), &rt0).await;
        assert_eq!(
            (i["active"].as_bool(), i["sub"].as_str()),
            (Some(true), Some(ENTITY)),
            "a refresh token introspected: {i}"
        );

        // Rotation at the other replica; the new ID token carries current claims.
        let r = other.send(&refresh(&rt0).auth(f.basic(client))).await;
        assert_eq!(r.status, 200, "{client} refresh: {}", r.body);
        let rt1 = r.text("refresh_token");
        assert_ne!(rt1, rt0, "rotated");
        let jwks = main.send(&Request::get(".well-known/keys")).await.body;
        let v = verify_with_jwcrypto(&jwks, &[r.text("id_token")]);
        assert_eq!(v["tokens"][0]["payload"]["groups"], json!(["platform"]), "{v}");
        assert_eq!(v["tokens"][0]["payload"]["sub"], ENTITY);
        let at1 = r.text("access_token");
        assert_eq!(main.userinfo(&at1).await.body["team"], "payments");

        // Narrower scope is fine; wider is not.
        let r = main.send(&refresh(&rt1).set("scope", "openid groups").auth(f.basic(client))).await;
        assert_eq!((r.status, r.body["scope"].as_str()), (200, Some("openid groups")), "{}", r.body);
        let rt2 = r.text("refresh_token");
        let at2 = r.text("access_token");
        let u = main.userinfo(&at2).await.body;
        assert_eq!((u["groups"].clone(), u.get("team").is_none()), (json!(["platform"]), true), "narrowed: {u}");

        // Reuse of a rotated token revokes the family: its access and refresh tokens, on both
        // replicas; asking for a wider scope with it does not dodge that.
        let r = main.send(&refresh(&rt0).set("scope", "openid groups team admin").auth(f.basic(client))).await;
        assert_eq!((r.status, r.error()), (400, Some("invalid_grant")), "{}", r.body);
        for (what, t) in [("access 0", at0.to_owned()), ("access 1", at1.clone()), ("access 2", at2.clone())] {
            assert_eq!(other.userinfo(&t).await.status, 401, "{client}: {what} outlived the family");
        }
        let r = other.send(&refresh(&rt2).auth(f.basic(client))).await;
        assert_eq!(
            (r.status, r.error()),
            (400, Some("invalid_grant")),
            "the newest refresh token went too: {}",
            r.body
        );
        assert_eq!(introspect(&other, f.basic("svc-opaque"), &rt2).await, json!({"active": false}));
    }

    // Within the reuse interval a rotated token refreshes again; the family stays.
    let t = f.code_tokens("main", "rp-grace", "openid").await;
    let rt0 = t["refresh_token"].as_str().unwrap();
    let a = main.send(&refresh(rt0).auth(f.basic("rp-grace"))).await;
    let b = other.send(&refresh(rt0).auth(f.basic("rp-grace"))).await;
    assert_eq!((a.status, b.status), (200, 200), "{} {}", a.body, b.body);
    assert_eq!(main.send(&refresh(&b.text("refresh_token")).auth(f.basic("rp-grace"))).await.status, 200);

    // Concurrent refreshes of one token outside any interval: exactly one new token.
    let t = f.code_tokens("main", "rp", "openid").await;
    let rt = t["refresh_token"].as_str().unwrap();
    let (x, y) = {
        let request = refresh(rt).auth(f.basic("rp"));
        tokio::join!(main.send(&request), other.send(&request))
    };
    let mut statuses = [x.status, y.status];
    statuses.sort();
    assert_eq!(statuses, [200, 400], "exactly one new token: {} {}", x.body, y.body);
    // With no reuse interval the loser's request is a reuse: the family, the winner's new
    // tokens included, is revoked (what refreshTokenReuseInterval is for).
    let winner = if x.status == 200 { &x } else { &y };
    let r = main.send(&refresh(&winner.text("refresh_token")).auth(f.basic("rp"))).await;
    assert_eq!((r.status, r.error()), (400, Some("invalid_grant")), "{}", r.body);
    assert_eq!(other.userinfo(&winner.text("access_token")).await.status, 401);

    // Revoking a refresh token revokes its access tokens (RFC 7009 §2.1), at the other replica at once.
    let t = f.code_tokens("main", "rp", "openid").await;
    let (at, rt) = (t["access_token"].as_str().unwrap(), t["refresh_token"].as_str().unwrap());
    // Another client's revocation changes nothing.
    assert_eq!(revoke(&main, f.basic("rp-jwt"), rt).await.status, 200);
    assert_eq!(other.userinfo(at).await.status, 200, "a foreign revocation left the token alone");
    assert_eq!(revoke(&main, f.basic("rp"), rt).await.status, 200);
    assert_eq!(other.userinfo(at).await.status, 401);
    assert_eq!(other.send(&refresh(rt).auth(f.basic("rp"))).await.status, 400);
}

#[tokio::test(flavor = "multi_thread")]
async fn grants_on_the_memory_store() {
    let f = Fixture::start(false).await;
    client_credentials_tokens(&f).await;
    refresh_rotation(&f).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn grants_on_two_replicas_sharing_redis() {
    let f = Fixture::start(true).await;
    client_credentials_tokens(&f).await;
    refresh_rotation(&f).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn every_bad_grant_request_gets_its_rfc_error() {
    let f = Fixture::start(false).await;
    let main = f.oauth("main", false);
    let other = f.oauth("other", false);
    let rp = f.code_tokens("main", "rp", "openid groups").await;
    let rt = rp["refresh_token"].as_str().unwrap().to_owned();
    let at = rp["access_token"].as_str().unwrap().to_owned();
    let other_rt = f.code_tokens("other", "rp-other", "openid").await["refresh_token"].as_str().unwrap().to_owned();
    let cc = main.send(&client_credentials().auth(f.basic("svc-es256"))).await.text("access_token");
    let plain_code = {
        let jwt = f.issuer.mint("ES256", json!({"kubernetes.io": {"namespace": "ci"}}), None).await;
        let token = main.login_token(ENTITY, &jwt).await;
        main.code(&token, &f.client_id("plain"), REDIRECT).await
    };
    let (post_id, post_secret) = f.secret("svc-post");
    let table = vec![
        (
            "unknown grant_type",
            Request::post("token").set("grant_type", "password").auth(f.basic("rp")),
            400,
            "unsupported_grant_type",
        ),
        ("no grant_type", Request::post("token").auth(f.basic("rp")), 400, "invalid_request"),
        ("client_credentials not enabled", client_credentials().auth(f.basic("rp")), 400, "unauthorized_client"),
        ("refresh not enabled", refresh(&rt).auth(f.basic("plain")), 400, "unauthorized_client"),
        (
            "code grant not enabled",
            Request::exchange(&plain_code, REDIRECT).auth(f.basic("svc-opaque")),
            400,
            "unauthorized_client",
        ),
        (
            "client_credentials without authentication",
            client_credentials().set("client_id", &f.client_id("svc-opaque")),
            401,
            "invalid_client",
        ),
        (
            "client_credentials with a wrong secret",
            client_credentials().auth(Auth::basic(&f.client_id("svc-opaque"), "nope")),
            401,
            "invalid_client",
        ),
        (
            "basic for a client_secret_post client",
            client_credentials().auth(Auth::basic(&post_id, &post_secret)),
            401,
            "invalid_client",
        ),
        (
            "unknown resource",
            client_credentials().set("resource", "https://api.example/other").auth(f.basic("svc-opaque")),
            400,
            "invalid_target",
        ),
        (
            "resource with a fragment",
            client_credentials().set("resource", "https://api.example/orders#x").auth(f.basic("svc-opaque")),
            400,
            "invalid_target",
        ),
        (
            "relative resource",
            client_credentials().set("resource", "/orders").auth(f.basic("svc-opaque")),
            400,
            "invalid_target",
        ),
        (
            "unknown audience",
            client_credentials().set("audience", "payroll").auth(f.basic("svc-rs256")),
            400,
            "invalid_target",
        ),
        (
            "scope the provider lacks",
            client_credentials().set("scope", "admin").auth(f.basic("svc-opaque")),
            400,
            "invalid_scope",
        ),
        (
            "openid at client_credentials",
            client_credentials().set("scope", "openid").auth(f.basic("svc-opaque")),
            400,
            "invalid_scope",
        ),
        ("client of another provider", client_credentials().auth(f.basic("svc-other")), 400, "unauthorized_client"),
        (
            "widened scope at refresh",
            refresh(&rt).set("scope", "openid groups team").auth(f.basic("rp")),
            400,
            "invalid_scope",
        ),
        ("another client's refresh token", refresh(&rt).auth(f.basic("rp-jwt")), 400, "invalid_grant"),
        ("another provider's refresh token", refresh(&other_rt).auth(f.basic("rp")), 400, "invalid_grant"),
        ("an access token as refresh token", refresh(&at).auth(f.basic("rp")), 400, "invalid_grant"),
        ("a made-up refresh token", refresh("abc.def").auth(f.basic("rp")), 400, "invalid_grant"),
        (
            "no refresh_token",
            Request::post("token").set("grant_type", "refresh_token").auth(f.basic("rp")),
            400,
            "invalid_request",
        ),
        ("refresh without authentication", refresh(&rt).set("client_id", &f.client_id("rp")), 401, "invalid_client"),
        ("introspection without authentication", Request::post("introspect").set("token", &at), 401, "invalid_client"),
        (
            "introspection by a public-style request",
            Request::post("introspect").set("token", &at).set("client_id", &f.client_id("rp")),
            401,
            "invalid_client",
        ),
        (
            "introspection with a wrong secret",
            Request::post("introspect").set("token", &at).auth(Auth::basic(&f.client_id("rp"), "x")),
            401,
            "invalid_client",
        ),
        ("introspection without token", Request::post("introspect").auth(f.basic("rp")), 400, "invalid_request"),
        (
            "introspection by GET",
            Request::get("introspect").set("token", &at).auth(f.basic("rp")),
            405,
            "method_not_allowed",
        ),
        ("revocation without authentication", Request::post("revoke").set("token", &at), 401, "invalid_client"),
        ("revocation without token", Request::post("revoke").auth(f.basic("rp")), 400, "invalid_request"),
        ("revocation by GET", Request::get("revoke").set("token", &at).auth(f.basic("rp")), 405, "method_not_allowed"),
        (
            "revocation at another provider",
            Request::post("revoke").set("token", &at).auth(f.basic("rp")).at("other"),
            401,
            "invalid_client",
        ),
        (
            "a client_credentials token at userinfo",
            Request::get("userinfo").auth(Auth::bearer(&cc)),
            403,
            "insufficient_scope",
        ),
        (
            "a JWT access token at another provider's userinfo",
            Request::get("userinfo").auth(Auth::bearer(&cc)).at("other"),
            401,
            "invalid_token",
        ),
        (
            "an ID token at userinfo",
            Request::get("userinfo").auth(Auth::bearer(rp["id_token"].as_str().unwrap())),
            401,
            "invalid_token",
        ),
    ];
    let n = table.len();
    refusals(&main, table).await;
    assert!(n >= 34, "{n} rows");

    // Introspection by a client of another provider reads inactive, and nothing more.
    let i = introspect(&other, f.basic("svc-other"), &at).await;
    assert_eq!(i, json!({"active": false}));
    let i = introspect(&other, f.basic("svc-other"), &rt).await;
    assert_eq!(i, json!({"active": false}));
    // Revocation of a foreign token: 200, untouched.
    let r = revoke(&other, f.basic("svc-other"), &at).await;
    assert_eq!(r.status, 200);
    assert_eq!(main.userinfo(&at).await.status, 200, "another provider's client revoked nothing");
    // The refusals above left the refresh token usable.
    assert_eq!(main.send(&refresh(&rt).auth(f.basic("rp"))).await.status, 200);

    // Refresh after the entity left the assignment: refused; it comes back, and a new grant works.
    let t = f.code_tokens("main", "rp", "openid").await;
    let rt = t["refresh_token"].as_str().unwrap().to_owned();
    write_manifest(&f.manifests, "all.yaml", &manifests_text(&f.issuer, false));
    let m = main.clone();
    let auth = f.basic("rp");
    eventually(20, "the assignment to drop the entity", async || {
        let r = m.send(&refresh(&rt).auth(auth.clone())).await;
        r.status == 400 && r.error() == Some("invalid_grant")
    })
    .await;

    // Expiry: refreshTokenTTL (2 s) and refreshTokenMaxTTL (3 s).
    write_manifest(&f.manifests, "all.yaml", &manifests_text(&f.issuer, true));
    let m = main.clone();
    let f2 = &f;
    eventually(20, "the entity assigned again", async || {
        let jwt = f2.issuer.mint("ES256", json!({"kubernetes.io": {"namespace": "ci"}}), None).await;
        let token = m.login_token(ENTITY, &jwt).await;
        m.authorize(
            Some(&token),
            &[
                ("response_type", "code"),
                ("client_id", &f2.client_id("rp-short")),
                ("redirect_uri", REDIRECT),
                ("scope", "openid"),
            ],
        )
        .await
        .status
            == 200
    })
    .await;
    let t = f.code_tokens("main", "rp-short", "openid").await;
    let rt = t["refresh_token"].as_str().unwrap().to_owned();
    tokio::time::sleep(std::time::Duration::from_millis(2500)).await;
    let r = main.send(&refresh(&rt).auth(f.basic("rp-short"))).await;
    assert_eq!((r.status, r.error()), (400, Some("invalid_grant")), "idle past refreshTokenTTL: {}", r.body);
}

/// Runs the authlib client (tests/authlib_client.py) with `args`; its answer.
fn authlib(args: Value) -> Value {
    common::python_json("authlib_client.py", &args)
}

#[tokio::test(flavor = "multi_thread")]
async fn third_party_clients_use_every_grant() {
    use common::oauth::oauth2_error;
    use oauth2::{AuthType, StandardRevocableToken, TokenIntrospectionResponse, TokenResponse};

    let f = Fixture::start(false).await;
    let main = f.oauth("main", false);
    let ca = f.state.join("tls/ca.crt");
    let (svc_id, svc_secret) = f.secret("svc-opaque");
    let (rp_id, rp_secret) = f.secret("rp");
    let (rs_id, rs_secret) = f.secret("svc-rs256");

    // The oauth2 crate: client_credentials for a resource, introspection by another client,
    // revocation, introspection again.
    let svc = main.oauth2_client(&svc_id, Some(&svc_secret), AuthType::BasicAuth, REDIRECT);
    let resource_server = main.oauth2_client(&rs_id, Some(&rs_secret), AuthType::RequestBody, REDIRECT);
    let token = main.oauth2_client_credentials(&svc, &[], Some(API)).await.unwrap();
    assert!(token.refresh_token().is_none());
    let at = token.access_token().secret().clone();
    let seen = main.oauth2_introspect(&resource_server, &at).await.unwrap();
    assert!(seen.active());
    assert_eq!(seen.client_id().map(|c| c.as_str()), Some(svc_id.as_str()));
    assert_eq!(seen.aud().cloned(), Some(vec![API.to_owned()]));
    main.oauth2_revoke(&svc, StandardRevocableToken::AccessToken(token.access_token().clone())).await.unwrap();
    assert!(!main.oauth2_introspect(&resource_server, &at).await.unwrap().active());
    let refused = main.oauth2_client_credentials(&svc, &[], Some("https://elsewhere.example")).await.unwrap_err();
    assert_eq!(oauth2_error(&refused).as_deref(), Some("invalid_target"));

    // The oauth2 crate: refresh (rotated), narrowed; the revoked refresh token is refused.
    let rp = main.oauth2_client(&rp_id, Some(&rp_secret), AuthType::BasicAuth, REDIRECT);
    let first = f.code_tokens("main", "rp", "openid groups").await;
    let refreshed = main.oauth2_refresh(&rp, first["refresh_token"].as_str().unwrap(), &["openid"]).await.unwrap();
    let rt = refreshed.refresh_token().unwrap().clone();
    assert_ne!(rt.secret(), first["refresh_token"].as_str().unwrap());
    assert_eq!(
        refreshed.scopes().map(|s| s.iter().map(|s| s.to_string()).collect::<Vec<_>>()),
        Some(vec!["openid".to_owned()])
    );
    main.oauth2_revoke(&rp, StandardRevocableToken::RefreshToken(rt.clone())).await.unwrap();
    let refused = main.oauth2_refresh(&rp, rt.secret(), &[]).await.unwrap_err();
    assert_eq!(oauth2_error(&refused).as_deref(), Some("invalid_grant"));
    let userinfo = main.userinfo(refreshed.access_token().secret()).await;
    assert_eq!(userinfo.status, 401, "revoking the refresh token revoked its access tokens: {}", userinfo.body);

    // authlib: client_credentials (basic and post), then a refresh.
    let base = json!({"token_endpoint": main.url("token"), "ca": ca, "client_id": svc_id, "client_secret": svc_secret});
    let mut args = base.clone();
    args["grant"] = json!("client_credentials");
    args["resource"] = json!(API);
    let got = authlib(args);
    assert_eq!(got["token_type"], "Bearer", "{got}");
    let i = introspect(&main, f.basic("svc-rs256"), got["access_token"].as_str().unwrap()).await;
    assert_eq!((i["active"].as_bool(), i["client_id"].as_str()), (Some(true), Some(svc_id.as_str())), "{i}");
    let (post_id, post_secret) = f.secret("svc-post");
    let got = authlib(json!({"token_endpoint": main.url("token"), "ca": ca, "client_id": post_id,
        "client_secret": post_secret, "auth_method": "client_secret_post", "grant": "client_credentials"}));
    assert!(got["access_token"].is_string(), "authlib with client_secret_post: {got}");
    let first = f.code_tokens("main", "rp", "openid groups").await;
    let got = authlib(json!({"token_endpoint": main.url("token"), "ca": ca, "client_id": rp_id,
        "client_secret": rp_secret, "grant": "refresh_token", "refresh_token": first["refresh_token"]}));
    assert!(
        got["refresh_token"].is_string() && got["refresh_token"] != first["refresh_token"],
        "authlib refresh: {got}"
    );
    assert_eq!(main.userinfo(got["access_token"].as_str().unwrap()).await.body["groups"], json!(["platform"]));
    // The rotated token again, through authlib: the RFC error, and the grant is gone.
    let again = authlib(json!({"token_endpoint": main.url("token"), "ca": ca, "client_id": rp_id,
        "client_secret": rp_secret, "grant": "refresh_token", "refresh_token": first["refresh_token"]}));
    assert_eq!(again["error"], "invalid_grant", "{again}");
    assert_eq!(main.userinfo(got["access_token"].as_str().unwrap()).await.status, 401);
}
