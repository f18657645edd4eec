#include "nn/optim.h"

#include <math.h>
#if defined(__SSE2__)
#include <emmintrin.h>
#endif

nn_adamw_config nn_adamw_defaults(void) {
  return (nn_adamw_config){.beta1 = 0.9f, .beta2 = 0.999f, .eps = 1e-8f};
}

float nn_lr_schedule(float peak, uint64_t t, uint64_t warmup, uint64_t total) {
  if (t < warmup) return peak * (float)(t + 1) / (float)warmup;
  if (total <= warmup) return peak;
  double rest = (double)(total - t) / (double)(total - warmup);
  return rest > 0 ? (float)(peak * rest) : 0.0f;
}

/* The per-element update on a contiguous span, shared by the dense and the
 * row form; bc1 and bc2 are the bias corrections 1 - beta^t. This scalar loop
 * is the reference: the SSE2 path below performs the same IEEE operations in
 * the same order, so the two agree bit for bit (test_optim). */
static void adamw_span_ref(float *p, const float *g, float *m, float *v, size_t n, float lr,
                           float decay, float gscale, float bc1, float bc2,
                           const nn_adamw_config *c) {
  const float b1 = c->beta1, b2 = c->beta2, eps = c->eps;
  const float step = lr / bc1, inv_bc2 = 1.0f / bc2;
  for (size_t i = 0; i < n; i++) nn_adamw_elem(p + i, m + i, v + i, g[i] * gscale, b1, b2, eps, step, inv_bc2, decay);
}

/* Four lanes at a time. sqrtf's errno path keeps the compiler from
 * vectorising the scalar loop, and this span is most of a training step. */
static void adamw_span(float *p, const float *g, float *m, float *v, size_t n, float lr,
                       float decay, float gscale, float bc1, float bc2, const nn_adamw_config *c) {
  size_t i = 0;
#if defined(__SSE2__)
  const float step_s = lr / bc1, inv_bc2_s = 1.0f / bc2;
  const __m128 b1 = _mm_set1_ps(c->beta1), nb1 = _mm_set1_ps(1.0f - c->beta1);
  const __m128 b2 = _mm_set1_ps(c->beta2), nb2 = _mm_set1_ps(1.0f - c->beta2);
  const __m128 eps = _mm_set1_ps(c->eps), step = _mm_set1_ps(step_s);
  const __m128 inv_bc2 = _mm_set1_ps(inv_bc2_s), dec = _mm_set1_ps(decay), gs = _mm_set1_ps(gscale);
  for (; i + 4 <= n; i += 4) {
    __m128 gi = _mm_mul_ps(_mm_loadu_ps(g + i), gs);
    __m128 mi = _mm_add_ps(_mm_mul_ps(b1, _mm_loadu_ps(m + i)), _mm_mul_ps(nb1, gi));
    __m128 vi = _mm_add_ps(_mm_mul_ps(b2, _mm_loadu_ps(v + i)), _mm_mul_ps(_mm_mul_ps(nb2, gi), gi));
    _mm_storeu_ps(m + i, mi);
    _mm_storeu_ps(v + i, vi);
    __m128 den = _mm_add_ps(_mm_sqrt_ps(_mm_mul_ps(vi, inv_bc2)), eps);
    __m128 pi = _mm_sub_ps(_mm_mul_ps(_mm_loadu_ps(p + i), dec), _mm_div_ps(_mm_mul_ps(step, mi), den));
    _mm_storeu_ps(p + i, pi);
  }
#endif
  adamw_span_ref(p + i, g + i, m + i, v + i, n - i, lr, decay, gscale, bc1, bc2, c);
}

void nn_adamw_update_ref(float *p, const float *g, float *m, float *v, size_t n, float lr, float wd,
                         float gscale, uint64_t t, const nn_adamw_config *c) {
  float bc1 = 1.0f - powf(c->beta1, (float)t);
  float bc2 = 1.0f - powf(c->beta2, (float)t);
  adamw_span_ref(p, g, m, v, n, lr, 1.0f - lr * wd, gscale, bc1, bc2, c);
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
