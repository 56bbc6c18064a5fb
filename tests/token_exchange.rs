//! Token exchange (RFC 8693, issue 23 item 3) end to end, against the standalone server: an
//! external service-account-shaped JWT becomes, in one call, an ID token that jwcrypto
//! verifies against the JWKS (RS256, ES256 and EdDSA target clients), requested as RFC 8693
//! §2.3's example requests it; an identity access token of the login API becomes an access
//! token (JWT and opaque) that userinfo and introspection know; and the refusals, as a table,
//! with their exact status and RFC error code.

// Test helpers outside #[test] functions stop the test on a failed step.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::disallowed_methods)]

mod common;

use common::oauth::{Auth, OAuth, Request, confidential, credentials, refusals};
use common::redis::RedisServer;
use common::{ExternalIssuer, Server, identity, identity_in, verify_with_jwcrypto, write_manifest};
use serde_json::{Value, json};

const GRANT: &str = "urn:ietf:params:oauth:grant-type:token-exchange";
const JWT: &str = "urn:ietf:params:oauth:token-type:jwt";
const ID_TOKEN: &str = "urn:ietf:params:oauth:token-type:id_token";
const ACCESS_TOKEN: &str = "urn:ietf:params:oauth:token-type:access_token";

/// Matches `runner` (subject `system:serviceaccount:ci:*`).
const RUNNER: &str = "7e570000-0000-4000-8000-000000000001";
/// Matches `system:serviceaccount:ci:deployer` only: a deployer's token meets both.
const DEPLOYER: &str = "7e570000-0000-4000-8000-000000000002";
/// An entity no assignment admits.
const OUTSIDER: &str = "7e570000-0000-4000-8000-000000000003";
/// An identity of namespace `team-b`, for audience `team-b-aud`.
const FOREIGN: &str = "7e570000-0000-4000-8000-000000000004";
/// An identity whose access tokens have one use (`accessTokenNumUsesLimit: 1`).
const ONCE: &str = "7e570000-0000-4000-8000-000000000005";

fn manifests(issuer: &ExternalIssuer) -> String {
    let mut out = identity("runner", RUNNER, issuer, "  groups: [platform]\n  metadata: {team: payments}\n");
    out.push_str(
        &identity("deployer", DEPLOYER, issuer, "  groups: [platform]\n")
            .replace("system:serviceaccount:ci:*", "system:serviceaccount:ci:deployer"),
    );
    out.push_str(
        &identity("outsider", OUTSIDER, issuer, "")
            .replace("system:serviceaccount:ci:*", "system:serviceaccount:lab:*"),
    );
    out.push_str(
        &identity("once", ONCE, issuer, "  groups: [platform]\n  accessTokenNumUsesLimit: 1\n")
            .replace("system:serviceaccount:ci:*", "system:serviceaccount:once:*"),
    );
    out.push_str(&identity_in("team-b", "foreign", FOREIGN, issuer, "team-b-aud", "  groups: [platform]\n"));
    out.push_str(concat!(
        "apiVersion: oidc-operator.dev/v1alpha1\nkind: OidcScope\nmetadata: {name: groups}\n",
        "spec: {template: '{\"groups\": {{identity.entity.groups.names}}}'}\n---\n",
        "apiVersion: oidc-operator.dev/v1alpha1\nkind: OidcScope\nmetadata: {name: team}\n",
        "spec: {template: '{\"team\": {{identity.entity.metadata.team}}}'}\n---\n",
        "apiVersion: oidc-operator.dev/v1alpha1\nkind: OidcAssignment\nmetadata: {name: platform}\nspec: {groups: [platform]}\n---\n",
        "apiVersion: oidc-operator.dev/v1alpha1\nkind: OidcAssignment\nmetadata: {name: nobody}\nspec: {entities: [someone-else]}\n---\n",
    ));
    let client = |name: &str, spec: &str| {
        format!(
            "apiVersion: oidc-operator.dev/v1alpha1\nkind: OidcClient\nmetadata: {{name: {name}}}\nspec: {{{spec}}}\n---\n"
        )
    };
    for alg in ["RS256", "ES256", "EdDSA"] {
        let n = alg.to_lowercase();
        out.push_str(&format!(
            "apiVersion: oidc-operator.dev/v1alpha1\nkind: OidcKey\nmetadata: {{name: key-{n}}}\nspec: {{algorithm: {alg}, allowedClients: [\"*\"]}}\n---\n"
        ));
        out.push_str(&client(&format!("rp-{n}"), &format!("key: key-{n}, assignments: [platform]")));
    }
    let exchange = format!("grantTypes: [\"{GRANT}\"]");
    // The agent: a public client holding nothing but the token it exchanges.
    out.push_str(&client("agent", &format!("clientType: public, {exchange}, assignments: [platform], key: key-es256")));
    out.push_str(&client("exchanger", &format!("{exchange}, assignments: [platform], key: key-rs256")));
    out.push_str(&client("no-grant", "assignments: [platform], key: key-es256"));
    out.push_str(&client("rp-jwt", "assignments: [platform], key: key-eddsa, accessTokenFormat: jwt"));
    out.push_str(&client("rp-nobody", "assignments: [nobody], key: key-es256"));
    out.push_str(&client("rp-other", "assignments: [platform], key: key-es256"));
    out.push_str(concat!(
        "apiVersion: oidc-operator.dev/v1alpha1\nkind: OidcProvider\nmetadata: {name: main}\n",
        "spec: {allowedClients: [agent, exchanger, no-grant, rp-rs256, rp-es256, rp-eddsa, rp-jwt, rp-nobody], ",
        "scopesSupported: [groups, team]}\n---\n",
        "apiVersion: oidc-operator.dev/v1alpha1\nkind: OidcProvider\nmetadata: {name: other}\n",
        "spec: {allowedClients: [rp-other]}\n",
    ));
    out
}

struct Fixture {
    _tmp: tempfile::TempDir,
    issuer: ExternalIssuer,
    state: std::path::PathBuf,
    server: Server,
    main: OAuth,
    /// A second replica sharing one Redis with the first, when started so.
    other: Option<(Server, RedisServer)>,
}

impl Fixture {
    /// One server on the memory store, or (`shared`) two replicas on one Redis.
    async fn start(shared: bool) -> Fixture {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("m");
        std::fs::create_dir(&dir).unwrap();
        let issuer = ExternalIssuer::start(tmp.path()).await;
        write_manifest(&dir, "all.yaml", &manifests(&issuer));
        let identities = ["runner", "deployer", "outsider", "once"];
        let r = common::replicas(&dir, tmp.path(), shared, &identities).await;
        let main = OAuth::new(&r.a, "default", "main");
        Fixture { _tmp: tmp, issuer, state: r.state, server: r.a, main, other: r.b.zip(r.redis) }
    }

    fn client_id(&self, client: &str) -> String {
        credentials(&self.state, "default", client).0
    }

    fn basic(&self, client: &str) -> Auth {
        let (id, secret) = confidential(&self.state, "default", client);
        Auth::basic(&id, &secret)
    }

    /// A service-account-shaped JWT of the test issuer for `ci/<account>`, `claims` merged.
    async fn sa_token(&self, alg: &str, account: &str, claims: Value) -> String {
        let mut all = json!({
            "sub": format!("system:serviceaccount:ci:{account}"),
            "kubernetes.io": {"namespace": "ci", "serviceaccount": {"name": account}},
        });
        for (k, v) in claims.as_object().unwrap() {
            all[k] = v.clone();
        }
        self.issuer.mint(alg, all, None).await
    }

    /// The agent's exchange request: `client_id` only, no secret.
    fn agent(&self, subject_token: &str) -> Request {
        exchange(subject_token, JWT).set("client_id", &self.client_id("agent"))
    }
}

/// A token exchange request (RFC 8693 §2.1) for `subject_token` of type `subject_type`.
fn exchange(subject_token: &str, subject_type: &str) -> Request {
    Request::post("token")
        .set("grant_type", GRANT)
        .set("subject_token", subject_token)
        .set("subject_token_type", subject_type)
}

/// Verifies `tokens` with jwcrypto against the provider's JWKS; gives each one's payload.
async fn verified(main: &OAuth, tokens: &[String]) -> Vec<Value> {
    let jwks = main.send(&Request::get(".well-known/keys")).await.body;
    let v = verify_with_jwcrypto(&jwks, tokens);
    (0..tokens.len())
        .map(|i| {
            let t = &v["tokens"][i];
            assert_eq!(t["valid"], true, "jwcrypto: {t}");
            t.clone()
        })
        .collect()
}

#[tokio::test]
async fn token_exchange() {
    let f = Fixture::start(false).await;
    let main = &f.main;
    let discovery = main.discovery().await.body;
    assert!(
        discovery["grant_types_supported"].as_array().unwrap().contains(&json!(GRANT)),
        "discovery lists the grant: {discovery}"
    );

    // RFC 8693 §2.3's example, with the external JWT as the subject token and the client
    // authenticating with HTTP Basic; `audience` names the client the token is for.
    let sa = f.sa_token("RS256", "runner", json!({})).await;
    let example = Request::post("token")
        .set("grant_type", GRANT)
        .set("audience", &f.client_id("rp-rs256"))
        .set("subject_token", &sa)
        .set("subject_token_type", JWT)
        .set("scope", "openid groups team")
        .auth(f.basic("exchanger"));
    let r = main.send(&example).await;
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(
        (r.body["issued_token_type"].as_str(), r.body["token_type"].as_str()),
        (Some(ID_TOKEN), Some("N_A")),
        "RFC 8693 §2.2.1: {}",
        r.body
    );
    assert!(r.body["expires_in"].as_u64().is_some_and(|e| e > 0), "{}", r.body);
    for absent in ["id_token", "refresh_token"] {
        assert!(r.body.get(absent).is_none(), "{absent} in {}", r.body);
    }
    assert_eq!(r.header("cache-control"), "no-store");
    let v = &verified(main, &[r.text("access_token")]).await[0];
    assert_eq!(v["alg"], "RS256", "{v}");
    let p = &v["payload"];
    assert_eq!(
        (p["iss"].as_str(), p["sub"].as_str(), p["aud"].as_str()),
        (Some(main.issuer().as_str()), Some(RUNNER), Some(f.client_id("rp-rs256").as_str())),
        "{p}"
    );
    assert_eq!((p["groups"].clone(), p["team"].clone()), (json!(["platform"]), json!("payments")), "{p}");
    assert!(p["exp"].as_i64() > p["iat"].as_i64(), "{p}");

    // The agent: a public client with only a service-account token, one call per target
    // client, each signed with its client's key.
    for (alg, sub_type) in [("RS256", JWT), ("ES256", ID_TOKEN), ("EdDSA", JWT)] {
        let rp = format!("rp-{}", alg.to_lowercase());
        let sa = f.sa_token(alg, "runner", json!({})).await;
        let request =
            exchange(&sa, sub_type).set("client_id", &f.client_id("agent")).set("audience", &f.client_id(&rp));
        let r = main.send(&request).await;
        assert_eq!(r.status, 200, "{rp}: {}", r.body);
        assert_eq!(r.body["scope"], "openid", "{}", r.body);
        let v = &verified(main, &[r.text("access_token")]).await[0];
        assert_eq!(v["alg"], alg, "{v}");
        assert_eq!(
            (v["payload"]["sub"].as_str(), v["payload"]["aud"].clone()),
            (Some(RUNNER), json!(f.client_id(&rp)))
        );
        assert!(v["payload"].get("groups").is_none(), "only the openid scope was asked: {v}");
    }
    // Without audience, the token is for the requesting client.
    let r = main.send(&f.agent(&f.sa_token("ES256", "runner", json!({})).await)).await;
    assert_eq!(r.status, 200, "{}", r.body);
    let v = &verified(main, &[r.text("access_token")]).await[0];
    assert_eq!(v["payload"]["aud"], json!(f.client_id("agent")));

    // A token meeting two identities' bounds, disambiguated by identity_id.
    let deployer = f.sa_token("ES256", "deployer", json!({})).await;
    let r = main.send(&f.agent(&deployer).set("identity_id", DEPLOYER)).await;
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(verified(main, &[r.text("access_token")]).await[0]["payload"]["sub"], DEPLOYER);

    // An identity access token of the login API, to an RFC 9068 JWT access token and to an
    // opaque one; both are stored grants that userinfo and introspection know.
    let login = main.login_token(RUNNER, &f.sa_token("ES256", "runner", json!({})).await).await;
    let r = main
        .send(
            &exchange(&login, ACCESS_TOKEN)
                .set("requested_token_type", ACCESS_TOKEN)
                .set("audience", &f.client_id("rp-jwt"))
                .set("scope", "openid groups")
                .auth(f.basic("exchanger")),
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(
        (r.body["issued_token_type"].as_str(), r.body["token_type"].as_str(), r.body["scope"].as_str()),
        (Some(ACCESS_TOKEN), Some("Bearer"), Some("openid groups")),
        "{}",
        r.body
    );
    let at = r.text("access_token");
    let v = &verified(main, std::slice::from_ref(&at)).await[0];
    assert_eq!(v["typ"], "at+jwt", "{v}");
    assert_eq!(
        (v["payload"]["sub"].as_str(), v["payload"]["client_id"].as_str(), v["payload"]["scope"].as_str()),
        (Some(RUNNER), Some(f.client_id("rp-jwt").as_str()), Some("openid groups")),
        "{v}"
    );
    let u = main.userinfo(&at).await;
    assert_eq!((u.status, u.body["sub"].as_str(), u.body["groups"].clone()), (200, Some(RUNNER), json!(["platform"])));
    let i = main.send(&Request::post("introspect").set("token", &at).auth(f.basic("exchanger"))).await;
    assert_eq!((i.body["active"].as_bool(), i.body["sub"].as_str()), (Some(true), Some(RUNNER)), "{}", i.body);
    let r = main
        .send(
            &exchange(&login, ACCESS_TOKEN)
                .set("requested_token_type", ACCESS_TOKEN)
                .set("audience", &f.client_id("rp-es256"))
                .set("scope", "openid team")
                .auth(f.basic("exchanger")),
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.body);
    let opaque = r.text("access_token");
    assert_eq!(opaque.split('.').count(), 2, "an opaque handle: {opaque}");
    let u = main.userinfo(&opaque).await;
    assert_eq!((u.status, u.body["team"].as_str()), (200, Some("payments")), "{}", u.body);
    // An exchange counts a use of the identity access token, as authorize does.
    let once = f.sa_token("ES256", "once", json!({"sub": "system:serviceaccount:once:job"})).await;
    let once = main.login_token(ONCE, &once).await;
    let r = main.send(&f.agent(&once).set("subject_token_type", ACCESS_TOKEN)).await;
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(verified(main, &[r.text("access_token")]).await[0]["payload"]["sub"], ONCE);
    let r = main.send(&f.agent(&once).set("subject_token_type", ACCESS_TOKEN)).await;
    assert_eq!((r.status, r.error()), (400, Some("invalid_request")), "its one use is spent: {}", r.body);
    // Revoked, it is gone like every other access token.
    let revoke = Request::post("revoke").set("token", &opaque).auth(f.basic("rp-es256"));
    assert_eq!(main.send(&revoke).await.status, 200);
    assert_eq!(main.userinfo(&opaque).await.status, 401);

    refused(&f).await;
}

/// The refusals: exact status and RFC error code, a description, nothing issued.
async fn refused(f: &Fixture) {
    let main = &f.main;
    let sa = f.sa_token("ES256", "runner", json!({})).await;
    let agent = |t: &str| f.agent(t);
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs() as i64;
    let expired = f.sa_token("ES256", "runner", json!({"iat": now - 900, "nbf": now - 900, "exp": now - 600})).await;
    let stranger = f.sa_token("ES256", "stranger", json!({"sub": "system:serviceaccount:web:stranger"})).await;
    let two = f.sa_token("ES256", "deployer", json!({})).await;
    let wrong_iss = f.sa_token("ES256", "runner", json!({"iss": "https://issuer.elsewhere.example"})).await;
    let foreign = f.sa_token("ES256", "runner", json!({"aud": "team-b-aud"})).await;
    let outsider = f.sa_token("ES256", "ci", json!({"sub": "system:serviceaccount:lab:ci"})).await;
    let bad_signature = f.issuer.mint("ES256", json!({}), Some("bad-signature")).await;
    let unsigned = f.issuer.mint("ES256", json!({}), Some("none")).await;
    let revoked = main.login_token(RUNNER, &sa).await;
    let resp = main
        .http()
        .post(format!("{}/api/v1/auth/token/revoke", f.server.api))
        .json(&json!({"accessToken": revoked}))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200, "revoking an identity access token");

    let table = vec![
        ("token matching no identity", agent(&stranger), 400, "invalid_request"),
        ("token matching two identities", agent(&two), 400, "invalid_request"),
        (
            "wrong subject_token_type",
            agent(&sa).set("subject_token_type", "urn:ietf:params:oauth:token-type:saml2"),
            400,
            "invalid_request",
        ),
        ("missing subject_token_type", agent(&sa).unset("subject_token_type"), 400, "invalid_request"),
        ("missing subject_token", agent(&sa).unset("subject_token"), 400, "invalid_request"),
        ("unknown requested_token_type", agent(&sa).set("requested_token_type", JWT), 400, "invalid_request"),
        (
            "audience served by another provider",
            agent(&sa).set("audience", &f.client_id("rp-other")),
            400,
            "invalid_target",
        ),
        ("audience that is no client", agent(&sa).set("audience", "https://api.example"), 400, "invalid_target"),
        (
            "audience not admitting the entity",
            agent(&sa).set("audience", &f.client_id("rp-nobody")),
            400,
            "invalid_target",
        ),
        ("entity admitted by no assignment", agent(&outsider), 400, "invalid_target"),
        ("resource instead of audience", agent(&sa).set("resource", "https://api.example/x"), 400, "invalid_target"),
        ("scope not supported by the provider", agent(&sa).set("scope", "openid payroll"), 400, "invalid_scope"),
        ("grant not enabled", exchange(&sa, JWT).auth(f.basic("no-grant")), 400, "unauthorized_client"),
        ("actor_token given", agent(&sa).set("actor_token", &sa).set("actor_token_type", JWT), 400, "invalid_request"),
        (
            "revoked identity access token",
            agent(&revoked).set("subject_token_type", ACCESS_TOKEN),
            400,
            "invalid_request",
        ),
        (
            "unknown identity access token",
            agent("not-a-token").set("subject_token_type", ACCESS_TOKEN),
            400,
            "invalid_request",
        ),
        ("expired JWT", agent(&expired), 400, "invalid_request"),
        ("wrong issuer", agent(&wrong_iss), 400, "invalid_request"),
        ("another namespace's identity", agent(&foreign), 400, "invalid_request"),
        ("identity_id of another namespace", agent(&foreign).set("identity_id", FOREIGN), 400, "invalid_request"),
        ("identity_id whose bounds it does not meet", agent(&sa).set("identity_id", OUTSIDER), 400, "invalid_request"),
        (
            "identity_id with an access token",
            agent(&revoked).set("subject_token_type", ACCESS_TOKEN).set("identity_id", RUNNER),
            400,
            "invalid_request",
        ),
        ("bad signature", agent(&bad_signature), 400, "invalid_request"),
        ("alg none", agent(&unsigned), 400, "invalid_request"),
        ("not a JWT", agent("opaque-string"), 400, "invalid_request"),
        ("unknown public client", exchange(&sa, JWT).set("client_id", "nobody"), 401, "invalid_client"),
    ];
    let replies = refusals(main, table).await;
    let described = |row: &str, words: &[&str]| {
        let d = replies[row].body["error_description"].as_str().unwrap().to_owned();
        assert!(words.iter().all(|w| d.contains(w)), "row {row:?}: {d:?} should say {words:?}");
    };
    described("token matching two identities", &[RUNNER, DEPLOYER, "identity_id"]);
    described("token matching no identity", &["bounds"]);
    described("actor_token given", &["delegation is not supported"]);
    described("expired JWT", &["expired"]);
    described("wrong issuer", &["boundIssuer"]);
    described("audience not admitting the entity", &["assignments"]);
    // Nothing about the refused requests spent the valid token: it still exchanges.
    assert_eq!(main.send(&agent(&sa)).await.status, 200);
}

/// Two replicas on one Redis: what one exchanges, the other knows (the access token's grant is
/// stored in the shared store, as every grant is), and a use of an identity access token
/// counted at one replica is counted at both.
#[tokio::test]
async fn token_exchange_on_a_shared_store() {
    let f = Fixture::start(true).await;
    let a = &f.main;
    let b = OAuth::new(&f.other.as_ref().unwrap().0, "default", "main");
    let sa = f.sa_token("RS256", "runner", json!({})).await;
    for (rp, jwt) in [("rp-jwt", true), ("rp-es256", false)] {
        let r = b
            .send(
                &exchange(&sa, JWT)
                    .set("requested_token_type", ACCESS_TOKEN)
                    .set("audience", &f.client_id(rp))
                    .set("scope", "openid groups")
                    .auth(f.basic("exchanger")),
            )
            .await;
        assert_eq!((r.status, r.body["issued_token_type"].as_str()), (200, Some(ACCESS_TOKEN)), "{rp}: {}", r.body);
        let at = r.text("access_token");
        assert_eq!(at.starts_with("eyJ"), jwt, "{rp}: {at}");
        let u = a.userinfo(&at).await;
        assert_eq!((u.status, u.body["sub"].as_str()), (200, Some(RUNNER)), "{rp} at the other replica: {}", u.body);
        let i = a.send(&Request::post("introspect").set("token", &at).auth(f.basic("exchanger"))).await;
        assert_eq!(i.body["active"], true, "{}", i.body);
        assert_eq!(b.send(&Request::post("revoke").set("token", &at).auth(f.basic(rp))).await.status, 200);
        assert_eq!(a.userinfo(&at).await.status, 401, "{rp}: revoked at one replica, gone at both");
    }
    let once = f.sa_token("ES256", "once", json!({"sub": "system:serviceaccount:once:job"})).await;
    let once = a.login_token(ONCE, &once).await;
    let r = b.send(&f.agent(&once).set("subject_token_type", ACCESS_TOKEN)).await;
    assert_eq!(r.status, 200, "{}", r.body);
    let r = a.send(&f.agent(&once).set("subject_token_type", ACCESS_TOKEN)).await;
    assert_eq!((r.status, r.error()), (400, Some("invalid_request")), "its one use was spent at the other: {}", r.body);
}
