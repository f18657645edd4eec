/* Templates: slot-filled patterns per intent, mined from the training rows.
 *
 * prepare() finds the entity mentions of every parent (amounts, currencies,
 * dates, merchants, card brands, countries, ATMs, banks, placeholders; see
 * finch_aug_find_entities) and turns each parent that has one into a
 * template of its intent ("I paid {amount} at {merchant}"), keeping the
 * values it saw per intent and type. apply() fills a template of the
 * parent's intent with values seen in that intent (else anywhere), so a
 * variant is an utterance of the intent in a shape its customers used. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "augment/internal.h"
#include "augment/methods.h"
#include "core/rng.h"

static const char *const types[] = {"amount", "currency", "date", "merchant", "brand",
                                    "country", "atm", "bank", "pii"};
#define N_TYPES (sizeof types / sizeof types[0])
#define MAX_SLOTS 16
#define SLOT_OPEN '\x01'  /* a slot in a template: \x01 type-index \x02 */
#define SLOT_CLOSE '\x02'

typedef struct {
  char **v;
  size_t n, cap;
} strlist;

typedef struct {
  char *label;
  strlist templates;
  strlist pool[N_TYPES];
} intent;

typedef struct {
  intent *intents;
  size_t ni;
  strlist global[N_TYPES];
  uint64_t *keys; /* parent text hash -> intent + 1, open addressing */
  size_t *vals;
  size_t cap;
} tstate;

static uint64_t fnv1a(const char *s) {
  uint64_t h = 1469598103934665603ull;
  for (; *s; s++) h = (h ^ (unsigned char)*s) * 1099511628211ull;
  return h ? h : 1;
}

static int list_add(strlist *l, const char *s, size_t n) {
  for (size_t i = 0; i < l->n; i++)
    if (strlen(l->v[i]) == n && memcmp(l->v[i], s, n) == 0) return 0; /* each value once */
  if (l->n == l->cap) {
    size_t cap = l->cap ? 2 * l->cap : 8;
    char **nv = realloc(l->v, cap * sizeof *nv);
    if (!nv) return -1;
    l->v = nv;
    l->cap = cap;
  }
  char *c = malloc(n + 1);
  if (!c) return -1;
  memcpy(c, s, n);
  c[n] = '\0';
  l->v[l->n++] = c;
  return 0;
}

static void list_free(strlist *l) {
  for (size_t i = 0; i < l->n; i++) free(l->v[i]);
  free(l->v);
}

static int type_index(const char *t) {
  for (size_t i = 0; i < N_TYPES; i++)
    if (strcmp(types[i], t) == 0) return (int)i;
  return -1;
}

static finch_status tmpl_open(void **state, finch_err *err) {
  tstate *s = calloc(1, sizeof *s);
  if (!s) return finch_err_set(err, FINCH_ENOMEM, "out of memory");
  *state = s;
  return FINCH_OK;
}

static void tmpl_close(void *state) {
  tstate *s = state;
  if (!s) return;
  for (size_t i = 0; i < s->ni; i++) {
    free(s->intents[i].label);
    list_free(&s->intents[i].templates);
    for (size_t t = 0; t < N_TYPES; t++) list_free(&s->intents[i].pool[t]);
  }
  for (size_t t = 0; t < N_TYPES; t++) list_free(&s->global[t]);
  free(s->intents);
  free(s->keys);
  free(s->vals);
  free(s);
}

static finch_status tmpl_prepare(void *state, const char *const *texts, const char *const *labels, size_t n,
                                 finch_err *err) {
  tstate *s = state;
  s->cap = 16;
  while (s->cap < 2 * n + 2) s->cap *= 2;
  s->keys = calloc(s->cap, sizeof *s->keys);
  s->vals = calloc(s->cap, sizeof *s->vals);
  if (!s->keys || !s->vals) return finch_err_set(err, FINCH_ENOMEM, "out of memory");
  char *buf = NULL;
  size_t bufcap = 0;
  for (size_t r = 0; r < n; r++) {
    size_t ii = 0;
    while (ii < s->ni && strcmp(s->intents[ii].label, labels[r]) != 0) ii++;
    if (ii == s->ni) {
      intent *ni = realloc(s->intents, (s->ni + 1) * sizeof *ni);
      if (!ni) goto oom;
      s->intents = ni;
      memset(&ni[s->ni], 0, sizeof *ni);
      if (!(ni[s->ni].label = strdup(labels[r]))) goto oom;
      s->ni++;
    }
    uint64_t h = fnv1a(texts[r]);
    size_t j = h & (s->cap - 1);
    while (s->keys[j] && s->keys[j] != h) j = (j + 1) & (s->cap - 1);
    s->keys[j] = h;
    s->vals[j] = ii;
    finch_aug_mention m[MAX_SLOTS];
    size_t k = finch_aug_find_entities(texts[r], m, MAX_SLOTS), len = strlen(texts[r]);
    if (k == 0) continue;
    if (len + 3 * k + 1 > bufcap) {
      bufcap = 2 * (len + 3 * k + 1);
      char *nb = realloc(buf, bufcap);
      if (!nb) goto oom;
      buf = nb;
    }
    size_t o = 0, at = 0;
    for (size_t q = 0; q < k; q++) {
      int t = type_index(m[q].type);
      if (t < 0) continue;
      memcpy(buf + o, texts[r] + at, m[q].start - at);
      o += m[q].start - at;
      buf[o++] = SLOT_OPEN;
      buf[o++] = (char)('0' + t);
      buf[o++] = SLOT_CLOSE;
      at = m[q].start + m[q].len;
      if (list_add(&s->intents[ii].pool[t], texts[r] + m[q].start, m[q].len) ||
          list_add(&s->global[t], texts[r] + m[q].start, m[q].len))
        goto oom;
    }
    memcpy(buf + o, texts[r] + at, len - at);
    o += len - at;
    if (list_add(&s->intents[ii].templates, buf, o)) goto oom;
  }
  free(buf);
  return FINCH_OK;
oom:
  free(buf);
  return finch_err_set(err, FINCH_ENOMEM, "out of memory mining templates");
}

static int tmpl_apply(const void *state, const char *text, uint64_t stream, char *out, size_t cap, char *params,
                      size_t params_cap) {
  const tstate *s = state;
  if (!s || !s->cap) return 0;
  uint64_t h = fnv1a(text);
  size_t j = h & (s->cap - 1);
  while (s->keys[j] && s->keys[j] != h) j = (j + 1) & (s->cap - 1);
  if (!s->keys[j]) return 0;
  const intent *in = &s->intents[s->vals[j]];
  if (in->templates.n == 0) return 0;
  finch_rng rng = {stream};
  const char *t = in->templates.v[finch_rng_below(&rng, in->templates.n)];
  size_t o = 0, po = augment__json_raw(params, 0, params_cap, "{\"template\": \"");
  for (const char *c = t; *c; c++) {
    if (*c == SLOT_OPEN && c[1] && c[2] == SLOT_CLOSE) {
      size_t ti = (size_t)(c[1] - '0');
      if (ti >= N_TYPES) return 0;
      const strlist *pool = in->pool[ti].n ? &in->pool[ti] : &s->global[ti];
      if (pool->n == 0) return 0;
      const char *v = pool->v[finch_rng_below(&rng, pool->n)];
      size_t vl = strlen(v);
      if (o + vl + 1 >= cap) return 0;
      memcpy(out + o, v, vl);
      o += vl;
      po = augment__json_raw(params, po, params_cap, "{");
      po = augment__json_raw(params, po, params_cap, types[ti]);
      po = augment__json_raw(params, po, params_cap, "}");
      c += 2;
      continue;
    }
    if (o + 2 >= cap) return 0;
    out[o++] = *c;
    /* The template is the parent's own text around the slots: escaped. */
    po = augment__json_put(params, po, params_cap, c, 1);
  }
  out[o] = '\0';
  po = augment__json_raw(params, po, params_cap, "\"}");
  if (po == (size_t)-1) return 0;
  return strcmp(out, text) != 0;
}

const finch_aug_method finch_aug_templates = {"templates", tmpl_open, tmpl_close, tmpl_apply, tmpl_prepare};
