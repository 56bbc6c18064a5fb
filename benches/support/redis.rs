//! A throwaway redis-server for the store benches, and the CPU pinning that gives it a core
//! of its own.

use std::process::{Child, Command, Stdio};

/// A redis-server on a free loopback port, with no persistence, killed when dropped.
pub struct RedisServer {
    pub child: Child,
    pub port: u16,
    _dir: tempfile::TempDir,
}

impl RedisServer {
    /// Starts the redis-server `scripts/tools` installs (or the one on PATH).
    pub fn start() -> Self {
        let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
        let dir = tempfile::tempdir().unwrap();
        let child = Command::new(tool("redis-server"))
            .args(["--port", &port.to_string(), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"])
            .arg("--dir")
            .arg(dir.path())
            .stdout(Stdio::null())
            .spawn()
            .expect("redis-server (scripts/tools installs Debian's)");
        Self { child, port, _dir: dir }
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// `~/.cache/oidc-operator/bin/<name>` when it is there, else `name` on PATH.
pub fn tool(name: &str) -> String {
    let cached = std::env::var("HOME").map(|h| format!("{h}/.cache/oidc-operator/bin/{name}")).unwrap_or_default();
    if std::path::Path::new(&cached).exists() { cached } else { name.into() }
}

/// Pins every thread of process `pid` to `cores` (a `taskset` list such as `0` or `0-1`);
/// why not, when it cannot be done (no `taskset`, or not allowed).
pub fn pin(pid: u32, cores: &str) -> Result<(), String> {
    let status = Command::new("taskset")
        .args(["-a", "-p", "-c", cores, &pid.to_string()])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .map_err(|e| format!("taskset (util-linux): {e}"))?;
    if status.success() { Ok(()) } else { Err(format!("taskset -a -p -c {cores} {pid}: {status}")) }
}
