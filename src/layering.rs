//! The layering rule of the functional core (issue 22): nothing below the shells imports
//! them. The shells (`server`, `standalone`, `controller`) do the I/O and may use any module;
//! every other module of the crate sits below them and must not name a shell, or a change in
//! how the operator serves or runs would ripple into the core it is built on.

use std::path::{Path, PathBuf};

/// The shells: the only modules allowed to import each other (and everything else).
const SHELLS: [&str; 3] = ["server", "standalone", "controller"];

/// Which shells `source` names through a `crate::` path: `crate::server::x`, or a grouped
/// `use crate::{api, server::y}`. Comments count too: a doc link to a shell is a dependency.
fn shells_named(source: &str) -> Vec<&'static str> {
    let mut found = Vec::new();
    let mut rest = source;
    while let Some(at) = rest.find("crate::") {
        rest = &rest[at + "crate::".len()..];
        let heads: Vec<&str> = match rest.strip_prefix('{') {
            Some(group) => top_level_items(group).into_iter().map(first_segment).collect(),
            None => vec![first_segment(rest)],
        };
        for shell in SHELLS {
            if heads.contains(&shell) && !found.contains(&shell) {
                found.push(shell);
            }
        }
    }
    found
}

/// The items of a `{...}` group (the text after its `{`), split at top-level commas.
fn top_level_items(group: &str) -> Vec<&str> {
    let (mut depth, mut start, mut items) = (0usize, 0usize, Vec::new());
    for (i, c) in group.char_indices() {
        match c {
            '{' => depth += 1,
            '}' if depth == 0 => {
                items.push(&group[start..i]);
                return items;
            }
            '}' => depth -= 1,
            ',' if depth == 0 => {
                items.push(&group[start..i]);
                start = i + 1;
            }
            _ => {}
        }
    }
    items
}

/// The first path segment of `path` (`server` of ` server::tls::CaPem`).
fn first_segment(path: &str) -> &str {
    let path = path.trim_start();
    let end = path.find(|c: char| !(c.is_alphanumeric() || c == '_')).unwrap_or(path.len());
    &path[..end]
}

/// Every `.rs` file under `path` (or `path` itself).
fn rust_files(path: &Path, out: &mut Vec<PathBuf>) {
    if path.is_dir() {
        for entry in std::fs::read_dir(path).unwrap() {
            rust_files(&entry.unwrap().path(), out);
        }
    } else if path.extension().is_some_and(|e| e == "rs") {
        out.push(path.to_owned());
    }
}

#[test]
fn nothing_below_the_shells_imports_them() {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut checked = std::collections::BTreeSet::new();
    let mut offenders = Vec::new();
    for entry in std::fs::read_dir(&src).unwrap() {
        let path = entry.unwrap().path();
        let module = path.file_stem().unwrap().to_string_lossy().into_owned();
        // This file names the shells to look for them.
        if SHELLS.contains(&module.as_str()) || ["main", "lib", "layering"].contains(&module.as_str()) {
            continue;
        }
        let mut files = Vec::new();
        rust_files(&path, &mut files);
        for file in files {
            let text = std::fs::read_to_string(&file).unwrap();
            for shell in shells_named(&text) {
                offenders.push(format!("{} imports crate::{shell}", file.strip_prefix(&src).unwrap().display()));
            }
            checked.insert(module.clone());
        }
    }
    assert!(offenders.is_empty(), "modules below the shells import them:\n{}", offenders.join("\n"));
    // The modules the issue names, and the ones made to hold what they used to import.
    for module in ["sessions", "oidc", "login", "directory", "keys", "metrics", "clock", "files"] {
        assert!(checked.contains(module), "src/{module} was not checked: {checked:?}");
    }
}

#[test]
fn the_check_sees_every_form_of_import() {
    assert_eq!(shells_named("use crate::server::metrics::Metrics;"), ["server"]);
    assert_eq!(shells_named("let t = crate::server::unix_now();"), ["server"]);
    assert_eq!(shells_named("use crate::{api::Kind, standalone::state::X};"), ["standalone"]);
    assert_eq!(shells_named("use crate::{\n    controller,\n    keys::{a, b},\n};"), ["controller"]);
    assert_eq!(shells_named("/// See [`crate::server::conn`]."), ["server"]);
    assert!(shells_named("use crate::{keys::{server, b}, serverless};").is_empty());
    assert!(shells_named("use crate::metrics::Metrics; // the server renders them").is_empty());
}
