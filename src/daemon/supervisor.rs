//! The daemon process: wires its tasks together, answers the control socket, and stops them in
//! order.
//!
//! - `journal`: the one owner of inbox.jsonl and state.json; everyone else sends it events.
//! - `receiver`: logs in, long-polls, hands batches to the journal and then to the runner.
//! - `runner`: runs the hook per message and records the outcome (and the reply) in one event.
//! - `replies`: sends the queued replies with their client ids.
//! - `presence`: online, working, offline.
//!
//! Stopping: the receiver stops polling, the runner lets a running hook finish (within
//! --stop-grace), replies stop, presence goes offline, and only then does the journal stop,
//! after applying every event sent before.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use tokio::sync::{mpsc, watch};
use tokio_util::sync::CancellationToken;

use super::DaemonError;
use super::control::{self, Controller};
use super::health::Health;
use super::hooks::HookContext;
use super::inbox::{self, InboxRecord, Placed};
use super::journal::{self, Journal};
use super::journal::{Event, Through};
use super::paths::{TaskName, TaskPaths};
use super::protocol::{ClaimBody, HistoryBody, PROTOCOL_VERSION, Phase, SendBody, Status};
use super::runner::{RunnerMsg, RunnerView};
use super::session::Sessions;
use super::settings::{BusyPolicy, TaskSettings};
use super::{launch, presence, receiver, replies, runner};
use crate::api::messages::{Message, SendRequest};
use crate::api::{FREE_PHONE_ID, PCHAT_CHANNEL, now_millis, rfc3339_from_millis};
use crate::service_manager;

/// What presence should say.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PresenceWant {
    pub online: bool,
    pub working: bool,
}

/// What the daemon's tasks share: settings, the journal handle, and the channels between them.
/// Nothing here is durable state (the journal owns that) or guarded by a lock but `health`.
pub struct Daemon {
    pub task: TaskName,
    pub paths: TaskPaths,
    pub settings: TaskSettings,
    pub shutdown: CancellationToken,
    pub health: Arc<Health>,
    pub journal: Journal,
    pub sessions: Sessions,
    pub presence: watch::Sender<PresenceWant>,
    pub paused: watch::Sender<bool>,
    runner: mpsc::UnboundedSender<RunnerMsg>,
    /// Records handed to the runner that it has not taken yet (it takes them between runs).
    pub handed: AtomicUsize,
    pub runner_view: watch::Receiver<RunnerView>,
    /// The last inbox seq the runner took for a batch turn. Held while the runner or a
    /// `/claim` decides who gets a record, so each goes to exactly one of them.
    pub taken: tokio::sync::Mutex<u64>,
    started: Instant,
    started_at: String,
}

impl Daemon {
    /// Gives the runner work; false when it has stopped.
    pub fn hand_to_runner(&self, msg: RunnerMsg) -> bool {
        self.handed.fetch_add(msg.records(), Ordering::Relaxed);
        self.runner.send(msg).is_ok()
    }

    pub fn hook_context(&self) -> HookContext {
        let (address, relay) = match self.sessions.current() {
            Some(s) => (s.persona.chat_address, s.persona.relay),
            None => (String::new(), String::new()),
        };
        HookContext {
            task: self.task.to_string(),
            inbox: self.paths.inbox.display().to_string(),
            chat_address: address,
            relay,
            socket: self.paths.socket.display().to_string(),
            bin: std::env::current_exe()
                .map(|p| p.display().to_string())
                .unwrap_or_else(|_| "gts-webchat".into()),
            publish: self.settings.publish.clone(),
        }
    }
}

#[async_trait]
impl Controller for Daemon {
    async fn status(&self) -> Status {
        let health = self.health.view();
        let saved = self.journal.snapshot();
        let runner = self.runner_view.borrow().clone();
        let session = self.sessions.current();
        Status {
            protocol: PROTOCOL_VERSION,
            version: env!("CARGO_PKG_VERSION").to_string(),
            task: self.task.to_string(),
            pid: std::process::id(),
            phase: health.phase,
            relay: session
                .as_ref()
                .map(|s| s.persona.relay.clone())
                .unwrap_or_default(),
            chat_address: session
                .as_ref()
                .map(|s| s.persona.chat_address.clone())
                .unwrap_or_default(),
            online: health.online,
            problem: health.problem,
            problem_kind: health.problem_kind.map(|k| k.as_str().to_string()),
            incidents: health.incidents,
            error: health.error,
            cursor: saved.state.cursor.clone(),
            inbox_path: self.paths.inbox.display().to_string(),
            inbox_records: saved.inbox_records,
            inbox_bytes: saved.inbox_bytes,
            queue_depth: runner.queue_depth + self.handed.load(Ordering::Relaxed),
            running_hook: runner.running,
            last_hook: saved.state.last_hook.clone(),
            hook_runs: saved.state.hook_runs,
            hook_failures: saved.state.hook_failures,
            dead_letters: saved.state.dead.clone(),
            outbox: saved.state.outbox.len(),
            claimed_seq: saved.state.claimed_seq,
            hooks_paused: *self.paused.borrow(),
            hook: self.settings.hook.as_ref().map(|h| {
                std::iter::once(h.program.display().to_string())
                    .chain(h.args.iter().cloned())
                    .collect::<Vec<_>>()
                    .join(" ")
            }),
            on_busy: match self.settings.on_busy {
                BusyPolicy::Queue => "queue".into(),
                BusyPolicy::Coalesce => "coalesce".into(),
            },
            reply: self.settings.reply,
            loop_guarded: runner.loop_guarded,
            started_at: self.started_at.clone(),
            uptime_secs: self.started.elapsed().as_secs(),
            socket: self.paths.socket.display().to_string(),
        }
    }

    fn stop(&self) {
        tracing::info!("stop requested over the control socket");
        self.shutdown.cancel();
    }

    async fn send(&self, body: SendBody) -> Result<String, String> {
        let Some(s) = self.sessions.current() else {
            return Err("the daemon is not logged in yet; see `gts-webchat daemon status`".into());
        };
        let req = SendRequest {
            phone_id: Some(FREE_PHONE_ID.into()),
            channel: Some(PCHAT_CHANNEL.into()),
            subject: None,
            source: Some(s.persona.chat_address.clone()),
            to: body.to,
            text: body.text,
            reply_to: body.reply_to,
            attachments: body.attachments,
            client_message_id: Some(
                body.client_message_id
                    .unwrap_or_else(|| crate::client::new_client_message_id("ctl")),
            ),
        };
        s.client
            .send(&req)
            .await
            .map(|r| r.message_id)
            .map_err(|e| e.to_string())
    }

    async fn history(&self, body: HistoryBody) -> Result<Vec<Message>, String> {
        let Some(s) = self.sessions.current() else {
            return Err("the daemon is not logged in yet; see `gts-webchat daemon status`".into());
        };
        s.client
            .history(&body.with, None, body.limit.unwrap_or(50).clamp(1, 200))
            .await
            .map(|r| r.messages)
            .map_err(|e| e.to_string())
    }

    async fn claim(&self, body: ClaimBody, advance: bool) -> Result<Vec<InboxRecord>, String> {
        let limit = body.limit.unwrap_or(50).clamp(1, 500) as usize;
        let wait = match body.through {
            Some(_) => Duration::ZERO,
            None => Duration::from_secs_f64(body.wait_secs.unwrap_or(0.0).clamp(0.0, 90.0)),
        };
        let deadline = tokio::time::Instant::now() + wait;
        let mut changes = self.journal.subscribe();
        loop {
            {
                // One claimer at a time, and not while the runner takes a batch: no record
                // is handed to two of them. Not held while waiting.
                let taken = self.taken.lock().await;
                let snap = changes.borrow_and_update().clone();
                let st = &snap.state;
                // Records a batch turn has run, or is running, are not the live session's.
                // Without a hook the runner only files records away: all are the session's.
                let turns = self.settings.hook.is_some();
                let (seq, offset) = if turns && st.hook_seq > st.claimed_seq {
                    (st.hook_seq, st.hook_offset)
                } else {
                    (st.claimed_seq, st.claimed_offset)
                };
                let seq = if turns { seq.max(*taken) } else { seq };
                let path = self.paths.inbox.clone();
                let placed = tokio::task::spawn_blocking(move || inbox::read_from(&path, offset))
                    .await
                    .map_err(|e| e.to_string())?
                    .map_err(|e| e.to_string())?;
                let fresh: Vec<Placed> = placed
                    .into_iter()
                    .filter(|p| p.record.seq > seq)
                    .filter(|p| body.through.is_none_or(|t| p.record.seq <= t))
                    .take(limit)
                    .collect();
                if !fresh.is_empty() || !advance || tokio::time::Instant::now() >= deadline {
                    if advance && let Some(last) = fresh.last() {
                        self.journal
                            .apply(Event::Claimed(Through::of(last)))
                            .await
                            .ok_or("the daemon is stopping")?;
                    }
                    drop(taken);
                    return Ok(fresh.into_iter().map(|p| p.record).collect());
                }
            }
            tokio::select! {
                r = changes.changed() => if r.is_err() { return Ok(Vec::new()) },
                _ = tokio::time::sleep_until(deadline) => {}
                _ = self.shutdown.cancelled() => return Ok(Vec::new()),
            }
        }
    }

    fn set_paused(&self, paused: bool) {
        tracing::info!(paused, "hooks paused/resumed over the control socket");
        self.paused.send_replace(paused);
    }

    fn retry_dead_letters(&self) -> usize {
        let dead: Vec<_> = self
            .journal
            .snapshot()
            .state
            .dead
            .iter()
            .map(|d| d.record.clone())
            .collect();
        let n = dead.len();
        if n > 0 && !self.hand_to_runner(RunnerMsg::Retry(dead)) {
            return 0;
        }
        n
    }
}

/// The daemon's life, in this process, until stopped. The caller holds the task lock.
pub async fn run(
    task: TaskName,
    paths: TaskPaths,
    settings: TaskSettings,
) -> Result<(), DaemonError> {
    let shutdown = CancellationToken::new();
    let journal_stop = CancellationToken::new();
    let health = Arc::new(Health::default());
    health.set_phase(Phase::Starting);
    let opened = journal::open(
        &paths,
        health.clone(),
        shutdown.clone(),
        journal_stop.clone(),
    )
    .await?;
    let journal_task = tokio::spawn(opened.task);
    let listener = control::bind(&paths.socket)?;
    let _ = tokio::fs::remove_file(&paths.last_error).await;

    let (runner_tx, runner_rx) = mpsc::unbounded_channel();
    let (view_tx, view_rx) = watch::channel(RunnerView::default());
    let d = Arc::new(Daemon {
        task: task.clone(),
        started: Instant::now(),
        started_at: rfc3339_from_millis(now_millis()),
        shutdown: shutdown.clone(),
        health,
        journal: opened.journal,
        sessions: Sessions::default(),
        presence: watch::channel(PresenceWant {
            online: false,
            working: false,
        })
        .0,
        paused: watch::channel(false).0,
        runner: runner_tx,
        handed: AtomicUsize::new(0),
        runner_view: view_rx,
        taken: tokio::sync::Mutex::new(0),
        paths,
        settings,
    });
    tracing::info!(task = %task, pid = std::process::id(), "daemon started");

    let control = tokio::spawn(control::serve(listener, d.clone(), shutdown.clone()));
    // The socket is bound and served from here on: `daemon status` answers.
    service_manager::ready("daemon");
    let keep_alive = {
        let paths = d.paths.clone();
        tokio::spawn(service_manager::keep_alive(
            shutdown.clone(),
            "the control socket",
            move || {
                let paths = paths.clone();
                async move { launch::status(&paths).await.map(|_| ()) }
            },
        ))
    };
    let signals = {
        let shutdown = shutdown.clone();
        tokio::spawn(async move {
            use tokio::signal::unix::{SignalKind, signal};
            if let (Ok(mut term), Ok(mut int)) = (
                signal(SignalKind::terminate()),
                signal(SignalKind::interrupt()),
            ) {
                tokio::select! {
                    _ = term.recv() => tracing::info!("SIGTERM: stopping"),
                    _ = int.recv() => tracing::info!("SIGINT: stopping"),
                    _ = shutdown.cancelled() => return,
                }
                shutdown.cancel();
            }
        })
    };
    let presence = tokio::spawn(presence::keep(d.clone()));
    let runner = tokio::spawn(runner::run(d.clone(), runner_rx, opened.backlog, view_tx));
    let replies = tokio::spawn(replies::run(d.clone()));
    let receiver = tokio::spawn(receiver::receive(d.clone()));

    shutdown.cancelled().await;
    service_manager::stopping();
    keep_alive.abort();
    if d.health.phase() != Phase::Failed {
        d.health.set_phase(Phase::Stopping);
    }
    // The runner gives a running hook its grace period before terminating it.
    let _ = receiver.await;
    let _ = runner.await;
    let _ = replies.await;
    presence.abort();
    presence::go_offline(&d).await;
    signals.abort();
    let _ = control.await;
    // Everything that records progress has stopped: let the journal apply what is queued.
    journal_stop.cancel();
    let _ = journal_task.await;
    let _ = tokio::fs::remove_file(&d.paths.socket).await;
    tracing::info!("daemon stopped");
    match d.health.error() {
        Some(e) => Err(DaemonError::Failed(e)),
        None => Ok(()),
    }
}
