//! The hook runner: takes the records the receiver handed over (and dead letters asked to run
//! again), runs the hook per the busy policy, retries failures with backoff, dead-letters the
//! last failure, and records each outcome with the journal. A finished message and its reply
//! are one journal record; the reply itself is sent by `replies`.

use std::collections::VecDeque;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use sha2::{Digest, Sha256};
use tokio::sync::{mpsc, watch};

use super::hooks::{self, GuardVerdict, LoopGuard};
use super::inbox::{InboxRecord, Placed};
use super::journal::{Event, Through};
use super::protocol::RunningHook;
use super::settings::BusyPolicy;
use super::state::{DeadLetter, HookResult, Outgoing, OutgoingKind};
use super::supervisor::Daemon;
use crate::api::messages::EventType;
use crate::api::{MAX_TEXT_BYTES, now_millis, rfc3339_from_millis};

/// Most records in one coalesced hook run.
const COALESCE_MAX: usize = 500;
/// How long a voice clip's hook waits for its transcript (a caption event) after the clip
/// arrived, so an AI runner gets words, not just audio.
pub const TRANSCRIPT_WAIT: Duration = Duration::from_secs(30);

/// Work for the runner.
#[derive(Debug)]
pub enum RunnerMsg {
    /// New records, in inbox order.
    Placed(Vec<Placed>),
    /// Dead letters to run again.
    Retry(Vec<InboxRecord>),
}

impl RunnerMsg {
    pub fn records(&self) -> usize {
        match self {
            RunnerMsg::Placed(p) => p.len(),
            RunnerMsg::Retry(r) => r.len(),
        }
    }
}

/// What status shows of the runner.
#[derive(Debug, Clone, Default)]
pub struct RunnerView {
    pub queue_depth: usize,
    pub running: Option<RunningHook>,
    /// Peers the loop guard stopped replying to.
    pub loop_guarded: Vec<String>,
}

/// Longest a turn waits for the previous turn's replies to reach the relay.
const REPLIES_WAIT: Duration = Duration::from_secs(10);

fn now_text() -> String {
    rfc3339_from_millis(now_millis())
}

/// Whether an event wakes the hook: messages and edits do; deletions and read receipts are
/// recorded in the inbox only.
fn wakes_hook(r: &InboxRecord) -> bool {
    matches!(r.message.event_type, EventType::Message | EventType::Edit)
}

fn is_voice_clip(r: &InboxRecord) -> bool {
    r.message.event_type == EventType::Message
        && r.message.attachments.iter().any(|a| a.kind == "voice")
}

/// Milliseconds since the daemon stored the record (0 when its time does not parse).
fn age_ms(r: &InboxRecord) -> i64 {
    time::OffsetDateTime::parse(
        &r.received_at,
        &time::format_description::well_known::Rfc3339,
    )
    .map(|t| now_millis() - (t.unix_timestamp_nanos() / 1_000_000) as i64)
    .unwrap_or(i64::MAX)
}

/// The next unit of work.
enum Work {
    /// A dead letter, run again.
    Retry(Box<InboxRecord>),
    /// Records in inbox order: one hook run, or (when none wakes the hook) just marked done.
    Pending(Vec<Placed>),
}

struct Runner {
    d: Arc<Daemon>,
    pending: VecDeque<Placed>,
    retry: VecDeque<InboxRecord>,
    guard: LoopGuard,
    view: watch::Sender<RunnerView>,
}

impl Runner {
    fn take(&mut self, msg: RunnerMsg) {
        // Saturating: a count can never go below zero, even if a message was counted late.
        let n = msg.records();
        let _ = self
            .d
            .handed
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |h| {
                Some(h.saturating_sub(n))
            });
        match msg {
            RunnerMsg::Placed(p) => self.pending.extend(p),
            RunnerMsg::Retry(r) => self.retry.extend(r),
        }
    }

    fn publish(&self, running: Option<RunningHook>) {
        self.view.send_replace(RunnerView {
            queue_depth: self.pending.len() + self.retry.len(),
            running,
            loop_guarded: self.guard.blocked(),
        });
    }

    /// The caption already received for `message_id`, if any (it follows its message).
    fn caption_of(&self, message_id: &str) -> Option<crate::api::messages::Caption> {
        self.pending
            .iter()
            .rev()
            .find(|p| {
                p.record.message.event_type == EventType::Caption
                    && p.record.message.message_id == message_id
            })
            .and_then(|p| p.record.message.caption.clone())
    }

    /// How long to hold the front record for its transcript; `None` when it can go now.
    fn transcript_wait(&self) -> Option<Duration> {
        let front = &self.pending.front()?.record;
        if !is_voice_clip(front) || self.caption_of(&front.message.message_id).is_some() {
            return None;
        }
        let left = TRANSCRIPT_WAIT.as_millis() as i64 - age_ms(front);
        (left > 0).then(|| Duration::from_millis(left as u64))
    }

    fn next_work(&mut self) -> Option<Work> {
        if let Some(r) = self.retry.pop_front() {
            return Some(Work::Retry(Box::new(r)));
        }
        let front = self.pending.front()?;
        // Events that do not wake the hook are finished as they come, in order.
        if !wakes_hook(&front.record) {
            let mut skip = Vec::new();
            while let Some(p) = self.pending.front() {
                if wakes_hook(&p.record) {
                    break;
                }
                skip.extend(self.pending.pop_front());
            }
            return Some(Work::Pending(skip));
        }
        let take = match self.d.settings.on_busy {
            BusyPolicy::Queue => 1,
            BusyPolicy::Coalesce => COALESCE_MAX,
        };
        let mut batch = Vec::new();
        while batch.len() < take {
            match self.pending.front() {
                Some(p) if wakes_hook(&p.record) => batch.extend(self.pending.pop_front()),
                _ => break,
            }
        }
        Some(Work::Pending(batch))
    }

    /// The client id of the reply to `message_id`: the same on every run of its hook, so the
    /// relay stores one reply however often it is sent.
    fn reply_id(&self, message_id: &str) -> String {
        let task = hex::encode(&Sha256::digest(self.d.task.as_str().as_bytes())[..4]);
        format!("r-{task}-{message_id}")
    }

    /// What to send after a successful run: the reply (with --reply, through the loop guard).
    fn outgoing(&mut self, batch: &[InboxRecord], stdout: &str) -> Vec<Outgoing> {
        if !self.d.settings.reply {
            return Vec::new();
        }
        let Some(newest) = batch
            .iter()
            .rev()
            .find(|r| r.message.event_type == EventType::Message)
        else {
            return Vec::new();
        };
        let mut text = stdout.trim().to_string();
        if text.is_empty() {
            return Vec::new();
        }
        if text.len() > MAX_TEXT_BYTES {
            let mut cut = MAX_TEXT_BYTES;
            while !text.is_char_boundary(cut) {
                cut -= 1;
            }
            text.truncate(cut);
        }
        let m = &newest.message;
        let to = match &m.group_id {
            Some(g) => format!("group:{g}"),
            None => m.from.clone(),
        };
        let settings = &self.d.settings;
        match self.guard.check(&to, Instant::now()) {
            GuardVerdict::Allow => vec![Outgoing {
                client_id: self.reply_id(&m.message_id),
                kind: OutgoingKind::Reply,
                to,
                text,
                reply_to: Some(m.message_id.clone()),
                queued_at: now_text(),
            }],
            GuardVerdict::BlockAndTell => {
                tracing::warn!(
                    peer = %to,
                    limit = settings.reply_limit,
                    window_secs = settings.reply_window_secs,
                    "loop guard: stopped replying automatically to this peer"
                );
                vec![Outgoing {
                    client_id: crate::client::new_client_message_id("n"),
                    kind: OutgoingKind::LoopGuardNotice,
                    text: format!(
                        "[gts-webchat] Automatic replies to you are paused: {} in {} minutes is the limit (loop guard). A person can still answer.",
                        settings.reply_limit,
                        settings.reply_window_secs.div_ceil(60)
                    ),
                    to,
                    reply_to: None,
                    queued_at: now_text(),
                }]
            }
            GuardVerdict::Block => {
                tracing::info!(peer = %to, "loop guard: reply suppressed");
                Vec::new()
            }
        }
    }

    /// Runs one batch until it succeeds, is dead-lettered, or the daemon stops. Returns false
    /// when the daemon is stopping (the batch did not finish).
    async fn run_batch(&mut self, batch: &[InboxRecord], through: Option<Through>) -> bool {
        let d = self.d.clone();
        let retrying_dead = through.is_none();
        let undead: Vec<u64> = if retrying_dead {
            batch.iter().map(|r| r.seq).collect()
        } else {
            Vec::new()
        };
        let Some(hook) = d.settings.hook.clone() else {
            return self.finish(through, None, Vec::new(), undead).await;
        };
        let Some(newest) = batch.last() else {
            return true;
        };
        // The last turn's replies first: the hook reads the conversation from the relay, and
        // a reply still in the outbox would be missing from it (a host would answer without
        // its own last answer).
        if !self.replies_out(REPLIES_WAIT).await {
            return false;
        }
        let max = d.settings.max_attempts.max(1);
        for attempt in 1..=max {
            d.presence.send_modify(|p| p.working = true);
            let ctx = d.hook_context();
            let running = RunningHook {
                message_id: newest.message.message_id.clone(),
                seq: newest.seq,
                batch: batch.len(),
                attempt,
                pid: None,
                started_at: now_text(),
            };
            self.publish(Some(running.clone()));
            let view = self.view.clone();
            let outcome = hooks::run_once(
                hooks::HookRun {
                    hook: &hook,
                    ctx: &ctx,
                    records: batch,
                    attempt,
                    timeout: d.settings.hook_timeout(),
                    stop_grace: Duration::from_secs(d.settings.stop_grace_secs),
                },
                &d.shutdown,
                move |pid| {
                    view.send_modify(|v| {
                        v.running = Some(RunningHook { pid, ..running });
                    });
                },
            )
            .await;
            self.publish(None);
            if outcome.interrupted {
                tracing::info!("hook interrupted by shutdown; it runs again at the next start");
                return false;
            }
            let result = HookResult {
                message_id: newest.message.message_id.clone(),
                seq: newest.seq,
                ok: outcome.ok,
                exit_code: outcome.exit_code,
                detail: outcome.detail.clone(),
                attempt,
                duration_ms: outcome.duration.as_millis() as u64,
                finished_at: now_text(),
            };
            if outcome.ok {
                tracing::info!(
                    message_id = %result.message_id,
                    batch = batch.len(),
                    attempt,
                    ms = result.duration_ms,
                    "hook finished"
                );
                crate::failpoints::hit("daemon-before-hook-done");
                let outgoing = self.outgoing(batch, &outcome.stdout);
                let done = self.finish(through, Some(result), outgoing, undead).await;
                if done {
                    self.send_read_receipts(batch);
                }
                return done;
            }
            tracing::warn!(
                message_id = %result.message_id,
                attempt,
                max,
                "hook failed: {}",
                outcome.detail
            );
            if attempt == max {
                tracing::error!(
                    message_id = %result.message_id,
                    "dead-lettered after {max} attempts; `gts-webchat daemon retry --task {}` runs it again",
                    d.task
                );
                let dead = batch
                    .iter()
                    .map(|r| DeadLetter {
                        record: r.clone(),
                        error: outcome.detail.clone(),
                        attempts: max,
                        at: now_text(),
                    })
                    .collect();
                let event = Event::DeadLettered {
                    through,
                    result,
                    dead,
                };
                return d.journal.apply(event).await.is_some();
            }
            if d.journal.apply(Event::Attempted(result)).await.is_none() {
                return false;
            }
            let pause = Duration::from_secs(1u64 << (attempt - 1).min(6));
            tokio::select! {
                _ = tokio::time::sleep(pause) => {}
                _ = d.shutdown.cancelled() => return false,
            }
        }
        true
    }

    /// Waits until the outbox is empty, at most `limit` (a relay that is away does not hold
    /// turns up for long: their history then comes from the inbox). False at shutdown.
    async fn replies_out(&self, limit: Duration) -> bool {
        let mut snapshots = self.d.journal.subscribe();
        let deadline = tokio::time::Instant::now() + limit;
        loop {
            if snapshots.borrow_and_update().state.outbox.is_empty() {
                return true;
            }
            tokio::select! {
                r = snapshots.changed() => if r.is_err() { return false },
                _ = tokio::time::sleep_until(deadline) => return true,
                _ = self.d.shutdown.cancelled() => return false,
            }
        }
    }

    async fn finish(
        &self,
        through: Option<Through>,
        result: Option<HookResult>,
        outgoing: Vec<Outgoing>,
        undead: Vec<u64>,
    ) -> bool {
        let event = Event::Finished {
            through,
            result,
            outgoing,
            undead,
        };
        self.d.journal.apply(event).await.is_some()
    }

    /// Tells the senders their messages were taken: a read receipt once the hook has finished.
    fn send_read_receipts(&self, batch: &[InboxRecord]) {
        let ids: Vec<String> = batch
            .iter()
            .filter(|r| r.message.event_type == EventType::Message)
            .map(|r| r.message.message_id.clone())
            .collect();
        if ids.is_empty() {
            return;
        }
        let d = self.d.clone();
        tokio::spawn(async move {
            let Some(session) = d.sessions.wait(&d.shutdown).await else {
                return;
            };
            for id in ids {
                if let Err(e) = session.client.mark_read(&id).await {
                    tracing::debug!(message_id = %id, "read receipt not sent: {e}");
                }
            }
        });
    }
}

/// Runs hooks until shutdown, starting with `backlog` (records whose hooks had not finished).
pub async fn run(
    d: Arc<Daemon>,
    mut rx: mpsc::UnboundedReceiver<RunnerMsg>,
    backlog: Vec<Placed>,
    view: watch::Sender<RunnerView>,
) {
    if !backlog.is_empty() {
        tracing::info!(
            records = backlog.len(),
            "resuming hooks for messages not finished before"
        );
    }
    let settings = &d.settings;
    let mut runner = Runner {
        guard: LoopGuard::new(
            settings.reply_limit,
            Duration::from_secs(settings.reply_window_secs.max(1)),
        ),
        d: d.clone(),
        pending: backlog.into(),
        retry: VecDeque::new(),
        view,
    };
    let mut paused = d.paused.subscribe();
    loop {
        while let Ok(msg) = rx.try_recv() {
            runner.take(msg);
        }
        runner.publish(None);
        if d.shutdown.is_cancelled() {
            return;
        }
        let hold = runner.transcript_wait();
        let work = if *paused.borrow_and_update() || hold.is_some() {
            None
        } else {
            runner.next_work()
        };
        let Some(work) = work else {
            if let Some(hold) = hold {
                // A voice clip waits for its transcript (or the end of the wait).
                tokio::select! {
                    msg = rx.recv() => match msg {
                        Some(m) => runner.take(m),
                        None => return,
                    },
                    _ = tokio::time::sleep(hold) => {}
                    _ = paused.changed() => {}
                    _ = d.shutdown.cancelled() => return,
                }
                continue;
            }
            if runner.pending.is_empty() && runner.retry.is_empty() {
                d.presence
                    .send_if_modified(|p| std::mem::replace(&mut p.working, false));
            }
            tokio::select! {
                msg = rx.recv() => match msg {
                    Some(m) => runner.take(m),
                    None => return,
                },
                _ = paused.changed() => {}
                _ = d.shutdown.cancelled() => return,
            }
            continue;
        };
        runner.publish(None);
        let finished = match work {
            Work::Retry(record) => runner.run_batch(std::slice::from_ref(&record), None).await,
            Work::Pending(batch) => {
                let Some(last) = batch.last() else {
                    continue;
                };
                let through = Some(Through::of(last));
                // Voice clips go to the hook with the transcript that arrived for them.
                let records: Vec<InboxRecord> = batch
                    .iter()
                    .map(|p| {
                        let mut r = p.record.clone();
                        if is_voice_clip(&r) && r.message.caption.is_none() {
                            r.message.caption = runner.caption_of(&r.message.message_id);
                        }
                        r
                    })
                    .collect();
                // Records a live host or MCP server claimed are theirs: no batch turn. The
                // rest are taken under the lock `/claim` holds, so it skips them.
                let records: Vec<InboxRecord> = {
                    let mut taken = runner.d.taken.lock().await;
                    let claimed = runner.d.journal.snapshot().state.claimed_seq;
                    *taken = (*taken).max(last.record.seq);
                    records.into_iter().filter(|r| r.seq > claimed).collect()
                };
                if records.iter().any(wakes_hook) {
                    runner.run_batch(&records, through).await
                } else {
                    runner.finish(through, None, Vec::new(), Vec::new()).await
                }
            }
        };
        if !finished {
            return;
        }
    }
}
