/* AdamW (Loshchilov & Hutter) with decoupled weight decay, a dense and a
 * row-sparse ("lazy") form, the learning-rate schedule and global-norm
 * clipping.
 *
 * The lazy form updates only the embedding rows a batch touched: their first
 * and second moments decay only on the steps that touch them, as in
 * PyTorch's SparseAdam, with bias correction from the global step. Updating
 * the whole table every step would cost O(rows * D) per step for rows that
 * have zero gradient. */
#ifndef FINCH_NN_OPTIM_H
#define FINCH_NN_OPTIM_H

#include <math.h>
#include <stddef.h>
#include <stdint.h>

typedef struct {
  float beta1, beta2, eps;
} nn_adamw_config;

/* Callable from CUDA kernels too (nn/ops_cuda.cu). */
#ifdef __CUDACC__
#define NN_HOST_DEVICE __host__ __device__
#else
#define NN_HOST_DEVICE
#endif

/* One parameter's AdamW step, the reference every form performs: g the
 * scaled gradient, step = lr / (1 - beta1^t), inv_bc2 = 1 / (1 - beta2^t),
 * decay = 1 - lr * wd. */
static inline NN_HOST_DEVICE void nn_adamw_elem(float *p, float *m, float *v, float g, float b1, float b2, float eps,
                                                float step, float inv_bc2, float decay) {
  float mi = b1 * *m + (1.0f - b1) * g;
  float vi = b2 * *v + (1.0f - b2) * g * g;
  *m = mi;
  *v = vi;
  *p = *p * decay - step * mi / (sqrtf(vi * inv_bc2) + eps);
}

/* beta1 0.9, beta2 0.999, eps 1e-8. */
nn_adamw_config nn_adamw_defaults(void);

/* Learning rate at step t (0-based) of total: linear warm-up from ~0 to peak
 * over the first warmup steps, then linear decay to 0 at step total. */
float nn_lr_schedule(float peak, uint64_t t, uint64_t warmup, uint64_t total);

/* One AdamW step on n parameters: p (n), g (n) gradient, m and v (n) moments.
 * The gradient used is gscale * g (gscale carries clipping). t is the 1-based
 * step for bias correction; wd the decoupled decay (0 for biases). */
void nn_adamw_update(float *p, const float *g, float *m, float *v, size_t n, float lr, float wd,
                     float gscale, uint64_t t, const nn_adamw_config *c);

/* The plain C reference of nn_adamw_update (which may use SIMD); the two
 * agree bit for bit. */
void nn_adamw_update_ref(float *p, const float *g, float *m, float *v, size_t n, float lr, float wd,
                         float gscale, uint64_t t, const nn_adamw_config *c);

/* The lazy form: P (R,D) table; G (S,D) gradients of the S touched rows
 * rows[0..S); M and V (R,D) moments of the whole table, of which only the
 * touched rows are read or written. */
void nn_adamw_update_rows(float *P, const float *G, const uint32_t *rows, size_t S, int D, float *M,
                          float *V, float lr, float wd, float gscale, uint64_t t,
                          const nn_adamw_config *c);

/* Sum of squares of g (n), accumulated in double. */
double nn_sum_sq(const float *g, size_t n);

/* The factor that scales a gradient of norm sqrt(sum_sq) to at most max_norm;
 * 1 when max_norm <= 0 (clipping off) or the norm is already small enough. */
float nn_clip_scale(double sum_sq, float max_norm);

#endif
