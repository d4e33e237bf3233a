//! Storage behind a trait, so handlers never see SQL: SQLite embedded (the default), or
//! PostgreSQL shared by several relays.

mod postgres;
mod sqlite;

use async_trait::async_trait;

use crate::api::Kind;
use crate::api::directory::DirectoryEntry;
use crate::api::groups::{GroupInfo, JoinRequest, Member};
use crate::api::messages::{Attachment, AttachmentRef, Caption, ConversationSummary, Message};

impl StoreError {
    /// Text the database cannot hold (PostgreSQL: a NUL character), which is the client's
    /// input at fault rather than the storage.
    pub fn is_unstorable_text(&self) -> bool {
        use tokio_postgres::error::SqlState;
        match self {
            StoreError::Postgres { source, .. } => source.code().is_some_and(|c| {
                *c == SqlState::CHARACTER_NOT_IN_REPERTOIRE
                    || *c == SqlState::UNTRANSLATABLE_CHARACTER
            }),
            _ => false,
        }
    }
}

/// How long a claim on a voice job lasts on shared storage; its worker renews it at a third.
pub const VOICE_LEASE_MS: i64 = 30_000;
/// How long a claim on one outbox try lasts on shared storage (tries end within 15 s); a
/// relay dying mid-try leaves it to another relay, or to itself restarted, after this.
pub const OUTBOX_CLAIM_MS: i64 = 20_000;

/// The server's own message (tokio-postgres' Display says only "db error"); never the
/// statement's parameters or the row's values (PostgreSQL puts those in `detail`).
fn pg_detail(e: &tokio_postgres::Error) -> String {
    match e.as_db_error() {
        Some(db) => format!("{} ({})", db.message(), db.code().code()),
        None => e.to_string(),
    }
}

pub use postgres::import::{ImportError, ImportReport, import_sqlite};
pub use postgres::{PgOptions, PgStore};
pub use sqlite::{SqliteOptions, SqliteStore, SyncMode, upgrade_file as upgrade_sqlite_file};

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

/// A login challenge: one request-code, bound to the client that asked for it.
#[derive(Debug, Clone)]
pub struct NewChallenge {
    /// SHA-256 of the login id handed to the requester.
    pub login_hash: String,
    pub email: String,
    /// The requester's address key (see `relay::auth::client_key`).
    pub client: String,
    pub code_hash: String,
    pub expires_at: i64,
    pub now: i64,
}

/// One verify-code try.
#[derive(Debug, Clone)]
pub struct CodeAttempt {
    pub email: String,
    /// The login id's hash when the client sent one; otherwise the newest challenge this
    /// client address asked for is tried.
    pub login_hash: Option<String>,
    pub client: String,
    pub code_hash: String,
    pub max_attempts: u32,
    pub now: i64,
}

/// Recent login activity, counted for the throttle.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct AuthPressure {
    /// Codes this client address requested (any email) since `short_since`.
    pub codes_from_client: u32,
    /// Codes this client address requested for this email since `short_since`.
    pub codes_for_email_from_client: u32,
    /// Wrong codes tried for this email (from anywhere) since `long_since`.
    pub fails_for_email: u32,
    /// Wrong codes tried from this client address (any email) since `short_since`.
    pub fails_from_client: u32,
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
    /// Only `file_id` is trusted: the rest is filled in from the stored file.
    pub attachments: Vec<AttachmentRef>,
    /// The sender's id for it: a second send with the same id returns the first message.
    pub client_id: Option<String>,
    /// The language its text is in (detected), if known.
    pub language: Option<String>,
    pub created_at: i64,
}

/// A stored, delivered message.
#[derive(Debug, Clone)]
pub struct SentMessage {
    pub public_id: String,
    pub created_at: i64,
    pub recipients: usize,
    /// The client id named a message sent before; nothing new was stored.
    pub duplicate: bool,
    /// A voice job was queued for it (a voice clip, or text someone may want translated).
    pub enrich: bool,
}

/// A receiver's language settings.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct LanguagePrefs {
    pub receive_language: Option<String>,
    pub read_aloud: bool,
}

/// A queued enrichment job, claimed by the worker.
#[derive(Debug, Clone)]
pub struct VoiceJob {
    pub id: i64,
    pub message_rowid: i64,
    /// Counting this one.
    pub attempts: u32,
}

/// How a voice job ended.
#[derive(Debug, Clone)]
pub enum VoiceJobEnd {
    Done,
    /// Try again at `not_before` (unix ms).
    Retry {
        error: String,
        not_before: i64,
    },
    Failed {
        error: String,
    },
}

/// Who a message reached, and what the worker needs to enrich it.
#[derive(Debug, Clone)]
pub struct VoiceContext {
    pub message_id: String,
    pub sender_id: i64,
    pub text: String,
    pub language: Option<String>,
    pub attachments: Vec<Attachment>,
    pub deleted: bool,
    /// Receivers and the sender, with their language settings.
    pub people: Vec<(i64, LanguagePrefs)>,
}

/// An uploaded file.
#[derive(Debug, Clone, PartialEq)]
pub struct FileRecord {
    pub public_id: String,
    pub owner_id: i64,
    pub name: String,
    pub mime: String,
    pub size: u64,
    pub kind: String,
    pub sha256: String,
    pub created_at: i64,
}

/// A new group.
#[derive(Debug, Clone)]
pub struct NewGroup {
    pub public_id: String,
    pub creator_id: i64,
    pub name: String,
    pub visibility: String,
    pub mode: String,
    pub created_at: i64,
}

/// An abuse report, for the operator.
#[derive(Debug, Clone, PartialEq)]
pub struct Report {
    pub reporter: String,
    pub message_id: Option<String>,
    pub chat_address: Option<String>,
    pub reason: String,
    pub created_at: i64,
    /// The reported message's author and text, when a message was reported.
    pub message_author: Option<String>,
    pub message_text: Option<String>,
}

/// One side of a conversation's history.
#[derive(Debug, Clone)]
pub enum Conversation {
    /// Direct messages between the caller and this identity.
    With(String),
    /// A group's messages.
    Group(String),
}

/// Storage failures, with what was being done; the refusals carry what the client did wrong.
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
    #[error("database error while {action}: {}", pg_detail(source))]
    Postgres {
        action: &'static str,
        #[source]
        source: tokio_postgres::Error,
    },
    #[error("database connection pool: {0}")]
    PgPool(String),
    #[error("the database URL: {0}")]
    PgConfig(String),
    #[error("the database writer has stopped")]
    WriterGone,
    #[error("committing while {action}: {message}")]
    Commit {
        action: &'static str,
        message: String,
    },
    #[error("a blocking storage task failed: {0}")]
    Join(String),
    #[error("no identity has the address {0}")]
    UnknownRecipient(String),
    #[error("{0}")]
    NotFound(String),
    #[error("{0}")]
    Forbidden(String),
    #[error("{0}")]
    NotMember(String),
    #[error("only this stream group's writers may post in it")]
    StreamReadOnly,
    #[error("{0}")]
    Conflict(String),
    #[error("{0}")]
    InvalidAttachment(String),
}

impl StoreError {
    /// A refusal of the request (checked before anything is written), as opposed to a failure
    /// of the storage.
    pub fn is_refusal(&self) -> bool {
        matches!(
            self,
            StoreError::UnknownRecipient(_)
                | StoreError::NotFound(_)
                | StoreError::Forbidden(_)
                | StoreError::NotMember(_)
                | StoreError::StreamReadOnly
                | StoreError::Conflict(_)
                | StoreError::InvalidAttachment(_)
        )
    }
}

pub type StoreResult<T> = Result<T, StoreError>;

/// An inbound callback as stored.
#[derive(Debug, Clone)]
pub struct CallbackRecord {
    pub id: i64,
    pub public_id: String,
    pub user_id: i64,
    pub url: String,
    pub channels: Vec<String>,
    /// Lower-cased.
    pub keywords: Vec<String>,
    pub secret: String,
    pub enabled: bool,
    pub disabled_reason: Option<String>,
    /// The owner's stream position read up to.
    pub cursor: u64,
    pub created_at: i64,
    pub pending: u64,
    pub dead: u64,
    pub owner_address: String,
}

#[derive(Debug, Clone)]
pub struct NewCallback {
    pub public_id: String,
    pub user_id: i64,
    pub url: String,
    pub channels: Vec<String>,
    pub keywords: Vec<String>,
    pub secret: String,
    pub max_per_user: u32,
    pub now: i64,
}

/// What the owner changes on a callback.
#[derive(Debug, Clone, Default)]
pub struct CallbackChange {
    /// Turn it on again (clearing the reason it was turned off).
    pub enable: bool,
    /// A new signing secret.
    pub secret: Option<String>,
    /// Queue its dead deliveries again, with a fresh retry period ending here.
    pub requeue_dead_until: Option<i64>,
    pub now: i64,
}

/// One event to queue for a callback.
#[derive(Debug, Clone)]
pub struct QueuedEvent {
    pub webhook_id: String,
    pub payload: String,
}

/// A delivery due for a try.
#[derive(Debug, Clone)]
pub struct OutboxItem {
    pub id: i64,
    pub callback_id: i64,
    pub webhook_id: String,
    pub payload: String,
    pub attempts: u32,
    pub give_up_at: i64,
    pub url: String,
    pub secret: String,
}

/// How one try of a delivery ended.
#[derive(Debug, Clone)]
pub enum AttemptEnd {
    Delivered {
        status: u16,
    },
    /// Failed; try again at `not_before`.
    Retry {
        status: Option<u16>,
        error: String,
        not_before: i64,
    },
    /// Failed past the retry period: a dead letter, and the callback is turned off.
    Dead {
        status: Option<u16>,
        error: String,
        disable_reason: String,
    },
}

/// A delivery as its owner sees it.
#[derive(Debug, Clone)]
pub struct DeliveryRow {
    pub webhook_id: String,
    pub state: String,
    pub attempts: u32,
    pub last_status: Option<u16>,
    pub last_error: Option<String>,
    pub created_at: i64,
    pub delivered_at: Option<i64>,
}

/// A PhoneRelay API key as stored (never the key, only its hash).
#[derive(Debug, Clone)]
pub struct ApiKeyRecord {
    pub id: i64,
    pub public_id: String,
    pub name: String,
    pub user_id: i64,
    pub owner_address: String,
    pub phone_ids: Vec<String>,
    pub created_at: i64,
    pub revoked_at: Option<i64>,
}

#[derive(Debug, Clone)]
pub struct NewApiKey {
    pub public_id: String,
    pub name: String,
    pub user_id: i64,
    pub key_hash: String,
    pub phone_ids: Vec<String>,
    pub now: i64,
}

/// An address outside the relay, stored as an identity no one can log in as.
#[derive(Debug, Clone)]
pub struct ContactRef {
    /// `wa:+15551230001`
    pub address: String,
    /// The name the channel gave (kept from then on); a new contact is named by its number.
    pub name: Option<String>,
}

/// A message leaving the relay by email or over the bridge.
#[derive(Debug, Clone)]
pub struct Outbound {
    pub key_id: i64,
    pub contact: ContactRef,
    pub channel: String,
    pub phone_id: String,
    pub recipient: String,
    /// For email.
    pub subject: Option<String>,
    /// For email the text; for the bridge the JSON body.
    pub payload: String,
    pub give_up_at: i64,
}

/// An outbound message due for a try.
#[derive(Debug, Clone)]
pub struct OutboundItem {
    pub id: i64,
    pub message_id: String,
    pub channel: String,
    pub recipient: String,
    pub subject: Option<String>,
    pub payload: String,
    pub attempts: u32,
    pub give_up_at: i64,
}

/// How one try of an outbound message ended.
#[derive(Debug, Clone)]
pub enum OutboundEnd {
    Sent,
    Retry { error: String, not_before: i64 },
    Failed { error: String },
}

/// A sent message, and for one that left the relay, how far it got.
#[derive(Debug, Clone)]
pub struct MessageStatusRow {
    pub to_target: String,
    pub created_at: i64,
    pub outbound: Option<OutboundState>,
}

/// Where an outbound message stands.
#[derive(Debug, Clone)]
pub struct OutboundState {
    pub channel: String,
    pub recipient: String,
    /// queued, sent or failed
    pub state: String,
    pub last_error: Option<String>,
    pub attempts: u32,
    pub sent_at: Option<i64>,
}

/// Everything the relay keeps.
#[async_trait]
pub trait Store: Send + Sync + 'static {
    // --- identity and sessions
    /// Counts recent login activity for `email` and `client`.
    async fn auth_pressure(
        &self,
        email: &str,
        client: &str,
        short_since: i64,
        long_since: i64,
    ) -> StoreResult<AuthPressure>;
    /// Stores a challenge and counts the request.
    async fn put_challenge(&self, challenge: NewChallenge) -> StoreResult<()>;
    /// Checks the code against its challenge and, when it matches, consumes every challenge of
    /// that email and logs in (creating the identity when new), all in one transaction: a
    /// refused registration leaves the code usable. A wrong code counts against its challenge
    /// and the email's failure tally.
    async fn verify_and_login(
        &self,
        attempt: CodeAttempt,
        reg: Registration,
        token_hash: &str,
        session_expires_at: i64,
    ) -> StoreResult<LoginOutcome>;
    /// Forgets login activity older than `events_before` and challenges expired by `now`.
    async fn sweep_auth(&self, events_before: i64, now: i64) -> StoreResult<()>;
    async fn session(&self, token_hash: &str, now: i64) -> StoreResult<Option<SessionInfo>>;
    async fn end_session(&self, session_id: i64, now: i64) -> StoreResult<()>;
    async fn user_by_address(&self, address: &str) -> StoreResult<Option<User>>;
    async fn user_by_email(&self, email: &str) -> StoreResult<Option<User>>;

    async fn language_prefs(&self, user_id: i64) -> StoreResult<LanguagePrefs>;
    /// Changes what is given: `Some(None)` clears the language.
    async fn set_language_prefs(
        &self,
        user_id: i64,
        language: Option<Option<String>>,
        read_aloud: Option<bool>,
    ) -> StoreResult<()>;
    async fn set_profile(
        &self,
        user_id: i64,
        display_name: Option<String>,
        public_visible: Option<bool>,
    ) -> StoreResult<()>;

    // --- presence and directory
    async fn set_presence(&self, user_id: i64, update: PresenceUpdate, now: i64)
    -> StoreResult<()>;
    /// Public identities and public groups matching `query`; online means visible and seen
    /// at or after `fresh_after` (unix ms).
    async fn directory(
        &self,
        query: &str,
        limit: u32,
        fresh_after: i64,
    ) -> StoreResult<Vec<DirectoryEntry>>;

    // --- messages
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
    /// The author changes a message's text; its receivers get an "edit" event.
    async fn edit(&self, actor: i64, message_id: &str, text: String, now: i64) -> StoreResult<()>;
    /// The author (or an admin of its group) deletes a message; receivers get a "delete".
    /// Returns the uploads no message refers to any more (their records are gone; the caller
    /// removes the bytes).
    async fn delete(&self, actor: i64, message_id: &str, now: i64) -> StoreResult<Vec<String>>;
    /// A receiver has read a message; its author gets one "read" event per reader.
    async fn mark_read(&self, reader: i64, message_id: &str, now: i64) -> StoreResult<()>;
    /// A conversation's messages (both directions for a direct one), newest last, before
    /// the message `before` (rowid) when given.
    async fn history(
        &self,
        user_id: i64,
        with: Conversation,
        before: Option<i64>,
        limit: u32,
    ) -> StoreResult<Vec<(i64, Message)>>;

    /// The caller's conversations, newest first, with unread counts.
    async fn conversations(&self, user_id: i64) -> StoreResult<Vec<ConversationSummary>>;

    // --- voice and languages
    /// Claims the oldest due pending job of a lane (voice clips, or text), marking it running.
    async fn next_voice_job(&self, voice: bool, now: i64) -> StoreResult<Option<VoiceJob>>;
    /// Fails the newest pending jobs beyond the oldest `keep`; their messages' rowids.
    async fn shed_voice_jobs(&self, keep: u64) -> StoreResult<Vec<i64>>;
    async fn end_voice_job(&self, id: i64, end: VoiceJobEnd) -> StoreResult<()>;
    /// Jobs waiting (pending or running).
    async fn voice_backlog(&self) -> StoreResult<u64>;
    /// Jobs a crash left running go back to pending (called at start). Shared storage takes
    /// back only jobs whose lease ran out (the rest are other relays' work in progress).
    async fn requeue_running_voice_jobs(&self) -> StoreResult<u64>;
    /// Keeps a running job claimed until `until` (shared storage: a job whose claim lapses,
    /// because its relay died, is claimed again by another).
    async fn renew_voice_job(&self, _id: i64, _until: i64) -> StoreResult<()> {
        Ok(())
    }
    async fn voice_context(&self, message_rowid: i64) -> StoreResult<Option<VoiceContext>>;
    /// Records a voice clip's transcript and language on the message (the caption everyone
    /// sees in history until they get their own).
    async fn set_transcript(
        &self,
        message_rowid: i64,
        caption: Caption,
        language: Option<String>,
    ) -> StoreResult<()>;
    /// Delivers a caption event to `user_id` and keeps it for their history.
    async fn add_caption(
        &self,
        message_rowid: i64,
        user_id: i64,
        caption: Caption,
        now: i64,
    ) -> StoreResult<()>;

    // --- files
    async fn put_file(&self, file: FileRecord) -> StoreResult<()>;
    async fn file(&self, public_id: &str) -> StoreResult<Option<FileRecord>>;

    // --- groups
    async fn create_group(&self, group: NewGroup) -> StoreResult<()>;
    /// The caller's groups and every public group.
    async fn groups_for(&self, user_id: i64) -> StoreResult<Vec<GroupInfo>>;
    async fn add_member(
        &self,
        actor: i64,
        group: &str,
        address: &str,
        role: &str,
        now: i64,
    ) -> StoreResult<()>;
    /// An admin removes anyone; anyone removes themself (leaving).
    async fn remove_member(&self, actor: i64, group: &str, address: &str) -> StoreResult<()>;
    async fn members(&self, actor: i64, group: &str) -> StoreResult<Vec<Member>>;
    /// Joins a public group at once; for a private one, files a join request.
    async fn join_or_request(&self, user_id: i64, group: &str, now: i64) -> StoreResult<bool>;
    async fn join_requests(&self, actor: i64, group: &str) -> StoreResult<Vec<JoinRequest>>;
    async fn decide_join(
        &self,
        actor: i64,
        group: &str,
        address: &str,
        accept: bool,
        now: i64,
    ) -> StoreResult<()>;

    // --- abuse reports
    async fn report(
        &self,
        reporter: i64,
        message_id: Option<String>,
        address: Option<String>,
        reason: String,
        now: i64,
    ) -> StoreResult<()>;
    async fn reports(&self) -> StoreResult<Vec<Report>>;

    /// Flushes and stops background work. Called once at shutdown.
    // --- inbound callbacks
    /// Creates a callback reading its owner's stream from now on (Conflict past the limit).
    async fn create_callback(&self, cb: NewCallback) -> StoreResult<CallbackRecord>;
    async fn callbacks_of(&self, user_id: i64) -> StoreResult<Vec<CallbackRecord>>;
    async fn enabled_callbacks(&self) -> StoreResult<Vec<CallbackRecord>>;
    /// The owner's callback, or None.
    async fn callback(&self, user_id: i64, public_id: &str) -> StoreResult<Option<CallbackRecord>>;
    /// Deletes the owner's callback and what it has queued; false when there was none.
    async fn delete_callback(&self, user_id: i64, public_id: &str) -> StoreResult<bool>;
    /// Changes the owner's callback; the result and how many deliveries were queued again.
    async fn change_callback(
        &self,
        user_id: i64,
        public_id: &str,
        change: CallbackChange,
    ) -> StoreResult<Option<(CallbackRecord, u64)>>;
    /// Queues `events` and moves the cursor `from` -> `to`, in one transaction; false (and
    /// nothing queued) when the callback is gone, off, or its cursor is no longer `from`.
    async fn queue_callback_events(
        &self,
        callback_id: i64,
        from: u64,
        to: u64,
        events: Vec<QueuedEvent>,
        now: i64,
        give_up_at: i64,
    ) -> StoreResult<bool>;
    /// Pending deliveries of enabled callbacks due by `now`, oldest first.
    async fn due_deliveries(&self, now: i64, limit: u32) -> StoreResult<Vec<OutboxItem>>;
    /// Takes a due delivery for one try until `until`; false when another relay took it
    /// first. One relay's own bookkeeping is enough when the storage is not shared.
    async fn claim_delivery(&self, _outbox_id: i64, _now: i64, _until: i64) -> StoreResult<bool> {
        Ok(true)
    }
    /// The next time a pending delivery comes due, if any.
    async fn next_delivery_due(&self) -> StoreResult<Option<i64>>;
    async fn end_delivery(&self, outbox_id: i64, end: AttemptEnd, now: i64) -> StoreResult<()>;
    /// Forgets a batch of delivered callback events older than `before` (what failed stays
    /// until redelivered); how many (0: none left).
    async fn prune_deliveries(&self, before: i64) -> StoreResult<u64>;
    /// The newest deliveries of the owner's callback.
    async fn deliveries(
        &self,
        user_id: i64,
        public_id: &str,
        limit: u32,
    ) -> StoreResult<Option<Vec<DeliveryRow>>>;

    // --- the PhoneRelay bridge
    async fn create_api_key(&self, key: NewApiKey) -> StoreResult<ApiKeyRecord>;
    async fn api_keys(&self) -> StoreResult<Vec<ApiKeyRecord>>;
    /// False when no unrevoked key has that id.
    async fn revoke_api_key(&self, public_id: &str, now: i64) -> StoreResult<bool>;
    async fn api_key_by_hash(&self, key_hash: &str) -> StoreResult<Option<ApiKeyRecord>>;
    /// Stores the message to the external contact (creating it) and queues it to go out, in
    /// one transaction. A repeated client id stores and queues nothing.
    async fn send_outbound(&self, msg: NewMessage, out: Outbound) -> StoreResult<SentMessage>;
    /// Stores a message from an external contact (creating it) to `msg.target`; the sender
    /// id in `msg` is ignored.
    async fn receive_inbound(&self, msg: NewMessage, from: ContactRef) -> StoreResult<SentMessage>;
    async fn due_outbound(&self, now: i64, limit: u32) -> StoreResult<Vec<OutboundItem>>;
    async fn next_outbound_due(&self) -> StoreResult<Option<i64>>;
    /// As `claim_delivery`, for a bridge message.
    async fn claim_outbound(&self, _id: i64, _now: i64, _until: i64) -> StoreResult<bool> {
        Ok(true)
    }
    async fn end_outbound(&self, id: i64, end: OutboundEnd, now: i64) -> StoreResult<()>;
    /// A message `sender_id` sent, or None.
    async fn message_status(
        &self,
        sender_id: i64,
        message_id: &str,
    ) -> StoreResult<Option<MessageStatusRow>>;

    /// Whether other relays share this storage (so what one caches, another may change).
    fn shared(&self) -> bool {
        false
    }

    /// Whether the storage answers now (for /health).
    async fn ping(&self) -> StoreResult<()> {
        Ok(())
    }

    async fn close(&self);
}
