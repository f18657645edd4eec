/* Fitting the sparse model (nn_sparse_lr_train, nn/sparse_lr.h).
 *
 * Training. The texts are tokenised twice: once to count document
 * frequencies, once through the same featuriser prediction uses, into one CSR
 * matrix. L-BFGS (Nocedal & Wright, algorithm 7.4/7.5) with NN_SLR_HISTORY
 * pairs and a backtracking Armijo line search is exact enough here: the
 * objective is strictly convex, so every step's curvature s.y is positive.
 * Vectors are float (the history is the large part of the memory:
 * 2 NN_SLR_HISTORY + 4 vectors of F C + C floats), dot products double. */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "nn/sparse_lr_impl.h"

enum {
  NN_SLR_HISTORY = 8,   /* L-BFGS pairs kept */
  NN_SLR_MAX_LS = 40,   /* line-search trials per iteration */
};
/* Stopping. The objective is a mean loss, so these are scale-free: stop when
 * the last NN_SLR_WINDOW iterations together lowered it by less than
 * NN_SLR_FTOL relatively (on BANKING77 that is within 0.1% of the converged
 * objective, with the same holdout log-loss to 3 decimals), or when the
 * gradient reaches float resolution. An absolute gradient tolerance alone
 * stops far too early with weak regularisation (large C), where the gradient
 * is tiny long before the objective settles. */
enum { NN_SLR_WINDOW = 10 };
static const double NN_SLR_FTOL = 1e-4;
static const double NN_SLR_GTOL = 1e-7; /* max |gradient| */
static const double NN_SLR_C1 = 1e-4;   /* Armijo sufficient-decrease constant */

/* ---- training ------------------------------------------------------------- */

/* The training set as CSR: row i is ids/vals[offs[i] .. offs[i+1]). */
typedef struct {
  size_t n, nnz;
  size_t *offs;
  uint32_t *ids;
  float *vals;
  const int32_t *y;
} csr;

static void csr_free(csr *x) {
  free(x->offs);
  free(x->ids);
  free(x->vals);
  memset(x, 0, sizeof *x);
}

static finch_status build_csr(const nn_sparse_lr *m, const char *const *texts, const int32_t *y, size_t n,
                              csr *x, finch_err *err) {
  row_work w = {0};
  size_t cap = 0;
  finch_status st = FINCH_OK;
  x->n = n;
  x->y = y;
  x->offs = malloc((n + 1) * sizeof *x->offs);
  if (!x->offs) {
    st = finch_err_set(err, FINCH_ENOMEM, "out of memory for %zu rows", n);
    goto out;
  }
  x->offs[0] = 0;
  for (size_t i = 0; i < n; i++) {
    st = nn__slr_featurize(m, texts[i], &w, err);
    if (st != FINCH_OK) {
      finch_err_prefix(err, "text %zu", i);
      goto out;
    }
    if (x->nnz + w.n > cap) {
      size_t nc = cap ? cap : 65536;
      while (nc < x->nnz + w.n) nc *= 2;
      uint32_t *ids = realloc(x->ids, nc * sizeof *ids);
      if (ids) x->ids = ids;
      float *vals = realloc(x->vals, nc * sizeof *vals);
      if (vals) x->vals = vals;
      if (!ids || !vals) {
        st = finch_err_set(err, FINCH_ENOMEM, "out of memory for %zu nonzeros", nc);
        goto out;
      }
      cap = nc;
    }
    if (w.n) {
      memcpy(x->ids + x->nnz, w.ids, w.n * sizeof *w.ids);
      memcpy(x->vals + x->nnz, w.vals, w.n * sizeof *w.vals);
    }
    x->nnz += w.n;
    x->offs[i + 1] = x->nnz;
  }
out:
  nn__slr_row_work_free(&w);
  return st;
}

/* The objective at theta = W (F,C) | b (C) and its gradient g (same layout):
 * mean cross-entropy over the rows + lambda/2 ||W||^2. z and d are (C)
 * scratch. */
static double loss_grad(const csr *x, size_t F, size_t C, double lambda, const float *theta, float *g, float *z,
                        float *d) {
  const float *W = theta, *b = theta + F * C;
  float *gW = g, *gb = g + F * C;
  memset(g, 0, (F + 1) * C * sizeof *g);
  double loss = 0.0;
  const double inv_n = 1.0 / (double)x->n;
  for (size_t i = 0; i < x->n; i++) {
    size_t o = x->offs[i], nnz = x->offs[i + 1] - o;
    const uint32_t *ids = x->ids + o;
    const float *vals = x->vals + o;
    nn__slr_logits_forward(W, b, C, ids, vals, nnz, z);
    float mx = z[0];
    for (size_t c = 1; c < C; c++) mx = z[c] > mx ? z[c] : mx;
    double s = 0.0;
    for (size_t c = 0; c < C; c++) s += exp((double)(z[c] - mx));
    double lse = (double)mx + log(s);
    int32_t y = x->y[i];
    loss += lse - (double)z[y];
    for (size_t c = 0; c < C; c++) d[c] = (float)(exp((double)z[c] - lse) * inv_n);
    d[y] -= (float)inv_n;
    for (size_t c = 0; c < C; c++) gb[c] += d[c];
    for (size_t k = 0; k < nnz; k++) {
      float *gw = gW + (size_t)ids[k] * C;
      float v = vals[k];
      for (size_t c = 0; c < C; c++) gw[c] += v * d[c];
    }
  }
  double r = 0.0;
  const float lf = (float)lambda;
  for (size_t j = 0; j < F * C; j++) {
    r += (double)W[j] * W[j];
    gW[j] += lf * W[j];
  }
  return loss * inv_n + 0.5 * lambda * r;
}

static double dot(const float *a, const float *b, size_t n) {
  double s = 0.0;
  for (size_t i = 0; i < n; i++) s += (double)a[i] * b[i];
  return s;
}

static void axpy(float *y, float a, const float *x, size_t n) {
  for (size_t i = 0; i < n; i++) y[i] += a * x[i];
}

/* Minimises the objective over m->params (starting from its content, zeros). */
static finch_status lbfgs(nn_sparse_lr *m, const csr *x, nn_sparse_lr_iter_cb cb, void *cb_ctx, finch_err *err) {
  const size_t F = m->F, C = m->C, D = (F + 1) * C, H = NN_SLR_HISTORY;
  const double lambda = 1.0 / ((double)m->cfg.C * (double)x->n);
  float *mem = malloc((3 + 2 * H) * D * sizeof *mem);
  float *scratch = malloc(2 * C * sizeof *scratch);
  if (!mem || !scratch) {
    free(mem);
    free(scratch);
    return finch_err_set(err, FINCH_ENOMEM, "out of memory for L-BFGS over %zu parameters (%zu MiB)", D,
                         (3 + 2 * H) * D * sizeof(float) >> 20);
  }
  float *xv = m->params, *g = mem, *gn = mem + D, *d = mem + 2 * D;
  float *S = mem + 3 * D, *Y = S + H * D; /* ring of H pairs: slot k at S + k D, Y + k D */
  double rho[NN_SLR_HISTORY], alpha[NN_SLR_HISTORY], gamma = 1.0;
  double fhist[NN_SLR_WINDOW] = {0}; /* objective after iteration it, at it % NN_SLR_WINDOW */
  size_t npairs = 0, head = 0; /* head: slot of the next pair */
  float *z = scratch, *dz = scratch + C;
  double f = loss_grad(x, F, C, lambda, xv, g, z, dz);
  for (uint32_t it = 0; it < m->cfg.epochs; it++) {
    double gmax = 0.0;
    for (size_t i = 0; i < D; i++) gmax = fabs((double)g[i]) > gmax ? fabs((double)g[i]) : gmax;
    if (gmax < NN_SLR_GTOL) break;
    /* d = -H g by the two-loop recursion over the stored pairs, newest first. */
    memcpy(d, g, D * sizeof *d);
    for (size_t k = 0; k < npairs; k++) {
      size_t s = (head + H - 1 - k) % H;
      alpha[s] = rho[s] * dot(S + s * D, d, D);
      axpy(d, (float)-alpha[s], Y + s * D, D);
    }
    for (size_t i = 0; i < D; i++) d[i] *= (float)gamma;
    for (size_t k = npairs; k-- > 0;) {
      size_t s = (head + H - 1 - k) % H;
      double beta = rho[s] * dot(Y + s * D, d, D);
      axpy(d, (float)(alpha[s] - beta), S + s * D, D);
    }
    for (size_t i = 0; i < D; i++) d[i] = -d[i];
    double gd = dot(g, d, D);
    if (!(gd < 0.0)) { /* not a descent direction (rounding): restart from steepest descent */
      npairs = 0;
      for (size_t i = 0; i < D; i++) d[i] = -g[i];
      gd = -dot(g, g, D);
    }
    double t = npairs == 0 ? fmin(1.0, 1.0 / sqrt(-gd)) : 1.0, applied = 0.0, fn = f;
    int ok = 0;
    for (int ls = 0; ls < NN_SLR_MAX_LS; ls++) {
      axpy(xv, (float)(t - applied), d, D);
      applied = t;
      fn = loss_grad(x, F, C, lambda, xv, gn, z, dz);
      if (isfinite(fn) && fn <= f + NN_SLR_C1 * t * gd) {
        ok = 1;
        break;
      }
      /* Minimiser of the quadratic through f, gd and fn, kept in [0.1 t, 0.5 t]. */
      double tq = isfinite(fn) ? -gd * t * t / (2.0 * (fn - f - gd * t)) : 0.1 * t;
      t = fmax(0.1 * t, fmin(0.5 * t, tq));
    }
    if (!ok) { /* no decrease along d: keep the last accepted point */
      axpy(xv, (float)-applied, d, D);
      break;
    }
    /* s = t d, y = gn - g into the slot after the newest pair (the oldest
     * one's when the ring is full). A pair whose curvature rounding made
     * unusable is dropped, and with it that oldest pair. */
    float *s = S + head * D, *yv = Y + head * D;
    for (size_t i = 0; i < D; i++) s[i] = (float)applied * d[i], yv[i] = gn[i] - g[i];
    double sy = dot(s, yv, D), yy = dot(yv, yv, D);
    if (sy > 1e-12 * yy && yy > 0.0) {
      rho[head] = 1.0 / sy;
      gamma = sy / yy;
      head = (head + 1) % H;
      if (npairs < H) npairs++;
    } else if (npairs == H) {
      npairs--;
    }
    float *tg = g;
    g = gn;
    gn = tg;
    f = fn;
    if (cb) cb(cb_ctx, it + 1, m->cfg.epochs, f, applied);
    double f_then = fhist[it % NN_SLR_WINDOW]; /* after iteration it - NN_SLR_WINDOW */
    fhist[it % NN_SLR_WINDOW] = f;
    if (it >= NN_SLR_WINDOW && f_then - f <= NN_SLR_FTOL * f) break;
  }
  free(mem);
  free(scratch);
  return FINCH_OK;
}

finch_status nn_sparse_lr_train(nn_sparse_lr **out, const char *const *texts, const int32_t *labels,
                                size_t n, size_t n_labels, const nn_sparse_lr_config *cfg,
                                finch_err *err) {
  return nn_sparse_lr_train_watched(out, texts, labels, n, n_labels, cfg, NULL, NULL, err);
}

finch_status nn_sparse_lr_train_watched(nn_sparse_lr **out, const char *const *texts, const int32_t *labels,
                                        size_t n, size_t n_labels, const nn_sparse_lr_config *cfg,
                                        nn_sparse_lr_iter_cb cb, void *cb_ctx, finch_err *err) {
  *out = NULL;
  finch_status st = nn__slr_check_config(cfg, FINCH_EINVAL, err);
  if (st != FINCH_OK) return st;
  if (n == 0) return finch_err_set(err, FINCH_EINVAL, "no training texts");
  if (n >= UINT32_MAX) return finch_err_set(err, FINCH_EINVAL, "%zu training texts are too many", n);
  if (n_labels == 0 || n_labels > INT32_MAX)
    return finch_err_set(err, FINCH_EINVAL, "n_labels must be 1..%d, not %zu", INT32_MAX, n_labels);
  for (size_t i = 0; i < n; i++)
    if (labels[i] < 0 || (size_t)labels[i] >= n_labels)
      return finch_err_set(err, FINCH_EINVAL, "text %zu: label %d is outside [0, %zu)", i, labels[i], n_labels);
  nn_sparse_lr *m = calloc(1, sizeof *m);
  if (!m) return finch_err_set(err, FINCH_ENOMEM, "out of memory for the model");
  m->cfg = *cfg;
  m->C = n_labels;
  csr x = {0};
  st = nn__slr_build_vocab(m, texts, n, err);
  if (st == FINCH_OK) st = build_csr(m, texts, labels, n, &x, err);
  if (st == FINCH_OK) st = lbfgs(m, &x, cb, cb_ctx, err);
  csr_free(&x);
  if (st != FINCH_OK) {
    nn_sparse_lr_free(m);
    return st;
  }
  *out = m;
  return FINCH_OK;
}
