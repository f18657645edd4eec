/* The transformer encoder's layers (nn/tfm_ops.h). Plain C loops around the
 * backend's GEMMs; the loops are written so that gcc vectorises them at -O2. */
#include "nn/tfm_ops.h"

#include <math.h>
#include <string.h>

#include "nn/ops.h"

void nn_layernorm_forward(const float *inp, const float *g, const float *b, int N, int D, float *out,
                          float *mean, float *rstd) {
  nn_layernorm_eps_forward(inp, g, b, N, D, NN_LN_EPS, out, mean, rstd);
}

void nn_layernorm_eps_forward(const float *inp, const float *g, const float *b, int N, int D, float eps, float *out,
                              float *mean, float *rstd) {
  for (int r = 0; r < N; r++) {
    const float *x = inp + (size_t)r * D;
    float *o = out + (size_t)r * D;
    float s = 0.0f;
    for (int d = 0; d < D; d++) s += x[d];
    float mu = s / (float)D;
    float v = 0.0f;
    for (int d = 0; d < D; d++) v += (x[d] - mu) * (x[d] - mu);
    float rs = 1.0f / sqrtf(v / (float)D + eps);
    for (int d = 0; d < D; d++) o[d] = (x[d] - mu) * rs * g[d] + b[d];
    mean[r] = mu;
    rstd[r] = rs;
  }
}

void nn_layernorm_backward(const float *dout, const float *inp, const float *g, const float *mean,
                           const float *rstd, int N, int D, float *dinp, float *dg, float *db) {
  for (int r = 0; r < N; r++) {
    const float *x = inp + (size_t)r * D, *dy = dout + (size_t)r * D;
    float *dx = dinp + (size_t)r * D;
    const float mu = mean[r], rs = rstd[r];
    /* dxhat = dy g; dx = rs (dxhat - mean(dxhat) - xhat mean(dxhat xhat)) */
    float s1 = 0.0f, s2 = 0.0f;
    for (int d = 0; d < D; d++) {
      float xh = (x[d] - mu) * rs, dxh = dy[d] * g[d];
      s1 += dxh;
      s2 += dxh * xh;
      dg[d] += dy[d] * xh;
      db[d] += dy[d];
    }
    s1 /= (float)D;
    s2 /= (float)D;
    for (int d = 0; d < D; d++) {
      float xh = (x[d] - mu) * rs;
      dx[d] += rs * (dy[d] * g[d] - s1 - xh * s2);
    }
  }
}

void nn_linear_backward_acc(nn_backend *be, const float *dout, const float *inp, const float *W,
                            int B, int In, int O, float *dinp, float *dW, float *db) {
  be->ops->gemm_host(be, 1, 0, O, In, B, 1.0f, dout, inp, 1.0f, dW);
  for (int r = 0; r < B; r++) {
    const float *d = dout + (size_t)r * O;
    for (int o = 0; o < O; o++) db[o] += d[o];
  }
  if (dinp) be->ops->gemm_host(be, 0, 0, B, In, O, 1.0f, dout, W, 0.0f, dinp);
}

/* exp(x) for x in [-87, 0]: x = n ln2 + r, |r| <= ln2/2, exp(r) by its
 * degree-6 Taylor polynomial (relative error below 2e-7), 2^n built in the
 * exponent bits. Inlined and free of float compares (which, trapping, stop
 * gcc from vectorising), so the callers' loops vectorise. */
static inline float exp_nonpos(float x) {
  const float shifter = 12582912.0f; /* 1.5 * 2^23: adding it rounds to an integer */
  float n = (x * 1.44269504f + shifter) - shifter;
  float r = x - n * 0.693145752f - n * 1.42860677e-6f; /* ln2 split in two for exactness */
  float p = 1.0f + r * (1.0f + r * (0.5f + r * (1.6666667e-1f + r * (4.1666668e-2f + r * (8.3333338e-3f + r * 1.3888889e-3f)))));
  int32_t bits = ((int32_t)n + 127) << 23;
  float scale;
  memcpy(&scale, &bits, sizeof scale);
  return p * scale;
}

/* Phi(x) and e = exp(-x^2 / 2). erfc(a) = poly(t) exp(-a^2), t = 1/(1 + p a),
 * a = |x|/sqrt(2), with absolute error below 1.5e-7 (A&S 7.1.26); then
 * Phi(x) = 1 - erfc(a)/2 for x >= 0 and erfc(a)/2 below. |x| is clamped to
 * 10 (Phi is then 1 or 0 to float precision) and the sign is taken from the
 * bits, with integer operations only. */
static inline float phi_and_exp(float x, float *e_out) {
  int32_t xb;
  memcpy(&xb, &x, sizeof xb);
  int32_t ab = xb & 0x7fffffff;
  ab = ab > 0x41200000 ? 0x41200000 : ab; /* the bits of 10.0f; non-negative floats order as ints */
  float ax;
  memcpy(&ax, &ab, sizeof ax);
  float a = ax * 0.70710678f;
  float t = 1.0f / (1.0f + 0.3275911f * a);
  float poly = t * (0.254829592f + t * (-0.284496736f + t * (1.421413741f + t * (-1.453152027f + t * 1.061405429f))));
  float e = exp_nonpos(-a * a);
  float half_erfc = 0.5f * poly * e;
  float neg = (float)((uint32_t)xb >> 31); /* 1 for x < 0 (and -0) */
  *e_out = e;
  return (1.0f - neg) * (1.0f - half_erfc) + neg * half_erfc;
}

void nn_gelu_fast_forward(const float *inp, float *out, size_t n) {
  for (size_t i = 0; i < n; i++) {
    float e;
    float x = inp[i];
    out[i] = x * phi_and_exp(x, &e);
  }
}

void nn_gelu_fast_backward(const float *inp, const float *dout, float *dinp, size_t n) {
  const float inv_sqrt_2pi = 0.3989422804014327f;
  for (size_t i = 0; i < n; i++) {
    float e;
    float x = inp[i];
    float cdf = phi_and_exp(x, &e);
    dinp[i] = dout[i] * (cdf + x * inv_sqrt_2pi * e);
  }
}

void nn_tok_embed_forward(const float *tok, const float *pos, const float *ng, int D,
                          const int32_t *ids, const size_t *ng_offs, const uint32_t *ng_ids, int B,
                          int T, float *out) {
  for (int b = 0; b < B; b++) {
    for (int t = 0; t < T; t++) {
      const size_t i = (size_t)b * T + t;
      float *o = out + i * D;
      const float *e = tok + (size_t)ids[i] * D, *p = pos + (size_t)t * D;
      for (int d = 0; d < D; d++) o[d] = e[d] + p[d];
      if (!ng || !ng_offs) continue;
      size_t k0 = ng_offs[i], k1 = ng_offs[i + 1];
      if (k1 <= k0) continue;
      const float s = 1.0f / (float)(k1 - k0);
      for (size_t k = k0; k < k1; k++) {
        const float *r = ng + (size_t)ng_ids[k] * D;
        for (int d = 0; d < D; d++) o[d] += s * r[d];
      }
    }
  }
}

void nn_tok_embed_backward(const float *dout, int D, const int32_t *ids, const size_t *ng_offs,
                           const uint32_t *ng_ids, int B, int T, float *dtok, float *dpos,
                           float *dng) {
  for (int b = 0; b < B; b++) {
    for (int t = 0; t < T; t++) {
      const size_t i = (size_t)b * T + t;
      const float *dy = dout + i * D;
      float *e = dtok + (size_t)ids[i] * D, *p = dpos + (size_t)t * D;
      for (int d = 0; d < D; d++) {
        e[d] += dy[d];
        p[d] += dy[d];
      }
      if (!dng || !ng_offs) continue;
      size_t k0 = ng_offs[i], k1 = ng_offs[i + 1];
      if (k1 <= k0) continue;
      const float s = 1.0f / (float)(k1 - k0);
      for (size_t k = k0; k < k1; k++) {
        float *r = dng + (size_t)ng_ids[k] * D;
        for (int d = 0; d < D; d++) r[d] += s * dy[d];
      }
    }
  }
}

void nn_residual_forward(const float *a, const float *b, float *out, size_t n) {
  for (size_t i = 0; i < n; i++) out[i] = a[i] + b[i];
}

void nn_residual_backward(const float *dout, float *da, float *db, size_t n) {
  for (size_t i = 0; i < n; i++) {
    da[i] += dout[i];
    db[i] += dout[i];
  }
}

void nn_heads_split(const float *inp, int S, int B, int T, int D, int Hh, float *out) {
  const int Dh = D / Hh;
  for (int b = 0; b < B; b++)
    for (int t = 0; t < T; t++) {
      const float *row = inp + ((size_t)b * T + t) * (size_t)S * D;
      for (int s = 0; s < S; s++)
        for (int h = 0; h < Hh; h++)
          memcpy(out + ((((size_t)s * B + b) * Hh + h) * T + t) * Dh, row + (size_t)s * D + (size_t)h * Dh,
                 (size_t)Dh * sizeof(float));
    }
}

void nn_heads_merge(const float *inp, int S, int B, int T, int D, int Hh, float *out) {
  const int Dh = D / Hh;
  for (int b = 0; b < B; b++)
    for (int t = 0; t < T; t++) {
      float *row = out + ((size_t)b * T + t) * (size_t)S * D;
      for (int s = 0; s < S; s++)
        for (int h = 0; h < Hh; h++)
          memcpy(row + (size_t)s * D + (size_t)h * Dh, inp + ((((size_t)s * B + b) * Hh + h) * T + t) * Dh,
                 (size_t)Dh * sizeof(float));
    }
}

void nn_head_gate_forward(const float *inp, const float *g, int B, int T, int D, int Hh, float *out) {
  const int Dh = D / Hh;
  for (int b = 0; b < B; b++)
    for (int t = 0; t < T; t++) {
      const size_t r = ((size_t)b * T + t) * D;
      for (int h = 0; h < Hh; h++) {
        const float gh = g[(size_t)b * Hh + h];
        const float *x = inp + r + (size_t)h * Dh;
        float *o = out + r + (size_t)h * Dh;
        for (int d = 0; d < Dh; d++) o[d] = gh * x[d];
      }
    }
}

void nn_head_gate_backward(const float *dout, const float *inp, const float *g, int B, int T, int D, int Hh,
                           float *dinp, float *dg) {
  const int Dh = D / Hh;
  for (int b = 0; b < B; b++)
    for (int t = 0; t < T; t++) {
      const size_t r = ((size_t)b * T + t) * D;
      for (int h = 0; h < Hh; h++) {
        const size_t bh = (size_t)b * Hh + h;
        const float gh = g[bh];
        const float *dy = dout + r + (size_t)h * Dh, *x = inp + r + (size_t)h * Dh;
        float *dx = dinp + r + (size_t)h * Dh;
        float s = 0.0f;
        for (int d = 0; d < Dh; d++) s += dy[d] * x[d];
        for (int d = 0; d < Dh; d++) dx[d] = gh * dy[d];
        dg[bh] += s;
      }
    }
}

void nn_attention_forward(nn_backend *be, const float *qkv, const uint8_t *mask, int B, int T,
                          int Hh, int Dh, float *att, float *ctx) {
  const size_t hs = (size_t)T * Dh, blk = (size_t)B * Hh * hs;
  const float scale = 1.0f / sqrtf((float)Dh);
  for (int b = 0; b < B; b++) {
    const uint8_t *mk = mask + (size_t)b * T;
    for (int h = 0; h < Hh; h++) {
      const size_t bh = (size_t)b * Hh + h;
      const float *q = qkv + bh * hs, *k = q + blk, *v = k + blk;
      float *a = att + bh * T * T;
      be->ops->gemm_host(be, 0, 1, T, T, Dh, scale, q, k, 0.0f, a); /* a (T,T) scores */
      for (int i = 0; i < T; i++) {
        float *row = a + (size_t)i * T;
        float mx = -INFINITY;
        for (int j = 0; j < T; j++)
          if (mk[j] && row[j] > mx) mx = row[j];
        float sum = 0.0f;
        for (int j = 0; j < T; j++) {
          float e = mk[j] ? expf(row[j] - mx) : 0.0f;
          row[j] = e;
          sum += e;
        }
        const float inv = 1.0f / sum;
        for (int j = 0; j < T; j++) row[j] *= inv;
      }
      be->ops->gemm_host(be, 0, 0, T, Dh, T, 1.0f, a, v, 0.0f, ctx + bh * hs); /* ctx (T,Dh) */
    }
  }
}

void nn_attention_backward(nn_backend *be, const float *dctx, const float *datt, const float *qkv,
                           const float *att, int B, int T, int Hh, int Dh, float *dqkv,
                           float *scratch) {
  const size_t hs = (size_t)T * Dh, blk = (size_t)B * Hh * hs, tt = (size_t)T * T;
  const float scale = 1.0f / sqrtf((float)Dh);
  for (size_t bh = 0; bh < (size_t)B * Hh; bh++) {
    const float *q = qkv + bh * hs, *k = q + blk, *v = k + blk;
    float *dq = dqkv + bh * hs, *dk = dq + blk, *dv = dk + blk;
    const float *a = att + bh * tt, *dc = dctx + bh * hs;
    float *dp = scratch;                                     /* (T,T) */
    be->ops->gemm_host(be, 0, 1, T, T, Dh, 1.0f, dc, v, 0.0f, dp);   /* dp = dctx v^T */
    if (datt)
      for (size_t i = 0; i < tt; i++) dp[i] += datt[bh * tt + i];
    be->ops->gemm_host(be, 1, 0, T, Dh, T, 1.0f, a, dc, 0.0f, dv);   /* dv = att^T dctx */
    for (int i = 0; i < T; i++) {                           /* softmax backward, in place */
      const float *ar = a + (size_t)i * T;
      float *dr = dp + (size_t)i * T;
      float dot = 0.0f;
      for (int j = 0; j < T; j++) dot += ar[j] * dr[j];
      for (int j = 0; j < T; j++) dr[j] = ar[j] * (dr[j] - dot);
    }
    be->ops->gemm_host(be, 0, 0, T, Dh, T, scale, dp, k, 0.0f, dq);  /* dq = ds k / sqrt(Dh) */
    be->ops->gemm_host(be, 1, 0, T, Dh, T, scale, dp, q, 0.0f, dk);  /* dk = ds^T q / sqrt(Dh) */
  }
}

void nn_pool_mean_forward(const float *h, const uint8_t *mask, int B, int T, int D, float *out) {
  for (int b = 0; b < B; b++) {
    float *o = out + (size_t)b * D;
    memset(o, 0, (size_t)D * sizeof *o);
    int n = 0;
    for (int t = 0; t < T; t++) {
      if (!mask[(size_t)b * T + t]) continue;
      const float *x = h + ((size_t)b * T + t) * D;
      for (int d = 0; d < D; d++) o[d] += x[d];
      n++;
    }
    const float s = n ? 1.0f / (float)n : 0.0f;
    for (int d = 0; d < D; d++) o[d] *= s;
  }
}

void nn_pool_mean_backward(const float *dout, const uint8_t *mask, int B, int T, int D, float *dh) {
  for (int b = 0; b < B; b++) {
    int n = 0;
    for (int t = 0; t < T; t++) n += mask[(size_t)b * T + t] != 0;
    if (!n) continue;
    const float s = 1.0f / (float)n;
    const float *dy = dout + (size_t)b * D;
    for (int t = 0; t < T; t++) {
      if (!mask[(size_t)b * T + t]) continue;
      float *x = dh + ((size_t)b * T + t) * D;
      for (int d = 0; d < D; d++) x[d] += s * dy[d];
    }
  }
}

void nn_pool_cls_forward(const float *h, int B, int T, int D, float *out) {
  for (int b = 0; b < B; b++)
    memcpy(out + (size_t)b * D, h + (size_t)b * T * D, (size_t)D * sizeof(float));
}

void nn_pool_cls_backward(const float *dout, int B, int T, int D, float *dh) {
  for (int b = 0; b < B; b++) {
    float *x = dh + (size_t)b * T * D;
    const float *dy = dout + (size_t)b * D;
    for (int d = 0; d < D; d++) x[d] += dy[d];
  }
}

static int count_real(const uint8_t *mask, int N) {
  if (!mask) return N;
  int n = 0;
  for (int r = 0; r < N; r++) n += mask[r] != 0;
  return n;
}

float nn_mse_proj_forward(nn_backend *be, const float *hs, const float *W, const float *bias,
                          const float *ht, const uint8_t *mask, int N, int Ds, int Dt, float *pred) {
  if (bias)
    for (int r = 0; r < N; r++) memcpy(pred + (size_t)r * Dt, bias, (size_t)Dt * sizeof(float));
  be->ops->gemm_host(be, 0, 1, N, Dt, Ds, 1.0f, hs, W, bias ? 1.0f : 0.0f, pred);
  const int n = count_real(mask, N);
  if (!n) return 0.0f;
  double sum = 0.0;
  for (int r = 0; r < N; r++) {
    if (mask && !mask[r]) continue;
    const float *p = pred + (size_t)r * Dt, *t = ht + (size_t)r * Dt;
    for (int d = 0; d < Dt; d++) sum += (double)(p[d] - t[d]) * (p[d] - t[d]);
  }
  return (float)(sum / ((double)n * Dt));
}

void nn_mse_proj_backward(nn_backend *be, const float *hs, const float *W, const float *ht,
                          const uint8_t *mask, int N, int Ds, int Dt, float weight, float *pred,
                          float *dhs, float *dW, float *dbias) {
  const int n = count_real(mask, N);
  const float s = n ? 2.0f * weight / ((float)n * (float)Dt) : 0.0f;
  for (int r = 0; r < N; r++) {
    float *p = pred + (size_t)r * Dt;
    const float *t = ht + (size_t)r * Dt;
    if (mask && !mask[r]) {
      memset(p, 0, (size_t)Dt * sizeof *p);
      continue;
    }
    for (int d = 0; d < Dt; d++) p[d] = s * (p[d] - t[d]);
  }
  be->ops->gemm_host(be, 1, 0, Dt, Ds, N, 1.0f, pred, hs, 1.0f, dW);
  if (dbias)
    for (int r = 0; r < N; r++)
      for (int d = 0; d < Dt; d++) dbias[d] += pred[(size_t)r * Dt + d];
  if (dhs) be->ops->gemm_host(be, 0, 0, N, Ds, Dt, 1.0f, pred, W, 1.0f, dhs);
}

#define NN_ATTN_KL_FLOOR 1e-30f

float nn_attn_kl_forward(const float *pt, const float *ps, const uint8_t *mask, int B, int Hh, int T) {
  const int n = count_real(mask, B * T);
  if (!n) return 0.0f;
  double sum = 0.0;
  for (int b = 0; b < B; b++)
    for (int h = 0; h < Hh; h++)
      for (int i = 0; i < T; i++) {
        if (!mask[(size_t)b * T + i]) continue;
        const size_t row = ((((size_t)b * Hh + h) * T) + i) * T;
        for (int j = 0; j < T; j++) {
          float p = pt[row + j];
          if (p <= 0.0f) continue;
          float q = ps[row + j] > NN_ATTN_KL_FLOOR ? ps[row + j] : NN_ATTN_KL_FLOOR;
          sum += (double)p * (log((double)p) - log((double)q));
        }
      }
  return (float)(sum / ((double)n * Hh));
}

void nn_attn_kl_backward(const float *pt, const float *ps, const uint8_t *mask, int B, int Hh, int T,
                         float weight, float *dps) {
  const int n = count_real(mask, B * T);
  if (!n) return;
  const float s = -weight / ((float)n * (float)Hh);
  for (int b = 0; b < B; b++)
    for (int h = 0; h < Hh; h++)
      for (int i = 0; i < T; i++) {
        if (!mask[(size_t)b * T + i]) continue;
        const size_t row = ((((size_t)b * Hh + h) * T) + i) * T;
        for (int j = 0; j < T; j++) {
          float p = pt[row + j];
          if (p <= 0.0f) continue;
          float q = ps[row + j] > NN_ATTN_KL_FLOOR ? ps[row + j] : NN_ATTN_KL_FLOOR;
          dps[row + j] += s * p / q;
        }
      }
}
