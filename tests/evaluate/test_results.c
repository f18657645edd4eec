/* finch_results_json on hand-made rows: every figure recomputed here, the
 * same input gives the same bytes, and malformed input is refused with the
 * field and row named. */
#include <stdint.h>

#include "evaluate/results.h"
#include "tests/test.h"

enum { N = 10, C = 3 };
static const char *const LABELS[C] = {"a<b", "c&d", "e\"f"};
/* Right on rows 0, 1, 2, 4, 5, 7, 8: accuracy 0.7. */
static const int32_t GOLD[N] = {0, 0, 0, 0, 1, 1, 1, 2, 2, 2};
static const int32_t PRED[N] = {0, 0, 0, 1, 1, 1, 2, 2, 2, 0};
/* The predicted label's probability, the rest split evenly; none on a
 * boundary of the 15 bins. */
static const float CONF[N] = {0.95f, 0.85f, 0.75f, 0.55f, 0.65f, 0.9f, 0.45f, 0.5f, 0.7f, 0.38f};

static double num(const json_t *o, const char *k) { return json_number_value(json_object_get(o, k)); }

static void fill_probs(float *probs) {
  for (size_t i = 0; i < N; i++)
    for (size_t k = 0; k < C; k++) probs[i * C + k] = (int32_t)k == PRED[i] ? CONF[i] : (1 - CONF[i]) / 2;
}

static json_t *run(const finch_results_in *in) {
  json_t *o = NULL;
  finch_err err;
  if (finch_results_json(in, &o, &err) != FINCH_OK) TEST_FAIL_("finch_results_json: %s", err.msg);
  return o;
}

static void test_figures(void) {
  float probs[N * C];
  fill_probs(probs);
  finch_results_in in = {GOLD, PRED, probs, N, C, LABELS, 42, 200, 0};
  json_t *o = run(&in);
  if (!o) return;
  CHECK_INT_EQ(json_integer_value(json_object_get(o, "n")), N);
  const json_t *acc = json_object_get(o, "accuracy"), *f1 = json_object_get(o, "macro_f1");
  CHECK_NEAR(num(acc, "value"), 0.7, 1e-15);
  double lo = json_number_value(json_array_get(json_object_get(acc, "ci95"), 0));
  double hi = json_number_value(json_array_get(json_object_get(acc, "ci95"), 1));
  CHECK(lo <= 0.7 && 0.7 <= hi && lo < hi);
  CHECK_NEAR(num(f1, "value"), (0.75 + 2.0 / 3 + 2.0 / 3) / 3, 1e-15);
  CHECK_INT_EQ(json_array_size(json_object_get(f1, "ci95")), 2);
  CHECK_INT_EQ(json_integer_value(json_object_get(json_object_get(o, "bootstrap"), "resamples")), 200);
  CHECK_STR_EQ(json_string_value(json_object_get(json_object_get(o, "bootstrap"), "seed")), "42");

  /* Per intent, in label order. */
  const json_t *pi = json_object_get(o, "per_intent");
  CHECK_INT_EQ(json_array_size(pi), C);
  CHECK_STR_EQ(json_string_value(json_object_get(json_array_get(pi, 0), "label")), "a<b");
  CHECK_NEAR(num(json_array_get(pi, 0), "precision"), 0.75, 1e-15);
  CHECK_NEAR(num(json_array_get(pi, 0), "recall"), 0.75, 1e-15);
  CHECK_INT_EQ(json_integer_value(json_object_get(json_array_get(pi, 0), "support")), 4);
  CHECK_NEAR(num(json_array_get(pi, 1), "f1"), 2.0 / 3, 1e-15);
  CHECK_INT_EQ(json_integer_value(json_object_get(json_array_get(pi, 2), "support")), 3);

  /* The confusion matrix, row gold, column predicted. */
  const long long want[C][C] = {{3, 1, 0}, {0, 2, 1}, {1, 0, 2}};
  const json_t *cm = json_object_get(json_object_get(o, "confusion"), "matrix");
  CHECK_INT_EQ(json_array_size(cm), C);
  for (size_t g = 0; g < C; g++)
    for (size_t p = 0; p < C; p++)
      CHECK_INT_EQ(json_integer_value(json_array_get(json_array_get(cm, g), p)), want[g][p]);
  CHECK_STR_EQ(json_string_value(json_array_get(json_object_get(json_object_get(o, "confusion"), "labels"), 2)), "e\"f");

  /* Three pairs of one each, by gold index. */
  const json_t *mc = json_object_get(o, "most_confused");
  CHECK_INT_EQ(json_array_size(mc), 3);
  CHECK_STR_EQ(json_string_value(json_object_get(json_array_get(mc, 0), "gold")), "a<b");
  CHECK_STR_EQ(json_string_value(json_object_get(json_array_get(mc, 0), "pred")), "c&d");
  CHECK_INT_EQ(json_integer_value(json_object_get(json_array_get(mc, 1), "gold_index")), 1);
  CHECK_INT_EQ(json_integer_value(json_object_get(json_array_get(mc, 1), "pred_index")), 2);
  CHECK_INT_EQ(json_integer_value(json_object_get(json_array_get(mc, 2), "count")), 1);

  /* ECE over 15 bins, by hand: each row is alone in its bin. */
  double ece = 0;
  long long count[15] = {0};
  for (size_t i = 0; i < N; i++) {
    ece += fabs((double)(GOLD[i] == PRED[i]) - (double)CONF[i]) / N;
    count[(int)(CONF[i] * 15)]++;
  }
  const json_t *cal = json_object_get(o, "calibration");
  CHECK_NEAR(num(cal, "ece"), ece, 1e-12);
  const json_t *bins = json_object_get(cal, "bins");
  CHECK_INT_EQ(json_array_size(bins), 15);
  long long total = 0;
  for (size_t b = 0; b < 15; b++) {
    CHECK_INT_EQ(json_integer_value(json_object_get(json_array_get(bins, b), "count")), count[b]);
    CHECK_NEAR(num(json_array_get(bins, b), "lo"), b / 15.0, 1e-15);
    total += json_integer_value(json_object_get(json_array_get(json_object_get(cal, "bins_after"), b), "count"));
  }
  CHECK_INT_EQ(total, N);
  CHECK_NEAR(num(json_array_get(bins, 14), "accuracy"), 1, 0);   /* 0.95, right */
  CHECK_NEAR(num(json_array_get(bins, 6), "accuracy"), 0, 0);    /* 0.45, wrong */
  CHECK_NEAR(num(json_array_get(bins, 6), "confidence"), 0.45f, 1e-15);
  CHECK(num(cal, "temperature") > 0.05 && num(cal, "temperature") < 20);
  CHECK(json_is_number(json_object_get(cal, "ece_after")));

  /* The coverage curve at j / 20. */
  const json_t *curve = json_object_get(o, "coverage_curve");
  CHECK_INT_EQ(json_array_size(curve), 20);
  for (size_t j = 0; j < 20; j++) {
    double t = j / 20.0;
    int answered = 0, right = 0;
    for (size_t i = 0; i < N; i++)
      if ((double)CONF[i] >= t) answered++, right += GOLD[i] == PRED[i];
    const json_t *p = json_array_get(curve, j);
    CHECK_NEAR(num(p, "threshold"), t, 0);
    CHECK_INT_EQ(json_integer_value(json_object_get(p, "answered")), answered);
    CHECK_NEAR(num(p, "coverage"), answered / 10.0, 1e-15);
    if (answered) CHECK_NEAR(num(p, "accuracy"), (double)right / answered, 1e-15);
    else CHECK(json_is_null(json_object_get(p, "accuracy")));
  }
  CHECK_NEAR(num(json_array_get(curve, 0), "coverage"), 1, 0);
  CHECK_NEAR(num(json_array_get(curve, 19), "coverage"), 0.0, 0); /* nothing at 0.95 or above: 0.95f < 0.95 */
  CHECK(json_is_null(json_object_get(json_array_get(curve, 19), "accuracy")));

  /* The same input twice: the same bytes. */
  json_t *o2 = run(&in);
  char *a = json_dumps(o, JSON_SORT_KEYS), *b = o2 ? json_dumps(o2, JSON_SORT_KEYS) : NULL;
  CHECK(a && b && strcmp(a, b) == 0);
  /* Another seed moves the intervals only. */
  in.seed = 43;
  json_t *o3 = run(&in);
  if (o3) {
    CHECK_NEAR(num(json_object_get(o3, "accuracy"), "value"), 0.7, 1e-15);
    json_object_del(o3, "bootstrap");
    json_object_del(o3, "accuracy");
    json_object_del(o3, "macro_f1");
    json_object_del(o2, "bootstrap");
    json_object_del(o2, "accuracy");
    json_object_del(o2, "macro_f1");
    CHECK(json_equal(o2, o3));
  }
  free(a), free(b);
  json_decref(o), json_decref(o2), json_decref(o3);
}

static void test_without_probs(void) {
  finch_results_in in = {GOLD, PRED, NULL, N, C, LABELS, 1, 50, 2};
  json_t *o = run(&in);
  if (!o) return;
  CHECK(!json_object_get(o, "calibration"));
  CHECK(!json_object_get(o, "coverage_curve"));
  CHECK_INT_EQ(json_array_size(json_object_get(o, "most_confused")), 2); /* top_pairs */
  json_decref(o);
  /* A perfect model: no confused pair at all. */
  in.pred = GOLD;
  o = run(&in);
  if (o) CHECK_INT_EQ(json_array_size(json_object_get(o, "most_confused")), 0);
  json_decref(o);
}

static void refused(const finch_results_in *in, const char *needle) {
  json_t *o = (json_t *)1;
  finch_err err = {0};
  finch_status st = finch_results_json(in, &o, &err);
  CHECK_INT_EQ(st, FINCH_EINVAL);
  CHECK(o == NULL);
  CHECK_CONTAINS(err.msg, needle);
}

static void test_malformed(void) {
  float probs[N * C];
  fill_probs(probs);
  int32_t bad[N];
  memcpy(bad, GOLD, sizeof bad);
  bad[3] = 3;
  finch_results_in in = {bad, PRED, NULL, N, C, LABELS, 1, 10, 0};
  refused(&in, "row 3: gold label 3 outside [0, 3)");
  bad[3] = -1;
  refused(&in, "row 3: gold label -1");
  in = (finch_results_in){GOLD, bad, NULL, N, C, LABELS, 1, 10, 0};
  refused(&in, "row 3: predicted label -1");
  in = (finch_results_in){GOLD, PRED, NULL, 0, C, LABELS, 1, 10, 0};
  refused(&in, "n = 0");
  in = (finch_results_in){GOLD, PRED, NULL, N, 0, LABELS, 1, 10, 0};
  refused(&in, "C = 0");
  in = (finch_results_in){GOLD, PRED, NULL, N, C, NULL, 1, 10, 0};
  refused(&in, "label names missing");
  const char *const holes[C] = {"a", NULL, "c"};
  in = (finch_results_in){GOLD, PRED, NULL, N, C, holes, 1, 10, 0};
  refused(&in, "label 1 has no name");
  const char *const latin1[C] = {"a", "b", "caf\xe9"};
  in = (finch_results_in){GOLD, PRED, NULL, N, C, latin1, 1, 10, 0};
  refused(&in, "label 2's name is not valid UTF-8");
  in = (finch_results_in){GOLD, PRED, NULL, N, C, LABELS, 1, -1, 0};
  refused(&in, "resamples -1");
  in = (finch_results_in){GOLD, PRED, NULL, N, C, LABELS, 1, 10, -2};
  refused(&in, "top_pairs -2");
  probs[4 * C + 1] = 1.5f;
  in = (finch_results_in){GOLD, PRED, probs, N, C, LABELS, 1, 10, 0};
  refused(&in, "row 4: probability of label 1 is 1.5");
  probs[4 * C + 1] = NAN;
  refused(&in, "row 4: probability of label 1");
  CHECK_INT_EQ(finch_results_json(NULL, &(json_t *){NULL}, NULL), FINCH_EINVAL);
}

int main(void) {
  test_figures();
  test_without_probs();
  test_malformed();
  TEST_DONE();
}
