/* Trains the default teacher and student on BANKING77's train split less a
 * stratified, seeded 10% holdout, and prints holdout accuracy, training time
 * and predict latency.
 *
 *   bench_nn [all|teacher|student|kd] [key=value ...]
 *
 * key=value overrides a field of both configs (dim, hidden, buckets, minn,
 * maxn, word_ngrams, min_count, epochs, batch, lr, wd, warmup, ls, dropout,
 * seed; alpha and tau for kd). Data: $FINCH_DATA_DIR/banking77/train.csv,
 * else FINCH_SOURCE_DIR/../shared/data/banking77/train.csv. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "nn/model.h"
#include "nn/rng.h"

#ifndef FINCH_SOURCE_DIR
#define FINCH_SOURCE_DIR "."
#endif

typedef struct {
  char **text;
  char **label;
  size_t n, cap;
} rows;

/* A minimal RFC 4180 reader for two-column files: quoted fields, "" escapes,
 * newlines inside quotes. Returns 0, or -1 with a message on stderr. */
static int read_csv2(const char *path, rows *out) {
  FILE *f = fopen(path, "rb");
  if (!f) return -1;
  size_t cap = 1 << 20, len = 0;
  char *buf = malloc(cap);
  size_t k;
  while (buf && (k = fread(buf + len, 1, cap - len, f)) > 0) {
    len += k;
    if (len == cap) buf = realloc(buf, cap *= 2);
  }
  fclose(f);
  if (!buf) return -1;
  char *field[2] = {0};
  size_t fi = 0, line = 1;
  char *cur = malloc(len + 1);
  size_t cl = 0;
  int inq = 0, header = 1;
  for (size_t i = 0; i <= len; i++) {
    char c = i < len ? buf[i] : '\n';
    if (inq) {
      if (c == '"' && i + 1 < len && buf[i + 1] == '"') cur[cl++] = '"', i++;
      else if (c == '"') inq = 0;
      else cur[cl++] = c;
      continue;
    }
    if (c == '"') inq = 1;
    else if (c == ',' || c == '\n') {
      cur[cl] = '\0';
      if (fi < 2) field[fi] = strdup(cur);
      fi++;
      cl = 0;
      if (c == '\n') {
        line++;
        if (fi == 2 && !header) {
          if (out->n == out->cap) {
            out->cap = out->cap ? out->cap * 2 : 1024;
            out->text = realloc(out->text, out->cap * sizeof(char *));
            out->label = realloc(out->label, out->cap * sizeof(char *));
          }
          out->text[out->n] = field[0];
          out->label[out->n++] = field[1];
        } else {
          if (fi != 2 && !(fi == 1 && field[0][0] == '\0'))
            fprintf(stderr, "%s:%zu: expected 2 fields, got %zu\n", path, line - 1, fi);
          free(field[0]);
          free(fi >= 2 ? field[1] : NULL);
        }
        header = 0;
        fi = 0;
        field[0] = field[1] = NULL;
      }
    } else if (c != '\r') cur[cl++] = c;
  }
  free(cur);
  free(buf);
  return 0;
}

static double now_s(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (double)ts.tv_sec + ts.tv_nsec * 1e-9;
}

static void apply(nn_train_config *c, nn_kd_config *kd, const char *kv) {
  char key[64];
  const char *eq = strchr(kv, '=');
  if (!eq || (size_t)(eq - kv) >= sizeof key) return;
  memcpy(key, kv, (size_t)(eq - kv));
  key[eq - kv] = '\0';
  double v = atof(eq + 1);
#define U(name) if (strcmp(key, #name) == 0) c->name = (uint32_t)v;
  U(dim) U(hidden) U(buckets) U(minn) U(maxn) U(word_ngrams) U(min_count) U(epochs) U(batch)
#undef U
  if (strcmp(key, "lr") == 0) c->lr = (float)v;
  if (strcmp(key, "wd") == 0) c->weight_decay = (float)v;
  if (strcmp(key, "warmup") == 0) c->warmup = (float)v;
  if (strcmp(key, "ls") == 0) c->label_smoothing = (float)v;
  if (strcmp(key, "dropout") == 0) c->dropout = (float)v;
  if (strcmp(key, "seed") == 0) c->seed = (uint64_t)v;
  if (strcmp(key, "alpha") == 0) kd->alpha = (float)v;
  if (strcmp(key, "tau") == 0) kd->temperature = (float)v;
}

static double accuracy(const nn_model *m, char **texts, const int32_t *y, size_t n, double *lat_us) {
  size_t ok = 0;
  double t0 = now_s();
  for (size_t i = 0; i < n; i++) ok += nn_model_predict(m, texts[i], NULL, 1.0f) == y[i];
  if (lat_us) *lat_us = (now_s() - t0) / (double)n * 1e6;
  return (double)ok / (double)n;
}

static nn_model *train_one(const char *name, const nn_dataset *ds, char **labels, size_t nl,
                           const nn_train_config *cfg, const nn_kd_config *kd, char **ho_text,
                           const int32_t *ho_y, size_t nho) {
  finch_err err = {0};
  nn_model *m = NULL;
  double t0 = now_s();
  if (nn_model_train(&m, ds, (const char *const *)labels, nl, cfg, kd, NULL, NULL, NULL, &err) != FINCH_OK) {
    fprintf(stderr, "%s: %s\n", name, err.msg);
    return NULL;
  }
  double dt = now_s() - t0, lat;
  double acc = accuracy(m, ho_text, ho_y, nho, &lat);
  printf("%-8s dim %3u hidden %3u buckets %7u epochs %2u batch %3u lr %.4g: holdout %.2f%% (%zu), "
         "train %.1f s, predict %.1f us/text, %zu params\n",
         name, cfg->dim, cfg->hidden, cfg->buckets, cfg->epochs, cfg->batch, (double)cfg->lr, acc * 100,
         nho, dt, lat, nn_model_n_params(m));
  fflush(stdout);
  return m;
}

int main(int argc, char **argv) {
  const char *mode = argc > 1 ? argv[1] : "all";
  nn_train_config tc = nn_train_config_teacher(), sc = nn_train_config_student();
  nn_kd_config kd = {.alpha = 0.5f, .temperature = 2.0f};
  nn_train_config *only = NULL;
  if (strcmp(mode, "teacher") == 0) only = &tc;
  if (strcmp(mode, "student") == 0 || strcmp(mode, "kd") == 0) only = &sc;
  for (int i = 2; i < argc; i++) {
    if (only) apply(only, &kd, argv[i]);
    else apply(&tc, &kd, argv[i]), apply(&sc, &kd, argv[i]);
  }

  const char *dir = getenv("FINCH_DATA_DIR");
  char path[4096];
  snprintf(path, sizeof path, "%s/banking77/train.csv", dir ? dir : FINCH_SOURCE_DIR "/../shared/data");
  rows r = {0};
  if (read_csv2(path, &r) != 0 || r.n == 0) {
    printf("SKIP: cannot read %s (set FINCH_DATA_DIR)\n", path);
    return 0;
  }
  /* Labels in order of first appearance. */
  char **labels = malloc(r.n * sizeof(char *));
  int32_t *y = malloc(r.n * sizeof(int32_t));
  size_t nl = 0;
  for (size_t i = 0; i < r.n; i++) {
    size_t j = 0;
    while (j < nl && strcmp(labels[j], r.label[i]) != 0) j++;
    if (j == nl) labels[nl++] = r.label[i];
    y[i] = (int32_t)j;
  }
  /* Stratified 10% holdout: per label, a seeded shuffle, the first tenth held out. */
  char *held = calloc(r.n, 1);
  size_t *idx = malloc(r.n * sizeof(size_t));
  nn_rng rng;
  nn_rng_seed(&rng, 77, 0);
  for (size_t c = 0; c < nl; c++) {
    size_t k = 0;
    for (size_t i = 0; i < r.n; i++)
      if ((size_t)y[i] == c) idx[k++] = i;
    for (size_t i = k - 1; i > 0; i--) {
      size_t j = (size_t)nn_rng_below(&rng, i + 1), t = idx[i];
      idx[i] = idx[j], idx[j] = t;
    }
    size_t h = (k + 5) / 10;
    for (size_t i = 0; i < h; i++) held[idx[i]] = 1;
  }
  size_t ntr = 0, nho = 0;
  char **tr_text = malloc(r.n * sizeof(char *)), **ho_text = malloc(r.n * sizeof(char *));
  int32_t *tr_y = malloc(r.n * sizeof(int32_t)), *ho_y = malloc(r.n * sizeof(int32_t));
  for (size_t i = 0; i < r.n; i++) {
    if (held[i]) ho_text[nho] = r.text[i], ho_y[nho++] = y[i];
    else tr_text[ntr] = r.text[i], tr_y[ntr++] = y[i];
  }
  printf("banking77: %zu texts, %zu labels; train %zu, holdout %zu\n", r.n, nl, ntr, nho);
  nn_dataset ds = {.texts = (const char *const *)tr_text, .labels = tr_y, .soft = NULL, .n = ntr};

  nn_model *teacher = NULL;
  if (strcmp(mode, "all") == 0 || strcmp(mode, "teacher") == 0 || strcmp(mode, "kd") == 0)
    teacher = train_one("teacher", &ds, labels, nl, &tc, NULL, ho_text, ho_y, nho);
  if (strcmp(mode, "all") == 0 || strcmp(mode, "student") == 0) {
    nn_model *s = train_one("student", &ds, labels, nl, &sc, NULL, ho_text, ho_y, nho);
    nn_model_free(s);
  }
  if (teacher && (strcmp(mode, "all") == 0 || strcmp(mode, "kd") == 0)) {
    float *soft = malloc(ntr * nl * sizeof(float));
    for (size_t i = 0; i < ntr; i++) nn_model_predict(teacher, tr_text[i], soft + i * nl, kd.temperature);
    nn_dataset kds = ds;
    kds.soft = soft;
    char name[64];
    snprintf(name, sizeof name, "kd a%.2g t%.2g", (double)kd.alpha, (double)kd.temperature);
    nn_model *s = train_one(name, &kds, labels, nl, &sc, &kd, ho_text, ho_y, nho);
    nn_model_free(s);
    free(soft);
  }
  nn_model_free(teacher);
  for (size_t i = 0; i < r.n; i++) free(r.text[i]), free(r.label[i]);
  free(r.text), free(r.label), free(labels), free(y), free(held), free(idx);
  free(tr_text), free(ho_text), free(tr_y), free(ho_y);
  return 0;
}
