/* Fine-tuning the pretrained BERT encoder (nn/bert.h) with a linear
 * classification head on its mean-pooled vector: a training work area that
 * keeps every layer's activations, the forward with dropout, the backward
 * (nn/bert_grad.c), and the trainer (nn/bert_train.c). All of it runs on the
 * op table (nn/ops.h), so the CPU and a device run the same calls.
 *
 * Shapes as in nn/bert.h: B rows, T positions, D width, Hh heads of width
 * Dh, F feed-forward width, L layers, V vocabulary, N = B*T; C labels.
 *
 * The training parameter block (one allocation of nn_bert_train_n_params
 * floats): the encoder's block in the layout of nn/bert.h, then the head
 *   Wh (C,D), bh (C)   logits (B,C) = pooled (B,D) Wh^T + bh
 * The gradient block and AdamW's two moment blocks share that layout.
 *
 * Forward for training, as the checkpoint was trained (Hugging Face
 * BertModel with its dropout on; p_h hidden_dropout_prob, p_a
 * attention_probs_dropout_prob):
 *   h0    = drop_h(LN_emb(word[ids] + pos))
 *   per layer: att = drop_a(softmax(q k^T / sqrt(Dh)));  ctx = att v
 *          a     = LN1(h + drop_h(ctx Wo^T + bo))
 *          h'    = LN2(a + drop_h(GELU(a W1^T + b1) W2^T + b2))
 *   pooled = mean of h_L over real positions;  logits = pooled Wh^T + bh
 * Every dropout mask is drawn on the host from the caller's rng, in the
 * order of the equations (embeddings, then per layer attention
 * probabilities, attention output, feed-forward output) and uploaded, so the
 * CPU and a device drop the same units. With p_h = p_a = 0 the forward is
 * nn_bert_forward's, and the pooled vectors agree with it bit for bit.
 *
 * The word embeddings' gradient is dense (V,D), and AdamW updates the whole
 * table every step, as PyTorch's AdamW does in the reference recipe (decay
 * and moments move on rows a batch did not touch); for all-MiniLM-L6-v2 the
 * table's update is a small share of a step at batch 32.
 *
 * Checkpoint file (little-endian), written atomically (temp file + rename):
 *   magic[8] "FINCHBK\0", u32 version (1), u32 C,
 *   u64 n_params (the training block's), u64 n_rows, u64 step,
 *   u64 total_steps, u32 epoch, u32 batch_in_epoch,
 *   u64 config_hash (FNV-1a of the encoder config, the training options and
 *   the labels: a checkpoint of another run is refused),
 *   rng states: shuffle, dropout (2 x 32 bytes),
 *   order (n_rows u32, the current epoch's batch order),
 *   params, adam m, adam v (3 x n_params f32),
 *   SHA-256 (32 bytes) of everything before it.
 * The fields and their order follow nn/tfm_train.h's checkpoints. */
#ifndef FINCH_NN_BERT_TRAIN_H
#define FINCH_NN_BERT_TRAIN_H

#include <stddef.h>
#include <stdint.h>

#include "core/status.h"
#include "nn/backend.h"
#include "nn/bert.h"
#include "nn/bert_tokenizer.h"
#include "nn/rng.h"

/* Floats in the training parameter block: the encoder's, then C*D + C. */
size_t nn_bert_train_n_params(const nn_bert *m, int C);

/* ---- the training work area (nn/bert_grad.c) ----------------------------- */

typedef struct nn_bert_train_work nn_bert_train_work;

/* Activations of every layer, their gradients' scratch and the head's, for up
 * to Bmax rows of up to Tmax positions and C labels, on backend be (NULL =
 * the CPU). The passes read the parameters the caller passes them, so one
 * work area serves any parameter block of m's configuration. */
finch_status nn_bert_train_work_init(nn_bert_train_work **out, const nn_bert *m, int C, int Bmax, int Tmax,
                                     nn_backend *be, finch_err *err);
void nn_bert_train_work_free(nn_bert_train_work *w); /* NULL is harmless */

/* The forward above on B rows of T positions. P: the training parameter
 * block in be's memory. ids (B,T), mask (B,T): host memory, copied (the
 * caller may reuse them before the backward); nn_bert_forward's conditions
 * on them, checked the same way (FINCH_EINVAL). p_hidden, p_attn in [0, 0.9];
 * rng is read only when one of them is above 0. Zeroes the logits'
 * gradient, ready for the caller's loss. */
finch_status nn_bert_train_forward(const nn_bert *m, nn_bert_train_work *w, const float *P, const int32_t *ids,
                                   const uint8_t *mask, int B, int T, float p_hidden, float p_attn, nn_rng *rng,
                                   finch_err *err);

/* Results of the last forward in backend memory: logits (B,C), pooled (B,D). */
const float *nn_bert_train_logits(const nn_bert_train_work *w);
const float *nn_bert_train_pooled(const nn_bert_train_work *w);
/* (B,C) d(loss)/d(logits), the caller's to fill after the forward. */
float *nn_bert_train_dlogits(nn_bert_train_work *w);

/* The backward of the last forward from its dlogits. ADDS into G (the
 * training block's layout, backend memory); the caller zeroes G between
 * steps. One backward per forward. */
void nn_bert_train_backward(const nn_bert *m, nn_bert_train_work *w, const float *P, float *G);

/* ---- encoded texts --------------------------------------------------------- */

/* n texts as [CLS] pieces [SEP], cut to T tokens, padded with pad: ids
 * (n,T), len (n). Free with nn_bert_ids_free. */
typedef struct {
  int T;
  size_t n;
  int32_t *ids;
  uint16_t *len;
} nn_bert_ids;

/* FINCH_EFORMAT naming the index of a text that is not valid UTF-8. */
finch_status nn_bert_ids_encode(nn_bert_ids *x, const nn_bert_tok_t *tok, const char *const *texts, size_t n, int T,
                                finch_err *err);
void nn_bert_ids_free(nn_bert_ids *x);

/* ---- the trainer (nn/bert_train.c) ----------------------------------------- */

typedef struct {
  uint32_t epochs;
  uint32_t batch;
  float lr;              /* peak learning rate of the encoder */
  float head_lr;         /* peak learning rate of the head (Wh, bh) */
  float weight_decay;    /* decoupled; on weight matrices and embedding tables only */
  float warmup;          /* share of the steps warming up linearly; then linear decay to 0 */
  float clip;            /* global gradient norm (encoder and head); 0 = off */
  float label_smoothing; /* 0 = plain cross-entropy */
  float hidden_dropout, attn_dropout; /* p_h, p_a (nn_bert_dropout_read gives the checkpoint's) */
  uint32_t bucket;       /* length bucketing: each window of bucket * batch rows of the
                            shuffled order is sorted by length, cut into batches, and its
                            batches shuffled; 0 or 1 = none */
  int init_head;         /* 1 = start the head at Wh ~ N(0, 0.02), bh = 0 (from seed); 0 = the caller's */
  uint64_t seed;
  const char *checkpoint;    /* checkpoint path; NULL = none */
  uint32_t checkpoint_every; /* steps between checkpoints (and one at the end) */
  int resume;                /* 1 = continue from checkpoint when it exists */
  uint64_t stop_after;       /* stop (as if killed) after this many steps; 0 = run to the end */
} nn_bert_train_config;

/* epochs 3, batch 32, lr 1e-4, head_lr 2e-3, weight decay 0.01, warm-up 0.1,
 * clip 1.0, no label smoothing, dropout 0.1 and 0.1, bucket 50, init_head 1,
 * seed 42, checkpoints every 200 steps. */
nn_bert_train_config nn_bert_train_defaults(void);

typedef struct {
  uint64_t step, total;
  uint32_t epoch, epochs;
  float loss;      /* this step's mean loss */
  float lr;        /* the encoder's at this step */
  float grad_norm; /* before clipping */
  double ex_per_s; /* since the start (or the resume) */
  double eta_s;
} nn_bert_progress;

typedef void (*nn_bert_step_cb)(void *ctx, const nn_bert_progress *p);

/* Fine-tunes encoder m and the head (Wh head_w (C,D), bh head_b (C), host
 * memory, read unless c->init_head and written with the result) on the rows
 * of x with labels y (n) in [0,C), on backend be (NULL = the CPU); the
 * encoder's parameters are written back into m. cb (may be NULL) is called
 * after every step. Every random choice comes from c->seed (streams:
 * shuffle, dropout, head init), and the CPU kernels are deterministic, so two
 * runs on the CPU are identical bit for bit, and a run resumed from its
 * checkpoint continues with the losses of the uninterrupted one. */
finch_status nn_bert_finetune(nn_bert *m, float *head_w, float *head_b, int C, nn_backend *be, const nn_bert_ids *x,
                              const int32_t *y, const nn_bert_train_config *c, nn_bert_step_cb cb, void *cb_ctx,
                              finch_err *err);

/* Arg-max labels pred (n) of the rows of x under encoder m and head (Wh, bh),
 * in length-sorted batches of batch rows on be (NULL = the CPU). */
finch_status nn_bert_predict_ids(const nn_bert *m, const float *head_w, const float *head_b, int C, nn_backend *be,
                                 const nn_bert_ids *x, int batch, int32_t *pred, finch_err *err);

#endif
