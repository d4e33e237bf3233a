-- The whole schema as the SQLite backend has it after its migrations 001-010, in PostgreSQL's
-- types. Times are unix milliseconds (BIGINT) as there, so both backends share every row type.

CREATE TABLE users (
    id               BIGSERIAL PRIMARY KEY,
    email            TEXT NOT NULL UNIQUE,
    chat_address     TEXT NOT NULL UNIQUE,
    display_name     TEXT NOT NULL,
    kind             TEXT NOT NULL DEFAULT 'human',
    public_visible   BOOLEAN NOT NULL DEFAULT TRUE,
    created_at       BIGINT NOT NULL,
    visible          BOOLEAN NOT NULL DEFAULT FALSE,
    last_seen        BIGINT,
    device_name      TEXT,
    session_name     TEXT,
    listen_channel   TEXT,
    status           TEXT,
    receive_language TEXT,
    read_aloud       BOOLEAN NOT NULL DEFAULT FALSE
);
-- "Does anyone want translations?" is asked per message: one probe of this index.
CREATE INDEX users_receive_language ON users(id) WHERE receive_language IS NOT NULL;

-- Each identity's newest stream position. A send takes the row lock (UPDATE … RETURNING) and
-- holds it to commit, so positions of one stream commit in order: no reader sees a gap that
-- fills later, and concurrent writers on any relay never hand out one position twice.
CREATE TABLE stream_heads (
    user_id  BIGINT PRIMARY KEY,
    head     BIGINT NOT NULL
);

CREATE TABLE sessions (
    id          BIGSERIAL PRIMARY KEY,
    token_hash  TEXT NOT NULL UNIQUE,
    user_id     BIGINT NOT NULL REFERENCES users(id),
    created_at  BIGINT NOT NULL,
    expires_at  BIGINT NOT NULL,
    revoked_at  BIGINT,
    cursor      BIGINT NOT NULL DEFAULT 0
);
CREATE INDEX sessions_user ON sessions(user_id);

CREATE TABLE login_challenges (
    id          BIGSERIAL PRIMARY KEY,
    login_hash  TEXT NOT NULL UNIQUE,
    email       TEXT NOT NULL,
    client      TEXT NOT NULL,
    code_hash   TEXT NOT NULL,
    expires_at  BIGINT NOT NULL,
    attempts    BIGINT NOT NULL DEFAULT 0,
    created_at  BIGINT NOT NULL
);
CREATE INDEX login_challenges_email ON login_challenges(email, client, id);

CREATE TABLE auth_events (
    kind    TEXT NOT NULL,
    email   TEXT NOT NULL,
    client  TEXT NOT NULL,
    at      BIGINT NOT NULL
);
CREATE INDEX auth_events_email ON auth_events(kind, email, at);
CREATE INDEX auth_events_client ON auth_events(kind, client, at);

CREATE TABLE messages (
    id          BIGSERIAL PRIMARY KEY,
    public_id   TEXT NOT NULL UNIQUE,
    sender_id   BIGINT NOT NULL REFERENCES users(id),
    to_target   TEXT NOT NULL,
    group_id    TEXT,
    text        TEXT NOT NULL,
    reply_to    TEXT,
    attachments TEXT,
    created_at  BIGINT NOT NULL,
    edited_at   BIGINT,
    deleted_at  BIGINT,
    -- -(group id) for a group, (low user id << 32) | high user id for a direct conversation.
    conv        BIGINT NOT NULL DEFAULT 0,
    client_id   TEXT,
    language    TEXT
);
CREATE INDEX messages_conv ON messages(conv, id);
CREATE UNIQUE INDEX messages_client_id ON messages(sender_id, client_id)
    WHERE client_id IS NOT NULL;

CREATE TABLE events (
    id          BIGSERIAL PRIMARY KEY,
    kind        TEXT NOT NULL,
    message_id  BIGINT NOT NULL REFERENCES messages(id),
    actor_id    BIGINT NOT NULL REFERENCES users(id),
    text        TEXT,
    created_at  BIGINT NOT NULL,
    data        TEXT
);

CREATE TABLE deliveries (
    user_id     BIGINT NOT NULL,
    seq         BIGINT NOT NULL,
    message_id  BIGINT NOT NULL,
    event_id    BIGINT,
    PRIMARY KEY (user_id, seq)
);
CREATE INDEX deliveries_message ON deliveries(message_id);

CREATE TABLE dm_peers (
    user_id     BIGINT NOT NULL,
    peer_id     BIGINT NOT NULL,
    PRIMARY KEY (user_id, peer_id)
);

CREATE TABLE files (
    id          BIGSERIAL PRIMARY KEY,
    public_id   TEXT NOT NULL UNIQUE,
    owner_id    BIGINT NOT NULL REFERENCES users(id),
    name        TEXT NOT NULL,
    mime        TEXT NOT NULL,
    size        BIGINT NOT NULL,
    kind        TEXT NOT NULL,
    sha256      TEXT NOT NULL,
    created_at  BIGINT NOT NULL
);

CREATE TABLE message_files (
    message_id  BIGINT NOT NULL,
    file_id     TEXT NOT NULL,
    PRIMARY KEY (file_id, message_id)
);
CREATE INDEX message_files_message ON message_files(message_id);

CREATE TABLE groups (
    id          BIGSERIAL PRIMARY KEY,
    public_id   TEXT NOT NULL UNIQUE,
    name        TEXT NOT NULL,
    visibility  TEXT NOT NULL,
    mode        TEXT NOT NULL,
    created_by  BIGINT NOT NULL REFERENCES users(id),
    created_at  BIGINT NOT NULL
);

CREATE TABLE group_members (
    group_id    BIGINT NOT NULL REFERENCES groups(id),
    user_id     BIGINT NOT NULL REFERENCES users(id),
    role        TEXT NOT NULL,
    joined_at   BIGINT NOT NULL,
    PRIMARY KEY (group_id, user_id)
);
CREATE INDEX group_members_user ON group_members(user_id);

CREATE TABLE join_requests (
    group_id    BIGINT NOT NULL REFERENCES groups(id),
    user_id     BIGINT NOT NULL REFERENCES users(id),
    created_at  BIGINT NOT NULL,
    PRIMARY KEY (group_id, user_id)
);

CREATE TABLE reads (
    message_id  BIGINT NOT NULL REFERENCES messages(id),
    user_id     BIGINT NOT NULL REFERENCES users(id),
    read_at     BIGINT NOT NULL,
    PRIMARY KEY (message_id, user_id)
);

CREATE TABLE reports (
    id              BIGSERIAL PRIMARY KEY,
    reporter_id     BIGINT NOT NULL REFERENCES users(id),
    message_id      TEXT,
    chat_address    TEXT,
    reason          TEXT NOT NULL,
    created_at      BIGINT NOT NULL
);

CREATE TABLE voice_jobs (
    id          BIGSERIAL PRIMARY KEY,
    message_id  BIGINT NOT NULL UNIQUE,
    voice       BOOLEAN NOT NULL DEFAULT FALSE,
    state       TEXT NOT NULL DEFAULT 'pending',
    attempts    BIGINT NOT NULL DEFAULT 0,
    not_before  BIGINT NOT NULL DEFAULT 0,
    error       TEXT,
    created_at  BIGINT NOT NULL
);
CREATE INDEX voice_jobs_state ON voice_jobs(voice, state, not_before, id);

CREATE TABLE captions (
    message_id  BIGINT NOT NULL,
    user_id     BIGINT NOT NULL,
    data        TEXT NOT NULL,
    PRIMARY KEY (message_id, user_id)
);

CREATE TABLE callbacks (
    id                BIGSERIAL PRIMARY KEY,
    public_id         TEXT NOT NULL UNIQUE,
    user_id           BIGINT NOT NULL REFERENCES users(id),
    url               TEXT NOT NULL,
    channels          TEXT NOT NULL,
    keywords          TEXT NOT NULL,
    secret            TEXT NOT NULL,
    enabled           BOOLEAN NOT NULL DEFAULT TRUE,
    disabled_reason   TEXT,
    cursor            BIGINT NOT NULL,
    created_at        BIGINT NOT NULL
);
CREATE INDEX callbacks_user ON callbacks(user_id);

CREATE TABLE callback_outbox (
    id            BIGSERIAL PRIMARY KEY,
    callback_id   BIGINT NOT NULL REFERENCES callbacks(id) ON DELETE CASCADE,
    webhook_id    TEXT NOT NULL UNIQUE,
    payload       TEXT NOT NULL,
    state         TEXT NOT NULL DEFAULT 'pending',
    attempts      BIGINT NOT NULL DEFAULT 0,
    not_before    BIGINT NOT NULL,
    give_up_at    BIGINT NOT NULL,
    last_status   BIGINT,
    last_error    TEXT,
    created_at    BIGINT NOT NULL,
    delivered_at  BIGINT
);
CREATE INDEX callback_outbox_due ON callback_outbox(state, not_before);
CREATE INDEX callback_outbox_callback ON callback_outbox(callback_id, id);

CREATE TABLE api_keys (
    id          BIGSERIAL PRIMARY KEY,
    public_id   TEXT NOT NULL UNIQUE,
    name        TEXT NOT NULL,
    user_id     BIGINT NOT NULL REFERENCES users(id),
    key_hash    TEXT NOT NULL UNIQUE,
    phone_ids   TEXT NOT NULL,
    created_at  BIGINT NOT NULL,
    revoked_at  BIGINT
);

CREATE TABLE bridge_outbox (
    id            BIGSERIAL PRIMARY KEY,
    message_id    BIGINT NOT NULL UNIQUE REFERENCES messages(id),
    key_id        BIGINT NOT NULL REFERENCES api_keys(id),
    channel       TEXT NOT NULL,
    phone_id      TEXT NOT NULL,
    recipient     TEXT NOT NULL,
    subject       TEXT,
    payload       TEXT NOT NULL,
    state         TEXT NOT NULL DEFAULT 'queued',
    attempts      BIGINT NOT NULL DEFAULT 0,
    not_before    BIGINT NOT NULL,
    give_up_at    BIGINT NOT NULL,
    last_error    TEXT,
    created_at    BIGINT NOT NULL,
    sent_at       BIGINT
);
CREATE INDEX bridge_outbox_due ON bridge_outbox(state, not_before);
