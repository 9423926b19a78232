-- A document belongs to an envelope of one account: its row is keyed by
-- (account, envelope, document) and refers to the envelope through the same
-- pair, so a row naming an envelope of another account cannot be written.
-- Before this, a notification signed with account A's key that named an
-- envelope of account B replaced B's document rows (keyed by envelope id
-- alone). Existing rows take their envelope's account.
CREATE UNIQUE INDEX envelopes_by_account ON envelopes (account_id, envelope_id);

CREATE TABLE documents_by_account (
    account_id    TEXT NOT NULL,
    envelope_id   TEXT NOT NULL,
    document_id   TEXT NOT NULL,
    name          TEXT NOT NULL,
    file_name     TEXT NOT NULL,
    content_type  TEXT NOT NULL,
    size_bytes    INTEGER NOT NULL,
    sha256        TEXT NOT NULL,
    storage_key   TEXT NOT NULL,
    stored_at     INTEGER NOT NULL,
    PRIMARY KEY (account_id, envelope_id, document_id),
    FOREIGN KEY (account_id, envelope_id) REFERENCES envelopes (account_id, envelope_id)
);
INSERT INTO documents_by_account (account_id, envelope_id, document_id, name, file_name, content_type,
    size_bytes, sha256, storage_key, stored_at)
SELECT e.account_id, d.envelope_id, d.document_id, d.name, d.file_name, d.content_type,
    d.size_bytes, d.sha256, d.storage_key, d.stored_at
FROM documents d JOIN envelopes e ON e.envelope_id = d.envelope_id;
DROP TABLE documents;
ALTER TABLE documents_by_account RENAME TO documents;
-- The documents route and the events find an envelope's documents by its id.
CREATE INDEX documents_by_envelope ON documents (envelope_id, document_id);
