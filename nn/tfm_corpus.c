/* Texts encoded for the encoder (nn_tfm_corpus, nn/tfm_train.h): subword
 * ids with [CLS] first and each token's hashed character n-gram rows. */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "nn/features.h"
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

