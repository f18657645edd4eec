/* The transformer's input-dependent head gates (nn/tfm.h, head_gates = 1):
 * the tensor table and init they add, the config check, that gates held
 * fully open compute bit for bit what the model without gates computes
 * (outputs and gradients, with dropout), that closed gates cut attention out
 * of the model, that gates depend on the real tokens of each row only, and
 * that a sparsity penalty through nn_tfm_dgates closes gates in training.
 * The gates' gradients against finite differences are in test_tfm_grad. */
#include "nn/loss.h"
#include "nn/optim.h"
#include "nn/tfm.h"

#include "tests/test.h"

enum { B = 4, T = 6, V = 24, C = 3, L = 2, HH = 4, D = 16 };

static nn_tfm_config config(uint32_t gates) {
  return (nn_tfm_config){.vocab = V, .buckets = 8, .max_len = T, .dim = D, .layers = L, .heads = HH, .ff = 32,
                         .n_labels = C, .pool = NN_POOL_MEAN, .dropout = 0.1f, .head_gates = gates};
}

typedef struct {
  int32_t ids[B * T];
  uint8_t mask[B * T];
  size_t offs[B * T + 1];
  uint32_t ng[B * T];
  nn_tfm_batch b;
} batch;

/* Rows of 6, 4, 3 and 1 real tokens, one n-gram row on every other token. */
static void make_batch(batch *d, uint64_t seed) {
  static const int lens[B] = {6, 4, 3, 1};
  nn_rng r;
  nn_rng_seed(&r, seed, 0);
  size_t k = 0;
  for (int i = 0; i < B * T; i++) {
    d->ids[i] = (int32_t)nn_rng_below(&r, V);
    d->mask[i] = i % T < lens[i / T];
    d->offs[i] = k;
    if (i % 2) d->ng[k++] = (uint32_t)nn_rng_below(&r, 8);
  }
  d->offs[B * T] = k;
  d->b = (nn_tfm_batch){.B = B, .T = T, .ids = d->ids, .mask = d->mask, .ng_offs = d->offs, .ng_ids = d->ng};
}

static float *param(nn_tfm *m, const char *name) {
  const nn_tfm_tensor *t = nn_tfm_tensor_find(m, name);
  CHECK(t != NULL);
  return t ? nn_tfm_params(m) + t->off : NULL;
}

static void set_gates(nn_tfm *m, float w, float b) {
  char name[24];
  for (int l = 0; l < L; l++) {
    snprintf(name, sizeof name, "l%d.gate_w", l);
    float *p = param(m, name);
    for (int i = 0; p && i < HH * D; i++) p[i] = w;
    snprintf(name, sizeof name, "l%d.gate_b", l);
    p = param(m, name);
    for (int i = 0; p && i < HH; i++) p[i] = b;
  }
}

/* The gates append 2L tensors after mlm_b and leave every other tensor, its
 * offset and (same seed) its values as they are without gates. */
static void test_table(void) {
  finch_err err = {0};
  nn_tfm_config c0 = config(0), c1 = config(1);
  nn_tfm *m0 = NULL, *m1 = NULL;
  CHECK_INT_EQ(nn_tfm_create(&m0, &c0, 7, &err), FINCH_OK);
  CHECK_INT_EQ(nn_tfm_create(&m1, &c1, 7, &err), FINCH_OK);
  if (!m0 || !m1) return;
  const size_t n0 = nn_tfm_n_tensors(m0);
  CHECK_INT_EQ(nn_tfm_n_tensors(m1), n0 + 2 * L);
  CHECK_INT_EQ(nn_tfm_n_params(m1), nn_tfm_n_params(m0) + (size_t)L * (HH * D + HH));
  for (size_t i = 0; i < n0; i++) {
    CHECK_STR_EQ(nn_tfm_tensor_at(m1, i)->name, nn_tfm_tensor_at(m0, i)->name);
    CHECK_INT_EQ(nn_tfm_tensor_at(m1, i)->off, nn_tfm_tensor_at(m0, i)->off);
  }
  CHECK(memcmp(nn_tfm_params(m0), nn_tfm_params(m1), nn_tfm_n_params(m0) * sizeof(float)) == 0);
  static const char *tail[] = {"l0.gate_w", "l0.gate_b", "l1.gate_w", "l1.gate_b"};
  for (size_t i = 0; i < 4; i++) CHECK_STR_EQ(nn_tfm_tensor_at(m1, n0 + i)->name, tail[i]);
  const nn_tfm_tensor *gw = nn_tfm_tensor_find(m1, "l1.gate_w"), *gb = nn_tfm_tensor_find(m1, "l1.gate_b");
  CHECK_INT_EQ(gw->rows, HH);
  CHECK_INT_EQ(gw->cols, D);
  CHECK_INT_EQ(gw->decay, 1);
  CHECK_INT_EQ(gb->rows, HH);
  CHECK_INT_EQ(gb->cols, 1);
  CHECK_INT_EQ(gb->decay, 0);
  CHECK_INT_EQ(gb->off + gb->rows, nn_tfm_n_params(m1));
  double ss = 0;
  for (int i = 0; i < HH * D; i++) ss += (double)nn_tfm_params(m1)[gw->off + i] * nn_tfm_params(m1)[gw->off + i];
  CHECK_NEAR(sqrt(ss / (HH * D)), 0.02, 0.008); /* N(0, 0.02) */
  for (int i = 0; i < HH; i++) CHECK(nn_tfm_params(m1)[gb->off + i] == 2.0f);
  CHECK(nn_tfm_tensor_find(m0, "l0.gate_w") == NULL);

  /* Rebuilt from its parameters; a block without the gates is refused. */
  nn_tfm *copy = NULL;
  CHECK_INT_EQ(nn_tfm_create_from_params(&copy, &c1, nn_tfm_params(m1), nn_tfm_n_params(m1), &err), FINCH_OK);
  if (copy) CHECK(memcmp(nn_tfm_params(copy), nn_tfm_params(m1), nn_tfm_n_params(m1) * sizeof(float)) == 0);
  nn_tfm_free(copy);
  copy = NULL;
  CHECK_INT_EQ(nn_tfm_create_from_params(&copy, &c1, nn_tfm_params(m0), nn_tfm_n_params(m0), &err), FINCH_EFORMAT);
  CHECK(copy == NULL);

  /* Gates exist only with head_gates = 1; 2 is refused naming the field. */
  nn_tfm_work *w = NULL;
  CHECK_INT_EQ(nn_tfm_work_init(&w, m0, B, &err), FINCH_OK);
  if (w) CHECK(nn_tfm_gates(w, 0) == NULL && nn_tfm_dgates(w, 1) == NULL);
  nn_tfm_work_free(w);
  CHECK_INT_EQ(nn_tfm_work_init(&w, m1, B, &err), FINCH_OK);
  if (w) CHECK(nn_tfm_gates(w, 0) != NULL && nn_tfm_dgates(w, 1) != NULL);
  nn_tfm_work_free(w);
  nn_tfm_config bad = config(2);
  nn_tfm *mb = NULL;
  CHECK_INT_EQ(nn_tfm_create(&mb, &bad, 1, &err), FINCH_EINVAL);
  CHECK_CONTAINS(err.msg, "head_gates");
  CHECK(mb == NULL);
  nn_tfm_free(m0);
  nn_tfm_free(m1);
}

/* One training-mode forward and backward under a CE loss and an MLM term;
 * returns the gradient block (n_params floats, caller frees). */
static float *step(nn_tfm *m, nn_tfm_work *w, const batch *d, uint64_t drop_seed) {
  static const int32_t y[B] = {0, 2, 1, 2};
  static const int32_t mpos[3] = {1, T + 2, 3 * T};
  static const int32_t my[3] = {5, 7, 11};
  float probs[B * C], rl[B], mprobs[3 * V], ml[3];
  nn_rng drop;
  nn_rng_seed(&drop, drop_seed, 2);
  nn_tfm_forward(m, w, &d->b, 1, &drop);
  nn_xent_ls_forward(nn_tfm_logits(w), y, B, C, 0.0f, probs, rl);
  nn_xent_ls_backward(probs, y, B, C, 0.0f, 1.0f / B, nn_tfm_dlogits(w));
  const float *z = nn_tfm_mlm_forward(m, w, mpos, 3);
  CHECK(z != NULL);
  if (z) {
    nn_xent_ls_forward(z, my, 3, V, 0.0f, mprobs, ml);
    nn_xent_ls_backward(mprobs, my, 3, V, 0.0f, 0.5f / 3, nn_tfm_dmlm(w));
  }
  float *g = calloc(nn_tfm_n_params(m), sizeof *g);
  nn_tfm_backward(m, w, &d->b, g);
  return g;
}

/* Gates held at exactly 1 (gate_w = 0, gate_b = 40: sigmoid rounds to 1.0f)
 * give the same logits, hidden states, attention and gradients of every
 * shared tensor, bit for bit, as the model without gates, with dropout on:
 * the gated path adds nothing, and nor do the gates' draws (there are none). */
static void test_open_is_off(void) {
  finch_err err = {0};
  nn_tfm_config c0 = config(0), c1 = config(1);
  nn_tfm *m0 = NULL, *m1 = NULL;
  nn_tfm_work *w0 = NULL, *w1 = NULL;
  CHECK_INT_EQ(nn_tfm_create(&m0, &c0, 3, &err), FINCH_OK);
  CHECK_INT_EQ(nn_tfm_create(&m1, &c1, 3, &err), FINCH_OK);
  if (!m0 || !m1) return;
  CHECK_INT_EQ(nn_tfm_work_init(&w0, m0, B, &err), FINCH_OK);
  CHECK_INT_EQ(nn_tfm_work_init(&w1, m1, B, &err), FINCH_OK);
  if (!w0 || !w1) return;
  set_gates(m1, 0.0f, 40.0f);
  batch d;
  make_batch(&d, 5);
  float *g0 = step(m0, w0, &d, 9), *g1 = step(m1, w1, &d, 9);
  for (int l = 0; l < L; l++)
    for (int i = 0; i < B * HH; i++) CHECK(nn_tfm_gates(w1, l)[i] == 1.0f);
  CHECK(memcmp(nn_tfm_logits(w0), nn_tfm_logits(w1), B * C * sizeof(float)) == 0);
  for (int l = 0; l <= L; l++)
    CHECK(memcmp(nn_tfm_hidden(w0, l), nn_tfm_hidden(w1, l), (size_t)B * T * D * sizeof(float)) == 0);
  for (int l = 0; l < L; l++)
    CHECK(memcmp(nn_tfm_attn(w0, l), nn_tfm_attn(w1, l), (size_t)B * HH * T * T * sizeof(float)) == 0);
  CHECK(memcmp(g0, g1, nn_tfm_n_params(m0) * sizeof(float)) == 0);
  /* Saturated gates pass no gradient to their own parameters. */
  for (size_t i = nn_tfm_n_params(m0); i < nn_tfm_n_params(m1); i++) CHECK(g1[i] == 0.0f);
  free(g0);
  free(g1);
  nn_tfm_work_free(w0);
  nn_tfm_work_free(w1);
  nn_tfm_free(m0);
  nn_tfm_free(m1);
}

/* Largest |a - b| over n floats. */
static double max_diff(const float *a, const float *b, size_t n) {
  double worst = 0;
  for (size_t i = 0; i < n; i++) worst = fmax(worst, fabs((double)a[i] - b[i]));
  return worst;
}

/* Logits (B,C) of an inference forward into out. */
static void logits_of(nn_tfm *m, nn_tfm_work *w, const batch *d, float *out) {
  nn_tfm_forward(m, w, &d->b, 0, NULL);
  memcpy(out, nn_tfm_logits(w), B * C * sizeof(float));
}

/* Closed gates (gate_b = -30, sigmoid ~ 1e-13) leave only the residual and
 * FF paths: changing the attention's q, k, v weights no longer changes the
 * logits, while with open gates it does. The gates are per example: rows
 * with other tokens get other gates, padding does not change them. */
static void test_closed_and_per_example(void) {
  finch_err err = {0};
  nn_tfm_config c1 = config(1);
  c1.dropout = 0.0f;
  nn_tfm *m = NULL;
  nn_tfm_work *w = NULL;
  CHECK_INT_EQ(nn_tfm_create(&m, &c1, 4, &err), FINCH_OK);
  if (!m) return;
  CHECK_INT_EQ(nn_tfm_work_init(&w, m, B, &err), FINCH_OK);
  if (!w) return;
  batch d;
  make_batch(&d, 6);
  float *wq = param(m, "l0.wqkv"), *wq1 = param(m, "l1.wqkv");
  float before[B * C], after[B * C];
  for (int closed = 0; closed <= 1; closed++) {
    if (closed) set_gates(m, 0.0f, -30.0f);
    logits_of(m, w, &d, before);
    for (int i = 0; i < 3 * D * D; i++) wq[i] += 0.5f * (float)(i % 3 - 1), wq1[i] -= 0.5f * (float)(i % 5 - 2);
    logits_of(m, w, &d, after);
    for (int i = 0; i < 3 * D * D; i++) wq[i] -= 0.5f * (float)(i % 3 - 1), wq1[i] += 0.5f * (float)(i % 5 - 2);
    double diff = max_diff(before, after, B * C);
    if (closed) CHECK_NEAR(diff, 0.0, 1e-6);
    else CHECK(diff > 1e-4);
  }
  for (int l = 0; l < L; l++)
    for (int i = 0; i < B * HH; i++) CHECK(nn_tfm_gates(w, l)[i] < 1e-12f);

  /* Per example, from real tokens only. */
  set_gates(m, 0.0f, 0.0f);
  float *gw = param(m, "l1.gate_w");
  for (int i = 0; i < HH * D; i++) gw[i] = (float)((i * 7) % 11 - 5) * 0.2f;
  nn_tfm_forward(m, w, &d.b, 0, NULL);
  float g[B * HH];
  memcpy(g, nn_tfm_gates(w, 1), sizeof g);
  CHECK(max_diff(g, g + HH, HH) > 1e-3); /* rows 0 and 1 differ */
  for (int i = 0; i < B * HH; i++) CHECK(nn_tfm_gates(w, 0)[i] == 0.5f); /* gate_w 0, gate_b 0 */
  for (int i = 0; i < B * T; i++)
    if (!d.mask[i]) d.ids[i] = (d.ids[i] + 5) % V;
  nn_tfm_forward(m, w, &d.b, 0, NULL);
  CHECK(memcmp(g, nn_tfm_gates(w, 1), sizeof g) == 0);
  d.ids[3 * T] = (d.ids[3 * T] + 1) % V; /* row 3's only real token */
  nn_tfm_forward(m, w, &d.b, 0, NULL);
  CHECK(memcmp(g, nn_tfm_gates(w, 1), 3 * HH * sizeof(float)) == 0);
  CHECK(max_diff(g + 3 * HH, nn_tfm_gates(w, 1) + 3 * HH, HH) > 0.0);
  nn_tfm_work_free(w);
  nn_tfm_free(m);
}

/* Trains CE + lambda * mean(gates) for 150 steps; returns the final mean
 * gate and writes the final CE into *ce. */
static double train_penalised(float lambda, double *ce) {
  finch_err err = {0};
  nn_tfm_config c1 = config(1);
  nn_tfm *m = NULL;
  nn_tfm_work *w = NULL;
  CHECK_INT_EQ(nn_tfm_create(&m, &c1, 8, &err), FINCH_OK);
  if (!m) return NAN;
  CHECK_INT_EQ(nn_tfm_work_init(&w, m, B, &err), FINCH_OK);
  if (!w) return NAN;
  static const int32_t y[B] = {0, 2, 1, 2};
  batch d;
  make_batch(&d, 12);
  const size_t np = nn_tfm_n_params(m);
  float *grads = calloc(np, sizeof *grads), *mom = calloc(2 * np, sizeof *mom), probs[B * C], rl[B];
  nn_rng drop;
  nn_rng_seed(&drop, 1, 2);
  const nn_adamw_config ac = nn_adamw_defaults();
  double mean_g = 0;
  for (int s = 0; s < 150; s++) {
    nn_tfm_forward(m, w, &d.b, 1, &drop);
    nn_xent_ls_forward(nn_tfm_logits(w), y, B, C, 0.0f, probs, rl);
    nn_xent_ls_backward(probs, y, B, C, 0.0f, 1.0f / B, nn_tfm_dlogits(w));
    *ce = 0;
    for (int b = 0; b < B; b++) *ce += rl[b] / B;
    mean_g = 0;
    for (int l = 0; l < L; l++)
      for (int i = 0; i < B * HH; i++) {
        mean_g += nn_tfm_gates(w, l)[i] / (L * B * HH);
        nn_tfm_dgates(w, l)[i] += lambda / (L * B * HH);
      }
    memset(grads, 0, np * sizeof *grads);
    nn_tfm_backward(m, w, &d.b, grads);
    for (size_t i = 0; i < nn_tfm_n_tensors(m); i++) {
      const nn_tfm_tensor *t = nn_tfm_tensor_at(m, i);
      nn_adamw_update(nn_tfm_params(m) + t->off, grads + t->off, mom + t->off, mom + np + t->off,
                      (size_t)t->rows * t->cols, 1e-2f, t->decay ? 1e-4f : 0.0f, 1.0f, (uint64_t)s + 1, &ac);
    }
  }
  free(grads);
  free(mom);
  nn_tfm_work_free(w);
  nn_tfm_free(m);
  return mean_g;
}

/* The penalty closes gates: with lambda = 1 the mean gate falls from 0.88
 * well below its level with lambda = 0, and the batch is still fitted. */
static void test_penalty_closes(void) {
  double ce0 = 0, ce1 = 0;
  double g0 = train_penalised(0.0f, &ce0), g1 = train_penalised(1.0f, &ce1);
  printf("mean gate after 150 steps: %.3f without penalty (CE %.4f), %.3f with lambda 1 (CE %.4f)\n", g0, ce0, g1,
         ce1);
  CHECK(g0 > 0.5);
  CHECK(g1 < 0.25);
  CHECK(ce1 < 0.1);
}

int main(void) {
  test_table();
  test_open_is_off();
  test_closed_and_per_example();
  test_penalty_closes();
  TEST_DONE();
}
