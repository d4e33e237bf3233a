-- Login codes become challenges: one per request-code, each bound to the client address that
-- asked for it and to a login id only that client was given. Wrong guesses against one
-- challenge cannot void another, so nobody can lock an address out by guessing.
DROP TABLE login_codes;
CREATE TABLE login_challenges (
    id          INTEGER PRIMARY KEY,
    -- SHA-256 of the login id handed to the requester.
    login_hash  TEXT NOT NULL UNIQUE,
    email       TEXT NOT NULL,
    -- The requester's address (IPv4, or an IPv6 /64), for verify calls without a login id.
    client      TEXT NOT NULL,
    code_hash   TEXT NOT NULL,
    expires_at  INTEGER NOT NULL,
    attempts    INTEGER NOT NULL DEFAULT 0,
    created_at  INTEGER NOT NULL
);
CREATE INDEX login_challenges_email ON login_challenges(email, client, id);

-- Login activity the throttle counts, kept across restarts: 'code' (a code was requested) and
-- 'fail' (a wrong code was tried). Rows older than the longest window are swept.
CREATE TABLE auth_events (
    kind    TEXT NOT NULL,
    email   TEXT NOT NULL,
    client  TEXT NOT NULL,
    at      INTEGER NOT NULL
);
CREATE INDEX auth_events_email ON auth_events(kind, email, at);
CREATE INDEX auth_events_client ON auth_events(kind, client, at);
