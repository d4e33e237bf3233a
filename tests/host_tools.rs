//! The real Claude Code and Codex CLIs inside a session, as a person would set them up with
//! `hosts install`: through our MCP server (registered in the host's own config) the model
//! reads a chat message and answers it with the tools; through the hooks, a Claude Code turn
//! that ends while a message waits is continued with that message. The model's API is the
//! local model server (tests/common/model.rs), which calls the tools when they are offered.

mod common;

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::hosts::{self, HostSetup};
use common::model::ModelServer;
use common::world::World;
use common::*;
use serde_json::{Value, json};

const TURN: Duration = Duration::from_secs(180);

fn available(program: &str) -> bool {
    if hosts::installed(program) {
        return true;
    }
    assert!(
        !hosts::required(),
        "{program} is not installed (GTSW_REQUIRE_HOSTS=1): run tests/hosts/install.sh"
    );
    eprintln!("skipped: {program} is not installed (tests/hosts/install.sh installs it)");
    false
}

struct Session {
    w: World,
    model: ModelServer,
    host: HostSetup,
}

impl Session {
    async fn new(preset: &str, task: &str) -> Session {
        let w = World::new().await;
        let model = ModelServer::start();
        let host = hosts::setup(preset, &w.sb, &model);
        ok(&gw(
            &w.sb,
            &["daemon", "start", "--task", task, "--as", "agent-1"],
        ));
        Session { w, model, host }
    }

    /// `gts-webchat ARGS` with the host's environment (CODEX_HOME and the like).
    fn gw(&self, args: &[&str]) -> String {
        ok(&self
            .w
            .sb
            .cmd()
            .envs(self.host.env.iter().map(|(k, v)| (k, v)))
            .args(args)
            .stdin(Stdio::null())
            .output()
            .expect("run gts-webchat"))
    }

    /// Runs the host program in the sandbox, as a person would from a terminal there.
    fn run_host(&self, program: &str, args: &[&str]) -> std::process::Output {
        let path = hosts::bin_dirs()
            .into_iter()
            .map(|d| d.join(program))
            .find(|p| p.is_file())
            .expect("host program");
        let mut cmd = Command::new(path);
        cmd.args(args)
            .envs(self.w.sb.env())
            .envs(self.host.env.iter().map(|(k, v)| (k, v)))
            .current_dir(self.w.sb.path())
            .stdin(Stdio::null());
        tokio::task::block_in_place(|| cmd.output().expect("run the host"))
    }

    /// The human's messages from agent-1, waiting until `n` arrived.
    async fn replies(&self, n: usize, what: &str) -> Vec<Value> {
        let deadline = Instant::now() + TURN;
        loop {
            let got = self
                .w
                .api
                .poll(&self.w.human, json!({"after": "0", "limit": 500}))
                .await;
            let r: Vec<Value> = got["messages"]
                .as_array()
                .unwrap()
                .iter()
                .filter(|m| m["type"] == "message" && m["from"] == "agent-1")
                .cloned()
                .collect();
            if r.len() >= n {
                return r;
            }
            assert!(
                Instant::now() < deadline,
                "{what}: no answer in the chat; model requests: {:#?}",
                self.model
                    .requests()
                    .iter()
                    .map(|r| (
                        &r.path,
                        &r.answered,
                        tail(&r.body.to_string(), 3000).to_string()
                    ))
                    .collect::<Vec<_>>()
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
}

/// The end of a long text, for failure messages.
fn tail(s: &str, n: usize) -> &str {
    let mut at = s.len().saturating_sub(n);
    while !s.is_char_boundary(at) {
        at += 1;
    }
    &s[at..]
}

fn output_text(o: &std::process::Output) -> String {
    format!(
        "exit {:?}\nstdout: {}\nstderr: {}",
        o.status.code(),
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

/// The model read the message through read_inbox (fenced, sender outside the fence) and
/// answered through send_message; the daemon counts it as taken.
async fn answered_with_tools(s: &Session, task: &str, id: &str, text: &str) {
    let replies = s.replies(1, "the MCP answer").await;
    assert_eq!(replies.len(), 1, "{replies:?}");
    assert_eq!(replies[0]["text"], format!("answer to {text}"));
    assert_eq!(replies[0]["to"], "human-1");
    assert_eq!(replies[0]["reply_to"], id);
    let reqs = s.model.requests();
    let read = reqs
        .iter()
        .find(|r| r.text.contains("chat message(s) for agent-1"))
        .expect("a request carried read_inbox's result");
    assert!(
        read.text
            .contains("From human-1 (a person, a relay account verified by email)"),
        "{}",
        read.text
    );
    assert!(reqs.iter().any(|r| r.answered.contains("send_message")));
    let st = status(&s.w.sb, task);
    let newest = inbox_records(&s.w.sb, task).last().unwrap()["seq"].clone();
    assert_eq!(st["claimed_seq"], newest, "{st}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn claude_code_answers_a_chat_message_with_the_mcp_tools() {
    if !available("claude") {
        return;
    }
    let s = Session::new("claude", "tools").await;
    let out = s.gw(&["hosts", "install", "claude", "--task", "tools", "--mcp"]);
    assert!(out.contains("--allowedTools mcp__webchat-tools"), "{out}");
    let text = "which port does the relay use?";
    let id = s.w.tell("agent-1", text).await;
    wait_for(Duration::from_secs(30), "the daemon's inbox", || {
        (!inbox_records(&s.w.sb, "tools").is_empty()).then_some(())
    });
    let o = s.run_host(
        "claude",
        &[
            "-p",
            "Read your chat inbox and answer what is waiting.",
            "--allowedTools",
            "mcp__webchat-tools",
            "--output-format",
            "text",
        ],
    );
    assert!(o.status.success(), "{}", output_text(&o));
    answered_with_tools(&s, "tools", &id, text).await;
    assert!(
        String::from_utf8_lossy(&o.stdout).contains("done: sent msg_"),
        "{}",
        output_text(&o)
    );
    s.w.stop("tools");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn codex_answers_a_chat_message_with_the_mcp_tools() {
    if !available("codex") {
        return;
    }
    let s = Session::new("codex", "tools").await;
    // Into the config.toml the person already has (CODEX_HOME): theirs stays.
    s.gw(&["hosts", "install", "codex", "--task", "tools", "--mcp"]);
    let codex_home = s.w.sb.path().join("codex-home");
    let toml = std::fs::read_to_string(codex_home.join("config.toml")).unwrap();
    assert!(toml.contains("[model_providers.local]"), "{toml}");
    assert!(toml.contains("[mcp_servers.webchat-tools]"), "{toml}");
    let text = "is the build green?";
    let id = s.w.tell("agent-1", text).await;
    wait_for(Duration::from_secs(30), "the daemon's inbox", || {
        (!inbox_records(&s.w.sb, "tools").is_empty()).then_some(())
    });
    let o = s.run_host(
        "codex",
        &[
            "exec",
            "--json",
            "--skip-git-repo-check",
            "Read your chat inbox and answer what is waiting.",
        ],
    );
    assert!(o.status.success(), "{}", output_text(&o));
    answered_with_tools(&s, "tools", &id, text).await;
    s.w.stop("tools");
    s.gw(&["hosts", "uninstall", "codex", "--task", "tools"]);
    let back = std::fs::read_to_string(codex_home.join("config.toml")).unwrap();
    assert!(!back.contains("webchat-tools"), "{back}");
    assert!(back.contains("[model_providers.local]"), "{back}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_claude_code_turn_that_ends_while_a_message_waits_is_continued_with_it() {
    if !available("claude") {
        return;
    }
    let s = Session::new("claude", "live").await;
    s.gw(&["hosts", "install", "claude", "--task", "live", "--hooks"]);
    let text = "stop and look at the failing test";
    let id = s.w.tell("agent-1", text).await;
    wait_for(Duration::from_secs(30), "the daemon's inbox", || {
        (!inbox_records(&s.w.sb, "live").is_empty()).then_some(())
    });
    // The person's own task; the chat message comes in when the turn would end.
    let o = s.run_host(
        "claude",
        &["-p", "Tidy the README.", "--output-format", "json"],
    );
    assert!(o.status.success(), "{}", output_text(&o));
    let result: Value = serde_json::from_slice(&o.stdout)
        .unwrap_or_else(|e| panic!("claude's JSON: {e}\n{}", output_text(&o)));
    assert_eq!(
        result["result"],
        format!("answer to {text}"),
        "the turn was not continued with the message: {result}"
    );
    // The model saw it fenced, with who sent it and its id outside the fence.
    let reqs = s.model.requests();
    let seen = reqs
        .iter()
        .find(|r| r.answered == format!("answer to {text}"))
        .expect("a request carried the message");
    assert!(
        seen.text.contains(&format!("[message {id}]")),
        "{}",
        seen.text
    );
    assert!(
        seen.text.contains("From human-1 (a person"),
        "{}",
        seen.text
    );
    // Continued once, then let end; the message is taken, not woken again.
    let st = status(&s.w.sb, "live");
    assert_eq!(
        st["claimed_seq"],
        inbox_records(&s.w.sb, "live")[0]["seq"],
        "{st}"
    );
    s.w.stop("live");
    s.gw(&["hosts", "uninstall", "claude", "--task", "live"]);
}
