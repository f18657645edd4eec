/* The pretrained BERT encoder (nn/bert.h): its configuration from
 * config.json, its weights from model.safetensors, the work area, and the
 * forward pass, built from the ops of the work area's backend (nn/ops.h) so
 * that the CPU and a device run the same calls. */
#include "nn/bert.h"

#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "core/json.h"
#include "nn/ops.h"
#include "nn/safetensors.h"

typedef struct {
  size_t wqkv, bqkv, wo, bo, ln1_g, ln1_b, w1, b1, w2, b2, ln2_g, ln2_b;
} bert_layer_offs;

struct nn_bert {
  nn_bert_config cfg;
  size_t n_params;
  float *params;
  size_t n_tensors;
  nn_bert_tensor *tensors; /* one allocation: tensors (n_tensors), then layer (L) */
  bert_layer_offs *layer;
  size_t tok_emb, pos_emb, ln_emb_g, ln_emb_b;
};

/* ---- the configuration ------------------------------------------------- */

finch_status nn_bert_config_check(const nn_bert_config *c, finch_err *err) {
  if (c->vocab < 1 || c->vocab > (1u << 24))
    return finch_err_set(err, FINCH_EINVAL, "vocab_size %u is outside [1, 2^24]", c->vocab);
  if (c->max_pos < 2 || c->max_pos > 8192)
    return finch_err_set(err, FINCH_EINVAL, "max_position_embeddings %u is outside [2, 8192]", c->max_pos);
  if (c->type_vocab < 1 || c->type_vocab > 1024)
    return finch_err_set(err, FINCH_EINVAL, "type_vocab_size %u is outside [1, 1024]", c->type_vocab);
  if (c->dim < 1 || c->dim > 8192) return finch_err_set(err, FINCH_EINVAL, "hidden_size %u is outside [1, 8192]", c->dim);
  if (c->layers < 1 || c->layers > 64)
    return finch_err_set(err, FINCH_EINVAL, "num_hidden_layers %u is outside [1, 64]", c->layers);
  if (c->heads < 1 || c->dim % c->heads != 0)
    return finch_err_set(err, FINCH_EINVAL, "num_attention_heads %u must be >= 1 and divide hidden_size %u", c->heads,
                         c->dim);
  if (c->ff < 1 || c->ff > 65536)
    return finch_err_set(err, FINCH_EINVAL, "intermediate_size %u is outside [1, 65536]", c->ff);
  if (!(c->ln_eps > 0.0f && c->ln_eps <= 0.1f))
    return finch_err_set(err, FINCH_EINVAL, "layer_norm_eps %g is outside (0, 0.1]", (double)c->ln_eps);
  return FINCH_OK;
}

/* root[field] as a u32 into *out; NULL, or why not. */
static const char *json_u32(json_t *root, const char *field, uint32_t *out) {
  json_t *v = json_object_get(root, field);
  if (!v) return "missing";
  if (!json_is_integer(v)) return "not an integer";
  json_int_t x = json_integer_value(v);
  if (x < 0 || x > (json_int_t)UINT32_MAX) return "out of range";
  *out = (uint32_t)x;
  return NULL;
}

finch_status nn_bert_config_read(const char *path, nn_bert_config *c, finch_err *err) {
  memset(c, 0, sizeof *c);
  json_t *root;
  finch_status st = finch_json_read_file(path, &root, err);
  if (st) return st;
  if (!json_is_object(root)) {
    st = finch_err_set(err, FINCH_EFORMAT, "%s: not a JSON object", path);
    goto done;
  }
  static const struct {
    const char *field;
    size_t off;
  } ints[] = {
      {"vocab_size", offsetof(nn_bert_config, vocab)},
      {"max_position_embeddings", offsetof(nn_bert_config, max_pos)},
      {"type_vocab_size", offsetof(nn_bert_config, type_vocab)},
      {"hidden_size", offsetof(nn_bert_config, dim)},
      {"num_hidden_layers", offsetof(nn_bert_config, layers)},
      {"num_attention_heads", offsetof(nn_bert_config, heads)},
      {"intermediate_size", offsetof(nn_bert_config, ff)},
  };
  for (size_t i = 0; i < sizeof ints / sizeof *ints; i++) {
    const char *why = json_u32(root, ints[i].field, (uint32_t *)((char *)c + ints[i].off));
    if (why) {
      st = finch_err_set(err, FINCH_EFORMAT, "%s: field %s: %s", path, ints[i].field, why);
      goto done;
    }
  }
  json_t *eps = json_object_get(root, "layer_norm_eps");
  if (!eps || !json_is_number(eps)) {
    st = finch_err_set(err, FINCH_EFORMAT, "%s: field layer_norm_eps: %s", path, eps ? "not a number" : "missing");
    goto done;
  }
  c->ln_eps = (float)json_number_value(eps);
  json_t *act = json_object_get(root, "hidden_act");
  if (!json_is_string(act) || strcmp(json_string_value(act), "gelu") != 0) {
    st = finch_err_set(err, FINCH_EFORMAT, "%s: field hidden_act: %s%s%s (only \"gelu\", the erf form, is supported)",
                       path, act ? (json_is_string(act) ? "\"" : "not a string") : "missing",
                       json_is_string(act) ? json_string_value(act) : "", json_is_string(act) ? "\"" : "");
    goto done;
  }
  if ((st = nn_bert_config_check(c, err)) != FINCH_OK) {
    finch_err_prefix(err, "%s", path);
    if (err) err->code = FINCH_EFORMAT;
    st = FINCH_EFORMAT;
  }
done:
  json_decref(root);
  return st;
}

/* ---- the model --------------------------------------------------------- */

static size_t add_tensor(nn_bert *m, const char *name, int layer, uint32_t rows, uint32_t cols, int decay) {
  return nn_param_add(m->tensors, &m->n_tensors, &m->n_params, name, layer, rows, cols, decay);
}

/* The layout nn/bert.h documents. */
static void build_table(nn_bert *m) {
  const nn_bert_config *c = &m->cfg;
  const uint32_t D = c->dim, F = c->ff;
  m->tok_emb = add_tensor(m, "tok_emb", -1, c->vocab, D, 1);
  m->pos_emb = add_tensor(m, "pos_emb", -1, c->max_pos, D, 1);
  m->ln_emb_g = add_tensor(m, "ln_emb_g", -1, D, 1, 0);
  m->ln_emb_b = add_tensor(m, "ln_emb_b", -1, D, 1, 0);
  for (uint32_t l = 0; l < c->layers; l++) {
    bert_layer_offs *o = &m->layer[l];
    const int li = (int)l;
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
}

static finch_status model_alloc(nn_bert **out, const nn_bert_config *c, finch_err *err) {
  *out = NULL;
  finch_status st = nn_bert_config_check(c, err);
  if (st != FINCH_OK) return st;
  const size_t nt = 4 + 12 * (size_t)c->layers;
  nn_bert *m = calloc(1, sizeof *m);
  if (m) m->tensors = malloc(nt * sizeof(nn_bert_tensor) + c->layers * sizeof(bert_layer_offs));
  if (!m || !m->tensors) {
    nn_bert_free(m);
    return finch_err_set(err, FINCH_ENOMEM, "out of memory for a BERT tensor table");
  }
  m->cfg = *c;
  m->layer = (bert_layer_offs *)(m->tensors + nt);
  build_table(m);
  m->params = malloc(m->n_params * sizeof(float));
  if (!m->params) {
    size_t np = m->n_params;
    nn_bert_free(m);
    return finch_err_set(err, FINCH_ENOMEM, "out of memory for a BERT encoder of %zu parameters", np);
  }
  *out = m;
  return FINCH_OK;
}

finch_status nn_bert_create_from_params(nn_bert **out, const nn_bert_config *c, const float *params,
                                        size_t n_params, finch_err *err) {
  finch_status st = model_alloc(out, c, err);
  if (st != FINCH_OK) return st;
  if (n_params != (*out)->n_params) {
    size_t want = (*out)->n_params;
    nn_bert_free(*out);
    *out = NULL;
    return finch_err_set(err, FINCH_EFORMAT, "BERT parameter block has %zu floats, its config needs %zu", n_params,
                         want);
  }
  memcpy((*out)->params, params, n_params * sizeof(float));
  return FINCH_OK;
}

void nn_bert_free(nn_bert *m) {
  if (!m) return;
  free(m->params);
  free(m->tensors);
  free(m);
}

const nn_bert_config *nn_bert_get_config(const nn_bert *m) { return &m->cfg; }
const float *nn_bert_params(const nn_bert *m) { return m->params; }
float *nn_bert_params_mut(nn_bert *m) { return m->params; }
size_t nn_bert_n_params(const nn_bert *m) { return m->n_params; }
size_t nn_bert_n_tensors(const nn_bert *m) { return m->n_tensors; }
const nn_bert_tensor *nn_bert_tensor_at(const nn_bert *m, size_t i) {
  return i < m->n_tensors ? &m->tensors[i] : NULL;
}

/* Copies the F32 tensor name of shape (rows[,cols]) to dst. */
static finch_status st_copy(const nn_st_file_t *f, const char *name, uint32_t rows, uint32_t cols, float *dst,
                            finch_err *err) {
  const int64_t want[2] = {rows, cols};
  const float *src = NULL;
  finch_status st = nn_st_f32(f, name, cols ? 2 : 1, want, &src, NULL, err);
  if (st == FINCH_OK) memcpy(dst, src, (size_t)rows * (cols ? cols : 1) * sizeof(float));
  return st;
}

finch_status nn_bert_from_safetensors(nn_bert **out, const nn_bert_config *c, const char *path, finch_err *err) {
  *out = NULL;
  nn_st_file_t *f = NULL;
  nn_bert *m = NULL;
  float *type = NULL;
  finch_status st = nn_st_open(path, &f, err);
  if (st == FINCH_OK) st = model_alloc(&m, c, err);
  if (st != FINCH_OK) goto done;
  const uint32_t D = c->dim, F = c->ff;
  float *P = m->params;
  char name[128];
  if (!(type = malloc((size_t)c->type_vocab * D * sizeof *type))) {
    st = finch_err_set(err, FINCH_ENOMEM, "%s: out of memory", path);
    goto done;
  }
  if ((st = st_copy(f, "embeddings.word_embeddings.weight", c->vocab, D, P + m->tok_emb, err)) ||
      (st = st_copy(f, "embeddings.position_embeddings.weight", c->max_pos, D, P + m->pos_emb, err)) ||
      (st = st_copy(f, "embeddings.token_type_embeddings.weight", c->type_vocab, D, type, err)) ||
      (st = st_copy(f, "embeddings.LayerNorm.weight", D, 0, P + m->ln_emb_g, err)) ||
      (st = st_copy(f, "embeddings.LayerNorm.bias", D, 0, P + m->ln_emb_b, err)))
    goto done;
  for (size_t i = 0; i < (size_t)c->max_pos * D; i++) P[m->pos_emb + i] += type[i % D]; /* token type 0 */
  static const char *const qkv[3] = {"query", "key", "value"};
  for (uint32_t l = 0; l < c->layers; l++) {
    const bert_layer_offs *o = &m->layer[l];
    for (int s = 0; s < 3; s++) {
      snprintf(name, sizeof name, "encoder.layer.%u.attention.self.%s.weight", l, qkv[s]);
      if ((st = st_copy(f, name, D, D, P + o->wqkv + (size_t)s * D * D, err))) goto done;
      snprintf(name, sizeof name, "encoder.layer.%u.attention.self.%s.bias", l, qkv[s]);
      if ((st = st_copy(f, name, D, 0, P + o->bqkv + (size_t)s * D, err))) goto done;
    }
    const struct {
      const char *hf;
      size_t off;
      uint32_t rows, cols;
    } rest[] = {
        {"attention.output.dense.weight", o->wo, D, D}, {"attention.output.dense.bias", o->bo, D, 0},
        {"attention.output.LayerNorm.weight", o->ln1_g, D, 0}, {"attention.output.LayerNorm.bias", o->ln1_b, D, 0},
        {"intermediate.dense.weight", o->w1, F, D}, {"intermediate.dense.bias", o->b1, F, 0},
        {"output.dense.weight", o->w2, D, F}, {"output.dense.bias", o->b2, D, 0},
        {"output.LayerNorm.weight", o->ln2_g, D, 0}, {"output.LayerNorm.bias", o->ln2_b, D, 0},
    };
    for (size_t k = 0; k < sizeof rest / sizeof *rest; k++) {
      snprintf(name, sizeof name, "encoder.layer.%u.%s", l, rest[k].hf);
      if ((st = st_copy(f, name, rest[k].rows, rest[k].cols, P + rest[k].off, err))) goto done;
    }
  }
done:
  free(type);
  nn_st_close(f);
  if (st == FINCH_OK) *out = m;
  else nn_bert_free(m);
  return st;
}

static int file_exists(const char *path) {
  struct stat sb;
  return stat(path, &sb) == 0;
}

finch_status nn_bert_load_dir(nn_bert **out, const char *dir, finch_err *err) {
  *out = NULL;
  char cfg_path[4096], st_path[4096];
  snprintf(cfg_path, sizeof cfg_path, "%s/config.json", dir);
  snprintf(st_path, sizeof st_path, "%s/model.safetensors", dir);
  if (!file_exists(cfg_path) || !file_exists(st_path))
    return finch_err_set(err, FINCH_ENOTFOUND,
                         "%s: no pretrained checkpoint (config.json and model.safetensors); run "
                         "scripts/fetch-pretrained.sh",
                         dir);
  nn_bert_config c;
  finch_status st = nn_bert_config_read(cfg_path, &c, err);
  if (st == FINCH_OK) st = nn_bert_from_safetensors(out, &c, st_path, err);
  return st;
}

finch_status nn_bert_dropout_read(const char *path, float *hidden, float *attn, finch_err *err) {
  *hidden = *attn = 0.1f;
  json_t *root;
  finch_status st = finch_json_read_file(path, &root, err);
  if (st) return st;
  static const char *fields[2] = {"hidden_dropout_prob", "attention_probs_dropout_prob"};
  float *out[2] = {hidden, attn};
  for (int i = 0; i < 2 && st == FINCH_OK; i++) {
    json_t *v = json_is_object(root) ? json_object_get(root, fields[i]) : NULL;
    if (!v) continue;
    double x = json_is_number(v) ? json_number_value(v) : -1.0;
    if (!(x >= 0.0 && x <= 0.9))
      st = finch_err_set(err, FINCH_EFORMAT, "%s: field %s: not a number in [0, 0.9]", path, fields[i]);
    else
      *out[i] = (float)x;
  }
  json_decref(root);
  return st;
}

/* ---- the work area ----------------------------------------------------- */

struct nn_bert_work {
  nn_bert_config cfg;
  nn_backend *be;
  int on_host;     /* be's memory is host memory (the CPU table) */
  float *dparams;  /* the parameter block on a device; NULL = the model's own */
  int32_t *d_ids;  /* (Bmax,Tmax) a batch's ids and mask staged on a device */
  uint8_t *d_mask;
  int Bmax, Tmax;
  int B, T;        /* of the last forward */
  float *block;    /* the one allocation below */
  float *x, *h, *u, *s; /* (N,D) embeddings, hidden state, residual sum, sublayer output */
  float *qkv;      /* (N,3D) projected q | k | v */
  float *qkvh;     /* (3,B,Hh,T,Dh) the same, head-major */
  float *att;      /* (B,Hh,T,T) attention probabilities of the current layer */
  float *ctxh;     /* (B,Hh,T,Dh) attention context, head-major */
  float *ctx;      /* (N,D) the context, heads merged */
  float *f, *g;    /* (N,F) feed-forward input of GELU and its output */
  float *mu, *rs;  /* (N) layer-norm row statistics (unused by inference, kept by the op) */
  float *pooled;   /* (B,D) */
};

/* Hands out n floats at *off of base, 64-byte aligned; with base NULL it
 * only counts, so one function both sizes and carves the allocation. */
static float *take(float *base, size_t *off, size_t n) {
  float *p = base ? base + *off : NULL;
  *off += (n + 15) & ~(size_t)15;
  return p;
}

static size_t layout(nn_bert_work *w, float *base) {
  const nn_bert_config *c = &w->cfg;
  const size_t B = (size_t)w->Bmax, N = B * (size_t)w->Tmax, D = c->dim, F = c->ff;
  const size_t A = B * c->heads * (size_t)w->Tmax * (size_t)w->Tmax;
  size_t off = 0;
  w->x = take(base, &off, N * D);
  w->h = take(base, &off, N * D);
  w->u = take(base, &off, N * D);
  w->s = take(base, &off, N * D);
  w->qkv = take(base, &off, 3 * N * D);
  w->qkvh = take(base, &off, 3 * N * D);
  w->att = take(base, &off, A);
  w->ctxh = take(base, &off, N * D);
  w->ctx = take(base, &off, N * D);
  w->f = take(base, &off, N * F);
  w->g = take(base, &off, N * F);
  w->mu = take(base, &off, N);
  w->rs = take(base, &off, N);
  w->pooled = take(base, &off, B * D);
  return off;
}

void nn_bert_work_free(nn_bert_work *w) {
  if (!w) return;
  nn_backend *be = w->be;
  be->ops->release(be, w->block);
  if (!w->on_host) {
    be->ops->release(be, w->dparams);
    be->ops->release(be, w->d_ids);
    be->ops->release(be, w->d_mask);
  }
  free(w);
}

finch_status nn_bert_work_init(nn_bert_work **out, const nn_bert *m, int Bmax, int Tmax, nn_backend *be,
                               finch_err *err) {
  *out = NULL;
  if (!be) be = nn_backend_cpu();
  if (Bmax < 1 || Bmax > 65536) return finch_err_set(err, FINCH_EINVAL, "BERT batch %d is outside [1, 65536]", Bmax);
  if (Tmax < 1 || (uint32_t)Tmax > m->cfg.max_pos)
    return finch_err_set(err, FINCH_EINVAL, "BERT sequence length %d is outside [1, %u]", Tmax, m->cfg.max_pos);
  nn_bert_work *w = calloc(1, sizeof *w);
  if (!w) return finch_err_set(err, FINCH_ENOMEM, "out of memory for a BERT work area");
  w->cfg = m->cfg;
  w->be = be;
  w->on_host = be->ops == nn_ops_cpu();
  w->Bmax = Bmax;
  w->Tmax = Tmax;
  const size_t n = layout(w, NULL), BT = (size_t)Bmax * Tmax;
  w->block = be->ops->alloc(be, n * sizeof(float));
  int ok = w->block != NULL;
  if (ok && !w->on_host) {
    w->dparams = be->ops->alloc(be, m->n_params * sizeof(float));
    w->d_ids = be->ops->alloc(be, BT * sizeof *w->d_ids);
    w->d_mask = be->ops->alloc(be, BT);
    ok = w->dparams && w->d_ids && w->d_mask;
    if (ok) be->ops->upload(be, w->dparams, m->params, m->n_params * sizeof(float));
  }
  if (!ok) {
    finch_err why = {0};
    finch_status st = nn_backend_check(be, &why);
    nn_bert_work_free(w);
    if (st) return finch_err_set(err, st, "%s", why.msg);
    return finch_err_set(err, FINCH_ENOMEM, "out of memory for a BERT work area (%zu MiB for batch %d x %d)",
                         n * sizeof(float) >> 20, Bmax, Tmax);
  }
  layout(w, w->block);
  *out = w;
  return FINCH_OK;
}

const float *nn_bert_pooled(const nn_bert_work *w) { return w->pooled; }
const float *nn_bert_hidden(const nn_bert_work *w) { return w->h; }

void nn_bert_pooled_host(const nn_bert_work *w, float *out) {
  w->be->ops->download(w->be, out, w->pooled, (size_t)w->B * w->cfg.dim * sizeof(float));
}

/* ---- forward ----------------------------------------------------------- */

finch_status nn_bert_forward(const nn_bert *m, nn_bert_work *w, const int32_t *ids, const uint8_t *mask, int B,
                             int T, finch_err *err) {
  const nn_bert_config *c = &m->cfg;
  if (B < 1 || B > w->Bmax || T < 1 || T > w->Tmax)
    return finch_err_set(err, FINCH_EINVAL, "BERT batch %d x %d is outside the work area's %d x %d", B, T, w->Bmax,
                         w->Tmax);
  for (int b = 0; b < B; b++) {
    if (!mask[(size_t)b * T])
      return finch_err_set(err, FINCH_EINVAL, "BERT batch row %d: position 0 is padding", b);
    for (int t = 0; t < T; t++)
      if (ids[(size_t)b * T + t] < 0 || (uint32_t)ids[(size_t)b * T + t] >= c->vocab)
        return finch_err_set(err, FINCH_EINVAL, "BERT batch row %d position %d: token id %d outside [0, %u)", b, t,
                             ids[(size_t)b * T + t], c->vocab);
  }
  nn_backend *be = w->be;
  const nn_ops *op = be->ops;
  const int D = (int)c->dim, F = (int)c->ff, Hh = (int)c->heads, Dh = D / Hh, N = B * T;
  const size_t ND = (size_t)N * D;
  const float eps = c->ln_eps;
  const float *P = w->dparams ? w->dparams : m->params;
  const int32_t *d_ids = ids;
  const uint8_t *d_mask = mask;
  if (!w->on_host) {
    op->upload(be, w->d_ids, ids, (size_t)N * sizeof *ids);
    op->upload(be, w->d_mask, mask, (size_t)N);
    d_ids = w->d_ids;
    d_mask = w->d_mask;
  }
  w->B = B;
  w->T = T;

  op->tok_embed_forward(be, P + m->tok_emb, P + m->pos_emb, NULL, D, d_ids, NULL, NULL, B, T, w->x); /* x (N,D) */
  op->layernorm_eps_forward(be, w->x, P + m->ln_emb_g, P + m->ln_emb_b, N, D, eps, w->h, w->mu, w->rs); /* h (N,D) */
  for (uint32_t l = 0; l < c->layers; l++) {
    const bert_layer_offs *o = &m->layer[l];
    op->linear_forward(be, w->h, P + o->wqkv, P + o->bqkv, N, D, 3 * D, w->qkv);          /* qkv (N,3D) */
    op->heads_split(be, w->qkv, 3, B, T, D, Hh, w->qkvh);                                 /* (3,B,Hh,T,Dh) */
    op->attention_forward(be, w->qkvh, d_mask, B, T, Hh, Dh, w->att, w->ctxh);           /* ctxh (B,Hh,T,Dh) */
    op->heads_merge(be, w->ctxh, 1, B, T, D, Hh, w->ctx);                                 /* ctx (N,D) */
    op->linear_forward(be, w->ctx, P + o->wo, P + o->bo, N, D, D, w->s);                  /* s (N,D) */
    op->add(be, w->h, w->s, w->u, ND);                                                    /* u (N,D) */
    op->layernorm_eps_forward(be, w->u, P + o->ln1_g, P + o->ln1_b, N, D, eps, w->h, w->mu, w->rs); /* h (N,D) */
    op->linear_forward(be, w->h, P + o->w1, P + o->b1, N, D, F, w->f);                    /* f (N,F) */
    op->gelu_forward(be, w->f, w->g, (size_t)N * F);                                      /* g (N,F) */
    op->linear_forward(be, w->g, P + o->w2, P + o->b2, N, F, D, w->s);                    /* s (N,D) */
    op->add(be, w->h, w->s, w->u, ND);                                                    /* u (N,D) */
    op->layernorm_eps_forward(be, w->u, P + o->ln2_g, P + o->ln2_b, N, D, eps, w->h, w->mu, w->rs); /* h (N,D) */
  }
  op->pool_mean_forward(be, w->h, d_mask, B, T, D, w->pooled);                            /* pooled (B,D) */
  return nn_backend_check(be, err);
}
