#include "nn/tokenizer.h"

#include <stdlib.h>
#include <string.h>

#include "core/text.h"

enum {
  MAX_WORD = 100,        /* bytes; longer words skip the longest-match search */
  MAX_PIECE = 1024,      /* bytes, a bound checked on load */
  N_FIXED = NN_TOK_N_SPECIAL + NN_TOK_N_BYTE,
  N_PLACEHOLDERS = 6,
  MIN_VOCAB = N_FIXED + N_PLACEHOLDERS,
  HEADER = 24,
};

static const char *const SPECIALS[NN_TOK_N_SPECIAL] = {"[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"};
static const char *const PLACEHOLDERS[N_PLACEHOLDERS] = {"<card>", "<iban>",  "<email>",
                                                         "<phone>", "<ssn>", "<account>"};

/* Key tags. A piece's key is its tag and its body: the piece without "##"
 * for a continuation, the whole piece otherwise. Specials and byte tokens
 * have a tag of their own so text can never match them ("<0x41>" typed by a
 * user is a placeholder-shaped word, not the byte 0x41). The training
 * counters share the table type with tags of their own. */
enum {
  TAG_SPECIAL = 's', TAG_INIT = 'i', TAG_CONT = 'c', /* pieces */
  TAG_WORD = 'w', TAG_PH = 'p', TAG_CH_INIT = 'x', TAG_CH_CONT = 'y' /* training counts */
};

/* ---- keyed string table: open addressing over an arena ----------------- */

typedef struct {
  char *arena; /* entries back to back, each NUL-terminated */
  size_t alen, acap;
  uint32_t *off, *len; /* full string (for pieces: with "##") */
  uint32_t *boff;      /* body offset within the string: 2 for TAG_CONT, else 0 */
  uint8_t *tag;
  uint64_t *hash, *count;
  uint32_t n, ncap;
  uint32_t *slots; /* index + 1; 0 = empty; capacity a power of two */
  size_t cap;
} tab;

static void tab_free(tab *t) {
  free(t->arena);
  free(t->off);
  free(t->len);
  free(t->boff);
  free(t->tag);
  free(t->hash);
  free(t->count);
  free(t->slots);
  memset(t, 0, sizeof *t);
}

static const char *tab_str(const tab *t, uint32_t i) { return t->arena + t->off[i]; }

static uint64_t key_hash(uint8_t tag, const char *body, size_t blen) { return nn_feature_hash(tag, body, blen); }

/* Slot holding (tag, body), or the empty slot where it would go. */
static size_t tab_probe(const tab *t, uint8_t tag, const char *body, size_t blen, uint64_t h) {
  size_t mask = t->cap - 1, i = (size_t)h & mask;
  for (;;) {
    uint32_t s = t->slots[i];
    if (s == 0) return i;
    uint32_t k = s - 1;
    if (t->hash[k] == h && t->tag[k] == tag && t->len[k] - t->boff[k] == blen &&
        memcmp(tab_str(t, k) + t->boff[k], body, blen) == 0)
      return i;
    i = (i + 1) & mask;
  }
}

static int32_t tab_find(const tab *t, uint8_t tag, const char *body, size_t blen) {
  if (t->cap == 0) return -1;
  uint32_t s = t->slots[tab_probe(t, tag, body, blen, key_hash(tag, body, blen))];
  return s ? (int32_t)(s - 1) : -1;
}

static int tab_rehash(tab *t, size_t cap) {
  uint32_t *slots = calloc(cap, sizeof *slots);
  if (!slots) return -1;
  free(t->slots);
  t->slots = slots;
  t->cap = cap;
  for (uint32_t k = 0; k < t->n; k++) {
    size_t i = (size_t)t->hash[k] & (cap - 1);
    while (slots[i]) i = (i + 1) & (cap - 1);
    slots[i] = k + 1;
  }
  return 0;
}

static int tab_grow(tab *t) {
  if (t->n == t->ncap) {
    if (t->ncap > UINT32_MAX / 4) return -1;
    uint32_t nc = t->ncap ? t->ncap * 2 : 64;
#define GROW(field)                                                                                \
  do {                                                                                             \
    void *p_ = realloc(t->field, (size_t)nc * sizeof *t->field);                                   \
    if (!p_) return -1;                                                                            \
    t->field = p_;                                                                                 \
  } while (0)
    GROW(off);
    GROW(len);
    GROW(boff);
    GROW(tag);
    GROW(hash);
    GROW(count);
#undef GROW
    t->ncap = nc;
  }
  return 0;
}

/* Adds count to the entry (tag, prefix + body), inserting it when new; the
 * key is (tag, body), prefix ("##" or "") is stored before the body. Returns
 * its index, or -1 on out-of-memory. *added (may be NULL) says whether it was
 * new. */
static int64_t tab_add(tab *t, uint8_t tag, const char *prefix, const char *body, size_t blen, uint64_t count,
                       int *added) {
  if (added) *added = 0;
  if (((size_t)t->n + 1) * 2 > t->cap && tab_rehash(t, t->cap ? t->cap * 2 : 64) != 0) return -1;
  uint64_t h = key_hash(tag, body, blen);
  size_t slot = tab_probe(t, tag, body, blen, h);
  if (t->slots[slot]) {
    uint32_t k = t->slots[slot] - 1;
    t->count[k] += count;
    return k;
  }
  size_t plen = strlen(prefix), len = plen + blen;
  if (t->n >= UINT32_MAX - 1 || t->alen + len + 1 > UINT32_MAX || tab_grow(t) != 0) return -1;
  if (t->alen + len + 1 > t->acap) {
    size_t ac = t->acap ? t->acap : 1024;
    while (ac < t->alen + len + 1) ac *= 2;
    char *a = realloc(t->arena, ac);
    if (!a) return -1;
    t->arena = a;
    t->acap = ac;
  }
  memcpy(t->arena + t->alen, prefix, plen);
  memcpy(t->arena + t->alen + plen, body, blen);
  t->arena[t->alen + len] = '\0';
  uint32_t k = t->n++;
  t->off[k] = (uint32_t)t->alen;
  t->len[k] = (uint32_t)len;
  t->boff[k] = (uint32_t)plen;
  t->tag[k] = tag;
  t->hash[k] = h;
  t->count[k] = count;
  t->alen += len + 1;
  t->slots[slot] = k + 1;
  if (added) *added = 1;
  return k;
}

/* ---- the tokenizer ----------------------------------------------------- */

struct nn_tokenizer {
  tab p;             /* piece i = entry i */
  uint32_t max_word; /* bytes */
  uint32_t max_body; /* longest TAG_INIT / TAG_CONT body, bytes */
};

void nn_tokenizer_free(nn_tokenizer *t) {
  if (!t) return;
  tab_free(&t->p);
  free(t);
}

/* Adds piece s[0..len) as id nn_tokenizer_size(t). Ids below N_FIXED are
 * specials and bytes; "##x" is a continuation; the rest word-initial.
 * Returns 0, 1 when the piece already exists (not added), -1 on
 * out-of-memory. */
static int piece_add(nn_tokenizer *t, const char *s, size_t len) {
  uint8_t tag = TAG_INIT;
  const char *prefix = "";
  if (t->p.n < N_FIXED) {
    tag = TAG_SPECIAL;
  } else if (len > 2 && s[0] == '#' && s[1] == '#') {
    tag = TAG_CONT;
    prefix = "##";
    s += 2;
    len -= 2;
  }
  if (tag == TAG_INIT && tab_find(&t->p, TAG_SPECIAL, s, len) >= 0) return 1;
  int added;
  if (tab_add(&t->p, tag, prefix, s, len, 0, &added) < 0) return -1;
  if (!added) return 1;
  if (tag != TAG_SPECIAL && len > t->max_body) t->max_body = (uint32_t)len;
  return 0;
}

static void byte_name(char out[7], unsigned b) {
  static const char hex[] = "0123456789ABCDEF";
  memcpy(out, "<0x", 3);
  out[3] = hex[b >> 4];
  out[4] = hex[b & 15];
  out[5] = '>';
  out[6] = '\0';
}

/* A tokenizer holding the specials and the byte tokens. */
static nn_tokenizer *tokenizer_base(uint32_t max_word) {
  nn_tokenizer *t = calloc(1, sizeof *t);
  if (!t) return NULL;
  t->max_word = max_word;
  for (int i = 0; i < NN_TOK_N_SPECIAL; i++)
    if (piece_add(t, SPECIALS[i], strlen(SPECIALS[i])) != 0) goto fail;
  for (unsigned b = 0; b < NN_TOK_N_BYTE; b++) {
    char name[7];
    byte_name(name, b);
    if (piece_add(t, name, 6) != 0) goto fail;
  }
  return t;
fail:
  nn_tokenizer_free(t);
  return NULL;
}

uint32_t nn_tokenizer_size(const nn_tokenizer *t) { return t->p.n; }

const char *nn_tokenizer_piece(const nn_tokenizer *t, int32_t id) {
  return id >= 0 && (uint32_t)id < t->p.n ? tab_str(&t->p, (uint32_t)id) : NULL;
}

int32_t nn_tokenizer_id(const nn_tokenizer *t, const char *piece) {
  size_t len = strlen(piece);
  if (len > 2 && piece[0] == '#' && piece[1] == '#') return tab_find(&t->p, TAG_CONT, piece + 2, len - 2);
  int32_t id = tab_find(&t->p, TAG_SPECIAL, piece, len);
  return id >= 0 ? id : tab_find(&t->p, TAG_INIT, piece, len);
}

/* ---- encoding ---------------------------------------------------------- */

typedef struct {
  int32_t *ids, *word;
  int n, max;
} enc_out;

static void enc_push(enc_out *e, int32_t id, int32_t word) {
  if (e->n >= e->max) return;
  e->ids[e->n] = id;
  if (e->word) e->word[e->n] = word;
  e->n++;
}

/* Bytes in the UTF-8 sequence led by c (the text is valid UTF-8). */
static size_t utf8_len(unsigned char c) { return c < 0x80 ? 1 : c < 0xE0 ? 2 : c < 0xF0 ? 3 : 4; }

/* Greedy longest-match-first over w[0..len); a position no piece matches
 * gives its character's bytes and matching resumes after it. A placeholder
 * in the vocabulary is the longest match of its own token. */
static void encode_word(const nn_tokenizer *t, const char *w, size_t len, int32_t k, enc_out *e) {
  int greedy = len <= t->max_word;
  size_t start = 0;
  while (start < len && e->n < e->max) {
    uint8_t tag = start ? TAG_CONT : TAG_INIT;
    size_t cl = utf8_len((unsigned char)w[start]);
    size_t end = greedy ? start + t->max_body : start + cl;
    if (end > len) end = len;
    int32_t id = -1;
    for (; end > start; end--) {
      if (end < len && ((unsigned char)w[end] & 0xC0) == 0x80) continue;
      id = tab_find(&t->p, tag, w + start, end - start);
      if (id >= 0 || !greedy) break;
    }
    if (id >= 0) {
      enc_push(e, id, k);
      start = end;
      continue;
    }
    for (size_t b = 0; b < cl && start + b < len; b++) enc_push(e, NN_TOK_BYTE0 + (unsigned char)w[start + b], k);
    start += cl;
  }
}

finch_status nn_tokenizer_words(const nn_tokenizer *t, const char *text, nn_tokens *out, finch_err *err) {
  return nn_tokenize_symbols(text, out, err);
}

int nn_tokenizer_encode(const nn_tokenizer *t, const char *text, int32_t *ids, int32_t *word, int max_len) {
  if (!t || !text || !ids || max_len < 2) return -2;
  nn_tokens tk = {0};
  finch_status st = nn_tokenize_symbols(text, &tk, NULL);
  if (st != FINCH_OK) {
    nn_tokens_free(&tk);
    return st == FINCH_EFORMAT || st == FINCH_EINVAL ? -1 : -2;
  }
  enc_out e = {ids, word, 0, max_len};
  enc_push(&e, NN_TOK_CLS, -1);
  for (size_t k = 0; k < tk.n && e.n < e.max; k++)
    encode_word(t, tk.norm + tk.tok[k].off, tk.tok[k].len, (int32_t)k, &e);
  nn_tokens_free(&tk);
  return e.n;
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
static finch_status count_texts(tab *cnt, const char *const *texts, size_t n, finch_err *err) {
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
      if (tab_add(cnt, tag, "", tk.norm + tk.tok[k].off, tk.tok[k].len, 1, NULL) < 0) {
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
static int count_chars(tab *cnt) {
  uint32_t nwords = cnt->n;
  for (uint32_t k = 0; k < nwords; k++) {
    if (cnt->tag[k] != TAG_WORD) continue;
    uint32_t len = cnt->len[k], c = 0;
    uint64_t wc = cnt->count[k];
    for (uint32_t i = 0; i < len; i += c) {
      c = (uint32_t)utf8_len((unsigned char)cnt->arena[cnt->off[k] + i]);
      /* tab_add may move the arena: copy the character first. */
      char ch[4];
      memcpy(ch, cnt->arena + cnt->off[k] + i, c);
      if (tab_add(cnt, i ? TAG_CH_CONT : TAG_CH_INIT, "", ch, c, wc, NULL) < 0) return -1;
    }
  }
  return 0;
}

/* Adds the placeholders and the alphabet to t (up to vocab_size pieces). */
static finch_status add_alphabet(nn_tokenizer *t, const tab *cnt, uint32_t vocab_size, uint32_t min_freq,
                                 finch_err *err) {
  ranked *r = malloc(((size_t)cnt->n + 1) * sizeof *r);
  if (!r) return finch_err_set(err, FINCH_ENOMEM, "out of memory ranking %u entries", cnt->n);
  size_t nr = 0;
  for (uint32_t k = 0; k < cnt->n; k++)
    if (cnt->tag[k] == TAG_PH && cnt->count[k] >= min_freq) r[nr++] = (ranked){cnt->count[k], tab_str(cnt, k)};
  qsort(r, nr, sizeof *r, ranked_cmp);
  for (size_t i = 0; i < nr && t->p.n < vocab_size; i++)
    if (piece_add(t, r[i].s, strlen(r[i].s)) < 0) goto oom;
  nr = 0;
  for (uint32_t k = 0; k < cnt->n; k++) {
    const char *s = tab_str(cnt, k);
    uint64_t total = cnt->count[k];
    if (cnt->tag[k] == TAG_CH_INIT) {
      int32_t c = tab_find(cnt, TAG_CH_CONT, s, cnt->len[k]);
      if (c >= 0) total += cnt->count[c];
    } else if (cnt->tag[k] != TAG_CH_CONT || tab_find(cnt, TAG_CH_INIT, s, cnt->len[k]) >= 0) {
      continue;
    }
    if (total >= min_freq) r[nr++] = (ranked){total, s};
  }
  qsort(r, nr, sizeof *r, ranked_cmp);
  for (size_t i = 0; i < nr && t->p.n < vocab_size; i++) {
    size_t len = strlen(r[i].s);
    if (piece_add(t, r[i].s, len) < 0) goto oom;
    if (t->p.n < vocab_size && tab_find(cnt, TAG_CH_CONT, r[i].s, len) >= 0) {
      char cont[8] = "##";
      memcpy(cont + 2, r[i].s, len + 1);
      if (piece_add(t, cont, len + 2) < 0) goto oom;
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
static int build_words(words *ws, const tab *cnt, const nn_tokenizer *t) {
  size_t total = 0;
  uint32_t nw = 0;
  for (uint32_t k = 0; k < cnt->n; k++)
    if (cnt->tag[k] == TAG_WORD && cnt->len[k] <= t->max_word) total += cnt->len[k], nw++;
  ws->sym = malloc((total + 1) * sizeof *ws->sym);
  ws->start = malloc(((size_t)nw + 1) * sizeof *ws->start);
  ws->len = malloc(((size_t)nw + 1) * sizeof *ws->len);
  ws->count = malloc(((size_t)nw + 1) * sizeof *ws->count);
  if (!ws->sym || !ws->start || !ws->len || !ws->count) return -1;
  size_t at = 0;
  for (uint32_t k = 0; k < cnt->n; k++) {
    if (cnt->tag[k] != TAG_WORD || cnt->len[k] > t->max_word) continue;
    const char *s = tab_str(cnt, k);
    uint32_t len = cnt->len[k], ns = 0;
    for (uint32_t i = 0; i < len;) {
      uint32_t c = (uint32_t)utf8_len((unsigned char)s[i]);
      ws->sym[at + ns++] = tab_find(&t->p, i ? TAG_CONT : TAG_INIT, s + i, c);
      i += c;
    }
    if (ns < 2) continue;
    ws->start[ws->n] = at;
    ws->len[ws->n] = ns;
    ws->count[ws->n++] = cnt->count[k];
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
  for (uint32_t m = 0; t->p.n < vocab_size && hp.n > 0;) {
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
    const char *sa = tab_str(&t->p, (uint32_t)top.a), *sb = tab_str(&t->p, (uint32_t)top.b) + 2;
    size_t la = t->p.len[top.a], lb = t->p.len[top.b] - 2;
    memcpy(buf, sa, la);
    memcpy(buf + la, sb, lb);
    int rc = piece_add(t, buf, la + lb);
    if (rc < 0) goto oom;
    /* An existing piece (the same string from another split) is reused. */
    int32_t fresh = (int32_t)t->p.n - 1;
    if (rc > 0) {
      uint8_t tag = t->p.tag[top.a];
      fresh = tab_find(&t->p, tag, buf + t->p.boff[top.a], la + lb - t->p.boff[top.a]);
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
  st = finch_err_set(err, FINCH_ENOMEM, "out of memory learning merges (%u pieces, %u pairs)", t->p.n, pt.n);
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
  tab cnt = {0};
  words ws = {0};
  finch_status st = FINCH_OK;
  nn_tokenizer *t = tokenizer_base(MAX_WORD);
  if (!t) return finch_err_set(err, FINCH_ENOMEM, "out of memory for the tokenizer");
  for (int i = 0; i < N_PLACEHOLDERS; i++)
    if (piece_add(t, PLACEHOLDERS[i], strlen(PLACEHOLDERS[i])) < 0) goto oom;
  st = count_texts(&cnt, texts, n, err);
  if (st != FINCH_OK) goto out;
  if (count_chars(&cnt)) goto oom;
  st = add_alphabet(t, &cnt, vocab_size, min_freq, err);
  if (st != FINCH_OK) goto out;
  if (build_words(&ws, &cnt, t)) goto oom;
  tab_free(&cnt);
  st = learn_merges(t, &ws, vocab_size, min_freq, err);
  goto out;
oom:
  st = finch_err_set(err, FINCH_ENOMEM, "out of memory training the tokenizer on %zu texts", n);
out:
  words_free(&ws);
  tab_free(&cnt);
  if (st != FINCH_OK) {
    nn_tokenizer_free(t);
    return st;
  }
  *out = t;
  return FINCH_OK;
}

/* ---- serialisation ----------------------------------------------------- */

static void put_u32(unsigned char *p, uint32_t v) {
  p[0] = (unsigned char)v;
  p[1] = (unsigned char)(v >> 8);
  p[2] = (unsigned char)(v >> 16);
  p[3] = (unsigned char)(v >> 24);
}

static uint32_t get_u32(const unsigned char *p) {
  return (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 | (uint32_t)p[3] << 24;
}

finch_status nn_tokenizer_save(const nn_tokenizer *t, unsigned char **buf, size_t *len, finch_err *err) {
  *buf = NULL;
  *len = 0;
  size_t total = HEADER;
  for (uint32_t i = 0; i < t->p.n; i++) total += 4 + t->p.len[i];
  unsigned char *b = malloc(total);
  if (!b) return finch_err_set(err, FINCH_ENOMEM, "out of memory for a %zu-byte tokenizer blob", total);
  memcpy(b, NN_TOKENIZER_MAGIC, 4);
  put_u32(b + 4, NN_TOKENIZER_VERSION);
  put_u32(b + 8, t->p.n);
  put_u32(b + 12, NN_TOK_N_SPECIAL);
  put_u32(b + 16, NN_TOK_N_BYTE);
  put_u32(b + 20, t->max_word);
  size_t at = HEADER;
  for (uint32_t i = 0; i < t->p.n; i++) {
    put_u32(b + at, t->p.len[i]);
    memcpy(b + at + 4, tab_str(&t->p, i), t->p.len[i]);
    at += 4 + t->p.len[i];
  }
  *buf = b;
  *len = total;
  return FINCH_OK;
}

finch_status nn_tokenizer_load(nn_tokenizer **out, const unsigned char *buf, size_t len, finch_err *err) {
  *out = NULL;
  if (len < HEADER)
    return finch_err_set(err, FINCH_EFORMAT, "tokenizer: %zu bytes, shorter than the %d-byte header", len, HEADER);
  if (memcmp(buf, NN_TOKENIZER_MAGIC, 4) != 0)
    return finch_err_set(err, FINCH_EFORMAT, "tokenizer: bad magic at offset 0 (expected \"%s\")", NN_TOKENIZER_MAGIC);
  uint32_t version = get_u32(buf + 4), n = get_u32(buf + 8), ns = get_u32(buf + 12), nb = get_u32(buf + 16),
           max_word = get_u32(buf + 20);
  if (version != NN_TOKENIZER_VERSION)
    return finch_err_set(err, FINCH_EFORMAT, "tokenizer: unsupported version %u at offset 4 (expected %u)", version,
                         NN_TOKENIZER_VERSION);
  if (ns != NN_TOK_N_SPECIAL || nb != NN_TOK_N_BYTE)
    return finch_err_set(err, FINCH_EFORMAT, "tokenizer: %u specials and %u byte tokens (expected %d and %d)", ns, nb,
                         NN_TOK_N_SPECIAL, NN_TOK_N_BYTE);
  if (max_word < 1 || max_word > 65535)
    return finch_err_set(err, FINCH_EFORMAT, "tokenizer: max_word %u at offset 20 is out of range 1..65535", max_word);
  if (n < N_FIXED || n > INT32_MAX || (size_t)n > (len - HEADER) / 5)
    return finch_err_set(err, FINCH_EFORMAT,
                         "tokenizer: n_pieces %u at offset 8 does not fit: needs %d..%zu for a %zu-byte blob", n,
                         N_FIXED, (len - HEADER) / 5, len);
  nn_tokenizer *t = calloc(1, sizeof *t);
  if (!t) return finch_err_set(err, FINCH_ENOMEM, "out of memory for the tokenizer");
  t->max_word = max_word;
  finch_status st = FINCH_OK;
  size_t at = HEADER;
  for (uint32_t i = 0; i < n; i++) {
    if (len - at < 4) {
      st = finch_err_set(err, FINCH_EFORMAT, "tokenizer: piece %u: length at offset %zu runs past the end (%zu bytes)",
                         i, at, len);
      goto out;
    }
    uint32_t plen = get_u32(buf + at);
    if (plen < 1 || plen > MAX_PIECE) {
      st = finch_err_set(err, FINCH_EFORMAT, "tokenizer: piece %u: length %u at offset %zu is out of range 1..%d", i,
                         plen, at, MAX_PIECE);
      goto out;
    }
    at += 4;
    if (plen > len - at) {
      st = finch_err_set(err, FINCH_EFORMAT,
                         "tokenizer: piece %u: %u bytes at offset %zu run past the end of the %zu-byte blob", i, plen,
                         at, len);
      goto out;
    }
    const char *s = (const char *)buf + at;
    if (memchr(s, '\0', plen) || !finch_utf8_valid(s, plen, NULL)) {
      st = finch_err_set(err, FINCH_EFORMAT, "tokenizer: piece %u at offset %zu is not NUL-free UTF-8", i, at);
      goto out;
    }
    char want[7];
    const char *fixed = NULL;
    if (i < NN_TOK_N_SPECIAL) {
      fixed = SPECIALS[i];
    } else if (i < N_FIXED) {
      byte_name(want, i - NN_TOK_BYTE0);
      fixed = want;
    }
    if (fixed && (strlen(fixed) != plen || memcmp(fixed, s, plen) != 0)) {
      st = finch_err_set(err, FINCH_EFORMAT, "tokenizer: piece %u at offset %zu is \"%.*s\", expected \"%s\"", i, at,
                         (int)(plen > 32 ? 32 : plen), s, fixed);
      goto out;
    }
    if (plen == 2 && s[0] == '#' && s[1] == '#') {
      st = finch_err_set(err, FINCH_EFORMAT, "tokenizer: piece %u at offset %zu is an empty continuation \"##\"", i,
                         at);
      goto out;
    }
    int rc = piece_add(t, s, plen);
    if (rc < 0) {
      st = finch_err_set(err, FINCH_ENOMEM, "out of memory loading tokenizer piece %u", i);
      goto out;
    }
    if (rc > 0) {
      st = finch_err_set(err, FINCH_EFORMAT, "tokenizer: piece %u \"%.*s\" at offset %zu is a duplicate", i,
                         (int)(plen > 32 ? 32 : plen), s, at);
      goto out;
    }
    at += plen;
  }
  if (at != len) st = finch_err_set(err, FINCH_EFORMAT, "tokenizer: %zu trailing bytes after the last piece", len - at);
out:
  if (st != FINCH_OK) {
    nn_tokenizer_free(t);
    return st;
  }
  *out = t;
  return FINCH_OK;
}
