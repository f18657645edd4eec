/* Speed of the transformer encoder (nn/tfm.h) on the CPU backend: training
 * examples per second (forward + backward + AdamW over every parameter) at
 * 1 and 2 OpenBLAS threads, batch-1 inference latency, and where a training
 * step's time goes, op by op. Synthetic ids; no data files. The defaults
 * are bench/torch_tfm.py's model and batch (8..32 real tokens of 32, one
 * 12-token sequence for latency), so the two print comparable figures.
 *
 *   bench_tfm [key=value ...]
 *
 * keys: vocab (8000), buckets (0), dim (128), layers (2), heads (4),
 * ff (512), labels (77), batch (64), len (32), dropout (0.1), steps (40). */
#include <cblas.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "nn/loss.h"
#include "nn/optim.h"
#include "nn/tfm.h"
#include "nn/tfm_ops.h"

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
  nn_tfm *m;
  nn_tfm_work *w;
  nn_backend *be;
  nn_tfm_batch b;
  int32_t *y;
  float *grads, *mom, *probs, *rowloss;
  nn_rng drop;
  uint64_t t;
  double t_loss, t_adam; /* seconds outside the model's forward and backward */
} trainer;

static float train_step(trainer *tr) {
  const nn_tfm_config *c = nn_tfm_get_config(tr->m);
  const int B = tr->b.B, C = (int)c->n_labels;
  const size_t np = nn_tfm_n_params(tr->m);
  nn_tfm_forward(tr->m, tr->w, &tr->b, 1, &tr->drop);
  double t0 = now_s();
  nn_xent_ls_forward(nn_tfm_logits(tr->w), tr->y, B, C, 0.1f, tr->probs, tr->rowloss);
  nn_xent_ls_backward(tr->probs, tr->y, B, C, 0.1f, 1.0f / (float)B, nn_tfm_dlogits(tr->w));
  memset(tr->grads, 0, np * sizeof(float));
  tr->t_loss += now_s() - t0;
  nn_tfm_backward(tr->m, tr->w, &tr->b, tr->grads);
  t0 = now_s();
  const nn_adamw_config ac = nn_adamw_defaults();
  float *p = nn_tfm_params(tr->m);
  tr->t++;
  for (size_t i = 0; i < nn_tfm_n_tensors(tr->m); i++) {
    const nn_tfm_tensor *t = nn_tfm_tensor_at(tr->m, i);
    nn_adamw_update(p + t->off, tr->grads + t->off, tr->mom + t->off, tr->mom + np + t->off,
                    (size_t)t->rows * t->cols, 1e-4f, t->decay ? 0.01f : 0.0f, 1.0f, tr->t, &ac);
  }
  tr->t_adam += now_s() - t0;
  return tr->rowloss[0];
}

int main(int argc, char **argv) {
  nn_tfm_config cfg = {.vocab = 8000, .buckets = 0, .max_len = 32, .dim = 128, .layers = 2, .heads = 4,
                       .ff = 512, .n_labels = 77, .pool = NN_POOL_MEAN, .dropout = 0.1f};
  int B = 64, T = 32, steps = 40;
  for (int i = 1; i < argc; i++) {
    char key[32];
    double v;
    if (sscanf(argv[i], "%31[^=]=%lf", key, &v) != 2) {
      fprintf(stderr, "bench_tfm: expected key=value, got %s\n", argv[i]);
      return 2;
    }
    if (!strcmp(key, "vocab")) cfg.vocab = (uint32_t)v;
    else if (!strcmp(key, "buckets")) cfg.buckets = (uint32_t)v;
    else if (!strcmp(key, "dim")) cfg.dim = (uint32_t)v;
    else if (!strcmp(key, "layers")) cfg.layers = (uint32_t)v;
    else if (!strcmp(key, "heads")) cfg.heads = (uint32_t)v;
    else if (!strcmp(key, "ff")) cfg.ff = (uint32_t)v;
    else if (!strcmp(key, "labels")) cfg.n_labels = (uint32_t)v;
    else if (!strcmp(key, "dropout")) cfg.dropout = (float)v;
    else if (!strcmp(key, "batch")) B = (int)v;
    else if (!strcmp(key, "len")) T = (int)v, cfg.max_len = (uint32_t)v;
    else if (!strcmp(key, "steps")) steps = (int)v;
    else {
      fprintf(stderr, "bench_tfm: unknown key %s\n", key);
      return 2;
    }
  }
  finch_err err = {0};
  trainer tr = {0};
  if (nn_tfm_create(&tr.m, &cfg, 1, &err) != FINCH_OK || nn_tfm_work_init(&tr.w, tr.m, B, &err) != FINCH_OK) {
    fprintf(stderr, "bench_tfm: %s\n", err.msg);
    return 1;
  }
  /* nn_backend_cpu() sets one OpenBLAS thread; the thread count is set after it. */
  tr.be = nn_backend_cpu();
  const size_t np = nn_tfm_n_params(tr.m), N = (size_t)B * T;
  int32_t *ids = malloc(N * sizeof *ids);
  uint8_t *mask = malloc(N);
  size_t *offs = malloc((N + 1) * sizeof *offs);
  uint32_t *ng = malloc(N * 4 * sizeof *ng);
  tr.y = malloc((size_t)B * sizeof *tr.y);
  tr.grads = calloc(np, sizeof(float));
  tr.mom = calloc(2 * np, sizeof(float));
  tr.probs = malloc((size_t)B * cfg.n_labels * sizeof(float));
  tr.rowloss = malloc((size_t)B * sizeof(float));
  nn_rng r;
  nn_rng_seed(&r, 1, 0);
  size_t k = 0;
  const int lo = T < 8 ? T : 8;
  for (int b = 0; b < B; b++) {
    int len = lo + (int)nn_rng_below(&r, (uint64_t)(T - lo + 1)); /* lo..T real tokens */
    tr.y[b] = (int32_t)nn_rng_below(&r, cfg.n_labels);
    for (int t = 0; t < T; t++) {
      size_t i = (size_t)b * T + t;
      ids[i] = (int32_t)nn_rng_below(&r, cfg.vocab);
      mask[i] = t < len;
      offs[i] = k;
      if (cfg.buckets && t < len)
        for (int j = 0; j < 4; j++) ng[k++] = (uint32_t)nn_rng_below(&r, cfg.buckets);
    }
  }
  offs[N] = k;
  tr.b = (nn_tfm_batch){.B = B, .T = T, .ids = ids, .mask = mask, .ng_offs = cfg.buckets ? offs : NULL, .ng_ids = ng};
  nn_rng_seed(&tr.drop, 1, 2);

  printf("transformer: V %u, NB %u, D %u, L %u, heads %u, FF %u, C %u; %zu parameters; batch %d x %d, dropout %.2f\n",
         cfg.vocab, cfg.buckets, cfg.dim, cfg.layers, cfg.heads, cfg.ff, cfg.n_labels, np, B, T,
         (double)cfg.dropout);
  for (int threads = 1; threads <= 2; threads++) {
    openblas_set_num_threads(threads);
    for (int i = 0; i < 3; i++) train_step(&tr);
    double t0 = now_s();
    for (int i = 0; i < steps; i++) train_step(&tr);
    double dt = now_s() - t0;
    printf("train, %d thread%s: %.1f ms/step, %.0f examples/s\n", threads, threads > 1 ? "s" : "",
           1e3 * dt / steps, (double)steps * B / dt);
  }

  /* Where a step goes, at one thread. */
  openblas_set_num_threads(1);
  tr.t_loss = tr.t_adam = 0;
  nn_tfm_profile_enable(tr.w, 1);
  double t0 = now_s();
  for (int i = 0; i < steps; i++) train_step(&tr);
  double total = (now_s() - t0) / steps;
  nn_tfm_profile_enable(tr.w, 0);
  double fwd[NN_TFM_OP_COUNT], bwd[NN_TFM_OP_COUNT], sf = 0, sb = 0;
  nn_tfm_profile_get(tr.w, fwd, bwd);
  printf("\nprofile, 1 thread, ms per step (share of %.1f ms):\n%-18s %8s %8s\n", 1e3 * total, "op", "forward",
         "backward");
  for (int op = 0; op < NN_TFM_OP_COUNT; op++) {
    sf += fwd[op];
    sb += bwd[op];
    printf("%-18s %8.2f %8.2f  (%4.1f%%)\n", nn_tfm_profile_name(op), 1e3 * fwd[op] / steps, 1e3 * bwd[op] / steps,
           100.0 * (fwd[op] + bwd[op]) / steps / total);
  }
  printf("%-18s %8.2f %8.2f  (%4.1f%%)\n", "model total", 1e3 * sf / steps, 1e3 * sb / steps,
         100.0 * (sf + sb) / steps / total);
  printf("%-18s %8.2f           (%4.1f%%)\n", "loss+zero grads", 1e3 * tr.t_loss / steps,
         100.0 * tr.t_loss / steps / total);
  printf("%-18s %8.2f           (%4.1f%%)\n", "adamw", 1e3 * tr.t_adam / steps, 100.0 * tr.t_adam / steps / total);

  /* Batch-1 inference: one unpadded sequence per call. */
  nn_tfm_work *w1 = NULL;
  if (nn_tfm_work_init(&w1, tr.m, 1, &err) != FINCH_OK) {
    fprintf(stderr, "bench_tfm: %s\n", err.msg);
    return 1;
  }
  printf("\n");
  enum { RUNS = 2000 };
  static double lat[RUNS];
  uint8_t *ones = malloc((size_t)T);
  memset(ones, 1, (size_t)T);
  for (int threads = 1; threads <= 2; threads++) {
    openblas_set_num_threads(threads);
    int lens[2] = {T < 12 ? T : 12, T};
    for (int li = 0; li < 2; li++) {
      nn_tfm_batch one = {.B = 1, .T = lens[li], .ids = ids, .mask = ones, .ng_offs = NULL, .ng_ids = NULL};
      for (int i = 0; i < 50; i++) nn_tfm_forward(tr.m, w1, &one, 0, NULL);
      for (int i = 0; i < RUNS; i++) {
        double s = now_s();
        nn_tfm_forward(tr.m, w1, &one, 0, NULL);
        lat[i] = now_s() - s;
      }
      qsort(lat, RUNS, sizeof *lat, cmp_double);
      printf("inference, batch 1, %2d tokens, %d thread%s: median %.3f ms, p99 %.3f ms\n", lens[li], threads,
             threads > 1 ? "s" : "", 1e3 * lat[RUNS / 2], 1e3 * lat[RUNS * 99 / 100]);
    }
  }
  free(ones);
  nn_tfm_work_free(w1);
  nn_tfm_work_free(tr.w);
  nn_tfm_free(tr.m);
  free(ids), free(mask), free(offs), free(ng), free(tr.y), free(tr.grads), free(tr.mom), free(tr.probs),
      free(tr.rowloss);
  return 0;
}
