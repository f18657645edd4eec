/* The transformer's analytic gradients against central finite differences in
 * float32: every layer of nn/tfm_ops.h and the losses on its own, then a whole
 * 2-layer model under a loss that mixes classification CE, MLM CE, hidden- and
 * pooled-state MSE through projections and an attention KL, for every tensor;
 * and the model with head gates, with a sparsity penalty on the gates added.
 * Also: padded positions do not change real positions' outputs.
 *
 * Metric: err = |analytic - numeric| / max(|analytic| + |numeric|, FLOOR) per
 * sampled entry (up to 20 per tensor). Central differences with step H on
 * entries of order 0.1..1; the loss is accumulated in double. A tensor passes
 * when its largest err is at most TOL_MAX (5e-2) and the 90th percentile of
 * its errs at most TOL_P90 (1e-2): float32 rounding makes the numeric value of
 * a gradient near 1e-4 uncertain by a few percent, while a wrong gradient is
 * off by far more, on most entries. */
#include "nn/layers.h"
#include "nn/loss.h"
#include "nn/tfm.h"
#include "nn/tfm_ops.h"

#include "tests/test.h"

#define H 1e-2f
#define FLOOR 1e-3
#define TOL_MAX 5e-2
#define TOL_P90 1e-2
#define SAMPLES 20

static nn_rng rng_g;

static void fill(float *x, size_t n, float sd) {
  for (size_t i = 0; i < n; i++) x[i] = sd * nn_rng_normal(&rng_g);
}

static float *randn(size_t n, float sd) {
  float *x = malloc((n ? n : 1) * sizeof *x);
  fill(x, n, sd);
  return x;
}

static float *zeros(size_t n) { return calloc(n ? n : 1, sizeof(float)); }

static double dot(const float *a, const float *b, size_t n) {
  double s = 0.0;
  for (size_t i = 0; i < n; i++) s += (double)a[i] * b[i];
  return s;
}

typedef double (*loss_fn)(void *ctx);

static int cmp_double(const void *a, const void *b) {
  double x = *(const double *)a, y = *(const double *)b;
  return x < y ? -1 : x > y;
}

/* Compares ana (n) with central differences of f over x (n), on up to
 * SAMPLES entries (all when n is small). Fails when the largest err exceeds
 * TOL_MAX or the 90th percentile exceeds TOL_P90. Returns the largest err. */
static double check_tensor(const char *what, float *x, const float *ana, size_t n, loss_fn f, void *ctx) {
  double worst = 0.0, errs[SAMPLES + 1];
  size_t worst_i = 0, n_err = 0;
  double worst_a = 0, worst_n = 0;
  size_t step = n > SAMPLES ? n / SAMPLES : 1;
  size_t start = n > SAMPLES ? (size_t)nn_rng_below(&rng_g, step) : 0;
  for (size_t i = start; i < n; i += step) {
    float keep = x[i];
    x[i] = keep + H;
    double up = f(ctx);
    x[i] = keep - H;
    double down = f(ctx);
    x[i] = keep;
    double num = (up - down) / (2.0 * (double)H);
    double den = fabs(ana[i]) + fabs(num);
    double err = fabs(ana[i] - num) / (den > FLOOR ? den : FLOOR);
    if (n_err < SAMPLES + 1) errs[n_err++] = err;
    if (err > worst || err != err) worst = err, worst_i = i, worst_a = ana[i], worst_n = num;
  }
  qsort(errs, n_err, sizeof *errs, cmp_double);
  double p90 = n_err ? errs[(size_t)(0.9 * (double)(n_err - 1))] : 0.0;
  if (!(worst <= TOL_MAX) || !(p90 <= TOL_P90))
    TEST_FAIL_("%s: entry %zu analytic %.6g numeric %.6g (err %.3g, limit %g; p90 %.3g, limit %g)", what,
               worst_i, worst_a, worst_n, worst, TOL_MAX, p90, TOL_P90);
  if (getenv("TFM_GRAD_VERBOSE")) printf("%-24s max err %.2e  p90 %.2e\n", what, worst, p90);
  return worst;
}

/* ---- layer norm --------------------------------------------------------- */

typedef struct {
  int N, D;
  float *x, *g, *b, *r, *out, *mu, *rs;
} ln_ctx;

static double ln_loss(void *p) {
  ln_ctx *c = p;
  nn_layernorm_forward(c->x, c->g, c->b, c->N, c->D, c->out, c->mu, c->rs);
  return dot(c->out, c->r, (size_t)c->N * c->D);
}

static void test_layernorm(void) {
  ln_ctx c = {.N = 4, .D = 10};
  size_t n = (size_t)c.N * c.D;
  c.x = randn(n, 1.0f), c.g = randn(c.D, 1.0f), c.b = randn(c.D, 1.0f), c.r = randn(n, 1.0f);
  c.out = zeros(n), c.mu = zeros(c.N), c.rs = zeros(c.N);
  float *dx = zeros(n), *dg = zeros(c.D), *db = zeros(c.D);
  ln_loss(&c);
  nn_layernorm_backward(c.r, c.x, c.g, c.mu, c.rs, c.N, c.D, dx, dg, db);
  check_tensor("layernorm dx", c.x, dx, n, ln_loss, &c);
  check_tensor("layernorm dg", c.g, dg, c.D, ln_loss, &c);
  check_tensor("layernorm db", c.b, db, c.D, ln_loss, &c);
  free(c.x), free(c.g), free(c.b), free(c.r), free(c.out), free(c.mu), free(c.rs);
  free(dx), free(dg), free(db);
}

/* ---- attention with a padding mask ------------------------------------- */

typedef struct {
  int B, T, Hh, Dh;
  uint8_t *mask;
  float *qkv, *att, *ctx, *r_ctx, *r_att;
} att_ctx;

static double att_loss(void *p) {
  att_ctx *c = p;
  nn_attention_forward(nn_backend_cpu(), c->qkv, c->mask, c->B, c->T, c->Hh, c->Dh, c->att, c->ctx);
  size_t nc = (size_t)c->B * c->Hh * c->T * c->Dh, na = (size_t)c->B * c->Hh * c->T * c->T;
  return dot(c->ctx, c->r_ctx, nc) + dot(c->att, c->r_att, na);
}

static void test_attention(void) {
  att_ctx c = {.B = 3, .T = 5, .Hh = 2, .Dh = 4};
  uint8_t mask[15] = {1, 1, 1, 1, 1, /**/ 1, 1, 1, 0, 0, /**/ 1, 0, 0, 0, 0};
  c.mask = mask;
  size_t nq = 3 * (size_t)c.B * c.Hh * c.T * c.Dh, nc = nq / 3, na = (size_t)c.B * c.Hh * c.T * c.T;
  c.qkv = randn(nq, 1.0f), c.att = zeros(na), c.ctx = zeros(nc);
  c.r_ctx = randn(nc, 1.0f), c.r_att = randn(na, 1.0f);
  float *dqkv = zeros(nq), *scratch = zeros((size_t)c.T * c.T);
  att_loss(&c);
  /* Padded keys get probability exactly 0; each row sums to 1. */
  for (int b = 0; b < c.B; b++)
    for (int h = 0; h < c.Hh; h++)
      for (int i = 0; i < c.T; i++) {
        const float *row = c.att + (((size_t)b * c.Hh + h) * c.T + i) * c.T;
        double s = 0;
        for (int j = 0; j < c.T; j++) {
          if (!mask[b * c.T + j]) CHECK(row[j] == 0.0f);
          s += row[j];
        }
        CHECK_NEAR(s, 1.0, 1e-6);
      }
  nn_attention_backward(nn_backend_cpu(), c.r_ctx, c.r_att, c.qkv, c.att, c.B, c.T, c.Hh, c.Dh, dqkv, scratch);
  check_tensor("attention dq", c.qkv, dqkv, nc, att_loss, &c);
  check_tensor("attention dk", c.qkv + nc, dqkv + nc, nc, att_loss, &c);
  check_tensor("attention dv", c.qkv + 2 * nc, dqkv + 2 * nc, nc, att_loss, &c);
  /* Keys and values at padded positions get no gradient. */
  double padded = 0;
  for (int b = 0; b < c.B; b++)
    for (int h = 0; h < c.Hh; h++)
      for (int t = 0; t < c.T; t++)
        if (!mask[b * c.T + t])
          for (int d = 0; d < c.Dh; d++) {
            size_t i = (((size_t)b * c.Hh + h) * c.T + t) * c.Dh + d;
            padded = fmax(padded, fabs(dqkv[nc + i]) + fabs(dqkv[2 * nc + i]));
          }
  CHECK(padded == 0.0);
  free(c.qkv), free(c.att), free(c.ctx), free(c.r_ctx), free(c.r_att), free(dqkv), free(scratch);
}

/* ---- head gates -------------------------------------------------------- */

typedef struct {
  int B, T, D, Hh;
  float *x, *g, *r, *out;
} gate_ctx;

static double gate_loss(void *p) {
  gate_ctx *c = p;
  nn_head_gate_forward(c->x, c->g, c->B, c->T, c->D, c->Hh, c->out);
  return dot(c->out, c->r, (size_t)c->B * c->T * c->D);
}

static void test_head_gate(void) {
  gate_ctx c = {.B = 2, .T = 3, .D = 6, .Hh = 3};
  size_t n = 2 * 3 * 6, nb = 2 * 3;
  c.x = randn(n, 1.0f), c.g = randn(nb, 1.0f), c.r = randn(n, 1.0f), c.out = zeros(n);
  float *dx = zeros(n), *dg = zeros(nb), *dout = zeros(n);
  memcpy(dout, c.r, n * sizeof *dout);
  nn_head_gate_backward(dout, c.x, c.g, c.B, c.T, c.D, c.Hh, dout, dg); /* in place, as the encoder does */
  memcpy(dx, dout, n * sizeof *dx);
  check_tensor("head gate dx", c.x, dx, n, gate_loss, &c);
  check_tensor("head gate dg", c.g, dg, nb, gate_loss, &c);
  gate_loss(&c);
  CHECK_NEAR(c.out[1 * 18 + 2 * 6 + 5], c.g[1 * 3 + 2] * c.x[1 * 18 + 2 * 6 + 5], 1e-7); /* (b1,t2) head 2 */
  free(c.x), free(c.g), free(c.r), free(c.out), free(dx), free(dg), free(dout);
}

/* ---- GELU -------------------------------------------------------------- */

typedef struct {
  size_t n;
  int fast;
  float *x, *r, *out;
} gelu_ctx;

static double gelu_loss(void *p) {
  gelu_ctx *c = p;
  if (c->fast) nn_gelu_fast_forward(c->x, c->out, c->n);
  else nn_gelu_forward(c->x, c->out, c->n);
  return dot(c->out, c->r, c->n);
}

/* The reference (erff) GELU and the vectorised one the encoder uses, each
 * against finite differences, then the fast one against the reference on a
 * grid over [-12, 12]: |fast - ref| <= 1e-6 max(1, |x|), values and slopes. */
static void test_gelu(void) {
  for (int fast = 0; fast <= 1; fast++) {
    gelu_ctx c = {.n = 40, .fast = fast};
    c.x = randn(c.n, 2.0f), c.r = randn(c.n, 1.0f), c.out = zeros(c.n);
    float *dx = zeros(c.n);
    if (fast) nn_gelu_fast_backward(c.x, c.r, dx, c.n);
    else nn_gelu_backward(c.x, c.r, dx, c.n);
    check_tensor(fast ? "gelu (fast) dx" : "gelu dx", c.x, dx, c.n, gelu_loss, &c);
    free(c.x), free(c.r), free(c.out), free(dx);
  }
  enum { NG = 24001 };
  float *x = malloc(NG * sizeof *x), *one = malloc(NG * sizeof *one), *ref = malloc(NG * sizeof *ref),
        *fst = malloc(NG * sizeof *fst), *dref = malloc(NG * sizeof *dref), *dfst = malloc(NG * sizeof *dfst);
  for (int i = 0; i < NG; i++) x[i] = -12.0f + 1e-3f * (float)i, one[i] = 1.0f;
  nn_gelu_forward(x, ref, NG);
  nn_gelu_fast_forward(x, fst, NG);
  nn_gelu_backward(x, one, dref, NG);
  nn_gelu_fast_backward(x, one, dfst, NG);
  double worst = 0, worst_d = 0;
  for (int i = 0; i < NG; i++) {
    double s = fmax(1.0, fabs(x[i]));
    worst = fmax(worst, fabs(fst[i] - ref[i]) / s);
    worst_d = fmax(worst_d, fabs(dfst[i] - dref[i]) / s);
  }
  CHECK_NEAR(worst, 0.0, 1e-6);
  CHECK_NEAR(worst_d, 0.0, 1e-6);
  free(x), free(one), free(ref), free(fst), free(dref), free(dfst);
}

/* ---- embeddings with n-gram means ---------------------------------------- */

typedef struct {
  int B, T, D;
  int32_t *ids;
  size_t *offs;
  uint32_t *ng;
  float *tok, *pos, *ngemb, *r, *out;
} emb_ctx;

static double emb_loss(void *p) {
  emb_ctx *c = p;
  nn_tok_embed_forward(c->tok, c->pos, c->ngemb, c->D, c->ids, c->offs, c->ng, c->B, c->T, c->out);
  return dot(c->out, c->r, (size_t)c->B * c->T * c->D);
}

static void test_embed(void) {
  emb_ctx c = {.B = 2, .T = 3, .D = 4};
  int32_t ids[6] = {1, 4, 4, 0, 2, 3};
  /* n-gram rows per token: 2, 0, 3, 1, 0, 2 (row 5 repeats within a token) */
  size_t offs[7] = {0, 2, 2, 5, 6, 6, 8};
  uint32_t ng[8] = {0, 3, 5, 5, 1, 3, 2, 6};
  c.ids = ids, c.offs = offs, c.ng = ng;
  size_t n = 6 * 4;
  c.tok = randn(5 * 4, 1.0f), c.pos = randn(3 * 4, 1.0f), c.ngemb = randn(7 * 4, 1.0f);
  c.r = randn(n, 1.0f), c.out = zeros(n);
  float *dtok = zeros(5 * 4), *dpos = zeros(3 * 4), *dng = zeros(7 * 4);
  nn_tok_embed_backward(c.r, c.D, ids, offs, ng, c.B, c.T, dtok, dpos, dng);
  check_tensor("embed dtok", c.tok, dtok, 5 * 4, emb_loss, &c);
  check_tensor("embed dpos", c.pos, dpos, 3 * 4, emb_loss, &c);
  check_tensor("embed dng", c.ngemb, dng, 7 * 4, emb_loss, &c);
  /* A token's n-gram term is the mean of its rows: token (1,0) has row 3 only. */
  emb_loss(&c);
  for (int d = 0; d < 4; d++) CHECK_NEAR(c.out[3 * 4 + d], c.tok[0 * 4 + d] + c.pos[0 * 4 + d] + c.ngemb[3 * 4 + d], 1e-6);
  free(c.tok), free(c.pos), free(c.ngemb), free(c.r), free(c.out), free(dtok), free(dpos), free(dng);
}

/* ---- pooling ----------------------------------------------------------- */

typedef struct {
  int B, T, D, cls;
  uint8_t *mask;
  float *h, *r, *out;
} pool_ctx;

static double pool_loss(void *p) {
  pool_ctx *c = p;
  if (c->cls) nn_pool_cls_forward(c->h, c->B, c->T, c->D, c->out);
  else nn_pool_mean_forward(c->h, c->mask, c->B, c->T, c->D, c->out);
  return dot(c->out, c->r, (size_t)c->B * c->D);
}

static void test_pool(int cls) {
  uint8_t mask[8] = {1, 1, 1, 0, 1, 0, 0, 0};
  pool_ctx c = {.B = 2, .T = 4, .D = 3, .cls = cls, .mask = mask};
  size_t n = 2 * 4 * 3;
  c.h = randn(n, 1.0f), c.r = randn(6, 1.0f), c.out = zeros(6);
  float *dh = zeros(n);
  if (cls) nn_pool_cls_backward(c.r, c.B, c.T, c.D, dh);
  else nn_pool_mean_backward(c.r, mask, c.B, c.T, c.D, dh);
  check_tensor(cls ? "cls pool dh" : "mean pool dh", c.h, dh, n, pool_loss, &c);
  if (!cls) {
    pool_loss(&c);
    CHECK_NEAR(c.out[3], c.h[12], 1e-7); /* row 1 has one real position */
    CHECK(dh[3 * 3] == 0.0f && dh[4 * 3 + 3] == 0.0f); /* padded positions get nothing */
  }
  free(c.h), free(c.r), free(c.out), free(dh);
}

/* ---- MSE through a projection ------------------------------------------ */

typedef struct {
  int N, Ds, Dt;
  uint8_t *mask;
  float *hs, *W, *bias, *ht, *pred;
} mse_ctx;

static double mse_loss(void *p) {
  mse_ctx *c = p;
  return nn_mse_proj_forward(nn_backend_cpu(), c->hs, c->W, c->bias, c->ht, c->mask, c->N, c->Ds, c->Dt, c->pred);
}

static void test_mse_proj(void) {
  uint8_t mask[5] = {1, 0, 1, 1, 0};
  mse_ctx c = {.N = 5, .Ds = 4, .Dt = 6, .mask = mask};
  c.hs = randn(20, 1.0f), c.W = randn(24, 0.5f), c.bias = randn(6, 0.5f), c.ht = randn(30, 1.0f);
  c.pred = zeros(30);
  float *dhs = zeros(20), *dW = zeros(24), *db = zeros(6);
  mse_loss(&c);
  nn_mse_proj_backward(nn_backend_cpu(), c.hs, c.W, c.ht, mask, c.N, c.Ds, c.Dt, 1.0f, c.pred, dhs, dW, db);
  check_tensor("mse_proj dhs", c.hs, dhs, 20, mse_loss, &c);
  check_tensor("mse_proj dW", c.W, dW, 24, mse_loss, &c);
  check_tensor("mse_proj dbias", c.bias, db, 6, mse_loss, &c);
  for (int d = 0; d < 4; d++) CHECK(dhs[4 + d] == 0.0f); /* masked row */
  free(c.hs), free(c.W), free(c.bias), free(c.ht), free(c.pred), free(dhs), free(dW), free(db);
}

/* ---- attention KL ------------------------------------------------------ */

typedef struct {
  int B, Hh, T;
  uint8_t *mask;
  float *pt, *ps;
} akl_ctx;

static double akl_loss(void *p) {
  akl_ctx *c = p;
  return nn_attn_kl_forward(c->pt, c->ps, c->mask, c->B, c->Hh, c->T);
}

/* Random distributions over each row's real keys, zero on padded keys. */
static void random_attn(float *a, const uint8_t *mask, int B, int Hh, int T) {
  for (int b = 0; b < B; b++)
    for (int h = 0; h < Hh; h++)
      for (int i = 0; i < T; i++) {
        float *row = a + (((size_t)b * Hh + h) * T + i) * T;
        float s = 0;
        for (int j = 0; j < T; j++) s += row[j] = mask[b * T + j] ? 0.2f + nn_rng_uniform(&rng_g) : 0.0f;
        for (int j = 0; j < T; j++) row[j] /= s;
      }
}

static void test_attn_kl(void) {
  uint8_t mask[8] = {1, 1, 1, 1, 1, 1, 0, 0};
  akl_ctx c = {.B = 2, .Hh = 2, .T = 4, .mask = mask};
  size_t n = 2 * 2 * 4 * 4;
  c.pt = zeros(n), c.ps = zeros(n);
  random_attn(c.pt, mask, 2, 2, 4);
  random_attn(c.ps, mask, 2, 2, 4);
  float *dps = zeros(n);
  nn_attn_kl_backward(c.pt, c.ps, mask, c.B, c.Hh, c.T, 1.0f, dps);
  check_tensor("attn_kl dps", c.ps, dps, n, akl_loss, &c);
  CHECK_NEAR(nn_attn_kl_forward(c.pt, c.pt, mask, 2, 2, 4), 0.0, 1e-7);
  CHECK(akl_loss(&c) > 0.0);
  free(c.pt), free(c.ps), free(dps);
}

/* ---- CE with label smoothing, tau^2 KL ---------------------------------- */

typedef struct {
  int B, C, kl;
  int32_t *y;
  float *z, *pt, *probs, *loss;
} ce_ctx;

static double ce_loss(void *p) {
  ce_ctx *c = p;
  if (c->kl) nn_kl_tau_forward(c->z, c->pt, c->B, c->C, 2.0f, c->probs, c->loss);
  else nn_xent_ls_forward(c->z, c->y, c->B, c->C, 0.1f, c->probs, c->loss);
  double s = 0;
  for (int b = 0; b < c->B; b++) s += c->loss[b];
  return s / c->B;
}

static void test_ce(int kl) {
  int32_t y[3] = {0, 4, 2};
  ce_ctx c = {.B = 3, .C = 5, .kl = kl, .y = y};
  c.z = randn(15, 2.0f), c.pt = zeros(15), c.probs = zeros(15), c.loss = zeros(3);
  for (int b = 0; b < 3; b++) nn_softmax(c.z + b * 5, c.pt + b * 5, 5, 0.7f); /* any distribution */
  fill(c.z, 15, 2.0f);
  float *dz = zeros(15);
  ce_loss(&c);
  if (kl) nn_kl_tau_backward(c.probs, c.pt, 3, 5, 2.0f, 1.0f / 3.0f, dz);
  else nn_xent_ls_backward(c.probs, y, 3, 5, 0.1f, 1.0f / 3.0f, dz);
  check_tensor(kl ? "tau^2 KL dz" : "CE label smoothing dz", c.z, dz, 15, ce_loss, &c);
  free(c.z), free(c.pt), free(c.probs), free(c.loss), free(dz);
}

/* ---- the whole model --------------------------------------------------- */

enum { MB = 3, MT = 6, MP = 4, DT = 10, DTP = 7 };

typedef struct {
  nn_tfm *m;
  nn_tfm_work *w;
  nn_tfm_batch b;
  int32_t y[MB];
  int32_t mpos[MP], my[MP];
  uint8_t mask[MB * MT];
  /* teacher targets and the student-side projections */
  float *ht, *Wh, *bh;   /* (MB*MT,DT); (DT,D); (DT) hidden(1) matching */
  float *pt, *Wp;        /* pooled matching: (MB,DTP); (DTP,D), no bias */
  float *att_t;          /* (MB,Hh,MT,MT) teacher attention for layer 1 */
  float *pred, *predp;   /* scratch */
  float probs[MB * 5], rowloss[MB], mprobs[MP * 20], mloss[MP];
} model_ctx;

/* The combined loss of the last forward; with grads non-NULL also fills the
 * gradient inputs, runs the backward and the projections' backward, adding
 * into grads (n_params), dWh, dbh and dWp. */
static double model_loss_grad(model_ctx *c, float *grads, float *dWh, float *dbh, float *dWp) {
  nn_backend *be = nn_backend_cpu();
  const nn_tfm_config *cfg = nn_tfm_get_config(c->m);
  const int D = (int)cfg->dim, Hh = (int)cfg->heads, C = (int)cfg->n_labels, V = (int)cfg->vocab;
  nn_tfm_forward(c->m, c->w, &c->b, 0, NULL);
  double total = 0;
  nn_xent_ls_forward(nn_tfm_logits(c->w), c->y, MB, C, 0.1f, c->probs, c->rowloss);
  for (int b = 0; b < MB; b++) total += c->rowloss[b] / MB;
  const float *ml = nn_tfm_mlm_forward(c->m, c->w, c->mpos, MP);
  CHECK(ml != NULL);
  nn_xent_ls_forward(ml, c->my, MP, V, 0.0f, c->mprobs, c->mloss);
  for (int p = 0; p < MP; p++) total += 0.5 * c->mloss[p] / MP;
  total += 0.8 * nn_mse_proj_forward(be, nn_tfm_hidden(c->w, 1), c->Wh, c->bh, c->ht, c->mask, MB * MT, D, DT, c->pred);
  total += 0.6 * nn_mse_proj_forward(be, nn_tfm_pooled(c->w), c->Wp, NULL, c->pt, NULL, MB, D, DTP, c->predp);
  total += 0.7 * nn_attn_kl_forward(c->att_t, nn_tfm_attn(c->w, 1), c->mask, MB, Hh, MT);
  /* With head gates, a sparsity penalty 0.4 sum(g) over layers, rows, heads. */
  for (int l = 0; cfg->head_gates && l < (int)cfg->layers; l++)
    for (int i = 0; i < MB * Hh; i++) total += 0.4 * nn_tfm_gates(c->w, l)[i];
  if (!grads) return total;
  for (int l = 0; cfg->head_gates && l < (int)cfg->layers; l++)
    for (int i = 0; i < MB * Hh; i++) nn_tfm_dgates(c->w, l)[i] += 0.4f;
  nn_xent_ls_backward(c->probs, c->y, MB, C, 0.1f, 1.0f / MB, nn_tfm_dlogits(c->w));
  nn_xent_ls_backward(c->mprobs, c->my, MP, V, 0.0f, 0.5f / MP, nn_tfm_dmlm(c->w));
  nn_mse_proj_backward(be, nn_tfm_hidden(c->w, 1), c->Wh, c->ht, c->mask, MB * MT, D, DT, 0.8f, c->pred,
                       nn_tfm_dhidden(c->w, 1), dWh, dbh);
  nn_mse_proj_backward(be, nn_tfm_pooled(c->w), c->Wp, c->pt, NULL, MB, D, DTP, 0.6f, c->predp,
                       nn_tfm_dpooled(c->w), dWp, NULL);
  nn_attn_kl_backward(c->att_t, nn_tfm_attn(c->w, 1), c->mask, MB, Hh, MT, 0.7f, nn_tfm_dattn(c->w, 1));
  nn_tfm_backward(c->m, c->w, &c->b, grads);
  return total;
}

static double model_loss(void *p) { return model_loss_grad(p, NULL, NULL, NULL, NULL); }

static void test_model(uint32_t pool, uint32_t gates) {
  finch_err err = {0};
  nn_tfm_config cfg = {.vocab = 20, .buckets = 16, .max_len = 8, .dim = 8, .layers = 2, .heads = 2, .ff = 16,
                       .n_labels = 5, .pool = pool, .dropout = 0.0f, .head_gates = gates};
  model_ctx c = {0};
  CHECK_INT_EQ(nn_tfm_create(&c.m, &cfg, 3, &err), FINCH_OK);
  CHECK_INT_EQ(nn_tfm_work_init(&c.w, c.m, 4, &err), FINCH_OK);
  if (!c.m || !c.w) return;
  /* Weights of order 0.3 instead of 0.02, so every path carries a gradient
   * well above float noise; gains and shifts around 1 and 0. */
  float *params = nn_tfm_params(c.m);
  for (size_t i = 0; i < nn_tfm_n_tensors(c.m); i++) {
    const nn_tfm_tensor *t = nn_tfm_tensor_at(c.m, i);
    size_t n = (size_t)t->rows * t->cols;
    size_t len = strlen(t->name);
    int gain = len > 2 && strcmp(t->name + len - 2, "_g") == 0;
    for (size_t k = 0; k < n; k++) params[t->off + k] = (gain ? 1.0f : 0.0f) + 0.3f * nn_rng_normal(&rng_g);
  }
  int32_t ids[MB * MT];
  static const int lens[MB] = {6, 4, 2};
  for (int b = 0; b < MB; b++)
    for (int t = 0; t < MT; t++) {
      ids[b * MT + t] = (int32_t)nn_rng_below(&rng_g, 20);
      c.mask[b * MT + t] = t < lens[b];
    }
  size_t offs[MB * MT + 1];
  uint32_t ng[64];
  size_t k = 0;
  for (int i = 0; i < MB * MT; i++) {
    offs[i] = k;
    int nr = c.mask[i] ? (i % 3) : 1; /* 0..2 rows on real tokens; padded ones have rows too */
    for (int r = 0; r < nr; r++) ng[k++] = (uint32_t)nn_rng_below(&rng_g, 16);
  }
  offs[MB * MT] = k;
  c.b = (nn_tfm_batch){.B = MB, .T = MT, .ids = ids, .mask = c.mask, .ng_offs = offs, .ng_ids = ng};
  c.y[0] = 1, c.y[1] = 4, c.y[2] = 0;
  c.mpos[0] = 2, c.mpos[1] = 0 * MT + 5, c.mpos[2] = 1 * MT + 1, c.mpos[3] = 2 * MT + 0;
  c.my[0] = 3, c.my[1] = 19, c.my[2] = 0, c.my[3] = 7;
  const int D = 8, Hh = 2, N = MB * MT;
  c.ht = randn((size_t)N * DT, 1.0f), c.Wh = randn(DT * D, 0.3f), c.bh = randn(DT, 0.3f);
  c.pt = randn(MB * DTP, 1.0f), c.Wp = randn(DTP * D, 0.3f);
  c.att_t = zeros((size_t)MB * Hh * MT * MT);
  random_attn(c.att_t, c.mask, MB, Hh, MT);
  c.pred = zeros((size_t)N * DT), c.predp = zeros(MB * DTP);

  size_t np = nn_tfm_n_params(c.m);
  float *grads = zeros(np), *dWh = zeros(DT * D), *dbh = zeros(DT), *dWp = zeros(DTP * D);
  model_loss_grad(&c, grads, dWh, dbh, dWp);

  /* The touched n-gram rows are the distinct rows of the batch, first touch first. */
  size_t nt = 0;
  const uint32_t *touched = nn_tfm_touched_ngrams(c.w, &nt);
  size_t distinct = 0;
  for (size_t i = 0; i < k; i++) {
    int seen = 0;
    for (size_t j = 0; j < i; j++) seen |= ng[j] == ng[i];
    if (!seen) CHECK(distinct < nt && touched[distinct++] == ng[i]);
  }
  CHECK_INT_EQ(nt, distinct);

  char what[64];
  for (size_t i = 0; i < nn_tfm_n_tensors(c.m); i++) {
    const nn_tfm_tensor *t = nn_tfm_tensor_at(c.m, i);
    size_t n = (size_t)t->rows * t->cols;
    snprintf(what, sizeof what, "pool %u%s %s", pool, gates ? " gates" : "", t->name);
    size_t len = strlen(t->name);
    if (len > 5 && strcmp(t->name + len - 5, ".bqkv") == 0) {
      /* The key bias adds q.bk to a whole row of scores, which the softmax
       * ignores: its gradient is exactly 0, and finite differences of it
       * are float noise, so it is checked for being ~0 and q, v as usual. */
      char part[80];
      snprintf(part, sizeof part, "%s (q)", what);
      check_tensor(part, params + t->off, grads + t->off, (size_t)D, model_loss, &c);
      snprintf(part, sizeof part, "%s (v)", what);
      check_tensor(part, params + t->off + 2 * D, grads + t->off + 2 * D, (size_t)D, model_loss, &c);
      for (int j = D; j < 2 * D; j++)
        if (!(fabs(grads[t->off + j]) < 1e-6))
          TEST_FAIL_("%s: key bias %d has gradient %g", what, j - D, grads[t->off + j]);
    } else {
      check_tensor(what, params + t->off, grads + t->off, n, model_loss, &c);
    }
    /* Every tensor carries some gradient (no path is silently cut). */
    double gmax = 0;
    for (size_t j = 0; j < n; j++) gmax = fmax(gmax, fabs(grads[t->off + j]));
    if (n && !(gmax > 1e-4)) TEST_FAIL_("%s: gradient is all zero", what);
  }
  check_tensor("proj Wh", c.Wh, dWh, DT * D, model_loss, &c);
  check_tensor("proj bh", c.bh, dbh, DT, model_loss, &c);
  check_tensor("proj Wp", c.Wp, dWp, DTP * D, model_loss, &c);

  /* Padding: other ids and n-gram rows at padded positions leave logits, real
   * positions' hidden states and real queries' attention unchanged. */
  nn_tfm_forward(c.m, c.w, &c.b, 0, NULL);
  float logits[MB * 5], hid[3][MB * MT * 8], att[2][MB * 2 * MT * MT];
  memcpy(logits, nn_tfm_logits(c.w), sizeof logits);
  for (int l = 0; l <= 2; l++) memcpy(hid[l], nn_tfm_hidden(c.w, l), sizeof hid[l]);
  for (int l = 0; l < 2; l++) memcpy(att[l], nn_tfm_attn(c.w, l), sizeof att[l]);
  for (int i = 0; i < N; i++)
    if (!c.mask[i]) ids[i] = (ids[i] + 7) % 20;
  for (int i = 0; i < N; i++)
    if (!c.mask[i])
      for (size_t r = offs[i]; r < offs[i + 1]; r++) ng[r] = (ng[r] + 5) % 16;
  nn_tfm_forward(c.m, c.w, &c.b, 0, NULL);
  CHECK(memcmp(logits, nn_tfm_logits(c.w), sizeof logits) == 0);
  int same = 1;
  for (int l = 0; l <= 2; l++)
    for (int i = 0; i < N; i++)
      if (c.mask[i]) same &= memcmp(hid[l] + i * 8, nn_tfm_hidden(c.w, l) + i * 8, 8 * sizeof(float)) == 0;
  for (int l = 0; l < 2; l++)
    for (int b = 0; b < MB; b++)
      for (int h = 0; h < Hh; h++)
        for (int q = 0; q < MT; q++)
          if (c.mask[b * MT + q]) {
            size_t o = (((size_t)b * Hh + h) * MT + q) * MT;
            same &= memcmp(att[l] + o, nn_tfm_attn(c.w, l) + o, MT * sizeof(float)) == 0;
          }
  CHECK(same);
  /* ... and a real position's id does change the logits (the check can fail). */
  ids[0] = (ids[0] + 1) % 20;
  nn_tfm_forward(c.m, c.w, &c.b, 0, NULL);
  CHECK(memcmp(logits, nn_tfm_logits(c.w), sizeof logits) != 0);

  free(grads), free(dWh), free(dbh), free(dWp);
  free(c.ht), free(c.Wh), free(c.bh), free(c.pt), free(c.Wp), free(c.att_t), free(c.pred), free(c.predp);
  nn_tfm_work_free(c.w);
  nn_tfm_free(c.m);
}

/* The tensor table: the documented order, names and decay flags; a bad
 * config is refused naming the field. */
static void test_table(void) {
  finch_err err = {0};
  nn_tfm_config cfg = {.vocab = 20, .buckets = 0, .max_len = 8, .dim = 8, .layers = 2, .heads = 2, .ff = 16,
                       .n_labels = 5, .pool = NN_POOL_MEAN};
  nn_tfm *m = NULL;
  CHECK_INT_EQ(nn_tfm_create(&m, &cfg, 1, &err), FINCH_OK);
  if (!m) return;
  static const char *order[] = {"tok_emb", "ng_emb", "pos_emb", "ln_emb_g", "ln_emb_b", "l0.wqkv", "l0.bqkv",
                                "l0.wo", "l0.bo", "l0.ln1_g", "l0.ln1_b", "l0.w1", "l0.b1", "l0.w2", "l0.b2",
                                "l0.ln2_g", "l0.ln2_b"};
  for (size_t i = 0; i < sizeof order / sizeof *order; i++) CHECK_STR_EQ(nn_tfm_tensor_at(m, i)->name, order[i]);
  CHECK_INT_EQ(nn_tfm_n_tensors(m), 10 + 12 * 2);
  CHECK_STR_EQ(nn_tfm_tensor_at(m, nn_tfm_n_tensors(m) - 1)->name, "mlm_b");
  CHECK_INT_EQ(nn_tfm_tensor_find(m, "ng_emb")->rows, 0);
  CHECK_INT_EQ(nn_tfm_tensor_find(m, "l1.wqkv")->rows, 24);
  CHECK_INT_EQ(nn_tfm_tensor_find(m, "l1.wqkv")->decay, 1);
  CHECK_INT_EQ(nn_tfm_tensor_find(m, "pos_emb")->decay, 0);
  CHECK(nn_tfm_tensor_find(m, "nope") == NULL);
  size_t sum = 0;
  for (size_t i = 0; i < nn_tfm_n_tensors(m); i++) {
    const nn_tfm_tensor *t = nn_tfm_tensor_at(m, i);
    CHECK_INT_EQ(t->off, sum);
    sum += (size_t)t->rows * t->cols;
  }
  CHECK_INT_EQ(sum, nn_tfm_n_params(m));
  CHECK(nn_tfm_params(m)[nn_tfm_tensor_find(m, "l0.ln1_g")->off] == 1.0f);
  CHECK(nn_tfm_params(m)[nn_tfm_tensor_find(m, "l0.bo")->off] == 0.0f);
  nn_tfm *copy = NULL;
  CHECK_INT_EQ(nn_tfm_create_from_params(&copy, &cfg, nn_tfm_params(m), nn_tfm_n_params(m), &err), FINCH_OK);
  if (copy) CHECK(memcmp(nn_tfm_params(copy), nn_tfm_params(m), nn_tfm_n_params(m) * sizeof(float)) == 0);
  nn_tfm_free(copy);
  CHECK_INT_EQ(nn_tfm_create_from_params(&copy, &cfg, nn_tfm_params(m), 3, &err), FINCH_EFORMAT);
  nn_tfm_free(m);
  cfg.heads = 3;
  CHECK_INT_EQ(nn_tfm_create(&m, &cfg, 1, &err), FINCH_EINVAL);
  CHECK_CONTAINS(err.msg, "heads");
  CHECK(m == NULL);
}

int main(void) {
  nn_rng_seed(&rng_g, 2024, 0);
  test_layernorm();
  test_attention();
  test_gelu();
  test_embed();
  test_pool(0);
  test_pool(1);
  test_mse_proj();
  test_attn_kl();
  test_ce(0);
  test_ce(1);
  test_table();
  test_model(NN_POOL_MEAN, 0);
  test_model(NN_POOL_CLS, 0);
  test_head_gate();
  test_model(NN_POOL_MEAN, 1);
  test_model(NN_POOL_CLS, 1);
  TEST_DONE();
}
