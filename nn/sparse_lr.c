/* TF-IDF features and the model around them: the vocabulary, the
 * featuriser prediction and training share, prediction and the blob; the
 * contract and the blob format are in nn/sparse_lr.h, the fit is
 * nn/sparse_lr_train.c.
 *
 * Layout. The vocabulary is a string table (nn/strtab.h) of term keys;
 * feature j is term j. The model's parameters are one allocation,
 * W (F,C) row-major then b (C), so a text's logits are C-wide axpys over the
 * rows of its terms. Features are ordered by document frequency (descending),
 * which keeps the rows that most texts touch together in cache. */
#include "nn/sparse_lr.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "nn/features.h"
#include "nn/loss.h"
#include "nn/sparse_lr_impl.h"
#include "nn/strtab.h"

enum { NN_SLR_MAX_CHAR = 16 }; /* char_max limit */

enum { TAG_WORD = 'w', TAG_CHAR = 'c' };

/* ---- the model ------------------------------------------------------------ */

nn_sparse_lr_config nn_sparse_lr_defaults(void) {
  return (nn_sparse_lr_config){
      .word_ngrams = 2,
      .char_min = 2,
      .char_max = 5,
      .min_df = 1,
      .max_features = 0,
      .C = 200.0f,
      .epochs = 300,
      .seed = 42,
  };
}

finch_status nn__slr_check_config(const nn_sparse_lr_config *c, finch_status code, finch_err *err) {
  if (c->word_ngrams < 1 || c->word_ngrams > 3)
    return finch_err_set(err, code, "word_ngrams must be 1..3, not %u", c->word_ngrams);
  if (c->char_max > 0 && (c->char_min < 1 || c->char_min > c->char_max || c->char_max > NN_SLR_MAX_CHAR))
    return finch_err_set(err, code, "character n-grams need 1 <= char_min <= char_max <= %d (char_min %u, char_max %u)",
                         NN_SLR_MAX_CHAR, c->char_min, c->char_max);
  if (c->char_max == 0 && c->char_min != 0)
    return finch_err_set(err, code, "char_min %u without char_max (0 turns both off)", c->char_min);
  if (c->min_df < 1) return finch_err_set(err, code, "min_df must be at least 1");
  if (!(c->C > 0.0f) || !isfinite(c->C)) return finch_err_set(err, code, "C must be finite and > 0, not %g", (double)c->C);
  if (c->epochs < 1) return finch_err_set(err, code, "epochs must be at least 1");
  return FINCH_OK;
}

void nn_sparse_lr_free(nn_sparse_lr *m) {
  if (!m) return;
  nn_strtab_free(&m->vocab);
  free(m->idf);
  free(m->params);
  free(m);
}

size_t nn_sparse_lr_n_labels(const nn_sparse_lr *m) { return m->C; }
size_t nn_sparse_lr_n_features(const nn_sparse_lr *m) { return m->F; }
size_t nn_sparse_lr_n_params(const nn_sparse_lr *m) { return m->F * m->C + m->C; }
const nn_sparse_lr_config *nn_sparse_lr_config_of(const nn_sparse_lr *m) { return &m->cfg; }

/* Allocates W and b (zeroed) and idf for F features and C labels. */
static int model_alloc_params(nn_sparse_lr *m) {
  m->idf = malloc((m->F ? m->F : 1) * sizeof *m->idf);
  m->params = calloc((m->F + 1) * m->C, sizeof *m->params);
  if (!m->idf || !m->params) return -1;
  m->W = m->params;
  m->b = m->params + m->F * m->C;
  return 0;
}

/* ---- terms of a text ------------------------------------------------------ */

static void keybuf_free(keybuf *k) {
  free(k->key);
  free(k->cp);
  memset(k, 0, sizeof *k);
}

static int keybuf_reserve(keybuf *k, size_t n) {
  if (n <= k->cap) return 0;
  size_t c = k->cap ? k->cap : 256;
  while (c < n) c *= 2;
  char *p = realloc(k->key, c);
  if (!p) return -1;
  k->key = p;
  k->cap = c;
  return 0;
}

/* Called once per term occurrence with its key; nonzero stops the walk. */
typedef int (*term_fn)(void *ctx, const char *key, size_t len);

/* Calls fn for every term occurrence of the tokens t, word block first.
 * Returns 0, -1 when out of memory, or fn's nonzero result. */
static int for_each_term(const nn_tokens *t, const nn_sparse_lr_config *cfg, keybuf *kb, term_fn fn,
                         void *ctx) {
  for (uint32_t ng = 1; ng <= cfg->word_ngrams; ng++) {
    for (size_t i = 0; i + ng <= t->n; i++) {
      size_t len = 1 + (ng - 1);
      for (size_t j = i; j < i + ng; j++) len += t->tok[j].len;
      if (len > NN_SPARSE_LR_MAX_KEY) continue;
      if (keybuf_reserve(kb, len)) return -1;
      char *p = kb->key;
      *p++ = TAG_WORD;
      for (size_t j = i; j < i + ng; j++) {
        if (j > i) *p++ = ' ';
        memcpy(p, t->norm + t->tok[j].off, t->tok[j].len);
        p += t->tok[j].len;
      }
      int rc = fn(ctx, kb->key, len);
      if (rc) return rc;
    }
  }
  if (cfg->char_max == 0) return 0;
  for (size_t i = 0; i < t->n; i++) {
    if (t->tok[i].kind == NN_TOKEN_PLACEHOLDER) continue;
    const char *w = t->norm + t->tok[i].off;
    size_t wl = t->tok[i].len, pl = wl + 2;
    /* key: tag, then " " w " " */
    if (keybuf_reserve(kb, pl + 1)) return -1;
    if (pl + 1 > kb->cpcap) {
      size_t *c = realloc(kb->cp, (pl + 1) * sizeof *c);
      if (!c) return -1;
      kb->cp = c;
      kb->cpcap = pl + 1;
    }
    char *pad = kb->key + 1;
    pad[0] = ' ';
    memcpy(pad + 1, w, wl);
    pad[pl - 1] = ' ';
    size_t L = 0;
    for (size_t b = 0; b < pl; b++)
      if (((unsigned char)pad[b] & 0xC0) != 0x80) kb->cp[L++] = b;
    kb->cp[L] = pl;
    if (L < cfg->char_min) {
      if (pl + 1 <= NN_SPARSE_LR_MAX_KEY) {
        kb->key[0] = TAG_CHAR;
        int rc = fn(ctx, kb->key, pl + 1);
        if (rc) return rc;
      }
      continue;
    }
    for (size_t n = cfg->char_min; n <= cfg->char_max && n <= L; n++) {
      for (size_t s = 0; s + n <= L; s++) {
        /* The tag goes in the byte before the n-gram; restore it afterwards. */
        size_t b0 = kb->cp[s], b1 = kb->cp[s + n];
        char *k = pad + b0 - 1, saved = *k;
        *k = TAG_CHAR;
        int rc = fn(ctx, k, b1 - b0 + 1);
        *k = saved;
        if (rc) return rc;
      }
    }
  }
  return 0;
}

/* ---- featuriser ----------------------------------------------------------- */

void nn__slr_row_work_free(row_work *w) {
  nn_tokens_free(&w->tok);
  keybuf_free(&w->kb);
  free(w->hits);
  free(w->ids);
  free(w->vals);
  memset(w, 0, sizeof *w);
}

typedef struct {
  const nn_sparse_lr *m;
  row_work *w;
} lookup_ctx;

static int lookup_term(void *ctx, const char *key, size_t len) {
  lookup_ctx *c = ctx;
  int64_t j = nn_strtab_find(&c->m->vocab, key, len);
  if (j < 0) return 0;
  row_work *w = c->w;
  if (w->nhits == w->hcap) {
    size_t nc = w->hcap ? w->hcap * 2 : 256;
    uint32_t *p = realloc(w->hits, nc * sizeof *p);
    if (!p) return -1;
    w->hits = p;
    w->hcap = nc;
  }
  w->hits[w->nhits++] = (uint32_t)j;
  return 0;
}

static int cmp_u32(const void *a, const void *b) {
  uint32_t x = *(const uint32_t *)a, y = *(const uint32_t *)b;
  return (x > y) - (x < y);
}

/* The TF-IDF row of text into w->ids / w->vals (w->n entries). */
finch_status nn__slr_featurize(const nn_sparse_lr *m, const char *text, row_work *w, finch_err *err) {
  w->n = w->nhits = 0;
  finch_status st = nn_tokenize(text, &w->tok, err);
  if (st != FINCH_OK) return st;
  lookup_ctx ctx = {m, w};
  if (for_each_term(&w->tok, &m->cfg, &w->kb, lookup_term, &ctx))
    return finch_err_set(err, FINCH_ENOMEM, "out of memory for the terms of a %zu-byte text", strlen(text));
  if (w->nhits > w->cap) {
    uint32_t *ids = realloc(w->ids, w->nhits * sizeof *ids);
    if (ids) w->ids = ids;
    float *vals = realloc(w->vals, w->nhits * sizeof *vals);
    if (vals) w->vals = vals;
    if (!ids || !vals) return finch_err_set(err, FINCH_ENOMEM, "out of memory for a row of %zu terms", w->nhits);
    w->cap = w->nhits;
  }
  if (w->nhits > 1) qsort(w->hits, w->nhits, sizeof *w->hits, cmp_u32);
  double ss[2] = {0.0, 0.0}; /* squared norms of the word and char blocks */
  for (size_t i = 0; i < w->nhits;) {
    size_t k = i + 1;
    while (k < w->nhits && w->hits[k] == w->hits[i]) k++;
    uint32_t j = w->hits[i];
    float v = (1.0f + logf((float)(k - i))) * m->idf[j];
    w->ids[w->n] = j;
    w->vals[w->n++] = v;
    ss[nn_strtab_key(&m->vocab, j)[0] == TAG_CHAR] += (double)v * v;
    i = k;
  }
  float inv[2] = {ss[0] > 0 ? (float)(1.0 / sqrt(ss[0])) : 0.0f, ss[1] > 0 ? (float)(1.0 / sqrt(ss[1])) : 0.0f};
  for (size_t i = 0; i < w->n; i++) w->vals[i] *= inv[nn_strtab_key(&m->vocab, w->ids[i])[0] == TAG_CHAR];
  return FINCH_OK;
}

/* z (C) = b + sum_k vals[k] W[ids[k]]. */
void nn__slr_logits_forward(const float *W, const float *b, size_t C, const uint32_t *ids, const float *vals,
                           size_t nnz, float *z) {
  memcpy(z, b, C * sizeof *z);
  for (size_t k = 0; k < nnz; k++) {
    const float *w = W + (size_t)ids[k] * C;
    float v = vals[k];
    for (size_t c = 0; c < C; c++) z[c] += v * w[c];
  }
}

int nn_sparse_lr_predict(const nn_sparse_lr *m, const char *text, float *probs, float temperature) {
  size_t C = m->C;
  int best = -1;
  row_work w = {0};
  float *z = NULL;
  if (!(temperature > 0.0f) || !isfinite(temperature)) goto out;
  z = malloc(C * sizeof *z);
  if (!z || nn__slr_featurize(m, text, &w, NULL) != FINCH_OK) goto out;
  nn__slr_logits_forward(m->W, m->b, C, w.ids, w.vals, w.n, z);
  best = 0;
  for (size_t c = 1; c < C; c++)
    if (z[c] > z[best]) best = (int)c;
  if (probs) nn_softmax(z, probs, (int)C, temperature);
out:
  if (best < 0 && probs)
    for (size_t c = 0; c < C; c++) probs[c] = 1.0f / (float)C;
  free(z);
  nn__slr_row_work_free(&w);
  return best;
}

/* ---- vocabulary ----------------------------------------------------------- */

/* A term's counts, the value of its entry in the counting table. */
typedef struct {
  uint32_t df, last; /* last: 1 + index of the last text that had the term */
  uint64_t count;
} term_count;

typedef struct {
  nn_strtab tab; /* values: term_count */
  uint32_t doc;  /* 1 + index of the current text */
} counter;

static int count_term(void *ctx, const char *key, size_t len) {
  counter *c = ctx;
  int64_t k = nn_strtab_add(&c->tab, key, len, NULL);
  if (k < 0) return -1;
  term_count *tc = nn_strtab_val(&c->tab, (size_t)k);
  if (tc->last != c->doc) tc->df++, tc->last = c->doc;
  tc->count++;
  return 0;
}

static int key_cmp(const nn_strtab *t, uint32_t a, uint32_t b) {
  size_t la = nn_strtab_len(t, a), lb = nn_strtab_len(t, b);
  int r = memcmp(nn_strtab_key(t, a), nn_strtab_key(t, b), la < lb ? la : lb);
  if (r) return r;
  return (la > lb) - (la < lb);
}

/* Sorts idx by (key desc, bytes asc); key is df or count. Merge sort: qsort
 * has no context argument, and the order must not depend on the C library. */
static void sort_candidates(uint32_t *idx, uint32_t *tmp, size_t n, const counter *c, int by_count) {
  if (n < 2) return;
  const term_count *tc = nn_strtab_vals(&c->tab);
  size_t h = n / 2;
  sort_candidates(idx, tmp, h, c, by_count);
  sort_candidates(idx + h, tmp, n - h, c, by_count);
  size_t i = 0, j = h, o = 0;
  while (i < h && j < n) {
    uint32_t a = idx[i], b = idx[j];
    uint64_t ka = by_count ? tc[a].count : tc[a].df, kb = by_count ? tc[b].count : tc[b].df;
    int b_first = kb > ka || (kb == ka && key_cmp(&c->tab, b, a) < 0);
    tmp[o++] = b_first ? idx[j++] : idx[i++];
  }
  while (i < h) tmp[o++] = idx[i++];
  while (j < n) tmp[o++] = idx[j++];
  memcpy(idx, tmp, n * sizeof *idx);
}

/* Counts the terms of texts and builds m->vocab and m->idf. */
finch_status nn__slr_build_vocab(nn_sparse_lr *m, const char *const *texts, size_t n, finch_err *err) {
  counter c = {0};
  nn_strtab_init(&c.tab, sizeof(term_count));
  nn_tokens tok = {0};
  keybuf kb = {0};
  uint32_t *idx = NULL, *tmp = NULL;
  finch_status st = FINCH_OK;
  for (size_t t = 0; t < n; t++) {
    st = nn_tokenize(texts[t], &tok, err);
    if (st != FINCH_OK) {
      finch_err_prefix(err, "text %zu", t);
      goto out;
    }
    c.doc = (uint32_t)(t + 1);
    if (for_each_term(&tok, &m->cfg, &kb, count_term, &c)) {
      st = finch_err_set(err, FINCH_ENOMEM, "out of memory counting the terms of text %zu", t);
      goto out;
    }
  }
  size_t nt = nn_strtab_size(&c.tab), nk = 0;
  const term_count *tc = nn_strtab_vals(&c.tab);
  idx = malloc((nt ? nt : 1) * sizeof *idx);
  tmp = malloc((nt ? nt : 1) * sizeof *tmp);
  if (!idx || !tmp) {
    st = finch_err_set(err, FINCH_ENOMEM, "out of memory sorting %zu terms", nt);
    goto out;
  }
  for (size_t k = 0; k < nt; k++)
    if (tc[k].df >= m->cfg.min_df) idx[nk++] = (uint32_t)k;
  if (m->cfg.max_features > 0 && nk > m->cfg.max_features) {
    sort_candidates(idx, tmp, nk, &c, 1);
    nk = m->cfg.max_features;
  }
  sort_candidates(idx, tmp, nk, &c, 0);
  m->F = nk;
  if (model_alloc_params(m)) {
    st = finch_err_set(err, FINCH_ENOMEM, "out of memory for %zu features x %zu labels", nk, m->C);
    goto out;
  }
  for (size_t j = 0; j < nk; j++) {
    if (nn_strtab_add(&m->vocab, nn_strtab_key(&c.tab, idx[j]), nn_strtab_len(&c.tab, idx[j]), NULL) < 0) {
      st = finch_err_set(err, FINCH_ENOMEM, "out of memory for a vocabulary of %zu terms", nk);
      goto out;
    }
    m->idf[j] = (float)(log((1.0 + (double)n) / (1.0 + (double)tc[idx[j]].df)) + 1.0);
  }
out:
  free(idx);
  free(tmp);
  keybuf_free(&kb);
  nn_tokens_free(&tok);
  nn_strtab_free(&c.tab);
  return st;
}

/* ---- serialisation -------------------------------------------------------- */

static unsigned char *put_u32(unsigned char *p, uint32_t v) {
  for (int i = 0; i < 4; i++) p[i] = (unsigned char)(v >> (8 * i));
  return p + 4;
}

static unsigned char *put_u64(unsigned char *p, uint64_t v) {
  for (int i = 0; i < 8; i++) p[i] = (unsigned char)(v >> (8 * i));
  return p + 8;
}

static unsigned char *put_f32(unsigned char *p, float f) {
  uint32_t v;
  memcpy(&v, &f, 4);
  return put_u32(p, v);
}

static uint32_t get_u32(const unsigned char *p) {
  return (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 | (uint32_t)p[3] << 24;
}

static uint64_t get_u64(const unsigned char *p) { return (uint64_t)get_u32(p) | (uint64_t)get_u32(p + 4) << 32; }

static float get_f32(const unsigned char *p) {
  uint32_t v = get_u32(p);
  float f;
  memcpy(&f, &v, 4);
  return f;
}

finch_status nn_sparse_lr_save(const nn_sparse_lr *m, unsigned char **buf, size_t *len, finch_err *err) {
  if (m->F > UINT32_MAX || m->C > UINT32_MAX)
    return finch_err_set(err, FINCH_EINVAL, "model of %zu features x %zu labels is too large to save", m->F, m->C);
  size_t total = NN_SPARSE_LR_HEADER + m->F * 8 + (m->F + 1) * m->C * 4;
  for (size_t j = 0; j < m->F; j++) total += nn_strtab_len(&m->vocab, j);
  unsigned char *b = malloc(total), *p = b;
  if (!b) return finch_err_set(err, FINCH_ENOMEM, "out of memory for a %zu-byte model blob", total);
  memcpy(p, "FSLR", 4);
  p = put_u32(p + 4, NN_SPARSE_LR_VERSION);
  const nn_sparse_lr_config *c = &m->cfg;
  p = put_u32(p, c->word_ngrams);
  p = put_u32(p, c->char_min);
  p = put_u32(p, c->char_max);
  p = put_u32(p, c->min_df);
  p = put_u32(p, c->max_features);
  p = put_f32(p, c->C);
  p = put_u32(p, c->epochs);
  p = put_u64(p, c->seed);
  p = put_u32(p, (uint32_t)m->C);
  p = put_u32(p, (uint32_t)m->F);
  for (size_t j = 0; j < m->F; j++) {
    uint32_t kl = (uint32_t)nn_strtab_len(&m->vocab, j);
    p = put_u32(p, kl);
    memcpy(p, nn_strtab_key(&m->vocab, j), kl);
    p = put_f32(p + kl, m->idf[j]);
  }
  for (size_t i = 0; i < (m->F + 1) * m->C; i++) p = put_f32(p, m->params[i]);
  if ((size_t)(p - b) != total) {
    free(b);
    return finch_err_set(err, FINCH_EINTERNAL, "model blob: wrote %zu bytes, expected %zu", (size_t)(p - b), total);
  }
  *buf = b;
  *len = total;
  return FINCH_OK;
}

finch_status nn_sparse_lr_load(nn_sparse_lr **out, const unsigned char *buf, size_t len, finch_err *err) {
  *out = NULL;
  if (len < NN_SPARSE_LR_HEADER)
    return finch_err_set(err, FINCH_EFORMAT, "sparse LR blob of %zu bytes is shorter than its %d-byte header", len,
                         NN_SPARSE_LR_HEADER);
  if (memcmp(buf, "FSLR", 4) != 0) return finch_err_set(err, FINCH_EFORMAT, "sparse LR blob: bad magic (expected FSLR)");
  uint32_t version = get_u32(buf + 4);
  if (version != NN_SPARSE_LR_VERSION)
    return finch_err_set(err, FINCH_EFORMAT, "sparse LR blob: version %u, expected %d", version, NN_SPARSE_LR_VERSION);
  nn_sparse_lr_config c = {
      .word_ngrams = get_u32(buf + 8),
      .char_min = get_u32(buf + 12),
      .char_max = get_u32(buf + 16),
      .min_df = get_u32(buf + 20),
      .max_features = get_u32(buf + 24),
      .C = get_f32(buf + 28),
      .epochs = get_u32(buf + 32),
      .seed = get_u64(buf + 36),
  };
  finch_status st = nn__slr_check_config(&c, FINCH_EFORMAT, err);
  if (st != FINCH_OK) {
    finch_err_prefix(err, "sparse LR blob: configuration");
    return st;
  }
  size_t C = get_u32(buf + 44), F = get_u32(buf + 48), off = NN_SPARSE_LR_HEADER, rem = len - off;
  if (C == 0 || C > INT32_MAX) return finch_err_set(err, FINCH_EFORMAT, "sparse LR blob: n_labels %zu at offset 44", C);
  /* Each vocabulary entry takes at least 10 bytes, the weights (F+1) C 4. */
  if (F > rem / 10 || F + 1 > rem / 4 / C)
    return finch_err_set(err, FINCH_EFORMAT,
                         "sparse LR blob: %zu features x %zu labels need more than the %zu bytes after the header", F, C,
                         rem);
  nn_sparse_lr *m = calloc(1, sizeof *m);
  if (!m) return finch_err_set(err, FINCH_ENOMEM, "out of memory for the model");
  m->cfg = c;
  m->C = C;
  m->F = F;
  if (model_alloc_params(m)) {
    st = finch_err_set(err, FINCH_ENOMEM, "out of memory for %zu features x %zu labels", F, C);
    goto fail;
  }
  for (size_t j = 0; j < F; j++) {
    if (len - off < 4) goto truncated;
    size_t kl = get_u32(buf + off);
    if (kl < 2 || kl > NN_SPARSE_LR_MAX_KEY) {
      st = finch_err_set(err, FINCH_EFORMAT, "sparse LR blob: vocabulary entry %zu at offset %zu has key length %zu (2..%d)",
                         j, off, kl, NN_SPARSE_LR_MAX_KEY);
      goto fail;
    }
    if (len - off - 4 < kl + 4) goto truncated;
    const char *key = (const char *)buf + off + 4;
    if (key[0] != TAG_WORD && key[0] != TAG_CHAR) {
      st = finch_err_set(err, FINCH_EFORMAT, "sparse LR blob: vocabulary entry %zu at offset %zu has block tag 0x%02x",
                         j, off + 4, (unsigned char)key[0]);
      goto fail;
    }
    int added;
    if (nn_strtab_add(&m->vocab, key, kl, &added) < 0) {
      st = finch_err_set(err, FINCH_ENOMEM, "out of memory for a vocabulary of %zu terms", F);
      goto fail;
    }
    if (!added) {
      st = finch_err_set(err, FINCH_EFORMAT, "sparse LR blob: vocabulary entry %zu at offset %zu duplicates an earlier key",
                         j, off);
      goto fail;
    }
    float idf = get_f32(buf + off + 4 + kl);
    if (!(idf > 0.0f) || !isfinite(idf)) {
      st = finch_err_set(err, FINCH_EFORMAT, "sparse LR blob: vocabulary entry %zu has idf %g at offset %zu", j,
                         (double)idf, off + 4 + kl);
      goto fail;
    }
    m->idf[j] = idf;
    off += 8 + kl;
  }
  size_t np = (F + 1) * C;
  if ((len - off) / 4 < np) goto truncated;
  if (len - off != np * 4) {
    st = finch_err_set(err, FINCH_EFORMAT, "sparse LR blob: %zu bytes after the weights at offset %zu",
                       len - off - np * 4, off + np * 4);
    goto fail;
  }
  for (size_t i = 0; i < np; i++) {
    m->params[i] = get_f32(buf + off + 4 * i);
    if (!isfinite(m->params[i])) {
      st = finch_err_set(err, FINCH_EFORMAT, "sparse LR blob: non-finite weight at offset %zu", off + 4 * i);
      goto fail;
    }
  }
  *out = m;
  return FINCH_OK;
truncated:
  st = finch_err_set(err, FINCH_EFORMAT, "sparse LR blob: truncated at offset %zu of %zu (%zu features x %zu labels)",
                     off, len, F, C);
fail:
  nn_sparse_lr_free(m);
  return st;
}
