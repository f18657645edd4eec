/* The "tfm", "slr" and "ensemble" architectures behind nn_model; the file
 * sections are documented in nn/model_arch.h. */
#include "nn/model_arch.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "nn/bow.h"
#include "nn/loss.h"
#include "nn/modelfile.h"
#include "nn/tfm_train.h"

typedef struct {
  nn_tfm *tfm;
  nn_tokenizer *tok;
  int T;
  uint32_t minn, maxn;
} tfm_impl;

typedef struct {
  size_t n;
  nn_model **mem;
  float *temp, *weight;
} ens_impl;

typedef struct {
  uint32_t vocab, buckets, max_len, dim, layers, heads, ff, n_labels, pool;
  float dropout;
  uint32_t seq_len, minn, maxn;
  uint32_t head_gates;
  uint8_t reserved[8];
} nn_file_tfm;
_Static_assert(sizeof(nn_file_tfm) == 64, "nn_file_tfm is 64 bytes");

/* A model record without bow state: labels copied in bow's layout. */
static finch_status shell_create(nn_model **out, int arch, const char *const *labels, size_t n_labels,
                                 finch_err *err) {
  *out = NULL;
  if (n_labels < 1) return finch_err_set(err, FINCH_EINVAL, "a model needs at least one label");
  nn_model *m = calloc(1, sizeof *m);
  if (m) m->labels = nn__labels_copy(labels, n_labels);
  if (!m || !m->labels) {
    free(m);
    return finch_err_set(err, FINCH_ENOMEM, "out of memory for a model");
  }
  m->n_labels = n_labels;
  m->C = (uint32_t)n_labels;
  m->arch = arch;
  m->dtype = NN_DTYPE_F32;
  *out = m;
  return FINCH_OK;
}

nn_arch nn_model_arch(const nn_model *m) { return (nn_arch)m->arch; }

const char *nn_model_arch_name(const nn_model *m) {
  switch (m->arch) {
  case NN_ARCH_TFM: return "tfm";
  case NN_ARCH_SLR: return "slr";
  case NN_ARCH_ENSEMBLE: return "ensemble";
  default: return "bow";
  }
}

finch_status nn_model_from_tfm(nn_model **out, nn_tfm *tfm, nn_tokenizer *tok, int seq_len, uint32_t minn,
                               uint32_t maxn, const char *const *labels, size_t n_labels, finch_err *err) {
  *out = NULL;
  const nn_tfm_config *c = nn_tfm_get_config(tfm);
  finch_status st = FINCH_OK;
  tfm_impl *t = NULL;
  if (c->n_labels != n_labels)
    st = finch_err_set(err, FINCH_EINVAL, "encoder has %u labels, %zu names given", c->n_labels, n_labels);
  else if (nn_tokenizer_size(tok) != c->vocab)
    st = finch_err_set(err, FINCH_EINVAL, "tokenizer has %u pieces, the encoder %u", nn_tokenizer_size(tok), c->vocab);
  else if (seq_len < 2 || (uint32_t)seq_len > c->max_len)
    st = finch_err_set(err, FINCH_EINVAL, "sequence length %d outside [2,%u]", seq_len, c->max_len);
  else if (!(t = calloc(1, sizeof *t)))
    st = finch_err_set(err, FINCH_ENOMEM, "out of memory");
  nn_model *m = NULL;
  if (!st) st = shell_create(&m, NN_ARCH_TFM, labels, n_labels, err);
  if (st) {
    free(t);
    nn_tfm_free(tfm);
    nn_tokenizer_free(tok);
    return st;
  }
  *t = (tfm_impl){tfm, tok, seq_len, minn, maxn};
  m->impl = t;
  *out = m;
  return FINCH_OK;
}

finch_status nn_model_from_sparse_lr(nn_model **out, nn_sparse_lr *slr, const char *const *labels,
                                     size_t n_labels, finch_err *err) {
  nn_model *m = NULL;
  finch_status st = shell_create(&m, NN_ARCH_SLR, labels, n_labels, err);
  if (st) {
    nn_sparse_lr_free(slr);
    return st;
  }
  m->impl = slr;
  *out = m;
  return FINCH_OK;
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
  nn_model *m = NULL;
  if (!st && (!(e = calloc(1, sizeof *e)) || !(e->mem = malloc(n * sizeof *e->mem)) ||
              !(e->temp = malloc(n * sizeof *e->temp)) || !(e->weight = malloc(n * sizeof *e->weight))))
    st = finch_err_set(err, FINCH_ENOMEM, "out of memory");
  if (!st) st = shell_create(&m, NN_ARCH_ENSEMBLE, (const char *const *)members[0]->labels, members[0]->n_labels, err);
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
  m->impl = e;
  *out = m;
  return FINCH_OK;
}

size_t nn_model_n_members(const nn_model *m) {
  return m->arch == NN_ARCH_ENSEMBLE ? ((const ens_impl *)m->impl)->n : 0;
}
const nn_model *nn_model_member(const nn_model *m, size_t i) {
  return i < nn_model_n_members(m) ? ((const ens_impl *)m->impl)->mem[i] : NULL;
}
float nn_model_member_temperature(const nn_model *m, size_t i) {
  return i < nn_model_n_members(m) ? ((const ens_impl *)m->impl)->temp[i] : 0.0f;
}
float nn_model_member_weight(const nn_model *m, size_t i) {
  return i < nn_model_n_members(m) ? ((const ens_impl *)m->impl)->weight[i] : 0.0f;
}
const nn_tfm *nn_model_tfm(const nn_model *m) {
  return m->arch == NN_ARCH_TFM ? ((const tfm_impl *)m->impl)->tfm : NULL;
}
const nn_tokenizer *nn_model_tokenizer(const nn_model *m) {
  return m->arch == NN_ARCH_TFM ? ((const tfm_impl *)m->impl)->tok : NULL;
}

int nn_model_tfm_seq_len(const nn_model *m, uint32_t *minn, uint32_t *maxn) {
  if (m->arch != NN_ARCH_TFM) return 0;
  const tfm_impl *t = m->impl;
  if (minn) *minn = t->minn;
  if (maxn) *maxn = t->maxn;
  return t->T;
}

const nn_model *nn_model_find_tfm(const nn_model *m) {
  if (m->arch == NN_ARCH_TFM) return m;
  for (size_t i = 0; i < nn_model_n_members(m); i++)
    if (nn_model_arch(nn_model_member(m, i)) == NN_ARCH_TFM) return nn_model_member(m, i);
  return NULL;
}

void nn__arch_free(nn_model *m) {
  if (m->arch == NN_ARCH_TFM) {
    tfm_impl *t = m->impl;
    if (t) nn_tfm_free(t->tfm), nn_tokenizer_free(t->tok);
    free(t);
  } else if (m->arch == NN_ARCH_SLR) {
    nn_sparse_lr_free(m->impl);
  } else if (m->arch == NN_ARCH_ENSEMBLE) {
    ens_impl *e = m->impl;
    for (size_t i = 0; e && i < e->n; i++) nn_model_free(e->mem[i]);
    if (e) free(e->mem), free(e->temp), free(e->weight);
    free(e);
  }
  m->impl = NULL;
}

size_t nn__arch_n_params(const nn_model *m) {
  if (m->arch == NN_ARCH_TFM) return nn_tfm_n_params(((const tfm_impl *)m->impl)->tfm);
  if (m->arch == NN_ARCH_SLR) return nn_sparse_lr_n_params(m->impl);
  size_t n = 0;
  for (size_t i = 0; i < nn_model_n_members(m); i++) n += nn_model_n_params(nn_model_member(m, i));
  return n;
}

/* ---- prediction ------------------------------------------------------------ */

static void uniform(float *p, size_t n) {
  for (size_t i = 0; i < n; i++) p[i] = 1.0f / (float)n;
}

static int argmax(const float *p, size_t n) {
  size_t b = 0;
  for (size_t i = 1; i < n; i++)
    if (p[i] > p[b]) b = i;
  return (int)b;
}

/* probs (C): softmax(log p / tau), in place. */
static void retemper(float *p, size_t C, float tau) {
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

finch_status nn_model_predict_many(const nn_model *m, const char *const *texts, size_t n, float *probs,
                                   int32_t *pred, float temperature, finch_err *err) {
  const size_t C = m->n_labels;
  if (temperature <= 0) temperature = 1.0f;
  if (m->arch == NN_ARCH_TFM) {
    const tfm_impl *t = m->impl;
    nn_tfm_corpus x;
    const nn_tfm_config *c = nn_tfm_get_config(t->tfm);
    finch_err e2;
    if (nn_tfm_corpus_encode(&x, t->tok, texts, n, t->T, c->buckets, t->minn, t->maxn, &e2) == FINCH_OK) {
      finch_status st = nn_tfm_predict_corpus(t->tfm, NULL, &x, 64, temperature, probs, pred, err);
      nn_tfm_corpus_free(&x);
      return st;
    }
    /* Some text is not valid UTF-8: one at a time, so the others still get answers. */
  }
  if (m->arch == NN_ARCH_ENSEMBLE) {
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
      if (bad[r]) uniform(p, C);
      else retemper(p, C, temperature);
      if (pred) pred[r] = bad[r] ? -1 : argmax(p, C);
      if (probs) memcpy(probs + r * C, p, C * sizeof *p);
    }
    free(acc);
    free(tmp);
    free(bad);
    free(pm);
    return st;
  }
  float *one = malloc(C * sizeof *one);
  if (!one) return finch_err_set(err, FINCH_ENOMEM, "out of memory");
  for (size_t r = 0; r < n; r++) {
    int k = nn_model_predict(m, texts[r], one, temperature);
    if (pred) pred[r] = k;
    if (probs) memcpy(probs + r * C, one, C * sizeof *one);
  }
  free(one);
  return FINCH_OK;
}

int nn__arch_predict(const nn_model *m, const char *text, float *probs, float temperature) {
  const size_t C = m->n_labels;
  if (temperature <= 0) temperature = 1.0f;
  if (m->arch == NN_ARCH_SLR) return nn_sparse_lr_predict(m->impl, text, probs, temperature);
  if (m->arch == NN_ARCH_TFM) {
    const tfm_impl *t = m->impl;
    const nn_tfm_config *c = nn_tfm_get_config(t->tfm);
    nn_tfm_corpus x;
    finch_err e2;
    int32_t pred = -1;
    if (nn_tfm_corpus_encode(&x, t->tok, &text, 1, t->T, c->buckets, t->minn, t->maxn, &e2) == FINCH_OK) {
      float *p = probs ? probs : malloc(C * sizeof *p);
      if (!p || nn_tfm_predict_corpus(t->tfm, NULL, &x, 1, temperature, p, &pred, &e2) != FINCH_OK) pred = -1;
      if (p != probs) free(p);
      nn_tfm_corpus_free(&x);
    }
    if (pred < 0 && probs) uniform(probs, C);
    return pred;
  }
  /* Ensemble. */
  float *p = malloc(C * sizeof *p);
  int32_t pred = -1;
  finch_err e2;
  if (!p || nn_model_predict_many(m, &text, 1, p, &pred, temperature, &e2) != FINCH_OK) pred = -1;
  if (probs) {
    if (pred >= 0) memcpy(probs, p, C * sizeof *p);
    else uniform(probs, C);
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

/* ---- serialisation ------------------------------------------------------------ */

typedef struct {
  unsigned char *p;
  size_t n, cap;
  int failed;
} membuf;

static void mb_put(membuf *b, const void *p, size_t n) {
  if (b->failed) return;
  if (b->n + n > b->cap) {
    size_t nc = b->cap ? b->cap * 2 : 4096;
    while (nc < b->n + n) nc *= 2;
    unsigned char *q = realloc(b->p, nc);
    if (!q) {
      b->failed = 1;
      return;
    }
    b->p = q;
    b->cap = nc;
  }
  memcpy(b->p + b->n, p, n);
  b->n += n;
}

static void mb_u32(membuf *b, uint32_t v) { mb_put(b, &v, 4); }

static void mb_pad8(membuf *b) {
  static const unsigned char z[8];
  if (b->n % 8) mb_put(b, z, 8 - b->n % 8);
}

static void mb_strings(membuf *b, char *const *s, size_t n) {
  mb_u32(b, (uint32_t)n);
  for (size_t i = 0; i < n; i++) {
    uint32_t len = (uint32_t)strlen(s[i]);
    mb_u32(b, len);
    mb_put(b, s[i], len);
  }
}

finch_status nn__arch_bytes(const nn_model *m, nn_dtype dtype, unsigned char **buf, size_t *len, finch_err *err) {
  membuf labels = {0}, body = {0};
  nn_file_tfm ft;
  unsigned char *blob = NULL, **member_bytes = NULL;
  size_t blob_len = 0, *member_len = NULL;
  nn_blob secs[8 + 64];
  size_t ns = 0;
  finch_status st = FINCH_OK;
  nn_file_arch a;
  memset(&a, 0, sizeof a);
  /* NUL-padded, not NUL-terminated: "ensemble" fills all 8 bytes. */
  memcpy(a.name, nn_model_arch_name(m), strlen(nn_model_arch_name(m)));
  a.n_labels = (uint32_t)m->n_labels;
  mb_strings(&labels, m->labels, m->n_labels);
  const char *meta = nn_model_meta(m);
  secs[ns++] = (nn_blob){"ARCH", &a, sizeof a};
  secs[ns++] = (nn_blob){"LABELS", labels.p, labels.n};
  secs[ns++] = (nn_blob){"META", meta, strlen(meta)};
  if (m->arch == NN_ARCH_TFM) {
    const tfm_impl *t = m->impl;
    const nn_tfm_config *c = nn_tfm_get_config(t->tfm);
    memset(&ft, 0, sizeof ft);
    ft = (nn_file_tfm){c->vocab, c->buckets, c->max_len, c->dim, c->layers, c->heads, c->ff, c->n_labels,
                       c->pool, c->dropout, (uint32_t)t->T, t->minn, t->maxn, c->head_gates, {0}};
    secs[ns++] = (nn_blob){"TFMCFG", &ft, sizeof ft};
    if ((st = nn_tokenizer_save(t->tok, &blob, &blob_len, err)) != FINCH_OK) goto out;
    secs[ns++] = (nn_blob){"TOKENIZ", blob, blob_len};
    const float *params = nn_tfm_params_const(t->tfm);
    int8_t *q = NULL;
    for (size_t i = 0; i < nn_tfm_n_tensors(t->tfm); i++) {
      const nn_tfm_tensor *tt = nn_tfm_tensor_at(t->tfm, i);
      const int quant = dtype == NN_DTYPE_Q8 && tt->cols > 1 && tt->decay;
      uint32_t hdr[4] = {quant ? NN_DTYPE_Q8 : NN_DTYPE_F32, tt->rows, tt->cols, 0};
      mb_put(&body, hdr, sizeof hdr);
      const float *x = params + tt->off;
      if (!quant) {
        mb_put(&body, x, (size_t)tt->rows * tt->cols * 4);
      } else {
        int8_t *nq = realloc(q, (size_t)tt->rows * tt->cols);
        if (!nq) {
          body.failed = 1;
          break;
        }
        q = nq;
        for (uint32_t r = 0; r < tt->rows; r++) {
          float s;
          nn_q8_quantize_row_ref(x + (size_t)r * tt->cols, tt->cols, q + (size_t)r * tt->cols, &s);
          mb_put(&body, &s, 4);
        }
        mb_put(&body, q, (size_t)tt->rows * tt->cols);
      }
      mb_pad8(&body);
    }
    free(q);
    secs[ns++] = (nn_blob){"PARAMS", body.p, body.n};
  } else if (m->arch == NN_ARCH_SLR) {
    if ((st = nn_sparse_lr_save(m->impl, &blob, &blob_len, err)) != FINCH_OK) goto out;
    secs[ns++] = (nn_blob){"SLR", blob, blob_len};
  } else {
    const ens_impl *e = m->impl;
    if (e->n > 64) {
      st = finch_err_set(err, FINCH_EINVAL, "an ensemble file holds at most 64 members, not %zu", e->n);
      goto out;
    }
    mb_u32(&body, (uint32_t)e->n);
    for (size_t i = 0; i < e->n; i++) {
      mb_put(&body, &e->temp[i], 4);
      mb_put(&body, &e->weight[i], 4);
    }
    secs[ns++] = (nn_blob){"ENSW", body.p, body.n};
    member_bytes = calloc(e->n, sizeof *member_bytes);
    member_len = calloc(e->n, sizeof *member_len);
    if (!member_bytes || !member_len) {
      st = finch_err_set(err, FINCH_ENOMEM, "out of memory");
      goto out;
    }
    for (size_t i = 0; i < e->n; i++) {
      const nn_model *mm = e->mem[i];
      /* Members keep their own dtype choice: the bow layout or this one. */
      if (mm->arch) st = nn__arch_bytes(mm, dtype, &member_bytes[i], &member_len[i], err);
      else st = nn__bow_bytes(mm, dtype, &member_bytes[i], &member_len[i], err);
      if (st) {
        finch_err_prefix(err, "ensemble member %zu", i);
        goto out;
      }
      secs[ns++] = (nn_blob){"MEMBER", member_bytes[i], member_len[i]};
    }
  }
  if (labels.failed || body.failed) {
    st = finch_err_set(err, FINCH_ENOMEM, "out of memory serialising a model");
    goto out;
  }
  st = nn__file_bytes(secs, ns, buf, len, err);
out:
  if (member_bytes)
    for (size_t i = 0; i < nn_model_n_members(m); i++) free(member_bytes[i]);
  free(member_bytes);
  free(member_len);
  free(blob);
  free(labels.p);
  free(body.p);
  return st;
}

finch_status nn__arch_load(nn_model **out, const unsigned char *buf, size_t size, const char *path,
                           finch_err *err) {
  *out = NULL;
  nn_blob *secs = NULL;
  size_t ns = 0;
  finch_status st = nn__file_sections(buf, size, path, &secs, &ns, err);
  if (st) return st;
  nn_file_arch a;
  memset(&a, 0, sizeof a);
  char **labels = NULL;
  uint32_t n_labels = 0;
  char *meta = NULL;
  const nn_blob *cfg = NULL, *tok = NULL, *params = NULL, *slr = NULL, *ensw = NULL;
  size_t n_member = 0;
  const nn_blob *members[64];
  nn_model *m = NULL;
  const char *why = NULL;
  for (size_t i = 0; i < ns && !why; i++) {
    char tag[9] = {0};
    memcpy(tag, secs[i].tag, 8);
    if (!strcmp(tag, "ARCH")) {
      if (secs[i].size != sizeof a) why = "ARCH has the wrong size";
      else memcpy(&a, secs[i].data, sizeof a);
    } else if (!strcmp(tag, "LABELS")) {
      if (labels) why = "duplicate LABELS";
      else if (!(labels = nn__read_strings(secs[i].data, secs[i].size, &n_labels, &why))) break;
    } else if (!strcmp(tag, "META")) {
      if (meta || memchr(secs[i].data, 0, secs[i].size)) why = "duplicate META or a NUL byte in it";
      else if ((meta = malloc(secs[i].size + 1))) memcpy(meta, secs[i].data, secs[i].size), meta[secs[i].size] = 0;
    } else if (!strcmp(tag, "TFMCFG")) cfg = &secs[i];
    else if (!strcmp(tag, "TOKENIZ")) tok = &secs[i];
    else if (!strcmp(tag, "PARAMS")) params = &secs[i];
    else if (!strcmp(tag, "SLR")) slr = &secs[i];
    else if (!strcmp(tag, "ENSW")) ensw = &secs[i];
    else if (!strcmp(tag, "MEMBER")) {
      if (n_member == 64) why = "more than 64 MEMBER sections";
      else members[n_member++] = &secs[i];
    }
  }
  if (!why && !labels) why = "missing LABELS";
  if (!why && a.n_labels != n_labels) why = "ARCH and LABELS disagree on the number of labels";
  char an[9] = {0};
  memcpy(an, a.name, 8);
  if (why) goto bad;
  if (!strcmp(an, "tfm")) {
    nn_file_tfm ft;
    if (!cfg || cfg->size != sizeof ft || !tok || !params) {
      why = "a tfm model needs TFMCFG, TOKENIZ and PARAMS";
      goto bad;
    }
    memcpy(&ft, cfg->data, sizeof ft);
    nn_tfm_config c = {ft.vocab, ft.buckets, ft.max_len, ft.dim, ft.layers, ft.heads, ft.ff, ft.n_labels, ft.pool,
                       ft.dropout, ft.head_gates};
    if (ft.n_labels != n_labels) {
      why = "TFMCFG and LABELS disagree on the number of labels";
      goto bad;
    }
    nn_tfm *tfm = NULL;
    nn_tokenizer *tk = NULL;
    if ((st = nn_tfm_create(&tfm, &c, 0, err)) != FINCH_OK) goto fail;
    if ((st = nn_tokenizer_load(&tk, tok->data, tok->size, err)) != FINCH_OK) {
      nn_tfm_free(tfm);
      goto fail;
    }
    /* Tensors in table order. */
    float *p = nn_tfm_params(tfm);
    const unsigned char *q = params->data, *end = q + params->size;
    int any_q8 = 0;
    for (size_t i = 0; i < nn_tfm_n_tensors(tfm) && !why; i++) {
      const nn_tfm_tensor *tt = nn_tfm_tensor_at(tfm, i);
      uint32_t hdr[4];
      if ((size_t)(end - q) < sizeof hdr) {
        why = "PARAMS ends early";
        break;
      }
      memcpy(hdr, q, sizeof hdr);
      q += sizeof hdr;
      size_t cnt = (size_t)tt->rows * tt->cols;
      size_t need = hdr[0] == NN_DTYPE_F32 ? cnt * 4 : (size_t)tt->rows * 4 + cnt;
      if (hdr[1] != tt->rows || hdr[2] != tt->cols) why = "a PARAMS tensor has the wrong shape";
      else if (hdr[0] > NN_DTYPE_Q8) why = "a PARAMS tensor has an unknown dtype";
      else if ((size_t)(end - q) < need) why = "PARAMS ends early";
      if (why) break;
      if (hdr[0] == NN_DTYPE_F32) {
        memcpy(p + tt->off, q, cnt * 4);
      } else {
        any_q8 = 1;
        for (uint32_t r = 0; r < tt->rows; r++) {
          float s;
          memcpy(&s, q + (size_t)r * 4, 4);
          nn_q8_dequantize_row_ref((const int8_t *)(q + (size_t)tt->rows * 4 + (size_t)r * tt->cols), s, tt->cols,
                                   p + tt->off + (size_t)r * tt->cols);
        }
      }
      q += (need + 7) & ~(size_t)7;
      if (q > end) q = end;
    }
    if (why) {
      nn_tfm_free(tfm);
      nn_tokenizer_free(tk);
      goto bad;
    }
    if ((st = nn_model_from_tfm(&m, tfm, tk, (int)ft.seq_len, ft.minn, ft.maxn, (const char *const *)labels,
                                n_labels, err)) != FINCH_OK)
      goto fail;
    m->dtype = any_q8 ? NN_DTYPE_Q8 : NN_DTYPE_F32;
  } else if (!strcmp(an, "slr")) {
    nn_sparse_lr *s = NULL;
    if (!slr) {
      why = "an slr model needs an SLR section";
      goto bad;
    }
    if ((st = nn_sparse_lr_load(&s, slr->data, slr->size, err)) != FINCH_OK) goto fail;
    if ((st = nn_model_from_sparse_lr(&m, s, (const char *const *)labels, n_labels, err)) != FINCH_OK) goto fail;
  } else if (!strcmp(an, "ensemble")) {
    uint32_t k = 0;
    if (!ensw || ensw->size < 4) {
      why = "an ensemble needs an ENSW section";
      goto bad;
    }
    memcpy(&k, ensw->data, 4);
    if (k != n_member || ensw->size != 4 + (size_t)k * 8 || k == 0) {
      why = "ENSW does not match the MEMBER sections";
      goto bad;
    }
    nn_model *mem[64];
    float temps[64], weights[64];
    size_t got = 0;
    for (; got < k; got++) {
      memcpy(&temps[got], (const unsigned char *)ensw->data + 4 + got * 8, 4);
      memcpy(&weights[got], (const unsigned char *)ensw->data + 8 + got * 8, 4);
      char name[64];
      snprintf(name, sizeof name, "member %zu", got);
      if ((st = nn__model_from_bytes(&mem[got], members[got]->data, members[got]->size, name, err)) != FINCH_OK)
        break;
    }
    if (st) {
      for (size_t i = 0; i < got; i++) nn_model_free(mem[i]);
      goto fail;
    }
    if ((st = nn_model_ensemble(&m, mem, temps, weights, k, err)) != FINCH_OK) goto fail;
  } else {
    why = "unknown architecture";
    goto bad;
  }
  m->meta = meta;
  meta = NULL;
  *out = m;
  goto done;
bad:
  st = finch_err_set(err, FINCH_EFORMAT, "%s: %s", path, why);
  goto done;
fail:
  finch_err_prefix(err, "%s", path);
  if (err) err->code = st;
done:
  free(secs);
  free(labels);
  free(meta);
  return st;
}
