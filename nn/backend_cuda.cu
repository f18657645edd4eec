/* The CUDA backend: device 0 and its cuBLAS handle; the host-pointer GEMM
 * (nn_ops.gemm_host) stages the host operands
 * through device buffers that grow on demand and are reused across calls.
 *
 * Row-major through column-major cuBLAS: a row-major (r,c) matrix is the
 * column-major (c,r) matrix of its transpose, so C = op(A) op(B) is computed
 * as C^T = op(B)^T op(A)^T with the operands swapped. */
#include <cublas_v2.h>
#include <cuda_runtime.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "nn/backend_cuda.h"
#include "nn/backend_cuda_impl.h"
#include "nn/ops.h"

/* Makes *buf hold at least n floats. */
static cudaError_t ensure(float **buf, size_t *cap, size_t n) {
  if (*cap >= n) return cudaSuccess;
  if (*buf) cudaFree(*buf);
  *buf = NULL;
  *cap = 0;
  cudaError_t e = cudaMalloc((void **)buf, n * sizeof(float));
  if (e == cudaSuccess) *cap = n;
  return e;
}

extern "C" void nn__cuda_gemm_host(nn_backend *be, int trans_a, int trans_b, int M, int N, int K, float alpha,
                                   const float *A, const float *B, float beta, float *C) {
  cuda_impl *impl = (cuda_impl *)be->impl;
  if (impl->st != FINCH_OK || M <= 0 || N <= 0) return;
  size_t na = (size_t)M * (size_t)K, nb = (size_t)K * (size_t)N, nc = (size_t)M * (size_t)N;
  if (K <= 0) {
    for (size_t i = 0; i < nc; i++) C[i] = beta == 0.0f ? 0.0f : beta * C[i];
    return;
  }
  CUDA_CHECK(impl, ensure(&impl->dA, &impl->capA, na));
  CUDA_CHECK(impl, ensure(&impl->dB, &impl->capB, nb));
  CUDA_CHECK(impl, ensure(&impl->dC, &impl->capC, nc));
  CUDA_CHECK(impl, cudaMemcpy(impl->dA, A, na * sizeof(float), cudaMemcpyHostToDevice));
  CUDA_CHECK(impl, cudaMemcpy(impl->dB, B, nb * sizeof(float), cudaMemcpyHostToDevice));
  if (beta != 0.0f) CUDA_CHECK(impl, cudaMemcpy(impl->dC, C, nc * sizeof(float), cudaMemcpyHostToDevice));
  CUBLAS_CHECK(impl, cublasSgemm(impl->handle, trans_b ? CUBLAS_OP_T : CUBLAS_OP_N,
                                 trans_a ? CUBLAS_OP_T : CUBLAS_OP_N, N, M, K, &alpha, impl->dB,
                                 trans_b ? K : N, impl->dA, trans_a ? M : K, &beta, impl->dC, N));
  CUDA_CHECK(impl, cudaMemcpy(C, impl->dC, nc * sizeof(float), cudaMemcpyDeviceToHost));
  return;
fail:
  return;
}

static void cuda_free(nn_backend *be) {
  if (!be) return;
  cuda_impl *impl = (cuda_impl *)be->impl;
  if (impl) {
    cudaFree(impl->dA);
    cudaFree(impl->dB);
    cudaFree(impl->dC);
    cudaFree(impl->dsum);
    if (impl->handle) cublasDestroy(impl->handle);
    free(impl);
  }
  free(be);
}

extern "C" finch_status nn__backend_cuda_open(nn_backend **out, finch_err *err) {
  *out = NULL;
  int count = 0;
  cudaError_t e = cudaGetDeviceCount(&count);
  if (e != cudaSuccess)
    return finch_err_set(err, FINCH_EDEVICE, "cudaGetDeviceCount: %s", cudaGetErrorString(e));
  if (count == 0) return finch_err_set(err, FINCH_EDEVICE, "cudaGetDeviceCount: 0 devices");
  nn_backend *be = (nn_backend *)calloc(1, sizeof *be);
  cuda_impl *impl = (cuda_impl *)calloc(1, sizeof *impl);
  if (!be || !impl) {
    free(be);
    free(impl);
    return finch_err_set(err, FINCH_ENOMEM, "out of memory opening the CUDA backend");
  }
  be->name = "cuda";
  be->ops = &nn__ops_cuda_table;
  be->check = nn__backend_cuda_check;
  be->free = cuda_free;
  be->impl = impl;
  impl->st = FINCH_OK;
  CUDA_CHECK(impl, cudaSetDevice(0));
  CUBLAS_CHECK(impl, cublasCreate(&impl->handle));
  /* Plain FP32: the parity tests compare against the CPU at float precision. */
  CUBLAS_CHECK(impl, cublasSetMathMode(impl->handle, CUBLAS_DEFAULT_MATH));
  impl->compute = CUBLAS_COMPUTE_32F;
  *out = be;
  return FINCH_OK;
fail: {
  finch_status st = finch_err_set(err, impl->st, "%s", impl->msg);
  cuda_free(be);
  return st;
}
}

extern "C" finch_status nn__backend_cuda_check(nn_backend *be, finch_err *err) {
  cuda_impl *impl = (cuda_impl *)be->impl;
  finch_status st = impl->st;
  if (st != FINCH_OK) {
    finch_err_set(err, st, "%s", impl->msg);
    impl->st = FINCH_OK;
    impl->msg[0] = '\0';
  }
  return st;
}
