-- How far each account's completed envelopes have been listed by the
-- reconciler. Advanced only after a listing was recorded in full.
CREATE TABLE reconcile_checkpoints (
    account_id    TEXT PRIMARY KEY,
    listed_until  INTEGER NOT NULL,
    found_total   INTEGER NOT NULL DEFAULT 0,
    updated_at    INTEGER NOT NULL
);

-- A pass under way, recorded page by page, so that a pass interrupted by a
-- rate limit resumes where it stopped instead of starting over.
CREATE TABLE reconcile_passes (
    account_id    TEXT PRIMARY KEY,
    listed_from   INTEGER NOT NULL,
    listed_until  INTEGER NOT NULL,
    position      INTEGER NOT NULL,
    found         INTEGER NOT NULL,
    updated_at    INTEGER NOT NULL
);
