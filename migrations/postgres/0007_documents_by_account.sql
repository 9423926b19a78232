-- A document belongs to an envelope of one account: its row is keyed by
-- (account, envelope, document) and refers to the envelope through the same
-- pair. See the SQLite migration of the same name.
CREATE UNIQUE INDEX envelopes_by_account ON envelopes (account_id, envelope_id);
ALTER TABLE envelopes ADD CONSTRAINT envelopes_account_envelope UNIQUE USING INDEX envelopes_by_account;

ALTER TABLE documents ADD COLUMN account_id TEXT;
UPDATE documents d SET account_id = e.account_id FROM envelopes e WHERE e.envelope_id = d.envelope_id;
ALTER TABLE documents ALTER COLUMN account_id SET NOT NULL;
ALTER TABLE documents DROP CONSTRAINT documents_pkey;
ALTER TABLE documents DROP CONSTRAINT documents_envelope_id_fkey;
ALTER TABLE documents ADD PRIMARY KEY (account_id, envelope_id, document_id);
ALTER TABLE documents ADD FOREIGN KEY (account_id, envelope_id) REFERENCES envelopes (account_id, envelope_id);
CREATE INDEX documents_by_envelope ON documents (envelope_id, document_id);
