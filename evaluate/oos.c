/* Out-of-scope figures (evaluate/oos.h). */
#include "evaluate/oos.h"

#include <math.h>
#include <stdlib.h>

static int cmp_float_desc(const void *a, const void *b) {
  float x = *(const float *)a, y = *(const float *)b;
  return (x < y) - (x > y);
}

static int cmp_float_asc(const void *a, const void *b) { return -cmp_float_desc(a, b); }

/* The in-scope scores, highest first (malloc'd, *n_in entries; NULL with
 * *n_in = 0 when there are none or memory ran out: *oom tells which). */
static float *in_scope_desc(const float *score, const unsigned char *is_oos, size_t n, size_t *n_in, int *oom) {
  *n_in = 0;
  *oom = 0;
  for (size_t i = 0; i < n; i++) *n_in += !is_oos[i];
  if (!*n_in) return NULL;
  float *s = malloc(*n_in * sizeof *s);
  if (!s) {
    *n_in = 0;
    *oom = 1;
    return NULL;
  }
  size_t k = 0;
  for (size_t i = 0; i < n; i++)
    if (!is_oos[i]) s[k++] = score[i];
  qsort(s, k, sizeof *s, cmp_float_desc);
  return s;
}

/* The score keeping the share keep of the n_in scores in desc (highest first). */
static float keep_threshold(const float *desc, size_t n_in, double keep) {
  double want = ceil(keep * (double)n_in - 1e-9);
  size_t k = want < 1 ? 1 : want > (double)n_in ? n_in : (size_t)want;
  return desc[k - 1];
}

double finch_oos_auroc(const float *score, const unsigned char *is_oos, size_t n) {
  size_t n_oos = 0;
  for (size_t i = 0; i < n; i++) n_oos += is_oos[i] != 0;
  if (n_oos == 0 || n_oos == n) return NAN;
  /* Mann-Whitney: sorted by score, each in-scope row wins over the
   * out-of-scope rows strictly below it and half of those tied with it. */
  float *in = malloc((n - n_oos) * sizeof *in), *out = malloc(n_oos * sizeof *out);
  double auc = NAN;
  if (in && out) {
    size_t a = 0, b = 0;
    for (size_t i = 0; i < n; i++) {
      if (is_oos[i])
        out[b++] = score[i];
      else
        in[a++] = score[i];
    }
    qsort(in, a, sizeof *in, cmp_float_asc);
    qsort(out, b, sizeof *out, cmp_float_asc);
    double wins = 0;
    size_t below = 0, tied_end = 0; /* out[0..below) < in[i]; out[below..tied_end) == in[i] */
    for (size_t i = 0; i < a; i++) {
      while (below < b && out[below] < in[i]) below++;
      if (tied_end < below) tied_end = below;
      while (tied_end < b && out[tied_end] == in[i]) tied_end++;
      wins += (double)below + 0.5 * (double)(tied_end - below);
    }
    auc = wins / ((double)a * (double)b);
  }
  free(in);
  free(out);
  return auc;
}

double finch_oos_fpr_at_keep(const float *score, const unsigned char *is_oos, size_t n, double keep,
                             double *threshold) {
  size_t n_in;
  int oom;
  float *desc = in_scope_desc(score, is_oos, n, &n_in, &oom);
  if (threshold) *threshold = NAN;
  if (!desc) return NAN;
  float t = keep_threshold(desc, n_in, keep);
  free(desc);
  if (threshold) *threshold = t;
  size_t n_oos = n - n_in, above = 0;
  for (size_t i = 0; i < n; i++) above += is_oos[i] && score[i] >= t;
  return n_oos ? (double)above / (double)n_oos : NAN;
}

static double ratio(long long a, long long b) { return b ? (double)a / (double)b : NAN; }

int finch_oos_compute(const float *score, const unsigned char *is_oos, const int *decided, const int *label,
                      size_t n, finch_oos_metrics *out) {
  *out = (finch_oos_metrics){0};
  for (size_t i = 0; i < n; i++) {
    if (is_oos[i]) {
      out->n_oos++;
      out->oos_refused += decided[i] < 0;
    } else {
      out->n_in++;
      out->in_refused += decided[i] < 0;
      out->in_answered += decided[i] >= 0;
      out->in_correct += decided[i] >= 0 && decided[i] == label[i];
    }
  }
  out->in_accuracy = ratio(out->in_correct, out->n_in);
  out->in_coverage = ratio(out->in_answered, out->n_in);
  out->oos_recall = ratio(out->oos_refused, out->n_oos);
  out->oos_precision = ratio(out->oos_refused, out->oos_refused + out->in_refused);
  out->auroc = finch_oos_auroc(score, is_oos, n);
  out->fpr_at_95 = finch_oos_fpr_at_keep(score, is_oos, n, FINCH_OOS_KEEP_IN_SCOPE, &out->threshold_at_95);
  /* NaN figures are legitimate; a failed allocation is not. */
  if (out->n_in && out->n_oos && (isnan(out->auroc) || isnan(out->fpr_at_95))) return -1;
  return 0;
}

int finch_oos_curve(const float *score, const unsigned char *is_oos, const int *answer, const int *label,
                    size_t n, size_t n_points, finch_oos_point *pts) {
  size_t n_in;
  int oom;
  float *desc = in_scope_desc(score, is_oos, n, &n_in, &oom);
  if (oom) return -1;
  for (size_t j = 0; j < n_points; j++) {
    double share = 1.0 - (double)j / (double)n_points;
    double t = desc ? keep_threshold(desc, n_in, share) : (double)j / (double)n_points;
    long long covered = 0, right = 0, oos = 0, refused = 0;
    for (size_t i = 0; i < n; i++) {
      int answered = answer[i] >= 0 && score[i] >= t;
      if (is_oos[i]) {
        oos++;
        refused += !answered;
      } else if (answered) {
        covered++;
        right += answer[i] == label[i];
      }
    }
    pts[j] = (finch_oos_point){.threshold = t, .coverage = n_in ? (double)covered / (double)n_in : NAN,
                               .accuracy = ratio(right, covered), .oos_refused = ratio(refused, oos)};
  }
  free(desc);
  return 0;
}
