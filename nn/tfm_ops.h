/* The transformer encoder's layers as forward/backward pairs, shared by
 * nn/tfm.c, the distillation losses and the tests; the stages use nn/tfm.h.
 *
 * Shapes: N rows (N = B*T positions), B batch rows, T positions, D width,
 * Hh heads of width Dh, V vocabulary, NB n-gram buckets. Row-major; a weight
 * W (O,I) maps I inputs to O outputs, out = inp W^T + b. The heads of a
 * projected (N,D) state are stored head-major (B,Hh,T,Dh) for attention.
 *
 * Unless a comment says "overwrites", every backward ADDS into the gradients
 * it is given, so gradients from several consumers of one tensor compose.
 * nn_linear_forward, nn_gelu_* and nn_dropout_* (nn/layers.h) complete the set. */
#ifndef FINCH_NN_TFM_OPS_H
#define FINCH_NN_TFM_OPS_H

#include <stddef.h>
#include <stdint.h>

#include "nn/backend.h"

/* The layer-norm epsilon (PyTorch's default). */
#define NN_LN_EPS 1e-5f

/* out (N,D) = (inp - mean) * rstd * g + b per row; inp (N,D); g, b (D).
 * mean and rstd (N) receive each row's statistics for the backward. */
void nn_layernorm_forward(const float *inp, const float *g, const float *b, int N, int D, float *out,
                          float *mean, float *rstd);
/* The same with the epsilon eps in place of NN_LN_EPS (a pretrained
 * checkpoint's own, nn/bert.c). */
void nn_layernorm_eps_forward(const float *inp, const float *g, const float *b, int N, int D, float eps, float *out,
                              float *mean, float *rstd);
/* dout (N,D); inp (N,D), mean, rstd (N) from the forward; g (D).
 * Adds into dinp (N,D), dg (D) and db (D). */
void nn_layernorm_backward(const float *dout, const float *inp, const float *g, const float *mean,
                           const float *rstd, int N, int D, float *dinp, float *dg, float *db);

/* The linear layer's backward in accumulating form: dout (B,O); inp (B,I);
 * W (O,I). Adds dout^T inp into dW (O,I) and column sums of dout into db (O);
 * OVERWRITES dinp (B,I) = dout W unless dinp is NULL. (Not named I: that is
 * a macro of <complex.h>, which <cblas.h> includes.) */
void nn_linear_backward_acc(nn_backend *be, const float *dout, const float *inp, const float *W,
                            int B, int In, int O, float *dinp, float *dW, float *db);

/* GELU as nn_gelu_forward/backward (nn/layers.h), the reference, but in loops
 * gcc vectorises: Phi(x) by Abramowitz & Stegun 7.1.26 on erfc, exp by a
 * degree-6 polynomial. Within 1e-6 max(1, |x|) of the reference, values and
 * derivatives (test_tfm_grad); erff and expf calls were a fifth of a training
 * step. inp (n); out (n). */
void nn_gelu_fast_forward(const float *inp, float *out, size_t n);
/* inp (n) the forward's input; dout (n); dinp (n) = dout * GELU'(inp).
 * dinp may alias dout. */
void nn_gelu_fast_backward(const float *inp, const float *dout, float *dinp, size_t n);

/* Token embeddings: out (B*T,D) = tok[ids[b,t]] + pos[t] + the mean of
 * ng[r] over r in ng_ids[ng_offs[b*T+t] .. ng_offs[b*T+t+1]). tok (V,D);
 * pos (>=T,D); ng (NB,D). ng_offs NULL (or ng NULL) = no n-gram rows; a
 * token with no rows gets no n-gram term. */
void nn_tok_embed_forward(const float *tok, const float *pos, const float *ng, int D,
                          const int32_t *ids, const size_t *ng_offs, const uint32_t *ng_ids, int B,
                          int T, float *out);
/* dout (B*T,D). Adds into dtok (V,D), dpos (>=T,D) and, when n-gram rows
 * were used, dng (NB,D). */
void nn_tok_embed_backward(const float *dout, int D, const int32_t *ids, const size_t *ng_offs,
                           const uint32_t *ng_ids, int B, int T, float *dtok, float *dpos,
                           float *dng);

/* out (n) = a (n) + b (n). out may alias a or b. */
void nn_residual_forward(const float *a, const float *b, float *out, size_t n);
/* dout (n); adds dout into da (n) and db (n). */
void nn_residual_backward(const float *dout, float *da, float *db, size_t n);

/* Splits projected states into heads: inp (B*T, S*D), S stacked blocks of
 * width D (S = 3 for [q | k | v]); out (S,B,Hh,T,Dh) head-major. */
void nn_heads_split(const float *inp, int S, int B, int T, int D, int Hh, float *out);
/* The inverse: inp (S,B,Hh,T,Dh); OVERWRITES out (B*T, S*D). */
void nn_heads_merge(const float *inp, int S, int B, int T, int D, int Hh, float *out);

/* Per-example head gates on a merged context: out (B*T,D) = inp (B*T,D)
 * with row (b,t)'s columns h*Dh .. (h+1)*Dh-1 scaled by g[b,h]; g (B,Hh). */
void nn_head_gate_forward(const float *inp, const float *g, int B, int T, int D, int Hh, float *out);
/* dout (B*T,D); inp and g from the forward. OVERWRITES dinp (B*T,D) = dout
 * scaled as in the forward (dinp may alias dout); adds into dg (B,Hh) the
 * sum over each head's columns and all T rows of dout * inp. */
void nn_head_gate_backward(const float *dout, const float *inp, const float *g, int B, int T, int D, int Hh,
                           float *dinp, float *dg);

/* Scaled dot-product attention with a key padding mask, per (b,h):
 * att = softmax(q k^T / sqrt(Dh)) with key positions j where mask[b,j] = 0
 * given probability exactly 0 (the limit of a -inf bias); ctx = att v.
 * qkv (3,B,Hh,T,Dh) head-major [q | k | v]; mask (B,T), at least one real
 * key per row; att (B,Hh,T,T); ctx (B,Hh,T,Dh). */
void nn_attention_forward(nn_backend *be, const float *qkv, const uint8_t *mask, int B, int T,
                          int Hh, int Dh, float *att, float *ctx);
/* dctx (B,Hh,T,Dh); datt (B,Hh,T,T) a gradient on the probabilities from
 * elsewhere (an attention loss), or NULL; qkv and att from the forward.
 * OVERWRITES dqkv (3,B,Hh,T,Dh). scratch (T,T). */
void nn_attention_backward(nn_backend *be, const float *dctx, const float *datt, const float *qkv,
                           const float *att, int B, int T, int Hh, int Dh, float *dqkv,
                           float *scratch);

/* Mean over real positions: out (B,D) = sum_t mask[b,t] h[b,t] / sum_t
 * mask[b,t]; h (B*T,D); mask (B,T), at least one real position per row. */
void nn_pool_mean_forward(const float *h, const uint8_t *mask, int B, int T, int D, float *out);
/* dout (B,D); adds into dh (B*T,D) on real positions only. */
void nn_pool_mean_backward(const float *dout, const uint8_t *mask, int B, int T, int D, float *dh);
/* The [CLS] position: out (B,D) = h[b,0]; h (B*T,D). */
void nn_pool_cls_forward(const float *h, int B, int T, int D, float *out);
/* dout (B,D); adds into dh[b,0]. */
void nn_pool_cls_backward(const float *dout, int B, int T, int D, float *dh);

/* Hidden-state matching through a learned projection (TinyBERT):
 * pred (N,Dt) = hs W^T + bias, loss = sum over rows r with mask[r] = 1 of
 * |pred[r] - ht[r]|^2 / (n_real * Dt). hs (N,Ds) student; W (Dt,Ds); bias
 * (Dt) or NULL; ht (N,Dt) teacher; mask (N) or NULL = every row. pred
 * receives the projection for the backward. Returns the loss (0 with no real
 * rows). */
float nn_mse_proj_forward(nn_backend *be, const float *hs, const float *W, const float *bias,
                          const float *ht, const uint8_t *mask, int N, int Ds, int Dt, float *pred);
/* The backward of weight * loss. pred (N,Dt) from the forward is CONSUMED:
 * it is overwritten with d(weight * loss)/d(pred). Adds into dhs (N,Ds),
 * dW (Dt,Ds) and dbias (Dt) (which may be NULL; so may dhs). */
void nn_mse_proj_backward(nn_backend *be, const float *hs, const float *W, const float *ht,
                          const uint8_t *mask, int N, int Ds, int Dt, float weight, float *pred,
                          float *dhs, float *dW, float *dbias);

/* Attention-distribution matching (TinyBERT, MiniLM): the mean over heads and
 * over real query rows (b,t) (mask[b,t] = 1) of KL(pt[b,h,t] || ps[b,h,t]),
 * both distributions over the T keys. pt, ps (B,Hh,T,T); mask (B,T). Terms
 * with pt = 0 contribute 0; ps is floored at 1e-30 inside the log. */
float nn_attn_kl_forward(const float *pt, const float *ps, const uint8_t *mask, int B, int Hh, int T);
/* Adds weight * d(loss)/d(ps) = -weight * pt / ps / (Hh * n_real) into
 * dps (B,Hh,T,T) on real query rows (nn_tfm_dattn takes exactly this). */
void nn_attn_kl_backward(const float *pt, const float *ps, const uint8_t *mask, int B, int Hh, int T,
                         float weight, float *dps);

/* ---- profiling (bench_tfm) --------------------------------------------- */

/* Where a forward and backward spend their time, by op. Counting is off
 * until nn_tfm_profile_enable; it adds two clock reads per op. */
enum {
  NN_TFM_OP_EMBED, NN_TFM_OP_LN, NN_TFM_OP_QKV, NN_TFM_OP_ATTN, NN_TFM_OP_OUTPROJ, NN_TFM_OP_FF1,
  NN_TFM_OP_GELU, NN_TFM_OP_FF2, NN_TFM_OP_RESID, NN_TFM_OP_HEAD, NN_TFM_OP_MLM,
  NN_TFM_OP_ZERO, NN_TFM_OP_COUNT
};

struct nn_tfm_work;
/* on = 1 starts counting (and resets the counters), 0 stops. */
void nn_tfm_profile_enable(struct nn_tfm_work *w, int on);
/* Seconds spent per op since enabling, forward in fwd[], backward in bwd[]
 * (NN_TFM_OP_COUNT entries each), and the op's name. */
void nn_tfm_profile_get(const struct nn_tfm_work *w, double *fwd, double *bwd);
const char *nn_tfm_profile_name(int op);

#endif
