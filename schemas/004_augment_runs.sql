-- Augmented rows name the run that made them, for per-run summaries and
-- for removing a run's rows.
ALTER TABLE utterances ADD COLUMN augment_run_id bigint;

-- A teacher's probabilities for a row at a temperature, over the teacher's
-- own label list (models.config->'labels' order is the model file's), kept
-- for distillation and for the label guard's audit trail.
CREATE TABLE teacher_outputs (
  model_id      bigint NOT NULL REFERENCES models(id) ON DELETE CASCADE,
  utterance_id  bigint NOT NULL REFERENCES utterances(id) ON DELETE CASCADE,
  temperature   real NOT NULL,
  probs         real[] NOT NULL,
  created_at    timestamptz NOT NULL DEFAULT now(),
  PRIMARY KEY (model_id, utterance_id, temperature)
);

-- Candidates the label guard dropped, by run and method.
ALTER TABLE augment_runs ADD COLUMN dropped jsonb NOT NULL DEFAULT '{}';
