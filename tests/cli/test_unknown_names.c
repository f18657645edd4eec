/* Unknown names are named as such: a dataset, a split or a model id a
 * command was given that does not exist is reported by that name, by
 * finch_dataset_check (core/dataset.h) for datasets and splits. Before the
 * check, --dataset nosuch read "dataset 'nosuch' has no labelled rows in
 * split 'dev'" in eval, "has no training rows to augment" in augment and
 * "no registered teacher for dataset 'nosuch'" in distill, and an unknown
 * split was an empty one. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>

#include "core/dataset.h"
#include "tests/dbtest.h"
#include "tests/test.h"

static void expect(const char *bin, const char *args, const char *needle) {
  char cmd[2048];
  snprintf(cmd, sizeof cmd, "'%s' %s 2>&1", bin, args);
  int status;
  char *out = test_run(cmd, &status);
  if (status != 1) TEST_FAIL_("%s: exit %d, expected 1:\n%s", args, status, out);
  CHECK_CONTAINS(out, needle);
  if (out && strstr(out, "has no")) TEST_FAIL_("%s: an unknown name reported as empty:\n%s", args, out);
  free(out);
}

int main(void) {
  const char *bin = getenv("FINCH_BIN");
  if (!bin || !*bin) TEST_SKIP("FINCH_BIN not set");
  finch_db *db = test_db_open(); /* a fresh database, before the binary fills it */
  char csv[1024], cmd[4096];
  snprintf(csv, sizeof csv, "%s/test_unknown_names.csv", test_tmpdir());
  FILE *fp = fopen(csv, "w");
  CHECK(fp != NULL);
  if (!fp) TEST_DONE();
  fputs("text,label\n", fp);
  for (int i = 0; i < 40; i++)
    fprintf(fp, i % 2 ? "please check my balance %d,balance\n" : "i lost my card %d,lost_card\n", i);
  fclose(fp);
  int status;
  snprintf(cmd, sizeof cmd,
           "'%s' ingest --format csv --dataset known '%s' >/dev/null 2>&1 && "
           "'%s' teacher train --dataset known --members bow --epochs 1 --json 2>/dev/null",
           bin, csv, bin);
  char *out = test_run(cmd, &status);
  CHECK_INT_EQ(status, 0);
  long long model = 0;
  const char *id = out ? strstr(out, "{\"id\":") : NULL;
  if (id) model = atoll(id + strlen("{\"id\":"));
  if (!model) TEST_FAIL_("no model id in: %s", out ? out : "(null)");
  free(out);
  char args[256];

  const char *no_dataset = "dataset 'nosuch' does not exist (run finch ingest first)";
  expect(bin, "augment --dataset nosuch", no_dataset);
  expect(bin, "distill --dataset nosuch", no_dataset);
  expect(bin, "teacher train --dataset nosuch --members bow", no_dataset);
  snprintf(args, sizeof args, "eval --model %lld --dataset nosuch", model);
  expect(bin, args, no_dataset);
  snprintf(args, sizeof args, "eval --model %lld --dataset nosuch --split test", model);
  expect(bin, args, no_dataset);
  snprintf(args, sizeof args, "eval --model %lld --dataset known --split nosuch", model);
  expect(bin, args, "no split 'nosuch' (the splits are train, dev and test)");
  /* A split given in another case is not one of them either. */
  snprintf(args, sizeof args, "eval --model %lld --dataset known --split DEV", model);
  expect(bin, args, "no split 'DEV'");
  /* Unknown model ids were already named; they stay so. */
  expect(bin, "eval --model 99999 --dataset known", "model 99999 is not registered");
  expect(bin, "distill --dataset known --teacher 99999", "model 99999 is not registered");
  /* A known dataset and split still evaluate. */
  snprintf(cmd, sizeof cmd, "'%s' eval --model %lld --dataset known --split dev >/dev/null 2>&1", bin, model);
  out = test_run(cmd, &status);
  CHECK_INT_EQ(status, 0);
  free(out);

  /* The library call itself, malformed names included. */
  finch_err err;
  CHECK_INT_EQ(finch_dataset_check(db, "known", NULL, &err), FINCH_OK);
  CHECK_INT_EQ(finch_dataset_check(db, "known", "train", &err), FINCH_OK);
  CHECK_INT_EQ(finch_dataset_check(db, "nosuch", "dev", &err), FINCH_ENOTFOUND);
  CHECK_STR_EQ(err.msg, no_dataset);
  CHECK_INT_EQ(finch_dataset_check(db, "known", "", &err), FINCH_EINVAL);
  CHECK_STR_EQ(err.msg, "no split '' (the splits are train, dev and test)");
  CHECK_INT_EQ(finch_dataset_check(db, "", NULL, &err), FINCH_EINVAL);
  CHECK_INT_EQ(finch_dataset_check(db, NULL, NULL, &err), FINCH_EINVAL);
  CHECK_INT_EQ(finch_dataset_check(db, "x'; DROP TABLE datasets; --", NULL, &err), FINCH_ENOTFOUND);
  CHECK_INT_EQ(finch_dataset_check(db, "known", NULL, &err), FINCH_OK);
  finch_db_close(db);
  TEST_DONE();
}
