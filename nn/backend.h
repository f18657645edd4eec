/* The backend seam: every dense op the models use, behind one table of
 * function pointers. The CPU backend (OpenBLAS) is the reference; the CUDA
 * backend (cuBLAS), built only when a CUDA toolkit is found, implements the
 * same table. Model code never contains #ifdef CUDA.
 *
 * The op table (nn/ops.h) is the one seam: its ops work on the backend's own
 * memory, except gemm_host, which takes host pointers (a device backend
 * stages them itself). Matrices are row-major. */
#ifndef FINCH_NN_BACKEND_H
#define FINCH_NN_BACKEND_H

#include <stddef.h>

#include "core/status.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef struct nn_backend nn_backend;
typedef struct nn_ops nn_ops; /* nn/ops.h */

struct nn_backend {
  const char *name; /* "cpu" or "cuda" */
  /* The op table over the backend's own memory (nn/ops.h). */
  const nn_ops *ops;
  /* Returns and clears the first failure the ops recorded (see
   * nn_backend_check); NULL for a backend whose ops cannot fail. */
  finch_status (*check)(nn_backend *be, finch_err *err);
  void (*free)(nn_backend *be);
  void *impl;
};

typedef enum { NN_DEVICE_CPU, NN_DEVICE_CUDA, NN_DEVICE_AUTO } nn_device;

/* Parses "cpu", "cuda" or "auto"; returns -1 for anything else. */
int nn_device_parse(const char *s);

/* Opens a backend. AUTO picks CUDA when a device is present, else the CPU
 * with a one-line notice on stderr; CUDA fails with FINCH_EDEVICE and a
 * reason when no device (or no CUDA build) is available. */
finch_status nn_backend_open(nn_backend **out, nn_device dev, finch_err *err);
void nn_backend_free(nn_backend *be);

/* The CPU reference, always available. */
nn_backend *nn_backend_cpu(void);

/* The plain C reference of the GEMM, the contract of nn_ops.gemm_host: C (M,N)
 * = alpha * op(A) op(B) + beta * C, op = transpose when trans_* != 0, A (M,K)
 * (or (K,M) transposed), B (K,N) (or (N,K) transposed); beta = 0 overwrites
 * C. The truth the BLAS and CUDA versions are tested against. Accumulates in
 * float in k order. */
void nn_sgemm_ref(int trans_a, int trans_b, int M, int N, int K, float alpha, const float *A,
                  const float *B, float beta, float *C);

/* A device backend's ops return void, so one that fails records the first
 * failure and carries on; this returns it (FINCH_OK for the CPU) with its
 * message in err, and clears it. Call after a run of ops, e.g. per step. */
finch_status nn_backend_check(nn_backend *be, finch_err *err);

#ifdef __cplusplus
}
#endif

#endif
