/* A tiny random BERT encoder for the fine-tuning tests (test_bert_grad,
 * test_bert_train): 2 layers, width 8, 2 heads, feed-forward 16, vocabulary
 * 50, 16 positions, built from a seeded parameter block in the layout of
 * nn/bert.h (no files needed). Weights N(0, 0.3), biases N(0, 0.1),
 * layer-norm gains 1 + N(0, 0.1): large enough that every path carries a
 * gradient well above float rounding. */
#ifndef FINCH_TESTS_NN_BERT_TINY_H
#define FINCH_TESTS_NN_BERT_TINY_H

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "nn/bert.h"
#include "nn/rng.h"

enum { TINY_V = 50, TINY_P = 16, TINY_D = 8, TINY_L = 2, TINY_H = 2, TINY_F = 16 };

static nn_bert *tiny_bert(uint64_t seed) {
  const nn_bert_config c = {TINY_V, TINY_P, 2, TINY_D, TINY_L, TINY_H, TINY_F, 1e-12f};
  nn_bert *m = NULL;
  finch_err err = {0};
  /* The block's size from an empty model of the configuration. */
  size_t np = (size_t)TINY_V * TINY_D + (size_t)TINY_P * TINY_D + 2 * TINY_D +
              (size_t)TINY_L * (3 * TINY_D * TINY_D + 3 * TINY_D + TINY_D * TINY_D + TINY_D + 2 * TINY_D +
                                TINY_F * TINY_D + TINY_F + TINY_D * TINY_F + TINY_D + 2 * TINY_D);
  float *p = malloc(np * sizeof *p);
  memset(p, 0, np * sizeof *p);
  if (nn_bert_create_from_params(&m, &c, p, np, &err) != FINCH_OK) {
    fprintf(stderr, "tiny bert: %s\n", err.msg);
    abort();
  }
  free(p);
  nn_rng r;
  nn_rng_seed(&r, seed, 1);
  float *P = nn_bert_params_mut(m);
  for (size_t i = 0; i < nn_bert_n_tensors(m); i++) {
    const nn_bert_tensor *t = nn_bert_tensor_at(m, i);
    const size_t n = (size_t)t->rows * t->cols, len = strlen(t->name);
    const int gain = len > 2 && strcmp(t->name + len - 2, "_g") == 0;
    for (size_t k = 0; k < n; k++)
      P[t->off + k] = gain ? 1.0f + 0.1f * nn_rng_normal(&r) : (t->decay ? 0.3f : 0.1f) * nn_rng_normal(&r);
  }
  return m;
}

#endif
