-- Per-step training metrics of the engine's encoders: one row a step, so a
-- run's loss, learning rate, gradient norm and speed can be plotted and
-- audited. run names the training run ("<dataset>-<member>-<pid>-<time>");
-- model_id is set once the run's model is registered.
CREATE TABLE training_metrics (
  id          bigserial PRIMARY KEY,
  run         text NOT NULL,
  model_id    bigint REFERENCES models(id) ON DELETE SET NULL,
  phase       text NOT NULL,
  step        bigint NOT NULL,
  epoch       integer NOT NULL,
  loss        real NOT NULL,
  cls_loss    real,
  mlm_loss    real,
  hidden_loss real,
  attn_loss   real,
  lr          real NOT NULL,
  grad_norm   real,
  ex_per_s    real,
  created_at  timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX training_metrics_run ON training_metrics (run, phase, step);
