//! Faults: processes killed at random moments, a relay outage, a full disk. Nothing that was
//! acknowledged may be lost, nothing doubled, and everything recovers by itself.

mod common;

use std::collections::{HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::*;
use serde_json::{Value, json};

fn pid_alive(pid: u32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .map(|s| !s.contains(") Z "))
        .unwrap_or(false)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn daemon_killed_20_times_during_2000_messages_loses_and_repeats_nothing() {
    let sb = Sandbox::new();
    let relay = Relay::start(&sb);
    let api = relay.api();
    let human = api.login("human@example.com", "human-1", "human").await;
    persona(&sb, &relay.url, "agent@example.com", "agent-1");
    let log = sb.path().join("marks.log");
    let hook = script(
        &sb,
        "hook.sh",
        &format!(
            "cat >/dev/null\necho \"start $GTS_WEBCHAT_TEXT\" >> {l}\necho \"end $GTS_WEBCHAT_TEXT\" >> {l}",
            l = log.display()
        ),
    );
    ok(&gw(
        &sb,
        &[
            "daemon",
            "start",
            "--task",
            "storm",
            "--as",
            "agent-1",
            "--on-message",
            hook.to_str().unwrap(),
        ],
    ));
    let total = 2000;
    let sender = {
        let api = api.clone();
        let human = human.clone();
        tokio::spawn(async move {
            for i in 0..total {
                api.send(&human, "human-1", "agent-1", &format!("k{i:04}"))
                    .await;
            }
        })
    };
    // 20 kills, each after a random amount of hook progress.
    let mut kills: Vec<(usize, u64)> = Vec::new(); // (log lines at the kill, hook_seq at the kill)
    for k in 0..20 {
        let grow = rand::random_range(10..120);
        let base = lines_of(&log).len();
        let target = (base + grow).min(total * 2);
        wait_for(
            Duration::from_secs(120),
            "hook progress before a kill",
            || (lines_of(&log).len() >= target).then_some(()),
        );
        let pid = status(&sb, "storm")["pid"].as_u64().expect("daemon pid") as u32;
        signal(pid, "KILL");
        wait_for(Duration::from_secs(10), "the daemon to die", || {
            (!pid_alive(pid)).then_some(())
        });
        let state: Value = serde_json::from_slice(
            &std::fs::read(task_dir(&sb, "storm").join("state.json")).unwrap_or_default(),
        )
        .unwrap_or(Value::Null);
        kills.push((
            lines_of(&log).len(),
            state["hook_seq"].as_u64().unwrap_or(0),
        ));
        let o = gw(&sb, &["daemon", "start", "--task", "storm"]);
        assert!(o.status.success(), "restart {k}: {}", err(&o));
    }
    sender.await.unwrap();
    let inbox = wait_for(Duration::from_secs(180), "all 2000 in the inbox", || {
        let r = inbox_records(&sb, "storm");
        (r.len() >= total).then_some(r)
    });
    wait_for(Duration::from_secs(180), "every hook to finish", || {
        let ends: HashSet<String> = lines_of(&log)
            .iter()
            .filter_map(|l| l.strip_prefix("end ").map(str::to_string))
            .collect();
        (ends.len() >= total).then_some(())
    });

    // The inbox: all 2000, exactly once, in order.
    let want: Vec<String> = (0..total).map(|i| format!("k{i:04}")).collect();
    let got: Vec<String> = inbox
        .iter()
        .map(|r| r["text"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(got.len(), total, "no duplicates");
    assert_eq!(got, want, "in order");
    let seq_of: HashMap<String, u64> = inbox
        .iter()
        .map(|r| {
            (
                r["text"].as_str().unwrap().to_string(),
                r["seq"].as_u64().unwrap(),
            )
        })
        .collect();

    // No hook that had finished ran again after any kill.
    let lines = lines_of(&log);
    for (n, (offset, finished)) in kills.iter().enumerate() {
        for l in &lines[*offset..] {
            if let Some(t) = l.strip_prefix("start ") {
                assert!(
                    seq_of[t] > *finished,
                    "kill {n}: {t} (seq {}) had finished (hook_seq {finished}) but ran again",
                    seq_of[t]
                );
            }
        }
    }
    let st = status(&sb, "storm");
    assert!(st["dead_letters"].as_array().unwrap().is_empty());
    ok(&gw(&sb, &["daemon", "stop", "--task", "storm"]));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn relay_killed_10_times_during_concurrent_sends_loses_no_acknowledged_message() {
    let sb = Sandbox::new();
    let port = free_port().to_string();
    let relay = Arc::new(Mutex::new(Relay::start_args(&sb, &["--port", &port], &[])));
    let url = relay.lock().unwrap().url.clone();
    let api = Api::new(&url);
    let mut pairs = Vec::new();
    for i in 0..4 {
        let s = api
            .login(
                &format!("s{i}@example.com"),
                &format!("sender-{i}"),
                "agent",
            )
            .await;
        let r = api
            .login(&format!("r{i}@example.com"), &format!("recv-{i}"), "human")
            .await;
        pairs.push((s, r));
    }
    let acked: Arc<Mutex<Vec<(usize, String)>>> = Arc::default();
    let stop = Arc::new(AtomicBool::new(false));
    let http = reqwest::Client::builder()
        .timeout(Duration::from_secs(10))
        .build()
        .unwrap();
    let mut senders = Vec::new();
    for (i, (s, _)) in pairs.iter().enumerate() {
        let (acked, stop, http, url, s) = (
            acked.clone(),
            stop.clone(),
            http.clone(),
            url.clone(),
            s.clone(),
        );
        senders.push(tokio::spawn(async move {
            let mut k = 0u64;
            while !stop.load(Ordering::Relaxed) {
                let sent = http
                    .post(format!("{url}/api/v1/messages"))
                    .header("X-PChat-Session", &s)
                    .json(&json!({"to": format!("recv-{i}"), "text": format!("{i}-{k}")}))
                    .send()
                    .await;
                k += 1;
                match sent {
                    Ok(resp) if resp.status().is_success() => {
                        // Only a complete 2xx answer counts as acknowledged.
                        if let Ok(v) = resp.json::<Value>().await
                            && let Some(id) = v["message_id"].as_str()
                        {
                            acked.lock().unwrap().push((i, id.to_string()));
                        }
                    }
                    _ => tokio::time::sleep(Duration::from_millis(5)).await,
                }
            }
        }));
    }
    for _ in 0..10 {
        let base = acked.lock().unwrap().len();
        let grow = rand::random_range(20..200);
        wait_for(
            Duration::from_secs(60),
            "acknowledged sends before a kill",
            || (acked.lock().unwrap().len() >= base + grow).then_some(()),
        );
        let mut r = relay.lock().unwrap();
        r.restart_same(&["--port", &port]);
    }
    let base = acked.lock().unwrap().len();
    wait_for(
        Duration::from_secs(60),
        "sends after the last restart",
        || (acked.lock().unwrap().len() >= base + 20).then_some(()),
    );
    stop.store(true, Ordering::Relaxed);
    for s in senders {
        s.await.unwrap();
    }
    // Every acknowledged message is in its receiver's stream.
    let acked = acked.lock().unwrap().clone();
    assert!(
        acked.len() > 300,
        "only {} sends were acknowledged",
        acked.len()
    );
    for (i, (_, r)) in pairs.iter().enumerate() {
        let mut have = HashSet::new();
        let mut cursor = "0".to_string();
        loop {
            let v = api.poll(r, json!({"after": cursor, "limit": 500})).await;
            let msgs = v["messages"].as_array().unwrap().clone();
            if msgs.is_empty() {
                break;
            }
            for m in &msgs {
                have.insert(m["message_id"].as_str().unwrap().to_string());
            }
            cursor = v["next_cursor"].as_str().unwrap().to_string();
        }
        let mine: Vec<&String> = acked
            .iter()
            .filter(|(s, _)| *s == i)
            .map(|(_, id)| id)
            .collect();
        let lost: Vec<&&String> = mine
            .iter()
            .filter(|id| !have.contains(id.as_str()))
            .collect();
        assert!(
            lost.is_empty(),
            "receiver {i} lost {} acknowledged messages: {lost:?}",
            lost.len()
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn daemon_rides_out_a_60_second_relay_outage() {
    let sb = Sandbox::new();
    let port = free_port().to_string();
    let mut relay = Relay::start_args(&sb, &["--port", &port], &[]);
    let api = relay.api();
    let human = api.login("human@example.com", "human-1", "human").await;
    persona(&sb, &relay.url, "agent@example.com", "agent-1");
    let log = sb.path().join("hook.log");
    let hook = script(
        &sb,
        "hook.sh",
        &format!(
            "cat >/dev/null; echo \"$GTS_WEBCHAT_TEXT\" >> {}",
            log.display()
        ),
    );
    ok(&gw(
        &sb,
        &[
            "daemon",
            "start",
            "--task",
            "outage",
            "--as",
            "agent-1",
            "--on-message",
            hook.to_str().unwrap(),
        ],
    ));
    api.send(&human, "human-1", "agent-1", "before").await;
    wait_for(Duration::from_secs(30), "the first message", || {
        (lines_of(&log).len() == 1).then_some(())
    });

    relay.kill9();
    let down_at = Instant::now();
    let st = wait_for(
        Duration::from_secs(60),
        "status to report the outage",
        || {
            let st = status(&sb, "outage");
            st["problem"]
                .as_str()
                .filter(|p| p.contains("unreachable"))
                .map(|_| st.clone())
        },
    );
    assert_eq!(st["online"], json!(false));
    assert_eq!(st["running"], json!(true), "the daemon keeps running");
    // The outage lasts 60 s (the scenario, not a synchronisation); the daemon keeps trying.
    let outage = Duration::from_secs(60);
    std::thread::sleep(outage.saturating_sub(down_at.elapsed()));
    let st = status(&sb, "outage");
    assert!(
        st["problem"].as_str().unwrap_or("").contains("unreachable"),
        "{st}"
    );

    relay.restart_same(&["--port", &port]);
    let api = relay.api();
    api.send(&human, "human-1", "agent-1", "after").await;
    wait_for(
        Duration::from_secs(60),
        "the message after the outage",
        || (lines_of(&log) == vec!["before", "after"]).then_some(()),
    );
    let st = wait_for(Duration::from_secs(30), "status to recover", || {
        let st = status(&sb, "outage");
        (st["problem"].is_null() && st["online"] == json!(true)).then_some(st)
    });
    // Status says what happened meanwhile.
    let past = st["incidents"].as_array().unwrap();
    let outage_incident = past
        .iter()
        .find(|i| i["what"].as_str().unwrap_or("").contains("unreachable"))
        .expect("the outage is in the incident history");
    assert!(outage_incident["until"].is_string(), "{outage_incident}");
    let text = ok(&gw(&sb, &["daemon", "status", "--task", "outage"]));
    assert!(
        text.contains("earlier problems") && text.contains("unreachable"),
        "{text}"
    );
    assert_eq!(inbox_records(&sb, "outage").len(), 2);
    ok(&gw(&sb, &["daemon", "stop", "--task", "outage"]));
}

/// A daemon whose state folder is a 256 KiB tmpfs in a private mount namespace (via `unshare`,
/// so no real root is needed). Files inside are reached through /proc/PID/root.
struct DiskBox {
    child: std::process::Child,
    state: PathBuf,
}

impl DiskBox {
    fn inside(&self, p: &Path) -> PathBuf {
        let rel = p.strip_prefix("/").unwrap_or(p);
        PathBuf::from(format!("/proc/{}/root", self.child.id())).join(rel)
    }
}

impl Drop for DiskBox {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn daemon_rides_out_a_full_disk() {
    let sb = Sandbox::new();
    let relay = Relay::start(&sb);
    let api = relay.api();
    let human = api.login("human@example.com", "human-1", "human").await;
    persona(&sb, &relay.url, "agent@example.com", "agent-1");
    let hook_log = sb.path().join("hook.log");
    let hook = script(
        &sb,
        "hook.sh",
        &format!(
            "cat >/dev/null; echo \"$GTS_WEBCHAT_TEXT\" >> {}",
            hook_log.display()
        ),
    );
    // Save the task's settings without running it, then run it inside the box.
    ok(&gw(
        &sb,
        &[
            "daemon",
            "start",
            "--task",
            "disk",
            "--as",
            "agent-1",
            "--on-message",
            hook.to_str().unwrap(),
        ],
    ));
    ok(&gw(&sb, &["daemon", "stop", "--task", "disk"]));
    let state = sb.path().join("state");
    let settings = std::fs::read(task_dir(&sb, "disk").join("settings.json")).unwrap();
    let mut cmd = Command::new("unshare");
    cmd.args(["--user", "--map-root-user", "--mount", "sh", "-c"])
        .arg(r#"mount -t tmpfs -o size=256k tmpfs "$1" && mkdir -p "$2" && cp "$3" "$2/settings.json" && exec "$4" daemon run --task disk"#)
        .arg("sh")
        .arg(&state)
        .arg(task_dir(&sb, "disk"))
        .arg(sb.path().join("settings.copy"))
        .arg(BIN);
    std::fs::write(sb.path().join("settings.copy"), settings).unwrap();
    for (k, v) in sb.env() {
        cmd.env(k, v);
    }
    let child = cmd
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(sb.path().join("disk-daemon.stderr")).unwrap())
        .spawn()
        .expect("unshare (util-linux) runs");
    let disk = DiskBox {
        child,
        state: state.clone(),
    };
    let inbox = disk.inside(&task_dir(&sb, "disk").join("inbox.jsonl"));
    let st = wait_for(Duration::from_secs(30), "the boxed daemon to run", || {
        let st = status(&sb, "disk");
        (st["phase"] == json!("running") && st["chat_address"] == json!("agent-1")).then_some(st)
    });
    // statfs through the daemon's view of the folder.
    let fs = Command::new("stat")
        .args(["-f", "-c", "%T"])
        .arg(disk.inside(&disk.state))
        .output()
        .unwrap();
    assert_eq!(
        String::from_utf8_lossy(&fs.stdout).trim(),
        "tmpfs",
        "the state folder is a tmpfs: {st}"
    );

    api.send(&human, "human-1", "agent-1", "room to spare")
        .await;
    wait_for(Duration::from_secs(30), "the first message", || {
        (lines_of(&hook_log).len() == 1).then_some(())
    });

    // Fill the disk.
    let filler = disk.inside(&disk.state.join("filler"));
    {
        use std::io::Write;
        let mut f = std::fs::File::create(&filler).unwrap();
        let chunk = vec![b'x'; 4096];
        while f.write_all(&chunk).is_ok() {}
        let _ = f.sync_all();
    }
    let before = std::fs::read_to_string(&inbox).unwrap().lines().count();
    let mut sent = Vec::new();
    for i in 0..20 {
        sent.push(
            api.send(
                &human,
                "human-1",
                "agent-1",
                &format!("while full {i:02} {}", "y".repeat(2000)),
            )
            .await,
        );
    }
    let st = wait_for(
        Duration::from_secs(60),
        "status to report the full disk",
        || {
            let st = status(&sb, "disk");
            st["problem"]
                .as_str()
                .filter(|p| p.contains("cannot"))
                .map(|_| st.clone())
        },
    );
    assert!(
        st["problem"].as_str().unwrap().contains("No space left"),
        "{st}"
    );
    // A message or two may still fit in the slack of the file's last page; what may never
    // happen is a half-written line.
    let during = std::fs::read_to_string(&inbox).unwrap();
    assert!(
        during.is_empty() || during.ends_with('\n'),
        "a partial line is on disk"
    );
    for l in during.lines() {
        serde_json::from_str::<Value>(l).expect("every line is whole");
    }
    assert!(
        during.lines().count() < before + sent.len(),
        "the disk was not full"
    );

    // Free the space: the daemon catches up by itself.
    std::fs::remove_file(&filler).unwrap();
    wait_for(
        Duration::from_secs(60),
        "all 20 after the disk frees up",
        || (lines_of(&hook_log).len() == 21).then_some(()),
    );
    let lines: Vec<Value> = std::fs::read_to_string(&inbox)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).expect("every line is whole"))
        .collect();
    let ids: Vec<&str> = lines
        .iter()
        .map(|r| r["message_id"].as_str().unwrap())
        .collect();
    for id in &sent {
        assert_eq!(
            ids.iter().filter(|x| *x == id).count(),
            1,
            "{id} exactly once"
        );
    }
    let st = wait_for(Duration::from_secs(30), "status to recover", || {
        let st = status(&sb, "disk");
        st["problem"].is_null().then_some(st)
    });
    assert!(
        st["incidents"].as_array().unwrap().iter().any(|i| i["what"]
            .as_str()
            .unwrap_or("")
            .contains("No space")
            && i["until"].is_string()),
        "the full disk is in the history: {st}"
    );
    ok(&gw(&sb, &["daemon", "stop", "--task", "disk"]));
}
