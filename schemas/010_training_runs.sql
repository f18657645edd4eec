-- Training runs of the engine's encoders: one row per finch teacher train
-- (all its encoder members and their pre-training) and per transformer
-- student's training. Every training_metrics row carries its run's id, so a
-- run's steps are found, and tied to the model it produced, by that id
-- rather than by the pattern of their run names. model_id is set once the
-- run's model is registered.
CREATE TABLE training_runs (
  id          bigserial PRIMARY KEY,
  kind        text NOT NULL CHECK (kind IN ('teacher', 'student')),
  dataset     text NOT NULL,
  model_id    bigint REFERENCES models(id) ON DELETE SET NULL,
  started_at  timestamptz NOT NULL DEFAULT now()
);

ALTER TABLE training_metrics ADD COLUMN run_id bigint REFERENCES training_runs(id) ON DELETE CASCADE;
CREATE INDEX training_metrics_run_id ON training_metrics (run_id);
