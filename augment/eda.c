/* EDA edits (Wei & Zou 2019). Each variant applies one operation, chosen by
 * its stream: random deletion (each word with probability 0.1), random swap
 * (of two words), or random insertion (a WordNet synonym of one word of the
 * text, put at a random position). Protected finance terms and placeholders
 * are never deleted and never the source of an insertion. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "augment/augment.h"
#include "augment/methods.h"
#include "augment/wordnet.h"
#include "core/rng.h"

#define EDA_MAX_WORDS 256
#define EDA_P_DELETE 0.1
#define EDA_N_SWAP 1

void finch_augment_eda(const char *text, unsigned long long stream, double p_delete, int n_swap, char *out) {
  finch_rng rng = {stream};
  size_t len = strlen(text);
  char *copy = malloc(len + 1);
  if (!copy) {
    memcpy(out, text, len + 1);
    return;
  }
  memcpy(copy, text, len + 1);
  char *words[EDA_MAX_WORDS];
  int keep_always[EDA_MAX_WORDS];
  int n = 0;
  /* Split on spaces, marking words inside a protected term. */
  size_t protect_until = 0;
  for (size_t i = 0; i < len && n < EDA_MAX_WORDS;) {
    while (i < len && copy[i] == ' ') i++;
    if (i >= len) break;
    size_t p = finch_aug_protected_at(text + i);
    if (i + p > protect_until) protect_until = i + p;
    words[n] = copy + i;
    keep_always[n] = i < protect_until;
    n++;
    while (i < len && copy[i] != ' ') i++;
    if (i < len) copy[i++] = '\0';
  }
  int keep[EDA_MAX_WORDS], nk = 0;
  for (int i = 0; i < n; i++)
    if (n == 1 || keep_always[i] || finch_rng_uniform(&rng) >= p_delete) keep[nk++] = i;
  if (nk == 0 && n > 0) keep[nk++] = (int)finch_rng_below(&rng, (uint64_t)n);
  for (int s = 0; s < n_swap && nk >= 2; s++) {
    int a = (int)finch_rng_below(&rng, (uint64_t)nk), b = (int)finch_rng_below(&rng, (uint64_t)nk);
    int t = keep[a];
    keep[a] = keep[b];
    keep[b] = t;
  }
  size_t o = 0;
  for (int i = 0; i < nk; i++) {
    size_t wl = strlen(words[keep[i]]);
    if (i) out[o++] = ' ';
    memcpy(out + o, words[keep[i]], wl);
    o += wl;
  }
  out[o] = '\0';
  free(copy);
}

static finch_status eda_open(void **state, finch_err *err) {
  augment__wordnet *wn = NULL;
  finch_status st = augment__wordnet_open(NULL, &wn, err);
  *state = wn;
  return st;
}

static void eda_close(void *state) { augment__wordnet_close(state); }

/* Random insertion: a synonym of a random eligible word (lower-case letters,
 * four or more, not a finance term), inserted before a random word. */
static int eda_insert(const augment__wordnet *wn, const char *text, finch_rng *rng, char *out, size_t cap,
                      char *params, size_t params_cap) {
  size_t len = strlen(text);
  const char *starts[EDA_MAX_WORDS];
  size_t lens[EDA_MAX_WORDS];
  int n = 0;
  for (size_t i = 0; i < len && n < EDA_MAX_WORDS;) {
    while (i < len && text[i] == ' ') i++;
    if (i >= len) break;
    starts[n] = text + i;
    while (i < len && text[i] != ' ') i++;
    lens[n] = (size_t)(text + i - starts[n]);
    n++;
  }
  if (n == 0) return 0;
  int order = (int)finch_rng_below(rng, (uint64_t)n);
  for (int t = 0; t < n; t++) {
    int w = (order + t) % n;
    int ok = lens[w] >= 4 && lens[w] <= 32 && finch_aug_protected_at(starts[w]) == 0;
    for (size_t c = 0; ok && c < lens[w]; c++) ok = starts[w][c] >= 'a' && starts[w][c] <= 'z';
    if (!ok) continue;
    augment__wordnet_word cand[32];
    size_t k = augment__wordnet_synonyms(wn, starts[w], lens[w], cand, 32), m = 0;
    for (size_t c = 0; c < k; c++) {
      int good = cand[c].len >= 3 && cand[c].len <= 32 &&
                 !(cand[c].len == lens[w] && memcmp(cand[c].s, starts[w], lens[w]) == 0);
      for (size_t x = 0; good && x < cand[c].len; x++) good = cand[c].s[x] >= 'a' && cand[c].s[x] <= 'z';
      if (good) {
        char buf[40];
        memcpy(buf, cand[c].s, cand[c].len);
        buf[cand[c].len] = '\0';
        good = finch_aug_protected_at(buf) == 0;
      }
      if (good) cand[m++] = cand[c];
    }
    if (m == 0) continue;
    const augment__wordnet_word *syn = &cand[finch_rng_below(rng, m)];
    int at = (int)finch_rng_below(rng, (uint64_t)n + 1);
    if (len + syn->len + 2 > cap) return 0;
    size_t o = 0;
    for (int i = 0; i <= n; i++) {
      if (i == at) {
        if (o) out[o++] = ' ';
        memcpy(out + o, syn->s, syn->len);
        o += syn->len;
      }
      if (i < n) {
        if (o) out[o++] = ' ';
        memcpy(out + o, starts[i], lens[i]);
        o += lens[i];
      }
    }
    out[o] = '\0';
    snprintf(params, params_cap, "{\"op\": \"insert\", \"word\": \"%.*s\", \"inserted\": \"%.*s\", \"at\": %d}",
             (int)lens[w], starts[w], (int)syn->len, syn->s, at);
    return 1;
  }
  return 0;
}

static int eda_apply(const void *state, const char *text, uint64_t stream, char *out, size_t cap, char *params,
                     size_t params_cap) {
  if (strlen(text) + 1 > cap) return 0;
  finch_rng rng = {stream};
  uint64_t op = finch_rng_below(&rng, 3), sub = finch_rng_next(&rng);
  if (op == 2) {
    if (!state || !eda_insert(state, text, &rng, out, cap, params, params_cap)) return 0;
  } else {
    finch_augment_eda(text, sub, op == 0 ? EDA_P_DELETE : 0.0, op == 1 ? EDA_N_SWAP : 0, out);
    snprintf(params, params_cap, "{\"op\": \"%s\", \"p_delete\": %g, \"n_swap\": %d}", op == 0 ? "delete" : "swap",
             op == 0 ? EDA_P_DELETE : 0.0, op == 1 ? EDA_N_SWAP : 0);
  }
  return strcmp(out, text) != 0;
}

const finch_aug_method finch_aug_eda = {"eda", eda_open, eda_close, eda_apply, NULL};
