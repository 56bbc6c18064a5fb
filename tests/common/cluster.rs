//! The end-to-end tier's control plane: etcd and kube-apiserver built from their official Go
//! modules by `scripts/control-plane` (cached), started on loopback with generated keys and a
//! static admin token, CRDs applied with kubectl; torn down when dropped. A missing toolchain
//! or a failed build fails the test with the script's message: it never skips.

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// A running etcd + kube-apiserver pair.
pub struct ControlPlane {
    etcd: Child,
    apiserver: Child,
    apiserver_cmd: Command,
    _dir: tempfile::TempDir,
    bin: PathBuf,
    etcd_url: String,
    admin_token: String,
    pub url: String,
    pub kubeconfig: PathBuf,
}

/// A second kube-apiserver on the same etcd (see [`ControlPlane::start_relying_apiserver`]).
pub struct RelyingApiServer {
    child: Child,
    log: PathBuf,
    pub url: String,
    pub ca: PathBuf,
}

impl RelyingApiServer {
    /// `kubectl --token=<token> auth whoami -o json` against this API server, trusting only
    /// its serving certificate and no kubeconfig credentials.
    pub fn whoami(&self, token: &str) -> std::process::Output {
        Command::new("kubectl")
            .arg(format!("--server={}", self.url))
            .arg(format!("--certificate-authority={}", self.ca.display()))
            .arg(format!("--token={token}"))
            .args(["--kubeconfig=/dev/null", "auth", "whoami", "-o", "json"])
            .output()
            .expect("kubectl is required")
    }

    /// What the API server logged so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

impl Drop for RelyingApiServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

/// The folder of the cached binaries, building them on first use.
fn binaries() -> PathBuf {
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("scripts/control-plane");
    let out =
        Command::new("bash").arg(&script).stderr(Stdio::inherit()).output().expect("running scripts/control-plane");
    assert!(
        out.status.success(),
        "the end-to-end control plane (kube-apiserver, etcd) could not be built; see the message above"
    );
    PathBuf::from(String::from_utf8(out.stdout).unwrap().trim())
}

fn spawn_apiserver(cmd: &mut Command, log: &Path) -> Child {
    let log = std::fs::OpenOptions::new().create(true).append(true).open(log).unwrap();
    cmd.stderr(Stdio::from(log)).spawn().expect("starting kube-apiserver")
}

/// The arguments of a kube-apiserver on `etcd_url` serving on `port`, with the test's
/// service-account key and static tokens in `d`.
fn apiserver_command(bin: &Path, d: &Path, etcd_url: &str, port: u16, cert_dir: &str, url: &str) -> Command {
    let mut cmd = Command::new(bin.join("kube-apiserver"));
    cmd.args(["--etcd-servers", etcd_url, "--bind-address", "127.0.0.1", "--advertise-address", "127.0.0.1"])
        .args(["--secure-port", &port.to_string(), "--cert-dir"])
        .arg(d.join(cert_dir))
        .args(["--service-account-issuer", url, "--service-account-key-file"])
        .arg(d.join("sa.key"))
        .arg("--service-account-signing-key-file")
        .arg(d.join("sa.key"))
        .arg("--token-auth-file")
        .arg(d.join("tokens.csv"))
        .args(["--authorization-mode", "RBAC", "--service-cluster-ip-range", "10.0.0.0/24"])
        .args(["--enable-priority-and-fairness=false", "--v", "0"])
        .stdout(Stdio::null());
    cmd
}

impl ControlPlane {
    /// etcd and kube-apiserver with `crds/` applied and established.
    pub fn start() -> ControlPlane {
        let cp = Self::start_without_crds();
        let crds = Path::new(env!("CARGO_MANIFEST_DIR")).join("crds");
        let out = cp.kubectl(&["apply", "--server-side", "-f", crds.to_str().unwrap()]);
        assert!(out.status.success(), "applying crds/: {}", String::from_utf8_lossy(&out.stderr));
        let out = cp.kubectl(&["wait", "--for=condition=Established", "crd", "--all", "--timeout=60s"]);
        assert!(out.status.success(), "CRDs not established: {}", String::from_utf8_lossy(&out.stderr));
        cp
    }

    /// etcd and kube-apiserver with nothing installed (Helm or kustomize installs the CRDs).
    pub fn start_without_crds() -> ControlPlane {
        let bin = binaries();
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        let (etcd_port, peer_port, api_port) = (free_port(), free_port(), free_port());
        let etcd_url = format!("http://127.0.0.1:{etcd_port}");
        let etcd = Command::new(bin.join("etcd"))
            .args(["--name", "e2e", "--data-dir"])
            .arg(d.join("etcd"))
            .args(["--listen-client-urls", &etcd_url, "--advertise-client-urls", &etcd_url])
            .args(["--listen-peer-urls", &format!("http://127.0.0.1:{peer_port}")])
            .args(["--initial-advertise-peer-urls", &format!("http://127.0.0.1:{peer_port}")])
            .args(["--initial-cluster", &format!("e2e=http://127.0.0.1:{peer_port}")])
            .args(["--log-level", "error", "--unsafe-no-fsync"])
            .stdout(Stdio::null())
            .stderr(Stdio::from(std::fs::File::create(d.join("etcd.log")).unwrap()))
            .spawn()
            .expect("starting etcd");

        // Service-account signing key, an admin token, and a kubeconfig.
        let sa_key = rcgen::KeyPair::generate_for(&rcgen::PKCS_RSA_SHA256).unwrap();
        std::fs::write(d.join("sa.key"), sa_key.serialize_pem()).unwrap();
        let token = oidc_operator::credentials::random_base62(40).unwrap();
        std::fs::write(d.join("tokens.csv"), format!("{token},admin,admin,\"system:masters\"\n")).unwrap();
        let url = format!("https://127.0.0.1:{api_port}");
        let mut apiserver_cmd = apiserver_command(&bin, d, &etcd_url, api_port, "certs", &url);
        let log = d.join("apiserver.log");
        let apiserver = spawn_apiserver(&mut apiserver_cmd, &log);
        let kubeconfig = d.join("kubeconfig");
        let mut cp = ControlPlane {
            etcd,
            apiserver,
            apiserver_cmd,
            _dir: dir,
            bin,
            etcd_url,
            admin_token: token.clone(),
            url: url.clone(),
            kubeconfig: kubeconfig.clone(),
        };

        // Wait for the serving certificate, then for /readyz.
        let ca = cp._dir.path().join("certs/apiserver.crt");
        let deadline = Instant::now() + Duration::from_secs(90);
        while !ca.exists() {
            cp.assert_alive(deadline);
            std::thread::sleep(Duration::from_millis(100));
        }
        std::fs::write(&kubeconfig, cp.kubeconfig_text("admin", &token)).unwrap();
        cp.wait_ready(deadline);
        cp
    }

    fn kubeconfig_text(&self, user: &str, token: &str) -> String {
        format!(
            "apiVersion: v1\nkind: Config\nclusters:\n- name: e2e\n  cluster: {{server: \"{}\", certificate-authority: \"{}\"}}\nusers:\n- name: {user}\n  user: {{token: \"{token}\"}}\ncontexts:\n- name: e2e\n  context: {{cluster: e2e, user: {user}}}\ncurrent-context: e2e\n",
            self.url,
            self._dir.path().join("certs/apiserver.crt").display()
        )
    }

    /// A kubeconfig that authenticates with the token of ServiceAccount `namespace/name`
    /// (`kubectl create token`), so a process using it has exactly that account's RBAC.
    pub fn service_account_kubeconfig(&self, namespace: &str, name: &str) -> PathBuf {
        let out = self.kubectl(&["create", "token", name, "-n", namespace, "--duration=2h"]);
        assert!(out.status.success(), "token of {namespace}/{name}: {}", String::from_utf8_lossy(&out.stderr));
        let token = String::from_utf8(out.stdout).unwrap().trim().to_owned();
        let path = self._dir.path().join(format!("kubeconfig-{namespace}-{name}"));
        std::fs::write(&path, self.kubeconfig_text(name, &token)).unwrap();
        path
    }

    /// Starts a second kube-apiserver on the same etcd with `--authentication-config` set to
    /// `auth_config` (an AuthenticationConfiguration document), and waits until it serves.
    pub fn start_relying_apiserver(&self, auth_config: &str) -> RelyingApiServer {
        let d = self._dir.path();
        let port = free_port();
        std::fs::write(d.join("authn.yaml"), auth_config).unwrap();
        let mut cmd = apiserver_command(&self.bin, d, &self.etcd_url, port, "certs-relying", &self.url);
        cmd.arg("--authentication-config").arg(d.join("authn.yaml"));
        let log = d.join("apiserver-relying.log");
        let child = spawn_apiserver(&mut cmd, &log);
        let mut rp = RelyingApiServer {
            child,
            log,
            url: format!("https://127.0.0.1:{port}"),
            ca: d.join("certs-relying/apiserver.crt"),
        };
        let deadline = Instant::now() + Duration::from_secs(90);
        loop {
            if let Ok(Some(status)) = rp.child.try_wait() {
                panic!("the relying kube-apiserver exited ({status}):\n{}", rp.log());
            }
            assert!(Instant::now() < deadline, "the relying kube-apiserver never became ready:\n{}", rp.log());
            if rp.ca.exists() {
                let ready = Command::new("kubectl")
                    .arg(format!("--server={}", rp.url))
                    .arg(format!("--certificate-authority={}", rp.ca.display()))
                    .arg(format!("--token={}", self.admin_token))
                    .args(["--kubeconfig=/dev/null", "get", "--raw", "/readyz"])
                    .output()
                    .expect("kubectl is required");
                if ready.status.success() {
                    return rp;
                }
            }
            std::thread::sleep(Duration::from_millis(250));
        }
    }

    fn wait_ready(&mut self, deadline: Instant) {
        loop {
            let out = self.kubectl(&["get", "--raw", "/readyz"]);
            if out.status.success() {
                return;
            }
            self.assert_alive(deadline);
            std::thread::sleep(Duration::from_millis(250));
        }
    }

    /// Stops kube-apiserver (etcd keeps the data); `start_apiserver` brings it back on the
    /// same address with the same certificates and keys.
    pub fn stop_apiserver(&mut self) {
        let _ = self.apiserver.kill();
        let _ = self.apiserver.wait();
    }

    /// Starts kube-apiserver again and waits until it is ready.
    pub fn start_apiserver(&mut self) {
        let log = self._dir.path().join("apiserver.log");
        self.apiserver = spawn_apiserver(&mut self.apiserver_cmd, &log);
        self.wait_ready(Instant::now() + Duration::from_secs(90));
    }

    fn assert_alive(&mut self, deadline: Instant) {
        let log = |name: &str| std::fs::read_to_string(self._dir.path().join(name)).unwrap_or_default();
        if let Ok(Some(status)) = self.apiserver.try_wait() {
            panic!("kube-apiserver exited ({status}):\n{}", log("apiserver.log"));
        }
        if let Ok(Some(status)) = self.etcd.try_wait() {
            panic!("etcd exited ({status}):\n{}", log("etcd.log"));
        }
        assert!(Instant::now() < deadline, "kube-apiserver not ready in time:\n{}", log("apiserver.log"));
    }

    /// The PEM of the API server's serving certificate (the CA clients trust).
    pub fn ca_pem(&self) -> String {
        std::fs::read_to_string(self._dir.path().join("certs/apiserver.crt")).unwrap()
    }

    /// Runs kubectl against this control plane.
    pub fn kubectl(&self, args: &[&str]) -> std::process::Output {
        Command::new("kubectl")
            .arg("--kubeconfig")
            .arg(&self.kubeconfig)
            .args(args)
            .output()
            .expect("kubectl is required")
    }

    /// Applies a manifest from stdin; returns (success, stderr).
    pub fn apply(&self, namespace: &str, yaml: &str) -> (bool, String) {
        use std::io::Write;
        let mut child = Command::new("kubectl")
            .arg("--kubeconfig")
            .arg(&self.kubeconfig)
            .args(["apply", "-n", namespace, "-f", "-"])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        child.stdin.take().unwrap().write_all(yaml.as_bytes()).unwrap();
        let out = child.wait_with_output().unwrap();
        (out.status.success(), String::from_utf8_lossy(&out.stderr).into_owned())
    }

    /// A fresh namespace with a random name.
    /// Lets anyone read the service-account issuer's discovery document and JWKS (what an
    /// IdentityOidcAuth trusting the cluster's own issuer needs).
    pub fn allow_anonymous_issuer_discovery(&self) {
        let out = self.kubectl(&[
            "create",
            "clusterrolebinding",
            "oidc-discovery-anonymous",
            "--clusterrole=system:service-account-issuer-discovery",
            "--group=system:unauthenticated",
        ]);
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    }

    pub fn namespace(&self) -> String {
        let name = format!("e2e-{}", oidc_operator::credentials::random_base62(8).unwrap().to_lowercase());
        let out = self.kubectl(&["create", "namespace", &name]);
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
        name
    }
}

impl Drop for ControlPlane {
    fn drop(&mut self) {
        let _ = self.apiserver.kill();
        let _ = self.apiserver.wait();
        let _ = self.etcd.kill();
        let _ = self.etcd.wait();
    }
}

/// One jsonpath of an object, as kubectl prints it ("" when absent).
pub fn jsonpath(cp: &ControlPlane, ns: &str, what: &str, path: &str) -> String {
    let out = cp.kubectl(&["get", "-n", ns, what, "-o", &format!("jsonpath={path}")]);
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// A field of an object's `Ready` condition ("" while it has none).
pub fn ready_field(cp: &ControlPlane, ns: &str, what: &str, field: &str) -> String {
    jsonpath(cp, ns, what, &format!("{{.status.conditions[?(@.type==\"Ready\")].{field}}}"))
}

/// Waits until every object is Ready (kubectl wait), or fails with their conditions.
pub fn wait_ready(cp: &ControlPlane, ns: &str, objects: &[&str], operator: &super::Server) {
    let mut args = vec!["wait", "-n", ns, "--for=condition=Ready", "--timeout=60s"];
    args.extend_from_slice(objects);
    let out = cp.kubectl(&args);
    if !out.status.success() {
        let all = cp.kubectl(&["get", "-n", ns, "oidc", "-o", "yaml"]);
        panic!(
            "not Ready: {}\n{}\n{}",
            String::from_utf8_lossy(&out.stderr),
            String::from_utf8_lossy(&all.stdout),
            operator.output()
        );
    }
}
