/* One training step of the encoder through a work area on a backend
 * (nn_tfm_work_init_on): forward with dropout, label-smoothed cross-entropy
 * plus the tau^2 KL term on the device, gradient inputs on hidden states and
 * attention, backward, global-norm clipping and AdamW, all through the op
 * table on the backend's memory.
 *
 * On the CPU the step must equal, bit for bit, the same step taken by the
 * host-memory path (nn_tfm_work_init and the reference functions). With a
 * CUDA device, the device step must agree with the CPU: logits, hidden
 * states, attention and loss within NMSE 1e-8, every gradient tensor and
 * the updated parameters within 1e-6 (atomics reorder the embedding and
 * layer-norm sums); skipped with the reason where there is no device.
 *
 * Then whole runs of nn_tfm_train (labels, soft labels with per-row alpha,
 * n-gram rows, dropout, clipping, warm-up): on CUDA every step's loss within
 * 1e-3 (relative) of the CPU run's, a run stopped and resumed from its
 * checkpoint on the device following the uninterrupted device run, and a
 * run with masked-token pre-training, which is host code, trained on the
 * CPU exactly as a CPU run. */
#include "nn/loss.h"
#include "nn/ops.h"
#include "nn/optim.h"
#include "nn/rng.h"
#include "nn/tfm.h"
#include "nn/tfm_train.h"
#include "tests/test.h"

#include <unistd.h>

enum { B = 3, T = 9, V = 40, NB = 23, C = 6 };

static const nn_tfm_config cfg = {.vocab = V, .buckets = NB, .max_len = 12, .dim = 32, .layers = 2, .heads = 4,
                                  .ff = 48, .n_labels = C, .pool = NN_POOL_MEAN, .dropout = 0.1f};

typedef struct {
  float *logits, *hidden, *att, *loss, *grads, *params;
  double sum_sq;
  size_t n_params;
} step_out;

static int32_t ids[B * T], ys[B];
static uint8_t mask[B * T];
static size_t offs[B * T + 1];
static uint32_t ngr[B * T * 3];
static float soft[B * C];

static nn_tfm_batch make_batch(void) {
  nn_rng r;
  nn_rng_seed(&r, 99, 0);
  size_t k = 0;
  for (int i = 0; i < B * T; i++) {
    ids[i] = (int32_t)nn_rng_below(&r, V);
    mask[i] = (i % T) < T - 3 * (i / T); /* rows of 9, 6 and 3 real tokens */
    offs[i] = k;
    for (int j = (int)nn_rng_below(&r, 4); j > 0; j--) ngr[k++] = (uint32_t)nn_rng_below(&r, NB);
  }
  offs[B * T] = k;
  for (int b = 0; b < B; b++) {
    ys[b] = (int32_t)nn_rng_below(&r, C);
    double s = 0;
    for (int c = 0; c < C; c++) s += (soft[b * C + c] = 0.1f + nn_rng_uniform(&r));
    for (int c = 0; c < C; c++) soft[b * C + c] = (float)(soft[b * C + c] / s);
  }
  return (nn_tfm_batch){.B = B, .T = T, .ids = ids, .mask = mask, .ng_offs = offs, .ng_ids = ngr};
}

/* The gradient inputs from "elsewhere" (hidden-state and attention losses):
 * fixed small patterns. */
static void fill_pattern(float *x, size_t n, float scale) {
  for (size_t i = 0; i < n; i++) x[i] = scale * (float)((int)(i % 7) - 3);
}

/* The step on the host path: host buffers, reference functions. */
static void step_host(const nn_tfm_batch *b, step_out *o) {
  finch_err err;
  nn_tfm *m = NULL;
  nn_tfm_work *w = NULL;
  CHECK_INT_EQ(nn_tfm_create(&m, &cfg, 5, &err), FINCH_OK);
  CHECK_INT_EQ(nn_tfm_work_init(&w, m, B, &err), FINCH_OK);
  const size_t np = nn_tfm_n_params(m), ND = (size_t)B * T * cfg.dim, A = (size_t)B * cfg.heads * T * T;
  nn_rng dr;
  nn_rng_seed(&dr, 17, 3);
  nn_tfm_forward(m, w, b, 1, &dr);
  float probs[B * C], q[B * C], lce[B], lkd[B];
  nn_xent_ls_forward(nn_tfm_logits(w), ys, B, C, 0.1f, probs, lce);
  nn_xent_ls_backward(probs, ys, B, C, 0.1f, 0.3f / B, nn_tfm_dlogits(w));
  nn_kl_tau_forward(nn_tfm_logits(w), soft, B, C, 2.0f, q, lkd);
  nn_kl_tau_backward(q, soft, B, C, 2.0f, 0.7f / B, nn_tfm_dlogits(w));
  fill_pattern(nn_tfm_dhidden(w, 1), ND, 1e-3f);
  fill_pattern(nn_tfm_dattn(w, 0), A, 2e-3f);
  o->logits = malloc(B * C * sizeof(float));
  o->hidden = malloc(ND * sizeof(float));
  o->att = malloc(A * sizeof(float));
  o->loss = malloc(2 * B * sizeof(float));
  memcpy(o->logits, nn_tfm_logits(w), B * C * sizeof(float));
  memcpy(o->hidden, nn_tfm_hidden(w, 2), ND * sizeof(float));
  memcpy(o->att, nn_tfm_attn(w, 1), A * sizeof(float));
  memcpy(o->loss, lce, sizeof lce);
  memcpy(o->loss + B, lkd, sizeof lkd);
  o->grads = calloc(np, sizeof(float));
  nn_tfm_backward(m, w, b, o->grads);
  o->sum_sq = nn_sum_sq(o->grads, np);
  const float gs = nn_clip_scale(o->sum_sq, 1.0f);
  float *mo = calloc(np, sizeof(float)), *ve = calloc(np, sizeof(float));
  const nn_adamw_config ac = nn_adamw_defaults();
  nn_adamw_update(nn_tfm_params(m), o->grads, mo, ve, np, 1e-3f, 0.01f, gs, 1, &ac);
  o->params = malloc(np * sizeof(float));
  memcpy(o->params, nn_tfm_params_const(m), np * sizeof(float));
  o->n_params = np;
  free(mo), free(ve);
  nn_tfm_work_free(w);
  nn_tfm_free(m);
}

/* The same step through the op table of be, on its memory. */
static void step_on(nn_backend *be, const nn_tfm_batch *b, step_out *o) {
  finch_err err;
  const nn_ops *op = be->ops;
  nn_tfm *m = NULL;
  nn_tfm_work *w = NULL;
  CHECK_INT_EQ(nn_tfm_create(&m, &cfg, 5, &err), FINCH_OK);
  CHECK_INT_EQ(nn_tfm_work_init_on(&w, m, B, be, &err), FINCH_OK);
  const size_t np = nn_tfm_n_params(m), ND = (size_t)B * T * cfg.dim, A = (size_t)B * cfg.heads * T * T;
  float *P = nn_tfm_work_params(w) ? nn_tfm_work_params(w) : nn_tfm_params(m);
  nn_rng dr;
  nn_rng_seed(&dr, 17, 3);
  nn_tfm_forward(m, w, b, 1, &dr);
  int32_t *dy = op->alloc(be, sizeof ys);
  float *dsoft = op->alloc(be, sizeof soft), *probs = op->alloc(be, B * C * sizeof(float));
  float *loss = op->alloc(be, 2 * B * sizeof(float));
  op->upload(be, dy, ys, sizeof ys);
  op->upload(be, dsoft, soft, sizeof soft);
  op->xent_ls_forward(be, nn_tfm_logits(w), dy, B, C, 0.1f, probs, loss);
  op->xent_ls_backward(be, probs, dy, B, C, 0.1f, 0.3f / B, nn_tfm_dlogits(w));
  op->kl_tau_forward(be, nn_tfm_logits(w), dsoft, B, C, 2.0f, probs, loss + B);
  op->kl_tau_backward(be, probs, dsoft, B, C, 2.0f, 0.7f / B, nn_tfm_dlogits(w));
  float *hpat = malloc((A > ND ? A : ND) * sizeof(float));
  fill_pattern(hpat, ND, 1e-3f);
  op->upload(be, nn_tfm_dhidden(w, 1), hpat, ND * sizeof(float));
  fill_pattern(hpat, A, 2e-3f);
  op->upload(be, nn_tfm_dattn(w, 0), hpat, A * sizeof(float));
  free(hpat);
  o->logits = malloc(B * C * sizeof(float));
  o->hidden = malloc(ND * sizeof(float));
  o->att = malloc(A * sizeof(float));
  o->loss = malloc(2 * B * sizeof(float));
  op->download(be, o->logits, nn_tfm_logits(w), B * C * sizeof(float));
  op->download(be, o->hidden, nn_tfm_hidden(w, 2), ND * sizeof(float));
  op->download(be, o->att, nn_tfm_attn(w, 1), A * sizeof(float));
  op->download(be, o->loss, loss, 2 * B * sizeof(float));
  float *g = op->alloc(be, np * sizeof(float)), *mo = op->alloc(be, np * sizeof(float));
  float *ve = op->alloc(be, np * sizeof(float));
  nn_tfm_backward(m, w, b, g);
  o->sum_sq = op->sum_sq(be, g, np);
  const nn_adamw_config ac = nn_adamw_defaults();
  op->adamw(be, P, g, mo, ve, np, 1e-3f, 0.01f, nn_clip_scale(o->sum_sq, 1.0f), 1, &ac);
  o->grads = malloc(np * sizeof(float));
  op->download(be, o->grads, g, np * sizeof(float));
  nn_tfm_work_download_params(w, m);
  o->params = malloc(np * sizeof(float));
  memcpy(o->params, nn_tfm_params_const(m), np * sizeof(float));
  o->n_params = np;
  CHECK_INT_EQ(nn_backend_check(be, &err), FINCH_OK);
  op->release(be, dy), op->release(be, dsoft), op->release(be, probs), op->release(be, loss);
  op->release(be, g), op->release(be, mo), op->release(be, ve);
  nn_tfm_work_free(w);
  nn_tfm_free(m);
}

static void out_free(step_out *o) {
  free(o->logits), free(o->hidden), free(o->att), free(o->loss), free(o->grads), free(o->params);
}

static void expect(const char *what, const float *x, const float *ref, size_t n, double tol) {
  double e = test_nmse(x, ref, n);
  if (!(e <= tol)) TEST_FAIL_("%s: NMSE %.3g above %.3g", what, e, tol);
  else printf("%-24s NMSE %.3g\n", what, e);
}

/* ---- whole runs ------------------------------------------------------------ */

enum { RN = 40, RT = 7 };

typedef struct {
  float loss[256];
  int n;
} loss_log;

static void on_step(void *ctx, const nn_tfm_progress *p) {
  loss_log *l = ctx;
  if (l->n < 256) l->loss[l->n++] = p->loss;
}

typedef struct {
  nn_tfm_corpus x;
  int32_t y[RN];
  float soft[RN * C], alpha[RN];
} run_data;

static void make_run_data(run_data *d) {
  nn_rng r;
  nn_rng_seed(&r, 123, 0);
  memset(&d->x, 0, sizeof d->x);
  d->x.T = RT;
  d->x.n = RN;
  d->x.buckets = NB;
  d->x.ids = calloc(RN * RT, sizeof *d->x.ids);
  d->x.len = calloc(RN, 1);
  d->x.ng_offs = calloc(RN * RT + 1, sizeof *d->x.ng_offs);
  d->x.ng_ids = calloc(RN * RT * 3, sizeof *d->x.ng_ids);
  size_t k = 0;
  for (int i = 0; i < RN; i++) {
    int len = 2 + (int)nn_rng_below(&r, RT - 1);
    d->x.len[i] = (uint8_t)len;
    d->y[i] = i % C;
    d->alpha[i] = 0.2f + 0.5f * nn_rng_uniform(&r);
    double s = 0;
    for (int c = 0; c < C; c++) s += (d->soft[i * C + c] = 0.05f + nn_rng_uniform(&r) + (c == i % C ? 1.0f : 0.0f));
    for (int c = 0; c < C; c++) d->soft[i * C + c] = (float)(d->soft[i * C + c] / s);
    for (int t = 0; t < RT; t++) {
      size_t j = (size_t)i * RT + t;
      d->x.ids[j] = t < len ? 1 + (int32_t)nn_rng_below(&r, V - 1) : 0;
      d->x.ng_offs[j] = k;
      for (int q = t < len ? (int)nn_rng_below(&r, 4) : 0; q > 0; q--) d->x.ng_ids[k++] = (uint32_t)nn_rng_below(&r, NB);
    }
  }
  d->x.ng_offs[RN * RT] = k;
}

static void free_run_data(run_data *d) {
  free(d->x.ids), free(d->x.len), free(d->x.ng_offs), free(d->x.ng_ids);
}

/* Trains a fresh model (seed 5) on be; losses into log; the trained
 * parameters into params (n_params floats, may be NULL). */
static finch_status run(nn_backend *be, const run_data *d, const nn_tfm_train_config *tc, loss_log *log, float *params,
                        finch_err *err) {
  nn_tfm *m = NULL;
  finch_status st = nn_tfm_create(&m, &cfg, 5, err);
  if (st) return st;
  nn_tfm_data td = {.x = &d->x, .labels = d->y, .soft = d->soft, .alpha = d->alpha};
  st = nn_tfm_train(m, be, &td, tc, on_step, log, err);
  if (!st && params) memcpy(params, nn_tfm_params_const(m), nn_tfm_n_params(m) * sizeof(float));
  nn_tfm_free(m);
  return st;
}

static void compare_logs(const char *what, const loss_log *a, const loss_log *b, double rel) {
  CHECK_INT_EQ(a->n, b->n);
  double worst = 0;
  for (int i = 0; i < a->n && i < b->n; i++) {
    double e = fabs((double)a->loss[i] - b->loss[i]) / fmax(1e-6, fabs((double)b->loss[i]));
    if (e > worst) worst = e;
  }
  if (!(worst <= rel)) TEST_FAIL_("%s: worst relative loss difference %.3g above %.3g", what, worst, rel);
  else printf("%-24s %d steps, worst relative loss difference %.3g\n", what, a->n, worst);
}

/* be against the CPU; on the CPU itself (a check of this harness) the runs
 * are identical. */
static void train_runs(nn_backend *cu) {
  const int dev = cu->ops != nn_ops_cpu();
  finch_err err = {0};
  run_data d;
  make_run_data(&d);
  nn_tfm_train_config tc = nn_tfm_train_defaults();
  tc.epochs = 6;
  tc.batch = 16;
  tc.lr = 3e-3f;
  tc.tau = 2.0f;
  tc.seed = 9;
  loss_log lc = {.n = 0}, lg = {.n = 0}, lr1 = {.n = 0}, lr2 = {.n = 0};
  nn_tfm *probe = NULL;
  CHECK_INT_EQ(nn_tfm_create(&probe, &cfg, 5, &err), FINCH_OK);
  const size_t np = probe ? nn_tfm_n_params(probe) : 1;
  nn_tfm_free(probe);
  float *pc = malloc(np * sizeof(float)), *pg = malloc(np * sizeof(float));
  CHECK_INT_EQ(run(nn_backend_cpu(), &d, &tc, &lc, pc, &err), FINCH_OK);
  finch_status st = run(cu, &d, &tc, &lg, pg, &err);
  if (st) fprintf(stderr, "device run: %s\n", err.msg);
  CHECK_INT_EQ(st, FINCH_OK);
  CHECK(lc.n == 18 && lc.loss[17] < lc.loss[0]); /* 3 batches x 6 epochs, and it learns */
  compare_logs(dev ? "train cpu vs cuda" : "train cpu vs cpu", &lg, &lc, dev ? 1e-3 : 0);
  double e = test_nmse(pg, pc, np);
  if (!dev) CHECK(e == 0);
  if (!(e <= 1e-4)) TEST_FAIL_("trained parameters: NMSE %.3g above 1e-4", e);
  /* Stopped after 7 steps, resumed: the uninterrupted device run's losses. */
  char ck[256];
  snprintf(ck, sizeof ck, "%s/tfm-device-%d.ck", getenv("FINCH_TEST_TMP") ? getenv("FINCH_TEST_TMP") : "/tmp",
           (int)getpid());
  tc.checkpoint = ck;
  tc.stop_after = 7;
  CHECK_INT_EQ(run(cu, &d, &tc, &lr1, NULL, &err), FINCH_OK);
  tc.stop_after = 0;
  tc.resume = 1;
  CHECK_INT_EQ(run(cu, &d, &tc, &lr2, NULL, &err), FINCH_OK);
  for (int i = 0; i < lr2.n && lr1.n + i < 256; i++) lr1.loss[lr1.n + i] = lr2.loss[i];
  lr1.n += lr2.n;
  compare_logs("resumed vs whole", &lr1, &lg, dev ? 1e-4 : 0);
  unlink(ck);
  /* Masked-token pre-training runs on the CPU, whatever the backend. */
  tc.checkpoint = NULL;
  tc.resume = 0;
  tc.mlm_prob = 0.15f;
  tc.mlm_weight = 1.0f;
  loss_log lm = {.n = 0};
  loss_log lm_cpu = {.n = 0};
  CHECK_INT_EQ(run(cu, &d, &tc, &lm, NULL, &err), FINCH_OK);
  CHECK_INT_EQ(run(nn_backend_cpu(), &d, &tc, &lm_cpu, NULL, &err), FINCH_OK);
  compare_logs("mlm run (on the CPU)", &lm, &lm_cpu, 0);
  free(pc), free(pg);
  free_run_data(&d);
}

int main(void) {
  const nn_tfm_batch b = make_batch();
  const size_t ND = (size_t)B * T * cfg.dim, A = (size_t)B * cfg.heads * T * T;
  step_out host, cpu;
  step_host(&b, &host);
  step_on(nn_backend_cpu(), &b, &cpu);
  /* The table path on the CPU is the host path. */
  CHECK(memcmp(host.logits, cpu.logits, B * C * sizeof(float)) == 0);
  CHECK(memcmp(host.hidden, cpu.hidden, ND * sizeof(float)) == 0);
  CHECK(memcmp(host.att, cpu.att, A * sizeof(float)) == 0);
  CHECK(memcmp(host.loss, cpu.loss, 2 * B * sizeof(float)) == 0);
  CHECK(memcmp(host.grads, cpu.grads, host.n_params * sizeof(float)) == 0);
  CHECK(memcmp(host.params, cpu.params, host.n_params * sizeof(float)) == 0);
  CHECK(host.sum_sq == cpu.sum_sq && host.sum_sq > 0);
  train_runs(nn_backend_cpu());

  /* A gated encoder cannot run on a device, and says so. */
  finch_err err = {0};
  nn_backend *cu = NULL;
  finch_status st = nn_backend_open(&cu, NN_DEVICE_CUDA, &err);
  if (st != FINCH_OK) {
    out_free(&host), out_free(&cpu);
    if (test_failures_) TEST_DONE();
    TEST_SKIP("CPU/CUDA parity of a training step: no CUDA device: %s", err.msg);
  }
  {
    nn_tfm_config gc = cfg;
    gc.head_gates = 1;
    nn_tfm *gm = NULL;
    nn_tfm_work *gw = NULL;
    CHECK_INT_EQ(nn_tfm_create(&gm, &gc, 5, &err), FINCH_OK);
    CHECK_INT_EQ(nn_tfm_work_init_on(&gw, gm, B, cu, &err), FINCH_EDEVICE);
    CHECK_CONTAINS(err.msg, "head gates");
    nn_tfm_free(gm);
  }
  step_out dev;
  step_on(cu, &b, &dev);
  expect("logits", dev.logits, host.logits, B * C, 1e-8);
  expect("hidden(2)", dev.hidden, host.hidden, ND, 1e-8);
  expect("attention(1)", dev.att, host.att, A, 1e-8);
  expect("losses", dev.loss, host.loss, 2 * B, 1e-8);
  /* every gradient tensor on its own, so that a small one is not hidden */
  {
    nn_tfm *m = NULL;
    CHECK_INT_EQ(nn_tfm_create(&m, &cfg, 5, &err), FINCH_OK);
    for (size_t i = 0; m && i < nn_tfm_n_tensors(m); i++) {
      const nn_tfm_tensor *t = nn_tfm_tensor_at(m, i);
      size_t n = (size_t)t->rows * t->cols;
      if (!n) continue;
      char what[64];
      snprintf(what, sizeof what, "d %s", t->name);
      expect(what, dev.grads + t->off, host.grads + t->off, n, 1e-6);
    }
    nn_tfm_free(m);
  }
  CHECK(fabs(dev.sum_sq - host.sum_sq) <= 1e-5 * host.sum_sq);
  expect("parameters after AdamW", dev.params, host.params, host.n_params, 1e-6);
  out_free(&dev);
  train_runs(cu);
  nn_backend_free(cu);
  out_free(&host), out_free(&cpu);
  TEST_DONE();
}
