/* Opening a clean database for a test. Each database test runs in its own
 * database of the embedded cluster (FINCH_DB_NAME, set by CTest) and starts
 * from an empty schema. On an external database (FINCH_DATABASE_URL) the
 * schema is only reset when FINCH_TEST_ALLOW_RESET=1, else the test skips:
 * it would destroy that database's data. */
#ifndef FINCH_TESTS_DBTEST_H
#define FINCH_TESTS_DBTEST_H

#include <stdarg.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "core/config.h"
#include "core/db.h"
#include "tests/test.h"

static inline finch_db *test_db_open(void) {
  finch_err err;
  if (finch_config_load_env(&err)) {
    fprintf(stderr, "%s\n", err.msg);
    exit(1);
  }
  const char *url = finch_config_get("database_url");
  const char *allow = getenv("FINCH_TEST_ALLOW_RESET");
  if (*url && !(allow && strcmp(allow, "1") == 0))
    TEST_SKIP("FINCH_DATABASE_URL is set and FINCH_TEST_ALLOW_RESET is not 1: this test resets its database");
  finch_db *db;
  if (finch_db_connect(&db, &err)) {
    fprintf(stderr, "cannot open the test database: %s\n", err.msg);
    exit(1);
  }
  if (finch_db_exec(db, "DROP SCHEMA public CASCADE; CREATE SCHEMA public", &err) ||
      finch_db_migrate(db, finch_db_schema_dir(), NULL, &err)) {
    fprintf(stderr, "cannot reset the test database: %s\n", err.msg);
    exit(1);
  }
  return db;
}

/* A scratch directory for the test's files. */
static inline const char *test_tmpdir(void) {
  const char *t = getenv("FINCH_TEST_TMP");
  if (!t || !*t) t = "/tmp";
  mkdir(t, 0755);
  return t;
}

/* Writes content to dir/name and returns the path (static buffer per call site is the caller's). */
static inline void test_write_file(const char *path, const char *content, size_t len) {
  FILE *fp = fopen(path, "wb");
  if (!fp || fwrite(content, 1, len, fp) != len) {
    fprintf(stderr, "cannot write %s\n", path);
    exit(1);
  }
  fclose(fp);
}

/* The single value of a one-row, one-column query. */
static inline long long test_scalar(finch_db *db, const char *sql) {
  finch_err err;
  PGresult *r = finch_db_query(db, sql, 0, NULL, &err);
  if (!r) {
    fprintf(stderr, "%s: %s\n", sql, err.msg);
    exit(1);
  }
  long long v = atoll(PQgetvalue(r, 0, 0));
  PQclear(r);
  return v;
}

/* The single value of a one-row, one-column query given printf-style. */
static inline long long test_sqlf(finch_db *db, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static inline long long test_sqlf(finch_db *db, const char *fmt, ...) {
  char sql[1024];
  va_list ap;
  va_start(ap, fmt);
  vsnprintf(sql, sizeof sql, fmt, ap);
  va_end(ap);
  return test_scalar(db, sql);
}

/* Runs a statement the test depends on; exits with the statement and the error when it fails. */
static inline void test_exec(finch_db *db, const char *sql) {
  finch_err err;
  if (finch_db_exec(db, sql, &err)) {
    fprintf(stderr, "%s: %s\n", sql, err.msg);
    exit(1);
  }
}

#endif
