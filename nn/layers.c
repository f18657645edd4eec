/* The generic layers (nn/layers.h). */
#include "nn/layers.h"

#include <math.h>
#include <string.h>

#include "nn/ops.h"

void nn_embed_mean_forward(const float *emb, int D, const uint32_t *ids, const size_t *offs, int B,
                           float *out) {
  for (int b = 0; b < B; b++) {
    float *o = out + (size_t)b * D;
    memset(o, 0, (size_t)D * sizeof *o);
    size_t n = offs[b + 1] - offs[b];
    if (n == 0) continue;
    for (size_t k = offs[b]; k < offs[b + 1]; k++) {
      const float *e = emb + (size_t)ids[k] * D;
      for (int d = 0; d < D; d++) o[d] += e[d];
    }
    float s = 1.0f / (float)n;
    for (int d = 0; d < D; d++) o[d] *= s;
  }
}

void nn_embed_mean_backward(const float *dout, const uint32_t *ids, const size_t *offs, int B,
                            nn_row_grads *g) {
  const int D = g->D;
  for (int b = 0; b < B; b++) {
    size_t n = offs[b + 1] - offs[b];
    if (n == 0) continue;
    float s = 1.0f / (float)n;
    const float *db = dout + (size_t)b * D;
    for (size_t k = offs[b]; k < offs[b + 1]; k++) {
      uint32_t r = ids[k];
      int32_t slot = g->slot_of[r];
      if (slot < 0) {
        /* cap >= the batch's id count, so a new slot always fits. */
        slot = (int32_t)g->n++;
        g->slot_of[r] = slot;
        g->rows[slot] = r;
        memset(g->g + (size_t)slot * D, 0, (size_t)D * sizeof(float));
      }
      float *gr = g->g + (size_t)slot * D;
      for (int d = 0; d < D; d++) gr[d] += s * db[d];
    }
  }
}

void nn_row_grads_clear(nn_row_grads *g) {
  for (size_t s = 0; s < g->n; s++) g->slot_of[g->rows[s]] = -1;
  g->n = 0;
}

void nn_linear_forward(nn_backend *be, const float *inp, const float *W, const float *b, int B, int In,
                       int O, float *out) {
  for (int r = 0; r < B; r++) memcpy(out + (size_t)r * O, b, (size_t)O * sizeof *out);
  be->ops->gemm_host(be, 0, 1, B, O, In, 1.0f, inp, W, 1.0f, out);
}

void nn_linear_backward(nn_backend *be, const float *dout, const float *inp, const float *W, int B,
                        int In, int O, float *dinp, float *dW, float *db) {
  be->ops->gemm_host(be, 1, 0, O, In, B, 1.0f, dout, inp, 0.0f, dW);
  for (int o = 0; o < O; o++) db[o] = 0.0f;
  for (int r = 0; r < B; r++)
    for (int o = 0; o < O; o++) db[o] += dout[(size_t)r * O + o];
  if (dinp) be->ops->gemm_host(be, 0, 0, B, In, O, 1.0f, dout, W, 0.0f, dinp);
}

void nn_gelu_forward(const float *inp, float *out, size_t n) {
  for (size_t i = 0; i < n; i++) out[i] = 0.5f * inp[i] * (1.0f + erff(inp[i] * (float)M_SQRT1_2));
}

void nn_gelu_backward(const float *inp, const float *dout, float *dinp, size_t n) {
  const float inv_sqrt_2pi = 0.3989422804014327f;
  for (size_t i = 0; i < n; i++) {
    float x = inp[i];
    float cdf = 0.5f * (1.0f + erff(x * (float)M_SQRT1_2));
    float pdf = inv_sqrt_2pi * expf(-0.5f * x * x);
    dinp[i] = dout[i] * (cdf + x * pdf);
  }
}

void nn_dropout_forward(float *x, float *mask, size_t n, float p, nn_rng *rng) {
  float keep = 1.0f / (1.0f - p);
  for (size_t i = 0; i < n; i++) {
    mask[i] = nn_rng_uniform(rng) < p ? 0.0f : keep;
    x[i] *= mask[i];
  }
}

void nn_dropout_backward(float *dx, const float *mask, size_t n) {
  for (size_t i = 0; i < n; i++) dx[i] *= mask[i];
}

