-- Agreements: requests from IT systems that countersign send an envelope
-- from a DocuSign template. A client's idempotency key names one request
-- for good; its digest tells a repeat from a different request under the
-- same key. The envelope id is unique: one agreement per envelope.
-- send_attempted_at is committed before the first POST that may create the
-- envelope: from then on a send searches before it creates.
CREATE TABLE agreements (
    id               TEXT PRIMARY KEY,
    client           TEXT NOT NULL,
    idempotency_key  TEXT NOT NULL,
    request_sha256   TEXT NOT NULL,
    profile          TEXT NOT NULL,
    data             TEXT NOT NULL,
    status           TEXT NOT NULL,
    account_id       TEXT,
    envelope_id      TEXT UNIQUE,
    error_code       TEXT,
    last_error       TEXT,
    void_reason      TEXT,
    created_at       INTEGER NOT NULL,
    updated_at       INTEGER NOT NULL,
    send_attempted_at INTEGER,
    sent_at          INTEGER,
    finished_at      INTEGER,
    UNIQUE (client, idempotency_key)
);
CREATE INDEX agreements_by_time ON agreements (created_at);

-- An agreement's lifecycle events are events like the rules' ones, but an
-- agreement DocuSign refused has no envelope: events may name an agreement
-- instead. SQLite cannot drop NOT NULL in place, so the table is rebuilt;
-- deliveries refer to it, so their check waits for the commit, by which
-- time every event is back under its old id.
PRAGMA defer_foreign_keys = ON;
CREATE TEMP TABLE events_before_0008 AS SELECT * FROM events;
DROP TABLE events;
CREATE TABLE events (
    id            TEXT PRIMARY KEY,
    envelope_id   TEXT REFERENCES envelopes (envelope_id),
    agreement_id  TEXT REFERENCES agreements (id),
    rule          TEXT NOT NULL,
    event_type    TEXT NOT NULL,
    body          TEXT NOT NULL,
    created_at    INTEGER NOT NULL,
    ordinal       INTEGER NOT NULL DEFAULT 0,
    UNIQUE (envelope_id, rule),
    CHECK (envelope_id IS NOT NULL OR agreement_id IS NOT NULL)
);
INSERT INTO events (id, envelope_id, agreement_id, rule, event_type, body, created_at, ordinal)
SELECT id, envelope_id, NULL, rule, event_type, body, created_at, ordinal FROM events_before_0008;
DROP TABLE events_before_0008;
CREATE UNIQUE INDEX events_by_agreement ON events (agreement_id, rule) WHERE envelope_id IS NULL;
