/* Crash safety: `finch ingest` killed with SIGKILL mid-run leaves only whole
 * batches, and --resume completes it to exactly the rows a clean run stores. */
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "tests/dbtest.h"
#include "tests/test.h"

#define ROWS 30000

static pid_t spawn(const char *bin, const char *const *args) {
  pid_t pid = fork();
  if (pid == 0) {
    freopen("/dev/null", "w", stdout);
    execv(bin, (char *const *)args);
    _exit(127);
  }
  return pid;
}

static int wait_exit(pid_t pid) {
  int st;
  waitpid(pid, &st, 0);
  return WIFEXITED(st) ? WEXITSTATUS(st) : -WTERMSIG(st);
}

static char *query_str(finch_db *db, const char *sql) {
  finch_err err;
  PGresult *r = finch_db_query(db, sql, 0, NULL, &err);
  char *s = strdup(r && PQntuples(r) ? PQgetvalue(r, 0, 0) : "");
  PQclear(r);
  return s;
}

int main(void) {
  const char *bin = getenv("FINCH_BIN");
  if (!bin) TEST_SKIP("FINCH_BIN is not set (run through ctest)");
  finch_db *db = test_db_open();
  char path[512];
  snprintf(path, sizeof path, "%s/test_resume.jsonl", test_tmpdir());
  FILE *fp = fopen(path, "w");
  for (int i = 0; i < ROWS; i++)
    fprintf(fp, "{\"text\": \"please move %d pounds to my savings account number %d\", \"label\": \"transfer_%d\"}\n",
            i, i * 7, i % 20);
  fclose(fp);

  /* A clean run into dataset "clean", for reference. */
  const char *clean[] = {bin, "ingest", "--format", "jsonl", "--dataset", "clean", "--holdout", "0.1", path, NULL};
  CHECK_INT_EQ(wait_exit(spawn(bin, clean)), 0);

  /* The same into "killed", killed as soon as some batches are in. */
  const char *args[] = {bin, "ingest", "--format", "jsonl", "--dataset", "killed", "--holdout", "0.1",
                        "--batch", "200", path, NULL};
  pid_t pid = spawn(bin, args);
  long long loaded = 0;
  for (int i = 0; i < 20000 && loaded == 0; i++) {
    struct timespec ts = {0, 2000000};
    nanosleep(&ts, NULL);
    loaded = test_scalar(db, "SELECT coalesce(max(rows_loaded), 0) FROM ingest_runs r JOIN datasets d"
                             " ON d.id = r.dataset_id WHERE d.name = 'killed'");
  }
  kill(pid, SIGKILL);
  CHECK_INT_EQ(wait_exit(pid), -SIGKILL);
  CHECK(loaded > 0);
  long long run = test_scalar(db, "SELECT max(r.id) FROM ingest_runs r JOIN datasets d ON d.id = r.dataset_id"
                                  " WHERE d.name = 'killed'");
  long long at_kill = test_scalar(db, "SELECT rows_loaded FROM ingest_runs r JOIN datasets d ON d.id = r.dataset_id"
                                      " WHERE d.name = 'killed'");
  long long stored = test_scalar(db, "SELECT count(*) FROM utterances u JOIN datasets d ON d.id = u.dataset_id"
                                     " WHERE d.name = 'killed'");
  printf("killed after %lld of %d rows\n", at_kill, ROWS);
  /* Only whole batches, and exactly the progress the run recorded. */
  CHECK_INT_EQ(stored, at_kill);
  CHECK_INT_EQ(at_kill % 200, 0);
  CHECK(at_kill < ROWS); /* killed before the end, or the test proves nothing */

  char runs[32];
  snprintf(runs, sizeof runs, "%lld", run);
  const char *resume[] = {bin, "ingest", "--resume", runs, NULL};
  CHECK_INT_EQ(wait_exit(spawn(bin, resume)), 0);
  CHECK_INT_EQ(test_scalar(db, "SELECT count(*) FROM utterances u JOIN datasets d ON d.id = u.dataset_id"
                               " WHERE d.name = 'killed'"), ROWS);
  char *a = query_str(db, "SELECT md5(string_agg(content_hash || split, ',' ORDER BY content_hash)) FROM utterances u"
                          " JOIN datasets d ON d.id = u.dataset_id WHERE d.name = 'clean'");
  char *b = query_str(db, "SELECT md5(string_agg(content_hash || split, ',' ORDER BY content_hash)) FROM utterances u"
                          " JOIN datasets d ON d.id = u.dataset_id WHERE d.name = 'killed'");
  CHECK_STR_EQ(a, b);
  CHECK_INT_EQ(test_scalar(db, "SELECT count(*) FROM ingest_runs WHERE status = 'done'"), 2);
  char sql[256];
  snprintf(sql, sizeof sql, "SELECT rows_inserted FROM ingest_runs WHERE id = %lld", run);
  CHECK_INT_EQ(test_scalar(db, sql), ROWS);
  /* Re-running (a new run) inserts nothing. */
  CHECK_INT_EQ(wait_exit(spawn(bin, args)), 0);
  CHECK_INT_EQ(test_scalar(db, "SELECT count(*) FROM utterances"), 2 * ROWS);

  /* SIGINT stops at a batch boundary: status 'stopped', whole batches only,
   * exit status 130; --resume finishes the run. */
  const char *sig_args[] = {bin, "ingest", "--format", "jsonl", "--dataset", "interrupted", "--batch", "200", path, NULL};
  pid = spawn(bin, sig_args);
  loaded = 0;
  for (int i = 0; i < 20000 && loaded == 0; i++) {
    struct timespec ts = {0, 2000000};
    nanosleep(&ts, NULL);
    loaded = test_scalar(db, "SELECT coalesce(max(rows_loaded), 0) FROM ingest_runs r JOIN datasets d"
                             " ON d.id = r.dataset_id WHERE d.name = 'interrupted'");
  }
  kill(pid, SIGINT);
  CHECK_INT_EQ(wait_exit(pid), 130);
  CHECK_INT_EQ(test_scalar(db, "SELECT count(*) FROM ingest_runs r JOIN datasets d ON d.id = r.dataset_id"
                               " WHERE d.name = 'interrupted' AND status = 'stopped'"), 1);
  long long kept = test_scalar(db, "SELECT count(*) FROM utterances u JOIN datasets d ON d.id = u.dataset_id"
                                   " WHERE d.name = 'interrupted'");
  CHECK_INT_EQ(kept, test_scalar(db, "SELECT rows_loaded FROM ingest_runs r JOIN datasets d ON d.id = r.dataset_id"
                                     " WHERE d.name = 'interrupted'"));
  CHECK_INT_EQ(kept % 200, 0);
  snprintf(runs, sizeof runs, "%lld", test_scalar(db, "SELECT r.id FROM ingest_runs r JOIN datasets d"
                                                      " ON d.id = r.dataset_id WHERE d.name = 'interrupted'"));
  CHECK_INT_EQ(wait_exit(spawn(bin, resume)), 0);
  CHECK_INT_EQ(test_scalar(db, "SELECT count(*) FROM utterances u JOIN datasets d ON d.id = u.dataset_id"
                               " WHERE d.name = 'interrupted'"), ROWS);
  CHECK_INT_EQ(test_scalar(db, "SELECT count(*) FROM ingest_runs r JOIN datasets d ON d.id = r.dataset_id"
                               " WHERE d.name = 'interrupted' AND status = 'done'"), 1);
  free(a);
  free(b);
  finch_db_close(db);
  TEST_DONE();
}
