-- The two deduplication keys are unique together with the generated time.
-- That is the same constraint: both keys determine the generated time (the
-- dedupe key contains it, and an identical body parses to the same time).
-- But notifications arrive roughly in generated-time order, so each insert
-- lands at the right edge of these indexes instead of on a random page: a
-- random key dirties one page per notification per index, and writing those
-- pages to the WAL was most of a group commit's cost.
CREATE TABLE notifications_keyed_by_time (
    id            TEXT PRIMARY KEY,
    account_id    TEXT NOT NULL,
    envelope_id   TEXT NOT NULL,
    event         TEXT NOT NULL,
    recipient_id  TEXT,
    generated_at  INTEGER NOT NULL,
    format        TEXT NOT NULL,
    origin        TEXT NOT NULL,
    dedupe_key    TEXT NOT NULL,
    body_sha256   TEXT NOT NULL,
    disposition   TEXT NOT NULL,
    summary       TEXT NOT NULL,
    received_at   INTEGER NOT NULL,
    UNIQUE (generated_at, dedupe_key),
    UNIQUE (generated_at, body_sha256)
);
INSERT INTO notifications_keyed_by_time (id, account_id, envelope_id, event, recipient_id, generated_at, format,
    origin, dedupe_key, body_sha256, disposition, summary, received_at)
SELECT id, account_id, envelope_id, event, recipient_id, generated_at, format,
    origin, dedupe_key, body_sha256, disposition, summary, received_at
FROM notifications;
DROP TABLE notifications;
ALTER TABLE notifications_keyed_by_time RENAME TO notifications;
CREATE INDEX notifications_by_envelope ON notifications (envelope_id, received_at);
