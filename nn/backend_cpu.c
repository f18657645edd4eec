/* The CPU backend (its op table is nn/ops_cpu.c), plus the plain C reference
 * of the GEMM that OpenBLAS and cuBLAS are tested against. */
#include <cblas.h> /* openblas_set_num_threads */
#include <stddef.h>

#include "nn/backend.h"
#include "nn/ops.h"

void nn_sgemm_ref(int trans_a, int trans_b, int M, int N, int K, float alpha, const float *A,
                  const float *B, float beta, float *C) {
  for (int i = 0; i < M; i++) {
    for (int j = 0; j < N; j++) {
      float acc = 0.0f;
      for (int k = 0; k < K; k++) {
        float a = trans_a ? A[(size_t)k * M + i] : A[(size_t)i * K + k];
        float b = trans_b ? B[(size_t)j * K + k] : B[(size_t)k * N + j];
        acc += a * b;
      }
      float *c = &C[(size_t)i * N + j];
      /* beta = 0 overwrites, so C may hold NaN or garbage on entry (BLAS semantics). */
      *c = beta == 0.0f ? alpha * acc : alpha * acc + beta * *c;
    }
  }
}

/* Stateless, so one shared instance serves every caller and thread; its free
 * is a no-op, so nn_backend_free() on it is harmless. */
static void cpu_free(nn_backend *be) { (void)be; }

static nn_backend cpu_backend = {.name = "cpu", .ops = &nn__ops_cpu_table, .check = NULL,
                                  .free = cpu_free, .impl = NULL};

nn_backend *nn_backend_cpu(void) {
  /* The models' GEMMs are small (a batch of 32 rows): OpenBLAS's threads
   * spin more than they compute, so one thread is as fast and leaves the
   * other core to the server or the database. */
  openblas_set_num_threads(1);
  return &cpu_backend;
}
