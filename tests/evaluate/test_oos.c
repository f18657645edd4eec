/* Out-of-scope figures (evaluate/oos.c) on hand-made rows: the AUROC's
 * extremes, ties and undefined case, FPR at 95% in-scope recall, recall and
 * precision from hand counts, and the curve's falling coverage. */
#include <math.h>

#include "evaluate/oos.h"
#include "tests/test.h"

static void test_auroc(void) {
  /* In-scope rows all above the out-of-scope ones: 1; all below: 0. */
  float s[] = {0.9f, 0.8f, 0.7f, 0.3f, 0.2f};
  unsigned char o[] = {0, 0, 0, 1, 1}, r[] = {1, 1, 1, 0, 0};
  CHECK_NEAR(finch_oos_auroc(s, o, 5), 1.0, 1e-12);
  CHECK_NEAR(finch_oos_auroc(s, r, 5), 0.0, 1e-12);
  /* Every score equal: every pair a tie, counted half. */
  float t[] = {0.5f, 0.5f, 0.5f, 0.5f};
  unsigned char ot[] = {0, 1, 0, 1};
  CHECK_NEAR(finch_oos_auroc(t, ot, 4), 0.5, 1e-12);
  /* Mixed by hand: in {0.9, 0.5, 0.2}, out {0.5, 0.1}. Pairs: 0.9 beats
   * both (2), 0.5 ties 0.5 and beats 0.1 (1.5), 0.2 beats 0.1 (1): 4.5 / 6. */
  float m[] = {0.9f, 0.5f, 0.5f, 0.2f, 0.1f};
  unsigned char om[] = {0, 0, 1, 0, 1};
  CHECK_NEAR(finch_oos_auroc(m, om, 5), 4.5 / 6.0, 1e-12);
  /* One class only (or nothing): undefined, NaN. */
  unsigned char all_in[] = {0, 0, 0, 0, 0}, all_out[] = {1, 1, 1, 1, 1};
  CHECK(isnan(finch_oos_auroc(s, all_in, 5)));
  CHECK(isnan(finch_oos_auroc(s, all_out, 5)));
  CHECK(isnan(finch_oos_auroc(s, all_in, 0)));
}

static void test_fpr(void) {
  /* 20 in-scope rows scoring 0.01 .. 0.20 and 4 out-of-scope ones. Keeping
   * 95% = 19 rows puts the threshold at the 19th highest, 0.02: the
   * out-of-scope rows at 0.02 (tie: kept) and 0.5 pass, 0.015 and 0.0 do not. */
  float s[24];
  unsigned char o[24] = {0};
  for (int i = 0; i < 20; i++) s[i] = (float)(i + 1) / 100.0f;
  s[20] = 0.02f, s[21] = 0.5f, s[22] = 0.015f, s[23] = 0.0f;
  o[20] = o[21] = o[22] = o[23] = 1;
  double t = 0;
  CHECK_NEAR(finch_oos_fpr_at_keep(s, o, 24, 0.95, &t), 0.5, 1e-12);
  CHECK(t == 0.02f);
  /* Keeping every row: the lowest in-scope score, 0.01; three pass. */
  CHECK_NEAR(finch_oos_fpr_at_keep(s, o, 24, 1.0, &t), 0.75, 1e-12);
  CHECK(t == 0.01f);
  /* Without out-of-scope rows: NaN, the threshold still defined. */
  CHECK(isnan(finch_oos_fpr_at_keep(s, o, 20, 0.95, &t)));
  CHECK(t == 0.02f);
  /* Without in-scope rows: both NaN. */
  CHECK(isnan(finch_oos_fpr_at_keep(s + 20, o + 20, 4, 0.95, &t)));
  CHECK(isnan(t));
}

static void test_counts(void) {
  /* 6 in-scope rows (labels 0/1) and 4 out-of-scope ones.
   * in:  decided 0 (right), 1 (right), 0 (wrong), -1 (refused), -1 (refused), 1 (right)
   * oos: decided -1, -1, -1, 0                                                        */
  float s[] = {0.9f, 0.8f, 0.7f, 0.3f, 0.4f, 0.85f, 0.2f, 0.1f, 0.35f, 0.6f};
  unsigned char o[] = {0, 0, 0, 0, 0, 0, 1, 1, 1, 1};
  int decided[] = {0, 1, 0, -1, -1, 1, -1, -1, -1, 0};
  int label[] = {0, 1, 1, 0, 1, 1, 99, 99, 99, 99};
  finch_oos_metrics m;
  CHECK_INT_EQ(finch_oos_compute(s, o, decided, label, 10, &m), 0);
  CHECK_INT_EQ(m.n_in, 6);
  CHECK_INT_EQ(m.n_oos, 4);
  CHECK_INT_EQ(m.in_correct, 3);
  CHECK_INT_EQ(m.in_answered, 4);
  CHECK_INT_EQ(m.oos_refused, 3);
  CHECK_INT_EQ(m.in_refused, 2);
  CHECK_NEAR(m.in_accuracy, 3.0 / 6.0, 1e-12); /* refusing an in-scope row is wrong */
  CHECK_NEAR(m.in_coverage, 4.0 / 6.0, 1e-12);
  CHECK_NEAR(m.oos_recall, 3.0 / 4.0, 1e-12);
  CHECK_NEAR(m.oos_precision, 3.0 / 5.0, 1e-12);
  /* in {0.9 0.8 0.7 0.3 0.4 0.85} vs out {0.2 0.1 0.35 0.6}: 0.9, 0.8, 0.7,
   * 0.85 beat all 4 (16); 0.4 beats 3; 0.3 beats 2: 21 / 24. */
  CHECK_NEAR(m.auroc, 21.0 / 24.0, 1e-12);
  /* ceil(0.95 * 6) = 6: the lowest in-scope score, 0.3; out 0.35 and 0.6 pass. */
  CHECK(m.threshold_at_95 == 0.3f);
  CHECK_NEAR(m.fpr_at_95, 0.5, 1e-12);

  /* Nothing refused and no out-of-scope row: recall and precision undefined. */
  int all[] = {0, 1, 0, 0, 0, 1};
  CHECK_INT_EQ(finch_oos_compute(s, o, all, label, 6, &m), 0);
  CHECK(isnan(m.oos_recall) && isnan(m.oos_precision) && isnan(m.auroc) && isnan(m.fpr_at_95));
  CHECK_NEAR(m.in_coverage, 1.0, 0);
  CHECK_NEAR(m.in_accuracy, 4.0 / 6.0, 1e-12);
}

static void test_curve(void) {
  /* 40 in-scope rows, scores 0.01 .. 0.40, every fifth answered wrongly,
   * the first two refused by an explicit class; 10 out-of-scope rows. */
  enum { N_IN = 40, N = 50, P = 20 };
  float s[N];
  unsigned char o[N] = {0};
  int answer[N], label[N];
  for (int i = 0; i < N_IN; i++) {
    s[i] = (float)(i + 1) / 100.0f;
    label[i] = i % 3;
    answer[i] = i < 2 ? -1 : i % 5 == 0 ? (i + 1) % 3 : i % 3;
  }
  for (int i = N_IN; i < N; i++) {
    o[i] = 1;
    s[i] = (float)(i - N_IN) / 25.0f; /* 0 .. 0.36 */
    answer[i] = 0;
    label[i] = 7;
  }
  finch_oos_point pts[P];
  CHECK_INT_EQ(finch_oos_curve(s, o, answer, label, N, P, pts), 0);
  /* The first point keeps every in-scope row the model answers. */
  CHECK(pts[0].threshold == 0.01f);
  CHECK_NEAR(pts[0].coverage, 38.0 / 40.0, 1e-12);
  CHECK_NEAR(pts[0].oos_refused, 1.0 / 10.0, 1e-12); /* only the 0.0 row is below 0.01 */
  for (int j = 1; j < P; j++) {
    CHECK(pts[j].threshold >= pts[j - 1].threshold);
    CHECK(pts[j].coverage <= pts[j - 1].coverage);
    CHECK(pts[j].oos_refused >= pts[j - 1].oos_refused);
  }
  /* The j-th point keeps ceil((1 - j/20) * 40) = 40 - 2j rows: threshold (2j + 1) / 100. */
  CHECK(pts[10].threshold == 0.21f);
  CHECK_NEAR(pts[10].coverage, 20.0 / 40.0, 1e-12);
  /* Answered rows 20..39 (indices), wrong at 20, 25, 30, 35: 16 / 20. */
  CHECK_NEAR(pts[10].accuracy, 16.0 / 20.0, 1e-12);
  /* Out-of-scope scores >= 0.21: 0.24, 0.28, 0.32, 0.36 answered; 6 refused. */
  CHECK_NEAR(pts[10].oos_refused, 6.0 / 10.0, 1e-12);
  CHECK(pts[19].threshold == 0.39f);

  /* No in-scope row: the thresholds are j / P and the coverage undefined. */
  CHECK_INT_EQ(finch_oos_curve(s + N_IN, o + N_IN, answer + N_IN, label + N_IN, N - N_IN, 4, pts), 0);
  CHECK_NEAR(pts[2].threshold, 0.5, 0);
  CHECK(isnan(pts[2].coverage) && isnan(pts[2].accuracy));
  CHECK_NEAR(pts[2].oos_refused, 1.0, 0); /* every out-of-scope score is below 0.5 */
}

int main(void) {
  test_auroc();
  test_fpr();
  test_counts();
  test_curve();
  TEST_DONE();
}
