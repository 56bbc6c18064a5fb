//! The README's walkthroughs run as written (issue 21): every ```sh block of "Run it (no
//! cluster needed)" is marked `<!-- walkthrough: NAME [background] -->`, and this test runs
//! them in order, each in a fresh `bash -eu -o pipefail` with an empty environment (what pasting
//! into a new terminal gives), from a temporary folder holding a copy of `examples/`. Blocks
//! marked `background` are the README's long-running "terminals" (the servers); they run as
//! process groups that the test stops as Ctrl-C does. The README's ports (8443, 9464, 8900)
//! are rewritten to free ones, and a `cargo` shim first on PATH turns the README's
//! `cargo run -- ARGS` into the binary cargo built for this test, listening on those ports, so
//! nothing is rebuilt and the target folder's lock is never taken.

// Test helpers outside #[test] functions stop the test on a failed step.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::os::unix::process::CommandExt;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

const BIN: &str = env!("CARGO_BIN_EXE_oidc-operator");

/// The walkthrough blocks, in the order the README gives them; the test fails when one is
/// missing, renamed or moved, so a walkthrough cannot drop out of the test silently.
const EXPECTED: [(&str, bool); 9] = [
    ("standalone", true),
    ("served", false),
    ("dev-issuer", true),
    ("standalone-insecure", true),
    ("login", false),
    ("flow", false),
    ("services", false),
    ("exchange", false),
    ("no-secret", false),
];

/// The README's ports: the server's API and metrics listeners and the development issuer.
const README_PORTS: [&str; 3] = ["127.0.0.1:8443", "127.0.0.1:9464", "127.0.0.1:8900"];

/// The identity of `examples/`' `ci-runner`.
const IDENTITY_ID: &str = "7f3c1a52-9d4e-4b8a-a1f0-2c6e5d9b8a10";

#[derive(Debug)]
struct Block {
    name: String,
    background: bool,
    text: String,
}

/// The marked ```sh blocks of the README's section `section` (up to the next `## ` heading).
/// Refuses a ```sh block in that section without a marker, and a marker not followed by one.
fn walkthroughs(readme: &str, section: &str) -> Result<Vec<Block>, String> {
    let start = readme.find(section).ok_or_else(|| format!("README has no section {section:?}"))?;
    let rest = &readme[start + section.len()..];
    let body = &rest[..rest.find("\n## ").unwrap_or(rest.len())];
    let lines: Vec<&str> = body.lines().collect();
    let mut blocks = Vec::new();
    let mut i = 0;
    while i < lines.len() {
        let line = lines[i].trim();
        if let Some(marker) = line.strip_prefix("<!-- walkthrough:").and_then(|m| m.strip_suffix("-->")) {
            let mut words = marker.split_whitespace();
            let name = words.next().ok_or_else(|| format!("a walkthrough marker without a name: {line}"))?;
            let background = match words.next() {
                None => false,
                Some("background") => true,
                Some(other) => return Err(format!("walkthrough {name}: unknown attribute {other:?}")),
            };
            if lines.get(i + 1).map(|l| l.trim()) != Some("```sh") {
                return Err(format!("walkthrough {name}: the marker is not followed by a ```sh fence"));
            }
            let end = lines[i + 2..]
                .iter()
                .position(|l| l.trim() == "```")
                .ok_or_else(|| format!("walkthrough {name}: the fence is not closed"))?;
            let text = lines[i + 2..i + 2 + end].join("\n");
            blocks.push(Block { name: name.to_owned(), background, text });
            i += end + 3;
            continue;
        }
        if line == "```sh" {
            return Err(format!("an unmarked ```sh block in {section:?}: {:?}", lines.get(i + 1)));
        }
        i += 1;
    }
    Ok(blocks)
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

/// Polls `check` every 100 ms for at most `secs` seconds; whether it came to hold.
fn eventually(secs: u64, mut check: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + Duration::from_secs(secs);
    loop {
        if check() {
            return true;
        }
        if Instant::now() > deadline {
            return false;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// A plain-http GET on loopback: the status line, or None when nothing answers.
fn http_status(port: u16, path: &str) -> Option<String> {
    use std::io::{Read, Write};
    let mut s = std::net::TcpStream::connect(("127.0.0.1", port)).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(2))).ok()?;
    s.write_all(format!("GET {path} HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n").as_bytes()).ok()?;
    let mut answer = String::new();
    s.read_to_string(&mut answer).ok()?;
    answer.lines().next().map(str::to_owned)
}

/// The temporary folder the walkthrough runs in, with the README's ports mapped to free ones.
struct Walk {
    dir: tempfile::TempDir,
    ports: [u16; 3],
}

impl Walk {
    fn new() -> Walk {
        let dir = tempfile::tempdir().unwrap();
        let ports = [free_port(), free_port(), free_port()];
        let walk = Walk { dir, ports };
        // A copy of examples/, pointing at the development issuer's port.
        let examples = Path::new(env!("CARGO_MANIFEST_DIR")).join("examples");
        std::fs::create_dir(walk.path().join("examples")).unwrap();
        for entry in std::fs::read_dir(&examples).unwrap() {
            let entry = entry.unwrap();
            let text = std::fs::read_to_string(entry.path()).unwrap();
            std::fs::write(walk.path().join("examples").join(entry.file_name()), walk.localize(&text)).unwrap();
        }
        // `cargo run -- ARGS` as the README writes it: the built binary on the test's ports.
        let bin = walk.path().join("bin");
        std::fs::create_dir(&bin).unwrap();
        let shim = format!(
            r#"#!/bin/sh
# tests/readme.rs: the README's `cargo run -- ARGS`, as the binary built for this test.
if [ "$1" != run ] || [ "$2" != -- ]; then
  echo "tests/readme.rs cargo shim: only 'cargo run -- ...' is supported, not: cargo $*" >&2
  exit 2
fi
shift 2
case "$1" in
  standalone) exec "{BIN}" "$@" --listen 127.0.0.1:{api} --metrics-listen 127.0.0.1:{metrics} ;;
  dev-issuer) exec "{BIN}" "$@" --listen 127.0.0.1:{issuer} ;;
  *) exec "{BIN}" "$@" ;;
esac
"#,
            api = ports[0],
            metrics = ports[1],
            issuer = ports[2],
        );
        let cargo = bin.join("cargo");
        std::fs::write(&cargo, shim).unwrap();
        std::fs::set_permissions(&cargo, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
        walk
    }

    fn path(&self) -> &Path {
        self.dir.path()
    }

    /// `text` with the README's ports replaced by the test's.
    fn localize(&self, text: &str) -> String {
        README_PORTS
            .iter()
            .zip(self.ports)
            .fold(text.to_owned(), |t, (from, port)| t.replace(from, &format!("127.0.0.1:{port}")))
    }

    /// bash as a fresh terminal gets it: no variables of earlier blocks, the shim first on PATH;
    /// `-eu -o pipefail` so a failed command or an unset variable fails the block.
    fn bash(&self, block: &Block, log: &str) -> Command {
        let path = format!("{}:{}", self.path().join("bin").display(), std::env::var("PATH").unwrap_or_default());
        let mut cmd = Command::new("bash");
        cmd.args(["--noprofile", "--norc", "-eu", "-o", "pipefail", "-c", &self.localize(&block.text)])
            .current_dir(self.path())
            .env_clear()
            .env("PATH", path)
            .env("HOME", self.path())
            .env("LANG", "C.UTF-8")
            .stdin(Stdio::null())
            .stdout(std::fs::File::create(self.path().join(format!("{log}.out"))).unwrap())
            .stderr(std::fs::File::create(self.path().join(format!("{log}.err"))).unwrap());
        cmd
    }

    /// What `log`'s process printed so far: stdout, then stderr.
    fn output(&self, log: &str) -> (String, String) {
        let read = |ext: &str| std::fs::read_to_string(self.path().join(format!("{log}.{ext}"))).unwrap_or_default();
        (read("out"), read("err"))
    }

    /// Runs a block to its end (at most 60 s); its stdout, or fails the test naming the block.
    fn run(&self, block: &Block) -> String {
        assert!(!block.background, "{} is a server", block.name);
        let mut child = self.bash(block, &block.name).spawn().unwrap();
        let deadline = Instant::now() + Duration::from_secs(60);
        let status = loop {
            if let Some(status) = child.try_wait().unwrap() {
                break status;
            }
            if Instant::now() > deadline {
                let _ = child.kill();
                let _ = child.wait();
                panic!("walkthrough {} did not finish in 60 s: {:?}", block.name, self.output(&block.name));
            }
            std::thread::sleep(Duration::from_millis(50));
        };
        let (out, err) = self.output(&block.name);
        assert!(
            status.success(),
            "walkthrough {} failed ({status}):\n--- block ---\n{}\n--- stdout ---\n{out}\n--- stderr ---\n{err}",
            block.name,
            self.localize(&block.text)
        );
        out
    }

    /// Starts a background block as its own process group, as a terminal of its own.
    fn start(&self, block: &Block, log: &str) -> Background {
        assert!(block.background, "{} is not marked background", block.name);
        let child = self.bash(block, log).process_group(0).spawn().unwrap();
        Background { child, name: block.name.clone(), log: log.to_owned(), stopped: false }
    }

    /// Waits until `log`'s stdout has a line with every word of `words`, or fails the test.
    fn wait_line(&self, log: &str, words: &[&str], secs: u64) -> String {
        let mut found = None;
        eventually(secs, || {
            found = self.output(log).0.lines().find(|l| words.iter().all(|w| l.contains(w))).map(str::to_owned);
            found.is_some()
        });
        found.unwrap_or_else(|| panic!("{log} never printed a line with {words:?}: {:?}", self.output(log)))
    }
}

/// A background block (a server), stopped with SIGINT (Ctrl-C) or killed when dropped.
struct Background {
    child: Child,
    name: String,
    log: String,
    /// Set once the group is gone, so that dropping never signals a reused group id.
    stopped: bool,
}

impl Background {
    fn signal(&self, sig: &str) {
        let _ = Command::new("kill").args([sig, "--", &format!("-{}", self.child.id())]).stderr(Stdio::null()).status();
    }

    /// Whether any process of the group is left.
    fn alive(&self) -> bool {
        Command::new("kill")
            .args(["-0", "--", &format!("-{}", self.child.id())])
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|s| s.success())
    }

    /// Ctrl-C, as the README says before the next server starts on the same ports; waits
    /// until every process of the block is gone, so its ports are free.
    fn stop(mut self) {
        self.signal("-INT");
        let _ = self.child.wait();
        assert!(eventually(10, || !self.alive()), "{} ({}) did not stop on Ctrl-C", self.name, self.log);
        self.stopped = true;
    }
}

impl Drop for Background {
    fn drop(&mut self) {
        if self.stopped {
            return;
        }
        self.signal("-KILL");
        let _ = self.child.wait();
    }
}

#[test]
fn readme_walkthroughs_run_as_written() {
    let readme = std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("README.md")).unwrap();
    let blocks = walkthroughs(&readme, "\n## Run it (no cluster needed)\n").unwrap();
    let found: Vec<(&str, bool)> = blocks.iter().map(|b| (b.name.as_str(), b.background)).collect();
    assert_eq!(found, EXPECTED, "the README's walkthrough blocks changed: update this test with them");
    let block = |name: &str| blocks.iter().find(|b| b.name == name).unwrap();
    let walk = Walk::new();
    let [api, metrics, issuer] = walk.ports;
    let issuer_url = format!("https://127.0.0.1:{api}/v1/default/identity/oidc/provider/main");

    // "Run it": the server starts, and its one not-Ready row is the one the README explains.
    let first = walk.start(block("standalone"), "standalone");
    assert!(
        eventually(30, || http_status(metrics, "/readyz").is_some_and(|s| s.contains(" 200"))),
        "the server never became ready: {:?}",
        walk.output("standalone")
    );
    let row = walk.wait_line("standalone", &["IdentityOidcAuth", "ci-runner", "False", "DiscoveryFailed"], 15);
    assert!(row.contains("plain http is refused") && row.contains("--allow-insecure-issuers"), "{row}");
    walk.wait_line("standalone", &["OidcProvider", "main", "True", &issuer_url], 5);
    let not_ready: Vec<String> = walk
        .output("standalone")
        .0
        .lines()
        .filter(|l| l.starts_with("default ") && l.contains(" False ") && !l.contains("ci-runner"))
        .map(str::to_owned)
        .collect();
    assert!(not_ready.is_empty(), "rows the README does not explain: {not_ready:?}");

    let served = walk.run(block("served"));
    assert!(served.contains(&format!("\"issuer\":\"{issuer_url}\"")), "discovery: {served}");
    assert!(served.to_lowercase().contains("cache-control: max-age="), "JWKS headers: {served}");
    assert!(served.contains("\"keys\":[{"), "JWKS: {served}");
    assert!(served.contains("# EOF"), "OpenMetrics text: {served}");
    first.stop();

    // "Machine login": the development issuer, then the server again, allowed to fetch it.
    let _dev = walk.start(block("dev-issuer"), "dev-issuer");
    walk.wait_line("dev-issuer", &["issuer:", &format!("http://127.0.0.1:{issuer}")], 30);
    let _server = walk.start(block("standalone-insecure"), "standalone-insecure");
    walk.wait_line("standalone-insecure", &["IdentityOidcAuth", "ci-runner", "True"], 30);

    let login = walk.run(block("login"));
    let mut lines = login.lines();
    let answer: serde_json::Value = serde_json::from_str(lines.next().unwrap_or_default()).unwrap();
    assert!(answer["accessToken"].as_str().is_some_and(|t| !t.is_empty()), "login: {login}");
    assert_eq!(answer["expiresIn"], 3600, "{login}");
    let rest: Vec<&str> = lines.collect();
    assert_eq!(rest.len(), 5, "lookup, lookup, renew, revoke, lookup: {login}");
    let rest: Vec<serde_json::Value> = rest.iter().map(|l| serde_json::from_str(l).unwrap()).collect();
    for lookup in &rest[..2] {
        assert_eq!(lookup["identityId"], IDENTITY_ID, "lookup: {login}");
    }
    assert_eq!(rest[2]["accessToken"], answer["accessToken"], "renew: {login}");
    assert!(rest[3]["message"].as_str().is_some_and(|m| m.contains("revoked")), "revoke: {login}");
    assert_eq!(rest[4]["statusCode"], 401, "a lookup after the revocation: {login}");
    assert_eq!(rest[4]["error"], "invalid_token", "{login}");

    // "The whole flow": code, ID token with the scopes' claims, userinfo.
    let flow = walk.run(block("flow"));
    let jsons: Vec<serde_json::Value> = flow.lines().filter_map(|l| serde_json::from_str(l).ok()).collect();
    assert_eq!(jsons.len(), 7, "authorize, token, ID token claims, userinfo, refresh, reuse, userinfo: {flow}");
    assert!(jsons[0]["code"].as_str().is_some_and(|c| !c.is_empty()), "authorize: {flow}");
    assert_eq!(jsons[0]["state"], "af0ifjsldkj", "{flow}");
    assert!(jsons[1]["id_token"].as_str().is_some_and(|t| t.starts_with("eyJ")), "token: {flow}");
    assert_eq!(jsons[1]["token_type"], "Bearer", "{flow}");
    let claims = &jsons[2];
    assert_eq!(claims["iss"], issuer_url.as_str(), "{flow}");
    assert_eq!(claims["nonce"], "abcdefghijk", "{flow}");
    assert_eq!(claims["groups"], serde_json::json!(["platform"]), "{flow}");
    assert_eq!(claims["team"], "payments", "{flow}");
    assert_eq!(claims["k8s_namespace"], "ci", "{flow}");
    let credentials = std::fs::read_to_string(walk.path().join(".oidc-operator/clients/default/billing-api.json"));
    let credentials: serde_json::Value = serde_json::from_str(&credentials.unwrap()).unwrap();
    assert_eq!(claims["aud"], credentials["client_id"], "{flow}");
    assert_eq!(claims["sub"], IDENTITY_ID, "{flow}");
    let userinfo = &jsons[3];
    assert_eq!(userinfo["sub"], IDENTITY_ID, "{flow}");
    assert_eq!(userinfo["team"], "payments", "{flow}");
    // Refresh: rotated, narrowed; the old token again revokes the grant.
    let (first, refreshed) = (&jsons[1], &jsons[4]);
    assert!(first["refresh_token"].is_string(), "billing-api gets a refresh token: {flow}");
    assert!(refreshed["refresh_token"].is_string() && refreshed["refresh_token"] != first["refresh_token"], "{flow}");
    assert_eq!(refreshed["scope"], "openid groups", "{flow}");
    assert!(refreshed["id_token"].as_str().is_some_and(|t| t.starts_with("eyJ")), "{flow}");
    assert_eq!(jsons[5]["error"], "invalid_grant", "reuse of the rotated refresh token: {flow}");
    assert_eq!(jsons[6]["error"], "invalid_token", "the refreshed access token went with its grant: {flow}");

    // "Services": client_credentials with a JWT access token, introspection, revocation.
    let services = walk.run(block("services"));
    let jsons: Vec<serde_json::Value> = services.lines().filter_map(|l| serde_json::from_str(l).ok()).collect();
    assert_eq!(jsons.len(), 6, "grant, claims, introspection, 200, introspection, refusal: {services}");
    let job = std::fs::read_to_string(walk.path().join(".oidc-operator/clients/default/reports-job.json"));
    let job: serde_json::Value = serde_json::from_str(&job.unwrap()).unwrap();
    assert!(jsons[0]["access_token"].as_str().is_some_and(|t| t.starts_with("eyJ")), "a JWT: {services}");
    assert!(jsons[0].get("id_token").is_none() && jsons[0].get("refresh_token").is_none(), "{services}");
    let claims = &jsons[1];
    assert_eq!(
        (claims["sub"].clone(), claims["client_id"].clone()),
        (job["client_id"].clone(), job["client_id"].clone())
    );
    assert_eq!(claims["aud"], "https://billing.example.com/api", "{services}");
    assert_eq!(claims["iss"], issuer_url.as_str(), "{services}");
    assert_eq!(jsons[2]["active"], true, "{services}");
    assert_eq!(jsons[2]["client_id"], job["client_id"], "{services}");
    assert_eq!(jsons[3], 200, "revocation: {services}");
    assert_eq!(jsons[4], serde_json::json!({"active": false}), "{services}");
    assert_eq!(jsons[5]["error"], "invalid_target", "{services}");

    // "Token exchange": the development issuer's JWT becomes an ID token in one call.
    let exchange = walk.run(block("exchange"));
    let jsons: Vec<serde_json::Value> = exchange.lines().filter_map(|l| serde_json::from_str(l).ok()).collect();
    assert_eq!(jsons.len(), 2, "the exchange, the ID token's claims: {exchange}");
    assert_eq!(
        (jsons[0]["token_type"].as_str(), jsons[0]["issued_token_type"].as_str(), jsons[0]["scope"].as_str()),
        (Some("N_A"), Some("urn:ietf:params:oauth:token-type:id_token"), Some("openid groups")),
        "{exchange}"
    );
    let agent = std::fs::read_to_string(walk.path().join(".oidc-operator/clients/default/agent.json"));
    let agent: serde_json::Value = serde_json::from_str(&agent.unwrap()).unwrap();
    assert!(agent.get("client_secret").is_none(), "the agent is public: {agent}");
    let claims = &jsons[1];
    assert_eq!(
        (claims["iss"].as_str(), claims["sub"].as_str(), claims["aud"].clone()),
        (Some(issuer_url.as_str()), Some(IDENTITY_ID), agent["client_id"].clone()),
        "{exchange}"
    );
    assert_eq!(claims["groups"], serde_json::json!(["platform"]), "{exchange}");

    // "A client with no secret": a federated assertion authenticates it; a bad one does not.
    let no_secret = walk.run(block("no-secret"));
    let jsons: Vec<serde_json::Value> = no_secret.lines().filter_map(|l| serde_json::from_str(l).ok()).collect();
    assert_eq!(jsons.len(), 3, "the credential's members, the grant, the refusal: {no_secret}");
    assert_eq!(jsons[0], serde_json::json!(["client_id"]), "no secret was written: {no_secret}");
    assert_eq!(jsons[1]["token_type"], "Bearer", "{no_secret}");
    assert!(jsons[1]["access_token"].as_str().is_some_and(|t| t.starts_with("eyJ")), "{no_secret}");
    assert_eq!(jsons[2]["error"], "invalid_client", "{no_secret}");
}

#[test]
fn unmarked_blocks_and_bad_markers_are_refused() {
    let section = "\n## Run it\n";
    let ok = format!("{section}<!-- walkthrough: a background -->\n```sh\necho a\n```\n\n## Next\n```sh\nx\n```\n");
    let blocks = walkthroughs(&ok, section).unwrap();
    assert_eq!(blocks.len(), 1);
    assert!(blocks[0].background && blocks[0].text == "echo a");
    let unmarked = format!("{section}```sh\necho a\n```\n");
    assert!(walkthroughs(&unmarked, section).unwrap_err().contains("unmarked"));
    let dangling = format!("{section}<!-- walkthrough: a -->\n\n```sh\necho a\n```\n");
    assert!(walkthroughs(&dangling, section).unwrap_err().contains("not followed"));
}
