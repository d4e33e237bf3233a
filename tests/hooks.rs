//! The hooks in hooks/, run the way the daemon runs them, with stand-in runner programs in
//! place of real models.

mod common;

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use common::*;
use serde_json::json;

fn hook_path(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("hooks")
        .join(name)
}

fn write_exec(path: &Path, body: &str) {
    std::fs::write(path, body).unwrap();
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o755)).unwrap();
}

/// A stand-in for a host CLI: records its argv (one per line) and stdin, prints an answer.
fn fake_host(bin: &Path, name: &str, rec: &Path) {
    write_exec(
        &bin.join(name),
        &format!(
            "#!/bin/sh\nfor a in \"$@\"; do printf '%s\\0' \"$a\"; done > {r}/{name}.argv\nfor a in \"$@\"; do [ -f \"$a\" ] && cat \"$a\" >> {r}/{name}.stdin; done\ncat >> {r}/{name}.stdin\necho \"ANSWER from {name}\"\n",
            r = rec.display()
        ),
    );
}

fn record(text: &str) -> String {
    json!({"seq": 1, "cursor": "1", "type": "message", "message_id": "msg_1", "from": "human-1",
           "from_name": "Human", "from_kind": "human", "to": "agent-1", "text": text,
           "created_at": "2026-01-01T00:00:00Z", "reply_to": null, "attachments": [],
           "received_at": "2026-01-01T00:00:00Z"})
    .to_string()
}

/// Runs the batch-wake hook once as the daemon would, returning (status ok, stdout).
fn wake(sb: &Sandbox, bin: &Path, runner: &str, text: &str) -> (bool, String, String) {
    let inbox_dir = sb.path().join("task");
    std::fs::create_dir_all(&inbox_dir).unwrap();
    let path = format!(
        "{}:{}",
        bin.display(),
        std::env::var("PATH").unwrap_or_default()
    );
    let mut child = Command::new(hook_path("webchat-batch-wake.sh"))
        .env("PATH", path)
        .env("HOME", sb.path())
        .env("WEBCHAT_RUNNER", runner)
        .env("WEBCHAT_WORKDIR", sb.path())
        .env("GTS_WEBCHAT_TASK", "t")
        .env("GTS_WEBCHAT_BIN", BIN)
        .env("GTS_WEBCHAT_INBOX", inbox_dir.join("inbox.jsonl"))
        .env("GTS_WEBCHAT_CHAT_ADDRESS", "agent-1")
        .env("GTS_WEBCHAT_MESSAGE_ID", "msg_1")
        .env("GTS_WEBCHAT_FROM", "human-1")
        .env("GTS_WEBCHAT_FROM_NAME", "Human")
        .env("GTS_WEBCHAT_TYPE", "message")
        .env("GTS_WEBCHAT_TEXT", text)
        .env("GTS_WEBCHAT_BATCH_COUNT", "1")
        .env("XDG_STATE_HOME", sb.path().join("state"))
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    use std::io::Write;
    child
        .stdin
        .take()
        .unwrap()
        .write_all(format!("{}\n", record(text)).as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// The recorded argv (NUL-separated, so multi-line arguments stay whole).
fn argv(rec: &Path, name: &str) -> Vec<String> {
    std::fs::read_to_string(rec.join(format!("{name}.argv")))
        .unwrap_or_default()
        .split('\0')
        .filter(|a| !a.is_empty())
        .map(str::to_string)
        .collect()
}

#[test]
fn every_preset_runs_its_host_for_one_turn_then_resumes() {
    let sb = Sandbox::new();
    let bin = sb.path().join("bin");
    let rec = sb.path().join("rec");
    std::fs::create_dir_all(&bin).unwrap();
    std::fs::create_dir_all(&rec).unwrap();
    let hosts = [
        ("codex", "codex"),
        ("claude", "claude"),
        ("aider", "aider"),
        ("gemini", "gemini"),
        ("opencode", "opencode"),
        ("goose", "goose"),
        ("cursor", "cursor-agent"),
    ];
    for (_, program) in hosts {
        fake_host(&bin, program, &rec);
    }
    // Hostile text must reach the runner verbatim and run nothing.
    let pwned = sb.path().join("pwned");
    let evil = format!(
        "hi $(touch {p}) `touch {p}`; touch {p} \"quoted\" 'single'",
        p = pwned.display()
    );
    for (runner, program) in hosts {
        let (ok, out, err) = wake(&sb, &bin, runner, &evil);
        assert!(ok, "{runner}: {err}");
        assert_eq!(
            out.trim(),
            format!("ANSWER from {program}"),
            "{runner} stdout is the answer only"
        );
        let args = argv(&rec, program);
        let stdin =
            std::fs::read_to_string(rec.join(format!("{program}.stdin"))).unwrap_or_default();
        let prompt_seen = args.iter().any(|a| a.contains(&evil)) || stdin.contains(&evil);
        assert!(
            prompt_seen,
            "{runner} did not get the message text verbatim: {args:?}"
        );
        let first: Vec<&str> = args
            .iter()
            .map(String::as_str)
            .filter(|a| !a.contains('\n') && !a.contains(&evil))
            .collect();
        match runner {
            "codex" => assert_eq!(
                first,
                [
                    "exec",
                    "--skip-git-repo-check",
                    "-s",
                    "workspace-write",
                    "-"
                ]
            ),
            "claude" => assert_eq!(first, ["-p", "--output-format", "text"]),
            "aider" => assert_eq!(
                first[..first.len() - 1],
                [
                    "--no-auto-commits",
                    "--no-pretty",
                    "--no-stream",
                    "--message-file"
                ]
            ),
            "gemini" => assert_eq!(first, ["-p"]),
            "opencode" => assert_eq!(first, ["run"]),
            "goose" => assert_eq!(first, ["run", "-q", "-n", "webchat-t", "-t"]),
            "cursor" => assert_eq!(first, ["-p", "--output-format", "text"]),
            _ => unreachable!(),
        }
    }
    assert!(!pwned.exists(), "message text was executed");

    // Second turn: each host's continue/resume form.
    for (runner, program) in hosts {
        let (ok, _, err) = wake(&sb, &bin, runner, "second turn");
        assert!(ok, "{runner}: {err}");
        let args = argv(&rec, program);
        let resumed = match runner {
            "codex" => args.starts_with(&["exec".into(), "resume".into(), "--last".into()]),
            "claude" => args.first().map(String::as_str) == Some("-c"),
            "aider" => args.contains(&"--restore-chat-history".to_string()),
            "gemini" => args.starts_with(&["-r".into(), "latest".into()]),
            "opencode" => args.starts_with(&["run".into(), "-c".into()]),
            "goose" => args.starts_with(&["run".into(), "-r".into()]),
            "cursor" => args.first().map(String::as_str) == Some("-p"),
            _ => false,
        };
        assert!(resumed, "{runner} second turn: {args:?}");
    }

    // Unknown runner: a clear error, non-zero.
    let (ok, _, err) = wake(&sb, &bin, "no-such-host", "x");
    assert!(!ok);
    assert!(
        err.contains("neither a known host nor an executable"),
        "{err}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn batch_wake_through_the_daemon_prompts_with_history_and_replies() {
    let sb = Sandbox::new();
    let relay = Relay::start(&sb);
    let api = relay.api();
    let human = api.login("human@example.com", "human-1", "human").await;
    let out = sb
        .cmd()
        .args([
            "persona",
            "agent@example.com",
            "--name",
            "Agent",
            "--chat-address",
            "agent-1",
            "--relay",
            &relay.url,
        ])
        .output()
        .unwrap();
    assert!(out.status.success());
    // The stand-in runner keeps every prompt and answers with the prompt's last question.
    let prompts = sb.path().join("prompts");
    std::fs::create_dir_all(&prompts).unwrap();
    let runner = sb.path().join("fake-runner.sh");
    write_exec(
        &runner,
        &format!(
            "#!/bin/sh\nn=$(ls {p} | wc -l)\ncat > {p}/$n.txt\necho \"model turn $n\"\n",
            p = prompts.display()
        ),
    );
    let o = sb
        .cmd()
        .env("WEBCHAT_RUNNER", &runner)
        .args([
            "daemon",
            "start",
            "--task",
            "wake",
            "--as",
            "agent-1",
            "--reply",
            "--on-message",
        ])
        .arg(hook_path("webchat-batch-wake.sh"))
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));

    api.send(&human, "human-1", "agent-1", "first question")
        .await;
    let reply = wait_for(Duration::from_secs(30), "the first reply", || {
        let v = futures_block(api.poll(&human, json!({"after": "0"})));
        events_of(&v, "message").first().cloned()
    });
    assert_eq!(reply["text"], json!("model turn 0"));
    api.send(&human, "human-1", "agent-1", "second question")
        .await;
    wait_for(Duration::from_secs(30), "the second reply", || {
        let v = futures_block(api.poll(&human, json!({"after": "0"})));
        (events_of(&v, "message").len() == 2).then_some(())
    });
    let second = std::fs::read_to_string(prompts.join("1.txt")).unwrap();
    assert!(
        second.contains("first question"),
        "history in the prompt:\n{second}"
    );
    assert!(
        second.contains("New message from human-1 (human-1)") || second.contains("from human-1"),
        "{second}"
    );
    assert!(
        second
            .trim_end()
            .ends_with("Reply with the text to send back to them, and nothing else.")
    );
    let tail_pos = second.find("first question").unwrap();
    let new_pos = second.rfind("second question").unwrap();
    assert!(tail_pos < new_pos, "history comes before the new message");
    let o = sb
        .cmd()
        .args(["daemon", "stop", "--task", "wake"])
        .output()
        .unwrap();
    assert!(o.status.success());

    // The log hook, through the daemon.
    let log = sb.path().join("chat.log");
    let o = sb
        .cmd()
        .env("WEBCHAT_LOG", &log)
        .args([
            "daemon",
            "start",
            "--task",
            "log",
            "--as",
            "agent-1",
            "--on-message",
        ])
        .arg(hook_path("webchat-log.sh"))
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    api.send(&human, "human-1", "agent-1", "write this down")
        .await;
    let line = wait_for(Duration::from_secs(30), "the log line", || {
        std::fs::read_to_string(&log).ok().filter(|s| !s.is_empty())
    });
    assert!(
        line.contains("[message] human-1 (human-1): write this down"),
        "{line}"
    );
    let o = sb
        .cmd()
        .args(["daemon", "stop", "--task", "log"])
        .output()
        .unwrap();
    assert!(o.status.success());
}

fn futures_block<F: std::future::Future>(f: F) -> F::Output {
    tokio::task::block_in_place(|| tokio::runtime::Handle::current().block_on(f))
}
