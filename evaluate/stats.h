/* The statistics of an evaluation report, over plain arrays: bootstrap
 * confidence intervals, McNemar's test between two models, calibration
 * (reliability bins, ECE, temperature scaling), the accuracy/coverage curve,
 * the accuracy-latency Pareto front and the most-confused label pairs.
 *
 * Every function is pure and deterministic: the bootstrap draws from
 * core/rng.h seeded by the caller, so a seed gives the same interval on
 * every platform. Labels are indices in [0, C); the callers check ranges
 * (finch_results_json does). The definitions are those of
 * evaluate/metrics.h: macro-F1 is finch_macro_f1, ECE is finch_ece. */
#ifndef FINCH_EVALUATE_STATS_H
#define FINCH_EVALUATE_STATS_H

#include <stddef.h>
#include <stdint.h>

#include "evaluate/metrics.h"

#define FINCH_STATS_BOOTSTRAP_DEFAULT 1000
#define FINCH_STATS_CALIB_BINS 15

/* A point estimate with its 95% percentile bootstrap interval. */
typedef struct {
  double value, lo, hi;
} finch_estimate;

typedef struct {
  finch_estimate accuracy, macro_f1;
  int resamples; /* B */
} finch_bootstrap;

/* The percentile bootstrap: B resamples (0 = FINCH_STATS_BOOTSTRAP_DEFAULT)
 * of the n paired rows (gold, pred), each n rows drawn with replacement by
 * finch_rng_below from one finch_rng seeded with seed; accuracy and macro-F1
 * of each resample; lo and hi the nearest-rank 2.5% and 97.5% quantiles
 * (finch_quantile) of the B values. value is the figure on the rows
 * themselves. Returns 0, -1 when n or C is 0 or B < 0, -2 out of memory. */
int finch_stats_bootstrap(const int32_t *gold, const int32_t *pred, size_t n, size_t C, int B,
                          unsigned long long seed, finch_bootstrap *out);

/* The lower and upper nearest-rank 2.5% / 97.5% quantiles of v[0..n)
 * (sorted in place): the interval the bootstrap reports. */
void finch_stats_percentile_ci(double *v, size_t n, double *lo, double *hi);

/* McNemar's test on the paired correctness of models A and B. */
typedef struct {
  long long b;        /* rows A got right and B wrong */
  long long c;        /* rows A got wrong and B right */
  double p_exact;     /* min(1, 2 P[X <= min(b, c)]), X ~ Binomial(b + c, 1/2) */
  double chi2;        /* (|b - c| - 1)^2 / (b + c), with continuity correction */
  double p_chi2;      /* P[chi-square(1 df) >= chi2] = erfc(sqrt(chi2 / 2)) */
} finch_mcnemar;

/* From the discordant counts (b, c >= 0). b + c = 0 gives p 1 and chi2 0.
 * The correction is not clamped (as in statsmodels): b = c gives
 * chi2 = 1 / (b + c), b = 1, c = 0 gives 0. The binomial tail is summed from
 * its largest term down (its ratios exact, the top term by lgamma), so it is
 * accurate for any b + c. */
void finch_stats_mcnemar(long long b, long long c, finch_mcnemar *out);
/* The same from rows: A right when pred_a[i] == gold[i]. */
void finch_stats_mcnemar_rows(const int32_t *gold, const int32_t *pred_a, const int32_t *pred_b, size_t n,
                              finch_mcnemar *out);

/* Calibration of probabilities probs (n, C) at temperature 1: a row's
 * confidence is its largest probability, and it is right when
 * pred[i] == gold[i]. */
typedef struct {
  size_t n_bins;
  finch_calib_bin *bins;       /* n_bins, at temperature 1 */
  double ece;                  /* finch_ece over those bins */
  double temperature;          /* nn_fit_temperature on (probs, gold): minimum NLL */
  finch_calib_bin *bins_after; /* n_bins, the probabilities re-tempered (nn_retemper) */
  double ece_after;
} finch_calibration;

/* n_bins 0 = FINCH_STATS_CALIB_BINS. The temperature is fitted on the same
 * rows it is judged on, so ece_after is an in-sample figure: how far scaling
 * can go, not what a held-out fit would give. Returns 0, -1 when n, C or
 * probs is missing, -2 out of memory. Free with finch_stats_calibration_free. */
int finch_stats_calibration(const float *probs, const int32_t *gold, const int32_t *pred, size_t n, size_t C,
                            size_t n_bins, finch_calibration *out);
void finch_stats_calibration_free(finch_calibration *c);

/* conf (n), each row's largest probability, of probs (n, C). */
void finch_stats_max_prob(const float *probs, size_t n, size_t C, float *conf);

/* One point of the accuracy/coverage curve: a row is answered when its
 * confidence is at or above threshold. */
typedef struct {
  double threshold;
  double coverage;  /* answered / n (NaN when n is 0) */
  double accuracy;  /* right among answered (NaN when none is answered) */
  long long answered;
} finch_coverage_point;

/* pts[j] for thresholds[j], j < n_t; conf (n) as finch_stats_max_prob. */
void finch_stats_coverage(const float *conf, const int32_t *gold, const int32_t *pred, size_t n,
                          const double *thresholds, size_t n_t, finch_coverage_point *pts);

/* The accuracy-latency Pareto front: idx (n entries room) receives the
 * indices of the points no other point dominates, where j dominates i when
 * accuracy[j] >= accuracy[i] and latency[j] <= latency[i] with one of the two
 * strict. Two equal points do not dominate each other, so both are on the
 * front. A point with a NaN coordinate is never on it. The indices are sorted
 * by latency, then by accuracy (higher first), then by index. Returns how
 * many, or (size_t)-1 out of memory. */
size_t finch_stats_pareto(const double *accuracy, const double *latency, size_t n, size_t *idx);

/* One cell of a confusion matrix off its diagonal. */
typedef struct {
  int32_t gold, pred;
  long long count;
} finch_confused_pair;

/* The k off-diagonal cells of confusion (C, C; row gold, column pred) with
 * the highest counts above 0, by count (higher first), then gold index, then
 * pred index. out has room for k. Returns how many were written (<= k), or
 * (size_t)-1 out of memory. */
size_t finch_stats_most_confused(const long long *confusion, size_t C, size_t k, finch_confused_pair *out);

#endif
