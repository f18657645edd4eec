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
 * probability (may be NULL: ece is then 0; else finch_ece over 10 bins). */
int finch_metrics_compute(const int *gold, const int *pred, const float *conf, size_t n, size_t n_labels,
                          finch_metrics *out);
void finch_metrics_free(finch_metrics *m);

/* Precision, recall and F1 of one label from its counts: tp rows predicted
 * right, support gold rows, predicted rows predicted as it; a ratio whose
 * denominator is 0 is 0, and F1 is 0 when precision + recall is 0. Fills m's
 * precision, recall, f1, support and predicted. */
void finch_label_prf(long long tp, long long support, long long predicted, finch_label_metrics *m);

/* The macro-F1 of finch_metrics: the mean of finch_label_prf's F1 over the
 * labels with support > 0, in label order (0 when none has). tp, support,
 * predicted have n_labels entries each. */
double finch_macro_f1(const long long *tp, const long long *support, const long long *predicted, size_t n_labels);

/* One equal-width confidence bin of a reliability diagram. */
typedef struct {
  double lo, hi;       /* the bin's confidence range: [b / n_bins, (b + 1) / n_bins) */
  long long count;     /* rows whose confidence falls in it */
  double confidence;   /* their mean confidence (0 when count is 0) */
  double accuracy;     /* the share of them predicted right (0 when count is 0) */
} finch_calib_bin;

/* The expected calibration error over n_bins equal-width confidence bins:
 * sum over bins of |correct - sum of confidence| / n, that is the bins'
 * |accuracy - confidence| weighted by their share of rows. Row i falls in bin
 * floor(conf[i] * n_bins), the product taken in single precision as conf is
 * a float, clamped to [0, n_bins - 1] (confidence 1 in the last bin). It is
 * right when gold[i] == pred[i]. bins (n_bins, may be NULL) receives the
 * table. 0 when n or n_bins is 0. */
double finch_ece(const float *conf, const int *gold, const int *pred, size_t n, size_t n_bins,
                 finch_calib_bin *bins);

/* The q-quantile (0..1) of v[0..n) by the nearest-rank method; sorts v. */
double finch_quantile(double *v, size_t n, double q);

#endif
