/* Classification metrics over label indices in [0, n_labels). */
#ifndef FINCH_EVALUATE_METRICS_H
#define FINCH_EVALUATE_METRICS_H

#include <stddef.h>

typedef struct {
  double precision, recall, f1;
  long long support;   /* gold rows of this label */
  long long predicted; /* rows predicted as this label */
} finch_label_metrics;

typedef struct {
  long long n;
  double accuracy;
  double macro_f1;   /* mean F1 over labels with support > 0 */
  double ece;        /* expected calibration error, 10 equal-width confidence bins */
  finch_label_metrics *per_label; /* n_labels entries, malloc'd */
  size_t n_labels;
} finch_metrics;

/* gold[i], pred[i] in [0, n_labels); conf[i] the predicted label's
 * probability (may be NULL: ece is then 0). */
int finch_metrics_compute(const int *gold, const int *pred, const float *conf, size_t n, size_t n_labels,
                          finch_metrics *out);
void finch_metrics_free(finch_metrics *m);

/* The q-quantile (0..1) of v[0..n) by the nearest-rank method; sorts v. */
double finch_quantile(double *v, size_t n, double q);

#endif
