/* The op table: every op a training step of the encoder needs, over memory
 * that lives on the backend (host memory for the CPU, device memory for
 * CUDA), so a step can run with no copies but its inputs and its loss.
 *
 * Each backend fills one table (nn_backend.ops). The CPU table calls the
 * reference functions of nn/tfm_ops.h, nn/layers.h, nn/loss.h and nn/optim.h
 * and is bit for bit what they compute; the CUDA table (nn/ops_cuda.cu)
 * implements the same contracts as kernels and cuBLAS calls, and is held to
 * the CPU table by tests/nn/test_ops.c (normalised error under a stated
 * tolerance per op).
 *
 * Every pointer below is backend memory from alloc, except where a comment
 * says "host". Shapes and accumulation rules are those of the reference
 * function named in each comment: "adds" means the op adds into its output,
 * "overwrites" that it replaces it. A device backend's ops are asynchronous
 * and record their first failure for nn_backend_check;
 * download and sum_sq wait for the work before them. */
#ifndef FINCH_NN_OPS_H
#define FINCH_NN_OPS_H

#include <stddef.h>
#include <stdint.h>

#include "nn/backend.h"
#include "nn/optim.h"

#ifdef __cplusplus
extern "C" {
#endif

/* GEMM precision. FP32 is the default and what the parity tests hold to
 * 1e-8; BF16 lets a device run its GEMMs on tensor cores with bf16 inputs
 * and fp32 accumulation, the operands and results staying fp32 (the master
 * weights never leave fp32, and bf16 keeps fp32's exponent range, so no loss
 * scaling is needed). The CPU computes FP32 either way. */
typedef enum { NN_GEMM_FP32 = 0, NN_GEMM_BF16 = 1 } nn_gemm_precision;

struct nn_ops {
  /* ---- memory ---- */
  /* bytes of zeroed backend memory; NULL when it cannot be had (recorded). */
  void *(*alloc)(nn_backend *be, size_t bytes);
  void (*release)(nn_backend *be, void *p);
  /* host src -> backend dst; backend src -> host dst; both bytes long. */
  void (*upload)(nn_backend *be, void *dst, const void *src, size_t bytes);
  void (*download)(nn_backend *be, void *dst, const void *src, size_t bytes);
  void (*zero)(nn_backend *be, void *p, size_t bytes);
  /* backend src -> backend dst, bytes long (the two may overlap only if equal) */
  void (*copy)(nn_backend *be, void *dst, const void *src, size_t bytes);
  void (*set_precision)(nn_backend *be, nn_gemm_precision p);

  /* ---- dense ---- */
  /* The contract of nn_sgemm_ref (nn/backend.h), on backend memory. */
  void (*gemm)(nn_backend *be, int trans_a, int trans_b, int M, int N, int K, float alpha, const float *A,
               const float *B, float beta, float *C);
  /* count independent GEMMs; operand i starts at A + i*sA (and B, C alike). */
  void (*gemm_strided)(nn_backend *be, int trans_a, int trans_b, int M, int N, int K, float alpha, const float *A,
                       size_t sA, const float *B, size_t sB, float beta, float *C, size_t sC, int count);
  /* The same contract on host memory (host A, B, C): a device backend stages
   * the operands through its own buffers and waits for the result. The bow
   * model's layers and the encoder's host code use it. */
  void (*gemm_host)(nn_backend *be, int trans_a, int trans_b, int M, int N, int K, float alpha, const float *A,
                    const float *B, float beta, float *C);
  /* nn_linear_forward: out (B,O) = inp (B,I) W^T + b; b may be NULL. */
  void (*linear_forward)(nn_backend *be, const float *inp, const float *W, const float *b, int B, int In, int O,
                         float *out);
  /* nn_linear_backward_acc: adds into dW and db (NULL = none), overwrites dinp (NULL = none). */
  void (*linear_backward)(nn_backend *be, const float *dout, const float *inp, const float *W, int B, int In, int O,
                          float *dinp, float *dW, float *db);

  /* ---- element-wise and normalisation ---- */
  void (*layernorm_forward)(nn_backend *be, const float *inp, const float *g, const float *b, int N, int D,
                            float *out, float *mean, float *rstd);
  /* adds into dinp, dg, db */
  void (*layernorm_backward)(nn_backend *be, const float *dout, const float *inp, const float *g, const float *mean,
                             const float *rstd, int N, int D, float *dinp, float *dg, float *db);
  /* layernorm_forward with the epsilon eps in place of NN_LN_EPS (BERT
   * checkpoints name theirs, e.g. 1e-12); overwrites out, mean, rstd. The
   * backward needs no epsilon: layernorm_backward serves both. */
  void (*layernorm_eps_forward)(nn_backend *be, const float *inp, const float *g, const float *b, int N, int D,
                                float eps, float *out, float *mean, float *rstd);
  /* nn_gelu_fast_*: the erf GELU within 1e-6 max(1, |x|); dinp may alias dout. */
  void (*gelu_forward)(nn_backend *be, const float *inp, float *out, size_t n);
  void (*gelu_backward)(nn_backend *be, const float *inp, const float *dout, float *dinp, size_t n);
  /* x (n) *= mask (n): dropout's forward and backward alike, the mask (0 or
   * 1/(1-p)) drawn on the host from the run's rng (so CPU and device drop the
   * same units) and uploaded. */
  void (*mul)(nn_backend *be, float *x, const float *mask, size_t n);
  /* out (n) = a + b (may alias either) */
  void (*add)(nn_backend *be, const float *a, const float *b, float *out, size_t n);
  /* y (n) += x (n) */
  void (*acc)(nn_backend *be, const float *x, float *y, size_t n);

  /* ---- the encoder's layers (nn/tfm_ops.h) ---- */
  /* ids (B,T) int32, ng_offs (B*T+1) size_t, ng_ids uint32, all backend memory. */
  void (*tok_embed_forward)(nn_backend *be, const float *tok, const float *pos, const float *ng, int D,
                            const int32_t *ids, const size_t *ng_offs, const uint32_t *ng_ids, int B, int T,
                            float *out);
  /* adds into dtok, dpos and dng (device order of the adds may differ) */
  void (*tok_embed_backward)(nn_backend *be, const float *dout, int D, const int32_t *ids, const size_t *ng_offs,
                             const uint32_t *ng_ids, int B, int T, float *dtok, float *dpos, float *dng);
  void (*heads_split)(nn_backend *be, const float *inp, int S, int B, int T, int D, int Hh, float *out);
  void (*heads_merge)(nn_backend *be, const float *inp, int S, int B, int T, int D, int Hh, float *out);
  /* mask (B,T) uint8 */
  void (*attention_forward)(nn_backend *be, const float *qkv, const uint8_t *mask, int B, int T, int Hh, int Dh,
                            float *att, float *ctx);
  /* scratch (B,Hh,T,T) (the CPU uses its first T*T); overwrites dqkv */
  void (*attention_backward)(nn_backend *be, const float *dctx, const float *datt, const float *qkv,
                             const float *att, int B, int T, int Hh, int Dh, float *dqkv, float *scratch);
  void (*pool_mean_forward)(nn_backend *be, const float *h, const uint8_t *mask, int B, int T, int D, float *out);
  void (*pool_mean_backward)(nn_backend *be, const float *dout, const uint8_t *mask, int B, int T, int D,
                             float *dh);
  void (*pool_cls_forward)(nn_backend *be, const float *h, int B, int T, int D, float *out);
  void (*pool_cls_backward)(nn_backend *be, const float *dout, int B, int T, int D, float *dh);

  /* ---- losses (nn/loss.h) ---- */
  /* y (B) int32 */
  void (*xent_ls_forward)(nn_backend *be, const float *logits, const int32_t *y, int B, int C, float eps,
                          float *probs, float *loss);
  void (*xent_ls_backward)(nn_backend *be, const float *probs, const int32_t *y, int B, int C, float eps,
                           float weight, float *dlogits);
  void (*kl_tau_forward)(nn_backend *be, const float *logits, const float *pt, int B, int C, float tau, float *q,
                         float *loss);
  void (*kl_tau_backward)(nn_backend *be, const float *q, const float *pt, int B, int C, float tau, float weight,
                          float *dlogits);

  /* ---- optimisation (nn/optim.h) ---- */
  /* nn_adamw_update; c is host memory. */
  void (*adamw)(nn_backend *be, float *p, const float *g, float *m, float *v, size_t n, float lr, float wd,
                float gscale, uint64_t t, const nn_adamw_config *c);
  /* The lazy form on a dense table: P, G, M, V (R,D); only rows rows[0..S)
   * (uint32, backend memory) are updated, as nn_adamw_update on each row's
   * span, and their gradient rows are then zeroed. */
  void (*adamw_rows)(nn_backend *be, float *P, float *G, float *M, float *V, const uint32_t *rows, size_t S, int D,
                     float lr, float wd, float gscale, uint64_t t, const nn_adamw_config *c);
  /* nn_sum_sq: the sum of squares of g, returned to the host. */
  double (*sum_sq)(nn_backend *be, const float *g, size_t n);
};

/* The CPU table (nn/ops_cpu.c); nn_backend_cpu()'s ops. */
const nn_ops *nn_ops_cpu(void);
extern const nn_ops nn__ops_cpu_table;

#ifdef __cplusplus
}
#endif

#endif
