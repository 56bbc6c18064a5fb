//! Scope templates (OpenBao syntax): JSON with `{{identity.entity...}}` / `{{time.now...}}`
//! placeholders, given as escaped JSON or base64 JSON.
//!
//! Parsing checks the shape (placeholders known, JSON well formed once filled, an object, no
//! reserved claims) and keeps the template as literal text and variables; rendering
//! substitutes each variable's JSON value. No clock is read here: `now` is a parameter.
//! Any alias mount name (`identity.entity.aliases.<mount>`) names the login alias, since
//! an entity has exactly one (its IdentityOidcAuth login).

use base64::Engine;

/// Claims a template may not set: the ID token's own (OpenBao's reserved list), and those
/// whose meaning a relying party trusts the provider alone to assert (OpenID Connect Core
/// §2: `azp`, `acr`, `amr`; RFC 7519: `nbf`, `jti`; Front-Channel Logout: `sid`).
pub const RESERVED_CLAIMS: [&str; 16] = [
    "iat",
    "aud",
    "exp",
    "iss",
    "sub",
    "namespace",
    "nonce",
    "auth_time",
    "at_hash",
    "c_hash",
    "azp",
    "nbf",
    "jti",
    "acr",
    "amr",
    "sid",
];

/// Why a template is unusable; the position counts characters in the (decoded) template.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TemplateError {
    #[error("unterminated placeholder starting at character {position}")]
    Unterminated { position: usize },
    #[error("unknown variable {name:?} at character {position}")]
    UnknownVariable { name: String, position: usize },
    #[error("not valid JSON at line {line}, column {column}: {message}")]
    Json { line: usize, column: usize, message: String },
    #[error("must be a JSON object")]
    NotAnObject,
    #[error("sets the reserved claim {0:?}")]
    ReservedClaim(String),
    /// The claims depend on the values filled in (a placeholder inside a key or a string, or
    /// values that break the JSON): the template must be JSON for every possible value.
    #[error("its claims change with the values filled in ({0}); put each placeholder where a whole JSON value goes")]
    ValueDependent(String),
    /// A placeholder names a value the entity does not have, and the scope says a missing
    /// value is an error.
    #[error("{{{{{0}}}}} has no value for this entity")]
    MissingValue(String),
}

/// A parsed scope template: literal JSON text and variables, in order.
#[derive(Debug, Clone, PartialEq)]
pub struct Template {
    source: String,
    claims: Vec<String>,
    parts: Vec<Part>,
}

#[derive(Debug, Clone, PartialEq)]
enum Part {
    Literal(String),
    Var(Variable),
}

/// A template variable.
#[derive(Debug, Clone, PartialEq)]
enum Variable {
    EntityId,
    EntityName,
    Metadata,
    MetadataKey(String),
    GroupIds,
    GroupNames,
    AliasId,
    AliasName,
    AliasMetadata(String),
    /// `time.now` shifted by signed seconds.
    Now(i64),
}

/// What a template reads about the entity and its login.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct EntityContext {
    pub id: String,
    pub name: String,
    pub metadata: std::collections::BTreeMap<String, String>,
    pub group_ids: Vec<String>,
    pub group_names: Vec<String>,
    /// The login alias: id, name (the external `sub`) and metadata (from `claimMappings`).
    pub alias_id: String,
    pub alias_name: String,
    pub alias_metadata: std::collections::BTreeMap<String, String>,
}

impl Template {
    /// Parses a template given as escaped JSON or as base64-encoded JSON.
    ///
    /// The template is filled with `null` and then with adversarial samples (quotes, braces,
    /// `:0,` and a reserved claim's name inside values; empty and nested values); every
    /// filling must be a JSON object with the same top-level claims, none reserved. So no
    /// entity's values can make it render invalid JSON or set another claim.
    pub fn parse(input: &str) -> Result<Self, TemplateError> {
        let source = decode_base64_json(input).unwrap_or_else(|| input.to_owned());
        let parts = split_parts(&source)?;
        let claims = object_claims(fill(&parts, &|_| serde_json::Value::Null)?)?;
        for sample in samples() {
            let filled = fill(&parts, &|v| sample_value(v, sample))
                .map_err(|e| TemplateError::ValueDependent(format!("with sample values it is {e}")))?;
            let sample_claims = object_claims(filled)?;
            if sample_claims != claims {
                return Err(TemplateError::ValueDependent(format!(
                    "claims [{}] become [{}]",
                    claims.join(", "),
                    sample_claims.join(", ")
                )));
            }
        }
        Ok(Self { source, claims, parts })
    }

    /// Renders the claims for an entity at `now` (unix seconds). A missing metadata value
    /// renders as an empty string, as OpenBao does, or, with `missing_is_error`, refuses to
    /// render, naming the first variable without a value.
    pub fn render(
        &self,
        entity: &EntityContext,
        now: i64,
        missing_is_error: bool,
    ) -> Result<serde_json::Map<String, serde_json::Value>, TemplateError> {
        use serde_json::Value;
        if missing_is_error {
            for part in &self.parts {
                let missing = match part {
                    Part::Var(Variable::MetadataKey(k)) if !entity.metadata.contains_key(k) => {
                        Some(format!("identity.entity.metadata.{k}"))
                    }
                    Part::Var(Variable::AliasMetadata(k)) if !entity.alias_metadata.contains_key(k) => {
                        Some(format!("identity.entity.aliases.<mount>.metadata.{k}"))
                    }
                    _ => None,
                };
                if let Some(name) = missing {
                    return Err(TemplateError::MissingValue(name));
                }
            }
        }
        let text = |s: &str| Value::String(s.to_owned());
        let list = |v: &[String]| Value::Array(v.iter().map(|s| text(s)).collect());
        let value = fill(&self.parts, &|var| match var {
            Variable::EntityId => text(&entity.id),
            Variable::EntityName => text(&entity.name),
            Variable::Metadata => Value::Object(entity.metadata.iter().map(|(k, v)| (k.clone(), text(v))).collect()),
            Variable::MetadataKey(k) => text(entity.metadata.get(k).map(String::as_str).unwrap_or_default()),
            Variable::GroupIds => list(&entity.group_ids),
            Variable::GroupNames => list(&entity.group_names),
            Variable::AliasId => text(&entity.alias_id),
            Variable::AliasName => text(&entity.alias_name),
            Variable::AliasMetadata(k) => text(entity.alias_metadata.get(k).map(String::as_str).unwrap_or_default()),
            Variable::Now(shift) => Value::from(now.saturating_add(*shift)),
        })?;
        // Re-validated on every rendering, whatever parse proved.
        let Value::Object(map) = value else { return Err(TemplateError::NotAnObject) };
        if let Some(reserved) = map.keys().find(|k| RESERVED_CLAIMS.contains(&k.as_str())) {
            return Err(TemplateError::ReservedClaim(reserved.clone()));
        }
        if map.len() != self.claims.len() || map.keys().zip(&self.claims).any(|(a, b)| a != b) {
            return Err(TemplateError::ValueDependent("the rendered claims differ from the template's".into()));
        }
        Ok(map)
    }

    /// Top-level claim names the template sets, sorted.
    pub fn claim_names(&self) -> Vec<String> {
        self.claims.clone()
    }

    /// The template text after base64 decoding.
    pub fn source(&self) -> &str {
        &self.source
    }
}

/// The top-level claim names of a filled template (sorted), refusing reserved ones.
fn object_claims(value: serde_json::Value) -> Result<Vec<String>, TemplateError> {
    let serde_json::Value::Object(object) = value else { return Err(TemplateError::NotAnObject) };
    if let Some(reserved) = object.keys().find(|k| RESERVED_CLAIMS.contains(&k.as_str())) {
        return Err(TemplateError::ReservedClaim(reserved.clone()));
    }
    Ok(object.keys().cloned().collect())
}

/// Sample texts that parse must survive: JSON punctuation with a reserved claim's name and
/// a placeholder inside, the empty string, and bare brackets.
fn samples() -> [&'static str; 3] {
    [r#"x", "sub": "admin", "y": "{{time.now}}}:0,["#, "", "}{]["]
}

/// The sample value of a variable: strings carry `text`, lists two of them, metadata an
/// object whose key and value carry it, times a number.
fn sample_value(var: &Variable, text: &str) -> serde_json::Value {
    use serde_json::Value;
    match var {
        Variable::EntityId
        | Variable::EntityName
        | Variable::MetadataKey(_)
        | Variable::AliasId
        | Variable::AliasName
        | Variable::AliasMetadata(_) => Value::String(text.to_owned()),
        Variable::GroupIds | Variable::GroupNames => {
            Value::Array(vec![Value::String(text.to_owned()), Value::String(format!("{text}:0,"))])
        }
        Variable::Metadata => {
            Value::Object([(format!("{text}\"k"), Value::String(text.to_owned()))].into_iter().collect())
        }
        Variable::Now(shift) => Value::from(shift.saturating_mul(-1)),
    }
}

fn decode_base64_json(input: &str) -> Option<String> {
    let trimmed = input.trim();
    let bytes = base64::engine::general_purpose::STANDARD
        .decode(trimmed)
        .or_else(|_| base64::engine::general_purpose::STANDARD_NO_PAD.decode(trimmed))
        .ok()?;
    let text = String::from_utf8(bytes).ok()?;
    text.trim_start().starts_with('{').then_some(text)
}

/// Splits the template into literal text and variables, checking each placeholder.
fn split_parts(source: &str) -> Result<Vec<Part>, TemplateError> {
    let mut parts = Vec::new();
    let mut cursor = 0usize;
    while let Some(found) = source[cursor..].find("{{") {
        let start = cursor + found;
        parts.push(Part::Literal(source[cursor..start].to_owned()));
        let position = source[..start].chars().count();
        let body_start = start + 2;
        let end = source[body_start..].find("}}").ok_or(TemplateError::Unterminated { position })?;
        let name = source[body_start..body_start + end].trim();
        let var = variable(name).ok_or_else(|| TemplateError::UnknownVariable { name: name.to_owned(), position })?;
        parts.push(Part::Var(var));
        cursor = body_start + end + 2;
    }
    parts.push(Part::Literal(source[cursor..].to_owned()));
    Ok(parts)
}

/// Substitutes each variable by the JSON text of its value and parses the result.
fn fill(parts: &[Part], value_of: &dyn Fn(&Variable) -> serde_json::Value) -> Result<serde_json::Value, TemplateError> {
    let mut out = String::new();
    for part in parts {
        match part {
            Part::Literal(l) => out.push_str(l),
            Part::Var(v) => out.push_str(&value_of(v).to_string()),
        }
    }
    serde_json::from_str(&out).map_err(|e| TemplateError::Json {
        line: e.line(),
        column: e.column(),
        message: e.to_string().split(" at line").next().unwrap_or_default().to_owned(),
    })
}

/// OpenBao's template variables.
fn variable(name: &str) -> Option<Variable> {
    let Some(rest) = name.strip_prefix("identity.entity.") else {
        let shift = match name.strip_prefix("time.now")? {
            "" => 0,
            r => {
                let (sign, d) = match (r.strip_prefix(".plus."), r.strip_prefix(".minus.")) {
                    (Some(d), _) => (1, d),
                    (_, Some(d)) => (-1, d),
                    _ => return None,
                };
                sign * crate::api::Duration::parse(d).ok()?.as_secs_i64()
            }
        };
        return Some(Variable::Now(shift));
    };
    let nonempty = |k: &str| (!k.is_empty()).then(|| k.to_owned());
    Some(match rest {
        "id" => Variable::EntityId,
        "name" => Variable::EntityName,
        "metadata" => Variable::Metadata,
        "groups.ids" => Variable::GroupIds,
        "groups.names" => Variable::GroupNames,
        _ => {
            if let Some(k) = rest.strip_prefix("metadata.") {
                return nonempty(k).map(Variable::MetadataKey);
            }
            let (mount, field) = rest.strip_prefix("aliases.")?.split_once('.')?;
            if mount.is_empty() {
                return None;
            }
            match field {
                "id" => Variable::AliasId,
                "name" => Variable::AliasName,
                _ => Variable::AliasMetadata(nonempty(field.strip_prefix("metadata.")?)?),
            }
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reference_sample_parses() {
        let t = Template::parse(r#"{ "groups": {{identity.entity.groups.names}} }"#).unwrap();
        assert_eq!(t.claim_names(), vec!["groups"]);
    }

    #[test]
    fn base64_input_is_decoded() {
        let b64 = base64::engine::general_purpose::STANDARD.encode(r#"{"name": {{identity.entity.name}}}"#);
        let t = Template::parse(&b64).unwrap();
        assert_eq!(t.claim_names(), vec!["name"]);
    }

    #[test]
    fn every_variable_is_known() {
        for v in [
            "identity.entity.id",
            "identity.entity.name",
            "identity.entity.metadata",
            "identity.entity.metadata.team",
            "identity.entity.groups.ids",
            "identity.entity.groups.names",
            "identity.entity.aliases.k8s.id",
            "identity.entity.aliases.k8s.name",
            "identity.entity.aliases.k8s.metadata.ns",
            "time.now",
            "time.now.plus.1h",
            "time.now.minus.30m",
        ] {
            assert!(Template::parse(&format!("{{\"c\": {{{{{v}}}}}}}")).is_ok(), "{v}");
        }
    }

    #[test]
    fn errors_name_the_problem_and_position() {
        assert_eq!(
            Template::parse(r#"{"a": {{identity.entity.bogus}}}"#).unwrap_err(),
            TemplateError::UnknownVariable { name: "identity.entity.bogus".into(), position: 6 }
        );
        assert_eq!(Template::parse(r#"{"a": {{time.now"#).unwrap_err(), TemplateError::Unterminated { position: 6 });
        assert!(matches!(Template::parse(r#"{"a": 1"#).unwrap_err(), TemplateError::Json { line: 1, .. }));
        assert_eq!(Template::parse("[1]").unwrap_err(), TemplateError::NotAnObject);
        assert_eq!(Template::parse(r#"{"sub": "x"}"#).unwrap_err(), TemplateError::ReservedClaim("sub".into()));
    }

    fn entity() -> EntityContext {
        EntityContext {
            id: "e-1".into(),
            name: "runner".into(),
            metadata: [("team".to_owned(), "payments".to_owned())].into(),
            group_ids: vec!["g-1".into()],
            group_names: vec!["platform".into()],
            alias_id: "a-1".into(),
            alias_name: "system:serviceaccount:ci:runner".into(),
            alias_metadata: [("namespace".to_owned(), "ci".to_owned())].into(),
        }
    }

    #[test]
    fn renders_every_variable() {
        let t = Template::parse(
            r#"{"id": {{identity.entity.id}}, "name": {{identity.entity.name}}, "md": {{identity.entity.metadata}},
                "team": {{identity.entity.metadata.team}}, "missing": {{identity.entity.metadata.nope}},
                "gids": {{identity.entity.groups.ids}}, "groups": {{identity.entity.groups.names}},
                "alias": {"id": {{identity.entity.aliases.kubernetes.id}}, "sub": {{identity.entity.aliases.any.name}},
                          "ns": {{identity.entity.aliases.kubernetes.metadata.namespace}}},
                "now": {{time.now}}, "later": {{time.now.plus.1h}}, "before": {{ time.now.minus.90s }}}"#,
        )
        .unwrap();
        let claims = serde_json::Value::Object(t.render(&entity(), 1000, false).unwrap());
        assert_eq!(
            claims,
            serde_json::json!({"id": "e-1", "name": "runner", "md": {"team": "payments"}, "team": "payments",
                "missing": "", "gids": ["g-1"], "groups": ["platform"],
                "alias": {"id": "a-1", "sub": "system:serviceaccount:ci:runner", "ns": "ci"},
                "now": 1000, "later": 4600, "before": 910})
        );
        // A scope that says a missing value is an error names it instead.
        assert_eq!(
            t.render(&entity(), 1000, true),
            Err(TemplateError::MissingValue("identity.entity.metadata.nope".into()))
        );
        let alias = Template::parse(r#"{"ns": {{identity.entity.aliases.k8s.metadata.zone}}}"#).unwrap();
        assert!(
            matches!(alias.render(&entity(), 0, true), Err(TemplateError::MissingValue(v)) if v.ends_with(".zone"))
        );
        assert!(alias.render(&entity(), 0, false).is_ok());
    }

    #[test]
    fn values_are_json_escaped() {
        let mut e = entity();
        e.name = "quote\" \\ }}{{ end".into();
        let t = Template::parse(r#"{"n": {{identity.entity.name}}}"#).unwrap();
        assert_eq!(t.render(&e, 0, false).unwrap()["n"], serde_json::json!(e.name));
    }

    /// A cheap stand-in for the fuzz target (fuzz/) inside the normal test run: thousands of
    /// deterministic mutations of valid templates must parse or fail, never panic.
    #[test]
    fn mutated_templates_never_panic() {
        let seeds = [
            r#"{ "groups": {{identity.entity.groups.names}} }"#,
            r#"{"a": {{time.now.plus.1h}}, "b": [{{identity.entity.aliases.k8s.metadata.ns}}, "é"]}"#,
            r#"{"m": {{identity.entity.metadata}}, "n": {"x": {{identity.entity.name}}}}"#,
        ];
        let alphabet: Vec<char> = "{}[]\":,. \\ab0-+1hms{{}}é\u{0}".chars().collect();
        let mut mutator = crate::mutation::Mutator::default();
        let mut hostile = entity();
        hostile.name = r#"a", "sub": "root", "b": "{}"#.into();
        hostile.group_names = vec!["}:0,{".into(), "\\\"".into()];
        let mut parsed = 0;
        for i in 0..20_000 {
            let text = mutator.mutate(seeds[i % seeds.len()], &alphabet);
            if let Ok(t) = Template::parse(&text) {
                parsed += 1;
                // Whatever parses renders for any entity, with exactly its claims.
                let claims = t.render(&hostile, i64::MAX, false).unwrap_or_else(|e| panic!("{text}: {e}"));
                assert_eq!(claims.keys().cloned().collect::<Vec<_>>(), t.claim_names(), "{text}");
            }
        }
        assert!(parsed > 500, "the mutations must also produce valid templates ({parsed})");
    }

    #[test]
    fn placeholders_that_values_could_break_are_refused() {
        for bad in [
            r#"{"a": "{{identity.entity.name}}"}"#,
            r#"{"a": "pre-{{identity.entity.aliases.k8s.name}}"}"#,
            r#"{"k{{identity.entity.name}}": 1}"#,
            r#"{"k{{time.now}}": 1}"#,
            r#"{"a": ["{{identity.entity.groups.names}}"]}"#,
            r#"{"a": "\{{identity.entity.id}}"}"#,
        ] {
            assert!(matches!(Template::parse(bad), Err(TemplateError::ValueDependent(_))), "{bad}");
        }
        for reserved in ["azp", "nbf", "jti", "acr", "amr", "sid"] {
            let t = format!("{{\"{reserved}\": {{{{identity.entity.id}}}}}}");
            assert_eq!(Template::parse(&t), Err(TemplateError::ReservedClaim(reserved.into())));
        }
        // A time inside a string is always a number's text: allowed.
        let t = Template::parse(r#"{"at": "t{{time.now}}"}"#).unwrap();
        assert_eq!(t.render(&entity(), 5, false).unwrap()["at"], "t5");
    }

    #[test]
    fn never_panics_on_odd_input() {
        for s in ["", "{{", "}}", "{{}}", "{\"a\":{{ }}}", "\u{1F600}{{time.now.plus.}}", "{\"é\": {{time.now}}}"] {
            let _ = Template::parse(s);
        }
    }
}
