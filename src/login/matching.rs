//! Subject, claim and audience matching as Infisical's OIDC auth does it.
//!
//! A bound value is a glob: `*` matches any run of characters (including none), `?` exactly
//! one; everything else matches itself. A bound claim may list several globs separated by
//! commas, of which one must match; a claim that is an array matches when any element does.

use serde_json::Value;

/// Whether `text` matches the glob `pattern`. Linear time: no backtracking blow-up on
/// patterns such as `*a*a*a*b`.
pub fn glob_match(pattern: &str, text: &str) -> bool {
    let p: Vec<char> = pattern.chars().collect();
    let t: Vec<char> = text.chars().collect();
    let (mut pi, mut ti) = (0usize, 0usize);
    let mut star: Option<(usize, usize)> = None;
    while ti < t.len() {
        if pi < p.len() && (p[pi] == '?' || p[pi] == t[ti]) && p[pi] != '*' {
            pi += 1;
            ti += 1;
        } else if pi < p.len() && p[pi] == '*' {
            star = Some((pi, ti));
            pi += 1;
        } else if let Some((sp, st)) = star {
            pi = sp + 1;
            ti = st + 1;
            star = Some((sp, st + 1));
        } else {
            return false;
        }
    }
    p[pi..].iter().all(|c| *c == '*')
}

/// Splits a comma-separated list, trimming spaces and dropping empty entries.
pub fn split_list(list: &str) -> Vec<&str> {
    list.split(',').map(str::trim).filter(|s| !s.is_empty()).collect()
}

/// Whether any glob of the comma-separated `bound` matches `value`.
pub fn any_glob_matches(bound: &str, value: &str) -> bool {
    split_list(bound).into_iter().any(|g| glob_match(g, value))
}

/// The string forms of a claim: a string, a number or boolean as written, or each element of
/// an array. Objects match nothing.
pub fn claim_strings(claim: &Value) -> Vec<String> {
    match claim {
        Value::String(s) => vec![s.clone()],
        Value::Number(n) => vec![n.to_string()],
        Value::Bool(b) => vec![b.to_string()],
        Value::Array(items) => items.iter().flat_map(claim_strings).collect(),
        _ => Vec::new(),
    }
}

/// Whether a bound claim is satisfied by the token's claim (absent claims never match).
pub fn claim_matches(bound: &str, claim: Option<&Value>) -> bool {
    claim.map(claim_strings).unwrap_or_default().iter().any(|v| any_glob_matches(bound, v))
}

/// Looks a claim up by name, or by a dotted path into nested objects
/// (`kubernetes.io.namespace` finds `{"kubernetes.io": {"namespace": ...}}`).
pub fn lookup_claim<'a>(claims: &'a Value, name: &str) -> Option<&'a Value> {
    if let Some(v) = claims.get(name) {
        return Some(v);
    }
    // Try every split point so keys that themselves contain dots are found.
    let bytes: Vec<usize> = name.match_indices('.').map(|(i, _)| i).collect();
    bytes.into_iter().find_map(|i| lookup_claim(claims.get(&name[..i])?, &name[i + 1..]))
}

/// Whether the token's `aud` (a string or an array) intersects the comma-separated
/// `bound_audiences`. Only an explicit `"*"` accepts any audience: an empty bound accepts
/// none (the directory reports such an identity `AudienceRequired` and never serves it).
/// The `boundAudiences` entry that accepts any audience, said explicitly (RFC 8725 §3.9).
pub const ANY_AUDIENCE: &str = "*";

/// Whether a `boundAudiences` value binds at least one audience (or says `"*"`).
pub fn audiences_bound(bound_audiences: &str) -> bool {
    !split_list(bound_audiences).is_empty()
}

pub fn audience_matches(bound_audiences: &str, aud: Option<&Value>) -> bool {
    let wanted = split_list(bound_audiences);
    if wanted.contains(&ANY_AUDIENCE) {
        return true;
    }
    let have = aud.map(claim_strings).unwrap_or_default();
    have.iter().any(|a| wanted.contains(&a.as_str()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn globs() {
        assert!(glob_match("system:serviceaccount:ci:*", "system:serviceaccount:ci:runner"));
        assert!(!glob_match("system:serviceaccount:ci:*", "system:serviceaccount:prod:runner"));
        assert!(glob_match("repo:org/*:ref:refs/heads/main", "repo:org/app:ref:refs/heads/main"));
        assert!(glob_match("a?c", "abc") && !glob_match("a?c", "ac"));
        assert!(glob_match("*", "") && glob_match("", "") && !glob_match("", "x"));
        assert!(glob_match("exact", "exact") && !glob_match("exact", "exactly"));
        assert!(glob_match("*a*a*a*b", &format!("{}b", "a".repeat(40))));
        assert!(!glob_match("*a*a*a*b", &"a".repeat(5000)), "fails fast");
        assert!(glob_match("é*", "été"));
    }

    #[test]
    fn lists_and_claims() {
        assert!(any_glob_matches(" main , release-* ", "release-1"));
        assert!(!any_glob_matches("main,release-*", "dev"));
        assert!(!any_glob_matches("", "anything"));
        assert!(claim_matches("admin,ops", Some(&json!(["dev", "ops"]))));
        assert!(!claim_matches("admin", Some(&json!(["dev", "ops"]))));
        assert!(claim_matches("42", Some(&json!(42))));
        assert!(claim_matches("true", Some(&json!(true))));
        assert!(!claim_matches("*", None), "an absent claim never matches");
        assert!(!claim_matches("*", Some(&json!({"a": 1}))));
    }

    #[test]
    fn nested_claims() {
        let c = json!({"kubernetes.io": {"namespace": "ci", "serviceaccount": {"name": "runner"}}, "a.b": 1});
        assert_eq!(lookup_claim(&c, "kubernetes.io.namespace"), Some(&json!("ci")));
        assert_eq!(lookup_claim(&c, "kubernetes.io.serviceaccount.name"), Some(&json!("runner")));
        assert_eq!(lookup_claim(&c, "a.b"), Some(&json!(1)));
        assert_eq!(lookup_claim(&c, "kubernetes.io.missing"), None);
    }

    #[test]
    fn audiences() {
        assert!(!audience_matches("", Some(&json!("api"))), "an empty bound admits nothing");
        assert!(!audiences_bound(" , ") && audiences_bound("*") && audiences_bound("api"));
        assert!(audience_matches("*", Some(&json!("anything"))) && audience_matches("api, *", None));
        assert!(audience_matches("api, other", Some(&json!("other"))));
        assert!(audience_matches("api,other", Some(&json!(["x", "api"]))));
        assert!(!audience_matches("api", Some(&json!(["x"]))));
        assert!(!audience_matches("api", None));
        assert!(!audience_matches("api", Some(&json!("ap"))), "exact, not glob or prefix");
    }
}
