-- Identities, with their presence folded in: presence is one row per identity and is
-- read with the directory, so a join would buy nothing.
CREATE TABLE users (
    id              INTEGER PRIMARY KEY,
    email           TEXT NOT NULL UNIQUE,
    chat_address    TEXT NOT NULL UNIQUE,
    display_name    TEXT NOT NULL,
    kind            TEXT NOT NULL DEFAULT 'human',
    public_visible  INTEGER NOT NULL DEFAULT 1,
    created_at      INTEGER NOT NULL,
    -- last delivery sequence handed out to this identity (its stream position)
    last_seq        INTEGER NOT NULL DEFAULT 0,
    visible         INTEGER NOT NULL DEFAULT 0,
    last_seen       INTEGER,
    device_name     TEXT,
    session_name    TEXT,
    listen_channel  TEXT,
    status          TEXT
);

-- Sessions keep only a SHA-256 of the token. Revoked rows stay so a new session of the
-- same identity can start from the furthest claim cursor.
CREATE TABLE sessions (
    id          INTEGER PRIMARY KEY,
    token_hash  TEXT NOT NULL UNIQUE,
    user_id     INTEGER NOT NULL REFERENCES users(id),
    created_at  INTEGER NOT NULL,
    expires_at  INTEGER NOT NULL,
    revoked_at  INTEGER,
    cursor      INTEGER NOT NULL DEFAULT 0
);
CREATE INDEX sessions_user ON sessions(user_id);

-- One pending login code per email; hashed, short-lived, attempt-limited.
CREATE TABLE login_codes (
    email       TEXT PRIMARY KEY,
    code_hash   TEXT NOT NULL,
    expires_at  INTEGER NOT NULL,
    attempts    INTEGER NOT NULL DEFAULT 0
);

-- A message is stored once, however many receive it.
CREATE TABLE messages (
    id          INTEGER PRIMARY KEY,
    public_id   TEXT NOT NULL UNIQUE,
    sender_id   INTEGER NOT NULL REFERENCES users(id),
    to_target   TEXT NOT NULL,
    group_id    TEXT,
    text        TEXT NOT NULL,
    reply_to    TEXT,
    attachments TEXT,
    created_at  INTEGER NOT NULL,
    edited_at   INTEGER,
    deleted_at  INTEGER
);

-- What happens to a message afterwards: edits, deletions, read receipts.
CREATE TABLE events (
    id          INTEGER PRIMARY KEY,
    kind        TEXT NOT NULL,
    message_id  INTEGER NOT NULL REFERENCES messages(id),
    actor_id    INTEGER NOT NULL REFERENCES users(id),
    text        TEXT,
    created_at  INTEGER NOT NULL
);

-- Each receiver's stream: (receiver, seq) -> message, or an event about one.
CREATE TABLE deliveries (
    user_id     INTEGER NOT NULL,
    seq         INTEGER NOT NULL,
    message_id  INTEGER NOT NULL,
    event_id    INTEGER,
    PRIMARY KEY (user_id, seq)
) WITHOUT ROWID;
