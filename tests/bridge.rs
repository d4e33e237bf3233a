//! The PhoneRelay bridge against real local servers: a bridge double (tests/callbacks/receiver.py,
//! checking every signature with the official Standard Webhooks library and answering as told)
//! and a real SMTP server (aiosmtpd, tests/bridge/smtp_server.py). API keys made with the CLI,
//! their scopes, the WhatsApp round trip, retries and failures with the bridge's reason,
//! delivery after a kill -9, email content, refusals that store nothing, and the daemon's
//! record of a bridge message.

mod common;

use std::time::Duration;

use common::bridge::*;
use common::*;
use serde_json::{Value, json};

const WAIT: Duration = Duration::from_secs(30);
const PHONE: &str = "+15551230001";

/// A POST with a bearer key (and a session when given), as a PhoneRelay client sends it.
async fn keyed(
    api: &Api,
    path: &str,
    key: &str,
    session: Option<&str>,
    body: Value,
) -> (u16, Value) {
    let auth = format!("Bearer {key}");
    let mut headers = vec![
        ("Authorization", auth.as_str()),
        ("Content-Type", "application/json"),
    ];
    if let Some(s) = session {
        headers.push(("X-PChat-Session", s));
    }
    let (st, v, _) = api
        .with_headers(
            reqwest::Method::POST,
            path,
            &headers,
            Some(&body.to_string()),
        )
        .await;
    (st, v)
}

/// `POST /api/v1/bridge/inbound`, as the bridge posts a reply.
async fn inbound(api: &Api, key: &str, body: Value) -> (u16, Value) {
    keyed(api, "/api/v1/bridge/inbound", key, None, body).await
}

/// `POST /api/v1/messages` with only a key.
async fn send_keyed(api: &Api, key: &str, body: Value) -> (u16, Value) {
    keyed(api, "/api/v1/messages", key, None, body).await
}

async fn status_of(api: &Api, key: &str, id: &str) -> Value {
    let auth = format!("Bearer {key}");
    let (st, v, _) = api
        .with_headers(
            reqwest::Method::GET,
            &format!("/api/v1/messages/{id}"),
            &[("Authorization", auth.as_str())],
            None,
        )
        .await;
    assert_eq!(st, 200, "{v}");
    v
}

fn wait_status(api: &Api, key: &str, id: &str, want: &str) -> Value {
    wait_for(WAIT, &format!("message {id} {want}"), || {
        let v = block_on(status_of(api, key, id));
        (v["status"] == want).then_some(v)
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn whatsapp_goes_out_signed_and_the_reply_comes_back_into_the_conversation() {
    let Site {
        sb,
        bridge,
        relay,
        api,
        ..
    } = Site::start(&[]);
    let ana = api.login("ana@example.com", "ana", "human").await;
    let made = create_key(&sb, &relay, "ana", &["phone-1"]);
    let key = made["key"].as_str().unwrap();
    assert_eq!(made["owner"], "ana");
    assert_eq!(made["phone_ids"], json!(["phone-1"]));

    // The seed's example, exactly.
    let (st, sent) = send_keyed(
        &api,
        key,
        json!({"phone_id": "phone-1", "channel": "wa", "to": "+1 555 123 0001",
               "text": "Hello from pChat via WhatsApp"}),
    )
    .await;
    assert_eq!(st, 200, "{sent}");
    assert_eq!(sent["status"], "queued");
    let id = sent["message_id"].as_str().unwrap().to_string();
    let got = bridge.next();
    assert_eq!(got["verified"], true, "{got}");
    assert_eq!(got["id"], id.as_str(), "webhook-id is the message id");
    let body = &got["body"];
    assert_eq!(body["type"], "message.outbound");
    assert_eq!(body["message_id"], id.as_str());
    assert_eq!(body["phone_id"], "phone-1");
    assert_eq!(body["channel"], "wa");
    assert_eq!(body["to"], PHONE);
    assert_eq!(body["from"], "ana");
    assert_eq!(body["text"], "Hello from pChat via WhatsApp");
    let st = wait_status(&api, key, &id, "sent");
    assert_eq!(st["channel"], "wa");
    assert_eq!(st["to"], PHONE);
    assert_eq!(st["attempts"], 1);
    // It went out, so it cannot be edited here; a number no one wrote to has no history.
    let (st, v) = api
        .post(
            "/api/v1/webchat/edit",
            Some(&ana),
            json!({"message_id": id, "text": "changed"}),
        )
        .await;
    assert_error(st, &v, 409, "conflict");
    let (st, v) = api
        .get(
            "/api/v1/webchat/history?with=sms:%2B15559990000",
            Some(&ana),
        )
        .await;
    assert_eq!((st, v["messages"].clone()), (200, json!([])), "{v}");

    // The reply on WhatsApp comes back through the bridge into ana's conversation.
    let (st, reply) = inbound(
        &api,
        key,
        json!({"phone_id": "phone-1", "channel": "wa", "from": PHONE, "text": "got it, thanks",
               "name": "Carla", "id": "wamid.1"}),
    )
    .await;
    assert_eq!(st, 200, "{reply}");
    assert_eq!(reply["conversation"], "wa:+15551230001");
    // The bridge retrying the same message stores nothing new.
    let (st, again) = inbound(
        &api,
        key,
        json!({"phone_id": "phone-1", "channel": "wa", "from": PHONE, "text": "got it, thanks",
               "id": "wamid.1"}),
    )
    .await;
    assert_eq!(st, 200, "{again}");
    assert_eq!(again["duplicate"], true);
    assert_eq!(again["message_id"], reply["message_id"]);
    let polled = api.poll(&ana, json!({"after": "0"})).await;
    let msgs = events_of(&polled, "message");
    assert_eq!(msgs.len(), 1, "{polled}");
    assert_eq!(msgs[0]["from"], "wa:+15551230001");
    assert_eq!(msgs[0]["from_name"], "Carla");
    assert_eq!(msgs[0]["channel"], "wa");
    assert_eq!(msgs[0]["text"], "got it, thanks");

    // The conversation is listed with its channel, both directions in its history.
    let (_, convs) = api.get("/api/v1/webchat/conversations", Some(&ana)).await;
    let conv = convs["conversations"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["with"] == "wa:+15551230001")
        .cloned()
        .unwrap_or_else(|| panic!("no WhatsApp conversation in {convs}"));
    assert_eq!(conv["last_message"]["channel"], "wa");
    let texts = api.history_texts(&ana, "wa:%2B15551230001").await;
    assert_eq!(texts, ["Hello from pChat via WhatsApp", "got it, thanks"]);

    // Replying in that conversation (as the web app does: session and key) goes out on wa.
    let (st, answer) = keyed(
        &api,
        "/api/v1/messages",
        key,
        Some(&ana),
        json!({"to": "wa:+15551230001", "text": "see you at 5"}),
    )
    .await;
    assert_eq!(st, 200, "{answer}");
    let out = bridge.next();
    assert_eq!(out["body"]["to"], PHONE);
    assert_eq!(out["body"]["channel"], "wa");
    assert_eq!(out["body"]["text"], "see you at 5");
    assert_eq!(out["verified"], true);

    // The external contact is nobody's login and not in the directory.
    let (_, dir) = api
        .get("/api/v1/webchat/directory?q=1555", Some(&ana))
        .await;
    assert_eq!(dir["results"], json!([]), "{dir}");
    let (st, v) = api
        .post(
            "/api/v1/pchat/auth/request-code",
            None,
            json!({"email": "external:wa:+15551230001", "purpose": "login"}),
        )
        .await;
    assert_error(st, &v, 400, "invalid_email");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn keys_are_hashed_scoped_and_revocable_and_refusals_store_nothing() {
    let Site {
        sb,
        bridge,
        relay,
        api,
        ..
    } = Site::start(&[]);
    let ana = api.login("ana@example.com", "ana", "human").await;
    let bob = api.login("bob@example.com", "bob", "human").await;
    let made = create_key(&sb, &relay, "ana@example.com", &["phone-1", "phone-2"]);
    let key = made["key"].as_str().unwrap().to_string();
    let key_id = made["key_id"].as_str().unwrap().to_string();

    // Listed without the key; the database holds only its hash.
    let dir = relay.data_dir.display().to_string();
    let list = ok(&gw(&sb, &["relay", "--data-dir", &dir, "keys", "list"]));
    assert!(list.contains(&key_id) && !list.contains(&key), "{list}");
    for entry in std::fs::read_dir(&relay.data_dir).unwrap() {
        let p = entry.unwrap().path();
        if p.is_file() {
            let bytes = std::fs::read(&p).unwrap();
            let hay = String::from_utf8_lossy(&bytes);
            assert!(!hay.contains(&key), "the key is stored in {}", p.display());
        }
    }
    // An unknown identity cannot own a key.
    let o = gw(
        &sb,
        &[
            "relay",
            "--data-dir",
            &dir,
            "keys",
            "create",
            "--name",
            "x",
            "--owner",
            "nobody",
        ],
    );
    assert_eq!(o.status.code(), Some(4), "{}", err(&o));

    let wa = |phone_id: &str, to: &str| json!({"phone_id": phone_id, "channel": "wa", "to": to, "text": "hi"});
    // A phone id the key does not hold: 403, naming the field.
    let (st, v) = send_keyed(&api, &key, wa("phone-9", PHONE)).await;
    assert_error(st, &v, 403, "phone_id_not_allowed");
    assert_eq!(v["error"]["field"], "phone_id");
    // Several phone ids and none named: 400.
    let (st, v) = send_keyed(
        &api,
        &key,
        json!({"channel": "sms", "to": PHONE, "text": "hi"}),
    )
    .await;
    assert_error(st, &v, 400, "invalid_request");
    assert_eq!(v["error"]["field"], "phone_id");
    // Bad numbers and addresses: 400 with the field.
    for (body, code) in [
        (wa("phone-1", "5551230001"), "invalid_phone"),
        (wa("phone-1", "+1555"), "invalid_phone"),
        (wa("phone-1", "wa:+12"), "invalid_phone"),
        (
            json!({"phone_id": "phone-1", "channel": "email", "to": "not-an-email", "text": "x"}),
            "invalid_email",
        ),
        (
            json!({"phone_id": "phone-1", "channel": "fax", "to": PHONE, "text": "x"}),
            "invalid_request",
        ),
    ] {
        let (st, v) = send_keyed(&api, &key, body.clone()).await;
        assert_error(st, &v, 400, code);
        assert!(v["error"]["field"].is_string(), "{body} -> {v}");
    }
    let (st, v) = send_keyed(
        &api,
        &key,
        json!({"phone_id": "phone-1", "channel": "sms", "to": "sms:+15551230001", "text": " "}),
    )
    .await;
    assert_error(st, &v, 400, "empty_message");
    // A session alone cannot use the bridge.
    let (st, v) = api
        .post("/api/v1/messages", Some(&ana), wa("phone-1", PHONE))
        .await;
    assert_error(st, &v, 401, "api_key_required");
    // Someone else's session with ana's key: refused.
    let (st, v) = keyed(
        &api,
        "/api/v1/messages",
        &key,
        Some(&bob),
        wa("phone-1", PHONE),
    )
    .await;
    assert_error(st, &v, 403, "key_owner_mismatch");
    // An unknown key.
    let (st, v) = keyed(
        &api,
        "/api/v1/messages",
        "prk_0000000000000000000000000000000000000000000000000000000000000000",
        None,
        wa("phone-1", PHONE),
    )
    .await;
    assert_error(st, &v, 401, "invalid_api_key");
    // The inbound side checks the same scopes and numbers.
    let (st, v) = inbound(
        &api,
        &key,
        json!({"phone_id": "phone-3", "channel": "sms", "from": PHONE, "text": "x"}),
    )
    .await;
    assert_error(st, &v, 403, "phone_id_not_allowed");
    let (st, v) = inbound(
        &api,
        &key,
        json!({"phone_id": "phone-1", "channel": "sms", "from": "call me", "text": "x"}),
    )
    .await;
    assert_error(st, &v, 400, "invalid_phone");
    assert_eq!(v["error"]["field"], "from");
    let (st, v) = api
        .post(
            "/api/v1/bridge/inbound",
            Some(&ana),
            json!({"phone_id": "phone-1", "channel": "sms", "from": PHONE, "text": "x"}),
        )
        .await;
    assert_error(st, &v, 401, "api_key_required");

    // Nothing of the refused sends was stored or sent.
    let (_, convs) = api.get("/api/v1/webchat/conversations", Some(&ana)).await;
    assert_eq!(convs["conversations"], json!([]), "{convs}");
    assert_eq!(
        bridge.bg.drain_lines(Duration::from_millis(300)),
        Vec::<String>::new()
    );

    // Revoked: refused from then on.
    let (st, v) = send_keyed(&api, &key, wa("phone-2", PHONE)).await;
    assert_eq!(st, 200, "{v}");
    assert_eq!(bridge.next()["body"]["phone_id"], "phone-2");
    ok(&gw(
        &sb,
        &["relay", "--data-dir", &dir, "keys", "revoke", &key_id],
    ));
    let (st, v) = send_keyed(&api, &key, wa("phone-2", PHONE)).await;
    assert_error(st, &v, 401, "invalid_api_key");
    let list = ok(&gw(
        &sb,
        &["relay", "--data-dir", &dir, "keys", "list", "--json"],
    ));
    let listed: Value = serde_json::from_str(list.trim()).unwrap();
    assert!(listed["revoked_at"].is_string(), "{listed}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failing_bridge_is_retried_then_a_refusal_fails_with_its_reason() {
    let Site {
        sb,
        bridge,
        relay,
        api,
        ..
    } = Site::start(&[]);
    api.login("ana@example.com", "ana", "agent").await;
    let made = create_key(&sb, &relay, "ana", &["phone-1"]);
    let key = made["key"].as_str().unwrap();

    bridge.answer("500");
    let (st, v) = send_keyed(
        &api,
        key,
        json!({"channel": "sms", "to": PHONE, "text": "retry me"}),
    )
    .await;
    assert_eq!(st, 200, "{v}");
    let id = v["message_id"].as_str().unwrap().to_string();
    let first = bridge.next();
    assert_eq!(first["answered"], 500);
    let queued = wait_for(WAIT, "the failed try recorded", || {
        let s = block_on(status_of(&api, key, &id));
        (s["attempts"].as_u64() >= Some(1)).then_some(s)
    });
    assert_eq!(queued["status"], "queued", "{queued}");
    assert!(
        queued["error"].as_str().unwrap().contains("HTTP 500"),
        "{queued}"
    );
    bridge.answer("200");
    let mut got = bridge.next();
    while got["answered"] == 500 {
        got = bridge.next();
    }
    assert_eq!(got["id"], first["id"], "the same webhook-id on every try");
    assert_eq!(got["verified"], true);
    let sent = wait_status(&api, key, &id, "sent");
    assert!(sent["error"].is_null(), "{sent}");

    // A refusal (4xx) is final, with the bridge's words.
    bridge.answer("400 number blocked by carrier");
    let (_, v) = send_keyed(
        &api,
        key,
        json!({"channel": "tg", "to": "@carla_k", "text": "hello"}),
    )
    .await;
    let id = v["message_id"].as_str().unwrap().to_string();
    assert_eq!(bridge.next()["body"]["to"], "@carla_k");
    let failed = wait_status(&api, key, &id, "failed");
    assert!(
        failed["error"]
            .as_str()
            .unwrap()
            .contains("number blocked by carrier"),
        "{failed}"
    );
    assert_eq!(failed["attempts"], 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_accepted_message_goes_out_after_a_kill_9() {
    let Site {
        sb,
        bridge,
        mut relay,
        api,
        env,
    } = Site::start(&[("GTS_WEBCHAT_FAILPOINTS", "relay-bridge-before-send")]);
    api.login("ana@example.com", "ana", "human").await;
    let made = create_key(&sb, &relay, "ana", &["phone-1"]);
    let key = made["key"].as_str().unwrap();
    let (st, v) = send_keyed(
        &api,
        key,
        json!({"channel": "notify", "to": PHONE, "text": "survive the crash"}),
    )
    .await;
    assert_eq!(st, 200, "{v}");
    let id = v["message_id"].as_str().unwrap().to_string();
    relay.wait_aborted(WAIT);
    relay.restart_env(&refs(&env));
    let api = relay.api();
    let got = bridge.next();
    assert_eq!(got["id"], id.as_str());
    assert_eq!(got["body"]["text"], "survive the crash");
    assert_eq!(got["body"]["channel"], "notify");
    wait_status(&api, key, &id, "sent");
    // Once: no second delivery after it was recorded.
    assert_eq!(
        bridge.bg.drain_lines(Duration::from_millis(500)),
        Vec::<String>::new()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn email_goes_out_through_a_real_smtp_server() {
    let sb = Sandbox::new();
    let (smtp, port) = start_py(&sb, "tests/bridge/smtp_server.py", &[], "smtp");
    let port = port.to_string();
    let relay = Relay::start_with(
        &sb,
        &[
            ("SMTP_HOST", "127.0.0.1"),
            ("SMTP_PORT", &port),
            ("SMTP_SECURITY", "none"),
            ("SMTP_FROM", "relay@example.com"),
            ("PCHAT_DEV_EXPOSE_CODES", "true"),
            ("PCHAT_CALLBACK_BACKOFF_MS", "100"),
        ],
    );
    let api = relay.api();
    api.login("ana@example.com", "ana", "human").await;
    // Her login code went through the same server.
    let login_mail: Value = serde_json::from_str(&smtp.expect_line("{", WAIT)).unwrap();
    assert_eq!(login_mail["rcpt_tos"], json!(["ana@example.com"]));
    // A key without phone ids sends email only.
    let made = create_key(&sb, &relay, "ana", &[]);
    let key = made["key"].as_str().unwrap();
    let (st, v) = send_keyed(
        &api,
        key,
        json!({"channel": "sms", "to": PHONE, "text": "x"}),
    )
    .await;
    assert_error(st, &v, 403, "phone_id_not_allowed");

    let (st, v) = send_keyed(
        &api,
        key,
        json!({"channel": "email", "to": "Bob@Example.com",
               "text": "Build report\nAll 412 tests passed.\nÜnïcode stays."}),
    )
    .await;
    assert_eq!(st, 200, "{v}");
    let id = v["message_id"].as_str().unwrap().to_string();
    let mail: Value = serde_json::from_str(&smtp.expect_line("{", WAIT)).unwrap();
    assert_eq!(mail["rcpt_tos"], json!(["bob@example.com"]));
    assert_eq!(mail["from"], "relay@example.com");
    assert_eq!(mail["subject"], "Build report");
    assert_eq!(
        mail["body"]
            .as_str()
            .unwrap()
            .replace("\r\n", "\n")
            .trim_end(),
        "Build report\nAll 412 tests passed.\nÜnïcode stays."
    );
    assert!(mail["message_id"].as_str().unwrap().contains(&id), "{mail}");
    let st = wait_status(&api, key, &id, "sent");
    assert_eq!(st["channel"], "email");
    assert_eq!(st["to"], "bob@example.com");

    // A subject field wins, and header injection stays on one line.
    let (_, v) = send_keyed(
        &api,
        key,
        json!({"to": "email:bob@example.com", "subject": "Deploy\r\nBcc: eve@example.com",
               "text": "done"}),
    )
    .await;
    let mail: Value = serde_json::from_str(&smtp.expect_line("{", WAIT)).unwrap();
    assert_eq!(mail["subject"], "Deploy  Bcc: eve@example.com", "{v}");
    assert_eq!(mail["rcpt_tos"], json!(["bob@example.com"]));

    // A mailbox the server refuses (550) fails at once, with the server's words.
    let (_, v) = send_keyed(
        &api,
        key,
        json!({"channel": "email", "to": "refuse-me@example.com", "text": "hello?"}),
    )
    .await;
    let id = v["message_id"].as_str().unwrap().to_string();
    let failed = wait_status(&api, key, &id, "failed");
    assert!(
        failed["error"]
            .as_str()
            .unwrap()
            .contains("no such mailbox"),
        "{failed}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_a_bridge_or_smtp_those_channels_answer_503() {
    let sb = Sandbox::new();
    let relay = Relay::start(&sb);
    let api = relay.api();
    let ana = api.login("ana@example.com", "ana", "human").await;
    let made = create_key(&sb, &relay, "ana", &["phone-1"]);
    let key = made["key"].as_str().unwrap();
    for channel in ["sms", "wa", "tg", "notify"] {
        let (st, v) = keyed(
            &api,
            "/api/v1/messages",
            key,
            None,
            json!({"channel": channel, "to": PHONE, "text": "x"}),
        )
        .await;
        assert_error(st, &v, 503, "bridge_unavailable");
    }
    let (st, v) = send_keyed(
        &api,
        key,
        json!({"channel": "email", "to": "bob@example.com", "text": "x"}),
    )
    .await;
    assert_error(st, &v, 503, "email_unavailable");
    // pchat with a key sends as its owner, and its status is "delivered".
    api.login("bob@example.com", "bob", "human").await;
    let (st, v) = send_keyed(
        &api,
        key,
        json!({"channel": "pchat", "to": "bob", "text": "plain"}),
    )
    .await;
    assert_eq!(st, 200, "{v}");
    let s = status_of(&api, key, v["message_id"].as_str().unwrap()).await;
    assert_eq!(s["status"], "delivered");
    assert_eq!(s["channel"], "pchat");
    // Someone else's message is not found.
    let (_, theirs) = api
        .get(
            &format!("/api/v1/messages/{}", v["message_id"].as_str().unwrap()),
            Some(&api.login("cy@example.com", "cyd", "human").await),
        )
        .await;
    assert_eq!(theirs["error"]["code"], "not_found");
    let (_, convs) = api.get("/api/v1/webchat/conversations", Some(&ana)).await;
    assert_eq!(
        convs["conversations"].as_array().unwrap().len(),
        1,
        "{convs}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_daemon_records_a_bridge_message_with_its_channel() {
    let Site {
        sb,
        bridge: _bridge,
        relay,
        api,
        ..
    } = Site::start(&[]);
    persona(&sb, &relay.url, "agent@example.com", "agent-1");
    let made = create_key(&sb, &relay, "agent-1", &["phone-1"]);
    let key = made["key"].as_str().unwrap();
    ok(&gw(
        &sb,
        &["daemon", "start", "--task", "t1", "--as", "agent-1"],
    ));
    let (st, v) = inbound(
        &api,
        key,
        json!({"phone_id": "phone-1", "channel": "sms", "from": PHONE, "text": "are you there?"}),
    )
    .await;
    assert_eq!(st, 200, "{v}");
    let records = wait_for(WAIT, "the inbox record", || {
        let r = inbox_records(&sb, "t1");
        (!r.is_empty()).then_some(r)
    });
    assert_eq!(records[0]["channel"], "sms");
    assert_eq!(records[0]["from"], "sms:+15551230001");
    assert_eq!(records[0]["text"], "are you there?");
    let tail = ok(&gw(&sb, &["tail", "--task", "t1", "--json"]));
    assert!(tail.contains("\"channel\":\"sms\""), "{tail}");
    ok(&gw(&sb, &["daemon", "stop", "--task", "t1"]));
}
