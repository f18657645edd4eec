/* finch pipeline and finch jobs, black-box through the binary ($FINCH_BIN)
 * against the test database: malformed pipeline files are refused with
 * file:line and the cause, exit 2, nothing recorded; a 3-step pipeline on the
 * bundled sample runs, then runs again with every step skipped; a failed step
 * exits 1 with a failed row and --resume completes the same run; --no-wait
 * while the lock is held elsewhere exits 3; an unreachable database exits 4;
 * each run queues job.succeeded or job.failed. */
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include "tests/dbtest.h"
#include "tests/test.h"

static const char *bin;
static char tmp[1024];

/* Runs `ENV finch ARGS` (stderr folded in); the output is malloc'd, *status the exit code. */
static char *finch(int *status, const char *env, const char *args) {
  char cmd[8192];
  snprintf(cmd, sizeof cmd, "%s '%s' %s 2>&1", env ? env : "", bin, args);
  return test_run(cmd, status);
}

static void expect_env(const char *env, const char *args, int want, const char *needle) {
  int status;
  char *out = finch(&status, env, args);
  if (status != want || (needle && !strstr(out, needle))) fprintf(stderr, "finch %s:\n%s\n", args, out);
  CHECK_INT_EQ(status, want);
  if (needle) CHECK_CONTAINS(out, needle);
  free(out);
}
#define expect(args, want, needle) expect_env(NULL, (args), (want), (needle))

/* Writes a pipeline file tmp/name and returns its path (static, one at a time). */
static const char *pfile(const char *name, const char *text) {
  static char path[1200];
  snprintf(path, sizeof path, "%s/%s", tmp, name);
  test_write_file(path, text, strlen(text));
  return path;
}

/* A malformed file: exit 2, its name with line (and column), and the cause. */
static void refused(const char *name, const char *text, const char *place, const char *cause) {
  char args[1400], where[1300];
  const char *path = pfile(name, text);
  snprintf(args, sizeof args, "pipeline run '%s'", path);
  snprintf(where, sizeof where, "%s:%s", path, place);
  expect(args, 2, where);
  expect(args, 2, cause);
  snprintf(args, sizeof args, "pipeline check '%s'", path);
  expect(args, 2, cause);
}

static const char *sample_pipeline =
    "pipeline: sample-three\n"
    "variables:\n"
    "  dataset: sample\n"
    "  src: \"${env.PL_SOURCE_DIR}/data/sample/banking_sample.csv\"\n"
    "steps:\n"
    "  - name: ingest\n"
    "    run: ingest\n"
    "    with: {format: banking77, dataset: \"${dataset}\", holdout: 0.3, seed: 3}\n"
    "    args: [\"${src}\"]\n"
    "  - name: distill\n"
    "    run: distill\n"
    "    needs: [ingest]\n"
    "    with: {dataset: \"${dataset}\", teacher-epochs: 1, seed: 4}\n"
    "  - name: eval\n"
    "    run: eval\n"
    "    needs: [distill]\n"
    "    with:\n"
    "      model: \"${steps.distill.model_id}\"\n"
    "      dataset: \"${steps.ingest.dataset}\"\n";

static void malformed(finch_db *db) {
  refused("syntax.yaml", "pipeline: x\nsteps:\n  - name: a\n    run: ingest\n    with: {format: [a, b\n", "6:",
          "YAML syntax");
  refused("unknown_key.yaml", "pipeline: x\nschedule: daily\nsteps:\n  - name: a\n    run: ingest\n", "2:1:",
          "unknown key 'schedule'");
  refused("unknown_step_key.yaml", "pipeline: x\nsteps:\n  - name: a\n    run: ingest\n    retries: 3\n", "5:5:",
          "steps[0]: unknown key 'retries'");
  refused("no_run.yaml", "pipeline: x\nsteps:\n  - name: a\n    with: {dataset: d}\n", "3:5:",
          "steps.a: the step has no run");
  refused("bad_command.yaml", "pipeline: x\nsteps:\n  - name: a\n    run: trian\n", "4:10:",
          "steps.a.run: unknown command 'trian'");
  refused("bad_option.yaml", "pipeline: x\nsteps:\n  - name: a\n    run: distill\n    with: {epochz: 3}\n", "5:12:",
          "'epochz' is not an option of finch distill");
  refused("dup.yaml", "pipeline: x\nsteps:\n  - name: a\n    run: ingest\n  - name: a\n    run: eval\n", "5:5:",
          "step name 'a' is used twice");
  refused("cycle.yaml",
          "pipeline: x\nsteps:\n  - name: a\n    run: ingest\n    needs: [c]\n  - name: b\n    run: eval\n"
          "    needs: [a]\n  - name: c\n    run: eval\n    needs: b\n",
          "3:5:", "the needs form a cycle: a -> c -> b -> a");
  refused("needs_unknown.yaml", "pipeline: x\nsteps:\n  - name: a\n    run: ingest\n    needs: [zz]\n", "5:13:",
          "steps.a.needs: unknown step 'zz'");
  refused("bad_var.yaml", "pipeline: x\nsteps:\n  - name: a\n    run: ingest\n    with: {dataset: \"${nosuch}\"}\n",
          "5:21:", "'${nosuch}' is not a variable of this pipeline");
  refused("bad_ref.yaml",
          "pipeline: x\nsteps:\n  - name: a\n    run: ingest\n  - name: b\n    run: eval\n"
          "    with: {model: \"${steps.a.model_id}\"}\n",
          "7:19:", "step b does not need step a");
  refused("bad_output.yaml",
          "pipeline: x\nsteps:\n  - name: a\n    run: ingest\n  - name: b\n    run: eval\n    needs: a\n"
          "    with: {model: \"${steps.a.weights}\"}\n",
          "8:19:", "unknown output 'weights'");
  refused("unclosed.yaml", "pipeline: x\nsteps:\n  - name: a\n    run: ingest\n    args: [\"${env.HOME\"]\n", "5:12:",
          "without a closing '}'");
  refused("bad_name.yaml", "pipeline: Bad Name\nsteps:\n  - name: a\n    run: ingest\n", "1:11:",
          "'Bad Name' is not a pipeline name");
  refused("no_steps.yaml", "pipeline: x\nsteps: []\n", "2:8:", "expected a non-empty list of steps");
  refused("empty.yaml", "", "1:1:", "the file is empty");
  /* An environment variable that is not set: refused by run; check reads the file alone. */
  char args[1400];
  snprintf(args, sizeof args, "pipeline run '%s'",
           pfile("unset_env.yaml", "pipeline: x\nsteps:\n  - name: a\n    run: ingest\n"
                                   "    args: [\"${env.FINCH_TEST_NOT_SET_ANYWHERE}\"]\n"));
  expect(args, 2, "unset_env.yaml:5:12: steps.a.args[0]: environment variable FINCH_TEST_NOT_SET_ANYWHERE is not set");
  expect("pipeline run", 2, "usage");
  expect("pipeline frobnicate x.yaml", 2, "usage");
  CHECK_INT_EQ(test_scalar(db, "SELECT count(*) FROM pipeline_runs"), 0);
  CHECK_INT_EQ(test_scalar(db, "SELECT count(*) FROM job_runs"), 0);
}

int main(void) {
  bin = getenv("FINCH_BIN");
  if (!bin || !*bin) TEST_SKIP("FINCH_BIN is not set");
  finch_db *db = test_db_open();
  snprintf(tmp, sizeof tmp, "%s/test_pipeline", test_tmpdir());
  mkdir(tmp, 0755);
  malformed(db);
  test_exec(db, "INSERT INTO webhook_subscriptions (url, secret, event_types) VALUES "
                "('http://127.0.0.1:9/hook', 's', '{job.succeeded,job.failed}')");

  /* The 3-step pipeline, then again: every step skipped, outputs the same. */
  char env[2048], args[2048];
  snprintf(env, sizeof env, "PL_SOURCE_DIR='%s'", FINCH_SOURCE_DIR);
  snprintf(args, sizeof args, "pipeline run '%s'", pfile("sample.yaml", sample_pipeline));
  expect_env(env, args, 0, "pipeline sample-three: run 1 succeeded");
  CHECK_INT_EQ(test_scalar(db, "SELECT count(*) FROM job_runs WHERE run_id = 1 AND status = 'succeeded'"), 3);
  CHECK_INT_EQ(test_scalar(db, "SELECT (outputs->>'model_id')::int FROM job_runs WHERE step = 'distill'"), 2);
  CHECK_INT_EQ(test_scalar(db, "SELECT (outputs->>'report_id')::int FROM job_runs WHERE step = 'eval'"), 1);
  CHECK_INT_EQ(test_scalar(db, "SELECT count(*) FROM job_runs WHERE step = 'eval' AND command = "
                               "'finch eval --model 2 --dataset sample --json'"), 1);
  expect_env(env, args, 0, "step distill: skipped (inputs unchanged since run 1)");
  CHECK_INT_EQ(test_scalar(db, "SELECT count(*) FROM job_runs WHERE run_id = 2 AND status = 'skipped'"), 3);
  CHECK_INT_EQ(test_scalar(db, "SELECT count(*) FROM models"), 2); /* nothing trained again */
  CHECK_INT_EQ(test_scalar(db, "SELECT count(*) FROM job_runs a JOIN job_runs b ON b.step = a.step AND b.run_id = 2"
                               " AND a.run_id = 1 WHERE a.outputs = b.outputs AND a.inputs_sha256 = b.inputs_sha256"
                               " AND b.skipped_from = a.id"), 3);
  CHECK_INT_EQ(test_scalar(db, "SELECT count(*) FROM webhook_outbox WHERE event_type = 'job.succeeded' AND "
                               "payload->'data'->>'pipeline' = 'sample-three'"), 2);
  /* A changed dataset is a changed input: a labelled row more re-runs distill and eval. */
  test_exec(db, "INSERT INTO utterances (dataset_id, text, text_norm, label, split, content_hash) SELECT id, "
                "'please freeze my card now', 'please freeze my card now', 'card_arrival', 'train', 'x1' "
                "FROM datasets WHERE name = 'sample'");
  expect_env(env, args, 0, "step ingest: skipped");
  CHECK_INT_EQ(test_scalar(db, "SELECT count(*) FROM job_runs WHERE run_id = 3 AND status = 'succeeded'"), 2);

  expect("jobs list", 0, "sample-three\tsucceeded");
  expect("jobs show 2", 0, "distill: skipped");
  expect("jobs show 1", 0, "finch distill --dataset sample --teacher-epochs 1 --seed 4 --json");
  expect("jobs logs 1 --step distill", 0, "== step distill (succeeded) ==");
  expect("jobs show 99", 1, "run 99 does not exist");
  expect("jobs show x", 2, "expected a positive integer");
  int status;
  char *out = finch(&status, NULL, "jobs list --pipeline sample-three --json");
  CHECK_INT_EQ(status, 0);
  json_t *j = json_loads(out, 0, NULL);
  CHECK_INT_EQ(json_array_size(j), 3);
  CHECK_INT_EQ(json_integer_value(json_object_get(json_array_get(j, 0), "skipped")), 1);
  json_decref(j);
  free(out);

  /* A failing step: exit 1, a failed row; --resume re-runs it in the same run once its file exists. */
  char missing[1200], resume_yaml[2048];
  snprintf(missing, sizeof missing, "%s/late.csv", tmp);
  unlink(missing);
  snprintf(resume_yaml, sizeof resume_yaml,
           "pipeline: resumable\n"
           "steps:\n"
           "  - name: first\n"
           "    run: ingest\n"
           "    with: {format: banking77, dataset: early, holdout: 0.3}\n"
           "    args: [\"%s/data/sample/banking_sample.csv\"]\n"
           "  - name: late\n"
           "    run: ingest\n"
           "    needs: [first]\n"
           "    with: {format: banking77, dataset: \"${steps.first.dataset}-late\", holdout: 0.3}\n"
           "    args: [\"${env.PL_LATE}\"]\n",
           FINCH_SOURCE_DIR);
  snprintf(env, sizeof env, "PL_LATE='%s'", missing);
  snprintf(args, sizeof args, "pipeline run '%s'", pfile("resumable.yaml", resume_yaml));
  expect_env(env, args, 1, "step late: failed with exit code 1");
  long long run = test_scalar(db, "SELECT max(id) FROM pipeline_runs");
  CHECK_INT_EQ(test_sqlf(db, "SELECT count(*) FROM job_runs WHERE run_id = %lld AND step = 'late' AND status = "
                             "'failed' AND exit_code = 1 AND log_tail LIKE '%%late.csv%%'", run), 1);
  CHECK_INT_EQ(test_sqlf(db, "SELECT count(*) FROM pipeline_runs WHERE id = %lld AND status = 'failed'", run), 1);
  CHECK_INT_EQ(test_scalar(db, "SELECT count(*) FROM webhook_outbox WHERE event_type = 'job.failed' AND "
                               "payload->'data'->>'failed_step' = 'late'"), 1);
  char csv[1200];
  snprintf(csv, sizeof csv, "cp '%s/data/sample/banking_sample.csv' '%s'", FINCH_SOURCE_DIR, missing);
  CHECK_INT_EQ(system(csv), 0);
  snprintf(args, sizeof args, "pipeline run --resume %lld", run);
  expect_env(env, args, 0, "step first: done in run");
  CHECK_INT_EQ(test_sqlf(db, "SELECT count(*) FROM job_runs WHERE run_id = %lld AND step = 'first'", run), 1);
  CHECK_INT_EQ(test_sqlf(db, "SELECT count(*) FROM job_runs WHERE run_id = %lld AND step = 'late' AND status = "
                             "'succeeded' AND outputs->>'dataset' = 'early-late'", run), 1);
  CHECK_INT_EQ(test_sqlf(db, "SELECT count(*) FROM pipeline_runs WHERE id = %lld AND status = 'succeeded'", run), 1);
  CHECK_INT_EQ(test_scalar(db, "SELECT count(*) FROM datasets WHERE name = 'early-late'"), 1);
  expect_env(env, args, 0, "succeeded already");
  expect("pipeline run --resume 999", 2, "run 999 does not exist");

  /* The lock held elsewhere: --no-wait exits 3 and records nothing. */
  long long runs_before = test_scalar(db, "SELECT count(*) FROM pipeline_runs");
  test_exec(db, "SELECT pg_advisory_lock(7240918, hashtext('resumable'))");
  snprintf(args, sizeof args, "pipeline run --no-wait '%s/resumable.yaml'", tmp);
  expect_env(env, args, 3, "another run of pipeline resumable holds its lock");
  test_exec(db, "SELECT pg_advisory_unlock(7240918, hashtext('resumable'))");
  CHECK_INT_EQ(test_scalar(db, "SELECT count(*) FROM pipeline_runs"), runs_before);
  expect_env(env, args, 0, "step late: skipped");

  /* The database unreachable: exit 4. */
  expect_env("FINCH_DATABASE_URL='postgresql://127.0.0.1:1/none?connect_timeout=2'", args, 4, NULL);
  finch_db_close(db);
  TEST_DONE();
}
