/* The encoder's training speed and batch-1 latency on each backend, in one
 * run: the CPU, then CUDA in fp32 and with bf16 tensor-core GEMMs when a
 * device is found. Training goes through nn_tfm_train (the whole step on the
 * backend) on a synthetic corpus; examples/s are timed from the second step
 * on, so setup and the first launches are not counted. Latency is one
 * 12-token query, forward plus the logits back on the host, the median of
 * 200 after 20 warm-ups.
 *
 *   bench_tfm_device [key=value ...]
 *
 * keys: vocab (8000), buckets (0), dim (128), layers (2), heads (4), ff (512),
 * labels (77), batch (64), len (32), cpu_steps (20), gpu_steps (200). */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "nn/ops.h"
#include "nn/rng.h"
#include "nn/tfm.h"
#include "nn/tfm_train.h"

static double now_s(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

static int cmp_double(const void *a, const void *b) {
  double x = *(const double *)a, y = *(const double *)b;
  return x < y ? -1 : x > y;
}

typedef struct {
  double t_first, t_last;
  uint64_t first, last;
} timing;

static void on_step(void *ctx, const nn_tfm_progress *p) {
  timing *t = ctx;
  double now = now_s();
  if (p->step == 1) t->t_first = now, t->first = 1;
  t->t_last = now, t->last = p->step;
}

static void corpus(nn_tfm_corpus *x, int32_t **labels, size_t n, int T, uint32_t V, uint32_t NB, uint32_t C) {
  nn_rng r;
  nn_rng_seed(&r, 1, 0);
  memset(x, 0, sizeof *x);
  x->T = T;
  x->n = n;
  x->buckets = NB;
  x->ids = calloc(n * T, sizeof *x->ids);
  x->len = calloc(n, 1);
  *labels = malloc(n * sizeof **labels);
  if (NB) {
    x->ng_offs = calloc(n * T + 1, sizeof *x->ng_offs);
    x->ng_ids = malloc(n * T * 4 * sizeof *x->ng_ids);
  }
  size_t k = 0;
  for (size_t i = 0; i < n; i++) {
    int len = 8 + (int)nn_rng_below(&r, (uint64_t)(T - 7));
    x->len[i] = (uint8_t)len;
    (*labels)[i] = (int32_t)nn_rng_below(&r, C);
    for (int t = 0; t < T; t++) {
      x->ids[i * T + t] = t < len ? (int32_t)nn_rng_below(&r, V) : 0;
      if (!NB) continue;
      x->ng_offs[i * T + t] = k;
      for (int j = t < len ? 4 : 0; j > 0; j--) x->ng_ids[k++] = (uint32_t)nn_rng_below(&r, NB);
    }
  }
  if (NB) x->ng_offs[n * T] = k;
}

/* Trains steps batches on be; returns examples/s from step 2 on. */
static double train_speed(const nn_tfm_config *cfg, nn_backend *be, int batch, int T, uint64_t steps) {
  nn_tfm_corpus x;
  int32_t *y;
  corpus(&x, &y, (size_t)batch * steps, T, cfg->vocab, cfg->buckets, cfg->n_labels);
  nn_tfm *m = NULL;
  finch_err err;
  double eps = 0;
  if (nn_tfm_create(&m, cfg, 1, &err) == FINCH_OK) {
    nn_tfm_train_config tc = nn_tfm_train_defaults();
    tc.epochs = 1;
    tc.batch = (uint32_t)batch;
    timing t = {0};
    nn_tfm_data d = {.x = &x, .labels = y};
    if (nn_tfm_train(m, be, &d, &tc, on_step, &t, &err) != FINCH_OK) fprintf(stderr, "train: %s\n", err.msg);
    else if (t.last > t.first) eps = (double)(t.last - t.first) * batch / (t.t_last - t.t_first);
  }
  nn_tfm_free(m);
  free(x.ids), free(x.len), free(x.ng_offs), free(x.ng_ids), free(y);
  return eps;
}

/* Median seconds of one 12-token forward with the logits back on the host. */
static double latency(const nn_tfm_config *cfg, nn_backend *be) {
  nn_tfm *m = NULL;
  nn_tfm_work *w = NULL;
  finch_err err;
  if (nn_tfm_create(&m, cfg, 1, &err) || nn_tfm_work_init_on(&w, m, 1, be, &err)) {
    fprintf(stderr, "latency: %s\n", err.msg);
    nn_tfm_free(m);
    return 0;
  }
  int32_t ids[12];
  uint8_t mask[12];
  for (int t = 0; t < 12; t++) ids[t] = 5 + 7 * t, mask[t] = 1;
  nn_tfm_batch b = {.B = 1, .T = 12, .ids = ids, .mask = mask};
  float logits[4096];
  double s[200];
  for (int i = 0; i < 220; i++) {
    double t0 = now_s();
    nn_tfm_forward(m, w, &b, 0, NULL);
    be->ops->download(be, logits, nn_tfm_logits(w), cfg->n_labels * sizeof(float));
    if (i >= 20) s[i - 20] = now_s() - t0;
  }
  qsort(s, 200, sizeof *s, cmp_double);
  nn_tfm_work_free(w);
  nn_tfm_free(m);
  return s[100];
}

int main(int argc, char **argv) {
  double vocab = 8000, buckets = 0, dim = 128, layers = 2, heads = 4, ff = 512, labels = 77, batch = 64, len = 32;
  double cpu_steps = 20, gpu_steps = 200;
  for (int i = 1; i < argc; i++) {
    char key[32];
    double v;
    if (sscanf(argv[i], "%31[^=]=%lf", key, &v) != 2) {
      fprintf(stderr, "bench_tfm_device: expected key=value, got %s\n", argv[i]);
      return 2;
    }
    double *slot = !strcmp(key, "vocab") ? &vocab : !strcmp(key, "buckets") ? &buckets : !strcmp(key, "dim") ? &dim
                 : !strcmp(key, "layers") ? &layers : !strcmp(key, "heads") ? &heads : !strcmp(key, "ff") ? &ff
                 : !strcmp(key, "labels") ? &labels : !strcmp(key, "batch") ? &batch : !strcmp(key, "len") ? &len
                 : !strcmp(key, "cpu_steps") ? &cpu_steps : !strcmp(key, "gpu_steps") ? &gpu_steps : NULL;
    if (!slot) {
      fprintf(stderr, "bench_tfm_device: unknown key %s\n", key);
      return 2;
    }
    *slot = v;
  }
  if (labels < 1 || labels > 4096 || len < 12 || len > 255 || batch < 1 || cpu_steps < 2 || gpu_steps < 2) {
    fprintf(stderr, "bench_tfm_device: labels 1..4096, len 12..255, batch >= 1, steps >= 2\n");
    return 2;
  }
  nn_tfm_config cfg = {.vocab = (uint32_t)vocab, .buckets = (uint32_t)buckets, .max_len = (uint32_t)len,
                       .dim = (uint32_t)dim, .layers = (uint32_t)layers, .heads = (uint32_t)heads, .ff = (uint32_t)ff,
                       .n_labels = (uint32_t)labels, .pool = NN_POOL_MEAN, .dropout = 0.1f};
  printf("encoder %u layers x %u, %u heads, ff %u, vocab %u, buckets %u; batch %d, length %d\n", cfg.layers, cfg.dim,
         cfg.heads, cfg.ff, cfg.vocab, cfg.buckets, (int)batch, (int)len);
  nn_backend *cpu = nn_backend_cpu();
  double cpu_eps = train_speed(&cfg, cpu, (int)batch, (int)len, (uint64_t)cpu_steps);
  double cpu_lat = latency(&cfg, cpu);
  printf("cpu        train %10.0f examples/s   batch-1 latency %8.1f us\n", cpu_eps, 1e6 * cpu_lat);
  finch_err err;
  nn_backend *cu = NULL;
  if (nn_backend_open(&cu, NN_DEVICE_CUDA, &err) != FINCH_OK) {
    printf("cuda       not measured: %s\n", err.msg);
    return 0;
  }
  for (int p = 0; p < 2; p++) {
    cu->ops->set_precision(cu, p ? NN_GEMM_BF16 : NN_GEMM_FP32);
    double eps = train_speed(&cfg, cu, (int)batch, (int)len, (uint64_t)gpu_steps);
    double lat = latency(&cfg, cu);
    printf("cuda %-5s train %10.0f examples/s   batch-1 latency %8.1f us   train cuda/cpu %.1fx\n",
           p ? "bf16" : "fp32", eps, 1e6 * lat, cpu_eps > 0 ? eps / cpu_eps : 0);
  }
  int rc = nn_backend_check(cu, &err) == FINCH_OK ? 0 : (fprintf(stderr, "cuda: %s\n", err.msg), 1);
  nn_backend_free(cu);
  return rc;
}
