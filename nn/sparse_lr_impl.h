/* Internal to the sparse model (nn/sparse_lr.c: features, prediction, the
 * blob; nn/sparse_lr_train.c: the L-BFGS fit): the record, the featuriser's
 * scratch and the functions the fit shares with prediction. */
#ifndef FINCH_NN_SPARSE_LR_IMPL_H
#define FINCH_NN_SPARSE_LR_IMPL_H

#include <stddef.h>
#include <stdint.h>

#include "nn/features.h"
#include "nn/sparse_lr.h"
#include "nn/strtab.h"

struct nn_sparse_lr {
  nn_sparse_lr_config cfg;
  size_t C, F;
  nn_strtab vocab; /* feature j = key j */
  float *idf;    /* (F) */
  float *params; /* one allocation: W (F,C) | b (C) */
  float *W, *b;
};

/* Scratch for building keys; reused across calls. */
typedef struct {
  char *key;
  size_t cap;
  size_t *cp; /* byte offsets of code points of the padded token */
  size_t cpcap;
} keybuf;

/* Scratch for one text's row; zero before first use, reused across texts. */
typedef struct {
  nn_tokens tok;
  keybuf kb;
  uint32_t *hits; /* feature ids of the term occurrences found in the vocabulary */
  size_t nhits, hcap;
  uint32_t *ids; /* the row: distinct feature ids, ascending */
  float *vals;
  size_t n, cap;
} row_work;

/* Checks a configuration; code is the status a bad field gets. */
finch_status nn__slr_check_config(const nn_sparse_lr_config *c, finch_status code, finch_err *err);
void nn__slr_row_work_free(row_work *w);
/* The TF-IDF row of text into w->ids / w->vals (w->n entries). */
finch_status nn__slr_featurize(const nn_sparse_lr *m, const char *text, row_work *w, finch_err *err);
/* z (C) = b + sum_k vals[k] W[ids[k]]. */
void nn__slr_logits_forward(const float *W, const float *b, size_t C, const uint32_t *ids, const float *vals,
                            size_t nnz, float *z);
/* Counts the terms of texts and builds m->vocab and m->idf. */
finch_status nn__slr_build_vocab(nn_sparse_lr *m, const char *const *texts, size_t n, finch_err *err);

#endif
