#include "nn/optim.h"

#include <math.h>

nn_adamw_config nn_adamw_defaults(void) {
  return (nn_adamw_config){.beta1 = 0.9f, .beta2 = 0.999f, .eps = 1e-8f};
}

float nn_lr_schedule(float peak, uint64_t t, uint64_t warmup, uint64_t total) {
  if (t < warmup) return peak * (float)(t + 1) / (float)warmup;
  if (total <= warmup) return peak;
  double rest = (double)(total - t) / (double)(total - warmup);
  return rest > 0 ? (float)(peak * rest) : 0.0f;
}

/* The per-element update, shared by the dense and the row form. bc1 and bc2
 * are the bias corrections 1 - beta^t. */
static inline void adamw_span(float *p, const float *g, float *m, float *v, size_t n, float lr,
                              float decay, float gscale, float bc1, float bc2,
                              const nn_adamw_config *c) {
  const float b1 = c->beta1, b2 = c->beta2, eps = c->eps;
  const float step = lr / bc1, inv_bc2 = 1.0f / bc2;
  for (size_t i = 0; i < n; i++) {
    float gi = g[i] * gscale;
    float mi = b1 * m[i] + (1.0f - b1) * gi;
    float vi = b2 * v[i] + (1.0f - b2) * gi * gi;
    m[i] = mi;
    v[i] = vi;
    p[i] = p[i] * decay - step * mi / (sqrtf(vi * inv_bc2) + eps);
  }
}

void nn_adamw_update(float *p, const float *g, float *m, float *v, size_t n, float lr, float wd,
                     float gscale, uint64_t t, const nn_adamw_config *c) {
  float bc1 = 1.0f - powf(c->beta1, (float)t);
  float bc2 = 1.0f - powf(c->beta2, (float)t);
  adamw_span(p, g, m, v, n, lr, 1.0f - lr * wd, gscale, bc1, bc2, c);
}

void nn_adamw_update_rows(float *P, const float *G, const uint32_t *rows, size_t S, int D, float *M,
                          float *V, float lr, float wd, float gscale, uint64_t t,
                          const nn_adamw_config *c) {
  float bc1 = 1.0f - powf(c->beta1, (float)t);
  float bc2 = 1.0f - powf(c->beta2, (float)t);
  float decay = 1.0f - lr * wd;
  for (size_t s = 0; s < S; s++) {
    size_t r = (size_t)rows[s] * (size_t)D;
    adamw_span(P + r, G + s * (size_t)D, M + r, V + r, (size_t)D, lr, decay, gscale, bc1, bc2, c);
  }
}

double nn_sum_sq(const float *g, size_t n) {
  double s = 0.0;
  for (size_t i = 0; i < n; i++) s += (double)g[i] * g[i];
  return s;
}

float nn_clip_scale(double sum_sq, float max_norm) {
  if (max_norm <= 0.0f) return 1.0f;
  double norm = sqrt(sum_sq);
  return norm > max_norm ? (float)(max_norm / norm) : 1.0f;
}
