//! The hooks in hooks/, run by the daemon: the batch-wake example with a runner program of
//! the user's own (any program that reads the prompt on stdin), and the log hook. The real AI
//! host CLIs are driven in tests/hosts.rs.

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

#[test]
fn the_hook_names_what_is_wrong_with_its_runner() {
    for (runner, want) in [
        ("", "set WEBCHAT_RUNNER"),
        ("/no/such/program", "neither a known host nor an executable"),
    ] {
        let out = Command::new(hook_path("webchat-batch-wake.sh"))
            .env("WEBCHAT_RUNNER", runner)
            .env("GTS_WEBCHAT_BIN", BIN)
            .stdin(Stdio::null())
            .output()
            .unwrap();
        assert_eq!(out.status.code(), Some(2), "{runner:?}");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(err.contains(want), "{runner:?}: {err}");
    }
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
        let v = block_on(api.poll(&human, json!({"after": "0"})));
        events_of(&v, "message").first().cloned()
    });
    assert_eq!(reply["text"], json!("model turn 0"));
    api.send(&human, "human-1", "agent-1", "second question")
        .await;
    wait_for(Duration::from_secs(30), "the second reply", || {
        let v = block_on(api.poll(&human, json!({"after": "0"})));
        (events_of(&v, "message").len() == 2).then_some(())
    });
    let second = std::fs::read_to_string(prompts.join("1.txt")).unwrap();
    // The history: the first question and the agent's own answer to it, before the new one,
    // each fenced, with who wrote it said outside the fence.
    let first_q = second
        .find("first question")
        .expect("history in the prompt");
    let own = second
        .find("model turn 0")
        .expect("the agent's own reply in the history");
    let new_q = second.rfind("second question").unwrap();
    assert!(first_q < own && own < new_q, "oldest first:\n{second}");
    assert!(second.contains("From human-1 (a person, a relay account verified by email)"));
    assert!(second.contains("You (agent-1) wrote"));
    assert_eq!(
        second.matches("second question").count(),
        1,
        "the new message is not repeated as history:\n{second}"
    );
    assert!(second.trim_end().ends_with("no quoting of this prompt."));
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
