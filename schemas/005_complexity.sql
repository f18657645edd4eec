-- The input complexity of every training row of a distillation and the
-- soft-label weight it gave (distill/complexity.h has the formula), so that
-- a reviewer can see why the student learned what it learned.
CREATE TABLE complexity_scores (
  model_id      bigint NOT NULL REFERENCES models(id) ON DELETE CASCADE,
  utterance_id  bigint NOT NULL REFERENCES utterances(id) ON DELETE CASCADE,
  lexical       real NOT NULL,
  syntactic     real NOT NULL,
  domain        real NOT NULL,
  c             real NOT NULL,
  alpha         real NOT NULL,
  PRIMARY KEY (model_id, utterance_id)
);
