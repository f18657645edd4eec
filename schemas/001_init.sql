-- finch's first tables. Stages meet here: ingest and augment write
-- utterances, distill and compile register models, eval writes reports,
-- serve keeps rollout, labelling and webhook state.

CREATE TABLE datasets (
  id          bigserial PRIMARY KEY,
  name        text NOT NULL UNIQUE,
  format      text NOT NULL,
  created_at  timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE ingest_runs (
  id              bigserial PRIMARY KEY,
  dataset_id      bigint NOT NULL REFERENCES datasets(id) ON DELETE CASCADE,
  source          text NOT NULL,
  source_sha256   text,
  format          text NOT NULL,
  status          text NOT NULL DEFAULT 'running' CHECK (status IN ('running', 'done', 'failed')),
  holdout         real,
  seed            bigint,
  rows_read       bigint NOT NULL DEFAULT 0,
  rows_inserted   bigint NOT NULL DEFAULT 0,
  rows_duplicate  bigint NOT NULL DEFAULT 0,
  rows_rejected   bigint NOT NULL DEFAULT 0,
  params          jsonb NOT NULL DEFAULT '{}',
  error           text,
  started_at      timestamptz NOT NULL DEFAULT now(),
  finished_at     timestamptz
);

-- text: the utterance as stored (NFKC, controls removed, white space
-- collapsed, personal data redacted); text_norm: its case-folded form.
-- content_hash: SHA-256 of text_norm, label and dialogue position.
CREATE TABLE utterances (
  id             bigserial PRIMARY KEY,
  dataset_id     bigint NOT NULL REFERENCES datasets(id) ON DELETE CASCADE,
  text           text NOT NULL,
  text_norm      text NOT NULL,
  label          text,
  split          text NOT NULL DEFAULT 'train' CHECK (split IN ('train', 'dev', 'test')),
  dialogue_id    text,
  turn_index     integer,
  speaker        text,
  origin         text NOT NULL DEFAULT 'source' CHECK (origin IN ('source', 'augmented')),
  parent_id      bigint REFERENCES utterances(id) ON DELETE CASCADE,
  method         text,
  method_params  jsonb,
  ingest_run_id  bigint REFERENCES ingest_runs(id) ON DELETE SET NULL,
  source_line    bigint,
  content_hash   text NOT NULL,
  created_at     timestamptz NOT NULL DEFAULT now(),
  UNIQUE (dataset_id, content_hash),
  CHECK ((origin = 'augmented') = (parent_id IS NOT NULL))
);
CREATE INDEX utterances_dataset_split ON utterances (dataset_id, split, label);
CREATE INDEX utterances_parent ON utterances (parent_id);

CREATE TABLE ingest_rejects (
  id          bigserial PRIMARY KEY,
  run_id      bigint NOT NULL REFERENCES ingest_runs(id) ON DELETE CASCADE,
  source      text NOT NULL,
  line        bigint,
  field       text,
  reason      text NOT NULL,
  created_at  timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE augment_runs (
  id              bigserial PRIMARY KEY,
  dataset_id      bigint NOT NULL REFERENCES datasets(id) ON DELETE CASCADE,
  params          jsonb NOT NULL,
  status          text NOT NULL DEFAULT 'running' CHECK (status IN ('running', 'done', 'failed')),
  rows_generated  bigint NOT NULL DEFAULT 0,
  rows_inserted   bigint NOT NULL DEFAULT 0,
  started_at      timestamptz NOT NULL DEFAULT now(),
  finished_at     timestamptz
);

CREATE TABLE models (
  id               bigserial PRIMARY KEY,
  kind             text NOT NULL CHECK (kind IN ('teacher', 'student')),
  stage            text NOT NULL,
  arch             text NOT NULL,
  dtype            text NOT NULL DEFAULT 'f32',
  dataset_id       bigint REFERENCES datasets(id) ON DELETE SET NULL,
  parent_model_id  bigint REFERENCES models(id) ON DELETE SET NULL,
  path             text NOT NULL,
  sha256           text NOT NULL,
  params           bigint NOT NULL,
  bytes            bigint NOT NULL,
  config           jsonb NOT NULL DEFAULT '{}',
  metrics          jsonb NOT NULL DEFAULT '{}',
  created_at       timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE eval_reports (
  id            bigserial PRIMARY KEY,
  model_id      bigint REFERENCES models(id) ON DELETE SET NULL,
  model_sha256  text NOT NULL,
  model_path    text NOT NULL,
  source        text NOT NULL,
  n             integer NOT NULL,
  metrics       jsonb NOT NULL,
  report_path   text,
  created_at    timestamptz NOT NULL DEFAULT now()
);

-- Append-only: the current stage of a deployment (and intent) is its latest row.
CREATE TABLE rollout_state (
  id          bigserial PRIMARY KEY,
  deployment  text NOT NULL,
  intent      text,
  stage       text NOT NULL CHECK (stage IN ('assist', 'shadow', 'canary', 'primary', 'retired')),
  model_id    bigint REFERENCES models(id) ON DELETE SET NULL,
  params      jsonb NOT NULL DEFAULT '{}',
  changed_by  text NOT NULL,
  reason      text,
  created_at  timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX rollout_state_current ON rollout_state (deployment, intent, id DESC);

CREATE TABLE labeling_tasks (
  id                    bigserial PRIMARY KEY,
  utterance_id          bigint REFERENCES utterances(id) ON DELETE SET NULL,
  conversation_id       text,
  text                  text NOT NULL,
  suggested_label       text,
  suggested_confidence  real,
  model_sha256          text,
  rule_label            text,
  status                text NOT NULL DEFAULT 'open'
                        CHECK (status IN ('open', 'accepted', 'corrected', 'skipped')),
  final_label           text,
  labeler               text,
  created_at            timestamptz NOT NULL DEFAULT now(),
  resolved_at           timestamptz
);

CREATE TABLE webhook_outbox (
  id               bigserial PRIMARY KEY,
  event_type       text NOT NULL,
  payload          jsonb NOT NULL,
  endpoint         text NOT NULL,
  idempotency_key  text NOT NULL UNIQUE,
  status           text NOT NULL DEFAULT 'pending' CHECK (status IN ('pending', 'delivered', 'dead')),
  attempts         integer NOT NULL DEFAULT 0,
  next_attempt_at  timestamptz NOT NULL DEFAULT now(),
  last_error       text,
  created_at       timestamptz NOT NULL DEFAULT now(),
  delivered_at     timestamptz
);

CREATE TABLE audit_log (
  id          bigserial PRIMARY KEY,
  actor       text NOT NULL,
  action      text NOT NULL,
  subject     text,
  details     jsonb NOT NULL DEFAULT '{}',
  created_at  timestamptz NOT NULL DEFAULT now()
);
