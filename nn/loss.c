#include "nn/loss.h"

#include <math.h>
#include <stddef.h>

/* Returns log sum_c exp(x[c] / t) and writes the maximum scaled logit into *mx. */
static double log_sum_exp(const float *x, int C, float t, double *mx) {
  double m = -INFINITY;
  for (int c = 0; c < C; c++) {
    double v = (double)x[c] / t;
    if (v > m) m = v;
  }
  double s = 0.0;
  for (int c = 0; c < C; c++) s += exp((double)x[c] / t - m);
  *mx = m;
  return m + log(s);
}

void nn_softmax(const float *inp, float *out, int C, float temperature) {
  double mx;
  double lse = log_sum_exp(inp, C, temperature, &mx);
  for (int c = 0; c < C; c++) out[c] = (float)exp((double)inp[c] / temperature - lse);
}

void nn_xent_ls_forward(const float *logits, const int32_t *y, int B, int C, float eps, float *probs,
                        float *loss) {
  for (int b = 0; b < B; b++) {
    const float *z = logits + (size_t)b * C;
    float *p = probs + (size_t)b * C;
    double mx;
    double lse = log_sum_exp(z, C, 1.0f, &mx);
    /* -sum_c y_ls[c] (z[c] - lse) = lse - (1-eps) z[y] - eps/C sum_c z[c] */
    double zsum = 0.0;
    for (int c = 0; c < C; c++) {
      p[c] = (float)exp((double)z[c] - lse);
      zsum += z[c];
    }
    loss[b] = (float)(lse - (1.0 - eps) * z[y[b]] - (double)eps / C * zsum);
  }
}

void nn_xent_ls_backward(const float *probs, const int32_t *y, int B, int C, float eps, float weight,
                         float *dlogits) {
  float off = eps / (float)C;
  for (int b = 0; b < B; b++) {
    const float *p = probs + (size_t)b * C;
    float *d = dlogits + (size_t)b * C;
    for (int c = 0; c < C; c++) d[c] += weight * (p[c] - off);
    d[y[b]] -= weight * (1.0f - eps);
  }
}

void nn_kl_tau_forward(const float *logits, const float *pt, int B, int C, float tau, float *q,
                       float *loss) {
  for (int b = 0; b < B; b++) {
    const float *z = logits + (size_t)b * C;
    const float *p = pt + (size_t)b * C;
    float *qb = q + (size_t)b * C;
    double mx;
    double lse = log_sum_exp(z, C, tau, &mx);
    double kl = 0.0;
    for (int c = 0; c < C; c++) {
      double logq = (double)z[c] / tau - lse;
      qb[c] = (float)exp(logq);
      if (p[c] > 0.0f) kl += (double)p[c] * (log((double)p[c]) - logq);
    }
    loss[b] = (float)((double)tau * tau * kl);
  }
}

void nn_kl_tau_backward(const float *q, const float *pt, int B, int C, float tau, float weight,
                        float *dlogits) {
  float w = weight * tau;
  for (size_t i = 0; i < (size_t)B * C; i++) dlogits[i] += w * (q[i] - pt[i]);
}
