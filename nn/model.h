/* The intent model as the stages see it: train, predict, save, load.
 *
 * Architecture (arch "bow", the skeleton's model): a bag of hashed n-gram
 * embeddings. A text is normalised (core/text.h, NFKC + case fold), split
 * into word tokens, and mapped to feature rows: in-vocabulary words, hashed
 * word bigrams and hashed character n-grams of each word. The rows' embeddings
 * are mean-pooled into h0 (D); an optional hidden layer gives
 * h1 = GELU(W1 h0 + b1) (H); logits = W2 h + b2 (C).
 *   teacher: wide embeddings and a hidden layer;
 *   student: narrow embeddings, no hidden layer (hidden = 0).
 *
 * Training minimises, per example,
 *   (1-alpha) * CE_ls(y, softmax(z)) + alpha * tau^2 * KL(p_T || softmax(z/tau))
 * where p_T is the teacher's distribution at temperature tau (already
 * softened by the caller, see nn_model_predict) and CE_ls is cross-entropy
 * with label smoothing. alpha is kd->alpha, or the example's own weight when
 * the dataset carries per-example weights. Without soft targets alpha is 0.
 *
 * A model is immutable after training or loading, so concurrent
 * nn_model_predict() calls on one model are safe. */
#ifndef FINCH_NN_MODEL_H
#define FINCH_NN_MODEL_H

#include <stddef.h>
#include <stdint.h>

#include "core/status.h"
#include "nn/backend.h"

typedef struct nn_model nn_model;

/* The architectures behind nn_model: "bow" here, the others in
 * nn/model_arch.h. */
typedef enum { NN_ARCH_BOW = 0, NN_ARCH_TFM = 1, NN_ARCH_SLR = 2, NN_ARCH_ENSEMBLE = 3, NN_ARCH_BERT = 4 } nn_arch;

typedef struct {
  uint32_t dim;          /* embedding width D */
  uint32_t hidden;       /* hidden width H; 0 = linear classifier on h0 */
  uint32_t buckets;      /* hashed rows for bigrams, char n-grams and OOV words */
  uint32_t minn, maxn;   /* character n-gram lengths; maxn = 0 disables them */
  uint32_t word_ngrams;  /* 1 = unigrams, 2 = + bigrams */
  uint32_t min_count;    /* vocabulary threshold for whole words */
  uint32_t epochs;
  uint32_t batch;
  float lr;              /* peak learning rate (AdamW) */
  float weight_decay;    /* decoupled; never applied to biases */
  float warmup;          /* share of steps spent warming up, then linear decay */
  float label_smoothing;
  float dropout;         /* on h0 (and h1) during training */
  uint64_t seed;         /* init, dropout and shuffling: a run is reproducible */
} nn_train_config;

typedef struct {
  float alpha;       /* weight of the soft-label term, in [0,1] */
  float temperature; /* tau > 0 */
} nn_kd_config;

typedef struct {
  const char *const *texts; /* n texts, UTF-8 (normalised inside) */
  const int32_t *labels;    /* n label indices in [0, n_labels) */
  const float *soft;        /* n x n_labels teacher probabilities at tau, or NULL */
  const float *alpha;       /* n per-example soft-label weights in [0,1] (with kd), or NULL for kd->alpha */
  size_t n;
} nn_dataset;

/* Sensible defaults for a teacher (wide, hidden layer) and a student. */
nn_train_config nn_train_config_teacher(void);
nn_train_config nn_train_config_student(void);

/* Per-epoch progress, called after each epoch when non-NULL. */
typedef void (*nn_epoch_cb)(void *ctx, uint32_t epoch, float mean_loss);

/* What a trainer reports after each epoch (or optimiser iteration) to an
 * nn_epoch_info_cb. model is the model as trained so far, valid during the
 * call only, for predictions (e.g. a dev accuracy); NULL where the trainer
 * has no model to show (a general stage, an L-BFGS iteration). */
typedef struct {
  uint32_t epoch, epochs; /* 1-based */
  uint64_t step;          /* optimiser steps so far */
  float loss;             /* the epoch's mean training loss */
  float lr;               /* the learning rate of its last step (L-BFGS: the accepted step length) */
  const nn_model *model;
} nn_epoch_info;
typedef void (*nn_epoch_info_cb)(void *ctx, const nn_epoch_info *e);

/* Builds the vocabulary from train->texts, initialises and trains a model.
 * kd may be NULL (hard labels only); train->soft must then be NULL or ignored.
 * be may be NULL (CPU). label_names are copied into the model. */
finch_status nn_model_train(nn_model **out, const nn_dataset *train, const char *const *label_names,
                            size_t n_labels, const nn_train_config *cfg, const nn_kd_config *kd,
                            nn_backend *be, nn_epoch_cb cb, void *cb_ctx, finch_err *err);

/* What a bag-of-n-grams student can learn from a teacher's encoder before
 * its labelled epochs (nn/bow_prior.c):
 *
 * Initialisation. Once the vocabulary is built, word_vectors gives the
 * teacher's vector (E wide) of each vocabulary word; their top D principal
 * components (the embedding width; min(D, E), the other columns 0) become
 * the word rows, scaled to the random initialisation's mean squared norm,
 * and each hashed character
 * n-gram row starts at the mean of the rows of the vocabulary words that
 * contain it. The others keep their random start.
 *
 * General stage (TinyBERT's general distillation, for a model without
 * layers): for gen_epochs passes over gen_texts, the mean embedding h0 of a
 * text is mapped by a linear layer (E,D), started from the principal axes
 * when words were initialised, to the teacher's pooled vector of that text,
 * gen_targets (n_gen, E), under a squared error divided by the targets'
 * variance (so 1.0 = no better than their mean). The embedding rows learn;
 * the map is dropped afterwards. gen_loss_first and gen_loss_last receive
 * the first and last epoch's mean. */
typedef struct {
  finch_status (*word_vectors)(void *ctx, const char *const *words, size_t n, uint32_t *dim, float **vectors,
                               finch_err *err); /* *vectors (n, *dim), malloc'd, the caller frees */
  void *ctx;
  const char *const *gen_texts;
  const float *gen_targets;
  size_t n_gen;
  uint32_t gen_dim, gen_epochs;
  double words_explained;  /* out: share of the word vectors' variance the D components keep */
  size_t words_init, rows_init; /* out: word rows and n-gram rows initialised */
  double gen_loss_first, gen_loss_last; /* out */
  nn_epoch_info_cb gen_cb; /* after each general-stage epoch (model NULL), when non-NULL */
  void *gen_ctx;
} nn_bow_prior;

/* nn_model_train with a prior (NULL = nn_model_train). */
finch_status nn_model_train_prior(nn_model **out, const nn_dataset *train, const char *const *label_names,
                                  size_t n_labels, const nn_train_config *cfg, const nn_kd_config *kd,
                                  nn_bow_prior *prior, nn_backend *be, nn_epoch_cb cb, void *cb_ctx,
                                  finch_err *err);

/* nn_model_train_prior reporting each epoch through cb (may be NULL). */
finch_status nn_model_train_watched(nn_model **out, const nn_dataset *train, const char *const *label_names,
                                    size_t n_labels, const nn_train_config *cfg, const nn_kd_config *kd,
                                    nn_bow_prior *prior, nn_backend *be, nn_epoch_info_cb cb, void *cb_ctx,
                                    finch_err *err);

/* Returns the arg-max label index of text and, when probs is non-NULL, fills
 * probs[n_labels] with softmax(logits / temperature) (temperature 1 = the
 * model's own probabilities). Returns -1, with probs uniform, when text is
 * not valid UTF-8 or memory runs out. */
int nn_model_predict(const nn_model *m, const char *text, float *probs, float temperature);

size_t nn_model_n_labels(const nn_model *m);
const char *nn_model_label(const nn_model *m, size_t i);
int nn_model_label_index(const nn_model *m, const char *name); /* -1 when absent */
size_t nn_model_n_params(const nn_model *m);
const nn_train_config *nn_model_config(const nn_model *m);

/* Free-form JSON metadata carried in the file (kind, stage, dataset, ...).
 * The string is copied; NULL clears it. */
finch_status nn_model_set_meta(nn_model *m, const char *json, finch_err *err);
const char *nn_model_meta(const nn_model *m); /* "{}" when unset */
/* Copies the string value of key in the metadata into buf; returns 1 when
 * present, else 0 with buf = "". */
int nn_model_meta_string(const nn_model *m, const char *key, char *buf, size_t n);

typedef enum { NN_DTYPE_F32 = 0, NN_DTYPE_Q8 = 1 } nn_dtype;

/* Writes the model file (format in nn/modelfile.h) atomically (temp file +
 * rename). Weight matrices are stored as dtype; biases always as F32.
 * sha256_hex (65 bytes, may be NULL) receives the SHA-256 of the whole file. */
finch_status nn_model_save(const nn_model *m, const char *path, nn_dtype dtype, char *sha256_hex,
                           finch_err *err);
/* Loads and verifies a model file; Q8 weights are dequantised to F32 on load. */
finch_status nn_model_load(nn_model **out, const char *path, finch_err *err);
/* The dtype the model was loaded from (F32 for a freshly trained model). */
nn_dtype nn_model_dtype(const nn_model *m);
void nn_model_free(nn_model *m);

#endif
