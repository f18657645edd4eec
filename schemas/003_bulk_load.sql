-- Bulk loading: every row a foreign key references costs a lookup per
-- inserted row (about a third of ingest's time). utterances.ingest_run_id is
-- lineage written only by ingest for runs it has just created, and runs are
-- deleted only with their dataset (which deletes the utterances too), so it
-- stays a plain column (unindexed: each index costs every load too).
-- utterances.dataset_id keeps its foreign key.
-- Content hashes are hex digests: compare them bytewise whatever the
-- database's default collation.
ALTER TABLE utterances DROP CONSTRAINT utterances_ingest_run_id_fkey;
ALTER TABLE utterances ALTER COLUMN content_hash TYPE text COLLATE "C";
