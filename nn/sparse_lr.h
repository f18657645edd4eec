/* A sparse linear n-gram classifier: TF-IDF features over an explicit
 * vocabulary and multinomial logistic regression with L2 regularisation,
 * the classic strong baseline for intent classification (close to
 * scikit-learn's TfidfVectorizer x 2 + LogisticRegression). One member of the
 * ensemble teacher, so its probabilities are those of a properly fitted
 * (converged, regularised) maximum-likelihood model.
 *
 * Features. A text is normalised and tokenised by nn_tokenize (nn/features.h:
 * NFKC, case fold, placeholders such as "<card>" kept whole). Two blocks of
 * terms come from the tokens:
 *   - word block: word n-grams for n = 1..word_ngrams, the tokens joined by
 *     one space ("card arrived");
 *   - char block (char_max > 0): character n-grams, char_min <= n <= char_max
 *     code points, of " " token " " for each word or CJK token, like
 *     scikit-learn's analyzer="char_wb" (whose words are split at white space
 *     only, so there punctuation stays inside them): a padded token of fewer
 *     than char_min code points gives itself once. Placeholders give none.
 * A term is a key: its block's tag byte, 'w' or 'c', then its bytes; terms
 * whose key would exceed NN_SPARSE_LR_MAX_KEY bytes are ignored.
 * The vocabulary holds the terms whose document frequency df is at least
 * min_df; with max_features > 0 only the max_features terms with the highest
 * corpus counts are kept (ties by bytes). Each term j has the smooth idf
 *   idf_j = ln((1 + n) / (1 + df_j)) + 1.
 * A text's value for term j is (1 + ln count_j) * idf_j (sublinear tf); each
 * block is then L2-normalised on its own (as a FeatureUnion of two
 * vectorizers does), so a row has norm sqrt(2) when both blocks are present.
 * Terms not in the vocabulary are ignored.
 *
 * Model. logits z (C) = W^T x + b, W (F,C), b (C), F features, C labels.
 * Training minimises
 *   (1/n) sum_i [ logsumexp(z_i) - z_i[y_i] ] + 1/(2 C_reg n) ||W||^2,
 * which is scikit-learn's objective C_reg sum_i loss_i + 1/2 ||W||^2 scaled
 * by 1/(C_reg n); the bias is not penalised. The optimiser is full-batch
 * L-BFGS from zero, in one thread: the same inputs give the same model bit
 * for bit. Training holds about 80 bytes per weight (the L-BFGS history):
 * some 210 MB for BANKING77 with the defaults (35k features x 77 labels).
 *
 * A model is immutable after training or loading, so concurrent
 * nn_sparse_lr_predict() calls on one model are safe.
 *
 * Blob format (all integers and floats little-endian, floats IEEE 754
 * binary32):
 *   offset size
 *   0      4    magic "FSLR"
 *   4      4    u32 version = 1
 *   8      4    u32 word_ngrams
 *   12     4    u32 char_min
 *   16     4    u32 char_max
 *   20     4    u32 min_df
 *   24     4    u32 max_features
 *   28     4    f32 C
 *   32     4    u32 epochs
 *   36     8    u64 seed
 *   44     4    u32 n_labels C (>= 1)
 *   48     4    u32 n_features F
 *   52     ...  F vocabulary entries, in feature order:
 *                 u32 len (2..NN_SPARSE_LR_MAX_KEY), len bytes of key, f32 idf
 *               where the key's first byte is the block, 'w' or 'c', and the
 *               rest the term's bytes; keys are distinct, idf finite and > 0
 *          ...  f32 W (F,C) row-major, then f32 b (C); all finite
 * and nothing after. */
#ifndef FINCH_NN_SPARSE_LR_H
#define FINCH_NN_SPARSE_LR_H

#include <stddef.h>
#include <stdint.h>

#include "core/status.h"

enum { NN_SPARSE_LR_VERSION = 1, NN_SPARSE_LR_HEADER = 52, NN_SPARSE_LR_MAX_KEY = 4096 };

typedef struct nn_sparse_lr nn_sparse_lr;

typedef struct {
  uint32_t word_ngrams;        /* 1..3 */
  uint32_t char_min, char_max; /* code points, 1 <= min <= max <= 16; char_max = 0: no char block */
  uint32_t min_df;             /* >= 1 */
  uint32_t max_features;       /* 0 = all */
  float C;                     /* inverse L2 strength as in scikit-learn, > 0 */
  uint32_t epochs;             /* L-BFGS iterations at most, >= 1 */
  uint64_t seed;               /* recorded; full-batch L-BFGS from zero draws no random numbers */
} nn_sparse_lr_config;

/* word 1-2-grams, char 2-5-grams, min_df 1, C 200, at most 300 iterations,
 * seed 42. Chosen on the seeded stratified 10% holdout of BANKING77 train
 * (bench/bench_sparse_lr.c): accuracy is flat (91.3-91.9%) for C from 5 to
 * 1000, so C minimises the holdout log-loss (0.43 at C 5, 0.34 at 20, 0.30 at
 * 100, 0.295 at 200-300, 0.31 at 1000); min_df 1 beats 2 on log-loss (0.295
 * vs 0.304) for 1.8x the features; L-BFGS stops after about 110 iterations. */
nn_sparse_lr_config nn_sparse_lr_defaults(void);

/* Builds the vocabulary from texts[0..n) and fits the model to labels in
 * [0, n_labels). FINCH_EINVAL names a bad configuration field or the index
 * of a bad label; FINCH_EFORMAT names the index of a text that is not UTF-8.
 * On success *out is owned by the caller (nn_sparse_lr_free). */
finch_status nn_sparse_lr_train(nn_sparse_lr **out, const char *const *texts, const int32_t *labels,
                                size_t n, size_t n_labels, const nn_sparse_lr_config *cfg,
                                finch_err *err);

/* nn_sparse_lr_train calling cb (may be NULL) after each L-BFGS iteration
 * with the iteration (1-based), the objective (mean loss plus the L2 term)
 * after it and the accepted step length. */
typedef void (*nn_sparse_lr_iter_cb)(void *ctx, uint32_t iter, uint32_t max_iter, double objective, double step);
finch_status nn_sparse_lr_train_watched(nn_sparse_lr **out, const char *const *texts, const int32_t *labels,
                                        size_t n, size_t n_labels, const nn_sparse_lr_config *cfg,
                                        nn_sparse_lr_iter_cb cb, void *cb_ctx, finch_err *err);

/* Fills probs (n_labels, may be NULL) with softmax(logits / temperature) and
 * returns the arg-max label (the lowest index on ties). Returns -1 with probs
 * uniform when text is not valid UTF-8, temperature is not > 0, or memory
 * runs out. A text with no known term gets the biases' answer. Thread-safe. */
int nn_sparse_lr_predict(const nn_sparse_lr *m, const char *text, float *probs, float temperature);

size_t nn_sparse_lr_n_labels(const nn_sparse_lr *m);
size_t nn_sparse_lr_n_features(const nn_sparse_lr *m);
/* Weights and biases: F C + C. */
size_t nn_sparse_lr_n_params(const nn_sparse_lr *m);
const nn_sparse_lr_config *nn_sparse_lr_config_of(const nn_sparse_lr *m);

/* Serialises the model into a malloc'd blob (format above) that the caller
 * frees; *buf and *len are untouched on failure. */
finch_status nn_sparse_lr_save(const nn_sparse_lr *m, unsigned char **buf, size_t *len, finch_err *err);
/* Rebuilds a model from a blob. Every length and count is checked against the
 * bytes that remain before anything is allocated: FINCH_EFORMAT naming the
 * field and its offset for a bad magic, version, configuration, length, key,
 * non-finite number, or trailing bytes. */
finch_status nn_sparse_lr_load(nn_sparse_lr **out, const unsigned char *buf, size_t len, finch_err *err);
void nn_sparse_lr_free(nn_sparse_lr *m);

#endif
