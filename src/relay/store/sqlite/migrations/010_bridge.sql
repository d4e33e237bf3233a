-- PhoneRelay API keys: only a SHA-256 of each key is kept. A key sends as its owner, on the
-- phone ids it is scoped to (a JSON array), and replies through it reach the owner.
CREATE TABLE api_keys (
    id          INTEGER PRIMARY KEY,
    public_id   TEXT NOT NULL UNIQUE,
    name        TEXT NOT NULL,
    user_id     INTEGER NOT NULL REFERENCES users(id),
    key_hash    TEXT NOT NULL UNIQUE,
    phone_ids   TEXT NOT NULL,
    created_at  INTEGER NOT NULL,
    revoked_at  INTEGER
);

-- Messages leaving the relay over email or the bridge, queued in the transaction that stores
-- the message, so an accepted message goes out at least once across crashes; the webhook id
-- is the message id, stable across tries, so the bridge can drop duplicates.
CREATE TABLE bridge_outbox (
    id            INTEGER PRIMARY KEY,
    message_id    INTEGER NOT NULL UNIQUE REFERENCES messages(id),
    key_id        INTEGER NOT NULL REFERENCES api_keys(id),
    channel       TEXT NOT NULL,
    phone_id      TEXT NOT NULL,
    recipient     TEXT NOT NULL,
    -- email: the subject; bridge channels: the JSON body POSTed to the bridge.
    subject       TEXT,
    payload       TEXT NOT NULL,
    -- queued, sent, failed
    state         TEXT NOT NULL DEFAULT 'queued',
    attempts      INTEGER NOT NULL DEFAULT 0,
    not_before    INTEGER NOT NULL,
    give_up_at    INTEGER NOT NULL,
    last_error    TEXT,
    created_at    INTEGER NOT NULL,
    sent_at       INTEGER
);
CREATE INDEX bridge_outbox_due ON bridge_outbox(state, not_before);
