#include "distill/complexity.h"

#include <ctype.h>
#include <math.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#define RATIO_HIGH 4.0

static const char *const clause_markers[] = {"and", "but", "because", "if", "when", "which", "that", "so", "or",
                                             "since", "while", "although", "though", "unless", "until", "after",
                                             "before", "whether", "where", "then"};
static const char *const negations[] = {"not", "no", "never", "nothing", "none", "nobody", "cannot", "neither",
                                        "nor", "without"};

/* word -> counts, open addressing on a 64-bit FNV-1a hash of the token. */
typedef struct {
  uint64_t *keys;
  uint32_t *fin, *gen;
  size_t cap, n;
} counts;

struct finch_complexity_model {
  counts freq;
  double fin_total, gen_total;
  int has_general;
  double lo[3], hi[3]; /* 5th and 95th percentiles of the raw terms */
};

static uint64_t hash_tok(const char *s, size_t n) {
  uint64_t h = 1469598103934665603ull;
  for (size_t i = 0; i < n; i++) h = (h ^ (unsigned char)tolower((unsigned char)s[i])) * 1099511628211ull;
  return h ? h : 1;
}

static int counts_grow(counts *c) {
  size_t cap = c->cap ? 2 * c->cap : 4096;
  uint64_t *k = calloc(cap, sizeof *k);
  uint32_t *f = calloc(cap, sizeof *f), *g = calloc(cap, sizeof *g);
  if (!k || !f || !g) {
    free(k), free(f), free(g);
    return -1;
  }
  for (size_t i = 0; i < c->cap; i++)
    if (c->keys[i]) {
      size_t j = c->keys[i] & (cap - 1);
      while (k[j]) j = (j + 1) & (cap - 1);
      k[j] = c->keys[i], f[j] = c->fin[i], g[j] = c->gen[i];
    }
  free(c->keys), free(c->fin), free(c->gen);
  c->keys = k, c->fin = f, c->gen = g, c->cap = cap;
  return 0;
}

static size_t counts_slot(counts *c, uint64_t h, int insert) {
  if (insert && 2 * (c->n + 1) > c->cap && counts_grow(c)) return (size_t)-1;
  if (!c->cap) return (size_t)-1;
  size_t j = h & (c->cap - 1);
  while (c->keys[j] && c->keys[j] != h) j = (j + 1) & (c->cap - 1);
  if (!c->keys[j]) {
    if (!insert) return (size_t)-1;
    c->keys[j] = h;
    c->n++;
  }
  return j;
}

static int is_tok(unsigned char ch) { return isalnum(ch) || ch == '\'' || ch >= 0x80; }

/* Calls f(ctx, start, len) for each token of s. */
static void tokens(const char *s, void (*f)(void *, const char *, size_t), void *ctx) {
  for (size_t i = 0; s[i];) {
    while (s[i] && !is_tok((unsigned char)s[i])) i++;
    size_t j = i;
    while (s[j] && is_tok((unsigned char)s[j])) j++;
    if (j > i) f(ctx, s + i, j - i);
    i = j;
  }
}

typedef struct {
  counts *c;
  int general;
  double *total;
  int oom;
} count_ctx;

static void count_tok(void *vctx, const char *t, size_t n) {
  count_ctx *x = vctx;
  size_t j = counts_slot(x->c, hash_tok(t, n), 1);
  if (j == (size_t)-1) {
    x->oom = 1;
    return;
  }
  if (x->general) x->c->gen[j]++;
  else x->c->fin[j]++;
  (*x->total)++;
}

static int in_list(const char *t, size_t n, const char *const *list, size_t k) {
  for (size_t i = 0; i < k; i++)
    if (strlen(list[i]) == n && strncasecmp(list[i], t, n) == 0) return 1;
  return 0;
}

typedef struct {
  const finch_complexity_model *m;
  uint64_t seen[256];
  size_t types, toks, markers, domain_hits;
} raw_ctx;

static void raw_tok(void *vctx, const char *t, size_t n) {
  raw_ctx *x = vctx;
  uint64_t h = hash_tok(t, n);
  int dup = 0;
  for (size_t i = 0; i < x->types && i < 256; i++) dup |= x->seen[i] == h;
  if (!dup) {
    if (x->types < 256) x->seen[x->types] = h;
    x->types++;
  }
  x->toks++;
  x->markers += in_list(t, n, clause_markers, sizeof clause_markers / sizeof *clause_markers) ||
                in_list(t, n, negations, sizeof negations / sizeof *negations) ||
                (n > 3 && strncasecmp(t + n - 3, "n't", 3) == 0);
  const finch_complexity_model *m = x->m;
  if (m->has_general && m->freq.cap) {
    size_t j = m->freq.keys ? (h & (m->freq.cap - 1)) : 0;
    while (m->freq.keys[j] && m->freq.keys[j] != h) j = (j + 1) & (m->freq.cap - 1);
    if (m->freq.keys[j]) {
      double pf = (m->freq.fin[j] + 1.0) / (m->fin_total + 1.0), pg = (m->freq.gen[j] + 1.0) / (m->gen_total + 1.0);
      x->domain_hits += pf >= RATIO_HIGH * pg;
    }
  }
}

static void raw_terms(const finch_complexity_model *m, const char *text, double raw[3]) {
  raw_ctx x = {.m = m};
  tokens(text, raw_tok, &x);
  size_t punct = 0;
  for (const char *p = text; *p; p++) punct += strchr(",;:?!.-()", *p) != NULL && *p;
  raw[0] = x.toks ? (double)x.types / sqrt((double)x.toks) : 0.0;
  raw[1] = log1p((double)x.toks) + (double)x.markers + 0.5 * (double)punct;
  raw[2] = x.toks ? (double)x.domain_hits / (double)x.toks : 0.0;
}

static int cmp_double(const void *a, const void *b) {
  double x = *(const double *)a, y = *(const double *)b;
  return (x > y) - (x < y);
}

finch_status finch_complexity_fit(finch_complexity_model **out, const char *const *texts, size_t n,
                                  const char *const *general, size_t ng, finch_err *err) {
  *out = NULL;
  finch_complexity_model *m = calloc(1, sizeof *m);
  if (!m) return finch_err_set(err, FINCH_ENOMEM, "out of memory");
  m->has_general = ng > 0;
  count_ctx fin = {&m->freq, 0, &m->fin_total, 0}, gen = {&m->freq, 1, &m->gen_total, 0};
  for (size_t i = 0; i < n && m->has_general; i++) tokens(texts[i], count_tok, &fin);
  for (size_t i = 0; i < ng; i++) tokens(general[i], count_tok, &gen);
  double *raw = malloc((n ? n : 1) * 3 * sizeof *raw);
  if (fin.oom || gen.oom || !raw) {
    free(raw);
    finch_complexity_free(m);
    return finch_err_set(err, FINCH_ENOMEM, "out of memory");
  }
  for (size_t i = 0; i < n; i++) raw_terms(m, texts[i], raw + 3 * i);
  double *col = malloc((n ? n : 1) * sizeof *col);
  for (int t = 0; col && t < 3; t++) {
    for (size_t i = 0; i < n; i++) col[i] = raw[3 * i + t];
    qsort(col, n, sizeof *col, cmp_double);
    m->lo[t] = n ? col[(size_t)(0.05 * (double)(n - 1))] : 0;
    m->hi[t] = n ? col[(size_t)(0.95 * (double)(n - 1))] : 1;
  }
  free(col);
  free(raw);
  *out = m;
  return FINCH_OK;
}

static double scale(double v, double lo, double hi) {
  if (hi <= lo) return v > lo ? 1.0 : 0.0;
  double s = (v - lo) / (hi - lo);
  return s < 0 ? 0 : s > 1 ? 1 : s;
}

void finch_complexity_score(const finch_complexity_model *m, const char *text, finch_complexity *out) {
  double raw[3];
  raw_terms(m, text, raw);
  out->lexical = scale(raw[0], m->lo[0], m->hi[0]);
  out->syntactic = scale(raw[1], m->lo[1], m->hi[1]);
  out->domain = m->has_general ? scale(raw[2], m->lo[2], m->hi[2]) : 0.0;
  out->c = 0.4 * out->lexical + 0.3 * out->syntactic + 0.3 * out->domain;
}

void finch_complexity_free(finch_complexity_model *m) {
  if (!m) return;
  free(m->freq.keys), free(m->freq.fin), free(m->freq.gen);
  free(m);
}

double finch_complexity_alpha(double c, const finch_alpha_map *map) {
  if (c <= map->knee || map->knee >= 1.0) return map->alpha_low;
  double t = (c - map->knee) / (1.0 - map->knee);
  if (t > 1) t = 1;
  return map->alpha_low + t * (map->alpha_high - map->alpha_low);
}
