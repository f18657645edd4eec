#include "evaluate/stats.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "core/rng.h"
#include "nn/model_arch.h"

/* ---- bootstrap ----------------------------------------------------------------- */

void finch_stats_percentile_ci(double *v, size_t n, double *lo, double *hi) {
  *lo = finch_quantile(v, n, 0.025);
  *hi = finch_quantile(v, n, 0.975);
}

int finch_stats_bootstrap(const int32_t *gold, const int32_t *pred, size_t n, size_t C, int B,
                          unsigned long long seed, finch_bootstrap *out) {
  memset(out, 0, sizeof *out);
  if (!n || !C || B < 0) return -1;
  if (B == 0) B = FINCH_STATS_BOOTSTRAP_DEFAULT;
  long long *tp = calloc(C, sizeof *tp), *support = calloc(C, sizeof *support);
  long long *predicted = calloc(C, sizeof *predicted);
  double *acc = malloc((size_t)B * sizeof *acc), *f1 = malloc((size_t)B * sizeof *f1);
  int rc = 0;
  if (!tp || !support || !predicted || !acc || !f1) {
    rc = -2;
    goto out;
  }
  /* The figures on the rows themselves: the resample that draws each row once. */
  long long correct = 0;
  for (size_t i = 0; i < n; i++) {
    support[gold[i]]++;
    predicted[pred[i]]++;
    if (gold[i] == pred[i]) tp[gold[i]]++, correct++;
  }
  out->accuracy.value = (double)correct / (double)n;
  out->macro_f1.value = finch_macro_f1(tp, support, predicted, C);
  out->resamples = B;

  finch_rng rng = {seed};
  for (int r = 0; r < B; r++) {
    memset(tp, 0, C * sizeof *tp);
    memset(support, 0, C * sizeof *support);
    memset(predicted, 0, C * sizeof *predicted);
    correct = 0;
    for (size_t j = 0; j < n; j++) {
      size_t i = (size_t)finch_rng_below(&rng, n);
      support[gold[i]]++;
      predicted[pred[i]]++;
      if (gold[i] == pred[i]) tp[gold[i]]++, correct++;
    }
    acc[r] = (double)correct / (double)n;
    f1[r] = finch_macro_f1(tp, support, predicted, C);
  }
  finch_stats_percentile_ci(acc, (size_t)B, &out->accuracy.lo, &out->accuracy.hi);
  finch_stats_percentile_ci(f1, (size_t)B, &out->macro_f1.lo, &out->macro_f1.hi);
out:
  free(tp), free(support), free(predicted), free(acc), free(f1);
  return rc;
}

/* ---- McNemar ------------------------------------------------------------------- */

/* P[X <= m] for X ~ Binomial(N, 1/2), m <= N / 2 (so the terms rise with k up
 * to m): the top term C(N, m) 2^-N by lgamma, the others relative to it by
 * the exact ratio C(N, k - 1) / C(N, k) = k / (N - k + 1). No term underflows
 * before it is too small to matter, whatever N. */
static double binom_half_cdf(long long N, long long m) {
  double top = exp(lgamma((double)N + 1) - lgamma((double)m + 1) - lgamma((double)(N - m) + 1) -
                   (double)N * log(2.0));
  double rel = 1, sum = 0;
  for (long long k = m; k >= 0 && rel > 0; k--) {
    sum += rel;
    rel *= (double)k / (double)(N - k + 1);
  }
  return top * sum;
}

void finch_stats_mcnemar(long long b, long long c, finch_mcnemar *out) {
  out->b = b;
  out->c = c;
  long long N = b + c;
  if (N <= 0) {
    out->p_exact = 1, out->chi2 = 0, out->p_chi2 = 1;
    return;
  }
  long long m = b < c ? b : c;
  double p = 2 * binom_half_cdf(N, m);
  out->p_exact = p < 1 ? p : 1;
  double d = fabs((double)(b - c)) - 1;
  out->chi2 = d * d / (double)N;
  out->p_chi2 = erfc(sqrt(out->chi2 / 2));
}

void finch_stats_mcnemar_rows(const int32_t *gold, const int32_t *pred_a, const int32_t *pred_b, size_t n,
                              finch_mcnemar *out) {
  long long b = 0, c = 0;
  for (size_t i = 0; i < n; i++) {
    int ra = pred_a[i] == gold[i], rb = pred_b[i] == gold[i];
    b += ra && !rb;
    c += !ra && rb;
  }
  finch_stats_mcnemar(b, c, out);
}

/* ---- calibration --------------------------------------------------------------- */

void finch_stats_max_prob(const float *probs, size_t n, size_t C, float *conf) {
  for (size_t i = 0; i < n; i++) {
    float mx = C ? probs[i * C] : 0;
    for (size_t k = 1; k < C; k++)
      if (probs[i * C + k] > mx) mx = probs[i * C + k];
    conf[i] = mx;
  }
}

void finch_stats_calibration_free(finch_calibration *c) {
  free(c->bins);
  free(c->bins_after);
  c->bins = c->bins_after = NULL;
}

int finch_stats_calibration(const float *probs, const int32_t *gold, const int32_t *pred, size_t n, size_t C,
                            size_t n_bins, finch_calibration *out) {
  memset(out, 0, sizeof *out);
  if (!probs || !n || !C) return -1;
  if (!n_bins) n_bins = FINCH_STATS_CALIB_BINS;
  out->n_bins = n_bins;
  out->bins = calloc(n_bins, sizeof *out->bins);
  out->bins_after = calloc(n_bins, sizeof *out->bins_after);
  float *conf = malloc(n * sizeof *conf), *row = malloc(C * sizeof *row);
  int rc = 0;
  if (!out->bins || !out->bins_after || !conf || !row) {
    finch_stats_calibration_free(out);
    rc = -2;
    goto out;
  }
  finch_stats_max_prob(probs, n, C, conf);
  out->ece = finch_ece(conf, gold, pred, n, n_bins, out->bins);
  float T = nn_fit_temperature(probs, gold, n, C);
  out->temperature = T;
  for (size_t i = 0; i < n; i++) {
    memcpy(row, probs + i * C, C * sizeof *row);
    nn_retemper(row, C, T);
    finch_stats_max_prob(row, 1, C, &conf[i]);
  }
  out->ece_after = finch_ece(conf, gold, pred, n, n_bins, out->bins_after);
out:
  free(conf), free(row);
  return rc;
}

void finch_stats_coverage(const float *conf, const int32_t *gold, const int32_t *pred, size_t n,
                          const double *thresholds, size_t n_t, finch_coverage_point *pts) {
  for (size_t j = 0; j < n_t; j++) {
    long long answered = 0, right = 0;
    for (size_t i = 0; i < n; i++) {
      if (!((double)conf[i] >= thresholds[j])) continue;
      answered++;
      right += gold[i] == pred[i];
    }
    pts[j].threshold = thresholds[j];
    pts[j].answered = answered;
    pts[j].coverage = n ? (double)answered / (double)n : NAN;
    pts[j].accuracy = answered ? (double)right / (double)answered : NAN;
  }
}

/* ---- Pareto front -------------------------------------------------------------- */

/* qsort has no context argument; the front is sorted through an array of
 * (index, latency, accuracy) triples instead. */
typedef struct {
  size_t i;
  double lat, acc;
} pareto_key;

static int cmp_pareto(const void *pa, const void *pb) {
  const pareto_key *a = pa, *b = pb;
  if (a->lat != b->lat) return a->lat < b->lat ? -1 : 1;
  if (a->acc != b->acc) return a->acc > b->acc ? -1 : 1;
  return (a->i > b->i) - (a->i < b->i);
}

size_t finch_stats_pareto(const double *accuracy, const double *latency, size_t n, size_t *idx) {
  pareto_key *keys = malloc((n ? n : 1) * sizeof *keys);
  if (!keys) return (size_t)-1;
  size_t m = 0;
  for (size_t i = 0; i < n; i++) {
    if (isnan(accuracy[i]) || isnan(latency[i])) continue;
    int dominated = 0;
    for (size_t j = 0; j < n && !dominated; j++) {
      if (j == i || isnan(accuracy[j]) || isnan(latency[j])) continue;
      dominated = accuracy[j] >= accuracy[i] && latency[j] <= latency[i] &&
                  (accuracy[j] > accuracy[i] || latency[j] < latency[i]);
    }
    if (!dominated) keys[m++] = (pareto_key){i, latency[i], accuracy[i]};
  }
  qsort(keys, m, sizeof *keys, cmp_pareto);
  for (size_t k = 0; k < m; k++) idx[k] = keys[k].i;
  free(keys);
  return m;
}

/* ---- most-confused pairs ------------------------------------------------------- */

static int cmp_pair(const void *pa, const void *pb) {
  const finch_confused_pair *a = pa, *b = pb;
  if (a->count != b->count) return a->count > b->count ? -1 : 1;
  if (a->gold != b->gold) return a->gold < b->gold ? -1 : 1;
  return (a->pred > b->pred) - (a->pred < b->pred);
}

size_t finch_stats_most_confused(const long long *confusion, size_t C, size_t k, finch_confused_pair *out) {
  size_t m = 0;
  for (size_t g = 0; g < C; g++)
    for (size_t p = 0; p < C; p++) m += g != p && confusion[g * C + p] > 0;
  finch_confused_pair *all = malloc((m ? m : 1) * sizeof *all);
  if (!all) return (size_t)-1;
  m = 0;
  for (size_t g = 0; g < C; g++)
    for (size_t p = 0; p < C; p++)
      if (g != p && confusion[g * C + p] > 0) all[m++] = (finch_confused_pair){(int32_t)g, (int32_t)p, confusion[g * C + p]};
  qsort(all, m, sizeof *all, cmp_pair);
  size_t w = m < k ? m : k;
  if (w) memcpy(out, all, w * sizeof *out);
  free(all);
  return w;
}
