//! The relay attacked as an attacker would: web pages of other origins, rebound host names,
//! lock-outs and code guessing, and the smaller holes of issue 11. Each probe went through
//! before its fix. The browser-side probes (a real page on another origin, the app's saved
//! relay) are in tests/web.rs.

mod common;

use common::*;
use serde_json::{Value, json};

const REQUEST_CODE: &str = "/api/v1/pchat/auth/request-code";
const VERIFY_CODE: &str = "/api/v1/pchat/auth/verify-code";

fn host_of(url: &str) -> String {
    url.trim_start_matches("http://").to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn foreign_web_pages_get_no_codes_sessions_or_cors() {
    let sb = Sandbox::new();
    let app_origin = "http://app.example:8026";
    let relay = Relay::start_with(&sb, &[("PCHAT_CORS_ORIGINS", app_origin)]);
    let api = relay.api();
    let own = relay.url.clone();
    let body = r#"{"email":"alice@example.com"}"#;

    // The takeover: a page at another origin posts text/plain (no preflight needed).
    for (path, origin) in [
        (REQUEST_CODE, "http://evil.example"),
        (VERIFY_CODE, "http://evil.example"),
        (REQUEST_CODE, "http://127.0.0.1:9"),
        (REQUEST_CODE, "null"),
    ] {
        let (s, v, h) = api
            .with_headers(
                reqwest::Method::POST,
                path,
                &[("Origin", origin), ("Content-Type", "text/plain")],
                Some(body),
            )
            .await;
        assert_error(s, &v, 403, "origin_not_allowed");
        assert!(
            h.get("access-control-allow-origin").is_none(),
            "no CORS grant for {origin}"
        );
        assert!(!v.to_string().contains("dev_code"), "{v}");
    }
    // Nothing was issued to the attacker: the owner's first code request is fresh.
    let (s, v) = api
        .post(REQUEST_CODE, None, json!({"email": "alice@example.com"}))
        .await;
    assert_eq!(s, 200, "{v}");

    // The relay's own page gets its dev code; so does a program (no Origin).
    let (s, v, _) = api
        .with_headers(
            reqwest::Method::POST,
            REQUEST_CODE,
            &[("Origin", &own), ("Content-Type", "text/plain")],
            Some(body),
        )
        .await;
    assert_eq!(s, 200, "{v}");
    assert!(
        v["dev_code"].is_string(),
        "own origin sees the dev code: {v}"
    );

    // A configured app origin may call (CORS echoes it, never `*`), but is never handed a dev
    // code: on a relay without SMTP it is told how to sign in instead.
    let (s, _, h) = api
        .with_headers(
            reqwest::Method::OPTIONS,
            "/api/v1/webchat/poll",
            &[
                ("Origin", app_origin),
                ("Access-Control-Request-Method", "POST"),
                (
                    "Access-Control-Request-Headers",
                    "x-pchat-session,content-type",
                ),
            ],
            None,
        )
        .await;
    assert!((200..300).contains(&s), "preflight status {s}");
    assert_eq!(h["access-control-allow-origin"], app_origin);
    let (s, _, h) = api
        .with_headers(
            reqwest::Method::GET,
            "/health",
            &[("Origin", app_origin)],
            None,
        )
        .await;
    assert_eq!(s, 200);
    assert_eq!(h["access-control-allow-origin"], app_origin);
    let (s, v, _) = api
        .with_headers(
            reqwest::Method::POST,
            REQUEST_CODE,
            &[("Origin", app_origin), ("Content-Type", "application/json")],
            Some(body),
        )
        .await;
    assert_error(s, &v, 403, "origin_not_allowed");
    assert!(v["dev_code"].is_null(), "{v}");
    // A preflight from anywhere else is refused.
    let (s, v, h) = api
        .with_headers(
            reqwest::Method::OPTIONS,
            "/api/v1/webchat/poll",
            &[
                ("Origin", "http://evil.example"),
                ("Access-Control-Request-Method", "POST"),
            ],
            None,
        )
        .await;
    assert_error(s, &v, 403, "origin_not_allowed");
    assert!(h.get("access-control-allow-origin").is_none());

    // DNS rebinding: evil.example now resolves to 127.0.0.1, so the page and the relay share an
    // origin as far as the browser knows; the Host header gives it away.
    let port = relay.url.rsplit(':').next().unwrap().to_string();
    let rebound = format!("evil.example:{port}");
    for path in ["/app/webchat/chat.html", "/api/v1/webchat/me", REQUEST_CODE] {
        let (s, v, _) = api
            .with_headers(
                reqwest::Method::POST,
                path,
                &[("Host", &rebound), ("Origin", &format!("http://{rebound}"))],
                Some(body),
            )
            .await;
        assert_error(s, &v, 403, "host_not_allowed");
    }
    // Loopback names still work as Host.
    for host in [host_of(&relay.url), format!("localhost:{port}")] {
        let (s, _, _) = api
            .with_headers(reqwest::Method::GET, "/health", &[("Host", &host)], None)
            .await;
        assert_eq!(s, 200, "Host {host}");
    }
}

/// Asks for a code from `api`'s address; (status, login_id, code).
async fn ask(api: &Api, email: &str) -> (u16, String, String) {
    let (s, v) = api.post(REQUEST_CODE, None, json!({"email": email})).await;
    (
        s,
        v["login_id"].as_str().unwrap_or_default().to_string(),
        v["dev_code"].as_str().unwrap_or_default().to_string(),
    )
}

async fn try_code(api: &Api, email: &str, login_id: Option<&str>, code: &str) -> (u16, Value) {
    api.post(
        VERIFY_CODE,
        None,
        json!({"email": email, "code": code, "login_id": login_id, "chat_address": "alice"}),
    )
    .await
}

fn wrong(code: &str) -> String {
    if code == "000000" {
        "111111".into()
    } else {
        "000000".into()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn strangers_cannot_lock_an_owner_out_and_guessing_stays_bounded() {
    let sb = Sandbox::new();
    let mut relay = Relay::start(&sb);
    let attacker = Api::from_address(&relay.url, "127.0.0.2");
    let owner = Api::from_address(&relay.url, "127.0.0.3");
    let email = "alice@example.com";

    // The attacker uses up every code request they get for alice and burns each code.
    let mut ids = Vec::new();
    for _ in 0..5 {
        let (s, id, code) = ask(&attacker, email).await;
        assert_eq!(s, 200);
        ids.push((id, code));
    }
    let (s, _, _) = ask(&attacker, email).await;
    assert_eq!(s, 429, "the attacker's own quota is used up");
    for (id, code) in &ids {
        for _ in 0..5 {
            let (s, v) = try_code(&attacker, email, Some(id), &wrong(code)).await;
            assert_error(s, &v, 401, "code_invalid");
        }
        let (s, v) = try_code(&attacker, email, Some(id), code).await;
        assert_error(s, &v, 429, "code_locked");
    }

    // The owner, from their own address, still asks for a code and signs in with it: with the
    // login id, and the seed's way (email and code only).
    let (s, id, code) = ask(&owner, email).await;
    assert_eq!(
        s, 200,
        "the owner's request is not limited by the attacker's"
    );
    // 25 wrong guesses this week: the owner's new code is the long kind.
    assert_eq!(
        code.replace('-', "").len(),
        12,
        "long code after failures: {code}"
    );
    let (s, v) = try_code(&owner, email, Some(&id), &code).await;
    assert_eq!(s, 200, "owner signs in: {v}");
    let (s, _, code) = ask(&owner, email).await;
    assert_eq!(s, 200);
    let (s, v) = try_code(&owner, email, None, &code.to_lowercase()).await;
    assert_eq!(s, 200, "seed-style verify, typed in lower case: {v}");

    // An attacker's guess without a login id is checked against their own newest code, never
    // the owner's: the owner's pending code survives any number of such guesses.
    let (_, owner_id, owner_code) = ask(&owner, email).await;
    for _ in 0..5 {
        let (s, v) = try_code(&attacker, email, None, "ZZZZ-ZZZZ-ZZZZ").await;
        assert!(s == 401 || s == 429, "{v}");
    }
    // A guess naming the owner's login id needs the id, which only the owner got; even a
    // stolen id is bound to alice's email.
    let (s, v) = try_code(
        &attacker,
        "mallory@example.com",
        Some(&owner_id),
        &owner_code,
    )
    .await;
    assert_error(s, &v, 401, "code_expired");
    let (s, v) = try_code(&owner, email, Some(&owner_id), &owner_code).await;
    assert_eq!(s, 200, "{v}");

    // The limits survive a kill -9: still no requests for the attacker, still long codes.
    relay.restart();
    let attacker = Api::from_address(&relay.url, "127.0.0.2");
    let owner = Api::from_address(&relay.url, "127.0.0.3");
    let (s, _, _) = ask(&attacker, email).await;
    assert_eq!(s, 429, "the limit was forgotten on restart");
    let (s, _, code) = ask(&owner, email).await;
    assert_eq!(s, 200);
    assert_eq!(code.replace('-', "").len(), 12, "{code}");

    // Spraying guesses across many emails from one address is capped too.
    let mut capped = false;
    'emails: for n in 0..10 {
        let email = format!("victim{n}@example.com");
        let (s, id, code) = ask(&attacker, &email).await;
        assert_eq!(s, 200);
        for _ in 0..5 {
            let (s, v) = try_code(&attacker, &email, Some(&id), &wrong(&code)).await;
            if s == 429 {
                assert_error(s, &v, 429, "rate_limited");
                capped = true;
                break 'emails;
            }
        }
    }
    assert!(capped, "30 wrong codes from one address were never capped");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn files_are_served_safely_and_die_with_their_last_message() {
    let sb = Sandbox::new();
    let relay = Relay::start(&sb);
    let api = relay.api();
    let ana = api.login("ana@example.com", "ana", "human").await;
    let bob = api.login("bob@example.com", "bob", "human").await;

    // An SVG can carry script: it is always a download, never shown inline.
    let svg = br#"<svg xmlns="http://www.w3.org/2000/svg"><script>alert(1)</script></svg>"#;
    let (s, v) = api
        .upload(&ana, "x.svg", svg.to_vec(), Some("image/svg+xml"))
        .await;
    assert_eq!(s, 200, "{v}");
    let svg_url = v["attachment"]["url"].as_str().unwrap().to_string();
    let (s, _, h) = api
        .raw(reqwest::Method::GET, &svg_url, None, None, None)
        .await;
    assert_eq!(s, 200);
    let disposition = h["content-disposition"].to_str().unwrap();
    assert!(disposition.starts_with("attachment"), "{disposition}");

    // Only the file id is needed; a kind that does not fit the file is not taken.
    let (_, up) = api
        .upload(&ana, "notes.txt", b"plain text".to_vec(), None)
        .await;
    let file_id = up["file_id"].as_str().unwrap().to_string();
    let (s, v) = api
        .post(
            "/api/v1/messages",
            Some(&ana),
            json!({"to": "bob", "attachments": [{"file_id": file_id, "kind": "image"}]}),
        )
        .await;
    assert_eq!(s, 200, "attachments by file_id alone: {v}");
    let first = v["message_id"].as_str().unwrap().to_string();
    let got = api.poll(&bob, json!({"after": "0"})).await;
    let att = &got["messages"][0]["attachments"][0];
    assert_eq!(
        att["kind"],
        json!("file"),
        "a text file is not an image: {att}"
    );
    assert_eq!(att["name"], json!("notes.txt"));

    // The same file in a second message: deleting the first keeps it.
    let (s, v) = api
        .post(
            "/api/v1/messages",
            Some(&ana),
            json!({"to": "bob", "text": "again", "attachments": [{"file_id": file_id}]}),
        )
        .await;
    assert_eq!(s, 200, "{v}");
    let second = v["message_id"].as_str().unwrap().to_string();
    let url = format!("/api/v1/webchat/files/{file_id}");
    let (s, _) = api
        .post(
            "/api/v1/webchat/delete",
            Some(&ana),
            json!({"message_id": first}),
        )
        .await;
    assert_eq!(s, 200);
    let (s, _, _) = api.raw(reqwest::Method::GET, &url, None, None, None).await;
    assert_eq!(s, 200, "still referred to by the second message");
    // Deleting the last one removes the file, bytes and all.
    let (s, _) = api
        .post(
            "/api/v1/webchat/delete",
            Some(&ana),
            json!({"message_id": second}),
        )
        .await;
    assert_eq!(s, 200);
    let (s, v, _) = api.raw(reqwest::Method::GET, &url, None, None, None).await;
    assert_error(s, &v, 404, "not_found");
    assert!(
        !relay.data_dir.join("pchat_uploads").join(&file_id).exists(),
        "the bytes are gone from the upload dir"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refused_sends_leave_nothing_and_client_ids_make_sends_idempotent() {
    let sb = Sandbox::new();
    let relay = Relay::start(&sb);
    let api = relay.api();
    let ana = api.login("ana@example.com", "ana", "human").await;
    let bob = api.login("bob@example.com", "bob", "human").await;

    // Refused for its attachment: no phantom conversation for either side.
    let (s, v) = api
        .post(
            "/api/v1/messages",
            Some(&ana),
            json!({"to": "bob", "text": "x", "attachments": [{"file_id": "file_nope"}]}),
        )
        .await;
    assert_error(s, &v, 400, "invalid_attachment");
    for token in [&ana, &bob] {
        let (_, v) = api.get("/api/v1/webchat/conversations", Some(token)).await;
        assert_eq!(v["conversations"], json!([]), "{v}");
    }

    // The same client id twice (a retry after a lost answer): one message.
    let send = |id: &'static str, text: &'static str| {
        let (api, ana) = (api.clone(), ana.clone());
        async move {
            api.post(
                "/api/v1/messages",
                Some(&ana),
                json!({"to": "bob", "text": text, "client_message_id": id}),
            )
            .await
        }
    };
    let (s, a) = send("reply-1", "first").await;
    assert_eq!(s, 200);
    let (s, b) = send("reply-1", "first again").await;
    assert_eq!(s, 200);
    assert_eq!(a["message_id"], b["message_id"]);
    assert_eq!(b["duplicate"], json!(true));
    // Ten at once with one id: still one.
    let tries: Vec<_> = (0..10)
        .map(|_| tokio::spawn(send("burst", "once")))
        .collect();
    let mut ids = std::collections::HashSet::new();
    for t in tries {
        let (s, v) = t.await.expect("send task");
        assert_eq!(s, 200, "{v}");
        ids.insert(v["message_id"].as_str().unwrap().to_string());
    }
    assert_eq!(ids.len(), 1, "{ids:?}");
    let got = api.poll(&bob, json!({"after": "0", "limit": 50})).await;
    assert_eq!(texts(&got), ["first", "once"]);
    let (s, v) = send_long_id(&api, &ana).await;
    assert_error(s, &v, 400, "invalid_request");
}

async fn send_long_id(api: &Api, token: &str) -> (u16, Value) {
    api.post(
        "/api/v1/messages",
        Some(token),
        json!({"to": "bob", "text": "x", "client_message_id": "x".repeat(65)}),
    )
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn over_long_urls_get_the_json_error_shape() {
    let sb = Sandbox::new();
    let relay = Relay::start(&sb);
    let api = relay.api();
    let path = format!("/api/v1/webchat/directory?q={}", "a".repeat(9000));
    let (s, v) = api.get(&path, None).await;
    assert_error(s, &v, 414, "uri_too_long");
    // Just under the limit is an ordinary request (here: no token).
    let path = format!("/api/v1/webchat/directory?q={}", "a".repeat(8000));
    let (s, v) = api.get(&path, None).await;
    assert_error(s, &v, 401, "unauthorized");
}

/// Behind a trusted reverse proxy each client has its own login-code limit (read from
/// X-Forwarded-For); without one, a client cannot dodge the limit by sending the header.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forwarded_for_counts_only_from_a_trusted_proxy() {
    let request = |api: &Api, from: &'static str, email: &'static str| {
        let api = api.clone();
        async move {
            let body = json!({"email": email, "purpose": "login"}).to_string();
            let (st, _, _) = api
                .with_headers(
                    reqwest::Method::POST,
                    "/api/v1/pchat/auth/request-code",
                    &[
                        ("X-Forwarded-For", from),
                        ("Content-Type", "application/json"),
                    ],
                    Some(&body),
                )
                .await;
            st
        }
    };
    let limits = [("PCHAT_CODE_RATE_PER_IP", "2")];
    let sb = Sandbox::new();
    let mut env = limits.to_vec();
    env.push(("PCHAT_TRUSTED_PROXIES", "127.0.0.0/8"));
    let proxied = Relay::start_with(&sb, &env);
    let api = proxied.api();
    assert_eq!(request(&api, "203.0.113.5", "a@example.com").await, 200);
    assert_eq!(request(&api, "203.0.113.5", "b@example.com").await, 200);
    assert_eq!(request(&api, "203.0.113.5", "c@example.com").await, 429);
    // Another client behind the same proxy is not locked out with the first.
    assert_eq!(request(&api, "203.0.113.6", "d@example.com").await, 200);
    // A client prepending its own entry is still counted as itself.
    assert_eq!(
        request(&api, "198.51.100.1, 203.0.113.5", "e@example.com").await,
        429
    );

    let sb = Sandbox::new();
    let direct = Relay::start_with(&sb, &limits);
    let api = direct.api();
    assert_eq!(request(&api, "203.0.113.5", "a@example.com").await, 200);
    assert_eq!(request(&api, "203.0.113.6", "b@example.com").await, 200);
    assert_eq!(request(&api, "203.0.113.7", "c@example.com").await, 429);
}
