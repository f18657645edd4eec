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
  long long *support = calloc(n_labels ? n_labels : 1, sizeof *support);
  long long *predicted = calloc(n_labels ? n_labels : 1, sizeof *predicted);
  if (!support || !predicted) {
    free(support), free(predicted), free(tp);
    finch_metrics_free(out);
    return -1;
  }
  for (size_t l = 0; l < n_labels; l++) {
    support[l] = out->per_label[l].support;
    predicted[l] = out->per_label[l].predicted;
    finch_label_prf(tp[l], support[l], predicted[l], &out->per_label[l]);
  }
  out->macro_f1 = finch_macro_f1(tp, support, predicted, n_labels);
  free(support), free(predicted);
  if (conf && n) out->ece = finch_ece(conf, gold, pred, n, 10, NULL);
  free(tp);
  return 0;
}

void finch_label_prf(long long tp, long long support, long long predicted, finch_label_metrics *m) {
  m->support = support;
  m->predicted = predicted;
  m->precision = predicted ? (double)tp / (double)predicted : 0;
  m->recall = support ? (double)tp / (double)support : 0;
  m->f1 = m->precision + m->recall > 0 ? 2 * m->precision * m->recall / (m->precision + m->recall) : 0;
}

double finch_macro_f1(const long long *tp, const long long *support, const long long *predicted, size_t n_labels) {
  double f1_sum = 0;
  size_t present = 0;
  for (size_t l = 0; l < n_labels; l++) {
    if (support[l] <= 0) continue;
    finch_label_metrics m;
    finch_label_prf(tp[l], support[l], predicted[l], &m);
    f1_sum += m.f1;
    present++;
  }
  return present ? f1_sum / (double)present : 0;
}

double finch_ece(const float *conf, const int *gold, const int *pred, size_t n, size_t n_bins,
                 finch_calib_bin *bins) {
  if (bins)
    for (size_t b = 0; b < n_bins; b++)
      bins[b] = (finch_calib_bin){(double)b / (double)n_bins, (double)(b + 1) / (double)n_bins, 0, 0, 0};
  if (!n || !n_bins) return 0;
  double *bin_conf = calloc(n_bins, sizeof *bin_conf), *bin_acc = calloc(n_bins, sizeof *bin_acc);
  long long *bin_n = calloc(n_bins, sizeof *bin_n);
  double ece = 0;
  if (bin_conf && bin_acc && bin_n) {
    for (size_t i = 0; i < n; i++) {
      float x = conf[i] * (float)n_bins;
      size_t b = x > 0 ? (size_t)x : 0;
      if (b > n_bins - 1) b = n_bins - 1;
      bin_conf[b] += conf[i];
      bin_acc[b] += gold[i] == pred[i];
      bin_n[b]++;
    }
    for (size_t b = 0; b < n_bins; b++) {
      if (!bin_n[b]) continue;
      ece += fabs(bin_acc[b] - bin_conf[b]) / (double)n;
      if (bins) {
        bins[b].count = bin_n[b];
        bins[b].confidence = bin_conf[b] / (double)bin_n[b];
        bins[b].accuracy = bin_acc[b] / (double)bin_n[b];
      }
    }
  } else {
    ece = NAN;
  }
  free(bin_conf), free(bin_acc), free(bin_n);
  return ece;
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
