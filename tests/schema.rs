//! schemathesis against the relay's own OpenAPI document: generated requests to every
//! operation, with a session, checking that nothing answers 5xx (but the documented 503 of a
//! relay without a speech engine) and every error has the JSON error shape. Afterwards no token or login code may be in the relay's log.

mod common;

use std::path::Path;
use std::process::{Command, Stdio};

use common::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn schemathesis_finds_no_server_errors_and_only_shaped_errors() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let st = root.join("tests/.venv/bin/schemathesis");
    assert!(
        st.exists(),
        "schemathesis is not installed: run tests/run.sh (it creates tests/.venv from tests/schema/requirements.txt)"
    );
    let sb = Sandbox::new();
    let relay = Relay::start(&sb);
    let api = relay.api();
    let token = api.login("fuzz@example.com", "fuzzer", "agent").await;
    let _peer = api.login("peer@example.com", "peer-one", "human").await;
    let report = root.join("test-artifacts/schemathesis");
    std::fs::create_dir_all(&report).ok();
    let out = Command::new(&st)
        .arg("run")
        .arg(format!("{}/api/v1/openapi.json", relay.url))
        .args(["--header", &format!("X-PChat-Session: {token}")])
        .args(["--checks", "no_server_error,error_shape"])
        .args(["--max-examples", "15", "--max-time", "90", "--workers", "2"])
        .args(["--exclude-path", "/api/v1/pchat/auth/logout"])
        .args(["--seed", "42", "--report", "junit"])
        .arg("--report-dir")
        .arg(&report)
        .env("SCHEMATHESIS_HOOKS", "webchat_checks")
        .env("PYTHONPATH", root.join("tests/schema"))
        .env("NO_COLOR", "1")
        .stdin(Stdio::null())
        .output()
        .expect("run schemathesis");
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "schemathesis found problems:\n{text}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(text.contains("passed"), "{text}");
    // After all of that, the log holds no session token and no login code.
    let log = relay.log_text();
    assert!(log.contains("/api/v1/messages"));
    assert!(
        !log.contains(token.trim_start_matches("pct_")),
        "a token reached the log"
    );
    for code in api.codes.lock().unwrap().iter() {
        assert!(
            !log_contains_secret(&log, code),
            "login code {code} reached the log"
        );
    }
}
