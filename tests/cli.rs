//! The client CLI against a real relay, in isolated HOME/XDG dirs. Seed command lines are
//! quoted as the seeds write them (shell syntax), with `scripts/webchat_cli.py` replaced by
//! `gts-webchat cli` and `$RELAY_URL` / `$WEBCHAT_URL` filled in.

mod common;

use std::collections::HashMap;
use std::process::{Output, Stdio};
use std::time::Duration;

use common::*;
use serde_json::{Value, json};

/// Splits a shell-style command line and substitutes $RELAY_URL, $WEBCHAT_URL.
fn words(line: &str, relay: &str, site: &str) -> Vec<String> {
    let line = line
        .replace("\\\n", " ")
        .replace("$RELAY_URL", relay)
        .replace("$WEBCHAT_URL", site);
    let mut w = shlex::split(&line).expect("valid shell words");
    assert_eq!(
        w.remove(0),
        "gts-webchat",
        "lines start with the program name"
    );
    w
}

fn run_words(sb: &Sandbox, args: &[String]) -> Output {
    sb.cmd()
        .args(args)
        .stdin(Stdio::null())
        .output()
        .expect("run gts-webchat")
}

fn run(sb: &Sandbox, line: &str) -> Output {
    run_words(sb, &words(line, "", ""))
}

fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

fn ok(o: &Output) -> String {
    assert!(
        o.status.success(),
        "exit {:?}\nstdout: {}\nstderr: {}",
        o.status.code(),
        stdout(o),
        stderr(o)
    );
    stdout(o)
}

/// The directory entry for `address`, seen by `token`.
async fn directory_entry(api: &Api, token: &str, address: &str) -> Value {
    let (s, v) = api
        .get(
            &format!("/api/v1/webchat/directory?q={address}"),
            Some(token),
        )
        .await;
    assert_eq!(s, 200);
    v["results"]
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["chat_address"] == json!(address))
        .cloned()
        .unwrap_or(Value::Null)
}

/// Every text command line of seeds 000 and 001 (file and voice lines are in the attachments
/// tests), run verbatim against a real relay.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn seed_command_lines_work_verbatim() {
    let sb = Sandbox::new();
    let relay = Relay::start(&sb);
    let r = relay.url.clone();
    let site = "http://127.0.0.1:8026/app/webchat/chat.html";
    let w = |line: &str| words(line, &r, site);
    let api = relay.api();
    let user = api
        .login("person@example.com", "user-chat-address", "human")
        .await;

    // 000, "Create An AI Persona".
    let out = ok(&run_words(
        &sb,
        &w(r#"gts-webchat cli ai-codex@example.com \
--name "Codex Test Side" \
--persona "Codex agent" \
--computer "codex" \
--session-name "live support" \
--chat-address codex-test \
--relay $RELAY_URL \
--site http://127.0.0.1:8026/app/webchat/chat.html"#),
    ));
    for want in [
        "Codex Test Side",
        "codex-test",
        "Codex agent",
        "codex",
        "live support",
        "pchat",
    ] {
        assert!(out.contains(want), "{want} missing from:\n{out}");
    }
    let url_line = out
        .lines()
        .find(|l| l.starts_with(site))
        .expect("GUI auto-login URL");
    let url = url::Url::parse(url_line).unwrap();
    let q: HashMap<String, String> = url.query_pairs().into_owned().collect();
    assert_eq!(q["server_url"], r);
    assert_eq!(q["display_name"], "Codex Test Side");
    assert_eq!(q["chat_address"], "codex-test");
    assert!(q["pchat_session"].starts_with("pct_"));
    assert_eq!(q["persona"], "Codex agent");
    assert_eq!(q["computer_name"], "codex");
    assert_eq!(q["session_name"], "live support");
    assert_eq!(q["listen_channel"], "pchat");
    // The token in the URL is a working session of an agent identity.
    let (s, me) = api
        .get("/api/v1/webchat/me", Some(&q["pchat_session"]))
        .await;
    assert_eq!(s, 200);
    assert_eq!(me["kind"], json!("agent"));
    // The directory shows the session metadata.
    let entry = directory_entry(&api, &user, "codex-test").await;
    assert_eq!(entry["device_name"], json!("codex"));
    assert_eq!(entry["session_name"], json!("live support"));
    assert_eq!(entry["kind"], json!("agent"));

    // 000, "Keep The AI Online And Listening", then Ctrl-C (SIGTERM here).
    let watch = Background::start(
        &sb,
        w(r#"gts-webchat cli ai-codex@example.com \
--name "Codex Test Side" \
--persona "Codex agent" \
--computer "codex" \
--session-name "live support" \
--chat-address codex-test \
--relay $RELAY_URL \
--watch \
--interval 2 \
--limit 20"#),
        "watch",
    );
    watch.wait_stderr("watching as Codex Test Side");
    assert!(
        watch.stderr_text().contains("pchat_session="),
        "watch prints the GUI URL"
    );
    assert_eq!(
        directory_entry(&api, &user, "codex-test").await["online"],
        json!(true)
    );
    api.send(&user, "user-chat-address", "codex-test", "are you there?")
        .await;
    let line = watch.expect_line("are you there?", Duration::from_secs(10));
    assert!(line.contains("user-chat-address"));
    assert!(watch.terminate().success());
    assert_eq!(
        directory_entry(&api, &user, "codex-test").await["online"],
        json!(false)
    );

    // 000, "Use --quiet-url for daemon logs".
    let watch = Background::start(
        &sb,
        w(r#"gts-webchat cli ai-codex@example.com \
--name "Codex Test Side" \
--chat-address codex-test \
--relay $RELAY_URL \
--watch \
--quiet-url"#),
        "watch-quiet",
    );
    watch.wait_stderr("watching as");
    api.send(&user, "user-chat-address", "codex-test", "quiet one")
        .await;
    watch.expect_line("quiet one", Duration::from_secs(10));
    assert!(
        !watch.stderr_text().contains("pct_"),
        "--quiet-url printed a token"
    );
    assert!(watch.terminate().success());

    // 000, "Send A Reply".
    let out = ok(&run_words(
        &sb,
        &w(r#"gts-webchat cli ai-codex@example.com \
--name "Codex Test Side" \
--chat-address codex-test \
--relay $RELAY_URL \
--to user-chat-address \
--message "Hello, I am connected from the AI session.""#),
    ));
    assert!(out.contains("sent msg_"));
    let v = api.poll(&user, json!({"after": "0"})).await;
    assert_eq!(
        texts(&v),
        vec!["Hello, I am connected from the AI session."]
    );
    assert_eq!(v["messages"][0]["from_kind"], json!("agent"));

    // 000, "Open The AI Persona In The Browser".
    let out = ok(&run_words(
        &sb,
        &w(r#"gts-webchat cli ai-codex@example.com \
--name "Codex Test Side" \
--persona "Codex GUI" \
--chat-address codex-test \
--relay $RELAY_URL \
--site http://127.0.0.1:8026/app/webchat/chat.html"#),
    ));
    assert!(out.contains("persona=Codex+GUI"), "{out}");

    // 000, "Private Relay" (this relay, flagged private).
    let watch = Background::start(
        &sb,
        w(r#"gts-webchat cli ai-codex@example.com \
--name "Codex Private Agent" \
--chat-address codex-private \
--relay $RELAY_URL \
--relay-mode private \
--watch"#),
        "watch-private",
    );
    watch.wait_stderr("(private relay)");
    // That email already owns codex-test: an identity keeps its address, and says so.
    assert!(watch.stderr_text().contains("keeps its address"));
    assert!(watch.terminate().success());

    // 001, "Start Or Reuse A Persona", with $RELAY_URL and $WEBCHAT_URL from the environment.
    let out = sb
        .cmd()
        .env("RELAY_URL", &r)
        .env("WEBCHAT_URL", site)
        .args(w(r#"gts-webchat cli ai-claude@example.com \
--name "Claude Test Side" \
--persona "Claude agent" \
--computer "claude" \
--session-name "live support" \
--chat-address claude-test"#))
        .output()
        .unwrap();
    let text = ok(&out);
    assert!(text.contains(&format!("{site}?server_url=")), "{text}");

    // 001, the recommended live-discussion command.
    let watch = Background::start(
        &sb,
        w(r#"gts-webchat cli ai-claude@example.com \
--name "Claude Test Side" \
--persona "Claude agent" \
--computer "claude" \
--session-name "live discussion" \
--chat-address claude-test \
--relay "$RELAY_URL" \
--watch \
--interval 2 \
--limit 20 \
--quiet-url"#),
        "watch-claude",
    );
    watch.wait_stderr("watching as Claude Test Side");
    assert_eq!(
        directory_entry(&api, &user, "claude-test").await["session_name"],
        json!("live discussion")
    );
    // 001, "Send Text" (codex writes to the watching claude).
    ok(&run_words(
        &sb,
        &w(r#"gts-webchat cli ai-codex@example.com \
--name "Codex Test Side" \
--chat-address codex-test \
--relay "$RELAY_URL" \
--to claude-test \
--message "Hello from the AI session.""#),
    ));
    let line = watch.expect_line("Hello from the AI session.", Duration::from_secs(10));
    assert!(line.contains("Codex Test Side (codex-test)"));
    assert!(watch.terminate().success());

    // 001, "Poll Once", after the user wrote while nobody watched.
    api.send(
        &user,
        "user-chat-address",
        "claude-test",
        "queued while away",
    )
    .await;
    let poll_once = w(r#"gts-webchat cli ai-claude@example.com \
--chat-address claude-test \
--relay "$RELAY_URL" \
--inbox \
--limit 20"#);
    let out = ok(&run_words(&sb, &poll_once));
    assert!(out.contains("queued while away"), "{out}");
    let out = ok(&run_words(&sb, &poll_once));
    assert!(!out.contains("queued while away"), "claimed twice: {out}");

    // 001, "List Local Personas".
    let out = ok(&run(&sb, "gts-webchat cli --list"));
    assert!(out.contains("ai-codex@example.com") && out.contains("claude-test"));
    assert!(!out.contains("pct_"), "list printed a token");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn persona_is_reused_without_a_new_code_and_json_output_parses() {
    let sb = Sandbox::new();
    let relay = Relay::start(&sb);
    let r = relay.url.clone();
    let w = |line: &str| words(line, &r, "");
    let first = ok(&run_words(
        &sb,
        &w(
            "gts-webchat persona bot@example.com --name Bot --chat-address bot-one --relay $RELAY_URL --json --quiet-url",
        ),
    ));
    let v: Value = serde_json::from_str(first.trim()).unwrap();
    assert_eq!(v["outcome"], json!("logged_in"));
    assert_eq!(v["chat_address"], json!("bot-one"));
    assert_eq!(v["kind"], json!("agent"));
    assert!(v.get("gui_url").is_none());
    assert!(!first.contains("pct_"), "token printed without a GUI URL");
    let codes_before = relay.requests_started("/api/v1/pchat/auth/request-code");

    // Second run: the saved token works, so no new code is requested.
    let second = ok(&run(&sb, "gts-webchat persona bot@example.com --json"));
    let v: Value = serde_json::from_str(second.trim()).unwrap();
    assert_eq!(v["outcome"], json!("reused"));
    assert_eq!(v["relay"], json!(r), "the saved relay is used");
    assert!(
        v["gui_url"]
            .as_str()
            .unwrap()
            .contains("pchat_session=pct_")
    );
    assert_eq!(
        relay.requests_started("/api/v1/pchat/auth/request-code"),
        codes_before
    );

    // The persona file is private.
    use std::os::unix::fs::PermissionsExt;
    let file = sb
        .path()
        .join("config/gts-webchat/personas/bot@example.com.json");
    assert_eq!(
        std::fs::metadata(&file).unwrap().permissions().mode() & 0o777,
        0o600
    );

    // send, inbox and list --json: one object per line.
    ok(&run_words(
        &sb,
        &w(
            "gts-webchat persona peer@example.com --name Peer --chat-address peer-one --relay $RELAY_URL --kind human",
        ),
    ));
    let out = ok(&run(
        &sb,
        "gts-webchat send --as peer-one --to bot-one --message one --json",
    ));
    let sent: Value = serde_json::from_str(out.trim()).unwrap();
    assert_eq!(sent["ok"], json!(true));
    ok(&run(
        &sb,
        "gts-webchat send --as peer@example.com --to bot-one --message 'two\nlines' --json",
    ));
    let out = ok(&run(&sb, "gts-webchat inbox --as bot-one --json"));
    let msgs: Vec<Value> = out
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(msgs.len(), 2);
    assert_eq!(msgs[0]["message_id"], sent["message_id"]);
    assert_eq!(msgs[0]["from_kind"], json!("human"));
    assert_eq!(msgs[1]["text"], json!("two\nlines"));
    let out = ok(&run(&sb, "gts-webchat list --json"));
    let listed: Vec<Value> = out
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(listed.len(), 2);
    assert!(listed.iter().all(|p| p.get("token").is_none()));

    // watch --json; a reply carries reply_to on receipt.
    let watch = Background::start(
        &sb,
        w("gts-webchat watch --as bot-one --json --quiet-url"),
        "w",
    );
    watch.wait_stderr("watching as");
    let mid = msgs[0]["message_id"].as_str().unwrap();
    ok(&run(
        &sb,
        &format!("gts-webchat send --as peer-one --to bot-one --message re --reply-to {mid}"),
    ));
    let line = watch.expect_line("\"re\"", Duration::from_secs(10));
    let got: Value = serde_json::from_str(&line).unwrap();
    assert_eq!(got["reply_to"], json!(mid));
    assert!(watch.terminate().success());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn errors_have_one_line_and_distinct_exit_codes() {
    let sb = Sandbox::new();
    let mut relay = Relay::start(&sb);
    let r = relay.url.clone();
    let w = |line: &str| words(line, &r, "");
    ok(&run_words(
        &sb,
        &w("gts-webchat persona me@example.com --name Me --chat-address me-me --relay $RELAY_URL"),
    ));

    let check = |o: &Output, code: i32, needle: &str| {
        assert_eq!(o.status.code(), Some(code), "stderr: {}", stderr(o));
        let err = stderr(o);
        assert!(err.contains(needle), "{needle:?} not in {err:?}");
        assert!(!err.contains("panicked") && !err.contains("RUST_BACKTRACE"));
        // Our own errors are one or two lines; clap's usage errors carry its usage block.
        if !err.starts_with("error:") {
            assert!(
                err.trim().lines().count() <= 2,
                "more than two lines: {err}"
            );
        }
    };
    // Usage: exit 2.
    check(&run(&sb, "gts-webchat send --as me-me"), 2, "--to");
    check(
        &run(&sb, "gts-webchat cli me@example.com --to x"),
        2,
        "--message",
    );
    check(&run(&sb, "gts-webchat cli --to x"), 2, "EMAIL");
    check(
        &run(&sb, "gts-webchat persona not-an-email"),
        2,
        "not a valid email",
    );
    check(
        &run(
            &sb,
            "gts-webchat persona a@example.com --relay localhost:5110",
        ),
        2,
        "not a relay URL",
    );
    check(
        &run(
            &sb,
            "gts-webchat persona a@example.com --chat-address 'No Spaces'",
        ),
        2,
        "chat address",
    );
    // Unknown persona: exit 5.
    check(
        &run(&sb, "gts-webchat send --as ghost --to me-me --message x"),
        5,
        "no local persona",
    );
    // Refused by the relay: exit 4.
    check(
        &run(
            &sb,
            "gts-webchat send --as me-me --to nobody-here --message x",
        ),
        4,
        "unknown_recipient",
    );
    check(
        &run_words(
            &sb,
            &w("gts-webchat persona other@example.com --chat-address me-me --relay $RELAY_URL"),
        ),
        4,
        "taken",
    );
    // Unreachable: exit 3, for a dead port and for a relay that went away.
    check(
        &run(
            &sb,
            "gts-webchat persona b@example.com --relay http://127.0.0.1:9",
        ),
        3,
        "cannot reach the relay",
    );
    relay.kill9();
    check(
        &run(&sb, "gts-webchat send --as me-me --to me-me --message x"),
        3,
        "cannot reach the relay",
    );
    check(
        &run(&sb, "gts-webchat inbox --as me-me"),
        3,
        "is it running?",
    );

    // Completions and the man page come from the clap definitions.
    let out = ok(&run(&sb, "gts-webchat completions bash"));
    assert!(out.contains("gts-webchat") && out.contains("--chat-address"));
    let out = ok(&run(&sb, "gts-webchat man"));
    assert!(out.contains(".TH") && out.contains("gts-webchat"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn expired_session_says_how_to_log_in_and_code_flag_logs_in() {
    let sb = Sandbox::new();
    // A fixed port, so the restarted relay is the same relay to the client.
    let port = free_port().to_string();
    let relay = Relay::start_args(&sb, &["--port", &port], &[]);
    let r = relay.url.clone();
    ok(&run_words(
        &sb,
        &words(
            "gts-webchat persona late@example.com --name Late --chat-address late-one --relay $RELAY_URL",
            &r,
            "",
        ),
    ));
    let file = sb
        .path()
        .join("config/gts-webchat/personas/late@example.com.json");
    let token = || -> String {
        let p: Value = serde_json::from_slice(&std::fs::read(&file).unwrap()).unwrap();
        p["token"].as_str().unwrap().to_string()
    };

    // While the relay hands out codes, a dead token is replaced without a person.
    let old = token();
    let (s, _) = relay
        .api()
        .post("/api/v1/pchat/auth/logout", Some(&old), json!({}))
        .await;
    assert_eq!(s, 200);
    ok(&run(
        &sb,
        "gts-webchat send --as late-one --to late-one --message 'note to self'",
    ));
    assert_ne!(token(), old, "logged in again");

    // The same relay, now mailing codes: an expired session needs the person.
    let (smtp_port, mail) = smtp_sink();
    let smtp_port = smtp_port.to_string();
    drop(relay);
    let relay = Relay::start_args(
        &sb,
        &["--port", &port],
        &[
            ("SMTP_HOST", "127.0.0.1"),
            ("SMTP_PORT", &smtp_port),
            ("SMTP_SECURITY", "none"),
        ],
    );
    let (s, _) = relay
        .api()
        .post("/api/v1/pchat/auth/logout", Some(&token()), json!({}))
        .await;
    assert_eq!(s, 200);
    let o = run(
        &sb,
        "gts-webchat send --as late-one --to late-one --message x",
    );
    assert_eq!(o.status.code(), Some(4), "{}", stderr(&o));
    assert!(
        stderr(&o).contains("gts-webchat persona late@example.com"),
        "{}",
        stderr(&o)
    );
    let body = mail.join().unwrap();
    let code: String = body
        .split("login code is ")
        .nth(1)
        .unwrap()
        .chars()
        .take(6)
        .collect();
    let out = ok(&run(
        &sb,
        &format!("gts-webchat persona late@example.com --code {code} --json"),
    ));
    let v: Value = serde_json::from_str(out.trim()).unwrap();
    assert_eq!(v["outcome"], json!("logged_in"));
    assert_eq!(v["chat_address"], json!("late-one"));
    ok(&run(
        &sb,
        "gts-webchat send --as late-one --to late-one --message back",
    ));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hostile_terminal_sequences_are_printed_escaped_and_json_stays_exact() {
    let sb = Sandbox::new();
    let relay = Relay::start(&sb);
    let api = relay.api();
    let eve = api.login("eve@example.com", "eve", "human").await;
    ok(&run_words(
        &sb,
        &[
            "persona".into(),
            "me@example.com".into(),
            "--chat-address".into(),
            "me-agent".into(),
            "--relay".into(),
            relay.url.clone(),
            "--quiet-url".into(),
        ],
    ));
    // Set the title, write the clipboard (OSC 52), clear the screen, reverse the text.
    let hostile = "hi\u{1b}]0;pwned\u{7}\u{1b}]52;c;ZXZpbA==\u{7}\u{1b}[2J\u{202e}gpj.exe";
    api.send(&eve, "eve", "me-agent", hostile).await;
    let human = ok(&run_words(
        &sb,
        &["inbox".into(), "--as".into(), "me-agent".into()],
    ));
    assert!(human.contains("hi"), "{human}");
    for bad in ['\u{1b}', '\u{7}', '\u{202e}'] {
        assert!(
            !human.contains(bad),
            "raw {bad:?} reached the terminal: {human:?}"
        );
    }
    assert!(human.contains("\\x1b]52;c;"), "shown escaped: {human}");

    // --json is for programs: the exact text.
    api.send(&eve, "eve", "me-agent", hostile).await;
    let json_out = ok(&run_words(
        &sb,
        &[
            "inbox".into(),
            "--as".into(),
            "me-agent".into(),
            "--json".into(),
        ],
    ));
    let v: Value = serde_json::from_str(json_out.lines().next().unwrap()).unwrap();
    assert_eq!(v["text"], json!(hostile));
}

/// `inbox --wait` holds a long-poll until a message arrives (scripts waiting for an answer),
/// and refuses a wait the relay would not hold.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn inbox_wait_returns_when_a_message_arrives() {
    let sb = Sandbox::new();
    let relay = Relay::start(&sb);
    common::persona(&sb, &relay.url, "asker@example.com", "asker");
    common::persona(&sb, &relay.url, "answerer@example.com", "answerer");
    let polls = relay.requests_started("/api/v1/webchat/poll");
    let mut waiting = sb
        .cmd()
        .args(["inbox", "--as", "asker", "--wait", "60", "--json"])
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    relay.wait_requests("/api/v1/webchat/poll", polls, 1);
    ok(&run(
        &sb,
        "gts-webchat send --as answerer --to asker --message 42",
    ));
    let status = common::wait_child(&mut waiting, Duration::from_secs(30));
    assert!(status.is_some_and(|s| s.success()), "{status:?}");
    let out = waiting.wait_with_output().unwrap();
    let v: Value = serde_json::from_str(String::from_utf8_lossy(&out.stdout).trim()).unwrap();
    assert_eq!(v["text"], json!("42"));
    assert_eq!(v["from"], json!("answerer"));

    let bad = run(&sb, "gts-webchat inbox --as asker --wait 91");
    assert_eq!(bad.status.code(), Some(2), "{}", stderr(&bad));
    assert!(stderr(&bad).contains("0 to 90"), "{}", stderr(&bad));
}
