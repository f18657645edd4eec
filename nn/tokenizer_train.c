/* Learning a tokenizer's vocabulary (nn_tokenizer_train, nn/tokenizer.h):
 * BPE by frequency over word types. */
#include <stdlib.h>
#include <string.h>

#include "core/text.h"
#include "nn/tokenizer_impl.h"

static const char *const PLACEHOLDERS[N_PLACEHOLDERS] = {"<card>", "<iban>",  "<email>",
                                                         "<phone>", "<ssn>", "<account>"};

/* The training count table: entry k's tag, its string (NUL-terminated) and
 * length, its count (the entry's value, uint64_t). */
static uint8_t count_tag(const nn_strtab *cnt, uint32_t k) { return (uint8_t)nn_strtab_key(cnt, k)[0]; }
static const char *count_str(const nn_strtab *cnt, uint32_t k) { return nn_strtab_key(cnt, k) + 1; }
static uint32_t count_len(const nn_strtab *cnt, uint32_t k) { return (uint32_t)nn_strtab_len(cnt, k) - 1; }
static uint64_t count_of(const nn_strtab *cnt, uint32_t k) { return ((const uint64_t *)nn_strtab_vals(cnt))[k]; }

/* Adds n to the count of (tag, body), inserting it when new. Returns -1 on
 * out-of-memory. */
static int count_add(nn_strtab *cnt, uint8_t tag, const char *body, size_t blen, uint64_t n) {
  int64_t k = tab_add(cnt, tag, body, blen, NULL);
  if (k < 0) return -1;
  ((uint64_t *)nn_strtab_vals(cnt))[k] += n;
  return 0;
}

/* ---- training: BPE by frequency over word types ------------------------ */

/* A pair of adjacent symbols and the words it occurs in. The word list may
 * hold stale entries and repeats; a word is rescanned before it is merged. */
typedef struct {
  uint64_t key; /* a << 32 | b */
  int64_t count;
  uint32_t *words;
  uint32_t nw, cw;
  uint32_t touched; /* merge number that last created an occurrence */
} pair_ent;

typedef struct {
  pair_ent *e;
  uint32_t n, ncap;
  uint32_t *slots; /* index + 1 */
  size_t cap;
} pair_tab;

typedef struct {
  int64_t count;
  int32_t a, b;
} heap_ent;

typedef struct {
  heap_ent *h;
  size_t n, cap;
} heap;

typedef struct {
  int32_t *sym; /* all words' symbols; -1 = a character outside the vocabulary */
  size_t *start;
  uint32_t *len;
  uint64_t *count;
  uint32_t n;
} words;

static uint64_t pair_key(int32_t a, int32_t b) { return (uint64_t)(uint32_t)a << 32 | (uint32_t)b; }
static size_t pair_slot0(uint64_t key, size_t cap) { return (size_t)(key * 0x9E3779B97F4A7C15ULL >> 17) & (cap - 1); }

static void pair_tab_free(pair_tab *pt) {
  for (uint32_t i = 0; i < pt->n; i++) free(pt->e[i].words);
  free(pt->e);
  free(pt->slots);
  memset(pt, 0, sizeof *pt);
}

/* Index of the pair, inserting it (count 0) when new; -1 on out-of-memory. */
static int64_t pair_get(pair_tab *pt, uint64_t key) {
  if (((size_t)pt->n + 1) * 2 > pt->cap) {
    size_t cap = pt->cap ? pt->cap * 2 : 1024;
    uint32_t *slots = calloc(cap, sizeof *slots);
    if (!slots) return -1;
    for (uint32_t k = 0; k < pt->n; k++) {
      size_t i = pair_slot0(pt->e[k].key, cap);
      while (slots[i]) i = (i + 1) & (cap - 1);
      slots[i] = k + 1;
    }
    free(pt->slots);
    pt->slots = slots;
    pt->cap = cap;
  }
  size_t i = pair_slot0(key, pt->cap);
  for (; pt->slots[i]; i = (i + 1) & (pt->cap - 1))
    if (pt->e[pt->slots[i] - 1].key == key) return pt->slots[i] - 1;
  if (pt->n == pt->ncap) {
    if (pt->ncap > UINT32_MAX / 4) return -1;
    uint32_t nc = pt->ncap ? pt->ncap * 2 : 1024;
    pair_ent *e = realloc(pt->e, (size_t)nc * sizeof *e);
    if (!e) return -1;
    pt->e = e;
    pt->ncap = nc;
  }
  pt->e[pt->n] = (pair_ent){.key = key, .touched = UINT32_MAX};
  pt->slots[i] = pt->n + 1;
  return pt->n++;
}

/* Adds word w to the pair's list unless it was the last one added. */
static int pair_note_word(pair_ent *p, uint32_t w) {
  if (p->nw && p->words[p->nw - 1] == w) return 0;
  if (p->nw == p->cw) {
    uint32_t nc = p->cw ? p->cw * 2 : 4;
    uint32_t *ws = realloc(p->words, (size_t)nc * sizeof *ws);
    if (!ws) return -1;
    p->words = ws;
    p->cw = nc;
  }
  p->words[p->nw++] = w;
  return 0;
}

/* Max-heap order: higher count first, then lower ids, so ties are broken
 * the same way on every run. */
static int heap_before(const heap_ent *x, const heap_ent *y) {
  if (x->count != y->count) return x->count > y->count;
  if (x->a != y->a) return x->a < y->a;
  return x->b < y->b;
}

static int heap_push(heap *hp, heap_ent v) {
  if (hp->n == hp->cap) {
    size_t nc = hp->cap ? hp->cap * 2 : 1024;
    heap_ent *h = realloc(hp->h, nc * sizeof *h);
    if (!h) return -1;
    hp->h = h;
    hp->cap = nc;
  }
  size_t i = hp->n++;
  while (i > 0 && heap_before(&v, &hp->h[(i - 1) / 2])) {
    hp->h[i] = hp->h[(i - 1) / 2];
    i = (i - 1) / 2;
  }
  hp->h[i] = v;
  return 0;
}

static heap_ent heap_pop(heap *hp) {
  heap_ent top = hp->h[0], v = hp->h[--hp->n];
  size_t i = 0;
  for (;;) {
    size_t c = 2 * i + 1;
    if (c >= hp->n) break;
    if (c + 1 < hp->n && heap_before(&hp->h[c + 1], &hp->h[c])) c++;
    if (!heap_before(&hp->h[c], &v)) break;
    hp->h[i] = hp->h[c];
    i = c;
  }
  if (hp->n) hp->h[i] = v;
  return top;
}

/* Adds delta to every adjacent pair of s[0..len); with note, also records
 * word w for pairs containing symbol `fresh` and marks them touched by merge
 * number m. Returns -1 on out-of-memory. */
static int count_pairs(pair_tab *pt, const int32_t *s, uint32_t len, int64_t delta, int note, uint32_t w,
                       int32_t fresh, uint32_t m, uint32_t **touched, size_t *nt, size_t *ct) {
  for (uint32_t i = 0; i + 1 < len; i++) {
    if (s[i] < 0 || s[i + 1] < 0) continue;
    int64_t k = pair_get(pt, pair_key(s[i], s[i + 1]));
    if (k < 0) return -1;
    pair_ent *p = &pt->e[k];
    p->count += delta;
    if (!note || (s[i] != fresh && s[i + 1] != fresh && fresh != -1)) continue;
    if (pair_note_word(p, w)) return -1;
    if (touched && p->touched != m) {
      p->touched = m;
      if (*nt == *ct) {
        size_t nc = *ct ? *ct * 2 : 64;
        uint32_t *tl = realloc(*touched, nc * sizeof *tl);
        if (!tl) return -1;
        *touched = tl;
        *ct = nc;
      }
      (*touched)[(*nt)++] = (uint32_t)k;
    }
  }
  return 0;
}

typedef struct {
  uint64_t count;
  const char *s;
} ranked;

static int ranked_cmp(const void *x, const void *y) {
  const ranked *a = x, *b = y;
  if (a->count != b->count) return a->count > b->count ? -1 : 1;
  return strcmp(a->s, b->s);
}

/* Counts pre-tokens of all texts into cnt: word types (TAG_WORD, including
 * CJK and symbol tokens) and placeholders (TAG_PH). */
static finch_status count_texts(nn_strtab *cnt, const char *const *texts, size_t n, finch_err *err) {
  nn_tokens tk = {0};
  finch_status st = FINCH_OK;
  for (size_t i = 0; i < n; i++) {
    st = nn_tokenize_symbols(texts[i], &tk, err);
    if (st != FINCH_OK) {
      finch_err_prefix(err, "text %zu", i);
      break;
    }
    for (size_t k = 0; k < tk.n; k++) {
      uint8_t tag = tk.tok[k].kind == NN_TOKEN_PLACEHOLDER ? TAG_PH : TAG_WORD;
      if (count_add(cnt, tag, tk.norm + tk.tok[k].off, tk.tok[k].len, 1) < 0) {
        st = finch_err_set(err, FINCH_ENOMEM, "out of memory counting the words of text %zu", i);
        break;
      }
    }
    if (st != FINCH_OK) break;
  }
  nn_tokens_free(&tk);
  return st;
}

/* Counts each character of each word type as word-initial (TAG_CH_INIT) or
 * continuation (TAG_CH_CONT), weighted by the word's count. */
static int count_chars(nn_strtab *cnt) {
  uint32_t nwords = tab_size(cnt);
  for (uint32_t k = 0; k < nwords; k++) {
    if (count_tag(cnt, k) != TAG_WORD) continue;
    uint32_t len = count_len(cnt, k), c = 0;
    uint64_t wc = count_of(cnt, k);
    for (uint32_t i = 0; i < len; i += c) {
      /* count_add may move the keys: copy the character first. */
      const char *s = count_str(cnt, k) + i;
      c = (uint32_t)utf8_len((unsigned char)s[0]);
      char ch[4];
      memcpy(ch, s, c);
      if (count_add(cnt, i ? TAG_CH_CONT : TAG_CH_INIT, ch, c, wc) < 0) return -1;
    }
  }
  return 0;
}

/* Adds the placeholders and the alphabet to t (up to vocab_size pieces). */
static finch_status add_alphabet(nn_tokenizer *t, const nn_strtab *cnt, uint32_t vocab_size, uint32_t min_freq,
                                 finch_err *err) {
  uint32_t ncnt = tab_size(cnt);
  ranked *r = malloc(((size_t)ncnt + 1) * sizeof *r);
  if (!r) return finch_err_set(err, FINCH_ENOMEM, "out of memory ranking %u entries", ncnt);
  size_t nr = 0;
  for (uint32_t k = 0; k < ncnt; k++)
    if (count_tag(cnt, k) == TAG_PH && count_of(cnt, k) >= min_freq)
      r[nr++] = (ranked){count_of(cnt, k), count_str(cnt, k)};
  qsort(r, nr, sizeof *r, ranked_cmp);
  for (size_t i = 0; i < nr && nn_tokenizer_size(t) < vocab_size; i++)
    if (nn__tok_piece_add(t, r[i].s, strlen(r[i].s)) < 0) goto oom;
  nr = 0;
  for (uint32_t k = 0; k < ncnt; k++) {
    const char *s = count_str(cnt, k);
    uint64_t total = count_of(cnt, k);
    uint8_t tag = count_tag(cnt, k);
    if (tag == TAG_CH_INIT) {
      int32_t c = tab_find(cnt, TAG_CH_CONT, s, count_len(cnt, k));
      if (c >= 0) total += count_of(cnt, (uint32_t)c);
    } else if (tag != TAG_CH_CONT || tab_find(cnt, TAG_CH_INIT, s, count_len(cnt, k)) >= 0) {
      continue;
    }
    if (total >= min_freq) r[nr++] = (ranked){total, s};
  }
  qsort(r, nr, sizeof *r, ranked_cmp);
  for (size_t i = 0; i < nr && nn_tokenizer_size(t) < vocab_size; i++) {
    size_t len = strlen(r[i].s);
    if (nn__tok_piece_add(t, r[i].s, len) < 0) goto oom;
    if (nn_tokenizer_size(t) < vocab_size && tab_find(cnt, TAG_CH_CONT, r[i].s, len) >= 0) {
      char cont[8] = "##";
      memcpy(cont + 2, r[i].s, len + 1);
      if (nn__tok_piece_add(t, cont, len + 2) < 0) goto oom;
    }
  }
  free(r);
  return FINCH_OK;
oom:
  free(r);
  return finch_err_set(err, FINCH_ENOMEM, "out of memory building the alphabet");
}

/* Splits the word types of cnt (up to max_word bytes, two characters or
 * more) into symbols of t's alphabet. */
static int build_words(words *ws, const nn_strtab *cnt, const nn_tokenizer *t) {
  size_t total = 0;
  uint32_t nw = 0, ncnt = tab_size(cnt);
  for (uint32_t k = 0; k < ncnt; k++)
    if (count_tag(cnt, k) == TAG_WORD && count_len(cnt, k) <= t->max_word) total += count_len(cnt, k), nw++;
  ws->sym = malloc((total + 1) * sizeof *ws->sym);
  ws->start = malloc(((size_t)nw + 1) * sizeof *ws->start);
  ws->len = malloc(((size_t)nw + 1) * sizeof *ws->len);
  ws->count = malloc(((size_t)nw + 1) * sizeof *ws->count);
  if (!ws->sym || !ws->start || !ws->len || !ws->count) return -1;
  size_t at = 0;
  for (uint32_t k = 0; k < ncnt; k++) {
    if (count_tag(cnt, k) != TAG_WORD || count_len(cnt, k) > t->max_word) continue;
    const char *s = count_str(cnt, k);
    uint32_t len = count_len(cnt, k), ns = 0;
    for (uint32_t i = 0; i < len;) {
      uint32_t c = (uint32_t)utf8_len((unsigned char)s[i]);
      ws->sym[at + ns++] = tab_find(&t->p, i ? TAG_CONT : TAG_INIT, s + i, c);
      i += c;
    }
    if (ns < 2) continue;
    ws->start[ws->n] = at;
    ws->len[ws->n] = ns;
    ws->count[ws->n++] = count_of(cnt, k);
    at += ns;
  }
  return 0;
}

static void words_free(words *ws) {
  free(ws->sym);
  free(ws->start);
  free(ws->len);
  free(ws->count);
  memset(ws, 0, sizeof *ws);
}

/* Merges the most frequent pair until t holds vocab_size pieces or no pair
 * occurs min_freq times. */
static finch_status learn_merges(nn_tokenizer *t, words *ws, uint32_t vocab_size, uint32_t min_freq,
                                 finch_err *err) {
  pair_tab pt = {0};
  heap hp = {0};
  uint32_t *touched = NULL;
  size_t nt = 0, ct = 0;
  char *buf = NULL;
  finch_status st = FINCH_OK;
  for (uint32_t w = 0; w < ws->n; w++)
    if (count_pairs(&pt, ws->sym + ws->start[w], ws->len[w], (int64_t)ws->count[w], 1, w, -1, 0, NULL, NULL,
                    NULL))
      goto oom;
  for (uint32_t k = 0; k < pt.n; k++) {
    const pair_ent *p = &pt.e[k];
    if (heap_push(&hp, (heap_ent){p->count, (int32_t)(p->key >> 32), (int32_t)(uint32_t)p->key})) goto oom;
  }
  buf = malloc(2 * (size_t)t->max_word + 8);
  if (!buf) goto oom;
  for (uint32_t m = 0; nn_tokenizer_size(t) < vocab_size && hp.n > 0;) {
    heap_ent top = heap_pop(&hp);
    int64_t k = pair_get(&pt, pair_key(top.a, top.b));
    if (k < 0) goto oom;
    int64_t cur = pt.e[k].count;
    if (cur != top.count) {
      /* Stale: a lower count needs a fresh entry; a higher one has one. */
      if (cur > 0 && cur < top.count && heap_push(&hp, (heap_ent){cur, top.a, top.b})) goto oom;
      continue;
    }
    if (cur < (int64_t)min_freq || cur <= 0) break;
    /* The merged piece: a as it is, then b without its "##". */
    const char *sa = piece_str(&t->p, (uint32_t)top.a), *sb = piece_str(&t->p, (uint32_t)top.b) + 2;
    size_t la = piece_len(&t->p, (uint32_t)top.a), lb = piece_len(&t->p, (uint32_t)top.b) - 2;
    memcpy(buf, sa, la);
    memcpy(buf + la, sb, lb);
    int rc = nn__tok_piece_add(t, buf, la + lb);
    if (rc < 0) goto oom;
    /* An existing piece (the same string from another split) is reused. */
    int32_t fresh = (int32_t)nn_tokenizer_size(t) - 1;
    if (rc > 0) {
      /* buf starts with a, a continuation when it is "##" and more (a special
       * never merges). */
      uint8_t tag = la > 2 && buf[0] == '#' && buf[1] == '#' ? TAG_CONT : TAG_INIT;
      size_t boff = tag == TAG_CONT ? 2 : 0; /* the body follows "##" */
      fresh = tab_find(&t->p, tag, buf + boff, la + lb - boff);
      if (fresh < 0) {
        st = finch_err_set(err, FINCH_EINTERNAL, "merged piece \"%.*s\" clashes with a special token", (int)(la + lb),
                           buf);
        goto out;
      }
    }
    m++;
    /* Take the pair's word list: merging never adds to it (fresh differs
     * from a and b), but pair_get may move the entries. */
    uint32_t *list = pt.e[k].words, nl = pt.e[k].nw;
    pt.e[k].words = NULL;
    pt.e[k].nw = pt.e[k].cw = 0;
    nt = 0;
    for (uint32_t i = 0; i < nl; i++) {
      uint32_t w = list[i];
      int32_t *s = ws->sym + ws->start[w];
      uint32_t len = ws->len[w], j = 0;
      int any = 0;
      for (uint32_t q = 0; q + 1 < len && !any; q++) any = s[q] == top.a && s[q + 1] == top.b;
      if (!any) continue;
      int64_t wc = (int64_t)ws->count[w];
      if (count_pairs(&pt, s, len, -wc, 0, w, fresh, m, NULL, NULL, NULL)) goto oom_list;
      for (uint32_t q = 0; q < len;) {
        if (q + 1 < len && s[q] == top.a && s[q + 1] == top.b) {
          s[j++] = fresh;
          q += 2;
        } else {
          s[j++] = s[q++];
        }
      }
      ws->len[w] = j;
      if (count_pairs(&pt, s, j, wc, 1, w, fresh, m, &touched, &nt, &ct)) goto oom_list;
    }
    free(list);
    for (size_t i = 0; i < nt; i++) {
      const pair_ent *p = &pt.e[touched[i]];
      if (p->count > 0 &&
          heap_push(&hp, (heap_ent){p->count, (int32_t)(p->key >> 32), (int32_t)(uint32_t)p->key}))
        goto oom;
    }
    continue;
  oom_list:
    free(list);
    goto oom;
  }
  goto out;
oom:
  st = finch_err_set(err, FINCH_ENOMEM, "out of memory learning merges (%u pieces, %u pairs)", nn_tokenizer_size(t),
                     pt.n);
out:
  free(buf);
  free(touched);
  free(hp.h);
  pair_tab_free(&pt);
  return st;
}

finch_status nn_tokenizer_train(nn_tokenizer **out, const char *const *texts, size_t n, uint32_t vocab_size,
                                uint32_t min_freq, finch_err *err) {
  *out = NULL;
  if (vocab_size < MIN_VOCAB)
    return finch_err_set(err, FINCH_EINVAL, "vocab_size %u is below the minimum of %d (specials, bytes, placeholders)",
                         vocab_size, MIN_VOCAB);
  if (vocab_size > INT32_MAX) return finch_err_set(err, FINCH_EINVAL, "vocab_size %u is above INT32_MAX", vocab_size);
  if (min_freq == 0) min_freq = 1;
  nn_strtab cnt; /* values: counts (uint64_t) */
  nn_strtab_init(&cnt, sizeof(uint64_t));
  words ws = {0};
  finch_status st = FINCH_OK;
  nn_tokenizer *t = nn__tok_base(MAX_WORD);
  if (!t) return finch_err_set(err, FINCH_ENOMEM, "out of memory for the tokenizer");
  for (int i = 0; i < N_PLACEHOLDERS; i++)
    if (nn__tok_piece_add(t, PLACEHOLDERS[i], strlen(PLACEHOLDERS[i])) < 0) goto oom;
  st = count_texts(&cnt, texts, n, err);
  if (st != FINCH_OK) goto out;
  if (count_chars(&cnt)) goto oom;
  st = add_alphabet(t, &cnt, vocab_size, min_freq, err);
  if (st != FINCH_OK) goto out;
  if (build_words(&ws, &cnt, t)) goto oom;
  nn_strtab_free(&cnt);
  st = learn_merges(t, &ws, vocab_size, min_freq, err);
  goto out;
oom:
  st = finch_err_set(err, FINCH_ENOMEM, "out of memory training the tokenizer on %zu texts", n);
out:
  words_free(&ws);
  nn_strtab_free(&cnt);
  if (st != FINCH_OK) {
    nn_tokenizer_free(t);
    return st;
  }
  *out = t;
  return FINCH_OK;
}

