-- Pipeline runs and their steps (finch pipeline run, cli/cmd_pipeline.c).
--
-- One pipeline run is one row of pipeline_runs; each step it runs, skips or
-- fails adds one row to job_runs under that run. A resumed run (--resume)
-- keeps its id and adds rows for the steps it runs again; earlier failed rows
-- stay as history. status 'running' on a row whose runner is gone (killed) is
-- turned into 'failed' by the next runner of the same pipeline, which holds
-- the pipeline's advisory lock and so knows no other runner is alive.
CREATE TABLE pipeline_runs (
  id           bigserial PRIMARY KEY,
  pipeline     text NOT NULL,
  file         text NOT NULL,         -- the pipeline file as given (absolute)
  file_sha256  text NOT NULL,         -- of its bytes at the latest start or resume
  status       text NOT NULL DEFAULT 'running' CHECK (status IN ('running', 'succeeded', 'failed')),
  resumes      integer NOT NULL DEFAULT 0,
  started_at   timestamptz NOT NULL DEFAULT now(),
  finished_at  timestamptz
);
CREATE INDEX pipeline_runs_pipeline ON pipeline_runs (pipeline, id);

-- inputs_sha256: SHA-256 over the step's resolved command line, the SHA-256
-- of every argument that names a file, the outputs of the steps it needs and,
-- for a command that reads a dataset, that dataset's content version (count,
-- largest id and a digest of the ids, splits and labels of its source rows).
-- A step whose inputs_sha256 equals that of the last succeeded row of the
-- same (pipeline, step) is skipped: a row with status 'skipped', the outputs
-- of that row, and skipped_from pointing at it.
-- outputs: {"model_id", "teacher_id", "report_id", "dataset", "run_id",
-- "path", "deployment", "stage"}, those the command printed.
CREATE TABLE job_runs (
  id             bigserial PRIMARY KEY,
  run_id         bigint NOT NULL REFERENCES pipeline_runs(id) ON DELETE CASCADE,
  pipeline       text NOT NULL,
  step           text NOT NULL,
  command        text NOT NULL,
  inputs_sha256  text NOT NULL CHECK (inputs_sha256 ~ '^[0-9a-f]{64}$'),
  outputs        jsonb NOT NULL DEFAULT '{}',
  status         text NOT NULL CHECK (status IN ('running', 'succeeded', 'failed', 'skipped')),
  skipped_from   bigint REFERENCES job_runs(id) ON DELETE SET NULL,
  exit_code      integer,
  started_at     timestamptz NOT NULL DEFAULT now(),
  finished_at    timestamptz,
  log_tail       text NOT NULL DEFAULT ''
);
CREATE INDEX job_runs_run ON job_runs (run_id, id);
CREATE INDEX job_runs_last_success ON job_runs (pipeline, step, id) WHERE status = 'succeeded';
