/* The backend seam: every dense op the models use, behind one table of
 * function pointers. The CPU backend (OpenBLAS) is the reference; the CUDA
 * backend (cuBLAS), built only when a CUDA toolkit is found, implements the
 * same table. Model code never contains #ifdef CUDA.
 *
 * sgemm takes host pointers; a device backend stages them itself. The op
 * table (nn/ops.h) works on the backend's own memory instead. Matrices are
 * row-major. */
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
  /* C (M,N) = alpha * op(A) op(B) + beta * C, op = transpose when trans_* != 0.
   * A is (M,K) (or (K,M) transposed), B is (K,N) (or (N,K) transposed). */
  void (*sgemm)(nn_backend *be, int trans_a, int trans_b, int M, int N, int K, float alpha,
                const float *A, const float *B, float beta, float *C);
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

/* The plain C reference of sgemm, same contract as nn_backend.sgemm; the
 * truth the BLAS and CUDA versions are tested against. Accumulates in float
 * in k order. */
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
