/* The transformer encoder (nn/tfm.h): the model record and its tensor table,
 * the work area, and the forward and backward passes, built from the ops of
 * the work area's backend (nn/ops.h): the CPU table calls the layers of
 * nn/tfm_ops.c on host memory; a device table runs the same passes on device
 * memory. Head gates and the MLM head are host code, so they need the CPU. */
#include "core/clock.h"
#include "nn/tfm.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "nn/layers.h"
#include "nn/ops.h"
#include "nn/tfm_ops.h"

/* Offsets into the parameter block of one layer's tensors. */
typedef struct {
  size_t wqkv, bqkv, wo, bo, ln1_g, ln1_b, w1, b1, w2, b2, ln2_g, ln2_b;
  size_t gate_w, gate_b; /* head gates only */
} tfm_layer_offs;

struct nn_tfm {
  nn_tfm_config cfg;
  size_t n_params;
  float *params;
  size_t n_tensors;
  nn_tfm_tensor *tensors; /* one allocation: tensors (n_tensors), then layer (L) */
  tfm_layer_offs *layer;
  size_t tok_emb, ng_emb, pos_emb, ln_emb_g, ln_emb_b, ln_f_g, ln_f_b, cls_w, cls_b, mlm_b;
};

/* One layer's saved activations; N = B*T rows of the current batch, laid out
 * in buffers sized for Bmax*max_len. */
typedef struct {
  float *a1, *mu1, *rs1; /* LN1 out (N,D); its row statistics (N) */
  float *qkv;            /* (3,B,Hh,T,Dh) head-major q, k, v */
  float *att, *datt;     /* (B,Hh,T,T) probabilities and the caller's gradient */
  float *ctx;            /* (N,D) merged attention context, gated when gates are on */
  float *ctx_raw;        /* (N,D) the context before the gates; NULL without gates */
  float *gate, *dgate;   /* (B,Hh) gates and the caller's gradient; NULL without gates */
  float *m_att;          /* (N,D) dropout mask of the attention output */
  float *u;              /* (N,D) residual stream after attention */
  float *a2, *mu2, *rs2; /* LN2 out (N,D); its row statistics (N) */
  float *f1, *g;         /* (N,F) FF1 output and its GELU */
  float *m_ff;           /* (N,D) dropout mask of the FF output */
} tfm_layer_acts;

struct nn_tfm_work {
  nn_tfm_config cfg;
  nn_backend *be;  /* whose memory holds block, the staged batch and dparams */
  int on_host;     /* be's memory is host memory (the CPU table) */
  float *dparams;  /* the parameter block on a device backend; NULL = the model's own */
  int32_t *d_ids;  /* (Bmax,Tmax) the batch's ids, mask, n-gram offsets and rows, */
  uint8_t *d_mask; /* staged on a device backend (on the CPU the batch's own arrays) */
  size_t *d_offs;
  uint32_t *d_ng;
  size_t d_ng_cap;
  float *h_mask;   /* (Bmax*Tmax*D) host staging of a dropout mask, device only */
  int Bmax, Tmax;
  int B, T;     /* of the last forward */
  int drop;     /* the last forward applied dropout */
  float *block; /* the one allocation of activations, gradients and scratch */
  float *x0, *mu_e, *rs_e, *m_h0;    /* (N,D) embeddings; (N) LN_emb stats; (N,D) mask */
  float **h, **dh;                   /* L+1 of (N,D): hidden(l) and d hidden(l) */
  tfm_layer_acts *layer;             /* (L) */
  float *hf, *mu_f, *rs_f, *dhf;     /* (N,D) LN_f out; (N) stats; (N,D) its gradient */
  float *pooled, *pooled_d, *m_pool; /* (B,D) pooled, after dropout, the mask */
  float *dpooled, *s_bd;             /* (B,D) the caller's gradient; scratch */
  float *logits, *dlogits;           /* (B,C) */
  float *e, *de;                     /* (B,D) the gates' input, mean of h0, and its gradient */
  float *s_bh;                       /* (B,Hh) scratch: gradient of the gates' logits */
  /* scratch shared by the layers */
  float *s_qkv;            /* (N,3D) projected q|k|v, and its gradient */
  float *s_dqkv;           /* (3,B,Hh,T,Dh) head-major gradient of q, k, v */
  float *s_ctxh;           /* (B,Hh,T,Dh) head-major context, and its gradient */
  float *s_nd1, *s_nd2, *s_nd3; /* (N,D) */
  float *s_nf;             /* (N,F) */
  float *s_tt;             /* (B,Hh,T,T) attention backward scratch */
  uint8_t *ng_seen;        /* (NB) 1 = row in ng_list */
  uint32_t *ng_list;       /* (NB) rows touched by the last forward, first touch first */
  size_t ng_n;
  /* The MLM head's buffers, grown on demand by nn_tfm_mlm_forward: (P,V)
   * logits for a large vocabulary would dominate the work area if sized for
   * every position up front. One allocation: logits, dmlm (Pcap,V); hm, dhm
   * (Pcap,D); then pos (Pcap) int32. */
  int P, Pcap;
  float *mlm_block, *mlm_logits, *dmlm, *mlm_h, *mlm_dh;
  int32_t *mlm_pos;
  int prof;
  double prof_fwd[NN_TFM_OP_COUNT], prof_bwd[NN_TFM_OP_COUNT];
};

/* ---- the model --------------------------------------------------------- */

static finch_status config_check(const nn_tfm_config *c, finch_err *err) {
  if (c->vocab < 1 || c->vocab > (1u << 24)) return finch_err_set(err, FINCH_EINVAL, "vocab %u is outside [1, 2^24]", c->vocab);
  if (c->buckets > (1u << 26)) return finch_err_set(err, FINCH_EINVAL, "buckets %u is above 2^26", c->buckets);
  if (c->max_len < 1 || c->max_len > 8192) return finch_err_set(err, FINCH_EINVAL, "max_len %u is outside [1, 8192]", c->max_len);
  if (c->dim < 1 || c->dim > 8192) return finch_err_set(err, FINCH_EINVAL, "dim %u is outside [1, 8192]", c->dim);
  if (c->layers < 1 || c->layers > 64) return finch_err_set(err, FINCH_EINVAL, "layers %u is outside [1, 64]", c->layers);
  if (c->heads < 1 || c->dim % c->heads != 0)
    return finch_err_set(err, FINCH_EINVAL, "heads %u must be >= 1 and divide dim %u", c->heads, c->dim);
  if (c->ff < 1 || c->ff > 65536) return finch_err_set(err, FINCH_EINVAL, "ff %u is outside [1, 65536]", c->ff);
  if (c->n_labels > 1000000) return finch_err_set(err, FINCH_EINVAL, "n_labels %u is above 10^6", c->n_labels);
  if (c->pool != NN_POOL_MEAN && c->pool != NN_POOL_CLS)
    return finch_err_set(err, FINCH_EINVAL, "pool %u is neither NN_POOL_MEAN (0) nor NN_POOL_CLS (1)", c->pool);
  if (!(c->dropout >= 0.0f && c->dropout <= 0.9f))
    return finch_err_set(err, FINCH_EINVAL, "dropout %g is outside [0, 0.9]", (double)c->dropout);
  if (c->head_gates > 1) return finch_err_set(err, FINCH_EINVAL, "head_gates %u is neither 0 nor 1", c->head_gates);
  return FINCH_OK;
}

static size_t add_tensor(nn_tfm *m, const char *name, int layer, uint32_t rows, uint32_t cols, int decay) {
  return nn_param_add(m->tensors, &m->n_tensors, &m->n_params, name, layer, rows, cols, decay);
}

/* Lays out the tensor table in the order nn/tfm.h documents. ng_emb (NB = 0)
 * and the classifier (C = 0) stay in the table with zero rows, so every
 * configuration has the same tensor names at the same indices. The head
 * gates come after everything else, so the tensors before them keep their
 * indices and offsets. */
static void build_table(nn_tfm *m) {
  const nn_tfm_config *c = &m->cfg;
  const uint32_t D = c->dim, F = c->ff;
  m->n_tensors = 0;
  m->n_params = 0;
  m->tok_emb = add_tensor(m, "tok_emb", -1, c->vocab, D, 1);
  m->ng_emb = add_tensor(m, "ng_emb", -1, c->buckets, D, 1);
  m->pos_emb = add_tensor(m, "pos_emb", -1, c->max_len, D, 0);
  m->ln_emb_g = add_tensor(m, "ln_emb_g", -1, D, 1, 0);
  m->ln_emb_b = add_tensor(m, "ln_emb_b", -1, D, 1, 0);
  for (uint32_t l = 0; l < c->layers; l++) {
    tfm_layer_offs *o = &m->layer[l];
    int li = (int)l;
    o->wqkv = add_tensor(m, "wqkv", li, 3 * D, D, 1);
    o->bqkv = add_tensor(m, "bqkv", li, 3 * D, 1, 0);
    o->wo = add_tensor(m, "wo", li, D, D, 1);
    o->bo = add_tensor(m, "bo", li, D, 1, 0);
    o->ln1_g = add_tensor(m, "ln1_g", li, D, 1, 0);
    o->ln1_b = add_tensor(m, "ln1_b", li, D, 1, 0);
    o->w1 = add_tensor(m, "w1", li, F, D, 1);
    o->b1 = add_tensor(m, "b1", li, F, 1, 0);
    o->w2 = add_tensor(m, "w2", li, D, F, 1);
    o->b2 = add_tensor(m, "b2", li, D, 1, 0);
    o->ln2_g = add_tensor(m, "ln2_g", li, D, 1, 0);
    o->ln2_b = add_tensor(m, "ln2_b", li, D, 1, 0);
  }
  m->ln_f_g = add_tensor(m, "ln_f_g", -1, D, 1, 0);
  m->ln_f_b = add_tensor(m, "ln_f_b", -1, D, 1, 0);
  m->cls_w = add_tensor(m, "cls_w", -1, c->n_labels, D, 1);
  m->cls_b = add_tensor(m, "cls_b", -1, c->n_labels, 1, 0);
  m->mlm_b = add_tensor(m, "mlm_b", -1, c->vocab, 1, 0);
  for (uint32_t l = 0; l < c->layers && c->head_gates; l++) {
    m->layer[l].gate_w = add_tensor(m, "gate_w", (int)l, c->heads, D, 1);
    m->layer[l].gate_b = add_tensor(m, "gate_b", (int)l, c->heads, 1, 0);
  }
}

static int ends_with(const char *s, const char *suffix) {
  size_t n = strlen(s), k = strlen(suffix);
  return n >= k && strcmp(s + n - k, suffix) == 0;
}

/* The init nn/tfm.h promises: weights and embeddings N(0, 0.02), the output
 * projections wo and w2 N(0, 0.02/sqrt(2L)), layer-norm gains 1, gate biases
 * +2 (gates open at sigmoid(2) = 0.88), the rest 0. Draws go in table order,
 * so the gates, last, leave every other tensor's values as without them. */
static void init_params(nn_tfm *m, uint64_t seed) {
  nn_rng r;
  nn_rng_seed(&r, seed, 1);
  const float sd = 0.02f, sd_out = 0.02f / sqrtf(2.0f * (float)m->cfg.layers);
  for (size_t i = 0; i < m->n_tensors; i++) {
    const nn_tfm_tensor *t = &m->tensors[i];
    float *p = m->params + t->off;
    size_t n = (size_t)t->rows * t->cols;
    if (ends_with(t->name, "_g")) {
      for (size_t k = 0; k < n; k++) p[k] = 1.0f;
    } else if (ends_with(t->name, ".gate_b")) {
      for (size_t k = 0; k < n; k++) p[k] = 2.0f;
    } else if (t->decay || strcmp(t->name, "pos_emb") == 0) {
      float s = ends_with(t->name, ".wo") || ends_with(t->name, ".w2") ? sd_out : sd;
      for (size_t k = 0; k < n; k++) p[k] = s * nn_rng_normal(&r);
    } else {
      memset(p, 0, n * sizeof *p);
    }
  }
}

static finch_status model_alloc(nn_tfm **out, const nn_tfm_config *cfg, finch_err *err) {
  *out = NULL;
  finch_status st = config_check(cfg, err);
  if (st != FINCH_OK) return st;
  nn_tfm *m = calloc(1, sizeof *m);
  size_t nt = 10 + (cfg->head_gates ? 14 : 12) * (size_t)cfg->layers;
  if (m) m->tensors = malloc(nt * sizeof(nn_tfm_tensor) + cfg->layers * sizeof(tfm_layer_offs));
  if (!m || !m->tensors) {
    nn_tfm_free(m);
    return finch_err_set(err, FINCH_ENOMEM, "out of memory for a transformer's tensor table");
  }
  m->cfg = *cfg;
  m->layer = (tfm_layer_offs *)(m->tensors + nt);
  build_table(m);
  m->params = malloc((m->n_params ? m->n_params : 1) * sizeof(float));
  if (!m->params) {
    size_t np = m->n_params;
    nn_tfm_free(m);
    return finch_err_set(err, FINCH_ENOMEM, "out of memory for a transformer of %zu parameters", np);
  }
  *out = m;
  return FINCH_OK;
}

finch_status nn_tfm_create(nn_tfm **out, const nn_tfm_config *cfg, uint64_t seed, finch_err *err) {
  finch_status st = model_alloc(out, cfg, err);
  if (st == FINCH_OK) init_params(*out, seed);
  return st;
}

finch_status nn_tfm_create_from_params(nn_tfm **out, const nn_tfm_config *cfg, const float *params,
                                       size_t n_params, finch_err *err) {
  finch_status st = model_alloc(out, cfg, err);
  if (st != FINCH_OK) return st;
  if (n_params != (*out)->n_params) {
    size_t want = (*out)->n_params;
    nn_tfm_free(*out);
    *out = NULL;
    return finch_err_set(err, FINCH_EFORMAT, "transformer parameter block has %zu floats, its config needs %zu",
                         n_params, want);
  }
  memcpy((*out)->params, params, n_params * sizeof(float));
  return FINCH_OK;
}

void nn_tfm_free(nn_tfm *m) {
  if (!m) return;
  free(m->params);
  free(m->tensors);
  free(m);
}

const nn_tfm_config *nn_tfm_get_config(const nn_tfm *m) { return &m->cfg; }
float *nn_tfm_params(nn_tfm *m) { return m->params; }
const float *nn_tfm_params_const(const nn_tfm *m) { return m->params; }
size_t nn_tfm_n_params(const nn_tfm *m) { return m->n_params; }
size_t nn_tfm_n_tensors(const nn_tfm *m) { return m->n_tensors; }
const nn_tfm_tensor *nn_tfm_tensor_at(const nn_tfm *m, size_t i) {
  return i < m->n_tensors ? &m->tensors[i] : NULL;
}

const nn_tfm_tensor *nn_tfm_tensor_find(const nn_tfm *m, const char *name) {
  for (size_t i = 0; i < m->n_tensors; i++)
    if (strcmp(m->tensors[i].name, name) == 0) return &m->tensors[i];
  return NULL;
}

/* ---- the work area ----------------------------------------------------- */

/* Hands out n floats at *off of base, 64-byte aligned; with base NULL it
 * only counts, so one function both sizes and carves the allocation. */
static float *take(float *base, size_t *off, size_t n) {
  float *p = base ? base + *off : NULL;
  *off += (n + 15) & ~(size_t)15;
  return p;
}

static size_t layout(nn_tfm_work *w, float *base) {
  const nn_tfm_config *c = &w->cfg;
  const size_t B = (size_t)w->Bmax, T = (size_t)w->Tmax, N = B * T, D = c->dim, F = c->ff;
  const size_t C = c->n_labels, L = c->layers, A = B * c->heads * T * T;
  const size_t ND = N * D, NDd = c->dropout > 0.0f ? ND : 0, BDd = c->dropout > 0.0f ? B * D : 0;
  const int gated = c->head_gates != 0;
  const size_t BH = B * c->heads;
  size_t off = 0;
  w->x0 = take(base, &off, ND);
  w->mu_e = take(base, &off, N);
  w->rs_e = take(base, &off, N);
  w->m_h0 = take(base, &off, NDd);
  for (size_t l = 0; l <= L; l++) {
    w->h[l] = take(base, &off, ND);
    w->dh[l] = take(base, &off, ND);
  }
  for (size_t l = 0; l < L; l++) {
    tfm_layer_acts *a = &w->layer[l];
    a->a1 = take(base, &off, ND);
    a->mu1 = take(base, &off, N);
    a->rs1 = take(base, &off, N);
    a->qkv = take(base, &off, 3 * ND);
    a->att = take(base, &off, A);
    a->datt = take(base, &off, A);
    a->ctx = take(base, &off, ND);
    a->ctx_raw = gated ? take(base, &off, ND) : NULL;
    a->gate = gated ? take(base, &off, BH) : NULL;
    a->dgate = gated ? take(base, &off, BH) : NULL;
    a->m_att = take(base, &off, NDd);
    a->u = take(base, &off, ND);
    a->a2 = take(base, &off, ND);
    a->mu2 = take(base, &off, N);
    a->rs2 = take(base, &off, N);
    a->f1 = take(base, &off, N * F);
    a->g = take(base, &off, N * F);
    a->m_ff = take(base, &off, NDd);
  }
  w->hf = take(base, &off, ND);
  w->mu_f = take(base, &off, N);
  w->rs_f = take(base, &off, N);
  w->dhf = take(base, &off, ND);
  w->pooled = take(base, &off, B * D);
  w->pooled_d = take(base, &off, BDd);
  w->m_pool = take(base, &off, BDd);
  w->dpooled = take(base, &off, B * D);
  w->s_bd = take(base, &off, B * D);
  w->logits = take(base, &off, B * C);
  w->dlogits = take(base, &off, B * C);
  w->e = gated ? take(base, &off, B * D) : NULL;
  w->de = gated ? take(base, &off, B * D) : NULL;
  w->s_bh = gated ? take(base, &off, BH) : NULL;
  w->s_qkv = take(base, &off, 3 * ND);
  w->s_dqkv = take(base, &off, 3 * ND);
  w->s_ctxh = take(base, &off, ND);
  w->s_nd1 = take(base, &off, ND);
  w->s_nd2 = take(base, &off, ND);
  w->s_nd3 = take(base, &off, ND);
  w->s_nf = take(base, &off, N * F);
  w->s_tt = take(base, &off, A);
  return off;
}

void nn_tfm_work_free(nn_tfm_work *w) {
  if (!w) return;
  nn_backend *be = w->be;
  if (be && be->ops) {
    be->ops->release(be, w->block);
    if (!w->on_host) {
      be->ops->release(be, w->dparams);
      be->ops->release(be, w->d_ids);
      be->ops->release(be, w->d_mask);
      be->ops->release(be, w->d_offs);
      be->ops->release(be, w->d_ng);
    }
  }
  free(w->h_mask);
  free(w->ng_list);
  free(w->ng_seen);
  free(w->mlm_block);
  free(w);
}

finch_status nn_tfm_work_init_on(nn_tfm_work **out, const nn_tfm *m, int Bmax, nn_backend *be, finch_err *err) {
  *out = NULL;
  if (!be) be = nn_backend_cpu();
  if (Bmax < 1 || Bmax > 65536) return finch_err_set(err, FINCH_EINVAL, "batch %d is outside [1, 65536]", Bmax);
  const int on_host = be->ops == nn_ops_cpu();
  if (!on_host && m->cfg.head_gates)
    return finch_err_set(err, FINCH_EDEVICE, "head gates run on the CPU only; the %s backend cannot run this encoder",
                         be->name);
  const size_t L = m->cfg.layers;
  nn_tfm_work *w = calloc(1, sizeof *w + 2 * (L + 1) * sizeof(float *) + L * sizeof(tfm_layer_acts));
  if (!w) return finch_err_set(err, FINCH_ENOMEM, "out of memory for a transformer work area");
  w->cfg = m->cfg;
  w->be = be;
  w->on_host = on_host;
  w->Bmax = Bmax;
  w->Tmax = (int)m->cfg.max_len;
  w->h = (float **)(w + 1);
  w->dh = w->h + (L + 1);
  w->layer = (tfm_layer_acts *)(w->dh + (L + 1));
  size_t n = layout(w, NULL);
  const size_t BT = (size_t)Bmax * w->Tmax;
  w->block = be->ops->alloc(be, n * sizeof(float));
  w->ng_list = malloc((m->cfg.buckets ? m->cfg.buckets : 1) * sizeof *w->ng_list);
  w->ng_seen = calloc(m->cfg.buckets ? m->cfg.buckets : 1, 1);
  int ok = w->block && w->ng_list && w->ng_seen;
  if (ok && !on_host) {
    w->dparams = be->ops->alloc(be, m->n_params * sizeof(float));
    w->d_ids = be->ops->alloc(be, BT * sizeof *w->d_ids);
    w->d_mask = be->ops->alloc(be, BT);
    w->d_offs = be->ops->alloc(be, (BT + 1) * sizeof *w->d_offs);
    w->h_mask = malloc(BT * m->cfg.dim * sizeof *w->h_mask);
    ok = w->dparams && w->d_ids && w->d_mask && w->d_offs && w->h_mask;
    if (ok) be->ops->upload(be, w->dparams, m->params, m->n_params * sizeof(float));
  }
  if (!ok) {
    finch_err why = {0};
    finch_status st = nn_backend_check(be, &why);
    nn_tfm_work_free(w);
    if (st) return finch_err_set(err, st, "%s", why.msg);
    return finch_err_set(err, FINCH_ENOMEM, "out of memory for a transformer work area (%zu MiB for batch %d x %u)",
                         n * sizeof(float) >> 20, Bmax, m->cfg.max_len);
  }
  layout(w, w->block);
  *out = w;
  return FINCH_OK;
}

finch_status nn_tfm_work_init(nn_tfm_work **out, const nn_tfm *m, int Bmax, finch_err *err) {
  return nn_tfm_work_init_on(out, m, Bmax, nn_backend_cpu(), err);
}

float *nn_tfm_work_params(nn_tfm_work *w) { return w->dparams; }

void nn_tfm_work_upload_params(nn_tfm_work *w, const nn_tfm *m) {
  if (w->dparams) w->be->ops->upload(w->be, w->dparams, m->params, m->n_params * sizeof(float));
}

void nn_tfm_work_download_params(nn_tfm_work *w, nn_tfm *m) {
  if (w->dparams) w->be->ops->download(w->be, m->params, w->dparams, m->n_params * sizeof(float));
}

/* The batch's arrays where the backend reads them: the batch's own on the
 * CPU, copies staged on a device. */
typedef struct {
  const int32_t *ids;
  const uint8_t *mask;
  const size_t *ng_offs;
  const uint32_t *ng_ids;
} staged_batch;

static staged_batch stage(nn_tfm_work *w, const nn_tfm_batch *b, int upload) {
  staged_batch s = {b->ids, b->mask, b->ng_offs, b->ng_ids};
  if (w->on_host) return s;
  nn_backend *be = w->be;
  const size_t N = (size_t)b->B * b->T;
  s.ids = w->d_ids;
  s.mask = w->d_mask;
  s.ng_offs = b->ng_offs ? w->d_offs : NULL;
  s.ng_ids = w->d_ng;
  if (!upload) return s;
  be->ops->upload(be, w->d_ids, b->ids, N * sizeof *b->ids);
  be->ops->upload(be, w->d_mask, b->mask, N);
  if (b->ng_offs) {
    size_t k = b->ng_offs[N];
    if (k > w->d_ng_cap) {
      be->ops->release(be, w->d_ng);
      w->d_ng_cap = k + k / 2;
      w->d_ng = be->ops->alloc(be, w->d_ng_cap * sizeof *w->d_ng);
      if (!w->d_ng) w->d_ng_cap = 0; /* recorded by the backend */
    }
    be->ops->upload(be, w->d_offs, b->ng_offs, (N + 1) * sizeof *b->ng_offs);
    if (w->d_ng) be->ops->upload(be, w->d_ng, b->ng_ids, k * sizeof *b->ng_ids);
    s.ng_ids = w->d_ng;
  }
  return s;
}

/* Dropout on x (n) with its mask drawn from rng into mask (n, backend
 * memory): drawn in place on the CPU, staged through the host on a device,
 * so both drop the same units. */
static void dropout(nn_tfm_work *w, float *x, float *mask, size_t n, float p, nn_rng *rng) {
  if (w->on_host) {
    nn_dropout_forward(x, mask, n, p, rng);
    return;
  }
  const float keep = 1.0f / (1.0f - p);
  for (size_t i = 0; i < n; i++) w->h_mask[i] = nn_rng_uniform(rng) < p ? 0.0f : keep;
  w->be->ops->upload(w->be, mask, w->h_mask, n * sizeof *mask);
  w->be->ops->mul(w->be, x, mask, n);
}

/* ---- profiling --------------------------------------------------------- */

/* Charges the time since *t to op and restarts *t. */
static inline void lap(nn_tfm_work *w, double *acc, int op, double *t) {
  if (!w->prof) return;
  double t1 = finch_clock_s();
  acc[op] += t1 - *t;
  *t = t1;
}

void nn_tfm_profile_enable(nn_tfm_work *w, int on) {
  w->prof = on;
  if (on) {
    memset(w->prof_fwd, 0, sizeof w->prof_fwd);
    memset(w->prof_bwd, 0, sizeof w->prof_bwd);
  }
}

void nn_tfm_profile_get(const nn_tfm_work *w, double *fwd, double *bwd) {
  memcpy(fwd, w->prof_fwd, sizeof w->prof_fwd);
  memcpy(bwd, w->prof_bwd, sizeof w->prof_bwd);
}

const char *nn_tfm_profile_name(int op) {
  static const char *names[NN_TFM_OP_COUNT] = {"embed", "layernorm", "qkv gemm", "attention", "out proj",
                                               "ff1 gemm", "gelu", "ff2 gemm", "residual+dropout",
                                               "pool+head", "mlm head", "zero grads"};
  return op >= 0 && op < NN_TFM_OP_COUNT ? names[op] : "?";
}

/* ---- forward ----------------------------------------------------------- */

#define PA(off) (m->params + (off))

/* The head gates of every layer from the masked mean of h0: e (B,D);
 * gate_l (B,Hh) = sigmoid(e gate_w_l^T + gate_b_l). */
static void gates_forward(const nn_tfm *m, nn_backend *be, nn_tfm_work *w, const uint8_t *mask, int B, int T) {
  const int D = (int)m->cfg.dim, Hh = (int)m->cfg.heads;
  nn_pool_mean_forward(w->h[0], mask, B, T, D, w->e); /* e (B,D) */
  for (uint32_t l = 0; l < m->cfg.layers; l++) {
    float *g = w->layer[l].gate;
    nn_linear_forward(be, w->e, PA(m->layer[l].gate_w), PA(m->layer[l].gate_b), B, D, Hh, g); /* (B,Hh) */
    for (int i = 0; i < B * Hh; i++) g[i] = 1.0f / (1.0f + expf(-g[i]));
  }
}

void nn_tfm_forward(const nn_tfm *m, nn_tfm_work *w, const nn_tfm_batch *b, int train, nn_rng *rng) {
  nn_backend *be = w->be;
  const nn_ops *op = be->ops;
  const nn_tfm_config *c = &m->cfg;
  const int B = b->B, T = b->T, D = (int)c->dim, F = (int)c->ff, Hh = (int)c->heads, Dh = D / Hh;
  const int C = (int)c->n_labels, L = (int)c->layers, N = B * T;
  const size_t ND = (size_t)N * D, A = (size_t)B * Hh * T * T;
  const float p = c->dropout;
  const float *P = w->dparams ? w->dparams : m->params;
  double *acc = w->prof_fwd, t = w->prof ? finch_clock_s() : 0.0;
  w->B = B;
  w->T = T;
  w->P = 0;
  w->drop = train && p > 0.0f && rng;

  /* Gradient inputs start at zero; only the (B,T) part is ever read. */
  for (int l = 0; l <= L; l++) op->zero(be, w->dh[l], ND * sizeof(float));
  for (int l = 0; l < L; l++) op->zero(be, w->layer[l].datt, A * sizeof(float));
  op->zero(be, w->dpooled, (size_t)B * D * sizeof(float));
  op->zero(be, w->dlogits, (size_t)B * C * sizeof(float));
  if (c->head_gates)
    for (int l = 0; l < L; l++) memset(w->layer[l].dgate, 0, (size_t)B * Hh * sizeof(float));
  lap(w, acc, NN_TFM_OP_ZERO, &t);

  /* embeddings, and the n-gram rows touched */
  for (size_t i = 0; i < w->ng_n; i++) w->ng_seen[w->ng_list[i]] = 0;
  w->ng_n = 0;
  const int use_ng = c->buckets > 0 && b->ng_offs != NULL;
  if (use_ng)
    for (size_t k = b->ng_offs[0]; k < b->ng_offs[N]; k++) {
      uint32_t r = b->ng_ids[k];
      if (!w->ng_seen[r]) {
        w->ng_seen[r] = 1;
        w->ng_list[w->ng_n++] = r;
      }
    }
  const staged_batch sb = stage(w, b, 1);
  op->tok_embed_forward(be, P + m->tok_emb, P + m->pos_emb, use_ng ? P + m->ng_emb : NULL, D, sb.ids,
                        use_ng ? sb.ng_offs : NULL, sb.ng_ids, B, T, w->x0); /* x0 (N,D) */
  lap(w, acc, NN_TFM_OP_EMBED, &t);
  op->layernorm_forward(be, w->x0, P + m->ln_emb_g, P + m->ln_emb_b, N, D, w->h[0], w->mu_e, w->rs_e);
  lap(w, acc, NN_TFM_OP_LN, &t);
  if (w->drop) dropout(w, w->h[0], w->m_h0, ND, p, rng); /* h0 (N,D) */
  lap(w, acc, NN_TFM_OP_RESID, &t);
  if (c->head_gates) {
    gates_forward(m, be, w, b->mask, B, T); /* gate(l) (B,Hh); host memory */
    lap(w, acc, NN_TFM_OP_ATTN, &t);
  }

  for (int l = 0; l < L; l++) {
    const tfm_layer_offs *o = &m->layer[l];
    tfm_layer_acts *a = &w->layer[l];
    const float *h = w->h[l];
    op->layernorm_forward(be, h, P + o->ln1_g, P + o->ln1_b, N, D, a->a1, a->mu1, a->rs1); /* a1 (N,D) */
    lap(w, acc, NN_TFM_OP_LN, &t);
    op->linear_forward(be, a->a1, P + o->wqkv, P + o->bqkv, N, D, 3 * D, w->s_qkv);    /* (N,3D) */
    op->heads_split(be, w->s_qkv, 3, B, T, D, Hh, a->qkv);                             /* (3,B,Hh,T,Dh) */
    lap(w, acc, NN_TFM_OP_QKV, &t);
    op->attention_forward(be, a->qkv, sb.mask, B, T, Hh, Dh, a->att, w->s_ctxh);      /* (B,Hh,T,Dh) */
    if (c->head_gates) {
      nn_heads_merge(w->s_ctxh, 1, B, T, D, Hh, a->ctx_raw);                          /* (N,D) */
      nn_head_gate_forward(a->ctx_raw, a->gate, B, T, D, Hh, a->ctx);                 /* ctx (N,D) */
    } else {
      op->heads_merge(be, w->s_ctxh, 1, B, T, D, Hh, a->ctx);                         /* ctx (N,D) */
    }
    lap(w, acc, NN_TFM_OP_ATTN, &t);
    op->linear_forward(be, a->ctx, P + o->wo, P + o->bo, N, D, D, w->s_nd1);            /* (N,D) */
    lap(w, acc, NN_TFM_OP_OUTPROJ, &t);
    if (w->drop) dropout(w, w->s_nd1, a->m_att, ND, p, rng);
    op->add(be, h, w->s_nd1, a->u, ND);                                                 /* u (N,D) */
    lap(w, acc, NN_TFM_OP_RESID, &t);
    op->layernorm_forward(be, a->u, P + o->ln2_g, P + o->ln2_b, N, D, a->a2, a->mu2, a->rs2);
    lap(w, acc, NN_TFM_OP_LN, &t);
    op->linear_forward(be, a->a2, P + o->w1, P + o->b1, N, D, F, a->f1);                /* f1 (N,F) */
    lap(w, acc, NN_TFM_OP_FF1, &t);
    op->gelu_forward(be, a->f1, a->g, (size_t)N * F);                                   /* g (N,F) */
    lap(w, acc, NN_TFM_OP_GELU, &t);
    op->linear_forward(be, a->g, P + o->w2, P + o->b2, N, F, D, w->s_nd1);              /* (N,D) */
    lap(w, acc, NN_TFM_OP_FF2, &t);
    if (w->drop) dropout(w, w->s_nd1, a->m_ff, ND, p, rng);
    op->add(be, a->u, w->s_nd1, w->h[l + 1], ND);                                       /* h_{l+1} (N,D) */
    lap(w, acc, NN_TFM_OP_RESID, &t);
  }

  op->layernorm_forward(be, w->h[L], P + m->ln_f_g, P + m->ln_f_b, N, D, w->hf, w->mu_f, w->rs_f); /* hf */
  lap(w, acc, NN_TFM_OP_LN, &t);
  if (c->pool == NN_POOL_CLS) op->pool_cls_forward(be, w->hf, B, T, D, w->pooled);      /* pooled (B,D) */
  else op->pool_mean_forward(be, w->hf, sb.mask, B, T, D, w->pooled);
  if (C > 0) {
    const float *pin = w->pooled;
    if (w->drop) {
      op->copy(be, w->pooled_d, w->pooled, (size_t)B * D * sizeof(float));
      dropout(w, w->pooled_d, w->m_pool, (size_t)B * D, p, rng);
      pin = w->pooled_d;
    }
    op->linear_forward(be, pin, P + m->cls_w, P + m->cls_b, B, D, C, w->logits);        /* logits (B,C) */
  }
  lap(w, acc, NN_TFM_OP_HEAD, &t);
}

const float *nn_tfm_logits(const nn_tfm_work *w) { return w->logits; }
const float *nn_tfm_pooled(const nn_tfm_work *w) { return w->pooled; }
const float *nn_tfm_hidden(const nn_tfm_work *w, int l) { return w->h[l]; }
const float *nn_tfm_attn(const nn_tfm_work *w, int l) { return w->layer[l].att; }
float *nn_tfm_dlogits(nn_tfm_work *w) { return w->dlogits; }
float *nn_tfm_dpooled(nn_tfm_work *w) { return w->dpooled; }
float *nn_tfm_dhidden(nn_tfm_work *w, int l) { return w->dh[l]; }
float *nn_tfm_dattn(nn_tfm_work *w, int l) { return w->layer[l].datt; }
const float *nn_tfm_gates(const nn_tfm_work *w, int l) { return w->layer[l].gate; }
float *nn_tfm_dgates(nn_tfm_work *w, int l) { return w->layer[l].dgate; }
float *nn_tfm_dmlm(nn_tfm_work *w) { return w->dmlm; }

const uint32_t *nn_tfm_touched_ngrams(const nn_tfm_work *w, size_t *n) {
  *n = w->ng_n;
  return w->ng_list;
}

/* ---- the MLM head ------------------------------------------------------ */

/* Grows the MLM buffers to hold P positions; 0 on success. */
static int mlm_reserve(nn_tfm_work *w, int P) {
  if (P <= w->Pcap) return 0;
  const int most = w->Bmax * w->Tmax;
  int cap = w->Pcap ? w->Pcap : 64;
  while (cap < P) cap *= 2;
  if (cap > most) cap = most;
  const size_t V = w->cfg.vocab, D = w->cfg.dim, pc = (size_t)cap;
  float *blk = malloc((2 * pc * V + 2 * pc * D + pc) * sizeof(float));
  if (!blk) return -1;
  free(w->mlm_block);
  w->mlm_block = blk;
  w->Pcap = cap;
  w->mlm_logits = blk;
  w->dmlm = blk + pc * V;
  w->mlm_h = w->dmlm + pc * V;
  w->mlm_dh = w->mlm_h + pc * D;
  w->mlm_pos = (int32_t *)(w->mlm_dh + pc * D);
  return 0;
}

const float *nn_tfm_mlm_forward(const nn_tfm *m, nn_tfm_work *w, const int32_t *pos, int P) {
  nn_backend *be = w->be; /* the CPU: the head runs on host work areas only */
  if (!w->on_host || P < 1 || P > w->Bmax * w->Tmax || mlm_reserve(w, P) != 0) return NULL;
  const int D = (int)m->cfg.dim, V = (int)m->cfg.vocab;
  double t = w->prof ? finch_clock_s() : 0.0;
  for (int i = 0; i < P; i++)
    memcpy(w->mlm_h + (size_t)i * D, w->hf + (size_t)pos[i] * D, (size_t)D * sizeof(float)); /* (P,D) */
  memcpy(w->mlm_pos, pos, (size_t)P * sizeof *pos);
  nn_linear_forward(be, w->mlm_h, PA(m->tok_emb), PA(m->mlm_b), P, D, V, w->mlm_logits); /* (P,V) */
  memset(w->dmlm, 0, (size_t)P * V * sizeof(float));
  w->P = P;
  lap(w, w->prof_fwd, NN_TFM_OP_MLM, &t);
  return w->mlm_logits;
}

#undef PA

/* ---- backward ---------------------------------------------------------- */

#define PA(off) (m->params + (off))
#define GR(off) (grads + (off))

void nn_tfm_backward(const nn_tfm *m, nn_tfm_work *w, const nn_tfm_batch *b, float *grads) {
  nn_backend *be = w->be;
  const nn_ops *op = be->ops;
  const nn_tfm_config *c = &m->cfg;
  const int B = w->B, T = w->T, D = (int)c->dim, F = (int)c->ff, Hh = (int)c->heads, Dh = D / Hh;
  const int C = (int)c->n_labels, L = (int)c->layers, N = B * T, V = (int)c->vocab;
  const size_t ND = (size_t)N * D;
  const float *P = w->dparams ? w->dparams : m->params;
  const staged_batch sb = stage(w, b, 0); /* staged by the forward */
  double *acc = w->prof_bwd, t = w->prof ? finch_clock_s() : 0.0;

  /* head: dlogits -> dpooled -> dhf */
  op->zero(be, w->dhf, ND * sizeof(float));
  if (c->head_gates) memset(w->de, 0, (size_t)B * D * sizeof(float));
  if (C > 0) {
    const float *pin = w->drop ? w->pooled_d : w->pooled;
    op->linear_backward(be, w->dlogits, pin, P + m->cls_w, B, D, C, w->s_bd, GR(m->cls_w), GR(m->cls_b));
    if (w->drop) op->mul(be, w->s_bd, w->m_pool, (size_t)B * D);
    op->acc(be, w->s_bd, w->dpooled, (size_t)B * D);
  }
  if (c->pool == NN_POOL_CLS) op->pool_cls_backward(be, w->dpooled, B, T, D, w->dhf);
  else op->pool_mean_backward(be, w->dpooled, sb.mask, B, T, D, w->dhf);
  lap(w, acc, NN_TFM_OP_HEAD, &t);
  if (w->P > 0) { /* host memory: nn_tfm_mlm_forward runs on the CPU only */
    nn_linear_backward_acc(be, w->dmlm, w->mlm_h, PA(m->tok_emb), w->P, D, V, w->mlm_dh, GR(m->tok_emb),
                           GR(m->mlm_b));
    for (int i = 0; i < w->P; i++) {
      float *dst = w->dhf + (size_t)w->mlm_pos[i] * D;
      const float *src = w->mlm_dh + (size_t)i * D;
      for (int d = 0; d < D; d++) dst[d] += src[d];
    }
    lap(w, acc, NN_TFM_OP_MLM, &t);
  }
  op->layernorm_backward(be, w->dhf, w->h[L], P + m->ln_f_g, w->mu_f, w->rs_f, N, D, w->dh[L], GR(m->ln_f_g),
                         GR(m->ln_f_b));
  lap(w, acc, NN_TFM_OP_LN, &t);

  for (int l = L - 1; l >= 0; l--) {
    const tfm_layer_offs *o = &m->layer[l];
    const tfm_layer_acts *a = &w->layer[l];
    const float *dH = w->dh[l + 1]; /* (N,D) complete gradient of h_{l+1} */
    /* FF block: h_{l+1} = u + drop(W2 GELU(W1 a2 + b1) + b2) */
    const float *df2 = dH;
    if (w->drop) {
      op->copy(be, w->s_nd1, dH, ND * sizeof(float));
      op->mul(be, w->s_nd1, a->m_ff, ND);
      df2 = w->s_nd1;
    }
    lap(w, acc, NN_TFM_OP_RESID, &t);
    op->linear_backward(be, df2, a->g, P + o->w2, N, F, D, w->s_nf, GR(o->w2), GR(o->b2)); /* dg (N,F) */
    lap(w, acc, NN_TFM_OP_FF2, &t);
    op->gelu_backward(be, a->f1, w->s_nf, w->s_nf, (size_t)N * F);                         /* df1 (N,F) */
    lap(w, acc, NN_TFM_OP_GELU, &t);
    op->linear_backward(be, w->s_nf, a->a2, P + o->w1, N, D, F, w->s_nd2, GR(o->w1), GR(o->b1)); /* da2 */
    lap(w, acc, NN_TFM_OP_FF1, &t);
    op->copy(be, w->s_nd3, dH, ND * sizeof(float));                                         /* du (N,D) */
    op->layernorm_backward(be, w->s_nd2, a->u, P + o->ln2_g, a->mu2, a->rs2, N, D, w->s_nd3, GR(o->ln2_g),
                           GR(o->ln2_b));
    lap(w, acc, NN_TFM_OP_LN, &t);
    /* attention block: u = h_l + drop(ctx Wo^T + bo) */
    const float *dao = w->s_nd3;
    if (w->drop) {
      op->copy(be, w->s_nd1, w->s_nd3, ND * sizeof(float));
      op->mul(be, w->s_nd1, a->m_att, ND);
      dao = w->s_nd1;
    }
    lap(w, acc, NN_TFM_OP_RESID, &t);
    op->linear_backward(be, dao, a->ctx, P + o->wo, N, D, D, w->s_nd2, GR(o->wo), GR(o->bo)); /* dctx */
    lap(w, acc, NN_TFM_OP_OUTPROJ, &t);
    if (c->head_gates) { /* host memory: gates need the CPU */
      /* ctx = g * ctx_raw: dg (B,Hh) from the context plus the caller's
       * dgates, through the sigmoid into gate_w, gate_b and de (B,D). */
      float *dz = w->s_bh;
      memset(dz, 0, (size_t)B * Hh * sizeof(float));
      nn_head_gate_backward(w->s_nd2, a->ctx_raw, a->gate, B, T, D, Hh, w->s_nd2, dz); /* dctx_raw */
      for (int i = 0; i < B * Hh; i++) dz[i] = (dz[i] + a->dgate[i]) * a->gate[i] * (1.0f - a->gate[i]);
      nn_linear_backward_acc(be, dz, w->e, PA(o->gate_w), B, D, Hh, NULL, GR(o->gate_w), GR(o->gate_b));
      be->ops->gemm_host(be, 0, 0, B, D, Hh, 1.0f, dz, PA(o->gate_w), 1.0f, w->de); /* de += dz gate_w */
      lap(w, acc, NN_TFM_OP_ATTN, &t);
    }
    op->heads_split(be, w->s_nd2, 1, B, T, D, Hh, w->s_ctxh);
    op->attention_backward(be, w->s_ctxh, a->datt, a->qkv, a->att, B, T, Hh, Dh, w->s_dqkv, w->s_tt);
    op->heads_merge(be, w->s_dqkv, 3, B, T, D, Hh, w->s_qkv);                                 /* (N,3D) */
    lap(w, acc, NN_TFM_OP_ATTN, &t);
    op->linear_backward(be, w->s_qkv, a->a1, P + o->wqkv, N, D, 3 * D, w->s_nd2, GR(o->wqkv),
                        GR(o->bqkv));                                                          /* da1 */
    lap(w, acc, NN_TFM_OP_QKV, &t);
    float *dh = w->dh[l];
    op->acc(be, w->s_nd3, dh, ND);
    lap(w, acc, NN_TFM_OP_RESID, &t);
    op->layernorm_backward(be, w->s_nd2, w->h[l], P + o->ln1_g, a->mu1, a->rs1, N, D, dh, GR(o->ln1_g),
                           GR(o->ln1_b));
    lap(w, acc, NN_TFM_OP_LN, &t);
  }

  if (c->head_gates) nn_pool_mean_backward(w->de, b->mask, B, T, D, w->dh[0]); /* e = mean of h0 */
  if (w->drop) op->mul(be, w->dh[0], w->m_h0, ND);
  op->zero(be, w->s_nd2, ND * sizeof(float));
  op->layernorm_backward(be, w->dh[0], w->x0, P + m->ln_emb_g, w->mu_e, w->rs_e, N, D, w->s_nd2,
                         GR(m->ln_emb_g), GR(m->ln_emb_b)); /* dx0 (N,D) */
  lap(w, acc, NN_TFM_OP_LN, &t);
  const int use_ng = c->buckets > 0 && b->ng_offs != NULL;
  op->tok_embed_backward(be, w->s_nd2, D, sb.ids, use_ng ? sb.ng_offs : NULL, sb.ng_ids, B, T, GR(m->tok_emb),
                         GR(m->pos_emb), use_ng ? GR(m->ng_emb) : NULL);
  lap(w, acc, NN_TFM_OP_EMBED, &t);
}

#undef PA
#undef GR
