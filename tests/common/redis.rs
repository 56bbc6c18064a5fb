//! Debian's `redis-server` (installed by `scripts/tools`), started by the tests on free
//! loopback ports with no persistence: a single node, or a three-master Redis Cluster made
//! by `redis-cli --cluster create`. Stopped when dropped. A missing `redis-server` fails the
//! test with a message naming it.

use std::net::TcpListener;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

fn bin(name: &str) -> PathBuf {
    let dir = super::install::tools();
    let path = dir.join(name);
    assert!(path.exists(), "{name} is missing from {} (scripts/tools installs Debian's redis-server)", dir.display());
    path
}

/// `redis-cli -p <port> <args>`'s output.
pub fn cli(port: u16, args: &[&str]) -> String {
    cli_with(port, &[], args)
}

/// `redis-cli` with connection options (`--tls`, `--user`, ...) before `args`.
pub fn cli_with(port: u16, options: &[String], args: &[&str]) -> String {
    let out = Command::new(bin("redis-cli"))
        .args(["-h", "127.0.0.1", "-p", &port.to_string()])
        .args(options)
        .arg("--no-auth-warning")
        .args(args)
        .output()
        .expect("running redis-cli");
    String::from_utf8_lossy(&out.stdout).trim().to_owned()
}

/// A CA and a certificate for 127.0.0.1 signed by it, in files, for redis-server's and
/// redis-cli's TLS options.
pub struct TlsFiles {
    dir: tempfile::TempDir,
    pub ca_pem: String,
}

impl TlsFiles {
    pub fn new() -> TlsFiles {
        let dir = tempfile::tempdir().unwrap();
        let pki = super::test_pki("redis test CA", &["127.0.0.1", "localhost"]);
        std::fs::write(dir.path().join("ca.crt"), &pki.ca_pem).unwrap();
        std::fs::write(dir.path().join("tls.crt"), &pki.leaf_pem).unwrap();
        std::fs::write(dir.path().join("tls.key"), &pki.key_pem).unwrap();
        TlsFiles { dir, ca_pem: pki.ca_pem }
    }

    fn path(&self, name: &str) -> String {
        self.dir.path().join(name).display().to_string()
    }

    /// redis-server options (or Sentinel config lines, joined by spaces): TLS only, on `port`.
    fn server_args(&self, port: u16) -> Vec<String> {
        let args = [
            ("--port", "0".to_owned()),
            ("--tls-port", port.to_string()),
            ("--tls-cert-file", self.path("tls.crt")),
            ("--tls-key-file", self.path("tls.key")),
            ("--tls-ca-cert-file", self.path("ca.crt")),
            ("--tls-auth-clients", "no".to_owned()),
            ("--tls-replication", "yes".to_owned()),
        ];
        args.into_iter().flat_map(|(k, v)| [k.to_owned(), v]).collect()
    }

    fn cli_options(&self) -> Vec<String> {
        vec!["--tls".into(), "--cacert".into(), self.path("ca.crt")]
    }
}

/// One `redis-server` process.
pub struct RedisServer {
    child: Option<Child>,
    pub port: u16,
    dir: tempfile::TempDir,
    extra: Vec<String>,
    /// How redis-cli reaches it (TLS, ACL user).
    cli_options: Vec<String>,
    /// The CA file those options name, when the server owns it.
    _tls: Option<TlsFiles>,
}

impl RedisServer {
    /// A single node with no persistence.
    pub fn start() -> RedisServer {
        Self::start_with(&[])
    }

    pub fn start_with(extra: &[&str]) -> RedisServer {
        Self::start_reached(extra.iter().map(|s| s.to_string()).collect(), Vec::new())
    }

    /// With `extra` options, reached by redis-cli with `cli_options` (a password).
    fn start_reached(extra: Vec<String>, cli_options: Vec<String>) -> RedisServer {
        let mut server = RedisServer {
            child: None,
            port: free_port(),
            dir: tempfile::tempdir().unwrap(),
            extra,
            cli_options,
            _tls: None,
        };
        server.spawn();
        server
    }

    /// TLS only, with `files`' certificate; `extra` are more options.
    fn start_tls(files: &TlsFiles, extra: Vec<String>, cli_options: Vec<String>) -> RedisServer {
        let port = free_port();
        let mut server = RedisServer {
            child: None,
            port,
            dir: tempfile::tempdir().unwrap(),
            extra: files.server_args(port).into_iter().chain(extra).collect(),
            cli_options: files.cli_options().into_iter().chain(cli_options).collect(),
            _tls: None,
        };
        server.spawn();
        server
    }

    /// TLS only (a certificate for 127.0.0.1 signed by a CA made here), with the `default`
    /// user off and one ACL user `user`/`password` confined to `~oidcop:*`. Returns the
    /// server and the CA's PEM.
    pub fn start_tls_acl(user: &str, password: &str) -> (RedisServer, String) {
        let files = TlsFiles::new();
        let acl = [
            // Each word its own argument: redis-server joins them into one config line.
            "--user",
            "default",
            "off",
            "--user",
            user,
            "on",
            &format!(">{password}"),
            "~oidcop:*",
            "+@all",
        ];
        let login = ["--user", user, "--pass", password];
        let mut server = Self::start_tls(
            &files,
            acl.iter().map(|s| s.to_string()).collect(),
            login.iter().map(|s| s.to_string()).collect(),
        );
        let ca_pem = files.ca_pem.clone();
        server._tls = Some(files);
        (server, ca_pem)
    }

    fn spawn(&mut self) {
        // A later --port (TLS only) wins over this one.
        let child = Command::new(bin("redis-server"))
            .args(["--port", &self.port.to_string(), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"])
            .arg("--dir")
            .arg(self.dir.path())
            .args(&self.extra)
            .stdout(Stdio::from(std::fs::File::create(self.dir.path().join("redis.log")).unwrap()))
            .stderr(Stdio::null())
            .spawn()
            .expect("starting redis-server");
        self.child = Some(child);
        let deadline = Instant::now() + Duration::from_secs(20);
        while cli_with(self.port, &self.cli_options, &["ping"]) != "PONG" {
            assert!(Instant::now() < deadline, "redis-server did not answer:\n{}", self.log());
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// `redis://127.0.0.1:<port>`.
    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }

    /// Stops the server (its data is gone: no persistence).
    pub fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Pauses the process (`SIGSTOP`): the kernel still accepts and acknowledges, nothing
    /// answers, as with a hung node. Killing it still works.
    pub fn pause(&self) {
        let pid = self.child.as_ref().expect("the server runs").id();
        let status = Command::new("kill").args(["-STOP", &pid.to_string()]).status().expect("kill -STOP");
        assert!(status.success());
    }

    /// How many keys it holds.
    pub fn dbsize(&self) -> u64 {
        cli_with(self.port, &self.cli_options, &["dbsize"]).parse().unwrap_or(0)
    }

    /// The keys matching `pattern` (`KEYS`: a test's small database only).
    pub fn keys(&self, pattern: &str) -> Vec<String> {
        cli_with(self.port, &self.cli_options, &["keys", pattern])
            .lines()
            .map(str::to_owned)
            .filter(|k| !k.is_empty())
            .collect()
    }

    /// Starts it again on the same port, empty.
    pub fn restart(&mut self) {
        self.stop();
        self.spawn();
    }

    /// The end of what the server logged.
    pub fn log(&self) -> String {
        let log = std::fs::read_to_string(self.dir.path().join("redis.log")).unwrap_or_default();
        let start = log.len().saturating_sub(4000);
        log.get(start..).unwrap_or(&log).to_owned()
    }
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        self.stop();
    }
}

/// A Redis Cluster of three masters on loopback.
pub struct RedisCluster {
    pub nodes: Vec<RedisServer>,
}

impl RedisCluster {
    pub fn start() -> RedisCluster {
        let nodes: Vec<RedisServer> = (0..3)
            .map(|_| {
                // The cluster bus port is the data port + 10000 unless given: a free port of
                // its own, or a data port from the ephemeral range puts the bus on a busy
                // port or past 65535.
                let bus = free_port().to_string();
                RedisServer::start_with(&[
                    "--cluster-enabled",
                    "yes",
                    "--cluster-port",
                    &bus,
                    "--cluster-config-file",
                    "nodes.conf",
                    "--cluster-node-timeout",
                    "2000",
                ])
            })
            .collect();
        let addrs: Vec<String> = nodes.iter().map(|n| format!("127.0.0.1:{}", n.port)).collect();
        let mut args = vec!["--cluster", "create"];
        args.extend(addrs.iter().map(String::as_str));
        args.extend(["--cluster-replicas", "0", "--cluster-yes"]);
        let out = Command::new(bin("redis-cli")).args(&args).output().expect("running redis-cli --cluster create");
        assert!(out.status.success(), "redis-cli --cluster create: {}", String::from_utf8_lossy(&out.stdout));
        let deadline = Instant::now() + Duration::from_secs(30);
        for node in &nodes {
            while !cli(node.port, &["cluster", "info"]).contains("cluster_state:ok") {
                assert!(Instant::now() < deadline, "the cluster never became ok:\n{}", node.log());
                std::thread::sleep(Duration::from_millis(100));
            }
        }
        RedisCluster { nodes }
    }

    /// `redis+cluster://127.0.0.1:p1,127.0.0.1:p2,127.0.0.1:p3`.
    pub fn url(&self) -> String {
        let nodes: Vec<String> = self.nodes.iter().map(|n| format!("127.0.0.1:{}", n.port)).collect();
        format!("redis+cluster://{}", nodes.join(","))
    }

    /// Stops every node.
    pub fn stop(&mut self) {
        for node in &mut self.nodes {
            node.stop();
        }
    }

    /// Starts every node again, empty; each keeps its `nodes.conf`, so the cluster re-forms
    /// with the same slots.
    pub fn restart(&mut self) {
        for node in &mut self.nodes {
            node.restart();
        }
        let deadline = Instant::now() + Duration::from_secs(30);
        for node in &self.nodes {
            while !cli(node.port, &["cluster", "info"]).contains("cluster_state:ok") {
                assert!(Instant::now() < deadline, "the cluster never re-formed:\n{}", node.log());
                std::thread::sleep(Duration::from_millis(100));
            }
        }
    }

    /// How many keys each master holds.
    pub fn key_counts(&self) -> Vec<u64> {
        self.nodes.iter().map(|n| cli(n.port, &["dbsize"]).parse().unwrap_or(0)).collect()
    }
}

/// A master, one replica and one Sentinel watching them (master name `mymaster`).
pub struct RedisSentinel {
    pub master: RedisServer,
    pub replica: RedisServer,
    sentinel: Option<Child>,
    pub port: u16,
    dir: tempfile::TempDir,
    /// How redis-cli reaches the Sentinel (TLS, its password).
    cli_options: Vec<String>,
    /// The CA of every node's certificate, when they speak TLS only.
    pub tls: Option<TlsFiles>,
}

/// Passwords of a Sentinel deployment: the data nodes' (`requirepass`, `masterauth`, the
/// Sentinel's `auth-pass`) and the Sentinel's own (its `requirepass`).
pub struct SentinelPasswords {
    pub data: &'static str,
    pub sentinel: &'static str,
}

impl RedisSentinel {
    pub fn start() -> RedisSentinel {
        Self::start_with(None, None)
    }

    /// Every node (master, replica, Sentinel) speaks TLS only, replication included.
    pub fn start_tls() -> RedisSentinel {
        Self::start_with(Some(TlsFiles::new()), None)
    }

    /// The data nodes ask for one password, the Sentinel for another, as charts of Redis with
    /// Sentinel set them up.
    pub fn start_with_passwords(passwords: SentinelPasswords) -> RedisSentinel {
        Self::start_with(None, Some(passwords))
    }

    fn start_with(tls: Option<TlsFiles>, passwords: Option<SentinelPasswords>) -> RedisSentinel {
        let (auth, cli_auth) = match &passwords {
            Some(p) => (
                ["--requirepass", p.data, "--masterauth", p.data].map(str::to_owned).to_vec(),
                vec!["-a".to_owned(), p.data.to_owned()],
            ),
            None => (Vec::new(), Vec::new()),
        };
        let start = |extra: Vec<String>| match &tls {
            Some(files) => RedisServer::start_tls(files, extra, Vec::new()),
            None => RedisServer::start_reached(extra, cli_auth.clone()),
        };
        let master = start(auth.clone());
        let replica = start(
            ["--replicaof".to_owned(), "127.0.0.1".to_owned(), master.port.to_string()]
                .into_iter()
                .chain(auth)
                .collect(),
        );
        let dir = tempfile::tempdir().unwrap();
        let port = free_port();
        let conf = dir.path().join("sentinel.conf");
        let listen = match &tls {
            Some(files) => {
                // The same options as a config file's lines, without the dashes.
                files.server_args(port).chunks(2).map(|kv| format!("{} {}\n", &kv[0][2..], kv[1])).collect()
            }
            None => format!("port {port}\n"),
        };
        // After `sentinel monitor`, which names the master they are about.
        let auth = match &passwords {
            Some(p) => format!("requirepass {}\nsentinel auth-pass mymaster {}\n", p.sentinel, p.data),
            None => String::new(),
        };
        std::fs::write(
            &conf,
            format!(
                "{listen}bind 127.0.0.1\ndir {}\nsentinel monitor mymaster 127.0.0.1 {} 1\n\
                 sentinel down-after-milliseconds mymaster 1000\nsentinel failover-timeout mymaster 5000\n{auth}",
                dir.path().display(),
                master.port
            ),
        )
        .unwrap();
        let sentinel = Command::new(bin("redis-server"))
            .arg(&conf)
            .arg("--sentinel")
            .stdout(Stdio::from(std::fs::File::create(dir.path().join("sentinel.log")).unwrap()))
            .stderr(Stdio::null())
            .spawn()
            .expect("starting redis-server --sentinel");
        let mut cli_options = tls.as_ref().map(TlsFiles::cli_options).unwrap_or_default();
        if let Some(p) = &passwords {
            cli_options.extend(["-a".to_owned(), p.sentinel.to_owned()]);
        }
        let s = RedisSentinel { master, replica, sentinel: Some(sentinel), port, dir, cli_options, tls };
        // The Sentinel knows the master, and the replica through it.
        let deadline = Instant::now() + Duration::from_secs(30);
        while !s.sentinel_cli(&["sentinel", "replicas", "mymaster"]).contains(&s.replica.port.to_string()) {
            assert!(Instant::now() < deadline, "the Sentinel never saw the replica:\n{}", s.log());
            std::thread::sleep(Duration::from_millis(100));
        }
        s
    }

    /// `redis-cli` to the Sentinel.
    fn sentinel_cli(&self, args: &[&str]) -> String {
        cli_with(self.port, &self.cli_options, args)
    }

    /// The port of the master the Sentinel names now.
    pub fn master_port(&self) -> u16 {
        let out = self.sentinel_cli(&["sentinel", "get-master-addr-by-name", "mymaster"]);
        out.lines().nth(1).and_then(|p| p.trim().parse().ok()).unwrap_or(0)
    }

    /// Waits until the replica has every write, then has the Sentinel promote it; returns
    /// once the Sentinel names it and the old master has become its replica (until then the
    /// old master still takes writes, and a client that never followed would not notice).
    pub fn fail_over(&self) {
        cli_with(self.master.port, &self.master.cli_options, &["wait", "1", "5000"]);
        let answer = self.sentinel_cli(&["sentinel", "failover", "mymaster"]);
        assert_eq!(answer, "OK", "SENTINEL FAILOVER: {answer}");
        let deadline = Instant::now() + Duration::from_secs(30);
        while self.master_port() != self.replica.port {
            assert!(Instant::now() < deadline, "the failover never finished:\n{}", self.log());
            std::thread::sleep(Duration::from_millis(100));
        }
        while !cli_with(self.master.port, &self.master.cli_options, &["role"]).starts_with("slave") {
            assert!(Instant::now() < deadline, "the old master was never demoted:\n{}", self.log());
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// Waits until the replica has every write, then pauses the master (a hung node, not a
    /// refusing one) and waits until the Sentinel names the replica.
    pub fn hang_master(&self) {
        cli_with(self.master.port, &self.master.cli_options, &["wait", "1", "5000"]);
        self.master.pause();
        let deadline = Instant::now() + Duration::from_secs(30);
        while self.master_port() != self.replica.port {
            assert!(Instant::now() < deadline, "the Sentinel never failed over from the hung master:\n{}", self.log());
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("sentinel.log")).unwrap_or_default()
    }
}

impl Drop for RedisSentinel {
    fn drop(&mut self) {
        if let Some(mut child) = self.sentinel.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}
