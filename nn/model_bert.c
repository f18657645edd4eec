/* The "bert" architecture behind nn_model: a pretrained BERT encoder
 * (nn/bert.h), its WordPiece tokenizer (nn/bert_tokenizer.h) and a linear
 * head on the mean-pooled vector. File sections after the head (documented
 * byte by byte in nn/bert.h): "BERTCFG", "BERTTOK", "BERTPAR", "BERTHEAD". */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "nn/bert.h"
#include "nn/bert_tokenizer.h"
#include "nn/model_impl.h"

typedef struct {
  nn_bert *enc;
  nn_bert_tok_t *tok;
  unsigned char *tok_json; /* the tokenizer.json bytes, written back verbatim */
  size_t tok_len;
  int T;       /* tokens per text, [CLS] and [SEP] included */
  float *head; /* Wh (C,D), then bh (C) */
} bert_impl;

static void bert_free(void *p) {
  bert_impl *b = p;
  if (!b) return;
  nn_bert_free(b->enc);
  nn_bert_tok_free(b->tok);
  free(b->tok_json);
  free(b->head);
  free(b);
}

static const bert_impl *impl_of(const nn_model *m) { return m->vt == &nn__bert_vt ? m->impl : NULL; }

const nn_bert *nn_model_bert(const nn_model *m) { return impl_of(m) ? impl_of(m)->enc : NULL; }

static size_t bert_n_params(const nn_model *m) {
  const bert_impl *b = m->impl;
  return nn_bert_n_params(b->enc) + m->n_labels * (nn_bert_get_config(b->enc)->dim + 1);
}

/* Wraps the parts (taken, also on failure) into a model. */
static finch_status bert_wrap(nn_model **out, bert_impl *b, const char *const *labels, size_t n_labels,
                              finch_err *err) {
  finch_status st = nn__model_new(out, &nn__bert_vt, b, labels, n_labels, err);
  if (st != FINCH_OK) bert_free(b);
  return st;
}

/* Checks that the parts fit together; NULL, or why not. */
static const char *parts_check(const bert_impl *b) {
  const nn_bert_config *c = nn_bert_get_config(b->enc);
  if ((uint32_t)nn_bert_tok_get_info(b->tok).vocab_size > c->vocab) return "the tokenizer has more ids than the encoder";
  if (b->T < 2 || (uint32_t)b->T > c->max_pos) return "the sequence length is outside [2, max_position_embeddings]";
  return NULL;
}

finch_status nn_model_bert_from_dir(nn_model **out, const char *dir, int seq_len, const char *const *labels,
                                    size_t n_labels, const float *head_w, const float *head_b, finch_err *err) {
  *out = NULL;
  if (n_labels < 1) return finch_err_set(err, FINCH_EINVAL, "a bert model needs at least one label");
  bert_impl *b = calloc(1, sizeof *b);
  if (!b) return finch_err_set(err, FINCH_ENOMEM, "out of memory for a bert model");
  b->T = seq_len;
  char path[4096];
  snprintf(path, sizeof path, "%s/tokenizer.json", dir);
  struct stat sb;
  finch_status st = nn_bert_load_dir(&b->enc, dir, err);
  if (st == FINCH_OK && stat(path, &sb) != 0)
    st = finch_err_set(err, FINCH_ENOTFOUND, "%s: no tokenizer.json; run scripts/fetch-pretrained.sh", dir);
  if (st == FINCH_OK) st = nn__file_read(path, &b->tok_json, &b->tok_len, err);
  if (st == FINCH_OK) st = nn_bert_tok_load_bytes(path, b->tok_json, b->tok_len, &b->tok, err);
  if (st != FINCH_OK) {
    bert_free(b);
    return st;
  }
  const char *why = parts_check(b);
  if (why) {
    bert_free(b);
    return finch_err_set(err, FINCH_EINVAL, "%s: %s (seq_len %d)", dir, why, seq_len);
  }
  const size_t D = nn_bert_get_config(b->enc)->dim;
  if (!(b->head = calloc(n_labels * (D + 1), sizeof *b->head))) {
    bert_free(b);
    return finch_err_set(err, FINCH_ENOMEM, "out of memory for a bert head");
  }
  if (head_w) memcpy(b->head, head_w, n_labels * D * sizeof *b->head);
  if (head_b) memcpy(b->head + n_labels * D, head_b, n_labels * sizeof *b->head);
  return bert_wrap(out, b, labels, n_labels, err);
}

/* ---- encoding and the pooled vectors --------------------------------------- */

typedef struct {
  int len;
  size_t row;
} bert_row;

/* Longest first; the row index breaks ties, so the order is the same on every run. */
static int by_len(const void *a, const void *b) {
  const bert_row *x = a, *y = b;
  if (x->len != y->len) return y->len - x->len;
  return x->row < y->row ? -1 : x->row > y->row;
}

/* Pooled vectors (n,D) of texts into out. ok (n), when not NULL, receives 1
 * for a text encoded and 0 for one that is not valid UTF-8, whose row of out
 * is left as it was; without ok such a text fails the call. */
static finch_status embed(const bert_impl *b, nn_backend *be, const char *const *texts, size_t n, int batch,
                          float *out, uint8_t *ok, finch_err *err) {
  const nn_bert_config *c = nn_bert_get_config(b->enc);
  const size_t D = c->dim, T = (size_t)b->T;
  const int32_t pad = nn_bert_tok_get_info(b->tok).pad_id;
  if (batch < 1) batch = 1;
  int32_t *ids = malloc((n ? n : 1) * T * sizeof *ids);
  bert_row *rows = malloc((n ? n : 1) * sizeof *rows);
  int32_t *bids = malloc((size_t)batch * T * sizeof *bids);
  uint8_t *bmask = malloc((size_t)batch * T);
  float *pooled = malloc((size_t)batch * D * sizeof *pooled);
  nn_bert_work *w = NULL;
  finch_status st = FINCH_OK;
  if (!ids || !rows || !bids || !bmask || !pooled) {
    st = finch_err_set(err, FINCH_ENOMEM, "out of memory encoding %zu texts", n);
    goto done;
  }
  size_t nv = 0;
  for (size_t i = 0; i < n; i++) {
    int len = 0;
    finch_err e2 = {0};
    finch_status s2 = nn_bert_tok_encode(b->tok, texts[i], strlen(texts[i]), b->T, ids + i * T, &len, &e2);
    if (ok) ok[i] = s2 == FINCH_OK;
    if (s2 == FINCH_OK) {
      rows[nv++] = (bert_row){len, i};
    } else if (!ok || s2 != FINCH_EFORMAT) {
      st = finch_err_set(err, s2, "text %zu: %s", i, e2.msg);
      goto done;
    }
  }
  if (nv == 0) goto done;
  qsort(rows, nv, sizeof *rows, by_len);
  const int Bmax = nv < (size_t)batch ? (int)nv : batch;
  if ((st = nn_bert_work_init(&w, b->enc, Bmax, rows[0].len, be, err)) != FINCH_OK) goto done;
  for (size_t r0 = 0; r0 < nv; r0 += (size_t)Bmax) {
    const int B = nv - r0 < (size_t)Bmax ? (int)(nv - r0) : Bmax, Tb = rows[r0].len;
    for (int k = 0; k < B; k++) {
      const bert_row *r = &rows[r0 + k];
      for (int t = 0; t < Tb; t++) {
        bids[(size_t)k * Tb + t] = t < r->len ? ids[r->row * T + t] : pad;
        bmask[(size_t)k * Tb + t] = t < r->len;
      }
    }
    if ((st = nn_bert_forward(b->enc, w, bids, bmask, B, Tb, err)) != FINCH_OK) goto done;
    nn_bert_pooled_host(w, pooled);
    for (int k = 0; k < B; k++) memcpy(out + rows[r0 + k].row * D, pooled + (size_t)k * D, D * sizeof *out);
  }
done:
  nn_bert_work_free(w);
  free(ids), free(rows), free(bids), free(bmask), free(pooled);
  return st;
}

finch_status nn_model_bert_embed(const nn_model *m, nn_backend *be, const char *const *texts, size_t n, int batch,
                                 float *out, finch_err *err) {
  const bert_impl *b = impl_of(m);
  if (!b) return finch_err_set(err, FINCH_EINVAL, "model is a \"%s\", not a \"bert\"", m->vt->name);
  return embed(b, be, texts, n, batch, out, NULL, err);
}

/* probs (C) = softmax((pooled Wh^T + bh) / temperature); returns the argmax. */
static int head_probs(const bert_impl *b, size_t C, const float *pooled, float temperature, float *probs) {
  const size_t D = nn_bert_get_config(b->enc)->dim;
  const float *W = b->head, *bias = b->head + C * D;
  float mx = -INFINITY;
  for (size_t k = 0; k < C; k++) {
    float z = bias[k];
    for (size_t d = 0; d < D; d++) z += W[k * D + d] * pooled[d];
    probs[k] = z / temperature;
    if (probs[k] > mx) mx = probs[k];
  }
  double s = 0;
  for (size_t k = 0; k < C; k++) s += (probs[k] = expf(probs[k] - mx));
  for (size_t k = 0; k < C; k++) probs[k] = (float)(probs[k] / s);
  return nn__argmax(probs, C);
}

static finch_status bert_predict_many(const nn_model *m, const char *const *texts, size_t n, float *probs,
                                      int32_t *pred, float temperature, finch_err *err) {
  const bert_impl *b = m->impl;
  const size_t C = m->n_labels, D = nn_bert_get_config(b->enc)->dim;
  float *pooled = malloc((n ? n : 1) * D * sizeof *pooled), *p = malloc(C * sizeof *p);
  uint8_t *ok = malloc(n ? n : 1);
  finch_status st = FINCH_OK;
  if (!pooled || !p || !ok) st = finch_err_set(err, FINCH_ENOMEM, "out of memory predicting %zu texts", n);
  if (st == FINCH_OK) st = embed(b, NULL, texts, n, 32, pooled, ok, err);
  for (size_t i = 0; st == FINCH_OK && i < n; i++) {
    int k = -1;
    if (ok[i]) k = head_probs(b, C, pooled + i * D, temperature, p);
    else nn__uniform(p, C);
    if (pred) pred[i] = k;
    if (probs) memcpy(probs + i * C, p, C * sizeof *p);
  }
  free(pooled), free(p), free(ok);
  return st;
}

static int bert_predict(const nn_model *m, const char *text, float *probs, float temperature) {
  const size_t C = m->n_labels;
  float *p = probs ? probs : malloc(C * sizeof *p);
  int32_t pred = -1;
  finch_err e2;
  if (!p || bert_predict_many(m, &text, 1, p, &pred, temperature, &e2) != FINCH_OK) pred = -1;
  if (pred < 0 && probs) nn__uniform(probs, C);
  if (p != probs) free(p);
  return pred;
}

/* ---- the file sections ------------------------------------------------------ */

static finch_status bert_write(const nn_model *m, nn_dtype dtype, nn_file_writer *w, finch_err *err) {
  (void)dtype, (void)err; /* always F32 (nn/bert.h) */
  const bert_impl *b = m->impl;
  const nn_bert_config *c = nn_bert_get_config(b->enc);
  const size_t C = m->n_labels;
  nn_file_bert fb;
  memset(&fb, 0, sizeof fb);
  fb.vocab = c->vocab, fb.max_pos = c->max_pos, fb.type_vocab = c->type_vocab, fb.dim = c->dim;
  fb.layers = c->layers, fb.heads = c->heads, fb.ff = c->ff, fb.n_labels = (uint32_t)C;
  fb.seq_len = (uint32_t)b->T, fb.ln_eps = c->ln_eps;
  nn__model_write_head(w, m);
  nn__file_section(w, "BERTCFG", &fb, sizeof fb);
  nn__file_section(w, "BERTTOK", b->tok_json, b->tok_len);
  nn__file_section(w, "BERTPAR", nn_bert_params(b->enc), nn_bert_n_params(b->enc) * sizeof(float));
  nn__file_section(w, "BERTHEAD", b->head, C * (c->dim + 1) * sizeof(float));
  return FINCH_OK;
}

static finch_status bert_load(nn_model **out, const nn_blob *secs, size_t n, const char *path, finch_err *err) {
  nn_model_head h;
  finch_status st = nn__model_read_head(secs, n, path, &h, err);
  if (st != FINCH_OK) return st;
  const nn_blob *cfg = nn__file_find(secs, n, "BERTCFG"), *tok = nn__file_find(secs, n, "BERTTOK"),
                *par = nn__file_find(secs, n, "BERTPAR"), *head = nn__file_find(secs, n, "BERTHEAD");
  const char *why = NULL;
  char name[4200];
  nn_file_bert fb;
  bert_impl *b = calloc(1, sizeof *b);
  if (!b) {
    st = finch_err_set(err, FINCH_ENOMEM, "%s: out of memory", path);
    goto done;
  }
  if (!cfg || cfg->size != sizeof fb || !tok || !par || !head) {
    why = "a bert model needs BERTCFG (64 bytes), BERTTOK, BERTPAR and BERTHEAD";
    goto bad;
  }
  memcpy(&fb, cfg->data, sizeof fb);
  const nn_bert_config c = {fb.vocab, fb.max_pos, fb.type_vocab, fb.dim, fb.layers, fb.heads, fb.ff, fb.ln_eps};
  if (fb.n_labels != h.n_labels) {
    why = "BERTCFG and LABELS disagree on the number of labels";
    goto bad;
  }
  if ((st = nn_bert_config_check(&c, err)) != FINCH_OK) goto fail;
  if (par->size % sizeof(float) != 0) {
    why = "BERTPAR is not a whole number of floats";
    goto bad;
  }
  if (head->size != (size_t)fb.n_labels * (fb.dim + 1) * sizeof(float)) {
    why = "BERTHEAD has the wrong size for BERTCFG";
    goto bad;
  }
  float *params = malloc(par->size ? par->size : 1); /* the section body may not be float-aligned */
  if (!params || !(b->head = malloc(head->size))) {
    free(params);
    st = finch_err_set(err, FINCH_ENOMEM, "%s: out of memory", path);
    goto done;
  }
  memcpy(params, par->data, par->size);
  memcpy(b->head, head->data, head->size);
  st = nn_bert_create_from_params(&b->enc, &c, params, par->size / sizeof(float), err);
  free(params);
  if (st != FINCH_OK) goto fail;
  snprintf(name, sizeof name, "%s: BERTTOK", path);
  if (!(b->tok_json = malloc(tok->size ? tok->size : 1))) {
    st = finch_err_set(err, FINCH_ENOMEM, "%s: out of memory", path);
    goto done;
  }
  memcpy(b->tok_json, tok->data, tok->size);
  b->tok_len = tok->size;
  if ((st = nn_bert_tok_load_bytes(name, b->tok_json, b->tok_len, &b->tok, err)) != FINCH_OK) goto done;
  b->T = (int)fb.seq_len;
  if ((why = parts_check(b)) != NULL) goto bad;
  st = bert_wrap(out, b, (const char *const *)h.labels, h.n_labels, err);
  b = NULL; /* taken, also on failure */
  if (st != FINCH_OK) goto fail;
  (*out)->meta = h.meta;
  h.meta = NULL;
  goto done;
bad:
  st = finch_err_set(err, FINCH_EFORMAT, "%s: %s", path, why);
  goto done;
fail:
  finch_err_prefix(err, "%s", path);
  if (err) err->code = st;
done:
  bert_free(b);
  nn__model_head_free(&h);
  return st;
}

const nn_model_vt nn__bert_vt = {
    .id = NN_ARCH_BERT, .name = "bert", .predict = bert_predict, .predict_many = bert_predict_many,
    .n_params = bert_n_params, .config = NULL, .write = bert_write, .load = bert_load, .free_impl = bert_free,
};
