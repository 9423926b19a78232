-- Only notifications that enqueued processing are looked up by envelope; an
-- ignored one no longer pays for a random index page. See the SQLite
-- migration of the same name.
DROP INDEX notifications_by_envelope;
CREATE INDEX notifications_enqueued_by_envelope ON notifications (envelope_id, received_at)
    WHERE disposition = 'enqueued';
