/* The bulk-load side of ingest: the set-based integrity checks that replace
 * utterances' foreign keys, batches loaded over several connections and
 * committed in order (the same rows as one connection; a failing batch
 * leaves exactly the batches below it), and runs into one dataset
 * serialised by its advisory lock. */
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "ingest/ingest.h"
#include "tests/dbtest.h"
#include "tests/test.h"

#define ROWS 3000

static char *query_str(finch_db *db, const char *sql) {
  finch_err err;
  PGresult *r = finch_db_query(db, sql, 0, NULL, &err);
  char *s = strdup(r && PQntuples(r) ? PQgetvalue(r, 0, 0) : "");
  PQclear(r);
  return s;
}

/* The error a statement fails with ("" when it succeeds). */
static void exec_error(finch_db *db, const char *sql, char *out, size_t n) {
  finch_err err;
  out[0] = '\0';
  if (finch_db_exec(db, sql, &err)) snprintf(out, n, "%s", err.msg);
}

static void check_integrity(finch_db *db) {
  char msg[512];
  finch_err err;
  CHECK_INT_EQ(finch_db_exec(db, "INSERT INTO datasets (id, name, format) VALUES (100, 'a', 'jsonl'), (101, 'b', 'jsonl');"
                                 "INSERT INTO utterances (id, dataset_id, text, text_norm, content_hash)"
                                 " VALUES (1, 100, 'x', 'x', 'h1'), (2, 100, 'y', 'y', 'h2'), (3, 101, 'z', 'z', 'h3');"
                                 "INSERT INTO utterances (id, dataset_id, text, text_norm, content_hash, origin, parent_id)"
                                 " VALUES (4, 100, 'x!', 'x!', 'h4', 'augmented', 1), (5, 100, 'x!!', 'x!!', 'h5',"
                                 " 'augmented', 4);"
                                 "SELECT setval('utterances_id_seq', 100)", &err), FINCH_OK);
  /* A row naming no dataset, or no parent, is refused, and nothing of its
   * statement stays. */
  exec_error(db, "INSERT INTO utterances (dataset_id, text, text_norm, content_hash)"
                 " VALUES (100, 'ok', 'ok', 'h6'), (999, 'bad', 'bad', 'h7')", msg, sizeof msg);
  CHECK_CONTAINS(msg, "dataset 999 does not exist");
  exec_error(db, "INSERT INTO utterances (dataset_id, text, text_norm, content_hash, origin, parent_id)"
                 " VALUES (100, 'orphan', 'orphan', 'h8', 'augmented', 777)", msg, sizeof msg);
  CHECK_CONTAINS(msg, "utterance 777 does not exist");
  exec_error(db, "UPDATE utterances SET dataset_id = 555 WHERE id = 3", msg, sizeof msg);
  CHECK_CONTAINS(msg, "dataset 555 does not exist");
  exec_error(db, "UPDATE datasets SET id = 200 WHERE id = 101", msg, sizeof msg);
  CHECK_CONTAINS(msg, "cannot change");
  CHECK_INT_EQ(test_scalar(db, "SELECT count(*) FROM utterances"), 5);
  /* COPY is checked too. */
  CHECK_INT_EQ(finch_db_copy_begin(db, "COPY utterances (dataset_id, text, text_norm, content_hash) FROM STDIN", &err),
               FINCH_OK);
  const char rows[] = "100\tc1\tc1\th9\n998\tc2\tc2\th10\n";
  CHECK_INT_EQ(finch_db_copy_put(db, rows, sizeof rows - 1, &err), FINCH_OK);
  CHECK(finch_db_copy_end(db, &err) != FINCH_OK);
  CHECK_CONTAINS(err.msg, "dataset 998 does not exist");
  CHECK_INT_EQ(test_scalar(db, "SELECT count(*) FROM utterances"), 5);
  /* Deleting a row deletes what was augmented from it, at every level. */
  CHECK_INT_EQ(finch_db_exec(db, "DELETE FROM utterances WHERE id = 1", &err), FINCH_OK);
  CHECK_INT_EQ(test_scalar(db, "SELECT count(*) FROM utterances WHERE dataset_id = 100"), 1);
  /* Deleting a dataset deletes its rows and no other's. */
  CHECK_INT_EQ(finch_db_exec(db, "DELETE FROM datasets WHERE id = 100", &err), FINCH_OK);
  CHECK_INT_EQ(test_scalar(db, "SELECT count(*) FROM utterances"), 1);
  CHECK_INT_EQ(finch_db_exec(db, "DELETE FROM datasets", &err), FINCH_OK);
  CHECK_INT_EQ(test_scalar(db, "SELECT count(*) FROM utterances"), 0);
}

/* Writes ROWS rows to name in the scratch directory; the caller frees the path. */
static char *write_rows(const char *name, int poison_at) {
  char *path = malloc(512);
  snprintf(path, 512, "%s/%s", test_tmpdir(), name);
  FILE *fp = fopen(path, "w");
  for (int i = 0; i < ROWS; i++) {
    if (i == poison_at)
      fprintf(fp, "{\"text\": \"poison row\", \"label\": \"l_0\"}\n");
    else
      fprintf(fp, "{\"text\": \"pay %d pounds to account %d today\", \"label\": \"l_%d\"}\n", i, i * 3, i % 7);
  }
  fclose(fp);
  return path;
}

/* The rows in id order: what every reader of a split sees (core/dataset.h). */
static char *dataset_order_digest(finch_db *db, const char *dataset) {
  char sql[512];
  snprintf(sql, sizeof sql,
           "SELECT md5(string_agg(content_hash, ',' ORDER BY u.id))"
           " FROM utterances u JOIN datasets d ON d.id = u.dataset_id WHERE d.name = '%s'", dataset);
  return query_str(db, sql);
}

static char *dataset_digest(finch_db *db, const char *dataset) {
  char sql[512];
  snprintf(sql, sizeof sql,
           "SELECT md5(string_agg(content_hash || split || source_line || text, ',' ORDER BY content_hash))"
           " FROM utterances u JOIN datasets d ON d.id = u.dataset_id WHERE d.name = '%s'", dataset);
  return query_str(db, sql);
}

typedef struct {
  finch_ingest_opts o;
  finch_ingest_result r;
  finch_status st;
  finch_err err;
} run_args;

static void *run_thread(void *arg) {
  run_args *a = arg;
  finch_db *db;
  a->st = finch_db_connect(&db, &a->err);
  if (!a->st) {
    a->st = finch_ingest_run(db, &a->o, &a->r, &a->err);
    finch_db_close(db);
  }
  return NULL;
}

int main(void) {
  finch_db *db = test_db_open();
  finch_err err;
  check_integrity(db);

  /* One connection and three give the same rows, splits and lines. */
  char *path = write_rows("test_load.jsonl", -1);
  finch_ingest_result r;
  finch_ingest_opts one = {.source = path, .format = "jsonl", .dataset = "one", .holdout = 0.1, .seed = 5,
                           .batch_rows = 100, .load_jobs = 1};
  CHECK_INT_EQ(finch_ingest_run(db, &one, &r, &err), FINCH_OK);
  CHECK_INT_EQ(r.inserted, ROWS);
  finch_ingest_opts three = one;
  three.dataset = "three";
  three.load_jobs = 3;
  CHECK_INT_EQ(finch_ingest_run(db, &three, &r, &err), FINCH_OK);
  CHECK_INT_EQ(r.inserted, ROWS);
  CHECK_INT_EQ(r.dev, test_scalar(db, "SELECT count(*) FROM utterances u JOIN datasets d ON d.id = u.dataset_id"
                                     " WHERE d.name = 'one' AND split = 'dev'"));
  CHECK(r.dev >= ROWS / 10 - 7 && r.dev <= ROWS / 10 + 7);
  char *a = dataset_digest(db, "one"), *b = dataset_digest(db, "three");
  CHECK_STR_EQ(a, b);
  free(a);
  free(b);
  /* ... in the same id order: batches reserve their ids in source order,
   * whichever connection stages them. */
  a = dataset_order_digest(db, "one");
  b = dataset_order_digest(db, "three");
  CHECK_STR_EQ(a, b);
  free(a);
  free(b);
  CHECK_INT_EQ(test_scalar(db, "SELECT rows_loaded FROM ingest_runs r JOIN datasets d ON d.id = r.dataset_id"
                               " WHERE d.name = 'three'"), ROWS);
  /* Again with three connections: nothing new. */
  CHECK_INT_EQ(finch_ingest_run(db, &three, &r, &err), FINCH_OK);
  CHECK_INT_EQ(r.inserted, 0);
  CHECK_INT_EQ(r.duplicate, ROWS);

  /* A batch that fails stops the run with exactly the batches below it
   * stored and recorded, whichever connection held the batches above. */
  char *poisoned = write_rows("test_load_poison.jsonl", ROWS / 2);
  CHECK_INT_EQ(finch_db_exec(db, "CREATE FUNCTION poison() RETURNS trigger LANGUAGE plpgsql AS $$"
                                 " BEGIN IF NEW.text = 'poison row' THEN RAISE EXCEPTION 'poisoned row'; END IF;"
                                 " RETURN NEW; END $$;"
                                 "CREATE TRIGGER poison BEFORE INSERT ON utterances FOR EACH ROW EXECUTE FUNCTION poison()",
                             &err), FINCH_OK);
  finch_ingest_opts bad = {.source = poisoned, .format = "jsonl", .dataset = "bad", .holdout = 0.1, .seed = 5,
                           .batch_rows = 100, .load_jobs = 3};
  CHECK(finch_ingest_run(db, &bad, &r, &err) != FINCH_OK);
  CHECK_CONTAINS(err.msg, "poisoned row");
  long long loaded = test_scalar(db, "SELECT rows_loaded FROM ingest_runs r JOIN datasets d ON d.id = r.dataset_id"
                                     " WHERE d.name = 'bad'");
  long long stored = test_scalar(db, "SELECT count(*) FROM utterances u JOIN datasets d ON d.id = u.dataset_id"
                                     " WHERE d.name = 'bad'");
  printf("failed run: %lld rows loaded and stored %lld\n", loaded, stored);
  CHECK_INT_EQ(stored, loaded);
  CHECK_INT_EQ(loaded % 100, 0);
  CHECK(loaded < ROWS);
  CHECK_INT_EQ(test_scalar(db, "SELECT count(*) FROM ingest_runs r JOIN datasets d ON d.id = r.dataset_id"
                               " WHERE d.name = 'bad' AND status = 'failed'"), 1);
  /* With the cause gone, resuming the run completes it. */
  CHECK_INT_EQ(finch_db_exec(db, "DROP TRIGGER poison ON utterances", &err), FINCH_OK);
  finch_ingest_opts resume = {.resume_run_id = test_scalar(db, "SELECT r.id FROM ingest_runs r JOIN datasets d"
                                                               " ON d.id = r.dataset_id WHERE d.name = 'bad'")};
  CHECK_INT_EQ(finch_ingest_run(db, &resume, &r, &err), FINCH_OK);
  CHECK_INT_EQ(r.inserted, ROWS); /* over the run's invocations */
  CHECK_INT_EQ(test_scalar(db, "SELECT count(*) FROM utterances u JOIN datasets d ON d.id = u.dataset_id"
                               " WHERE d.name = 'bad'"), ROWS);

  /* Two runs of one source into one dataset at once: one loads every row,
   * the other waits for it and finds them all present. */
  run_args ra[2];
  pthread_t th[2];
  for (int i = 0; i < 2; i++) {
    memset(&ra[i], 0, sizeof ra[i]);
    ra[i].o = (finch_ingest_opts){.source = path, .format = "jsonl", .dataset = "same", .holdout = 0.1, .seed = 5,
                                  .batch_rows = 100, .load_jobs = 2};
    pthread_create(&th[i], NULL, run_thread, &ra[i]);
  }
  for (int i = 0; i < 2; i++) pthread_join(th[i], NULL);
  CHECK_INT_EQ(ra[0].st, FINCH_OK);
  CHECK_INT_EQ(ra[1].st, FINCH_OK);
  CHECK_INT_EQ(ra[0].r.inserted + ra[1].r.inserted, ROWS);
  CHECK_INT_EQ(ra[0].r.duplicate + ra[1].r.duplicate, ROWS);
  a = dataset_digest(db, "one");
  b = dataset_digest(db, "same");
  CHECK_STR_EQ(a, b);
  free(a);
  free(b);

  /* A run waiting for the dataset's lock ends at a stop request, storing
   * nothing. */
  finch_db *holder;
  CHECK_INT_EQ(finch_db_connect(&holder, &err), FINCH_OK);
  CHECK_INT_EQ(finch_db_exec(holder, "SELECT pg_advisory_lock(1179209283, hashtext('held'))", &err), FINCH_OK);
  static volatile sig_atomic_t stop = 0;
  run_args w = {.o = {.source = path, .format = "jsonl", .dataset = "held", .stop = &stop}};
  pthread_create(&th[0], NULL, run_thread, &w);
  struct timespec ts = {0, 500 * 1000 * 1000};
  nanosleep(&ts, NULL);
  stop = 1;
  pthread_join(th[0], NULL);
  CHECK_INT_EQ(w.st, FINCH_OK);
  CHECK_INT_EQ(w.r.stopped, 1);
  CHECK_INT_EQ(w.r.inserted, 0);
  CHECK_INT_EQ(test_scalar(db, "SELECT count(*) FROM ingest_runs r JOIN datasets d ON d.id = r.dataset_id"
                               " WHERE d.name = 'held'"), 0);
  finch_db_close(holder);

  free(path);
  free(poisoned);
  finch_db_close(db);
  TEST_DONE();
}
