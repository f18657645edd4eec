/* Texts encoded for the encoder (nn_tfm_corpus, nn/tfm_train.h): subword
 * ids with [CLS] first and each token's hashed character n-gram rows; and
 * batches gathered from them (nn/tfm_batch.h). */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "nn/features.h"
#include "nn/tfm_batch.h"
#include "nn/tfm_train.h"

void nn_tfm_corpus_free(nn_tfm_corpus *c) {
  if (!c) return;
  free(c->ids);
  free(c->len);
  free(c->ng_offs);
  free(c->ng_ids);
  memset(c, 0, sizeof *c);
}

/* Hashed character n-grams (minn..maxn code points) of "<" word ">" into
 * rows [0,buckets), appended to *out. Placeholders and CJK get none. */
static int word_ngrams(const char *w, size_t len, uint32_t buckets, uint32_t minn, uint32_t maxn,
                       uint32_t **out, size_t *n, size_t *cap) {
  char buf[260];
  if (len + 2 > sizeof buf) return 0;
  buf[0] = '<';
  memcpy(buf + 1, w, len);
  buf[len + 1] = '>';
  size_t bl = len + 2;
  /* Start offsets of code points. */
  size_t starts[260];
  size_t ns = 0;
  for (size_t i = 0; i < bl; i++)
    if (((unsigned char)buf[i] & 0xC0) != 0x80) starts[ns++] = i;
  starts[ns] = bl;
  for (size_t i = 0; i < ns; i++) {
    for (uint32_t k = minn; k <= maxn && i + k <= ns; k++) {
      if (k == 1 && (i == 0 || i + 1 == ns)) continue; /* a lone "<" or ">" */
      size_t a = starts[i], b = starts[i + k];
      if (*n == *cap) {
        size_t nc = *cap ? *cap * 2 : 4096;
        uint32_t *p = realloc(*out, nc * sizeof *p);
        if (!p) return -1;
        *out = p;
        *cap = nc;
      }
      (*out)[(*n)++] = (uint32_t)(nn_feature_hash(5, buf + a, b - a) % buckets);
    }
  }
  return 0;
}

finch_status nn_tfm_corpus_encode(nn_tfm_corpus *c, const nn_tokenizer *tok, const char *const *texts,
                                  size_t n, int T, uint32_t buckets, uint32_t minn, uint32_t maxn,
                                  finch_err *err) {
  memset(c, 0, sizeof *c);
  if (T < 2 || T > 255) return finch_err_set(err, FINCH_EINVAL, "sequence length %d outside [2,255]", T);
  const int with_ng = buckets > 0 && maxn > 0 && minn >= 1 && minn <= maxn;
  c->T = T;
  c->n = n;
  c->buckets = with_ng ? buckets : 0;
  c->minn = minn;
  c->maxn = maxn;
  c->ids = malloc((n ? n : 1) * (size_t)T * sizeof *c->ids);
  c->len = malloc(n ? n : 1);
  int32_t *word = malloc((size_t)T * sizeof *word);
  size_t ng_n = 0, ng_cap = 0;
  /* Per word: its n-gram rows as a span of wng. */
  uint32_t *wng = NULL;
  size_t wng_n = 0, wng_cap = 0;
  size_t *wspan = NULL;
  size_t wspan_cap = 0;
  nn_tokens toks = {0};
  finch_status st = FINCH_OK;
  if (!c->ids || !c->len || !word) goto oom;
  if (with_ng && !(c->ng_offs = malloc(((n ? n : 1) * (size_t)T + 1) * sizeof *c->ng_offs))) goto oom;
  for (size_t i = 0; i < n; i++) {
    int32_t *ids = c->ids + i * (size_t)T;
    int k = nn_tokenizer_encode(tok, texts[i], ids, word, T);
    if (k < 0) {
      st = finch_err_set(err, FINCH_EFORMAT, "text %zu: invalid UTF-8", i);
      goto out;
    }
    if (k < 1) k = 1, ids[0] = NN_TOK_CLS, word[0] = -1;
    for (int t = k; t < T; t++) ids[t] = NN_TOK_PAD;
    c->len[i] = (uint8_t)k;
    if (!with_ng) continue;
    /* The words as the tokenizer saw them. */
    finch_err e2;
    if (nn_tokenizer_words(tok, texts[i], &toks, &e2) != FINCH_OK) toks.n = 0;
    if (toks.n + 1 > wspan_cap) {
      size_t nc = toks.n + 64;
      size_t *p = realloc(wspan, nc * sizeof *p);
      if (!p) goto oom;
      wspan = p;
      wspan_cap = nc;
    }
    wng_n = 0;
    for (size_t wi = 0; wi < toks.n; wi++) {
      wspan[wi] = wng_n;
      if (toks.tok[wi].kind == NN_TOKEN_WORD &&
          word_ngrams(toks.norm + toks.tok[wi].off, toks.tok[wi].len, buckets, minn, maxn, &wng, &wng_n,
                      &wng_cap))
        goto oom;
    }
    wspan[toks.n] = wng_n;
    for (int t = 0; t < T; t++) {
      c->ng_offs[i * (size_t)T + (size_t)t] = ng_n;
      if (t >= k || word[t] < 0 || (size_t)word[t] >= toks.n) continue;
      size_t a = wspan[word[t]], b = wspan[word[t] + 1];
      if (ng_n + (b - a) > ng_cap) {
        size_t nc = ng_cap ? ng_cap * 2 : 1 << 16;
        while (nc < ng_n + (b - a)) nc *= 2;
        uint32_t *p = realloc(c->ng_ids, nc * sizeof *p);
        if (!p) goto oom;
        c->ng_ids = p;
        ng_cap = nc;
      }
      memcpy(c->ng_ids + ng_n, wng + a, (b - a) * sizeof *wng);
      ng_n += b - a;
    }
  }
  if (with_ng) {
    c->ng_offs[n * (size_t)T] = ng_n;
    if (!c->ng_ids && !(c->ng_ids = malloc(sizeof *c->ng_ids))) goto oom;
  }
  goto out;
oom:
  st = finch_err_set(err, FINCH_ENOMEM, "out of memory encoding %zu texts", n);
out:
  nn_tokens_free(&toks);
  free(wng);
  free(wspan);
  free(word);
  if (st != FINCH_OK) nn_tfm_corpus_free(c);
  return st;
}

void nn__tfm_batch_free(nn__tfm_batch_buf *b) {
  free(b->ids);
  free(b->mask);
  free(b->ng_offs);
  free(b->ng_ids);
  free(b->y);
  free(b->soft);
  free(b->alpha);
  free(b->mpos);
  free(b->mtgt);
}

int nn__tfm_batch_init(nn__tfm_batch_buf *b, int Bmax, int T, int C) {
  memset(b, 0, sizeof *b);
  b->Bmax = Bmax;
  b->T = T;
  size_t BT = (size_t)Bmax * (size_t)T;
  b->ids = malloc(BT * sizeof *b->ids);
  b->mask = malloc(BT);
  b->ng_offs = malloc((BT + 1) * sizeof *b->ng_offs);
  b->y = malloc((size_t)Bmax * sizeof *b->y);
  b->soft = malloc((size_t)Bmax * (size_t)(C > 0 ? C : 1) * sizeof *b->soft);
  b->alpha = malloc((size_t)Bmax * sizeof *b->alpha);
  b->mpos = malloc(BT * sizeof *b->mpos);
  b->mtgt = malloc(BT * sizeof *b->mtgt);
  return b->ids && b->mask && b->ng_offs && b->y && b->soft && b->alpha && b->mpos && b->mtgt ? 0 : -1;
}

/* Gathers rows rows[0..B) of x into b, trimmed to the longest row: the
 * batch's T. Returns T, or -1 when out of memory. */
int nn__tfm_batch_fill(nn__tfm_batch_buf *b, const nn_tfm_corpus *x, const uint32_t *rows, int B, nn_tfm_batch *out) {
  int T = 1;
  for (int i = 0; i < B; i++)
    if (x->len[rows[i]] > T) T = x->len[rows[i]];
  size_t ng = 0;
  if (x->ng_offs) {
    for (int i = 0; i < B; i++) {
      size_t base = (size_t)rows[i] * (size_t)x->T;
      ng += x->ng_offs[base + (size_t)T] - x->ng_offs[base];
    }
    if (ng > b->ng_cap) {
      uint32_t *p = realloc(b->ng_ids, ng * sizeof *p);
      if (!p) return -1;
      b->ng_ids = p;
      b->ng_cap = ng;
    }
  }
  size_t at = 0;
  for (int i = 0; i < B; i++) {
    const size_t r = rows[i], base = r * (size_t)x->T;
    memcpy(b->ids + (size_t)i * T, x->ids + base, (size_t)T * sizeof *b->ids);
    for (int t = 0; t < T; t++) b->mask[(size_t)i * T + t] = t < x->len[r];
    if (x->ng_offs) {
      for (int t = 0; t < T; t++) {
        b->ng_offs[(size_t)i * T + t] = at;
        size_t a = x->ng_offs[base + t], e = x->ng_offs[base + t + 1];
        memcpy(b->ng_ids + at, x->ng_ids + a, (e - a) * sizeof *b->ng_ids);
        at += e - a;
      }
    }
  }
  if (x->ng_offs) b->ng_offs[(size_t)B * T] = at;
  *out = (nn_tfm_batch){.B = B, .T = T, .ids = b->ids, .mask = b->mask,
                        .ng_offs = x->ng_offs ? b->ng_offs : NULL, .ng_ids = x->ng_offs ? b->ng_ids : NULL};
  return T;
}

/* BERT's masking on a filled batch: each real token but [CLS] is chosen with
 * probability p; a chosen token becomes [MASK] (80%), a random piece (10%)
 * or stays (10%). Positions and true ids go to b->mpos / b->mtgt; returns P.
 * At most cap positions. */
int nn__tfm_batch_mask(nn__tfm_batch_buf *b, const nn_tfm_batch *nb, float p, uint32_t V, int cap, nn_rng *rng) {
  int P = 0;
  const uint32_t first_piece = NN_TOK_MASK + 1;
  for (int i = 0; i < nb->B; i++) {
    for (int t = 1; t < nb->T; t++) {
      size_t k = (size_t)i * nb->T + t;
      if (!b->mask[k] || P >= cap) continue;
      if (nn_rng_uniform(rng) >= p) continue;
      b->mpos[P] = (int32_t)k;
      b->mtgt[P] = b->ids[k];
      P++;
      float r = nn_rng_uniform(rng);
      if (r < 0.8f) b->ids[k] = NN_TOK_MASK;
      else if (r < 0.9f) b->ids[k] = (int32_t)(first_piece + nn_rng_below(rng, V - first_piece));
    }
  }
  return P;
}
