//! PostgreSQL backend: several relays share one database.
//!
//! Every write is one transaction on a pooled connection; PostgreSQL groups the commits' WAL
//! flushes itself, and a 2xx still means committed (`synchronous_commit = on` is set for every
//! connection). Stream positions are allocated at the end of each transaction, all receivers
//! in one statement in id order (see `Pending::flush`), under each stream's head row lock, so
//! one stream's positions commit in order and no two writers deadlock over them. Wake-ups for
//! other relays go out as NOTIFY in the same transaction (delivered only if it commits); see
//! `doorbell`.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use deadpool_postgres::{GenericClient, Manager, ManagerConfig, Pool, RecyclingMethod, Runtime};
use tokio_postgres::types::ToSql;
use tokio_postgres::{NoTls, Row};
use tokio_util::sync::CancellationToken;

use super::{
    ApiKeyRecord, AttemptEnd, AuthPressure, CallbackChange, CallbackRecord, CodeAttempt,
    ContactRef, Conversation, DeliveryRow, FileRecord, LanguagePrefs, LoginOutcome,
    MessageStatusRow, NewApiKey, NewCallback, NewChallenge, NewGroup, NewMessage, Outbound,
    OutboundEnd, OutboundItem, OutboxItem, PresenceUpdate, QueuedEvent, Registration, Report,
    SentMessage, SessionInfo, Store, StoreError, StoreResult, User, VoiceContext, VoiceJob,
    VoiceJobEnd,
};
use crate::api::directory::DirectoryEntry;
use crate::api::groups::{GroupInfo, JoinRequest, Member};
use crate::api::messages::{Caption, ConversationSummary, Message};
use crate::relay::hub::Hub;

mod bridge;
mod callbacks;
mod doorbell;
mod files;
mod groups;
mod identity;
pub mod import;
mod messages;
mod schema;
mod voice;

/// How to reach the database.
#[derive(Clone)]
pub struct PgOptions {
    /// `postgres://user@host:port/db`; never logged whole (it may hold a password).
    pub url: String,
    pub pool_size: usize,
}

pub struct PgStore {
    conns: Conns,
    batcher: batch::Batcher,
    stop: CancellationToken,
    doorbell: Mutex<Option<tokio::task::JoinHandle<()>>>,
}

pub(super) fn pg(action: &'static str) -> impl FnOnce(tokio_postgres::Error) -> StoreError {
    move |source| StoreError::Postgres { action, source }
}

/// Reading a column, with the error in our terms.
pub(super) trait RowExt {
    fn at<T: for<'a> tokio_postgres::types::FromSql<'a>>(&self, idx: usize) -> StoreResult<T>;
}

impl RowExt for Row {
    fn at<T: for<'a> tokio_postgres::types::FromSql<'a>>(&self, idx: usize) -> StoreResult<T> {
        self.try_get(idx).map_err(pg("reading a row"))
    }
}

type Params<'a> = &'a [&'a (dyn ToSql + Sync)];

pub(super) async fn query(
    c: &impl GenericClient,
    action: &'static str,
    sql: &str,
    params: Params<'_>,
) -> StoreResult<Vec<Row>> {
    let st = c.prepare_cached(sql).await.map_err(pg(action))?;
    c.query(&st, params).await.map_err(pg(action))
}

pub(super) async fn query_opt(
    c: &impl GenericClient,
    action: &'static str,
    sql: &str,
    params: Params<'_>,
) -> StoreResult<Option<Row>> {
    let st = c.prepare_cached(sql).await.map_err(pg(action))?;
    c.query_opt(&st, params).await.map_err(pg(action))
}

pub(super) async fn query_one(
    c: &impl GenericClient,
    action: &'static str,
    sql: &str,
    params: Params<'_>,
) -> StoreResult<Row> {
    let st = c.prepare_cached(sql).await.map_err(pg(action))?;
    c.query_one(&st, params).await.map_err(pg(action))
}

pub(super) async fn execute(
    c: &impl GenericClient,
    action: &'static str,
    sql: &str,
    params: Params<'_>,
) -> StoreResult<u64> {
    let st = c.prepare_cached(sql).await.map_err(pg(action))?;
    c.execute(&st, params).await.map_err(pg(action))
}

/// The two outboxes relays deliver from.
enum Outbox {
    Callbacks,
    Bridge,
}

/// Pushes a due outbox row's next try past `until`, if no relay did since it was read: one
/// relay's try at a time, and a relay dying mid-try leaves it to the others after `until`.
async fn claim_due(
    c: &impl GenericClient,
    outbox: Outbox,
    id: i64,
    now: i64,
    until: i64,
) -> StoreResult<bool> {
    let sql = match outbox {
        Outbox::Callbacks => {
            "UPDATE callback_outbox SET not_before = $1
             WHERE id = $2 AND state = 'pending' AND not_before <= $3"
        }
        Outbox::Bridge => {
            "UPDATE bridge_outbox SET not_before = $1
             WHERE id = $2 AND state = 'queued' AND not_before <= $3"
        }
    };
    Ok(execute(c, "claiming an outbox try", sql, &[&until, &id, &now]).await? == 1)
}

pub(super) fn random_hex(bytes: usize) -> String {
    let mut buf = vec![0u8; bytes];
    rand::fill(&mut buf[..]);
    hex::encode(buf)
}

/// Deliveries a transaction makes, given positions when it is about to commit.
#[derive(Default)]
pub(super) struct Pending {
    items: Vec<Delivery>,
}

/// (receiver, message rowid, event id for an event about it, the message when at hand)
type Delivery = (i64, i64, Option<i64>, Option<Arc<Message>>);

/// Who to wake after the commit: (identity, newest position, the event when at hand).
type Wakes = Vec<(i64, u64, Option<Arc<Message>>)>;

/// Longest NOTIFY payload sent (PostgreSQL's limit is 8000 bytes).
const NOTIFY_CHUNK: usize = 7000;

impl Pending {
    pub(super) fn deliver(
        &mut self,
        user_id: i64,
        message_rowid: i64,
        event_id: Option<i64>,
        event: Option<Arc<Message>>,
    ) {
        self.items.push((user_id, message_rowid, event_id, event));
    }

    /// Allocates every stream position this transaction needs in one statement (receivers in
    /// id order, so concurrent transactions lock heads in the same order), stores the
    /// deliveries and queues the NOTIFY for other relays.
    async fn flush(self, c: &impl GenericClient) -> StoreResult<Wakes> {
        if self.items.is_empty() {
            return Ok(Vec::new());
        }
        let mut counts: BTreeMap<i64, i64> = BTreeMap::new();
        for (user, ..) in &self.items {
            *counts.entry(*user).or_default() += 1;
        }
        let users: Vec<i64> = counts.keys().copied().collect();
        let ns: Vec<i64> = counts.values().copied().collect();
        let rows = query(
            c,
            "allocating stream positions",
            "INSERT INTO stream_heads (user_id, head)
             SELECT u, n FROM unnest($1::bigint[], $2::bigint[]) AS t(u, n) ORDER BY u
             ON CONFLICT (user_id) DO UPDATE SET head = stream_heads.head + EXCLUDED.head
             RETURNING user_id, head",
            &[&users, &ns],
        )
        .await?;
        // The next position to hand out per receiver.
        let mut next: BTreeMap<i64, i64> = BTreeMap::new();
        for r in &rows {
            let user: i64 = r.at(0)?;
            let head: i64 = r.at(1)?;
            next.insert(user, head - counts.get(&user).copied().unwrap_or(0) + 1);
        }
        let mut d_users = Vec::with_capacity(self.items.len());
        let mut d_seqs = Vec::with_capacity(self.items.len());
        let mut d_msgs = Vec::with_capacity(self.items.len());
        let mut d_events: Vec<Option<i64>> = Vec::with_capacity(self.items.len());
        let mut wakes = Wakes::with_capacity(self.items.len());
        for (user, message, event_id, event) in self.items {
            let slot = next.entry(user).or_insert(1);
            let seq = *slot;
            *slot += 1;
            d_users.push(user);
            d_seqs.push(seq);
            d_msgs.push(message);
            d_events.push(event_id);
            wakes.push((user, seq.max(0) as u64, event));
        }
        execute(
            c,
            "recording deliveries",
            "INSERT INTO deliveries (user_id, seq, message_id, event_id)
             SELECT * FROM unnest($1::bigint[], $2::bigint[], $3::bigint[], $4::bigint[])",
            &[&d_users, &d_seqs, &d_msgs, &d_events],
        )
        .await?;
        let mut payload = String::new();
        for (user, head) in &next {
            let piece = format!("{user}:{} ", head - 1);
            if payload.len() + piece.len() > NOTIFY_CHUNK {
                doorbell::ring(c, &payload).await?;
                payload.clear();
            }
            payload.push_str(&piece);
        }
        if !payload.is_empty() {
            doorbell::ring(c, &payload).await?;
        }
        Ok(wakes)
    }
}

/// Deadlocks and serialization failures: the transaction is tried again.
fn retryable(e: &StoreError) -> bool {
    use tokio_postgres::error::SqlState;
    match e {
        StoreError::Postgres { source, .. } => matches!(
            source.code(),
            Some(c) if *c == SqlState::T_R_DEADLOCK_DETECTED
                || *c == SqlState::T_R_SERIALIZATION_FAILURE
        ),
        _ => false,
    }
}

const TRIES: u32 = 3;

/// A read on a pooled connection.
macro_rules! on_conn {
    ($self:ident, |$c:ident| $body:expr) => {{
        let conn = $self.conn().await?;
        let $c = &conn;
        $body.await
    }};
}

/// A write in one transaction: its deliveries get positions, it commits, then local pollers
/// are woken. Retried whole on a deadlock or serialization failure.
macro_rules! in_tx {
    ($self:ident, $action:expr, |$c:ident, $p:ident| $body:expr) => {{
        let mut tries = 0;
        loop {
            let mut conn = $self.conn().await?;
            let tx = conn.transaction().await.map_err(pg($action))?;
            #[allow(unused_mut)]
            let mut $p = Pending::default();
            let result = {
                let $c = &tx;
                $body.await
            };
            match $self.finish(tx, $p, result, $action).await {
                Err(e) if retryable(&e) && tries + 1 < TRIES => {
                    tries += 1;
                    continue;
                }
                other => break other,
            }
        }
    }};
}

mod batch;

/// What a transaction needs: a pooled connection, and the hub to wake local pollers after
/// it commits.
#[derive(Clone)]
pub(super) struct Conns {
    pool: Pool,
    hub: Arc<Hub>,
}

impl Conns {
    async fn conn(&self) -> StoreResult<deadpool_postgres::Object> {
        self.pool
            .get()
            .await
            .map_err(|e| StoreError::PgPool(e.to_string()))
    }

    async fn finish<R>(
        &self,
        tx: deadpool_postgres::Transaction<'_>,
        pending: Pending,
        result: StoreResult<R>,
        action: &'static str,
    ) -> StoreResult<R> {
        let value = match result {
            Ok(v) => v,
            Err(e) => {
                let _ = tx.rollback().await;
                return Err(e);
            }
        };
        let wakes = pending.flush(&tx).await?;
        tx.commit().await.map_err(pg(action))?;
        for (user, seq, event) in wakes {
            self.hub.notify(user, seq, event);
        }
        Ok(value)
    }

    /// One message in its own transaction.
    async fn send_one(&self, msg: &NewMessage) -> StoreResult<SentMessage> {
        in_tx!(self, "sending a message", |c, p| async {
            messages::send(c, msg, &mut p).await.map(|(s, _)| s)
        })
    }
}

impl PgStore {
    /// Connects, migrates (under an advisory lock, so relays starting together do not race)
    /// and starts listening for other relays' wake-ups.
    pub async fn open(opts: PgOptions, hub: Arc<Hub>) -> StoreResult<PgStore> {
        let config = schema::config(&opts.url)?;
        schema::migrate(&config).await?;
        let manager = Manager::from_config(
            config.clone(),
            NoTls,
            ManagerConfig {
                recycling_method: RecyclingMethod::Fast,
            },
        );
        let pool = Pool::builder(manager)
            .max_size(opts.pool_size.max(2))
            // A database that is down answers 503 in seconds rather than hanging requests.
            .wait_timeout(Some(Duration::from_secs(3)))
            .create_timeout(Some(Duration::from_secs(3)))
            .recycle_timeout(Some(Duration::from_secs(3)))
            .runtime(Runtime::Tokio1)
            .build()
            .map_err(|e| StoreError::PgPool(e.to_string()))?;
        let stop = CancellationToken::new();
        let listener = tokio::spawn(doorbell::listen(config, hub.clone(), stop.clone()));
        let conns = Conns { pool, hub };
        Ok(PgStore {
            batcher: batch::Batcher::start(conns.clone()),
            conns,
            stop,
            doorbell: Mutex::new(Some(listener)),
        })
    }

    async fn conn(&self) -> StoreResult<deadpool_postgres::Object> {
        self.conns.conn().await
    }

    async fn finish<R>(
        &self,
        tx: deadpool_postgres::Transaction<'_>,
        pending: Pending,
        result: StoreResult<R>,
        action: &'static str,
    ) -> StoreResult<R> {
        self.conns.finish(tx, pending, result, action).await
    }
}

#[async_trait]
impl Store for PgStore {
    async fn auth_pressure(
        &self,
        email: &str,
        client: &str,
        short_since: i64,
        long_since: i64,
    ) -> StoreResult<AuthPressure> {
        on_conn!(self, |c| identity::auth_pressure(
            c,
            email,
            client,
            short_since,
            long_since
        ))
    }

    async fn put_challenge(&self, challenge: NewChallenge) -> StoreResult<()> {
        in_tx!(self, "storing a login challenge", |c, p| {
            identity::put_challenge(c, &challenge)
        })
    }

    async fn verify_and_login(
        &self,
        attempt: CodeAttempt,
        reg: Registration,
        token_hash: &str,
        session_expires_at: i64,
    ) -> StoreResult<LoginOutcome> {
        in_tx!(self, "logging in", |c, p| identity::login(
            c,
            &attempt,
            &reg,
            token_hash,
            session_expires_at
        ))
    }

    async fn sweep_auth(&self, events_before: i64, now: i64) -> StoreResult<()> {
        in_tx!(
            self,
            "sweeping login activity",
            |c, p| identity::sweep_auth(c, events_before, now)
        )
    }

    async fn session(&self, token_hash: &str, now: i64) -> StoreResult<Option<SessionInfo>> {
        on_conn!(self, |c| identity::session(c, token_hash, now))
    }

    async fn end_session(&self, session_id: i64, now: i64) -> StoreResult<()> {
        in_tx!(self, "ending a session", |c, p| identity::end_session(
            c, session_id, now
        ))
    }

    async fn user_by_address(&self, address: &str) -> StoreResult<Option<User>> {
        on_conn!(self, |c| identity::user_by_address(c, address))
    }

    async fn user_by_email(&self, email: &str) -> StoreResult<Option<User>> {
        on_conn!(self, |c| identity::user_by_email(c, email))
    }

    async fn language_prefs(&self, user_id: i64) -> StoreResult<LanguagePrefs> {
        on_conn!(self, |c| voice::language_prefs(c, user_id))
    }

    async fn set_language_prefs(
        &self,
        user_id: i64,
        language: Option<Option<String>>,
        read_aloud: Option<bool>,
    ) -> StoreResult<()> {
        let language = language.as_ref().map(|l| l.as_deref());
        in_tx!(self, "saving language prefs", |c, p| {
            voice::set_language_prefs(c, user_id, language, read_aloud)
        })
    }

    async fn set_profile(
        &self,
        user_id: i64,
        display_name: Option<String>,
        public_visible: Option<bool>,
    ) -> StoreResult<()> {
        in_tx!(self, "updating a profile", |c, p| identity::set_profile(
            c,
            user_id,
            display_name.as_deref(),
            public_visible
        ))
    }

    async fn set_presence(
        &self,
        user_id: i64,
        update: PresenceUpdate,
        now: i64,
    ) -> StoreResult<()> {
        in_tx!(self, "updating presence", |c, p| identity::set_presence(
            c, user_id, &update, now
        ))
    }

    async fn directory(
        &self,
        query: &str,
        limit: u32,
        fresh_after: i64,
    ) -> StoreResult<Vec<DirectoryEntry>> {
        let needle = query.trim().to_lowercase();
        on_conn!(self, |c| identity::directory(
            c,
            &needle,
            limit,
            fresh_after
        ))
    }

    async fn send(&self, msg: NewMessage) -> StoreResult<SentMessage> {
        if batch::batchable(&msg) {
            self.batcher.send(msg).await
        } else {
            self.conns.send_one(&msg).await
        }
    }

    async fn poll(&self, user_id: i64, after: u64, limit: u32) -> StoreResult<Vec<Message>> {
        on_conn!(self, |c| messages::poll(c, user_id, after, limit))
    }

    async fn stream_head(&self, user_id: i64) -> StoreResult<u64> {
        on_conn!(self, |c| messages::stream_head(c, user_id))
    }

    async fn session_cursor(&self, session_id: i64) -> StoreResult<u64> {
        on_conn!(self, |c| messages::session_cursor(c, session_id))
    }

    async fn advance_session_cursor(
        &self,
        session_id: i64,
        from: u64,
        to: u64,
    ) -> StoreResult<bool> {
        on_conn!(self, |c| messages::advance_session_cursor(
            c, session_id, from, to
        ))
    }

    async fn ack_session_cursor(&self, session_id: i64, to: u64) -> StoreResult<u64> {
        on_conn!(self, |c| messages::ack_session_cursor(c, session_id, to))
    }

    async fn edit(&self, actor: i64, message_id: &str, text: String, now: i64) -> StoreResult<()> {
        in_tx!(self, "editing a message", |c, p| messages::edit(
            c, actor, message_id, &text, now, &mut p
        ))
    }

    async fn delete(&self, actor: i64, message_id: &str, now: i64) -> StoreResult<Vec<String>> {
        in_tx!(self, "deleting a message", |c, p| messages::delete(
            c, actor, message_id, now, &mut p
        ))
    }

    async fn mark_read(&self, reader: i64, message_id: &str, now: i64) -> StoreResult<()> {
        in_tx!(
            self,
            "recording a read receipt",
            |c, p| messages::mark_read(c, reader, message_id, now, &mut p)
        )
    }

    async fn history(
        &self,
        user_id: i64,
        with: Conversation,
        before: Option<i64>,
        limit: u32,
    ) -> StoreResult<Vec<(i64, Message)>> {
        on_conn!(self, |c| messages::history(
            c, user_id, &with, before, limit
        ))
    }

    async fn conversations(&self, user_id: i64) -> StoreResult<Vec<ConversationSummary>> {
        on_conn!(self, |c| messages::conversations(c, user_id))
    }

    async fn next_voice_job(&self, voice: bool, now: i64) -> StoreResult<Option<VoiceJob>> {
        in_tx!(self, "claiming a voice job", |c, p| voice::next_job(
            c, voice, now
        ))
    }

    async fn shed_voice_jobs(&self, keep: u64) -> StoreResult<Vec<i64>> {
        in_tx!(self, "shedding voice jobs", |c, p| voice::shed(c, keep))
    }

    async fn end_voice_job(&self, id: i64, end: VoiceJobEnd) -> StoreResult<()> {
        in_tx!(self, "ending a voice job", |c, p| voice::end_job(
            c, id, &end
        ))
    }

    async fn voice_backlog(&self) -> StoreResult<u64> {
        on_conn!(self, |c| voice::backlog(c))
    }

    async fn requeue_running_voice_jobs(&self) -> StoreResult<u64> {
        let now = crate::api::now_millis();
        in_tx!(
            self,
            "requeueing voice jobs",
            |c, p| voice::requeue_running(c, now)
        )
    }

    async fn renew_voice_job(&self, id: i64, until: i64) -> StoreResult<()> {
        on_conn!(self, |c| voice::renew(c, id, until))
    }

    async fn voice_context(&self, message_rowid: i64) -> StoreResult<Option<VoiceContext>> {
        on_conn!(self, |c| voice::context(c, message_rowid))
    }

    async fn set_transcript(
        &self,
        message_rowid: i64,
        caption: Caption,
        language: Option<String>,
    ) -> StoreResult<()> {
        in_tx!(
            self,
            "recording a transcript",
            |c, p| voice::set_transcript(c, message_rowid, &caption, language.as_deref())
        )
    }

    async fn add_caption(
        &self,
        message_rowid: i64,
        user_id: i64,
        caption: Caption,
        now: i64,
    ) -> StoreResult<()> {
        in_tx!(self, "delivering a caption", |c, p| voice::add_caption(
            c,
            message_rowid,
            user_id,
            &caption,
            now,
            &mut p
        ))
    }

    async fn put_file(&self, file: FileRecord) -> StoreResult<()> {
        in_tx!(self, "recording an upload", |c, p| files::put_file(
            c, &file
        ))
    }

    async fn file(&self, public_id: &str) -> StoreResult<Option<FileRecord>> {
        on_conn!(self, |c| files::file(c, public_id))
    }

    async fn create_group(&self, group: NewGroup) -> StoreResult<()> {
        in_tx!(self, "creating a group", |c, p| groups::create(c, &group))
    }

    async fn groups_for(&self, user_id: i64) -> StoreResult<Vec<GroupInfo>> {
        on_conn!(self, |c| groups::list_for(c, user_id))
    }

    async fn add_member(
        &self,
        actor: i64,
        group: &str,
        address: &str,
        role: &str,
        now: i64,
    ) -> StoreResult<()> {
        in_tx!(self, "adding a group member", |c, p| groups::add_member(
            c, actor, group, address, role, now
        ))
    }

    async fn remove_member(&self, actor: i64, group: &str, address: &str) -> StoreResult<()> {
        in_tx!(self, "removing a group member", |c, p| {
            groups::remove_member(c, actor, group, address)
        })
    }

    async fn members(&self, actor: i64, group: &str) -> StoreResult<Vec<Member>> {
        on_conn!(self, |c| groups::members(c, actor, group))
    }

    async fn join_or_request(&self, user_id: i64, group: &str, now: i64) -> StoreResult<bool> {
        in_tx!(self, "joining a group", |c, p| groups::join_or_request(
            c, user_id, group, now
        ))
    }

    async fn join_requests(&self, actor: i64, group: &str) -> StoreResult<Vec<JoinRequest>> {
        on_conn!(self, |c| groups::join_requests(c, actor, group))
    }

    async fn decide_join(
        &self,
        actor: i64,
        group: &str,
        address: &str,
        accept: bool,
        now: i64,
    ) -> StoreResult<()> {
        in_tx!(self, "deciding a join request", |c, p| groups::decide_join(
            c, actor, group, address, accept, now
        ))
    }

    async fn report(
        &self,
        reporter: i64,
        message_id: Option<String>,
        address: Option<String>,
        reason: String,
        now: i64,
    ) -> StoreResult<()> {
        in_tx!(self, "recording a report", |c, p| files::report(
            c,
            reporter,
            message_id.as_deref(),
            address.as_deref(),
            &reason,
            now
        ))
    }

    async fn reports(&self) -> StoreResult<Vec<Report>> {
        on_conn!(self, |c| files::reports(c))
    }

    async fn create_callback(&self, cb: NewCallback) -> StoreResult<CallbackRecord> {
        in_tx!(self, "creating a callback", |c, p| callbacks::create(
            c, &cb
        ))
    }

    async fn callbacks_of(&self, user_id: i64) -> StoreResult<Vec<CallbackRecord>> {
        on_conn!(self, |c| callbacks::of_user(c, user_id))
    }

    async fn enabled_callbacks(&self) -> StoreResult<Vec<CallbackRecord>> {
        on_conn!(self, |c| callbacks::enabled(c))
    }

    async fn callback(&self, user_id: i64, public_id: &str) -> StoreResult<Option<CallbackRecord>> {
        on_conn!(self, |c| callbacks::find(c, user_id, public_id))
    }

    async fn delete_callback(&self, user_id: i64, public_id: &str) -> StoreResult<bool> {
        in_tx!(self, "deleting a callback", |c, p| callbacks::delete(
            c, user_id, public_id
        ))
    }

    async fn change_callback(
        &self,
        user_id: i64,
        public_id: &str,
        change: CallbackChange,
    ) -> StoreResult<Option<(CallbackRecord, u64)>> {
        in_tx!(self, "changing a callback", |c, p| callbacks::change(
            c, user_id, public_id, &change
        ))
    }

    async fn queue_callback_events(
        &self,
        callback_id: i64,
        from: u64,
        to: u64,
        events: Vec<QueuedEvent>,
        now: i64,
        give_up_at: i64,
    ) -> StoreResult<bool> {
        in_tx!(self, "queueing callback events", |c, p| callbacks::queue(
            c,
            callback_id,
            from,
            to,
            &events,
            now,
            give_up_at
        ))
    }

    async fn due_deliveries(&self, now: i64, limit: u32) -> StoreResult<Vec<OutboxItem>> {
        on_conn!(self, |c| callbacks::due(c, now, limit))
    }

    async fn claim_delivery(&self, outbox_id: i64, now: i64, until: i64) -> StoreResult<bool> {
        on_conn!(self, |c| claim_due(
            c,
            Outbox::Callbacks,
            outbox_id,
            now,
            until
        ))
    }

    async fn next_delivery_due(&self) -> StoreResult<Option<i64>> {
        on_conn!(self, |c| callbacks::next_due(c))
    }

    async fn end_delivery(&self, outbox_id: i64, end: AttemptEnd, now: i64) -> StoreResult<()> {
        in_tx!(self, "recording a delivery try", |c, p| callbacks::end(
            c, outbox_id, &end, now
        ))
    }

    async fn prune_deliveries(&self, before: i64) -> StoreResult<u64> {
        in_tx!(self, "forgetting old deliveries", |c, p| callbacks::prune(
            c, before
        ))
    }

    async fn deliveries(
        &self,
        user_id: i64,
        public_id: &str,
        limit: u32,
    ) -> StoreResult<Option<Vec<DeliveryRow>>> {
        on_conn!(self, |c| callbacks::deliveries(
            c, user_id, public_id, limit
        ))
    }

    async fn create_api_key(&self, key: NewApiKey) -> StoreResult<ApiKeyRecord> {
        in_tx!(self, "creating an API key", |c, p| bridge::create_key(
            c, &key
        ))
    }

    async fn api_keys(&self) -> StoreResult<Vec<ApiKeyRecord>> {
        on_conn!(self, |c| bridge::all_keys(c))
    }

    async fn revoke_api_key(&self, public_id: &str, now: i64) -> StoreResult<bool> {
        in_tx!(self, "revoking an API key", |c, p| bridge::revoke_key(
            c, public_id, now
        ))
    }

    async fn api_key_by_hash(&self, key_hash: &str) -> StoreResult<Option<ApiKeyRecord>> {
        on_conn!(self, |c| bridge::key_by_hash(c, key_hash))
    }

    async fn send_outbound(&self, msg: NewMessage, out: Outbound) -> StoreResult<SentMessage> {
        in_tx!(self, "sending a message out", |c, p| bridge::send_outbound(
            c, &msg, &out, &mut p
        ))
    }

    async fn receive_inbound(&self, msg: NewMessage, from: ContactRef) -> StoreResult<SentMessage> {
        in_tx!(self, "receiving a message from outside", |c, p| {
            bridge::receive_inbound(c, &msg, &from, &mut p)
        })
    }

    async fn due_outbound(&self, now: i64, limit: u32) -> StoreResult<Vec<OutboundItem>> {
        on_conn!(self, |c| bridge::due(c, now, limit))
    }

    async fn claim_outbound(&self, id: i64, now: i64, until: i64) -> StoreResult<bool> {
        on_conn!(self, |c| claim_due(c, Outbox::Bridge, id, now, until))
    }

    async fn next_outbound_due(&self) -> StoreResult<Option<i64>> {
        on_conn!(self, |c| bridge::next_due(c))
    }

    async fn end_outbound(&self, id: i64, end: OutboundEnd, now: i64) -> StoreResult<()> {
        in_tx!(self, "recording an outbound try", |c, p| bridge::end(
            c, id, &end, now
        ))
    }

    async fn message_status(
        &self,
        sender_id: i64,
        message_id: &str,
    ) -> StoreResult<Option<MessageStatusRow>> {
        on_conn!(self, |c| bridge::status(c, sender_id, message_id))
    }

    fn shared(&self) -> bool {
        true
    }

    async fn ping(&self) -> StoreResult<()> {
        let conn = self.conn().await?;
        conn.simple_query("SELECT 1")
            .await
            .map(drop)
            .map_err(pg("checking the database"))
    }

    async fn close(&self) {
        self.stop.cancel();
        let handle = self.doorbell.lock().ok().and_then(|mut g| g.take());
        if let Some(h) = handle {
            let _ = h.await;
        }
        self.conns.pool.close();
    }
}
