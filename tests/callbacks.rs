//! Inbound callbacks against a real webhook receiver (tests/callbacks/receiver.py) that checks
//! every signature with the official Standard Webhooks library: filters, signatures and secret
//! rotation, retries with a stable webhook-id, turning off and redelivery, delivery across a
//! relay crash at each durable step, refused URLs, and owner-only management.

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use common::*;
use serde_json::{Value, json};

const BASE: &str = "/api/v1/webchat/callbacks/inbound";
const WAIT: Duration = Duration::from_secs(30);

/// The receiver, with its secret and mode files.
struct Receiver {
    bg: Background,
    url: String,
    secret: PathBuf,
    mode: PathBuf,
}

impl Receiver {
    fn start(sb: &Sandbox, name: &str) -> Receiver {
        let root = Path::new(env!("CARGO_MANIFEST_DIR"));
        let py = root.join("tests/.venv/bin/python");
        assert!(
            py.exists(),
            "tests/.venv is missing: run tests/run.sh (it installs tests/callbacks/requirements.txt)"
        );
        let secret = sb.path().join(format!("{name}.secret"));
        let mode = sb.path().join(format!("{name}.mode"));
        let mut cmd = Command::new(py);
        cmd.arg(root.join("tests/callbacks/receiver.py"))
            .arg(&secret)
            .arg(&mode);
        let bg = Background::start_cmd(cmd, Vec::<String>::new(), sb.path(), name);
        let port = bg.expect_line("PORT ", WAIT);
        let port = port.trim_start_matches("PORT ").trim().to_string();
        Receiver {
            bg,
            url: format!("http://127.0.0.1:{port}/hook"),
            secret,
            mode,
        }
    }

    fn answer(&self, mode: &str) {
        std::fs::write(&self.mode, mode).unwrap();
    }

    fn trust(&self, secret: &str) {
        std::fs::write(&self.secret, secret).unwrap();
    }

    /// The next request it got.
    fn next(&self) -> Value {
        serde_json::from_str(&self.bg.expect_line("{", WAIT)).expect("receiver line")
    }
}

async fn subscribe(api: &Api, token: &str, body: Value) -> (String, String) {
    let (st, v) = api.post(BASE, Some(token), body).await;
    assert_eq!(st, 200, "{v}");
    let secret = v["secret"].as_str().unwrap().to_string();
    assert!(secret.starts_with("whsec_"), "{v}");
    (
        v["callback"]["callback_id"].as_str().unwrap().to_string(),
        secret,
    )
}

/// The callback's deliveries, newest first.
async fn deliveries(api: &Api, token: &str, cb: &str) -> Vec<Value> {
    let (st, d) = api
        .get(&format!("{BASE}/{cb}/deliveries"), Some(token))
        .await;
    assert_eq!(st, 200, "{d}");
    d["deliveries"].as_array().cloned().unwrap_or_default()
}

fn private() -> [(&'static str, &'static str); 2] {
    [
        ("PCHAT_CALLBACKS_ALLOW_PRIVATE", "true"),
        ("PCHAT_CALLBACK_BACKOFF_MS", "100"),
    ]
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn events_arrive_signed_and_filtered_and_a_rotated_secret_signs_from_then_on() {
    let sb = Sandbox::new();
    let relay = Relay::start_with(&sb, &private());
    let api = relay.api();
    let ana = api.login("ana@example.com", "ana", "human").await;
    let bob = api.login("bob@example.com", "bob", "agent").await;
    let rx = Receiver::start(&sb, "rx");
    let (cb, secret) = subscribe(
        &api,
        &ana,
        json!({"url": rx.url, "channels": ["pchat", "sms", "wa"], "keywords": ["ALERT", "OOM"]}),
    )
    .await;
    rx.trust(&secret);
    api.send(&bob, "bob", "ana", "all fine here").await;
    let alert = api.send(&bob, "bob", "ana", "ALERT: disk full").await;
    api.send(&ana, "ana", "bob", "alert from ana herself").await;
    let oom = api.send(&bob, "bob", "ana", "the oom killer ran").await;
    // Deliveries run side by side, so they may arrive in either order.
    let (mut first, mut second) = (rx.next(), rx.next());
    if first["body"]["data"]["message"]["message_id"] != alert.as_str() {
        std::mem::swap(&mut first, &mut second);
    }
    for (got, id, text) in [
        (&first, &alert, "ALERT: disk full"),
        (&second, &oom, "the oom killer ran"),
    ] {
        assert_eq!(got["verified"], true, "{got}");
        assert_eq!(got["body"]["type"], "message.received", "{got}");
        assert_eq!(got["body"]["data"]["callback_id"], cb.as_str());
        assert_eq!(got["body"]["data"]["channel"], "pchat");
        assert_eq!(got["body"]["data"]["message"]["message_id"], id.as_str());
        assert_eq!(got["body"]["data"]["message"]["text"], text);
        assert_eq!(got["body"]["data"]["message"]["from"], "bob");
    }
    assert_ne!(first["id"], second["id"]);

    // The list and the deliveries say the same.
    let (_, list) = api.get(BASE, Some(&ana)).await;
    assert_eq!(list["callbacks"][0]["callback_id"], cb.as_str());
    assert_eq!(list["callbacks"][0]["keywords"], json!(["alert", "oom"]));
    assert!(list["callbacks"][0].get("secret").is_none(), "{list}");
    let d = json!({"deliveries": deliveries(&api, &ana, &cb).await});
    let rows = d["deliveries"].as_array().unwrap();
    assert_eq!(rows.len(), 2, "{d}");
    wait_for(WAIT, "both recorded as delivered", || {
        let d = json!({"deliveries": block_on(deliveries(&api, &ana, &cb))});
        d["deliveries"]
            .as_array()
            .unwrap()
            .iter()
            .all(|r| r["state"] == "delivered" && r["last_status"] == 200 && r["attempts"] == 1)
            .then_some(())
    });

    // After a rotation the old secret no longer verifies; the new one does.
    let (st, rot) = api
        .post(&format!("{BASE}/{cb}/rotate-secret"), Some(&ana), json!({}))
        .await;
    assert_eq!(st, 200, "{rot}");
    let fresh = rot["secret"].as_str().unwrap().to_string();
    assert_ne!(fresh, secret);
    api.send(&bob, "bob", "ana", "ALERT again").await;
    let stale = rx.next();
    assert_eq!(
        stale["verified"], false,
        "signed with the old secret: {stale}"
    );
    rx.trust(&fresh);
    api.send(&bob, "bob", "ana", "ALERT once more").await;
    let ok = rx.next();
    assert_eq!(ok["verified"], true, "{ok}");
    assert_eq!(ok["body"]["data"]["message"]["text"], "ALERT once more");

    // A callback with no filters passes everything inbound.
    let rx2 = Receiver::start(&sb, "rx2");
    let (_, s2) = subscribe(&api, &ana, json!({"url": rx2.url})).await;
    rx2.trust(&s2);
    api.send(&bob, "bob", "ana", "plain words").await;
    let all = rx2.next();
    assert_eq!(all["verified"], true);
    assert_eq!(all["body"]["data"]["message"]["text"], "plain words");
    assert!(
        !log_contains_secret(&relay.log_text(), fresh.trim_start_matches("whsec_")),
        "a signing secret reached the log"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failing_receiver_gets_retries_with_one_webhook_id_and_no_redirect_is_followed() {
    let sb = Sandbox::new();
    let relay = Relay::start_with(&sb, &private());
    let api = relay.api();
    let ana = api.login("ana@example.com", "ana", "human").await;
    let bob = api.login("bob@example.com", "bob", "human").await;
    let rx = Receiver::start(&sb, "rx");
    let (cb, secret) = subscribe(&api, &ana, json!({"url": rx.url})).await;
    rx.trust(&secret);
    rx.answer("500");
    api.send(&bob, "bob", "ana", "keep trying").await;
    let one = rx.next();
    let two = rx.next();
    assert_eq!(
        (one["answered"].clone(), two["answered"].clone()),
        (json!(500), json!(500))
    );
    assert_eq!(one["id"], two["id"], "a retry keeps its webhook-id");
    // A redirect is an answer, not a place to go.
    rx.answer(&format!("302 {}-elsewhere", rx.url));
    let redirected = loop {
        let r = rx.next();
        assert_eq!(r["path"], "/hook", "a redirect was followed: {r}");
        if r["answered"] == 302 {
            break r;
        }
    };
    assert_eq!(redirected["id"], one["id"]);
    rx.answer("200");
    let done = loop {
        let r = rx.next();
        assert_eq!(r["path"], "/hook", "a redirect was followed: {r}");
        if r["answered"] == 200 {
            break r;
        }
    };
    assert_eq!(done["id"], one["id"]);
    assert_eq!(done["verified"], true);
    wait_for(WAIT, "the delivery recorded", || {
        let d = json!({"deliveries": block_on(deliveries(&api, &ana, &cb))});
        let r = d["deliveries"][0].clone();
        (r["state"] == "delivered").then_some(r)
    });
    let d = json!({"deliveries": deliveries(&api, &ana, &cb).await});
    let r = &d["deliveries"][0];
    assert_eq!(r["webhook_id"], one["id"]);
    assert!(r["attempts"].as_u64().unwrap() >= 4, "{r}");
    assert_eq!(r["last_status"], 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_receiver_dead_past_the_retry_period_turns_the_callback_off_until_enabled() {
    let sb = Sandbox::new();
    let relay = Relay::start_with(
        &sb,
        &[
            ("PCHAT_CALLBACKS_ALLOW_PRIVATE", "true"),
            ("PCHAT_CALLBACK_BACKOFF_MS", "200"),
            ("PCHAT_CALLBACK_RETRY_SECS", "1"),
        ],
    );
    let api = relay.api();
    let ana = api.login("ana@example.com", "ana", "human").await;
    let bob = api.login("bob@example.com", "bob", "human").await;
    let rx = Receiver::start(&sb, "rx");
    let (cb, secret) = subscribe(&api, &ana, json!({"url": rx.url})).await;
    rx.trust(&secret);
    rx.answer("500");
    api.send(&bob, "bob", "ana", "lost for now").await;
    let off = wait_for(WAIT, "the callback turned off", || {
        let (_, l) = block_on(api.get(BASE, Some(&ana)));
        let c = l["callbacks"][0].clone();
        (c["enabled"] == false).then_some(c)
    });
    assert_eq!(off["dead"], 1, "{off}");
    let why = off["disabled_reason"].as_str().unwrap();
    assert!(why.contains("HTTP 500") && why.contains("enable"), "{why}");
    let d = json!({"deliveries": deliveries(&api, &ana, &cb).await});
    let dead_id = d["deliveries"][0]["webhook_id"].clone();
    assert_eq!(d["deliveries"][0]["state"], "dead");

    // While off, new events wait; turned on, they go out, and redeliver sends the dead one.
    api.send(&bob, "bob", "ana", "while it was off").await;
    rx.answer("200");
    let (st, on) = api
        .post(&format!("{BASE}/{cb}/enable"), Some(&ana), json!({}))
        .await;
    assert_eq!(st, 200, "{on}");
    assert_eq!(on["callback"]["enabled"], true);
    let later = loop {
        let r = rx.next();
        if r["answered"] == 200 {
            break r;
        }
    };
    assert_eq!(later["body"]["data"]["message"]["text"], "while it was off");
    let (_, re) = api
        .post(&format!("{BASE}/{cb}/redeliver"), Some(&ana), json!({}))
        .await;
    assert_eq!(re["requeued"], 1, "{re}");
    let again = rx.next();
    assert_eq!(again["id"], dead_id);
    assert_eq!(again["body"]["data"]["message"]["text"], "lost for now");
    assert_eq!(again["verified"], true);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_accepted_event_is_delivered_after_a_crash_at_each_step() {
    for point in ["relay-callback-before-queue", "relay-callback-before-post"] {
        let sb = Sandbox::new();
        let mut env = private().to_vec();
        env.push(("GTS_WEBCHAT_FAILPOINTS", point));
        let mut relay = Relay::start_with(&sb, &env);
        let api = relay.api();
        let ana = api.login("ana@example.com", "ana", "human").await;
        let bob = api.login("bob@example.com", "bob", "human").await;
        let rx = Receiver::start(&sb, "rx");
        let (_, secret) = subscribe(&api, &ana, json!({"url": rx.url})).await;
        rx.trust(&secret);
        // The crash can come before the answer is written: the send is then retried with
        // the same client id after the restart and must name the one message stored.
        let body = json!({"phone_id": "pchat_free_phone", "channel": "pchat", "source": "bob",
                          "to": "ana", "text": "survive the crash", "client_message_id": point});
        let first = api.try_post("/api/v1/messages", &bob, body.clone()).await;
        relay.wait_aborted(WAIT);
        relay.restart_env(&private());
        let api = relay.api();
        let (st, again) = api.post("/api/v1/messages", Some(&bob), body).await;
        assert_eq!(st, 200, "{point}: {again}");
        let id = again["message_id"]
            .as_str()
            .expect("message id")
            .to_string();
        if let Ok((st, v)) = first {
            assert_eq!(st, 200, "{point}: {v}");
            assert_eq!(
                v["message_id"],
                id.as_str(),
                "{point}: a retry is not a second message"
            );
        }
        let got = rx.next();
        assert_eq!(
            got["body"]["data"]["message"]["message_id"],
            id.as_str(),
            "{point}"
        );
        assert_eq!(got["verified"], true, "{point}");
        // Once: nothing else arrives for it after the restart's delivery is recorded.
        let (_, list) = api.get(BASE, Some(&ana)).await;
        let cb = list["callbacks"][0]["callback_id"]
            .as_str()
            .unwrap()
            .to_string();
        wait_for(WAIT, "the delivery recorded", || {
            let d = json!({"deliveries": block_on(deliveries(&api, &ana, &cb))});
            (d["deliveries"].as_array().unwrap().len() == 1
                && d["deliveries"][0]["state"] == "delivered")
                .then_some(())
        });
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn private_urls_bad_input_limits_and_other_peoples_callbacks_are_refused() {
    let sb = Sandbox::new();
    let relay = Relay::start_with(&sb, &[("PCHAT_CALLBACKS_PER_IDENTITY", "2")]);
    let api = relay.api();
    let ana = api.login("ana@example.com", "ana", "human").await;
    let eve = api.login("eve@example.com", "eve", "human").await;
    for url in [
        "http://127.0.0.1:9/hook",
        "http://localhost:9/hook",
        "http://169.254.169.254/latest/meta-data/",
        "http://10.0.0.7/",
        "http://[::1]:9/",
        "http://[::ffff:127.0.0.1]:9/",
        "http://192.168.1.1/",
    ] {
        let (st, v) = api.post(BASE, Some(&ana), json!({"url": url})).await;
        assert_error(st, &v, 400, "url_not_allowed");
        assert!(
            v["error"]["message"]
                .as_str()
                .unwrap()
                .contains("PCHAT_CALLBACKS_ALLOW_PRIVATE"),
            "{v}"
        );
    }
    for url in [
        "ftp://example.com/x",
        "file:///etc/passwd",
        "nonsense",
        "https://u:p@example.com/",
    ] {
        let (st, v) = api.post(BASE, Some(&ana), json!({"url": url})).await;
        assert_error(st, &v, 400, "invalid_url");
    }
    let (st, v) = api
        .post(
            BASE,
            Some(&ana),
            json!({"url": "https://93.184.216.34/", "channels": ["fax"]}),
        )
        .await;
    assert_error(st, &v, 400, "invalid_request");
    assert!(v["error"]["message"].as_str().unwrap().contains("channels"));
    let (st, v) = api
        .post(
            BASE,
            Some(&ana),
            json!({"url": "https://93.184.216.34/", "keywords": [" "]}),
        )
        .await;
    assert_error(st, &v, 400, "invalid_request");
    let (st, v) = api.post(BASE, Some(&ana), json!({"channels": []})).await;
    assert!(st == 400 || st == 422, "{st} {v}");
    let (st, _) = api
        .post(BASE, None, json!({"url": "https://93.184.216.34/"}))
        .await;
    assert_eq!(st, 401);

    // A public address literal is fine (nothing is sent until an event comes).
    let (a, _) = subscribe(&api, &ana, json!({"url": "https://93.184.216.34/a"})).await;
    subscribe(&api, &ana, json!({"url": "https://93.184.216.34/b"})).await;
    let (st, v) = api
        .post(BASE, Some(&ana), json!({"url": "https://93.184.216.34/c"}))
        .await;
    assert_error(st, &v, 409, "too_many_callbacks");

    // Another identity cannot see, change or remove it; without a token, nobody can.
    let path = format!("{BASE}/{a}");
    let (st, v, _) = api
        .raw(reqwest::Method::DELETE, &path, Some(&eve), None, None)
        .await;
    assert_error(st, &v, 404, "not_found");
    let (st, v) = api
        .post(&format!("{path}/rotate-secret"), Some(&eve), json!({}))
        .await;
    assert_error(st, &v, 404, "not_found");
    let (st, v) = api.get(&format!("{path}/deliveries"), Some(&eve)).await;
    assert_error(st, &v, 404, "not_found");
    let (_, list) = api.get(BASE, Some(&eve)).await;
    assert_eq!(list["callbacks"], json!([]));
    let (st, _, _) = api
        .raw(reqwest::Method::DELETE, &path, None, None, None)
        .await;
    assert_eq!(st, 401);
    let (st, v, _) = api
        .raw(reqwest::Method::DELETE, &path, Some(&ana), None, None)
        .await;
    assert_eq!(st, 200, "{v}");
    let (_, list) = api.get(BASE, Some(&ana)).await;
    assert_eq!(list["callbacks"].as_array().unwrap().len(), 1);
}
