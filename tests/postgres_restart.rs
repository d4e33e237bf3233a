//! The PostgreSQL server itself restarts while relays wait on it. A test binary of its own:
//! cargo runs test binaries one after another, so no other test loses its database meanwhile.

mod common;

use std::process::Command;
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::*;
use serde_json::json;

/// `pg_ctlcluster VERSION main ACTION` for the machine's one cluster.
fn cluster(action: &str) -> bool {
    let version = std::fs::read_dir("/etc/postgresql")
        .expect("/etc/postgresql: this test restarts the machine's PostgreSQL cluster")
        .filter_map(|e| e.ok())
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .next()
        .expect("a PostgreSQL cluster in /etc/postgresql");
    let mut args = vec!["--skip-systemctl-redirect", &version, "main", action];
    if action == "stop" {
        args.extend(["-m", "fast"]);
    }
    Command::new("pg_ctlcluster")
        .args(&args)
        .status()
        .expect("run pg_ctlcluster")
        .success()
}

/// Starts the cluster again however the test ends, so later tests find it running.
struct Restarts;

impl Drop for Restarts {
    fn drop(&mut self) {
        cluster("start");
        let deadline = Instant::now() + Duration::from_secs(30);
        while Instant::now() < deadline
            && !Command::new("pg_isready")
                .args(["-q", "-h", "127.0.0.1", "-p", "5432"])
                .status()
                .is_ok_and(|s| s.success())
        {
            std::thread::sleep(Duration::from_millis(100));
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn long_polls_on_two_relays_get_what_is_sent_after_the_database_restarts() {
    let (sa, sb) = (Sandbox::new(), Sandbox::new());
    let db = Arc::new(TestDb::create());
    let a = Relay::start_on(&sa, Some(db.clone()), &["--port", "0"], &[]);
    let b = Relay::start_on(&sb, Some(db.clone()), &["--port", "0"], &[]);
    let (api_a, api_b) = (a.api(), b.api());
    let alice = api_a.login("alice@example.com", "alice", "human").await;
    let bob = api_b.login("bob@example.com", "bob", "agent").await;
    let carol = api_a.login("carol@example.com", "carol", "agent").await;

    // Bob waits on B and Carol on A, as daemons do: a 503 while the database is away is
    // asked again.
    let wait_on = |api: Api, token: String| {
        tokio::spawn(async move {
            let started = Instant::now();
            loop {
                let (s, v) = api
                    .post(
                        "/api/v1/webchat/poll",
                        Some(&token),
                        json!({"after": "0", "wait": 30}),
                    )
                    .await;
                if s == 200 && !texts(&v).is_empty() {
                    return texts(&v);
                }
                assert!(s == 200 || s == 503, "{s} {v}");
                assert!(
                    started.elapsed() < Duration::from_secs(90),
                    "the poll was never answered"
                );
                if s == 503 {
                    tokio::time::sleep(Duration::from_millis(200)).await;
                }
            }
        })
    };
    let (pb, pa) = (
        b.requests_started("/api/v1/webchat/poll"),
        a.requests_started("/api/v1/webchat/poll"),
    );
    let bob_waits = wait_on(api_b.clone(), bob.clone());
    let carol_waits = wait_on(api_a.clone(), carol.clone());
    b.wait_requests("/api/v1/webchat/poll", pb, 1);
    a.wait_requests("/api/v1/webchat/poll", pa, 1);

    let restarted = Restarts;
    assert!(cluster("stop"), "pg_ctlcluster stop");
    let (s, v) = api_a.get("/health", None).await;
    assert_error(s, &v, 503, "storage_unavailable");
    drop(restarted);

    // Back: a send on A reaches the poll on B and one on A, each once.
    let started = Instant::now();
    for (to, text) in [("bob", "after the restart"), ("carol", "you too")] {
        loop {
            let (s, v) = api_a
                .post(
                    "/api/v1/messages",
                    Some(&alice),
                    json!({"to": to, "text": text}),
                )
                .await;
            if s == 200 {
                break;
            }
            assert_error(s, &v, 503, "storage_unavailable");
            assert!(
                started.elapsed() < Duration::from_secs(30),
                "relay A did not recover"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
    assert_eq!(bob_waits.await.expect("Bob's poll"), ["after the restart"]);
    assert_eq!(carol_waits.await.expect("Carol's poll"), ["you too"]);
    for r in [&a, &b] {
        let (s, v) = r.api().get("/health", None).await;
        assert_eq!(s, 200, "{v}");
    }
}
