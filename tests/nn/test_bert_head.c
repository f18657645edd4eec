/* The softmax-regression head on fixed vectors (nn/bert_head.h):
 *   - its gradient matches central finite differences of its loss (double
 *     accumulation of float inputs: relative error below 2e-3 per checked
 *     coordinate, with the L2 term on);
 *   - on separable synthetic data (4 clusters in 16 dimensions) it fits every
 *     training row and classifies held-out draws of the same clusters;
 *   - the fit is deterministic: two fits give the same bytes;
 *   - bad labels and empty inputs are refused, naming the row. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "nn/bert_head.h"
#include "nn/rng.h"
#include "tests/test.h"

enum { D = 16, C = 4 };

/* n rows: cluster k's centre is 3 e_k + noise of sd 0.5 in every dimension. */
static void draw(nn_rng *r, float *X, int32_t *y, size_t n) {
  for (size_t i = 0; i < n; i++) {
    y[i] = (int32_t)(i % C);
    for (size_t d = 0; d < D; d++) X[i * D + d] = 0.5f * nn_rng_normal(r) + (d == (size_t)y[i] ? 3.0f : 0.0f);
  }
}

static int argmax_row(const float *W, const float *b, const float *x) {
  int best = 0;
  float bz = -INFINITY;
  for (int k = 0; k < C; k++) {
    float z = b[k];
    for (int d = 0; d < D; d++) z += W[k * D + d] * x[d];
    if (z > bz) bz = z, best = k;
  }
  return best;
}

static void test_gradient(void) {
  nn_rng r;
  nn_rng_seed(&r, 7, 0);
  enum { N = 12 };
  float X[N * D], W[C * D], b[C], gW[C * D], gb[C];
  int32_t y[N];
  draw(&r, X, y, N);
  for (int k = 0; k < C * D; k++) W[k] = 0.3f * nn_rng_normal(&r);
  for (int k = 0; k < C; k++) b[k] = 0.2f * nn_rng_normal(&r);
  const float l2 = 0.05f, h = 1e-2f;
  nn_bert_head_loss(X, y, N, D, C, W, b, l2, gW, gb);
  double worst = 0;
  for (int k = 0; k < C * D + C; k++) {
    float *p = k < C * D ? W + k : b + (k - C * D), keep = *p;
    *p = keep + h;
    double up = nn_bert_head_loss(X, y, N, D, C, W, b, l2, NULL, NULL);
    *p = keep - h;
    double down = nn_bert_head_loss(X, y, N, D, C, W, b, l2, NULL, NULL);
    *p = keep;
    double num = (up - down) / (2 * h), ana = k < C * D ? gW[k] : gb[k - C * D];
    double rel = fabs(num - ana) / fmax(1e-3, fabs(num) + fabs(ana));
    if (rel > worst) worst = rel;
  }
  printf("head gradient: worst relative error %.2e over %d coordinates\n", worst, C * D + C);
  CHECK(worst < 2e-3);
}

static void test_fit(void) {
  nn_rng r;
  nn_rng_seed(&r, 11, 0);
  enum { N = 200, NT = 100 };
  static float X[N * D], XT[NT * D], W[C * D], b[C], W2[C * D], b2[C];
  int32_t y[N], yt[NT];
  draw(&r, X, y, N);
  draw(&r, XT, yt, NT);
  finch_err err;
  nn_bert_head_config hc = nn_bert_head_defaults();
  CHECK_INT_EQ(hc.steps, 400);
  CHECK_INT_EQ(nn_bert_head_fit(X, y, N, D, C, &hc, W, b, &err), FINCH_OK);
  double before = log((double)C), after = nn_bert_head_loss(X, y, N, D, C, W, b, hc.l2, NULL, NULL);
  printf("head fit: loss %.4f (from %.4f at zero)\n", after, before);
  CHECK(after < 0.05);
  int ok = 0, okt = 0;
  for (int i = 0; i < N; i++) ok += argmax_row(W, b, X + i * D) == y[i];
  for (int i = 0; i < NT; i++) okt += argmax_row(W, b, XT + i * D) == yt[i];
  CHECK_INT_EQ(ok, N);
  CHECK(okt >= NT - 2);
  /* Deterministic: the same bytes again, whatever W and b held before. */
  memset(W2, 0x7f, sizeof W2);
  CHECK_INT_EQ(nn_bert_head_fit(X, y, N, D, C, &hc, W2, b2, &err), FINCH_OK);
  CHECK(!memcmp(W, W2, sizeof W) && !memcmp(b, b2, sizeof b));

  /* Refusals. */
  y[17] = C;
  CHECK_INT_EQ(nn_bert_head_fit(X, y, N, D, C, &hc, W, b, &err), FINCH_EINVAL);
  CHECK_CONTAINS(err.msg, "row 17");
  y[17] = -1;
  CHECK_INT_EQ(nn_bert_head_fit(X, y, N, D, C, &hc, W, b, &err), FINCH_EINVAL);
  y[17] = 1;
  CHECK_INT_EQ(nn_bert_head_fit(X, y, 0, D, C, &hc, W, b, &err), FINCH_EINVAL);
  hc.steps = 0;
  CHECK_INT_EQ(nn_bert_head_fit(X, y, N, D, C, &hc, W, b, &err), FINCH_EINVAL);
}

int main(void) {
  test_gradient();
  test_fit();
  TEST_DONE();
}
