/* Out-of-scope abstention (nn/abstain.c): the policy's round trip through
 * the model metadata, its refusals, and the decision: re-tempering, the
 * threshold at its boundary, the explicit class, no policy = arg-max. */
#include <math.h>
#include <string.h>

#include "nn/abstain.h"
#include "nn/model.h"
#include "tests/test.h"

static nn_model *tiny(void) {
  static const char *const texts[] = {"card lost", "refund please", "oos chat"};
  static const int32_t y[] = {0, 1, 2};
  static const char *const labels[] = {"card", "refund", "oos"};
  nn_dataset ds = {.texts = texts, .labels = y, .n = 3};
  nn_train_config cfg = nn_train_config_student();
  cfg.epochs = 2;
  cfg.buckets = 256;
  nn_model *m = NULL;
  finch_err err;
  CHECK(nn_model_train(&m, &ds, labels, 3, &cfg, NULL, NULL, NULL, NULL, &err) == FINCH_OK);
  return m;
}

static void test_meta(void) {
  nn_model *m = tiny();
  finch_err err;
  nn_abstain a;
  CHECK_INT_EQ(nn_abstain_read(m, &a, &err), FINCH_OK);
  CHECK_INT_EQ(a.methods, 0);
  CHECK_INT_EQ(a.oos_index, -1);
  CHECK(nn_model_set_meta(m, "{\"kind\":\"student\"}", &err) == FINCH_OK);
  nn_abstain w = {.methods = NN_ABSTAIN_THRESHOLD | NN_ABSTAIN_CLASS, .threshold = 0.625f, .temperature = 1.5f,
                  .oos_index = 2};
  CHECK_INT_EQ(nn_abstain_write(m, &w, "selection half", "in-scope recall 0.99", &err), FINCH_OK);
  CHECK_CONTAINS(nn_model_meta(m), "\"kind\":\"student\""); /* the rest of the metadata is kept */
  CHECK_CONTAINS(nn_model_meta(m), "\"method\":\"both\"");
  CHECK_CONTAINS(nn_model_meta(m), "\"oos_label\":\"oos\"");
  CHECK_INT_EQ(nn_abstain_read(m, &a, &err), FINCH_OK);
  CHECK_INT_EQ(a.methods, NN_ABSTAIN_THRESHOLD | NN_ABSTAIN_CLASS);
  CHECK(a.threshold == 0.625f && a.temperature == 1.5f && a.oos_index == 2);
  /* Removed again. */
  w.methods = 0;
  CHECK_INT_EQ(nn_abstain_write(m, &w, NULL, NULL, &err), FINCH_OK);
  CHECK(!strstr(nn_model_meta(m), "abstain"));
  static const struct {
    const char *meta, *why;
  } bad[] = {
      {"{\"abstain\": 3}", "must be an object"},
      {"{\"abstain\": {}}", "must be threshold, class or both, not missing"},
      {"{\"abstain\": {\"method\": \"guess\"}}", "not guess"},
      {"{\"abstain\": {\"method\": \"threshold\"}}", "threshold must be a number in [0, 1]"},
      {"{\"abstain\": {\"method\": \"threshold\", \"threshold\": 1.5}}", "threshold must be a number in [0, 1]"},
      {"{\"abstain\": {\"method\": \"threshold\", \"threshold\": 0.5, \"temperature\": 0}}", "temperature"},
      {"{\"abstain\": {\"method\": \"threshold\", \"threshold\": 0.5, \"temperature\": \"2\"}}", "temperature"},
      {"{\"abstain\": {\"method\": \"class\"}}", "needs abstain.oos_label"},
      {"{\"abstain\": {\"method\": \"class\", \"oos_label\": \"other\"}}", "other is not one of the model's labels"},
      {"{\"abstain\": {\"method\": \"class\", \"oos_label\": 7}}", "(not a string)"},
  };
  for (size_t i = 0; i < sizeof bad / sizeof *bad; i++) {
    CHECK(nn_model_set_meta(m, bad[i].meta, &err) == FINCH_OK);
    CHECK_INT_EQ(nn_abstain_read(m, &a, &err), FINCH_EFORMAT);
    CHECK_CONTAINS(err.msg, bad[i].why);
    CHECK_INT_EQ(a.methods, 0); /* a refused policy leaves none */
  }
  nn_model_free(m);
}

static void test_decide(void) {
  float p[3] = {0.5f, 0.3f, 0.2f}, s = -1;
  /* No policy: the arg-max, probabilities untouched. */
  CHECK_INT_EQ(nn_abstain_decide(NULL, p, 3, &s), 0);
  CHECK(p[0] == 0.5f && s == 0.5f);
  nn_abstain none = {.methods = 0, .temperature = 3, .oos_index = -1};
  CHECK_INT_EQ(nn_abstain_decide(&none, p, 3, &s), 0);
  CHECK(p[0] == 0.5f);
  /* Re-tempered: p^(1/T) renormalised. */
  nn_abstain th = {.methods = NN_ABSTAIN_THRESHOLD, .threshold = 0.4f, .temperature = 2, .oos_index = -1};
  double z = sqrt(0.5) + sqrt(0.3) + sqrt(0.2);
  CHECK_INT_EQ(nn_abstain_decide(&th, p, 3, &s), 0);
  CHECK_NEAR(p[0], sqrt(0.5) / z, 1e-6);
  CHECK_NEAR(p[2], sqrt(0.2) / z, 1e-6);
  CHECK_NEAR(s, sqrt(0.5) / z, 1e-6);
  /* The boundary: a score equal to the threshold is in scope. */
  float q[3] = {0.4f, 0.35f, 0.25f};
  th.temperature = 1;
  CHECK_INT_EQ(nn_abstain_decide(&th, q, 3, &s), 0);
  th.threshold = nextafterf(0.4f, 1.0f);
  CHECK_INT_EQ(nn_abstain_decide(&th, q, 3, &s), -1);
  CHECK(s == 0.4f);
  /* The class: its arg-max abstains at any threshold; the score is the best in-scope label. */
  float r[3] = {0.2f, 0.1f, 0.7f};
  nn_abstain cl = {.methods = NN_ABSTAIN_CLASS, .temperature = 1, .oos_index = 2};
  CHECK_INT_EQ(nn_abstain_decide(&cl, r, 3, &s), -1);
  CHECK(s == 0.2f);
  float u[3] = {0.45f, 0.15f, 0.4f};
  CHECK_INT_EQ(nn_abstain_decide(&cl, u, 3, &s), 0);
  nn_abstain both = {.methods = NN_ABSTAIN_THRESHOLD | NN_ABSTAIN_CLASS, .threshold = 0.5f, .temperature = 1,
                     .oos_index = 2};
  CHECK_INT_EQ(nn_abstain_decide(&both, u, 3, &s), -1); /* in-scope best 0.45 < 0.5 */
  CHECK_INT_EQ(nn_abstain_decide(&th, u, 0, &s), -1);   /* no labels */
}

int main(void) {
  test_meta();
  test_decide();
  TEST_DONE();
}
