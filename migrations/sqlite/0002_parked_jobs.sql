-- Jobs waiting on an operator (DocuSign consent, configuration) are
-- 'parked'; workers claim them when due, like ready jobs.
CREATE INDEX jobs_parked ON jobs (run_at) WHERE state = 'parked';
