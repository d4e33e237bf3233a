-- Inbound callbacks: each follows its owner's stream from a cursor of its own; what passes its
-- filters is put in the durable outbox in the same transaction that moves the cursor, so an
-- event is queued exactly once and delivered at least once, across crashes.
CREATE TABLE callbacks (
    id                INTEGER PRIMARY KEY,
    public_id         TEXT NOT NULL UNIQUE,
    user_id           INTEGER NOT NULL REFERENCES users(id),
    url               TEXT NOT NULL,
    -- JSON arrays; empty passes everything. Keywords are kept lower-cased.
    channels          TEXT NOT NULL,
    keywords          TEXT NOT NULL,
    -- whsec_… (the relay signs with it, so it is kept as is; the database is private).
    secret            TEXT NOT NULL,
    enabled           INTEGER NOT NULL DEFAULT 1,
    disabled_reason   TEXT,
    -- The owner's stream position read up to.
    cursor            INTEGER NOT NULL,
    created_at        INTEGER NOT NULL
);
CREATE INDEX callbacks_user ON callbacks(user_id);

CREATE TABLE callback_outbox (
    id            INTEGER PRIMARY KEY,
    callback_id   INTEGER NOT NULL REFERENCES callbacks(id) ON DELETE CASCADE,
    webhook_id    TEXT NOT NULL UNIQUE,
    payload       TEXT NOT NULL,
    -- pending, delivered, dead
    state         TEXT NOT NULL DEFAULT 'pending',
    attempts      INTEGER NOT NULL DEFAULT 0,
    not_before    INTEGER NOT NULL,
    -- Retries stop at this time (created_at + the retry period; moved by a redelivery).
    give_up_at    INTEGER NOT NULL,
    last_status   INTEGER,
    last_error    TEXT,
    created_at    INTEGER NOT NULL,
    delivered_at  INTEGER
);
CREATE INDEX callback_outbox_due ON callback_outbox(state, not_before);
CREATE INDEX callback_outbox_callback ON callback_outbox(callback_id, id);
