//! SQLite backend: one writer thread with group commit, a pool of readers (WAL).
//!
//! Every write is a job sent to the writer thread. The writer takes all jobs that are waiting
//! (up to a batch limit), runs them in one transaction, commits once (one fsync for the whole
//! batch) and only then answers each job and shared pollers. So a 2xx answer always means
//! "committed", and many concurrent senders share one fsync. A job makes every check that can
//! refuse its request before its first write, so a refusal leaves nothing behind for the batch
//! to commit; a database error rolls the whole batch back and fails every job in it.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::mpsc;
use std::thread::JoinHandle;

use async_trait::async_trait;
use r2d2_sqlite::SqliteConnectionManager;
use rusqlite::Connection;
use rusqlite_migration::{M, Migrations};
use tokio::sync::oneshot;

use super::{
    ApiKeyRecord, ContactRef, MessageStatusRow, NewApiKey, Outbound, OutboundEnd, OutboundItem,
};
use super::{
    AttemptEnd, CallbackChange, CallbackRecord, DeliveryRow, NewCallback, OutboxItem, QueuedEvent,
};
use super::{
    AuthPressure, CodeAttempt, Conversation, FileRecord, LanguagePrefs, LoginOutcome, NewChallenge,
    NewGroup, NewMessage, PresenceUpdate, Registration, Report, SentMessage, SessionInfo, Store,
    StoreError, StoreResult, User, VoiceContext, VoiceJob, VoiceJobEnd,
};
use crate::api::directory::DirectoryEntry;
use crate::api::groups::{GroupInfo, JoinRequest, Member};
use crate::api::messages::Caption;
use crate::api::messages::{ConversationSummary, Message};
use crate::relay::hub::Hub;

mod bridge;
mod callbacks;
mod files;
mod groups;
mod identity;
mod messages;
mod voice;

/// Most jobs committed in one transaction.
const MAX_BATCH: usize = 1024;

const MIGRATIONS: &[M<'static>] = &[
    M::up(include_str!("migrations/001_init.sql")),
    M::up(include_str!("migrations/002_files_groups_events.sql")),
    M::up(include_str!("migrations/003_language_prefs.sql")),
    M::up(include_str!("migrations/004_stream_positions.sql")),
    M::up(include_str!("migrations/005_conversation_key.sql")),
    M::up(include_str!("migrations/006_login_challenges.sql")),
    M::up(include_str!(
        "migrations/007_client_ids_and_message_files.sql"
    )),
    M::up(include_str!("migrations/008_voice.sql")),
    M::up(include_str!("migrations/009_callbacks.sql")),
    M::up(include_str!("migrations/010_bridge.sql")),
];

/// How hard a commit waits for the disk.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SyncMode {
    /// fsync the WAL at every commit: an acknowledged write survives power loss.
    Full,
    /// fsync only at checkpoints: survives a crash of the relay, not of the machine.
    Normal,
}

#[derive(Debug, Clone)]
pub struct SqliteOptions {
    pub path: PathBuf,
    pub sync: SyncMode,
    pub readers: u32,
}

/// What the writer's jobs share besides the connection: wakeups to ring after the commit,
/// and each identity's stream position. The writer is the only one that hands out positions,
/// so it keeps them in memory (read once from `MAX(seq)`), saving a row update per delivery.
/// Likewise the direct-conversation pairs it knows are recorded, so a message to a known
/// peer skips two lookups.
pub(super) struct WriterState {
    pub wakes: Vec<(i64, u64, Option<Arc<Message>>)>,
    pub seqs: HashMap<i64, u64>,
    pub known_peers: std::collections::HashSet<(i64, i64)>,
    /// Whether anyone has a receive language (so text may need translating); `None` until
    /// looked up, and again after someone changes theirs. Saves a lookup per message while
    /// nobody uses translation.
    pub languages_in_use: Option<bool>,
}

/// How a job ended, for the batch it is in.
enum JobEnd {
    Done,
    /// Refused before writing anything (a domain error): the batch goes on.
    Refused,
    /// The database failed mid-job: the whole batch is rolled back.
    Fatal(String),
}

/// A pending write, type-erased so one queue carries them all.
///
/// Jobs check everything that can refuse a request before their first write, so a refusal
/// leaves nothing to undo and no savepoint is needed; any database error fails the batch.
trait WriteJob: Send {
    fn run(&mut self, conn: &Connection, shared: &mut WriterState) -> JobEnd;
    /// Answers the caller once the batch's fate is known.
    fn finish(self: Box<Self>, committed: Result<(), String>);
}

type Outcome<R> = Option<StoreResult<R>>;

struct TypedJob<R, F> {
    action: &'static str,
    work: Option<F>,
    outcome: Outcome<R>,
    reply: oneshot::Sender<StoreResult<R>>,
}

impl<R, F> WriteJob for TypedJob<R, F>
where
    R: Send + 'static,
    F: FnOnce(&Connection, &mut WriterState) -> StoreResult<R> + Send + 'static,
{
    fn run(&mut self, conn: &Connection, shared: &mut WriterState) -> JobEnd {
        let Some(work) = self.work.take() else {
            return JobEnd::Refused;
        };
        let result = work(conn, shared);
        let end = match &result {
            Ok(_) => JobEnd::Done,
            Err(e) if e.is_refusal() => JobEnd::Refused,
            Err(e) => JobEnd::Fatal(e.to_string()),
        };
        self.outcome = Some(result);
        end
    }

    fn finish(self: Box<Self>, committed: Result<(), String>) {
        let answer = match (self.outcome, committed) {
            (Some(Err(e)), _) => Err(e),
            (Some(Ok(r)), Ok(())) => Ok(r),
            (Some(Ok(_)), Err(e)) | (None, Err(e)) => Err(StoreError::Commit {
                action: self.action,
                message: e,
            }),
            (None, Ok(())) => Err(StoreError::WriterGone),
        };
        // The caller may have gone away (client disconnected); the write stands regardless.
        let _ = self.reply.send(answer);
    }
}

pub struct SqliteStore {
    writer: std::sync::Mutex<Option<mpsc::Sender<Box<dyn WriteJob>>>>,
    writer_thread: std::sync::Mutex<Option<JoinHandle<()>>>,
    checkpointer: std::sync::Mutex<Option<(Arc<std::sync::atomic::AtomicBool>, JoinHandle<()>)>>,
    readers: r2d2::Pool<SqliteConnectionManager>,
    path: PathBuf,
}

pub(super) fn sqlite_err(action: &'static str) -> impl FnOnce(rusqlite::Error) -> StoreError {
    move |source| StoreError::Sqlite { action, source }
}

fn pragmas(sync: SyncMode) -> String {
    let sync = match sync {
        SyncMode::Full => "FULL",
        SyncMode::Normal => "NORMAL",
    };
    format!(
        "PRAGMA journal_mode = WAL;
         PRAGMA synchronous = {sync};
         PRAGMA busy_timeout = 5000;
         PRAGMA foreign_keys = ON;
         PRAGMA temp_store = MEMORY;"
    )
}

/// Brings an existing database to the newest schema, as starting a relay on it would (before
/// `relay migrate` copies it elsewhere).
pub fn upgrade_file(path: &Path) -> StoreResult<()> {
    let path_text = path.display().to_string();
    let mut conn = Connection::open_with_flags(path, rusqlite::OpenFlags::SQLITE_OPEN_READ_WRITE)
        .map_err(|source| StoreError::Open {
        path: path_text.clone(),
        source,
    })?;
    Migrations::from_slice(MIGRATIONS)
        .to_latest(&mut conn)
        .map_err(|source| StoreError::Migration {
            path: path_text,
            source,
        })
}

impl SqliteStore {
    /// Opens (creating and migrating) the database and starts the writer thread.
    pub fn open(opts: SqliteOptions, hub: Arc<Hub>) -> StoreResult<SqliteStore> {
        let path_text = opts.path.display().to_string();
        let open_err = |source| StoreError::Open {
            path: path_text.clone(),
            source,
        };
        let mut conn = Connection::open(&opts.path).map_err(open_err)?;
        // 2 KiB pages: a commit rewrites every index leaf it touches, and a batch of
        // messages to different people touches many; smaller leaves cut the WAL bytes
        // per message (benchmarked: +25% messages/s, -12% CPU per message). Only
        // takes effect on a new database, so existing ones keep their page size.
        conn.execute_batch(&format!("PRAGMA page_size = 2048; {}", pragmas(opts.sync)))
            .map_err(open_err)?;
        Migrations::from_slice(MIGRATIONS)
            .to_latest(&mut conn)
            .map_err(|source| StoreError::Migration {
                path: path_text.clone(),
                source,
            })?;

        let init_sql = pragmas(opts.sync);
        let manager = SqliteConnectionManager::file(&opts.path)
            .with_init(move |c| c.execute_batch(&init_sql));
        let readers = r2d2::Pool::builder()
            .max_size(opts.readers.max(1))
            .build(manager)?;

        // The writer never checkpoints inline; a thread of its own does.
        conn.execute_batch("PRAGMA wal_autocheckpoint = 0; PRAGMA cache_size = -65536;")
            .map_err(open_err)?;
        let checkpointer = Connection::open(&opts.path).map_err(open_err)?;
        checkpointer
            .execute_batch("PRAGMA busy_timeout = 5000; PRAGMA journal_size_limit = 67108864;")
            .map_err(open_err)?;
        let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let checkpoint_thread = {
            let stop = stop.clone();
            std::thread::Builder::new()
                .name("sqlite-checkpoint".into())
                .spawn(move || checkpoint_loop(checkpointer, stop))
                .map_err(|e| StoreError::Join(format!("starting the checkpoint thread: {e}")))?
        };

        let (tx, rx) = mpsc::channel::<Box<dyn WriteJob>>();
        let thread = std::thread::Builder::new()
            .name("sqlite-writer".into())
            .spawn(move || writer_loop(conn, rx, hub))
            .map_err(|e| StoreError::Join(format!("starting the writer thread: {e}")))?;

        Ok(SqliteStore {
            writer: std::sync::Mutex::new(Some(tx)),
            writer_thread: std::sync::Mutex::new(Some(thread)),
            checkpointer: std::sync::Mutex::new(Some((stop, checkpoint_thread))),
            readers,
            path: opts.path,
        })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Queues a write and waits until it is committed (or failed).
    async fn write<R, F>(&self, action: &'static str, work: F) -> StoreResult<R>
    where
        R: Send + 'static,
        F: FnOnce(&Connection, &mut WriterState) -> StoreResult<R> + Send + 'static,
    {
        let (reply, answer) = oneshot::channel();
        let job = Box::new(TypedJob {
            action,
            work: Some(work),
            outcome: None,
            reply,
        });
        {
            let guard = self.writer.lock().map_err(|_| StoreError::WriterGone)?;
            let sender = guard.as_ref().ok_or(StoreError::WriterGone)?;
            sender.send(job).map_err(|_| StoreError::WriterGone)?;
        }
        answer.await.map_err(|_| StoreError::WriterGone)?
    }

    /// Runs a read on a pooled connection off the async threads.
    async fn read<R, F>(&self, work: F) -> StoreResult<R>
    where
        R: Send + 'static,
        F: FnOnce(&Connection) -> StoreResult<R> + Send + 'static,
    {
        let pool = self.readers.clone();
        tokio::task::spawn_blocking(move || {
            let conn = pool.get()?;
            work(&conn)
        })
        .await
        .map_err(|e| StoreError::Join(e.to_string()))?
    }
}

fn writer_loop(conn: Connection, rx: mpsc::Receiver<Box<dyn WriteJob>>, hub: Arc<Hub>) {
    let mut shared = WriterState {
        wakes: Vec::new(),
        seqs: HashMap::new(),
        known_peers: Default::default(),
        languages_in_use: None,
    };
    while let Ok(first) = rx.recv() {
        let mut batch = vec![first];
        while batch.len() < MAX_BATCH {
            match rx.try_recv() {
                Ok(job) => batch.push(job),
                Err(_) => break,
            }
        }
        shared.wakes.clear();
        let committed = run_batch(&conn, &mut batch, &mut shared);
        match &committed {
            Ok(()) => {
                for (user, seq, event) in shared.wakes.drain(..) {
                    hub.notify(user, seq, event);
                }
            }
            Err(e) => {
                // Rolled back: positions handed out in this batch were not kept.
                shared.seqs.clear();
                shared.known_peers.clear();
                shared.languages_in_use = None;
                tracing::error!(error = %e, jobs = batch.len(), "write batch failed");
            }
        }
        for job in batch {
            job.finish(committed.clone());
        }
    }
}

fn exec(conn: &Connection, sql: &str) -> rusqlite::Result<()> {
    conn.prepare_cached(sql)?.execute([]).map(|_| ())
}

fn run_batch(
    conn: &Connection,
    batch: &mut [Box<dyn WriteJob>],
    shared: &mut WriterState,
) -> Result<(), String> {
    exec(conn, "BEGIN IMMEDIATE").map_err(|e| format!("begin: {e}"))?;
    for job in batch.iter_mut() {
        if let JobEnd::Fatal(e) = job.run(conn, shared) {
            let _ = exec(conn, "ROLLBACK");
            return Err(e);
        }
    }
    if let Err(e) = exec(conn, "COMMIT") {
        let _ = exec(conn, "ROLLBACK");
        return Err(format!("commit: {e}"));
    }
    Ok(())
}

/// Copies the WAL into the database in the background, so the writer never stops to do it.
/// Passive checkpoints never block readers or the writer.
fn checkpoint_loop(conn: Connection, stop: Arc<std::sync::atomic::AtomicBool>) {
    while !stop.load(std::sync::atomic::Ordering::Relaxed) {
        std::thread::sleep(std::time::Duration::from_millis(200));
        if let Err(e) = conn.execute_batch("PRAGMA wal_checkpoint(PASSIVE)") {
            tracing::warn!("checkpoint: {e}");
        }
    }
    let _ = conn.execute_batch("PRAGMA wal_checkpoint(TRUNCATE)");
}

pub(super) fn random_hex(bytes: usize) -> String {
    let mut buf = vec![0u8; bytes];
    rand::fill(&mut buf[..]);
    hex::encode(buf)
}

#[async_trait]
impl Store for SqliteStore {
    async fn auth_pressure(
        &self,
        email: &str,
        client: &str,
        short_since: i64,
        long_since: i64,
    ) -> StoreResult<AuthPressure> {
        let (email, client) = (email.to_string(), client.to_string());
        self.read(move |c| identity::auth_pressure(c, &email, &client, short_since, long_since))
            .await
    }

    async fn put_challenge(&self, challenge: NewChallenge) -> StoreResult<()> {
        self.write("storing a login challenge", move |c, _| {
            identity::put_challenge(c, &challenge)
        })
        .await
    }

    async fn verify_and_login(
        &self,
        attempt: CodeAttempt,
        reg: Registration,
        token_hash: &str,
        session_expires_at: i64,
    ) -> StoreResult<LoginOutcome> {
        let token_hash = token_hash.to_string();
        self.write("logging in", move |c, _| {
            identity::login(c, &attempt, &reg, &token_hash, session_expires_at)
        })
        .await
    }

    async fn sweep_auth(&self, events_before: i64, now: i64) -> StoreResult<()> {
        self.write("sweeping login activity", move |c, _| {
            identity::sweep_auth(c, events_before, now)
        })
        .await
    }

    async fn session(&self, token_hash: &str, now: i64) -> StoreResult<Option<SessionInfo>> {
        let token_hash = token_hash.to_string();
        self.read(move |c| identity::session(c, &token_hash, now))
            .await
    }

    async fn end_session(&self, session_id: i64, now: i64) -> StoreResult<()> {
        self.write("ending a session", move |c, _| {
            identity::end_session(c, session_id, now)
        })
        .await
    }

    async fn user_by_address(&self, address: &str) -> StoreResult<Option<User>> {
        let address = address.to_string();
        self.read(move |c| identity::user_by_address(c, &address))
            .await
    }

    async fn user_by_email(&self, email: &str) -> StoreResult<Option<User>> {
        let email = email.to_string();
        self.read(move |c| identity::user_by_email(c, &email)).await
    }

    async fn language_prefs(&self, user_id: i64) -> StoreResult<LanguagePrefs> {
        self.read(move |c| voice::language_prefs(c, user_id)).await
    }

    async fn set_language_prefs(
        &self,
        user_id: i64,
        language: Option<Option<String>>,
        read_aloud: Option<bool>,
    ) -> StoreResult<()> {
        self.write("saving language prefs", move |c, w| {
            voice::set_language_prefs(
                c,
                user_id,
                language.as_ref().map(|l| l.as_deref()),
                read_aloud,
                w,
            )
        })
        .await
    }

    async fn next_voice_job(&self, voice: bool, now: i64) -> StoreResult<Option<VoiceJob>> {
        self.write("claiming a voice job", move |c, _| {
            voice::next_job(c, voice, now)
        })
        .await
    }

    async fn shed_voice_jobs(&self, keep: u64) -> StoreResult<Vec<i64>> {
        self.write("shedding voice jobs", move |c, _| voice::shed(c, keep))
            .await
    }

    async fn end_voice_job(&self, id: i64, end: VoiceJobEnd) -> StoreResult<()> {
        self.write("ending a voice job", move |c, _| {
            voice::end_job(c, id, &end)
        })
        .await
    }

    async fn voice_backlog(&self) -> StoreResult<u64> {
        self.read(voice::backlog).await
    }

    async fn requeue_running_voice_jobs(&self) -> StoreResult<u64> {
        self.write("requeueing voice jobs", |c, _| voice::requeue_running(c))
            .await
    }

    async fn voice_context(&self, message_rowid: i64) -> StoreResult<Option<VoiceContext>> {
        self.read(move |c| voice::context(c, message_rowid)).await
    }

    async fn set_transcript(
        &self,
        message_rowid: i64,
        caption: Caption,
        language: Option<String>,
    ) -> StoreResult<()> {
        self.write("recording a transcript", move |c, _| {
            voice::set_transcript(c, message_rowid, &caption, language.as_deref())
        })
        .await
    }

    async fn add_caption(
        &self,
        message_rowid: i64,
        user_id: i64,
        caption: Caption,
        now: i64,
    ) -> StoreResult<()> {
        self.write("delivering a caption", move |c, w| {
            voice::add_caption(c, message_rowid, user_id, &caption, now, w)
        })
        .await
    }

    async fn set_profile(
        &self,
        user_id: i64,
        display_name: Option<String>,
        public_visible: Option<bool>,
    ) -> StoreResult<()> {
        self.write("updating a profile", move |c, _| {
            identity::set_profile(c, user_id, display_name.as_deref(), public_visible)
        })
        .await
    }

    async fn conversations(&self, user_id: i64) -> StoreResult<Vec<ConversationSummary>> {
        self.read(move |c| messages::conversations(c, user_id))
            .await
    }

    async fn set_presence(
        &self,
        user_id: i64,
        update: PresenceUpdate,
        now: i64,
    ) -> StoreResult<()> {
        self.write("updating presence", move |c, _| {
            identity::set_presence(c, user_id, &update, now)
        })
        .await
    }

    async fn directory(
        &self,
        query: &str,
        limit: u32,
        fresh_after: i64,
    ) -> StoreResult<Vec<DirectoryEntry>> {
        let needle = query.trim().to_lowercase();
        self.read(move |c| identity::directory(c, &needle, limit, fresh_after))
            .await
    }

    async fn send(&self, msg: NewMessage) -> StoreResult<SentMessage> {
        self.write("sending a message", move |c, w: &mut WriterState| {
            messages::send(c, &msg, w)
        })
        .await
    }

    async fn poll(&self, user_id: i64, after: u64, limit: u32) -> StoreResult<Vec<Message>> {
        self.read(move |c| messages::poll(c, user_id, after, limit))
            .await
    }

    async fn stream_head(&self, user_id: i64) -> StoreResult<u64> {
        self.read(move |c| messages::stream_head(c, user_id)).await
    }

    async fn session_cursor(&self, session_id: i64) -> StoreResult<u64> {
        self.read(move |c| messages::session_cursor(c, session_id))
            .await
    }

    async fn advance_session_cursor(
        &self,
        session_id: i64,
        from: u64,
        to: u64,
    ) -> StoreResult<bool> {
        self.write("advancing a claim cursor", move |c, _| {
            messages::advance_session_cursor(c, session_id, from, to)
        })
        .await
    }

    async fn ack_session_cursor(&self, session_id: i64, to: u64) -> StoreResult<u64> {
        self.write("acknowledging a cursor", move |c, _| {
            messages::ack_session_cursor(c, session_id, to)
        })
        .await
    }

    async fn edit(&self, actor: i64, message_id: &str, text: String, now: i64) -> StoreResult<()> {
        let message_id = message_id.to_string();
        self.write("editing a message", move |c, w: &mut WriterState| {
            messages::edit(c, actor, &message_id, &text, now, w)
        })
        .await
    }

    async fn delete(&self, actor: i64, message_id: &str, now: i64) -> StoreResult<Vec<String>> {
        let message_id = message_id.to_string();
        self.write("deleting a message", move |c, w: &mut WriterState| {
            messages::delete(c, actor, &message_id, now, w)
        })
        .await
    }

    async fn mark_read(&self, reader: i64, message_id: &str, now: i64) -> StoreResult<()> {
        let message_id = message_id.to_string();
        self.write("recording a read receipt", move |c, w: &mut WriterState| {
            messages::mark_read(c, reader, &message_id, now, w)
        })
        .await
    }

    async fn history(
        &self,
        user_id: i64,
        with: Conversation,
        before: Option<i64>,
        limit: u32,
    ) -> StoreResult<Vec<(i64, Message)>> {
        self.read(move |c| messages::history(c, user_id, &with, before, limit))
            .await
    }

    async fn put_file(&self, file: FileRecord) -> StoreResult<()> {
        self.write("recording an upload", move |c, _| files::put_file(c, &file))
            .await
    }

    async fn file(&self, public_id: &str) -> StoreResult<Option<FileRecord>> {
        let public_id = public_id.to_string();
        self.read(move |c| files::file(c, &public_id)).await
    }

    async fn create_group(&self, group: NewGroup) -> StoreResult<()> {
        self.write("creating a group", move |c, _| groups::create(c, &group))
            .await
    }

    async fn groups_for(&self, user_id: i64) -> StoreResult<Vec<GroupInfo>> {
        self.read(move |c| groups::list_for(c, user_id)).await
    }

    async fn add_member(
        &self,
        actor: i64,
        group: &str,
        address: &str,
        role: &str,
        now: i64,
    ) -> StoreResult<()> {
        let (group, address, role) = (group.to_string(), address.to_string(), role.to_string());
        self.write("adding a group member", move |c, _| {
            groups::add_member(c, actor, &group, &address, &role, now)
        })
        .await
    }

    async fn remove_member(&self, actor: i64, group: &str, address: &str) -> StoreResult<()> {
        let (group, address) = (group.to_string(), address.to_string());
        self.write("removing a group member", move |c, _| {
            groups::remove_member(c, actor, &group, &address)
        })
        .await
    }

    async fn members(&self, actor: i64, group: &str) -> StoreResult<Vec<Member>> {
        let group = group.to_string();
        self.read(move |c| groups::members(c, actor, &group)).await
    }

    async fn join_or_request(&self, user_id: i64, group: &str, now: i64) -> StoreResult<bool> {
        let group = group.to_string();
        self.write("joining a group", move |c, _| {
            groups::join_or_request(c, user_id, &group, now)
        })
        .await
    }

    async fn join_requests(&self, actor: i64, group: &str) -> StoreResult<Vec<JoinRequest>> {
        let group = group.to_string();
        self.read(move |c| groups::join_requests(c, actor, &group))
            .await
    }

    async fn decide_join(
        &self,
        actor: i64,
        group: &str,
        address: &str,
        accept: bool,
        now: i64,
    ) -> StoreResult<()> {
        let (group, address) = (group.to_string(), address.to_string());
        self.write("deciding a join request", move |c, _| {
            groups::decide_join(c, actor, &group, &address, accept, now)
        })
        .await
    }

    async fn report(
        &self,
        reporter: i64,
        message_id: Option<String>,
        address: Option<String>,
        reason: String,
        now: i64,
    ) -> StoreResult<()> {
        self.write("recording a report", move |c, _| {
            files::report(
                c,
                reporter,
                message_id.as_deref(),
                address.as_deref(),
                &reason,
                now,
            )
        })
        .await
    }

    async fn reports(&self) -> StoreResult<Vec<Report>> {
        self.read(files::reports).await
    }

    async fn create_callback(&self, cb: NewCallback) -> StoreResult<CallbackRecord> {
        self.write("creating a callback", move |c, _| callbacks::create(c, &cb))
            .await
    }

    async fn callbacks_of(&self, user_id: i64) -> StoreResult<Vec<CallbackRecord>> {
        self.read(move |c| callbacks::of_user(c, user_id)).await
    }

    async fn enabled_callbacks(&self) -> StoreResult<Vec<CallbackRecord>> {
        self.read(callbacks::enabled).await
    }

    async fn callback(&self, user_id: i64, public_id: &str) -> StoreResult<Option<CallbackRecord>> {
        let id = public_id.to_string();
        self.read(move |c| callbacks::find(c, user_id, &id)).await
    }

    async fn delete_callback(&self, user_id: i64, public_id: &str) -> StoreResult<bool> {
        let id = public_id.to_string();
        self.write("deleting a callback", move |c, _| {
            callbacks::delete(c, user_id, &id)
        })
        .await
    }

    async fn change_callback(
        &self,
        user_id: i64,
        public_id: &str,
        change: CallbackChange,
    ) -> StoreResult<Option<(CallbackRecord, u64)>> {
        let id = public_id.to_string();
        self.write("changing a callback", move |c, _| {
            callbacks::change(c, user_id, &id, &change)
        })
        .await
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
        self.write("queueing callback events", move |c, _| {
            callbacks::queue(c, callback_id, from, to, &events, now, give_up_at)
        })
        .await
    }

    async fn due_deliveries(&self, now: i64, limit: u32) -> StoreResult<Vec<OutboxItem>> {
        self.read(move |c| callbacks::due(c, now, limit)).await
    }

    async fn next_delivery_due(&self) -> StoreResult<Option<i64>> {
        self.read(callbacks::next_due).await
    }

    async fn end_delivery(&self, outbox_id: i64, end: AttemptEnd, now: i64) -> StoreResult<()> {
        self.write("recording a delivery try", move |c, _| {
            callbacks::end(c, outbox_id, &end, now)
        })
        .await
    }

    async fn prune_deliveries(&self, before: i64) -> StoreResult<u64> {
        self.write("forgetting old deliveries", move |c, _| {
            callbacks::prune(c, before)
        })
        .await
    }

    async fn deliveries(
        &self,
        user_id: i64,
        public_id: &str,
        limit: u32,
    ) -> StoreResult<Option<Vec<DeliveryRow>>> {
        let id = public_id.to_string();
        self.read(move |c| callbacks::deliveries(c, user_id, &id, limit))
            .await
    }

    async fn create_api_key(&self, key: NewApiKey) -> StoreResult<ApiKeyRecord> {
        self.write("creating an API key", move |c, _| {
            bridge::create_key(c, &key)
        })
        .await
    }

    async fn api_keys(&self) -> StoreResult<Vec<ApiKeyRecord>> {
        self.read(bridge::all_keys).await
    }

    async fn revoke_api_key(&self, public_id: &str, now: i64) -> StoreResult<bool> {
        let id = public_id.to_string();
        self.write("revoking an API key", move |c, _| {
            bridge::revoke_key(c, &id, now)
        })
        .await
    }

    async fn api_key_by_hash(&self, key_hash: &str) -> StoreResult<Option<ApiKeyRecord>> {
        let hash = key_hash.to_string();
        self.read(move |c| bridge::key_by_hash(c, &hash)).await
    }

    async fn send_outbound(&self, msg: NewMessage, out: Outbound) -> StoreResult<SentMessage> {
        self.write("sending a message out", move |c, w: &mut WriterState| {
            bridge::send_outbound(c, &msg, &out, w)
        })
        .await
    }

    async fn receive_inbound(&self, msg: NewMessage, from: ContactRef) -> StoreResult<SentMessage> {
        self.write(
            "receiving a bridge message",
            move |c, w: &mut WriterState| bridge::receive_inbound(c, &msg, &from, w),
        )
        .await
    }

    async fn due_outbound(&self, now: i64, limit: u32) -> StoreResult<Vec<OutboundItem>> {
        self.read(move |c| bridge::due(c, now, limit)).await
    }

    async fn next_outbound_due(&self) -> StoreResult<Option<i64>> {
        self.read(bridge::next_due).await
    }

    async fn end_outbound(&self, id: i64, end: OutboundEnd, now: i64) -> StoreResult<()> {
        self.write("recording an outbound try", move |c, _| {
            bridge::end(c, id, &end, now)
        })
        .await
    }

    async fn message_status(
        &self,
        sender_id: i64,
        message_id: &str,
    ) -> StoreResult<Option<MessageStatusRow>> {
        let id = message_id.to_string();
        self.read(move |c| bridge::status(c, sender_id, &id)).await
    }

    async fn close(&self) {
        // Dropping the sender ends the writer loop once queued jobs are committed.
        if let Ok(mut guard) = self.writer.lock() {
            guard.take();
        }
        let handle = self.writer_thread.lock().ok().and_then(|mut g| g.take());
        if let Some(handle) = handle {
            let _ = tokio::task::spawn_blocking(move || handle.join()).await;
        }
        let checkpointer = self.checkpointer.lock().ok().and_then(|mut g| g.take());
        if let Some((stop, handle)) = checkpointer {
            stop.store(true, std::sync::atomic::Ordering::Relaxed);
            let _ = tokio::task::spawn_blocking(move || handle.join()).await;
        }
    }
}

/// An in-memory database at the newest schema, for unit tests of the queries.
#[cfg(test)]
pub(super) fn migrated(conn: &mut Connection) -> Result<(), rusqlite_migration::Error> {
    Migrations::from_slice(MIGRATIONS).to_latest(conn)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A database written before migration 005 gets conversation keys for its messages and
    /// its direct peers, so its history and conversation list read as before.
    #[test]
    fn migration_005_keys_existing_messages() -> Result<(), Box<dyn std::error::Error>> {
        let mut conn = Connection::open_in_memory()?;
        let migrations = Migrations::from_slice(MIGRATIONS);
        migrations.to_version(&mut conn, 4)?;
        conn.execute_batch(
            "INSERT INTO users (id, email, chat_address, display_name, created_at)
                 VALUES (1, 'a@x', 'ann', 'Ann', 0), (2, 'b@x', 'bob', 'Bob', 0),
                        (7, 'c@x', 'cy', 'Cy', 0);
             INSERT INTO groups (id, public_id, name, visibility, mode, created_by, created_at)
                 VALUES (3, 'g1', 'G', 'private', 'chat', 1, 0);
             INSERT INTO messages (public_id, sender_id, to_target, group_id, text, created_at)
                 VALUES ('m1', 7, 'ann', NULL, 'hi', 0), ('m2', 1, 'cy', NULL, 'yo', 0),
                        ('m3', 2, 'group:g1', 'g1', 'all', 0);",
        )?;
        migrations.to_latest(&mut conn)?;

        let keys: Vec<(String, i64)> = conn
            .prepare("SELECT public_id, conv FROM messages ORDER BY id")?
            .query_map([], |r| Ok((r.get(0)?, r.get(1)?)))?
            .collect::<Result<_, _>>()?;
        let dm = messages::dm_conv(1, 7);
        assert_eq!(dm, messages::dm_conv(7, 1));
        assert_eq!(
            keys,
            [("m1".into(), dm), ("m2".into(), dm), ("m3".into(), -3)]
        );
        let peers: Vec<(i64, i64)> = conn
            .prepare("SELECT user_id, peer_id FROM dm_peers ORDER BY 1, 2")?
            .query_map([], |r| Ok((r.get(0)?, r.get(1)?)))?
            .collect::<Result<_, _>>()?;
        assert_eq!(peers, [(1, 7), (7, 1)]);

        let history = messages::history(&conn, 1, &Conversation::With("cy".into()), None, 10)?;
        let texts: Vec<&str> = history.iter().map(|(_, m)| m.text.as_str()).collect();
        assert_eq!(texts, ["hi", "yo"]);
        let convs = messages::conversations(&conn, 1)?;
        let with: Vec<&str> = convs.iter().map(|c| c.with.as_str()).collect();
        assert_eq!(with, ["cy"]);
        Ok(())
    }
}
