/* The "tfm" architecture behind nn_model: a transformer encoder (nn/tfm.h)
 * with its subword tokenizer and n-gram hashing settings. File sections
 * after the head (documented in nn/model_arch.h): "TFMCFG", "TOKENIZ",
 * "PARAMS". */
#include <stdlib.h>
#include <string.h>

#include "nn/model_arch.h"
#include "nn/model_impl.h"
#include "nn/tfm_train.h"

typedef struct {
  nn_tfm *tfm;
  nn_tokenizer *tok;
  int T;
  uint32_t minn, maxn;
} tfm_impl;

typedef struct {
  uint32_t vocab, buckets, max_len, dim, layers, heads, ff, n_labels, pool;
  float dropout;
  uint32_t seq_len, minn, maxn;
  uint32_t head_gates;
  uint8_t reserved[8];
} nn_file_tfm;
_Static_assert(sizeof(nn_file_tfm) == 64, "nn_file_tfm is 64 bytes");

static void tfm_free(void *impl) {
  tfm_impl *t = impl;
  if (t) nn_tfm_free(t->tfm), nn_tokenizer_free(t->tok);
  free(t);
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
  if (!st) {
    *t = (tfm_impl){tfm, tok, seq_len, minn, maxn};
    st = nn__model_new(out, &nn__tfm_vt, t, labels, n_labels, err);
  }
  if (st) {
    free(t);
    nn_tfm_free(tfm);
    nn_tokenizer_free(tok);
  }
  return st;
}

static const tfm_impl *impl_of(const nn_model *m) { return m->vt == &nn__tfm_vt ? m->impl : NULL; }

const nn_tfm *nn_model_tfm(const nn_model *m) { return impl_of(m) ? impl_of(m)->tfm : NULL; }
const nn_tokenizer *nn_model_tokenizer(const nn_model *m) { return impl_of(m) ? impl_of(m)->tok : NULL; }

int nn_model_tfm_seq_len(const nn_model *m, uint32_t *minn, uint32_t *maxn) {
  const tfm_impl *t = impl_of(m);
  if (!t) return 0;
  if (minn) *minn = t->minn;
  if (maxn) *maxn = t->maxn;
  return t->T;
}

const nn_model *nn_model_find_tfm(const nn_model *m) {
  if (impl_of(m)) return m;
  for (size_t i = 0; i < nn_model_n_members(m); i++)
    if (impl_of(nn_model_member(m, i))) return nn_model_member(m, i);
  return NULL;
}

static size_t tfm_n_params(const nn_model *m) { return nn_tfm_n_params(impl_of(m)->tfm); }

/* ---- prediction ------------------------------------------------------------ */

static finch_status tfm_predict_many(const nn_model *m, const char *const *texts, size_t n, float *probs,
                                     int32_t *pred, float temperature, finch_err *err) {
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
  return nn__predict_each(m, texts, n, probs, pred, temperature, err);
}

static int tfm_predict(const nn_model *m, const char *text, float *probs, float temperature) {
  const size_t C = m->n_labels;
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
  if (pred < 0 && probs) nn__uniform(probs, C);
  return pred;
}

/* ---- the file sections ------------------------------------------------------ */

static finch_status tfm_write(const nn_model *m, nn_dtype dtype, nn_file_writer *w, finch_err *err) {
  const tfm_impl *t = m->impl;
  const nn_tfm_config *c = nn_tfm_get_config(t->tfm);
  unsigned char *blob = NULL;
  size_t blob_len = 0;
  finch_status st = nn_tokenizer_save(t->tok, &blob, &blob_len, err);
  if (st != FINCH_OK) return st;
  nn_file_tfm ft;
  memset(&ft, 0, sizeof ft);
  ft = (nn_file_tfm){c->vocab, c->buckets, c->max_len, c->dim, c->layers, c->heads, c->ff, c->n_labels,
                     c->pool, c->dropout, (uint32_t)t->T, t->minn, t->maxn, c->head_gates, {0}};
  nn__model_write_head(w, m);
  nn__file_section(w, "TFMCFG", &ft, sizeof ft);
  nn__file_section(w, "TOKENIZ", blob, blob_len);
  free(blob);
  /* Per tensor, in table order: u32 dtype, rows, cols, 0, then the data; 8-aligned. */
  nn__file_section_begin(w, "PARAMS");
  const float *params = nn_tfm_params_const(t->tfm);
  for (size_t i = 0; i < nn_tfm_n_tensors(t->tfm); i++) {
    const nn_tfm_tensor *tt = nn_tfm_tensor_at(t->tfm, i);
    const int quant = dtype == NN_DTYPE_Q8 && tt->cols > 1 && tt->decay;
    uint32_t hdr[4] = {quant ? NN_DTYPE_Q8 : NN_DTYPE_F32, tt->rows, tt->cols, 0};
    nn_buf_put(&w->b, hdr, sizeof hdr);
    const float *x = params + tt->off;
    if (!quant) {
      nn_buf_put(&w->b, x, (size_t)tt->rows * tt->cols * 4);
    } else {
      /* rows f32 scales, then rows*cols int8 */
      unsigned char *q = nn_buf_reserve(&w->b, (size_t)tt->rows * 4 + (size_t)tt->rows * tt->cols);
      for (uint32_t r = 0; q && r < tt->rows; r++) {
        float s;
        nn_q8_quantize_row_ref(x + (size_t)r * tt->cols, tt->cols, (int8_t *)(q + (size_t)tt->rows * 4 + (size_t)r * tt->cols), &s);
        memcpy(q + (size_t)r * 4, &s, 4);
      }
    }
    nn_buf_pad8(&w->b);
  }
  nn__file_section_end(w);
  return FINCH_OK;
}

/* Fills tfm's parameters from the PARAMS body; NULL, or why it cannot. */
static const char *read_params(nn_tfm *tfm, const nn_blob *params, int *any_q8) {
  float *p = nn_tfm_params(tfm);
  const unsigned char *q = params->data, *end = q + params->size;
  for (size_t i = 0; i < nn_tfm_n_tensors(tfm); i++) {
    const nn_tfm_tensor *tt = nn_tfm_tensor_at(tfm, i);
    uint32_t hdr[4];
    if ((size_t)(end - q) < sizeof hdr) return "PARAMS ends early";
    memcpy(hdr, q, sizeof hdr);
    q += sizeof hdr;
    size_t cnt = (size_t)tt->rows * tt->cols;
    size_t need = hdr[0] == NN_DTYPE_F32 ? cnt * 4 : (size_t)tt->rows * 4 + cnt;
    if (hdr[1] != tt->rows || hdr[2] != tt->cols) return "a PARAMS tensor has the wrong shape";
    if (hdr[0] > NN_DTYPE_Q8) return "a PARAMS tensor has an unknown dtype";
    if ((size_t)(end - q) < need) return "PARAMS ends early";
    if (hdr[0] == NN_DTYPE_F32) {
      memcpy(p + tt->off, q, cnt * 4);
    } else {
      *any_q8 = 1;
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
  return NULL;
}

static finch_status tfm_load(nn_model **out, const nn_blob *secs, size_t n, const char *path, finch_err *err) {
  nn_model_head h;
  finch_status st = nn__model_read_head(secs, n, path, &h, err);
  if (st != FINCH_OK) return st;
  const nn_blob *cfg = nn__file_find(secs, n, "TFMCFG"), *tok = nn__file_find(secs, n, "TOKENIZ"),
                *params = nn__file_find(secs, n, "PARAMS");
  const char *why = NULL;
  nn_file_tfm ft;
  nn_tfm *tfm = NULL;
  nn_tokenizer *tk = NULL;
  int any_q8 = 0;
  if (!cfg || cfg->size != sizeof ft || !tok || !params) {
    why = "a tfm model needs TFMCFG, TOKENIZ and PARAMS";
    goto bad;
  }
  memcpy(&ft, cfg->data, sizeof ft);
  nn_tfm_config c = {ft.vocab, ft.buckets, ft.max_len, ft.dim, ft.layers, ft.heads, ft.ff, ft.n_labels, ft.pool,
                     ft.dropout, ft.head_gates};
  if (ft.n_labels != h.n_labels) {
    why = "TFMCFG and LABELS disagree on the number of labels";
    goto bad;
  }
  if ((st = nn_tfm_create(&tfm, &c, 0, err)) != FINCH_OK) goto fail;
  if ((st = nn_tokenizer_load(&tk, tok->data, tok->size, err)) != FINCH_OK) goto fail;
  if ((why = read_params(tfm, params, &any_q8)) != NULL) goto bad;
  st = nn_model_from_tfm(out, tfm, tk, (int)ft.seq_len, ft.minn, ft.maxn, (const char *const *)h.labels, h.n_labels,
                         err);
  tfm = NULL, tk = NULL; /* taken, also on failure */
  if (st != FINCH_OK) goto fail;
  (*out)->dtype = any_q8 ? NN_DTYPE_Q8 : NN_DTYPE_F32;
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
  nn_tfm_free(tfm);
  nn_tokenizer_free(tk);
  nn__model_head_free(&h);
  return st;
}

const nn_model_vt nn__tfm_vt = {
    .id = NN_ARCH_TFM, .name = "tfm", .predict = tfm_predict, .predict_many = tfm_predict_many,
    .n_params = tfm_n_params, .config = NULL, .write = tfm_write, .load = tfm_load, .free_impl = tfm_free,
};
