//! The MCP server against the official MCP Python SDK's client (tests/mcp/client.py, installed
//! into tests/.venv by tests/run.sh): over stdio (`gts-webchat mcp --as`), over the relay's
//! Streamable HTTP endpoint (`/mcp`), and through a running daemon so the two share a cursor.

mod common;

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

use common::world::World;
use common::*;
use serde_json::{Value, json};

fn python() -> PathBuf {
    let py = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/.venv/bin/python");
    let has_sdk = Command::new(&py)
        .args(["-c", "import mcp"])
        .stdin(Stdio::null())
        .output()
        .is_ok_and(|o| o.status.success());
    assert!(
        has_sdk,
        "the MCP Python SDK is not installed: run tests/run.sh (it installs tests/mcp/requirements.txt into tests/.venv)"
    );
    py
}

fn client(w: &World, args: &[&str], env: &[(&str, &str)]) -> Output {
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/mcp/client.py");
    let mut cmd = Command::new(python());
    cmd.arg(script)
        .args(args)
        .envs(w.sb.env())
        .env("GTSW_BIN", env!("CARGO_BIN_EXE_gts-webchat"))
        .env("GTSW_PERSONA", "agent-1")
        .env("RELAY_URL", &w.relay.url)
        .env("HUMAN_TOKEN", &w.human)
        .env("AGENT", "agent-1")
        .env("RUST_LOG", "warn")
        .stdin(Stdio::null());
    for (k, v) in env {
        cmd.env(k, v);
    }
    tokio::task::block_in_place(|| cmd.output().expect("run the MCP client"))
}

/// The client's `OK {notes}` line, or the test fails with what it printed.
fn passed(o: &Output) -> Value {
    let out = String::from_utf8_lossy(&o.stdout);
    let line = out.lines().find_map(|l| l.strip_prefix("OK "));
    match (o.status.success(), line) {
        (true, Some(l)) => serde_json::from_str(l).expect("notes are JSON"),
        _ => panic!(
            "MCP client failed (exit {:?})\nstdout: {out}\nstderr: {}",
            o.status.code(),
            String::from_utf8_lossy(&o.stderr)
        ),
    }
}

/// One tool call over stdio: (is_error, text).
fn call(w: &World, tool: &str, args: Value) -> (bool, String) {
    let notes = passed(&client(w, &["call", tool, &args.to_string()], &[]));
    (
        notes["is_error"].as_bool().expect("is_error"),
        notes["text"].as_str().expect("text").to_string(),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_tool_over_stdio_with_the_python_sdk_client() {
    let w = World::new().await;
    let notes = passed(&client(&w, &["stdio"], &[]));
    // Woken by the send, not by the 60 s timeout (the figure itself is for benches).
    let woke = notes["wake_after_send_ms"].as_f64().expect("wake time");
    assert!(
        woke < 30_000.0,
        "wait_for_message woke on the send: {notes}"
    );
    eprintln!("MCP notes: {notes}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_tool_over_streamable_http_on_the_relay() {
    let w = World::new().await;
    let agent = w.api.login("agent@example.com", "agent-1", "agent").await;
    let notes = passed(&client(&w, &["http"], &[("AGENT_TOKEN", &agent)]));
    assert!(notes["wake_after_send_ms"].as_f64().is_some(), "{notes}");
    assert!(
        !log_contains_secret(&w.relay.log_text(), &agent),
        "the token reached the relay log"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http_mcp_without_a_session_is_refused() {
    let w = World::new().await;
    let o = client(&w, &["http"], &[("AGENT_TOKEN", "pct_not-a-real-token")]);
    assert!(!o.status.success(), "a made-up token got through");
    let body = json!({"jsonrpc": "2.0", "id": 1, "method": "initialize", "params": {}});
    let (status, _, _) = w
        .api
        .with_headers(
            reqwest::Method::POST,
            "/mcp",
            &[
                ("Origin", "http://evil.example"),
                ("Content-Type", "application/json"),
                ("Accept", "application/json, text/event-stream"),
            ],
            Some(&body.to_string()),
        )
        .await;
    assert_eq!(status, 403, "a foreign web page cannot reach /mcp");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_a_daemon_running_the_mcp_server_shares_its_cursor() {
    let w = World::new().await;
    ok(&gw(
        &w.sb,
        &["daemon", "start", "--task", "mcp", "--as", "agent-1"],
    ));
    let first = w.tell("agent-1", "first through the daemon").await;
    wait_for(
        std::time::Duration::from_secs(30),
        "the daemon to receive it",
        || (inbox_records(&w.sb, "mcp").len() == 1).then_some(()),
    );
    // The relay's claim cursor moved for the daemon: read directly, nothing is left.
    let (_, direct) = call(&w, "read_inbox", json!({}));
    assert!(direct.contains(&first), "read through the daemon: {direct}");

    // A second server process (a new host session) resumes the same cursor.
    let (_, again) = call(&w, "read_inbox", json!({}));
    assert!(again.contains("No new messages"), "read twice: {again}");
    let st = status(&w.sb, "mcp");
    assert_eq!(
        st["claimed_seq"],
        json!(1),
        "the daemon recorded the claim: {st}"
    );

    // Waiting through the daemon is woken by the next message.
    let notes = passed(&client(
        &w,
        &["call", "wait_for_message", r#"{"timeout_secs": 60}"#],
        &[("TELL", "second, while waiting")],
    ));
    assert_eq!(notes["is_error"], json!(false), "{notes}");
    assert!(
        notes["text"]
            .as_str()
            .unwrap()
            .contains("second, while waiting"),
        "{notes}"
    );
    assert!(
        notes["wake_after_send_ms"].as_f64().unwrap() < 30_000.0,
        "woken by the message, not the timeout: {notes}"
    );

    // Survives a daemon restart: the claim is in its journal.
    w.stop("mcp");
    ok(&gw(&w.sb, &["daemon", "start", "--task", "mcp"]));
    let (_, after) = call(&w, "read_inbox", json!({}));
    assert!(after.contains("No new messages"), "after restart: {after}");
    w.stop("mcp");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mcp_for_an_unknown_persona_says_what_to_do() {
    let w = World::new().await;
    let o = gw(&w.sb, &["mcp", "--as", "nobody@example.com"]);
    assert!(!o.status.success());
    assert!(err(&o).contains("gts-webchat persona"), "{}", err(&o));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn what_the_session_claims_gets_no_batch_turn_and_turns_are_not_claimed() {
    let w = World::new().await;
    let log = w.sb.path().join("turns.log");
    let hook = script(
        &w.sb,
        "turn.sh",
        &format!("echo \"$GTS_WEBCHAT_TEXT\" >> {}", log.display()),
    );
    ok(&gw(
        &w.sb,
        &[
            "daemon",
            "start",
            "--task",
            "both",
            "--as",
            "agent-1",
            "--on-message",
            hook.to_str().unwrap(),
        ],
    ));
    // A batch turn runs for a message nobody claimed; the session is then not handed it.
    w.tell("agent-1", "for the batch runner").await;
    wait_for(std::time::Duration::from_secs(30), "the batch turn", || {
        (lines_of(&log).len() == 1).then_some(())
    });
    let (_, none) = call(&w, "read_inbox", json!({}));
    assert!(
        none.contains("No new messages"),
        "a finished turn was handed over: {none}"
    );

    // Paused, messages wait; the session claims them; resumed, no turn runs for them.
    ok(&gw(&w.sb, &["daemon", "pause", "--task", "both"]));
    w.tell("agent-1", "for the live session").await;
    wait_for(std::time::Duration::from_secs(30), "the record", || {
        (inbox_records(&w.sb, "both").len() == 2).then_some(())
    });
    let (_, got) = call(&w, "read_inbox", json!({}));
    assert!(got.contains("for the live session"), "{got}");
    ok(&gw(&w.sb, &["daemon", "resume", "--task", "both"]));
    w.tell("agent-1", "after resume").await;
    wait_for(std::time::Duration::from_secs(30), "the next turn", || {
        (lines_of(&log).len() == 2).then_some(())
    });
    assert_eq!(
        lines_of(&log),
        vec!["for the batch runner", "after resume"],
        "the claimed message got a batch turn"
    );
    w.stop("both");
}
