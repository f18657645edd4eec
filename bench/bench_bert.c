/* bench_bert: pooled sentence vectors per second of the pretrained BERT
 * encoder (nn/bert.h, all-MiniLM-L6-v2) at batch 1 and batch 32, on the CPU
 * with 2 BLAS threads and, when a device is found, on CUDA. The texts are
 * BANKING77's (cut at 128 tokens), or one repeated sentence without the data.
 *
 *   bench_bert [--frozen]
 *
 * The checkpoint comes from $FINCH_PRETRAINED_DIR/all-minilm-l6-v2
 * (scripts/fetch-pretrained.sh); without it the bench says so and exits 0.
 * --frozen also measures the frozen baseline: the pooled vectors of
 * BANKING77's train split less the stratified, seeded 10% holdout of
 * bench_sparse_lr (seed 42, the same rows), a softmax regression fitted on
 * them (nn/bert_head.h's defaults: full-batch Adam, 400 steps, L2 1e-4), and
 * its holdout accuracy. */
#include <cblas.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "core/csv.h"
#include "nn/bert.h"
#include "nn/bert_head.h"
#include "nn/model.h"
#include "nn/rng.h"

static double now_s(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

typedef struct {
  char **text, **label;
  size_t n, cap;
} rows;

static int read_rows(const char *path, rows *out) {
  FILE *f = fopen(path, "rb");
  if (!f) return -1;
  finch_csv *r = finch_csv_open(f, path);
  finch_err err = {0};
  const char *const header[] = {"text", "category"};
  if (!r || finch_csv_expect_header(r, header, 2, &err) != FINCH_OK) {
    finch_csv_close(r);
    fclose(f);
    return -1;
  }
  char **fields;
  size_t nf;
  int rc;
  while ((rc = finch_csv_next(r, &fields, &nf, &err)) != 0) {
    if (rc < 0 || nf != 2) continue;
    if (out->n == out->cap) {
      out->cap = out->cap ? out->cap * 2 : 1024;
      out->text = realloc(out->text, out->cap * sizeof(char *));
      out->label = realloc(out->label, out->cap * sizeof(char *));
    }
    out->text[out->n] = strdup(fields[0]);
    out->label[out->n++] = strdup(fields[1]);
  }
  finch_csv_close(r);
  fclose(f);
  return 0;
}

/* Vectors per second of embedding n texts in batches of batch on be: one
 * call, so one work area (and, on a device, one upload of the weights). */
static double rate(const nn_model *m, nn_backend *be, const char *const *texts, size_t n, int batch, float *out) {
  finch_err err = {0};
  double t0 = now_s();
  if (nn_model_bert_embed(m, be, texts, n, batch, out, &err) != FINCH_OK) {
    fprintf(stderr, "embed: %s\n", err.msg);
    return 0;
  }
  return (double)n / (now_s() - t0);
}

static int frozen(const nn_model *m, const rows *r) {
  const size_t D = nn_bert_get_config(nn_model_bert(m))->dim;
  char **labels = malloc(r->n * sizeof(char *));
  int32_t *y = malloc(r->n * sizeof(int32_t));
  size_t nl = 0;
  for (size_t i = 0; i < r->n; i++) {
    size_t j = 0;
    while (j < nl && strcmp(labels[j], r->label[i]) != 0) j++;
    if (j == nl) labels[nl++] = r->label[i];
    y[i] = (int32_t)j;
  }
  /* bench_sparse_lr's holdout: per label in order of first appearance, a
   * Fisher-Yates shuffle of its rows from one generator seeded 42, the first
   * (k + 5) / 10 held out. */
  char *held = calloc(r->n, 1);
  size_t *idx = malloc(r->n * sizeof(size_t));
  nn_rng rng;
  nn_rng_seed(&rng, 42, 0);
  for (size_t c = 0; c < nl; c++) {
    size_t k = 0;
    for (size_t i = 0; i < r->n; i++)
      if ((size_t)y[i] == c) idx[k++] = i;
    for (size_t i = k - 1; i > 0; i--) {
      size_t j = (size_t)nn_rng_below(&rng, i + 1), t = idx[i];
      idx[i] = idx[j], idx[j] = t;
    }
    for (size_t i = 0; i < (k + 5) / 10; i++) held[idx[i]] = 1;
  }
  float *X = malloc(r->n * D * sizeof *X);
  finch_err err = {0};
  double t0 = now_s();
  if (nn_model_bert_embed(m, NULL, (const char *const *)r->text, r->n, 32, X, &err) != FINCH_OK) {
    fprintf(stderr, "embed: %s\n", err.msg);
    return 1;
  }
  double emb_s = now_s() - t0;
  size_t ntr = 0, nho = 0;
  float *Xtr = malloc(r->n * D * sizeof *Xtr), *Xho = malloc(r->n * D * sizeof *Xho);
  int32_t *ytr = malloc(r->n * sizeof *ytr), *yho = malloc(r->n * sizeof *yho);
  for (size_t i = 0; i < r->n; i++) {
    if (held[i]) memcpy(Xho + nho * D, X + i * D, D * sizeof *X), yho[nho++] = y[i];
    else memcpy(Xtr + ntr * D, X + i * D, D * sizeof *X), ytr[ntr++] = y[i];
  }
  float *W = malloc(nl * D * sizeof *W), *b = malloc(nl * sizeof *b);
  t0 = now_s();
  const nn_bert_head_config hc = nn_bert_head_defaults();
  if (nn_bert_head_fit(Xtr, ytr, ntr, D, nl, &hc, W, b, &err) != FINCH_OK) {
    fprintf(stderr, "head: %s\n", err.msg);
    return 1;
  }
  double fit_s = now_s() - t0;
  size_t right = 0, right_tr = 0;
  for (int pass = 0; pass < 2; pass++) {
    const float *Xs = pass ? Xho : Xtr;
    const int32_t *ys = pass ? yho : ytr;
    size_t n = pass ? nho : ntr, *ok = pass ? &right : &right_tr;
    for (size_t i = 0; i < n; i++) {
      size_t best = 0;
      float bz = -INFINITY;
      for (size_t k = 0; k < nl; k++) {
        float z = b[k];
        for (size_t d = 0; d < D; d++) z += W[k * D + d] * Xs[i * D + d];
        if (z > bz) bz = z, best = k;
      }
      *ok += (int32_t)best == ys[i];
    }
  }
  printf("frozen baseline: %zu train / %zu holdout rows, %zu labels; embedding %.1f s, fit %.1f s\n", ntr, nho, nl,
         emb_s, fit_s);
  printf("  train accuracy %.2f%%  holdout accuracy %.2f%%\n", 100.0 * right_tr / ntr, 100.0 * right / nho);
  free(labels), free(y), free(held), free(idx), free(X), free(Xtr), free(Xho), free(ytr), free(yho), free(W), free(b);
  return 0;
}

int main(int argc, char **argv) {
  const int do_frozen = argc > 1 && strcmp(argv[1], "--frozen") == 0;
  const char *root = getenv("FINCH_PRETRAINED_DIR");
  char mdir[4096];
  snprintf(mdir, sizeof mdir, "%s/all-minilm-l6-v2", root ? root : "");
  openblas_set_num_threads(2);
  finch_err err = {0};
  nn_model *m = NULL;
  const char *one_label[1] = {"x"};
  if (!root || nn_model_bert_from_dir(&m, mdir, 128, one_label, 1, NULL, NULL, &err) != FINCH_OK) {
    printf("SKIP: %s\n", root ? err.msg : "FINCH_PRETRAINED_DIR is not set; run scripts/fetch-pretrained.sh");
    return 0;
  }
  const char *data = getenv("FINCH_DATA_DIR");
  char path[4096];
  snprintf(path, sizeof path, "%s/banking77/train.csv", data ? data : FINCH_SOURCE_DIR "/../shared/data");
  rows r = {0};
  if (read_rows(path, &r) != 0 || r.n == 0) {
    printf("no BANKING77 at %s: one repeated sentence instead\n", path);
    r.cap = r.n = 2048;
    r.text = malloc(r.n * sizeof(char *));
    r.label = malloc(r.n * sizeof(char *));
    for (size_t i = 0; i < r.n; i++) r.text[i] = strdup("Why is my card payment still pending after two days?"), r.label[i] = strdup("x");
  }
  const size_t D = nn_bert_get_config(nn_model_bert(m))->dim, n1 = r.n < 200 ? r.n : 200,
               n32 = r.n < 2048 ? r.n : 2048;
  float *out = malloc(n32 * D * sizeof *out);
  printf("all-MiniLM-L6-v2 (%zu parameters), BANKING77 texts, 128 tokens at most\n", nn_bert_n_params(nn_model_bert(m)));
  rate(m, NULL, (const char *const *)r.text, 8, 1, out); /* warm-up */
  printf("  cpu (2 threads)  batch 1: %7.1f vectors/s  batch 32: %7.1f vectors/s\n",
         rate(m, NULL, (const char *const *)r.text, n1, 1, out), rate(m, NULL, (const char *const *)r.text, n32, 32, out));
  nn_backend *cu = NULL;
  if (nn_backend_open(&cu, NN_DEVICE_CUDA, &err) == FINCH_OK) {
    rate(m, cu, (const char *const *)r.text, 64, 32, out); /* warm-up */
    printf("  cuda             batch 1: %7.1f vectors/s  batch 32: %7.1f vectors/s\n",
           rate(m, cu, (const char *const *)r.text, n1, 1, out), rate(m, cu, (const char *const *)r.text, n32, 32, out));
    nn_backend_free(cu);
  } else {
    printf("  cuda: not run: %s\n", err.msg);
  }
  int rc = do_frozen ? frozen(m, &r) : 0;
  free(out);
  for (size_t i = 0; i < r.n; i++) free(r.text[i]), free(r.label[i]);
  free(r.text), free(r.label);
  nn_model_free(m);
  return rc;
}
