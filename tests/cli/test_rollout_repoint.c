/* finch rollout promote into the stage a deployment is in, through the
 * binary ($FINCH_BIN): with another model the stage is pointed at it (what a
 * retraining pipeline does when a newer model replaces the one in shadow);
 * without a model, or with the stage's own model, it is refused naming the
 * stage; a stage further on is still refused (one stage at a time). */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/hash.h"
#include "tests/dbtest.h"
#include "tests/test.h"

static const char *bin;

static void expect(const char *args, int want, const char *needle) {
  char cmd[4096];
  snprintf(cmd, sizeof cmd, "'%s' %s 2>&1", bin, args);
  int status;
  char *out = test_run(cmd, &status);
  if (status != want) fprintf(stderr, "finch %s: exit %d\n%s\n", args, status, out);
  CHECK_INT_EQ(status, want);
  if (needle) CHECK_CONTAINS(out, needle);
  free(out);
}

int main(void) {
  bin = getenv("FINCH_BIN");
  if (!bin || !*bin) TEST_SKIP("FINCH_BIN is not set");
  finch_db *db = test_db_open();
  /* Two "model files": the promotion records a file's SHA-256. */
  char a[1200], b[1200], args[4096];
  snprintf(a, sizeof a, "%s/repoint-a.fnm", test_tmpdir());
  snprintf(b, sizeof b, "%s/repoint-b.fnm", test_tmpdir());
  test_write_file(a, "model a", 7);
  test_write_file(b, "model b", 7);
  char sha_b[FINCH_SHA256_HEX_LEN];
  finch_err err;
  CHECK_INT_EQ(finch_sha256_file(b, sha_b, &err), FINCH_OK);

  snprintf(args, sizeof args, "rollout promote --deployment desk --to shadow --model '%s' --reason first", a);
  expect(args, 0, "shadow");
  /* The same model again, or no model: refused, naming the stage. */
  expect(args, 1, "already in shadow with that model");
  expect("rollout promote --deployment desk --to shadow --reason again", 1,
         "already in shadow; give --model to point the stage at another model");
  /* Another model: the stage now points at it. */
  snprintf(args, sizeof args, "rollout promote --deployment desk --to shadow --model '%s' --reason retrained", b);
  expect(args, 0, "shadow");
  char q[512];
  snprintf(q, sizeof q,
           "SELECT count(*) FROM rollout_state WHERE deployment = 'desk' AND stage = 'shadow' AND params->>'model_sha256' "
           "= '%s' AND reason = 'retrained' AND id = (SELECT max(id) FROM rollout_state WHERE deployment = 'desk')",
           sha_b);
  CHECK_INT_EQ(test_scalar(db, q), 1);
  CHECK_INT_EQ(test_scalar(db, "SELECT count(*) FROM audit_log WHERE action = 'rollout.promote'"), 2);
  /* Past the next stage: still one at a time. */
  snprintf(args, sizeof args, "rollout promote --deployment desk --to primary --model '%s' --reason skip", a);
  expect(args, 1, "one stage at a time");
  finch_db_close(db);
  TEST_DONE();
}
