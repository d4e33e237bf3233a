//! The daemon crashed exactly inside its durability windows (failpoints make it abort, as a
//! kill -9 would, at a named point), and the identity-change window. After each, every message
//! is received once, its hook is done at least once, and its reply is sent exactly once.

mod common;

use std::path::Path;
use std::time::Duration;

use common::world::World;
use common::*;
use serde_json::{Value, json};

impl World {
    /// `daemon start` with a failpoint armed in the daemon's environment.
    fn start_armed(&self, args: &[&str], failpoint: &str) {
        let out = self
            .sb
            .cmd()
            .env("GTS_WEBCHAT_FAILPOINTS", failpoint)
            .args(args)
            .output()
            .expect("daemon start");
        ok(&out);
    }

    /// Messages the human has received from the agent, by text.
    async fn replies(&self) -> Vec<String> {
        let got = self
            .api
            .poll(&self.human, json!({"after": "0", "limit": 200}))
            .await;
        got["messages"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|m| m["type"] == "message" && m["from"] == "agent-1")
            .map(|m| m["text"].as_str().unwrap_or_default().to_string())
            .collect()
    }
}

fn daemon_gone(sb: &Sandbox, task: &str) {
    let lock = task_dir(sb, task).join("daemon.lock");
    let pid = std::fs::read_to_string(&lock).unwrap_or_default();
    let pid = pid.trim().to_string();
    wait_for(
        Duration::from_secs(30),
        "the daemon to abort at its failpoint",
        || {
            (pid.is_empty()
                || !Path::new(&format!("/proc/{pid}/cmdline")).exists()
                || std::fs::read_to_string(format!("/proc/{pid}/stat"))
                    .is_ok_and(|s| s.contains(") Z ")))
            .then_some(())
        },
    );
}

fn state_of(sb: &Sandbox, task: &str) -> Value {
    serde_json::from_slice(&std::fs::read(task_dir(sb, task).join("state.json")).unwrap()).unwrap()
}

fn echo_hook(sb: &Sandbox) -> (std::path::PathBuf, std::path::PathBuf) {
    let runs = sb.path().join("runs.log");
    let hook = script(
        sb,
        "answer.sh",
        &format!(
            "cat >/dev/null\necho \"$GTS_WEBCHAT_TEXT\" >> {}\nprintf 'answer: %s' \"$GTS_WEBCHAT_TEXT\"",
            runs.display()
        ),
    );
    (hook, runs)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_crash_right_after_the_reply_was_sent_does_not_send_it_again() {
    let w = World::new().await;
    let (hook, runs) = echo_hook(&w.sb);
    let hook = hook.to_str().unwrap();
    w.start_armed(
        &[
            "daemon",
            "start",
            "--task",
            "t",
            "--as",
            "agent-1",
            "--reply",
            "--on-message",
            hook,
        ],
        "daemon-after-reply-sent",
    );
    w.api.send(&w.human, "human-1", "agent-1", "q1").await;
    // The relay took the reply; the daemon died before it could note that.
    daemon_gone(&w.sb, "t");
    assert_eq!(w.replies().await, ["answer: q1"]);
    let st = state_of(&w.sb, "t");
    assert_eq!(st["outbox"].as_array().map(Vec::len), Some(1), "{st}");
    assert_eq!(
        st["hook_seq"],
        json!(1),
        "the hook's run was done before the reply: {st}"
    );

    // Started again (no failpoint): it sends the outbox again, and the relay keeps one.
    ok(&gw(&w.sb, &["daemon", "start", "--task", "t"]));
    wait_for(Duration::from_secs(30), "the outbox to drain", || {
        (status(&w.sb, "t")["outbox"] == json!(0)).then_some(())
    });
    assert_eq!(
        w.replies().await,
        ["answer: q1"],
        "the reply was sent twice"
    );
    assert_eq!(lines_of(&runs), ["q1"], "the finished hook ran again");

    // And it goes on answering normally.
    w.api.send(&w.human, "human-1", "agent-1", "q2").await;
    wait_for(Duration::from_secs(30), "the second answer", || {
        (lines_of(&runs).len() == 2).then_some(())
    });
    wait_for(Duration::from_secs(30), "the second reply", || {
        (block_on(w.replies()).len() == 2).then_some(())
    });
    assert_eq!(w.replies().await, ["answer: q1", "answer: q2"]);
    ok(&gw(&w.sb, &["daemon", "stop", "--task", "t"]));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_crash_before_the_hook_is_recorded_runs_it_again_and_replies_once() {
    let w = World::new().await;
    let (hook, runs) = echo_hook(&w.sb);
    let hook = hook.to_str().unwrap();
    w.start_armed(
        &[
            "daemon",
            "start",
            "--task",
            "t",
            "--as",
            "agent-1",
            "--reply",
            "--on-message",
            hook,
        ],
        "daemon-before-hook-done",
    );
    w.api.send(&w.human, "human-1", "agent-1", "q1").await;
    daemon_gone(&w.sb, "t");
    assert_eq!(lines_of(&runs), ["q1"]);
    assert!(
        w.replies().await.is_empty(),
        "nothing was sent before the run was recorded"
    );

    ok(&gw(&w.sb, &["daemon", "start", "--task", "t"]));
    wait_for(Duration::from_secs(30), "the reply", || {
        (!block_on(w.replies()).is_empty()).then_some(())
    });
    wait_for(Duration::from_secs(30), "the outbox to drain", || {
        (status(&w.sb, "t")["outbox"] == json!(0)).then_some(())
    });
    // At least once for the hook (it had not been recorded), exactly once for the reply.
    assert_eq!(lines_of(&runs), ["q1", "q1"]);
    assert_eq!(w.replies().await, ["answer: q1"]);
    ok(&gw(&w.sb, &["daemon", "stop", "--task", "t"]));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_crash_between_inbox_and_cursor_neither_loses_nor_doubles() {
    let w = World::new().await;
    w.start_armed(
        &["daemon", "start", "--task", "t", "--as", "agent-1"],
        "daemon-after-inbox-append",
    );
    w.api.send(&w.human, "human-1", "agent-1", "m1").await;
    daemon_gone(&w.sb, "t");
    let st = state_of(&w.sb, "t");
    assert_eq!(inbox_records(&w.sb, "t").len(), 1);
    assert_ne!(
        st["cursor_seq"],
        json!(1),
        "the crash came before the cursor moved: {st}"
    );
    ok(&gw(&w.sb, &["daemon", "start", "--task", "t"]));
    w.api.send(&w.human, "human-1", "agent-1", "m2").await;
    wait_for(Duration::from_secs(30), "m2 in the inbox", || {
        (inbox_records(&w.sb, "t").len() >= 2).then_some(())
    });
    let texts: Vec<String> = inbox_records(&w.sb, "t")
        .iter()
        .map(|r| r["text"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(texts, ["m1", "m2"]);
    ok(&gw(&w.sb, &["daemon", "stop", "--task", "t"]));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_task_moved_to_another_identity_keeps_every_message_of_the_new_one() {
    let w = World::new().await;
    let sb = &w.sb;
    w.persona("second@example.com", "agent-2");
    ok(&gw(
        sb,
        &["daemon", "start", "--task", "t", "--as", "agent-1"],
    ));
    for i in 0..5 {
        w.api
            .send(&w.human, "human-1", "agent-1", &format!("for one {i}"))
            .await;
    }
    wait_for(Duration::from_secs(30), "five records", || {
        (inbox_records(sb, "t").len() == 5).then_some(())
    });
    ok(&gw(sb, &["daemon", "stop", "--task", "t"]));

    // The same task as another identity: it starts at that identity's claim…
    ok(&gw(
        sb,
        &["daemon", "start", "--task", "t", "--as", "agent-2"],
    ));
    wait_for(
        Duration::from_secs(30),
        "the daemon to run as agent-2",
        || {
            let st = status(sb, "t");
            (st["chat_address"] == json!("agent-2") && st["phase"] == json!("running"))
                .then_some(())
        },
    );
    ok(&gw(sb, &["daemon", "stop", "--task", "t"]));
    // …and messages queued for it while nothing listened all arrive at the next start (the old
    // catch-up jumped its cursor to the first identity's and skipped them).
    for i in 0..3 {
        w.api
            .send(&w.human, "human-1", "agent-2", &format!("for two {i}"))
            .await;
    }
    ok(&gw(sb, &["daemon", "start", "--task", "t"]));
    wait_for(Duration::from_secs(30), "eight records", || {
        (inbox_records(sb, "t").len() == 8).then_some(())
    });
    let texts: Vec<String> = inbox_records(sb, "t")[5..]
        .iter()
        .map(|r| r["text"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(texts, ["for two 0", "for two 1", "for two 2"]);
    ok(&gw(sb, &["daemon", "stop", "--task", "t"]));
}
