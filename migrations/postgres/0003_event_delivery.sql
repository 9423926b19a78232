-- Events of one envelope are delivered to each sink in the order they were
-- created: by created_at, then by their position in the envelope's plan
-- (events planned together share a created_at).
ALTER TABLE events ADD COLUMN ordinal INTEGER NOT NULL DEFAULT 0;

-- Finding the earlier deliveries of an envelope to a sink, and a sink's dead letters.
CREATE INDEX deliveries_by_sink ON deliveries (sink, state);

-- Sinks an operator must look at: a webhook that answered 410 Gone is
-- disabled until an operator replays its deliveries. Shared by every replica.
CREATE TABLE sink_status (
    sink         TEXT PRIMARY KEY,
    state        TEXT NOT NULL,
    reason       TEXT NOT NULL,
    changed_at   TIMESTAMPTZ NOT NULL
);
