/* The BERT encoder's fine-tuning gradients (nn/bert_train.h) against
 * central finite differences in float32, on the tiny random BERT of
 * bert_tiny.h (2 layers, width 8, 2 heads, feed-forward 16, vocabulary 50)
 * with a 5-label head, under the mean cross-entropy of a padded batch of 3
 * rows (lengths 7, 4, 2): every tensor of the encoder and the head's two.
 *
 * First with dropout off, as the task asks; then with dropout on (0.2 on the
 * hidden states, 0.2 on the attention probabilities), the rng reseeded before
 * every forward so that each one drops the same units: that checks the
 * masks' backward, including the recomputed context of attention-probability
 * dropout.
 *
 * Metric (that of test_tfm_grad): err = |analytic - numeric| /
 * max(|analytic| + |numeric|, FLOOR) per sampled entry (up to 20 per tensor;
 * for the word embeddings, entries of the rows the batch uses). Central
 * differences with step H = 1e-2 on entries of order 0.1..1, the loss
 * accumulated in double. A tensor passes when its largest err is at most
 * TOL_MAX (5e-2) and the 90th percentile at most TOL_P90 (1e-2). With
 * BERT_GRAD_VERBOSE set, each tensor's errors are printed.
 *
 * Also: the rows of the word embeddings no batch position uses get exactly
 * zero gradient, and the training forward with dropout off gives the pooled
 * vectors of nn_bert_forward bit for bit. */
#include "nn/bert_train.h"

#include "nn/loss.h"
#include "tests/nn/bert_tiny.h"
#include "tests/test.h"

#define H 1e-2f
#define FLOOR 1e-3
#define TOL_MAX 5e-2
#define TOL_P90 1e-2
#define SAMPLES 20

enum { B = 3, T = 7, C = 5 };
static const int lens[B] = {7, 4, 2};

typedef struct {
  nn_bert *m;
  nn_bert_train_work *w;
  float *P;
  int32_t ids[B * T], y[B];
  uint8_t mask[B * T];
  float ph, pa;
  uint64_t seed;
} ctx;

static nn_rng rng_g;
static double worst_all;

/* The mean cross-entropy of the batch under c->P; probs (B,C) when not NULL. */
static double loss(ctx *c, float *probs_out) {
  finch_err err = {0};
  nn_rng r;
  nn_rng_seed(&r, c->seed, 5);
  if (nn_bert_train_forward(c->m, c->w, c->P, c->ids, c->mask, B, T, c->ph, c->pa, &r, &err) != FINCH_OK) {
    TEST_FAIL_("forward: %s", err.msg);
    return 0;
  }
  float probs[B * C], rl[B];
  nn_xent_ls_forward(nn_bert_train_logits(c->w), c->y, B, C, 0.0f, probs, rl);
  if (probs_out) memcpy(probs_out, probs, sizeof probs);
  double s = 0;
  for (int i = 0; i < B; i++) s += rl[i];
  return s / B;
}

static int cmp_double(const void *a, const void *b) {
  double x = *(const double *)a, y = *(const double *)b;
  return x < y ? -1 : x > y;
}

/* Checks the analytic gradient ana of the entries idx[0..k) of c->P. */
static void check_entries(ctx *c, const char *what, const float *ana, const size_t *idx, size_t k) {
  double errs[SAMPLES], worst = 0, wa = 0, wn = 0;
  size_t wi = 0;
  for (size_t s = 0; s < k; s++) {
    const size_t i = idx[s];
    float keep = c->P[i];
    c->P[i] = keep + H;
    double up = loss(c, NULL);
    c->P[i] = keep - H;
    double down = loss(c, NULL);
    c->P[i] = keep;
    double num = (up - down) / (2.0 * (double)H), den = fabs(ana[i]) + fabs(num);
    double err = fabs(ana[i] - num) / (den > FLOOR ? den : FLOOR);
    errs[s] = err;
    if (err > worst || err != err) worst = err, wi = i, wa = ana[i], wn = num;
  }
  qsort(errs, k, sizeof *errs, cmp_double);
  double p90 = k ? errs[(size_t)(0.9 * (double)(k - 1))] : 0.0;
  if (!(worst <= TOL_MAX) || !(p90 <= TOL_P90))
    TEST_FAIL_("%s: entry %zu analytic %.6g numeric %.6g (err %.3g, limit %g; p90 %.3g, limit %g)", what, wi, wa, wn,
               worst, TOL_MAX, p90, TOL_P90);
  if (getenv("BERT_GRAD_VERBOSE")) printf("%-10s max err %.2e  p90 %.2e\n", what, worst, p90);
  if (worst > worst_all) worst_all = worst;
}

/* Up to SAMPLES entries spread over [off, off + n), from a random start. */
static size_t spread(size_t off, size_t n, size_t *idx) {
  size_t step = n > SAMPLES ? n / SAMPLES : 1, k = 0;
  for (size_t i = n > SAMPLES ? (size_t)nn_rng_below(&rng_g, step) : 0; i < n && k < SAMPLES; i += step)
    idx[k++] = off + i;
  return k;
}

static void run(ctx *c, const char *pass) {
  const size_t np = nn_bert_train_n_params(c->m, C), D = TINY_D;
  float *G = calloc(np, sizeof *G), probs[B * C];
  loss(c, probs);
  nn_xent_ls_backward(probs, c->y, B, C, 0.0f, 1.0f / B, nn_bert_train_dlogits(c->w));
  nn_bert_train_backward(c->m, c->w, c->P, G);
  printf("%s\n", pass);
  size_t idx[SAMPLES];
  for (size_t t = 0; t < nn_bert_n_tensors(c->m); t++) {
    const nn_bert_tensor *ts = nn_bert_tensor_at(c->m, t);
    size_t k;
    if (t == 0) { /* word embeddings: entries of used rows; unused rows exactly 0 */
      uint8_t used[TINY_V] = {0};
      for (int i = 0; i < B * T; i++) used[c->ids[i]] = 1;
      k = 0;
      for (int s = 0; s < SAMPLES; s++) {
        int32_t row = c->ids[(size_t)nn_rng_below(&rng_g, B * T)];
        idx[k++] = ts->off + (size_t)row * D + (size_t)nn_rng_below(&rng_g, D);
      }
      for (int v = 0; v < TINY_V; v++)
        for (size_t d = 0; d < D && !used[v]; d++)
          if (G[ts->off + (size_t)v * D + d] != 0.0f) TEST_FAIL_("tok_emb row %d (unused) has gradient", v);
    } else if (t == 1) { /* positions: the T rows used */
      k = spread(ts->off, (size_t)T * D, idx);
    } else {
      k = spread(ts->off, (size_t)ts->rows * ts->cols, idx);
    }
    check_entries(c, ts->name, G, idx, k);
  }
  const size_t hw = nn_bert_n_params(c->m);
  size_t k = spread(hw, (size_t)C * D, idx);
  check_entries(c, "head_w", G, idx, k);
  k = spread(hw + (size_t)C * D, C, idx);
  check_entries(c, "head_b", G, idx, k);
  free(G);
}

/* With dropout off, the training forward is the inference forward. */
static void test_same_as_inference(ctx *c) {
  finch_err err = {0};
  nn_bert_work *iw = NULL;
  CHECK_INT_EQ(nn_bert_work_init(&iw, c->m, B, T, NULL, &err), FINCH_OK);
  CHECK_INT_EQ(nn_bert_forward(c->m, iw, c->ids, c->mask, B, T, &err), FINCH_OK);
  float pa[B * TINY_D], pb[B * TINY_D];
  nn_bert_pooled_host(iw, pa);
  memcpy(c->P, nn_bert_params(c->m), nn_bert_n_params(c->m) * sizeof(float));
  c->ph = c->pa = 0.0f;
  loss(c, NULL);
  memcpy(pb, nn_bert_train_pooled(c->w), sizeof pb);
  CHECK(memcmp(pa, pb, sizeof pa) == 0);
  nn_bert_work_free(iw);
}

int main(void) {
  nn_rng_seed(&rng_g, 7, 3);
  ctx c = {.m = tiny_bert(11), .seed = 99};
  finch_err err = {0};
  const size_t np = nn_bert_train_n_params(c.m, C), ne = nn_bert_n_params(c.m);
  c.P = malloc(np * sizeof *c.P);
  memcpy(c.P, nn_bert_params(c.m), ne * sizeof(float));
  for (size_t i = ne; i < np; i++) c.P[i] = 0.5f * nn_rng_normal(&rng_g);
  for (int b = 0; b < B; b++) {
    c.y[b] = (int32_t)nn_rng_below(&rng_g, C);
    for (int t = 0; t < T; t++) {
      c.mask[b * T + t] = t < lens[b];
      c.ids[b * T + t] = t < lens[b] ? 1 + (int32_t)nn_rng_below(&rng_g, TINY_V - 1) : 0;
    }
  }
  CHECK_INT_EQ(nn_bert_train_work_init(&c.w, c.m, C, B, T, NULL, &err), FINCH_OK);
  if (!c.w) return 1;
  test_same_as_inference(&c);
  c.ph = c.pa = 0.0f;
  run(&c, "dropout off");
  c.ph = c.pa = 0.2f;
  run(&c, "dropout 0.2 (hidden) and 0.2 (attention), the same masks every forward");
  printf("largest err over all tensors: %.3g\n", worst_all);
  /* A forward that must refuse its batch. */
  uint8_t bad[B * T];
  memcpy(bad, c.mask, sizeof bad);
  bad[T] = 0;
  nn_rng r;
  nn_rng_seed(&r, 1, 1);
  CHECK_INT_EQ(nn_bert_train_forward(c.m, c.w, c.P, c.ids, bad, B, T, 0, 0, &r, &err), FINCH_EINVAL);
  CHECK_CONTAINS(err.msg, "row 1");
  CHECK_INT_EQ(nn_bert_train_forward(c.m, c.w, c.P, c.ids, c.mask, B, T, 0.1f, 0, NULL, &err), FINCH_EINVAL);
  nn_bert_train_work_free(c.w);
  nn_bert_free(c.m);
  free(c.P);
  TEST_DONE();
}
