/* finch pipeline run under the failures a scheduler meets, through the
 * binary ($FINCH_BIN) against the test database:
 *   - a run killed with SIGKILL (runner and step together, as a node loss
 *     or an OOM kill does) while its distill step is running: the next
 *     runner marks the step failed, and --resume finishes the run with the
 *     same outputs as an uninterrupted run of the same pipeline (the same
 *     student: accuracy, parameters, model file SHA-256 after compile);
 *   - two runners of one pipeline started at once: the second waits for the
 *     lock, then finds every step's inputs unchanged and skips it; no step
 *     runs twice. */
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "tests/dbtest.h"
#include "tests/test.h"

static const char *bin;
static char tmp[1024];

/* The pipeline NAME on dataset DS: ingest the sample, distill (long enough
 * to be caught running), compile to tmp/NAME.fnm. */
static const char *pipeline(const char *name, const char *ds) {
  static char path[1200];
  char text[2048];
  snprintf(text, sizeof text,
           "pipeline: %s\n"
           "steps:\n"
           "  - name: ingest\n"
           "    run: ingest\n"
           "    with: {format: banking77, dataset: %s, holdout: 0.3, seed: 3}\n"
           "    args: [\"%s/data/sample/banking_sample.csv\"]\n"
           "  - name: distill\n"
           "    run: distill\n"
           "    needs: [ingest]\n"
           "    with: {dataset: \"${steps.ingest.dataset}\", teacher-epochs: 40, student-epochs: 40, seed: 4}\n"
           "  - name: compile\n"
           "    run: compile\n"
           "    needs: [distill]\n"
           "    with: {model: \"${steps.distill.model_id}\", output: \"%s/%s.fnm\", dtype: q8}\n",
           name, ds, FINCH_SOURCE_DIR, tmp, name);
  snprintf(path, sizeof path, "%s/%s.yaml", tmp, name);
  test_write_file(path, text, strlen(text));
  return path;
}

/* Starts `finch ARGS` in a process group of its own; its pid (the group). */
static pid_t spawn(const char *args) {
  char cmd[4096];
  snprintf(cmd, sizeof cmd, "exec '%s' %s >/dev/null 2>&1", bin, args);
  pid_t pid = fork();
  if (pid == 0) {
    setpgid(0, 0);
    execl("/bin/sh", "sh", "-c", cmd, (char *)NULL);
    _exit(127);
  }
  if (pid > 0) setpgid(pid, pid);
  return pid;
}

static void sleep_ms(long ms) {
  struct timespec ts = {ms / 1000, (ms % 1000) * 1000000L};
  nanosleep(&ts, NULL);
}

/* The student a pipeline run's distill step registered: its accuracy and
 * parameters as registered, "acc|params". */
static void student_of(finch_db *db, long long run, char *out, size_t n) {
  long long id = test_sqlf(db, "SELECT (outputs->>'model_id')::bigint FROM job_runs WHERE run_id = %lld AND step = "
                               "'distill' AND status = 'succeeded'", run);
  long long params = test_sqlf(db, "SELECT params FROM models WHERE id = %lld", id);
  long long acc = test_sqlf(db, "SELECT round((metrics->>'dev_accuracy')::numeric * 1000000) FROM models "
                                "WHERE id = %lld", id);
  snprintf(out, n, "%lld|%lld", acc, params);
}

int main(void) {
  bin = getenv("FINCH_BIN");
  if (!bin || !*bin) TEST_SKIP("FINCH_BIN is not set");
  finch_db *db = test_db_open();
  snprintf(tmp, sizeof tmp, "%s", test_tmpdir());
  char args[2048];
  int status;

  /* Uninterrupted: the reference outputs. */
  snprintf(args, sizeof args, "pipeline run '%s'", pipeline("whole", "kds"));
  char cmd[4096];
  snprintf(cmd, sizeof cmd, "'%s' %s 2>&1", bin, args);
  char *out0 = test_run(cmd, &status);
  if (status) fprintf(stderr, "%s\n", out0);
  free(out0);
  CHECK_INT_EQ(status, 0);
  long long whole = test_scalar(db, "SELECT max(id) FROM pipeline_runs WHERE pipeline = 'whole'");
  char want[64];
  student_of(db, whole, want, sizeof want);
  /* Again: every step skipped, compile too (the file it wrote is its
   * output, not an input that changed). */
  out0 = test_run(cmd, &status);
  CHECK_INT_EQ(status, 0);
  CHECK_CONTAINS(out0, "step compile: skipped");
  free(out0);
  CHECK_INT_EQ(test_scalar(db, "SELECT count(*) FROM job_runs j JOIN pipeline_runs p ON p.id = j.run_id WHERE "
                               "p.pipeline = 'whole' AND j.status = 'skipped'"), 3);

  /* The same pipeline under another name (its own lock and history), killed
   * while distill runs. */
  snprintf(args, sizeof args, "pipeline run '%s'", pipeline("killed", "kds2"));
  pid_t pid = spawn(args);
  CHECK(pid > 0);
  int caught = 0;
  for (int i = 0; i < 3000 && !caught; i++) { /* up to 60 s */
    caught = test_scalar(db, "SELECT count(*) FROM job_runs j JOIN pipeline_runs p ON p.id = j.run_id WHERE "
                             "p.pipeline = 'killed' AND j.step = 'distill' AND j.status = 'running'") > 0;
    if (!caught) sleep_ms(20);
  }
  CHECK(caught);
  kill(-pid, SIGKILL);
  waitpid(pid, &status, 0);
  CHECK(WIFSIGNALED(status));
  long long run = test_scalar(db, "SELECT max(id) FROM pipeline_runs WHERE pipeline = 'killed'");
  CHECK_INT_EQ(test_sqlf(db, "SELECT count(*) FROM job_runs WHERE run_id = %lld AND step = 'distill' AND status = "
                             "'succeeded'", run), 0);
  snprintf(cmd, sizeof cmd, "'%s' pipeline run --resume %lld 2>&1", bin, run);
  char *out = test_run(cmd, &status);
  if (status) fprintf(stderr, "%s\n", out);
  CHECK_INT_EQ(status, 0);
  CHECK_CONTAINS(out, "step ingest: done in run");
  free(out);
  /* The killed step is on record as failed, then done in the same run. */
  CHECK_INT_EQ(test_sqlf(db, "SELECT count(*) FROM job_runs WHERE run_id = %lld AND step = 'distill' AND status = "
                             "'failed'", run), 1);
  CHECK_INT_EQ(test_sqlf(db, "SELECT count(*) FROM job_runs WHERE run_id = %lld AND step = 'ingest'", run), 1);
  char got[64];
  student_of(db, run, got, sizeof got);
  printf("uninterrupted student %s, killed and resumed %s (accuracy x 1e6 | parameters)\n", want, got);
  CHECK_STR_EQ(got, want);

  /* Two runners at once: one runs each step, the other skips it. */
  const char *twice = pipeline("twice", "kds3");
  snprintf(args, sizeof args, "pipeline run '%s'", twice);
  pid_t a = spawn(args), b = spawn(args);
  int sa = -1, sb = -1;
  waitpid(a, &sa, 0);
  waitpid(b, &sb, 0);
  CHECK(WIFEXITED(sa) && WEXITSTATUS(sa) == 0);
  CHECK(WIFEXITED(sb) && WEXITSTATUS(sb) == 0);
  CHECK_INT_EQ(test_scalar(db, "SELECT count(*) FROM pipeline_runs WHERE pipeline = 'twice'"), 2);
  CHECK_INT_EQ(test_scalar(db, "SELECT count(*) FROM job_runs j JOIN pipeline_runs p ON p.id = j.run_id WHERE "
                               "p.pipeline = 'twice' AND j.status = 'succeeded'"), 3);
  CHECK_INT_EQ(test_scalar(db, "SELECT count(*) FROM job_runs j JOIN pipeline_runs p ON p.id = j.run_id WHERE "
                               "p.pipeline = 'twice' AND j.status = 'skipped'"), 3);
  CHECK_INT_EQ(test_scalar(db, "SELECT count(*) FROM datasets WHERE name = 'kds3'"), 1);
  finch_db_close(db);
  TEST_DONE();
}
