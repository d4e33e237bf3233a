//! Storage behind a trait, so handlers never see SQL and a PostgreSQL backend can follow.

mod sqlite;

use async_trait::async_trait;

use crate::api::Kind;
use crate::api::directory::DirectoryEntry;
use crate::api::messages::{Attachment, Message};

pub use sqlite::{SqliteOptions, SqliteStore, SyncMode};

/// An identity as stored.
#[derive(Debug, Clone, PartialEq)]
pub struct User {
    pub id: i64,
    pub email: String,
    pub chat_address: String,
    pub display_name: String,
    pub kind: Kind,
    pub public_visible: bool,
}

/// A live session and whose it is.
#[derive(Debug, Clone)]
pub struct SessionInfo {
    pub session_id: i64,
    pub user: User,
    pub expires_at: i64,
}

/// What a login code check found, when it did not succeed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CodeRejection {
    /// No code is pending for that email, or it expired.
    Expired,
    /// Wrong code; this many tries are left.
    Wrong { remaining: u32 },
    /// Too many wrong tries; the code is void.
    Locked,
}

/// Who logs in, and what a new identity should look like.
#[derive(Debug, Clone)]
pub struct Registration {
    pub email: String,
    pub display_name: Option<String>,
    pub chat_address: Option<String>,
    pub public_visible: Option<bool>,
    pub kind: Option<Kind>,
    /// Whether an email with no identity yet may create one.
    pub allow_new: bool,
}

/// The outcome of verify-code.
#[derive(Debug, Clone)]
pub enum LoginOutcome {
    LoggedIn { user: User, session_id: i64 },
    Rejected(CodeRejection),
    AddressTaken,
    RegistrationClosed,
}

/// A presence report.
#[derive(Debug, Clone, Default)]
pub struct PresenceUpdate {
    pub visible: bool,
    pub display_name: Option<String>,
    pub device_name: Option<String>,
    pub session_name: Option<String>,
    pub listen_channel: Option<String>,
    pub status: Option<String>,
}

/// Where a message goes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Target {
    Address(String),
    Group(String),
}

/// A message to store and deliver.
#[derive(Debug, Clone)]
pub struct NewMessage {
    pub public_id: String,
    pub sender_id: i64,
    pub target: Target,
    pub text: String,
    pub reply_to: Option<String>,
    pub attachments: Vec<Attachment>,
    pub created_at: i64,
}

/// A stored, delivered message.
#[derive(Debug, Clone)]
pub struct SentMessage {
    pub public_id: String,
    pub created_at: i64,
    pub recipients: usize,
}

/// Storage failures, with what was being done.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("database error while {action}: {source}")]
    Sqlite {
        action: &'static str,
        #[source]
        source: rusqlite::Error,
    },
    #[error("database connection pool: {0}")]
    Pool(#[from] r2d2::Error),
    #[error("migrating the database at {path}: {source}")]
    Migration {
        path: String,
        #[source]
        source: rusqlite_migration::Error,
    },
    #[error("opening the database at {path}: {source}")]
    Open {
        path: String,
        #[source]
        source: rusqlite::Error,
    },
    #[error("the database writer has stopped")]
    WriterGone,
    #[error("committing while {action}: {message}")]
    Commit {
        action: &'static str,
        message: String,
    },
    #[error("no identity has the address {0}")]
    UnknownRecipient(String),
    #[error("a blocking storage task failed: {0}")]
    Join(String),
}

pub type StoreResult<T> = Result<T, StoreError>;

/// Everything the relay keeps.
#[async_trait]
pub trait Store: Send + Sync + 'static {
    /// Replaces any pending code for `email`.
    async fn put_login_code(
        &self,
        email: &str,
        code_hash: &str,
        expires_at: i64,
    ) -> StoreResult<()>;

    /// Checks the code and, when it matches, consumes it and logs in (creating the identity
    /// when new), all in one transaction: a refused registration leaves the code usable.
    async fn verify_and_login(
        &self,
        code_hash: &str,
        max_attempts: u32,
        reg: Registration,
        token_hash: &str,
        now: i64,
        session_expires_at: i64,
    ) -> StoreResult<LoginOutcome>;

    async fn session(&self, token_hash: &str, now: i64) -> StoreResult<Option<SessionInfo>>;
    async fn end_session(&self, session_id: i64, now: i64) -> StoreResult<()>;

    async fn set_presence(&self, user_id: i64, update: PresenceUpdate, now: i64)
    -> StoreResult<()>;
    async fn directory(
        &self,
        query: &str,
        limit: u32,
        now: i64,
    ) -> StoreResult<Vec<DirectoryEntry>>;
    async fn user_by_address(&self, address: &str) -> StoreResult<Option<User>>;
    async fn user_by_email(&self, email: &str) -> StoreResult<Option<User>>;

    /// Stores the message and appends it to every receiver's stream, waking their pollers.
    async fn send(&self, msg: NewMessage) -> StoreResult<SentMessage>;

    /// Up to `limit` events of `user_id`'s stream after `after`.
    async fn poll(&self, user_id: i64, after: u64, limit: u32) -> StoreResult<Vec<Message>>;
    /// The newest position in `user_id`'s stream.
    async fn stream_head(&self, user_id: i64) -> StoreResult<u64>;

    async fn session_cursor(&self, session_id: i64) -> StoreResult<u64>;
    /// Moves the session's claim cursor from `from` to `to`; false if someone else moved it.
    async fn advance_session_cursor(
        &self,
        session_id: i64,
        from: u64,
        to: u64,
    ) -> StoreResult<bool>;

    /// Moves the session's claim cursor forward to `to` (never back); returns the new cursor.
    async fn ack_session_cursor(&self, session_id: i64, to: u64) -> StoreResult<u64>;

    /// Flushes and stops background work. Called once at shutdown.
    async fn close(&self);
}
