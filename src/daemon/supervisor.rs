//! The daemon process: login, receive into inbox.jsonl, run hooks, keep presence, answer the
//! control socket, and stop cleanly.
//!
//! Durability order for every batch the relay hands over: append to inbox.jsonl and fsync, then
//! save the cursor (atomic replace), then wake the hook runner, then acknowledge to the relay.
//! Hook progress is its own saved position in the inbox, so after a crash a message whose hook
//! had not finished runs again and one whose hook finished does not.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use tokio::sync::{Notify, watch};
use tokio_util::sync::CancellationToken;

use super::DaemonError;
use super::control::{self, Controller};
use super::hooks::{self, GuardVerdict, HookContext, LoopGuard};
use super::inbox::{self, Inbox, InboxRecord, Placed};
use super::paths::{TaskName, TaskPaths};
use super::protocol::{Incident, PROTOCOL_VERSION, Phase, RunningHook, SendBody, Status};
use super::settings::{BusyPolicy, Identity, TaskSettings};
use super::state::{DaemonState, DeadLetter, HookResult};
use crate::api::messages::{EventType, PollRequest, SendRequest};
use crate::api::{FREE_PHONE_ID, MAX_TEXT_BYTES, PCHAT_CHANNEL, now_millis, rfc3339_from_millis};
use crate::client::login::{self, LoginError, presence_request, relogin_quietly};
use crate::client::relay_client::normalize_relay_url;
use crate::client::{IdentitySpec, Persona, PersonaStore, RelayClient};

/// Long-poll wait per request.
const POLL_WAIT_SECS: f64 = 25.0;
/// Most events taken per poll.
const POLL_LIMIT: u32 = 200;
/// Presence refresh (the relay lapses it after 90 s).
const PRESENCE_EVERY: Duration = Duration::from_secs(30);
/// Most records in one coalesced hook run.
const COALESCE_MAX: usize = 500;

fn now_text() -> String {
    rfc3339_from_millis(now_millis())
}

/// Capped, jittered exponential backoff.
struct Backoff {
    next: Duration,
    min: Duration,
    max: Duration,
}

impl Backoff {
    fn new(min: Duration, max: Duration) -> Backoff {
        Backoff {
            next: min,
            min,
            max,
        }
    }
    fn reset(&mut self) {
        self.next = self.min;
    }
    fn step(&mut self) -> Duration {
        let base = self.next;
        self.next = (self.next * 2).min(self.max);
        base.mul_f64(rand::random_range(0.5..1.0))
    }
}

/// What presence should say.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct PresenceWant {
    online: bool,
    working: bool,
}

/// The logged-in identity and its client.
#[derive(Clone)]
struct Session {
    persona: Persona,
    client: RelayClient,
}

#[derive(Debug, Default)]
struct Live {
    phase: Option<Phase>,
    online: bool,
    problem: Option<String>,
    error: Option<String>,
    running_hook: Option<RunningHook>,
    inbox_records: u64,
    inbox_bytes: u64,
    incidents: VecDeque<Incident>,
}

/// How many past problems status keeps.
const INCIDENTS_KEPT: usize = 20;

pub struct Shared {
    task: TaskName,
    paths: TaskPaths,
    settings: TaskSettings,
    started: Instant,
    started_at: String,
    shutdown: CancellationToken,
    live: Mutex<Live>,
    state: Mutex<DaemonState>,
    pending: Mutex<VecDeque<Placed>>,
    retry: Mutex<VecDeque<InboxRecord>>,
    wake: Notify,
    paused: watch::Sender<bool>,
    session: RwLock<Option<Session>>,
    session_ready: watch::Sender<bool>,
    presence: watch::Sender<PresenceWant>,
    guard: Mutex<LoopGuard>,
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    // A panic while holding one of these is a bug; the data is still the best we have.
    m.lock().unwrap_or_else(|p| p.into_inner())
}

impl Shared {
    fn session(&self) -> Option<Session> {
        self.session.read().ok().and_then(|s| s.clone())
    }

    fn set_session(&self, s: Session) {
        if let Ok(mut slot) = self.session.write() {
            *slot = Some(s);
        }
        self.session_ready.send_replace(true);
    }

    /// Waits until logged in (or shutdown: None).
    async fn wait_session(&self) -> Option<Session> {
        let mut ready = self.session_ready.subscribe();
        loop {
            if let Some(s) = self.session() {
                return Some(s);
            }
            tokio::select! {
                r = ready.changed() => if r.is_err() { return None },
                _ = self.shutdown.cancelled() => return None,
            }
        }
    }

    fn set_problem(&self, p: Option<String>) {
        let mut live = lock(&self.live);
        if live.problem == p {
            return;
        }
        let now = now_text();
        // The previous problem (if any) has ended, whether by recovery or by a new one.
        if let Some(open) = live.incidents.back_mut()
            && open.until.is_none()
        {
            open.until = Some(now.clone());
        }
        match &p {
            Some(msg) => {
                tracing::warn!("{msg}");
                live.incidents.push_back(Incident {
                    what: msg.clone(),
                    since: now,
                    until: None,
                });
                while live.incidents.len() > INCIDENTS_KEPT {
                    live.incidents.pop_front();
                }
            }
            None => tracing::info!("recovered: {}", live.problem.as_deref().unwrap_or("")),
        }
        live.problem = p;
    }

    fn set_phase(&self, phase: Phase) {
        lock(&self.live).phase = Some(phase);
    }

    fn hook_context(&self) -> HookContext {
        let (address, relay) = match self.session() {
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
        }
    }

    /// Applies `f` to the durable state and saves it, retrying while the disk refuses (a full
    /// disk must not silently lose progress). Returns false if shutdown came first.
    async fn update_state(
        self: &Arc<Self>,
        f: impl Fn(&mut DaemonState) + Send + Sync + 'static,
    ) -> bool {
        let f = Arc::new(f);
        let mut backoff = Backoff::new(Duration::from_millis(200), Duration::from_secs(10));
        loop {
            let me = self.clone();
            let f = f.clone();
            let saved = tokio::task::spawn_blocking(move || {
                let mut st = lock(&me.state);
                let mut next = st.clone();
                f(&mut next);
                next.save(&me.paths.state).map(|_| *st = next)
            })
            .await;
            match saved {
                Ok(Ok(())) => {
                    if lock(&self.live)
                        .problem
                        .as_deref()
                        .is_some_and(|p| p.starts_with("cannot save"))
                    {
                        self.set_problem(None);
                    }
                    return true;
                }
                Ok(Err(e)) => self.set_problem(Some(format!("cannot save daemon state: {e}"))),
                Err(e) => self.set_problem(Some(format!("cannot save daemon state: {e}"))),
            }
            tokio::select! {
                _ = tokio::time::sleep(backoff.step()) => {}
                _ = self.shutdown.cancelled() => return false,
            }
        }
    }
}

#[async_trait]
impl Controller for Shared {
    async fn status(&self) -> Status {
        let live = lock(&self.live);
        let st = lock(&self.state);
        let session = self.session();
        Status {
            protocol: PROTOCOL_VERSION,
            version: env!("CARGO_PKG_VERSION").to_string(),
            task: self.task.to_string(),
            pid: std::process::id(),
            phase: live.phase.unwrap_or(Phase::Starting),
            relay: session
                .as_ref()
                .map(|s| s.persona.relay.clone())
                .unwrap_or_default(),
            chat_address: session
                .as_ref()
                .map(|s| s.persona.chat_address.clone())
                .unwrap_or_default(),
            // Presence accepted, and the relay reachable now (a late presence answer must
            // not make a daemon that lost its relay look online).
            online: live.online
                && !live.problem.as_deref().is_some_and(|p| {
                    p.starts_with("relay unreachable") || p.starts_with("session expired")
                }),
            problem: live.problem.clone(),
            incidents: live.incidents.iter().cloned().collect(),
            error: live.error.clone(),
            cursor: st.cursor.clone(),
            inbox_path: self.paths.inbox.display().to_string(),
            inbox_records: live.inbox_records,
            inbox_bytes: live.inbox_bytes,
            queue_depth: lock(&self.pending).len() + lock(&self.retry).len(),
            running_hook: live.running_hook.clone(),
            last_hook: st.last_hook.clone(),
            dead_letters: st.dead.clone(),
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
            loop_guarded: lock(&self.guard).blocked(),
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
        let Some(s) = self.session() else {
            return Err("the daemon is not logged in yet; see `gts-webchat daemon status`".into());
        };
        let req = SendRequest {
            phone_id: Some(FREE_PHONE_ID.into()),
            channel: Some(PCHAT_CHANNEL.into()),
            source: Some(s.persona.chat_address.clone()),
            to: body.to,
            text: body.text,
            reply_to: body.reply_to,
            attachments: body.attachments,
            client_message_id: None,
        };
        s.client
            .send(&req)
            .await
            .map(|r| r.message_id)
            .map_err(|e| e.to_string())
    }

    fn set_paused(&self, paused: bool) {
        tracing::info!(paused, "hooks paused/resumed over the control socket");
        self.paused.send_replace(paused);
        self.wake.notify_one();
    }

    fn retry_dead_letters(&self) -> usize {
        let dead: Vec<InboxRecord> = lock(&self.state)
            .dead
            .iter()
            .map(|d| d.record.clone())
            .collect();
        let n = dead.len();
        lock(&self.retry).extend(dead);
        self.wake.notify_one();
        n
    }
}

/// Why a login attempt failed.
enum LoginFail {
    /// Try again later (relay down, overloaded).
    Transient(String),
    /// Will not work without a person (bad identity, code needed).
    Permanent(String),
}

fn classify(e: LoginError) -> LoginFail {
    match e {
        LoginError::Client(c) if c.is_transient() => LoginFail::Transient(c.to_string()),
        LoginError::NeedCode { email } => LoginFail::Permanent(format!(
            "the relay mails login codes: run `gts-webchat persona {email} --code CODE` once, then start the task again"
        )),
        other => LoginFail::Permanent(other.to_string()),
    }
}

async fn login_once(shared: &Shared) -> Result<(Session, String), LoginFail> {
    let store = PersonaStore::open_default().map_err(|e| LoginFail::Permanent(e.to_string()))?;
    let persona = match &shared.settings.identity {
        Identity::Persona { who } => {
            let found = store
                .find(who)
                .map_err(|e| LoginFail::Permanent(e.to_string()))?
                .ok_or_else(|| LoginFail::Permanent(format!("no local persona matches {who:?}")))?;
            let relay = match &shared.settings.relay {
                Some(r) => {
                    Some(normalize_relay_url(r).map_err(|e| LoginFail::Permanent(e.to_string()))?)
                }
                None => None,
            };
            match relay {
                Some(r) if r != found.relay => {
                    let spec = IdentitySpec {
                        email: found.email.clone(),
                        relay: Some(r),
                        kind: Some(found.kind),
                        ..Default::default()
                    };
                    login::ensure(&store, &spec, None)
                        .await
                        .map_err(classify)?
                        .0
                }
                _ => found,
            }
        }
        Identity::Flags { .. } => {
            let spec = shared
                .settings
                .identity
                .spec()
                .ok_or_else(|| LoginFail::Permanent("no identity".into()))?;
            login::ensure(&store, &spec, None)
                .await
                .map_err(classify)?
                .0
        }
    };
    let mut persona = persona;
    let client = |p: &Persona| -> Result<RelayClient, LoginFail> {
        Ok(RelayClient::new(&p.relay)
            .map_err(|e| LoginFail::Permanent(e.to_string()))?
            .with_token(p.token.clone().unwrap_or_default()))
    };
    let me = match client(&persona)?.me().await {
        Ok(me) => me,
        Err(e) if e.is_auth() => {
            relogin_quietly(&store, &mut persona)
                .await
                .map_err(classify)?;
            client(&persona)?
                .me()
                .await
                .map_err(|e| classify(LoginError::Client(e)))?
        }
        Err(e) => return Err(classify(LoginError::Client(e))),
    };
    let session = Session {
        client: client(&persona)?,
        persona,
    };
    Ok((session, me.claim_cursor))
}

/// Logs in, retrying while the relay is unreachable. Err only for permanent failures.
async fn login(shared: &Arc<Shared>) -> Result<Option<String>, String> {
    let mut backoff = Backoff::new(Duration::from_millis(500), Duration::from_secs(10));
    loop {
        match login_once(shared).await {
            Ok((session, claim)) => {
                tracing::info!(
                    address = %session.persona.chat_address,
                    relay = %session.persona.relay,
                    "logged in"
                );
                shared.set_session(session);
                shared.set_problem(None);
                return Ok(Some(claim));
            }
            Err(LoginFail::Permanent(msg)) => return Err(msg),
            Err(LoginFail::Transient(msg)) => {
                // Not a failure: the daemon runs and keeps trying, and says so.
                shared.set_phase(Phase::Running);
                shared.set_problem(Some(format!("relay unreachable, retrying: {msg}")));
            }
        }
        tokio::select! {
            _ = tokio::time::sleep(backoff.step()) => {}
            _ = shared.shutdown.cancelled() => return Ok(None),
        }
    }
}

fn cursor_value(c: &str) -> u64 {
    c.parse().unwrap_or(0)
}

/// Receives with long-polls and explicit cursors until shutdown.
async fn receive(shared: Arc<Shared>, mut inbox: Inbox) {
    let claim = match login(&shared).await {
        Ok(Some(c)) => c,
        Ok(None) => return,
        Err(msg) => {
            tracing::error!("login failed: {msg}");
            {
                let mut live = lock(&shared.live);
                live.phase = Some(Phase::Failed);
                live.error = Some(msg.clone());
            }
            let _ = std::fs::write(&shared.paths.last_error, &msg);
            shared.shutdown.cancel();
            return;
        }
    };
    let Some(session) = shared.session() else {
        return;
    };
    let identity = format!("{}|{}", session.persona.relay, session.persona.chat_address);
    {
        let st = lock(&shared.state).clone();
        if st.cursor.is_none() || st.identity.as_deref() != Some(identity.as_str()) {
            // A new task (or identity) starts where the identity's claim stands: queued
            // messages wake it, history already read elsewhere does not.
            tracing::info!(cursor = %claim, "starting from the identity's claim cursor");
            let identity = identity.clone();
            let claim = claim.clone();
            if !shared
                .update_state(move |s| {
                    s.cursor = Some(claim.clone());
                    s.identity = Some(identity.clone());
                })
                .await
            {
                return;
            }
        }
    }
    shared.set_phase(Phase::Running);
    shared.presence.send_replace(PresenceWant {
        online: true,
        working: false,
    });

    // Capped at 10 s: one request per 10 s costs a relay nothing, and recovery stays prompt.
    let mut backoff = Backoff::new(Duration::from_millis(250), Duration::from_secs(10));
    loop {
        if shared.shutdown.is_cancelled() {
            return;
        }
        let Some(session) = shared.session() else {
            return;
        };
        let cursor = lock(&shared.state)
            .cursor
            .clone()
            .unwrap_or_else(|| "0".into());
        let req = PollRequest {
            phone_id: Some(FREE_PHONE_ID.into()),
            chat_address: Some(session.persona.chat_address.clone()),
            limit: Some(POLL_LIMIT),
            after: Some(cursor.clone()),
            wait: Some(POLL_WAIT_SECS),
        };
        // Dropping an in-flight poll loses nothing: reads with `after` consume nothing.
        let polled = tokio::select! {
            r = session.client.poll(&req) => r,
            _ = shared.shutdown.cancelled() => return,
        };
        let resp = match polled {
            Ok(r) => r,
            Err(e) => {
                lock(&shared.live).online = false;
                if e.is_auth() {
                    let store = PersonaStore::open_default();
                    let mut persona = session.persona.clone();
                    let relogged = match store {
                        Ok(store) => relogin_quietly(&store, &mut persona)
                            .await
                            .map_err(|e| e.to_string()),
                        Err(e) => Err(e.to_string()),
                    };
                    match relogged {
                        Ok(()) => match RelayClient::new(&persona.relay) {
                            Ok(c) => {
                                let client =
                                    c.with_token(persona.token.clone().unwrap_or_default());
                                shared.set_session(Session { persona, client });
                                shared.set_problem(None);
                                continue;
                            }
                            Err(e) => shared.set_problem(Some(format!("cannot log in again: {e}"))),
                        },
                        Err(msg) => shared.set_problem(Some(format!(
                            "session expired and cannot log in again: {msg}"
                        ))),
                    }
                } else {
                    shared.set_problem(Some(format!("relay unreachable, retrying: {e}")));
                }
                tokio::select! {
                    _ = tokio::time::sleep(backoff.step()) => continue,
                    _ = shared.shutdown.cancelled() => return,
                }
            }
        };
        backoff.reset();
        let relay_was_down = lock(&shared.live).problem.as_deref().is_some_and(|p| {
            p.starts_with("relay unreachable") || p.starts_with("session expired")
        });
        if relay_was_down {
            shared.set_problem(None);
            // Say "online" again now, not at the next refresh.
            shared.presence.send_modify(|_| {});
        }
        if resp.messages.is_empty() {
            continue;
        }
        if cursor_value(&resp.next_cursor) <= cursor_value(&cursor) {
            continue;
        }
        let received_at = now_text();
        let mut seq = inbox.next_seq();
        let mut records: Vec<InboxRecord> = resp
            .messages
            .into_iter()
            .map(|message| {
                let r = InboxRecord {
                    seq,
                    message,
                    received_at: received_at.clone(),
                    attachment_paths: Vec::new(),
                };
                seq += 1;
                r
            })
            .collect();

        for r in records.iter_mut() {
            r.attachment_paths = download_attachments(&shared, &session.client, &r.message).await;
        }

        // 1. inbox.jsonl, fsynced. A full disk holds everything here until it clears.
        let placed = loop {
            match inbox.append(&records) {
                Ok(p) => break p,
                Err(e) => {
                    shared.set_problem(Some(format!(
                        "cannot write the inbox (nothing is lost; retrying): {e}"
                    )));
                    tokio::select! {
                        _ = tokio::time::sleep(backoff.step()) => {}
                        _ = shared.shutdown.cancelled() => return,
                    }
                }
            }
        };
        if lock(&shared.live)
            .problem
            .as_deref()
            .is_some_and(|p| p.starts_with("cannot write the inbox"))
        {
            shared.set_problem(None);
        }
        {
            let mut live = lock(&shared.live);
            live.inbox_records = inbox.last_seq();
            live.inbox_bytes = inbox.len();
        }
        // 2. the cursor.
        let next = resp.next_cursor.clone();
        if !shared
            .update_state(move |s| s.cursor = Some(next.clone()))
            .await
        {
            return;
        }
        // 3. the hook runner.
        lock(&shared.pending).extend(placed);
        shared.wake.notify_one();
        // 4. the relay's claim position (best effort: the inbox already holds them).
        let client = session.client.clone();
        let acked = resp.next_cursor.clone();
        tokio::spawn(async move {
            if let Err(e) = client.ack(&acked).await {
                tracing::debug!("ack failed (harmless): {e}");
            }
        });
    }
}

/// Saves a message's attachments under `attachments/<message_id>/` (each up to the size cap)
/// and returns their local paths, in order ("" where a download failed).
async fn download_attachments(
    shared: &Shared,
    client: &RelayClient,
    m: &crate::api::messages::Message,
) -> Vec<String> {
    if m.event_type != EventType::Message || m.attachments.is_empty() {
        return Vec::new();
    }
    let safe_id: String = m
        .message_id
        .chars()
        .filter(|c| c.is_ascii_alphanumeric() || *c == '_')
        .collect();
    let dir = shared.paths.attachments.join(safe_id);
    if let Err(e) = crate::private_fs::private_dir(&dir) {
        tracing::warn!("cannot keep attachments: {e}");
        return vec![String::new(); m.attachments.len()];
    }
    let mut used = std::collections::HashSet::new();
    let mut out = Vec::new();
    for (i, a) in m.attachments.iter().enumerate() {
        let mut name = crate::api::files::sanitize_file_name(&a.name);
        if !used.insert(name.clone()) {
            name = format!("{i}-{name}");
            used.insert(name.clone());
        }
        let dest = dir.join(&name);
        match client
            .download_to(&a.url, &dest, shared.settings.attachment_cap_bytes)
            .await
        {
            Ok(_) => out.push(dest.display().to_string()),
            Err(e) => {
                tracing::warn!(file = %a.name, "attachment not saved: {e}");
                out.push(String::new());
            }
        }
    }
    out
}

/// Whether an event wakes the hook: messages and edits do; deletions and read receipts are
/// recorded in the inbox only.
fn wakes_hook(r: &InboxRecord) -> bool {
    matches!(r.message.event_type, EventType::Message | EventType::Edit)
}

/// Marks everything up to and including `last` as finished.
async fn mark_done(shared: &Arc<Shared>, last: &Placed) -> bool {
    let (seq, end) = (last.record.seq, last.end);
    shared
        .update_state(move |s| {
            if seq > s.hook_seq {
                s.hook_seq = seq;
                s.hook_offset = end;
            }
        })
        .await
}

async fn send_with_retry(shared: Arc<Shared>, req: SendRequest, what: &'static str) {
    let mut backoff = Backoff::new(Duration::from_millis(500), Duration::from_secs(30));
    for _ in 0..8 {
        let Some(session) = shared.wait_session().await else {
            return;
        };
        match session.client.send(&req).await {
            Ok(r) => {
                tracing::info!(message_id = %r.message_id, to = %req.to, "{what} sent");
                return;
            }
            Err(e) if e.is_transient() => {
                tracing::warn!("{what} not sent yet: {e}");
                tokio::select! {
                    _ = tokio::time::sleep(backoff.step()) => {}
                    _ = shared.shutdown.cancelled() => return,
                }
            }
            Err(e) => {
                tracing::warn!("{what} refused: {e}");
                return;
            }
        }
    }
}

/// After a successful run: the reply (with --reply, through the loop guard).
fn after_success(shared: &Arc<Shared>, batch: &[InboxRecord], stdout: &str) {
    if !shared.settings.reply {
        return;
    }
    let Some(newest) = batch
        .iter()
        .rev()
        .find(|r| r.message.event_type == EventType::Message)
    else {
        return;
    };
    let text = stdout.trim();
    if text.is_empty() {
        return;
    }
    let mut text = text.to_string();
    if text.len() > MAX_TEXT_BYTES {
        let mut cut = MAX_TEXT_BYTES;
        while !text.is_char_boundary(cut) {
            cut -= 1;
        }
        text.truncate(cut);
    }
    let m = &newest.message;
    let target = match &m.group_id {
        Some(g) => format!("group:{g}"),
        None => m.from.clone(),
    };
    let verdict = lock(&shared.guard).check(&target, Instant::now());
    let source = shared.session().map(|s| s.persona.chat_address);
    let req = |text: String, reply_to: Option<String>| SendRequest {
        phone_id: Some(FREE_PHONE_ID.into()),
        channel: Some(PCHAT_CHANNEL.into()),
        source: source.clone(),
        to: target.clone(),
        text: Some(text),
        reply_to,
        ..Default::default()
    };
    match verdict {
        GuardVerdict::Allow => {
            tokio::spawn(send_with_retry(
                shared.clone(),
                req(text, Some(m.message_id.clone())),
                "reply",
            ));
        }
        GuardVerdict::BlockAndTell => {
            tracing::warn!(
                peer = %target,
                limit = shared.settings.reply_limit,
                window_secs = shared.settings.reply_window_secs,
                "loop guard: stopped replying automatically to this peer"
            );
            let notice = format!(
                "[gts-webchat] Automatic replies to you are paused: {} in {} minutes is the limit (loop guard). A person can still answer.",
                shared.settings.reply_limit,
                shared.settings.reply_window_secs.div_ceil(60)
            );
            tokio::spawn(send_with_retry(
                shared.clone(),
                req(notice, None),
                "loop-guard notice",
            ));
        }
        GuardVerdict::Block => {
            tracing::info!(peer = %target, "loop guard: reply suppressed");
        }
    }
}

/// Tells the senders their messages were taken: a read receipt once the hook has finished.
fn send_read_receipts(shared: &Arc<Shared>, batch: &[InboxRecord]) {
    let ids: Vec<String> = batch
        .iter()
        .filter(|r| r.message.event_type == EventType::Message)
        .map(|r| r.message.message_id.clone())
        .collect();
    if ids.is_empty() {
        return;
    }
    let shared = shared.clone();
    tokio::spawn(async move {
        let Some(session) = shared.wait_session().await else {
            return;
        };
        for id in ids {
            if let Err(e) = session.client.mark_read(&id).await {
                tracing::debug!(message_id = %id, "read receipt not sent: {e}");
            }
        }
    });
}

/// Runs one batch until it succeeds, is dead-lettered, or the daemon stops. Returns false when
/// the daemon is stopping (the batch did not finish).
async fn run_batch(shared: &Arc<Shared>, batch: &[InboxRecord], retrying_dead: bool) -> bool {
    let Some(hook) = shared.settings.hook.clone() else {
        return true;
    };
    let max = shared.settings.max_attempts.max(1);
    let newest = match batch.last() {
        Some(r) => r.clone(),
        None => return true,
    };
    for attempt in 1..=max {
        shared.presence.send_modify(|p| p.working = true);
        let ctx = shared.hook_context();
        let live_slot = shared.clone();
        let newest_id = newest.message.message_id.clone();
        let newest_seq = newest.seq;
        let batch_len = batch.len();
        let started_at = now_text();
        let outcome = hooks::run_once(
            hooks::HookRun {
                hook: &hook,
                ctx: &ctx,
                records: batch,
                attempt,
                timeout: shared.settings.hook_timeout(),
                stop_grace: Duration::from_secs(shared.settings.stop_grace_secs),
            },
            &shared.shutdown,
            move |pid| {
                lock(&live_slot.live).running_hook = Some(RunningHook {
                    message_id: newest_id,
                    seq: newest_seq,
                    batch: batch_len,
                    attempt,
                    pid,
                    started_at,
                });
            },
        )
        .await;
        lock(&shared.live).running_hook = None;
        if outcome.interrupted {
            tracing::info!("hook interrupted by shutdown; it runs again at the next start");
            return false;
        }
        let result = HookResult {
            message_id: batch
                .last()
                .map(|r| r.message.message_id.clone())
                .unwrap_or_default(),
            seq: batch.last().map(|r| r.seq).unwrap_or_default(),
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
            let seqs: Vec<u64> = batch.iter().map(|r| r.seq).collect();
            let saved = shared
                .update_state(move |s| {
                    s.last_hook = Some(result.clone());
                    if retrying_dead {
                        s.dead.retain(|d| !seqs.contains(&d.record.seq));
                    }
                })
                .await;
            if saved {
                after_success(shared, batch, &outcome.stdout);
                send_read_receipts(shared, batch);
            }
            return saved;
        }
        tracing::warn!(
            message_id = %result.message_id,
            attempt,
            max,
            "hook failed: {}",
            outcome.detail
        );
        if attempt == max {
            let dead: Vec<DeadLetter> = batch
                .iter()
                .map(|r| DeadLetter {
                    record: r.clone(),
                    error: outcome.detail.clone(),
                    attempts: max,
                    at: now_text(),
                })
                .collect();
            tracing::error!(
                message_id = %result.message_id,
                "dead-lettered after {max} attempts; `gts-webchat daemon retry --task {}` runs it again",
                shared.task
            );
            return shared
                .update_state(move |s| {
                    s.last_hook = Some(result.clone());
                    for d in &dead {
                        s.dead.retain(|x| x.record.seq != d.record.seq);
                        s.dead.push(d.clone());
                    }
                })
                .await;
        }
        let _ = shared
            .update_state(move |s| s.last_hook = Some(result.clone()))
            .await;
        let pause = Duration::from_secs(1u64 << (attempt - 1).min(6));
        tokio::select! {
            _ = tokio::time::sleep(pause) => {}
            _ = shared.shutdown.cancelled() => return false,
        }
    }
    true
}

/// Takes the next unit of work: a dead-letter retry, or pending records per the busy policy.
enum Work {
    Retry(Box<InboxRecord>),
    Pending(Vec<Placed>),
}

fn next_work(shared: &Shared) -> Option<Work> {
    if let Some(r) = lock(&shared.retry).pop_front() {
        return Some(Work::Retry(Box::new(r)));
    }
    let mut pending = lock(&shared.pending);
    if pending.is_empty() {
        return None;
    }
    // Events that do not wake the hook are finished as they come, in order.
    if let Some(front) = pending.front()
        && !wakes_hook(&front.record)
    {
        let mut skip = Vec::new();
        while let Some(p) = pending.front() {
            if wakes_hook(&p.record) {
                break;
            }
            skip.extend(pending.pop_front());
        }
        return Some(Work::Pending(skip));
    }
    let take = match shared.settings.on_busy {
        BusyPolicy::Queue => 1,
        BusyPolicy::Coalesce => COALESCE_MAX,
    };
    let mut batch = Vec::new();
    while batch.len() < take {
        match pending.front() {
            Some(p) if wakes_hook(&p.record) => batch.extend(pending.pop_front()),
            _ => break,
        }
    }
    Some(Work::Pending(batch))
}

async fn hook_runner(shared: Arc<Shared>) {
    let mut paused = shared.paused.subscribe();
    loop {
        // Wait for work (Notify keeps a permit, so a wake between check and wait is kept).
        let work = loop {
            if shared.shutdown.is_cancelled() {
                return;
            }
            if !*paused.borrow_and_update()
                && let Some(w) = next_work(&shared)
            {
                break w;
            }
            if lock(&shared.pending).is_empty() && lock(&shared.retry).is_empty() {
                shared
                    .presence
                    .send_if_modified(|p| std::mem::replace(&mut p.working, false));
            }
            tokio::select! {
                _ = shared.wake.notified() => {}
                _ = paused.changed() => {}
                _ = shared.shutdown.cancelled() => return,
            }
        };
        match work {
            Work::Retry(record) => {
                if !run_batch(&shared, std::slice::from_ref(&record), true).await {
                    return;
                }
            }
            Work::Pending(batch) => {
                let Some(last) = batch.last().cloned() else {
                    continue;
                };
                let records: Vec<InboxRecord> = batch.iter().map(|p| p.record.clone()).collect();
                let needs_hook = records.iter().any(wakes_hook);
                if needs_hook && !run_batch(&shared, &records, false).await {
                    return;
                }
                if !mark_done(&shared, &last).await {
                    return;
                }
            }
        }
    }
}

/// Keeps presence as wanted: online/offline, "working" while hooks run, refreshed every 30 s.
async fn presence_keeper(shared: Arc<Shared>) {
    let mut want = shared.presence.subscribe();
    let mut tick = tokio::time::interval(PRESENCE_EVERY);
    let mut sent: Option<PresenceWant> = None;
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            changed = want.changed() => if changed.is_err() { return },
        }
        let w = *want.borrow_and_update();
        let Some(session) = shared.session() else {
            continue;
        };
        let fresh = sent != Some(w);
        // Offline needs saying only once; online is refreshed on every tick.
        if !w.online && !fresh {
            continue;
        }
        let status = if w.working { "working" } else { "" };
        let req = presence_request(&session.persona, w.online, Some(status));
        match session.client.presence(&req).await {
            Ok(_) => {
                sent = Some(w);
                lock(&shared.live).online = w.online;
            }
            Err(e) => tracing::debug!("presence update failed: {e}"),
        }
    }
}

async fn offline(shared: &Arc<Shared>) {
    let Some(session) = shared.session() else {
        return;
    };
    let req = presence_request(&session.persona, false, Some(""));
    match tokio::time::timeout(Duration::from_secs(5), session.client.presence(&req)).await {
        Ok(Ok(_)) => tracing::info!("presence offline"),
        _ => tracing::warn!("could not tell the relay we went offline"),
    }
}

/// The daemon's life, in this process, until stopped. The caller holds the task lock.
pub async fn run(
    task: TaskName,
    paths: TaskPaths,
    settings: TaskSettings,
) -> Result<(), DaemonError> {
    let inbox = Inbox::open(&paths.inbox)?;
    let mut state = DaemonState::load(&paths.state)?;
    // The inbox is the truth: a crash between append and cursor save leaves the cursor behind.
    if let Some(c) = inbox.last_cursor()
        && state
            .cursor
            .as_deref()
            .is_none_or(|s| cursor_value(s) < cursor_value(c))
        && state.cursor.is_some()
    {
        tracing::info!(from = ?state.cursor, to = c, "cursor caught up with the inbox after a crash");
        state.cursor = Some(c.to_string());
        state.save(&paths.state)?;
    }
    let backlog: VecDeque<Placed> = inbox::read_from(&paths.inbox, state.hook_offset)?
        .into_iter()
        .filter(|p| p.record.seq > state.hook_seq)
        .collect();
    if !backlog.is_empty() {
        tracing::info!(
            records = backlog.len(),
            "resuming hooks for messages not finished before"
        );
    }
    let listener = control::bind(&paths.socket)?;
    let _ = std::fs::remove_file(&paths.last_error);

    let shutdown = CancellationToken::new();
    let shared = Arc::new(Shared {
        guard: Mutex::new(LoopGuard::new(
            settings.reply_limit,
            Duration::from_secs(settings.reply_window_secs.max(1)),
        )),
        live: Mutex::new(Live {
            phase: Some(Phase::Starting),
            inbox_records: inbox.last_seq(),
            inbox_bytes: inbox.len(),
            ..Live::default()
        }),
        task: task.clone(),
        started: Instant::now(),
        started_at: now_text(),
        shutdown: shutdown.clone(),
        state: Mutex::new(state),
        pending: Mutex::new(backlog),
        retry: Mutex::new(VecDeque::new()),
        wake: Notify::new(),
        paused: watch::channel(false).0,
        session: RwLock::new(None),
        session_ready: watch::channel(false).0,
        presence: watch::channel(PresenceWant {
            online: false,
            working: false,
        })
        .0,
        paths,
        settings,
    });
    tracing::info!(task = %task, pid = std::process::id(), "daemon started");

    let control = tokio::spawn(control::serve(listener, shared.clone(), shutdown.clone()));
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
    let presence = tokio::spawn(presence_keeper(shared.clone()));
    let runner = tokio::spawn(hook_runner(shared.clone()));
    let receiver = tokio::spawn(receive(shared.clone(), inbox));

    shutdown.cancelled().await;
    if lock(&shared.live).phase != Some(Phase::Failed) {
        shared.set_phase(Phase::Stopping);
    }
    // The runner gives a running hook its grace period before terminating it.
    let _ = receiver.await;
    let _ = runner.await;
    presence.abort();
    offline(&shared).await;
    signals.abort();
    let _ = control.await;
    let _ = std::fs::remove_file(&shared.paths.socket);
    let failed = lock(&shared.live).error.clone();
    tracing::info!("daemon stopped");
    match failed {
        Some(e) => Err(DaemonError::Failed(e)),
        None => Ok(()),
    }
}
