/* Training and inference around the transformer encoder (nn/tfm.h): text
 * encoding with the subword tokenizer and hashed character n-grams, the
 * training loop (AdamW, warm-up then cosine or linear decay, global-norm
 * clipping, label-smoothed cross-entropy, temperature-scaled distillation
 * with a per-example weight, masked-token pre-training), exact checkpoints
 * and batched prediction.
 *
 * Reproducibility: every random choice (initialisation, shuffling, dropout,
 * masking) comes from nn_rng streams seeded by the configuration's seed, and
 * the CPU kernels are deterministic, so a run is repeatable bit for bit on
 * the CPU; a run resumed from a checkpoint continues with the same losses as
 * an uninterrupted one.
 *
 * Checkpoint file (little-endian), written atomically (temp file + rename):
 *   magic[8] "FINCHCK\0", u32 version (1), u32 reserved,
 *   u64 n_params, u64 n_rows, u64 step, u64 total_steps, u32 epoch,
 *   u32 batch_in_epoch, u64 config_hash (FNV-1a of the training config and
 *   model config: a checkpoint of another run is refused),
 *   rng states: shuffle, dropout, mask (3 x 32 bytes),
 *   order (n_rows u32, the current epoch's data order),
 *   params, adam m, adam v (3 x n_params f32; n_params counts the model's
 *   parameters followed by the intermediate-layer projections, if any),
 *   SHA-256 (32 bytes) of everything before it. */
#ifndef FINCH_NN_TFM_TRAIN_H
#define FINCH_NN_TFM_TRAIN_H

#include <stddef.h>
#include <stdint.h>

#include "core/status.h"
#include "nn/backend.h"
#include "nn/tfm.h"
#include "nn/tokenizer.h"

/* Texts encoded for the encoder: (n,T) ids, [CLS] first, padded with
 * NN_TOK_PAD; a token's n-gram rows are the hashed character n-grams of the
 * word it came from. One allocation per array; free with nn_tfm_corpus_free. */
typedef struct {
  int T;             /* positions per row */
  size_t n;
  int32_t *ids;      /* (n,T) */
  uint8_t *len;      /* (n) real tokens per row, >= 1 ([CLS]) */
  size_t *ng_offs;   /* (n*T+1), NULL when buckets = 0 */
  uint32_t *ng_ids;  /* n-gram rows in [0,buckets) */
  uint32_t buckets, minn, maxn;
} nn_tfm_corpus;

/* Encodes n texts. A text that is not valid UTF-8 is FINCH_EFORMAT naming
 * its index. buckets = 0 or maxn = 0 turns the n-gram rows off. */
finch_status nn_tfm_corpus_encode(nn_tfm_corpus *c, const nn_tokenizer *tok, const char *const *texts,
                                  size_t n, int T, uint32_t buckets, uint32_t minn, uint32_t maxn,
                                  finch_err *err);
void nn_tfm_corpus_free(nn_tfm_corpus *c);

typedef struct {
  uint32_t epochs;
  uint32_t batch;
  float lr;              /* peak learning rate */
  float weight_decay;    /* decoupled; not on biases, norms, position embeddings */
  float warmup;          /* share of the steps spent warming up */
  int cosine;            /* 1 = cosine decay to 0, 0 = linear */
  float clip;            /* global gradient norm; 0 = off */
  float label_smoothing;
  float mlm_prob;        /* share of real tokens masked for the MLM loss; 0 = none */
  float mlm_weight;      /* weight of the MLM loss */
  float cls_weight;      /* weight of the classification loss (0 = MLM only) */
  float tau;             /* distillation temperature, used when soft labels are given */
  float alpha;           /* soft-label weight when the data has no per-row alpha */
  float gate_penalty;    /* lambda of the head-gate sparsity penalty lambda * mean(g) (gated models) */
  uint64_t seed;
  const char *checkpoint;    /* checkpoint path; NULL = none */
  uint32_t checkpoint_every; /* steps between checkpoints (and one at the end) */
  int resume;                /* 1 = continue from checkpoint when it exists */
  uint64_t stop_after;       /* stop (as if killed) after this many steps; 0 = run to the end */
} nn_tfm_train_config;

nn_tfm_train_config nn_tfm_train_defaults(void);

typedef struct {
  const nn_tfm_corpus *x;
  const int32_t *labels; /* (n) in [0,C), -1 = no label (MLM only); NULL = none */
  const float *soft;     /* (n,C) teacher probabilities at tau, or NULL */
  const float *alpha;    /* (n) per-row soft-label weight, or NULL for cfg->alpha */
  /* Intermediate-layer matching against a teacher encoder run on the same
   * rows (TinyBERT): for each student layer l with layer_map[l] = k >= 0,
   *   hidden_weight * MSE(hidden_s(l+1) P_l^T + c_l, hidden_t(k+1))
   * through a learned projection P_l (Dt,Ds), c_l (Dt), initialised N(0,
   * 0.02) and trained with the student (then dropped), plus
   *   attn_weight * KL(attn_t(k) || attn_s(l))
   * with the teacher's heads averaged in groups of Ht/Hs (Ht must be a
   * multiple of Hs). Both over real positions only. With progressive, layer
   * l is matched from epoch floor(l * epochs / L) on: shallow layers first,
   * deeper ones added as training goes on. */
  const nn_tfm *teacher;     /* NULL = no intermediate matching */
  const nn_tfm_corpus *tx;   /* the same rows encoded for the teacher (its buckets); same ids and T */
  const int32_t *layer_map;  /* (student L) teacher layer per student layer, -1 = none */
  float hidden_weight, attn_weight;
  int progressive;
} nn_tfm_data;

typedef struct {
  uint64_t step, total;
  uint32_t epoch, epochs;
  float loss;      /* this step's loss */
  float cls_loss, mlm_loss;
  float hidden_loss, attn_loss; /* intermediate-layer terms (unweighted) */
  float lr;
  float grad_norm; /* before clipping */
  double ex_per_s; /* since the start (or the resume) */
  double eta_s;
} nn_tfm_progress;

/* Called after every step. */
typedef void (*nn_tfm_step_cb)(void *ctx, const nn_tfm_progress *p);

/* Trains m in place. be NULL = CPU. On a device backend the whole step runs
 * there (the losses on the (B,C) logits are computed on the host, as on the
 * CPU); a run with masked-token pre-training, head gates or a teacher's
 * layers to match trains on the CPU instead, with a warning, as those parts
 * are host code. */
finch_status nn_tfm_train(nn_tfm *m, nn_backend *be, const nn_tfm_data *d, const nn_tfm_train_config *c,
                          nn_tfm_step_cb cb, void *cb_ctx, finch_err *err);

/* probs (n, C) = softmax(logits / temperature) for rows [0,n) of x, batched
 * by batch; pred (n) the arg-max, may be NULL. */
finch_status nn_tfm_predict_corpus(const nn_tfm *m, nn_backend *be, const nn_tfm_corpus *x, int batch,
                                   float temperature, float *probs, int32_t *pred, finch_err *err);

/* The share of attention heads open (gate > 0.5) for each row [0,n) of x,
 * over all layers, into share (n). FINCH_EINVAL when m has no head gates. */
finch_status nn_tfm_gate_share(const nn_tfm *m, nn_backend *be, const nn_tfm_corpus *x, float *share, finch_err *err);

/* Mean masked-token cross-entropy of rows [0,n) of x with a seeded masking
 * (for measuring pre-training). */
finch_status nn_tfm_mlm_eval(const nn_tfm *m, nn_backend *be, const nn_tfm_corpus *x, float mlm_prob,
                             uint64_t seed, double *loss, double *acc, finch_err *err);

#endif
