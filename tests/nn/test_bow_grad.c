/* The bow model's analytic gradients (dense weights and the touched
 * embedding rows) against central finite differences, for a model with and
 * without a hidden layer, with distillation and dropout (masks replayed from
 * the same seed for every evaluation). */
#include "nn/bow.h"

#include "tests/test.h"

static const char *texts[] = {"my card has not arrived", "card pin blocked", "top up failed twice",
                              "exchange rate for euros"};

static nn_bow *tiny(uint32_t hidden) {
  finch_err err = {0};
  nn_train_config cfg = nn_train_config_student();
  cfg.dim = 6;
  cfg.hidden = hidden;
  cfg.buckets = 97;
  cfg.minn = 2;
  cfg.maxn = 3;
  nn_feat_config fc = nn__feat_config(&cfg);
  nn_featurizer *f = NULL;
  if (nn_featurizer_build(&f, texts, 4, &fc, &err) != FINCH_OK) return NULL;
  nn_bow *m = NULL;
  if (nn_bow_create(&m, &cfg, f, 5, &err) != FINCH_OK) return NULL; /* labels a..e */
  nn_rng r;
  nn_rng_seed(&r, 7, 0);
  for (size_t i = 0; i < m->n_params; i++) m->params[i] = 0.5f * nn_rng_normal(&r);
  return m;
}

/* Loss of the batch in w with dropout masks replayed from seed. */
static float loss_at(nn_bow_work *w, const nn_bow *m, int B, const nn_bow_loss_config *lc) {
  nn_rng r;
  nn_rng_seed(&r, 99, 0);
  return nn_bow_batch_grad(w, m, nn_backend_cpu(), B, lc, &r);
}

static int close_enough(double a, double n) { return fabs(a - n) <= 1e-3 + 2e-2 * fabs(a); }

/* Checks every dense parameter and every entry of the touched embedding rows.
 * h = 1e-2 on weights of order 0.5; tolerance |a - n| <= 1e-3 + 2% |a|. */
static void check_model(uint32_t hidden, const nn_bow_loss_config *lc) {
  finch_err err = {0};
  nn_bow *m = tiny(hidden);
  CHECK(m != NULL);
  if (!m) return;
  const int B = 3;
  nn_bow_work w;
  CHECK_INT_EQ(nn_bow_work_init(&w, m, 4, 4096, &err), FINCH_OK);
  nn_ids ids = {0};
  w.offs[0] = 0;
  for (int b = 0; b < B; b++) {
    CHECK_INT_EQ(nn_featurize(m->feat, texts[b], &ids, NULL, &err), FINCH_OK);
    memcpy(w.ids + w.offs[b], ids.ids, ids.n * sizeof *ids.ids);
    w.offs[b + 1] = w.offs[b] + ids.n;
    w.y[b] = b + 1;
    w.alpha[b] = 0.15f + 0.35f * (float)b; /* used when lc->per_row_alpha */
    float s = 0;
    for (uint32_t c = 0; c < m->C; c++) s += w.soft[b * m->C + c] = 1.0f + (float)((b * 3 + c) % 4);
    for (uint32_t c = 0; c < m->C; c++) w.soft[b * m->C + c] /= s;
  }
  nn_ids_free(&ids);

  loss_at(&w, m, B, lc);
  size_t n_dense = w.n_dense, n_rows = w.rg.n;
  float *ana = malloc((n_dense + n_rows * m->D) * sizeof(float));
  uint32_t *rows = malloc(n_rows * sizeof *rows);
  memcpy(ana, w.grads, n_dense * sizeof(float));
  memcpy(ana + n_dense, w.rg.g, n_rows * m->D * sizeof(float));
  memcpy(rows, w.rg.rows, n_rows * sizeof *rows);
  CHECK(n_rows > 10);

  const float h = 1e-2f;
  int bad = 0;
  float *dense = m->params + (size_t)m->R * m->D;
  for (size_t i = 0; i < n_dense + n_rows * m->D; i++) {
    float *p = i < n_dense ? &dense[i] : &m->emb[(size_t)rows[(i - n_dense) / m->D] * m->D + (i - n_dense) % m->D];
    float keep = *p;
    *p = keep + h;
    double up = loss_at(&w, m, B, lc);
    *p = keep - h;
    double down = loss_at(&w, m, B, lc);
    *p = keep;
    double num = (up - down) / (2.0 * h);
    if (!close_enough(ana[i], num) && bad++ < 5)
      TEST_FAIL_("hidden %u, param %zu: analytic %.6g, numeric %.6g", hidden, i, ana[i], num);
  }
  CHECK_INT_EQ(bad, 0);
  free(ana);
  free(rows);
  nn_bow_work_free(&w);
  nn_bow_free(m);
}

int main(void) {
  nn_bow_loss_config plain = {.alpha = 0.0f, .tau = 1.0f, .label_smoothing = 0.1f, .dropout = 0.0f};
  nn_bow_loss_config kd = {.alpha = 0.4f, .tau = 2.0f, .label_smoothing = 0.1f, .dropout = 0.0f};
  nn_bow_loss_config drop = {.alpha = 0.4f, .tau = 2.0f, .label_smoothing = 0.0f, .dropout = 0.3f};
  check_model(0, &plain);
  check_model(0, &kd);
  check_model(8, &plain);
  check_model(8, &kd);
  check_model(8, &drop);
  /* Per-example weights (0.15, 0.5, 0.85 on the three rows). */
  nn_bow_loss_config rows = {.alpha = 1.0f, .tau = 2.0f, .label_smoothing = 0.1f, .per_row_alpha = 1};
  check_model(0, &rows);
  check_model(8, &rows);
  /* With every row's weight equal to alpha, per-row mixing is the plain loss. */
  finch_err err = {0};
  nn_bow *m = tiny(8);
  nn_bow_work w;
  CHECK_INT_EQ(nn_bow_work_init(&w, m, 4, 4096, &err), FINCH_OK);
  nn_ids ids = {0};
  w.offs[0] = 0;
  for (int b = 0; b < 3; b++) {
    CHECK_INT_EQ(nn_featurize(m->feat, texts[b], &ids, NULL, &err), FINCH_OK);
    memcpy(w.ids + w.offs[b], ids.ids, ids.n * sizeof *ids.ids);
    w.offs[b + 1] = w.offs[b] + ids.n;
    w.y[b] = b;
    w.alpha[b] = 0.4f;
    for (uint32_t c = 0; c < m->C; c++) w.soft[b * m->C + c] = 1.0f / (float)m->C;
  }
  nn_ids_free(&ids);
  nn_bow_loss_config same = kd;
  same.per_row_alpha = 1;
  float l1 = loss_at(&w, m, 3, &kd);
  float *g1 = malloc(w.n_dense * sizeof(float));
  memcpy(g1, w.grads, w.n_dense * sizeof(float));
  float l2 = loss_at(&w, m, 3, &same);
  CHECK_NEAR(l1, l2, 1e-5);
  double diff = 0;
  for (size_t i = 0; i < w.n_dense; i++) diff = fmax(diff, fabs(g1[i] - w.grads[i]));
  CHECK_NEAR(diff, 0.0, 1e-6);
  free(g1);
  nn_bow_work_free(&w);
  nn_bow_free(m);
  TEST_DONE();
}
