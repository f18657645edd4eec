/* Batch-1 prediction latency and accuracy of several model files on the
 * same labelled texts, in one run: each round predicts every text once with
 * each model in turn (interleaved, so background load falls on all alike).
 *
 * Usage: bench_latency HOLDOUT.csv MODEL.fnm [MODEL.fnm ...] [--rounds N]
 * HOLDOUT.csv has a header and columns text,label (bench/bench_teacher.sh
 * writes one: finch's own seeded holdout). Prints, per model: parameters,
 * accuracy, median and p99 latency in microseconds, and the ratio of each
 * model's median to the first model's. One thread; OpenBLAS is not used by
 * single-text prediction of the bow and slr models. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "core/csv.h"
#include "nn/model_arch.h"

static double now_us(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (double)ts.tv_sec * 1e6 + 1e-3 * (double)ts.tv_nsec;
}

static int cmp_d(const void *a, const void *b) {
  double x = *(const double *)a, y = *(const double *)b;
  return (x > y) - (x < y);
}

int main(int argc, char **argv) {
  int rounds = 3, nm = 0;
  const char *csv = NULL, *paths[16];
  for (int i = 1; i < argc; i++) {
    if (!strcmp(argv[i], "--rounds") && i + 1 < argc) rounds = atoi(argv[++i]);
    else if (!csv) csv = argv[i];
    else if (nm < 16) paths[nm++] = argv[i];
  }
  if (!csv || nm == 0 || rounds < 1) {
    fprintf(stderr, "usage: bench_latency HOLDOUT.csv MODEL.fnm [MODEL.fnm ...] [--rounds N]\n");
    return 2;
  }
  FILE *fp = fopen(csv, "r");
  if (!fp) {
    perror(csv);
    return 1;
  }
  finch_csv *r = finch_csv_open(fp, csv);
  finch_err err;
  const char *hdr[] = {"text", "label"};
  if (finch_csv_expect_header(r, hdr, 2, &err)) {
    fprintf(stderr, "%s\n", err.msg);
    return 1;
  }
  size_t n = 0, cap = 0;
  char **texts = NULL, **labels = NULL, **f;
  size_t nf;
  int k;
  while ((k = finch_csv_next(r, &f, &nf, &err)) > 0) {
    if (nf < 2) continue;
    if (n == cap) {
      cap = cap ? cap * 2 : 1024;
      texts = realloc(texts, cap * sizeof *texts);
      labels = realloc(labels, cap * sizeof *labels);
    }
    texts[n] = strdup(f[0]);
    labels[n++] = strdup(f[1]);
  }
  if (k < 0) {
    fprintf(stderr, "%s\n", err.msg);
    return 1;
  }
  finch_csv_close(r);
  fclose(fp);
  nn_model *m[16];
  for (int j = 0; j < nm; j++)
    if (nn_model_load(&m[j], paths[j], &err)) {
      fprintf(stderr, "%s\n", err.msg);
      return 1;
    }
  double *lat = malloc((size_t)nm * n * (size_t)rounds * sizeof *lat);
  size_t *ok = calloc((size_t)nm, sizeof *ok);
  for (int rd = 0; rd < rounds; rd++)
    for (size_t i = 0; i < n; i++)
      for (int j = 0; j < nm; j++) {
        double t0 = now_us();
        int p = nn_model_predict(m[j], texts[i], NULL, 1.0f);
        lat[((size_t)j * rounds + rd) * n + i] = now_us() - t0;
        if (rd == 0 && p >= 0 && !strcmp(nn_model_label(m[j], (size_t)p), labels[i])) ok[j]++;
      }
  printf("%zu texts, %d rounds, batch 1, one thread\n", n, rounds);
  printf("%-10s %10s %9s %10s %10s %8s  %s\n", "arch", "params", "accuracy", "median_us", "p99_us", "vs_first", "file");
  double first = 0;
  for (int j = 0; j < nm; j++) {
    double *l = lat + (size_t)j * rounds * n;
    size_t tot = (size_t)rounds * n;
    qsort(l, tot, sizeof *l, cmp_d);
    double med = l[tot / 2], p99 = l[(size_t)(0.99 * (double)(tot - 1))];
    if (j == 0) first = med;
    printf("%-10s %10zu %8.2f%% %10.1f %10.1f %7.2fx  %s\n", nn_model_arch_name(m[j]), nn_model_n_params(m[j]),
           100.0 * (double)ok[j] / (double)n, med, p99, first / med, paths[j]);
  }
  for (int j = 0; j < nm; j++) nn_model_free(m[j]);
  for (size_t i = 0; i < n; i++) free(texts[i]), free(labels[i]);
  free(texts);
  free(labels);
  free(lat);
  free(ok);
  return 0;
}
