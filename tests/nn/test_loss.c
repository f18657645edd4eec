/* Losses: hand-computed values, stability at large logits, and gradients
 * against central finite differences. */
#include "nn/loss.h"

#include "nn/rng.h"
#include "tests/test.h"

/* Mean of the combined loss over B rows, as nn/bow.c forms it. */
static double combined(const float *z, const int32_t *y, const float *pt, int B, int C, float eps,
                       float alpha, float tau) {
  float probs[64], q[64], l1[8], l2[8];
  nn_xent_ls_forward(z, y, B, C, eps, probs, l1);
  nn_kl_tau_forward(z, pt, B, C, tau, q, l2);
  double s = 0.0;
  for (int b = 0; b < B; b++) s += (1.0 - alpha) * l1[b] + alpha * l2[b];
  return s / B;
}

int main(void) {
  /* Hand-computed: logits (1,2,3), label 2. lse = 3.40760596. */
  const float z[3] = {1, 2, 3};
  const int32_t y2[1] = {2};
  float probs[3], loss[1];
  nn_xent_ls_forward(z, y2, 1, 3, 0.0f, probs, loss);
  CHECK_NEAR(loss[0], 0.40760596, 1e-6);
  CHECK_NEAR(probs[0] + probs[1] + probs[2], 1.0, 1e-6);
  /* eps 0.1: lse - 0.9*3 - 0.1/3*(1+2+3) */
  nn_xent_ls_forward(z, y2, 1, 3, 0.1f, probs, loss);
  CHECK_NEAR(loss[0], 0.50760596, 1e-6);

  /* tau^2 KL(pt || softmax(z/2)), pt = (0.2,0.3,0.5): q = (0.18632372, 0.30719589, 0.50648039). */
  const float pt[3] = {0.2f, 0.3f, 0.5f};
  float q[3];
  nn_kl_tau_forward(z, pt, 1, 3, 2.0f, q, loss);
  CHECK_NEAR(q[0], 0.18632372, 1e-6);
  CHECK_NEAR(q[2], 0.50648039, 1e-6);
  CHECK_NEAR(loss[0], 0.0024666263, 1e-7);
  /* KL of a distribution with itself is 0, and zero entries of pt are fine. */
  const float onehot[3] = {0, 0, 1};
  const float big[3] = {-50, -50, 50};
  nn_kl_tau_forward(big, onehot, 1, 3, 1.0f, q, loss);
  CHECK_NEAR(loss[0], 0.0, 1e-6);

  /* Stable at large logits: no inf or NaN. */
  const float huge[3] = {1000, 0, -1000};
  const int32_t y0[1] = {0};
  nn_xent_ls_forward(huge, y2, 1, 3, 0.0f, probs, loss);
  CHECK_NEAR(loss[0], 2000.0, 1e-2);
  nn_xent_ls_forward(huge, y0, 1, 3, 0.0f, probs, loss);
  CHECK_NEAR(loss[0], 0.0, 1e-6);
  nn_softmax(huge, probs, 3, 0.5f);
  CHECK_NEAR(probs[0], 1.0, 1e-6);
  CHECK(isfinite(probs[2]));

  /* Gradients of the combined loss against central differences:
   * h = 1e-2 on logits of order 1, |analytic - numeric| <= 2e-4 + 1e-3 |analytic|. */
  enum { B = 3, C = 7 };
  nn_rng r;
  nn_rng_seed(&r, 42, 0);
  float lz[B * C], lpt[B * C], lprobs[B * C], lq[B * C], ll[B], grad[B * C];
  int32_t ly[B] = {0, 3, 6};
  for (int i = 0; i < B * C; i++) lz[i] = 2.0f * nn_rng_normal(&r);
  for (int b = 0; b < B; b++) {
    float s = 0;
    for (int c = 0; c < C; c++) s += lpt[b * C + c] = nn_rng_uniform(&r) + 0.01f;
    for (int c = 0; c < C; c++) lpt[b * C + c] /= s;
  }
  const float cases[3][3] = {{0.0f, 0.0f, 1.0f}, {0.1f, 0.5f, 2.0f}, {0.2f, 1.0f, 4.0f}}; /* eps, alpha, tau */
  for (int k = 0; k < 3; k++) {
    float eps = cases[k][0], alpha = cases[k][1], tau = cases[k][2];
    for (int i = 0; i < B * C; i++) grad[i] = 0.0f;
    nn_xent_ls_forward(lz, ly, B, C, eps, lprobs, ll);
    nn_xent_ls_backward(lprobs, ly, B, C, eps, (1.0f - alpha) / B, grad);
    nn_kl_tau_forward(lz, lpt, B, C, tau, lq, ll);
    nn_kl_tau_backward(lq, lpt, B, C, tau, alpha / B, grad);
    for (int i = 0; i < B * C; i++) {
      const float h = 1e-2f;
      float keep = lz[i];
      lz[i] = keep + h;
      double up = combined(lz, ly, lpt, B, C, eps, alpha, tau);
      lz[i] = keep - h;
      double down = combined(lz, ly, lpt, B, C, eps, alpha, tau);
      lz[i] = keep;
      double num = (up - down) / (2.0 * h);
      CHECK_NEAR(grad[i], num, 2e-4 + 1e-3 * fabs(grad[i]));
    }
  }
  TEST_DONE();
}
