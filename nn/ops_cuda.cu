/* The CUDA op table (nn/ops.h): the contracts of the CPU reference as
 * kernels and cuBLAS calls on device memory. Everything runs on the legacy
 * default stream, in issue order; download and sum_sq wait for it.
 *
 * GEMMs go through cublasGemmEx / cublasGemmStridedBatchedEx on fp32
 * operands, computing in fp32 or, after set_precision(NN_GEMM_BF16), on bf16
 * tensor cores with fp32 accumulation (CUBLAS_COMPUTE_32F_FAST_16BF).
 * Row-major through column-major cuBLAS as in nn/backend_cuda.cu: C = op(A)
 * op(B) is computed as C^T = op(B)^T op(A)^T.
 *
 * Reductions that the CPU does in a fixed order (layer-norm and bias column
 * sums, embedding scatter) use atomics here, so results agree with the CPU to
 * rounding, not bit for bit; tests/nn/test_ops.c states each tolerance. */
#include <math.h>
#include <stdint.h>

#include "nn/backend_cuda_impl.h"
#include "nn/ops.h"
#include "nn/tfm_ops.h"

#define IMPL(be) ((cuda_impl *)(be)->impl)

static inline unsigned blocks_for(size_t n, unsigned threads) {
  size_t b = (n + threads - 1) / threads;
  return (unsigned)(b > 65535u * 8u ? 65535u * 8u : (b ? b : 1));
}

/* Records a failed launch (bad configuration, or an earlier kernel's fault). */
static void launched(nn_backend *be, const char *what) {
  cudaError_t e = cudaGetLastError();
  if (e != cudaSuccess) record(IMPL(be), __FILE__, __LINE__, what, cudaGetErrorString(e));
}

/* ---- memory -------------------------------------------------------------- */

static void *cu_alloc(nn_backend *be, size_t bytes) {
  cuda_impl *impl = IMPL(be);
  void *p = NULL;
  CUDA_CHECK(impl, cudaMalloc(&p, bytes ? bytes : 1));
  CUDA_CHECK(impl, cudaMemset(p, 0, bytes ? bytes : 1));
  return p;
fail:
  if (p) cudaFree(p);
  return NULL;
}

static void cu_release(nn_backend *be, void *p) {
  (void)be;
  if (p) cudaFree(p);
}

static void cu_upload(nn_backend *be, void *dst, const void *src, size_t bytes) {
  cuda_impl *impl = IMPL(be);
  if (!bytes || impl->st) return;
  CUDA_CHECK(impl, cudaMemcpy(dst, src, bytes, cudaMemcpyHostToDevice));
fail:
  return;
}

static void cu_download(nn_backend *be, void *dst, const void *src, size_t bytes) {
  cuda_impl *impl = IMPL(be);
  if (!bytes || impl->st) return;
  CUDA_CHECK(impl, cudaMemcpy(dst, src, bytes, cudaMemcpyDeviceToHost));
fail:
  return;
}

static void cu_zero(nn_backend *be, void *p, size_t bytes) {
  cuda_impl *impl = IMPL(be);
  if (!bytes || impl->st) return;
  CUDA_CHECK(impl, cudaMemset(p, 0, bytes));
fail:
  return;
}

static void cu_copy(nn_backend *be, void *dst, const void *src, size_t bytes) {
  cuda_impl *impl = IMPL(be);
  if (!bytes || impl->st || dst == src) return;
  CUDA_CHECK(impl, cudaMemcpy(dst, src, bytes, cudaMemcpyDeviceToDevice));
fail:
  return;
}

static void cu_set_precision(nn_backend *be, nn_gemm_precision p) {
  IMPL(be)->compute = p == NN_GEMM_BF16 ? CUBLAS_COMPUTE_32F_FAST_16BF : CUBLAS_COMPUTE_32F;
}

/* ---- dense --------------------------------------------------------------- */

__global__ void k_scale(float *x, size_t n, float beta) {
  for (size_t i = blockIdx.x * (size_t)blockDim.x + threadIdx.x; i < n; i += (size_t)gridDim.x * blockDim.x)
    x[i] = beta == 0.0f ? 0.0f : beta * x[i];
}

static void cu_gemm_strided(nn_backend *be, int ta, int tb, int M, int N, int K, float alpha, const float *A,
                            size_t sA, const float *B, size_t sB, float beta, float *C, size_t sC, int count) {
  cuda_impl *impl = IMPL(be);
  if (impl->st || M <= 0 || N <= 0 || count <= 0) return;
  if (K <= 0) {
    for (int i = 0; i < count; i++) {
      size_t n = (size_t)M * N;
      k_scale<<<blocks_for(n, 256), 256>>>(C + (size_t)i * sC, n, beta);
    }
    launched(be, "k_scale");
    return;
  }
  CUBLAS_CHECK(impl, cublasGemmStridedBatchedEx(impl->handle, tb ? CUBLAS_OP_T : CUBLAS_OP_N, ta ? CUBLAS_OP_T : CUBLAS_OP_N,
                                                N, M, K, &alpha, B, CUDA_R_32F, tb ? K : N, (long long)sB, A, CUDA_R_32F,
                                                ta ? M : K, (long long)sA, &beta, C, CUDA_R_32F, N, (long long)sC, count,
                                                impl->compute, CUBLAS_GEMM_DEFAULT));
fail:
  return;
}

static void cu_gemm(nn_backend *be, int ta, int tb, int M, int N, int K, float alpha, const float *A, const float *B,
                    float beta, float *C) {
  cuda_impl *impl = IMPL(be);
  if (impl->st || M <= 0 || N <= 0) return;
  if (K <= 0) {
    cu_gemm_strided(be, ta, tb, M, N, K, alpha, A, 0, B, 0, beta, C, 0, 1);
    return;
  }
  CUBLAS_CHECK(impl, cublasGemmEx(impl->handle, tb ? CUBLAS_OP_T : CUBLAS_OP_N, ta ? CUBLAS_OP_T : CUBLAS_OP_N, N, M, K,
                                  &alpha, B, CUDA_R_32F, tb ? K : N, A, CUDA_R_32F, ta ? M : K, &beta, C, CUDA_R_32F, N,
                                  impl->compute, CUBLAS_GEMM_DEFAULT));
fail:
  return;
}

/* out (B,O) rows = b */
__global__ void k_rows_bias(float *out, const float *b, int B, int O) {
  size_t n = (size_t)B * O;
  for (size_t i = blockIdx.x * (size_t)blockDim.x + threadIdx.x; i < n; i += (size_t)gridDim.x * blockDim.x)
    out[i] = b[i % (size_t)O];
}

/* db (O) += column sums of dout (B,O), rows in order (as the CPU). */
__global__ void k_col_sums(const float *dout, int B, int O, float *db) {
  int o = blockIdx.x * blockDim.x + threadIdx.x;
  if (o >= O) return;
  float s = db[o];
  for (int r = 0; r < B; r++) s += dout[(size_t)r * O + o];
  db[o] = s;
}

static void cu_linear_forward(nn_backend *be, const float *inp, const float *W, const float *b, int B, int In, int O,
                              float *out) {
  if (IMPL(be)->st) return;
  if (b) {
    k_rows_bias<<<blocks_for((size_t)B * O, 256), 256>>>(out, b, B, O);
    launched(be, "k_rows_bias");
  }
  cu_gemm(be, 0, 1, B, O, In, 1.0f, inp, W, b ? 1.0f : 0.0f, out);
}

static void cu_linear_backward(nn_backend *be, const float *dout, const float *inp, const float *W, int B, int In,
                               int O, float *dinp, float *dW, float *db) {
  if (IMPL(be)->st) return;
  if (dW) cu_gemm(be, 1, 0, O, In, B, 1.0f, dout, inp, 1.0f, dW);
  if (db) {
    k_col_sums<<<(O + 127) / 128, 128>>>(dout, B, O, db);
    launched(be, "k_col_sums");
  }
  if (dinp) cu_gemm(be, 0, 0, B, In, O, 1.0f, dout, W, 0.0f, dinp);
}

/* ---- block reductions ------------------------------------------------------ */

/* Sum over the block (blockDim.x a multiple of 32, at most 1024); every
 * thread gets the total. sh holds 32 floats. */
__device__ float block_sum(float v, float *sh) {
  for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(0xffffffffu, v, o);
  int lane = threadIdx.x & 31, warp = threadIdx.x >> 5, nw = blockDim.x >> 5;
  __syncthreads();
  if (lane == 0) sh[warp] = v;
  __syncthreads();
  v = lane < nw ? sh[lane] : 0.0f;
  for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(0xffffffffu, v, o);
  return v;
}

__device__ float block_max(float v, float *sh) {
  for (int o = 16; o > 0; o >>= 1) v = fmaxf(v, __shfl_xor_sync(0xffffffffu, v, o));
  int lane = threadIdx.x & 31, warp = threadIdx.x >> 5, nw = blockDim.x >> 5;
  __syncthreads();
  if (lane == 0) sh[warp] = v;
  __syncthreads();
  v = lane < nw ? sh[lane] : -INFINITY;
  for (int o = 16; o > 0; o >>= 1) v = fmaxf(v, __shfl_xor_sync(0xffffffffu, v, o));
  return v;
}

/* Threads per row for row-wise kernels over rows of width n. */
static inline unsigned row_threads(int n) {
  unsigned t = 32;
  while (t < 256 && (int)t < n) t <<= 1;
  return t;
}

/* ---- layer norm ---------------------------------------------------------------- */

/* One block per row: two passes, as the CPU (mean, then centred variance). */
__global__ void k_ln_fwd(const float *inp, const float *g, const float *b, int D, float eps, float *out,
                         float *mean, float *rstd) {
  __shared__ float sh[32];
  const size_t r = blockIdx.x;
  const float *x = inp + r * D;
  float s = 0.0f;
  for (int d = threadIdx.x; d < D; d += blockDim.x) s += x[d];
  const float mu = block_sum(s, sh) / (float)D;
  float v = 0.0f;
  for (int d = threadIdx.x; d < D; d += blockDim.x) v += (x[d] - mu) * (x[d] - mu);
  const float rs = rsqrtf(block_sum(v, sh) / (float)D + eps);
  float *o = out + r * D;
  for (int d = threadIdx.x; d < D; d += blockDim.x) o[d] = (x[d] - mu) * rs * g[d] + b[d];
  if (threadIdx.x == 0) {
    mean[r] = mu;
    rstd[r] = rs;
  }
}

/* dinp, one block per row. */
__global__ void k_ln_bwd_x(const float *dout, const float *inp, const float *g, const float *mean, const float *rstd,
                           int D, float *dinp) {
  __shared__ float sh[32];
  const size_t r = blockIdx.x;
  const float *x = inp + r * D, *dy = dout + r * D;
  const float mu = mean[r], rs = rstd[r];
  float s1 = 0.0f, s2 = 0.0f;
  for (int d = threadIdx.x; d < D; d += blockDim.x) {
    float xh = (x[d] - mu) * rs, dxh = dy[d] * g[d];
    s1 += dxh;
    s2 += dxh * xh;
  }
  s1 = block_sum(s1, sh) / (float)D;
  s2 = block_sum(s2, sh) / (float)D;
  float *dx = dinp + r * D;
  for (int d = threadIdx.x; d < D; d += blockDim.x) {
    float xh = (x[d] - mu) * rs;
    dx[d] += rs * (dy[d] * g[d] - s1 - xh * s2);
  }
}

/* dg, db: column d over a chunk of rows, added atomically. */
#define LN_ROWS 64
__global__ void k_ln_bwd_gb(const float *dout, const float *inp, const float *mean, const float *rstd, int N, int D,
                            float *dg, float *db) {
  int d = blockIdx.x * blockDim.x + threadIdx.x;
  if (d >= D) return;
  int r0 = blockIdx.y * LN_ROWS, r1 = min(N, r0 + LN_ROWS);
  float sg = 0.0f, sb = 0.0f;
  for (int r = r0; r < r1; r++) {
    float dy = dout[(size_t)r * D + d];
    sg += dy * (inp[(size_t)r * D + d] - mean[r]) * rstd[r];
    sb += dy;
  }
  atomicAdd(dg + d, sg);
  atomicAdd(db + d, sb);
}

static void cu_ln_fwd(nn_backend *be, const float *inp, const float *g, const float *b, int N, int D, float *out,
                      float *mean, float *rstd) {
  if (IMPL(be)->st || N <= 0) return;
  k_ln_fwd<<<N, row_threads(D)>>>(inp, g, b, D, NN_LN_EPS, out, mean, rstd);
  launched(be, "k_ln_fwd");
}

static void cu_ln_eps_fwd(nn_backend *be, const float *inp, const float *g, const float *b, int N, int D, float eps,
                          float *out, float *mean, float *rstd) {
  if (IMPL(be)->st || N <= 0) return;
  k_ln_fwd<<<N, row_threads(D)>>>(inp, g, b, D, eps, out, mean, rstd);
  launched(be, "k_ln_fwd");
}

static void cu_ln_bwd(nn_backend *be, const float *dout, const float *inp, const float *g, const float *mean,
                      const float *rstd, int N, int D, float *dinp, float *dg, float *db) {
  if (IMPL(be)->st || N <= 0) return;
  k_ln_bwd_x<<<N, row_threads(D)>>>(dout, inp, g, mean, rstd, D, dinp);
  dim3 grid((D + 127) / 128, (N + LN_ROWS - 1) / LN_ROWS);
  k_ln_bwd_gb<<<grid, 128>>>(dout, inp, mean, rstd, N, D, dg, db);
  launched(be, "k_ln_bwd");
}

/* ---- element-wise ---------------------------------------------------------------- */

#define GRID_STRIDE(i, n) \
  for (size_t i = blockIdx.x * (size_t)blockDim.x + threadIdx.x; i < (n); i += (size_t)gridDim.x * blockDim.x)

/* The exact erf form; the CPU's approximation is within 1e-6 of it. */
__global__ void k_gelu_fwd(const float *inp, float *out, size_t n) {
  GRID_STRIDE(i, n) {
    float x = inp[i];
    out[i] = 0.5f * x * (1.0f + erff(x * 0.70710678118654752f));
  }
}

__global__ void k_gelu_bwd(const float *inp, const float *dout, float *dinp, size_t n) {
  GRID_STRIDE(i, n) {
    float x = inp[i];
    float cdf = 0.5f * (1.0f + erff(x * 0.70710678118654752f));
    float pdf = 0.3989422804014327f * expf(-0.5f * x * x);
    dinp[i] = dout[i] * (cdf + x * pdf);
  }
}

__global__ void k_mul(float *x, const float *m, size_t n) {
  GRID_STRIDE(i, n) x[i] *= m[i];
}
__global__ void k_add(const float *a, const float *b, float *out, size_t n) {
  GRID_STRIDE(i, n) out[i] = a[i] + b[i];
}
__global__ void k_acc(const float *x, float *y, size_t n) {
  GRID_STRIDE(i, n) y[i] += x[i];
}

static void cu_gelu_fwd(nn_backend *be, const float *inp, float *out, size_t n) {
  if (IMPL(be)->st || !n) return;
  k_gelu_fwd<<<blocks_for(n, 256), 256>>>(inp, out, n);
  launched(be, "k_gelu_fwd");
}
static void cu_gelu_bwd(nn_backend *be, const float *inp, const float *dout, float *dinp, size_t n) {
  if (IMPL(be)->st || !n) return;
  k_gelu_bwd<<<blocks_for(n, 256), 256>>>(inp, dout, dinp, n);
  launched(be, "k_gelu_bwd");
}
static void cu_mul(nn_backend *be, float *x, const float *mask, size_t n) {
  if (IMPL(be)->st || !n) return;
  k_mul<<<blocks_for(n, 256), 256>>>(x, mask, n);
  launched(be, "k_mul");
}
static void cu_add(nn_backend *be, const float *a, const float *b, float *out, size_t n) {
  if (IMPL(be)->st || !n) return;
  k_add<<<blocks_for(n, 256), 256>>>(a, b, out, n);
  launched(be, "k_add");
}
static void cu_acc(nn_backend *be, const float *x, float *y, size_t n) {
  if (IMPL(be)->st || !n) return;
  k_acc<<<blocks_for(n, 256), 256>>>(x, y, n);
  launched(be, "k_acc");
}

/* ---- embeddings, heads, pooling ---------------------------------------------------- */

/* One block per position (b,t), threads over D. */
__global__ void k_embed_fwd(const float *tok, const float *pos, const float *ng, int D, const int32_t *ids,
                            const size_t *ng_offs, const uint32_t *ng_ids, int T, float *out) {
  const size_t i = blockIdx.x;
  const int t = (int)(i % (size_t)T);
  const float *e = tok + (size_t)ids[i] * D, *p = pos + (size_t)t * D;
  size_t k0 = 0, k1 = 0;
  if (ng && ng_offs) k0 = ng_offs[i], k1 = ng_offs[i + 1];
  const float s = k1 > k0 ? 1.0f / (float)(k1 - k0) : 0.0f;
  for (int d = threadIdx.x; d < D; d += blockDim.x) {
    float o = e[d] + p[d];
    for (size_t k = k0; k < k1; k++) o += s * ng[(size_t)ng_ids[k] * D + d];
    out[i * D + d] = o;
  }
}

__global__ void k_embed_bwd(const float *dout, int D, const int32_t *ids, const size_t *ng_offs,
                            const uint32_t *ng_ids, int T, float *dtok, float *dpos, float *dng) {
  const size_t i = blockIdx.x;
  const int t = (int)(i % (size_t)T);
  size_t k0 = 0, k1 = 0;
  if (dng && ng_offs) k0 = ng_offs[i], k1 = ng_offs[i + 1];
  const float s = k1 > k0 ? 1.0f / (float)(k1 - k0) : 0.0f;
  for (int d = threadIdx.x; d < D; d += blockDim.x) {
    float dy = dout[i * D + d];
    atomicAdd(dtok + (size_t)ids[i] * D + d, dy);
    atomicAdd(dpos + (size_t)t * D + d, dy);
    for (size_t k = k0; k < k1; k++) atomicAdd(dng + (size_t)ng_ids[k] * D + d, s * dy);
  }
}

static void cu_embed_fwd(nn_backend *be, const float *tok, const float *pos, const float *ng, int D,
                         const int32_t *ids, const size_t *ng_offs, const uint32_t *ng_ids, int B, int T, float *out) {
  if (IMPL(be)->st || B <= 0 || T <= 0) return;
  k_embed_fwd<<<(unsigned)((size_t)B * T), row_threads(D)>>>(tok, pos, ng, D, ids, ng_offs, ng_ids, T, out);
  launched(be, "k_embed_fwd");
}

static void cu_embed_bwd(nn_backend *be, const float *dout, int D, const int32_t *ids, const size_t *ng_offs,
                         const uint32_t *ng_ids, int B, int T, float *dtok, float *dpos, float *dng) {
  if (IMPL(be)->st || B <= 0 || T <= 0) return;
  k_embed_bwd<<<(unsigned)((size_t)B * T), row_threads(D)>>>(dout, D, ids, ng_offs, ng_ids, T, dtok, dpos, dng);
  launched(be, "k_embed_bwd");
}

/* Element j of the head-major (S,B,Hh,T,Dh) tensor and its place in the
 * (B*T, S*D) one. */
__device__ size_t head_to_row(size_t j, int S, int B, int T, int D, int Hh) {
  const int Dh = D / Hh;
  size_t d = j % Dh, r = j / Dh;
  size_t t = r % T;
  r /= T;
  size_t h = r % Hh;
  r /= Hh;
  size_t b = r % B, s = r / B;
  (void)S;
  return (b * T + t) * (size_t)S * D + s * D + h * Dh + d;
}

__global__ void k_split(const float *inp, int S, int B, int T, int D, int Hh, float *out) {
  size_t n = (size_t)S * B * T * D;
  GRID_STRIDE(j, n) out[j] = inp[head_to_row(j, S, B, T, D, Hh)];
}
__global__ void k_merge(const float *inp, int S, int B, int T, int D, int Hh, float *out) {
  size_t n = (size_t)S * B * T * D;
  GRID_STRIDE(j, n) out[head_to_row(j, S, B, T, D, Hh)] = inp[j];
}

static void cu_split(nn_backend *be, const float *inp, int S, int B, int T, int D, int Hh, float *out) {
  size_t n = (size_t)S * B * T * D;
  if (IMPL(be)->st || !n) return;
  k_split<<<blocks_for(n, 256), 256>>>(inp, S, B, T, D, Hh, out);
  launched(be, "k_split");
}
static void cu_merge(nn_backend *be, const float *inp, int S, int B, int T, int D, int Hh, float *out) {
  size_t n = (size_t)S * B * T * D;
  if (IMPL(be)->st || !n) return;
  k_merge<<<blocks_for(n, 256), 256>>>(inp, S, B, T, D, Hh, out);
  launched(be, "k_merge");
}

/* out (B,D): mean over real positions, t in order (as the CPU). */
__global__ void k_pool_mean_fwd(const float *h, const uint8_t *mask, int B, int T, int D, float *out) {
  size_t n = (size_t)B * D;
  GRID_STRIDE(j, n) {
    size_t b = j / D, d = j % D;
    float s = 0.0f;
    int c = 0;
    for (int t = 0; t < T; t++)
      if (mask[b * T + t]) {
        s += h[(b * T + t) * D + d];
        c++;
      }
    out[j] = s * (c ? 1.0f / (float)c : 0.0f);
  }
}

__global__ void k_pool_mean_bwd(const float *dout, const uint8_t *mask, int B, int T, int D, float *dh) {
  size_t n = (size_t)B * T * D;
  GRID_STRIDE(j, n) {
    size_t d = j % D, bt = j / D, b = bt / T;
    if (!mask[bt]) continue;
    int c = 0;
    for (int t = 0; t < T; t++) c += mask[b * T + t] != 0;
    dh[j] += (1.0f / (float)c) * dout[b * D + d];
  }
}

__global__ void k_pool_cls(const float *src, int B, int T, int D, float *dst, int backward) {
  size_t n = (size_t)B * D;
  GRID_STRIDE(j, n) {
    size_t b = j / D, d = j % D;
    if (backward) dst[b * T * D + d] += src[j];
    else dst[j] = src[b * T * D + d];
  }
}

static void cu_pool_mean_fwd(nn_backend *be, const float *h, const uint8_t *mask, int B, int T, int D, float *out) {
  if (IMPL(be)->st || B <= 0) return;
  k_pool_mean_fwd<<<blocks_for((size_t)B * D, 128), 128>>>(h, mask, B, T, D, out);
  launched(be, "k_pool_mean_fwd");
}
static void cu_pool_mean_bwd(nn_backend *be, const float *dout, const uint8_t *mask, int B, int T, int D, float *dh) {
  if (IMPL(be)->st || B <= 0) return;
  k_pool_mean_bwd<<<blocks_for((size_t)B * T * D, 256), 256>>>(dout, mask, B, T, D, dh);
  launched(be, "k_pool_mean_bwd");
}
static void cu_pool_cls_fwd(nn_backend *be, const float *h, int B, int T, int D, float *out) {
  if (IMPL(be)->st || B <= 0) return;
  k_pool_cls<<<blocks_for((size_t)B * D, 128), 128>>>(h, B, T, D, out, 0);
  launched(be, "k_pool_cls");
}
static void cu_pool_cls_bwd(nn_backend *be, const float *dout, int B, int T, int D, float *dh) {
  if (IMPL(be)->st || B <= 0) return;
  k_pool_cls<<<blocks_for((size_t)B * D, 128), 128>>>(dout, B, T, D, dh, 1);
  launched(be, "k_pool_cls");
}

/* ---- attention --------------------------------------------------------------------- */

/* Softmax of each score row (B*Hh*T rows of T) over the real keys; padded
 * keys get exactly 0. */
__global__ void k_attn_softmax(float *att, const uint8_t *mask, int Hh, int T) {
  __shared__ float sh[32];
  const size_t row = blockIdx.x;
  const size_t b = row / ((size_t)Hh * T);
  const uint8_t *mk = mask + b * T;
  float *a = att + row * T;
  float mx = -INFINITY;
  for (int j = threadIdx.x; j < T; j += blockDim.x)
    if (mk[j]) mx = fmaxf(mx, a[j]);
  mx = block_max(mx, sh);
  float s = 0.0f;
  for (int j = threadIdx.x; j < T; j += blockDim.x) {
    float e = mk[j] ? expf(a[j] - mx) : 0.0f;
    a[j] = e;
    s += e;
  }
  const float inv = 1.0f / block_sum(s, sh);
  for (int j = threadIdx.x; j < T; j += blockDim.x) a[j] *= inv;
}

/* dp = att * (dp - sum_j att dp), row by row, in place; datt (or NULL) is
 * added to dp first. */
__global__ void k_attn_softmax_bwd(const float *att, const float *datt, float *dp, int T) {
  __shared__ float sh[32];
  const size_t row = blockIdx.x;
  const float *a = att + row * T;
  float *d = dp + row * T;
  float dot = 0.0f;
  for (int j = threadIdx.x; j < T; j += blockDim.x) {
    if (datt) d[j] += datt[row * T + j];
    dot += a[j] * d[j];
  }
  dot = block_sum(dot, sh);
  for (int j = threadIdx.x; j < T; j += blockDim.x) d[j] = a[j] * (d[j] - dot);
}

static void cu_attn_fwd(nn_backend *be, const float *qkv, const uint8_t *mask, int B, int T, int Hh, int Dh,
                        float *att, float *ctx) {
  if (IMPL(be)->st || B <= 0 || T <= 0) return;
  const size_t hs = (size_t)T * Dh, blk = (size_t)B * Hh * hs, tt = (size_t)T * T;
  const int n = B * Hh;
  const float scale = 1.0f / sqrtf((float)Dh);
  const float *q = qkv, *k = qkv + blk, *v = qkv + 2 * blk;
  cu_gemm_strided(be, 0, 1, T, T, Dh, scale, q, hs, k, hs, 0.0f, att, tt, n);
  k_attn_softmax<<<(unsigned)((size_t)n * T), row_threads(T)>>>(att, mask, Hh, T);
  launched(be, "k_attn_softmax");
  cu_gemm_strided(be, 0, 0, T, Dh, T, 1.0f, att, tt, v, hs, 0.0f, ctx, hs, n);
}

static void cu_attn_bwd(nn_backend *be, const float *dctx, const float *datt, const float *qkv, const float *att,
                        int B, int T, int Hh, int Dh, float *dqkv, float *scratch) {
  if (IMPL(be)->st || B <= 0 || T <= 0) return;
  const size_t hs = (size_t)T * Dh, blk = (size_t)B * Hh * hs, tt = (size_t)T * T;
  const int n = B * Hh;
  const float scale = 1.0f / sqrtf((float)Dh);
  const float *q = qkv, *k = qkv + blk, *v = qkv + 2 * blk;
  float *dq = dqkv, *dk = dqkv + blk, *dv = dqkv + 2 * blk;
  cu_gemm_strided(be, 0, 1, T, T, Dh, 1.0f, dctx, hs, v, hs, 0.0f, scratch, tt, n); /* dp = dctx v^T */
  cu_gemm_strided(be, 1, 0, T, Dh, T, 1.0f, att, tt, dctx, hs, 0.0f, dv, hs, n);    /* dv = att^T dctx */
  k_attn_softmax_bwd<<<(unsigned)((size_t)n * T), row_threads(T)>>>(att, datt, scratch, T);
  launched(be, "k_attn_softmax_bwd");
  cu_gemm_strided(be, 0, 0, T, Dh, T, scale, scratch, tt, k, hs, 0.0f, dq, hs, n); /* dq = ds k / sqrt(Dh) */
  cu_gemm_strided(be, 1, 0, T, Dh, T, scale, scratch, tt, q, hs, 0.0f, dk, hs, n); /* dk = ds^T q / sqrt(Dh) */
}

/* ---- losses (one thread per row, in double, as the CPU) ------------------------------ */

__device__ double d_lse(const float *x, int C, float t) {
  double m = -INFINITY;
  for (int c = 0; c < C; c++) m = fmax(m, (double)x[c] / t);
  double s = 0.0;
  for (int c = 0; c < C; c++) s += exp((double)x[c] / t - m);
  return m + log(s);
}

__global__ void k_xent_fwd(const float *logits, const int32_t *y, int B, int C, float eps, float *probs, float *loss) {
  int b = blockIdx.x * blockDim.x + threadIdx.x;
  if (b >= B) return;
  const float *z = logits + (size_t)b * C;
  float *p = probs + (size_t)b * C;
  double lse = d_lse(z, C, 1.0f), zsum = 0.0;
  for (int c = 0; c < C; c++) {
    p[c] = (float)exp((double)z[c] - lse);
    zsum += z[c];
  }
  loss[b] = (float)(lse - (1.0 - eps) * z[y[b]] - (double)eps / C * zsum);
}

__global__ void k_xent_bwd(const float *probs, const int32_t *y, int B, int C, float eps, float weight, float *dl) {
  size_t n = (size_t)B * C;
  const float off = eps / (float)C;
  GRID_STRIDE(j, n) {
    size_t b = j / C;
    int c = (int)(j % C);
    float d = weight * (probs[j] - off);
    if (c == y[b]) d -= weight * (1.0f - eps);
    dl[j] += d;
  }
}

__global__ void k_kl_fwd(const float *logits, const float *pt, int B, int C, float tau, float *q, float *loss) {
  int b = blockIdx.x * blockDim.x + threadIdx.x;
  if (b >= B) return;
  const float *z = logits + (size_t)b * C, *p = pt + (size_t)b * C;
  float *qb = q + (size_t)b * C;
  double lse = d_lse(z, C, tau), kl = 0.0;
  for (int c = 0; c < C; c++) {
    double logq = (double)z[c] / tau - lse;
    qb[c] = (float)exp(logq);
    if (p[c] > 0.0f) kl += (double)p[c] * (log((double)p[c]) - logq);
  }
  loss[b] = (float)((double)tau * tau * kl);
}

__global__ void k_kl_bwd(const float *q, const float *pt, size_t n, float w, float *dl) {
  GRID_STRIDE(j, n) dl[j] += w * (q[j] - pt[j]);
}

static void cu_xent_fwd(nn_backend *be, const float *logits, const int32_t *y, int B, int C, float eps, float *probs,
                        float *loss) {
  if (IMPL(be)->st || B <= 0) return;
  k_xent_fwd<<<(B + 63) / 64, 64>>>(logits, y, B, C, eps, probs, loss);
  launched(be, "k_xent_fwd");
}
static void cu_xent_bwd(nn_backend *be, const float *probs, const int32_t *y, int B, int C, float eps, float weight,
                        float *dlogits) {
  if (IMPL(be)->st || B <= 0) return;
  k_xent_bwd<<<blocks_for((size_t)B * C, 256), 256>>>(probs, y, B, C, eps, weight, dlogits);
  launched(be, "k_xent_bwd");
}
static void cu_kl_fwd(nn_backend *be, const float *logits, const float *pt, int B, int C, float tau, float *q,
                      float *loss) {
  if (IMPL(be)->st || B <= 0) return;
  k_kl_fwd<<<(B + 63) / 64, 64>>>(logits, pt, B, C, tau, q, loss);
  launched(be, "k_kl_fwd");
}
static void cu_kl_bwd(nn_backend *be, const float *q, const float *pt, int B, int C, float tau, float weight,
                      float *dlogits) {
  if (IMPL(be)->st || B <= 0) return;
  k_kl_bwd<<<blocks_for((size_t)B * C, 256), 256>>>(q, pt, (size_t)B * C, weight * tau, dlogits);
  launched(be, "k_kl_bwd");
}

/* ---- optimisation ----------------------------------------------------------------- */

/* The CPU's nn_adamw_update, operation for operation (bias corrections
 * computed on the host, as there). */
__global__ void k_adamw(float *p, const float *g, float *m, float *v, size_t n, float step, float inv_bc2, float decay,
                        float gscale, float b1, float b2, float eps) {
  GRID_STRIDE(i, n) nn_adamw_elem(p + i, m + i, v + i, g[i] * gscale, b1, b2, eps, step, inv_bc2, decay);
}

/* One block per touched row, threads over D; then the row's gradient is zeroed. */
__global__ void k_adamw_rows(float *P, float *G, float *M, float *V, const uint32_t *rows, int D, float step,
                             float inv_bc2, float decay, float gscale, float b1, float b2, float eps) {
  const size_t off = (size_t)rows[blockIdx.x] * D;
  for (int d = threadIdx.x; d < D; d += blockDim.x) {
    const size_t i = off + d;
    nn_adamw_elem(P + i, M + i, V + i, G[i] * gscale, b1, b2, eps, step, inv_bc2, decay);
    G[i] = 0.0f;
  }
}

__global__ void k_sum_sq(const float *g, size_t n, double *out) {
  __shared__ double sh[32];
  double s = 0.0;
  GRID_STRIDE(i, n) s += (double)g[i] * g[i];
  for (int o = 16; o > 0; o >>= 1) s += __shfl_xor_sync(0xffffffffu, s, o);
  int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
  if (lane == 0) sh[warp] = s;
  __syncthreads();
  if (warp == 0) {
    s = lane < (int)(blockDim.x >> 5) ? sh[lane] : 0.0;
    for (int o = 16; o > 0; o >>= 1) s += __shfl_xor_sync(0xffffffffu, s, o);
    if (lane == 0) atomicAdd(out, s);
  }
}

static void cu_adamw(nn_backend *be, float *p, const float *g, float *m, float *v, size_t n, float lr, float wd,
                     float gscale, uint64_t t, const nn_adamw_config *c) {
  if (IMPL(be)->st || !n) return;
  const float bc1 = 1.0f - powf(c->beta1, (float)t), bc2 = 1.0f - powf(c->beta2, (float)t);
  k_adamw<<<blocks_for(n, 256), 256>>>(p, g, m, v, n, lr / bc1, 1.0f / bc2, 1.0f - lr * wd, gscale, c->beta1, c->beta2,
                                       c->eps);
  launched(be, "k_adamw");
}

static void cu_adamw_rows(nn_backend *be, float *P, float *G, float *M, float *V, const uint32_t *rows, size_t S,
                          int D, float lr, float wd, float gscale, uint64_t t, const nn_adamw_config *c) {
  if (IMPL(be)->st || !S) return;
  const float bc1 = 1.0f - powf(c->beta1, (float)t), bc2 = 1.0f - powf(c->beta2, (float)t);
  k_adamw_rows<<<(unsigned)S, row_threads(D)>>>(P, G, M, V, rows, D, lr / bc1, 1.0f / bc2, 1.0f - lr * wd, gscale,
                                               c->beta1, c->beta2, c->eps);
  launched(be, "k_adamw_rows");
}

static double cu_sum_sq(nn_backend *be, const float *g, size_t n) {
  cuda_impl *impl = IMPL(be);
  double s = 0.0;
  if (impl->st || !n) return 0.0;
  if (!impl->dsum) CUDA_CHECK(impl, cudaMalloc((void **)&impl->dsum, sizeof(double)));
  CUDA_CHECK(impl, cudaMemset(impl->dsum, 0, sizeof(double)));
  k_sum_sq<<<blocks_for(n, 256) > 1024 ? 1024 : blocks_for(n, 256), 256>>>(g, n, impl->dsum);
  launched(be, "k_sum_sq");
  CUDA_CHECK(impl, cudaMemcpy(&s, impl->dsum, sizeof s, cudaMemcpyDeviceToHost));
  return s;
fail:
  return 0.0;
}

extern "C" const nn_ops nn__ops_cuda_table = {
    /* .alloc = */ cu_alloc,
    /* .release = */ cu_release,
    /* .upload = */ cu_upload,
    /* .download = */ cu_download,
    /* .zero = */ cu_zero,
    /* .copy = */ cu_copy,
    /* .set_precision = */ cu_set_precision,
    /* .gemm = */ cu_gemm,
    /* .gemm_strided = */ cu_gemm_strided,
    /* .gemm_host = */ nn__cuda_gemm_host,
    /* .linear_forward = */ cu_linear_forward,
    /* .linear_backward = */ cu_linear_backward,
    /* .layernorm_forward = */ cu_ln_fwd,
    /* .layernorm_backward = */ cu_ln_bwd,
    /* .layernorm_eps_forward = */ cu_ln_eps_fwd,
    /* .gelu_forward = */ cu_gelu_fwd,
    /* .gelu_backward = */ cu_gelu_bwd,
    /* .mul = */ cu_mul,
    /* .add = */ cu_add,
    /* .acc = */ cu_acc,
    /* .tok_embed_forward = */ cu_embed_fwd,
    /* .tok_embed_backward = */ cu_embed_bwd,
    /* .heads_split = */ cu_split,
    /* .heads_merge = */ cu_merge,
    /* .attention_forward = */ cu_attn_fwd,
    /* .attention_backward = */ cu_attn_bwd,
    /* .pool_mean_forward = */ cu_pool_mean_fwd,
    /* .pool_mean_backward = */ cu_pool_mean_bwd,
    /* .pool_cls_forward = */ cu_pool_cls_fwd,
    /* .pool_cls_backward = */ cu_pool_cls_bwd,
    /* .xent_ls_forward = */ cu_xent_fwd,
    /* .xent_ls_backward = */ cu_xent_bwd,
    /* .kl_tau_forward = */ cu_kl_fwd,
    /* .kl_tau_backward = */ cu_kl_bwd,
    /* .adamw = */ cu_adamw,
    /* .adamw_rows = */ cu_adamw_rows,
    /* .sum_sq = */ cu_sum_sq,
};
