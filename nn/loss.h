/* Losses on logits: softmax cross-entropy with label smoothing, and the
 * distillation term tau^2 * KL(p_T || softmax(z / tau)).
 *
 * All work row by row on (B,C) logits with log-sum-exp, so large logits do not
 * overflow. Each forward returns per-row losses; each backward ADDS
 * weight * d(loss_row)/d(logits) into dlogits, so the two terms of the
 * distillation loss (and the 1/B of a batch mean) compose by the caller's
 * choice of weights. */
#ifndef FINCH_NN_LOSS_H
#define FINCH_NN_LOSS_H

#include <stdint.h>

/* out (C) = softmax(inp / temperature); inp (C). temperature > 0. */
void nn_softmax(const float *inp, float *out, int C, float temperature);

/* Cross-entropy against the smoothed target y_ls = (1-eps) onehot(y) + eps/C.
 * logits (B,C); y (B) in [0,C); probs (B,C) receives softmax(logits);
 * loss (B) receives -sum_c y_ls[c] log probs[c]. */
void nn_xent_ls_forward(const float *logits, const int32_t *y, int B, int C, float eps, float *probs,
                        float *loss);
/* probs (B,C) from the forward; dlogits (B,C) += weight * (probs - y_ls). */
void nn_xent_ls_backward(const float *probs, const int32_t *y, int B, int C, float eps, float weight,
                         float *dlogits);

/* Distillation term tau^2 * KL(pt || softmax(logits / tau)).
 * logits (B,C); pt (B,C) teacher probabilities (rows sum to 1, already at tau);
 * q (B,C) receives softmax(logits / tau); loss (B) receives the term.
 * Terms with pt = 0 contribute 0 (the limit of p log p). */
void nn_kl_tau_forward(const float *logits, const float *pt, int B, int C, float tau, float *q,
                       float *loss);
/* q (B,C) from the forward; dlogits (B,C) += weight * tau * (q - pt), the
 * derivative of tau^2 KL with respect to the unscaled logits. */
void nn_kl_tau_backward(const float *q, const float *pt, int B, int C, float tau, float weight,
                        float *dlogits);

#endif
