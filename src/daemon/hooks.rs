//! Running the `--on-message` program: directly (never through a shell), the inbox record(s)
//! as JSON lines on stdin, metadata in `GTS_WEBCHAT_*` variables, in its own process group so
//! a timeout can TERM and then KILL everything it started.

use std::collections::{HashMap, VecDeque};
use std::process::Stdio;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use nix::sys::signal::{Signal, killpg};
use nix::unistd::Pid;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWriteExt};
use tokio_util::sync::CancellationToken;

use super::inbox::InboxRecord;
use super::settings::HookSettings;

/// Most stdout kept (the reply text); the rest is read and dropped so the hook never blocks.
const MAX_STDOUT: usize = 1024 * 1024;
/// How much of stderr's end is kept for status and dead letters.
const STDERR_TAIL: usize = 8 * 1024;
/// Between TERM and KILL.
const KILL_GRACE: Duration = Duration::from_secs(5);

/// Facts about the daemon a hook gets in its environment.
#[derive(Debug, Clone)]
pub struct HookContext {
    pub task: String,
    pub inbox: String,
    pub chat_address: String,
    pub relay: String,
    pub socket: String,
    /// This gts-webchat binary, so hooks can call `tail` or `send --task` without PATH.
    pub bin: String,
    /// Where run-host posts turn status (--publish), if anywhere.
    pub publish: Option<String>,
}

#[derive(Debug, Clone)]
pub struct HookOutcome {
    pub ok: bool,
    pub exit_code: Option<i32>,
    /// Why it failed (exit status, timeout, spawn error) plus the end of stderr.
    pub detail: String,
    pub stdout: String,
    pub duration: Duration,
    /// The daemon is stopping and the hook was cut short: it has not finished.
    pub interrupted: bool,
}

/// Environment values cannot hold NUL; the exact text is on stdin anyway.
fn env_safe(s: &str) -> String {
    s.replace('\0', "\u{FFFD}")
}

fn environment(
    ctx: &HookContext,
    records: &[InboxRecord],
    attempt: u32,
) -> Vec<(&'static str, String)> {
    let newest = records.last();
    let m = newest.map(|r| &r.message);
    let get = |f: fn(&crate::api::messages::Message) -> String| m.map(f).unwrap_or_default();
    let attachments: Vec<serde_json::Value> = newest
        .map(|r| {
            r.message
                .attachments
                .iter()
                .enumerate()
                .map(|(i, a)| {
                    serde_json::json!({
                        "name": a.name, "mime": a.mime, "size": a.size, "kind": a.kind,
                        "url": a.url, "path": r.attachment_paths.get(i),
                    })
                })
                .collect()
        })
        .unwrap_or_default();
    vec![
        ("GTS_WEBCHAT_TASK", ctx.task.clone()),
        ("GTS_WEBCHAT_INBOX", ctx.inbox.clone()),
        ("GTS_WEBCHAT_CHAT_ADDRESS", ctx.chat_address.clone()),
        ("GTS_WEBCHAT_RELAY", ctx.relay.clone()),
        ("GTS_WEBCHAT_SOCKET", ctx.socket.clone()),
        ("GTS_WEBCHAT_BIN", ctx.bin.clone()),
        (
            "GTS_WEBCHAT_PUBLISH",
            ctx.publish.clone().unwrap_or_default(),
        ),
        ("GTS_WEBCHAT_MESSAGE_ID", get(|m| m.message_id.clone())),
        ("GTS_WEBCHAT_FROM", get(|m| m.from.clone())),
        (
            "GTS_WEBCHAT_FROM_NAME",
            env_safe(&get(|m| m.from_name.clone())),
        ),
        ("GTS_WEBCHAT_FROM_KIND", get(|m| m.from_kind.to_string())),
        ("GTS_WEBCHAT_TEXT", env_safe(&get(|m| m.text.clone()))),
        (
            "GTS_WEBCHAT_TYPE",
            get(|m| m.event_type.as_str().to_string()),
        ),
        ("GTS_WEBCHAT_TO", get(|m| m.to.clone())),
        (
            "GTS_WEBCHAT_GROUP_ID",
            get(|m| m.group_id.clone().unwrap_or_default()),
        ),
        (
            "GTS_WEBCHAT_TRANSCRIPT",
            env_safe(&get(|m| {
                m.caption
                    .as_ref()
                    .and_then(|c| c.transcript.clone())
                    .unwrap_or_default()
            })),
        ),
        (
            "GTS_WEBCHAT_TRANSLATION",
            env_safe(&get(|m| {
                m.caption
                    .as_ref()
                    .and_then(|c| c.translation.clone())
                    .unwrap_or_default()
            })),
        ),
        ("GTS_WEBCHAT_BATCH_COUNT", records.len().to_string()),
        ("GTS_WEBCHAT_ATTEMPT", attempt.to_string()),
        (
            "GTS_WEBCHAT_ATTACHMENTS",
            serde_json::to_string(&attachments).unwrap_or_else(|_| "[]".into()),
        ),
    ]
}

/// Reads a stream into a shared buffer, keeping the first `cap` bytes (or the last, for tails).
async fn drain<R: AsyncRead + Unpin>(
    mut r: R,
    buf: Arc<Mutex<Vec<u8>>>,
    cap: usize,
    keep_tail: bool,
) {
    let mut chunk = [0u8; 8192];
    loop {
        match r.read(&mut chunk).await {
            Ok(0) | Err(_) => break,
            Ok(n) => {
                if let Ok(mut b) = buf.lock() {
                    b.extend_from_slice(&chunk[..n]);
                    if b.len() > cap {
                        if keep_tail {
                            let cut = b.len() - cap;
                            b.drain(..cut);
                        } else {
                            b.truncate(cap);
                        }
                    }
                }
            }
        }
    }
}

fn signal_group(pid: u32, sig: Signal) {
    if let Ok(raw) = i32::try_from(pid) {
        // ESRCH (already gone) is fine.
        let _ = killpg(Pid::from_raw(raw), sig);
    }
}

/// TERM the group, wait up to KILL_GRACE for the leader, then KILL the group.
async fn terminate(
    child: &mut tokio::process::Child,
    pid: Option<u32>,
) -> Option<std::process::ExitStatus> {
    if let Some(pid) = pid {
        signal_group(pid, Signal::SIGTERM);
    }
    let status = tokio::time::timeout(KILL_GRACE, child.wait())
        .await
        .ok()
        .and_then(Result::ok);
    if let Some(pid) = pid {
        // Children that ignored TERM (or outlived the leader) go too.
        signal_group(pid, Signal::SIGKILL);
    }
    match status {
        Some(s) => Some(s),
        None => child.wait().await.ok(),
    }
}

fn describe(status: &std::process::ExitStatus) -> String {
    use std::os::unix::process::ExitStatusExt;
    match (status.code(), status.signal()) {
        (Some(c), _) => format!("exited with status {c}"),
        (None, Some(s)) => format!("killed by signal {s}"),
        _ => "ended".into(),
    }
}

/// One hook run: what to run, for which records, within which limits.
pub struct HookRun<'a> {
    pub hook: &'a HookSettings,
    pub ctx: &'a HookContext,
    pub records: &'a [InboxRecord],
    pub attempt: u32,
    pub timeout: Duration,
    /// How long a running hook may finish once the daemon is stopping.
    pub stop_grace: Duration,
}

/// Runs the hook once. `stop` cancelled = the daemon is stopping: the hook gets `stop_grace`
/// to finish, then it is terminated and reported as interrupted.
pub async fn run_once(
    run: HookRun<'_>,
    stop: &CancellationToken,
    on_spawn: impl FnOnce(Option<u32>),
) -> HookOutcome {
    let HookRun {
        hook,
        ctx,
        records,
        attempt,
        timeout,
        stop_grace,
    } = run;
    let started = Instant::now();
    let mut cmd = tokio::process::Command::new(&hook.program);
    cmd.args(&hook.args)
        .envs(environment(ctx, records, attempt))
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .process_group(0)
        .kill_on_drop(false);
    for k in crate::service_manager::ENV {
        cmd.env_remove(k);
    }
    let mut child = match cmd.spawn() {
        Ok(c) => c,
        Err(e) => {
            return HookOutcome {
                ok: false,
                exit_code: None,
                detail: format!("could not start {}: {e}", hook.program.display()),
                stdout: String::new(),
                duration: started.elapsed(),
                interrupted: false,
            };
        }
    };
    let pid = child.id();
    on_spawn(pid);

    let mut input = Vec::new();
    for r in records {
        if serde_json::to_writer(&mut input, r).is_ok() {
            input.push(b'\n');
        }
    }
    if let Some(mut stdin) = child.stdin.take() {
        tokio::spawn(async move {
            // A hook that does not read stdin closes it early: that is its business.
            let _ = stdin.write_all(&input).await;
            let _ = stdin.shutdown().await;
        });
    }
    let out = Arc::new(Mutex::new(Vec::new()));
    let err = Arc::new(Mutex::new(Vec::new()));
    let readers = [
        child
            .stdout
            .take()
            .map(|s| tokio::spawn(drain(s, out.clone(), MAX_STDOUT, false))),
        child
            .stderr
            .take()
            .map(|s| tokio::spawn(drain(s, err.clone(), STDERR_TAIL, true))),
    ];

    let mut interrupted = false;
    let mut timed_out = false;
    let status = tokio::select! {
        s = child.wait() => s.ok(),
        _ = tokio::time::sleep(timeout) => {
            timed_out = true;
            terminate(&mut child, pid).await
        }
        _ = stop.cancelled() => {
            match tokio::time::timeout(stop_grace, child.wait()).await {
                Ok(s) => s.ok(),
                Err(_) => {
                    interrupted = true;
                    terminate(&mut child, pid).await
                }
            }
        }
    };
    // Grandchildren may hold the pipes open; do not wait on them for long.
    for r in readers.into_iter().flatten() {
        let abort = r.abort_handle();
        if tokio::time::timeout(Duration::from_secs(2), r)
            .await
            .is_err()
        {
            abort.abort();
        }
    }
    let stdout =
        String::from_utf8_lossy(&out.lock().map(|b| b.clone()).unwrap_or_default()).into_owned();
    let stderr_tail =
        String::from_utf8_lossy(&err.lock().map(|b| b.clone()).unwrap_or_default()).into_owned();
    let ok = !timed_out && !interrupted && status.is_some_and(|s| s.success());
    let mut detail = match (&status, timed_out, interrupted) {
        (_, true, _) => format!("timed out after {} s; terminated", timeout.as_secs()),
        (_, _, true) => "interrupted: the daemon stopped".to_string(),
        (Some(s), _, _) => describe(s),
        (None, _, _) => "could not be waited for".to_string(),
    };
    let stderr_tail = stderr_tail.trim();
    if !ok && !stderr_tail.is_empty() {
        let last: String = stderr_tail
            .lines()
            .rev()
            .take(5)
            .collect::<Vec<_>>()
            .into_iter()
            .rev()
            .collect::<Vec<_>>()
            .join(" | ");
        detail.push_str(&format!("; stderr: {last}"));
    }
    HookOutcome {
        ok,
        exit_code: status.and_then(|s| s.code()),
        detail,
        stdout,
        duration: started.elapsed(),
        interrupted,
    }
}

/// Caps automatic replies per peer in a sliding window, so two agents replying to each other
/// cannot run away.
pub struct LoopGuard {
    limit: u32,
    window: Duration,
    sent: HashMap<String, VecDeque<Instant>>,
    told: HashMap<String, Instant>,
}

/// What the guard says about one more automatic reply.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum GuardVerdict {
    Allow,
    /// Over the cap; tell the peer (once per lockout).
    BlockAndTell,
    /// Over the cap and already told.
    Block,
}

impl LoopGuard {
    pub fn new(limit: u32, window: Duration) -> LoopGuard {
        LoopGuard {
            limit,
            window,
            sent: HashMap::new(),
            told: HashMap::new(),
        }
    }

    pub fn check(&mut self, peer: &str, now: Instant) -> GuardVerdict {
        let window = self.window;
        let times = self.sent.entry(peer.to_string()).or_default();
        while times
            .front()
            .is_some_and(|t| now.duration_since(*t) >= window)
        {
            times.pop_front();
        }
        if (times.len() as u32) < self.limit {
            times.push_back(now);
            self.told.remove(peer);
            return GuardVerdict::Allow;
        }
        match self.told.get(peer) {
            Some(_) => GuardVerdict::Block,
            None => {
                self.told.insert(peer.to_string(), now);
                GuardVerdict::BlockAndTell
            }
        }
    }

    /// Peers currently over the cap.
    pub fn blocked(&self) -> Vec<String> {
        let mut v: Vec<String> = self.told.keys().cloned().collect();
        v.sort();
        v
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn loop_guard_caps_per_peer_and_tells_once() {
        let mut g = LoopGuard::new(2, Duration::from_secs(60));
        let t0 = Instant::now();
        assert_eq!(g.check("a", t0), GuardVerdict::Allow);
        assert_eq!(g.check("a", t0), GuardVerdict::Allow);
        assert_eq!(g.check("b", t0), GuardVerdict::Allow);
        assert_eq!(g.check("a", t0), GuardVerdict::BlockAndTell);
        assert_eq!(g.check("a", t0), GuardVerdict::Block);
        assert_eq!(g.blocked(), vec!["a".to_string()]);
        // After the window the peer may be answered again.
        let later = t0 + Duration::from_secs(61);
        assert_eq!(g.check("a", later), GuardVerdict::Allow);
        assert!(g.blocked().is_empty());
    }
}
