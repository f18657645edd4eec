/* The "bow" model's internals: the nn_model record, its layers as
 * forward/backward pairs, and the training workspace. Shared by nn/bow.c
 * (training, prediction), nn/modelfile.c (save, load) and the tests; the
 * stages use nn/model.h only.
 *
 * Shapes: B batch rows, R embedding rows (vocabulary + buckets), D embedding
 * width, H hidden width (0 = none), C labels, Din = H ? H : D the output
 * layer's input width. Matrices are row-major; a weight W (O,I) maps I inputs
 * to O outputs, out = inp W^T + b. */
#ifndef FINCH_NN_BOW_H
#define FINCH_NN_BOW_H

#include <stddef.h>
#include <stdint.h>

#include "nn/backend.h"
#include "nn/features.h"
#include "nn/layers.h"
#include "nn/model.h"
#include "nn/rng.h"

struct nn_model {
  nn_train_config cfg;
  nn_dtype dtype; /* what it was loaded from; F32 when trained */
  nn_featurizer *feat;
  size_t n_labels;
  char **labels; /* one allocation: n_labels pointers, then the strings */
  char *meta;    /* JSON text; NULL reads as "{}" */
  uint32_t R, D, H, C, Din;
  size_t n_params;
  float *params; /* one allocation: emb (R,D) | W1 (H,D) | b1 (H) | W2 (C,Din) | b2 (C) */
  float *emb, *W1, *b1, *W2, *b2;
  /* Another architecture (nn/model_arch.h) when arch != 0: then feat and
   * params are NULL and impl holds that architecture's state. */
  int arch;
  void *impl;
};

/* ---- other architectures (nn/model_arch.c) ------------------------------ */

void nn__arch_free(nn_model *m);
size_t nn__arch_n_params(const nn_model *m);
int nn__arch_predict(const nn_model *m, const char *text, float *probs, float temperature);
/* A whole model file of m in a malloc'd buffer. */
finch_status nn__arch_bytes(const nn_model *m, nn_dtype dtype, unsigned char **buf, size_t *len, finch_err *err);
/* Builds a model from a verified file buffer whose ARCH is not "bow". */
finch_status nn__arch_load(nn_model **out, const unsigned char *buf, size_t size, const char *path,
                           finch_err *err);

/* ---- the file container (nn/modelfile.c) -------------------------------- */

typedef struct {
  char tag[8];
  const void *data;
  size_t size;
} nn_blob;

/* A whole bow model file in a malloc'd buffer. */
finch_status nn__bow_bytes(const nn_model *m, nn_dtype dtype, unsigned char **buf, size_t *len, finch_err *err);
/* Header, the sections in order and the SHA-256 trailer, in a malloc'd buffer. */
finch_status nn__file_bytes(const nn_blob *secs, size_t n, unsigned char **buf, size_t *len, finch_err *err);
/* Checks magic, version, sizes and the checksum of a whole file in buf. */
finch_status nn__file_verify(const unsigned char *buf, size_t size, const char *path, finch_err *err);
/* Lists the sections of a verified buffer (pointers into buf); *secs is malloc'd. */
finch_status nn__file_sections(const unsigned char *buf, size_t size, const char *path, nn_blob **secs,
                               size_t *n, finch_err *err);
/* A string list section (u32 count, then u32 length + bytes each) as one
 * allocation: count pointers then the NUL-terminated strings. NULL with *why
 * on a malformed list. */
char **nn__read_strings(const void *data, size_t size, uint32_t *count, const char **why);
/* nn_model_load on a buffer already in memory; path names it in errors. */
finch_status nn__model_from_bytes(nn_model **out, const unsigned char *buf, size_t size, const char *path,
                                  finch_err *err);

/* The featurizer settings carried by a training configuration. */
nn_feat_config nn__feat_config(const nn_train_config *cfg);

/* Checks a configuration's ranges; FINCH_EINVAL naming the field. */
finch_status nn__config_check(const nn_train_config *cfg, finch_err *err);

/* A copy of n label names in one allocation (n pointers, then the strings),
 * released with free(); NULL when out of memory. The layout nn_model.labels
 * has for every architecture. */
char **nn__labels_copy(const char *const *labels, size_t n);

/* Allocates a model with zeroed parameters sized by cfg, feat and n_labels.
 * Takes ownership of feat, also on failure. Labels are copied. */
finch_status nn__model_create(nn_model **out, const nn_train_config *cfg, nn_featurizer *feat,
                              const char *const *labels, size_t n_labels, finch_err *err);

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

finch_status nn_bow_work_init(nn_bow_work *w, const nn_model *m, int Bmax, size_t max_ids,
                              finch_err *err);
void nn_bow_work_free(nn_bow_work *w);

/* Forward and backward of B rows held in w. Returns the mean loss over the
 * rows and leaves its gradient in w->grads (dense) and w->rg (embedding
 * rows). Draws dropout masks from rng when lc->dropout > 0. */
float nn_bow_batch_grad(nn_bow_work *w, const nn_model *m, nn_backend *be, int B,
                        const nn_bow_loss_config *lc, nn_rng *rng);

#endif
