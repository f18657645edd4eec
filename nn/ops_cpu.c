/* The CPU op table (nn/ops.h): host memory and the reference functions, so
 * that a step run through the table computes exactly what the functions do. */
#include <cblas.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "nn/layers.h"
#include "nn/loss.h"
#include "nn/ops.h"
#include "nn/tfm_ops.h"

/* 64-byte aligned (a cache line, and what the vectorised loops like). */
static void *cpu_alloc(nn_backend *be, size_t bytes) {
  (void)be;
  size_t n = (bytes + 63) & ~(size_t)63;
  void *p = aligned_alloc(64, n ? n : 64);
  if (p) memset(p, 0, n ? n : 64);
  return p;
}
static void cpu_release(nn_backend *be, void *p) {
  (void)be;
  free(p);
}
static void cpu_copy(nn_backend *be, void *dst, const void *src, size_t bytes) {
  (void)be;
  if (bytes && dst != src) memmove(dst, src, bytes);
}
static void cpu_zero(nn_backend *be, void *p, size_t bytes) {
  (void)be;
  if (bytes) memset(p, 0, bytes);
}
static void cpu_set_precision(nn_backend *be, nn_gemm_precision p) {
  (void)be;
  (void)p;
}

/* Host memory is the CPU's memory: gemm and gemm_host are this one function. */
static void cpu_gemm(nn_backend *be, int trans_a, int trans_b, int M, int N, int K, float alpha, const float *A,
                     const float *B, float beta, float *C) {
  (void)be;
  if (M <= 0 || N <= 0) return;
  if (K <= 0) {
    /* BLAS leaves this to the implementation; make it C = beta C explicitly. */
    for (size_t i = 0; i < (size_t)M * N; i++) C[i] = beta == 0.0f ? 0.0f : beta * C[i];
    return;
  }
  cblas_sgemm(CblasRowMajor, trans_a ? CblasTrans : CblasNoTrans, trans_b ? CblasTrans : CblasNoTrans,
              M, N, K, alpha, A, trans_a ? M : K, B, trans_b ? K : N, beta, C, N);
}
static void cpu_gemm_strided(nn_backend *be, int ta, int tb, int M, int N, int K, float alpha, const float *A,
                             size_t sA, const float *B, size_t sB, float beta, float *C, size_t sC, int count) {
  for (int i = 0; i < count; i++)
    cpu_gemm(be, ta, tb, M, N, K, alpha, A + (size_t)i * sA, B + (size_t)i * sB, beta, C + (size_t)i * sC);
}
static void cpu_linear_forward(nn_backend *be, const float *inp, const float *W, const float *b, int B, int In, int O,
                               float *out) {
  if (b) nn_linear_forward(be, inp, W, b, B, In, O, out);
  else cpu_gemm(be, 0, 1, B, O, In, 1.0f, inp, W, 0.0f, out);
}
static void cpu_linear_backward(nn_backend *be, const float *dout, const float *inp, const float *W, int B, int In,
                                int O, float *dinp, float *dW, float *db) {
  if (dW && db) {
    nn_linear_backward_acc(be, dout, inp, W, B, In, O, dinp, dW, db);
    return;
  }
  if (dW) cpu_gemm(be, 1, 0, O, In, B, 1.0f, dout, inp, 1.0f, dW);
  if (db)
    for (int r = 0; r < B; r++)
      for (int o = 0; o < O; o++) db[o] += dout[(size_t)r * O + o];
  if (dinp) cpu_gemm(be, 0, 0, B, In, O, 1.0f, dout, W, 0.0f, dinp);
}

static void cpu_ln_fwd(nn_backend *be, const float *inp, const float *g, const float *b, int N, int D, float *out,
                       float *mean, float *rstd) {
  (void)be;
  nn_layernorm_forward(inp, g, b, N, D, out, mean, rstd);
}
static void cpu_ln_eps_fwd(nn_backend *be, const float *inp, const float *g, const float *b, int N, int D, float eps,
                           float *out, float *mean, float *rstd) {
  (void)be;
  nn_layernorm_eps_forward(inp, g, b, N, D, eps, out, mean, rstd);
}
static void cpu_ln_bwd(nn_backend *be, const float *dout, const float *inp, const float *g, const float *mean,
                       const float *rstd, int N, int D, float *dinp, float *dg, float *db) {
  (void)be;
  nn_layernorm_backward(dout, inp, g, mean, rstd, N, D, dinp, dg, db);
}
static void cpu_gelu_fwd(nn_backend *be, const float *inp, float *out, size_t n) {
  (void)be;
  nn_gelu_fast_forward(inp, out, n);
}
static void cpu_gelu_bwd(nn_backend *be, const float *inp, const float *dout, float *dinp, size_t n) {
  (void)be;
  nn_gelu_fast_backward(inp, dout, dinp, n);
}
static void cpu_mul(nn_backend *be, float *x, const float *mask, size_t n) {
  (void)be;
  nn_dropout_backward(x, mask, n);
}
static void cpu_add(nn_backend *be, const float *a, const float *b, float *out, size_t n) {
  (void)be;
  nn_residual_forward(a, b, out, n);
}
static void cpu_acc(nn_backend *be, const float *x, float *y, size_t n) {
  (void)be;
  for (size_t i = 0; i < n; i++) y[i] += x[i];
}

static void cpu_embed_fwd(nn_backend *be, const float *tok, const float *pos, const float *ng, int D,
                          const int32_t *ids, const size_t *ng_offs, const uint32_t *ng_ids, int B, int T,
                          float *out) {
  (void)be;
  nn_tok_embed_forward(tok, pos, ng, D, ids, ng_offs, ng_ids, B, T, out);
}
static void cpu_embed_bwd(nn_backend *be, const float *dout, int D, const int32_t *ids, const size_t *ng_offs,
                          const uint32_t *ng_ids, int B, int T, float *dtok, float *dpos, float *dng) {
  (void)be;
  nn_tok_embed_backward(dout, D, ids, ng_offs, ng_ids, B, T, dtok, dpos, dng);
}
static void cpu_split(nn_backend *be, const float *inp, int S, int B, int T, int D, int Hh, float *out) {
  (void)be;
  nn_heads_split(inp, S, B, T, D, Hh, out);
}
static void cpu_merge(nn_backend *be, const float *inp, int S, int B, int T, int D, int Hh, float *out) {
  (void)be;
  nn_heads_merge(inp, S, B, T, D, Hh, out);
}
static void cpu_pool_mean_fwd(nn_backend *be, const float *h, const uint8_t *mask, int B, int T, int D, float *out) {
  (void)be;
  nn_pool_mean_forward(h, mask, B, T, D, out);
}
static void cpu_pool_mean_bwd(nn_backend *be, const float *dout, const uint8_t *mask, int B, int T, int D,
                              float *dh) {
  (void)be;
  nn_pool_mean_backward(dout, mask, B, T, D, dh);
}
static void cpu_pool_cls_fwd(nn_backend *be, const float *h, int B, int T, int D, float *out) {
  (void)be;
  nn_pool_cls_forward(h, B, T, D, out);
}
static void cpu_pool_cls_bwd(nn_backend *be, const float *dout, int B, int T, int D, float *dh) {
  (void)be;
  nn_pool_cls_backward(dout, B, T, D, dh);
}

static void cpu_xent_fwd(nn_backend *be, const float *logits, const int32_t *y, int B, int C, float eps, float *probs,
                         float *loss) {
  (void)be;
  nn_xent_ls_forward(logits, y, B, C, eps, probs, loss);
}
static void cpu_xent_bwd(nn_backend *be, const float *probs, const int32_t *y, int B, int C, float eps, float weight,
                         float *dlogits) {
  (void)be;
  nn_xent_ls_backward(probs, y, B, C, eps, weight, dlogits);
}
static void cpu_kl_fwd(nn_backend *be, const float *logits, const float *pt, int B, int C, float tau, float *q,
                       float *loss) {
  (void)be;
  nn_kl_tau_forward(logits, pt, B, C, tau, q, loss);
}
static void cpu_kl_bwd(nn_backend *be, const float *q, const float *pt, int B, int C, float tau, float weight,
                       float *dlogits) {
  (void)be;
  nn_kl_tau_backward(q, pt, B, C, tau, weight, dlogits);
}
static void cpu_adamw(nn_backend *be, float *p, const float *g, float *m, float *v, size_t n, float lr, float wd,
                      float gscale, uint64_t t, const nn_adamw_config *c) {
  (void)be;
  nn_adamw_update(p, g, m, v, n, lr, wd, gscale, t, c);
}
static void cpu_adamw_rows(nn_backend *be, float *P, float *G, float *M, float *V, const uint32_t *rows, size_t S,
                           int D, float lr, float wd, float gscale, uint64_t t, const nn_adamw_config *c) {
  (void)be;
  for (size_t s = 0; s < S; s++) {
    size_t off = (size_t)rows[s] * (size_t)D;
    nn_adamw_update(P + off, G + off, M + off, V + off, (size_t)D, lr, wd, gscale, t, c);
    memset(G + off, 0, (size_t)D * sizeof *G);
  }
}
static double cpu_sum_sq(nn_backend *be, const float *g, size_t n) {
  (void)be;
  return nn_sum_sq(g, n);
}

const nn_ops nn__ops_cpu_table = {
    .alloc = cpu_alloc, .release = cpu_release, .upload = cpu_copy, .download = cpu_copy, .zero = cpu_zero, .copy = cpu_copy,
    .set_precision = cpu_set_precision, .gemm = cpu_gemm, .gemm_strided = cpu_gemm_strided,
    .gemm_host = cpu_gemm,
    .linear_forward = cpu_linear_forward, .linear_backward = cpu_linear_backward, .layernorm_forward = cpu_ln_fwd,
    .layernorm_backward = cpu_ln_bwd, .layernorm_eps_forward = cpu_ln_eps_fwd, .gelu_forward = cpu_gelu_fwd, .gelu_backward = cpu_gelu_bwd, .mul = cpu_mul,
    .add = cpu_add, .acc = cpu_acc, .tok_embed_forward = cpu_embed_fwd, .tok_embed_backward = cpu_embed_bwd,
    .heads_split = cpu_split, .heads_merge = cpu_merge, .attention_forward = nn_attention_forward,
    .attention_backward = nn_attention_backward, .pool_mean_forward = cpu_pool_mean_fwd,
    .pool_mean_backward = cpu_pool_mean_bwd, .pool_cls_forward = cpu_pool_cls_fwd,
    .pool_cls_backward = cpu_pool_cls_bwd, .xent_ls_forward = cpu_xent_fwd, .xent_ls_backward = cpu_xent_bwd,
    .kl_tau_forward = cpu_kl_fwd, .kl_tau_backward = cpu_kl_bwd, .adamw = cpu_adamw, .adamw_rows = cpu_adamw_rows,
    .sum_sq = cpu_sum_sq,
};

const nn_ops *nn_ops_cpu(void) { return &nn__ops_cpu_table; }
