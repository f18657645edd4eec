/* The "ensemble" architecture behind nn_model: members of any architecture
 * over one label list, each with a calibration temperature and a weight
 * (nn/model_arch.h), and the temperature fit that calibrates them. File
 * sections after the head: "ENSW" (u32 n, then n x (f32 temperature, f32
 * weight)) and n "MEMBER" sections, each a whole member model file. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "nn/model_arch.h"
#include "nn/model_impl.h"

/* A file holds at most this many members. */
#define ENS_MAX 64

typedef struct {
  size_t n;
  nn_model **mem;
  float *temp, *weight; /* weights normalised to sum 1 */
} ens_impl;

static void ens_free(void *impl) {
  ens_impl *e = impl;
  for (size_t i = 0; e && i < e->n; i++) nn_model_free(e->mem[i]);
  if (e) free(e->mem), free(e->temp), free(e->weight);
  free(e);
}

finch_status nn_model_ensemble(nn_model **out, nn_model **members, const float *temps, const float *weights,
                               size_t n, finch_err *err) {
  *out = NULL;
  finch_status st = FINCH_OK;
  double wsum = 0;
  if (n == 0) st = finch_err_set(err, FINCH_EINVAL, "an ensemble needs at least one member");
  for (size_t i = 0; !st && i < n; i++) {
    if (!(temps[i] > 0) || !(weights[i] >= 0))
      st = finch_err_set(err, FINCH_EINVAL, "member %zu: temperature %g and weight %g must be positive", i,
                         (double)temps[i], (double)weights[i]);
    else if (members[i]->n_labels != members[0]->n_labels)
      st = finch_err_set(err, FINCH_EINVAL, "member %zu has %zu labels, member 0 %zu", i, members[i]->n_labels,
                         members[0]->n_labels);
    for (size_t k = 0; !st && k < members[0]->n_labels; k++)
      if (strcmp(members[i]->labels[k], members[0]->labels[k]) != 0)
        st = finch_err_set(err, FINCH_EINVAL, "member %zu: label %zu is %s, member 0 has %s", i, k,
                           members[i]->labels[k], members[0]->labels[k]);
    wsum += weights[i];
  }
  if (!st && !(wsum > 0)) st = finch_err_set(err, FINCH_EINVAL, "ensemble weights sum to zero");
  ens_impl *e = NULL;
  if (!st && (!(e = calloc(1, sizeof *e)) || !(e->mem = malloc(n * sizeof *e->mem)) ||
              !(e->temp = malloc(n * sizeof *e->temp)) || !(e->weight = malloc(n * sizeof *e->weight))))
    st = finch_err_set(err, FINCH_ENOMEM, "out of memory");
  if (!st) st = nn__model_new(out, &nn__ensemble_vt, e, (const char *const *)members[0]->labels, members[0]->n_labels, err);
  if (st) {
    if (e) free(e->mem), free(e->temp), free(e->weight);
    free(e);
    for (size_t i = 0; i < n; i++) nn_model_free(members[i]);
    return st;
  }
  e->n = n;
  for (size_t i = 0; i < n; i++) {
    e->mem[i] = members[i];
    e->temp[i] = temps[i];
    e->weight[i] = (float)(weights[i] / wsum);
  }
  return FINCH_OK;
}

static const ens_impl *impl_of(const nn_model *m) { return m->vt == &nn__ensemble_vt ? m->impl : NULL; }

size_t nn_model_n_members(const nn_model *m) { return impl_of(m) ? impl_of(m)->n : 0; }
const nn_model *nn_model_member(const nn_model *m, size_t i) {
  return i < nn_model_n_members(m) ? impl_of(m)->mem[i] : NULL;
}
float nn_model_member_temperature(const nn_model *m, size_t i) {
  return i < nn_model_n_members(m) ? impl_of(m)->temp[i] : 0.0f;
}
float nn_model_member_weight(const nn_model *m, size_t i) {
  return i < nn_model_n_members(m) ? impl_of(m)->weight[i] : 0.0f;
}

static size_t ens_n_params(const nn_model *m) {
  size_t n = 0;
  for (size_t i = 0; i < nn_model_n_members(m); i++) n += nn_model_n_params(nn_model_member(m, i));
  return n;
}

/* ---- prediction ------------------------------------------------------------ */

void nn_retemper(float *p, size_t C, float tau) {
  if (tau == 1.0f) return;
  double mx = -INFINITY, s = 0;
  for (size_t k = 0; k < C; k++) {
    double l = log(p[k] > 1e-30f ? p[k] : 1e-30f) / tau;
    p[k] = (float)l;
    if (l > mx) mx = l;
  }
  for (size_t k = 0; k < C; k++) s += (p[k] = (float)exp(p[k] - mx));
  for (size_t k = 0; k < C; k++) p[k] = (float)(p[k] / s);
}

static finch_status ens_predict_many(const nn_model *m, const char *const *texts, size_t n, float *probs,
                                     int32_t *pred, float temperature, finch_err *err) {
  const size_t C = m->n_labels;
  const ens_impl *e = m->impl;
  const size_t nc = n * C > 0 ? n * C : 1;
  float *acc = calloc(nc, sizeof *acc), *tmp = malloc(nc * sizeof *tmp);
  int32_t *bad = calloc(n ? n : 1, sizeof *bad), *pm = malloc((n ? n : 1) * sizeof *pm);
  finch_status st = FINCH_OK;
  if (!acc || !tmp || !bad || !pm) st = finch_err_set(err, FINCH_ENOMEM, "out of memory");
  for (size_t i = 0; !st && i < e->n; i++) {
    st = nn_model_predict_many(e->mem[i], texts, n, tmp, pm, e->temp[i], err);
    for (size_t r = 0; !st && r < n; r++) {
      if (pm[r] < 0) bad[r] = 1;
      for (size_t k = 0; k < C; k++) acc[r * C + k] += e->weight[i] * tmp[r * C + k];
    }
  }
  for (size_t r = 0; !st && r < n; r++) {
    float *p = acc + r * C;
    if (bad[r]) nn__uniform(p, C);
    else nn_retemper(p, C, temperature);
    if (pred) pred[r] = bad[r] ? -1 : nn__argmax(p, C);
    if (probs) memcpy(probs + r * C, p, C * sizeof *p);
  }
  free(acc);
  free(tmp);
  free(bad);
  free(pm);
  return st;
}

static int ens_predict(const nn_model *m, const char *text, float *probs, float temperature) {
  const size_t C = m->n_labels;
  float *p = malloc(C * sizeof *p);
  int32_t pred = -1;
  finch_err e2;
  if (!p || ens_predict_many(m, &text, 1, p, &pred, temperature, &e2) != FINCH_OK) pred = -1;
  if (probs) {
    if (pred >= 0) memcpy(probs, p, C * sizeof *p);
    else nn__uniform(probs, C);
  }
  free(p);
  return pred;
}

float nn_fit_temperature(const float *probs, const int32_t *labels, size_t n, size_t C) {
  /* NLL(T) = mean_i [ log sum_k exp(l_ik / T) - l_iy / T ], l = log p. */
  double lo = log(0.05), hi = log(20.0);
  const double g = 0.6180339887498949;
  double a = hi - g * (hi - lo), b = lo + g * (hi - lo);
#define NLL(lt, out)                                                                               \
  do {                                                                                             \
    double T_ = exp(lt), s_ = 0;                                                                   \
    for (size_t i = 0; i < n; i++) {                                                               \
      const float *p_ = probs + i * C;                                                             \
      double mx_ = -INFINITY;                                                                      \
      for (size_t k = 0; k < C; k++) {                                                             \
        double l_ = log(p_[k] > 1e-30f ? p_[k] : 1e-30f) / T_;                                    \
        if (l_ > mx_) mx_ = l_;                                                                    \
      }                                                                                            \
      double z_ = 0;                                                                               \
      for (size_t k = 0; k < C; k++) z_ += exp(log(p_[k] > 1e-30f ? p_[k] : 1e-30f) / T_ - mx_);   \
      s_ += mx_ + log(z_) - log(p_[labels[i]] > 1e-30f ? p_[labels[i]] : 1e-30f) / T_;            \
    }                                                                                              \
    out = s_;                                                                                      \
  } while (0)
  double fa, fb;
  NLL(a, fa);
  NLL(b, fb);
  for (int it = 0; it < 40; it++) {
    if (fa < fb) {
      hi = b, b = a, fb = fa;
      a = hi - g * (hi - lo);
      NLL(a, fa);
    } else {
      lo = a, a = b, fa = fb;
      b = lo + g * (hi - lo);
      NLL(b, fb);
    }
  }
#undef NLL
  return (float)exp(0.5 * (lo + hi));
}

/* ---- the file sections ------------------------------------------------------ */

static finch_status ens_write(const nn_model *m, nn_dtype dtype, nn_file_writer *w, finch_err *err) {
  const ens_impl *e = m->impl;
  if (e->n > ENS_MAX)
    return finch_err_set(err, FINCH_EINVAL, "an ensemble file holds at most %d members, not %zu", ENS_MAX, e->n);
  nn__model_write_head(w, m);
  nn__file_section_begin(w, "ENSW");
  nn_buf_u32(&w->b, (uint32_t)e->n);
  for (size_t i = 0; i < e->n; i++) {
    nn_buf_put(&w->b, &e->temp[i], 4);
    nn_buf_put(&w->b, &e->weight[i], 4);
  }
  nn__file_section_end(w);
  for (size_t i = 0; i < e->n; i++) {
    /* Each member is a whole file of its own architecture, at the same dtype. */
    unsigned char *bytes = NULL;
    size_t len = 0;
    finch_status st = nn__model_bytes(e->mem[i], dtype, &bytes, &len, err);
    if (st != FINCH_OK) {
      finch_err_prefix(err, "ensemble member %zu", i);
      return st;
    }
    nn__file_section(w, "MEMBER", bytes, len);
    free(bytes);
  }
  return FINCH_OK;
}

static finch_status ens_load(nn_model **out, const nn_blob *secs, size_t ns, const char *path, finch_err *err) {
  nn_model_head h;
  finch_status st = nn__model_read_head(secs, ns, path, &h, err);
  if (st != FINCH_OK) return st;
  const nn_blob *ensw = nn__file_find(secs, ns, "ENSW"), *members[ENS_MAX];
  size_t n_member = 0;
  const char *why = NULL;
  for (size_t i = 0; i < ns && !why; i++) {
    if (strncmp(secs[i].tag, "MEMBER", 8) != 0) continue;
    if (n_member == ENS_MAX) why = "more than 64 MEMBER sections";
    else members[n_member++] = &secs[i];
  }
  uint32_t k = 0;
  if (!why && (!ensw || ensw->size < 4)) why = "an ensemble needs an ENSW section";
  if (!why) {
    memcpy(&k, ensw->data, 4);
    if (k != n_member || ensw->size != 4 + (size_t)k * 8 || k == 0) why = "ENSW does not match the MEMBER sections";
  }
  if (why) {
    nn__model_head_free(&h);
    return finch_err_set(err, FINCH_EFORMAT, "%s: %s", path, why);
  }
  nn_model *mem[ENS_MAX];
  float temps[ENS_MAX], weights[ENS_MAX];
  size_t got = 0;
  for (; got < k; got++) {
    memcpy(&temps[got], (const unsigned char *)ensw->data + 4 + got * 8, 4);
    memcpy(&weights[got], (const unsigned char *)ensw->data + 8 + got * 8, 4);
    char name[64];
    snprintf(name, sizeof name, "member %zu", got);
    if ((st = nn__model_from_bytes(&mem[got], members[got]->data, members[got]->size, name, err)) != FINCH_OK) break;
  }
  if (st) {
    for (size_t i = 0; i < got; i++) nn_model_free(mem[i]);
  } else if ((st = nn_model_ensemble(out, mem, temps, weights, k, err)) == FINCH_OK) {
    (*out)->meta = h.meta;
    h.meta = NULL;
  }
  if (st) {
    finch_err_prefix(err, "%s", path);
    if (err) err->code = st;
  }
  nn__model_head_free(&h);
  return st;
}

const nn_model_vt nn__ensemble_vt = {
    .id = NN_ARCH_ENSEMBLE, .name = "ensemble", .predict = ens_predict, .predict_many = ens_predict_many,
    .n_params = ens_n_params, .config = NULL, .write = ens_write, .load = ens_load, .free_impl = ens_free,
};
