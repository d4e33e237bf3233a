//! Test harness: the real `gts-webchat` binary, started on an ephemeral port with its own temp
//! dirs, talked to over HTTP the way a client would. No mocks of our own relay, no sleeps as
//! synchronisation: every wait is a condition with a deadline.
#![allow(dead_code)]

pub mod bridge;
pub mod hosts;
pub mod model;
pub mod world;

use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Output, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use serde_json::{Value, json};

pub const BIN: &str = env!("CARGO_BIN_EXE_gts-webchat");

/// Environment variables that could leak in from the developer's shell and change behaviour.
const SCRUB: &[&str] = &[
    "HOST",
    "PORT",
    "BRIDGE_DB_PATH",
    "PCHAT_UPLOAD_DIR",
    "PCHAT_FREE_MODE_ENABLED",
    "PCHAT_DEV_EXPOSE_CODES",
    "SMTP_HOST",
    "SMTP_PORT",
    "SMTP_USERNAME",
    "SMTP_PASSWORD",
    "SMTP_FROM",
    "RELAY_URL",
    "WEBCHAT_URL",
    "RUST_LOG",
    "DATABASE_URL",
];

/// The PostgreSQL server the PostgreSQL tests use (an admin connection to it).
pub fn pg_admin_url() -> String {
    std::env::var("GTSW_PG_ADMIN").unwrap_or_else(|_| "postgres://root@127.0.0.1:5432/test".into())
}

/// A fresh PostgreSQL database for one test, dropped (with whoever is connected) at the end.
pub struct TestDb {
    pub url: String,
    name: String,
    admin: String,
}

impl TestDb {
    pub fn create() -> TestDb {
        TestDb::create_on(&pg_admin_url())
    }

    pub fn create_on(admin: &str) -> TestDb {
        use std::sync::atomic::{AtomicU32, Ordering};
        static N: AtomicU32 = AtomicU32::new(0);
        let name = format!(
            "gtsw_t{}_{}_{:08x}",
            std::process::id(),
            N.fetch_add(1, Ordering::Relaxed),
            rand_u32()
        );
        psql(admin, &format!("CREATE DATABASE {name}"));
        let base = admin.rsplit_once('/').map_or(admin, |(b, _)| b);
        TestDb {
            url: format!("{base}/{name}"),
            name,
            admin: admin.to_string(),
        }
    }

    /// Runs SQL in this database (for tests that look at or break what the relay stored).
    pub fn sql(&self, sql: &str) -> String {
        psql(&self.url, sql)
    }
}

impl Drop for TestDb {
    fn drop(&mut self) {
        let _ = Command::new("psql")
            .args([&self.admin, "-qAtX", "-c"])
            .arg(format!(
                "DROP DATABASE IF EXISTS {} WITH (FORCE)",
                self.name
            ))
            .output();
    }
}

fn rand_u32() -> u32 {
    let t = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.subsec_nanos())
        .unwrap_or(0);
    t ^ std::process::id().rotate_left(16)
}

/// Runs SQL with psql and returns its unaligned output; panics with psql's error on failure.
pub fn psql(url: &str, sql: &str) -> String {
    let out = Command::new("psql")
        .args([url, "-qAtX", "-v", "ON_ERROR_STOP=1", "-c", sql])
        .output()
        .expect("run psql (is the postgresql-client package installed?)");
    assert!(
        out.status.success(),
        "psql {sql:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

/// A private HOME and XDG tree for one test.
pub struct Sandbox {
    pub dir: tempfile::TempDir,
    /// The PostgreSQL database of the relay started here, for `gts-webchat relay …` commands
    /// run in this sandbox (as DATABASE_URL), and for a relay started here again (the same
    /// data, as the same data dir on SQLite).
    database: std::sync::Mutex<Option<std::sync::Arc<TestDb>>>,
}

impl Drop for Sandbox {
    /// A test that fails before `daemon stop` must not leave its daemons running: kill every
    /// daemon whose lock file lives in this sandbox.
    fn drop(&mut self) {
        let tasks = self.path().join("state/gts-webchat/tasks");
        for task in std::fs::read_dir(tasks).into_iter().flatten().flatten() {
            if let Ok(pid) = std::fs::read_to_string(task.path().join("daemon.lock")) {
                let pid = pid.trim();
                if !pid.is_empty() && std::path::Path::new(&format!("/proc/{pid}")).exists() {
                    signal(pid.parse().unwrap_or(0), "KILL");
                }
            }
        }
    }
}

impl Sandbox {
    pub fn new() -> Sandbox {
        Sandbox {
            dir: tempfile::Builder::new()
                .prefix("gtswc-")
                .tempdir()
                .expect("temp dir"),
            database: std::sync::Mutex::new(None),
        }
    }
    pub fn path(&self) -> &Path {
        self.dir.path()
    }
    /// HOME and the XDG dirs, all inside the sandbox.
    pub fn env(&self) -> Vec<(String, String)> {
        let p = self.path();
        let runtime = p.join("run");
        std::fs::create_dir_all(&runtime).ok();
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            std::fs::set_permissions(&runtime, std::fs::Permissions::from_mode(0o700)).ok();
        }
        vec![
            ("HOME".into(), p.join("home").display().to_string()),
            ("XDG_DATA_HOME".into(), p.join("data").display().to_string()),
            (
                "XDG_CONFIG_HOME".into(),
                p.join("config").display().to_string(),
            ),
            (
                "XDG_STATE_HOME".into(),
                p.join("state").display().to_string(),
            ),
            ("XDG_RUNTIME_DIR".into(), runtime.display().to_string()),
        ]
    }
    /// A `gts-webchat` command with the sandbox's environment.
    pub fn cmd(&self) -> Command {
        let mut c = Command::new(BIN);
        for k in SCRUB {
            c.env_remove(k);
        }
        c.envs(self.env());
        c.current_dir(self.path());
        c
    }
    /// A `gts-webchat relay …` command: also given the relay's database as DATABASE_URL
    /// (only these: every other command's environment reaches hooks and AI hosts).
    pub fn relay_cmd(&self) -> Command {
        let mut c = self.cmd();
        if let Some(db) = self.database.lock().ok().and_then(|d| d.clone()) {
            c.env("DATABASE_URL", &db.url);
        }
        c
    }
}

/// A running relay process.
pub struct Relay {
    child: Option<Child>,
    pub url: String,
    pub data_dir: PathBuf,
    pub log: PathBuf,
    extra_env: Vec<(String, String)>,
    sandbox_env: Vec<(String, String)>,
    cwd: PathBuf,
    starts: u32,
    /// Its PostgreSQL database, when the suite runs on PostgreSQL (GTSW_TEST_DATABASE).
    pub db: Option<std::sync::Arc<TestDb>>,
}

impl Relay {
    pub fn start(sb: &Sandbox) -> Relay {
        Relay::start_with(sb, &[])
    }

    pub fn start_with(sb: &Sandbox, env: &[(&str, &str)]) -> Relay {
        Relay::start_args(sb, &["--port", "0"], env)
    }

    /// Starts the relay with exactly these extra arguments (no --port unless given).
    pub fn start_args(sb: &Sandbox, args: &[&str], env: &[(&str, &str)]) -> Relay {
        // The whole suite on PostgreSQL: every sandbox's relay gets a fresh database on that
        // server, kept for a relay started in the same sandbox again.
        let db = std::env::var("GTSW_TEST_DATABASE")
            .ok()
            .filter(|u| u.starts_with("postgres"))
            .map(|admin| {
                let kept = sb.database.lock().ok().and_then(|d| d.clone());
                kept.unwrap_or_else(|| std::sync::Arc::new(TestDb::create_on(&admin)))
            });
        Relay::start_on(sb, db, args, env)
    }

    /// Starts a relay on this PostgreSQL database (several relays may share one).
    pub fn start_on(
        sb: &Sandbox,
        db: Option<std::sync::Arc<TestDb>>,
        args: &[&str],
        env: &[(&str, &str)],
    ) -> Relay {
        if let (Some(d), Ok(mut slot)) = (&db, sb.database.lock()) {
            *slot = Some(d.clone());
        }
        let mut r = Relay {
            db,
            child: None,
            url: String::new(),
            data_dir: sb.path().join("relay-data"),
            log: sb.path().join("relay.log"),
            extra_env: env
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
            sandbox_env: sb.env(),
            cwd: sb.path().to_path_buf(),
            starts: 0,
        };
        r.spawn(args);
        r
    }

    fn spawn(&mut self, args: &[&str]) {
        self.starts += 1;
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.log)
            .expect("relay log");
        let mut cmd = Command::new(BIN);
        for k in SCRUB {
            cmd.env_remove(k);
        }
        cmd.envs(self.sandbox_env.iter().cloned())
            .env("RUST_LOG", "debug")
            .envs(self.extra_env.iter().cloned())
            .current_dir(&self.cwd)
            .arg("relay")
            .arg("--data-dir")
            .arg(&self.data_dir)
            .args(
                self.db
                    .iter()
                    .flat_map(|d| ["--database".to_string(), d.url.clone()]),
            )
            .args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::from(log));
        let mut child = cmd.spawn().expect("spawn relay");
        let stdout = child.stdout.take().expect("relay stdout");
        let url = read_listening_url(stdout, Duration::from_secs(30)).unwrap_or_else(|| {
            panic!("relay did not print its address; log:\n{}", self.log_text())
        });
        self.url = url;
        self.child = Some(child);
    }

    /// Waits until the relay process is gone (a failpoint aborted it), zombie or reaped.
    pub fn wait_aborted(&self, limit: Duration) {
        let pid = self.pid();
        wait_for(limit, "the relay to abort", || {
            (!Path::new(&format!("/proc/{pid}/cmdline")).exists()
                || std::fs::read_to_string(format!("/proc/{pid}/stat"))
                    .is_ok_and(|s| s.contains(") Z ")))
            .then_some(())
        });
    }

    /// kill -9: no shutdown path runs.
    pub fn kill9(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// Starts again on the same data dir (a new ephemeral port).
    pub fn restart(&mut self) {
        self.restart_same(&["--port", "0"]);
    }

    /// kill -9, then start again (a new port) with `env` as its extra environment instead.
    pub fn restart_env(&mut self, env: &[(&str, &str)]) {
        self.extra_env = env
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        self.restart();
    }

    /// kill -9, then start again on the same data dir with these arguments.
    pub fn restart_same(&mut self, args: &[&str]) {
        self.kill9();
        self.spawn(args);
    }

    pub fn pid(&self) -> u32 {
        self.child.as_ref().map(|c| c.id()).unwrap_or(0)
    }

    /// SIGTERM, then wait (with a deadline) for the exit status.
    pub fn terminate(&mut self) -> ExitStatus {
        let mut child = self.child.take().expect("relay running");
        signal(child.id(), "TERM");
        wait_child(&mut child, Duration::from_secs(30)).expect("relay did not exit after SIGTERM")
    }

    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// How many requests to `path` the relay has started (from its debug log).
    pub fn requests_started(&self, path: &str) -> usize {
        let needle = format!("path={path}}}");
        self.log_text()
            .lines()
            .filter(|l| l.contains("started processing request") && l.contains(&needle))
            .count()
    }

    /// Waits until the relay has started `n` more requests to `path` than `before`.
    pub fn wait_requests(&self, path: &str, before: usize, n: usize) {
        wait_for(
            Duration::from_secs(20),
            "requests to reach the relay",
            || (self.requests_started(path) >= before + n).then_some(()),
        );
    }

    pub fn api(&self) -> Api {
        Api::new(&self.url)
    }
}

impl Drop for Relay {
    fn drop(&mut self) {
        self.kill9();
    }
}

/// Sends a signal by name with kill(1), to keep the harness free of unsafe code.
pub fn signal(pid: u32, sig: &str) {
    let _ = Command::new("kill")
        .arg(format!("-{sig}"))
        .arg(pid.to_string())
        .status();
}

pub fn wait_child(child: &mut Child, limit: Duration) -> Option<ExitStatus> {
    let deadline = Instant::now() + limit;
    blocking(|| {
        loop {
            if let Ok(Some(status)) = child.try_wait() {
                return Some(status);
            }
            if Instant::now() > deadline {
                return None;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    })
}

/// Reads stdout lines until `relay listening on URL`; the rest keeps draining in a thread.
fn read_listening_url(stdout: std::process::ChildStdout, limit: Duration) -> Option<String> {
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        let mut sent = false;
        for line in BufReader::new(stdout).lines() {
            let Ok(line) = line else { break };
            if !sent && let Some(url) = line.strip_prefix("relay listening on ") {
                let _ = tx.send(url.trim().to_string());
                sent = true;
            }
        }
    });
    rx.recv_timeout(limit).ok()
}

/// Runs a blocking wait; inside a multi-thread runtime (an async test) it tells the runtime
/// this worker blocks, so the test's other tasks keep running meanwhile.
fn blocking<T>(wait: impl FnOnce() -> T) -> T {
    match tokio::runtime::Handle::try_current() {
        Ok(h) if h.runtime_flavor() == tokio::runtime::RuntimeFlavor::MultiThread => {
            tokio::task::block_in_place(wait)
        }
        _ => wait(),
    }
}

/// Polls `cond` until it holds or the deadline passes.
pub fn wait_for<T>(limit: Duration, what: &str, mut cond: impl FnMut() -> Option<T>) -> T {
    blocking(|| {
        let deadline = Instant::now() + limit;
        loop {
            if let Some(v) = cond() {
                return v;
            }
            if Instant::now() > deadline {
                panic!("timed out after {limit:?} waiting for {what}");
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    })
}

/// A plain HTTP client for the relay's API.
#[derive(Clone)]
pub struct Api {
    pub base: String,
    http: reqwest::Client,
    /// Every login code this client was handed, so tests can prove none reached a log.
    pub codes: std::sync::Arc<std::sync::Mutex<Vec<String>>>,
}

impl Api {
    pub fn new(base: &str) -> Api {
        Api::build(base, reqwest::Client::builder())
    }

    /// A client whose connections come from `ip` (any 127.x.y.z on Linux), so tests can be
    /// several network addresses without a proxy.
    pub fn from_address(base: &str, ip: &str) -> Api {
        let ip: std::net::IpAddr = ip.parse().expect("an IP address");
        Api::build(base, reqwest::Client::builder().local_address(ip))
    }

    fn build(base: &str, builder: reqwest::ClientBuilder) -> Api {
        gts_webchat::client::install_crypto();
        Api {
            base: base.trim_end_matches('/').to_string(),
            http: builder.no_proxy().build().expect("http client"),
            codes: Default::default(),
        }
    }

    /// A request with arbitrary headers (Origin, Host…), as a browser or attacker sends it.
    pub async fn with_headers(
        &self,
        method: reqwest::Method,
        path: &str,
        headers: &[(&str, &str)],
        body: Option<&str>,
    ) -> (u16, Value, reqwest::header::HeaderMap) {
        let mut req = self.http.request(method, format!("{}{}", self.base, path));
        for (k, v) in headers {
            req = req.header(*k, *v);
        }
        if let Some(b) = body {
            req = req.body(b.to_string());
        }
        let resp = req.send().await.expect("request reached the relay");
        let status = resp.status().as_u16();
        let headers = resp.headers().clone();
        let bytes = resp.bytes().await.expect("response body");
        let value = serde_json::from_slice(&bytes)
            .unwrap_or_else(|_| Value::String(String::from_utf8_lossy(&bytes).into_owned()));
        (status, value, headers)
    }

    pub async fn raw(
        &self,
        method: reqwest::Method,
        path: &str,
        token: Option<&str>,
        body: Option<Vec<u8>>,
        content_type: Option<&str>,
    ) -> (u16, Value, reqwest::header::HeaderMap) {
        let mut req = self.http.request(method, format!("{}{}", self.base, path));
        if let Some(t) = token {
            req = req.header("X-PChat-Session", t);
        }
        if let Some(ct) = content_type {
            req = req.header("Content-Type", ct);
        }
        if let Some(b) = body {
            req = req.body(b);
        }
        let resp = req.send().await.expect("request reached the relay");
        let status = resp.status().as_u16();
        let headers = resp.headers().clone();
        let bytes = resp.bytes().await.expect("response body");
        let value = serde_json::from_slice(&bytes)
            .unwrap_or_else(|_| Value::String(String::from_utf8_lossy(&bytes).into_owned()));
        (status, value, headers)
    }

    /// A JSON POST that may lose its answer (the relay crashing mid-request): `Err` then.
    pub async fn try_post(
        &self,
        path: &str,
        token: &str,
        body: Value,
    ) -> Result<(u16, Value), reqwest::Error> {
        let resp = self
            .http
            .post(format!("{}{}", self.base, path))
            .header("X-PChat-Session", token)
            .json(&body)
            .send()
            .await?;
        let status = resp.status().as_u16();
        let value = resp.json::<Value>().await?;
        Ok((status, value))
    }

    pub async fn post(&self, path: &str, token: Option<&str>, body: Value) -> (u16, Value) {
        let (s, v, _) = self
            .raw(
                reqwest::Method::POST,
                path,
                token,
                Some(body.to_string().into_bytes()),
                Some("application/json"),
            )
            .await;
        (s, v)
    }

    pub async fn put(&self, path: &str, token: Option<&str>, body: Value) -> (u16, Value) {
        let (s, v, _) = self
            .raw(
                reqwest::Method::PUT,
                path,
                token,
                Some(body.to_string().into_bytes()),
                Some("application/json"),
            )
            .await;
        (s, v)
    }

    /// POST without a Content-Type, as the seed's edit/delete/read examples do.
    pub async fn post_untyped(&self, path: &str, token: Option<&str>, body: Value) -> (u16, Value) {
        let (s, v, _) = self
            .raw(
                reqwest::Method::POST,
                path,
                token,
                Some(body.to_string().into_bytes()),
                None,
            )
            .await;
        (s, v)
    }

    pub async fn get(&self, path: &str, token: Option<&str>) -> (u16, Value) {
        let (s, v, _) = self
            .raw(reqwest::Method::GET, path, token, None, None)
            .await;
        (s, v)
    }

    /// request-code + verify-code with the exposed dev code; returns the session token.
    pub async fn login(&self, email: &str, address: &str, kind: &str) -> String {
        let (s, v) = self
            .post(
                "/api/v1/pchat/auth/request-code",
                None,
                json!({"email": email, "display_name": address, "purpose": "login"}),
            )
            .await;
        assert_eq!(s, 200, "request-code: {v}");
        let code = v["dev_code"]
            .as_str()
            .expect("dev code exposed")
            .to_string();
        self.codes.lock().unwrap().push(code.clone());
        let (s, v) = self
            .post(
                "/api/v1/pchat/auth/verify-code",
                None,
                json!({"email": email, "code": code, "display_name": address,
                       "chat_address": address, "public_visible": true, "kind": kind}),
            )
            .await;
        assert_eq!(s, 200, "verify-code: {v}");
        v["session_token"].as_str().expect("token").to_string()
    }

    pub async fn send(&self, token: &str, from: &str, to: &str, text: &str) -> String {
        let (s, v) = self
            .post(
                "/api/v1/messages",
                Some(token),
                json!({"phone_id": "pchat_free_phone", "channel": "pchat", "source": from, "to": to, "text": text}),
            )
            .await;
        assert_eq!(s, 200, "send: {v}");
        v["message_id"].as_str().expect("message id").to_string()
    }

    /// Uploads `bytes` as `name` (with `mime` as the part's type when given); the answer.
    pub async fn upload(
        &self,
        token: &str,
        name: &str,
        bytes: Vec<u8>,
        mime: Option<&str>,
    ) -> (u16, Value) {
        let mut part = reqwest::multipart::Part::bytes(bytes).file_name(name.to_string());
        if let Some(m) = mime {
            part = part.mime_str(m).expect("a MIME type");
        }
        let resp = self
            .http
            .post(format!("{}/api/v1/webchat/upload", self.base))
            .header("X-PChat-Session", token)
            .multipart(reqwest::multipart::Form::new().part("file", part))
            .send()
            .await
            .expect("upload reached the relay");
        let status = resp.status().as_u16();
        (status, resp.json().await.unwrap_or(Value::Null))
    }

    /// The texts of a conversation's history (`with`: an address, URL-encoded), oldest first.
    pub async fn history_texts(&self, token: &str, with: &str) -> Vec<String> {
        let (s, v) = self
            .get(
                &format!("/api/v1/webchat/history?with={with}&limit=200"),
                Some(token),
            )
            .await;
        assert_eq!(s, 200, "history: {v}");
        v["messages"]
            .as_array()
            .expect("messages")
            .iter()
            .map(|m| m["text"].as_str().unwrap_or_default().to_string())
            .collect()
    }

    pub async fn poll(&self, token: &str, body: Value) -> Value {
        let (s, v) = self.post("/api/v1/webchat/poll", Some(token), body).await;
        assert_eq!(s, 200, "poll: {v}");
        v
    }
}

/// Whether `secret` appears in `log` as a whole token (not inside a longer run of digits or
/// hex), ignoring each line's leading timestamp, where six digits can occur by chance.
pub fn log_contains_secret(log: &str, secret: &str) -> bool {
    log.lines().any(|line| {
        let body = line.get(27..).unwrap_or("");
        body.match_indices(secret).any(|(i, _)| {
            let before = body[..i].chars().next_back();
            let after = body[i + secret.len()..].chars().next();
            !before.is_some_and(|c| c.is_ascii_alphanumeric())
                && !after.is_some_and(|c| c.is_ascii_alphanumeric())
        })
    })
}

/// Asserts the JSON error shape and code.
pub fn assert_error(status: u16, body: &Value, want_status: u16, want_code: &str) {
    assert_eq!(status, want_status, "status for {body}");
    assert_eq!(body["ok"], json!(false), "ok:false in {body}");
    assert_eq!(body["error"]["code"], json!(want_code), "code in {body}");
    assert!(
        body["error"]["message"]
            .as_str()
            .is_some_and(|m| !m.is_empty()),
        "a message in {body}"
    );
}

pub fn texts(poll: &Value) -> Vec<String> {
    poll["messages"]
        .as_array()
        .map(|a| {
            a.iter()
                .map(|m| m["text"].as_str().unwrap_or_default().to_string())
                .collect()
        })
        .unwrap_or_default()
}

/// A minimal SMTP server for tests: accepts one session and returns the message's DATA.
pub fn smtp_sink() -> (u16, std::thread::JoinHandle<String>) {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let handle = std::thread::spawn(move || {
        let (stream, _) = listener.accept().unwrap();
        stream
            .set_read_timeout(Some(Duration::from_secs(30)))
            .unwrap();
        let mut out = stream.try_clone().unwrap();
        let mut reader = BufReader::new(stream);
        write!(out, "220 sink ESMTP\r\n").unwrap();
        let (mut data, mut in_data, mut line) = (String::new(), false, String::new());
        loop {
            line.clear();
            if reader.read_line(&mut line).unwrap_or(0) == 0 {
                break;
            }
            if in_data {
                if line == ".\r\n" {
                    // Done: the relay's pooled connection may stay open, so do not wait for QUIT.
                    write!(out, "250 queued\r\n").unwrap();
                    break;
                } else {
                    data.push_str(&line);
                }
                continue;
            }
            match line.get(..4).unwrap_or("").to_ascii_uppercase().as_str() {
                "EHLO" | "HELO" => write!(out, "250-sink\r\n250 8BITMIME\r\n").unwrap(),
                "DATA" => {
                    in_data = true;
                    write!(out, "354 go on\r\n").unwrap();
                }
                "QUIT" => {
                    write!(out, "221 bye\r\n").unwrap();
                    break;
                }
                _ => write!(out, "250 ok\r\n").unwrap(),
            }
        }
        data
    });
    (port, handle)
}

/// A port that was free a moment ago (for tests that must restart on the same port).
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free port")
}

/// A long-running `gts-webchat` (watch, daemon run, tail -f) whose stdout lines arrive on a
/// channel and whose stderr goes to a file.
pub struct Background {
    pub child: std::process::Child,
    lines: mpsc::Receiver<String>,
    err: PathBuf,
}

impl Background {
    pub fn start<I, S>(sb: &Sandbox, args: I, name: &str) -> Background
    where
        I: IntoIterator<Item = S>,
        S: AsRef<std::ffi::OsStr>,
    {
        Background::start_cmd(sb.cmd(), args, sb.path(), name)
    }

    pub fn start_cmd<I, S>(mut cmd: Command, args: I, dir: &Path, name: &str) -> Background
    where
        I: IntoIterator<Item = S>,
        S: AsRef<std::ffi::OsStr>,
    {
        let err = dir.join(format!("{name}.stderr"));
        let mut child = cmd
            .args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(std::fs::File::create(&err).expect("stderr file"))
            .spawn()
            .expect("spawn gts-webchat");
        let out = child.stdout.take().expect("stdout");
        let (tx, lines) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(out).lines().map_while(Result::ok) {
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        Background { child, lines, err }
    }

    /// The next stdout line containing `needle`, within `limit`.
    pub fn expect_line(&self, needle: &str, limit: Duration) -> String {
        let deadline = Instant::now() + limit;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.lines.recv_timeout(left) {
                Ok(l) if l.contains(needle) => return l,
                Ok(_) => continue,
                Err(_) => panic!(
                    "no line with {needle:?} within {limit:?}; stderr:\n{}",
                    self.stderr_text()
                ),
            }
        }
    }

    /// Every stdout line that arrives within `limit` after the last one.
    pub fn drain_lines(&self, quiet: Duration) -> Vec<String> {
        let mut out = Vec::new();
        while let Ok(l) = self.lines.recv_timeout(quiet) {
            out.push(l);
        }
        out
    }

    pub fn stderr_text(&self) -> String {
        std::fs::read_to_string(&self.err).unwrap_or_default()
    }

    pub fn wait_stderr(&self, needle: &str) {
        wait_for(Duration::from_secs(20), needle, || {
            self.stderr_text().contains(needle).then_some(())
        });
    }

    pub fn terminate(mut self) -> ExitStatus {
        signal(self.child.id(), "TERM");
        wait_child(&mut self.child, Duration::from_secs(30)).expect("exited after SIGTERM")
    }
}

impl Drop for Background {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The events of a poll answer of one type ("message", "edit", "delete", "read").
pub fn events_of(poll: &Value, kind: &str) -> Vec<Value> {
    poll["messages"]
        .as_array()
        .map(|a| a.iter().filter(|m| m["type"] == kind).cloned().collect())
        .unwrap_or_default()
}

// ---- daemon and CLI helpers -------------------------------------------------------------

/// Runs `gts-webchat ARGS` in the sandbox and waits for it.
pub fn gw(sb: &Sandbox, args: &[&str]) -> Output {
    let mut cmd = if args.first() == Some(&"relay") {
        sb.relay_cmd()
    } else {
        sb.cmd()
    };
    cmd.args(args)
        .stdin(Stdio::null())
        .output()
        .expect("run gts-webchat")
}

/// Creates (or reuses) a local persona with the CLI, its name and address `address`.
pub fn persona(sb: &Sandbox, relay: &str, email: &str, address: &str) {
    ok(&gw(
        sb,
        &[
            "persona",
            email,
            "--name",
            address,
            "--chat-address",
            address,
            "--relay",
            relay,
            "--quiet-url",
        ],
    ));
}

/// Runs a future to completion from a blocking wait loop inside a multi-thread test runtime.
pub fn block_on<F: std::future::Future>(f: F) -> F::Output {
    tokio::task::block_in_place(|| tokio::runtime::Handle::current().block_on(f))
}

pub fn ok(o: &Output) -> String {
    assert!(
        o.status.success(),
        "exit {:?}\nstdout: {}\nstderr: {}",
        o.status.code(),
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    );
    String::from_utf8_lossy(&o.stdout).into_owned()
}

pub fn err(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

/// Writes an executable hook script into the sandbox.
pub fn script(sb: &Sandbox, name: &str, body: &str) -> PathBuf {
    let p = sb.path().join(name);
    std::fs::write(&p, format!("#!/bin/sh\n{body}\n")).unwrap();
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o755)).unwrap();
    p
}

pub fn task_dir(sb: &Sandbox, task: &str) -> PathBuf {
    sb.path().join("state/gts-webchat/tasks").join(task)
}

pub fn inbox_records(sb: &Sandbox, task: &str) -> Vec<Value> {
    std::fs::read_to_string(task_dir(sb, task).join("inbox.jsonl"))
        .unwrap_or_default()
        .lines()
        .map(|l| serde_json::from_str(l).expect("inbox line is JSON"))
        .collect()
}

pub fn lines_of(path: &Path) -> Vec<String> {
    std::fs::read_to_string(path)
        .unwrap_or_default()
        .lines()
        .map(str::to_string)
        .collect()
}

pub fn status(sb: &Sandbox, task: &str) -> Value {
    let o = gw(sb, &["daemon", "status", "--task", task, "--json"]);
    serde_json::from_slice(&o.stdout).unwrap_or(Value::Null)
}

/// A socket standing in for systemd's NOTIFY_SOCKET: what a `Type=notify` process tells it.
pub struct NotifySocket {
    socket: std::os::unix::net::UnixDatagram,
    pub path: PathBuf,
}

impl NotifySocket {
    pub fn bind(sb: &Sandbox) -> NotifySocket {
        let path = sb.path().join("notify.sock");
        let socket = std::os::unix::net::UnixDatagram::bind(&path).expect("a notify socket");
        NotifySocket { socket, path }
    }

    /// The next datagram within `limit`, if one comes.
    pub fn recv(&self, limit: Duration) -> Option<String> {
        self.socket
            .set_read_timeout(Some(limit))
            .expect("a read timeout");
        let mut buf = [0u8; 512];
        self.socket
            .recv(&mut buf)
            .ok()
            .map(|n| String::from_utf8_lossy(&buf[..n]).trim().to_string())
    }
}
