#include "bench/bench_data.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/csv.h"
#include "nn/rng.h"

int bench_read_rows(const char *path, bench_rows *out) {
  FILE *f = fopen(path, "rb");
  if (!f) return -1;
  finch_csv *r = finch_csv_open(f, path);
  finch_err err = {0};
  const char *const header[] = {"text", "category"};
  if (!r || finch_csv_expect_header(r, header, 2, &err) != FINCH_OK) {
    fprintf(stderr, "%s\n", err.msg);
    finch_csv_close(r);
    fclose(f);
    return -1;
  }
  char **fields;
  size_t nf;
  int rc;
  while ((rc = finch_csv_next(r, &fields, &nf, &err)) != 0) {
    if (rc < 0 || nf != 2) {
      fprintf(stderr, "%s:%zu: %s\n", path, finch_csv_line(r), rc < 0 ? err.msg : "expected 2 fields");
      continue;
    }
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

size_t bench_label_ids(const bench_rows *r, char **labels, int32_t *y) {
  size_t nl = 0;
  for (size_t i = 0; i < r->n; i++) {
    size_t j = 0;
    while (j < nl && strcmp(labels[j], r->label[i]) != 0) j++;
    if (j == nl) labels[nl++] = r->label[i];
    y[i] = (int32_t)j;
  }
  return nl;
}

char *bench_holdout(const bench_rows *r, const int32_t *y, size_t nl) {
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
  free(idx);
  return held;
}
