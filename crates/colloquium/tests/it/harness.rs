//! Runs the real binary on a temporary data dir and a free port on 127.0.0.1.
//!
//! `Node::start` waits for the `colloquium ready http=<addr> admin=<addr>` line (with a deadline, no fixed
//! sleeps); `kill9` and `terminate` stop it; `restart` starts it again on the same data dir.
//! The process is killed on drop.

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::mpsc;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::Value;
use tempfile::TempDir;

/// How long a node may take to print its ready line (debug build, fresh RocksDB).
const START_DEADLINE: Duration = Duration::from_secs(60);

/// This crate's directory, read when the test runs: a test binary reused from a build cache
/// filled by a checkout elsewhere would carry that checkout's path in `env!`.
pub fn manifest_dir() -> PathBuf {
    std::env::var_os("CARGO_MANIFEST_DIR")
        .map_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")), PathBuf::from)
}

/// `shared/` (the conformance suites) beside the repository, or `$COLLOQUIUM_SHARED_DIR`.
pub fn shared_dir() -> PathBuf {
    std::env::var("COLLOQUIUM_SHARED_DIR")
        .map(PathBuf::from)
        .ok()
        .or_else(|| {
            manifest_dir()
                .ancestors()
                .map(|a| a.join("shared"))
                .find(|p| p.is_dir())
        })
        .expect("shared/ (the conformance suites) beside the repository")
}

pub fn binary() -> &'static str {
    env!("CARGO_BIN_EXE_colloquium")
}

/// A running node.
pub struct Node {
    child: Child,
    pub addr: SocketAddr,
    /// The admin listener (`/admin/config`, `/admin/reload`).
    pub admin: SocketAddr,
    /// Sources with sockets of their own, as the ready line names them.
    pub sources: Vec<(String, SocketAddr)>,
    stdout: Arc<Mutex<Vec<String>>>,
    pub dir: Arc<TempDir>,
    config: String,
    pub client: reqwest::Client,
}

impl Node {
    /// Starts a node with `config` (YAML) on a fresh data dir.
    pub fn start(config: &str) -> Node {
        Self::start_with_files(config, &[])
    }

    /// Like [`Node::start`], with `files` (name, contents) written beside the config first.
    pub fn start_with_files(config: &str, files: &[(&str, &str)]) -> Node {
        let dir = Arc::new(tempfile::tempdir().expect("temp dir"));
        for (name, contents) in files {
            std::fs::write(dir.path().join(name), contents).expect("write file");
        }
        Self::start_in(dir, config)
    }

    /// The config file the node runs on (rewrite it to reload).
    pub fn config_path(&self) -> PathBuf {
        self.dir.path().join("colloquium.yaml")
    }

    /// Sends the node SIGHUP (a config reload).
    pub fn sighup(&self) {
        let status = Command::new("kill")
            .args(["-HUP", &self.pid().to_string()])
            .status()
            .expect("kill -HUP");
        assert!(status.success(), "kill -HUP failed");
    }

    /// `GET` or `POST` an admin route.
    pub async fn admin(&self, method: reqwest::Method, path: &str) -> (u16, Value) {
        let url = format!("http://{}{path}", self.admin);
        let response = self
            .client
            .request(method, url)
            .send()
            .await
            .expect("admin request");
        status_and_json(response).await
    }

    /// Like [`Node::start`], with extra environment variables for the node.
    pub fn start_with_env(config: &str, env: &[(&str, &str)]) -> Node {
        let dir = Arc::new(tempfile::tempdir().expect("temp dir"));
        Self::start_in_env(dir, config, env)
    }

    /// Starts a node on `dir` (its data in `dir/data`), e.g. a directory the test mounted.
    pub fn start_in(dir: Arc<TempDir>, config: &str) -> Node {
        Self::start_in_env(dir, config, &[])
    }

    /// Like [`Node::start_with_files`], logging at `level` into `node.log` in its directory
    /// (read it with [`Node::log`]).
    pub fn start_logged(config: &str, files: &[(&str, &str)], level: &str) -> Node {
        let dir = Arc::new(tempfile::tempdir().expect("temp dir"));
        for (name, contents) in files {
            std::fs::write(dir.path().join(name), contents).expect("write file");
        }
        let log = std::fs::File::create(dir.path().join("node.log")).expect("log file");
        Self::start_full(dir, config, &[], level, Stdio::from(log))
    }

    /// What a node started by [`Node::start_logged`] logged so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("node.log")).unwrap_or_default()
    }

    fn start_in_env(dir: Arc<TempDir>, config: &str, env: &[(&str, &str)]) -> Node {
        Self::start_full(dir, config, env, "warn", Stdio::inherit())
    }

    fn start_full(
        dir: Arc<TempDir>,
        config: &str,
        env: &[(&str, &str)],
        log: &str,
        stderr: Stdio,
    ) -> Node {
        let config_path = dir.path().join("colloquium.yaml");
        std::fs::write(&config_path, config).expect("write config");
        let data_dir = dir.path().join("data");
        let args = [
            "run",
            "-c",
            config_path.to_str().expect("utf-8 path"),
            "--data-dir",
            data_dir.to_str().expect("utf-8 path"),
            "--listen",
            "127.0.0.1:0",
        ];
        let (
            child,
            Ready {
                addr,
                admin,
                sources,
            },
            stdout,
        ) = spawn_ready_with_output(&args, dir.path(), log, stderr, env);
        Node {
            child,
            addr,
            admin,
            sources,
            stdout,
            dir,
            config: config.to_owned(),
            client: reqwest::Client::builder()
                .timeout(Duration::from_secs(60))
                .build()
                .expect("client"),
        }
    }

    /// Where source `name` listens (a source with a socket of its own).
    pub fn source_addr(&self, name: &str) -> SocketAddr {
        self.sources
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, a)| *a)
            .expect("the ready line names the source")
    }

    /// Every output of `pipeline`, paged through `/api/outputs`.
    pub async fn outputs(&self, pipeline: &str) -> Vec<Value> {
        let mut all = Vec::new();
        let mut cursor: Option<String> = None;
        loop {
            let mut path = format!("/api/outputs?pipeline={pipeline}&limit=10000");
            if let Some(c) = &cursor {
                path.push_str(&format!("&cursor={c}"));
            }
            let (status, page) = self.get(&path).await;
            assert_eq!(status, 200, "{page}");
            all.extend(page["outputs"].as_array().unwrap().iter().cloned());
            match page["next_cursor"].as_str() {
                Some(next) => cursor = Some(next.to_owned()),
                None => return all,
            }
        }
    }

    /// The dead letters `GET /api/dlq?<query>` lists (its first page).
    pub async fn dead_letters(&self, query: &str) -> Vec<Value> {
        let (status, page) = self.get(&format!("/api/dlq?{query}")).await;
        assert_eq!(status, 200, "{page}");
        page["dead_letters"].as_array().unwrap().clone()
    }

    /// What the node printed on stdout after its ready line (the `stdout` sink's output).
    pub fn stdout_lines(&self) -> Vec<String> {
        self.stdout.lock().unwrap().clone()
    }

    pub fn data_dir(&self) -> PathBuf {
        self.dir.path().join("data")
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    /// Kills the process with SIGKILL: no shutdown code runs.
    pub fn kill9(mut self) -> Stopped {
        let _ = self.child.kill();
        let _ = self.child.wait();
        Stopped {
            dir: self.dir.clone(),
            config: self.config.clone(),
        }
    }

    /// Sends SIGTERM and waits for the exit status.
    pub fn terminate(mut self) -> (ExitStatus, Stopped) {
        sigterm(&self.child);
        let exit = wait_with_deadline(&mut self.child, Duration::from_secs(60));
        (
            exit,
            Stopped {
                dir: self.dir.clone(),
                config: self.config.clone(),
            },
        )
    }

    pub async fn post(&self, body: &str, content_type: &str) -> (u16, Value) {
        self.post_to("/events", body, content_type).await
    }

    /// `POST /events` as a client under backpressure does: a 503 that says "retry shortly"
    /// (`lane_full` when the control plane paused the lane, `overloaded`) is retried after
    /// its `Retry-After`-sized pause until accepted. Tests that push volume on a busy CI
    /// machine use this; any other answer is returned as is.
    pub async fn post_accepted(&self, body: &str, content_type: &str) -> (u16, Value) {
        let deadline = Instant::now() + Duration::from_secs(120);
        loop {
            let (status, reply) = self.post(body, content_type).await;
            let retry = status == 503
                && matches!(reply["reason"].as_str(), Some("lane_full" | "overloaded"));
            if !retry || Instant::now() > deadline {
                return (status, reply);
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// `POST` to `path` (with its query string).
    pub async fn post_to(&self, path: &str, body: &str, content_type: &str) -> (u16, Value) {
        let response = self
            .client
            .post(self.url(path))
            .header("content-type", content_type)
            .body(body.to_owned())
            .send()
            .await
            .expect("POST /events");
        status_and_json(response).await
    }

    pub async fn get(&self, path: &str) -> (u16, Value) {
        let response = self.client.get(self.url(path)).send().await.expect("GET");
        status_and_json(response).await
    }

    pub async fn get_text(&self, path: &str) -> (u16, String) {
        let response = self.client.get(self.url(path)).send().await.expect("GET");
        let status = response.status().as_u16();
        (status, response.text().await.expect("body"))
    }

    /// Returns every stored event, via the replay stream.
    pub async fn all_events(&self) -> Vec<Value> {
        let (status, text) = self.get_text("/api/events/stream").await;
        assert_eq!(status, 200);
        text.lines()
            .map(|l| serde_json::from_str(l).expect("stored event is JSON"))
            .collect()
    }

    /// Returns (VmRSS, VmHWM) of the node in bytes.
    pub fn rss(&self) -> (u64, u64) {
        let status =
            std::fs::read_to_string(format!("/proc/{}/status", self.pid())).expect("proc status");
        let field = |name: &str| -> u64 {
            let line = status.lines().find(|l| l.starts_with(name)).expect("field");
            line.split_whitespace()
                .nth(1)
                .and_then(|v| v.parse::<u64>().ok())
                .expect("kib")
                * 1024
        };
        (field("VmRSS:"), field("VmHWM:"))
    }
}

/// A response's status and its body as JSON (`null` when it is not JSON).
async fn status_and_json(response: reqwest::Response) -> (u16, Value) {
    let status = response.status().as_u16();
    let bytes = response.bytes().await.expect("body");
    (
        status,
        serde_json::from_slice(&bytes).unwrap_or(Value::Null),
    )
}

impl Drop for Node {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A stopped node's data dir and config.
pub struct Stopped {
    pub dir: Arc<TempDir>,
    config: String,
}

impl Stopped {
    pub fn restart(self) -> Node {
        Node::start_in(self.dir, &self.config)
    }

    /// Restarts on the same data directory with another config.
    pub fn restart_with(self, config: &str) -> Node {
        Node::start_in(self.dir, config)
    }
}

/// The addresses a node's ready line names.
#[derive(Clone, Debug)]
pub struct Ready {
    pub addr: SocketAddr,
    pub admin: SocketAddr,
    /// Sources with sockets of their own (`NAME=addr`).
    pub sources: Vec<(String, SocketAddr)>,
}

/// Spawns `colloquium <args>` in `cwd` with `RUST_LOG=<log>` and stdout piped, and waits for
/// its ready line. A `run` gets `--admin-listen 127.0.0.1:0` (tests run nodes side by side).
pub fn spawn_ready(args: &[&str], cwd: &Path, log: &str, stderr: Stdio) -> (Child, Ready) {
    let (child, ready, _) = spawn_ready_with_output(args, cwd, log, stderr, &[]);
    (child, ready)
}

/// Like [`spawn_ready`], also returning the node's stdout lines after the ready line.
fn spawn_ready_with_output(
    args: &[&str],
    cwd: &Path,
    log: &str,
    stderr: Stdio,
    env: &[(&str, &str)],
) -> (Child, Ready, Arc<Mutex<Vec<String>>>) {
    let mut child = Command::new(binary())
        .args(args)
        .envs(env.iter().copied())
        .args(if args.first() == Some(&"run") {
            &["--admin-listen", "127.0.0.1:0"][..]
        } else {
            &[]
        })
        .current_dir(cwd)
        .env("RUST_LOG", log)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(stderr)
        .spawn()
        .expect("spawn colloquium");
    let (ready, lines) = wait_ready(&mut child);
    (child, ready, lines)
}

/// Waits for the ready line; the node's later stdout lines are kept in the returned buffer.
fn wait_ready(child: &mut Child) -> (Ready, Arc<Mutex<Vec<String>>>) {
    let stdout = child.stdout.take().expect("stdout piped");
    let lines = Arc::new(Mutex::new(Vec::new()));
    let (tx, rx) = mpsc::channel();
    std::thread::spawn({
        let lines = lines.clone();
        move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                match line.strip_prefix("colloquium ready ") {
                    Some(rest) => {
                        let field = |name: &str| -> SocketAddr {
                            rest.split(' ')
                                .find_map(|f| f.strip_prefix(name))
                                .and_then(|a| a.parse().ok())
                                .expect("ready line names its addresses")
                        };
                        let sources = rest
                            .split(' ')
                            .filter(|f| !f.starts_with("http=") && !f.starts_with("admin="))
                            .filter_map(|f| {
                                let (name, addr) = f.split_once('=')?;
                                Some((name.to_owned(), addr.parse().ok()?))
                            })
                            .collect();
                        let _ = tx.send(Ready {
                            addr: field("http="),
                            admin: field("admin="),
                            sources,
                        });
                    }
                    None => lines.lock().unwrap().push(line),
                }
            }
        }
    });
    match rx.recv_timeout(START_DEADLINE) {
        Ok(ready) => (ready, lines),
        Err(_) => {
            let _ = child.kill();
            let status = child.wait();
            panic!("node did not become ready within {START_DEADLINE:?}: {status:?}");
        }
    }
}

/// Sends SIGTERM to `child` (through `kill`: the workspace forbids `unsafe`, so no libc).
pub fn sigterm(child: &Child) {
    let status = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .expect("kill -TERM");
    assert!(status.success(), "kill -TERM failed");
}

pub fn wait_with_deadline(child: &mut Child, deadline: Duration) -> ExitStatus {
    let until = Instant::now() + deadline;
    loop {
        if let Some(status) = child.try_wait().expect("try_wait") {
            return status;
        }
        if Instant::now() > until {
            let _ = child.kill();
            panic!("process did not exit within {deadline:?}");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Runs the binary with `args` to completion, returning (exit code, stdout, stderr).
pub fn run_cli(args: &[&str], cwd: Option<&Path>) -> (i32, String, String) {
    let mut command = Command::new(binary());
    command
        .args(args)
        .env("RUST_LOG", "warn")
        .stdin(Stdio::null());
    if let Some(cwd) = cwd {
        command.current_dir(cwd);
    }
    let output = command.output().expect("run colloquium");
    (
        output.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&output.stdout).into_owned(),
        String::from_utf8_lossy(&output.stderr).into_owned(),
    )
}

/// Runs `scripts/bootstrap.sh` with `args` and `env` (the tests point its detection at
/// fakes); returns its exit code and stdout.
pub fn run_bootstrap(args: &[&str], env: &[(&str, &Path)]) -> (Option<i32>, String) {
    let script = manifest_dir().join("../../scripts/bootstrap.sh");
    let output = Command::new("bash")
        .arg(&script)
        .args(args)
        .envs(env.iter().copied())
        .output()
        .expect("run bootstrap.sh");
    (
        output.status.code(),
        String::from_utf8_lossy(&output.stdout).into_owned(),
    )
}

/// Where `scripts/bootstrap.sh --test` installs tools: `COLLOQUIUM_TOOLS_DIR`, else
/// `~/.cache/colloquium-tools`.
pub fn tools_dir() -> PathBuf {
    std::env::var("COLLOQUIUM_TOOLS_DIR").map_or_else(
        |_| PathBuf::from(std::env::var("HOME").expect("HOME")).join(".cache/colloquium-tools"),
        PathBuf::from,
    )
}

/// Writes an executable shell script `name` in `dir` running `body`: a fake of a tool a script
/// checks for.
pub fn fake_script(dir: &Path, name: &str, body: &str) -> PathBuf {
    use std::os::unix::fs::PermissionsExt;
    let path = dir.join(name);
    std::fs::write(&path, format!("#!/bin/sh\n{body}\n")).expect("write the fake");
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).expect("chmod");
    path
}

/// Polls `check` until it returns `Some`, failing after `deadline`.
pub async fn eventually<T, F, Fut>(deadline: Duration, what: &str, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let until = Instant::now() + deadline;
    loop {
        if let Some(value) = check().await {
            return value;
        }
        assert!(Instant::now() < until, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// An HTTP endpoint on 127.0.0.1 for `http` sinks: answers every POST with the status set by
/// [`Receiver::answer`] (200 by default) and keeps the events of the requests it answered 2xx.
pub struct Receiver {
    pub url: String,
    status: Arc<std::sync::atomic::AtomicU16>,
    received: Arc<Mutex<Vec<Value>>>,
    /// `true`: every request is held open until [`Receiver::release`].
    hold: Arc<tokio::sync::watch::Sender<bool>>,
    /// Requests that arrived while held.
    held: Arc<std::sync::atomic::AtomicUsize>,
    task: tokio::task::JoinHandle<()>,
}

impl Receiver {
    pub async fn start() -> Receiver {
        use std::sync::atomic::{AtomicU16, Ordering};
        let status = Arc::new(AtomicU16::new(200));
        let received = Arc::new(Mutex::new(Vec::new()));
        let hold = Arc::new(tokio::sync::watch::Sender::new(false));
        let held = Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let app = axum::Router::new().route(
            "/hook",
            axum::routing::post({
                let (status, received) = (status.clone(), received.clone());
                let (hold, held) = (hold.clone(), held.clone());
                move |axum::Json(batch): axum::Json<Vec<Value>>| async move {
                    let mut open = hold.subscribe();
                    if *open.borrow() {
                        held.fetch_add(1, Ordering::AcqRel);
                        let _ = open.wait_for(|hold| !*hold).await;
                    }
                    let code = status.load(Ordering::Relaxed);
                    if (200..300).contains(&code) {
                        received.lock().unwrap().extend(batch);
                    }
                    axum::http::StatusCode::from_u16(code).unwrap()
                }
            }),
        );
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}/hook", listener.local_addr().unwrap());
        let task = tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        Receiver {
            url,
            status,
            received,
            hold,
            held,
            task,
        }
    }

    /// Holds every request open from now on, until [`Receiver::release`].
    pub fn hold(&self) {
        self.hold.send_replace(true);
    }

    /// Answers the held requests, and the next ones at once.
    pub fn release(&self) {
        self.hold.send_replace(false);
    }

    /// How many requests arrived while held.
    pub fn held(&self) -> usize {
        self.held.load(std::sync::atomic::Ordering::Acquire)
    }

    /// Answers every request from now on with `status`.
    pub fn answer(&self, status: u16) {
        self.status
            .store(status, std::sync::atomic::Ordering::Relaxed);
    }

    /// The results received so far, whole.
    pub fn received(&self) -> Vec<Value> {
        self.received.lock().unwrap().clone()
    }
}

impl Drop for Receiver {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// A tmpfs of `size` mounted on a fresh temporary directory, unmounted on drop; `None` where
/// the test cannot mount (not root, no CAP_SYS_ADMIN).
pub struct Tmpfs {
    pub dir: std::sync::Arc<tempfile::TempDir>,
}

impl Tmpfs {
    pub fn mount(size: &str) -> Option<Tmpfs> {
        let dir = tempfile::tempdir().ok()?;
        let status = std::process::Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
            .arg(dir.path())
            .stderr(std::process::Stdio::null())
            .status()
            .ok()?;
        status.success().then(|| Tmpfs {
            dir: std::sync::Arc::new(dir),
        })
    }

    /// Appends zeros to `name` until the file system is full (again: RocksDB frees space as it
    /// deletes obsolete files, so a test keeps topping it up).
    pub fn fill(&self, name: &str) {
        use std::io::Write;
        let mut file = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.dir.path().join(name))
            .unwrap();
        let chunk = vec![0u8; 1 << 20];
        while file.write_all(&chunk).is_ok() {}
        while file.write_all(&chunk[..4096]).is_ok() {}
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = std::process::Command::new("umount")
            .arg("-l")
            .arg(self.dir.path())
            .status();
    }
}
