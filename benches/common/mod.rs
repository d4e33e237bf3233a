//! What the benchmarks share: the real binary in a temp HOME, a relay on an ephemeral port,
//! logins, process readings (RSS, CPU), statistics and the JSON results.
#![allow(dead_code)]

use std::collections::HashMap;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use gts_webchat::api::auth::{RequestCodeRequest, VerifyCodeRequest};
use gts_webchat::api::messages::{PollRequest, SendRequest};
use gts_webchat::api::{FREE_PHONE_ID, Kind, PCHAT_CHANNEL};
use gts_webchat::client::RelayClient;
use serde_json::json;

pub const BIN: &str = env!("CARGO_BIN_EXE_gts-webchat");

pub fn now_ns() -> u128 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or(0)
}

// ---------------------------------------------------------------- processes

pub struct Env {
    dir: tempfile::TempDir,
}

impl Env {
    pub fn new() -> Env {
        Env {
            dir: tempfile::Builder::new()
                .prefix("gtswc-bench-")
                .tempdir()
                .expect("temp dir"),
        }
    }
    pub fn path(&self) -> &Path {
        self.dir.path()
    }
    pub fn cmd(&self) -> Command {
        let p = self.path();
        let run = p.join("run");
        std::fs::create_dir_all(&run).ok();
        // GTSW_BENCH_BIN runs another build through the same harness, for A/B runs.
        let mut c = Command::new(std::env::var_os("GTSW_BENCH_BIN").unwrap_or_else(|| BIN.into()));
        for k in ["HOST", "PORT", "RELAY_URL", "SMTP_HOST", "RUST_LOG"] {
            c.env_remove(k);
        }
        c.env("HOME", p.join("home"))
            .env("XDG_DATA_HOME", p.join("data"))
            .env("XDG_CONFIG_HOME", p.join("config"))
            .env("XDG_STATE_HOME", p.join("state"))
            .env("XDG_RUNTIME_DIR", &run)
            .current_dir(p);
        c
    }
}

pub struct Relay {
    pub child: Child,
    pub url: String,
}

impl Relay {
    pub fn start(env: &Env, extra: &[(&str, &str)]) -> Relay {
        Relay::start_args(env, &[], extra)
    }

    /// With extra arguments (e.g. `--database postgres://…`).
    pub fn start_args(env: &Env, args: &[&str], extra: &[(&str, &str)]) -> Relay {
        let mut child = env
            .cmd()
            .args(["relay", "--port", "0", "--data-dir"])
            .arg(env.path().join("relay"))
            .args(args)
            .env("PCHAT_CODE_RATE_PER_IP", "0")
            .env("PCHAT_CODE_RATE_PER_EMAIL", "0")
            .env("RUST_LOG", "warn")
            .envs(extra.iter().copied())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("start relay");
        let out = child.stdout.take().expect("stdout");
        let mut line = String::new();
        let mut reader = std::io::BufReader::new(out);
        let url = loop {
            line.clear();
            if std::io::BufRead::read_line(&mut reader, &mut line).unwrap_or(0) == 0 {
                panic!("relay exited before printing its address");
            }
            if let Some(u) = line.trim().strip_prefix("relay listening on ") {
                break u.to_string();
            }
        };
        std::thread::spawn(move || {
            let mut sink = String::new();
            while std::io::BufRead::read_line(&mut reader, &mut sink).unwrap_or(0) > 0 {
                sink.clear();
            }
        });
        Relay { child, url }
    }
    pub fn pid(&self) -> u32 {
        self.child.id()
    }
}

impl Drop for Relay {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Resident set size (KiB) of a process.
pub fn rss_kib(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmRSS:"))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|v| v.parse().ok())
        })
        .unwrap_or(0)
}

/// Proportional and private (unshared) memory, KiB: RSS counts code pages shared with the
/// relay (same binary), PSS splits them, private counts only the process's own.
pub fn pss_private_kib(pid: u32) -> (u64, u64) {
    let text = std::fs::read_to_string(format!("/proc/{pid}/smaps_rollup")).unwrap_or_default();
    let field = |name: &str| {
        text.lines()
            .find(|l| l.starts_with(name))
            .and_then(|l| l.split_whitespace().nth(1))
            .and_then(|v| v.parse::<u64>().ok())
            .unwrap_or(0)
    };
    (
        field("Pss:"),
        field("Private_Clean:") + field("Private_Dirty:"),
    )
}

/// User + system CPU time (clock ticks) of a process.
pub fn cpu_ticks(pid: u32) -> u64 {
    cpu_ticks_of(&format!("/proc/{pid}/stat"))
}

/// utime + stime from a /proc stat file.
pub fn cpu_ticks_of(stat: &str) -> u64 {
    std::fs::read_to_string(stat)
        .ok()
        .and_then(|s| {
            let after = s.rsplit_once(')')?.1;
            let f: Vec<&str> = after.split_whitespace().collect();
            Some(f.get(11)?.parse::<u64>().ok()? + f.get(12)?.parse::<u64>().ok()?)
        })
        .unwrap_or(0)
}

/// CPU ticks of one named thread of a process (e.g. the relay's `sqlite-writer`).
pub fn thread_cpu_ticks(pid: u32, name: &str) -> u64 {
    let Ok(tasks) = std::fs::read_dir(format!("/proc/{pid}/task")) else {
        return 0;
    };
    tasks
        .flatten()
        .filter(|t| std::fs::read_to_string(t.path().join("comm")).is_ok_and(|c| c.trim() == name))
        .filter_map(|t| t.file_name().to_str()?.parse::<u32>().ok())
        .map(|tid| cpu_ticks_of(&format!("/proc/{pid}/task/{tid}/stat")))
        .sum()
}

pub fn ticks_per_sec() -> f64 {
    // sysconf(_SC_CLK_TCK) is 100 on every Linux this runs on.
    100.0
}

pub fn open_fds(pid: u32) -> usize {
    std::fs::read_dir(format!("/proc/{pid}/fd"))
        .map(|d| d.count())
        .unwrap_or(0)
}

// ---------------------------------------------------------------- relay helpers

pub async fn login(relay: &str, email: &str, address: &str, kind: Kind) -> RelayClient {
    let c = RelayClient::new(relay).expect("client");
    let sent = c
        .request_code(&RequestCodeRequest {
            email: email.into(),
            display_name: None,
            purpose: None,
        })
        .await
        .expect("request code");
    let v = c
        .verify_code(&VerifyCodeRequest {
            email: email.into(),
            code: sent.dev_code.expect("dev code"),
            login_id: Some(sent.login_id),
            display_name: Some(address.into()),
            chat_address: Some(address.into()),
            public_visible: Some(true),
            kind: Some(kind),
        })
        .await
        .expect("verify");
    c.with_token(v.session_token)
}

pub fn send_req(from: &str, to: &str, text: String) -> SendRequest {
    SendRequest {
        phone_id: Some(FREE_PHONE_ID.into()),
        channel: Some(PCHAT_CHANNEL.into()),
        source: Some(from.into()),
        to: to.into(),
        text: Some(text),
        ..Default::default()
    }
}

pub fn poll_req(after: &str, wait: f64) -> PollRequest {
    PollRequest {
        phone_id: None,
        chat_address: None,
        limit: Some(500),
        after: Some(after.into()),
        wait: Some(wait),
    }
}

// ---------------------------------------------------------------- statistics

#[derive(Debug, Clone, serde::Serialize)]
pub struct Stats {
    pub n: usize,
    pub p50_ms: f64,
    pub p99_ms: f64,
    pub max_ms: f64,
    pub mean_ms: f64,
}

pub fn stats(mut v: Vec<Duration>) -> Stats {
    v.sort();
    let ms = |d: Duration| d.as_secs_f64() * 1000.0;
    let at = |q: f64| {
        if v.is_empty() {
            0.0
        } else {
            ms(v[((v.len() as f64 - 1.0) * q).round() as usize])
        }
    };
    Stats {
        n: v.len(),
        p50_ms: at(0.50),
        p99_ms: at(0.99),
        max_ms: v.last().copied().map(ms).unwrap_or(0.0),
        mean_ms: if v.is_empty() {
            0.0
        } else {
            v.iter().map(|d| ms(*d)).sum::<f64>() / v.len() as f64
        },
    }
}

pub fn row(label: &str, s: &Stats) {
    println!(
        "  {label:<44} {:>6} {:>10.3} {:>10.3} {:>10.3}",
        s.n, s.p50_ms, s.p99_ms, s.max_ms
    );
}

pub fn header(title: &str) {
    println!("\n{title}");
    println!(
        "  {:<44} {:>6} {:>10} {:>10} {:>10}",
        "", "n", "p50 ms", "p99 ms", "max ms"
    );
}

pub fn write_json(name: &str, value: serde_json::Value) {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("target/bench-results");
    std::fs::create_dir_all(&dir).ok();
    let path = dir.join(format!("{name}.json"));
    let doc = json!({
        "bench": name,
        "when": gts_webchat::api::rfc3339_from_millis((now_ns() / 1_000_000) as i64),
        "machine": machine(),
        "results": value,
    });
    std::fs::write(&path, serde_json::to_vec_pretty(&doc).unwrap_or_default()).ok();
    println!("  (JSON: {})", path.display());
}

pub fn machine() -> serde_json::Value {
    let cpu = std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("model name"))
                .map(|l| l.split(':').nth(1).unwrap_or("").trim().to_string())
        })
        .unwrap_or_default();
    let mem = std::fs::read_to_string("/proc/meminfo")
        .ok()
        .and_then(|s| s.lines().next().map(str::to_string))
        .unwrap_or_default();
    json!({"cpus": std::thread::available_parallelism().map(|n| n.get()).unwrap_or(0), "cpu": cpu, "memory": mem})
}

// ---------------------------------------------------------------- lean load

/// One lean HTTP/1 connection per sender (hyper, no pool): the load generator shares the two
/// cores with the relay, so it must cost as little as it can. A 2xx answer is the ack.
pub async fn lean_sender(
    addr: String,
    token: String,
    from: String,
    to: String,
    deadline: Instant,
) -> (Vec<Duration>, u64) {
    use http_body_util::BodyExt;
    let host = addr.trim_start_matches("http://").to_string();
    let stream = tokio::net::TcpStream::connect(&host)
        .await
        .expect("connect");
    let _ = stream.set_nodelay(true);
    let (mut tx, conn) =
        hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(stream))
            .await
            .expect("handshake");
    tokio::spawn(conn);
    let (mut lat, mut errors, mut k) = (Vec::new(), 0u64, 0u64);
    while Instant::now() < deadline {
        let body = format!(r#"{{"source":"{from}","to":"{to}","text":"m{k}"}}"#);
        k += 1;
        let req = hyper::Request::post("/api/v1/messages")
            .header("host", &host)
            .header("x-pchat-session", &token)
            .header("content-type", "application/json")
            .body(http_body_util::Full::new(bytes::Bytes::from(body)))
            .expect("request");
        let t = Instant::now();
        match tx.send_request(req).await {
            Ok(resp) => {
                let ok = resp.status().is_success();
                let _ = resp.into_body().collect().await;
                if ok {
                    lat.push(t.elapsed());
                } else {
                    errors += 1;
                }
            }
            Err(_) => errors += 1,
        }
    }
    (lat, errors)
}

/// A long-poll loop on one plain HTTP/1 connection, recording arrival times by message id.
pub async fn lean_poller(
    host: String,
    token: String,
    arrivals: Arc<Mutex<HashMap<String, Vec<Instant>>>>,
) {
    use http_body_util::BodyExt;
    #[derive(serde::Deserialize)]
    struct Lite {
        message_id: String,
    }
    #[derive(serde::Deserialize)]
    struct Answer {
        messages: Vec<Lite>,
        next_cursor: String,
    }
    let Ok(stream) = tokio::net::TcpStream::connect(&host).await else {
        return;
    };
    let _ = stream.set_nodelay(true);
    let Ok((mut tx, conn)) =
        hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(stream)).await
    else {
        return;
    };
    tokio::spawn(conn);
    let mut cursor = "0".to_string();
    loop {
        let body = format!(r#"{{"after":"{cursor}","wait":60,"limit":500}}"#);
        let Ok(req) = hyper::Request::post("/api/v1/webchat/poll")
            .header("host", &host)
            .header("x-pchat-session", &token)
            .body(http_body_util::Full::new(bytes::Bytes::from(body)))
        else {
            return;
        };
        let Ok(resp) = tx.send_request(req).await else {
            return;
        };
        let Ok(bytes) = resp.into_body().collect().await.map(|b| b.to_bytes()) else {
            return;
        };
        let now = Instant::now();
        if let Ok(a) = serde_json::from_slice::<Answer>(&bytes) {
            let mut arr = arrivals.lock().unwrap();
            for m in a.messages {
                arr.entry(m.message_id).or_default().push(now);
            }
            cursor = a.next_cursor;
        }
    }
}

/// One sender and its own receiver, signed in on `url`.
pub struct Pair {
    pub url: String,
    pub sender: RelayClient,
    pub receiver: RelayClient,
    pub from: String,
    pub to: String,
}

/// `n` sender/receiver pairs spread over `urls`; `tag` keeps each call's identities apart.
pub async fn sign_in_pairs(urls: &[String], n: usize, tag: &str) -> Vec<Pair> {
    let mut pairs = Vec::with_capacity(n);
    for i in 0..n {
        let url = urls[i % urls.len()].clone();
        let (from, to) = (format!("sender-{tag}{i:02}"), format!("recv-{tag}{i:02}"));
        let sender = login(&url, &format!("s{tag}{i}@example.com"), &from, Kind::Agent).await;
        let receiver = login(&url, &format!("r{tag}{i}@example.com"), &to, Kind::Agent).await;
        pairs.push(Pair {
            url,
            sender,
            receiver,
            from,
            to,
        });
    }
    pairs
}

/// Every pair sends as fast as acks come until `deadline`: the latencies and the errors.
pub async fn send_until(pairs: &[Pair], deadline: Instant) -> (Vec<Duration>, u64) {
    let tasks: Vec<_> = pairs
        .iter()
        .map(|p| {
            tokio::spawn(lean_sender(
                p.url.clone(),
                p.sender.token().unwrap_or_default().to_string(),
                p.from.clone(),
                p.to.clone(),
                deadline,
            ))
        })
        .collect();
    let (mut all, mut errors) = (Vec::new(), 0);
    for t in tasks {
        let (l, e) = t.await.expect("sender");
        all.extend(l);
        errors += e;
    }
    (all, errors)
}

/// How many messages the receivers' streams hold (each receiver is fresh).
pub async fn stored_total(pairs: &[Pair]) -> u64 {
    let mut stored = 0;
    for p in pairs {
        stored += p
            .receiver
            .me()
            .await
            .expect("me")
            .stream_head
            .parse::<u64>()
            .unwrap_or(0);
    }
    stored
}
