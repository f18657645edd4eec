/* Holdout split, calibration figures and subset choice of the teacher
 * (distill/teacher_select.h). */
#include "distill/teacher_select.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>


size_t finch_teacher__gather(const float *probs, const int32_t *y, const uint8_t *half, size_t n, size_t C, int h,
                             float *out_probs, int32_t *out_y) {
  size_t m = 0;
  for (size_t i = 0; i < n; i++) {
    if (half[i] != h) continue;
    if (out_probs) memcpy(out_probs + m * C, probs + i * C, C * sizeof *out_probs);
    if (out_y) out_y[m] = y[i];
    m++;
  }
  return m;
}

double finch_teacher__accuracy(const float *probs, const int32_t *y, size_t n, size_t C) {
  size_t ok = 0;
  for (size_t i = 0; i < n; i++) {
    const float *p = probs + i * C;
    size_t b = 0;
    for (size_t j = 1; j < C; j++)
      if (p[j] > p[b]) b = j;
    ok += y[i] >= 0 && (int32_t)b == y[i];
  }
  return n ? (double)ok / (double)n : 0;
}

double finch_teacher__nll(const float *probs, const int32_t *y, size_t n, size_t C) {
  double s = 0;
  size_t k = 0;
  for (size_t i = 0; i < n; i++) {
    if (y[i] < 0) continue;
    float p = probs[i * C + (size_t)y[i]];
    s -= log(p > 1e-12f ? p : 1e-12f);
    k++;
  }
  return k ? s / (double)k : 0;
}

void finch_teacher__temper(const float *p, float *out, size_t n, size_t C, float T) {
  for (size_t i = 0; i < n; i++) {
    double mx = -INFINITY, z = 0;
    for (size_t k = 0; k < C; k++) {
      double l = log(p[i * C + k] > 1e-30f ? p[i * C + k] : 1e-30f) / T;
      out[i * C + k] = (float)l;
      if (l > mx) mx = l;
    }
    for (size_t k = 0; k < C; k++) z += (out[i * C + k] = (float)exp(out[i * C + k] - mx));
    for (size_t k = 0; k < C; k++) out[i * C + k] = (float)(out[i * C + k] / z);
  }
}

/* avg (n, C) = the mean of the calibrated rows cal[i] (n, C) of the members in mask. */
static int average(const float *cal, size_t k, unsigned mask, size_t n, size_t C, float *avg) {
  memset(avg, 0, n * C * sizeof *avg);
  int pop = 0;
  for (size_t i = 0; i < k; i++) {
    if (!(mask & (1u << i))) continue;
    pop++;
    const float *p = cal + i * n * C;
    for (size_t j = 0; j < n * C; j++) avg[j] += p[j];
  }
  for (size_t j = 0; j < n * C; j++) avg[j] /= (float)pop;
  return pop;
}

static float *calibrated(const float *const *probs, const float *temps, size_t k, size_t n, size_t C) {
  float *cal = malloc((k * n * C + 1) * sizeof *cal);
  for (size_t i = 0; cal && i < k; i++) finch_teacher__temper(probs[i], cal + i * n * C, n, C, temps[i]);
  return cal;
}

unsigned finch_teacher__choose(const float *const *probs, const float *temps, size_t k, const int32_t *y, size_t n,
                               size_t C, double *acc, double *nll) {
  float *avg = malloc((n * C + 1) * sizeof *avg), *cal = calibrated(probs, temps, k, n, C);
  unsigned best = 1;
  double best_acc = -1, best_nll = INFINITY;
  int best_pop = 99;
  for (unsigned mask = 1; avg && cal && mask < (1u << k); mask++) {
    int pop = average(cal, k, mask, n, C, avg);
    double a = finch_teacher__accuracy(avg, y, n, C), l = finch_teacher__nll(avg, y, n, C);
    if (a > best_acc + 1e-12 || (fabs(a - best_acc) <= 1e-12 && (pop < best_pop || (pop == best_pop && l < best_nll))))
      best = mask, best_acc = a, best_nll = l, best_pop = pop;
  }
  free(avg);
  free(cal);
  *acc = best_acc;
  *nll = best_nll;
  return best;
}

void finch_teacher__score(const float *const *probs, const float *temps, size_t k, unsigned mask, const int32_t *y,
                          size_t n, size_t C, double *acc, double *nll) {
  float *avg = malloc((n * C + 1) * sizeof *avg), *cal = calibrated(probs, temps, k, n, C);
  *acc = *nll = NAN;
  if (avg && cal) {
    average(cal, k, mask, n, C, avg);
    *acc = finch_teacher__accuracy(avg, y, n, C);
    *nll = finch_teacher__nll(avg, y, n, C);
  }
  free(avg);
  free(cal);
}
