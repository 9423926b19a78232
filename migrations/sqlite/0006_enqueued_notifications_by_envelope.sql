-- Only notifications that enqueued processing are looked up by envelope (the
-- admin envelope page, reconciliation's "already received?"). The index is
-- keyed by DocuSign's random envelope GUID, so each entry dirties a random
-- page: for an ignored notification that page was more than half of what
-- its group commit wrote to the WAL, and nothing ever read it.
DROP INDEX notifications_by_envelope;
CREATE INDEX notifications_enqueued_by_envelope ON notifications (envelope_id, received_at)
    WHERE disposition = 'enqueued';
