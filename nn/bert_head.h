/* A linear classification head on fixed sentence vectors (e.g. the pooled
 * vectors of a frozen pretrained encoder, nn/bert.h): softmax regression
 *   logits (n,C) = X (n,D) W^T + b,   W (C,D), b (C)
 * fitted by full-batch Adam on
 *   loss = mean over the n rows of -log softmax(logits)[y]  +  l2/2 |W|^2
 * (plain cross-entropy, every row weight 1, no class balancing; the bias is
 * not decayed). Full batch and a zero start make the fit deterministic: the
 * same inputs give the same W and b on every run and thread count of the
 * same BLAS. This is the recipe of bench_bert --frozen (400 steps, lr 0.01,
 * l2 1e-4: 93.4% on the seed-42 BANKING77 holdout with all-MiniLM-L6-v2).
 *
 * Threading: no shared state; the BLAS calls use the process's BLAS threads. */
#ifndef FINCH_NN_BERT_HEAD_H
#define FINCH_NN_BERT_HEAD_H

#include <stddef.h>
#include <stdint.h>

#include "core/status.h"

typedef struct {
  int steps;  /* full-batch Adam steps, >= 1 */
  float lr;   /* Adam step size (betas 0.9, 0.999, eps 1e-8) */
  float l2;   /* weight decay coefficient on W, >= 0 */
} nn_bert_head_config;

/* steps 400, lr 0.01, l2 1e-4. */
nn_bert_head_config nn_bert_head_defaults(void);

/* The mean loss above of head (W, b) on X (n,D), y (n) in [0,C), and, when
 * gW (C,D) and gb (C) are not NULL, its gradient (overwritten). n >= 1. */
double nn_bert_head_loss(const float *X, const int32_t *y, size_t n, size_t D, size_t C, const float *W,
                         const float *b, float l2, float *gW, float *gb);

/* Fits W (C,D) and b (C), the caller's memory, overwritten, from zero.
 * FINCH_EINVAL naming the row when a label is outside [0,C), or when n, D
 * or C is 0 or the config is out of bounds; FINCH_ENOMEM. X and y are
 * only read. */
finch_status nn_bert_head_fit(const float *X, const int32_t *y, size_t n, size_t D, size_t C,
                              const nn_bert_head_config *cfg, float *W, float *b, finch_err *err);

#endif
