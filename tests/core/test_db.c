/* The database layer: migrations are applied once, in order, recorded. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/db.h"
#include "core/models.h"
#include "tests/dbtest.h"
#include "tests/test.h"

int main(void) {
  finch_db *db = test_db_open(); /* fresh schema, all migrations applied */
  finch_err err;
  long long n_migrations = test_scalar(db, "SELECT count(*) FROM schema_migrations");
  CHECK(n_migrations >= 1);
  int applied = -1;
  CHECK_INT_EQ(finch_db_migrate(db, finch_db_schema_dir(), &applied, &err), FINCH_OK);
  CHECK_INT_EQ(applied, 0); /* a no-op the second time */
  CHECK_INT_EQ(test_scalar(db, "SELECT count(*) FROM schema_migrations"), n_migrations);

  static const char *tables[] = {"datasets", "utterances", "ingest_runs", "models", "eval_reports",
                                 "rollout_state", "labeling_tasks", "webhook_outbox", "audit_log"};
  for (size_t i = 0; i < sizeof tables / sizeof tables[0]; i++) {
    const char *p[] = {tables[i]};
    PGresult *r = finch_db_query(db, "SELECT to_regclass($1) IS NOT NULL", 1, p, &err);
    CHECK(r != NULL);
    if (r) {
      if (strcmp(PQgetvalue(r, 0, 0), "t") != 0) fprintf(stderr, "table %s missing\n", tables[i]);
      CHECK_STR_EQ(PQgetvalue(r, 0, 0), "t");
      PQclear(r);
    }
  }

  /* A failing migration is rolled back whole and not recorded. */
  char dir[512], path[600];
  snprintf(dir, sizeof dir, "%s/test_db_schemas", test_tmpdir());
  mkdir(dir, 0755);
  snprintf(path, sizeof path, "%s/900_bad.sql", dir);
  const char bad[] = "CREATE TABLE half_done (x int);\nSELECT no_such_function();\n";
  test_write_file(path, bad, sizeof bad - 1);
  CHECK_INT_EQ(finch_db_migrate(db, dir, &applied, &err), FINCH_EDB);
  CHECK_CONTAINS(err.msg, "900_bad.sql");
  CHECK_INT_EQ(test_scalar(db, "SELECT count(*) FROM pg_tables WHERE tablename = 'half_done'"), 0);
  CHECK_INT_EQ(test_scalar(db, "SELECT count(*) FROM schema_migrations WHERE version = 900"), 0);
  remove(path);

  /* The registry resolves ids and files, and refuses unknown ids. */
  char mpath[600];
  snprintf(mpath, sizeof mpath, "%s/test_db_model.bin", test_tmpdir());
  test_write_file(mpath, "model", 5);
  finch_model_rec rec = {.kind = "student", .stage = "finance", .arch = "bow", .path = mpath,
                         .sha256 = "2ec1c1b29d5e1ae1f7d8d0d49cb9b1fea0a5f3a88fe2f0b3f5cf9a39e3c28d95",
                         .params = 10, .bytes = 5};
  long long id = 0;
  CHECK_INT_EQ(finch_models_register(db, &rec, &id, &err), FINCH_OK);
  CHECK(id > 0);
  char got[600], kind[16], ref[32];
  long long gid;
  snprintf(ref, sizeof ref, "%lld", id);
  CHECK_INT_EQ(finch_models_resolve(db, ref, got, sizeof got, &gid, kind, &err), FINCH_OK);
  CHECK_STR_EQ(got, mpath);
  CHECK_STR_EQ(kind, "student");
  CHECK_INT_EQ(finch_models_resolve(db, "999999", got, sizeof got, &gid, kind, &err), FINCH_ENOTFOUND);
  CHECK_CONTAINS(err.msg, "999999 is not registered");
  CHECK_INT_EQ(finch_models_resolve(db, "/no/such/model.fnm", got, sizeof got, &gid, kind, &err), FINCH_ENOTFOUND);
  CHECK_CONTAINS(err.msg, "/no/such/model.fnm");
  char *json = NULL;
  CHECK_INT_EQ(finch_models_list_json(db, &json, &err), FINCH_OK);
  CHECK_CONTAINS(json, "\"kind\" : \"student\"");
  free(json);
  finch_db_close(db);
  TEST_DONE();
}
