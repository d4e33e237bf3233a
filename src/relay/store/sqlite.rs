//! SQLite backend: one writer thread with group commit, a pool of readers (WAL).
//!
//! Every write is a job sent to the writer thread. The writer takes all jobs that are waiting
//! (up to a batch limit), runs each inside its own savepoint of one transaction, commits once
//! (one fsync for the whole batch) and only then answers each job and wakes pollers. So a 2xx
//! answer always means "committed", and many concurrent senders share one fsync.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::mpsc;
use std::thread::JoinHandle;

use async_trait::async_trait;
use r2d2_sqlite::SqliteConnectionManager;
use rusqlite::{Connection, OptionalExtension, params};
use rusqlite_migration::{M, Migrations};
use tokio::sync::oneshot;

use super::{
    CodeRejection, LoginOutcome, NewMessage, PresenceUpdate, Registration, SentMessage,
    SessionInfo, Store, StoreError, StoreResult, Target, User,
};
use crate::api::directory::DirectoryEntry;
use crate::api::messages::{Attachment, EventType, Message};
use crate::api::{Kind, rfc3339_from_millis};
use crate::relay::hub::Hub;

/// Most jobs committed in one transaction.
const MAX_BATCH: usize = 1024;

const MIGRATIONS: &[M<'static>] = &[M::up(include_str!("migrations/001_init.sql"))];

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

/// A pending write, type-erased so one queue carries them all.
trait WriteJob: Send {
    /// Runs the job's statements; false when it failed (the writer rolls back its savepoint).
    fn run(&mut self, conn: &Connection, wakes: &mut Vec<(i64, u64)>) -> bool;
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
    F: FnOnce(&Connection, &mut Vec<(i64, u64)>) -> StoreResult<R> + Send + 'static,
{
    fn run(&mut self, conn: &Connection, wakes: &mut Vec<(i64, u64)>) -> bool {
        let Some(work) = self.work.take() else {
            return false;
        };
        let result = work(conn, wakes);
        let ok = result.is_ok();
        self.outcome = Some(result);
        ok
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
    readers: r2d2::Pool<SqliteConnectionManager>,
    path: PathBuf,
}

fn sqlite_err(action: &'static str) -> impl FnOnce(rusqlite::Error) -> StoreError {
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

impl SqliteStore {
    /// Opens (creating and migrating) the database and starts the writer thread.
    pub fn open(opts: SqliteOptions, hub: Arc<Hub>) -> StoreResult<SqliteStore> {
        let path_text = opts.path.display().to_string();
        let mut conn = Connection::open(&opts.path).map_err(|source| StoreError::Open {
            path: path_text.clone(),
            source,
        })?;
        conn.execute_batch(&pragmas(opts.sync))
            .map_err(|source| StoreError::Open {
                path: path_text.clone(),
                source,
            })?;
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

        let (tx, rx) = mpsc::channel::<Box<dyn WriteJob>>();
        let thread = std::thread::Builder::new()
            .name("sqlite-writer".into())
            .spawn(move || writer_loop(conn, rx, hub))
            .map_err(|e| StoreError::Join(format!("starting the writer thread: {e}")))?;

        Ok(SqliteStore {
            writer: std::sync::Mutex::new(Some(tx)),
            writer_thread: std::sync::Mutex::new(Some(thread)),
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
        F: FnOnce(&Connection, &mut Vec<(i64, u64)>) -> StoreResult<R> + Send + 'static,
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
    while let Ok(first) = rx.recv() {
        let mut batch = vec![first];
        while batch.len() < MAX_BATCH {
            match rx.try_recv() {
                Ok(job) => batch.push(job),
                Err(_) => break,
            }
        }
        let mut wakes: Vec<(i64, u64)> = Vec::new();
        let committed = run_batch(&conn, &mut batch, &mut wakes);
        if committed.is_ok() {
            for (user, seq) in &wakes {
                hub.notify(*user, *seq);
            }
        } else {
            tracing::error!(error = ?committed, jobs = batch.len(), "write batch failed");
        }
        for job in batch {
            job.finish(committed.clone());
        }
    }
}

fn run_batch(
    conn: &Connection,
    batch: &mut [Box<dyn WriteJob>],
    wakes: &mut Vec<(i64, u64)>,
) -> Result<(), String> {
    conn.execute_batch("BEGIN IMMEDIATE")
        .map_err(|e| format!("begin: {e}"))?;
    for job in batch.iter_mut() {
        if let Err(e) = conn.execute_batch("SAVEPOINT job") {
            let _ = conn.execute_batch("ROLLBACK");
            return Err(format!("savepoint: {e}"));
        }
        let mut job_wakes = Vec::new();
        let ok = job.run(conn, &mut job_wakes);
        let end = if ok {
            wakes.extend(job_wakes);
            conn.execute_batch("RELEASE job")
        } else {
            conn.execute_batch("ROLLBACK TO job; RELEASE job")
        };
        if let Err(e) = end {
            let _ = conn.execute_batch("ROLLBACK");
            return Err(format!("ending savepoint: {e}"));
        }
    }
    if let Err(e) = conn.execute_batch("COMMIT") {
        let _ = conn.execute_batch("ROLLBACK");
        return Err(format!("commit: {e}"));
    }
    Ok(())
}

fn random_hex(bytes: usize) -> String {
    let mut buf = vec![0u8; bytes];
    rand::fill(&mut buf[..]);
    hex::encode(buf)
}

const USER_COLS: &str = "u.id, u.email, u.chat_address, u.display_name, u.kind, u.public_visible";

fn user_from_row(row: &rusqlite::Row<'_>, at: usize) -> rusqlite::Result<User> {
    let kind: String = row.get(at + 4)?;
    Ok(User {
        id: row.get(at)?,
        email: row.get(at + 1)?,
        chat_address: row.get(at + 2)?,
        display_name: row.get(at + 3)?,
        kind: Kind::parse(&kind).unwrap_or_default(),
        public_visible: row.get::<_, i64>(at + 5)? != 0,
    })
}

fn user_by_email(conn: &Connection, email: &str) -> StoreResult<Option<User>> {
    conn.prepare_cached(&format!(
        "SELECT {USER_COLS} FROM users u WHERE u.email = ?1"
    ))
    .and_then(|mut st| st.query_row([email], |r| user_from_row(r, 0)).optional())
    .map_err(sqlite_err("looking up a user by email"))
}

fn user_by_address(conn: &Connection, address: &str) -> StoreResult<Option<User>> {
    conn.prepare_cached(&format!(
        "SELECT {USER_COLS} FROM users u WHERE u.chat_address = ?1"
    ))
    .and_then(|mut st| st.query_row([address], |r| user_from_row(r, 0)).optional())
    .map_err(sqlite_err("looking up a user by address"))
}

/// Appends one event to a receiver's stream and records the wakeup.
fn deliver(
    conn: &Connection,
    user_id: i64,
    message_rowid: i64,
    event_id: Option<i64>,
    wakes: &mut Vec<(i64, u64)>,
) -> StoreResult<u64> {
    let seq: i64 = conn
        .prepare_cached("UPDATE users SET last_seq = last_seq + 1 WHERE id = ?1 RETURNING last_seq")
        .and_then(|mut st| st.query_row([user_id], |r| r.get(0)))
        .map_err(sqlite_err("advancing a stream"))?;
    conn.prepare_cached(
        "INSERT INTO deliveries (user_id, seq, message_id, event_id) VALUES (?1, ?2, ?3, ?4)",
    )
    .and_then(|mut st| st.execute(params![user_id, seq, message_rowid, event_id]))
    .map_err(sqlite_err("recording a delivery"))?;
    let seq = seq as u64;
    wakes.push((user_id, seq));
    Ok(seq)
}

fn login_tx(
    conn: &Connection,
    code_hash: &str,
    max_attempts: u32,
    reg: &Registration,
    token_hash: &str,
    now: i64,
    session_expires_at: i64,
) -> StoreResult<LoginOutcome> {
    let pending: Option<(String, i64, u32)> = conn
        .prepare_cached("SELECT code_hash, expires_at, attempts FROM login_codes WHERE email = ?1")
        .and_then(|mut st| {
            st.query_row([&reg.email], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))
                .optional()
        })
        .map_err(sqlite_err("reading a login code"))?;
    let Some((stored_hash, expires_at, attempts)) = pending else {
        return Ok(LoginOutcome::Rejected(CodeRejection::Expired));
    };
    if expires_at <= now {
        conn.execute("DELETE FROM login_codes WHERE email = ?1", [&reg.email])
            .map_err(sqlite_err("dropping an expired login code"))?;
        return Ok(LoginOutcome::Rejected(CodeRejection::Expired));
    }
    if attempts >= max_attempts {
        return Ok(LoginOutcome::Rejected(CodeRejection::Locked));
    }
    if stored_hash != code_hash {
        conn.execute(
            "UPDATE login_codes SET attempts = attempts + 1 WHERE email = ?1",
            [&reg.email],
        )
        .map_err(sqlite_err("counting a wrong login code"))?;
        return Ok(LoginOutcome::Rejected(CodeRejection::Wrong {
            remaining: max_attempts.saturating_sub(attempts + 1),
        }));
    }

    let user = match user_by_email(conn, &reg.email)? {
        Some(existing) => {
            let display_name = reg
                .display_name
                .clone()
                .filter(|n| !n.trim().is_empty())
                .unwrap_or(existing.display_name.clone());
            let kind = reg.kind.unwrap_or(existing.kind);
            let public_visible = reg.public_visible.unwrap_or(existing.public_visible);
            conn.execute(
                "UPDATE users SET display_name = ?1, kind = ?2, public_visible = ?3 WHERE id = ?4",
                params![
                    display_name,
                    kind.as_str(),
                    public_visible as i64,
                    existing.id
                ],
            )
            .map_err(sqlite_err("updating a user at login"))?;
            User {
                display_name,
                kind,
                public_visible,
                ..existing
            }
        }
        None => {
            if !reg.allow_new {
                return Ok(LoginOutcome::RegistrationClosed);
            }
            let address = match &reg.chat_address {
                Some(a) => {
                    if user_by_address(conn, a)?.is_some() {
                        return Ok(LoginOutcome::AddressTaken);
                    }
                    a.clone()
                }
                None => loop {
                    let candidate = random_hex(8);
                    if user_by_address(conn, &candidate)?.is_none() {
                        break candidate;
                    }
                },
            };
            let display_name = reg
                .display_name
                .clone()
                .filter(|n| !n.trim().is_empty())
                .unwrap_or_else(|| address.clone());
            let kind = reg.kind.unwrap_or_default();
            let public_visible = reg.public_visible.unwrap_or(true);
            conn.execute(
                "INSERT INTO users (email, chat_address, display_name, kind, public_visible, created_at)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
                params![reg.email, address, display_name, kind.as_str(), public_visible as i64, now],
            )
            .map_err(sqlite_err("creating a user"))?;
            User {
                id: conn.last_insert_rowid(),
                email: reg.email.clone(),
                chat_address: address,
                display_name,
                kind,
                public_visible,
            }
        }
    };

    conn.execute("DELETE FROM login_codes WHERE email = ?1", [&reg.email])
        .map_err(sqlite_err("consuming a login code"))?;
    // A new session continues from the furthest claim of the identity's earlier sessions,
    // so logging in again does not hand back what was already claimed.
    conn.execute(
        "INSERT INTO sessions (token_hash, user_id, created_at, expires_at, cursor)
         VALUES (?1, ?2, ?3, ?4, COALESCE((SELECT MAX(cursor) FROM sessions WHERE user_id = ?2), 0))",
        params![token_hash, user.id, now, session_expires_at],
    )
    .map_err(sqlite_err("creating a session"))?;
    Ok(LoginOutcome::LoggedIn {
        session_id: conn.last_insert_rowid(),
        user,
    })
}

fn send_tx(
    conn: &Connection,
    msg: &NewMessage,
    wakes: &mut Vec<(i64, u64)>,
) -> StoreResult<SentMessage> {
    let (to_target, group_id, recipients) = match &msg.target {
        Target::Address(address) => {
            let Some(user) = user_by_address(conn, address)? else {
                return Err(StoreError::UnknownRecipient(address.clone()));
            };
            (address.clone(), None::<String>, vec![user.id])
        }
        Target::Group(group) => return Err(StoreError::UnknownRecipient(format!("group:{group}"))),
    };
    let attachments = if msg.attachments.is_empty() {
        None
    } else {
        Some(
            serde_json::to_string(&msg.attachments).map_err(|e| StoreError::Commit {
                action: "encoding attachments",
                message: e.to_string(),
            })?,
        )
    };
    conn.prepare_cached(
        "INSERT INTO messages (public_id, sender_id, to_target, group_id, text, reply_to, attachments, created_at)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)",
    )
    .and_then(|mut st| {
        st.execute(params![
            msg.public_id,
            msg.sender_id,
            to_target,
            group_id,
            msg.text,
            msg.reply_to,
            attachments,
            msg.created_at
        ])
    })
    .map_err(sqlite_err("storing a message"))?;
    let rowid = conn.last_insert_rowid();
    for user_id in &recipients {
        deliver(conn, *user_id, rowid, None, wakes)?;
    }
    Ok(SentMessage {
        public_id: msg.public_id.clone(),
        created_at: msg.created_at,
        recipients: recipients.len(),
    })
}

const POLL_SQL: &str = "
SELECT d.seq,
       m.public_id, m.to_target, m.group_id, m.text, m.reply_to, m.attachments, m.created_at, m.deleted_at,
       su.chat_address, su.display_name, su.kind,
       e.kind, e.text, e.created_at,
       au.chat_address, au.display_name, au.kind
FROM deliveries d
JOIN messages m ON m.id = d.message_id
JOIN users su ON su.id = m.sender_id
LEFT JOIN events e ON e.id = d.event_id
LEFT JOIN users au ON au.id = e.actor_id
WHERE d.user_id = ?1 AND d.seq > ?2
ORDER BY d.seq
LIMIT ?3";

fn message_from_row(row: &rusqlite::Row<'_>) -> rusqlite::Result<Message> {
    let seq: i64 = row.get(0)?;
    let deleted_at: Option<i64> = row.get(8)?;
    let attachments: Option<String> = row.get(6)?;
    let attachments: Vec<Attachment> = match (deleted_at, attachments) {
        (None, Some(json)) => serde_json::from_str(&json).unwrap_or_default(),
        _ => Vec::new(),
    };
    let event_kind: Option<String> = row.get(12)?;
    let event_type = event_kind
        .as_deref()
        .and_then(EventType::parse)
        .unwrap_or(EventType::Message);
    let (from, from_name, from_kind, text, created_at) = match event_type {
        EventType::Message => (
            row.get::<_, String>(9)?,
            row.get::<_, String>(10)?,
            row.get::<_, String>(11)?,
            if deleted_at.is_some() {
                String::new()
            } else {
                row.get::<_, String>(4)?
            },
            row.get::<_, i64>(7)?,
        ),
        _ => (
            row.get::<_, String>(15)?,
            row.get::<_, String>(16)?,
            row.get::<_, String>(17)?,
            row.get::<_, Option<String>>(13)?.unwrap_or_default(),
            row.get::<_, i64>(14)?,
        ),
    };
    Ok(Message {
        cursor: seq.to_string(),
        event_type,
        message_id: row.get(1)?,
        from,
        from_name,
        from_kind: Kind::parse(&from_kind).unwrap_or_default(),
        to: row.get(2)?,
        text,
        created_at: rfc3339_from_millis(created_at),
        reply_to: row.get(5)?,
        group_id: row.get(3)?,
        attachments,
    })
}

#[async_trait]
impl Store for SqliteStore {
    async fn put_login_code(
        &self,
        email: &str,
        code_hash: &str,
        expires_at: i64,
    ) -> StoreResult<()> {
        let (email, code_hash) = (email.to_string(), code_hash.to_string());
        self.write("storing a login code", move |conn, _| {
            conn.execute(
                "INSERT INTO login_codes (email, code_hash, expires_at, attempts) VALUES (?1, ?2, ?3, 0)
                 ON CONFLICT(email) DO UPDATE SET code_hash = excluded.code_hash,
                     expires_at = excluded.expires_at, attempts = 0",
                params![email, code_hash, expires_at],
            )
            .map_err(sqlite_err("storing a login code"))?;
            Ok(())
        })
        .await
    }

    async fn verify_and_login(
        &self,
        code_hash: &str,
        max_attempts: u32,
        reg: Registration,
        token_hash: &str,
        now: i64,
        session_expires_at: i64,
    ) -> StoreResult<LoginOutcome> {
        let (code_hash, token_hash) = (code_hash.to_string(), token_hash.to_string());
        self.write("logging in", move |conn, _| {
            login_tx(
                conn,
                &code_hash,
                max_attempts,
                &reg,
                &token_hash,
                now,
                session_expires_at,
            )
        })
        .await
    }

    async fn session(&self, token_hash: &str, now: i64) -> StoreResult<Option<SessionInfo>> {
        let token_hash = token_hash.to_string();
        self.read(move |conn| {
            conn.prepare_cached(&format!(
                "SELECT s.id, s.expires_at, {USER_COLS} FROM sessions s JOIN users u ON u.id = s.user_id
                 WHERE s.token_hash = ?1 AND s.revoked_at IS NULL AND s.expires_at > ?2"
            ))
            .and_then(|mut st| {
                st.query_row(params![token_hash, now], |r| {
                    Ok(SessionInfo {
                        session_id: r.get(0)?,
                        expires_at: r.get(1)?,
                        user: user_from_row(r, 2)?,
                    })
                })
                .optional()
            })
            .map_err(sqlite_err("looking up a session"))
        })
        .await
    }

    async fn end_session(&self, session_id: i64, now: i64) -> StoreResult<()> {
        self.write("ending a session", move |conn, _| {
            conn.execute(
                "UPDATE sessions SET revoked_at = ?1 WHERE id = ?2 AND revoked_at IS NULL",
                params![now, session_id],
            )
            .map_err(sqlite_err("ending a session"))?;
            Ok(())
        })
        .await
    }

    async fn set_presence(
        &self,
        user_id: i64,
        update: PresenceUpdate,
        now: i64,
    ) -> StoreResult<()> {
        self.write("updating presence", move |conn, _| {
            conn.prepare_cached(
                "UPDATE users SET visible = ?1, last_seen = ?2,
                    display_name = COALESCE(?3, display_name),
                    device_name = COALESCE(?4, device_name),
                    session_name = COALESCE(?5, session_name),
                    listen_channel = COALESCE(?6, listen_channel),
                    status = CASE WHEN ?7 IS NULL THEN status WHEN ?7 = '' THEN NULL ELSE ?7 END
                 WHERE id = ?8",
            )
            .and_then(|mut st| {
                st.execute(params![
                    update.visible as i64,
                    now,
                    update.display_name,
                    update.device_name,
                    update.session_name,
                    update.listen_channel,
                    update.status,
                    user_id
                ])
            })
            .map_err(sqlite_err("updating presence"))?;
            Ok(())
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
        self.read(move |conn| {
            let mut st = conn
                .prepare_cached(
                    "SELECT chat_address, display_name, kind,
                            (visible = 1 AND last_seen >= ?2) AS online,
                            last_seen, device_name, session_name, listen_channel, status
                     FROM users
                     WHERE public_visible = 1
                       AND (?1 = '' OR instr(lower(display_name), ?1) > 0 OR instr(chat_address, ?1) > 0)
                     ORDER BY online DESC, lower(display_name), chat_address
                     LIMIT ?3",
                )
                .map_err(sqlite_err("searching the directory"))?;
            let rows = st
                .query_map(params![needle, fresh_after, limit], |r| {
                    let kind: String = r.get(2)?;
                    let online: bool = r.get::<_, i64>(3)? != 0;
                    let last_seen: Option<i64> = r.get(4)?;
                    Ok(DirectoryEntry {
                        entry_type: "user".into(),
                        chat_address: r.get(0)?,
                        display_name: r.get(1)?,
                        kind: Kind::parse(&kind).unwrap_or_default(),
                        online,
                        last_seen: last_seen.map(rfc3339_from_millis),
                        device_name: r.get(5)?,
                        session_name: r.get(6)?,
                        listen_channel: r.get(7)?,
                        status: if online { r.get(8)? } else { None },
                    })
                })
                .map_err(sqlite_err("searching the directory"))?;
            rows.collect::<Result<Vec<_>, _>>()
                .map_err(sqlite_err("reading directory rows"))
        })
        .await
    }

    async fn user_by_address(&self, address: &str) -> StoreResult<Option<User>> {
        let address = address.to_string();
        self.read(move |conn| user_by_address(conn, &address)).await
    }

    async fn user_by_email(&self, email: &str) -> StoreResult<Option<User>> {
        let email = email.to_string();
        self.read(move |conn| user_by_email(conn, &email)).await
    }

    async fn send(&self, msg: NewMessage) -> StoreResult<SentMessage> {
        self.write("sending a message", move |conn, wakes| {
            send_tx(conn, &msg, wakes)
        })
        .await
    }

    async fn poll(&self, user_id: i64, after: u64, limit: u32) -> StoreResult<Vec<Message>> {
        self.read(move |conn| {
            let mut st = conn
                .prepare_cached(POLL_SQL)
                .map_err(sqlite_err("reading a stream"))?;
            let rows = st
                .query_map(params![user_id, after as i64, limit], message_from_row)
                .map_err(sqlite_err("reading a stream"))?;
            rows.collect::<Result<Vec<_>, _>>()
                .map_err(sqlite_err("reading stream rows"))
        })
        .await
    }

    async fn stream_head(&self, user_id: i64) -> StoreResult<u64> {
        self.read(move |conn| {
            conn.prepare_cached("SELECT last_seq FROM users WHERE id = ?1")
                .and_then(|mut st| st.query_row([user_id], |r| r.get::<_, i64>(0)).optional())
                .map(|v| v.unwrap_or(0) as u64)
                .map_err(sqlite_err("reading a stream head"))
        })
        .await
    }

    async fn session_cursor(&self, session_id: i64) -> StoreResult<u64> {
        self.read(move |conn| {
            conn.prepare_cached("SELECT cursor FROM sessions WHERE id = ?1")
                .and_then(|mut st| {
                    st.query_row([session_id], |r| r.get::<_, i64>(0))
                        .optional()
                })
                .map(|v| v.unwrap_or(0) as u64)
                .map_err(sqlite_err("reading a claim cursor"))
        })
        .await
    }

    async fn advance_session_cursor(
        &self,
        session_id: i64,
        from: u64,
        to: u64,
    ) -> StoreResult<bool> {
        self.write("advancing a claim cursor", move |conn, _| {
            let n = conn
                .prepare_cached("UPDATE sessions SET cursor = ?1 WHERE id = ?2 AND cursor = ?3")
                .and_then(|mut st| st.execute(params![to as i64, session_id, from as i64]))
                .map_err(sqlite_err("advancing a claim cursor"))?;
            Ok(n == 1)
        })
        .await
    }

    async fn ack_session_cursor(&self, session_id: i64, to: u64) -> StoreResult<u64> {
        self.write("acknowledging a cursor", move |conn, _| {
            conn.prepare_cached(
                "UPDATE sessions SET cursor = MAX(cursor, ?1) WHERE id = ?2 RETURNING cursor",
            )
            .and_then(|mut st| st.query_row(params![to as i64, session_id], |r| r.get::<_, i64>(0)))
            .map(|c| c as u64)
            .map_err(sqlite_err("acknowledging a cursor"))
        })
        .await
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
    }
}
