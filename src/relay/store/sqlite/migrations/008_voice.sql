-- Voice and languages: read-aloud, each message's language, caption events, and the durable
-- queue of enrichment work (transcripts, translations, spoken clips) that follows a message.
ALTER TABLE users ADD COLUMN read_aloud INTEGER NOT NULL DEFAULT 0;
-- BCP 47 primary subtag of the text (detected) or of the transcript (from speech to text).
ALTER TABLE messages ADD COLUMN language TEXT;
-- The JSON payload of events that carry one (caption events).
ALTER TABLE events ADD COLUMN data TEXT;

-- One job per message that may need enrichment; the worker decides per receiver.
CREATE TABLE voice_jobs (
    id          INTEGER PRIMARY KEY,
    message_id  INTEGER NOT NULL UNIQUE,
    -- 1 for a voice clip (speech to text first): clips and text go in separate lanes, so a
    -- text translation never waits behind a transcription.
    voice       INTEGER NOT NULL DEFAULT 0,
    -- pending, running, done, failed
    state       TEXT NOT NULL DEFAULT 'pending',
    attempts    INTEGER NOT NULL DEFAULT 0,
    not_before  INTEGER NOT NULL DEFAULT 0,
    error       TEXT,
    created_at  INTEGER NOT NULL
);
CREATE INDEX voice_jobs_state ON voice_jobs(voice, state, not_before, id);

-- The newest caption each user has for a message (user 0: the transcript, for everyone), so
-- history shows it.
CREATE TABLE captions (
    message_id  INTEGER NOT NULL,
    user_id     INTEGER NOT NULL,
    data        TEXT NOT NULL,
    PRIMARY KEY (message_id, user_id)
) WITHOUT ROWID;
