#include "evaluate/metrics.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

int finch_metrics_compute(const int *gold, const int *pred, const float *conf, size_t n, size_t n_labels,
                          finch_metrics *out) {
  memset(out, 0, sizeof *out);
  out->per_label = calloc(n_labels ? n_labels : 1, sizeof *out->per_label);
  long long *tp = calloc(n_labels ? n_labels : 1, sizeof *tp);
  if (!out->per_label || !tp) {
    free(out->per_label);
    free(tp);
    out->per_label = NULL;
    return -1;
  }
  out->n = (long long)n;
  out->n_labels = n_labels;
  long long correct = 0;
  for (size_t i = 0; i < n; i++) {
    out->per_label[gold[i]].support++;
    out->per_label[pred[i]].predicted++;
    if (gold[i] == pred[i]) {
      tp[gold[i]]++;
      correct++;
    }
  }
  out->accuracy = n ? (double)correct / (double)n : 0;
  double f1_sum = 0;
  size_t present = 0;
  for (size_t l = 0; l < n_labels; l++) {
    finch_label_metrics *m = &out->per_label[l];
    m->precision = m->predicted ? (double)tp[l] / (double)m->predicted : 0;
    m->recall = m->support ? (double)tp[l] / (double)m->support : 0;
    m->f1 = m->precision + m->recall > 0 ? 2 * m->precision * m->recall / (m->precision + m->recall) : 0;
    if (m->support > 0) {
      f1_sum += m->f1;
      present++;
    }
  }
  out->macro_f1 = present ? f1_sum / (double)present : 0;
  if (conf && n) {
    double bin_conf[10] = {0}, bin_acc[10] = {0};
    long long bin_n[10] = {0};
    for (size_t i = 0; i < n; i++) {
      int b = (int)(conf[i] * 10);
      if (b > 9) b = 9;
      if (b < 0) b = 0;
      bin_conf[b] += conf[i];
      bin_acc[b] += gold[i] == pred[i];
      bin_n[b]++;
    }
    for (int b = 0; b < 10; b++)
      if (bin_n[b]) out->ece += fabs(bin_acc[b] - bin_conf[b]) / (double)n;
  }
  free(tp);
  return 0;
}

void finch_metrics_free(finch_metrics *m) {
  free(m->per_label);
  m->per_label = NULL;
}

static int cmp_double(const void *a, const void *b) {
  double x = *(const double *)a, y = *(const double *)b;
  return (x > y) - (x < y);
}

double finch_quantile(double *v, size_t n, double q) {
  if (!n) return 0;
  qsort(v, n, sizeof *v, cmp_double);
  size_t rank = (size_t)ceil(q * (double)n);
  if (rank < 1) rank = 1;
  return v[rank - 1];
}
