/* Augment: variants link to training parents only, deterministically. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "augment/augment.h"
#include "ingest/ingest.h"
#include "tests/dbtest.h"
#include "tests/test.h"

int main(void) {
  /* The EDA edit itself: deterministic, label words only rearranged or dropped. */
  char a[128], b[128];
  finch_augment_eda("please tell me the exchange rate", 99, 0.1, 1, a);
  finch_augment_eda("please tell me the exchange rate", 99, 0.1, 1, b);
  CHECK_STR_EQ(a, b);
  finch_augment_eda("one", 5, 0.9, 3, a);
  CHECK_STR_EQ(a, "one"); /* a single word is never deleted */
  for (unsigned long long s = 0; s < 200; s++) {
    finch_augment_eda("a b c d e", s, 0.5, 1, a);
    CHECK(strlen(a) >= 1);
    for (char *p = a; *p; p++) CHECK(*p == ' ' || (*p >= 'a' && *p <= 'e'));
  }

  finch_db *db = test_db_open();
  finch_err err;
  char path[512];
  snprintf(path, sizeof path, "%s/test_augment.csv", test_tmpdir());
  FILE *fp = fopen(path, "w");
  fprintf(fp, "text,category\n");
  for (int i = 0; i < 20; i++) {
    fprintf(fp, "my new card number %d has still not arrived in the post,card_arrival\n", i);
    fprintf(fp, "what exchange rate do you use for currency %d today,exchange_rate\n", i);
  }
  fclose(fp);
  finch_ingest_opts io = {.source = path, .format = "banking77", .dataset = "aug", .holdout = 0.2, .seed = 1};
  finch_ingest_result ir;
  CHECK_INT_EQ(finch_ingest_run(db, &io, &ir, &err), FINCH_OK);
  CHECK_INT_EQ(ir.dev, 8);

  finch_augment_opts ao = {.dataset = "aug", .target = 100, .seed = 5};
  finch_augment_result ar;
  CHECK_INT_EQ(finch_augment_run(db, &ao, &ar, &err), FINCH_OK);
  CHECK_INT_EQ(ar.parents, 32);
  CHECK_INT_EQ(ar.generated, 100);
  CHECK(ar.inserted > 90);
  CHECK_INT_EQ(test_scalar(db, "SELECT count(*) FROM utterances WHERE origin = 'augmented'"), ar.inserted);
  /* Every variant: parent is a training source row, same label, method recorded. */
  CHECK_INT_EQ(test_scalar(db, "SELECT count(*) FROM utterances c JOIN utterances p ON p.id = c.parent_id"
                               " WHERE c.origin = 'augmented' AND p.split = 'train' AND p.origin = 'source'"
                               " AND p.label = c.label AND c.method = 'eda' AND c.split = 'train'"
                               " AND c.method_params ? 'p_delete'"), ar.inserted);
  /* Holdout rows are never parents. */
  CHECK_INT_EQ(test_scalar(db, "SELECT count(*) FROM utterances c JOIN utterances p ON p.id = c.parent_id"
                               " WHERE p.split <> 'train'"), 0);
  /* Deterministic: running again generates the same variants, inserts none. */
  finch_augment_result ar2;
  CHECK_INT_EQ(finch_augment_run(db, &ao, &ar2, &err), FINCH_OK);
  CHECK_INT_EQ(ar2.generated, 100);
  CHECK_INT_EQ(ar2.inserted, 0);
  CHECK_INT_EQ(test_scalar(db, "SELECT count(*) FROM augment_runs WHERE status = 'done'"), 2);

  ao.dataset = "missing";
  CHECK_INT_EQ(finch_augment_run(db, &ao, &ar, &err), FINCH_ENOTFOUND);
  CHECK_CONTAINS(err.msg, "dataset 'missing' has no training rows");
  finch_db_close(db);
  TEST_DONE();
}
