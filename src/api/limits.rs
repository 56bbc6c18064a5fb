//! Size limits of everything a tenant writes into a spec: lists, maps and strings.
//!
//! Each limit is a constant here, put into the CRD schema (`maxItems`, `maxProperties`,
//! `maxLength`, and a CEL rule for map keys, which a structural schema cannot bound
//! otherwise), so the API server refuses an over-limit manifest at `kubectl apply`. The
//! values are far above what a real user writes, and far below what would let one tenant's
//! objects make a login, a record or a directory build expensive for everyone (issue 20).
//!
//! Standalone has no API server: [`check`] walks the same generated schema over a manifest's
//! `spec`, so the limits cannot drift between the two shells. `docs/limits.md` lists them.

use serde_json::Value;

use super::validate::FieldError;

/// Entries of a list of object names (clients, assignments, entities, groups, scopes).
pub const MAX_NAMES: u64 = 1024;
/// Length of one name in such a list (a DNS subdomain is at most 253).
pub const MAX_NAME_LEN: u64 = 253;
/// Redirect URIs of one client, and the length of each.
pub const MAX_REDIRECT_URIS: u64 = 32;
/// Audiences a client's client_credentials tokens may name (`spec.audiences`).
pub const MAX_AUDIENCES: u64 = 32;
pub const MAX_URL_LEN: u64 = 2048;
/// Public keys a `private_key_jwt` client registers inline (`spec.jwks.keys`): enough for a
/// rotation of a few algorithms.
pub const MAX_CLIENT_KEYS: u64 = 16;
/// A key id, and a key parameter (an 8192-bit RSA modulus is 1366 base64url characters).
pub const MAX_KID_LEN: u64 = 256;
pub const MAX_KEY_PARAM_LEN: u64 = 1400;
/// Federated identities one client names (`spec.federatedIdentities`).
pub const MAX_FEDERATED_IDENTITIES: u64 = 32;
/// Scopes a provider supports, and groups of one identity.
pub const MAX_SCOPES: u64 = 64;
pub const MAX_GROUPS: u64 = 64;
/// `boundClaims`: claims, the length of a claim name (a dotted path) and of its globs.
pub const MAX_BOUND_CLAIMS: u64 = 32;
pub const MAX_CLAIM_NAME_LEN: u64 = 256;
pub const MAX_GLOBS_LEN: u64 = 4096;
/// `boundSubject` and `boundAudiences`.
pub const MAX_SUBJECT_LEN: u64 = 1024;
pub const MAX_AUDIENCES_LEN: u64 = 4096;
/// `claimMappings`: each login stores one value per mapping.
pub const MAX_CLAIM_MAPPINGS: u64 = 32;
pub const MAX_MAPPING_KEY_LEN: u64 = 128;
/// `metadata` of an identity: read by templates into every ID token.
pub const MAX_METADATA: u64 = 64;
pub const MAX_METADATA_KEY_LEN: u64 = 128;
pub const MAX_METADATA_VALUE_LEN: u64 = 512;
/// Trusted address ranges of an identity's tokens.
pub const MAX_TRUSTED_IPS: u64 = 64;
/// A PEM CA bundle (`caCert`): room for a few dozen certificates.
pub const MAX_CA_BUNDLE_LEN: u64 = 64 * 1024;
/// A scope's claims template, and any description.
pub const MAX_TEMPLATE_LEN: u64 = 16 * 1024;
pub const MAX_DESCRIPTION_LEN: u64 = 1024;

/// The CEL rule bounding a map's keys; [`check`] reads the bound back from it.
fn key_rule(max: u64) -> String {
    format!("self.all(k, size(k) <= {max})")
}

fn parse_key_rule(rule: &str) -> Option<u64> {
    rule.strip_prefix("self.all(k, size(k) <= ")?.strip_suffix(')')?.parse().ok()
}

/// The bound a map schema puts on its keys, read back from the CEL rule [`key_rule`] wrote.
fn key_limit(schema: &Value) -> Option<u64> {
    schema
        .get("x-kubernetes-validations")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .filter_map(|r| r.get("rule").and_then(Value::as_str).and_then(parse_key_rule))
        .min()
}

/// Bounds a string-to-string map: entries, key length (CEL), value length.
fn map(schema: &mut schemars::Schema, entries: u64, key_len: u64, value_len: u64) {
    schema.insert("maxProperties".into(), entries.into());
    if let Some(values) = schema.get_mut("additionalProperties").and_then(Value::as_object_mut) {
        values.insert("maxLength".into(), value_len.into());
    }
    let rule = serde_json::json!({
        "rule": key_rule(key_len),
        "message": format!("keys must be at most {key_len} characters"),
    });
    match schema.get_mut("x-kubernetes-validations").and_then(Value::as_array_mut) {
        Some(rules) => rules.push(rule),
        None => {
            schema.insert("x-kubernetes-validations".into(), Value::Array(vec![rule]));
        }
    }
}

/// `boundClaims`: claim name -> globs.
pub fn bound_claims(schema: &mut schemars::Schema) {
    map(schema, MAX_BOUND_CLAIMS, MAX_CLAIM_NAME_LEN, MAX_GLOBS_LEN);
}

/// `claimMappings`: alias metadata key -> claim name.
pub fn claim_mappings(schema: &mut schemars::Schema) {
    map(schema, MAX_CLAIM_MAPPINGS, MAX_MAPPING_KEY_LEN, MAX_CLAIM_NAME_LEN);
}

/// An identity's `metadata`.
pub fn metadata(schema: &mut schemars::Schema) {
    map(schema, MAX_METADATA, MAX_METADATA_KEY_LEN, MAX_METADATA_VALUE_LEN);
}

/// The `spec` schema of a kind, as JSON, computed once.
fn spec_schema(kind: super::Kind) -> &'static Value {
    use std::sync::OnceLock;
    static SCHEMAS: OnceLock<Vec<(super::Kind, Value)>> = OnceLock::new();
    let all = SCHEMAS.get_or_init(|| {
        super::Kind::ALL
            .into_iter()
            .map(|k| {
                let crd = k.crd();
                let schema = crd
                    .spec
                    .versions
                    .first()
                    .and_then(|v| v.schema.as_ref())
                    .and_then(|s| s.open_api_v3_schema.as_ref())
                    .and_then(|s| serde_json::to_value(s).ok())
                    .and_then(|s| s.pointer("/properties/spec").cloned())
                    .unwrap_or(Value::Null);
                (k, schema)
            })
            .collect()
    });
    all.iter().find(|(k, _)| *k == kind).map(|(_, s)| s).unwrap_or(&Value::Null)
}

/// Checks a manifest's `spec` against its kind's CRD schema as the API server would: the
/// size limits and strict field validation, naming the first field that breaks them
/// (`spec.claimMappings: must have at most 32 entries`, `spec.redirectUri: unknown field`).
pub fn check(kind: super::Kind, spec: &Value) -> Result<(), FieldError> {
    walk(spec_schema(kind), spec, "spec")
}

/// An unknown field, with the known one it is probably a misspelling of.
fn unknown_field(schema: &Value, path: &str, key: &str) -> FieldError {
    let known: Vec<&str> = schema
        .get("properties")
        .and_then(Value::as_object)
        .map(|p| p.keys().map(String::as_str).collect())
        .unwrap_or_default();
    let closest = known.iter().map(|k| (edit_distance(&k.to_lowercase(), &key.to_lowercase()), *k)).min();
    let hint = match closest {
        Some((d, k)) if d <= 3 => format!("; did you mean {k}?"),
        _ => format!("; known fields: {}", known.join(", ")),
    };
    FieldError { field: format!("{path}.{}", crate::login::clip(key)), message: format!("unknown field{hint}") }
}

/// Levenshtein distance, for the hint of a misspelt field (names are short).
fn edit_distance(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut row: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.chars().enumerate() {
        let mut prev = row[0];
        row[0] = i + 1;
        for (j, cb) in b.iter().enumerate() {
            let cur = row[j + 1];
            row[j + 1] = if ca == *cb { prev } else { 1 + prev.min(cur).min(row[j]) };
            prev = cur;
        }
    }
    row[b.len()]
}

/// Checks a whole manifest: only the fields a custom resource has at its top, then its
/// `spec` ([`check`]). Metadata is the API server's own and is checked where it is read.
pub fn check_manifest(kind: super::Kind, manifest: &Value) -> Result<(), FieldError> {
    const TOP: [&str; 5] = ["apiVersion", "kind", "metadata", "spec", "status"];
    if let Some(key) = manifest.as_object().and_then(|m| m.keys().find(|k| !TOP.contains(&k.as_str()))) {
        let closest = TOP.iter().map(|t| (edit_distance(t, key), *t)).min();
        let hint = match closest {
            Some((d, t)) if d <= 2 => format!("; did you mean {t}?"),
            _ => String::new(),
        };
        return Err(FieldError {
            field: crate::login::clip(key).into_owned(),
            message: format!("unknown field{hint}"),
        });
    }
    check(kind, manifest.get("spec").unwrap_or(&Value::Null))
}

fn too_many(path: &str, what: &str, max: u64, got: usize) -> FieldError {
    FieldError { field: path.to_owned(), message: format!("must have at most {max} {what} (has {got})") }
}

fn walk(schema: &Value, value: &Value, path: &str) -> Result<(), FieldError> {
    let bound = |name: &str| schema.get(name).and_then(Value::as_u64);
    match value {
        Value::String(s) => {
            // The API server counts characters, not bytes.
            if let Some(max) = bound("maxLength") {
                let n = s.chars().count();
                if n as u64 > max {
                    return Err(too_many(path, "characters", max, n));
                }
            }
        }
        Value::Array(items) => {
            if let Some(max) = bound("maxItems")
                && items.len() as u64 > max
            {
                return Err(too_many(path, "items", max, items.len()));
            }
            if let Some(min) = bound("minItems")
                && (items.len() as u64) < min
            {
                return Err(FieldError { field: path.to_owned(), message: format!("must have at least {min} items") });
            }
            if let Some(item_schema) = schema.get("items") {
                for (i, item) in items.iter().enumerate() {
                    walk(item_schema, item, &format!("{path}[{i}]"))?;
                }
            }
        }
        Value::Object(members) => {
            if let Some(max) = bound("maxProperties")
                && members.len() as u64 > max
            {
                return Err(too_many(path, "entries", max, members.len()));
            }
            let key_max = key_limit(schema);
            for (key, member) in members {
                if let Some(max) = key_max
                    && key.chars().count() as u64 > max
                {
                    return Err(FieldError {
                        field: path.to_owned(),
                        message: format!("keys must be at most {max} characters ({})", crate::login::clip(key)),
                    });
                }
                let member_schema =
                    schema.pointer(&format!("/properties/{}", key.replace('~', "~0").replace('/', "~1")));
                let member_schema = member_schema.or_else(|| schema.get("additionalProperties"));
                match member_schema {
                    Some(member_schema) => walk(member_schema, member, &format!("{path}.{key}"))?,
                    // A struct's field the schema does not know: the API server's strict field
                    // validation refuses it (`kubectl apply` does by default), so standalone
                    // does too, instead of silently dropping a misspelt field.
                    None if schema.get("properties").is_some() => return Err(unknown_field(schema, path, key)),
                    None => {}
                }
            }
        }
        _ => {}
    }
    Ok(())
}

/// `docs/limits.md`: every bound of every kind, read from the generated schemas (written by
/// `crdgen`, checked for drift like the CRDs).
pub fn render_doc() -> String {
    let mut out = String::from(
        "<!-- Generated by `oidc-operator crdgen` from the CRD schemas; do not edit. -->\n\
         # Size limits of the custom resources\n\n\
         Every string, list and map a tenant writes into a spec is bounded in the CRD schema, so\n\
         the API server refuses an over-limit manifest at `kubectl apply`, naming the field;\n\
         `oidc-operator standalone` applies the same schema to its manifest files and reports the\n\
         file, resource and field. The bounds are far above what real objects need and keep\n\
         what one tenant declares from making logins, records or snapshots expensive for the\n\
         others. Lengths count characters, as the API server does.\n\n\
         | field | limit |\n|---|---|\n",
    );
    for kind in super::Kind::ALL {
        let mut rows = Vec::new();
        describe(spec_schema(kind), &format!("{kind}.spec"), &mut rows);
        for (field, limit) in rows {
            out.push_str(&format!("| `{field}` | {limit} |\n"));
        }
    }
    out
}

/// One row per bounded field: its path and its bounds in words.
fn describe(schema: &Value, path: &str, rows: &mut Vec<(String, String)>) {
    let bound = |name: &str| schema.get(name).and_then(Value::as_u64);
    let mut parts = Vec::new();
    if let Some(n) = bound("maxLength") {
        parts.push(format!("at most {n} characters"));
    }
    if let Some(n) = bound("minItems") {
        parts.push(format!("at least {n} items"));
    }
    if let Some(n) = bound("maxItems") {
        parts.push(format!("at most {n} items"));
    }
    if let Some(n) = bound("maxProperties") {
        parts.push(format!("at most {n} entries"));
    }
    let key_max = key_limit(schema);
    if let Some(n) = key_max {
        parts.push(format!("keys at most {n} characters"));
    }
    if let Some(n) = schema.pointer("/additionalProperties/maxLength").and_then(Value::as_u64) {
        parts.push(format!("values at most {n} characters"));
    }
    if let Some(n) = schema.pointer("/items/maxLength").and_then(Value::as_u64) {
        parts.push(format!("each at most {n} characters"));
    }
    if !parts.is_empty() {
        rows.push((path.to_owned(), parts.join("; ")));
    }
    if let Some(props) = schema.get("properties").and_then(Value::as_object) {
        for (k, v) in props {
            describe(v, &format!("{path}.{k}"), rows);
        }
    }
    if let Some(items) = schema.get("items").filter(|i| i.get("properties").is_some()) {
        describe(items, &format!("{path}[]"), rows);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::Kind;
    use serde_json::json;

    #[test]
    fn the_schema_carries_every_limit() {
        let identity = spec_schema(Kind::IdentityOidcAuth);
        assert_eq!(identity.pointer("/properties/claimMappings/maxProperties"), Some(&json!(MAX_CLAIM_MAPPINGS)));
        assert_eq!(
            identity.pointer("/properties/claimMappings/additionalProperties/maxLength"),
            Some(&json!(MAX_CLAIM_NAME_LEN))
        );
        assert_eq!(
            identity.pointer("/properties/claimMappings/x-kubernetes-validations/0/rule"),
            Some(&json!(key_rule(MAX_MAPPING_KEY_LEN)))
        );
        assert_eq!(identity.pointer("/properties/groups/maxItems"), Some(&json!(MAX_GROUPS)));
        assert_eq!(identity.pointer("/properties/groups/items/maxLength"), Some(&json!(MAX_NAME_LEN)));
        assert_eq!(identity.pointer("/properties/caCert/maxLength"), Some(&json!(MAX_CA_BUNDLE_LEN)));
        let client = spec_schema(Kind::OidcClient);
        assert_eq!(client.pointer("/properties/redirectUris/maxItems"), Some(&json!(MAX_REDIRECT_URIS)));
        assert_eq!(client.pointer("/properties/redirectUris/items/maxLength"), Some(&json!(MAX_URL_LEN)));
        let scope = spec_schema(Kind::OidcScope);
        assert_eq!(scope.pointer("/properties/template/maxLength"), Some(&json!(MAX_TEMPLATE_LEN)));
    }

    /// Every string, list and map a tenant writes has a bound in the schema.
    #[test]
    fn no_unbounded_field_is_left() {
        fn unbounded(schema: &Value, path: &str, out: &mut Vec<String>) {
            match schema.get("type").and_then(Value::as_str) {
                // int-or-string durations are bounded by their own parsing.
                Some("string")
                    if schema.get("maxLength").is_none()
                        && schema.get("enum").is_none()
                        && schema.get("x-kubernetes-int-or-string").is_none() =>
                {
                    out.push(path.to_owned());
                }
                Some("array") => {
                    if schema.get("maxItems").is_none() {
                        out.push(path.to_owned());
                    }
                    if let Some(items) = schema.get("items") {
                        unbounded(items, &format!("{path}[]"), out);
                    }
                }
                Some("object") => {
                    if let Some(props) = schema.get("properties").and_then(Value::as_object) {
                        for (k, v) in props {
                            unbounded(v, &format!("{path}.{k}"), out);
                        }
                    }
                    if let Some(values) = schema.get("additionalProperties").filter(|v| v.is_object()) {
                        if schema.get("maxProperties").is_none() {
                            out.push(path.to_owned());
                        }
                        unbounded(values, &format!("{path}{{}}"), out);
                    }
                }
                _ => {}
            }
        }
        let mut out = Vec::new();
        for kind in Kind::ALL {
            unbounded(spec_schema(kind), &format!("{kind}.spec"), &mut out);
        }
        assert!(out.is_empty(), "fields without a size limit: {out:?}");
    }

    #[test]
    fn standalone_refuses_what_the_api_server_would_naming_the_field() {
        let mappings: serde_json::Map<String, Value> =
            (0..=MAX_CLAIM_MAPPINGS).map(|i| (format!("k{i}"), json!("email"))).collect();
        let spec = json!({"oidcDiscoveryUrl": "https://i", "boundIssuer": "https://i", "claimMappings": mappings});
        let e = check(Kind::IdentityOidcAuth, &spec).unwrap_err();
        assert_eq!(e.field, "spec.claimMappings");
        assert!(e.message.contains("at most 32 entries"), "{e}");
        let spec =
            json!({"oidcDiscoveryUrl": "https://i", "boundIssuer": "https://i", "metadata": {"k": "v".repeat(513)}});
        assert_eq!(check(Kind::IdentityOidcAuth, &spec).unwrap_err().field, "spec.metadata.k");
        let spec =
            json!({"oidcDiscoveryUrl": "https://i", "boundIssuer": "https://i", "metadata": {"k".repeat(129): "v"}});
        assert_eq!(check(Kind::IdentityOidcAuth, &spec).unwrap_err().field, "spec.metadata");
        let uris: Vec<String> = (0..=MAX_REDIRECT_URIS).map(|i| format!("https://a/{i}")).collect();
        let e = check(Kind::OidcClient, &json!({"redirectUris": uris})).unwrap_err();
        assert_eq!(e.field, "spec.redirectUris");
        let e =
            check(Kind::OidcClient, &json!({"redirectUris": [format!("https://a/{}", "x".repeat(2048))]})).unwrap_err();
        assert_eq!(e.field, "spec.redirectUris[0]");
        let e = check(Kind::OidcProvider, &json!({"pkceMethods": []})).unwrap_err();
        assert_eq!(e.field, "spec.pkceMethods");
        let e = check_manifest(Kind::OidcKey, &json!({"kind": "OidcKey", "spce": {"algorithm": "ES256"}})).unwrap_err();
        assert_eq!((e.field.as_str(), e.message.as_str()), ("spce", "unknown field; did you mean spec?"));
        let e = check(Kind::OidcClient, &json!({"redirectUri": ["https://a/cb"]})).unwrap_err();
        assert_eq!(
            (e.field.as_str(), e.message.as_str()),
            ("spec.redirectUri", "unknown field; did you mean redirectUris?")
        );
        let e = check(Kind::IdentityOidcAuth, &json!({"accessTokenTrustedIps": [{"ip": "1.2.3.4"}]})).unwrap_err();
        assert_eq!(e.field, "spec.accessTokenTrustedIps[0].ip");
        let fine =
            json!({"oidcDiscoveryUrl": "https://i", "boundIssuer": "https://i", "claimMappings": {"e": "email"}});
        assert_eq!(check(Kind::IdentityOidcAuth, &fine), Ok(()));
    }
}
