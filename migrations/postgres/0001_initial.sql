-- Times are timestamptz; ids countersign mints are uuid; DocuSign GUIDs are
-- kept as the lowercase text the SQLite schema uses, so both read the same.

CREATE TABLE notifications (
    id            UUID PRIMARY KEY,
    account_id    TEXT NOT NULL,
    envelope_id   TEXT NOT NULL,
    event         TEXT NOT NULL,
    recipient_id  TEXT,
    generated_at  TIMESTAMPTZ NOT NULL,
    format        TEXT NOT NULL,
    origin        TEXT NOT NULL,
    dedupe_key    TEXT NOT NULL UNIQUE,
    body_sha256   TEXT NOT NULL UNIQUE,
    disposition   TEXT NOT NULL,
    summary       JSONB NOT NULL,
    received_at   TIMESTAMPTZ NOT NULL
);
CREATE INDEX notifications_by_envelope ON notifications (envelope_id, received_at);

CREATE TABLE envelopes (
    envelope_id   TEXT PRIMARY KEY,
    account_id    TEXT NOT NULL,
    status        TEXT NOT NULL,
    subject       TEXT,
    completed_at  TIMESTAMPTZ,
    created_at    TIMESTAMPTZ NOT NULL,
    updated_at    TIMESTAMPTZ NOT NULL
);
CREATE INDEX envelopes_by_status ON envelopes (status, updated_at);

CREATE TABLE documents (
    envelope_id   TEXT NOT NULL REFERENCES envelopes (envelope_id),
    document_id   TEXT NOT NULL,
    name          TEXT NOT NULL,
    file_name     TEXT NOT NULL,
    content_type  TEXT NOT NULL,
    size_bytes    BIGINT NOT NULL,
    sha256        TEXT NOT NULL,
    storage_key   TEXT NOT NULL,
    stored_at     TIMESTAMPTZ NOT NULL,
    PRIMARY KEY (envelope_id, document_id)
);

CREATE TABLE jobs (
    id                UUID PRIMARY KEY,
    kind              TEXT NOT NULL,
    unique_key        TEXT,
    payload           JSONB NOT NULL,
    state             TEXT NOT NULL,
    attempts          INTEGER NOT NULL DEFAULT 0,
    max_attempts      INTEGER NOT NULL,
    run_at            TIMESTAMPTZ NOT NULL,
    lease_token       UUID,
    lease_owner       TEXT,
    lease_expires_at  TIMESTAMPTZ,
    last_error        TEXT,
    created_at        TIMESTAMPTZ NOT NULL,
    updated_at        TIMESTAMPTZ NOT NULL,
    finished_at       TIMESTAMPTZ
);
CREATE UNIQUE INDEX jobs_by_unique_key ON jobs (kind, unique_key) WHERE unique_key IS NOT NULL;
CREATE INDEX jobs_ready ON jobs (run_at) WHERE state = 'ready';
CREATE INDEX jobs_leased ON jobs (lease_expires_at) WHERE state = 'running';
CREATE INDEX jobs_finished ON jobs (state, finished_at);

CREATE TABLE job_attempts (
    id           BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    job_id       UUID NOT NULL REFERENCES jobs (id) ON DELETE CASCADE,
    attempt      INTEGER NOT NULL,
    worker       TEXT NOT NULL,
    started_at   TIMESTAMPTZ NOT NULL,
    finished_at  TIMESTAMPTZ,
    outcome      TEXT,
    error        TEXT
);
CREATE INDEX job_attempts_by_job ON job_attempts (job_id, attempt);

CREATE TABLE events (
    id           UUID PRIMARY KEY,
    envelope_id  TEXT NOT NULL REFERENCES envelopes (envelope_id),
    rule         TEXT NOT NULL,
    event_type   TEXT NOT NULL,
    body         JSONB NOT NULL,
    created_at   TIMESTAMPTZ NOT NULL,
    UNIQUE (envelope_id, rule)
);

CREATE TABLE deliveries (
    event_id      UUID NOT NULL REFERENCES events (id),
    sink          TEXT NOT NULL,
    state         TEXT NOT NULL,
    attempts      INTEGER NOT NULL DEFAULT 0,
    last_error    TEXT,
    created_at    TIMESTAMPTZ NOT NULL,
    updated_at    TIMESTAMPTZ NOT NULL,
    delivered_at  TIMESTAMPTZ,
    PRIMARY KEY (event_id, sink)
);
