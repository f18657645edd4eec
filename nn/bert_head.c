/* Softmax regression on fixed vectors by full-batch Adam (nn/bert_head.h).
 * One step: Z (n,C) = X W^T + b, turned in place into (softmax(Z) - onehot) / n,
 * then dW = Z^T X + l2 W and db = column sums of Z. */
#include "nn/bert_head.h"

#include <cblas.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

nn_bert_head_config nn_bert_head_defaults(void) {
  return (nn_bert_head_config){.steps = 400, .lr = 0.01f, .l2 = 1e-4f};
}

/* Z (n,C) = X W^T + b into Z; returns the mean cross-entropy; then Z holds
 * (softmax - onehot) / n. */
static double forward_grad_z(const float *X, const int32_t *y, size_t n, size_t D, size_t C, const float *W,
                             const float *b, float *Z) {
  for (size_t i = 0; i < n; i++) memcpy(Z + i * C, b, C * sizeof *b);
  cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, (int)n, (int)C, (int)D, 1.0f, X, (int)D, W, (int)D, 1.0f, Z,
              (int)C);
  double loss = 0;
  for (size_t i = 0; i < n; i++) {
    float *z = Z + i * C, mx = -INFINITY;
    double t = 0;
    for (size_t k = 0; k < C; k++) mx = fmaxf(mx, z[k]);
    const float zy = z[y[i]] - mx;
    for (size_t k = 0; k < C; k++) t += (z[k] = expf(z[k] - mx));
    loss += log(t) - zy;
    for (size_t k = 0; k < C; k++) z[k] = (float)(z[k] / t - (k == (size_t)y[i])) / (float)n;
  }
  return loss / (double)n;
}

/* gW (C,D) = Z^T X + l2 W; gb (C) = column sums of Z. */
static void grads(const float *X, const float *Z, size_t n, size_t D, size_t C, const float *W, float l2, float *gW,
                  float *gb) {
  cblas_sgemm(CblasRowMajor, CblasTrans, CblasNoTrans, (int)C, (int)D, (int)n, 1.0f, Z, (int)C, X, (int)D, 0.0f, gW,
              (int)D);
  for (size_t k = 0; k < C * D; k++) gW[k] += l2 * W[k];
  for (size_t k = 0; k < C; k++) {
    gb[k] = 0;
    for (size_t i = 0; i < n; i++) gb[k] += Z[i * C + k];
  }
}

double nn_bert_head_loss(const float *X, const int32_t *y, size_t n, size_t D, size_t C, const float *W,
                         const float *b, float l2, float *gW, float *gb) {
  float *Z = malloc(n * C * sizeof *Z);
  if (!Z) return NAN;
  double loss = forward_grad_z(X, y, n, D, C, W, b, Z), w2 = 0;
  for (size_t k = 0; k < C * D; k++) w2 += (double)W[k] * W[k];
  if (gW && gb) grads(X, Z, n, D, C, W, l2, gW, gb);
  free(Z);
  return loss + 0.5 * l2 * w2;
}

finch_status nn_bert_head_fit(const float *X, const int32_t *y, size_t n, size_t D, size_t C,
                              const nn_bert_head_config *cfg, float *W, float *b, finch_err *err) {
  if (!n || !D || !C) return finch_err_set(err, FINCH_EINVAL, "head fit: %zu rows of width %zu, %zu labels", n, D, C);
  if (cfg->steps < 1 || !(cfg->lr > 0) || !(cfg->l2 >= 0))
    return finch_err_set(err, FINCH_EINVAL, "head fit: steps %d, lr %g, l2 %g out of bounds", cfg->steps,
                         (double)cfg->lr, (double)cfg->l2);
  for (size_t i = 0; i < n; i++)
    if (y[i] < 0 || (size_t)y[i] >= C)
      return finch_err_set(err, FINCH_EINVAL, "head fit: row %zu has label %d outside [0,%zu)", i, (int)y[i], C);
  const float lr = cfg->lr, b1 = 0.9f, b2 = 0.999f;
  const size_t P = C * (D + 1);
  float *Z = malloc(n * C * sizeof *Z), *G = calloc(P, sizeof *G);
  float *M = calloc(P, sizeof *M), *V = calloc(P, sizeof *V);
  if (!Z || !G || !M || !V) {
    free(Z), free(G), free(M), free(V);
    return finch_err_set(err, FINCH_ENOMEM, "head fit: out of memory for %zu rows x %zu labels", n, C);
  }
  memset(W, 0, C * D * sizeof *W);
  memset(b, 0, C * sizeof *b);
  for (int s = 1; s <= cfg->steps; s++) {
    forward_grad_z(X, y, n, D, C, W, b, Z);
    grads(X, Z, n, D, C, W, cfg->l2, G, G + C * D);
    const float c1 = 1.0f - powf(b1, (float)s), c2 = 1.0f - powf(b2, (float)s);
    for (size_t k = 0; k < P; k++) {
      M[k] = b1 * M[k] + (1 - b1) * G[k];
      V[k] = b2 * V[k] + (1 - b2) * G[k] * G[k];
      float *p = k < C * D ? W + k : b + (k - C * D);
      *p -= lr * (M[k] / c1) / (sqrtf(V[k] / c2) + 1e-8f);
    }
  }
  free(Z), free(G), free(M), free(V);
  return FINCH_OK;
}
