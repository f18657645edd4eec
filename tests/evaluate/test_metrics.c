#include "evaluate/metrics.h"
#include "tests/test.h"

int main(void) {
  /* 3 labels; gold 0 0 1 1 2, pred 0 1 1 1 0. */
  int gold[] = {0, 0, 1, 1, 2}, pred[] = {0, 1, 1, 1, 0};
  float conf[] = {0.95f, 0.55f, 0.85f, 0.65f, 0.45f};
  finch_metrics m;
  CHECK_INT_EQ(finch_metrics_compute(gold, pred, conf, 5, 3, &m), 0);
  CHECK_NEAR(m.accuracy, 0.6, 1e-12);
  /* label 0: p 1/2 r 1/2 f1 .5; label 1: p 2/3 r 1 f1 .8; label 2: 0 */
  CHECK_NEAR(m.per_label[0].f1, 0.5, 1e-12);
  CHECK_NEAR(m.per_label[1].precision, 2.0 / 3.0, 1e-12);
  CHECK_NEAR(m.per_label[1].f1, 0.8, 1e-12);
  CHECK_NEAR(m.per_label[2].f1, 0.0, 1e-12);
  CHECK_NEAR(m.macro_f1, (0.5 + 0.8 + 0.0) / 3.0, 1e-12);
  CHECK_INT_EQ(m.per_label[1].support, 2);
  CHECK_INT_EQ(m.per_label[1].predicted, 3);
  /* ECE: bins 9 {0.95 ok}, 5 {0.55 wrong}, 8 {0.85 ok}, 6 {0.65 ok}, 4 {0.45 wrong}
   * = (0.05 + 0.55 + 0.15 + 0.35 + 0.45) / 5 */
  CHECK_NEAR(m.ece, (0.05 + 0.55 + 0.15 + 0.35 + 0.45) / 5.0, 1e-6);
  finch_metrics_free(&m);

  /* A label absent from gold does not count in macro-F1. */
  int g2[] = {0, 0}, p2[] = {0, 1};
  CHECK_INT_EQ(finch_metrics_compute(g2, p2, NULL, 2, 2, &m), 0);
  CHECK_NEAR(m.macro_f1, 2.0 / 3.0, 1e-12); /* label 0: p 1 r .5 */
  CHECK_NEAR(m.ece, 0.0, 0);
  finch_metrics_free(&m);

  double v[] = {5, 1, 4, 2, 3, 6, 7, 8, 9, 10};
  CHECK_NEAR(finch_quantile(v, 10, 0.5), 5, 0);
  CHECK_NEAR(finch_quantile(v, 10, 0.99), 10, 0);
  CHECK_NEAR(finch_quantile(v, 10, 0.0), 1, 0);
  TEST_DONE();
}
