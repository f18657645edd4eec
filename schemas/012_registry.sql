-- The registry's quality gate, aliases and the trainers' dev figures.
--
-- models.status: 'failed' when the model did not pass the quality gate of
-- the command that trained it (a teacher not above its dataset's
-- majority-class rate by the margin asked, a student below the asked
-- fraction of its teacher's accuracy); metrics->'gate' says why. `best` and
-- `latest` never pick a failed model. Models from before passed no gate and
-- read as 'ok'.
ALTER TABLE models ADD COLUMN status text NOT NULL DEFAULT 'ok' CHECK (status IN ('ok', 'failed'));

-- Aliases (production, staging, ...): one model per alias per dataset. The
-- current binding lives here; every move is kept in model_alias_history.
CREATE TABLE model_aliases (
  dataset_id bigint NOT NULL REFERENCES datasets(id) ON DELETE CASCADE,
  alias      text NOT NULL CHECK (alias ~ '^[A-Za-z][A-Za-z0-9_.-]{0,63}$'
                                  AND alias NOT IN ('best', 'latest', 'none')),
  model_id   bigint NOT NULL REFERENCES models(id) ON DELETE CASCADE,
  tagged_at  timestamptz NOT NULL DEFAULT now(),
  PRIMARY KEY (dataset_id, alias)
);

-- Append-only: one row per tag or untag, naming the dataset and models by
-- value so that the history outlives them.
CREATE TABLE model_alias_history (
  id                bigserial PRIMARY KEY,
  dataset           text NOT NULL,
  alias             text NOT NULL,
  action            text NOT NULL CHECK (action IN ('tag', 'untag')),
  model_id          bigint,          -- tag: the model now bound; untag: NULL
  previous_model_id bigint,          -- the model bound before, NULL when none
  at                timestamptz NOT NULL DEFAULT now()
);
CREATE FUNCTION model_alias_history_frozen() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
  RAISE EXCEPTION 'model_alias_history is append-only';
END $$;
CREATE TRIGGER model_alias_history_frozen BEFORE UPDATE OR DELETE ON model_alias_history
  FOR EACH ROW EXECUTE FUNCTION model_alias_history_frozen();

-- Per-epoch figures of the trainers: accuracy and mean loss on the dev rows
-- the trainer sees (a teacher member's: the holdout's selection half; a
-- student's: the same selection half, never the report half). Per-step rows
-- and rows from before keep NULL.
ALTER TABLE training_metrics ADD COLUMN dev_accuracy real, ADD COLUMN dev_loss real;
