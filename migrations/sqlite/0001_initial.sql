-- Times are Unix epoch milliseconds (INTEGER): SQLite has no timestamp type,
-- and integers compare correctly where text timestamps of varying precision
-- would not. Ids are lowercase hyphenated UUID text.

CREATE TABLE notifications (
    id            TEXT PRIMARY KEY,
    account_id    TEXT NOT NULL,
    envelope_id   TEXT NOT NULL,
    event         TEXT NOT NULL,
    recipient_id  TEXT,
    generated_at  INTEGER NOT NULL,
    format        TEXT NOT NULL,
    origin        TEXT NOT NULL,
    dedupe_key    TEXT NOT NULL UNIQUE,
    body_sha256   TEXT NOT NULL UNIQUE,
    disposition   TEXT NOT NULL,
    summary       TEXT NOT NULL,
    received_at   INTEGER NOT NULL
);
CREATE INDEX notifications_by_envelope ON notifications (envelope_id, received_at);

CREATE TABLE envelopes (
    envelope_id   TEXT PRIMARY KEY,
    account_id    TEXT NOT NULL,
    status        TEXT NOT NULL,
    subject       TEXT,
    completed_at  INTEGER,
    created_at    INTEGER NOT NULL,
    updated_at    INTEGER NOT NULL
);
CREATE INDEX envelopes_by_status ON envelopes (status, updated_at);

CREATE TABLE documents (
    envelope_id   TEXT NOT NULL REFERENCES envelopes (envelope_id),
    document_id   TEXT NOT NULL,
    name          TEXT NOT NULL,
    file_name     TEXT NOT NULL,
    content_type  TEXT NOT NULL,
    size_bytes    INTEGER NOT NULL,
    sha256        TEXT NOT NULL,
    storage_key   TEXT NOT NULL,
    stored_at     INTEGER NOT NULL,
    PRIMARY KEY (envelope_id, document_id)
);

CREATE TABLE jobs (
    id                TEXT PRIMARY KEY,
    kind              TEXT NOT NULL,
    unique_key        TEXT,
    payload           TEXT NOT NULL,
    state             TEXT NOT NULL,
    attempts          INTEGER NOT NULL DEFAULT 0,
    max_attempts      INTEGER NOT NULL,
    run_at            INTEGER NOT NULL,
    lease_token       TEXT,
    lease_owner       TEXT,
    lease_expires_at  INTEGER,
    last_error        TEXT,
    created_at        INTEGER NOT NULL,
    updated_at        INTEGER NOT NULL,
    finished_at       INTEGER
);
CREATE UNIQUE INDEX jobs_by_unique_key ON jobs (kind, unique_key) WHERE unique_key IS NOT NULL;
CREATE INDEX jobs_ready ON jobs (run_at) WHERE state = 'ready';
CREATE INDEX jobs_leased ON jobs (lease_expires_at) WHERE state = 'running';
CREATE INDEX jobs_finished ON jobs (state, finished_at);

CREATE TABLE job_attempts (
    id           INTEGER PRIMARY KEY AUTOINCREMENT,
    job_id       TEXT NOT NULL REFERENCES jobs (id) ON DELETE CASCADE,
    attempt      INTEGER NOT NULL,
    worker       TEXT NOT NULL,
    started_at   INTEGER NOT NULL,
    finished_at  INTEGER,
    outcome      TEXT,
    error        TEXT
);
CREATE INDEX job_attempts_by_job ON job_attempts (job_id, attempt);

CREATE TABLE events (
    id           TEXT PRIMARY KEY,
    envelope_id  TEXT NOT NULL REFERENCES envelopes (envelope_id),
    rule         TEXT NOT NULL,
    event_type   TEXT NOT NULL,
    body         TEXT NOT NULL,
    created_at   INTEGER NOT NULL,
    UNIQUE (envelope_id, rule)
);

CREATE TABLE deliveries (
    event_id      TEXT NOT NULL REFERENCES events (id),
    sink          TEXT NOT NULL,
    state         TEXT NOT NULL,
    attempts      INTEGER NOT NULL DEFAULT 0,
    last_error    TEXT,
    created_at    INTEGER NOT NULL,
    updated_at    INTEGER NOT NULL,
    delivered_at  INTEGER,
    PRIMARY KEY (event_id, sink)
);
