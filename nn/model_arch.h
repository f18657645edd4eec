/* Model architectures beyond the skeleton's bag of n-grams, behind the same
 * nn_model handle (nn/model.h): every stage predicts, saves and loads them
 * alike.
 *   "tfm"      a transformer encoder (nn/tfm.h) with its subword tokenizer
 *              and n-gram hashing settings;
 *   "slr"      a sparse TF-IDF logistic regression (nn/sparse_lr.h);
 *   "ensemble" members of any architecture over one label list, each with a
 *              calibration temperature and a weight; its probabilities are
 *              the weighted mean of the members' calibrated probabilities,
 *              p = sum_i w_i softmax(z_i / T_i) / sum_i w_i, and a
 *              temperature tau applies to log p: softmax(log p / tau).
 *
 * Model file sections of these architectures (nn/modelfile.h gives the
 * container; the bow sections are documented there):
 *   "ARCH"    nn_file_arch with name "tfm", "slr" or "ensemble" (other
 *             fields: n_labels; the rest 0)
 *   "LABELS", "META" as for bow
 *   tfm:      "TFMCFG"  nn_file_tfm (64 bytes): the nn_tfm_config fields
 *                       (u32 vocab, buckets, max_len, dim, layers, heads, ff,
 *                       n_labels, pool; f32 dropout), u32 seq_len, minn, maxn,
 *                       u32 head_gates, then zero padding
 *             "TOKENIZ" the tokenizer blob (nn/tokenizer.h)
 *             "PARAMS"  per tensor, in nn_tfm_tensor order: u32 dtype
 *                       (0 F32, 1 Q8), u32 rows, u32 cols, u32 0, then F32
 *                       rows*cols floats, or Q8 rows f32 scales + rows*cols
 *                       int8 (per-row symmetric); each tensor 8-aligned
 *   slr:      "SLR"     the sparse model blob (nn/sparse_lr.h)
 *   ensemble: "ENSW"    u32 n, then n x (f32 temperature, f32 weight)
 *             "MEMBER"  n times: a whole member model file, checksum included */
#ifndef FINCH_NN_MODEL_ARCH_H
#define FINCH_NN_MODEL_ARCH_H

#include "nn/model.h"
#include "nn/sparse_lr.h"
#include "nn/tfm.h"
#include "nn/tokenizer.h"

nn_arch nn_model_arch(const nn_model *m);
const char *nn_model_arch_name(const nn_model *m); /* "bow", "tfm", "slr", "ensemble" */

/* Wraps a trained encoder; takes ownership of tfm and tok, also on failure.
 * seq_len: tokens per text at inference ([CLS] included); minn/maxn: the
 * character n-grams hashed into the encoder's buckets. */
finch_status nn_model_from_tfm(nn_model **out, nn_tfm *tfm, nn_tokenizer *tok, int seq_len, uint32_t minn,
                               uint32_t maxn, const char *const *labels, size_t n_labels, finch_err *err);
/* Wraps a trained sparse model; takes ownership, also on failure. */
finch_status nn_model_from_sparse_lr(nn_model **out, nn_sparse_lr *slr, const char *const *labels,
                                     size_t n_labels, finch_err *err);
/* Builds an ensemble; takes ownership of the n members (the array itself
 * stays the caller's), also on failure. Members must have the same labels in
 * the same order. temps (n) > 0; weights (n) >= 0 with a positive sum. */
finch_status nn_model_ensemble(nn_model **out, nn_model **members, const float *temps, const float *weights,
                               size_t n, finch_err *err);

size_t nn_model_n_members(const nn_model *m); /* 0 unless an ensemble */
const nn_model *nn_model_member(const nn_model *m, size_t i);
float nn_model_member_temperature(const nn_model *m, size_t i);
float nn_model_member_weight(const nn_model *m, size_t i);

/* The encoder inside a "tfm" model, or NULL. */
const nn_tfm *nn_model_tfm(const nn_model *m);
const nn_tokenizer *nn_model_tokenizer(const nn_model *m);
/* Tokens per text and the character n-gram lengths of a "tfm" model; 0
 * when m is not one. */
int nn_model_tfm_seq_len(const nn_model *m, uint32_t *minn, uint32_t *maxn);
/* The first "tfm" model in m (m itself, or an ensemble's member), or NULL. */
const nn_model *nn_model_find_tfm(const nn_model *m);

/* Batched prediction: probs (n, n_labels) at temperature, pred (n) (either
 * may be NULL). Faster than n calls of nn_model_predict for the encoder. A
 * text that is not valid UTF-8 gets pred -1 and uniform probabilities. */
finch_status nn_model_predict_many(const nn_model *m, const char *const *texts, size_t n, float *probs,
                                   int32_t *pred, float temperature, finch_err *err);

/* Fits the temperature T minimising the negative log-likelihood of labels
 * given logits log(probs) (n, C) at T = 1, by golden-section search on
 * log T in [0.05, 20]. */
float nn_fit_temperature(const float *probs, const int32_t *labels, size_t n, size_t C);
/* probs (C), a softmax's output at temperature 1, re-tempered in place to
 * softmax(log p / tau) (p^(1/tau) renormalised; probabilities below 1e-30
 * taken as 1e-30); tau = 1 leaves them as they are. */
void nn_retemper(float *p, size_t C, float tau);

#endif
