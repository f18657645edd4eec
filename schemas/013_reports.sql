-- Immutable evaluation reports and their sign-off (evaluate/store.h).
--   body: the report's data model, the JSON whose canonical bytes (sorted
--     keys, fixed float precision) are written to report-<id>-<sha12>.json;
--     it holds nothing that varies between runs of the same evaluation.
--   body_sha256: SHA-256 of those bytes; one report per distinct body, so
--     re-running an evaluation finds its report instead of adding another.
--   measurements: what was measured on the run that made the report and
--     varies from run to run (latency, the cost derived from it, the time,
--     the paths and command line); shown beside the body, never hashed.
--   json_path: the body's file (report_path stays the Markdown's).
-- A report with a body is never rewritten: its body and hash cannot be
-- updated and the row cannot be deleted.
ALTER TABLE eval_reports
  ADD COLUMN body jsonb,
  ADD COLUMN body_sha256 text CHECK (body_sha256 ~ '^[0-9a-f]{64}$'),
  ADD COLUMN measurements jsonb NOT NULL DEFAULT '{}',
  ADD COLUMN json_path text,
  ADD CONSTRAINT eval_reports_body_hashed CHECK ((body IS NULL) = (body_sha256 IS NULL));
CREATE UNIQUE INDEX eval_reports_body_sha256 ON eval_reports (body_sha256) WHERE body_sha256 IS NOT NULL;

CREATE FUNCTION eval_reports_immutable() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
  IF TG_OP = 'DELETE' THEN
    IF OLD.body IS NOT NULL THEN
      RAISE EXCEPTION 'eval report % is immutable: it cannot be deleted', OLD.id;
    END IF;
    RETURN OLD;
  END IF;
  IF OLD.body IS NOT NULL AND (NEW.body IS DISTINCT FROM OLD.body OR NEW.body_sha256 IS DISTINCT FROM OLD.body_sha256) THEN
    RAISE EXCEPTION 'eval report % is immutable: its body and body_sha256 cannot be changed', OLD.id;
  END IF;
  RETURN NEW;
END $$;
CREATE TRIGGER eval_reports_immutable BEFORE UPDATE OR DELETE ON eval_reports
  FOR EACH ROW EXECUTE FUNCTION eval_reports_immutable();

-- Sign-off: append-only. Each decision names the report's body hash, which
-- must be the report's own (a decision on another version is refused).
CREATE TABLE report_approvals (
  id           bigserial PRIMARY KEY,
  report_id    bigint NOT NULL REFERENCES eval_reports(id),
  body_sha256  text NOT NULL,
  reviewer     text NOT NULL CHECK (btrim(reviewer) <> ''),
  decision     text NOT NULL CHECK (decision IN ('approve', 'reject')),
  comment      text NOT NULL DEFAULT '',
  created_at   timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX report_approvals_report ON report_approvals (report_id, id);

CREATE FUNCTION report_approvals_check() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
  IF TG_OP <> 'INSERT' THEN
    RAISE EXCEPTION 'report_approvals is append-only: % is not allowed', TG_OP;
  END IF;
  IF NOT EXISTS (SELECT 1 FROM eval_reports WHERE id = NEW.report_id AND body_sha256 = NEW.body_sha256) THEN
    RAISE EXCEPTION 'report % has no body with sha256 %', NEW.report_id, NEW.body_sha256;
  END IF;
  RETURN NEW;
END $$;
CREATE TRIGGER report_approvals_append_only BEFORE INSERT OR UPDATE OR DELETE ON report_approvals
  FOR EACH ROW EXECUTE FUNCTION report_approvals_check();
CREATE TRIGGER report_approvals_no_truncate BEFORE TRUNCATE ON report_approvals
  FOR EACH STATEMENT EXECUTE FUNCTION report_approvals_check();
