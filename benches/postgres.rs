//! Several relays on PostgreSQL against one relay on SQLite, interleaved round by round so
//! they compare on this shared machine: durable DM throughput with 64 senders (SQLite, 1 relay
//! on PostgreSQL, 2 relays on PostgreSQL), the cross-relay wake (a send on A answers a
//! long-poll on B), and throughput again once the database holds 10 million messages.
//! Run by hand (never in `cargo test`):
//!
//!     cargo bench --bench postgres -- [rounds N] [rows N]    (figures: docs/benchmarks.md)
//!
//! Needs the PostgreSQL server at GTSW_PG_ADMIN (default postgres://root@127.0.0.1:5432/test)
//! and psql; each round makes fresh databases and drops them. Writes
//! target/bench-results/postgres.json.

use std::collections::HashMap;
use std::process::Command;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use gts_webchat::api::Kind;
use serde_json::json;

#[path = "common/mod.rs"]
mod common;

use common::*;

const SENDERS: usize = 64;
const SECS: u64 = 10;
const WAKE_ROUNDS: usize = 200;

fn admin() -> String {
    std::env::var("GTSW_PG_ADMIN").unwrap_or_else(|_| "postgres://root@127.0.0.1:5432/test".into())
}

fn psql(url: &str, sql: &str) -> String {
    let out = Command::new("psql")
        .args([url, "-qAtX", "-v", "ON_ERROR_STOP=1", "-c", sql])
        .output()
        .expect("run psql");
    assert!(
        out.status.success(),
        "psql {sql:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

/// A fresh database, dropped at the end.
struct Db {
    url: String,
    name: String,
}

impl Db {
    fn create(tag: &str) -> Db {
        let name = format!("gtsw_bench_{tag}_{}", std::process::id());
        let admin = admin();
        psql(
            &admin,
            &format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)"),
        );
        psql(&admin, &format!("CREATE DATABASE {name}"));
        let base = admin.rsplit_once('/').map_or(admin.as_str(), |(b, _)| b);
        Db {
            url: format!("{base}/{name}"),
            name,
        }
    }
}

impl Drop for Db {
    fn drop(&mut self) {
        let _ = Command::new("psql")
            .args([&admin(), "-qAtX", "-c"])
            .arg(format!(
                "DROP DATABASE IF EXISTS {} WITH (FORCE)",
                self.name
            ))
            .output();
    }
}

/// Busy and total CPU ticks of the whole machine (relays, PostgreSQL and this bench).
fn machine_ticks() -> (u64, u64) {
    let stat = std::fs::read_to_string("/proc/stat").unwrap_or_default();
    let f: Vec<u64> = stat
        .lines()
        .next()
        .unwrap_or_default()
        .split_whitespace()
        .skip(1)
        .filter_map(|x| x.parse().ok())
        .collect();
    let total: u64 = f.iter().sum();
    let idle = f.get(3).copied().unwrap_or(0) + f.get(4).copied().unwrap_or(0);
    (total - idle, total)
}

/// 64 senders, each to its own receiver, spread over `relays`, for SECS seconds.
async fn throughput(label: &str, relays: &[&Relay]) -> serde_json::Value {
    // Fresh identities each time, so each receiver's stream head counts this run only.
    static RUN: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
    let run = RUN.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let urls: Vec<String> = relays.iter().map(|r| r.url.clone()).collect();
    let pairs = sign_in_pairs(&urls, SENDERS, &format!("{run}-")).await;
    let deadline = Instant::now() + Duration::from_secs(SECS);
    let start = Instant::now();
    let relay_cpu0: u64 = relays.iter().map(|r| cpu_ticks(r.pid())).sum();
    let (busy0, _) = machine_ticks();
    let (all, errors) = send_until(&pairs, deadline).await;
    let elapsed = start.elapsed().as_secs_f64();
    let relay_cpu = (relays.iter().map(|r| cpu_ticks(r.pid())).sum::<u64>() - relay_cpu0) as f64
        / ticks_per_sec();
    let machine_cpu = (machine_ticks().0 - busy0) as f64 / ticks_per_sec();
    let acked = all.len();
    let stored = stored_total(&pairs).await;
    let rate = acked as f64 / elapsed;
    let us = |s: f64| s * 1e6 / acked.max(1) as f64;
    let s = stats(all);
    println!(
        "  {label:<28} {rate:>7.0} msg/s  p50 {:>5.1} ms  p99 {:>6.1} ms  relay CPU {:>4.0} µs/msg  machine CPU {:>4.0} µs/msg  errors {errors}  stored {}",
        s.p50_ms,
        s.p99_ms,
        us(relay_cpu),
        us(machine_cpu),
        if stored as usize == acked {
            "= acked"
        } else {
            "!= acked"
        }
    );
    assert_eq!(
        stored as usize, acked,
        "{label}: an acknowledged message is missing"
    );
    json!({"label": label, "messages_per_sec": rate, "latency": s, "errors": errors,
           "relay_cpu_us_per_message": us(relay_cpu), "machine_cpu_us_per_message": us(machine_cpu),
           "acknowledged": acked, "stored": stored})
}

/// One message at a time sent on `a`, timed until a long-poll on `b` has it.
async fn cross_wake(a: &Relay, b: &Relay) -> serde_json::Value {
    let sender = login(&a.url, "wa@example.com", "wake-a", Kind::Agent).await;
    let receiver = login(&b.url, "wb@example.com", "wake-b", Kind::Agent).await;
    let arrivals: Arc<Mutex<HashMap<String, Vec<Instant>>>> = Arc::default();
    let host = b.url.trim_start_matches("http://").to_string();
    let poller = tokio::spawn(lean_poller(
        host,
        receiver.token().unwrap_or_default().to_string(),
        arrivals.clone(),
    ));
    tokio::time::sleep(Duration::from_millis(300)).await;
    let mut lat = Vec::new();
    for k in 0..WAKE_ROUNDS {
        let t = Instant::now();
        let id = sender
            .send(&send_req("wake-a", "wake-b", format!("w{k}")))
            .await
            .expect("send")
            .message_id;
        let deadline = Instant::now() + Duration::from_secs(5);
        loop {
            if let Some(at) = arrivals.lock().unwrap().get(&id).and_then(|v| v.first()) {
                lat.push(at.duration_since(t));
                break;
            }
            assert!(Instant::now() < deadline, "message {id} never arrived on B");
            tokio::time::sleep(Duration::from_micros(200)).await;
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    poller.abort();
    let s = stats(lat);
    println!(
        "  cross-relay wake (send on A -> long-poll on B)  p50 {:.2} ms  p99 {:.2} ms  max {:.1} ms",
        s.p50_ms, s.p99_ms, s.max_ms
    );
    json!({"rounds": WAKE_ROUNDS, "latency": s})
}

/// Fills the database to `rows` messages (and as many deliveries, to one identity of their
/// own), as a relay that has run for a long time has them.
fn fill(db: &Db, rows: u64) {
    let t = Instant::now();
    psql(
        &db.url,
        &format!(
            "INSERT INTO users (email, chat_address, display_name, kind, created_at)
                 VALUES ('filler@example.com', 'filler', 'filler', 'agent', 0);
             INSERT INTO messages (public_id, sender_id, to_target, text, created_at, conv)
                 SELECT 'fill_' || g, u.id, 'filler', 'an older message of some length', g, 0
                 FROM generate_series(1, {rows}) g, (SELECT id FROM users WHERE chat_address = 'filler') u;
             INSERT INTO deliveries (user_id, seq, message_id)
                 SELECT u.id, m.id, m.id FROM messages m, (SELECT id FROM users WHERE chat_address = 'filler') u
                 WHERE m.public_id LIKE 'fill_%';
             INSERT INTO stream_heads (user_id, head)
                 SELECT user_id, MAX(seq) FROM deliveries GROUP BY user_id
                 ON CONFLICT (user_id) DO UPDATE SET head = EXCLUDED.head;"
        ),
    );
    psql(&db.url, "VACUUM ANALYZE");
    println!(
        "  filled to {rows} messages in {:.0} s",
        t.elapsed().as_secs_f64()
    );
}

fn main() {
    gts_webchat::client::install_crypto();
    let args: Vec<String> = std::env::args().skip(1).collect();
    let arg = |name: &str, default: u64| {
        args.iter()
            .position(|a| a == name)
            .and_then(|i| args.get(i + 1))
            .and_then(|v| v.parse().ok())
            .unwrap_or(default)
    };
    let rounds = arg("rounds", 3);
    let rows = arg("rows", 10_000_000);
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("runtime");
    rt.block_on(async {
        header(&format!(
            "PostgreSQL vs SQLite ({SENDERS} senders, {SECS} s, fsync per commit), {rounds} interleaved rounds"
        ));
        let mut results = Vec::new();
        for round in 1..=rounds {
            println!(" round {round}");
            let sqlite = {
                let env = Env::new();
                let relay = Relay::start(&env, &[]);
                throughput("SQLite, 1 relay", &[&relay]).await
            };
            let one = {
                let env = Env::new();
                let db = Db::create("one");
                let relay = Relay::start_args(&env, &["--database", &db.url], &[]);
                throughput("PostgreSQL, 1 relay", &[&relay]).await
            };
            let (two, wake) = {
                let (ea, eb) = (Env::new(), Env::new());
                let db = Db::create("two");
                let a = Relay::start_args(&ea, &["--database", &db.url], &[]);
                let b = Relay::start_args(&eb, &["--database", &db.url], &[]);
                let wake = cross_wake(&a, &b).await;
                (throughput("PostgreSQL, 2 relays", &[&a, &b]).await, wake)
            };
            results.push(json!({"round": round, "sqlite": sqlite, "postgres_1": one,
                                "postgres_2": two, "cross_wake": wake}));
        }
        let grown = if rows > 0 {
            let env = Env::new();
            let db = Db::create("grown");
            // The relay makes the schema; then the rows go in underneath it.
            let relay = Relay::start_args(&env, &["--database", &db.url], &[]);
            let before = throughput("PostgreSQL, empty", &[&relay]).await;
            drop(relay);
            fill(&db, rows);
            let relay = Relay::start_args(&env, &["--database", &db.url], &[]);
            let after = throughput(&format!("PostgreSQL, {rows} rows"), &[&relay]).await;
            json!({"rows": rows, "before": before, "after": after})
        } else {
            serde_json::Value::Null
        };
        write_json(
            "postgres",
            json!({"rounds": results, "grown": grown, "machine": machine()}),
        );
    });
}
