-- Agreements: requests from IT systems that countersign send an envelope
-- from a DocuSign template. See the SQLite migration of the same name.
CREATE TABLE agreements (
    id               UUID PRIMARY KEY,
    client           TEXT NOT NULL,
    idempotency_key  TEXT NOT NULL,
    request_sha256   TEXT NOT NULL,
    profile          TEXT NOT NULL,
    data             JSONB NOT NULL,
    status           TEXT NOT NULL,
    account_id       TEXT,
    envelope_id      TEXT UNIQUE,
    error_code       TEXT,
    last_error       TEXT,
    void_reason      TEXT,
    created_at       TIMESTAMPTZ NOT NULL,
    updated_at       TIMESTAMPTZ NOT NULL,
    send_attempted_at TIMESTAMPTZ,
    sent_at          TIMESTAMPTZ,
    finished_at      TIMESTAMPTZ,
    UNIQUE (client, idempotency_key)
);
CREATE INDEX agreements_by_time ON agreements (created_at);

-- An agreement DocuSign refused has no envelope: its events name the agreement.
ALTER TABLE events ALTER COLUMN envelope_id DROP NOT NULL;
ALTER TABLE events ADD COLUMN agreement_id UUID REFERENCES agreements (id);
ALTER TABLE events ADD CONSTRAINT events_envelope_or_agreement CHECK (envelope_id IS NOT NULL OR agreement_id IS NOT NULL);
CREATE UNIQUE INDEX events_by_agreement ON events (agreement_id, rule) WHERE envelope_id IS NULL;
