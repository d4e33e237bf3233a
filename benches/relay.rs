//! Benchmarks of the real binary on loopback: wake latency, throughput, fan-out, idle
//! connections, daemon footprint. Run by hand (never in `cargo test`):
//!
//!     cargo bench --bench relay -- [wake|throughput|fanout|connections|footprint|callbacks|mcp|all]
//!
//! `mcp` drives `gts-webchat mcp` with the official MCP Python SDK client (tests/mcp/client.py,
//! in tests/.venv as tests/run.sh installs it).
//!
//! Each prints a table and writes JSON to target/bench-results/<name>.json.

use std::collections::HashMap;
use std::io::Write;
use std::path::Path;
use std::process::Command;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use gts_webchat::api::Kind;
use gts_webchat::client::RelayClient;
use serde_json::json;

#[path = "common/mod.rs"]
mod common;

use common::*;

// ---------------------------------------------------------------- benches

/// Hook mode: the daemon runs this binary as its hook; it records when it started.
fn hook_mode(log: &str) {
    let t = now_ns();
    let id = std::env::var("GTS_WEBCHAT_MESSAGE_ID").unwrap_or_default();
    if let Ok(mut f) = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(log)
    {
        let _ = writeln!(f, "{id} {t}");
    }
}

fn hook_times(log: &Path) -> HashMap<String, u128> {
    std::fs::read_to_string(log)
        .unwrap_or_default()
        .lines()
        .filter_map(|l| {
            let (id, t) = l.split_once(' ')?;
            Some((id.to_string(), t.parse().ok()?))
        })
        .collect()
}

async fn bench_wake(n: usize) -> serde_json::Value {
    let env = Env::new();
    let relay = Relay::start(&env, &[]);
    let sender = login(&relay.url, "s@example.com", "sender", Kind::Human).await;
    let receiver = login(&relay.url, "r@example.com", "receiver", Kind::Agent).await;

    // 1. A long-polling client.
    let mut client_lat = Vec::with_capacity(n);
    let mut cursor = "0".to_string();
    for i in 0..n {
        let rcv = receiver.clone();
        let after = cursor.clone();
        let poll = tokio::spawn(async move { rcv.poll(&poll_req(&after, 30.0)).await });
        // Give the poll a moment to park at the relay (a bench, not a test).
        tokio::time::sleep(Duration::from_millis(2)).await;
        let t0 = Instant::now();
        sender
            .send(&send_req("sender", "receiver", format!("wake {i}")))
            .await
            .expect("send");
        let got = poll.await.expect("join").expect("poll");
        client_lat.push(t0.elapsed());
        cursor = got.next_cursor;
    }

    // 2. The daemon's hook (this binary in hook mode).
    let hook_log = env.path().join("hook.log");
    let agent_dir = env.path().join("agent-persona");
    std::fs::create_dir_all(&agent_dir).ok();
    let out = env
        .cmd()
        .args([
            "persona",
            "agent@example.com",
            "--name",
            "Agent",
            "--chat-address",
            "agent-1",
            "--relay",
            &relay.url,
            "--quiet-url",
        ])
        .output()
        .expect("persona");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let me = std::env::current_exe().expect("bench exe");
    let out = env
        .cmd()
        .env("GTS_BENCH_HOOK_LOG", &hook_log)
        .args([
            "daemon",
            "start",
            "--task",
            "bench",
            "--as",
            "agent-1",
            "--on-message",
        ])
        .arg(&me)
        .output()
        .expect("daemon start");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let mut hook_lat = Vec::with_capacity(n);
    for i in 0..n {
        let sent_ns = now_ns();
        let r = sender
            .send(&send_req("sender", "agent-1", format!("hook {i}")))
            .await
            .expect("send");
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if let Some(t) = hook_times(&hook_log).get(&r.message_id) {
                hook_lat.push(Duration::from_nanos(t.saturating_sub(sent_ns) as u64));
                break;
            }
            assert!(Instant::now() < deadline, "hook for message {i} never ran");
            tokio::time::sleep(Duration::from_micros(500)).await;
        }
    }
    let _ = env
        .cmd()
        .args(["daemon", "stop", "--task", "bench"])
        .output();

    // 3. The seed's way: a client that polls every 2 s, messages sent at random moments.
    let base_n = 300;
    let recv_at: Arc<Mutex<HashMap<String, Instant>>> = Arc::default();
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let poller = {
        let rcv = receiver.clone();
        let recv_at = recv_at.clone();
        let stop = stop.clone();
        let mut cursor = cursor.clone();
        tokio::spawn(async move {
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                if let Ok(r) = rcv.poll(&poll_req(&cursor, 0.0)).await {
                    let now = Instant::now();
                    for m in &r.messages {
                        recv_at.lock().unwrap().insert(m.message_id.clone(), now);
                    }
                    cursor = r.next_cursor;
                }
                tokio::time::sleep(Duration::from_secs(2)).await;
            }
        })
    };
    let mut sent_at = HashMap::new();
    for i in 0..base_n {
        tokio::time::sleep(Duration::from_millis(rand::random_range(0..130))).await;
        let t = Instant::now();
        let r = sender
            .send(&send_req("sender", "receiver", format!("base {i}")))
            .await
            .expect("send");
        sent_at.insert(r.message_id, t);
    }
    let deadline = Instant::now() + Duration::from_secs(10);
    while recv_at.lock().unwrap().len() < base_n && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    poller.abort();
    let got = recv_at.lock().unwrap().clone();
    let base_lat: Vec<Duration> = sent_at
        .iter()
        .filter_map(|(id, t)| got.get(id).map(|r| r.duration_since(*t)))
        .collect();

    header(&format!("wake latency ({n} messages, loopback)"));
    let (c, h, b) = (stats(client_lat), stats(hook_lat), stats(base_lat));
    row("send -> long-polling client has it", &c);
    row("send -> daemon's hook has started", &h);
    row("send -> client polling every 2 s (seed)", &b);
    println!(
        "  long-poll is {:.0}x faster than the 2 s poll at p50",
        b.p50_ms / c.p50_ms.max(0.001)
    );
    json!({"long_poll_client": c, "daemon_hook": h, "poll_every_2s_baseline": b})
}

async fn bench_throughput(senders: usize, secs: u64) -> serde_json::Value {
    let env = Env::new();
    let relay = Relay::start(&env, &[]);
    let pairs = sign_in_pairs(std::slice::from_ref(&relay.url), senders, "").await;
    let deadline = Instant::now() + Duration::from_secs(secs);
    let start = Instant::now();
    let cpu0 = cpu_ticks(relay.pid());
    let writer0 = thread_cpu_ticks(relay.pid(), "sqlite-writer");
    let own0 = cpu_ticks(std::process::id());
    let (all, errors) = send_until(&pairs, deadline).await;
    let elapsed = start.elapsed().as_secs_f64();
    let relay_cpu_s = (cpu_ticks(relay.pid()) - cpu0) as f64 / ticks_per_sec();
    let writer_cpu_s =
        (thread_cpu_ticks(relay.pid(), "sqlite-writer") - writer0) as f64 / ticks_per_sec();
    let own_cpu_s = (cpu_ticks(std::process::id()) - own0) as f64 / ticks_per_sec();
    let acked = all.len();
    // Every acknowledged message is in a receiver's stream.
    let stored = stored_total(&pairs).await;
    let rate = acked as f64 / elapsed;
    header(&format!(
        "throughput ({senders} concurrent senders, {secs} s, fsync per commit)"
    ));
    let s = stats(all);
    row("send latency", &s);
    println!(
        "  accepted: {acked} messages in {elapsed:.1} s = {rate:.0} messages/s; errors: {errors}"
    );
    let per_msg = |secs: f64| secs * 1e6 / acked.max(1) as f64;
    let cpu_us = per_msg(relay_cpu_s);
    let writer_us = per_msg(writer_cpu_s);
    let own_us = per_msg(own_cpu_s);
    println!(
        "  relay CPU: {relay_cpu_s:.1} s = {cpu_us:.0} µs per message ({writer_us:.0} in the SQLite writer thread)"
    );
    println!("  load generator CPU: {own_cpu_s:.1} s = {own_us:.0} µs per message");
    println!(
        "  stored (receivers' stream heads): {stored} {}",
        if stored as usize == acked {
            "= acknowledged"
        } else {
            "!= acknowledged"
        }
    );
    json!({"senders": senders, "seconds": elapsed, "acknowledged": acked, "stored": stored, "messages_per_sec": rate, "errors": errors, "relay_cpu_seconds": relay_cpu_s, "relay_cpu_us_per_message": cpu_us, "writer_cpu_us_per_message": writer_us, "load_generator_cpu_us_per_message": own_us, "latency": s})
}

async fn bench_fanout(members: usize, posts: usize) -> serde_json::Value {
    let env = Env::new();
    let relay = Relay::start(&env, &[]);
    let writer = login(&relay.url, "w@example.com", "writer", Kind::Agent).await;
    let resp: serde_json::Value = writer
        .execute(
            "creating a group",
            writer
                .request(reqwest::Method::POST, "/api/v1/webchat/groups")
                .json(&json!({"name": "Fanout", "visibility": "private", "mode": "stream"})),
        )
        .await
        .expect("group");
    let gid = resp["group_id"].as_str().expect("group id").to_string();
    let mut clients = Vec::new();
    for chunk in (0..members).collect::<Vec<_>>().chunks(50) {
        let mut logins = Vec::new();
        for &i in chunk {
            let url = relay.url.clone();
            logins.push(tokio::spawn(async move {
                login(
                    &url,
                    &format!("m{i}@example.com"),
                    &format!("member-{i:04}"),
                    Kind::Human,
                )
                .await
            }));
        }
        for l in logins {
            clients.push(l.await.expect("login"));
        }
    }
    for i in 0..members {
        let _: serde_json::Value = writer
            .execute(
                "adding a member",
                writer
                    .request(
                        reqwest::Method::POST,
                        &format!("/api/v1/webchat/groups/{gid}/members"),
                    )
                    .json(&json!({"member_address": format!("member-{i:04}")})),
            )
            .await
            .expect("add member");
    }
    // Every member long-polls on its own lean connection; each records when each post arrived.
    let arrivals: Arc<Mutex<HashMap<String, Vec<Instant>>>> = Arc::default();
    let mut pollers = Vec::new();
    for c in clients {
        let arrivals = arrivals.clone();
        let token = c.token().unwrap_or_default().to_string();
        let host = relay.url.trim_start_matches("http://").to_string();
        pollers.push(tokio::spawn(async move {
            lean_poller(host, token, arrivals).await;
        }));
    }
    tokio::time::sleep(Duration::from_secs(2)).await; // let 1,000 polls park
    let mut last_member = Vec::new();
    let mut first_member = Vec::new();
    for p in 0..posts {
        let t0 = Instant::now();
        let r = writer
            .send(&send_req(
                "writer",
                &format!("group:{gid}"),
                format!("post {p}"),
            ))
            .await
            .expect("post");
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let done = arrivals
                .lock()
                .unwrap()
                .get(&r.message_id)
                .filter(|v| v.len() >= members)
                .map(|v| (*v.iter().min().unwrap(), *v.iter().max().unwrap()));
            if let Some((first, last)) = done {
                first_member.push(first.duration_since(t0));
                last_member.push(last.duration_since(t0));
                break;
            }
            assert!(Instant::now() < deadline, "post {p} did not reach everyone");
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
        tokio::time::sleep(Duration::from_millis(300)).await; // polls re-park
    }
    for p in pollers {
        p.abort();
    }
    header(&format!(
        "fan-out (one post to a {members}-member stream group, {posts} posts)"
    ));
    let (f, l) = (stats(first_member), stats(last_member));
    row("post -> first member has it", &f);
    row("post -> last member has it", &l);
    json!({"members": members, "posts": posts, "first_member": f, "last_member": l})
}

async fn bench_connections(conns: usize) -> serde_json::Value {
    // Room for the connections on both sides (the relay inherits the limit).
    let _ = nix::sys::resource::setrlimit(
        nix::sys::resource::Resource::RLIMIT_NOFILE,
        (conns as u64) * 2 + 1024,
        (conns as u64) * 2 + 1024,
    );
    let env = Env::new();
    let relay = Relay::start(&env, &[]);
    let users = 100;
    let mut clients = Vec::new();
    for i in 0..users {
        clients.push(
            login(
                &relay.url,
                &format!("u{i}@example.com"),
                &format!("idle-{i:03}"),
                Kind::Human,
            )
            .await,
        );
    }
    let rss_before = rss_kib(relay.pid());
    let mut polls = Vec::with_capacity(conns);
    for i in 0..conns {
        // A client per connection: one TCP connection each, as separate devices would have.
        let c = RelayClient::new(&relay.url)
            .expect("client")
            .with_token(clients[i % users].token().unwrap_or_default().to_string());
        polls.push(tokio::spawn(
            async move { c.poll(&poll_req("0", 90.0)).await },
        ));
        if i % 500 == 499 {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
    let deadline = Instant::now() + Duration::from_secs(60);
    while open_fds(relay.pid()) < conns && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let held = open_fds(relay.pid());
    tokio::time::sleep(Duration::from_secs(2)).await;
    let (c0, t0) = (cpu_ticks(relay.pid()), Instant::now());
    tokio::time::sleep(Duration::from_secs(10)).await;
    let cpu_pct =
        (cpu_ticks(relay.pid()) - c0) as f64 / ticks_per_sec() / t0.elapsed().as_secs_f64() * 100.0;
    let rss = rss_kib(relay.pid());
    for p in polls {
        p.abort();
    }
    println!("\nidle long-poll connections ({conns} requested)");
    println!("  open descriptors in the relay: {held}");
    println!(
        "  relay RSS: {:.1} MB before, {:.1} MB holding them",
        rss_before as f64 / 1024.0,
        rss as f64 / 1024.0
    );
    println!("  relay CPU while idle: {cpu_pct:.2} % of one core (10 s)");
    json!({"connections": conns, "descriptors": held, "rss_mb_before": rss_before as f64 / 1024.0, "rss_mb": rss as f64 / 1024.0, "idle_cpu_percent": cpu_pct})
}

async fn bench_footprint() -> serde_json::Value {
    let env = Env::new();
    let relay = Relay::start(&env, &[]);
    let sender = login(&relay.url, "s@example.com", "sender", Kind::Human).await;
    let out = env
        .cmd()
        .args([
            "persona",
            "agent@example.com",
            "--name",
            "Agent",
            "--chat-address",
            "agent-1",
            "--relay",
            &relay.url,
            "--quiet-url",
        ])
        .output()
        .expect("persona");
    assert!(out.status.success());
    let out = env
        .cmd()
        .args([
            "daemon",
            "start",
            "--task",
            "fp",
            "--as",
            "agent-1",
            "--json",
            "--on-message",
            "/bin/true",
        ])
        .output()
        .expect("daemon");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let started: serde_json::Value = serde_json::from_slice(&out.stdout).expect("json");
    let pid = started["pid"].as_u64().expect("pid") as u32;
    tokio::time::sleep(Duration::from_secs(5)).await;
    let idle = rss_kib(pid);
    let (idle_pss, idle_private) = pss_private_kib(pid);
    // 100 messages/s for 10 s, each waking the hook.
    let mut peak = idle;
    let t0 = Instant::now();
    for i in 0..1000u32 {
        let due = t0 + Duration::from_millis(10 * i as u64);
        tokio::time::sleep_until(due.into()).await;
        sender
            .send(&send_req("sender", "agent-1", format!("fp {i}")))
            .await
            .expect("send");
        if i % 50 == 0 {
            peak = peak.max(rss_kib(pid));
        }
    }
    tokio::time::sleep(Duration::from_secs(2)).await;
    peak = peak.max(rss_kib(pid));
    let after = rss_kib(pid);
    let _ = env.cmd().args(["daemon", "stop", "--task", "fp"]).output();
    println!("\ndaemon footprint");
    println!(
        "  idle: RSS {:.1} MB (PSS {:.1} MB, private {:.1} MB; the rest is code shared with the relay)",
        idle as f64 / 1024.0,
        idle_pss as f64 / 1024.0,
        idle_private as f64 / 1024.0
    );
    println!(
        "  RSS peak under 100 messages/s (1,000 hook runs): {:.1} MB; after: {:.1} MB",
        peak as f64 / 1024.0,
        after as f64 / 1024.0
    );
    json!({"rss_mb_idle": idle as f64 / 1024.0, "pss_mb_idle": idle_pss as f64 / 1024.0,
           "private_mb_idle": idle_private as f64 / 1024.0,
           "rss_mb_peak_100_per_sec": peak as f64 / 1024.0, "rss_mb_after": after as f64 / 1024.0})
}

/// Paced senders in the callbacks benchmark.
const PACERS: usize = 8;

/// One sender at a steady `rate` messages/s to `to`; the send time of each message id.
async fn paced_sender(
    client: RelayClient,
    from: String,
    to: String,
    rate: u64,
    deadline: Instant,
) -> HashMap<String, Instant> {
    let mut sent = HashMap::new();
    let mut tick = tokio::time::interval(Duration::from_micros(1_000_000 / rate.max(1)));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
    let mut k = 0u64;
    while Instant::now() < deadline {
        tick.tick().await;
        k += 1;
        let t = Instant::now();
        if let Ok(r) = client
            .send(&send_req(&from, &to, format!("paced {k}")))
            .await
        {
            sent.insert(r.message_id, t);
        }
    }
    sent
}

/// A webhook receiver in this process: the arrival time of each message id.
async fn local_receiver() -> (String, Arc<Mutex<HashMap<String, Instant>>>) {
    let got: Arc<Mutex<HashMap<String, Instant>>> = Arc::default();
    let seen = got.clone();
    let app = axum::Router::new().route(
        "/hook",
        axum::routing::post(move |body: axum::body::Bytes| {
            let seen = seen.clone();
            async move {
                let t = Instant::now();
                let v: serde_json::Value = serde_json::from_slice(&body).unwrap_or_default();
                if let Some(id) = v["data"]["message"]["message_id"].as_str() {
                    seen.lock().unwrap().insert(id.to_string(), t);
                }
                "ok"
            }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let url = format!("http://{}/hook", listener.local_addr().expect("addr"));
    tokio::spawn(async move { axum::serve(listener, app).await });
    (url, got)
}

/// Full-speed senders beside one paced sender at `rate`/s, whose receiver has a callback
/// (`with_callback`) or not: (full-speed msg/s, relay CPU µs per message, callback stats).
async fn callbacks_round(
    senders: usize,
    secs: u64,
    rate: u64,
    with_callback: bool,
) -> (f64, f64, Option<serde_json::Value>) {
    let env = Env::new();
    let relay = Relay::start(&env, &[("PCHAT_CALLBACKS_ALLOW_PRIVATE", "true")]);
    let mut pairs = Vec::new();
    for i in 0..senders {
        let s = login(
            &relay.url,
            &format!("s{i}@example.com"),
            &format!("sender-{i:02}"),
            Kind::Agent,
        )
        .await;
        login(
            &relay.url,
            &format!("r{i}@example.com"),
            &format!("recv-{i:02}"),
            Kind::Agent,
        )
        .await;
        pairs.push((s, i));
    }
    // Several paced senders: one alone waits on each answer and falls behind a busy relay.
    let mut paced = Vec::new();
    for k in 0..PACERS {
        paced.push(
            login(
                &relay.url,
                &format!("p{k}@example.com"),
                &format!("paced-{k}"),
                Kind::Agent,
            )
            .await,
        );
    }
    let sink = login(&relay.url, "sink@example.com", "sink", Kind::Agent).await;
    let (url, got) = local_receiver().await;
    if with_callback {
        let resp = sink
            .http()
            .post(format!("{}/api/v1/webchat/callbacks/inbound", relay.url))
            .header("x-pchat-session", sink.token().unwrap_or_default())
            .json(&json!({"url": url}))
            .send()
            .await
            .expect("subscribe");
        assert!(
            resp.status().is_success(),
            "subscribing failed: {}",
            resp.status()
        );
    }
    let deadline = Instant::now() + Duration::from_secs(secs);
    let start = Instant::now();
    let cpu0 = cpu_ticks(relay.pid());
    let pacers: Vec<_> = paced
        .into_iter()
        .enumerate()
        .map(|(k, c)| {
            let each = rate / PACERS as u64;
            tokio::spawn(paced_sender(
                c,
                format!("paced-{k}"),
                "sink".into(),
                each,
                deadline,
            ))
        })
        .collect();
    let mut tasks = Vec::new();
    for (s, i) in &pairs {
        tasks.push(tokio::spawn(lean_sender(
            relay.url.clone(),
            s.token().unwrap_or_default().to_string(),
            format!("sender-{i:02}"),
            format!("recv-{i:02}"),
            deadline,
        )));
    }
    let mut acked = 0usize;
    for t in tasks {
        acked += t.await.expect("sender").0.len();
    }
    let mut sent = HashMap::new();
    for p in pacers {
        sent.extend(p.await.expect("pacer"));
    }
    let elapsed = start.elapsed().as_secs_f64();
    let cpu_us = (cpu_ticks(relay.pid()) - cpu0) as f64 / ticks_per_sec() * 1e6
        / (acked + sent.len()).max(1) as f64;
    let full_rate = acked as f64 / elapsed;
    if !with_callback {
        return (full_rate, cpu_us, None);
    }
    // Let the last deliveries land (bounded), then compare arrivals with sends.
    let drain = Instant::now();
    while got.lock().unwrap().len() < sent.len() && drain.elapsed() < Duration::from_secs(30) {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let arrivals = got.lock().unwrap().clone();
    let in_window = arrivals.values().filter(|t| **t <= deadline).count();
    let lags: Vec<Duration> = sent
        .iter()
        .filter_map(|(id, t)| arrivals.get(id).map(|a| a.duration_since(*t)))
        .collect();
    let delivered = lags.len();
    let s = stats(lags);
    let stats_json = json!({"paced_sent": sent.len(), "delivered": delivered,
        "delivered_in_window_per_sec": in_window as f64 / elapsed,
        "drain_secs": drain.elapsed().as_secs_f64(), "lag": s});
    (full_rate, cpu_us, Some(stats_json))
}

/// Callbacks at `rate`/s while 64 senders go full speed: send throughput with and without the
/// callback, interleaved over `rounds` (medians), and the callbacks' lag.
async fn bench_callbacks(rounds: usize, secs: u64, rate: u64) -> serde_json::Value {
    let (mut without, mut with, mut cpu_a, mut cpu_b, mut cb) =
        (Vec::new(), Vec::new(), Vec::new(), Vec::new(), Vec::new());
    for _ in 0..rounds {
        let (r, c, _) = callbacks_round(64, secs, rate, false).await;
        without.push(r);
        cpu_a.push(c);
        let (r, c, s) = callbacks_round(64, secs, rate, true).await;
        with.push(r);
        cpu_b.push(c);
        cb.extend(s);
    }
    let median = |v: &mut Vec<f64>| {
        v.sort_by(|a, b| a.total_cmp(b));
        v[v.len() / 2]
    };
    let (a, b) = (median(&mut without), median(&mut with));
    header(&format!(
        "callbacks ({rate}/s to a local receiver beside 64 full-speed senders, {secs} s, {rounds} interleaved rounds)"
    ));
    println!("  full-speed sends without the callback: median {a:.0} msg/s ({without:?})");
    println!("  full-speed sends with the callback:    median {b:.0} msg/s ({with:?})");
    println!("  ratio with/without: {:.3}", b / a);
    println!(
        "  relay CPU per message: {:.0} µs without, {:.0} µs with",
        median(&mut cpu_a),
        median(&mut cpu_b)
    );
    for s in &cb {
        println!(
            "  callbacks: {} sent, {} delivered, {:.0}/s delivered within the window, lag p50 {:.1} ms p99 {:.1} ms",
            s["paced_sent"],
            s["delivered"],
            s["delivered_in_window_per_sec"].as_f64().unwrap_or(0.0),
            s["lag"]["p50_ms"].as_f64().unwrap_or(0.0),
            s["lag"]["p99_ms"].as_f64().unwrap_or(0.0)
        );
    }
    json!({"rate": rate, "seconds": secs, "without": without, "with": with, "ratio": b / a,
           "relay_cpu_us_without": cpu_a, "relay_cpu_us_with": cpu_b, "callbacks": cb})
}

/// The MCP poll: `wait_for_message` over stdio (the official Python SDK client) woken by a
/// person's send, `rounds` times; send -> tool answer.
async fn bench_mcp(rounds: usize) -> serde_json::Value {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let py = root.join("tests/.venv/bin/python");
    assert!(
        py.exists(),
        "run tests/run.sh first: it installs the MCP SDK into tests/.venv"
    );
    let env = Env::new();
    let relay = Relay::start(&env, &[]);
    let human = login(&relay.url, "human@example.com", "human-1", Kind::Human).await;
    let made = env
        .cmd()
        .args([
            "persona",
            "agent@example.com",
            "--name",
            "agent-1",
            "--chat-address",
            "agent-1",
        ])
        .args(["--relay", &relay.url, "--quiet-url"])
        .output()
        .expect("persona");
    assert!(
        made.status.success(),
        "persona: {}",
        String::from_utf8_lossy(&made.stderr)
    );
    let cmd = env.cmd();
    let bin = cmd.get_program().to_os_string();
    let out = tokio::task::spawn_blocking(move || {
        Command::new(py)
            .arg(root.join("tests/mcp/client.py"))
            .arg("wake")
            .envs(
                cmd.get_envs()
                    .filter_map(|(k, v)| Some((k.to_os_string(), v?.to_os_string()))),
            )
            .env("GTSW_BIN", bin)
            .env("GTSW_PERSONA", "agent-1")
            .env("RELAY_URL", &relay.url)
            .env("HUMAN_TOKEN", human.token().unwrap_or_default())
            .env("AGENT", "agent-1")
            .env("ROUNDS", rounds.to_string())
            .output()
            .expect("MCP client")
    })
    .await
    .expect("client");
    let text = String::from_utf8_lossy(&out.stdout);
    let notes: serde_json::Value = text
        .lines()
        .find_map(|l| l.strip_prefix("OK "))
        .and_then(|l| serde_json::from_str(l).ok())
        .unwrap_or_else(|| {
            panic!(
                "MCP client failed: {text}{}",
                String::from_utf8_lossy(&out.stderr)
            )
        });
    let times: Vec<Duration> = notes["wake_ms"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|v| v.as_f64())
        .map(|ms| Duration::from_secs_f64(ms / 1000.0))
        .collect();
    header(&format!(
        "MCP poll ({rounds} rounds, stdio, official Python SDK client)"
    ));
    let s = stats(times);
    row("send -> wait_for_message answers", &s);
    json!({"rounds": rounds, "latency": s})
}

fn main() {
    if let Ok(log) = std::env::var("GTS_BENCH_HOOK_LOG") {
        hook_mode(&log);
        return;
    }
    gts_webchat::client::install_crypto();
    let which: Vec<String> = std::env::args()
        .skip(1)
        .filter(|a| !a.starts_with("--"))
        .collect();
    let all = which.is_empty() || which.iter().any(|w| w == "all");
    let wants = |name: &str| all || which.iter().any(|w| w == name);
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("runtime");
    rt.block_on(async {
        if wants("wake") {
            write_json("wake", bench_wake(1000).await);
        }
        if wants("throughput") {
            write_json("throughput", bench_throughput(64, 10).await);
        }
        if wants("fanout") {
            write_json("fanout", bench_fanout(1000, 20).await);
        }
        if wants("connections") {
            write_json("connections", bench_connections(10_000).await);
        }
        if wants("footprint") {
            write_json("footprint", bench_footprint().await);
        }
        if wants("mcp") {
            write_json("mcp", bench_mcp(200).await);
        }
        if wants("callbacks") {
            write_json("callbacks", bench_callbacks(3, 10, 1000).await);
        }
    });
}
