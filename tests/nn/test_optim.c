/* AdamW: the SIMD update equals the scalar reference bit for bit, one step
 * matches a hand computation, the lazy form touches only the listed rows,
 * and the schedule and clipping behave at their edges. */
#include "nn/optim.h"

#include "nn/rng.h"
#include "tests/test.h"

int main(void) {
  const nn_adamw_config c = nn_adamw_defaults();

  /* First step from zero moments: m = 0.1 g, v = 0.001 g^2, so the update is
   * lr * g / (|g| + eps) = lr * sign(g), after decay p *= 1 - lr * wd. */
  float p[1] = {1.0f}, g[1] = {-2.0f}, m[1] = {0}, v[1] = {0};
  nn_adamw_update(p, g, m, v, 1, 0.1f, 0.5f, 1.0f, 1, &c);
  CHECK_NEAR(p[0], 1.0 * (1 - 0.05) + 0.1, 1e-6);
  CHECK_NEAR(m[0], -0.2, 1e-7);
  CHECK_NEAR(v[0], 0.004, 1e-7); /* 1 - 0.999f is 0.00099999 in float */

  /* SIMD vs reference over a length that leaves a tail, several steps. */
  enum { N = 103 };
  nn_rng r;
  nn_rng_seed(&r, 3, 0);
  float pa[N], pb[N], ga[N], ma[N] = {0}, mb[N] = {0}, va[N] = {0}, vb[N] = {0};
  for (int i = 0; i < N; i++) pa[i] = pb[i] = nn_rng_normal(&r);
  for (uint64_t t = 1; t <= 5; t++) {
    for (int i = 0; i < N; i++) ga[i] = nn_rng_normal(&r);
    nn_adamw_update(pa, ga, ma, va, N, 1e-2f, 1e-2f, 0.7f, t, &c);
    nn_adamw_update_ref(pb, ga, mb, vb, N, 1e-2f, 1e-2f, 0.7f, t, &c);
  }
  CHECK(memcmp(pa, pb, sizeof pa) == 0);
  CHECK(memcmp(ma, mb, sizeof ma) == 0);
  CHECK(memcmp(va, vb, sizeof va) == 0);

  /* Lazy rows: rows 1 and 3 of a (4,5) table move like dense updates; rows 0
   * and 2 and their moments stay untouched. */
  float P[20], P0[20], M[20] = {0}, V[20] = {0}, G[10];
  for (int i = 0; i < 20; i++) P[i] = P0[i] = (float)i;
  for (int i = 0; i < 10; i++) G[i] = (float)(i + 1);
  const uint32_t rows[2] = {3, 1};
  nn_adamw_update_rows(P, G, rows, 2, 5, M, V, 0.1f, 0.0f, 1.0f, 1, &c);
  for (int d = 0; d < 5; d++) {
    CHECK(P[0 * 5 + d] == P0[0 * 5 + d] && M[0 * 5 + d] == 0.0f);
    CHECK(P[2 * 5 + d] == P0[2 * 5 + d] && V[2 * 5 + d] == 0.0f);
    CHECK_NEAR(P[3 * 5 + d], P0[3 * 5 + d] - 0.1, 1e-5); /* G row 0 > 0: sign step */
    CHECK_NEAR(P[1 * 5 + d], P0[1 * 5 + d] - 0.1, 1e-5);
  }

  /* Schedule: warm-up ramps to the peak, then decays linearly to 0. */
  CHECK_NEAR(nn_lr_schedule(1.0f, 0, 10, 110), 0.1, 1e-7);
  CHECK_NEAR(nn_lr_schedule(1.0f, 9, 10, 110), 1.0, 1e-7);
  CHECK_NEAR(nn_lr_schedule(1.0f, 10, 10, 110), 1.0, 1e-7);
  CHECK_NEAR(nn_lr_schedule(1.0f, 60, 10, 110), 0.5, 1e-6);
  CHECK_NEAR(nn_lr_schedule(1.0f, 110, 10, 110), 0.0, 1e-7);
  CHECK_NEAR(nn_lr_schedule(2.0f, 0, 0, 10), 2.0, 1e-7);

  /* Clipping: off at max_norm 0; scales a norm of 5 down to 1. */
  const float x[2] = {3, 4};
  CHECK_NEAR(nn_sum_sq(x, 2), 25.0, 1e-9);
  CHECK_NEAR(nn_clip_scale(25.0, 0.0f), 1.0, 0);
  CHECK_NEAR(nn_clip_scale(25.0, 1.0f), 0.2, 1e-7);
  CHECK_NEAR(nn_clip_scale(0.25, 1.0f), 1.0, 0);
  TEST_DONE();
}
