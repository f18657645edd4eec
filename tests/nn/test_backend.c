/* The backend seam: the CPU sgemm against the plain C reference for all four
 * transpose combinations, and CUDA against the CPU by normalised mean squared
 * error when a device exists. */
#include "nn/backend.h"
#include "nn/ops.h"
#include "nn/rng.h"
#include "tests/test.h"

static void fill(float *x, size_t n, nn_rng *r) {
  for (size_t i = 0; i < n; i++) x[i] = nn_rng_normal(r);
}

/* Runs be against the reference on shape (M,N,K) for all transposes; returns
 * the worst NMSE. */
static double compare(nn_backend *be, int M, int N, int K, float alpha, float beta) {
  nn_rng r;
  nn_rng_seed(&r, (uint64_t)(M * 1000003 + N * 1009 + K), 0);
  float *A = malloc((size_t)M * K * sizeof(float)), *B = malloc((size_t)K * N * sizeof(float));
  float *C0 = malloc((size_t)M * N * sizeof(float)), *C1 = malloc((size_t)M * N * sizeof(float));
  float *C2 = malloc((size_t)M * N * sizeof(float));
  fill(A, (size_t)M * K, &r);
  fill(B, (size_t)K * N, &r);
  fill(C0, (size_t)M * N, &r);
  double worst = 0;
  for (int ta = 0; ta < 2; ta++) {
    for (int tb = 0; tb < 2; tb++) {
      memcpy(C1, C0, (size_t)M * N * sizeof(float));
      memcpy(C2, C0, (size_t)M * N * sizeof(float));
      nn_sgemm_ref(ta, tb, M, N, K, alpha, A, B, beta, C1);
      be->ops->gemm_host(be, ta, tb, M, N, K, alpha, A, B, beta, C2);
      double e = test_nmse(C2, C1, (size_t)M * N);
      if (e > worst) worst = e;
    }
  }
  free(A), free(B), free(C0), free(C1), free(C2);
  return worst;
}

static const int shapes[][3] = {{1, 1, 1}, {7, 5, 3}, {32, 77, 48}, {33, 17, 129}, {256, 128, 64}};

int main(void) {
  /* A hand-computed case: A (2,3) B (3,2). */
  const float A[6] = {1, 2, 3, 4, 5, 6}, B[6] = {7, 8, 9, 10, 11, 12};
  float C[4] = {1, 1, 1, 1};
  nn_sgemm_ref(0, 0, 2, 2, 3, 1.0f, A, B, 0.5f, C);
  CHECK_NEAR(C[0], 58.5, 1e-5);
  CHECK_NEAR(C[3], 154.5, 1e-5);
  nn_backend *cpu = nn_backend_cpu();
  CHECK_STR_EQ(cpu->name, "cpu");
  float D[4] = {1, 1, 1, 1};
  cpu->ops->gemm_host(cpu, 0, 0, 2, 2, 3, 1.0f, A, B, 0.5f, D);
  CHECK(memcmp(C, D, sizeof C) == 0);

  /* CPU (OpenBLAS) vs reference: NMSE <= 1e-10 (float rounding, K <= 129). */
  for (size_t s = 0; s < sizeof shapes / sizeof *shapes; s++) {
    double e = compare(cpu, shapes[s][0], shapes[s][1], shapes[s][2], 0.7f, s % 2 ? 0.0f : 0.3f);
    if (!(e <= 1e-10)) TEST_FAIL_("cpu shape %d,%d,%d: NMSE %.3g", shapes[s][0], shapes[s][1], shapes[s][2], e);
  }

  /* Device selection. */
  CHECK_INT_EQ(nn_device_parse("cpu"), NN_DEVICE_CPU);
  CHECK_INT_EQ(nn_device_parse("cuda"), NN_DEVICE_CUDA);
  CHECK_INT_EQ(nn_device_parse("auto"), NN_DEVICE_AUTO);
  CHECK_INT_EQ(nn_device_parse("gpu"), -1);
  finch_err err = {0};
  nn_backend *be = NULL;
  CHECK_INT_EQ(nn_backend_open(&be, NN_DEVICE_CPU, &err), FINCH_OK);
  CHECK(be == cpu);
  nn_backend_free(be);
  CHECK_INT_EQ(nn_backend_open(&be, NN_DEVICE_AUTO, &err), FINCH_OK); /* always succeeds */
  CHECK(be != NULL);
  CHECK_INT_EQ(nn_backend_check(be, &err), FINCH_OK);
  nn_backend_free(be);

  finch_status st = nn_backend_open(&be, NN_DEVICE_CUDA, &err);
  if (st != FINCH_OK) {
    CHECK_INT_EQ(st, FINCH_EDEVICE);
    CHECK(be == NULL);
    if (test_failures_) TEST_DONE();
    TEST_SKIP("no CUDA device: %s", err.msg);
  }
  CHECK_STR_EQ(be->name, "cuda");
  /* CUDA vs reference: NMSE <= 1e-8 (cuBLAS may sum in another order). */
  for (size_t s = 0; s < sizeof shapes / sizeof *shapes; s++) {
    double e = compare(be, shapes[s][0], shapes[s][1], shapes[s][2], 0.7f, s % 2 ? 0.0f : 0.3f);
    if (!(e <= 1e-8)) TEST_FAIL_("cuda shape %d,%d,%d: NMSE %.3g", shapes[s][0], shapes[s][1], shapes[s][2], e);
  }
  CHECK_INT_EQ(nn_backend_check(be, &err), FINCH_OK);
  nn_backend_free(be);
  TEST_DONE();
}
