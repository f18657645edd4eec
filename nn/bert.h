/* A pretrained BERT encoder (Hugging Face BertModel, e.g. all-MiniLM-L6-v2)
 * run on the op table (nn/ops.h): the same calls on the CPU and on a device.
 *
 * Shapes: B batch rows, T positions (T <= max_pos), D width, Hh heads of
 * width Dh = D / Hh, F feed-forward width, L layers, V vocabulary, N = B*T.
 * Row-major; a weight W (O,I) maps I inputs to O outputs: out = inp W^T + b.
 *
 * Forward, per batch (post-layer-norm, as the checkpoint was trained):
 *   x       = word[ids[b,t]] + position[t] + token_type[0]       (N,D)
 *   h0      = LN_emb(x)
 *   for l in 0..L-1:
 *     q,k,v = h_l Wq^T + bq, h_l Wk^T + bk, h_l Wv^T + bv, split into Hh heads
 *     att   = softmax(q k^T / sqrt(Dh)) over the keys with mask 1  (B,Hh,T,T)
 *     a     = LN1_l(h_l + (att v, heads merged) Wo^T + bo)
 *     h_l+1 = LN2_l(a + GELU(a W1^T + b1) W2^T + b2)
 *   pooled  = mean of h_L over the positions with mask 1          (B,D)
 * LN uses the checkpoint's epsilon (config.json's layer_norm_eps); GELU is
 * the erf form (the op table's, within 1e-6 max(1, |x|)). Padded positions
 * (mask 0) never influence real ones. Only token type 0 is ever used, so its
 * row is added into every position row when the weights are read: the
 * parameter block holds position + token_type[0] as "pos_emb".
 *
 * The parameter block (one allocation, nn_bert_n_params floats), in order:
 *   "tok_emb" (V,D)       embeddings.word_embeddings.weight
 *   "pos_emb" (max_pos,D) embeddings.position_embeddings.weight
 *                         + embeddings.token_type_embeddings.weight[0]
 *   "ln_emb_g", "ln_emb_b" (D)  embeddings.LayerNorm.weight, .bias
 *   per layer l, "l<l>." then:
 *   "wqkv" (3D,D), "bqkv" (3D)  encoder.layer.<l>.attention.self.{query,key,value}
 *                               .weight, .bias, stacked q | k | v
 *   "wo" (D,D), "bo" (D)        attention.output.dense
 *   "ln1_g", "ln1_b" (D)        attention.output.LayerNorm
 *   "w1" (F,D), "b1" (F)        intermediate.dense
 *   "w2" (D,F), "b2" (D)        output.dense
 *   "ln2_g", "ln2_b" (D)        output.LayerNorm
 * The checkpoint's pooler (pooler.dense) is not used: sentence vectors are
 * the mean pool.
 *
 * This is the inference forward: its work area keeps one layer's
 * activations at a time. Fine-tuning (nn/bert_train.h) has its own work
 * area keeping every layer's, a forward with dropout and the backward.
 *
 * Threading: a model is read-only after loading; one work area per thread. */
#ifndef FINCH_NN_BERT_H
#define FINCH_NN_BERT_H

#include <stddef.h>
#include <stdint.h>

#include "core/status.h"
#include "nn/backend.h"
#include "nn/params.h"

typedef struct {
  uint32_t vocab;      /* V: vocab_size */
  uint32_t max_pos;    /* max_position_embeddings; T <= max_pos */
  uint32_t type_vocab; /* type_vocab_size (>= 1; only type 0 is used) */
  uint32_t dim;        /* D: hidden_size */
  uint32_t layers;     /* L: num_hidden_layers */
  uint32_t heads;      /* Hh: num_attention_heads, D % Hh == 0 */
  uint32_t ff;         /* F: intermediate_size */
  float ln_eps;        /* layer_norm_eps, in (0, 0.1] */
} nn_bert_config;

/* One named tensor of the parameter block (nn/params.h); decay = 1 for the
 * weight matrices and embedding tables (what AdamW's weight decay applies
 * to). */
typedef nn_param_tensor nn_bert_tensor;

typedef struct nn_bert nn_bert;

/* FINCH_EINVAL naming the field when c is outside the bounds nn/bert.c
 * states (vocab <= 2^24, max_pos <= 8192, dim <= 8192, layers 1..64, ff <=
 * 65536, heads dividing dim, eps in (0, 0.1]). */
finch_status nn_bert_config_check(const nn_bert_config *c, finch_err *err);

/* Reads a Hugging Face config.json: hidden_size, num_hidden_layers,
 * num_attention_heads, intermediate_size, max_position_embeddings,
 * type_vocab_size, vocab_size, layer_norm_eps (integers, eps a number), and
 * hidden_act, which must be "gelu". FINCH_ENOTFOUND or FINCH_EIO when the
 * file cannot be read; FINCH_EFORMAT naming the file and the field when one
 * is missing, of the wrong type or out of bounds. */
finch_status nn_bert_config_read(const char *path, nn_bert_config *c, finch_err *err);

/* The dropout the checkpoint was trained with, from its config.json:
 * hidden_dropout_prob into *hidden and attention_probs_dropout_prob into
 * *attn, each 0.1 (Hugging Face's default) when the field is absent.
 * FINCH_EFORMAT naming the file and the field when one is not a number in
 * [0, 0.9]; the open and parse errors of nn_bert_config_read. */
finch_status nn_bert_dropout_read(const char *path, float *hidden, float *attn, finch_err *err);

/* Reads the weights named above from a safetensors file (nn/safetensors.h)
 * into a new model of configuration c; every tensor must be F32 of the shape
 * c implies. Errors name the file and the tensor. */
finch_status nn_bert_from_safetensors(nn_bert **out, const nn_bert_config *c, const char *path, finch_err *err);

/* config.json and model.safetensors of a checkpoint directory (e.g.
 * $FINCH_PRETRAINED_DIR/all-minilm-l6-v2). When either file is absent:
 * FINCH_ENOTFOUND with one line naming the directory and
 * scripts/fetch-pretrained.sh. */
finch_status nn_bert_load_dir(nn_bert **out, const char *dir, finch_err *err);

/* A model of configuration c from a parameter block in the layout above
 * (copied); n_params must match c. */
finch_status nn_bert_create_from_params(nn_bert **out, const nn_bert_config *c, const float *params,
                                        size_t n_params, finch_err *err);
void nn_bert_free(nn_bert *m); /* NULL is harmless */

const nn_bert_config *nn_bert_get_config(const nn_bert *m);
const float *nn_bert_params(const nn_bert *m);
/* The same block, writable: fine-tuning (nn/bert_train.h) copies its result
 * back here. No work area made before the write sees it on a device. */
float *nn_bert_params_mut(nn_bert *m);
size_t nn_bert_n_params(const nn_bert *m);
size_t nn_bert_n_tensors(const nn_bert *m);
const nn_bert_tensor *nn_bert_tensor_at(const nn_bert *m, size_t i); /* NULL past the end */

/* Activations for up to Bmax rows of up to Tmax positions, on backend be
 * (NULL = the CPU). On a device the work area also holds a copy of m's
 * parameter block, taken here, and stages each batch's ids and mask. */
typedef struct nn_bert_work nn_bert_work;
finch_status nn_bert_work_init(nn_bert_work **out, const nn_bert *m, int Bmax, int Tmax, nn_backend *be,
                               finch_err *err);
void nn_bert_work_free(nn_bert_work *w); /* NULL is harmless */

/* The forward pass of B rows of T positions: ids (B,T) token ids in [0,V),
 * mask (B,T) 1 = real token, 0 = padding, each row with a real position 0;
 * both host memory, the caller's. FINCH_EINVAL (naming the row and
 * position) on a shape beyond the work area, an id out of range or a row
 * without a real first position, before anything runs; FINCH_EDEVICE (or
 * what the backend recorded) when a device op failed. */
finch_status nn_bert_forward(const nn_bert *m, nn_bert_work *w, const int32_t *ids, const uint8_t *mask, int B,
                             int T, finch_err *err);

/* Results of the last forward in the work area's backend memory, valid until
 * the next forward: the pooled vectors (B,D) and the last hidden states
 * (B,T,D). */
const float *nn_bert_pooled(const nn_bert_work *w);
const float *nn_bert_hidden(const nn_bert_work *w);
/* The pooled vectors of the last forward copied to host memory out (B,D). */
void nn_bert_pooled_host(const nn_bert_work *w, float *out);

/* ---- the "bert" architecture behind nn_model (nn/model_bert.c) ----------
 *
 * The encoder, its WordPiece tokenizer (nn/bert_tokenizer.h) and a linear
 * classification head on the pooled vector:
 *   logits (C) = pooled (D) Wh^T + bh,  Wh (C,D), bh (C);  probs = softmax(logits / temperature)
 * Each text is encoded as [CLS] pieces [SEP], cut to seq_len tokens.
 *
 * Model file sections after the file header (the container is
 * nn/modelfile.h; every body padded to a multiple of 8 by the container),
 * in this order:
 *   "ARCH"     nn_file_arch (32 bytes): name "bert", n_labels; the rest 0
 *   "LABELS"   u32 count, then count x (u32 length, UTF-8 bytes)
 *   "META"     UTF-8 JSON object text
 *   "BERTCFG"  nn_file_bert (64 bytes), little-endian:
 *                offset  0  u32 vocab          offset 20  u32 heads
 *                offset  4  u32 max_pos        offset 24  u32 ff
 *                offset  8  u32 type_vocab     offset 28  u32 n_labels (= ARCH's)
 *                offset 12  u32 dim            offset 32  u32 seq_len, in [2, max_pos]
 *                offset 16  u32 layers         offset 36  f32 ln_eps
 *                offset 40  24 bytes zero
 *   "BERTTOK"  the tokenizer.json the model was built with, byte for byte
 *   "BERTPAR"  the parameter block: nn_bert_n_params f32, in the tensor
 *              order of the table at the top of this header (pos_emb with
 *              token type 0 added in); size = 4 * n_params exactly
 *   "BERTHEAD" f32 Wh (n_labels, dim) row-major, then f32 bh (n_labels);
 *              size = 4 * n_labels * (dim + 1) exactly
 * Always F32: a save asking for Q8 writes F32 (the encoder has no int8
 * kernels yet). A reader refuses a file whose sections are missing, of the
 * wrong size, or whose BERTCFG disagrees with LABELS (FINCH_EFORMAT naming
 * the file and the section). */

typedef struct {
  uint32_t vocab, max_pos, type_vocab, dim, layers, heads, ff, n_labels, seq_len;
  float ln_eps;
  uint8_t reserved[24];
} nn_file_bert;
_Static_assert(sizeof(nn_file_bert) == 64, "nn_file_bert is 64 bytes");

struct nn_model;

/* A "bert" model from a pretrained checkpoint directory (config.json,
 * model.safetensors, tokenizer.json; nn_bert_load_dir's errors when they are
 * missing), n_labels label names, and the head: head_w (n_labels, D) and
 * head_b (n_labels), copied; either NULL = zeros. seq_len in [2, max_pos]
 * (128 is what the pooled vectors were checked at). */
finch_status nn_model_bert_from_dir(struct nn_model **out, const char *dir, int seq_len,
                                    const char *const *labels, size_t n_labels, const float *head_w,
                                    const float *head_b, finch_err *err);

/* The encoder inside a "bert" model, or NULL. */
const nn_bert *nn_model_bert(const struct nn_model *m);

/* Pooled vectors of n texts through the encoder of a "bert" model, on
 * backend be (NULL = the CPU): out (n, D) host memory. Texts go in batches
 * of up to batch rows, grouped by length. A text that is not valid UTF-8
 * fails the call (FINCH_EFORMAT naming its index). */
finch_status nn_model_bert_embed(const struct nn_model *m, nn_backend *be, const char *const *texts, size_t n,
                                 int batch, float *out, finch_err *err);

#endif
