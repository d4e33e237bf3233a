//! The relay as its operator runs it. `relay backup` and `relay restore`: a backup taken while
//! senders keep writing, restored on a fresh machine (data dir) where the relay starts with the
//! same identities, sessions, messages and files; a running relay's data is never overwritten,
//! and one database serves one relay. `relay link`: the web app link to a private relay.
//! `/metrics`: Prometheus text that the official parser reads, for loopback callers by default.

mod common;

use common::*;
use serde_json::{Value, json};

const WAIT_SECS: std::time::Duration = std::time::Duration::from_secs(30);

fn relay_cmd(sb: &Sandbox, data_dir: &std::path::Path, args: &[&str]) -> std::process::Output {
    let dir = data_dir.display().to_string();
    let mut all = vec!["relay", "--data-dir", dir.as_str()];
    all.extend_from_slice(args);
    gw(sb, &all)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_backup_taken_while_the_relay_writes_restores_on_a_fresh_machine() {
    let sb = Sandbox::new();
    let mut relay = Relay::start(&sb);
    let api = relay.api();
    let ana = api.login("ana@example.com", "ana", "human").await;
    let bob = api.login("bob@example.com", "bob", "agent").await;
    for i in 0..30 {
        api.send(&bob, "bob", "ana", &format!("before {i}")).await;
    }
    let bytes = b"quarterly numbers\n".repeat(1000);
    let (st, up) = api
        .upload(&bob, "report.txt", bytes.clone(), Some("text/plain"))
        .await;
    assert_eq!(st, 200, "{up}");
    let file_id = up["file_id"].as_str().unwrap().to_string();
    let (st, v) = api
        .post(
            "/api/v1/messages",
            Some(&bob),
            json!({"to": "ana", "text": "the report", "attachments": [{"file_id": file_id}]}),
        )
        .await;
    assert_eq!(st, 200, "{v}");

    // Senders keep writing while the backup runs.
    let writer = {
        let (api, bob) = (relay.api(), bob.clone());
        tokio::spawn(async move {
            for i in 0..300 {
                api.send(&bob, "bob", "ana", &format!("during {i}")).await;
            }
        })
    };
    let dest = sb.path().join("backups/2026-12-02");
    let out = relay_cmd(
        &sb,
        &relay.data_dir,
        &["backup", dest.to_str().unwrap(), "--json"],
    );
    let made: Value = serde_json::from_str(ok(&out).trim()).unwrap();
    assert!(made["messages"].as_i64().unwrap() >= 31, "{made}");
    assert_eq!(made["identities"], 2);
    assert_eq!(made["upload_files"], 1);
    assert!(dest.join("manifest.json").is_file());
    writer.await.unwrap();

    // A running relay's data is not overwritten, and a second relay cannot share it.
    let o = relay_cmd(
        &sb,
        &relay.data_dir,
        &["restore", dest.to_str().unwrap(), "--force"],
    );
    assert_eq!(o.status.code(), Some(4), "{}", err(&o));
    assert!(err(&o).contains("another relay"), "{}", err(&o));
    let o = relay_cmd(&sb, &relay.data_dir, &["--port", "0"]);
    assert!(!o.status.success());
    assert!(err(&o).contains("another relay"), "{}", err(&o));
    // Backing up into a directory that holds something is refused.
    let o = relay_cmd(&sb, &relay.data_dir, &["backup", dest.to_str().unwrap()]);
    assert_eq!(o.status.code(), Some(4), "{}", err(&o));
    relay.terminate();

    // A fresh machine: restore, start, and everything from before the backup is there.
    let fresh = Sandbox::new();
    let fresh_dir = fresh.path().join("relay-data");
    ok(&relay_cmd(
        &fresh,
        &fresh_dir,
        &["restore", dest.to_str().unwrap()],
    ));
    let restored = Relay::start(&fresh);
    let api = restored.api();
    // Ana's session survived the restore (history answers 200 to her token).
    let texts = api.history_texts(&ana, "bob").await;
    assert_eq!(texts.len() as i64, made["messages"].as_i64().unwrap());
    assert_eq!(texts[0], "before 0");
    assert!(texts.iter().any(|t| t == "the report"));
    let (st, got, _) = api
        .raw(
            reqwest::Method::GET,
            &format!("/api/v1/webchat/files/{file_id}"),
            None,
            None,
            None,
        )
        .await;
    assert_eq!(st, 200);
    assert_eq!(got.as_str().unwrap().len(), bytes.len());
    // Sending goes on from where the backup left off.
    api.send(&ana, "ana", "bob", "back in business").await;
    drop(restored);

    // Over existing data only with --force, which keeps the old database beside it.
    let mut restored = Relay::start(&fresh);
    restored.terminate();
    let o = relay_cmd(&fresh, &fresh_dir, &["restore", dest.to_str().unwrap()]);
    assert_eq!(o.status.code(), Some(4), "{}", err(&o));
    ok(&relay_cmd(
        &fresh,
        &fresh_dir,
        &["restore", dest.to_str().unwrap(), "--force"],
    ));
    let kept = std::fs::read_dir(&fresh_dir)
        .unwrap()
        .filter_map(|e| e.ok())
        .any(|e| e.file_name().to_string_lossy().contains("before-restore"));
    assert!(kept, "the replaced database is kept");
    // Not a backup: a clear refusal.
    let o = relay_cmd(
        &fresh,
        &fresh_dir,
        &["restore", sb.path().to_str().unwrap()],
    );
    assert_eq!(o.status.code(), Some(2), "{}", err(&o));
}

#[test]
fn relay_link_points_the_web_app_at_a_private_relay() {
    let sb = Sandbox::new();
    let o = gw(
        &sb,
        &[
            "relay",
            "link",
            "--site",
            "https://chat.example.com/app/webchat/chat.html",
            "--relay",
            "https://relay.example.com/",
        ],
    );
    assert_eq!(
        ok(&o).trim(),
        "https://chat.example.com/app/webchat/chat.html?server_url=https%3A%2F%2Frelay.example.com"
    );
    assert!(
        err(&o).contains("PCHAT_CORS_ORIGINS=https://chat.example.com"),
        "{}",
        err(&o)
    );
    // The relay's own app needs no CORS setting; plain http off loopback is called out.
    let o = gw(
        &sb,
        &[
            "relay",
            "link",
            "--site",
            "http://relay.lan:5110/app/webchat/chat.html",
            "--relay",
            "http://relay.lan:5110",
            "--json",
        ],
    );
    let v: Value = serde_json::from_str(ok(&o).trim()).unwrap();
    assert_eq!(v["relay"], "http://relay.lan:5110");
    assert!(v["cors_origin"].is_null(), "{v}");
    let o = gw(
        &sb,
        &["relay", "link", "--site", "chat.html", "--relay", "x"],
    );
    assert_eq!(o.status.code(), Some(2), "{}", err(&o));
    assert!(err(&o).contains("--site"), "{}", err(&o));
}

/// The samples of a scrape, read by the official Prometheus parser.
fn scrape(text: &str) -> Vec<Value> {
    use std::io::Write;
    let mut child = std::process::Command::new(common::bridge::venv_python())
        .arg(std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/metrics/parse.py"))
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("python");
    child
        .stdin
        .take()
        .unwrap()
        .write_all(text.as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "the Prometheus parser refused the scrape: {}\n{text}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

fn sample(samples: &[Value], name: &str, labels: &[(&str, &str)]) -> f64 {
    samples
        .iter()
        .filter(|s| s["name"] == name && labels.iter().all(|(k, v)| s["labels"][k] == *v))
        .map(|s| s["value"].as_f64().unwrap())
        .sum()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_count_requests_messages_and_waiting_polls() {
    let sb = Sandbox::new();
    let relay = Relay::start(&sb);
    let api = relay.api();
    let ana = api.login("ana@example.com", "ana", "human").await;
    let bob = api.login("bob@example.com", "bob", "agent").await;
    // A long-poll waits, a send wakes it.
    let waiter = {
        let (api, bob) = (relay.api(), bob.clone());
        tokio::spawn(async move { api.poll(&bob, json!({"after": "0", "wait": 20})).await })
    };
    let metrics = |api: Api| async move {
        let (st, body, headers) = api
            .raw(reqwest::Method::GET, "/metrics", None, None, None)
            .await;
        assert_eq!(st, 200, "{body}");
        assert!(
            headers["content-type"]
                .to_str()
                .unwrap()
                .starts_with("text/plain"),
            "{headers:?}"
        );
        scrape(body.as_str().unwrap())
    };
    let waiting = wait_for(WAIT_SECS, "the long-poll counted as waiting", || {
        let s = block_on(metrics(relay.api()));
        (sample(&s, "gtsw_long_polls_waiting", &[]) >= 1.0).then_some(s)
    });
    assert!(sample(&waiting, "gtsw_login_codes_total", &[("result", "shown")]) >= 2.0);
    for i in 0..5 {
        api.send(&ana, "ana", "bob", &format!("m{i}")).await;
    }
    let woke = waiter.await.unwrap();
    assert_eq!(woke["messages"][0]["text"], "m0");
    let s = metrics(relay.api()).await;
    assert_eq!(
        sample(&s, "gtsw_messages_stored_total", &[("channel", "pchat")]),
        5.0
    );
    // By route pattern and status, never by a path holding ids or tokens.
    assert_eq!(
        sample(
            &s,
            "gtsw_http_requests_total",
            &[("route", "/api/v1/messages"), ("status", "200")]
        ),
        5.0
    );
    assert_eq!(sample(&s, "gtsw_long_polls_waiting", &[]), 0.0);
    assert!(
        sample(&s, "gtsw_wake_seconds_count", &[]) >= 1.0,
        "the wake was timed"
    );
    assert!(
        !s.iter().any(|x| x.to_string().contains("pct_")),
        "no token in a label"
    );

    // Off: not served.
    let sb = Sandbox::new();
    let off = Relay::start_with(&sb, &[("PCHAT_METRICS", "off")]);
    let (st, v) = off.api().get("/metrics", None).await;
    assert_error(st, &v, 404, "not_found");
}

/// The keys `src/relay/config.rs` reads (`get("KEY")`), from its source.
fn keys_the_relay_reads() -> Vec<String> {
    let src = include_str!("../src/relay/config.rs");
    let mut keys: Vec<String> = src
        .split("get(\"")
        .skip(1)
        .filter_map(|rest| rest.split('"').next())
        .filter(|k| k.chars().all(|c| c.is_ascii_uppercase() || c == '_'))
        .map(str::to_string)
        .collect();
    keys.sort();
    keys.dedup();
    keys
}

#[test]
fn the_packaged_relay_installs_by_its_readme() {
    let sb = Sandbox::new();
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
    let out = std::process::Command::new(root.join("scripts/package_private_relay.sh"))
        .arg(sb.path().join("dist"))
        .env("GTSW_PACKAGE_BIN", env!("CARGO_BIN_EXE_gts-webchat"))
        .output()
        .unwrap();
    let tarball = ok(&out).trim().to_string();
    assert!(
        tarball.ends_with("webchat-private-relay.tar.gz"),
        "{tarball}"
    );

    // An empty directory on the target machine.
    let target = sb.path().join("opt");
    std::fs::create_dir_all(&target).unwrap();
    let untar = std::process::Command::new("tar")
        .args(["-xzf", &tarball, "-C"])
        .arg(&target)
        .status()
        .unwrap();
    assert!(untar.success());
    let pkg = target.join("webchat-private-relay");
    for f in [
        "bin/gts-webchat",
        "relay/.env.example",
        "start_relay.sh",
        "gts-webchat-relay.service",
        "README.md",
        "Dockerfile",
        "docker-compose.private-relay.yml",
    ] {
        assert!(pkg.join(f).is_file(), "{f} is in the package");
    }
    let example = std::fs::read_to_string(pkg.join("relay/.env.example")).unwrap();
    let keys = keys_the_relay_reads();
    assert!(keys.len() > 30, "{keys:?}");
    for k in &keys {
        assert!(
            example.contains(&format!("{k}=")),
            "relay/.env.example has no {k}"
        );
    }
    assert!(example.contains("\nPCHAT_DEV_EXPOSE_CODES=false\n"));

    // Started before the README's first step, it says what to do.
    let first = std::process::Command::new(pkg.join("start_relay.sh"))
        .output()
        .unwrap();
    assert_eq!(first.status.code(), Some(2));
    assert!(err(&first).contains("copy relay/.env.example to relay/.env.local"));

    // The README's steps: copy the example, start with WEBCHAT_RELAY_PORT, ask /health.
    let readme = std::fs::read_to_string(pkg.join("README.md")).unwrap();
    assert!(readme.contains("cp relay/.env.example relay/.env.local"));
    assert!(readme.contains("WEBCHAT_RELAY_PORT=5110 ./start_relay.sh"));
    std::fs::copy(pkg.join("relay/.env.example"), pkg.join("relay/.env.local")).unwrap();
    the_compose_file_is_valid_and_keeps_data_on_volumes(&pkg, &readme);
    let mut cmd = std::process::Command::new(pkg.join("start_relay.sh"));
    cmd.current_dir(&pkg).env("WEBCHAT_RELAY_PORT", "0");
    let relay = Background::start_cmd(cmd, Vec::<String>::new(), sb.path(), "packaged");
    let line = relay.expect_line("relay listening on http://", WAIT_SECS);
    let url = line
        .trim_start_matches("relay listening on ")
        .trim()
        .to_string();
    let (st, health) = block_on_current(Api::new(&url).get("/health", None));
    assert_eq!(st, 200, "{health}");
    assert_eq!(health["ok"], true);
    assert!(pkg.join("data/bridge.db").is_file(), "data under ./data");
    relay.terminate();
}

/// No Docker engine runs here: the compose file is checked by the real docker-compose
/// (`config` parses, interpolates and validates it without an engine), and every file the
/// Dockerfile copies must be in the package.
fn the_compose_file_is_valid_and_keeps_data_on_volumes(pkg: &std::path::Path, readme: &str) {
    assert!(
        readme.contains("docker compose -f docker-compose.private-relay.yml up -d --build"),
        "the README gives the seed's Docker command"
    );
    let out = std::process::Command::new("docker-compose")
        .args(["-f", "docker-compose.private-relay.yml", "config"])
        .current_dir(pkg)
        .env("WEBCHAT_UID", "1234")
        .env("WEBCHAT_GID", "1234")
        .output()
        .expect("docker-compose is installed (apt-get install docker-compose; .ci/run does it)");
    let config = ok(&out);
    for want in [
        "restart: unless-stopped",
        "relay/data:/data",
        "relay/pchat_uploads:/uploads",
        "http://127.0.0.1:5110/health",
        "127.0.0.1:5110:5110",
        "user: 1234:1234",
        "BRIDGE_DB_PATH: /data/bridge.db",
        // relay/.env.local reaches the container.
        "SMTP_HOST: smtp.example.com",
    ] {
        assert!(
            config.contains(want),
            "compose config has {want}:\n{config}"
        );
    }
    let dockerfile = std::fs::read_to_string(pkg.join("Dockerfile")).unwrap();
    let copies: Vec<&str> = dockerfile
        .lines()
        .filter_map(|l| l.strip_prefix("COPY "))
        .filter_map(|l| l.split_whitespace().next())
        .collect();
    assert!(!copies.is_empty(), "{dockerfile}");
    for c in copies {
        assert!(
            pkg.join(c).exists(),
            "the Dockerfile copies {c}, which the package has"
        );
    }
    assert!(dockerfile.contains("HEALTHCHECK") && dockerfile.contains("USER webchat"));
}

fn block_on_current<F: std::future::Future>(f: F) -> F::Output {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
        .block_on(f)
}

/// systemd's notify protocol, read from a socket of our own as systemd would: READY, then
/// keep-alives at half WatchdogSec, none while the relay is hung, STOPPING at shutdown.
#[test]
fn the_relay_speaks_sd_notify_and_stops_its_keepalives_when_hung() {
    let sb = Sandbox::new();
    let socket = NotifySocket::bind(&sb);
    let recv = |limit| socket.recv(limit);
    let notify = socket.path.display().to_string();
    let mut relay = Relay::start_with(
        &sb,
        &[("NOTIFY_SOCKET", &notify), ("WATCHDOG_USEC", "400000")],
    );
    assert_eq!(recv(WAIT_SECS).as_deref(), Some("READY=1"));
    assert_eq!(recv(WAIT_SECS).as_deref(), Some("WATCHDOG=1"));
    assert_eq!(recv(WAIT_SECS).as_deref(), Some("WATCHDOG=1"));
    // Hung: not one keep-alive over three watchdog periods, so systemd would restart it.
    signal(relay.pid(), "STOP");
    while recv(std::time::Duration::from_millis(50)).is_some() {} // sent before the stop
    assert_eq!(recv(std::time::Duration::from_millis(1200)), None);
    signal(relay.pid(), "CONT");
    assert_eq!(recv(WAIT_SECS).as_deref(), Some("WATCHDOG=1"));
    relay.terminate();
    let mut rest = Vec::new();
    while let Some(m) = recv(std::time::Duration::from_millis(500)) {
        rest.push(m);
    }
    assert!(rest.iter().any(|m| m == "STOPPING=1"), "{rest:?}");
}

/// `gts-webchat watchdog` restarts a relay that hangs (SIGSTOP), on the same port and data.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_watchdog_restarts_a_hung_relay() {
    let sb = Sandbox::new();
    let port = free_port().to_string();
    let data = sb.path().join("relay-data").display().to_string();
    let dog = Background::start(
        &sb,
        [
            "watchdog",
            "--interval",
            "0.3",
            "--timeout",
            "0.5",
            "--",
            "--data-dir",
            &data,
            "--port",
            &port,
        ],
        "watchdog",
    );
    let line = dog.expect_line("relay listening on http://", WAIT_SECS);
    let url = line
        .trim_start_matches("relay listening on ")
        .trim()
        .to_string();
    let api = Api::new(&url);
    let ana = api.login("ana@example.com", "ana", "human").await;
    let bob = api.login("bob@example.com", "bob", "human").await;
    api.send(&ana, "ana", "bob", "before the hang").await;
    let pid_of = |text: &str, nth: usize| -> u32 {
        text.match_indices("watchdog: relay pid ")
            .nth(nth)
            .and_then(|(i, m)| text[i + m.len()..].split(' ').next())
            .and_then(|p| p.parse().ok())
            .unwrap_or(0)
    };
    let first = pid_of(&dog.stderr_text(), 0);
    assert!(first > 0, "{}", dog.stderr_text());
    signal(first, "STOP");
    let second = wait_for(WAIT_SECS, "a restarted relay", || {
        let text = dog.stderr_text();
        let p = pid_of(&text, 1);
        (p > 0).then_some(p)
    });
    assert_ne!(first, second);
    let log = dog.stderr_text();
    assert!(
        log.contains("did not answer /health") && log.contains("restarting it"),
        "{log}"
    );
    // Back on the same address, with the same data.
    let texts = wait_for(WAIT_SECS, "the restarted relay answering", || {
        block_on(async {
            let (st, _) = api.get("/health", None).await;
            if st == 200 {
                Some(api.history_texts(&bob, "ana").await)
            } else {
                None
            }
        })
    });
    assert_eq!(texts, ["before the hang"]);
    assert_eq!(dog.terminate().code(), Some(0));
}

/// `gts-webchat doctor` against a real relay, persona and daemon: all pass (exit 0), then each
/// breakage turns its own line to FAIL with what to do, and the exit code says so.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn doctor_checks_the_relay_personas_daemons_and_hosts() {
    use std::os::unix::fs::PermissionsExt;
    let mut w = common::world::World::new().await;
    let sb = &w.sb;
    let hook = script(sb, "hook.sh", "cat >/dev/null");
    ok(&gw(
        sb,
        &[
            "daemon",
            "start",
            "--task",
            "doc",
            "--as",
            "agent-1",
            "--on-message",
            hook.to_str().unwrap(),
        ],
    ));
    let url = w.relay.url.trim_end_matches('/').to_string();

    let good = gw(sb, &["doctor"]);
    let text = ok(&good);
    for want in [
        format!("ok   relay {url}: reachable"),
        format!("ok   relay {url} version: {}", env!("CARGO_PKG_VERSION")),
        format!("ok   relay {url} TLS: plain http on loopback"),
        format!("ok   relay {url} login codes: shown on screen"),
        format!("ok   persona agent-1 (agent@example.com): token accepted by {url}"),
        "ok   daemon doc: running".to_string(),
        format!(
            "ok   daemon doc hook: {}",
            hook.canonicalize().unwrap().display()
        ),
    ] {
        assert!(text.contains(&want), "{want:?} in:\n{text}");
    }
    // Hosts are information, on PATH or not.
    assert!(
        text.lines().any(|l| l.starts_with("info host codex: ")),
        "{text}"
    );
    assert!(!text.contains("FAIL"), "{text}");

    // --json: one object per line.
    let json_out = ok(&gw(sb, &["doctor", "--json"]));
    let rows: Vec<Value> = json_out
        .lines()
        .map(|l| serde_json::from_str(l).expect("a JSON line"))
        .collect();
    assert!(
        rows.iter()
            .all(|r| ["ok", "info"].contains(&r["status"].as_str().unwrap()))
    );
    assert!(rows.iter().any(|r| r["check"] == json!("daemon doc")));

    // A hook that lost its exec bit.
    std::fs::set_permissions(&hook, std::fs::Permissions::from_mode(0o644)).unwrap();
    let bad = gw(sb, &["doctor"]);
    assert_eq!(bad.status.code(), Some(4), "{}", ok_or_err(&bad));
    let text = String::from_utf8_lossy(&bad.stdout).to_string();
    assert!(
        text.lines()
            .any(|l| l.starts_with("FAIL daemon doc hook:") && l.contains("chmod +x")),
        "{text}"
    );
    assert!(err(&bad).contains("1 check(s) failed"), "{}", err(&bad));
    std::fs::set_permissions(&hook, std::fs::Permissions::from_mode(0o755)).unwrap();

    // The relay gone: its checks and the persona's fail.
    ok(&gw(sb, &["daemon", "stop", "--task", "doc"]));
    w.relay.terminate();
    let down = gw(sb, &["doctor"]);
    assert_eq!(down.status.code(), Some(4));
    let text = String::from_utf8_lossy(&down.stdout).to_string();
    assert!(
        text.contains(&format!("FAIL relay {url}: not reachable")),
        "{text}"
    );
    assert!(text.contains("FAIL persona agent-1"), "{text}");
    assert!(text.contains("info daemon doc: not running"), "{text}");
}

fn ok_or_err(o: &std::process::Output) -> String {
    format!("{}{}", String::from_utf8_lossy(&o.stdout), err(o))
}
