/* evaluate/stats.c against tests/evaluate/golden/stats_reference.json, the
 * figures scripts/golden/stats_reference.py computes independently in plain
 * Python (exact fractions for the binomial tail, math.erfc, its own
 * golden-section temperature fit, finch's splitmix64 for the resamples),
 * plus the bootstrap's own properties: one seed one interval, the interval
 * holds the estimate and narrows as the rows grow. */
#include <stdint.h>

#include "core/json.h"
#include "evaluate/stats.h"
#include "tests/test.h"

#define GOLDEN FINCH_SOURCE_DIR "/tests/evaluate/golden/stats_reference.json"

/* |a - b| <= tol * max(|a|, |b|), or both 0. */
#define CHECK_REL(a, b, tol)                                                                       \
  do {                                                                                             \
    double a2_ = (double)(a), b2_ = (double)(b);                                                   \
    double m_ = fmax(fabs(a2_), fabs(b2_));                                                        \
    if (!(fabs(a2_ - b2_) <= (tol) * m_))                                                          \
      TEST_FAIL_("%s ~= %s: %.17g vs %.17g (rel %g)", #a, #b, a2_, b2_, (double)(tol));            \
  } while (0)

static double num(const json_t *o, const char *k) {
  const json_t *v = json_object_get(o, k);
  return json_is_number(v) ? json_number_value(v) : NAN;
}

static int32_t *ints(const json_t *a) {
  int32_t *v = calloc(json_array_size(a) + 1, sizeof *v);
  for (size_t i = 0; i < json_array_size(a); i++) v[i] = (int32_t)json_integer_value(json_array_get(a, i));
  return v;
}

/* null stands for NaN (JSON has none). */
static double *reals(const json_t *a) {
  double *v = calloc(json_array_size(a) + 1, sizeof *v);
  for (size_t i = 0; i < json_array_size(a); i++) {
    const json_t *x = json_array_get(a, i);
    v[i] = json_is_number(x) ? json_number_value(x) : NAN;
  }
  return v;
}

static void test_mcnemar(const json_t *cases) {
  size_t i;
  json_t *c;
  CHECK(json_array_size(cases) >= 10);
  json_array_foreach(cases, i, c) {
    finch_mcnemar m;
    long long b = json_integer_value(json_object_get(c, "b")), cc = json_integer_value(json_object_get(c, "c"));
    finch_stats_mcnemar(b, cc, &m);
    CHECK_INT_EQ(m.b, b);
    CHECK_INT_EQ(m.c, cc);
    CHECK_REL(m.p_exact, num(c, "p_exact"), 1e-9);
    CHECK_REL(m.chi2, num(c, "chi2"), 1e-9);
    CHECK_REL(m.p_chi2, num(c, "p_chi2"), 1e-9);
  }
  /* From rows: A right on rows 0-2 and 5, B right on rows 3-5. */
  int32_t gold[] = {0, 1, 2, 0, 1, 2}, pa[] = {0, 1, 2, 1, 2, 2}, pb[] = {1, 2, 0, 0, 1, 2};
  finch_mcnemar m;
  finch_stats_mcnemar_rows(gold, pa, pb, 6, &m);
  CHECK_INT_EQ(m.b, 3);
  CHECK_INT_EQ(m.c, 2);
  finch_stats_mcnemar(0, 0, &m);
  CHECK(m.p_exact == 1 && m.p_chi2 == 1 && m.chi2 == 0);
}

static void check_bins(const finch_calib_bin *got, const json_t *want, size_t n_bins, double tol) {
  CHECK_INT_EQ(json_array_size(want), n_bins);
  for (size_t b = 0; b < n_bins && b < json_array_size(want); b++) {
    const json_t *w = json_array_get(want, b);
    CHECK_INT_EQ(got[b].count, json_integer_value(json_object_get(w, "count")));
    CHECK_NEAR(got[b].confidence, num(w, "confidence"), tol);
    CHECK_NEAR(got[b].accuracy, num(w, "accuracy"), tol);
    CHECK_NEAR(got[b].lo, (double)b / (double)n_bins, 1e-15);
    CHECK_NEAR(got[b].hi, (double)(b + 1) / (double)n_bins, 1e-15);
  }
}

static void test_calibration(const json_t *cal, const json_t *cov) {
  const json_t *P = json_object_get(cal, "probs");
  size_t n = json_array_size(P), C = (size_t)json_integer_value(json_object_get(cal, "C"));
  size_t n_bins = (size_t)json_integer_value(json_object_get(cal, "n_bins"));
  float *probs = malloc(n * C * sizeof *probs);
  for (size_t i = 0; i < n; i++)
    for (size_t k = 0; k < C; k++) probs[i * C + k] = (float)json_number_value(json_array_get(json_array_get(P, i), k));
  int32_t *gold = ints(json_object_get(cal, "gold")), *pred = ints(json_object_get(cal, "pred"));

  finch_calibration c;
  CHECK_INT_EQ(finch_stats_calibration(probs, gold, pred, n, C, 0, &c), 0);
  CHECK_INT_EQ(c.n_bins, n_bins);
  /* Closed forms over the same float32 confidences: to the last digits. */
  CHECK_REL(c.ece, num(cal, "ece"), 1e-9);
  check_bins(c.bins, json_object_get(cal, "bins"), n_bins, 1e-12);
  /* The reference minimises the NLL to convergence in double; the C fit is a
   * 40-step search returned as a float, and re-tempers in float. */
  CHECK_REL(c.temperature, num(cal, "temperature"), 1e-5);
  CHECK_NEAR(c.ece_after, num(cal, "ece_after"), 1e-5);
  check_bins(c.bins_after, json_object_get(cal, "bins_after"), n_bins, 1e-5);
  CHECK(c.ece_after < c.ece); /* the case is overconfident on purpose */
  finch_stats_calibration_free(&c);
  CHECK_INT_EQ(finch_stats_calibration(NULL, gold, pred, n, C, 0, &c), -1);
  CHECK_INT_EQ(finch_stats_calibration(probs, gold, pred, 0, C, 0, &c), -1);

  /* The coverage curve over the largest probabilities. */
  float *conf = malloc(n * sizeof *conf);
  finch_stats_max_prob(probs, n, C, conf);
  const json_t *th = json_object_get(cov, "thresholds"), *pts = json_object_get(cov, "points");
  size_t nt = json_array_size(th);
  double *t = reals(th);
  finch_coverage_point *got = calloc(nt, sizeof *got);
  finch_stats_coverage(conf, gold, pred, n, t, nt, got);
  CHECK_INT_EQ(nt, 20);
  for (size_t j = 0; j < nt; j++) {
    const json_t *w = json_array_get(pts, j);
    CHECK_NEAR(got[j].threshold, num(w, "threshold"), 0);
    CHECK_INT_EQ(got[j].answered, json_integer_value(json_object_get(w, "answered")));
    CHECK_REL(got[j].coverage, num(w, "coverage"), 1e-12);
    if (json_is_null(json_object_get(w, "accuracy"))) CHECK(isnan(got[j].accuracy));
    else CHECK_REL(got[j].accuracy, num(w, "accuracy"), 1e-12);
  }
  /* A threshold above every confidence answers nothing: accuracy undefined. */
  double high = 2;
  finch_stats_coverage(conf, gold, pred, n, &high, 1, got);
  CHECK_INT_EQ(got[0].answered, 0);
  CHECK(isnan(got[0].accuracy));
  CHECK_NEAR(got[0].coverage, 0, 0);
  free(got), free(t), free(conf), free(probs), free(gold), free(pred);
}

static void test_bootstrap_reference(const json_t *bs) {
  const json_t *g = json_object_get(bs, "gold");
  size_t n = json_array_size(g), C = (size_t)json_integer_value(json_object_get(bs, "C"));
  int32_t *gold = ints(g), *pred = ints(json_object_get(bs, "pred"));
  finch_bootstrap b;
  CHECK_INT_EQ(finch_stats_bootstrap(gold, pred, n, C, (int)json_integer_value(json_object_get(bs, "B")),
                                     (unsigned long long)json_integer_value(json_object_get(bs, "seed")), &b),
               0);
  const json_t *a = json_object_get(bs, "accuracy"), *f = json_object_get(bs, "macro_f1");
  CHECK_REL(b.accuracy.value, num(a, "value"), 1e-12);
  CHECK_REL(b.accuracy.lo, num(a, "lo"), 1e-12);
  CHECK_REL(b.accuracy.hi, num(a, "hi"), 1e-12);
  CHECK_REL(b.macro_f1.value, num(f, "value"), 1e-12);
  CHECK_REL(b.macro_f1.lo, num(f, "lo"), 1e-12);
  CHECK_REL(b.macro_f1.hi, num(f, "hi"), 1e-12);
  free(gold), free(pred);
}

/* Rows with a given accuracy: label i % C, predicted right unless i % 10 < wrong10. */
static void make_rows(size_t n, size_t C, int wrong10, int32_t *gold, int32_t *pred) {
  for (size_t i = 0; i < n; i++) {
    gold[i] = (int32_t)(i % C);
    pred[i] = (int)(i * 7 % 10) < wrong10 ? (int32_t)((i + 1) % C) : gold[i];
  }
}

static void test_bootstrap_properties(void) {
  enum { N = 2000, C = 5 };
  int32_t *gold = malloc(N * sizeof *gold), *pred = malloc(N * sizeof *pred);
  make_rows(N, C, 2, gold, pred);
  finch_bootstrap a, b, c, small, big;
  CHECK_INT_EQ(finch_stats_bootstrap(gold, pred, N, C, 300, 7, &a), 0);
  CHECK_INT_EQ(finch_stats_bootstrap(gold, pred, N, C, 300, 7, &b), 0);
  /* One seed, one interval, to the bit. */
  CHECK(a.accuracy.lo == b.accuracy.lo && a.accuracy.hi == b.accuracy.hi);
  CHECK(a.macro_f1.lo == b.macro_f1.lo && a.macro_f1.hi == b.macro_f1.hi);
  CHECK_INT_EQ(finch_stats_bootstrap(gold, pred, N, C, 300, 8, &c), 0);
  CHECK(c.accuracy.lo != a.accuracy.lo || c.accuracy.hi != a.accuracy.hi || c.macro_f1.lo != a.macro_f1.lo);
  CHECK_NEAR(a.accuracy.value, 0.8, 1e-12);
  CHECK(a.accuracy.lo <= a.accuracy.value && a.accuracy.value <= a.accuracy.hi);
  CHECK(a.macro_f1.lo <= a.macro_f1.value && a.macro_f1.value <= a.macro_f1.hi);
  CHECK(a.accuracy.lo < a.accuracy.hi);
  CHECK_INT_EQ(a.resamples, 300);
  /* Default resamples. */
  CHECK_INT_EQ(finch_stats_bootstrap(gold, pred, 100, C, 0, 1, &c), 0);
  CHECK_INT_EQ(c.resamples, FINCH_STATS_BOOTSTRAP_DEFAULT);
  /* Width shrinks about as 1 / sqrt(n): 100 rows against 2,000. */
  CHECK_INT_EQ(finch_stats_bootstrap(gold, pred, 100, C, 500, 3, &small), 0);
  CHECK_INT_EQ(finch_stats_bootstrap(gold, pred, N, C, 500, 3, &big), 0);
  double ws = small.accuracy.hi - small.accuracy.lo, wb = big.accuracy.hi - big.accuracy.lo;
  CHECK(wb < ws / 2);
  CHECK(big.macro_f1.hi - big.macro_f1.lo < (small.macro_f1.hi - small.macro_f1.lo) / 2);
  /* A perfect model: a zero-width interval at 1. */
  CHECK_INT_EQ(finch_stats_bootstrap(gold, gold, N, C, 50, 1, &c), 0);
  CHECK(c.accuracy.lo == 1 && c.accuracy.hi == 1 && c.macro_f1.lo == 1);
  /* Refused: no rows, no labels, negative resamples. */
  CHECK_INT_EQ(finch_stats_bootstrap(gold, pred, 0, C, 10, 1, &c), -1);
  CHECK_INT_EQ(finch_stats_bootstrap(gold, pred, N, 0, 10, 1, &c), -1);
  CHECK_INT_EQ(finch_stats_bootstrap(gold, pred, N, C, -1, 1, &c), -1);
  free(gold), free(pred);

  /* The percentile rule on a hand-made case: 40 values 1..40 shuffled; the
   * nearest-rank 2.5% is the ceil(1)-th = 1, the 97.5% the ceil(39)-th = 39. */
  double v[40];
  for (int i = 0; i < 40; i++) v[i] = (double)((i * 17) % 40 + 1);
  double lo, hi;
  finch_stats_percentile_ci(v, 40, &lo, &hi);
  CHECK_NEAR(lo, 1, 0);
  CHECK_NEAR(hi, 39, 0);
  /* 1,000 values 0..999: the 25th and the 975th smallest. */
  double *w = malloc(1000 * sizeof *w);
  for (int i = 0; i < 1000; i++) w[i] = (double)((i * 331) % 1000);
  finch_stats_percentile_ci(w, 1000, &lo, &hi);
  CHECK_NEAR(lo, 24, 0);
  CHECK_NEAR(hi, 974, 0);
  free(w);
}

static void test_pareto(const json_t *cases) {
  size_t i;
  json_t *c;
  json_array_foreach(cases, i, c) {
    const json_t *a = json_object_get(c, "accuracy"), *front = json_object_get(c, "front");
    size_t n = json_array_size(a);
    double *acc = reals(a), *lat = reals(json_object_get(c, "latency"));
    size_t *idx = calloc(n + 1, sizeof *idx);
    size_t m = finch_stats_pareto(acc, lat, n, idx);
    CHECK_INT_EQ(m, json_array_size(front));
    for (size_t k = 0; k < m && k < json_array_size(front); k++)
      if ((long long)idx[k] != json_integer_value(json_array_get(front, k)))
        TEST_FAIL_("pareto case %zu: front[%zu] = %zu, reference %lld", i, k, idx[k],
                   (long long)json_integer_value(json_array_get(front, k)));
    free(acc), free(lat), free(idx);
  }
}

static void test_most_confused(const json_t *cases) {
  size_t i;
  json_t *c;
  json_array_foreach(cases, i, c) {
    size_t C = (size_t)json_integer_value(json_object_get(c, "C")), k = (size_t)json_integer_value(json_object_get(c, "k"));
    const json_t *M = json_object_get(c, "matrix"), *want = json_object_get(c, "pairs");
    long long *conf = calloc(C * C, sizeof *conf);
    for (size_t g = 0; g < C; g++)
      for (size_t p = 0; p < C; p++) conf[g * C + p] = json_integer_value(json_array_get(json_array_get(M, g), p));
    finch_confused_pair *out = calloc(k, sizeof *out);
    size_t m = finch_stats_most_confused(conf, C, k, out);
    CHECK_INT_EQ(m, json_array_size(want));
    for (size_t j = 0; j < m && j < json_array_size(want); j++) {
      const json_t *w = json_array_get(want, j);
      CHECK_INT_EQ(out[j].gold, json_integer_value(json_array_get(w, 0)));
      CHECK_INT_EQ(out[j].pred, json_integer_value(json_array_get(w, 1)));
      CHECK_INT_EQ(out[j].count, json_integer_value(json_array_get(w, 2)));
    }
    free(conf), free(out);
  }
}

/* finch_ece is what finch_metrics_compute reports at 10 bins. */
static void test_ece_shared(void) {
  int gold[] = {0, 0, 1, 1, 2}, pred[] = {0, 1, 1, 1, 0};
  float conf[] = {0.95f, 0.55f, 0.85f, 0.65f, 0.45f};
  finch_metrics m;
  CHECK_INT_EQ(finch_metrics_compute(gold, pred, conf, 5, 3, &m), 0);
  finch_calib_bin bins[15];
  CHECK(finch_ece(conf, gold, pred, 5, 10, bins) == m.ece);
  CHECK_INT_EQ(bins[9].count, 1);
  CHECK_NEAR(bins[9].accuracy, 1, 0);
  CHECK_INT_EQ(bins[5].count, 1);
  CHECK_NEAR(bins[5].accuracy, 0, 0);
  CHECK_NEAR(bins[5].confidence, 0.55f, 0);
  /* Confidence 1 lands in the last bin. */
  float one = 1.0f;
  int z = 0;
  CHECK_NEAR(finch_ece(&one, &z, &z, 1, 15, bins), 0, 0);
  CHECK_INT_EQ(bins[14].count, 1);
  finch_metrics_free(&m);
}

int main(void) {
  json_t *ref = NULL;
  finch_err err;
  if (finch_json_read_file(GOLDEN, &ref, &err) != FINCH_OK) {
    TEST_FAIL_("%s", err.msg);
    TEST_DONE();
  }
  test_mcnemar(json_object_get(ref, "mcnemar"));
  test_calibration(json_object_get(ref, "calibration"), json_object_get(ref, "coverage"));
  test_bootstrap_reference(json_object_get(ref, "bootstrap"));
  test_bootstrap_properties();
  test_pareto(json_object_get(ref, "pareto"));
  test_most_confused(json_object_get(ref, "most_confused"));
  test_ece_shared();
  json_decref(ref);
  TEST_DONE();
}
