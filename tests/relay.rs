//! The relay's contracts, tested against the real binary over HTTP.

mod common;

use std::net::TcpListener;
use std::time::{Duration, Instant};

use common::*;
use serde_json::{Value, json};

const POLL: &str = "/api/v1/webchat/poll";
const SEND: &str = "/api/v1/messages";
const PRESENCE: &str = "/api/v1/webchat/presence";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn seed_flow_survives_kill_9() {
    let sb = Sandbox::new();
    let mut relay = Relay::start(&sb);
    let api = relay.api();

    let (s, v) = api.get("/health", None).await;
    assert_eq!(s, 200);
    assert_eq!(v["ok"], json!(true));
    assert!(v["version"].as_str().is_some());

    // The seed's curl bodies, verbatim.
    let (s, v) = api
        .post(
            "/api/v1/pchat/auth/request-code",
            None,
            json!({"email":"agent@example.com","display_name":"Codex Agent","purpose":"login"}),
        )
        .await;
    assert_eq!(s, 200, "{v}");
    let code = v["dev_code"]
        .as_str()
        .expect("dev code on loopback")
        .to_string();
    assert_eq!(code.len(), 6);
    assert!(code.chars().all(|c| c.is_ascii_digit()));
    let (s, v) = api
        .post(
            "/api/v1/pchat/auth/verify-code",
            None,
            json!({"email":"agent@example.com","code":code,"display_name":"Codex Agent","chat_address":"codex-agent","public_visible":true,"kind":"agent"}),
        )
        .await;
    assert_eq!(s, 200, "{v}");
    let agent = v["session_token"].as_str().unwrap().to_string();
    assert!(agent.starts_with("pct_"));
    assert_eq!(v["chat_address"], json!("codex-agent"));
    assert_eq!(v["display_name"], json!("Codex Agent"));

    let user = api.login("user@example.com", "user-one", "human").await;

    let (s, v) = api
        .post(
            PRESENCE,
            Some(&agent),
            json!({"chat_address":"codex-agent","display_name":"Codex Agent","visible":true,
                   "device_name":"codex","session_name":"support worker","listen_channel":"pchat"}),
        )
        .await;
    assert_eq!(s, 200, "{v}");

    let (s, v) = api
        .get("/api/v1/webchat/directory?q=CODEX", Some(&user))
        .await;
    assert_eq!(s, 200, "{v}");
    let hit = &v["results"][0];
    assert_eq!(hit["chat_address"], json!("codex-agent"));
    assert_eq!(hit["kind"], json!("agent"));
    assert_eq!(hit["online"], json!(true));
    assert_eq!(hit["device_name"], json!("codex"));
    assert_eq!(hit["session_name"], json!("support worker"));
    assert_eq!(hit["listen_channel"], json!("pchat"));
    assert!(hit["last_seen"].as_str().is_some());
    // Search by display name too.
    let (_, v) = api
        .get("/api/v1/webchat/directory?q=agent", Some(&user))
        .await;
    assert_eq!(v["results"].as_array().unwrap().len(), 1);

    let (s, v) = api
        .post(
            SEND,
            Some(&agent),
            json!({"phone_id":"pchat_free_phone","channel":"pchat","source":"codex-agent","to":"user-one","text":"Hello from the AI worker."}),
        )
        .await;
    assert_eq!(s, 200, "{v}");
    let mid = v["message_id"].as_str().unwrap().to_string();
    assert!(mid.starts_with("msg_"));

    // Claim form: the seed's poll body; a second claim finds nothing new.
    let claim = json!({"phone_id":"pchat_free_phone","chat_address":"user-one","limit":20});
    let v = api.poll(&user, claim.clone()).await;
    let m = &v["messages"][0];
    assert_eq!(m["message_id"], json!(mid));
    assert_eq!(m["from"], json!("codex-agent"));
    assert_eq!(m["from_name"], json!("Codex Agent"));
    assert_eq!(m["from_kind"], json!("agent"));
    assert_eq!(m["to"], json!("user-one"));
    assert_eq!(m["type"], json!("message"));
    assert_eq!(m["text"], json!("Hello from the AI worker."));
    assert_eq!(m["reply_to"], Value::Null);
    assert!(
        time::OffsetDateTime::parse(
            m["created_at"].as_str().unwrap(),
            &time::format_description::well_known::Rfc3339
        )
        .is_ok()
    );
    assert!(v["next_cursor"].as_str().is_some());
    assert!(
        api.poll(&user, claim.clone()).await["messages"]
            .as_array()
            .unwrap()
            .is_empty()
    );

    // `after` form reads without consuming.
    let a = api
        .poll(&user, json!({"chat_address":"user-one","after":"0"}))
        .await;
    let b = api
        .poll(&user, json!({"chat_address":"user-one","after":"0"}))
        .await;
    assert_eq!(texts(&a), vec!["Hello from the AI worker."]);
    assert_eq!(a["messages"], b["messages"]);

    // A reply, acknowledged, then kill -9 at once.
    let (s, v) = api
        .post(
            SEND,
            Some(&user),
            json!({"to":"codex-agent","text":"ack before crash","reply_to":mid}),
        )
        .await;
    assert_eq!(s, 200, "{v}");
    relay.restart();
    let api = relay.api();

    // Nothing lost, tokens still valid, claim cursor kept.
    let v = api.poll(&agent, json!({"after":"0"})).await;
    assert_eq!(texts(&v), vec!["ack before crash"]);
    assert_eq!(v["messages"][0]["reply_to"], json!(mid));
    assert!(
        api.poll(&user, claim.clone()).await["messages"]
            .as_array()
            .unwrap()
            .is_empty()
    );
    let again = api
        .send(&agent, "codex-agent", "user-one", "after restart")
        .await;
    let v = api.poll(&user, claim).await;
    assert_eq!(v["messages"][0]["message_id"], json!(again));
}

/// Starts a poll in the background and returns once the relay has it in its wait.
fn parked_poll(
    relay: &Relay,
    api: &Api,
    token: &str,
    body: Value,
) -> tokio::task::JoinHandle<Value> {
    let before = relay.requests_started(POLL);
    let (api, token) = (api.clone(), token.to_string());
    let poll = tokio::spawn(async move { api.poll(&token, body).await });
    relay.wait_requests(POLL, before, 1);
    poll
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn long_poll_wakes_shares_cursors_and_is_released_at_shutdown() {
    let sb = Sandbox::new();
    let mut relay = Relay::start(&sb);
    let api = relay.api();
    let alice = api.login("alice@example.com", "alice", "human").await;
    let bob = api.login("bob@example.com", "bob", "agent").await;

    // Two pollers on the same cursor, both waiting far longer than the test will take: only a
    // wakeup can answer them with the message (a lost wakeup answers empty after 60 s).
    let before = relay.requests_started(POLL);
    let p1 = {
        let api = api.clone();
        let bob = bob.clone();
        tokio::spawn(async move { api.poll(&bob, json!({"after":"0","wait":60})).await })
    };
    let p2 = {
        let api = api.clone();
        let bob = bob.clone();
        tokio::spawn(async move { api.poll(&bob, json!({"after":"0","wait":60})).await })
    };
    // Both must be parked in their wait before the send, or this would not test a wakeup.
    relay.wait_requests(POLL, before, 2);
    api.send(&alice, "alice", "bob", "wake up").await;
    // A poll that timed out would answer empty: the message in hand means it was woken.
    let (r1, r2) = tokio::time::timeout(Duration::from_secs(30), async {
        (p1.await.unwrap(), p2.await.unwrap())
    })
    .await
    .expect("pollers woke");
    assert_eq!(texts(&r1), vec!["wake up"]);
    assert_eq!(r1["messages"], r2["messages"]);
    assert_eq!(r1["next_cursor"], r2["next_cursor"]);
    // A woken poll answers from the wakeup itself; it must say exactly what the store says.
    let reread = api.poll(&bob, json!({"after":"0"})).await;
    assert_eq!(
        r1["messages"], reread["messages"],
        "woken answer differs from a re-read"
    );

    // A poll that subscribes after a message was sent still sees it at once.
    let cursor = r1["next_cursor"].as_str().unwrap().to_string();
    api.send(&alice, "alice", "bob", "second").await;
    let v = api.poll(&bob, json!({"after":cursor,"wait":60})).await;
    assert_eq!(texts(&v), vec!["second"]);

    // wait with nothing to deliver times out empty, with the cursor unchanged.
    let cursor = v["next_cursor"].as_str().unwrap().to_string();
    let v = api.poll(&bob, json!({"after":cursor,"wait":0.2})).await;
    assert!(v["messages"].as_array().unwrap().is_empty());
    assert_eq!(v["next_cursor"], json!(cursor));

    // With a waiter holding bob's bell the whole time (its cursor is far ahead, so nothing ever
    // satisfies it), a reader one behind still reads what arrived, and a caught-up reader
    // waits and is woken: the bell's position must never hide a message.
    let holder = parked_poll(&relay, &api, &bob, json!({"after":"999999999","wait":60}));
    api.send(&alice, "alice", "bob", "third").await;
    let v = api.poll(&bob, json!({"after":cursor,"wait":0})).await;
    assert_eq!(texts(&v), vec!["third"]);
    let cursor = v["next_cursor"].as_str().unwrap().to_string();
    let v = api.poll(&bob, json!({"after":cursor,"wait":0})).await;
    assert!(v["messages"].as_array().unwrap().is_empty());
    let caught_up = parked_poll(&relay, &api, &bob, json!({"after":cursor,"wait":60}));
    api.send(&alice, "alice", "bob", "fourth").await;
    let v = tokio::time::timeout(Duration::from_secs(30), caught_up)
        .await
        .expect("caught-up reader woke")
        .unwrap();
    assert_eq!(texts(&v), vec!["fourth"]);
    let cursor = v["next_cursor"].as_str().unwrap().to_string();
    assert!(
        !holder.is_finished(),
        "the far-ahead waiter is still parked"
    );
    holder.abort();

    // Claim mode with wait: woken and claimed.
    let claim = parked_poll(&relay, &api, &alice, json!({"wait":60}));
    api.send(&bob, "bob", "alice", "claim me").await;
    let v = tokio::time::timeout(Duration::from_secs(30), claim)
        .await
        .expect("claim woke")
        .unwrap();
    assert_eq!(texts(&v), vec!["claim me"]);

    // Shutdown releases a waiting poll at once.
    let before = relay.requests_started(POLL);
    let waiting = {
        let api = api.clone();
        let bob = bob.clone();
        tokio::spawn(async move {
            api.raw(
                reqwest::Method::POST,
                POLL,
                Some(&bob),
                Some(json!({"after":cursor,"wait":90}).to_string().into_bytes()),
                None,
            )
            .await
        })
    };
    // The poll must be parked before SIGTERM.
    relay.wait_requests(POLL, before, 1);
    let status = relay.terminate();
    assert!(status.success(), "relay exit status {status:?}");
    // It asked to wait 90 s; an answer within 30 is the release.
    let (code, body, _) = tokio::time::timeout(Duration::from_secs(30), waiting)
        .await
        .expect("poll released at shutdown")
        .expect("the waiting poll got an answer, not a dropped connection");
    assert_eq!(code, 200, "{body}");
    assert!(body["messages"].as_array().unwrap().is_empty());
}

/// Every endpoint that needs a session, with a body that would otherwise be valid.
fn session_endpoints() -> Vec<(reqwest::Method, &'static str, Value)> {
    vec![
        (
            reqwest::Method::POST,
            "/api/v1/pchat/auth/logout",
            json!({}),
        ),
        (reqwest::Method::GET, "/api/v1/webchat/me", Value::Null),
        (
            reqwest::Method::POST,
            PRESENCE,
            json!({"chat_address":"alice","visible":true}),
        ),
        (
            reqwest::Method::GET,
            "/api/v1/webchat/directory?q=a",
            Value::Null,
        ),
        (
            reqwest::Method::POST,
            SEND,
            json!({"source":"alice","to":"bob","text":"hi"}),
        ),
        (reqwest::Method::POST, POLL, json!({"chat_address":"alice"})),
        (
            reqwest::Method::POST,
            "/api/v1/webchat/ack",
            json!({"cursor":"0"}),
        ),
    ]
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ack_moves_the_claim_cursor_forward_only() {
    let sb = Sandbox::new();
    let relay = Relay::start(&sb);
    let api = relay.api();
    let a = api.login("a@example.com", "aaa", "human").await;
    let b = api.login("b@example.com", "bbb", "agent").await;
    for t in ["one", "two", "three"] {
        api.send(&a, "aaa", "bbb", t).await;
    }
    let (_, me) = api.get("/api/v1/webchat/me", Some(&b)).await;
    assert_eq!(me["claim_cursor"], json!("0"));
    assert_eq!(me["stream_head"], json!("3"));
    let (s, v) = api
        .post("/api/v1/webchat/ack", Some(&b), json!({"cursor": "2"}))
        .await;
    assert_eq!(s, 200, "{v}");
    assert_eq!(v["claim_cursor"], json!("2"));
    // Never backwards; a claim continues after the ack.
    let (_, v) = api
        .post("/api/v1/webchat/ack", Some(&b), json!({"cursor": 1}))
        .await;
    assert_eq!(v["claim_cursor"], json!("2"));
    let v = api.poll(&b, json!({})).await;
    assert_eq!(texts(&v), vec!["three"]);
    let (s, v) = api
        .post("/api/v1/webchat/ack", Some(&b), json!({"cursor": "99"}))
        .await;
    assert_error(s, &v, 400, "invalid_cursor");
    let (s, v) = api.post("/api/v1/webchat/ack", Some(&b), json!({})).await;
    assert_error(s, &v, 400, "invalid_request");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn authorization_matrix() {
    let sb = Sandbox::new();
    let relay = Relay::start(&sb);
    let api = relay.api();
    let alice = api.login("alice@example.com", "alice", "human").await;
    let bob = api.login("bob@example.com", "bob", "human").await;

    // Every endpoint the OpenAPI document marks as needing a session, plus the hand list.
    let (_, doc) = api.get("/api/v1/openapi.json", None).await;
    let mut endpoints = session_endpoints();
    let mut public = Vec::new();
    for (path, item) in doc["paths"].as_object().unwrap() {
        for (method, op) in item.as_object().unwrap() {
            let concrete = path
                .replace("{group_id}", "grp_0123456789abcdef")
                .replace("{address}", "bob")
                .replace("{decision}", "accept")
                .replace("{file_id}", "file_00000000000000000000000000000000");
            let m = reqwest::Method::from_bytes(method.to_uppercase().as_bytes()).unwrap();
            if op.get("security").is_some() {
                let concrete: &'static str = Box::leak(concrete.into_boxed_str());
                endpoints.push((m, concrete, json!({})));
            } else {
                public.push(format!("{} {path}", method.to_uppercase()));
            }
        }
    }
    public.sort();
    assert_eq!(
        public,
        vec![
            "GET /api/v1/webchat/files/{file_id}",
            "GET /health",
            "POST /api/v1/pchat/auth/request-code",
            "POST /api/v1/pchat/auth/verify-code",
        ],
        "only these answer without a session"
    );
    assert!(
        endpoints.len() > 20,
        "{} endpoints checked",
        endpoints.len()
    );
    for (method, path, body) in endpoints {
        let body_bytes = (!body.is_null()).then(|| body.to_string().into_bytes());
        if path == "/api/v1/bridge/inbound" {
            // The bridge's endpoint takes its API key, never a session.
            for token in [None, Some("pct_0000"), Some("garbage")] {
                let (s, v, _) = api
                    .raw(method.clone(), path, token, body_bytes.clone(), None)
                    .await;
                assert_error(s, &v, 401, "api_key_required");
            }
            let (s, v, _) = api
                .with_headers(
                    method.clone(),
                    path,
                    &[("Authorization", "Bearer prk_0000")],
                    Some("{}"),
                )
                .await;
            assert_error(s, &v, 401, "invalid_api_key");
            continue;
        }
        let (s, v, _) = api
            .raw(method.clone(), path, None, body_bytes.clone(), None)
            .await;
        assert_error(s, &v, 401, "unauthorized");
        let (s, v, _) = api
            .raw(
                method.clone(),
                path,
                Some("pct_0000000000000000000000000000000000000000000000000000000000000000"),
                body_bytes.clone(),
                None,
            )
            .await;
        assert_error(s, &v, 401, "invalid_token");
        let (s, v, _) = api
            .raw(method.clone(), path, Some("garbage"), body_bytes, None)
            .await;
        assert_error(s, &v, 401, "invalid_token");
    }

    // Bob's token, acting as Alice.
    let (s, v) = api
        .post(
            SEND,
            Some(&bob),
            json!({"source":"alice","to":"bob","text":"spoof"}),
        )
        .await;
    assert_error(s, &v, 403, "sender_mismatch");
    let (s, v) = api
        .post(POLL, Some(&bob), json!({"chat_address":"alice"}))
        .await;
    assert_error(s, &v, 403, "address_mismatch");
    let (s, v) = api
        .post(
            PRESENCE,
            Some(&bob),
            json!({"chat_address":"alice","visible":false}),
        )
        .await;
    assert_error(s, &v, 403, "address_mismatch");
    // Nothing of that reached Alice, and her presence was not touched.
    let v = api.poll(&alice, json!({"after":"0"})).await;
    assert!(v["messages"].as_array().unwrap().is_empty());

    // Bearer form works too; logout ends exactly that session.
    let (s, v, _) = api
        .raw(reqwest::Method::GET, "/api/v1/webchat/me", None, None, None)
        .await;
    assert_error(s, &v, 401, "unauthorized");
    let resp = reqwest::Client::new()
        .get(format!("{}/api/v1/webchat/me", api.base))
        .header("Authorization", format!("Bearer {alice}"))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status().as_u16(), 200);
    let (s, _) = api
        .post("/api/v1/pchat/auth/logout", Some(&alice), json!({}))
        .await;
    assert_eq!(s, 200);
    let (s, v) = api.get("/api/v1/webchat/me", Some(&alice)).await;
    assert_error(s, &v, 401, "invalid_token");
    let (s, v) = api.get("/api/v1/webchat/me", Some(&bob)).await;
    assert_eq!(s, 200);
    assert_eq!(v["chat_address"], json!("bob"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_input_gets_json_errors_and_logs_hold_no_secrets() {
    let sb = Sandbox::new();
    let relay = Relay::start(&sb);
    let api = relay.api();
    let alice = api.login("alice@example.com", "alice", "human").await;
    let _bob = api.login("bob@example.com", "bob", "human").await;
    let post = |path: &'static str, body: &'static [u8]| {
        let api = api.clone();
        let alice = alice.clone();
        async move {
            let (s, v, _) = api
                .raw(
                    reqwest::Method::POST,
                    path,
                    Some(&alice),
                    Some(body.to_vec()),
                    Some("application/json"),
                )
                .await;
            (s, v)
        }
    };

    for path in [
        SEND,
        POLL,
        PRESENCE,
        "/api/v1/pchat/auth/request-code",
        "/api/v1/pchat/auth/verify-code",
    ] {
        let (s, v) = post(path, b"{not json").await;
        assert_error(s, &v, 400, "invalid_json");
        let (s, v) = post(path, b"[1,2,3]").await;
        assert_error(s, &v, 400, "invalid_request");
        let (s, v) = post(path, b"\"a string\"").await;
        assert_error(s, &v, 400, "invalid_request");
    }
    let (s, v) = post(SEND, br#"{"to": 42, "text": "x"}"#).await;
    assert_error(s, &v, 400, "invalid_request");
    let (s, v) = post(SEND, br#"{"text": "no recipient"}"#).await;
    assert_error(s, &v, 400, "invalid_request");
    let (s, v) = post(POLL, br#"{"limit": "ten"}"#).await;
    assert_error(s, &v, 400, "invalid_request");
    let (s, v) = post(POLL, br#"{"limit": -1}"#).await;
    assert_error(s, &v, 400, "invalid_request");
    let (s, v) = post(POLL, br#"{"after": "yesterday"}"#).await;
    assert_error(s, &v, 400, "invalid_cursor");
    let (s, v) = post(PRESENCE, br#"{"visible": "yes"}"#).await;
    assert_error(s, &v, 400, "invalid_request");

    // Addresses.
    for to in ["", "ab", "UPPER CASE", "../etc/passwd", "a/b", "x\u{0}y"] {
        let (s, v) = api
            .post(SEND, Some(&alice), json!({"to": to, "text": "hi"}))
            .await;
        assert_error(s, &v, 400, "invalid_address");
    }
    let (s, v) = api
        .post(
            SEND,
            Some(&alice),
            json!({"to": "nobody-here", "text": "hi"}),
        )
        .await;
    assert_error(s, &v, 404, "unknown_recipient");
    let (s, v) = api
        .post(SEND, Some(&alice), json!({"to": "bob", "text": "   "}))
        .await;
    assert_error(s, &v, 400, "empty_message");
    let (s, v) = api
        .post(
            SEND,
            Some(&alice),
            json!({"to": "bob", "text": "x", "channel": "wa"}),
        )
        .await;
    assert_error(s, &v, 400, "invalid_phone");
    assert_eq!(v["error"]["field"], "to");
    // A session alone cannot send on a bridge channel (tests/bridge.rs has the rest).
    let (s, v) = api
        .post(
            SEND,
            Some(&alice),
            json!({"to": "+15551230001", "text": "x", "channel": "wa"}),
        )
        .await;
    assert_error(s, &v, 401, "api_key_required");
    let (s, v) = api
        .post(
            SEND,
            Some(&alice),
            json!({"source":"mallory","to": "bob", "text": "spoof"}),
        )
        .await;
    assert_error(s, &v, 403, "sender_mismatch");

    // Sizes: text just over 64 KiB, a body over the JSON limit.
    let (s, v) = api
        .post(
            SEND,
            Some(&alice),
            json!({"to": "bob", "text": "x".repeat(64 * 1024 + 1)}),
        )
        .await;
    assert_error(s, &v, 413, "payload_too_large");
    let (s, _) = api
        .post(
            SEND,
            Some(&alice),
            json!({"to": "bob", "text": "y".repeat(64 * 1024)}),
        )
        .await;
    assert_eq!(s, 200, "exactly 64 KiB is allowed");
    let (s, v, _) = api
        .raw(
            reqwest::Method::POST,
            SEND,
            Some(&alice),
            Some(vec![b' '; 2 * 1024 * 1024]),
            None,
        )
        .await;
    assert_error(s, &v, 413, "payload_too_large");

    // Login inputs.
    let (s, v) = api
        .post(
            "/api/v1/pchat/auth/request-code",
            None,
            json!({"email": "not-an-email"}),
        )
        .await;
    assert_error(s, &v, 400, "invalid_email");
    let (s, v) = api
        .post(
            "/api/v1/pchat/auth/verify-code",
            None,
            json!({"email": "new@example.com", "code": "000000", "chat_address": "Bad Address!"}),
        )
        .await;
    assert_error(s, &v, 400, "invalid_address");

    // Unknown paths and methods.
    let (s, v) = api.get("/api/v1/nope", Some(&alice)).await;
    assert_error(s, &v, 404, "not_found");
    let (s, v) = api.get(SEND, Some(&alice)).await;
    assert_error(s, &v, 405, "method_not_allowed");
    let (s, v) = api
        .get("/api/v1/webchat/directory?limit=many", Some(&alice))
        .await;
    assert_error(s, &v, 400, "invalid_request");

    // The relay is still fine, and its log never saw a token or a code.
    let (s, _) = api.get("/health", None).await;
    assert_eq!(s, 200);
    let log = relay.log_text();
    assert!(log.contains("/api/v1/messages"), "the log records requests");
    let token_hex = alice.trim_start_matches("pct_");
    assert!(!log.contains(token_hex), "a session token reached the log");
    let codes = api.codes.lock().unwrap().clone();
    assert_eq!(codes.len(), 2);
    for code in codes {
        assert!(
            !log_contains_secret(&log, &code),
            "login code {code} reached the log"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn login_codes_expire_are_single_use_lock_and_are_rate_limited() {
    let sb = Sandbox::new();
    let relay = Relay::start_with(
        &sb,
        &[
            ("PCHAT_CODE_TTL_SECS", "1"),
            ("PCHAT_CODE_RATE_PER_EMAIL", "8"),
        ],
    );
    let api = relay.api();
    let request = |email: &'static str| {
        let api = api.clone();
        async move {
            let (s, v) = api
                .post(
                    "/api/v1/pchat/auth/request-code",
                    None,
                    json!({"email": email}),
                )
                .await;
            (s, v)
        }
    };
    let verify = |email: &'static str, code: String, address: &'static str| {
        let api = api.clone();
        async move {
            api.post(
                "/api/v1/pchat/auth/verify-code",
                None,
                json!({"email": email, "code": code, "chat_address": address}),
            )
            .await
        }
    };

    // Expired after its TTL (1 s here): wait on the condition, not a fixed sleep.
    let (_, v) = request("slow@example.com").await;
    let code = v["dev_code"].as_str().unwrap().to_string();
    let issued = Instant::now();
    wait_for(Duration::from_secs(10), "the code TTL to pass", || {
        (issued.elapsed() > Duration::from_millis(1100)).then_some(())
    });
    let (s, v) = verify("slow@example.com", code, "slow-one").await;
    assert_error(s, &v, 401, "code_expired");

    // Single use.
    let (_, v) = request("once@example.com").await;
    let code = v["dev_code"].as_str().unwrap().to_string();
    let (s, _) = verify("once@example.com", code.clone(), "once").await;
    assert_eq!(s, 200);
    let (s, v) = verify("once@example.com", code, "once").await;
    assert_error(s, &v, 401, "code_expired");

    // Five wrong tries lock the code, even the right one is refused after.
    let relay2 = Relay::start(&Sandbox::new());
    let api2 = relay2.api();
    let (_, v) = api2
        .post(
            "/api/v1/pchat/auth/request-code",
            None,
            json!({"email": "lock@example.com"}),
        )
        .await;
    let right = v["dev_code"].as_str().unwrap().to_string();
    let wrong = if right == "000000" {
        "111111"
    } else {
        "000000"
    };
    for i in 0..5 {
        let (s, v) = api2
            .post(
                "/api/v1/pchat/auth/verify-code",
                None,
                json!({"email": "lock@example.com", "code": wrong}),
            )
            .await;
        assert_error(s, &v, 401, "code_invalid");
        assert!(
            v["error"]["message"]
                .as_str()
                .unwrap()
                .contains(&format!("{} tries left", 4 - i))
        );
    }
    let (s, v) = api2
        .post(
            "/api/v1/pchat/auth/verify-code",
            None,
            json!({"email": "lock@example.com", "code": right}),
        )
        .await;
    assert_error(s, &v, 429, "code_locked");

    // Per-email rate limit (8 per 10 minutes here).
    let mut limited = false;
    for _ in 0..10 {
        let (s, v) = request("spam@example.com").await;
        if s == 429 {
            assert_error(s, &v, 429, "rate_limited");
            limited = true;
            break;
        }
    }
    assert!(limited, "request-code was never rate limited");
    // Another email is unaffected.
    let (s, _) = request("other@example.com").await;
    assert_eq!(s, 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn identities_addresses_kinds_and_presence() {
    let sb = Sandbox::new();
    let relay = Relay::start(&sb);
    let api = relay.api();
    let a = api.login("a@example.com", "shared-name", "agent").await;
    // Another email may not take the address.
    let (_, v) = api
        .post(
            "/api/v1/pchat/auth/request-code",
            None,
            json!({"email": "b@example.com"}),
        )
        .await;
    let code = v["dev_code"].as_str().unwrap().to_string();
    let (s, v) = api
        .post(
            "/api/v1/pchat/auth/verify-code",
            None,
            json!({"email": "b@example.com", "code": code.clone(), "chat_address": "shared-name"}),
        )
        .await;
    assert_error(s, &v, 409, "address_taken");
    // The refused registration left the code usable.
    let (s, v) = api
        .post(
            "/api/v1/pchat/auth/verify-code",
            None,
            json!({"email": "b@example.com", "code": code, "chat_address": "b-address", "display_name": "Bee"}),
        )
        .await;
    assert_eq!(s, 200, "{v}");
    assert_eq!(v["kind"], json!("human"), "kind defaults to human");
    let b = v["session_token"].as_str().unwrap().to_string();

    // The same email verifying again keeps its address whatever it asks for.
    let (_, v) = api
        .post(
            "/api/v1/pchat/auth/request-code",
            None,
            json!({"email": "A@Example.com"}),
        )
        .await;
    let code = v["dev_code"].as_str().unwrap().to_string();
    let (s, v) = api
        .post(
            "/api/v1/pchat/auth/verify-code",
            None,
            json!({"email": "a@example.com", "code": code, "chat_address": "something-else"}),
        )
        .await;
    assert_eq!(s, 200, "{v}");
    assert_eq!(v["chat_address"], json!("shared-name"));
    assert_eq!(v["kind"], json!("agent"));

    // Presence: online with a status, then offline; the directory follows.
    let (s, _) = api
        .post(
            PRESENCE,
            Some(&a),
            json!({"visible": true, "status": "working", "device_name": "box"}),
        )
        .await;
    assert_eq!(s, 200);
    let (_, v) = api
        .get("/api/v1/webchat/directory?q=shared", Some(&b))
        .await;
    assert_eq!(v["results"][0]["online"], json!(true));
    assert_eq!(v["results"][0]["status"], json!("working"));
    let (s, _) = api
        .post(PRESENCE, Some(&a), json!({"visible": false}))
        .await;
    assert_eq!(s, 200);
    let (_, v) = api
        .get("/api/v1/webchat/directory?q=shared", Some(&b))
        .await;
    assert_eq!(v["results"][0]["online"], json!(false));
    assert_eq!(v["results"][0]["device_name"], json!("box"));

    // Hidden identities are not listed; an empty query lists the public ones.
    let (_, v) = api
        .post(
            "/api/v1/pchat/auth/request-code",
            None,
            json!({"email": "hidden@example.com"}),
        )
        .await;
    let code = v["dev_code"].as_str().unwrap().to_string();
    let (s, _) = api
        .post(
            "/api/v1/pchat/auth/verify-code",
            None,
            json!({"email": "hidden@example.com", "code": code, "chat_address": "hidden-one", "public_visible": false}),
        )
        .await;
    assert_eq!(s, 200);
    let (_, v) = api.get("/api/v1/webchat/directory", Some(&b)).await;
    let listed: Vec<&str> = v["results"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["chat_address"].as_str().unwrap())
        .collect();
    assert!(listed.contains(&"shared-name") && listed.contains(&"b-address"));
    assert!(!listed.contains(&"hidden-one"));
    let (_, v) = api.get("/api/v1/webchat/directory?q=zzz", Some(&b)).await;
    assert!(v["results"].as_array().unwrap().is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn codes_are_mailed_through_smtp_and_not_exposed() {
    let (port, sink) = smtp_sink();
    let sb = Sandbox::new();
    let port_s = port.to_string();
    let relay = Relay::start_with(
        &sb,
        &[
            ("SMTP_HOST", "127.0.0.1"),
            ("SMTP_PORT", &port_s),
            ("SMTP_SECURITY", "none"),
            ("SMTP_FROM", "relay@example.com"),
            ("SMTP_PASSWORD", "smtp-secret-pw"),
        ],
    );
    let api = relay.api();
    let (s, v) = api
        .post(
            "/api/v1/pchat/auth/request-code",
            None,
            json!({"email": "mailme@example.com", "display_name": "Mail Me", "purpose": "login"}),
        )
        .await;
    assert_eq!(s, 200, "{v}");
    assert_eq!(v["emailed"], json!(true));
    assert!(
        v.get("dev_code").is_none(),
        "code exposed although SMTP is set: {v}"
    );
    let mail = sink.join().unwrap();
    assert!(mail.contains("mailme@example.com"));
    let code: String = mail
        .split("login code is ")
        .nth(1)
        .expect("code in mail body")
        .chars()
        .take(6)
        .collect();
    let (s, v) = api
        .post(
            "/api/v1/pchat/auth/verify-code",
            None,
            json!({"email": "mailme@example.com", "code": code, "chat_address": "mailme"}),
        )
        .await;
    assert_eq!(s, 200, "{v}");
    let log = relay.log_text();
    assert!(
        !log_contains_secret(&log, &code),
        "the login code reached the log"
    );
    assert!(
        !log.contains("smtp-secret-pw"),
        "the SMTP password reached the log"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_smtp_or_dev_codes_login_names_the_missing_setting() {
    let sb = Sandbox::new();
    let relay = Relay::start_with(&sb, &[("PCHAT_DEV_EXPOSE_CODES", "false")]);
    let api = relay.api();
    let (s, v) = api
        .post(
            "/api/v1/pchat/auth/request-code",
            None,
            json!({"email": "x@example.com"}),
        )
        .await;
    assert_error(s, &v, 503, "email_not_configured");
    assert!(
        v["error"]["message"]
            .as_str()
            .unwrap()
            .contains("SMTP_HOST")
    );
    assert!(
        relay.log_text().contains("SMTP_HOST"),
        "a warning at start names it too"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn presence_lapses_without_refresh_and_ip_rate_limit_holds() {
    let sb = Sandbox::new();
    let relay = Relay::start_with(
        &sb,
        &[
            ("PCHAT_PRESENCE_TTL_SECS", "3"),
            ("PCHAT_CODE_RATE_PER_IP", "4"),
        ],
    );
    let api = relay.api();
    let a = api.login("a@example.com", "lapsing", "agent").await;
    let b = api.login("b@example.com", "watcher", "human").await;
    let (s, v) = api.post(PRESENCE, Some(&a), json!({"visible": true})).await;
    assert_eq!(s, 200);
    assert_eq!(v["ttl"], json!(3));
    let online = |v: &Value| v["results"][0]["online"].as_bool().unwrap();
    let (_, fresh) = api
        .get("/api/v1/webchat/directory?q=lapsing", Some(&b))
        .await;
    assert!(online(&fresh), "online right after reporting: {fresh}");
    // Not refreshed, it lapses by itself; last_seen stays the time of the report.
    let v = wait_for(Duration::from_secs(15), "presence to lapse", || {
        let v = block_on(api.get("/api/v1/webchat/directory?q=lapsing", Some(&b))).1;
        (!online(&v)).then_some(v)
    });
    assert_eq!(
        v["results"][0]["last_seen"], fresh["results"][0]["last_seen"],
        "nothing refreshed it: {v}"
    );

    // Two logins used 2 of the 4 codes this IP may request; the fifth request is refused.
    let mut statuses = Vec::new();
    for i in 0..3 {
        let (s, _) = api
            .post(
                "/api/v1/pchat/auth/request-code",
                None,
                json!({"email": format!("ip{i}@example.com")}),
            )
            .await;
        statuses.push(s);
    }
    assert_eq!(statuses, vec![200, 200, 429]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn private_relay_refuses_strangers() {
    let sb = Sandbox::new();
    let relay = Relay::start_with(
        &sb,
        &[
            ("PCHAT_FREE_MODE_ENABLED", "false"),
            ("PCHAT_ALLOWED_EMAILS", "*@team.dev"),
        ],
    );
    let api = relay.api();
    let (s, v) = api
        .post(
            "/api/v1/pchat/auth/request-code",
            None,
            json!({"email": "eve@evil.dev"}),
        )
        .await;
    assert_error(s, &v, 403, "registration_closed");
    let token = api.login("ann@team.dev", "ann", "human").await;
    assert!(token.starts_with("pct_"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn openapi_document_lists_every_endpoint() {
    let sb = Sandbox::new();
    let relay = Relay::start(&sb);
    let (s, doc) = relay.api().get("/api/v1/openapi.json", None).await;
    assert_eq!(s, 200);
    assert!(doc["openapi"].as_str().unwrap().starts_with("3."));
    for path in [
        "/health",
        "/api/v1/pchat/auth/request-code",
        "/api/v1/pchat/auth/verify-code",
        "/api/v1/pchat/auth/logout",
        "/api/v1/webchat/presence",
        "/api/v1/webchat/directory",
        "/api/v1/messages",
        "/api/v1/webchat/poll",
    ] {
        assert!(
            doc["paths"].get(path).is_some(),
            "{path} missing from the OpenAPI document"
        );
    }
    assert!(doc["components"]["securitySchemes"]["session"].is_object());
}

#[test]
fn busy_default_port_moves_to_the_next_and_env_file_is_read() {
    let sb = Sandbox::new();
    // Hold the default port (if something else already holds it, the relay must move anyway).
    let _held = TcpListener::bind("127.0.0.1:5110");
    let relay = Relay::start_args(&sb, &[], &[]);
    let port: u16 = relay.url.rsplit(':').next().unwrap().parse().unwrap();
    assert_ne!(port, 5110, "took a busy port");
    assert!(port > 5110 && port <= 5160);
    drop(relay);

    // An explicit port that is busy is an error, not a silent move.
    let blocker = TcpListener::bind("127.0.0.1:0").unwrap();
    let busy = blocker.local_addr().unwrap().port().to_string();
    let out = sb
        .cmd()
        .args(["relay", "--port", &busy, "--data-dir"])
        .arg(sb.path().join("d2"))
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("cannot listen"), "{err}");

    // Settings from an env file: PORT=0 and a custom database path.
    let env_file = sb.path().join("relay.env");
    std::fs::write(&env_file, "PORT=0\nBRIDGE_DB_PATH=custom.db\n").unwrap();
    let ef = env_file.display().to_string();
    let relay = Relay::start_args(&sb, &["--env-file", &ef], &[]);
    assert!(relay.data_dir.join("custom.db").exists());
}
