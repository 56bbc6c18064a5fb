//! Subject, claim and audience matching as Infisical's OIDC auth does it.
//!
//! A bound value is a glob: `*` matches any run of characters (including none), `?` exactly
//! one; everything else matches itself. A bound claim may list several globs separated by
//! commas, of which one must match; a claim that is an array matches when any element does.
//!
//! The identity's owner writes the globs and the caller writes the claims, so the work of a
//! login is bounded on both sides: each glob is matched in time linear in the text
//! ([`glob_match`]), and at most [`MatchLimits::max_globs`] globs per list and
//! [`MatchLimits::max_claim_elements`] elements per claim are examined; past either the
//! login is refused ([`Oversized`]) rather than matched in part.

use std::collections::HashMap;

use serde_json::Value;

/// Globs per bound list examined by default (`--max-bound-globs`).
pub const DEFAULT_MAX_GLOBS: usize = 256;
/// Elements of one claim examined by default (`--max-claim-elements`).
pub const DEFAULT_MAX_CLAIM_ELEMENTS: usize = 256;
/// Object lookups one dotted claim name may cost: a name with many dots into claims whose
/// keys themselves hold dots could otherwise try exponentially many split points.
const MAX_LOOKUP_STEPS: usize = 256;

/// How much matching one login may do.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct MatchLimits {
    /// Globs of one comma-separated bound list (`boundAudiences`, one `boundClaims` value).
    pub max_globs: usize,
    /// Elements of one claim (a nested array counts every leaf).
    pub max_claim_elements: usize,
}

impl Default for MatchLimits {
    fn default() -> Self {
        Self { max_globs: DEFAULT_MAX_GLOBS, max_claim_elements: DEFAULT_MAX_CLAIM_ELEMENTS }
    }
}

/// Which side of a match was over its cap, and the cap.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Oversized {
    Globs { max: usize },
    Elements { max: usize },
}

/// Whether `text` matches the glob `pattern` (see [`Glob`] and [`literal_glob_match`]).
pub fn glob_match(pattern: &str, text: &str) -> bool {
    if !pattern.contains('?') {
        return literal_glob_match(pattern, text);
    }
    let text: Vec<char> = text.chars().collect();
    Glob::new(pattern).matches(&text)
}

/// [`glob_match`] for a pattern without `?` (most are): its pieces between `*`s are plain
/// text, found with the standard library's substring search (Two-Way: linear, no
/// backtracking) on the UTF-8 bytes, where a match of a whole piece always falls on character
/// boundaries. The first piece must start the text, the last end it, each between is taken
/// at its leftmost place after the one before.
pub fn literal_glob_match(pattern: &str, text: &str) -> bool {
    LiteralGlob::new(pattern).matches(text)
}

/// A glob without `?`, cut at its `*`s once to match many texts.
struct LiteralGlob<'a> {
    head: &'a str,
    /// `None` without any `*`: the head is then the whole pattern.
    tail: Option<&'a str>,
    middle: Vec<&'a str>,
    /// The shortest text that can match: every piece's length.
    min_len: usize,
}

impl<'a> LiteralGlob<'a> {
    fn new(pattern: &'a str) -> Self {
        let mut pieces = pattern.split('*');
        let head = pieces.next().unwrap_or_default();
        let mut middle: Vec<&str> = pieces.collect();
        let tail = middle.pop();
        middle.retain(|p| !p.is_empty());
        let min_len = head.len() + tail.map_or(0, str::len) + middle.iter().map(|p| p.len()).sum::<usize>();
        Self { head, tail, middle, min_len }
    }

    fn matches(&self, text: &str) -> bool {
        let Some(tail) = self.tail else { return self.head == text };
        if self.min_len > text.len() || !text.starts_with(self.head) || !text.ends_with(tail) {
            return false;
        }
        let mut window = &text[self.head.len()..text.len() - tail.len()];
        for piece in &self.middle {
            if window.len() < piece.len() {
                return false;
            }
            match window.find(piece) {
                Some(at) => window = &window[at + piece.len()..],
                None => return false,
            }
        }
        true
    }
}

/// A glob made ready to match many texts in linear time.
///
/// The pattern is cut at its `*`s: the first piece must start the text, the last must end
/// it, and each piece between is found at its leftmost place after the one before (leftmost
/// is always right for `*` globs), by a bit-parallel search that reads each character of the
/// text once. Cost O(|text| x ceil(piece/64)) per match, with no backtracking whatever the
/// pattern (`*a*a*a*b` against `aaaa...` included); a piece costs one machine word per 64
/// characters.
pub struct Glob {
    head: Vec<char>,
    /// `None` without any `*`: the head is then the whole pattern.
    tail: Option<Vec<char>>,
    middle: Vec<Piece>,
}

/// A piece between two `*`s, as Shift-And masks.
struct Piece {
    len: usize,
    /// Per character of the piece: the positions it (or a `?`) holds.
    masks: HashMap<char, Vec<u64>>,
    /// The positions of `?`: what any other character matches.
    any: Vec<u64>,
}

impl Glob {
    pub fn new(pattern: &str) -> Self {
        let mut pieces = pattern.split('*');
        let head = pieces.next().unwrap_or_default().chars().collect();
        let mut rest: Vec<&str> = pieces.collect();
        let tail = rest.pop().map(|t| t.chars().collect());
        let middle = rest.into_iter().filter(|p| !p.is_empty()).map(Piece::new).collect();
        Self { head, tail, middle }
    }

    pub fn matches(&self, text: &[char]) -> bool {
        let Some(tail) = &self.tail else { return fits(&self.head, text) };
        if self.head.len() + tail.len() > text.len() {
            return false;
        }
        let (start, end) = (self.head.len(), text.len() - tail.len());
        if !fits(&self.head, &text[..start]) || !fits(tail, &text[end..]) {
            return false;
        }
        let mut window = &text[start..end];
        for piece in &self.middle {
            match piece.find(window) {
                Some(after) => window = &window[after..],
                None => return false,
            }
        }
        true
    }
}

/// Whether `piece` (with `?` for any one character) matches all of `text`.
fn fits(piece: &[char], text: &[char]) -> bool {
    piece.len() == text.len() && piece.iter().zip(text).all(|(p, c)| *p == '?' || p == c)
}

impl Piece {
    fn new(piece: &str) -> Self {
        let chars: Vec<char> = piece.chars().collect();
        let words = chars.len().div_ceil(64);
        let mut any = vec![0u64; words];
        for (i, _) in chars.iter().enumerate().filter(|(_, c)| **c == '?') {
            any[i / 64] |= 1 << (i % 64);
        }
        let mut masks: HashMap<char, Vec<u64>> = HashMap::new();
        for (i, c) in chars.iter().enumerate().filter(|(_, c)| **c != '?') {
            masks.entry(*c).or_insert_with(|| any.clone())[i / 64] |= 1 << (i % 64);
        }
        Self { len: chars.len(), masks, any }
    }

    /// The end of the leftmost occurrence of the piece in `text` (Shift-And: one pass).
    fn find(&self, text: &[char]) -> Option<usize> {
        let last = self.len.checked_sub(1)?;
        if text.len() < self.len {
            return None;
        }
        let mask = |c: &char| self.masks.get(c).unwrap_or(&self.any);
        if self.any.len() == 1 {
            // One word: no allocation (the common case, pieces up to 64 characters).
            let mut state = 0u64;
            for (j, c) in text.iter().enumerate() {
                state = ((state << 1) | 1) & mask(c)[0];
                if (state >> last) & 1 == 1 {
                    return Some(j + 1);
                }
            }
            return None;
        }
        let mut state = vec![0u64; self.any.len()];
        for (j, c) in text.iter().enumerate() {
            let mut carry = 1u64;
            for (s, m) in state.iter_mut().zip(mask(c)) {
                let out = *s >> 63;
                *s = ((*s << 1) | carry) & m;
                carry = out;
            }
            if (state[last / 64] >> (last % 64)) & 1 == 1 {
                return Some(j + 1);
            }
        }
        None
    }
}

/// Splits a comma-separated list, trimming spaces and dropping empty entries.
pub fn split_list(list: &str) -> Vec<&str> {
    list.split(',').map(str::trim).filter(|s| !s.is_empty()).collect()
}

/// The globs of a bound list, refused past `max`.
fn bounded_list(list: &str, max: usize) -> Result<Vec<&str>, Oversized> {
    let globs = split_list(list);
    if globs.len() > max {
        return Err(Oversized::Globs { max });
    }
    Ok(globs)
}

/// Whether any glob of the comma-separated `bound` matches `value`.
pub fn any_glob_matches(bound: &str, value: &str) -> bool {
    split_list(bound).into_iter().any(|g| glob_match(g, value))
}

/// Number of leaves of a claim (an array counts its elements, nested arrays theirs),
/// counting no further than `max + 1`.
fn leaves(claim: &Value, max: usize) -> usize {
    fn count(v: &Value, n: &mut usize, max: usize) {
        match v {
            Value::Array(items) => {
                for item in items {
                    if *n > max {
                        return;
                    }
                    count(item, n, max);
                }
            }
            _ => *n += 1,
        }
    }
    let mut n = 0;
    count(claim, &mut n, max);
    n
}

/// Calls `f` with the string form of each leaf of a claim (a string, a number or boolean as
/// written; objects and nulls have none) until it returns true.
fn any_leaf(claim: &Value, f: &mut impl FnMut(&str) -> bool) -> bool {
    match claim {
        Value::String(s) => f(s),
        Value::Number(n) => f(&n.to_string()),
        Value::Bool(b) => f(if *b { "true" } else { "false" }),
        Value::Array(items) => items.iter().any(|i| any_leaf(i, f)),
        _ => false,
    }
}

/// The string forms of a claim: a string, a number or boolean as written, or each element of
/// an array. Objects match nothing.
pub fn claim_strings(claim: &Value) -> Vec<String> {
    let mut out = Vec::new();
    any_leaf(claim, &mut |s| {
        out.push(s.to_owned());
        false
    });
    out
}

/// Whether a bound claim is satisfied by the token's claim (absent claims never match), or
/// which side is over `limits`.
pub fn claim_matches(bound: &str, claim: Option<&Value>, limits: &MatchLimits) -> Result<bool, Oversized> {
    let globs = bounded_list(bound, limits.max_globs)?;
    let Some(claim) = claim else { return Ok(false) };
    if leaves(claim, limits.max_claim_elements) > limits.max_claim_elements {
        return Err(Oversized::Elements { max: limits.max_claim_elements });
    }
    // Globs with `?` are made ready once, and each leaf read into characters once for them.
    let (literal, wild): (Vec<&str>, Vec<&str>) = globs.into_iter().partition(|g| !g.contains('?'));
    let literal: Vec<LiteralGlob<'_>> = literal.into_iter().map(LiteralGlob::new).collect();
    let wild: Vec<Glob> = wild.into_iter().map(Glob::new).collect();
    let mut chars = Vec::new();
    Ok(any_leaf(claim, &mut |v| {
        if literal.iter().any(|g| g.matches(v)) {
            return true;
        }
        if wild.is_empty() {
            return false;
        }
        chars.clear();
        chars.extend(v.chars());
        wild.iter().any(|g| g.matches(&chars))
    }))
}

/// Looks a claim up by name, or by a dotted path into nested objects
/// (`kubernetes.io.namespace` finds `{"kubernetes.io": {"namespace": ...}}`), trying at most
/// [`MAX_LOOKUP_STEPS`] objects.
pub fn lookup_claim<'a>(claims: &'a Value, name: &str) -> Option<&'a Value> {
    let mut budget = MAX_LOOKUP_STEPS;
    lookup_within(claims, name, &mut budget)
}

fn lookup_within<'a>(claims: &'a Value, name: &str, budget: &mut usize) -> Option<&'a Value> {
    *budget = budget.checked_sub(1)?;
    if let Some(v) = claims.get(name) {
        return Some(v);
    }
    // Try every split point so keys that themselves contain dots are found.
    name.match_indices('.').find_map(|(i, _)| lookup_within(claims.get(&name[..i])?, &name[i + 1..], budget))
}

/// The `boundAudiences` entry that accepts any audience, said explicitly (RFC 8725 §3.9).
pub const ANY_AUDIENCE: &str = "*";

/// Whether a `boundAudiences` value binds at least one audience (or says `"*"`).
pub fn audiences_bound(bound_audiences: &str) -> bool {
    !split_list(bound_audiences).is_empty()
}

/// Whether the token's `aud` (a string or an array) intersects the comma-separated
/// `bound_audiences`. Only an explicit `"*"` accepts any audience: an empty bound accepts
/// none (the directory reports such an identity `AudienceRequired` and never serves it).
pub fn audience_matches(bound_audiences: &str, aud: Option<&Value>, limits: &MatchLimits) -> Result<bool, Oversized> {
    let wanted = bounded_list(bound_audiences, limits.max_globs)?;
    if wanted.contains(&ANY_AUDIENCE) {
        return Ok(true);
    }
    let Some(aud) = aud else { return Ok(false) };
    if leaves(aud, limits.max_claim_elements) > limits.max_claim_elements {
        return Err(Oversized::Elements { max: limits.max_claim_elements });
    }
    Ok(any_leaf(aud, &mut |a| wanted.contains(&a)))
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
        let l = MatchLimits::default();
        assert_eq!(claim_matches("admin,ops", Some(&json!(["dev", "ops"])), &l), Ok(true));
        assert_eq!(claim_matches("admin", Some(&json!(["dev", "ops"])), &l), Ok(false));
        assert_eq!(claim_matches("42", Some(&json!(42)), &l), Ok(true));
        assert_eq!(claim_matches("true", Some(&json!(true)), &l), Ok(true));
        assert_eq!(claim_matches("*", None, &l), Ok(false), "an absent claim never matches");
        assert_eq!(claim_matches("*", Some(&json!({"a": 1})), &l), Ok(false));
        assert_eq!(claim_matches("b", Some(&json!([["a"], [["b"]]])), &l), Ok(true), "nested arrays");
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
        let m = |bound: &str, aud: Option<&Value>| audience_matches(bound, aud, &MatchLimits::default()).unwrap();
        assert!(!m("", Some(&json!("api"))), "an empty bound admits nothing");
        assert!(!audiences_bound(" , ") && audiences_bound("*") && audiences_bound("api"));
        assert!(m("*", Some(&json!("anything"))) && m("api, *", None));
        assert!(m("api, other", Some(&json!("other"))));
        assert!(m("api,other", Some(&json!(["x", "api"]))));
        assert!(!m("api", Some(&json!(["x"]))));
        assert!(!m("api", None));
        assert!(!m("api", Some(&json!("ap"))), "exact, not glob or prefix");
    }

    /// The matcher before the linear one: backtracking to the last `*`, correct but
    /// O(pattern x text). The new one must agree with it everywhere.
    fn reference(pattern: &str, text: &str) -> bool {
        let (p, t): (Vec<char>, Vec<char>) = (pattern.chars().collect(), text.chars().collect());
        let (mut pi, mut ti, mut star) = (0usize, 0usize, None::<(usize, usize)>);
        while ti < t.len() {
            if pi < p.len() && p[pi] != '*' && (p[pi] == '?' || p[pi] == t[ti]) {
                (pi, ti) = (pi + 1, ti + 1);
            } else if pi < p.len() && p[pi] == '*' {
                star = Some((pi, ti));
                pi += 1;
            } else if let Some((sp, st)) = star {
                (pi, ti, star) = (sp + 1, st + 1, Some((sp, st + 1)));
            } else {
                return false;
            }
        }
        p[pi..].iter().all(|c| *c == '*')
    }

    #[test]
    fn the_linear_matcher_agrees_with_backtracking() {
        let mut mutator = crate::mutation::Mutator::default();
        let alphabet: Vec<char> = "ab*?é".chars().collect();
        let texts: Vec<char> = "abé".chars().collect();
        for _ in 0..200_000 {
            let pattern: String = (0..mutator.below(9)).map(|_| alphabet[mutator.below(alphabet.len())]).collect();
            let text: String = (0..mutator.below(12)).map(|_| texts[mutator.below(texts.len())]).collect();
            let expected = reference(&pattern, &text);
            assert_eq!(glob_match(&pattern, &text), expected, "{pattern:?} on {text:?}");
            let chars: Vec<char> = text.chars().collect();
            assert_eq!(Glob::new(&pattern).matches(&chars), expected, "shift-and: {pattern:?} on {text:?}");
        }
        // Pieces longer than one machine word.
        let long: String = "ab?".repeat(30);
        let text = format!("x{}y", "abc".repeat(30));
        assert!(glob_match(&format!("*{long}*"), &text) && reference(&format!("*{long}*"), &text));
        assert!(!glob_match(&format!("*{long}z*"), &text));
    }

    #[test]
    fn adversarial_globs_cost_linear_time() {
        // Backtracking costs |pattern| x |text| here: 4 000 x 16 000 steps per glob.
        let text = "a".repeat(16_000);
        let start = std::time::Instant::now();
        for pattern in [format!("*{}b*", "a".repeat(4000)), format!("*{}?b*", "a".repeat(4000))] {
            for _ in 0..10 {
                assert!(!glob_match(&pattern, &text));
                assert!(reference(&pattern, &text[..200]) == glob_match(&pattern, &text[..200]));
            }
        }
        assert!(start.elapsed() < std::time::Duration::from_millis(500), "{:?} for 20 matches", start.elapsed());
    }

    #[test]
    fn globs_and_elements_past_their_caps_are_refused() {
        let l = MatchLimits { max_globs: 3, max_claim_elements: 4 };
        assert_eq!(claim_matches("a,b,c", Some(&json!("c")), &l), Ok(true));
        assert_eq!(claim_matches("a,b,c,d", Some(&json!("c")), &l), Err(Oversized::Globs { max: 3 }));
        assert_eq!(claim_matches("x", Some(&json!(["a", "b", "c", "x"])), &l), Ok(true));
        let five = json!(["x", "b", "c", "d", "e"]);
        assert_eq!(claim_matches("x", Some(&five), &l), Err(Oversized::Elements { max: 4 }), "even when one matches");
        assert_eq!(
            claim_matches("x", Some(&json!([["a", "b"], ["c", ["d", "x"]]])), &l),
            Err(Oversized::Elements { max: 4 })
        );
        assert_eq!(audience_matches("a,b,c,d", Some(&json!("a")), &l), Err(Oversized::Globs { max: 3 }));
        assert_eq!(audience_matches("x", Some(&five), &l), Err(Oversized::Elements { max: 4 }));
        assert_eq!(audience_matches("*", Some(&five), &l), Ok(true), "any audience reads none");
    }
}
