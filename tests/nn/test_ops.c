/* The op table (nn/ops.h): every op run through a backend's table on its own
 * memory (inputs uploaded, outputs downloaded) and compared with the CPU
 * table by normalised squared error, sum (x - y)^2 / sum y^2.
 *
 * On the CPU: the table's own wrappers (bias-less linear, partial backward,
 * strided GEMM) against the plain C references, and a second run of every op
 * bit-identical to the first. With a CUDA device: every op within 1e-8 of
 * the CPU in FP32 (GELU: the device computes the exact erf form, the CPU an
 * approximation within 1e-6), the GEMMs within 1e-4 in BF16, and one whole
 * AdamW step and gradient norm likewise. Without one the CUDA half is
 * skipped with the reason. */
#include "nn/ops.h"
#include "nn/rng.h"
#include "nn/tfm_ops.h"
#include "tests/test.h"

static nn_rng rng;

static float *randn(size_t n, float scale) {
  float *x = malloc((n ? n : 1) * sizeof *x);
  for (size_t i = 0; i < n; i++) x[i] = scale * nn_rng_normal(&rng);
  return x;
}

/* Backend copies of host arrays, and back. */
static void *up(nn_backend *be, const void *h, size_t bytes) {
  void *d = be->ops->alloc(be, bytes);
  if (d) be->ops->upload(be, d, h, bytes);
  return d;
}
static float *down(nn_backend *be, const float *d, size_t n) {
  float *h = malloc((n ? n : 1) * sizeof *h);
  be->ops->download(be, h, d, n * sizeof *h);
  return h;
}
#define UPF(be, h, n) ((float *)up(be, h, (n) * sizeof(float)))

/* Shapes: B rows of T positions (row 1 padded after 4, row 2 after 1), D
 * wide, Hh heads, C classes, V tokens, NB n-gram rows. */
enum { B = 3, T = 7, D = 16, Hh = 4, Dh = D / Hh, C = 5, V = 11, NB = 13, F = 24 };
static uint8_t mask[B * T];
static int32_t ids[B * T], ys[B];
static size_t ng_offs[B * T + 1];
static uint32_t ng_ids[B * T * 3];

static void make_batch(void) {
  size_t k = 0;
  for (int b = 0; b < B; b++)
    for (int t = 0; t < T; t++) {
      int i = b * T + t;
      mask[i] = b == 0 || (b == 1 && t < 4) || (b == 2 && t < 1);
      ids[i] = (int32_t)nn_rng_below(&rng, V);
      ng_offs[i] = k;
      int n = (int)nn_rng_below(&rng, 4); /* 0..3 n-gram rows */
      for (int j = 0; j < n; j++) ng_ids[k++] = (uint32_t)nn_rng_below(&rng, NB);
    }
  ng_offs[B * T] = k;
  for (int b = 0; b < B; b++) ys[b] = (int32_t)nn_rng_below(&rng, C);
}

/* The outputs of every op on one backend, downloaded; index by op below. */
enum {
  O_GEMM, O_GEMM_T, O_STRIDED, O_LIN, O_LIN_NOBIAS, O_LIN_DX, O_LIN_DW, O_LIN_DB, O_LN, O_LN_DX, O_LN_DG, O_LN_DB,
  O_GELU, O_GELU_D, O_MUL, O_ADD, O_ACC, O_COPY, O_EMB, O_EMB_DTOK, O_EMB_DPOS, O_EMB_DNG, O_SPLIT, O_MERGE, O_ATT, O_CTX,
  O_DQKV, O_POOLM, O_POOLM_D, O_POOLC, O_POOLC_D, O_XENT_P, O_XENT_L, O_XENT_D, O_KL_Q, O_KL_L, O_KL_D, O_ADAM_P,
  O_ADAM_M, O_ADAM_V, O_ROWS_P, O_ROWS_G, O_ROWS_V, O_LN_EPS, O_LN_EPS_DEF, O_COUNT
};
static const char *const onames[O_COUNT] = {
    "gemm", "gemm (transposed)", "gemm_strided", "linear", "linear (no bias)", "linear dinp", "linear dW",
    "linear db", "layernorm", "layernorm dinp", "layernorm dg", "layernorm db", "gelu", "gelu backward", "mul", "add",
    "acc", "copy", "tok_embed", "tok_embed dtok", "tok_embed dpos", "tok_embed dng", "heads_split", "heads_merge",
    "attention att", "attention ctx", "attention dqkv", "pool_mean", "pool_mean backward", "pool_cls",
    "pool_cls backward", "xent probs", "xent loss", "xent dlogits", "kl q", "kl loss", "kl dlogits", "adamw p",
    "adamw m", "adamw v", "adamw_rows p", "adamw_rows g", "adamw_rows v", "layernorm eps 1e-12",
    "layernorm eps default"};

typedef struct {
  float *v[O_COUNT];
  size_t n[O_COUNT];
  double sum_sq;
} outs;

/* Host inputs, drawn once. */
typedef struct {
  float *A, *Bm, *C0, *x, *W, *bias, *dout, *g, *lb, *w1, *mask_f, *tok, *pos, *ng, *qkv, *dctx, *datt, *logits, *pt,
      *ap, *ag, *am, *av;
} inputs;

static void put(nn_backend *be, outs *o, int k, const float *d, size_t n) {
  o->v[k] = down(be, d, n);
  o->n[k] = n;
}

static void run_ops(nn_backend *be, const inputs *in, outs *o) {
  const nn_ops *op = be->ops;
  const size_t N = (size_t)B * T, ND = N * D;
  memset(o, 0, sizeof *o);
  /* GEMM (9,12)x(12,10) and its transposes; 4 strided (5,6)x(6,7). */
  float *A = UPF(be, in->A, 9 * 12), *Bm = UPF(be, in->Bm, 12 * 10), *Cd = UPF(be, in->C0, 9 * 10);
  op->gemm(be, 0, 0, 9, 10, 12, 0.7f, A, Bm, 0.3f, Cd);
  put(be, o, O_GEMM, Cd, 9 * 10);
  /* A^T (12,9) times the transpose of C0 read as (10,9): (12,10) into Bm. */
  op->upload(be, Cd, in->C0, 9 * 10 * sizeof(float));
  op->gemm(be, 1, 1, 12, 10, 9, 1.0f, A, Cd, 0.0f, Bm);
  put(be, o, O_GEMM_T, Bm, 12 * 10);
  op->release(be, A), op->release(be, Bm), op->release(be, Cd);
  float *SA = UPF(be, in->A, 4 * 5 * 6), *SB = UPF(be, in->Bm, 4 * 6 * 7), *SC = op->alloc(be, 4 * 5 * 7 * sizeof(float));
  op->gemm_strided(be, 0, 0, 5, 7, 6, 1.0f, SA, 30, SB, 42, 0.0f, SC, 35, 4);
  put(be, o, O_STRIDED, SC, 4 * 5 * 7);
  op->release(be, SA), op->release(be, SB), op->release(be, SC);

  /* Linear (N,D) -> (N,F), and its backward. */
  float *x = UPF(be, in->x, ND), *W = UPF(be, in->W, (size_t)F * D), *bias = UPF(be, in->bias, F);
  float *y = op->alloc(be, N * F * sizeof(float)), *dy = UPF(be, in->dout, N * F);
  op->linear_forward(be, x, W, bias, (int)N, D, F, y);
  put(be, o, O_LIN, y, N * F);
  op->linear_forward(be, x, W, NULL, (int)N, D, F, y);
  put(be, o, O_LIN_NOBIAS, y, N * F);
  float *dx = op->alloc(be, ND * sizeof(float)), *dW = UPF(be, in->W, (size_t)F * D), *db = UPF(be, in->bias, F);
  op->linear_backward(be, dy, x, W, (int)N, D, F, dx, dW, db);
  put(be, o, O_LIN_DX, dx, ND);
  put(be, o, O_LIN_DW, dW, (size_t)F * D);
  put(be, o, O_LIN_DB, db, F);
  op->release(be, W), op->release(be, bias), op->release(be, y), op->release(be, dW), op->release(be, db);

  /* Layer norm (N,D). */
  float *g = UPF(be, in->g, D), *lb = UPF(be, in->lb, D), *ln = op->alloc(be, ND * sizeof(float));
  float *mean = op->alloc(be, N * sizeof(float)), *rstd = op->alloc(be, N * sizeof(float));
  float *dln = UPF(be, in->dout, ND), *dg = UPF(be, in->lb, D), *dlb = UPF(be, in->g, D);
  op->layernorm_forward(be, x, g, lb, (int)N, D, ln, mean, rstd);
  put(be, o, O_LN, ln, ND);
  op->upload(be, dx, in->dout + ND, ND * sizeof(float)); /* dinp accumulates onto this */
  op->layernorm_backward(be, dln, x, g, mean, rstd, (int)N, D, dx, dg, dlb);
  put(be, o, O_LN_DX, dx, ND);
  put(be, o, O_LN_DG, dg, D);
  put(be, o, O_LN_DB, dlb, D);
  /* The same with BERT's epsilon, and with the default one (= layernorm_forward). */
  op->layernorm_eps_forward(be, x, g, lb, (int)N, D, 1e-12f, ln, mean, rstd);
  put(be, o, O_LN_EPS, ln, ND);
  op->layernorm_eps_forward(be, x, g, lb, (int)N, D, NN_LN_EPS, ln, mean, rstd);
  put(be, o, O_LN_EPS_DEF, ln, ND);
  op->release(be, g), op->release(be, lb), op->release(be, mean), op->release(be, rstd);
  op->release(be, dg), op->release(be, dlb);

  /* Element-wise on (N,D). */
  float *mf = UPF(be, in->mask_f, ND);
  op->gelu_forward(be, x, ln, ND);
  put(be, o, O_GELU, ln, ND);
  op->gelu_backward(be, x, dln, ln, ND);
  put(be, o, O_GELU_D, ln, ND);
  op->upload(be, ln, in->x, ND * sizeof(float));
  op->mul(be, ln, mf, ND);
  put(be, o, O_MUL, ln, ND);
  op->add(be, x, dln, ln, ND);
  put(be, o, O_ADD, ln, ND);
  op->acc(be, x, ln, ND);
  put(be, o, O_ACC, ln, ND);
  op->copy(be, mf, ln, ND * sizeof(float));
  put(be, o, O_COPY, mf, ND);
  op->release(be, mf);

  /* Embeddings. */
  int32_t *dids = up(be, ids, sizeof ids);
  size_t *doffs = up(be, ng_offs, sizeof ng_offs);
  uint32_t *dng_ids = up(be, ng_ids, sizeof ng_ids);
  uint8_t *dmask = up(be, mask, sizeof mask);
  float *tok = UPF(be, in->tok, (size_t)V * D), *pos = UPF(be, in->pos, (size_t)T * D), *ng = UPF(be, in->ng, (size_t)NB * D);
  op->tok_embed_forward(be, tok, pos, ng, D, dids, doffs, dng_ids, B, T, ln);
  put(be, o, O_EMB, ln, ND);
  op->tok_embed_backward(be, dln, D, dids, doffs, dng_ids, B, T, tok, pos, ng);
  put(be, o, O_EMB_DTOK, tok, (size_t)V * D);
  put(be, o, O_EMB_DPOS, pos, (size_t)T * D);
  put(be, o, O_EMB_DNG, ng, (size_t)NB * D);
  op->release(be, tok), op->release(be, pos), op->release(be, ng);

  /* Heads and attention: qkv (N, 3D) split to (3,B,Hh,T,Dh). */
  float *qkv_rows = UPF(be, in->qkv, 3 * ND), *qkv = op->alloc(be, 3 * ND * sizeof(float));
  op->heads_split(be, qkv_rows, 3, B, T, D, Hh, qkv);
  put(be, o, O_SPLIT, qkv, 3 * ND);
  op->heads_merge(be, qkv, 3, B, T, D, Hh, qkv_rows);
  put(be, o, O_MERGE, qkv_rows, 3 * ND);
  const size_t na = (size_t)B * Hh * T * T;
  float *att = op->alloc(be, na * sizeof(float)), *ctx = op->alloc(be, ND * sizeof(float));
  float *dctx = UPF(be, in->dctx, ND), *datt = UPF(be, in->datt, na), *dqkv = op->alloc(be, 3 * ND * sizeof(float));
  float *scratch = op->alloc(be, na * sizeof(float));
  op->attention_forward(be, qkv, dmask, B, T, Hh, Dh, att, ctx);
  put(be, o, O_ATT, att, na);
  put(be, o, O_CTX, ctx, ND);
  op->attention_backward(be, dctx, datt, qkv, att, B, T, Hh, Dh, dqkv, scratch);
  put(be, o, O_DQKV, dqkv, 3 * ND);
  op->release(be, qkv_rows), op->release(be, qkv), op->release(be, att), op->release(be, ctx);
  op->release(be, dctx), op->release(be, datt), op->release(be, dqkv), op->release(be, scratch);

  /* Pooling (B,D). */
  float *pooled = op->alloc(be, (size_t)B * D * sizeof(float)), *dp = UPF(be, in->dout, (size_t)B * D);
  op->pool_mean_forward(be, x, dmask, B, T, D, pooled);
  put(be, o, O_POOLM, pooled, (size_t)B * D);
  op->upload(be, ln, in->x, ND * sizeof(float));
  op->pool_mean_backward(be, dp, dmask, B, T, D, ln);
  put(be, o, O_POOLM_D, ln, ND);
  op->pool_cls_forward(be, x, B, T, D, pooled);
  put(be, o, O_POOLC, pooled, (size_t)B * D);
  op->pool_cls_backward(be, dp, B, T, D, ln);
  put(be, o, O_POOLC_D, ln, ND);
  op->release(be, pooled), op->release(be, dp);

  /* Losses on (B,C). */
  int32_t *dy_lab = up(be, ys, sizeof ys);
  float *lg = UPF(be, in->logits, (size_t)B * C), *pt = UPF(be, in->pt, (size_t)B * C);
  float *pr = op->alloc(be, (size_t)B * C * sizeof(float)), *loss = op->alloc(be, B * sizeof(float));
  float *dl = UPF(be, in->dout, (size_t)B * C);
  op->xent_ls_forward(be, lg, dy_lab, B, C, 0.1f, pr, loss);
  put(be, o, O_XENT_P, pr, (size_t)B * C);
  put(be, o, O_XENT_L, loss, B);
  op->xent_ls_backward(be, pr, dy_lab, B, C, 0.1f, 0.25f, dl);
  put(be, o, O_XENT_D, dl, (size_t)B * C);
  op->kl_tau_forward(be, lg, pt, B, C, 2.0f, pr, loss);
  put(be, o, O_KL_Q, pr, (size_t)B * C);
  put(be, o, O_KL_L, loss, B);
  op->kl_tau_backward(be, pr, pt, B, C, 2.0f, 0.7f, dl);
  put(be, o, O_KL_D, dl, (size_t)B * C);
  op->release(be, dy_lab), op->release(be, lg), op->release(be, pt), op->release(be, pr), op->release(be, loss);
  op->release(be, dl);

  /* AdamW on 1000 parameters, step 3, and the gradient's norm. */
  const size_t np = 1000;
  float *p = UPF(be, in->ap, np), *gr = UPF(be, in->ag, np), *m = UPF(be, in->am, np), *v = UPF(be, in->av, np);
  nn_adamw_config ac = nn_adamw_defaults();
  op->adamw(be, p, gr, m, v, np, 1e-3f, 0.01f, 0.5f, 3, &ac);
  put(be, o, O_ADAM_P, p, np);
  put(be, o, O_ADAM_M, m, np);
  put(be, o, O_ADAM_V, v, np);
  o->sum_sq = op->sum_sq(be, gr, np);
  /* The lazy rows 7, 2, 5 of a (50,16) table within the same arrays. */
  const uint32_t rows[3] = {7, 2, 5};
  uint32_t *drows = up(be, rows, sizeof rows);
  op->upload(be, p, in->ap, np * sizeof(float));
  op->adamw_rows(be, p, gr, m, v, drows, 3, 16, 1e-3f, 0.01f, 0.5f, 4, &ac);
  put(be, o, O_ROWS_P, p, 50 * 16);
  put(be, o, O_ROWS_G, gr, 50 * 16);
  put(be, o, O_ROWS_V, v, 50 * 16);
  op->release(be, drows);
  op->release(be, p), op->release(be, gr), op->release(be, m), op->release(be, v);

  op->release(be, x), op->release(be, dy), op->release(be, dx), op->release(be, ln), op->release(be, dln);
  op->release(be, dids), op->release(be, doffs), op->release(be, dng_ids), op->release(be, dmask);
}

static void outs_free(outs *o) {
  for (int k = 0; k < O_COUNT; k++) free(o->v[k]);
}

/* Worst NMSE of b against a over the ops in [k0, k1); prints each above tol. */
static double compare(const outs *a, const outs *b, int k0, int k1, double tol, const char *what) {
  double worst = 0;
  for (int k = k0; k < k1; k++) {
    if (!a->v[k] || !b->v[k] || a->n[k] != b->n[k]) {
      TEST_FAIL_("%s %s: missing output", what, onames[k]);
      continue;
    }
    double e = test_nmse(b->v[k], a->v[k], a->n[k]);
    if (!(e <= tol)) TEST_FAIL_("%s %s: NMSE %.3g above %.3g", what, onames[k], e, tol);
    else printf("%-8s %-22s NMSE %.3g\n", what, onames[k], e);
    if (e > worst) worst = e;
  }
  return worst;
}

int main(void) {
  nn_rng_seed(&rng, 20261204, 0);
  make_batch();
  const size_t N = (size_t)B * T, ND = N * D;
  inputs in = {.A = randn(4 * 5 * 6 + 9 * 12, 1), .Bm = randn(4 * 6 * 7 + 12 * 10, 1), .C0 = randn(9 * 10, 1),
               .x = randn(ND, 1), .W = randn((size_t)F * D, 0.3f), .bias = randn(F, 0.1f),
               .dout = randn(2 * ND + N * F, 1), .g = randn(D, 0.5f), .lb = randn(D, 0.1f),
               .mask_f = randn(ND, 1), .tok = randn((size_t)V * D, 1), .pos = randn((size_t)T * D, 1),
               .ng = randn((size_t)NB * D, 1), .qkv = randn(3 * ND, 1), .dctx = randn(ND, 1),
               .datt = randn((size_t)B * Hh * T * T, 0.1f), .logits = randn((size_t)B * C, 2),
               .pt = randn((size_t)B * C, 1), .ap = randn(1000, 1), .ag = randn(1000, 1), .am = randn(1000, 0.1f),
               .av = randn(1000, 0.1f)};
  for (size_t i = 0; i < ND; i++) in.mask_f[i] = in.mask_f[i] > 0.3f ? 0.0f : 1.0f / 0.9f; /* a dropout mask */
  for (size_t i = 0; i < 1000; i++) in.av[i] = in.av[i] * in.av[i];                    /* second moments >= 0 */
  for (int b = 0; b < B; b++) {                                                         /* teacher rows sum to 1 */
    double s = 0;
    for (int c = 0; c < C; c++) s += (in.pt[b * C + c] = (float)exp(in.pt[b * C + c]));
    for (int c = 0; c < C; c++) in.pt[b * C + c] = (float)(in.pt[b * C + c] / s);
  }
  in.pt[0] = 0; /* a zero teacher probability contributes nothing */

  nn_backend *cpu = nn_backend_cpu();
  CHECK(cpu->ops == nn_ops_cpu());
  outs ref, again;
  run_ops(cpu, &in, &ref);
  run_ops(cpu, &in, &again);
  /* Deterministic: a second run is bit-identical. */
  for (int k = 0; k < O_COUNT; k++)
    if (memcmp(ref.v[k], again.v[k], ref.n[k] * sizeof(float))) TEST_FAIL_("cpu %s: second run differs", onames[k]);
  CHECK(ref.sum_sq == again.sum_sq);

  /* The CPU table's own code against the references. */
  {
    float C1[90];
    memcpy(C1, in.C0, sizeof C1);
    nn_sgemm_ref(0, 0, 9, 10, 12, 0.7f, in.A, in.Bm, 0.3f, C1);
    CHECK(test_nmse(ref.v[O_GEMM], C1, 90) <= 1e-12);
    float S[4 * 5 * 7];
    for (int i = 0; i < 4; i++) nn_sgemm_ref(0, 0, 5, 7, 6, 1.0f, in.A + 30 * i, in.Bm + 42 * i, 0.0f, S + 35 * i);
    CHECK(test_nmse(ref.v[O_STRIDED], S, 4 * 5 * 7) <= 1e-12);
    /* linear with and without its bias differ by exactly the bias. */
    double e = 0;
    for (size_t r = 0; r < N; r++)
      for (int f = 0; f < F; f++) e = fmax(e, fabs(ref.v[O_LIN][r * F + f] - ref.v[O_LIN_NOBIAS][r * F + f] - in.bias[f]));
    CHECK(e < 1e-5);
    /* linear db = bias + column sums of dout (accumulating form). */
    for (int f = 0; f < F; f++) {
      double s = in.bias[f];
      for (size_t r = 0; r < N; r++) s += in.dout[r * F + f];
      CHECK_NEAR(ref.v[O_LIN_DB][f], s, 1e-4);
    }
    /* attention rows sum to 1 with zeros on padded keys. */
    for (int b = 0; b < B; b++)
      for (int h = 0; h < Hh; h++)
        for (int i = 0; i < T; i++) {
          const float *row = ref.v[O_ATT] + (((size_t)b * Hh + h) * T + i) * T;
          double s = 0;
          for (int j = 0; j < T; j++) {
            s += row[j];
            if (!mask[b * T + j]) CHECK(row[j] == 0.0f);
          }
          CHECK_NEAR(s, 1.0, 1e-5);
        }
    /* layernorm_eps_forward at the default epsilon is layernorm_forward, bit for bit. */
    CHECK(memcmp(ref.v[O_LN_EPS_DEF], ref.v[O_LN], ND * sizeof(float)) == 0);
    /* split then merge is the identity. */
    CHECK(memcmp(ref.v[O_MERGE], in.qkv, 3 * ND * sizeof(float)) == 0);
    /* adamw_rows: untouched rows keep their values, touched gradient rows are zeroed. */
    for (int r = 0; r < 50; r++) {
      int touched = r == 7 || r == 2 || r == 5;
      for (int d = 0; d < 16; d++) {
        size_t i = (size_t)r * 16 + d;
        if (touched) CHECK(ref.v[O_ROWS_G][i] == 0.0f && ref.v[O_ROWS_P][i] != in.ap[i]);
        else CHECK(ref.v[O_ROWS_G][i] == in.ag[i] && ref.v[O_ROWS_P][i] == in.ap[i]);
      }
    }
    double ss = 0;
    for (int i = 0; i < 1000; i++) ss += (double)in.ag[i] * in.ag[i];
    CHECK_NEAR(ref.sum_sq, ss, 1e-9 * ss);
  }

  finch_err err = {0};
  nn_backend *cu = NULL;
  finch_status st = nn_backend_open(&cu, NN_DEVICE_CUDA, &err);
  if (st != FINCH_OK) {
    outs_free(&ref), outs_free(&again);
    if (test_failures_) TEST_DONE();
    TEST_SKIP("CPU/CUDA parity of the op table: no CUDA device: %s", err.msg);
  }
  CHECK(cu->ops != NULL && cu->ops != nn_ops_cpu());
  outs dev;
  run_ops(cu, &in, &dev);
  CHECK_INT_EQ(nn_backend_check(cu, &err), FINCH_OK);
  if (err.msg[0]) fprintf(stderr, "cuda: %s\n", err.msg);
  compare(&ref, &dev, 0, O_COUNT, 1e-8, "fp32");
  CHECK(fabs(dev.sum_sq - ref.sum_sq) <= 1e-9 * ref.sum_sq);
  outs_free(&dev);
  /* BF16 tensor cores: the GEMM-based ops within 1e-4. */
  cu->ops->set_precision(cu, NN_GEMM_BF16);
  run_ops(cu, &in, &dev);
  CHECK_INT_EQ(nn_backend_check(cu, &err), FINCH_OK);
  compare(&ref, &dev, O_GEMM, O_LIN_DB + 1, 1e-4, "bf16");
  compare(&ref, &dev, O_ATT, O_DQKV + 1, 1e-4, "bf16");
  outs_free(&dev);
  nn_backend_free(cu);
  outs_free(&ref), outs_free(&again);
  TEST_DONE();
}
