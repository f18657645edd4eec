/* The "bow" architecture's internals: its state, the training workspace
 * and its file sections. Shared by nn/bow.c (training, prediction, the
 * model interface), nn/bow_file.c (the file sections) and the tests; the
 * stages use nn/model.h only. The layers are nn/layers.h's.
 *
 * Shapes: B batch rows, R embedding rows (vocabulary + buckets), D embedding
 * width, H hidden width (0 = none), C labels, Din = H ? H : D the output
 * layer's input width. Matrices are row-major; a weight W (O,In) maps In
 * inputs to O outputs, out = inp W^T + b. */
#ifndef FINCH_NN_BOW_H
#define FINCH_NN_BOW_H

#include <stddef.h>
#include <stdint.h>

#include "nn/backend.h"
#include "nn/features.h"
#include "nn/layers.h"
#include "nn/model.h"
#include "nn/modelfile.h"
#include "nn/rng.h"

/* The bow model's state, behind nn_model.impl (nn/model_impl.h). */
typedef struct {
  nn_train_config cfg;
  nn_featurizer *feat;
  uint32_t R, D, H, C, Din;
  size_t n_params;
  float *params; /* one allocation: emb (R,D) | W1 (H,D) | b1 (H) | W2 (C,Din) | b2 (C) */
  float *emb, *W1, *b1, *W2, *b2;
} nn_bow;

/* Allocates a model with zeroed parameters sized by cfg, feat and n_labels.
 * Takes ownership of feat, also on failure. */
finch_status nn_bow_create(nn_bow **out, const nn_train_config *cfg, nn_featurizer *feat, size_t n_labels,
                           finch_err *err);
void nn_bow_free(nn_bow *b);

/* The featurizer settings carried by a training configuration. */
nn_feat_config nn__feat_config(const nn_train_config *cfg);

/* Checks a configuration's ranges; FINCH_EINVAL naming the field. */
finch_status nn__config_check(const nn_train_config *cfg, finch_err *err);

/* Feature rows of texts in CSR form: text i has rows ids[offs[i] ..
 * offs[i+1]). The caller frees ids and offs. */
typedef struct {
  uint32_t *ids;
  size_t *offs;
  size_t max_row; /* most rows of one text */
} nn_bow_features;

finch_status nn__bow_featurize_all(const nn_featurizer *f, const char *const *texts, size_t n_texts,
                                   nn_bow_features *t, finch_err *err);

/* Initialisation from a teacher and the general stage (nn/bow_prior.c), on
 * a model whose parameters init_params has just drawn. */
finch_status nn__bow_apply_prior(nn_bow *m, nn_bow_prior *prior, nn_backend *be, finch_err *err);

/* ---- training workspace ------------------------------------------------ */

typedef struct {
  float alpha;           /* weight of the distillation term; 0 = hard labels only */
  float tau;             /* temperature of the distillation term */
  float label_smoothing;
  float dropout;         /* 0 = none (and rng is not used) */
  int per_row_alpha;     /* use w->alpha[b] for row b instead of alpha (distillation on) */
} nn_bow_loss_config;

/* Everything one batch needs, sized for up to Bmax rows and max_ids feature
 * rows. The caller fills ids/offs/y (and soft when alpha > 0) for B rows,
 * then calls nn_bow_batch_grad. */
typedef struct {
  int Bmax;
  size_t max_ids;
  /* One allocation: the dense gradients in the layout of the parameters after
   * emb, dW1 (H,D) | db1 (H) | dW2 (C,Din) | db2 (C), then rg.g (cap,D). */
  float *grads;
  float *dW1, *db1, *dW2, *db2;
  size_t n_dense;
  nn_row_grads rg;
  /* One allocation of activations: h0 m0 dh0 (B,D); a1 h1 m1 da1 (B,H);
   * z p q dz dz2 soft (B,C); dhin (B,Din); loss loss2 alpha (B). */
  float *acts;
  float *h0, *m0, *dh0, *a1, *h1, *m1, *da1, *z, *p, *q, *dz, *dz2, *soft, *dhin, *loss, *loss2, *alpha;
  /* One allocation of the batch's integer inputs: y (Bmax) | ids (max_ids) |
   * offs (Bmax+1), the last as size_t in its own block. */
  int32_t *y;
  uint32_t *ids;
  size_t *offs;
} nn_bow_work;

finch_status nn_bow_work_init(nn_bow_work *w, const nn_bow *m, int Bmax, size_t max_ids,
                              finch_err *err);
void nn_bow_work_free(nn_bow_work *w);

/* Forward and backward of B rows held in w. Returns the mean loss over the
 * rows and leaves its gradient in w->grads (dense) and w->rg (embedding
 * rows). Draws dropout masks from rng when lc->dropout > 0. */
float nn_bow_batch_grad(nn_bow_work *w, const nn_bow *m, nn_backend *be, int B,
                        const nn_bow_loss_config *lc, nn_rng *rng);

/* ---- the file sections (nn/bow_file.c) --------------------------------- */

/* Writes CONFIG, ARCH, VOCAB, LABELS, META and the TENSOR sections of m,
 * whose state is b (format in nn/modelfile.h). */
finch_status nn__bow_write(const nn_model *m, const nn_bow *b, nn_dtype dtype, nn_file_writer *w, finch_err *err);
/* Builds a bow model from a verified file's sections. */
finch_status nn__bow_load(nn_model **out, const nn_blob *secs, size_t n, const char *path, finch_err *err);

#endif
