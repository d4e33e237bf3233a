//! The daemon's durable state has one owner: the journal task. It holds `inbox.jsonl` and
//! `state.json` and applies typed events one at a time, in the order they were sent; every
//! write and fsync runs on the blocking pool. The receiver, the hook runner and the reply
//! sender send it events and wait for the write they need; status reads the snapshot the
//! journal publishes after each event, so a slow disk never stalls status or receiving of the
//! next batch behind a lock.
//!
//! The events are the only ways state changes, and each is one atomic save:
//! - `Received`: append to the inbox (fsync), then move the cursor.
//! - `Restart`: a new identity starts from its claim cursor.
//! - `Finished`: a message's hook is done and its reply is queued, in one record, so a crash
//!   anywhere replays at most the hook, never the reply (which carries a client id).
//! - `Attempted`, `DeadLettered`: a hook attempt failed; the last failure dead-letters.
//! - `Sent`: the relay took a queued message.

use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::{mpsc, oneshot, watch};
use tokio_util::sync::CancellationToken;

use super::DaemonError;
use super::health::{Health, Problem};
use super::inbox::{self, Inbox, InboxError, InboxRecord, Placed};
use super::paths::TaskPaths;
use super::state::{DaemonState, DeadLetter, HookResult, Outgoing, StateError};
use crate::api::messages::Message;
use crate::api::{now_millis, rfc3339_from_millis};

/// One event as the receiver hands it over: the relay's message and where its attachments were
/// saved.
#[derive(Debug, Clone)]
pub struct Incoming {
    pub message: Message,
    pub attachment_paths: Vec<String>,
}

/// The end of what a hook run covered: the last inbox record's seq and the byte after it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Through {
    pub seq: u64,
    pub end: u64,
}

impl Through {
    pub fn of(p: &Placed) -> Through {
        Through {
            seq: p.record.seq,
            end: p.end,
        }
    }
}

#[derive(Debug, Clone)]
pub enum Event {
    Received {
        incoming: Vec<Incoming>,
        next_cursor: String,
    },
    Restart {
        identity: String,
        cursor: String,
    },
    Finished {
        /// `None` for a dead letter run again (its position was passed long ago).
        through: Option<Through>,
        result: Option<HookResult>,
        outgoing: Vec<Outgoing>,
        /// Dead letters (by inbox seq) this run answered.
        undead: Vec<u64>,
    },
    Attempted(HookResult),
    DeadLettered {
        through: Option<Through>,
        result: HookResult,
        dead: Vec<DeadLetter>,
    },
    Sent {
        client_id: String,
    },
    /// A live host or MCP server took the records up to here.
    Claimed(Through),
}

/// What applying an event produced.
#[derive(Debug)]
pub enum Applied {
    /// `Received`: the new records, in order.
    Placed(Vec<Placed>),
    Done,
}

/// What status and the other tasks read: the state as last saved, and the inbox's size.
#[derive(Debug, Clone, Default)]
pub struct Snapshot {
    pub state: DaemonState,
    pub inbox_records: u64,
    pub inbox_bytes: u64,
}

type Request = (Event, oneshot::Sender<Applied>);

/// A handle on the journal: send events, read snapshots.
#[derive(Clone)]
pub struct Journal {
    tx: mpsc::UnboundedSender<Request>,
    snapshot: watch::Receiver<Arc<Snapshot>>,
}

impl Journal {
    /// Applies `event` durably and returns what it produced; `None` when the daemon stopped
    /// before the disk took it.
    pub async fn apply(&self, event: Event) -> Option<Applied> {
        let (reply, answer) = oneshot::channel();
        self.tx.send((event, reply)).ok()?;
        answer.await.ok()
    }

    pub fn snapshot(&self) -> Arc<Snapshot> {
        self.snapshot.borrow().clone()
    }

    pub fn subscribe(&self) -> watch::Receiver<Arc<Snapshot>> {
        self.snapshot.clone()
    }
}

/// Why an event could not be applied yet.
enum Failure {
    Inbox(InboxError),
    State(StateError),
}

/// What the journal task owns. Only that task touches it (on the blocking pool).
struct Durable {
    inbox: Inbox,
    state: DaemonState,
    state_path: PathBuf,
    /// Records of a `Received` already in the inbox whose cursor save failed: the retry saves
    /// the cursor without appending them again.
    appended: Option<Vec<Placed>>,
}

impl Durable {
    fn save(&mut self, change: impl FnOnce(&mut DaemonState)) -> Result<(), Failure> {
        let mut next = self.state.clone();
        change(&mut next);
        next.save(&self.state_path).map_err(Failure::State)?;
        self.state = next;
        Ok(())
    }

    fn apply(&mut self, event: &Event) -> Result<Applied, Failure> {
        match event {
            Event::Received {
                incoming,
                next_cursor,
            } => {
                let placed = match self.appended.take() {
                    Some(p) => p,
                    None => {
                        let received_at = rfc3339_from_millis(now_millis());
                        let first = self.inbox.next_seq();
                        let records: Vec<InboxRecord> = incoming
                            .iter()
                            .enumerate()
                            .map(|(i, inc)| InboxRecord {
                                seq: first + i as u64,
                                message: inc.message.clone(),
                                received_at: received_at.clone(),
                                attachment_paths: inc.attachment_paths.clone(),
                            })
                            .collect();
                        self.inbox.append(&records).map_err(Failure::Inbox)?
                    }
                };
                crate::failpoints::hit("daemon-after-inbox-append");
                let covered = self.inbox.last_seq();
                let cursor = next_cursor.clone();
                if let Err(e) = self.save(|s| {
                    s.cursor = Some(cursor);
                    s.cursor_seq = Some(covered);
                }) {
                    self.appended = Some(placed);
                    return Err(e);
                }
                Ok(Applied::Placed(placed))
            }
            Event::Restart { identity, cursor } => {
                let covered = self.inbox.last_seq();
                self.save(|s| {
                    s.identity = Some(identity.clone());
                    s.cursor = Some(cursor.clone());
                    s.cursor_seq = Some(covered);
                })?;
                Ok(Applied::Done)
            }
            Event::Finished {
                through,
                result,
                outgoing,
                undead,
            } => {
                self.save(|s| {
                    if let Some(t) = through {
                        advance(s, *t);
                    }
                    if let Some(r) = result {
                        record_run(s, r);
                    }
                    s.dead.retain(|d| !undead.contains(&d.record.seq));
                    s.outbox.extend(outgoing.iter().cloned());
                })?;
                Ok(Applied::Done)
            }
            Event::Attempted(result) => {
                self.save(|s| record_run(s, result))?;
                Ok(Applied::Done)
            }
            Event::DeadLettered {
                through,
                result,
                dead,
            } => {
                self.save(|s| {
                    if let Some(t) = through {
                        advance(s, *t);
                    }
                    record_run(s, result);
                    for d in dead {
                        s.dead.retain(|x| x.record.seq != d.record.seq);
                        s.dead.push(d.clone());
                    }
                })?;
                Ok(Applied::Done)
            }
            Event::Sent { client_id } => {
                self.save(|s| s.outbox.retain(|o| &o.client_id != client_id))?;
                Ok(Applied::Done)
            }
            Event::Claimed(t) => {
                self.save(|s| {
                    if t.seq > s.claimed_seq {
                        s.claimed_seq = t.seq;
                        s.claimed_offset = t.end;
                    }
                })?;
                Ok(Applied::Done)
            }
        }
    }

    fn snapshot(&self) -> Arc<Snapshot> {
        Arc::new(Snapshot {
            state: self.state.clone(),
            inbox_records: self.inbox.last_seq(),
            inbox_bytes: self.inbox.len(),
        })
    }
}

/// Every hook run that finished (each attempt), counted for `daemon status`.
fn record_run(s: &mut DaemonState, r: &HookResult) {
    s.hook_runs += 1;
    if !r.ok {
        s.hook_failures += 1;
    }
    s.last_hook = Some(r.clone());
}

/// Hook progress only moves forward.
fn advance(s: &mut DaemonState, t: Through) {
    if t.seq > s.hook_seq {
        s.hook_seq = t.seq;
        s.hook_offset = t.end;
    }
}

/// The journal as opened: a handle, the records whose hooks had not finished, and the task to
/// spawn.
pub struct Opened {
    pub journal: Journal,
    pub backlog: Vec<Placed>,
    pub task: std::pin::Pin<Box<dyn std::future::Future<Output = ()> + Send>>,
}

/// Opens the inbox and state (on the blocking pool), repairs what a crash left, and returns the
/// journal. The task runs until `stop` is cancelled and every event sent before is applied;
/// while the disk refuses a write it retries, giving up only when `shutdown` comes.
pub async fn open(
    paths: &TaskPaths,
    health: Arc<Health>,
    shutdown: CancellationToken,
    stop: CancellationToken,
) -> Result<Opened, DaemonError> {
    let (inbox_path, state_path) = (paths.inbox.clone(), paths.state.clone());
    let (durable, backlog) = tokio::task::spawn_blocking(move || recover(inbox_path, state_path))
        .await
        .map_err(|e| DaemonError::Failed(format!("opening the journal: {e}")))??;
    let durable = Arc::new(Mutex::new(durable));
    let first = lock(&durable).snapshot();
    let (snap_tx, snap_rx) = watch::channel(first);
    let (tx, rx) = mpsc::unbounded_channel();
    let task = Box::pin(run(durable, rx, snap_tx, health, shutdown, stop));
    Ok(Opened {
        journal: Journal {
            tx,
            snapshot: snap_rx,
        },
        backlog,
        task,
    })
}

fn lock(d: &Mutex<Durable>) -> std::sync::MutexGuard<'_, Durable> {
    // Only the journal task locks it, one event at a time: never contended.
    d.lock().unwrap_or_else(|p| p.into_inner())
}

/// Opens both files and makes them agree after a crash.
fn recover(
    inbox_path: PathBuf,
    state_path: PathBuf,
) -> Result<(Durable, Vec<Placed>), DaemonError> {
    let inbox = Inbox::open(&inbox_path)?;
    let mut state = DaemonState::load(&state_path)?;
    let last = inbox.last_seq();
    let mut changed = false;
    if last < state.hook_seq || state.cursor_seq.is_some_and(|c| last < c) {
        tracing::warn!(
            inbox = %inbox_path.display(),
            "the inbox holds fewer records than the state says (was it moved?); continuing after its last record"
        );
        state.hook_seq = last;
        state.hook_offset = inbox.len();
        state.cursor_seq = Some(last);
        changed = true;
    }
    match state.cursor_seq {
        // Records after the ones the cursor covers were appended under this identity, but the
        // crash came before the cursor was saved: the inbox is the truth.
        Some(covered) if last > covered => {
            tracing::info!(from = ?state.cursor, to = ?inbox.last_cursor(), "cursor caught up with the inbox after a crash");
            state.cursor = inbox.last_cursor().map(str::to_string);
            state.cursor_seq = Some(last);
            changed = true;
        }
        Some(_) => {}
        // A state from before cursor_seq: its inbox was always appended first, so catching up
        // with the last record is what that version did.
        None => {
            if let (Some(c), Some(s)) = (inbox.last_cursor(), state.cursor.as_deref())
                && cursor_value(s) < cursor_value(c)
            {
                state.cursor = Some(c.to_string());
            }
            state.cursor_seq = state.cursor.as_ref().map(|_| last);
            changed = true;
        }
    }
    if changed {
        state.save(&state_path)?;
    }
    let backlog: Vec<Placed> = inbox::read_from(&inbox_path, state.hook_offset)?
        .into_iter()
        .filter(|p| p.record.seq > state.hook_seq)
        .collect();
    Ok((
        Durable {
            inbox,
            state,
            state_path,
            appended: None,
        },
        backlog,
    ))
}

pub fn cursor_value(c: &str) -> u64 {
    c.parse().unwrap_or(0)
}

async fn run(
    durable: Arc<Mutex<Durable>>,
    mut rx: mpsc::UnboundedReceiver<Request>,
    snapshot: watch::Sender<Arc<Snapshot>>,
    health: Arc<Health>,
    shutdown: CancellationToken,
    stop: CancellationToken,
) {
    loop {
        let (event, reply) = tokio::select! {
            // Events first: what was sent before `stop` is still applied.
            biased;
            r = rx.recv() => match r {
                Some(r) => r,
                None => return,
            },
            _ = stop.cancelled() => return,
        };
        let event = Arc::new(event);
        let mut pause = Duration::from_millis(200);
        let applied = loop {
            let (d, e) = (durable.clone(), event.clone());
            let outcome = tokio::task::spawn_blocking(move || {
                let mut d = lock(&d);
                let r = d.apply(&e);
                (r, d.snapshot())
            })
            .await;
            match outcome {
                Ok((Ok(applied), snap)) => {
                    health.clear(Problem::CannotWriteInbox);
                    health.clear(Problem::CannotSaveState);
                    snapshot.send_replace(snap);
                    break Some(applied);
                }
                Ok((Err(Failure::Inbox(e)), _)) => health.report(Problem::CannotWriteInbox, e),
                Ok((Err(Failure::State(e)), _)) => health.report(Problem::CannotSaveState, e),
                Err(e) => health.report(Problem::CannotSaveState, e),
            }
            // The disk refused (full, say): nothing is lost, the event waits until it clears.
            tokio::select! {
                _ = tokio::time::sleep(pause) => {}
                _ = shutdown.cancelled() => break None,
            }
            pause = (pause * 2).min(Duration::from_secs(10));
        };
        match applied {
            Some(a) => {
                let _ = reply.send(a);
            }
            // Stopping with the disk still refusing: the sender sees the journal gone.
            None => return,
        }
    }
}
