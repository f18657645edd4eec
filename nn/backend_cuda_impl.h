/* Internal to the CUDA backend (nn/backend_cuda.cu, nn/ops_cuda.cu): its
 * state and the error-recording helpers. C++ only. */
#ifndef FINCH_NN_BACKEND_CUDA_IMPL_H
#define FINCH_NN_BACKEND_CUDA_IMPL_H

#include <cublas_v2.h>
#include <cuda_runtime.h>
#include <stdio.h>

#include "nn/backend.h"
#include "nn/ops.h"

struct cuda_impl {
  cublasHandle_t handle;
  float *dA, *dB, *dC;     /* gemm_host's staging buffers (host-pointer contract) */
  size_t capA, capB, capC; /* floats */
  double *dsum;            /* sum_sq's accumulator */
  cublasComputeType_t compute; /* CUBLAS_COMPUTE_32F or _32F_FAST_16BF (nn_ops.set_precision) */
  finch_status st;         /* first failure since the last check */
  char msg[512];
};

static inline void record(cuda_impl *impl, const char *file, int line, const char *what, const char *text) {
  if (impl->st != FINCH_OK) return;
  impl->st = FINCH_EDEVICE;
  snprintf(impl->msg, sizeof impl->msg, "%s:%d: %s: %s", file, line, what, text);
}

/* Each macro records the failing call with its place and the library's text,
 * then jumps to the caller's fail label. */
#define CUDA_CHECK(impl, call)                                                                     \
  do {                                                                                             \
    cudaError_t e_ = (call);                                                                       \
    if (e_ != cudaSuccess) {                                                                       \
      record((impl), __FILE__, __LINE__, #call, cudaGetErrorString(e_));                           \
      goto fail;                                                                                   \
    }                                                                                              \
  } while (0)

#define CUBLAS_CHECK(impl, call)                                                                   \
  do {                                                                                             \
    cublasStatus_t s_ = (call);                                                                    \
    if (s_ != CUBLAS_STATUS_SUCCESS) {                                                             \
      record((impl), __FILE__, __LINE__, #call, cublasGetStatusString(s_));                        \
      goto fail;                                                                                   \
    }                                                                                              \
  } while (0)

extern "C" const nn_ops nn__ops_cuda_table;
/* The op table's gemm_host (nn/backend_cuda.cu): cuBLAS on staged copies. */
extern "C" void nn__cuda_gemm_host(nn_backend *be, int trans_a, int trans_b, int M, int N, int K, float alpha,
                                   const float *A, const float *B, float beta, float *C);

#endif
