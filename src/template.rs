//! Scope templates (OpenBao syntax): JSON with `{{identity.entity...}}` / `{{time.now...}}`
//! placeholders, given as escaped JSON or base64 JSON.
//!
//! This module checks a template's shape (placeholders known, JSON well formed once filled,
//! an object, no reserved claims) and lists the claims it sets. Rendering against an entity
//! arrives with the authorize/token protocol.

use base64::Engine;

/// Claims a template may not set: the ID token's own (OpenBao's reserved list).
pub const RESERVED_CLAIMS: [&str; 10] =
    ["iat", "aud", "exp", "iss", "sub", "namespace", "nonce", "auth_time", "at_hash", "c_hash"];

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
}

/// A parsed scope template.
#[derive(Debug, Clone, PartialEq)]
pub struct Template {
    source: String,
    claims: Vec<String>,
}

impl Template {
    /// Parses a template given as escaped JSON or as base64-encoded JSON.
    pub fn parse(input: &str) -> Result<Self, TemplateError> {
        let source = decode_base64_json(input).unwrap_or_else(|| input.to_owned());
        let filled = fill_placeholders(&source)?;
        let value: serde_json::Value = serde_json::from_str(&filled).map_err(|e| TemplateError::Json {
            line: e.line(),
            column: e.column(),
            message: e.to_string().split(" at line").next().unwrap_or_default().to_owned(),
        })?;
        let object = value.as_object().ok_or(TemplateError::NotAnObject)?;
        if let Some(reserved) = object.keys().find(|k| RESERVED_CLAIMS.contains(&k.as_str())) {
            return Err(TemplateError::ReservedClaim(reserved.clone()));
        }
        Ok(Self { source, claims: object.keys().cloned().collect() })
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

fn decode_base64_json(input: &str) -> Option<String> {
    let trimmed = input.trim();
    let bytes = base64::engine::general_purpose::STANDARD
        .decode(trimmed)
        .or_else(|_| base64::engine::general_purpose::STANDARD_NO_PAD.decode(trimmed))
        .ok()?;
    let text = String::from_utf8(bytes).ok()?;
    text.trim_start().starts_with('{').then_some(text)
}

/// Replaces each placeholder by `null`, checking that it names a known variable.
fn fill_placeholders(source: &str) -> Result<String, TemplateError> {
    let mut out = String::with_capacity(source.len());
    let mut cursor = 0usize;
    while let Some(found) = source[cursor..].find("{{") {
        let start = cursor + found;
        out.push_str(&source[cursor..start]);
        let position = source[..start].chars().count();
        let body_start = start + 2;
        let end = source[body_start..].find("}}").ok_or(TemplateError::Unterminated { position })?;
        let name = source[body_start..body_start + end].trim();
        if !is_known_variable(name) {
            return Err(TemplateError::UnknownVariable { name: name.to_owned(), position });
        }
        out.push_str("null");
        cursor = body_start + end + 2;
    }
    out.push_str(&source[cursor..]);
    Ok(out)
}

/// OpenBao's template variables.
fn is_known_variable(name: &str) -> bool {
    let Some(rest) = name.strip_prefix("identity.entity.") else {
        return match name.strip_prefix("time.now") {
            Some("") => true,
            Some(r) => r
                .strip_prefix(".plus.")
                .or_else(|| r.strip_prefix(".minus."))
                .is_some_and(|d| crate::api::Duration::parse(d).is_ok()),
            None => false,
        };
    };
    match rest {
        "id" | "name" | "metadata" | "groups.ids" | "groups.names" => true,
        _ if rest.strip_prefix("metadata.").is_some_and(|k| !k.is_empty()) => true,
        _ => rest.strip_prefix("aliases.").is_some_and(|alias| match alias.split_once('.') {
            Some((mount, field)) if !mount.is_empty() => {
                matches!(field, "id" | "name") || field.strip_prefix("metadata.").is_some_and(|k| !k.is_empty())
            }
            _ => false,
        }),
    }
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

    #[test]
    fn never_panics_on_odd_input() {
        for s in ["", "{{", "}}", "{{}}", "{\"a\":{{ }}}", "\u{1F600}{{time.now.plus.}}", "{\"é\": {{time.now}}}"] {
            let _ = Template::parse(s);
        }
    }
}
