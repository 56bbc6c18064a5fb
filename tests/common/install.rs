//! The install and operate tools of the end-to-end tier, installed once and cached by
//! `scripts/tools`: the real `helm`, a kstatus checker calling Flux's health library
//! (sigs.k8s.io/cli-utils `pkg/kstatus/status`), and Debian's `lua5.1` running Argo CD's
//! health script. A missing tool fails the test with the script's message.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::sync::OnceLock;

use serde_json::Value;

use super::cluster::ControlPlane;

/// The repository root.
pub fn root() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

/// The folder of the cached tools, installing them on first use.
pub fn tools() -> &'static Path {
    static BIN: OnceLock<PathBuf> = OnceLock::new();
    BIN.get_or_init(|| {
        let out = Command::new("bash")
            .arg(root().join("scripts/tools"))
            .stderr(Stdio::inherit())
            .output()
            .expect("running scripts/tools");
        assert!(out.status.success(), "helm, the kstatus checker or lua5.1 could not be installed; see above");
        PathBuf::from(String::from_utf8(out.stdout).unwrap().trim())
    })
}

fn text(out: &Output) -> String {
    format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr))
}

/// Runs `helm` against the control plane; fails the test with helm's output when it fails.
pub fn helm(cp: &ControlPlane, args: &[&str]) -> String {
    let out = helm_output(cp, args);
    assert!(out.status.success(), "helm {}: {}", args.join(" "), text(&out));
    String::from_utf8(out.stdout).unwrap()
}

/// Runs `helm` and returns its output whatever the outcome.
pub fn helm_output(cp: &ControlPlane, args: &[&str]) -> Output {
    let home = tempfile::tempdir().unwrap();
    Command::new(tools().join("helm"))
        .arg("--kubeconfig")
        .arg(&cp.kubeconfig)
        .args(args)
        // Helm's cache and config stay out of the user's home.
        .env("HELM_CACHE_HOME", home.path().join("cache"))
        .env("HELM_CONFIG_HOME", home.path().join("config"))
        .env("HELM_DATA_HOME", home.path().join("data"))
        .output()
        .expect("running helm")
}

/// `helm` with no cluster (`template`, `lint`, `version`), its output whatever the outcome.
pub fn helm_offline(args: &[&str]) -> Output {
    let home = tempfile::tempdir().unwrap();
    Command::new(tools().join("helm"))
        .args(args)
        .current_dir(root())
        .env("HELM_CACHE_HOME", home.path().join("cache"))
        .env("HELM_CONFIG_HOME", home.path().join("config"))
        .env("HELM_DATA_HOME", home.path().join("data"))
        .env("KUBECONFIG", home.path().join("no-kubeconfig"))
        .output()
        .expect("running helm")
}

/// The `n`th (from 0) ```sh block of README.md's section `## heading`, as written.
pub fn readme_block(heading: &str, n: usize) -> String {
    let readme = std::fs::read_to_string(root().join("README.md")).unwrap();
    let start = readme.find(&format!("\n## {heading}\n")).unwrap_or_else(|| panic!("no README section {heading:?}"));
    let section = &readme[start + 1..];
    let section = &section[..section[3..].find("\n## ").map_or(section.len(), |i| i + 3)];
    let blocks: Vec<&str> =
        section.split("```sh\n").skip(1).map(|b| b.split("\n```").next().unwrap_or_default()).collect();
    blocks.get(n).unwrap_or_else(|| panic!("README {heading:?} has no sh block {n}: {blocks:?}")).to_string()
}

/// Runs a README block as a user pastes it into a fresh shell in the repository: bash with
/// `-euo pipefail`, kubectl and helm talking to the control plane through `KUBECONFIG`.
pub fn run_block(cp: &ControlPlane, block: &str) -> Output {
    let home = tempfile::tempdir().unwrap();
    let path = format!("{}:{}", tools().display(), std::env::var("PATH").unwrap_or_default());
    Command::new("bash")
        .args(["-euo", "pipefail", "-c", block])
        .current_dir(root())
        .env("PATH", path)
        .env("KUBECONFIG", &cp.kubeconfig)
        .env("HELM_CACHE_HOME", home.path().join("cache"))
        .env("HELM_CONFIG_HOME", home.path().join("config"))
        .env("HELM_DATA_HOME", home.path().join("data"))
        .output()
        .expect("running bash")
}

/// `kubectl` reading `input` on stdin.
pub fn kubectl_stdin(cp: &ControlPlane, args: &[&str], input: &str) -> Output {
    let mut child = Command::new("kubectl")
        .arg("--kubeconfig")
        .arg(&cp.kubeconfig)
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("kubectl is required");
    child.stdin.take().unwrap().write_all(input.as_bytes()).unwrap();
    child.wait_with_output().unwrap()
}

/// The documents of a multi-document YAML stream, as JSON (empty documents dropped).
pub fn documents(yaml: &str) -> Vec<Value> {
    serde_yaml_ng::Deserializer::from_str(yaml)
        .filter_map(|d| serde::Deserialize::deserialize(d).ok())
        .filter(|v: &Value| !v.is_null())
        .collect()
}

/// The live object `what` in `ns` as JSON.
pub fn live(cp: &ControlPlane, ns: &str, what: &str) -> Value {
    let out = cp.kubectl(&["get", "-n", ns, what, "-o", "json"]);
    assert!(out.status.success(), "{}", text(&out));
    serde_json::from_slice(&out.stdout).unwrap()
}

/// kstatus of one object, as computed by the real library: (status, message).
pub fn kstatus(object: &Value) -> (String, String) {
    let mut child = Command::new(tools().join("kstatus"))
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("running the kstatus checker");
    child.stdin.take().unwrap().write_all(object.to_string().as_bytes()).unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(out.status.success(), "kstatus: {}", text(&out));
    let line = String::from_utf8(out.stdout).unwrap();
    let mut words = line.trim().splitn(3, ' ');
    let _name = words.next();
    (words.next().unwrap_or_default().to_owned(), words.next().unwrap_or_default().to_owned())
}

/// Argo CD's health of one object by `config/argocd/health.lua`, run by Lua 5.1 with the
/// object as the global `obj`, as Argo CD runs it: (status, message).
pub fn argo_health(object: &Value) -> (String, String) {
    let dir = tempfile::tempdir().unwrap();
    let driver = dir.path().join("driver.lua");
    let script = root().join("config/argocd/health.lua");
    std::fs::write(
        &driver,
        format!(
            "obj = {}\nlocal hs = dofile({})\nio.write(tostring(hs.status), \"\\n\", tostring(hs.message or \"\"))\n",
            lua_value(object),
            lua_string(&script.display().to_string())
        ),
    )
    .unwrap();
    let out = Command::new(tools().join("lua5.1")).arg(&driver).output().expect("running lua5.1");
    assert!(out.status.success(), "lua5.1: {}", text(&out));
    let out = String::from_utf8(out.stdout).unwrap();
    let (status, message) = out.split_once('\n').unwrap_or((&out, ""));
    (status.to_owned(), message.to_owned())
}

/// A JSON value as a Lua 5.1 table constructor, as Argo CD converts objects for gopher-lua:
/// objects become tables with string keys, arrays tables indexed from 1, null nil.
fn lua_value(v: &Value) -> String {
    match v {
        Value::Null => "nil".into(),
        Value::Bool(b) => b.to_string(),
        Value::Number(n) => n.to_string(),
        Value::String(s) => lua_string(s),
        Value::Array(items) => format!("{{{}}}", items.iter().map(lua_value).collect::<Vec<_>>().join(", ")),
        Value::Object(map) => format!(
            "{{{}}}",
            map.iter().map(|(k, v)| format!("[{}] = {}", lua_string(k), lua_value(v))).collect::<Vec<_>>().join(", ")
        ),
    }
}

/// A Lua string literal: every byte outside printable ASCII and `"`/`\` as a decimal escape.
fn lua_string(s: &str) -> String {
    let mut out = String::from("\"");
    for b in s.bytes() {
        match b {
            b'"' | b'\\' => out.push_str(&format!("\\{}", b as char)),
            0x20..=0x7e => out.push(b as char),
            _ => out.push_str(&format!("\\{b:03}")),
        }
    }
    out.push('"');
    out
}
