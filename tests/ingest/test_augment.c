/* Augment: variants link to training parents only, deterministically. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "augment/augment.h"
#include "core/models.h"
#include "nn/model.h"
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
    fprintf(fp, "my new card number %d has still not arrived in the post since %s,card_arrival\n", i,
            i % 2 ? "Monday" : "last week");
    fprintf(fp, "what exchange rate do you use for currency %d today from %s,exchange_rate\n", i,
            i % 2 ? "GBP" : "EUR");
  }
  fclose(fp);
  finch_ingest_opts io = {.source = path, .format = "banking77", .dataset = "aug", .holdout = 0.2, .seed = 1};
  finch_ingest_result ir;
  CHECK_INT_EQ(finch_ingest_run(db, &io, &ir, &err), FINCH_OK);
  CHECK_INT_EQ(ir.dev, 8);

  finch_augment_opts ao = {.dataset = "aug", .target = 100, .seed = 5, .methods = "eda"};
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
                               " AND c.method_params ? 'op' AND c.augment_run_id = 1"), ar.inserted);
  /* Holdout rows are never parents. */
  CHECK_INT_EQ(test_scalar(db, "SELECT count(*) FROM utterances c JOIN utterances p ON p.id = c.parent_id"
                               " WHERE p.split <> 'train'"), 0);
  /* EDA's three operations all occur. */
  CHECK_INT_EQ(test_scalar(db, "SELECT count(DISTINCT method_params->>'op') FROM utterances WHERE augment_run_id = 1"), 3);
  CHECK(test_scalar(db, "SELECT count(*) FROM utterances c JOIN utterances p ON p.id = c.parent_id"
                        " WHERE c.method_params->>'op' = 'insert'"
                        " AND array_length(string_to_array(c.text, ' '), 1) = array_length(string_to_array(p.text, ' '), 1) + 1") > 0);

  /* The target counts stored rows: running again makes and inserts none. */
  finch_augment_result ar2;
  CHECK_INT_EQ(finch_augment_run(db, &ao, &ar2, &err), FINCH_OK);
  CHECK_INT_EQ(ar2.generated, 0);
  CHECK_INT_EQ(ar2.inserted, 0);
  CHECK_INT_EQ(test_scalar(db, "SELECT count(*) FROM augment_runs WHERE status = 'done'"), 2);

  /* All four methods: the target is shared by the two intents, every method
   * is used, and each row's parameters are a JSON object. */
  finch_augment_opts all = {.dataset = "aug", .target = 500, .seed = 9};
  finch_augment_result r3;
  CHECK_INT_EQ(finch_augment_run(db, &all, &r3, &err), FINCH_OK);
  CHECK_INT_EQ(r3.n_methods, 5);
  CHECK_INT_EQ(r3.generated, 400);
  CHECK_INT_EQ(r3.inserted, 400);
  CHECK_INT_EQ(test_scalar(db, "SELECT count(*) FROM utterances WHERE origin = 'augmented'"), 500);
  for (size_t m = 0; m < r3.n_methods; m++) {
    if (r3.method_inserted[m] == 0) fprintf(stderr, "method %s stored nothing\n", r3.method_names[m]);
    CHECK(r3.method_inserted[m] > 0);
  }
  CHECK_INT_EQ(test_scalar(db, "SELECT count(*) FROM utterances WHERE augment_run_id = 3"
                               " AND jsonb_typeof(method_params) = 'object'"), r3.inserted);
  CHECK(test_scalar(db, "SELECT min(n) FROM (SELECT count(*) AS n FROM utterances WHERE augment_run_id = 3"
                        " GROUP BY label) x") >= r3.inserted / 2 - 20);
  finch_augment_opts bad = {.dataset = "aug", .methods = "eda,telepathy"};
  CHECK_INT_EQ(finch_augment_run(db, &bad, &ar, &err), FINCH_EINVAL);
  CHECK_CONTAINS(err.msg, "unknown augmentation method 'telepathy'");

  /* The label guard: a teacher that has learnt the two intents the wrong
   * way round disagrees with every candidate, and drops them all; a right
   * one keeps most and stores its soft labels for each kept row. */
  for (int swapped = 1; swapped >= 0; swapped--) {
    const char *texts[40];
    int32_t labels[40];
    char bufs[40][96];
    for (int i = 0; i < 20; i++) {
      snprintf(bufs[2 * i], 96, "my new card number %d has still not arrived in the post", i);
      snprintf(bufs[2 * i + 1], 96, "what exchange rate do you use for currency %d today", i);
      texts[2 * i] = bufs[2 * i];
      texts[2 * i + 1] = bufs[2 * i + 1];
      labels[2 * i] = swapped;
      labels[2 * i + 1] = !swapped;
    }
    const char *names[] = {"card_arrival", "exchange_rate"};
    nn_dataset ds = {.texts = texts, .labels = labels, .n = 40};
    nn_train_config cfg = nn_train_config_student();
    cfg.epochs = 30;
    nn_model *m = NULL;
    CHECK_INT_EQ(nn_model_train(&m, &ds, names, 2, &cfg, NULL, NULL, NULL, NULL, &err), FINCH_OK);
    char mpath[512], sha[65];
    snprintf(mpath, sizeof mpath, "%s/test_augment_teacher_%d.fnm", test_tmpdir(), swapped);
    CHECK_INT_EQ(nn_model_save(m, mpath, NN_DTYPE_F32, sha, &err), FINCH_OK);
    nn_model_free(m);
    finch_model_rec rec = {.kind = "teacher", .stage = "finance", .arch = "bow", .dataset = "aug", .path = mpath,
                           .sha256 = sha, .params = 1, .bytes = 1};
    long long tid;
    CHECK_INT_EQ(finch_models_register(db, &rec, &tid, &err), FINCH_OK);
    finch_augment_opts g = {.dataset = "aug", .target = 700, .seed = 100 + (unsigned long long)swapped};
    finch_augment_result gr;
    CHECK_INT_EQ(finch_augment_run(db, &g, &gr, &err), FINCH_OK);
    CHECK_INT_EQ(gr.teacher_id, tid); /* the dataset's latest teacher */
    long long dropped = 0;
    for (size_t k = 0; k < gr.n_methods; k++) dropped += gr.method_dropped[k];
    char sql[256];
    snprintf(sql, sizeof sql, "SELECT count(*) FROM teacher_outputs WHERE model_id = %lld AND temperature = 2"
                              " AND array_length(probs, 1) = 2", tid);
    if (swapped) {
      CHECK_INT_EQ(gr.inserted, 0);
      CHECK(dropped > 100);
    } else {
      CHECK(gr.inserted > 100);
      CHECK(dropped < gr.generated / 10);
      CHECK_INT_EQ(test_scalar(db, sql), gr.inserted);
    }
  }

  /* Deterministic: the same source and seed in a fresh dataset give the
   * same variants as the first run. */
  io.dataset = "aug2";
  CHECK_INT_EQ(finch_ingest_run(db, &io, &ir, &err), FINCH_OK);
  finch_augment_opts again = ao;
  again.dataset = "aug2";
  finch_augment_result r4;
  CHECK_INT_EQ(finch_augment_run(db, &again, &r4, &err), FINCH_OK);
  char sql2[256];
  snprintf(sql2, sizeof sql2, "SELECT count(*) FROM (SELECT text_norm, label, method FROM utterances WHERE augment_run_id = 1"
                              " EXCEPT SELECT text_norm, label, method FROM utterances WHERE augment_run_id = %lld) x",
           r4.run_id);
  CHECK_INT_EQ(r4.inserted, 100);
  CHECK_INT_EQ(test_scalar(db, sql2), 0);

  ao.dataset = "missing";
  CHECK_INT_EQ(finch_augment_run(db, &ao, &ar, &err), FINCH_ENOTFOUND);
  /* A dataset that does not exist is named as such, not as one without rows. */
  CHECK_CONTAINS(err.msg, "dataset 'missing' does not exist");
  finch_db_close(db);
  TEST_DONE();
}
