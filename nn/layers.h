/* The generic network layers as forward/backward pairs on host memory: the
 * embedding bag, the linear layer, exact GELU and inverted dropout. The bow
 * model (nn/bow.c), the encoder's host code (nn/tfm.c) and the CPU op table
 * (nn/ops_cpu.c) build on them; nn/tfm_ops.h holds the encoder's own layers.
 *
 * Shapes: B rows, R embedding rows, D embedding width, I inputs, O outputs.
 * Matrices are row-major; a weight W (O,I) maps I inputs to O outputs,
 * out = inp W^T + b. The linear layer's GEMMs run on the backend's
 * host-pointer GEMM (nn_ops.gemm_host). */
#ifndef FINCH_NN_LAYERS_H
#define FINCH_NN_LAYERS_H

#include <stddef.h>
#include <stdint.h>

#include "nn/backend.h"
#include "nn/rng.h"

/* Gradients of the embedding rows a batch touched, in order of first touch.
 * slot_of maps a row to its slot (-1 = untouched) so accumulation is O(1). */
typedef struct {
  int D;
  float *g;         /* (cap,D) */
  uint32_t *rows;   /* (cap) */
  int32_t *slot_of; /* (R) */
  size_t n, cap;
} nn_row_grads;

/* Mean of embedding rows per example. emb (R,D); example b's rows are
 * ids[offs[b] .. offs[b+1]); out (B,D). No rows gives zeros. */
void nn_embed_mean_forward(const float *emb, int D, const uint32_t *ids, const size_t *offs, int B,
                           float *out);
/* dout (B,D); accumulates dout[b] / n_b into g's slot for each row of example b. */
void nn_embed_mean_backward(const float *dout, const uint32_t *ids, const size_t *offs, int B,
                            nn_row_grads *g);
/* Forgets the touched rows (O(touched)), ready for the next batch. */
void nn_row_grads_clear(nn_row_grads *g);

/* inp (B,In); W (O,In); b (O); out (B,O) = inp W^T + b. (In, not I: that
 * is a macro of <complex.h>, which <cblas.h> includes.) */
void nn_linear_forward(nn_backend *be, const float *inp, const float *W, const float *b, int B, int In,
                       int O, float *out);
/* dout (B,O); inp (B,In); W (O,In). Overwrites dW (O,In) = dout^T inp and
 * db (O) = column sums of dout; dinp (B,In) = dout W unless dinp is NULL. */
void nn_linear_backward(nn_backend *be, const float *dout, const float *inp, const float *W, int B,
                        int In, int O, float *dinp, float *dW, float *db);

/* Exact GELU, x Phi(x). inp (n); out (n). */
void nn_gelu_forward(const float *inp, float *out, size_t n);
/* inp (n) the forward's input; dout (n); dinp (n) = dout * GELU'(inp). */
void nn_gelu_backward(const float *inp, const float *dout, float *dinp, size_t n);

/* Inverted dropout in place: x (n) *= mask (n), where mask is 0 with
 * probability p and 1/(1-p) otherwise, drawn from rng. */
void nn_dropout_forward(float *x, float *mask, size_t n, float p, nn_rng *rng);
/* dx (n) *= mask (n). */
void nn_dropout_backward(float *dx, const float *mask, size_t n);

#endif
