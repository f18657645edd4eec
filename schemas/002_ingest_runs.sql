-- Ingest runs that can stop and resume, and what they redacted.
--   rows_loaded: rows of the run's ordered row list committed so far; a
--     resumed run (finch ingest --resume ID) starts there.
--   redactions: personal data replaced, by type ({"card": 3, ...}).
--   split_policy: 'source' (the source's own splits), 'holdout' (seeded,
--     stratified by label, or by dialogue for dialogues) or 'none'.
ALTER TABLE ingest_runs
  ADD COLUMN rows_loaded bigint NOT NULL DEFAULT 0,
  ADD COLUMN rows_total bigint,
  ADD COLUMN redactions jsonb NOT NULL DEFAULT '{}',
  ADD COLUMN split_policy text,
  ADD COLUMN seconds double precision;
ALTER TABLE ingest_runs DROP CONSTRAINT ingest_runs_status_check;
ALTER TABLE ingest_runs ADD CONSTRAINT ingest_runs_status_check
  CHECK (status IN ('running', 'stopped', 'done', 'failed'));

ALTER TABLE utterances ADD COLUMN meta jsonb;
CREATE INDEX utterances_dialogue ON utterances (dataset_id, dialogue_id, turn_index)
  WHERE dialogue_id IS NOT NULL;
