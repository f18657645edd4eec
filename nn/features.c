#include "nn/features.h"

#include <stdlib.h>
#include <string.h>
#include <utf8proc.h>

#include "core/text.h"
#include "nn/strtab.h"

/* ---- hashing ---------------------------------------------------------- */

#define FNV_OFFSET 0xcbf29ce484222325ULL
#define FNV_PRIME 0x100000001b3ULL

static uint64_t fnv1a_update(uint64_t h, const void *p, size_t len) {
  const unsigned char *s = p;
  for (size_t i = 0; i < len; i++) h = (h ^ s[i]) * FNV_PRIME;
  return h;
}

/* splitmix64's finaliser: FNV-1a's low bits alone are weak for a modulo. */
static uint64_t mix64(uint64_t z) {
  z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
  z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
  return z ^ (z >> 31);
}

uint64_t nn_feature_hash(uint8_t tag, const char *s, size_t len) {
  return mix64(fnv1a_update(fnv1a_update(FNV_OFFSET, &tag, 1), s, len));
}

enum { TAG_WORD = 'w', TAG_BIGRAM = 'b', TAG_CHAR = 'c' };

/* ---- tokenizer --------------------------------------------------------- */

static int is_cjk(int32_t cp) {
  return (cp >= 0x3040 && cp <= 0x30FF) ||   /* hiragana, katakana */
         (cp >= 0x31F0 && cp <= 0x31FF) ||   /* katakana extensions */
         (cp >= 0x3400 && cp <= 0x4DBF) ||   /* CJK extension A */
         (cp >= 0x4E00 && cp <= 0x9FFF) ||   /* CJK unified ideographs */
         (cp >= 0xF900 && cp <= 0xFAFF) ||   /* compatibility ideographs */
         (cp >= 0x20000 && cp <= 0x3FFFF);   /* extensions B and later */
}

static int is_word_cp(int32_t cp) {
  if (cp == '\'') return 1;
  if (cp < 0x80) return (cp >= 'a' && cp <= 'z') || (cp >= 'A' && cp <= 'Z') || (cp >= '0' && cp <= '9');
  switch (utf8proc_category(cp)) {
  case UTF8PROC_CATEGORY_LU: case UTF8PROC_CATEGORY_LL: case UTF8PROC_CATEGORY_LT:
  case UTF8PROC_CATEGORY_LM: case UTF8PROC_CATEGORY_LO: case UTF8PROC_CATEGORY_MN:
  case UTF8PROC_CATEGORY_MC: case UTF8PROC_CATEGORY_ME: case UTF8PROC_CATEGORY_ND:
  case UTF8PROC_CATEGORY_NL: case UTF8PROC_CATEGORY_NO:
    return 1;
  default:
    return 0;
  }
}

static int is_placeholder_byte(unsigned char c) {
  return (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '_';
}

/* Rewrites U+2018, U+2019 and U+02BC as ASCII ' in place (never grows). */
static void fold_apostrophes(char *s) {
  size_t o = 0;
  for (size_t i = 0; s[i];) {
    unsigned char c0 = (unsigned char)s[i];
    if (c0 == 0xE2 && (unsigned char)s[i + 1] == 0x80 &&
        ((unsigned char)s[i + 2] == 0x98 || (unsigned char)s[i + 2] == 0x99)) {
      s[o++] = '\'';
      i += 3;
    } else if (c0 == 0xCA && (unsigned char)s[i + 1] == 0xBC) {
      s[o++] = '\'';
      i += 2;
    } else {
      s[o++] = s[i++];
    }
  }
  s[o] = '\0';
}

static int tokens_push(nn_tokens *t, size_t off, size_t len, uint32_t kind) {
  if (t->n == t->cap) {
    size_t nc = t->cap ? t->cap * 2 : 32;
    nn_token *p = realloc(t->tok, nc * sizeof *p);
    if (!p) return -1;
    t->tok = p;
    t->cap = nc;
  }
  t->tok[t->n++] = (nn_token){(uint32_t)off, (uint32_t)len, kind};
  return 0;
}

void nn_tokens_free(nn_tokens *t) {
  if (!t) return;
  free(t->norm);
  free(t->tok);
  memset(t, 0, sizeof *t);
}

/* Punctuation and symbols: what is left once words, placeholders, CJK and
 * white space are taken out. */
static int is_symbol_cp(int32_t cp) {
  if (cp == ' ') return 0;
  switch (utf8proc_category(cp)) {
  case UTF8PROC_CATEGORY_ZS: case UTF8PROC_CATEGORY_ZL: case UTF8PROC_CATEGORY_ZP:
  case UTF8PROC_CATEGORY_CC:
    return 0;
  default:
    return 1;
  }
}

/* symbols = 1 also emits NN_TOKEN_SYMBOL tokens (nn_tokenize_symbols). */
static finch_status tokenize(const char *text, int symbols, nn_tokens *out, finch_err *err) {
  free(out->norm);
  out->norm = NULL;
  out->n = 0;
  size_t tlen = strlen(text);
  if (tlen >= UINT32_MAX) return finch_err_set(err, FINCH_EINVAL, "text of %zu bytes is too long", tlen);
  finch_status st = finch_text_normalize(text, tlen, FINCH_TEXT_FOLD, &out->norm, err);
  if (st != FINCH_OK) return st;
  char *s = out->norm;
  fold_apostrophes(s);
  const utf8proc_uint8_t *u = (const utf8proc_uint8_t *)s;
  size_t n = strlen(s), i = 0;
  while (i < n) {
    utf8proc_int32_t cp;
    utf8proc_ssize_t k = utf8proc_iterate(u + i, (utf8proc_ssize_t)(n - i), &cp);
    if (k <= 0) return finch_err_set(err, FINCH_EINTERNAL, "normalised text is not UTF-8 at byte %zu", i);
    if (cp == '<') {
      size_t j = i + 1;
      while (j < n && is_placeholder_byte((unsigned char)s[j])) j++;
      if (j > i + 1 && j < n && s[j] == '>') {
        if (tokens_push(out, i, j + 1 - i, NN_TOKEN_PLACEHOLDER)) goto oom;
        i = j + 1;
        continue;
      }
    }
    if (is_cjk(cp)) {
      if (tokens_push(out, i, (size_t)k, NN_TOKEN_CJK)) goto oom;
      i += (size_t)k;
      continue;
    }
    if (!is_word_cp(cp)) {
      if (symbols && is_symbol_cp(cp) && tokens_push(out, i, (size_t)k, NN_TOKEN_SYMBOL)) goto oom;
      i += (size_t)k;
      continue;
    }
    size_t start = i, end = i + (size_t)k;
    while (end < n) {
      k = utf8proc_iterate(u + end, (utf8proc_ssize_t)(n - end), &cp);
      if (k <= 0 || is_cjk(cp) || !is_word_cp(cp)) break;
      end += (size_t)k;
    }
    i = end;
    while (start < end && s[start] == '\'') {
      if (symbols && tokens_push(out, start, 1, NN_TOKEN_SYMBOL)) goto oom;
      start++;
    }
    size_t trail = end;
    while (end > start && s[end - 1] == '\'') end--;
    if (end > start && tokens_push(out, start, end - start, NN_TOKEN_WORD)) goto oom;
    for (size_t q = end > start ? end : trail; symbols && q < trail; q++)
      if (tokens_push(out, q, 1, NN_TOKEN_SYMBOL)) goto oom;
  }
  return FINCH_OK;
oom:
  return finch_err_set(err, FINCH_ENOMEM, "out of memory tokenising %zu bytes", tlen);
}

finch_status nn_tokenize(const char *text, nn_tokens *out, finch_err *err) {
  return tokenize(text, 0, out, err);
}

finch_status nn_tokenize_symbols(const char *text, nn_tokens *out, finch_err *err) {
  return tokenize(text, 1, out, err);
}

/* ---- featurizer -------------------------------------------------------- */

struct nn_featurizer {
  nn_feat_config cfg;
  nn_strtab vocab; /* row i = word i */
};

static finch_status check_config(const nn_feat_config *cfg, finch_err *err) {
  if (cfg->word_ngrams < 1 || cfg->word_ngrams > 2)
    return finch_err_set(err, FINCH_EINVAL, "word_ngrams must be 1 or 2, not %u", cfg->word_ngrams);
  if (cfg->maxn > 0 && (cfg->minn < 1 || cfg->minn > cfg->maxn))
    return finch_err_set(err, FINCH_EINVAL, "character n-grams need 1 <= minn <= maxn (minn %u, maxn %u)",
                         cfg->minn, cfg->maxn);
  if (cfg->maxn > 64)
    return finch_err_set(err, FINCH_EINVAL, "maxn %u is above the limit of 64", cfg->maxn);
  return FINCH_OK;
}

void nn_featurizer_free(nn_featurizer *f) {
  if (!f) return;
  nn_strtab_free(&f->vocab);
  free(f);
}

finch_status nn_featurizer_from_words(nn_featurizer **out, const char *const *words, size_t n_words,
                                      const nn_feat_config *cfg, finch_err *err) {
  *out = NULL;
  finch_status st = check_config(cfg, err);
  if (st != FINCH_OK) return st;
  nn_featurizer *f = calloc(1, sizeof *f);
  if (!f) return finch_err_set(err, FINCH_ENOMEM, "out of memory for the featurizer");
  f->cfg = *cfg;
  for (size_t i = 0; i < n_words; i++) {
    size_t len = strlen(words[i]);
    int added;
    if (nn_strtab_add(&f->vocab, words[i], len, &added) < 0) {
      nn_featurizer_free(f);
      return finch_err_set(err, FINCH_ENOMEM, "out of memory for a vocabulary of %zu words", n_words);
    }
    if (!added) {
      nn_featurizer_free(f);
      return finch_err_set(err, FINCH_EFORMAT, "vocabulary word %zu \"%s\" is a duplicate", i, words[i]);
    }
  }
  *out = f;
  return FINCH_OK;
}

typedef struct {
  uint64_t count;
  const char *word;
} vocab_entry;

static int vocab_cmp(const void *a, const void *b) {
  const vocab_entry *x = a, *y = b;
  if (x->count != y->count) return x->count > y->count ? -1 : 1;
  return strcmp(x->word, y->word);
}

finch_status nn_featurizer_build(nn_featurizer **out, const char *const *texts, size_t n,
                                 const nn_feat_config *cfg, finch_err *err) {
  *out = NULL;
  finch_status st = check_config(cfg, err);
  if (st != FINCH_OK) return st;
  nn_strtab counts; /* word -> its count (uint64_t) */
  nn_strtab_init(&counts, sizeof(uint64_t));
  nn_tokens tok = {0};
  vocab_entry *ents = NULL;
  const char **words = NULL;
  for (size_t t = 0; t < n; t++) {
    st = nn_tokenize(texts[t], &tok, err);
    if (st != FINCH_OK) {
      finch_err_prefix(err, "text %zu", t);
      goto out;
    }
    for (size_t k = 0; k < tok.n; k++) {
      const char *w = tok.norm + tok.tok[k].off;
      size_t len = tok.tok[k].len;
      int64_t i = nn_strtab_add(&counts, w, len, NULL);
      if (i < 0) {
        st = finch_err_set(err, FINCH_ENOMEM, "out of memory counting words");
        goto out;
      }
      ((uint64_t *)nn_strtab_vals(&counts))[i]++;
    }
  }
  size_t nc = nn_strtab_size(&counts), nv = 0;
  ents = malloc((nc ? nc : 1) * sizeof *ents);
  words = malloc((nc ? nc : 1) * sizeof *words);
  if (!ents || !words) {
    st = finch_err_set(err, FINCH_ENOMEM, "out of memory sorting %zu words", nc);
    goto out;
  }
  const uint64_t *count = nn_strtab_vals(&counts);
  for (size_t k = 0; k < nc; k++)
    if (count[k] >= cfg->min_count) ents[nv++] = (vocab_entry){count[k], nn_strtab_key(&counts, k)};
  qsort(ents, nv, sizeof *ents, vocab_cmp);
  for (size_t k = 0; k < nv; k++) words[k] = ents[k].word;
  st = nn_featurizer_from_words(out, words, nv, cfg, err);
out:
  free(ents);
  free(words);
  nn_tokens_free(&tok);
  nn_strtab_free(&counts);
  return st;
}

const nn_feat_config *nn_featurizer_config(const nn_featurizer *f) { return &f->cfg; }
size_t nn_featurizer_n_words(const nn_featurizer *f) { return nn_strtab_size(&f->vocab); }
const char *nn_featurizer_word(const nn_featurizer *f, size_t i) { return nn_strtab_key(&f->vocab, i); }
size_t nn_featurizer_rows(const nn_featurizer *f) { return nn_strtab_size(&f->vocab) + f->cfg.buckets; }

int64_t nn_featurizer_lookup(const nn_featurizer *f, const char *word, size_t len) {
  return nn_strtab_find(&f->vocab, word, len);
}

void nn_ids_free(nn_ids *ids) {
  if (!ids) return;
  free(ids->ids);
  memset(ids, 0, sizeof *ids);
}

static int ids_push(nn_ids *o, uint32_t id) {
  if (o->n == o->cap) {
    size_t nc = o->cap ? o->cap * 2 : 256;
    uint32_t *p = realloc(o->ids, nc * sizeof *p);
    if (!p) return -1;
    o->ids = p;
    o->cap = nc;
  }
  o->ids[o->n++] = id;
  return 0;
}

/* Pushes the character n-grams of "<" w ">" (w of len bytes). */
static int push_char_ngrams(const nn_featurizer *f, const char *w, size_t len, nn_ids *o) {
  enum { STACK = 128 };
  char sbuf[STACK + 2];
  size_t scp[STACK + 3];
  char *buf = sbuf;
  size_t *cps = scp;
  int rc = 0;
  if (len > STACK) {
    buf = malloc(len + 2);
    cps = malloc((len + 3) * sizeof *cps);
    if (!buf || !cps) {
      rc = -1;
      goto out;
    }
  }
  buf[0] = '<';
  memcpy(buf + 1, w, len);
  buf[len + 1] = '>';
  size_t blen = len + 2, ncp = 0;
  for (size_t i = 0; i < blen; i++)
    if (((unsigned char)buf[i] & 0xC0) != 0x80) cps[ncp++] = i;
  cps[ncp] = blen;
  uint64_t base = fnv1a_update(FNV_OFFSET, &(uint8_t){TAG_CHAR}, 1);
  uint32_t V = (uint32_t)nn_strtab_size(&f->vocab), nb = f->cfg.buckets;
  for (size_t i = 0; i < ncp; i++) {
    for (size_t nlen = f->cfg.minn; nlen <= f->cfg.maxn && i + nlen <= ncp; nlen++) {
      uint64_t h = mix64(fnv1a_update(base, buf + cps[i], cps[i + nlen] - cps[i]));
      if (ids_push(o, V + (uint32_t)(h % nb))) {
        rc = -1;
        goto out;
      }
    }
  }
out:
  if (buf != sbuf) free(buf);
  if (cps != scp) free(cps);
  return rc;
}

finch_status nn_featurize(const nn_featurizer *f, const char *text, nn_ids *out, nn_tokens *tok,
                          finch_err *err) {
  nn_tokens local = {0};
  nn_tokens *t = tok ? tok : &local;
  out->n = 0;
  finch_status st = nn_tokenize(text, t, err);
  if (st != FINCH_OK) goto done;
  uint32_t V = (uint32_t)nn_strtab_size(&f->vocab), nb = f->cfg.buckets;
  uint64_t prev_h = 0; /* FNV state of the previous token, for bigrams */
  for (size_t k = 0; k < t->n; k++) {
    const char *w = t->norm + t->tok[k].off;
    size_t len = t->tok[k].len;
    int64_t id = nn_featurizer_lookup(f, w, len);
    int fail = 0;
    if (id >= 0)
      fail |= ids_push(out, (uint32_t)id);
    else if (nb)
      fail |= ids_push(out, V + (uint32_t)(nn_feature_hash(TAG_WORD, w, len) % nb));
    if (nb && f->cfg.word_ngrams >= 2) {
      /* The bigram hash continues the previous token's state over " " w. */
      if (k > 0) {
        uint64_t h = mix64(fnv1a_update(fnv1a_update(prev_h, " ", 1), w, len));
        fail |= ids_push(out, V + (uint32_t)(h % nb));
      }
      prev_h = fnv1a_update(fnv1a_update(FNV_OFFSET, &(uint8_t){TAG_BIGRAM}, 1), w, len);
    }
    if (nb && f->cfg.maxn > 0 && t->tok[k].kind != NN_TOKEN_PLACEHOLDER)
      fail |= push_char_ngrams(f, w, len, out);
    if (fail) {
      st = finch_err_set(err, FINCH_ENOMEM, "out of memory for the features of a %zu-byte text", strlen(text));
      goto done;
    }
  }
done:
  if (!tok) nn_tokens_free(&local);
  return st;
}
