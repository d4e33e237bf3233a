//! The daemon as a user runs it: real relay and daemon processes, isolated HOME/XDG dirs, hook
//! programs that are small shell scripts standing in for a model runner.

mod common;

use std::collections::HashMap;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::{Output, Stdio};
use std::time::Duration;

use common::world::World;
use common::*;
use serde_json::{Value, json};

impl World {
    fn start(&self, task: &str, extra: &[&str]) -> Output {
        let mut args = vec!["daemon", "start", "--task", task, "--as", "agent-1"];
        args.extend_from_slice(extra);
        gw(&self.sb, &args)
    }

    fn daemon_pid(&self, task: &str) -> u32 {
        status(&self.sb, task)["pid"].as_u64().expect("daemon pid") as u32
    }

    /// The human's view of the agent in the directory.
    async fn agent_entry(&self) -> Value {
        let (_, v) = self
            .api
            .get("/api/v1/webchat/directory?q=agent-1", Some(&self.human))
            .await;
        v["results"][0].clone()
    }
}

fn wait_inbox(sb: &Sandbox, task: &str, n: usize) -> Vec<Value> {
    wait_for(
        Duration::from_secs(60),
        &format!("{n} inbox records"),
        || {
            let r = inbox_records(sb, task);
            (r.len() >= n).then_some(r)
        },
    )
}

fn wait_lines(path: &Path, n: usize, what: &str) -> Vec<String> {
    wait_for(Duration::from_secs(60), what, || {
        let l = lines_of(path);
        (l.len() >= n).then_some(l)
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn start_status_stop_and_presence() {
    let w = World::new().await;
    let sb = &w.sb;
    let log = sb.path().join("hook.log");
    let hook = script(
        sb,
        "hook.sh",
        &format!(
            "cat >/dev/null; echo \"$GTS_WEBCHAT_TEXT\" >> {}",
            log.display()
        ),
    );
    let out = ok(&w.start("t1", &["--on-message", hook.to_str().unwrap()]));
    assert!(
        out.contains("inbox:") && out.contains("inbox.jsonl"),
        "{out}"
    );
    assert!(out.contains("socket:") && out.contains("t1.sock"), "{out}");

    let st = status(sb, "t1");
    assert_eq!(st["running"], json!(true));
    assert_eq!(st["phase"], json!("running"));
    assert_eq!(st["chat_address"], json!("agent-1"));
    assert_eq!(st["relay"], json!(w.relay.url));
    assert!(st["pid"].as_u64().unwrap() > 0);
    assert_eq!(st["version"], json!(env!("CARGO_PKG_VERSION")));
    assert!(st["uptime_secs"].is_number());
    wait_for(Duration::from_secs(10), "presence online", || {
        (block_on(w.agent_entry())["online"] == json!(true)).then_some(())
    });
    let text = ok(&gw(sb, &["daemon", "status", "--task", "t1"]));
    assert!(
        text.contains("running") && text.contains("agent-1"),
        "{text}"
    );

    // A second start says so, and exits 7.
    let again = w.start("t1", &[]);
    assert_eq!(again.status.code(), Some(7), "{}", err(&again));
    assert!(err(&again).contains("already running"));

    // Messages reach the hook; `send --task` goes out through the daemon.
    w.tell("agent-1", "hi daemon").await;
    wait_lines(&log, 1, "the hook to run");
    let sent = ok(&gw(
        sb,
        &[
            "send",
            "--task",
            "t1",
            "--to",
            "human-1",
            "--message",
            "via the daemon",
            "--json",
        ],
    ));
    let sent: Value = serde_json::from_str(sent.trim()).unwrap();
    let v = w.api.poll(&w.human, json!({"after": "0"})).await;
    let got = events_of(&v, "message");
    assert_eq!(got[0]["message_id"], sent["message_id"]);
    assert_eq!(got[0]["from"], json!("agent-1"));

    // daemon list shows it.
    let list = ok(&gw(sb, &["daemon", "list"]));
    assert!(list.contains("t1") && list.contains("running"), "{list}");

    w.stop("t1");
    let o = gw(sb, &["daemon", "status", "--task", "t1"]);
    assert_eq!(o.status.code(), Some(6), "{}", err(&o));
    assert!(String::from_utf8_lossy(&o.stdout).contains("not running"));
    assert_eq!(
        w.agent_entry().await["online"],
        json!(false),
        "offline at stop"
    );
    let o = gw(sb, &["daemon", "stop", "--task", "t1"]);
    assert_eq!(o.status.code(), Some(6));

    // Saved settings: a bare start runs it the same way again.
    ok(&gw(sb, &["daemon", "start", "--task", "t1"]));
    w.tell("agent-1", "second life").await;
    wait_lines(&log, 2, "the hook after restart");
    assert_eq!(lines_of(&log), vec!["hi daemon", "second life"]);

    // pause holds hooks while messages keep arriving; resume runs them.
    ok(&gw(sb, &["daemon", "pause", "--task", "t1"]));
    assert_eq!(status(sb, "t1")["hooks_paused"], json!(true));
    w.tell("agent-1", "while paused").await;
    wait_for(
        Duration::from_secs(15),
        "the message to wait in the queue",
        || (status(sb, "t1")["queue_depth"] == json!(1)).then_some(()),
    );
    assert_eq!(lines_of(&log).len(), 2, "no hook ran while paused");
    ok(&gw(sb, &["daemon", "resume", "--task", "t1"]));
    wait_lines(&log, 3, "the held hook after resume");

    // restart: a new process, same settings.
    let before = w.daemon_pid("t1");
    let out = ok(&gw(sb, &["daemon", "restart", "--task", "t1"]));
    assert!(out.contains("started"), "{out}");
    assert_ne!(w.daemon_pid("t1"), before);
    w.tell("agent-1", "after restart").await;
    wait_lines(&log, 4, "the hook after restart");
    w.stop("t1");

    // The daemon's logs never hold the session token.
    let persona: Value = serde_json::from_slice(
        &std::fs::read(
            sb.path()
                .join("config/gts-webchat/personas/agent@example.com.json"),
        )
        .unwrap(),
    )
    .unwrap();
    let token = persona["token"]
        .as_str()
        .unwrap()
        .trim_start_matches("pct_")
        .to_string();
    let logs: String = std::fs::read_dir(task_dir(sb, "t1").join("logs"))
        .unwrap()
        .flatten()
        .map(|e| std::fs::read_to_string(e.path()).unwrap_or_default())
        .collect();
    assert!(logs.contains("hook finished"), "the log records hook runs");
    assert!(
        !logs.contains(&token),
        "a session token reached the daemon log"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_hundred_messages_two_hundred_hook_runs_in_order() {
    let w = World::new().await;
    let sb = &w.sb;
    let log = sb.path().join("runs.log");
    // Checks stdin is the record (one JSON line) and the env matches it.
    let hook = script(
        sb,
        "hook.sh",
        &format!(
            r#"line=$(cat)
case "$line" in *"\"message_id\":\"$GTS_WEBCHAT_MESSAGE_ID\""*) ;; *) echo "stdin mismatch" >&2; exit 1;; esac
[ "$GTS_WEBCHAT_TASK" = bulk ] && [ "$GTS_WEBCHAT_FROM" = human-1 ] && [ "$GTS_WEBCHAT_FROM_KIND" = human ] \
  && [ "$GTS_WEBCHAT_CHAT_ADDRESS" = agent-1 ] && [ -f "$GTS_WEBCHAT_INBOX" ] && [ -n "$GTS_WEBCHAT_RELAY" ] || exit 1
echo "$GTS_WEBCHAT_TEXT" >> {}"#,
            log.display()
        ),
    );
    ok(&w.start("bulk", &["--on-message", hook.to_str().unwrap()]));
    let mut expect = Vec::new();
    for i in 0..200 {
        let t = format!("m{i:03}");
        w.tell("agent-1", &t).await;
        expect.push(t);
    }
    let runs = wait_lines(&log, 200, "200 hook runs");
    assert_eq!(runs, expect, "hook runs in order, once each");
    let inbox = inbox_records(sb, "bulk");
    assert_eq!(inbox.len(), 200);
    let texts: Vec<&str> = inbox.iter().map(|r| r["text"].as_str().unwrap()).collect();
    assert_eq!(texts, expect.iter().map(String::as_str).collect::<Vec<_>>());
    for (i, r) in inbox.iter().enumerate() {
        assert_eq!(r["seq"], json!(i + 1));
        for field in [
            "message_id",
            "from",
            "from_name",
            "from_kind",
            "to",
            "text",
            "created_at",
            "type",
            "reply_to",
            "attachments",
        ] {
            assert!(r.get(field).is_some(), "{field} missing in {r}");
        }
    }
    let st = status(sb, "bulk");
    assert_eq!(st["queue_depth"], json!(0));
    assert_eq!(st["inbox_records"], json!(200));
    assert!(st["dead_letters"].as_array().unwrap().is_empty());
    w.stop("bulk");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_9_mid_stream_loses_and_doubles_nothing() {
    let w = World::new().await;
    let sb = &w.sb;
    let log = sb.path().join("marks.log");
    let hook = script(
        sb,
        "hook.sh",
        &format!(
            "cat >/dev/null\necho \"start $GTS_WEBCHAT_TEXT\" >> {l}\necho \"end $GTS_WEBCHAT_TEXT\" >> {l}",
            l = log.display()
        ),
    );
    ok(&w.start("crash", &["--on-message", hook.to_str().unwrap()]));
    let total = 120;
    // A sender keeps writing while the daemon is killed and restarted.
    let sender = {
        let api = w.api.clone();
        let human = w.human.clone();
        tokio::spawn(async move {
            for i in 0..total {
                api.send(&human, "human-1", "agent-1", &format!("k{i:03}"))
                    .await;
            }
        })
    };
    wait_for(Duration::from_secs(60), "40 hooks to finish", || {
        (lines_of(&log)
            .iter()
            .filter(|l| l.starts_with("end"))
            .count()
            >= 40)
            .then_some(())
    });
    let pid = w.daemon_pid("crash");
    signal(pid, "KILL");
    wait_for(Duration::from_secs(10), "the daemon to die", || {
        (!Path::new(&format!("/proc/{pid}")).exists()).then_some(())
    });
    // What the daemon had recorded as finished when it died.
    let state: Value =
        serde_json::from_slice(&std::fs::read(task_dir(sb, "crash").join("state.json")).unwrap())
            .unwrap();
    let finished = state["hook_seq"].as_u64().unwrap();
    assert!(finished >= 39, "hook progress was saved: {state}");

    // Start again (a stale socket and lock were left behind).
    ok(&gw(sb, &["daemon", "start", "--task", "crash"]));
    sender.await.unwrap();
    let inbox = wait_inbox(sb, "crash", total);
    wait_for(Duration::from_secs(60), "every hook to finish", || {
        let ends: std::collections::HashSet<String> = lines_of(&log)
            .iter()
            .filter_map(|l| l.strip_prefix("end ").map(str::to_string))
            .collect();
        (ends.len() >= total).then_some(())
    });

    // The inbox: every message exactly once, in order.
    let texts: Vec<String> = inbox
        .iter()
        .map(|r| r["text"].as_str().unwrap().to_string())
        .collect();
    let want: Vec<String> = (0..total).map(|i| format!("k{i:03}")).collect();
    assert_eq!(texts, want);
    let seqs: Vec<u64> = inbox.iter().map(|r| r["seq"].as_u64().unwrap()).collect();
    assert_eq!(seqs, (1..=total as u64).collect::<Vec<_>>());

    // Hooks: a finished one never runs again; at most the one interrupted runs twice.
    let mut starts: HashMap<String, usize> = HashMap::new();
    for l in lines_of(&log) {
        if let Some(t) = l.strip_prefix("start ") {
            *starts.entry(t.to_string()).or_default() += 1;
        }
    }
    for (i, t) in want.iter().enumerate() {
        let n = starts.get(t).copied().unwrap_or(0);
        assert!(n >= 1, "{t} never ran");
        if (i as u64) < finished {
            assert_eq!(n, 1, "{t} finished before the crash but ran again");
        }
    }
    let doubled = starts.values().filter(|&&n| n > 1).count();
    assert!(doubled <= 1, "{doubled} hooks ran twice");
    w.stop("crash");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failing_hook_retries_then_dead_letters_and_retry_runs_it_again() {
    let w = World::new().await;
    let sb = &w.sb;
    let attempts = sb.path().join("attempts.log");
    let fixed = sb.path().join("fixed");
    let hook = script(
        sb,
        "hook.sh",
        &format!(
            "cat >/dev/null\necho \"$GTS_WEBCHAT_TEXT $GTS_WEBCHAT_ATTEMPT\" >> {a}\n[ -e {f} ] && exit 0\necho 'model runner crashed' >&2\nexit 3",
            a = attempts.display(),
            f = fixed.display()
        ),
    );
    ok(&w.start(
        "fail",
        &[
            "--on-message",
            hook.to_str().unwrap(),
            "--max-attempts",
            "2",
        ],
    ));
    let mid = w.tell("agent-1", "doomed").await;
    let st = wait_for(Duration::from_secs(30), "a dead letter", || {
        let st = status(sb, "fail");
        (!st["dead_letters"]
            .as_array()
            .map(|d| d.is_empty())
            .unwrap_or(true))
        .then_some(st)
    });
    assert_eq!(lines_of(&attempts), vec!["doomed 1", "doomed 2"]);
    let dead = &st["dead_letters"][0];
    assert_eq!(dead["record"]["message_id"], json!(mid));
    assert_eq!(dead["attempts"], json!(2));
    assert!(
        dead["error"].as_str().unwrap().contains("status 3"),
        "{dead}"
    );
    assert!(
        dead["error"]
            .as_str()
            .unwrap()
            .contains("model runner crashed"),
        "{dead}"
    );
    assert_eq!(st["last_hook"]["ok"], json!(false));
    // The queue moved on: a later message is handled.
    std::fs::write(&fixed, "").unwrap();
    w.tell("agent-1", "next").await;
    wait_for(Duration::from_secs(30), "the next message", || {
        lines_of(&attempts)
            .contains(&"next 1".to_string())
            .then_some(())
    });
    let text = ok(&gw(sb, &["daemon", "status", "--task", "fail"]));
    assert!(text.contains("dead letters: 1"), "{text}");

    // retry: runs the dead letter again; it succeeds now and leaves the list.
    let out = ok(&gw(sb, &["daemon", "retry", "--task", "fail"]));
    assert!(out.contains("1 dead letter"), "{out}");
    wait_for(Duration::from_secs(30), "the dead letter to clear", || {
        status(sb, "fail")["dead_letters"]
            .as_array()
            .is_some_and(|d| d.is_empty())
            .then_some(())
    });
    assert!(lines_of(&attempts).contains(&"doomed 1".to_string()));
    assert_eq!(lines_of(&attempts).last().unwrap(), "doomed 1");
    // Every attempt counted: doomed ×2 (failed), next, the retried doomed.
    let st = status(sb, "fail");
    assert_eq!(
        (st["hook_runs"].as_u64(), st["hook_failures"].as_u64()),
        (Some(4), Some(2)),
        "{st}"
    );
    let text = ok(&gw(sb, &["daemon", "status", "--task", "fail"]));
    assert!(text.contains("hook runs:    4 (2 failed)"), "{text}");
    w.stop("fail");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hook_ignoring_term_is_killed_with_its_children() {
    let w = World::new().await;
    let sb = &w.sb;
    let pids = sb.path().join("pids");
    let hook = script(
        sb,
        "stubborn.sh",
        &format!(
            "trap '' TERM\nsleep 300 &\necho $! >> {p}\necho $$ >> {p}\nwait",
            p = pids.display()
        ),
    );
    ok(&w.start(
        "stuck",
        &[
            "--on-message",
            hook.to_str().unwrap(),
            "--hook-timeout",
            "1",
            "--max-attempts",
            "1",
        ],
    ));
    w.tell("agent-1", "hang").await;
    let both = wait_lines(&pids, 2, "the hook and its child to start");
    let alive = |p: &str| {
        Path::new(&format!("/proc/{p}")).exists()
            && !std::fs::read_to_string(format!("/proc/{p}/stat"))
                .unwrap_or_default()
                .contains(") Z ")
    };
    assert!(both.iter().all(|p| alive(p)));
    wait_for(
        Duration::from_secs(30),
        "hook and child to be killed",
        || both.iter().all(|p| !alive(p)).then_some(()),
    );
    let st = wait_for(Duration::from_secs(10), "the dead letter", || {
        let st = status(sb, "stuck");
        (st["dead_letters"].as_array().map(|d| d.len()) == Some(1)).then_some(st)
    });
    assert!(
        st["dead_letters"][0]["error"]
            .as_str()
            .unwrap()
            .contains("timed out"),
        "{st}"
    );
    w.stop("stuck");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn coalesce_batches_what_arrived_while_busy_and_presence_says_working() {
    let w = World::new().await;
    let sb = &w.sb;
    let log = sb.path().join("batches.log");
    let go = sb.path().join("go");
    let hook = script(
        sb,
        "hook.sh",
        &format!(
            r#"n=$(wc -l)
echo "$GTS_WEBCHAT_BATCH_COUNT $n $GTS_WEBCHAT_TEXT" >> {l}
if [ "$GTS_WEBCHAT_TEXT" = slow ]; then while [ ! -e {g} ]; do sleep 0.02; done; fi"#,
            l = log.display(),
            g = go.display()
        ),
    );
    ok(&w.start(
        "co",
        &[
            "--on-message",
            hook.to_str().unwrap(),
            "--on-busy",
            "coalesce",
        ],
    ));
    w.tell("agent-1", "slow").await;
    wait_lines(&log, 1, "the slow hook to start");
    wait_for(Duration::from_secs(15), "presence status working", || {
        (block_on(w.agent_entry())["status"] == json!("working")).then_some(())
    });
    for i in 1..=5 {
        w.tell("agent-1", &format!("b{i}")).await;
    }
    wait_for(Duration::from_secs(15), "five to wait in the queue", || {
        (status(sb, "co")["queue_depth"] == json!(5)).then_some(())
    });
    let st = status(sb, "co");
    assert!(st["running_hook"].is_object(), "{st}");
    std::fs::write(&go, "").unwrap();
    let runs = wait_lines(&log, 2, "the coalesced run");
    assert_eq!(
        runs,
        vec!["1 1 slow", "5 5 b5"],
        "one run for the five, all on stdin"
    );
    wait_for(Duration::from_secs(15), "presence status cleared", || {
        let e = block_on(w.agent_entry());
        (e["status"].is_null() && e["online"] == json!(true)).then_some(())
    });
    w.stop("co");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reply_round_trip_and_loop_guard_between_two_daemons() {
    let w = World::new().await;
    let sb = &w.sb;
    let echo = script(
        sb,
        "echo.sh",
        "cat >/dev/null\nprintf 'echo: %s\\n' \"$GTS_WEBCHAT_TEXT\"",
    );
    ok(&w.start("echo", &["--on-message", echo.to_str().unwrap(), "--reply"]));
    let mid = w.tell("agent-1", "ping").await;
    let reply = wait_for(Duration::from_secs(30), "the reply", || {
        let v = block_on(w.api.poll(&w.human, json!({"after": "0"})));
        events_of(&v, "message").first().cloned()
    });
    assert_eq!(reply["text"], json!("echo: ping"));
    assert_eq!(reply["reply_to"], json!(mid));
    assert_eq!(reply["from"], json!("agent-1"));
    // The hook finished, so the human's message shows as read by the agent.
    let receipt = wait_for(Duration::from_secs(30), "the read receipt", || {
        let v = block_on(w.api.poll(&w.human, json!({"after": "0"})));
        events_of(&v, "read").first().cloned()
    });
    assert_eq!(receipt["message_id"], json!(mid));
    assert_eq!(receipt["from"], json!("agent-1"));
    w.stop("echo");

    // Two agents replying to each other stop at the loop guard (3 per window here).
    w.persona("other@example.com", "agent-2");
    ok(&gw(
        sb,
        &[
            "daemon",
            "start",
            "--task",
            "a",
            "--as",
            "agent-1",
            "--reply-limit",
            "3",
            "--on-message",
            echo.to_str().unwrap(),
            "--reply",
        ],
    ));
    ok(&gw(
        sb,
        &[
            "daemon",
            "start",
            "--task",
            "b",
            "--as",
            "agent-2",
            "--reply-limit",
            "3",
            "--on-message",
            echo.to_str().unwrap(),
            "--reply",
        ],
    ));
    ok(&gw(
        sb,
        &[
            "send",
            "--task",
            "a",
            "--to",
            "agent-2",
            "--message",
            "start",
        ],
    ));
    // Quiet when both guards are engaged and nothing is queued or running.
    wait_for(
        Duration::from_secs(60),
        "both loop guards to engage",
        || {
            let (a, b) = (status(sb, "a"), status(sb, "b"));
            let quiet = |s: &Value| s["queue_depth"] == json!(0) && s["running_hook"].is_null();
            (a["loop_guarded"] == json!(["agent-2"])
                && b["loop_guarded"] == json!(["agent-1"])
                && quiet(&a)
                && quiet(&b))
            .then_some(())
        },
    );
    // Count what each received: a→b = start + 3 replies + 1 notice; b→a = 3 replies + 1 notice.
    let a_in = inbox_records(sb, "a");
    let b_in = inbox_records(sb, "b");
    let msgs = |v: &[Value]| v.iter().filter(|r| r["type"] == json!("message")).count();
    assert_eq!(msgs(&b_in), 5, "{b_in:#?}");
    assert_eq!(msgs(&a_in), 4, "{a_in:#?}");
    let last_text = |v: &[Value]| {
        v.iter()
            .rev()
            .find(|r| r["type"] == json!("message"))
            .and_then(|r| r["text"].as_str())
            .unwrap_or_default()
            .to_string()
    };
    assert!(last_text(&a_in).contains("loop guard"));
    assert!(last_text(&b_in).contains("loop guard"));
    let log = std::fs::read_dir(task_dir(sb, "a").join("logs"))
        .unwrap()
        .flatten()
        .map(|e| std::fs::read_to_string(e.path()).unwrap_or_default())
        .collect::<String>();
    assert!(log.contains("loop guard"), "the log says why");
    ok(&gw(sb, &["daemon", "stop", "--task", "a"]));
    ok(&gw(sb, &["daemon", "stop", "--task", "b"]));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn socket_permissions_stale_socket_concurrent_starts_and_bad_settings() {
    let w = World::new().await;
    let sb = &w.sb;
    ok(&w.start("s", &[]));
    let sock_dir = sb.path().join("run/gts-webchat");
    let sock = sock_dir.join("s.sock");
    assert_eq!(
        std::fs::metadata(&sock_dir).unwrap().permissions().mode() & 0o777,
        0o700
    );
    assert_eq!(
        std::fs::metadata(&sock).unwrap().permissions().mode() & 0o777,
        0o600
    );

    // kill -9 leaves the socket behind; the next start cleans it up.
    let pid = w.daemon_pid("s");
    signal(pid, "KILL");
    wait_for(Duration::from_secs(10), "the daemon to die", || {
        (!Path::new(&format!("/proc/{pid}")).exists()).then_some(())
    });
    assert!(sock.exists(), "a killed daemon leaves its socket");
    let o = gw(sb, &["daemon", "status", "--task", "s"]);
    assert_eq!(o.status.code(), Some(6));
    ok(&gw(sb, &["daemon", "start", "--task", "s"]));
    assert_eq!(status(sb, "s")["phase"], json!("running"));
    w.stop("s");

    // Two starts at once: exactly one wins.
    let spawn = || {
        sb.cmd()
            .args(["daemon", "start", "--task", "race", "--as", "agent-1"])
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap()
    };
    let (a, b) = (spawn(), spawn());
    let (a, b) = (a.wait_with_output().unwrap(), b.wait_with_output().unwrap());
    let mut codes = vec![a.status.code(), b.status.code()];
    codes.sort();
    assert_eq!(
        codes,
        vec![Some(0), Some(7)],
        "a: {} b: {}",
        err(&a),
        err(&b)
    );
    w.stop("race");

    // Bad settings fail at start, with a clear message and exit 2.
    let not_exec = sb.path().join("plain.txt");
    std::fs::write(&not_exec, "echo").unwrap();
    let o = w.start("bad1", &["--on-message", not_exec.to_str().unwrap()]);
    assert_eq!(o.status.code(), Some(2), "{}", err(&o));
    assert!(err(&o).contains("not executable"), "{}", err(&o));
    let o = w.start("bad2", &["--on-message", "/no/such/hook"]);
    assert_eq!(o.status.code(), Some(2), "{}", err(&o));
    let o = gw(
        sb,
        &["daemon", "start", "--task", "bad3", "--as", "nobody-here"],
    );
    assert_eq!(o.status.code(), Some(2), "{}", err(&o));
    assert!(err(&o).contains("no local persona"), "{}", err(&o));
    let o = gw(
        sb,
        &[
            "daemon",
            "start",
            "--task",
            "bad4",
            "x@example.com",
            "--relay",
            "not a url",
        ],
    );
    assert_eq!(o.status.code(), Some(2), "{}", err(&o));
    assert!(err(&o).contains("relay URL"), "{}", err(&o));
    let o = gw(
        sb,
        &["daemon", "start", "--task", "../evil", "--as", "agent-1"],
    );
    assert_eq!(o.status.code(), Some(2), "{}", err(&o));
    let o = gw(sb, &["daemon", "start", "--task", "nothing-saved"]);
    assert_eq!(o.status.code(), Some(2), "{}", err(&o));
    // A daemon of another protocol version is named as such.
    let fake_sock = sock_dir.join("old.sock");
    std::fs::create_dir_all(task_dir(sb, "old")).unwrap();
    let listener = std::os::unix::net::UnixListener::bind(&fake_sock).unwrap();
    std::thread::spawn(move || {
        use std::io::{Read, Write};
        if let Ok((mut s, _)) = listener.accept() {
            let mut buf = [0u8; 4096];
            let _ = s.read(&mut buf);
            let body = r#"{"protocol":999,"ok":true}"#;
            let _ = write!(
                s,
                "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
                body.len()
            );
        }
    });
    let o = gw(sb, &["daemon", "status", "--task", "old"]);
    assert!(
        err(&o).contains("protocol 999") && err(&o).contains("daemon restart --task old"),
        "{}",
        err(&o)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unreachable_relay_does_not_stop_the_daemon() {
    let sb = Sandbox::new();
    let port = free_port().to_string();
    let url = format!("http://127.0.0.1:{port}");
    let log = sb.path().join("hook.log");
    let hook = script(
        &sb,
        "hook.sh",
        &format!(
            "cat >/dev/null; echo \"$GTS_WEBCHAT_TEXT\" >> {}",
            log.display()
        ),
    );
    let out = ok(&gw(
        &sb,
        &[
            "daemon",
            "start",
            "--task",
            "late",
            "late@example.com",
            "--name",
            "Late",
            "--chat-address",
            "late-agent",
            "--relay",
            &url,
            "--on-message",
            hook.to_str().unwrap(),
        ],
    ));
    assert!(out.contains("relay unreachable"), "{out}");
    let st = status(&sb, "late");
    assert_eq!(st["running"], json!(true));
    assert!(
        st["problem"].as_str().unwrap().contains("unreachable"),
        "{st}"
    );

    // The relay comes up on that port; the daemon logs in by itself and receives.
    let relay = Relay::start_args(&sb, &["--port", &port], &[]);
    let api = relay.api();
    let human = api.login("h@example.com", "hum", "human").await;
    wait_for(Duration::from_secs(60), "the daemon to log in", || {
        let st = status(&sb, "late");
        (st["problem"].is_null() && st["chat_address"] == json!("late-agent")).then_some(())
    });
    api.send(&human, "hum", "late-agent", "finally").await;
    assert_eq!(wait_lines(&log, 1, "the hook"), vec!["finally"]);
    ok(&gw(&sb, &["daemon", "stop", "--task", "late"]));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tail_n_and_follow() {
    let w = World::new().await;
    let sb = &w.sb;
    ok(&w.start("tl", &[]));
    for t in ["one", "two", "three"] {
        w.tell("agent-1", t).await;
    }
    wait_inbox(sb, "tl", 3);
    let out = ok(&gw(sb, &["tail", "--task", "tl", "-n", "2"]));
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(lines.len(), 2, "{out}");
    assert!(lines[0].contains("two") && lines[1].contains("three"));
    assert!(
        lines[1].contains("human-1 (human-1)") || lines[1].contains("(human-1)"),
        "{out}"
    );
    let out = ok(&gw(sb, &["tail", "--task", "tl", "--json", "-n", "1"]));
    let rec: Value = serde_json::from_str(out.trim()).unwrap();
    assert_eq!(rec["text"], json!("three"));

    let follow = Background::start(sb, ["tail", "--task", "tl", "-f", "-n", "1"], "tail");
    // Its first read is done once the newest record is printed; anything later is followed.
    follow.expect_line("three", Duration::from_secs(20));
    w.tell("agent-1", "four").await;
    let line = follow.expect_line("four", Duration::from_secs(20));
    assert!(line.contains("human-1"));
    w.tell("agent-1", "five").await;
    follow.expect_line("five", Duration::from_secs(20));
    drop(follow);
    let o = gw(sb, &["tail", "--task", "never-started"]);
    assert_eq!(o.status.code(), Some(5));
    w.stop("tl");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn install_writes_the_unit_and_enables_it() {
    let w = World::new().await;
    let sb = &w.sb;
    ok(&w.start("svc", &[]));
    // A stand-in systemctl records how it was called (there is no user systemd here).
    let bin = sb.path().join("bin");
    std::fs::create_dir_all(&bin).unwrap();
    let calls = sb.path().join("systemctl.calls");
    let fake = bin.join("systemctl");
    std::fs::write(
        &fake,
        format!("#!/bin/sh\necho \"$*\" >> {}\n", calls.display()),
    )
    .unwrap();
    std::fs::set_permissions(&fake, std::fs::Permissions::from_mode(0o755)).unwrap();
    let path = format!(
        "{}:{}",
        bin.display(),
        std::env::var("PATH").unwrap_or_default()
    );
    let o = sb
        .cmd()
        .env("PATH", &path)
        .args(["daemon", "install", "--task", "svc"])
        .output()
        .unwrap();
    let out = ok(&o);
    assert!(
        out.contains("gts-webchat@svc.service") && out.contains("enable-linger"),
        "{out}"
    );
    let unit = std::fs::read_to_string(sb.path().join("config/systemd/user/gts-webchat@.service"))
        .unwrap();
    assert!(
        unit.contains(&format!("ExecStart={BIN} daemon run --task %i")),
        "{unit}"
    );
    assert_eq!(
        lines_of(&calls),
        vec![
            "--user daemon-reload",
            "--user enable --now gts-webchat@svc.service"
        ]
    );
    // The hand-started daemon was stopped so the service manager can own the task.
    assert_eq!(
        gw(sb, &["daemon", "status", "--task", "svc"]).status.code(),
        Some(6)
    );
    let o = sb
        .cmd()
        .env("PATH", &path)
        .args(["daemon", "uninstall", "--task", "svc"])
        .output()
        .unwrap();
    ok(&o);
    assert!(lines_of(&calls).contains(&"--user disable --now gts-webchat@svc.service".to_string()));
    assert!(
        !sb.path()
            .join("config/systemd/user/gts-webchat@.service")
            .exists()
    );
}

/// systemd's notify protocol for `daemon run` under `Type=notify`, read from a socket of our
/// own as systemd would: READY once the control socket answers, keep-alives at half
/// WatchdogSec, none while the daemon is hung (SIGSTOP), STOPPING at shutdown; and a hook
/// never sees NOTIFY_SOCKET, so an AI host it runs cannot speak for the daemon.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn daemon_run_speaks_sd_notify_and_its_hooks_do_not_inherit_it() {
    let w = World::new().await;
    let sb = &w.sb;
    let socket = NotifySocket::bind(sb);
    let recv = |limit| socket.recv(limit);
    let seen = sb.path().join("hook-env.log");
    let hook = script(
        sb,
        "hook.sh",
        &format!(
            "cat >/dev/null\necho \"notify=${{NOTIFY_SOCKET:-unset}} watchdog=${{WATCHDOG_USEC:-unset}}\" >> {}",
            seen.display()
        ),
    );
    let mut cmd = sb.cmd();
    cmd.env("NOTIFY_SOCKET", &socket.path)
        .env("WATCHDOG_USEC", "400000");
    let daemon = Background::start_cmd(
        cmd,
        [
            "daemon",
            "run",
            "--task",
            "sd",
            "--as",
            "agent-1",
            "--on-message",
            hook.to_str().unwrap(),
        ],
        sb.path(),
        "daemon-run",
    );
    const LIMIT: Duration = Duration::from_secs(20);
    assert_eq!(recv(LIMIT).as_deref(), Some("READY=1"));
    // Ready means answering.
    assert_eq!(status(sb, "sd")["task"], "sd");
    assert_eq!(recv(LIMIT).as_deref(), Some("WATCHDOG=1"));
    assert_eq!(recv(LIMIT).as_deref(), Some("WATCHDOG=1"));

    w.tell("agent-1", "env check").await;
    let lines = wait_lines(&seen, 1, "the hook ran");
    assert_eq!(lines, vec!["notify=unset watchdog=unset"]);

    // Hung: not one keep-alive over three watchdog periods, so systemd would restart it.
    let pid = daemon.child.id();
    signal(pid, "STOP");
    while recv(Duration::from_millis(50)).is_some() {} // sent before the stop
    assert_eq!(recv(Duration::from_millis(1200)), None);
    signal(pid, "CONT");
    assert_eq!(recv(LIMIT).as_deref(), Some("WATCHDOG=1"));
    let exit = daemon.terminate();
    assert!(exit.success(), "{exit:?}");
    let mut rest = Vec::new();
    while let Some(m) = recv(Duration::from_millis(200)) {
        rest.push(m);
    }
    assert!(rest.iter().any(|m| m == "STOPPING=1"), "{rest:?}");
}

/// `gts-webchat watchdog --task T` without systemd: a hung daemon (SIGSTOP) is killed and
/// started again with its saved settings, a killed one is started again, each with the reason
/// on stderr, and the restarted daemon receives what was sent meanwhile.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_watchdog_restarts_a_hung_or_dead_daemon() {
    let w = World::new().await;
    let sb = &w.sb;
    // Never started: nothing to restart it with.
    let never = gw(sb, &["watchdog", "--task", "nobody"]);
    assert_eq!(never.status.code(), Some(2), "{}", err(&never));
    assert!(
        err(&never).contains("has never been started"),
        "{}",
        err(&never)
    );

    ok(&w.start("wd", &[]));
    let first = w.daemon_pid("wd");
    let dog = Background::start(
        sb,
        [
            "watchdog",
            "--interval",
            "0.2",
            "--timeout",
            "0.5",
            "--task",
            "wd",
        ],
        "watchdog",
    );
    dog.wait_stderr("watching the daemon for task wd");

    signal(first, "STOP");
    dog.wait_stderr("the daemon for task wd did not answer on its socket within 0.5 s twice in a row; restarting it");
    let second = wait_for(Duration::from_secs(30), "a new daemon", || {
        let st = status(sb, "wd");
        st["pid"].as_u64().filter(|p| *p as u32 != first)
    }) as u32;
    assert!(
        !Path::new(&format!("/proc/{first}/status")).exists() || {
            std::fs::read_to_string(format!("/proc/{first}/stat")).is_ok_and(|s| s.contains(") Z "))
        },
        "the hung daemon was killed"
    );

    signal(second, "KILL");
    dog.wait_stderr("the daemon for task wd is not running; restarting it");
    wait_for(Duration::from_secs(30), "a third daemon", || {
        let st = status(sb, "wd");
        st["pid"]
            .as_u64()
            .filter(|p| *p as u32 != first && *p as u32 != second)
    });
    let mid = w.tell("agent-1", "after two restarts").await;
    let got = wait_inbox(sb, "wd", 1);
    assert_eq!(got[0]["message_id"], json!(mid));
    let exit = dog.terminate();
    assert!(exit.success(), "{exit:?}");
    // The watchdog leaves the daemon running.
    assert!(status(sb, "wd")["pid"].as_u64().is_some());
    w.stop("wd");
}
