//! The bounds of a login against the real `oidc-operator standalone` process: matching work
//! per login is capped and kept off the async workers (other tenants' discovery and JWKS
//! keep their latency while hostile logins run), an unknown identityId answers exactly as a
//! bad signature does, and the keys of an issuer that cannot be refetched expire.

// Test helpers outside #[test] functions stop the test on a failed step.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::disallowed_methods)]

mod common;

use std::time::{Duration, Instant};

use common::{ExternalIssuer, Server, eventually, holds_within, identity, identity_in, login, write_manifest};
use serde_json::{Value, json};

const RUNNER_ID: &str = "0b6f3c1e-2222-4a6e-9d7a-5d1f6a2b3c4d";
const HOSTILE_ID: &str = "0b6f3c1e-3333-4a6e-9d7a-5d1f6a2b3c4d";
const FLAGS: &[&str] = &["--plain-http", "--allow-insecure-issuers", "--issuer-refetch-interval", "1"];

/// These tests measure latency: one at a time.
static SERIAL: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

struct Setup {
    _tmp: tempfile::TempDir,
    issuer: ExternalIssuer,
    server: Server,
}

/// The runner identity, a provider `main` with a key (whose JWKS other tests time), and
/// `extra` identities, served with `flags`; waits for `ready`.
async fn setup(flags: &[&str], extra: impl Fn(&ExternalIssuer) -> String, ready: &[&str]) -> Setup {
    let tmp = tempfile::tempdir().unwrap();
    let (m, state) = (tmp.path().join("m"), tmp.path().join("state"));
    std::fs::create_dir(&m).unwrap();
    let issuer = ExternalIssuer::start(tmp.path()).await;
    let mut yaml = identity("runner", RUNNER_ID, &issuer, "");
    yaml.push_str(
        "apiVersion: oidc-operator.dev/v1alpha1\nkind: OidcKey\nmetadata: {name: k}\nspec: {algorithm: ES256, allowedClients: [\"*\"]}\n---\n\
         apiVersion: oidc-operator.dev/v1alpha1\nkind: OidcClient\nmetadata: {name: app}\nspec: {clientType: confidential, key: k, redirectUris: [\"https://app.example/cb\"], assignments: [allow_all]}\n---\n\
         apiVersion: oidc-operator.dev/v1alpha1\nkind: OidcProvider\nmetadata: {name: main}\nspec: {allowedClients: [app]}\n---\n",
    );
    yaml.push_str(&extra(&issuer));
    write_manifest(&m, "all.yaml", &yaml);
    let server = Server::start(&m, &state, flags).await;
    for name in ["runner"].iter().chain(ready) {
        server.wait_identity_ready(name).await;
    }
    Setup { _tmp: tmp, issuer, server }
}

fn good_claims() -> Value {
    json!({"kubernetes.io": {"namespace": "ci"}})
}

/// `n` globs that a backtracking matcher pays |glob| x |text| for on a long text of `a`s: a
/// run of `a`s and a `b` that is never there, between stars; 256 of them fill a boundClaims
/// value's 4096 characters (docs/limits.md).
fn hostile_globs(n: usize) -> String {
    let glob = format!("*{}b*", "a".repeat(11));
    let globs = vec![glob; n].join(",");
    assert!(globs.len() <= 4096, "within the CRD's limit: {}", globs.len());
    globs
}

/// A claim array of `n` elements, the first six 1 400 `a`s long (as long as the JWT size
/// limit lets six be), the rest one `a`: no `b`, so every glob is tried on every element.
fn hostile_claim(n: usize) -> Value {
    let long = (0..n).map(|i| if i < 6 { "a".repeat(1400) } else { "a".into() });
    json!(long.collect::<Vec<String>>())
}

/// The slowest of `n` JWKS fetches of provider `default/main`.
async fn slowest_jwks(server: &Server, n: usize) -> Duration {
    let url = format!("{}/.well-known/keys", server.issuer("default", "main"));
    let mut slowest = Duration::ZERO;
    for _ in 0..n {
        let t = Instant::now();
        let r = server.client().get(&url).send().await.unwrap();
        assert_eq!(r.status(), 200);
        assert!(!r.json::<Value>().await.unwrap()["keys"].as_array().unwrap().is_empty());
        slowest = slowest.max(t.elapsed());
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    slowest
}

/// A tenant's identity with the most globs the default limit allows, against a JWT with the
/// most claim elements it allows: every login tries 256 x 256 glob matches. While eight such
/// logins run at a time, another tenant's JWKS keeps its latency, and each hostile login is
/// answered quickly with a clear refusal.
#[tokio::test(flavor = "multi_thread")]
async fn maximal_glob_logins_do_not_stall_other_tenants() {
    let _serial = SERIAL.lock().await;
    let extra = |i: &ExternalIssuer| {
        identity_in(
            "tenant-b",
            "hostile",
            HOSTILE_ID,
            i,
            "oidc-operator",
            &format!("  boundClaims: {{groups: \"{}\"}}\n", hostile_globs(256)),
        )
    };
    let s = setup(FLAGS, extra, &["hostile"]).await;
    let mut claims = good_claims();
    claims["groups"] = hostile_claim(256);
    let jwt = s.issuer.mint("ES256", claims, None).await;
    assert!(jwt.len() < 16 * 1024, "the hostile JWT fits the JWT size limit: {}", jwt.len());
    let (status, body) = login(&s.server, HOSTILE_ID, &jwt).await;
    assert_eq!((status, body["error"].as_str()), (401, Some("claim_mismatch")), "{body}");

    let quiet = slowest_jwks(&s.server, 20).await;
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let mut attackers = Vec::new();
    for _ in 0..8 {
        let (server_api, jwt, stop) = (s.server.api.clone(), jwt.clone(), stop.clone());
        attackers.push(tokio::spawn(async move {
            let http = reqwest::Client::new();
            let mut slowest = Duration::ZERO;
            let mut answered = 0;
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                let t = Instant::now();
                let r = http
                    .post(format!("{server_api}/api/v1/auth/oidc-auth/login"))
                    .json(&json!({"identityId": HOSTILE_ID, "jwt": jwt}))
                    .send()
                    .await
                    .unwrap();
                assert_eq!(r.status(), 401);
                assert_eq!(r.json::<Value>().await.unwrap()["error"], "claim_mismatch");
                slowest = slowest.max(t.elapsed());
                answered += 1;
            }
            (answered, slowest)
        }));
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    let busy = slowest_jwks(&s.server, 40).await;
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let mut answered = 0;
    let mut slowest_login = Duration::ZERO;
    for a in attackers {
        let (n, slowest) = a.await.unwrap();
        answered += n;
        slowest_login = slowest_login.max(slowest);
    }
    println!("JWKS slowest: {quiet:?} quiet, {busy:?} under {answered} hostile logins (slowest {slowest_login:?})");
    assert!(answered >= 8, "the hostile logins were answered: {answered}");
    assert!(slowest_login < Duration::from_secs(2), "a maximal login took {slowest_login:?}");
    assert!(
        busy < quiet.max(Duration::from_millis(50)) * 4,
        "another tenant's JWKS took {busy:?} under hostile logins, {quiet:?} without"
    );
}

/// Past `--max-bound-globs` globs in a bound list, or `--max-claim-elements` elements in a
/// claim, the login is refused whole with a code naming which, before any matching.
#[tokio::test(flavor = "multi_thread")]
async fn globs_and_claim_elements_past_their_caps_are_refused_by_name() {
    let _serial = SERIAL.lock().await;
    const WIDE: &str = "0b6f3c1e-4444-4a6e-9d7a-5d1f6a2b3c4d";
    let flags: Vec<&str> =
        FLAGS.iter().copied().chain(["--max-bound-globs", "4", "--max-claim-elements", "5"]).collect();
    let extra = |i: &ExternalIssuer| {
        [
            identity_in(
                "tenant-b",
                "hostile",
                HOSTILE_ID,
                i,
                "oidc-operator",
                "  boundClaims: {groups: \"a,b,c,x\"}\n",
            ),
            identity_in("tenant-c", "wide", WIDE, i, "oidc-operator", "  boundClaims: {groups: \"a,b,c,d,x\"}\n"),
        ]
        .concat()
    };
    let s = setup(&flags, extra, &["hostile", "wide"]).await;
    let with_groups = |groups: Value| {
        let mut c = good_claims();
        c["groups"] = groups;
        c
    };
    let five = s.issuer.mint("ES256", with_groups(json!(["q", "r", "s", "t", "x"])), None).await;
    assert_eq!(login(&s.server, HOSTILE_ID, &five).await.0, 200, "at the caps: matched");
    let six = s.issuer.mint("ES256", with_groups(json!(["x", "q", "r", "s", "t", "u"])), None).await;
    let (status, body) = login(&s.server, HOSTILE_ID, &six).await;
    assert_eq!((status, body["error"].as_str()), (401, Some("claim_too_large")), "{body}");
    assert!(body["message"].as_str().unwrap().contains("\"groups\""), "{body}");
    let (status, body) = login(&s.server, WIDE, &five).await;
    assert_eq!((status, body["error"].as_str()), (401, Some("bound_too_large")), "{body}");
    assert!(body["message"].as_str().unwrap().contains("boundClaims.groups"), "{body}");
    // The audience counts too.
    let many_aud = s.issuer.mint("ES256", json!({"aud": ["1", "2", "3", "4", "5", "oidc-operator"]}), None).await;
    let (status, body) = login(&s.server, RUNNER_ID, &many_aud).await;
    assert_eq!((status, body["error"].as_str()), (401, Some("claim_too_large")), "{body}");
}

/// Whether an identityId exists is not told to a caller without a token of its issuer: an
/// unknown id answers byte for byte as a bad signature, an unknown kid and a foreign token.
#[tokio::test(flavor = "multi_thread")]
async fn an_unknown_identity_answers_exactly_as_a_bad_signature() {
    let _serial = SERIAL.lock().await;
    let s = setup(FLAGS, |_| String::new(), &[]).await;
    let good = s.issuer.mint("RS256", good_claims(), None).await;
    let bad_signature = s.issuer.mint("ES256", good_claims(), Some("bad-signature")).await;
    let unknown_kid = s.issuer.mint("ES256", good_claims(), Some("unpublished")).await;
    let expected = login(&s.server, RUNNER_ID, &bad_signature).await;
    assert_eq!((expected.0, expected.1["error"].as_str()), (401, Some("bad_signature")), "{}", expected.1);
    for (what, id, jwt) in [
        ("unknown identity, good token", "no-such-identity", &good),
        ("unknown identity, bad signature", "no-such-identity", &bad_signature),
        ("known identity, unknown kid", RUNNER_ID, &unknown_kid),
    ] {
        assert_eq!(login(&s.server, id, jwt).await, expected, "{what}");
    }
    // A malformed token is refused the same way for both: shape is checked before the id.
    let (a, b) = (login(&s.server, "no-such-identity", "x.y").await, login(&s.server, RUNNER_ID, "x.y").await);
    assert_eq!(a, b);
    assert_eq!(a.1["error"], "malformed_jwt");
    // The log keeps the detail for the operator.
    let log_path = s.server.state.with_extension("log");
    eventually(10, &format!("identity_not_found in {}", log_path.display()), async || {
        std::fs::read_to_string(&log_path).unwrap().contains("identity_not_found")
    })
    .await;
}

/// Keys of an issuer that cannot be refetched are trusted for `--issuer-keys-max-age`
/// seconds, then logins of its identities fail closed with issuer_unavailable, and the
/// identity's status says why.
#[tokio::test(flavor = "multi_thread")]
async fn keys_of_an_unreachable_issuer_expire_after_the_max_age() {
    let _serial = SERIAL.lock().await;
    let flags: Vec<&str> = FLAGS.iter().copied().chain(["--issuer-keys-max-age", "3"]).collect();
    let Setup { _tmp, issuer, server } = setup(&flags, |_| String::new(), &[]).await;
    let tokens: Vec<String> = {
        let mut t = Vec::new();
        for _ in 0..40 {
            t.push(issuer.mint("ES256", good_claims(), None).await);
        }
        t
    };
    assert_eq!(login(&server, RUNNER_ID, &tokens[0]).await.0, 200);
    drop(issuer);
    // Until the keys are 3 s old the cached keys still verify; then logins fail closed.
    let start = Instant::now();
    let mut last = (0, Value::Null);
    for jwt in &tokens[1..] {
        last = login(&server, RUNNER_ID, jwt).await;
        if last.0 != 200 {
            break;
        }
        assert!(start.elapsed() < Duration::from_secs(5), "keys trusted past the max age");
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    assert_eq!((last.0, last.1["error"].as_str()), (503, Some("issuer_unavailable")), "{}", last.1);
    assert!(start.elapsed() < Duration::from_secs(8), "{:?}", start.elapsed());
    let line = server
        .wait_for_line(
            |l| l.contains("IdentityOidcAuth") && l.contains("runner") && l.contains("--issuer-keys-max-age"),
            Duration::from_secs(15),
        )
        .await;
    assert!(line.is_some(), "the status never said why:\n{}", server.output());
}

/// Past `--max-identities-per-namespace`, the later identities of a namespace are not Ready
/// (TooManyIdentities) and cannot log in; other namespaces are not affected.
#[tokio::test(flavor = "multi_thread")]
async fn identities_past_the_namespace_cap_are_not_served() {
    let _serial = SERIAL.lock().await;
    const IDS: [&str; 3] = [
        "0b6f3c1e-5555-4a6e-9d7a-5d1f6a2b3c41",
        "0b6f3c1e-5555-4a6e-9d7a-5d1f6a2b3c42",
        "0b6f3c1e-5555-4a6e-9d7a-5d1f6a2b3c43",
    ];
    let flags: Vec<&str> = FLAGS.iter().copied().chain(["--max-identities-per-namespace", "2"]).collect();
    let extra = |i: &ExternalIssuer| {
        ["one", "two", "three"]
            .iter()
            .zip(IDS)
            .map(|(name, id)| identity_in("crowded", name, id, i, "oidc-operator", ""))
            .collect::<String>()
    };
    let s = setup(&flags, extra, &[]).await;
    let line = s
        .server
        .wait_for_line(|l| l.contains("IdentityOidcAuth") && l.contains("TooManyIdentities"), Duration::from_secs(15))
        .await
        .unwrap_or_else(|| panic!("no identity reported TooManyIdentities:\n{}", s.server.output()));
    assert!(line.contains("--max-identities-per-namespace"), "{line}");
    let jwt = s.issuer.mint("ES256", good_claims(), None).await;
    let mut outcomes = Vec::new();
    for id in IDS {
        let mut last = (0, Value::Null);
        // A 503 past the wait is an outcome too: the assertion below names it.
        holds_within(Duration::from_secs(15), async || {
            last = login(&s.server, id, &jwt).await;
            last.0 != 503
        })
        .await;
        let (status, body) = last;
        outcomes.push((status, body["error"].as_str().map(str::to_owned)));
    }
    outcomes.sort();
    assert_eq!(outcomes, [(200, None), (200, None), (401, Some("bad_signature".into()))], "two of three are served");
    // The default namespace (one identity, the runner) is untouched.
    assert_eq!(login(&s.server, RUNNER_ID, &jwt).await.0, 200);
}
