/* The transformer encoder ("tfm"): a pre-LN BERT-style encoder over subword
 * token ids, with optional hashed character n-gram rows added to each token's
 * embedding, a pooled output, a classifier head and a tied masked-token (MLM)
 * head. Every layer is a forward/backward pair in nn/tfm.c; the model's
 * parameters, its gradients and its activations each live in one allocation.
 *
 * Shapes: B batch rows, T positions (T <= max_len), D width, Hh heads of
 * width Dh = D / Hh, F feed-forward width, L layers, C labels, V vocabulary,
 * NB n-gram buckets, P masked positions. Row-major throughout; a weight W
 * (O,I) maps I inputs to O outputs: out = inp W^T + b.
 *
 * Forward, per batch:
 *   x0[b,t]   = tok_emb[ids[b,t]] + pos_emb[t]
 *               + mean_{r in ngrams(b,t)} ng_emb[r]        (when NB > 0 and
 *                                                            the token has rows)
 *   h0        = dropout(LN_emb(x0))                        hidden(0)
 *   for l in 0..L-1:
 *     a       = LN1_l(h_l)
 *     q,k,v   = a Wqkv_l^T + bqkv_l, split into Hh heads
 *     att     = softmax(q k^T / sqrt(Dh) + maskbias)       attn(l) (B,Hh,T,T);
 *               maskbias = -inf-like (-1e9) on key positions with mask 0
 *     u       = h_l + dropout((att v merged) Wo_l^T + bo_l)
 *     h_{l+1} = u + dropout(W2_l GELU(W1_l LN2_l(u) + b1_l) + b2_l)
 *                                                          hidden(l+1)
 *   hf        = LN_f(h_L)
 *   pooled    = mean of hf over positions with mask 1     (NN_POOL_MEAN)
 *             | hf[b,0], the [CLS] position                (NN_POOL_CLS)
 *   logits    = dropout(pooled) Wc^T + bc                  (B,C), when C > 0
 *   mlm       = hf[pos] tok_emb^T + mlm_b                  (P,V), on request
 *
 * Head gates (head_gates = 1): every layer scales each head's context by a
 * per-example gate computed from the pooled input, so a simple input can
 * switch heads off (the caller adds a sparsity penalty through
 * nn_tfm_dgates, e.g. lambda * mean(g), and reads nn_tfm_gates to report
 * the share of heads in use):
 *   e         = mean of h0 over positions with mask 1      (B,D), both pools
 *   g_l       = sigmoid(e gate_w_l^T + gate_b_l)           gates(l) (B,Hh)
 *   u         = h_l + dropout((g_l * (att v) merged) Wo_l^T + bo_l)
 *               (g_l[b,h] scales head h's Dh context columns of row b)
 * gate_w_l (Hh,D) starts N(0, 0.02) and gate_b_l (Hh) at +2, so the gates
 * start mostly open (sigmoid(2) = 0.88). A closed head still runs its
 * attention: the attention and its Wqkv projection are a small share of a
 * step at the sequence lengths served, and skipping heads would make
 * inference differ from training. With head_gates = 0 there are no gate
 * tensors and the model computes exactly what it did before the field
 * existed, bit for bit, from the same parameters.
 *
 * Training and inference differ only in dropout (train = 1 draws masks from
 * the rng). Padded positions (mask 0) never influence real positions.
 *
 * Threading: a model is read-only during forward/backward; one work area per
 * thread. */
#ifndef FINCH_NN_TFM_H
#define FINCH_NN_TFM_H

#include <stddef.h>
#include <stdint.h>

#include "core/status.h"
#include "nn/backend.h"
#include "nn/params.h"
#include "nn/rng.h"

enum { NN_POOL_MEAN = 0, NN_POOL_CLS = 1 };

typedef struct {
  uint32_t vocab;    /* V, token embedding rows (from the tokenizer) */
  uint32_t buckets;  /* NB, hashed n-gram rows; 0 = no n-gram features */
  uint32_t max_len;  /* positions in pos_emb; T <= max_len */
  uint32_t dim;      /* D */
  uint32_t layers;   /* L >= 1 */
  uint32_t heads;    /* Hh, D % Hh == 0 */
  uint32_t ff;       /* F */
  uint32_t n_labels; /* C; 0 = no classifier head */
  uint32_t pool;     /* NN_POOL_MEAN or NN_POOL_CLS */
  float dropout;     /* on h0, attention output, FF output and pooled; 0..0.9 */
  uint32_t head_gates; /* 1 = per-example sigmoid gate on each head's output; 0 = none.
                          Last, so that designated initialisers without it mean 0 */
} nn_tfm_config;

/* One named tensor of the parameter block (nn/params.h); decay = 1 for
 * weight matrices, 0 for biases, layer-norm gains/shifts and position
 * embeddings. Names: "tok_emb", "ng_emb", "pos_emb", "ln_emb_g", "ln_emb_b",
 * "l0.wqkv", "l0.bqkv", "l0.wo", "l0.bo", "l0.ln1_g", "l0.ln1_b", "l0.w1",
 * "l0.b1", "l0.w2", "l0.b2", "l0.ln2_g", "l0.ln2_b", ... "ln_f_g", "ln_f_b",
 * "cls_w", "cls_b", "mlm_b", in this order; then, with head gates only,
 * "l0.gate_w", "l0.gate_b", "l1.gate_w", ... */
typedef nn_param_tensor nn_tfm_tensor;

typedef struct nn_tfm nn_tfm;

/* Checks cfg (FINCH_EINVAL naming the field), allocates the model and
 * initialises it from seed: weights N(0, 0.02), output projections (wo, w2)
 * N(0, 0.02/sqrt(2L)), biases 0, layer-norm gains 1, gate biases +2. The
 * gate tensors come last in the table and draw last from the seed, so a
 * model with gates has the same other tensors, at the same offsets and with
 * the same values, as the model without them from the same seed. */
finch_status nn_tfm_create(nn_tfm **out, const nn_tfm_config *cfg, uint64_t seed, finch_err *err);
void nn_tfm_free(nn_tfm *m);
const nn_tfm_config *nn_tfm_get_config(const nn_tfm *m);

/* The parameter block (one allocation, n floats) and its tensor table.
 * Every configuration has the same tensors at the same indices: ng_emb
 * (NB = 0) and cls_w, cls_b (C = 0) are present with zero rows. Head gates
 * append 2L tensors (gate_w decays, gate_b does not) after mlm_b. */
float *nn_tfm_params(nn_tfm *m);
const float *nn_tfm_params_const(const nn_tfm *m);
size_t nn_tfm_n_params(const nn_tfm *m);
size_t nn_tfm_n_tensors(const nn_tfm *m);
const nn_tfm_tensor *nn_tfm_tensor_at(const nn_tfm *m, size_t i);
/* The tensor named name, or NULL. */
const nn_tfm_tensor *nn_tfm_tensor_find(const nn_tfm *m, const char *name);

/* A batch of B token sequences padded to T. The caller owns every array. */
typedef struct {
  int B, T;
  const int32_t *ids;     /* (B,T) token ids in [0,V); padded positions any valid id */
  const uint8_t *mask;    /* (B,T) 1 = real token, 0 = padding; position 0 is real */
  const size_t *ng_offs;  /* (B*T+1) token (b,t)'s n-gram rows are
                             ng_ids[ng_offs[b*T+t] .. ng_offs[b*T+t+1]); NULL = none */
  const uint32_t *ng_ids; /* rows in [0,NB) */
} nn_tfm_batch;

/* Activations and their gradients for up to Bmax rows of T <= max_len. */
typedef struct nn_tfm_work nn_tfm_work;

/* A work area on the CPU: every buffer below is host memory. */
finch_status nn_tfm_work_init(nn_tfm_work **out, const nn_tfm *m, int Bmax, finch_err *err);
/* A work area on backend be (NULL = the CPU): its activations, gradient
 * inputs and results live in be's memory (nn/ops.h), and the passes run on
 * be's op table: the calls below take no backend of their own. On a device
 * backend the work area also holds the parameter block the passes read, a
 * copy of m's taken here (nn_tfm_work_params), and stages each batch's host
 * arrays itself; the accessors below then return device pointers, and the
 * head gates and the MLM head, which are host code, are not available
 * (FINCH_EDEVICE for a gated model; nn_tfm_mlm_forward returns NULL). */
finch_status nn_tfm_work_init_on(nn_tfm_work **out, const nn_tfm *m, int Bmax, nn_backend *be, finch_err *err);
void nn_tfm_work_free(nn_tfm_work *w);
/* The parameter block the passes read on a device backend (n_params floats
 * of device memory, the layout of nn_tfm_params; an optimiser may update it
 * in place), or NULL on the CPU, where they read the model's own. */
float *nn_tfm_work_params(nn_tfm_work *w);
/* Copies m's parameters to the work area's block, or the block back into m;
 * no-ops on the CPU. */
void nn_tfm_work_upload_params(nn_tfm_work *w, const nn_tfm *m);
void nn_tfm_work_download_params(nn_tfm_work *w, nn_tfm *m);

/* Runs the forward pass of batch b (b->B <= Bmax). train = 1 applies dropout
 * with masks drawn from rng (rng may be NULL when train = 0 or dropout = 0).
 * Zeroes every gradient buffer below, ready for the caller's losses. It
 * runs on the work area's backend. Layer norms use eps 1e-5; GELU is the erf
 * form, computed to within 1e-6 max(1, |x|) (nn/tfm_ops.h). */
void nn_tfm_forward(const nn_tfm *m, nn_tfm_work *w, const nn_tfm_batch *b, int train, nn_rng *rng);

/* Results of the last forward, valid until the next forward. */
const float *nn_tfm_logits(const nn_tfm_work *w);            /* (B,C) */
const float *nn_tfm_pooled(const nn_tfm_work *w);            /* (B,D) */
const float *nn_tfm_hidden(const nn_tfm_work *w, int l);     /* (B,T,D), l in 0..L */
const float *nn_tfm_attn(const nn_tfm_work *w, int l);       /* (B,Hh,T,T), l in 0..L-1 */
/* (B,Hh) layer l's head gates in (0,1); NULL when the model has no gates. */
const float *nn_tfm_gates(const nn_tfm_work *w, int l);      /* l in 0..L-1 */

/* Gradient inputs the caller's losses fill before nn_tfm_backward; all are
 * zeroed by nn_tfm_forward, and the backward adds every one it finds. The
 * backward accumulates into dpooled and dhidden, so after it their contents
 * are no longer the caller's: one backward per forward. */
float *nn_tfm_dlogits(nn_tfm_work *w);                       /* (B,C) */
float *nn_tfm_dpooled(nn_tfm_work *w);                       /* (B,D), e.g. pooled-state matching */
float *nn_tfm_dhidden(nn_tfm_work *w, int l);                /* (B,T,D), l in 0..L */
float *nn_tfm_dattn(nn_tfm_work *w, int l);                  /* (B,Hh,T,T), l in 0..L-1 */
/* (B,Hh) d(loss)/d(gates(l)), e.g. a sparsity penalty's; NULL when the model
 * has no gates. The backward carries it, with the gates' share of every
 * other loss, into gate_w, gate_b and hidden(0). */
float *nn_tfm_dgates(nn_tfm_work *w, int l);                 /* l in 0..L-1 */

/* MLM head on P selected positions pos[p] = b*T + t of the last forward:
 * logits (P,V) = hf[pos] tok_emb^T + mlm_b. Returns a (P,V) buffer owned by
 * w, valid until the next forward; the caller writes d(loss)/d(logits) into
 * the (P,V) buffer returned by nn_tfm_dmlm (zeroed by this call) and the
 * backward adds it. P must be in 1..Bmax*max_len. The (P,V) buffers are not
 * part of nn_tfm_work_init's allocation (for a real vocabulary they would
 * dwarf it): they grow on the first calls to the largest P seen, and this
 * returns NULL when that allocation fails or P is out of range. */
const float *nn_tfm_mlm_forward(const nn_tfm *m, nn_tfm_work *w, const int32_t *pos, int P);
float *nn_tfm_dmlm(nn_tfm_work *w);

/* Backward of the last forward. ADDS into grads (n_params floats of the work
 * area's backend memory, the layout of the parameter block); the caller
 * zeroes grads between steps. b is the forward's batch. The rows of
 * ng_emb a batch touched are listed by nn_tfm_touched_ngrams so an optimiser
 * can update only them (the rest of ng_emb's gradient is zero). */
void nn_tfm_backward(const nn_tfm *m, nn_tfm_work *w, const nn_tfm_batch *b, float *grads);
/* Distinct ng_emb rows touched by the last forward, in order of first touch. */
const uint32_t *nn_tfm_touched_ngrams(const nn_tfm_work *w, size_t *n);

/* Model bytes for the model file: the config and the raw parameter block are
 * enough to rebuild a model (nn_tfm_create_from_params copies params; n_params
 * must match the config, gates included). */
finch_status nn_tfm_create_from_params(nn_tfm **out, const nn_tfm_config *cfg, const float *params,
                                       size_t n_params, finch_err *err);

#endif
