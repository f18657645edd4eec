/* A model's parameter block as a table of named tensors, shared by the
 * encoders (nn/tfm.h, nn/bert.h): each tensor is rows*cols floats at
 * params + off, laid out one after another in the order they are added. */
#ifndef FINCH_NN_PARAMS_H
#define FINCH_NN_PARAMS_H

#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

/* One named tensor of the parameter block; cols = 1 for a vector. decay = 1
 * where AdamW's weight decay applies (weight matrices, embedding tables as
 * each model says), 0 elsewhere. */
typedef struct {
  char name[24];
  size_t off;
  uint32_t rows, cols;
  int decay;
} nn_param_tensor;

/* Appends the tensor `name` (as "l<layer>.name" when layer >= 0) of rows x
 * cols to tab[*n_tensors] at offset *n_params, advances both counts and
 * returns its offset. tab has room for it (the caller sized the table). */
static inline size_t nn_param_add(nn_param_tensor *tab, size_t *n_tensors, size_t *n_params, const char *name,
                                  int layer, uint32_t rows, uint32_t cols, int decay) {
  nn_param_tensor *t = &tab[(*n_tensors)++];
  if (layer >= 0) snprintf(t->name, sizeof t->name, "l%d.%s", layer, name);
  else snprintf(t->name, sizeof t->name, "%s", name);
  t->off = *n_params;
  t->rows = rows;
  t->cols = cols;
  t->decay = decay;
  *n_params += (size_t)rows * cols;
  return t->off;
}

#endif
