-- Staged rollout, assisted labelling, conversation turns and API keys
-- (serve/rollout.h, serve/labeling.h, serve/auth.h). Depends on 001 only.

-- API keys: only the SHA-256 of a key is stored; the key itself is shown
-- once, by `finch keys create`. prefix (the key's first 11 characters) lets
-- an operator tell keys apart without the secret.
CREATE TABLE api_keys (
  id          bigserial PRIMARY KEY,
  name        text NOT NULL,
  role        text NOT NULL CHECK (role IN ('integration', 'labeler', 'admin')),
  key_sha256  text COLLATE "C" NOT NULL UNIQUE,
  prefix      text NOT NULL,
  created_at  timestamptz NOT NULL DEFAULT now(),
  revoked_at  timestamptz
);

-- Every turn a contact centre sends, redacted before it is stored, with both
-- engines' answers and who answered.
CREATE TABLE conversation_turns (
  id                bigserial PRIMARY KEY,
  deployment        text NOT NULL,
  conversation_id   text NOT NULL,
  turn_index        integer NOT NULL,
  speaker           text NOT NULL CHECK (speaker IN ('user', 'agent')),
  text              text NOT NULL,
  stage             text,
  engine            text CHECK (engine IN ('rules', 'model')),
  intent            text,
  confidence        real,
  rule_intent       text,
  model_intent      text,
  model_confidence  real,
  model_sha256      text,
  in_canary         boolean,
  handoff           boolean NOT NULL DEFAULT false,
  api_key_id        bigint REFERENCES api_keys(id) ON DELETE SET NULL,
  created_at        timestamptz NOT NULL DEFAULT now(),
  UNIQUE (deployment, conversation_id, turn_index)
);
CREATE INDEX conversation_turns_deployment ON conversation_turns (deployment, created_at);

-- Labelling tasks belong to a deployment and a turn, say why they were made
-- (the engines disagreed, or the model was unsure) and at which stage, and
-- may take a second, independent label for inter-labeller agreement. The
-- first label is final_label; second_label never changes it.
ALTER TABLE labeling_tasks
  ADD COLUMN deployment      text,
  ADD COLUMN turn_id         bigint REFERENCES conversation_turns(id) ON DELETE SET NULL,
  ADD COLUMN stage           text,
  ADD COLUMN reason          text CHECK (reason IN ('disagree', 'unsure')),
  ADD COLUMN second_label    text,
  ADD COLUMN second_labeler  text,
  ADD COLUMN second_at       timestamptz;
CREATE INDEX labeling_tasks_open ON labeling_tasks (deployment, status, id);
CREATE INDEX labeling_tasks_resolved ON labeling_tasks (deployment, resolved_at DESC, id DESC)
  WHERE final_label IS NOT NULL;
