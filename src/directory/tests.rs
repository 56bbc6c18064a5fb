/// `vec!` of objects as `Inputs` holds them.
macro_rules! arcs {
    ($($x:expr),* $(,)?) => { vec![$(std::sync::Arc::new($x)),*] };
}

use super::*;
use crate::api::{OidcAssignmentSpec, OidcClientSpec, OidcKeySpec, OidcProviderSpec, OidcScopeSpec};
use crate::keys::ring::KeyRing;
use crate::keys::{JwkSet, KeyVersion, rotation};
use crate::login::external::Fetched;

const NOW: i64 = 1_700_000_000;

fn meta<T: kube::Resource<DynamicType = ()>>(mut o: T, ns: &str) -> T {
    o.meta_mut().namespace = Some(ns.into());
    o
}

fn client(name: &str, key: &str, assignments: &[&str]) -> OidcClient {
    let spec: OidcClientSpec = serde_json::from_value(serde_json::json!({
        "key": key, "assignments": assignments, "redirectUris": ["https://app/cb"]
    }))
    .unwrap();
    meta(OidcClient::new(name, spec), "ns")
}

fn key(name: &str, spec: OidcKeySpec) -> OidcKey {
    meta(OidcKey::new(name, spec), "ns")
}

fn provider(name: &str, clients: &[&str], scopes: &[&str]) -> OidcProvider {
    let spec = OidcProviderSpec {
        issuer: None,
        allowed_clients: clients.iter().map(|s| s.to_string()).collect(),
        scopes_supported: scopes.iter().map(|s| s.to_string()).collect(),
        ..Default::default()
    };
    meta(OidcProvider::new(name, spec), "ns")
}

/// Materials as a shell would make them: rings for required keys, credentials for clients.
fn materials(inputs: &Inputs) -> Materials {
    let mut m = Materials::default();
    for (k, spec) in required_keys(inputs) {
        let ring: KeyRing =
            rotation::advance(None, &KeyPolicy::from(&spec), NOW, |a| KeyVersion::generate(a, NOW)).unwrap().unwrap();
        m.key_rings.insert(k, ring);
    }
    for c in &inputs.clients {
        let creds = crate::credentials::reconcile(None, c.spec.client_id.as_deref(), true).unwrap().unwrap();
        m.credentials.insert(ObjectKey::of(&c.metadata), creds);
    }
    m
}

fn status<'a>(dir: &'a Directory, kind: Kind, name: &str) -> &'a ObjectStatus {
    dir.statuses.iter().find(|s| s.kind == kind && s.key.name == name).unwrap()
}

fn build_all(inputs: &Inputs) -> Directory {
    build(inputs, &materials(inputs), &ExternalUrl::new("https://op.example:8443/"), NOW, None)
}

#[test]
fn a_client_without_key_uses_the_builtin_default() {
    let inputs = Inputs {
        clients: arcs![client("app", DEFAULT_KEY, &["allow_all"])],
        providers: arcs![provider("p", &["*"], &[])],
        ..Inputs::default()
    };
    let keys = required_keys(&inputs);
    assert_eq!(keys.len(), 1);
    assert_eq!(keys[&ObjectKey::new("ns", "default")], OidcKeySpec::builtin_default());
    let dir = build_all(&inputs);
    assert!(status(&dir, Kind::OidcClient, "app").readiness.ready);
    let p = dir.provider("ns", "p").unwrap();
    assert_eq!(p.issuer, "https://op.example:8443/v1/ns/identity/oidc/provider/p");
    let jwks: JwkSet = serde_json::from_str(&p.jwks_json).unwrap();
    assert_eq!(jwks.keys.len(), 2, "current and next");
    let discovery: serde_json::Value = serde_json::from_str(&p.discovery_json).unwrap();
    assert_eq!(discovery["id_token_signing_alg_values_supported"], serde_json::json!(["RS256"]));
    assert_eq!(discovery["jwks_uri"], format!("{}/.well-known/keys", p.issuer));
    assert!(p.jwks_max_age < 24 * 3600);
}

#[test]
fn missing_references_name_the_field_and_the_rest_keep_serving() {
    let inputs = Inputs {
        keys: arcs![key(
            "k",
            OidcKeySpec {
                allowed_clients: vec!["good".into(), "no-assignment".into()],
                ..OidcKeySpec::builtin_default()
            },
        )],
        clients: arcs![
            client("good", "k", &["allow_all"]),
            client("no-key", "missing", &["allow_all"]),
            client("not-allowed", "k", &["allow_all"]),
            client("no-assignment", "k", &["ghost"]),
        ],
        providers: arcs![
            provider("p", &["*"], &[]),
            provider("bad-client", &["nope"], &[]),
            provider("bad-scope", &["*"], &["ghost"]),
        ],
        ..Inputs::default()
    };
    let dir = build_all(&inputs);
    let r = &status(&dir, Kind::OidcClient, "no-key").readiness;
    assert_eq!((r.ready, r.reason.as_str()), (false, "KeyNotFound"));
    assert!(r.message.starts_with("spec.key"), "{}", r.message);
    assert_eq!(status(&dir, Kind::OidcClient, "not-allowed").readiness.reason, "KeyNotAllowed");
    let r = &status(&dir, Kind::OidcClient, "no-assignment").readiness;
    assert_eq!(r.reason, "AssignmentNotFound");
    assert!(r.message.starts_with("spec.assignments[0]"), "{}", r.message);
    let r = &status(&dir, Kind::OidcProvider, "bad-client").readiness;
    assert_eq!(r.reason, "ClientNotFound");
    assert!(r.message.starts_with("spec.allowedClients[0]"));
    assert_eq!(status(&dir, Kind::OidcProvider, "bad-scope").readiness.reason, "ScopeNotFound");
    assert!(dir.provider("ns", "bad-scope").is_none());
    // The good ones serve: the provider lists only the Ready client.
    assert!(status(&dir, Kind::OidcClient, "good").readiness.ready);
    let p = dir.provider("ns", "p").unwrap();
    assert_eq!(p.clients.iter().collect::<Vec<_>>(), ["good"]);
}

#[test]
fn id_token_ttl_beyond_verification_ttl_is_not_ready() {
    let mut c = client("app", "k", &["allow_all"]);
    c.spec.id_token_ttl = crate::api::Duration::from_secs(2 * 3600);
    let spec = OidcKeySpec {
        verification_ttl: crate::api::Duration::from_secs(3600),
        allowed_clients: vec!["*".into()],
        ..OidcKeySpec::builtin_default()
    };
    let inputs = Inputs { keys: arcs![key("k", spec)], clients: arcs![c], ..Inputs::default() };
    let dir = build_all(&inputs);
    let r = &status(&dir, Kind::OidcClient, "app").readiness;
    assert_eq!(r.reason, "IdTokenTTLTooLong");
    assert!(r.message.starts_with("spec.idTokenTTL (2h)") && r.message.contains("(1h)"), "{}", r.message);
}

#[test]
fn keys_and_scopes_report_their_problems() {
    let bad_key =
        OidcKeySpec { rotation_period: crate::api::Duration::from_secs(30), ..OidcKeySpec::builtin_default() };
    let scope = meta(
        OidcScope::new(
            "s",
            OidcScopeSpec {
                template: Some("{\"a\": {{nope}}}".into()),
                description: None,
                missing_values: Default::default(),
            },
        ),
        "ns",
    );
    let inputs = Inputs { keys: arcs![key("k", bad_key)], scopes: arcs![scope], ..Inputs::default() };
    let dir = build_all(&inputs);
    let r = &status(&dir, Kind::OidcKey, "k").readiness;
    assert_eq!(r.reason, "InvalidSpec");
    assert!(r.message.starts_with("spec.rotationPeriod"));
    let r = &status(&dir, Kind::OidcScope, "s").readiness;
    assert_eq!(r.reason, "TemplateInvalid");
    assert!(r.message.contains("OidcScope s") && r.message.contains("character 6"), "{}", r.message);
}

#[test]
fn pending_material_is_reported_not_served() {
    let inputs = Inputs { clients: arcs![client("app", DEFAULT_KEY, &["allow_all"])], ..Inputs::default() };
    let dir = build(&inputs, &Materials::default(), &ExternalUrl::new("https://x"), NOW, None);
    assert_eq!(status(&dir, Kind::OidcClient, "app").readiness.reason, "KeyNotReady");
}

#[test]
fn client_id_conflicts_are_decided_by_name() {
    let mut a = client("a", DEFAULT_KEY, &["allow_all"]);
    let mut b = client("b", DEFAULT_KEY, &["allow_all"]);
    a.spec.client_id = Some("same".into());
    b.spec.client_id = Some("same".into());
    let inputs = Inputs { clients: arcs![b, a], ..Inputs::default() };
    let dir = build_all(&inputs);
    assert!(status(&dir, Kind::OidcClient, "a").readiness.ready);
    assert_eq!(status(&dir, Kind::OidcClient, "b").readiness.reason, "ClientIdConflict");
    let mut m = materials(&inputs);
    m.secret_conflicts.insert(ObjectKey::new("ns", "a"));
    let dir = build(&inputs, &m, &ExternalUrl::new("https://op.example:8443/"), NOW, None);
    let r = &status(&dir, Kind::OidcClient, "a").readiness;
    assert_eq!(r.reason, "SecretNameConflict");
    assert!(r.message.starts_with("spec.secretName: Secret \"a-oidc-client\""), "{}", r.message);
    assert!(dir.namespace("ns").is_none_or(|v| v.clients.values().all(|c| c.name != "a")), "not served");
}

#[test]
fn a_client_id_may_not_be_an_identity_id_of_its_namespace() {
    // A client_credentials token's sub is the client id: it must never read as an entity's.
    let mut squatter = client("squatter", DEFAULT_KEY, &["allow_all"]);
    squatter.spec.client_id = Some("entity-7".into());
    let mut elsewhere = meta(client("elsewhere", DEFAULT_KEY, &["allow_all"]), "other");
    elsewhere.spec.client_id = Some("entity-7".into());
    let inputs = Inputs {
        clients: arcs![squatter, elsewhere],
        identities: arcs![identity_obj("ns", "runner", "entity-7", Some(NOW))],
        ..Inputs::default()
    };
    let dir = build_all(&inputs);
    let r = &status(&dir, Kind::OidcClient, "squatter").readiness;
    assert_eq!(r.reason, "ClientIdConflict");
    assert!(r.message.starts_with("spec.clientId") && r.message.contains("runner"), "{}", r.message);
    let other = status(&dir, Kind::OidcClient, "elsewhere");
    assert!(other.readiness.ready, "another namespace's issuer: no collision ({:?})", other.readiness);
}

#[test]
fn assignments_admit_by_entity_or_group() {
    let spec: api::IdentityOidcAuthSpec = serde_json::from_value(serde_json::json!({
        "oidcDiscoveryUrl": "https://issuer", "boundIssuer": "https://issuer", "groups": ["ops"]
    }))
    .unwrap();
    let ident = ResolvedIdentity {
        id: "e1".into(),
        name: "runner".into(),
        key: ObjectKey::new("ns", "runner"),
        uid: "uid-ns-runner".into(),
        group_ids: vec![group_id("ns", "ops")],
        trusted_ips: Vec::new(),
        limits: TokenLimits { ttl: 1, max_ttl: 1, num_uses_limit: 0 },
        source: issuer_source(&spec),
        spec,
    };
    let by = |s: OidcAssignmentSpec| admits(&OidcAssignment::new("a", s), &ident);
    assert!(by(OidcAssignmentSpec { entity_ids: vec!["e1".into()], ..Default::default() }));
    assert!(by(OidcAssignmentSpec { entities: vec!["runner".into()], ..Default::default() }));
    assert!(by(OidcAssignmentSpec { groups: vec!["ops".into()], ..Default::default() }));
    assert!(by(OidcAssignmentSpec { group_ids: vec![group_id("ns", "ops")], ..Default::default() }));
    assert!(!by(OidcAssignmentSpec {
        groups: vec!["dev".into()],
        entity_ids: vec!["e2".into()],
        ..Default::default()
    }));
    assert_ne!(group_id("ns", "ops"), group_id("other", "ops"));
}

#[test]
fn unchanged_keys_are_not_parsed_again() {
    let inputs = Inputs { clients: arcs![client("app", DEFAULT_KEY, &["allow_all"])], ..Inputs::default() };
    let m = materials(&inputs);
    let ext = ExternalUrl::new("https://x");
    let first = build(&inputs, &m, &ext, NOW, None);
    let second = build(&inputs, &m, &ext, NOW + 1, Some(&first));
    let ring = m.key_rings.keys().next().unwrap();
    assert!(Arc::ptr_eq(first.signing_key(ring).unwrap(), second.signing_key(ring).unwrap()));
}

fn identity_obj(ns: &str, name: &str, id: &str, created: Option<i64>) -> IdentityOidcAuth {
    let spec: api::IdentityOidcAuthSpec = serde_json::from_value(serde_json::json!({
        "identityId": id, "oidcDiscoveryUrl": "https://issuer", "boundIssuer": "https://issuer",
        "boundAudiences": "api"
    }))
    .unwrap();
    let mut o = meta(IdentityOidcAuth::new(name, spec), ns);
    o.metadata.uid = Some(format!("uid-{ns}-{name}"));
    o.metadata.creation_timestamp = created.map(|t| {
        k8s_openapi::apimachinery::pkg::apis::meta::v1::Time(k8s_openapi::jiff::Timestamp::from_second(t).unwrap())
    });
    o
}

#[test]
fn a_contested_identity_id_stays_with_the_older_object_then_with_its_holder() {
    // The newcomer sorts first by namespace, but the victim is older.
    let inputs = Inputs {
        identities: arcs![
            identity_obj("aaa", "squatter", "victim-id", Some(NOW)),
            identity_obj("victim", "runner", "victim-id", Some(NOW - 100)),
        ],
        ..Inputs::default()
    };
    let m = materials(&inputs);
    let ext = ExternalUrl::new("https://x");
    let dir = build(&inputs, &m, &ext, NOW, None);
    assert_eq!(dir.identity_by_id("victim-id").unwrap().key, ObjectKey::new("victim", "runner"));
    let r = &dir.status(Kind::IdentityOidcAuth, &ObjectKey::new("aaa", "squatter")).unwrap().readiness;
    assert_eq!(r.reason, "IdentityIdConflict");
    assert!(r.message.starts_with("spec.identityId"), "{}", r.message);
    // Once served, the holder keeps it even against an older newcomer.
    let older = Inputs {
        identities: arcs![
            identity_obj("aaa", "squatter", "victim-id", Some(NOW - 1000)),
            identity_obj("victim", "runner", "victim-id", Some(NOW - 100)),
        ],
        ..Inputs::default()
    };
    let next = build(&older, &m, &ext, NOW + 1, Some(&dir));
    assert_eq!(next.identity_by_id("victim-id").unwrap().key, ObjectKey::new("victim", "runner"));
    // After a restart (no previous snapshot) the holder's own status says it held the id, and
    // the squatter's says it was refused: the holder keeps it.
    let with_status = |mut o: IdentityOidcAuth, reason: &str| {
        let ready = k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition {
            type_: "Ready".into(),
            status: if reason == "Ready" { "True" } else { "False" }.into(),
            reason: reason.into(),
            message: String::new(),
            last_transition_time: k8s_openapi::apimachinery::pkg::apis::meta::v1::Time(
                k8s_openapi::jiff::Timestamp::from_second(NOW).unwrap(),
            ),
            observed_generation: None,
        };
        let mut status = api::IdentityOidcAuthStatus { identity_id: Some("victim-id".into()), ..Default::default() };
        status.common.conditions.push(ready);
        o.status = Some(status);
        o
    };
    let restarted = Inputs {
        identities: arcs![
            with_status(identity_obj("aaa", "squatter", "victim-id", Some(NOW - 1000)), "IdentityIdConflict"),
            with_status(identity_obj("victim", "runner", "victim-id", Some(NOW - 100)), "Ready"),
        ],
        ..Inputs::default()
    };
    let after_restart = build(&restarted, &m, &ext, NOW + 2, None);
    assert_eq!(after_restart.identity_by_id("victim-id").unwrap().key, ObjectKey::new("victim", "runner"));
    // Without those statuses the older object would take it: what the status guards against.
    assert_eq!(build(&older, &m, &ext, NOW + 2, None).identity_by_id("victim-id").unwrap().key.namespace, "aaa");
    // Standalone's first-seen times stand in for creationTimestamp (and beat a forged one).
    let mut m2 = m.clone();
    m2.first_seen.insert((Kind::IdentityOidcAuth, ObjectKey::new("victim", "runner")), 5);
    m2.first_seen.insert((Kind::IdentityOidcAuth, ObjectKey::new("aaa", "squatter")), 9);
    let dir = build(&older, &m2, &ext, NOW, None);
    assert_eq!(dir.identity_by_id("victim-id").unwrap().key, ObjectKey::new("victim", "runner"));
}

#[test]
fn an_identity_must_bind_an_audience_or_say_any() {
    let mut none = identity_obj("ns", "none", "id-1", None);
    none.spec.bound_audiences = " , ".into();
    let mut any = identity_obj("ns", "any", "id-2", None);
    any.spec.bound_audiences = "*".into();
    let inputs = Inputs { identities: arcs![none, any], ..Inputs::default() };
    let dir = build_all(&inputs);
    let r = &status(&dir, Kind::IdentityOidcAuth, "none").readiness;
    assert_eq!(r.reason, "AudienceRequired");
    assert!(r.message.starts_with("spec.boundAudiences"), "{}", r.message);
    assert!(dir.identity_by_id("id-1").is_none(), "never served");
    assert!(dir.identity_by_id("id-2").is_some());
}

/// Two namespaces whose rings list the same kid with different material: each signs and
/// publishes its own, the later one is reported, and the holder keeps the kid.
#[test]
fn a_repeated_kid_resolves_inside_its_own_ring_only() {
    let mut victim = client("app", DEFAULT_KEY, &["allow_all"]);
    victim.metadata.namespace = Some("victim".into());
    let mut hostile = client("app", DEFAULT_KEY, &["allow_all"]);
    hostile.metadata.namespace = Some("aaa".into());
    let pv = meta(provider("p", &["*"], &[]), "victim");
    let ph = meta(provider("p", &["*"], &[]), "aaa");
    let inputs = Inputs { clients: arcs![victim, hostile], providers: arcs![pv, ph], ..Inputs::default() };
    let mut m = materials(&inputs);
    let (vk, hk) = (ObjectKey::new("victim", DEFAULT_KEY), ObjectKey::new("aaa", DEFAULT_KEY));
    let victim_kid = m.key_rings[&vk].current.kid.clone();
    let ext = ExternalUrl::new("https://x");
    let first = build(&inputs, &m, &ext, NOW, None);
    let victim_jwks = first.provider("victim", "p").unwrap().jwks_json.clone();
    // The hostile ring now claims the victim's kid with its own material (and an older
    // creation time, which a forger controls).
    let ring = m.key_rings.get_mut(&hk).unwrap();
    ring.current.kid = victim_kid.clone();
    ring.current.created_at = 0;
    let dir = build(&inputs, &m, &ext, NOW + 1, Some(&first));
    assert_eq!(dir.provider("victim", "p").unwrap().jwks_json, victim_jwks, "the victim publishes its own");
    let victim_signer = dir.signing_key(&vk).unwrap();
    let hostile_signer = dir.signing_key(&hk).unwrap();
    assert_eq!((victim_signer.kid(), hostile_signer.kid()), (victim_kid.as_str(), victim_kid.as_str()));
    assert_ne!(victim_signer.jwk(), hostile_signer.jwk(), "each ring signs with its own material");
    assert!(Arc::ptr_eq(victim_signer, first.signing_key(&vk).unwrap()), "the victim's parsed key is reused");
    assert_eq!(dir.kid_conflicts, vec![KidConflict { ring: hk.clone(), kid: victim_kid.clone(), holder: vk.clone() }]);
    // Both stay served (nothing is taken offline).
    assert!(status(&dir, Kind::OidcClient, "app").readiness.ready);
    assert!(dir.namespace("aaa").unwrap().clients.values().all(|c| c.key.current.kid() == victim_kid));
}

#[test]
fn records_name_the_incarnation_of_their_identity() {
    let first = identity_obj("ns", "runner", "id-1", Some(NOW));
    let inputs = Inputs { identities: arcs![first.clone()], ..Inputs::default() };
    let dir = build_all(&inputs);
    let key = ObjectKey::new("ns", "runner");
    let issued = IssuedBy { id: "id-1", key: &key, uid: "uid-ns-runner" };
    assert_eq!(dir.issuing_identity(&issued).map(|i| &*i.uid), Some("uid-ns-runner"));
    // Deleted and declared again: same namespace, name and identityId, another uid.
    let mut again = first;
    again.metadata.uid = Some("uid-second".into());
    let dir = build_all(&Inputs { identities: arcs![again], ..Inputs::default() });
    assert!(dir.identity_by_id("id-1").is_some(), "the id is served again");
    assert!(dir.issuing_identity(&issued).is_none(), "but not for the first incarnation's records");
    let other_key = ObjectKey::new("ns", "other");
    assert!(dir.issuing_identity(&IssuedBy { id: "id-1", key: &other_key, uid: "uid-second" }).is_none());
    assert!(dir.issuing_identity(&IssuedBy { id: "id-1", key: &key, uid: "uid-second" }).is_some());
}

/// `--max-token-ttl` cuts every token lifetime a spec declares: identities' TTLs (within
/// Infisical's ten years) and clients' access token TTL.
#[test]
fn token_lifetimes_are_cut_to_the_policy() {
    let mut long = identity_obj("ns", "long", "e-long", None);
    long.spec.access_token_ttl = 315_359_999;
    long.spec.access_token_max_ttl = 315_359_999;
    let mut short = identity_obj("ns", "short", "e-short", None);
    short.spec.access_token_ttl = 60;
    short.spec.access_token_max_ttl = 120;
    let mut app = client("app", DEFAULT_KEY, &["allow_all"]);
    app.spec.access_token_ttl = api::Duration::from_secs(400 * 24 * 3600);
    let inputs = Inputs {
        identities: arcs![long, short],
        clients: arcs![app],
        policy: Policy { max_token_ttl: 3600, ..Policy::default() },
        ..Inputs::default()
    };
    let m = materials(&inputs);
    let dir = build(&inputs, &m, &ExternalUrl::new("https://x"), NOW, None);
    let limits = |id: &str| dir.identity_by_id(id).unwrap().limits;
    assert_eq!((limits("e-long").ttl, limits("e-long").max_ttl), (3600, 3600));
    assert_eq!((limits("e-short").ttl, limits("e-short").max_ttl), (60, 120), "shorter lifetimes are kept");
    let app = dir.namespace("ns").unwrap().clients.values().next().unwrap();
    assert_eq!(app.access_token_ttl, 3600);
    assert_eq!(Policy::default().max_token_ttl, 31 * 24 * 3600);
}

/// Standalone, no API server answers TokenReviews: an identity asking for them is served
/// (it holds its id) but not Ready, and says why; on a cluster the same identity is Ready.
#[test]
fn a_token_review_identity_is_not_ready_without_an_api_server() {
    let mut reviewed = identity_obj("ns", "reviewed", "e-reviewed", None);
    reviewed.spec.token_review = true;
    let plain = identity_obj("ns", "plain", "e-plain", None);
    for (token_reviews, ready) in [(false, false), (true, true)] {
        let inputs = Inputs {
            identities: arcs![reviewed.clone(), plain.clone()],
            policy: Policy { token_reviews, ..Policy::default() },
            ..Inputs::default()
        };
        let mut m = materials(&inputs);
        for identity in &inputs.identities {
            let source = super::identities::issuer_source(&identity.spec);
            let fetched = Fetched { issuer: identity.spec.bound_issuer.clone(), key_ids: Vec::new() };
            m.issuer_health.insert(source, Ok(fetched));
        }
        let dir = build(&inputs, &m, &ExternalUrl::new("https://x"), NOW, None);
        assert!(dir.identity_by_id("e-reviewed").is_some(), "served either way");
        let r = &status(&dir, Kind::IdentityOidcAuth, "reviewed").readiness;
        assert_eq!(r.ready, ready, "token_reviews {token_reviews}: {r:?}");
        if !ready {
            assert_eq!(r.reason, "TokenReviewUnavailable");
            assert!(r.message.contains("spec.tokenReview"), "{}", r.message);
        }
        assert!(status(&dir, Kind::IdentityOidcAuth, "plain").readiness.ready, "others are untouched");
    }
}

/// A client publishing its keys at `spec.jwksUri` shows the `kid`s the last fetch found; one
/// whose last fetch failed is not Ready and says why, but stays served (the token endpoint
/// uses the keys fetched before while they are young enough).
#[test]
fn jwks_uri_clients_show_the_fetched_key_ids_and_stay_served_when_a_fetch_fails() {
    let uri_client = |name: &str| {
        let mut c = key_jwt_client(name, serde_json::Value::Null, &[]);
        c.spec.jwks_uri = Some(format!("https://keys.example/{name}/jwks"));
        c
    };
    let inputs = Inputs {
        clients: arcs![uri_client("published"), uri_client("failing"), uri_client("pending")],
        providers: arcs![provider("p", &["*"], &[])],
        ..Inputs::default()
    };
    let mut m = materials(&inputs);
    let source = |name: &str| super::identities::client_keys_source(&uri_client(name).spec).unwrap();
    let fetched =
        Fetched { issuer: "https://keys.example/published/jwks".into(), key_ids: vec!["a".into(), "b".into()] };
    m.issuer_health.insert(source("published"), Ok(fetched));
    m.issuer_health.insert(source("failing"), Err("HTTP 404".into()));
    let dir = build(&inputs, &m, &ExternalUrl::new("https://x"), NOW, None);
    let key_ids = |name: &str| match &status(&dir, Kind::OidcClient, name).facts {
        StatusFacts::Client { key_ids, .. } => key_ids.clone(),
        _ => panic!(),
    };
    assert!(status(&dir, Kind::OidcClient, "published").readiness.ready);
    assert_eq!(key_ids("published"), ["a", "b"]);
    let r = &status(&dir, Kind::OidcClient, "failing").readiness;
    assert_eq!((r.ready, r.reason.as_str()), (false, "JwksUriFailed"));
    assert!(r.message.starts_with("spec.jwksUri: HTTP 404"), "{}", r.message);
    assert!(key_ids("failing").is_empty());
    // Never fetched yet (the first fetch is running): pending, not Ready.
    let r = &status(&dir, Kind::OidcClient, "pending").readiness;
    assert_eq!((r.ready, r.reason.as_str()), (false, "JwksUriPending"));
    assert!(r.message.contains("https://keys.example/pending/jwks"), "{}", r.message);
    let served: Vec<&str> = dir.namespace("ns").unwrap().clients.values().map(|c| c.name.as_str()).collect();
    assert_eq!(served.len(), 3, "{served:?}");
}

/// A `private_key_jwt` client with the given keys and federated identities.
fn key_jwt_client(name: &str, jwks: serde_json::Value, federated: &[&str]) -> OidcClient {
    let mut c = client(name, DEFAULT_KEY, &["allow_all"]);
    c.spec.token_endpoint_auth_method = Some(crate::api::ClientAuthMethod::PrivateKeyJwt);
    c.spec.jwks = (!jwks.is_null()).then(|| serde_json::from_value(jwks).unwrap());
    c.spec.federated_identities = federated.iter().map(|s| s.to_string()).collect();
    c
}

#[test]
fn private_key_jwt_clients_show_their_keys_or_name_the_field_that_fails() {
    let ec = |kid: &str| {
        let key = KeyVersion::generate(crate::keys::SigningAlgorithm::ES256, NOW).unwrap().parse().unwrap();
        let mut jwk = serde_json::to_value(key.jwk()).unwrap();
        jwk["kid"] = kid.into();
        jwk
    };
    let mut bad = ec("bad");
    bad["x"] = "AAAA".into();
    let inputs = Inputs {
        clients: arcs![
            key_jwt_client("keys", serde_json::json!({"keys": [ec("a"), ec("b")]}), &["ci"]),
            key_jwt_client("bad-key", serde_json::json!({"keys": [ec("a"), bad]}), &[]),
            key_jwt_client("same-kid", serde_json::json!({"keys": [ec("a"), ec("a")]}), &[]),
            key_jwt_client("no-identity", serde_json::Value::Null, &["ci", "ghost"]),
            key_jwt_client("no-keys", serde_json::Value::Null, &[]),
            {
                let mut both = key_jwt_client("both", serde_json::json!({"keys": [ec("a")]}), &[]);
                both.spec.jwks_uri = Some("https://keys.example/jwks".into());
                both
            },
        ],
        identities: arcs![identity_obj("ns", "ci", "9a170000-0000-4000-8000-0000000000c1", None)],
        providers: arcs![provider("p", &["*"], &[])],
        ..Inputs::default()
    };
    let dir = build_all(&inputs);
    let s = status(&dir, Kind::OidcClient, "keys");
    assert!(s.readiness.ready, "{:?}", s.readiness);
    let StatusFacts::Client { key_ids, federated_identities, auth_methods, .. } = &s.facts else { panic!() };
    assert_eq!(
        (key_ids.as_slice(), federated_identities.as_slice()),
        (&["a".to_owned(), "b".to_owned()][..], &["ci".to_owned()][..])
    );
    assert_eq!(auth_methods, &[crate::api::ClientAuthMethod::PrivateKeyJwt]);
    for (name, reason, field) in [
        ("bad-key", "ClientKeyInvalid", "spec.jwks.keys[1]"),
        ("same-kid", "ClientKeyInvalid", "spec.jwks.keys[1]"),
        ("no-identity", "FederatedIdentityNotFound", "spec.federatedIdentities[1]"),
        ("no-keys", "Invalid", "spec.tokenEndpointAuthMethod"),
        ("both", "Invalid", "spec.jwksUri"),
    ] {
        let r = &status(&dir, Kind::OidcClient, name).readiness;
        assert!(!r.ready, "{name}");
        assert!(r.message.starts_with(field), "{name}: {} {}", r.reason, r.message);
        if reason != "Invalid" {
            assert_eq!(r.reason, reason, "{name}");
        }
    }
    let p = dir.provider("ns", "p").unwrap();
    assert_eq!(p.clients.iter().collect::<Vec<_>>(), ["keys"]);
    let discovery: serde_json::Value = serde_json::from_str(&p.discovery_json).unwrap();
    assert_eq!(
        discovery["token_endpoint_auth_methods_supported"],
        serde_json::json!(["client_secret_basic", "client_secret_post", "private_key_jwt", "none"])
    );
    assert_eq!(
        discovery["token_endpoint_auth_signing_alg_values_supported"],
        serde_json::json!(["RS256", "RS384", "RS512", "ES256", "ES384", "ES512", "EdDSA"])
    );
}
