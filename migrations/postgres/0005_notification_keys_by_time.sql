-- The two deduplication keys are unique together with the generated time:
-- the same constraint (both keys determine the generated time), but inserts
-- land at the right edge of the indexes, as notifications arrive roughly in
-- generated-time order, instead of on a random page each. See the SQLite
-- migration of the same name.
ALTER TABLE notifications
    DROP CONSTRAINT notifications_dedupe_key_key,
    DROP CONSTRAINT notifications_body_sha256_key,
    ADD CONSTRAINT notifications_dedupe_key_key UNIQUE (generated_at, dedupe_key),
    ADD CONSTRAINT notifications_body_sha256_key UNIQUE (generated_at, body_sha256);
