/* WordNet lexicon: an open-addressing table of single-word lemmas over the
 * index files, synsets read lazily from the data files kept in memory. */
#include "augment/wordnet.h"

#include <errno.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

enum { NPOS = 4, SENSES = 2 };

/* Parts of speech in tie-break order: banking requests are mostly verbs. */
static const char *const pos_names[NPOS] = {"verb", "noun", "adj", "adv"};

typedef struct {
  const char *key; /* into the index buffer, not NUL-terminated */
  uint32_t klen;
  uint16_t tag[NPOS];         /* tagsense_cnt per part of speech */
  uint8_t n[NPOS];            /* senses kept per part of speech */
  uint32_t off[NPOS][SENSES]; /* byte offsets into data[pos] */
} entry;

struct augment__wordnet {
  char *index[NPOS], *data[NPOS];
  size_t data_len[NPOS];
  entry *entries; /* n_entries used of an upper bound */
  size_t n_entries;
  uint32_t *slots; /* entry index + 1, 0 when empty; mask + 1 slots */
  size_t mask;
};

static finch_status read_file(const char *dir, const char *name, char **buf, size_t *len, finch_err *err) {
  char path[4096];
  snprintf(path, sizeof path, "%s/%s", dir, name);
  FILE *f = fopen(path, "rb");
  if (!f)
    return finch_err_set(err, errno == ENOENT ? FINCH_ENOTFOUND : FINCH_EIO,
                         "%s: %s (install the Debian package wordnet-base or set FINCH_WORDNET_DIR)", path,
                         strerror(errno));
  struct stat st;
  if (fstat(fileno(f), &st) != 0 || st.st_size < 0) {
    fclose(f);
    return finch_err_set(err, FINCH_EIO, "%s: cannot stat", path);
  }
  size_t n = (size_t)st.st_size;
  char *b = malloc(n + 1);
  if (!b) {
    fclose(f);
    return finch_err_set(err, FINCH_ENOMEM, "%s: out of memory for %zu bytes", path, n);
  }
  size_t got = fread(b, 1, n, f);
  fclose(f);
  if (got != n) {
    free(b);
    return finch_err_set(err, FINCH_EIO, "%s: short read (%zu of %zu bytes)", path, got, n);
  }
  b[n] = '\0';
  *buf = b;
  *len = n;
  return FINCH_OK;
}

static uint64_t hash(const char *s, size_t n) {
  uint64_t h = 1469598103934665603ull;
  for (size_t i = 0; i < n; i++) h = (h ^ (unsigned char)s[i]) * 1099511628211ull;
  return h ^ (h >> 29);
}

/* The slot holding key, or the empty slot where it would go. */
static uint32_t *slot_for(const augment__wordnet *wn, const char *key, size_t len) {
  for (size_t i = (size_t)hash(key, len) & wn->mask;; i = (i + 1) & wn->mask) {
    uint32_t e = wn->slots[i];
    if (!e) return &wn->slots[i];
    const entry *en = &wn->entries[e - 1];
    if (en->klen == len && memcmp(en->key, key, len) == 0) return &wn->slots[i];
  }
}

/* Next space-separated token of [*p, end); returns its length, 0 at the end. */
static size_t next_tok(const char **p, const char *end, const char **tok) {
  const char *s = *p;
  while (s < end && *s == ' ') s++;
  const char *t = s;
  while (t < end && *t != ' ' && *t != '\n') t++;
  *tok = s;
  *p = t;
  return (size_t)(t - s);
}

static int tok_ulong(const char *tok, size_t n, int base, unsigned long *v) {
  if (n == 0 || n > 16) return 0;
  char buf[17];
  memcpy(buf, tok, n);
  buf[n] = '\0';
  char *e;
  errno = 0;
  *v = strtoul(buf, &e, base);
  return errno == 0 && *e == '\0';
}

static int plain_lemma(const char *s, size_t n) {
  if (n == 0 || n > 64) return 0;
  for (size_t i = 0; i < n; i++)
    if (s[i] < 'a' || s[i] > 'z') return 0;
  return 1;
}

static finch_status load_index(augment__wordnet *wn, int pos, const char *dir, finch_err *err) {
  char name[32];
  snprintf(name, sizeof name, "index.%s", pos_names[pos]);
  size_t len;
  finch_status st = read_file(dir, name, &wn->index[pos], &len, err);
  if (st) return st;
  const char *p = wn->index[pos], *end = p + len;
  for (long line = 1; p < end; line++) {
    const char *eol = memchr(p, '\n', (size_t)(end - p));
    if (!eol) eol = end;
    const char *q = p, *lemma, *t;
    p = eol + 1;
    if (eol - q >= 2 && q[0] == ' ' && q[1] == ' ') continue; /* licence header */
    size_t llen = next_tok(&q, eol, &lemma);
    if (llen == 0 || !plain_lemma(lemma, llen)) continue;
    unsigned long synset_cnt, p_cnt, tagsense, v;
    size_t n;
    int ok = next_tok(&q, eol, &t) > 0; /* pos */
    ok = ok && (n = next_tok(&q, eol, &t)) && tok_ulong(t, n, 10, &synset_cnt);
    ok = ok && (n = next_tok(&q, eol, &t)) && tok_ulong(t, n, 10, &p_cnt);
    for (unsigned long i = 0; ok && i < p_cnt; i++) ok = next_tok(&q, eol, &t) > 0;
    ok = ok && next_tok(&q, eol, &t) > 0; /* sense_cnt */
    ok = ok && (n = next_tok(&q, eol, &t)) && tok_ulong(t, n, 10, &tagsense);
    if (!ok || synset_cnt == 0)
      return finch_err_set(err, FINCH_EFORMAT, "%s/%s:%ld: malformed index line", dir, name, line);
    uint32_t *slot = slot_for(wn, lemma, llen);
    if (!*slot) {
      entry *e = &wn->entries[wn->n_entries++];
      memset(e, 0, sizeof *e);
      e->key = lemma;
      e->klen = (uint32_t)llen;
      *slot = (uint32_t)wn->n_entries;
    }
    entry *e = &wn->entries[*slot - 1];
    e->tag[pos] = tagsense > UINT16_MAX ? UINT16_MAX : (uint16_t)tagsense;
    for (unsigned long i = 0; i < synset_cnt && i < SENSES; i++) {
      n = next_tok(&q, eol, &t);
      if (!tok_ulong(t, n, 10, &v) || v >= wn->data_len[pos] || strncmp(wn->data[pos] + v, t, n) != 0)
        return finch_err_set(err, FINCH_EFORMAT, "%s/%s:%ld: synset offset '%.*s' not in data.%s", dir, name,
                             line, (int)n, t, pos_names[pos]);
      e->off[pos][e->n[pos]++] = (uint32_t)v;
    }
  }
  return FINCH_OK;
}

finch_status augment__wordnet_open(const char *dir, augment__wordnet **out, finch_err *err) {
  *out = NULL;
  if (!dir) dir = getenv("FINCH_WORDNET_DIR");
  if (!dir || !*dir) dir = "/usr/share/wordnet";
  struct stat st;
  if (stat(dir, &st) != 0 || !S_ISDIR(st.st_mode))
    return finch_err_set(err, FINCH_ENOTFOUND,
                         "WordNet directory %s not found (install the Debian package wordnet-base or set "
                         "FINCH_WORDNET_DIR)",
                         dir);
  augment__wordnet *wn = calloc(1, sizeof *wn);
  if (!wn) return finch_err_set(err, FINCH_ENOMEM, "out of memory");
  finch_status rc = FINCH_OK;
  char name[32];
  for (int pos = 0; pos < NPOS && !rc; pos++) {
    snprintf(name, sizeof name, "data.%s", pos_names[pos]);
    rc = read_file(dir, name, &wn->data[pos], &wn->data_len[pos], err);
  }
  /* Index lines bound the lemma count: size the table from the file sizes
   * (every line is longer than 8 bytes). */
  size_t bound = 0;
  for (int pos = 0; pos < NPOS && !rc; pos++) {
    snprintf(name, sizeof name, "%s/index.%s", dir, pos_names[pos]);
    if (stat(name, &st) == 0) bound += (size_t)st.st_size / 8 + 1;
  }
  if (!rc) {
    size_t slots = 1024;
    while (slots < 2 * bound) slots *= 2;
    wn->mask = slots - 1;
    wn->slots = calloc(slots, sizeof *wn->slots);
    wn->entries = malloc((bound + 1) * sizeof *wn->entries);
    if (!wn->slots || !wn->entries)
      rc = finch_err_set(err, FINCH_ENOMEM, "out of memory for the WordNet index");
  }
  for (int pos = 0; pos < NPOS && !rc; pos++) rc = load_index(wn, pos, dir, err);
  if (rc) {
    augment__wordnet_close(wn);
    return rc;
  }
  *out = wn;
  return FINCH_OK;
}

void augment__wordnet_close(augment__wordnet *wn) {
  if (!wn) return;
  for (int pos = 0; pos < NPOS; pos++) {
    free(wn->index[pos]);
    free(wn->data[pos]);
  }
  free(wn->entries);
  free(wn->slots);
  free(wn);
}

static const entry *find(const augment__wordnet *wn, const char *lemma, size_t len) {
  uint32_t e = *slot_for(wn, lemma, len);
  return e ? &wn->entries[e - 1] : NULL;
}

int augment__wordnet_has(const augment__wordnet *wn, const char *lemma, size_t len) {
  return find(wn, lemma, len) != NULL;
}

size_t augment__wordnet_synonyms(const augment__wordnet *wn, const char *lemma, size_t len,
                                 augment__wordnet_word *out, size_t max) {
  const entry *e = find(wn, lemma, len);
  if (!e) return 0;
  int order[NPOS] = {0, 1, 2, 3};
  for (int i = 1; i < NPOS; i++) /* stable insertion sort, most tagged first */
    for (int j = i; j > 0 && e->tag[order[j]] > e->tag[order[j - 1]]; j--) {
      int t = order[j];
      order[j] = order[j - 1];
      order[j - 1] = t;
    }
  size_t n = 0;
  unsigned sense = 0;
  for (int k = 0; k < NPOS; k++) {
    int pos = order[k];
    for (int s = 0; s < e->n[pos]; s++, sense++) {
      const char *p = wn->data[pos] + e->off[pos][s];
      const char *end = wn->data[pos] + wn->data_len[pos], *t;
      const char *eol = memchr(p, '\n', (size_t)(end - p));
      if (eol) end = eol;
      unsigned long w_cnt;
      size_t tl;
      next_tok(&p, end, &t); /* offset */
      next_tok(&p, end, &t); /* lex_filenum */
      next_tok(&p, end, &t); /* ss_type */
      tl = next_tok(&p, end, &t);
      if (!tok_ulong(t, tl, 16, &w_cnt)) continue;
      for (unsigned long w = 0; w < w_cnt; w++) {
        tl = next_tok(&p, end, &t);
        if (tl == 0) break;
        const char *lex_id;
        next_tok(&p, end, &lex_id);
        if (t[tl - 1] == ')') { /* adjective marker: (a), (p), (ip) */
          const char *m = memchr(t, '(', tl);
          if (m) tl = (size_t)(m - t);
        }
        if (tl == 0) continue;
        if (n == max) return n;
        out[n++] = (augment__wordnet_word){t, tl, sense};
      }
    }
  }
  return n;
}
