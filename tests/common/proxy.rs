//! Runs the real proxy binary. Tests pass the binary path, normally
//! `Path::new(env!("CARGO_BIN_EXE_m2m-auth-proxy"))`.
//!
//! ```ignore
//! let upstream = EchoUpstream::start();
//! let (listen, admin) = (free_port(), free_port());
//! let proxy = ProxyProcess::start(bin, &format!("listen: \"127.0.0.1:{listen}\"\nadmin: \"127.0.0.1:{admin}\"\n..."));
//! ```

use std::collections::BTreeSet;
use std::fs::{self, File};
use std::io::Read;
use std::net::{SocketAddr, TcpListener};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::Mutex;
use std::thread;
use std::time::{Duration, Instant};

use tempfile::TempDir;

use super::client::{Conn, Request};

/// Default admin address of the proxy when the config has no `admin:` line.
const DEFAULT_ADMIN: &str = "127.0.0.1:9091";
const POLL: Duration = Duration::from_millis(25);

/// A port that was free a moment ago on 127.0.0.1 and was never handed out before in this
/// test process: the kernel may give the same ephemeral port to two binds in a row once the
/// first listener is dropped, which made `listen` and `admin` collide.
pub fn free_port() -> u16 {
    static HANDED_OUT: Mutex<BTreeSet<u16>> = Mutex::new(BTreeSet::new());
    let mut handed_out = HANDED_OUT.lock().unwrap_or_else(|e| e.into_inner());
    for _ in 0..1000 {
        let port = TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .expect("bind 127.0.0.1:0")
            .port();
        if handed_out.insert(port) {
            return port;
        }
    }
    panic!("no fresh loopback port after 1000 binds");
}

fn wait_for(mut done: impl FnMut() -> bool, timeout: Duration) -> bool {
    let deadline = Instant::now() + timeout;
    loop {
        if done() {
            return true;
        }
        if Instant::now() >= deadline {
            return false;
        }
        thread::sleep(POLL);
    }
}

/// `"127.0.0.1:<free port>"`.
pub fn free_addr() -> String {
    format!("127.0.0.1:{}", free_port())
}

/// Runs `cmd` (stdin closed, output captured through temp files) for at most `timeout`,
/// killing it then. Returns (exit code, stdout, stderr); the code is -1 when killed by a
/// signal or on timeout (stderr then ends with a note).
pub fn run_command(mut cmd: Command, timeout: Duration) -> (i32, Vec<u8>, Vec<u8>) {
    let dir = tempfile::tempdir().expect("temp dir");
    let (out, err) = (dir.path().join("stdout"), dir.path().join("stderr"));
    cmd.stdin(Stdio::null())
        .stdout(File::create(&out).unwrap())
        .stderr(File::create(&err).unwrap());
    let mut child = cmd
        .spawn()
        .unwrap_or_else(|e| panic!("spawn {:?}: {e}", cmd.get_program()));
    let deadline = Instant::now() + timeout;
    let status = loop {
        if let Some(s) = child.try_wait().expect("wait for child") {
            break Some(s);
        }
        if Instant::now() >= deadline {
            let _ = child.kill();
            let _ = child.wait();
            break None;
        }
        thread::sleep(POLL);
    };
    let stdout = fs::read(&out).unwrap_or_default();
    let mut stderr = fs::read(&err).unwrap_or_default();
    let code = match status {
        Some(s) => s.code().unwrap_or(-1),
        None => {
            stderr.extend(format!("\n[killed after {timeout:?}]").as_bytes());
            -1
        }
    };
    (code, stdout, stderr)
}

/// Runs the binary with `args` (e.g. `["check", "--config", path]`) for at most 30 s.
/// Returns (exit code, stdout, stderr).
pub fn run_cli(bin: &Path, args: &[&str]) -> (i32, String, String) {
    let mut cmd = Command::new(bin);
    cmd.args(args);
    let (code, out, err) = run_command(cmd, Duration::from_secs(30));
    (
        code,
        String::from_utf8_lossy(&out).into_owned(),
        String::from_utf8_lossy(&err).into_owned(),
    )
}

/// Writes `contents` to `path` atomically (temp file + rename).
pub fn write_atomic(path: &Path, contents: &[u8]) {
    let tmp = path.with_extension(format!("tmp{}", std::process::id()));
    fs::write(&tmp, contents).unwrap_or_else(|e| panic!("write {}: {e}", tmp.display()));
    fs::rename(&tmp, path).unwrap_or_else(|e| panic!("rename to {}: {e}", path.display()));
}

/// The value of the top-level `admin:` key of a YAML config, or the default.
pub fn admin_addr_of(yaml: &str) -> SocketAddr {
    let value = yaml
        .lines()
        .find_map(|l| l.strip_prefix("admin:"))
        .map(|v| {
            let v = v.split(" #").next().unwrap_or("").trim();
            v.trim_matches(|c| c == '"' || c == '\'').to_string()
        })
        .filter(|v| !v.is_empty())
        .unwrap_or_else(|| DEFAULT_ADMIN.to_string());
    value
        .parse()
        .unwrap_or_else(|e| panic!("admin address {value:?} in the config: {e}"))
}

/// A plain-HTTP GET on a fresh connection (admin endpoints): (status, body). Timeouts 10 s.
pub fn http_get(addr: SocketAddr, path: &str) -> Result<(u16, String), String> {
    // Through the kit's client, so the response is read like every other one; same request
    // bytes as before: `Host` is the address itself, and the connection closes after it.
    let req = Request::get(path)
        .header("Host", &addr.to_string())
        .header("Connection", "close");
    let resp = Conn::plain(addr)?.request(&req)?;
    Ok((resp.status, resp.text()))
}

/// The proxy as a child process. Dropping it sends SIGTERM, waits up to 5 s, then kills.
pub struct ProxyProcess {
    child: Child,
    exit: Option<ExitStatus>,
    dir: TempDir,
    config: PathBuf,
    admin: SocketAddr,
}

impl ProxyProcess {
    /// Spawns the proxy on `config_yaml` and waits (30 s at most) until `/readyz` on its
    /// admin address answers 200. Panics, showing its stderr, if it exits or times out.
    pub fn start(bin: &Path, config_yaml: &str) -> ProxyProcess {
        Self::start_with_env(bin, config_yaml, &[])
    }

    /// `start` with extra environment variables (e.g. `[("RUST_LOG", "debug")]`).
    pub fn start_with_env(bin: &Path, config_yaml: &str, env: &[(&str, &str)]) -> ProxyProcess {
        let mut p = Self::spawn(bin, config_yaml, env);
        if let Err(e) = p.wait_ready(Duration::from_secs(30)) {
            panic!(
                "proxy not ready: {e}\n--- config ---\n{config_yaml}\n--- stderr ---\n{}\n--- stdout ---\n{}",
                p.stderr_text(),
                p.stdout_text()
            );
        }
        p
    }

    /// Spawns `bin --config <dir>/proxy.yaml` without waiting for readiness (for tests of
    /// start-up failures: follow with `wait_exit`).
    pub fn spawn(bin: &Path, config_yaml: &str, env: &[(&str, &str)]) -> ProxyProcess {
        let dir = tempfile::Builder::new()
            .prefix("m2m-proxy-")
            .tempdir()
            .expect("temp dir");
        let config = dir.path().join("proxy.yaml");
        fs::write(&config, config_yaml).expect("write config");
        let stdout = File::create(dir.path().join("stdout.log")).unwrap();
        let stderr = File::create(dir.path().join("stderr.log")).unwrap();
        let mut cmd = Command::new(bin);
        cmd.arg("--config")
            .arg(&config)
            .current_dir(dir.path())
            .stdin(Stdio::null())
            .stdout(stdout)
            .stderr(stderr);
        for (k, v) in env {
            cmd.env(k, v);
        }
        let child = cmd
            .spawn()
            .unwrap_or_else(|e| panic!("spawn {}: {e}", bin.display()));
        ProxyProcess {
            child,
            exit: None,
            dir,
            config,
            admin: admin_addr_of(config_yaml),
        }
    }

    /// Polls `GET /readyz` until 200; Err if the process exits or `timeout` passes.
    pub fn wait_ready(&mut self, timeout: Duration) -> Result<(), String> {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(status) = self.try_exit() {
                return Err(format!("proxy exited with {status} before it was ready"));
            }
            let last = match http_get(self.admin, "/readyz") {
                Ok((200, _)) => return Ok(()),
                Ok((code, body)) => format!("/readyz answered {code} {body:?}"),
                Err(e) => format!("/readyz on {}: {e}", self.admin),
            };
            if Instant::now() >= deadline {
                return Err(format!("not ready after {timeout:?} ({last})"));
            }
            thread::sleep(POLL);
        }
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }
    /// The temp dir holding the config and the logs (and anything a test puts there).
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }
    pub fn config_path(&self) -> &Path {
        &self.config
    }
    pub fn admin_addr(&self) -> SocketAddr {
        self.admin
    }
    /// GET on the admin listener: (status, body).
    pub fn admin_get(&self, path: &str) -> Result<(u16, String), String> {
        http_get(self.admin, path)
    }
    /// Polls `/metrics` until the scrape contains `needle`; returns the last scrape either way.
    /// Counters of a request are updated just after its response is sent, so a scrape taken at
    /// once may miss them.
    pub fn wait_metrics(&self, needle: &str, timeout: Duration) -> (bool, String) {
        let mut scrape = String::new();
        let found = wait_for(
            || {
                scrape = self
                    .admin_get("/metrics")
                    .map(|(_, b)| b)
                    .unwrap_or_default();
                scrape.contains(needle)
            },
            timeout,
        );
        (found, scrape)
    }
    /// Replaces the config file atomically (for reload tests).
    pub fn rewrite_config(&self, yaml: &str) {
        write_atomic(&self.config, yaml.as_bytes());
    }

    pub fn stdout_text(&self) -> String {
        fs::read_to_string(self.dir.path().join("stdout.log")).unwrap_or_default()
    }
    pub fn stderr_text(&self) -> String {
        fs::read_to_string(self.dir.path().join("stderr.log")).unwrap_or_default()
    }
    /// Polls stderr until it contains `needle`; false on timeout.
    pub fn wait_stderr(&self, needle: &str, timeout: Duration) -> bool {
        wait_for(|| self.stderr_text().contains(needle), timeout)
    }
    /// Polls stdout (the access log, written just after each response) until it contains
    /// `needle`; returns the whole text, or `None` on timeout.
    pub fn wait_stdout(&self, needle: &str, timeout: Duration) -> Option<String> {
        let mut text = String::new();
        wait_for(
            || {
                text = self.stdout_text();
                text.contains(needle)
            },
            timeout,
        )
        .then_some(text)
    }

    fn try_exit(&mut self) -> Option<ExitStatus> {
        if self.exit.is_none() {
            self.exit = self.child.try_wait().ok().flatten();
        }
        self.exit
    }

    pub fn is_running(&mut self) -> bool {
        self.try_exit().is_none()
    }

    /// Sends a signal by name ("TERM", "SIGHUP", "INT", "KILL", ...) with `kill(1)`; true if
    /// sent. Does nothing (false) once the process has been reaped (its pid may be reused).
    pub fn signal(&mut self, name: &str) -> bool {
        if self.try_exit().is_some() {
            return false;
        }
        let name = name.trim_start_matches("SIG");
        Command::new("kill")
            .arg(format!("-{name}"))
            .arg(self.child.id().to_string())
            .stdin(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|s| s.success())
    }

    /// Waits up to `timeout` for the process to exit.
    pub fn wait_exit(&mut self, timeout: Duration) -> Option<ExitStatus> {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(s) = self.try_exit() {
                return Some(s);
            }
            if Instant::now() >= deadline {
                return None;
            }
            thread::sleep(POLL);
        }
    }

    /// SIGTERM, wait up to 5 s, then SIGKILL. Returns the exit status (None only if the
    /// process could not be waited for).
    pub fn stop(&mut self) -> Option<ExitStatus> {
        self.signal("TERM");
        if let Some(s) = self.wait_exit(Duration::from_secs(5)) {
            return Some(s);
        }
        let _ = self.child.kill();
        self.exit = self.child.wait().ok();
        self.exit
    }
}

impl Drop for ProxyProcess {
    fn drop(&mut self) {
        if self.try_exit().is_none() {
            self.stop();
        }
        if thread::panicking() {
            let mut log = String::new();
            let _ = File::open(self.dir.path().join("stderr.log"))
                .and_then(|mut f| f.read_to_string(&mut log));
            let tail: String = {
                let lines: Vec<&str> = log.lines().collect();
                lines[lines.len().saturating_sub(60)..].join("\n")
            };
            eprintln!(
                "--- proxy (pid {}) stderr, last 60 lines ---\n{tail}",
                self.child.id()
            );
        }
    }
}
