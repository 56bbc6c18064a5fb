//! Reading manifests of the six kinds from a folder of (multi-document) YAML or JSON files.

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};

use serde::de::DeserializeOwned;
use serde_json::Value;

use crate::api::{self, Kind};
use crate::directory::{Inputs, ObjectKey};

/// A manifest that could not be used, with where it is and what is wrong.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ManifestProblem {
    pub file: PathBuf,
    /// 1-based document number inside the file.
    pub document: usize,
    /// `Kind namespace/name`, when the document got that far.
    pub resource: Option<String>,
    /// The field at fault, when known.
    pub field: Option<String>,
    pub message: String,
    /// Whether an earlier good version of the object keeps serving.
    pub kept_last_good: bool,
}

impl std::fmt::Display for ManifestProblem {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} (document {})", self.file.display(), self.document)?;
        if let Some(r) = &self.resource {
            write!(f, ", {r}")?;
        }
        if let Some(field) = &self.field {
            write!(f, ", field {field}")?;
        }
        write!(f, ": {}", self.message)?;
        if self.kept_last_good {
            write!(f, " (the last good version keeps serving)")?;
        }
        Ok(())
    }
}

/// One parsed object of any kind.
#[derive(Clone, Debug)]
pub enum Object {
    Key(api::OidcKey),
    Client(api::OidcClient),
    Scope(api::OidcScope),
    Assignment(api::OidcAssignment),
    Provider(api::OidcProvider),
    Identity(api::IdentityOidcAuth),
}

/// The files of a manifest folder, read in a stable order, as (path, content).
pub fn read_folder(dir: &Path) -> std::io::Result<Vec<(PathBuf, String)>> {
    let mut files = Vec::new();
    collect(dir, &mut files)?;
    files.sort();
    files.into_iter().map(|p| std::fs::read_to_string(&p).map(|c| (p, c))).collect()
}

fn collect(dir: &Path, out: &mut Vec<PathBuf>) -> std::io::Result<()> {
    for entry in std::fs::read_dir(dir)? {
        let path = entry?.path();
        let name = path.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
        if name.starts_with('.') {
            continue;
        }
        if path.is_dir() {
            collect(&path, out)?;
        } else if name.ends_with(".yaml") || name.ends_with(".yml") || name.ends_with(".json") {
            out.push(path);
        }
    }
    Ok(())
}

/// The objects of the last load that were good, so a broken edit does not take them away.
pub type LastGood = HashMap<(Kind, ObjectKey), Object>;

/// Parses every document; invalid new versions of known objects fall back to `last_good`.
/// Returns the inputs, the problems, and the new last-good set.
pub fn load(files: &[(PathBuf, String)], last_good: &LastGood) -> (Inputs, Vec<ManifestProblem>, LastGood) {
    let mut problems = Vec::new();
    let mut objects: BTreeMap<(Kind, ObjectKey), Object> = BTreeMap::new();
    let mut good = LastGood::new();
    for (file, content) in files {
        for (index, doc) in serde_yaml_ng::Deserializer::from_str(content).enumerate() {
            let problem = |resource: Option<String>, field: Option<String>, message: String| ManifestProblem {
                file: file.clone(),
                document: index + 1,
                resource,
                field,
                message,
                kept_last_good: false,
            };
            let value: Value = match <serde_yaml_ng::Value as serde::Deserialize>::deserialize(doc) {
                Ok(v) => match serde_json::to_value(v) {
                    Ok(Value::Null) => continue,
                    Ok(v) => v,
                    Err(e) => {
                        problems.push(problem(None, None, format!("not representable as JSON: {e}")));
                        continue;
                    }
                },
                Err(e) => {
                    problems.push(problem(None, None, format!("not valid YAML: {e}")));
                    break;
                }
            };
            match parse_object(&value) {
                Ok((kind, key, object)) => {
                    good.insert((kind, key.clone()), object.clone());
                    if objects.insert((kind, key.clone()), object).is_some() {
                        problems.push(problem(
                            Some(format!("{kind} {key}")),
                            None,
                            "declared more than once; the last declaration wins".into(),
                        ));
                    }
                }
                Err(p) => {
                    let mut p = *p;
                    if let Some((kind, key)) = p.identity.take() {
                        if let Some(previous) = last_good.get(&(kind, key.clone())) {
                            objects.insert((kind, key.clone()), previous.clone());
                            good.insert((kind, key), previous.clone());
                            p.problem.kept_last_good = true;
                        } else if let Some(object) = p.invalid_object.take() {
                            // Never good: still listed, so its Ready condition tells what is wrong.
                            objects.insert((kind, key), *object);
                        }
                    }
                    problems.push(ManifestProblem { file: file.clone(), document: index + 1, ..p.problem });
                }
            }
        }
    }
    let mut inputs = Inputs::default();
    for (_, object) in objects {
        match object {
            Object::Key(o) => inputs.keys.push(o.into()),
            Object::Client(o) => inputs.clients.push(o.into()),
            Object::Scope(o) => inputs.scopes.push(o.into()),
            Object::Assignment(o) => inputs.assignments.push(o.into()),
            Object::Provider(o) => inputs.providers.push(o.into()),
            Object::Identity(o) => inputs.identities.push(o.into()),
        }
    }
    (inputs, problems, good)
}

struct ParseFailure {
    problem: ManifestProblem,
    identity: Option<(Kind, ObjectKey)>,
    /// Parsed but invalid: shown as not Ready when there is no earlier good version.
    invalid_object: Option<Box<Object>>,
}

fn parse_object(value: &Value) -> Result<(Kind, ObjectKey, Object), Box<ParseFailure>> {
    let fail = |resource: Option<String>, field: Option<&str>, message: String, identity, invalid_object| {
        Box::new(ParseFailure {
            problem: ManifestProblem {
                file: PathBuf::new(),
                document: 0,
                resource,
                field: field.map(str::to_owned),
                message,
                kept_last_good: false,
            },
            identity,
            invalid_object,
        })
    };
    let api_version = value.get("apiVersion").and_then(Value::as_str).unwrap_or_default();
    let kind_name = value.get("kind").and_then(Value::as_str).unwrap_or_default();
    let expected = format!("{}/{}", api::GROUP, api::VERSION);
    if api_version != expected {
        return Err(fail(None, Some("apiVersion"), format!("expected {expected}, found {api_version:?}"), None, None));
    }
    let Some(kind) = Kind::from_name(kind_name) else {
        return Err(fail(None, Some("kind"), format!("unknown kind {kind_name:?}"), None, None));
    };
    let name = value.pointer("/metadata/name").and_then(Value::as_str).unwrap_or_default();
    if name.is_empty() {
        return Err(fail(Some(kind.to_string()), Some("metadata.name"), "is required".into(), None, None));
    }
    let namespace = value.pointer("/metadata/namespace").and_then(Value::as_str).unwrap_or("default");
    if let Err(e) = api::validate::metadata(namespace, name) {
        // Not named as an object: its name could reach a path of the state folder.
        return Err(fail(Some(kind.to_string()), Some(&e.field), e.message, None, None));
    }
    let key = ObjectKey::new(namespace, name);
    let resource = format!("{kind} {key}");
    let identity = Some((kind, key.clone()));
    // The CRD schema's size limits and strict field validation, which the API server applies
    // on a cluster.
    if let Err(e) = api::limits::check_manifest(kind, value) {
        return Err(fail(Some(resource), Some(&e.field), e.message, identity, None));
    }
    let typed = |value: &Value| -> Result<Object, (String, String)> {
        Ok(match kind {
            Kind::OidcKey => Object::Key(typed(value)?),
            Kind::OidcClient => Object::Client(typed(value)?),
            Kind::OidcScope => Object::Scope(typed(value)?),
            Kind::OidcAssignment => Object::Assignment(typed(value)?),
            Kind::OidcProvider => Object::Provider(typed(value)?),
            Kind::IdentityOidcAuth => Object::Identity(typed(value)?),
        })
    };
    let mut object = typed(value)
        .map_err(|(field, message)| fail(Some(resource.clone()), Some(&field), message, identity.clone(), None))?;
    as_declared(&mut object, namespace);
    if let Err(e) = validate(&object) {
        return Err(fail(Some(resource), Some(&e.field), e.message, identity, Some(Box::new(object))));
    }
    Ok((kind, key, object))
}

fn typed<T: DeserializeOwned>(value: &Value) -> Result<T, (String, String)> {
    serde_path_to_error::deserialize(value).map_err(|e| {
        let path = e.path().to_string();
        (if path == "." { "(root)".into() } else { path }, e.into_inner().to_string())
    })
}

/// Sets the namespace and drops what on a cluster only the API server or the operator
/// writes: `status`, `metadata.uid`, `metadata.creationTimestamp` (and the rest of the
/// server's bookkeeping). In a file anyone who edits it writes them, and each decides who
/// keeps a contested id: a manifest that claims `status.identityId` with `Ready=True`, or an
/// older creation time, would take another tenant's identity id after a restart. The shell
/// keeps those facts in its state folder instead (first-seen order, identity id holders).
fn as_declared(object: &mut Object, namespace: &str) {
    let meta = match object {
        Object::Key(o) => {
            o.status = None;
            &mut o.metadata
        }
        Object::Client(o) => {
            o.status = None;
            &mut o.metadata
        }
        Object::Scope(o) => {
            o.status = None;
            &mut o.metadata
        }
        Object::Assignment(o) => {
            o.status = None;
            &mut o.metadata
        }
        Object::Provider(o) => {
            o.status = None;
            &mut o.metadata
        }
        Object::Identity(o) => {
            o.status = None;
            &mut o.metadata
        }
    };
    meta.namespace = Some(namespace.to_owned());
    meta.uid = None;
    meta.creation_timestamp = None;
    meta.deletion_timestamp = None;
    meta.resource_version = None;
    meta.managed_fields = None;
}

fn validate(object: &Object) -> Result<(), api::validate::FieldError> {
    match object {
        Object::Key(o) => api::validate::key(&o.spec),
        Object::Client(o) => api::validate::client(&o.spec),
        Object::Scope(o) => api::validate::scope(o).map(|_| ()),
        Object::Assignment(o) => api::validate::assignment(o),
        Object::Provider(o) => api::validate::provider(&o.spec),
        Object::Identity(o) => api::validate::identity(&o.spec),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn files(text: &str) -> Vec<(PathBuf, String)> {
        vec![(PathBuf::from("m.yaml"), text.to_owned())]
    }

    const GOOD: &str = r#"
apiVersion: oidc-operator.dev/v1alpha1
kind: OidcKey
metadata: {name: k1, namespace: team}
spec: {algorithm: ES256, rotationPeriod: 1h, verificationTTL: 3600}
---
apiVersion: oidc-operator.dev/v1alpha1
kind: OidcClient
metadata: {name: app}
spec: {key: k1, redirectUris: ["https://app.example/cb"]}
"#;

    #[test]
    fn reads_multi_document_yaml_with_default_namespace() {
        let (inputs, problems, good) = load(&files(GOOD), &LastGood::new());
        assert!(problems.is_empty(), "{problems:?}");
        assert_eq!(inputs.keys.len(), 1);
        assert_eq!(inputs.keys[0].spec.rotation_period.as_secs(), 3600);
        assert_eq!(inputs.clients[0].metadata.namespace.as_deref(), Some("default"));
        assert_eq!(good.len(), 2);
    }

    #[test]
    fn a_bad_field_is_named_and_the_last_good_version_is_kept() {
        let (_, _, good) = load(&files(GOOD), &LastGood::new());
        let broken = GOOD.replace("rotationPeriod: 1h", "rotationPeriod: 1d");
        let (inputs, problems, _) = load(&files(&broken), &good);
        assert_eq!(problems.len(), 1);
        let p = &problems[0];
        assert_eq!(p.field.as_deref(), Some("spec.rotationPeriod"));
        assert_eq!(p.resource.as_deref(), Some("OidcKey team/k1"));
        assert!(p.kept_last_good);
        assert_eq!(inputs.keys[0].spec.rotation_period.as_secs(), 3600, "old version serves");
        assert!(p.to_string().contains("m.yaml (document 1)"), "{p}");

        // A semantic rule (verificationTTL <= 10 x rotationPeriod) without an earlier version:
        // the object is listed so its Ready condition says why.
        let invalid = GOOD.replace("verificationTTL: 3600", "verificationTTL: 36001");
        let (inputs, problems, _) = load(&files(&invalid), &LastGood::new());
        assert_eq!(problems[0].field.as_deref(), Some("spec.verificationTTL"));
        assert_eq!(inputs.keys.len(), 1);
    }

    /// A name or namespace that is no DNS name is refused before it can name a file of the
    /// state folder: `../team/k1` would otherwise write over team's key ring.
    #[test]
    fn names_that_could_leave_their_namespace_are_refused() {
        for metadata in ["{name: ../team/k1, namespace: other}", "{name: k1, namespace: ../team}", "{name: a/b}"] {
            let text = GOOD.replace("{name: k1, namespace: team}", metadata);
            let (inputs, problems, _) = load(&files(&text), &LastGood::new());
            assert_eq!(inputs.keys.len(), 0, "{metadata} was loaded");
            assert_eq!(problems.len(), 1, "{problems:?}");
            assert!(problems[0].field.as_deref().is_some_and(|f| f.starts_with("metadata.")), "{problems:?}");
            assert_eq!(inputs.clients.len(), 1, "the other objects load");
        }
    }

    /// The CRD schema's size limits hold without an API server: an identity mapping 33
    /// claims is refused with its file, resource and field, and the rest loads.
    #[test]
    fn over_limit_specs_are_refused_naming_file_resource_and_field() {
        let mappings: Vec<String> = (0..33).map(|i| format!("k{i}: email")).collect();
        let text = format!(
            "{GOOD}\n---\napiVersion: oidc-operator.dev/v1alpha1\nkind: IdentityOidcAuth\nmetadata: {{name: big}}\n\
             spec: {{oidcDiscoveryUrl: https://i, boundIssuer: https://i, boundAudiences: a, claimMappings: {{{}}}}}\n",
            mappings.join(", ")
        );
        let (inputs, problems, _) = load(&files(&text), &LastGood::new());
        assert_eq!(inputs.identities.len(), 0, "the over-limit identity was loaded");
        assert_eq!(problems.len(), 1, "{problems:?}");
        let p = &problems[0];
        assert_eq!(p.file, PathBuf::from("m.yaml"));
        assert_eq!(p.resource.as_deref(), Some("IdentityOidcAuth default/big"));
        assert_eq!(p.field.as_deref(), Some("spec.claimMappings"));
        assert!(p.message.contains("at most 32"), "{}", p.message);
        assert_eq!(inputs.keys.len(), 1, "the other objects load");
    }

    /// What only the API server or the operator writes on a cluster is dropped from files:
    /// a forged status or creation time must not decide who keeps an identity id.
    #[test]
    fn status_uid_and_creation_time_from_files_are_ignored() {
        let text = r#"
apiVersion: oidc-operator.dev/v1alpha1
kind: IdentityOidcAuth
metadata: {name: forger, namespace: bbb, uid: forged-uid, creationTimestamp: "2000-01-01T00:00:00Z", resourceVersion: "7"}
spec: {identityId: x, oidcDiscoveryUrl: "https://issuer.example", boundIssuer: "https://issuer.example", boundAudiences: a}
status:
  identityId: x
  conditions: [{type: Ready, status: "True", reason: Ready, message: forged, lastTransitionTime: "2000-01-01T00:00:00Z"}]
"#;
        let (inputs, problems, _) = load(&files(text), &LastGood::new());
        assert!(problems.is_empty(), "{problems:?}");
        let identity = &inputs.identities[0];
        assert_eq!(identity.status, None);
        assert_eq!(identity.metadata.uid, None);
        assert_eq!(identity.metadata.creation_timestamp, None);
        assert_eq!(identity.metadata.resource_version, None);
        assert_eq!(identity.metadata.name.as_deref(), Some("forger"));
        let (inputs, _, _) = load(
            &files(&GOOD.replace("spec: {key: k1,", "status: {clientId: forged}\nspec: {key: k1,")),
            &LastGood::new(),
        );
        assert_eq!(inputs.clients[0].status, None);
    }

    /// A misspelt field is refused as `kubectl apply`'s strict field validation refuses it,
    /// naming file, document, resource and field, instead of being dropped silently.
    #[test]
    fn unknown_fields_are_refused_with_their_path() {
        let text = GOOD.replace("redirectUris", "redirectUri");
        assert_ne!(text, GOOD, "the fixture names redirectUris");
        let (inputs, problems, _) = load(&files(&text), &LastGood::new());
        assert_eq!(inputs.clients.len(), 0, "the client with an unknown field was loaded");
        assert_eq!(problems.len(), 1, "{problems:?}");
        let p = &problems[0];
        assert_eq!((p.file.to_str(), p.document), (Some("m.yaml"), 2), "the second document");
        assert_eq!(p.resource.as_deref(), Some("OidcClient default/app"));
        assert_eq!(p.field.as_deref(), Some("spec.redirectUri"));
        assert!(p.message.contains("did you mean redirectUris"), "{}", p.message);
    }

    #[test]
    fn foreign_and_broken_documents_are_reported_not_fatal() {
        let text = format!("apiVersion: v1\nkind: ConfigMap\nmetadata: {{name: x}}\n---\n{GOOD}");
        let (inputs, problems, _) = load(&files(&text), &LastGood::new());
        assert_eq!(problems.len(), 1);
        assert_eq!(problems[0].field.as_deref(), Some("apiVersion"));
        assert_eq!(inputs.clients.len(), 1);
        let (_, problems, _) = load(&files("a: [unclosed"), &LastGood::new());
        assert!(problems[0].message.contains("YAML"));
    }

    /// The unit-test stand-in for `fuzz/fuzz_targets/manifest.rs`: thousands of deterministic
    /// mutations of a valid manifest set are loaded and resolved without a panic, and every
    /// object that loads is either Ready-able or reported with a reason.
    #[test]
    fn mutated_manifests_never_panic() {
        let seed = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/examples/provider.yaml")).unwrap();
        let alphabet: Vec<char> = "{}[]:,-'\" \n#&*!|>%@`0aZ.é\t".chars().collect();
        let mut mutator = crate::mutation::Mutator::default();
        let external = crate::directory::ExternalUrl::new("https://x");
        let mut loaded = 0;
        for _ in 0..3_000 {
            let text = mutator.mutate(&seed, &alphabet);
            let (inputs, _, _) = load(&files(&text), &LastGood::new());
            let dir = crate::directory::build(&inputs, &crate::directory::Materials::default(), &external, 0, None);
            let declared = inputs.keys.len()
                + inputs.clients.len()
                + inputs.scopes.len()
                + inputs.assignments.len()
                + inputs.providers.len()
                + inputs.identities.len();
            loaded += declared;
            assert_eq!(dir.statuses.len(), declared, "every object gets a status");
            assert!(dir.statuses.iter().all(|s| s.readiness.ready || !s.readiness.reason.is_empty()));
        }
        assert!(loaded > 3_000, "most mutations still declare objects ({loaded})");
    }
}
