/* Internal to nn/: the model interface every architecture behind nn_model
 * implements, and the record they share.
 *
 * An architecture is one file (nn/bow.c, nn/model_tfm.c, nn/model_slr.c,
 * nn/model_ensemble.c) that fills one nn_model_vt and keeps its own state
 * behind nn_model.impl; the front (nn/model.c) lists the tables and
 * dispatches on them, and on a file's ARCH tag when loading. A new
 * architecture is one new file and one entry in the front's table.
 *
 * Every file starts with the container (nn/modelfile.h); what follows the
 * header is the architecture's: write() emits its sections in order and
 * load() reads them back. The architectures other than bow share the head
 * "ARCH" (name and n_labels), "LABELS", "META" (nn__model_write_head,
 * nn__model_read_head). */
#ifndef FINCH_NN_MODEL_IMPL_H
#define FINCH_NN_MODEL_IMPL_H

#include <stddef.h>
#include <stdint.h>

#include "nn/model.h"
#include "nn/modelfile.h"

typedef struct nn_model_vt {
  nn_arch id;
  const char *name; /* the ARCH tag in the file, at most 8 bytes */
  /* nn_model_predict; temperature is > 0 (the front makes it so). */
  int (*predict)(const nn_model *m, const char *text, float *probs, float temperature);
  /* nn_model_predict_many; NULL = one text at a time through predict. */
  finch_status (*predict_many)(const nn_model *m, const char *const *texts, size_t n, float *probs, int32_t *pred,
                               float temperature, finch_err *err);
  size_t (*n_params)(const nn_model *m);
  /* The training configuration; NULL = all zero (not a bow model). */
  const nn_train_config *(*config)(const nn_model *m);
  /* Writes the sections after the file header, in order. */
  finch_status (*write)(const nn_model *m, nn_dtype dtype, nn_file_writer *w, finch_err *err);
  /* Builds a model from the sections of a verified file whose ARCH names
   * this architecture; path names the file in errors. */
  finch_status (*load)(nn_model **out, const nn_blob *secs, size_t n, const char *path, finch_err *err);
  void (*free_impl)(void *impl);
} nn_model_vt;

extern const nn_model_vt nn__bow_vt, nn__tfm_vt, nn__slr_vt, nn__ensemble_vt, nn__bert_vt;

struct nn_model {
  const nn_model_vt *vt;
  void *impl;    /* the architecture's state */
  nn_dtype dtype; /* what it was loaded from; F32 when built in memory */
  size_t n_labels;
  char **labels; /* one allocation: n_labels pointers, then the strings */
  char *meta;    /* JSON text; NULL reads as "{}" */
};

/* A model record for impl (owned by the record on success only), with the
 * labels copied. FINCH_EINVAL without labels. */
finch_status nn__model_new(nn_model **out, const nn_model_vt *vt, void *impl, const char *const *labels,
                           size_t n_labels, finch_err *err);

/* A whole model file of m in a malloc'd buffer. */
finch_status nn__model_bytes(const nn_model *m, nn_dtype dtype, unsigned char **buf, size_t *len, finch_err *err);
/* nn_model_load on a buffer already in memory; path names it in errors. */
finch_status nn__model_from_bytes(nn_model **out, const unsigned char *buf, size_t size, const char *path,
                                  finch_err *err);

/* Predictions one text at a time through nn_model_predict. */
finch_status nn__predict_each(const nn_model *m, const char *const *texts, size_t n, float *probs, int32_t *pred,
                              float temperature, finch_err *err);

/* The "LABELS" and "META" sections of m. */
void nn__model_write_labels_meta(nn_file_writer *w, const nn_model *m);
/* "ARCH" (m's name and label count, the rest 0), "LABELS", "META". */
void nn__model_write_head(nn_file_writer *w, const nn_model *m);

/* What ARCH, LABELS and META of a file say. */
typedef struct {
  nn_file_arch arch;
  char **labels; /* nn__read_strings' layout; the caller frees */
  uint32_t n_labels;
  char *meta;    /* NUL-terminated, or NULL; the caller frees */
} nn_model_head;

/* Reads the head sections: FINCH_EFORMAT naming path and the fault when
 * LABELS is missing or malformed, or ARCH disagrees with it. */
finch_status nn__model_read_head(const nn_blob *secs, size_t n, const char *path, nn_model_head *h, finch_err *err);
void nn__model_head_free(nn_model_head *h);

/* p (n) = 1/n. */
void nn__uniform(float *p, size_t n);
/* The index of the largest of p (n), the first on ties. */
int nn__argmax(const float *p, size_t n);

#endif
