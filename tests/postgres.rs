//! Several relays on one PostgreSQL database: wake-ups, sessions and delivery guarantees
//! across relays, and what a relay does when its database goes away. Each test makes a fresh
//! database on the machine's PostgreSQL (GTSW_PG_ADMIN, default
//! postgres://root@127.0.0.1:5432/test).

mod common;

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::Duration;

use common::*;
use serde_json::{Value, json};

/// Two relays on one fresh database, each with its own sandbox (data dir, log).
fn two_relays(sa: &Sandbox, sb: &Sandbox) -> (Arc<TestDb>, Relay, Relay) {
    let db = Arc::new(TestDb::create());
    let a = Relay::start_on(sa, Some(db.clone()), &["--port", "0"], &[]);
    let b = Relay::start_on(sb, Some(db.clone()), &["--port", "0"], &[]);
    (db, a, b)
}

/// Reads `token`'s stream from `after` until `want` messages arrived (deadline 60 s).
async fn read_all(api: &Api, token: &str, want: usize) -> Vec<Value> {
    let mut got = Vec::new();
    let mut cursor = "0".to_string();
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    while got.len() < want {
        assert!(
            std::time::Instant::now() < deadline,
            "only {} of {want} messages arrived",
            got.len()
        );
        let v = api
            .poll(token, json!({"after": cursor, "limit": 500, "wait": 5}))
            .await;
        for m in v["messages"].as_array().cloned().unwrap_or_default() {
            if m["type"] == "message" {
                got.push(m);
            }
        }
        cursor = v["next_cursor"].as_str().unwrap_or(&cursor).to_string();
    }
    got
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_send_on_one_relay_wakes_a_long_poll_on_the_other_and_logout_reaches_both() {
    let (sa, sb) = (Sandbox::new(), Sandbox::new());
    let (_db, a, b) = two_relays(&sa, &sb);
    for r in [&a, &b] {
        let (s, v) = r.api().get("/health", None).await;
        assert_eq!(s, 200, "{v}");
        assert_eq!(v["database"], "postgres", "{v}");
    }
    let (api_a, api_b) = (a.api(), b.api());
    let alice = api_a.login("alice@example.com", "alice", "human").await;
    let bob = api_b.login("bob@example.com", "bob", "agent").await;

    // Bob waits on B; only once his poll is in does Alice send on A.
    let before = b.requests_started("/api/v1/webchat/poll");
    let waiter = {
        let (api_b, bob) = (api_b.clone(), bob.clone());
        tokio::spawn(async move { api_b.poll(&bob, json!({"after": "0", "wait": 25})).await })
    };
    b.wait_requests("/api/v1/webchat/poll", before, 1);
    api_a.send(&alice, "alice", "bob", "across relays").await;
    let v = waiter.await.expect("poll task");
    assert_eq!(texts(&v), ["across relays"], "{v}");

    // Alice's token works on B too; after she logs out on A, B refuses it within a second.
    let (s, v) = api_b
        .get("/api/v1/webchat/conversations", Some(&alice))
        .await;
    assert_eq!(s, 200, "{v}");
    let (s, v) = api_a
        .post("/api/v1/pchat/auth/logout", Some(&alice), json!({}))
        .await;
    assert_eq!(s, 200, "{v}");
    let started = std::time::Instant::now();
    loop {
        let (s, _) = api_b
            .get("/api/v1/webchat/conversations", Some(&alice))
            .await;
        if s == 401 {
            break;
        }
        assert!(
            started.elapsed() < Duration::from_secs(3),
            "relay B still takes a token logged out on A"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // The database driver's statement log (with every parameter: token hashes, secrets,
    // message text) never reaches the relay's log, even at RUST_LOG=debug.
    for r in [&a, &b] {
        let log = r.log_text();
        assert!(log.contains("DEBUG"), "the relay logs at debug in tests");
        assert!(
            !log.contains("parameters"),
            "statement parameters reached the log"
        );
        assert!(
            !log.contains("across relays"),
            "message text reached the log"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn four_senders_on_two_relays_every_receiver_sees_every_message_once_in_one_order() {
    const PER_THREAD: usize = 1_000;
    let (sa, sb) = (Sandbox::new(), Sandbox::new());
    let (_db, a, b) = two_relays(&sa, &sb);
    let relays = [a.api(), b.api()];
    let mut senders = Vec::new();
    for i in 0..4 {
        let name = format!("sender-{i}");
        let token = relays[i % 2]
            .login(&format!("s{i}@example.com"), &name, "agent")
            .await;
        senders.push((name, token));
    }
    let r1 = relays[0].login("r1@example.com", "reader-1", "human").await;
    let r2 = relays[1].login("r2@example.com", "reader-2", "human").await;
    let (s, v) = relays[0]
        .post(
            "/api/v1/webchat/groups",
            Some(&senders[0].1),
            json!({"name": "load", "visibility": "private", "mode": "chat"}),
        )
        .await;
    assert_eq!(s, 200, "{v}");
    let gid = v["group_id"].as_str().expect("group id").to_string();
    for who in ["sender-1", "sender-2", "sender-3", "reader-1", "reader-2"] {
        let (s, v) = relays[0]
            .post(
                &format!("/api/v1/webchat/groups/{gid}/members"),
                Some(&senders[0].1),
                json!({"member_address": who}),
            )
            .await;
        assert_eq!(s, 200, "{v}");
    }
    let to = format!("group:{gid}");

    // Every sender sends through both relays at once: 8 writers, 1,000 messages each.
    let mut tasks = Vec::new();
    for (i, (name, token)) in senders.iter().enumerate() {
        for (r, api) in relays.iter().enumerate() {
            let (api, name, token, to) = (api.clone(), name.clone(), token.clone(), to.clone());
            tasks.push(tokio::spawn(async move {
                for n in 0..PER_THREAD {
                    api.send(&token, &name, &to, &format!("{i}-{r}-{n}")).await;
                }
            }));
        }
    }
    for t in tasks {
        t.await.expect("sender task");
    }
    let total = 4 * 2 * PER_THREAD;
    let seen1 = read_all(&relays[0], &r1, total).await;
    let seen2 = read_all(&relays[1], &r2, total).await;
    for seen in [&seen1, &seen2] {
        assert_eq!(seen.len(), total);
        let ids: HashSet<&str> = seen
            .iter()
            .map(|m| m["message_id"].as_str().unwrap_or_default())
            .collect();
        assert_eq!(ids.len(), total, "a message arrived twice");
        // Each writer's messages arrive in the order it sent them.
        let mut last: HashMap<String, i64> = HashMap::new();
        for m in seen.iter() {
            let text = m["text"].as_str().unwrap_or_default();
            let (writer, n) = text.rsplit_once('-').expect("i-r-n");
            let n: i64 = n.parse().expect("n");
            let prev = last.insert(writer.to_string(), n).unwrap_or(-1);
            assert_eq!(n, prev + 1, "writer {writer} out of order at {text}");
        }
    }
    // Both readers saw one order.
    let order = |seen: &[Value]| -> Vec<String> {
        seen.iter()
            .map(|m| m["message_id"].as_str().unwrap_or_default().to_string())
            .collect()
    };
    assert!(
        order(&seen1) == order(&seen2),
        "the readers saw different orders"
    );
    // Positions have no gaps.
    for (token, api) in [(&r1, &relays[0]), (&r2, &relays[1])] {
        let v = api.poll(token, json!({"after": "0", "limit": 500})).await;
        let cursors: Vec<u64> = v["messages"]
            .as_array()
            .expect("messages")
            .iter()
            .map(|m| m["cursor"].as_str().unwrap_or("0").parse().unwrap_or(0))
            .collect();
        let want: Vec<u64> = (1..=cursors.len() as u64).collect();
        assert_eq!(cursors, want);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_9_of_one_relay_during_sends_loses_nothing_acknowledged() {
    let (sa, sb) = (Sandbox::new(), Sandbox::new());
    let (_db, mut a, b) = two_relays(&sa, &sb);
    let (api_a, api_b) = (a.api(), b.api());
    let sender = api_a.login("s@example.com", "sender", "agent").await;
    let reader = api_b.login("r@example.com", "reader", "human").await;
    let acked = Arc::new(std::sync::Mutex::new(Vec::<String>::new()));
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let mut tasks = Vec::new();
    for t in 0..4 {
        let (api, sender, acked, stop) =
            (api_a.clone(), sender.clone(), acked.clone(), stop.clone());
        tasks.push(tokio::spawn(async move {
            let mut n = 0;
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                let (s, v) = api
                    .post(
                        "/api/v1/messages",
                        Some(&sender),
                        json!({"to": "reader", "text": format!("{t}-{n}")}),
                    )
                    .await;
                if s != 200 {
                    return; // the relay died under us
                }
                if let Some(id) = v["message_id"].as_str() {
                    acked.lock().unwrap().push(id.to_string());
                }
                n += 1;
            }
        }));
    }
    wait_for(Duration::from_secs(30), "200 acknowledged sends", || {
        (acked.lock().unwrap().len() >= 200).then_some(())
    });
    a.kill9();
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    for t in tasks {
        let _ = t.await;
    }
    let acked: Vec<String> = acked.lock().unwrap().clone();
    let seen = read_all(&api_b, &reader, acked.len()).await;
    let ids: HashSet<&str> = seen
        .iter()
        .map(|m| m["message_id"].as_str().unwrap_or_default())
        .collect();
    for id in &acked {
        assert!(ids.contains(id.as_str()), "acknowledged {id} was lost");
    }
    assert_eq!(ids.len(), seen.len(), "a message arrived twice");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lost_database_connections_wake_every_waiter_and_a_down_database_answers_503() {
    let (sa, sb) = (Sandbox::new(), Sandbox::new());
    let (db, a, b) = two_relays(&sa, &sb);
    let (api_a, api_b) = (a.api(), b.api());
    let alice = api_a.login("alice@example.com", "alice", "human").await;
    let bob = api_b.login("bob@example.com", "bob", "agent").await;
    let name = db.url.rsplit('/').next().unwrap_or_default().to_string();
    let admin = pg_admin_url();
    let kick = |allow: bool| {
        psql(
            &admin,
            &format!("ALTER DATABASE {name} WITH ALLOW_CONNECTIONS {allow}"),
        );
        if !allow {
            psql(
                &admin,
                &format!(
                    "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = '{name}'"
                ),
            );
        }
    };

    // Bob waits on B while every connection of both relays is cut and the database refuses
    // new ones; Alice's send fails cleanly with 503 meanwhile.
    let before = b.requests_started("/api/v1/webchat/poll");
    // Bob's client polls like the daemon does: on a 503 it asks again.
    let waiter = {
        let (api_b, bob) = (api_b.clone(), bob.clone());
        tokio::spawn(async move {
            loop {
                let (s, v) = api_b
                    .post(
                        "/api/v1/webchat/poll",
                        Some(&bob),
                        json!({"after": "0", "wait": 30}),
                    )
                    .await;
                if s == 200 {
                    return (v, s);
                }
                assert_eq!(s, 503, "{v}");
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        })
    };
    b.wait_requests("/api/v1/webchat/poll", before, 1);
    kick(false);
    let (s, v) = api_a.get("/health", None).await;
    assert_error(s, &v, 503, "storage_unavailable");
    let (s, v) = api_a
        .post(
            "/api/v1/messages",
            Some(&alice),
            json!({"to": "bob", "text": "lost?"}),
        )
        .await;
    assert_error(s, &v, 503, "storage_unavailable");

    // The database comes back: both relays recover by themselves, and the send made then
    // reaches the poll that was waiting all along.
    kick(true);
    let started = std::time::Instant::now();
    while api_a.get("/health", None).await.0 != 200 {
        assert!(
            started.elapsed() < Duration::from_secs(20),
            "relay A did not recover"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let mut sent = false;
    for _ in 0..100 {
        let (s, _) = api_a
            .post(
                "/api/v1/messages",
                Some(&alice),
                json!({"to": "bob", "text": "back"}),
            )
            .await;
        if s == 200 {
            sent = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(sent, "relay A never recovered");
    let (v, _) = waiter.await.expect("poll task");
    assert_eq!(texts(&v), ["back"], "{v}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_long_poll_is_still_woken_after_its_relay_lost_every_database_connection() {
    let (sa, sb) = (Sandbox::new(), Sandbox::new());
    let (db, a, b) = two_relays(&sa, &sb);
    let (api_a, api_b) = (a.api(), b.api());
    let alice = api_a.login("alice@example.com", "alice", "human").await;
    let bob = api_b.login("bob@example.com", "bob", "agent").await;
    let name = db.url.rsplit('/').next().unwrap_or_default().to_string();
    // Cut every connection of relay B (its doorbell and its pool); the database stays up.
    psql(
        &pg_admin_url(),
        &format!("SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = '{name}'"),
    );
    // B listens again by itself; a send on A then wakes a poll waiting on B.
    let before = b.requests_started("/api/v1/webchat/poll");
    let waiter = {
        let (api_b, bob) = (api_b.clone(), bob.clone());
        tokio::spawn(async move {
            let started = std::time::Instant::now();
            loop {
                let (s, v) = api_b
                    .post(
                        "/api/v1/webchat/poll",
                        Some(&bob),
                        json!({"after": "0", "wait": 30}),
                    )
                    .await;
                if s == 200 && !texts(&v).is_empty() {
                    return v;
                }
                assert!(s == 200 || s == 503, "{s} {v}");
                assert!(
                    started.elapsed() < Duration::from_secs(40),
                    "the poll on B was never woken"
                );
            }
        })
    };
    b.wait_requests("/api/v1/webchat/poll", before, 1);
    let mut sent = false;
    for _ in 0..100 {
        let (s, _) = api_a
            .post(
                "/api/v1/messages",
                Some(&alice),
                json!({"to": "bob", "text": "still here"}),
            )
            .await;
        if s == 200 {
            sent = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(sent, "relay A could not send");
    let v = waiter.await.expect("poll task");
    assert_eq!(texts(&v), ["still here"], "{v}");
}

/// Everything a person sees of their relay: their whole stream, conversation list and groups.
async fn what_they_see(api: &Api, token: &str) -> Value {
    let stream = api
        .poll(token, json!({"after": "0", "limit": 500, "wait": 0}))
        .await;
    let (s, convs) = api.get("/api/v1/webchat/conversations", Some(token)).await;
    assert_eq!(s, 200, "{convs}");
    let (s, groups) = api.get("/api/v1/webchat/groups", Some(token)).await;
    assert_eq!(s, 200, "{groups}");
    json!({"stream": stream["messages"], "cursor": stream["next_cursor"],
           "groups": groups})
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn migrate_copies_a_sqlite_relay_whole_and_refuses_a_second_time() {
    let sb = Sandbox::new();
    // Explicitly SQLite, whatever GTSW_TEST_DATABASE says.
    let mut old = Relay::start_on(&sb, None, &["--port", "0"], &[]);
    let api = old.api();
    let alice = api.login("alice@example.com", "alice", "human").await;
    let bob = api.login("bob@example.com", "bob", "agent").await;
    let cy = api.login("cy@example.com", "cyd", "agent").await;
    let mut ids = Vec::new();
    for i in 0..30 {
        ids.push(api.send(&alice, "alice", "bob", &format!("dm {i}")).await);
    }
    api.send(&bob, "bob", "alice", "dm back").await;
    let (s, v) = api
        .post(
            "/api/v1/webchat/edit",
            Some(&alice),
            json!({"message_id": ids[3], "text": "dm 3, edited"}),
        )
        .await;
    assert_eq!(s, 200, "{v}");
    let (s, v) = api
        .post(
            "/api/v1/webchat/delete",
            Some(&alice),
            json!({"message_id": ids[4]}),
        )
        .await;
    assert_eq!(s, 200, "{v}");
    let (s, v) = api
        .post(
            "/api/v1/webchat/read",
            Some(&bob),
            json!({"message_id": ids[5]}),
        )
        .await;
    assert_eq!(s, 200, "{v}");
    let (s, v) = api
        .post(
            "/api/v1/webchat/groups",
            Some(&alice),
            json!({"name": "Team", "visibility": "private", "mode": "chat"}),
        )
        .await;
    assert_eq!(s, 200, "{v}");
    let gid = v["group_id"].as_str().expect("group id").to_string();
    for who in ["bob", "cyd"] {
        let (s, v) = api
            .post(
                &format!("/api/v1/webchat/groups/{gid}/members"),
                Some(&alice),
                json!({"member_address": who}),
            )
            .await;
        assert_eq!(s, 200, "{v}");
    }
    api.send(&cy, "cyd", &format!("group:{gid}"), "hello team")
        .await;
    let bytes: Vec<u8> = (0..5000u32).map(|i| (i % 251) as u8).collect();
    let (s, up) = api
        .upload(
            &alice,
            "notes.bin",
            bytes.clone(),
            Some("application/octet-stream"),
        )
        .await;
    assert_eq!(s, 200, "{up}");
    let file_id = up["file_id"].as_str().expect("file id").to_string();
    api.send(&alice, "alice", "bob", &up.to_string()).await;

    let mut before = Vec::new();
    for t in [&alice, &bob, &cy] {
        before.push(what_they_see(&api, t).await);
    }

    // With the relay still running, migrate refuses: it would lose what comes after the copy.
    let db = Arc::new(TestDb::create());
    let from = format!("sqlite:{}", old.data_dir.join("bridge.db").display());
    let busy = gw(&sb, &["relay", "migrate", "--from", &from, "--to", &db.url]);
    assert_eq!(busy.status.code(), Some(4), "{}", err(&busy));
    assert!(err(&busy).contains("stop it first"), "{}", err(&busy));
    assert_eq!(
        db.sql("SELECT COUNT(*) FROM pg_tables WHERE tablename = 'users'"),
        "0",
        "nothing was written"
    );

    old.terminate();
    let out = gw(
        &sb,
        &[
            "relay", "migrate", "--from", &from, "--to", &db.url, "--json",
        ],
    );
    let report: Value = serde_json::from_str(ok(&out).trim()).expect("JSON report");
    assert_eq!(report["verified"], true, "{report}");
    assert_eq!(report["tables"]["users"], 3, "{report}");
    assert_eq!(report["tables"]["messages"], 33, "{report}");
    assert_eq!(report["tables"]["groups"], 1, "{report}");
    assert_eq!(report["tables"]["files"], 1, "{report}");
    assert_eq!(db.sql("SELECT COUNT(*) FROM messages"), "33");

    // A relay on PostgreSQL over the same uploads: the same tokens, streams, groups and files.
    let new = Relay::start_on(&sb, Some(db.clone()), &["--port", "0"], &[]);
    let api = new.api();
    for (t, was) in [&alice, &bob, &cy].into_iter().zip(&before) {
        assert_eq!(&what_they_see(&api, t).await, was);
    }
    let got = reqwest::Client::new()
        .get(format!("{}/api/v1/webchat/files/{file_id}", new.url))
        .header("X-PChat-Session", &bob)
        .send()
        .await
        .expect("download");
    assert_eq!(got.status().as_u16(), 200);
    assert_eq!(got.bytes().await.expect("file bytes").to_vec(), bytes);

    // New writes continue every sequence: the next position, new rows, new identities.
    let cursor = before[1]["cursor"].as_str().expect("cursor").to_string();
    api.send(&alice, "alice", "bob", "after the move").await;
    let v = api
        .poll(&bob, json!({"after": cursor, "limit": 50, "wait": 5}))
        .await;
    assert_eq!(texts(&v), ["after the move"], "{v}");
    let dave = api.login("dave@example.com", "dave", "human").await;
    api.send(&dave, "dave", "alice", "new here").await;
    let (s, v) = api
        .post(
            "/api/v1/webchat/groups",
            Some(&dave),
            json!({"name": "Second", "visibility": "public", "mode": "chat"}),
        )
        .await;
    assert_eq!(s, 200, "{v}");
    drop(new);

    // Into a database that holds data: refused, and nothing changes.
    let again = gw(&sb, &["relay", "migrate", "--from", &from, "--to", &db.url]);
    assert_eq!(again.status.code(), Some(4), "{}", err(&again));
    assert!(
        err(&again).contains("already holds data"),
        "{}",
        err(&again)
    );
    assert_eq!(db.sql("SELECT COUNT(*) FROM users"), "4");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_relays_send_each_bridge_message_and_callback_event_once() {
    use common::bridge::{BridgeDouble, bridge_env, create_key, refs, start_py};
    const N: usize = 20;
    let (sa, sb) = (Sandbox::new(), Sandbox::new());
    let bridge = BridgeDouble::start(&sa);
    let mut env = bridge_env(&bridge.url);
    env.push(("PCHAT_CALLBACKS_ALLOW_PRIVATE", "true".into()));
    let db = Arc::new(TestDb::create());
    let a = Relay::start_on(&sa, Some(db.clone()), &["--port", "0"], &refs(&env));
    let b = Relay::start_on(&sb, Some(db.clone()), &["--port", "0"], &refs(&env));
    let apis = [a.api(), b.api()];
    let ana = apis[0].login("ana@example.com", "ana", "human").await;
    let bob = apis[1].login("bob@example.com", "bob", "agent").await;
    let key = create_key(&sa, &a, "ana", &["phone-1"]);
    let key = key["key"].as_str().expect("key").to_string();

    // Ana's callback: every event for her, to a receiver that checks signatures.
    let secret_file = sa.path().join("hook.secret");
    let mode_file = sa.path().join("hook.mode");
    let (hook, port) = start_py(
        &sa,
        "tests/callbacks/receiver.py",
        &[&secret_file, &mode_file],
        "hook",
    );
    let (s, v) = apis[0]
        .post(
            "/api/v1/webchat/callbacks/inbound",
            Some(&ana),
            json!({"url": format!("http://127.0.0.1:{port}/hook")}),
        )
        .await;
    assert_eq!(s, 200, "{v}");
    std::fs::write(&secret_file, v["secret"].as_str().expect("secret")).unwrap();

    let mut outbound = HashSet::new();
    for i in 0..N {
        let api = &apis[i % 2];
        let auth = format!("Bearer {key}");
        let body =
            json!({"channel": "sms", "to": "+15551230001", "text": format!("sms {i}")}).to_string();
        let (s, v, _) = api
            .with_headers(
                reqwest::Method::POST,
                "/api/v1/messages",
                &[
                    ("Authorization", auth.as_str()),
                    ("Content-Type", "application/json"),
                ],
                Some(&body),
            )
            .await;
        assert_eq!(s, 200, "{v}");
        outbound.insert(v["message_id"].as_str().expect("id").to_string());
        api.send(&bob, "bob", "ana", &format!("to ana {i}")).await;
    }

    // Each went to the bridge once, and each event to the callback once, though both relays
    // deliver from the same outboxes.
    let mut at_bridge = Vec::new();
    while at_bridge.len() < N {
        at_bridge.push(bridge.next()["id"].as_str().unwrap_or_default().to_string());
    }
    let mut at_hook = Vec::new();
    while at_hook.len() < N {
        let line: Value =
            serde_json::from_str(&hook.expect_line("{", Duration::from_secs(30))).expect("line");
        assert_eq!(line["verified"], true, "{line}");
        at_hook.push(line["id"].as_str().unwrap_or_default().to_string());
    }
    assert_eq!(at_bridge.iter().cloned().collect::<HashSet<_>>(), outbound);
    assert_eq!(
        at_hook.iter().collect::<HashSet<_>>().len(),
        N,
        "{at_hook:?}"
    );
    let quiet = Duration::from_secs(2);
    assert_eq!(bridge.bg.drain_lines(quiet), Vec::<String>::new());
    assert_eq!(hook.drain_lines(quiet), Vec::<String>::new());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_nul_character_postgresql_cannot_store_is_a_400_not_a_503() {
    let sb = Sandbox::new();
    let relay = Relay::start_on(&sb, Some(Arc::new(TestDb::create())), &["--port", "0"], &[]);
    let api = relay.api();
    let ana = api.login("ana@example.com", "ana", "human").await;
    api.login("bob@example.com", "bob", "agent").await;
    let (s, v) = api
        .post(
            "/api/v1/messages",
            Some(&ana),
            json!({"to": "bob", "text": "nul \u{0} here"}),
        )
        .await;
    assert_error(s, &v, 400, "invalid_request");
    let (s, v) = api
        .get("/api/v1/webchat/directory?q=a%00b", Some(&ana))
        .await;
    assert_error(s, &v, 400, "invalid_request");
    // Nothing half-stored, nothing logged as a storage failure.
    assert!(api.history_texts(&ana, "bob").await.is_empty());
    assert!(!relay.log_text().contains("storage failure"));
}
