/* Trains the sparse TF-IDF + logistic regression model (nn/sparse_lr.h) on
 * BANKING77's train split less a stratified, seeded 10% holdout, and prints
 * holdout accuracy, macro-F1, log-loss and calibration error, training time
 * and per-query predict latency. It also writes the split as two CSV files so
 * that bench/peers.py (scikit-learn, fastText) trains and scores on exactly
 * the same rows.
 *
 *   bench_sparse_lr [--train-csv PATH] [--holdout-csv PATH] [key=value ...]
 *
 * key=value overrides a field of nn_sparse_lr_defaults() (word_ngrams,
 * char_min, char_max, min_df, max_features, C, epochs, seed). The CSV paths
 * default to $FINCH_SLR_TRAIN_CSV and $FINCH_SLR_HOLDOUT_CSV, else
 * banking77_train90.csv and banking77_holdout10.csv in the working directory;
 * both have the header text,label and RFC 4180 quoting.
 * Data: $FINCH_DATA_DIR/banking77/train.csv, else
 * FINCH_SOURCE_DIR/../shared/data/banking77/train.csv.
 *
 * The holdout (seed 42), exactly:
 *   1. labels are numbered in order of first appearance in train.csv;
 *   2. one xoshiro256** generator, nn_rng_seed(&rng, 42, 0), serves all labels;
 *   3. for each label in that order: its row indices in file order are
 *      shuffled by Fisher-Yates (i from k-1 down to 1, j = nn_rng_below(i+1),
 *      swap), and the first (k + 5) / 10 (10% rounded) of them are held out;
 *   4. both files keep the rows in file order. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "bench/bench_data.h"
#include "nn/sparse_lr.h"

#ifndef FINCH_SOURCE_DIR
#define FINCH_SOURCE_DIR "."
#endif

static void csv_field(FILE *f, const char *s) {
  fputc('"', f);
  for (; *s; s++) {
    if (*s == '"') fputc('"', f);
    fputc(*s, f);
  }
  fputc('"', f);
}

/* Writes the rows with held[i] == want as text,label. */
static int write_split(const char *path, const bench_rows *r, const char *held, char want) {
  FILE *f = fopen(path, "wb");
  if (!f) return -1;
  fputs("text,label\n", f);
  for (size_t i = 0; i < r->n; i++) {
    if (held[i] != want) continue;
    csv_field(f, r->text[i]);
    fputc(',', f);
    csv_field(f, r->label[i]);
    fputc('\n', f);
  }
  return fclose(f);
}

static double now_s(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (double)ts.tv_sec + ts.tv_nsec * 1e-9;
}

static int apply(nn_sparse_lr_config *c, const char *kv) {
  char key[64];
  const char *eq = strchr(kv, '=');
  if (!eq || (size_t)(eq - kv) >= sizeof key) return -1;
  memcpy(key, kv, (size_t)(eq - kv));
  key[eq - kv] = '\0';
  double v = atof(eq + 1);
#define U(name)                                                                                    \
  if (strcmp(key, #name) == 0) return c->name = (uint32_t)v, 0;
  U(word_ngrams) U(char_min) U(char_max) U(min_df) U(max_features) U(epochs)
#undef U
  if (strcmp(key, "C") == 0) return c->C = (float)v, 0;
  if (strcmp(key, "seed") == 0) return c->seed = (uint64_t)v, 0;
  return -1;
}

static int cmp_double(const void *a, const void *b) {
  double x = *(const double *)a, y = *(const double *)b;
  return (x > y) - (x < y);
}

int main(int argc, char **argv) {
  nn_sparse_lr_config cfg = nn_sparse_lr_defaults();
  const char *train_csv = getenv("FINCH_SLR_TRAIN_CSV"), *holdout_csv = getenv("FINCH_SLR_HOLDOUT_CSV");
  if (!train_csv) train_csv = "banking77_train90.csv";
  if (!holdout_csv) holdout_csv = "banking77_holdout10.csv";
  for (int i = 1; i < argc; i++) {
    if (strcmp(argv[i], "--train-csv") == 0 && i + 1 < argc) train_csv = argv[++i];
    else if (strcmp(argv[i], "--holdout-csv") == 0 && i + 1 < argc) holdout_csv = argv[++i];
    else if (apply(&cfg, argv[i]) != 0) {
      fprintf(stderr, "usage: %s [--train-csv PATH] [--holdout-csv PATH] [key=value ...]\nunknown argument %s\n",
              argv[0], argv[i]);
      return 2;
    }
  }

  const char *dir = getenv("FINCH_DATA_DIR");
  char path[4096];
  snprintf(path, sizeof path, "%s/banking77/train.csv", dir ? dir : FINCH_SOURCE_DIR "/../shared/data");
  bench_rows r = {0};
  if (bench_read_rows(path, &r) != 0 || r.n == 0) {
    printf("SKIP: cannot read %s (set FINCH_DATA_DIR)\n", path);
    return 0;
  }
  char **labels = malloc(r.n * sizeof(char *));
  int32_t *y = malloc(r.n * sizeof(int32_t));
  const size_t nl = bench_label_ids(&r, labels, y);
  char *held = bench_holdout(&r, y, nl);
  size_t ntr = 0, nho = 0;
  const char **tr_text = malloc(r.n * sizeof(char *)), **ho_text = malloc(r.n * sizeof(char *));
  int32_t *tr_y = malloc(r.n * sizeof(int32_t)), *ho_y = malloc(r.n * sizeof(int32_t));
  for (size_t i = 0; i < r.n; i++) {
    if (held[i]) ho_text[nho] = r.text[i], ho_y[nho++] = y[i];
    else tr_text[ntr] = r.text[i], tr_y[ntr++] = y[i];
  }
  if (write_split(train_csv, &r, held, 0) != 0 || write_split(holdout_csv, &r, held, 1) != 0) {
    fprintf(stderr, "cannot write %s / %s\n", train_csv, holdout_csv);
    return 1;
  }
  printf("banking77: %zu texts, %zu labels; train %zu -> %s, holdout %zu -> %s\n", r.n, nl, ntr, train_csv, nho,
         holdout_csv);

  finch_err err = {0};
  nn_sparse_lr *m = NULL;
  double t0 = now_s();
  if (nn_sparse_lr_train(&m, tr_text, tr_y, ntr, nl, &cfg, &err) != FINCH_OK) {
    fprintf(stderr, "train: %s\n", err.msg);
    return 1;
  }
  double train_s = now_s() - t0;

  /* Holdout: accuracy, macro-F1, mean log-loss, ECE over 15 equal-width
   * confidence bins, and per-query latency (one thread, probabilities on). */
  size_t *tp = calloc(nl, sizeof(size_t)), *fp = calloc(nl, sizeof(size_t)), *fn = calloc(nl, sizeof(size_t));
  enum { BINS = 15 };
  double bin_conf[BINS] = {0}, bin_acc[BINS] = {0}, bin_n[BINS] = {0}, nll = 0.0, conf = 0.0;
  double *lat = malloc(nho * sizeof(double));
  float *p = malloc(nl * sizeof(float));
  size_t ok = 0;
  for (size_t i = 0; i < nho; i++) {
    double q0 = now_s();
    int pred = nn_sparse_lr_predict(m, ho_text[i], p, 1.0f);
    lat[i] = (now_s() - q0) * 1e6;
    if (pred < 0) {
      fprintf(stderr, "holdout %zu: predict failed\n", i);
      return 1;
    }
    int hit = pred == ho_y[i];
    ok += (size_t)hit;
    if (hit) tp[pred]++;
    else fp[pred]++, fn[ho_y[i]]++;
    nll -= log(fmax((double)p[ho_y[i]], 1e-12));
    conf += p[pred];
    int b = (int)(p[pred] * BINS);
    b = b >= BINS ? BINS - 1 : b;
    bin_conf[b] += p[pred], bin_acc[b] += hit, bin_n[b] += 1;
  }
  double f1 = 0.0, ece = 0.0;
  for (size_t c = 0; c < nl; c++) {
    double d = 2.0 * (double)tp[c] + (double)fp[c] + (double)fn[c];
    f1 += d > 0 ? 2.0 * (double)tp[c] / d : 0.0;
  }
  f1 /= (double)nl;
  for (int b = 0; b < BINS; b++) ece += fabs(bin_acc[b] - bin_conf[b]) / (double)nho;
  double mean_lat = 0.0;
  for (size_t i = 0; i < nho; i++) mean_lat += lat[i] / (double)nho;
  qsort(lat, nho, sizeof(double), cmp_double);
  printf("finch sparse LR word 1-%u char %u-%u min_df %u max_features %u C %g epochs %u: %zu features, %zu params\n",
         cfg.word_ngrams, cfg.char_min, cfg.char_max, cfg.min_df, cfg.max_features, (double)cfg.C, cfg.epochs,
         nn_sparse_lr_n_features(m), nn_sparse_lr_n_params(m));
  printf("  holdout accuracy %.2f%%  macro-F1 %.2f%%  log-loss %.4f  ECE %.4f  mean confidence %.2f%% (%zu texts)\n",
         100.0 * ok / nho, 100.0 * f1, nll / (double)nho, ece, 100.0 * conf / nho, nho);
  printf("  train %.2f s (one thread); predict %.1f us/query mean, %.1f p50, %.1f p99\n", train_s, mean_lat,
         lat[nho / 2], lat[nho * 99 / 100]);

  unsigned char *blob = NULL;
  size_t blen = 0;
  if (nn_sparse_lr_save(m, &blob, &blen, &err) == FINCH_OK) printf("  model blob %.1f MiB\n", blen / 1048576.0);
  free(blob);
  nn_sparse_lr_free(m);
  return 0;
}
